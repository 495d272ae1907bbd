//! CONNECT tunnelling, checked against the real Envoy: the same v3 config and client bytes go
//! through Envoy and skiff, each in front of its own TCP echo upstream, and what the client saw,
//! the access-log line and named `/stats` values must be equal. Scenarios: a terminated CONNECT
//! (`connect_config: {}`, a route response header on its 200) with bytes both ways, over HTTP/1.1
//! and as an HTTP/2 CONNECT stream (DATA frames), a CONNECT no route matches (no config: 404), a
//! CONNECT whose route disables the upgrade (403), and a tunnel to a dead upstream (503 `UF`).
//! Then what skiff refuses at load. Without Envoy the parity tests skip (fail under CI).

mod support;

#[path = "support/envoy.rs"]
mod envoy;

use envoy::Observed;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;
use support::{indent, RawUpstream, Skiff};

const LOG_FORMAT: &str = "%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %UPSTREAM_HOST% \
%UPSTREAM_CLUSTER% %PROTOCOL% %REQ(:METHOD)% %REQ(:PATH)% %REQ(:AUTHORITY)% %RESPONSE_CODE_DETAILS%";

/// A listener whose HCM has `hcm_upgrades` (YAML flow list, or empty) and routes `/` to
/// `backend`; `connect_route`, when given, is the `route:` map of a `connect_matcher` route.
fn config(
    hcm_upgrades: &str,
    connect_route: &str,
    (port, admin): (u16, u16),
    log: &Path,
    backend: SocketAddr,
    dead: SocketAddr,
) -> String {
    let upgrades =
        if hcm_upgrades.is_empty() { String::new() } else { format!("upgrade_configs: {hcm_upgrades}\n") };
    let extra = upgrades + &support::file_access_log_yaml(log, LOG_FORMAT);
    let mut action = "route: { cluster: backend }".to_string();
    if !connect_route.is_empty() {
        action = format!("{action}\n            - match: {{ connect_matcher: {{}} }}\n              route: {connect_route}");
    }
    let filter = indent(&support::hcm_filter_yaml("ingress", &extra, &action), 12);
    support::one_listener_config((port, admin), &filter, &[("backend", backend), ("dead", dead)])
}

/// A route-level response header: Envoy puts it on its `200` before `date` and `server`.
const RESPONSE_HEADER: &str =
    "              response_headers_to_add: [{ header: { key: x-tunnel, value: open } }]";

const TERMINATE: &str = "[{ upgrade_type: CONNECT, connect_config: {} }]";

struct Scenario {
    name: &'static str,
    hcm_upgrades: &'static str,
    connect_route: String,
    stats: &'static [&'static str],
    client: fn(SocketAddr) -> Vec<String>,
    /// What skiff's client must have seen (so that two equal failures do not pass).
    expect: &'static str,
}

/// The client: a CONNECT with bytes after its head, more bytes once answered, then it leaves.
/// What it saw, with the `date` line's value left out.
fn client(addr: SocketAddr) -> Vec<String> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(800))).unwrap();
    s.write_all(b"CONNECT db.example:5432 HTTP/1.1\r\nHost: db.example:5432\r\n\r\nearly ").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let _ = s.write_all(b"late");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        match s.read(&mut buf) {
            Ok(0) => break "closed",
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break "reset",
            Err(_) => break "open",
        }
    };
    let text = String::from_utf8_lossy(&got).into_owned();
    let mut out: Vec<String> =
        text.split("\r\n")
            .map(|l| {
                if l.to_ascii_lowercase().starts_with("date:") {
                    "date: *".to_string()
                } else {
                    l.to_string()
                }
            })
            .collect();
    // Envoy resets a connection it refused while the client's bytes were unread; skiff may
    // close it: both end the client's connection.
    out.push(if end == "open" { "open".into() } else { "ended".into() });
    out
}

/// The same over HTTP/2 (h2c, prior knowledge): a CONNECT stream with DATA before and after its
/// answer. What it saw: the status and headers (`date`'s value left out), then the DATA.
fn h2_client(addr: SocketAddr) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (client, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(conn);
        let mut client = client.ready().await.unwrap();
        let req = http::Request::builder().method("CONNECT").uri("db.example:5432").body(()).unwrap();
        let (resp, mut send) = client.send_request(req, false).unwrap();
        send.send_data(bytes::Bytes::from_static(b"early "), false).unwrap();
        let mut out = Vec::new();
        let resp = match tokio::time::timeout(Duration::from_secs(5), resp).await {
            Ok(Ok(r)) => r,
            other => return vec![format!("no response: {other:?}")],
        };
        out.push(format!("status {}", resp.status().as_u16()));
        for (name, value) in resp.headers() {
            let v = if name == "date" { "*" } else { value.to_str().unwrap_or("?") };
            out.push(format!("{name}: {v}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = send.send_data(bytes::Bytes::from_static(b"late"), false);
        let mut body = resp.into_body();
        let mut got = Vec::new();
        while got.len() < b"early late".len() {
            match tokio::time::timeout(Duration::from_secs(2), body.data()).await {
                Ok(Some(Ok(d))) => {
                    let _ = body.flow_control().release_capacity(d.len());
                    got.extend_from_slice(&d);
                }
                _ => break,
            }
        }
        out.push(String::from_utf8_lossy(&got).into_owned());
        out
    })
}

fn run(s: &Scenario, proxy: &str, bin: &Path) -> Observed {
    let dir = support::scratch_dir(&format!("connect-{}-{proxy}", s.name));
    let log = dir.join("access.log");
    let up = RawUpstream::start(|mut st, _| {
        let mut buf = [0u8; 4096];
        while let Ok(n) = st.read(&mut buf) {
            if n == 0 || st.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let (backend, dead) = (up.addr, support::dead_port());
    let (listener, admin, _envoy, _skiff);
    if proxy == "envoy" {
        let e = envoy::Envoy::start(bin, &dir, |port, admin| {
            config(s.hcm_upgrades, &s.connect_route, (port, admin), &log, backend, dead)
        });
        (listener, admin) = (e.listener, e.admin);
        (_envoy, _skiff) = (Some(e), None);
    } else {
        let k = Skiff::start(&config(s.hcm_upgrades, &s.connect_route, (0, 0), &log, backend, dead), &[]);
        (listener, admin) = (k.listener("main"), k.admin());
        (_skiff, _envoy) = (Some(k), None);
    }
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let stats_now =
        || envoy::parse_stats(&envoy::admin_get(admin, "/stats").map(|(_, b)| b).unwrap_or_default());
    let before = stats_now();
    let client = (s.client)(listener);
    support::wait_until(Duration::from_secs(5), || !read_log().is_empty());
    std::thread::sleep(Duration::from_millis(300));
    let log = read_log()
        .lines()
        .map(|l| l.replace(&backend.to_string(), "BACKEND").replace(&dead.to_string(), "DEAD"))
        .collect();
    let after = stats_now();
    let value = |m: &BTreeMap<String, u64>, n: &str| m.get(n).copied().unwrap_or(0);
    let stats = s.stats.iter().map(|n| (n.to_string(), value(&after, n) - value(&before, n))).collect();
    Observed { client, upstream: Vec::new(), log, stats }
}

fn compare(s: Scenario) {
    let Some(bin) = envoy::binary_or_skip(s.name) else { return };
    let envoy = run(&s, "envoy", &bin);
    let skiff = run(&s, "skiff", &bin);
    assert_eq!(envoy, skiff, "{}: left is Envoy, right is skiff", s.name);
    assert!(skiff.client.join("\n").contains(s.expect), "{}: {:?}", s.name, skiff.client);
}

const STATS: &[&str] = &[
    "http.ingress.downstream_cx_upgrades_total",
    "http.ingress.downstream_rq_2xx",
    "http.ingress.downstream_rq_4xx",
    "http.ingress.downstream_rq_5xx",
    "http.ingress.downstream_rq_ws_on_non_ws_route",
    "http.ingress.no_route",
    "cluster.backend.upstream_cx_total",
    "cluster.dead.upstream_cx_connect_fail",
];

#[test]
fn a_terminated_connect_tunnels_bytes_both_ways_like_envoy() {
    compare(Scenario {
        name: "tunnel",
        hcm_upgrades: "",
        connect_route: format!("{{ cluster: backend, upgrade_configs: {TERMINATE} }}\n{RESPONSE_HEADER}"),
        stats: STATS,
        client,
        expect: "HTTP/1.1 200 OK\nx-tunnel: open\ndate: *\nserver: envoy\n\nearly late\nopen",
    });
}

#[test]
fn an_http2_connect_stream_tunnels_as_data_frames_like_envoy() {
    compare(Scenario {
        name: "h2-tunnel",
        hcm_upgrades: "",
        connect_route: format!("{{ cluster: backend, upgrade_configs: {TERMINATE} }}\n{RESPONSE_HEADER}"),
        stats: STATS,
        client: h2_client,
        expect: "status 200\nx-tunnel: open\ndate: *\nserver: envoy\nearly late",
    });
}

#[test]
fn a_connect_without_a_connect_route_is_envoys_404() {
    compare(Scenario {
        name: "no-route",
        hcm_upgrades: "",
        connect_route: String::new(),
        stats: STATS,
        client,
        expect: "HTTP/1.1 404 Not Found",
    });
}

#[test]
fn a_connect_its_route_disables_is_envoys_403() {
    compare(Scenario {
        name: "disabled",
        hcm_upgrades: "[{ upgrade_type: CONNECT }]",
        connect_route: "{ cluster: backend, upgrade_configs: [{ upgrade_type: CONNECT, enabled: false, connect_config: {} }] }"
            .into(),
        stats: STATS,
        client,
        expect: "HTTP/1.1 403 Forbidden",
    });
}

#[test]
fn a_connect_to_a_dead_upstream_is_envoys_503() {
    compare(Scenario {
        name: "dead",
        hcm_upgrades: "",
        connect_route: format!("{{ cluster: dead, upgrade_configs: {TERMINATE} }}"),
        stats: STATS,
        client,
        expect: "HTTP/1.1 503 Service Unavailable",
    });
}

/// What skiff refuses at load, naming the field: forwarding a CONNECT to the upstream (Envoy's
/// default without `connect_config`), POST tunnels, and PROXY protocol on the tunnel.
#[test]
fn connect_forms_skiff_does_not_do_are_refused_at_load() {
    let dead = support::dead_port();
    let log = support::scratch_dir("connect-refused").join("a.log");
    for (hcm, route, why) in [
        ("[{ upgrade_type: CONNECT }]", "{ cluster: backend }", "CONNECT forwarded to the upstream"),
        ("", "{ cluster: backend, upgrade_configs: [{ upgrade_type: CONNECT }] }", "CONNECT forwarded to the upstream"),
        ("", "{ cluster: backend, upgrade_configs: [{ upgrade_type: CONNECT, connect_config: { allow_post: true } }] }", "allow_post"),
        ("", "{ cluster: backend, upgrade_configs: [{ upgrade_type: CONNECT, connect_config: { proxy_protocol_config: {} } }] }", "proxy_protocol_config"),
        ("", "{ cluster: backend, upgrade_configs: [{ upgrade_type: websocket, connect_config: {} }] }", "only for upgrade_type CONNECT"),
    ] {
        let err = Skiff::try_start(&config(hcm, route, (0, 0), &log, dead, dead), &[]).err().expect(why);
        assert!(err.contains(why), "{why}: {err}");
    }
}
