//! The control thread: owns the running config, the listening sockets and the DNS answers, and
//! runs a monoio runtime (epoll driver, timers). One loop owns that state: on a timer it re-reads
//! the config file (validated whole, bound and resolved before it replaces the old one: a changed
//! config's new clusters are first resolved by a task, "warming", while the loop goes on); DNS
//! clusters are re-resolved by concurrent tasks, each bounded by a timeout, whose answers come
//! back to the loop over a channel (the last good answer is kept on failure); whenever anything a
//! shard serves from changed, the loop builds a new snapshot and installs it on every shard
//! (`Shards`). A silent nameserver delays only its own cluster, never a reload or another
//! cluster, and never a shard. The blocking resolver runs on one helper thread per in-flight
//! cluster resolution (see `resolve_on_thread`).

pub mod health_check;
mod sds;
pub mod shards;
mod xds;

pub use shards::Shards;

use crate::admin::{AdminState, ClusterMembership};
use crate::cluster::breaker::Breaker;
use crate::cluster::outlier::Detector;
use crate::cluster::{ClusterSnap, Resolved};
use crate::config::dynamic::{DocText, DocTexts};
use crate::config::{self, Bootstrap, DiscoveryType, Doc};
use crate::dns::Resolver;
use crate::listener::BoundListener;
use crate::snapshot::Snapshot;
use crate::telemetry::{Observers, Telemetry};
use crate::xds::client as xds_client;
use futures_channel::mpsc::{UnboundedReceiver, UnboundedSender};
use futures_channel::oneshot;
use futures_util::StreamExt;
use health_check::{Checks, Target};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use xds::File;

/// The longest the control loop waits for one cluster's resolution (every endpoint, every
/// search candidate, every nameserver). The resolver's own per-query timeouts normally end a
/// resolution well before this; the bound holds even if they don't, and a late answer is dropped.
const RESOLVE_LIMIT: Duration = Duration::from_secs(10);

/// Per endpoint of a cluster: its addresses, or why there are none.
type Answers = Vec<Result<Vec<IpAddr>, String>>;

/// Where the config comes from; only a file can change.
#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    Inline(String),
}

impl Source {
    fn read(&self) -> Result<String, config::ConfigError> {
        match self {
            Source::File(path) => std::fs::read_to_string(path)
                .map_err(|source| config::ConfigError::Io { origin: path.display().to_string(), source }),
            Source::Inline(text) => Ok(text.clone()),
        }
    }

    fn origin(&self) -> String {
        match self {
            Source::File(path) => path.display().to_string(),
            Source::Inline(_) => "--config-yaml".to_string(),
        }
    }

    pub fn load(&self) -> Result<(String, config::Loaded), config::ConfigError> {
        let text = self.read()?;
        let loaded = config::load_str(&text, &self.origin())?;
        Ok((text, loaded))
    }
}

/// Resolved addresses of one cluster: per configured endpoint, the last good answer.
#[derive(Debug, Clone)]
struct ClusterHosts {
    /// Tells a resolution's answer from one for a cluster that a reload replaced meanwhile.
    id: u64,
    spec: config::Cluster,
    /// Per endpoint of `spec`, None until the first successful resolution.
    answers: Vec<Option<Vec<IpAddr>>>,
    next_refresh: Instant,
    /// A resolution task runs for this cluster: no second one starts until it reports.
    in_flight: bool,
    /// Envoy's `update_attempt`/`update_success`/`update_failure` for this cluster.
    updates: (u64, u64, u64),
    /// Its circuit breakers: one per spec, as Envoy's changed cluster starts with fresh ones.
    breaker: Arc<Breaker>,
    /// Its active health checks for the current host set (None without `health_checks`).
    checks: Option<Arc<Checks>>,
    /// Its outlier detector: per spec too, so a changed cluster's hosts start unejected.
    detector: Arc<Detector>,
    /// What the last snapshot carried of it, while spec, answers and checks stay as they were:
    /// the next snapshot shares it instead of building it again.
    built: Option<Arc<ClusterSnap>>,
}

impl ClusterHosts {
    fn new(id: u64, spec: config::Cluster) -> Self {
        let answers = vec![None; spec.endpoints.len()];
        ClusterHosts {
            id,
            spec,
            answers,
            next_refresh: Instant::now(),
            in_flight: false,
            updates: (0, 0, 0),
            breaker: Arc::default(),
            checks: None,
            detector: Arc::default(),
            built: None,
        }
    }

    /// The cluster as a snapshot carries it: the one already built while nothing changed.
    fn snap(&mut self) -> Arc<ClusterSnap> {
        if let Some(built) = &self.built {
            return built.clone();
        }
        let built = Arc::new(ClusterSnap::new(&self.spec, self.endpoints()));
        self.built = Some(built.clone());
        built
    }

    /// Makes the health checks cover the current hosts: a changed host set gets a new `Checks`
    /// (hosts it keeps keep their verdicts); the old one's tasks end.
    fn sync_checks(&mut self) {
        let Some(spec) = self.spec.health_checks.first() else { return };
        let hosts: Vec<SocketAddr> = self.endpoints().hosts.iter().map(|(a, _)| *a).collect();
        if self.checks.as_ref().is_some_and(|c| c.hosts == hosts) {
            return;
        }
        // One target per resolved address, in `endpoints()` order.
        let targets = self
            .spec
            .endpoints
            .iter()
            .zip(&self.answers)
            .flat_map(|(e, a)| {
                let t = Target { port: e.check_port, host: e.check_host.clone() };
                std::iter::repeat_n(t, a.as_ref().map_or(0, Vec::len))
            })
            .collect();
        // Envoy's `successful_active_health_check_uneject_host`: a passing check returns a host
        // outlier detection ejected.
        let uneject = self
            .spec
            .outlier_detection
            .filter(|o| o.successful_active_health_check_uneject_host)
            .map(|_| self.detector.clone());
        let checks =
            Checks::new(&self.spec.name, spec.clone(), hosts, targets, self.checks.as_deref(), uneject);
        self.checks = Some(Arc::new(checks));
        self.built = None;
    }

    fn membership(&self) -> ClusterMembership {
        ClusterMembership {
            name: self.spec.name.clone(),
            update_attempt: self.updates.0,
            update_success: self.updates.1,
            update_failure: self.updates.2,
        }
    }

    fn is_dns(&self) -> bool {
        matches!(self.spec.discovery, DiscoveryType::StrictDns | DiscoveryType::LogicalDns)
    }

    /// Takes one resolution's answers; returns whether the address set changed. Failures keep
    /// the last good answer and are logged.
    fn apply(&mut self, answers: Answers) -> bool {
        self.in_flight = false;
        self.next_refresh = Instant::now() + self.spec.dns_refresh_rate.max(Duration::from_millis(100));
        self.updates.0 += 1;
        let mut failed = false;
        let mut changed = false;
        for (i, answer) in answers.into_iter().enumerate().take(self.answers.len()) {
            let endpoint = &self.spec.endpoints[i];
            match answer {
                Ok(ips) => {
                    if self.answers[i].as_ref() != Some(&ips) {
                        log::info!(
                            "cluster {}: {}:{} resolves to {:?}",
                            self.spec.name,
                            endpoint.host,
                            endpoint.port,
                            ips
                        );
                        self.answers[i] = Some(ips);
                        changed = true;
                    }
                }
                Err(e) => {
                    let kept = if self.answers[i].is_some() {
                        "keeping the last good answer"
                    } else {
                        "no hosts yet"
                    };
                    log::warn!("cluster {}: {e}; {kept}", self.spec.name);
                    failed = true;
                }
            }
        }
        if failed {
            self.updates.2 += 1;
        } else {
            self.updates.1 += 1;
        }
        if changed {
            self.built = None;
        }
        changed
    }

    /// Every resolved host (address, weight, priority, declared health) and the breakers.
    fn endpoints(&self) -> Resolved {
        let mut hosts = Vec::new();
        let mut levels = Vec::new();
        let mut localities = Vec::new();
        for (e, a) in self.spec.endpoints.iter().zip(&self.answers) {
            for ip in a.iter().flatten() {
                hosts.push((SocketAddr::new(*ip, e.port), e.weight));
                levels.push((e.priority, e.health));
                localities.push(e.locality);
            }
        }
        let board = self.checks.as_ref().map(|c| c.board.clone());
        let (breaker, detector) = (self.breaker.clone(), self.detector.clone());
        Resolved { hosts, levels, localities, breaker, board, detector }
    }
}

/// Every endpoint of `spec`, resolved with the blocking resolver (a STATIC cluster's are IP
/// literals and need no network).
fn resolve(spec: &config::Cluster, resolver: &Resolver) -> Answers {
    spec.endpoints
        .iter()
        .map(|endpoint| match spec.discovery {
            // An EDS cluster's endpoints are IP addresses from its file.
            DiscoveryType::Static | DiscoveryType::Eds => {
                endpoint.host.parse::<IpAddr>().map(|ip| vec![ip]).map_err(|e| e.to_string())
            }
            DiscoveryType::StrictDns | DiscoveryType::LogicalDns => resolver
                .resolve(&endpoint.host, spec.dns_lookup_family, &spec.dns_resolvers)
                .map(|mut ips| {
                    // LOGICAL_DNS connects to one address at a time: the first the resolver gives.
                    // STRICT_DNS uses the set: a server rotating its answer order is no change.
                    if spec.discovery == DiscoveryType::LogicalDns {
                        ips.truncate(1);
                    } else {
                        ips.sort();
                    }
                    ips
                })
                .map_err(|e| e.to_string()),
        })
        .collect()
}

/// Resolves `spec` on a helper thread of its own and hands the answers to `done`. The resolver
/// blocks (std sockets, glibc-like timeouts and retries, already tested as such), so it runs off
/// the runtime; there is at most one such thread per cluster in flight (`ClusterHosts::in_flight`),
/// each ended by the resolver's own timeouts. Err when the OS refuses a thread.
fn resolve_on_thread(
    spec: config::Cluster,
    resolver: Arc<Resolver>,
    done: impl FnOnce(Answers) + Send + 'static,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("skiff-dns".into()).spawn(move || done(resolve(&spec, &resolver)))?;
    Ok(())
}

/// The answers for a resolution that did not finish: every endpoint failed with `why`.
fn failed(spec: &config::Cluster, why: &str) -> Answers {
    spec.endpoints.iter().map(|e| Err(format!("resolving {}: {why}", e.host))).collect()
}

/// Resolves every cluster of `specs` concurrently and waits for all of them, each up to
/// `RESOLVE_LIMIT`: the first resolution of a config's new clusters, before its snapshot.
async fn resolve_all(specs: Vec<config::Cluster>, resolver: &Arc<Resolver>) -> Vec<Answers> {
    let pending: Vec<_> = specs
        .into_iter()
        .map(|spec| {
            let (tx, rx) = oneshot::channel();
            // A STATIC cluster's addresses are literals: no thread needed.
            let started = if matches!(spec.discovery, DiscoveryType::Static | DiscoveryType::Eds) {
                let _ = tx.send(resolve(&spec, resolver));
                Ok(())
            } else {
                resolve_on_thread(spec.clone(), resolver.clone(), move |a| {
                    let _ = tx.send(a);
                })
            };
            (spec, rx, started)
        })
        .collect();
    let deadline = monoio::time::Instant::now() + RESOLVE_LIMIT;
    let mut out = Vec::with_capacity(pending.len());
    for (spec, rx, started) in pending {
        out.push(match started {
            Err(e) => failed(&spec, &format!("cannot start a resolver thread: {e}")),
            Ok(()) => match monoio::time::timeout_at(deadline, rx).await {
                Ok(Ok(answers)) => answers,
                Ok(Err(_)) => failed(&spec, "the resolver thread ended without an answer"),
                Err(_) => failed(&spec, &format!("no answer within {} s", RESOLVE_LIMIT.as_secs())),
            },
        });
    }
    out
}

/// A monoio runtime on the epoll driver: the control thread's, and the one `Control::start`
/// borrows for the first resolution. Epoll because this thread serves no traffic and io_uring may
/// be unavailable (seccomp); timers for the schedule and the resolution bounds.
/// Envoy's outlier-detection interval timer for one detector: a sweep on every tick until the
/// detector is gone (its cluster spec changed or left the config).
async fn outlier_sweeps(detector: std::sync::Weak<Detector>, config: config::OutlierDetection) {
    loop {
        let Some(wait) = detector.upgrade().map(|d| d.until_next_tick(config.interval)) else { return };
        monoio::time::sleep(wait).await;
        let Some(d) = detector.upgrade() else { return };
        crate::cluster::outlier::sweep::sweep(&d, &config, &roll);
    }
}

/// A random number for an `enforcing_*` roll or an ejection jitter. Not for secrets.
fn roll() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

fn runtime() -> std::io::Result<monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>>> {
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build()
}

pub struct Control {
    source: Source,
    /// The text of the running config.
    running_text: String,
    /// The last rejected text (so it is reported once), and whether it may pass unchanged later:
    /// a listener port still held by another process (or by sockets that are still closing)
    /// frees by itself, so such a config is retried on every check, quietly; a config that
    /// does not parse or validate waits for the file to change.
    rejected: Option<(String, bool)>,
    /// Whether the last check could not read the file: reported once, not on every check, while
    /// it stays unreadable (a missing ConfigMap file, say).
    read_failing: bool,
    bootstrap: Arc<Bootstrap>,
    clusters: Vec<ClusterHosts>,
    next_cluster_id: u64,
    /// Bound listeners by (configured name, configured address). The name is part of the key
    /// because several listeners may be configured on the same ephemeral address (`port_value: 0`),
    /// each with its own socket; keying by address alone handed the second one the first's socket.
    listeners: HashMap<(String, SocketAddr), Arc<BoundListener>>,
    next_listener_id: u64,
    /// Per listener of `bootstrap`: its access logs and tracing, for rebuilds after DNS changes.
    observers: Vec<Observers>,
    generation: u64,
    shard_count: usize,
    resolver: Arc<Resolver>,
    config_check_every: Duration,
    next_config_check: Instant,
    /// A changed config's new clusters are being resolved (`Warm`); no second reload starts.
    warming: bool,
    shards: Shards,
    admin: Option<Arc<AdminState>>,
    telemetry: Telemetry,
    /// The `dynamic_resources` files: the running config is `running_text` with their last
    /// good texts, and a file update is a reload of that combination.
    files: xds::Files,
    /// What the management servers were last asked for.
    subscribed: Vec<xds_client::Subscription>,
    /// The running cluster file's resources by name, for endpoint updates (`try_assignments`).
    cds_index: config::dynamic::ClusterIndex,
}

#[derive(Debug)]
pub enum StartError {
    Config(config::ConfigError),
    Bind {
        listener: String,
        address: SocketAddr,
        source: std::io::Error,
    },
    Routes(String),
    /// The runtime for the first resolution could not be built.
    Runtime(std::io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "{e}"),
            StartError::Bind { listener, address, source } => {
                write!(f, "listener {listener:?}: cannot listen on {address}: {source}")
            }
            StartError::Routes(e) => write!(f, "{e}"),
            StartError::Runtime(e) => write!(f, "cannot start the control runtime: {e}"),
        }
    }
}

/// What a warming config came from, to record once it is adopted or refused.
enum Pending {
    /// A changed bootstrap file.
    Bootstrap {
        text: String,
        /// The same text was rejected before (a port still taken): report a new failure quietly.
        retrying: bool,
    },
    /// Replaced `dynamic_resources` files (a management server's texts, applied together).
    File { files: Vec<(File, DocText)> },
}

/// A parsed config whose new clusters were resolved off the loop, ready to adopt.
struct Warm {
    pending: Pending,
    bootstrap: Arc<Bootstrap>,
    /// Per new cluster (`Control::new_clusters`), its first answers.
    fresh: Vec<Answers>,
}

/// What the loop wakes up for.
enum Event {
    Stop,
    /// A cluster's resolution ended: its id and answers.
    Resolved(u64, Answers),
    /// A changed config's new clusters have their first answers: adopt it.
    Warmed(Warm),
    /// A management server's response or a stream's connection change.
    Xds(xds_client::Event),
    Timer,
}

impl Control {
    /// Loads, binds and resolves everything for the first snapshot.
    pub fn start(
        source: Source,
        loaded: (String, config::Loaded),
        shard_count: usize,
        resolver: Resolver,
        config_check_every: Duration,
        telemetry: Telemetry,
    ) -> Result<(Control, Arc<Snapshot>), StartError> {
        let (text, mut loaded) = loaded;
        let mut control = Control {
            source,
            running_text: text,
            rejected: None,
            read_failing: false,
            bootstrap: Arc::new(loaded.bootstrap.clone()),
            clusters: Vec::new(),
            next_cluster_id: 1,
            listeners: HashMap::new(),
            next_listener_id: 1,
            observers: Vec::new(),
            generation: 0,
            shard_count,
            resolver: Arc::new(resolver),
            config_check_every,
            next_config_check: Instant::now() + config_check_every,
            warming: false,
            shards: Shards::default(),
            admin: None,
            telemetry,
            files: xds::Files::new(&loaded.bootstrap.xds),
            subscribed: Vec::new(),
            cds_index: Default::default(),
        };
        // As Envoy's first fetch: clusters, then the listeners whose routes name them. A file
        // that cannot be applied is counted and logged, and the server starts without it.
        while let Some(batch) = control.files.next_update() {
            if let Some((texts, next)) = control.try_files(batch) {
                control.files.applied(texts, &loaded.bootstrap, &next.bootstrap, 0);
                loaded = next;
                // The listeners may name route configuration files: they are read next.
                control.files.reconfigure(&loaded.bootstrap.xds);
            }
        }
        control.bootstrap = Arc::new(loaded.bootstrap.clone());
        let bootstrap = Arc::new(loaded.bootstrap);
        let specs = control.new_clusters(&bootstrap);
        let resolver = control.resolver.clone();
        let mut rt = runtime().map_err(StartError::Runtime)?;
        let fresh = rt.block_on(resolve_all(specs, &resolver));
        let snapshot = control.adopt(bootstrap, fresh)?;
        // As Envoy's clusters warm with their first health check: one probe of every checked
        // host (each bounded by its timeout) before the first snapshot serves.
        let checks: Vec<Arc<Checks>> = control.clusters.iter().filter_map(|c| c.checks.clone()).collect();
        rt.block_on(futures_util::future::join_all(checks.iter().map(|c| c.first_round())));
        Ok((control, snapshot))
    }

    /// The clusters of `bootstrap` that the running config does not have (by whole spec): they
    /// are resolved before `bootstrap` is adopted. Running ones keep their answers and schedule.
    fn new_clusters(&self, bootstrap: &Bootstrap) -> Vec<config::Cluster> {
        let running = self.running_by_name();
        bootstrap.clusters.iter().filter(|spec| running_spec(&running, spec).is_none()).cloned().collect()
    }

    /// The running clusters by name (names are unique in a config).
    fn running_by_name(&self) -> HashMap<&str, &ClusterHosts> {
        self.clusters.iter().map(|c| (c.spec.name.as_str(), c)).collect()
    }

    /// Binds listeners for `bootstrap`, takes the running clusters' answers and `fresh` (from
    /// `resolve_all(new_clusters(bootstrap))`) for the new ones, prepares telemetry and builds
    /// the snapshot. On error nothing of the running state changed.
    fn adopt(&mut self, bootstrap: Arc<Bootstrap>, fresh: Vec<Answers>) -> Result<Arc<Snapshot>, StartError> {
        let mut listeners = HashMap::new();
        let mut by_name = HashMap::new();
        let http = bootstrap.listeners.iter().map(|l| (&l.name, l.address));
        for (name, address) in http.chain(bootstrap.tcp_listeners.iter().map(|l| (&l.name, l.address))) {
            let key = (name.clone(), address);
            // A listener's filter chains are entries of their own that share its socket.
            if listeners.contains_key(&key) {
                continue;
            }
            // Same name and address: keep the socket. A renamed listener on a fixed port keeps its
            // socket too (binding again would fail with "address in use" while the old one is open).
            let existing = self.listeners.get(&key).or_else(|| {
                (address.port() != 0)
                    .then(|| self.listeners.iter().find(|((_, a), _)| *a == address).map(|(_, b)| b))
                    .flatten()
            });
            let bound = match existing {
                Some(existing) => existing.clone(),
                None => {
                    let id = self.next_listener_id;
                    self.next_listener_id += 1;
                    let bound = BoundListener::bind(id, name, address, self.shard_count)
                        .map_err(|source| StartError::Bind { listener: name.clone(), address, source })?;
                    log::info!("listener {:?} listening on {}", name, bound.bound);
                    Arc::new(bound)
                }
            };
            by_name.insert(name.clone(), bound.clone());
            listeners.insert(key, bound);
        }
        let mut fresh = fresh.into_iter();
        let mut next_id = self.next_cluster_id;
        let running = self.running_by_name();
        let mut clusters: Vec<ClusterHosts> = bootstrap
            .clusters
            .iter()
            .map(|spec| match running_spec(&running, spec) {
                Some(existing) => existing.clone(),
                None => {
                    let mut c = ClusterHosts::new(next_id, spec.clone());
                    next_id += 1;
                    c.apply(fresh.next().unwrap_or_else(|| failed(spec, "not resolved")));
                    c.sync_checks();
                    c
                }
            })
            .collect();
        let built: Vec<Arc<ClusterSnap>> = clusters.iter_mut().map(ClusterHosts::snap).collect();
        let observers = self.telemetry.prepare(&bootstrap).map_err(StartError::Routes)?;
        let snapshot =
            Snapshot::assemble(self.generation + 1, bootstrap.clone(), built, &by_name, &observers)
                .map_err(StartError::Routes)?;
        self.telemetry.update_collectors(&snapshot.clusters);
        for old in self.listeners.values() {
            if !listeners.values().any(|kept| Arc::ptr_eq(kept, old)) {
                log::info!("listener {:?} on {} closes", old.name, old.bound);
            }
        }
        self.generation += 1;
        self.next_cluster_id = next_id;
        self.listeners = listeners;
        self.clusters = clusters;
        self.observers = observers;
        self.bootstrap = bootstrap;
        Ok(Arc::new(snapshot))
    }

    /// A new snapshot of the running config with the clusters' current answers.
    fn rebuild(&mut self) -> Option<Arc<Snapshot>> {
        let built: Vec<Arc<ClusterSnap>> = self.clusters.iter_mut().map(ClusterHosts::snap).collect();
        let by_name: HashMap<String, Arc<BoundListener>> =
            self.listeners.iter().map(|((name, _), l)| (name.clone(), l.clone())).collect();
        match Snapshot::assemble(
            self.generation + 1,
            self.bootstrap.clone(),
            built,
            &by_name,
            &self.observers,
        ) {
            Ok(s) => {
                self.telemetry.update_collectors(&s.clusters);
                self.generation += 1;
                Some(Arc::new(s))
            }
            Err(e) => {
                log::error!("cannot rebuild the snapshot: {e}");
                None
            }
        }
    }

    /// Starts a resolution task for every DNS cluster that is due and has none running. Each
    /// task reports to `results` exactly once, after at most `RESOLVE_LIMIT`.
    fn start_due_resolutions(&mut self, results: &UnboundedSender<(u64, Answers)>) {
        let now = Instant::now();
        for c in self.clusters.iter_mut().filter(|c| c.is_dns() && !c.in_flight && c.next_refresh <= now) {
            c.in_flight = true;
            let (tx, rx) = oneshot::channel();
            let (id, spec, results) = (c.id, c.spec.clone(), results.clone());
            if let Err(e) = resolve_on_thread(spec.clone(), self.resolver.clone(), move |a| {
                let _ = tx.send(a);
            }) {
                let _ = results
                    .unbounded_send((id, failed(&spec, &format!("cannot start a resolver thread: {e}"))));
                continue;
            }
            monoio::spawn(async move {
                let answers = match monoio::time::timeout(RESOLVE_LIMIT, rx).await {
                    Ok(Ok(answers)) => answers,
                    Ok(Err(_)) => failed(&spec, "the resolver thread ended without an answer"),
                    Err(_) => failed(&spec, &format!("no answer within {} s", RESOLVE_LIMIT.as_secs())),
                };
                let _ = results.unbounded_send((id, answers));
            });
        }
    }

    /// Takes a resolution's answers (dropped if a reload replaced the cluster meanwhile); a new
    /// snapshot if the addresses changed.
    fn resolved(&mut self, id: u64, answers: Answers) -> Option<Arc<Snapshot>> {
        let cluster = self.clusters.iter_mut().find(|c| c.id == id)?;
        if cluster.apply(answers) {
            cluster.sync_checks();
            self.rebuild()
        } else {
            None
        }
    }

    /// Reads the config file; a changed one that parses starts warming (its new clusters'
    /// first resolution, in a task that reports to `warmed`), a bad one is rejected now.
    fn check_config(&mut self, warmed: &UnboundedSender<Warm>) {
        // A rotated certificate is swapped into its contexts in place: no snapshot to build.
        sds::check(&self.bootstrap);
        if matches!(self.source, Source::File(_)) {
            self.check_bootstrap(warmed);
        }
        if !self.warming {
            self.check_files(warmed);
        }
    }

    /// Applies the first replaced `dynamic_resources` file, if any: a file that does not parse
    /// or is invalid (alone or with the rest of the config) is counted and logged, and the last
    /// good one keeps serving.
    fn check_files(&mut self, warmed: &UnboundedSender<Warm>) {
        let Some(batch) = self.files.next_update() else { return };
        let Some((files, loaded)) = self.try_files(batch) else { return };
        // As Envoy warms a listener until its routes arrive and a cluster until its endpoints
        // do: an update naming a server's route configuration or assignment not received yet
        // waits for it (subscribed now), at most `initial_fetch_timeout`.
        if let Some(timeout) = awaited(&loaded.bootstrap) {
            if self.files.hold(timeout) {
                self.files.reconfigure_also(&loaded.bootstrap.xds);
                for (file, text) in files {
                    self.files.retry(&file, text);
                }
                return;
            }
            log::warn!("xds: initial fetch timeout: applying without the route configurations or endpoints not received");
            self.files.fetch_timed_out();
        }
        self.files.release();
        self.warm(Pending::File { files }, loaded, warmed);
    }

    /// `batch` (updates of files) combined with the running bootstrap and the other files' last
    /// good texts; None (counted and logged) when it cannot apply. When one text of several is
    /// at fault, it alone is refused and the others wait for the next attempt.
    fn try_files(
        &mut self,
        batch: Vec<(File, Result<DocText, String>)>,
    ) -> Option<(Vec<(File, DocText)>, config::Loaded)> {
        let mut texts = Vec::with_capacity(batch.len());
        for (file, read) in batch {
            match read {
                Ok(t) => texts.push((file, t)),
                Err(e) => {
                    log::warn!("{file}: cannot read the update, keeping the last good resources: {e}");
                    self.files.failed(&file, true, &e);
                }
            }
        }
        if texts.is_empty() {
            return None;
        }
        let mut docs = DocTexts::default();
        let loaded = match self.try_assignments(&texts) {
            Some(loaded) => Ok(loaded),
            None => {
                docs = self.files.good_with(&self.bootstrap.xds, &texts);
                config::load_with(&self.running_text, &self.source.origin(), &docs)
            }
        };
        match loaded {
            Ok(loaded) => {
                // The bootstrap's and the other files' warnings were logged when they loaded.
                for (_, text) in &texts {
                    for w in loaded.warnings.iter().filter(|w| w.starts_with(&format!("{}:", text.origin))) {
                        log::warn!("{w}");
                    }
                }
                Some((texts, loaded))
            }
            Err(r) => {
                let culprit = texts.iter().position(|(f, _)| f.is(r.doc, &docs));
                let refused = match culprit {
                    Some(i) if texts.len() > 1 => {
                        let one = texts.remove(i);
                        for (file, text) in texts {
                            self.files.retry(&file, text);
                        }
                        vec![one]
                    }
                    _ => texts,
                };
                for (file, _) in refused {
                    let parse_failure = file.is(r.doc, &docs) && r.parse_failure;
                    let what = if parse_failure { "failed" } else { "rejected" };
                    log::warn!("{file}: update {what}, keeping the last good resources: {}", r.error);
                    self.files.failed(&file, parse_failure, &r.error.to_string());
                }
                None
            }
        }
    }

    /// An update of endpoint files alone, the common one: only the clusters that read them are
    /// converted again (`config::load_assignments`), not the bootstrap with every file. None:
    /// the update is of another kind, or must be judged whole.
    fn try_assignments(&mut self, texts: &[(File, DocText)]) -> Option<config::Loaded> {
        if !texts.iter().all(|(f, _)| matches!(f, File::Eds(_))) {
            return None;
        }
        let eds: Vec<DocText> = texts.iter().map(|(_, t)| t.clone()).collect();
        let cds = self.files.good(&File::Cds);
        let origin = self.source.origin();
        config::load_assignments(&self.bootstrap, &self.running_text, &origin, &mut self.cds_index, cds, &eds)
    }

    /// Resolves `loaded`'s new clusters in a task that reports to `warmed`.
    fn warm(&mut self, pending: Pending, loaded: config::Loaded, warmed: &UnboundedSender<Warm>) {
        let bootstrap = Arc::new(loaded.bootstrap);
        let specs = self.new_clusters(&bootstrap);
        let (resolver, warmed) = (self.resolver.clone(), warmed.clone());
        self.warming = true;
        monoio::spawn(async move {
            let fresh = resolve_all(specs, &resolver).await;
            let _ = warmed.unbounded_send(Warm { pending, bootstrap, fresh });
        });
    }

    /// The bootstrap file's part of `check_config`.
    fn check_bootstrap(&mut self, warmed: &UnboundedSender<Warm>) {
        let text = match self.source.read() {
            Ok(t) => t,
            Err(e) => {
                if !std::mem::replace(&mut self.read_failing, true) {
                    log::warn!("config reload: {e}; keeping the running config");
                } else {
                    log::debug!("config reload: {e} (as at the last check)");
                }
                return;
            }
        };
        if std::mem::replace(&mut self.read_failing, false) {
            log::info!("config file {} readable again", self.source.origin());
        }
        if text == self.running_text {
            return;
        }
        let retrying = match &self.rejected {
            Some((rejected, transient)) if *rejected == text => {
                if !transient {
                    return;
                }
                true
            }
            _ => false,
        };
        // With the files' last good resources, where the new bootstrap names the same files.
        let loaded =
            config::load_str(&text, &self.source.origin()).map_err(|e| dynamic_error(None, e)).and_then(
                |b| config::load_with(&text, &self.source.origin(), &self.files.good_for(&b.bootstrap.xds)),
            );
        match loaded {
            Err(r) => {
                self.reload_outcome(text, retrying, Err(StartError::Config(r.error)));
            }
            Ok(loaded) => {
                for w in &loaded.warnings {
                    log::warn!("{w}");
                }
                self.warm(Pending::Bootstrap { text, retrying }, loaded, warmed);
            }
        }
    }

    /// Adopts a warmed config: its new clusters have their first answers (or failed).
    fn finish_reload(&mut self, warm: Warm) -> Option<Arc<Snapshot>> {
        self.warming = false;
        let previous = self.bootstrap.clone();
        let result = self.adopt(warm.bootstrap, warm.fresh);
        match warm.pending {
            Pending::Bootstrap { text, retrying } => {
                let snapshot = self.reload_outcome(text, retrying, result);
                if snapshot.is_some() {
                    self.files.reconfigure(&self.bootstrap.xds);
                }
                snapshot
            }
            Pending::File { files } => match result {
                Ok(snapshot) => {
                    self.files.applied(files, &previous, &self.bootstrap, snapshot.generation);
                    // A listener update may name other route configuration files.
                    self.files.reconfigure(&self.bootstrap.xds);
                    // Another file may have been replaced meanwhile: look now, not a period later.
                    self.next_config_check = Instant::now();
                    Some(snapshot)
                }
                Err(e) => {
                    for (file, _) in files {
                        log::warn!("{file}: update rejected, keeping the last good resources: {e}");
                        self.files.failed(&file, false, &e.to_string());
                    }
                    None
                }
            },
        }
    }

    fn reload_outcome(
        &mut self,
        text: String,
        retrying: bool,
        result: Result<Arc<Snapshot>, StartError>,
    ) -> Option<Arc<Snapshot>> {
        match result {
            Ok(snapshot) => {
                log::info!(
                    "config reloaded from {} (generation {})",
                    self.source.origin(),
                    snapshot.generation
                );
                self.running_text = text;
                self.rejected = None;
                Some(snapshot)
            }
            Err(e) => {
                if retrying {
                    log::debug!("config reload still rejected, retrying: {e}");
                } else {
                    log::error!("config reload rejected, keeping the running config: {e}");
                }
                let transient = matches!(e, StartError::Bind { .. });
                self.rejected = Some((text, transient));
                None
            }
        }
    }

    /// Starts the management-server streams when the config names a server (once: the server
    /// clusters and the node are the first config's; changing them needs a restart, as Envoy's
    /// `ads_config` does).
    fn start_xds(&self, events: UnboundedSender<xds_client::Event>) -> Option<xds_client::Client> {
        let xds = &self.bootstrap.xds;
        let mut servers: Vec<&config::ServerSource> = xds.ads.iter().collect();
        let sources = xds.lds.iter().chain(&xds.cds).chain(&xds.rds).chain(&xds.eds);
        servers.extend(sources.filter_map(|s| s.server.as_ref()));
        if servers.is_empty() {
            return None;
        }
        let mut targets = HashMap::new();
        for s in servers {
            let cluster = self.bootstrap.clusters.iter().find(|c| c.name == s.cluster);
            match cluster.and_then(|c| c.endpoints.first()) {
                Some(e) => {
                    targets.insert(s.cluster.clone(), (e.host.clone(), e.port));
                }
                None => log::error!("xds: the management server's cluster \"{}\" has no endpoint", s.cluster),
            }
        }
        let node = self.telemetry.node();
        let pick =
            |cli: &str, config: &str| if cli.is_empty() { config.to_string() } else { cli.to_string() };
        let identity = xds_client::Identity {
            id: pick(&node.service_node, &xds.node_id),
            cluster: pick(&node.service_cluster, &xds.node_cluster),
            locality: xds.node_locality.clone(),
            metadata: xds.node_metadata.clone(),
        };
        match xds_client::Client::start(identity, targets, events) {
            Ok(c) => Some(c),
            Err(e) => {
                log::error!("xds: cannot start the management server client: {e}");
                None
            }
        }
    }

    /// Sends the replies the last applies made, and the subscriptions when they changed.
    fn sync_xds(&mut self, client: &xds_client::Client) {
        for reply in self.files.replies() {
            client.reply(reply);
        }
        let subs = self.files.subscriptions();
        if subs != self.subscribed {
            client.subscribe(subs.clone());
            self.subscribed = subs;
        }
    }

    /// The next config check or the earliest refresh of a DNS cluster with no resolution running.
    fn next_wakeup(&self) -> Instant {
        self.clusters
            .iter()
            .filter(|c| c.is_dns() && !c.in_flight)
            .map(|c| c.next_refresh)
            .chain(std::iter::once(self.next_config_check))
            .min()
            .unwrap_or(self.next_config_check)
    }

    fn broadcast(&self, snapshot: &Arc<Snapshot>) {
        self.shards.install(snapshot);
        if let Some(admin) = &self.admin {
            admin.publish(snapshot.clone());
        }
    }

    fn publish_membership(&mut self) {
        if let Some(admin) = &self.admin {
            // An EDS cluster's update_* are its endpoint file's (published with the files).
            let membership =
                self.clusters.iter().filter(|c| c.spec.eds.is_none()).map(ClusterHosts::membership);
            admin.publish_membership(membership.collect());
            admin.publish_subscriptions(self.files.stats(&self.bootstrap));
            admin.publish_control_plane(self.files.connected_state(&self.bootstrap.xds));
            admin.publish_init(self.files.init_waits());
        }
    }

    /// Runs the loop on its own thread until `stop` fires (or its sender is dropped), then hands
    /// back the telemetry so the process can flush it once the shards have drained.
    pub fn spawn(
        mut self,
        shards: Shards,
        admin: Option<Arc<AdminState>>,
        stop: oneshot::Receiver<()>,
    ) -> std::io::Result<std::thread::JoinHandle<Telemetry>> {
        self.shards = shards;
        self.admin = admin;
        self.publish_membership();
        std::thread::Builder::new().name("skiff-control".into()).spawn(move || match runtime() {
            Ok(mut rt) => rt.block_on(self.run(stop)),
            Err(e) => {
                // Shards keep serving the snapshot they have; only reloads and DNS stop.
                log::error!("cannot start the control runtime: {e}; config reloads and DNS refresh are off");
                self.telemetry
            }
        })
    }

    async fn run(mut self, mut stop: oneshot::Receiver<()>) -> Telemetry {
        let (results_tx, mut results): (_, UnboundedReceiver<(u64, Answers)>) =
            futures_channel::mpsc::unbounded();
        let (warmed_tx, mut warmed): (_, UnboundedReceiver<Warm>) = futures_channel::mpsc::unbounded();
        // The sender stays here too, so that without a server the channel never ends.
        let (xds_tx, mut xds_events) = futures_channel::mpsc::unbounded();
        let client = self.start_xds(xds_tx.clone());
        loop {
            if let Some(client) = &client {
                self.sync_xds(client);
            }
            for checks in self.clusters.iter().filter_map(|c| c.checks.as_ref()) {
                checks.spawn();
            }
            for c in &self.clusters {
                if let Some(config) = c.spec.outlier_detection {
                    if !c.detector.sweeping.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        monoio::spawn(outlier_sweeps(Arc::downgrade(&c.detector), config));
                    }
                }
            }
            self.start_due_resolutions(&results_tx);
            // A management server's update waits for no config check.
            let due = self.files.next_due().filter(|_| !self.warming);
            let wake = due.map_or(self.next_wakeup(), |d| d.min(self.next_wakeup()));
            let wake = monoio::time::Instant::from_std(wake);
            let event = monoio::select! {
                _ = &mut stop => Event::Stop,
                Some((id, answers)) = results.next() => Event::Resolved(id, answers),
                Some(warm) = warmed.next() => Event::Warmed(warm),
                Some(e) = xds_events.next() => Event::Xds(e),
                _ = monoio::time::sleep_until(wake) => Event::Timer,
            };
            let snapshot = match event {
                Event::Stop => return self.telemetry,
                Event::Resolved(id, answers) => self.resolved(id, answers),
                Event::Warmed(warm) => self.finish_reload(warm),
                Event::Xds(xds_client::Event::Response(r)) => {
                    self.files.received(r);
                    None
                }
                Event::Xds(xds_client::Event::Connected(stream, up)) => {
                    self.files.connected(stream, up);
                    None
                }
                Event::Timer if Instant::now() >= self.next_config_check => {
                    self.next_config_check = Instant::now() + self.config_check_every;
                    // One reload at a time: a file changed meanwhile is read at a later check.
                    if !self.warming {
                        self.check_config(&warmed_tx);
                    }
                    None
                }
                Event::Timer if !self.warming && self.files.has_pending() => {
                    self.check_files(&warmed_tx);
                    None
                }
                Event::Timer => None,
            };
            if let Some(snapshot) = snapshot {
                self.broadcast(&snapshot);
                release_freed_memory();
            }
            self.publish_membership();
        }
    }
}

/// The running cluster with exactly `spec` (its answers and state carry over), if any.
fn running_spec<'a>(
    running: &HashMap<&str, &'a ClusterHosts>,
    spec: &config::Cluster,
) -> Option<&'a ClusterHosts> {
    running.get(spec.name.as_str()).copied().filter(|c| c.spec == *spec)
}

/// Hands the memory an update freed back to the system. Reading a push of thousands of
/// resources allocates far more than the model it leaves (the responses' JSON, the texts, the
/// conversion), and glibc keeps freed pages in its arenas (one per thread: the xDS client's and
/// this one): without this the process's RSS stays at the peak of the largest push.
fn release_freed_memory() {
    // SAFETY: malloc_trim only returns free pages of glibc's arenas to the kernel; it touches no
    // memory in use (skiff links glibc, as `admin`'s mallinfo2 does).
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The shortest `initial_fetch_timeout` of the management server route configurations and
/// assignments `b` names and has not received (None: nothing awaited, or no timeout).
fn awaited(b: &Bootstrap) -> Option<Duration> {
    let rds = b.listeners.iter().filter_map(|l| l.hcm.rds.as_ref()).filter(|r| r.applied.is_none());
    let eds = b.clusters.iter().filter_map(|c| c.eds.as_ref()).filter(|e| e.applied.is_none());
    let sources = rds.map(|r| &r.source).chain(eds.map(|e| &e.source));
    sources.filter_map(|s| s.server.as_ref()).map(|s| s.initial_fetch_timeout).filter(|t| !t.is_zero()).min()
}

/// A config error found in the bootstrap (`doc` None) or a resource file.
fn dynamic_error(doc: Option<Doc>, error: config::ConfigError) -> config::dynamic::Rejection {
    config::dynamic::Rejection { doc, parse_failure: false, error }
}
