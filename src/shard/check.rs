//! Requests skiff sends on its own behalf to a cluster and whose answer it reads itself: a
//! filter's check (`filters::Check`, ext_authz's authorization request or gRPC call), which the
//! request owner awaits, and a mirror's shadow request (`mirror`), whose answer is thrown away.
//! One HTTP/1.1 exchange on the shard's pool (to an HTTP/2 cluster, through its bridge: a gRPC
//! answer's trailers come back as chunked trailers, kept in the answer): a pooled connection or a
//! new one within the cluster's
//! `max_connections` (never waiting for one: at the limit the exchange fails) and
//! `connect_timeout`, counted in the cluster's stats as any request. Owns only the exchange;
//! what the answer means is the caller's.

use super::socket::{self, read_up_to, READ_CHUNK};
use super::state::{Generation, Shard};
use super::upstream;
use crate::cluster::breaker::Resource;
use crate::cluster::pool::{ConnSlot, PoolKey};
use crate::filters::{CheckAnswer, CheckFailure, CheckOutcome};
use crate::http::{self, BodyKind, ChunkedDecoder, MAX_HEADERS};
use bytes::Buf;
use std::borrow::Cow;
use std::time::{Duration, Instant};

/// The payload of the request body that arrived with its head (`arrived`, as framed): a
/// chunked body decoded as far as it goes.
pub(super) fn payload(kind: BodyKind, arrived: &[u8]) -> Cow<'_, [u8]> {
    if kind != BodyKind::Chunked {
        return Cow::Borrowed(arrived);
    }
    let mut decoder = ChunkedDecoder::new();
    let (mut out, mut rest) = (Vec::new(), arrived);
    while let Ok(step) = decoder.advance(rest) {
        out.extend_from_slice(&rest[step.data.clone()]);
        rest = &rest[step.consumed..];
        if step.done || step.consumed == 0 {
            break;
        }
    }
    Cow::Owned(out)
}

/// Puts a check's header edits on the upstream request head at the start of `request`: the
/// lines named in `set` are removed and `set`'s own added at the head's end (as Envoy's `setCopy`
/// removes, then appends), a `join` value is appended to the first line of its name (`, value`,
/// Envoy's `appendCopy`; none: nothing, as Envoy's gRPC check), then `append`'s lines; last, the
/// `remove` names go.
pub(super) fn edit_head(request: &mut Vec<u8>, o: &CheckOutcome) {
    let (set, join, remove) = (&o.request_headers_set, &o.request_headers_join, &o.request_headers_remove);
    if set.is_empty() && o.request_headers_append.is_empty() && join.is_empty() && remove.is_empty() {
        return;
    }
    let Some(head_end) = request.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 2) else { return };
    let named =
        |list: &[(Vec<u8>, Vec<u8>)], name: &[u8]| list.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let removed = |name: &[u8]| remove.iter().any(|n| n.eq_ignore_ascii_case(name));
    let mut head = Vec::with_capacity(head_end + 128);
    let mut lines = request[..head_end].split_inclusive(|b| *b == b'\n');
    if let Some(first) = lines.next() {
        head.extend_from_slice(first);
    }
    let mut joined = vec![false; join.len()];
    for line in lines {
        let name = line.split(|b| *b == b':').next().unwrap_or_default();
        if named(set, name) || removed(name) {
            continue;
        }
        let found =
            join.iter().zip(joined.iter_mut()).find(|((n, _), done)| !**done && n.eq_ignore_ascii_case(name));
        match found {
            Some(((_, value), done)) => {
                *done = true;
                head.extend_from_slice(line.trim_ascii_end());
                head.push(b',');
                head.extend_from_slice(value);
                head.extend_from_slice(b"\r\n");
            }
            None => head.extend_from_slice(line),
        }
    }
    for (name, value) in set.iter().filter(|(n, _)| !removed(n)) {
        head.extend_from_slice(name);
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(&o.request_headers_append);
    request.splice(..head_end, head);
}

/// The most of an answer's body a check keeps (a denial's page); a longer one fails the check.
const CHECK_BODY_LIMIT: usize = 1024 * 1024;
const HEAD_LIMIT: usize = 64 * 1024;

/// What to do with the answer's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Body {
    /// Read it whole (up to `CHECK_BODY_LIMIT`) and return it.
    Keep,
    /// A `Content-Length` body is skipped and the connection kept; any other framing closes it.
    Skip,
}

/// A filter's check: `request` sent to `cluster`, its answer read whole within `timeout`
/// (which bounds connecting too, as Envoy's async client's timeout does). A timeout counts as
/// the cluster's `upstream_rq_timeout` and a 504, as Envoy's router counts it.
pub(super) async fn check(
    shard: &Shard,
    generation: &Generation,
    cluster: usize,
    request: Vec<u8>,
    timeout: Duration,
) -> Result<CheckAnswer, CheckFailure> {
    let sent = send(shard, generation, cluster, request, Body::Keep);
    let started = Instant::now();
    match Box::pin(shard.timers.limit(timeout, sent)).await {
        Some(Ok(mut answer)) => {
            // Envoy's router adds it to the answer, so it reaches whoever the answer's headers go to.
            let ms = started.elapsed().as_millis().to_string().into_bytes();
            answer.headers.push((b"x-envoy-upstream-service-time".to_vec(), ms));
            Ok(answer)
        }
        Some(failed) => failed,
        None => {
            let stats = &generation.cluster_stats[cluster];
            stats.upstream_rq_timeout.inc();
            stats.completed(504);
            Err(CheckFailure::Timeout)
        }
    }
}

/// Sends `request` to `cluster` and reads the answer's head and (per `body`) its body.
pub(super) async fn send(
    shard: &Shard,
    generation: &Generation,
    cluster: usize,
    mut request: Vec<u8>,
    body: Body,
) -> Result<CheckAnswer, CheckFailure> {
    let snap = &generation.snap.clusters[cluster];
    let stats = &generation.cluster_stats[cluster];
    let Some(endpoint) = generation.clusters[cluster].pick(snap, &shard.rng) else {
        stats.upstream_cx_none_healthy.inc();
        return Err(CheckFailure::NoHost);
    };
    let addr = snap.endpoints[endpoint];
    let host = &generation.host_stats[cluster][endpoint];
    let key = PoolKey::of(snap.pool_id, addr);
    let mut up = match upstream::take_pooled(shard, key) {
        Some(up) => up,
        None => {
            let host_cap = snap.host_room(endpoint);
            if host_cap.is_some_and(|(_, room)| !room)
                || !snap.breaker.try_take(Resource::Connections, &snap.circuit_breakers)
            {
                stats.upstream_cx_overflow.inc();
                return Err(CheckFailure::NoHost);
            }
            stats.upstream_rq_pending_total.inc();
            let slot = ConnSlot::new(snap.breaker.clone(), shard.pool.endpoint(key))
                .on_host(host_cap.map(|(n, _)| n));
            match upstream::connect(&shard.stats, addr, key, snap, stats, host, slot).await {
                Ok(up) => up,
                Err(_) => {
                    // Envoy's router answers the failed connection with its 503.
                    stats.completed(503);
                    return Err(CheckFailure::Connect);
                }
            }
        }
    };
    let Some(_request) = snap.breaker.hold(Resource::Requests, &snap.circuit_breakers) else {
        stats.upstream_rq_active_overflow.inc();
        return Err(CheckFailure::NoHost);
    };
    up.requests += 1;
    up.in_request = true;
    stats.upstream_rq_total.inc();
    host.rq_total.inc();
    let started = Instant::now();
    let sent = request.len() as u64;
    if socket::write_kept(&mut up.stream, &mut request).await.is_err() {
        return Err(CheckFailure::Exchange);
    }
    stats.upstream_cx_tx_bytes_total.add(sent);
    let _ = up.read.disarm().await;
    let Some((reader, buf)) = up.read.parts() else { return Err(CheckFailure::Exchange) };
    let mut answer = CheckAnswer::default();
    let (framing, keep_alive) = loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match http::parse_response(buf, &mut headers, HEAD_LIMIT, false) {
            Ok(Some(head)) if (100..200).contains(&head.status) => buf.advance(head.head_len),
            Ok(Some(head)) => {
                answer.status = head.status;
                if body == Body::Keep {
                    let lower = |name: &str| name.as_bytes().to_ascii_lowercase();
                    answer.headers = head.headers.iter().map(|h| (lower(h.name), h.value.to_vec())).collect();
                }
                let found = (head.body, head.keep_alive);
                buf.advance(head.head_len);
                break found;
            }
            Ok(None) => match read_up_to(reader, buf, READ_CHUNK).await {
                Ok(1..) => {}
                _ => {
                    up.peer_closed = true;
                    return Err(CheckFailure::Exchange);
                }
            },
            Err(_) => return Err(CheckFailure::Exchange),
        }
    };
    stats.completed(answer.status);
    let mut reusable = keep_alive;
    match (framing, body) {
        (BodyKind::None, _) => {}
        (BodyKind::Length(mut left), _) => {
            while left > 0 {
                let have = (buf.len() as u64).min(left) as usize;
                if body == Body::Keep {
                    if answer.body.len() + have > CHECK_BODY_LIMIT {
                        return Err(CheckFailure::Exchange);
                    }
                    answer.body.extend_from_slice(&buf[..have]);
                }
                buf.advance(have);
                left -= have as u64;
                if left > 0 && !matches!(read_up_to(reader, buf, READ_CHUNK).await, Ok(1..)) {
                    up.peer_closed = true;
                    return Err(CheckFailure::Exchange);
                }
            }
        }
        (_, Body::Skip) => return Ok(answer),
        (BodyKind::Chunked, Body::Keep) => {
            let mut decoder = ChunkedDecoder::new();
            // The framing after the last payload byte: the last chunk's line and the trailers
            // (a gRPC answer's `grpc-status`).
            let mut tail = Vec::new();
            loop {
                let step = decoder.advance(buf).map_err(|_| CheckFailure::Exchange)?;
                answer.body.extend_from_slice(&buf[step.data.clone()]);
                if step.data.is_empty() {
                    tail.extend_from_slice(&buf[..step.consumed]);
                } else {
                    tail.clear();
                    tail.extend_from_slice(&buf[step.data.end..step.consumed]);
                }
                buf.advance(step.consumed);
                if step.done {
                    answer.trailers = trailers(&tail);
                    break;
                }
                if answer.body.len() > CHECK_BODY_LIMIT {
                    return Err(CheckFailure::Exchange);
                }
                if step.consumed == 0 && !matches!(read_up_to(reader, buf, READ_CHUNK).await, Ok(1..)) {
                    up.peer_closed = true;
                    return Err(CheckFailure::Exchange);
                }
            }
        }
        (BodyKind::CloseDelimited, Body::Keep) => {
            reusable = false;
            loop {
                answer.body.extend_from_slice(buf);
                buf.clear();
                if answer.body.len() > CHECK_BODY_LIMIT {
                    return Err(CheckFailure::Exchange);
                }
                match read_up_to(reader, buf, READ_CHUNK).await {
                    Ok(1..) => {}
                    Ok(_) => break,
                    Err(_) => return Err(CheckFailure::Exchange),
                }
            }
            up.peer_closed = true;
        }
    }
    stats.upstream_rq_time.record_us(started.elapsed().as_micros() as u64);
    up.in_request = false;
    if reusable && buf.is_empty() && !up.expired() && up.read.arm(READ_CHUNK) {
        shard.pool.put(up, shard.date.second());
    }
    Ok(answer)
}

/// The trailer fields in `tail` (what followed a chunked body's last payload byte), names
/// lower-cased; the chunk-size lines have no colon.
fn trailers(tail: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    tail.split(|b| *b == b'\n')
        .filter_map(|line| {
            let i = line.iter().position(|b| *b == b':')?;
            Some((line[..i].trim_ascii().to_ascii_lowercase(), line[i + 1..].trim_ascii().to_vec()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checks_lines_replace_the_named_ones_and_append_the_others_inside_the_head() {
        let mut request =
            b"GET / HTTP/1.1\r\nhost: a\r\nX-User: evil\r\nx-append: a0\r\nx-j: 0\r\nx-gone: g\r\n\r\nbody"
                .to_vec();
        let pair = |n: &str, v: &str| (n.as_bytes().to_vec(), v.as_bytes().to_vec());
        let o = CheckOutcome {
            request_headers_set: vec![pair("x-user", "user1")],
            request_headers_append: b"x-append: a1\r\n".to_vec(),
            request_headers_join: vec![pair("x-j", "1"), pair("x-new", "n")],
            request_headers_remove: vec![b"x-gone".to_vec()],
            ..Default::default()
        };
        edit_head(&mut request, &o);
        assert_eq!(
            String::from_utf8(request).unwrap(),
            "GET / HTTP/1.1\r\nhost: a\r\nx-append: a0\r\nx-j: 0,1\r\nx-user: user1\r\nx-append: a1\r\n\r\nbody"
        );
        let mut untouched = b"GET / HTTP/1.1\r\n\r\n".to_vec();
        edit_head(&mut untouched, &CheckOutcome::default());
        assert_eq!(untouched, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn the_trailers_after_the_last_chunk_are_read() {
        let tail = b"\r\n0\r\nGrpc-Status: 0\r\ngrpc-message: \r\n\r\n";
        let want = [(b"grpc-status".to_vec(), b"0".to_vec()), (b"grpc-message".to_vec(), Vec::new())];
        assert_eq!(trailers(tail), want);
    }

    #[test]
    fn a_chunked_body_is_decoded_as_far_as_it_came() {
        assert_eq!(&*payload(BodyKind::Length(5), b"hello"), b"hello");
        assert_eq!(&*payload(BodyKind::Chunked, b"3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n"), b"hello");
        assert_eq!(&*payload(BodyKind::Chunked, b"3\r\nhel\r\n2\r\n"), b"hel");
    }
}
