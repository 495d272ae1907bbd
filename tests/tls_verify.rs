//! The certificate checks of a `validation_context` beyond the chain, against the real Envoy:
//! SAN matchers of every `StringMatcher` kind on DNS, URI, EMAIL and IP_ADDRESS names (and the
//! deprecated untyped `match_subject_alt_names`), `verify_certificate_hash` /
//! `verify_certificate_spki` pins and `crl` / `only_verify_leaf_cert_crl`, on client certificates (a listener whose filter
//! chains, picked by SNI, each require a certificate and match it differently) and on an
//! upstream's certificate (503 `UF`). Both proxies run the same v3 config; which clients are
//! served, what they see and the `ssl.*` stats must be equal. Certificates are made at test time
//! with openssl. Without Envoy the parity tests skip (fail under CI).

mod support;

#[path = "support/envoy.rs"]
mod envoy;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use support::tls::{self, curl, Certs};
use support::{indent, Skiff, TestUpstream};

/// The client leaves, with their subjectAltName.
const CLIENTS: &[(&str, &str)] = &[
    ("wild", "DNS:*.example.com"),
    ("partial", "DNS:web*.example.com"),
    ("mixed", "DNS:Host.Example.COM"),
    ("uri", "URI:spiffe://test/ns/Foo/sa"),
    ("mail", "email:Bob@Example.com"),
    ("ips", "IP:2001:db8:0:0:0:0:0:1,IP:10.0.0.1"),
];

/// A filter chain per matcher list, picked by SNI `<name>.verify.test`.
const CHAINS: &[(&str, &str)] = &[
    // An exact DNS matcher follows DNS rules: a wildcard SAN covers one label, case is ignored.
    ("exact-wild", "match_typed_subject_alt_names: [{ san_type: DNS, matcher: { exact: a.example.com } }]"),
    ("exact-deep", "match_typed_subject_alt_names: [{ san_type: DNS, matcher: { exact: a.b.example.com } }]"),
    ("exact-bare", "match_typed_subject_alt_names: [{ san_type: DNS, matcher: { exact: example.com } }]"),
    ("exact-partial", "match_typed_subject_alt_names: [{ san_type: DNS, matcher: { exact: web1.example.com } }]"),
    ("exact-case", "match_typed_subject_alt_names: [{ san_type: DNS, matcher: { exact: host.example.com } }]"),
    ("exact-star", "match_typed_subject_alt_names: [{ san_type: DNS, matcher: { exact: \"*.example.com\" } }]"),
    // The other kinds match the SAN as written.
    ("prefix", "match_typed_subject_alt_names: [{ san_type: DNS, matcher: { prefix: host. } }]"),
    ("prefix-ic", "match_typed_subject_alt_names: [{ san_type: DNS, matcher: { prefix: host., ignore_case: true } }]"),
    ("suffix", "match_typed_subject_alt_names: [{ san_type: DNS, matcher: { suffix: .example.com } }]"),
    ("uri-regex", "match_typed_subject_alt_names: [{ san_type: URI, matcher: { safe_regex: { regex: \"spiffe://test/ns/[a-z]+/sa\" } } }]"),
    ("uri-regex-any", "match_typed_subject_alt_names: [{ san_type: URI, matcher: { safe_regex: { regex: \"spiffe://test/.*\" } } }]"),
    ("uri-contains-ic", "match_typed_subject_alt_names: [{ san_type: URI, matcher: { contains: /foo/, ignore_case: true } }]"),
    ("email", "match_typed_subject_alt_names: [{ san_type: EMAIL, matcher: { exact: Bob@Example.com } }]"),
    ("email-lower", "match_typed_subject_alt_names: [{ san_type: EMAIL, matcher: { exact: bob@example.com } }]"),
    ("ip6", "match_typed_subject_alt_names: [{ san_type: IP_ADDRESS, matcher: { exact: \"2001:db8::1\" } }]"),
    ("ip6-long", "match_typed_subject_alt_names: [{ san_type: IP_ADDRESS, matcher: { exact: \"2001:db8:0:0:0:0:0:1\" } }]"),
    ("ip4-prefix", "match_typed_subject_alt_names: [{ san_type: IP_ADDRESS, matcher: { prefix: \"10.0.\" } }]"),
    // A type matches only names of that type.
    ("uri-as-dns", "match_typed_subject_alt_names: [{ san_type: DNS, matcher: { prefix: spiffe } }]"),
    // The deprecated list applies each matcher to every type.
    ("untyped", "match_subject_alt_names: [{ prefix: \"spiffe://\" }, { exact: Bob@Example.com }, { exact: x.example.com }]"),
];

fn certs() -> &'static Certs {
    static CERTS: std::sync::OnceLock<Certs> = std::sync::OnceLock::new();
    CERTS.get_or_init(|| {
        let certs = Certs::generate(&support::scratch_dir("tls-verify-certs"));
        certs.leaf("server", "DNS:*.verify.test", "ca");
        certs.leaf("upuri", "URI:spiffe://test/ns/up/sa", "ca");
        for (name, san) in CLIENTS {
            certs.leaf(name, san, "ca");
        }
        revocations(&certs);
        certs
    })
}

fn hcm(stat_prefix: &str, route: &str) -> String {
    format!(
        "filters:\n- name: envoy.filters.network.http_connection_manager\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n    stat_prefix: {stat_prefix}\n    http_filters: [{{ name: envoy.filters.http.router, typed_config: {{ \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }} }}]\n    route_config:\n      virtual_hosts:\n      - name: all\n        domains: [\"*\"]\n        routes:\n{}",
        indent(route, 8)
    )
}

fn validation(certs: &Certs, matchers: &str) -> String {
    format!("validation_context:\n  trusted_ca: {{ filename: {} }}\n  {matchers}\n", certs.path("ca.crt"))
}

/// `main`: a TLS listener with a filter chain per `(name, validation_context lines)`, each
/// requiring a client certificate, picked by SNI `<name>.verify.test`.
fn chains_config(chains: &[(String, String)], port: u16, admin: u16, certs: &Certs) -> String {
    let chains: String = chains
        .iter()
        .map(|(name, validation)| {
            let socket = tls::downstream_socket(certs, "server", "require_client_certificate: true\n", validation);
            format!(
                "- filter_chain_match: {{ server_names: [{name}.verify.test] }}\n{}{}",
                indent(&socket, 2),
                indent(&hcm("front", "- match: { prefix: / }\n  direct_response: { status: 200, body: { inline_string: ok } }\n"), 2)
            )
        })
        .collect();
    let main = format!(
        "- name: main\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}\n  listener_filters:\n  - name: envoy.filters.listener.tls_inspector\n    typed_config: {{ \"@type\": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector }}\n  filter_chains:\n{}",
        indent(&chains, 2)
    );
    format!(
        "admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}\nstatic_resources:\n  listeners:\n{}",
        indent(&main, 2)
    )
}

fn san_chains(certs: &Certs) -> Vec<(String, String)> {
    CHAINS.iter().map(|(name, m)| (name.to_string(), validation(certs, m))).collect()
}

fn clients_config(port: u16, admin: u16, _up_port: u16, _backend: SocketAddr, certs: &Certs) -> String {
    chains_config(&san_chains(certs), port, admin, certs)
}

/// `openssl x509 -fingerprint -sha256` of a leaf: `AB:CD:...`, the form Envoy's docs show.
fn fingerprint(certs: &Certs, leaf: &str) -> String {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in", &certs.path(&format!("{leaf}.crt"))])
        .output()
        .expect("run openssl");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    text.split_once('=').map(|(_, f)| f.to_string()).expect("a fingerprint")
}

/// The base64 SHA-256 of a leaf's SubjectPublicKeyInfo, as Envoy's docs compute it.
fn spki(certs: &Certs, leaf: &str) -> String {
    let script = format!(
        "openssl x509 -in {} -noout -pubkey | openssl pkey -pubin -outform DER | openssl dgst -sha256 -binary | base64",
        certs.path(&format!("{leaf}.crt"))
    );
    let out = std::process::Command::new("sh").args(["-c", &script]).output().expect("run openssl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

const PIN_CHAINS: &[&str] =
    &["hash", "hash-colons", "hash-untrusted", "spki-no-ca", "san-and-hash", "hash-or-spki"];

fn pin_chains(certs: &Certs) -> Vec<(String, String)> {
    let hex = |leaf: &str| fingerprint(certs, leaf).replace(':', "").to_lowercase();
    let ca = format!("validation_context:\n  trusted_ca: {{ filename: {} }}\n", certs.path("ca.crt"));
    let lists = [
        format!("{ca}  verify_certificate_hash: [\"{}\"]\n", hex("wild")),
        format!("{ca}  verify_certificate_hash: [\"{}\"]\n", fingerprint(certs, "wild")),
        // A pinned certificate from a CA the context does not trust: the chain fails first.
        format!("{ca}  verify_certificate_hash: [\"{}\"]\n", hex("stranger")),
        // Without trusted_ca Envoy checks no chain, only the pins.
        format!("validation_context:\n  verify_certificate_spki: [\"{}\"]\n", spki(certs, "stranger")),
        // SAN matchers and pins must both pass.
        format!(
            "{ca}  match_typed_subject_alt_names: [{{ san_type: DNS, matcher: {{ exact: a.example.com }} }}]\n  verify_certificate_hash: [\"{}\"]\n",
            hex("uri")
        ),
        // One hash of either list is enough.
        format!(
            "{ca}  verify_certificate_hash: [\"{}\"]\n  verify_certificate_spki: [\"{}\"]\n",
            hex("uri"),
            spki(certs, "wild")
        ),
    ];
    PIN_CHAINS.iter().zip(lists).map(|(n, v)| (n.to_string(), v)).collect()
}

fn pins_config(port: u16, admin: u16, _up_port: u16, _backend: SocketAddr, certs: &Certs) -> String {
    chains_config(&pin_chains(certs), port, admin, certs)
}

/// `main`: a plaintext listener routing `/good` and `/bad` to two clusters that reach the `up`
/// listener, whose certificate has only a URI SAN, one matching it and one not.
fn upstream_config(port: u16, admin: u16, up_port: u16, backend: SocketAddr, certs: &Certs) -> String {
    let upl = format!(
        "- name: up\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {up_port} }} }}\n  filter_chains:\n  - {}{}",
        indent(&tls::downstream_socket(certs, "upuri", "", ""), 4).trim_start(),
        indent(&hcm("up", "- match: { prefix: / }\n  route: { cluster: backend }\n"), 4),
    );
    let up = SocketAddr::from(([127, 0, 0, 1], up_port));
    let cluster = |name: &str, matchers: &str| {
        let c = support::static_cluster_yaml(name, "ROUND_ROBIN", &[(up, 1)]).replace("0.5s", "2s");
        c + &indent(&tls::upstream_socket("", &validation(certs, matchers)), 2)
    };
    let good = "match_typed_subject_alt_names: [{ san_type: URI, matcher: { prefix: \"spiffe://test/\" } }]";
    let bad = "match_typed_subject_alt_names: [{ san_type: URI, matcher: { exact: \"spiffe://test/ns/other/sa\" } }]";
    // Pins alone (no trusted_ca): the SPKI of the upstream's certificate, and another's hash.
    let pin_good = format!("verify_certificate_spki: [\"{}\"]", spki(certs, "upuri"));
    let pin_bad = format!("verify_certificate_hash: [\"{}\"]", fingerprint(certs, "wild"));
    let pinned = |name: &str, pins: &str| {
        let c = support::static_cluster_yaml(name, "ROUND_ROBIN", &[(up, 1)]).replace("0.5s", "2s");
        c + &indent(&tls::upstream_socket("", &format!("validation_context:\n  {pins}\n")), 2)
    };
    // CRLs: the upstream's issuer's (its status is known, not revoked), and only another CA's.
    let crl = |file: &str| format!("crl: {{ filename: {} }}", certs.path(file));
    let main = format!(
        "- name: main\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}\n  filter_chains:\n  - {}",
        indent(
            &hcm(
                "front",
                "- match: { prefix: /good }\n  route: { cluster: up_good }\n- match: { prefix: /bad }\n  route: { cluster: up_bad }\n- match: { prefix: /pin-good }\n  route: { cluster: pin_good }\n- match: { prefix: /pin-bad }\n  route: { cluster: pin_bad }\n- match: { prefix: /crl-good }\n  route: { cluster: crl_good }\n- match: { prefix: /crl-bad }\n  route: { cluster: crl_bad }\n"
            ),
            4
        )
        .trim_start()
    );
    format!(
        "admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}\nstatic_resources:\n  listeners:\n{}{}  clusters:\n{}{}{}",
        indent(&main, 2),
        indent(&upl, 2),
        indent(&support::static_cluster_yaml("backend", "ROUND_ROBIN", &[(backend, 1)]), 2),
        indent(&cluster("up_good", good), 2),
        indent(&cluster("up_bad", bad), 2),
    ) + &indent(&pinned("pin_good", &pin_good), 2)
        + &indent(&pinned("pin_bad", &pin_bad), 2)
        + &indent(&cluster("crl_good", &crl("ca.crl")), 2)
        + &indent(&cluster("crl_bad", &crl("other-ca.crl")), 2)
}

/// What one proxy showed: per chain, the clients served; the stats named.
#[derive(Debug, PartialEq)]
struct Seen {
    served: Vec<String>,
    stats: BTreeMap<String, u64>,
}

/// Per chain, which of `clients` (leaf names; `none` sends no certificate) are served.
fn matrix(addr: SocketAddr, certs: &Certs, chains: &[&str], clients: &[&str]) -> Vec<String> {
    chains
        .iter()
        .map(|chain| {
            let served: Vec<&str> = clients
                .iter()
                .copied()
                .filter(|leaf| {
                    let (crt, key) = (certs.path(&format!("{leaf}.crt")), certs.path(&format!("{leaf}.key")));
                    let args: &[&str] = if *leaf == "none" { &[] } else { &["--cert", &crt, "--key", &key] };
                    let host = format!("{chain}.verify.test");
                    curl(addr, &host, "/", certs, args).status == Some(200)
                })
                .collect();
            format!("{chain}: {}", served.join(","))
        })
        .collect()
}

fn client_matrix(addr: SocketAddr, certs: &Certs) -> Vec<String> {
    let chains: Vec<&str> = CHAINS.iter().map(|(n, _)| *n).collect();
    let clients: Vec<&str> = CLIENTS.iter().map(|(n, _)| *n).collect();
    matrix(addr, certs, &chains, &clients)
}

const STATS: &[&str] = &[
    "LISTENER.ssl.handshake",
    "LISTENER.ssl.fail_verify_san",
    "LISTENER.ssl.fail_verify_error",
    "LISTENER.ssl.fail_verify_no_cert",
    "LISTENER.ssl.fail_verify_cert_hash",
];

type MakeConfig = fn(u16, u16, u16, SocketAddr, &Certs) -> String;
type Client = fn(SocketAddr, &Certs) -> Vec<String>;

fn run(proxy: &str, bin: &Path, config: MakeConfig, client: Client, stats: &[&str]) -> Seen {
    let dir = support::scratch_dir(&format!("tls-verify-{proxy}-{}", stats.len()));
    let backend = TestUpstream::echo();
    let certs = certs();
    let up_port = support::free_port();
    let (listener, admin, _envoy, _skiff);
    if proxy == "envoy" {
        let e =
            envoy::Envoy::start(bin, &dir, |port, admin| config(port, admin, up_port, backend.addr, certs));
        (listener, admin) = (e.listener, e.admin);
        _envoy = Some(e);
        _skiff = None;
    } else {
        let k = Skiff::start(&config(0, 0, up_port, backend.addr, certs), &["--concurrency", "1"]);
        (listener, admin) = (k.listener("main"), k.admin());
        _skiff = Some(k);
        _envoy = None;
    }
    let stats_now =
        || envoy::parse_stats(&envoy::admin_get(admin, "/stats").map(|(_, b)| b).unwrap_or_default());
    let front = stats_now();
    let served = client(listener, certs);
    // The stats settle (a refused handshake is counted as its connection closes).
    let names: Vec<String> = stats
        .iter()
        .map(|n| n.replace("LISTENER", &format!("listener.127.0.0.1_{}", listener.port())))
        .collect();
    let mut after = stats_now();
    let settle_by = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = stats_now();
        let pick = |m: &BTreeMap<String, u64>| names.iter().map(|n| m.get(n).copied()).collect::<Vec<_>>();
        if pick(&now) == pick(&after) || std::time::Instant::now() > settle_by {
            break;
        }
        after = now;
    }
    let stats = stats
        .iter()
        .zip(&names)
        .map(|(n, real)| {
            let v = after.get(real).copied().unwrap_or(0) - front.get(real).copied().unwrap_or(0);
            (n.to_string(), v)
        })
        .collect();
    Seen { served, stats }
}

fn compare(name: &str, config: MakeConfig, client: Client, stats: &[&str]) -> Seen {
    let Some(bin) = envoy::binary_or_skip(name) else {
        return run("skiff", Path::new("envoy"), config, client, stats);
    };
    let envoy = run("envoy", &bin, config, client, stats);
    let skiff = run("skiff", &bin, config, client, stats);
    assert_eq!(envoy, skiff, "{name}: left is Envoy, right is skiff");
    skiff
}

#[test]
fn client_certificates_are_matched_by_every_san_matcher_kind_like_envoy() {
    let seen = compare("san-matchers", clients_config, client_matrix, STATS);
    // The rules that fired, as Envoy applies them (the parity above checks them on the binary).
    let want = [
        "exact-wild: wild",
        "exact-deep: ",
        "exact-bare: ",
        "exact-partial: wild,partial",
        "exact-case: wild,mixed",
        "exact-star: wild",
        "prefix: ",
        "prefix-ic: mixed",
        "suffix: wild,partial",
        "uri-regex: ",
        "uri-regex-any: uri",
        "uri-contains-ic: uri",
        "email: mail",
        "email-lower: ",
        "ip6: ips",
        "ip6-long: ",
        "ip4-prefix: ips",
        "uri-as-dns: ",
        "untyped: wild,uri,mail",
    ];
    assert_eq!(seen.served, want);
    let refused = want
        .iter()
        .map(|l| {
            CLIENTS.len() - l.split(": ").nth(1).map_or(0, |s| s.split(',').filter(|x| !x.is_empty()).count())
        })
        .sum::<usize>();
    assert_eq!(seen.stats["LISTENER.ssl.fail_verify_san"], refused as u64);
    assert_eq!(seen.stats["LISTENER.ssl.fail_verify_error"], 0);
}

#[test]
fn pinned_certificate_hashes_and_spkis_are_checked_after_the_san_matchers_like_envoy() {
    let seen = compare(
        "pins",
        pins_config,
        |addr, certs| matrix(addr, certs, PIN_CHAINS, &["wild", "uri", "stranger", "none"]),
        STATS,
    );
    assert_eq!(
        seen.served,
        [
            "hash: wild",
            "hash-colons: wild",
            "hash-untrusted: ",
            "spki-no-ca: stranger",
            "san-and-hash: ",
            "hash-or-spki: wild,uri",
        ]
    );
    // hash, hash-colons: uri; hash-untrusted, spki-no-ca: wild, uri; san-and-hash: wild (its SAN
    // matched).
    assert_eq!(seen.stats["LISTENER.ssl.fail_verify_cert_hash"], 7);
    // stranger, on the five chains with trusted_ca: the chain is checked before the pins.
    assert_eq!(seen.stats["LISTENER.ssl.fail_verify_error"], 5);
    // san-and-hash: uri, checked against the SAN matcher first.
    assert_eq!(seen.stats["LISTENER.ssl.fail_verify_san"], 1);
    // Every chain refuses a client without a certificate.
    assert_eq!(seen.stats["LISTENER.ssl.fail_verify_no_cert"], PIN_CHAINS.len() as u64);
}

fn openssl(dir: &Path, args: &[&str]) {
    let out =
        std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// CRLs and the certificates they are about: `good` and `revoked` (signed by `ca`, the second
/// revoked in `ca.crl`), an intermediate CA `int` (signed by `ca`, an empty `int.crl`) and `ileaf`
/// signed by it (`ileaf.crt` holds the leaf then `int`, the chain a client sends), and an empty
/// `other-ca.crl`. Made with `openssl ca`, whose database lives in the directory.
fn revocations(certs: &Certs) {
    let dir = &certs.dir;
    certs.leaf("good", "DNS:good.example", "ca");
    certs.leaf("revoked", "DNS:revoked.example", "ca");
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend(["-keyout", "int.key", "-out", "int.csr", "-subj", "/CN=int"]);
    openssl(dir, &args);
    std::fs::write(
        dir.join("int.ext"),
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
    )
    .expect("write int.ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "int.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "int.crt",
            "-days",
            "2",
            "-extfile",
            "int.ext",
        ],
    );
    certs.leaf("ileaf", "DNS:ileaf.example", "int");
    let chain = std::fs::read_to_string(dir.join("ileaf.crt")).expect("ileaf.crt")
        + &std::fs::read_to_string(dir.join("int.crt")).expect("int.crt");
    std::fs::write(dir.join("ileaf.crt"), chain).expect("write the ileaf chain");
    for ca in ["ca", "other-ca", "int"] {
        std::fs::write(dir.join(format!("{ca}.index")), "").expect("index");
        std::fs::write(dir.join(format!("{ca}.crlnumber")), "01\n").expect("crlnumber");
        std::fs::write(
            dir.join(format!("{ca}.cnf")),
            format!("[ca]\ndefault_ca = d\n[d]\ndatabase = {ca}.index\ncrlnumber = {ca}.crlnumber\ndefault_md = sha256\ndefault_crl_days = 2\n"),
        )
        .expect("ca config");
    }
    let ca_args = |ca: &str| -> Vec<String> {
        ["-config", &format!("{ca}.cnf"), "-keyfile", &format!("{ca}.key"), "-cert", &format!("{ca}.crt")]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let run = |ca: &str, extra: &[&str]| {
        let mut args = vec!["ca".to_string()];
        args.extend(ca_args(ca));
        args.extend(extra.iter().map(|s| s.to_string()));
        openssl(dir, &args.iter().map(String::as_str).collect::<Vec<_>>());
    };
    run("ca", &["-revoke", "revoked.crt"]);
    for ca in ["ca", "other-ca", "int"] {
        run(ca, &["-gencrl", "-out", &format!("{ca}.crl")]);
    }
    let cat = |files: &[&str], to: &str| {
        let text: String = files.iter().map(|f| std::fs::read_to_string(dir.join(f)).expect("crl")).collect();
        std::fs::write(dir.join(to), text).expect("write crl bundle");
    };
    cat(&["ca.crl", "other-ca.crl"], "ca-other.crl");
    cat(&["int.crl", "ca.crl"], "int-ca.crl");
}

const CRL_CHAINS: &[&str] = &["ca", "ca-other", "other-ca", "int", "int-ca", "int-leaf", "ca-leaf"];

fn crl_chains(certs: &Certs) -> Vec<(String, String)> {
    CRL_CHAINS
        .iter()
        .map(|name| {
            let (file, leaf_only) = match name.strip_suffix("-leaf") {
                Some(f) => (f, true),
                None => (*name, false),
            };
            let mut v = format!(
                "validation_context:\n  trusted_ca: {{ filename: {} }}\n  crl: {{ filename: {} }}\n",
                certs.path("ca.crt"),
                certs.path(&format!("{file}.crl"))
            );
            if leaf_only {
                v.push_str("  only_verify_leaf_cert_crl: true\n");
            }
            (name.to_string(), v)
        })
        .collect()
}

fn crl_config(port: u16, admin: u16, _up_port: u16, _backend: SocketAddr, certs: &Certs) -> String {
    chains_config(&crl_chains(certs), port, admin, certs)
}

#[test]
fn a_revoked_client_certificate_or_one_without_its_issuers_crl_is_refused_like_envoy() {
    let seen = compare(
        "crl",
        crl_config,
        |addr, certs| matrix(addr, certs, CRL_CHAINS, &["good", "revoked", "ileaf"]),
        STATS,
    );
    assert_eq!(
        seen.served,
        [
            // `revoked` is in ca.crl; `ileaf`'s issuer `int` has no CRL there.
            "ca: good",
            "ca-other: good",
            // Without ca.crl nothing `ca` signed has a known status.
            "other-ca: ",
            // `int` itself needs ca.crl, unless only the leaf is checked.
            "int: ",
            "int-ca: good,ileaf",
            "int-leaf: ileaf",
            "ca-leaf: good",
        ]
    );
    // Every refusal (21 handshakes, 6 served) is a chain error.
    assert_eq!(seen.stats["LISTENER.ssl.fail_verify_error"], 21 - 6);
}

/// `curl http://<addr><path>`: the status, or none.
fn plain_status(addr: SocketAddr, path: &str) -> String {
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10"])
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("run curl");
    format!("{path}: {}", String::from_utf8_lossy(&out.stdout))
}

#[test]
fn an_upstream_certificate_is_checked_by_san_pins_and_crl_and_a_failure_is_503_like_envoy() {
    let seen = compare(
        "san-upstream",
        upstream_config,
        |addr, _| {
            ["/good", "/bad", "/pin-good", "/pin-bad", "/crl-good", "/crl-bad"]
                .iter()
                .map(|p| plain_status(addr, p))
                .collect()
        },
        &[
            "cluster.up_good.ssl.handshake",
            "cluster.up_good.ssl.fail_verify_san",
            "cluster.up_bad.ssl.handshake",
            "cluster.up_bad.ssl.fail_verify_san",
            "cluster.up_bad.upstream_cx_connect_fail",
            "cluster.pin_good.ssl.handshake",
            "cluster.pin_bad.ssl.fail_verify_cert_hash",
            "cluster.pin_bad.upstream_cx_connect_fail",
            "cluster.crl_good.ssl.handshake",
            "cluster.crl_bad.ssl.fail_verify_error",
        ],
    );
    assert_eq!(
        seen.served,
        ["/good: 200", "/bad: 503", "/pin-good: 200", "/pin-bad: 503", "/crl-good: 200", "/crl-bad: 503"]
    );
    assert_eq!(seen.stats["cluster.crl_bad.ssl.fail_verify_error"], 1);
    assert_eq!(seen.stats["cluster.up_bad.ssl.fail_verify_san"], 1);
    assert_eq!(seen.stats["cluster.up_good.ssl.handshake"], 1);
    assert_eq!(seen.stats["cluster.pin_bad.ssl.fail_verify_cert_hash"], 1);
    assert_eq!(seen.stats["cluster.pin_good.ssl.handshake"], 1);
}
