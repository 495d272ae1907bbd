//! Header rewriting on the way through, in one pass over the parsed head and without copying it:
//! the request head as the upstream gets it (hop-by-hop fields removed — never a framing field —,
//! Envoy's trust-boundary rules for `x-forwarded-for` and `x-envoy-*`, request id, trace context,
//! route header edits) and the response head as the client gets it. These are the connection
//! manager's and the router's own header steps, in Envoy's order. Configured HTTP filters decide
//! on the request head before it is written (`crate::filters`, called by `request`) and append
//! their response headers after the route's edits. Pure: appends to a buffer, touches no socket.

use super::observe::{self, Observed};
use super::reply::{self, DateCache};
use crate::cluster::Rng;
use crate::config::{ClientCert, ForwardClientCert, UnderscoresAction};
use crate::http::{header_is, BodyKind, RequestHead, ResponseHead};
use crate::peer::TlsPeer;
use crate::route::HeaderEdits;
use crate::snapshot::ListenerSnap;
use crate::trace::{self, TraceContext};

/// Hop-by-hop request headers (RFC 9110 §7.6.1) and `expect`, which skiff answers itself.
fn hop_by_hop(name: &str) -> bool {
    match name.len() {
        2 => header_is(name, "te"),
        6 => header_is(name, "expect"),
        7 => header_is(name, "upgrade") || header_is(name, "trailer"),
        10 => header_is(name, "connection") || header_is(name, "keep-alive"),
        16 => header_is(name, "proxy-connection"),
        17 => header_is(name, "transfer-encoding"),
        _ => false,
    }
}

/// Whether `name` is one of the `x-envoy-*` request headers Envoy never passes on from a client:
/// the router's control headers (it acts on them only from trusted callers, and removes them
/// always), `x-envoy-internal` (decided here, not by the caller), and — for an edge request — the
/// headers only Envoy itself may set. Other `x-envoy-*` headers pass, as in Envoy.
fn untrusted_envoy_header(name: &str, edge: bool) -> bool {
    let Some(rest) = name.get(..8).filter(|p| p.eq_ignore_ascii_case("x-envoy-")).and(name.get(8..)) else {
        return false;
    };
    const ALWAYS: [&str; 10] = [
        "internal",
        "retry-on",
        "retry-grpc-on",
        "max-retries",
        "upstream-rq-timeout-ms",
        "upstream-rq-per-try-timeout-ms",
        "hedge-on-per-try-timeout",
        "upstream-rq-timeout-alt-response",
        "expected-rq-timeout-ms",
        "upstream-alt-stat-name",
    ];
    const EDGE: [&str; 7] = [
        "decorator-operation",
        "downstream-service-cluster",
        "downstream-service-node",
        "original-path",
        "ip-tags",
        "original-url",
        "external-address",
    ];
    ALWAYS.iter().any(|h| header_is(rest, h)) || (edge && EDGE.iter().any(|h| header_is(rest, h)))
}

/// The levels' added headers, most specific level first (Envoy applies a weighted entry's edits,
/// then the route's, the virtual host's, the route table's): an add a less specific level removes
/// or overwrites is gone, as it is from Envoy's header map.
pub(super) fn write_adds(out: &mut Vec<u8>, edits: &[&HeaderEdits; 4]) {
    for (level, e) in edits.iter().enumerate() {
        for a in &e.add {
            if !edits[level + 1..].iter().any(|later| later.drops(&a.name)) {
                reply::header(out, a.name.as_bytes(), a.value.as_bytes());
            }
        }
    }
}

/// `x-forwarded-client-cert`.
const XFCC: &str = "x-forwarded-client-cert";

/// Everything the request head writer needs besides the head itself.
pub(super) struct RequestRewrite<'a> {
    /// The path the upstream gets (rewritten or the original).
    pub path: &'a str,
    /// The Host the upstream gets: `host_rewrite_literal`, else the host the request was routed by
    /// (an absolute-form authority, a port-stripped Host, `default_host_for_http_10`).
    pub host: Option<&'a str>,
    /// Weighted cluster entry, route, virtual host, route table (Envoy's order).
    pub edits: [&'a HeaderEdits; 4],
    pub peer_ip: &'a str,
    /// What an edge request appends to `x-forwarded-for`: the peer, or this node's address when
    /// the peer is on loopback (Envoy's rule).
    pub xff_ip: &'a str,
    /// `use_remote_address`: the peer is the client (an edge request): append it to
    /// `x-forwarded-for` and set `x-envoy-external-address`, as Envoy does. Off, both are left as
    /// the caller sent them.
    pub use_remote_address: bool,
    pub generate_request_id: bool,
    pub traced: Option<(TraceContext, Option<&'a [u8]>)>,
    /// The route timeout, sent as `x-envoy-expected-rq-timeout-ms`.
    pub expected_timeout_ms: Option<u64>,
    pub listener: &'a ListenerSnap,
    /// An upgrade the configuration allows (`upgrade.rs`): its `Upgrade` and `Connection` lines go
    /// upstream as they came, as Envoy passes them.
    pub upgrade: bool,
    /// Request headers the HTTP filters removed (`filters::Verdict::remove_request_headers`).
    pub dropped: &'a [&'a str],
    /// The path before the route's rewrite: the client's, or the one a filter set (which Envoy
    /// treats as the request's own, so it is no "original path").
    pub filtered_path: &'a str,
    /// The connection's TLS peer (None: plaintext), for `x-forwarded-client-cert`.
    pub tls: Option<&'a TlsPeer>,
}

/// What happens to `x-forwarded-client-cert` on this request (Envoy's
/// `ConnectionManagerUtility::mutateXfccRequestHeader`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Xfcc {
    Keep,
    Drop,
    /// Append this hop's details to the client's (last) line, or send them alone.
    Append,
    /// Send this hop's details instead of the client's.
    Set,
}

fn xfcc(cc: &ClientCert, tls: Option<&TlsPeer>) -> Xfcc {
    let mtls = tls.is_some_and(|t| t.cert.is_some());
    match cc.mode {
        ForwardClientCert::AlwaysForwardOnly => Xfcc::Keep,
        ForwardClientCert::Sanitize => Xfcc::Drop,
        _ if !mtls => Xfcc::Drop,
        ForwardClientCert::ForwardOnly => Xfcc::Keep,
        ForwardClientCert::AppendForward => Xfcc::Append,
        ForwardClientCert::SanitizeSet => Xfcc::Set,
    }
}

/// This hop's element, in Envoy's order: `By` (this side's URI SANs), `Hash`, then `Cert`,
/// `Subject`, `URI` (present even when empty), `DNS` as configured, joined by `;`.
fn client_cert_details(cc: &ClientCert, tls: &TlsPeer, out: &mut Vec<u8>) {
    let Some(cert) = &tls.cert else { return };
    let mut parts: Vec<String> = tls.local_uri_sans.iter().map(|u| format!("By={u}")).collect();
    parts.push(format!("Hash={}", cert.sha256_hex()));
    if cc.cert {
        parts.push(format!("Cert=\"{}\"", cert.url_encoded_pem()));
    }
    if cc.subject {
        parts.push(format!("Subject=\"{}\"", cert.subject));
    }
    if cc.uri {
        if cert.uri_sans.is_empty() {
            parts.push("URI=".to_string());
        }
        parts.extend(cert.uri_sans.iter().map(|u| format!("URI={u}")));
    }
    if cc.dns {
        parts.extend(cert.dns_sans.iter().map(|d| format!("DNS={d}")));
    }
    out.extend_from_slice(parts.join(";").as_bytes());
}

/// Writes the request head as the upstream gets it.
pub(super) fn write_request_head(
    out: &mut Vec<u8>,
    head: &RequestHead<'_>,
    rw: &RequestRewrite<'_>,
    rng: &Rng,
    obs: &mut Observed,
) {
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(rw.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let any_edits = rw.edits.iter().any(|e| !e.is_empty());
    let edge = rw.use_remote_address;
    let (mut saw_xff, mut saw_proto, mut saw_id, mut saw_host) = (false, false, false, false);
    // Only a Connection header can make another header hop-by-hop; without one (the common case)
    // skip the per-header scan of its list, which would make the head O(headers²).
    let has_connection = head.headers.iter().any(|h| header_is(h.name, "connection"));
    // Several x-forwarded-for lines are one list (RFC 9110 §5.3): the client's address goes after
    // its last element, once, not after each line.
    let last_xff =
        if edge { head.headers.iter().rposition(|h| header_is(h.name, "x-forwarded-for")) } else { None };
    // `headers_with_underscores_action: DROP_HEADER` (counted by the codec check in `conn`).
    let drop_underscores = rw.listener.hcm.headers_with_underscores == UnderscoresAction::DropHeader;
    let cc = &rw.listener.hcm.client_cert;
    let xfcc = xfcc(cc, rw.tls);
    let last_xfcc =
        if xfcc == Xfcc::Append { head.headers.iter().rposition(|h| header_is(h.name, XFCC)) } else { None };
    for (i, h) in head.headers.iter().enumerate() {
        let name = h.name;
        if drop_underscores && name.contains('_') {
            continue;
        }
        // Earlier lines of an appended-to header go as they came: one list, as with XFF.
        if name.len() == XFCC.len() && header_is(name, XFCC) {
            match (xfcc, rw.tls) {
                (Xfcc::Keep, _) => {}
                (Xfcc::Append, _) if last_xfcc != Some(i) => {}
                (Xfcc::Append, Some(tls)) => {
                    out.extend_from_slice(b"x-forwarded-client-cert: ");
                    let at = out.len();
                    out.extend_from_slice(h.value);
                    out.push(b',');
                    client_cert_details(cc, tls, out);
                    observe::on_rewritten_request_header(rw.listener, obs, XFCC, &out[at..]);
                    out.extend_from_slice(b"\r\n");
                    continue;
                }
                _ => {
                    observe::on_removed_request_header(rw.listener, obs, XFCC);
                    continue;
                }
            }
        }
        // `connection_lists` never names a framing field (the codec's rule): a `Connection` token
        // cannot make Content-Length, Transfer-Encoding or Host disappear.
        // Envoy passes `te` on only as `trailers`, when the client listed that token (gRPC needs
        // it; HTTP/2 clients may send nothing else).
        if header_is(name, "te") {
            if h.value.split(|b| *b == b',').any(|t| t.trim_ascii() == b"trailers") {
                out.extend_from_slice(b"te: trailers\r\n");
            }
            continue;
        }
        let upgrade_line = rw.upgrade && (header_is(name, "upgrade") || header_is(name, "connection"));
        // Envoy passes `te` on as `te: trailers` when one of its comma-separated values is exactly
        // `trailers` (gRPC servers look for it), and drops it otherwise.
        if name.len() == 2 && header_is(name, "te") {
            if h.value.split(|b| *b == b',').any(|t| t.trim_ascii() == b"trailers") {
                reply::header(out, b"te", b"trailers");
            }
            continue;
        }
        if !upgrade_line && (hop_by_hop(name) || (has_connection && head.connection_lists(name))) {
            continue;
        }
        if name.len() > 8 && untrusted_envoy_header(name, edge) {
            continue;
        }
        if any_edits && rw.edits.iter().any(|e| e.drops(name)) {
            continue;
        }
        if !rw.dropped.is_empty() && rw.dropped.iter().any(|d| header_is(name, d)) {
            continue;
        }
        // A traced request carries this hop's span context, not the one it came with.
        if rw.traced.is_some_and(|(ctx, _)| trace::is_propagation_header(&ctx, name)) {
            continue;
        }
        if header_is(name, "host") {
            saw_host = true;
            // The upstream must see the host the request was routed by (an absolute-form target's
            // authority replaces Host, RFC 9112 §3.2.2), not a different Host line.
            reply::header(out, b"host", rw.host.map_or(h.value, str::as_bytes));
            continue;
        }
        if edge && last_xff == Some(i) {
            saw_xff = true;
            out.extend_from_slice(b"x-forwarded-for: ");
            let at = out.len();
            out.extend_from_slice(h.value);
            out.push(b',');
            out.extend_from_slice(rw.xff_ip.as_bytes());
            observe::on_rewritten_request_header(rw.listener, obs, "x-forwarded-for", &out[at..]);
            out.extend_from_slice(b"\r\n");
            continue;
        }
        // An edge request's scheme and request id are this hop's, not what the client claims.
        let proto = header_is(name, "x-forwarded-proto");
        let id = header_is(name, "x-request-id");
        if edge && (proto || id) {
            continue;
        }
        saw_proto |= proto;
        saw_id |= id;
        reply::header(out, name.as_bytes(), h.value);
    }
    if !saw_host {
        // Never a request without Host (the connection manager refuses one with no host to route
        // by): an HTTP/1.0 one gets `default_host_for_http_10`.
        if let Some(host) = rw.host {
            reply::header(out, b"host", host.as_bytes());
        }
    }
    if edge && !saw_xff {
        reply::header(out, b"x-forwarded-for", rw.xff_ip.as_bytes());
        observe::on_rewritten_request_header(rw.listener, obs, "x-forwarded-for", rw.xff_ip.as_bytes());
    }
    if !saw_proto {
        let scheme: &[u8] = if rw.listener.tls.is_some() { b"https" } else { b"http" };
        reply::header(out, b"x-forwarded-proto", scheme);
    }
    if edge {
        reply::header(out, b"x-envoy-external-address", rw.peer_ip.as_bytes());
    }
    if let (Some(tls), Xfcc::Set | Xfcc::Append) = (rw.tls, xfcc) {
        if xfcc == Xfcc::Set || last_xfcc.is_none() {
            out.extend_from_slice(b"x-forwarded-client-cert: ");
            let at = out.len();
            client_cert_details(cc, tls, out);
            observe::on_rewritten_request_header(rw.listener, obs, XFCC, &out[at..]);
            out.extend_from_slice(b"\r\n");
        }
    }
    if !saw_id && rw.generate_request_id {
        out.extend_from_slice(b"x-request-id: ");
        let at = out.len();
        reply::request_id(rng, out);
        observe::on_generated_request_id(obs, &out[at..]);
        out.extend_from_slice(b"\r\n");
    }
    if let Some((ctx, tracestate)) = rw.traced {
        trace::write_headers(&ctx, tracestate, out);
    }
    if rw.path != rw.filtered_path {
        reply::header(out, b"x-envoy-original-path", rw.filtered_path.as_bytes());
    }
    if let Some(ms) = rw.expected_timeout_ms {
        out.extend_from_slice(b"x-envoy-expected-rq-timeout-ms: ");
        reply::push_u64(out, ms);
        out.extend_from_slice(b"\r\n");
    }
    if head.body == BodyKind::Chunked {
        reply::header(out, b"transfer-encoding", b"chunked");
    }
    write_adds(out, &rw.edits);
    // Envoy's codec frames every request it sends: a bodiless one whose method may carry a body
    // gets `content-length: 0`, after every other line.
    if head.body == BodyKind::None && !rw.upgrade && may_carry_body(head.method) {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Whether Envoy frames a bodiless request of `method` with `content-length: 0`: every method but
/// those its codec sends without framing (`HeaderUtility::requestShouldHaveNoBody`).
fn may_carry_body(method: &str) -> bool {
    !matches!(method, "GET" | "HEAD" | "DELETE" | "TRACE" | "CONNECT")
}

/// Hop-by-hop response headers, `server` (skiff sets its own as Envoy does), and the upstream's
/// `date` and `x-envoy-upstream-service-time` (replaced by this hop's, never doubled).
fn dropped_response_header(name: &str) -> bool {
    match name.len() {
        2 => header_is(name, "te"),
        4 => header_is(name, "date"),
        6 => header_is(name, "server"),
        7 => header_is(name, "upgrade"),
        10 => header_is(name, "connection") || header_is(name, "keep-alive"),
        16 => header_is(name, "proxy-connection"),
        17 => header_is(name, "transfer-encoding"),
        29 => header_is(name, "x-envoy-upstream-service-time"),
        _ => false,
    }
}

/// What the client gets and how the connection continues, decided with the response head.
pub(super) struct ResponseShape {
    /// Send the chunked body's payload only (an HTTP/1.0 client cannot read chunked framing).
    pub dechunk: bool,
    pub client_keep_alive: bool,
}

pub(super) struct ResponseRewrite<'a> {
    /// Weighted cluster entry, route, virtual host, route table (Envoy's order).
    pub edits: [&'a HeaderEdits; 4],
    pub server_name: &'a str,
    pub date: &'a DateCache,
    /// `x-envoy-upstream-service-time`; None when the response head came before the request
    /// was complete, where Envoy's router adds none (`downstream_request_complete_time_` unset).
    pub service_time_ms: Option<u64>,
    /// Whether the client's connection may stay open after this response.
    pub keep_alive: bool,
    pub http10: bool,
    pub listener: &'a ListenerSnap,
    /// Header lines the request's HTTP filters add (`filters::Verdict::response_headers`).
    pub filter_headers: &'a [u8],
    /// They replace the upstream's headers of the same names where those stand.
    pub filter_replace: bool,
    /// A `101` to an allowed upgrade: the client gets `Upgrade` and `Connection` as the upstream
    /// sent them and no framing or keep-alive decision (the connection becomes a byte relay), and,
    /// as from Envoy, no `x-envoy-upstream-service-time` (the request never ended).
    pub switching: bool,
}

pub(super) fn write_response_head(
    out: &mut Vec<u8>,
    head: &ResponseHead<'_>,
    rw: &ResponseRewrite<'_>,
    obs: &mut Observed,
) -> ResponseShape {
    let dechunk = head.body == BodyKind::Chunked && rw.http10;
    let close_delimited_to_client = head.body == BodyKind::CloseDelimited || dechunk;
    let client_keep_alive = rw.keep_alive && !close_delimited_to_client;
    obs.details = std::borrow::Cow::Borrowed(reply::details::VIA_UPSTREAM);
    out.clear();
    reply::status_line(out, head.status, rw.http10);
    let any_edits = rw.edits.iter().any(|e| !e.is_empty());
    let has_connection = head.headers.iter().any(|h| header_is(h.name, "connection"));
    // The filter lines written in place of an upstream header (only with `filter_replace`).
    let mut placed: Vec<&str> = Vec::new();
    for h in head.headers {
        let name = h.name;
        let upgrade_line = rw.switching && (header_is(name, "upgrade") || header_is(name, "connection"));
        if !upgrade_line && (dropped_response_header(name) || (has_connection && head.connection_lists(name)))
        {
            continue;
        }
        if head.body == BodyKind::Chunked && header_is(name, "content-length") {
            continue;
        }
        if any_edits && rw.edits.iter().any(|e| e.drops(name)) {
            continue;
        }
        // `set-cookie` is never replaced: it repeats by design (RFC 6265), and a generated
        // hash-policy cookie rides in these lines beside the upstream's own cookies.
        if rw.filter_replace && !header_is(name, "set-cookie") {
            if let Some(value) = header_line_value(rw.filter_headers, name) {
                // One line in place of the upstream's first; its repeats go.
                if !placed.iter().any(|p| p.eq_ignore_ascii_case(name)) {
                    reply::header(out, name.as_bytes(), value);
                    placed.push(name);
                }
                continue;
            }
        }
        reply::header(out, name.as_bytes(), h.value);
    }
    if let Some(ms) = rw.service_time_ms.filter(|_| !rw.switching) {
        out.extend_from_slice(b"x-envoy-upstream-service-time: ");
        let at = out.len();
        reply::push_u64(out, ms);
        // Envoy's default access-log format reads this header, which skiff adds itself.
        observe::on_added_response_header(rw.listener, obs, "x-envoy-upstream-service-time", &out[at..]);
        out.extend_from_slice(b"\r\n");
    }
    rw.date.write(out);
    reply::header(out, b"server", rw.server_name.as_bytes());
    if !client_keep_alive && !rw.switching {
        reply::header(out, b"connection", b"close");
    } else if rw.http10 && !rw.switching {
        reply::header(out, b"connection", b"keep-alive");
    }
    // After `connection`: Envoy's HTTP/1 codec writes it after the header map.
    if head.body == BodyKind::Chunked && !dechunk {
        reply::header(out, b"transfer-encoding", b"chunked");
    }
    write_adds(out, &rw.edits);
    if rw.filter_replace {
        for line in rw.filter_headers.split_inclusive(|b| *b == b'\n') {
            let name = line.split(|b| *b == b':').next().unwrap_or_default();
            if !placed.iter().any(|p| p.as_bytes().eq_ignore_ascii_case(name)) {
                out.extend_from_slice(line);
            }
        }
    } else {
        out.extend_from_slice(rw.filter_headers);
    }
    out.extend_from_slice(b"\r\n");
    ResponseShape { dechunk, client_keep_alive }
}

/// The value of header `name` among `name: value\r\n` lines skiff wrote.
fn header_line_value<'l>(lines: &'l [u8], name: &str) -> Option<&'l [u8]> {
    lines.split(|b| *b == b'\n').find_map(|line| {
        let (n, value) = line.strip_suffix(b"\r")?.split_at_checked(name.len())?;
        n.eq_ignore_ascii_case(name.as_bytes()).then_some(value)?.strip_prefix(b": ")
    })
}

/// Where the blank line that ends a head skiff wrote (`request`'s upstream head, with the body
/// that came with it) begins.
pub(super) fn written_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// The byte range of header `name`'s value (`name: value`, as skiff writes a line) in a head skiff
/// wrote; None when the head has no such line.
pub(super) fn written_header_value(buf: &[u8], name: &[u8]) -> Option<std::ops::Range<usize>> {
    let head_end = written_head_end(buf)?;
    let mut at = buf[..head_end].iter().position(|b| *b == b'\n')? + 1;
    while at < head_end + 2 {
        let end = at + buf[at..].iter().position(|b| *b == b'\r')?;
        let line = &buf[at..end];
        if let Some(colon) = line.iter().position(|b| *b == b':') {
            if line[..colon].eq_ignore_ascii_case(name) {
                let lead = line[colon + 1..].iter().take_while(|b| **b == b' ').count();
                return Some(at + colon + 1 + lead..end);
            }
        }
        at = end + 2;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_control_headers_never_pass_and_edge_only_headers_pass_inside() {
        assert!(untrusted_envoy_header("X-Envoy-Retry-On", false));
        assert!(untrusted_envoy_header("x-envoy-internal", false));
        assert!(untrusted_envoy_header("x-envoy-upstream-rq-timeout-ms", false));
        assert!(!untrusted_envoy_header("x-envoy-decorator-operation", false));
        assert!(untrusted_envoy_header("x-envoy-decorator-operation", true));
        assert!(untrusted_envoy_header("x-envoy-external-address", true));
        assert!(!untrusted_envoy_header("x-envoy-foo", true));
        assert!(!untrusted_envoy_header("x-envoy-attempt-count", true));
        assert!(!untrusted_envoy_header("x-request-id", true));
    }

    #[test]
    fn only_methods_that_may_carry_a_body_are_framed_when_bodiless() {
        for m in ["POST", "PUT", "PATCH", "OPTIONS", "PROPFIND"] {
            assert!(may_carry_body(m), "{m}");
        }
        for m in ["GET", "HEAD", "DELETE", "TRACE", "CONNECT"] {
            assert!(!may_carry_body(m), "{m}");
        }
    }
}
