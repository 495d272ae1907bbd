//! HTTP/1.1 clients in front of an HTTP/2 (h2c) upstream through skiff: what the client sees and
//! what the host receives, gRPC trailers as chunked trailers, streams multiplexed on one shared
//! connection, `max_requests_per_connection`, GOAWAY, an unreachable host (503 `UF`) and stream
//! resets (503 `UR`), with the cluster stats Envoy keeps for them.

mod support;

#[path = "support/h2c.rs"]
mod h2c;

use h2c::H2Upstream;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use support::{stat, Client, Skiff};

const EXPLICIT_H2: &str = r#"typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    explicit_http_config:
      http2_protocol_options: {}
"#;

fn start(upstream: SocketAddr, protocol: &str) -> (Skiff, std::path::PathBuf) {
    let log = support::scratch_dir("h2up").join("access.log");
    let skiff = Skiff::start(&h2c::config(0, 0, upstream, protocol, &log), &["--concurrency", "1"]);
    (skiff, log)
}

fn last_log_line(log: &std::path::Path) -> String {
    let mut line = String::new();
    support::eventually(Duration::from_secs(3), || {
        line = std::fs::read_to_string(log).unwrap_or_default().lines().last().unwrap_or("").to_string();
        !line.is_empty()
    });
    line
}

/// Everything the server sends on one connection until it closes or 3 s pass.
fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // A chunked response ends with the empty line after its trailers.
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.ends_with(b"\r\n\r\n") && out.windows(5).any(|w| w == b"\r\n0\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn http1_client_reaches_an_h2c_host_with_authority_and_forwarded_headers() {
    let up = H2Upstream::start();
    let (skiff, _log) = start(up.addr, EXPLICIT_H2);
    let addr = skiff.listener("main");
    let mut c = Client::connect(addr);
    c.send(b"GET /hello?x=1 HTTP/1.1\r\nHost: example.com\r\nTE: gzip\r\nX-Custom: one\r\nConnection: keep-alive\r\n\r\n");
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok /hello");
    assert_eq!(r.header("x-upstream"), Some("h2"));
    assert_eq!(r.header("content-length"), Some("9"));
    // A body with content-length, and a chunked body with a trailer, on the same connection.
    c.send(b"POST /post HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(c.read_response(false).unwrap().text(), "hello");
    c.send(b"POST /post HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nx-sum: 5\r\n\r\n");
    assert_eq!(c.read_response(false).unwrap().text(), "abcde");

    let seen = up.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    let get = &seen[0];
    assert_eq!((get.method.as_str(), get.scheme.as_str()), ("GET", "http"));
    assert_eq!((get.authority.as_str(), get.path.as_str()), ("example.com", "/hello?x=1"));
    assert_eq!(get.header("x-custom"), Some("one"));
    assert_eq!(get.header("x-forwarded-proto"), Some("http"));
    assert!(get.header("x-request-id").is_some());
    for gone in ["host", "connection", "te", "keep-alive", "transfer-encoding"] {
        assert_eq!(get.header(gone), None, "{gone} reached the HTTP/2 host: {get:?}");
    }
    assert_eq!(seen[2].body, b"abcde");
    assert_eq!(seen[2].trailers, vec![("x-sum".to_string(), "5".to_string())]);
    assert_eq!(seen[2].header("transfer-encoding"), None);
    let admin = skiff.admin();
    assert_eq!(stat(admin, "cluster.backend.upstream_cx_http2_total"), Some(1));
    assert_eq!(stat(admin, "cluster.backend.upstream_cx_http1_total"), Some(0));
    assert_eq!(stat(admin, "cluster.backend.upstream_cx_total"), Some(1));
    assert_eq!(stat(admin, "cluster.backend.upstream_cx_active"), Some(1));
    assert_eq!(stat(admin, "cluster.backend.upstream_rq_total"), Some(3));
    assert_eq!(up.connections(), 1);
}

#[test]
fn grpc_trailers_reach_an_http1_client_as_chunked_trailers() {
    let up = H2Upstream::start();
    // The v2 way to ask for HTTP/2 works too.
    let (skiff, _log) = start(up.addr, "http2_protocol_options: {}\n");
    let out = raw(
        skiff.listener("main"),
        b"POST /grpc HTTP/1.1\r\nHost: grpc\r\nContent-Type: application/grpc\r\nTE: trailers\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.contains("transfer-encoding: chunked\r\n"), "{out}");
    assert!(out.ends_with("\r\n0\r\ngrpc-status: 0\r\ngrpc-message: fine\r\n\r\n"), "{out}");
    assert_eq!(up.seen()[0].header("te"), Some("trailers"));
}

#[test]
fn concurrent_requests_are_multiplexed_on_one_connection() {
    let up = H2Upstream::start();
    let (skiff, _log) = start(up.addr, EXPLICIT_H2);
    let addr = skiff.listener("main");
    let clients: Vec<_> = (0..12)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                c.send(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n");
                c.read_response(false).map(|r| r.status)
            })
        })
        .collect();
    for c in clients {
        assert_eq!(c.join().unwrap(), Some(200));
    }
    assert_eq!(up.connections(), 1, "12 concurrent streams took more than one connection");
    assert_eq!(stat(skiff.admin(), "cluster.backend.upstream_cx_http2_total"), Some(1));
    assert_eq!(stat(skiff.admin(), "cluster.backend.upstream_rq_total"), Some(12));
}

#[test]
fn max_concurrent_streams_and_max_requests_per_connection_open_more_connections() {
    let up = H2Upstream::start();
    let protocol = "http2_protocol_options: { max_concurrent_streams: 2 }\nmax_requests_per_connection: 3\n";
    let (skiff, _log) = start(up.addr, protocol);
    let addr = skiff.listener("main");
    // Three at once over two streams per connection: two connections.
    let clients: Vec<_> =
        (0..3).map(|_| std::thread::spawn(move || Client::connect(addr).get("/slow").status)).collect();
    for c in clients {
        assert_eq!(c.join().unwrap(), 200);
    }
    assert_eq!(up.connections(), 2);
    // The first connection carried two streams, the second one: the next request retires the
    // first (its third), the two after it the second, and the fourth needs a new connection.
    let mut c = Client::connect(addr);
    for _ in 0..4 {
        assert_eq!(c.get("/").status, 200);
    }
    assert_eq!(up.connections(), 3, "max_requests_per_connection did not retire a connection");
}

#[test]
fn goaway_sends_new_requests_to_a_new_connection() {
    let up = H2Upstream::start();
    let (skiff, _log) = start(up.addr, EXPLICIT_H2);
    let mut c = Client::connect(skiff.listener("main"));
    assert_eq!(c.get("/goaway").status, 200);
    // The GOAWAY arrives right after the response.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(c.get("/after").status, 200);
    assert_eq!(up.connections(), 2);
    assert!(support::eventually(Duration::from_secs(3), || {
        stat(skiff.admin(), "cluster.backend.upstream_cx_destroy_remote") == Some(1)
    }));
}

#[test]
fn unreachable_h2_host_is_a_connect_failure() {
    let dead = support::dead_port();
    let (skiff, log) = start(dead, EXPLICIT_H2);
    let started = std::time::Instant::now();
    let r = Client::connect(skiff.listener("main")).get("/");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(r.status, 503);
    assert_eq!(
        r.text(),
        "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"
    );
    assert!(last_log_line(&log).starts_with("503 UF "), "{}", last_log_line(&log));
    let admin = skiff.admin();
    assert_eq!(stat(admin, "cluster.backend.upstream_cx_connect_fail"), Some(1));
    assert_eq!(stat(admin, "cluster.backend.upstream_cx_http2_total"), Some(1));
    assert_eq!(stat(admin, "cluster.backend.upstream_cx_active"), Some(0));
}

#[test]
fn stream_resets_are_upstream_resets() {
    let up = H2Upstream::start();
    let (skiff, log) = start(up.addr, EXPLICIT_H2);
    let mut c = Client::connect(skiff.listener("main"));
    let r = c.get("/reset");
    assert_eq!(r.status, 503);
    assert_eq!(
        r.text(),
        "upstream connect error or disconnect/reset before headers. reset reason: remote reset"
    );
    assert_eq!(last_log_line(&log), "503 UR upstream_reset_before_response_started{remote_reset}");
    let r = Client::connect(skiff.listener("main")).get("/refuse");
    assert_eq!(r.status, 503);
    assert_eq!(
        r.text(),
        "upstream connect error or disconnect/reset before headers. reset reason: remote refused stream reset"
    );
    // The connection survives its streams' resets.
    assert_eq!(Client::connect(skiff.listener("main")).get("/fine").status, 200);
    assert_eq!(up.connections(), 1);
}
