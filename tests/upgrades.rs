//! HTTP/1.1 upgrades through skiff, as a WebSocket user sees them: a real handshake and framed
//! bytes both ways (through two chained skiffs, with ping/pong and the close handshake), the 403
//! Envoy gives an upgrade its configuration does not allow, route-level `upgrade_configs`
//! overriding the connection manager's, a non-101 answer continuing as plain HTTP, the access-log
//! line and stats of an upgraded request, and the upgrade configs skiff refuses at load.

mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use support::websocket::{self, EchoServer, BINARY, CLOSE, PING, PONG, TEXT};
use support::{admin_request, read_head, stat_in, with_admin, RawUpstream, Skiff};

/// One HTTP listener `name` whose HCM has `hcm_upgrades` (YAML flow list or empty) and whose
/// routes are `/ws` → `backend` with `route_extra` in its `route:` map, everything else → backend.
fn listener(name: &str, hcm_upgrades: &str, route_extra: &str, log: Option<&str>) -> String {
    let upgrades = if hcm_upgrades.is_empty() {
        String::new()
    } else {
        format!("            upgrade_configs: {hcm_upgrades}\n")
    };
    let log = log.map_or(String::new(), |path| {
        format!(
            "            access_log:\n              - name: envoy.access_loggers.file\n                typed_config:\n                  \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n                  path: {path}\n"
        )
    });
    let routes = format!(
        "virtual_hosts:\n  - name: all\n    domains: [\"*\"]\n    routes:\n      - match: {{ prefix: \"/ws\" }}\n        route: {{ cluster: backend{route_extra} }}\n      - match: {{ prefix: \"/\" }}\n        route: {{ cluster: backend }}\n"
    );
    let stat_prefix = format!("stat_prefix: {name}\n");
    support::listener_yaml(name, "127.0.0.1", &routes)
        .replace(&stat_prefix, &format!("{stat_prefix}{upgrades}{log}"))
}

fn config(listeners: &[String], backend: SocketAddr) -> String {
    let l: String = listeners.iter().map(|b| support::indent(b, 4)).collect();
    with_admin(&format!(
        "static_resources:\n  listeners:\n{l}  clusters:\n    - name: backend\n      connect_timeout: 1s\n      load_assignment:\n        cluster_name: backend\n        endpoints:\n          - lb_endpoints:\n              - endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }}\n",
        backend.ip(),
        backend.port()
    ))
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

#[test]
fn the_test_client_computes_the_rfc_6455_accept_key() {
    assert_eq!(websocket::accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

#[test]
fn a_websocket_exchange_crosses_two_chained_skiffs_both_ways() {
    let server = EchoServer::start();
    let inner =
        Skiff::start(&config(&[listener("ws", "[{ upgrade_type: websocket }]", "", None)], server.addr), &[]);
    let inner_addr = inner.listener("ws");
    let outer =
        Skiff::start(&config(&[listener("ws", "[{ upgrade_type: websocket }]", "", None)], inner_addr), &[]);
    let mut s = connect(outer.listener("ws"));
    let head = websocket::handshake(&mut s, "chat.example", "/ws/chat").expect("101 with a valid accept key");
    assert!(head.to_ascii_lowercase().contains("upgrade: websocket"), "{head}");

    // Text, a 100 KiB binary frame (crosses many reads), ping/pong, then the close handshake.
    websocket::write_frame(&mut s, TEXT, b"hello over two proxies", true).unwrap();
    assert_eq!(websocket::read_frame(&mut s), Some((TEXT, b"hello over two proxies".to_vec())));
    let big = support::pattern(100 * 1024, 7);
    websocket::write_frame(&mut s, BINARY, &big, true).unwrap();
    assert_eq!(websocket::read_frame(&mut s), Some((BINARY, big)));
    websocket::write_frame(&mut s, PING, b"are you there", true).unwrap();
    assert_eq!(websocket::read_frame(&mut s), Some((PONG, b"are you there".to_vec())));
    websocket::write_frame(&mut s, CLOSE, &1000u16.to_be_bytes(), true).unwrap();
    assert_eq!(websocket::read_frame(&mut s), Some((CLOSE, 1000u16.to_be_bytes().to_vec())));
    // The server closed after its close frame: so does the relay, through both proxies.
    assert!(support::read_until_close(&mut s, Duration::from_secs(5)).closed);

    // The upstream saw the upgrade headers (kept, not stripped as hop-by-hop) and the proxies' own.
    let heads = server.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 1);
    let seen = heads[0].to_ascii_lowercase();
    assert!(
        seen.contains("\r\nupgrade: websocket\r\n") && seen.contains("\r\nconnection: upgrade\r\n"),
        "{seen}"
    );
    assert!(seen.contains("\r\nsec-websocket-key: dghlihnhbxbszsbub25jzq==\r\n"), "{seen}");
    assert!(seen.contains("x-request-id: "), "{seen}");

    let stats = admin_request(outer.admin(), "GET", "/stats").1;
    assert_eq!(stat_in(&stats, "http.ws.downstream_cx_upgrades_total"), Some(1), "{stats}");
    assert_eq!(stat_in(&stats, "http.ws.downstream_cx_upgrades_active"), Some(0), "{stats}");
    assert_eq!(stat_in(&stats, "http.ws.downstream_rq_1xx"), Some(1), "{stats}");
}

#[test]
fn an_upgrade_without_a_matching_config_is_refused_with_403_and_never_reaches_the_upstream() {
    let server = EchoServer::start();
    let skiff = Skiff::start(
        &config(
            &[listener("plain", "", "", None), listener("other", "[{ upgrade_type: h2c }]", "", None)],
            server.addr,
        ),
        &[],
    );
    for name in ["plain", "other"] {
        let mut s = connect(skiff.listener(name));
        let head = websocket::handshake(&mut s, "x", "/ws").expect_err("refused");
        assert!(head.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{head}");
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("connection: close") && lower.contains("content-length: 0"), "{head}");
        assert!(support::read_until_close(&mut s, Duration::from_secs(5)).closed, "{name}");
    }
    assert_eq!(server.connections.load(std::sync::atomic::Ordering::Relaxed), 0);
    let stats = admin_request(skiff.admin(), "GET", "/stats").1;
    assert_eq!(stat_in(&stats, "http.plain.downstream_rq_ws_on_non_ws_route"), Some(1), "{stats}");
    assert_eq!(stat_in(&stats, "http.other.downstream_rq_4xx"), Some(1), "{stats}");
    // Without `Connection: upgrade`, an `Upgrade` header is only hop-by-hop: a plain request.
    let plain = RawUpstream::start(|mut s, _| {
        let head = read_head(&mut s).unwrap_or_default();
        let body = if head.to_ascii_lowercase().contains("upgrade:") { "saw upgrade" } else { "plain" };
        let _ = write!(s, "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
    });
    let skiff = Skiff::start(&config(&[listener("plain", "", "", None)], plain.addr), &[]);
    let r = support::raw_until_close(
        skiff.listener("plain"),
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(r.text.starts_with("HTTP/1.1 200 OK") && r.text.ends_with("plain"), "{}", r.text);
}

#[test]
fn a_route_upgrade_config_overrides_the_connection_managers() {
    let server = EchoServer::start();
    // The route enables a type the HCM does not list; the HCM's websocket is disabled on the route.
    let skiff = Skiff::start(
        &config(
            &[
                listener("route_on", "", ", upgrade_configs: [{ upgrade_type: WebSocket }]", None),
                listener(
                    "off",
                    "[{ upgrade_type: websocket }]",
                    ", upgrade_configs: [{ upgrade_type: websocket, enabled: false }]",
                    None,
                ),
                listener("hcm_off", "[{ upgrade_type: websocket, enabled: false }]", "", None),
            ],
            server.addr,
        ),
        &[],
    );
    let mut s = connect(skiff.listener("route_on"));
    websocket::handshake(&mut s, "x", "/ws").expect("the route enables it");
    websocket::write_frame(&mut s, TEXT, b"ok", true).unwrap();
    assert_eq!(websocket::read_frame(&mut s), Some((TEXT, b"ok".to_vec())));
    // ... but only on that route: `/` has no override and the HCM lists nothing.
    let mut s = connect(skiff.listener("route_on"));
    assert!(websocket::handshake(&mut s, "x", "/").unwrap_err().starts_with("HTTP/1.1 403"));
    let mut s = connect(skiff.listener("off"));
    assert!(websocket::handshake(&mut s, "x", "/ws").unwrap_err().starts_with("HTTP/1.1 403"));
    let mut s = connect(skiff.listener("off"));
    websocket::handshake(&mut s, "x", "/other").expect("other routes keep the HCM's");
    let mut s = connect(skiff.listener("hcm_off"));
    assert!(websocket::handshake(&mut s, "x", "/ws").unwrap_err().starts_with("HTTP/1.1 403"));
}

#[test]
fn a_non_101_answer_to_an_upgrade_continues_as_plain_http() {
    let upstream = RawUpstream::start(|mut s, _| {
        while read_head(&mut s).is_some() {
            let _ = s.write_all(b"HTTP/1.1 426 Upgrade Required\r\ncontent-length: 6\r\n\r\nno ws\n");
        }
    });
    let skiff = Skiff::start(
        &config(&[listener("ws", "[{ upgrade_type: websocket }]", "", None)], upstream.addr),
        &[],
    );
    let mut s = connect(skiff.listener("ws"));
    let head = websocket::handshake(&mut s, "x", "/ws").expect_err("not switched");
    assert!(head.starts_with("HTTP/1.1 426"), "{head}");
    let mut body = [0u8; 6];
    std::io::Read::read_exact(&mut s, &mut body).unwrap();
    assert_eq!(&body, b"no ws\n");
    let stats = admin_request(skiff.admin(), "GET", "/stats").1;
    assert_eq!(stat_in(&stats, "http.ws.downstream_cx_upgrades_total"), Some(0), "{stats}");
}

#[test]
fn an_upgraded_request_is_logged_with_its_relayed_bytes_when_it_ends() {
    let server = EchoServer::start();
    let dir = support::scratch_dir("ws-log");
    let log = dir.join("access.log");
    let skiff = Skiff::start(
        &config(
            &[listener("ws", "[{ upgrade_type: websocket }]", "", Some(&log.display().to_string()))],
            server.addr,
        ),
        &[],
    );
    let mut s = connect(skiff.listener("ws"));
    websocket::handshake(&mut s, "x", "/ws").expect("101");
    websocket::write_frame(&mut s, TEXT, b"0123456789", true).unwrap();
    assert_eq!(websocket::read_frame(&mut s), Some((TEXT, b"0123456789".to_vec())));
    // The client goes away without a close handshake: Envoy's DC.
    drop(s);
    let line = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(support::wait_until(Duration::from_secs(5), || !line().is_empty()), "no log line");
    // 16 bytes up (a masked 10-byte frame), 12 down (an unmasked one); the 101 head is not counted.
    assert!(line().contains("\"GET /ws HTTP/1.1\" 101 DC 16 12 "), "{}", line());
}

#[test]
fn upgrade_filters_and_forwarded_connect_are_refused_at_load() {
    let bad = [
        (
            listener(
                "ws",
                "[{ upgrade_type: websocket, filters: [{ name: envoy.filters.http.router }] }]",
                "",
                None,
            ),
            "upgrade filter chains are not supported",
        ),
        (
            listener("ws", "", ", upgrade_configs: [{ upgrade_type: websocket, connect_config: {} }]", None),
            "connect_config is only for upgrade_type CONNECT",
        ),
    ];
    // A CONNECT route without `connect_config` would forward the CONNECT (Envoy's default): refused
    // (tests/connect.rs has the rest).
    let connect_route =
        config(&[listener("ws", "[{ upgrade_type: CONNECT }]", "", None)], "127.0.0.1:1".parse().unwrap())
            .replace("match: { prefix: \"/ws\" }", "match: { connect_matcher: {} }");
    let e = skiff::config::load_str(&connect_route, "c.yaml").unwrap_err().to_string();
    assert!(e.contains("a CONNECT forwarded to the upstream"), "{e}");
    for (l, want) in bad {
        let dir = support::scratch_dir("ws-bad");
        let path = dir.join("envoy.yaml");
        std::fs::write(&path, config(&[l], "127.0.0.1:1".parse().unwrap())).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["--mode", "validate", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want) && err.contains("upgrade_configs[0]"), "{err}");
    }
}
