//! Envoy parity for circuit breakers (and, as they land, declared endpoint health): the same v3
//! config and the same staggered concurrent requests go through the real Envoy and through skiff
//! (one worker / one shard each), each in front of its own slow upstream; the statuses, bodies,
//! `x-envoy-overloaded`, access-log lines (upstream port normalised) and the named stats must be
//! equal. Envoy is found via `$ENVOY_BIN` or PATH; without it these tests fail under CI and skip
//! elsewhere.

mod support;

#[path = "support/envoy.rs"]
mod envoy;

#[path = "support/breakers.rs"]
mod breakers;

use breakers::{cluster, config, log_lines, staggered, upstream};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use support::{scratch_dir, Skiff};

const SLOW: Duration = Duration::from_millis(1200);
const GAP: Duration = Duration::from_millis(300);

/// What one proxy showed.
#[derive(Debug, PartialEq)]
struct Seen {
    /// (status, x-envoy-overloaded, body) per request.
    responses: Vec<(u16, Option<String>, String)>,
    /// Sorted: concurrent requests finish in any order.
    log: Vec<String>,
    stats: BTreeMap<String, Option<u64>>,
}

/// A scenario: the cluster's extra YAML (its circuit breakers), the paths sent `GAP` apart, and
/// the stats compared.
struct Scenario {
    cluster_extra: &'static str,
    paths: &'static [&'static str],
    stats: &'static [&'static str],
}

fn observe(s: &Scenario, run: impl FnOnce(&dyn Fn(u16, u16) -> String) -> (SocketAddr, SocketAddr)) -> Seen {
    let up = upstream("up", SLOW);
    let dir = scratch_dir("parity-breakers");
    let log = dir.join("access.log");
    let clusters = cluster("ROUND_ROBIN", &[(0, vec![(up.addr, "")])], s.cluster_extra);
    let make = |port: u16, admin: u16| config(port, admin, &log, "", &clusters);
    let (listener, admin) = run(&make);
    let responses = staggered(listener, s.paths, GAP)
        .into_iter()
        .map(|r| (r.status, r.header("x-envoy-overloaded").map(str::to_string), r.text()))
        .collect();
    let port = format!(":{}", up.addr.port());
    let mut log: Vec<String> =
        log_lines(&log, s.paths.len()).into_iter().map(|l| l.replace(&port, ":UPSTREAM")).collect();
    log.sort();
    std::thread::sleep(Duration::from_millis(200));
    let text = envoy::admin_get(admin, "/stats").map(|(_, b)| b).unwrap_or_default();
    let stats = s.stats.iter().map(|n| (n.to_string(), support::stat_in(&text, n))).collect();
    Seen { responses, log, stats }
}

fn compare(name: &str, s: Scenario) {
    let Some(bin) = envoy::binary_or_skip(name) else { return };
    let dir = scratch_dir("parity-breakers-envoy");
    let mut envoy_proc = None;
    let from_envoy = observe(&s, |make| {
        let e = envoy::Envoy::start(&bin, &dir, make);
        let addrs = (e.listener, e.admin);
        envoy_proc = Some(e);
        addrs
    });
    drop(envoy_proc);
    let mut skiff_proc = None;
    let from_skiff = observe(&s, |make| {
        let sk = Skiff::start(&make(0, 0), &["--concurrency", "1"]);
        let addrs = (sk.listener("main"), sk.admin());
        skiff_proc = Some(sk);
        addrs
    });
    assert_eq!(from_skiff, from_envoy, "{name}: skiff (left) differs from Envoy (right)");
}

const OVERFLOW_STATS: &[&str] = &[
    "cluster.backend.upstream_rq_pending_overflow",
    "cluster.backend.upstream_rq_active_overflow",
    "cluster.backend.upstream_cx_overflow",
    "cluster.backend.upstream_rq_retry_overflow",
    "cluster.backend.upstream_rq_pending_total",
    "cluster.backend.upstream_rq_503",
    "cluster.backend.upstream_rq_200",
    "cluster.backend.upstream_cx_total",
    "cluster.backend.circuit_breakers.default.cx_open",
    "cluster.backend.circuit_breakers.default.rq_open",
    "cluster.backend.circuit_breakers.default.rq_pending_open",
    "cluster.backend.circuit_breakers.default.remaining_cx",
    "cluster.backend.circuit_breakers.default.remaining_pending",
    "cluster.backend.circuit_breakers.default.remaining_rq",
    "cluster.backend.circuit_breakers.default.remaining_retries",
];

#[test]
fn max_requests_overflow_matches_envoy() {
    compare(
        "max_requests_overflow_matches_envoy",
        Scenario {
            cluster_extra:
                "circuit_breakers: { thresholds: [ { max_requests: 1, track_remaining: true } ] }\n",
            paths: &["/slow/1", "/slow/2"],
            stats: OVERFLOW_STATS,
        },
    );
}

#[test]
fn max_pending_overflow_matches_envoy() {
    compare(
        "max_pending_overflow_matches_envoy",
        Scenario {
            cluster_extra: "circuit_breakers: { thresholds: [ { max_connections: 1, max_pending_requests: 1, track_remaining: true } ] }\n",
            paths: &["/slow/1", "/slow/2", "/slow/3"],
            stats: OVERFLOW_STATS,
        },
    );
}

#[test]
fn max_retries_overflow_matches_envoy() {
    compare(
        "max_retries_overflow_matches_envoy",
        Scenario {
            cluster_extra:
                "circuit_breakers: { thresholds: [ { max_retries: 0, track_remaining: true } ] }\n",
            paths: &["/retry/fail"],
            stats: OVERFLOW_STATS,
        },
    );
}
