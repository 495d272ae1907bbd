//! The TLS contexts a listener's filter chains and a cluster's `transport_socket` name, as the
//! model carries them: built rustls configs (by `convert_tls`, at load) plus what they were built
//! from. No parsing, no I/O (picking a chain is `chain_match`).

use super::secrets::{Material, PerGeneration, Secret};
use rustls_pki_types::{CertificateDer, ServerName};
use std::sync::Arc;

/// A filter chain's TLS: its context and the handshake's limit.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerTls {
    pub context: ServerTls,
    /// `transport_socket_connect_timeout` (None: the listener's default).
    pub handshake_limit: Option<std::time::Duration>,
}

/// A built `DownstreamTlsContext`. Compared by what it was built from (the PEM bytes included),
/// so a reload with the same config keeps the listener as it is.
#[derive(Clone)]
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    /// What it was built from (settings and hashes of the PEM bytes), never printed.
    pub spec: String,
    /// The `transport_socket` for `/config_dump`, keys redacted.
    pub dump: serde_json::Value,
    /// The URI SANs of the certificate it serves (`By=` in `x-forwarded-client-cert`).
    pub local_uri_sans: Vec<String>,
    /// What `/certs` lists for it.
    pub certs: ContextCerts,
    /// With SDS secrets: `config` with fresh session caches per rotation.
    pub rotating: Option<Arc<PerGeneration<rustls::ServerConfig>>>,
}

impl ServerTls {
    /// The config a new handshake uses.
    pub fn handshake_config(&self) -> Arc<rustls::ServerConfig> {
        match &self.rotating {
            Some(r) => r.get(),
            None => self.config.clone(),
        }
    }
}

/// A built `UpstreamTlsContext`.
#[derive(Clone)]
pub struct UpstreamTls {
    /// `sni`: the name sent in the ClientHello (Envoy sends none when unset).
    pub sni: Option<ServerName<'static>>,
    pub config: Arc<rustls::ClientConfig>,
    /// What the pool keys a cluster's connections by, beside its name: a cluster whose TLS
    /// identity changed on reload never reuses a connection made for the old one.
    pub spec: String,
    /// The `transport_socket` for `/config_dump`, keys redacted.
    pub dump: serde_json::Value,
    /// What `/certs` lists for it.
    pub certs: ContextCerts,
    /// With SDS secrets: `config` with a fresh session store per rotation.
    pub rotating: Option<Arc<PerGeneration<rustls::ClientConfig>>>,
}

impl UpstreamTls {
    /// The config a new handshake uses.
    pub fn handshake_config(&self) -> Arc<rustls::ClientConfig> {
        match &self.rotating {
            Some(r) => r.get(),
            None => self.config.clone(),
        }
    }
}

/// A context's certificates as Envoy's `/certs` lists them: the first certificate of
/// `trusted_ca` and the leaf of each `tls_certificates` entry, each with where it came from
/// (a file name, or `<inline>`), and the SDS secrets it takes either from instead. Never a key.
#[derive(Clone, Default)]
pub struct ContextCerts {
    pub ca: Option<SourcedCert>,
    pub chain: Vec<SourcedCert>,
    /// `validation_context_sds_secret_config` with an `sds_config`.
    pub sds_ca: Option<Arc<Secret>>,
    /// `tls_certificate_sds_secret_configs` with an `sds_config`.
    pub sds_chain: Option<Arc<Secret>>,
}

impl ContextCerts {
    /// The CA and the leaves as they are now: an SDS secret's current material, which Envoy
    /// lists as `<inline>` (it inlines what a secret names).
    pub fn current(&self) -> (Option<SourcedCert>, Vec<SourcedCert>) {
        let inline =
            |der: &CertificateDer<'static>| SourcedCert { path: "<inline>".to_string(), der: der.clone() };
        let ca = match self.sds_ca.as_ref().map(|s| s.current()) {
            Some(m) => match &*m {
                Material::Validation(v) => v.ca.as_ref().map(inline),
                Material::Certificate(_) => None,
            },
            None => self.ca.clone(),
        };
        let chain = match self.sds_chain.as_ref().map(|s| s.current()) {
            Some(m) => match &*m {
                Material::Certificate(c) => c.key.cert.first().map(inline).into_iter().collect(),
                Material::Validation(_) => Vec::new(),
            },
            None => self.chain.clone(),
        };
        (ca, chain)
    }

    /// The SDS secrets this context uses.
    pub fn secrets(&self) -> impl Iterator<Item = &Arc<Secret>> {
        self.sds_chain.iter().chain(&self.sds_ca)
    }
}

#[derive(Clone)]
pub struct SourcedCert {
    /// The `filename`, or `<inline>` for an inline string or an environment variable.
    pub path: String,
    pub der: CertificateDer<'static>,
}

/// A `static_resources.secrets` entry as `/config_dump` shows it: as written, keys redacted.
#[derive(Debug, Clone, PartialEq)]
pub struct SecretDump {
    pub name: String,
    pub secret: serde_json::Value,
}

macro_rules! by_spec {
    ($t:ty) => {
        impl PartialEq for $t {
            fn eq(&self, other: &Self) -> bool {
                self.spec == other.spec
            }
        }
        // Keys and certificates stay out of logs and debug dumps.
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($t), "{..}"))
            }
        }
    };
}
by_spec!(ServerTls);
by_spec!(UpstreamTls);
