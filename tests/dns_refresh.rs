//! DNS clusters as a user sees them: a STRICT_DNS / LOGICAL_DNS cluster follows its name as DNS
//! (a real test server on loopback) or a hosts file changes, on every shard, without failing
//! requests, and keeps its last good endpoints when DNS goes away.

#[path = "support/dns_server.rs"]
mod dns_server;
mod support;

use dns_server::TestDnsServer;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A listener routing to cluster `svc` of `kind`, resolving `name` (port `port`) with `resolvers`
/// (none: the system's, i.e. the hosts file first).
fn dns_config(kind: &str, name: &str, port: u16, resolvers: Option<SocketAddr>) -> String {
    let routes = r#"virtual_hosts:
  - name: all
    domains: ["*"]
    routes: [{ match: { prefix: "/" }, route: { cluster: svc, timeout: 3s } }]
"#;
    let resolvers = resolvers
        .map(|r| {
            format!(
                "  dns_resolvers:\n    - socket_address: {{ address: {}, port_value: {} }}\n",
                r.ip(),
                r.port()
            )
        })
        .unwrap_or_default();
    let cluster = format!(
        r#"- name: svc
  connect_timeout: 0.5s
  type: {kind}
  dns_refresh_rate: 0.5s
  dns_lookup_family: V4_ONLY
{resolvers}  lb_policy: ROUND_ROBIN
  load_assignment:
    cluster_name: svc
    endpoints:
      - lb_endpoints:
          - endpoint: {{ address: {{ socket_address: {{ address: {name}, port_value: {port} }} }} }}
"#
    );
    bootstrap_yaml(&[listener_yaml("main", "127.0.0.1", routes)], &[cluster])
}

/// Who answers `n` requests, each on a fresh connection (so SO_REUSEPORT spreads them over shards).
fn fresh(addr: SocketAddr, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let r = get(addr, "/");
            assert_eq!(r.status, 200, "{}", r.text());
            r.first_line()
        })
        .collect()
}

/// Background load: `threads` clients, half keep-alive and half a connection per request, until
/// dropped; counts every answer that is not a 2xx from an upstream, and every socket error.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|i| {
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                std::thread::spawn(move || {
                    let mut client: Option<Client> = None;
                    while !stop.load(Ordering::Relaxed) {
                        if client.is_none() || i % 2 == 1 {
                            match Client::try_connect(addr) {
                                Ok(c) => client = Some(c),
                                Err(e) => {
                                    failures.lock().unwrap().push(format!("connect: {e}"));
                                    continue;
                                }
                            }
                        }
                        match client.as_mut().and_then(|c| c.request("x", "/", &[])) {
                            Some(r) if (200..300).contains(&r.status) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Some(r) => {
                                failures.lock().unwrap().push(format!("status {}: {}", r.status, r.text()))
                            }
                            None => {
                                failures.lock().unwrap().push("no response".into());
                                client = None;
                            }
                        }
                    }
                })
            })
            .collect();
        Load { stop, ok, failures, threads }
    }

    /// Stops the load and returns (successes, failures).
    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

#[test]
fn strict_dns_follows_the_name_on_every_shard_without_failures() {
    let (two, _three) = twin_upstreams();
    let dns = TestDnsServer::start();
    dns.set("svc.test", vec![ip("127.0.0.2")]);
    let skiff = Skiff::start(
        &dns_config("STRICT_DNS", "svc.test", two.addr.port(), Some(dns.addr())),
        &["--concurrency", "2"],
    );
    let addr = skiff.listener("main");
    assert!(fresh(addr, 20).iter().all(|w| w == "two"));

    let load = Load::start(addr, 4);
    std::thread::sleep(Duration::from_millis(300));
    dns.set("svc.test", vec![ip("127.0.0.3")]);
    let flipped = Instant::now();
    let moved = eventually(Duration::from_secs(5), || fresh(addr, 1)[0] == "three");
    let took = flipped.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let (ok, failures) = load.finish();
    assert!(moved, "traffic never moved:\n{}", skiff.log());
    assert!(took < Duration::from_secs(3), "took {took:?} with a 0.5 s refresh");
    assert!(
        failures.is_empty(),
        "{} failed requests during the flip: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok > 20, "too little load: {ok}");
    // Every shard has the new answer: many fresh connections, all on the new upstream.
    let who = fresh(addr, 40);
    assert!(who.iter().all(|w| w == "three"), "{who:?}");
}

#[test]
fn dns_failure_keeps_the_last_good_endpoints() {
    let (_two, _three) = twin_upstreams();
    let port = _two.addr.port();
    let dns = TestDnsServer::start();
    dns.set("svc.test", vec![ip("127.0.0.3")]);
    let skiff =
        Skiff::start(&dns_config("STRICT_DNS", "svc.test", port, Some(dns.addr())), &["--concurrency", "2"]);
    let addr = skiff.listener("main");
    assert!(fresh(addr, 10).iter().all(|w| w == "three"));

    // SERVFAIL: refreshes fail, the cluster keeps its endpoints.
    dns.set_servfail(true);
    assert!(
        skiff.wait_for_log("keeping the last good answer", Duration::from_secs(5)),
        "no failed refresh logged:\n{}",
        skiff.log()
    );
    assert!(fresh(addr, 10).iter().all(|w| w == "three"));

    // The server gone altogether (no answers at all): still serving.
    let before = skiff.log().matches("keeping the last good answer").count();
    drop(dns);
    assert!(
        eventually(Duration::from_secs(8), || skiff.log().matches("keeping the last good answer").count()
            > before),
        "no failed refresh after the server went away:\n{}",
        skiff.log()
    );
    assert!(fresh(addr, 10).iter().all(|w| w == "three"));
}

#[test]
fn strict_dns_balances_over_every_address() {
    let (two, _three) = twin_upstreams();
    let dns = TestDnsServer::start();
    dns.set("svc.test", vec![ip("127.0.0.2"), ip("127.0.0.3")]);
    let skiff = Skiff::start(
        &dns_config("STRICT_DNS", "svc.test", two.addr.port(), Some(dns.addr())),
        &["--concurrency", "1"],
    );
    let mut client = Client::connect(skiff.listener("main"));
    let who: Vec<String> =
        (0..20).map(|_| client.request("x", "/", &[]).expect("response").first_line()).collect();
    assert_eq!(who.iter().filter(|w| *w == "two").count(), 10, "{who:?}");
    assert_eq!(who.iter().filter(|w| *w == "three").count(), 10, "{who:?}");
}

#[test]
fn logical_dns_uses_the_first_address_as_the_server_ordered_them() {
    let (two, _three) = twin_upstreams();
    for (answer, expected) in [(["127.0.0.2", "127.0.0.3"], "two"), (["127.0.0.3", "127.0.0.2"], "three")] {
        let dns = TestDnsServer::start();
        dns.set("svc.test", answer.iter().map(|a| ip(a)).collect());
        let skiff = Skiff::start(
            &dns_config("LOGICAL_DNS", "svc.test", two.addr.port(), Some(dns.addr())),
            &["--concurrency", "1"],
        );
        let mut client = Client::connect(skiff.listener("main"));
        let who: Vec<String> =
            (0..10).map(|_| client.request("x", "/", &[]).expect("response").first_line()).collect();
        assert!(who.iter().all(|w| w == expected), "answer {answer:?}: {who:?}");
    }
}

#[test]
fn hosts_file_resolves_and_is_reread() {
    let (two, _three) = twin_upstreams();
    let dir = scratch_dir("hosts");
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "# test hosts\n127.0.0.2   svc-hosts.internal other.alias\n").unwrap();
    let skiff = Skiff::start(
        &dns_config("STRICT_DNS", "svc-hosts.internal", two.addr.port(), None),
        &["--hosts-file", hosts.to_str().unwrap()],
    );
    let addr = skiff.listener("main");
    assert!(fresh(addr, 6).iter().all(|w| w == "two"));
    // Editing the hosts file moves the traffic too (it is read on every refresh, like a resolver).
    let tmp = dir.join("hosts.tmp");
    std::fs::write(&tmp, "127.0.0.3 svc-hosts.internal\n").unwrap();
    std::fs::rename(&tmp, &hosts).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || fresh(addr, 1)[0] == "three"),
        "hosts file change not seen:\n{}",
        skiff.log()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_name_that_appears_after_start_is_picked_up() {
    let (two, _three) = twin_upstreams();
    let dns = TestDnsServer::start();
    let skiff = Skiff::start(
        &dns_config("STRICT_DNS", "late.test", two.addr.port(), Some(dns.addr())),
        &["--concurrency", "2"],
    );
    let addr = skiff.listener("main");
    // No hosts yet: an answer, not a hang.
    let r = get(addr, "/");
    assert_eq!(r.status, 503, "{}", r.text());
    dns.set("late.test", vec![ip("127.0.0.2")]);
    assert!(
        eventually(Duration::from_secs(5), || get(addr, "/").status == 200),
        "the name was never picked up:\n{}",
        skiff.log()
    );
    assert!(fresh(addr, 20).iter().all(|w| w == "two"));
}
