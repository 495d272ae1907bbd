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

const RETRY_STATS: &[&str] = &[
    "cluster.backend.upstream_rq_retry",
    "cluster.backend.upstream_rq_retry_overflow",
    "cluster.backend.upstream_rq_retry_success",
    "cluster.backend.upstream_rq_retry_limit_exceeded",
    "cluster.backend.upstream_rq_503",
    "cluster.backend.upstream_rq_5xx",
    "cluster.backend.upstream_rq_completed",
    "cluster.backend.retry.upstream_rq_503",
    "cluster.backend.retry.upstream_rq_5xx",
    "cluster.backend.retry.upstream_rq_completed",
    "cluster.backend.upstream_rq_200",
    "cluster.backend.circuit_breakers.default.rq_retry_open",
    "cluster.backend.circuit_breakers.default.remaining_retries",
];

/// A budget of 50 % of one active request rounds down to no retry: with `min_retry_concurrency`
/// 0 the 503 passes with `UO`, where `max_retries` (which the budget replaces) would retry.
#[test]
fn retry_budget_below_one_retry_overflows_as_envoy() {
    compare(
        "retry_budget_below_one_retry_overflows_as_envoy",
        Scenario {
            cluster_extra: "circuit_breakers: { thresholds: [ { max_retries: 5, track_remaining: true, retry_budget: { budget_percent: { value: 50 }, min_retry_concurrency: 0 } } ] }\n",
            paths: &["/retry/fail"],
            stats: RETRY_STATS,
        },
    );
}

/// A budget of the whole active request admits one retry at a time: both retries are made.
#[test]
fn retry_budget_of_the_active_request_retries_as_envoy() {
    compare(
        "retry_budget_of_the_active_request_retries_as_envoy",
        Scenario {
            cluster_extra: "circuit_breakers: { thresholds: [ { track_remaining: true, retry_budget: { budget_percent: { value: 100 }, min_retry_concurrency: 0 } } ] }\n",
            paths: &["/retry/fail", "/ok"],
            stats: RETRY_STATS,
        },
    );
}

/// `min_retry_concurrency` alone makes a budget (percent 20 by default) that replaces
/// `max_retries: 0`; so does an empty `retry_budget` (min_retry_concurrency 3 by default).
#[test]
fn retry_budget_min_concurrency_replaces_max_retries_as_envoy() {
    compare(
        "retry_budget_min_concurrency_replaces_max_retries_as_envoy",
        Scenario {
            cluster_extra: "circuit_breakers: { thresholds: [ { max_retries: 0, track_remaining: true, retry_budget: { min_retry_concurrency: 1 } } ] }\n",
            paths: &["/retry/fail"],
            stats: RETRY_STATS,
        },
    );
    compare(
        "retry_budget_empty_is_the_default_budget_as_envoy",
        Scenario {
            cluster_extra: "circuit_breakers: { thresholds: [ { max_retries: 0, track_remaining: true, retry_budget: {} } ] }\n",
            paths: &["/retry/fail"],
            stats: RETRY_STATS,
        },
    );
}

/// A host at its `per_host_thresholds` connection cap: the next request waits for its connection
/// (counted in `upstream_cx_overflow`, as at the cluster's cap) and one more overflows the
/// pending queue.
#[test]
fn per_host_max_connections_matches_envoy() {
    compare(
        "per_host_max_connections_matches_envoy",
        Scenario {
            cluster_extra: "circuit_breakers: { thresholds: [ { max_pending_requests: 1, track_remaining: true } ], per_host_thresholds: [ { max_connections: 1 } ] }\n",
            paths: &["/slow/1", "/slow/2", "/slow/3"],
            stats: OVERFLOW_STATS,
        },
    );
}
