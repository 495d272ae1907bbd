//! The HTTP filters skiff runs (`envoy.filters.http.local_ratelimit`, `envoy.filters.http.fault`)
//! as a user sees them: Envoy's own example configs load unchanged, what skiff does not implement
//! is refused by name, and the behaviours the parity suite does not drive (a client leaving during
//! a delay, shadow rate limiting, `max_active_faults`, matchers) give the exact status, log flags
//! and stats. Real skiff, real loopback upstream.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;
use support::filters::{self, req, req_with, validate, ALL_TO_BACKEND};
use support::{scratch_dir, Skiff, TestUpstream};

#[test]
fn envoys_local_ratelimit_and_fault_injection_examples_load_unchanged() {
    for file in ["local_ratelimit.yaml", "fault-injection.yaml"] {
        let path = format!("{}/configs/envoy-examples/filters/{file}", env!("CARGO_MANIFEST_DIR"));
        let (ok, log) = validate(&std::fs::read_to_string(&path).unwrap());
        assert!(ok, "{file}: {log}");
    }
}

fn with_filter(filter: &str) -> String {
    let log = scratch_dir("filters-refused").join("a.log");
    filters::config(0, 0, &log, "127.0.0.1:9".parse().unwrap(), filter, ALL_TO_BACKEND)
}

#[test]
fn what_skiff_does_not_implement_is_refused_by_name() {
    let rl = |extra: &str| {
        with_filter(&format!(
            "- name: envoy.filters.http.local_ratelimit\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit\n    stat_prefix: x\n{extra}"
        ))
    };
    let fault = |extra: &str| {
        with_filter(&format!(
            "- name: envoy.filters.http.fault\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault\n{extra}"
        ))
    };
    for (yaml, expected) in [
        (
            rl("    descriptors: [{ entries: [{ key: a, value: b }], token_bucket: { max_tokens: 1, fill_interval: 1s } }]\n"),
            "typed_config.descriptors: descriptors is not supported",
        ),
        (
            rl("    local_rate_limit_per_downstream_connection: true\n"),
            "local_rate_limit_per_downstream_connection is not supported",
        ),
        (rl("    token_bucket: { max_tokens: 0, fill_interval: 1s }\n"), "max_tokens must be greater than 0"),
        (rl("    token_bucket: { max_tokens: 1, fill_interval: 1s }\n    max_tokenz: 1\n"), "unknown field `max_tokenz`"),
        (
            // One of Envoy's `error_type` oneof.
            fault("    abort: { grpc_status: 14, http_status: 503, percentage: { numerator: 100 } }\n"),
            "give one of http_status, grpc_status and header_abort",
        ),
        (
            fault("    response_rate_limit: { fixed_limit: { limit_kbps: 1 } }\n"),
            "response_rate_limit is not supported",
        ),
        (fault("    abort: { http_status: 100 }\n"), "http_status must be 200-599, got 100"),
    ] {
        let (ok, log) = validate(&yaml);
        assert!(!ok && log.contains(expected), "expected {expected:?} in:\n{log}");
        // Every refusal names the file and line.
        assert!(log.contains("envoy.yaml:"), "{log}");
    }
}

#[test]
fn a_per_route_config_of_another_filter_is_warned_about_and_not_run() {
    let routes = r#"virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
      - match: { prefix: "/" }
        route: { cluster: backend }
        typed_per_filter_config:
          envoy.filters.http.lua:
            "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute
"#;
    let log = scratch_dir("filters-warn").join("a.log");
    let yaml = filters::config(0, 0, &log, "127.0.0.1:9".parse().unwrap(), "", routes);
    let (ok, out) = validate(&yaml);
    assert!(ok, "{out}");
    assert!(out.contains("typed_per_filter_config.envoy.filters.http.lua: typed_per_filter_config is accepted but ignored (only the local_ratelimit, fault, cors, csrf, jwt_authn, rbac, ext_authz and compressor"), "{out}");
}

fn start(filter: &str) -> (Skiff, TestUpstream, std::path::PathBuf) {
    let up = TestUpstream::echo();
    let log = scratch_dir("filters").join("access.log");
    let sk =
        Skiff::start(&filters::config(0, 0, &log, up.addr, filter, ALL_TO_BACKEND), &["--concurrency", "2"]);
    (sk, up, log)
}

#[test]
fn a_client_that_leaves_during_a_delay_is_logged_di_dc_and_nothing_is_forwarded() {
    let (sk, up, log) = start(
        r#"- name: envoy.filters.http.fault
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
    delay: { fixed_delay: 2s, percentage: { numerator: 100 } }
"#,
    );
    let mut c = TcpStream::connect(sk.listener("main")).unwrap();
    c.write_all(b"GET /gone HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(c);
    assert!(support::eventually(Duration::from_secs(5), || {
        std::fs::read_to_string(&log).unwrap_or_default().contains("0 DI,DC /gone -")
    }));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(up.count(), 0);
    assert_eq!(support::stat(sk.admin(), "http.ingress.fault.delays_injected"), Some(1));
    assert_eq!(support::stat(sk.admin(), "http.ingress.fault.active_faults"), Some(0));
}

/// `filter_enforced` absent: rate-limited requests are counted and forwarded with the configured
/// headers, never refused (Envoy's shadow mode).
#[test]
fn a_rate_limit_not_enforced_forwards_with_its_request_headers() {
    let (sk, up, log) = start(
        r#"- name: envoy.filters.http.local_ratelimit
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
    stat_prefix: shadow
    token_bucket: { max_tokens: 1, fill_interval: 60s }
    filter_enabled: { default_value: { numerator: 100 } }
    request_headers_to_add_when_not_enforced:
      - header: { key: x-rate-limited, value: "yes" }
"#,
    );
    let run = filters::drive(sk.listener("main"), sk.admin(), &log, &up, &[req("/1"), req("/2")]);
    assert_eq!((run.status(0), run.status(1)), (200, 200));
    assert_eq!(run.upstream[0].header("x-rate-limited"), None);
    assert_eq!(run.upstream[1].header("x-rate-limited"), Some("yes"));
    assert_eq!(run.stat("shadow.http_local_rate_limit.rate_limited"), 1);
    assert_eq!(run.stat("shadow.http_local_rate_limit.enforced"), 0);
}

#[test]
fn faults_apply_only_to_matching_requests_and_max_active_faults_overflows() {
    let (sk, up, log) = start(
        r#"- name: envoy.filters.http.fault
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
    delay: { fixed_delay: 1s, percentage: { numerator: 100 } }
    abort: { http_status: 418, percentage: { numerator: 100 } }
    headers: [{ name: x-chaos, exact_match: "on" }]
    upstream_cluster: backend
    max_active_faults: 1
"#,
    );
    // The first faulted request holds the only active fault for its 1 s delay.
    let listener = sk.listener("main");
    let first = std::thread::spawn(move || {
        let mut c = support::Client::connect(listener);
        c.send(b"GET /first HTTP/1.1\r\nHost: test\r\nx-chaos: on\r\n\r\n");
        c.read_response(false).map(|r| r.status)
    });
    std::thread::sleep(Duration::from_millis(300));
    let run = filters::drive(
        listener,
        sk.admin(),
        &log,
        &up,
        &[req_with("/second", &[("x-chaos", "on")]), req("/plain"), req_with("/off", &[("x-chaos", "off")])],
    );
    assert_eq!(first.join().unwrap(), Some(418));
    assert_eq!((run.status(0), run.status(1), run.status(2)), (200, 200, 200));
    assert_eq!(run.stat("http.ingress.fault.faults_overflow"), 1);
    assert!(support::eventually(Duration::from_secs(5), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("418 DI,FI /first backend fault_filter_abort")
    }));
    assert_eq!(support::stat(sk.admin(), "http.ingress.fault.aborts_injected"), Some(1));
}

/// The issue's acceptance: the bucket is the process's, so at two shards the configured rate holds
/// within ±10 % over a load run from eight keep-alive clients (the kernel spreads their connections
/// over both shards' sockets). 100 requests per second, a 10-token burst, for about 2 s.
#[test]
fn the_local_rate_limit_holds_the_process_wide_rate_at_two_shards() {
    let (sk, _up, _log) = start(
        r#"- name: envoy.filters.http.local_ratelimit
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
    stat_prefix: rate
    token_bucket: { max_tokens: 10, tokens_per_fill: 10, fill_interval: 0.1s }
    filter_enabled: { default_value: { numerator: 100 } }
    filter_enforced: { default_value: { numerator: 100 } }
"#,
    );
    let addr = sk.listener("main");
    let started = std::time::Instant::now();
    let until = started + Duration::from_secs(2);
    let clients: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = support::Client::connect(addr);
                let (mut ok, mut limited) = (0u32, 0u32);
                while std::time::Instant::now() < until {
                    match c.get("/").status {
                        200 => ok += 1,
                        429 => limited += 1,
                        other => panic!("status {other}"),
                    }
                }
                (ok, limited)
            })
        })
        .collect();
    let (mut ok, mut limited) = (0u32, 0u32);
    for c in clients {
        let (o, l) = c.join().expect("client");
        ok += o;
        limited += l;
    }
    let elapsed = started.elapsed().as_secs_f64();
    // The burst, then 10 tokens every 100 ms.
    let expected = 10.0 + 100.0 * elapsed;
    let ratio = f64::from(ok) / expected;
    assert!(limited > ok, "the clients asked for more than the rate: {ok} allowed, {limited} limited");
    assert!((0.9..=1.1).contains(&ratio), "{ok} allowed in {elapsed:.2} s, expected {expected:.0}");
}
