//! Trace context on the wire: reading W3C `traceparent`/`tracestate` and Zipkin B3 (single `b3`
//! and multi `x-b3-*`) from a request, choosing this proxy's span and sampling decision, and
//! writing both formats onto the upstream request.
//!
//! Owns: header parsing and formatting, id generation and the sampling roll. Must not touch: the
//! request buffers (it reads `httparse::Header`s and appends to a caller's `Vec`), clocks, or the
//! random source (the caller passes one, so shards keep their own and tests are deterministic).
//!
//! Precedence when a request carries both formats: B3 with ids, then W3C, then a B3 sampling-only
//! header (`b3: 0`, a lone `x-b3-sampled`). B3 first because skiff stands in for Envoy's Zipkin
//! tracer, which reads B3 (single `b3` before `x-b3-*`) and nothing else; a mesh whose services
//! send both keeps the same parent/child links it had under Envoy. W3C is used when B3 is absent
//! or invalid, so a W3C-only caller still joins its trace.

use crate::config::{Tracing, TracingOperation, TracingProvider};

/// This proxy's span for one request: what goes into the span report and into the headers sent
/// upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// High 64 bits are 0 for a 64-bit trace id; B3 then writes 16 hex digits, W3C always 32.
    pub trace_id: u128,
    pub span_id: u64,
    pub parent_id: Option<u64>,
    /// `start` always decides (Some); None only in contexts built elsewhere, and then no sampling
    /// header is sent, leaving the decision to the next hop as B3 specifies.
    pub sampled: Option<bool>,
    /// B3 debug (`x-b3-flags: 1`, `b3: ...-d`): always sampled, and propagated as such.
    pub debug: bool,
    /// The span id is the caller's own (Zipkin's shared span for a SERVER span with
    /// `shared_span_context`); Zipkin wants `"shared": true` on such a span.
    pub shared: bool,
    /// Read from and written as W3C `traceparent`/`tracestate` only, B3 headers passing through
    /// untouched: Envoy's OpenTelemetry tracer.
    pub w3c_only: bool,
}

/// Which header format an incoming context came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    W3c,
    B3Single,
    B3Multi,
}

/// The caller's span, as its headers name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncomingSpan {
    pub trace_id: u128,
    pub span_id: u64,
    /// Only B3 carries the caller's parent.
    pub parent_id: Option<u64>,
}

/// What a request's headers say about its trace. Borrowed from the request buffer: nothing is
/// copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incoming<'h> {
    /// None when the caller sent only a sampling decision (`b3: 0`, a lone `x-b3-sampled`) or only
    /// `x-client-trace-id`: a new trace starts, honouring that decision.
    pub span: Option<IncomingSpan>,
    pub sampled: Option<bool>,
    pub debug: bool,
    /// The first `tracestate` header, kept only with a valid `traceparent` naming the same trace
    /// as the context used (W3C: vendors' state is meaningless without its traceparent).
    pub tracestate: Option<&'h [u8]>,
    /// `x-client-trace-id` is present: Envoy's `client_sampling` applies.
    pub client_trace_id: bool,
    /// Where `span`/`sampled` came from; None when only `x-client-trace-id` was seen.
    pub format: Option<Format>,
}

/// What `start` needs from the connection manager's tracing config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Percent (0-100) of requests without an incoming decision that are traced.
    pub random: f64,
    /// Percent of requests with `x-client-trace-id` (and no incoming decision) force traced.
    pub client: f64,
    /// Percent cap applied after `random`/`client`.
    pub overall: f64,
    /// New roots get a 128-bit trace id.
    pub trace_id_128bit: bool,
    /// Reuse the caller's span (ids and parent) instead of starting a child: Zipkin's
    /// `shared_span_context`, which Envoy applies to the SERVER span of an ingress proxy only.
    pub join_incoming_span: bool,
    /// OpenTelemetry: only W3C trace context is read and written (see `TraceContext::w3c_only`).
    pub w3c_only: bool,
}

impl Default for Sampling {
    /// Envoy's defaults without `shared_span_context`: everything traced, 64-bit ids, children.
    fn default() -> Self {
        Sampling {
            random: 100.0,
            client: 100.0,
            overall: 100.0,
            trace_id_128bit: false,
            join_incoming_span: false,
            w3c_only: false,
        }
    }
}

impl Sampling {
    pub fn from_config(t: &Tracing) -> Sampling {
        let base = Sampling {
            random: t.random_sampling,
            client: t.client_sampling,
            overall: t.overall_sampling,
            ..Sampling::default()
        };
        match &t.provider {
            TracingProvider::Zipkin(z) => Sampling {
                trace_id_128bit: z.trace_id_128bit,
                join_incoming_span: z.shared_span_context && t.operation == TracingOperation::Ingress,
                ..base
            },
            // OpenTelemetry trace ids are 128-bit; every span is a child of the caller's.
            TracingProvider::OpenTelemetry(_) => Sampling { trace_id_128bit: true, w3c_only: true, ..base },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading

/// Reads the trace context of a request. Invalid or conflicting headers are ignored (a new trace
/// starts), never an error: a caller's broken tracer must not break its requests.
pub fn extract<'h>(headers: &[httparse::Header<'h>]) -> Option<Incoming<'h>> {
    extract_as(headers, false)
}

/// `extract`, reading only W3C trace context when `w3c_only` (Envoy's OpenTelemetry tracer, which
/// ignores B3 headers).
pub fn extract_as<'h>(headers: &[httparse::Header<'h>], w3c_only: bool) -> Option<Incoming<'h>> {
    let mut traceparent: Option<&'h [u8]> = None;
    let mut traceparents = 0usize;
    let mut tracestate: Option<&'h [u8]> = None;
    let mut b3: Option<&'h [u8]> = None;
    let mut multi = B3Multi::default();
    let mut client_trace_id = false;
    for h in headers {
        let name = h.name;
        // All names of interest start with t, b or x; most headers are rejected on one byte.
        match name.as_bytes().first() {
            Some(b't' | b'T' | b'b' | b'B' | b'x' | b'X') => {}
            _ => continue,
        }
        let first = |slot: &mut Option<&'h [u8]>| {
            slot.get_or_insert(h.value);
        };
        if name.eq_ignore_ascii_case("traceparent") {
            traceparents += 1;
            first(&mut traceparent);
        } else if name.eq_ignore_ascii_case("tracestate") {
            first(&mut tracestate);
        } else if name.eq_ignore_ascii_case("b3") {
            first(&mut b3);
        } else if name.eq_ignore_ascii_case("x-b3-traceid") {
            first(&mut multi.trace_id);
        } else if name.eq_ignore_ascii_case("x-b3-spanid") {
            first(&mut multi.span_id);
        } else if name.eq_ignore_ascii_case("x-b3-parentspanid") {
            first(&mut multi.parent_id);
        } else if name.eq_ignore_ascii_case("x-b3-sampled") {
            first(&mut multi.sampled);
        } else if name.eq_ignore_ascii_case("x-b3-flags") {
            first(&mut multi.flags);
        } else if name.eq_ignore_ascii_case("x-client-trace-id") {
            client_trace_id = true;
        }
    }

    // Two traceparents cannot be told apart; W3C says to treat that as no traceparent.
    let w3c = if traceparents == 1 { traceparent.and_then(parse_traceparent) } else { None };
    let b3 = if w3c_only { None } else { b3.and_then(parse_b3_single).or_else(|| parse_b3_multi(&multi)) };
    let state_for = |trace_id: u128| match (w3c, tracestate) {
        (Some((w, _)), Some(s)) if w.trace_id == trace_id && !trim_ows(s).is_empty() => Some(s),
        _ => None,
    };

    let base =
        Incoming { span: None, sampled: None, debug: false, tracestate: None, client_trace_id, format: None };
    match (b3, w3c) {
        (Some(b), _) if b.span.is_some() => Some(Incoming {
            span: b.span,
            sampled: b.sampled,
            debug: b.debug,
            tracestate: b.span.and_then(|s| state_for(s.trace_id)),
            format: Some(b.format),
            ..base
        }),
        (_, Some((span, sampled))) => Some(Incoming {
            span: Some(span),
            sampled: Some(sampled),
            tracestate: state_for(span.trace_id),
            format: Some(Format::W3c),
            ..base
        }),
        (Some(b), None) => {
            Some(Incoming { sampled: b.sampled, debug: b.debug, format: Some(b.format), ..base })
        }
        (None, None) if client_trace_id => Some(base),
        (None, None) => None,
    }
}

#[derive(Default)]
struct B3Multi<'h> {
    trace_id: Option<&'h [u8]>,
    span_id: Option<&'h [u8]>,
    parent_id: Option<&'h [u8]>,
    sampled: Option<&'h [u8]>,
    flags: Option<&'h [u8]>,
}

#[derive(Clone, Copy)]
struct B3 {
    span: Option<IncomingSpan>,
    sampled: Option<bool>,
    debug: bool,
    format: Format,
}

/// `traceparent: {version}-{trace-id}-{parent-id}-{flags}`, W3C Trace Context level 1: lowercase
/// hex only, all-zero ids invalid, version ff invalid. Version 00 must be exactly 55 bytes; a
/// later version may append `-...`, which is ignored as the spec asks.
fn parse_traceparent(v: &[u8]) -> Option<(IncomingSpan, bool)> {
    let v = trim_ows(v);
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = parse_hex(&v[0..2], true)?;
    match version {
        0xff => return None,
        0 if v.len() != 55 => return None,
        _ if v.len() > 55 && v[55] != b'-' => return None,
        _ => {}
    }
    let trace_id = parse_hex(&v[3..35], true)?;
    let span_id = parse_hex(&v[36..52], true)? as u64;
    let flags = parse_hex(&v[53..55], true)?;
    if trace_id == 0 || span_id == 0 {
        return None;
    }
    Some((IncomingSpan { trace_id, span_id, parent_id: None }, flags & 1 == 1))
}

/// `b3: {traceid}-{spanid}[-{sampling}[-{parentspanid}]]` or `b3: {sampling}`; sampling is 0, 1
/// or d. Anything else makes the whole header invalid (the `x-b3-*` headers are tried next).
fn parse_b3_single(v: &[u8]) -> Option<B3> {
    let v = trim_ows(v);
    let mut parts = v.split(|&b| b == b'-');
    let first = parts.next()?;
    let Some(second) = parts.next() else {
        let (sampled, debug) = parse_b3_sampling(first, false)?;
        return Some(B3 { span: None, sampled: Some(sampled), debug, format: Format::B3Single });
    };
    let trace_id = parse_b3_trace_id(first)?;
    let span_id = parse_b3_span_id(second)?;
    let (sampled, debug) = match parts.next() {
        Some(s) => {
            let (s, d) = parse_b3_sampling(s, false)?;
            (Some(s), d)
        }
        None => (None, false),
    };
    let parent_id = match parts.next() {
        Some(p) => Some(parse_b3_span_id(p)?),
        None => None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some(B3 {
        span: Some(IncomingSpan { trace_id, span_id, parent_id }),
        sampled,
        debug,
        format: Format::B3Single,
    })
}

/// `x-b3-*`. Ids count only as a whole (trace id and span id valid, parent id valid if present);
/// the sampling decision counts on its own, as B3 allows a sampling-only request.
fn parse_b3_multi(m: &B3Multi<'_>) -> Option<B3> {
    let span = match (m.trace_id, m.span_id) {
        (Some(t), Some(s)) => (|| {
            let trace_id = parse_b3_trace_id(trim_ows(t))?;
            let span_id = parse_b3_span_id(trim_ows(s))?;
            let parent_id = match m.parent_id {
                Some(p) => Some(parse_b3_span_id(trim_ows(p))?),
                None => None,
            };
            Some(IncomingSpan { trace_id, span_id, parent_id })
        })(),
        _ => None,
    };
    let (mut sampled, mut debug) = match m.sampled.and_then(|s| parse_b3_sampling(trim_ows(s), true)) {
        Some((s, d)) => (Some(s), d),
        None => (None, false),
    };
    if m.flags.is_some_and(|f| trim_ows(f) == b"1") {
        debug = true;
        sampled = Some(true);
    }
    if span.is_none() && sampled.is_none() {
        return None;
    }
    Some(B3 { span, sampled, debug, format: Format::B3Multi })
}

/// (sampled, debug). `x-b3-sampled` also takes true/false, which older Zipkin clients send.
fn parse_b3_sampling(v: &[u8], words: bool) -> Option<(bool, bool)> {
    match v {
        b"1" => Some((true, false)),
        b"0" => Some((false, false)),
        b"d" => Some((true, true)),
        _ if words && v.eq_ignore_ascii_case(b"true") => Some((true, false)),
        _ if words && v.eq_ignore_ascii_case(b"false") => Some((false, false)),
        _ => None,
    }
}

/// 16 or 32 hex digits, not all zero. B3 says lower-hex, but uppercase is read too, as Envoy does.
fn parse_b3_trace_id(v: &[u8]) -> Option<u128> {
    if v.len() != 16 && v.len() != 32 {
        return None;
    }
    parse_hex(v, false).filter(|&id| id != 0)
}

fn parse_b3_span_id(v: &[u8]) -> Option<u64> {
    if v.len() != 16 {
        return None;
    }
    parse_hex(v, false).filter(|&id| id != 0).map(|id| id as u64)
}

/// 1 to 32 hex digits.
fn parse_hex(v: &[u8], lower_only: bool) -> Option<u128> {
    if v.is_empty() || v.len() > 32 {
        return None;
    }
    let mut n: u128 = 0;
    for &b in v {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' if !lower_only => b - b'A' + 10,
            _ => return None,
        };
        n = (n << 4) | u128::from(d);
    }
    Some(n)
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

// ---------------------------------------------------------------------------------------------
// Deciding

/// This proxy's span for a request: a child of the caller's span (new span id, parent = the
/// caller's span id, same trace), the caller's span itself when `sampling.join_incoming_span`
/// (Zipkin shared span: same ids, `shared` set), or a new root. A root's span id is the low 64 bits
/// of its trace id, as Envoy's Zipkin tracer does; with `trace_id_128bit` the high 64 bits are a
/// second random number.
///
/// Sampling: an incoming decision (or debug) wins. Otherwise a request with `x-client-trace-id` is
/// traced with `client` percent, failing that with `random` percent, and the result is then capped
/// by `overall` percent. A roll of 0 or 100 percent draws no random number.
pub fn start(
    incoming: Option<&Incoming<'_>>,
    rand: &mut impl FnMut() -> u64,
    sampling: &Sampling,
) -> TraceContext {
    let (trace_id, span_id, parent_id, shared) = match incoming.and_then(|i| i.span) {
        Some(s) if sampling.join_incoming_span => (s.trace_id, s.span_id, s.parent_id, true),
        Some(s) => (s.trace_id, nonzero(rand), Some(s.span_id), false),
        None => {
            let low = nonzero(rand);
            let high = if sampling.trace_id_128bit { rand() } else { 0 };
            ((u128::from(high) << 64) | u128::from(low), low, None, false)
        }
    };
    let debug = incoming.is_some_and(|i| i.debug);
    let sampled = match incoming.and_then(|i| i.sampled) {
        _ if debug => true,
        Some(decision) => decision,
        None => {
            let forced = incoming.is_some_and(|i| i.client_trace_id) && roll(sampling.client, rand);
            (forced || roll(sampling.random, rand)) && roll(sampling.overall, rand)
        }
    };
    TraceContext {
        trace_id,
        span_id,
        parent_id,
        sampled: Some(sampled),
        debug,
        shared,
        w3c_only: sampling.w3c_only,
    }
}

/// Zero means "no id" in both formats; a source that keeps returning 0 gets 1 rather than a hang.
fn nonzero(rand: &mut impl FnMut() -> u64) -> u64 {
    (0..4).map(|_| rand()).find(|&n| n != 0).unwrap_or(1)
}

fn roll(percent: f64, rand: &mut impl FnMut() -> u64) -> bool {
    if percent >= 100.0 {
        return true;
    }
    // Also false for NaN, which the config never produces.
    if percent.is_nan() || percent <= 0.0 {
        return false;
    }
    // 53 random bits make a uniform fraction in [0, 1).
    let fraction = (rand() >> 11) as f64 / (1u64 << 53) as f64;
    fraction * 100.0 < percent
}

// ---------------------------------------------------------------------------------------------
// Writing

/// Headers `write_headers` writes; the proxy drops these from the incoming request so the
/// upstream sees only this proxy's context. `x-client-trace-id` is not one: Envoy forwards it.
pub fn is_propagation_header(ctx: &TraceContext, name: &str) -> bool {
    let n = name.as_bytes();
    name.eq_ignore_ascii_case("traceparent")
        || name.eq_ignore_ascii_case("tracestate")
        || (!ctx.w3c_only
            && (name.eq_ignore_ascii_case("b3") || (n.len() > 5 && n[..5].eq_ignore_ascii_case(b"x-b3-"))))
}

/// Appends `traceparent`, `tracestate` (when given, non-empty and free of CR/LF/NUL), and the B3
/// multi headers, each as `name: value\r\n`. Both formats go out so that a W3C-only and a B3-only
/// service downstream each keep the trace. Debug goes out as `x-b3-flags: 1` without
/// `x-b3-sampled` (B3: debug implies sampled) and as the W3C sampled flag. Formats on the stack:
/// nothing is allocated beyond `out` growing.
pub fn write_headers(ctx: &TraceContext, tracestate: Option<&[u8]>, out: &mut Vec<u8>) {
    let mut trace_hex = [0u8; 32];
    hex_into(ctx.trace_id, &mut trace_hex);
    let mut span_hex = [0u8; 16];
    hex_into(u128::from(ctx.span_id), &mut span_hex);
    let sampled = ctx.debug || ctx.sampled == Some(true);
    let tracestate =
        tracestate.filter(|s| !trim_ows(s).is_empty() && !s.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0)));
    out.reserve(256 + tracestate.map_or(0, <[u8]>::len));

    out.extend_from_slice(b"traceparent: 00-");
    out.extend_from_slice(&trace_hex);
    out.push(b'-');
    out.extend_from_slice(&span_hex);
    out.extend_from_slice(if sampled { b"-01\r\n" } else { b"-00\r\n" });
    if let Some(state) = tracestate {
        out.extend_from_slice(b"tracestate: ");
        out.extend_from_slice(trim_ows(state));
        out.extend_from_slice(b"\r\n");
    }
    if ctx.w3c_only {
        // Envoy's OpenTelemetry tracer always sends tracestate, empty when it has none.
        if tracestate.is_none() {
            out.extend_from_slice(b"tracestate: \r\n");
        }
        return;
    }

    out.extend_from_slice(b"x-b3-traceid: ");
    // A 64-bit trace id keeps its 16-digit B3 form, so a 64-bit-only service still matches it.
    out.extend_from_slice(if ctx.trace_id >> 64 == 0 { &trace_hex[16..] } else { &trace_hex[..] });
    out.extend_from_slice(b"\r\nx-b3-spanid: ");
    out.extend_from_slice(&span_hex);
    out.extend_from_slice(b"\r\n");
    if let Some(parent) = ctx.parent_id {
        let mut parent_hex = [0u8; 16];
        hex_into(u128::from(parent), &mut parent_hex);
        out.extend_from_slice(b"x-b3-parentspanid: ");
        out.extend_from_slice(&parent_hex);
        out.extend_from_slice(b"\r\n");
    }
    if ctx.debug {
        out.extend_from_slice(b"x-b3-flags: 1\r\n");
    } else {
        match ctx.sampled {
            Some(true) => out.extend_from_slice(b"x-b3-sampled: 1\r\n"),
            Some(false) => out.extend_from_slice(b"x-b3-sampled: 0\r\n"),
            None => {}
        }
    }
}

/// Lowercase hex of the low `out.len() * 4` bits of `n`, zero-padded.
pub(super) fn hex_into(mut n: u128, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(n & 0xf) as usize];
        n >>= 4;
    }
}

#[cfg(test)]
mod tests;
