//! Outlier detection and hash balancing as a client sees them, with real upstreams on loopback
//! and two shards: five 503s in a row from one host eject it (its traffic moves to the others,
//! `/clusters` flags it `/failed_outlier_check`, the `outlier_detection.*` stats count it) until
//! `base_ejection_time` has passed; `max_ejection_percent` holds a second failing host in; the
//! interval sweep ejects a host whose success rate (counted over both shards) is an outlier; a
//! passing active health check returns an ejected host unless told not to; a `hash_policy` header
//! keeps a key on one host and spreads many keys over all of them.

mod support;

#[path = "support/breakers.rs"]
mod breakers;

#[path = "support/outlier.rs"]
mod outlier;

use breakers::config;
use outlier::{backend, failing, flaky, host_for, statuses, with_four_good};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use support::{admin_request, eventually, scratch_dir, stat, Skiff, TestUpstream};

const SHARDS: &[&str] = &["--concurrency", "2"];

fn start(lb: &str, hosts: &[std::net::SocketAddr], cluster_extra: &str, route_extra: &str) -> Skiff {
    let log = scratch_dir("outlier").join("access.log");
    Skiff::start(&config(0, 0, &log, route_extra, &backend(lb, hosts, cluster_extra)), SHARDS)
}

fn flags(admin: std::net::SocketAddr, host: std::net::SocketAddr) -> String {
    let (_, body) = admin_request(admin, "GET", "/clusters");
    let prefix = format!("backend::{host}::health_flags::");
    body.lines().find_map(|l| l.strip_prefix(&prefix).map(str::to_string)).unwrap_or_default()
}

#[test]
fn five_503s_eject_a_host_until_its_ejection_time_is_over() {
    let bad = failing();
    let (b, c) = (TestUpstream::named("b"), TestUpstream::named("c"));
    let od = "outlier_detection: { consecutive_5xx: 5, interval: 1s, base_ejection_time: 3s, max_ejection_percent: 50 }\n";
    let skiff = start("ROUND_ROBIN", &[bad.addr, b.addr, c.addr], od, "");
    let (addr, admin) = (skiff.listener("main"), skiff.admin());

    // Round robin sends every third request to the failing host, whichever shard serves it. The
    // fifth 503 ejects it before that response leaves, so no sixth request reaches it.
    let seen = statuses(addr, "/", 40, &[]);
    let failures = seen.iter().filter(|(s, _)| *s == 503).count();
    assert_eq!(failures, 5, "{seen:?}");
    assert_eq!(bad.count(), 5);
    let last_503 = seen.iter().rposition(|(s, _)| *s == 503).unwrap_or(0);
    assert!(seen[last_503 + 1..].iter().all(|(s, b)| *s == 200 && (b == "b" || b == "c")));

    assert_eq!(flags(admin, bad.addr), "/failed_outlier_check");
    assert_eq!(flags(admin, b.addr), "healthy");
    let s = |name: &str| stat(admin, &format!("cluster.backend.outlier_detection.{name}"));
    assert_eq!(s("ejections_active"), Some(1));
    assert_eq!(s("ejections_enforced_total"), Some(1));
    assert_eq!(s("ejections_enforced_consecutive_5xx"), Some(1));
    assert_eq!(s("ejections_detected_consecutive_5xx"), Some(1));
    assert_eq!(s("ejections_total"), Some(1));
    // The five 503s were gateway failures too: detected, not enforced (Envoy's default 0 %).
    assert_eq!(s("ejections_detected_consecutive_gateway_failure"), Some(1));
    assert_eq!(s("ejections_enforced_consecutive_gateway_failure"), Some(0));

    // Back after base_ejection_time (3 s, on the next 1 s interval tick): it gets traffic again.
    let ejected_at = Instant::now();
    assert!(eventually(Duration::from_secs(10), || flags(admin, bad.addr) == "healthy"));
    assert!(ejected_at.elapsed() >= Duration::from_secs(2), "returned after {:?}", ejected_at.elapsed());
    assert_eq!(s("ejections_active"), Some(0));
    let again = statuses(addr, "/", 9, &[]);
    assert!(again.iter().any(|(s, _)| *s == 503), "{again:?}");
}

#[test]
fn max_ejection_percent_keeps_a_second_failing_host_in() {
    let (bad1, bad2, good) = (failing(), failing(), TestUpstream::named("good"));
    // One host of three is 33 %: within 40 %; two would be 66 %.
    let od = "outlier_detection: { consecutive_5xx: 3, base_ejection_time: 30s, max_ejection_percent: 40 }\n";
    let skiff = start("ROUND_ROBIN", &[bad1.addr, bad2.addr, good.addr], od, "");
    let (addr, admin) = (skiff.listener("main"), skiff.admin());
    let seen = statuses(addr, "/", 40, &[]);
    let s = |name: &str| stat(admin, &format!("cluster.backend.outlier_detection.{name}"));
    assert_eq!(s("ejections_active"), Some(1), "{seen:?}");
    assert_eq!(s("ejections_enforced_total"), Some(1));
    assert!(s("ejections_overflow").unwrap_or(0) >= 1);
    let flagged =
        [bad1.addr, bad2.addr].iter().filter(|h| flags(admin, **h) == "/failed_outlier_check").count();
    assert_eq!(flagged, 1);
    // The host left in keeps answering its share.
    let tail = &seen[20..];
    assert!(tail.iter().any(|(s, _)| *s == 503) && tail.iter().any(|(s, _)| *s == 200), "{tail:?}");
}

fn sticky_and_spread(lb: &str) {
    let hosts: Vec<TestUpstream> = ["h0", "h1", "h2"].iter().map(|n| TestUpstream::named(n)).collect();
    let addrs: Vec<_> = hosts.iter().map(|h| h.addr).collect();
    let skiff = start(lb, &addrs, "", "hash_policy: [ { header: { header_name: x-user } } ]\n");
    let addr = skiff.listener("main");
    let first = host_for(addr, "alice");
    for _ in 0..50 {
        assert_eq!(host_for(addr, "alice"), first);
    }
    let mut per_host: HashMap<String, usize> = HashMap::new();
    for k in 0..100 {
        *per_host.entry(host_for(addr, &format!("user-{k}"))).or_default() += 1;
    }
    assert_eq!(per_host.keys().cloned().collect::<HashSet<_>>().len(), 3, "{per_host:?}");
    assert!(per_host.values().all(|n| *n >= 10), "{per_host:?}");
    // Without the header a request goes to a random host: all of them, over enough requests.
    let unkeyed: HashSet<String> = statuses(addr, "/", 60, &[]).into_iter().map(|(_, b)| b).collect();
    assert_eq!(unkeyed.len(), 3, "{unkeyed:?}");
}

#[test]
fn ring_hash_keeps_a_key_on_one_host_and_spreads_keys() {
    sticky_and_spread("RING_HASH");
}

#[test]
fn maglev_keeps_a_key_on_one_host_and_spreads_keys() {
    sticky_and_spread("MAGLEV");
}

#[test]
fn an_ejected_host_s_keys_move_and_the_others_stay() {
    let bad = failing();
    let (b, c) = (TestUpstream::named("b"), TestUpstream::named("c"));
    let od = "outlier_detection: { consecutive_5xx: 1, base_ejection_time: 30s, max_ejection_percent: 50 }\n";
    let skiff = start(
        "RING_HASH",
        &[bad.addr, b.addr, c.addr],
        od,
        "hash_policy: [ { header: { header_name: x-user } } ]\n",
    );
    let addr = skiff.listener("main");
    let before: Vec<String> = (0..30).map(|k| host_for(addr, &format!("k{k}"))).collect();
    // The first key that landed on the failing host ejected it (consecutive_5xx: 1).
    let after: Vec<String> = (0..30).map(|k| host_for(addr, &format!("k{k}"))).collect();
    assert!(before.iter().any(|h| h == "failing"), "{before:?}");
    assert!(after.iter().all(|h| h != "failing"), "{after:?}");
    // Only the ejected host's keys moved.
    for (k, (was, now)) in before.iter().zip(&after).enumerate() {
        if was != "failing" {
            assert_eq!(was, now, "key k{k} moved");
        }
    }
}

fn clusters_line(admin: std::net::SocketAddr, suffix: &str) -> String {
    let (_, body) = admin_request(admin, "GET", "/clusters");
    let prefix = format!("backend::{suffix}::");
    body.lines().find_map(|l| l.strip_prefix(&prefix).map(str::to_string)).unwrap_or_default()
}

#[test]
fn success_rate_ejects_the_host_failing_most_requests_counted_over_both_shards() {
    // Four requests of every five fail.
    let bad = flaky(5);
    let (hosts, _good) = with_four_good(bad.addr);
    // The consecutive detectors are out of the way: only the interval sweep can eject.
    let od = "outlier_detection: { interval: 1s, success_rate_request_volume: 20, consecutive_5xx: 1000000, \
              consecutive_gateway_failure: 1000000, base_ejection_time: 30s, max_ejection_percent: 20 }\n";
    let skiff = start("ROUND_ROBIN", &hosts, od, "");
    let (addr, admin) = (skiff.listener("main"), skiff.admin());
    // Requests on fresh connections go to either shard; only the two together reach the volume
    // (20 per host) in some interval.
    let deadline = Instant::now() + Duration::from_secs(8);
    while flags(admin, bad.addr) != "/failed_outlier_check" && Instant::now() < deadline {
        statuses(addr, "/", 25, &[]);
    }
    assert_eq!(flags(admin, bad.addr), "/failed_outlier_check");
    // About 20 % success: under the mean (~84) − 1.9 × the stdev (~32).
    let rate: f64 = clusters_line(admin, &format!("{}::success_rate", bad.addr)).parse().unwrap_or(-1.0);
    assert!((0.0..50.0).contains(&rate), "{rate}");
    assert_eq!(clusters_line(admin, &format!("{}::success_rate", hosts[1])), "100");
    let threshold: f64 =
        clusters_line(admin, "outlier::success_rate_ejection_threshold").parse().unwrap_or(-1.0);
    assert!(threshold > rate, "{threshold} {rate}");
    let s = |name: &str| stat(admin, &format!("cluster.backend.outlier_detection.{name}"));
    assert_eq!(s("ejections_active"), Some(1));
    assert_eq!(s("ejections_detected_success_rate"), Some(1));
    assert_eq!(s("ejections_enforced_success_rate"), Some(1));
    assert_eq!(s("ejections_detected_consecutive_5xx"), Some(0));
    // Its traffic now goes to the four others.
    let after = statuses(addr, "/", 20, &[]);
    assert!(after.iter().all(|(s, b)| *s == 200 && b != "flaky"), "{after:?}");
}

/// A TCP health check every 0.3 s, which a host answering 503 to HTTP passes.
const TCP_CHECK: &str =
    "health_checks:\n  - timeout: 0.5s\n    interval: 0.3s\n    no_traffic_interval: 0.3s\n    \
                         unhealthy_threshold: 2\n    healthy_threshold: 1\n    tcp_health_check: {}\n";

fn ejected_then_checked(uneject: bool) -> (Skiff, TestUpstream, [TestUpstream; 2]) {
    let bad = failing();
    let others = [TestUpstream::named("b"), TestUpstream::named("c")];
    let od = format!(
        "outlier_detection: {{ consecutive_5xx: 3, base_ejection_time: 30s, max_ejection_percent: 50, \
         successful_active_health_check_uneject_host: {uneject} }}\n{TCP_CHECK}"
    );
    let skiff = start("ROUND_ROBIN", &[bad.addr, others[0].addr, others[1].addr], &od, "");
    let seen = statuses(skiff.listener("main"), "/", 12, &[]);
    assert_eq!(seen.iter().filter(|(s, _)| *s == 503).count(), 3, "{seen:?}");
    (skiff, bad, others)
}

#[test]
fn a_passing_health_check_returns_an_ejected_host_at_once() {
    let (skiff, bad, _others) = ejected_then_checked(true);
    let admin = skiff.admin();
    // Ejected for 30 s, but the next check (0.3 s) passes: back.
    assert!(eventually(Duration::from_secs(3), || flags(admin, bad.addr) == "healthy"));
    let s = |name: &str| stat(admin, &format!("cluster.backend.outlier_detection.{name}"));
    assert_eq!(s("ejections_active"), Some(0));
    assert_eq!(s("ejections_enforced_total"), Some(1));
}

#[test]
fn without_successful_active_health_check_uneject_host_the_ejection_runs_its_time() {
    let (skiff, bad, _others) = ejected_then_checked(false);
    let admin = skiff.admin();
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(flags(admin, bad.addr), "/failed_outlier_check");
    assert_eq!(stat(admin, "cluster.backend.outlier_detection.ejections_active"), Some(1));
}

#[test]
fn outlier_monitors_and_bad_percentages_are_refused_at_load() {
    for (od, path, message) in [
        (
            "outlier_detection: { monitors: [] }\n",
            "outlier_detection.monitors",
            "monitors (outlier detection extensions) are not supported",
        ),
        (
            "outlier_detection: { failure_percentage_threshold: 101 }\n",
            "outlier_detection.failure_percentage_threshold",
            "failure_percentage_threshold is a percentage (0-100), got 101",
        ),
    ] {
        let yaml = config(
            0,
            0,
            &scratch_dir("outlier-refused").join("a.log"),
            "",
            &backend("ROUND_ROBIN", &[support::dead_port()], od),
        );
        let err = Skiff::try_start(&yaml, &[]).err().unwrap_or_default();
        assert!(err.contains(path) && err.contains(message), "{err}");
    }
}
