//! Envoy parity for the CORS and CSRF filters: the same v3 config (Envoy's own `cors/backend` and
//! `csrf/samesite` examples' routes and filters, and a policy using every field) and the same
//! requests go through the real Envoy and through skiff, each in front of its own upstream. What
//! skiff answers itself (preflights, CSRF refusals, the router's failure reply) must have Envoy's
//! head line for line (the date masked); a proxied response Envoy's `access-control-*` headers in
//! Envoy's order; both the same status, body, access-log lines, `cors.*` / `csrf.*` stats and
//! upstream requests. Envoy is found via `$ENVOY_BIN` or PATH; without it these tests fail under CI
//! and skip elsewhere.

mod support;

#[path = "support/envoy.rs"]
mod envoy;

#[path = "support/cors.rs"]
mod cors_support;

use cors_support::{preflight, req, Req, Run};
use support::{scratch_dir, Skiff, TestUpstream};

fn run_envoy(bin: &std::path::Path, filters: &str, routes: &str, requests: &[Req]) -> Run {
    let dir = scratch_dir("parity-cors-envoy");
    let up = TestUpstream::echo();
    let log = dir.join("access.log");
    let e = envoy::Envoy::start(bin, &dir, |port, admin| {
        cors_support::config(port, admin, &log, up.addr, filters, routes)
    });
    let run = cors_support::drive(e.listener, e.admin, &log, &up, requests);
    drop(e);
    let _ = std::fs::remove_dir_all(&dir);
    run
}

fn run_skiff(filters: &str, routes: &str, requests: &[Req]) -> Run {
    let dir = scratch_dir("parity-cors-skiff");
    let up = TestUpstream::echo();
    let log = dir.join("access.log");
    let sk =
        Skiff::start(&cors_support::config(0, 0, &log, up.addr, filters, routes), &["--concurrency", "2"]);
    let run = cors_support::drive(sk.listener("main"), sk.admin(), &log, &up, requests);
    drop(sk);
    let _ = std::fs::remove_dir_all(&dir);
    run
}

/// (envoy, skiff), or None when Envoy is absent outside CI.
fn both(name: &str, filters: &str, routes: &str, requests: &[Req]) -> Option<(Run, Run)> {
    let bin = envoy::binary_or_skip(name)?;
    std::thread::scope(|s| {
        let e = s.spawn(|| run_envoy(&bin, filters, routes, requests));
        let k = s.spawn(|| run_skiff(filters, routes, requests));
        Some((e.join().expect("envoy side"), k.join().expect("skiff side")))
    })
}

/// What is compared, as lines.
fn render(run: &Run) -> Vec<String> {
    let mut out = Vec::new();
    let uuid = regex::Regex::new("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").unwrap();
    for (i, got) in run.responses.iter().enumerate() {
        let Some(g) = got else {
            out.push(format!("#{i} no response"));
            continue;
        };
        out.push(format!("#{i} {} {:?}", g.status(), uuid.replace_all(&g.body, "<uuid>")));
        // The proxy's own answers byte for byte; a relayed one by the headers the filter adds
        // (skiff orders the upstream's and its own headers differently, see README).
        let relayed = g.header("x-envoy-upstream-service-time").is_some();
        let lines = if relayed { g.cors_headers() } else { g.head() };
        out.extend(lines.into_iter().map(|l| format!("#{i}   {l}")));
    }
    let mut log = run.log.clone();
    log.sort();
    out.extend(log.iter().map(|l| format!("log {l}")));
    for (name, v) in &run.stats {
        if name.starts_with("http.ingress.cors.") || name.starts_with("http.ingress.csrf.") {
            out.push(format!("stat {name} = {v}"));
        }
    }
    out.extend(run.upstream.iter().map(|s| format!("upstream saw {} {}", s.method, s.path)));
    out
}

fn assert_same(envoy: &Run, skiff: &Run) {
    let (e, k) = (render(envoy), render(skiff));
    assert_eq!(e, k, "\nenvoy:\n{}\nskiff:\n{}", e.join("\n"), k.join("\n"));
}

const CORS_FILTER: &str = r#"- name: envoy.filters.http.cors
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors
"#;

/// The virtual host of Envoy's `cors/backend/envoy.yaml`, its cluster renamed `backend`.
const BACKEND_EXAMPLE_ROUTES: &str = r#"virtual_hosts:
  - name: www
    domains: ["*"]
    typed_per_filter_config:
      envoy.filters.http.cors:
        "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
        allow_origin_string_match:
        - safe_regex:
            regex: \*
        allow_methods: "GET"
        filter_enabled:
          default_value: { numerator: 100, denominator: HUNDRED }
          runtime_key: cors.www.enabled
        shadow_enabled:
          default_value: { numerator: 0, denominator: HUNDRED }
          runtime_key: cors.www.shadow_enabled
    routes:
      - match: { prefix: "/cors/open" }
        route: { cluster: backend }
      - match: { prefix: "/cors/disabled" }
        route: { cluster: backend }
        typed_per_filter_config:
          envoy.filters.http.cors:
            "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
            filter_enabled:
              default_value: { numerator: 0, denominator: HUNDRED }
      - match: { prefix: "/cors/restricted" }
        route: { cluster: backend }
        typed_per_filter_config:
          envoy.filters.http.cors:
            "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
            allow_origin_string_match:
            - safe_regex:
                regex: .*\.envoyproxy\.io
            allow_methods: "GET"
      - match: { prefix: "/" }
        route: { cluster: backend }
"#;

/// The example's three routes: `\*` allows any origin, the restricted route's own list replaces
/// it, the disabled route's `filter_enabled: 0` turns the filter off (the virtual host's origins
/// still apply elsewhere). A refused preflight goes to the upstream (forward_not_matching_preflights
/// defaults to true).
#[test]
fn cors_backend_example_preflights_and_actual_requests() {
    let requests = [
        preflight("/cors/open", "http://a.com", "GET"),
        preflight("/cors/restricted", "http://a.com", "GET"),
        preflight("/cors/restricted", "http://www.envoyproxy.io", "POST"),
        req("GET", "/cors/restricted", &[("origin", "http://www.envoyproxy.io")]),
        req("GET", "/cors/restricted", &[("origin", "http://a.com")]),
        req("GET", "/cors/disabled", &[("origin", "http://a.com")]),
        req("GET", "/cors/open", &[]),
        // OPTIONS without access-control-request-method is no preflight: forwarded, headers added.
        req("OPTIONS", "/cors/open", &[("origin", "http://b.com")]),
    ];
    let Some((e, k)) = both("cors_backend_example", CORS_FILTER, BACKEND_EXAMPLE_ROUTES, &requests) else {
        return;
    };
    assert_same(&e, &k);
    assert_eq!(k.got(0).status(), 200);
    assert_eq!(
        k.got(0).cors_headers(),
        ["access-control-allow-origin: http://a.com", "access-control-allow-methods: GET"]
    );
    assert_eq!(k.got(0).header("content-length"), Some("0"));
    assert!(k.got(1).cors_headers().is_empty(), "{:?}", k.got(1));
    assert_eq!(k.got(3).header("access-control-allow-origin"), Some("http://www.envoyproxy.io"));
    assert_eq!(k.got(4).header("access-control-allow-origin"), None);
    assert_eq!(k.stat("http.ingress.cors.origin_valid"), 4);
    assert_eq!(k.stat("http.ingress.cors.origin_invalid"), 2);
    assert_eq!(k.upstream.len(), 6, "the two allowed preflights never reach the upstream");
}

/// Every field of a policy, from the virtual host's and the route's `cors` fields (no per-filter
/// policy applies, so they count): credentials, `*` methods and headers echoed from the request,
/// max age, private network access, expose headers on the actual response (and on the preflight
/// answer), `forward_not_matching_preflights: false` answering a refused preflight itself, CORS
/// headers on the router's own 503, and none on a direct response (it has no route entry).
#[test]
fn cors_policy_fields_and_the_route_and_virtual_host_cors_fields() {
    let routes = r#"virtual_hosts:
  - name: www
    domains: ["*"]
    cors:
      allow_origin_string_match: [{ exact: "http://a.com" }, { prefix: "http://pre" }]
      allow_methods: "GET, POST"
      allow_headers: "*"
      expose_headers: "x-exp"
      max_age: "600"
      allow_credentials: true
      allow_private_network_access: true
    routes:
      - match: { prefix: "/dead" }
        route: { cluster: dead }
      - match: { prefix: "/direct" }
        direct_response: { status: 200, body: { inline_string: hi } }
      - match: { prefix: "/rc" }
        route:
          cluster: backend
          cors:
            allow_origin_string_match: [{ exact: "http://b.com" }]
            allow_methods: "*"
            forward_not_matching_preflights: false
      - match: { prefix: "/" }
        route: { cluster: backend }
"#;
    let requests = [
        req(
            "OPTIONS",
            "/x",
            &[
                ("origin", "http://a.com"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "x-a, x-b"),
                ("access-control-request-private-network", "true"),
            ],
        ),
        preflight("/x", "http://nope.com", "PUT"),
        req("GET", "/x", &[("origin", "http://prefix.com")]),
        req("GET", "/dead", &[("origin", "http://a.com")]),
        req("GET", "/direct", &[("origin", "http://a.com")]),
        preflight("/rc", "http://a.com", "PUT"),
        preflight("/rc", "http://b.com", "DELETE"),
        // A repeated origin is one value joined by ",": no exact match, a prefix match.
        req(
            "OPTIONS",
            "/x",
            &[
                ("origin", "http://prefix.com"),
                ("origin", "http://a.com"),
                ("access-control-request-method", "GET"),
            ],
        ),
    ];
    let Some((e, k)) = both("cors_policy_fields", CORS_FILTER, routes, &requests) else { return };
    assert_same(&e, &k);
    assert_eq!(
        k.got(0).cors_headers(),
        [
            "access-control-allow-origin: http://a.com",
            "access-control-allow-credentials: true",
            "access-control-allow-methods: GET, POST",
            "access-control-allow-headers: x-a, x-b",
            "access-control-max-age: 600",
            "access-control-allow-private-network: true",
            "access-control-expose-headers: x-exp",
        ]
    );
    assert_eq!(k.got(3).status(), 503);
    assert_eq!(k.got(3).header("access-control-allow-origin"), Some("http://a.com"));
    assert!(k.got(4).cors_headers().is_empty());
    // Refused, not forwarded: no allow-origin, the rest of the policy still said.
    assert_eq!(k.got(5).header("access-control-allow-origin"), None);
    assert_eq!(k.got(5).header("access-control-allow-methods"), Some("PUT"));
    assert_eq!(k.got(6).header("access-control-allow-methods"), Some("DELETE"));
    assert_eq!(k.got(7).header("access-control-allow-origin"), Some("http://prefix.com,http://a.com"));
}

/// Envoy's `csrf/samesite/envoy.yaml`: the connection manager's csrf filter is off (0 %), the
/// virtual host's policy turns it on, one route off, one in shadow mode, one with `.*` as an
/// additional origin; the cors filter before it allows every origin.
const CSRF_FILTERS: &str = r#"- name: envoy.filters.http.cors
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors
- name: envoy.filters.http.csrf
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy
    filter_enabled:
      default_value: { numerator: 0, denominator: HUNDRED }
"#;

const CSRF_ROUTES: &str = r#"virtual_hosts:
  - name: www
    domains: ["*"]
    typed_per_filter_config:
      envoy.filters.http.cors:
        "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
        allow_origin_string_match: [{ safe_regex: { regex: \* } }]
        filter_enabled: { default_value: { numerator: 100, denominator: HUNDRED } }
      envoy.filters.http.csrf:
        "@type": type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy
        filter_enabled: { default_value: { numerator: 100, denominator: HUNDRED }, runtime_key: csrf.www.enabled }
        shadow_enabled: { default_value: { numerator: 0, denominator: HUNDRED }, runtime_key: csrf.www.shadow_enabled }
    routes:
      - match: { prefix: "/csrf/disabled" }
        route: { cluster: backend }
        typed_per_filter_config:
          envoy.filters.http.csrf:
            "@type": type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy
            filter_enabled: { default_value: { numerator: 0, denominator: HUNDRED } }
      - match: { prefix: "/csrf/shadow" }
        route: { cluster: backend }
        typed_per_filter_config:
          envoy.filters.http.csrf:
            "@type": type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy
            filter_enabled: { default_value: { numerator: 0, denominator: HUNDRED } }
            shadow_enabled: { default_value: { numerator: 100, denominator: HUNDRED } }
      - match: { prefix: "/csrf/additional_origin" }
        route: { cluster: backend }
        typed_per_filter_config:
          envoy.filters.http.csrf:
            "@type": type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy
            filter_enabled: { default_value: { numerator: 100, denominator: HUNDRED } }
            additional_origins: [{ safe_regex: { regex: .* } }]
      - match: { prefix: "/" }
        route: { cluster: backend }
"#;

fn on(host: &'static str, mut r: Req) -> Req {
    r.host = host;
    r
}

/// Same origin passes; another origin, no origin and `origin: null` get 403 `Invalid origin` (the
/// allowed origin's CORS header on it); a referer stands in for a missing origin; the disabled,
/// shadowed and additional-origin routes forward; a GET is never checked.
#[test]
fn csrf_samesite_example_allows_same_origin_and_refuses_the_rest() {
    let requests = [
        on("localhost:10000", req("POST", "/x", &[("origin", "http://localhost:10000")])),
        on("localhost:10000", req("POST", "/x", &[("origin", "http://evil.com")])),
        on("localhost", req("PATCH", "/x", &[])),
        on("localhost", req("PUT", "/x", &[("referer", "http://localhost/page?q")])),
        on("localhost", req("POST", "/csrf/disabled", &[("origin", "http://evil.com")])),
        on("localhost", req("POST", "/csrf/shadow", &[("origin", "http://evil.com")])),
        on("localhost", req("POST", "/csrf/additional_origin", &[("origin", "http://evil.com")])),
        on("localhost", req("GET", "/x", &[("origin", "http://evil.com")])),
        on("localhost", req("DELETE", "/x", &[("origin", "null"), ("referer", "http://localhost/")])),
        on("localhost:80", req("POST", "/x", &[("origin", "http://user@localhost:80/")])),
        on("LOCALHOST", req("POST", "/x", &[("origin", "http://localhost")])),
    ];
    let Some((e, k)) = both("csrf_samesite", CSRF_FILTERS, CSRF_ROUTES, &requests) else { return };
    assert_same(&e, &k);
    assert_eq!((k.got(1).status(), k.got(1).body.as_str()), (403, "Invalid origin"));
    assert_eq!(k.got(1).header("access-control-allow-origin"), Some("http://evil.com"));
    assert_eq!((k.got(2).status(), k.got(8).status(), k.got(10).status()), (403, 403, 403));
    assert_eq!(k.stat("http.ingress.csrf.request_valid"), 4);
    assert_eq!(k.stat("http.ingress.csrf.request_invalid"), 3);
    assert_eq!(k.stat("http.ingress.csrf.missing_source_origin"), 2);
    assert!(k.log.contains(&"403 - /x backend csrf_origin_mismatch".to_string()), "{:?}", k.log);
}
