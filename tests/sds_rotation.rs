//! Certificates that rotate: TLS contexts take their certificate and CA from SDS files
//! (`sds_config.path_config_source`), and a new file renamed into place is served from the next
//! handshake while a load of HTTPS keep-alive and new-connection requests runs with no failed
//! request; a bad update (a missing certificate, a file that does not parse, a second secret)
//! is counted and the last good secret keeps serving; writes in place are ignored; a certificate
//! renamed over the one a secret names is reloaded (`key_rotation_failed` while its key does not
//! match); a Kubernetes Secret volume's `..data` swap is picked up. Between two skiff sidecars
//! the front's client certificate rotates (upstream SDS) and the service sees the new one. The
//! same renames run against the real Envoy, and the certificate a client sees, `/certs` and the
//! `sds.*` stats are compared. Certificates are made at test time with openssl.

mod support;

#[path = "support/envoy.rs"]
mod envoy;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::tls::Certs;
use support::{Skiff, TestUpstream};

const ADMIN: &str = "admin: { address: { socket_address: { address: 127.0.0.1, port_value: 0 } } }\n";
const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// An SDS file holding the certificate secret `name`.
fn cert_file(name: &str, certs: &Certs, leaf: &str, version: &str) -> String {
    format!("version_info: \"{version}\"\nresources:\n{}", cert_resource(name, certs, leaf))
}

/// The certificate secret `name` serving `leaf`, as one entry of `resources`.
fn cert_resource(name: &str, certs: &Certs, leaf: &str) -> String {
    format!(
        "- \"@type\": {SECRET}\n  name: {name}\n  tls_certificate:\n    certificate_chain: {{ filename: {} }}\n    private_key: {{ filename: {} }}\n",
        certs.path(&format!("{leaf}.crt")),
        certs.path(&format!("{leaf}.key")),
    )
}

/// An SDS file holding the validation secret `name` trusting the test CA.
fn ca_file(name: &str, certs: &Certs, version: &str) -> String {
    ca_file_with(name, certs, "ca", "", version)
}

/// An SDS file holding the validation secret `name` trusting `ca` (`ca` or `other-ca`), with
/// `extra` lines in the validation context (column 4).
fn ca_file_with(name: &str, certs: &Certs, ca: &str, extra: &str, version: &str) -> String {
    format!(
        "version_info: \"{version}\"\nresources:\n- \"@type\": {SECRET}\n  name: {name}\n  validation_context:\n    trusted_ca: {{ filename: {} }}\n{extra}",
        certs.path(&format!("{ca}.crt")),
    )
}

/// Writes `text` beside `path` and renames it into place, as an operator (or a controller) does.
fn install(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write the new file");
    std::fs::rename(&tmp, path).expect("rename it into place");
}

/// A `tls_certificate_sds_secret_configs` / `validation_context_sds_secret_config` entry.
fn sds_ref(name: &str, path: &Path) -> String {
    format!(
        "{{ name: {name}, sds_config: {{ path_config_source: {{ path: {} }}, resource_api_version: V3 }} }}",
        path.display()
    )
}

/// A TLS listener `front` on `port` serving the SDS secret `server` from `sds` and routing to
/// `upstream` (`direct_response` when None), with node and admin as Envoy's SDS needs them.
fn front_config(sds: &Path, port: u16, admin: u16, upstream: Option<SocketAddr>) -> String {
    let action = match upstream {
        Some(_) => "route: { cluster: backend }",
        None => "direct_response: { status: 200, body: { inline_string: served } }",
    };
    let cluster = match upstream {
        Some(a) => support::static_cluster_yaml("backend", "ROUND_ROBIN", &[(a, 1)]),
        None => support::static_cluster_yaml("backend", "ROUND_ROBIN", &[(support::dead_port(), 1)]),
    };
    format!(
        r#"node: {{ id: front-1, cluster: front }}
admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }} }}
static_resources:
  listeners:
  - name: front
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificate_sds_secret_configs: [ {server} ]
      filters:
{hcm}  clusters:
{cluster}"#,
        server = sds_ref("server", sds),
        hcm = support::indent(&support::hcm_filter_yaml("front", "", action), 6),
        cluster = support::indent(&cluster, 2),
    )
}

// ---------------------------------------------------------------------------------------------
// A real TLS client (rustls), telling which certificate it was served.

fn client_config(certs: &Certs) -> Arc<rustls::ClientConfig> {
    let pem = std::fs::read(certs.path("ca.crt")).expect("ca.crt");
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
        roots.add(c.expect("a CA certificate")).expect("add the CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A verified TLS connection to `addr` (as `localhost`) and the leaf certificate it was served.
fn connect(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> std::io::Result<(Tls, Vec<u8>)> {
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let name = rustls_pki_types::ServerName::try_from("localhost").map_err(std::io::Error::other)?;
    let conn = rustls::ClientConnection::new(config.clone(), name).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    let leaf = tls.conn.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default();
    Ok((tls, leaf))
}

/// One GET on `tls`; the response's status (its body read by `content-length`).
fn get(tls: &mut Tls, close: bool) -> std::io::Result<u16> {
    let connection = if close { "close" } else { "keep-alive" };
    tls.write_all(
        format!("GET / HTTP/1.1\r\nHost: a.example\r\nConnection: {connection}\r\n\r\n").as_bytes(),
    )?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tls.read(&mut byte)? == 0 {
            return Err(std::io::Error::other("closed before a response"));
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| std::io::Error::other("no content-length"))?;
    let mut body = vec![0u8; length];
    tls.read_exact(&mut body)?;
    Ok(status)
}

/// The leaf certificate (DER) a PEM file starts with.
fn der(certs: &Certs, file: &str) -> Vec<u8> {
    let pem = std::fs::read(certs.path(file)).expect("certificate file");
    let first: Option<rustls_pki_types::CertificateDer<'static>> =
        rustls_pki_types::pem::PemObject::pem_slice_iter(&pem).next().and_then(Result::ok);
    first.map(|c| c.to_vec()).expect("a PEM certificate")
}

/// The leaf a new handshake with `addr` is served (empty when there is no handshake).
fn served(addr: SocketAddr, config: &Arc<rustls::ClientConfig>) -> Vec<u8> {
    connect(addr, config).map(|(_, leaf)| leaf).unwrap_or_default()
}

fn stats(admin: SocketAddr) -> String {
    envoy::admin_get(admin, "/stats").map(|(_, b)| b).unwrap_or_default()
}

fn stat(admin: SocketAddr, name: &str) -> Option<String> {
    let body = stats(admin);
    let prefix = format!("{name}: ");
    body.lines().find_map(|l| l.strip_prefix(&prefix).map(|v| v.trim().to_string()))
}

fn wait_stat(admin: SocketAddr, name: &str, value: &str) -> bool {
    support::eventually(Duration::from_secs(5), || stat(admin, name).as_deref() == Some(value))
}

/// The certificates for one test, with the renewed leaves it rotates to.
fn certs_for(tag: &str) -> Certs {
    let certs = Certs::generate(&support::scratch_dir(tag));
    certs.leaf("renewed", "DNS:a.example,DNS:localhost", "ca");
    certs.leaf("renewed2", "DNS:a.example,DNS:localhost", "ca");
    certs
}

// ---------------------------------------------------------------------------------------------

#[test]
fn a_renewed_certificate_is_served_under_load_with_no_failed_request() {
    let certs = certs_for("sds-load");
    let sds = certs.dir.join("server.yaml");
    install(&sds, &cert_file("server", &certs, "a", "v1"));
    let upstream = TestUpstream::echo();
    let skiff = Skiff::start(&front_config(&sds, 0, 0, Some(upstream.addr)), &[]);
    let addr = skiff.listener("front");
    let config = client_config(&certs);
    let (old, new) = (der(&certs, "a.crt"), der(&certs, "renewed.crt"));
    assert_eq!(served(addr, &config), old);

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(Mutex::new(Vec::<String>::new())));
    let seen_new = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    // Keep-alive: one connection each, never reconnected (a dropped connection is a failure).
    for _ in 0..2 {
        let (stop, ok, failed, config) = (stop.clone(), ok.clone(), failed.clone(), config.clone());
        workers.push(std::thread::spawn(move || {
            let mut tls = match connect(addr, &config) {
                Ok((tls, _)) => tls,
                Err(e) => return failed.lock().unwrap().push(format!("keep-alive connect: {e}")),
            };
            while !stop.load(Ordering::Relaxed) {
                match get(&mut tls, false) {
                    Ok(200) => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(s) => return failed.lock().unwrap().push(format!("keep-alive status {s}")),
                    Err(e) => return failed.lock().unwrap().push(format!("keep-alive: {e}")),
                };
            }
        }));
    }
    // New connections: a handshake per request.
    for _ in 0..2 {
        let (stop, ok, failed, config) = (stop.clone(), ok.clone(), failed.clone(), config.clone());
        let (seen_new, new) = (seen_new.clone(), new.clone());
        workers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let result = connect(addr, &config).and_then(|(mut tls, leaf)| {
                    if leaf == new {
                        seen_new.store(true, Ordering::Relaxed);
                    }
                    get(&mut tls, true)
                });
                match result {
                    Ok(200) => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(s) => return failed.lock().unwrap().push(format!("new connection: status {s}")),
                    Err(e) => return failed.lock().unwrap().push(format!("new connection: {e}")),
                };
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(300));
    let before = ok.load(Ordering::Relaxed);
    install(&sds, &cert_file("server", &certs, "renewed", "v2"));
    let picked_up = support::eventually(Duration::from_secs(5), || seen_new.load(Ordering::Relaxed));
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("a load thread");
    }
    assert!(picked_up, "new handshakes never got the renewed certificate; failures: {:?}; fresh client sees new: {}; shared config sees new: {}", failed.lock().unwrap(), served(addr, &client_config(&certs)) == new, served(addr, &config) == new);
    let failed = failed.lock().unwrap().clone();
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    let total = ok.load(Ordering::Relaxed);
    assert!(before > 20 && total > before + 20, "too little load: {before} then {total}");
    assert_eq!(served(addr, &config), new);
    // Envoy's counts for one good update after the first load.
    let admin = skiff.admin();
    assert_eq!(stat(admin, "sds.server.update_success").as_deref(), Some("2"));
    assert_eq!(stat(admin, "sds.server.update_attempt").as_deref(), Some("2"));
    assert_eq!(stat(admin, "sds.server.version_text").as_deref(), Some("\"v2\""));
    let update =
        format!("listener.{}_{}.server_ssl_socket_factory.ssl_context_update_by_sds", addr.ip(), addr.port());
    assert_eq!(stat(admin, &update).as_deref(), Some("2"));
    // /certs lists the renewed leaf, as an SDS secret's (inlined) certificate.
    let (_, body) = envoy::admin_get(admin, "/certs").expect("GET /certs");
    let v: serde_json::Value = serde_json::from_str(&body).expect("/certs is JSON");
    let leaf = &v["certificates"][0]["cert_chain"][0];
    assert_eq!(leaf["path"], "<inline>");
    assert_eq!(leaf["serial_number"].as_str(), Some(certs.serial("renewed.crt").as_str()), "{v}");
    // /config_dump shows the secret with its certificate inlined and its key redacted.
    let (_, dump) = envoy::admin_get(admin, "/config_dump").expect("GET /config_dump");
    let key = std::fs::read_to_string(certs.path("renewed.key")).expect("renewed.key");
    let key_line = key.lines().nth(1).expect("a key line");
    assert!(!dump.contains(key_line) && !dump.contains("PRIVATE KEY"), "a key in /config_dump");
    let v: serde_json::Value = serde_json::from_str(&dump).expect("/config_dump is JSON");
    let secrets =
        v["configs"].as_array().and_then(|c| c.iter().find(|c| c["dynamic_active_secrets"].is_array()));
    let secret = &secrets.expect("a SecretsConfigDump")["dynamic_active_secrets"][0];
    assert_eq!(secret["name"], "server");
    assert_eq!(secret["version_info"], "v2");
    // base64 of "[redacted]".
    assert_eq!(secret["secret"]["tls_certificate"]["private_key"]["inline_bytes"], "W3JlZGFjdGVkXQ==");
}

#[test]
fn a_bad_update_keeps_the_last_good_certificate_and_writes_in_place_are_ignored() {
    let certs = certs_for("sds-bad");
    let sds = certs.dir.join("server.yaml");
    install(&sds, &cert_file("server", &certs, "a", "v1"));
    let skiff = Skiff::start(&front_config(&sds, 0, 0, None), &[]);
    let (addr, admin) = (skiff.listener("front"), skiff.admin());
    let config = client_config(&certs);
    let old = der(&certs, "a.crt");
    // A certificate file that is not there: rejected, the old one serves.
    install(&sds, &cert_file("server", &certs, "missing", "v2"));
    assert!(wait_stat(admin, "sds.server.update_rejected", "1"), "{}", stats(admin));
    assert_eq!(served(addr, &config), old);
    // Two secrets in the file (Envoy takes exactly one), another name: rejected too.
    let two = cert_file("server", &certs, "b", "v3") + &cert_resource("other", &certs, "b");
    install(&sds, &two);
    assert!(wait_stat(admin, "sds.server.update_rejected", "2"), "{}", stats(admin));
    install(&sds, &cert_file("other", &certs, "b", "v4"));
    assert!(wait_stat(admin, "sds.server.update_rejected", "3"), "{}", stats(admin));
    // Not YAML at all: a failure.
    install(&sds, "resources: [");
    assert!(wait_stat(admin, "sds.server.update_failure", "1"), "{}", stats(admin));
    assert_eq!(served(addr, &config), old);
    assert_eq!(stat(admin, "sds.server.update_success").as_deref(), Some("1"));
    assert_eq!(stat(admin, "sds.server.version_text").as_deref(), Some("\"v1\""));
    // Written in place: not an update (Envoy watches for renames only).
    std::fs::write(&sds, cert_file("server", &certs, "renewed", "v5")).expect("write in place");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(stat(admin, "sds.server.update_attempt").as_deref(), Some("5"));
    assert_eq!(served(addr, &config), old);
    let log = skiff.log();
    assert!(log.contains("sds server: update rejected, keeping the last good secret"), "{log}");
    assert!(log.contains("Unexpected SDS secret (expecting server): other"), "{log}");
}

#[test]
fn a_certificate_renamed_over_the_one_a_secret_names_is_reloaded_once_its_key_matches() {
    let certs = certs_for("sds-files");
    let sds = certs.dir.join("server.yaml");
    install(&sds, &cert_file("server", &certs, "a", "v1"));
    let skiff = Skiff::start(&front_config(&sds, 0, 0, None), &[]);
    let (addr, admin) = (skiff.listener("front"), skiff.admin());
    let config = client_config(&certs);
    let rename = |from: &str, to: &str| {
        let tmp = certs.dir.join(format!("{to}.tmp"));
        std::fs::copy(certs.path(from), &tmp).expect("copy");
        std::fs::rename(&tmp, certs.path(to)).expect("rename over");
    };
    // The certificate first: it does not match the old key, so the old pair keeps serving.
    rename("renewed.crt", "a.crt");
    assert!(wait_stat(admin, "sds.server.key_rotation_failed", "1"), "{}", stats(admin));
    let old_leaf = served(addr, &config);
    assert!(!old_leaf.is_empty() && old_leaf != der(&certs, "a.crt"), "the unmatched certificate was served");
    // Then the key: the pair loads.
    rename("renewed.key", "a.key");
    assert!(
        support::eventually(Duration::from_secs(5), || served(addr, &config) == der(&certs, "renewed.crt"))
    );
    let update =
        format!("listener.{}_{}.server_ssl_socket_factory.ssl_context_update_by_sds", addr.ip(), addr.port());
    assert_eq!(stat(admin, &update).as_deref(), Some("2"));
    // A file reload is no SDS update.
    assert_eq!(stat(admin, "sds.server.update_attempt").as_deref(), Some("1"));
}

/// A Kubernetes Secret volume in `dir`: `..data` a symlink to the current version's directory,
/// and `tls.crt`, `tls.key`, `server.yaml` symlinks through it. `version` makes the next one and
/// swaps `..data` to it atomically, as the kubelet does.
fn secret_volume(dir: &Path, certs: &Certs, leaf: &str, version: &str) {
    use std::os::unix::fs::symlink;
    let v = dir.join(format!("..{version}"));
    std::fs::create_dir_all(&v).expect("version dir");
    std::fs::copy(certs.path(&format!("{leaf}.crt")), v.join("tls.crt")).expect("tls.crt");
    std::fs::copy(certs.path(&format!("{leaf}.key")), v.join("tls.key")).expect("tls.key");
    let text = format!(
        "version_info: \"{version}\"\nresources:\n- \"@type\": {SECRET}\n  name: server\n  tls_certificate:\n    certificate_chain: {{ filename: {d}/tls.crt }}\n    private_key: {{ filename: {d}/tls.key }}\n",
        d = dir.display()
    );
    std::fs::write(v.join("server.yaml"), text).expect("server.yaml");
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(format!("..{version}"), &tmp).expect("..data_tmp");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    for f in ["tls.crt", "tls.key", "server.yaml"] {
        if std::fs::symlink_metadata(dir.join(f)).is_err() {
            symlink(format!("..data/{f}"), dir.join(f)).expect("file symlink");
        }
    }
}

#[test]
fn parity_rotation_serves_and_counts_as_envoy_does() {
    let Some(bin) = envoy::binary_or_skip("parity_rotation_serves_and_counts_as_envoy_does") else { return };
    let certs = certs_for("sds-parity");
    let sds = certs.dir.join("server.yaml");
    install(&sds, &cert_file("server", &certs, "a", "v1"));
    let dir = support::scratch_dir("sds-parity-envoy");
    let envoy = envoy::Envoy::start(&bin, &dir, |port, admin| front_config(&sds, port, admin, None));
    let skiff = Skiff::start(&front_config(&sds, 0, 0, None), &[]);
    let config = client_config(&certs);
    let both = [(envoy.listener, envoy.admin), (skiff.listener("front"), skiff.admin())];
    let compared = [
        "sds.server.update_attempt",
        "sds.server.update_success",
        "sds.server.update_rejected",
        "sds.server.update_failure",
        "sds.server.version_text",
        "sds.server.init_fetch_timeout",
    ];
    // `dump`: compare the SecretsConfigDump too (after a rejected update Envoy lists the secret
    // as warming with the rejected version and no data while it serves the old one: README).
    let check = |step: &str, leaf: &str, dump: bool| {
        let want = der(&certs, &format!("{leaf}.crt"));
        for (addr, _) in both {
            assert!(
                support::eventually(Duration::from_secs(5), || served(addr, &config) == want),
                "{step}: {addr} does not serve {leaf}"
            );
        }
        let of = |admin| -> Vec<Option<String>> { compared.iter().map(|n| stat(admin, n)).collect() };
        assert!(
            support::eventually(Duration::from_secs(5), || of(both[0].1) == of(both[1].1)),
            "{step}: envoy {:?} skiff {:?}",
            of(both[0].1),
            of(both[1].1)
        );
        let update = |(addr, admin): (SocketAddr, SocketAddr)| {
            let name = format!(
                "listener.127.0.0.1_{}.server_ssl_socket_factory.ssl_context_update_by_sds",
                addr.port()
            );
            stat(admin, &name)
        };
        assert_eq!(update(both[0]), update(both[1]), "{step}");
        let certs_of = |admin| {
            let (_, body) = envoy::admin_get(admin, "/certs").expect("GET /certs");
            serde_json::from_str::<serde_json::Value>(&body).expect("/certs is JSON")
        };
        assert_eq!(certs_of(both[0].1), certs_of(both[1].1), "{step}");
        // The SecretsConfigDump's secret: files inlined, the key redacted (`last_updated` aside).
        let secret_of = |admin| {
            let (_, body) = envoy::admin_get(admin, "/config_dump").expect("GET /config_dump");
            let v: serde_json::Value = serde_json::from_str(&body).expect("/config_dump is JSON");
            let dump = v["configs"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["dynamic_active_secrets"].is_array()).cloned());
            let secret = dump.map(|d| d["dynamic_active_secrets"][0].clone()).unwrap_or_default();
            (secret["name"].clone(), secret["version_info"].clone(), secret["secret"].clone())
        };
        if dump {
            assert_eq!(secret_of(both[0].1), secret_of(both[1].1), "{step}");
        }
    };
    check("start", "a", true);
    install(&sds, &cert_file("server", &certs, "renewed", "v2"));
    check("renamed", "renewed", true);
    install(&sds, &cert_file("server", &certs, "missing", "v3"));
    std::thread::sleep(Duration::from_millis(1500));
    check("missing certificate", "renewed", false);
    install(&sds, "resources: [");
    std::thread::sleep(Duration::from_millis(1500));
    check("not YAML", "renewed", false);
    install(&sds, &cert_file("server", &certs, "renewed2", "v4"));
    check("renamed again", "renewed2", true);
    // The certificate and then the key renamed over the ones the secret names: once both are
    // in place, both serve the new pair (Envoy counts key_rotation_failed differently: README).
    for (from, to) in [("renewed.crt", "renewed2.crt"), ("renewed.key", "renewed2.key")] {
        let tmp = certs.dir.join("over.tmp");
        std::fs::copy(certs.path(from), &tmp).expect("copy");
        std::fs::rename(&tmp, certs.path(to)).expect("rename over");
        std::thread::sleep(Duration::from_millis(1500));
    }
    check("certificate and key renamed over", "renewed2", true);
}

#[test]
fn parity_a_secret_volume_swap_is_picked_up_as_envoy_does_with_watched_directory() {
    let Some(bin) = envoy::binary_or_skip(
        "parity_a_secret_volume_swap_is_picked_up_as_envoy_does_with_watched_directory",
    ) else {
        return;
    };
    let certs = certs_for("sds-volume");
    let volume = certs.dir.join("volume");
    std::fs::create_dir_all(&volume).expect("volume dir");
    secret_volume(&volume, &certs, "a", "v1");
    let sds = volume.join("server.yaml");
    let watched = |port, admin| {
        front_config(&sds, port, admin, None).replace(
            &format!("path_config_source: {{ path: {} }}", sds.display()),
            &format!(
                "path_config_source: {{ path: {}, watched_directory: {{ path: {} }} }}",
                sds.display(),
                volume.display()
            ),
        )
    };
    let dir = support::scratch_dir("sds-volume-envoy");
    let envoy = envoy::Envoy::start(&bin, &dir, watched);
    let skiff = Skiff::start(&watched(0, 0), &[]);
    let config = client_config(&certs);
    let both = [(envoy.listener, envoy.admin), (skiff.listener("front"), skiff.admin())];
    for (addr, _) in both {
        assert_eq!(served(addr, &config), der(&certs, "a.crt"));
    }
    secret_volume(&volume, &certs, "renewed", "v2");
    for (addr, admin) in both {
        assert!(
            support::eventually(Duration::from_secs(5), || served(addr, &config)
                == der(&certs, "renewed.crt")),
            "{addr} does not serve the swapped certificate"
        );
        assert!(wait_stat(admin, "sds.server.version_text", "\"v2\""), "{}", stats(admin));
    }
}

// ---------------------------------------------------------------------------------------------
// Two sidecars: the front presents a client certificate from SDS to the service sidecar.

/// The service sidecar: TLS serving `up`, requiring a client certificate from the CA (the CA
/// from the SDS file `ca`), writing the client's subject into `x-forwarded-client-cert`.
fn service_config(certs: &Certs, ca: &Path, upstream: SocketAddr) -> String {
    let socket = support::tls::downstream_socket(
        certs,
        "up",
        "require_client_certificate: true\n",
        &format!("validation_context_sds_secret_config: {}\n", sds_ref("clients", ca)),
    );
    let hcm = support::hcm_filter_yaml(
        "service",
        "forward_client_cert_details: SANITIZE_SET\nset_current_client_cert_details: { subject: true }\n",
        "route: { cluster: app }",
    );
    format!(
        "node: {{ id: service-1, cluster: service }}\n{ADMIN}static_resources:\n  listeners:\n  - name: service\n    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}\n    filter_chains:\n    - {}      filters:\n{}  clusters:\n{}",
        support::indent(&socket, 6).trim_start(),
        support::indent(&hcm, 6),
        support::indent(&support::static_cluster_yaml("app", "ROUND_ROBIN", &[(upstream, 1)]), 2),
    )
}

/// The front sidecar: plaintext in, mTLS to the service presenting the SDS secret `client` and
/// checking the service's chain and SAN with the SDS secret `upstream` (both files beside
/// `client`); one request per upstream connection, so each is a handshake.
fn front_sidecar_config(client: &Path, service: SocketAddr) -> String {
    let upstream = client.with_file_name("upstream.yaml");
    let socket = support::tls::upstream_socket(
        "sni: up.example\n",
        &format!(
            "tls_certificate_sds_secret_configs: [ {} ]\nvalidation_context_sds_secret_config: {}\n",
            sds_ref("client", client),
            sds_ref("upstream", &upstream)
        ),
    );
    let cluster = support::static_cluster_yaml("service", "ROUND_ROBIN", &[(service, 1)])
        + "  max_requests_per_connection: 1\n"
        + &support::indent(&socket, 2);
    let listener = support::listener_yaml("front", "127.0.0.1", "virtual_hosts:\n- name: all\n  domains: [\"*\"]\n  routes:\n  - match: { prefix: \"/\" }\n    route: { cluster: service }\n");
    format!(
        "node: {{ id: front-1, cluster: front }}\n{ADMIN}{}",
        support::bootstrap_yaml(&[listener], &[cluster])
    )
}

#[test]
fn a_rotated_client_certificate_reaches_the_service_sidecar_with_no_failed_request() {
    let certs = certs_for("sds-mesh");
    certs.leaf("client2", "DNS:client.example,URI:spiffe://test/client2", "ca");
    let (client, ca) = (certs.dir.join("client.yaml"), certs.dir.join("clients.yaml"));
    let sans = "    match_typed_subject_alt_names: [{ san_type: DNS, matcher: { exact: up.example } }]\n";
    install(&client, &cert_file("client", &certs, "client", "c1"));
    install(&client.with_file_name("upstream.yaml"), &ca_file_with("upstream", &certs, "ca", sans, "u1"));
    install(&ca, &ca_file("clients", &certs, "ca1"));
    let app = TestUpstream::echo();
    let service = Skiff::start(&service_config(&certs, &ca, app.addr), &[]);
    let front = Skiff::start(&front_sidecar_config(&client, service.listener("service")), &[]);
    let addr = front.listener("front");
    let subject = || {
        let r = support::get(addr, "/");
        let xfcc =
            r.text().lines().find_map(|l| l.strip_prefix("x-forwarded-client-cert: ")).map(str::to_string);
        // The client certificate's hash changes too; the subject names it.
        let subject =
            xfcc.unwrap_or_default().split(';').find(|p| p.starts_with("Subject=")).map(str::to_string);
        (r.status, subject.unwrap_or_default())
    };
    assert_eq!(subject(), (200, "Subject=\"CN=client\"".to_string()));
    install(&client, &cert_file("client", &certs, "client2", "c2"));
    let start = Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < Duration::from_secs(5) {
        let (status, xfcc) = subject();
        assert_eq!(status, 200, "a failed request during the rotation: {xfcc}");
        if seen.last() != Some(&xfcc) {
            seen.push(xfcc.clone());
        }
        if xfcc.contains("CN=client2") && seen.len() > 1 {
            break;
        }
    }
    assert_eq!(seen, ["Subject=\"CN=client\"", "Subject=\"CN=client2\""]);
    // Each of its two secrets' first load, then the rotation.
    let update = "cluster.service.client_ssl_socket_factory.ssl_context_update_by_sds";
    assert_eq!(stat(front.admin(), update).as_deref(), Some("3"));
    assert_eq!(stat(front.admin(), "sds.client.update_success").as_deref(), Some("2"));
    assert_eq!(stat(service.admin(), "sds.clients.update_success").as_deref(), Some("1"));
}

#[test]
fn a_secret_file_needs_a_node_and_must_load_at_startup() {
    let certs = certs_for("sds-refusals");
    let sds = certs.dir.join("server.yaml");
    install(&sds, &cert_file("server", &certs, "a", "v1"));
    // As Envoy: an SDS subscription, even to a file, names the node.
    let config = front_config(&sds, 0, 0, None).replace("node: { id: front-1, cluster: front }\n", "");
    let log = Skiff::try_start(&config, &[]).err().expect("refused without a node");
    assert!(log.contains("TlsCertificateSdsApi: node 'id' and 'cluster' are required"), "{log}");
    // A file that does not hold the secret fails the load, naming the file and Envoy's reason.
    install(&sds, &cert_file("other", &certs, "a", "v1"));
    let e = skiff::config::load_str(&front_config(&sds, 0, 0, None), "front.yaml")
        .err()
        .unwrap_or_else(|| panic!("refused"));
    let e = e.to_string();
    assert!(e.contains("sds_config") && e.contains("Unexpected SDS secret (expecting server): other"), "{e}");
    let missing = certs.dir.join("missing.yaml");
    let e = skiff::config::load_str(&front_config(&missing, 0, 0, None), "front.yaml")
        .err()
        .unwrap_or_else(|| panic!("refused"));
    assert!(e.to_string().contains("missing.yaml"), "{e}");
}

#[test]
fn the_shipped_sds_config_loads_with_real_secret_files_in_place() {
    let certs = certs_for("sds-shipped");
    let dir = certs.dir.join("sds");
    std::fs::create_dir_all(&dir).expect("sds dir");
    install(&dir.join("server.yaml"), &cert_file("server", &certs, "a", "v1"));
    install(&dir.join("client.yaml"), &cert_file("client", &certs, "client", "v1"));
    install(&dir.join("clients-ca.yaml"), &ca_file("clients-ca", &certs, "v1"));
    install(&dir.join("upstream-ca.yaml"), &ca_file("upstream-ca", &certs, "v1"));
    let path = format!("{}/configs/security/sds-files.yaml", env!("CARGO_MANIFEST_DIR"));
    let yaml = std::fs::read_to_string(path)
        .expect("configs/security/sds-files.yaml")
        .replace("/etc/skiff/sds", &dir.display().to_string());
    match skiff::config::load_str(&yaml, "sds-files.yaml") {
        Ok(loaded) => assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn a_rotated_ca_changes_whom_the_service_sidecar_accepts() {
    let certs = certs_for("sds-ca");
    let (client, ca) = (certs.dir.join("client.yaml"), certs.dir.join("clients.yaml"));
    install(&client, &cert_file("client", &certs, "client", "c1"));
    install(&client.with_file_name("upstream.yaml"), &ca_file("upstream", &certs, "u1"));
    install(&ca, &ca_file("clients", &certs, "ca1"));
    let app = TestUpstream::echo();
    let service = Skiff::start(&service_config(&certs, &ca, app.addr), &[]);
    let front = Skiff::start(&front_sidecar_config(&client, service.listener("service")), &[]);
    let addr = front.listener("front");
    let status = || support::get(addr, "/").status;
    assert_eq!(status(), 200);
    // The service now trusts only the other CA: the front's certificate is refused (503 at the
    // front, its upstream handshake failed).
    install(&ca, &ca_file_with("clients", &certs, "other-ca", "", "ca2"));
    assert!(support::eventually(Duration::from_secs(5), || status() == 503), "still accepted");
    assert_eq!(stat(service.admin(), "sds.clients.update_success").as_deref(), Some("2"));
    // A certificate from that CA for the front: accepted again.
    install(&client, &cert_file("client", &certs, "stranger", "c2"));
    assert!(support::eventually(Duration::from_secs(5), || status() == 200), "the new pair was refused");
    // A SAN the secret's matcher refuses: the front's check fails (a wrong SAN is a connection
    // failure).
    let wrong = "    match_typed_subject_alt_names: [{ san_type: DNS, matcher: { exact: other.example } }]\n";
    install(&client.with_file_name("upstream.yaml"), &ca_file_with("upstream", &certs, "ca", wrong, "u2"));
    assert!(support::eventually(Duration::from_secs(5), || status() == 503), "a wrong SAN was accepted");
    assert!(support::eventually(Duration::from_secs(2), || {
        stat(front.admin(), "cluster.service.ssl.fail_verify_san").is_some_and(|v| v != "0")
    }));
}
