//! The admin server at the config's `admin.address`, on its own thread, off the request path:
//! `/`, `/ready`, `/server_info`, `/clusters`, `/healthcheck/fail|ok`, `/quitquitquit`. It reads
//! the latest snapshot the control thread published; it never touches a shard.

use crate::http::{self, MAX_HEADERS};
use crate::snapshot::Snapshot;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the admin server reports; shared with the control thread (publishes snapshots) and the
/// process (draining).
pub struct AdminState {
    started: Instant,
    pub info: ServerInfo,
    snapshot: Mutex<Arc<Snapshot>>,
    draining: AtomicBool,
    health_failed: AtomicBool,
}

/// Static facts for `/server_info`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServerInfo {
    pub version: String,
    pub service_cluster: String,
    pub service_node: String,
    pub service_zone: String,
    pub concurrency: usize,
    pub io_driver: String,
    pub command_line: Vec<String>,
}

impl AdminState {
    pub fn new(info: ServerInfo, snapshot: Arc<Snapshot>) -> Arc<Self> {
        Arc::new(AdminState {
            started: Instant::now(),
            info,
            snapshot: Mutex::new(snapshot),
            draining: AtomicBool::new(false),
            health_failed: AtomicBool::new(false),
        })
    }

    pub fn publish(&self, snapshot: Arc<Snapshot>) {
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = snapshot;
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn state(&self) -> &'static str {
        if self.draining.load(Ordering::Relaxed) {
            "DRAINING"
        } else {
            "LIVE"
        }
    }
}

/// Binds the admin address (an error if it is taken) and serves it on a thread.
pub fn spawn(addr: SocketAddr, state: Arc<AdminState>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new().name("skiff-admin".into()).spawn(move || {
        for stream in listener.incoming().flatten() {
            // One request per connection, one connection at a time: admin traffic is a probe or a
            // human, and a slow client is cut off by the timeouts below.
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
            serve(stream, &state);
        }
    })?;
    Ok(bound)
}

const MAX_HEAD: usize = 16 * 1024;

fn serve(mut stream: TcpStream, state: &AdminState) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match http::parse_request(&buf, &mut headers, MAX_HEAD) {
            Ok(Some(head)) => {
                let (status, content_type, body) = route(state, head.method, head.path);
                let reply = format!(
                    "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
                     cache-control: no-cache, max-age=0\r\nx-content-type-options: nosniff\r\n\
                     connection: close\r\n\r\n",
                    crate::shard::reason(status),
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes());
                if head.method != "HEAD" {
                    let _ = stream.write_all(body.as_bytes());
                }
                return;
            }
            Ok(None) => {}
            Err(e) => {
                let _ = stream.write_all(
                    format!(
                        "HTTP/1.1 {} Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        e.status()
                    )
                    .as_bytes(),
                );
                return;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

const TEXT: &str = "text/plain; charset=UTF-8";
const JSON: &str = "application/json";

const ENDPOINTS: &[(&str, &str, bool)] = &[
    ("/", "this index", false),
    ("/clusters", "upstream cluster status (?format=json)", false),
    ("/healthcheck/fail", "cause the server to fail health checks", true),
    ("/healthcheck/ok", "cause the server to pass health checks", true),
    ("/quitquitquit", "exit the server (graceful drain)", true),
    ("/ready", "print server state, 200 when LIVE", false),
    ("/server_info", "print server version/status information", false),
];

fn route(state: &AdminState, method: &str, target: &str) -> (u16, &'static str, String) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let Some((_, _, mutating)) = ENDPOINTS.iter().find(|(p, _, _)| *p == path) else {
        return (404, TEXT, "invalid path. admin commands are:\n".to_string() + &index());
    };
    if *mutating && method != "POST" {
        return (405, TEXT, "This endpoint requires POST\n".into());
    }
    match path {
        "/" => (200, TEXT, index()),
        "/ready" => {
            let s = state.state();
            (if s == "LIVE" { 200 } else { 503 }, TEXT, format!("{s}\n"))
        }
        "/server_info" => {
            let info = serde_json::json!({
                "version": state.info.version,
                "state": state.state(),
                "uptime_current_epoch": format!("{}s", state.started.elapsed().as_secs()),
                "uptime_all_epochs": format!("{}s", state.started.elapsed().as_secs()),
                "hot_restart_version": "disabled",
                "health_check_failed": state.health_failed.load(Ordering::Relaxed),
                "command_line_options": {
                    "service_cluster": state.info.service_cluster,
                    "service_node": state.info.service_node,
                    "service_zone": state.info.service_zone,
                    "concurrency": state.info.concurrency,
                    "io_driver": state.info.io_driver,
                },
                "command_line": state.info.command_line,
            });
            (200, JSON, serde_json::to_string_pretty(&info).unwrap_or_default() + "\n")
        }
        "/clusters" => clusters(state, query.split('&').any(|kv| kv == "format=json")),
        "/healthcheck/fail" => {
            state.health_failed.store(true, Ordering::Relaxed);
            (200, TEXT, "OK\n".into())
        }
        "/healthcheck/ok" => {
            state.health_failed.store(false, Ordering::Relaxed);
            (200, TEXT, "OK\n".into())
        }
        "/quitquitquit" => {
            // The process turns SIGTERM into a graceful drain; asking for one is all this takes.
            // SAFETY: kill on our own pid with a standard signal.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGTERM);
            }
            (200, TEXT, "OK\n".into())
        }
        _ => (404, TEXT, index()),
    }
}

fn index() -> String {
    ENDPOINTS
        .iter()
        .map(|(p, what, post)| format!("  {p}{}: {what}\n", if *post { " (POST)" } else { "" }))
        .collect()
}

fn clusters(state: &AdminState, json: bool) -> (u16, &'static str, String) {
    let snap = state.snapshot();
    if json {
        let list: Vec<_> = snap
            .clusters
            .iter()
            .map(|c| {
                serde_json::json!({
                    "name": c.name,
                    "host_statuses": c.endpoints.iter().map(|a| serde_json::json!({
                        "address": {"socket_address": {"address": a.ip().to_string(), "port_value": a.port()}},
                        "health_status": {"eds_health_status": "HEALTHY"},
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let body = serde_json::json!({ "cluster_statuses": list });
        return (200, JSON, serde_json::to_string_pretty(&body).unwrap_or_default() + "\n");
    }
    let mut out = String::new();
    for c in &snap.clusters {
        let cb = &c.circuit_breakers;
        out.push_str(&format!(
            "{0}::default_priority::max_connections::{1}\n{0}::default_priority::max_pending_requests::{2}\n\
             {0}::default_priority::max_requests::{3}\n{0}::default_priority::max_retries::{4}\n",
            c.name, cb.max_connections, cb.max_pending_requests, cb.max_requests, cb.max_retries
        ));
        for a in &c.endpoints {
            out.push_str(&format!("{}::{a}::health_flags::healthy\n", c.name));
        }
    }
    (200, TEXT, out)
}
