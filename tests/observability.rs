//! What an operator sees of a running skiff: the admin API (`/ready`, `/server_info`, `/clusters`,
//! `/stats` in text, JSON and Prometheus form, the mutating endpoints), access logs (file and stdout,
//! custom and default formats, response flags, request ids) and Zipkin tracing through two chained
//! proxies. Every proxy runs two shards, so counters must be merged across them.

mod support;

use serde_json::Value as Json;
use std::net::SocketAddr;
use std::time::Duration;
use support::*;

const ADMIN: &str = "admin:\n  address:\n    socket_address: { address: 127.0.0.1, port_value: 0 }\n";

fn endpoints_yaml(addrs: &[SocketAddr]) -> String {
    if addrs.is_empty() {
        return "        endpoints: []\n".into();
    }
    let eps: String = addrs
        .iter()
        .map(|a| {
            format!(
                "              - endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }}\n",
                a.ip(),
                a.port()
            )
        })
        .collect();
    format!("        endpoints:\n          - lb_endpoints:\n{eps}")
}

/// A v3 bootstrap with an admin on port 0 and one listener `main` (stat prefix `ingress`).
/// `routes` are `(prefix, cluster, timeout)`; `clusters` are `(name, endpoints)`; `hcm_extra` is
/// YAML for the HttpConnectionManager written at column 0.
fn config(hcm_extra: &str, routes: &[(&str, &str, &str)], clusters: &[(&str, Vec<SocketAddr>)]) -> String {
    let routes: String = routes
        .iter()
        .map(|(prefix, cluster, timeout)| {
            format!(
                "                        - match: {{ prefix: \"{prefix}\" }}\n                          route: {{ cluster: {cluster}, timeout: {timeout} }}\n"
            )
        })
        .collect();
    let clusters: String = clusters
        .iter()
        .map(|(name, addrs)| {
            format!(
                "    - name: {name}\n      connect_timeout: 0.5s\n      type: STATIC\n      load_assignment:\n        cluster_name: {name}\n{}",
                endpoints_yaml(addrs)
            )
        })
        .collect();
    format!(
        r#"{ADMIN}static_resources:
  listeners:
    - name: main
      address:
        socket_address: {{ address: 127.0.0.1, port_value: 0 }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: ingress
{hcm}                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
{routes}                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
{clusters}"#,
        hcm = indent(hcm_extra, 16)
    )
}

fn start(yaml: &str, extra: &[&str]) -> Skiff {
    let mut args = vec!["--concurrency", "2"];
    args.extend_from_slice(extra);
    Skiff::start(yaml, &args)
}

/// `name: value` from `/stats` text.
fn stat(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")).map(str::to_string))
}

fn stats_text(admin: SocketAddr) -> String {
    let (status, body) = admin_request(admin, "GET", "/stats");
    assert_eq!(status, 200, "{body}");
    body
}

/// Polls `/stats` until `name` shows `want` (counters land when the request's bookkeeping ends,
/// which may be just after the client read its response).
fn wait_stat(admin: SocketAddr, name: &str, want: &str) {
    let mut last = String::new();
    let ok = eventually(Duration::from_secs(10), || {
        last = stats_text(admin);
        stat(&last, name).as_deref() == Some(want)
    });
    assert!(ok, "{name} never became {want}; last /stats:\n{last}");
}

// ---------------------------------------------------------------------------------------------
// Admin

#[test]
fn admin_endpoints_report_the_server_and_refuse_get_on_mutations() {
    let a = TestUpstream::named("a");
    let b = TestUpstream::named("b");
    let c = TestUpstream::named("c");
    let yaml = config(
        "",
        &[("/other", "other", "2s"), ("/", "backend", "2s")],
        &[("backend", vec![a.addr, b.addr]), ("other", vec![c.addr])],
    );
    let mut skiff = start(&yaml, &["--service-cluster", "obs-cluster", "--service-node", "obs-node"]);
    let admin = skiff.admin();
    assert_ne!(admin.port(), 0);

    let (status, body) = admin_request(admin, "GET", "/ready");
    assert_eq!((status, body.as_str()), (200, "LIVE\n"));

    let (status, body) = admin_request(admin, "GET", "/server_info");
    assert_eq!(status, 200);
    let info: Json = serde_json::from_str(&body).expect("server_info is JSON");
    assert_eq!(info["version"].as_str().map(|v| !v.is_empty()), Some(true), "{info}");
    assert_eq!(info["state"], "LIVE");
    assert!(info["uptime_current_epoch"].as_str().is_some_and(|u| u.ends_with('s')), "{info}");
    assert_eq!(info["command_line_options"]["service_cluster"], "obs-cluster");
    assert_eq!(info["command_line_options"]["service_node"], "obs-node");
    assert_eq!(info["command_line_options"]["concurrency"], 2);

    let (status, body) = admin_request(admin, "GET", "/clusters");
    assert_eq!(status, 200);
    for (cluster, addr) in [("backend", a.addr), ("backend", b.addr), ("other", c.addr)] {
        let line = format!("{cluster}::{addr}::health_flags::healthy");
        assert!(body.lines().any(|l| l == line), "no {line} in /clusters:\n{body}");
    }
    let (status, body) = admin_request(admin, "GET", "/clusters?format=json");
    assert_eq!(status, 200);
    let json: Json = serde_json::from_str(&body).expect("clusters JSON");
    let statuses = json["cluster_statuses"].as_array().expect("cluster_statuses");
    let hosts = |name: &str| -> Vec<String> {
        let c = statuses.iter().find(|c| c["name"] == name).expect("cluster listed");
        c["host_statuses"]
            .as_array()
            .expect("host_statuses")
            .iter()
            .map(|h| {
                let sa = &h["address"]["socket_address"];
                format!("{}:{}", sa["address"].as_str().unwrap(), sa["port_value"])
            })
            .collect()
    };
    let mut backend = hosts("backend");
    backend.sort();
    let mut want = vec![a.addr.to_string(), b.addr.to_string()];
    want.sort();
    assert_eq!(backend, want);
    assert_eq!(hosts("other"), vec![c.addr.to_string()]);

    // Mutating endpoints: GET is refused, POST works.
    for path in ["/healthcheck/fail", "/healthcheck/ok", "/quitquitquit"] {
        let (status, _) = admin_request(admin, "GET", path);
        assert_eq!(status, 405, "GET {path}");
    }
    assert_eq!(admin_request(admin, "POST", "/healthcheck/fail").0, 200);
    let (_, body) = admin_request(admin, "GET", "/server_info");
    assert_eq!(serde_json::from_str::<Json>(&body).unwrap()["health_check_failed"], true);
    assert_eq!(admin_request(admin, "POST", "/healthcheck/ok").0, 200);

    let (status, body) = admin_request(admin, "GET", "/no/such/thing");
    assert_eq!(status, 404);
    for endpoint in ["/ready", "/stats/prometheus", "/clusters", "/quitquitquit"] {
        assert!(body.contains(endpoint), "404 body lists {endpoint}:\n{body}");
    }

    // The process is still serving; /quitquitquit drains it and it exits 0.
    assert_eq!(get(skiff.listener("main"), "/").status, 200);
    assert_eq!(admin_request(admin, "POST", "/quitquitquit").0, 200);
    let mut exit = None;
    assert!(eventually(Duration::from_secs(15), || {
        exit = skiff.child.try_wait().ok().flatten();
        exit.is_some()
    }));
    assert!(exit.unwrap().success(), "exit status {exit:?}; log:\n{}", skiff.log());
}
