//! Envoy parity for HTTP/2 to upstreams: the same v3 config (a cluster with
//! `explicit_http_config.http2_protocol_options`) and the same HTTP/1.1 client bytes go through the
//! real Envoy and through skiff, each in front of its own h2c upstream, and what the client saw
//! (status, headers, body, chunked trailers), what the upstream got (pseudo-headers, headers, body,
//! trailers) and the access-log line must be equal once dates, request ids and timings are
//! normalised. Scenarios: a GET, a chunked POST with a trailer, a gRPC-style response with
//! `grpc-status` trailers, RST_STREAM (INTERNAL_ERROR and REFUSED_STREAM, alone and retried under
//! `retry_on: reset`), and an unreachable host.
//! Envoy is found as in tests/parity.rs; without it these skip (fail under CI).

mod support;

#[path = "support/envoy.rs"]
mod envoy;

#[path = "support/h2c.rs"]
mod h2c;

use h2c::{H2Seen, H2Upstream, EXPLICIT_H2};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;
use support::Skiff;

/// One proxy under test with its own upstream and access log.
struct Side {
    listener: SocketAddr,
    admin: SocketAddr,
    upstream: Option<H2Upstream>,
    log: std::path::PathBuf,
    _proc: Proc,
}

/// Kept so the process lives as long as its side (both kill their child on drop).
#[allow(dead_code)]
enum Proc {
    Envoy(envoy::Envoy),
    Skiff(Skiff),
}

fn sides(dead: bool, route_extra: &str) -> Option<(Side, Side)> {
    let bin = envoy::binary_or_skip("parity_http2_upstream")?;
    let target = |up: &Option<H2Upstream>| up.as_ref().map_or_else(support::dead_port, |u| u.addr);
    let with_route = |yaml: String| yaml.replace("timeout: 5s }", &format!("timeout: 5s{route_extra} }}"));
    let e_up = (!dead).then(H2Upstream::start);
    let dir = support::scratch_dir("parity-h2up-envoy");
    let e_log = dir.join("access.log");
    let e_addr = target(&e_up);
    let envoy = envoy::Envoy::start(&bin, &dir, |port, admin| {
        with_route(h2c::config(port, admin, e_addr, EXPLICIT_H2, &e_log))
    });
    let s_up = (!dead).then(H2Upstream::start);
    let s_log = support::scratch_dir("parity-h2up-skiff").join("access.log");
    let skiff = Skiff::start(
        &with_route(h2c::config(0, 0, target(&s_up), EXPLICIT_H2, &s_log)),
        &["--concurrency", "1"],
    );
    let e = Side {
        listener: envoy.listener,
        admin: envoy.admin,
        upstream: e_up,
        log: e_log,
        _proc: Proc::Envoy(envoy),
    };
    let s = Side {
        listener: skiff.listener("main"),
        admin: skiff.admin(),
        upstream: s_up,
        log: s_log,
        _proc: Proc::Skiff(skiff),
    };
    Some((e, s))
}

/// The whole response to `request` on a fresh connection: head lines (sorted, `date`,
/// `x-envoy-upstream-service-time` and `x-request-id` values masked) and the body bytes with
/// chunked framing and trailers kept.
fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
        if complete(&out) {
            break;
        }
    }
    normalise(&String::from_utf8_lossy(&out))
}

/// Whether `out` holds one whole response (content-length or chunked).
fn complete(out: &[u8]) -> bool {
    let text = String::from_utf8_lossy(out);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return false };
    let lower = head.to_ascii_lowercase();
    if let Some(len) = lower.lines().find_map(|l| l.strip_prefix("content-length: ")) {
        return body.len() >= len.trim().parse::<usize>().unwrap_or(0);
    }
    lower.contains("transfer-encoding: chunked")
        && (body.starts_with("0\r\n") || body.contains("\r\n0\r\n"))
        && body.ends_with("\r\n\r\n")
}

fn normalise(raw: &str) -> String {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap_or("").to_string();
    let mut fields: Vec<String> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap_or((l, ""));
            let n = n.to_ascii_lowercase();
            match n.as_str() {
                "date" | "x-envoy-upstream-service-time" | "x-request-id" => format!("{n}: *"),
                _ => format!("{n}:{v}"),
            }
        })
        .collect();
    fields.sort();
    format!("{status}\n{}\n\n{body}", fields.join("\n"))
}

/// What the upstream saw, `x-request-id` masked, headers sorted.
fn seen(side: &Side) -> Vec<String> {
    let Some(up) = &side.upstream else { return Vec::new() };
    up.seen()
        .into_iter()
        .map(|s: H2Seen| {
            let mut headers: Vec<String> = s
                .headers
                .iter()
                .map(|(n, v)| if n == "x-request-id" { format!("{n}: *") } else { format!("{n}: {v}") })
                .collect();
            headers.sort();
            format!(
                "{} {}://{}{}\n{}\nbody={:?} trailers={:?}",
                s.method,
                s.scheme,
                s.authority,
                s.path,
                headers.join("\n"),
                String::from_utf8_lossy(&s.body),
                s.trailers
            )
        })
        .collect()
}

fn mask_expected_timeout(seen: Vec<String>) -> Vec<String> {
    let mask = |l: &str| {
        if l.starts_with("x-envoy-expected-rq-timeout-ms") {
            "x-envoy-expected-rq-timeout-ms: *".to_string()
        } else {
            l.to_string()
        }
    };
    seen.into_iter().map(|r| r.lines().map(mask).collect::<Vec<_>>().join("\n")).collect()
}

/// The access log's lines once it holds `want` of them (one per request; each proxy flushes its
/// log on its own schedule, so a read as soon as the first line lands can miss the next), or what
/// it holds after 3 s.
fn log_lines(path: &Path, want: usize) -> Vec<String> {
    let mut lines = Vec::new();
    support::eventually(Duration::from_secs(3), || {
        lines = std::fs::read_to_string(path).unwrap_or_default().lines().map(String::from).collect();
        lines.len() >= want.max(1)
    });
    lines
}

fn compare(dead: bool, requests: &[&[u8]]) {
    compare_with(dead, "", requests)
}

/// `compare` with `route_extra` added to the route's action (a flow-mapping fragment such as
/// `, retry_policy: {..}`).
fn compare_with(dead: bool, route_extra: &str, requests: &[&[u8]]) {
    let Some((e, s)) = sides(dead, route_extra) else { return };
    for r in requests {
        let (want, got) = (exchange(e.listener, r), exchange(s.listener, r));
        assert_eq!(got, want, "client saw a different response to {:?}", String::from_utf8_lossy(r));
    }
    let (mut got, mut want) = (seen(&s), seen(&e));
    if !route_extra.is_empty() {
        // On a retry Envoy sends what is left of the route timeout, skiff the whole timeout again
        // (the retry path's difference, not HTTP/2's): masked in the retry scenario.
        (got, want) = (mask_expected_timeout(got), mask_expected_timeout(want));
    }
    assert_eq!(got, want, "the upstream saw different requests");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(log_lines(&s.log, requests.len()), log_lines(&e.log, requests.len()), "access logs differ");
    let (got, want) = (stats(&s), stats(&e));
    assert!(want.iter().any(|(_, v)| v.is_some_and(|n| n > 0)), "no stats read from Envoy: {want:?}");
    assert_eq!(got, want, "cluster stats differ");
}

/// The cluster's connection and request counters Envoy keeps for HTTP/2 upstreams.
const STATS: &[&str] = &[
    "upstream_cx_total",
    "upstream_cx_http1_total",
    "upstream_cx_http2_total",
    "upstream_cx_active",
    "upstream_cx_connect_fail",
    "upstream_rq_total",
    "upstream_rq_pending_failure_eject",
    "upstream_rq_503",
    "upstream_rq_200",
    "http2.rx_reset",
    "http2.tx_reset",
    "http2.streams_active",
];

fn stats(side: &Side) -> Vec<(String, Option<u64>)> {
    let text = envoy::admin_get(side.admin, "/stats").map(|(_, b)| b).unwrap_or_default();
    let all = envoy::parse_stats(&text);
    STATS
        .iter()
        .map(|n| {
            let name = format!("cluster.backend.{n}");
            let v = all.get(&name).copied();
            (name, v)
        })
        .collect()
}

#[test]
fn parity_get_and_chunked_post_to_an_h2c_host() {
    compare(
        false,
        &[
            b"GET /hello?x=1 HTTP/1.1\r\nHost: example.com\r\nTE: trailers\r\nX-Custom: one\r\n\r\n",
            b"POST /post HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx-sum: 3\r\n\r\n",
            b"HEAD /head HTTP/1.1\r\nHost: example.com\r\n\r\n",
        ],
    );
}

#[test]
fn parity_grpc_trailers_to_an_http1_client() {
    compare(
        false,
        &[b"POST /grpc HTTP/1.1\r\nHost: grpc\r\nContent-Type: application/grpc\r\nTE: trailers\r\nContent-Length: 0\r\n\r\n"],
    );
}

#[test]
fn parity_stream_resets() {
    compare(false, &[b"GET /reset HTTP/1.1\r\nHost: a\r\n\r\n", b"GET /refuse HTTP/1.1\r\nHost: a\r\n\r\n"]);
}

#[test]
fn parity_unreachable_h2_host() {
    compare(true, &[b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]);
}

#[test]
fn parity_stream_resets_retried_under_reset() {
    compare_with(
        false,
        ", retry_policy: { retry_on: reset, num_retries: 1 }",
        &[b"GET /reset HTTP/1.1\r\nHost: a\r\n\r\n", b"GET /refuse HTTP/1.1\r\nHost: a\r\n\r\n"],
    );
}
