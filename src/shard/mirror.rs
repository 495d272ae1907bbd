//! Request mirroring (`request_mirror_policies`): a copy of a request, its Host suffixed `-shadow`,
//! sent to another cluster by a task of its own and its response read and thrown away. The
//! client's request never waits for it and never sees it fail. Owns only the shadow exchange:
//! the copy is made by the request's owner (`request`), and connections come from and go back to
//! the shard's pool as any request's do.

use super::headers::written_header_value;
use super::socket::{self, read_up_to, READ_CHUNK};
use super::state::{Generation, Shard};
use super::upstream;
use crate::cluster::breaker::Resource;
use crate::cluster::pool::{ConnSlot, PoolKey};
use crate::http::{self, BodyKind, MAX_HEADERS};
use crate::route::{Mirror, MirrorTarget};
use bytes::Buf;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How long a shadow exchange may take in all: a mirror cluster that hangs must not pile up tasks.
const SHADOW_LIMIT: Duration = Duration::from_secs(15);

/// The cluster `mirror` sends this request's copy to: its own, or the one the request's
/// `cluster_header` names (found in the upstream head, which carries the request's headers).
pub(super) fn target(mirror: &Mirror, generation: &Generation, upstream_request: &[u8]) -> Option<usize> {
    match &mirror.target {
        MirrorTarget::Cluster(c) => Some(*c),
        MirrorTarget::Header(name) => {
            let value =
                upstream_request[written_header_value(upstream_request, name.as_bytes())?].trim_ascii();
            generation.snap.clusters.iter().position(|c| c.name.as_bytes() == value)
        }
    }
}

/// Whether this request is sampled for `mirror` (`runtime_fraction`); `roll` is uniformly random.
pub(super) fn sampled(mirror: &Mirror, roll: u64) -> bool {
    mirror.per_million >= 1_000_000 || (roll % 1_000_000) < u64::from(mirror.per_million)
}

/// The shadow copy of an upstream request head (and the body that came with it): the same bytes
/// with `-shadow` after the Host's name, before its port as Envoy puts it (`a:8080` →
/// `a-shadow:8080`). None when the head has no Host line to rewrite.
pub(super) fn shadow_copy(request: &[u8], suffix: bool) -> Option<Vec<u8>> {
    if !suffix {
        return Some(request.to_vec());
    }
    let host = written_header_value(request, b"host")?;
    let value = &request[host.clone()];
    // A port follows the last colon, unless it is inside an IPv6 literal's brackets.
    let name_end = match value.iter().rposition(|b| *b == b':') {
        Some(colon) if !value[colon..].contains(&b']') => host.start + colon,
        _ => host.end,
    };
    let mut out = Vec::with_capacity(request.len() + 7);
    out.extend_from_slice(&request[..name_end]);
    out.extend_from_slice(b"-shadow");
    out.extend_from_slice(&request[name_end..]);
    Some(out)
}

/// Sends `request` to `cluster` and reads its response to the end, within `SHADOW_LIMIT`;
/// every failure is silent to the client (it shows in the mirror cluster's stats).
pub(super) async fn shadow(shard: Rc<Shard>, generation: Rc<Generation>, cluster: usize, request: Vec<u8>) {
    let _ = monoio::time::timeout(SHADOW_LIMIT, exchange(&shard, &generation, cluster, request)).await;
}

async fn exchange(shard: &Shard, generation: &Generation, cluster: usize, mut request: Vec<u8>) {
    let snap = &generation.snap.clusters[cluster];
    let stats = &generation.cluster_stats[cluster];
    let Some(endpoint) = generation.clusters[cluster].pick(snap, &shard.rng) else {
        stats.upstream_cx_none_healthy.inc();
        return;
    };
    let addr = snap.endpoints[endpoint];
    let host = &generation.host_stats[cluster][endpoint];
    let key = PoolKey { cluster: snap.pool_id, addr };
    let mut up = match upstream::take_pooled(shard, key) {
        Some(up) => up,
        None => {
            // A shadow never waits for a connection: at `max_connections` (the cluster's or its
            // host's) it is dropped.
            let host_cap = snap.host_room(endpoint);
            if host_cap.is_some_and(|(_, room)| !room)
                || !snap.breaker.try_take(Resource::Connections, &snap.circuit_breakers)
            {
                stats.upstream_cx_overflow.inc();
                return;
            }
            let slot = ConnSlot::new(snap.breaker.clone(), shard.pool.endpoint(key))
                .on_host(host_cap.map(|(n, _)| n));
            match upstream::connect(&shard.stats, addr, key, snap, stats, host, slot).await {
                Ok(up) => up,
                Err(_) => return,
            }
        }
    };
    let Some(_request) = snap.breaker.hold(Resource::Requests, &snap.circuit_breakers) else {
        stats.upstream_rq_active_overflow.inc();
        return;
    };
    up.requests += 1;
    up.in_request = true;
    stats.upstream_rq_total.inc();
    host.rq_total.inc();
    let started = Instant::now();
    let sent = request.len() as u64;
    if socket::write_kept(&mut up.stream, &mut request).await.is_err() {
        return;
    }
    stats.upstream_cx_tx_bytes_total.add(sent);
    let _ = up.read.disarm().await;
    let Some((reader, buf)) = up.read.parts() else { return };
    // The response head, then a Content-Length body skipped; any other framing closes the
    // connection once the head is read (the shadow's body is of no use).
    let (status, body, keep_alive) = loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match http::parse_response(buf, &mut headers, 64 * 1024, false) {
            Ok(Some(head)) if (100..200).contains(&head.status) => buf.advance(head.head_len),
            Ok(Some(head)) => {
                let found = (head.status, head.body, head.keep_alive);
                buf.advance(head.head_len);
                break found;
            }
            Ok(None) => match read_up_to(reader, buf, READ_CHUNK).await {
                Ok(1..) => {}
                _ => {
                    up.peer_closed = true;
                    return;
                }
            },
            Err(_) => return,
        }
    };
    stats.completed(status);
    let BodyKind::Length(mut left) = body else { return };
    while left > 0 {
        let have = (buf.len() as u64).min(left);
        buf.advance(have as usize);
        left -= have;
        if left > 0 && !matches!(read_up_to(reader, buf, READ_CHUNK).await, Ok(1..)) {
            up.peer_closed = true;
            return;
        }
    }
    stats.upstream_rq_time.record_us(started.elapsed().as_micros() as u64);
    up.in_request = false;
    if keep_alive && buf.is_empty() && !up.expired() && up.read.arm(READ_CHUNK) {
        shard.pool.put(up, shard.date.second());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shadow_host_gets_its_suffix_before_any_port() {
        let copy = |r: &str| String::from_utf8(shadow_copy(r.as_bytes(), true).unwrap()).unwrap();
        assert_eq!(
            copy("GET / HTTP/1.1\r\nhost: a\r\nx: 1\r\n\r\nbody"),
            "GET / HTTP/1.1\r\nhost: a-shadow\r\nx: 1\r\n\r\nbody"
        );
        assert_eq!(
            copy("GET / HTTP/1.1\r\nhost: a.b:8080\r\n\r\n"),
            "GET / HTTP/1.1\r\nhost: a.b-shadow:8080\r\n\r\n"
        );
        assert_eq!(
            copy("GET / HTTP/1.1\r\nhost: [::1]\r\n\r\n"),
            "GET / HTTP/1.1\r\nhost: [::1]-shadow\r\n\r\n"
        );
        assert_eq!(shadow_copy(b"GET / HTTP/1.1\r\nx: 1\r\n\r\n", true), None);
        assert_eq!(
            shadow_copy(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n", false).unwrap(),
            b"GET / HTTP/1.1\r\nhost: a\r\n\r\n"
        );
    }

    #[test]
    fn sampling_follows_the_fraction() {
        let m = |per_million| Mirror { target: MirrorTarget::Cluster(0), per_million, shadow_suffix: true };
        assert!((0..1000).all(|r| sampled(&m(1_000_000), r * 7919)));
        assert!(!(0..1000).any(|r| sampled(&m(0), r * 7919)));
        let half =
            (0..100_000u64).filter(|r| sampled(&m(500_000), r.wrapping_mul(0x9E37_79B9_7F4A_7C15))).count();
        assert!((45_000..55_000).contains(&half), "{half}");
    }
}
