//! Helpers for the ext_authz tests (`tests/ext_authz.rs`, `tests/parity_ext_authz.rs`,
//! `tests/parity_ext_authz_grpc.rs`): a real authorization server on loopback that answers by the
//! request's `authorization` header, a v3 bootstrap whose listener `main` runs the given ext_authz
//! filter before the router (clusters `backend` and `authz`), a driver that records what the
//! client, the upstream, the authorization server, the access log and `/stats` saw, and the
//! rendering the parity tests compare.

use super::{Client, Reply, Response, Seen, TestUpstream};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The authorization server of Envoy's ext_authz example, with a few more answers: `Bearer
/// token1` is allowed (with `x-current-user: user1` and a few headers the configs pick from),
/// `err` gets a 500, `slow` an answer after a second, `redirect` a 302; anything else a 403 with
/// a body and headers.
pub fn authz_server() -> TestUpstream {
    TestUpstream::start(Arc::new(|s: &Seen| {
        let h = |n: &str, v: &str| (n.to_string(), v.to_string());
        match s.header("authorization").unwrap_or("") {
            "Bearer token1" => Reply::Full {
                status: 200,
                headers: vec![
                    h("x-current-user", "user1"),
                    h("x-append", "a1"),
                    h("x-client-ok", "c"),
                    h("x-other", "o"),
                ],
                body: Vec::new(),
            },
            "err" => Reply::Full { status: 500, headers: vec![h("x-e", "1")], body: b"bad".to_vec() },
            "slow" => {
                std::thread::sleep(Duration::from_millis(1000));
                Reply::ok("")
            }
            "redirect" => Reply::Full {
                status: 302,
                headers: vec![h("location", "/login"), h("x-deny", "d")],
                body: Vec::new(),
            },
            _ => Reply::Full {
                status: 403,
                headers: vec![
                    h("x-deny", "d"),
                    h("www-authenticate", "Bearer"),
                    h("set-cookie", "a=b"),
                    h("content-type", "text/plain"),
                ],
                body: b"nope".to_vec(),
            },
        }
    }))
}

/// A bootstrap: `filter` is the ext_authz `http_filters` entry (YAML at column 0), `routes` the
/// contents of `route_config:` (column 0); `backend` at `upstream`, `authz` at `authz`.
pub fn config(
    port: u16,
    admin: u16,
    log: &Path,
    (upstream, authz): (SocketAddr, SocketAddr),
    filter: &str,
    routes: &str,
) -> String {
    // The filter tests' bootstrap, whose cluster list ends with `backend`: `authz` joins it.
    let base = super::filters::config(port, admin, log, upstream, filter, routes);
    format!(
        r#"{base}    - name: authz
      connect_timeout: 0.5s
      type: STATIC
      load_assignment:
        cluster_name: authz
        endpoints:
          - lb_endpoints:
              - endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }}
"#,
        authz.ip(),
        authz.port()
    )
}

/// Envoy's example filter (`http-service.yaml`), with a path prefix.
pub const BASIC: &str = r#"- name: envoy.filters.http.ext_authz
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
    http_service:
      server_uri: { uri: ext_authz, cluster: authz, timeout: 0.25s }
      path_prefix: /check
      authorization_response:
        allowed_upstream_headers:
          patterns: [{ exact: x-current-user }]
"#;

/// Every list of the HTTP service, `headers_to_add` and a partial body of at most 4 bytes.
pub const FULL: &str = r#"- name: envoy.filters.http.ext_authz
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
    with_request_body: { max_request_bytes: 4, allow_partial_message: true }
    http_service:
      server_uri: { uri: ext_authz, cluster: authz, timeout: 0.25s }
      authorization_request:
        allowed_headers: { patterns: [{ exact: x-foo }, { exact: x-forwarded-proto }, { exact: x-request-id }] }
        headers_to_add: [{ key: x-added, value: v }]
      authorization_response:
        allowed_upstream_headers: { patterns: [{ exact: x-current-user }] }
        allowed_upstream_headers_to_append: { patterns: [{ exact: x-append }] }
        allowed_client_headers: { patterns: [{ exact: x-deny }] }
        allowed_client_headers_on_success: { patterns: [{ exact: x-client-ok }] }
"#;

/// Everything to `backend`; `/open` has the filter disabled (`ExtAuthzPerRoute`).
pub const ROUTES: &str = r#"virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
      - match: { prefix: "/open" }
        route: { cluster: backend }
        typed_per_filter_config:
          envoy.filters.http.ext_authz:
            "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
            disabled: true
      - match: { prefix: "/" }
        route: { cluster: backend }
"#;

/// One request on a fresh connection.
pub struct Req {
    pub method: &'static str,
    pub path: &'static str,
    pub headers: Vec<(&'static str, &'static str)>,
    pub body: &'static str,
}

pub fn get(path: &'static str, headers: &[(&'static str, &'static str)]) -> Req {
    Req { method: "GET", path, headers: headers.to_vec(), body: "" }
}

pub fn post(path: &'static str, headers: &[(&'static str, &'static str)], body: &'static str) -> Req {
    Req { method: "POST", path, headers: headers.to_vec(), body }
}

/// What one proxy showed for a run.
#[derive(Debug)]
pub struct Run {
    pub responses: Vec<Option<Response>>,
    pub upstream: Vec<Seen>,
    pub authz: Vec<Seen>,
    pub log: Vec<String>,
    pub stats: BTreeMap<String, u64>,
}

impl Run {
    pub fn response(&self, i: usize) -> &Response {
        self.responses[i].as_ref().unwrap_or_else(|| panic!("request {i} got no response"))
    }

    pub fn stat(&self, name: &str) -> u64 {
        self.stats.get(name).copied().unwrap_or(0)
    }
}

/// Sends `requests` one after another to `listener`, then collects the rest.
pub fn drive(
    (listener, admin): (SocketAddr, SocketAddr),
    log: &Path,
    (up, authz): (&TestUpstream, &TestUpstream),
    requests: &[Req],
) -> Run {
    let responses = requests
        .iter()
        .map(|r| {
            let mut c = Client::connect(listener);
            let mut raw = format!("{} {} HTTP/1.1\r\nhost: test\r\n", r.method, r.path);
            for (n, v) in &r.headers {
                raw.push_str(&format!("{n}: {v}\r\n"));
            }
            if r.method == "POST" {
                raw.push_str(&format!("content-length: {}\r\n", r.body.len()));
            }
            raw.push_str("\r\n");
            raw.push_str(r.body);
            c.send(raw.as_bytes());
            c.read_response(false)
        })
        .collect();
    let (log, stats) = super::filters::log_and_stats(admin, log, requests.len());
    Run { responses, upstream: up.requests(), authz: authz.requests(), log, stats }
}

/// Set by the proxy or the test servers with values that differ between runs.
const VARYING: &[&str] = &["date", "x-request-id", "x-envoy-upstream-service-time", "server"];

/// Header lines sorted (Envoy's own order differs between runs of its header map), values that
/// are times or random ids masked.
pub fn masked_headers(list: &[(String, String)]) -> String {
    let mut out: Vec<String> = list
        .iter()
        .map(|(n, v)| {
            let n = n.to_ascii_lowercase();
            if VARYING.contains(&n.as_str()) {
                format!("{n}: *")
            } else {
                format!("{n}: {v}")
            }
        })
        .collect();
    out.sort();
    out.join(", ")
}

fn seen_line(s: &Seen) -> String {
    let body = String::from_utf8_lossy(&s.body);
    format!("{} {} [{}] {body:?}", s.method, s.path, masked_headers(&s.headers))
}

/// What a parity test compares of a run, line by line: the responses, what the upstream saw,
/// `checks` (what the authorization server saw, rendered), the access log sorted, and the
/// filter's and the authorization cluster's non-zero counters but those `skip` names.
pub fn render(run: &Run, checks: &[String], skip: &dyn Fn(&str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    for (i, r) in run.responses.iter().enumerate() {
        match r {
            None => out.push(format!("#{i} no response")),
            Some(r) => out.push(format!("#{i} {} [{}] {:?}", r.status, masked_headers(&r.headers), r.text())),
        }
    }
    out.extend(run.upstream.iter().map(|s| format!("upstream {}", seen_line(s))));
    out.extend(run.authz.iter().map(|s| format!("authz {}", seen_line(s))));
    out.extend(checks.iter().map(|c| format!("check {c}")));
    let mut log = run.log.clone();
    log.sort();
    out.extend(log.iter().map(|l| format!("log {l}")));
    for (name, v) in &run.stats {
        let counted = name.contains(".ext_authz.") || name.starts_with("cluster.authz.upstream_rq_");
        // Envoy also counts the check in `internal.upstream_rq_*` (it is sent as internal): skiff
        // has no internal/external split of the cluster stats.
        let skipped = name.contains(".internal.") || name.ends_with("upstream_rq_time") || skip(name);
        if *v != 0 && counted && !skipped {
            out.push(format!("stat {name} = {v}"));
        }
    }
    out
}

/// Envoy's and skiff's renderings are equal (a failure prints both).
pub fn assert_same_lines(envoy: &[String], skiff: &[String]) {
    assert_eq!(envoy, skiff, "\nenvoy:\n{}\nskiff:\n{}", envoy.join("\n"), skiff.join("\n"));
}

/// Envoy's ext_authz example (the text of one of its `config/*/v3.yaml`) on loopback: its listener
/// on port 0, its `upstream-service` a server answering as the example's app does (`Hello <the
/// x-current-user header> from behind Envoy!`), and its authorization service (`service`:`port`,
/// as the example names it) at `authz`. Only the three addresses change. Returns the config and
/// the app, which must outlive the proxy.
pub fn example_on_loopback(
    example: &str,
    service: &str,
    port: u16,
    authz: SocketAddr,
) -> (String, TestUpstream) {
    let app = TestUpstream::start(Arc::new(|s: &Seen| {
        Reply::ok(&format!("Hello {} from behind Envoy!", s.header("x-current-user").unwrap_or("?")))
    }));
    let yaml = example
        .replace("address: 0.0.0.0\n        port_value: 8000", "address: 127.0.0.1\n        port_value: 0")
        .replace(
            "address: upstream-service\n                port_value: 8080",
            &format!("address: 127.0.0.1\n                port_value: {}", app.addr.port()),
        )
        .replace(
            &format!("address: {service}\n                port_value: {port}"),
            &format!("address: 127.0.0.1\n                port_value: {}", authz.port()),
        );
    assert_eq!(yaml.matches("127.0.0.1").count(), 3, "the example's addresses were found");
    (yaml, app)
}
