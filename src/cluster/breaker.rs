//! A cluster's circuit breakers: how many connections, pending requests, requests and retries the
//! whole process has open to it right now, against the DEFAULT-priority thresholds. One `Breaker`
//! per cluster (per cluster spec: a changed cluster starts fresh, as Envoy's new cluster does),
//! shared by every shard through the snapshot, so a limit holds exactly across shards as Envoy's
//! does across workers. Owns the counts and the gauges derived from them; what overflowing means
//! for a request (503 UO, the overflow stats) is the request path's (`shard::upstream`).
//!
//! Shared rather than split per shard: a per-shard share of the limit (`max / shards`) would need
//! no atomic, but refuses traffic while another shard has room, and a limit of 1 cannot be split
//! across 2 shards at all. Measured (ARCHITECTURE.md, "Circuit breakers"), the two relaxed atomic
//! read-modify-writes per request cost nothing visible next to a request's syscalls.

use crate::config::CircuitBreakers;
use std::sync::atomic::{AtomicU32, Ordering};

/// One of the four counted resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// Open upstream connections (pooled or busy).
    Connections,
    /// Requests waiting for a connection.
    Pending,
    /// Requests on a connection.
    Requests,
    /// Retries in progress: held from the decision to retry until the retried attempt ends.
    Retries,
}

impl Resource {
    fn max(self, limits: &CircuitBreakers) -> u32 {
        match self {
            Resource::Connections => limits.max_connections,
            Resource::Pending => limits.max_pending_requests,
            Resource::Requests => limits.max_requests,
            Resource::Retries => limits.max_retries,
        }
    }
}

#[derive(Debug, Default)]
pub struct Breaker {
    connections: AtomicU32,
    pending: AtomicU32,
    requests: AtomicU32,
    retries: AtomicU32,
}

impl Breaker {
    fn counter(&self, r: Resource) -> &AtomicU32 {
        match r {
            Resource::Connections => &self.connections,
            Resource::Pending => &self.pending,
            Resource::Requests => &self.requests,
            Resource::Retries => &self.retries,
        }
    }

    /// Takes one `r` when fewer than its threshold are taken; false (nothing taken) otherwise.
    pub fn try_take(&self, r: Resource, limits: &CircuitBreakers) -> bool {
        let counter = self.counter(r);
        // One read-modify-write on success (the usual case); a refusal undoes its increment.
        if counter.fetch_add(1, Ordering::Relaxed) < r.max(limits) {
            true
        } else {
            counter.fetch_sub(1, Ordering::Relaxed);
            false
        }
    }

    /// Takes one `r` whatever the threshold (Envoy's first connection of an empty pool).
    pub fn take(&self, r: Resource) {
        self.counter(r).fetch_add(1, Ordering::Relaxed);
    }

    pub fn give_back(&self, r: Resource) {
        self.counter(r).fetch_sub(1, Ordering::Relaxed);
    }

    /// `try_take` as a guard that gives the resource back when dropped.
    pub fn hold(&self, r: Resource, limits: &CircuitBreakers) -> Option<Held<'_>> {
        // Built only when taken: a `Held` dropped gives back.
        if self.try_take(r, limits) {
            Some(Held { breaker: self, resource: r })
        } else {
            None
        }
    }

    pub fn count(&self, r: Resource) -> u32 {
        self.counter(r).load(Ordering::Relaxed)
    }

    /// `circuit_breakers.<priority>.*` gauges as Envoy names them. A `*_open` gauge is 1 while its
    /// resource is at its threshold (Envoy sets it on each take and give-back, so a threshold of 0
    /// never taken reads 0); `remaining_*` only with `track_remaining`. HIGH priority has no
    /// traffic in skiff: its breakers read closed.
    pub fn gauges(&self, limits: &CircuitBreakers) -> Vec<(&'static str, i64)> {
        let open = |r: Resource| {
            let n = self.count(r);
            i64::from(n > 0 && n >= r.max(limits))
        };
        let mut out = vec![
            ("circuit_breakers.default.cx_open", open(Resource::Connections)),
            ("circuit_breakers.default.cx_pool_open", 0),
            ("circuit_breakers.default.rq_pending_open", open(Resource::Pending)),
            ("circuit_breakers.default.rq_open", open(Resource::Requests)),
            ("circuit_breakers.default.rq_retry_open", open(Resource::Retries)),
            ("circuit_breakers.high.cx_open", 0),
            ("circuit_breakers.high.cx_pool_open", 0),
            ("circuit_breakers.high.rq_pending_open", 0),
            ("circuit_breakers.high.rq_open", 0),
            ("circuit_breakers.high.rq_retry_open", 0),
        ];
        if limits.track_remaining {
            let remaining = |r: Resource| i64::from(r.max(limits).saturating_sub(self.count(r)));
            out.extend([
                ("circuit_breakers.default.remaining_cx", remaining(Resource::Connections)),
                ("circuit_breakers.default.remaining_pending", remaining(Resource::Pending)),
                ("circuit_breakers.default.remaining_rq", remaining(Resource::Requests)),
                ("circuit_breakers.default.remaining_retries", remaining(Resource::Retries)),
            ]);
        }
        out
    }
}

/// One taken resource, given back on drop.
#[derive(Debug)]
pub struct Held<'a> {
    breaker: &'a Breaker,
    resource: Resource,
}

impl Held<'_> {
    /// Keeps the resource taken past this guard: whoever now owns it (a `ConnSlot`) gives it back.
    pub fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.breaker.give_back(self.resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_threshold_admits_exactly_that_many_and_gives_back_on_drop() {
        let limits = CircuitBreakers { max_requests: 2, ..CircuitBreakers::default() };
        let b = Breaker::default();
        let one = b.hold(Resource::Requests, &limits);
        let two = b.hold(Resource::Requests, &limits);
        assert!(one.is_some() && two.is_some());
        assert!(b.hold(Resource::Requests, &limits).is_none());
        // A refusal leaves the count alone.
        assert_eq!(b.count(Resource::Requests), 2);
        drop(one);
        assert!(b.hold(Resource::Requests, &limits).is_some());
        drop(two);
        assert_eq!(b.count(Resource::Requests), 0);
    }

    #[test]
    fn gauges_read_open_at_the_threshold_and_remaining_only_when_tracked() {
        let limits = CircuitBreakers { max_retries: 1, ..CircuitBreakers::default() };
        let b = Breaker::default();
        let g = |b: &Breaker, l: &CircuitBreakers, name: &str| {
            b.gauges(l).into_iter().find(|(n, _)| *n == name).map(|(_, v)| v)
        };
        assert_eq!(g(&b, &limits, "circuit_breakers.default.rq_retry_open"), Some(0));
        let _held = b.hold(Resource::Retries, &limits);
        assert_eq!(g(&b, &limits, "circuit_breakers.default.rq_retry_open"), Some(1));
        assert_eq!(g(&b, &limits, "circuit_breakers.default.remaining_retries"), None);
        let tracked = CircuitBreakers { track_remaining: true, ..limits };
        assert_eq!(g(&b, &tracked, "circuit_breakers.default.remaining_retries"), Some(0));
        assert_eq!(g(&b, &tracked, "circuit_breakers.default.remaining_rq"), Some(1024));
    }
}
