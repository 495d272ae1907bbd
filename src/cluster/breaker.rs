//! A cluster's circuit breakers: how many connections, pending requests, requests and retries the
//! whole process has open to it right now, against the DEFAULT-priority thresholds. One `Breaker`
//! per cluster (per cluster spec: a changed cluster starts fresh, as Envoy's new cluster does),
//! shared by every shard through the snapshot, so a limit holds exactly across shards as Envoy's
//! does across workers. Owns the counts and the gauges derived from them; what overflowing means
//! for a request (503 UO, the overflow stats) is the request path's (`shard::upstream`).
//!
//! A `retry_budget` makes the retry limit a share of the requests active and pending right now
//! (read from the same counts); `per_host_thresholds` caps each host's connections, counted per
//! host address in `host_counters` while the spec lives (a host that stays keeps its count across
//! DNS updates).
//!
//! Shared rather than split per shard: a per-shard share of the limit (`max / shards`) would need
//! no atomic, but refuses traffic while another shard has room, and a limit of 1 cannot be split
//! across 2 shards at all. Measured (ARCHITECTURE.md, "Circuit breakers"), the two relaxed atomic
//! read-modify-writes per request cost nothing visible next to a request's syscalls.

use crate::config::CircuitBreakers;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// Connections open (or opening) to one host, across shards.
pub type HostConns = Arc<AtomicU32>;

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
    /// A retry budget was consulted: from then on Envoy reports `remaining_retries` as 0 (a
    /// budget's room moves with other counts), before it the `max_retries` room.
    budget_used: AtomicBool,
    /// A retry was taken: Envoy sets `rq_retry_open` on each take and give-back, so under a
    /// budget (which lets retries past `max_retries`) it reads 1 from then on while the count is
    /// at `max_retries` or over, 0 included.
    retry_taken: AtomicBool,
    /// Per host address, only with `per_host_thresholds`: read when a snapshot is built, never
    /// on the request path (a snapshot holds its hosts' counters).
    hosts: Mutex<HashMap<SocketAddr, HostConns>>,
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

    /// The threshold of `r` now: a retry budget's share of the requests active and pending, at
    /// least its `min_retry_concurrency` (Envoy's `RetryBudgetImpl::max`), or the fixed maximum.
    fn limit(&self, r: Resource, limits: &CircuitBreakers) -> u32 {
        match (r, limits.retry_budget) {
            (Resource::Retries, Some(budget)) => {
                self.budget_used.store(true, Ordering::Relaxed);
                budget.limit(self.count(Resource::Requests) + self.count(Resource::Pending))
            }
            _ => r.max(limits),
        }
    }

    /// Takes one `r` when fewer than its threshold are taken; false (nothing taken) otherwise.
    pub fn try_take(&self, r: Resource, limits: &CircuitBreakers) -> bool {
        let counter = self.counter(r);
        // One read-modify-write on success (the usual case); a refusal undoes its increment.
        if counter.fetch_add(1, Ordering::Relaxed) < self.limit(r, limits) {
            if r == Resource::Retries {
                self.retry_taken.store(true, Ordering::Relaxed);
            }
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

    /// The connection counters of `addrs`, in order, for a snapshot of the cluster. Hosts gone
    /// from the cluster are forgotten once no connection to them is open.
    pub fn host_counters(&self, addrs: &[SocketAddr]) -> Vec<HostConns> {
        // A poisoned lock only means a panic elsewhere (which aborts): the map is still whole.
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        hosts.retain(|a, n| addrs.contains(a) || n.load(Ordering::Relaxed) > 0);
        addrs.iter().map(|a| hosts.entry(*a).or_default().clone()).collect()
    }

    /// `circuit_breakers.<priority>.*` gauges as Envoy names them. A `*_open` gauge is 1 while its
    /// resource is at its threshold (Envoy sets it on each take and give-back, so a threshold of 0
    /// never taken reads 0); `remaining_*` only with `track_remaining`. HIGH priority has no
    /// traffic in skiff: its breakers read closed.
    pub fn gauges(&self, limits: &CircuitBreakers) -> Vec<(&'static str, i64)> {
        let open = |r: Resource| {
            let n = self.count(r);
            let taken = match r {
                Resource::Retries => self.retry_taken.load(Ordering::Relaxed),
                _ => n > 0,
            };
            i64::from(taken && n >= r.max(limits))
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
            let remaining = |r: Resource| {
                let budgeted = r == Resource::Retries
                    && limits.retry_budget.is_some()
                    && self.budget_used.load(Ordering::Relaxed);
                if budgeted {
                    0
                } else {
                    i64::from(r.max(limits).saturating_sub(self.count(r)))
                }
            };
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

    #[test]
    fn a_retry_budget_admits_its_share_of_the_requests_in_flight_and_clears_remaining() {
        use crate::config::RetryBudget;
        let budget = RetryBudget { budget_percent: 50.0, min_retry_concurrency: 1 };
        let limits =
            CircuitBreakers { retry_budget: Some(budget), track_remaining: true, ..Default::default() };
        let b = Breaker::default();
        let g =
            |b: &Breaker, name: &str| b.gauges(&limits).into_iter().find(|(n, _)| *n == name).map(|(_, v)| v);
        // Untouched, the gauge still shows max_retries' room, as Envoy's does.
        assert_eq!(g(&b, "circuit_breakers.default.remaining_retries"), Some(3));
        // With no request in flight the minimum holds: one retry.
        let one = b.hold(Resource::Retries, &limits);
        assert!(one.is_some() && b.hold(Resource::Retries, &limits).is_none());
        // Four requests: 50 % of them is two.
        let requests: Vec<_> = (0..4).filter_map(|_| b.hold(Resource::Requests, &limits)).collect();
        let two = b.hold(Resource::Retries, &limits);
        assert!(two.is_some());
        assert_eq!(b.count(Resource::Retries), 2);
        assert!(b.hold(Resource::Retries, &limits).is_none());
        drop(requests);
        assert_eq!(g(&b, "circuit_breakers.default.remaining_retries"), Some(0));
    }
}
