//! Envoy parity for endpoint health: the same v3 config (declared `health_status`, panic threshold,
//! active health checks) and the same requests go through the real Envoy and through skiff (one
//! worker / one shard each), each in front of its own upstreams; how many requests each upstream
//! answered, `/clusters`' `health_flags` lines (addresses replaced by upstream names) and the named
//! stats must be equal. Envoy is found via `$ENVOY_BIN` or PATH; without it these tests fail under
//! CI and skip elsewhere.

mod support;

#[path = "support/envoy.rs"]
mod envoy;

#[path = "support/breakers.rs"]
mod breakers;

use breakers::{cluster, config, upstream};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use support::{dead_port, scratch_dir, Client, Skiff, TestUpstream};

/// What one proxy showed.
#[derive(Debug, PartialEq)]
struct Seen {
    /// Requests answered per upstream name (or "<status> <body>" for local replies).
    spread: BTreeMap<String, usize>,
    /// `health_flags` per upstream name, from `/clusters`.
    flags: BTreeMap<String, String>,
    stats: BTreeMap<String, Option<u64>>,
}

struct Scenario {
    /// (name, declared health or "") per endpoint, all priority 0.
    endpoints: &'static [(&'static str, &'static str)],
    cluster_extra: &'static str,
    requests: usize,
    /// Waited before the requests (active checks need their rounds).
    settle: Duration,
    stats: &'static [&'static str],
}

fn observe(
    s: &Scenario,
    ups: &[SocketAddr],
    run: impl FnOnce(&dyn Fn(u16, u16) -> String) -> (SocketAddr, SocketAddr),
) -> Seen {
    let log = scratch_dir("parity-health").join("access.log");
    let eps: Vec<(SocketAddr, &str)> = ups.iter().zip(s.endpoints).map(|(u, (_, h))| (*u, *h)).collect();
    let clusters = cluster("ROUND_ROBIN", &[(0, eps)], s.cluster_extra);
    let make = |port: u16, admin: u16| config(port, admin, &log, "", &clusters);
    let (listener, admin) = run(&make);
    std::thread::sleep(s.settle);
    let mut spread = BTreeMap::new();
    if s.requests > 0 {
        let mut c = Client::connect(listener);
        for _ in 0..s.requests {
            let r = c.get("/");
            let key = if r.status == 200 { r.text() } else { format!("{} {}", r.status, r.text()) };
            *spread.entry(key).or_insert(0) += 1;
        }
    }
    let clusters_text = envoy::admin_get(admin, "/clusters").map(|(_, b)| b).unwrap_or_default();
    let mut flags = BTreeMap::new();
    for (u, (name, _)) in ups.iter().zip(s.endpoints) {
        let prefix = format!("backend::{u}::health_flags::");
        let f = clusters_text.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or("(missing)");
        flags.insert(name.to_string(), f.to_string());
    }
    let text = envoy::admin_get(admin, "/stats").map(|(_, b)| b).unwrap_or_default();
    let stats = s.stats.iter().map(|n| (n.to_string(), support::stat_in(&text, n))).collect();
    Seen { spread, flags, stats }
}

fn compare(name: &str, s: Scenario) {
    let Some(bin) = envoy::binary_or_skip(name) else { return };
    let dir = scratch_dir("parity-health-envoy");
    // "dead" names a port nothing listens on; "sick" answers everything with 503; "hang" never
    // answers.
    let up = |name: &str| match name {
        "sick" => TestUpstream::start(Arc::new(|_: &support::Seen| support::Reply::Full {
            status: 503,
            headers: vec![],
            body: b"sick".to_vec(),
        })),
        "hang" => {
            TestUpstream::start(Arc::new(|_: &support::Seen| support::Reply::Hang(Duration::from_secs(3))))
        }
        _ => upstream(name, Duration::ZERO),
    };
    let fresh = || -> (Vec<SocketAddr>, Vec<TestUpstream>) {
        let live: Vec<TestUpstream> = s.endpoints.iter().map(|(n, _)| up(n)).collect();
        let addrs =
            s.endpoints.iter().zip(&live).map(|((n, _), u)| if *n == "dead" { dead_port() } else { u.addr });
        (addrs.collect(), live)
    };
    let (ups, _live) = fresh();
    let mut envoy_proc = None;
    let from_envoy = observe(&s, &ups, |make| {
        let e = envoy::Envoy::start(&bin, &dir, make);
        let addrs = (e.listener, e.admin);
        envoy_proc = Some(e);
        addrs
    });
    drop(envoy_proc);
    let (ups, _live) = fresh();
    let mut skiff_proc = None;
    let from_skiff = observe(&s, &ups, |make| {
        let sk = Skiff::start(&make(0, 0), &["--concurrency", "1"]);
        let addrs = (sk.listener("main"), sk.admin());
        skiff_proc = Some(sk);
        addrs
    });
    assert_eq!(from_skiff, from_envoy, "{name}: skiff (left) differs from Envoy (right)");
}

const HEALTH_STATS: &[&str] = &[
    "cluster.backend.lb_healthy_panic",
    "cluster.backend.membership_total",
    "cluster.backend.membership_healthy",
    "cluster.backend.membership_degraded",
    "cluster.backend.membership_excluded",
    "cluster.backend.upstream_cx_none_healthy",
];

#[test]
fn declared_unhealthy_endpoint_is_never_picked_as_in_envoy() {
    compare(
        "declared_unhealthy_endpoint_is_never_picked_as_in_envoy",
        Scenario {
            endpoints: &[("a", ""), ("b", "UNHEALTHY"), ("c", "HEALTHY")],
            cluster_extra: "",
            requests: 12,
            settle: Duration::ZERO,
            stats: HEALTH_STATS,
        },
    );
}

#[test]
fn panic_mode_spreads_to_every_host_as_in_envoy() {
    compare(
        "panic_mode_spreads_to_every_host_as_in_envoy",
        Scenario {
            endpoints: &[("a", ""), ("b", "UNHEALTHY"), ("c", "TIMEOUT")],
            cluster_extra: "",
            requests: 9,
            settle: Duration::ZERO,
            stats: HEALTH_STATS,
        },
    );
}

#[test]
fn panic_disabled_with_no_healthy_host_answers_503_as_in_envoy() {
    compare(
        "panic_disabled_with_no_healthy_host_answers_503_as_in_envoy",
        Scenario {
            endpoints: &[("a", "UNHEALTHY"), ("b", "DRAINING")],
            cluster_extra: "common_lb_config: { healthy_panic_threshold: { value: 0 } }\n",
            requests: 3,
            settle: Duration::ZERO,
            stats: HEALTH_STATS,
        },
    );
}

#[test]
fn health_flags_and_membership_match_envoy() {
    compare(
        "health_flags_and_membership_match_envoy",
        Scenario {
            endpoints: &[
                ("a", "HEALTHY"),
                ("b", "DEGRADED"),
                ("c", "DRAINING"),
                ("d", "TIMEOUT"),
                ("e", "UNKNOWN"),
            ],
            cluster_extra: "",
            requests: 0,
            settle: Duration::ZERO,
            stats: HEALTH_STATS,
        },
    );
}

const CHECK_STATS: &[&str] = &[
    "cluster.backend.lb_healthy_panic",
    "cluster.backend.membership_total",
    "cluster.backend.membership_healthy",
    "cluster.backend.health_check.healthy",
    "cluster.backend.health_check.degraded",
    "cluster.backend.health_check.passive_failure",
    "cluster.backend.health_check.verify_cluster",
];

/// One host answers its check with 503 (failed at once, whatever `unhealthy_threshold`), one is
/// not listening (a network failure), two pass: the failing ones show `/failed_active_hc` and
/// get no traffic.
#[test]
fn active_http_check_marks_failing_hosts_down_as_in_envoy() {
    compare(
        "active_http_check_marks_failing_hosts_down_as_in_envoy",
        Scenario {
            endpoints: &[("a", ""), ("dead", ""), ("sick", ""), ("d", "")],
            cluster_extra: "health_checks:\n  - timeout: 0.5s\n    interval: 0.2s\n    no_traffic_interval: 0.2s\n    unhealthy_threshold: 3\n    healthy_threshold: 2\n    http_health_check: { path: /health }\n",
            requests: 12,
            settle: Duration::from_millis(800),
            stats: CHECK_STATS,
        },
    );
}

/// A host that accepts and never answers fails by timeout: `/failed_active_hc/active_hc_timeout`.
#[test]
fn active_check_timeout_flags_match_envoy() {
    compare(
        "active_check_timeout_flags_match_envoy",
        Scenario {
            endpoints: &[("a", ""), ("hang", ""), ("d", "")],
            cluster_extra: "health_checks:\n  - timeout: 0.3s\n    interval: 0.2s\n    no_traffic_interval: 0.2s\n    unhealthy_threshold: 2\n    healthy_threshold: 2\n    http_health_check: { path: /health }\n",
            requests: 6,
            settle: Duration::from_millis(800),
            stats: CHECK_STATS,
        },
    );
}
