//! Who is at the other end of a downstream connection, as the request path and its filters ask:
//! the addresses (`Connection`), and for a TLS connection the SNI it asked for and the identity of
//! the certificate it presented (`TlsPeer`), read once when the handshake ends. A plaintext
//! connection has no `TlsPeer` and pays nothing for it. Owns no socket and no TLS state: the shard's
//! TLS bridge builds the `TlsPeer`, filters (RBAC, and client-certificate forwarding) read it.

use rustls_pki_types::CertificateDer;
use std::net::SocketAddr;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// A downstream connection's facts, borrowed for one request.
#[derive(Debug, Clone, Copy)]
pub struct Connection<'a> {
    /// The peer of the socket (Envoy's `directRemoteAddress`).
    pub remote: SocketAddr,
    /// The address the connection was accepted on.
    pub local: SocketAddr,
    pub tls: Option<&'a TlsPeer>,
}

/// A TLS connection's peer, as the handshake left it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TlsPeer {
    /// The server name the client asked for (SNI); None when it sent none.
    pub sni: Option<String>,
    /// The client's certificate (None: it presented none).
    pub cert: Option<PeerCert>,
}

/// The identity of a peer certificate: what Envoy's `Ssl::ConnectionInfo` gives its filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    pub uri_sans: Vec<String>,
    pub dns_sans: Vec<String>,
    /// The subject as RFC 2253 writes it (OpenSSL's `XN_FLAG_RFC2253`, Envoy's form):
    /// `CN=client,O=example`, last RDN first.
    pub subject: String,
    /// The chain as presented, end-entity first (DER), for the certificate digest and PEM that
    /// `x-forwarded-client-cert` carries.
    pub chain: Vec<CertificateDer<'static>>,
}

impl TlsPeer {
    /// From the handshake's SNI and the peer's chain (end-entity first). A certificate that does
    /// not parse as X.509 has no names (the handshake's verifier has accepted it, or none was
    /// asked for).
    pub fn new(sni: Option<&str>, chain: Option<&[CertificateDer<'_>]>) -> Self {
        let cert = chain.filter(|c| !c.is_empty()).map(PeerCert::from_chain);
        TlsPeer { sni: sni.map(str::to_owned), cert }
    }
}

impl PeerCert {
    fn from_chain(chain: &[CertificateDer<'_>]) -> Self {
        let mut out = PeerCert {
            uri_sans: Vec::new(),
            dns_sans: Vec::new(),
            subject: String::new(),
            chain: chain.iter().map(|c| c.clone().into_owned()).collect(),
        };
        let Some(Ok((_, cert))) = chain.first().map(|c| X509Certificate::from_der(c.as_ref())) else {
            return out;
        };
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(u) => out.uri_sans.push((*u).to_string()),
                    GeneralName::DNSName(d) => out.dns_sans.push((*d).to_string()),
                    _ => {}
                }
            }
        }
        out.subject = rfc2253(&cert);
        out
    }
}

/// The subject in RFC 2253 form: RDNs last first, joined by `,`, multi-valued ones by `+`.
fn rfc2253(cert: &X509Certificate<'_>) -> String {
    let mut out = String::new();
    let rdns: Vec<_> = cert.subject().iter_rdn().collect();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, atv) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = atv.attr_type().to_id_string();
            out.push_str(short_name(&oid).unwrap_or(&oid));
            out.push('=');
            match atv.as_str() {
                Ok(v) => escape(v, &mut out),
                // Not a string type: OpenSSL dumps the DER as `#` and hex.
                Err(_) => {
                    out.push('#');
                    for b in atv.attr_value().data.iter() {
                        out.push_str(&format!("{b:02X}"));
                    }
                }
            }
        }
    }
    out
}

/// OpenSSL's short names for the attributes subjects use.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.5" => "serialNumber",
        "2.5.4.12" => "title",
        "2.5.4.42" => "GN",
        "2.5.4.4" => "SN",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        "1.2.840.113549.1.9.1" => "emailAddress",
        _ => return None,
    })
}

/// RFC 2253 escaping: `,+"\<>;` anywhere, `#` or a space first, a space last.
fn escape(v: &str, out: &mut String) {
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2253_escapes_what_the_rfc_names() {
        let mut s = String::new();
        escape(" a,b+c ", &mut s);
        assert_eq!(s, "\\ a\\,b\\+c\\ ");
    }

    #[test]
    fn a_chain_that_is_not_x509_has_no_names_but_is_kept() {
        let junk = CertificateDer::from(vec![1u8, 2, 3]);
        let peer = TlsPeer::new(Some("a.example"), Some(&[junk]));
        let cert = peer.cert.unwrap_or_else(|| panic!("a certificate"));
        assert!(cert.uri_sans.is_empty() && cert.dns_sans.is_empty() && cert.subject.is_empty());
        assert_eq!(cert.chain.len(), 1);
        assert_eq!(peer.sni.as_deref(), Some("a.example"));
    }
}
