//! `envoy.filters.network.connection_limit`: at most `max_connections` connections through the
//! filter at once, counted across shards in one atomic word (touched once when a connection
//! opens and once when it closes). A connection over the limit is closed, after `delay` when one
//! is configured, and counted (`limited_connections`); while it waits to be closed it counts as
//! open, as in Envoy (`active_connections` and the limit both include it).

use super::decision::{Carried, Decision};
use crate::access_log::ResponseFlags;
use crate::stats::ConnectionLimitStats;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Counts of live snapshots, for the next snapshot to keep (`super::carry`).
pub(super) static CARRIED: Carried<AtomicU64> = Mutex::new(Vec::new());

#[derive(Debug)]
pub(super) struct ConnectionLimit {
    open: Arc<AtomicU64>,
    max: u64,
    delay: Option<Duration>,
    /// Index of this filter's stats in the chain's.
    pub(super) stats: usize,
}

/// A connection's place in a connection limit, given back when the connection ends.
#[derive(Debug)]
pub struct Slot {
    open: Arc<AtomicU64>,
    stats: Rc<ConnectionLimitStats>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.stats.active_connections.dec();
    }
}

impl ConnectionLimit {
    pub(super) fn new(c: &crate::config::ConnectionLimit, open: Arc<AtomicU64>, stats: usize) -> Self {
        ConnectionLimit { open, max: c.max_connections, delay: c.delay, stats }
    }

    pub(super) fn on_new_connection(&self, stats: &Rc<ConnectionLimitStats>) -> (Decision, Slot) {
        stats.active_connections.inc();
        let admitted = self
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < self.max).then_some(n + 1))
            .is_ok();
        let decision = if admitted {
            Decision::Continue
        } else {
            stats.limited_connections.inc();
            self.open.fetch_add(1, Ordering::Relaxed);
            Decision::Close { delay: self.delay, flags: ResponseFlags::NONE }
        };
        (decision, Slot { open: self.open.clone(), stats: stats.clone() })
    }
}
