//! A one-shot, single-thread broadcast: fire once, every waiter (now or later) wakes. Used to stop a
//! listener's accept loop and to tell idle keep-alive connections that the shard is draining.
//! Waiters are keyed so that registering and leaving are O(1), however many connections wait.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct Signal {
    fired: Cell<bool>,
    next_key: Cell<u64>,
    waiters: RefCell<HashMap<u64, Waker>>,
}

impl Signal {
    pub fn fire(&self) {
        self.fired.set(true);
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for (_, w) in waiters {
            w.wake();
        }
    }

    pub fn wait(&self) -> Wait<'_> {
        Wait { signal: self, key: None }
    }
}

pub struct Wait<'a> {
    signal: &'a Signal,
    key: Option<u64>,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.fired.get() {
            return Poll::Ready(());
        }
        let key = match self.key {
            Some(k) => k,
            None => {
                let k = self.signal.next_key.get();
                self.signal.next_key.set(k + 1);
                self.key = Some(k);
                k
            }
        };
        self.signal.waiters.borrow_mut().insert(key, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Some(k) = self.key {
            self.signal.waiters.borrow_mut().remove(&k);
        }
    }
}
