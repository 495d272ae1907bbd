//! Helpers for the HTTP filter tests (`tests/filters.rs`, `tests/parity_filters.rs`): one v3
//! bootstrap with a listener `main` whose connection manager runs the given `http_filters` before
//! the router, in front of one upstream cluster `backend`, logging a fixed access-log format; and a
//! run of requests through it that records what the client saw, how long each took, the log
//! lines and `/stats`.

use super::{indent, Client, Response, Seen, TestUpstream};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// The access-log fields the filter tests compare.
pub const LOG_FORMAT: &str =
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %REQ(:PATH)% %UPSTREAM_CLUSTER% %RESPONSE_CODE_DETAILS%";

/// A bootstrap: `filters` are `http_filters` entries (YAML at column 0) run before the router,
/// `route_config` is the contents of `route_config:` (column 0), routing to cluster `backend` at
/// `upstream`. `port`/`admin` 0 = ephemeral.
pub fn config(
    port: u16,
    admin: u16,
    log: &Path,
    upstream: SocketAddr,
    filters: &str,
    route_config: &str,
) -> String {
    config_logging(port, admin, log, upstream, filters, route_config, LOG_FORMAT)
}

/// `config` with its own access-log format.
pub fn config_logging(
    port: u16,
    admin: u16,
    log: &Path,
    upstream: SocketAddr,
    filters: &str,
    route_config: &str,
    log_format: &str,
) -> String {
    let head = super::hcm_bootstrap_head(port, admin, log, log_format);
    format!(
        r#"{head}                route_config:
{rc}                http_filters:
{filters}                  - name: envoy.filters.http.router
                    typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
    - name: backend
      connect_timeout: 0.5s
      type: STATIC
      load_assignment:
        cluster_name: backend
        endpoints:
          - lb_endpoints:
              - endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }}
"#,
        upstream.ip(),
        upstream.port(),
        rc = indent(route_config, 18),
        filters = indent(filters, 18),
    )
}

/// `skiff --mode validate` on `yaml`: whether it passed, and what it printed.
pub fn validate(yaml: &str) -> (bool, String) {
    let dir = super::scratch_dir("filters-validate");
    let path = dir.join("envoy.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["--mode", "validate", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Routes used when a test brings none: everything to `backend`.
pub const ALL_TO_BACKEND: &str = r#"virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
      - match: { prefix: "/" }
        route: { cluster: backend }
"#;

/// One request: `method` (GET unless changed) of `path` with extra headers, on a fresh connection.
pub struct Req {
    pub method: &'static str,
    pub path: &'static str,
    pub headers: Vec<(&'static str, &'static str)>,
}

pub fn req(path: &'static str) -> Req {
    Req { method: "GET", path, headers: Vec::new() }
}

pub fn req_with(path: &'static str, headers: &[(&'static str, &'static str)]) -> Req {
    Req { method: "GET", path, headers: headers.to_vec() }
}

/// A request with another method than GET (no body).
pub fn req_method(method: &'static str, path: &'static str, headers: &[(&'static str, &'static str)]) -> Req {
    Req { method, path, headers: headers.to_vec() }
}

/// What one proxy showed for a run.
#[derive(Debug)]
pub struct Run {
    /// Each response (None: the connection closed first) and how long it took.
    pub responses: Vec<(Option<Response>, Duration)>,
    pub upstream: Vec<Seen>,
    pub log: Vec<String>,
    pub stats: BTreeMap<String, u64>,
}

impl Run {
    pub fn status(&self, i: usize) -> u16 {
        self.responses[i].0.as_ref().map_or(0, |r| r.status)
    }

    pub fn response(&self, i: usize) -> &Response {
        self.responses[i].0.as_ref().unwrap_or_else(|| panic!("request {i} got no response"))
    }

    pub fn stat(&self, name: &str) -> u64 {
        self.stats.get(name).copied().unwrap_or(0)
    }
}

/// Sends `requests` one after another to `listener`, then collects the log and `/stats`.
pub fn drive(
    listener: SocketAddr,
    admin: SocketAddr,
    log: &Path,
    up: &TestUpstream,
    requests: &[Req],
) -> Run {
    let responses = requests
        .iter()
        .map(|r| {
            let started = Instant::now();
            let mut c = Client::connect(listener);
            let mut raw = format!("{} {} HTTP/1.1\r\nHost: test\r\n", r.method, r.path);
            for (n, v) in &r.headers {
                raw.push_str(&format!("{n}: {v}\r\n"));
            }
            raw.push_str("\r\n");
            c.send(raw.as_bytes());
            let resp = c.read_response(false);
            (resp, started.elapsed())
        })
        .collect();
    let (log, stats) = log_and_stats(admin, log, requests.len());
    Run { responses, upstream: up.requests(), log, stats }
}

/// The access log once it has `lines` lines (or what is there after 5 s), then `/stats`.
pub fn log_and_stats(admin: SocketAddr, log: &Path, lines: usize) -> (Vec<String>, BTreeMap<String, u64>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let log = loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let got: Vec<String> = text.lines().map(str::to_string).collect();
        if got.len() >= lines || Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stats = super::admin_request(admin, "GET", "/stats")
        .1
        .lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(": ")?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect();
    (log, stats)
}
