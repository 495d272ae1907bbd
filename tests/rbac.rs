//! `envoy.filters.http.rbac` as a user sees it beyond what the parity suite drives: Envoy's
//! `rbac/envoy.yaml` example (the matcher API) loads unchanged and judges by referer; what skiff does
//! not build (CEL conditions, metadata, filter state, the matcher API's trees, custom matches and
//! other inputs) is refused with the field's path; the shipped `configs/security/rbac.yaml` loads; an RBAC config survives `/config_dump`;
//! its counters exist from the start; `use_remote_address` makes `remote_ip` the socket's peer;
//! and `authenticated` never matches a plaintext connection. Real skiff, real loopback upstream.

mod support;

use skiff::admin::config_dump::render_bootstrap;
use skiff::config::load_str;
use support::filters::{self, req, req_with, validate, ALL_TO_BACKEND};
use support::{scratch_dir, Skiff, TestUpstream};

fn with_filter(filter: &str, routes: &str) -> String {
    let log = scratch_dir("rbac-config").join("a.log");
    filters::config(0, 0, &log, "127.0.0.1:9".parse().unwrap(), filter, routes)
}

/// An RBAC filter whose config (below `typed_config`, at column 4) is `body`.
fn rbac(body: &str) -> String {
    format!(
        "- name: envoy.filters.http.rbac\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC\n{body}"
    )
}

/// `rules` with one policy `p` whose permission and principal are the given one-line mappings.
fn policy(permission: &str, principal: &str) -> String {
    rbac(&format!(
        "    rules:\n      action: ALLOW\n      policies:\n        p:\n          permissions: [{permission}]\n          principals: [{principal}]\n"
    ))
}

#[test]
fn what_skiff_does_not_build_is_refused_with_its_path() {
    let at = "typed_config.rules.policies.p";
    for (filter, expected) in [
        (
            rbac("    track_per_rule_stats: true\n"),
            "typed_config.track_per_rule_stats: track_per_rule_stats is not supported".to_string(),
        ),
        (
            rbac("    rules:\n      policies:\n        p:\n          permissions: [{ any: true }]\n          principals: [{ any: true }]\n          condition: { const_expr: { bool_value: true } }\n"),
            format!("{at}.condition: condition is not supported: skiff has no CEL"),
        ),
        (
            policy("{ metadata: { filter: f, path: [{ key: k }], value: { present_match: true } } }", "{ any: true }"),
            format!("{at}.permissions[0].metadata: metadata is not supported"),
        ),
        (
            policy("{ any: true }", "{ filter_state: { key: k, string_match: { exact: v } } }"),
            format!("{at}.principals[0].filter_state: filter_state is not supported"),
        ),
        (
            policy("{ and_rules: { rules: [{ any: true }, { uri_template: { name: x } }] } }", "{ any: true }"),
            format!("{at}.permissions[0].and_rules.rules[1].uri_template: uri_template is not supported"),
        ),
        (
            policy("{ any: true, destination_port: 80 }", "{ any: true }"),
            format!("{at}.permissions[0]: a permission takes only one rule, got any, destination_port"),
        ),
        (policy("{ any: false }", "{ any: true }"), format!("{at}.permissions[0].any: any must be true")),
        (
            policy("{ url_path: { path: { safe_regex: { regex: \"a\" }, ignore_case: true } } }", "{ any: true }"),
            format!("{at}.permissions[0].url_path.path.ignore_case: ignore_case has no effect for safe_regex"),
        ),
        (
            policy("{ any: true }", "{ remote_ip: { address_prefix: 10.0.0.0, prefix_len: 33 } }"),
            format!("{at}.principals[0].remote_ip.prefix_len: prefix_len must be at most 32, got 33"),
        ),
        (
            rbac("    rules:\n      policies:\n        p:\n          permissions: []\n          principals: [{ any: true }]\n"),
            format!("{at}.permissions: a policy needs at least one permission"),
        ),
        (
            rbac("    rules: { action: MAYBE }\n"),
            "typed_config.rules.action: unknown action \"MAYBE\", expected ALLOW, DENY or LOG".to_string(),
        ),
        (
            "- name: envoy.filters.http.rbac\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute\n".to_string(),
            "RBACPerRoute belongs in typed_per_filter_config".to_string(),
        ),
    ] {
        let (ok, log) = validate(&with_filter(&filter, ALL_TO_BACKEND));
        assert!(!ok, "accepted:\n{filter}");
        assert!(log.contains(&expected), "for\n{filter}\nexpected {expected:?} in:\n{log}");
    }
    // x-forwarded-client-cert: what skiff does not write is refused too.
    let hcm = |extra: &str| {
        with_filter("", ALL_TO_BACKEND)
            .replace("stat_prefix: ingress\n", &format!("stat_prefix: ingress\n                {extra}\n"))
    };
    for (yaml, expected) in [
        (
            hcm("set_current_client_cert_details: { chain: true }"),
            "set_current_client_cert_details.chain: chain is not supported",
        ),
        (hcm("forward_client_cert_details: SOMETIMES"), "unknown forward_client_cert_details \"SOMETIMES\""),
    ] {
        let (ok, log) = validate(&yaml);
        assert!(!ok && log.contains(expected), "expected {expected:?} in:\n{log}");
    }
    // A route's entry must be RBACPerRoute, as Envoy's per-route factory requires.
    let routes = "virtual_hosts:\n  - name: all\n    domains: [\"*\"]\n    routes:\n      - match: { prefix: \"/\" }\n        route: { cluster: backend }\n        typed_per_filter_config:\n          envoy.filters.http.rbac:\n            \"@type\": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC\n";
    let (ok, log) = validate(&with_filter(&rbac("    rules: {}\n"), routes));
    assert!(!ok && log.contains("a per-route RBAC config is type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute"), "{log}");
}

const EXAMPLE: &str = "configs/envoy-examples/envoyproxy-examples/rbac/envoy.yaml";

#[test]
fn envoys_rbac_example_loads_unchanged_and_judges_by_referer_as_its_readme_says() {
    let path = format!("{}/{EXAMPLE}", env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(&path).expect("the example");
    let (ok, log) = validate(&example);
    assert!(ok && !log.contains("[warning]"), "{log}");
    let up = TestUpstream::echo();
    // Only the addresses change: the compose hostname becomes the loopback server.
    let yaml = example
        .replace("type: STRICT_DNS", "type: STATIC")
        .replace("port_value: 10000", "port_value: 0")
        .replace("port_value: 10001", "port_value: 0")
        .replace(
            "address: backend\n                port_value: 8080",
            &format!("address: 127.0.0.1\n                port_value: {}", up.addr.port()),
        );
    assert_ne!(yaml, example, "the example's addresses were found");
    let sk = Skiff::start(&yaml, &[]);
    let addr = sk.listener("listener_0");
    let denied = support::get(addr, "/");
    assert_eq!((denied.status, denied.text()), (403, "RBAC: access denied".to_string()));
    let allowed =
        support::get_host(addr, "localhost", "/", &[("referer", "https://www.envoyproxy.io/docs/envoy")]);
    assert_eq!(allowed.status, 200);
    // A repeated header is read joined with `,`: the first line decides the regex's start.
    let joined = support::get_host(
        addr,
        "localhost",
        "/",
        &[("referer", "http://envoyproxy.io/docs/envoy"), ("referer", "x")],
    );
    assert_eq!(joined.status, 200);
    let joined = support::get_host(
        addr,
        "localhost",
        "/",
        &[("referer", "x"), ("referer", "http://envoyproxy.io/docs/envoy")],
    );
    assert_eq!(joined.status, 403);
    for (name, n) in [("allowed", 2), ("denied", 2), ("shadow_allowed", 0), ("shadow_denied", 0)] {
        assert_eq!(support::stat(sk.admin(), &format!("http.ingress_http.rbac.{name}")), Some(n), "{name}");
    }
}

#[test]
fn what_the_matcher_api_does_not_build_is_refused_with_its_path() {
    let at = "typed_config.matcher";
    let input = |ty: &str| format!("{{ name: i, typed_config: {{ \"@type\": {ty} }} }}");
    let header =
        input("type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput, header_name: x");
    let action = "{ action: { name: a, typed_config: { \"@type\": type.googleapis.com/envoy.config.rbac.v3.Action, name: n } } }";
    let one = |predicate: &str, on_match: &str| {
        rbac(&format!(
            "    matcher:\n      matcher_list:\n        matchers:\n          - predicate: {predicate}\n            on_match: {on_match}\n"
        ))
    };
    for (filter, expected) in [
        (
            rbac("    matcher: { matcher_tree: { input: { name: i, typed_config: {} }, exact_match_map: { map: {} } } }\n"),
            format!("{at}.matcher_tree: matcher_tree is not supported"),
        ),
        (rbac("    shadow_matcher: {}\n"), "typed_config.shadow_matcher.matcher_list: a matcher needs a matcher_list".to_string()),
        (
            one(&format!("{{ single_predicate: {{ input: {header}, custom_match: {{ name: c }} }} }}"), action),
            format!("{at}.matcher_list.matchers[0].predicate.single_predicate.custom_match: custom_match is not supported"),
        ),
        (
            one(
                &format!(
                    "{{ not_matcher: {{ single_predicate: {{ input: {}, value_match: {{ exact: a }} }} }} }}",
                    input("type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.SourcePortInput")
                ),
                action,
            ),
            format!("{at}.matcher_list.matchers[0].predicate.not_matcher.single_predicate.input.typed_config.@type: input type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.SourcePortInput is not supported"),
        ),
        (
            one(&format!("{{ single_predicate: {{ input: {header}, value_match: {{ exact: a }} }} }}"), "{ matcher: { matcher_list: { matchers: [] } } }"),
            format!("{at}.matcher_list.matchers[0].on_match.matcher: a nested matcher is not supported"),
        ),
        (
            one(
                &format!("{{ single_predicate: {{ input: {header}, value_match: {{ exact: a }} }} }}"),
                "{ action: { name: a, typed_config: { \"@type\": type.googleapis.com/envoy.config.rbac.v3.Action, action: MAYBE } } }",
            ),
            format!("{at}.matcher_list.matchers[0].on_match.action.typed_config.action: unknown action \"MAYBE\""),
        ),
        (
            one(&format!("{{ single_predicate: {{ input: {header}, value_match: {{ safe_regex: {{ regex: a }} }} }} }}"), action),
            format!("{at}.matcher_list.matchers[0].predicate.single_predicate.value_match.safe_regex.google_re2: google_re2 is required here"),
        ),
    ] {
        let (ok, log) = validate(&with_filter(&filter, ALL_TO_BACKEND));
        assert!(!ok, "accepted:\n{filter}");
        assert!(log.contains(&expected), "for\n{filter}\nexpected {expected:?} in:\n{log}");
    }
}

#[test]
fn the_shipped_config_loads_with_real_certificates_in_place() {
    let path = format!("{}/configs/security/rbac.yaml", env!("CARGO_MANIFEST_DIR"));
    let certs = support::tls::shared();
    let yaml = std::fs::read_to_string(path)
        .unwrap()
        .replace("/etc/skiff/tls/server.crt", &certs.path("a.crt"))
        .replace("/etc/skiff/tls/server.key", &certs.path("a.key"))
        .replace("/etc/skiff/tls/clients-ca.crt", &certs.path("ca.crt"));
    let (ok, log) = validate(&yaml);
    assert!(ok, "{log}");
    assert!(!log.contains("warn"), "{log}");
}

#[test]
fn an_rbac_config_loads_back_from_its_dump() {
    let filter = rbac(
        r#"    rules_stat_prefix: r
    shadow_rules_stat_prefix: s
    rules:
      action: DENY
      policies:
        b:
          permissions:
            - or_rules: { rules: [{ destination_port: 80 }, { destination_port_range: { start: 1, end: 9 } }] }
            - not_rule: { requested_server_name: { suffix: ".x", ignore_case: true } }
            - header: { name: ":method", string_match: { exact: GET } }
          principals:
            - and_ids: { ids: [{ authenticated: {} }, { authenticated: { principal_name: { safe_regex: { regex: "a.*" } } } }] }
            - not_id: { direct_remote_ip: { address_prefix: "::1", prefix_len: 128 } }
            - url_path: { path: { contains: x } }
        a:
          permissions: [{ destination_ip: { address_prefix: 10.1.0.0, prefix_len: 16 } }]
          principals: [{ source_ip: { address_prefix: 10.0.0.0 } }, { remote_ip: { address_prefix: 10.0.0.0, prefix_len: 8 } }]
    shadow_rules: { action: LOG }
"#,
    );
    let routes = "virtual_hosts:\n  - name: all\n    domains: [\"*\"]\n    typed_per_filter_config:\n      envoy.filters.http.rbac:\n        \"@type\": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute\n        rbac: { rules: { action: LOG } }\n    routes:\n      - match: { prefix: \"/\" }\n        route: { cluster: backend }\n        typed_per_filter_config:\n          envoy.filters.http.rbac:\n            \"@type\": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute\n            rbac: {}\n";
    let original =
        load_str(&with_filter(&filter, routes), "rbac").unwrap_or_else(|e| panic!("{e}")).bootstrap;
    let dump = serde_json::to_string(&render_bootstrap(&original)["configs"][0]["bootstrap"]).unwrap();
    let back = load_str(&dump, "dump").unwrap_or_else(|e| panic!("{e}\n{dump}")).bootstrap;
    assert_eq!(back, original, "{dump}");
}

fn start(filter: &str) -> (Skiff, TestUpstream, std::path::PathBuf) {
    let up = TestUpstream::echo();
    let log = scratch_dir("rbac-run").join("access.log");
    let sk = Skiff::start(&filters::config(0, 0, &log, up.addr, filter, ALL_TO_BACKEND), &[]);
    (sk, up, log)
}

#[test]
fn counters_exist_from_the_start_and_a_plaintext_client_is_never_authenticated() {
    let filter = policy("{ any: true }", "{ authenticated: {} }")
        + "    shadow_rules: { action: DENY, policies: { all: { permissions: [{ any: true }], principals: [{ any: true }] } } }\n";
    let (sk, up, log) = start(&filter);
    let stats = support::admin_request(sk.admin(), "GET", "/stats").1;
    for name in ["rbac.allowed: 0", "rbac.denied: 0", "rbac.shadow_allowed: 0", "rbac.shadow_denied: 0"] {
        assert!(stats.contains(&format!("http.ingress.{name}")), "{name} in\n{stats}");
    }
    let run = filters::drive(sk.listener("main"), sk.admin(), &log, &up, &[req("/x")]);
    assert_eq!(run.status(0), 403);
    assert_eq!(run.response(0).text(), "RBAC: access denied");
    assert_eq!(run.log, vec!["403 - /x backend rbac_access_denied_matched_policy[none]"]);
    assert!(up.requests().is_empty());
    assert_eq!(run.stat("http.ingress.rbac.denied"), 1);
    assert_eq!(run.stat("http.ingress.rbac.shadow_denied"), 1);
}

#[test]
fn with_use_remote_address_remote_ip_is_the_peer_not_x_forwarded_for() {
    let filter = policy("{ any: true }", "{ remote_ip: { address_prefix: 127.0.0.1, prefix_len: 32 } }");
    let up = TestUpstream::echo();
    let log = scratch_dir("rbac-remote").join("access.log");
    let yaml = filters::config(0, 0, &log, up.addr, &filter, ALL_TO_BACKEND).replace(
        "stat_prefix: ingress\n",
        "stat_prefix: ingress\n                use_remote_address: true\n",
    );
    assert!(yaml.contains("use_remote_address: true"));
    let sk = Skiff::start(&yaml, &[]);
    let run = filters::drive(
        sk.listener("main"),
        sk.admin(),
        &log,
        &up,
        &[req_with("/a", &[("x-forwarded-for", "10.9.9.9")]), req("/b")],
    );
    // The peer is 127.0.0.1 either way; without use_remote_address the first would be 10.9.9.9.
    assert_eq!((run.status(0), run.status(1)), (200, 200));
    assert_eq!(run.stat("http.ingress.rbac.allowed"), 2);
}
