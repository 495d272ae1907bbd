//! A one-shot, single-thread broadcast: fire once, every waiter (now or later) wakes. Used to stop a
//! listener's accept loop and to tell idle keep-alive connections that the shard is draining.
//! Waiters hold a slot so that registering and leaving are O(1), however many connections wait.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct Signal {
    fired: Cell<bool>,
    /// Waiters by slot; a slot is reused once its waiter leaves (no hashing per wait: every idle
    /// connection waits on the drain signal and every request on its completion).
    waiters: RefCell<Slots>,
}

#[derive(Default)]
struct Slots {
    wakers: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Signal {
    pub fn fire(&self) {
        self.fired.set(true);
        let wakers = std::mem::take(&mut self.waiters.borrow_mut().wakers);
        for w in wakers.into_iter().flatten() {
            w.wake();
        }
    }

    pub fn fired(&self) -> bool {
        self.fired.get()
    }

    pub fn wait(&self) -> Wait<'_> {
        Wait { signal: self, slot: None }
    }
}

pub struct Wait<'a> {
    signal: &'a Signal,
    slot: Option<usize>,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.fired.get() {
            return Poll::Ready(());
        }
        let mut slots = self.signal.waiters.borrow_mut();
        match self.slot {
            Some(i) => match &mut slots.wakers[i] {
                Some(w) if w.will_wake(cx.waker()) => {}
                w => *w = Some(cx.waker().clone()),
            },
            None => {
                let i = match slots.free.pop() {
                    Some(i) => {
                        slots.wakers[i] = Some(cx.waker().clone());
                        i
                    }
                    None => {
                        slots.wakers.push(Some(cx.waker().clone()));
                        slots.wakers.len() - 1
                    }
                };
                drop(slots);
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        // After `fire` the slots are gone; nothing to give back.
        if let Some(i) = self.slot {
            if self.signal.fired.get() {
                return;
            }
            let mut slots = self.signal.waiters.borrow_mut();
            slots.wakers[i] = None;
            slots.free.push(i);
        }
    }
}
