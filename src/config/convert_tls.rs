//! `envoy.transport_sockets.tls`: a listener filter chain's `DownstreamTlsContext` and a cluster's
//! `UpstreamTlsContext`, read from the `typed_config` mapping `raw` keeps, checked, and built into
//! rustls configs at load (certificates and keys are read and parsed here, so a bad file fails the
//! load with its field path). Also `filter_chain_match` and the listener filters a listener may
//! name (the TLS inspector). Every field is enforced or refused here; nothing is warned about silently.
//! Owns no socket: the shard's `tls` module runs the handshakes with what this builds.

// Fields accepted and never read exist so that `deny_unknown_fields` accepts them.
#![allow(dead_code)]

use super::chain_match::{ChainMatch, Cidr, SourceType, Transport};
use super::error::FieldPath;
use super::fields::{fail, read, string_match, Res};
use super::model::{StringMatcher, StringRule};
use super::raw::{
    Ign, RawCidrRange, RawFilterChainMatch, RawListenerFilter, RawStringMatcher, RawTransportSocket,
};
use super::secrets::{self, Kind, Material, PerGeneration, Secret, SecretCert, SecretClients, SecretServers};
use super::tls::{ContextCerts, ListenerTls, ServerTls, SourcedCert, UpstreamTls};
use super::tls_verify::{PeerChecks, SanMatcher, SanRule, SanType, ServerVerifier, VerifiedClients};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName};
use serde::Deserialize;
use std::sync::Arc;

pub(super) const TLS_SOCKET_NAMES: &[&str] = &["envoy.transport_sockets.tls", "tls"];
const DOWNSTREAM_TYPES: &[&str] = &[
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
    "type.googleapis.com/envoy.api.v2.auth.DownstreamTlsContext",
];
const UPSTREAM_TYPES: &[&str] = &[
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
    "type.googleapis.com/envoy.api.v2.auth.UpstreamTlsContext",
];
pub(super) const TLS_INSPECTOR_NAMES: &[&str] =
    &["envoy.filters.listener.tls_inspector", "envoy.listener.tls_inspector"];
const SECRET_TYPES: &[&str] = &[
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
    "type.googleapis.com/envoy.api.v2.auth.Secret",
];
const TLS_INSPECTOR_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";

// ---------------------------------------------------------------------------------------------
// The contexts' shapes (inside the kept `typed_config` mapping)

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDownstreamTlsContext {
    common_tls_context: Option<RawCommonTlsContext>,
    require_client_certificate: Option<bool>,
    require_sni: Option<bool>,
    session_ticket_keys: Ign,
    session_ticket_keys_sds_secret_config: Ign,
    disable_stateless_session_resumption: Option<bool>,
    disable_stateful_session_resumption: Option<bool>,
    session_timeout: Ign,
    ocsp_staple_policy: Ign,
    full_scan_certs_on_sni_mismatch: Ign,
    prefer_client_ciphers: Ign,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstreamTlsContext {
    common_tls_context: Option<RawCommonTlsContext>,
    sni: Option<String>,
    allow_renegotiation: Option<bool>,
    max_session_keys: Option<u32>,
    auto_host_sni: Ign,
    auto_sni_san_validation: Ign,
    enforce_rsa_key_usage: Ign,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommonTlsContext {
    tls_params: Option<RawTlsParams>,
    tls_certificates: Option<Vec<RawTlsCertificate>>,
    validation_context: Option<RawValidationContext>,
    alpn_protocols: Option<Vec<String>>,
    tls_certificate_sds_secret_configs: Option<Vec<RawSdsSecretConfig>>,
    validation_context_sds_secret_config: Option<RawSdsSecretConfig>,
    combined_validation_context: Ign,
    tls_certificate_provider_instance: Ign,
    validation_context_certificate_provider_instance: Ign,
    custom_handshaker: Ign,
    key_log: Ign,
}

/// A reference to a secret: with no `sds_config`, one of `static_resources.secrets`; with one,
/// the secret of that name in a file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSdsSecretConfig {
    name: Option<String>,
    sds_config: Option<RawConfigSource>,
}

/// An SDS `ConfigSource`: a file (`path_config_source`, or v2's `path`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfigSource {
    path: Option<String>,
    path_config_source: Option<RawPathConfigSource>,
    resource_api_version: Option<String>,
    /// The file is read at load, before the context exists: there is no fetch to time out.
    initial_fetch_timeout: Ign,
    api_config_source: Ign,
    ads: Ign,
    #[serde(rename = "self")]
    self_source: Ign,
    authorities: Ign,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPathConfigSource {
    path: Option<String>,
    watched_directory: Option<RawWatchedDirectory>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWatchedDirectory {
    path: Option<String>,
}

/// `envoy.extensions.transport_sockets.tls.v3.Secret`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    name: Option<String>,
    tls_certificate: Option<RawTlsCertificate>,
    validation_context: Option<RawValidationContext>,
    session_ticket_keys: Ign,
    generic_secret: Ign,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTlsParams {
    tls_minimum_protocol_version: Option<String>,
    tls_maximum_protocol_version: Option<String>,
    cipher_suites: Option<Vec<String>>,
    ecdh_curves: Option<Vec<String>>,
    signature_algorithms: Ign,
    compliance_policies: Ign,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTlsCertificate {
    certificate_chain: Option<RawDataSource>,
    private_key: Option<RawDataSource>,
    password: Ign,
    pkcs12: Ign,
    watched_directory: Ign,
    private_key_provider: Ign,
    ocsp_staple: Ign,
    signed_certificate_timestamp: Ign,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawValidationContext {
    trusted_ca: Option<RawDataSource>,
    match_typed_subject_alt_names: Option<Vec<RawSanMatcher>>,
    match_subject_alt_names: Option<Vec<RawStringMatcher>>,
    verify_certificate_spki: Option<Vec<String>>,
    verify_certificate_hash: Option<Vec<String>>,
    crl: Option<RawDataSource>,
    allow_expired_certificate: Ign,
    trust_chain_verification: Ign,
    watched_directory: Ign,
    only_verify_leaf_cert_crl: Option<bool>,
    custom_validator_config: Ign,
    max_verify_depth: Ign,
    system_root_certs: Ign,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSanMatcher {
    san_type: String,
    matcher: RawStringMatcher,
    oid: Ign,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDataSource {
    filename: Option<String>,
    inline_string: Option<String>,
    inline_bytes: Ign,
    environment_variable: Option<String>,
    watched_directory: Ign,
}

// ---------------------------------------------------------------------------------------------
// Conversion

/// Listener filters: only the TLS inspector. Whether the listener has one: Envoy learns a
/// connection's SNI, ALPN and transport protocol only through it.
pub(super) fn listener_filters(p: &FieldPath, filters: &[RawListenerFilter]) -> Res<bool> {
    for (i, f) in filters.iter().enumerate() {
        let by_type = f.typed_config.as_ref().and_then(|t| t.type_url.as_deref());
        let inspector = match by_type {
            Some(t) => t == TLS_INSPECTOR_TYPE,
            None => f.name.as_deref().is_some_and(|n| TLS_INSPECTOR_NAMES.contains(&n)),
        };
        if !inspector {
            let name = f.name.as_deref().or(by_type).unwrap_or("(unnamed)");
            return fail(
                p.idx(i),
                format!(
                    "listener filter \"{name}\" is not supported (only envoy.filters.listener.tls_inspector)"
                ),
            );
        }
        // Its settings (`max_client_hello_size`, JA3/JA4 fingerprints, ...) are Envoy's defaults
        // here; one that says otherwise would not be honoured.
        if let Some((key, _)) = f.typed_config.as_ref().and_then(|t| t.fields.iter().next()) {
            let key = key.as_str().unwrap_or("?");
            return fail(
                p.idx(i).key("typed_config").key(key),
                format!("the TLS inspector's {key} is not supported"),
            );
        }
        if f.config.is_some() || f.filter_disabled.is_some() {
            let key = if f.config.is_some() { "config" } else { "filter_disabled" };
            return fail(p.idx(i).key(key), format!("{key} of a listener filter is not supported"));
        }
    }
    Ok(!filters.is_empty())
}

/// A filter chain's `filter_chain_match`.
pub(super) fn chain_match(p: &FieldPath, m: RawFilterChainMatch) -> Res<ChainMatch> {
    let unsupported = [
        ("address_suffix", m.address_suffix.is_some()),
        ("suffix_len", m.suffix_len.is_some()),
        ("direct_source_prefix_ranges", m.direct_source_prefix_ranges.is_some()),
    ];
    if let Some((field, _)) = unsupported.iter().find(|(_, present)| *present) {
        return fail(p.key(field), format!("{field} is not supported"));
    }
    let transport_protocol = match m.transport_protocol.as_deref() {
        None | Some("") => None,
        Some("tls") => Some(Transport::Tls),
        Some("raw_buffer") => Some(Transport::RawBuffer),
        Some(other) => {
            return fail(
                p.key("transport_protocol"),
                format!("transport_protocol \"{other}\" is not supported (tls or raw_buffer)"),
            )
        }
    };
    let names = m.server_names.unwrap_or_default();
    for (i, n) in names.iter().enumerate() {
        if n.is_empty() || (n.contains('*') && !(n.starts_with("*.") && n[1..].find('*').is_none())) {
            return fail(
                p.key("server_names").idx(i),
                format!("\"{n}\" is not a server name or a *.suffix wildcard"),
            );
        }
    }
    let port = |at: FieldPath, v: u32| -> Res<u16> {
        match u16::try_from(v) {
            Ok(port) => Ok(port),
            Err(_) => fail(at, format!("{v} is not a port")),
        }
    };
    let destination_port = match m.destination_port {
        None | Some(0) => None,
        Some(v) => Some(port(p.key("destination_port"), v)?),
    };
    let source_type = match m.source_type.as_deref() {
        None | Some("ANY") => SourceType::Any,
        Some("SAME_IP_OR_LOOPBACK") => SourceType::Local,
        Some("EXTERNAL") => SourceType::External,
        Some(other) => {
            return fail(
                p.key("source_type"),
                format!("source_type \"{other}\" is not ANY, SAME_IP_OR_LOOPBACK or EXTERNAL"),
            )
        }
    };
    let mut source_ports = Vec::new();
    for (i, v) in m.source_ports.unwrap_or_default().into_iter().enumerate() {
        source_ports.push(port(p.key("source_ports").idx(i), v)?);
    }
    Ok(ChainMatch {
        destination_port,
        destination_ips: cidrs(&p.key("prefix_ranges"), m.prefix_ranges)?,
        server_names: names.iter().map(|n| n.to_ascii_lowercase()).collect(),
        transport_protocol,
        application_protocols: m.application_protocols.unwrap_or_default(),
        source_type,
        source_ips: cidrs(&p.key("source_prefix_ranges"), m.source_prefix_ranges)?,
        source_ports,
    })
}

fn cidrs(p: &FieldPath, ranges: Option<Vec<RawCidrRange>>) -> Res<Vec<Cidr>> {
    let mut out = Vec::new();
    for (i, r) in ranges.unwrap_or_default().into_iter().enumerate() {
        let ip: std::net::IpAddr = match r.address_prefix.parse() {
            Ok(ip) => ip,
            Err(_) => {
                return fail(
                    p.idx(i).key("address_prefix"),
                    format!("\"{}\" is not an IP address", r.address_prefix),
                )
            }
        };
        let len = r.prefix_len.unwrap_or(0);
        match u8::try_from(len).ok().and_then(|len| Cidr::new(ip, len)) {
            Some(c) => out.push(c),
            None => return fail(p.idx(i).key("prefix_len"), format!("{len} is too long for {ip}")),
        }
    }
    Ok(out)
}

/// Whether two chains claim a connection alike: Envoy refuses a listener where they do ("multiple
/// filter chains with the same matching rules are defined"), list fields overlapping counting as
/// the same.
pub(super) fn same_rules(a: &ChainMatch, b: &ChainMatch) -> bool {
    fn overlap<T: PartialEq>(a: &[T], b: &[T]) -> bool {
        (a.is_empty() && b.is_empty()) || a.iter().any(|x| b.contains(x))
    }
    a.destination_port == b.destination_port
        && a.transport_protocol == b.transport_protocol
        && a.source_type == b.source_type
        && overlap(&a.destination_ips, &b.destination_ips)
        && overlap(&a.server_names, &b.server_names)
        && overlap(&a.application_protocols, &b.application_protocols)
        && overlap(&a.source_ips, &b.source_ips)
        && overlap(&a.source_ports, &b.source_ports)
}

/// A chain's `transport_socket`: its TLS context, None for plaintext. A
/// `transport_socket_connect_timeout` of 0 is none, and a plaintext chain has no handshake.
pub(super) fn chain_tls(
    p: &FieldPath,
    socket: Option<&RawTransportSocket>,
    handshake_limit: Option<std::time::Duration>,
    secrets: &Secrets,
) -> Res<Option<ListenerTls>> {
    let context = match socket {
        Some(s) => downstream(&p.key("transport_socket"), s, secrets)?,
        None => None,
    };
    Ok(context
        .map(|context| ListenerTls { context, handshake_limit: handshake_limit.filter(|d| !d.is_zero()) }))
}

/// The typed config of a `transport_socket`, checked to be the TLS socket of `types`. None for
/// `envoy.transport_sockets.raw_buffer` (plaintext, as without a transport socket).
fn tls_typed_config(
    p: &FieldPath,
    s: &RawTransportSocket,
    types: &[&str],
) -> Res<Option<serde_norway::Mapping>> {
    if s.config.is_some() {
        return fail(
            p.key("config"),
            "the v2 config of a transport socket is not supported: use typed_config",
        );
    }
    let name = s.name.as_deref().unwrap_or("");
    if name == "envoy.transport_sockets.raw_buffer" || name == "raw_buffer" {
        return Ok(None);
    }
    match (s.typed_config.as_ref(), s.typed_config.as_ref().and_then(|t| t.type_url.as_deref())) {
        (Some(typed), Some(t)) if types.contains(&t) => Ok(Some(typed.fields.clone())),
        (_, Some(t)) => fail(
            p.key("typed_config").key("@type"),
            format!("transport socket type {t} is not supported here (expected {})", types[0]),
        ),
        (Some(typed), None) if TLS_SOCKET_NAMES.contains(&name) => Ok(Some(typed.fields.clone())),
        // By name alone, as Envoy resolves it: the context's defaults.
        (None, None) if TLS_SOCKET_NAMES.contains(&name) => Ok(Some(serde_norway::Mapping::new())),
        _ => fail(
            p.clone(),
            format!(
                "transport socket \"{name}\" is not supported (envoy.transport_sockets.tls or raw_buffer)"
            ),
        ),
    }
}

/// The `transport_socket` as `/config_dump` shows it: as written, under its v3 `@type`, with every
/// string inside a `private_key` or `password` replaced by `[redacted]`, as Envoy redacts them.
fn dump(type_url: &str, fields: &serde_norway::Mapping) -> serde_json::Value {
    let mut typed = redacted(fields);
    if let serde_json::Value::Object(m) = &mut typed {
        m.insert("@type".to_string(), type_url.into());
    }
    serde_json::json!({ "name": "envoy.transport_sockets.tls", "typed_config": typed })
}

/// `fields` as JSON with every string inside a `private_key` or `password` `[redacted]`.
fn redacted(fields: &serde_norway::Mapping) -> serde_json::Value {
    fn redact(v: &mut serde_json::Value, sensitive: bool) {
        match v {
            serde_json::Value::String(s) if sensitive => *s = "[redacted]".to_string(),
            serde_json::Value::Array(items) => items.iter_mut().for_each(|i| redact(i, sensitive)),
            serde_json::Value::Object(m) => {
                for (k, v) in m.iter_mut() {
                    redact(v, sensitive || k == "private_key" || k == "password");
                }
            }
            _ => {}
        }
    }
    let mut typed = serde_json::to_value(fields).unwrap_or_else(|_| serde_json::json!({}));
    redact(&mut typed, false);
    typed
}

/// `static_resources.secrets` by name, as a context names them in `tls_certificate_sds_secret_configs`
/// or `validation_context_sds_secret_config` without an `sds_config`: each kept with its place, so
/// a bad file in one is reported there.
#[derive(Default)]
pub(super) struct Secrets {
    certificates: std::collections::HashMap<String, (FieldPath, RawTlsCertificate)>,
    validation: std::collections::HashMap<String, (FieldPath, RawValidationContext)>,
    /// In config order, each as `/config_dump` shows it (keys redacted).
    pub(super) dumps: Vec<super::tls::SecretDump>,
}

/// Reads `static_resources.secrets` at `p`. Envoy keeps the two kinds apart: a name is unique
/// among certificates and among validation contexts.
pub(super) fn static_secrets(p: &FieldPath, raw: Vec<serde_norway::Mapping>) -> Res<Secrets> {
    let mut out = Secrets::default();
    for (i, m) in raw.into_iter().enumerate() {
        let sp = p.idx(i);
        let dump = redacted(&m);
        let secret: RawSecret = read(&sp, m)?;
        let Some(name) = secret.name.filter(|n| !n.is_empty()) else {
            return fail(sp.key("name"), "a static secret needs a name");
        };
        if secret.session_ticket_keys.is_some() || secret.generic_secret.is_some() {
            let field =
                if secret.session_ticket_keys.is_some() { "session_ticket_keys" } else { "generic_secret" };
            return fail(
                sp.key(field),
                format!("{field} secrets are not supported: not yet implemented in skiff"),
            );
        }
        let duplicate = match (secret.tls_certificate, secret.validation_context) {
            (Some(c), None) => {
                out.certificates.insert(name.clone(), (sp.key("tls_certificate"), c)).is_some()
            }
            (None, Some(v)) => {
                out.validation.insert(name.clone(), (sp.key("validation_context"), v)).is_some()
            }
            _ => return fail(sp, "a secret holds exactly one of tls_certificate, validation_context"),
        };
        if duplicate {
            return fail(sp.key("name"), format!("duplicate static secret name \"{name}\""));
        }
        out.dumps.push(super::tls::SecretDump { name, secret: dump });
    }
    Ok(out)
}

/// A listener filter chain's `transport_socket`; None when it is plaintext.
pub(super) fn downstream(p: &FieldPath, s: &RawTransportSocket, secrets: &Secrets) -> Res<Option<ServerTls>> {
    let Some(typed) = tls_typed_config(p, s, DOWNSTREAM_TYPES)? else { return Ok(None) };
    let dump = dump(DOWNSTREAM_TYPES[0], &typed);
    let p = p.key("typed_config");
    let raw: RawDownstreamTlsContext = read(&p, typed)?;
    let unsupported = [
        ("session_ticket_keys", raw.session_ticket_keys.is_some()),
        ("session_ticket_keys_sds_secret_config", raw.session_ticket_keys_sds_secret_config.is_some()),
        ("session_timeout", raw.session_timeout.is_some()),
        ("ocsp_staple_policy", raw.ocsp_staple_policy.is_some()),
        ("full_scan_certs_on_sni_mismatch", raw.full_scan_certs_on_sni_mismatch.is_some()),
        ("prefer_client_ciphers", raw.prefer_client_ciphers.is_some()),
    ];
    refuse_any(&p, &unsupported)?;
    if raw.require_sni == Some(true) {
        return fail(p.key("require_sni"), "require_sni is not supported: not yet implemented in skiff");
    }
    let cp = p.key("common_tls_context");
    let Some(common) = raw.common_tls_context else { return fail(cp, "common_tls_context is required") };
    let mut spec = format!("server require_client_certificate={:?};", raw.require_client_certificate);
    let c = common_parts(&cp, common, Side::Server, &mut spec, secrets)?;
    let provider = Arc::new(c.provider);
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&c.versions)
        .map_err(|e| finding(&cp.key("tls_params"), e))?;
    let require = raw.require_client_certificate == Some(true);
    let builder = match (c.trusted_ca, &c.certs.sds_ca) {
        (_, Some(secret)) => {
            let Some(verifier) = SecretClients::new(secret.clone(), provider.clone(), require, c.checks)
            else {
                return fail(cp.key("validation_context_sds_secret_config"), "the secret has no trusted_ca");
            };
            builder.with_client_cert_verifier(Arc::new(verifier))
        }
        (None, None) if c.checks.is_empty() && require => {
            return fail(
                p.key("require_client_certificate"),
                "require_client_certificate needs common_tls_context.validation_context.trusted_ca",
            )
        }
        (None, None) if c.checks.is_empty() => builder.with_no_client_auth(),
        // Pins without `trusted_ca`: Envoy asks for a certificate and checks only the pins.
        (roots, None) => {
            let verifier = VerifiedClients::new(roots, provider.clone(), require, c.checks)
                .map_err(|e| finding(&cp.key("validation_context"), e))?;
            builder.with_client_cert_verifier(Arc::new(verifier))
        }
    };
    let (mut config, local_uri_sans) = match (c.identity, &c.certs.sds_chain) {
        (Some((chain, key)), _) => {
            let sans = chain.first().map(|c| crate::peer::CertNames::of(c).uri_sans).unwrap_or_default();
            let key = certified(&cp.key("tls_certificates").idx(0), &provider, chain, key)?;
            (builder.with_cert_resolver(key), sans)
        }
        (None, None) => {
            return fail(cp.key("tls_certificates"), "a TLS listener needs one tls_certificates entry")
        }
        (None, Some(secret)) => {
            let secret = secret.clone();
            // `By=` of `x-forwarded-client-cert` names the certificate loaded first.
            let sans = match &*secret.current() {
                Material::Certificate(m) => {
                    m.key.cert.first().map(|c| crate::peer::CertNames::of(c).uri_sans).unwrap_or_default()
                }
                Material::Validation(_) => Vec::new(),
            };
            (builder.with_cert_resolver(Arc::new(SecretCert(secret))), sans)
        }
    };
    config.alpn_protocols = c.alpn;
    let stateful = raw.disable_stateful_session_resumption != Some(true);
    if !stateful {
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    }
    let config = Arc::new(config);
    let sds: Vec<Arc<Secret>> = c.certs.secrets().cloned().collect();
    let rotating = (stateful && !sds.is_empty()).then(|| {
        let built = config.clone();
        let fresh = move || {
            let mut c = (*built).clone();
            // rustls's default cache size.
            c.session_storage = rustls::server::ServerSessionMemoryCache::new(256);
            Arc::new(c)
        };
        Arc::new(PerGeneration::new(sds, Box::new(fresh)))
    });
    Ok(Some(ServerTls { config, spec, dump, local_uri_sans, certs: c.certs, rotating }))
}

/// A cluster's `transport_socket`; None when it is plaintext.
pub(super) fn upstream(p: &FieldPath, s: &RawTransportSocket, secrets: &Secrets) -> Res<Option<UpstreamTls>> {
    let Some(typed) = tls_typed_config(p, s, UPSTREAM_TYPES)? else { return Ok(None) };
    let dump = dump(UPSTREAM_TYPES[0], &typed);
    let p = p.key("typed_config");
    let raw: RawUpstreamTlsContext = read(&p, typed)?;
    let unsupported = [
        ("auto_host_sni", raw.auto_host_sni.is_some()),
        ("auto_sni_san_validation", raw.auto_sni_san_validation.is_some()),
        ("enforce_rsa_key_usage", raw.enforce_rsa_key_usage.is_some()),
    ];
    refuse_any(&p, &unsupported)?;
    if raw.allow_renegotiation == Some(true) {
        return fail(
            p.key("allow_renegotiation"),
            "allow_renegotiation is not supported: rustls never renegotiates",
        );
    }
    let sni = match raw.sni.filter(|s| !s.is_empty()) {
        None => None,
        Some(name) => match ServerName::try_from(name.clone()) {
            Ok(n) => Some(n),
            Err(_) => return fail(p.key("sni"), format!("\"{name}\" is not a server name")),
        },
    };
    let cp = p.key("common_tls_context");
    let mut spec = format!("client sni={sni:?} sessions={:?};", raw.max_session_keys);
    let common = raw.common_tls_context.unwrap_or_default();
    let c = common_parts(&cp, common, Side::Client, &mut spec, secrets)?;
    let provider = Arc::new(c.provider);
    let provider_for_key = provider.clone();
    let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = match &c.certs.sds_ca {
        Some(secret) => match SecretServers::new(secret.clone(), provider.clone(), c.checks) {
            Some(v) => Arc::new(v),
            None => {
                return fail(cp.key("validation_context_sds_secret_config"), "the secret has no trusted_ca")
            }
        },
        None => Arc::new(
            ServerVerifier::new(c.trusted_ca, provider.clone(), c.checks)
                .map_err(|e| finding(&cp.key("validation_context"), e))?,
        ),
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&c.versions)
        .map_err(|e| finding(&cp.key("tls_params"), e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match (c.identity, &c.certs.sds_chain) {
        (Some((chain, key)), _) => {
            let key = certified(&cp.key("tls_certificates").idx(0), &provider_for_key, chain, key)?;
            builder.with_client_cert_resolver(key)
        }
        (None, Some(secret)) => builder.with_client_cert_resolver(Arc::new(SecretCert(secret.clone()))),
        (None, None) => builder.with_no_client_auth(),
    };
    config.alpn_protocols = upstream_offer(&cp.key("alpn_protocols"), c.alpn)?;
    // Envoy's default `max_session_keys` is 1; 0 turns resumption off.
    let sessions = raw.max_session_keys.unwrap_or(1) as usize;
    let resumption = move || match sessions {
        0 => rustls::client::Resumption::disabled(),
        n => rustls::client::Resumption::in_memory_sessions(n),
    };
    config.resumption = resumption();
    let config = Arc::new(config);
    let sds: Vec<Arc<Secret>> = c.certs.secrets().cloned().collect();
    let rotating = (sessions > 0 && !sds.is_empty()).then(|| {
        let built = config.clone();
        let fresh = move || {
            let mut c = (*built).clone();
            c.resumption = resumption();
            Arc::new(c)
        };
        Arc::new(PerGeneration::new(sds, Box::new(fresh)))
    });
    Ok(Some(UpstreamTls { sni, config, spec, dump, certs: c.certs, rotating }))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

/// What both contexts take from `common_tls_context`.
struct Common {
    provider: CryptoProvider,
    versions: Vec<&'static rustls::SupportedProtocolVersion>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    trusted_ca: Option<rustls::RootCertStore>,
    checks: PeerChecks,
    alpn: Vec<Vec<u8>>,
    certs: ContextCerts,
}

fn common_parts(
    p: &FieldPath,
    c: RawCommonTlsContext,
    side: Side,
    spec: &mut String,
    secrets: &Secrets,
) -> Res<Common> {
    let unsupported = [
        ("combined_validation_context", c.combined_validation_context.is_some()),
        ("tls_certificate_provider_instance", c.tls_certificate_provider_instance.is_some()),
        (
            "validation_context_certificate_provider_instance",
            c.validation_context_certificate_provider_instance.is_some(),
        ),
        ("custom_handshaker", c.custom_handshaker.is_some()),
        ("key_log", c.key_log.is_some()),
    ];
    refuse_any(p, &unsupported)?;
    let mut provider = rustls::crypto::ring::default_provider();
    let params = c.tls_params.map(|t| (p.key("tls_params"), t));
    let versions = match &params {
        Some((pp, t)) => versions(pp, t, side, &mut provider, spec)?,
        None => default_versions(side),
    };
    let mut certs = ContextCerts::default();
    let inline = c.tls_certificates.unwrap_or_default();
    let by_name = c.tls_certificate_sds_secret_configs.unwrap_or_default();
    let sp = p.key("tls_certificate_sds_secret_configs");
    let entries: Vec<(FieldPath, &RawTlsCertificate)> = match (inline.is_empty(), by_name.as_slice()) {
        (_, []) => inline.iter().enumerate().map(|(i, t)| (p.key("tls_certificates").idx(i), t)).collect(),
        (true, [one]) if one.sds_config.is_some() => {
            certs.sds_chain = Some(sds_secret(&sp.idx(0), one, Kind::Certificate, spec)?);
            Vec::new()
        }
        (true, [one]) => {
            let (at, cert) = static_secret(&sp.idx(0), one, &secrets.certificates, "secret")?;
            vec![(at.clone(), cert)]
        }
        (true, _) => {
            return fail(sp, "more than one tls_certificate_sds_secret_configs entry is not supported")
        }
        (false, _) => {
            let side = if side == Side::Server { "server" } else { "client" };
            return fail(sp, format!("SDS and non-SDS TLS certificates may not be mixed in {side} contexts"));
        }
    };
    let identity = match entries.as_slice() {
        [] => None,
        [(at, one)] => {
            let (chain, key) = identity(at, one, spec)?;
            let path = one.certificate_chain.as_ref().map(source_name).unwrap_or_default();
            certs.chain.extend(chain.first().map(|der| SourcedCert { path, der: der.clone() }));
            Some((chain, key))
        }
        _ => return fail(p.key("tls_certificates"), "more than one tls_certificates entry is not supported"),
    };
    let vp = p.key("validation_context_sds_secret_config");
    let (trusted_ca, checks) = match (c.validation_context, &c.validation_context_sds_secret_config) {
        (Some(_), Some(_)) => {
            return fail(vp, "give one of validation_context, validation_context_sds_secret_config")
        }
        (Some(v), None) => validation(&p.key("validation_context"), v, spec, &mut certs)?,
        (None, Some(r)) if r.sds_config.is_some() => {
            certs.sds_ca = Some(sds_secret(&vp, r, Kind::Validation, spec)?);
            (None, PeerChecks::default())
        }
        (None, Some(r)) => {
            let (at, v) = static_secret(&vp, r, &secrets.validation, "certificate validation context")?;
            validation(at, v.clone(), spec, &mut certs)?
        }
        (None, None) => (None, PeerChecks::default()),
    };
    let alpn = alpn(&p.key("alpn_protocols"), c.alpn_protocols.unwrap_or_default())?;
    Ok(Common { provider, versions, identity, trusted_ca, checks, alpn, certs })
}

/// The static secret a reference at `p` names (no `sds_config`), with its place in the file.
fn static_secret<'a, T>(
    p: &FieldPath,
    r: &RawSdsSecretConfig,
    secrets: &'a std::collections::HashMap<String, (FieldPath, T)>,
    kind: &str,
) -> Res<(&'a FieldPath, &'a T)> {
    let name = r.name.as_deref().unwrap_or_default();
    match secrets.get(name) {
        Some((at, secret)) => Ok((at, secret)),
        // Envoy's words.
        None => fail(p.key("name"), format!("Unknown static {kind}: {name}")),
    }
}

/// The SDS secret a reference at `p` names in its `sds_config` file: the running one when another
/// context already uses it, else read now (a file that cannot be read, or has no such secret,
/// fails the load).
fn sds_secret(p: &FieldPath, r: &RawSdsSecretConfig, kind: Kind, spec: &mut String) -> Res<Arc<Secret>> {
    let cp = p.key("sds_config");
    let Some(source) = &r.sds_config else { return fail(cp, "sds_config is required") };
    let others = [
        ("api_config_source", source.api_config_source.is_some()),
        ("ads", source.ads.is_some()),
        ("self", source.self_source.is_some()),
        ("authorities", source.authorities.is_some()),
    ];
    if let Some((field, _)) = others.iter().find(|(_, present)| *present) {
        return fail(
            cp.key(field),
            format!(
                "an sds_config {field} is not supported (skiff reads secrets from files: path_config_source)"
            ),
        );
    }
    match source.resource_api_version.as_deref() {
        None | Some("V3") | Some("AUTO") => {}
        Some(v) => {
            return fail(
                cp.key("resource_api_version"),
                format!("resource_api_version {v} is not supported (V3)"),
            )
        }
    }
    let path = match (&source.path, &source.path_config_source) {
        (Some(path), None) => path.clone(),
        (None, Some(pcs)) => {
            let pp = cp.key("path_config_source");
            if pcs
                .watched_directory
                .as_ref()
                .is_some_and(|w| w.path.as_deref().unwrap_or_default().is_empty())
            {
                return fail(pp.key("watched_directory").key("path"), "watched_directory needs a path");
            }
            match pcs.path.as_deref().filter(|p| !p.is_empty()) {
                Some(path) => path.to_string(),
                None => return fail(pp.key("path"), "path_config_source needs a path"),
            }
        }
        (Some(_), Some(_)) => return fail(cp, "give one of path, path_config_source"),
        (None, None) => {
            return fail(cp, "an sds_config needs path_config_source (skiff reads secrets from files)")
        }
    };
    let name = r.name.as_deref().unwrap_or_default();
    if name.is_empty() {
        return fail(p.key("name"), "an SDS secret needs a name");
    }
    let path = std::path::PathBuf::from(path);
    spec.push_str(&format!("sds={}#{name};", path.display()));
    secrets::subscribe(&path, name, kind, || read_secret(&path, name, kind).map_err(|(why, _)| why))
        .map_err(|why| super::error::Finding { path: cp, message: why })
}

/// Reads the secret `name` of kind `kind` from the SDS file at `path` (a `DiscoveryResponse`
/// holding exactly that one secret, as Envoy requires), with the certificate, key and CA files
/// it names. Err says why, and whether the file did not parse at all (Envoy's `update_failure`,
/// else `update_rejected`), in Envoy's words where it has them.
pub fn read_secret(
    path: &std::path::Path,
    name: &str,
    kind: Kind,
) -> Result<secrets::Loaded, (String, bool)> {
    let origin = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| (format!("{origin}: {e}"), true))?;
    let raw: super::raw::RawDiscoveryResponse<serde_norway::Mapping> =
        serde_norway::from_str(&text).map_err(|e| (format!("{origin}: {e}"), true))?;
    let rejected = |why: String| (format!("{origin}: {why}"), false);
    if let Some(url) = raw.type_url.as_deref().filter(|u| !SECRET_TYPES.contains(u)) {
        return Err(rejected(format!("type_url: expected \"{}\", got \"{url}\"", SECRET_TYPES[0])));
    }
    let mut resources = raw.resources.unwrap_or_default();
    let mut m = match resources.len() {
        0 => return Err(rejected(format!("Missing SDS resources for {name} in onConfigUpdate()"))),
        1 => resources.remove(0),
        n => {
            return Err(rejected(format!(
                "Unexpected SDS secrets length for {name}, number of added resources {n}, number of removed resources 0. Expected sum is 1"
            )))
        }
    };
    let p = FieldPath::default().key("resources").idx(0);
    match m.remove("@type") {
        Some(serde_norway::Value::String(t)) if SECRET_TYPES.contains(&t.as_str()) => {}
        Some(t) => return Err(rejected(format!("resources[0].@type: {t:?} is not {}", SECRET_TYPES[0]))),
        None => {}
    }
    let mut spec = format!("{m:?};");
    let dump = secret_dump(&m);
    let secret: RawSecret = read(&p, m).map_err(|f| rejected(format!("{}: {}", f.path, f.message)))?;
    let found = secret.name.as_deref().unwrap_or_default();
    if found != name {
        return Err(rejected(format!("Unexpected SDS secret (expecting {name}): {found}")));
    }
    let finding = |f: super::error::Finding| rejected(format!("{}: {}", f.path, f.message));
    let mut files = Vec::new();
    let mut watch = |d: Option<&RawDataSource>| {
        if let Some(f) = d.and_then(|d| d.filename.as_ref()) {
            let f = std::path::PathBuf::from(f);
            files.push((f.clone(), super::file_identity::identity(&f)));
        }
    };
    let material = match (kind, secret.tls_certificate, secret.validation_context) {
        (Kind::Certificate, Some(c), _) => {
            let cp = p.key("tls_certificate");
            watch(c.certificate_chain.as_ref());
            watch(c.private_key.as_ref());
            let (chain, key) = identity(&cp, &c, &mut spec).map_err(finding)?;
            let provider = rustls::crypto::ring::default_provider();
            let key = Arc::new(certified_key(&cp, &provider, chain, key).map_err(finding)?);
            Material::Certificate(secrets::CertMaterial { key })
        }
        (Kind::Validation, _, Some(v)) => {
            let vp = p.key("validation_context");
            watch(v.trusted_ca.as_ref());
            let mut certs = ContextCerts::default();
            let (roots, checks) = validation(&vp, v, &mut spec, &mut certs).map_err(finding)?;
            let Some(roots) = roots else {
                return Err(rejected(format!("secret {name}: a validation context needs trusted_ca")));
            };
            let ca = certs.ca.map(|c| c.der);
            Material::Validation(secrets::ValidationMaterial { roots: Arc::new(roots), checks, ca })
        }
        (Kind::Certificate, None, _) => {
            return Err(rejected(format!("secret {name} has no tls_certificate")))
        }
        (Kind::Validation, _, None) => {
            return Err(rejected(format!("secret {name} has no validation_context")))
        }
    };
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    spec.hash(&mut h);
    Ok(secrets::Loaded {
        material,
        version_info: raw.version_info.unwrap_or_default(),
        files,
        hash: h.finish(),
        dump,
    })
}

/// An SDS secret as Envoy's `dynamic_active_secrets` shows it: under its `@type`, each file a
/// data source names inlined as `inline_bytes` (base64, as protobuf's JSON writes bytes), every
/// `private_key` and `password` as the base64 of `[redacted]`.
fn secret_dump(m: &serde_norway::Mapping) -> serde_json::Value {
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    fn walk(v: &mut serde_json::Value, sensitive: bool, b64: &dyn Fn(&[u8]) -> String) {
        let serde_json::Value::Object(m) = v else { return };
        if sensitive {
            *v = serde_json::json!({ "inline_bytes": b64(b"[redacted]") });
            return;
        }
        let inlined = match (m.get("filename"), m.get("inline_string")) {
            (Some(serde_json::Value::String(f)), _) => Some(std::fs::read(f).unwrap_or_default()),
            (_, Some(serde_json::Value::String(s))) => Some(s.clone().into_bytes()),
            _ => None,
        };
        if let Some(bytes) = inlined {
            *v = serde_json::json!({ "inline_bytes": b64(&bytes) });
            return;
        }
        for (k, child) in m.iter_mut() {
            walk(child, k == "private_key" || k == "password", b64);
        }
    }
    let mut v = serde_json::to_value(m).unwrap_or_else(|_| serde_json::json!({}));
    walk(&mut v, false, &b64);
    let mut out = serde_json::Map::new();
    out.insert("@type".to_string(), SECRET_TYPES[0].into());
    if let serde_json::Value::Object(fields) = v {
        out.extend(fields);
    }
    serde_json::Value::Object(out)
}

fn refuse_any(p: &FieldPath, fields: &[(&str, bool)]) -> Res<()> {
    match fields.iter().find(|(_, present)| *present) {
        Some((field, _)) => {
            fail(p.key(field), format!("{field} is not supported: not yet implemented in skiff"))
        }
        None => Ok(()),
    }
}

/// Envoy's defaults: a listener accepts TLS 1.2 and 1.3; an upstream connection offers 1.2 only.
fn default_versions(side: Side) -> Vec<&'static rustls::SupportedProtocolVersion> {
    match side {
        Side::Server => vec![&rustls::version::TLS13, &rustls::version::TLS12],
        Side::Client => vec![&rustls::version::TLS12],
    }
}

/// A `TlsProtocol` as a number (12 = TLS 1.2); None for `TLS_AUTO`.
fn protocol(p: &FieldPath, v: &str) -> Res<Option<u8>> {
    Ok(match v {
        "TLS_AUTO" => None,
        "TLSv1_0" => Some(10),
        "TLSv1_1" => Some(11),
        "TLSv1_2" => Some(12),
        "TLSv1_3" => Some(13),
        _ => return fail(p.clone(), format!("\"{v}\" is not a TLS version (TLS_AUTO, TLSv1_0 .. TLSv1_3)")),
    })
}

/// `tls_params`: the version range, cipher suites and curves. rustls speaks TLS 1.2 and 1.3 only
/// and has no CBC or static-RSA suites: a range or a list that needs those is refused.
fn versions(
    p: &FieldPath,
    t: &RawTlsParams,
    side: Side,
    provider: &mut CryptoProvider,
    spec: &mut String,
) -> Res<Vec<&'static rustls::SupportedProtocolVersion>> {
    if t.signature_algorithms.is_some() || t.compliance_policies.is_some() {
        let field =
            if t.signature_algorithms.is_some() { "signature_algorithms" } else { "compliance_policies" };
        return fail(p.key(field), format!("{field} is not supported: not yet implemented in skiff"));
    }
    let min_p = p.key("tls_minimum_protocol_version");
    let max_p = p.key("tls_maximum_protocol_version");
    let min = match &t.tls_minimum_protocol_version {
        Some(v) => protocol(&min_p, v)?,
        None => None,
    };
    let max = match &t.tls_maximum_protocol_version {
        Some(v) => protocol(&max_p, v)?,
        None => None,
    };
    let max = max.unwrap_or(if side == Side::Server { 13 } else { 12 });
    // TLS 1.0 and 1.1 are below what rustls speaks: a minimum under 1.2 allows 1.2 and up.
    let min = min.unwrap_or(12).max(12);
    if max < 12 {
        return fail(max_p, "TLS versions below TLSv1_2 are not supported (rustls speaks TLS 1.2 and 1.3)");
    }
    if min > max {
        return fail(min_p, "tls_minimum_protocol_version is above tls_maximum_protocol_version");
    }
    let mut out = Vec::new();
    if max >= 13 {
        out.push(&rustls::version::TLS13);
    }
    if min <= 12 {
        out.push(&rustls::version::TLS12);
    }
    spec.push_str(&format!("versions={min}-{max};"));
    if let Some(suites) = &t.cipher_suites {
        let mut chosen = Vec::new();
        for (i, name) in suites.iter().enumerate() {
            // `[A|B]` is BoringSSL's equal-preference group.
            for one in name.trim_start_matches('[').trim_end_matches(']').split('|') {
                let Some(suite) = cipher_suite(one) else {
                    return fail(
                        p.key("cipher_suites").idx(i),
                        format!(
                            "cipher suite \"{one}\" is not supported (skiff offers {})",
                            SUITES.map(|s| s.0).join(", ")
                        ),
                    );
                };
                let found = provider.cipher_suites.iter().find(|s| s.suite() == suite).copied();
                if let Some(s) = found.filter(|s| !chosen.contains(s)) {
                    chosen.push(s);
                }
            }
        }
        // TLS 1.3's suites are not configurable in Envoy (BoringSSL): keep all of them.
        chosen.extend(
            provider.cipher_suites.iter().filter(|s| s.version() == &rustls::version::TLS13).copied(),
        );
        provider.cipher_suites = chosen;
        spec.push_str(&format!("suites={suites:?};"));
    }
    if let Some(curves) = &t.ecdh_curves {
        let mut chosen = Vec::new();
        for (i, name) in curves.iter().enumerate() {
            let group = match name.as_str() {
                "X25519" => rustls::NamedGroup::X25519,
                "P-256" => rustls::NamedGroup::secp256r1,
                "P-384" => rustls::NamedGroup::secp384r1,
                _ => {
                    return fail(
                        p.key("ecdh_curves").idx(i),
                        format!("curve \"{name}\" is not supported (X25519, P-256, P-384)"),
                    )
                }
            };
            if let Some(g) = provider.kx_groups.iter().find(|g| g.name() == group) {
                chosen.push(*g);
            }
        }
        provider.kx_groups = chosen;
        spec.push_str(&format!("curves={curves:?};"));
    }
    Ok(out)
}

/// OpenSSL's names (Envoy's) for the TLS 1.2 suites rustls has.
const SUITES: [(&str, rustls::CipherSuite); 6] = [
    ("ECDHE-ECDSA-AES128-GCM-SHA256", rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
    ("ECDHE-RSA-AES128-GCM-SHA256", rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
    ("ECDHE-ECDSA-AES256-GCM-SHA384", rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384),
    ("ECDHE-RSA-AES256-GCM-SHA384", rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384),
    ("ECDHE-ECDSA-CHACHA20-POLY1305", rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256),
    ("ECDHE-RSA-CHACHA20-POLY1305", rustls::CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256),
];

fn cipher_suite(name: &str) -> Option<rustls::CipherSuite> {
    SUITES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// Where a `DataSource` comes from, as `/certs` names it.
fn source_name(d: &RawDataSource) -> String {
    d.filename.clone().unwrap_or_else(|| "<inline>".to_string())
}

/// A `DataSource`'s bytes (a file read now, an inline string, or an environment variable).
fn data(p: &FieldPath, d: &RawDataSource, spec: &mut String) -> Res<Vec<u8>> {
    if d.inline_bytes.is_some() || d.watched_directory.is_some() {
        let field = if d.inline_bytes.is_some() { "inline_bytes" } else { "watched_directory" };
        return fail(
            p.key(field),
            format!("{field} is not supported (filename, inline_string, environment_variable)"),
        );
    }
    let bytes = match (&d.filename, &d.inline_string, &d.environment_variable) {
        (Some(f), None, None) => std::fs::read(f).map_err(|e| super::error::Finding {
            path: p.key("filename"),
            message: format!("cannot read {f}: {e}"),
        })?,
        (None, Some(s), None) => s.clone().into_bytes(),
        (None, None, Some(v)) => match std::env::var(v) {
            Ok(s) => s.into_bytes(),
            Err(_) => {
                return fail(p.key("environment_variable"), format!("environment variable {v} is not set"))
            }
        },
        _ => return fail(p.clone(), "give exactly one of filename, inline_string, environment_variable"),
    };
    // The spec keys equality (reloads, pooling) on content, never printing it.
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    spec.push_str(&format!("{:x};", h.finish()));
    Ok(bytes)
}

fn identity(
    p: &FieldPath,
    c: &RawTlsCertificate,
    spec: &mut String,
) -> Res<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let unsupported = [
        ("password", c.password.is_some()),
        ("pkcs12", c.pkcs12.is_some()),
        ("watched_directory", c.watched_directory.is_some()),
        ("private_key_provider", c.private_key_provider.is_some()),
        ("ocsp_staple", c.ocsp_staple.is_some()),
        ("signed_certificate_timestamp", c.signed_certificate_timestamp.is_some()),
    ];
    refuse_any(p, &unsupported)?;
    let (Some(chain), Some(key)) = (&c.certificate_chain, &c.private_key) else {
        return fail(p.clone(), "a TLS certificate needs certificate_chain and private_key");
    };
    let cp = p.key("certificate_chain");
    let chain = certificates(&cp, &data(&cp, chain, spec)?)?;
    let kp = p.key("private_key");
    let key = PrivateKeyDer::from_pem_slice(&data(&kp, key, spec)?)
        .map_err(|e| super::error::Finding { path: kp, message: format!("no PEM private key: {e}") })?;
    Ok((chain, key))
}

/// A certificate chain and its key as rustls signs with them. A key that does not match the
/// certificate is refused; a certificate webpki cannot parse (X.509 v1, as the self-signed ones
/// in Envoy's examples are) is served as it is, as Envoy serves it.
fn certified(
    p: &FieldPath,
    provider: &CryptoProvider,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Res<Arc<rustls::sign::SingleCertAndKey>> {
    Ok(Arc::new(certified_key(p, provider, chain, key)?.into()))
}

fn certified_key(
    p: &FieldPath,
    provider: &CryptoProvider,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Res<rustls::sign::CertifiedKey> {
    let signing =
        provider.key_provider.load_private_key(key).map_err(|e| finding(&p.key("private_key"), e))?;
    let certified = rustls::sign::CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            fail(p.key("private_key"), "the private key does not match certificate_chain")
        }
        _ => Ok(certified),
    }
}

fn certificates(p: &FieldPath, pem: &[u8]) -> Res<Vec<CertificateDer<'static>>> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    match certs {
        Ok(c) if !c.is_empty() => Ok(c),
        Ok(_) => fail(p.clone(), "no PEM certificate found"),
        Err(e) => fail(p.clone(), format!("bad PEM certificate: {e}")),
    }
}

fn validation(
    p: &FieldPath,
    v: RawValidationContext,
    spec: &mut String,
    certs: &mut ContextCerts,
) -> Res<(Option<rustls::RootCertStore>, PeerChecks)> {
    let unsupported = [
        ("allow_expired_certificate", v.allow_expired_certificate.is_some()),
        ("trust_chain_verification", v.trust_chain_verification.is_some()),
        ("watched_directory", v.watched_directory.is_some()),
        ("custom_validator_config", v.custom_validator_config.is_some()),
        ("max_verify_depth", v.max_verify_depth.is_some()),
        ("system_root_certs", v.system_root_certs.is_some()),
    ];
    refuse_any(p, &unsupported)?;
    let roots = match &v.trusted_ca {
        None => None,
        Some(d) => {
            let tp = p.key("trusted_ca");
            let mut store = rustls::RootCertStore::empty();
            let found = certificates(&tp, &data(&tp, d, spec)?)?;
            // Envoy reports the file's first certificate as the context's CA.
            certs.ca = found.first().map(|der| SourcedCert { path: source_name(d), der: der.clone() });
            for cert in found {
                store.add(cert).map_err(|e| finding(&tp, e))?;
            }
            Some(store)
        }
    };
    let mut sans = Vec::new();
    for (i, m) in v.match_typed_subject_alt_names.into_iter().flatten().enumerate() {
        let mp = p.key("match_typed_subject_alt_names").idx(i);
        let san_type = match m.san_type.as_str() {
            "DNS" => SanType::Dns,
            "URI" => SanType::Uri,
            "EMAIL" => SanType::Email,
            "IP_ADDRESS" => SanType::IpAddress,
            "OTHER_NAME" => return fail(mp.key("san_type"), "OTHER_NAME SAN matchers are not supported"),
            other => {
                return fail(
                    mp.key("san_type"),
                    format!("unknown san_type {other:?} (DNS, URI, EMAIL, IP_ADDRESS)"),
                )
            }
        };
        if m.oid.is_some() {
            return fail(mp.key("oid"), "oid applies only to OTHER_NAME, which is not supported");
        }
        sans.push(san(&mp.key("matcher"), san_type, m.matcher)?);
    }
    // Envoy applies each deprecated untyped matcher to DNS, URI, EMAIL and IP_ADDRESS names.
    for (i, m) in v.match_subject_alt_names.into_iter().flatten().enumerate() {
        let mp = p.key("match_subject_alt_names").idx(i);
        for san_type in [SanType::Dns, SanType::Uri, SanType::Email, SanType::IpAddress] {
            sans.push(san(&mp, san_type, m.clone())?);
        }
    }
    if !sans.is_empty() && roots.is_none() {
        return fail(p.key("trusted_ca"), "SAN matching needs trusted_ca (as in Envoy)");
    }
    let mut checks = PeerChecks { sans, ..PeerChecks::default() };
    for (i, h) in v.verify_certificate_hash.iter().flatten().enumerate() {
        let Some(hash) = hex_sha256(h) else {
            return fail(
                p.key("verify_certificate_hash").idx(i),
                format!("Invalid hex-encoded SHA-256 {h:?} (64 hex digits, colons allowed)"),
            );
        };
        checks.cert_hashes.push(hash);
    }
    for (i, h) in v.verify_certificate_spki.iter().flatten().enumerate() {
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD.decode(h).ok();
        let Some(hash) = decoded.and_then(|d| <[u8; 32]>::try_from(d).ok()) else {
            return fail(
                p.key("verify_certificate_spki").idx(i),
                format!("Invalid base64-encoded SHA-256 {h:?}"),
            );
        };
        checks.spki_hashes.push(hash);
    }
    if let Some(d) = &v.crl {
        let cp = p.key("crl");
        if roots.is_none() {
            return fail(cp, "crl needs trusted_ca");
        }
        let pem = data(&cp, d, spec)?;
        for crl in CertificateRevocationListDer::pem_slice_iter(&pem) {
            checks.crls.push(crl.map_err(|e| finding(&cp, format!("bad PEM CRL: {e}")))?);
        }
        if checks.crls.is_empty() {
            return fail(cp, "no PEM CRL found");
        }
    }
    checks.crl_leaf_only = v.only_verify_leaf_cert_crl == Some(true);
    spec.push_str(&format!("checks={checks:?};"));
    Ok((roots, checks))
}

/// A `verify_certificate_hash` entry: 64 hex digits, upper or lower case, optionally in pairs
/// separated by colons (`openssl x509 -fingerprint -sha256` prints it so).
fn hex_sha256(text: &str) -> Option<[u8; 32]> {
    let digits: Vec<u8> = text.bytes().filter(|b| *b != b':').collect();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(digits.chunks(2)) {
        *o = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

fn san(p: &FieldPath, san_type: SanType, m: RawStringMatcher) -> Res<SanMatcher> {
    let StringMatcher { rule, ignore_case } = string_match(p, m)?;
    let rule = match rule {
        StringRule::Exact(s) => SanRule::Exact(s),
        StringRule::Prefix(s) => SanRule::Prefix(s),
        StringRule::Suffix(s) => SanRule::Suffix(s),
        StringRule::Contains(s) => SanRule::Contains(s),
        StringRule::SafeRegex(re) => SanRule::Regex(
            regex::Regex::new(&format!("^(?:{re})$")).map_err(|e| finding(&p.key("safe_regex"), e))?,
        ),
    };
    Ok(SanMatcher { san_type, rule, ignore_case })
}

/// The protocols a context offers by ALPN, in the config's order: those skiff speaks (HTTP/2 is
/// served to clients only: an upstream context keeps `http/1.1`, see `upstream_offer`).
fn alpn(p: &FieldPath, protocols: Vec<String>) -> Res<Vec<Vec<u8>>> {
    if protocols.is_empty() {
        return Ok(Vec::new());
    }
    let spoken: Vec<Vec<u8>> =
        protocols.iter().filter(|a| *a == "h2" || *a == "http/1.1").map(|a| a.as_bytes().to_vec()).collect();
    if spoken.is_empty() {
        return fail(
            p.clone(),
            format!("alpn_protocols {protocols:?} lacks h2 and http/1.1, the protocols skiff speaks"),
        );
    }
    Ok(spoken)
}

/// What an HTTP/1.1 cluster's upstream context offers: `http/1.1` when its list has it (an HTTP/2
/// cluster's connections offer `h2`, `h2_upstream`); a list without it is refused.
fn upstream_offer(p: &FieldPath, alpn: Vec<Vec<u8>>) -> Res<Vec<Vec<u8>>> {
    if alpn.is_empty() || alpn.iter().any(|a| a == b"http/1.1") {
        return Ok(alpn.into_iter().filter(|a| a == b"http/1.1").collect());
    }
    fail(p.clone(), "alpn_protocols lacks http/1.1, the only protocol skiff speaks to upstreams")
}

fn finding(p: &FieldPath, e: impl std::fmt::Display) -> super::error::Finding {
    super::error::Finding { path: p.clone(), message: e.to_string() }
}
