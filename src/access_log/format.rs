//! Envoy text access-log formats: parsed once into pieces, rendered per request into a byte buffer.

use super::num::push_u64;
use super::record::{Captured, Record, Wanted};
use super::time::{self, TimePiece};
use std::fmt;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

/// Envoy's default access-log format (`SubstitutionFormatUtils::defaultSubstitutionFormatter`).
pub const ENVOY_DEFAULT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% \
%PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% \
%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \
\"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

/// A format string that cannot be used; the message names the offending operator and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    message: String,
}

impl FormatError {
    fn new(message: String) -> FormatError {
        FormatError { message }
    }

    pub(crate) fn too_many_headers() -> FormatError {
        FormatError::new("the access log formats read more than 65535 distinct headers".into())
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid access log format: {}", self.message)
    }
}

impl std::error::Error for FormatError {}

/// A parsed access-log format. Header names it reads are indexed in its own `Wanted` sets until
/// `AccessLogs` re-indexes every format of an HCM into one shared pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Format {
    pieces: Vec<Piece>,
    req: Wanted,
    resp: Wanted,
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Lit(Box<[u8]>),
    Op(Op),
}

/// Where a `%REQ()%` / `%RESP()%` value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Src {
    Method,
    Path,
    Authority,
    Scheme,
    Status,
    /// Index into the format's request or response `Wanted`.
    Header(u16),
    /// A pseudo-header HTTP/1.1 never has: always `-`.
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HeaderOp {
    main: Src,
    alt: Option<Src>,
    max: Option<usize>,
    strip_query: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Op {
    StartTime(Box<[TimePiece]>),
    Req(HeaderOp),
    Resp(HeaderOp),
    /// Operators skiff never has a value for (trailers on HTTP/1.1 without TLS, SNI): always `-`.
    Dash,
    Protocol,
    ResponseCode,
    CodeDetails,
    Flags,
    FlagsLong,
    BytesReceived,
    BytesSent,
    Duration,
    RequestDuration,
    ResponseDuration,
    ResponseTxDuration,
    UpstreamHost,
    UpstreamCluster,
    UpstreamLocal,
    UpstreamFailure,
    DownstreamRemote,
    DownstreamRemoteNoPort,
    DownstreamLocal,
    DownstreamLocalNoPort,
    RouteName,
    Attempts,
    ConnectionId,
}

/// What an operator accepts, as Envoy's `CommandSyntaxChecker` checks it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Syntax {
    /// No `(...)`, no `:N`.
    Bare,
    /// `(...)` optional, no `:N`.
    OptionalParams,
    /// `(...)` required, `:N` allowed.
    Header,
}

/// Operator names and their syntax; the lookup for both parsing and the "did you mean" hint.
const OPERATORS: &[(&str, Syntax)] = &[
    ("START_TIME", Syntax::OptionalParams),
    ("REQ", Syntax::Header),
    ("REQ_WITHOUT_QUERY", Syntax::Header),
    ("RESP", Syntax::Header),
    ("TRAILER", Syntax::Header),
    ("PROTOCOL", Syntax::Bare),
    ("RESPONSE_CODE", Syntax::Bare),
    ("RESPONSE_CODE_DETAILS", Syntax::Bare),
    ("RESPONSE_FLAGS", Syntax::Bare),
    ("RESPONSE_FLAGS_LONG", Syntax::Bare),
    ("BYTES_RECEIVED", Syntax::Bare),
    ("BYTES_SENT", Syntax::Bare),
    ("DURATION", Syntax::Bare),
    ("REQUEST_DURATION", Syntax::Bare),
    ("RESPONSE_DURATION", Syntax::Bare),
    ("RESPONSE_TX_DURATION", Syntax::Bare),
    ("UPSTREAM_HOST", Syntax::Bare),
    ("UPSTREAM_REMOTE_ADDRESS", Syntax::Bare),
    ("UPSTREAM_CLUSTER", Syntax::Bare),
    ("UPSTREAM_LOCAL_ADDRESS", Syntax::Bare),
    ("UPSTREAM_TRANSPORT_FAILURE_REASON", Syntax::Bare),
    ("DOWNSTREAM_REMOTE_ADDRESS", Syntax::Bare),
    ("DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", Syntax::Bare),
    ("DOWNSTREAM_DIRECT_REMOTE_ADDRESS", Syntax::Bare),
    ("DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT", Syntax::Bare),
    ("DOWNSTREAM_LOCAL_ADDRESS", Syntax::Bare),
    ("DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT", Syntax::Bare),
    ("ROUTE_NAME", Syntax::Bare),
    ("REQUESTED_SERVER_NAME", Syntax::Bare),
    ("HOSTNAME", Syntax::Bare),
    ("UPSTREAM_REQUEST_ATTEMPT_COUNT", Syntax::Bare),
    ("CONNECTION_ID", Syntax::Bare),
];

impl Format {
    /// Parses an Envoy text format (`format`, `log_format.text_format`). The text is used as
    /// written: Envoy appends no newline to a custom format, so neither do we.
    pub fn parse(text: &str) -> Result<Format, FormatError> {
        Parser { text, bytes: text.as_bytes(), at: 0, lit: Vec::new(), format: Format::empty() }.run()
    }

    /// Envoy's default format, used when an access log gives none. Ends with `\n`.
    pub fn envoy_default() -> Format {
        static DEFAULT: OnceLock<Format> = OnceLock::new();
        DEFAULT
            .get_or_init(|| {
                // The default text is a constant covered by tests, so this branch never runs; it
                // exists so that even a broken constant cannot panic.
                Format::parse(ENVOY_DEFAULT_FORMAT).unwrap_or_else(|e| {
                    log::error!("{e}");
                    Format::empty()
                })
            })
            .clone()
    }

    fn empty() -> Format {
        Format { pieces: Vec::new(), req: Wanted::new(), resp: Wanted::new() }
    }

    /// Request header names this format reads (lower-case); `Record::request_headers` must be
    /// captured against this set (or, inside `AccessLogs`, the HCM-wide one).
    pub fn wanted_request(&self) -> &Wanted {
        &self.req
    }

    /// Response header names this format reads.
    pub fn wanted_response(&self) -> &Wanted {
        &self.resp
    }

    /// Moves this format's header indices into shared sets, so one capture per request serves
    /// every format of an HCM. Returns false only past u16::MAX distinct names.
    pub(crate) fn rebind(&mut self, req: &mut Wanted, resp: &mut Wanted) -> bool {
        for piece in &mut self.pieces {
            let (op, own, shared) = match piece {
                Piece::Op(Op::Req(op)) => (op, &self.req, &mut *req),
                Piece::Op(Op::Resp(op)) => (op, &self.resp, &mut *resp),
                _ => continue,
            };
            for src in std::iter::once(&mut op.main).chain(op.alt.as_mut()) {
                if let Src::Header(i) = *src {
                    let Some(name) = own.name(i) else { return false };
                    let Some(j) = shared.insert(name) else { return false };
                    *src = Src::Header(j);
                }
            }
        }
        true
    }

    /// After `rebind`: this format's sets are the shared ones.
    pub(crate) fn set_wanted(&mut self, req: &Wanted, resp: &Wanted) {
        self.req = req.clone();
        self.resp = resp.clone();
    }

    /// Appends one rendered line to `out`. Allocates nothing beyond `out`'s growth.
    pub fn render(&self, r: &Record<'_>, out: &mut Vec<u8>) {
        for piece in &self.pieces {
            match piece {
                Piece::Lit(bytes) => out.extend_from_slice(bytes),
                Piece::Op(op) => render_op(op, r, out),
            }
        }
    }
}

fn render_op(op: &Op, r: &Record<'_>, out: &mut Vec<u8>) {
    match op {
        Op::StartTime(pieces) => time::render(pieces, r.start, out),
        Op::Req(h) => render_header(h, r, r.request_headers, out),
        Op::Resp(h) => render_header(h, r, r.response_headers, out),
        Op::Dash => out.push(b'-'),
        Op::Protocol => text(r.protocol, out),
        // Envoy prints 0 when no response was sent (e.g. the client went away first).
        Op::ResponseCode => push_u64(r.status.into(), out),
        Op::CodeDetails => text(r.code_details, out),
        Op::Flags => r.flags.render_short(out),
        Op::FlagsLong => r.flags.render_long(out),
        Op::BytesReceived => push_u64(r.bytes_received, out),
        Op::BytesSent => push_u64(r.bytes_sent, out),
        Op::Duration => millis(Some(r.duration), out),
        Op::RequestDuration => millis(r.request_duration, out),
        Op::ResponseDuration => millis(r.response_duration, out),
        Op::ResponseTxDuration => millis(r.response_tx_duration, out),
        Op::UpstreamHost => addr(r.upstream_host, true, out),
        Op::UpstreamCluster => text(r.upstream_cluster.unwrap_or(""), out),
        Op::UpstreamLocal => addr(r.upstream_local, true, out),
        Op::UpstreamFailure => text(r.upstream_transport_failure, out),
        Op::DownstreamRemote => addr(Some(r.downstream_remote), true, out),
        Op::DownstreamRemoteNoPort => addr(Some(r.downstream_remote), false, out),
        Op::DownstreamLocal => addr(Some(r.downstream_local), true, out),
        Op::DownstreamLocalNoPort => addr(Some(r.downstream_local), false, out),
        Op::RouteName => text(r.route_name, out),
        Op::Attempts => push_u64(r.attempts.into(), out),
        Op::ConnectionId => push_u64(r.connection_id, out),
    }
}

/// A string value, `-` when empty (Envoy's "unset").
fn text(s: &str, out: &mut Vec<u8>) {
    if s.is_empty() {
        out.push(b'-');
    } else {
        out.extend_from_slice(s.as_bytes());
    }
}

/// Whole milliseconds, truncated as Envoy's `duration_cast<milliseconds>` does; `-` when unknown.
fn millis(d: Option<Duration>, out: &mut Vec<u8>) {
    match d {
        Some(d) => push_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX), out),
        None => out.push(b'-'),
    }
}

/// `ip:port` (`[v6]:port`) or the bare ip, as Envoy prints addresses; `-` when none.
fn addr(a: Option<SocketAddr>, with_port: bool, out: &mut Vec<u8>) {
    // Display for addresses writes through the formatter without allocating; writing to a Vec
    // cannot fail, so the result carries nothing.
    let _ = match (a, with_port) {
        (None, _) => {
            out.push(b'-');
            Ok(())
        }
        (Some(a), true) => write!(out, "{a}"),
        (Some(a), false) => write!(out, "{}", a.ip()),
    };
}

fn render_header(h: &HeaderOp, r: &Record<'_>, captured: &Captured, out: &mut Vec<u8>) {
    let start = out.len();
    let found =
        push_src(h.main, r, captured, out) || h.alt.is_some_and(|alt| push_src(alt, r, captured, out));
    if !found {
        out.push(b'-');
        return;
    }
    if h.strip_query {
        if let Some(q) = out[start..].iter().position(|&b| b == b'?') {
            out.truncate(start + q);
        }
    }
    if let Some(max) = h.max {
        // Envoy truncates bytes, not characters; so do we, to print the same line.
        if out.len() - start > max {
            out.truncate(start + max);
        }
    }
}

/// Appends the value of `src`; false (and nothing appended) when the request has none.
fn push_src(src: Src, r: &Record<'_>, captured: &Captured, out: &mut Vec<u8>) -> bool {
    let value: &[u8] = match src {
        Src::Method => r.method.as_bytes(),
        Src::Path => r.path.as_bytes(),
        Src::Authority => r.authority.as_bytes(),
        // skiff serves HTTP/1.1 in the clear; a TLS listener would have to pass this in.
        Src::Scheme => b"http",
        Src::Status => {
            if r.status == 0 {
                return false;
            }
            push_u64(r.status.into(), out);
            return true;
        }
        Src::Header(i) => match captured.get(i) {
            Some(v) => v,
            None => return false,
        },
        Src::Never => return false,
    };
    // Pseudo-headers come from the request line; an empty one means "not there".
    if value.is_empty() && !matches!(src, Src::Header(_)) {
        return false;
    }
    out.extend_from_slice(value);
    true
}

struct Parser<'t> {
    text: &'t str,
    bytes: &'t [u8],
    at: usize,
    lit: Vec<u8>,
    format: Format,
}

impl Parser<'_> {
    fn run(mut self) -> Result<Format, FormatError> {
        while self.at < self.bytes.len() {
            let Some(pct) = self.bytes[self.at..].iter().position(|&b| b == b'%') else {
                self.lit.extend_from_slice(&self.bytes[self.at..]);
                break;
            };
            self.lit.extend_from_slice(&self.bytes[self.at..self.at + pct]);
            self.at += pct;
            if self.bytes.get(self.at + 1) == Some(&b'%') {
                self.lit.push(b'%');
                self.at += 2;
                continue;
            }
            let op = self.operator()?;
            self.push(op);
        }
        self.flush();
        Ok(self.format)
    }

    fn flush(&mut self) {
        if !self.lit.is_empty() {
            let lit = std::mem::take(&mut self.lit).into_boxed_slice();
            self.format.pieces.push(Piece::Lit(lit));
        }
    }

    fn push(&mut self, piece: Piece) {
        if let Piece::Lit(bytes) = piece {
            self.lit.extend_from_slice(&bytes);
        } else {
            self.flush();
            self.format.pieces.push(piece);
        }
    }

    /// Parses `%NAME(params):len%` at `self.at` (which is on the `%`).
    fn operator(&mut self) -> Result<Piece, FormatError> {
        let start = self.at;
        let name_end = start
            + 1
            + self.bytes[start + 1..].iter().take_while(|b| b.is_ascii_alphanumeric() || **b == b'_').count();
        let name = &self.text[start + 1..name_end];
        if name.is_empty() {
            return Err(self.error(start, "a '%' that starts no command operator (write %% for a literal %)"));
        }
        let mut pos = name_end;
        let mut params = None;
        if self.bytes.get(pos) == Some(&b'(') {
            let Some(close) = self.bytes[pos..].iter().position(|&b| b == b')') else {
                return Err(self.error(start, &format!("%{name}(...% has no closing ')'")));
            };
            params = Some(&self.text[pos + 1..pos + close]);
            pos += close + 1;
        }
        let mut max = None;
        if self.bytes.get(pos) == Some(&b':') {
            let digits = self.bytes[pos + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
            let len = &self.text[pos + 1..pos + 1 + digits];
            match len.parse::<usize>() {
                Ok(n) => max = Some(n),
                Err(_) => {
                    return Err(
                        self.error(start, &format!("%{name}...: the length after ':' must be a number"))
                    )
                }
            }
            pos += 1 + digits;
        }
        if self.bytes.get(pos) != Some(&b'%') {
            let shown = self.text.get(start..pos.min(self.text.len())).unwrap_or(name);
            return Err(self.error(start, &format!("{shown} is not closed by '%'")));
        }
        let whole = &self.text[start..=pos];
        self.at = pos + 1;

        let Some(&(_, syntax)) = OPERATORS.iter().find(|(n, _)| *n == name) else {
            let hint = if OPERATORS.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
                " (operators are upper case)"
            } else {
                ""
            };
            return Err(self.error(start, &format!("unknown command operator {whole}{hint}")));
        };
        match syntax {
            Syntax::Bare if params.is_some() || max.is_some() => {
                return Err(self.error(start, &format!("{whole}: %{name}% takes no parameters or length")))
            }
            Syntax::OptionalParams if max.is_some() => {
                return Err(self.error(start, &format!("{whole}: %{name}% takes no length")))
            }
            Syntax::Header if params.is_none_or(str::is_empty) => {
                return Err(self.error(start, &format!("{whole}: %{name}(...)% needs a header name")))
            }
            _ => {}
        }
        let op = match name {
            "START_TIME" => {
                Op::StartTime(time::parse(params.filter(|p| !p.is_empty()).unwrap_or(time::DEFAULT)).into())
            }
            "REQ" | "REQ_WITHOUT_QUERY" | "RESP" | "TRAILER" => {
                let params = params.unwrap_or("");
                let mut names = params.split('?');
                let (main, alt) = (names.next().unwrap_or(""), names.next());
                if names.next().is_some() {
                    return Err(self.error(start, &format!("{whole}: more than one alternative header")));
                }
                if main.is_empty() || alt.is_some_and(str::is_empty) {
                    return Err(self.error(start, &format!("{whole}: empty header name")));
                }
                let response = name == "RESP";
                if name == "TRAILER" {
                    // HTTP/1.1 trailers are not kept; Envoy prints `-` when a trailer is absent.
                    Op::Dash
                } else {
                    let main =
                        self.source(main, response).ok_or_else(|| self.error(start, "too many headers"))?;
                    let alt = match alt {
                        Some(a) => Some(
                            self.source(a, response).ok_or_else(|| self.error(start, "too many headers"))?,
                        ),
                        None => None,
                    };
                    let h = HeaderOp { main, alt, max, strip_query: name == "REQ_WITHOUT_QUERY" };
                    if response {
                        Op::Resp(h)
                    } else {
                        Op::Req(h)
                    }
                }
            }
            "PROTOCOL" => Op::Protocol,
            "RESPONSE_CODE" => Op::ResponseCode,
            "RESPONSE_CODE_DETAILS" => Op::CodeDetails,
            "RESPONSE_FLAGS" => Op::Flags,
            "RESPONSE_FLAGS_LONG" => Op::FlagsLong,
            "BYTES_RECEIVED" => Op::BytesReceived,
            "BYTES_SENT" => Op::BytesSent,
            "DURATION" => Op::Duration,
            "REQUEST_DURATION" => Op::RequestDuration,
            "RESPONSE_DURATION" => Op::ResponseDuration,
            "RESPONSE_TX_DURATION" => Op::ResponseTxDuration,
            "UPSTREAM_HOST" | "UPSTREAM_REMOTE_ADDRESS" => Op::UpstreamHost,
            "UPSTREAM_CLUSTER" => Op::UpstreamCluster,
            "UPSTREAM_LOCAL_ADDRESS" => Op::UpstreamLocal,
            "UPSTREAM_TRANSPORT_FAILURE_REASON" => Op::UpstreamFailure,
            "DOWNSTREAM_REMOTE_ADDRESS" | "DOWNSTREAM_DIRECT_REMOTE_ADDRESS" => Op::DownstreamRemote,
            "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" | "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT" => {
                Op::DownstreamRemoteNoPort
            }
            "DOWNSTREAM_LOCAL_ADDRESS" => Op::DownstreamLocal,
            "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT" => Op::DownstreamLocalNoPort,
            "ROUTE_NAME" => Op::RouteName,
            "REQUESTED_SERVER_NAME" => Op::Dash,
            // The host name cannot change under a running format; resolve it now, not per line.
            "HOSTNAME" => return Ok(Piece::Lit(hostname().as_bytes().into())),
            "UPSTREAM_REQUEST_ATTEMPT_COUNT" => Op::Attempts,
            "CONNECTION_ID" => Op::ConnectionId,
            // OPERATORS and this match list the same names; a mismatch is a bug caught by tests.
            _ => return Err(self.error(start, &format!("unknown command operator {whole}"))),
        };
        Ok(Piece::Op(op))
    }

    /// Maps a header name of `%REQ()%`/`%RESP()%` to where its value is found.
    fn source(&mut self, name: &str, response: bool) -> Option<Src> {
        let lower = name.to_ascii_lowercase();
        let src = match (response, lower.as_str()) {
            (false, ":method") => Src::Method,
            (false, ":path") => Src::Path,
            // HTTP/1.1's Host is Envoy's :authority; `%REQ(HOST)%` means the same thing.
            (false, ":authority" | "host") => Src::Authority,
            (false, ":scheme") => Src::Scheme,
            (true, ":status") => Src::Status,
            (_, n) if n.starts_with(':') => Src::Never,
            (false, n) => Src::Header(self.format.req.insert(n)?),
            (true, n) => Src::Header(self.format.resp.insert(n)?),
        };
        Some(src)
    }

    fn error(&self, at: usize, what: &str) -> FormatError {
        FormatError::new(format!("{what} at byte {at} of {:?}", self.text))
    }
}

/// This machine's host name, looked up once per process (`%HOSTNAME%`); `-` if it cannot be read.
fn hostname() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        let mut buf = [0u8; 256];
        // SAFETY: the pointer and length describe `buf`, which outlives the call.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        match (rc, std::str::from_utf8(&buf[..len])) {
            (0, Ok(name)) if !name.is_empty() => name.to_owned(),
            _ => "-".to_owned(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_log::ResponseFlags;
    use std::time::{SystemTime, UNIX_EPOCH};

    fn record<'a>(req: &'a Captured, resp: &'a Captured) -> Record<'a> {
        Record {
            start: UNIX_EPOCH + Duration::new(1_460_751_420, 310_000_000),
            duration: Duration::from_micros(226_900),
            request_duration: None,
            response_duration: None,
            response_tx_duration: None,
            method: "GET",
            path: "/a?b=c",
            authority: "example.com",
            protocol: "HTTP/1.1",
            status: 200,
            code_details: "",
            flags: ResponseFlags::empty(),
            bytes_received: 0,
            bytes_sent: 0,
            upstream_host: None,
            upstream_cluster: None,
            upstream_local: None,
            upstream_transport_failure: "",
            attempts: 0,
            downstream_remote: "10.0.0.1:5000".parse().expect("addr"),
            downstream_local: "[::1]:10000".parse().expect("addr"),
            route_name: "",
            connection_id: 0,
            request_headers: req,
            response_headers: resp,
        }
    }

    fn render(text: &str, r: &Record<'_>) -> String {
        let f = Format::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let mut out = Vec::new();
        f.render(r, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    fn err(text: &str) -> String {
        match Format::parse(text) {
            Ok(f) => panic!("{text:?} should fail, parsed as {f:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn every_listed_operator_parses() {
        for (name, syntax) in OPERATORS {
            let text = match syntax {
                Syntax::Header => format!("%{name}(x-a?:path):3%"),
                _ => format!("%{name}%"),
            };
            assert!(Format::parse(&text).is_ok(), "{text}");
        }
    }

    #[test]
    fn literals_and_percent() {
        let (a, b) = (Captured::new(), Captured::new());
        let r = record(&a, &b);
        assert_eq!(render("", &r), "");
        assert_eq!(render("plain text\n", &r), "plain text\n");
        assert_eq!(render("100%% %PROTOCOL%%%", &r), "100% HTTP/1.1%");
        assert_eq!(render("é%RESPONSE_CODE%ü", &r), "é200ü");
    }

    #[test]
    fn header_sources() {
        let mut req = Captured::new();
        let f =
            Format::parse("%REQ(X-A)% %REQ(x-b?X-A)% %REQ(:SCHEME)% %REQ(HOST)% %REQ(:foo)% %RESP(:STATUS)%")
                .expect("parse");
        let wanted = f.wanted_request().clone();
        assert_eq!(wanted.names().collect::<Vec<_>>(), ["x-a", "x-b"]);
        req.capture(&wanted, [("X-A", "1")]);
        let resp = Captured::new();
        let mut out = Vec::new();
        f.render(&record(&req, &resp), &mut out);
        assert_eq!(out, b"1 1 http example.com - 200");
    }

    #[test]
    fn req_without_query_and_truncation() {
        let (a, b) = (Captured::new(), Captured::new());
        let r = record(&a, &b);
        assert_eq!(render("%REQ_WITHOUT_QUERY(:PATH)%", &r), "/a");
        assert_eq!(render("%REQ_WITHOUT_QUERY(:PATH):1%", &r), "/");
        assert_eq!(render("%REQ(:PATH):0%|%REQ(:PATH):100%", &r), "|/a?b=c");
        let mut r = r;
        r.status = 0;
        assert_eq!(render("%RESP(:STATUS)% %RESPONSE_CODE%", &r), "- 0");
        r.method = "";
        assert_eq!(render("%REQ(:METHOD)%", &r), "-");
    }

    #[test]
    fn errors_name_the_operator() {
        assert!(err("%FOO%").contains("unknown command operator %FOO%"), "{}", err("%FOO%"));
        assert!(err("a %protocol% b").contains("%protocol% (operators are upper case)"));
        assert!(err("%PROTOCOL(x)%").contains("%PROTOCOL(x)%: %PROTOCOL% takes no parameters or length"));
        assert!(err("%DURATION:3%").contains("takes no parameters or length"));
        assert!(err("%START_TIME(%s):3%").contains("%START_TIME% takes no length"));
        assert!(err("%REQ%").contains("%REQ%: %REQ(...)% needs a header name"));
        assert!(err("%REQ()%").contains("needs a header name"));
        assert!(err("%REQ(a?b?c)%").contains("more than one alternative header"));
        assert!(err("%REQ(a?)%").contains("empty header name"));
        assert!(err("%REQ(a").contains("%REQ(...% has no closing ')'"));
        assert!(err("%REQ(a):x%").contains("the length after ':' must be a number"));
        assert!(err("%REQ(a):99999999999999999999999%").contains("must be a number"));
        assert!(err("%PROTOCOL").contains("%PROTOCOL is not closed by '%'"));
        assert!(err("50%").contains("a '%' that starts no command operator"));
        assert!(err("x % y").contains("at byte 2 of \"x % y\""));
        assert!(err("%RESPONSE_CODE% %UPSTREAM_HOSTS%").contains("%UPSTREAM_HOSTS%"));
    }

    #[test]
    fn default_format_parses() {
        assert_eq!(Format::parse(ENVOY_DEFAULT_FORMAT).as_ref(), Ok(&Format::envoy_default()));
        let f = Format::envoy_default();
        assert_eq!(
            f.wanted_request().names().collect::<Vec<_>>(),
            ["x-envoy-original-path", "x-forwarded-for", "user-agent", "x-request-id"]
        );
        assert_eq!(f.wanted_response().names().collect::<Vec<_>>(), ["x-envoy-upstream-service-time"]);
    }

    /// The parser must return, never panic, whatever bytes it is given: random strings built from
    /// the characters that matter to it, with a fixed xorshift seed so failures reproduce.
    #[test]
    fn fuzz_parser_and_renderer() {
        const ALPHABET: &[&str] = &[
            "%",
            "%%",
            "(",
            ")",
            ":",
            "?",
            "1",
            "9",
            "A",
            "REQ",
            "RESP",
            "START_TIME",
            "PROTOCOL",
            "TRAILER",
            ":PATH",
            "X-A",
            "é",
            " ",
            "\n",
            "%s",
            "%3f",
            "%E",
            "%Y",
            "_",
            "HOSTNAME",
            "RESPONSE_FLAGS",
            "z",
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (a, b) = (Captured::new(), Captured::new());
        let mut r = record(&a, &b);
        r.start = SystemTime::now();
        let mut ok = 0;
        for _ in 0..20_000 {
            let len = next() % 12;
            let mut text = String::new();
            for _ in 0..len {
                text.push_str(ALPHABET[(next() % ALPHABET.len() as u64) as usize]);
            }
            if let Ok(f) = Format::parse(&text) {
                ok += 1;
                let mut out = Vec::new();
                f.render(&r, &mut out);
            }
        }
        // Both paths were exercised.
        assert!(ok > 100 && ok < 20_000, "{ok}");
    }
}
