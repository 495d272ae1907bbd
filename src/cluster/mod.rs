//! Clusters: the immutable part (endpoints with weights, LB policy, timeouts) built by the control
//! thread into a snapshot, and the per-shard part (`ShardCluster`: LB cursors, active-request
//! counts and LEAST_REQUEST's EDF deadlines; `pool`: idle upstream connections). Never shared
//! between shards.

pub mod breaker;
pub mod hash_lb;
pub mod health;
pub mod locality;
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
    /// Locality index per host (`config::Endpoint::locality`), aligned with `hosts`; missing: 0.
    pub localities: Vec<u32>,
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
    /// Locality index per endpoint, aligned with `endpoints`.
    pub localities: Vec<u32>,
    /// `locality_weighted_lb_config`: weight per locality index (`config::Locality::weight`);
    /// None: not weighted.
    pub locality_weights: Option<Vec<u32>>,
    pub least_request: config::LeastRequest,
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
    /// HTTP/1.1 or HTTP/2 to its hosts (`shard::h2_upstream` makes the HTTP/2 connections).
    pub protocol: config::UpstreamProtocol,
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
        let Resolved { hosts: endpoints, mut levels, mut localities, breaker, board, detector } = resolved;
        levels.resize(endpoints.len(), (0, config::HealthStatus::Unknown));
        localities.resize(endpoints.len(), 0);
        let addrs: Vec<SocketAddr> = endpoints.iter().map(|(a, _)| *a).collect();
        let weights: Vec<u32> = endpoints.iter().map(|(_, w)| *w).collect();
        // RING_HASH and MAGLEV tables are built from host weights alone (a load warning says so).
        let locality_weights = (cluster.locality_weighted
            && !matches!(cluster.lb_policy, LbPolicy::RingHash | LbPolicy::Maglev))
        .then(|| cluster.localities.iter().map(|l| l.weight).collect::<Vec<u32>>());
        let hosts = Hosts {
            levels: &levels,
            weights: &weights,
            localities: &localities,
            locality_weights: locality_weights.as_deref(),
            lb: cluster.lb_health,
        };
        let plan = hosts.plan(board.as_deref());
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
                // Nor is a connection (or an HTTP/2 bridge) reused after the protocol changed.
                format!("{:?}", cluster.protocol).hash(&mut h);
                h.finish()
            },
            connect_timeout: cluster.connect_timeout,
            protocol: cluster.protocol,
            lb_policy: cluster.lb_policy,
            weights,
            endpoints: endpoints.into_iter().map(|(a, _)| a).collect(),
            levels,
            localities,
            locality_weights,
            least_request: cluster.least_request,
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
            && self.localities == other.localities
            && self.locality_weights == other.locality_weights
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

/// What a cluster's plan is made from, aligned with its endpoints.
struct Hosts<'a> {
    levels: &'a [(u32, config::HealthStatus)],
    weights: &'a [u32],
    localities: &'a [u32],
    locality_weights: Option<&'a [u32]>,
    lb: config::LbHealth,
}

impl Hosts<'_> {
    fn of(snap: &ClusterSnap) -> Hosts<'_> {
        Hosts {
            levels: &snap.levels,
            weights: &snap.weights,
            localities: &snap.localities,
            locality_weights: snap.locality_weights.as_deref(),
            lb: snap.lb_health,
        }
    }

    fn plan(&self, board: Option<&Board>) -> Plan {
        let priority: Vec<u32> = self.levels.iter().map(|l| l.0).collect();
        let flags: Vec<Flags> = (0..self.levels.len()).map(|i| flags_of(self.levels, board, i)).collect();
        let mut plan = Plan::new(&priority, &flags, self.weights, self.lb);
        if let Some(weights) = self.locality_weights {
            let counted =
                |h: u32| flags.get(h as usize).is_some_and(|f| f.class() != health::Class::Excluded);
            let layout = locality::Layout {
                locality_of: self.localities,
                weights,
                host_weights: self.weights,
                counted: &counted,
                overprovisioning_factor: self.lb.overprovisioning_factor,
            };
            plan.weigh_localities(|all, usable| layout.localities(all, usable));
        }
        plan
    }
}

/// One shard's load-balancing state for one cluster of one snapshot.
#[derive(Debug)]
pub struct ShardCluster {
    cursor: Cell<usize>,
    /// Requests in flight per endpoint, for LEAST_REQUEST.
    active: Box<[Cell<u32>]>,
    /// LEAST_REQUEST with unequal weights: each endpoint's EDF deadline (Envoy's
    /// `EdfScheduler`); empty for other policies.
    deadlines: Box<[Cell<f64>]>,
    /// With locality weighting, per locality index (empty without): the turn in the locality
    /// schedule of the level whose first usable locality it is (a level steps its own schedule,
    /// as Envoy's per-priority one), and the round-robin cursor over its hosts.
    locality_turns: Box<[Cell<usize>]>,
    locality_cursors: Box<[Cell<usize>]>,
    /// `lb_healthy_panic` is counted here.
    stats: Rc<ClusterStats>,
    /// With active health checks: the plan for the board's version it was built from.
    checked: RefCell<Option<(u64, Rc<Plan>)>>,
}

impl ShardCluster {
    /// `shard` staggers the round-robin start so shards don't all hit endpoint 0 first.
    pub fn new(snap: &ClusterSnap, shard: usize, stats: Rc<ClusterStats>) -> Self {
        let deadlines = match snap.lb_policy {
            // Envoy's scheduler starts every host at 1/weight.
            LbPolicy::LeastRequest => {
                snap.weights.iter().map(|w| Cell::new(1.0 / f64::from((*w).max(1)))).collect()
            }
            _ => Box::default(),
        };
        let localities = snap.locality_weights.as_ref().map_or(0, Vec::len);
        ShardCluster {
            cursor: Cell::new(shard),
            active: (0..snap.endpoints.len()).map(|_| Cell::new(0)).collect(),
            deadlines,
            locality_turns: (0..localities).map(|_| Cell::new(shard)).collect(),
            locality_cursors: (0..localities).map(|_| Cell::new(shard)).collect(),
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
                let plan = Rc::new(Hosts::of(snap).plan(Some(board)));
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
        let (source, cursor) = match choice.source.localities.as_deref().and_then(|l| self.locality(l)) {
            None => (choice.source, &self.cursor),
            Some(picked) => picked,
        };
        let hosts = &source.hosts;
        let n = hosts.len() as u64;
        if n == 0 {
            return None;
        }
        let host = match snap.lb_policy {
            LbPolicy::RoundRobin => {
                let c = cursor.get();
                cursor.set(c.wrapping_add(1));
                let schedule = &source.schedule;
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
            LbPolicy::LeastRequest if source.equal_weights => {
                Some(self.fewest_active(hosts, snap.least_request.choice_count, rng))
            }
            LbPolicy::LeastRequest => {
                Some(self.earliest(hosts, &snap.weights, snap.least_request.active_request_bias))
            }
        };
        host.map(|h| h as usize)
    }

    /// The locality this pick draws from (its next turn in the locality schedule) and its cursor.
    fn locality<'s>(
        &'s self,
        localities: &'s health::Localities,
    ) -> Option<(&'s health::Source, &'s Cell<usize>)> {
        let (first, _) = localities.sources.first()?;
        let turns = self.locality_turns.get(*first as usize)?;
        let turn = turns.get();
        turns.set(turn.wrapping_add(1));
        let schedule = &localities.schedule;
        let at = *schedule.get(turn % schedule.len().max(1))? as usize;
        let (index, source) = localities.sources.get(at)?;
        Some((source, self.locality_cursors.get(*index as usize).unwrap_or(&self.cursor)))
    }

    /// Envoy's unweighted LEAST_REQUEST: `choice_count` hosts drawn at random (with replacement);
    /// the first drawn of the fewest active requests. Two choices are as good as a full scan in
    /// practice, and O(1).
    fn fewest_active(&self, hosts: &[u32], choices: u32, rng: &Rng) -> u32 {
        let n = hosts.len() as u64;
        let load = |h: u32| self.active.get(h as usize).map_or(0, Cell::get);
        let mut best = hosts[(rng.next() % n) as usize];
        for _ in 1..choices {
            let h = hosts[(rng.next() % n) as usize];
            if load(h) < load(best) {
                best = h;
            }
        }
        best
    }

    /// Envoy's weighted LEAST_REQUEST: the host of the earliest EDF deadline, which then moves on
    /// by 1 / (weight / (active + 1)^bias), so a busy host comes round later. A scan of the hosts
    /// (Envoy keeps a heap): clusters are small, and equal weights never come here.
    fn earliest(&self, hosts: &[u32], weights: &[u32], bias: f64) -> u32 {
        let deadline = |h: u32| self.deadlines.get(h as usize).map_or(f64::INFINITY, Cell::get);
        let mut best = hosts[0];
        for h in &hosts[1..] {
            if deadline(*h) < deadline(best) {
                best = *h;
            }
        }
        let weight = f64::from(weights.get(best as usize).copied().unwrap_or(1).max(1));
        let active = f64::from(self.active.get(best as usize).map_or(0, Cell::get)) + 1.0;
        let effective = if bias == 0.0 {
            weight
        } else if bias == 1.0 {
            weight / active
        } else {
            weight / active.powf(bias)
        };
        if let Some(d) = self.deadlines.get(best as usize) {
            d.set(d.get() + 1.0 / effective);
        }
        best
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
