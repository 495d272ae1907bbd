//! A request's hash key from its route's `hash_policy`, as Envoy computes it: xxHash64 of a
//! header's values (sorted, hashed as one stream), a cookie's value, the client's IP as text or a
//! query parameter's decoded value; several policies fold together by rotating the hash so far
//! left one bit and XORing the next, and a `terminal` policy that produced a hash ends the walk.
//! A cookie policy with `ttl` whose cookie the request lacks generates one as Envoy's router does
//! (the hex xxHash64 of the connection's remote and local addresses, so a connection's requests
//! agree) and hashes that; the caller adds the `set-cookie` line written here to the response.
//! Pure: reads the parsed head, knows nothing of clusters or tables (`cluster::hash_lb`).

use crate::config::{CookieGen, HashMethod, HashPolicy};
use crate::http::header_is;
use std::net::SocketAddr;
use xxhash_rust::xxh64::{xxh64, Xxh64};

/// The downstream connection, as the policies read it.
#[derive(Debug, Clone, Copy)]
pub struct Conn<'a> {
    /// The client's IP as text (`connection_properties`).
    pub peer_ip: &'a str,
    pub remote: SocketAddr,
    pub local: SocketAddr,
    /// Whether a missing `ttl` cookie is generated: only when the cluster hashes (RING_HASH,
    /// MAGLEV), as Envoy's router computes the key only for a load balancer that asks for it.
    pub generate_cookies: bool,
}

/// The request's hash, or None when no policy found its key (Envoy then picks a random host).
/// A generated cookie's `set-cookie` header line is appended to `set_cookie`.
pub fn request_hash(
    policies: &[HashPolicy],
    headers: &[httparse::Header<'_>],
    path: &str,
    conn: &Conn<'_>,
    set_cookie: &mut Vec<u8>,
) -> Option<u64> {
    let mut hash: Option<u64> = None;
    for p in policies {
        if let Some(new) = one(&p.method, headers, path, conn, set_cookie) {
            hash = Some(hash.map_or(0, |h| h.rotate_left(1)) ^ new);
        }
        if p.terminal && hash.is_some() {
            break;
        }
    }
    hash
}

fn one(
    method: &HashMethod,
    headers: &[httparse::Header<'_>],
    path: &str,
    conn: &Conn<'_>,
    set_cookie: &mut Vec<u8>,
) -> Option<u64> {
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
        HashMethod::Cookie(c) => {
            let value = headers
                .iter()
                .filter(|h| header_is(h.name, "cookie"))
                .flat_map(|h| h.value.split(|b| *b == b';'))
                .find_map(|pair| {
                    let pair = pair.trim_ascii();
                    let eq = pair.iter().position(|b| *b == b'=')?;
                    (&pair[..eq] == c.name.as_bytes()).then(|| &pair[eq + 1..])
                });
            // A quoted cookie value is hashed without its quotes, as Envoy parses it.
            let value = match value {
                Some([b'"', inner @ .., b'"']) => inner,
                Some(v) => v,
                None => &[],
            };
            // An empty value counts as missing, as in Envoy.
            if !value.is_empty() {
                return Some(xxh64(value, 0));
            }
            let generate = c.generate.as_deref().filter(|_| conn.generate_cookies)?;
            let value = generated_value(conn.remote, conn.local);
            write_set_cookie(set_cookie, &c.name, &value, generate);
            Some(xxh64(value.as_bytes(), 0))
        }
        HashMethod::SourceIp => Some(xxh64(conn.peer_ip.as_bytes(), 0)),
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

/// Envoy's generated cookie value: xxHash64 of the remote then local address (`ip:port`, IPv6 in
/// brackets), as 16 lower-case hex digits.
fn generated_value(remote: SocketAddr, local: SocketAddr) -> String {
    format!("{:016x}", xxh64(format!("{remote}{local}").as_bytes(), 0))
}

/// `set-cookie: name="value"; Max-Age=n; Path=p; attr=v; HttpOnly`, as Envoy's
/// `makeSetCookieValue` writes it (no Max-Age for a 0 ttl, no Path when empty).
fn write_set_cookie(out: &mut Vec<u8>, name: &str, value: &str, g: &CookieGen) {
    use std::fmt::Write;
    let mut line = format!("set-cookie: {name}=\"{value}\"");
    if g.max_age != 0 {
        let _ = write!(line, "; Max-Age={}", g.max_age);
    }
    if !g.path.is_empty() {
        let _ = write!(line, "; Path={}", g.path);
    }
    for (n, v) in &g.attributes {
        let _ = write!(line, "; {n}");
        if !v.is_empty() {
            let _ = write!(line, "={v}");
        }
    }
    line.push_str("; HttpOnly\r\n");
    out.extend_from_slice(line.as_bytes());
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

    fn conn(peer_ip: &str) -> Conn<'_> {
        let a = "127.0.0.1:1".parse().expect("addr");
        Conn { peer_ip, remote: a, local: a, generate_cookies: true }
    }

    fn request_hash(
        policies: &[HashPolicy],
        headers: &[httparse::Header<'_>],
        path: &str,
        peer_ip: &str,
    ) -> Option<u64> {
        let mut set_cookie = Vec::new();
        let hash = super::request_hash(policies, headers, path, &conn(peer_ip), &mut set_cookie);
        assert!(set_cookie.is_empty());
        hash
    }

    fn cookie(name: &str, generate: Option<CookieGen>) -> HashMethod {
        HashMethod::Cookie(crate::config::HashCookie { name: name.into(), generate: generate.map(Box::new) })
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
        let c = [pol(cookie("session", None), false)];
        let headers = [h("cookie", "a=1; session=\"xyz\"; b=2")];
        assert_eq!(request_hash(&c, &headers, "/", ""), Some(xxh64(b"xyz", 0)));
        let q = [pol(HashMethod::QueryParameter("user".into()), false)];
        assert_eq!(request_hash(&q, &[], "/p?x=1&user=a%20b", ""), Some(xxh64(b"a b", 0)));
        assert_eq!(request_hash(&q, &[], "/p?x=1", ""), None);
        assert_eq!(decode("%zz%4"), b"%zz%4".to_vec());
    }

    #[test]
    fn a_missing_ttl_cookie_is_generated_from_the_connection_as_envoy_writes_it() {
        let g = CookieGen {
            max_age: 3600,
            path: "/p".into(),
            attributes: vec![("SameSite".into(), "Lax".into()), ("Secure".into(), String::new())],
        };
        let p = [pol(cookie("sess", Some(g)), false)];
        // What Envoy 1.40 answered a client on 127.0.0.1:45670 talking to 127.0.0.1:18801.
        let c = Conn {
            peer_ip: "127.0.0.1",
            remote: "127.0.0.1:45670".parse().expect("addr"),
            local: "127.0.0.1:18801".parse().expect("addr"),
            generate_cookies: true,
        };
        let mut out = Vec::new();
        let hash = super::request_hash(&p, &[], "/", &c, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "set-cookie: sess=\"7f592c834a62a7b7\"; Max-Age=3600; Path=/p; SameSite=Lax; Secure; HttpOnly\r\n"
        );
        assert_eq!(hash, Some(xxh64(b"7f592c834a62a7b7", 0)));
        // The request that carries it hashes the same; a non-hashing cluster generates none.
        let mut none = Vec::new();
        let back = [h("cookie", "sess=\"7f592c834a62a7b7\"")];
        assert_eq!(super::request_hash(&p, &back, "/", &c, &mut none), hash);
        let off = Conn { generate_cookies: false, ..c };
        assert_eq!(super::request_hash(&p, &[], "/", &off, &mut none), None);
        assert!(none.is_empty());
    }
}
