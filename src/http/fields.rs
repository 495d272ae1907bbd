//! Checks shared by request and response heads: the raw-byte scan httparse is too lenient for, and
//! the header fields that decide framing and connection reuse.

use super::message::{HeadError, RequestHead, ResponseHead};

const fn tchar_map() -> [bool; 256] {
    let mut map = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        map[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    map
}

static TCHAR: [bool; 256] = tchar_map();

/// RFC 9110 `tchar`: what header names, methods and transfer codings are made of.
#[inline]
pub(super) fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// Control bytes that may not appear in a field (HTAB is fine, CR and LF are line structure).
#[inline]
pub(super) fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// One pass over a complete head. httparse accepts a bare LF as a line end (and a bare LF line as
/// the end of the head), which lets a request mean different things to us and to a lenient or a
/// strict upstream; control bytes are refused for the same reason. Bytes >= 0x80 (obs-text) pass.
pub(super) fn scan_head(head: &[u8]) -> Result<(), HeadError> {
    for (i, &b) in head.iter().enumerate() {
        // One compare in the common case; the line-structure checks only run on control bytes.
        if b >= 0x20 && b != 0x7f {
            continue;
        }
        match b {
            b'\t' => {}
            b'\n' => {
                let prev = i.checked_sub(1).and_then(|p| head.get(p));
                if prev != Some(&b'\r') {
                    return Err(HeadError::Malformed("bare LF in head"));
                }
            }
            b'\r' => {
                if head.get(i + 1) != Some(&b'\n') {
                    return Err(HeadError::Malformed("bare CR in head"));
                }
            }
            _ => return Err(HeadError::Malformed("control byte in head")),
        }
    }
    Ok(())
}

/// httparse reports obs-fold, "Name :" and ":value" all as a bad header name; say which, since that
/// is what an operator reading the log wants to know. Only runs on the error path.
pub(super) fn header_name_error(buf: &[u8]) -> HeadError {
    // The first line is the start line; httparse got past it or the error would be another one.
    for line in buf.split(|&b| b == b'\n').skip(1) {
        let name_len = line.iter().position(|&b| !is_tchar(b)).unwrap_or(line.len());
        match (name_len, line.get(name_len)) {
            (0, Some(b' ' | b'\t')) => return HeadError::Malformed("obs-fold in header"),
            (0, Some(b':')) => return HeadError::Malformed("empty header name"),
            (_, Some(b' ' | b'\t')) => return HeadError::Malformed("whitespace before colon in header"),
            (_, Some(b':' | b'\r') | None) => {}
            _ => break,
        }
    }
    HeadError::Malformed("invalid header name")
}

pub(super) fn map_httparse_error(err: httparse::Error, buf: &[u8]) -> HeadError {
    match err {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        httparse::Error::HeaderName => header_name_error(buf),
        httparse::Error::HeaderValue => HeadError::Malformed("invalid header value"),
        httparse::Error::NewLine => HeadError::Malformed("invalid line ending"),
        httparse::Error::Status => HeadError::Malformed("invalid status line"),
        httparse::Error::Token => HeadError::Malformed("invalid method or target"),
        httparse::Error::Version => HeadError::Malformed("unsupported HTTP version"),
    }
}

/// Strips optional whitespace; httparse already trims values, this keeps list elements honest.
#[inline]
pub(super) fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// The comma-separated elements of a list-valued field, each trimmed (empty elements included, so
/// callers can decide whether `a,,b` is acceptable).
#[inline]
pub(super) fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows)
}

/// Digits only: a sign, inner whitespace or anything a lenient `parse::<u64>()` would take is a way
/// to make two hops disagree about where the body ends.
pub(super) fn parse_decimal(v: &[u8]) -> Result<u64, HeadError> {
    if v.is_empty() {
        return Err(HeadError::Malformed("empty Content-Length"));
    }
    let mut n: u64 = 0;
    for &b in v {
        if !b.is_ascii_digit() {
            return Err(HeadError::Malformed("invalid Content-Length"));
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or(HeadError::Malformed("Content-Length overflows"))?;
    }
    Ok(n)
}

/// Header names that matter for framing, resolved once per header; dispatching on length first keeps
/// the common case (some other header) to a single compare.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Known {
    Host,
    Expect,
    Connection,
    ContentLength,
    TransferEncoding,
    Other,
}

#[inline]
pub(super) fn classify(name: &str) -> Known {
    let is = |lower: &str| name.eq_ignore_ascii_case(lower);
    match name.len() {
        4 if is("host") => Known::Host,
        6 if is("expect") => Known::Expect,
        10 if is("connection") => Known::Connection,
        14 if is("content-length") => Known::ContentLength,
        17 if is("transfer-encoding") => Known::TransferEncoding,
        _ => Known::Other,
    }
}

/// What the Transfer-Encoding headers of one message add up to. Each parser judges the result:
/// requests and responses differ in what they tolerate.
#[derive(Default)]
pub(super) struct TransferCodings {
    pub present: bool,
    /// Elements seen, empty ones included, over all Transfer-Encoding headers.
    pub count: u32,
    pub chunked_count: u32,
    pub last_is_chunked: bool,
    /// An empty element ("chunked," or ", chunked") leaves the final coding up to each hop's
    /// reading of the list.
    pub has_empty: bool,
}

impl TransferCodings {
    /// Folds in one Transfer-Encoding header; repeated headers form one list, in order.
    pub fn add(&mut self, value: &[u8]) {
        self.present = true;
        for coding in list_elements(value) {
            self.count = self.count.saturating_add(1);
            self.has_empty |= coding.is_empty();
            let chunked = coding.eq_ignore_ascii_case(b"chunked");
            if chunked {
                self.chunked_count = self.chunked_count.saturating_add(1);
            }
            self.last_is_chunked = chunked;
        }
    }

    /// Exactly one `chunked` and nothing else: the only request framing Envoy (and skiff) decodes.
    pub fn is_just_chunked(&self) -> bool {
        self.count == 1 && self.last_is_chunked
    }
}

/// Connection tokens this codec acts on.
#[derive(Default, Clone, Copy)]
pub(super) struct ConnectionOptions {
    pub close: bool,
    pub keep_alive: bool,
}

impl ConnectionOptions {
    pub fn add(&mut self, value: &[u8]) {
        for token in list_elements(value) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            }
        }
    }
}

/// Shared body of `RequestHead::connection_lists` and `ResponseHead::connection_lists`.
pub(super) fn connection_lists(headers: &[httparse::Header<'_>], name: &str) -> bool {
    // RFC 9110 §7.6.1: a sender must not nominate fields meant for every recipient. Envoy drops a
    // nominated Content-Length but re-frames the body as chunked; skiff forwards the body as it
    // came, so the framing that came with it must stay.
    if matches!(classify(name), Known::ContentLength | Known::TransferEncoding | Known::Host) {
        return false;
    }
    let name = name.as_bytes();
    headers
        .iter()
        .filter(|h| classify(h.name) == Known::Connection)
        .any(|h| list_elements(h.value).any(|t| t.eq_ignore_ascii_case(name)))
}

impl RequestHead<'_> {
    /// Whether `name` (any case) is listed in a Connection header, i.e. hop-by-hop for this message.
    /// Never true for the framing fields (Content-Length, Transfer-Encoding) nor Host: dropping
    /// those while forwarding the body as received would let the next hop frame it differently.
    pub fn connection_lists(&self, name: &str) -> bool {
        connection_lists(self.headers, name)
    }
}

impl ResponseHead<'_> {
    /// Whether `name` (any case) is listed in a Connection header; never true for the framing
    /// fields nor Host (see `RequestHead::connection_lists`).
    pub fn connection_lists(&self, name: &str) -> bool {
        connection_lists(self.headers, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_lines_pass_the_scan() {
        assert_eq!(scan_head(b"GET / HTTP/1.1\r\nA: b\tc\r\n\r\n"), Ok(()));
    }

    #[test]
    fn bare_lf_and_bare_cr_fail_the_scan() {
        assert!(scan_head(b"GET / HTTP/1.1\nA: b\r\n\r\n").is_err());
        assert!(scan_head(b"\nGET / HTTP/1.1\r\n\r\n").is_err());
        assert!(scan_head(b"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n").is_err());
        assert!(scan_head(b"GET / HTTP/1.1\r\n\r").is_err());
    }

    #[test]
    fn control_bytes_fail_the_scan_but_obs_text_passes() {
        assert!(scan_head(b"A: \x00\r\n").is_err());
        assert!(scan_head(b"A: \x7f\r\n").is_err());
        assert!(scan_head(b"A: \x1b\r\n").is_err());
        assert_eq!(scan_head(b"A: caf\xc3\xa9\r\n"), Ok(()));
    }

    #[test]
    fn decimal_accepts_only_plain_digits() {
        assert_eq!(parse_decimal(b"0"), Ok(0));
        assert_eq!(parse_decimal(b"0012"), Ok(12));
        assert_eq!(parse_decimal(b"18446744073709551615"), Ok(u64::MAX));
        for bad in [&b""[..], b"+1", b"-1", b"1 2", b"0x10", b"1,1", b"18446744073709551616", b"1e3"] {
            assert!(parse_decimal(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn list_elements_are_trimmed() {
        let v: Vec<&[u8]> = list_elements(b" a ,\tb,,c ").collect();
        assert_eq!(v, [&b"a"[..], b"b", b"", b"c"]);
    }

    #[test]
    fn known_headers_are_case_insensitive() {
        assert!(classify("HOST") == Known::Host);
        assert!(classify("content-LENGTH") == Known::ContentLength);
        assert!(classify("Transfer-Encoding") == Known::TransferEncoding);
        assert!(classify("Content-Lengths") == Known::Other);
        assert!(classify("hosts") == Known::Other);
    }
}
