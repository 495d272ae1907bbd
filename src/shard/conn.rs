//! One downstream connection: wait for a request head under the connection's timeouts, hand it to
//! a `Request` (which owns it until its log line), repeat while keep-alive holds and the
//! connection's limits (`max_requests_per_connection`, `max_connection_duration`) allow. Owns the
//! connection's buffers, its gauge and its lifetime timer; knows nothing of routes or upstreams.

use super::downstream::Downstream;
use super::h2;
use super::reply::details;
use super::request::{Continue, Request};
use super::socket::{self, spare, Pending, READ_CHUNK};
use super::state::{Generation, Shard};
use super::timer::Timer;
use super::tls::{Hello, Terminate};
use crate::config::{HttpCodec, UnderscoresAction};
use crate::filters::network::{Admission, Decision, NewConnection, RbacVerdict};
use crate::http::{self, RequestHead, MAX_HEADERS};
use crate::peer::Connection;
use crate::snapshot::{ChainKey, HcmSettings};
use crate::stats::{Counter, HttpStats, ListenerStats, WorkerStats};
use bytes::BytesMut;
use monoio::buf::SliceMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, CancelableAsyncReadRent};
use monoio::net::TcpStream;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The first read of a request: a typical head fits. A bigger head grows the buffer (up to
/// `max_request_headers_kb`); between requests the connection holds no buffer at all.
const HEAD_BUF: usize = 2 * 1024;

/// How long a draining shard keeps an idle keep-alive connection open for a request that may
/// already be on its way (the shard fires `drain` for waiting connections once it has passed).
pub(super) const DRAIN_GRACE: Duration = Duration::from_millis(50);

/// Counts the connection open for as long as it lives, on the shard, on its connection manager's
/// stats and on its listener's (`listener.<address>.*` and this shard's `worker_<n>` share).
struct ConnGuard<'a> {
    shard: &'a Shard,
    stats: Rc<HttpStats>,
    listener: (Rc<ListenerStats>, Rc<WorkerStats>),
}

impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        self.shard.conn_closed();
        self.stats.downstream_cx_active.dec();
        let (listener, worker) = &self.listener;
        listener.downstream_cx_active.dec();
        listener.downstream_cx_destroy.inc();
        worker.downstream_cx_active.dec();
    }
}

/// An HTTP connection on filter chain `key`; `hello`: the ClientHello the TLS inspector already
/// read (`chains.rs`).
///
/// A plain fn returning an `async move` block, not an `async fn`: an async fn moves each argument
/// from the future's captured copy into a local of its own, and the compiler keeps both, so every
/// connection's task carried its arguments twice (`requests` likewise, with its 800-byte
/// `Downstream`).
#[expect(clippy::manual_async_fn, reason = "an async fn would hold its arguments twice")]
pub(super) fn serve(
    shard: Rc<Shard>,
    key: ChainKey,
    stream: TcpStream,
    peer: SocketAddr,
    hello: Option<Box<Hello>>,
) -> impl std::future::Future<Output = ()> {
    async move { serve_on(&shard, key, stream, peer, hello).await }
}

async fn serve_on(
    shard: &Rc<Shard>,
    key: ChainKey,
    stream: TcpStream,
    peer: SocketAddr,
    hello: Option<Box<Hello>>,
) {
    let local = stream.local_addr().unwrap_or(peer);
    let (stats, listener, lifetime, tls, admission, gate, codec) = {
        let generation = shard.generation();
        let Some(i) = generation.snap.listener_index(key) else { return };
        let l = &generation.snap.listeners[i];
        // The RBAC filters decide on the first byte by the config the connection was accepted
        // under, as Envoy's connection keeps the filters it was created with.
        let gate = l.net_filters.checks_first_byte().then(|| (generation.clone(), i));
        let admission = (!l.net_filters.is_empty()).then(|| {
            l.net_filters.on_new_connection(&NewConnection { peer, local }, &generation.net_filter_stats[i])
        });
        // `max_connection_duration` counts from accept, under the config current then.
        let lifetime = l.hcm.max_connection_duration;
        let tls = l.tls.clone().map(|tls| {
            let limit = tls.handshake_limit.unwrap_or(l.hcm.request_headers_timeout);
            Terminate::new(shard, tls, l.socket.bound, Some(&l.hcm.stat_prefix), limit)
        });
        (
            generation.http_stats[i].clone(),
            generation.listener_stats[i].clone(),
            lifetime,
            tls,
            admission,
            gate,
            l.hcm.codec,
        )
    };
    shard.conn_opened();
    stats.downstream_cx_total.inc();
    stats.downstream_cx_active.inc();
    listener.0.downstream_cx_total.inc();
    listener.0.downstream_cx_active.inc();
    listener.1.downstream_cx_total.inc();
    listener.1.downstream_cx_active.inc();
    let _guard = ConnGuard { shard, stats, listener };
    // Envoy's connection manager counts a connection its network filters close, and logs nothing
    // for it (no request began).
    let _held = match admission {
        None => Vec::new(),
        Some(Admission { decision: Decision::Continue, held }) => held,
        Some(Admission { decision: Decision::Close { delay, .. }, held: _held }) => {
            return Box::pin(refuse(stream, delay)).await;
        }
    };
    // Built in a block of its own: what the set-up holds (the `Downstream` before it moves into
    // the request loop, the TLS handshake's result) is then not part of the task's state while the
    // loop runs, which is all an idle connection holds.
    let _tls;
    {
        // Small heads and responses must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        // A TLS connection is served through its bridge's end of a socket pair (`tls.rs`); boxed
        // so that plaintext connections' tasks do not carry the handshake's state.
        let (stream, active, tls_peer, alpn_h2) = match tls {
            None => (stream, None, None, false),
            Some(t) => match Box::pin(t.accept(stream, hello)).await {
                Some(b) => (b.stream, Some(b.active), Some(b.peer), b.alpn_h2),
                None => return,
            },
        };
        _tls = active;
        let mut d = Downstream::new(stream, peer, local, shard.next_conn_id());
        d.tls = tls_peer;
        // The first bytes decide (after the RBAC filters' first-byte check): AUTO serves HTTP/2 to
        // a client that opens with its preface (prior knowledge, or after ALPN `h2`, which a
        // context only offers when its `alpn_protocols` list it); HTTP2 closes on anything else,
        // as Envoy does, without a byte in answer.
        let sniff = match codec {
            HttpCodec::Http1 => Sniff::No,
            HttpCodec::Auto if alpn_h2 => Sniff::Require,
            HttpCodec::Auto => Sniff::Maybe,
            HttpCodec::Http2 => Sniff::Require,
        };
        requests(shard, key, d, lifetime, gate, sniff)
    }
    .await;
}

/// Logs (once per process, at debug level) the size of a connection task's future: what every
/// connection holds for its whole life, idle ones included, so a change that grows it shows
/// (`-l debug`). A `Once` that has run costs one atomic load per accepted connection.
pub(super) fn log_task_size<F>(task: &F) {
    static LOGGED: std::sync::Once = std::sync::Once::new();
    LOGGED.call_once(|| log::debug!("connection task future: {} bytes", std::mem::size_of_val(task)));
}

/// Whether a connection's first bytes are checked for the HTTP/2 preface (`h2::preface`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sniff {
    No,
    /// HTTP/2 if they are, else HTTP/1.1 (codec AUTO).
    Maybe,
    /// HTTP/2, or close (codec HTTP2, or ALPN `h2`).
    Require,
}

/// Starts serving the HTTP/1 end of an h2 bridge pair (`h2`): `d` carries the HTTP/2 client's
/// addresses and TLS peer; the h2 connection counts the connection and owns its lifetime.
fn spawn_bridged(shard: Rc<Shard>, key: ChainKey, d: Downstream) {
    monoio::spawn(async move { requests(&shard, key, d, None, None, Sniff::No).await });
}

/// The network RBAC filters' check on a connection's first bytes: the generation it was accepted
/// under and its listener's index.
pub(super) type Gate = Option<(Rc<Generation>, usize)>;

/// Serves HTTP/1.1 requests on `d` until it closes. `sniff` (codec AUTO): the first bytes are
/// checked for the HTTP/2 preface, and a connection that opens with it goes to `h2`.
///
/// The task keeps `d` once, here, and lends it to the loop: an async fn taking it by value would
/// hold its 800 bytes twice (the argument and the local it moves into), for every connection's
/// whole life.
#[expect(clippy::manual_async_fn, reason = "an async fn would hold `d` twice")]
fn requests(
    shard: &Rc<Shard>,
    key: ChainKey,
    mut d: Downstream,
    lifetime: Option<Duration>,
    gate: Gate,
    sniff: Sniff,
) -> impl std::future::Future<Output = ()> + '_ {
    async move {
        if serve_requests(shard, key, &mut d, lifetime, gate, sniff).await == Ended::ToHttp2 {
            Box::pin(h2::serve(shard.clone(), key, d, spawn_bridged)).await
        }
    }
}

/// How `serve_requests` ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    Closed,
    /// The connection opened with the HTTP/2 preface: `h2` serves it from here.
    ToHttp2,
}

async fn serve_requests(
    shard: &Rc<Shard>,
    key: ChainKey,
    d: &mut Downstream,
    lifetime: Option<Duration>,
    mut gate: Gate,
    mut sniff: Sniff,
) -> Ended {
    let mut lifetime = lifetime.map(|limit| {
        d.expires = Instant::now().checked_add(limit);
        let mut timer = shard.timers.after(limit);
        timer.arm();
        timer
    });
    // Read the clock only when a limit is configured.
    let expired = |d: &Downstream| d.expires.is_some_and(|t| Instant::now() >= t);
    loop {
        // Wait under the settings of the config current now...
        let waiting = shard.generation();
        // A listener removed by a reload serves no new requests on its old connections.
        let Some(i) = waiting.snap.listener_index(key) else { return Ended::Closed };
        let hcm = &waiting.snap.listeners[i].hcm;
        let (max_head_len, idle_timeout, headers_timeout) =
            (hcm.max_head_len, hcm.idle_timeout, hcm.request_headers_timeout);
        let mut first_byte: Option<Instant> = None;
        let next = loop {
            if !d.buf.is_empty() {
                if let Some((accepted, i)) = gate.take() {
                    if !first_byte_allowed(&accepted, i, d) {
                        return Ended::Closed;
                    }
                }
                if sniff != Sniff::No {
                    match h2::preface(&d.buf) {
                        Some(true) => return Ended::ToHttp2,
                        Some(false) if sniff == Sniff::Require => {
                            // Envoy's HTTP/2 codec existed (counted) and failed on the bytes.
                            waiting.http_stats[i].downstream_cx_http2_total.inc();
                            waiting.http_stats[i].downstream_cx_protocol_error.inc();
                            return Ended::Closed;
                        }
                        Some(false) => sniff = Sniff::No,
                        None => {}
                    }
                }
            }
            if !d.buf.is_empty() && sniff == Sniff::No {
                // ...but route the request that arrived by the newest one.
                let generation = shard.generation();
                let refused = match parse_and_plan(shard, key, &generation, d, max_head_len, expired) {
                    Step::Run(run) => break run.await,
                    Step::Incomplete => None,
                    Step::Gone => return Ended::Closed,
                    Step::Refused(refused) => Some(refused),
                };
                if let Some((status, why)) = refused {
                    refusal(shard, &waiting, i, d, status, why).await;
                    return Ended::Closed;
                }
            }
            match read_head_bytes(
                shard,
                d,
                &mut first_byte,
                max_head_len,
                idle_timeout,
                headers_timeout,
                lifetime.as_mut(),
            )
            .await
            {
                HeadRead::More => {}
                HeadRead::Close => return Ended::Closed,
                HeadRead::Expired => {
                    waiting.http_stats[i].downstream_cx_max_duration_reached.inc();
                    return Ended::Closed;
                }
                HeadRead::TimedOut => {
                    refusal(shard, &waiting, i, d, 408, details::REQUEST_HEADER_TIMEOUT).await;
                    return Ended::Closed;
                }
            }
        };
        if d.buf.is_empty() {
            socket::recycle_head_buffer(std::mem::take(&mut d.buf));
        }
        for out in [&mut d.req_out, &mut d.resp_out] {
            socket::recycle_out_buffer(std::mem::take(out));
        }
        // A connection past `max_connection_duration` ends after this request (its response said
        // `connection: close` when the limit had passed by then), counted once, here.
        let expired = expired(d);
        if expired {
            waiting.http_stats[i].downstream_cx_max_duration_reached.inc();
        }
        if next == Continue::Close || expired {
            // A bridge pair's other end reads all it is sent: nothing to linger for.
            if let Some(limit) = hcm.delayed_close_timeout.filter(|_| !d.http2) {
                if Box::pin(linger(d, limit)).await == Lingered::TimedOut {
                    waiting.http_stats[i].downstream_cx_delayed_close_timeout.inc();
                }
            }
            return Ended::Closed;
        }
    }
}

/// The network RBAC filters' answer on the first bytes of listener `i`'s connection. A denied
/// connection is closed without a reply or an access-log line: Envoy's filter closes it before
/// the connection manager sees a byte.
fn first_byte_allowed(generation: &super::state::Generation, i: usize, d: &Downstream) -> bool {
    let Some(l) = generation.snap.listeners.get(i) else { return false };
    let conn = Connection { remote: d.peer, local: d.local, tls: d.tls.as_deref() };
    let stats = generation.net_filter_stats.get(i).map(Vec::as_slice).unwrap_or_default();
    match l.net_filters.on_first_byte(&conn, stats) {
        RbacVerdict::Allowed => true,
        RbacVerdict::Denied { details } => {
            log::debug!("closing {}: {details}", d.peer);
            false
        }
    }
}

/// Closes a connection a network filter refused, after its `delay` (reading nothing meanwhile, as
/// Envoy's connection_limit stops reading): a client that sent bytes gets a reset, as from Envoy.
pub(super) async fn refuse(stream: TcpStream, delay: Option<Duration>) {
    if let Some(delay) = delay {
        monoio::time::sleep(delay).await;
    }
    drop(stream);
}

/// How a lingering close ended.
#[derive(Debug, PartialEq, Eq)]
enum Lingered {
    /// Nothing was left to read, or the client closed (or failed) in time.
    Done,
    /// The client was still sending when `delayed_close_timeout` ran out.
    TimedOut,
}

/// Closing a socket with unread input makes the kernel send a reset, which can destroy the
/// response still on its way to the client (an early 413 while the client uploads). So when bytes
/// are left, pending, or the request's body was not read whole (`body_unread`): stop writing,
/// read and discard for up to `delayed_close_timeout`, then close (a lingering close, as Envoy's
/// delayed close and nginx's lingering close do).
async fn linger(d: &mut Downstream, limit: Duration) -> Lingered {
    if !d.body_unread && d.buf.is_empty() && socket::peek(&d.stream) != Pending::Data {
        return Lingered::Done;
    }
    let _ = d.stream.shutdown().await;
    let deadline = Instant::now() + limit;
    let mut scratch = bytes::BytesMut::with_capacity(READ_CHUNK);
    loop {
        scratch.clear();
        let left = deadline.saturating_duration_since(Instant::now());
        match monoio::time::timeout(left, socket::read_up_to(&mut d.stream, &mut scratch, READ_CHUNK)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return Lingered::Done,
            Err(_) => return Lingered::TimedOut,
        }
    }
}

/// The limits Envoy's HTTP/1.1 codec applies to a head before a request exists:
/// `max_headers_count` (431) and `headers_with_underscores_action` (REJECT_REQUEST: 400; DROP_HEADER:
/// counted here, dropped when the head is written upstream).
/// The status and `%RESPONSE_CODE_DETAILS%` of the codec's refusal of `head`, if any.
fn codec_refusal(
    head: &RequestHead<'_>,
    hcm: &HcmSettings,
    (dropped, rejected): (&Counter, &Counter),
) -> Option<(u16, &'static str)> {
    if head.headers.len() > hcm.max_headers_count {
        return Some((431, details::TOO_MANY_HEADERS));
    }
    match hcm.headers_with_underscores {
        UnderscoresAction::Allow => None,
        UnderscoresAction::RejectRequest => {
            let any = head.headers.iter().any(|h| h.name.contains('_'));
            if any {
                rejected.inc();
            }
            any.then_some((400, details::UNEXPECTED_UNDERSCORE))
        }
        UnderscoresAction::DropHeader => {
            let n = head.headers.iter().filter(|h| h.name.contains('_')).count();
            dropped.add(n as u64);
            None
        }
    }
}

/// A head refused before a request exists (`Request::refuse`), boxed here: neither its future
/// nor the `Request` it starts from is part of the connection task's state.
fn refusal<'a>(
    shard: &'a Rc<Shard>,
    generation: &'a Generation,
    listener: usize,
    d: &'a mut Downstream,
    status: u16,
    why: &'static str,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>> {
    let request = Request::new(shard, generation, listener, Instant::now(), &mut d.obs);
    Box::pin(request.refuse(d, status, why))
}

/// What the bytes read so far amount to. The request's future (~6.5 KiB: upstream exchange,
/// relays) is boxed here, and the parser's header array, the `Request` and its `Plan` live only in
/// this function's frame: none of them is part of the connection task's state, which an idle
/// connection holds.
enum Step<'a> {
    Run(std::pin::Pin<Box<dyn std::future::Future<Output = Continue> + 'a>>),
    Incomplete,
    /// The listener is gone from the config (a reload removed it).
    Gone,
    /// Refused with this status and `%RESPONSE_CODE_DETAILS%` before a request exists.
    Refused((u16, &'static str)),
}

/// Parses the head in `d.buf` once and, when it is complete, plans its request while the head
/// borrows the buffer (routed by `generation`, the config current now).
fn parse_and_plan<'a>(
    shard: &'a Rc<Shard>,
    key: ChainKey,
    generation: &'a Generation,
    d: &'a mut Downstream,
    max_head_len: usize,
    expired: impl Fn(&Downstream) -> bool,
) -> Step<'a> {
    let started = Instant::now();
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let head = match http::parse_request(&d.buf, &mut headers, max_head_len) {
        Ok(Some(head)) => head,
        Ok(None) => return Step::Incomplete,
        Err(e) => {
            log::debug!("refusing request from {}: {e:?}", d.peer_ip);
            return Step::Refused((e.status(), details::of_head_error(&e)));
        }
    };
    let Some(i) = generation.snap.listener_index(key) else { return Step::Gone };
    let hcm = &generation.snap.listeners[i].hcm;
    let (h1, h2) = (&shard.stats.http1, &shard.stats.http2);
    let underscores = match d.http2 {
        false => (&h1.dropped_headers_with_underscores, &h1.requests_rejected_with_underscores_in_headers),
        true => (&h2.dropped_headers_with_underscores, &h2.requests_rejected_with_underscores_in_headers),
    };
    if let Some(refusal) = codec_refusal(&head, hcm, underscores) {
        return Step::Refused(refusal);
    }
    let mut request = Request::new(shard, generation, i, started, &mut d.obs);
    d.requests = d.requests.saturating_add(1);
    let stats = &generation.http_stats[i];
    if d.http2 {
        // The h2 connection counts its streams against the limit.
        request = request.over_http2();
    } else if hcm.max_requests_per_connection.is_some_and(|max| d.requests >= max) {
        stats.downstream_cx_max_requests_reached.inc();
        request = request.last_on_connection();
    } else if expired(d) {
        request = request.last_on_connection();
    }
    // A request borrows its output buffers from the shard's spares (`conn` gives them back when
    // it ends), so a connection between requests holds none.
    for out in [&mut d.req_out, &mut d.resp_out] {
        if out.capacity() == 0 {
            *out = socket::out_buffer();
        }
    }
    let conn = Connection { remote: d.peer, local: d.local, tls: d.tls.as_deref() };
    let plan = request.plan(
        &head,
        &d.buf,
        &mut d.req_out,
        (&d.peer_ip, &d.xff_ip, (d.peer, d.local), &conn),
        &mut d.obs,
    );
    Step::Run(Box::pin(request.run(plan, d)))
}

enum HeadRead {
    /// Bytes arrived: parse again.
    More,
    /// The client went away, idled out, or the shard drains with nothing of a request here.
    Close,
    /// The head did not arrive within `request_headers_timeout`: 408.
    TimedOut,
    /// An idle connection reached `max_connection_duration`.
    Expired,
}

/// One read toward a request head. An idle connection (nothing of a request read yet) waits up to
/// the idle timeout and gives way to a drain; once a head has started, it has
/// `request_headers_timeout` to finish. A request the client already sent when the drain began is
/// still read and answered (with `connection: close`), never dropped.
async fn read_head_bytes(
    shard: &Shard,
    d: &mut Downstream,
    first_byte: &mut Option<Instant>,
    max_head_len: usize,
    idle_timeout: Duration,
    headers_timeout: Duration,
    lifetime: Option<&mut Timer<'_>>,
) -> HeadRead {
    let idle = d.buf.is_empty();
    let wait = match *first_byte {
        None if idle => idle_timeout,
        None => {
            // The header timeout starts when a head turns out not to fit one read: most heads do,
            // and then no clock is read here at all.
            *first_byte = Some(Instant::now());
            headers_timeout
        }
        Some(t) => headers_timeout.saturating_sub(t.elapsed()),
    };
    // Draining: a request the client sent as the drain began (its response said keep-alive) may
    // still be on its way; give it a moment to land, then close.
    let draining = idle && shard.draining();
    let wait = if draining { wait.min(DRAIN_GRACE) } else { wait };
    if idle {
        return wait_for_request(shard, d, wait, draining, lifetime).await;
    }
    let want = (max_head_len + 1).saturating_sub(d.buf.len()).clamp(1, READ_CHUNK);
    d.buf.reserve(want);
    let buf = spare(std::mem::take(&mut d.buf));
    // Boxed: a head that needs more than one read is rare, and its timeout (the rest of
    // `request_headers_timeout`, a different duration each time) is a monoio `Sleep`, 640 bytes
    // that would otherwise be part of every connection's task.
    match Box::pin(monoio::time::timeout(wait, d.stream.read(buf))).await {
        Ok((Ok(0), _)) | Ok((Err(_), _)) => HeadRead::Close,
        Ok((Ok(_), buf)) => {
            d.buf = buf.into_inner();
            HeadRead::More
        }
        Err(_) => HeadRead::TimedOut,
    }
}

/// How long a waiting read keeps its buffer. A keep-alive connection's next request usually comes
/// soon, and one ring read that owns a buffer is the cheapest way to wait for it; past this, the
/// read is cancelled and the connection waits for readability holding no buffer at all (a poll
/// costs one more step per request, 3-5 % CPU at 64 connections, so only the long idle pay it).
const PARK_AFTER: Duration = Duration::from_secs(1);

/// Waits for the next request on an idle keep-alive connection, up to `wait` (its idle timeout),
/// or until the shard drains.
async fn wait_for_request(
    shard: &Shard,
    d: &mut Downstream,
    wait: Duration,
    draining: bool,
    mut lifetime: Option<&mut Timer<'_>>,
) -> HeadRead {
    // A new connection's first wait holds no buffer: a client that sends at once has its bytes
    // there already (one non-blocking recv takes them), and one that connects and waits costs no
    // head buffer's memory while it does. Nor does a keep-alive connection's when the shard has
    // lent all the buffers it keeps (`WaitLoan`).
    let loan = if d.requests == 0 { None } else { socket::WaitLoan::take() };
    let Some(loan) = loan else {
        if let Some(read) = recv_head(d) {
            return read;
        }
        return parked(shard, d, wait, draining, lifetime).await;
    };
    let park_after = wait.min(PARK_AFTER);
    if d.buf.capacity() == 0 {
        d.buf = socket::head_buffer();
    }
    d.buf.reserve(HEAD_BUF);
    let read = {
        let handle = d.canceller.handle();
        let mut read = std::pin::pin!(d.stream.cancelable_read(spare(std::mem::take(&mut d.buf)), handle));
        let done = monoio::select! {
            r = &mut read => Some(r),
            _ = shard.timers.after(park_after) => None,
            _ = drain_ended(shard, draining) => return HeadRead::Close,
            _ = ended(lifetime.as_deref_mut()) => return HeadRead::Expired,
        };
        match done {
            Some(r) => r,
            None => {
                // Cancelled, the read still ends on its own: bytes it took before are kept.
                d.canceller = std::mem::take(&mut d.canceller).cancel();
                read.await
            }
        }
    };
    match read {
        (Err(e), buf) if e.raw_os_error() == Some(libc::ECANCELED) => {
            socket::recycle_head_buffer(buf.into_inner())
        }
        read => return took(d, read),
    }
    drop(loan);
    let Some(rest) = wait.checked_sub(park_after).filter(|r| !r.is_zero()) else { return HeadRead::Close };
    parked(shard, d, rest, draining, lifetime).await
}

/// Waits up to `rest` for readability holding no buffer, then reads what came with one
/// non-blocking recv.
async fn parked(
    shard: &Shard,
    d: &mut Downstream,
    rest: Duration,
    draining: bool,
    mut lifetime: Option<&mut Timer<'_>>,
) -> HeadRead {
    loop {
        monoio::select! {
            r = d.stream.readable(true) => if r.is_err() { return HeadRead::Close },
            _ = shard.timers.after(rest) => return HeadRead::Close,
            _ = drain_ended(shard, draining) => return HeadRead::Close,
            _ = ended(lifetime.as_deref_mut()) => return HeadRead::Expired,
        }
        // None: a readiness that went stale (the epoll driver may report one): wait again.
        if let Some(read) = recv_head(d) {
            return read;
        }
    }
}

/// One non-blocking recv into a spare head buffer: what it read, or None (and no buffer kept)
/// when nothing was there.
fn recv_head(d: &mut Downstream) -> Option<HeadRead> {
    d.buf = socket::head_buffer();
    d.buf.reserve(HEAD_BUF);
    match socket::recv_now(&d.stream, &mut d.buf) {
        Ok(Some(0)) | Err(_) => Some(HeadRead::Close),
        Ok(Some(_)) => Some(HeadRead::More),
        Ok(None) => {
            socket::recycle_head_buffer(std::mem::take(&mut d.buf));
            None
        }
    }
}

/// What a read toward a head came back with.
fn took(d: &mut Downstream, (res, buf): monoio::BufResult<usize, SliceMut<BytesMut>>) -> HeadRead {
    d.buf = buf.into_inner();
    match res {
        Ok(n) if n > 0 => HeadRead::More,
        _ => HeadRead::Close,
    }
}

/// Resolves when the connection's lifetime (`max_connection_duration`) ends; never without one.
async fn ended(lifetime: Option<&mut Timer<'_>>) {
    match lifetime {
        Some(timer) => timer.await,
        None => std::future::pending::<()>().await,
    }
}

/// Resolves when the shard's drain reaches idle connections (after its grace); never for a
/// connection that began waiting while the shard was already draining (its wait is the grace).
async fn drain_ended(shard: &Shard, draining: bool) {
    if draining {
        std::future::pending::<()>().await;
    }
    shard.drain.wait().await;
}
