//! Bytes skiff writes itself: local replies (errors, direct responses, redirects), header lines and
//! generated request ids. Appends to a connection's reusable output buffer; never allocates.

use crate::cluster::Rng;

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

pub fn header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

pub fn status_line(out: &mut Vec<u8>, status: u16) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
}

pub fn push_u64(out: &mut Vec<u8>, n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    let mut n = n;
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

/// A complete local reply. `extra` headers come before the body (e.g. `location`).
pub fn local(out: &mut Vec<u8>, status: u16, body: &[u8], server: &str, close: bool, extra: &[(&str, &str)]) {
    status_line(out, status);
    for (name, value) in extra {
        header(out, name.as_bytes(), value.as_bytes());
    }
    header(out, b"server", server.as_bytes());
    if !body.is_empty() {
        header(out, b"content-type", b"text/plain");
    }
    out.extend_from_slice(b"content-length: ");
    push_u64(out, body.len() as u64);
    out.extend_from_slice(b"\r\n");
    if close {
        header(out, b"connection", b"close");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// A random (v4) UUID, as Envoy generates for `x-request-id`.
pub fn request_id(rng: &Rng, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hi = (rng.next() & 0xffff_ffff_ffff_0fff) | 0x4000;
    let lo = (rng.next() & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    // Two stack arrays chained rather than concatenated: this runs per request, so no allocation.
    for (i, b) in hi.to_be_bytes().iter().chain(lo.to_be_bytes().iter()).enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push(b'-');
        }
        out.push(HEX[(b >> 4) as usize]);
        out.push(HEX[(b & 15) as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_version_4_uuids() {
        let rng = Rng::seeded(42);
        let mut out = Vec::new();
        request_id(&rng, &mut out);
        let s = String::from_utf8(out).unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "{s}");
    }

    #[test]
    fn local_reply_is_a_complete_response() {
        let mut out = Vec::new();
        local(&mut out, 503, b"no healthy upstream", "envoy", false, &[]);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(s.contains("content-length: 19\r\n"));
        assert!(s.ends_with("\r\n\r\nno healthy upstream"));
    }
}
