//! What the HTTP filters decided for one request (`Verdict`), the per-request state a decision
//! holds until the request ends (`ActiveFault`), and what the filters know of the connection
//! manager (`Scheme`). Shared by the chain and its filters; owns no decision itself.

use super::ext_authz_grpc::{CallError, GrpcCheck};
use crate::access_log::ResponseFlags;
use crate::config::Fraction;
use crate::http::RequestHead;
use crate::stats::FaultStats;
use std::borrow::Cow;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A filter's own reply (the router never sees the request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterReply {
    pub status: u16,
    pub body: std::borrow::Cow<'static, [u8]>,
    pub flag: ResponseFlags,
    /// Header lines (`name: value\r\n`) the reply carries besides skiff's own.
    pub headers: Vec<u8>,
    /// `%RESPONSE_CODE_DETAILS%` of the reply; empty: none (logged `-`).
    pub details: std::borrow::Cow<'static, str>,
    /// The `grpc-status` a gRPC request gets instead of the one `status` maps to (a fault's
    /// `grpc_status`, a rate limit's RESOURCE_EXHAUSTED).
    pub grpc_status: Option<u32>,
}

/// What the connection manager makes of a request's scheme before its filters run (Envoy sets
/// `x-forwarded-proto` first): the listener's TLS, and whether a client's claim is replaced.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scheme {
    pub tls: bool,
    /// `use_remote_address`: the connection's scheme replaces the client's `x-forwarded-proto`.
    pub edge: bool,
}

/// What the chain decided for one request, carried out by the request owner and held until the
/// request ends (it holds the active-fault count).
#[derive(Debug, Default)]
pub struct Verdict<'a> {
    /// Answer the request with this.
    pub reply: Option<FilterReply>,
    /// Wait this long first (the fault filter's delay), then reply or forward.
    pub delay: Option<Duration>,
    /// Flags the request logs whatever happens next (`DI`).
    pub flags: ResponseFlags,
    /// Header lines to add to the upstream request.
    pub request_headers: Vec<u8>,
    /// Header lines to add to the upstream's response.
    pub response_headers: Vec<u8>,
    /// `response_headers` replace the upstream's headers of the same names where they stand
    /// (Envoy's `setInline`, as the CORS filter sets its headers); the others are appended.
    pub response_headers_replace: bool,
    /// `reply` is a response the filter wrote itself (Envoy's `encodeHeaders`, as the CORS
    /// preflight answer), not a local reply (`sendLocalReply`): it has no body or content-type,
    /// and Envoy's codec writes its `content-length: 0` after `date` and `server`.
    pub encoded_reply: bool,
    /// Lower-cased names of request headers not to send upstream (a JWT not forwarded, claim
    /// headers a client sent); the filters' own `request_headers` are added after.
    pub remove_request_headers: Vec<&'a str>,
    /// The path (and query) to send upstream instead of the client's (a JWT query parameter
    /// removed); route rewrites apply to it.
    pub path: Option<String>,
    pub(super) fault: Option<ActiveFault<'a>>,
    /// An exchange with a cluster the request owner awaits (after any delay) before carrying out
    /// the rest; its outcome may replace `reply` or add header lines.
    pub check: Option<Check>,
    /// The chain has compressor filters: they decide when the response head arrives.
    pub compress: Option<CompressAsk>,
}

/// What the compressor filters keep of the request for the response: its `accept-encoding`.
#[derive(Debug)]
pub struct CompressAsk {
    pub accept_encoding: Option<Box<[u8]>>,
    /// The compressor filters that saw `accept-encoding` (none after one that removed it), by
    /// their stat index (bit i: index i).
    pub saw_accept: u64,
    /// A filter removed `accept-encoding` from the upstream request.
    pub remove_accept_encoding: bool,
    /// The compressor filters a `CompressorPerRoute` turns off for this request, by their stat
    /// index (bit i: index i).
    pub disabled: u64,
}

impl<'a> Verdict<'a> {
    /// The verdict to keep for the request: None when the filters decided nothing, so an
    /// untriggered filter costs the request no allocation.
    pub fn kept(self) -> Option<Box<Verdict<'a>>> {
        let nothing = self.reply.is_none()
            && self.delay.is_none()
            && self.flags == ResponseFlags::NONE
            && self.request_headers.is_empty()
            && self.response_headers.is_empty()
            && self.remove_request_headers.is_empty()
            && self.path.is_none()
            && self.fault.is_none()
            && self.check.is_none()
            && self.compress.is_none();
        (!nothing).then(|| Box::new(self))
    }
}

/// A filter's asynchronous step: an HTTP/1.1 request to one of the snapshot's clusters, sent by
/// the request owner (`shard::check`) within `timeout`, whose answer the filter that asked then
/// decides on (`Check::decide`). A request whose filters ask nothing pays nothing for it.
#[derive(Debug)]
pub struct Check {
    pub cluster: usize,
    pub timeout: Duration,
    /// The request head, without its framing: `add_body` writes `content-length` at `framing_at`
    /// and appends the body.
    pub(super) request: Vec<u8>,
    pub(super) framing_at: usize,
    /// The request's body goes along, up to this many bytes (ext_authz's `with_request_body`).
    pub(super) body: Option<crate::config::ExtAuthzBody>,
    /// The asking filter's place in the chain, which decides on the answer
    /// (`FilterChain::decide`).
    pub(super) filter: usize,
    /// A gRPC check: its call, encoded when sent (`request` is then unused).
    pub(super) grpc: Option<Box<GrpcCheck>>,
}

/// The answer to a check: its status, its header lines (names lower-cased), its body, and the
/// trailers of a chunked one.
#[derive(Debug, Default)]
pub struct CheckAnswer {
    pub status: u16,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Why a check has no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckFailure {
    /// No healthy host, or a circuit breaker refused the exchange.
    NoHost,
    Connect,
    Timeout,
    /// The connection broke or the answer was not HTTP/1.1 skiff could read.
    Exchange,
    /// The service answered with a status that counts as a failure (a 5xx).
    Status(u16),
    /// A gRPC call failed (its HTTP status, its `grpc-status`, or its message).
    Grpc(CallError),
}

/// A reply a check decided on: owned, unlike a synchronous filter's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReply {
    pub status: u16,
    pub body: Vec<u8>,
    /// Header lines (`name: value\r\n`).
    pub headers: Vec<u8>,
    pub flag: ResponseFlags,
    /// `%RESPONSE_CODE_DETAILS%`: `ext_authz_denied` or `ext_authz_error`, as Envoy's.
    pub details: &'static str,
}

/// What a check decided: a reply instead of the request's own outcome, or header lines for
/// the upstream request (set, replacing lines of the same name, or appended) and for the
/// response.
#[derive(Debug, Default)]
pub struct CheckOutcome {
    pub reply: Option<CheckReply>,
    pub request_headers_set: Vec<(Vec<u8>, Vec<u8>)>,
    pub request_headers_append: Vec<u8>,
    /// Appended to the first line of the same name (`, value`), or added (a gRPC service's
    /// `append: true`).
    pub request_headers_join: Vec<(Vec<u8>, Vec<u8>)>,
    /// Lower-case names of the request headers to remove.
    pub request_headers_remove: Vec<Vec<u8>>,
    pub response_headers: Vec<u8>,
}

impl Check {
    /// Completes the request with the client's body as far as it has arrived (`body`, the
    /// payload; `whole`: all of it). A body over the limit is cut (`allow_partial_message`) or
    /// refused with Envoy's 413.
    pub fn add_body(&mut self, body: &[u8], whole: bool) -> Result<(), CheckReply> {
        let sent = match self.body {
            Some(limit) if !body.is_empty() => {
                let max = limit.max_request_bytes as usize;
                let over = body.len() > max || (!whole && body.len() == max);
                if over && !limit.allow_partial_message {
                    return Err(CheckReply {
                        status: 413,
                        body: b"Payload Too Large".to_vec(),
                        headers: Vec::new(),
                        flag: ResponseFlags::NONE,
                        details: "request_payload_too_large",
                    });
                }
                Some((&body[..body.len().min(max)], over || !whole))
            }
            _ => None,
        };
        if let Some(grpc) = self.grpc.as_mut() {
            let received = if self.body.is_some() { body.len() } else { 0 };
            grpc.add_body(sent, received, self.body);
            return Ok(());
        }
        let mut framing = Vec::with_capacity(64);
        let sent = match sent {
            Some((sent, partial)) => {
                push_header(&mut framing, b"content-length", sent.len().to_string().as_bytes());
                let partial: &[u8] = if partial { b"true" } else { b"false" };
                push_header(&mut framing, b"x-envoy-auth-partial-body", partial);
                sent
            }
            None => {
                push_header(&mut framing, b"content-length", b"0");
                &[]
            }
        };
        let framed = framing.len();
        self.request.splice(self.framing_at..self.framing_at, framing);
        self.framing_at += framed;
        self.request.extend_from_slice(sent);
        Ok(())
    }

    /// Adds header lines to the request's head (after its framing).
    pub(super) fn add_lines(&mut self, lines: &[u8]) {
        self.request.splice(self.framing_at..self.framing_at, lines.iter().copied());
    }

    /// Whether the check wants the request's body.
    pub fn wants_body(&self) -> bool {
        self.body.is_some()
    }

    /// The bytes to send (after `add_body`).
    pub fn request(&self) -> Cow<'_, [u8]> {
        match &self.grpc {
            Some(grpc) => Cow::Owned(grpc.encode()),
            None => Cow::Borrowed(&self.request),
        }
    }
}

/// What the fault filter of one connection manager shares across its configs and shards: the
/// process-wide count of requests with a fault in progress (Envoy's `active_faults`, which
/// `max_active_faults` is checked against). Touched only by requests a fault is injected into.
#[derive(Debug, Default)]
pub struct Active(AtomicU64);

impl Active {
    pub(super) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Holds `active_faults` (the shard's gauge and the process-wide count) up while a request with
/// an injected fault lives.
#[derive(Debug)]
pub struct ActiveFault<'a> {
    active: &'a Active,
    stats: Rc<FaultStats>,
}

impl<'a> ActiveFault<'a> {
    pub(super) fn begin(active: &'a Active, stats: Rc<FaultStats>) -> Self {
        active.0.fetch_add(1, Ordering::Relaxed);
        stats.active_faults.inc();
        ActiveFault { active, stats }
    }
}

impl Drop for ActiveFault<'_> {
    fn drop(&mut self) {
        self.active.0.fetch_sub(1, Ordering::Relaxed);
        self.stats.active_faults.dec();
    }
}

/// Whether a fraction applies to this request; `roll` is uniformly random.
pub(super) fn hit(f: Fraction, roll: u64) -> bool {
    f.per_million >= 1_000_000 || (roll % 1_000_000) < u64::from(f.per_million)
}

/// `hit`, drawing a random number only for a fraction strictly between 0 and 100 % (the cost of
/// a filter that is simply on or off).
pub(super) fn draw(f: Fraction, roll: &mut dyn FnMut() -> u64) -> bool {
    match f.per_million {
        0 => false,
        p if p >= 1_000_000 => true,
        _ => hit(f, roll()),
    }
}

/// The first value of the request header `name`.
pub(super) fn header<'h>(head: &RequestHead<'h>, name: &str) -> Option<&'h [u8]> {
    head.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
}

/// The request header `name` as Envoy keeps an inline header (`origin`, `referer`): its repeated
/// lines joined by `,`. Borrowed unless it is repeated.
pub(super) fn joined_header<'h>(head: &RequestHead<'h>, name: &str) -> Option<Cow<'h, [u8]>> {
    let mut lines = head.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name));
    let first = lines.next()?.value;
    let mut joined = Cow::Borrowed(first);
    for more in lines {
        let out = joined.to_mut();
        out.push(b',');
        out.extend_from_slice(more.value);
    }
    Some(joined)
}

/// Appends one header line.
pub(super) fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: Option<crate::config::ExtAuthzBody>) -> Check {
        let request = b"POST /p HTTP/1.1\r\nhost: a\r\nx: 1\r\n\r\n".to_vec();
        Check {
            cluster: 0,
            timeout: Duration::from_millis(200),
            request,
            framing_at: 27,
            body,
            filter: 0,
            grpc: None,
        }
    }

    #[test]
    fn a_checks_body_is_framed_cut_or_refused_by_its_limit() {
        let limit = |max, partial| {
            Some(crate::config::ExtAuthzBody {
                max_request_bytes: max,
                allow_partial_message: partial,
                pack_as_bytes: false,
            })
        };
        let text = |c: &Check| String::from_utf8_lossy(&c.request()).into_owned();
        let mut none = check(None);
        assert!(none.add_body(b"hello", true).is_ok());
        assert_eq!(text(&none), "POST /p HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\nx: 1\r\n\r\n");
        let mut whole = check(limit(8, false));
        assert!(whole.add_body(b"hello", true).is_ok());
        assert!(text(&whole)
            .ends_with("content-length: 5\r\nx-envoy-auth-partial-body: false\r\nx: 1\r\n\r\nhello"));
        let mut cut = check(limit(4, true));
        assert!(cut.add_body(b"hello", true).is_ok());
        assert!(
            text(&cut).ends_with("content-length: 4\r\nx-envoy-auth-partial-body: true\r\nx: 1\r\n\r\nhell")
        );
        let mut arriving = check(limit(8, true));
        assert!(arriving.add_body(b"he", false).is_ok());
        assert!(text(&arriving).contains("x-envoy-auth-partial-body: true"));
        assert_eq!(check(limit(4, false)).add_body(b"hello", true).map_err(|r| r.status), Err(413));
        let mut empty = check(limit(4, false));
        assert!(empty.add_body(b"", true).is_ok());
        assert!(!text(&empty).contains("partial"));
    }

    #[test]
    fn fractions_hit_in_proportion() {
        let half = Fraction { per_million: 500_000, unit: 10_000 };
        assert!(hit(half, 499_999) && !hit(half, 500_000));
        assert!(!hit(Fraction::NONE, 0));
        assert!(hit(Fraction { per_million: 1_000_000, unit: 10_000 }, u64::MAX));
    }
}
