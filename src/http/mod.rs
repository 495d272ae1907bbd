//! The HTTP/1.1 codec: parses request and response heads in place (httparse over the connection's
//! buffer, no allocation per header), decides message framing under strict anti-smuggling rules, and
//! walks chunked bodies. Pure functions over byte slices: no I/O, no routing, no config.

mod chunked;
mod fields;
mod message;
mod request;
mod response;

pub use chunked::{ChunkError, ChunkProgress, ChunkedDecoder};
pub use message::{header_is, BodyKind, HeadError, RequestHead, ResponseHead, Version, MAX_HEADERS};

/// Parses a request head at the start of `buf`. Ok(None): incomplete, read more (unless `buf` is
/// already `max_head_len` long, which is Err(TooLarge)). At most `min(headers.len(), MAX_HEADERS)`
/// header lines are accepted; one more is Err(TooManyHeaders). Bytes after `head_len` (body,
/// pipelined requests) are not looked at.
pub fn parse_request<'b>(
    buf: &'b [u8],
    headers: &'b mut [httparse::Header<'b>],
    max_head_len: usize,
) -> Result<Option<RequestHead<'b>>, HeadError> {
    request::parse(buf, headers, max_head_len)
}

/// Parses a response head; `head_request` says the request was HEAD (so there is no body). Same
/// limits and incomplete/too-large contract as `parse_request`. A 1xx head is returned like any
/// other (BodyKind::None): the caller reads the final response after it.
pub fn parse_response<'b>(
    buf: &'b [u8],
    headers: &'b mut [httparse::Header<'b>],
    max_head_len: usize,
    head_request: bool,
) -> Result<Option<ResponseHead<'b>>, HeadError> {
    response::parse(buf, headers, max_head_len, head_request)
}

/// Deterministic fuzzing: random bytes and mutations of valid messages must never panic, and what
/// the parsers accept must be self-consistent.
#[cfg(test)]
mod fuzz_tests {
    use super::*;

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            if n == 0 {
                0
            } else {
                (self.next() % n as u64) as usize
            }
        }
    }

    /// Bytes that sit on the boundaries the parsers care about.
    const INTERESTING: &[u8] = b"\r\n\r\n :;,=\t\x00\x01\x7f\x80\xff0fFxX/?*#@\"-chunked";

    fn mutate(rng: &mut XorShift, seed: &[u8]) -> Vec<u8> {
        let mut buf = seed.to_vec();
        for _ in 0..=rng.below(4) {
            let at = rng.below(buf.len() + 1);
            match rng.below(7) {
                0 if at < buf.len() => buf[at] ^= 1 << rng.below(8),
                1 => buf.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
                2 if at < buf.len() => {
                    buf.remove(at);
                }
                3 if at < buf.len() => buf[at] = INTERESTING[rng.below(INTERESTING.len())],
                4 => {
                    let len = rng.below(16).min(buf.len() - at);
                    let copy = buf[at..at + len].to_vec();
                    let to = rng.below(buf.len() + 1);
                    buf.splice(to..to, copy);
                }
                5 => buf.truncate(at),
                _ => {
                    let junk: Vec<u8> = (0..rng.below(8)).map(|_| rng.next() as u8).collect();
                    buf.splice(at..at, junk);
                }
            }
        }
        buf
    }

    fn random_bytes(rng: &mut XorShift) -> Vec<u8> {
        (0..rng.below(256)).map(|_| rng.next() as u8).collect()
    }

    const REQUESTS: &[&[u8]] = &[
        b"GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n",
        b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello",
        b"PUT / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"GET http://h:80/x HTTP/1.1\r\nHost: h\r\nConnection: close, x-a\r\n\r\n",
        b"OPTIONS * HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    ];

    const RESPONSES: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        b"HTTP/1.0 304 Not Modified\r\nContent-Length: 5, 5\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    ];

    const CHUNKED: &[&[u8]] = &[
        b"5\r\nhello\r\n0\r\n\r\n",
        b"3;a=b\r\nabc\r\nA ;x\r\n0123456789\r\n0\r\nX: y\r\nZ:\r\n\r\nGET / HTTP/1.1\r\n",
        b"0\r\n\r\n",
    ];

    #[test]
    fn request_parsing_never_panics_and_is_self_consistent() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for i in 0..30_000 {
            let buf = if i % 5 == 0 {
                random_bytes(&mut rng)
            } else {
                {
                    let seed = REQUESTS[rng.below(REQUESTS.len())];
                    mutate(&mut rng, seed)
                }
            };
            let max = rng.below(buf.len() + 64);
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            if let Ok(Some(head)) = parse_request(&buf, &mut headers, max) {
                assert!(head.head_len <= buf.len() && head.head_len <= max);
                // A CONNECT alone has no path, and always its authority.
                assert!(head.path.starts_with('/') || head.path == "*" || head.method == "CONNECT");
                assert!(head.method != "CONNECT" || (head.path.is_empty() && head.host == Some(head.target)));
                if head.body == BodyKind::Chunked {
                    assert_eq!(head.version, Version::Http11);
                }
                assert_ne!(head.body, BodyKind::CloseDelimited);
                // Only an origin-form (or `*`) request may lack a host: the connection manager
                // refuses it then; an absolute-form one always has its authority.
                assert!(head.host.is_some() || head.target.starts_with('/') || head.target == "*");
                let head_len = head.head_len;
                // The head alone parses the same, and any shorter prefix is merely incomplete.
                let mut again = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let reparsed = parse_request(&buf[..head_len], &mut again, max);
                assert_eq!(reparsed.map(|h| h.map(|h| h.head_len)), Ok(Some(head_len)));
                let cut = rng.below(head_len);
                let mut again = [httparse::EMPTY_HEADER; MAX_HEADERS];
                assert!(matches!(parse_request(&buf[..cut], &mut again, max), Ok(None)));
            }
        }
    }

    #[test]
    fn response_parsing_never_panics_and_is_self_consistent() {
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        for i in 0..30_000 {
            let buf = if i % 5 == 0 {
                random_bytes(&mut rng)
            } else {
                {
                    let seed = RESPONSES[rng.below(RESPONSES.len())];
                    mutate(&mut rng, seed)
                }
            };
            let max = rng.below(buf.len() + 64);
            let head_request = rng.below(2) == 0;
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            if let Ok(Some(head)) = parse_response(&buf, &mut headers, max, head_request) {
                assert!(head.head_len <= buf.len() && head.head_len <= max);
                assert!((100..=999).contains(&head.status));
                if head.body == BodyKind::CloseDelimited {
                    assert!(!head.keep_alive);
                }
                if head_request {
                    assert_eq!(head.body, BodyKind::None);
                }
            }
        }
    }

    fn decode_split(input: &[u8], cuts: &[usize]) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut dec = ChunkedDecoder::new();
        let mut payload = Vec::new();
        let mut pos = 0;
        for &end in cuts.iter().chain(std::iter::once(&input.len())) {
            let end = end.max(pos);
            loop {
                let window = &input[pos..end];
                let p = dec.advance(window)?;
                assert!(p.consumed <= window.len());
                assert!(p.data.start <= p.data.end && p.data.end <= p.consumed);
                payload.extend_from_slice(&window[p.data.clone()]);
                pos += p.consumed;
                if p.done {
                    return Ok((payload, pos, true));
                }
                if p.consumed == 0 {
                    break;
                }
            }
        }
        Ok((payload, pos, false))
    }

    #[test]
    fn chunked_decoding_never_panics_and_ignores_how_input_is_split() {
        let mut rng = XorShift(0xdead_beef_cafe_f00d);
        for i in 0..20_000 {
            let body = if i % 5 == 0 {
                random_bytes(&mut rng)
            } else {
                {
                    let seed = CHUNKED[rng.below(CHUNKED.len())];
                    mutate(&mut rng, seed)
                }
            };
            let whole = decode_split(&body, &[]);
            let mut cuts: Vec<usize> = (0..rng.below(6)).map(|_| rng.below(body.len() + 1)).collect();
            cuts.sort_unstable();
            assert_eq!(decode_split(&body, &cuts), whole, "cuts {cuts:?}");
            if let Ok((payload, consumed, _)) = &whole {
                assert!(payload.len() <= *consumed && *consumed <= body.len());
            }
        }
    }
}
