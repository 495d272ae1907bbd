//! The parsed message model the codec hands out: header slices of the connection's buffer
//! (`RequestHead`, `ResponseHead`), how a body is framed (`BodyKind`), why a head was refused
//! (`HeadError`, with the status a client gets). Plain data: parsing is in `request`, `response`,
//! `chunked` and `fields`.

/// Whether header `name` is `lower` (a lower-case literal); length first, as most names differ there.
#[inline]
pub fn header_is(name: &str, lower: &str) -> bool {
    name.len() == lower.len() && name.eq_ignore_ascii_case(lower)
}

/// Envoy's default cap on the number of request headers.
pub const MAX_HEADERS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// How the body after a head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    None,
    Length(u64),
    Chunked,
    /// Responses only: the body runs until the upstream closes.
    CloseDelimited,
}

/// Why a head was refused; `status()` is the answer the client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// The head is larger than the limit (431 for requests).
    TooLarge,
    /// More than MAX_HEADERS header lines (431 for requests).
    TooManyHeaders,
    /// Anything malformed or ambiguous (400 for requests, 502 for responses); the text says which rule.
    Malformed(&'static str),
    /// Well-formed but asks for something skiff (like Envoy) does not do: a request transfer coding
    /// other than a single `chunked` (501, as RFC 9112 §6.1 says for unknown codings).
    NotImplemented(&'static str),
}

impl HeadError {
    pub fn status(&self) -> u16 {
        match self {
            HeadError::TooLarge | HeadError::TooManyHeaders => 431,
            HeadError::Malformed(_) => 400,
            HeadError::NotImplemented(_) => 501,
        }
    }
}

pub struct RequestHead<'b> {
    pub method: &'b str,
    /// The request target as sent.
    pub target: &'b str,
    /// Origin-form path and query (an absolute-form target reduced to its path; `*` stays `*`).
    pub path: &'b str,
    pub version: Version,
    pub headers: &'b [httparse::Header<'b>],
    /// Bytes of the head including the final CRLF CRLF.
    pub head_len: usize,
    pub body: BodyKind,
    /// Whether the client allows the connection to stay open after this exchange.
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
    /// The Host header (or the authority of an absolute-form target).
    pub host: Option<&'b str>,
}

pub struct ResponseHead<'b> {
    pub status: u16,
    pub reason: &'b str,
    pub version: Version,
    pub headers: &'b [httparse::Header<'b>],
    pub head_len: usize,
    pub body: BodyKind,
    pub keep_alive: bool,
}
