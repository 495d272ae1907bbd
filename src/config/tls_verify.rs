//! How skiff checks a peer's certificate as Envoy's TLS context does: the chain against
//! `trusted_ca` (webpki), then `match_typed_subject_alt_names`, never the SNI against the
//! certificate (Envoy checks names only through SAN matchers). A SAN mismatch is reported as
//! `CertificateError::ApplicationVerificationFailure`, which the shard counts as
//! `ssl.fail_verify_san`. Built once at load by `tls`; holds no connection state.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::sync::Arc;

/// An exact SAN (a DNS name, wildcard certificates matching as Envoy's DNS matcher does, or an IP).
#[derive(Debug, Clone, PartialEq)]
pub struct SanMatcher(pub ServerName<'static>);

/// Whether the end-entity certificate has a SAN one of `sans` accepts (any, when there are none).
fn sans_match(end_entity: &CertificateDer<'_>, sans: &[SanMatcher]) -> Result<(), Error> {
    if sans.is_empty() {
        return Ok(());
    }
    let cert = webpki::EndEntityCert::try_from(end_entity)
        .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
    if sans.iter().any(|m| cert.verify_is_valid_for_subject_name(&m.0).is_ok()) {
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
