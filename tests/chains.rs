//! Filter chains picked by `filter_chain_match`, each with its own network filters: Envoy's
//! `tls-sni` and `tls-inspector` examples do what their READMEs say, each chain's limits are its
//! own, a reload can give a socket other chains, and what Envoy refuses is refused with its place.
//! Matching rule by rule against the real Envoy is tests/parity_chains.rs.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::tls::{self, Certs};
use support::{free_port, indent, Skiff, TestUpstream};

const ADMIN: &str = "admin:\n  address: { socket_address: { address: 127.0.0.1, port_value: 0 } }\n";

fn example(name: &str) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/envoy-examples/envoyproxy-examples");
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// What docker-compose gives the example: `host`'s `address:` line (and the `port_value:` under
/// it) now name `to`.
fn point(yaml: &str, host: &str, to: SocketAddr) -> String {
    let from = format!("address: {host}\n");
    let at = yaml.find(&from).unwrap_or_else(|| panic!("no {from:?}"));
    let (head, rest) = yaml.split_at(at);
    let (_, rest) = rest.split_once('\n').unwrap();
    let (port_line, rest) = rest.split_once('\n').unwrap();
    let indent = &port_line[..port_line.len() - port_line.trim_start().len()];
    format!("{head}address: {}\n{indent}port_value: {}\n{rest}", to.ip(), to.port())
}

/// A skiff serving TLS with `body` as every answer, standing in for an HTTPS service.
fn https_service(certs: &Certs, bodies: &[&str]) -> (Skiff, Vec<SocketAddr>) {
    let listeners: Vec<String> = bodies
        .iter()
        .map(|body| {
            let routes = format!("virtual_hosts:\n- name: all\n  domains: [\"*\"]\n  routes:\n  - match: {{ prefix: / }}\n    direct_response: {{ status: 200, body: {{ inline_string: {body} }} }}\n");
            let l = support::listener_yaml(body, "127.0.0.1", &routes);
            tls::with_socket(&l, &tls::downstream_socket(certs, "up", "", ""))
        })
        .collect();
    let k = Skiff::start(&format!("{ADMIN}{}", support::bootstrap_yaml(&listeners, &[])), &[]);
    let addrs = bodies.iter().map(|b| k.listener(b)).collect();
    (k, addrs)
}

/// `curl -sk` as the examples' verify.sh runs it: the body, or how it failed.
fn curl(url: &str, extra: &[&str]) -> String {
    let out = Command::new("curl").args(["-sk", "--max-time", "5"]).args(extra).arg(url).output().unwrap();
    match out.status.code() {
        Some(0) => String::from_utf8_lossy(&out.stdout).into_owned(),
        // No response: an empty reply (52) or a reset (56), by whether the request had arrived.
        Some(52 | 56) => "closed".to_string(),
        Some(35) => "TLS handshake failed".to_string(),
        code => format!("curl failed ({code:?})"),
    }
}

/// Each of `lines` (`name: value`) is in the proxy's `/stats`.
fn assert_stats(admin: SocketAddr, lines: &[&str]) {
    let stats = support::get(admin, "/stats").text();
    for line in lines {
        assert!(stats.contains(line), "{line} in:\n{stats}");
    }
}

#[test]
fn envoys_tls_sni_example_terminates_two_names_and_passes_the_third_through() {
    let certs = tls::shared();
    let work = support::scratch_dir("tls-sni");
    std::fs::create_dir_all(work.join("certs")).unwrap();
    for (from, to) in [
        ("a.crt", "domain1.crt.pem"),
        ("a.key", "domain1.key.pem"),
        ("b.crt", "domain2.crt.pem"),
        ("b.key", "domain2.key.pem"),
    ] {
        std::fs::copy(certs.dir.join(from), work.join("certs").join(to)).unwrap();
    }
    let (http0, http1) = (TestUpstream::named("service-http0"), TestUpstream::named("service-http1"));
    let (_https, https) = https_service(certs, &["service-https"]);
    let port = free_port();
    let yaml = example("tls-sni/envoy.yaml")
        .replace("port_value: 10000", &format!("port_value: {port}"))
        .replace("filename: certs/", &format!("filename: {}/certs/", work.display()));
    let yaml = point(
        &point(&point(&yaml, "service-http0", http0.addr), "service-http1", http1.addr),
        "service-https",
        https[0],
    );
    let _k = Skiff::start(&yaml, &[]);
    let at = |name: &str| {
        let resolve = format!("{name}:{port}:127.0.0.1");
        curl(&format!("https://{name}:{port}"), &["--resolve", &resolve])
    };
    assert_eq!(at("domain1.example.com"), "service-http0");
    assert_eq!(at("domain2.example.com"), "service-http1");
    // Not terminated: the TLS service's own certificate and answer.
    assert_eq!(at("domain3.example.com"), "service-https");
    assert_eq!(at("domain4.example.com"), "TLS handshake failed");
    assert_eq!(curl(&format!("http://127.0.0.1:{port}"), &[]), "closed");
}

#[test]
fn envoys_tls_inspector_example_routes_by_alpn_and_serves_plaintext() {
    let certs = tls::shared();
    let http = TestUpstream::named("service-http");
    let (_https, https) = https_service(certs, &["service-https0", "service-https1"]);
    let port = free_port();
    let yaml = example("tls-inspector/envoy.yaml")
        .replace("port_value: 10000", &format!("port_value: {port}"))
        .replace("port_value: 12345", "port_value: 0")
        .replace("address: 0.0.0.0\n      port_value: 0", "address: 127.0.0.1\n      port_value: 0");
    let yaml = point(
        &point(&point(&yaml, "service-https1", https[1]), "service-https0", https[0]),
        "service-http",
        http.addr,
    );
    let k = Skiff::start(&yaml, &[]);
    // Before any client: the inspector's counters exist at 0, as verify.sh first waits for.
    let stats = || support::get(k.admin(), "/stats").text();
    assert!(stats().contains("tls_inspector.alpn_found: 0"), "{}", stats());
    assert_eq!(curl(&format!("https://localhost:{port}"), &["--http1.1"]), "service-https0");
    assert_eq!(curl(&format!("https://localhost:{port}"), &["--http2"]), "service-https1");
    assert_eq!(curl(&format!("http://localhost:{port}"), &[]), "service-http");
    assert_stats(
        k.admin(),
        &[
            "tls_inspector.alpn_found: 2",
            "tls_inspector.sni_found: 2",
            "tls_inspector.tls_found: 2",
            "tls_inspector.tls_not_found: 1",
        ],
    );
}

const LIMIT_ONE: &str = "- name: envoy.filters.network.local_ratelimit\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit\n    stat_prefix: plain_only\n    token_bucket: { max_tokens: 1, tokens_per_fill: 1, fill_interval: 3600s }\n";

fn hcm(stat_prefix: &str, body: &str) -> String {
    format!(
        "- name: envoy.filters.network.http_connection_manager\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n    stat_prefix: {stat_prefix}\n    http_filters: [{{ name: envoy.filters.http.router, typed_config: {{ \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }} }}]\n    route_config:\n      virtual_hosts:\n      - name: all\n        domains: [\"*\"]\n        routes: [{{ match: {{ prefix: / }}, direct_response: {{ status: 200, body: {{ inline_string: {body} }} }} }}]\n"
    )
}

fn listener(port: u16, chains: &str) -> String {
    format!(
        "{}static_resources:\n  listeners:\n  - name: main\n    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}\n    listener_filters:\n    - name: envoy.filters.listener.tls_inspector\n      typed_config: {{ \"@type\": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector }}\n    filter_chains:\n{}",
        ADMIN,
        indent(chains, 4)
    )
}

#[test]
fn each_chain_runs_its_own_network_filters_and_connection_manager() {
    let certs = tls::shared();
    let port = free_port();
    let chains = format!(
        "- filter_chain_match: {{ transport_protocol: raw_buffer }}\n  filters:\n{}{}- filter_chain_match: {{ transport_protocol: tls }}\n  {}  filters:\n{}",
        indent(LIMIT_ONE, 2),
        indent(&hcm("plain", "plaintext"), 2),
        indent(&tls::downstream_socket(certs, "a", "", ""), 2).trim_start(),
        indent(&hcm("secure", "tls"), 2),
    );
    let k = Skiff::start(&listener(port, &chains), &["--concurrency", "1"]);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(support::get(addr, "/").text(), "plaintext");
    // The plaintext chain's one token is spent; the TLS chain has no limit.
    assert_eq!(curl(&format!("http://127.0.0.1:{port}/"), &[]), "closed");
    for _ in 0..2 {
        assert_eq!(tls::curl(addr, "a.example", "/", certs, &[]).body, "tls");
    }
    assert_stats(
        k.admin(),
        &[
            "local_rate_limit.plain_only.rate_limited: 1",
            "http.plain.downstream_rq_2xx: 1",
            "http.secure.downstream_rq_2xx: 2",
            "http.secure.downstream_cx_ssl_total: 2",
        ],
    );
}

#[test]
fn a_reload_gives_the_listeners_socket_other_chains() {
    let certs = tls::shared();
    let port = free_port();
    let one = format!("- filters:\n{}", indent(&hcm("one", "one"), 2));
    let k = Skiff::start(&listener(port, &one), &[]);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(support::get(addr, "/").text(), "one");
    let two = format!(
        "- filter_chain_match: {{ transport_protocol: raw_buffer }}\n  filters:\n{}- filter_chain_match: {{ server_names: [a.example] }}\n  {}  filters:\n{}",
        indent(&hcm("plain", "plain"), 2),
        indent(&tls::downstream_socket(certs, "a", "", ""), 2).trim_start(),
        indent(&hcm("named", "named"), 2),
    );
    k.rewrite_config(&listener(port, &two));
    assert!(
        support::eventually(Duration::from_secs(10), || support::get(addr, "/").text() == "plain"),
        "{}",
        k.log()
    );
    assert_eq!(tls::curl(addr, "a.example", "/", certs, &[]).body, "named");
}

fn load_error(chains: &str) -> String {
    let yaml = listener(1, chains);
    match skiff::config::load_str(&yaml, "envoy.yaml") {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn chains_envoy_refuses_are_refused_with_their_place() {
    let chain = |m: &str| format!("- filter_chain_match: {m}\n  filters:\n{}", indent(&hcm("x", "x"), 2));
    let cases = [
        (
            [chain("{ server_names: [a.example, b.example] }"), chain("{ server_names: [b.example] }")]
                .concat(),
            "filter_chains[1].filter_chain_match: multiple filter chains with the same matching rules",
        ),
        (
            [chain("{}"), chain("{ transport_protocol: \"\" }")].concat(),
            "filter_chains[1].filter_chain_match: multiple filter chains with the same matching rules",
        ),
        (chain("{ source_type: NEARBY }"), "filter_chain_match.source_type: source_type \"NEARBY\""),
        (
            chain("{ prefix_ranges: [{ address_prefix: 10.0.0.0, prefix_len: 33 }] }"),
            "filter_chain_match.prefix_ranges[0].prefix_len: 33 is too long for 10.0.0.0",
        ),
        (chain("{ destination_port: 70000 }"), "filter_chain_match.destination_port: 70000 is not a port"),
        (
            chain("{ server_names: [\"a.*.example\"] }"),
            "server_names[0]: \"a.*.example\" is not a server name",
        ),
        (chain("{ direct_source_prefix_ranges: [] }"), "direct_source_prefix_ranges is not supported"),
    ];
    for (chains, expected) in cases {
        let e = load_error(&chains);
        assert!(e.contains(expected), "expected {expected:?} in:\n{e}");
    }
    let tuned =
        listener(1, &chain("{}")).replace("TlsInspector }", "TlsInspector, max_client_hello_size: 1000 }");
    let e = skiff::config::load_str(&tuned, "envoy.yaml").map(|_| ()).unwrap_err().to_string();
    assert!(
        e.contains("listener_filters[0].typed_config.max_client_hello_size: the TLS inspector's max_client_hello_size is not supported"),
        "{e}"
    );
    // Distinct rules load, the default chain beside them included.
    let ok = [chain("{ server_names: [a.example] }"), chain("{ server_names: [b.example] }")].concat();
    let yaml = listener(1, &ok).replace(
        "    filter_chains:\n",
        &format!(
            "    default_filter_chain:\n      filters:\n{}    filter_chains:\n",
            indent(&hcm("d", "d"), 6)
        ),
    );
    let loaded = skiff::config::load_str(&yaml, "envoy.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.bootstrap.listeners.len(), 3);
}
