//! The TLS contexts a listener's filter chains and a cluster's `transport_socket` name, as the
//! model carries them: built rustls configs (by `convert_tls`, at load) plus what they were built
//! from, and Envoy's rule for picking a listener's chain by SNI. No parsing, no I/O.

use rustls_pki_types::ServerName;
use std::sync::Arc;

/// A listener's TLS filter chains, in config order; `select` picks one by SNI as Envoy does.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerTls {
    pub chains: Vec<TlsChain>,
    /// The shortest `transport_socket_connect_timeout` of its chains: the handshake's limit
    /// (None: the listener's default).
    pub handshake_limit: Option<std::time::Duration>,
    /// The listener runs `envoy.filters.listener.tls_inspector`. Envoy knows a connection's
    /// requested server name only through it: without one, RBAC's `requested_server_name` sees ""
    /// (skiff still picks the chain by SNI).
    pub inspects_sni: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsChain {
    /// `filter_chain_match.server_names`, lower-cased: exact names and `*.suffix` wildcards;
    /// empty matches any SNI (and none).
    pub server_names: Vec<String>,
    pub context: ServerTls,
}

impl ListenerTls {
    /// Envoy's order: an exact server name, then the longest matching wildcard, then a chain
    /// without server names. None: no chain matches (Envoy closes, `no_filter_chain_match`).
    pub fn select(&self, sni: Option<&str>) -> Option<&TlsChain> {
        if let Some(sni) = sni.map(str::to_ascii_lowercase) {
            if let Some(c) = self.chains.iter().find(|c| c.server_names.contains(&sni)) {
                return Some(c);
            }
            let wildcard = self
                .chains
                .iter()
                .flat_map(|c| c.server_names.iter().map(move |n| (n, c)))
                .filter(|(n, _)| n.strip_prefix('*').is_some_and(|suffix| sni.ends_with(suffix)))
                .max_by_key(|(n, _)| n.len());
            if let Some((_, c)) = wildcard {
                return Some(c);
            }
        }
        self.chains.iter().find(|c| c.server_names.is_empty())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(names: &[&str]) -> TlsChain {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| {
                b.with_no_client_auth()
                    .with_cert_resolver(Arc::new(rustls::server::ResolvesServerCertUsingSni::new()))
            })
            .unwrap_or_else(|e| panic!("{e}"));
        TlsChain {
            server_names: names.iter().map(|n| n.to_string()).collect(),
            context: ServerTls {
                config: Arc::new(config),
                spec: names.join(","),
                dump: serde_json::Value::Null,
                local_uri_sans: Vec::new(),
            },
        }
    }

    #[test]
    fn sni_picks_exact_then_longest_wildcard_then_the_catch_all() {
        let tls = ListenerTls {
            chains: vec![
                chain(&["*.example.com"]),
                chain(&["*.api.example.com"]),
                chain(&["www.example.com"]),
                chain(&[]),
            ],
            handshake_limit: None,
            inspects_sni: true,
        };
        let pick = |sni: Option<&str>| tls.select(sni).map(|c| c.context.spec.clone());
        assert_eq!(pick(Some("WWW.example.com")).as_deref(), Some("www.example.com"));
        assert_eq!(pick(Some("v1.api.example.com")).as_deref(), Some("*.api.example.com"));
        assert_eq!(pick(Some("shop.example.com")).as_deref(), Some("*.example.com"));
        assert_eq!(pick(Some("example.com")).as_deref(), Some(""));
        assert_eq!(pick(None).as_deref(), Some(""));
        let strict =
            ListenerTls { chains: vec![chain(&["a.example"])], handshake_limit: None, inspects_sni: true };
        assert!(strict.select(None).is_none() && strict.select(Some("b.example")).is_none());
    }
}
