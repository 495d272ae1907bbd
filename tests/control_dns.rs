//! The control loop with a nameserver that never answers: one cluster's dead `dns_resolvers`
//! delays neither another cluster's DNS changes nor a config reload.

#[path = "support/dns_server.rs"]
mod dns_server;
mod support;

use dns_server::TestDnsServer;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use support::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn strict_dns(name: &str, host: &str, port: u16, resolver: SocketAddr) -> String {
    format!(
        r#"- name: {name}
  connect_timeout: 0.5s
  type: STRICT_DNS
  dns_refresh_rate: 0.5s
  dns_lookup_family: V4_ONLY
  dns_resolvers:
    - socket_address: {{ address: {}, port_value: {} }}
  lb_policy: ROUND_ROBIN
  load_assignment:
    cluster_name: {name}
    endpoints:
      - lb_endpoints:
          - endpoint: {{ address: {{ socket_address: {{ address: {host}, port_value: {port} }} }} }}
"#,
        resolver.ip(),
        resolver.port()
    )
}

fn config(listeners: &[&str], port: u16, good: SocketAddr, dead: SocketAddr) -> String {
    let routes = r#"virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
      - { match: { prefix: "/dead" }, route: { cluster: dead, timeout: 1s } }
      - { match: { prefix: "/" }, route: { cluster: svc, timeout: 3s } }
"#;
    let listeners: Vec<String> = listeners.iter().map(|l| listener_yaml(l, "127.0.0.1", routes)).collect();
    bootstrap_yaml(
        &listeners,
        &[strict_dns("svc", "svc.test", port, good), strict_dns("dead", "dead.test", port, dead)],
    )
}

fn answer(addr: SocketAddr) -> String {
    let r = get(addr, "/");
    assert_eq!(r.status, 200, "{}", r.text());
    r.first_line()
}

#[test]
fn a_dead_nameserver_delays_neither_other_clusters_nor_reloads() {
    let (two, _three) = twin_upstreams();
    let dns = TestDnsServer::start();
    dns.set("svc.test", vec![ip("127.0.0.2")]);
    // A black hole: the datagrams arrive and nobody ever answers (no ICMP refusal either).
    let black_hole = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let dead = black_hole.local_addr().expect("addr");

    let skiff = Skiff::start(&config(&["main"], two.addr.port(), dns.addr(), dead), &[]);
    let main = skiff.listener("main");
    assert!(eventually(Duration::from_secs(5), || answer(main) == "two"), "{}", skiff.log());

    // The working cluster follows its name promptly although the dead one has a resolution
    // hanging at every moment (refresh 0.5 s, each attempt waits seconds for nothing).
    dns.set("svc.test", vec![ip("127.0.0.3")]);
    let changed = Instant::now();
    assert!(eventually(Duration::from_secs(2), || answer(main) == "three"), "{}", skiff.log());
    let took = changed.elapsed();

    // A reload (a second listener) is picked up at the next 1 s check, not after the dead lookup.
    skiff.rewrite_config(&config(&["main", "second"], two.addr.port(), dns.addr(), dead));
    let rewritten = Instant::now();
    assert!(
        skiff.wait_for_log("listener \"second\" listening on", Duration::from_millis(2500)),
        "reload not applied within 2.5 s:\n{}",
        skiff.log()
    );
    assert_eq!(answer(skiff.listener("second")), "three");
    eprintln!("address change after {took:?}, reload after {:?}", rewritten.elapsed());

    // The dead cluster is reported as failing, with no hosts, and its requests get 503.
    assert!(skiff.log().contains("cluster dead: resolving dead.test"), "{}", skiff.log());
    assert_eq!(get(main, "/dead").status, 503);
}

#[test]
fn a_reload_waiting_on_a_dead_nameserver_holds_up_neither_dns_nor_sigterm() {
    let (two, _three) = twin_upstreams();
    let dns = TestDnsServer::start();
    dns.set("svc.test", vec![ip("127.0.0.2")]);
    let black_hole = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let dead = black_hole.local_addr().expect("addr");
    let only_svc = bootstrap_yaml(
        &[listener_yaml(
            "main",
            "127.0.0.1",
            "virtual_hosts:\n  - name: all\n    domains: [\"*\"]\n    routes: [{ match: { prefix: \"/\" }, route: { cluster: svc } }]\n",
        )],
        &[strict_dns("svc", "svc.test", two.addr.port(), dns.addr())],
    );
    let mut skiff = Skiff::start(&only_svc, &[]);
    assert_eq!(answer(skiff.listener("main")), "two");

    // The new cluster's first resolution waits on the black hole (2 s × 2 attempts with
    // resolv.conf's default options): the reload with it.
    skiff.rewrite_config(&config(&["main"], two.addr.port(), dns.addr(), dead));
    std::thread::sleep(Duration::from_millis(1200));
    // While that reload warms, the running cluster still follows its name.
    dns.set("svc.test", vec![ip("127.0.0.3")]);
    let main = skiff.listener("main");
    assert!(eventually(Duration::from_secs(2), || answer(main) == "three"), "{}", skiff.log());
    assert!(!skiff.log().contains("config reloaded"), "{}", skiff.log());
    let asked = Instant::now();
    let status = skiff.terminate();
    assert!(status.is_some_and(|s| s.success()), "{}", skiff.log());
    assert!(asked.elapsed() < Duration::from_secs(1), "exit took {:?}:\n{}", asked.elapsed(), skiff.log());
}
