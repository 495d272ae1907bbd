//! Response heads: RFC 9112 §6.3 message-length rules, in its order of precedence.

use super::fields::{self, ConnectionOptions, Known, TransferCodings};
use super::message::{BodyKind, HeadError, ResponseHead, Version, MAX_HEADERS};

pub(super) fn parse<'b>(
    buf: &'b [u8],
    headers: &'b mut [httparse::Header<'b>],
    max_head_len: usize,
    head_request: bool,
) -> Result<Option<ResponseHead<'b>>, HeadError> {
    let window = buf.get(..max_head_len).unwrap_or(buf);
    let limit = headers.len().min(MAX_HEADERS);
    let headers = headers.get_mut(..limit).unwrap_or_default();
    // httparse's defaults refuse obs-fold and "Name :" in responses too, which is what we want.
    let mut resp = httparse::Response::new(headers);
    let head_len = match resp.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if window.len() >= max_head_len => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(fields::map_httparse_error(e, window)),
    };
    let httparse::Response { version, code, reason, headers } = resp;
    let (Some(version), Some(status), Some(reason)) = (version, code, reason) else {
        return Err(HeadError::Malformed("incomplete status line"));
    };
    let headers: &'b [httparse::Header<'b>] = headers;

    fields::scan_head(window.get(..head_len).unwrap_or(window))?;

    let version = match version {
        0 => Version::Http10,
        1 => Version::Http11,
        _ => return Err(HeadError::Malformed("unsupported HTTP version")),
    };
    if status < 100 {
        return Err(HeadError::Malformed("status code below 100"));
    }

    let mut content_length: Option<u64> = None;
    let mut te = TransferCodings::default();
    let mut conn = ConnectionOptions::default();
    for h in headers {
        match fields::classify(h.name) {
            Known::ContentLength => {
                // RFC 9110 §8.6: repeated identical values (as headers or a list) are one length,
                // a common result of upstream middleware; differing ones make the length unknowable.
                for v in fields::list_elements(h.value) {
                    let n = fields::parse_decimal(v)?;
                    if content_length.is_some_and(|prev| prev != n) {
                        return Err(HeadError::Malformed("conflicting Content-Length values"));
                    }
                    content_length = Some(n);
                }
            }
            Known::TransferEncoding => te.add(h.value),
            Known::Connection => conn.add(h.value),
            Known::Host | Known::Expect | Known::Other => {}
        }
    }

    if te.present && version == Version::Http10 {
        // RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 message means the framing is faulty.
        return Err(HeadError::Malformed("Transfer-Encoding in HTTP/1.0 response"));
    }
    if te.has_empty {
        // Refusing is cheaper than guessing which coding the sender meant to be last.
        return Err(HeadError::Malformed("empty transfer coding"));
    }
    if te.chunked_count > 1 {
        return Err(HeadError::Malformed("chunked applied more than once"));
    }

    let mut keep_alive = match version {
        Version::Http11 => !conn.close,
        Version::Http10 => conn.keep_alive && !conn.close,
    };
    let body = if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        BodyKind::None
    } else if te.present {
        if content_length.is_some() {
            // RFC 9112 §6.3: Transfer-Encoding wins, but the sender is confused or hostile, so
            // the connection is not trusted with another exchange.
            keep_alive = false;
        }
        if te.last_is_chunked {
            BodyKind::Chunked
        } else {
            BodyKind::CloseDelimited
        }
    } else {
        match content_length {
            Some(n) => BodyKind::Length(n),
            None => BodyKind::CloseDelimited,
        }
    };
    if body == BodyKind::CloseDelimited {
        keep_alive = false;
    }

    Ok(Some(ResponseHead { status, reason, version, headers, head_len, body, keep_alive }))
}

#[cfg(test)]
mod tests {
    use crate::http::{parse_response, BodyKind, HeadError, Version, MAX_HEADERS};

    #[derive(Debug, PartialEq)]
    struct Seen {
        status: u16,
        reason: String,
        version: Version,
        head_len: usize,
        body: BodyKind,
        keep_alive: bool,
    }

    fn parse_with(buf: &[u8], max: usize, head_request: bool) -> Result<Option<Seen>, HeadError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        Ok(parse_response(buf, &mut headers, max, head_request)?.map(|h| Seen {
            status: h.status,
            reason: h.reason.to_owned(),
            version: h.version,
            head_len: h.head_len,
            body: h.body,
            keep_alive: h.keep_alive,
        }))
    }

    fn accepted(buf: &[u8]) -> Seen {
        match parse_with(buf, 8192, false) {
            Ok(Some(seen)) => seen,
            other => {
                panic!("expected a complete response for {:?}, got {other:?}", String::from_utf8_lossy(buf))
            }
        }
    }

    fn refused(buf: &[u8]) -> &'static str {
        match parse_with(buf, 8192, false) {
            Err(HeadError::Malformed(reason)) => reason,
            other => panic!("expected Malformed for {:?}, got {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn ok_with(extra: &str) -> Vec<u8> {
        format!("HTTP/1.1 200 OK\r\n{extra}\r\n").into_bytes()
    }

    #[test]
    fn content_length_response_has_a_length_body_and_is_reusable() {
        let buf = b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nhello world!";
        let seen = accepted(buf);
        assert_eq!(seen.status, 200);
        assert_eq!(seen.reason, "OK");
        assert_eq!(seen.version, Version::Http11);
        assert_eq!(seen.head_len, buf.len() - 12);
        assert_eq!(seen.body, BodyKind::Length(12));
        assert!(seen.keep_alive);
    }

    #[test]
    fn missing_or_multiword_reason_phrase_is_fine() {
        assert_eq!(accepted(b"HTTP/1.1 204\r\n\r\n").reason, "");
        assert_eq!(
            accepted(b"HTTP/1.1 404 Not Found Here\r\nContent-Length: 0\r\n\r\n").reason,
            "Not Found Here"
        );
    }

    #[test]
    fn response_to_head_has_no_body_whatever_it_declares() {
        for extra in ["Content-Length: 100\r\n", "Transfer-Encoding: chunked\r\n", ""] {
            let seen = parse_with(&ok_with(extra), 8192, true).unwrap().unwrap();
            assert_eq!(seen.body, BodyKind::None, "{extra}");
            assert!(seen.keep_alive, "{extra}");
        }
    }

    #[test]
    fn informational_no_content_and_not_modified_have_no_body() {
        for status in [100, 101, 103, 199, 204, 304] {
            let buf = format!("HTTP/1.1 {status} X\r\nContent-Length: 10\r\n\r\n");
            let seen = accepted(buf.as_bytes());
            assert_eq!(seen.body, BodyKind::None, "{status}");
            assert!(seen.keep_alive, "{status}");
            let bare = format!("HTTP/1.1 {status} X\r\n\r\n");
            assert_eq!(accepted(bare.as_bytes()).body, BodyKind::None, "{status}");
        }
    }

    #[test]
    fn chunked_response_has_a_chunked_body() {
        for te in [
            "Transfer-Encoding: chunked\r\n",
            "Transfer-Encoding: gzip, Chunked\r\n",
            "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
        ] {
            let seen = accepted(&ok_with(te));
            assert_eq!(seen.body, BodyKind::Chunked, "{te}");
            assert!(seen.keep_alive, "{te}");
        }
    }

    #[test]
    fn transfer_encoding_not_ending_in_chunked_is_close_delimited() {
        for te in ["Transfer-Encoding: gzip\r\n", "Transfer-Encoding: chunked, gzip\r\n"] {
            let seen = accepted(&ok_with(te));
            assert_eq!(seen.body, BodyKind::CloseDelimited, "{te}");
            assert!(!seen.keep_alive, "{te}");
        }
    }

    #[test]
    fn response_with_both_length_and_chunked_is_chunked_and_not_reused() {
        let seen = accepted(&ok_with("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"));
        assert_eq!(seen.body, BodyKind::Chunked);
        assert!(!seen.keep_alive);
    }

    #[test]
    fn identical_repeated_content_lengths_count_as_one() {
        let two_headers = accepted(&ok_with("Content-Length: 5\r\nContent-Length: 5\r\n"));
        assert_eq!(two_headers.body, BodyKind::Length(5));
        let list = accepted(&ok_with("Content-Length: 5, 5\r\n"));
        assert_eq!(list.body, BodyKind::Length(5));
    }

    #[test]
    fn differing_content_lengths_are_refused() {
        assert_eq!(
            refused(&ok_with("Content-Length: 5\r\nContent-Length: 6\r\n")),
            "conflicting Content-Length values"
        );
        refused(&ok_with("Content-Length: 5, 6\r\n"));
        refused(&ok_with("Content-Length: 5,\r\n"));
    }

    #[test]
    fn invalid_content_length_is_refused() {
        for v in ["+5", "-1", "5 5", "0x5", "", "18446744073709551616"] {
            refused(&ok_with(&format!("Content-Length: {v}\r\n")));
        }
    }

    #[test]
    fn response_without_framing_is_close_delimited() {
        let seen = accepted(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n");
        assert_eq!(seen.body, BodyKind::CloseDelimited);
        assert!(!seen.keep_alive);
    }

    #[test]
    fn connection_close_response_is_not_reused() {
        let seen = accepted(&ok_with("Content-Length: 0\r\nConnection: Close\r\n"));
        assert_eq!(seen.body, BodyKind::Length(0));
        assert!(!seen.keep_alive);
    }

    #[test]
    fn http10_response_is_reused_only_with_keep_alive() {
        let plain = accepted(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n");
        assert_eq!(plain.version, Version::Http10);
        assert!(!plain.keep_alive);
        let ka = accepted(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n");
        assert!(ka.keep_alive);
    }

    #[test]
    fn transfer_encoding_in_http10_response_is_refused() {
        refused(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    }

    #[test]
    fn chunked_applied_twice_in_a_response_is_refused() {
        refused(&ok_with("Transfer-Encoding: chunked, chunked\r\n"));
        refused(&ok_with("Transfer-Encoding: chunked,\r\n"));
    }

    #[test]
    fn bare_lf_in_response_is_refused() {
        refused(b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n");
        refused(b"HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n");
        refused(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\n");
    }

    #[test]
    fn obs_fold_and_malformed_header_lines_in_response_are_refused() {
        assert_eq!(refused(&ok_with("X-A: a\r\n b\r\nContent-Length: 0\r\n")), "obs-fold in header");
        refused(&ok_with("Content-Length : 0\r\n"));
        refused(&ok_with(": x\r\n"));
        refused(&ok_with("X-A: a\x00b\r\n"));
        refused(&ok_with("X-A: a\x7fb\r\n"));
        refused(b"HTTP/1.1 200 O\x01K\r\nContent-Length: 0\r\n\r\n");
    }

    #[test]
    fn bad_status_lines_are_refused() {
        refused(b"HTTP/1.1 099 Low\r\n\r\n");
        refused(b"HTTP/1.1 20 OK\r\n\r\n");
        refused(b"HTTP/1.1 2000 OK\r\n\r\n");
        refused(b"HTTP/2.0 200 OK\r\n\r\n");
        refused(b"HTTP/1.1  200 OK\r\n\r\n");
        refused(b"ICY 200 OK\r\n\r\n");
    }

    #[test]
    fn incomplete_response_head_waits_then_hits_the_limit() {
        let buf = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n";
        for end in 0..buf.len() {
            assert_eq!(parse_with(&buf[..end], 8192, false), Ok(None), "prefix {end}");
        }
        assert_eq!(parse_with(&buf[..buf.len() - 1], buf.len() - 1, false), Err(HeadError::TooLarge));
        assert_eq!(parse_with(buf, buf.len() - 1, false), Err(HeadError::TooLarge));
        assert!(matches!(parse_with(buf, buf.len(), false), Ok(Some(_))));
    }

    #[test]
    fn too_many_response_headers_is_refused() {
        let lines: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(parse_with(&ok_with(&lines), 1 << 20, false), Err(HeadError::TooManyHeaders));
    }

    #[test]
    fn connection_lists_on_responses() {
        let buf = ok_with("Connection: x-hop, Upgrade\r\nContent-Length: 0\r\n");
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let head = parse_response(&buf, &mut headers, 8192, false).unwrap().unwrap();
        assert!(head.connection_lists("x-hop"));
        assert!(head.connection_lists("upgrade"));
        assert!(!head.connection_lists("close"));
    }

    #[test]
    fn connection_never_nominates_the_framing_fields_of_a_response() {
        let buf = ok_with("Connection: content-length, transfer-encoding, host\r\nContent-Length: 5\r\n");
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let head = parse_response(&buf, &mut headers, 8192, false).unwrap().unwrap();
        assert_eq!(head.body, BodyKind::Length(5));
        for name in ["content-length", "transfer-encoding", "host"] {
            assert!(!head.connection_lists(name), "{name}");
        }
    }

    #[test]
    fn empty_transfer_coding_in_a_response_is_refused() {
        assert_eq!(refused(&ok_with("Transfer-Encoding: gzip,,chunked\r\n")), "empty transfer coding");
    }
}
