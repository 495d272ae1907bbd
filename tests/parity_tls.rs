//! Envoy parity for TLS: the same v3 config (a listener with two SNI filter chains, one of them
//! requiring a client certificate; a TLS upstream listener; clusters that reach it with the right
//! and a wrong SAN) runs in the real Envoy and in skiff, curl is the client, and what it saw, what
//! the upstream got, the access-log lines and named `/stats` values must be equal. Certificates
//! are made at test time with openssl. Envoy is found as in tests/parity.rs; without it these
//! skip (fail under CI).

mod support;

#[path = "support/envoy.rs"]
mod envoy;

use envoy::Observed;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;
use support::tls::{self, curl, Certs};
use support::{indent, Skiff, TestUpstream};

const LOG_FORMAT: &str = "%RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_CLUSTER% %REQ(:AUTHORITY)% %REQ(:PATH)% %RESPONSE_CODE_DETAILS%";

fn downstream_tls(certs: &Certs, leaf: &str, mtls: bool) -> String {
    if mtls {
        tls::downstream_socket(
            certs,
            leaf,
            "require_client_certificate: true\n",
            &tls::trusting(certs, &["client.example"]),
        )
    } else {
        tls::downstream_socket(certs, leaf, "", "")
    }
}

fn hcm(stat_prefix: &str, log: Option<&Path>) -> String {
    let front = log.is_some();
    let log = match log {
        Some(path) => format!(
            "access_log:\n- name: envoy.access_loggers.file\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n    path: {}\n    log_format: {{ text_format_source: {{ inline_string: \"{LOG_FORMAT}\\n\" }} }}\n",
            path.display()
        ),
        None => String::new(),
    };
    // The front listener reaches the TLS upstream listener on /good and /bad; that one serves
    // everything from the backend.
    let routes = if front {
        "- match: { prefix: /good }\n  route: { cluster: up_good }\n- match: { prefix: /bad }\n  route: { cluster: up_bad }\n- match: { prefix: / }\n  route: { cluster: backend }\n"
    } else {
        "- match: { prefix: / }\n  route: { cluster: backend }\n"
    };
    format!(
        "filters:\n- name: envoy.filters.network.http_connection_manager\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n    stat_prefix: {stat_prefix}\n{}    http_filters: [{{ name: envoy.filters.http.router, typed_config: {{ \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }} }}]\n    route_config:\n      virtual_hosts:\n      - name: all\n        domains: [\"*\"]\n        routes:\n{}",
        indent(&log, 4),
        indent(routes, 8)
    )
}

fn upstream_cluster(name: &str, up: SocketAddr, san: &str, certs: &Certs) -> String {
    let cluster = support::static_cluster_yaml(name, "ROUND_ROBIN", &[(up, 1)]).replace("0.5s", "2s");
    cluster + &indent(&tls::upstream_socket("sni: up.example\n", &tls::trusting(certs, &[san])), 2)
}

fn config(port: u16, admin: u16, up_port: u16, backend: SocketAddr, log: &Path, certs: &Certs) -> String {
    let up = SocketAddr::from(([127, 0, 0, 1], up_port));
    let chain = |name: &str, leaf: &str, mtls: bool| {
        format!(
            "- filter_chain_match: {{ server_names: [{name}] }}\n{}{}",
            indent(&downstream_tls(certs, leaf, mtls), 2),
            indent(&hcm("front", Some(log)), 2)
        )
    };
    let main = format!(
        "- name: main\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}\n  listener_filters:\n  - name: envoy.filters.listener.tls_inspector\n    typed_config: {{ \"@type\": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector }}\n  filter_chains:\n{}{}",
        indent(&chain("a.example", "a", false), 2),
        indent(&chain("b.example", "b", true), 2),
    );
    let upl = format!(
        "- name: up\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {up_port} }} }}\n  filter_chains:\n  - {}{}",
        indent(&downstream_tls(certs, "up", false), 4).trim_start(),
        indent(&hcm("up", None), 4),
    );
    format!(
        "admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}\nstatic_resources:\n  listeners:\n{}{}  clusters:\n{}{}{}",
        indent(&main, 2),
        indent(&upl, 2),
        indent(&support::static_cluster_yaml("backend", "ROUND_ROBIN", &[(backend, 1)]), 2),
        indent(&upstream_cluster("up_good", up, "up.example", certs), 2),
        indent(&upstream_cluster("up_bad", up, "wrong.example", certs), 2),
    )
}

struct Scenario {
    name: &'static str,
    client: fn(SocketAddr, &Certs) -> Vec<String>,
    log_lines: usize,
    /// Stat names, with `LISTENER` for `listener.127.0.0.1_<port>`.
    stats: &'static [&'static str],
}

fn run(s: &Scenario, proxy: &str, bin: &Path) -> Observed {
    let dir = support::scratch_dir(&format!("parity-tls-{}-{proxy}", s.name));
    let log = dir.join("access.log");
    let backend = TestUpstream::echo();
    let certs = tls::shared();
    let up_port = support::free_port();
    let (listener, admin, _envoy, _skiff);
    if proxy == "envoy" {
        let e = envoy::Envoy::start(bin, &dir, |port, admin| {
            config(port, admin, up_port, backend.addr, &log, certs)
        });
        (listener, admin) = (e.listener, e.admin);
        _envoy = Some(e);
        _skiff = None;
    } else {
        // One shard, as Envoy runs with one worker: log lines in request order.
        let k = Skiff::start(&config(0, 0, up_port, backend.addr, &log, certs), &["--concurrency", "1"]);
        (listener, admin) = (k.listener("main"), k.admin());
        _skiff = Some(k);
        _envoy = None;
    }
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let stats_now =
        || envoy::parse_stats(&envoy::admin_get(admin, "/stats").map(|(_, b)| b).unwrap_or_default());
    let before = stats_now();
    let client = (s.client)(listener, certs);
    support::wait_until(Duration::from_secs(5), || read_log().lines().count() >= s.log_lines);
    // Let the last connection's close be counted: the stats settle (unchanged for 300 ms, at
    // most 5 s), however loaded the machine is.
    let mut after = stats_now();
    let settle_by = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = stats_now();
        let watched = |m: &BTreeMap<String, u64>| -> Vec<Option<u64>> {
            s.stats
                .iter()
                .map(|n| {
                    m.get(&n.replace("LISTENER", &format!("listener.127.0.0.1_{}", listener.port()))).copied()
                })
                .collect()
        };
        if watched(&now) == watched(&after) || std::time::Instant::now() > settle_by {
            break;
        }
        after = now;
    }
    let value = |m: &BTreeMap<String, u64>, n: &str| m.get(n).copied().unwrap_or(0);
    let stats = s
        .stats
        .iter()
        .map(|n| {
            let real = n.replace("LISTENER", &format!("listener.127.0.0.1_{}", listener.port()));
            let v = if n.ends_with("_active") {
                value(&after, &real)
            } else {
                value(&after, &real) - value(&before, &real)
            };
            (n.to_string(), v)
        })
        .collect();
    let upstream = backend
        .requests()
        .iter()
        .map(|r| format!("{} {} x-forwarded-proto={:?}", r.method, r.path, r.header("x-forwarded-proto")))
        .collect();
    // A TLS handshake failure's `%RESPONSE_CODE_DETAILS%` is left out: Envoy writes BoringSSL's
    // error text into it (the certificate's SANs included), which skiff does not reproduce (README,
    // deliberate differences).
    let tls_failure = regex::Regex::new(r"\{remote_connection_failure\|.*\}$").unwrap();
    let log = read_log()
        .lines()
        .map(|l| {
            tls_failure
                .replace(
                    &l.replace(&listener.port().to_string(), "PORT"),
                    "{remote_connection_failure|<reason>}",
                )
                .into_owned()
        })
        .collect();
    Observed { client, upstream, log, stats }
}

fn compare(s: Scenario) {
    let Some(bin) = envoy::binary_or_skip(s.name) else { return };
    let envoy = run(&s, "envoy", &bin);
    let skiff = run(&s, "skiff", &bin);
    assert_eq!(envoy, skiff, "{}: left is Envoy, right is skiff", s.name);
}

/// Status and body (the echoed request, its header names lower-cased, request id left out) as
/// comparable lines.
fn seen(c: support::tls::Curl) -> Vec<String> {
    let body = c
        .body
        .lines()
        .map(|l| match l.split_once(':') {
            Some((n, v)) => format!("{}:{v}", n.to_ascii_lowercase()),
            None => l.to_string(),
        })
        .filter(|l| !l.starts_with("x-request-id") && !l.starts_with("host:"))
        .collect::<Vec<_>>();
    vec![format!("curl exit {} status {:?}", c.code == 0, c.status), body.join("|")]
}

#[test]
fn tls_termination_sets_x_forwarded_proto_https_like_envoy() {
    compare(Scenario {
        name: "terminate",
        client: |addr, certs| seen(curl(addr, "a.example", "/x", certs, &[])),
        log_lines: 1,
        stats: &[
            "LISTENER.ssl.handshake",
            "LISTENER.ssl.no_certificate",
            "LISTENER.ssl.versions.TLSv1.3",
            "LISTENER.ssl.connection_error",
            "http.front.downstream_cx_ssl_total",
            "http.front.downstream_cx_ssl_active",
            "http.front.downstream_rq_2xx",
        ],
    });
}

#[test]
fn sni_picks_the_chain_and_its_client_certificate_rule_like_envoy() {
    compare(Scenario {
        name: "sni-mtls",
        client: |addr, certs| {
            let (crt, key) = (certs.path("client.crt"), certs.path("client.key"));
            let mut out =
                seen(curl(addr, "b.example", "/with-cert", certs, &["--cert", &crt, "--key", &key]));
            // The b chain requires a client certificate: without one there is no response.
            out.push(format!(
                "without a certificate: status {:?}",
                curl(addr, "b.example", "/no-cert", certs, &[]).status
            ));
            // One from a CA the chain does not trust is refused too.
            let (crt, key) = (certs.path("stranger.crt"), certs.path("stranger.key"));
            out.push(format!(
                "untrusted certificate: status {:?}",
                curl(addr, "b.example", "/stranger", certs, &["--cert", &crt, "--key", &key]).status
            ));
            out
        },
        log_lines: 1,
        stats: &[
            "LISTENER.ssl.handshake",
            "LISTENER.ssl.fail_verify_no_cert",
            "LISTENER.ssl.fail_verify_error",
            "LISTENER.ssl.no_certificate",
            "http.front.downstream_rq_2xx",
        ],
    });
}

#[test]
fn a_client_without_sni_or_without_tls_is_closed_like_envoy() {
    compare(Scenario {
        name: "no-chain",
        client: |addr, certs| {
            let mut out =
                vec![format!("no SNI: status {:?}", curl(addr, "127.0.0.1", "/", certs, &["-k"]).status)];
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nhost: a.example\r\n\r\n").unwrap();
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got);
            out.push(format!("plaintext: {} bytes back", got.len()));
            out
        },
        log_lines: 0,
        stats: &["LISTENER.no_filter_chain_match", "LISTENER.ssl.handshake", "LISTENER.ssl.connection_error"],
    });
}

#[test]
fn upstream_tls_with_the_right_san_serves_and_a_wrong_san_is_503_uf_like_envoy() {
    compare(Scenario {
        name: "upstream",
        client: |addr, certs| {
            let mut out = seen(curl(addr, "a.example", "/good", certs, &[]));
            out.extend(seen(curl(addr, "a.example", "/bad", certs, &[])));
            out
        },
        log_lines: 2,
        stats: &[
            "cluster.up_good.ssl.handshake",
            "cluster.up_good.ssl.versions.TLSv1.2",
            "cluster.up_good.upstream_cx_total",
            "cluster.up_bad.ssl.fail_verify_san",
            "cluster.up_bad.ssl.handshake",
            "cluster.up_bad.upstream_cx_connect_fail",
            "cluster.up_bad.upstream_rq_pending_failure_eject",
            "http.front.downstream_rq_5xx",
        ],
    });
}
