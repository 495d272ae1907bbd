//! TLS as a user meets it: mutual TLS between two skiff sidecars with SAN checks (and every way
//! it is refused), pooled TLS connections, `tls_params` and ALPN enforced as `openssl s_client`
//! sees them, settings skiff cannot honour refused at load with their field path, and Envoy's own
//! TLS examples loading unchanged. Certificates are made at test time with openssl.

mod support;

#[path = "support/envoy.rs"]
mod envoy;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::tls::{self, curl, presenting, s_client, trusting, with_socket, Certs};
use support::{bootstrap_yaml, indent, listener_yaml, static_cluster_yaml, Skiff, TestUpstream};

const ADMIN: &str = "admin:\n  address: { socket_address: { address: 127.0.0.1, port_value: 0 } }\n";

fn route_all_to(cluster: &str) -> String {
    format!(
        "virtual_hosts:\n  - name: all\n    domains: [\"*\"]\n    routes:\n      - match: {{ prefix: / }}\n        route: {{ cluster: {cluster} }}\n"
    )
}

fn routes(pairs: &[(&str, &str)]) -> String {
    let r: String = pairs
        .iter()
        .map(|(prefix, c)| {
            format!("      - match: {{ prefix: {prefix} }}\n        route: {{ cluster: {c} }}\n")
        })
        .collect();
    format!("virtual_hosts:\n  - name: all\n    domains: [\"*\"]\n    routes:\n{r}")
}

fn stat(k: &Skiff, name: &str) -> u64 {
    let body = envoy::admin_get(k.admin(), "/stats").map(|(_, b)| b).unwrap_or_default();
    envoy::parse_stats(&body).get(name).copied().unwrap_or(0)
}

/// The service sidecar: TLS in front of `backend`, requiring a client certificate with the SAN
/// `client.example` from the test CA.
fn service_sidecar(certs: &Certs, backend: SocketAddr) -> Skiff {
    let socket = tls::downstream_socket(
        certs,
        "up",
        "require_client_certificate: true\n",
        &trusting(certs, &["client.example"]),
    );
    let listener = with_socket(&listener_yaml("svc", "127.0.0.1", &route_all_to("backend")), &socket);
    let cluster = static_cluster_yaml("backend", "ROUND_ROBIN", &[(backend, 1)]);
    Skiff::start(&format!("{ADMIN}{}", bootstrap_yaml(&[listener], &[cluster])), &[])
}

#[test]
fn mutual_tls_between_two_sidecars_checks_both_identities() {
    let certs = tls::shared();
    let backend = TestUpstream::echo();
    let service = service_sidecar(certs, backend.addr);
    let svc = service.listener("svc");
    // The front sidecar reaches the service through clusters that differ only in TLS identity.
    let cluster = |name: &str, context: &str, common: String| {
        static_cluster_yaml(name, "ROUND_ROBIN", &[(svc, 1)])
            + &indent(&tls::upstream_socket(context, &common), 2)
    };
    let sni = "sni: up.example\n";
    let clusters = [
        cluster("mtls", sni, presenting(certs, "client") + &trusting(certs, &["up.example"])),
        cluster("no_cert", sni, trusting(certs, &["up.example"])),
        cluster("wrong_san", sni, presenting(certs, "client") + &trusting(certs, &["other.example"])),
        cluster("untrusted_client", sni, presenting(certs, "stranger") + &trusting(certs, &["up.example"])),
    ];
    let rc = routes(&[
        ("/mtls", "mtls"),
        ("/no-cert", "no_cert"),
        ("/wrong-san", "wrong_san"),
        ("/stranger", "untrusted_client"),
    ]);
    // One shard: one pool, so reuse is visible in the counters.
    let front = Skiff::start(
        &format!("{ADMIN}{}", bootstrap_yaml(&[listener_yaml("front", "127.0.0.1", &rc)], &clusters)),
        &["--concurrency", "1"],
    );
    let addr = front.listener("front");
    for _ in 0..3 {
        let r = support::get(addr, "/mtls");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // The backend sees the service sidecar's plaintext request, marked as having come over TLS.
    let seen = backend.requests();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].header("x-forwarded-proto"), Some("http"), "the front sidecar's own scheme is kept");
    // One TLS connection carried the three requests: pooled and reused.
    assert_eq!(stat(&front, "cluster.mtls.upstream_cx_total"), 1);
    assert_eq!(stat(&front, "cluster.mtls.ssl.handshake"), 1);
    assert_eq!(stat(&service, &format!("listener.127.0.0.1_{}.ssl.handshake", svc.port())), 1);

    // Refused by the service (no client certificate, one from an unknown CA) or by the front
    // (the service's certificate lacks the SAN asked for): a connection failure, 503 UF.
    for path in ["/no-cert", "/wrong-san", "/stranger"] {
        let r = support::get(addr, path);
        assert_eq!(r.status, 503, "{path}: {}", r.text());
        assert!(r.text().starts_with("upstream connect error"), "{path}: {}", r.text());
    }
    assert_eq!(stat(&front, "cluster.wrong_san.ssl.fail_verify_san"), 1);
    assert_eq!(stat(&front, "cluster.wrong_san.upstream_cx_connect_fail"), 1);
    let listener = format!("listener.127.0.0.1_{}", svc.port());
    support::eventually(Duration::from_secs(5), || {
        stat(&service, &format!("{listener}.ssl.fail_verify_error")) == 1
    });
    assert_eq!(stat(&service, &format!("{listener}.ssl.fail_verify_no_cert")), 1);
    assert_eq!(stat(&service, &format!("{listener}.ssl.fail_verify_error")), 1);
    assert_eq!(backend.requests().len(), 3, "no refused connection reached the backend");
    // `/config_dump` shows both sides' TLS contexts with their private keys redacted, as Envoy.
    for (k, key) in [(&service, "up.key"), (&front, "client.key")] {
        let dump = envoy::admin_get(k.admin(), "/config_dump").map(|(_, b)| b).unwrap_or_default();
        assert!(dump.contains("DownstreamTlsContext") || dump.contains("UpstreamTlsContext"), "{dump}");
        assert!(dump.contains("[redacted]"), "{dump}");
        assert!(!dump.contains(&certs.path(key)), "the key's path is redacted:\n{dump}");
    }
}

#[test]
fn tls_params_and_alpn_are_what_a_client_can_negotiate() {
    let certs = tls::shared();
    let backend = TestUpstream::named("ok");
    let common = "tls_params:\n  tls_maximum_protocol_version: TLSv1_2\n  cipher_suites: [ECDHE-ECDSA-AES128-GCM-SHA256]\nalpn_protocols: [h2, http/1.1]\n";
    let socket = tls::downstream_socket(certs, "a", "", common);
    let listener = with_socket(&listener_yaml("main", "127.0.0.1", &route_all_to("backend")), &socket);
    let cluster = static_cluster_yaml("backend", "ROUND_ROBIN", &[(backend.addr, 1)]);
    let k = Skiff::start(&format!("{ADMIN}{}", bootstrap_yaml(&[listener], &[cluster])), &[]);
    let addr = k.listener("main");
    let sni = ["-servername", "a.example"];
    let (ok, out) = s_client(addr, certs, &[&sni[..], &["-tls1_3"]].concat());
    assert!(!ok, "TLS 1.3 is above the configured maximum:\n{out}");
    let (ok, out) =
        s_client(addr, certs, &[&sni[..], &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"]].concat());
    assert!(!ok, "a suite outside cipher_suites:\n{out}");
    let (ok, out) = s_client(
        addr,
        certs,
        &[&sni[..], &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256", "-alpn", "h2,http/1.1"]]
            .concat(),
    );
    assert!(ok, "{out}");
    assert!(out.contains("ALPN protocol: h2"), "the listener's first choice, as Envoy picks:\n{out}");
    let r = curl(addr, "a.example", "/", certs, &[]);
    assert_eq!((r.status, r.body.as_str()), (Some(200), "ok"), "{r:?}");
}

/// Loads `yaml` as `--mode validate` does: whether it is accepted, and the error naming the place.
fn validate(yaml: &str) -> (bool, String) {
    match skiff::config::load_str(yaml, "envoy.yaml") {
        Ok(_) => (true, String::new()),
        Err(e) => (false, e.to_string()),
    }
}

#[test]
fn tls_settings_skiff_cannot_honour_are_refused_with_their_place() {
    let certs = tls::shared();
    let backend = support::dead_port();
    let cluster = static_cluster_yaml("backend", "ROUND_ROBIN", &[(backend, 1)]);
    let listener_with = |context: &str, common: &str| {
        let socket = tls::downstream_socket(certs, "a", context, common);
        with_socket(&listener_yaml("main", "127.0.0.1", &route_all_to("backend")), &socket)
    };
    let cases = [
        (listener_with("", "alpn_protocols: [h3]\n"), "common_tls_context.alpn_protocols: alpn_protocols [\"h3\"] lacks h2 and http/1.1"),
        (listener_with("", "tls_params: { cipher_suites: [AES128-SHA] }\n"), "tls_params.cipher_suites[0]: cipher suite \"AES128-SHA\" is not supported"),
        (listener_with("", "tls_params: { tls_maximum_protocol_version: TLSv1_1 }\n"), "tls_maximum_protocol_version: TLS versions below TLSv1_2"),
        (listener_with("require_client_certificate: true\n", ""), "require_client_certificate needs common_tls_context.validation_context.trusted_ca"),
        (listener_with("session_ticket_keys: { keys: [] }\n", ""), "session_ticket_keys is not supported"),
        (listener_with("", &format!("validation_context:\n  trusted_ca: {{ filename: {} }}\n  match_typed_subject_alt_names: [{{ san_type: OTHER_NAME, oid: \"1.3.6.1.4.1.311.20.2.3\", matcher: {{ exact: \"x\" }} }}]\n", certs.path("ca.crt"))), "san_type: OTHER_NAME SAN matchers are not supported"),
        (listener_with("", "validation_context:\n  verify_certificate_hash: [\"ab:cd\"]\n"), "verify_certificate_hash[0]: Invalid hex-encoded SHA-256"),
        (listener_with("", "validation_context:\n  verify_certificate_spki: [\"bm90IDMyIGJ5dGVz\"]\n"), "verify_certificate_spki[0]: Invalid base64-encoded SHA-256"),
        (listener_with("", "").replace(&certs.path("a.key"), &certs.path("b.key")), "private_key: the private key does not match certificate_chain"),
    ];
    for (listener, expected) in cases {
        let (ok, err) =
            validate(&format!("{ADMIN}{}", bootstrap_yaml(&[listener], std::slice::from_ref(&cluster))));
        assert!(!ok && err.contains(expected), "expected {expected:?} in:\n{err}");
    }
    // A TLS chain beside a plaintext one that matches the same connections: Envoy refuses it too.
    let tls_chain = listener_with("", "");
    let plain = listener_yaml("main", "127.0.0.1", &route_all_to("backend"));
    let chain_of = |l: &str| l.split_once("  filter_chains:\n").unwrap().1.to_string();
    let mixed = format!("{tls_chain}{}", chain_of(&plain));
    let (ok, err) = validate(&format!("{ADMIN}{}", bootstrap_yaml(&[mixed], std::slice::from_ref(&cluster))));
    assert!(!ok && err.contains("multiple filter chains with the same matching rules"), "{err}");
}

#[test]
fn envoys_tls_examples_load_unchanged() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/envoy-examples/envoyproxy-examples");
    // Inline certificates (the examples' own self-signed X.509 v1 pair) and upstream TLS 1.3.
    for name in ["tls/envoy-https-https.yaml", "tls/envoy-https-http.yaml", "tls/envoy-http-https.yaml"] {
        let loaded = skiff::config::load_file(&dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(loaded.warnings.is_empty(), "{name}: {:?}", loaded.warnings);
    }
    // double-proxy names its certificates relative to the working directory: test ones there.
    let certs = tls::shared();
    let work = support::scratch_dir("double-proxy");
    std::fs::create_dir_all(work.join("certs")).unwrap();
    for (from, to) in [
        ("ca.crt", "cacert.pem"),
        ("up.crt", "servercert.pem"),
        ("up.key", "serverkey.pem"),
        ("client.crt", "clientcert.pem"),
        ("client.key", "clientkey.pem"),
        ("a.crt", "domain1.crt.pem"),
        ("a.key", "domain1.key.pem"),
        ("b.crt", "domain2.crt.pem"),
        ("b.key", "domain2.key.pem"),
    ] {
        std::fs::copy(certs.dir.join(from), work.join("certs").join(to)).unwrap();
    }
    for name in ["double-proxy/envoy-frontend.yaml", "double-proxy/envoy-backend.yaml"] {
        let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["--mode", "validate", "-c"])
            .arg(dir.join(name))
            .current_dir(&work)
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // tls-sni routes each server name to its own connection manager (tests/chains.rs runs it).
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["--mode", "validate", "-c"])
        .arg(dir.join("tls-sni/envoy.yaml"))
        .current_dir(&work)
        .output()
        .unwrap();
    assert!(out.status.success(), "tls-sni: {}", String::from_utf8_lossy(&out.stderr));
}

/// Envoy's front-proxy example, its TLS listener included, serving with the example's
/// certificate replaced by a test one: its ports moved to free ones, its docker names
/// (`service-envoy-1`, `service-envoy-2`) resolved to loopback services by a hosts file.
#[test]
fn envoys_front_proxy_example_serves_http_and_https() {
    let certs = tls::shared();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/envoy-examples/envoyproxy-examples");
    let example = std::fs::read_to_string(dir.join("front-proxy/envoy.yaml")).unwrap();
    let (one, two) = (TestUpstream::named("service1"), TestUpstream::named("service2"));
    let (http, https, admin) = (support::free_port(), support::free_port(), support::free_port());
    let mut yaml = example
        .replace("port_value: 8080", &format!("port_value: {http}"))
        .replace("port_value: 8443", &format!("port_value: {https}"))
        .replace("port_value: 8001", &format!("port_value: {admin}"));
    // The two services share port 8000 in the example; here each has its own.
    for up in [&one, &two] {
        yaml = yaml.replacen("port_value: 8000", &format!("port_value: {}", up.addr.port()), 1);
    }
    // Each inline PEM block becomes the test certificate or key, at the block's own indent.
    for (kind, file) in [("CERTIFICATE", "a.crt"), ("PRIVATE KEY", "a.key")] {
        let (begin, end) = (format!("-----BEGIN {kind}-----"), format!("-----END {kind}-----"));
        let start = yaml.find(&begin).unwrap_or_else(|| panic!("no {begin} in the example"));
        let indent = yaml[..start].rsplit('\n').next().unwrap().to_string();
        let stop = start + yaml[start..].find(&end).unwrap() + end.len();
        let pem = std::fs::read_to_string(certs.dir.join(file)).unwrap();
        let block = pem.trim_end().lines().collect::<Vec<_>>().join(&format!("\n{indent}"));
        yaml.replace_range(start..stop, &block);
    }
    let hosts = support::scratch_dir("front-proxy").join("hosts");
    std::fs::write(&hosts, "127.0.0.1 service-envoy-1 service-envoy-2\n").unwrap();
    let skiff = Skiff::start(&yaml, &["--hosts-file", hosts.to_str().unwrap()]);
    let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    for (path, name) in [("/service/1", "service1"), ("/service/2", "service2")] {
        // `a.crt` names `localhost`, which curl checks against the test CA.
        let r = tls::curl(at(https), "localhost", path, certs, &[]);
        assert_eq!((r.status, r.body.as_str()), (Some(200), name), "https {path}: {r:?}");
        let mut c = support::Client::connect(at(http));
        let r = c.get(path);
        assert_eq!((r.status, r.text().as_str()), (200, name), "http {path}");
    }
    drop(skiff);
}

#[test]
fn a_tcp_proxy_listener_terminates_tls_and_relays_the_plaintext() {
    let certs = tls::shared();
    let backend = TestUpstream::named("relayed");
    let socket = tls::downstream_socket(certs, "a", "", "");
    let listener = format!(
        "- name: tcp\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}\n  filter_chains:\n    - {}      filters:\n        - name: envoy.filters.network.tcp_proxy\n          typed_config:\n            \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n            stat_prefix: tcp_in\n            cluster: backend\n",
        indent(&socket, 6).trim_start()
    );
    let cluster = static_cluster_yaml("backend", "ROUND_ROBIN", &[(backend.addr, 1)]);
    let k = Skiff::start(&format!("{ADMIN}{}", bootstrap_yaml(&[listener], &[cluster])), &[]);
    let r = curl(k.listener("tcp"), "a.example", "/over-tcp", certs, &[]);
    assert_eq!((r.status, r.body.as_str()), (Some(200), "relayed"), "{r:?}");
    assert_eq!(backend.requests()[0].path, "/over-tcp");
}

#[test]
fn a_large_body_crosses_tls_both_ways_intact() {
    let certs = tls::shared();
    let backend = TestUpstream::echo();
    // main (TLS) → cluster `svc` over TLS → listener svc (TLS, same process) → the echo.
    let svc_port = support::free_port();
    let svc = with_socket(
        &listener_yaml("svc", "127.0.0.1", &route_all_to("backend"))
            .replace("port_value: 0", &format!("port_value: {svc_port}")),
        &tls::downstream_socket(certs, "up", "", ""),
    );
    let main = with_socket(
        &listener_yaml("main", "127.0.0.1", &route_all_to("svc")),
        &tls::downstream_socket(certs, "a", "", ""),
    );
    let to_svc =
        static_cluster_yaml("svc", "ROUND_ROBIN", &[(SocketAddr::from(([127, 0, 0, 1], svc_port)), 1)])
            + &indent(&tls::upstream_socket("sni: up.example\n", &trusting(certs, &["up.example"])), 2);
    let to_backend = static_cluster_yaml("backend", "ROUND_ROBIN", &[(backend.addr, 1)]);
    let k = Skiff::start(&format!("{ADMIN}{}", bootstrap_yaml(&[main, svc], &[to_svc, to_backend])), &[]);
    // 3 MiB of bytes that are not text, so nothing on the way can mistake them for a head.
    let body: Vec<u8> = (0..3u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let file = support::scratch_dir("tls-body").join("body.bin");
    std::fs::write(&file, &body).unwrap();
    let data = format!("@{}", file.display());
    let r = curl(
        k.listener("main"),
        "a.example",
        "/upload",
        certs,
        &["--data-binary", &data, "-o", "/dev/null", "-w", "%{size_download}"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let seen = backend.requests();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].body == body, "the backend got {} bytes, not the body sent", seen[0].body.len());
    // The echo answers the head lines plus the body: at least the body came back.
    let downloaded: usize = r.head.lines().last().and_then(|l| l.trim().parse().ok()).unwrap_or(0);
    assert!(downloaded > body.len(), "{r:?}");
}

#[test]
fn a_client_that_never_finishes_its_handshake_is_closed_at_the_chains_limit() {
    let certs = tls::shared();
    let socket = tls::downstream_socket(certs, "a", "", "");
    let listener = with_socket(&listener_yaml("main", "127.0.0.1", &route_all_to("backend")), &socket)
        .replacen("      filters:\n", "      transport_socket_connect_timeout: 0.3s\n      filters:\n", 1);
    let cluster = static_cluster_yaml("backend", "ROUND_ROBIN", &[(support::dead_port(), 1)]);
    let k = Skiff::start(&format!("{ADMIN}{}", bootstrap_yaml(&[listener], &[cluster])), &[]);
    let addr = k.listener("main");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let started = std::time::Instant::now();
    // Silent: no ClientHello. The listener's default limit would be request_headers_timeout (10 s).
    let r = support::read_until_close(&mut s, Duration::from_secs(8));
    assert!(r.closed && started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
    let name = format!("listener.127.0.0.1_{}.ssl.connection_error", addr.port());
    assert!(support::eventually(Duration::from_secs(5), || stat(&k, &name) == 1));
}
