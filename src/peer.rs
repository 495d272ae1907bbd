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
    /// The URI SANs of the certificate this side served (`By=` in `x-forwarded-client-cert`).
    pub local_uri_sans: Vec<String>,
}

/// The names in one certificate.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CertNames {
    pub uri_sans: Vec<String>,
    pub dns_sans: Vec<String>,
    /// RFC 2253 (see `PeerCert::subject`); empty when the certificate does not parse.
    pub subject: String,
}

impl CertNames {
    /// The names of a DER certificate; none when it does not parse as X.509.
    pub fn of(der: &CertificateDer<'_>) -> Self {
        let mut out = CertNames::default();
        let Ok((_, cert)) = X509Certificate::from_der(der.as_ref()) else { return out };
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
    pub fn new(sni: Option<&str>, chain: Option<&[CertificateDer<'_>]>, local_uri_sans: Vec<String>) -> Self {
        let cert = chain.filter(|c| !c.is_empty()).map(PeerCert::from_chain);
        TlsPeer { sni: sni.map(str::to_owned), cert, local_uri_sans }
    }
}

impl PeerCert {
    fn from_chain(chain: &[CertificateDer<'_>]) -> Self {
        let names = chain.first().map(CertNames::of).unwrap_or_default();
        PeerCert {
            uri_sans: names.uri_sans,
            dns_sans: names.dns_sans,
            subject: names.subject,
            chain: chain.iter().map(|c| c.clone().into_owned()).collect(),
        }
    }
}

impl PeerCert {
    /// Lower-case hex SHA-256 of the end-entity certificate's DER (Envoy's `Hash=`).
    pub fn sha256_hex(&self) -> String {
        let Some(leaf) = self.chain.first() else { return String::new() };
        let digest = ring::digest::digest(&ring::digest::SHA256, leaf.as_ref());
        digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The end-entity certificate as PEM (64-column base64) with `\n`, ` `, `+`, `/` and `=`
    /// percent-encoded, exactly Envoy's `Cert=` value.
    pub fn url_encoded_pem(&self) -> String {
        let Some(leaf) = self.chain.first() else { return String::new() };
        let b64 = base64(leaf.as_ref());
        let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap_or(""));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
        let mut out = String::with_capacity(pem.len() + pem.len() / 8);
        for c in pem.chars() {
            match c {
                '\n' => out.push_str("%0A"),
                ' ' => out.push_str("%20"),
                '+' => out.push_str("%2B"),
                '/' => out.push_str("%2F"),
                '=' => out.push_str("%3D"),
                c => out.push(c),
            }
        }
        out
    }
}

/// Standard base64 with padding (RFC 4648 §4).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for group in data.chunks(3) {
        let b = [group[0], group.get(1).copied().unwrap_or(0), group.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
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
    fn base64_pads_as_rfc_4648_says() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn rfc2253_escapes_what_the_rfc_names() {
        let mut s = String::new();
        escape(" a,b+c ", &mut s);
        assert_eq!(s, "\\ a\\,b\\+c\\ ");
    }

    #[test]
    fn a_chain_that_is_not_x509_has_no_names_but_is_kept() {
        let junk = CertificateDer::from(vec![1u8, 2, 3]);
        let peer = TlsPeer::new(Some("a.example"), Some(&[junk]), Vec::new());
        let cert = peer.cert.unwrap_or_else(|| panic!("a certificate"));
        assert!(cert.uri_sans.is_empty() && cert.dns_sans.is_empty() && cert.subject.is_empty());
        assert_eq!(cert.chain.len(), 1);
        assert_eq!(peer.sni.as_deref(), Some("a.example"));
    }
}
