//! A request's hash key from its route's `hash_policy`, as Envoy computes it: xxHash64 of a
//! header's values (sorted, hashed as one stream), a cookie's value, the client's IP as text or a
//! query parameter's decoded value; several policies fold together by rotating the hash so far
//! left one bit and XORing the next, and a `terminal` policy that produced a hash ends the walk.
//! Pure: reads the parsed head, knows nothing of clusters or tables (`cluster::hash_lb`).

use crate::config::{HashMethod, HashPolicy};
use crate::http::header_is;
use xxhash_rust::xxh64::{xxh64, Xxh64};

/// The request's hash, or None when no policy found its key (Envoy then picks a random host).
pub fn request_hash(
    policies: &[HashPolicy],
    headers: &[httparse::Header<'_>],
    path: &str,
    peer_ip: &str,
) -> Option<u64> {
    let mut hash: Option<u64> = None;
    for p in policies {
        if let Some(new) = one(&p.method, headers, path, peer_ip) {
            hash = Some(hash.map_or(0, |h| h.rotate_left(1)) ^ new);
        }
        if p.terminal && hash.is_some() {
            break;
        }
    }
    hash
}

fn one(method: &HashMethod, headers: &[httparse::Header<'_>], path: &str, peer_ip: &str) -> Option<u64> {
    match method {
        HashMethod::Header(name) => {
            let mut values: Vec<&[u8]> =
                headers.iter().filter(|h| header_is(h.name, name)).map(|h| h.value).collect();
            if values.is_empty() {
                return None;
            }
            // The same hash whatever order repeated headers came in.
            values.sort_unstable();
            let mut state = Xxh64::new(0);
            values.iter().for_each(|v| state.update(v));
            Some(state.digest())
        }
        HashMethod::Cookie(name) => {
            let value = headers
                .iter()
                .filter(|h| header_is(h.name, "cookie"))
                .flat_map(|h| h.value.split(|b| *b == b';'))
                .find_map(|pair| {
                    let pair = pair.trim_ascii();
                    let eq = pair.iter().position(|b| *b == b'=')?;
                    (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
                })?;
            // A quoted cookie value is hashed without its quotes, as Envoy parses it.
            let value = match value {
                [b'"', inner @ .., b'"'] => inner,
                v => v,
            };
            Some(xxh64(value, 0))
        }
        HashMethod::SourceIp => Some(xxh64(peer_ip.as_bytes(), 0)),
        HashMethod::QueryParameter(name) => {
            let query = path.split_once('?')?.1;
            let query = query.split_once('#').map_or(query, |(q, _)| q);
            query.split('&').find_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (decode(k) == name.as_bytes()).then(|| xxh64(&decode(v), 0))
            })
        }
    }
}

/// Percent-decoding, as Envoy decodes query parameters before hashing them (`+` stays `+`).
fn decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<'a>(name: &'a str, value: &'a str) -> httparse::Header<'a> {
        httparse::Header { name, value: value.as_bytes() }
    }

    fn pol(method: HashMethod, terminal: bool) -> HashPolicy {
        HashPolicy { method, terminal }
    }

    #[test]
    fn a_header_hashes_to_its_xxhash64_and_repeats_in_any_order_agree() {
        let p = [pol(HashMethod::Header("x-user".into()), false)];
        assert_eq!(request_hash(&p, &[h("X-User", "alice")], "/", "1.2.3.4"), Some(xxh64(b"alice", 0)));
        let ab = request_hash(&p, &[h("x-user", "a"), h("x-user", "b")], "/", "");
        let ba = request_hash(&p, &[h("x-user", "b"), h("x-user", "a")], "/", "");
        assert_eq!(ab, ba);
        assert_eq!(ab, Some(xxh64(b"ab", 0)));
        assert_eq!(request_hash(&p, &[], "/", ""), None);
    }

    #[test]
    fn policies_fold_by_rotation_and_terminal_stops_the_walk() {
        let hdr = pol(HashMethod::Header("x-a".into()), true);
        let ip = pol(HashMethod::SourceIp, false);
        let headers = [h("x-a", "1")];
        assert_eq!(request_hash(&[hdr.clone(), ip.clone()], &headers, "/", "10.0.0.1"), Some(xxh64(b"1", 0)));
        let both = request_hash(&[ip.clone(), hdr.clone()], &headers, "/", "10.0.0.1");
        assert_eq!(both, Some(xxh64(b"10.0.0.1", 0).rotate_left(1) ^ xxh64(b"1", 0)));
        // A terminal policy without a key does not stop the walk.
        assert_eq!(request_hash(&[hdr, ip], &[], "/", "10.0.0.1"), Some(xxh64(b"10.0.0.1", 0)));
    }

    #[test]
    fn cookies_and_query_parameters_are_found_and_decoded() {
        let c = [pol(HashMethod::Cookie("session".into()), false)];
        let headers = [h("cookie", "a=1; session=\"xyz\"; b=2")];
        assert_eq!(request_hash(&c, &headers, "/", ""), Some(xxh64(b"xyz", 0)));
        let q = [pol(HashMethod::QueryParameter("user".into()), false)];
        assert_eq!(request_hash(&q, &[], "/p?x=1&user=a%20b", ""), Some(xxh64(b"a b", 0)));
        assert_eq!(request_hash(&q, &[], "/p?x=1", ""), None);
        assert_eq!(decode("%zz%4"), b"%zz%4".to_vec());
    }
}
