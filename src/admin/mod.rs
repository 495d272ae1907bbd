//! The admin server at the config's `admin.address`, on its own thread with its own monoio
//! runtime (epoll driver), off the request path and off the control loop (a slow stats collection
//! stalls neither reloads nor DNS). Connections are served concurrently, one task each, and each
//! request has `REQUEST_DEADLINE` to arrive and be answered, so a client that trickles bytes or
//! sends nothing cannot hold `/ready` from a prober (Envoy's endpoints: see `ENDPOINTS`). It reads
//! the latest snapshot the control thread published and reaches shards only through `Shards`
//! (stats, drain), never their memory.

pub mod certs;
pub mod config_dump;
mod secrets;

use crate::access_log;
use crate::cluster::outlier::Origin;
use crate::control::Shards;
use crate::http::{self, MAX_HEADERS};
use crate::snapshot::Snapshot;
use crate::stats::{render, Scope, StatsDump, Value};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use std::cell::RefCell;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// From accepting a connection to the last byte of its answer. Envoy's admin has no such bound
/// (its HCM runs without request timeouts); ours cuts off a client that stalls mid-request so the
/// connection does not stay open for ever, while any real admin request finishes well within it.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// How long `/stats` and `/clusters` wait for the shards' counters.
const STATS_DEADLINE: Duration = Duration::from_secs(2);

/// What the admin server reports; shared with the control thread (publishes snapshots) and the
/// process (draining).
pub struct AdminState {
    started: Instant,
    pub info: ServerInfo,
    snapshot: Mutex<Arc<Snapshot>>,
    draining: AtomicBool,
    health_failed: AtomicBool,
    /// SIGUSR1 came: reopen the admin access log before its next line (log rotation).
    reopen_log: AtomicBool,
    /// Where to ask for request-path stats (every shard answers with its own dump), to drain,
    /// and the open downstream connections.
    shards: Mutex<Shards>,
    /// Membership and DNS-update stats, published by the control thread.
    membership: Mutex<Vec<ClusterMembership>>,
    /// The `dynamic_resources` files' update stats, published by the control thread.
    subscriptions: Mutex<Vec<SubscriptionStats>>,
    /// With a management server: whether its streams are connected (`control_plane.*`).
    control_plane: Mutex<Option<bool>>,
    /// The subscriptions server init still waits for (published by the control thread; a
    /// deadline that passes ends a wait without another publish).
    init: Mutex<Vec<InitWait>>,
}

/// Envoy's subscription stats for one resource file (`listener_manager.lds.*`,
/// `cluster_manager.cds.*`, or per connection manager `http.<prefix>.rds.<name>.*`).
#[derive(Debug, Clone)]
pub struct SubscriptionStats {
    /// `listener_manager.lds`, `cluster_manager.cds` or `http.<stat_prefix>.rds.<route_config_name>`.
    pub scope: Scope,
    pub update_attempt: u64,
    pub update_success: u64,
    pub update_failure: u64,
    pub update_rejected: u64,
    /// Milliseconds since the epoch of the last success (0 before one).
    pub update_time: i64,
    /// xxHash64 of the applied `version_info`, as Envoy's `version` gauge.
    pub version: u64,
    /// The applied `version_info` itself (`version_text`, a text readout).
    pub version_text: String,
    /// CDS and RDS (None for LDS, where Envoy makes none): successes that changed a resource,
    /// and the time of the last one.
    pub config_reload: Option<(u64, i64)>,
    /// RDS and EDS: `update_empty` (a file is never an empty update: always 0).
    pub update_empty: Option<u64>,
    /// EDS: the cluster's `update_no_rebuild` (`no_rebuild`) and `assignment_*` counters, the
    /// latter always 0 (a file's assignment is applied whole, never cached or timed out).
    pub eds: bool,
    /// EDS: updates that restated the assignment serving, so nothing was rebuilt.
    pub no_rebuild: u64,
    /// A management server's resource that did not come within `initial_fetch_timeout`.
    pub init_fetch_timeout: u64,
}

/// Envoy's server init, as `/ready`, `/server_info` and `server.state` show it: PRE_INITIALIZING
/// while clusters and their endpoints from a subscription have not come, INITIALIZING while
/// listeners and their route configurations have not, each bounded by its source's
/// `initial_fetch_timeout` (0: no bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitPhase {
    PreInitializing,
    Initializing,
}

impl InitPhase {
    pub fn name(self) -> &'static str {
        match self {
            InitPhase::PreInitializing => "PRE_INITIALIZING",
            InitPhase::Initializing => "INITIALIZING",
        }
    }

    /// Envoy's `server.state` value.
    pub fn gauge(self) -> i64 {
        match self {
            InitPhase::PreInitializing => 2,
            InitPhase::Initializing => 3,
        }
    }
}

/// A subscription init still waits for, until `until` (None: until it comes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitWait {
    pub phase: InitPhase,
    pub until: Option<Instant>,
}

/// The control thread's part of `cluster.<name>.*`.
#[derive(Debug, Clone, Default)]
pub struct ClusterMembership {
    pub name: String,
    pub update_attempt: u64,
    pub update_success: u64,
    pub update_failure: u64,
}

/// Static facts for `/server_info`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServerInfo {
    pub version: String,
    pub service_cluster: String,
    pub service_node: String,
    /// This node as xDS and spans name it: the command line's names, else the bootstrap's `node`.
    pub node_id: String,
    pub node_cluster: String,
    pub service_zone: String,
    pub concurrency: usize,
    pub io_driver: String,
    pub command_line: Vec<String>,
}

impl AdminState {
    pub fn new(info: ServerInfo, snapshot: Arc<Snapshot>) -> Arc<Self> {
        Arc::new(AdminState {
            started: Instant::now(),
            info,
            snapshot: Mutex::new(snapshot),
            draining: AtomicBool::new(false),
            health_failed: AtomicBool::new(false),
            reopen_log: AtomicBool::new(false),
            shards: Mutex::new(Shards::default()),
            membership: Mutex::new(Vec::new()),
            subscriptions: Mutex::new(Vec::new()),
            control_plane: Mutex::new(None),
            init: Mutex::new(Vec::new()),
        })
    }

    /// The shards to ask for stats and to drain.
    pub fn set_shards(&self, shards: Shards) {
        *lock(&self.shards) = shards;
    }

    fn shards(&self) -> Shards {
        lock(&self.shards).clone()
    }

    pub fn publish_membership(&self, membership: Vec<ClusterMembership>) {
        *lock(&self.membership) = membership;
    }

    pub fn publish_subscriptions(&self, stats: Vec<SubscriptionStats>) {
        *lock(&self.subscriptions) = stats;
    }

    /// What server init still waits for (`control::xds::Files::init_waits`).
    pub fn publish_init(&self, waits: Vec<InitWait>) {
        *lock(&self.init) = waits;
    }

    /// Whether the management server streams are connected (None: no management server).
    pub fn publish_control_plane(&self, connected: Option<bool>) {
        *lock(&self.control_plane) = connected;
    }

    /// Every stat: each shard's dump (asked now, so counters are exact), the control thread's
    /// cluster membership, and the server's own gauges.
    pub async fn collect_stats(&self) -> StatsDump {
        let shards = self.shards();
        let from_shards = shards.collect_stats(Instant::now() + STATS_DEADLINE).await;
        let mut own = StatsDump::default();
        for m in lock(&self.membership).iter() {
            let scope = Scope::Cluster(m.name.clone());
            own.push(scope.clone(), "update_attempt", Value::Counter(m.update_attempt));
            own.push(scope.clone(), "update_success", Value::Counter(m.update_success));
            own.push(scope, "update_failure", Value::Counter(m.update_failure));
        }
        for s in lock(&self.subscriptions).iter() {
            let scope = s.scope.clone();
            if let Some(empty) = s.update_empty {
                own.push(scope.clone(), "update_empty", Value::Counter(empty));
            }
            if s.eds {
                own.push(scope.clone(), "update_no_rebuild", Value::Counter(s.no_rebuild));
                for name in ["assignment_stale", "assignment_timeout_received", "assignment_use_cached"] {
                    own.push(scope.clone(), name, Value::Counter(0));
                }
            }
            own.push(scope.clone(), "init_fetch_timeout", Value::Counter(s.init_fetch_timeout));
            own.push(scope.clone(), "update_attempt", Value::Counter(s.update_attempt));
            own.push(scope.clone(), "update_failure", Value::Counter(s.update_failure));
            own.push(scope.clone(), "update_rejected", Value::Counter(s.update_rejected));
            own.push(scope.clone(), "update_success", Value::Counter(s.update_success));
            own.push(scope.clone(), "update_time", Value::Gauge(s.update_time));
            own.push(scope.clone(), "version", Value::GaugeU64(s.version));
            own.push(scope.clone(), "version_text", Value::Text(s.version_text.clone()));
            // Envoy records no file update's duration either.
            own.push(
                scope.clone(),
                "update_duration",
                Value::Histogram(Box::new(crate::stats::new_histogram())),
            );
            if let Some((reloads, at)) = s.config_reload {
                own.push(scope.clone(), "config_reload", Value::Counter(reloads));
                own.push(scope, "config_reload_time_ms", Value::Gauge(at));
            }
        }
        secrets::push(&mut own, &self.snapshot());
        if let Some(connected) = *lock(&self.control_plane) {
            // As Envoy's gRPC mux: skiff never queues or rate-limits its discovery requests.
            let scope = Scope::Subscription("control_plane");
            own.push(scope.clone(), "connected_state", Value::Gauge(i64::from(connected)));
            own.push(scope.clone(), "pending_requests", Value::Gauge(0));
            own.push(scope, "rate_limit_enforced", Value::Counter(0));
        }
        // The breakers are counted once for the process, not per shard; membership and health
        // checks are read from the snapshot's hosts and boards, current to the last verdict.
        for c in &self.snapshot().clusters {
            for (name, value) in c.breaker.gauges(&c.circuit_breakers) {
                own.push(Scope::Cluster(c.name.clone()), name, Value::Gauge(value));
            }
            health_stats(&mut own, c);
            // So is outlier detection.
            if let Some(o) = &c.outlier {
                let (counters, (gauge, active)) = o.stats();
                for (name, value) in counters {
                    own.push(Scope::Cluster(c.name.clone()), name, Value::Counter(value));
                }
                own.push(Scope::Cluster(c.name.clone()), gauge, Value::Gauge(active));
            }
        }
        let (live, state) = match self.state() {
            "LIVE" => (true, 0),
            "DRAINING" => (false, 1),
            _ => (false, self.init_phase().map_or(0, InitPhase::gauge)),
        };
        let connections = shards.active_connections();
        own.push(Scope::Server, "live", Value::Gauge(i64::from(live)));
        own.push(Scope::Server, "state", Value::Gauge(state));
        own.push(Scope::Server, "uptime", Value::Gauge(self.started.elapsed().as_secs() as i64));
        own.push(Scope::Server, "concurrency", Value::Gauge(self.info.concurrency as i64));
        own.push(Scope::Server, "total_connections", Value::Gauge(connections as i64));
        let (allocated, heap) = memory();
        own.push(Scope::Server, "memory_allocated", Value::Gauge(allocated));
        own.push(Scope::Server, "memory_heap_size", Value::Gauge(heap));
        StatsDump::merge([from_shards, own])
    }

    pub fn publish(&self, snapshot: Arc<Snapshot>) {
        *lock(&self.snapshot) = snapshot;
    }

    /// The admin access log is reopened before its next line, as Envoy does on SIGUSR1.
    pub fn reopen_access_log(&self) {
        self.reopen_log.store(true, Ordering::Relaxed);
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        lock(&self.snapshot).clone()
    }

    /// Envoy's server state: DRAINING while the process drains or while `/healthcheck/fail` is
    /// in force (Envoy's `failHealthcheck` clears `live`), so `/ready`, `server_info` and the
    /// `server.live`/`server.state` gauges tell a load balancer to stop sending.
    /// Before that, PRE_INITIALIZING or INITIALIZING while subscriptions have not delivered
    /// (`init_phase`).
    fn state(&self) -> &'static str {
        if self.draining.load(Ordering::Relaxed) || self.health_failed.load(Ordering::Relaxed) {
            "DRAINING"
        } else if let Some(phase) = self.init_phase() {
            phase.name()
        } else {
            "LIVE"
        }
    }

    /// The earliest init phase a wait that has not run out is in.
    fn init_phase(&self) -> Option<InitPhase> {
        let now = Instant::now();
        let waits = lock(&self.init);
        let open = waits.iter().filter(|w| w.until.is_none_or(|t| now < t));
        open.map(|w| w.phase).min_by_key(|p| p.gauge())
    }
}

/// A poisoned lock only means another admin request panicked mid-update of plain data: use it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Bytes in use by the allocator and the heap it holds (glibc's mallinfo2).
fn memory() -> (i64, i64) {
    // SAFETY: mallinfo2 only reads allocator bookkeeping and returns it by value.
    let mi = unsafe { libc::mallinfo2() };
    ((mi.uordblks + mi.hblkhd) as i64, (mi.arena + mi.hblkhd) as i64)
}

/// Binds the admin address (an error if it is taken) and serves it on a thread. Each request is
/// logged in Envoy's default access-log format to `access_log_path` when given (Envoy's
/// `admin.access_log_path`; `/dev/null` in most configs).
pub fn spawn(
    addr: SocketAddr,
    state: Arc<AdminState>,
    access_log_path: Option<&str>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let access_log = access_log_path.and_then(|path| {
        let file = open_log(path)
            .map_err(|e| log::warn!("admin access log {path}: {e}; admin requests are not logged"))
            .ok()?;
        Some(AccessLog { path: path.to_string(), file })
    });
    std::thread::Builder::new().name("skiff-admin".into()).spawn(move || {
        let runtime = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build();
        match runtime {
            Ok(mut rt) => rt.block_on(accept_loop(listener, state, access_log)),
            Err(e) => log::error!("admin: cannot start its runtime: {e}; the admin API is down"),
        }
    })?;
    Ok(bound)
}

fn open_log(path: &str) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().create(true).append(true).open(path)
}

/// The admin access log file and where it lives, for reopening after rotation.
struct AccessLog {
    path: String,
    file: std::fs::File,
}

impl AccessLog {
    /// The file to write to, reopened first if SIGUSR1 asked for it. A failed reopen keeps the
    /// old file: lines in the rotated file beat no lines.
    fn file(&mut self, state: &AdminState) -> &mut std::fs::File {
        if state.reopen_log.swap(false, Ordering::Relaxed) {
            match open_log(&self.path) {
                Ok(f) => self.file = f,
                Err(e) => log::error!("admin access log {}: {e}; still writing to the old file", self.path),
            }
        }
        &mut self.file
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<AdminState>, access_log: Option<AccessLog>) {
    let listener = match monoio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("admin: {e}; the admin API is down");
            return;
        }
    };
    let access_log = access_log.map(|f| Rc::new(RefCell::new(f)));
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let (state, access_log) = (state.clone(), access_log.clone());
                monoio::spawn(async move {
                    // Dropping the request future at the deadline closes the connection.
                    if monoio::time::timeout(REQUEST_DEADLINE, serve(stream, &state, access_log))
                        .await
                        .is_err()
                    {
                        log::debug!(
                            "admin: request not done within {} s; closing",
                            REQUEST_DEADLINE.as_secs()
                        );
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                log::warn!("admin: accept: {e}");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One admin request in Envoy's default access-log format.
fn log_request(
    file: &mut std::fs::File,
    head: &http::RequestHead<'_>,
    status: u16,
    bytes_sent: u64,
    start: std::time::SystemTime,
    took: Duration,
    stream: &TcpStream,
) {
    let peer = stream.peer_addr().unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    let local = stream.local_addr().unwrap_or(peer);
    let format = access_log::Format::envoy_default();
    let mut captured = access_log::Captured::new();
    captured.capture(format.wanted_request(), head.headers.iter().map(|h| (h.name, h.value)));
    let none = access_log::Captured::new();
    let record = access_log::Record {
        start,
        duration: took,
        request_duration: None,
        response_duration: None,
        response_tx_duration: None,
        method: head.method,
        path: head.path,
        authority: head.host.unwrap_or(""),
        protocol: if head.version == http::Version::Http10 { "HTTP/1.0" } else { "HTTP/1.1" },
        status,
        code_details: "admin_filter_response",
        flags: access_log::ResponseFlags::empty(),
        bytes_received: 0,
        bytes_sent,
        upstream_host: None,
        upstream_cluster: None,
        upstream_local: None,
        upstream_transport_failure: "",
        attempts: 0,
        downstream_remote: peer,
        downstream_local: local,
        route_name: "",
        connection_id: 0,
        request_headers: &captured,
        response_headers: &none,
    };
    let mut line = Vec::with_capacity(256);
    format.render(&record, &mut line);
    // The admin thread may block on its own log file; it serves no proxy traffic.
    let _ = file.write_all(&line);
}

const MAX_HEAD: usize = 16 * 1024;

async fn serve(mut stream: TcpStream, state: &AdminState, access_log: Option<Rc<RefCell<AccessLog>>>) {
    let start = std::time::SystemTime::now();
    let began = Instant::now();
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = vec![0u8; 1024];
    loop {
        let parsed = {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            match http::parse_request(&buf, &mut headers, MAX_HEAD) {
                Ok(Some(head)) => Ok(Some((head.method.to_string(), head.path.to_string()))),
                Ok(None) => Ok(None),
                Err(e) => Err(e.status()),
            }
        };
        match parsed {
            Ok(Some((method, path))) => {
                let (status, content_type, body) = route(state, &method, &path).await;
                let mut reply = format!(
                    "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
                     cache-control: no-cache, max-age=0\r\nx-content-type-options: nosniff\r\n\
                     connection: close\r\n\r\n",
                    crate::shard::reason(status),
                    body.len()
                )
                .into_bytes();
                if method != "HEAD" {
                    reply.extend_from_slice(body.as_bytes());
                }
                let (_, _) = stream.write_all(reply).await;
                if let Some(file) = access_log {
                    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    if let Ok(Some(head)) = http::parse_request(&buf, &mut headers, MAX_HEAD) {
                        let took = began.elapsed();
                        log_request(
                            file.borrow_mut().file(state),
                            &head,
                            status,
                            body.len() as u64,
                            start,
                            took,
                            &stream,
                        );
                    }
                }
                return;
            }
            Ok(None) => {}
            Err(status) => {
                let reply = format!(
                    "HTTP/1.1 {status} Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = stream.write_all(reply.into_bytes()).await;
                return;
            }
        }
        let (res, back) = stream.read(chunk).await;
        chunk = back;
        match res {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

const TEXT: &str = "text/plain; charset=UTF-8";
const JSON: &str = "application/json";

const ENDPOINTS: &[(&str, &str, bool)] = &[
    ("/", "this index", false),
    ("/certs", "print certs on machine", false),
    ("/clusters", "upstream cluster status (?format=json)", false),
    ("/config_dump", "dump the running configuration (?resource=)", false),
    ("/drain_listeners", "stop accepting and drain connections, without exiting", true),
    ("/healthcheck/fail", "cause the server to fail health checks", true),
    ("/healthcheck/ok", "cause the server to pass health checks", true),
    ("/logging", "print log levels; POST ?level=LEVEL changes it", false),
    ("/quitquitquit", "exit the server (graceful drain)", true),
    ("/ready", "print server state, 200 when LIVE", false),
    ("/server_info", "print server version/status information", false),
    ("/stats", "print server stats (?format=json, ?filter=REGEX, ?usedonly)", false),
    ("/stats/prometheus", "print server stats in prometheus format", false),
];

async fn route(state: &AdminState, method: &str, target: &str) -> (u16, &'static str, String) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let Some((_, _, mutating)) = ENDPOINTS.iter().find(|(p, _, _)| *p == path) else {
        return (404, TEXT, "invalid path. admin commands are:\n".to_string() + &index());
    };
    if *mutating && method != "POST" {
        return (405, TEXT, "This endpoint requires POST\n".into());
    }
    match path {
        "/" => (200, TEXT, index()),
        "/ready" => {
            let s = state.state();
            (if s == "LIVE" { 200 } else { 503 }, TEXT, format!("{s}\n"))
        }
        "/server_info" => {
            let info = serde_json::json!({
                "version": state.info.version,
                "state": state.state(),
                "uptime_current_epoch": format!("{}s", state.started.elapsed().as_secs()),
                "uptime_all_epochs": format!("{}s", state.started.elapsed().as_secs()),
                "hot_restart_version": "disabled",
                "health_check_failed": state.health_failed.load(Ordering::Relaxed),
                "command_line_options": {
                    "service_cluster": state.info.service_cluster,
                    "service_node": state.info.service_node,
                    "service_zone": state.info.service_zone,
                    "concurrency": state.info.concurrency,
                    "io_driver": state.info.io_driver,
                },
                "command_line": state.info.command_line,
                "node": {
                    "id": state.info.node_id,
                    "cluster": state.info.node_cluster,
                    "user_agent_name": "skiff",
                },
            });
            (200, JSON, serde_json::to_string_pretty(&info).unwrap_or_default() + "\n")
        }
        "/clusters" => clusters(state, query.split('&').any(|kv| kv == "format=json")).await,
        "/stats" | "/stats/prometheus" => stats(state, path == "/stats/prometheus", query).await,
        "/healthcheck/fail" => {
            state.health_failed.store(true, Ordering::Relaxed);
            (200, TEXT, "OK\n".into())
        }
        "/healthcheck/ok" => {
            state.health_failed.store(false, Ordering::Relaxed);
            (200, TEXT, "OK\n".into())
        }
        "/logging" => {
            let level = query.split('&').find_map(|kv| kv.strip_prefix("level="));
            match level {
                Some(_) if method != "POST" => (405, TEXT, "changing the log level requires POST\n".into()),
                Some(name) => match crate::logging::parse_level(name) {
                    Some(l) => {
                        crate::logging::set_level(l);
                        log::info!("log level set to {name} through the admin API");
                        (200, TEXT, format!("active loggers:\n  skiff: {name}\n"))
                    }
                    None => (
                        400,
                        TEXT,
                        format!(
                            "unknown level {name:?}: trace, debug, info, warning, error, critical, off\n"
                        ),
                    ),
                },
                None => (
                    200,
                    TEXT,
                    format!("active loggers:\n  skiff: {}\n", level_name(crate::logging::level())),
                ),
            }
        }
        "/drain_listeners" => {
            state.set_draining();
            state.shards().drain();
            (200, TEXT, "OK\n".into())
        }
        "/certs" => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let body = certs::render(&state.snapshot().bootstrap, now);
            (200, JSON, serde_json::to_string_pretty(&body).unwrap_or_default() + "\n")
        }
        "/config_dump" => {
            let resource = query.split('&').find_map(|kv| kv.strip_prefix("resource="));
            // Envoy answers an unknown resource type with 404, not an empty dump.
            if resource.is_some_and(|r| !config_dump::RESOURCES.iter().any(|(n, _)| *n == r)) {
                return (404, TEXT, format!("unknown resource {:?}\n", resource.unwrap_or("")));
            }
            let dump = config_dump::filter(config_dump::render(&state.snapshot()), resource);
            (200, JSON, serde_json::to_string_pretty(&dump).unwrap_or_default() + "\n")
        }
        "/quitquitquit" => {
            // The process turns SIGTERM into a graceful drain; asking for one is all this takes.
            // SAFETY: kill on our own pid with a standard signal.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGTERM);
            }
            (200, TEXT, "OK\n".into())
        }
        _ => (404, TEXT, index()),
    }
}

async fn stats(state: &AdminState, mut prometheus: bool, query: &str) -> (u16, &'static str, String) {
    let mut filter = None;
    let mut used_only = false;
    let mut json = false;
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "filter" => match regex::Regex::new(&percent_decode(v)) {
                Ok(re) => filter = Some(re),
                Err(e) => return (400, TEXT, format!("invalid regex: {e}\n")),
            },
            "usedonly" => used_only = true,
            "format" if v == "json" => json = true,
            // Envoy's `?format=prometheus` is `/stats/prometheus`, whose own options it ignores.
            "format" if v == "prometheus" => {
                (prometheus, filter, used_only) = (true, None, false);
                break;
            }
            _ => {}
        }
    }
    let dump = state.collect_stats().await;
    let select = render::Select { filter: filter.as_ref(), used_only };
    if prometheus {
        (200, "text/plain; version=0.0.4; charset=UTF-8", render::prometheus(&dump, &select))
    } else if json {
        (200, JSON, render::json(&dump, &select))
    } else {
        (200, TEXT, render::text(&dump, &select))
    }
}

/// `%XX` escapes and `+` in a query value.
fn percent_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn level_name(l: log::LevelFilter) -> &'static str {
    match l.to_level() {
        Some(level) => crate::logging::level_name(level),
        None => "off",
    }
}

fn index() -> String {
    ENDPOINTS
        .iter()
        .map(|(p, what, post)| format!("  {p}{}: {what}\n", if *post { " (POST)" } else { "" }))
        .collect()
}

async fn clusters(state: &AdminState, json: bool) -> (u16, &'static str, String) {
    let snap = state.snapshot();
    let hosts = state.collect_stats().await.hosts;
    let host = |cluster: &str, addr: &SocketAddr| {
        hosts.get(&(cluster.to_string(), *addr)).cloned().unwrap_or_default()
    };
    if json {
        let list: Vec<_> = snap
            .clusters
            .iter()
            .map(|c| {
                let statuses: Vec<_> = c
                    .endpoints
                    .iter()
                    .zip(&c.weights)
                    .enumerate()
                    .map(|(i, (a, w))| {
                        let stats: Vec<_> = host(&c.name, a)
                            .fields()
                            .iter()
                            .map(|(name, value)| serde_json::json!({ "name": name, "value": value.to_string() }))
                            .collect();
                        let mut host = serde_json::json!({
                            "address": {"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}},
                            "stats": stats,
                            "health_status": health_status_json(c.flags(i)),
                            "weight": w,
                            "priority": c.levels.get(i).map_or(0, |l| l.0),
                        });
                        if let Some(o) = &c.outlier {
                            for (name, origin) in ORIGINS {
                                let rate = o.success_rate(i, origin);
                                // Envoy sets the field for any rate >= 0; protobuf's JSON then
                                // leaves a 0 value out.
                                if rate >= 0.0 {
                                    host[name] = percent_json(rate);
                                }
                            }
                        }
                        host
                    })
                    .collect();
                let mut cluster = serde_json::json!({ "name": c.name, "host_statuses": statuses });
                if let Some(o) = &c.outlier {
                    for (name, origin) in ORIGINS {
                        let threshold = o.success_rate_numbers(origin).1;
                        if threshold > 0.0 {
                            cluster[format!("{name}_ejection_threshold")] = percent_json(threshold);
                        }
                    }
                }
                cluster
            })
            .collect();
        let body = serde_json::json!({ "cluster_statuses": list });
        return (200, JSON, serde_json::to_string_pretty(&body).unwrap_or_default() + "\n");
    }
    let mut out = String::new();
    for c in &snap.clusters {
        let cb = &c.circuit_breakers;
        out.push_str(&format!(
            "{0}::default_priority::max_connections::{1}\n{0}::default_priority::max_pending_requests::{2}\n\
             {0}::default_priority::max_requests::{3}\n{0}::default_priority::max_retries::{4}\n",
            c.name, cb.max_connections, cb.max_pending_requests, cb.max_requests, cb.max_retries
        ));
        if let Some(o) = &c.outlier {
            for (name, origin) in ORIGINS {
                let (mean, threshold) = o.success_rate_numbers(origin);
                out.push_str(&format!(
                    "{0}::outlier::{name}_average::{1}\n{0}::outlier::{name}_ejection_threshold::{2}\n",
                    c.name,
                    format_g(mean),
                    format_g(threshold)
                ));
            }
        }
        for (i, (a, w)) in c.endpoints.iter().zip(&c.weights).enumerate() {
            for (name, value) in host(&c.name, a).fields() {
                out.push_str(&format!("{}::{a}::{name}::{value}\n", c.name));
            }
            let (flags, priority) = (c.flags(i).render(), c.levels.get(i).map_or(0, |l| l.0));
            out.push_str(&format!(
                "{0}::{a}::health_flags::{flags}\n{0}::{a}::weight::{w}\n{0}::{a}::priority::{priority}\n",
                c.name
            ));
            // Envoy prints these for every host; -1 without outlier detection or a rate.
            for (name, origin) in ORIGINS {
                let rate = c.outlier.as_ref().map_or(-1.0, |o| o.success_rate(i, origin));
                out.push_str(&format!("{}::{a}::{name}::{rate}\n", c.name));
            }
        }
    }
    (200, TEXT, out)
}

/// `/clusters` names of the success rates of each origin.
const ORIGINS: [(&str, Origin); 2] =
    [("success_rate", Origin::External), ("local_origin_success_rate", Origin::Local)];

/// An `envoy.type.v3.Percent` in protobuf's JSON: a whole number without a fraction, 0 left out.
fn percent_json(v: f64) -> serde_json::Value {
    if v == 0.0 {
        serde_json::json!({})
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        serde_json::json!({ "value": v as i64 })
    } else {
        serde_json::json!({ "value": v })
    }
}

/// C's `%g` (fmt's `{:g}`), as Envoy prints the outlier averages: six significant digits,
/// trailing zeros dropped, an exponent below 1e-4 and from 1e6.
fn format_g(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let sci = format!("{v:.5e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim = |s: String| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{}e{sign}{:02}", trim(mantissa.to_string()), exp.abs());
    }
    trim(format!("{v:.*}", (5 - exp) as usize))
}

/// Envoy's JSON `health_status` of a host: the declared EDS status, and the active check's and
/// outlier detection's verdicts when they fail.
fn health_status_json(flags: crate::cluster::health::Flags) -> serde_json::Value {
    use crate::config::HealthStatus;
    let eds = match flags.declared {
        HealthStatus::Unknown | HealthStatus::Healthy => "HEALTHY",
        HealthStatus::Unhealthy => "UNHEALTHY",
        HealthStatus::Draining => "DRAINING",
        HealthStatus::Timeout => "TIMEOUT",
        HealthStatus::Degraded => "DEGRADED",
    };
    let mut v = serde_json::json!({ "eds_health_status": eds });
    if flags.failed_active_hc {
        v["failed_active_health_check"] = serde_json::Value::Bool(true);
    }
    if flags.failed_outlier_check {
        v["failed_outlier_check"] = serde_json::Value::Bool(true);
    }
    v
}

/// `cluster.<name>.membership_*` and, with active checks, `health_check.*`.
fn health_stats(own: &mut StatsDump, c: &crate::cluster::ClusterSnap) {
    use crate::cluster::health::Class;
    let mut count = [0i64; 4];
    for i in 0..c.endpoints.len() {
        count[c.flags(i).class() as usize] += 1;
    }
    let scope = || Scope::Cluster(c.name.clone());
    own.push(scope(), "membership_total", Value::Gauge(c.endpoints.len() as i64));
    own.push(scope(), "membership_healthy", Value::Gauge(count[Class::Healthy as usize]));
    own.push(scope(), "membership_degraded", Value::Gauge(count[Class::Degraded as usize]));
    own.push(scope(), "membership_excluded", Value::Gauge(count[Class::Excluded as usize]));
    if let Some(board) = &c.board {
        for (name, value, gauge) in board.counters.values(board.passing(), board.degraded_count()) {
            let value = if gauge { Value::Gauge(value as i64) } else { Value::Counter(value) };
            own.push(scope(), name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::format_g;

    #[test]
    fn format_g_prints_as_c_s_percent_g() {
        for (v, want) in [
            (-1.0, "-1"),
            (80.0, "80"),
            (4.000000000000001, "4"),
            (66.66666666666667, "66.6667"),
            (-12.345678, "-12.3457"),
            (0.5, "0.5"),
            (0.00001234, "1.234e-05"),
            (1234567.0, "1.23457e+06"),
            (99.99999, "100"),
            (0.0, "0"),
        ] {
            assert_eq!(format_g(v), want, "{v}");
        }
    }
}
