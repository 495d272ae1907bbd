//! Clusters: the immutable part (endpoints with weights, LB policy, timeouts) built by the control
//! thread into a snapshot, and the per-shard part (`ShardCluster`: LB cursor and active-request
//! counts; `pool`: idle upstream connections). Never shared between shards.

pub mod breaker;
pub mod hash_lb;
pub mod health;
pub mod outlier;
pub mod pending;
pub mod pool;
pub mod schedule;

use crate::config::{self, LbPolicy};
use crate::stats::ClusterStats;
use breaker::Breaker;
use hash_lb::HashTable;
use health::{Board, Flags, Plan};
use outlier::{Detector, Outlier};
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// A cluster's hosts as the control thread hands them to a snapshot, with the circuit breakers
/// that live as long as the cluster's spec does (they count what is open across snapshots).
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    /// (address, weight) of every host, all priority levels.
    pub hosts: Vec<(SocketAddr, u32)>,
    /// (priority, declared health) per host, aligned with `hosts`; missing: 0, UNKNOWN.
    pub levels: Vec<(u32, config::HealthStatus)>,
    pub breaker: Arc<Breaker>,
    /// Active health-check verdicts, aligned with `hosts`; None when the cluster has no checks.
    pub board: Option<Arc<Board>>,
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
    /// Priority and declared health per endpoint, aligned with `endpoints`.
    pub levels: Vec<(u32, config::HealthStatus)>,
    pub lb_health: config::LbHealth,
    /// Which hosts take traffic given declared health (and the board's verdicts when built).
    plan: Plan,
    /// Active health-check verdicts; when present each shard keeps its own `Plan` from it.
    pub board: Option<Arc<Board>>,
    pub max_requests_per_connection: Option<u32>,
    /// How long its connections may idle or live, how many header lines a response may have, and
    /// its TCP keepalive.
    pub connection: ConnectionLimits,
    pub circuit_breakers: config::CircuitBreakers,
    /// Shared by every shard and every snapshot of this cluster spec.
    pub breaker: Arc<Breaker>,
    /// Connections open to each endpoint (aligned with `endpoints`), across shards; empty
    /// without `per_host_thresholds`.
    pub host_conns: Vec<breaker::HostConns>,
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

impl ClusterSnap {
    pub fn new(cluster: &config::Cluster, resolved: Resolved) -> Self {
        let Resolved { hosts: endpoints, mut levels, breaker, board, detector } = resolved;
        levels.resize(endpoints.len(), (0, config::HealthStatus::Unknown));
        let addrs: Vec<SocketAddr> = endpoints.iter().map(|(a, _)| *a).collect();
        let weights: Vec<u32> = endpoints.iter().map(|(_, w)| *w).collect();
        let plan = plan_of(&levels, &weights, board.as_deref(), cluster.lb_health);
        let outlier = cluster.outlier_detection.map(|c| Outlier::new(c, detector, &addrs));
        let hash_table = HashTable::build(cluster.lb_policy, &addrs, &weights, &cluster.hash_table);
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
            weights,
            endpoints: endpoints.into_iter().map(|(a, _)| a).collect(),
            levels,
            lb_health: cluster.lb_health,
            plan,
            board,
            max_requests_per_connection: cluster.max_requests_per_connection,
            connection: ConnectionLimits::of(cluster),
            circuit_breakers: cluster.circuit_breakers,
            host_conns: match cluster.circuit_breakers.max_connections_per_host {
                Some(_) => breaker.host_counters(&addrs),
                None => Vec::new(),
            },
            breaker,
            outlier,
            hash_table,
            tls: cluster.tls.clone(),
        }
    }
}

impl ClusterSnap {
    /// The connection count of `endpoint` when `per_host_thresholds` caps it, and whether it is
    /// under the cap (Envoy compares the host's `cx_active`, connecting ones included).
    pub fn host_room(&self, endpoint: usize) -> Option<(&breaker::HostConns, bool)> {
        let max = self.circuit_breakers.max_connections_per_host?;
        let n = self.host_conns.get(endpoint)?;
        Some((n, n.load(std::sync::atomic::Ordering::Relaxed) < max))
    }

    /// Whether per-shard load-balancing state built for `other` fits this cluster unchanged.
    pub fn same_hosts(&self, other: &ClusterSnap) -> bool {
        self.endpoints == other.endpoints
            && self.weights == other.weights
            && self.lb_policy == other.lb_policy
            && self.levels == other.levels
            && self.lb_health == other.lb_health
            && match (&self.board, &other.board) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    }

    /// Each host's health flags, aligned with `endpoints`.
    pub fn flags(&self, host: usize) -> Flags {
        Flags {
            failed_outlier_check: self.outlier.as_ref().is_some_and(|o| o.ejected(host)),
            ..flags_of(&self.levels, self.board.as_deref(), host)
        }
    }
}

fn flags_of(levels: &[(u32, config::HealthStatus)], board: Option<&Board>, host: usize) -> Flags {
    let active = |f: fn(&Board, usize) -> bool| board.is_some_and(|b| f(b, host));
    Flags {
        declared: levels.get(host).map_or(config::HealthStatus::Unknown, |l| l.1),
        failed_active_hc: active(Board::failed),
        failed_outlier_check: false,
        degraded_active_hc: active(Board::degraded),
        active_hc_timeout: active(Board::timed_out),
    }
}

fn plan_of(
    levels: &[(u32, config::HealthStatus)],
    weights: &[u32],
    board: Option<&Board>,
    lb: config::LbHealth,
) -> Plan {
    let priority: Vec<u32> = levels.iter().map(|l| l.0).collect();
    let flags: Vec<Flags> = (0..levels.len()).map(|i| flags_of(levels, board, i)).collect();
    Plan::new(&priority, &flags, weights, lb)
}

/// One shard's load-balancing state for one cluster of one snapshot.
#[derive(Debug)]
pub struct ShardCluster {
    cursor: Cell<usize>,
    /// Requests in flight per endpoint, for LEAST_REQUEST.
    active: Box<[Cell<u32>]>,
    /// `lb_healthy_panic` is counted here.
    stats: Rc<ClusterStats>,
    /// With active health checks: the plan for the board's version it was built from.
    checked: RefCell<Option<(u64, Rc<Plan>)>>,
}

impl ShardCluster {
    /// `shard` staggers the round-robin start so shards don't all hit endpoint 0 first.
    pub fn new(snap: &ClusterSnap, shard: usize, stats: Rc<ClusterStats>) -> Self {
        ShardCluster {
            cursor: Cell::new(shard),
            active: (0..snap.endpoints.len()).map(|_| Cell::new(0)).collect(),
            stats,
            checked: RefCell::new(None),
        }
    }

    /// The plan for the board's current verdicts, rebuilt on this shard when one changed.
    fn checked_plan(&self, snap: &ClusterSnap, board: &Board) -> Rc<Plan> {
        let version = board.version();
        let mut slot = self.checked.borrow_mut();
        match &*slot {
            Some((v, plan)) if *v == version => plan.clone(),
            _ => {
                let plan = Rc::new(plan_of(&snap.levels, &snap.weights, Some(board), snap.lb_health));
                *slot = Some((version, plan.clone()));
                plan
            }
        }
    }

    /// The endpoint index for the next request; None when no host may take it (`no healthy
    /// upstream`).
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
        let turns: usize = snap.weights.iter().map(|w| *w as usize).sum();
        let tries = turns.min(4096).max(snap.endpoints.len());
        (0..tries).filter_map(|_| self.pick_any(snap, rng, hash)).find(|e| outlier.usable(*e)).or(Some(first))
    }

    fn pick_any(&self, snap: &ClusterSnap, rng: &Rng, hash: Option<u64>) -> Option<usize> {
        let checked;
        let plan = match &snap.board {
            None => &snap.plan,
            Some(board) => {
                checked = self.checked_plan(snap, board);
                &*checked
            }
        };
        let choice = plan.choose(|| rng.next())?;
        if choice.panic {
            self.stats.lb_healthy_panic.inc();
        }
        let hosts = &choice.source.hosts;
        let n = hosts.len() as u64;
        if n == 0 {
            return None;
        }
        let host = match snap.lb_policy {
            LbPolicy::RoundRobin => {
                let c = self.cursor.get();
                self.cursor.set(c.wrapping_add(1));
                let schedule = &choice.source.schedule;
                schedule.get(c % schedule.len().max(1)).copied()
            }
            LbPolicy::Random => hosts.get((rng.next() % n) as usize).copied(),
            LbPolicy::RingHash | LbPolicy::Maglev => {
                let h = hash.unwrap_or_else(|| rng.next());
                match &snap.hash_table {
                    // Every host may take it: the table as built (the common case).
                    Some(t) if hosts.len() == snap.endpoints.len() => Some(t.pick(h, |_| true) as u32),
                    // Health or priority narrowed the hosts: the next usable point of the table.
                    Some(t) => Some(t.pick(h, |e| hosts.contains(&(e as u32))) as u32),
                    None => hosts.get((rng.next() % n) as usize).copied(),
                }
            }
            // Power of two choices: as good as a full scan in practice, O(1).
            LbPolicy::LeastRequest => {
                let a = hosts[(rng.next() % n) as usize] as usize;
                let b = hosts[(rng.next() % n) as usize] as usize;
                let load = |i: usize| self.active.get(i).map_or(0, Cell::get);
                Some(if load(b) < load(a) { b } else { a } as u32)
            }
        };
        host.map(|h| h as usize)
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
