//! The shard's timers for its connections and requests. Every deadline is a node in an intrusive
//! list kept per duration: deadlines of one duration are set in time order, so each list is sorted
//! by construction, setting and cancelling one are O(1), and the next deadline due is the earliest
//! list head. One task per shard (`drive`) sleeps until then. A `Timer` is a few words; a monoio
//! `Sleep` is 640 bytes (cache-padded for threads a shard does not have) and sat in the state of
//! every waiting connection and request. Knows nothing of what waits on it.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

const NIL: u32 = u32::MAX;

/// Durations kept as lists before empty ones are dropped.
const MAX_IDLE_LISTS: usize = 32;

/// How late the driver may notice a deadline set earlier than the one it sleeps until. Waking it
/// for each such deadline would cost a task wake and a re-armed sleep per request at one
/// connection (a 10 ms watch set and cancelled every request); instead it finds them when it
/// next wakes, at most this much later than due.
const SLACK: Duration = Duration::from_millis(5);

#[derive(Default)]
pub struct Timers {
    inner: RefCell<Inner>,
}

#[derive(Default)]
struct Inner {
    nodes: Vec<Node>,
    free: Vec<u32>,
    lists: Vec<List>,
    /// The driver's waker while it sleeps, until when it sleeps, and whether a sooner deadline
    /// was set meanwhile.
    driver: Option<Waker>,
    armed_until: Option<Instant>,
    notified: bool,
}

struct Node {
    at: Instant,
    prev: u32,
    next: u32,
    list: u32,
    waker: Option<Waker>,
    fired: bool,
}

struct List {
    every: Duration,
    head: u32,
    tail: u32,
}

impl Timers {
    /// A timer that fires `after` from its first poll (never, when that overflows the clock).
    pub fn after(&self, after: Duration) -> Timer<'_> {
        Timer { timers: self, node: NIL, after }
    }

    /// `fut`'s output, or None once `after` has passed first.
    pub async fn limit<F: Future>(&self, after: Duration, fut: F) -> Option<F::Output> {
        monoio::select! {
            out = fut => Some(out),
            _ = self.after(after) => None,
        }
    }

    fn set(&self, after: Duration, waker: &Waker) -> Option<u32> {
        let at = Instant::now().checked_add(after)?;
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        let list = match inner.lists.iter().position(|l| l.every == after) {
            Some(i) => i,
            None => {
                inner.lists.push(List { every: after, head: NIL, tail: NIL });
                inner.lists.len() - 1
            }
        };
        let node = Node {
            at,
            prev: inner.lists[list].tail,
            next: NIL,
            list: list as u32,
            waker: Some(waker.clone()),
            fired: false,
        };
        let id = match inner.free.pop() {
            Some(id) => {
                inner.nodes[id as usize] = node;
                id
            }
            None => {
                inner.nodes.push(node);
                (inner.nodes.len() - 1) as u32
            }
        };
        let l = &mut inner.lists[list];
        if l.tail == NIL {
            l.head = id;
        } else {
            inner.nodes[l.tail as usize].next = id;
        }
        l.tail = id;
        // A deadline well before the driver's next wake-up (or a driver with nothing to wait for)
        // must wake it to re-arm; one within `SLACK` is found when it wakes anyway.
        let due_sooner = match inner.armed_until {
            Some(until) => at + SLACK < until,
            None => true,
        };
        let driver = if due_sooner && !inner.notified {
            inner.notified = true;
            inner.driver.take()
        } else {
            None
        };
        drop(guard);
        // Woken outside the borrow: a waker is free to do anything, this module included.
        if let Some(w) = driver {
            w.wake();
        }
        Some(id)
    }

    /// Unlinks a waiting node (a fired one is unlinked already) and frees it.
    fn cancel(&self, id: u32) {
        let mut inner = self.inner.borrow_mut();
        if !inner.nodes[id as usize].fired {
            inner.unlink(id);
        }
        inner.nodes[id as usize].waker = None;
        inner.free.push(id);
    }

    /// Fires every deadline due at `now`; returns the earliest still waiting.
    fn fire_due(&self, now: Instant) -> Option<Instant> {
        let mut wake = Vec::new();
        let mut inner = self.inner.borrow_mut();
        let mut earliest: Option<Instant> = None;
        for l in 0..inner.lists.len() {
            loop {
                let head = inner.lists[l].head;
                if head == NIL {
                    break;
                }
                let at = inner.nodes[head as usize].at;
                if at > now {
                    earliest = Some(earliest.map_or(at, |e| e.min(at)));
                    break;
                }
                inner.unlink(head);
                let n = &mut inner.nodes[head as usize];
                n.fired = true;
                if let Some(w) = n.waker.take() {
                    wake.push(w);
                }
            }
        }
        // Lists whose duration no timer uses any more are dropped (renumbering the nodes of the
        // others), but only once there are many: a config's durations are a handful.
        if inner.lists.len() > MAX_IDLE_LISTS {
            inner.lists.retain(|l| l.head != NIL);
            for i in 0..inner.lists.len() {
                let mut n = inner.lists[i].head;
                while n != NIL {
                    inner.nodes[n as usize].list = i as u32;
                    n = inner.nodes[n as usize].next;
                }
            }
        }
        drop(inner);
        for w in wake {
            w.wake();
        }
        earliest
    }
}

impl Inner {
    fn unlink(&mut self, id: u32) {
        let (prev, next, list) = {
            let n = &self.nodes[id as usize];
            (n.prev, n.next, n.list as usize)
        };
        if prev == NIL {
            self.lists[list].head = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        if next == NIL {
            self.lists[list].tail = prev;
        } else {
            self.nodes[next as usize].prev = prev;
        }
    }
}

/// Resolves when its deadline has passed; cancelled by dropping it.
pub struct Timer<'a> {
    timers: &'a Timers,
    node: u32,
    after: Duration,
}

impl Timer<'_> {
    /// Sets the deadline now rather than at the first poll (a connection's lifetime starts at
    /// accept, not when it is first waited on).
    pub fn arm(&mut self) {
        if self.node == NIL {
            if let Some(id) = self.timers.set(self.after, std::task::Waker::noop()) {
                self.node = id;
            }
        }
    }
}

impl Future for Timer<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.node == NIL {
            match self.timers.set(self.after, cx.waker()) {
                Some(id) => self.node = id,
                None => return Poll::Pending,
            }
            return Poll::Pending;
        }
        let mut inner = self.timers.inner.borrow_mut();
        let n = &mut inner.nodes[self.node as usize];
        if n.fired {
            return Poll::Ready(());
        }
        match &n.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => n.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        if self.node != NIL {
            self.timers.cancel(self.node);
        }
    }
}

/// The shard's one sleeping task: wakes at the earliest deadline (or when a sooner one is set),
/// fires what is due, sleeps again. With no deadline pending it waits without a timer at all.
pub async fn drive(timers: Rc<Timers>) {
    loop {
        timers.inner.borrow_mut().notified = false;
        let earliest = timers.fire_due(Instant::now());
        timers.inner.borrow_mut().armed_until = earliest;
        let notified = std::future::poll_fn(|cx| {
            let mut inner = timers.inner.borrow_mut();
            if inner.notified {
                inner.driver = None;
                return Poll::Ready(());
            }
            inner.driver = Some(cx.waker().clone());
            Poll::Pending
        });
        match earliest {
            Some(at) => {
                monoio::select! {
                    _ = monoio::time::sleep_until(at.into()) => {}
                    _ = notified => {}
                }
            }
            None => notified.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<F: Future>(f: impl FnOnce(Rc<Timers>) -> F) -> F::Output {
        let mut rt =
            monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().expect("runtime");
        rt.block_on(async {
            let timers = Rc::new(Timers::default());
            monoio::spawn(drive(timers.clone()));
            f(timers).await
        })
    }

    #[test]
    fn a_timer_fires_after_its_duration_not_before() {
        let took = run(|t| async move {
            let start = Instant::now();
            t.after(Duration::from_millis(30)).await;
            start.elapsed()
        });
        assert!(took >= Duration::from_millis(30), "fired after {took:?}");
        assert!(took < Duration::from_millis(30) + SLACK + Duration::from_millis(50), "fired after {took:?}");
    }

    #[test]
    fn a_sooner_deadline_wakes_a_driver_asleep_until_a_later_one() {
        let took = run(|t| async move {
            // The driver arms for an hour first...
            let far = t.after(Duration::from_secs(3600));
            let mut far = std::pin::pin!(far);
            std::future::poll_fn(|cx| {
                let _ = far.as_mut().poll(cx);
                Poll::Ready(())
            })
            .await;
            monoio::time::sleep(Duration::from_millis(5)).await;
            // ...then a 20 ms deadline must still fire on time.
            let start = Instant::now();
            t.after(Duration::from_millis(20)).await;
            start.elapsed()
        });
        assert!(
            took >= Duration::from_millis(20) && took < Duration::from_millis(200),
            "fired after {took:?}"
        );
    }

    #[test]
    fn dropped_timers_leave_their_lists_and_others_still_fire_in_order() {
        let order = run(|t| async move {
            let fired = Rc::new(RefCell::new(Vec::new()));
            // Cancelled ones in the middle of a list and at its head.
            {
                let mut a = std::pin::pin!(t.after(Duration::from_millis(15)));
                let mut b = std::pin::pin!(t.after(Duration::from_millis(15)));
                std::future::poll_fn(|cx| {
                    let _ = a.as_mut().poll(cx);
                    let _ = b.as_mut().poll(cx);
                    Poll::Ready(())
                })
                .await;
            }
            let mut tasks = Vec::new();
            for (name, ms) in [("40", 40u64), ("10", 10), ("25", 25), ("10b", 10)] {
                let (t, fired) = (t.clone(), fired.clone());
                tasks.push(monoio::spawn(async move {
                    t.after(Duration::from_millis(ms)).await;
                    fired.borrow_mut().push(name);
                }));
            }
            for task in tasks {
                task.await;
            }
            let inner = t.inner.borrow();
            let waiting = inner.lists.iter().filter(|l| l.head != NIL).count();
            assert_eq!(waiting, 0, "no list keeps a node once every timer fired or was dropped");
            assert_eq!(inner.free.len(), inner.nodes.len(), "every node is free again");
            drop(inner);
            let order = fired.borrow().clone();
            order
        });
        assert_eq!(order, ["10", "10b", "25", "40"]);
    }

    #[test]
    fn a_duration_past_the_clock_never_fires() {
        run(|t| async move {
            monoio::select! {
                _ = t.after(Duration::MAX) => panic!("fired"),
                _ = monoio::time::sleep(Duration::from_millis(30)) => {}
            }
        });
    }
}
