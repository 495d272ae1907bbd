//! What a request leaves behind besides its response: its access-log lines and its trace span.
//! Fills a connection's reusable `Observed` from the heads as they pass (only for listeners that log
//! or trace), and turns it into a log line and a span when the request ends. Touches no socket.

use super::reply::details;
use super::state::{Generation, Shard};
use crate::access_log::{Captured, Record, ResponseFlags};
use crate::http::{RequestHead, ResponseHead, Version};
use crate::snapshot::ListenerSnap;
use crate::trace::{self, tags, Span, SpanKind, TraceContext};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

/// The facts of the current request, kept per connection and reused (no allocation once warm).
#[derive(Default)]
pub(super) struct Observed {
    /// Whether this request is observed at all (its listener logs or traces).
    pub on: bool,
    pub start: Option<SystemTime>,
    pub method: String,
    pub path: String,
    pub authority: String,
    pub protocol: &'static str,
    /// The `x-request-id` the upstream got (received or generated).
    pub request_id: String,
    /// `user-agent` and `x-envoy-downstream-service-cluster`, for the OpenTelemetry span's tags
    /// (kept only on a listener that traces with it).
    pub user_agent: String,
    pub downstream_cluster: String,
    pub req_cap: Captured,
    /// Where `req_cap` keeps `x-request-id`, when a log format reads it: a generated id goes there
    /// too, as Envoy's `%REQ(X-REQUEST-ID)%` shows the id the upstream got.
    pub request_id_slot: Option<u16>,
    pub resp_cap: Captured,
    pub trace: Option<TraceContext>,
    pub flags: ResponseFlags,
    /// `%RESPONSE_CODE_DETAILS%`: set where the response is decided (`reply::details`; owned
    /// only for a filter's words that name a policy or a reason, as RBAC's and JWT's do).
    pub details: Cow<'static, str>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub upstream_host: Option<SocketAddr>,
    pub upstream_cluster: Option<usize>,
    pub attempts: u32,
    /// When the first byte of the upstream response arrived.
    pub first_upstream_byte: Option<Instant>,
}

impl Observed {
    /// Starts a request: forgets the previous one's facts.
    pub fn begin(&mut self, on: bool) {
        self.on = on;
        self.flags = ResponseFlags::empty();
        self.details = Cow::Borrowed("");
        self.bytes_received = 0;
        self.bytes_sent = 0;
        self.upstream_host = None;
        self.upstream_cluster = None;
        self.attempts = 0;
        self.first_upstream_byte = None;
        self.trace = None;
        if on {
            self.start = Some(SystemTime::now());
            self.method.clear();
            self.path.clear();
            self.authority.clear();
            self.request_id.clear();
            self.user_agent.clear();
            self.downstream_cluster.clear();
            self.protocol = "";
            self.req_cap.clear();
            self.resp_cap.clear();
            self.request_id_slot = None;
        }
    }

    pub fn flag(&mut self, flag: ResponseFlags) {
        self.flags.insert(flag);
    }
}

/// Takes what the log and the span need from the request head, and starts the trace. Returns the
/// span context to propagate upstream and the `tracestate` to pass on with it.
pub(super) fn on_request_head<'h>(
    listener: &ListenerSnap,
    head: &RequestHead<'h>,
    o: &mut Observed,
    shard: &Shard,
) -> Option<(TraceContext, Option<&'h [u8]>)> {
    if !o.on {
        return None;
    }
    o.method.push_str(head.method);
    o.path.push_str(head.path);
    o.authority.push_str(head.host.unwrap_or(""));
    o.protocol = match head.version {
        Version::Http10 => "HTTP/1.0",
        Version::Http11 => "HTTP/1.1",
    };
    if let Some(v) = head.headers.iter().find(|h| h.name.eq_ignore_ascii_case("x-request-id")) {
        o.request_id.push_str(&String::from_utf8_lossy(v.value));
    }
    let logs = &listener.observers.access_logs;
    if !logs.is_empty() {
        o.req_cap.capture(logs.wanted_request(), head.headers.iter().map(|h| (h.name, h.value)));
        o.request_id_slot = logs.wanted_request().index("x-request-id");
    }
    let settings = listener.observers.tracing.as_ref()?;
    if settings.sampling.w3c_only {
        for h in head.headers.iter() {
            if h.name.eq_ignore_ascii_case("user-agent") && o.user_agent.is_empty() {
                o.user_agent.push_str(&String::from_utf8_lossy(h.value));
            } else if h.name.eq_ignore_ascii_case("x-envoy-downstream-service-cluster")
                && o.downstream_cluster.is_empty()
            {
                o.downstream_cluster.push_str(&String::from_utf8_lossy(h.value));
            }
        }
    }
    let incoming = trace::extract_as(head.headers, settings.sampling.w3c_only);
    let ctx = trace::start(incoming.as_ref(), &mut || shard.rng.next(), &settings.sampling);
    o.trace = Some(ctx);
    Some((ctx, incoming.and_then(|i| i.tracestate)))
}

/// A request header skiff rewrote (an edge request's `x-forwarded-for`): Envoy's `%REQ(...)%`
/// shows the value the upstream got.
pub(super) fn on_rewritten_request_header(
    listener: &ListenerSnap,
    o: &mut Observed,
    name: &str,
    value: &[u8],
) {
    if o.on {
        if let Some(i) = listener.observers.access_logs.wanted_request().index(name) {
            o.req_cap.replace(i, value);
        }
    }
}

/// A request header this hop removed: the log shows it absent, as Envoy's (which logs the
/// header map after its rewrite).
pub(super) fn on_removed_request_header(listener: &ListenerSnap, o: &mut Observed, name: &str) {
    if o.on {
        if let Some(i) = listener.observers.access_logs.wanted_request().index(name) {
            o.req_cap.forget(i);
        }
    }
}

/// A generated request id, for the log and the span. It replaces one the client sent (an edge
/// request's, which Envoy does not trust), as Envoy logs the id it generated.
pub(super) fn on_generated_request_id(o: &mut Observed, id: &[u8]) {
    if o.on {
        o.request_id.clear();
        o.request_id.push_str(&String::from_utf8_lossy(id));
        if let Some(slot) = o.request_id_slot {
            o.req_cap.replace(slot, id);
        }
    }
}

/// A request answered by skiff itself after the connection manager had it: Envoy generated its
/// request id all the same, and logs it (the client and no upstream ever see it).
pub(super) fn on_local_request_id(o: &mut Observed, rng: &crate::cluster::Rng) {
    on_generated_request_id(o, &super::reply::request_id_bytes(rng));
}

pub(super) fn on_response_head(listener: &ListenerSnap, head: &ResponseHead<'_>, o: &mut Observed) {
    if o.on && !listener.observers.access_logs.is_empty() {
        o.resp_cap.capture(
            listener.observers.access_logs.wanted_response(),
            head.headers.iter().map(|h| (h.name, h.value)),
        );
    }
}

/// A response header skiff adds itself, for formats that log it.
pub(super) fn on_added_response_header(listener: &ListenerSnap, o: &mut Observed, name: &str, value: &[u8]) {
    if o.on {
        if let Some(i) = listener.observers.access_logs.wanted_response().index(name) {
            o.resp_cap.put(i, value);
        }
    }
}

/// Writes the access-log lines and reports the span of the request that just ended.
#[allow(clippy::too_many_arguments)]
pub(super) fn finish(
    shard: &Shard,
    generation: &Generation,
    listener: &ListenerSnap,
    o: &Observed,
    status: u16,
    started: Instant,
    peer: SocketAddr,
    local: SocketAddr,
    connection_id: u64,
) {
    if !o.on {
        return;
    }
    let duration = started.elapsed();
    let start = o.start.unwrap_or_else(SystemTime::now);
    let cluster = o.upstream_cluster.and_then(|c| generation.snap.clusters.get(c)).map(|c| c.name.as_str());
    let logs = &listener.observers.access_logs;
    if !logs.is_empty() {
        let record = Record {
            start,
            duration,
            request_duration: None,
            response_duration: o.first_upstream_byte.map(|t| t.saturating_duration_since(started)),
            response_tx_duration: o.first_upstream_byte.map(|t| t.elapsed()),
            method: &o.method,
            path: &o.path,
            authority: &o.authority,
            protocol: o.protocol,
            status,
            // The client left: Envoy's word for it replaces whatever the response was.
            code_details: if o.flags.contains(ResponseFlags::DC) {
                details::DOWNSTREAM_REMOTE_DISCONNECT
            } else {
                &o.details
            },
            flags: o.flags,
            bytes_received: o.bytes_received,
            bytes_sent: o.bytes_sent,
            upstream_host: o.upstream_host,
            upstream_cluster: cluster,
            upstream_local: None,
            upstream_transport_failure: "",
            attempts: o.attempts,
            downstream_remote: peer,
            downstream_local: local,
            route_name: "",
            connection_id,
            request_headers: &o.req_cap,
            response_headers: &o.resp_cap,
        };
        if let Ok(mut bufs) = shard.log_bufs.try_borrow_mut() {
            logs.log(&record, &mut bufs);
        }
    }
    if let (Some(settings), Some(ctx)) = (&listener.observers.tracing, o.trace) {
        if ctx.sampled == Some(true) {
            settings.sender.report(span(settings, ctx, o, status, start, duration, peer, local, cluster));
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn span(
    settings: &crate::telemetry::TraceSettings,
    ctx: TraceContext,
    o: &Observed,
    status: u16,
    start: SystemTime,
    duration: Duration,
    peer: SocketAddr,
    local: SocketAddr,
    cluster: Option<&str>,
) -> Span {
    let ingress = settings.operation == crate::config::TracingOperation::Ingress;
    let mut url = format!("http://{}{}", o.authority, o.path);
    if url.len() > settings.max_path_tag_length {
        let mut cut = settings.max_path_tag_length;
        while !url.is_char_boundary(cut) {
            cut -= 1;
        }
        url.truncate(cut);
    }
    let mut span_tags = vec![
        (tags::HTTP_METHOD, o.method.clone()),
        (tags::HTTP_URL, url),
        (tags::HTTP_PROTOCOL, o.protocol.to_string()),
        (tags::HTTP_STATUS_CODE, status.to_string()),
        (tags::NODE_ID, settings.node.service_node.clone()),
        (tags::GUID_X_REQUEST_ID, o.request_id.clone()),
        (tags::UPSTREAM_CLUSTER, cluster.unwrap_or("-").to_string()),
    ];
    if !o.flags.is_empty() {
        let mut flags = Vec::new();
        o.flags.render_short(&mut flags);
        span_tags.push((tags::RESPONSE_FLAGS, String::from_utf8_lossy(&flags).into_owned()));
    }
    if status >= 500 || status == 0 {
        span_tags.push((tags::ERROR, "true".to_string()));
    }
    let name = if ctx.w3c_only {
        envoy_tags(&mut span_tags, o, peer, cluster);
        // Envoy's operation name without a route decorator.
        if ingress {
            "ingress".to_string()
        } else {
            format!("egress {}", o.authority)
        }
    } else {
        format!("{}{}", o.authority, o.path.split('?').next().unwrap_or(""))
    };
    Span {
        ctx,
        name,
        kind: if ingress { SpanKind::Server } else { SpanKind::Client },
        start,
        duration,
        local_service: settings.node.service_cluster.clone(),
        local_ip: crate::telemetry::local_ip(local),
        remote_endpoint: if ingress { Some(peer) } else { o.upstream_host },
        tags: span_tags,
    }
}

/// The rest of the tags Envoy's connection manager sets on every span, as its OpenTelemetry
/// tracer exports them (`-` for what is absent, as Envoy writes it).
fn envoy_tags(
    span_tags: &mut Vec<(&'static str, String)>,
    o: &Observed,
    peer: SocketAddr,
    cluster: Option<&str>,
) {
    let or_dash = |v: &str| if v.is_empty() { "-".to_string() } else { v.to_string() };
    if o.flags.is_empty() {
        span_tags.push((tags::RESPONSE_FLAGS, "-".to_string()));
    }
    span_tags.extend([
        (tags::COMPONENT, "proxy".to_string()),
        (tags::DOWNSTREAM_CLUSTER, or_dash(&o.downstream_cluster)),
        (tags::USER_AGENT, or_dash(&o.user_agent)),
        (tags::PEER_ADDRESS, peer.to_string()),
        (tags::REQUEST_SIZE, o.bytes_received.to_string()),
        (tags::RESPONSE_SIZE, o.bytes_sent.to_string()),
        // skiff's node has no zone yet (`--service-zone` is not passed to the spans).
        (tags::ZONE, String::new()),
    ]);
    if let Some(c) = cluster {
        span_tags.push((tags::UPSTREAM_CLUSTER_NAME, c.to_string()));
    }
}
