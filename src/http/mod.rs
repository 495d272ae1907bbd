//! The HTTP/1.1 codec: parses request and response heads in place (httparse over the connection's
//! buffer, no allocation per header), decides message framing under strict anti-smuggling rules, and
//! walks chunked bodies. Pure functions over byte slices: no I/O, no routing, no config.

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
}

impl HeadError {
    pub fn status(&self) -> u16 {
        match self {
            HeadError::TooLarge | HeadError::TooManyHeaders => 431,
            HeadError::Malformed(_) => 400,
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

impl RequestHead<'_> {
    /// Whether `name` (lower-case) is listed in a Connection header, i.e. hop-by-hop for this message.
    pub fn connection_lists(&self, name: &str) -> bool {
        let _ = name;
        unimplemented!("http helper")
    }
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

impl ResponseHead<'_> {
    pub fn connection_lists(&self, name: &str) -> bool {
        let _ = name;
        unimplemented!("http helper")
    }
}

/// Parses a request head at the start of `buf`. Ok(None): incomplete, read more (unless `buf` is
/// already `max_head_len` long, which is Err(TooLarge)).
pub fn parse_request<'b>(
    buf: &'b [u8],
    headers: &'b mut [httparse::Header<'b>],
    max_head_len: usize,
) -> Result<Option<RequestHead<'b>>, HeadError> {
    let _ = (buf, headers, max_head_len);
    unimplemented!("http helper")
}

/// Parses a response head; `head_request` says the request was HEAD (so there is no body).
pub fn parse_response<'b>(
    buf: &'b [u8],
    headers: &'b mut [httparse::Header<'b>],
    max_head_len: usize,
    head_request: bool,
) -> Result<Option<ResponseHead<'b>>, HeadError> {
    let _ = (buf, headers, max_head_len, head_request);
    unimplemented!("http helper")
}

/// Where a chunked body is, fed piece by piece as it arrives.
#[derive(Debug, Default, Clone)]
pub struct ChunkedDecoder {
    _todo: (),
}

/// One step of `ChunkedDecoder::advance`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkProgress {
    /// Bytes of the input that belong to the message and were walked over.
    pub consumed: usize,
    /// The payload bytes inside `input[..consumed]` (possibly empty): at most one contiguous run.
    pub data: std::ops::Range<usize>,
    /// The last chunk and trailers have been consumed: the message ends at `consumed`.
    pub done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkError(pub &'static str);

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder::default()
    }

    pub fn advance(&mut self, input: &[u8]) -> Result<ChunkProgress, ChunkError> {
        let _ = input;
        unimplemented!("http helper")
    }
}
