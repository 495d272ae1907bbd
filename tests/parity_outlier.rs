//! Envoy parity for outlier detection and hash balancing. The same v3 config and the same
//! sequential requests go through the real Envoy and through skiff (one worker / one shard each)
//! in front of the SAME upstreams, so hosts hash alike, and must show the same:
//! - consecutive_5xx (one host failing with 503, two answering their names): the client's
//!   statuses, which host `/clusters` flags and the `outlier_detection.*` stats;
//! - success rate and failure percentage (five hosts, one failing, a 1 s interval): which host is
//!   ejected, the stats, and the success rates, averages and thresholds `/clusters` shows on the
//!   ejecting interval, for external-origin results, for local-origin ones (a host refusing
//!   connections, with `split_external_local_origin_errors`) and for an enforced failure
//!   percentage; for a host failing most requests, which host and the stats;
//! - whether a passing active health check returns an ejected host
//!   (`successful_active_health_check_uneject_host` on and off);
//! - RING_HASH and MAGLEV: the host each key reaches.
//!
//! Envoy is found via `$ENVOY_BIN` or PATH; without it these tests fail under CI and skip
//! elsewhere.

mod support;

#[path = "support/envoy.rs"]
mod envoy;

#[path = "support/breakers.rs"]
mod breakers;

#[path = "support/outlier.rs"]
mod outlier;

use breakers::config;
use outlier::{backend, failing, flaky, host_for, with_four_good};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::{get_host, scratch_dir, Skiff, TestUpstream};

/// Runs `observe` against Envoy then skiff, each started from `make(port, admin_port)`.
fn both<T: PartialEq + std::fmt::Debug>(
    name: &str,
    make: &dyn Fn(u16, u16) -> String,
    observe: &dyn Fn(SocketAddr, SocketAddr) -> T,
) {
    let Some(bin) = envoy::binary_or_skip(name) else { return };
    let dir = scratch_dir("parity-outlier-envoy");
    let e = envoy::Envoy::start(&bin, &dir, make);
    let from_envoy = observe(e.listener, e.admin);
    drop(e);
    let sk = Skiff::start(&make(0, 0), &["--concurrency", "1"]);
    let from_skiff = observe(sk.listener("main"), sk.admin());
    assert_eq!(from_skiff, from_envoy, "{name}: skiff (left) differs from Envoy (right)");
}

const OUTLIER_STATS: &[&str] = &[
    "ejections_active",
    "ejections_total",
    "ejections_enforced_total",
    "ejections_overflow",
    "ejections_consecutive_5xx",
    "ejections_detected_consecutive_5xx",
    "ejections_enforced_consecutive_5xx",
    "ejections_detected_consecutive_gateway_failure",
    "ejections_enforced_consecutive_gateway_failure",
    "ejections_detected_consecutive_local_origin_failure",
    "ejections_enforced_consecutive_local_origin_failure",
    "ejections_success_rate",
    "ejections_detected_success_rate",
    "ejections_enforced_success_rate",
    "ejections_detected_local_origin_success_rate",
    "ejections_enforced_local_origin_success_rate",
    "ejections_detected_failure_percentage",
    "ejections_enforced_failure_percentage",
    "ejections_detected_local_origin_failure_percentage",
    "ejections_enforced_local_origin_failure_percentage",
    "ejections_detected_degradation",
];

fn outlier_stats(admin: SocketAddr) -> BTreeMap<String, Option<u64>> {
    let text = envoy::admin_get(admin, "/stats").map(|(_, b)| b).unwrap_or_default();
    OUTLIER_STATS
        .iter()
        .map(|n| {
            let full = format!("cluster.backend.outlier_detection.{n}");
            (n.to_string(), support::stat_in(&text, &full))
        })
        .collect()
}

#[derive(Debug, PartialEq)]
struct Ejection {
    /// How many 503s and 200s the client got, and whether the last 15 were all 200.
    failures: usize,
    successes: usize,
    tail_clean: bool,
    /// `/clusters` health_flags of (failing, good, good).
    flags: Vec<String>,
    stats: BTreeMap<String, Option<u64>>,
    upstream_503: Option<u64>,
}

fn ejection_scenario(name: &str, od: &str) {
    let (bad, b, c) = (failing(), TestUpstream::named("b"), TestUpstream::named("c"));
    let hosts = [bad.addr, b.addr, c.addr];
    let clusters = backend("ROUND_ROBIN", &hosts, od);
    let log = scratch_dir("parity-outlier").join("access.log");
    let make = |port: u16, admin: u16| config(port, admin, &log, "", &clusters);
    both(name, &make, &|listener, admin| {
        let mut seen = Vec::new();
        for _ in 0..30 {
            seen.push(get_host(listener, "example.com", "/", &[]).status);
            // Envoy ejects on its main thread and tells the worker after: give it that moment.
            std::thread::sleep(Duration::from_millis(30));
        }
        std::thread::sleep(Duration::from_millis(200));
        let clusters = envoy::admin_get(admin, "/clusters").map(|(_, b)| b).unwrap_or_default();
        let flags = hosts
            .iter()
            .map(|h| {
                let prefix = format!("backend::{h}::health_flags::");
                clusters.lines().find_map(|l| l.strip_prefix(&prefix).map(str::to_string)).unwrap_or_default()
            })
            .collect();
        let text = envoy::admin_get(admin, "/stats").map(|(_, b)| b).unwrap_or_default();
        let stats = outlier_stats(admin);
        Ejection {
            failures: seen.iter().filter(|s| **s == 503).count(),
            successes: seen.iter().filter(|s| **s == 200).count(),
            tail_clean: seen[15..].iter().all(|s| *s == 200),
            flags,
            stats,
            upstream_503: support::stat_in(&text, "cluster.backend.upstream_rq_503"),
        }
    });
}

#[test]
fn consecutive_5xx_ejection_matches_envoy() {
    ejection_scenario(
        "consecutive_5xx_ejection_matches_envoy",
        "outlier_detection: { consecutive_5xx: 5, base_ejection_time: 30s, max_ejection_percent: 50 }\n",
    );
}

#[test]
fn default_max_ejection_percent_overflow_matches_envoy() {
    // Envoy's defaults: 1 host of 3 is over 10 %, so the failing host is detected, never ejected.
    ejection_scenario("default_max_ejection_percent_overflow_matches_envoy", "outlier_detection: {}\n");
}

/// What the proxies show once an interval detector ejected a host.
#[derive(Debug, PartialEq)]
struct IntervalEjection {
    /// Per host (in config order), whether `/clusters` flags it `/failed_outlier_check`.
    flagged: Vec<bool>,
    /// From the first `/clusters` showing the ejection (the ejecting interval's numbers): the
    /// cluster's `outlier::` lines and each host's two success-rate lines (address replaced by
    /// its index), then the JSON form's thresholds and rates.
    numbers: Vec<String>,
    json: String,
    stats: BTreeMap<String, Option<u64>>,
}

/// Sends requests in batches of ten until some host is flagged (at most 8 s; the interval is 1 s).
/// With `exact` false the numbers (which depend on where the interval ticks fall in the traffic)
/// are left out of the comparison.
fn interval_scenario(name: &str, hosts: &[SocketAddr], od: &str, exact: bool) {
    let clusters = backend("ROUND_ROBIN", hosts, od);
    let log = scratch_dir("parity-outlier-interval").join("access.log");
    let make = |port: u16, admin: u16| config(port, admin, &log, "", &clusters);
    both(name, &make, &|listener, admin| {
        let deadline = Instant::now() + Duration::from_secs(8);
        let mut text = String::new();
        let mut json = String::new();
        let flag = |text: &str, h: &SocketAddr| {
            text.lines().any(|l| l == format!("backend::{h}::health_flags::/failed_outlier_check"))
        };
        while Instant::now() < deadline {
            for _ in 0..10 {
                get_host(listener, "example.com", "/", &[]);
            }
            text = envoy::admin_get(admin, "/clusters").map(|(_, b)| b).unwrap_or_default();
            if hosts.iter().any(|h| flag(&text, h)) {
                json = envoy::admin_get(admin, "/clusters?format=json").map(|(_, b)| b).unwrap_or_default();
                break;
            }
        }
        let mut numbers: Vec<String> =
            text.lines().filter(|l| l.starts_with("backend::outlier::")).map(str::to_string).collect();
        for (i, h) in hosts.iter().enumerate() {
            for rate in ["success_rate", "local_origin_success_rate"] {
                let prefix = format!("backend::{h}::{rate}::");
                let v = text.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or("missing");
                numbers.push(format!("host{i}::{rate}::{v}"));
            }
        }
        if !exact {
            numbers.clear();
            json.clear();
        }
        IntervalEjection {
            flagged: hosts.iter().map(|h| flag(&text, h)).collect(),
            numbers,
            json: success_rates_json(&json),
            stats: outlier_stats(admin),
        }
    });
}

/// The success-rate fields of `/clusters?format=json` for cluster `backend`, one line each.
fn success_rates_json(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let Some(c) = v["cluster_statuses"].as_array().and_then(|l| l.iter().find(|c| c["name"] == "backend"))
    else {
        return "no backend cluster".into();
    };
    let mut out = Vec::new();
    for f in ["success_rate_ejection_threshold", "local_origin_success_rate_ejection_threshold"] {
        out.push(format!("{f}={}", c[f]));
    }
    for (i, h) in c["host_statuses"].as_array().into_iter().flatten().enumerate() {
        for f in ["success_rate", "local_origin_success_rate"] {
            out.push(format!("host{i}.{f}={}", h[f]));
        }
    }
    out.join("\n")
}

/// Success rate and failure percentage on 1 s intervals from 10 results a host, `extra` fields
/// added; the consecutive detectors are kept out of the way so only the interval detectors eject.
fn interval_only(extra: &str) -> String {
    format!(
        "outlier_detection: {{ interval: 1s, success_rate_request_volume: 10, \
         failure_percentage_request_volume: 10, max_ejection_percent: 50, {extra}\
         consecutive_5xx: 1000000, consecutive_gateway_failure: 1000000, \
         consecutive_local_origin_failure: 1000000, base_ejection_time: 30s }}\n"
    )
}

#[test]
fn success_rate_ejection_matches_envoy() {
    // One host of five always answers 503: its success rate 0 is under the mean 80 − 1.9 × the
    // stdev 40 (threshold 4). Its 100 % failures also pass failure_percentage_threshold (85),
    // detected only (enforcing_failure_percentage defaults to 0).
    let bad = failing();
    let (hosts, _good) = with_four_good(bad.addr);
    interval_scenario("success_rate_ejection_matches_envoy", &hosts, &interval_only(""), true);
}

#[test]
fn failure_percentage_ejection_matches_envoy() {
    // Success rate detects the failing host but may not eject (enforcing 0); failure percentage
    // ejects it on the same tick.
    let bad = failing();
    let (hosts, _good) = with_four_good(bad.addr);
    let od = interval_only("enforcing_success_rate: 0, enforcing_failure_percentage: 100, ");
    interval_scenario("failure_percentage_ejection_matches_envoy", &hosts, &od, true);
}

#[test]
fn a_host_failing_most_requests_is_ejected_as_by_envoy() {
    // Three requests of every four fail. Against four perfect hosts any lower rate is under the
    // threshold (mean − 1.9 × stdev), and no interval's share of failures reaches 85 %.
    let bad = flaky(4);
    let (hosts, _good) = with_four_good(bad.addr);
    let od = interval_only("");
    interval_scenario("a_host_failing_most_requests_is_ejected_as_by_envoy", &hosts, &od, false);
}

#[test]
fn local_origin_success_rate_ejection_matches_envoy() {
    // With the split, a host refusing connections has a local-origin success rate of 0 and no
    // external results at all; the other four connect every time.
    let (hosts, _good) = with_four_good(support::dead_port());
    let od = interval_only("split_external_local_origin_errors: true, ");
    interval_scenario("local_origin_success_rate_ejection_matches_envoy", &hosts, &od, true);
}

/// After three 503s eject the failing host, what 1.5 s of TCP health checks (every 0.3 s, which
/// it passes) make of its ejection.
fn health_check_scenario(name: &str, uneject: bool) {
    let (bad, b, c) = (failing(), TestUpstream::named("b"), TestUpstream::named("c"));
    let hosts = [bad.addr, b.addr, c.addr];
    let od = format!(
        "outlier_detection: {{ consecutive_5xx: 3, base_ejection_time: 30s, max_ejection_percent: 50, \
         successful_active_health_check_uneject_host: {uneject} }}\nhealth_checks:\n  - timeout: 0.5s\n    \
         interval: 0.3s\n    no_traffic_interval: 0.3s\n    unhealthy_threshold: 2\n    healthy_threshold: 1\n    \
         tcp_health_check: {{}}\n"
    );
    let clusters = backend("ROUND_ROBIN", &hosts, &od);
    let log = scratch_dir("parity-outlier-hc").join("access.log");
    let make = |port: u16, admin: u16| config(port, admin, &log, "", &clusters);
    both(name, &make, &|listener, admin| {
        let failures = (0..12).filter(|_| get_host(listener, "example.com", "/", &[]).status == 503).count();
        std::thread::sleep(Duration::from_millis(1500));
        let clusters = envoy::admin_get(admin, "/clusters").map(|(_, b)| b).unwrap_or_default();
        let prefix = format!("backend::{}::health_flags::", bad.addr);
        let flags = clusters.lines().find_map(|l| l.strip_prefix(&prefix).map(str::to_string));
        let stats = outlier_stats(admin);
        (failures, flags, stats["ejections_active"], stats["ejections_enforced_total"])
    });
}

#[test]
fn a_passing_health_check_unejects_as_envoy_does() {
    health_check_scenario("a_passing_health_check_unejects_as_envoy_does", true);
}

#[test]
fn without_health_check_uneject_the_host_stays_ejected_as_in_envoy() {
    health_check_scenario("without_health_check_uneject_the_host_stays_ejected_as_in_envoy", false);
}

fn hash_scenario(name: &str, lb: &str) {
    let hosts: Vec<TestUpstream> = ["h0", "h1", "h2", "h3"].iter().map(|n| TestUpstream::named(n)).collect();
    let addrs: Vec<_> = hosts.iter().map(|h| h.addr).collect();
    let clusters = backend(lb, &addrs, "");
    let log = scratch_dir("parity-hash").join("access.log");
    let route = "hash_policy: [ { header: { header_name: x-user } } ]\n";
    let make = |port: u16, admin: u16| config(port, admin, &log, route, &clusters);
    both(name, &make, &|listener, _| {
        (0..40).map(|k| host_for(listener, &format!("user-{k}"))).collect::<Vec<_>>()
    });
}

#[test]
fn ring_hash_keys_land_on_envoy_s_hosts() {
    hash_scenario("ring_hash_keys_land_on_envoy_s_hosts", "RING_HASH");
}

#[test]
fn maglev_keys_land_on_envoy_s_hosts() {
    hash_scenario("maglev_keys_land_on_envoy_s_hosts", "MAGLEV");
}
