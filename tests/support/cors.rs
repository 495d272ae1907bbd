//! Helpers for the CORS and CSRF filter tests (`tests/cors.rs`, `tests/parity_cors.rs`): the
//! filter tests' bootstrap (`support::filters::config`) plus a `dead` cluster nothing listens on,
//! and a run of raw requests (any method and headers) that keeps each response's head as the
//! client got it, then the access log, `/stats` and what the upstream saw. Include with
//! `#[path = "support/cors.rs"] mod cors_support;` beside `mod support;`.
#![allow(dead_code)]

use crate::support::{dead_port, filters, Seen, TestUpstream};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

/// `support::filters::config` with a second cluster, `dead`, whose endpoint refuses connections.
pub fn config(
    port: u16,
    admin: u16,
    log: &Path,
    upstream: SocketAddr,
    filters: &str,
    routes: &str,
) -> String {
    let dead = dead_port();
    filters::config(port, admin, log, upstream, filters, routes)
        + &format!(
            r#"    - name: dead
      connect_timeout: 0.5s
      type: STATIC
      load_assignment:
        cluster_name: dead
        endpoints:
          - lb_endpoints:
              - endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }}
"#,
            dead.ip(),
            dead.port()
        )
}

/// One request: method, path, `host` and extra header lines, on a fresh connection.
pub struct Req {
    pub method: &'static str,
    pub path: &'static str,
    pub host: &'static str,
    pub headers: Vec<(&'static str, &'static str)>,
}

pub fn req(method: &'static str, path: &'static str, headers: &[(&'static str, &'static str)]) -> Req {
    Req { method, path, host: "test", headers: headers.to_vec() }
}

/// A CORS preflight of `path` from `origin` asking for `method`.
pub fn preflight(path: &'static str, origin: &'static str, method: &'static str) -> Req {
    req("OPTIONS", path, &[("origin", origin), ("access-control-request-method", method)])
}

/// A response as the client got it: the head's lines after the status line, in order.
#[derive(Debug, Clone)]
pub struct Got {
    pub status_line: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Got {
    pub fn status(&self) -> u16 {
        self.status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The `access-control-*` lines, in order.
    pub fn cors_headers(&self) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.starts_with("access-control-"))
            .map(|(n, v)| format!("{n}: {v}"))
            .collect()
    }

    /// The whole head with the date masked.
    pub fn head(&self) -> Vec<String> {
        let line = |(n, v): &(String, String)| {
            if n == "date" {
                format!("{n}: <date>")
            } else {
                format!("{n}: {v}")
            }
        };
        std::iter::once(self.status_line.clone()).chain(self.headers.iter().map(line)).collect()
    }
}

#[derive(Debug)]
pub struct Run {
    pub responses: Vec<Option<Got>>,
    pub upstream: Vec<Seen>,
    pub log: Vec<String>,
    pub stats: BTreeMap<String, u64>,
}

impl Run {
    pub fn got(&self, i: usize) -> &Got {
        self.responses[i].as_ref().unwrap_or_else(|| panic!("request {i} got no response"))
    }

    pub fn stat(&self, name: &str) -> u64 {
        self.stats.get(name).copied().unwrap_or(0)
    }
}

/// Sends `requests` one after another to `listener`, each on its own connection, then collects
/// the access log (`requests.len()` lines, or what is there after 5 s) and `/stats`.
pub fn drive(
    listener: SocketAddr,
    admin: SocketAddr,
    log: &Path,
    up: &TestUpstream,
    requests: &[Req],
) -> Run {
    let responses = requests.iter().map(|r| exchange(listener, r)).collect();
    let (log, stats) = filters::log_and_stats(admin, log, requests.len());
    Run { responses, upstream: up.requests(), log, stats }
}

fn exchange(addr: SocketAddr, r: &Req) -> Option<Got> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut raw = format!("{} {} HTTP/1.1\r\nhost: {}\r\n", r.method, r.path, r.host);
    for (n, v) in &r.headers {
        raw.push_str(&format!("{n}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    s.write_all(raw.as_bytes()).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok())?;
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Got { status_line, headers, body: String::from_utf8_lossy(&body).into_owned() })
}
