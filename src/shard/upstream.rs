//! One request's trip upstream: pick an endpoint, take a pooled connection (only one with nothing
//! unread waiting on it) or connect within `connect_timeout`, send the request while watching for
//! an early response, relay the response back while watching for the client leaving, retry where
//! the route allows and nothing reached the client yet, and pool the connection again only when the
//! exchange ended cleanly with nothing left unread. Never answers the client itself: a failure is a
//! `LocalReply` handed back to the request's owner (`request`). Every in-flight count it raises is
//! lowered by a guard, whichever way the exchange ends (a route timeout drops it mid-flight).

use super::body::{self, Framing, RelayError};
use super::compress;
use super::downstream::Downstream;
use super::headers::{self, ResponseRewrite};
use super::observe;
use super::reply::{details, LocalReply};
use super::signal::Signal;
use super::socket::{self, read_up_to, write_out, write_prefix, READ_CHUNK};
use super::state::{Generation, Shard};
use crate::access_log::ResponseFlags;
use crate::cluster::breaker::{Breaker, Held, Resource};
use crate::cluster::outlier::Outcome;
use crate::cluster::pool::{Accounts, ConnSlot, PoolKey, ReadSide, StreamEnd, Upstream};
use crate::cluster::{ClusterSnap, ShardCluster};
use crate::config::{CircuitBreakers, UpstreamProtocol};
use crate::http::{self, BodyKind, ResponseHead, MAX_HEADERS};
use crate::route::{Forward, HeaderEdits};
use crate::snapshot::ListenerSnap;
use crate::stats::{ClusterStats, Gauge, HostStats, ShardStats};
use bytes::{Buf, BytesMut};
use monoio::net::TcpStream;
use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Body bytes that arrived with a response head and are copied into the head's write.
const COPY_WITH_HEAD: usize = 4 * 1024;

/// Largest upstream response head accepted.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// What the request tells the exchange about itself.
pub(super) struct RequestFacts {
    pub keep_alive: bool,
    pub head_method: bool,
    pub http10: bool,
    pub expect_continue: bool,
    /// The whole body is in `req_out` (so the request can be sent again).
    pub body_buffered: bool,
    /// RFC 9110's idempotent methods: only these are sent again on a fresh connection when a
    /// pooled one closes before answering (the request may have reached the application).
    pub idempotent: bool,
    /// For a body still arriving: where its framing stands after the part in `req_out`.
    pub body_rest: Option<Framing>,
    /// An upgrade the configuration allows: a `101` turns the connection into a relay.
    pub upgrade: bool,
    /// A CONNECT the route terminates: no request goes up; once connected, the client is
    /// answered `200` and the connection becomes the tunnel (`connect.rs`).
    pub connect: bool,
    /// The route's `hash_policy` key, for RING_HASH and MAGLEV clusters.
    pub hash: Option<u64>,
    /// `set-cookie` lines of hash cookies generated for this request (`route::hash`); empty
    /// without one (no allocation).
    pub set_cookie: Vec<u8>,
    /// The client spoke HTTP/2 (`use_downstream_protocol_config` clusters answer in kind).
    pub client_http2: bool,
}

pub(super) struct Exchange<'a> {
    pub shard: &'a Shard,
    pub generation: &'a Generation,
    pub cluster: usize,
    pub fwd: &'a Forward,
    pub listener: &'a ListenerSnap,
    pub facts: RequestFacts,
    /// Weighted cluster entry, route, virtual host, route table (Envoy's order).
    pub response_edits: [&'a HeaderEdits; 4],
    /// The virtual host's `x-envoy-attempt-count` settings.
    pub attempt_count: crate::config::AttemptCount,
    pub server_name: &'a str,
    /// Fired when the request body has been sent whole: the route timeout starts then.
    pub request_complete: &'a Signal,
    /// Header lines the request's filters add to the response (`x-ratelimit-*`).
    pub filter_headers: &'a [u8],
    /// `filter_headers` replace the upstream's headers of the same names in place
    /// (`filters::Verdict::response_headers_replace`).
    pub filter_headers_replace: bool,
    /// Set when a response head is on its way to the client: from then on the stream's idle
    /// limit is the response relay's to enforce, not the request owner's watch.
    pub head_relayed: &'a Cell<bool>,
    /// Set when the answer relayed is one the retry policy would have retried (no retry left, or
    /// the breaker refused one): then it is no retry success.
    pub answer_retriable: &'a Cell<bool>,
    /// The stream idle timeout (the route's `idle_timeout` or the connection manager's
    /// `stream_idle_timeout`): bounds each read and write of the request and response bodies.
    pub stream_idle: Option<Duration>,
    /// The chain has compressor filters: they decide on the response head.
    pub compress: Option<compress::Ask<'a>>,
}

impl Exchange<'_> {
    fn idle(&self) -> Option<body::Idle<'_>> {
        self.stream_idle.map(|limit| (&*self.shard.timers, limit))
    }

    /// `per_try_idle_timeout`, for a request that can be retried (its body buffered).
    fn per_try_idle(&self) -> Option<Duration> {
        self.fwd.retry.as_deref().and_then(|r| r.per_try_idle_timeout).filter(|_| self.facts.body_buffered)
    }

    /// The response relay's idle limit: the stream idle timeout or the per-try idle timeout,
    /// whichever is shorter; true when it is the per-try one.
    fn response_idle(&self) -> (Option<body::Idle<'_>>, bool) {
        match (self.stream_idle, self.per_try_idle()) {
            (Some(s), Some(t)) if t < s => (Some((&*self.shard.timers, t)), true),
            (None, Some(t)) => (Some((&*self.shard.timers, t)), true),
            (s, _) => (s.map(|s| (&*self.shard.timers, s)), false),
        }
    }
}

/// How the exchange ended, for the request's owner.
pub(super) enum Forwarded {
    /// The upstream's response went to the client; whether the client's connection may go on.
    Relayed { keep_alive: bool },
    /// Nothing reached the client: answer it with this.
    Reply(LocalReply),
    /// The response broke after it started, or the client left: close without a reply.
    Abort,
    /// The upstream switched protocols (its 101 went to the client): relay the two connections.
    Upgraded(Box<Upstream>),
}

/// How one attempt ended.
pub(super) enum Attempt {
    Relayed {
        keep_alive: bool,
    },
    ConnectFailed {
        timed_out: bool,
    },
    /// A pooled connection turned out closed before answering anything: try a fresh one.
    Stale,
    /// The upstream reset or closed before a complete response head.
    Reset,
    /// An HTTP/2 host reset the stream before its response head (`refused`: REFUSED_STREAM).
    StreamReset {
        refused: bool,
    },
    /// The response head was malformed.
    BadResponse,
    /// A status the retry policy retries (nothing was sent to the client).
    RetryableStatus,
    /// A circuit breaker refused the request: `max_pending_requests` before it had a connection
    /// (Envoy then logs no upstream host), or `max_requests` as it was put on one.
    Overflow {
        on_connection: bool,
    },
    /// The client went away, or the relay broke after the response started: close.
    Abort,
    /// The request body stalled past the stream idle timeout before a response began.
    UploadIdle,
    /// `per_try_timeout` passed before the response began.
    PerTryTimeout,
    /// `per_try_idle_timeout` passed before the response began.
    PerTryIdle,
    Upgraded(Box<Upstream>),
}

/// Envoy's local-reply texts for an upstream that failed before its response head: a prefix, then
/// the reset reason (after "retried and the latest " when the request was retried).
const UPSTREAM_FAILURE: &str = "upstream connect error or disconnect/reset before headers. ";
const CONNECT_FAILURE: &str = "remote connection failure";
const CONNECT_TIMEOUT: &str = "connection timeout";
const RESET_BEFORE_HEADERS: &str = "connection termination";
/// Envoy's reset reasons for an HTTP/2 RST_STREAM, and their `%RESPONSE_CODE_DETAILS%`.
const REMOTE_RESET: &str = "remote reset";
const REFUSED_STREAM_RESET: &str = "remote refused stream reset";
const REMOTE_RESET_DETAILS: &str = "upstream_reset_before_response_started{remote_reset}";
const REFUSED_STREAM_DETAILS: &str = "upstream_reset_before_response_started{remote_refused_stream_reset}";
const OVERFLOW: &str = "overflow";
const PROTOCOL_ERROR: &str = "protocol error";
/// Envoy's local-reply bodies for a stream idle timeout and an upstream (route or per-try) timeout.
pub(super) const STREAM_TIMEOUT: &[u8] = b"stream timeout";
pub(super) const UPSTREAM_TIMEOUT: &[u8] = b"upstream request timeout";

/// One request in flight to one endpoint: counted on the cluster, the host and the load balancer
/// from creation to drop, so a route timeout that drops the exchange mid-flight releases it too.
struct InFlight<'a> {
    stats: &'a ClusterStats,
    host: &'a HostStats,
    lb: &'a ShardCluster,
    endpoint: usize,
    success: bool,
}

impl<'a> InFlight<'a> {
    fn new(stats: &'a ClusterStats, host: &'a HostStats, lb: &'a ShardCluster, endpoint: usize) -> Self {
        // `upstream_rq_total` counts requests that reached a connection (`attempt`), as Envoy's.
        stats.upstream_rq_active.inc();
        host.rq_active.inc();
        lb.begin(endpoint);
        InFlight { stats, host, lb, endpoint, success: false }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.stats.upstream_rq_active.dec();
        self.host.rq_active.dec();
        if self.success {
            self.host.rq_success.inc();
        } else {
            self.host.rq_error.inc();
        }
        self.lb.end(self.endpoint);
    }
}

pub(super) async fn forward(ex: &Exchange<'_>, d: &mut Downstream) -> Forwarded {
    let snap = &ex.generation.snap.clusters[ex.cluster];
    let lb = &ex.generation.clusters[ex.cluster];
    let stats = &ex.generation.cluster_stats[ex.cluster];
    let retries = ex.fwd.retry.as_deref().filter(|_| ex.facts.body_buffered).map_or(0, |r| r.num_retries);
    let gate = RetryGate { breaker: &snap.breaker, limits: &snap.circuit_breakers, stats, held: None.into() };
    let mut attempts_left = retries + 1;
    let mut fresh_only = false;
    // Retries made, and the hosts tried (kept only for the `previous_hosts` predicate).
    let (mut retries_done, mut waited) = (0u32, 0u32);
    let mut previous: Vec<usize> = Vec::new();
    loop {
        if retries_done > waited {
            waited = retries_done;
            if let Some(r) = &ex.fwd.retry {
                // Rare (a retry), and of a random length: a boxed monoio sleep, not a shard timer.
                Box::pin(monoio::time::sleep(r.back_off(retries_done, ex.shard.rng.next()))).await;
            }
        }
        let Some(endpoint) = pick(ex, &previous) else {
            stats.upstream_cx_none_healthy.inc();
            let reply = LocalReply::new(503, b"no healthy upstream")
                .flagged(ResponseFlags::UH)
                .detailed(details::NO_HEALTHY_UPSTREAM);
            return Forwarded::Reply(close_unless_buffered(reply, ex));
        };
        if ex.fwd.retry.as_deref().is_some_and(|r| r.avoid_previous_hosts) {
            previous.push(endpoint);
        }
        let addr = snap.endpoints[endpoint];
        let host = &ex.generation.host_stats[ex.cluster][endpoint];
        d.obs.upstream_host = Some(addr);
        d.obs.upstream_cluster = Some(ex.cluster);
        d.obs.attempts += 1;
        if ex.attempt_count.upstream {
            set_attempt_count(&mut d.req_out, d.obs.attempts);
        }
        let mut in_flight = InFlight::new(stats, host, lb, endpoint);
        let result = attempt(ex, d, addr, endpoint, fresh_only, (attempts_left > 1).then_some(&gate)).await;
        match result {
            Attempt::PerTryTimeout => stats.upstream_rq_per_try_timeout.inc(),
            Attempt::PerTryIdle => stats.upstream_rq_per_try_idle_timeout.inc(),
            _ => {}
        }
        // What outlier detection hears of this host (a response's status is counted as it arrives).
        match result {
            Attempt::ConnectFailed { .. } | Attempt::Reset | Attempt::StreamReset { .. } => {
                report(ex, endpoint, Outcome::ConnectFailed)
            }
            Attempt::Stale if !resend_stale(&ex.facts, fresh_only) => {
                report(ex, endpoint, Outcome::ConnectFailed)
            }
            Attempt::PerTryTimeout | Attempt::PerTryIdle => report(ex, endpoint, Outcome::Timeout),
            _ => {}
        }
        in_flight.success = matches!(result, Attempt::Relayed { .. }) && d.status < 500;
        drop(in_flight);
        attempts_left -= 1;
        let retry = ex.fwd.retry.as_deref();
        // The reply's status, Envoy's reset reason for its body, flag and `%RESPONSE_CODE_DETAILS%`.
        let (status, reason, flag, why): (u16, &'static str, ResponseFlags, &'static str) = match result {
            Attempt::Relayed { keep_alive } => {
                // Envoy: a retried request whose answer is not one to retry is a retry success.
                if retries_done > 0 && !ex.answer_retriable.get() {
                    stats.upstream_rq_retry_success.inc();
                }
                return Forwarded::Relayed { keep_alive };
            }
            Attempt::Abort => return Forwarded::Abort,
            // Envoy: 408 when the request was not complete, and the connection closes.
            Attempt::UploadIdle => {
                let reply = LocalReply::new(408, STREAM_TIMEOUT)
                    .flagged(ResponseFlags::SI)
                    .closing()
                    .detailed(details::STREAM_IDLE_TIMEOUT);
                return Forwarded::Reply(reply);
            }
            Attempt::PerTryTimeout | Attempt::PerTryIdle => {
                // Envoy retries a timed-out try where the policy retries 5xx, gateway errors or resets.
                if retry.is_some_and(|r| r.on_5xx || r.on_gateway_error || r.on_reset) {
                    if attempts_left == 0 {
                        stats.upstream_rq_retry_limit_exceeded.inc();
                    } else if gate.admit() {
                        retried(stats, &mut retries_done);
                        continue;
                    } else {
                        d.obs.flag(ResponseFlags::UO);
                    }
                }
                let why = if matches!(result, Attempt::PerTryIdle) {
                    details::PER_TRY_IDLE_TIMEOUT
                } else {
                    details::PER_TRY_TIMEOUT
                };
                let mut reply = LocalReply::new(504, UPSTREAM_TIMEOUT).detailed(why);
                if d.obs.attempts > 1 {
                    reply.flag.insert(ResponseFlags::URX);
                }
                reply.flag.insert(ResponseFlags::UT);
                return Forwarded::Reply(close_unless_buffered(attempts_told(reply, ex, d.obs.attempts), ex));
            }
            Attempt::Upgraded(up) => return Forwarded::Upgraded(up),
            Attempt::Stale if resend_stale(&ex.facts, fresh_only) => {
                // Not a retry in Envoy's sense: the pooled connection closed as it was reused (the
                // keep-alive race), which clients may repeat an idempotent request after (RFC 9110
                // 9.2.2). A POST gets Envoy's 503 `UC` below, or its retry policy's `reset`.
                fresh_only = true;
                attempts_left += 1;
                continue;
            }
            // Envoy answers a reset before the response head with 503 and `UC`.
            Attempt::Stale | Attempt::Reset => {
                (503, RESET_BEFORE_HEADERS, ResponseFlags::UC, details::RESET_BEFORE_RESPONSE)
            }
            Attempt::StreamReset { refused: true } => {
                (503, REFUSED_STREAM_RESET, ResponseFlags::UR, REFUSED_STREAM_DETAILS)
            }
            Attempt::StreamReset { refused: false } => {
                (503, REMOTE_RESET, ResponseFlags::UR, REMOTE_RESET_DETAILS)
            }
            Attempt::ConnectFailed { timed_out } => {
                if retry.is_some_and(|r| r.on_connect_failure) {
                    if attempts_left > 0 {
                        if gate.admit() {
                            retried(stats, &mut retries_done);
                            continue;
                        }
                        d.obs.flag(ResponseFlags::UO);
                    } else {
                        stats.upstream_rq_retry_limit_exceeded.inc();
                    }
                }
                if timed_out {
                    (503, CONNECT_TIMEOUT, ResponseFlags::UF, details::CONNECT_TIMEOUT)
                } else {
                    (503, CONNECT_FAILURE, ResponseFlags::UF, details::CONNECT_FAILURE)
                }
            }
            Attempt::BadResponse => (502, PROTOCOL_ERROR, ResponseFlags::UPE, details::PROTOCOL_ERROR),
            Attempt::Overflow { on_connection } => {
                if !on_connection {
                    d.obs.upstream_host = None;
                }
                (503, OVERFLOW, ResponseFlags::UO, details::OVERFLOW)
            }
            Attempt::RetryableStatus => {
                retried(stats, &mut retries_done);
                continue;
            }
        };
        // An HTTP/2 stream reset is a `reset` too, and REFUSED_STREAM is also `refused-stream`.
        let reset = flag == ResponseFlags::UC || flag == ResponseFlags::UR;
        let refused = matches!(result, Attempt::StreamReset { refused: true });
        if reset
            && retry.is_some_and(|r| r.on_reset || r.retries_status(503) || refused && r.on_refused_stream)
        {
            if attempts_left == 0 {
                stats.upstream_rq_retry_limit_exceeded.inc();
            } else if gate.admit() {
                retried(stats, &mut retries_done);
                continue;
            } else {
                d.obs.flag(ResponseFlags::UO);
            }
        }
        if flag != ResponseFlags::UPE {
            // Envoy counts the reply it made for a failed upstream request as that request's code.
            stats.completed(status);
        }
        let mut reply = LocalReply::new(status, b"").detailed(why);
        let retried = if d.obs.attempts > 1 { "retried and the latest " } else { "" };
        reply.body = format!("{UPSTREAM_FAILURE}{retried}reset reason: {reason}").into_bytes().into();
        if d.obs.attempts > 1 {
            reply.flag.insert(ResponseFlags::URX);
        }
        reply.flag.insert(flag);
        reply.overloaded = flag == ResponseFlags::UO;
        return Forwarded::Reply(close_unless_buffered(attempts_told(reply, ex, d.obs.attempts), ex));
    }
}

/// Tells the cluster's outlier detection (when it has one) what an attempt on `endpoint` came to.
pub(super) fn report(ex: &Exchange<'_>, endpoint: usize, outcome: Outcome) {
    if let Some(o) = &ex.generation.snap.clusters[ex.cluster].outlier {
        o.report(endpoint, outcome, || ex.shard.rng.next());
    }
}

/// The `max_retries` breaker for one request: a retry holds it from the decision to retry until
/// the next decision or the end of the request, as Envoy's retry state does.
struct RetryGate<'a> {
    breaker: &'a Breaker,
    limits: &'a CircuitBreakers,
    stats: &'a ClusterStats,
    held: std::cell::RefCell<Option<Held<'a>>>,
}

impl RetryGate<'_> {
    /// Whether the breaker lets this request retry now (counting `upstream_rq_retry_overflow`
    /// when not).
    fn admit(&self) -> bool {
        let mut held = self.held.borrow_mut();
        *held = None;
        *held = self.breaker.hold(Resource::Retries, self.limits);
        if held.is_none() {
            self.stats.upstream_rq_retry_overflow.inc();
        }
        held.is_some()
    }
}

/// Envoy retries with exponential back-off (skiff retries at once; the stat keeps dashboards whole).
/// A retry decided: counted, and waited for (jittered back-off) before the next pick.
fn retried(stats: &ClusterStats, retries_done: &mut u32) {
    stats.upstream_rq_retry.inc();
    stats.upstream_rq_retry_backoff_exponential.inc();
    *retries_done += 1;
}

/// An endpoint for the next attempt: the load balancer's pick, re-picked up to
/// `host_selection_retry_max_attempts` times while it is one already tried (the `previous_hosts`
/// predicate), then the last pick whatever it is, as Envoy does.
fn pick(ex: &Exchange<'_>, previous: &[usize]) -> Option<usize> {
    let snap = &ex.generation.snap.clusters[ex.cluster];
    let lb = &ex.generation.clusters[ex.cluster];
    let mut endpoint = lb.pick_for(snap, &ex.shard.rng, ex.facts.hash)?;
    if let Some(r) = ex.fwd.retry.as_deref().filter(|_| !previous.is_empty()) {
        for _ in 0..r.host_selection_attempts {
            if !previous.contains(&endpoint) {
                break;
            }
            endpoint = lb.pick_for(snap, &ex.shard.rng, ex.facts.hash)?;
        }
    }
    Some(endpoint)
}

/// A reply for a failed upstream request says how many attempts were made when the virtual host
/// asks (`include_attempt_count_in_response`), as Envoy's router does.
fn attempts_told(mut reply: LocalReply, ex: &Exchange<'_>, attempts: u32) -> LocalReply {
    if ex.attempt_count.client {
        attempt_count_line(&mut reply.headers, attempts);
    }
    reply
}

/// The `x-envoy-attempt-count: n` header line a response to the client carries.
pub(super) fn attempt_count_line(out: &mut Vec<u8>, attempts: u32) {
    out.extend_from_slice(format!("x-envoy-attempt-count: {attempts}\r\n").as_bytes());
}

/// `x-envoy-attempt-count: n` in the upstream request head at the start of `request` (replacing
/// the line a previous attempt, or the client, put there), as Envoy's `include_request_attempt_count`.
fn set_attempt_count(request: &mut Vec<u8>, n: u32) {
    if let Some(value) = headers::written_header_value(request, b"x-envoy-attempt-count") {
        request.splice(value, n.to_string().into_bytes());
    } else if let Some(end) = headers::written_head_end(request) {
        request.splice(end..end, format!("\r\nx-envoy-attempt-count: {n}").into_bytes());
    }
}

/// A body we could not finish reading leaves the client mid-request: close after answering.
/// Whether a request whose pooled connection closed before answering is sent once more on a fresh
/// connection: its whole body is at hand, it is idempotent, and it was not already resent.
fn resend_stale(facts: &RequestFacts, fresh_only: bool) -> bool {
    facts.body_buffered && facts.idempotent && !fresh_only
}

fn close_unless_buffered(reply: LocalReply, ex: &Exchange<'_>) -> LocalReply {
    if ex.facts.body_buffered {
        reply
    } else {
        reply.closing()
    }
}

pub(super) async fn connect(
    shard: &ShardStats,
    addr: SocketAddr,
    key: PoolKey,
    snap: &ClusterSnap,
    stats: &Rc<ClusterStats>,
    host: &Rc<HostStats>,
    slot: ConnSlot,
) -> Result<Upstream, Attempt> {
    let h2 = match &snap.protocol {
        UpstreamProtocol::Auto(h2) => Some((h2, true)),
        p => p.http2_for(key.downstream_http2).map(|h2| (h2, false)),
    };
    if let Some((h2, auto)) = h2 {
        let accounts = (stats, host);
        // Boxed: only HTTP/2 clusters' new connections carry this in their future.
        let connected = if auto {
            Box::pin(super::h2_upstream::connect_auto(shard, key, snap, h2, accounts, slot)).await
        } else {
            Box::pin(super::h2_upstream::connect(shard, key, snap, h2, accounts, slot)).await
        };
        return match connected {
            Ok(up) => Ok(up),
            Err(StreamEnd::ConnectFailed { timed_out }) => {
                stats.upstream_rq_pending_failure_eject.inc();
                Err(Attempt::ConnectFailed { timed_out })
            }
            Err(_) => Err(Attempt::Reset),
        };
    }
    stats.upstream_cx_total.inc();
    if let Some(board) = &snap.board {
        board.note_traffic();
    }
    stats.upstream_cx_http1_total.inc();
    host.cx_total.inc();
    let failed = |timed_out: bool| {
        super::h2_upstream::count_connect_failure(stats, timed_out);
        stats.upstream_rq_pending_failure_eject.inc();
        Attempt::ConnectFailed { timed_out }
    };
    // Boxed: only a new connection waits here, and monoio's timeout would otherwise size every
    // request's future by 640 bytes more.
    match Box::pin(monoio::time::timeout(snap.connect_timeout, TcpStream::connect_addr(addr))).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            if let Some(k) = &snap.connection.tcp_keepalive {
                if let Err(e) = socket::set_keepalive(&stream, k) {
                    log::warn!("connect to {addr}: cannot set tcp_keepalive: {e}");
                }
            }
            let stream = match snap.tls {
                None => stream,
                // Boxed: only TLS clusters' requests carry the handshake in their future.
                Some(_) => match Box::pin(super::tls::upstream(stream, snap, shard, addr)).await {
                    Ok(bridged) => bridged,
                    Err(()) => return Err(failed(false)),
                },
            };
            // A second handle reads responses while requests are written through the first.
            // SAFETY: `stream` owns the descriptor and outlives the borrow.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(std::os::fd::AsRawFd::as_raw_fd(&stream)) };
            match socket::duplicate(fd) {
                Ok(reader) => {
                    let accounts = Accounts { stats: stats.clone(), host: host.clone(), slot };
                    Ok(Upstream::new((stream, reader), key, accounts, READ_CHUNK, &snap.connection))
                }
                Err(e) => {
                    log::warn!("connect to {addr}: cannot duplicate the socket: {e}");
                    Err(failed(false))
                }
            }
        }
        Ok(Err(e)) => {
            log::debug!("connect to {addr}: {e}");
            Err(failed(false))
        }
        Err(_) => Err(failed(true)),
    }
}

/// One attempt: a connection, then the exchange on it, which `per_try_timeout` bounds (Envoy
/// starts the per-try timer once the connection is ready, so connecting is `connect_timeout`'s).
async fn attempt(
    ex: &Exchange<'_>,
    d: &mut Downstream,
    addr: SocketAddr,
    endpoint: usize,
    fresh_only: bool,
    retry_gate: Option<&RetryGate<'_>>,
) -> Attempt {
    let snap = &ex.generation.snap.clusters[ex.cluster];
    let downstream_http2 = ex.facts.client_http2 && matches!(snap.protocol, UpstreamProtocol::Downstream(_));
    let key = PoolKey { cluster: snap.pool_id, addr, downstream_http2 };
    // A tunnel takes a connection of its own.
    let up = match obtain(ex, key, endpoint, fresh_only || ex.facts.connect).await {
        Ok(up) => up,
        Err(failed) => return failed,
    };
    report(ex, endpoint, Outcome::Connected);
    let per_try = ex.fwd.retry.as_deref().and_then(|r| r.per_try_timeout);
    let exchange = exchange(ex, d, up, endpoint, retry_gate);
    let Some(limit) = per_try else { return exchange.await };
    // Boxed: only routes with a per-try timeout pay for the timer in their future.
    match Box::pin(ex.shard.timers.limit(limit, exchange)).await {
        Some(done) => done,
        // The dropped exchange closed its connection (Envoy resets the upstream stream).
        None if d.response_started => {
            d.obs.flag(ResponseFlags::UT);
            d.obs.details = std::borrow::Cow::Borrowed(details::PER_TRY_TIMEOUT);
            Attempt::Abort
        }
        None => Attempt::PerTryTimeout,
    }
}

/// An idle pooled connection to `key`: only one with nothing waiting on it. Bytes an upstream sent
/// after its last complete response (a late second response, a body after a 204) would otherwise
/// be read as the answer to this request; an EOF means the upstream closed it. Either way the
/// connection is closed and the next one tried. The check is the read armed on every pooled
/// connection (`ReadSide::arm`): it costs no syscall of its own, and when nothing completed it, it
/// is this request's first response read.
pub(super) fn take_pooled(shard: &Shard, key: PoolKey) -> Option<Upstream> {
    loop {
        let mut up = shard.pool.take(key, shard.date.second())?;
        if up.read.quiet() {
            return Some(up);
        }
        log::debug!("discarding pooled connection to {}: unread bytes or closed", key.addr);
    }
}

/// A request waiting for a connection: Envoy's pending request, counted in
/// `max_pending_requests` and `upstream_rq_pending_active` while it waits or connects.
struct Pending<'a> {
    _held: Held<'a>,
    active: &'a Gauge,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.active.dec();
    }
}

/// A connection for one attempt, within the circuit breakers: a pooled one, else (as a pending
/// request) a new one while the cluster is under `max_connections` or this shard has none open to
/// the endpoint (Envoy's rule: a pool with no connection always opens one, so its pending
/// requests are never stranded), else the turn to take the next one pooled again or closed here.
/// Waiting is bounded by the route timeout around the exchange.
async fn obtain(
    ex: &Exchange<'_>,
    key: PoolKey,
    endpoint: usize,
    fresh_only: bool,
) -> Result<Upstream, Attempt> {
    if !fresh_only {
        if let Some(up) = take_pooled(ex.shard, key) {
            return Ok(up);
        }
    }
    let snap = &ex.generation.snap.clusters[ex.cluster];
    let (breaker, limits) = (&snap.breaker, &snap.circuit_breakers);
    let stats = &ex.generation.cluster_stats[ex.cluster];
    let Some(held) = breaker.hold(Resource::Pending, limits) else {
        stats.upstream_rq_pending_overflow.inc();
        return Err(Attempt::Overflow { on_connection: false });
    };
    stats.upstream_rq_pending_total.inc();
    stats.upstream_rq_pending_active.inc();
    let _pending = Pending { _held: held, active: &stats.upstream_rq_pending_active };
    let conns = ex.shard.pool.endpoint(key);
    let mut overflow_counted = false;
    let host_cap = snap.host_room(endpoint).map(|(n, _)| n);
    loop {
        // Envoy's `canCreateConnection`: the host under its own cap, then the cluster's.
        let host_room = snap.host_room(endpoint).is_none_or(|(_, room)| room);
        let mut may_open = host_room && breaker.try_take(Resource::Connections, limits);
        if !may_open {
            if !overflow_counted {
                stats.upstream_cx_overflow.inc();
                overflow_counted = true;
            }
            if conns.open() == 0 {
                breaker.take(Resource::Connections);
                may_open = true;
            }
        }
        if may_open {
            let slot = ConnSlot::new(breaker.clone(), conns).on_host(host_cap);
            let host = &ex.generation.host_stats[ex.cluster][endpoint];
            return connect(&ex.shard.stats, key.addr, key, snap, stats, host, slot).await;
        }
        conns.wait().await;
        if !fresh_only {
            if let Some(up) = take_pooled(ex.shard, key) {
                return Ok(up);
            }
        }
    }
}

/// The request written on `up`, its response read and relayed.
async fn exchange(
    ex: &Exchange<'_>,
    d: &mut Downstream,
    mut up: Upstream,
    endpoint: usize,
    retry_gate: Option<&RetryGate<'_>>,
) -> Attempt {
    let snap = &ex.generation.snap.clusters[ex.cluster];
    let reused = up.requests > 0;
    let stats = &ex.generation.cluster_stats[ex.cluster];
    // `max_requests` is checked as the request is put on a connection, as Envoy does; a connection
    // it was refused goes back to the pool unused.
    let Some(_request) = snap.breaker.hold(Resource::Requests, &snap.circuit_breakers) else {
        stats.upstream_rq_active_overflow.inc();
        if up.read.ensure_armed(READ_CHUNK) {
            ex.shard.pool.put(up, ex.shard.date.second());
        }
        return Attempt::Overflow { on_connection: true };
    };
    up.requests += 1;
    up.in_request = true;
    stats.upstream_rq_total.inc();
    ex.generation.host_stats[ex.cluster][endpoint].rq_total.inc();
    let started = Instant::now();
    if ex.facts.connect {
        let answer = super::connect::Answer {
            edits: &ex.response_edits,
            filter_headers: ex.filter_headers,
            date: &ex.shard.date,
            server: ex.server_name,
        };
        return match super::connect::established(d, answer).await {
            Ok(()) => Attempt::Upgraded(Box::new(up)),
            Err(()) => Attempt::Abort,
        };
    }

    // The request: head and whatever body came with it.
    let head_len = d.req_out.len();
    match socket::write_kept(&mut up.stream, &mut d.req_out).await {
        Ok(()) => stats.upstream_cx_tx_bytes_total.add(head_len as u64),
        Err(_) => return if reused { Attempt::Stale } else { Attempt::Reset },
    }

    // The response head; the rest of a streamed body goes up meanwhile, and the client is watched.
    let facts = &ex.facts;
    let mut upload_abandoned = false;
    let mut still_sending = None;
    let mut streamed = 0;
    if facts.body_rest.is_some() && facts.expect_continue {
        d.resp_out.clear();
        d.resp_out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        if write_out(&mut d.stream, &mut d.resp_out).await.is_err() {
            d.obs.flag(ResponseFlags::DC);
            return Attempt::Abort;
        }
    }
    let head_read = {
        let (resp_out, obs, status, expires) = (&mut d.resp_out, &mut d.obs, &mut d.status, d.expires);
        let mut on_head = |head: &ResponseHead<'_>, abandoned: bool| {
            // `max_connection_duration` passed during the exchange: this response is the
            // connection's last, and says so.
            let expired = expires.is_some_and(|t| Instant::now() >= t);
            let facts = HeadFacts {
                started,
                upload_abandoned: abandoned,
                connection_expired: expired,
                retry_gate,
                endpoint,
            };
            on_response_head(ex, head, resp_out, obs, status, facts, stats)
        };
        match facts.body_rest.clone() {
            Some(rest) => {
                let Some(sending) = upload(ex, &d.stream, &mut d.buf, &up, rest) else {
                    return Attempt::Abort;
                };
                // Boxed: its state (two concurrent relays) would otherwise size every idle
                // connection's task, and only streamed uploads come here.
                match Box::pin(stream_body_until_head(ex, &mut up, sending, &mut on_head)).await {
                    Ok((read, Uploaded::Whole { sent, buf })) => {
                        d.buf = buf;
                        streamed = sent;
                        read
                    }
                    Ok((read, Uploaded::Abandoned)) => {
                        upload_abandoned = true;
                        read
                    }
                    Ok((read, Uploaded::Going(sending))) => {
                        upload_abandoned = true;
                        still_sending = Some(sending);
                        read
                    }
                    Err(failed) => {
                        if matches!(failed, Attempt::Abort) {
                            d.obs.flag(ResponseFlags::DC);
                        }
                        return failed;
                    }
                }
            }
            // A buffered request was complete before the exchange began (`request` fired it).
            None => {
                let max_headers = ex.generation.snap.clusters[ex.cluster].connection.max_headers_count;
                let head =
                    read_final_head(&mut up.read, facts.head_method, max_headers, |h| on_head(h, false));
                match ex.per_try_idle() {
                    // Boxed: only routes with a per-try idle timeout pay for its timer. The head
                    // comes in one read as a rule, so its wait is one idle period.
                    Some(limit) => match Box::pin(ex.shard.timers.limit(limit, head)).await {
                        Some(read) => read,
                        None => return Attempt::PerTryIdle,
                    },
                    None => head.await,
                }
            }
        }
    };
    d.obs.bytes_received += streamed;
    let shape = match head_read {
        HeadRead::Complete(Some(shape)) => shape,
        HeadRead::Complete(None) => return Attempt::RetryableStatus,
        HeadRead::Closed { received_any } => {
            // An HTTP/2 bridge says how the stream behind it ended.
            match up.bridge.as_ref().and_then(|n| n.ended.get()) {
                Some(StreamEnd::Refused) => return Attempt::StreamReset { refused: true },
                Some(StreamEnd::Reset) => return Attempt::StreamReset { refused: false },
                Some(StreamEnd::ConnectFailed { timed_out }) => return Attempt::ConnectFailed { timed_out },
                Some(StreamEnd::ConnectionTermination) | None => {}
            }
            up.peer_closed = true;
            if reused && !received_any {
                // Never reached an application: not a request that ended on this connection.
                up.in_request = false;
                return Attempt::Stale;
            }
            return Attempt::Reset;
        }
        HeadRead::Malformed => return Attempt::BadResponse,
    };
    d.response_started = true;
    if ex.facts.upgrade && d.status == 101 {
        return match write_out(&mut d.stream, &mut d.resp_out).await {
            Ok(()) => Attempt::Upgraded(Box::new(up)),
            Err(_) => {
                d.obs.flag(ResponseFlags::DC);
                Attempt::Abort
            }
        };
    }
    match still_sending {
        None => relay_response(ex, d, up, shape, started, upload_abandoned).await,
        // Boxed: only a response that began before its request ended comes here.
        Some(sending) => Box::pin(relay_duplex(ex, d, up, shape, started, sending)).await,
    }
}

/// What the response head decided, for relaying its body.
struct HeadDecision {
    shape: headers::ResponseShape,
    body: BodyKind,
    upstream_keep_alive: bool,
    /// The compressor filters chose to compress the body.
    compress: Option<compress::Compressing>,
}

/// The response head arrived: count it, decide on a retry (None), else write the client's head
/// into `resp_out`.
/// What the exchange knows when a response head arrives.
struct HeadFacts<'a, 'b> {
    /// When the upstream request began (for `x-envoy-upstream-service-time`).
    started: Instant,
    /// The head came before the request body was sent whole (an early 413, or a full-duplex
    /// stream): no retry, no `x-envoy-upstream-service-time`, and the client's connection closes
    /// after it, as Envoy's.
    upload_abandoned: bool,
    /// The client connection reached `max_connection_duration`.
    connection_expired: bool,
    /// Set when the route may still retry this request.
    retry_gate: Option<&'a RetryGate<'b>>,
    /// The host answering, for outlier detection.
    endpoint: usize,
}

fn on_response_head(
    ex: &Exchange<'_>,
    head: &ResponseHead<'_>,
    resp_out: &mut Vec<u8>,
    obs: &mut observe::Observed,
    status: &mut u16,
    HeadFacts { started, upload_abandoned, connection_expired, retry_gate, endpoint }: HeadFacts<'_, '_>,
    stats: &ClusterStats,
) -> Option<HeadDecision> {
    if obs.on {
        obs.first_upstream_byte.get_or_insert_with(Instant::now);
    }
    observe::on_response_head(ex.listener, head, obs);
    // Every response counts for outlier detection, a retried one too.
    report(ex, endpoint, Outcome::Status(head.status));
    // A request that may be retried (a policy, and a body that can be sent again): Envoy's retry
    // state decides on every response head.
    let policy = ex.fwd.retry.as_deref().filter(|_| ex.facts.body_buffered && !upload_abandoned);
    if let Some(r) = policy {
        if r.retries_response(head.status, head.headers) {
            match retry_gate {
                Some(gate) if gate.admit() => {
                    // Envoy charges a response it retries to `retry.upstream_rq_*`, not to the
                    // cluster's codes (observed: three 503s, the last relayed, are one
                    // `upstream_rq_503` and two `retry.upstream_rq_503`).
                    stats.retried_codes.inc(head.status);
                    return None;
                }
                Some(_) => obs.flag(ResponseFlags::UO),
                None => {
                    // Envoy flags the relayed answer of a request out of retries `URX`.
                    stats.upstream_rq_retry_limit_exceeded.inc();
                    obs.flag(ResponseFlags::URX);
                }
            }
            ex.answer_retriable.set(true);
        }
    }
    stats.completed(head.status);
    *status = head.status;
    ex.head_relayed.set(true);
    // `include_attempt_count_in_response`: the attempt that answered, after the filters' lines.
    let mut with_count = Vec::new();
    if ex.attempt_count.client {
        with_count.extend_from_slice(ex.filter_headers);
        attempt_count_line(&mut with_count, obs.attempts);
    }
    let rw = ResponseRewrite {
        edits: ex.response_edits,
        server_name: ex.server_name,
        date: &ex.shard.date,
        service_time_ms: (!upload_abandoned).then(|| started.elapsed().as_millis() as u64),
        keep_alive: ex.facts.keep_alive && !upload_abandoned && !connection_expired && !ex.shard.draining(),
        http10: ex.facts.http10,
        listener: ex.listener,
        filter_headers: if ex.attempt_count.client { &with_count } else { ex.filter_headers },
        filter_replace: ex.filter_headers_replace,
        switching: ex.facts.upgrade && head.status == 101,
    };
    let mut shape = headers::write_response_head(resp_out, head, &rw, obs);
    let compress = match ex.compress {
        Some(ask) if !rw.switching => {
            compress::on_head(ask, head, resp_out, &mut shape, (ex.facts.http10, rw.keep_alive))
        }
        _ => None,
    };
    Some(HeadDecision { shape, body: head.body, upstream_keep_alive: head.keep_alive, compress })
}

/// A streamed request body on its way up: it owns second handles on the client's and the
/// upstream's sockets (and the client's read buffer, handed back when the body went whole), so it
/// can go on beside the response relay, which writes to the client and reads the upstream through
/// the first ones. Two `dup`s per streamed upload; a request whose body came with its head has none.
type Sending<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = (Result<u64, RelayError>, BytesMut)> + 'a>>;

fn upload<'a>(
    ex: &'a Exchange<'_>,
    client: &TcpStream,
    client_buf: &mut BytesMut,
    up: &Upstream,
    rest: Framing,
) -> Option<Sending<'a>> {
    let (mut from, mut to) = match (socket::second_handle(client), socket::second_handle(&up.stream)) {
        (Ok(from), Ok(to)) => (from, to),
        (Err(e), _) | (_, Err(e)) => {
            log::warn!("cannot duplicate a socket for a streamed upload: {e}");
            return None;
        }
    };
    let mut buf = std::mem::take(client_buf);
    let idle = ex.idle();
    Some(Box::pin(async move {
        let sent = body::relay(&mut from, &mut buf, &mut to, rest, idle).await;
        (sent, buf)
    }))
}

/// Where a streamed request body stands when its response head arrived.
enum Uploaded<'a> {
    /// Sent whole (payload bytes), and the client's read buffer with what followed it.
    Whole { sent: u64, buf: BytesMut },
    /// The upstream stopped reading it.
    Abandoned,
    /// Still going: the head came first. It goes on beside the response, as Envoy's full duplex
    /// (an interactive stream, a bidi gRPC call, needs both ways at once).
    Going(Sending<'a>),
}

/// Relays a streamed request body while reading the response head. A head that arrives before
/// the body was sent whole leaves the upload going (`Uploaded::Going`).
async fn stream_body_until_head<'a>(
    ex: &'a Exchange<'_>,
    up: &mut Upstream,
    mut sending: Sending<'a>,
    on_head: &mut impl FnMut(&ResponseHead<'_>, bool) -> Option<HeadDecision>,
) -> Result<(HeadRead, Uploaded<'a>), Attempt> {
    let head_only = ex.facts.head_method;
    let early = std::cell::Cell::new(true);
    let max_headers = ex.generation.snap.clusters[ex.cluster].connection.max_headers_count;
    let head = read_final_head(&mut up.read, head_only, max_headers, |h| on_head(h, early.get()));
    let mut head = std::pin::pin!(head);
    let (sent, buf) = monoio::select! {
        done = &mut sending => done,
        read = &mut head => {
            ex.request_complete.fire();
            return Ok((read, Uploaded::Going(sending)));
        }
    };
    ex.request_complete.fire();
    match sent {
        Ok(n) => {
            // Payload bytes (a chunked body's framing is not counted).
            ex.generation.cluster_stats[ex.cluster].upstream_cx_tx_bytes_total.add(n);
            early.set(false);
            Ok((head.await, Uploaded::Whole { sent: n, buf }))
        }
        Err(RelayError::Read | RelayError::Framing) => Err(Attempt::Abort),
        Err(RelayError::Idle) => Err(Attempt::UploadIdle),
        // The upstream stopped reading: it may have answered already (and closed); its answer,
        // if any, goes to the client.
        Err(RelayError::Write) => Ok((head.await, Uploaded::Abandoned)),
    }
}

/// The response relayed while the request body still goes up (its head came first). The response
/// ending first gives the upload up (the client's connection closes: the head said so, as
/// Envoy's does); the client failing or stalling mid-body ends both, as Envoy resets the stream.
async fn relay_duplex(
    ex: &Exchange<'_>,
    d: &mut Downstream,
    up: Upstream,
    decision: HeadDecision,
    started: Instant,
    mut sending: Sending<'_>,
) -> Attempt {
    enum Ended {
        Response(Attempt),
        Request(RelayError),
    }
    let mut sent_whole = None;
    let ended = {
        let relay = relay_response(ex, d, up, decision, started, true);
        let mut relay = std::pin::pin!(relay);
        monoio::select! {
            done = &mut relay => Ended::Response(done),
            (sent, _) = &mut sending => match sent {
                Ok(n) => {
                    sent_whole = Some(n);
                    Ended::Response(relay.await)
                }
                Err(RelayError::Write) => Ended::Response(relay.await),
                Err(e) => Ended::Request(e),
            },
        }
    };
    if let Some(n) = sent_whole {
        d.obs.bytes_received += n;
        ex.generation.cluster_stats[ex.cluster].upstream_cx_tx_bytes_total.add(n);
    }
    match ended {
        Ended::Response(done) => done,
        Ended::Request(e) => {
            if e == RelayError::Idle {
                d.obs.flag(ResponseFlags::SI);
                d.obs.details = std::borrow::Cow::Borrowed(details::STREAM_IDLE_TIMEOUT);
            } else {
                d.obs.flag(ResponseFlags::DC);
            }
            Attempt::Abort
        }
    }
}

enum HeadRead {
    /// A final (non-1xx) response head was read and consumed from the buffer: what it decided
    /// (None: retry).
    Complete(Option<HeadDecision>),
    /// The upstream closed or failed before a complete head.
    Closed {
        received_any: bool,
    },
    Malformed,
}

/// Reads until a final response head is at the start of `buf`, skipping interim 1xx responses
/// (skiff answered Expect itself), hands it to `on_head` (parsed once, in place) and consumes it.
async fn read_final_head(
    side: &mut ReadSide,
    head_request: bool,
    max_headers: usize,
    mut on_head: impl FnMut(&ResponseHead<'_>) -> Option<HeadDecision>,
) -> HeadRead {
    let mut received_any = false;
    // A pooled connection's armed read brings the response's first bytes.
    if let Some(first) = side.disarm().await {
        if !matches!(first, Ok(1..)) {
            return HeadRead::Closed { received_any };
        }
    }
    loop {
        let Some((stream, buf)) = side.parts() else { return HeadRead::Closed { received_any } };
        if !buf.is_empty() {
            received_any = true;
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            match http::parse_response(buf, &mut headers, MAX_RESPONSE_HEAD, head_request) {
                // The cluster's `max_headers_count`: a larger head is a broken response.
                Ok(Some(head)) if head.headers.len() > max_headers => return HeadRead::Malformed,
                Ok(Some(head)) if (100..200).contains(&head.status) && head.status != 101 => {
                    let n = head.head_len;
                    buf.advance(n);
                    continue;
                }
                Ok(Some(head)) => {
                    let decision = on_head(&head);
                    let n = head.head_len;
                    buf.advance(n);
                    return HeadRead::Complete(decision);
                }
                Ok(None) => {}
                Err(e) => {
                    log::debug!("bad response head: {e:?}");
                    return HeadRead::Malformed;
                }
            }
        }
        match read_up_to(stream, buf, READ_CHUNK).await {
            Ok(0) | Err(_) => return HeadRead::Closed { received_any },
            Ok(_) => {}
        }
    }
}

/// Relays the response body after its head (already in `d.resp_out`) to the client; pools the
/// connection when the exchange ended cleanly and nothing is left unread.
async fn relay_response(
    ex: &Exchange<'_>,
    d: &mut Downstream,
    mut up: Upstream,
    decision: HeadDecision,
    started: Instant,
    upload_abandoned: bool,
) -> Attempt {
    let snap = &ex.generation.snap.clusters[ex.cluster];
    let stats = &ex.generation.cluster_stats[ex.cluster];
    let HeadDecision { shape, body, upstream_keep_alive, compress } = decision;
    // Not armed: read_final_head disarmed it.
    let Some((reader, buf)) = up.read.parts() else { return Attempt::Abort };
    let (idle, per_try_idle) = ex.response_idle();
    let relayed = match (body, compress) {
        (BodyKind::Length(_) | BodyKind::Chunked | BodyKind::CloseDelimited, Some(c)) => {
            compress::relay(reader, buf, &mut d.stream, &mut d.resp_out, c, idle).await
        }
        (BodyKind::None, _) => {
            write_out(&mut d.stream, &mut d.resp_out).await.map(|_| 0).map_err(|_| RelayError::Write)
        }
        (BodyKind::Length(n), None) => {
            let first = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            // A small body rides in the head's write; a large one is written from the read buffer
            // as it is, instead of being copied.
            let copied = if first <= COPY_WITH_HEAD { first } else { 0 };
            d.resp_out.extend_from_slice(&buf[..copied]);
            buf.advance(copied);
            let head_written = match write_out(&mut d.stream, &mut d.resp_out).await {
                Ok(()) if copied < first => write_prefix(&mut d.stream, buf, first - copied).await,
                other => other,
            };
            match head_written {
                Ok(()) if n == first as u64 => Ok(n),
                Ok(()) => {
                    // What reached the client if the rest fails (Envoy's `%BYTES_SENT%` then).
                    d.obs.bytes_sent = first as u64;
                    body::relay(reader, buf, &mut d.stream, Framing::Length(n - first as u64), idle)
                        .await
                        .map(|rest| rest + first as u64)
                }
                Err(_) => Err(RelayError::Write),
            }
        }
        (BodyKind::Chunked, None) if shape.dechunk => {
            body::relay_dechunked(reader, buf, &mut d.stream, &mut d.resp_out, idle).await
        }
        (BodyKind::Chunked | BodyKind::CloseDelimited, None) => {
            match write_out(&mut d.stream, &mut d.resp_out).await {
                Ok(()) => {
                    let framing = Framing::of(body).unwrap_or(Framing::UntilClose);
                    body::relay(reader, buf, &mut d.stream, framing, idle).await
                }
                Err(_) => Err(RelayError::Write),
            }
        }
    };
    stats.upstream_rq_time.record_us(started.elapsed().as_micros() as u64);
    match relayed {
        Ok(n) => d.obs.bytes_sent = n,
        Err(RelayError::Write) => {
            d.obs.flag(ResponseFlags::DC);
            return Attempt::Abort;
        }
        // The response stalled mid-body: Envoy resets the stream and logs the status it relayed,
        // flagged by whichever idle limit ran out.
        Err(RelayError::Idle) => {
            if per_try_idle {
                stats.upstream_rq_per_try_idle_timeout.inc();
                d.obs.flag(ResponseFlags::UT);
                d.obs.details = std::borrow::Cow::Borrowed(details::PER_TRY_IDLE_TIMEOUT);
            } else {
                d.obs.flag(ResponseFlags::SI);
                d.obs.details = std::borrow::Cow::Borrowed(details::STREAM_IDLE_TIMEOUT);
            }
            return Attempt::Abort;
        }
        Err(_) => {
            up.peer_closed = true;
            d.obs.flag(ResponseFlags::UC);
            d.obs.details = std::borrow::Cow::Borrowed(details::RESET_AFTER_RESPONSE);
            return Attempt::Abort;
        }
    }
    up.in_request = false;
    if body == BodyKind::CloseDelimited {
        up.peer_closed = true;
    }
    // Only a connection whose request went up whole and whose response was read exactly, with
    // nothing after it, may carry another exchange.
    let reusable = upstream_keep_alive
        && !upload_abandoned
        && up.read.buf.is_empty()
        && snap.max_requests_per_connection.is_none_or(|max| up.requests < max)
        && !up.expired();
    if reusable {
        socket::shrink_idle(&mut up.read.buf, READ_CHUNK);
        // Armed: a read on the idle connection that anything arriving before the next request
        // completes, disqualifying it (and that is refused at once if bytes are already there).
        if up.read.arm(READ_CHUNK) {
            ex.shard.pool.put(up, ex.shard.date.second());
        }
    }
    Attempt::Relayed { keep_alive: shape.client_keep_alive }
}
