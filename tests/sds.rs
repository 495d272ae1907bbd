//! Certificates as an operator inspects them: `/certs` lists every TLS context (a listener chain
//! serving a leaf and trusting the CA, a cluster trusting an inline CA, a cluster with neither)
//! with the fields Envoy prints, and private keys never appear in `/config_dump`. The same config
//! runs in the real Envoy and both answers are compared. Certificates are made at test time with
//! openssl; without Envoy the parity half skips (fails under CI).

mod support;

#[path = "support/envoy.rs"]
mod envoy;

use support::tls::{self, Certs};
use support::Skiff;

/// A TLS listener (tcp_proxy) serving `a` and trusting the CA; cluster `inline_ca` trusts the CA
/// given inline; cluster `bare` is TLS with nothing configured.
fn config(certs: &Certs, port: u16, admin: u16) -> String {
    let ca_inline = std::fs::read_to_string(certs.path("ca.crt")).expect("ca.crt").replace('\n', "\\n");
    let endpoint = "load_assignment: { cluster_name: x, endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 9 } } } } ] } ] }";
    format!(
        r#"admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }} }}
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
            tls_certificates:
            - certificate_chain: {{ filename: {chain} }}
              private_key: {{ filename: {key} }}
            validation_context:
              trusted_ca: {{ filename: {ca} }}
      filters:
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
        chain = certs.path("a.crt"),
        key = certs.path("a.key"),
        ca = certs.path("ca.crt"),
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

fn serial_of(certs: &Certs, file: &str) -> String {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in", &certs.path(file)])
        .output()
        .expect("run openssl x509");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_lowercase();
    text.trim_start_matches("serial=").trim_start_matches("00").to_string()
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
    assert_eq!(leaf["serial_number"], serial_of(certs, "a.crt"));
    assert_eq!(
        leaf["subject_alt_names"],
        serde_json::json!([{ "dns": "a.example" }, { "dns": "localhost" }])
    );
    // Made for two days a moment ago: whole days left, rounded down (2 only in its first second).
    assert!(["1", "2"].contains(&leaf["days_until_expiration"].as_str().unwrap_or_default()), "{leaf}");
    let from = leaf["valid_from"].as_str().unwrap_or_default();
    assert!(from.len() == 20 && from.ends_with('Z') && from.as_bytes()[10] == b'T', "{from}");
    assert_eq!(front["ca_cert"][0]["path"], certs.path("ca.crt"));
    assert_eq!(front["ca_cert"][0]["serial_number"], serial_of(certs, "ca.crt"));
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
