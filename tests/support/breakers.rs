//! Configs, upstreams and clients for the circuit-breaker, endpoint-health and hash-balancing
//! tests (tests/circuit_breakers.rs, tests/endpoint_health.rs, tests/parity_breakers.rs): one v3
//! config that the real Envoy and skiff both load, a slow upstream, and requests sent at once.
#![allow(dead_code)]

use crate::support::{get, Reply, Response, Seen, TestUpstream};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The access-log format both proxies write.
pub const LOG_FORMAT: &str =
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %REQ(:PATH)% %UPSTREAM_HOST% %RESPONSE_CODE_DETAILS%";

/// A v3 bootstrap: a listener on `port` (0 for skiff) with a file access log at `log`, routes
/// `/retry` (5xx retried twice) and everything else to cluster `backend`, and `clusters` (YAML
/// list items at column 0). `route_extra` goes into the catch-all route's action (e.g. a hash
/// policy), `admin_port` 0 for skiff.
pub fn config(port: u16, admin_port: u16, log: &Path, route_extra: &str, clusters: &str) -> String {
    let head = crate::support::hcm_bootstrap_head(port, admin_port, log, LOG_FORMAT);
    format!(
        r#"{head}                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                        - match: {{ prefix: "/retry" }}
                          route: {{ cluster: backend, retry_policy: {{ retry_on: 5xx, num_retries: 2 }} }}
                        - match: {{ prefix: "/" }}
                          route:
                            cluster: backend
                            timeout: 10s
{route_extra}                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
{clusters}"#,
        route_extra = crate::support::indent(route_extra, 28),
        clusters = crate::support::indent(clusters, 4),
    )
}

/// Cluster `backend` (STATIC) with one locality per `(priority, endpoints)` group; each endpoint
/// is `(address, health_status or "")`. `extra` are YAML lines for the cluster at column 0.
pub fn cluster(lb: &str, localities: &[(u32, Vec<(SocketAddr, &str)>)], extra: &str) -> String {
    let mut eps = String::new();
    for (priority, endpoints) in localities {
        eps.push_str(&format!("      - priority: {priority}\n        lb_endpoints:\n"));
        for (a, health) in endpoints {
            eps.push_str(&format!(
                "          - endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }}\n",
                a.ip(),
                a.port()
            ));
            if !health.is_empty() {
                eps.push_str(&format!("            health_status: {health}\n"));
            }
        }
    }
    format!(
        "- name: backend\n  connect_timeout: 0.5s\n  type: STATIC\n  lb_policy: {lb}\n{extra}  load_assignment:\n    cluster_name: backend\n    endpoints:\n{eps}",
        extra = crate::support::indent(extra, 2)
    )
}

/// An upstream that answers `name` after `delay` on paths starting `/slow`, 503 on paths
/// containing `fail`, and 200 `name` at once otherwise.
pub fn upstream(name: &str, delay: Duration) -> TestUpstream {
    let name = name.to_string();
    TestUpstream::start(Arc::new(move |s: &Seen| {
        if s.path.starts_with("/slow") {
            std::thread::sleep(delay);
        }
        if s.path.contains("fail") {
            return Reply::Full { status: 503, headers: vec![], body: b"failed\n".to_vec() };
        }
        Reply::ok(&name)
    }))
}

/// GETs `paths` on separate connections, each started `gap` after the previous, and returns the
/// responses in the same order.
pub fn staggered(addr: SocketAddr, paths: &[&str], gap: Duration) -> Vec<Response> {
    let handles: Vec<_> = paths
        .iter()
        .map(|p| {
            let p = p.to_string();
            let h = std::thread::spawn(move || get(addr, &p));
            std::thread::sleep(gap);
            h
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("client thread")).collect()
}

/// Access-log lines at `path`, waiting until there are `n` of them (a writer flushes them late).
pub fn log_lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n || std::time::Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Envoy's overflow reply body.
pub const OVERFLOW_BODY: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: overflow";
