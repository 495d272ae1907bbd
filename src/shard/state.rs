//! A shard's state as its tasks share it: the current `Generation` (a snapshot plus this shard's
//! load-balancer state and stat handles for it), the upstream pool, the random generator, the
//! `date` header, stats, access-log buffers, the drain signal and connection counts. Data and
//! small accessors only: the runtime that drives it (installing snapshots, accept loops, timers)
//! is `shard`'s `mod.rs`, and the request path reads it through `Rc<Shard>`.

use super::reply::DateCache;
use super::signal::Signal;
use super::timer::Timers;
use crate::access_log::ShardBuffers;
use crate::cluster::pool::Pool;
use crate::cluster::{Rng, ShardCluster};
use crate::filters::network::{NetFilterChain, NetFilterStats, NetStatName};
use crate::filters::{FilterStats, StatName};
use crate::snapshot::Snapshot;
use crate::stats::{
    listener_stat_name, ClusterStats, HostStats, HttpStats, ListenerStats, ShardStats, TcpStats, WorkerStats,
};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Keeps each shard's counter on its own cache line.
#[repr(align(128))]
#[derive(Default)]
pub struct PaddedCount(pub AtomicUsize);

/// A snapshot plus this shard's load-balancing state for its clusters.
pub struct Generation {
    pub snap: Arc<Snapshot>,
    /// Shared with the previous generation for clusters whose hosts and policy did not change, so
    /// round-robin positions and in-flight counts survive a reload.
    pub clusters: Vec<Rc<ShardCluster>>,
    /// Aligned with `snap.listeners` and `snap.clusters`: stat lookups by name happen here, once
    /// per snapshot, never per request.
    pub http_stats: Vec<Rc<HttpStats>>,
    /// Aligned with `snap.listeners`: `listener.<address>.*` and this shard's `worker_<n>` share.
    pub listener_stats: Vec<(Rc<ListenerStats>, Rc<WorkerStats>)>,
    pub cluster_stats: Vec<Rc<ClusterStats>>,
    /// Aligned with `snap.listeners`, then with each chain's `stat_names`.
    pub filter_stats: Vec<Vec<FilterStats>>,
    /// Aligned with `snap.listeners`, then with each network filter chain's `stat_names`.
    pub net_filter_stats: Vec<Vec<NetFilterStats>>,
    /// The same for `snap.tcp_listeners`.
    pub tcp_net_filter_stats: Vec<Vec<NetFilterStats>>,
    /// Aligned with `snap.tcp_listeners`: `tcp.<stat_prefix>.*` and the listener's stats.
    pub tcp_stats: Vec<(Rc<TcpStats>, Rc<ListenerStats>, Rc<WorkerStats>)>,
    /// Per cluster, aligned with its endpoints.
    pub host_stats: Vec<Vec<Rc<HostStats>>>,
}

impl Generation {
    pub(super) fn new(
        snap: Arc<Snapshot>,
        shard: usize,
        stats: &ShardStats,
        previous: Option<&Generation>,
    ) -> Self {
        // Envoy shows the inspector's counters from the moment a listener has one.
        if snap.selectors.iter().any(|s| s.inspector.is_some()) {
            stats.tls_inspector();
        }
        let clusters = ClusterState::carry(&snap, shard, stats, previous);
        Generation {
            clusters: clusters.lb,
            cluster_stats: clusters.stats,
            host_stats: clusters.hosts,
            http_stats: snap.listeners.iter().map(|l| stats.http(&l.hcm.stat_prefix)).collect(),
            listener_stats: snap
                .listeners
                .iter()
                .map(|l| {
                    let name = listener_stat_name(l.socket.bound);
                    (stats.listener(&name), stats.worker(&name, shard))
                })
                .collect(),
            filter_stats: snap
                .listeners
                .iter()
                .map(|l| {
                    let by_name = |n: &StatName| match n {
                        StatName::LocalRateLimit(p) => FilterStats::LocalRateLimit(stats.local_rate_limit(p)),
                        StatName::Fault(p) => FilterStats::Fault(stats.fault(p)),
                        StatName::Cors(p) => FilterStats::Cors(stats.cors(p)),
                        StatName::Csrf(p) => FilterStats::Csrf(stats.csrf(p)),
                        StatName::JwtAuthn(p) => FilterStats::JwtAuthn(stats.jwt_authn(p)),
                        StatName::Rbac { hcm, rules, shadow } => {
                            FilterStats::Rbac(stats.rbac(hcm, rules), stats.rbac_shadow(hcm, shadow))
                        }
                        StatName::ExtAuthz(p) => FilterStats::ExtAuthz(stats.ext_authz(p)),
                        StatName::Compressor { prefix, rest, response_prefix } => {
                            FilterStats::Compressor(stats.compressor(prefix, rest, *response_prefix))
                        }
                    };
                    l.filters.stat_names().iter().map(by_name).collect()
                })
                .collect(),
            net_filter_stats: snap.listeners.iter().map(|l| net_stats(&l.net_filters, stats)).collect(),
            tcp_net_filter_stats: snap
                .tcp_listeners
                .iter()
                .map(|l| net_stats(&l.net_filters, stats))
                .collect(),
            tcp_stats: snap
                .tcp_listeners
                .iter()
                .map(|l| {
                    let name = listener_stat_name(l.socket.bound);
                    (stats.tcp(&l.stat_prefix), stats.listener(&name), stats.worker(&name, shard))
                })
                .collect(),
            snap,
        }
    }
}

/// A generation's per-cluster state, aligned with its snapshot's clusters.
struct ClusterState {
    lb: Vec<Rc<ShardCluster>>,
    stats: Vec<Rc<ClusterStats>>,
    hosts: Vec<Vec<Rc<HostStats>>>,
}

impl ClusterState {
    /// What `previous` had for each cluster: a cluster the snapshot shares with the previous
    /// one (the same `Arc`) keeps its load-balancer state and stat handles as they are, with no
    /// lookup; a changed one with the same hosts and policy keeps its load-balancer state; any
    /// other starts afresh. The cost of one changed cluster among many is one lookup by name per
    /// cluster and the stat lookups of the changed one.
    fn carry(
        snap: &Snapshot,
        shard: usize,
        stats: &ShardStats,
        previous: Option<&Generation>,
    ) -> ClusterState {
        let by_name: HashMap<&str, usize> = previous
            .map(|p| p.snap.clusters.iter().enumerate().map(|(i, c)| (c.name.as_str(), i)).collect())
            .unwrap_or_default();
        let n = snap.clusters.len();
        let mut out = ClusterState {
            lb: Vec::with_capacity(n),
            stats: Vec::with_capacity(n),
            hosts: Vec::with_capacity(n),
        };
        for c in &snap.clusters {
            let before = previous.zip(by_name.get(c.name.as_str())).map(|(p, &i)| (p, i));
            if let Some((p, i)) = before.filter(|(p, i)| Arc::ptr_eq(&p.snap.clusters[*i], c)) {
                out.lb.push(p.clusters[i].clone());
                out.stats.push(p.cluster_stats[i].clone());
                out.hosts.push(p.host_stats[i].clone());
                continue;
            }
            let cluster_stats = stats.cluster(&c.name);
            let kept =
                before.filter(|(p, i)| p.snap.clusters[*i].same_hosts(c)).map(|(p, i)| p.clusters[i].clone());
            out.lb.push(kept.unwrap_or_else(|| Rc::new(ShardCluster::new(c, shard, cluster_stats.clone()))));
            out.stats.push(cluster_stats);
            out.hosts.push(c.endpoints.iter().map(|a| stats.host(&c.name, *a)).collect());
        }
        out
    }
}

fn net_stats(chain: &NetFilterChain, stats: &ShardStats) -> Vec<NetFilterStats> {
    let by_name = |n: &NetStatName| match n {
        NetStatName::LocalRateLimit(p) => NetFilterStats::LocalRateLimit(stats.net_local_rate_limit(p)),
        NetStatName::ConnectionLimit(p) => NetFilterStats::ConnectionLimit(stats.connection_limit(p)),
        NetStatName::Rbac { prefix, shadow } => {
            NetFilterStats::Rbac(stats.net_rbac(prefix), stats.net_rbac_shadow(prefix, shadow))
        }
    };
    chain.stat_names().iter().map(by_name).collect()
}

pub struct Shard {
    /// Itself, for the rare task a request starts that outlives it (a mirrored request's shadow).
    pub(super) this: std::rc::Weak<Shard>,
    pub id: usize,
    pub(super) generation: RefCell<Rc<Generation>>,
    pub pool: Pool,
    pub rng: Rng,
    /// The `date` header every response carries.
    pub date: DateCache,
    pub stats: ShardStats,
    /// Access-log lines waiting for the writer thread (handed over every 100 ms or when full).
    pub log_bufs: RefCell<ShardBuffers>,
    /// `%CONNECTION_ID%`: unique per process (the shard id is in the top bits).
    pub(super) next_conn_id: Cell<u64>,
    pub(super) draining: Cell<bool>,
    pub drain: Signal,
    /// Stop signals of the running accept loops, by listener id.
    pub(super) accepting: RefCell<HashMap<u64, Rc<Signal>>>,
    pub(super) active: Cell<usize>,
    pub(super) active_shared: Arc<PaddedCount>,
    /// Every deadline on the request path (`timer.rs`); its driver task runs beside the accept loops.
    pub(super) timers: Rc<Timers>,
}

impl Shard {
    pub fn generation(&self) -> Rc<Generation> {
        self.generation.borrow().clone()
    }

    pub fn draining(&self) -> bool {
        self.draining.get()
    }

    pub(super) fn next_conn_id(&self) -> u64 {
        let id = self.next_conn_id.get();
        self.next_conn_id.set(id + 1);
        id
    }

    pub(super) fn conn_opened(&self) {
        self.active.set(self.active.get() + 1);
        self.active_shared.0.store(self.active.get(), Ordering::Relaxed);
    }

    pub(super) fn conn_closed(&self) {
        self.active.set(self.active.get().saturating_sub(1));
        self.active_shared.0.store(self.active.get(), Ordering::Relaxed);
    }
}
