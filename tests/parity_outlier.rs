//! Envoy parity for outlier detection and hash balancing. The same v3 config and the same
//! sequential requests go through the real Envoy and through skiff (one worker / one shard each)
//! in front of the SAME upstreams (one failing with 503, two answering their names), so hosts hash
//! alike: for consecutive_5xx the client's statuses, which host `/clusters` flags and the
//! `outlier_detection.*` stats must be equal; for RING_HASH and MAGLEV each key must reach the same
//! host under both. Envoy is found via `$ENVOY_BIN` or PATH; without it these tests fail under CI
//! and skip elsewhere.

mod support;

#[path = "support/envoy.rs"]
mod envoy;

#[path = "support/breakers.rs"]
mod breakers;

#[path = "support/outlier.rs"]
mod outlier;

use breakers::config;
use outlier::{backend, failing, host_for};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
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
    "ejections_detected_success_rate",
    "ejections_enforced_success_rate",
];

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
        let stats = OUTLIER_STATS
            .iter()
            .map(|n| {
                let full = format!("cluster.backend.outlier_detection.{n}");
                (n.to_string(), support::stat_in(&text, &full))
            })
            .collect();
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
