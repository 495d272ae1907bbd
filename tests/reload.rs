//! Config file reload without a restart (the harness checks the file every second): what a user
//! sees when they edit the running config, including while traffic flows.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

fn routes_to(cluster: &str) -> String {
    format!(
        r#"virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
      - match: {{ prefix: "/" }}
        route: {{ cluster: {cluster}, timeout: 5s }}
"#
    )
}

/// Listeners `names` (all on 127.0.0.1:0: each gets its own ephemeral port) routing to `cluster`;
/// clusters a and b.
fn config(names: &[&str], cluster: &str, a: &TestUpstream, b: &TestUpstream) -> String {
    let listeners: Vec<String> =
        names.iter().map(|n| listener_yaml(n, "127.0.0.1", &routes_to(cluster))).collect();
    bootstrap_yaml(
        &listeners,
        &[
            static_cluster_yaml("a", "ROUND_ROBIN", &[(a.addr, 1)]),
            static_cluster_yaml("b", "ROUND_ROBIN", &[(b.addr, 1)]),
        ],
    )
}

/// Upstream that answers `/slow` after 1.5 s and everything else at once, naming itself.
fn slow_named(name: &'static str) -> TestUpstream {
    TestUpstream::start(Arc::new(move |s: &Seen| {
        if s.path.starts_with("/slow") {
            std::thread::sleep(Duration::from_millis(1500));
        }
        Reply::ok(name)
    }))
}

#[test]
fn route_change_takes_effect_and_open_connections_keep_working() {
    let (a, b) = (TestUpstream::echo_named("a"), TestUpstream::echo_named("b"));
    let skiff = Skiff::start(&config(&["main"], "a", &a, &b), &[]);
    let addr = skiff.listener("main");
    let mut kept = Client::connect(addr);
    assert_eq!(kept.get("/").first_line(), "a");

    skiff.rewrite_config(&config(&["main"], "b", &a, &b));
    let changed_at = Instant::now();
    assert!(
        eventually(Duration::from_secs(6), || get(addr, "/").first_line() == "b"),
        "new requests never reached b:\n{}",
        skiff.log()
    );
    // One check interval plus the shards' swap; generous for a loaded machine.
    assert!(changed_at.elapsed() < Duration::from_secs(4), "took {:?}", changed_at.elapsed());
    assert!(skiff.log().contains("config reloaded from"), "{}", skiff.log());
    // Fresh connections all go to b now.
    for _ in 0..10 {
        assert_eq!(get(addr, "/").first_line(), "b");
    }
    // The connection opened before the change still serves.
    let r = kept.get("/");
    assert_eq!(r.status, 200);
}

#[test]
fn keep_alive_connection_uses_new_routes_for_its_next_request() {
    let (a, b) = (TestUpstream::echo_named("a"), TestUpstream::echo_named("b"));
    let skiff = Skiff::start(&config(&["main"], "a", &a, &b), &["--concurrency", "1"]);
    let addr = skiff.listener("main");
    let mut kept = Client::connect(addr);
    assert_eq!(kept.get("/").first_line(), "a");
    skiff.rewrite_config(&config(&["main"], "b", &a, &b));
    assert!(eventually(Duration::from_secs(6), || get(addr, "/").first_line() == "b"));
    // Envoy routes every new request by the running config, whichever connection it arrives on.
    assert_eq!(kept.get("/").first_line(), "b");
}

#[test]
fn added_listener_accepts_and_removed_listener_stops_after_its_request() {
    let (a, b) = (slow_named("a"), slow_named("b"));
    let skiff = Skiff::start(&config(&["main"], "a", &a, &b), &[]);
    let main = skiff.listener("main");

    // Add a listener on another ephemeral port.
    skiff.rewrite_config(&config(&["main", "extra"], "a", &a, &b));
    assert!(
        skiff.wait_for_log("listener \"extra\" listening on", Duration::from_secs(6)),
        "extra never bound:\n{}",
        skiff.log()
    );
    let extra = skiff.listener("extra");
    assert_ne!(extra, main, "the new listener must have its own socket");
    assert!(
        eventually(Duration::from_secs(4), || Client::try_connect(extra)
            .ok()
            .and_then(|mut c| c.request("x", "/", &[]))
            .is_some_and(|r| r.status == 200)),
        "extra does not answer:\n{}",
        skiff.log()
    );
    assert_eq!(get(main, "/").status, 200);

    // A keep-alive connection on `extra` with a slow request in flight when `extra` is removed.
    let mut inflight = Client::connect(extra);
    assert_eq!(inflight.get("/").status, 200);
    inflight.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
    std::thread::sleep(Duration::from_millis(100));
    skiff.rewrite_config(&config(&["main"], "a", &a, &b));
    assert!(
        skiff.wait_for_log("listener \"extra\" on", Duration::from_secs(6)),
        "extra never closed:\n{}",
        skiff.log()
    );
    // The request in flight completes.
    let r = inflight.read_response(false).expect("in-flight request answered");
    assert_eq!((r.status, r.text().as_str()), (200, "a"));
    // New connections to `extra` are refused; `main` keeps serving.
    assert!(
        eventually(Duration::from_secs(4), || Client::try_connect(extra).is_err()),
        "extra still accepts connections"
    );
    assert_eq!(get(main, "/").status, 200);
}

#[test]
fn invalid_config_is_reported_and_the_old_one_keeps_serving() {
    let (a, b) = (TestUpstream::echo_named("a"), TestUpstream::echo_named("b"));
    let skiff = Skiff::start(&config(&["main"], "a", &a, &b), &[]);
    let addr = skiff.listener("main");

    let good_b = config(&["main"], "b", &a, &b);
    let bad = good_b.replacen("connect_timeout: 0.5s", "connect_timeout: soon", 1);
    assert_ne!(bad, good_b);
    // Where the bad value is, as the user's editor would show it (1-based line and column).
    let (line, col) = bad
        .lines()
        .enumerate()
        .find_map(|(i, l)| l.find("soon").map(|c| (i + 1, c + 1)))
        .expect("bad value in config");
    skiff.rewrite_config(&bad);
    assert!(
        skiff.wait_for_log("config reload rejected", Duration::from_secs(6)),
        "bad config not reported:\n{}",
        skiff.log()
    );
    let log = skiff.log();
    let report = log.lines().find(|l| l.contains("config reload rejected")).unwrap_or_default();
    let location = format!("envoy.yaml:{line}:{col}: static_resources.clusters[0].connect_timeout");
    assert!(report.contains(&location), "want {location:?} in:\n{report}");
    // The old config keeps serving for a while (several check intervals).
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        assert_eq!(get(addr, "/").first_line(), "a");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Reported once, not every interval.
    assert_eq!(skiff.log().matches("config reload rejected").count(), 1, "{}", skiff.log());

    // A valid config is accepted again.
    skiff.rewrite_config(&good_b);
    assert!(
        eventually(Duration::from_secs(6), || get(addr, "/").first_line() == "b"),
        "valid config after a bad one not taken:\n{}",
        skiff.log()
    );
}

#[test]
fn reload_under_load_drops_nothing() {
    let (a, b) = (TestUpstream::echo_named("a"), TestUpstream::echo_named("b"));
    let skiff = Skiff::start(&config(&["main"], "a", &a, &b), &["--concurrency", "2"]);
    let addr = skiff.listener("main");
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let saw_b = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, saw_b, failures) = (stop.clone(), ok.clone(), saw_b.clone(), failures.clone());
            std::thread::spawn(move || {
                let mut client = match Client::try_connect(addr) {
                    Ok(c) => c,
                    Err(e) => return failures.lock().unwrap().push(format!("connect: {e}")),
                };
                while !stop.load(Ordering::Relaxed) {
                    match client.request("x", "/", &[]) {
                        Some(r) if (200..300).contains(&r.status) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            if r.first_line() == "b" {
                                saw_b.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Some(r) => failures.lock().unwrap().push(format!("status {}", r.status)),
                        None => {
                            failures.lock().unwrap().push("connection closed or errored".into());
                            // Keep measuring on a new connection rather than stopping.
                            match Client::try_connect(addr) {
                                Ok(c) => client = c,
                                Err(e) => return failures.lock().unwrap().push(format!("reconnect: {e}")),
                            }
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    skiff.rewrite_config(&config(&["main"], "b", &a, &b));
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline && saw_b.load(Ordering::Relaxed) == 0 {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Keep the load on a little after the switch.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("worker");
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failures: {:?}\n{}",
        failures.len(),
        &failures[..failures.len().min(10)],
        skiff.log()
    );
    assert!(saw_b.load(Ordering::Relaxed) > 0, "the change never took effect:\n{}", skiff.log());
    assert!(ok.load(Ordering::Relaxed) > 100, "too little traffic: {}", ok.load(Ordering::Relaxed));
}

#[test]
fn reload_that_cannot_bind_yet_is_retried_until_the_port_frees() {
    let (a, b) = (TestUpstream::echo_named("a"), TestUpstream::echo_named("b"));
    let skiff = Skiff::start(&config(&["main"], "a", &a, &b), &[]);
    // Another process holds the port the new listener wants.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let late = listener_yaml("late", "127.0.0.1", &routes_to("b"))
        .replace("port_value: 0 }", &format!("port_value: {port} }}"));
    let yaml = bootstrap_yaml(
        &[listener_yaml("main", "127.0.0.1", &routes_to("a")), late],
        &[
            static_cluster_yaml("a", "ROUND_ROBIN", &[(a.addr, 1)]),
            static_cluster_yaml("b", "ROUND_ROBIN", &[(b.addr, 1)]),
        ],
    );
    skiff.rewrite_config(&yaml);
    assert!(
        skiff.wait_for_log("config reload rejected", Duration::from_secs(6)),
        "bind failure not reported:\n{}",
        skiff.log()
    );
    let log = skiff.log();
    let report = log.lines().find(|l| l.contains("config reload rejected")).unwrap_or_default();
    assert!(
        report.contains("listener \"late\"") && report.contains(&format!("127.0.0.1:{port}")),
        "{report}"
    );
    assert_eq!(get(skiff.listener("main"), "/").first_line(), "a");

    // Once the port is free, the same file is taken without anyone touching it again.
    drop(holder);
    assert!(
        skiff.wait_for_log("listener \"late\" listening on", Duration::from_secs(6)),
        "config never retried after the port freed:\n{}",
        skiff.log()
    );
    let r = get(format!("127.0.0.1:{port}").parse().unwrap(), "/");
    assert_eq!(r.first_line(), "b");
    assert_eq!(skiff.log().matches("config reload rejected").count(), 1, "reported once:\n{}", skiff.log());
}

#[test]
fn endpoint_change_and_a_vanished_file_keep_serving() {
    let (a, b) = (TestUpstream::echo_named("a"), TestUpstream::echo_named("b"));
    let skiff = Skiff::start(&config(&["main"], "a", &a, &b), &[]);
    let addr = skiff.listener("main");
    // Cluster `a` now points at b's address: same route, new endpoint.
    let moved = config(&["main"], "a", &b, &b);
    skiff.rewrite_config(&moved);
    assert!(
        eventually(Duration::from_secs(6), || get(addr, "/").first_line() == "b"),
        "endpoint change not taken:\n{}",
        skiff.log()
    );
    // The file disappears (a ConfigMap being swapped, say): the running config keeps serving.
    std::fs::remove_file(&skiff.config_path).unwrap();
    assert!(skiff.wait_for_log("keeping the running config", Duration::from_secs(6)), "{}", skiff.log());
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(get(addr, "/").first_line(), "b");
    // Reported once while it stays missing, not on every check.
    assert_eq!(skiff.log().matches("keeping the running config").count(), 1, "{}", skiff.log());
    // It comes back: taken as any other change.
    skiff.rewrite_config(&config(&["main"], "b", &a, &a));
    assert!(
        eventually(Duration::from_secs(6), || get(addr, "/").first_line() == "a"),
        "file back, change not taken:\n{}",
        skiff.log()
    );
}

#[test]
fn renamed_listener_keeps_serving_across_later_dns_changes() {
    let (a, b) = (TestUpstream::echo_named("a"), TestUpstream::echo_named("b"));
    let dir = scratch_dir("rename-hosts");
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "127.0.0.1 backend.internal\n").unwrap();
    let port = free_port();
    let make = |listener: &str, upstream_port: u16| {
        let l = listener_yaml(listener, "127.0.0.1", &routes_to("dns"))
            .replace("port_value: 0 }", &format!("port_value: {port} }}"));
        let cluster = format!(
            "- name: dns\n  connect_timeout: 0.5s\n  type: STRICT_DNS\n  dns_refresh_rate: 0.5s\n  dns_lookup_family: V4_ONLY\n  load_assignment:\n    cluster_name: dns\n    endpoints:\n      - lb_endpoints:\n          - endpoint: {{ address: {{ socket_address: {{ address: backend.internal, port_value: {upstream_port} }} }} }}\n"
        );
        bootstrap_yaml(&[l], &[cluster])
    };
    let skiff = Skiff::start(&make("main", a.addr.port()), &["--hosts-file", hosts.to_str().unwrap()]);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(get(addr, "/").first_line(), "a");
    // Rename the listener (same port: it keeps its socket) and point the cluster at b.
    skiff.rewrite_config(&make("renamed", b.addr.port()));
    assert!(eventually(Duration::from_secs(6), || get(addr, "/").first_line() == "b"), "{}", skiff.log());
    // A DNS change rebuilds the snapshot without a reload: the renamed listener must survive it.
    std::fs::write(&hosts, "127.0.0.1 backend.internal\n127.0.0.2 backend.internal\n").unwrap();
    assert!(
        skiff.wait_for_log("resolves to [127.0.0.1, 127.0.0.2]", Duration::from_secs(5)),
        "{}",
        skiff.log()
    );
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..6 {
        let r = Client::try_connect(addr).ok().and_then(|mut c| c.request("x", "/", &[]));
        assert!(r.is_some(), "listener gone after a DNS rebuild:\n{}", skiff.log());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
