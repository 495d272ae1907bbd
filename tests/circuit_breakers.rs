//! Circuit breakers as a client sees them: a request over `max_requests` or `max_pending_requests`
//! gets Envoy's 503 with `x-envoy-overloaded: true` and `UO` in the access log; one over
//! `max_connections` waits for a connection and is served; a retry over `max_retries` is not made.
//! Each checks the exact stat that counted it, against real upstreams on loopback.

mod support;

#[path = "support/breakers.rs"]
mod breakers;

use breakers::{cluster, config, log_lines, staggered, upstream, OVERFLOW_BODY};
use std::time::Duration;
use support::{eventually, get, scratch_dir, stat, Skiff};

const SLOW: Duration = Duration::from_millis(1500);
/// Between the clients' starts: long enough that the earlier request is at the upstream.
const GAP: Duration = Duration::from_millis(300);

fn start(thresholds: &str, args: &[&str]) -> (Skiff, support::TestUpstream, std::path::PathBuf) {
    let up = upstream("up", SLOW);
    let log = scratch_dir("breakers").join("access.log");
    let extra = format!("circuit_breakers:\n  thresholds:\n    - {thresholds}\n");
    let yaml = config(0, 0, &log, "", &cluster("ROUND_ROBIN", &[(0, vec![(up.addr, "")])], &extra));
    (Skiff::start(&yaml, args), up, log)
}

#[test]
fn a_request_over_max_requests_gets_503_overloaded_and_uo() {
    let (skiff, _up, log) = start("{ max_requests: 1, track_remaining: true }", &[]);
    let addr = skiff.listener("main");
    let admin = skiff.admin();
    let first = std::thread::spawn(move || get(addr, "/slow/1"));
    std::thread::sleep(GAP);
    // While the first is in flight the breaker is open, with nothing remaining.
    assert_eq!(stat(admin, "cluster.backend.circuit_breakers.default.rq_open"), Some(1));
    assert_eq!(stat(admin, "cluster.backend.circuit_breakers.default.remaining_rq"), Some(0));
    let second = get(addr, "/slow/2");
    assert_eq!(second.status, 503);
    assert_eq!(second.header("x-envoy-overloaded"), Some("true"));
    assert_eq!(second.text(), OVERFLOW_BODY);
    assert_eq!(first.join().expect("first").status, 200);

    assert_eq!(stat(admin, "cluster.backend.upstream_rq_active_overflow"), Some(1));
    assert_eq!(stat(admin, "cluster.backend.upstream_rq_pending_overflow"), Some(0));
    assert_eq!(stat(admin, "cluster.backend.upstream_rq_503"), Some(1));
    // The first request's slot is given back just after its response went out.
    assert!(eventually(Duration::from_secs(5), || {
        stat(admin, "cluster.backend.circuit_breakers.default.remaining_rq") == Some(1)
    }));
    assert_eq!(stat(admin, "cluster.backend.circuit_breakers.default.rq_open"), Some(0));
    let lines = log_lines(&log, 2);
    assert!(lines.iter().any(|l| l.starts_with("503 UO /slow/2 ")), "{lines:?}");
    assert!(lines.iter().any(|l| l.starts_with("200 - /slow/1 ")), "{lines:?}");
}

#[test]
fn over_max_connections_a_request_waits_and_over_max_pending_it_is_refused() {
    // One shard: like Envoy's worker, a shard with no connection to the endpoint opens one even
    // at the limit (so its pending requests are never stranded).
    let (skiff, up, log) = start("{ max_connections: 1, max_pending_requests: 1 }", &["--concurrency", "1"]);
    let addr = skiff.listener("main");
    let admin = skiff.admin();
    let started = std::time::Instant::now();
    let r = staggered(addr, &["/slow/1", "/slow/2", "/slow/3"], GAP);
    // The second waited for the first's connection and was served on it; the third found the
    // pending queue full.
    assert_eq!((r[0].status, r[1].status, r[2].status), (200, 200, 503));
    assert_eq!(r[2].header("x-envoy-overloaded"), Some("true"));
    assert_eq!(r[2].text(), OVERFLOW_BODY);
    assert!(started.elapsed() >= SLOW * 2, "the second request did not wait for the first");
    assert_eq!(up.connections.load(std::sync::atomic::Ordering::Relaxed), 1);

    assert_eq!(stat(admin, "cluster.backend.upstream_rq_pending_overflow"), Some(1));
    assert_eq!(stat(admin, "cluster.backend.upstream_cx_overflow"), Some(1));
    assert_eq!(stat(admin, "cluster.backend.upstream_rq_pending_total"), Some(2));
    assert_eq!(stat(admin, "cluster.backend.upstream_cx_total"), Some(1));
    assert_eq!(stat(admin, "cluster.backend.upstream_rq_pending_active"), Some(0));
    assert_eq!(stat(admin, "cluster.backend.circuit_breakers.default.cx_open"), Some(1));
    let lines = log_lines(&log, 3);
    assert!(lines.iter().any(|l| l.starts_with("503 UO /slow/3 ")), "{lines:?}");
}

#[test]
fn a_retry_over_max_retries_is_not_made_and_the_5xx_passes_with_uo() {
    let (skiff, up, log) = start("{ max_retries: 0 }", &[]);
    let admin = skiff.admin();
    let r = get(skiff.listener("main"), "/retry/fail");
    assert_eq!(r.status, 503);
    assert_eq!(r.text(), "failed\n");
    assert_eq!(r.header("x-envoy-overloaded"), None);
    assert_eq!(up.count(), 1);
    assert_eq!(stat(admin, "cluster.backend.upstream_rq_retry_overflow"), Some(1));
    assert_eq!(stat(admin, "cluster.backend.upstream_rq_retry"), Some(0));
    let lines = log_lines(&log, 1);
    assert!(lines[0].starts_with("503 UO /retry/fail "), "{lines:?}");
}

/// The limit is the process's, not each shard's: with two shards and `max_requests: 1`, one of
/// four concurrent requests is served.
#[test]
fn max_requests_holds_across_shards() {
    let (skiff, _up, _log) = start("{ max_requests: 1 }", &["--concurrency", "2"]);
    let addr = skiff.listener("main");
    let r = staggered(addr, &["/slow/1", "/slow/2", "/slow/3", "/slow/4"], Duration::from_millis(100));
    let statuses: Vec<u16> = r.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![200, 503, 503, 503]);
    assert_eq!(stat(skiff.admin(), "cluster.backend.upstream_rq_active_overflow"), Some(3));
}

/// A retry budget replaces `max_retries`: its limit is a share of the requests active and
/// pending right now. 50 % of one request (the failing one) is no retry; with two more in flight
/// it is one at a time, so the failing request gets both its retries.
#[test]
fn a_retry_budget_grows_with_the_requests_in_flight() {
    let budget =
        "{ max_retries: 5, retry_budget: { budget_percent: { value: 50 }, min_retry_concurrency: 0 } }";
    let (skiff, up, log) = start(budget, &[]);
    let (addr, admin) = (skiff.listener("main"), skiff.admin());
    let alone = get(addr, "/retry/fail");
    assert_eq!(alone.status, 503);
    assert_eq!(up.count(), 1, "a budget of half a request admits no retry");
    assert_eq!(stat(admin, "cluster.backend.upstream_rq_retry_overflow"), Some(1));
    assert!(log_lines(&log, 1)[0].starts_with("503 UO /retry/fail "));

    let slow: Vec<_> = (0..2).map(|i| std::thread::spawn(move || get(addr, &format!("/slow/{i}")))).collect();
    std::thread::sleep(GAP);
    let busy = get(addr, "/retry/fail");
    assert_eq!(busy.status, 503);
    // 1 + 3 attempts: 50 % of three active requests is one retry at a time.
    assert_eq!(up.requests().iter().filter(|s| s.path == "/retry/fail").count(), 4);
    assert_eq!(stat(admin, "cluster.backend.upstream_rq_retry"), Some(2));
    assert_eq!(stat(admin, "cluster.backend.upstream_rq_retry_overflow"), Some(1));
    for h in slow {
        assert_eq!(h.join().expect("slow").status, 200);
    }
    let lines = log_lines(&log, 4);
    assert!(lines.iter().any(|l| l.starts_with("503 URX /retry/fail ")), "{lines:?}");
}

/// `per_host_thresholds` caps each host's connections, not the cluster's: two hosts at one
/// connection each serve four concurrent requests on two connections, the others waiting.
#[test]
fn per_host_max_connections_caps_each_host_and_the_rest_wait() {
    let (a, b) = (upstream("a", SLOW), upstream("b", SLOW));
    let log = scratch_dir("breakers").join("access.log");
    let extra = "circuit_breakers:\n  per_host_thresholds:\n    - { max_connections: 1 }\n";
    let eps = vec![(a.addr, ""), (b.addr, "")];
    let yaml = config(0, 0, &log, "", &cluster("ROUND_ROBIN", &[(0, eps)], extra));
    let skiff = Skiff::start(&yaml, &["--concurrency", "1"]);
    let (addr, admin) = (skiff.listener("main"), skiff.admin());
    let started = std::time::Instant::now();
    let r = staggered(addr, &["/slow/1", "/slow/2", "/slow/3", "/slow/4"], Duration::from_millis(100));
    assert!(r.iter().all(|r| r.status == 200), "{:?}", r.iter().map(|r| r.status).collect::<Vec<_>>());
    assert!(started.elapsed() >= SLOW * 2, "the third and fourth did not wait");
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!((a.connections.load(Relaxed), b.connections.load(Relaxed)), (1, 1));
    assert_eq!(stat(admin, "cluster.backend.upstream_cx_overflow"), Some(2));
    assert_eq!(stat(admin, "cluster.backend.upstream_cx_total"), Some(2));
    assert_eq!(stat(admin, "cluster.backend.circuit_breakers.default.cx_open"), Some(0));
}

/// Envoy 1.40 refuses every per-host limit but `max_connections`; skiff refuses them too, naming
/// the field, and a `retry_budget` percent outside 0–100 as Envoy's validation does.
#[test]
fn per_host_limits_other_than_max_connections_and_a_budget_over_100_are_refused() {
    let up = upstream("up", SLOW);
    let log = scratch_dir("breakers").join("access.log");
    for (extra, field, message) in [
        (
            "circuit_breakers:\n  per_host_thresholds:\n    - { max_connections: 2, max_requests: 5 }\n",
            "per_host_thresholds[0].max_requests",
            "Unsupported field in per_host_thresholds",
        ),
        (
            "circuit_breakers:\n  thresholds:\n    - retry_budget: { budget_percent: { value: 150 } }\n",
            "retry_budget.budget_percent.value",
            "budget_percent must be between 0 and 100",
        ),
    ] {
        let yaml = config(0, 0, &log, "", &cluster("ROUND_ROBIN", &[(0, vec![(up.addr, "")])], extra));
        let err = Skiff::try_start(&yaml, &[]).err().expect("the config is refused");
        assert!(err.contains(field) && err.contains(message), "{err}");
    }
}
