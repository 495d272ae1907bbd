//! `/certs`: every TLS context of the running config (listener filter chains, then clusters, in
//! config order) with its CA and served certificates as Envoy's admin prints them (path, serial,
//! SANs, validity). Reads the snapshot's built contexts; never a key, never a socket.

use crate::config::model::Bootstrap;
use crate::config::tls::{ContextCerts, SourcedCert};
use serde_json::{json, Value};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The `/certs` body at `now` (seconds since the epoch).
pub fn render(b: &Bootstrap, now: i64) -> Value {
    let contexts: Vec<Value> = b.tls_certs().map(|c| context(c, now)).collect();
    json!({ "certificates": contexts })
}

fn context(c: &ContextCerts, now: i64) -> Value {
    let (ca, chain) = c.current();
    let ca: Vec<Value> = ca.iter().filter_map(|s| details(s, now)).collect();
    let chain: Vec<Value> = chain.iter().filter_map(|s| details(s, now)).collect();
    json!({ "ca_cert": ca, "cert_chain": chain })
}

/// One certificate's `CertificateDetails`; None when it does not parse as X.509 (it was loaded,
/// so rustls took it, but there is nothing to report of it).
fn details(s: &SourcedCert, now: i64) -> Option<Value> {
    let (_, cert) = X509Certificate::from_der(s.der.as_ref()).ok()?;
    let mut sans = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            // Envoy lists these three kinds and no other (an e-mail SAN is left out).
            match name {
                GeneralName::DNSName(d) => sans.push(json!({ "dns": d })),
                GeneralName::URI(u) => sans.push(json!({ "uri": u })),
                GeneralName::IPAddress(ip) => {
                    if let Some(ip) = ip_text(ip) {
                        sans.push(json!({ "ip_address": ip }));
                    }
                }
                _ => {}
            }
        }
    }
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    Some(json!({
        "path": s.path,
        "serial_number": serial(cert.raw_serial()),
        "subject_alt_names": sans,
        // Whole days left (a proto uint64, a JSON string); 0 once expired.
        "days_until_expiration": ((not_after - now).max(0) / 86_400).to_string(),
        "valid_from": utc(not_before),
        "expiration_time": utc(not_after),
    }))
}

/// BoringSSL's `BN_bn2hex` of the serial, lowercased as Envoy prints it: whole bytes, leading zero
/// bytes dropped (the DER sign byte among them).
fn serial(raw: &[u8]) -> String {
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    let hex: String = raw[start..].iter().map(|b| format!("{b:02x}")).collect();
    if hex.is_empty() {
        "0".to_string()
    } else {
        hex
    }
}

fn ip_text(raw: &[u8]) -> Option<String> {
    match raw.len() {
        4 => <[u8; 4]>::try_from(raw).ok().map(|a| std::net::Ipv4Addr::from(a).to_string()),
        16 => <[u8; 16]>::try_from(raw).ok().map(|a| std::net::Ipv6Addr::from(a).to_string()),
        _ => None,
    }
}

/// `2026-12-03T01:56:03Z`, as Envoy's `/certs` prints a time.
fn utc(secs: i64) -> String {
    let (y, m, d) = crate::access_log::time::civil_from_days(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", t / 3600, t / 60 % 60, t % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_print_as_boringssl_does() {
        assert_eq!(serial(&[0x00, 0x8f, 0x01]), "8f01");
        assert_eq!(serial(&[0x01]), "01");
        assert_eq!(serial(&[0x00]), "0");
    }

    #[test]
    fn times_print_in_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_795_744_563), "2026-11-27T01:56:03Z");
    }
}
