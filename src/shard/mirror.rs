//! Request mirroring (`request_mirror_policies`): a copy of a request, its Host suffixed `-shadow`,
//! sent to another cluster by a task of its own and its response read and thrown away. The
//! client's request never waits for it and never sees it fail. Owns only the shadow copy and its
//! sampling: the copy is made by the request's owner (`request`) and sent by `check::send`, on
//! the shard's pool as any request.

use super::check::Body;
use super::headers::written_header_value;
use super::state::{Generation, Shard};
use crate::route::{Mirror, MirrorTarget};
use std::rc::Rc;
use std::time::Duration;

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
    let sent = super::check::send(&shard, &generation, cluster, request, Body::Skip);
    let _ = monoio::time::timeout(SHADOW_LIMIT, sent).await;
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
