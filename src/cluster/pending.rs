//! One shard's connections to one endpoint of one cluster, as Envoy's per-worker connection pool
//! sees them for its circuit breakers: how many are open here (idle or busy), and the requests
//! waiting, first come first served, for one of them because the cluster is at `max_connections`.
//! A waiter is woken when a connection to its endpoint on this shard is pooled again or closes.
//! Single-threaded (a shard's own); knows nothing of sockets or of the thresholds themselves.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Debug, Default)]
pub struct EndpointConns {
    open: Cell<u32>,
    queue: RefCell<Queue>,
}

#[derive(Debug, Default)]
struct Queue {
    /// Waiting tickets in arrival order, with the waker of each once polled.
    waiting: VecDeque<(u64, Option<Waker>)>,
    /// Tickets woken and not yet seen by their waiter.
    woken: Vec<u64>,
    next: u64,
}

impl EndpointConns {
    /// Connections to this endpoint open on this shard.
    pub fn open(&self) -> u32 {
        self.open.get()
    }

    pub fn opened(&self) {
        self.open.set(self.open.get() + 1);
    }

    /// A connection closed: its slot may go to the first waiter.
    pub fn closed(&self) {
        self.open.set(self.open.get().saturating_sub(1));
        self.wake_one();
    }

    /// A connection went back to the pool: the first waiter may take it.
    pub fn released(&self) {
        self.wake_one();
    }

    pub fn waiters(&self) -> usize {
        self.queue.borrow().waiting.len()
    }

    fn wake_one(&self) {
        let mut q = self.queue.borrow_mut();
        if let Some((ticket, waker)) = q.waiting.pop_front() {
            q.woken.push(ticket);
            drop(q);
            if let Some(w) = waker {
                w.wake();
            }
        }
    }

    /// Waits until this waiter's turn comes with a connection pooled again or closed. Dropping it
    /// (a route timeout, the client leaving) leaves the queue, passing on a wake-up it was given.
    pub fn wait(&self) -> Wait<'_> {
        let mut q = self.queue.borrow_mut();
        let ticket = q.next;
        q.next += 1;
        q.waiting.push_back((ticket, None));
        Wait { conns: self, ticket, done: false }
    }
}

pub struct Wait<'a> {
    conns: &'a EndpointConns,
    ticket: u64,
    done: bool,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut q = self.conns.queue.borrow_mut();
        if let Some(i) = q.woken.iter().position(|t| *t == self.ticket) {
            q.woken.swap_remove(i);
            drop(q);
            self.done = true;
            return Poll::Ready(());
        }
        if let Some(entry) = q.waiting.iter_mut().find(|(t, _)| *t == self.ticket) {
            entry.1 = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut q = self.conns.queue.borrow_mut();
        if let Some(i) = q.waiting.iter().position(|(t, _)| *t == self.ticket) {
            q.waiting.remove(i);
        } else if let Some(i) = q.woken.iter().position(|t| *t == self.ticket) {
            // Woken but gone before taking its turn: the next waiter gets it.
            q.woken.swap_remove(i);
            drop(q);
            self.conns.wake_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn poll(w: &mut Pin<Box<Wait<'_>>>) -> (bool, Arc<Flag>) {
        let flag = Arc::new(Flag(Default::default()));
        let waker = Waker::from(flag.clone());
        (w.as_mut().poll(&mut Context::from_waker(&waker)).is_ready(), flag)
    }

    #[test]
    fn waiters_are_woken_in_arrival_order_and_a_departed_one_passes_its_turn_on() {
        let c = EndpointConns::default();
        let mut a = Box::pin(c.wait());
        let mut b = Box::pin(c.wait());
        let (ready, _) = poll(&mut a);
        assert!(!ready);
        let (_, b_flag) = poll(&mut b);
        c.released();
        // `a` was first; it leaves without taking its turn, which goes to `b`.
        drop(a);
        assert!(b_flag.0.load(std::sync::atomic::Ordering::Relaxed));
        assert!(poll(&mut b).0);
        assert_eq!(c.waiters(), 0);
    }
}
