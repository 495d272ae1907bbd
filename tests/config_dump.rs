//! `/config_dump`: Envoy's v3 JSON shape for the running config, and the promise that makes it
//! trustworthy: the dumped `bootstrap` loads back into the very same model.

use serde_json::Value;
use skiff::admin::config_dump::{self, duration, filter, render, render_bootstrap};
use skiff::config::*;
use skiff::listener::BoundListener;
use skiff::snapshot::Snapshot;
use skiff::telemetry::{NodeInfo, Telemetry};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

fn example(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/envoy-examples").join(rel)
}

fn load(rel: &str) -> Bootstrap {
    load_file(&example(rel)).unwrap_or_else(|e| panic!("{rel} should load: {e}")).bootstrap
}

/// A real snapshot, built the way the control thread builds one, so `render` is tested on what
/// the admin server will hand it. Listeners are bound on 127.0.0.1:0 rather than the config's
/// fixed ports so parallel tests cannot collide; the dump must still show the configured ports.
fn snapshot(bootstrap: Bootstrap) -> (Snapshot, Telemetry) {
    let mut sockets = HashMap::new();
    for (i, l) in bootstrap.listeners.iter().enumerate() {
        let bound = BoundListener::bind(i as u64 + 1, &l.name, "127.0.0.1:0".parse().expect("addr"), 1)
            .unwrap_or_else(|e| panic!("bind {}: {e}", l.name));
        sockets.insert(l.name.clone(), Arc::new(bound));
    }
    let mut telemetry = Telemetry::new(NodeInfo::default());
    let endpoints: Vec<skiff::cluster::Resolved> = bootstrap
        .clusters
        .iter()
        .map(|_| skiff::cluster::Resolved {
            hosts: vec![("10.0.0.1:80".parse().expect("addr"), 1)],
            ..Default::default()
        })
        .collect();
    let observers = telemetry.prepare(&bootstrap).unwrap_or_else(|e| panic!("telemetry: {e}"));
    let snap = Snapshot::build(1, Arc::new(bootstrap), &endpoints, &sockets, &observers)
        .unwrap_or_else(|e| panic!("snapshot: {e}"));
    (snap, telemetry)
}

fn dump_of(rel: &str) -> Value {
    let (snap, telemetry) = snapshot(load(rel));
    let dump = render(&snap);
    drop(snap);
    telemetry.shutdown();
    dump
}

/// The config entry with this `@type` suffix.
fn config<'a>(dump: &'a Value, kind: &str) -> &'a Value {
    let url = format!("type.googleapis.com/envoy.admin.v3.{kind}");
    dump["configs"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["@type"] == url.as_str()))
        .unwrap_or_else(|| panic!("no {kind} in {dump:#}"))
}

fn static_listener<'a>(dump: &'a Value, name: &str) -> &'a Value {
    config(dump, "ListenersConfigDump")["static_listeners"]
        .as_array()
        .and_then(|a| a.iter().map(|l| &l["listener"]).find(|l| l["name"] == name))
        .unwrap_or_else(|| panic!("no listener {name}"))
}

fn static_cluster<'a>(dump: &'a Value, name: &str) -> &'a Value {
    config(dump, "ClustersConfigDump")["static_clusters"]
        .as_array()
        .and_then(|a| a.iter().map(|c| &c["cluster"]).find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no cluster {name}"))
}

fn hcm(listener: &Value) -> &Value {
    &listener["filter_chains"][0]["filters"][0]["typed_config"]
}

fn first_route(listener: &Value) -> &Value {
    &hcm(listener)["route_config"]["virtual_hosts"][0]["routes"][0]
}

/// Loads the dump's `bootstrap` again, both as JSON text and as YAML text, and demands the same
/// model as the original: every field skiff acts on survives the trip.
fn assert_round_trip(original: &Bootstrap, dump: &Value) {
    let bootstrap = &config(dump, "BootstrapConfigDump")["bootstrap"];
    let as_json = serde_json::to_string_pretty(bootstrap).expect("json");
    let from_json = load_str(&as_json, "dump.json").unwrap_or_else(|e| panic!("{e}\n{as_json}"));
    assert_eq!(&from_json.bootstrap, original, "JSON round trip\n{as_json}");
    let as_yaml = serde_norway::to_string(bootstrap).expect("yaml");
    let from_yaml = load_str(&as_yaml, "dump.yaml").unwrap_or_else(|e| panic!("{e}\n{as_yaml}"));
    assert_eq!(&from_yaml.bootstrap, original, "YAML round trip\n{as_yaml}");
    // The dump uses only v3 spellings, so it loads without any warning but the ones for fields
    // skiff accepts without enforcing yet (the dump writes Envoy's default circuit breakers).
    let unenforced = ["circuit_breakers", "xff_num_trusted_hops"];
    let unexpected: Vec<_> = from_json
        .warnings
        .iter()
        .filter(|w| !unenforced.iter().any(|field| w.to_string().contains(field)))
        .collect();
    assert!(unexpected.is_empty(), "warnings: {unexpected:?}");
}

#[test]
fn v3_service_a_dump_has_envoys_shape() {
    let dump = dump_of("v3/service-a.yaml");
    let kinds: Vec<&str> =
        dump["configs"].as_array().expect("configs").iter().filter_map(|c| c["@type"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
            "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
            "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
            "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
        ]
    );

    let bootstrap = &config(&dump, "BootstrapConfigDump")["bootstrap"];
    assert_eq!(bootstrap["admin"]["address"]["socket_address"]["port_value"], 9901);
    assert_eq!(bootstrap["admin"]["access_log"][0]["typed_config"]["path"], "/tmp/admin_access.log");
    assert_eq!(bootstrap["static_resources"]["listeners"].as_array().map(Vec::len), Some(3));
    assert_eq!(bootstrap["static_resources"]["clusters"].as_array().map(Vec::len), Some(3));

    // Listeners: configured ports, not the test's ephemeral binds.
    for (name, port, prefix, cluster) in [
        ("service-a-svc-http-listener", 8786, "ingress", "service_a"),
        ("service-b-svc-http-listener", 8788, "egress", "service_b"),
        ("service-c-svc-http-listener", 8791, "egress", "service_c"),
    ] {
        let l = static_listener(&dump, name);
        assert_eq!(l["@type"], "type.googleapis.com/envoy.config.listener.v3.Listener");
        assert_eq!(l["address"]["socket_address"]["address"], "0.0.0.0");
        assert_eq!(l["address"]["socket_address"]["port_value"], port, "{name}");
        let h = hcm(l);
        assert_eq!(
            h["@type"],
            "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
        );
        assert_eq!(h["stat_prefix"], prefix);
        assert_eq!(h["http_filters"][0]["name"], "envoy.filters.http.router");
        assert_eq!(first_route(l)["match"]["prefix"], "/");
        assert_eq!(first_route(l)["route"]["cluster"], cluster);
        // Envoy's default route timeout, spelled out.
        assert_eq!(first_route(l)["route"]["timeout"], "15s");
    }
    let ingress = hcm(static_listener(&dump, "service-a-svc-http-listener"));
    assert_eq!(
        ingress["access_log"][0]["typed_config"]["@type"],
        "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"
    );

    let retry = &first_route(static_listener(&dump, "service-b-svc-http-listener"))["route"]["retry_policy"];
    assert_eq!(retry["retry_on"], "connect-failure,5xx");
    assert_eq!(retry["num_retries"], 2);
    assert!(first_route(static_listener(&dump, "service-c-svc-http-listener"))["route"]
        .get("retry_policy")
        .is_none());

    // Clusters: v3 enums and durations; host names as written, not the snapshot's resolved IPs.
    for (name, host, port) in [
        ("service_a", "service_a", 8081),
        ("service_b", "service_b_envoy", 8789),
        ("service_c", "service_c_envoy", 8790),
    ] {
        let c = static_cluster(&dump, name);
        assert_eq!(c["@type"], "type.googleapis.com/envoy.config.cluster.v3.Cluster");
        assert_eq!(c["type"], "STRICT_DNS");
        assert_eq!(c["connect_timeout"], "0.250s");
        assert_eq!(c["dns_refresh_rate"], "5s");
        let sa =
            &c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"];
        assert_eq!(sa["address"], host);
        assert_eq!(sa["port_value"], port);
        assert_eq!(c["load_assignment"]["cluster_name"], name);
    }
    // ROUND_ROBIN is the enum's zero value: Envoy (protobuf JSON) leaves it out.
    assert!(static_cluster(&dump, "service_a").get("lb_policy").is_none());
    assert_eq!(static_cluster(&dump, "service_c")["lb_policy"], "LEAST_REQUEST");
    assert!(!dump.to_string().contains("10.0.0.1"), "resolved addresses leaked into the dump");

    let routes = config(&dump, "RoutesConfigDump")["static_route_configs"].as_array().expect("routes");
    assert_eq!(routes.len(), 3);
    assert_eq!(
        routes[0]["route_config"]["@type"],
        "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
    );
    assert_eq!(routes[0]["route_config"]["name"], "service-a-svc-http-route");
}

#[test]
fn v3_service_a_round_trips() {
    let original = load("v3/service-a.yaml");
    assert_round_trip(&original, &dump_of("v3/service-a.yaml"));
}

#[test]
fn v2_seed_service_a_dumps_in_v3_and_round_trips() {
    let original = load("seed/service-a.yaml");
    let dump = dump_of("seed/service-a.yaml");
    // v2 `hosts` come out as a v3 load_assignment, v2 `envoy.http_connection_manager` + `config`
    // as the v3 filter name + typed_config.
    let c = static_cluster(&dump, "service_b");
    assert_eq!(c["type"], "STRICT_DNS");
    assert_eq!(c["connect_timeout"], "0.250s");
    assert!(c.get("hosts").is_none());
    assert_eq!(
        c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
            ["address"],
        "service_b_envoy"
    );
    let l = static_listener(&dump, "service-c-svc-http-listener");
    assert_eq!(l["filter_chains"][0]["filters"][0]["name"], "envoy.filters.network.http_connection_manager");
    assert_eq!(hcm(l)["stat_prefix"], "egress");
    assert_eq!(first_route(l)["route"]["cluster"], "service_c");
    assert!(!dump.to_string().contains("\"config\""), "a v2 `config` key in the dump");
    assert_round_trip(&original, &dump);
}

/// Every example and deployment config that loads round-trips, not just service-a.
#[test]
fn every_shipped_config_round_trips() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut dirs = vec![root];
    let mut checked = 0;
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            // Kubernetes manifests and compose files are not bootstraps; skip what does not load.
            let Ok(loaded) = load_file(&path) else { continue };
            // A TLS certificate's private key is redacted in the dump (as Envoy's), so a config
            // with one cannot load from its dump.
            let b = &loaded.bootstrap;
            if b.listeners.iter().any(|l| l.tls.is_some()) || b.tcp_listeners.iter().any(|l| l.tls.is_some())
            {
                continue;
            }
            let dump = render_bootstrap(&loaded.bootstrap);
            assert_round_trip(&loaded.bootstrap, &dump);
            checked += 1;
        }
    }
    assert!(checked >= 3, "only {checked} configs were checked");
}

/// Every feature of the model, in a config of its own, survives the trip.
#[test]
fn every_model_feature_round_trips() {
    let yaml = r#"
admin:
  address: { socket_address: { address: "::1", port_value: 9901 } }
tracing:
  http:
    name: envoy.zipkin
    config: { collector_cluster: zipkin, collector_endpoint: /api/v2/spans }
static_resources:
  listeners:
    - name: edge
      address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
      filter_chains:
        - filters:
            - name: envoy.http_connection_manager
              config:
                stat_prefix: edge
                http_filters: [{ name: envoy.router }]
                max_request_headers_kb: 96
                request_headers_timeout: 2.5s
                common_http_protocol_options: { idle_timeout: 0.000001s }
                generate_request_id: false
                server_name: skiff
                use_remote_address: true
                xff_num_trusted_hops: 2
                tracing:
                  operation_name: EGRESS
                  random_sampling: { value: 25 }
                  client_sampling: { value: 0 }
                  overall_sampling: { value: 50.5 }
                  max_path_tag_length: 64
                access_log:
                  - name: envoy.file_access_log
                    config: { path: /tmp/edge.log, format: "%START_TIME% %PROTOCOL%\n" }
                  - name: envoy.access_loggers.stderr
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog
                      log_format: { text_format: "x\n" }
                route_config:
                  request_headers_to_add: [{ header: { key: X-Rc, value: a }, append: false }]
                  response_headers_to_remove: [X-Gone]
                  virtual_hosts:
                    - name: api
                      domains: ["api.example.com", "*.api.example.com:8080"]
                      retry_policy: { retry_on: "5xx", per_try_timeout: 0.1s }
                      response_headers_to_add:
                        - header: { key: x-vh }
                          append_action: OVERWRITE_IF_EXISTS_OR_ADD
                      routes:
                        - name: weighted
                          match:
                            prefix: /v1
                            case_sensitive: false
                            headers:
                              - { name: X-Exact, exact_match: "1" }
                              - { name: x-prefix, string_match: { prefix: "a" }, invert_match: true }
                              - { name: x-suffix, suffix_match: "z" }
                              - { name: x-contains, string_match: { contains: "m" } }
                              - { name: x-re, safe_regex_match: { regex: "^[0-9]+$" } }
                              - { name: x-present }
                              - { name: x-absent, present_match: false }
                            query_parameters:
                              - { name: debug }
                              - { name: v, string_match: { exact: "2" } }
                          route:
                            weighted_clusters:
                              clusters:
                                - { name: a, weight: 30, request_headers_to_remove: [X-Entry] }
                                - name: b
                                  weight: 70
                                  response_headers_to_add: [{ header: { key: x-b, value: "1" } }]
                            timeout: 0s
                            prefix_rewrite: /
                            host_rewrite: upstream.internal
                        - match: { path: /exact }
                          route: { cluster: a, timeout: 1.5s, retry_policy: { retry_on: "reset, gateway-error", num_retries: 3 } }
                          request_headers_to_remove: [x-drop]
                        - match: { safe_regex: { regex: "/r/[a-z]+" } }
                          direct_response: { status: 418, body: { inline_string: "teapot" } }
                        - match: { prefix: /empty }
                          direct_response: { status: 204 }
                    - name: redirects
                      domains: ["*"]
                      routes:
                        - match: { prefix: /old }
                          redirect: { host_redirect: new.example.com, prefix_rewrite: /new, response_code: FOUND, strip_query: true }
                        - match: { prefix: /s }
                          redirect: { https_redirect: true, path_redirect: /secure, response_code: PERMANENT_REDIRECT }
                        - match: { prefix: / }
                          redirect: { scheme_redirect: http }
              
  clusters:
    - name: a
      type: STATIC
      connect_timeout: 1s
      lb_policy: RANDOM
      dns_lookup_family: V4_ONLY
      max_requests_per_connection: 100
      circuit_breakers: { thresholds: [{ max_connections: 10, max_retries: 1 }] }
      load_assignment:
        cluster_name: a
        endpoints:
          - lb_endpoints:
              - endpoint: { address: { socket_address: { address: 10.0.0.1, port_value: 80 } } }
                load_balancing_weight: 3
              - endpoint: { address: { socket_address: { address: "[::2]", port_value: 80 } } }
          - priority: 1
            lb_endpoints:
              - endpoint: { address: { socket_address: { address: 10.0.0.3, port_value: 81 } } }
          - lb_endpoints:
              - endpoint: { address: { socket_address: { address: 10.0.0.4, port_value: 82 } } }
    - name: b
      type: LOGICAL_DNS
      dns_refresh_rate: 30s
      dns_lookup_family: V6_ONLY
      dns_resolvers: [{ socket_address: { address: 8.8.8.8, port_value: 53 } }]
      common_http_protocol_options: { max_requests_per_connection: 1 }
      hosts: [{ socket_address: { address: b.example.com, port_value: 443 } }]
    - name: zipkin
      type: STRICT_DNS
      dns_lookup_family: ALL
      load_assignment:
        endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: zipkin, port_value: 9411 } } } }] }]
    - name: empty
      dns_lookup_family: V4_PREFERRED
      dns_refresh_rate: 1s
"#;
    let original = load_str(yaml, "features.yaml").unwrap_or_else(|e| panic!("{e}")).bootstrap;
    let dump = render_bootstrap(&original);
    assert_round_trip(&original, &dump);

    // Spot checks on the spellings Envoy uses.
    let l = static_listener(&dump, "edge");
    assert_eq!(l["traffic_direction"], "OUTBOUND");
    let h = hcm(l);
    assert_eq!(h["tracing"]["provider"]["name"], "envoy.tracers.zipkin");
    assert_eq!(
        h["tracing"]["provider"]["typed_config"]["@type"],
        "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig"
    );
    assert_eq!(h["tracing"]["provider"]["typed_config"]["collector_cluster"], "zipkin");
    assert_eq!(h["request_headers_timeout"], "2.500s");
    assert_eq!(h["common_http_protocol_options"]["idle_timeout"], "0.000001s");
    assert_eq!(h["access_log"][0]["typed_config"]["path"], "/tmp/edge.log");
    let routes = &h["route_config"]["virtual_hosts"][0]["routes"];
    assert_eq!(routes[0]["route"]["weighted_clusters"]["clusters"][1]["weight"], 70);
    let entries = &routes[0]["route"]["weighted_clusters"]["clusters"];
    assert_eq!(entries[0]["request_headers_to_remove"], serde_json::json!(["x-entry"]));
    assert_eq!(entries[1]["response_headers_to_add"][0]["header"]["key"], "x-b");
    assert_eq!(routes[0]["route"]["timeout"], "0s");
    assert_eq!(routes[0]["route"]["host_rewrite_literal"], "upstream.internal");
    // The virtual host's retry policy applies to the routes that have none.
    assert_eq!(routes[0]["route"]["retry_policy"]["per_try_timeout"], "0.100s");
    assert_eq!(routes[0]["match"]["headers"][4]["string_match"]["safe_regex"]["regex"], "^[0-9]+$");
    assert_eq!(routes[2]["direct_response"]["body"]["inline_string"], "teapot");
    let redirects = &h["route_config"]["virtual_hosts"][1]["routes"];
    assert_eq!(redirects[0]["redirect"]["response_code"], "FOUND");
    let a = static_cluster(&dump, "a");
    assert!(a.get("type").is_none(), "STATIC is the zero value");
    assert_eq!(a["lb_policy"], "RANDOM");
    assert_eq!(a["dns_lookup_family"], "V4_ONLY");
    assert_eq!(a["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["load_balancing_weight"], 3);
    assert_eq!(a["load_assignment"]["endpoints"][1]["priority"], 1);
    assert_eq!(a["load_assignment"]["endpoints"].as_array().map(Vec::len), Some(3));
    let b = static_cluster(&dump, "b");
    assert_eq!(b["type"], "LOGICAL_DNS");
    assert_eq!(b["dns_resolution_config"]["resolvers"][0]["socket_address"]["address"], "8.8.8.8");
}

#[test]
fn resource_query_returns_the_elements_envoy_would() {
    let dump = dump_of("v3/service-a.yaml");

    let clusters = filter(dump.clone(), Some("static_clusters"));
    let list = clusters["configs"].as_array().expect("configs");
    assert_eq!(list.len(), 3);
    for c in list {
        assert_eq!(c["@type"], "type.googleapis.com/envoy.admin.v3.ClustersConfigDump.StaticCluster");
        assert_eq!(c["cluster"]["@type"], "type.googleapis.com/envoy.config.cluster.v3.Cluster");
    }
    assert_eq!(list[2]["cluster"]["name"], "service_c");

    let listeners = filter(dump.clone(), Some("static_listeners"));
    let list = listeners["configs"].as_array().expect("configs");
    assert_eq!(list.len(), 3);
    assert_eq!(list[0]["@type"], "type.googleapis.com/envoy.admin.v3.ListenersConfigDump.StaticListener");
    assert_eq!(list[0]["listener"]["name"], "service-a-svc-http-listener");

    let routes = filter(dump.clone(), Some("static_route_configs"));
    let list = routes["configs"].as_array().expect("configs");
    assert_eq!(list.len(), 3);
    assert_eq!(list[0]["@type"], "type.googleapis.com/envoy.admin.v3.RoutesConfigDump.StaticRouteConfig");

    // Known but empty here (no dynamic_resources), and unknown: both give an empty list, no panic.
    assert_eq!(filter(dump.clone(), Some("dynamic_active_clusters")), serde_json::json!({ "configs": [] }));
    assert_eq!(filter(dump.clone(), Some("bogus")), serde_json::json!({ "configs": [] }));
    assert_eq!(
        filter(serde_json::json!(null), Some("static_clusters")),
        serde_json::json!({ "configs": [] })
    );
    assert!(config_dump::RESOURCES.iter().any(|(n, _)| *n == "static_clusters"));
    assert!(!config_dump::RESOURCES.iter().any(|(n, _)| *n == "bogus"));

    assert_eq!(filter(dump.clone(), None), dump);
}

#[test]
fn durations_use_protobufs_json_form() {
    assert_eq!(duration(Duration::from_secs(5)), "5s");
    assert_eq!(duration(Duration::from_millis(250)), "0.250s");
    assert_eq!(duration(Duration::from_millis(1500)), "1.500s");
    assert_eq!(duration(Duration::from_micros(1)), "0.000001s");
    assert_eq!(duration(Duration::from_nanos(1_000_000_001)), "1.000000001s");
    assert_eq!(duration(Duration::ZERO), "0s");
}
