//! Certificates as an operator names and inspects them: static secrets (`static_resources.secrets`
//! named by a context with no `sds_config`) serve and verify as the inline fields do, and a name
//! that is missing or of the wrong kind is refused in Envoy's words; `/certs` lists every TLS
//! context (a listener chain serving a leaf and trusting the CA, a cluster trusting an inline CA, a
//! cluster with neither) with the fields Envoy prints; private keys never appear in
//! `/config_dump`. The same configs run in the real Envoy and the answers are compared.
//! Certificates are made at test time with openssl; without Envoy the parity half skips (fails
//! under CI).

mod support;

#[path = "support/envoy.rs"]
mod envoy;

use support::tls::{self, Certs};
use support::Skiff;

/// A port whose connections complete (the kernel's backlog takes them) and then sit: the
/// tcp_proxy's upstream, so a proxy never closes a client because its upstream refused.
fn upstream_port() -> u16 {
    static UPSTREAM: std::sync::OnceLock<std::net::TcpListener> = std::sync::OnceLock::new();
    let l = UPSTREAM.get_or_init(|| std::net::TcpListener::bind("127.0.0.1:0").expect("bind the upstream"));
    l.local_addr().map(|a| a.port()).unwrap_or(9)
}

/// The listener's `common_tls_context` serving `a` and trusting the CA, inline.
fn inline_files(certs: &Certs) -> String {
    format!(
        "tls_certificates:\n- certificate_chain: {{ filename: {} }}\n  private_key: {{ filename: {} }}\nvalidation_context:\n  trusted_ca: {{ filename: {} }}\n",
        certs.path("a.crt"),
        certs.path("a.key"),
        certs.path("ca.crt"),
    )
}

/// Static secrets `server` (leaf `a`) and `ca`, as `static_resources.secrets` entries.
fn secrets(certs: &Certs) -> String {
    format!(
        "  secrets:\n  - name: server\n    tls_certificate:\n      certificate_chain: {{ filename: {} }}\n      private_key: {{ filename: {} }}\n  - name: ca\n    validation_context:\n      trusted_ca: {{ filename: {} }}\n",
        certs.path("a.crt"),
        certs.path("a.key"),
        certs.path("ca.crt"),
    )
}

const BY_NAME: &str = "tls_certificate_sds_secret_configs: [{ name: server }]\nvalidation_context_sds_secret_config: { name: ca }\n";

/// A TLS listener (tcp_proxy) serving `a` and trusting the CA, inline; see `config_with`.
fn config(certs: &Certs, port: u16, admin: u16) -> String {
    config_with(certs, port, admin, "", &inline_files(certs))
}

/// A TLS listener (tcp_proxy to the cluster `inline_ca`) whose `common_tls_context` is `common`,
/// with `static_secrets` under `static_resources`; cluster `inline_ca` trusts the CA given
/// inline; cluster `bare` is TLS with nothing configured.
fn config_with(certs: &Certs, port: u16, admin: u16, static_secrets: &str, common: &str) -> String {
    let ca_inline = std::fs::read_to_string(certs.path("ca.crt")).expect("ca.crt").replace('\n', "\\n");
    let endpoint = format!("load_assignment: {{ cluster_name: x, endpoints: [ {{ lb_endpoints: [ {{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }} }} ] }} ] }}", upstream_port());
    format!(
        r#"admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }} }}
static_resources:
{static_secrets}  listeners:
  - name: front
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
{common}      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: front
          cluster: inline_ca
  clusters:
  - name: inline_ca
    {endpoint}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        common_tls_context:
          validation_context:
            trusted_ca: {{ inline_string: "{ca_inline}" }}
  - name: bare
    {endpoint}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
"#,
        common = support::indent(common, 12),
    )
}

fn certs_of(admin: std::net::SocketAddr) -> Vec<serde_json::Value> {
    let (status, body) = envoy::admin_get(admin, "/certs").expect("GET /certs");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("/certs is JSON");
    v["certificates"].as_array().cloned().expect("a certificates list")
}

/// A context's entries, as JSON text, in a fixed order (Envoy walks its contexts in hash order).
fn sorted(contexts: &[serde_json::Value]) -> Vec<String> {
    let mut out: Vec<String> = contexts.iter().map(|c| c.to_string()).collect();
    out.sort();
    out
}

#[test]
fn certs_lists_each_context_with_its_ca_and_leaf() {
    let certs = tls::shared();
    let skiff = Skiff::start(&config(certs, 0, 0), &[]);
    let contexts = certs_of(skiff.admin());
    assert_eq!(contexts.len(), 3, "{contexts:#?}");
    // Listeners first, then clusters, in config order.
    let front = &contexts[0];
    let leaf = &front["cert_chain"][0];
    assert_eq!(leaf["path"], certs.path("a.crt"));
    assert_eq!(leaf["serial_number"], certs.serial("a.crt"));
    assert_eq!(
        leaf["subject_alt_names"],
        serde_json::json!([{ "dns": "a.example" }, { "dns": "localhost" }])
    );
    // Made for two days a moment ago: whole days left, rounded down (2 only in its first second).
    assert!(["1", "2"].contains(&leaf["days_until_expiration"].as_str().unwrap_or_default()), "{leaf}");
    let from = leaf["valid_from"].as_str().unwrap_or_default();
    assert!(from.len() == 20 && from.ends_with('Z') && from.as_bytes()[10] == b'T', "{from}");
    assert_eq!(front["ca_cert"][0]["path"], certs.path("ca.crt"));
    assert_eq!(front["ca_cert"][0]["serial_number"], certs.serial("ca.crt"));
    assert_eq!(contexts[1]["ca_cert"][0]["path"], "<inline>");
    assert_eq!(contexts[1]["cert_chain"], serde_json::json!([]));
    assert_eq!(contexts[2], serde_json::json!({ "ca_cert": [], "cert_chain": [] }));
}

#[test]
fn private_keys_never_appear_in_config_dump() {
    let certs = tls::shared();
    let skiff = Skiff::start(&config(certs, 0, 0), &[]);
    let (_, dump) = envoy::admin_get(skiff.admin(), "/config_dump").expect("GET /config_dump");
    assert!(!dump.contains(&certs.path("a.key")), "the key's file name is shown");
    assert!(dump.contains(r#""private_key": {"#) && dump.contains(r#""filename": "[redacted]""#), "{dump}");
}

#[test]
fn parity_certs_and_redaction_match_envoy() {
    let Some(bin) = envoy::binary_or_skip("parity_certs_and_redaction_match_envoy") else { return };
    let certs = tls::shared();
    let dir = support::scratch_dir("sds-parity");
    let envoy_started = std::time::Instant::now();
    let envoy = envoy::Envoy::start(&bin, &dir, |port, admin| config(certs, port, admin));
    let skiff = Skiff::start(&config(certs, 0, 0), &[]);
    // Past the certificates' first second, both count one whole day left.
    std::thread::sleep(std::time::Duration::from_millis(1100).saturating_sub(envoy_started.elapsed()));
    assert_eq!(sorted(&certs_of(skiff.admin())), sorted(&certs_of(envoy.admin)));
    let redacted = |admin| {
        let (_, dump) = envoy::admin_get(admin, "/config_dump").expect("GET /config_dump");
        (dump.contains(&certs.path("a.key")), dump.matches("[redacted]").count())
    };
    assert_eq!(redacted(skiff.admin()), redacted(envoy.admin));
}

/// The subject `openssl s_client` saw the server present and verified (`CN = a`), or what it
/// printed. Its exit code is not looked at: the client ends the connection itself.
fn served_subject(addr: std::net::SocketAddr, certs: &Certs) -> String {
    let (_, text) = tls::s_client(addr, certs, &["-servername", "a.example"]);
    let subject = text.lines().find_map(|l| l.strip_prefix("subject=")).map(|s| s.trim().to_string());
    match subject {
        Some(s) if text.contains("Verify return code: 0 (ok)") => s,
        _ => format!("no verified handshake: {text}"),
    }
}

#[test]
fn a_listener_serves_and_verifies_with_the_static_secrets_it_names() {
    let certs = tls::shared();
    let skiff = Skiff::start(&config_with(certs, 0, 0, &secrets(certs), BY_NAME), &[]);
    assert_eq!(served_subject(skiff.listener("front"), certs), "CN = a");
    // A client certificate from the CA the `ca` secret names passes; one from another CA does not
    // (TLS 1.2: the server judges it inside the handshake, before the client's Finished).
    let with = |leaf: &str| {
        let (cert, key) = (certs.path(&format!("{leaf}.crt")), certs.path(&format!("{leaf}.key")));
        let args = ["-servername", "a.example", "-tls1_2", "-cert", &cert, "-key", &key];
        tls::s_client(skiff.listener("front"), certs, &args).1
    };
    let (trusted, stranger) = (with("client"), with("stranger"));
    assert!(trusted.contains("Verify return code: 0 (ok)") && !trusted.contains("alert"), "{trusted}");
    assert!(stranger.contains("alert"), "{stranger}");
    // /certs names the files the secrets name; it is the same as with the files inline.
    let inline = Skiff::start(&config(certs, 0, 0), &[]);
    assert_eq!(certs_of(skiff.admin())[0]["cert_chain"][0]["path"], certs.path("a.crt"));
    assert_eq!(sorted(&certs_of(skiff.admin())), sorted(&certs_of(inline.admin())));
}

/// Loads `yaml` as `--mode validate` does: the error naming the place, or "" when accepted.
fn refusal(yaml: &str) -> String {
    skiff::config::load_str(yaml, "envoy.yaml").err().map(|e| e.to_string()).unwrap_or_default()
}

#[test]
fn a_secret_name_that_is_missing_or_of_the_wrong_kind_is_refused_in_envoys_words() {
    let certs = tls::shared();
    let with = |common: &str| refusal(&config_with(certs, 0, 0, &secrets(certs), common));
    let e = with("tls_certificate_sds_secret_configs: [{ name: nope }]\n");
    assert!(
        e.contains("tls_certificate_sds_secret_configs[0].name") && e.contains("Unknown static secret: nope"),
        "{e}"
    );
    // `ca` is a validation context, not a certificate.
    let e = with("tls_certificate_sds_secret_configs: [{ name: ca }]\n");
    assert!(e.contains("Unknown static secret: ca"), "{e}");
    let e = with("tls_certificate_sds_secret_configs: [{ name: server }]\nvalidation_context_sds_secret_config: { name: server }\n");
    assert!(e.contains("Unknown static certificate validation context: server"), "{e}");
    let e =
        with(&format!("{}tls_certificate_sds_secret_configs: [{{ name: server }}]\n", inline_files(certs)));
    assert!(e.contains("SDS and non-SDS TLS certificates may not be mixed in server contexts"), "{e}");
    let e = with("tls_certificate_sds_secret_configs: [{ name: server, sds_config: { ads: {} } }]\n");
    assert!(e.contains("sds_config.ads") && e.contains("not supported"), "{e}");
    let e = with("tls_certificate_sds_secret_configs: [{ name: server, sds_config: { path_config_source: { path: /nonexistent/x.yaml } } }]\n");
    assert!(e.contains("sds_config") && e.contains("/nonexistent/x.yaml"), "{e}");
    // A bad file inside a secret is reported at the secret.
    let broken = secrets(certs).replace(&certs.path("a.key"), "/nonexistent/a.key");
    let e = refusal(&config_with(certs, 0, 0, &broken, BY_NAME));
    assert!(e.contains("static_resources.secrets[0].tls_certificate.private_key.filename"), "{e}");
}

#[test]
fn the_shipped_static_secrets_config_loads_with_real_certificates_in_place() {
    let path = format!("{}/configs/security/static-secrets.yaml", env!("CARGO_MANIFEST_DIR"));
    let certs = tls::shared();
    let yaml = std::fs::read_to_string(path)
        .expect("configs/security/static-secrets.yaml")
        .replace("/etc/skiff/tls/server.crt", &certs.path("a.crt"))
        .replace("/etc/skiff/tls/server.key", &certs.path("a.key"))
        .replace("/etc/skiff/tls/client.crt", &certs.path("client.crt"))
        .replace("/etc/skiff/tls/client.key", &certs.path("client.key"))
        .replace("/etc/skiff/tls/clients-ca.crt", &certs.path("ca.crt"))
        .replace("/etc/skiff/tls/upstream-ca.crt", &certs.path("ca.crt"));
    match skiff::config::load_str(&yaml, "static-secrets.yaml") {
        Ok(loaded) => assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn parity_static_secrets_serve_the_same_certificate_as_envoy() {
    let Some(bin) = envoy::binary_or_skip("parity_static_secrets_serve_the_same_certificate_as_envoy") else {
        return;
    };
    let certs = tls::shared();
    let dir = support::scratch_dir("sds-static-parity");
    let envoy = envoy::Envoy::start(&bin, &dir, |port, admin| {
        config_with(certs, port, admin, &secrets(certs), BY_NAME)
    });
    let skiff = Skiff::start(&config_with(certs, 0, 0, &secrets(certs), BY_NAME), &[]);
    // Envoy, just started, now and then closes its first TLS connection before answering the
    // ClientHello (as with the files inline); a second attempt is what is compared.
    let envoy_subject = (0..5)
        .map(|i| {
            std::thread::sleep(std::time::Duration::from_millis(200 * i));
            served_subject(envoy.listener, certs)
        })
        .find(|s| !s.starts_with("no verified handshake"))
        .unwrap_or_else(|| served_subject(envoy.listener, certs));
    assert_eq!(served_subject(skiff.listener("front"), certs), envoy_subject);
    assert_eq!(sorted(&certs_of(skiff.admin())), sorted(&certs_of(envoy.admin)));
    // /config_dump: the bootstrap's secrets and the SecretsConfigDump, keys redacted.
    let secrets = |admin| {
        let (_, body) = envoy::admin_get(admin, "/config_dump").expect("GET /config_dump");
        let dump: serde_json::Value = serde_json::from_str(&body).expect("/config_dump is JSON");
        let configs = dump["configs"].as_array().cloned().unwrap_or_default();
        let of = |kind: &str| {
            configs.iter().find(|c| c["@type"].as_str().is_some_and(|t| t.ends_with(kind))).cloned()
        };
        let bootstrap =
            of("BootstrapConfigDump").map(|b| b["bootstrap"]["static_resources"]["secrets"].clone());
        (bootstrap, of("SecretsConfigDump"))
    };
    let (skiff_dump, envoy_dump) = (secrets(skiff.admin()), secrets(envoy.admin));
    assert!(skiff_dump.1.as_ref().is_some_and(|d| d.to_string().contains("[redacted]")), "{skiff_dump:?}");
    assert_eq!(skiff_dump, envoy_dump);
}
