//! Retry policy fields beyond `retry_on`/`num_retries` (the parity suite holds
//! retriable-status-codes, retriable-4xx and the retry stats to Envoy): the `previous_hosts`
//! host predicate with `host_selection_retry_max_attempts`, and the load-time checks of
//! `retry_back_off` and `retry_host_predicate`.

mod support;

use std::sync::Arc;
use support::*;

fn two_hosts_config(failing: std::net::SocketAddr, healthy: std::net::SocketAddr, retry: &str) -> String {
    with_admin(&custom_config(&[failing, healthy], "", &format!(", retry_policy: {{ {retry} }}"), ""))
        .replace("lb_policy: ROUND_ROBIN", "lb_policy: RANDOM")
}

#[test]
fn previous_hosts_sends_the_retry_to_a_host_not_yet_tried() {
    let failing = TestUpstream::start(Arc::new(|_: &Seen| Reply::Full {
        status: 503,
        headers: vec![],
        body: b"down".to_vec(),
    }));
    let healthy = TestUpstream::named("up");
    let retry = "retry_on: 5xx, num_retries: 1, retry_host_predicate: [ { name: envoy.retry_host_predicates.previous_hosts, typed_config: { \"@type\": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate } } ], host_selection_retry_max_attempts: 16, retry_back_off: { base_interval: 0.001s }";
    let skiff = Skiff::start(&two_hosts_config(failing.addr, healthy.addr, retry), &["--concurrency", "1"]);
    let mut c = Client::connect(skiff.listener("main"));
    // RANDOM picks the failing host first about half the time; its one retry must then go to the
    // other host (a random re-pick would land on the failing one again half the time).
    for i in 0..40 {
        let r = c.get(&format!("/{i}"));
        assert_eq!((r.status, r.text().as_str()), (200, "up"), "request {i}");
    }
    assert!(failing.count() > 5, "the failing host was picked: {}", failing.count());
    let retried = stat(skiff.admin(), "cluster.backend.upstream_rq_retry").unwrap_or(0);
    assert_eq!(Some(retried), stat(skiff.admin(), "cluster.backend.upstream_rq_retry_success"));
    assert!(!skiff.log().contains("retry_host_predicate"), "enforced, not warned:\n{}", skiff.log());
}

#[test]
fn retry_back_off_and_host_predicates_are_checked_at_load() {
    let up = TestUpstream::named("up");
    for (retry, error) in [
        ("retry_on: 5xx, retry_back_off: { max_interval: 1s }", "base_interval is required"),
        (
            "retry_on: 5xx, retry_back_off: { base_interval: 1s, max_interval: 0.5s }",
            "max_interval must not be less than base_interval",
        ),
        (
            "retry_on: 5xx, retry_host_predicate: [ { name: envoy.retry_host_predicates.omit_canary_hosts } ]",
            "retry host predicate \"envoy.retry_host_predicates.omit_canary_hosts\" is not supported",
        ),
        ("retry_on: 5xx, retriable_status_codes: [ 700 ]", "700 is not an HTTP status"),
    ] {
        let yaml = custom_config(&[up.addr], "", &format!(", retry_policy: {{ {retry} }}"), "");
        let err = Skiff::try_start(&yaml, &[]).err().unwrap_or_else(|| panic!("{retry} was accepted"));
        assert!(err.contains(error), "{retry}: {err}");
    }
    let warned = custom_config(&[up.addr], "", ", retry_policy: { retry_on: \"5xx,envoy-ratelimited\" }", "");
    let skiff = Skiff::start(&warned, &[]);
    assert!(skiff.log().contains("retry_on \"envoy-ratelimited\" is not acted on"), "{}", skiff.log());
}
