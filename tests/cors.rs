//! The CORS and CSRF filters as a user sees them, beyond what the parity suite drives: Envoy's
//! `cors/` and `csrf/` example configs load unchanged and without a warning, what the filters'
//! configs get wrong is refused with its location, shadow modes count without acting, a policy on
//! the connection manager applies to every route until one overrides it, and an upstream's own
//! `access-control-*` headers are not sent twice. Real skiff, real loopback upstream.

mod support;

#[path = "support/cors.rs"]
mod cors_support;

use cors_support::{preflight, req};
use support::filters::ALL_TO_BACKEND;
use support::{scratch_dir, Reply, Skiff, TestUpstream};

fn validate(path: &std::path::Path) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["--mode", "validate", "-c"])
        .arg(path)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn validate_yaml(yaml: &str) -> (bool, String) {
    let path = scratch_dir("cors-validate").join("envoy.yaml");
    std::fs::write(&path, yaml).unwrap();
    validate(&path)
}

#[test]
fn envoys_cors_and_csrf_examples_load_unchanged_without_a_warning() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/envoy-examples/envoyproxy-examples");
    for file in [
        "cors/frontend/envoy.yaml",
        "cors/backend/envoy.yaml",
        "csrf/samesite/envoy.yaml",
        "csrf/crosssite/envoy.yaml",
    ] {
        let (ok, log) = validate(&dir.join(file));
        assert!(ok, "{file}: {log}");
        assert!(!log.contains("[warning]"), "{file}: {log}");
    }
}

fn config(filters: &str, routes: &str) -> String {
    let log = scratch_dir("cors-config").join("a.log");
    cors_support::config(0, 0, &log, "127.0.0.1:9".parse().unwrap(), filters, routes)
}

const CORS: &str = "- name: envoy.filters.http.cors\n  typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors }\n";

fn routes_with_vhost(extra: &str) -> String {
    format!(
        "virtual_hosts:\n  - name: all\n    domains: [\"*\"]\n{extra}    routes:\n      - match: {{ prefix: \"/\" }}\n        route: {{ cluster: backend }}\n"
    )
}

#[test]
fn what_the_filters_refuse_is_located() {
    let per_route = |entry: &str| {
        routes_with_vhost(&format!("    typed_per_filter_config:\n      envoy.filters.http.cors:\n{entry}"))
    };
    for (yaml, expected) in [
        (
            config(
                "- name: envoy.filters.http.cors\n  typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy }\n",
                ALL_TO_BACKEND,
            ),
            "the cors filter's typed_config is a type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors",
        ),
        (
            config(CORS, &per_route("        \"@type\": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors\n")),
            "a per-route cors config is a type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
        ),
        (
            config(
                "- name: envoy.filters.http.csrf\n  typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy }\n",
                ALL_TO_BACKEND,
            ),
            "typed_config.filter_enabled: filter_enabled is required",
        ),
        (
            config(CORS, &routes_with_vhost("    cors: { allow_origin: [\"*\"] }\n")),
            "virtual_hosts[0].cors.allow_origin: unknown field `allow_origin`",
        ),
        (
            config(CORS, &routes_with_vhost("    cors: { allow_origin_string_match: [{ safe_regex: { regex: \"(\" } }] }\n")),
            "cors.allow_origin_string_match[0].safe_regex.regex: invalid regex",
        ),
        (
            config(CORS, &routes_with_vhost("    cors: { allow_methods: \"GET\\r\\nx-evil: 1\" }\n")),
            "cors.allow_methods: allow_methods",
        ),
        (
            config(CORS, &routes_with_vhost("    cors: { allow_origin_string_match: [{ prefix: \"\" }] }\n")),
            "prefix, suffix and contains must not be empty",
        ),
    ] {
        let (ok, log) = validate_yaml(&yaml);
        assert!(!ok && log.contains(expected), "expected {expected:?} in:\n{log}");
        assert!(log.contains("envoy.yaml:"), "{log}");
    }
}

/// skiff in front of `up` with `filters` and `routes`.
struct Proxy {
    sk: Skiff,
    log: std::path::PathBuf,
    up: TestUpstream,
}

impl Proxy {
    fn start(filters: &str, routes: &str, up: TestUpstream) -> Proxy {
        let log = scratch_dir("cors").join("access.log");
        let sk = Skiff::start(
            &cors_support::config(0, 0, &log, up.addr, filters, routes),
            &["--concurrency", "2"],
        );
        Proxy { sk, log, up }
    }

    fn run(&self, requests: &[cors_support::Req]) -> cors_support::Run {
        cors_support::drive(self.sk.listener("main"), self.sk.admin(), &self.log, &self.up, requests)
    }
}

/// `shadow_enabled` with the filter off: origins are counted, nothing is added or answered.
#[test]
fn cors_shadow_mode_counts_origins_and_changes_nothing() {
    let up = TestUpstream::echo();
    let routes = routes_with_vhost(
        "    cors:\n      allow_origin_string_match: [{ exact: \"http://a.com\" }]\n      filter_enabled: { default_value: { numerator: 0 } }\n      shadow_enabled: { default_value: { numerator: 100 } }\n",
    );
    let proxy = Proxy::start(CORS, &routes, up);
    let run = proxy.run(&[
        preflight("/p", "http://a.com", "GET"),
        req("GET", "/g", &[("origin", "http://a.com")]),
        req("GET", "/g", &[("origin", "http://b.com")]),
    ]);
    assert!(run.responses.iter().flatten().all(|g| g.cors_headers().is_empty()), "{:?}", run.responses);
    assert_eq!(run.upstream.len(), 3, "the preflight is forwarded");
    assert_eq!(run.stat("http.ingress.cors.origin_valid"), 2);
    assert_eq!(run.stat("http.ingress.cors.origin_invalid"), 1);
}

/// The connection manager's CsrfPolicy applies everywhere until a virtual host's replaces it;
/// a refusal is logged `403 -` with the route's cluster and nothing reaches the upstream.
#[test]
fn a_connection_manager_csrf_policy_applies_until_a_virtual_host_overrides_it() {
    let up = TestUpstream::echo();
    let csrf = "- name: envoy.filters.http.csrf\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy\n    filter_enabled: { default_value: { numerator: 100 } }\n    additional_origins: [{ suffix: \".trusted.com\" }]\n";
    let routes = r#"virtual_hosts:
  - name: open
    domains: ["open"]
    typed_per_filter_config:
      envoy.filters.http.csrf:
        "@type": type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy
        filter_enabled: { default_value: { numerator: 0 } }
    routes:
      - match: { prefix: "/" }
        route: { cluster: backend }
  - name: all
    domains: ["*"]
    routes:
      - match: { prefix: "/" }
        route: { cluster: backend }
"#;
    let proxy = Proxy::start(csrf, routes, up);
    let mut on_open = req("POST", "/open", &[("origin", "http://evil.com")]);
    on_open.host = "open";
    let run = proxy.run(&[
        req("POST", "/x", &[("origin", "http://evil.com")]),
        req("DELETE", "/x", &[("origin", "https://api.trusted.com")]),
        on_open,
    ]);
    assert_eq!((run.got(0).status(), run.got(0).body.as_str()), (403, "Invalid origin"));
    assert_eq!(run.got(0).header("content-type"), Some("text/plain"));
    assert_eq!((run.got(1).status(), run.got(2).status()), (200, 200));
    assert_eq!(run.upstream.len(), 2);
    assert!(run.log.contains(&"403 - /x backend csrf_origin_mismatch".to_string()), "{:?}", run.log);
    assert_eq!(run.stat("http.ingress.csrf.request_invalid"), 1);
    assert_eq!(run.stat("http.ingress.csrf.request_valid"), 1);
}

/// A backend that answers CORS itself: the filter's allow-origin and expose headers replace the
/// upstream's in place (Envoy's `setInline`), so a browser never sees two values.
#[test]
fn the_filters_cors_headers_replace_the_upstreams_own() {
    let up = TestUpstream::start(std::sync::Arc::new(|_: &support::Seen| Reply::Full {
        status: 200,
        headers: vec![
            ("access-control-allow-origin".into(), "*".into()),
            ("x-a".into(), "1".into()),
            ("access-control-expose-headers".into(), "up".into()),
        ],
        body: b"ok".to_vec(),
    }));
    let routes = routes_with_vhost(
        "    cors:\n      allow_origin_string_match: [{ exact: \"http://a.com\" }]\n      expose_headers: x-exp\n      allow_credentials: true\n",
    );
    let proxy = Proxy::start(CORS, &routes, up);
    let run = proxy.run(&[req("GET", "/", &[("origin", "http://a.com")])]);
    assert_eq!(
        run.got(0).cors_headers(),
        [
            "access-control-allow-origin: http://a.com",
            "access-control-expose-headers: x-exp",
            "access-control-allow-credentials: true",
        ]
    );
}

/// `/config_dump` writes the filters, their per-route policies and the `cors` fields so that the
/// dump loads back into the same model (every field, `ignore_case` and unset ones included).
#[test]
fn cors_and_csrf_configs_survive_the_config_dump() {
    let filters = "- name: envoy.filters.http.cors\n  typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors }\n- name: my-csrf\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy\n    filter_enabled: { default_value: { numerator: 5, denominator: TEN_THOUSAND } }\n    additional_origins: [{ contains: trusted, ignore_case: true }]\n";
    let routes = r#"virtual_hosts:
  - name: all
    domains: ["*"]
    cors:
      allow_origin_string_match: [{ exact: "http://a.com" }, { suffix: ".io", ignore_case: true }]
      allow_methods: GET
      allow_headers: "*"
      expose_headers: x-exp
      max_age: "60"
      allow_credentials: false
      allow_private_network_access: true
      filter_enabled: { default_value: { numerator: 50 } }
      shadow_enabled: { default_value: { numerator: 100 } }
    typed_per_filter_config:
      my-csrf:
        "@type": type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy
        filter_enabled: { default_value: { numerator: 100 } }
    routes:
      - match: { prefix: "/r" }
        route:
          cluster: backend
          cors: { allow_origin_string_match: [{ safe_regex: { regex: ".*" } }], forward_not_matching_preflights: false }
        typed_per_filter_config:
          envoy.filters.http.cors:
            "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
            allow_methods: PUT
      - match: { prefix: "/" }
        route: { cluster: backend }
"#;
    let loaded = skiff::config::load_str(&config(filters, routes), "cors.yaml").expect("loads").bootstrap;
    let dump = skiff::admin::config_dump::render_bootstrap(&loaded);
    let bootstrap = dump["configs"]
        .as_array()
        .and_then(|c| {
            c.iter().find(|c| c["@type"].as_str().is_some_and(|t| t.ends_with("BootstrapConfigDump")))
        })
        .map(|c| &c["bootstrap"])
        .expect("a BootstrapConfigDump");
    let text = serde_json::to_string_pretty(bootstrap).expect("json");
    let again =
        skiff::config::load_str(&text, "dump.json").unwrap_or_else(|e| panic!("{e}\n{text}")).bootstrap;
    assert_eq!(again, loaded, "{text}");
}
