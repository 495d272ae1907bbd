//! Helpers for the compressor filter tests (`tests/compressor.rs`, `tests/parity_compressor.rs`):
//! an upstream whose path says how it answers (length-framed, chunked or close-delimited bodies of
//! any size, ETags, an encoded body, `no-transform`, 204/304, an image), a bootstrap that chains
//! the gzip, brotli and zstd compressor filters, and a raw client that keeps each response's head
//! and decodes its body by its `content-encoding`. Include with
//! `#[path = "support/compressor.rs"] mod compressor_support;` beside `mod support;`.
#![allow(dead_code)]

use crate::support::{filters, read_head, RawUpstream};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

/// The body of `/len/<n>` and the others: `n` bytes of repetitive text (it compresses).
pub fn body(n: usize) -> Vec<u8> {
    let line = b"the quick brown fox jumps over the lazy dog 0123456789\n";
    line.iter().cycle().take(n).copied().collect()
}

/// The upstream: keep-alive, one response per request head, chosen by path.
pub fn upstream() -> RawUpstream {
    RawUpstream::start(|mut s, _| {
        while let Some(head) = read_head(&mut s) {
            let first = head.lines().next().unwrap_or_default().to_string();
            let method = first.split(' ').next().unwrap_or_default().to_string();
            let path = first.split(' ').nth(1).unwrap_or_default().to_string();
            let ae = head
                .lines()
                .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case("accept-encoding")))
                .map_or("-".to_string(), |(_, v)| v.trim().to_string());
            if !answer(&mut s, &method, &path, &ae) {
                return;
            }
        }
    })
}

/// Writes the response to `path` (a length-framed one says the request's `accept-encoding` in
/// `x-seen-ae`); false when the connection must close after it.
fn answer(s: &mut TcpStream, method: &str, path: &str, ae: &str) -> bool {
    let head_only = method == "HEAD";
    let size = |p: &str| p.rsplit('/').next().and_then(|n| n.parse().ok()).unwrap_or(2000);
    let length = |s: &mut TcpStream, extra: &str, ct: &str, b: &[u8]| {
        let mut out = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: {ct}\r\nx-seen-ae: {ae}\r\n{extra}content-length: {}\r\n\r\n",
            b.len()
        )
        .into_bytes();
        if !head_only {
            out.extend_from_slice(b);
        }
        s.write_all(&out).is_ok()
    };
    match path {
        p if p.starts_with("/len/") => length(s, "", "text/plain", &body(size(p))),
        p if p.starts_with("/chunked/") => {
            let b = body(size(p));
            let head: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\n\
                transfer-encoding: chunked\r\n\r\n";
            if s.write_all(head).is_err() {
                return false;
            }
            if head_only {
                return true;
            }
            // Three pieces in separate writes: the relay compresses what each read brings.
            let third = b.len().div_ceil(3).max(1);
            for part in b.chunks(third) {
                let mut c = format!("{:x}\r\n", part.len()).into_bytes();
                c.extend_from_slice(part);
                c.extend_from_slice(b"\r\n");
                if s.write_all(&c).is_err() {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            s.write_all(b"0\r\n\r\n").is_ok()
        }
        p if p.starts_with("/close/") => {
            let b = body(size(p));
            let mut out =
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n".to_vec();
            if !head_only {
                out.extend_from_slice(&b);
            }
            let _ = s.write_all(&out);
            false
        }
        "/strong-etag" => length(s, "etag: \"v1\"\r\n", "text/plain", &body(2000)),
        "/weak-etag" => length(s, "etag: W/\"v1\"\r\n", "text/plain", &body(2000)),
        "/encoded" => length(s, "content-encoding: identity\r\n", "text/plain", &body(2000)),
        "/no-transform" => length(s, "cache-control: public, no-transform\r\n", "text/plain", &body(2000)),
        "/vary" => length(s, "vary: Origin\r\n", "text/plain", &body(2000)),
        "/image" => length(s, "", "image/png", &body(2000)),
        "/204" => s.write_all(b"HTTP/1.1 204 No Content\r\ncontent-type: text/plain\r\n\r\n").is_ok(),
        "/304" => s
            .write_all(b"HTTP/1.1 304 Not Modified\r\ncontent-type: text/plain\r\netag: \"v1\"\r\n\r\n")
            .is_ok(),
        _ => length(s, "", "text/plain", &body(2000)),
    }
}

/// The chain, each filter named after its library: gzip (`response_direction_config`, off on an
/// ETag), then brotli (response direction, `choose_first`), then zstd with no direction config at
/// all (Envoy's defaults and its legacy, unprefixed response counter names).
pub const FILTERS: &str = r#"- name: gzip
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor
    response_direction_config:
      common_config:
        min_content_length: 100
        content_type: [text/plain, application/json]
      disable_on_etag_header: true
    compressor_library:
      name: text
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip
        memory_level: 3
        window_bits: 10
        compression_level: BEST_SPEED
        compression_strategy: DEFAULT_STRATEGY
        chunk_size: 4096
- name: brotli
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor
    response_direction_config:
      common_config:
        min_content_length: 100
        content_type: [text/plain]
      uncompressible_response_codes: [206]
    choose_first: true
    compressor_library:
      name: text
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.compression.brotli.compressor.v3.Brotli
        quality: 5
        window_bits: 12
- name: zstd
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor
    compressor_library:
      name: fast
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.compression.zstd.compressor.v3.Zstd
        compression_level: 3
        enable_checksum: true
"#;

/// Everything to `backend`; under `/off/` (the prefix removed) with the gzip filter turned off by
/// a `CompressorPerRoute`.
pub const ROUTES: &str = r#"virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
      - match: { prefix: "/off/" }
        route: { cluster: backend, prefix_rewrite: "/" }
        typed_per_filter_config:
          gzip:
            "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.CompressorPerRoute
            disabled: true
      - match: { prefix: "/" }
        route: { cluster: backend }
"#;

pub fn config(port: u16, admin: u16, log: &Path, upstream: SocketAddr) -> String {
    filters::config(port, admin, log, upstream, FILTERS, ROUTES)
}

/// `FILTERS` with brotli's `remove_accept_encoding_header: true`: the upstream and zstd (after
/// it in the chain) no longer see the header.
pub fn config_removing(port: u16, admin: u16, log: &Path, upstream: SocketAddr) -> String {
    let filters = FILTERS.replace(
        "      uncompressible_response_codes: [206]\n",
        "      uncompressible_response_codes: [206]\n      remove_accept_encoding_header: true\n",
    );
    filters::config(port, admin, log, upstream, &filters, ROUTES)
}

/// One request: method, path, its `accept-encoding` (None: no such header), HTTP/1.0 or 1.1.
#[derive(Debug, Clone, Copy)]
pub struct Req {
    pub method: &'static str,
    pub path: &'static str,
    pub accept: Option<&'static str>,
}

pub fn get(path: &'static str, accept: Option<&'static str>) -> Req {
    Req { method: "GET", path, accept }
}

/// A response as the client got it, its body decoded by its `content-encoding`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Got {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body on the wire after the transfer framing (still compressed).
    pub wire: Vec<u8>,
    pub decoded: Vec<u8>,
}

impl Got {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Sends `r` on a fresh connection (closed by the client after the response) and reads the
/// response whole.
pub fn send(addr: SocketAddr, r: Req) -> Got {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut req = format!("{} {} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n", r.method, r.path);
    if let Some(a) = r.accept {
        req.push_str(&format!("accept-encoding: {a}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("send");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse(&raw, r.method == "HEAD")
}

fn parse(raw: &[u8], head_only: bool) -> Got {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let has = |n: &str, v: &str| headers.iter().any(|(h, x)| h == n && x.eq_ignore_ascii_case(v));
    let wire = if head_only {
        Vec::new()
    } else if has("transfer-encoding", "chunked") {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    let encoding = headers.iter().find(|(n, _)| n == "content-encoding").map(|(_, v)| v.as_str());
    let decoded = decode(encoding, &wire);
    Got { status, headers, wire, decoded }
}

/// The body decoded by `content-encoding` (as it is for identity or none).
pub fn decode(encoding: Option<&str>, wire: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        Some("gzip") => {
            flate2::read::GzDecoder::new(wire).read_to_end(&mut out).expect("valid gzip");
        }
        Some("br") => brotli::BrotliDecompress(&mut &wire[..], &mut out).expect("valid brotli"),
        Some("zstd") => out = zstd::decode_all(wire).expect("valid zstd"),
        _ => out = wire.to_vec(),
    }
    out
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&rest[..eol]);
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        let Some(data) = rest.get(eol + 2..eol + 2 + n).filter(|_| n > 0) else { break };
        out.extend_from_slice(data);
        rest = rest.get(eol + 2 + n + 2..).unwrap_or_default();
    }
    out
}
