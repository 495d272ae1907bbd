//! What the xDS tests serve and ask (tests/xds_grpc.rs, tests/xds_delta.rs): the bootstraps of
//! configs/xds/ pointed at a test server, the resources (clusters, assignments, a listener,
//! route configurations) as the JSON `xds_server` serves, and the requests' outcomes through a
//! proxy. Needs the test crate's `support`, `envoy` and `xds_server` modules.
#![allow(dead_code)]

use crate::envoy::{admin_get, parse_stats};
use crate::support::{Client, TestUpstream};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;

pub use crate::xds_server::{CDS, EDS, LDS, RDS};

/// configs/xds/`file` with the server at `xds`, node `node`, admin on `admin_port`.
pub fn bootstrap(file: &str, xds: SocketAddr, node: &str, admin_port: u16) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/xds").join(file);
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("configs/xds/{file}: {e}"))
        .replace("id: test-id", &format!("id: {node}"))
        .replace("type: STRICT_DNS", "type: STATIC")
        .replace("port_value: 18000", &format!("port_value: {}", xds.port()))
        .replace("port_value: 19000", &format!("port_value: {admin_port}"))
}

/// An EDS cluster whose endpoints come over the aggregated stream.
pub fn cluster(name: &str) -> Value {
    json!({
        "@type": CDS, "name": name, "type": "EDS", "connect_timeout": "1s",
        "eds_cluster_config": {"eds_config": {"ads": {}, "resource_api_version": "V3"}},
    })
}

pub fn endpoints(name: &str, upstreams: &[&TestUpstream]) -> Value {
    let lb: Vec<Value> = upstreams
        .iter()
        .map(|u| json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": u.addr.port()}}}}))
        .collect();
    json!({"@type": EDS, "cluster_name": name, "endpoints": [{"lb_endpoints": lb}]})
}

/// listener_0 on `port`, its routes ("local_route") over the aggregated stream.
pub fn listener(port: u16) -> Value {
    json!({
        "@type": LDS, "name": "listener_0",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "ingress_http",
                "rds": {"route_config_name": "local_route", "config_source": {"ads": {}, "resource_api_version": "V3"}},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
            },
        }]}],
    })
}

/// "local_route": each (prefix, cluster) a route.
pub fn routes(table: &[(&str, &str)]) -> Value {
    let routes: Vec<Value> = table
        .iter()
        .map(|(prefix, cluster)| json!({"match": {"prefix": prefix}, "route": {"cluster": cluster}}))
        .collect();
    json!({"@type": RDS, "name": "local_route", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]})
}

/// Status and answering upstream of a GET on a fresh connection ("-" when no upstream answered).
pub fn outcome(addr: SocketAddr, path: &str) -> String {
    let Ok(mut c) = Client::try_connect(addr) else { return "refused".to_string() };
    match c.request("example.com", path, &[]) {
        Some(r) => format!("{} {}", r.status, r.header("x-upstream").unwrap_or("-")),
        None => "no answer".to_string(),
    }
}

/// The upstreams that answer `path` over `n` requests, sorted, with the status.
pub fn answers(addr: SocketAddr, path: &str, n: usize) -> Vec<String> {
    let mut seen: Vec<String> = (0..n).map(|_| outcome(addr, path)).collect();
    seen.sort();
    seen.dedup();
    seen
}

pub fn stats(admin: SocketAddr) -> BTreeMap<String, u64> {
    parse_stats(&admin_get(admin, "/stats").map(|(_, b)| b).unwrap_or_default())
}

/// GETs of `path` through `addr` in a loop on a thread of its own (at most 20 000), each wanting
/// a 200, until `finish`.
pub struct LoadRun {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(u64, Vec<String>)>,
}

impl LoadRun {
    pub fn start(addr: SocketAddr, path: &'static str) -> LoadRun {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut client = Client::connect(addr);
            let (mut sent, mut failures) = (0u64, Vec::new());
            while !stopped.load(Ordering::Relaxed) && sent < 20_000 {
                sent += 1;
                match client.request("example.com", path, &[]) {
                    Some(r) if r.status == 200 => {}
                    other => {
                        failures.push(other.map(|r| r.first_line()).unwrap_or_else(|| "no answer".into()));
                        client = Client::connect(addr);
                    }
                }
            }
            (sent, failures)
        });
        LoadRun { stop, thread }
    }

    /// Stops the run: how many requests it sent, and each failure (status line or "no answer").
    pub fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("load thread")
    }
}

/// The first world of the push scenarios: `/a` over a1 and a2, `/b` to b, nothing else routed.
pub fn assert_first_world(name: &str, addr: SocketAddr, log: impl Fn() -> String) {
    let limit = std::time::Duration::from_secs(15);
    assert!(
        crate::support::eventually(limit, || answers(addr, "/a", 6) == ["200 a1", "200 a2"]
            && outcome(addr, "/b") == "200 b"),
        "{name}: /a {:?} /b {}\n{}",
        answers(addr, "/a", 6),
        outcome(addr, "/b"),
        log()
    );
    assert_eq!(outcome(addr, "/nothing"), "404 -", "{name}");
}

/// skiff's (`s`) and Envoy's (`e`) subscription stats of the push scenarios agree.
pub fn assert_same_update_stats(s: &BTreeMap<String, u64>, e: &BTreeMap<String, u64>) {
    for name in [
        "control_plane.connected_state",
        "cluster_manager.cds.update_rejected",
        "listener_manager.lds.update_rejected",
        "http.ingress_http.rds.local_route.update_rejected",
    ] {
        assert_eq!(s.get(name), e.get(name), "{name}");
    }
}
