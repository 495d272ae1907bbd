//! The timeouts the parity suite cannot hold to Envoy through a client's eyes: the cluster's
//! limits on its pooled connections (`common_http_protocol_options.idle_timeout`,
//! `max_connection_duration`), `upstream_connection_options.tcp_keepalive`, the connection
//! manager's `delayed_close_timeout`, and `--mode validate` accepting every timeout field skiff
//! enforces without a warning. The request-level timeouts (stream idle, request, max stream
//! duration, per-try) are in tests/parity.rs, side by side with Envoy.

mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use support::*;

fn cluster_options(upstream: SocketAddr, cluster_extra: &str) -> String {
    with_admin(&custom_config(&[upstream], "", "", cluster_extra))
}

#[test]
fn a_pooled_connection_idle_past_the_cluster_idle_timeout_is_closed_and_not_reused() {
    let up = TestUpstream::named("up");
    let yaml = cluster_options(up.addr, "      common_http_protocol_options: { idle_timeout: 1s }\n");
    let skiff = Skiff::start(&yaml, &["--concurrency", "1"]);
    let mut c = Client::connect(skiff.listener("main"));
    assert_eq!(c.get("/a").status, 200);
    assert_eq!(c.get("/b").status, 200);
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::Relaxed), 1, "reused while fresh");
    // The pool's clock ticks in whole seconds: past 1 s idle is 2 ticks at most.
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(c.get("/c").status, 200);
    assert_eq!(
        up.connections.load(std::sync::atomic::Ordering::Relaxed),
        2,
        "a new connection after idling out"
    );
    assert_eq!(stat(skiff.admin(), "cluster.backend.upstream_cx_idle_timeout"), Some(1));
}

#[test]
fn a_connection_past_the_cluster_max_connection_duration_takes_no_new_request() {
    let up = TestUpstream::named("up");
    let yaml =
        cluster_options(up.addr, "      common_http_protocol_options: { max_connection_duration: 0.4s }\n");
    let skiff = Skiff::start(&yaml, &["--concurrency", "1"]);
    let mut c = Client::connect(skiff.listener("main"));
    assert_eq!(c.get("/a").status, 200);
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(c.get("/b").status, 200);
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::Relaxed), 2, "the old connection retired");
    assert_eq!(stat(skiff.admin(), "cluster.backend.upstream_cx_max_duration_reached"), Some(1));
}

/// `ss` lines for skiff's established connections to `upstream`, with their timers.
fn sockets_to(upstream: SocketAddr) -> String {
    let out = std::process::Command::new("ss")
        .args(["-tno", "state", "established", "dst", &upstream.to_string()])
        .output()
        .expect("ss runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn tcp_keepalive_probes_run_on_upstream_connections_that_ask_for_them() {
    let with = TestUpstream::named("with");
    let yaml = cluster_options(
        with.addr,
        "      upstream_connection_options: { tcp_keepalive: { keepalive_time: 77, keepalive_interval: 5, keepalive_probes: 3 } }\n",
    );
    let skiff = Skiff::start(&yaml, &["--concurrency", "1"]);
    assert_eq!(get(skiff.listener("main"), "/").status, 200);
    let seen = sockets_to(with.addr);
    // The pooled connection's keepalive timer, armed for the configured idle time (77 s).
    assert!(seen.contains("timer:(keepalive,1min"), "{seen}");
    assert!(!skiff.log().contains("upstream_connection_options"), "enforced, not warned:\n{}", skiff.log());

    let without = TestUpstream::named("without");
    let plain = Skiff::start(&cluster_options(without.addr, ""), &["--concurrency", "1"]);
    assert_eq!(get(plain.listener("main"), "/").status, 200);
    let seen = sockets_to(without.addr);
    assert!(seen.contains("ESTAB") || !seen.trim().is_empty(), "a pooled connection: {seen}");
    assert!(!seen.contains("keepalive"), "no keepalive unless configured: {seen}");
}

/// A client that sends part of a body, then keeps sending a byte every 100 ms for up to 5 s:
/// skiff answers 408 (`request_timeout`), shuts its side, and lingers, reading what still comes.
/// Returns the answer and when the client's sending failed (skiff closed the socket for good).
fn trickling_upload(addr: SocketAddr) -> (String, Duration) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc").unwrap();
    let mut reader = s.try_clone().unwrap();
    let started = Instant::now();
    let writer = std::thread::spawn(move || {
        while started.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(100));
            if s.write_all(b"x").is_err() {
                break;
            }
        }
        started.elapsed()
    });
    // skiff's FIN after the 408 ends the read; its close ends the writes.
    let got = read_until_close(&mut reader, Duration::from_secs(5));
    let closed_after = writer.join().expect("writer");
    (got.text, closed_after)
}

#[test]
fn delayed_close_timeout_bounds_the_lingering_close_and_is_counted() {
    let up = TestUpstream::named("up");
    let hcm = "                request_timeout: 0.2s\n                delayed_close_timeout: 1s\n";
    let skiff = Skiff::start(&with_admin(&custom_config(&[up.addr], hcm, "", "")), &[]);
    let (text, closed_after) = trickling_upload(skiff.listener("main"));
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    // 0.2 s to the 408, then 1 s of reading what the client still sends (its first write after
    // the close may still succeed: the reset comes back with it).
    assert!(closed_after >= Duration::from_millis(1100), "lingered: {closed_after:?}");
    assert!(closed_after < Duration::from_millis(3000), "but not past the limit: {closed_after:?}");
    assert_eq!(stat(skiff.admin(), "http.ingress.downstream_cx_delayed_close_timeout"), Some(1));
}

#[test]
fn delayed_close_timeout_zero_closes_at_once() {
    let up = TestUpstream::named("up");
    let hcm = "                request_timeout: 0.2s\n                delayed_close_timeout: 0s\n";
    let skiff = Skiff::start(&with_admin(&custom_config(&[up.addr], hcm, "", "")), &[]);
    let (text, closed_after) = trickling_upload(skiff.listener("main"));
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    assert!(closed_after < Duration::from_millis(1000), "no linger: {closed_after:?}");
    assert_eq!(stat(skiff.admin(), "http.ingress.downstream_cx_delayed_close_timeout"), Some(0));
}

/// `skiff --mode validate -c path`: whether it passed, and everything it printed.
fn validate(path: &std::path::Path) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["--mode", "validate", "-c", path.to_str().unwrap()])
        .output()
        .expect("skiff runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn validate_accepts_every_enforced_timeout_without_a_warning() {
    let up = TestUpstream::named("up");
    let hcm = "                stream_idle_timeout: 300s\n                request_timeout: 10s\n                delayed_close_timeout: 1s\n                common_http_protocol_options: { idle_timeout: 3600s, max_connection_duration: 600s, max_stream_duration: 60s, max_requests_per_connection: 100, max_headers_count: 80, headers_with_underscores_action: ALLOW }\n";
    let route = ", idle_timeout: 30s, max_stream_duration: { max_stream_duration: 20s, grpc_timeout_header_max: 10s, grpc_timeout_header_offset: 0.1s }, retry_policy: { retry_on: 5xx, per_try_timeout: 1s, per_try_idle_timeout: 0.5s }";
    let cluster = "      common_http_protocol_options: { idle_timeout: 600s, max_connection_duration: 3600s, max_headers_count: 100 }\n      upstream_connection_options: { tcp_keepalive: { keepalive_time: 60 } }\n";
    let yaml = custom_config(&[up.addr], hcm, route, cluster);
    let dir = scratch_dir("validate-timeouts");
    let path = dir.join("envoy.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let (ok, text) = validate(&path);
    assert!(ok, "{text}");
    assert!(!text.contains("warn"), "no field of these is warned about:\n{text}\n{yaml}");
    // The ones skiff does not act on are named.
    let unenforced =
        yaml.replace("max_headers_count: 100 }", "max_headers_count: 100, max_stream_duration: 5s }");
    std::fs::write(&path, unenforced).unwrap();
    let (_, text) = validate(&path);
    assert!(text.contains("clusters[0].common_http_protocol_options.max_stream_duration"), "{text}");
}

#[test]
fn a_header_count_beyond_what_skiff_parses_is_refused_at_load() {
    let up = TestUpstream::named("up");
    let hcm = "                common_http_protocol_options: { max_headers_count: 500 }\n";
    let err = Skiff::try_start(&custom_config(&[up.addr], hcm, "", ""), &[]).err().expect("refused");
    assert!(err.contains("max_headers_count must be 1-100 in skiff, got 500"), "{err}");
}
