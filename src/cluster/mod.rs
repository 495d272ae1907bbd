//! Clusters: the immutable part (endpoints with weights, LB policy, timeouts) built by the control
//! thread into a snapshot, and the per-shard part (`ShardCluster`: LB cursor and active-request
//! counts; `pool`: idle upstream connections). Never shared between shards.

pub mod breaker;
pub mod hash_lb;
pub mod outlier;
pub mod pending;
pub mod pool;

use crate::config::{self, LbPolicy};
use breaker::Breaker;
use hash_lb::HashTable;
use outlier::{Detector, Outlier};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A cluster's hosts as the control thread hands them to a snapshot, with the circuit breakers
/// that live as long as the cluster's spec does (they count what is open across snapshots).
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// (address, weight) of the best (lowest) priority level that has any.
    pub hosts: Vec<(SocketAddr, u32)>,
    pub breaker: Arc<Breaker>,
    /// Its hosts' outlier-detection state, kept as long as the spec (like the breakers).
    pub detector: Arc<Detector>,
}

/// A cluster as a snapshot carries it: endpoints already resolved.
#[derive(Debug)]
pub struct ClusterSnap {
    pub name: String,
    /// Names this cluster in the upstream pool (a hash of its name): two clusters on one address
    /// never share connections, and a cluster keeps its pooled connections across snapshots.
    pub pool_id: u64,
    pub connect_timeout: Duration,
    pub lb_policy: LbPolicy,
    pub endpoints: Vec<SocketAddr>,
    /// `load_balancing_weight` of each endpoint, aligned with `endpoints`.
    pub weights: Vec<u32>,
    /// Smooth weighted round-robin order over `endpoints` (indices); plain 0..n when weights are equal.
    schedule: Vec<u32>,
    pub max_requests_per_connection: Option<u32>,
    /// How long its connections may idle or live, how many header lines a response may have, and
    /// its TCP keepalive.
    pub connection: ConnectionLimits,
    pub circuit_breakers: config::CircuitBreakers,
    /// Shared by every shard and every snapshot of this cluster spec.
    pub breaker: Arc<Breaker>,
    /// `outlier_detection`, when configured: per-host counts shared by every shard.
    pub outlier: Option<Outlier>,
    /// The ring or Maglev table of a RING_HASH or MAGLEV cluster.
    pub hash_table: Option<HashTable>,
    /// `transport_socket` TLS: its connections are made by `shard::tls`.
    pub tls: Option<config::tls::UpstreamTls>,
}

/// A cluster's limits on each of its upstream connections (`common_http_protocol_options`,
/// `upstream_connection_options`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Whole seconds a pooled connection may idle (the pool's clock ticks once a second), at
    /// least 1.
    pub idle_secs: u64,
    /// After this long a connection carries no new request.
    pub max_duration: Option<Duration>,
    pub max_headers_count: usize,
    pub tcp_keepalive: Option<config::TcpKeepalive>,
}

impl ConnectionLimits {
    fn of(cluster: &config::Cluster) -> Self {
        ConnectionLimits {
            idle_secs: cluster.idle_timeout.as_secs_f64().ceil().max(1.0) as u64,
            max_duration: cluster.max_connection_duration,
            max_headers_count: cluster.max_headers_count,
            tcp_keepalive: cluster.tcp_keepalive,
        }
    }
}

/// Longest schedule we precompute; beyond it weights are scaled down.
const MAX_SCHEDULE: u64 = 4096;

impl ClusterSnap {
    pub fn new(cluster: &config::Cluster, resolved: Resolved) -> Self {
        let Resolved { hosts: endpoints, breaker, detector } = resolved;
        let addrs: Vec<SocketAddr> = endpoints.iter().map(|(a, _)| *a).collect();
        let weights: Vec<u32> = endpoints.iter().map(|(_, w)| *w).collect();
        let outlier = cluster.outlier_detection.map(|c| Outlier::new(c, detector, &addrs));
        let hash_table = HashTable::build(cluster.lb_policy, &addrs, &weights, &cluster.hash_table);
        let schedule = smooth_wrr_schedule(&endpoints.iter().map(|(_, w)| *w).collect::<Vec<_>>());
        ClusterSnap {
            name: cluster.name.clone(),
            pool_id: {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                cluster.name.hash(&mut h);
                // A TLS connection is never reused for another identity (a reload that changes
                // the cluster's TLS context starts a new pool).
                cluster.tls.as_ref().map(|t| &t.spec).hash(&mut h);
                h.finish()
            },
            connect_timeout: cluster.connect_timeout,
            lb_policy: cluster.lb_policy,
            weights: endpoints.iter().map(|(_, w)| *w).collect(),
            endpoints: endpoints.into_iter().map(|(a, _)| a).collect(),
            schedule,
            max_requests_per_connection: cluster.max_requests_per_connection,
            connection: ConnectionLimits::of(cluster),
            circuit_breakers: cluster.circuit_breakers,
            breaker,
            outlier,
            hash_table,
            tls: cluster.tls.clone(),
        }
    }
}

impl ClusterSnap {
    /// Whether per-shard load-balancing state built for `other` fits this cluster unchanged.
    pub fn same_hosts(&self, other: &ClusterSnap) -> bool {
        self.endpoints == other.endpoints
            && self.weights == other.weights
            && self.lb_policy == other.lb_policy
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// nginx's smooth weighted round robin, unrolled once so a shard only steps a cursor.
fn smooth_wrr_schedule(weights: &[u32]) -> Vec<u32> {
    if weights.is_empty() {
        return Vec::new();
    }
    let g = weights.iter().fold(0u64, |g, w| gcd(g, u64::from((*w).max(1))));
    let mut w: Vec<u64> = weights.iter().map(|x| u64::from((*x).max(1)) / g.max(1)).collect();
    let mut total: u64 = w.iter().sum();
    if total > MAX_SCHEDULE {
        let scale = total.div_ceil(MAX_SCHEDULE);
        w.iter_mut().for_each(|x| *x = (*x / scale).max(1));
        total = w.iter().sum();
    }
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..w.len() {
            current[i] += w[i] as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total as i64;
        out.push(best as u32);
    }
    out
}

/// One shard's load-balancing state for one cluster of one snapshot.
#[derive(Debug)]
pub struct ShardCluster {
    cursor: Cell<usize>,
    /// Requests in flight per endpoint, for LEAST_REQUEST.
    active: Box<[Cell<u32>]>,
}

impl ShardCluster {
    /// `shard` staggers the round-robin start so shards don't all hit endpoint 0 first.
    pub fn new(snap: &ClusterSnap, shard: usize) -> Self {
        ShardCluster {
            cursor: Cell::new(shard),
            active: (0..snap.endpoints.len()).map(|_| Cell::new(0)).collect(),
        }
    }

    /// The endpoint index for the next request; None when the cluster has no endpoints.
    pub fn pick(&self, snap: &ClusterSnap, rng: &Rng) -> Option<usize> {
        self.pick_for(snap, rng, None)
    }

    /// `pick` for a request with a `hash_policy` key (RING_HASH, MAGLEV; others ignore it).
    /// Hosts outlier detection ejected are skipped unless too few are left (panic).
    pub fn pick_for(&self, snap: &ClusterSnap, rng: &Rng, hash: Option<u64>) -> Option<usize> {
        let first = self.pick_any(snap, rng, hash)?;
        let Some(outlier) = snap.outlier.as_ref() else { return Some(first) };
        if outlier.usable(first) || outlier.panic() {
            return Some(first);
        }
        if let Some(table) = &snap.hash_table {
            // A request without a key hashes randomly, as Envoy's.
            let h = hash.unwrap_or_else(|| rng.next());
            return Some(table.pick(h, |e| outlier.usable(e)));
        }
        // Round robin steps on through its schedule; the random policies draw again.
        let tries = snap.schedule.len().max(snap.endpoints.len());
        (0..tries).filter_map(|_| self.pick_any(snap, rng, hash)).find(|e| outlier.usable(*e)).or(Some(first))
    }

    fn pick_any(&self, snap: &ClusterSnap, rng: &Rng, hash: Option<u64>) -> Option<usize> {
        let n = snap.endpoints.len();
        if n == 0 {
            return None;
        }
        Some(match snap.lb_policy {
            LbPolicy::RoundRobin => {
                let c = self.cursor.get();
                self.cursor.set(c.wrapping_add(1));
                snap.schedule.get(c % snap.schedule.len().max(1)).map_or(0, |i| *i as usize)
            }
            LbPolicy::Random => (rng.next() % n as u64) as usize,
            LbPolicy::RingHash | LbPolicy::Maglev => match &snap.hash_table {
                Some(t) => t.pick(hash.unwrap_or_else(|| rng.next()), |_| true),
                None => (rng.next() % n as u64) as usize,
            },
            // Power of two choices: as good as a full scan in practice, O(1).
            LbPolicy::LeastRequest => {
                let a = (rng.next() % n as u64) as usize;
                let b = (rng.next() % n as u64) as usize;
                if self.active[b].get() < self.active[a].get() {
                    b
                } else {
                    a
                }
            }
        })
    }

    pub fn begin(&self, endpoint: usize) {
        if let Some(c) = self.active.get(endpoint) {
            c.set(c.get() + 1);
        }
    }

    pub fn end(&self, endpoint: usize) {
        if let Some(c) = self.active.get(endpoint) {
            c.set(c.get().saturating_sub(1));
        }
    }
}

/// A shard-local xorshift64* generator: request ids, RANDOM and weighted picks. Not for secrets.
#[derive(Debug)]
pub struct Rng(Cell<u64>);

impl Rng {
    pub fn seeded(seed: u64) -> Self {
        Rng(Cell::new(seed | 1))
    }

    pub fn next(&self) -> u64 {
        let mut x = self.0.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_schedule_spreads_by_weight_and_interleaves() {
        let s = smooth_wrr_schedule(&[5, 1, 1]);
        assert_eq!(s.len(), 7);
        assert_eq!(s.iter().filter(|i| **i == 0).count(), 5);
        // Smooth: the heavy endpoint never takes more than 3 turns in a row here.
        assert_eq!(s, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn equal_weights_are_plain_round_robin() {
        assert_eq!(smooth_wrr_schedule(&[3, 3, 3]), vec![0, 1, 2]);
    }

    #[test]
    fn huge_weights_are_scaled_to_a_bounded_schedule() {
        let s = smooth_wrr_schedule(&[1_000_000, 999_999]);
        assert!(s.len() as u64 <= MAX_SCHEDULE + 2);
    }
}
