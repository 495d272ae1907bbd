//! `envoy.filters.network.rbac` as a user sees it from skiff alone: what is refused at load (with
//! its place in the file), a connection manager's connection denied by its source address and
//! closed on its first byte with nothing sent and nothing logged, a tcp_proxy's by its
//! destination port (the upstream's greeting still reaches the client first, as in Envoy), an
//! mTLS listener's by the SNI and the client certificate's URI SAN, the stats' names, and the
//! shipped `configs/security/network-rbac.yaml`. What Envoy does with the same traffic is
//! tests/parity_netrbac.rs.

mod support;

#[path = "support/netrbac.rs"]
mod netrbac;

use netrbac::{bootstrap, exchange, listener, rbac, tcp_proxy, tls_listener, REQUEST};
use std::net::SocketAddr;
use std::time::Duration;
use support::{served_hcm_yaml, Skiff};

fn load_error(filters: &str) -> String {
    let yaml = bootstrap(0, &[listener("main", 0, filters)], SocketAddr::from(([127, 0, 0, 1], 9)));
    match skiff::config::load_str(&yaml, "skiff.yaml") {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

fn stat(skiff: &Skiff, name: &str) -> u64 {
    support::stat(skiff.admin(), name).unwrap_or_else(|| panic!("no {name} in /stats"))
}

#[test]
fn rules_that_need_a_request_and_what_skiff_does_not_do_are_refused_at_their_place() {
    let hcm = served_hcm_yaml("ingress", "");
    let cases = [
        (
            "action: ALLOW\npolicies:\n  p: { permissions: [{ header: { name: x, present_match: true } }], principals: [{ any: true }] }\n",
            "",
            "typed_config.rules.policies.p.permissions: a header rule is not supported by the network RBAC filter",
        ),
        (
            "action: ALLOW\npolicies:\n  p: { permissions: [{ any: true }], principals: [{ and_ids: { ids: [{ not_id: { header: { name: x, present_match: true } } }] } }] }\n",
            "",
            "typed_config.rules.policies.p.principals: a header rule is not supported by the network RBAC filter",
        ),
        (
            "action: ALLOW\n",
            "enforcement_type: CONTINUOUS\n",
            "typed_config.enforcement_type: enforcement_type CONTINUOUS is not supported",
        ),
        ("action: ALLOW\n", "delay_deny: 1s\n", "typed_config.delay_deny: delay_deny is not supported"),
        (
            "action: ALLOW\n",
            "matcher: {}\n",
            "typed_config.matcher: matcher is not supported: write the policies in rules",
        ),
    ];
    for (rules, extra, expected) in cases {
        let e = load_error(&format!("{}{hcm}", rbac("net", rules, extra)));
        assert!(e.contains(expected), "{e}\n{rules}");
    }
    let no_prefix = load_error(
        &format!("{}{hcm}", rbac("net", "action: DENY\n", "")).replace("    stat_prefix: net\n", ""),
    );
    assert!(no_prefix.contains("typed_config.stat_prefix: stat_prefix is required"), "{no_prefix}");
}

#[test]
fn a_connection_managers_connection_is_decided_by_its_source_on_the_first_byte() {
    let dir = support::scratch_dir("netrbac-http");
    let log = dir.join("http.log");
    let hcm = served_hcm_yaml("ingress", &support::file_access_log_yaml(&log, "%RESPONSE_CODE%"));
    let only = |cidr: &str| {
        format!("action: ALLOW\npolicies:\n  loopback: {{ permissions: [{{ any: true }}], principals: [{{ source_ip: {{ address_prefix: {cidr}, prefix_len: 8 }} }}] }}\n")
    };
    // A trailing dot in stat_prefix is Envoy's scope separator: `allowed.` counts `allowed.rbac.*`.
    let yaml = bootstrap(
        0,
        &[
            listener("allowed", 0, &format!("{}{hcm}", rbac("allowed.", &only("127.0.0.0"), ""))),
            listener("denied", 0, &format!("{}{hcm}", rbac("denied", &only("10.0.0.0"), ""))),
        ],
        SocketAddr::from(([127, 0, 0, 1], 9)),
    );
    let skiff = Skiff::start(&yaml, &[]);
    let served = exchange(skiff.listener("allowed"), REQUEST, "served");
    assert!(served.starts_with("HTTP/1.1 200") && served.ends_with("served"), "{served}");
    // Denied: no reply at all, the connection just closes, and the connection manager logs nothing.
    assert_eq!(exchange(skiff.listener("denied"), REQUEST, ""), "");
    assert_eq!(
        [
            stat(&skiff, "allowed.rbac.allowed"),
            stat(&skiff, "allowed.rbac.denied"),
            stat(&skiff, "denied.rbac.allowed"),
            stat(&skiff, "denied.rbac.denied"),
            stat(&skiff, "denied.rbac.shadow_denied"),
        ],
        [1, 0, 0, 1, 0]
    );
    assert!(support::wait_until(Duration::from_secs(3), || std::fs::read_to_string(&log)
        .is_ok_and(|l| l.lines().count() == 1)));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(std::fs::read_to_string(&log).unwrap_or_default(), "200\n");
}

#[test]
fn a_tcp_proxys_connection_is_decided_by_its_destination_port_after_the_upstream_greets() {
    let dir = support::scratch_dir("netrbac-tcp");
    let upstream = netrbac::greeting_upstream();
    let port = support::free_port();
    let rules = format!(
        "action: DENY\npolicies:\n  closed_port: {{ permissions: [{{ destination_port: {port} }}], principals: [{{ any: true }}] }}\n"
    );
    // The shadow rules allow the other port only: each connection counts into one of them.
    let shadow = format!(
        "shadow_rules_stat_prefix: dry_\nshadow_rules:\n  policies:\n    other: {{ permissions: [{{ not_rule: {{ destination_port: {port} }} }}], principals: [{{ any: true }}] }}\n"
    );
    let log = dir.join("tcp.log");
    let filters = format!(
        "{}{}",
        rbac("net", &rules, &shadow),
        tcp_proxy(Some((&log, "%RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT%")))
    );
    // The same rules where nothing logs (skiff reads the local address only for what needs it).
    let unlogged_port = support::free_port();
    let unlogged = format!(
        "{}{}",
        rbac("quiet", &rules.replace(&port.to_string(), &unlogged_port.to_string()), ""),
        tcp_proxy(None)
    );
    let listeners = [
        listener("closed", port, &filters),
        listener("open", 0, &filters),
        listener("unlogged", unlogged_port, &unlogged),
    ];
    let skiff = Skiff::start(&bootstrap(0, &listeners, upstream.addr), &[]);
    assert_eq!(exchange(skiff.listener("open"), b"ping", "ping"), "hello;ping");
    // The greeting came before the client's first byte; that byte closed the connection.
    assert_eq!(exchange(skiff.listener("closed"), b"ping", ""), "hello;");
    assert_eq!(exchange(skiff.listener("unlogged"), b"ping", ""), "hello;");
    assert_eq!(
        [
            stat(&skiff, "net.rbac.allowed"),
            stat(&skiff, "net.rbac.denied"),
            stat(&skiff, "net.rbac.dry_.shadow_allowed"),
            stat(&skiff, "net.rbac.dry_.shadow_denied"),
            stat(&skiff, "quiet.rbac.denied"),
        ],
        [1, 1, 1, 1, 1]
    );
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(support::wait_until(Duration::from_secs(3), || read().lines().count() == 2), "{}", read());
    let mut lines: Vec<String> = read().lines().map(String::from).collect();
    lines.sort();
    // No response flag for the denied one (Envoy's reason is its termination details); its four
    // bytes were read, never sent upstream.
    assert_eq!(lines, ["- 4 10", "- 4 6"]);
}

#[test]
fn an_mtls_listener_decides_on_the_sni_and_the_client_certificate_after_the_handshake() {
    let certs = support::tls::shared();
    let socket = support::tls::downstream_socket(
        certs,
        "a",
        "",
        &format!("validation_context: {{ trusted_ca: {{ filename: {} }} }}\n", certs.path("ca.crt")),
    );
    let rules = "action: ALLOW\npolicies:\n  client: { permissions: [{ requested_server_name: { exact: a.example } }], principals: [{ authenticated: { principal_name: { exact: spiffe://test/client } } }] }\n";
    let filters = format!("{}{}", rbac("mtls", rules, ""), served_hcm_yaml("ingress", ""));
    // The SNI is known only to a listener with the TLS inspector, in Envoy as in skiff.
    let main = tls_listener("main", 0, &filters, &socket);
    let yaml = bootstrap(0, &[main], SocketAddr::from(([127, 0, 0, 1], 9)));
    let skiff = Skiff::start(&yaml, &[]);
    let addr = skiff.listener("main");
    let cert = ["--cert", &certs.path("client.crt"), "--key", &certs.path("client.key")];
    let with_cert = support::tls::curl(addr, "a.example", "/", certs, &cert);
    assert_eq!((with_cert.status, with_cert.body.as_str()), (Some(200), "served"), "{with_cert:?}");
    let without = support::tls::curl(addr, "a.example", "/", certs, &[]);
    assert_eq!(without.status, None, "{without:?}");
    // The same certificate on another name the listener's certificate also has.
    let other_name = support::tls::curl(addr, "localhost", "/", certs, &cert);
    assert_eq!(other_name.status, None, "{other_name:?}");
    assert_eq!([stat(&skiff, "mtls.rbac.allowed"), stat(&skiff, "mtls.rbac.denied")], [1, 2]);
}

/// `configs/security/network-rbac.yaml` with the test certificates in place of its placeholders.
fn shipped_config() -> String {
    let certs = support::tls::shared();
    let path = format!("{}/configs/security/network-rbac.yaml", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(path)
        .expect("read the shipped config")
        .replace("/etc/skiff/tls/server.crt", &certs.path("a.crt"))
        .replace("/etc/skiff/tls/server.key", &certs.path("a.key"))
        .replace("/etc/skiff/tls/clients-ca.crt", &certs.path("ca.crt"))
}

#[test]
fn the_shipped_config_loads_with_real_certificates_in_place() {
    let yaml = shipped_config();
    let loaded = skiff::config::load_str(&yaml, "network-rbac.yaml").unwrap_or_else(|e| panic!("{e}"));
    let rbac_filters = |filters: &[skiff::config::NetFilter]| {
        filters.iter().filter(|f| matches!(f, skiff::config::NetFilter::Rbac(_))).count()
    };
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let b = &loaded.bootstrap;
    assert_eq!(
        (rbac_filters(&b.tcp_listeners[0].net_filters), rbac_filters(&b.listeners[0].net_filters)),
        (1, 1)
    );
}

#[test]
fn the_shipped_config_loads_back_from_its_dump() {
    let certs = support::tls::shared();
    let yaml = shipped_config();
    let original = skiff::config::load_str(&yaml, "network-rbac").unwrap_or_else(|e| panic!("{e}")).bootstrap;
    let dump = skiff::admin::config_dump::render_bootstrap(&original);
    // The dump redacts the private key's path.
    let dump = serde_json::to_string(&dump["configs"][0]["bootstrap"])
        .expect("json")
        .replace("[redacted]", &certs.path("a.key"));
    let back = skiff::config::load_str(&dump, "dump").unwrap_or_else(|e| panic!("{e}\n{dump}")).bootstrap;
    assert_eq!(back, original, "{dump}");
}
