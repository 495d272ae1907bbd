//! HTTP/1.1 clients in front of an HTTP/2 (h2c) upstream through skiff: what the client sees and
//! what the host receives, gRPC trailers as chunked trailers, streams multiplexed on one shared
//! connection, `max_requests_per_connection`, GOAWAY, an unreachable host (503 `UF`) and stream
//! resets (503 `UR`), with the cluster stats Envoy keeps for them.

mod support;

#[path = "support/h2c.rs"]
mod h2c;

use h2c::{H2Upstream, EXPLICIT_H2};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use support::{stat, Client, Skiff};

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
    assert_eq!(stat(skiff.admin(), "cluster.backend.http2.rx_reset"), Some(2));
    // The connection survives its streams' resets.
    assert_eq!(Client::connect(skiff.listener("main")).get("/fine").status, 200);
    assert_eq!(up.connections(), 1);
}

/// `retry_on: refused-stream` retries a REFUSED_STREAM and nothing else; a policy without it
/// (`connect-failure`) leaves the refusal as the answer.
#[test]
fn refused_stream_is_retried_under_refused_stream() {
    for (retry_on, retries) in [("refused-stream", 1), ("connect-failure", 0)] {
        let up = H2Upstream::start();
        let log = support::scratch_dir("h2up-refused").join("access.log");
        let config = h2c::config(0, 0, up.addr, EXPLICIT_H2, &log).replace(
            "route: { cluster: backend, timeout: 5s }",
            &format!("route: {{ cluster: backend, timeout: 5s, retry_policy: {{ retry_on: {retry_on}, num_retries: 1 }} }}"),
        );
        let skiff = Skiff::start(&config, &["--concurrency", "1"]);
        assert_eq!(Client::connect(skiff.listener("main")).get("/refuse").status, 503, "{retry_on}");
        assert_eq!(stat(skiff.admin(), "cluster.backend.upstream_rq_retry"), Some(retries), "{retry_on}");
        // A plain reset is not a refused stream.
        assert_eq!(Client::connect(skiff.listener("main")).get("/reset").status, 503, "{retry_on}");
        assert_eq!(stat(skiff.admin(), "cluster.backend.upstream_rq_retry"), Some(retries), "{retry_on}");
    }
}

/// `skiff --mode validate` on a config whose cluster `backend` has `protocol`: (success, output).
fn validate(protocol: &str) -> (bool, String) {
    let dir = support::scratch_dir("h2up-validate");
    let path = dir.join("envoy.yaml");
    std::fs::write(&path, h2c::config(0, 0, "127.0.0.1:1".parse().unwrap(), protocol, &dir.join("a.log")))
        .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["--mode", "validate", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn the_shipped_h2_upstream_config_loads() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/protocols/h2-upstream.yaml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["--mode", "validate", "-c", path])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("warn"), "{text}");
}

#[test]
fn protocol_options_skiff_cannot_honour_are_refused_where_they_are() {
    let ext = "typed_extension_protocol_options:\n  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n    \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n";
    let cases = [
        (format!("{ext}    explicit_http_config:\n      http3_protocol_options: {{}}\n"), "explicit_http_config.http3_protocol_options"),
        (format!("{ext}    explicit_http_config: {{}}\n"), "give exactly one of http_protocol_options and http2_protocol_options"),
        (format!("{ext}    auto_config: {{}}\n    explicit_http_config:\n      http2_protocol_options: {{}}\n"), "give exactly one of explicit_http_config"),
        (format!("http2_protocol_options: {{}}\n{ext}    explicit_http_config:\n      http2_protocol_options: {{}}\n"), "http2_protocol_options is also set on the cluster"),
        ("http2_protocol_options: { max_concurrent_streams: 0 }\n".to_string(), "max_concurrent_streams must be between 1 and 2147483647"),
        ("http2_protocol_options: { initial_stream_window_size: 100 }\n".to_string(), "initial_stream_window_size must be between 65535"),
        ("typed_extension_protocol_options:\n  envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions: {}\n".to_string(), "only envoy.extensions.upstreams.http.v3.HttpProtocolOptions"),
    ];
    for (protocol, why) in cases {
        let (ok, out) = validate(&protocol);
        assert!(!ok && out.contains(why), "{protocol}\n{out}");
        assert!(out.contains("clusters[0]"), "{out}");
    }
    // Flood limits the h2 library enforces its own way are warned about, with their place.
    let (ok, out) = validate("http2_protocol_options: { max_outbound_frames: 100 }\n");
    assert!(ok && out.contains("clusters[0].http2_protocol_options.max_outbound_frames"), "{out}");
    // Without TLS, auto_config is HTTP/1.1 (as Envoy); use_downstream_protocol_config is HTTP/1.1
    // for HTTP/1.1 clients.
    for choice in ["auto_config", "use_downstream_protocol_config"] {
        let (ok, out) = validate(&format!("{ext}    {choice}:\n      http2_protocol_options: {{}}\n"));
        assert!(ok, "{choice}: {out}");
    }
}

#[test]
fn auto_config_without_tls_speaks_http1() {
    let up = support::TestUpstream::echo();
    let (skiff, _log) = start(up.addr, AUTO);
    assert_eq!(Client::connect(skiff.listener("main")).get("/").status, 200);
    assert_eq!(stat(skiff.admin(), "cluster.backend.upstream_cx_http1_total"), Some(1));
    assert_eq!(stat(skiff.admin(), "cluster.backend.upstream_cx_http2_total"), Some(0));
}

#[test]
fn an_h2_host_over_tls_is_reached_with_alpn_h2() {
    let certs = support::tls::shared();
    let up = H2Upstream::start_tls(&certs.path("up.crt"), &certs.path("up.key"));
    let socket =
        support::tls::upstream_socket("sni: up.example\n", &support::tls::trusting(certs, &["up.example"]));
    let (skiff, _log) = start(up.addr, &format!("{EXPLICIT_H2}{socket}"));
    let mut c = Client::connect(skiff.listener("main"));
    for _ in 0..2 {
        let r = c.get("/tls");
        assert_eq!((r.status, r.text().as_str()), (200, "ok /tls"));
    }
    let seen = up.seen();
    assert_eq!((seen[0].scheme.as_str(), seen[0].authority.as_str()), ("https", "test"));
    assert_eq!(up.connections(), 1);
    let admin = skiff.admin();
    assert_eq!(stat(admin, "cluster.backend.ssl.handshake"), Some(1));
    assert_eq!(stat(admin, "cluster.backend.upstream_cx_http2_total"), Some(1));
}

#[test]
fn a_client_that_leaves_resets_its_stream() {
    let up = H2Upstream::start();
    let (skiff, log) = start(up.addr, EXPLICIT_H2);
    let mut c = TcpStream::connect(skiff.listener("main")).unwrap();
    c.write_all(b"GET /hang HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert!(support::eventually(Duration::from_secs(3), || !up.seen().is_empty()));
    drop(c);
    assert!(
        support::eventually(Duration::from_secs(3), || up.seen().iter().any(|s| s.method == "RESET")),
        "the host never saw the stream reset: {:?}",
        up.seen()
    );
    assert_eq!(up.seen()[1].path, "CANCEL");
    assert!(last_log_line(&log).starts_with("0 DC "), "{}", last_log_line(&log));
    assert_eq!(stat(skiff.admin(), "cluster.backend.http2.tx_reset"), Some(1));
    // The connection itself stays for the next request.
    assert_eq!(Client::connect(skiff.listener("main")).get("/next").status, 200);
    assert_eq!(up.connections(), 1);
}

const AUTO: &str = "typed_extension_protocol_options:\n  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n    \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n    auto_config: {}\n";

#[test]
fn auto_config_over_tls_speaks_what_alpn_picks() {
    let certs = support::tls::shared();
    let socket =
        support::tls::upstream_socket("sni: up.example\n", &support::tls::trusting(certs, &["up.example"]));
    // A host that picks h2.
    let up = H2Upstream::start_tls(&certs.path("up.crt"), &certs.path("up.key"));
    let (skiff, _log) = start(up.addr, &format!("{AUTO}{socket}"));
    let mut c = Client::connect(skiff.listener("main"));
    for _ in 0..2 {
        assert_eq!(c.get("/alpn").text(), "ok /alpn");
    }
    assert_eq!(up.connections(), 1);
    assert_eq!(stat(skiff.admin(), "cluster.backend.upstream_cx_http2_total"), Some(1));
    assert_eq!(stat(skiff.admin(), "cluster.backend.upstream_cx_http1_total"), Some(0));

    // A host that offers no ALPN (skiff itself, TLS-terminating, answering directly): HTTP/1.1.
    let routes = "virtual_hosts:\n  - name: all\n    domains: [\"*\"]\n    routes:\n      - match: { prefix: / }\n        direct_response: { status: 200, body: { inline_string: served } }\n";
    let listener = support::tls::with_socket(
        &support::listener_yaml("main", "127.0.0.1", routes),
        &support::tls::downstream_socket(certs, "up", "", ""),
    );
    let unused = support::static_cluster_yaml("unused", "ROUND_ROBIN", &[(support::dead_port(), 1)]);
    let back = Skiff::start(&support::bootstrap_yaml(&[listener], &[unused]), &[]);
    let (front, _log) = start(back.listener("main"), &format!("{AUTO}{socket}"));
    let mut c = Client::connect(front.listener("main"));
    for _ in 0..2 {
        assert_eq!(c.get("/").text(), "served");
    }
    assert_eq!(stat(front.admin(), "cluster.backend.upstream_cx_http1_total"), Some(1));
    assert_eq!(stat(front.admin(), "cluster.backend.upstream_cx_http2_total"), Some(0));
}

#[test]
fn max_connection_duration_retires_an_h2_connection() {
    let up = H2Upstream::start();
    let protocol =
        format!("{EXPLICIT_H2}common_http_protocol_options: {{ max_connection_duration: 0.3s }}\n");
    let (skiff, _log) = start(up.addr, &protocol);
    let mut c = Client::connect(skiff.listener("main"));
    assert_eq!(c.get("/one").status, 200);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(Client::connect(skiff.listener("main")).get("/two").status, 200);
    assert_eq!(up.connections(), 2);
    let admin = skiff.admin();
    assert_eq!(stat(admin, "cluster.backend.upstream_cx_max_duration_reached"), Some(1));
    assert!(support::eventually(Duration::from_secs(3), || {
        stat(admin, "cluster.backend.upstream_cx_destroy_local") == Some(1)
    }));
}

#[test]
fn an_endpoint_that_leaves_the_config_has_its_h2_connection_closed() {
    let (a, b) = (H2Upstream::start(), H2Upstream::start());
    let (skiff, log) = start(a.addr, EXPLICIT_H2);
    assert_eq!(Client::connect(skiff.listener("main")).get("/a").status, 200);
    skiff.rewrite_config(&h2c::config(0, 0, b.addr, EXPLICIT_H2, &log));
    assert!(support::eventually(Duration::from_secs(5), || {
        Client::connect(skiff.listener("main")).get("/b").status == 200 && !b.seen().is_empty()
    }));
    // The pool sweep (every 5 s) retires the connection to the endpoint no cluster has now.
    let admin = skiff.admin();
    assert!(
        support::eventually(Duration::from_secs(8), || {
            stat(admin, "cluster.backend.upstream_cx_destroy_local") == Some(1)
        }),
        "{:?}",
        stat(admin, "cluster.backend.upstream_cx_active")
    );
    assert_eq!(stat(admin, "cluster.backend.upstream_cx_active"), Some(1));
}

#[test]
fn config_dump_shows_the_cluster_protocol_as_v3_http_protocol_options() {
    let up = H2Upstream::start();
    let (skiff, _log) = start(up.addr, "http2_protocol_options: { max_concurrent_streams: 7 }\n");
    let (status, body) = support::admin_request(skiff.admin(), "GET", "/config_dump");
    assert_eq!(status, 200);
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    let clusters = dump["configs"].as_array().unwrap().iter().find_map(|c| c.get("static_clusters")).unwrap();
    let options = &clusters[0]["cluster"]["typed_extension_protocol_options"]
        ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    assert_eq!(
        options["explicit_http_config"]["http2_protocol_options"]["max_concurrent_streams"], 7,
        "{options}"
    );
}
