//! HTTP/2 from clients, as a *bridge* (the TLS bridge's idea, one level up): the `h2` crate speaks
//! HTTP/2 on the client's connection, and each stream is written as an HTTP/1.1 request onto a
//! local socket pair whose other end is an ordinary HTTP/1 connection (`conn`, told by
//! `Downstream::http2` that its requests are HTTP/2 streams). The response read back is parsed and
//! sent as HEADERS/DATA/trailers on the stream. So every feature of the HTTP/1 path (routing,
//! filters, retries, timeouts, access logs, stats) works unchanged for HTTP/2, and the HTTP/1 hot
//! path pays nothing for HTTP/2 existing; HTTP/2 pays two local socket copies per byte.
//!
//! Owns: the HTTP/2 connection task (SETTINGS from `http2_protocol_options`, GOAWAY on drain and
//! at `max_connection_duration`/`max_requests_per_connection`, `idle_timeout`), the translation
//! of a stream to HTTP/1.1 and back, a free list of bridge pairs per connection (keep-alive HTTP/1
//! connections), the `downstream_cx_http2_*` gauge and counter. Must not touch routing or
//! upstreams: whatever the request becomes is the HTTP/1 path's business.

use super::downstream::Downstream;
use super::signal::Signal;
use super::socket::{self, would_block, Fd, Pending};
use super::state::Shard;
use crate::http::{self, BodyKind, ChunkedDecoder, MAX_HEADERS};
use crate::peer::TlsPeer;
use crate::snapshot::ChainKey;
use crate::stats::HttpStats;
use ::http as http_types;
use bytes::{Buf, Bytes, BytesMut};
use futures_util::future::{select, Either};
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use monoio::io::poll_io::{AsyncRead, AsyncWrite, ReadBuf};
use monoio::io::IntoPollIo;
use monoio::net::TcpStream;
use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The client connection preface of RFC 9113 §3.4 (prior knowledge, or after ALPN `h2`).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether a connection's first bytes are HTTP/2's preface: None while they are a strict prefix of
/// it (read more). `buf` is never empty here.
pub(super) fn preface(buf: &[u8]) -> Option<bool> {
    let n = buf.len().min(PREFACE.len());
    if buf[..n] != PREFACE[..n] {
        Some(false)
    } else if n == PREFACE.len() {
        Some(true)
    } else {
        None
    }
}

/// How `h2` starts the HTTP/1 side of a new bridge pair: `conn`'s, passed in so that this module
/// does not depend on the module that hands connections to it.
pub(super) type SpawnHttp1 = fn(Rc<Shard>, ChainKey, Downstream);

/// Bridge pairs an h2 connection keeps for its next streams; more concurrent streams make pairs
/// that close after their exchange.
const FREE_PAIRS: usize = 16;

/// The longest response head the HTTP/1 side writes (skiff's upstream head limit, plus what the
/// proxy adds).
const MAX_RESPONSE_HEAD: usize = 96 * 1024;

/// Envoy's rapid-reset rule (`overload.premature_reset_*` defaults): a stream the client resets
/// within this of its start is premature; once `PREMATURE_CHECK_AFTER` streams have ended, a
/// connection half of whose streams were is closed (sooner, when that many already were).
const PREMATURE: Duration = Duration::from_secs(1);
const PREMATURE_CHECK_AFTER: u64 = 500;

fn too_many_premature_resets(ended: u64, premature: u64) -> bool {
    let base = ended.max(PREMATURE_CHECK_AFTER);
    premature > 0 && premature * 2 >= base
}

/// How long a connection told to go away may stay once its streams are done.
const GOAWAY_GRACE: Duration = Duration::from_secs(5);

/// Bytes read from a bridge pair at a time.
const READ_CHUNK: usize = 64 * 1024;

/// Response headers HTTP/2 forbids (RFC 9113 §8.2.2): dropped from what the HTTP/1 side wrote.
const CONNECTION_SPECIFIC: &[&str] =
    &["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"];

/// What every stream of one HTTP/2 connection shares.
struct Conn {
    shard: Rc<Shard>,
    key: ChainKey,
    peer: SocketAddr,
    local: SocketAddr,
    tls: Option<Box<TlsPeer>>,
    /// The client connection's id: every stream's `%CONNECTION_ID%`, whichever pair carries it.
    connection_id: u64,
    spawn: SpawnHttp1,
    /// Idle bridge pairs (their HTTP/1 side waits for its next request).
    free: RefCell<Vec<TcpStream>>,
    /// Streams in flight (the connection's idle timeout runs only at zero).
    active: Cell<usize>,
    /// When the last stream ended (or the connection began): the idle timeout counts from it.
    quiet_since: Cell<Instant>,
    /// Streams ended, and those of them the client reset within `PREMATURE` of their start.
    ended: Cell<u64>,
    premature: Cell<u64>,
    /// Fired when too many streams were reset prematurely: the connection is closed.
    abusive: Signal,
    /// `stream_idle_timeout`: how long a response may wait for the client's flow-control window.
    stream_idle: Option<Duration>,
}

/// Keeps `downstream_cx_http2_active` counted while the HTTP/2 connection lives.
struct Counted(Rc<HttpStats>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.downstream_cx_http2_active.dec();
    }
}

/// Serves `d` (its socket, and what was read of it already) as an HTTP/2 connection on filter
/// chain `key` until it closes.
pub(super) async fn serve(shard: Rc<Shard>, key: ChainKey, d: Downstream, spawn: SpawnHttp1) {
    let generation = shard.generation();
    let Some(i) = generation.snap.listener_index(key) else { return };
    let hcm = &generation.snap.listeners[i].hcm;
    let stats = generation.http_stats[i].clone();
    stats.downstream_cx_http2_total.inc();
    stats.downstream_cx_http2_active.inc();
    let _counted = Counted(stats.clone());
    let o = hcm.http2;
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(o.max_concurrent_streams)
        .initial_window_size(o.initial_stream_window_size)
        .initial_connection_window_size(o.initial_connection_window_size)
        .header_table_size(o.hpack_table_size)
        // `max_request_headers_kb` bounds the decoded header list, so a CONTINUATION flood or an
        // HPACK bomb ends in a refusal, not in memory.
        .max_header_list_size(u32::try_from(hcm.max_head_len).unwrap_or(u32::MAX));
    let (idle_timeout, handshake_limit, max_requests, lifetime) = (
        hcm.idle_timeout,
        hcm.request_headers_timeout,
        hcm.max_requests_per_connection,
        hcm.max_connection_duration,
    );
    let stream_idle = hcm.stream_limits.idle;
    drop(generation);
    let Downstream { stream, buf, peer, local, tls, connection_id, .. } = d;
    let Ok(io) = stream.into_poll_io() else { return };
    let io = Prefixed { prefix: buf.freeze(), io };
    let mut conn = match monoio::time::timeout(handshake_limit, builder.handshake::<_, Bytes>(io)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            log::debug!("h2 handshake from {peer}: {e}");
            stats.downstream_cx_protocol_error.inc();
            return;
        }
        Err(_) => return,
    };
    let c = Rc::new(Conn {
        shard: shard.clone(),
        key,
        peer,
        local,
        tls,
        connection_id,
        spawn,
        free: RefCell::new(Vec::new()),
        active: Cell::new(0),
        quiet_since: Cell::new(Instant::now()),
        ended: Cell::new(0),
        premature: Cell::new(0),
        abusive: Signal::default(),
        stream_idle,
    });
    let mut closing = shard.draining();
    if closing {
        conn.graceful_shutdown();
    }
    let mut streams: u32 = 0;
    let mut lifetime = pin!(async move {
        match lifetime {
            Some(limit) => monoio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    });
    loop {
        // Re-armed at every event: with streams in flight it only wakes the loop to look again.
        let idle_wait = match c.active.get() {
            0 => idle_timeout.saturating_sub(c.quiet_since.get().elapsed()),
            _ => idle_timeout,
        };
        let next = monoio::select! {
            next = poll_fn(|cx| conn.poll_accept(cx)) => next,
            _ = c.abusive.wait() => {
                stats.downstream_rq_too_many_premature_resets.inc();
                log::debug!("closing the h2 connection from {peer}: too many premature resets");
                break;
            }
            _ = shard.drain.wait(), if !closing => {
                closing = true;
                conn.graceful_shutdown();
                continue;
            }
            _ = &mut lifetime, if !closing => {
                stats.downstream_cx_max_duration_reached.inc();
                closing = true;
                conn.graceful_shutdown();
                continue;
            }
            // The graceful GOAWAY's second half waits for the client's PING answer: a client that
            // never answers is cut off once its streams are done (Envoy's drain_timeout default).
            _ = monoio::time::sleep(GOAWAY_GRACE), if closing => {
                if c.active.get() == 0 {
                    conn.abrupt_shutdown(Reason::NO_ERROR);
                }
                continue;
            }
            _ = monoio::time::sleep(idle_wait), if !closing => {
                if c.active.get() == 0 && c.quiet_since.get().elapsed() >= idle_timeout {
                    stats.downstream_cx_idle_timeout.inc();
                    closing = true;
                    conn.graceful_shutdown();
                }
                continue;
            }
        };
        match next {
            Some(Ok((req, mut respond))) => {
                // A listener removed by a reload takes no new streams on its old connections.
                if shard.generation().snap.listener_index(key).is_none() {
                    respond.send_reset(Reason::REFUSED_STREAM);
                    shard.stats.http2.tx_reset.inc();
                    if !closing {
                        closing = true;
                        conn.graceful_shutdown();
                    }
                    continue;
                }
                streams = streams.saturating_add(1);
                if !closing && max_requests.is_some_and(|max| streams >= max) {
                    stats.downstream_cx_max_requests_reached.inc();
                    closing = true;
                    conn.graceful_shutdown();
                }
                c.active.set(c.active.get() + 1);
                shard.stats.http2.streams_active.inc();
                monoio::spawn(exchange(c.clone(), req, respond));
            }
            Some(Err(e)) => {
                log::debug!("h2 connection from {peer}: {e}");
                if e.is_go_away() || e.reason().is_some_and(|r| r != Reason::NO_ERROR) {
                    stats.downstream_cx_protocol_error.inc();
                }
                break;
            }
            None => break,
        }
    }
}

/// Why a stream's exchange ended without a clean end.
#[derive(Debug)]
enum Failure {
    /// The bridge pair failed or closed early.
    Pair(std::io::Error),
    /// The HTTP/1 side wrote a response skiff cannot read (it never should).
    BadResponse(&'static str),
    /// The client reset the stream.
    Reset(Reason),
    /// The client's connection failed (or the codec reset the stream).
    Client(h2::Error),
    /// The client's flow-control window stayed shut for `stream_idle_timeout`.
    Stalled,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Pair(e) => write!(f, "bridge pair: {e}"),
            Failure::BadResponse(why) => write!(f, "response from the HTTP/1 side: {why}"),
            Failure::Reset(r) => write!(f, "reset by the client: {r}"),
            Failure::Client(e) => write!(f, "client: {e}"),
            Failure::Stalled => f.write_str("the client's window stayed shut for stream_idle_timeout"),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Pair(e)
    }
}

impl From<h2::Error> for Failure {
    fn from(e: h2::Error) -> Self {
        match e.reason() {
            Some(reason) if e.is_reset() && e.is_remote() => Failure::Reset(reason),
            _ => Failure::Client(e),
        }
    }
}

/// One stream: its request written on a bridge pair, the response read back and sent.
async fn exchange(c: Rc<Conn>, req: http_types::Request<RecvStream>, mut respond: SendResponse<Bytes>) {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let mut head = Vec::with_capacity(512);
    let chunked = request_head(&parts, body.is_end_stream(), &mut head);
    let head_request = parts.method == http_types::Method::HEAD;
    let outcome = match c.pair() {
        Ok(pair) => {
            let result = relay(&c, &pair, (head, body, chunked), head_request, &mut respond).await;
            if let Ok(true) = result {
                let mut free = c.free.borrow_mut();
                if free.len() < FREE_PAIRS {
                    free.push(pair);
                }
            }
            result.map(|_| ())
        }
        Err(e) => Err(Failure::Pair(e)),
    };
    c.active.set(c.active.get().saturating_sub(1));
    c.ended.set(c.ended.get() + 1);
    if too_many_premature_resets(c.ended.get(), c.premature.get()) {
        c.abusive.fire();
    }
    if c.active.get() == 0 {
        c.quiet_since.set(Instant::now());
    }
    let http2 = &c.shard.stats.http2;
    http2.streams_active.dec();
    match outcome {
        Ok(()) => {}
        // The client is gone or reset the stream: nothing to tell it.
        Err(Failure::Reset(reason)) => {
            log::debug!("h2 stream from {}: reset by the client: {reason}", c.peer);
            http2.rx_reset.inc();
            if started.elapsed() < PREMATURE {
                c.premature.set(c.premature.get() + 1);
            }
        }
        Err(Failure::Client(e)) => log::debug!("h2 stream from {}: {e}", c.peer),
        Err(e) => {
            log::debug!("h2 stream from {}: {e}", c.peer);
            let reason = if matches!(e, Failure::Stalled) { Reason::CANCEL } else { Reason::INTERNAL_ERROR };
            respond.send_reset(reason);
            http2.tx_reset.inc();
        }
    }
}

impl Conn {
    /// An idle bridge pair, or a new one whose HTTP/1 side starts now.
    fn pair(&self) -> std::io::Result<TcpStream> {
        while let Some(pair) = self.free.borrow_mut().pop() {
            // Its HTTP/1 side closes idle connections on a drain or at `idle_timeout`.
            if socket::peek(&pair) == Pending::Nothing {
                return Ok(pair);
            }
        }
        let (ours, theirs) = socket::pair()?;
        let mut d = Downstream::new(theirs, self.peer, self.local, self.connection_id);
        d.tls = self.tls.clone();
        d.http2 = true;
        (self.spawn)(self.shard.clone(), self.key, d);
        Ok(ours)
    }
}

/// Writes the request and relays the response. Ok(true): the exchange ended cleanly and the pair
/// can carry the next stream.
async fn relay(
    c: &Conn,
    pair: &TcpStream,
    (head, body, chunked): (Vec<u8>, RecvStream, bool),
    head_request: bool,
    respond: &mut SendResponse<Bytes>,
) -> Result<bool, Failure> {
    let send = pin!(send_request(c, pair, head, body, chunked));
    let recv = pin!(relay_response(c, pair, head_request, respond));
    match select(send, recv).await {
        Either::Left((Ok(()), recv)) => recv.await,
        // The HTTP/1 side stopped reading the upload: it answered early (a local reply to a
        // request still streaming, e.g. no upstream for a bidi call) and closed. Its answer may
        // already be on the pair: relay it rather than reset the stream.
        Either::Left((Err(Failure::Pair(e)), recv)) => {
            recv.await.map(|_| false).map_err(|_| Failure::Pair(e))
        }
        // The client reset the stream while sending: the HTTP/1 side sees its connection close.
        Either::Left((Err(e), _)) => Err(e),
        // Answered before the request was whole (a 413, a local reply): the HTTP/1 side closes.
        Either::Right((done, _)) => done.map(|_| false),
    }
}

/// The HTTP/1.1 head of an HTTP/2 request, as Envoy's HTTP/1 codec writes one: `:authority` as
/// `Host`, cookies joined with `; `, and a body without `content-length` sent chunked (but a
/// CONNECT's). Returns
/// whether the body is chunked. The h2 codec already refused connection-specific headers and a
/// `te` other than `trailers`, and `http` types hold no CR, LF or NUL.
fn request_head(parts: &http_types::request::Parts, end_stream: bool, out: &mut Vec<u8>) -> bool {
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let target = if parts.method == http_types::Method::CONNECT {
        parts.uri.authority().map_or("", |a| a.as_str())
    } else if parts.method == http_types::Method::OPTIONS && target == "/" && parts.uri.path().is_empty() {
        "*"
    } else {
        target
    };
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let authority = parts.uri.authority();
    if let Some(a) = authority {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(a.as_str().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let mut has_length = false;
    let mut cookies: Vec<&[u8]> = Vec::new();
    for (name, value) in &parts.headers {
        let n = name.as_str();
        if n == "host" && authority.is_some() || CONNECTION_SPECIFIC.contains(&n) {
            continue;
        }
        if n == "cookie" {
            cookies.push(value.as_bytes());
            continue;
        }
        has_length |= n == "content-length";
        header_line(out, n, value.as_bytes());
    }
    if !cookies.is_empty() {
        header_line(out, "cookie", &cookies.join(&b"; "[..]));
    }
    // A CONNECT's DATA are the tunnel's bytes, written to the pair as they come (the HTTP/1 side
    // relays them raw once it answered 200, and its answer comes back close-delimited).
    let chunked = !end_stream && !has_length && parts.method != http_types::Method::CONNECT;
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
    chunked
}

fn header_line(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes the head, then the body as it arrives (releasing flow control only as the pair takes
/// it), then chunked trailers.
async fn send_request(
    c: &Conn,
    pair: &TcpStream,
    head: Vec<u8>,
    mut body: RecvStream,
    chunked: bool,
) -> Result<(), Failure> {
    write_all(pair, &head).await?;
    if body.is_end_stream() {
        return Ok(());
    }
    while let Some(data) = poll_fn(|cx| body.poll_data(cx)).await {
        let data = data?;
        let n = data.len();
        if n > 0 {
            if chunked {
                write_all(pair, format!("{n:x}\r\n").as_bytes()).await?;
                write_all(pair, &data).await?;
                write_all(pair, b"\r\n").await?;
            } else {
                write_all(pair, &data).await?;
            }
        }
        let _ = body.flow_control().release_capacity(n);
    }
    let trailers = poll_fn(|cx| body.poll_trailers(cx)).await?;
    if trailers.is_some() {
        c.shard.stats.http2.trailers.inc();
    }
    if chunked {
        let mut end = b"0\r\n".to_vec();
        for (name, value) in trailers.iter().flatten() {
            header_line(&mut end, name.as_str(), value.as_bytes());
        }
        end.extend_from_slice(b"\r\n");
        write_all(pair, &end).await?;
    }
    Ok(())
}

/// Reads the HTTP/1 side's response and sends it on the stream. Ok(true): it ended cleanly and the
/// HTTP/1 side keeps the connection open.
async fn relay_response(
    c: &Conn,
    pair: &TcpStream,
    head_request: bool,
    respond: &mut SendResponse<Bytes>,
) -> Result<bool, Failure> {
    let mut buf = BytesMut::with_capacity(4096);
    // The final head, after any 1xx (a 100 Continue is passed on: the client may wait for it).
    let (response, body, keep_alive) = loop {
        let parsed = {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            match http::parse_response(&buf, &mut headers, MAX_RESPONSE_HEAD, head_request) {
                Ok(Some(h)) => Some((h.head_len, h.status, response_of(&h)?, h.body, h.keep_alive)),
                Ok(None) => None,
                Err(_) => return Err(Failure::BadResponse("malformed response head")),
            }
        };
        match parsed {
            Some((len, status, response, body, keep_alive)) => {
                buf.advance(len);
                if (100..200).contains(&status) {
                    if status == 100 {
                        respond.send_informational(response)?;
                    }
                    continue;
                }
                break (response, body, keep_alive);
            }
            None => {
                // The client may reset the stream while the response is on its way.
                let read = pin!(read_more(pair, &mut buf));
                let reset = pin!(poll_fn(|cx| respond.poll_reset(cx)));
                match select(read, reset).await {
                    Either::Left((read, _)) => {
                        if read? == 0 {
                            return Err(Failure::BadResponse("closed before a response"));
                        }
                    }
                    Either::Right((reset, _)) => {
                        return Err(match reset {
                            Ok(reason) => Failure::Reset(reason),
                            Err(e) => Failure::from(e),
                        })
                    }
                }
            }
        }
    };
    let no_body = matches!(body, BodyKind::None | BodyKind::Length(0));
    let mut response = response;
    if no_body && trailers_only_grpc(response.headers()) {
        // The HTTP/1.1 side's framing, not the answer's: Envoy sends no `content-length` on a
        // trailers-only gRPC answer (its own, or an HTTP/2 server's). A plain response keeps an
        // explicit `content-length: 0`, as Envoy passes it on.
        response.headers_mut().remove(http_types::header::CONTENT_LENGTH);
    }
    let mut tx = respond.send_response(response, no_body)?;
    match body {
        BodyKind::None | BodyKind::Length(0) => Ok(keep_alive && buf.is_empty()),
        BodyKind::Length(mut left) => loop {
            let take = (buf.len() as u64).min(left) as usize;
            if take > 0 {
                left -= take as u64;
                send(c, &mut tx, buf.split_to(take).freeze(), left == 0).await?;
            }
            if left == 0 {
                return Ok(keep_alive && buf.is_empty());
            }
            if read_more(pair, &mut buf).await? == 0 {
                return Err(Failure::BadResponse("closed inside a body"));
            }
        },
        BodyKind::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            // The raw bytes since the last payload byte: at the end, the last chunk and trailers.
            let mut tail: Vec<u8> = Vec::new();
            loop {
                let p = decoder.advance(&buf).map_err(|e| Failure::BadResponse(e.0))?;
                if p.data.is_empty() {
                    tail.extend_from_slice(&buf[..p.consumed]);
                } else {
                    tail.clear();
                    tail.extend_from_slice(&buf[p.data.end..p.consumed]);
                }
                if tail.len() > MAX_RESPONSE_HEAD {
                    return Err(Failure::BadResponse("trailers too large"));
                }
                let mut raw = buf.split_to(p.consumed);
                let data = raw.split_off(p.data.start);
                let data = data.freeze().slice(..p.data.len());
                if p.done {
                    let trailers = trailers(&tail)?;
                    if trailers.is_empty() {
                        send(c, &mut tx, data, true).await?;
                    } else {
                        if !data.is_empty() {
                            send(c, &mut tx, data, false).await?;
                        }
                        tx.send_trailers(trailers)?;
                    }
                    return Ok(keep_alive && buf.is_empty());
                }
                if !data.is_empty() {
                    send(c, &mut tx, data, false).await?;
                }
                if p.consumed == 0 && read_more(pair, &mut buf).await? == 0 {
                    return Err(Failure::BadResponse("closed inside a chunked body"));
                }
            }
        }
        BodyKind::CloseDelimited => loop {
            if !buf.is_empty() {
                let data = buf.split().freeze();
                send(c, &mut tx, data, false).await?;
            }
            if read_more(pair, &mut buf).await? == 0 {
                send(c, &mut tx, Bytes::new(), true).await?;
                return Ok(false);
            }
        },
    }
}

/// A bodiless gRPC response (`grpc-status` in its headers) whose `content-length: 0` is only
/// the HTTP/1.1 side's framing.
fn trailers_only_grpc(headers: &http_types::HeaderMap) -> bool {
    headers.get(http_types::header::CONTENT_LENGTH).is_some_and(|v| v == "0")
        && headers.contains_key("grpc-status")
        && headers
            .get(http_types::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The HTTP/2 response of an HTTP/1.1 head, without the headers HTTP/2 forbids.
fn response_of(h: &http::ResponseHead<'_>) -> Result<http_types::Response<()>, Failure> {
    let mut response = http_types::Response::builder().status(h.status);
    for header in h.headers {
        let name = header.name;
        if CONNECTION_SPECIFIC.iter().any(|c| http::header_is(name, c)) {
            continue;
        }
        response = response.header(name, header.value);
    }
    response.body(()).map_err(|_| Failure::BadResponse("a header HTTP/2 cannot carry"))
}

/// The trailer fields at the end of a chunked body: `tail` is the raw text from the last payload
/// byte on (`\r\n`, the last-chunk line, the trailer lines, the final `\r\n`).
fn trailers(tail: &[u8]) -> Result<http_types::HeaderMap, Failure> {
    let mut map = http_types::HeaderMap::new();
    let tail = tail.strip_prefix(b"\r\n").unwrap_or(tail);
    let Some(eol) = tail.windows(2).position(|w| w == b"\r\n") else { return Ok(map) };
    let fields = &tail[eol + 2..];
    if fields.len() <= 2 {
        return Ok(map);
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::parse_headers(fields, &mut headers) {
        Ok(httparse::Status::Complete((_, parsed))) => {
            for h in parsed {
                let name = http_types::HeaderName::from_bytes(h.name.as_bytes());
                let value = http_types::HeaderValue::from_bytes(h.value);
                let (Ok(name), Ok(value)) = (name, value) else {
                    return Err(Failure::BadResponse("a trailer HTTP/2 cannot carry"));
                };
                if !CONNECTION_SPECIFIC.contains(&name.as_str()) {
                    map.append(name, value);
                }
            }
            Ok(map)
        }
        _ => Err(Failure::BadResponse("malformed trailers")),
    }
}

/// Sends `data` on the stream as the client's flow-control window allows; a window that stays
/// shut for `stream_idle_timeout` ends the stream.
async fn send(c: &Conn, tx: &mut SendStream<Bytes>, mut data: Bytes, end: bool) -> Result<(), Failure> {
    if data.is_empty() {
        if end {
            tx.send_data(data, true)?;
        }
        return Ok(());
    }
    while !data.is_empty() {
        tx.reserve_capacity(data.len());
        let capacity = poll_fn(|cx| tx.poll_capacity(cx));
        let granted = match c.stream_idle {
            Some(limit) => monoio::time::timeout(limit, capacity).await.map_err(|_| Failure::Stalled)?,
            None => capacity.await,
        };
        let n = match granted {
            Some(n) => n?,
            None => return Err(Failure::BadResponse("stream closed")),
        };
        if n == 0 {
            continue;
        }
        let chunk = data.split_to(n.min(data.len()));
        tx.send_data(chunk, end && data.is_empty())?;
    }
    Ok(())
}

async fn write_all(pair: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    let mut fd = Fd(pair.as_raw_fd());
    while !bytes.is_empty() {
        match fd.write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if would_block(&e) => pair.writable(false).await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Appends what the pair has (waiting for it); 0 at its end.
async fn read_more(pair: &TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    let mut fd = Fd(pair.as_raw_fd());
    buf.reserve(READ_CHUNK);
    loop {
        let spare = buf.spare_capacity_mut();
        // SAFETY: `recv` only writes into the spare capacity; `set_len` covers what it wrote.
        let spare = unsafe { std::slice::from_raw_parts_mut(spare.as_mut_ptr().cast::<u8>(), spare.len()) };
        match fd.read(spare) {
            Ok(n) => {
                // SAFETY: the first `n` spare bytes were just written by `recv`.
                unsafe { buf.set_len(buf.len() + n) };
                return Ok(n);
            }
            Err(e) if would_block(&e) => pair.readable(false).await?,
            Err(e) => return Err(e),
        }
    }
}

/// The client's socket as the h2 codec reads it: the bytes `conn` already read (the preface, when
/// the codec was chosen by sniffing), then the socket.
struct Prefixed<T> {
    prefix: Bytes,
    io: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preface_is_recognised_from_its_first_byte_on() {
        assert_eq!(preface(b"P"), None);
        assert_eq!(preface(b"PRI * HTTP/2.0\r\n"), None);
        assert_eq!(preface(PREFACE), Some(true));
        assert_eq!(preface(b"POST / HTTP/1.1\r\n"), Some(false));
        assert_eq!(preface(b"GET / HTTP/1.1\r\n"), Some(false));
    }

    #[test]
    fn premature_resets_close_a_connection_as_envoys_rule_says() {
        assert!(!too_many_premature_resets(10, 9), "too few streams to judge");
        assert!(too_many_premature_resets(250, 250), "enough that the rest cannot save it");
        assert!(!too_many_premature_resets(600, 299));
        assert!(too_many_premature_resets(600, 300));
        assert!(!too_many_premature_resets(0, 0));
    }

    #[test]
    fn trailers_are_read_from_the_end_of_a_chunked_body() {
        let t = trailers(b"\r\n0\r\ngrpc-status: 0\r\nx-a: b\r\n\r\n").ok().unwrap_or_default();
        assert_eq!(t.get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]));
        assert_eq!(t.len(), 2);
        assert!(trailers(b"0\r\n\r\n").ok().is_some_and(|t| t.is_empty()));
        assert!(trailers(b"\r\n0;ext=1\r\n\r\n").ok().is_some_and(|t| t.is_empty()));
    }
}
