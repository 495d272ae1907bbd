//! Bytes skiff writes itself: local replies (errors, direct responses, redirects) as one value
//! (`LocalReply`, and its gRPC trailers-only form for a gRPC request), header lines, the `date` header and generated request ids. Appends to a
//! connection's reusable output buffer; never allocates on the request path. Sends nothing.

use crate::access_log::ResponseFlags;
use crate::cluster::Rng;
use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

/// Which router stat a local reply counts in (besides the response-class counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyStat {
    None,
    /// `downstream_cx_protocol_error`.
    ProtocolError,
    /// `no_route`.
    NoRoute,
    /// `rq_direct_response`.
    Direct,
    /// `rq_redirect`.
    Redirect,
    /// `downstream_rq_header_timeout`.
    HeaderTimeout,
    /// `no_cluster`.
    NoCluster,
}

/// Every reply skiff makes itself, whatever made it (codec, router, a filter, an upstream failure):
/// status, body, whether the connection closes after it, the response flag it logs and the stat it
/// counts. The `date` and `server` headers are added when it is written.
#[derive(Debug, Clone)]
pub struct LocalReply {
    pub status: u16,
    pub body: std::borrow::Cow<'static, [u8]>,
    pub close: bool,
    pub flag: ResponseFlags,
    pub stat: ReplyStat,
    /// `location` of a redirect.
    pub location: Option<String>,
    /// Answer in HTTP/1.0 (the request was, and was accepted).
    pub http10: bool,
    /// Header lines (`name: value\r\n`) the reply's maker adds to it (Envoy's `modify_headers`:
    /// a filter's own reply headers, the attempt count).
    pub headers: Vec<u8>,
    /// Header lines the filters' response phase adds to every response, this one too (Envoy's
    /// `encodeHeaders`: `x-ratelimit-*`): written after `headers`, and after a gRPC answer's
    /// status lines.
    pub encode_headers: Vec<u8>,
    /// A circuit breaker refused the request: `x-envoy-overloaded: true`, as Envoy says.
    pub overloaded: bool,
    /// A filter wrote this response itself rather than as a local reply (the CORS preflight
    /// answer): Envoy's codec then puts `content-length` after `date` and `server`.
    pub encoded: bool,
    /// `%RESPONSE_CODE_DETAILS%`: Envoy's word for why this reply was made (`details`; owned
    /// only when a filter's words name a policy or a reason).
    pub details: std::borrow::Cow<'static, str>,
    /// The `grpc-status` this reply gives a gRPC request when its maker chose one (the stream's
    /// max duration: DEADLINE_EXCEEDED); None: mapped from `status` (`grpc_status_of`).
    pub grpc_status: Option<u32>,
    /// Made into gRPC's trailers-only answer (`into_grpc`).
    pub trailers_only: bool,
}

impl LocalReply {
    pub fn new(status: u16, body: &'static [u8]) -> Self {
        LocalReply {
            status,
            body: std::borrow::Cow::Borrowed(body),
            close: false,
            flag: ResponseFlags::NONE,
            stat: ReplyStat::None,
            location: None,
            http10: false,
            headers: Vec::new(),
            encode_headers: Vec::new(),
            overloaded: false,
            encoded: false,
            details: std::borrow::Cow::Borrowed(""),
            grpc_status: None,
            trailers_only: false,
        }
    }

    /// The reply's `%RESPONSE_CODE_DETAILS%`, one of `details`' constants.
    pub fn detailed(mut self, details: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        self.details = details.into();
        self
    }

    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    pub fn flagged(mut self, flag: ResponseFlags) -> Self {
        self.flag = flag;
        self
    }

    pub fn counted(mut self, stat: ReplyStat) -> Self {
        self.stat = stat;
        self
    }

    /// Turns the reply into what Envoy answers a gRPC request with instead (`sendLocalReply` for
    /// a request whose `content-type` is gRPC's): a trailers-only response, HTTP 200,
    /// `content-type: application/grpc`, `grpc-status` (the reply's own, else mapped from its
    /// HTTP status) and `grpc-message` (the body, percent-encoded; none for a HEAD request),
    /// no body. The HTTP status the reply had is gone: Envoy logs and counts the 200.
    pub fn into_grpc(mut self, head_request: bool) -> Self {
        let grpc_status = self.grpc_status.unwrap_or_else(|| grpc_status_of(self.status));
        let mut lines = Vec::with_capacity(96 + self.body.len() * 3 + self.headers.len());
        // A filter's own type (an authorization service's denial) gives way to gRPC's.
        for line in self.headers.split_inclusive(|b| *b == b'\n') {
            if !is_content_type_line(line) {
                lines.extend_from_slice(line);
            }
        }
        header(&mut lines, b"content-type", b"application/grpc");
        lines.extend_from_slice(b"grpc-status: ");
        push_u64(&mut lines, u64::from(grpc_status));
        lines.extend_from_slice(b"\r\n");
        if !self.body.is_empty() && !head_request {
            lines.extend_from_slice(b"grpc-message: ");
            percent_encode(&mut lines, &self.body);
            lines.extend_from_slice(b"\r\n");
        }
        self.headers = lines;
        self.status = 200;
        self.body = std::borrow::Cow::Borrowed(b"");
        self.trailers_only = true;
        self
    }
}

/// The `grpc-status` Envoy gives a local reply to a gRPC request for its HTTP status
/// (`Grpc::Utility::httpToGrpcStatus`, gRPC's http-grpc-status-mapping): 400 INTERNAL,
/// 401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 UNIMPLEMENTED, 429/502/503/504 UNAVAILABLE,
/// anything else (200 included) UNKNOWN.
pub fn grpc_status_of(http: u16) -> u32 {
    match http {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502..=504 => 14,
        _ => 2,
    }
}

/// `grpc-message` as Envoy encodes it (`PercentEncoding::encode(value, "%")`): bytes below `' '`
/// or from `~` on, and `%`, as `%XX` (Envoy 1.40 encodes `~` too).
fn percent_encode(out: &mut Vec<u8>, text: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in text {
        if (b' '..b'~').contains(&b) && b != b'%' {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

/// IMF-fixdate of the current second (Envoy sends `date` on every response, its own replies
/// included). A shard task refreshes it every second, so writing it reads no clock.
pub struct DateCache {
    text: Cell<[u8; 29]>,
    second: Cell<u64>,
}

impl Default for DateCache {
    fn default() -> Self {
        let cache = DateCache { text: Cell::new([b' '; 29]), second: Cell::new(0) };
        cache.refresh();
        cache
    }
}

impl DateCache {
    /// Rebuilds the text from the clock; returns how long until the next second starts.
    pub fn refresh(&self) -> std::time::Duration {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        self.text.set(imf_fixdate(now.as_secs()));
        self.second.set(now.as_secs());
        std::time::Duration::from_nanos(u64::from(1_000_000_000 - now.subsec_nanos()))
    }

    /// The shard's coarse clock: seconds since the epoch, as of the last tick.
    pub fn second(&self) -> u64 {
        self.second.get()
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(&self.text.get());
        out.extend_from_slice(b"\r\n");
    }
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` (RFC 9110 §5.6.7).
fn imf_fixdate(secs: u64) -> [u8; 29] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] =
        [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = crate::access_log::time::civil_from_days(days);
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    let two = |v: u64, at: &mut [u8]| {
        at[0] = b'0' + (v / 10 % 10) as u8;
        at[1] = b'0' + (v % 10) as u8;
    };
    two(u64::from(day), &mut out[5..7]);
    out[8..11].copy_from_slice(MONTHS[(month.clamp(1, 12) - 1) as usize]);
    let y = year.clamp(0, 9999) as u64;
    two(y / 100, &mut out[12..14]);
    two(y % 100, &mut out[14..16]);
    two(rem / 3600, &mut out[17..19]);
    two(rem / 60 % 60, &mut out[20..22]);
    two(rem % 60, &mut out[23..25]);
    out
}

/// The reason phrase Envoy writes for `status` (it never passes an upstream's own phrase on).
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        102 => "Processing",
        103 => "Early Hints",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        207 => "Multi-Status",
        208 => "Already Reported",
        226 => "IM Used",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        305 => "Use Proxy",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Payload Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Entity",
        423 => "Locked",
        424 => "Failed Dependency",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        _ => "Unknown",
    }
}

pub fn header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `http10`: the client spoke HTTP/1.0, and is answered in it (as Envoy does).
pub fn status_line(out: &mut Vec<u8>, status: u16, http10: bool) {
    out.extend_from_slice(if http10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
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

/// A complete local reply, as Envoy writes its own: length, type when there is a body, date, server.
/// A reply to a HEAD request carries no body bytes.
pub fn local(out: &mut Vec<u8>, reply: &LocalReply, date: &DateCache, server: &str, head_request: bool) {
    status_line(out, reply.status, reply.http10);
    if let Some(location) = &reply.location {
        header(out, b"location", location.as_bytes());
    }
    if reply.overloaded {
        header(out, b"x-envoy-overloaded", b"true");
    }
    let length = |out: &mut Vec<u8>| {
        out.extend_from_slice(b"content-length: ");
        push_u64(out, reply.body.len() as u64);
        out.extend_from_slice(b"\r\n");
    };
    // Envoy's codec writes the length of a response that has no body (a local reply without
    // one, or one a filter encoded itself) after every other header.
    let length_last = reply.encoded || reply.body.is_empty();
    if !length_last {
        length(out);
    }
    // Envoy's codec frames a trailers-only answer to a HEAD request as chunked (and sends no chunk).
    let grpc_head = reply.trailers_only && head_request;
    // A filter's reply may bring its own type (an authorization service's denial does).
    if !reply.body.is_empty() && !has_content_type(&reply.headers) {
        header(out, b"content-type", b"text/plain");
    }
    out.extend_from_slice(&reply.headers);
    out.extend_from_slice(&reply.encode_headers);
    date.write(out);
    header(out, b"server", server.as_bytes());
    if reply.close {
        header(out, b"connection", b"close");
    } else if reply.http10 {
        // An HTTP/1.0 client that asked to keep the connection is told it stays, as by Envoy.
        header(out, b"connection", b"keep-alive");
    }
    if grpc_head {
        header(out, b"transfer-encoding", b"chunked");
    } else if length_last {
        length(out);
    }
    out.extend_from_slice(b"\r\n");
    if !head_request {
        out.extend_from_slice(&reply.body);
    }
}

fn has_content_type(lines: &[u8]) -> bool {
    lines.split(|b| *b == b'\n').any(is_content_type_line)
}

fn is_content_type_line(line: &[u8]) -> bool {
    line.len() > 13 && line[..13].eq_ignore_ascii_case(b"content-type:")
}

/// A random (v4) UUID, as Envoy generates for `x-request-id`.
pub fn request_id(rng: &Rng, out: &mut Vec<u8>) {
    out.extend_from_slice(&request_id_bytes(rng));
}

/// `request_id` on the stack: this runs per request, so no allocation.
pub fn request_id_bytes(rng: &Rng) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hi = (rng.next() & 0xffff_ffff_ffff_0fff) | 0x4000;
    let lo = (rng.next() & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    let mut out = [0u8; 36];
    let mut at = 0;
    for (i, b) in hi.to_be_bytes().iter().chain(lo.to_be_bytes().iter()).enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[at] = b'-';
            at += 1;
        }
        out[at] = HEX[(b >> 4) as usize];
        out[at + 1] = HEX[(b & 15) as usize];
        at += 2;
    }
    out
}

/// Envoy's `%RESPONSE_CODE_DETAILS%` words (`StreamInfo::ResponseCodeDetails`), one per reason a
/// response is what it is. Chosen where the reply is made: never formatted per request.
pub mod details {
    pub const VIA_UPSTREAM: &str = "via_upstream";
    pub const DIRECT_RESPONSE: &str = "direct_response";
    pub const ROUTE_NOT_FOUND: &str = "route_not_found";
    pub const CLUSTER_NOT_FOUND: &str = "cluster_not_found";
    pub const NO_HEALTHY_UPSTREAM: &str = "no_healthy_upstream";
    pub const UPGRADE_FAILED: &str = "upgrade_failed";
    pub const LOW_VERSION: &str = "low_version";
    pub const MISSING_HOST_HEADER: &str = "missing_host_header";
    pub const RESPONSE_TIMEOUT: &str = "response_timeout";
    pub const PER_TRY_TIMEOUT: &str = "upstream_per_try_timeout";
    pub const PER_TRY_IDLE_TIMEOUT: &str = "upstream_per_try_idle_timeout";
    pub const STREAM_IDLE_TIMEOUT: &str = "stream_idle_timeout";
    pub const REQUEST_OVERALL_TIMEOUT: &str = "request_overall_timeout";
    pub const MAX_DURATION_TIMEOUT: &str = "max_duration_timeout";
    pub const REQUEST_HEADER_TIMEOUT: &str = "request_header_timeout";
    pub const DOWNSTREAM_REMOTE_DISCONNECT: &str = "downstream_remote_disconnect";
    /// A refused connection (`UF`): Envoy adds the socket's error text, which for loopback and
    /// most real failures is "Connection refused".
    pub const CONNECT_FAILURE: &str =
        "upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}";
    pub const CONNECT_TIMEOUT: &str = "upstream_reset_before_response_started{connection_timeout}";
    pub const RESET_BEFORE_RESPONSE: &str = "upstream_reset_before_response_started{connection_termination}";
    pub const RESET_AFTER_RESPONSE: &str = "upstream_reset_after_response_started{connection_termination}";
    pub const OVERFLOW: &str = "upstream_reset_before_response_started{overflow}";
    pub const PROTOCOL_ERROR: &str = "upstream_reset_before_response_started{protocol_error}";
    pub const CODEC_ERROR: &str = "http1.codec_error";
    pub const INVALID_CHARACTERS: &str = "http1.invalid_characters";
    pub const INVALID_URL: &str = "http1.invalid_url";
    pub const BODY_DISALLOWED: &str = "http1.body_disallowed";
    pub const INVALID_TRANSFER_ENCODING: &str = "http1.invalid_transfer_encoding";
    pub const HEADERS_TOO_LARGE: &str = "http1.headers_too_large";
    pub const TOO_MANY_HEADERS: &str = "http1.too_many_headers";
    pub const UNEXPECTED_UNDERSCORE: &str = "http1.unexpected_underscore";

    /// The codec's word for a request head it refuses.
    pub fn of_head_error(e: &crate::http::HeadError) -> &'static str {
        use crate::http::HeadError;
        match e {
            HeadError::TooLarge => HEADERS_TOO_LARGE,
            HeadError::TooManyHeaders => TOO_MANY_HEADERS,
            HeadError::NotImplemented(_) => INVALID_TRANSFER_ENCODING,
            // A control byte in the request line is refused by the parser as a bad token.
            HeadError::Malformed(
                "control byte in head" | "invalid header value" | "invalid method or target",
            ) => INVALID_CHARACTERS,
            // A CONNECT target that is not `host:port`.
            HeadError::Malformed("CONNECT target is not host:port") => INVALID_URL,
            HeadError::Malformed("CONNECT with a body") => BODY_DISALLOWED,
            // Envoy's connection manager refuses it, after the codec.
            HeadError::Malformed("missing Host header") => MISSING_HOST_HEADER,
            HeadError::Malformed(_) => CODEC_ERROR,
        }
    }

    /// Whether a request replied to with `details` had reached Envoy's connection manager, which
    /// gives it its request id: all but the codec's refusals of the head and the manager's own
    /// refusals made before it generates the id.
    pub fn after_request_id(details: &str) -> bool {
        !matches!(
            details,
            LOW_VERSION
                | MISSING_HOST_HEADER
                | INVALID_CHARACTERS
                | INVALID_URL
                | BODY_DISALLOWED
                | INVALID_TRANSFER_ENCODING
                | HEADERS_TOO_LARGE
                | TOO_MANY_HEADERS
                | UNEXPECTED_UNDERSCORE
                | REQUEST_HEADER_TIMEOUT
        )
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
        local(&mut out, &LocalReply::new(503, b"no healthy upstream"), &DateCache::default(), "envoy", false);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(s.contains("content-length: 19\r\n"));
        assert!(s.contains("\r\ndate: ") && s.contains(" GMT\r\n"), "{s}");
        assert!(s.ends_with("\r\n\r\nno healthy upstream"));
    }

    /// The lines of `reply` as written, but its `date`.
    fn written_lines(reply: &LocalReply) -> Vec<String> {
        let mut out = Vec::new();
        local(&mut out, reply, &DateCache::default(), "envoy", false);
        let s = String::from_utf8(out).unwrap();
        s.split("\r\n").filter(|l| !l.starts_with("date: ")).map(str::to_string).collect()
    }

    /// As Envoy's codec writes a response a filter encoded itself (the CORS preflight answer).
    #[test]
    fn an_encoded_reply_has_its_length_last_and_no_type() {
        let mut reply = LocalReply::new(200, b"").closing();
        reply.encoded = true;
        reply.headers = b"access-control-allow-origin: http://a.com\r\n".to_vec();
        assert_eq!(
            written_lines(&reply),
            [
                "HTTP/1.1 200 OK",
                "access-control-allow-origin: http://a.com",
                "server: envoy",
                "connection: close",
                "content-length: 0",
                "",
                ""
            ]
        );
    }

    /// As Envoy's codec writes a local reply without a body (a redirect, a 404): its length last.
    #[test]
    fn a_bodiless_reply_has_its_length_last_and_an_http10_one_says_keep_alive() {
        let mut reply = LocalReply::new(404, b"");
        reply.http10 = true;
        assert_eq!(
            written_lines(&reply),
            [
                "HTTP/1.0 404 Not Found",
                "server: envoy",
                "connection: keep-alive",
                "content-length: 0",
                "",
                ""
            ]
        );
    }

    #[test]
    fn head_errors_get_the_codecs_details_and_no_request_id() {
        use crate::http::HeadError;
        assert_eq!(details::of_head_error(&HeadError::TooLarge), "http1.headers_too_large");
        assert_eq!(
            details::of_head_error(&HeadError::Malformed("invalid header value")),
            "http1.invalid_characters"
        );
        assert_eq!(details::of_head_error(&HeadError::Malformed("obs-fold in header")), "http1.codec_error");
        assert_eq!(
            details::of_head_error(&HeadError::NotImplemented("x")),
            "http1.invalid_transfer_encoding"
        );
        assert!(!details::after_request_id(details::LOW_VERSION));
        assert!(!details::after_request_id(details::MISSING_HOST_HEADER));
        assert!(details::after_request_id(details::ROUTE_NOT_FOUND));
        assert!(details::after_request_id("fault_filter_abort"));
    }

    /// Envoy's trailers-only answer: 200, the filter's own lines first, its type replaced by
    /// gRPC's, the mapped status, the body percent-encoded as the message; none on HEAD.
    #[test]
    fn a_reply_to_a_grpc_request_is_trailers_only() {
        let mut reply = LocalReply::new(403, b"no: 100% \xc3\xa9~\n");
        reply.headers = b"x-deny: d\r\ncontent-type: text/plain\r\n".to_vec();
        assert_eq!(
            written_lines(&reply.clone().into_grpc(false)),
            [
                "HTTP/1.1 200 OK",
                "x-deny: d",
                "content-type: application/grpc",
                "grpc-status: 7",
                "grpc-message: no: 100%25 %C3%A9%7E%0A",
                "server: envoy",
                "content-length: 0",
                "",
                ""
            ]
        );
        let mut own = LocalReply::new(504, b"downstream duration timeout");
        own.grpc_status = Some(4);
        let head = own.into_grpc(true);
        assert!(head.trailers_only && head.body.is_empty() && head.status == 200);
        assert_eq!(head.headers, b"content-type: application/grpc\r\ngrpc-status: 4\r\n");
        let mut out = Vec::new();
        local(&mut out, &head, &DateCache::default(), "envoy", true);
        assert!(String::from_utf8_lossy(&out).ends_with("transfer-encoding: chunked\r\n\r\n"));
    }

    #[test]
    fn http_statuses_map_to_grpc_codes_as_envoys() {
        let pairs = [(400, 13), (401, 16), (403, 7), (404, 12), (429, 14), (502, 14), (503, 14), (504, 14)];
        for (http, grpc) in pairs {
            assert_eq!(grpc_status_of(http), grpc, "{http}");
        }
        assert!([200, 302, 408, 413, 500, 501].iter().all(|s| grpc_status_of(*s) == 2));
    }

    #[test]
    fn dates_are_imf_fixdate() {
        assert_eq!(&imf_fixdate(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&imf_fixdate(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&imf_fixdate(1_798_761_600), b"Fri, 01 Jan 2027 00:00:00 GMT");
    }
}
