//! Envoy parity for filter chain matching: the same v3 config (four listeners whose filter chains
//! differ by `server_names`, `transport_protocol`, `application_protocols`, destination port and
//! IP, source type and port, with a TLS passthrough `tcp_proxy` chain and a `default_filter_chain`)
//! runs in the real Envoy and in skiff; curl connects with different SNI, ALPN, plaintext and
//! source ports, and which chain served each client (its `direct_response` body), each chain's
//! access log and the listener and chain stats (`no_filter_chain_match` included) must be equal.
//! Envoy is found as in tests/parity.rs; without it these skip (fail under CI).

mod support;

#[path = "support/envoy.rs"]
mod envoy;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::tls::{self, Certs};
use support::{free_port, indent, Skiff};

const INSPECTOR: &str = "listener_filters:\n- name: envoy.filters.listener.tls_inspector\n  typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector }\n";

/// The listeners' ports and the client port one chain asks for (fixed, so that Envoy and skiff
/// run the same config).
#[derive(Clone, Copy)]
struct Ports {
    main: u16,
    strict: u16,
    addr: u16,
    port: u16,
    blind: u16,
    slow: u16,
    slow_close: u16,
    up: u16,
    client: u16,
}

/// A chain's connection manager answering every request with `body`, logging to `<dir>/<body>.log`.
fn answering(body: &str, dir: &Path) -> String {
    format!(
        "filters:\n- name: envoy.filters.network.http_connection_manager\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n    stat_prefix: {body}\n    access_log:\n    - name: envoy.access_loggers.file\n      typed_config:\n        \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n        path: {}\n        log_format: {{ text_format_source: {{ inline_string: \"%RESPONSE_CODE% %REQ(:AUTHORITY)% %REQ(:PATH)%\\n\" }} }}\n    http_filters: [{{ name: envoy.filters.http.router, typed_config: {{ \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }} }}]\n    route_config:\n      virtual_hosts:\n      - name: all\n        domains: [\"*\"]\n        routes: [{{ match: {{ prefix: / }}, direct_response: {{ status: 200, body: {{ inline_string: {body} }} }} }}]\n",
        dir.join(format!("{body}.log")).display()
    )
}

fn chain(matcher: &str, tls: Option<&str>, filters: &str) -> String {
    let mut out = String::from("- ");
    if !matcher.is_empty() {
        out.push_str(&format!("filter_chain_match: {matcher}\n  "));
    }
    if let Some(socket) = tls {
        out.push_str(indent(socket, 2).trim_start());
        out.push_str("  ");
    }
    out.push_str(indent(filters, 2).trim_start());
    out
}

fn listener(name: &str, port: u16, extra: &str, chains: &[String]) -> String {
    format!(
        "- name: {name}\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}\n{}  filter_chains:\n{}",
        indent(extra, 2),
        indent(&chains.concat(), 2)
    )
}

fn config(p: Ports, admin: u16, dir: &Path, certs: &Certs) -> String {
    let a = tls::downstream_socket(certs, "a", "", "");
    let tcp_to_up = "filters:\n- name: envoy.filters.network.tcp_proxy\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n    stat_prefix: passthrough\n    cluster: up\n";
    let main = listener(
        "main",
        p.main,
        INSPECTOR,
        &[
            chain("{ server_names: [www.a.example] }", Some(&a), &answering("exact", dir)),
            chain("{ server_names: [\"*.a.example\"] }", Some(&a), &answering("wildcard", dir)),
            chain(
                "{ transport_protocol: tls, application_protocols: [h2] }",
                Some(&a),
                &answering("alpn_h2", dir),
            ),
            chain("{ transport_protocol: tls }", Some(&a), &answering("tls_any", dir)),
            chain("{ transport_protocol: raw_buffer }", None, &answering("plain", dir)),
            chain("{ server_names: [pass.example] }", None, tcp_to_up),
        ],
    );
    let strict = listener(
        "strict",
        p.strict,
        INSPECTOR,
        &[chain("{ server_names: [only.example] }", Some(&a), &answering("only", dir))],
    );
    // A chain for the listener's own port takes every connection or none: the chain for any
    // port is never tried.
    let port = listener(
        "port",
        p.port,
        "",
        &[
            chain(
                &format!("{{ destination_port: {}, source_prefix_ranges: [{{ address_prefix: 10.0.0.0, prefix_len: 8 }}] }}", p.port),
                None,
                &answering("port_10net", dir),
            ),
            chain("{}", None, &answering("any_port", dir)),
        ],
    );
    let addr = listener(
        "addr",
        p.addr,
        "",
        &[
            chain(&format!("{{ destination_port: {} }}", p.port), None, &answering("other_port", dir)),
            chain("{ prefix_ranges: [{ address_prefix: 127.0.0.0, prefix_len: 8 }] }", None, &answering("dest_8", dir)),
            chain("{ prefix_ranges: [{ address_prefix: 127.0.0.1, prefix_len: 32 }], source_type: EXTERNAL }", None, &answering("external", dir)),
            chain("{ prefix_ranges: [{ address_prefix: 127.0.0.1, prefix_len: 32 }], source_type: SAME_IP_OR_LOOPBACK }", None, &answering("local", dir)),
            chain(
                &format!("{{ prefix_ranges: [{{ address_prefix: 127.0.0.1, prefix_len: 32 }}], source_type: SAME_IP_OR_LOOPBACK, source_ports: [{}] }}", p.client),
                None,
                &answering("source_port", dir),
            ),
        ],
    );
    // No inspector: Envoy sees neither SNI nor TLS, so the named chain never matches.
    let blind = listener(
        "blind",
        p.blind,
        &format!("default_filter_chain:\n{}", indent(&answering("blind_default", dir), 2)),
        &[chain("{ server_names: [only.example] }", Some(&a), &answering("blind_named", dir))],
    );
    // A client silent past `listener_filters_timeout`: served as plaintext, or closed.
    let slow_chains = |prefix: &str| {
        [
            chain("{ transport_protocol: raw_buffer }", None, &answering(prefix, dir)),
            chain("{ transport_protocol: tls }", Some(&a), &answering(&format!("{prefix}_tls"), dir)),
        ]
    };
    let slow = listener(
        "slow",
        p.slow,
        &format!("{INSPECTOR}listener_filters_timeout: 0.3s\ncontinue_on_listener_filters_timeout: true\n"),
        &slow_chains("slow"),
    );
    let slow_close = listener(
        "slow_close",
        p.slow_close,
        &format!("{INSPECTOR}listener_filters_timeout: 0.3s\n"),
        &slow_chains("slow_close"),
    );
    let up = listener(
        "up",
        p.up,
        "",
        &[chain("", Some(&tls::downstream_socket(certs, "up", "", "")), &answering("up", dir))],
    );
    let cluster =
        support::static_cluster_yaml("up", "ROUND_ROBIN", &[(SocketAddr::from(([127, 0, 0, 1], p.up)), 1)]);
    format!(
        "admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}\nstatic_resources:\n  listeners:\n{}  clusters:\n{}",
        indent(&[main, strict, port, addr, blind, slow, slow_close, up].concat(), 2),
        indent(&cluster, 2),
    )
}

/// curl to `port` as `host` (`https` or `http`), with `extra` arguments: the body that answered,
/// or how it failed.
fn client(scheme: &str, host: &str, port: u16, extra: &[&str]) -> String {
    let resolve = format!("{host}:{port}:127.0.0.1");
    let out = Command::new("curl")
        .args(["-s", "-k", "--max-time", "5", "--resolve", &resolve])
        .args(extra)
        .arg(format!("{scheme}://{host}:{port}/x"))
        .output()
        .expect("run curl");
    match out.status.code() {
        Some(0) => String::from_utf8_lossy(&out.stdout).into_owned(),
        // An empty reply (52) or a reset (56): whether the request was in the socket when it was
        // closed is a race on both proxies.
        Some(52 | 56) => "closed".to_string(),
        Some(35) => "TLS handshake failed".to_string(),
        code => format!("curl failed ({code:?})"),
    }
}

const CHAINS: &[&str] = &[
    "exact",
    "wildcard",
    "alpn_h2",
    "tls_any",
    "plain",
    "only",
    "port_10net",
    "any_port",
    "other_port",
    "dest_8",
    "external",
    "local",
    "source_port",
    "blind_default",
    "slow",
    "slow_tls",
    "slow_close",
    "slow_close_tls",
    "blind_named",
];

#[derive(Debug, PartialEq)]
struct Observed {
    clients: Vec<(String, String)>,
    logs: BTreeMap<String, String>,
    stats: BTreeMap<String, u64>,
}

fn run(proxy: &str, bin: &Path) -> Observed {
    let dir = support::scratch_dir(&format!("parity-chains-{proxy}"));
    let certs = tls::shared();
    let mut p = Ports {
        main: 0,
        strict: free_port(),
        addr: free_port(),
        port: free_port(),
        blind: free_port(),
        slow: free_port(),
        slow_close: free_port(),
        up: free_port(),
        client: free_port(),
    };
    let (admin, _envoy, _skiff);
    if proxy == "envoy" {
        // `main` takes the port Envoy's helper waits on; the others are fixed.
        let e = envoy::Envoy::start(bin, &dir, |main, admin| config(Ports { main, ..p }, admin, &dir, certs));
        (admin, p.main) = (e.admin, e.listener.port());
        _envoy = Some(e);
        _skiff = None;
    } else {
        p.main = free_port();
        let k = Skiff::start(&config(p, 0, &dir, certs), &["--concurrency", "1"]);
        admin = k.admin();
        _skiff = Some(k);
        _envoy = None;
    }
    let late = |port: u16| {
        std::thread::spawn(move || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            std::thread::sleep(Duration::from_millis(600));
            let _ = s.write_all(b"GET /late HTTP/1.1\r\nhost: late\r\nconnection: close\r\n\r\n");
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            // Up to the end of the response (its content-length), or the close.
            let mut out = Vec::new();
            let mut buf = [0u8; 1024];
            loop {
                let text = String::from_utf8_lossy(&out).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_string)
                        })
                        .and_then(|n| n.trim().parse::<usize>().ok());
                    if len.is_some_and(|n| body.len() >= n) {
                        return body.to_string();
                    }
                }
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return "closed".to_string(),
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
            }
        })
    };
    let (slow_client, slow_close_client) = (late(p.slow), late(p.slow_close));
    let client_port = p.client.to_string();
    let cases: Vec<(&str, String)> = vec![
        ("exact name", client("https", "www.a.example", p.main, &["--http1.1"])),
        ("wildcard", client("https", "shop.a.example", p.main, &["--http1.1"])),
        ("wildcard needs a label", client("https", "a.example", p.main, &["--http1.1"])),
        ("ALPN h2 offered", client("https", "other.example", p.main, &["--http2"])),
        ("ALPN http/1.1 only", client("https", "other.example", p.main, &["--http1.1"])),
        ("plaintext", client("http", "main", p.main, &[])),
        ("passthrough to a TLS upstream", client("https", "pass.example", p.main, &["--http1.1"])),
        ("the only name", client("https", "only.example", p.strict, &[])),
        ("another name", client("https", "nope.example", p.strict, &[])),
        ("plaintext where only TLS matches", client("http", "strict", p.strict, &[])),
        ("a chain for the port that does not match", client("http", "port", p.port, &[])),
        ("addresses", client("http", "addr", p.addr, &[])),
        ("source port", client("http", "addr", p.addr, &["--local-port", &client_port])),
        ("no inspector, TLS with a matching name", client("https", "only.example", p.blind, &[])),
        ("no inspector, plaintext", client("http", "blind", p.blind, &[])),
        ("silent past the inspector's limit, continue", slow_client.join().unwrap()),
        ("silent past the inspector's limit", slow_close_client.join().unwrap()),
    ]
    .into_iter()
    .collect();
    let read = |c: &str| std::fs::read_to_string(dir.join(format!("{c}.log"))).unwrap_or_default();
    support::eventually(Duration::from_secs(5), || read("local").lines().count() >= 1);
    std::thread::sleep(Duration::from_millis(300));
    let stats = envoy::parse_stats(&envoy::admin_get(admin, "/stats").map(|(_, b)| b).unwrap_or_default());
    let mut wanted = BTreeMap::new();
    for (name, port) in [
        ("main", p.main),
        ("strict", p.strict),
        ("port", p.port),
        ("addr", p.addr),
        ("blind", p.blind),
        ("slow", p.slow),
        ("slow_close", p.slow_close),
    ] {
        for stat in ["no_filter_chain_match", "downstream_cx_total", "downstream_pre_cx_timeout"] {
            let real = format!("listener.127.0.0.1_{port}.{stat}");
            wanted.insert(format!("{name}.{stat}"), stats.get(&real).copied().unwrap_or(0));
        }
    }
    for c in CHAINS {
        for stat in ["downstream_cx_total", "downstream_rq_2xx"] {
            wanted.insert(
                format!("http.{c}.{stat}"),
                stats.get(&format!("http.{c}.{stat}")).copied().unwrap_or(0),
            );
        }
    }
    for stat in ["tls_found", "tls_not_found", "sni_found", "sni_not_found", "alpn_found", "alpn_not_found"] {
        let name = format!("tls_inspector.{stat}");
        wanted.insert(name.clone(), stats.get(&name).copied().unwrap_or(u64::MAX));
    }
    wanted.insert(
        "tcp.passthrough.downstream_cx_total".into(),
        stats.get("tcp.passthrough.downstream_cx_total").copied().unwrap_or(0),
    );
    let logs = CHAINS
        .iter()
        .map(|c| (c.to_string(), read(c)))
        .filter(|(_, l)| !l.is_empty())
        .map(|(c, l)| {
            (
                c,
                l.replace(&p.main.to_string(), "PORT")
                    .replace(&p.addr.to_string(), "PORT")
                    .replace(&p.strict.to_string(), "PORT")
                    .replace(&p.blind.to_string(), "PORT"),
            )
        })
        .collect();
    Observed { clients: cases.into_iter().map(|(k, v)| (k.to_string(), v)).collect(), logs, stats: wanted }
}

#[test]
fn filter_chains_are_matched_like_envoy() {
    let Some(bin) = envoy::binary_or_skip("filter_chains_are_matched_like_envoy") else { return };
    let envoy = run("envoy", &bin);
    let skiff = run("skiff", &bin);
    assert_eq!(envoy, skiff, "left is Envoy, right is skiff");
    // What a user sees, rule by rule.
    let served: BTreeMap<&str, &str> = skiff.clients.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let failed = "TLS handshake failed";
    for (case, want) in [
        ("exact name", "exact"),
        ("wildcard", "wildcard"),
        ("ALPN h2 offered", "alpn_h2"),
        ("ALPN http/1.1 only", "tls_any"),
        ("plaintext", "plain"),
        ("passthrough to a TLS upstream", "up"),
        ("the only name", "only"),
        ("addresses", "local"),
        ("source port", "source_port"),
        ("no inspector, plaintext", "blind_default"),
        ("silent past the inspector's limit, continue", "slow"),
        ("silent past the inspector's limit", "closed"),
    ] {
        assert_eq!(served[case], want, "{case}: {skiff:#?}");
    }
    assert_eq!(served["another name"], failed, "{skiff:#?}");
    assert_eq!(served["a chain for the port that does not match"], "closed", "{skiff:#?}");
    assert_eq!(skiff.stats["strict.no_filter_chain_match"], 2, "{skiff:#?}");
    assert_eq!(skiff.stats["port.no_filter_chain_match"], 1, "{skiff:#?}");
    let inspected = (skiff.stats["tls_inspector.tls_found"], skiff.stats["tls_inspector.tls_not_found"]);
    assert_eq!(inspected, (8, 2), "{skiff:#?}");
}
