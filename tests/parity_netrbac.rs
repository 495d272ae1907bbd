//! Envoy parity for `envoy.filters.network.rbac`: the same v3 config and the same clients go
//! through the real Envoy and through skiff. Three listeners: a connection manager allowing only
//! one source range (10.0.0.0/8, so the loopback client is denied; a `url_path` principal there
//! never matches a connection), a `tcp_proxy` denying its own
//! destination port (with shadow rules under a `shadow_rules_stat_prefix`) to a greeting upstream,
//! and an mTLS connection manager with the TLS inspector allowing one SNI with one client
//! certificate URI SAN. What each client saw, the tcp_proxy's access log and the filters' `/stats`
//! must be equal. Envoy is found as in tests/parity.rs; without it this skips (fails under CI).

mod support;

#[path = "support/envoy.rs"]
mod envoy;

#[path = "support/netrbac.rs"]
mod netrbac;

use netrbac::{allow, bootstrap, exchange, listener, rbac, tcp_proxy, tls_listener, REQUEST};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use support::{served_hcm_yaml, Skiff};

const TCP_LOG: &str = "%RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %UPSTREAM_HOST%";

const STATS: &[&str] = &[
    "src.rbac.allowed",
    "src.rbac.denied",
    "port.rbac.allowed",
    "port.rbac.denied",
    "port.rbac.dry_.shadow_allowed",
    "port.rbac.dry_.shadow_denied",
    "mtls.rbac.allowed",
    "mtls.rbac.denied",
    "mtls.rbac.shadow_allowed",
    "http.ingress.downstream_cx_total",
    "http.ingress.downstream_rq_total",
    "tcp.tcp_in.downstream_cx_total",
    "tcp.tcp_in.downstream_cx_rx_bytes_total",
    "cluster.backend.upstream_cx_total",
];

/// The listeners under test; `main` is the probe listener Envoy::start waits for.
struct Ports {
    main: u16,
    http: u16,
    tcp: u16,
    tls: u16,
}

fn config(admin: u16, p: &Ports, dir: &Path, upstream: SocketAddr) -> String {
    let certs = support::tls::shared();
    let hcm = served_hcm_yaml("ingress", "");
    let sources = allow(
        "ten",
        "[{ any: true }]",
        // A url_path rule loads (Envoy refuses only header rules) and never matches a connection.
        "[{ source_ip: { address_prefix: 10.0.0.0, prefix_len: 8 } }, { not_id: { any: true } }, { url_path: { path: { prefix: / } } }]",
    );
    let port_rules = format!(
        "action: DENY\npolicies:\n  closed: {{ permissions: [{{ destination_port: {} }}], principals: [{{ any: true }}] }}\n",
        p.tcp
    );
    let shadow = "shadow_rules_stat_prefix: dry_\nshadow_rules:\n  policies:\n    loopback: { permissions: [{ destination_ip: { address_prefix: 127.0.0.0, prefix_len: 8 } }], principals: [{ direct_remote_ip: { address_prefix: 127.0.0.1, prefix_len: 32 } }] }\n";
    let mtls = allow(
        "client",
        "[{ requested_server_name: { exact: a.example } }]",
        "[{ authenticated: { principal_name: { exact: \"spiffe://test/client\" } } }]",
    );
    let socket = support::tls::downstream_socket(
        certs,
        "a",
        "",
        &format!("validation_context: {{ trusted_ca: {{ filename: {} }} }}\n", certs.path("ca.crt")),
    );
    let listeners = [
        listener("main", p.main, &served_hcm_yaml("main", "")),
        listener("by_source", p.http, &(rbac("src", &sources, "") + &hcm)),
        listener(
            "by_port",
            p.tcp,
            &(rbac("port.", &port_rules, shadow) + &tcp_proxy(Some((&dir.join("tcp.log"), TCP_LOG)))),
        ),
        tls_listener("by_identity", p.tls, &(rbac("mtls", &mtls, "") + &hcm), &socket),
    ];
    bootstrap(admin, &listeners, upstream)
}

#[derive(Debug, PartialEq)]
struct Observed {
    clients: Vec<String>,
    tcp_log: Vec<String>,
    stats: BTreeMap<String, u64>,
}

fn run(proxy: &str, bin: &Path) -> Observed {
    let dir = support::scratch_dir(&format!("parity-netrbac-{proxy}"));
    let upstream = netrbac::greeting_upstream();
    // The destination-port rule names the port: both proxies get a fixed one.
    let tcp = support::free_port();
    let (addrs, admin, _envoy, _skiff);
    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    if proxy == "envoy" {
        let used = Cell::new((0, 0));
        let e = envoy::Envoy::start(bin, &dir, |main, admin| {
            let ports = Ports { main, http: support::free_port(), tcp, tls: support::free_port() };
            used.set((ports.http, ports.tls));
            config(admin, &ports, &dir, upstream.addr)
        });
        addrs = (at(used.get().0), at(tcp), at(used.get().1));
        admin = e.admin;
        _envoy = Some(e);
        _skiff = None;
    } else {
        let k = Skiff::start(&config(0, &Ports { main: 0, http: 0, tcp, tls: 0 }, &dir, upstream.addr), &[]);
        addrs = (k.listener("by_source"), k.listener("by_port"), k.listener("by_identity"));
        admin = k.admin();
        _skiff = Some(k);
        _envoy = None;
    }
    let (http, tcp, tls) = addrs;
    let certs = support::tls::shared();
    let cert = ["--cert", &certs.path("client.crt"), "--key", &certs.path("client.key")];
    let curl = |host: &str, extra: &[&str]| {
        let c = support::tls::curl(tls, host, "/", certs, extra);
        format!("{:?} {}", c.status, c.body)
    };
    let clients = vec![
        exchange(http, REQUEST, "served"),
        exchange(tcp, b"ping", "ping"),
        curl("a.example", &cert),
        curl("a.example", &[]),
        curl("localhost", &cert),
    ];
    let read = || std::fs::read_to_string(dir.join("tcp.log")).unwrap_or_default();
    support::wait_until(Duration::from_secs(5), || !read().is_empty());
    let stats_now =
        || envoy::parse_stats(&envoy::admin_get(admin, "/stats").map(|(_, b)| b).unwrap_or_default());
    let all = stats_now();
    let stats = STATS.iter().map(|n| (n.to_string(), all.get(*n).copied().unwrap_or(u64::MAX))).collect();
    let tcp_log = read().lines().map(|l| l.replace(&upstream.addr.to_string(), "UPSTREAM")).collect();
    Observed { clients, tcp_log, stats }
}

#[test]
fn network_rbac_allows_and_closes_like_envoy() {
    let Some(bin) = envoy::binary_or_skip("parity_netrbac") else { return };
    let envoy = run("envoy", &bin);
    let skiff = run("skiff", &bin);
    assert_eq!(envoy, skiff, "left is Envoy, right is skiff");
    // What the scenario is about, so that equal-but-wrong cannot pass.
    assert_eq!(
        skiff.clients,
        ["", "hello;", "Some(200) served", "None ", "None "].map(String::from).to_vec()
    );
    assert_eq!(skiff.tcp_log, ["- 4 6 UPSTREAM"]);
}
