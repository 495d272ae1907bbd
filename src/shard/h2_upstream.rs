//! HTTP/2 to upstreams: this shard's shared HTTP/2 connections per (cluster, host), and the
//! *bridge* that lets the HTTP/1.1 request path use them unchanged. `connect` for an HTTP/2
//! cluster first finds (or opens, within `connect_timeout`: TCP, TLS with ALPN `h2`, the h2
//! preface) a connection to the host with a free stream, so an unreachable host is still a
//! connect failure; then it hands the path one end of a local socket pair as its "connection",
//! while a task on the other end reads each HTTP/1.1 request the path writes, sends it as an
//! HTTP/2 stream on a shared connection, and writes the HTTP/2 response back as HTTP/1.1
//! (`content-length` when the host sent one, else chunked with the HTTP/2 trailers as chunked
//! trailers). One request at a time per pair; the pair is pooled like any connection, so retries,
//! timeouts, outlier detection and pooling rules are the HTTP/1.1 path's. A stream that ends
//! without a response is told to the path through the pair's `BridgeNote` (`UR`,
//! `refused-stream`). A connection carries at most the host's SETTINGS_MAX_CONCURRENT_STREAMS and
//! the cluster's `max_concurrent_streams` streams, is retired by `max_requests_per_connection`
//! and by GOAWAY, and closes after its `idle_timeout` without streams. Uses the `h2` crate over
//! monoio's poll-io streams; knows nothing of routes, filters or the client.

use super::socket::{self, READ_CHUNK};
use super::tls;
use crate::cluster::pool::{Accounts, BridgeNote, ConnSlot, PoolKey, StreamEnd, Upstream};
use crate::cluster::ClusterSnap;
use crate::config::tls::UpstreamTls;
use crate::config::{Http2Options, TcpKeepalive};
use crate::http::ChunkedDecoder;
use crate::stats::{ClusterStats, HostStats, ShardStats, SslStats, UpstreamHttp2Stats};
use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use http::header::{HeaderName, HeaderValue};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, IntoPollIo};
use monoio::net::TcpStream;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

/// Largest request head the bridge reads from the path (the path's own limit is lower).
const MAX_REQUEST_HEAD: usize = 96 * 1024;

/// How to reach one host of one cluster, refreshed by each `connect` (a reload that keeps the
/// pool key may change the timeout or TLS material).
struct Target {
    addr: SocketAddr,
    connect_timeout: Duration,
    tls: Option<(UpstreamTls, Rc<SslStats>)>,
    keepalive: Option<TcpKeepalive>,
    options: Http2Options,
    max_requests: Option<u32>,
    idle: Duration,
    max_duration: Option<Duration>,
    stats: Rc<ClusterStats>,
    host: Rc<HostStats>,
    http2: Rc<UpstreamHttp2Stats>,
}

/// One shared HTTP/2 connection. The pool and each open stream hold it; its driver task only
/// watches it (`Weak`), so once it is retired and its last stream ends its `SendRequest` is
/// dropped and h2 closes the connection.
struct Conn {
    send: SendRequest<Bytes>,
    active: Cell<u32>,
    started: Cell<u32>,
    /// Takes no new stream: GOAWAY, an error, or `max_requests_per_connection` reached.
    retired: Cell<bool>,
    /// When its last stream ended (for `idle_timeout`).
    idle_since: Cell<Instant>,
    /// `max_connection_duration`: from then on it takes no new stream.
    expires: Option<Instant>,
}

impl Conn {
    fn has_room(&self, t: &Target) -> bool {
        if self.expires.is_some_and(|at| Instant::now() >= at) && !self.retired.get() {
            // Counted once: the caller retires it.
            self.retired.set(true);
            t.stats.upstream_cx_max_duration_reached.inc();
        }
        let streams = (t.options.max_concurrent_streams as usize).min(self.send.current_max_send_streams());
        !self.retired.get()
            && (self.active.get() as usize) < streams
            && t.max_requests.is_none_or(|m| self.started.get() < m)
    }
}

#[derive(Default)]
struct Host {
    conns: Vec<Rc<Conn>>,
    /// A connection is being opened: others that need one wait for its outcome rather than
    /// open their own (Envoy's pending streams wait for the connecting connection).
    connecting: bool,
    waiters: Vec<futures_channel::oneshot::Sender<Result<(), StreamEnd>>>,
}

/// Clears `connecting` and tells the waiters how the attempt went, however it ends (a request
/// dropped mid-connect tells them to try themselves).
struct Connecting {
    key: PoolKey,
    outcome: Result<(), StreamEnd>,
}

impl Drop for Connecting {
    fn drop(&mut self) {
        let waiters = HOSTS.with(|h| {
            let mut hosts = h.borrow_mut();
            let host = hosts.entry(self.key).or_default();
            host.connecting = false;
            let waiters = std::mem::take(&mut host.waiters);
            if host.conns.is_empty() {
                hosts.remove(&self.key);
            }
            waiters
        });
        for w in waiters {
            let _ = w.send(self.outcome);
        }
    }
}

thread_local! {
    /// This shard's HTTP/2 connections (a shard is a thread: nothing here is shared across cores).
    static HOSTS: RefCell<HashMap<PoolKey, Host>> = RefCell::new(HashMap::new());
}

/// Takes `conn` out of the pool: it carries the streams it has and no new one.
fn retire(key: PoolKey, conn: &Rc<Conn>) {
    conn.retired.set(true);
    HOSTS.with(|h| {
        let mut hosts = h.borrow_mut();
        let emptied = hosts.get_mut(&key).is_some_and(|host| {
            host.conns.retain(|c| !Rc::ptr_eq(c, conn));
            host.conns.is_empty() && !host.connecting
        });
        if emptied {
            hosts.remove(&key);
        }
    });
}

/// Retires the HTTP/2 connections to endpoints no cluster has any more (they finish their streams
/// and close), as the idle pool closes its connections to them.
pub(super) fn sweep(keep: impl Fn(&PoolKey) -> bool) {
    let gone: Vec<(PoolKey, Vec<Rc<Conn>>)> = HOSTS.with(|h| {
        let hosts = h.borrow();
        hosts.iter().filter(|(key, _)| !keep(key)).map(|(key, host)| (*key, host.conns.clone())).collect()
    });
    for (key, conns) in gone {
        for c in &conns {
            retire(key, c);
        }
    }
}

/// An open stream's place on its connection, given back when the exchange ends.
struct StreamSlot(Rc<Conn>, Rc<UpstreamHttp2Stats>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.1.streams_active.dec();
        self.0.active.set(self.0.active.get().saturating_sub(1));
        if self.0.active.get() == 0 {
            self.0.idle_since.set(Instant::now());
        }
    }
}

/// Counts a failed connection attempt as Envoy does (`upstream_cx_connect_fail`, and the
/// timeout and destroy counters); the caller counts the request's side.
pub(super) fn count_connect_failure(stats: &ClusterStats, timed_out: bool) {
    stats.upstream_cx_connect_fail.inc();
    stats.upstream_cx_destroy.inc();
    if timed_out {
        stats.upstream_cx_connect_timeout.inc();
        stats.upstream_cx_destroy_local.inc();
    } else {
        stats.upstream_cx_destroy_remote.inc();
    }
}

/// A connection to the target's host with a free stream: a pooled one, else a new one (or the
/// one being opened, when it has room once open).
async fn conn_with_room(key: PoolKey, t: &Rc<Target>) -> Result<Rc<Conn>, StreamEnd> {
    loop {
        let waiting = HOSTS.with(|h| {
            let mut hosts = h.borrow_mut();
            let host = hosts.entry(key).or_default();
            if let Some(c) = host.conns.iter().find(|c| c.has_room(t)) {
                return Ok(c.clone());
            }
            // Those past `max_connection_duration` leave the pool (they finish their streams).
            host.conns.retain(|c| !c.retired.get());
            if !host.connecting {
                host.connecting = true;
                return Err(None);
            }
            let (tx, rx) = futures_channel::oneshot::channel();
            host.waiters.push(tx);
            Err(Some(rx))
        });
        match waiting {
            Ok(c) => return Ok(c),
            Err(Some(rx)) => {
                // The connection being opened failed: so does this request, as in Envoy.
                if let Ok(Err(end)) = rx.await {
                    return Err(end);
                }
            }
            Err(None) => {
                let mut connecting = Connecting { key, outcome: Ok(()) };
                let conn = match establish(key, t).await {
                    Ok(c) => c,
                    Err(end) => {
                        connecting.outcome = Err(end);
                        return Err(end);
                    }
                };
                HOSTS.with(|h| h.borrow_mut().entry(key).or_default().conns.push(conn.clone()));
                return Ok(conn);
            }
        }
    }
}

/// A new HTTP/2 connection: TCP, TLS when the cluster has it, the h2 preface; all within
/// `connect_timeout`. Counted as Envoy counts an HTTP/2 upstream connection.
async fn establish(key: PoolKey, t: &Rc<Target>) -> Result<Rc<Conn>, StreamEnd> {
    t.stats.upstream_cx_total.inc();
    t.stats.upstream_cx_http2_total.inc();
    t.host.cx_total.inc();
    // Envoy makes its `http2.*` stats with the connection's codec, before it connects.
    t.http2.made.set(true);
    let started = Instant::now();
    let (stream, _) = dial(t).await?;
    start(stream, key, t, t.connect_timeout.saturating_sub(started.elapsed())).await
}

/// TCP, then TLS when the cluster has it, within `connect_timeout`: the stream, and whether the
/// host chose `h2` by ALPN. A failure is counted as Envoy counts a failed connect.
async fn dial(t: &Target) -> Result<(TcpStream, bool), StreamEnd> {
    let addr = t.addr;
    let open = async {
        let stream =
            TcpStream::connect_addr(addr).await.map_err(|e| log::debug!("connect to {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        if let Some(k) = &t.keepalive {
            if let Err(e) = socket::set_keepalive(&stream, k) {
                log::warn!("connect to {addr}: cannot set tcp_keepalive: {e}");
            }
        }
        match &t.tls {
            None => Ok((stream, false)),
            Some((tls, ssl)) => tls::upstream_negotiated(stream, tls, ssl, t.connect_timeout, addr).await,
        }
    };
    match monoio::time::timeout(t.connect_timeout, open).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(())) => {
            count_connect_failure(&t.stats, false);
            Err(StreamEnd::ConnectFailed { timed_out: false })
        }
        Err(_) => {
            count_connect_failure(&t.stats, true);
            Err(StreamEnd::ConnectFailed { timed_out: true })
        }
    }
}

/// The h2 preface on a connected stream (within what is left of `connect_timeout`), and the task
/// that runs the connection.
async fn start(
    stream: TcpStream,
    key: PoolKey,
    t: &Rc<Target>,
    limit: Duration,
) -> Result<Rc<Conn>, StreamEnd> {
    let addr = t.addr;
    let handshake = async {
        let io = stream.into_poll_io().map_err(|e| log::debug!("h2 to {addr}: {e}"))?;
        let o = &t.options;
        h2::client::Builder::new()
            .initial_window_size(o.initial_stream_window_size)
            .initial_connection_window_size(o.initial_connection_window_size)
            .header_table_size(o.hpack_table_size)
            .enable_push(false)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(|e| log::debug!("h2 to {addr}: {e}"))
    };
    let (send, connection) = match monoio::time::timeout(limit, handshake).await {
        Ok(Ok(done)) => done,
        failed => {
            let timed_out = failed.is_err();
            count_connect_failure(&t.stats, timed_out);
            return Err(StreamEnd::ConnectFailed { timed_out });
        }
    };
    let conn = Rc::new(Conn {
        send,
        active: Cell::new(0),
        started: Cell::new(0),
        retired: Cell::new(false),
        idle_since: Cell::new(Instant::now()),
        expires: t.max_duration.and_then(|d| Instant::now().checked_add(d)),
    });
    t.stats.upstream_cx_active.inc();
    t.host.cx_active.inc();
    monoio::spawn(drive(connection, Rc::downgrade(&conn), key, t.clone()));
    Ok(conn)
}

/// Runs a connection until the peer or h2 ends it, or it idles past `idle_timeout` with no
/// stream; then takes it out of the pool and counts its end.
async fn drive(
    connection: h2::client::Connection<monoio::net::tcp::stream_poll::TcpStreamPoll, Bytes>,
    conn: Weak<Conn>,
    key: PoolKey,
    t: Rc<Target>,
) {
    let idle = t.idle;
    let watch = conn.clone();
    let idled_out = async move {
        loop {
            monoio::time::sleep(idle).await;
            match watch.upgrade() {
                Some(c) if c.active.get() == 0 && c.idle_since.get().elapsed() >= idle => return true,
                Some(_) => {}
                // Retired and its last stream done: h2 is closing it.
                None => std::future::pending::<()>().await,
            }
        }
    };
    // Whether skiff ended it (idle, or retired by it with its streams done) or the peer did.
    let local = monoio::select! {
        r = connection => {
            if let Err(e) = &r {
                log::debug!("h2 connection to {}: {e}", t.addr);
            }
            conn.upgrade().is_none()
        },
        _ = idled_out => {
            t.stats.upstream_cx_idle_timeout.inc();
            true
        },
    };
    if let Some(c) = conn.upgrade() {
        retire(key, &c);
    }
    let s = &t.stats;
    s.upstream_cx_active.dec();
    t.host.cx_active.dec();
    s.upstream_cx_destroy.inc();
    if local {
        s.upstream_cx_destroy_local.inc();
    } else {
        s.upstream_cx_destroy_remote.inc();
    }
}

/// A stream on a connection to the target's host: a ready `SendRequest` and the stream's slot.
async fn open_stream(key: PoolKey, t: &Rc<Target>) -> Result<(SendRequest<Bytes>, StreamSlot), StreamEnd> {
    // A pooled connection may turn out gone (GOAWAY, closed): then once more on another.
    for _ in 0..2 {
        let conn = conn_with_room(key, t).await?;
        conn.active.set(conn.active.get() + 1);
        conn.started.set(conn.started.get() + 1);
        if t.max_requests.is_some_and(|m| conn.started.get() >= m) {
            retire(key, &conn);
        }
        t.http2.streams_active.inc();
        let slot = StreamSlot(conn.clone(), t.http2.clone());
        match conn.send.clone().ready().await {
            Ok(send) => return Ok((send, slot)),
            Err(e) => {
                log::debug!("h2 connection to {} takes no stream: {e}", t.addr);
                retire(key, &conn);
            }
        }
    }
    Err(StreamEnd::ConnectionTermination)
}

impl Target {
    fn of(
        shard: &ShardStats,
        key: PoolKey,
        snap: &ClusterSnap,
        options: &Http2Options,
        (stats, host): (&Rc<ClusterStats>, &Rc<HostStats>),
    ) -> Rc<Target> {
        Rc::new(Target {
            addr: key.addr,
            connect_timeout: snap.connect_timeout,
            tls: snap.tls.as_ref().map(|tls| (tls.clone(), tls::cluster_ssl(shard, &snap.name))),
            keepalive: snap.connection.tcp_keepalive,
            options: *options,
            max_requests: snap.max_requests_per_connection,
            idle: Duration::from_secs(snap.connection.idle_secs),
            max_duration: snap.connection.max_duration,
            stats: stats.clone(),
            host: host.clone(),
            http2: shard.cluster_http2(&snap.name),
        })
    }
}

/// The HTTP/1.1 path's connection to an HTTP/2 host (see the module doc). Err: no connection to
/// the host could be made (`ConnectFailed`, counted), or the socket pair failed.
pub(super) async fn connect(
    shard: &ShardStats,
    key: PoolKey,
    snap: &ClusterSnap,
    options: &Http2Options,
    accounts: (&Rc<ClusterStats>, &Rc<HostStats>),
    slot: ConnSlot,
) -> Result<Upstream, StreamEnd> {
    if let Some(board) = &snap.board {
        board.note_traffic();
    }
    let t = Target::of(shard, key, snap, options, accounts);
    conn_with_room(key, &t).await?;
    bridged(key, snap, t, slot)
}

/// `auto_config` over TLS: HTTP/2 when the host chose `h2` by ALPN (or is known to, having a
/// connection here already), else an ordinary HTTP/1.1 connection on the TLS stream.
pub(super) async fn connect_auto(
    shard: &ShardStats,
    key: PoolKey,
    snap: &ClusterSnap,
    options: &Http2Options,
    (stats, host): (&Rc<ClusterStats>, &Rc<HostStats>),
    slot: ConnSlot,
) -> Result<Upstream, StreamEnd> {
    if HOSTS.with(|h| h.borrow().contains_key(&key)) {
        return connect(shard, key, snap, options, (stats, host), slot).await;
    }
    if let Some(board) = &snap.board {
        board.note_traffic();
    }
    let t = Target::of(shard, key, snap, options, (stats, host));
    stats.upstream_cx_total.inc();
    host.cx_total.inc();
    let started = Instant::now();
    let (stream, h2) = dial(&t).await?;
    if h2 {
        stats.upstream_cx_http2_total.inc();
        t.http2.made.set(true);
        let conn = start(stream, key, &t, t.connect_timeout.saturating_sub(started.elapsed())).await?;
        HOSTS.with(|h| h.borrow_mut().entry(key).or_default().conns.push(conn));
        return bridged(key, snap, t, slot);
    }
    stats.upstream_cx_http1_total.inc();
    let reader = socket::second_handle(&stream).map_err(|e| {
        log::warn!("connect to {}: cannot duplicate the socket: {e}", key.addr);
        StreamEnd::ConnectionTermination
    })?;
    let accounts = Accounts { stats: stats.clone(), host: host.clone(), slot };
    Ok(Upstream::new((stream, reader), key, accounts, READ_CHUNK, &snap.connection))
}

/// A socket pair whose far end a `bridge` task serves on the target's connections; the near end
/// is the path's `Upstream`.
fn bridged(key: PoolKey, snap: &ClusterSnap, t: Rc<Target>, slot: ConnSlot) -> Result<Upstream, StreamEnd> {
    let pair = || -> std::io::Result<(TcpStream, TcpStream, TcpStream)> {
        let (ours, theirs) = socket::pair()?;
        let reader = socket::second_handle(&theirs)?;
        Ok((ours, theirs, reader))
    };
    let (ours, theirs, reader) = pair().map_err(|e| {
        log::warn!("h2 bridge to {}: {e}", key.addr);
        StreamEnd::ConnectionTermination
    })?;
    let note = Rc::new(BridgeNote::default());
    let scheme = if snap.tls.is_some() { "https" } else { "http" };
    let accounts = Accounts { stats: t.stats.clone(), host: t.host.clone(), slot };
    monoio::spawn(bridge(ours, key, t, note.clone(), scheme));
    Ok(Upstream::bridged((theirs, reader), key, accounts, READ_CHUNK, &snap.connection, note))
}

/// How the path framed a request's body.
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// A request head as the path wrote it, ready for h2.
struct Head {
    request: http::Request<()>,
    framing: Framing,
    head_method: bool,
}

/// Serves the path's requests on the pair, one at a time, until the path closes its end or an
/// exchange ends without a clean response (then the pair closes, and `note` says why).
async fn bridge(
    mut pair: TcpStream,
    key: PoolKey,
    t: Rc<Target>,
    note: Rc<BridgeNote>,
    scheme: &'static str,
) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        note.ended.set(None);
        let head = match read_head(&mut pair, &mut buf, scheme, t.addr).await {
            Some(h) => h,
            None => return,
        };
        match exchange(&mut pair, &mut buf, head, key, &t).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(end) => {
                note.ended.set(Some(end));
                return;
            }
        }
    }
}

/// Reads more from the pair into `buf`; false at the end of stream or on an error.
async fn fill(pair: &mut TcpStream, buf: &mut BytesMut) -> bool {
    buf.reserve(READ_CHUNK);
    let len = buf.len();
    let (res, slice) = pair.read(std::mem::take(buf).slice_mut(len..)).await;
    *buf = slice.into_inner();
    matches!(res, Ok(n) if n > 0)
}

/// Headers HTTP/2 forbids (RFC 9113 §8.2.2), and `host`, which becomes `:authority`.
fn connection_specific(name: &str) -> bool {
    matches!(
        name,
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "upgrade" | "host"
    )
}

async fn read_head(pair: &mut TcpStream, buf: &mut BytesMut, scheme: &str, addr: SocketAddr) -> Option<Head> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; crate::http::MAX_HEADERS * 2];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(len)) => {
                let head = h2_head(&req, scheme, addr);
                bytes::Buf::advance(buf, len);
                return head;
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST_HEAD => {}
            _ => return None,
        }
        if !fill(pair, buf).await {
            return None;
        }
    }
}

/// The HTTP/2 request for an HTTP/1.1 head: `Host` as `:authority`, connection-specific headers
/// (and those `Connection` names) dropped, `te` only as `trailers`.
fn h2_head(req: &httparse::Request<'_, '_>, scheme: &str, addr: SocketAddr) -> Option<Head> {
    let method = http::Method::from_bytes(req.method?.as_bytes()).ok()?;
    let mut authority = None;
    let mut framing = Framing::None;
    let mut named: Vec<String> = Vec::new();
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("host") {
            authority = std::str::from_utf8(h.value).ok();
        } else if h.name.eq_ignore_ascii_case("connection") {
            let value = std::str::from_utf8(h.value).unwrap_or("");
            named.extend(value.split(',').map(|v| v.trim().to_ascii_lowercase()));
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            framing = Framing::Chunked;
        } else if h.name.eq_ignore_ascii_case("content-length") && !matches!(framing, Framing::Chunked) {
            framing = Framing::Length(std::str::from_utf8(h.value).ok()?.trim().parse().ok()?);
        }
    }
    let fallback = addr.to_string();
    let uri = format!("{scheme}://{}{}", authority.unwrap_or(&fallback), req.path?);
    let mut request = http::Request::builder().method(method).uri(uri).body(()).ok()?;
    let out = request.headers_mut();
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let lower = name.as_str();
        if connection_specific(lower) || named.iter().any(|n| n == lower) {
            continue;
        }
        if lower == "te" && !h.value.eq_ignore_ascii_case(b"trailers") {
            continue;
        }
        if lower == "content-length" && matches!(framing, Framing::Chunked) {
            continue;
        }
        out.append(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    let head_method = request.method() == http::Method::HEAD;
    Some(Head { request, framing, head_method })
}

/// The h2 error that ended a stream, as the path hears it (a reset received is counted).
fn ended_by(e: &h2::Error, http2: &UpstreamHttp2Stats) -> StreamEnd {
    if e.is_reset() && e.is_remote() {
        http2.rx_reset.inc();
    }
    match e.reason() {
        Some(h2::Reason::REFUSED_STREAM) if e.is_reset() && e.is_remote() => StreamEnd::Refused,
        Some(_) if e.is_reset() && e.is_remote() => StreamEnd::Reset,
        _ => StreamEnd::ConnectionTermination,
    }
}

/// One request as an HTTP/2 stream and its response back as HTTP/1.1. Ok(true): done cleanly,
/// the pair serves the next request; Ok(false): close the pair (the response broke after it
/// started, or the path left); Err: the stream ended before a response head.
async fn exchange(
    pair: &mut TcpStream,
    buf: &mut BytesMut,
    head: Head,
    key: PoolKey,
    t: &Rc<Target>,
) -> Result<bool, StreamEnd> {
    let (mut send, _slot) = open_stream(key, t).await?;
    let no_body = matches!(head.framing, Framing::None | Framing::Length(0));
    let (response, mut tx) = send.send_request(head.request, no_body).map_err(|e| ended_by(&e, &t.http2))?;
    let mut response = std::pin::pin!(response);
    if !no_body {
        // Full duplex, as Envoy: the response (head and body) goes back to the path while the body
        // still goes up, so an interactive stream (bidi gRPC) moves both ways. The response is
        // written through a second handle on the pair while the body is read through the first.
        let Ok(mut writer) = socket::second_handle(pair) else {
            tx.send_reset(h2::Reason::INTERNAL_ERROR);
            return Ok(false);
        };
        let head_method = head.head_method;
        let answer = async {
            let response = (&mut response).await.map_err(|e| ended_by(&e, &t.http2))?;
            relay_response(&mut writer, response, head_method, &t.http2).await
        };
        let mut answer = std::pin::pin!(answer);
        let upload = send_body(pair, buf, &head.framing, &mut tx);
        let sent = monoio::select! {
            sent = upload => sent,
            // The response ended before the body did: the upload is given up and the pair
            // closed (the rest of the body is unread), as Envoy resets the stream.
            done = &mut answer => {
                tx.send_reset(h2::Reason::CANCEL);
                t.http2.tx_reset.inc();
                return done.map(|_| false);
            }
        };
        match sent {
            // The host reset or answered early: its response (or reset) is what the path hears.
            Sent::Whole | Sent::StreamGone => {}
            Sent::PathGone => {
                tx.send_reset(h2::Reason::CANCEL);
                t.http2.tx_reset.inc();
                return Ok(false);
            }
        }
        // The path may give up first (a route or per-try timeout drops its end).
        return monoio::select! {
            done = &mut answer => done,
            _ = path_left(pair) => {
                tx.send_reset(h2::Reason::CANCEL);
                t.http2.tx_reset.inc();
                Ok(false)
            }
        };
    }
    // The path may give up first (a route or per-try timeout drops its end): then the stream is
    // reset at once, as Envoy resets it, not left to finish for nobody.
    let response = monoio::select! {
        r = &mut response => r.map_err(|e| ended_by(&e, &t.http2))?,
        _ = path_left(pair) => {
            tx.send_reset(h2::Reason::CANCEL);
            t.http2.tx_reset.inc();
            return Ok(false);
        }
    };
    relay_response(pair, response, head.head_method, &t.http2).await
}

/// How sending a request body ended.
enum Sent {
    Whole,
    /// The stream was reset or closed by the host.
    StreamGone,
    /// The path closed its end, or wrote a body that is not valid chunked framing.
    PathGone,
}

/// Resolves when the path closes its end of the pair while a response is awaited. Bytes it still
/// writes then (the rest of an upload the host answered early) are left for later reads.
async fn path_left(pair: &TcpStream) {
    loop {
        if pair.readable(false).await.is_err() {
            return;
        }
        match socket::peek(pair) {
            socket::Pending::Closed => return,
            socket::Pending::Data => std::future::pending::<()>().await,
            socket::Pending::Nothing => {}
        }
    }
}

/// Sends `data` on the stream as its window allows. False: the stream is gone.
async fn send_data(tx: &mut h2::SendStream<Bytes>, mut data: Bytes, end: bool) -> bool {
    if data.is_empty() {
        return tx.send_data(data, end).is_ok();
    }
    while !data.is_empty() {
        tx.reserve_capacity(data.len());
        let granted = match std::future::poll_fn(|cx| tx.poll_capacity(cx)).await {
            Some(Ok(n)) => n,
            _ => return false,
        };
        let part = data.split_to(granted.min(data.len()));
        if tx.send_data(part, end && data.is_empty()).is_err() {
            return false;
        }
    }
    true
}

/// The request body from the pair to the stream: `content-length` bytes, or a chunked body
/// whose trailers go as HTTP/2 trailers.
async fn send_body(
    pair: &mut TcpStream,
    buf: &mut BytesMut,
    framing: &Framing,
    tx: &mut h2::SendStream<Bytes>,
) -> Sent {
    let sent = |ok: bool| if ok { Sent::Whole } else { Sent::StreamGone };
    match framing {
        Framing::None => Sent::Whole,
        Framing::Length(n) => {
            let mut left = *n;
            loop {
                if buf.is_empty() && !fill(pair, buf).await {
                    return Sent::PathGone;
                }
                let take = (buf.len() as u64).min(left) as usize;
                left -= take as u64;
                let part = buf.split_to(take).freeze();
                if !send_data(tx, part, left == 0).await {
                    return Sent::StreamGone;
                }
                if left == 0 {
                    return Sent::Whole;
                }
            }
        }
        Framing::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            // What followed the last payload byte: the last chunk's line and the trailers.
            let mut tail: Vec<u8> = Vec::new();
            loop {
                if buf.is_empty() && !fill(pair, buf).await {
                    return Sent::PathGone;
                }
                let Ok(step) = decoder.advance(buf) else { return Sent::PathGone };
                let consumed = buf.split_to(step.consumed);
                if !step.data.is_empty() {
                    tail.clear();
                    let data = consumed.clone().freeze().slice(step.data.clone());
                    if !send_data(tx, data, false).await {
                        return Sent::StreamGone;
                    }
                    tail.extend_from_slice(&consumed[step.data.end..]);
                } else {
                    tail.extend_from_slice(&consumed);
                }
                if step.done {
                    return match request_trailers(&tail) {
                        Some(map) if !map.is_empty() => sent(tx.send_trailers(map).is_ok()),
                        _ => sent(tx.send_data(Bytes::new(), true).is_ok()),
                    };
                }
                if step.consumed == 0 && !fill(pair, buf).await {
                    return Sent::PathGone;
                }
            }
        }
    }
}

/// The trailer fields after a chunked body's last chunk (`tail`: from the end of the last payload
/// to the end of the body).
fn request_trailers(tail: &[u8]) -> Option<http::HeaderMap> {
    // Past the CRLF that closed the last data chunk (if any) and the `0[;ext]` line.
    let start = tail.iter().position(|b| *b == b'0')?;
    let line_end = tail[start..].windows(2).position(|w| w == b"\r\n")? + start + 2;
    let mut fields = [httparse::EMPTY_HEADER; 32];
    let Ok(httparse::Status::Complete((_, parsed))) = httparse::parse_headers(&tail[line_end..], &mut fields)
    else {
        return None;
    };
    let mut map = http::HeaderMap::new();
    for f in parsed {
        let name = HeaderName::from_bytes(f.name.as_bytes()).ok()?;
        if connection_specific(name.as_str()) || name == "te" || name == "content-length" {
            continue;
        }
        map.append(name, HeaderValue::from_bytes(f.value).ok()?);
    }
    Some(map)
}

async fn write(pair: &mut TcpStream, bytes: Vec<u8>) -> bool {
    let (res, _) = pair.write_all(bytes).await;
    res.is_ok()
}

/// The HTTP/2 response as HTTP/1.1 on the pair. Ok(true) when it was written whole.
async fn relay_response(
    pair: &mut TcpStream,
    response: http::Response<h2::RecvStream>,
    head_method: bool,
    http2: &UpstreamHttp2Stats,
) -> Result<bool, StreamEnd> {
    let (parts, mut body) = response.into_parts();
    // The path left mid-response: dropping the stream resets it (CANCEL).
    let left = |body: &h2::RecvStream| {
        if !body.is_end_stream() {
            http2.tx_reset.inc();
        }
        Ok(false)
    };
    let broke = |e: h2::Error| {
        ended_by(&e, http2);
        Ok(false)
    };
    let status = parts.status.as_u16();
    let bodiless = head_method || status < 200 || status == 204 || status == 304;
    let length = parts.headers.contains_key(http::header::CONTENT_LENGTH);
    let ended = body.is_end_stream();
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if connection_specific(name.as_str()) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let chunked = !bodiless && !length && !ended;
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    } else if !bodiless && !length {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !write(pair, out).await {
        return left(&body);
    }
    // From here the response has started: a broken stream closes the pair mid-body.
    while let Some(data) = body.data().await {
        let data = match data {
            Ok(d) => d,
            Err(e) => return broke(e),
        };
        let _ = body.flow_control().release_capacity(data.len());
        if data.is_empty() || bodiless {
            continue;
        }
        let ok = if chunked {
            let mut frame = Vec::with_capacity(data.len() + 16);
            frame.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            frame.extend_from_slice(&data);
            frame.extend_from_slice(b"\r\n");
            write(pair, frame).await
        } else {
            let (res, _) = pair.write_all(data).await;
            res.is_ok()
        };
        if !ok {
            return left(&body);
        }
    }
    let trailers = match body.trailers().await {
        Ok(t) => t,
        Err(e) => return broke(e),
    };

    if chunked {
        let mut last = b"0\r\n".to_vec();
        for (name, value) in trailers.iter().flatten() {
            last.extend_from_slice(name.as_str().as_bytes());
            last.extend_from_slice(b": ");
            last.extend_from_slice(value.as_bytes());
            last.extend_from_slice(b"\r\n");
        }
        last.extend_from_slice(b"\r\n");
        return Ok(write(pair, last).await);
    }
    Ok(true)
}
