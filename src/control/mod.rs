//! The control thread: owns the running config, the listening sockets and the DNS answers. On a
//! timer it re-reads the config file (validated whole, bound and resolved before it replaces the old
//! one) and re-resolves DNS clusters (keeping the last good answer on failure); whenever anything a
//! shard serves from changed, it builds a new snapshot and sends it to every shard. It blocks only
//! itself, never a shard.

use crate::admin::{AdminState, ClusterMembership};
use crate::config::{self, Bootstrap, DiscoveryType};
use crate::dns::Resolver;
use crate::listener::BoundListener;
use crate::shard::ShardMsg;
use crate::snapshot::Snapshot;
use crate::telemetry::Telemetry;
use futures_channel::mpsc::UnboundedSender;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    spec: config::Cluster,
    /// Per endpoint of `spec`, None until the first successful resolution.
    answers: Vec<Option<Vec<IpAddr>>>,
    next_refresh: Instant,
    /// Envoy's `update_attempt`/`update_success`/`update_failure` for this cluster.
    updates: (u64, u64, u64),
}

impl ClusterHosts {
    fn new(spec: config::Cluster) -> Self {
        let answers = vec![None; spec.endpoints.len()];
        ClusterHosts { spec, answers, next_refresh: Instant::now(), updates: (0, 0, 0) }
    }

    fn membership(&self) -> ClusterMembership {
        let total = self.endpoints().len() as u64;
        ClusterMembership {
            name: self.spec.name.clone(),
            membership_total: total,
            // No active health checking yet: every resolved host counts as healthy.
            membership_healthy: total,
            update_attempt: self.updates.0,
            update_success: self.updates.1,
            update_failure: self.updates.2,
        }
    }

    fn is_dns(&self) -> bool {
        self.spec.discovery != DiscoveryType::Static
    }

    /// Resolves every endpoint; returns whether the answer set changed. Failures keep the last good
    /// answer and are logged.
    fn refresh(&mut self, resolver: &Resolver) -> bool {
        self.next_refresh = Instant::now() + self.spec.dns_refresh_rate.max(Duration::from_millis(100));
        self.updates.0 += 1;
        let mut failed = false;
        let mut changed = false;
        for (i, endpoint) in self.spec.endpoints.iter().enumerate() {
            let answer = match self.spec.discovery {
                DiscoveryType::Static => {
                    endpoint.host.parse::<IpAddr>().map(|ip| vec![ip]).map_err(|e| e.to_string())
                }
                DiscoveryType::StrictDns | DiscoveryType::LogicalDns => resolver
                    .resolve(&endpoint.host, self.spec.dns_lookup_family, &self.spec.dns_resolvers)
                    .map(|mut ips| {
                        // LOGICAL_DNS connects to one address at a time: the first the resolver gives.
                        // STRICT_DNS uses the set: a server rotating its answer order is no change.
                        if self.spec.discovery == DiscoveryType::LogicalDns {
                            ips.truncate(1);
                        } else {
                            ips.sort();
                        }
                        ips
                    })
                    .map_err(|e| e.to_string()),
            };
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
        changed
    }

    /// (address, weight) of the best priority level that has hosts.
    fn endpoints(&self) -> Vec<(SocketAddr, u32)> {
        let mut best: Option<u32> = None;
        for (e, a) in self.spec.endpoints.iter().zip(&self.answers) {
            if a.as_ref().is_some_and(|ips| !ips.is_empty()) {
                best = Some(best.map_or(e.priority, |b| b.min(e.priority)));
            }
        }
        let mut out = Vec::new();
        for (e, a) in self.spec.endpoints.iter().zip(&self.answers) {
            if Some(e.priority) != best {
                continue;
            }
            for ip in a.iter().flatten() {
                out.push((SocketAddr::new(*ip, e.port), e.weight));
            }
        }
        out
    }
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
    /// Bound listeners by (configured name, configured address). The name is part of the key
    /// because several listeners may be configured on the same ephemeral address (`port_value: 0`),
    /// each with its own socket; keying by address alone handed the second one the first's socket.
    listeners: HashMap<(String, SocketAddr), Arc<BoundListener>>,
    next_listener_id: u64,
    generation: u64,
    shards: usize,
    resolver: Resolver,
    config_check_every: Duration,
    next_config_check: Instant,
    senders: Vec<UnboundedSender<ShardMsg>>,
    admin: Option<Arc<AdminState>>,
    telemetry: Telemetry,
}

#[derive(Debug)]
pub enum StartError {
    Config(config::ConfigError),
    Bind { listener: String, address: SocketAddr, source: std::io::Error },
    Routes(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "{e}"),
            StartError::Bind { listener, address, source } => {
                write!(f, "listener {listener:?}: cannot listen on {address}: {source}")
            }
            StartError::Routes(e) => write!(f, "{e}"),
        }
    }
}

impl Control {
    /// Loads, binds and resolves everything for the first snapshot.
    pub fn start(
        source: Source,
        loaded: (String, config::Loaded),
        shards: usize,
        resolver: Resolver,
        config_check_every: Duration,
        telemetry: Telemetry,
    ) -> Result<(Control, Arc<Snapshot>), StartError> {
        let (text, loaded) = loaded;
        let mut control = Control {
            source,
            running_text: text,
            rejected: None,
            read_failing: false,
            bootstrap: Arc::new(loaded.bootstrap.clone()),
            clusters: Vec::new(),
            listeners: HashMap::new(),
            next_listener_id: 1,
            generation: 0,
            shards,
            resolver,
            config_check_every,
            next_config_check: Instant::now() + config_check_every,
            senders: Vec::new(),
            admin: None,
            telemetry,
        };
        let snapshot = control.adopt(Arc::new(loaded.bootstrap))?;
        Ok((control, snapshot))
    }

    /// Binds listeners and resolves clusters for `bootstrap`, then builds its snapshot. On error
    /// nothing of the running state changed.
    fn adopt(&mut self, bootstrap: Arc<Bootstrap>) -> Result<Arc<Snapshot>, StartError> {
        let mut listeners = HashMap::new();
        let mut by_name = HashMap::new();
        for l in &bootstrap.listeners {
            let key = (l.name.clone(), l.address);
            // Same name and address: keep the socket. A renamed listener on a fixed port keeps its
            // socket too (binding again would fail with "address in use" while the old one is open).
            let existing = self.listeners.get(&key).or_else(|| {
                (l.address.port() != 0)
                    .then(|| self.listeners.iter().find(|((_, a), _)| *a == l.address).map(|(_, b)| b))
                    .flatten()
            });
            let bound = match existing {
                Some(existing) => existing.clone(),
                None => {
                    let id = self.next_listener_id;
                    self.next_listener_id += 1;
                    let bound =
                        BoundListener::bind(id, &l.name, l.address, self.shards).map_err(|source| {
                            StartError::Bind { listener: l.name.clone(), address: l.address, source }
                        })?;
                    log::info!("listener {:?} listening on {}", l.name, bound.bound);
                    Arc::new(bound)
                }
            };
            by_name.insert(l.name.clone(), bound.clone());
            listeners.insert(key, bound);
        }
        let mut clusters: Vec<ClusterHosts> = bootstrap
            .clusters
            .iter()
            .map(|spec| match self.clusters.iter().find(|c| c.spec == *spec) {
                Some(existing) => existing.clone(),
                None => ClusterHosts::new(spec.clone()),
            })
            .collect();
        for c in clusters.iter_mut().filter(|c| c.answers.iter().all(Option::is_none)) {
            c.refresh(&self.resolver);
        }
        let endpoints: Vec<_> = clusters.iter().map(ClusterHosts::endpoints).collect();
        let snapshot = Snapshot::build(
            self.generation + 1,
            bootstrap.clone(),
            &endpoints,
            &by_name,
            &mut self.telemetry,
        )
        .map_err(StartError::Routes)?;
        for old in self.listeners.values() {
            if !listeners.values().any(|kept| Arc::ptr_eq(kept, old)) {
                log::info!("listener {:?} on {} closes", old.name, old.bound);
            }
        }
        self.generation += 1;
        self.listeners = listeners;
        self.clusters = clusters;
        self.bootstrap = bootstrap;
        Ok(Arc::new(snapshot))
    }

    fn rebuild(&mut self) -> Option<Arc<Snapshot>> {
        let endpoints: Vec<_> = self.clusters.iter().map(ClusterHosts::endpoints).collect();
        let by_name: HashMap<String, Arc<BoundListener>> =
            self.listeners.iter().map(|((name, _), l)| (name.clone(), l.clone())).collect();
        match Snapshot::build(
            self.generation + 1,
            self.bootstrap.clone(),
            &endpoints,
            &by_name,
            &mut self.telemetry,
        ) {
            Ok(s) => {
                self.generation += 1;
                Some(Arc::new(s))
            }
            Err(e) => {
                log::error!("cannot rebuild the snapshot: {e}");
                None
            }
        }
    }

    /// One pass of the loop: what is due, done; a new snapshot when anything changed.
    fn tick(&mut self) -> Option<Arc<Snapshot>> {
        let now = Instant::now();
        if now >= self.next_config_check {
            self.next_config_check = now + self.config_check_every;
            if let Some(snapshot) = self.check_config() {
                return Some(snapshot);
            }
        }
        let mut changed = false;
        for c in self.clusters.iter_mut().filter(|c| c.is_dns() && c.next_refresh <= now) {
            changed |= c.refresh(&self.resolver);
        }
        if changed {
            self.rebuild()
        } else {
            None
        }
    }

    fn check_config(&mut self) -> Option<Arc<Snapshot>> {
        if !matches!(self.source, Source::File(_)) {
            return None;
        }
        let text = match self.source.read() {
            Ok(t) => t,
            Err(e) => {
                if !std::mem::replace(&mut self.read_failing, true) {
                    log::warn!("config reload: {e}; keeping the running config");
                } else {
                    log::debug!("config reload: {e} (as at the last check)");
                }
                return None;
            }
        };
        if std::mem::replace(&mut self.read_failing, false) {
            log::info!("config file {} readable again", self.source.origin());
        }
        if text == self.running_text {
            return None;
        }
        let retrying = match &self.rejected {
            Some((rejected, transient)) if *rejected == text => {
                if !transient {
                    return None;
                }
                true
            }
            _ => false,
        };
        let result =
            config::load_str(&text, &self.source.origin()).map_err(StartError::Config).and_then(|loaded| {
                for w in &loaded.warnings {
                    log::warn!("{w}");
                }
                self.adopt(Arc::new(loaded.bootstrap))
            });
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

    fn next_wakeup(&self) -> Instant {
        self.clusters
            .iter()
            .filter(|c| c.is_dns())
            .map(|c| c.next_refresh)
            .chain(std::iter::once(self.next_config_check))
            .min()
            .unwrap_or(self.next_config_check)
    }

    fn broadcast(&self, snapshot: &Arc<Snapshot>) {
        for tx in &self.senders {
            // A shard that is gone has exited with the process; nothing to do.
            let _ = tx.unbounded_send(ShardMsg::Install(snapshot.clone()));
        }
        if let Some(admin) = &self.admin {
            admin.publish(snapshot.clone());
        }
    }

    fn publish_membership(&self) {
        if let Some(admin) = &self.admin {
            admin.publish_membership(self.clusters.iter().map(ClusterHosts::membership).collect());
        }
    }

    /// Runs the loop on its own thread until `stop` receives (or its sender is dropped), then
    /// hands back the telemetry so the process can flush it once the shards have drained.
    pub fn spawn(
        mut self,
        senders: Vec<UnboundedSender<ShardMsg>>,
        admin: Option<Arc<AdminState>>,
        stop: Receiver<()>,
    ) -> std::io::Result<std::thread::JoinHandle<Telemetry>> {
        self.senders = senders;
        self.admin = admin;
        self.publish_membership();
        std::thread::Builder::new().name("skiff-control".into()).spawn(move || loop {
            let wait = self.next_wakeup().saturating_duration_since(Instant::now());
            match stop.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return self.telemetry,
            }
            if let Some(snapshot) = self.tick() {
                self.broadcast(&snapshot);
            }
            self.publish_membership();
        })
    }
}
