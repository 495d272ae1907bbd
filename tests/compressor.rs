//! The compressor filter as a client sees it, through skiff alone: real curl with `--compressed`
//! gets bodies of several sizes, length-framed, chunked and close-delimited upstream bodies
//! decompressed whole; a raw client checks which encoding each `accept-encoding` gets, every rule
//! that leaves a response uncompressed (small, wrong type, already encoded, no-transform, an ETag
//! with `disable_on_etag_header`, HEAD, 204, 304) and the counters that name the rule; an
//! HTTP/1.0 client gets a compressed body that ends with the connection; and the Envoy examples'
//! configs load. `parity_compressor.rs` compares the same chain with Envoy.

mod support;

#[path = "support/compressor.rs"]
mod compressor_support;

use compressor_support::{body, get, send, Req};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use support::{scratch_dir, stat, Skiff};

struct Proxy {
    sk: Skiff,
    _up: support::RawUpstream,
}

impl Proxy {
    fn start() -> Proxy {
        let up = compressor_support::upstream();
        let dir = scratch_dir("compressor");
        let sk = Skiff::start(
            &compressor_support::config(0, 0, &dir.join("access.log"), up.addr),
            &["--concurrency", "1"],
        );
        Proxy { sk, _up: up }
    }

    fn addr(&self) -> SocketAddr {
        self.sk.listener("main")
    }

    fn stat(&self, name: &str) -> u64 {
        stat(self.sk.admin(), &format!("http.ingress.compressor.{name}")).unwrap_or(0)
    }
}

/// curl's own decoding (`--compressed` sends its accept-encoding and decodes the answer).
fn curl(addr: SocketAddr, path: &str, accept: &str) -> (Vec<u8>, String) {
    let out = Command::new("curl")
        .args(["-s", "--compressed", "-H", &format!("accept-encoding: {accept}"), "-D", "-"])
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl failed on {path}");
    let end = out.stdout.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    (out.stdout[end..].to_vec(), String::from_utf8_lossy(&out.stdout[..end]).to_lowercase())
}

#[test]
fn curl_decompresses_every_encoding_size_and_upstream_framing() {
    let p = Proxy::start();
    for accept in ["gzip", "br", "zstd"] {
        for size in [100, 1000, 70_000, 300_000] {
            for framing in ["len", "chunked", "close"] {
                let path = format!("/{framing}/{size}");
                let (got, head) = curl(p.addr(), &path, accept);
                assert!(head.contains(&format!("content-encoding: {accept}")), "{path} {accept}: {head}");
                assert!(head.contains("transfer-encoding: chunked"), "{path}: {head}");
                assert!(!head.contains("content-length"), "{path}: {head}");
                assert!(got == body(size), "{path} {accept}: {} bytes back", got.len());
            }
        }
    }
    // Every payload byte counted once, whichever filter compressed it.
    let plain: u64 = 3 * (100 + 1000 + 70_000 + 300_000);
    assert_eq!(p.stat("text.gzip.response.total_uncompressed_bytes"), plain);
    assert_eq!(p.stat("text.brotli.response.total_uncompressed_bytes"), plain);
    assert_eq!(p.stat("fast.zstd.total_uncompressed_bytes"), plain);
    assert_eq!(p.stat("text.gzip.response.compressed"), 12);
    assert_eq!(p.stat("fast.zstd.compressed"), 12);
    assert!(p.stat("text.gzip.response.total_compressed_bytes") < plain / 10);
}

/// A compressed body is chunked whatever the upstream's framing, so an upstream body that ended
/// with its connection leaves the client's connection open (as Envoy).
#[test]
fn a_compressed_close_delimited_body_keeps_the_client_connection() {
    let p = Proxy::start();
    let url = |path: &str| format!("http://{}{path}", p.addr());
    let out = Command::new("curl")
        .args(["-sv", "--compressed", "-H", "accept-encoding: br"])
        .args([url("/close/3000"), url("/len/2000")])
        .args(["-o", "/dev/null", "-o", "/dev/null"])
        .output()
        .expect("run curl");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("Re-using existing connection"), "{log}");
    assert!(!log.to_lowercase().contains("< connection: close"), "{log}");
}

#[test]
fn accept_encoding_picks_the_filter_by_q_value_wildcard_and_identity() {
    let p = Proxy::start();
    let enc = |accept: &'static str| {
        send(p.addr(), get("/len/2000", Some(accept))).header("content-encoding").map(str::to_string)
    };
    assert_eq!(enc("br;q=0.9, gzip;q=0.5").as_deref(), Some("br"));
    assert_eq!(enc("gzip;q=0.2, zstd;q=0.8").as_deref(), Some("zstd"));
    // `*`: the first filter in the chain; `gzip;q=0, *`: the first other one.
    assert_eq!(enc("*").as_deref(), Some("gzip"));
    assert_eq!(enc("gzip;q=0, *").as_deref(), Some("br"));
    assert_eq!(enc("identity"), None);
    assert_eq!(enc("deflate"), None);
    assert_eq!(enc("gzip;q=0"), None);
    assert_eq!(p.stat("text.gzip.header_wildcard"), 2);
    assert_eq!(p.stat("text.gzip.header_identity"), 1);
    // deflate and gzip;q=0 leave nothing acceptable.
    assert_eq!(p.stat("text.gzip.header_not_valid"), 2);
    // gzip was overshadowed where br and zstd were chosen.
    assert_eq!(p.stat("text.gzip.header_compressor_overshadowed"), 2);
}

#[test]
fn each_not_compressed_rule_leaves_the_response_as_the_upstream_sent_it() {
    let p = Proxy::start();
    let plain = |r: Req| {
        let got = send(p.addr(), r);
        assert_eq!(got.header("content-encoding").filter(|e| *e != "identity"), None, "{r:?}");
        got
    };
    // Too small (min_content_length 100; zstd has Envoy's default of 30).
    let small = plain(get("/len/99", Some("gzip")));
    assert_eq!(small.header("content-length"), Some("99"));
    assert_eq!(small.header("vary"), Some("Accept-Encoding"), "compressible but for its size");
    assert_eq!(p.stat("text.gzip.response.content_length_too_small"), 1);
    // Not a listed content type: no vary either.
    let image = plain(get("/image", Some("gzip")));
    assert_eq!(image.header("vary"), None);
    // Already encoded, or the upstream forbids transforms.
    assert_eq!(plain(get("/encoded", Some("gzip"))).header("content-encoding"), Some("identity"));
    assert_eq!(plain(get("/no-transform", Some("gzip"))).header("content-length"), Some("2000"));
    // disable_on_etag_header (gzip's): any ETag keeps gzip off; brotli compresses and drops the
    // strong ETag, keeps a weak one.
    assert_eq!(plain(get("/strong-etag", Some("gzip"))).header("etag"), Some("\"v1\""));
    assert_eq!(plain(get("/weak-etag", Some("gzip"))).header("etag"), Some("W/\"v1\""));
    assert_eq!(p.stat("text.gzip.not_compressed_etag"), 2);
    let strong = send(p.addr(), get("/strong-etag", Some("br")));
    assert_eq!((strong.header("content-encoding"), strong.header("etag")), (Some("br"), None));
    let weak = send(p.addr(), get("/weak-etag", Some("br")));
    assert_eq!((weak.header("content-encoding"), weak.header("etag")), (Some("br"), Some("W/\"v1\"")));
    // No body to compress: HEAD, 204, 304, an empty body.
    let head = plain(Req { method: "HEAD", path: "/len/2000", accept: Some("gzip") });
    assert_eq!(head.header("content-length"), Some("2000"));
    assert_eq!(plain(get("/204", Some("gzip"))).status, 204);
    assert_eq!(plain(get("/304", Some("gzip"))).status, 304);
    plain(get("/len/0", Some("gzip")));
    // No accept-encoding at all.
    plain(get("/len/2000", None));
    assert_eq!(p.stat("text.gzip.no_accept_header"), 1);
    // An upstream vary gets Accept-Encoding appended in place.
    let vary = send(p.addr(), get("/vary", Some("gzip")));
    assert_eq!(vary.header("vary"), Some("Origin, Accept-Encoding"));
    assert_eq!(vary.decoded, body(2000));
}

#[test]
fn a_route_can_turn_one_compressor_off() {
    let p = Proxy::start();
    let enc = |accept: &'static str| {
        let got = send(p.addr(), get("/off/len/2000", Some(accept)));
        assert_eq!(got.decoded, body(2000));
        got.header("content-encoding").map(str::to_string)
    };
    // gzip chosen but off here: nothing compresses; the others still do.
    assert_eq!(enc("gzip"), None);
    assert_eq!(enc("br").as_deref(), Some("br"));
    assert_eq!(enc("zstd;q=0.9, gzip").as_deref(), None);
    assert_eq!(p.stat("text.gzip.response.not_compressed"), 3);
    assert_eq!(p.stat("text.gzip.header_compressor_used"), 0);
    assert_eq!(p.stat("text.brotli.header_compressor_overshadowed"), 2);
    // Elsewhere gzip runs.
    assert_eq!(send(p.addr(), get("/len/2000", Some("gzip"))).header("content-encoding"), Some("gzip"));
}

#[test]
fn an_http10_client_gets_the_compressed_body_until_the_connection_closes() {
    let up = compressor_support::upstream();
    let dir = scratch_dir("compressor-http10");
    let yaml = compressor_support::config(0, 0, &dir.join("access.log"), up.addr).replace(
        "stat_prefix: ingress\n",
        "stat_prefix: ingress\n                http_protocol_options: { accept_http_10: true }\n",
    );
    let sk = Skiff::start(&yaml, &["--concurrency", "1"]);
    for path in ["/len/5000", "/chunked/5000"] {
        let mut s = TcpStream::connect(sk.listener("main")).expect("connect");
        s.write_all(format!("GET {path} HTTP/1.0\r\nhost: t\r\naccept-encoding: gzip\r\n\r\n").as_bytes())
            .expect("send");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("read until close");
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
        let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
        assert!(head.starts_with("http/1.0 200"), "{head}");
        assert!(head.contains("content-encoding: gzip") && head.contains("connection: close"), "{head}");
        assert!(!head.contains("transfer-encoding") && !head.contains("content-length"), "{head}");
        assert_eq!(compressor_support::decode(Some("gzip"), &raw[end..]), body(5000), "{path}");
    }
}

#[test]
fn the_envoy_examples_load() {
    for name in ["gzip", "brotli", "zstd"] {
        let path = format!(
            "{}/configs/envoy-examples/envoyproxy-examples/{name}/envoy.yaml",
            env!("CARGO_MANIFEST_DIR")
        );
        let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["--mode", "validate", "-c", &path])
            .output()
            .expect("run skiff");
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
