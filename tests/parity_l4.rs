//! Envoy parity for the byte-relay paths: the same v3 config and the same client bytes go through
//! the real Envoy and through skiff, each in front of its own copy of the same loopback upstream,
//! and what the client saw, what the upstream got, the access-log line and named `/stats` values
//! must be equal once ports, dates and request ids are normalised. Scenarios: a WebSocket upgrade
//! round trip, an upgrade no config allows, a `tcp_proxy` echo with a half-close, and a `tcp_proxy`
//! to a dead upstream. Envoy is found as in tests/parity.rs; without it these skip (fail under CI).

mod support;

#[path = "support/envoy.rs"]
mod envoy;

use envoy::Observed;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;
use support::websocket::{self, EchoServer, CLOSE, TEXT};
use support::{indent, RawUpstream, Skiff};

const LOG_FORMAT: &str = "%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %UPSTREAM_HOST% \
%UPSTREAM_CLUSTER% %PROTOCOL% %REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE_DETAILS%";

/// What a listener runs.
enum Filter {
    /// An HCM with these `upgrade_configs` (a YAML flow list, or empty for none), routing
    /// everything to `backend`.
    Http(&'static str),
    /// A tcp_proxy to `cluster`.
    Tcp(&'static str),
}

fn access_log(log: &Path, indent_by: usize) -> String {
    indent(&support::file_access_log_yaml(log, LOG_FORMAT), indent_by)
}

fn config(
    filter: &Filter,
    port: u16,
    admin: u16,
    log: &Path,
    (backend, dead): (SocketAddr, SocketAddr),
) -> String {
    let filter = match filter {
        Filter::Http(upgrades) => {
            let upgrades =
                if upgrades.is_empty() { String::new() } else { format!("upgrade_configs: {upgrades}\n") };
            let extra = upgrades + &support::file_access_log_yaml(log, LOG_FORMAT);
            indent(&support::hcm_filter_yaml("ingress", &extra, "route: { cluster: backend }"), 12)
        }
        Filter::Tcp(cluster) => format!(
            r#"            - name: envoy.filters.network.tcp_proxy
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
                stat_prefix: tcp_in
                cluster: {cluster}
{log}"#,
            log = access_log(log, 16)
        ),
    };
    support::one_listener_config((port, admin), &filter, &[("backend", backend), ("dead", dead)])
}

/// A response head as comparable lines: the status line, then `name: value` lower-cased and
/// sorted, with the values of `date` and `server` left out.
fn head_lines(head: &str) -> Vec<String> {
    let mut lines = head.lines().filter(|l| !l.is_empty());
    let mut out = vec![lines.next().unwrap_or("").to_string()];
    let mut rest: Vec<String> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap_or((l, ""));
            let n = n.trim().to_ascii_lowercase();
            match n.as_str() {
                "date" | "server" | "x-request-id" => format!("{n}: *"),
                _ => format!("{n}: {}", v.trim()),
            }
        })
        .collect();
    rest.sort();
    out.extend(rest);
    out
}

struct Scenario {
    name: &'static str,
    filter: Filter,
    /// The upstream behind `backend`: a WebSocket echo server or a raw script.
    upstream: fn() -> Backend,
    client: fn(SocketAddr) -> Vec<String>,
    /// Log lines the scenario ends with.
    log_lines: usize,
    stats: &'static [&'static str],
}

/// A scenario's upstream: its address, what it has seen (as comparable lines), and the server
/// itself, kept alive for the run.
struct Backend {
    addr: SocketAddr,
    seen: Box<dyn Fn() -> Vec<String>>,
    _server: Box<dyn std::any::Any>,
}

fn ws_upstream() -> Backend {
    let server = EchoServer::start();
    let (addr, heads) = (server.addr, server.heads.clone());
    let seen = move || heads.lock().unwrap().iter().flat_map(|h| head_lines(h)).collect();
    Backend { addr, seen: Box::new(seen), _server: Box::new(server) }
}

fn tcp_echo_upstream() -> Backend {
    let up = RawUpstream::start(|mut s, _| {
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        let _ = s.write_all(&got);
        let _ = s.write_all(b"<eof>");
    });
    Backend { addr: up.addr, seen: Box::new(Vec::new), _server: Box::new(up) }
}

fn websocket_client(addr: SocketAddr) -> Vec<String> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = match websocket::handshake(&mut s, "ws.example", "/chat") {
        Ok(head) | Err(head) => head_lines(&head),
    };
    if !out[0].contains(" 101 ") {
        out.push(format!("closed: {}", support::read_until_close(&mut s, Duration::from_secs(5)).closed));
        return out;
    }
    websocket::write_frame(&mut s, TEXT, b"hello", true).unwrap();
    out.push(format!("{:?}", websocket::read_frame(&mut s)));
    websocket::write_frame(&mut s, CLOSE, &1000u16.to_be_bytes(), true).unwrap();
    out.push(format!("{:?}", websocket::read_frame(&mut s)));
    out.push(format!("closed: {}", support::read_until_close(&mut s, Duration::from_secs(5)).closed));
    out
}

/// Upgrades, exchanges one frame, then goes away without a close handshake.
fn websocket_client_leaving(addr: SocketAddr) -> Vec<String> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = match websocket::handshake(&mut s, "ws.example", "/chat") {
        Ok(head) | Err(head) => head_lines(&head),
    };
    websocket::write_frame(&mut s, TEXT, b"bye", true).unwrap();
    out.push(format!("{:?}", websocket::read_frame(&mut s)));
    out
}

fn tcp_client(addr: SocketAddr) -> Vec<String> {
    let mut s = TcpStream::connect(addr).unwrap();
    // A proxy with no upstream may have closed the connection already: that is an outcome to
    // compare, not a test failure.
    let _ = s.write_all(b"hello tcp");
    let _ = s.shutdown(Shutdown::Write);
    let r = support::read_until_close(&mut s, Duration::from_secs(5));
    vec![r.text, format!("closed: {}", r.closed)]
}

fn run(s: &Scenario, proxy: &str, bin: &Path) -> Observed {
    let dir = support::scratch_dir(&format!("parity-l4-{}-{proxy}", s.name));
    let log = dir.join("access.log");
    let upstream = (s.upstream)();
    let backend = upstream.addr;
    let dead = support::dead_port();
    let (listener, admin, _envoy, _skiff);
    if proxy == "envoy" {
        let e = envoy::Envoy::start(bin, &dir, |port, admin| {
            config(&s.filter, port, admin, &log, (backend, dead))
        });
        (listener, admin) = (e.listener, e.admin);
        _envoy = Some(e);
        _skiff = None;
    } else {
        let k = Skiff::start(&config(&s.filter, 0, 0, &log, (backend, dead)), &[]);
        (listener, admin) = (k.listener("main"), k.admin());
        _skiff = Some(k);
        _envoy = None;
    }
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let stats_now =
        || envoy::parse_stats(&envoy::admin_get(admin, "/stats").map(|(_, b)| b).unwrap_or_default());
    // `Envoy::start` proves the listener accepts with a connection of its own: on a tcp_proxy
    // listener that is a proxied connection with a log line. It is left out of the comparison.
    let probe = usize::from(proxy == "envoy" && matches!(s.filter, Filter::Tcp(_)));
    support::wait_until(Duration::from_secs(5), || read_log().lines().count() >= probe);
    let before = stats_now();
    let client = (s.client)(listener);
    support::wait_until(Duration::from_secs(5), || read_log().lines().count() >= probe + s.log_lines);
    let log = read_log()
        .lines()
        .skip(probe)
        .map(|l| l.replace(&backend.to_string(), "BACKEND").replace(&dead.to_string(), "DEAD"))
        .collect();
    let value = |m: &BTreeMap<String, u64>, n: &str| m.get(n).copied().unwrap_or(0);
    // The gauges follow the connections' closes, which a loaded machine delays: read them once
    // they have stopped moving (unchanged over 300 ms, at most 5 s).
    let gauges = |m: &BTreeMap<String, u64>| -> Vec<u64> {
        s.stats.iter().filter(|n| n.ends_with("_active")).map(|n| value(m, n)).collect()
    };
    let mut after = stats_now();
    let settle_by = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = stats_now();
        let settled = gauges(&now) == gauges(&after);
        after = now;
        if settled || std::time::Instant::now() > settle_by {
            break;
        }
    }
    // What the scenario's client caused: counters as deltas, gauges (`_active`) as they stand.
    let stats = s
        .stats
        .iter()
        .map(|n| {
            let v =
                if n.ends_with("_active") { value(&after, n) } else { value(&after, n) - value(&before, n) };
            (n.to_string(), v)
        })
        .collect();
    Observed { client, upstream: (upstream.seen)(), log, stats }
}

fn compare(s: Scenario) {
    let Some(bin) = envoy::binary_or_skip(s.name) else { return };
    let envoy = run(&s, "envoy", &bin);
    let skiff = run(&s, "skiff", &bin);
    assert_eq!(envoy, skiff, "{}: left is Envoy, right is skiff", s.name);
}

#[test]
fn a_websocket_upgrade_round_trip_matches_envoy() {
    compare(Scenario {
        name: "websocket",
        filter: Filter::Http("[{ upgrade_type: websocket }]"),
        upstream: ws_upstream,
        client: websocket_client,
        log_lines: 1,
        stats: &[
            "http.ingress.downstream_cx_upgrades_total",
            "http.ingress.downstream_cx_upgrades_active",
            "http.ingress.downstream_rq_1xx",
            "http.ingress.downstream_rq_completed",
            "cluster.backend.upstream_rq_101",
            "cluster.backend.upstream_cx_total",
        ],
    });
}

#[test]
fn a_websocket_client_leaving_is_logged_like_envoy() {
    compare(Scenario {
        name: "websocket-client-leaves",
        filter: Filter::Http("[{ upgrade_type: websocket }]"),
        upstream: ws_upstream,
        client: websocket_client_leaving,
        log_lines: 1,
        stats: &[
            "http.ingress.downstream_cx_upgrades_total",
            "http.ingress.downstream_cx_upgrades_active",
            "cluster.backend.upstream_cx_active",
        ],
    });
}

#[test]
fn an_upgrade_without_config_is_refused_like_envoy() {
    compare(Scenario {
        name: "upgrade-refused",
        filter: Filter::Http(""),
        upstream: ws_upstream,
        client: websocket_client,
        log_lines: 1,
        stats: &[
            "http.ingress.downstream_rq_ws_on_non_ws_route",
            "http.ingress.downstream_rq_4xx",
            "http.ingress.downstream_cx_upgrades_total",
            "cluster.backend.upstream_cx_total",
        ],
    });
}

#[test]
fn a_tcp_proxy_echo_with_half_close_matches_envoy() {
    compare(Scenario {
        name: "tcp-echo",
        filter: Filter::Tcp("backend"),
        upstream: tcp_echo_upstream,
        client: tcp_client,
        log_lines: 1,
        stats: &[
            "tcp.tcp_in.downstream_cx_total",
            "tcp.tcp_in.downstream_cx_rx_bytes_total",
            "tcp.tcp_in.downstream_cx_tx_bytes_total",
            "tcp.tcp_in.downstream_cx_no_route",
            "tcp.tcp_in.idle_timeout",
            "cluster.backend.upstream_cx_total",
            "cluster.backend.upstream_cx_active",
            "cluster.backend.upstream_cx_rx_bytes_total",
            "cluster.backend.upstream_cx_tx_bytes_total",
            "cluster.backend.upstream_cx_destroy",
            "cluster.backend.upstream_cx_destroy_remote_with_active_rq",
            "cluster.backend.upstream_cx_destroy_local_with_active_rq",
            "cluster.backend.upstream_rq_total",
            "cluster.backend.upstream_rq_pending_total",
        ],
    });
}

#[test]
fn a_tcp_proxy_to_a_dead_upstream_matches_envoy() {
    compare(Scenario {
        name: "tcp-dead",
        filter: Filter::Tcp("dead"),
        upstream: tcp_echo_upstream,
        client: tcp_client,
        log_lines: 1,
        stats: &[
            "tcp.tcp_in.downstream_cx_total",
            "tcp.tcp_in.downstream_cx_rx_bytes_total",
            "cluster.dead.upstream_cx_total",
            "cluster.dead.upstream_cx_connect_fail",
            "cluster.dead.upstream_cx_connect_attempts_exceeded",
            "cluster.dead.upstream_cx_destroy",
            "cluster.dead.upstream_cx_destroy_remote",
            "cluster.dead.upstream_rq_pending_total",
            "cluster.dead.upstream_rq_pending_failure_eject",
            "cluster.dead.upstream_cx_active",
        ],
    });
}
