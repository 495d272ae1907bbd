//! Envoy parity for HTTP/2 from clients: the same v3 config (`codec_type` AUTO or HTTP2, an
//! HTTP/1.1 upstream; a TLS listener with and without `alpn_protocols`) runs in the real Envoy and
//! in skiff, curl is the client (`--http2-prior-knowledge`, `--http2` over TLS, plain HTTP/1.1),
//! and what it saw (status, header names and values but the volatile ones, body), what the
//! upstream received, the access-log lines (`%PROTOCOL%` among them) and the HTTP/2 stats must be
//! equal. Envoy is found as in tests/parity.rs; without it these skip (fail under CI).

mod support;

#[path = "support/envoy.rs"]
mod envoy;

use envoy::Observed;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::{indent, Skiff, TestUpstream};

const LOG_FORMAT: &str =
    "%PROTOCOL% %REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %RESPONSE_CODE_DETAILS%";

/// Headers whose values differ run to run (dates, timings, ids, ports).
const VOLATILE: &[&str] =
    &["date", "x-envoy-upstream-service-time", "x-request-id", "host", "content-length"];

fn config(port: u16, admin: u16, codec: &str, tls: &str, backend: SocketAddr, log: &Path) -> String {
    let access_log = support::file_access_log_yaml(log, LOG_FORMAT);
    let hcm = format!(
        "- name: envoy.filters.network.http_connection_manager\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n    stat_prefix: ingress\n    codec_type: {codec}\n{}    route_config:\n      virtual_hosts:\n      - name: all\n        domains: [\"*\"]\n        routes:\n        - match: {{ prefix: /dead }}\n          route: {{ cluster: dead }}\n        - match: {{ prefix: /app }}\n          route: {{ cluster: backend }}\n    http_filters:\n    - name: envoy.filters.http.router\n      typed_config: {{ \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}\n",
        indent(&access_log, 4)
    );
    let chain = format!("{tls}filters:\n{hcm}");
    let clusters = support::static_cluster_yaml("backend", "ROUND_ROBIN", &[(backend, 1)])
        + &support::static_cluster_yaml("dead", "ROUND_ROBIN", &[(support::dead_port(), 1)]);
    format!(
        "admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}\nstatic_resources:\n  listeners:\n  - name: main\n    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}\n    filter_chains:\n    - {}  clusters:\n{}",
        indent(&chain, 6).trim_start(),
        indent(&clusters, 2)
    )
}

/// curl's view of one exchange: the status line, the headers (volatile values blanked) and body.
fn curl(args: &[&str]) -> String {
    let out =
        Command::new("curl").args(["-s", "-i", "--max-time", "10"]).args(args).output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    // A local reply without a body says `content-length: 0` from skiff (its HTTP/1 path frames
    // it so) where Envoy's HTTP/2 codec says nothing: README's deliberate differences.
    let mut lines: Vec<String> = head
        .lines()
        .skip(1)
        .filter(|l| !(body.is_empty() && l.to_ascii_lowercase().starts_with("content-length:")))
        .map(normalise)
        .collect();
    lines.sort();
    let status = head.lines().next().unwrap_or("").trim().to_string();
    format!("{status}\n{}\n\n{}", lines.join("\n"), first_line(body))
}

fn normalise(line: &str) -> String {
    let Some((n, v)) = line.split_once(':') else { return line.to_string() };
    let n = n.trim().to_ascii_lowercase();
    if VOLATILE.contains(&n.as_str()) {
        format!("{n}: *")
    } else {
        format!("{n}: {}", v.trim())
    }
}

/// The echo upstream's body begins with its request line; the rest is its headers, compared
/// separately.
fn first_line(body: &str) -> &str {
    body.lines().next().unwrap_or("")
}

struct Scenario {
    name: &'static str,
    codec: &'static str,
    /// A TLS socket (`support::tls::downstream_socket`'s `common` argument), or None: plaintext.
    tls_common: Option<&'static str>,
    /// curl arguments per request; `URL` is replaced by the listener's base URL.
    requests: &'static [&'static [&'static str]],
    /// Requests no access-log line is written for (refused by the codec).
    unlogged: usize,
    stats: &'static [&'static str],
}

const H2_STATS: &[&str] = &[
    "http.ingress.downstream_cx_http2_total",
    "http.ingress.downstream_cx_http2_active",
    "http.ingress.downstream_rq_http2_total",
    "http.ingress.downstream_rq_http1_total",
    "http.ingress.downstream_rq_2xx",
    "http.ingress.downstream_rq_5xx",
    "http.ingress.downstream_cx_protocol_error",
    "http2.rx_reset",
    "http2.tx_reset",
    "http2.streams_active",
];

fn run(s: &Scenario, proxy: &str, bin: &Path) -> Observed {
    let dir = support::scratch_dir(&format!("parity-h2-{}-{proxy}", s.name));
    let log = dir.join("access.log");
    let backend = TestUpstream::echo();
    let certs = support::tls::shared();
    let tls =
        s.tls_common.map_or(String::new(), |common| support::tls::downstream_socket(certs, "a", "", common));
    let (listener, admin, _envoy, _skiff);
    if proxy == "envoy" {
        let e = envoy::Envoy::start(bin, &dir, |port, admin| {
            config(port, admin, s.codec, &tls, backend.addr, &log)
        });
        (listener, admin) = (e.listener, e.admin);
        _envoy = Some(e);
        _skiff = None;
    } else {
        // One shard, as Envoy runs with one worker: log lines in request order.
        let k = Skiff::start(&config(0, 0, s.codec, &tls, backend.addr, &log), &["--concurrency", "1"]);
        (listener, admin) = (k.listener("main"), k.admin());
        _skiff = Some(k);
        _envoy = None;
    }
    let base = if s.tls_common.is_some() {
        format!("https://a.example:{}", listener.port())
    } else {
        format!("http://{listener}")
    };
    let resolve = format!("a.example:{}:127.0.0.1", listener.port());
    let ca = certs.path("ca.crt");
    let client: Vec<String> = s
        .requests
        .iter()
        .map(|args| {
            let mut a: Vec<String> = args.iter().map(|x| x.replace("URL", &base)).collect();
            if s.tls_common.is_some() {
                a.extend(["--cacert".to_string(), ca.clone(), "--resolve".to_string(), resolve.clone()]);
            }
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            curl(&a)
        })
        .collect();
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    support::wait_until(Duration::from_secs(5), || {
        read_log().lines().count() >= s.requests.len() - s.unlogged
    });
    // The last connection's close is counted once the stats settle.
    let stats_now =
        || envoy::parse_stats(&envoy::admin_get(admin, "/stats").map(|(_, b)| b).unwrap_or_default());
    let mut after = stats_now();
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(200));
        let now = stats_now();
        let settled = s.stats.iter().all(|n| now.get(*n) == after.get(*n));
        after = now;
        if settled {
            break;
        }
    }
    let stats = s.stats.iter().map(|n| (n.to_string(), after.get(*n).copied().unwrap_or(0))).collect();
    let upstream = backend
        .requests()
        .iter()
        .map(|r| {
            let mut headers: Vec<String> =
                r.headers.iter().map(|(n, v)| normalise(&format!("{n}: {v}"))).collect();
            headers.sort();
            format!(
                "{} {} [{}] body={}",
                r.method,
                r.path,
                headers.join(", "),
                String::from_utf8_lossy(&r.body)
            )
        })
        .collect();
    Observed { client, upstream, log: read_log().lines().map(str::to_string).collect(), stats }
}

fn assert_parity(s: &Scenario) {
    let Some(bin) = envoy::binary_or_skip(s.name) else { return };
    let envoy = run(s, "envoy", &bin);
    let skiff = run(s, "skiff", &bin);
    assert_eq!(skiff.client, envoy.client, "what the client saw");
    assert_eq!(skiff.upstream, envoy.upstream, "what the upstream received");
    assert_eq!(skiff.log, envoy.log, "access log");
    assert_eq!(skiff.stats, envoy.stats, "stats");
}

#[test]
fn h2c_requests_and_local_replies_match_envoy() {
    assert_parity(&Scenario {
        name: "h2c",
        codec: "AUTO",
        tls_common: None,
        requests: &[
            &[
                "--http2-prior-knowledge",
                "-H",
                "cookie: a=1",
                "-H",
                "cookie: b=2",
                "-H",
                "te: trailers",
                "URL/app/get?q=1",
            ],
            &["--http2-prior-knowledge", "-d", "hello=1", "URL/app/post"],
            &[
                "--http2-prior-knowledge",
                "-X",
                "PUT",
                "--data-binary",
                "chunked",
                "-H",
                "content-length:",
                "URL/app/put",
            ],
            &["--http2-prior-knowledge", "-X", "POST", "URL/app/empty"],
            &["--http2-prior-knowledge", "URL/missing"],
            &["--http2-prior-knowledge", "URL/dead"],
            &["--http1.1", "URL/app/one"],
        ],
        unlogged: 0,
        stats: H2_STATS,
    });
}

#[test]
fn an_http2_only_listener_matches_envoy() {
    assert_parity(&Scenario {
        name: "h2only",
        codec: "HTTP2",
        tls_common: None,
        requests: &[
            &["--http2-prior-knowledge", "URL/app/x"],
            &["-I", "--http2-prior-knowledge", "URL/app/head"],
        ],
        unlogged: 1,
        stats: H2_STATS,
    });
}

#[test]
fn alpn_picks_the_protocol_over_tls_as_in_envoy() {
    assert_parity(&Scenario {
        name: "alpn",
        codec: "AUTO",
        tls_common: Some("alpn_protocols: [h2, http/1.1]\n"),
        requests: &[&["--http2", "URL/app/h2"], &["--http1.1", "URL/app/h1"]],
        unlogged: 0,
        stats: H2_STATS,
    });
}

#[test]
fn without_alpn_protocols_a_tls_client_gets_http1_as_from_envoy() {
    assert_parity(&Scenario {
        name: "noalpn",
        codec: "AUTO",
        tls_common: Some(""),
        requests: &[&["--http2", "URL/app/h2"]],
        unlogged: 0,
        stats: H2_STATS,
    });
}
