//! Upstreams and cluster YAML for the outlier-detection and hash-balancing tests
//! (tests/outlier.rs, tests/parity_outlier.rs): hosts that answer their name, always 503 or mostly 503, a
//! `backend` cluster over them with extra YAML, and which host each request reached.
#![allow(dead_code)]

use crate::support::{get_host, Reply, TestUpstream};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A host that answers every request 503 with body `failing`.
pub fn failing() -> TestUpstream {
    TestUpstream::start(Arc::new(|_| Reply::Full { status: 503, headers: vec![], body: b"failing".to_vec() }))
}

/// A host that answers 200 `flaky` to one request of every `n` and 503 to the others.
pub fn flaky(n: usize) -> TestUpstream {
    let count = Arc::new(AtomicUsize::new(0));
    TestUpstream::start(Arc::new(move |_| {
        if count.fetch_add(1, Ordering::Relaxed).is_multiple_of(n) {
            Reply::ok("flaky")
        } else {
            Reply::Full { status: 503, headers: vec![], body: b"failing".to_vec() }
        }
    }))
}

/// `first` then four hosts answering their names (b to e): the five addresses, and the four
/// upstreams (to keep alive).
pub fn with_four_good(first: SocketAddr) -> (Vec<SocketAddr>, Vec<TestUpstream>) {
    let good: Vec<TestUpstream> = ["b", "c", "d", "e"].iter().map(|n| TestUpstream::named(n)).collect();
    let hosts = std::iter::once(first).chain(good.iter().map(|g| g.addr)).collect();
    (hosts, good)
}

/// Cluster `backend` (STATIC, `lb`) over `hosts`, with `extra` YAML lines at column 0.
pub fn backend(lb: &str, hosts: &[SocketAddr], extra: &str) -> String {
    let endpoints: Vec<(SocketAddr, &str)> = hosts.iter().map(|a| (*a, "")).collect();
    crate::breakers::cluster(lb, &[(0, endpoints)], extra)
}

/// (status, body) of `n` GETs of `path`, each on its own connection (so both shards serve).
pub fn statuses(addr: SocketAddr, path: &str, n: usize, headers: &[(&str, &str)]) -> Vec<(u16, String)> {
    (0..n)
        .map(|_| {
            let r = get_host(addr, "example.com", path, headers);
            (r.status, r.text())
        })
        .collect()
}

/// The body (the host's name) that answered a request with `x-user: key`.
pub fn host_for(addr: SocketAddr, key: &str) -> String {
    get_host(addr, "example.com", "/", &[("x-user", key)]).text()
}
