//! Active health checks (`health_checks`), run on the control thread's runtime, never on a shard:
//! one task per checked host sends Envoy's HTTP/1.1 or TCP probe, keeps Envoy's per-host state
//! machine (first success passes at once, `healthy_threshold` / `unhealthy_threshold` consecutive
//! results otherwise, an HTTP status outside `expected_statuses` and `retriable_statuses` fails at
//! once), picks the next interval as Envoy does (`no_traffic_interval` until the cluster carried
//! traffic, edge intervals while a change is pending, jitter), and writes each verdict into the
//! cluster's `Board`, which every shard's load balancer reads; a pass on a healthy host returns it
//! from an outlier ejection when told to (`successful_active_health_check_uneject_host`). An HTTP
//! check's connection carries the host's next check, as Envoy's `reuse_connection` (default on)
//! does, unless the response closes it or cannot be read to its end. Owns the checks' sockets and
//! state; knows nothing of snapshots or shards.

use crate::cluster::health::{Board, CheckCounters};
use crate::cluster::outlier::Detector;
use crate::config::{HealthCheck, HealthCheckKind, HttpHealthCheck};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// The most of a response head an HTTP check reads.
const MAX_HEAD: usize = 16 * 1024;
/// The most of a response body an HTTP check drains to keep its connection; a longer body (or
/// one delimited by the close) closes the connection instead.
const MAX_DRAINED_BODY: usize = 64 * 1024;

/// One cluster's checks for one host set. Dropping the last handle ends its tasks (each holds a
/// `Weak` and stops at its next round).
#[derive(Debug)]
pub struct Checks {
    cluster: String,
    spec: HealthCheck,
    pub hosts: Vec<SocketAddr>,
    /// Per host, its `health_check_config` port and `Host`, if any.
    targets: Vec<Target>,
    pub board: Arc<Board>,
    states: Vec<Mutex<HostState>>,
    spawned: AtomicBool,
    /// The cluster's outlier detector when a passing check returns an ejected host
    /// (`successful_active_health_check_uneject_host`).
    uneject: Option<Arc<Detector>>,
}

/// Where an endpoint's own `health_check_config` sends its checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    pub port: Option<u16>,
    pub host: Option<String>,
}

/// Envoy's `ActiveHealthCheckSession` counters for one host.
#[derive(Debug, Clone, Copy)]
struct HostState {
    failed: bool,
    num_healthy: u32,
    num_unhealthy: u32,
    first_check: bool,
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// Passed; `degraded` when an HTTP check's response carried `x-envoy-degraded`.
    Success { degraded: bool },
    /// The host answered wrongly (an unexpected HTTP status); `retriable` when the status is in
    /// `retriable_statuses` (then it counts toward `unhealthy_threshold`).
    Active { retriable: bool, why: String },
    /// Connect failure, reset: counts toward `unhealthy_threshold`.
    Network(String),
    /// No answer within `timeout`: a network failure that, on a failed host, shows
    /// `/active_hc_timeout`.
    Timeout(String),
}

/// Whether a verdict changed, is pending (counting toward a threshold), or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transition {
    Unchanged,
    Pending,
    Changed,
}

impl Checks {
    /// Checks for `hosts` of `cluster`; a host in `previous` keeps its verdict and counters, a new
    /// one starts failed until its first check passes, as in Envoy.
    pub fn new(
        cluster: &str,
        spec: HealthCheck,
        hosts: Vec<SocketAddr>,
        targets: Vec<Target>,
        previous: Option<&Checks>,
        uneject: Option<Arc<Detector>>,
    ) -> Checks {
        let kept = |a: &SocketAddr| {
            let p = previous?;
            let i = p.hosts.iter().position(|h| h == a)?;
            p.states.get(i).and_then(|s| s.lock().ok().map(|s| *s))
        };
        let fresh = HostState { failed: true, num_healthy: 0, num_unhealthy: 0, first_check: true };
        let states: Vec<HostState> = hosts.iter().map(|a| kept(a).unwrap_or(fresh)).collect();
        let board = Arc::new(Board::new(states.iter().map(|s| s.failed)));
        if let Some(p) = previous {
            board.counters.absorb(&p.board.counters);
            if p.board.had_traffic() {
                board.note_traffic();
            }
        }
        Checks {
            cluster: cluster.to_string(),
            spec,
            hosts,
            targets,
            board,
            states: states.into_iter().map(Mutex::new).collect(),
            spawned: AtomicBool::new(false),
            uneject,
        }
    }

    /// One probe of every host at once, each bounded by the timeout: the round a cluster's first
    /// snapshot waits for, as Envoy's cluster warms with its first health check.
    pub async fn first_round(&self) {
        // This round's connections close after it: a host's task keeps its own from its first
        // check (a connection belongs to the runtime task that made it).
        let probes = (0..self.hosts.len()).map(|i| async move {
            let outcome = self.probe(i, &mut None).await;
            self.record(i, outcome);
        });
        futures_util::future::join_all(probes).await;
    }

    /// Starts one task per host on the current (control) runtime, once.
    pub fn spawn(self: &Arc<Self>) {
        if self.spawned.swap(true, Ordering::Relaxed) {
            return;
        }
        for i in 0..self.hosts.len() {
            let weak = Arc::downgrade(self);
            let first_delay = self.initial_delay(i);
            monoio::spawn(run(weak, i, first_delay));
        }
    }

    fn initial_delay(&self, host: usize) -> Duration {
        let state = self.state(host);
        if state.first_check {
            jitter_ms(self.spec.initial_jitter.as_millis() as u64)
        } else {
            self.interval(!state.failed, Transition::Unchanged)
        }
    }

    fn state(&self, host: usize) -> HostState {
        self.states[host].lock().map(|s| *s).unwrap_or(HostState {
            failed: true,
            num_healthy: 0,
            num_unhealthy: 0,
            first_check: false,
        })
    }

    /// The endpoint's `health_check_config.port_value`, else `alt_port`, else its own port.
    fn address(&self, host: usize) -> SocketAddr {
        let mut a = self.hosts[host];
        let target = self.targets.get(host).and_then(|t| t.port);
        if let Some(port) = target.or(self.spec.alt_port) {
            a.set_port(port);
        }
        a
    }

    /// One check of `host`. `kept` is the host's HTTP check connection between checks: taken
    /// here, put back when the exchange leaves it reusable (a timeout drops it, closing it).
    async fn probe(&self, host: usize, kept: &mut Option<TcpStream>) -> Outcome {
        CheckCounters::add(&self.board.counters.attempt);
        let addr = self.address(host);
        let probe = async {
            match &self.spec.kind {
                HealthCheckKind::Http(http) => {
                    let host = self.targets.get(host).and_then(|t| t.host.as_deref()).unwrap_or(&http.host);
                    let (outcome, reusable) = http_probe(addr, http, host, kept.take()).await;
                    if self.spec.reuse_connection {
                        *kept = reusable;
                    }
                    outcome
                }
                HealthCheckKind::Tcp { send, receive } => tcp_probe(addr, send, receive).await,
            }
        };
        match monoio::time::timeout(self.spec.timeout, probe).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Timeout(format!("no answer within {:?}", self.spec.timeout)),
        }
    }

    /// Envoy's `handleSuccess` / `handleFailure`: updates the host's state and the board, counts,
    /// and returns the transition (for the next interval).
    fn record(&self, host: usize, outcome: Outcome) -> Transition {
        let Ok(mut s) = self.states[host].lock() else { return Transition::Unchanged };
        let counters = &self.board.counters;
        let spec = &self.spec;
        let addr = self.hosts[host];
        let transition = match &outcome {
            Outcome::Success { degraded } => {
                CheckCounters::add(&counters.success);
                self.board.set_degraded(host, *degraded);
                s.num_unhealthy = 0;
                let t = if !s.failed {
                    Transition::Unchanged
                } else if s.first_check || {
                    s.num_healthy += 1;
                    s.num_healthy >= spec.healthy_threshold
                } {
                    s.failed = false;
                    log::info!("health check: cluster {} host {addr} is now healthy", self.cluster);
                    Transition::Changed
                } else {
                    Transition::Pending
                };
                if spec.always_log_success {
                    log::info!("health check: cluster {} host {addr} passed", self.cluster);
                }
                t
            }
            Outcome::Active { why, .. } | Outcome::Network(why) | Outcome::Timeout(why) => {
                CheckCounters::add(&counters.failure);
                let network = matches!(outcome, Outcome::Network(_) | Outcome::Timeout(_));
                if network {
                    CheckCounters::add(&counters.network_failure);
                }
                let retriable = matches!(outcome, Outcome::Active { retriable: true, .. });
                s.num_healthy = 0;
                let t = if s.failed {
                    Transition::Unchanged
                } else if (!retriable && !network) || {
                    s.num_unhealthy += 1;
                    s.num_unhealthy >= spec.unhealthy_threshold
                } {
                    s.failed = true;
                    log::warn!("health check: cluster {} host {addr} is now unhealthy: {why}", self.cluster);
                    Transition::Changed
                } else {
                    Transition::Pending
                };
                if spec.always_log_failures {
                    log::warn!("health check: cluster {} host {addr} failed: {why}", self.cluster);
                } else {
                    log::debug!("health check: cluster {} host {addr} failed: {why}", self.cluster);
                }
                t
            }
        };
        s.first_check = false;
        // Envoy: set on a failed host whose check timed out, cleared by any other result.
        let timed_out = s.failed && matches!(outcome, Outcome::Timeout(_));
        self.board.set_timed_out(host, timed_out);
        self.board.set_failed(host, s.failed);
        // Envoy's check-complete callback: a pass on a host healthy by its checks.
        if let (Outcome::Success { .. }, false, Some(d)) = (&outcome, s.failed, &self.uneject) {
            d.health_check_passed(addr);
        }
        transition
    }

    /// Envoy's `HealthCheckerImplBase::interval`: by the check's result and transition once the
    /// cluster carried traffic, else the no-traffic intervals; plus jitter.
    fn interval(&self, passed: bool, transition: Transition) -> Duration {
        let spec = &self.spec;
        let pending = transition == Transition::Pending;
        let base = if !self.board.had_traffic() {
            if passed && !pending {
                spec.no_traffic_healthy_interval
            } else {
                spec.no_traffic_interval
            }
        } else {
            match (passed, pending) {
                (true, true) => spec.healthy_edge_interval,
                (true, false) => spec.interval,
                (false, true) => spec.unhealthy_edge_interval,
                (false, false) => spec.unhealthy_interval,
            }
        };
        let base_ms = base.as_millis() as u64;
        let percent_ms = u64::from(spec.interval_jitter_percent) * base_ms / 100;
        Duration::from_millis(base_ms)
            + jitter_ms(percent_ms)
            + jitter_ms(spec.interval_jitter.as_millis() as u64)
    }
}

impl CheckCounters {
    /// Carries counts over when a host set changes, so the stats stay monotonic.
    fn absorb(&self, old: &CheckCounters) {
        for (mine, theirs) in [
            (&self.attempt, &old.attempt),
            (&self.success, &old.success),
            (&self.failure, &old.failure),
            (&self.network_failure, &old.network_failure),
        ] {
            mine.store(theirs.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }
}

/// A uniformly random delay below `max_ms` (none when 0). Not for secrets.
fn jitter_ms(max_ms: u64) -> Duration {
    if max_ms == 0 {
        return Duration::ZERO;
    }
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(max_ms);
    Duration::from_millis(h.finish() % max_ms)
}

/// One host's check loop: sleep, probe, record; ends when its `Checks` is gone.
async fn run(checks: Weak<Checks>, host: usize, first_delay: Duration) {
    let mut delay = first_delay;
    let mut kept = None;
    loop {
        monoio::time::sleep(delay).await;
        let Some(c) = checks.upgrade() else { return };
        let outcome = c.probe(host, &mut kept).await;
        let passed = matches!(outcome, Outcome::Success { .. });
        let transition = c.record(host, outcome);
        delay = c.interval(passed, transition);
    }
}

/// One HTTP check on `kept` (when the host's previous check left it open) or a new connection:
/// its outcome, and the connection when the response was read to its end and keeps it open.
async fn http_probe(
    addr: SocketAddr,
    http: &HttpHealthCheck,
    host: &str,
    kept: Option<TcpStream>,
) -> (Outcome, Option<TcpStream>) {
    let request = http_request(http, host);
    if let Some(stream) = kept {
        let done = http_exchange(stream, addr, http, request.clone()).await;
        // Closed while idle, before this check got any answer: Envoy would have seen the close
        // between checks and connected afresh, so this is not the host's failure.
        if !done.silent {
            return (done.outcome, done.reusable);
        }
    }
    match TcpStream::connect(addr).await {
        Ok(stream) => {
            let done = http_exchange(stream, addr, http, request).await;
            (done.outcome, done.reusable)
        }
        Err(e) => (Outcome::Network(format!("connect to {addr}: {e}")), None),
    }
}

/// How one request and response on a check connection went.
struct Exchanged {
    outcome: Outcome,
    /// The connection, when it may carry the next check.
    reusable: Option<TcpStream>,
    /// It failed before a byte of response came back.
    silent: bool,
}

async fn http_exchange(
    mut stream: TcpStream,
    addr: SocketAddr,
    http: &HttpHealthCheck,
    request: Vec<u8>,
) -> Exchanged {
    let failed =
        |why: String, silent: bool| Exchanged { outcome: Outcome::Network(why), reusable: None, silent };
    let (written, _) = stream.write_all(request).await;
    if let Err(e) = written {
        return failed(format!("write to {addr}: {e}"), true);
    }
    let mut head = Vec::new();
    loop {
        let (read, buf) = stream.read(Vec::with_capacity(4096)).await;
        match read {
            Ok(0) => return failed(format!("{addr} closed before a response head"), head.is_empty()),
            Ok(_) => head.extend_from_slice(&buf),
            Err(e) => return failed(format!("read from {addr}: {e}"), head.is_empty()),
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&head) {
            Ok(httparse::Status::Complete(len)) => {
                let code = response.code.unwrap_or(0);
                let within = |ranges: &[(u16, u16)]| ranges.iter().any(|(a, b)| (*a..*b).contains(&code));
                let outcome = if within(&http.expected_statuses) {
                    let degraded =
                        response.headers.iter().any(|h| h.name.eq_ignore_ascii_case("x-envoy-degraded"));
                    Outcome::Success { degraded }
                } else {
                    Outcome::Active {
                        retriable: within(&http.retriable_statuses),
                        why: format!("{addr} answered {code}"),
                    }
                };
                let body = body_framing(&response, http.method == "HEAD");
                let mut reusable = None;
                if let Some(body) = body {
                    if drain_body(&mut stream, head.split_off(len), body).await {
                        reusable = Some(stream);
                    }
                }
                return Exchanged { outcome, reusable, silent: false };
            }
            Ok(httparse::Status::Partial) if head.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => return failed(format!("{addr}: response head too long"), false),
            Err(e) => return failed(format!("{addr}: malformed response: {e}"), false),
        }
    }
}

/// How a check response's body ends, when its connection may be kept after it: None when the
/// response closes the connection (`Connection: close`, HTTP/1.0 without keep-alive, a body that
/// runs to the close, or one longer than skiff drains), as Envoy closes then too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    Length(usize),
    Chunked,
}

fn body_framing(response: &httparse::Response<'_, '_>, head_method: bool) -> Option<Body> {
    let header = |name: &'static str| {
        response.headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
    };
    let has_token = |name: &'static str, token: &str| {
        header(name)
            .any(|v| String::from_utf8_lossy(v).split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let keep_alive = match response.version {
        Some(1) => !has_token("connection", "close"),
        _ => has_token("connection", "keep-alive") && !has_token("connection", "close"),
    };
    let code = response.code.unwrap_or(0);
    if !keep_alive {
        return None;
    }
    if head_method || code / 100 == 1 || code == 204 || code == 304 {
        return Some(Body::Length(0));
    }
    if header("transfer-encoding").next().is_some() {
        return has_token("transfer-encoding", "chunked").then_some(Body::Chunked);
    }
    let mut lengths = header("content-length");
    let length = std::str::from_utf8(lengths.next()?).ok()?.trim().parse::<usize>().ok()?;
    if lengths.next().is_some() || length > MAX_DRAINED_BODY {
        return None;
    }
    Some(Body::Length(length))
}

/// Reads the rest of a check response's body (`have` came with the head); true when it ended
/// exactly at the end of what was read, so the connection holds nothing unread.
async fn drain_body(stream: &mut TcpStream, mut have: Vec<u8>, body: Body) -> bool {
    let mut chunked = crate::http::ChunkedDecoder::new();
    let mut drained = 0;
    loop {
        // `have` holds bytes not yet walked over.
        match body {
            Body::Length(n) => {
                drained += have.len();
                have.clear();
                if drained >= n {
                    return drained == n;
                }
            }
            Body::Chunked => {
                let mut rest = &have[..];
                while !rest.is_empty() {
                    let Ok(p) = chunked.advance(rest) else { return false };
                    rest = &rest[p.consumed..];
                    if p.done {
                        return rest.is_empty();
                    }
                    if p.consumed == 0 {
                        break;
                    }
                }
                drained += have.len() - rest.len();
                have = rest.to_vec();
                if drained > MAX_DRAINED_BODY {
                    return false;
                }
            }
        }
        let (read, buf) = stream.read(Vec::with_capacity(4096)).await;
        match read {
            Ok(n) if n > 0 => have.extend_from_slice(&buf),
            _ => return false,
        }
    }
}

/// The check request as Envoy's HTTP/1.1 health checker sends it (`Host`, `User-Agent: Envoy/HC`,
/// then `request_headers_to_add` less `request_headers_to_remove`, and no `Connection` header
/// whether or not the connection is reused).
fn http_request(http: &HttpHealthCheck, host: &str) -> Vec<u8> {
    let mut lines: Vec<(String, String)> =
        vec![("host".into(), host.to_string()), ("user-agent".into(), "Envoy/HC".into())];
    for h in &http.request_headers_to_add {
        let name = h.name.clone();
        if !h.append {
            lines.retain(|(n, _)| *n != name);
        }
        lines.push((name, h.value.clone()));
    }
    lines.retain(|(n, _)| !http.request_headers_to_remove.contains(n) || n == "host");
    let mut out = format!("{} {} HTTP/1.1\r\n", http.method, http.path);
    for (n, v) in &lines {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

async fn tcp_probe(addr: SocketAddr, send: &[u8], receive: &[Vec<u8>]) -> Outcome {
    let mut stream = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => return Outcome::Network(format!("connect to {addr}: {e}")),
    };
    if !send.is_empty() {
        let (written, _) = stream.write_all(send.to_vec()).await;
        if let Err(e) = written {
            return Outcome::Network(format!("write to {addr}: {e}"));
        }
    }
    if receive.is_empty() {
        return Outcome::Success { degraded: false };
    }
    let mut got = Vec::new();
    loop {
        if matches_in_order(&got, receive) {
            return Outcome::Success { degraded: false };
        }
        if got.len() > MAX_HEAD {
            return Outcome::Network(format!("{addr}: {} bytes without the expected ones", got.len()));
        }
        let (read, buf) = stream.read(Vec::with_capacity(4096)).await;
        match read {
            Ok(0) => return Outcome::Network(format!("{addr} closed before sending the expected bytes")),
            Ok(_) => got.extend_from_slice(&buf),
            Err(e) => return Outcome::Network(format!("read from {addr}: {e}")),
        }
    }
}

/// Whether every block of `want` appears in `got`, each after the previous (Envoy's matcher).
fn matches_in_order(got: &[u8], want: &[Vec<u8>]) -> bool {
    let mut rest = got;
    for w in want {
        match rest.windows(w.len().max(1)).position(|win| win == w.as_slice()) {
            Some(i) => rest = &rest[i + w.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_receive_blocks_match_in_order() {
        assert!(matches_in_order(b"xxPONGyyOK", &[b"PONG".to_vec(), b"OK".to_vec()]));
        assert!(!matches_in_order(b"OKxxPONG", &[b"PONG".to_vec(), b"OK".to_vec()]));
    }
}
