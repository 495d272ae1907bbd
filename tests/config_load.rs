//! What an operator sees when pointing skiff at their Envoy YAML: the walkthrough files load
//! unchanged, and every mistake is reported as `origin:line:column: field.path: message`.

use skiff::config::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn example(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/envoy-examples").join(rel)
}

fn load_example(rel: &str) -> Loaded {
    load_file(&example(rel)).unwrap_or_else(|e| panic!("{rel} should load: {e}"))
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn cluster<'a>(b: &'a Bootstrap, name: &str) -> &'a Cluster {
    b.clusters.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("cluster {name}"))
}

fn first_forward(l: &Listener) -> &ForwardAction {
    match &l.hcm.route_config.virtual_hosts[0].routes[0].action {
        RouteAction::Forward(f) => f,
        other => panic!("expected a forward action, got {other:?}"),
    }
}

fn err(text: &str) -> String {
    match load_str(text, "skiff.yaml") {
        Ok(l) => panic!("expected an error, loaded {:?}", l.bootstrap),
        Err(e) => e.to_string(),
    }
}

#[test]
fn front_envoy_loads_with_a_warning_for_the_filter_chains_mapping() {
    let path = example("seed/front-envoy.yaml");
    let loaded = load_file(&path).expect("front-envoy.yaml loads");
    let b = &loaded.bootstrap;
    let admin = b.admin.as_ref().expect("admin");
    assert_eq!(admin.address, addr("127.0.0.1:9901"));
    assert_eq!(admin.access_log_path.as_deref(), Some("/tmp/admin_access.log"));
    assert_eq!(b.listeners.len(), 1);
    let l = &b.listeners[0];
    assert_eq!(l.name, "http_listener");
    assert_eq!(l.address, addr("0.0.0.0:80"));
    assert_eq!(l.hcm.stat_prefix, "ingress");
    assert_eq!(l.hcm.http_filters, vec![HttpFilter::Router]);
    assert_eq!(l.hcm.route_config.virtual_hosts[0].domains, vec!["*"]);
    let f = first_forward(l);
    assert_eq!(f.cluster, ClusterSpecifier::Single("service_a".into()));
    assert_eq!(f.timeout, Some(Duration::from_secs(15)));
    let c = cluster(b, "service_a");
    assert_eq!(c.discovery, DiscoveryType::StrictDns);
    assert_eq!(c.lb_policy, LbPolicy::RoundRobin);
    assert_eq!(c.connect_timeout, Duration::from_millis(250));
    assert_eq!(
        c.endpoints,
        vec![Endpoint {
            host: "service_a_envoy".into(),
            port: 8786,
            weight: 1,
            priority: 0,
            locality: 0,
            health: skiff::config::HealthStatus::Unknown,
            check_port: None,
            check_host: None,
        }]
    );
    assert_eq!(
        loaded.warnings,
        vec![format!(
            "{}:17:11: static_resources.listeners[0].filter_chains: filter_chains is a single mapping; Envoy expects a list. Accepted as a one-element list",
            path.display()
        )]
    );
}

#[test]
fn service_sidecars_load_with_envoy_defaults() {
    let a = load_example("seed/service-a.yaml");
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    let b = &a.bootstrap;
    let ports: Vec<u16> = b.listeners.iter().map(|l| l.address.port()).collect();
    assert_eq!(ports, vec![8786, 8788, 8791]);
    let names: Vec<&str> = b.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["service_a", "service_b", "service_c"]);
    assert_eq!(cluster(b, "service_b").endpoints[0].host, "service_b_envoy");
    assert_eq!(cluster(b, "service_b").endpoints[0].port, 8789);
    let c = cluster(b, "service_c");
    assert_eq!(c.dns_refresh_rate, Duration::from_secs(5));
    assert_eq!(c.dns_lookup_family, DnsLookupFamily::Auto);
    assert_eq!(c.circuit_breakers, CircuitBreakers::default());
    assert_eq!(c.max_requests_per_connection, None);
    let hcm = &b.listeners[0].hcm;
    assert_eq!(hcm.max_request_headers_kb, 60);
    assert_eq!(hcm.request_headers_timeout, Duration::from_secs(10));
    assert_eq!(hcm.idle_timeout, Duration::from_secs(3600));
    assert!(hcm.generate_request_id);
    assert_eq!(hcm.server_name, "envoy");

    for leaf in ["seed/service-b.yaml", "seed/service-c.yaml"] {
        let l = load_example(leaf);
        assert!(l.warnings.is_empty(), "{leaf}: {:?}", l.warnings);
        assert_eq!(l.bootstrap.listeners.len(), 1);
        assert_eq!(l.bootstrap.clusters.len(), 1);
    }
    assert_eq!(load_example("seed/service-b.yaml").bootstrap.listeners[0].address, addr("0.0.0.0:8789"));
    assert_eq!(load_example("seed/service-c.yaml").bootstrap.clusters[0].endpoints[0].port, 8083);
}

#[test]
fn v3_service_a_loads() {
    let loaded = load_example("v3/service-a.yaml");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let b = &loaded.bootstrap;
    assert_eq!(b.admin.as_ref().and_then(|a| a.access_log_path.as_deref()), Some("/tmp/admin_access.log"));
    assert_eq!(b.listeners[0].hcm.access_logs, vec![AccessLog::Stdout { format: None }]);
    assert_eq!(first_forward(&b.listeners[0]).timeout, Some(Duration::from_secs(15)));
    let egress_b = first_forward(&b.listeners[1]);
    assert_eq!(
        egress_b.retry_policy,
        Some(RetryPolicy {
            retry_on: vec!["connect-failure".into(), "5xx".into()],
            num_retries: 2,
            per_try_timeout: None,
            per_try_idle_timeout: None,
            retriable_status_codes: vec![],
            retriable_headers: vec![],
            back_off: BackOff::default(),
            avoid_previous_hosts: false,
            host_selection_attempts: 1,
        })
    );
    assert_eq!(cluster(b, "service_c").lb_policy, LbPolicy::LeastRequest);
    assert_eq!(cluster(b, "service_a").connect_timeout, Duration::from_millis(250));
    assert_eq!(cluster(b, "service_a").endpoints[0].host, "service_a");
    assert_eq!(cluster(b, "service_a").endpoints[0].port, 8081);
    let listeners_v2 = load_example("seed/service-a.yaml").bootstrap.listeners;
    let addrs = |ls: &[Listener]| ls.iter().map(|l| l.address).collect::<Vec<_>>();
    assert_eq!(addrs(&b.listeners), addrs(&listeners_v2));
}

const V2: &str = r#"
admin:
  access_log_path: /tmp/admin.log
  address: { socket_address: { address: 127.0.0.1, port_value: 9901 } }
static_resources:
  listeners:
  - name: web
    address: { socket_address: { address: "::", port_value: 8080 } }
    filter_chains:
    - filters:
      - name: envoy.http_connection_manager
        config:
          stat_prefix: web
          codec_type: auto
          use_remote_address: true
          access_log:
          - name: envoy.file_access_log
            config: { path: /var/log/access.log, format: "%START_TIME%\n" }
          route_config:
            name: local
            response_headers_to_add: [{ header: { key: X-Proxy, value: skiff }, append: false }]
            virtual_hosts:
            - name: api
              domains: ["api.example.com", "api.example.com:8080"]
              routes:
              - match:
                  regex: "/v[0-9]+/.*"
                  headers: [{ name: X-Canary, exact_match: "1" }, { name: X-Debug, present_match: true, invert_match: true }]
                route:
                  weighted_clusters: { clusters: [{ name: a, weight: 30 }, { name: b, weight: 70 }], total_weight: 100 }
                  host_rewrite: api.internal
                  timeout: 0s
              - match: { prefix: "/old", case_sensitive: false }
                redirect: { path_redirect: /new, response_code: FOUND }
              - match: { path: /health }
                direct_response: { status: 200, body: { inline_string: ok } }
            - name: rest
              domains: ["*"]
              routes:
              - match: { prefix: /, query_parameters: [{ name: debug, value: "1" }] }
                route: { cluster: a, prefix_rewrite: /x, retry_policy: { retry_on: "5xx", per_try_timeout: 1.5s } }
          http_filters:
          - name: envoy.router
  clusters:
  - name: a
    connect_timeout: 1s
    type: static
    lb_policy: random
    hosts: [{ socket_address: { address: 10.0.0.1, port_value: 80 } }]
    dns_resolvers: [{ socket_address: { address: 8.8.8.8, port_value: 53 } }]
    max_requests_per_connection: 100
    circuit_breakers: { thresholds: [{ priority: DEFAULT, max_connections: 10 }] }
  - name: b
    type: logical_dns
    dns_lookup_family: v4_only
    hosts: [{ socket_address: { address: b.internal, port_value: 80 } }]
"#;

const V3: &str = r#"
admin:
  access_log:
  - name: envoy.access_loggers.file
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
      path: /tmp/admin.log
  address: { socket_address: { address: 127.0.0.1, port_value: 9901 } }
static_resources:
  listeners:
  - name: web
    address: { socket_address: { address: "::", port_value: 8080, protocol: TCP } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: web
          codec_type: auto
          use_remote_address: true
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: /var/log/access.log
              log_format: { text_format_source: { inline_string: "%START_TIME%\n" } }
          route_config:
            name: local
            response_headers_to_add: [{ header: { key: x-proxy, value: skiff }, append_action: OVERWRITE_IF_EXISTS_OR_ADD }]
            virtual_hosts:
            - name: api
              domains: ["api.example.com", "api.example.com:8080"]
              routes:
              - match:
                  safe_regex: { google_re2: {}, regex: "/v[0-9]+/.*" }
                  headers: [{ name: x-canary, string_match: { exact: "1" } }, { name: x-debug, present_match: true, invert_match: true }]
                route:
                  weighted_clusters: { clusters: [{ name: a, weight: 30 }, { name: b, weight: 70 }] }
                  host_rewrite_literal: api.internal
                  timeout: { seconds: 0 }
              - match: { prefix: "/old", case_sensitive: false }
                redirect: { path_redirect: /new, response_code: found }
              - match: { path: /health }
                direct_response: { status: 200, body: { inline_string: ok } }
            - name: rest
              domains: ["*"]
              routes:
              - match: { prefix: /, query_parameters: [{ name: debug, string_match: { exact: "1" } }] }
                route: { cluster: a, prefix_rewrite: /x, retry_policy: { retry_on: "5xx", per_try_timeout: { seconds: 1, nanos: 500000000 } } }
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
  - name: a
    connect_timeout: 1s
    type: STATIC
    lb_policy: RANDOM
    load_assignment:
      cluster_name: a
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 10.0.0.1, port_value: 80 } } } }] }]
    dns_resolution_config: { resolvers: [{ socket_address: { address: 8.8.8.8, port_value: 53 } }] }
    common_http_protocol_options: { max_requests_per_connection: 100 }
    circuit_breakers: { thresholds: [{ max_connections: 10 }] }
  - name: b
    type: LOGICAL_DNS
    dns_lookup_family: V4_ONLY
    load_assignment:
      cluster_name: b
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: b.internal, port_value: 80 } } } }] }]
"#;

#[test]
fn v2_and_v3_spellings_give_the_same_model() {
    let v2 = load_str(V2, "v2.yaml").unwrap_or_else(|e| panic!("{e}"));
    let v3 = load_str(V3, "v3.yaml").unwrap_or_else(|e| panic!("{e}"));
    // circuit_breakers are enforced: nothing to warn about.
    assert_eq!(v2.warnings, Vec::<String>::new());
    assert_eq!(v3.warnings, Vec::<String>::new());
    assert_eq!(v2.bootstrap, v3.bootstrap);

    let b = &v2.bootstrap;
    let hcm = &b.listeners[0].hcm;
    assert_eq!(b.listeners[0].address, addr("[::]:8080"));
    assert!(hcm.use_remote_address);
    assert_eq!(
        hcm.access_logs,
        vec![AccessLog::File { path: "/var/log/access.log".into(), format: Some("%START_TIME%\n".into()) }]
    );
    let rc = &hcm.route_config;
    assert_eq!(
        rc.response_headers_to_add,
        vec![HeaderValueOption { name: "x-proxy".into(), value: "skiff".into(), append: false }]
    );
    let api = &rc.virtual_hosts[0].routes;
    assert_eq!(api[0].matcher.path, PathMatch::SafeRegex("/v[0-9]+/.*".into()));
    assert_eq!(
        api[0].matcher.headers[0],
        HeaderMatcher {
            name: "x-canary".into(),
            rule: HeaderMatchRule::Exact("1".into()),
            invert_match: false
        }
    );
    assert_eq!(api[0].matcher.headers[1].rule, HeaderMatchRule::Present(true));
    assert!(api[0].matcher.headers[1].invert_match);
    match &api[0].action {
        RouteAction::Forward(f) => {
            let weighted =
                |name: &str, weight| WeightedCluster { name: name.into(), weight, ..Default::default() };
            assert_eq!(f.cluster, ClusterSpecifier::Weighted(vec![weighted("a", 30), weighted("b", 70)]));
            assert_eq!(f.timeout, None, "0s disables the route timeout");
            assert_eq!(f.host_rewrite_literal.as_deref(), Some("api.internal"));
        }
        other => panic!("{other:?}"),
    }
    match &api[1].action {
        RouteAction::Redirect(r) => {
            assert_eq!((r.status, r.path_redirect.as_deref()), (302, Some("/new")))
        }
        other => panic!("{other:?}"),
    }
    assert!(!api[1].matcher.case_sensitive);
    assert_eq!(api[2].action, RouteAction::DirectResponse { status: 200, body: Some("ok".into()) });
    let rest = &rc.virtual_hosts[1].routes[0];
    assert_eq!(
        rest.matcher.query_parameters,
        vec![QueryParameterMatcher { name: "debug".into(), exact: Some("1".into()) }]
    );
    match &rest.action {
        RouteAction::Forward(f) => {
            let retry = f.retry_policy.as_ref().expect("retry policy");
            assert_eq!(retry.num_retries, 1, "Envoy's default");
            assert_eq!(retry.per_try_timeout, Some(Duration::from_millis(1500)));
        }
        other => panic!("{other:?}"),
    }
    let a = cluster(b, "a");
    assert_eq!((a.discovery, a.lb_policy), (DiscoveryType::Static, LbPolicy::Random));
    assert_eq!(a.dns_resolvers, vec![addr("8.8.8.8:53")]);
    assert_eq!(a.max_requests_per_connection, Some(100));
    assert_eq!(a.circuit_breakers.max_connections, 10);
    assert_eq!(a.circuit_breakers.max_pending_requests, 1024);
    let bc = cluster(b, "b");
    assert_eq!((bc.discovery, bc.dns_lookup_family), (DiscoveryType::LogicalDns, DnsLookupFamily::V4Only));
    assert_eq!(bc.connect_timeout, Duration::from_secs(5));
}

/// A small, valid v3 file; the error tests below each change one line of it, so the expected
/// line numbers can be read off this text.
const BASE: &str = r#"static_resources:
  listeners:
  - name: web
    address:
      socket_address: { address: 0.0.0.0, port_value: 8080 }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: web
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: / }
                route: { cluster: backend }
          http_filters:
          - name: envoy.filters.http.router
  clusters:
  - name: backend
    connect_timeout: 0.25s
    type: STRICT_DNS
    lb_policy: ROUND_ROBIN
    load_assignment:
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address: { address: backend.internal, port_value: 80 }
"#;

fn with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from:?} not in BASE");
    BASE.replacen(from, to, 1)
}

#[test]
fn base_config_is_valid() {
    let l = load_str(BASE, "skiff.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
}

#[test]
fn enum_values_are_read_in_any_case() {
    for spelling in ["strict_dns", "STRICT_DNS", "Strict_Dns"] {
        let text = with("type: STRICT_DNS", &format!("type: \"{spelling}\""));
        let l = load_str(&text, "x").unwrap_or_else(|e| panic!("{spelling}: {e}"));
        assert_eq!(l.bootstrap.clusters[0].discovery, DiscoveryType::StrictDns);
    }
    let l = load_str(&with("lb_policy: ROUND_ROBIN", "lb_policy: least_request"), "x").expect("loads");
    assert_eq!(l.bootstrap.clusters[0].lb_policy, LbPolicy::LeastRequest);
}

#[test]
fn bad_duration() {
    assert_eq!(
        err(&with("connect_timeout: 0.25s", "connect_timeout: fast")),
        r#"skiff.yaml:24:22: static_resources.clusters[0].connect_timeout: expected a duration like "0.25s", got "fast""#
    );
    assert_eq!(
        err(&with("connect_timeout: 0.25s", "connect_timeout: 250ms")),
        r#"skiff.yaml:24:22: static_resources.clusters[0].connect_timeout: expected a duration like "0.25s", got "250ms"; Envoy durations are in seconds, write "0.25s""#
    );
    assert_eq!(
        err(&with("connect_timeout: 0.25s", "connect_timeout: 5")),
        r#"skiff.yaml:24:22: static_resources.clusters[0].connect_timeout: expected a duration like "0.25s", got 5; Envoy durations are strings, write "5s""#
    );
}

#[test]
fn unknown_field_suggests_the_intended_one() {
    assert_eq!(
        err(&with("connect_timeout: 0.25s", "conect_timeout: 0.25s")),
        "skiff.yaml:24:5: static_resources.clusters[0].conect_timeout: unknown field `conect_timeout`, did you mean `connect_timeout`?"
    );
    let far = err(&with("connect_timeout: 0.25s", "bananas: 1"));
    assert!(
        far.starts_with("skiff.yaml:24:5: static_resources.clusters[0].bananas: unknown field `bananas`"),
        "{far}"
    );
    assert!(far.contains("`connect_timeout`"), "lists the expected fields: {far}");
}

#[test]
fn unknown_cluster_in_route() {
    assert_eq!(
        err(&with("route: { cluster: backend }", "route: { cluster: backnd }")),
        r#"skiff.yaml:19:35: static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[0].route.cluster: unknown cluster "backnd" (clusters: backend)"#
    );
}

#[test]
fn duplicate_cluster_name() {
    let text = format!("{BASE}  - name: backend\n    type: STATIC\n");
    assert_eq!(
        err(&text),
        r#"skiff.yaml:33:11: static_resources.clusters[1].name: duplicate cluster name "backend""#
    );
}

#[test]
fn duplicate_listener_name_and_address() {
    let second = "  - name: web\n    address:\n      socket_address: { address: 0.0.0.0, port_value: 9090 }\n    filter_chains: []\n";
    let text = BASE.replacen("  clusters:\n", &format!("{second}  clusters:\n"), 1);
    assert_eq!(
        err(&text),
        r#"skiff.yaml:22:11: static_resources.listeners[1].name: duplicate listener name "web""#
    );
    let second = second.replace("name: web", "name: other").replace("9090", "8080").replace("filter_chains: []", "filter_chains: [{ filters: [{ name: envoy.http_connection_manager, config: { stat_prefix: x, route_config: {}, http_filters: [{ name: envoy.router }] } }] }]");
    let text = BASE.replacen("  clusters:\n", &format!("{second}  clusters:\n"), 1);
    assert_eq!(
        err(&text),
        "skiff.yaml:24:7: static_resources.listeners[1].address: address 0.0.0.0:8080 is already used by static_resources.listeners[0].address"
    );
}

#[test]
fn unknown_http_filter() {
    let text = with(
        "- name: envoy.filters.http.router",
        "- name: envoy.filters.http.lua\n          - name: envoy.filters.http.router",
    );
    assert_eq!(
        err(&text),
        r#"skiff.yaml:21:19: static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0].name: http filter "envoy.filters.http.lua" is not supported (only envoy.filters.http.router, envoy.filters.http.local_ratelimit, envoy.filters.http.fault, envoy.filters.http.cors, envoy.filters.http.csrf, envoy.filters.http.jwt_authn, envoy.filters.http.rbac, envoy.filters.http.ext_authz and envoy.filters.http.compressor; mark it is_optional: true to skip it)"#
    );
    let optional = with(
        "- name: envoy.filters.http.router",
        "- name: envoy.filters.http.lua\n            is_optional: true\n          - name: envoy.filters.http.router",
    );
    let l = load_str(&optional, "skiff.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(l.bootstrap.listeners[0].hcm.http_filters, vec![HttpFilter::Router]);
    assert_eq!(
        l.warnings,
        vec![
            r#"skiff.yaml:21:19: static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0].name: optional http filter "envoy.filters.http.lua" is not supported and is skipped"#
        ]
    );
}

#[test]
fn unsupported_lb_policy() {
    assert_eq!(
        err(&with("lb_policy: ROUND_ROBIN", "lb_policy: ORIGINAL_DST_LB")),
        "skiff.yaml:26:16: static_resources.clusters[0].lb_policy: lb_policy ORIGINAL_DST_LB is not yet supported (supported: ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH, MAGLEV)"
    );
    assert_eq!(
        err(&with("lb_policy: ROUND_ROBIN", "lb_policy: ROUND_ROBN")),
        r#"skiff.yaml:26:16: static_resources.clusters[0].lb_policy: unknown lb_policy "ROUND_ROBN", expected one of ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH, MAGLEV"#
    );
    assert_eq!(
        err(&with("type: STRICT_DNS", "type: ORIGINAL_DST")),
        "skiff.yaml:25:11: static_resources.clusters[0].type: cluster type ORIGINAL_DST is not yet supported (supported: STATIC, STRICT_DNS, LOGICAL_DNS, EDS)"
    );
    // EDS reads its endpoints from a file, which it must name.
    assert!(
        err(&with("type: STRICT_DNS", "type: EDS"))
            .contains("an EDS cluster takes its endpoints from eds_cluster_config"),
        "{}",
        err(&with("type: STRICT_DNS", "type: EDS"))
    );
}

#[test]
fn listener_address_must_be_an_ip() {
    assert_eq!(
        err(&with("address: 0.0.0.0,", "address: localhost,")),
        r#"skiff.yaml:5:34: static_resources.listeners[0].address.socket_address.address: expected an IP address such as "0.0.0.0" or "::", got "localhost" (host names are not resolved here)"#
    );
    assert_eq!(
        err(&with("port_value: 8080 }", "port_value: 8080, protocol: UDP }")),
        "skiff.yaml:5:71: static_resources.listeners[0].address.socket_address.protocol: protocol UDP is not yet supported (supported: TCP)"
    );
}

#[test]
fn port_out_of_range() {
    assert_eq!(
        err(&with("port_value: 8080", "port_value: 80800")),
        "skiff.yaml:5:55: static_resources.listeners[0].address.socket_address.port_value: port_value 80800 is out of range (0-65535)"
    );
    assert_eq!(
        err(&with("port_value: 80 }", "port_value: -1 }")),
        "skiff.yaml:32:72: static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value: port_value -1 is out of range (0-65535)"
    );
}

#[test]
fn static_cluster_needs_ip_endpoints() {
    assert_eq!(
        err(&with("type: STRICT_DNS", "type: STATIC")),
        r#"skiff.yaml:32:42: static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address: a STATIC cluster needs IP addresses, got "backend.internal" (use type: STRICT_DNS for host names)"#
    );
}

#[test]
fn http2_codecs_load_and_http3_is_refused() {
    let loaded = load_str(&with("codec_type: AUTO", "codec_type: HTTP2"), "skiff.yaml")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.bootstrap.listeners[0].hcm.codec, skiff::config::HttpCodec::Http2);
    assert_eq!(
        err(&with("codec_type: AUTO", "codec_type: HTTP3")),
        "skiff.yaml:12:23: static_resources.listeners[0].filter_chains[0].filters[0].typed_config.codec_type: codec_type HTTP3 is not yet supported (supported: AUTO, HTTP1, HTTP2)"
    );
}

#[test]
fn http2_protocol_options_are_read_within_envoys_ranges() {
    let options = "          http2_protocol_options: { max_concurrent_streams: 7, initial_stream_window_size: 65535, hpack_table_size: 0, max_outbound_frames: 50 }\n";
    let loaded = load_str(&hcm_with(options), "skiff.yaml").unwrap_or_else(|e| panic!("{e}"));
    let h2 = loaded.bootstrap.listeners[0].hcm.http2;
    assert_eq!(
        (h2.max_concurrent_streams, h2.initial_stream_window_size, h2.hpack_table_size),
        (7, 65535, 0)
    );
    assert_eq!(h2.initial_connection_window_size, 268_435_456, "Envoy's default");
    assert!(
        loaded.warnings.iter().any(|w| w.contains("http2_protocol_options.max_outbound_frames")),
        "{:?}",
        loaded.warnings
    );
    let small = "          http2_protocol_options: { initial_stream_window_size: 100 }\n";
    assert!(err(&hcm_with(small))
        .contains("initial_stream_window_size must be between 65535 and 2147483647, got 100"));
    let connect = "          http2_protocol_options: { allow_connect: true }\n";
    assert!(err(&hcm_with(connect)).contains("allow_connect is not supported"));
}

#[test]
fn unknown_transport_sockets_and_xds_are_refused_by_name() {
    let text = with(
        "    type: STRICT_DNS\n",
        "    type: STRICT_DNS\n    transport_socket: { name: envoy.transport_sockets.alts }\n",
    );
    assert_eq!(
        err(&text),
        "skiff.yaml:26:23: static_resources.clusters[0].transport_socket: transport socket \"envoy.transport_sockets.alts\" is not supported (envoy.transport_sockets.tls or raw_buffer)"
    );
    // `ads: {}` needs the aggregated stream it names.
    let text = format!("dynamic_resources: {{ cds_config: {{ ads: {{}} }} }}\n{BASE}");
    assert_eq!(
        err(&text),
        "skiff.yaml:1:41: dynamic_resources.cds_config.ads: ads: {} needs dynamic_resources.ads_config"
    );
}

#[test]
fn unsupported_network_filter_is_named() {
    assert_eq!(
        err(&with(
            "- name: envoy.filters.network.http_connection_manager",
            "- name: envoy.filters.network.redis_proxy"
        )),
        r#"skiff.yaml:8:15: static_resources.listeners[0].filter_chains[0].filters[0].name: network filter "envoy.filters.network.redis_proxy" is not supported; skiff runs envoy.filters.network.http_connection_manager or envoy.filters.network.tcp_proxy, each after any of envoy.filters.network.local_ratelimit, envoy.filters.network.connection_limit and envoy.filters.network.rbac"#
    );
}

#[test]
fn route_semantics_are_checked() {
    let bad_regex = with("match: { prefix: / }", "match: { safe_regex: { regex: \"(\" } }");
    let e = err(&bad_regex);
    assert!(e.starts_with("skiff.yaml:18:47: static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[0].match.safe_regex.regex: invalid regex: regex parse error: ( ^ error: unclosed group"), "{e}");
    let two_wildcards = with(
        "            - name: all\n",
        "            - name: other\n              domains: [\"*\"]\n            - name: all\n",
    );
    assert_eq!(
        err(&two_wildcards),
        r#"skiff.yaml:18:25: static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[1].domains[0]: only one virtual host may use the wildcard domain "*""#
    );
    let status = with("route: { cluster: backend }", "direct_response: { status: 999 }");
    assert!(
        err(&status).contains("routes[0].direct_response.status: status must be 200-599, got 999"),
        "{}",
        err(&status)
    );
    let retries = with(
        "route: { cluster: backend }",
        "route: { cluster: backend, retry_policy: { num_retries: 1000 } }",
    );
    assert!(
        err(&retries).contains("retry_policy.num_retries: num_retries 1000 is too many (at most 100)"),
        "{}",
        err(&retries)
    );
}

#[test]
fn warnings_name_what_is_ignored() {
    let text = with("    type: STRICT_DNS\n", "    type: STRICT_DNS\n    health_checks: []\n    outlier_detection: {}\n    per_connection_buffer_limit_bytes: 32768\n");
    let l = load_str(&text, "skiff.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        l.warnings,
        vec![
            "skiff.yaml:28:40: static_resources.clusters[0].per_connection_buffer_limit_bytes: per_connection_buffer_limit_bytes is accepted but ignored (skiff's buffers are bounded by its own fixed sizes)",
        ]
    );
}

#[test]
fn yaml_syntax_errors_are_located() {
    let e = err("static_resources:\n  clusters: [\n");
    assert!(e.starts_with("skiff.yaml:3:1:"), "{e}");
    assert_eq!(err(""), "skiff.yaml: the config is empty");
    assert_eq!(err("- 1\n"), "skiff.yaml:1:1: invalid type: sequence, expected an Envoy bootstrap mapping");
}

#[test]
fn anchors_aliases_and_empty_lists_work() {
    let text = r#"
static_resources:
  listeners: []
  clusters:
  - name: a
    connect_timeout: &t 2s
    hosts: &h [{ socket_address: { address: 10.0.0.1, port_value: 80 } }]
  - name: b
    connect_timeout: *t
    hosts: *h
"#;
    let l = load_str(text, "x").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(l.bootstrap.clusters[1].connect_timeout, Duration::from_secs(2));
    assert_eq!(l.bootstrap.clusters[1].endpoints, l.bootstrap.clusters[0].endpoints);
    assert!(l.bootstrap.listeners.is_empty());
    let l = load_str("static_resources: {}\n", "x").expect("empty resources load");
    assert!(l.bootstrap.clusters.is_empty() && l.bootstrap.admin.is_none());
}

#[test]
fn no_panic_on_any_prefix_of_a_real_file() {
    let text = std::fs::read_to_string(example("v3/service-a.yaml")).expect("read");
    for end in (0..=text.len()).filter(|i| text.is_char_boundary(*i)) {
        let _ = load_str(&text[..end], "prefix");
    }
}

/// BASE with `tracing` lines added to the HCM (after `codec_type`, so from line 13) and a
/// `zipkin` cluster appended.
fn traced(hcm_lines: &str) -> String {
    let text = with("          codec_type: AUTO\n", &format!("          codec_type: AUTO\n{hcm_lines}"));
    format!("{text}  - name: zipkin\n    hosts: [{{ socket_address: {{ address: 10.0.0.9, port_value: 9411 }} }}]\n")
}

const V3_TRACING: &str = r#"          tracing:
            provider:
              name: envoy.tracers.zipkin
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig
                collector_cluster: zipkin
                collector_endpoint: "/api/v2/spans"
                collector_endpoint_version: HTTP_JSON
                trace_id_128bit: true
                shared_span_context: false
                collector_hostname: zipkin.example
            random_sampling: { value: 25.5 }
            client_sampling: { value: 0 }
            overall_sampling: { value: 50 }
            spawn_upstream_span: true
            max_path_tag_length: 64
"#;

fn tracing_of(text: &str) -> (Option<Tracing>, Vec<String>) {
    let l = load_str(text, "skiff.yaml").unwrap_or_else(|e| panic!("{e}"));
    (l.bootstrap.listeners[0].hcm.tracing.clone(), l.warnings)
}

#[test]
fn no_tracing_block_means_no_tracing() {
    let l = load_str(BASE, "x").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(l.bootstrap.listeners[0].hcm.tracing, None);
    assert_eq!(load_example("v3/service-a.yaml").bootstrap.listeners[0].hcm.tracing, None);
}

#[test]
fn v3_zipkin_tracing() {
    let (t, warnings) = tracing_of(&traced(V3_TRACING));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        t,
        Some(Tracing {
            provider: TracingProvider::Zipkin(ZipkinConfig {
                collector_cluster: "zipkin".into(),
                collector_endpoint: "/api/v2/spans".into(),
                trace_id_128bit: true,
                shared_span_context: false,
                collector_hostname: Some("zipkin.example".into()),
            }),
            operation: TracingOperation::Ingress,
            random_sampling: 25.5,
            client_sampling: 0.0,
            overall_sampling: 50.0,
            max_path_tag_length: 64,
        })
    );
}

#[test]
fn tracing_defaults_and_operation_from_traffic_direction() {
    let minimal = "          tracing:\n            provider:\n              name: envoy.tracers.zipkin\n              typed_config:\n                \"@type\": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig\n                collector_cluster: zipkin\n";
    let (t, warnings) = tracing_of(&traced(minimal));
    assert!(warnings.is_empty(), "{warnings:?}");
    let t = t.expect("tracing");
    assert_eq!(
        t.provider,
        TracingProvider::Zipkin(ZipkinConfig {
            collector_cluster: "zipkin".into(),
            collector_endpoint: "/api/v2/spans".into(),
            trace_id_128bit: false,
            shared_span_context: true,
            collector_hostname: None,
        })
    );
    assert_eq!(
        (t.operation, t.random_sampling, t.client_sampling, t.overall_sampling, t.max_path_tag_length),
        (TracingOperation::Ingress, 100.0, 100.0, 100.0, 256)
    );
    for (direction, want) in [
        ("OUTBOUND", TracingOperation::Egress),
        ("inbound", TracingOperation::Ingress),
        ("UNSPECIFIED", TracingOperation::Ingress),
    ] {
        let text = traced(minimal).replacen(
            "    filter_chains:\n",
            &format!("    traffic_direction: {direction}\n    filter_chains:\n"),
            1,
        );
        assert_eq!(tracing_of(&text).0.map(|t| t.operation), Some(want), "{direction}");
    }
    // v2's operation_name beats the listener's direction.
    let text = traced(&format!("{minimal}            operation_name: INGRESS\n")).replacen(
        "    filter_chains:\n",
        "    traffic_direction: OUTBOUND\n    filter_chains:\n",
        1,
    );
    assert_eq!(tracing_of(&text).0.map(|t| t.operation), Some(TracingOperation::Ingress));
    // An empty Percent is protobuf's 0.
    let text = traced(&format!("{minimal}            random_sampling: {{}}\n"));
    assert_eq!(tracing_of(&text).0.map(|t| t.random_sampling), Some(0.0));
}

#[test]
fn v2_bootstrap_tracing_applies_to_hcms_with_a_tracing_block() {
    let bootstrap = "tracing:\n  http:\n    name: envoy.zipkin\n    config:\n      collector_cluster: zipkin\n      collector_endpoint: /api/v1/spans\n      shared_span_context: false\n";
    let text = format!("{bootstrap}{}", traced("          tracing:\n            operation_name: egress\n"));
    let (t, warnings) = tracing_of(&text);
    assert!(warnings.is_empty(), "{warnings:?}");
    let t = t.expect("tracing");
    assert_eq!(t.operation, TracingOperation::Egress);
    let TracingProvider::Zipkin(z) = &t.provider else { panic!("zipkin") };
    assert_eq!(z.collector_endpoint, "/api/v1/spans");
    assert!(!z.shared_span_context);
    // v3 spelling of the bootstrap provider, and an HCM provider overriding it.
    let v3_bootstrap = "tracing:\n  http:\n    name: envoy.tracers.zipkin\n    typed_config:\n      \"@type\": type.googleapis.com/envoy.config.trace.v3.ZipkinConfig\n      collector_cluster: zipkin\n      collector_endpoint: /other\n";
    let (t, _) = tracing_of(&format!("{v3_bootstrap}{}", traced(V3_TRACING)));
    let endpoint = t.and_then(|t| match t.provider {
        TracingProvider::Zipkin(z) => Some(z.collector_endpoint),
        TracingProvider::OpenTelemetry(_) => None,
    });
    assert_eq!(endpoint, Some("/api/v2/spans".to_string()));
    // A bootstrap provider alone traces nothing.
    let l = load_str(&format!("{bootstrap}{}", traced("")), "skiff.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(l.bootstrap.listeners[0].hcm.tracing, None);
    assert_eq!(
        l.warnings,
        ["skiff.yaml:2:3: tracing: tracing is configured but no http_connection_manager has a tracing block, so nothing is traced"]
    );
}

#[test]
fn tracing_warnings() {
    let text =
        traced(&format!("{V3_TRACING}            custom_tags: [{{ tag: a, literal: {{ value: b }} }}]\n"));
    let (t, warnings) = tracing_of(&text);
    assert!(t.is_some());
    assert_eq!(
        warnings,
        ["skiff.yaml:29:26: static_resources.listeners[0].filter_chains[0].filters[0].typed_config.tracing.custom_tags: custom_tags is accepted but ignored (no custom tags are added)"]
    );
    let (t, warnings) = tracing_of(&traced("          tracing: { random_sampling: { value: 1 } }\n"));
    assert_eq!(t, None);
    assert_eq!(
        warnings,
        ["skiff.yaml:13:20: static_resources.listeners[0].filter_chains[0].filters[0].typed_config.tracing: tracing has no provider (neither tracing.provider here nor a bootstrap tracing.http), so nothing is traced"]
    );
}

#[test]
fn tracing_errors_are_located() {
    const HCM: &str = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.tracing";
    let cases = [
        (
            V3_TRACING.replace("collector_cluster: zipkin", "collector_cluster: zipkn"),
            format!(r#"skiff.yaml:18:36: {HCM}.provider.typed_config.collector_cluster: unknown cluster "zipkn" (clusters: backend, zipkin)"#),
        ),
        (
            V3_TRACING.replace("HTTP_JSON", "HTTP_PROTO"),
            format!("skiff.yaml:20:45: {HCM}.provider.typed_config.collector_endpoint_version: collector_endpoint_version HTTP_PROTO is not yet supported (supported: HTTP_JSON)"),
        ),
        (
            V3_TRACING.replace("envoy.tracers.zipkin", "envoy.tracers.datadog"),
            format!(r#"skiff.yaml:15:21: {HCM}.provider.name: tracing provider "envoy.tracers.datadog" is not supported; skiff reports to Zipkin (envoy.tracers.zipkin) and OpenTelemetry (envoy.tracers.opentelemetry) only"#),
        ),
        (
            V3_TRACING.replace("v3.ZipkinConfig", "v3.OpenTelemetryConfig"),
            format!(r#"skiff.yaml:17:26: {HCM}.provider.typed_config.@type: this @type does not match the provider name "envoy.tracers.zipkin""#),
        ),
        (
            V3_TRACING.replace("{ value: 25.5 }", "{ value: 101 }"),
            format!("skiff.yaml:24:39: {HCM}.random_sampling.value: a percentage must be between 0 and 100, got 101"),
        ),
        (
            V3_TRACING.replace("                collector_cluster: zipkin\n", ""),
            format!("skiff.yaml:17:17: {HCM}.provider.typed_config: collector_cluster is required"),
        ),
        (
            V3_TRACING.replace("\"/api/v2/spans\"", "\"/api v2\""),
            format!(r#"skiff.yaml:19:37: {HCM}.provider.typed_config.collector_endpoint: collector_endpoint must be a non-empty path without spaces, got "/api v2""#),
        ),
        (
            "          tracing: { operation_name: sideways }\n".to_string(),
            format!(r#"skiff.yaml:13:38: {HCM}.operation_name: unknown operation_name "sideways", expected one of INGRESS, EGRESS"#),
        ),
    ];
    for (lines, want) in cases {
        assert_eq!(err(&traced(&lines)), want);
    }
    // The bootstrap's provider is checked too, at its own location.
    let text = format!(
        "tracing:\n  http:\n    name: envoy.zipkin\n    config: {{ collector_cluster: nope }}\n{}",
        traced("          tracing: {}\n")
    );
    assert_eq!(
        err(&text),
        r#"skiff.yaml:4:34: tracing.http.config.collector_cluster: unknown cluster "nope" (clusters: backend, zipkin)"#
    );
}

/// BASE with `lines` added to the HCM right after `codec_type` (so they start on line 13).
fn hcm_with(lines: &str) -> String {
    with("          codec_type: AUTO\n", &format!("          codec_type: AUTO\n{lines}"))
}

fn hcm_of(text: &str) -> HttpConnectionManager {
    let l = load_str(text, "skiff.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    l.bootstrap.listeners[0].hcm.clone()
}

#[test]
fn http_protocol_options_http10_fields_are_read() {
    let hcm = hcm_of(BASE);
    assert!(!hcm.accept_http_10);
    assert_eq!(hcm.default_host_for_http_10, None);
    let hcm = hcm_of(&hcm_with(
        "          http_protocol_options: { accept_http_10: true, default_host_for_http_10: legacy.local, allow_absolute_url: true }\n",
    ));
    assert!(hcm.accept_http_10);
    assert_eq!(hcm.default_host_for_http_10.as_deref(), Some("legacy.local"));
    assert_eq!(
        err(&hcm_with("          http_protocol_options: { accept_http_11: true }\n")),
        "skiff.yaml:13:36: static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_protocol_options.accept_http_11: unknown field `accept_http_11`, did you mean `accept_http_10`?"
    );
}

#[test]
fn header_values_with_cr_or_lf_are_refused_where_they_are_written() {
    let route_level = with(
        "                route: { cluster: backend }\n",
        "                route: { cluster: backend }\n                response_headers_to_add: [{ header: { key: x-a, value: \"ok\\r\\nSet-Cookie: evil\" } }]\n",
    );
    assert_eq!(
        err(&route_level),
        "skiff.yaml:20:72: static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[0].response_headers_to_add[0].header.value: value \"ok\\r\\nSet-Cookie: evil\" must not contain CR, LF or NUL"
    );
    let vhost_level = with(
        "              domains: [\"*\"]\n",
        "              domains: [\"*\"]\n              request_headers_to_add: [{ header: { key: \"x-a\\nx-b\", value: v } }]\n",
    );
    assert_eq!(
        err(&vhost_level),
        "skiff.yaml:17:57: static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].request_headers_to_add[0].header.key: key \"x-a\\nx-b\" must not contain CR, LF or NUL"
    );
    let config_level = with(
        "            virtual_hosts:\n",
        "            response_headers_to_add: [{ header: { key: x-a, value: \"a\\rb\" } }]\n            virtual_hosts:\n",
    );
    assert!(err(&config_level).starts_with("skiff.yaml:14:"), "{}", err(&config_level));
    assert!(err(&config_level).contains("route_config.response_headers_to_add[0].header.value: value \"a\\rb\" must not contain CR, LF or NUL"));
    assert_eq!(
        err(&hcm_with("          server_name: \"skiff\\r\\nX-Injected: 1\"\n")),
        "skiff.yaml:13:24: static_resources.listeners[0].filter_chains[0].filters[0].typed_config.server_name: server_name \"skiff\\r\\nX-Injected: 1\" must not contain CR, LF or NUL"
    );
}

#[test]
fn zero_timeouts_mean_never_as_in_envoy() {
    let hcm = hcm_of(&hcm_with(
        "          request_headers_timeout: 0s\n          common_http_protocol_options: { idle_timeout: 0s }\n",
    ));
    assert_eq!(hcm.request_headers_timeout, skiff::config::NEVER);
    assert_eq!(hcm.idle_timeout, skiff::config::NEVER);
    let l = load_str(&with("route: { cluster: backend }", "route: { cluster: backend, timeout: 0s }"), "x")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first_forward(&l.bootstrap.listeners[0]).timeout, None);
    // Envoy: "ClusterValidationError.ConnectTimeout: value must be greater than 0s".
    assert_eq!(
        err(&with("connect_timeout: 0.25s", "connect_timeout: 0s")),
        "skiff.yaml:24:22: static_resources.clusters[0].connect_timeout: connect_timeout must be greater than 0s"
    );
}

#[test]
fn huge_durations_saturate_and_past_protobufs_range_are_refused() {
    let hcm = hcm_of(&hcm_with("          request_headers_timeout: 315576000000s\n"));
    assert_eq!(hcm.request_headers_timeout, skiff::config::NEVER);
    let l = load_str(
        &with("route: { cluster: backend }", "route: { cluster: backend, timeout: 315576000000s }"),
        "x",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first_forward(&l.bootstrap.listeners[0]).timeout, Some(skiff::config::NEVER));
    assert!(
        err(&hcm_with("          request_headers_timeout: 315576000001s\n"))
            .ends_with("duration \"315576000001s\" is out of range"),
        "{}",
        err(&hcm_with("          request_headers_timeout: 315576000001s\n"))
    );
}

#[test]
fn the_router_is_known_by_its_type_url_whatever_its_name() {
    let named = with(
        "          - name: envoy.filters.http.router\n",
        "          - name: my-router\n            typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }\n",
    );
    assert_eq!(hcm_of(&named).http_filters, vec![HttpFilter::Router]);
    let unknown = with(
        "          - name: envoy.filters.http.router\n",
        "          - name: envoy.filters.http.router\n            typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua }\n",
    );
    assert_eq!(
        err(&unknown),
        "skiff.yaml:21:19: static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0].name: http filter \"envoy.filters.http.router\" (\"@type\" type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua) is not supported (only envoy.filters.http.router, envoy.filters.http.local_ratelimit, envoy.filters.http.fault, envoy.filters.http.cors, envoy.filters.http.csrf, envoy.filters.http.jwt_authn, envoy.filters.http.rbac, envoy.filters.http.ext_authz and envoy.filters.http.compressor; mark it is_optional: true to skip it)"
    );
    assert!(err(&with(
        "          - name: envoy.filters.http.router\n",
        "          - name: envoy.filters.http.lua\n"
    ))
    .contains("http filter \"envoy.filters.http.lua\" is not supported"));
}
