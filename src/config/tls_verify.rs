//! How skiff checks a peer's certificate as Envoy's TLS context does: the chain against
//! `trusted_ca` (webpki), then `match_typed_subject_alt_names` (every `StringMatcher` kind on
//! DNS, URI, EMAIL and IP_ADDRESS names), never the SNI against the
//! certificate (Envoy checks names only through SAN matchers). A SAN mismatch is reported as
//! `CertificateError::ApplicationVerificationFailure`, which the shard counts as
//! `ssl.fail_verify_san`. Built once at load by `tls`; holds no connection state.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::sync::Arc;

/// Which kind of subjectAltName a matcher looks at (`san_type`; `OTHER_NAME` is refused at load).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanType {
    Dns,
    Uri,
    Email,
    IpAddress,
}

/// A `StringMatcher` as a SAN matcher applies it.
#[derive(Debug, Clone)]
pub enum SanRule {
    /// On a DNS SAN, Envoy's DNS rule (`dns_name_match`); on the others, byte equality.
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    /// Anchored (Envoy's `safe_regex` matches the whole value); never with `ignore_case`.
    Regex(regex::Regex),
}

impl PartialEq for SanRule {
    fn eq(&self, other: &Self) -> bool {
        use SanRule::*;
        match (self, other) {
            (Exact(a), Exact(b))
            | (Prefix(a), Prefix(b))
            | (Suffix(a), Suffix(b))
            | (Contains(a), Contains(b)) => a == b,
            (Regex(a), Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

/// One `match_typed_subject_alt_names` entry (or one type of a deprecated `match_subject_alt_names`
/// entry, which Envoy applies to DNS, URI, EMAIL and IP_ADDRESS names alike).
#[derive(Debug, Clone, PartialEq)]
pub struct SanMatcher {
    pub san_type: SanType,
    pub rule: SanRule,
    pub ignore_case: bool,
}

impl SanMatcher {
    fn matches(&self, san_type: SanType, value: &str) -> bool {
        if san_type != self.san_type {
            return false;
        }
        let eq = |a: &str, b: &str| if self.ignore_case { a.eq_ignore_ascii_case(b) } else { a == b };
        match &self.rule {
            // Envoy: an exact matcher on a DNS SAN follows DNS rules (case-insensitive, and a
            // wildcard SAN covers one label), whatever `ignore_case` says.
            SanRule::Exact(s) if san_type == SanType::Dns => dns_name_match(s, value),
            SanRule::Exact(s) => eq(value, s),
            SanRule::Prefix(s) => {
                value.len() >= s.len() && value.is_char_boundary(s.len()) && eq(&value[..s.len()], s)
            }
            SanRule::Suffix(s) => {
                let at = value.len().wrapping_sub(s.len());
                value.len() >= s.len() && value.is_char_boundary(at) && eq(&value[at..], s)
            }
            SanRule::Contains(s) if self.ignore_case => {
                value.to_ascii_lowercase().contains(&s.to_ascii_lowercase())
            }
            SanRule::Contains(s) => value.contains(s.as_str()),
            SanRule::Regex(re) => re.is_match(value),
        }
    }
}

/// Envoy's `dnsNameMatch`: whether the configured `name` is covered by the certificate's DNS SAN
/// `pattern`, ignoring ASCII case. A `*` in the pattern's left-most label (once, not in an A-label
/// `xn--`) stands for part or all of exactly one label: `*.example.com` covers `a.example.com`,
/// not `a.b.example.com` nor `example.com`; `web*.example.com` covers `web1.example.com`.
fn dns_name_match(name: &str, pattern: &str) -> bool {
    let (name, pattern) = (name.to_ascii_lowercase(), pattern.to_ascii_lowercase());
    if name == pattern {
        return true;
    }
    let (Some((label, rest)), Some((p_label, p_rest))) = (name.split_once('.'), pattern.split_once('.'))
    else {
        return false;
    };
    if !p_label.contains('*') || p_rest.contains('*') || p_label.starts_with("xn--") || rest != p_rest {
        return false;
    }
    if p_label == "*" {
        return true;
    }
    match p_label.split_once('*') {
        Some((before, after)) if !after.contains('*') => {
            p_label.len() <= label.len() + 1 && label.starts_with(before) && label.ends_with(after)
        }
        _ => false,
    }
}

/// The SANs of a certificate as Envoy formats them for matching: DNS names, URIs and e-mail
/// addresses as written, IP addresses in their textual form (IPv6 compressed, `2001:db8::1`).
fn subject_alt_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<(SanType, String)> {
    use x509_parser::extensions::GeneralName;
    let mut out = Vec::new();
    let Ok(Some(san)) = cert.subject_alternative_name() else { return out };
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(d) => out.push((SanType::Dns, (*d).to_string())),
            GeneralName::URI(u) => out.push((SanType::Uri, (*u).to_string())),
            GeneralName::RFC822Name(e) => out.push((SanType::Email, (*e).to_string())),
            GeneralName::IPAddress(ip) => {
                let addr = match ip.len() {
                    4 => <[u8; 4]>::try_from(*ip).ok().map(|a| std::net::IpAddr::from(a).to_string()),
                    16 => <[u8; 16]>::try_from(*ip).ok().map(|a| std::net::IpAddr::from(a).to_string()),
                    _ => None,
                };
                out.extend(addr.map(|a| (SanType::IpAddress, a)));
            }
            _ => {}
        }
    }
    out
}

/// Whether the end-entity certificate has a SAN one of `sans` accepts (any, when there are none).
fn sans_match(end_entity: &CertificateDer<'_>, sans: &[SanMatcher]) -> Result<(), Error> {
    use x509_parser::prelude::FromDer;
    if sans.is_empty() {
        return Ok(());
    }
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(end_entity.as_ref())
        .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
    let names = subject_alt_names(&cert);
    if sans.iter().any(|m| names.iter().any(|(t, v)| m.matches(*t, v))) {
        Ok(())
    } else {
        Err(Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))
    }
}

/// An upstream's certificate: the chain when `trusted_ca` is set (Envoy accepts any certificate
/// without it), then the SAN matchers.
#[derive(Debug)]
pub struct ServerVerifier {
    chain: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
    sans: Vec<SanMatcher>,
}

impl ServerVerifier {
    pub fn new(
        roots: Option<rustls::RootCertStore>,
        provider: Arc<CryptoProvider>,
        sans: Vec<SanMatcher>,
    ) -> Result<Self, rustls::client::VerifierBuilderError> {
        let chain = match roots {
            Some(r) => Some(
                rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(r), provider.clone())
                    .build()?,
            ),
            None => None,
        };
        Ok(ServerVerifier { chain, provider, sans })
    }
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if let Some(chain) = &self.chain {
            match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
                Ok(_) => {}
                // webpki checks the name after the chain: a name error means the chain is good.
                Err(Error::InvalidCertificate(
                    CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
                )) => {}
                Err(e) => return Err(e),
            }
        }
        sans_match(end_entity, &self.sans)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A client's certificate on a listener with `trusted_ca`: asked for always, required when
/// `require_client_certificate` says so, checked against the chain and the SAN matchers.
#[derive(Debug)]
pub struct VerifiedClients {
    inner: Arc<dyn ClientCertVerifier>,
    sans: Vec<SanMatcher>,
}

impl VerifiedClients {
    pub fn new(
        roots: rustls::RootCertStore,
        provider: Arc<CryptoProvider>,
        required: bool,
        sans: Vec<SanMatcher>,
    ) -> Result<Self, rustls::server::VerifierBuilderError> {
        let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let inner = if required { builder.build()? } else { builder.allow_unauthenticated().build()? };
        Ok(VerifiedClients { inner, sans })
    }
}

impl ClientCertVerifier for VerifiedClients {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        sans_match(end_entity, &self.sans)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::dns_name_match;

    #[test]
    fn dns_names_match_wildcard_sans_as_envoys_dns_name_match() {
        assert!(dns_name_match("A.Example.com", "a.example.COM"));
        assert!(dns_name_match("a.example.com", "*.example.com"));
        assert!(!dns_name_match("a.b.example.com", "*.example.com"));
        assert!(!dns_name_match("example.com", "*.example.com"));
        assert!(dns_name_match("web1.example.com", "web*.example.com"));
        assert!(dns_name_match("web.example.com", "web*.example.com"));
        assert!(!dns_name_match("x.example.com", "web*.example.com"));
        assert!(dns_name_match("xn-1.example.com", "xn-*.example.com"));
        assert!(!dns_name_match("xn--1.example.com", "xn--*.example.com"));
        assert!(!dns_name_match("a.example.com", "*.*.com"));
        assert!(!dns_name_match("a.example.com", "**.example.com"));
    }
}
