//! Request heads: httparse does the tokenizing, this file applies the framing and anti-smuggling
//! rules (RFC 9112 §6, plus the stricter choices a proxy in front of unknown upstreams needs).

use super::fields::{self, ConnectionOptions, Known, TransferCodings};
use super::message::{BodyKind, HeadError, RequestHead, Version, MAX_HEADERS};

pub(super) fn parse<'b>(
    buf: &'b [u8],
    headers: &'b mut [httparse::Header<'b>],
    max_head_len: usize,
) -> Result<Option<RequestHead<'b>>, HeadError> {
    // Parsing only the first max_head_len bytes bounds the work per read and turns "still
    // incomplete at the limit" into TooLarge without a second check.
    let window = buf.get(..max_head_len).unwrap_or(buf);
    let limit = headers.len().min(MAX_HEADERS);
    let headers = headers.get_mut(..limit).unwrap_or_default();
    let mut req = httparse::Request::new(headers);
    let head_len = match req.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if window.len() >= max_head_len => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(fields::map_httparse_error(e, window)),
    };
    let httparse::Request { method, path: target, version, headers } = req;
    let (Some(method), Some(target), Some(version)) = (method, target, version) else {
        // httparse fills all three before reporting a complete head.
        return Err(HeadError::Malformed("incomplete request line"));
    };
    let headers: &'b [httparse::Header<'b>] = headers;

    fields::scan_head(window.get(..head_len).unwrap_or(window))?;

    let version = match version {
        0 => Version::Http10,
        1 => Version::Http11,
        _ => return Err(HeadError::Malformed("unsupported HTTP version")),
    };

    let connect = method == "CONNECT";
    let (path, authority) =
        if connect { (CONNECT_PATH, Some(connect_target(target)?)) } else { split_target(method, target)? };

    let mut content_length: Option<u64> = None;
    let mut te = TransferCodings::default();
    let mut conn = ConnectionOptions::default();
    let mut host_header: Option<&'b [u8]> = None;
    let mut expect_continue = false;
    for h in headers {
        match fields::classify(h.name) {
            Known::Other => {}
            Known::Host => {
                if host_header.is_some() {
                    return Err(HeadError::Malformed("multiple Host headers"));
                }
                host_header = Some(h.value);
            }
            Known::ContentLength => {
                if content_length.is_some() {
                    return Err(HeadError::Malformed("multiple Content-Length headers"));
                }
                if h.value.contains(&b',') {
                    return Err(HeadError::Malformed("Content-Length list"));
                }
                content_length = Some(fields::parse_decimal(fields::trim_ows(h.value))?);
            }
            Known::TransferEncoding => te.add(h.value),
            Known::Connection => {
                // Envoy strips a nominated Host, then answers 400 for the missing authority.
                if fields::list_elements(h.value).any(|t| t.eq_ignore_ascii_case(b"host")) {
                    return Err(HeadError::Malformed("Connection nominates Host"));
                }
                conn.add(h.value)
            }
            Known::Expect => {
                expect_continue |= fields::trim_ows(h.value).eq_ignore_ascii_case(b"100-continue")
            }
        }
    }

    let host_header = match host_header {
        Some(v) => Some(validate_host(v)?),
        // An origin-form HTTP/1.1 request without Host is the connection manager's to refuse (as
        // Envoy's does: its log line has the method and path); an absolute-form one is the codec's.
        None if version == Version::Http11 && authority.is_some() && !connect => {
            return Err(HeadError::Malformed("missing Host header"))
        }
        None => None,
    };

    // A CONNECT's payload is the tunnel, never a body (Envoy's codec: `http1.body_disallowed` for
    // a length, 501 for a coding).
    if connect && content_length.is_some() {
        return Err(HeadError::Malformed("CONNECT with a body"));
    }
    if connect && te.present {
        return Err(HeadError::NotImplemented("transfer coding on CONNECT"));
    }
    let body = if te.present {
        if version == Version::Http10 {
            // An HTTP/1.0 hop does not know chunked; what it sees as the body differs from ours.
            return Err(HeadError::Malformed("Transfer-Encoding on HTTP/1.0"));
        }
        if content_length.is_some() {
            return Err(HeadError::Malformed("both Content-Length and Transfer-Encoding"));
        }
        // Envoy answers 501 to any other list ("gzip, chunked", "identity", "chunked, chunked",
        // "chunked,"): skiff does not decode codings, and passing them on would leave the upstream
        // to guess what we framed.
        if !te.is_just_chunked() {
            return Err(HeadError::NotImplemented("transfer coding other than chunked"));
        }
        BodyKind::Chunked
    } else {
        match content_length {
            Some(n) => BodyKind::Length(n),
            None => BodyKind::None,
        }
    };

    let keep_alive = match version {
        Version::Http11 => !conn.close,
        Version::Http10 => conn.keep_alive && !conn.close,
    };

    Ok(Some(RequestHead {
        method,
        target,
        path,
        version,
        headers,
        head_len,
        body,
        keep_alive,
        // RFC 9110 §10.1.1: an HTTP/1.0 client cannot understand 100 Continue, so its Expect is
        // ignored rather than making it wait for an interim response it will not parse.
        expect_continue: expect_continue && version == Version::Http11,
        // RFC 9112 §3.2.2: an absolute-form authority overrides the Host header.
        host: authority.or(host_header),
    }))
}

/// A CONNECT's path: none (`""`), which no path matcher but `connect_matcher` matches and the
/// access log prints as `-`, as Envoy's request without a `:path`.
pub const CONNECT_PATH: &str = "";

/// A CONNECT's authority-form target (`host:port`, RFC 9110 §9.3.6): Envoy's codec refuses any
/// other form, and a target without a port, as `http1.invalid_url`.
fn connect_target(target: &str) -> Result<&str, HeadError> {
    const INVALID: HeadError = HeadError::Malformed("CONNECT target is not host:port");
    let authority = validate_authority(target).map_err(|_| INVALID)?;
    let port = authority.rsplit_once(':').filter(|(host, port)| {
        !host.is_empty() && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
    });
    if port.is_none() {
        return Err(INVALID);
    }
    Ok(authority)
}

/// Splits a request target into the origin-form path and, for absolute-form, the authority.
fn split_target<'b>(method: &str, target: &'b str) -> Result<(&'b str, Option<&'b str>), HeadError> {
    if target.starts_with('/') {
        return Ok((target, None));
    }
    if target == "*" {
        return if method == "OPTIONS" {
            Ok((target, None))
        } else {
            Err(HeadError::Malformed("asterisk target is only for OPTIONS"))
        };
    }
    let rest = strip_prefix_ignore_case(target, "http://")
        .or_else(|| strip_prefix_ignore_case(target, "https://"))
        .ok_or(HeadError::Malformed("invalid request target"))?;
    let authority_len = rest.bytes().position(|b| matches!(b, b'/' | b'?' | b'#')).unwrap_or(rest.len());
    let (authority, path) = rest.split_at_checked(authority_len).unwrap_or((rest, ""));
    let authority = validate_authority(authority)?;
    let path = match path.as_bytes().first() {
        Some(b'/') => path,
        // RFC 9112 §3.2.1: an empty path is sent as "/".
        None => "/",
        // "http://host?q" would need "/?q", which is not a slice of the buffer; nobody sends it.
        Some(_) => return Err(HeadError::Malformed("absolute-form target without path")),
    };
    Ok((path, Some(authority)))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let (head, rest) = s.split_at_checked(prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then_some(rest)
}

/// `host [":" port]` as reg-name, IPv4 or IP-literal characters. Userinfo ("user@host") is refused:
/// RFC 9110 §4.2.4 says to treat it as an error, and it is a classic way to confuse host routing.
fn validate_authority(a: &str) -> Result<&str, HeadError> {
    if a.is_empty() {
        return Err(HeadError::Malformed("empty authority"));
    }
    if a.contains('@') {
        return Err(HeadError::Malformed("userinfo in authority"));
    }
    let ok = a.bytes().all(|b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'['
                    | b']'
            )
    });
    if ok {
        Ok(a)
    } else {
        Err(HeadError::Malformed("invalid authority"))
    }
}

fn validate_host(v: &[u8]) -> Result<&str, HeadError> {
    let s = std::str::from_utf8(v).map_err(|_| HeadError::Malformed("invalid Host header"))?;
    validate_authority(s).map_err(|e| match e {
        HeadError::Malformed("empty authority") => HeadError::Malformed("empty Host header"),
        _ => HeadError::Malformed("invalid Host header"),
    })
}

#[cfg(test)]
mod tests {
    use crate::http::{parse_request, BodyKind, HeadError, Version, MAX_HEADERS};

    /// What the proxy sees of a request, owned so tests need not juggle the header array.
    #[derive(Debug, PartialEq)]
    struct Seen {
        method: String,
        target: String,
        path: String,
        version: Version,
        host: Option<String>,
        head_len: usize,
        body: BodyKind,
        keep_alive: bool,
        expect_continue: bool,
        headers: Vec<(String, Vec<u8>)>,
    }

    fn parse_with_limit(buf: &[u8], max: usize) -> Result<Option<Seen>, HeadError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        Ok(parse_request(buf, &mut headers, max)?.map(|h| Seen {
            method: h.method.to_owned(),
            target: h.target.to_owned(),
            path: h.path.to_owned(),
            version: h.version,
            host: h.host.map(str::to_owned),
            head_len: h.head_len,
            body: h.body,
            keep_alive: h.keep_alive,
            expect_continue: h.expect_continue,
            headers: h.headers.iter().map(|h| (h.name.to_owned(), h.value.to_vec())).collect(),
        }))
    }

    fn accepted(buf: &[u8]) -> Seen {
        match parse_with_limit(buf, 8192) {
            Ok(Some(seen)) => seen,
            other => panic!("expected a complete request for {:?}, got {other:?}", lossy(buf)),
        }
    }

    fn refused(buf: &[u8]) -> &'static str {
        match parse_with_limit(buf, 8192) {
            Err(HeadError::Malformed(reason)) => reason,
            other => panic!("expected Malformed for {:?}, got {other:?}", lossy(buf)),
        }
    }

    fn lossy(buf: &[u8]) -> String {
        String::from_utf8_lossy(buf).into_owned()
    }

    /// An HTTP/1.1 GET with the given extra header lines.
    fn get_with(extra: &str) -> Vec<u8> {
        format!("GET / HTTP/1.1\r\nHost: example.com\r\n{extra}\r\n").into_bytes()
    }

    fn post_with(extra: &str) -> Vec<u8> {
        format!("POST /upload HTTP/1.1\r\nHost: example.com\r\n{extra}\r\n").into_bytes()
    }

    #[test]
    fn simple_get_yields_method_path_host_and_no_body() {
        let buf = b"GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n";
        let seen = accepted(buf);
        assert_eq!(seen.method, "GET");
        assert_eq!(seen.target, "/index.html?q=1");
        assert_eq!(seen.path, "/index.html?q=1");
        assert_eq!(seen.version, Version::Http11);
        assert_eq!(seen.host.as_deref(), Some("example.com"));
        assert_eq!(seen.head_len, buf.len());
        assert_eq!(seen.body, BodyKind::None);
        assert!(seen.keep_alive);
        assert!(!seen.expect_continue);
        assert_eq!(
            seen.headers,
            [("Host".to_owned(), b"example.com".to_vec()), ("Accept".to_owned(), b"*/*".to_vec())]
        );
    }

    #[test]
    fn header_values_are_trimmed_and_may_carry_tabs_and_obs_text() {
        let seen = accepted(&get_with("X-Note: \t caf\u{e9}\tau lait \t\r\n"));
        assert_eq!(seen.headers[1].1, "caf\u{e9}\tau lait".as_bytes());
    }

    #[test]
    fn pipelined_requests_parse_one_at_a_time() {
        let first = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n".as_slice();
        let second = b"POST /b HTTP/1.1\r\nHost: b\r\nContent-Length: 3\r\n\r\nxyz".as_slice();
        let third = b"GET /c HTTP/1.1\r\nHost: c\r\n\r\n".as_slice();
        let all = [first, second, third].concat();

        let a = accepted(&all);
        assert_eq!((a.path.as_str(), a.head_len), ("/a", first.len()));
        let rest = &all[a.head_len..];
        let b = accepted(rest);
        assert_eq!(b.path, "/b");
        assert_eq!(b.body, BodyKind::Length(3));
        let rest = &rest[b.head_len..];
        assert!(rest.starts_with(b"xyz"));
        let c = accepted(&rest[3..]);
        assert_eq!((c.path.as_str(), c.head_len), ("/c", third.len()));
    }

    #[test]
    fn every_proper_prefix_of_a_head_asks_for_more_bytes() {
        let buf = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n";
        for end in 0..buf.len() {
            assert_eq!(parse_with_limit(&buf[..end], 8192), Ok(None), "prefix {end}");
        }
        assert!(matches!(parse_with_limit(buf, 8192), Ok(Some(_))));
    }

    #[test]
    fn incomplete_head_at_the_limit_is_too_large() {
        let buf = b"GET / HTTP/1.1\r\nHost: h\r\nX-Long: aaaaaaaaaaaaaaaa";
        assert_eq!(parse_with_limit(buf, buf.len()), Err(HeadError::TooLarge));
        assert_eq!(parse_with_limit(buf, buf.len() - 5), Err(HeadError::TooLarge));
        assert_eq!(parse_with_limit(buf, buf.len() + 1), Ok(None));
        assert_eq!(parse_with_limit(b"", 0), Err(HeadError::TooLarge));
    }

    #[test]
    fn complete_head_longer_than_the_limit_is_too_large() {
        let buf = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";
        assert!(matches!(parse_with_limit(buf, buf.len()), Ok(Some(_))));
        assert_eq!(parse_with_limit(buf, buf.len() - 1), Err(HeadError::TooLarge));
        // Body bytes after the head do not count against the limit.
        let with_body = [&buf[..], &[b'x'; 100][..]].concat();
        assert!(matches!(parse_with_limit(&with_body, buf.len()), Ok(Some(_))));
    }

    #[test]
    fn more_than_max_headers_is_refused_with_431() {
        let lines = |n: usize| (1..n).map(|i| format!("X-{i}: v\r\n")).collect::<String>();
        // Host plus MAX_HEADERS - 1 others is exactly the cap.
        let at_cap = get_with(&lines(MAX_HEADERS));
        assert_eq!(accepted(&at_cap).headers.len(), MAX_HEADERS);
        let over = get_with(&lines(MAX_HEADERS + 1));
        let err = parse_with_limit(&over, 1 << 20).unwrap_err();
        assert_eq!(err, HeadError::TooManyHeaders);
        assert_eq!(err.status(), 431);
    }

    #[test]
    fn a_larger_header_array_does_not_raise_the_cap() {
        let lines: String = (1..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let buf = get_with(&lines);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS * 2];
        assert_eq!(parse_request(&buf, &mut headers, 1 << 20).err(), Some(HeadError::TooManyHeaders));
    }

    #[test]
    fn errors_answer_400_or_431() {
        assert_eq!(HeadError::TooLarge.status(), 431);
        assert_eq!(HeadError::TooManyHeaders.status(), 431);
        assert_eq!(HeadError::Malformed("x").status(), 400);
        assert_eq!(HeadError::NotImplemented("x").status(), 501);
    }

    #[test]
    fn bare_lf_line_endings_are_refused() {
        refused(b"GET / HTTP/1.1\nHost: h\r\n\r\n");
        refused(b"GET / HTTP/1.1\r\nHost: h\n\r\n");
        refused(b"GET / HTTP/1.1\r\nHost: h\r\n\n");
        refused(b"GET / HTTP/1.1\nHost: h\n\n");
        refused(b"\nGET / HTTP/1.1\r\nHost: h\r\n\r\n");
    }

    #[test]
    fn bare_cr_is_refused() {
        refused(b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n");
        refused(b"GET / HTTP/1.1\r\rHost: h\r\n\r\n");
    }

    #[test]
    fn one_empty_line_before_the_request_line_is_tolerated() {
        let buf = b"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
        let seen = accepted(buf);
        assert_eq!(seen.head_len, buf.len());
        assert_eq!(seen.path, "/");
    }

    #[test]
    fn obs_fold_is_refused() {
        assert_eq!(refused(&get_with("X-A: one\r\n two\r\n")), "obs-fold in header");
        refused(&get_with("X-A: one\r\n\ttwo\r\n"));
        refused(b"GET / HTTP/1.1\r\n Host: h\r\n\r\n");
    }

    #[test]
    fn control_bytes_in_header_values_are_refused() {
        for ctl in [0x00u8, 0x01, 0x08, 0x0b, 0x0c, 0x1b, 0x1f, 0x7f] {
            let mut buf = get_with("X-A: ab\r\n");
            let at = buf.windows(2).position(|w| w == b"ab").unwrap() + 1;
            buf.insert(at, ctl);
            refused(&buf);
        }
    }

    #[test]
    fn control_bytes_in_header_names_and_request_line_are_refused() {
        refused(b"GET / HTTP/1.1\r\nHost: h\r\nX\x00A: b\r\n\r\n");
        refused(b"GET /\x01 HTTP/1.1\r\nHost: h\r\n\r\n");
        refused(b"GET /\x7f HTTP/1.1\r\nHost: h\r\n\r\n");
        refused(b"G\tET / HTTP/1.1\r\nHost: h\r\n\r\n");
    }

    #[test]
    fn whitespace_between_header_name_and_colon_is_refused() {
        assert_eq!(refused(&post_with("Content-Length : 5\r\n")), "whitespace before colon in header");
        refused(&post_with("Transfer-Encoding\t: chunked\r\n"));
    }

    #[test]
    fn empty_header_name_is_refused() {
        assert_eq!(refused(&get_with(": value\r\n")), "empty header name");
    }

    #[test]
    fn header_line_without_colon_is_refused() {
        refused(&get_with("NoColonHere\r\n"));
    }

    #[test]
    fn invalid_method_tokens_are_refused() {
        refused(b"GE(T / HTTP/1.1\r\nHost: h\r\n\r\n");
        refused(b"GE\"T / HTTP/1.1\r\nHost: h\r\n\r\n");
        refused(b" GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        refused(b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n");
        refused(b"/ HTTP/1.1\r\nHost: h\r\n\r\n");
    }

    #[test]
    fn extension_methods_are_accepted() {
        assert_eq!(accepted(b"PURGE /x HTTP/1.1\r\nHost: h\r\n\r\n").method, "PURGE");
    }

    #[test]
    fn connect_takes_host_and_port_and_no_body() {
        // The target is the authority, whatever Host says (Envoy's `:authority` for a CONNECT).
        let seen = accepted(b"CONNECT example.com:443 HTTP/1.1\r\nHost: other:80\r\n\r\n");
        assert_eq!((seen.path.as_str(), seen.host.as_deref()), ("", Some("example.com:443")));
        assert_eq!(accepted(b"CONNECT [::1]:8443 HTTP/1.1\r\n\r\n").host.as_deref(), Some("[::1]:8443"));
        for target in ["/foo", "example.com", "http://example.com:443/", "example.com:", ":443", "a:4x"] {
            let buf = format!("CONNECT {target} HTTP/1.1\r\nHost: h\r\n\r\n");
            assert_eq!(refused(buf.as_bytes()), "CONNECT target is not host:port", "{target}");
        }
        assert_eq!(
            refused(b"CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\nContent-Length: 3\r\n\r\nabc"),
            "CONNECT with a body"
        );
        assert!(matches!(
            parse_with_limit(b"CONNECT a:1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 8192),
            Err(HeadError::NotImplemented(_))
        ));
    }

    #[test]
    fn asterisk_target_is_only_for_options() {
        let seen = accepted(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!((seen.target.as_str(), seen.path.as_str()), ("*", "*"));
        refused(b"GET * HTTP/1.1\r\nHost: h\r\n\r\n");
        refused(b"OPTIONS *x HTTP/1.1\r\nHost: h\r\n\r\n");
    }

    #[test]
    fn targets_that_are_neither_origin_nor_absolute_form_are_refused() {
        refused(b"GET example.com:80 HTTP/1.1\r\nHost: h\r\n\r\n");
        refused(b"GET index.html HTTP/1.1\r\nHost: h\r\n\r\n");
        refused(b"GET ?q HTTP/1.1\r\nHost: h\r\n\r\n");
        refused(b"GET ftp://h/x HTTP/1.1\r\nHost: h\r\n\r\n");
        refused(b"GET http:/h/x HTTP/1.1\r\nHost: h\r\n\r\n");
    }

    #[test]
    fn absolute_form_target_yields_host_and_path() {
        let seen = accepted(b"GET http://api.example.com:8080/v1/items?x=1 HTTP/1.1\r\nHost: other\r\n\r\n");
        assert_eq!(seen.target, "http://api.example.com:8080/v1/items?x=1");
        assert_eq!(seen.path, "/v1/items?x=1");
        // The authority wins over the Host header (RFC 9112 §3.2.2).
        assert_eq!(seen.host.as_deref(), Some("api.example.com:8080"));
    }

    #[test]
    fn absolute_form_accepts_https_and_any_scheme_case() {
        assert_eq!(accepted(b"GET https://h/p HTTP/1.1\r\nHost: h\r\n\r\n").path, "/p");
        assert_eq!(accepted(b"GET HTTP://h/p HTTP/1.1\r\nHost: h\r\n\r\n").path, "/p");
        let v6 = accepted(b"GET http://[::1]:80/p HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(v6.host.as_deref(), Some("[::1]:80"));
    }

    #[test]
    fn absolute_form_without_path_means_root() {
        let seen = accepted(b"GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n");
        assert_eq!(seen.path, "/");
        assert_eq!(seen.host.as_deref(), Some("example.com"));
    }

    #[test]
    fn absolute_form_http10_without_host_header_takes_the_authority() {
        let seen = accepted(b"GET http://example.com/x HTTP/1.0\r\n\r\n");
        assert_eq!(seen.host.as_deref(), Some("example.com"));
        assert_eq!(seen.path, "/x");
    }

    #[test]
    fn bad_absolute_form_authorities_are_refused() {
        refused(b"GET http:///p HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(refused(b"GET http://user@h/p HTTP/1.1\r\nHost: h\r\n\r\n"), "userinfo in authority");
        refused(b"GET http://h\"x/p HTTP/1.1\r\nHost: h\r\n\r\n");
        refused(b"GET http://h?q=1 HTTP/1.1\r\nHost: h\r\n\r\n");
    }

    #[test]
    fn versions_other_than_1_0_and_1_1_are_refused() {
        for v in ["HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "http/1.1", "HTTP/1.10", "HTTP/11"] {
            let buf = format!("GET / {v}\r\nHost: h\r\n\r\n");
            refused(buf.as_bytes());
        }
        refused(b"GET /\r\n\r\n");
        assert_eq!(accepted(b"GET / HTTP/1.0\r\n\r\n").version, Version::Http10);
    }

    #[test]
    fn content_length_gives_a_length_body() {
        assert_eq!(accepted(&post_with("Content-Length: 42\r\n")).body, BodyKind::Length(42));
        assert_eq!(accepted(&post_with("content-length: 0\r\n")).body, BodyKind::Length(0));
        assert_eq!(
            accepted(&post_with("Content-Length: 18446744073709551615\r\n")).body,
            BodyKind::Length(u64::MAX)
        );
    }

    #[test]
    fn content_length_surrounding_whitespace_is_trimmed() {
        assert_eq!(accepted(&post_with("Content-Length: \t 7 \t\r\n")).body, BodyKind::Length(7));
    }

    #[test]
    fn content_length_that_is_not_plain_digits_is_refused() {
        for v in ["+5", "-5", "5 5", "0x10", "5a", "", "1e2", "5.0", "\u{663}"] {
            refused(&post_with(&format!("Content-Length: {v}\r\n")));
        }
    }

    #[test]
    fn content_length_overflowing_u64_is_refused() {
        refused(&post_with("Content-Length: 18446744073709551616\r\n"));
        refused(&post_with("Content-Length: 99999999999999999999999\r\n"));
    }

    #[test]
    fn repeated_content_length_is_refused_even_when_identical() {
        assert_eq!(
            refused(&post_with("Content-Length: 5\r\nContent-Length: 5\r\n")),
            "multiple Content-Length headers"
        );
        refused(&post_with("Content-Length: 5\r\nContent-Length: 6\r\n"));
    }

    #[test]
    fn content_length_list_is_refused() {
        refused(&post_with("Content-Length: 5, 5\r\n"));
        refused(&post_with("Content-Length: 5,\r\n"));
    }

    fn not_implemented(buf: &[u8]) -> &'static str {
        match parse_with_limit(buf, 8192) {
            Err(e @ HeadError::NotImplemented(reason)) => {
                assert_eq!(e.status(), 501);
                reason
            }
            other => panic!("expected NotImplemented for {:?}, got {other:?}", lossy(buf)),
        }
    }

    #[test]
    fn chunked_transfer_encoding_gives_a_chunked_body() {
        for te in [
            "Transfer-Encoding: chunked\r\n",
            "transfer-encoding: CHUNKED\r\n",
            "Transfer-Encoding:  chunked \r\n",
        ] {
            let seen = accepted(&post_with(te));
            assert_eq!(seen.body, BodyKind::Chunked, "{te}");
        }
    }

    /// Envoy 1.40 answers "501 Not Implemented" to every one of these (checked with the binary).
    #[test]
    fn any_request_transfer_coding_but_a_single_chunked_is_not_implemented() {
        for te in [
            "Transfer-Encoding: gzip, chunked\r\n",
            "Transfer-Encoding:  gzip ,\tchunked \r\n",
            "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: identity, chunked\r\n",
            "Transfer-Encoding: gzip\r\n",
            "Transfer-Encoding: identity\r\n",
            "Transfer-Encoding: chunked, gzip\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
            "Transfer-Encoding: chunkedx\r\n",
            "Transfer-Encoding: chunked;q=1\r\n",
            "Transfer-Encoding: \"chunked\"\r\n",
            "Transfer-Encoding: chunked, chunked\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: chunked,\r\n",
            "Transfer-Encoding: , chunked\r\n",
            "Transfer-Encoding: gzip,,chunked\r\n",
            "Transfer-Encoding:\r\n",
        ] {
            assert_eq!(not_implemented(&post_with(te)), "transfer coding other than chunked", "{te}");
        }
    }

    #[test]
    fn content_length_with_any_transfer_coding_is_a_bad_request_first() {
        assert_eq!(
            refused(&post_with("Transfer-Encoding: gzip\r\nContent-Length: 5\r\n")),
            "both Content-Length and Transfer-Encoding"
        );
    }

    #[test]
    fn connection_nominating_host_is_refused() {
        assert_eq!(refused(&get_with("Connection: host\r\n")), "Connection nominates Host");
        assert_eq!(refused(&get_with("Connection: keep-alive, HOST\r\n")), "Connection nominates Host");
    }

    #[test]
    fn connection_never_nominates_the_framing_fields() {
        let buf = post_with("Connection: content-length, Transfer-Encoding, x-a\r\nContent-Length: 5\r\n");
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let head = parse_request(&buf, &mut headers, 8192).unwrap().unwrap();
        assert_eq!(head.body, BodyKind::Length(5));
        assert!(!head.connection_lists("content-length"));
        assert!(!head.connection_lists("Content-Length"));
        assert!(!head.connection_lists("transfer-encoding"));
        assert!(head.connection_lists("x-a"));
    }

    #[test]
    fn transfer_encoding_on_http10_is_refused() {
        refused(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
    }

    #[test]
    fn both_content_length_and_chunked_is_refused() {
        assert_eq!(
            refused(&post_with("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n")),
            "both Content-Length and Transfer-Encoding"
        );
        refused(&post_with("Transfer-Encoding: chunked\r\nContent-Length: 0\r\n"));
    }

    #[test]
    fn http11_without_host_is_left_to_the_connection_manager_unless_absolute_form() {
        assert_eq!(accepted(b"GET / HTTP/1.1\r\n\r\n").host, None);
        assert_eq!(refused(b"GET http://h/ HTTP/1.1\r\n\r\n"), "missing Host header");
    }

    #[test]
    fn two_host_headers_are_refused_on_any_version() {
        refused(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n");
        refused(b"GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n");
    }

    #[test]
    fn http10_may_omit_host() {
        let seen = accepted(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(seen.host, None);
        assert_eq!(accepted(b"GET / HTTP/1.0\r\nHost: h\r\n\r\n").host.as_deref(), Some("h"));
    }

    #[test]
    fn invalid_host_headers_are_refused() {
        refused(b"GET / HTTP/1.1\r\nHost: user@h\r\n\r\n");
        refused(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n");
        refused(b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n");
        refused(b"GET / HTTP/1.1\r\nHost: \r\n\r\n");
        refused(b"GET / HTTP/1.1\r\nHost: caf\xc3\xa9\r\n\r\n");
        assert_eq!(
            accepted(b"GET / HTTP/1.1\r\nHost: h.example:8443\r\n\r\n").host.as_deref(),
            Some("h.example:8443")
        );
    }

    #[test]
    fn http11_keeps_alive_unless_connection_close() {
        assert!(accepted(&get_with("")).keep_alive);
        assert!(!accepted(&get_with("Connection: close\r\n")).keep_alive);
        assert!(!accepted(&get_with("Connection: CLOSE\r\n")).keep_alive);
        assert!(!accepted(&get_with("Connection: keep-alive, close\r\n")).keep_alive);
        assert!(!accepted(&get_with("Connection: upgrade\r\nConnection: close\r\n")).keep_alive);
        assert!(accepted(&get_with("Connection: closed, x-close\r\n")).keep_alive);
    }

    #[test]
    fn http10_keeps_alive_only_when_asked() {
        assert!(!accepted(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(accepted(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(accepted(b"GET / HTTP/1.0\r\nConnection: te, keep-alive\r\n\r\n").keep_alive);
        assert!(
            !accepted(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n").keep_alive
        );
    }

    #[test]
    fn expect_100_continue_is_reported() {
        assert!(accepted(&post_with("Expect: 100-continue\r\nContent-Length: 1\r\n")).expect_continue);
        assert!(accepted(&post_with("expect: 100-Continue\r\nContent-Length: 1\r\n")).expect_continue);
        assert!(!accepted(&post_with("Expect: 200-ok\r\n")).expect_continue);
        assert!(!accepted(&post_with("Expect: 100-continue-ish\r\n")).expect_continue);
    }

    #[test]
    fn expect_from_http10_clients_is_ignored() {
        let buf = b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n";
        assert!(!accepted(buf).expect_continue);
    }

    #[test]
    fn connection_lists_finds_tokens_in_any_connection_header() {
        let buf = get_with("Connection: Keep-Alive ,X-Trace\r\nconnection: upgrade\r\nX-Other: te\r\n");
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let head = parse_request(&buf, &mut headers, 8192).unwrap().unwrap();
        assert!(head.connection_lists("x-trace"));
        assert!(head.connection_lists("keep-alive"));
        assert!(head.connection_lists("upgrade"));
        assert!(!head.connection_lists("te"));
        assert!(!head.connection_lists("x-tra"));
    }
}
