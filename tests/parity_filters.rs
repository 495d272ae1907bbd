//! Envoy parity for the HTTP filters skiff implements: the same v3 config and the same requests go
//! through the real Envoy and through skiff, each in front of its own upstream, and the statuses,
//! bodies, the filters' headers, the access-log lines and the filters' stats must be equal. A
//! delay is checked on both (generous bounds: the box is shared). Envoy is found via `$ENVOY_BIN`
//! or PATH; without it these tests fail under CI and skip elsewhere.

mod support;

#[path = "support/envoy.rs"]
mod envoy;

use std::time::Duration;
use support::filters::{self, req, req_with, Req, Run, ALL_TO_BACKEND};
use support::{scratch_dir, Skiff, TestUpstream};

/// The headers the filters add or that say what kind of reply it was.
const COMPARED_HEADERS: &[&str] = &[
    "content-type",
    "x-local-rate-limit",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
];

fn run_envoy(bin: &std::path::Path, filters_yaml: &str, routes: &str, requests: &[Req]) -> Run {
    let dir = scratch_dir("parity-filters-envoy");
    let up = TestUpstream::echo();
    let log = dir.join("access.log");
    let e = envoy::Envoy::start(bin, &dir, |port, admin| {
        filters::config(port, admin, &log, up.addr, filters_yaml, routes)
    });
    let run = filters::drive(e.listener, e.admin, &log, &up, requests);
    drop(e);
    let _ = std::fs::remove_dir_all(&dir);
    run
}

fn run_skiff(filters_yaml: &str, routes: &str, requests: &[Req]) -> Run {
    let dir = scratch_dir("parity-filters-skiff");
    let up = TestUpstream::echo();
    let log = dir.join("access.log");
    // Two shards: the rate limit is the process's, whichever shard a connection lands on.
    let sk =
        Skiff::start(&filters::config(0, 0, &log, up.addr, filters_yaml, routes), &["--concurrency", "2"]);
    let run = filters::drive(sk.listener("main"), sk.admin(), &log, &up, requests);
    drop(sk);
    let _ = std::fs::remove_dir_all(&dir);
    run
}

/// (envoy, skiff), or None when Envoy is absent outside CI.
fn both(name: &str, filters_yaml: &str, routes: &str, requests: &[Req]) -> Option<(Run, Run)> {
    let bin = envoy::binary_or_skip(name)?;
    std::thread::scope(|s| {
        let e = s.spawn(|| run_envoy(&bin, filters_yaml, routes, requests));
        let k = s.spawn(|| run_skiff(filters_yaml, routes, requests));
        Some((e.join().expect("envoy side"), k.join().expect("skiff side")))
    })
}

/// What is compared, as lines: per response its status, body and the filters' headers; the log;
/// the stats under `stat_prefixes`; how many requests reached the upstream.
fn render(run: &Run, stat_prefixes: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let uuid = regex::Regex::new("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").unwrap();
    for (i, (resp, _)) in run.responses.iter().enumerate() {
        let Some(r) = resp else {
            out.push(format!("#{i} no response"));
            continue;
        };
        out.push(format!("#{i} {} {:?}", r.status, uuid.replace_all(&r.text(), "<uuid>")));
        for h in COMPARED_HEADERS {
            if let Some(v) = r.header(h) {
                // The seconds until the bucket refills, as each proxy rounds them at the moment
                // it answers: a second of a loaded machine's delay between requests moves it.
                let v = match (*h, v.parse::<u64>()) {
                    ("x-ratelimit-reset", Ok(n)) if n > 0 => format!("~{}", (n + 2) / 5 * 5),
                    _ => v.to_string(),
                };
                out.push(format!("#{i} {h}: {v}"));
            }
        }
    }
    // Sorted: each of skiff's shards hands its lines to the writer on its own.
    let mut log = run.log.clone();
    log.sort();
    out.extend(log.iter().map(|l| format!("log {l}")));
    for (name, v) in &run.stats {
        if *v != 0 && stat_prefixes.iter().any(|p| name.starts_with(p)) {
            out.push(format!("stat {name} = {v}"));
        }
    }
    out.push(format!("upstream saw {}", run.upstream.len()));
    out
}

fn assert_same(envoy: &Run, skiff: &Run, stat_prefixes: &[&str]) {
    let (e, k) = (render(envoy, stat_prefixes), render(skiff, stat_prefixes));
    assert_eq!(e, k, "\nenvoy:\n{}\nskiff:\n{}", e.join("\n"), k.join("\n"));
}

const RATE_LIMIT: &str = r#"- name: envoy.filters.http.local_ratelimit
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
    stat_prefix: http_local_rate_limiter
    token_bucket: { max_tokens: 2, tokens_per_fill: 1, fill_interval: 60s }
    filter_enabled: { runtime_key: e, default_value: { numerator: 100, denominator: HUNDRED } }
    filter_enforced: { runtime_key: f, default_value: { numerator: 100, denominator: HUNDRED } }
    response_headers_to_add:
      - append_action: OVERWRITE_IF_EXISTS_OR_ADD
        header: { key: x-local-rate-limit, value: "true" }
    enable_x_ratelimit_headers: DRAFT_VERSION_03
"#;

#[test]
fn rate_limit_exhausted_answers_429_local_rate_limited_with_rl_and_counts_it() {
    let requests = [req("/a"), req("/b"), req("/c"), req("/d")];
    let Some((e, k)) = both("rate_limit_exhausted", RATE_LIMIT, ALL_TO_BACKEND, &requests) else { return };
    assert_same(&e, &k, &["http_local_rate_limiter."]);
    assert_eq!(k.status(2), 429);
    assert!(k.log.contains(&"429 RL /c backend local_rate_limited".to_string()), "{:?}", k.log);
    assert_eq!(k.stat("http_local_rate_limiter.http_local_rate_limit.rate_limited"), 2);
}

/// The connection manager's filter has no `filter_enabled` (so does nothing, as Envoy's); one route
/// brings its own limit in `typed_per_filter_config`.
#[test]
fn rate_limit_per_route_via_typed_per_filter_config() {
    let filter = r#"- name: envoy.filters.http.local_ratelimit
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
    stat_prefix: hcm_level
    token_bucket: { max_tokens: 1, fill_interval: 60s }
"#;
    let routes = r#"virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
      - match: { prefix: "/limited" }
        route: { cluster: backend }
        typed_per_filter_config:
          envoy.filters.http.local_ratelimit:
            "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
            stat_prefix: per_route
            token_bucket: { max_tokens: 1, tokens_per_fill: 1, fill_interval: 60s }
            filter_enabled: { default_value: { numerator: 100 } }
            filter_enforced: { default_value: { numerator: 100 } }
            status: { code: 503 }
      - match: { prefix: "/" }
        route: { cluster: backend }
"#;
    let requests = [req("/free"), req("/free"), req("/limited"), req("/limited"), req("/free")];
    let Some((e, k)) = both("rate_limit_per_route", filter, routes, &requests) else { return };
    assert_same(&e, &k, &["per_route.", "hcm_level."]);
    assert_eq!(k.status(3), 503);
    assert_eq!(k.stat("per_route.http_local_rate_limit.enforced"), 1);
}

const FAULT_ABORT: &str = r#"- name: envoy.filters.http.fault
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
    abort: { http_status: 503, percentage: { numerator: 100, denominator: HUNDRED } }
"#;

#[test]
fn fault_abort_100_percent_answers_fault_filter_abort_with_fi() {
    let requests = [req("/a"), req("/b")];
    let Some((e, k)) = both("fault_abort", FAULT_ABORT, ALL_TO_BACKEND, &requests) else { return };
    assert_same(&e, &k, &["http.ingress.fault."]);
    assert!(k.log.contains(&"503 FI /a backend fault_filter_abort".to_string()), "{:?}", k.log);
    assert_eq!(k.stat("http.ingress.fault.aborts_injected"), 2);
}

/// A 1 s delay on a route whose timeout is 0.5 s: the route timeout starts once the router has the
/// request, after the delay, so both answer 200 after about a second.
#[test]
fn fault_delay_100_percent_delays_then_forwards_with_di() {
    let filter = r#"- name: envoy.filters.http.fault
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
    delay: { fixed_delay: 1s, percentage: { numerator: 100 } }
"#;
    let routes = r#"virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
      - match: { prefix: "/" }
        route: { cluster: backend, timeout: 0.5s }
"#;
    let requests = [req("/slow")];
    let Some((e, k)) = both("fault_delay", filter, routes, &requests) else { return };
    assert_same(&e, &k, &["http.ingress.fault."]);
    for run in [&e, &k] {
        let took = run.responses[0].1;
        assert!(took >= Duration::from_millis(950) && took < Duration::from_secs(6), "{took:?}");
    }
    assert_eq!(k.log[0], "200 DI /slow backend via_upstream");
}

#[test]
fn header_controlled_abort_and_delay() {
    let filter = r#"- name: envoy.filters.http.fault
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
    abort: { header_abort: {}, percentage: { numerator: 100 } }
    delay: { header_delay: {}, percentage: { numerator: 100 } }
"#;
    let requests = [
        req("/none"),
        req_with("/abort", &[("x-envoy-fault-abort-request", "429")]),
        req_with(
            "/zero",
            &[("x-envoy-fault-abort-request", "429"), ("x-envoy-fault-abort-request-percentage", "0")],
        ),
        req_with("/bad", &[("x-envoy-fault-abort-request", "600")]),
        req_with("/delay", &[("x-envoy-fault-delay-request", "300")]),
        req_with("/both", &[("x-envoy-fault-delay-request", "200"), ("x-envoy-fault-abort-request", "500")]),
    ];
    let Some((e, k)) = both("header_controlled_fault", filter, ALL_TO_BACKEND, &requests) else { return };
    assert_same(&e, &k, &["http.ingress.fault."]);
    assert_eq!(k.status(1), 429);
    assert!(k.log.contains(&"500 DI,FI /both backend fault_filter_abort".to_string()), "{:?}", k.log);
    assert!(k.responses[4].1 >= Duration::from_millis(280), "{:?}", k.responses[4].1);
}
