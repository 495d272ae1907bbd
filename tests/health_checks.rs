//! Active health checks through the real skiff binary against real upstreams: an HTTP check takes
//! a host out after `unhealthy_threshold` failures and back after `healthy_threshold` passes, and
//! traffic follows within about one interval; a 503 fails a host at once; TCP checks
//! (connect-only and send/receive). Checked by what clients get, `/clusters`' `health_flags`,
//! the `health_check.*` stats and what the checked upstream saw.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{
    admin_request, bootstrap_yaml, eventually, get, listener_yaml, stat, Reply, Seen, Skiff, TestUpstream,
};

const ROUTES: &str = "virtual_hosts:\n  - name: all\n    domains: [\"*\"]\n    routes:\n      - match: { prefix: \"/\" }\n        route: { cluster: backend }\n";

/// Cluster `backend` over `hosts` with `check` (YAML lines for one `health_checks` item, at
/// column 0).
fn config(hosts: &[SocketAddr], check: &str) -> String {
    let eps: String = hosts
        .iter()
        .map(|a| format!("        - endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }}\n", a.ip(), a.port()))
        .collect();
    // The check as a list item under `health_checks:` (at column 2).
    let item: String = check
        .lines()
        .enumerate()
        .map(|(i, l)| format!("{}{l}\n", if i == 0 { "  - " } else { "    " }))
        .collect();
    let cluster = format!(
        "- name: backend\n  connect_timeout: 0.5s\n  type: STATIC\n  health_checks:\n{item}  load_assignment:\n    cluster_name: backend\n    endpoints:\n      - lb_endpoints:\n{eps}"
    );
    support::with_admin(&bootstrap_yaml(&[listener_yaml("main", "127.0.0.1", ROUTES)], &[cluster]))
}

/// An upstream answering its name, and `/healthz` with the status in `code`.
fn checked(name: &str, code: Arc<AtomicU16>) -> TestUpstream {
    let name = name.to_string();
    TestUpstream::start(Arc::new(move |s: &Seen| {
        if s.path == "/healthz" {
            let status = code.load(Ordering::Relaxed);
            return Reply::Full { status, headers: vec![], body: b"hc".to_vec() };
        }
        Reply::ok(&name)
    }))
}

fn flags(sk: &Skiff, a: SocketAddr) -> String {
    let (_, text) = admin_request(sk.admin(), "GET", "/clusters");
    let prefix = format!("backend::{a}::health_flags::");
    text.lines().find_map(|l| l.strip_prefix(&prefix).map(str::to_string)).unwrap_or_default()
}

fn bodies(sk: &Skiff, n: usize) -> Vec<String> {
    (0..n).map(|_| get(sk.listener("main"), "/").text()).collect()
}

const HTTP_CHECK: &str = "timeout: 0.5s
interval: 0.2s
no_traffic_interval: 0.2s
unhealthy_threshold: 3
healthy_threshold: 2
http_health_check:
  path: /healthz
  request_headers_to_add: [ { header: { key: x-checker, value: skiff } } ]
  retriable_statuses: [ { start: 500, end: 501 } ]
";

#[test]
fn http_check_takes_a_host_out_after_n_failures_and_back_after_m_passes() {
    let code_a = Arc::new(AtomicU16::new(200));
    let a = checked("a", code_a.clone());
    let b = checked("b", Arc::new(AtomicU16::new(200)));
    let sk = Skiff::start(&config(&[a.addr, b.addr], HTTP_CHECK), &["--concurrency", "2"]);
    // The first round ran before the listener served: both hosts pass.
    assert_eq!(flags(&sk, a.addr), "healthy");
    let seen = bodies(&sk, 10);
    assert!(seen.contains(&"a".to_string()) && seen.contains(&"b".to_string()), "{seen:?}");
    let hc = a.requests().into_iter().find(|s| s.path == "/healthz").expect("a was checked");
    assert_eq!(hc.method, "GET");
    assert_eq!(hc.header("host"), Some("backend"), "the cluster's name by default");
    assert_eq!(hc.header("user-agent"), Some("Envoy/HC"));
    assert_eq!(hc.header("x-checker"), Some("skiff"));

    // A retriable status counts toward unhealthy_threshold (3 checks, 0.2 s apart).
    let failures_before = stat(sk.admin(), "cluster.backend.health_check.failure").unwrap_or(0);
    code_a.store(500, Ordering::Relaxed);
    let started = Instant::now();
    assert!(eventually(Duration::from_secs(5), || flags(&sk, a.addr) == "/failed_active_hc"));
    let failures = stat(sk.admin(), "cluster.backend.health_check.failure").unwrap_or(0) - failures_before;
    assert!(failures >= 3, "down after {failures} failures");
    assert!(started.elapsed() >= Duration::from_millis(350), "down too soon: {:?}", started.elapsed());
    assert_eq!(stat(sk.admin(), "cluster.backend.health_check.healthy"), Some(1));
    assert_eq!(stat(sk.admin(), "cluster.backend.membership_healthy"), Some(1));
    // Every shard sees the verdict at once: no request reaches a.
    assert!(bodies(&sk, 10).iter().all(|b| b == "b"));

    // Two passes bring it back; traffic follows.
    code_a.store(200, Ordering::Relaxed);
    assert!(eventually(Duration::from_secs(5), || flags(&sk, a.addr) == "healthy"));
    assert!(bodies(&sk, 10).contains(&"a".to_string()));

    // A status neither expected nor retriable fails the host at the first check.
    let failures_before = stat(sk.admin(), "cluster.backend.health_check.failure").unwrap_or(0);
    code_a.store(503, Ordering::Relaxed);
    assert!(eventually(Duration::from_secs(5), || flags(&sk, a.addr) == "/failed_active_hc"));
    let failures = stat(sk.admin(), "cluster.backend.health_check.failure").unwrap_or(0) - failures_before;
    assert!((1..=2).contains(&failures), "a 503 fails at once, took {failures}");
    assert_eq!(stat(sk.admin(), "cluster.backend.health_check.network_failure"), Some(0));
}

#[test]
fn tcp_connect_check_passes_a_listening_port_and_fails_a_closed_one() {
    let a = TestUpstream::named("a");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let b_addr = listener.local_addr().expect("addr");
    let b = TestUpstream::serve(listener, Arc::new(|_: &Seen| Reply::ok("b")));
    let check = "timeout: 0.5s\ninterval: 0.2s\nno_traffic_interval: 0.2s\nunhealthy_threshold: 2\nhealthy_threshold: 1\ntcp_health_check: {}\n";
    let sk = Skiff::start(&config(&[a.addr, b_addr], check), &["--concurrency", "1"]);
    assert_eq!(flags(&sk, a.addr), "healthy");
    assert_eq!(flags(&sk, b_addr), "healthy");
    // A port nobody listens on: refused connects are network failures.
    let dead = support::dead_port();
    let sk2 = Skiff::start(&config(&[a.addr, dead], check), &["--concurrency", "1"]);
    assert_eq!(flags(&sk2, dead), "/failed_active_hc");
    assert!(bodies(&sk2, 6).iter().all(|x| x == "a"));
    assert!(stat(sk2.admin(), "cluster.backend.health_check.network_failure").unwrap_or(0) >= 1);
    assert_eq!(
        stat(sk2.admin(), "cluster.backend.health_check.network_failure"),
        stat(sk2.admin(), "cluster.backend.health_check.failure"),
    );
    drop(b);
}

#[test]
fn tcp_send_receive_check_wants_the_expected_bytes() {
    // Answers "PONG" to "PING", or "NOPE" when `good` is 0.
    let good = Arc::new(AtomicU16::new(1));
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let g = good.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let g = g.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4];
                if s.read_exact(&mut buf).is_ok() && &buf == b"PING" {
                    let answer: &[u8] = if g.load(Ordering::Relaxed) == 1 { b"PONG" } else { b"NOPE" };
                    let _ = s.write_all(answer);
                }
                std::thread::sleep(Duration::from_millis(600));
            });
        }
    });
    let other = TestUpstream::named("other");
    // "PING" / "PONG" in hex.
    let check = "timeout: 0.3s\ninterval: 0.2s\nno_traffic_interval: 0.2s\nunhealthy_threshold: 1\nhealthy_threshold: 1\ntcp_health_check: { send: { text: \"50494E47\" }, receive: [ { text: \"504f4e47\" } ] }\n";
    let sk = Skiff::start(&config(&[addr, other.addr], check), &["--concurrency", "1"]);
    assert_eq!(flags(&sk, addr), "healthy");
    // Wrong bytes are waited past until the timeout, as in Envoy: a timeout failure.
    good.store(0, Ordering::Relaxed);
    assert!(eventually(Duration::from_secs(5), || flags(&sk, addr) == "/failed_active_hc/active_hc_timeout"));
    good.store(1, Ordering::Relaxed);
    assert!(eventually(Duration::from_secs(5), || flags(&sk, addr) == "healthy"));
}

#[test]
fn checks_are_validated_at_load() {
    let a = TestUpstream::named("a");
    let missing = "interval: 1s\nunhealthy_threshold: 1\nhealthy_threshold: 1\ntcp_health_check: {}\n";
    let err = Skiff::try_start(&config(&[a.addr], missing), &[]).err().unwrap_or_default();
    assert!(err.contains("a health check needs timeout"), "{err}");
    let grpc =
        "timeout: 1s\ninterval: 1s\nunhealthy_threshold: 1\nhealthy_threshold: 1\ngrpc_health_check: {}\n";
    let err = Skiff::try_start(&config(&[a.addr], grpc), &[]).err().unwrap_or_default();
    assert!(err.contains("health_checks[0].grpc_health_check: grpc_health_check is not supported"), "{err}");
}

#[test]
fn an_endpoints_health_check_config_port_is_where_its_checks_go() {
    let a = TestUpstream::named("a");
    let b = TestUpstream::named("b");
    let dead = support::dead_port();
    let check = "timeout: 0.5s\ninterval: 0.2s\nno_traffic_interval: 0.2s\nunhealthy_threshold: 1\nhealthy_threshold: 1\ntcp_health_check: {}\n";
    let b_line =
        format!("address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}", b.addr.port());
    let yaml = config(&[a.addr, b.addr], check).replace(
        &b_line,
        &format!(
            "address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }}, health_check_config: {{ port_value: {} }} }}",
            b.addr.port(),
            dead.port()
        ),
    );
    assert!(yaml.contains("health_check_config"), "{yaml}");
    let sk = Skiff::start(&yaml, &["--concurrency", "1"]);
    assert_eq!(flags(&sk, a.addr), "healthy");
    assert_eq!(flags(&sk, b.addr), "/failed_active_hc", "b's checks go to the dead port");
    assert!(bodies(&sk, 6).iter().all(|x| x == "a"));
}

#[test]
fn a_reloaded_check_keeps_running_and_the_old_one_stops() {
    let code_a = Arc::new(AtomicU16::new(200));
    let a = checked("a", code_a.clone());
    let b = checked("b", Arc::new(AtomicU16::new(200)));
    let sk = Skiff::start(&config(&[a.addr, b.addr], HTTP_CHECK), &["--concurrency", "1"]);
    assert_eq!(flags(&sk, a.addr), "healthy");
    // A changed check is a changed cluster: its checks start over with the new spec.
    let slower = HTTP_CHECK.replace("0.2s", "0.3s");
    sk.rewrite_config(&config(&[a.addr, b.addr], &slower));
    assert!(sk.wait_for_log("config reloaded", Duration::from_secs(10)), "{}", sk.log());
    assert!(eventually(Duration::from_secs(5), || flags(&sk, a.addr) == "healthy"));
    code_a.store(503, Ordering::Relaxed);
    assert!(eventually(Duration::from_secs(5), || flags(&sk, a.addr) == "/failed_active_hc"));
    assert!(bodies(&sk, 6).iter().all(|x| x == "b"));
    // Only the new checker probes a: about one check per 0.3 s (the old one's 0.2 s ticks
    // would double it).
    let checks = || a.requests().iter().filter(|s| s.path == "/healthz").count();
    let before = checks();
    std::thread::sleep(Duration::from_millis(1500));
    let per_1500ms = checks() - before;
    assert!((2..=8).contains(&per_1500ms), "{per_1500ms} checks of a in 1.5 s");
}

/// As Envoy (reuse_connection, default true): an HTTP check's connection carries the host's next
/// checks when the response ends by its framing (a length or chunks, a failing status too), and a
/// new one is made after a `Connection: close` response or with `reuse_connection: false`. The
/// check request never says `Connection` (Envoy's doesn't).
#[test]
fn an_http_check_keeps_its_connection_between_checks_as_envoy_does() {
    let by_length = checked("length", Arc::new(AtomicU16::new(503)));
    let chunked = TestUpstream::start(Arc::new(|_: &Seen| {
        Reply::Raw(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n".to_vec(),
            true,
        )
    }));
    let closing = TestUpstream::start(Arc::new(|_: &Seen| Reply::Full {
        status: 200,
        headers: vec![("connection".into(), "close".into())],
        body: b"hc".to_vec(),
    }));
    let check = "timeout: 0.5s\ninterval: 0.1s\nno_traffic_interval: 0.1s\nunhealthy_threshold: 2\nhealthy_threshold: 1\nhttp_health_check: { path: /healthz }\n";
    let ups = [&by_length, &chunked, &closing];
    let sk = Skiff::start(&config(&ups.map(|u| u.addr), check), &[]);
    assert!(eventually(Duration::from_secs(5), || ups.iter().all(|u| u.count() >= 6)));
    let conns = ups.map(|u| u.connections.load(Ordering::Relaxed));
    let checks = ups.map(|u| u.count());
    // The first round's connection may close before the host's own task starts.
    assert!(conns[0] <= 2 && conns[1] <= 2, "{conns:?} connections for {checks:?} checks");
    assert!(conns[2] >= checks[2] - 1, "{conns:?} connections for {checks:?} checks");
    let hc = &by_length.requests()[0];
    assert_eq!(hc.header("connection"), None);
    drop(sk);

    let kept = checked("kept", Arc::new(AtomicU16::new(200)));
    let no_reuse = format!("reuse_connection: false\n{check}");
    let _sk = Skiff::start(&config(&[kept.addr], &no_reuse), &[]);
    assert!(eventually(Duration::from_secs(5), || kept.count() >= 4));
    assert!(kept.connections.load(Ordering::Relaxed) >= kept.count() - 1);
}

/// A kept check connection the upstream closed while idle (its keep-alive ran out, silently) is
/// not the host's failure: the check is made on a new connection, as Envoy's checker, which sees
/// the close between checks, would.
#[test]
fn a_check_connection_closed_while_idle_is_replaced_not_failed() {
    let idle_closer = TestUpstream::start(Arc::new(|_: &Seen| {
        Reply::Raw(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(), false)
    }));
    let check = "timeout: 0.5s\ninterval: 0.1s\nno_traffic_interval: 0.1s\nunhealthy_threshold: 1\nhealthy_threshold: 1\nhttp_health_check: { path: /healthz }\n";
    let sk = Skiff::start(&config(&[idle_closer.addr], check), &[]);
    assert!(eventually(Duration::from_secs(5), || idle_closer.count() >= 5));
    assert_eq!(stat(sk.admin(), "cluster.backend.health_check.failure"), Some(0));
    assert_eq!(flags(&sk, idle_closer.addr), "healthy");
}
