//! `envoy.filters.network.tcp_proxy` as a user of a non-HTTP port sees it: bytes echoed both ways
//! (megabytes, with backpressure), a client's half-close reaching the upstream while the answer
//! still comes back, `idle_timeout` closing a quiet connection, a dead upstream giving `UF,URX` in
//! the access log after `max_connect_attempts`, `weighted_clusters` spreading connections, the
//! `tcp.*` and cluster stats, and Envoy's example configs that use it loading unchanged.

mod support;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};
use support::{admin_request, dead_port, stat_in, with_admin, RawUpstream, Skiff};

/// Echoes until the client's FIN, then says so and closes its side.
fn echo_upstream(tag: &'static str) -> RawUpstream {
    RawUpstream::start(move |mut s, _| {
        let _ = s.write_all(tag.as_bytes());
        let mut buf = [0u8; 64 * 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = s.write_all(b"<upstream saw EOF>");
        let _ = s.shutdown(Shutdown::Write);
    })
}

/// A tcp_proxy listener `name` with `extra` YAML lines (indented 12) in its config.
fn tcp_listener(name: &str, extra: &str) -> String {
    format!(
        r#"- name: {name}
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
  filter_chains:
    - filters:
        - name: envoy.filters.network.tcp_proxy
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
            stat_prefix: {name}
{extra}"#
    )
}

fn cluster(name: &str, addr: SocketAddr) -> String {
    support::static_cluster_yaml(name, "ROUND_ROBIN", &[(addr, 1)])
}

fn access_log(path: &Path) -> String {
    format!(
        "            access_log:\n              - name: envoy.access_loggers.file\n                typed_config:\n                  \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n                  path: {}\n",
        path.display()
    )
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn read_exactly(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).expect("read");
    buf
}

#[test]
fn bytes_cross_both_ways_and_a_half_close_still_gets_the_answer() {
    let upstream = echo_upstream("hi\n");
    let dir = support::scratch_dir("tcp-echo");
    let log = dir.join("access.log");
    let yaml = with_admin(&support::bootstrap_yaml(
        &[tcp_listener("db", &format!("            cluster: backend\n{}", access_log(&log)))],
        &[cluster("backend", upstream.addr)],
    ));
    let skiff = Skiff::start(&yaml, &[]);
    let mut s = connect(skiff.listener("db"));
    // The upstream speaks first, as MySQL's or SMTP's greeting does.
    assert_eq!(read_exactly(&mut s, 3), b"hi\n");
    // 4 MiB each way at once: a writer thread, since the echo backs up into our reads.
    let payload = support::pattern(4 * 1024 * 1024, 3);
    let writer = {
        let mut w = s.try_clone().unwrap();
        let payload = payload.clone();
        std::thread::spawn(move || {
            w.write_all(&payload).unwrap();
            // Half-close: the upstream sees EOF, and its answer still comes back.
            w.shutdown(Shutdown::Write).unwrap();
        })
    };
    assert!(read_exactly(&mut s, payload.len()) == payload, "the echo differs from what was sent");
    writer.join().unwrap();
    let rest = support::read_until_close(&mut s, Duration::from_secs(10));
    assert_eq!(rest.text, "<upstream saw EOF>");
    assert!(rest.closed);

    let sent_down = 3 + payload.len() + "<upstream saw EOF>".len();
    let stats = admin_request(skiff.admin(), "GET", "/stats").1;
    assert_eq!(stat_in(&stats, "tcp.db.downstream_cx_total"), Some(1), "{stats}");
    assert_eq!(stat_in(&stats, "tcp.db.downstream_cx_rx_bytes_total"), Some(payload.len() as u64));
    assert_eq!(stat_in(&stats, "tcp.db.downstream_cx_tx_bytes_total"), Some(sent_down as u64));
    assert_eq!(stat_in(&stats, "cluster.backend.upstream_cx_tx_bytes_total"), Some(payload.len() as u64));
    assert_eq!(stat_in(&stats, "cluster.backend.upstream_cx_rx_bytes_total"), Some(sent_down as u64));
    // The upstream's FIN came last: Envoy counts a remote close of a connection with its "request".
    assert_eq!(stat_in(&stats, "cluster.backend.upstream_cx_destroy_remote_with_active_rq"), Some(1));
    assert_eq!(stat_in(&stats, "cluster.backend.upstream_cx_active"), Some(0));
    assert!(support::wait_until(Duration::from_secs(5), || std::fs::read_to_string(&log)
        .is_ok_and(|l| !l.is_empty())));
    let line = std::fs::read_to_string(&log).unwrap();
    let want = format!("\"- - -\" 0 - {} {} ", payload.len(), sent_down);
    assert!(line.contains(&want) && line.trim_end().ends_with(&format!("\"{}\"", upstream.addr)), "{line}");
}

#[test]
fn a_quiet_connection_is_closed_after_idle_timeout() {
    let upstream = echo_upstream("");
    let yaml = with_admin(&support::bootstrap_yaml(
        &[tcp_listener("db", "            cluster: backend\n            idle_timeout: 1s\n")],
        &[cluster("backend", upstream.addr)],
    ));
    let skiff = Skiff::start(&yaml, &[]);
    let mut s = connect(skiff.listener("db"));
    // Traffic keeps it open past the timeout...
    for _ in 0..4 {
        s.write_all(b"ping").unwrap();
        assert_eq!(read_exactly(&mut s, 4), b"ping");
        std::thread::sleep(Duration::from_millis(400));
    }
    // ... silence closes it (generous bound: the box is loaded).
    let started = Instant::now();
    let r = support::read_until_close(&mut s, Duration::from_secs(10));
    assert!(r.closed && started.elapsed() >= Duration::from_millis(500), "{:?}", started.elapsed());
    let stats = admin_request(skiff.admin(), "GET", "/stats").1;
    assert_eq!(stat_in(&stats, "tcp.db.idle_timeout"), Some(1), "{stats}");
}

#[test]
fn a_dead_upstream_is_tried_max_connect_attempts_times_then_logged_uf() {
    let dir = support::scratch_dir("tcp-dead");
    let log = dir.join("access.log");
    let yaml = with_admin(&support::bootstrap_yaml(
        &[tcp_listener(
            "db",
            &format!("            cluster: dead\n            max_connect_attempts: 3\n{}", access_log(&log)),
        )],
        &[cluster("dead", dead_port())],
    ));
    let skiff = Skiff::start(&yaml, &[]);
    let mut s = connect(skiff.listener("db"));
    let r = support::read_until_close(&mut s, Duration::from_secs(10));
    assert!(r.closed && r.text.is_empty(), "{}", r.text);
    assert!(support::wait_until(Duration::from_secs(5), || std::fs::read_to_string(&log)
        .is_ok_and(|l| !l.is_empty())));
    let line = std::fs::read_to_string(&log).unwrap();
    assert!(line.contains("\"- - -\" 0 UF,URX 0 0 "), "{line}");
    let stats = admin_request(skiff.admin(), "GET", "/stats").1;
    assert_eq!(stat_in(&stats, "cluster.dead.upstream_cx_connect_fail"), Some(3), "{stats}");
    assert_eq!(stat_in(&stats, "cluster.dead.upstream_cx_connect_attempts_exceeded"), Some(1));
    assert_eq!(stat_in(&stats, "tcp.db.downstream_cx_total"), Some(1));
}

#[test]
fn weighted_clusters_spread_connections_by_weight() {
    let (a, b, never) = (echo_upstream("a"), echo_upstream("b"), echo_upstream("z"));
    let yaml = with_admin(&support::bootstrap_yaml(
        &[tcp_listener(
            "db",
            "            weighted_clusters:\n              clusters:\n                - { name: a, weight: 3 }\n                - { name: b, weight: 1 }\n                - { name: never, weight: 0 }\n",
        )],
        &[cluster("a", a.addr), cluster("b", b.addr), cluster("never", never.addr)],
    ));
    let skiff = Skiff::start(&yaml, &[]);
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..60 {
        let mut s = connect(skiff.listener("db"));
        let tag = read_exactly(&mut s, 1);
        *seen.entry(tag[0]).or_insert(0) += 1;
    }
    // 3:1 over 60 connections: each side far from zero (the chance of either count being off by
    // more than this is below one in a million).
    let (na, nb) = (seen.get(&b'a').copied().unwrap_or(0), seen.get(&b'b').copied().unwrap_or(0));
    assert!(na >= 30 && nb >= 4 && na + nb == 60, "{seen:?}");
}

#[test]
fn envoys_example_configs_using_tcp_proxy_and_upgrades_load_unchanged() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/envoy-examples/envoyproxy-examples");
    for name in
        ["websocket/envoy-ws.yaml", "websocket/envoy-ws-route.yaml", "websocket/envoy-wss-passthrough.yaml"]
    {
        let loaded = skiff::config::load_file(&dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(loaded.warnings.is_empty(), "{name}: {:?}", loaded.warnings);
    }
    let passthrough = skiff::config::load_file(&dir.join("websocket/envoy-wss-passthrough.yaml")).unwrap();
    assert_eq!(passthrough.bootstrap.tcp_listeners.len(), 1);
    assert_eq!(passthrough.bootstrap.tcp_listeners[0].proxy.stat_prefix, "wss_passthrough");
    // The database examples put a protocol filter in front of tcp_proxy: refused by name.
    let mysql = skiff::config::load_file(&dir.join("mysql/envoy.yaml")).unwrap_err().to_string();
    assert!(
        mysql.contains("network filter \"envoy.filters.network.mysql_proxy\" is not supported"),
        "{mysql}"
    );
}

#[test]
fn tcp_proxy_config_mistakes_are_refused_with_their_place() {
    let cases = [
        ("            cluster: nope\n", "unknown cluster \"nope\""),
        ("", "tcp_proxy needs cluster or weighted_clusters"),
        (
            "            cluster: backend\n            max_connect_attempts: 0\n",
            "max_connect_attempts must be at least 1",
        ),
        (
            "            cluster: backend\n            tunneling_config: { hostname: x }\n",
            "tunneling_config is not supported",
        ),
    ];
    for (extra, want) in cases {
        let yaml = support::bootstrap_yaml(&[tcp_listener("db", extra)], &[cluster("backend", dead_port())]);
        let e = skiff::config::load_str(&yaml, "t.yaml").unwrap_err().to_string();
        assert!(
            e.starts_with("t.yaml:") && e.contains("static_resources.listeners[0]") && e.contains(want),
            "{e}"
        );
    }
    // The v2 spelling: `envoy.tcp_proxy` with `config:`.
    let v2 = support::bootstrap_yaml(&[tcp_listener("db", "            cluster: backend\n")], &[cluster("backend", dead_port())])
        .replace("envoy.filters.network.tcp_proxy", "envoy.tcp_proxy")
        .replace("          typed_config:\n            \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n", "          config:\n");
    let loaded = skiff::config::load_str(&v2, "v2.yaml").unwrap_or_else(|e| panic!("{e}\n{v2}"));
    assert_eq!(loaded.bootstrap.tcp_listeners[0].proxy.max_connect_attempts, 1);
}

#[test]
fn config_dump_shows_tcp_proxies_and_upgrades_and_loads_back_equal() {
    let http = support::listener_yaml("web", "127.0.0.1", "virtual_hosts:\n  - name: all\n    domains: [\"*\"]\n    routes:\n      - match: { prefix: \"/\" }\n        route: { cluster: a, upgrade_configs: [{ upgrade_type: websocket, enabled: false }] }\n")
        .replace("stat_prefix: web\n", "stat_prefix: web\n            upgrade_configs: [{ upgrade_type: websocket }, { upgrade_type: Custom-Proto }]\n");
    let tcp = tcp_listener(
        "db",
        "            weighted_clusters: { clusters: [{ name: a, weight: 2 }, { name: b, weight: 1 }] }\n            idle_timeout: 0s\n            max_connect_attempts: 2\n",
    );
    let yaml = support::bootstrap_yaml(&[http, tcp], &[cluster("a", dead_port()), cluster("b", dead_port())]);
    let original =
        skiff::config::load_str(&yaml, "t.yaml").unwrap_or_else(|e| panic!("{e}\n{yaml}")).bootstrap;
    let dump = skiff::admin::config_dump::render_bootstrap(&original);
    let bootstrap = &dump["configs"][0]["bootstrap"];
    let listeners = bootstrap["static_resources"]["listeners"].as_array().unwrap();
    assert_eq!(listeners[1]["filter_chains"][0]["filters"][0]["name"], "envoy.filters.network.tcp_proxy");
    let text = serde_json::to_string(bootstrap).unwrap();
    let again = skiff::config::load_str(&text, "dump.json").unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(again.bootstrap, original, "{text}");
}
