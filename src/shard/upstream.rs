//! One request's trip upstream: pick an endpoint, take a pooled connection or connect within
//! `connect_timeout`, send the request, relay the response back, retry where the route allows and
//! nothing reached the client yet, and pool the connection again only when the exchange ended
//! cleanly. Turns every upstream failure into Envoy's answer (503 connect error, 502 broken
//! response).

use super::conn::{
    local_reply, read_more, read_up_to, shrink_idle, write_out, Downstream, RequestInfo, BODY_CHUNK,
};
use super::observe;
use super::reply;
use super::{Generation, Shard};
use crate::access_log::ResponseFlags;
use crate::cluster::pool::Upstream;
use crate::http::{self, header_is, BodyKind, ChunkedDecoder, ResponseHead, MAX_HEADERS};
use crate::route::{Forward, HeaderEdits};
use crate::snapshot::ListenerSnap;
use crate::stats::{ClusterStats, HostStats};
use bytes::{Buf, BytesMut};
use monoio::buf::IoBuf;
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Body bytes that arrived with a response head and are copied into the head's write.
const COPY_WITH_HEAD: usize = 4 * 1024;

/// Largest upstream response head accepted.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    KeepAlive,
    Close,
}

pub(super) struct Exchange<'a> {
    pub shard: &'a Shard,
    pub generation: &'a Generation,
    pub cluster: usize,
    pub fwd: &'a Forward,
    pub listener: &'a ListenerSnap,
    pub info: RequestInfo,
    /// Route, virtual host, route table.
    pub response_edits: [&'a HeaderEdits; 3],
    pub server_name: &'a str,
}

/// How one attempt ended.
enum Attempt {
    /// The response went to the client.
    Relayed(Outcome),
    ConnectFailed {
        timed_out: bool,
    },
    /// A pooled connection turned out closed before answering anything: try a fresh one.
    Stale,
    /// The upstream reset or closed before a complete response head.
    Reset,
    /// The response head was malformed.
    BadResponse,
    /// A status the retry policy retries (nothing was sent to the client).
    RetryableStatus,
    /// The client went away or the relay broke after the response started: close.
    Abort,
    /// The route timeout ran out while waiting for or relaying a streamed request's response.
    TimedOut,
}

const CONNECT_FAILURE: &[u8] =
    b"upstream connect error or disconnect/reset before headers. reset reason: connection failure";
const CONNECT_TIMEOUT: &[u8] =
    b"upstream connect error or disconnect/reset before headers. reset reason: connection timeout";
const RESET_BEFORE_HEADERS: &[u8] =
    b"upstream connect error or disconnect/reset before headers. reset reason: connection termination";

pub(super) async fn forward(ex: Exchange<'_>, d: &mut Downstream) -> Outcome {
    let snap = &ex.generation.snap.clusters[ex.cluster];
    let lb = &ex.generation.clusters[ex.cluster];
    let stats = &ex.generation.cluster_stats[ex.cluster];
    let retries = ex.fwd.retry.filter(|_| ex.info.body_buffered).map_or(0, |r| r.num_retries);
    let mut attempts_left = retries + 1;
    let mut fresh_only = false;
    loop {
        let Some(endpoint) = lb.pick(snap, &ex.shard.rng) else {
            stats.upstream_cx_none_healthy.inc();
            d.obs.flag(ResponseFlags::UH);
            return local_reply(d, 503, b"no healthy upstream", ex.server_name, !ex.info.body_buffered, &[])
                .await;
        };
        let addr = snap.endpoints[endpoint];
        lb.begin(endpoint);
        d.obs.upstream_host = Some(addr);
        d.obs.upstream_cluster = Some(ex.cluster);
        d.obs.attempts += 1;
        stats.upstream_rq_total.inc();
        stats.upstream_rq_active.inc();
        let host = &ex.generation.host_stats[ex.cluster][endpoint];
        host.rq_total.inc();
        host.rq_active.inc();
        let result = attempt(&ex, d, addr, endpoint, fresh_only, attempts_left > 1).await;
        host.rq_active.dec();
        match result {
            Attempt::Relayed(_) if d.status < 500 => host.rq_success.inc(),
            _ => host.rq_error.inc(),
        }
        stats.upstream_rq_active.dec();
        lb.end(endpoint);
        attempts_left -= 1;
        let retry = ex.fwd.retry;
        let (status, body): (u16, &[u8]) = match result {
            Attempt::Relayed(outcome) => return outcome,
            Attempt::Abort => return Outcome::Close,
            Attempt::TimedOut if d.response_started => {
                d.obs.flag(ResponseFlags::UT);
                return Outcome::Close;
            }
            Attempt::TimedOut => {
                stats.upstream_rq_timeout.inc();
                d.obs.flag(ResponseFlags::UT);
                return local_reply(d, 504, b"upstream request timeout", ex.server_name, true, &[]).await;
            }
            Attempt::Stale if ex.info.body_buffered && !fresh_only => {
                // Not a retry in Envoy's sense: the request never reached an application.
                fresh_only = true;
                attempts_left += 1;
                continue;
            }
            Attempt::Stale | Attempt::Reset => (502, RESET_BEFORE_HEADERS),
            Attempt::ConnectFailed { timed_out } => {
                if attempts_left > 0 && retry.is_some_and(|r| r.on_connect_failure) {
                    stats.upstream_rq_retry.inc();
                    continue;
                }
                (503, if timed_out { CONNECT_TIMEOUT } else { CONNECT_FAILURE })
            }
            Attempt::BadResponse => (502, b"upstream sent an invalid response" as &[u8]),
            Attempt::RetryableStatus => {
                stats.upstream_rq_retry.inc();
                continue;
            }
        };
        if attempts_left > 0 && status == 502 && retry.is_some_and(|r| r.on_reset || r.retries_status(502)) {
            stats.upstream_rq_retry.inc();
            continue;
        }
        d.obs.flag(match status {
            503 => ResponseFlags::UF,
            _ if body == RESET_BEFORE_HEADERS => ResponseFlags::UC,
            _ => ResponseFlags::UPE,
        });
        if d.obs.attempts > 1 {
            d.obs.flag(ResponseFlags::URX);
        }
        // A body we could not finish sending leaves the client mid-request: close after answering.
        return local_reply(d, status, body, ex.server_name, !ex.info.body_buffered, &[]).await;
    }
}

async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    stats: &Rc<ClusterStats>,
    host: &Rc<HostStats>,
) -> Result<Upstream, Attempt> {
    match monoio::time::timeout(timeout, TcpStream::connect_addr(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(Upstream::new(stream, addr, stats.clone(), host.clone(), super::conn::READ_CHUNK))
        }
        Ok(Err(e)) => {
            log::debug!("connect to {addr}: {e}");
            stats.upstream_cx_connect_fail.inc();
            Err(Attempt::ConnectFailed { timed_out: false })
        }
        Err(_) => {
            stats.upstream_cx_connect_fail.inc();
            stats.upstream_cx_connect_timeout.inc();
            Err(Attempt::ConnectFailed { timed_out: true })
        }
    }
}

async fn attempt(
    ex: &Exchange<'_>,
    d: &mut Downstream,
    addr: SocketAddr,
    endpoint: usize,
    fresh_only: bool,
    may_retry: bool,
) -> Attempt {
    let snap = &ex.generation.snap.clusters[ex.cluster];
    let pooled = if fresh_only { None } else { take_pooled(ex.shard, addr, !ex.info.body_buffered) };
    let reused = pooled.is_some();
    let mut up = match pooled {
        Some(up) => up,
        None => match connect(
            addr,
            snap.connect_timeout,
            &ex.generation.cluster_stats[ex.cluster],
            &ex.generation.host_stats[ex.cluster][endpoint],
        )
        .await
        {
            Ok(up) => up,
            Err(failed) => return failed,
        },
    };
    up.requests += 1;
    let started = Instant::now();

    // The request: head and whatever body came with it, then the rest of the body as it arrives.
    let (res, req) = up.stream.write_all(std::mem::take(&mut d.req_out)).await;
    d.req_out = req;
    if res.is_err() {
        return if reused { Attempt::Stale } else { Attempt::Reset };
    }
    if !ex.info.body_buffered {
        if ex.info.expect_continue && ex.info.body_in_head_read == 0 {
            d.resp_out.clear();
            d.resp_out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            if write_out(&mut d.stream, &mut d.resp_out).await.is_err() {
                return Attempt::Abort;
            }
        }
        let sent = match (ex.info.body, &ex.info.chunked) {
            (BodyKind::Length(n), _) => {
                let remaining = n - ex.info.body_in_head_read as u64;
                relay_length(&mut d.stream, &mut d.buf, &mut up.stream, remaining, Some(STREAM_IDLE_TIMEOUT))
                    .await
            }
            (BodyKind::Chunked, Some(decoder)) => {
                relay_chunked(
                    &mut d.stream,
                    &mut d.buf,
                    &mut up.stream,
                    decoder.clone(),
                    Some(STREAM_IDLE_TIMEOUT),
                )
                .await
            }
            _ => Ok(0),
        };
        match sent {
            Ok(n) => d.obs.bytes_received += n,
            // The client stopped sending or sent broken framing: nothing sane can follow.
            Err(RelayError::Read | RelayError::Framing) => return Attempt::Abort,
            Err(RelayError::Write) => return Attempt::Reset,
        }
    }

    let response = respond(ex, d, up, addr, reused, may_retry, started);
    match ex.fwd.timeout {
        // Envoy's route timeout runs from the end of the request. A buffered request ended before
        // the first attempt, so the caller bounds the whole exchange (retries included); a
        // streamed one ends only now, and a slow upload must not eat into its time.
        Some(limit) if !ex.info.body_buffered => {
            monoio::time::timeout(limit, response).await.unwrap_or(Attempt::TimedOut)
        }
        _ => response.await,
    }
}

/// Reads the response and relays it to the client; pools the connection when it ended cleanly.
async fn respond(
    ex: &Exchange<'_>,
    d: &mut Downstream,
    mut up: Upstream,
    addr: SocketAddr,
    reused: bool,
    may_retry: bool,
    started: Instant,
) -> Attempt {
    let snap = &ex.generation.snap.clusters[ex.cluster];
    // The response head, skipping interim 1xx responses (skiff answered Expect itself).
    let mut received_any = false;
    let (info, head_len) = loop {
        if !up.buf.is_empty() {
            received_any = true;
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            match http::parse_response(&up.buf, &mut headers, MAX_RESPONSE_HEAD, ex.info.head_method) {
                Ok(Some(head)) if (100..200).contains(&head.status) && head.status != 101 => {
                    let n = head.head_len;
                    up.buf.advance(n);
                    continue;
                }
                Ok(Some(head)) => {
                    if d.obs.on {
                        d.obs.first_upstream_byte.get_or_insert_with(Instant::now);
                    }
                    observe::on_response_head(ex.listener, &head, &mut d.obs);
                    ex.generation.cluster_stats[ex.cluster].response(head.status).inc();
                    if may_retry && ex.fwd.retry.is_some_and(|r| r.retries_status(head.status)) {
                        return Attempt::RetryableStatus;
                    }
                    let info = write_response_head(ex, d, &head, started);
                    break (info, head.head_len);
                }
                Ok(None) => {}
                Err(e) => {
                    log::debug!("bad response from {addr}: {e:?}");
                    return Attempt::BadResponse;
                }
            }
        }
        match read_more(&mut up.stream, &mut up.buf).await {
            Ok(0) | Err(_) if reused && !received_any => return Attempt::Stale,
            Ok(0) | Err(_) => return Attempt::Reset,
            Ok(_) => {}
        }
    };
    up.buf.advance(head_len);
    d.response_started = true;

    // The response body.
    let relayed = match info.body {
        BodyKind::None => {
            write_out(&mut d.stream, &mut d.resp_out).await.map(|_| 0).map_err(|_| RelayError::Write)
        }
        BodyKind::Length(n) => {
            let first = up.buf.len().min(n as usize);
            // A small body rides in the head's write; a large one is written from the read buffer
            // as it is, instead of being copied.
            let copied = if first <= COPY_WITH_HEAD { first } else { 0 };
            d.resp_out.extend_from_slice(&up.buf[..copied]);
            up.buf.advance(copied);
            let head_written = match write_out(&mut d.stream, &mut d.resp_out).await {
                Ok(()) if copied < first => write_prefix(&mut d.stream, &mut up.buf, first - copied).await,
                Ok(()) => Ok(()),
                Err(_) => Err(RelayError::Write),
            };
            match head_written {
                Ok(()) => relay_length(&mut up.stream, &mut up.buf, &mut d.stream, n - first as u64, None)
                    .await
                    .map(|rest| rest + first as u64),
                Err(_) => Err(RelayError::Write),
            }
        }
        BodyKind::Chunked if info.dechunk => dechunk(&mut up, d).await,
        BodyKind::Chunked => match write_out(&mut d.stream, &mut d.resp_out).await {
            Ok(()) => {
                relay_chunked(&mut up.stream, &mut up.buf, &mut d.stream, ChunkedDecoder::new(), None).await
            }
            Err(_) => Err(RelayError::Write),
        },
        BodyKind::CloseDelimited => relay_until_close(&mut up, d).await,
    };
    ex.generation.cluster_stats[ex.cluster].upstream_rq_time.record_us(started.elapsed().as_micros() as u64);
    match relayed {
        Ok(n) => d.obs.bytes_sent = n,
        Err(RelayError::Write) => {
            d.obs.flag(ResponseFlags::DC);
            return Attempt::Abort;
        }
        Err(_) => {
            d.obs.flag(ResponseFlags::UC);
            return Attempt::Abort;
        }
    }
    let reusable = info.upstream_keep_alive
        && up.buf.is_empty()
        && snap.max_requests_per_connection.is_none_or(|max| up.requests < max);
    if reusable {
        shrink_idle(&mut up.buf, super::conn::READ_CHUNK);
        ex.shard.pool.put(up);
    }
    Attempt::Relayed(if info.client_keep_alive { Outcome::KeepAlive } else { Outcome::Close })
}

/// An idle pooled connection to `addr`. A request whose body is still arriving cannot be replayed
/// if the connection turns out dead, so for those (`must_be_open`) connections the upstream already
/// closed (its keep-alive timeout can be much shorter than the pool's) are discarded first. The
/// check is one non-blocking syscall, spent only where a stale connection would cost the request.
fn take_pooled(shard: &Shard, addr: SocketAddr, must_be_open: bool) -> Option<Upstream> {
    loop {
        let up = shard.pool.take(addr)?;
        if !must_be_open || still_open(&up.stream) {
            return Some(up);
        }
    }
}

/// Whether an idle connection is still usable: no FIN, no error and no unsolicited bytes waiting.
fn still_open(stream: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut byte = 0u8;
    // SAFETY: recv into one valid byte of our stack; MSG_PEEK leaves the socket's data untouched,
    // MSG_DONTWAIT keeps it from blocking the shard. The fd is owned by `stream`, alive here.
    let n = unsafe {
        libc::recv(stream.as_raw_fd(), (&mut byte as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT)
    };
    n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}

/// What the relay needs after the response head was written.
struct ResponseInfo {
    body: BodyKind,
    /// Send the chunked body's payload only (an HTTP/1.0 client cannot read chunked framing).
    dechunk: bool,
    upstream_keep_alive: bool,
    client_keep_alive: bool,
}

/// Hop-by-hop response headers, and `server`, which skiff sets itself as Envoy does.
fn dropped_response_header(name: &str) -> bool {
    match name.len() {
        2 => header_is(name, "te"),
        6 => header_is(name, "server"),
        7 => header_is(name, "upgrade"),
        10 => header_is(name, "connection") || header_is(name, "keep-alive"),
        16 => header_is(name, "proxy-connection"),
        17 => header_is(name, "transfer-encoding"),
        _ => false,
    }
}

fn write_response_head(
    ex: &Exchange<'_>,
    d: &mut Downstream,
    head: &ResponseHead<'_>,
    started: Instant,
) -> ResponseInfo {
    let info = &ex.info;
    let dechunk = head.body == BodyKind::Chunked && info.http10;
    let close_delimited_to_client = head.body == BodyKind::CloseDelimited || dechunk;
    let client_keep_alive = info.keep_alive && !close_delimited_to_client && !ex.shard.draining();
    d.status = head.status;
    let out = &mut d.resp_out;
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    reply::push_u64(out, u64::from(head.status));
    out.push(b' ');
    out.extend_from_slice(head.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let edits = &ex.response_edits;
    let any_edits = edits.iter().any(|e| !e.is_empty());
    // As for requests: only scan Connection's list when the response has one.
    let has_connection = head.headers.iter().any(|h| header_is(h.name, "connection"));
    for h in head.headers {
        let name = h.name;
        if dropped_response_header(name) || (has_connection && head.connection_lists(name)) {
            continue;
        }
        if head.body == BodyKind::Chunked && header_is(name, "content-length") {
            continue;
        }
        if any_edits && edits.iter().any(|e| e.drops(name)) {
            continue;
        }
        reply::header(out, name.as_bytes(), h.value);
    }
    reply::header(out, b"server", ex.server_name.as_bytes());
    out.extend_from_slice(b"x-envoy-upstream-service-time: ");
    let at = out.len();
    reply::push_u64(out, started.elapsed().as_millis() as u64);
    // Envoy's default access-log format reads this header, which skiff adds itself.
    observe::on_added_response_header(ex.listener, &mut d.obs, "x-envoy-upstream-service-time", &out[at..]);
    out.extend_from_slice(b"\r\n");
    if head.body == BodyKind::Chunked && !dechunk {
        reply::header(out, b"transfer-encoding", b"chunked");
    }
    if !client_keep_alive {
        reply::header(out, b"connection", b"close");
    } else if info.http10 {
        reply::header(out, b"connection", b"keep-alive");
    }
    for e in edits.iter().rev() {
        for a in &e.add {
            reply::header(out, a.name.as_bytes(), a.value.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
    ResponseInfo { body: head.body, dechunk, upstream_keep_alive: head.keep_alive, client_keep_alive }
}

#[derive(Debug)]
enum RelayError {
    Read,
    Write,
    Framing,
}

/// Writes the first `n` bytes of `buf` and drops them from it, without copying.
async fn write_prefix(dst: &mut TcpStream, buf: &mut BytesMut, n: usize) -> Result<(), RelayError> {
    let (res, slice) = dst.write_all(std::mem::take(buf).slice(0..n)).await;
    *buf = slice.into_inner();
    buf.advance(n);
    res.map(|_| ()).map_err(|_| RelayError::Write)
}

/// Copies exactly `remaining` more body bytes from `src` (after what `buf` holds) to `dst`; bytes
/// past the body stay in `buf`.
async fn relay_length(
    src: &mut TcpStream,
    buf: &mut BytesMut,
    dst: &mut TcpStream,
    mut remaining: u64,
    idle: Option<Duration>,
) -> Result<u64, RelayError> {
    let total = remaining;
    while remaining > 0 {
        if buf.is_empty() {
            read_within(src, buf, idle).await?;
        }
        let n = buf.len().min(remaining.min(usize::MAX as u64) as usize);
        write_within(dst, buf, n, idle).await?;
        remaining -= n as u64;
    }
    Ok(total)
}

/// Relays a chunked body as it is (framing included), validating it on the way; stops exactly at
/// its end. Returns the payload bytes (framing excluded), which is what Envoy's `%BYTES_RECEIVED%`
/// and `%BYTES_SENT%` count.
async fn relay_chunked(
    src: &mut TcpStream,
    buf: &mut BytesMut,
    dst: &mut TcpStream,
    mut decoder: ChunkedDecoder,
    idle: Option<Duration>,
) -> Result<u64, RelayError> {
    let mut total = 0u64;
    loop {
        let mut pos = 0;
        let mut done = false;
        while pos < buf.len() {
            let step = decoder.advance(&buf[pos..]).map_err(|_| RelayError::Framing)?;
            total += step.data.len() as u64;
            pos += step.consumed;
            done = step.done;
            if done || step.consumed == 0 {
                break;
            }
        }
        if pos > 0 {
            write_within(dst, buf, pos, idle).await?;
        }
        if done {
            return Ok(total);
        }
        read_within(src, buf, idle).await?;
    }
}

/// Envoy's default `stream_idle_timeout`: how long a request body may stall once its head has
/// been forwarded. The route timeout only starts when the body is complete, so this is what bounds a
/// client that stops sending halfway.
const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// `write_prefix` within `idle` when given: an upstream that stops reading a request body must not
/// hold the exchange forever either.
async fn write_within(
    dst: &mut TcpStream,
    buf: &mut BytesMut,
    n: usize,
    idle: Option<Duration>,
) -> Result<(), RelayError> {
    match idle {
        Some(limit) => {
            monoio::time::timeout(limit, write_prefix(dst, buf, n)).await.map_err(|_| RelayError::Write)?
        }
        None => write_prefix(dst, buf, n).await,
    }
}

/// One read that must bring bytes (EOF is an error), within `idle` when given.
async fn read_within(
    src: &mut TcpStream,
    buf: &mut BytesMut,
    idle: Option<Duration>,
) -> Result<(), RelayError> {
    let read = match idle {
        Some(limit) => monoio::time::timeout(limit, read_up_to(src, buf, BODY_CHUNK))
            .await
            .map_err(|_| RelayError::Read)?,
        None => read_up_to(src, buf, BODY_CHUNK).await,
    };
    match read {
        Ok(0) | Err(_) => Err(RelayError::Read),
        Ok(_) => Ok(()),
    }
}

/// A chunked response to an HTTP/1.0 client: payload only, then close.
async fn dechunk(up: &mut Upstream, d: &mut Downstream) -> Result<u64, RelayError> {
    let mut decoder = ChunkedDecoder::new();
    let mut total = 0u64;
    loop {
        let mut pos = 0;
        let mut done = false;
        while pos < up.buf.len() {
            let step = decoder.advance(&up.buf[pos..]).map_err(|_| RelayError::Framing)?;
            d.resp_out.extend_from_slice(&up.buf[pos + step.data.start..pos + step.data.end]);
            total += step.data.len() as u64;
            pos += step.consumed;
            done = step.done;
            if done || step.consumed == 0 {
                break;
            }
        }
        up.buf.advance(pos);
        write_out(&mut d.stream, &mut d.resp_out).await.map_err(|_| RelayError::Write)?;
        if done {
            return Ok(total);
        }
        match read_up_to(&mut up.stream, &mut up.buf, BODY_CHUNK).await {
            Ok(0) | Err(_) => return Err(RelayError::Read),
            Ok(_) => {}
        }
    }
}

/// A body that ends when the upstream closes.
async fn relay_until_close(up: &mut Upstream, d: &mut Downstream) -> Result<u64, RelayError> {
    let mut total = up.buf.len() as u64;
    d.resp_out.extend_from_slice(&up.buf);
    up.buf.clear();
    write_out(&mut d.stream, &mut d.resp_out).await.map_err(|_| RelayError::Write)?;
    loop {
        match read_up_to(&mut up.stream, &mut up.buf, BODY_CHUNK).await {
            Ok(0) => return Ok(total),
            Err(_) => return Err(RelayError::Read),
            Ok(n) => {
                write_prefix(&mut d.stream, &mut up.buf, n).await?;
                total += n as u64;
            }
        }
    }
}
