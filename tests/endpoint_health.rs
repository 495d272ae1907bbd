//! Declared endpoint health (`health_status`), panic mode and priority spill-over, through the real
//! skiff binary in front of real upstreams: which upstream answers, the `lb_healthy_panic` and
//! `membership_*` stats, and `/clusters`' `health_flags`.

mod support;

#[path = "support/breakers.rs"]
mod breakers;

use breakers::{cluster, config, upstream};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use support::{admin_request, scratch_dir, stat, Client, Skiff, TestUpstream};

fn start(clusters: &str) -> Skiff {
    let log = scratch_dir("endpoint-health").join("access.log");
    Skiff::start(&config(0, 0, &log, "", clusters), &["--concurrency", "1"])
}

fn ups(names: &[&str]) -> Vec<TestUpstream> {
    names.iter().map(|n| upstream(n, Duration::ZERO)).collect()
}

/// Sends `n` GETs on one keep-alive connection; how many each upstream (by body) answered, and
/// "503 <body>" for local replies.
fn spread(addr: SocketAddr, n: usize) -> HashMap<String, usize> {
    let mut c = Client::connect(addr);
    let mut out = HashMap::new();
    for _ in 0..n {
        let r = c.get("/");
        let key = if r.status == 200 { r.text() } else { format!("{} {}", r.status, r.text()) };
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

#[test]
fn declared_unhealthy_timeout_and_draining_endpoints_get_no_traffic() {
    let u = ups(&["a", "b", "c", "d", "e"]);
    let eps = vec![
        (u[0].addr, ""),
        (u[1].addr, "HEALTHY"),
        (u[2].addr, "UNHEALTHY"),
        (u[3].addr, "TIMEOUT"),
        (u[4].addr, "DRAINING"),
    ];
    // 2 of 4 counted hosts healthy: 50 %, not below the threshold, so no panic.
    let sk = start(&cluster("ROUND_ROBIN", &[(0, eps)], ""));
    let seen = spread(sk.listener("main"), 20);
    assert_eq!(seen, HashMap::from([("a".to_string(), 10), ("b".to_string(), 10)]), "{seen:?}");
    assert_eq!(stat(sk.admin(), "cluster.backend.lb_healthy_panic"), Some(0));
    assert_eq!(stat(sk.admin(), "cluster.backend.membership_total"), Some(5));
    assert_eq!(stat(sk.admin(), "cluster.backend.membership_healthy"), Some(2));
    assert_eq!(stat(sk.admin(), "cluster.backend.membership_excluded"), Some(1));
    assert_eq!(stat(sk.admin(), "cluster.backend.membership_degraded"), Some(0));
    let (_, clusters) = admin_request(sk.admin(), "GET", "/clusters");
    let flags = |a: SocketAddr| {
        let prefix = format!("backend::{a}::health_flags::");
        clusters.lines().find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
    };
    assert_eq!(flags(u[0].addr).as_deref(), Some("healthy"));
    assert_eq!(flags(u[1].addr).as_deref(), Some("healthy"));
    assert_eq!(flags(u[2].addr).as_deref(), Some("/failed_eds_health"));
    assert_eq!(flags(u[3].addr).as_deref(), Some("/failed_eds_health"));
    assert_eq!(flags(u[4].addr).as_deref(), Some("/eds_status_draining"));
}

#[test]
fn below_the_panic_threshold_every_host_takes_traffic_and_panic_is_counted() {
    let u = ups(&["a", "b", "c"]);
    let eps = vec![(u[0].addr, ""), (u[1].addr, "UNHEALTHY"), (u[2].addr, "UNHEALTHY")];
    let sk = start(&cluster("ROUND_ROBIN", &[(0, eps.clone())], ""));
    let seen = spread(sk.listener("main"), 30);
    assert_eq!(seen.len(), 3, "panic: all three hosts answer: {seen:?}");
    assert!(seen.values().all(|n| *n == 10), "{seen:?}");
    assert_eq!(stat(sk.admin(), "cluster.backend.lb_healthy_panic"), Some(30));
    drop(sk);

    // A threshold below the healthy share (1 of 3 = 33 %) keeps the unhealthy hosts out.
    let extra = "common_lb_config: { healthy_panic_threshold: { value: 30 } }\n";
    let sk = start(&cluster("ROUND_ROBIN", &[(0, eps.clone())], extra));
    assert_eq!(spread(sk.listener("main"), 6), HashMap::from([("a".to_string(), 6)]));
    assert_eq!(stat(sk.admin(), "cluster.backend.lb_healthy_panic"), Some(0));
    drop(sk);

    // Panic off and no healthy host: 503 no healthy upstream, flag UH.
    let none = vec![(u[1].addr, "UNHEALTHY"), (u[2].addr, "TIMEOUT")];
    let extra = "common_lb_config: { healthy_panic_threshold: { value: 0 } }\n";
    let sk = start(&cluster("ROUND_ROBIN", &[(0, none)], extra));
    assert_eq!(spread(sk.listener("main"), 3), HashMap::from([("503 no healthy upstream".to_string(), 3)]));
    assert_eq!(stat(sk.admin(), "cluster.backend.upstream_cx_none_healthy"), Some(3));
}

#[test]
fn degraded_hosts_serve_only_what_healthy_ones_cannot() {
    let u = ups(&["a", "b"]);
    let eps = vec![(u[0].addr, ""), (u[1].addr, "DEGRADED")];
    let sk = start(&cluster("ROUND_ROBIN", &[(0, eps)], ""));
    let seen = spread(sk.listener("main"), 200);
    // P0 health = 140 * 1/2 = 70 %, degraded availability 70 %: 70 % to a, 30 % to b.
    let b = seen.get("b").copied().unwrap_or(0);
    assert!((30..=95).contains(&b), "expected ~60 of 200 on the degraded host: {seen:?}");
    assert_eq!(stat(sk.admin(), "cluster.backend.membership_degraded"), Some(1));
}

#[test]
fn an_unhealthy_p0_host_spills_load_to_p1_by_the_overprovisioning_factor() {
    let u = ups(&["p0a", "p0b", "p1"]);
    let localities = vec![(0, vec![(u[0].addr, ""), (u[1].addr, "UNHEALTHY")]), (1, vec![(u[2].addr, "")])];
    let sk = start(&cluster("ROUND_ROBIN", &localities, ""));
    // P0 health = 140 * 1/2 = 70: 30 % of requests go to P1.
    let n = 400;
    let seen = spread(sk.listener("main"), n);
    let p1 = seen.get("p1").copied().unwrap_or(0);
    // Binomial(400, 0.3): mean 120, sd 9.2; ±4 sd.
    assert!((83..=157).contains(&p1), "expected ~120 of {n} on P1: {seen:?}");
    assert_eq!(seen.get("p0b"), None, "{seen:?}");
    drop(sk);

    // An overprovisioning factor of 200 keeps a half-healthy P0 at 100 %.
    let clusters = cluster("ROUND_ROBIN", &localities, "").replace(
        "    cluster_name: backend\n",
        "    cluster_name: backend\n    policy: { overprovisioning_factor: 200 }\n",
    );
    let sk = start(&clusters);
    assert_eq!(spread(sk.listener("main"), 50), HashMap::from([("p0a".to_string(), 50)]));
    let (_, text) = admin_request(sk.admin(), "GET", "/clusters");
    assert!(text.contains(&format!("backend::{}::priority::1", u[2].addr)), "{text}");
}
