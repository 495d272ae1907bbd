//! One downstream connection: read a request head, route it, forward it (see `upstream`), answer in
//! order, repeat while keep-alive holds. Owns the connection's buffers and its timeouts; decides
//! nothing about upstream connections beyond asking `upstream::forward`.

use super::observe::{self, Observed};
use super::reply;
use super::upstream::{self, Exchange, Outcome};
use super::{Generation, Shard};
use crate::access_log::ResponseFlags;
use crate::http::{self, header_is, BodyKind, ChunkedDecoder, RequestHead, Version, MAX_HEADERS};
use crate::route::{Action, HeaderEdits, Route, RouteTable, VirtualHost};
use crate::snapshot::{HcmSettings, ListenerSnap};
use crate::stats::HttpStats;
use crate::trace::{self, TraceContext};
use bytes::{Buf, BytesMut};
use monoio::buf::{IoBufMut, SliceMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

/// Read size for a connection's buffer; heads may grow it up to `max_request_headers_kb`.
pub(super) const READ_CHUNK: usize = 16 * 1024;

/// What a client connection holds while it waits for its next request. An io_uring read owns its
/// buffer for as long as it waits, so this is the memory of every idle keep-alive connection: small,
/// since a typical head fits; a bigger head grows the buffer, and `shrink_idle` gives it back.
const IDLE_BUF: usize = 2 * 1024;

/// Output buffers above this are given back after a request, for the same reason.
const KEEP_OUT: usize = 16 * 1024;

pub(super) struct Downstream {
    pub stream: TcpStream,
    /// Bytes read from the client not yet consumed: the current head, body, pipelined requests.
    pub buf: BytesMut,
    /// The request as it goes upstream (head, and the body when it arrived with the head), kept
    /// until the exchange ends so that a retry can send it again.
    pub req_out: Vec<u8>,
    /// Bytes on their way to the client.
    pub resp_out: Vec<u8>,
    /// Once anything of the response reached the client, errors can only close the connection.
    pub response_started: bool,
    /// The status sent to the client for the current request (0 until one is).
    pub status: u16,
    pub peer_ip: String,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub connection_id: u64,
    /// The current request's facts for its access log and span.
    pub obs: Observed,
}

/// What the rest of the exchange needs to know about the request once its head is gone.
#[derive(Debug, Clone)]
pub(super) struct RequestInfo {
    pub body: BodyKind,
    /// Bytes of the body that arrived with the head and are already in `req_out` (the whole body
    /// when `body_buffered`).
    pub body_in_head_read: usize,
    /// The whole body is in `req_out`: the request can be sent again.
    pub body_buffered: bool,
    pub keep_alive: bool,
    pub head_method: bool,
    pub http10: bool,
    pub expect_continue: bool,
    /// A chunked body still arriving: the decoder's state after the part in `req_out`.
    pub chunked: Option<ChunkedDecoder>,
}

/// Counts the connection open for as long as it lives, on the shard and on its listener's stats.
struct ConnGuard<'a> {
    shard: &'a Shard,
    stats: Rc<HttpStats>,
}

impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        self.shard.conn_closed();
        self.stats.downstream_cx_active.dec();
    }
}

pub(super) async fn serve(shard: Rc<Shard>, listener_id: u64, stream: TcpStream, peer: SocketAddr) {
    let stats = {
        let generation = shard.generation();
        let Some(i) = generation.snap.listener_index(listener_id) else { return };
        generation.http_stats[i].clone()
    };
    shard.conn_opened();
    stats.downstream_cx_total.inc();
    stats.downstream_cx_active.inc();
    let guard = ConnGuard { shard: &shard, stats };
    // Small heads and responses must not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(peer);
    let mut d = Downstream {
        stream,
        buf: BytesMut::with_capacity(IDLE_BUF),
        req_out: Vec::new(),
        resp_out: Vec::new(),
        response_started: false,
        status: 0,
        peer_ip: peer.ip().to_string(),
        peer,
        local,
        connection_id: shard.next_conn_id(),
        obs: Observed::default(),
    };
    loop {
        // Wait under the settings of the config current now...
        let waiting = shard.generation();
        // A listener removed by a reload serves no new requests on its old connections.
        let Some(i) = waiting.snap.listener_index(listener_id) else { return };
        let hcm = &waiting.snap.listeners[i].hcm;
        let head_wait = wait_for_head(&shard, hcm, &mut d).await;
        let started = Instant::now();
        match head_wait {
            HeadWait::Ready => {}
            HeadWait::Close => return,
            HeadWait::Refuse(status) => {
                let stats = &guard.stats;
                stats.downstream_rq_total.inc();
                stats.response(status).inc();
                if status == 408 {
                    stats.downstream_rq_header_timeout.inc();
                } else {
                    stats.downstream_cx_protocol_error.inc();
                }
                let body: &[u8] = match status {
                    408 => b"request timeout",
                    431 => b"Request Header Fields Too Large",
                    _ => b"Bad Request",
                };
                let listener = &waiting.snap.listeners[i];
                d.obs.begin(listener.observers.any());
                if status != 408 {
                    d.obs.flag(ResponseFlags::DPE);
                }
                local_reply(&mut d, status, body, &hcm.server_name, true, &[]).await;
                let (peer, local, id) = (d.peer, d.local, d.connection_id);
                observe::finish(&shard, &waiting, listener, &d.obs, status, started, peer, local, id);
                return;
            }
        }
        // ...but route the request that arrived by the newest one.
        let generation = shard.generation();
        let Some(i) = generation.snap.listener_index(listener_id) else { return };
        let stats = &generation.http_stats[i];
        let listener = &generation.snap.listeners[i];
        stats.downstream_rq_total.inc();
        stats.downstream_rq_active.inc();
        d.status = 0;
        d.obs.begin(listener.observers.any());
        let outcome = one_request(&shard, &generation, listener, stats, &mut d).await;
        stats.downstream_rq_active.dec();
        if d.status != 0 {
            stats.response(d.status).inc();
        }
        stats.downstream_rq_time.record_us(started.elapsed().as_micros() as u64);
        let (peer, local, id) = (d.peer, d.local, d.connection_id);
        observe::finish(&shard, &generation, listener, &d.obs, d.status, started, peer, local, id);
        shrink_idle(&mut d.buf, IDLE_BUF);
        for out in [&mut d.req_out, &mut d.resp_out] {
            if out.capacity() > KEEP_OUT {
                *out = Vec::new();
            }
        }
        match outcome {
            Outcome::KeepAlive if !shard.draining() => {}
            _ => return,
        }
    }
}

enum HeadWait {
    /// A complete head is at the start of `d.buf`.
    Ready,
    /// Client went away, idled out or the shard is draining: close quietly.
    Close,
    /// Answer this status and close.
    Refuse(u16),
}

/// Reads until `d.buf` starts with a complete, valid head (checked by parsing; the caller parses
/// once more in place, which is cheaper than carrying a parsed head across the await).
async fn wait_for_head(shard: &Shard, hcm: &HcmSettings, d: &mut Downstream) -> HeadWait {
    let mut first_byte: Option<Instant> = None;
    loop {
        if !d.buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            match http::parse_request(&d.buf, &mut headers, hcm.max_head_len) {
                Ok(Some(_)) => return HeadWait::Ready,
                Ok(None) => {}
                Err(e) => {
                    log::debug!("refusing request from {}: {e:?}", d.peer_ip);
                    return HeadWait::Refuse(e.status());
                }
            }
        }
        let wait = match first_byte {
            None if d.buf.is_empty() => hcm.idle_timeout,
            None => {
                first_byte = Some(Instant::now());
                hcm.request_headers_timeout
            }
            Some(t) => hcm.request_headers_timeout.saturating_sub(t.elapsed()),
        };
        let idle = d.buf.is_empty();
        let limit = if idle { IDLE_BUF } else { READ_CHUNK };
        let want = (hcm.max_head_len + 1).saturating_sub(d.buf.len()).clamp(1, limit);
        d.buf.reserve(want);
        let buf = spare(std::mem::take(&mut d.buf));
        let read = monoio::select! {
            r = monoio::time::timeout(wait, d.stream.read(buf)) => r,
            _ = shard.drain.wait(), if idle => return HeadWait::Close,
        };
        match read {
            Ok((Ok(0), _)) | Ok((Err(_), _)) => return HeadWait::Close,
            // The header timeout starts when a head turns out not to fit one read (above): most
            // heads do, and then no clock is read here at all.
            Ok((Ok(_), buf)) => d.buf = buf.into_inner(),
            Err(_) if idle => return HeadWait::Close,
            Err(_) => return HeadWait::Refuse(408),
        }
    }
}

/// Why skiff answers a request itself (for the router's stats).
#[derive(Clone, Copy)]
enum ReplyKind {
    BadRequest,
    NoRoute,
    Direct,
    Redirect,
}

/// What to do with a parsed request.
enum Plan<'g> {
    /// `consumed`: bytes of `d.buf` now in `d.req_out`.
    Forward {
        route: &'g Route,
        vhost: &'g VirtualHost,
        info: RequestInfo,
        consumed: usize,
    },
    Reply {
        kind: ReplyKind,
        status: u16,
        body: &'g [u8],
        location: Option<String>,
        consumed: Option<usize>,
    },
}

async fn one_request(
    shard: &Shard,
    generation: &Generation,
    listener: &ListenerSnap,
    stats: &HttpStats,
    d: &mut Downstream,
) -> Outcome {
    let hcm = &listener.hcm;
    d.response_started = false;
    d.req_out.clear();
    let plan = {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let Ok(Some(head)) = http::parse_request(&d.buf, &mut headers, hcm.max_head_len) else {
            return Outcome::Close;
        };
        let traced = observe::on_request_head(listener, &head, &mut d.obs, shard);
        plan_request(
            shard,
            &listener.routes,
            hcm,
            &head,
            &d.buf,
            &mut d.req_out,
            &d.peer_ip,
            traced,
            &mut d.obs,
        )
    };
    match plan {
        Plan::Reply { kind, status, body, location, consumed } => {
            match kind {
                ReplyKind::BadRequest => {
                    stats.downstream_cx_protocol_error.inc();
                    d.obs.flag(ResponseFlags::DPE);
                }
                ReplyKind::NoRoute => {
                    stats.no_route.inc();
                    d.obs.flag(ResponseFlags::NR);
                }
                ReplyKind::Direct => stats.rq_direct_response.inc(),
                ReplyKind::Redirect => stats.rq_redirect.inc(),
            }
            let extra: Vec<(&str, &str)> = location.as_deref().map(|l| ("location", l)).into_iter().collect();
            // A body we did not read would be taken for the next request: skip it if it is all
            // here, else close.
            let keep = match consumed {
                Some(n) => {
                    d.buf.advance(n.min(d.buf.len()));
                    true
                }
                None => false,
            };
            local_reply(d, status, body, &hcm.server_name, !keep, &extra).await
        }
        Plan::Forward { route, vhost, info, consumed } => {
            d.buf.advance(consumed);
            let keep_alive = info.keep_alive;
            let Action::Forward(fwd) = &route.action else { return Outcome::Close };
            let cluster = fwd.clusters.pick(shard.rng.next());
            let exchange = Exchange {
                shard,
                generation,
                cluster,
                fwd,
                listener,
                info,
                response_edits: [
                    &route.response_edits,
                    &vhost.response_edits,
                    &listener.routes.response_edits,
                ],
                server_name: &hcm.server_name,
            };
            // The route timeout starts when the request is complete: here when its body came with
            // the head, else `upstream::forward` starts it once the body has been relayed.
            let outcome = match fwd.timeout {
                Some(limit) if exchange.info.body_buffered => {
                    match monoio::time::timeout(limit, upstream::forward(exchange, d)).await {
                        Ok(outcome) => outcome,
                        Err(_) if d.response_started => {
                            d.obs.flag(ResponseFlags::UT);
                            generation.cluster_stats[cluster].upstream_rq_timeout.inc();
                            Outcome::Close
                        }
                        Err(_) => {
                            d.obs.flag(ResponseFlags::UT);
                            generation.cluster_stats[cluster].upstream_rq_timeout.inc();
                            return local_reply(
                                d,
                                504,
                                b"upstream request timeout",
                                &hcm.server_name,
                                true,
                                &[],
                            )
                            .await;
                        }
                    }
                }
                _ => upstream::forward(exchange, d).await,
            };
            match outcome {
                Outcome::KeepAlive if keep_alive => Outcome::KeepAlive,
                _ => Outcome::Close,
            }
        }
    }
}

/// Routes the request and, when it is to be forwarded, writes its upstream head (and the body that
/// came with it) into `d.req_out` and consumes them from `d.buf`.
#[allow(clippy::too_many_arguments)]
fn plan_request<'g>(
    shard: &Shard,
    table: &'g RouteTable,
    hcm: &HcmSettings,
    head: &RequestHead<'_>,
    buf: &[u8],
    req_out: &mut Vec<u8>,
    peer_ip: &str,
    traced: Option<(TraceContext, Option<&[u8]>)>,
    obs: &mut Observed,
) -> Plan<'g> {
    let scan = match scan_body(head, buf) {
        Ok(scan) => scan,
        Err(e) => {
            log::debug!("refusing request from {peer_ip}: chunked body: {}", e.0);
            return Plan::Reply {
                kind: ReplyKind::BadRequest,
                status: 400,
                body: b"Bad Request",
                location: None,
                consumed: None,
            };
        }
    };
    let buffered_body = scan.complete.then_some(head.head_len + scan.len);
    let host = head.host.unwrap_or("");
    let Some((vhost, route)) =
        table.virtual_host(host).and_then(|vhost| Some((vhost, vhost.route(head.path, head.headers)?)))
    else {
        return Plan::Reply {
            kind: ReplyKind::NoRoute,
            status: 404,
            body: b"",
            location: None,
            consumed: buffered_body,
        };
    };
    match &route.action {
        Action::Direct { status, body } => Plan::Reply {
            kind: ReplyKind::Direct,
            status: *status,
            body: body.as_deref().unwrap_or("").as_bytes(),
            location: None,
            consumed: buffered_body,
        },
        Action::Redirect(r) => Plan::Reply {
            kind: ReplyKind::Redirect,
            status: r.status,
            body: b"",
            location: Some(route.redirect_location(r, host, head.path)),
            consumed: buffered_body,
        },
        Action::Forward(fwd) => {
            let mut rewritten = String::new();
            let path =
                if route.rewrite_path(head.path, &mut rewritten) { rewritten.as_str() } else { head.path };
            write_upstream_head(
                req_out,
                head,
                path,
                fwd.host_rewrite.as_deref(),
                [&route.request_edits, &vhost.request_edits, &table.request_edits],
                peer_ip,
                shard,
                hcm.generate_request_id,
                traced,
                obs,
            );
            let body_end = head.head_len + scan.len;
            obs.bytes_received = scan.payload;
            req_out.extend_from_slice(&buf[head.head_len..body_end]);
            let info = RequestInfo {
                body: head.body,
                body_in_head_read: scan.len,
                body_buffered: scan.complete,
                keep_alive: head.keep_alive,
                head_method: head.method == "HEAD",
                http10: head.version == Version::Http10,
                expect_continue: head.expect_continue,
                chunked: scan.decoder,
            };
            Plan::Forward { route, vhost, info, consumed: body_end }
        }
    }
}

/// How much of the body arrived with the head.
struct BodyScan {
    /// Body bytes present in the buffer (all of them when `complete`).
    len: usize,
    /// Of those, payload bytes (chunked framing excluded): `%BYTES_RECEIVED%` so far.
    payload: u64,
    complete: bool,
    /// For a chunked body still arriving, where its decoder stands.
    decoder: Option<ChunkedDecoder>,
}

/// Err: the chunked framing that arrived is already invalid (never forwarded).
fn scan_body(head: &RequestHead<'_>, buf: &[u8]) -> Result<BodyScan, http::ChunkError> {
    let available = &buf[head.head_len..];
    Ok(match head.body {
        BodyKind::None | BodyKind::CloseDelimited => {
            BodyScan { len: 0, payload: 0, complete: true, decoder: None }
        }
        BodyKind::Length(n) => {
            let complete = n <= available.len() as u64;
            let len = if complete { n as usize } else { available.len() };
            BodyScan { len, payload: len as u64, complete, decoder: None }
        }
        BodyKind::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            let mut pos = 0;
            let mut payload = 0;
            while pos < available.len() {
                let step = decoder.advance(&available[pos..])?;
                pos += step.consumed;
                payload += step.data.len() as u64;
                if step.done {
                    return Ok(BodyScan { len: pos, payload, complete: true, decoder: None });
                }
                if step.consumed == 0 {
                    break;
                }
            }
            BodyScan { len: pos, payload, complete: false, decoder: Some(decoder) }
        }
    })
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) and `expect`, which skiff answers itself.
fn hop_by_hop(name: &str) -> bool {
    match name.len() {
        2 => header_is(name, "te"),
        6 => header_is(name, "expect"),
        7 => header_is(name, "upgrade") || header_is(name, "trailer"),
        10 => header_is(name, "connection") || header_is(name, "keep-alive"),
        16 => header_is(name, "proxy-connection"),
        17 => header_is(name, "transfer-encoding"),
        _ => false,
    }
}

#[allow(clippy::too_many_arguments)]
fn write_upstream_head(
    out: &mut Vec<u8>,
    head: &RequestHead<'_>,
    path: &str,
    host_rewrite: Option<&str>,
    edits: [&HeaderEdits; 3],
    peer_ip: &str,
    shard: &Shard,
    generate_request_id: bool,
    traced: Option<(TraceContext, Option<&[u8]>)>,
    obs: &mut Observed,
) {
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let any_edits = edits.iter().any(|e| !e.is_empty());
    let (mut saw_xff, mut saw_proto, mut saw_id, mut saw_host) = (false, false, false, false);
    // Only a Connection header can make another header hop-by-hop; without one (the common case)
    // skip the per-header scan of its list, which would make the head O(headers²).
    let has_connection = head.headers.iter().any(|h| header_is(h.name, "connection"));
    // Several x-forwarded-for lines are one list (RFC 9110 §5.3): the client's address goes after
    // its last element, once, not after each line.
    let last_xff = head.headers.iter().rposition(|h| header_is(h.name, "x-forwarded-for"));
    for (i, h) in head.headers.iter().enumerate() {
        let name = h.name;
        if hop_by_hop(name) || (has_connection && head.connection_lists(name)) {
            continue;
        }
        if any_edits && edits.iter().any(|e| e.drops(name)) {
            continue;
        }
        // A traced request carries this hop's span context, not the one it came with.
        if traced.is_some() && trace::is_propagation_header(name) {
            continue;
        }
        if header_is(name, "host") {
            saw_host = true;
            // `head.host` is the authority of an absolute-form target when there is one (RFC 9112
            // §3.2.2: it replaces Host), which is also what routing used: the upstream must see the
            // host the request was routed by, not a different Host line.
            let value = host_rewrite.or(head.host).map_or(h.value, str::as_bytes);
            reply::header(out, b"host", value);
            continue;
        }
        if last_xff == Some(i) {
            saw_xff = true;
            out.extend_from_slice(b"x-forwarded-for: ");
            out.extend_from_slice(h.value);
            out.extend_from_slice(b", ");
            out.extend_from_slice(peer_ip.as_bytes());
            out.extend_from_slice(b"\r\n");
            continue;
        }
        saw_proto |= header_is(name, "x-forwarded-proto");
        saw_id |= header_is(name, "x-request-id");
        reply::header(out, name.as_bytes(), h.value);
    }
    if !saw_host {
        if let Some(host) = host_rewrite.or(head.host) {
            reply::header(out, b"host", host.as_bytes());
        }
    }
    if !saw_xff {
        reply::header(out, b"x-forwarded-for", peer_ip.as_bytes());
    }
    if !saw_proto {
        reply::header(out, b"x-forwarded-proto", b"http");
    }
    if !saw_id && generate_request_id {
        out.extend_from_slice(b"x-request-id: ");
        let at = out.len();
        reply::request_id(&shard.rng, out);
        observe::on_generated_request_id(obs, &out[at..]);
        out.extend_from_slice(b"\r\n");
    }
    if let Some((ctx, tracestate)) = traced {
        trace::write_headers(&ctx, tracestate, out);
    }
    if path != head.path {
        reply::header(out, b"x-envoy-original-path", head.path.as_bytes());
    }
    if head.body == BodyKind::Chunked {
        reply::header(out, b"transfer-encoding", b"chunked");
    }
    for e in edits.iter().rev() {
        for a in &e.add {
            reply::header(out, a.name.as_bytes(), a.value.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Sends a reply skiff made itself; `close` ends the connection after it.
pub(super) async fn local_reply(
    d: &mut Downstream,
    status: u16,
    body: &[u8],
    server: &str,
    close: bool,
    extra: &[(&str, &str)],
) -> Outcome {
    d.resp_out.clear();
    d.status = status;
    // Envoy's `%BYTES_SENT%` counts a local reply's body too.
    d.obs.bytes_sent = body.len() as u64;
    reply::local(&mut d.resp_out, status, body, server, close, extra);
    match write_out(&mut d.stream, &mut d.resp_out).await {
        Ok(()) if !close => Outcome::KeepAlive,
        _ => Outcome::Close,
    }
}

/// Writes all of `out` and clears it (keeping its capacity).
pub(super) async fn write_out(stream: &mut TcpStream, out: &mut Vec<u8>) -> std::io::Result<()> {
    let (res, mut buf) = stream.write_all(std::mem::take(out)).await;
    buf.clear();
    *out = buf;
    res.map(|_| ())
}

/// Reads once, appending to `buf` (growing it by up to `READ_CHUNK`); Ok(0) is end of stream.
pub(super) async fn read_more(stream: &mut TcpStream, buf: &mut BytesMut) -> std::io::Result<usize> {
    read_up_to(stream, buf, READ_CHUNK).await
}

/// Bodies move in larger reads than heads: a 64 KiB response then costs one read and one write
/// instead of four of each.
pub(super) const BODY_CHUNK: usize = 64 * 1024;

/// Reads once with room for at least `want` bytes; Ok(0) is end of stream.
pub(super) async fn read_up_to(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    want: usize,
) -> std::io::Result<usize> {
    buf.reserve(want);
    let (res, b) = stream.read(spare(std::mem::take(buf))).await;
    *buf = b.into_inner();
    res
}

/// After a large body, gives an empty buffer's memory back down to `keep`, so an idle connection
/// (or one waiting in the pool) holds a small buffer however big its last body was.
pub(super) fn shrink_idle(buf: &mut BytesMut, keep: usize) {
    if buf.is_empty() && buf.capacity() > keep {
        *buf = BytesMut::with_capacity(keep);
    }
}

/// The unfilled capacity of `buf` as a read target. monoio reads into a `BytesMut` at its *start*
/// (its `write_ptr` is `as_mut_ptr()`), so reading into a buffer that already holds part of a head
/// or a chunk-size line would overwrite those bytes; a `SliceMut` from `len` appends instead. The
/// caller must have reserved capacity: an empty slice would read 0 bytes and look like EOF.
fn spare(buf: BytesMut) -> SliceMut<BytesMut> {
    let len = buf.len();
    buf.slice_mut(len..)
}
