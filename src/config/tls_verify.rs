//! How skiff checks a peer's certificate as Envoy's TLS context does: the chain against
//! `trusted_ca` (webpki, with `crl`), then `match_typed_subject_alt_names` (every `StringMatcher` kind on
//! DNS, URI, EMAIL and IP_ADDRESS names), never the SNI against the
//! certificate (Envoy checks names only through SAN matchers). A SAN mismatch is reported as
//! `CertificateError::ApplicationVerificationFailure`, which the shard counts as
//! `ssl.fail_verify_san`; then `verify_certificate_hash` / `verify_certificate_spki` (`PinMismatch`,
//! `ssl.fail_verify_cert_hash`). Built once at load by `tls`; holds no connection state.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};
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

/// A certificate that matched none of `verify_certificate_hash` and `verify_certificate_spki`;
/// carried in `CertificateError::Other` so the shard counts `ssl.fail_verify_cert_hash`.
#[derive(Debug)]
pub struct PinMismatch;

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the certificate matches no verify_certificate_hash or verify_certificate_spki")
    }
}

impl std::error::Error for PinMismatch {}

/// What a validation context checks on the end-entity certificate after its chain, in Envoy's
/// order: the SAN matchers (when any), then the pins (when any), where one matching hash of
/// either list passes. Both must pass.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PeerChecks {
    pub sans: Vec<SanMatcher>,
    /// `verify_certificate_hash`: SHA-256 of the certificate's DER.
    pub cert_hashes: Vec<[u8; 32]>,
    /// `verify_certificate_spki`: SHA-256 of its DER SubjectPublicKeyInfo.
    pub spki_hashes: Vec<[u8; 32]>,
    /// `crl`: checked with the chain (so only with `trusted_ca`). As in Envoy (BoringSSL's
    /// CRL_CHECK_ALL), every certificate of the chain below the trust anchor needs its issuer's
    /// CRL, and one whose status is unknown is refused.
    pub crls: Vec<CertificateRevocationListDer<'static>>,
    /// `only_verify_leaf_cert_crl`: only the end-entity certificate is looked up.
    pub crl_leaf_only: bool,
}

impl PeerChecks {
    pub fn is_empty(&self) -> bool {
        self.sans.is_empty() && !self.pinned()
    }

    fn pinned(&self) -> bool {
        !self.cert_hashes.is_empty() || !self.spki_hashes.is_empty()
    }

    /// These checks and `other`'s, as one context applies them.
    pub fn merged(&self, other: &PeerChecks) -> PeerChecks {
        let join = |a: &[[u8; 32]], b: &[[u8; 32]]| a.iter().chain(b).copied().collect();
        PeerChecks {
            sans: self.sans.iter().chain(&other.sans).cloned().collect(),
            cert_hashes: join(&self.cert_hashes, &other.cert_hashes),
            spki_hashes: join(&self.spki_hashes, &other.spki_hashes),
            crls: self.crls.iter().chain(&other.crls).cloned().collect(),
            crl_leaf_only: self.crl_leaf_only || other.crl_leaf_only,
        }
    }

    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), Error> {
        use x509_parser::prelude::FromDer;
        if self.is_empty() {
            return Ok(());
        }
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(end_entity.as_ref())
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if !self.sans.is_empty() {
            let names = subject_alt_names(&cert);
            if !self.sans.iter().any(|m| names.iter().any(|(t, v)| m.matches(*t, v))) {
                return Err(Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure));
            }
        }
        if self.pinned() {
            let sha256 = |b: &[u8]| ring::digest::digest(&ring::digest::SHA256, b);
            let cert_hash = sha256(end_entity.as_ref());
            let spki_hash = sha256(cert.tbs_certificate.subject_pki.raw);
            let hit = self.cert_hashes.iter().any(|h| h[..] == *cert_hash.as_ref())
                || self.spki_hashes.iter().any(|h| h[..] == *spki_hash.as_ref());
            if !hit {
                let mismatch = rustls::OtherError(Arc::new(PinMismatch));
                return Err(Error::InvalidCertificate(CertificateError::Other(mismatch)));
            }
        }
        Ok(())
    }
}

/// The handshake-signature checks of a verifier with a `provider` field: its algorithms.
macro_rules! signatures_by_provider {
    () => {
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
    };
}

/// An upstream's certificate: the chain when `trusted_ca` is set (Envoy accepts any certificate
/// without it), then the SAN matchers and the pins.
#[derive(Debug)]
pub struct ServerVerifier {
    chain: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
    checks: PeerChecks,
}

impl ServerVerifier {
    pub fn new(
        roots: Option<rustls::RootCertStore>,
        provider: Arc<CryptoProvider>,
        checks: PeerChecks,
    ) -> Result<Self, rustls::client::VerifierBuilderError> {
        let chain = match roots {
            Some(r) => {
                let builder = rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(r),
                    provider.clone(),
                )
                .with_crls(checks.crls.iter().cloned())
                // BoringSSL refuses a CRL past its nextUpdate.
                .enforce_revocation_expiration();
                Some(
                    if checks.crl_leaf_only { builder.only_check_end_entity_revocation() } else { builder }
                        .build()?,
                )
            }
            None => None,
        };
        Ok(ServerVerifier { chain, provider, checks })
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
        self.checks.check(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    signatures_by_provider!();
}

/// A client's certificate on a listener with `trusted_ca` or pins: asked for always, required
/// when `require_client_certificate` says so, checked against the chain (with `trusted_ca`; with
/// pins alone Envoy checks no chain) and then the SAN matchers and the pins.
#[derive(Debug)]
pub struct VerifiedClients {
    chain: Option<Arc<dyn ClientCertVerifier>>,
    provider: Arc<CryptoProvider>,
    required: bool,
    checks: PeerChecks,
}

impl VerifiedClients {
    pub fn new(
        roots: Option<rustls::RootCertStore>,
        provider: Arc<CryptoProvider>,
        required: bool,
        checks: PeerChecks,
    ) -> Result<Self, rustls::server::VerifierBuilderError> {
        let chain = match roots {
            Some(r) => {
                let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(r),
                    provider.clone(),
                )
                .with_crls(checks.crls.iter().cloned())
                // BoringSSL refuses a CRL past its nextUpdate.
                .enforce_revocation_expiration();
                let builder =
                    if checks.crl_leaf_only { builder.only_check_end_entity_revocation() } else { builder };
                Some(if required { builder.build()? } else { builder.allow_unauthenticated().build()? })
            }
            None => None,
        };
        Ok(VerifiedClients { chain, provider, required, checks })
    }
}

impl ClientCertVerifier for VerifiedClients {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.required
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.as_ref().map_or(&[], |c| c.root_hint_subjects())
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        if let Some(chain) = &self.chain {
            chain.verify_client_cert(end_entity, intermediates, now)?;
        }
        self.checks.check(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    signatures_by_provider!();
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
