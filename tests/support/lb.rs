//! Upstreams, configs and counting for the load-balancing tests (tests/load_balancing.rs,
//! tests/parity_lb.rs): Envoy's `locality-load-balancing` example with its docker names replaced by
//! loopback upstreams, an upstream that answers like the example's `service.py`, and the spread of
//! many requests over upstreams.
#![allow(dead_code)]

use crate::support::{Client, Reply, Seen, TestUpstream};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The example, copied unchanged from envoyproxy/examples.
pub fn locality_example() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("configs/envoy-examples/envoyproxy-examples/locality-load-balancing/envoy.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An upstream like the example's `service.py`: `GET /` answers `Hello from NAME!` while healthy
/// and 503 while not (its health check asks `/` too).
pub struct Service {
    pub name: String,
    pub healthy: Arc<AtomicBool>,
    pub upstream: TestUpstream,
}

impl Service {
    pub fn start(name: &str, healthy: bool) -> Service {
        let flag = Arc::new(AtomicBool::new(healthy));
        let (n, f) = (name.to_string(), flag.clone());
        let upstream = TestUpstream::start(Arc::new(move |_: &Seen| {
            if f.load(Ordering::Relaxed) {
                Reply::ok(&format!("Hello from {n}!\n"))
            } else {
                Reply::Full { status: 503, headers: vec![], body: b"Unhealthy".to_vec() }
            }
        }));
        Service { name: name.to_string(), healthy: flag, upstream }
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }
}

/// The example with its listener on `port` and admin on `admin` (0 for skiff), on 127.0.0.1, and
/// each `- endpoint:` block naming a docker host repeated once per service of that name (its
/// address and both `port_value: 8080` replaced): the example's `docker compose --scale`.
pub fn locality_example_on(port: u16, admin: u16, services: &[&Service]) -> String {
    let text = locality_example()
        .replace("address: 0.0.0.0", "address: 127.0.0.1")
        .replace("port_value: 8001", &format!("port_value: {admin}"))
        .replace("port_value: 3000", &format!("port_value: {port}"));
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.trim() != "- endpoint:" {
            out.push_str(line);
            out.push('\n');
            i += 1;
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let mut end = i + 1;
        while end < lines.len() && lines[end].len() - lines[end].trim_start().len() > indent {
            end += 1;
        }
        let block = lines[i..end].join("\n");
        let name = lines[i..end]
            .iter()
            .find_map(|l| l.trim().strip_prefix("address: "))
            .unwrap_or_default()
            .to_string();
        for s in services.iter().filter(|s| s.name.starts_with(&name)) {
            let a: SocketAddr = s.upstream.addr;
            out.push_str(
                &block
                    .replace(&format!("address: {name}"), &format!("address: {}", a.ip()))
                    .replace("port_value: 8080", &format!("port_value: {}", a.port())),
            );
            out.push('\n');
        }
        i = end;
    }
    out
}

/// `backend-local-1`, ...: the example's four services, healthy or not; `local1` of them named
/// `backend-local-1`, `backend-local-1-2`, ... (the scaled-up replicas).
pub fn example_services(local1: usize, healthy: &[bool]) -> Vec<Service> {
    let mut names: Vec<String> = (0..local1)
        .map(|i| if i == 0 { "backend-local-1".to_string() } else { format!("backend-local-1-{}", i + 1) })
        .collect();
    names.extend(["backend-local-2", "backend-remote-1", "backend-remote-2"].map(String::from));
    names
        .iter()
        .enumerate()
        .map(|(i, n)| Service::start(n, healthy.get(i).copied().unwrap_or(true)))
        .collect()
}

/// `n` requests for `path`, one connection each (as the example's client.py); answers counted by
/// their body's first line (replicas of a service count as one), "<status>" for others.
pub fn spread(addr: SocketAddr, path: &str, n: usize) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for _ in 0..n {
        let r = Client::connect(addr).get(path);
        let key = if r.status == 200 {
            let line = r.text().lines().next().unwrap_or("").to_string();
            // "Hello from backend-local-1-3!" counts as backend-local-1.
            match line.strip_prefix("Hello from backend-local-1-") {
                Some(_) => "Hello from backend-local-1!".to_string(),
                None => line,
            }
        } else {
            r.status.to_string()
        };
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

/// The share of `name` in `spread`, in percent.
pub fn percent(spread: &BTreeMap<String, usize>, name: &str) -> f64 {
    let total: usize = spread.values().sum();
    let n = spread.get(&format!("Hello from {name}!")).copied().unwrap_or(0);
    100.0 * n as f64 / total.max(1) as f64
}

/// Waits until the admin's `/clusters` shows each service's health as its check sees it:
/// `healthy`, or `/failed_active_hc` for one answering 503.
pub fn wait_checked(admin: SocketAddr, services: &[&Service]) -> bool {
    crate::support::eventually(std::time::Duration::from_secs(12), || {
        let text = crate::envoy::admin_get(admin, "/clusters").map(|(_, b)| b).unwrap_or_default();
        services.iter().all(|s| {
            let f = if s.healthy.load(Ordering::Relaxed) { "healthy" } else { "/failed_active_hc" };
            let line = format!("backend::{}::health_flags::{f}", s.upstream.addr);
            text.lines().any(|l| l == line)
        })
    })
}

/// The example's step 4: local-1 scaled to 5 replicas, 4 of them failing (then local-2,
/// remote-1, remote-2 healthy).
pub const STEP4: [bool; 8] = [true, false, false, false, false, true, true, true];

/// The cookie value Envoy generates for a connection from `client` to `proxy`.
pub fn cookie_value(client: SocketAddr, proxy: SocketAddr) -> String {
    format!("{:016x}", xxhash_rust::xxh64::xxh64(format!("{client}{proxy}").as_bytes(), 0))
}

/// The breaker tests' v3 bootstrap (tests/support/breakers.rs: listener `main` on `port`, 0 for
/// skiff, routing to cluster `backend` with `route_extra` in the route action) with `cluster`.
pub fn config(port: u16, admin: u16, cluster: &str, route_extra: &str) -> String {
    let log = crate::support::scratch_dir("lb").join("access.log");
    crate::breakers::config(port, admin, &log, route_extra, cluster)
}

/// An endpoint: address, `load_balancing_weight`, `health_status` (or "").
pub type Host<'a> = (SocketAddr, u32, &'a str);

/// Cluster `backend`: one locality (`zone: z0`, `z1`, ...) per `(weight or 0, endpoints)`;
/// `extra` at column 0.
pub fn cluster(lb: &str, extra: &str, localities: &[(u32, Vec<Host<'_>>)]) -> String {
    let mut eps = String::new();
    for (i, (weight, endpoints)) in localities.iter().enumerate() {
        eps.push_str(&format!("      - locality: {{ zone: z{i} }}\n        lb_endpoints:\n"));
        for (a, w, health) in endpoints {
            eps.push_str(&format!(
                "          - endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }}\n            load_balancing_weight: {w}\n",
                a.ip(),
                a.port()
            ));
            if !health.is_empty() {
                eps.push_str(&format!("            health_status: {health}\n"));
            }
        }
        if *weight != 0 {
            eps.push_str(&format!("        load_balancing_weight: {weight}\n"));
        }
    }
    format!(
        "- name: backend\n  connect_timeout: 0.5s\n  type: STATIC\n  lb_policy: {lb}\n{extra}  load_assignment:\n    cluster_name: backend\n    endpoints:\n{eps}",
        extra = crate::support::indent(extra, 2)
    )
}
