//! Finished spans and their Zipkin v2 JSON encoding (the body of `POST /api/v2/spans`).
//!
//! Owns: the `Span` record and the JSON shape. Must not touch: sockets or threads (the reporter
//! sends what this encodes) or header parsing.

use super::context::{hex_into, TraceContext};
use serde_json::{Map, Value};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Envoy's tag names, so dashboards built on Envoy's spans keep working.
pub mod tags {
    pub const HTTP_METHOD: &str = "http.method";
    pub const HTTP_URL: &str = "http.url";
    pub const HTTP_STATUS_CODE: &str = "http.status_code";
    pub const HTTP_PROTOCOL: &str = "http.protocol";
    pub const UPSTREAM_CLUSTER: &str = "upstream_cluster";
    pub const NODE_ID: &str = "node_id";
    pub const GUID_X_REQUEST_ID: &str = "guid:x-request-id";
    pub const RESPONSE_FLAGS: &str = "response_flags";
    pub const ERROR: &str = "error";
    pub const USER_AGENT: &str = "user_agent";
    pub const DOWNSTREAM_CLUSTER: &str = "downstream_cluster";
    pub const RESPONSE_SIZE: &str = "response_size";
    pub const REQUEST_SIZE: &str = "request_size";
    pub const COMPONENT: &str = "component";
    pub const PEER_ADDRESS: &str = "peer.address";
    pub const UPSTREAM_CLUSTER_NAME: &str = "upstream_cluster.name";
    pub const ZONE: &str = "zone";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// Ingress: this proxy receives the call for the local service.
    Server,
    /// Egress: this proxy makes the call to another service.
    Client,
}

/// One finished span, as the request path hands it to the reporter.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub ctx: TraceContext,
    /// Envoy's operation name, or e.g. "GET /path".
    pub name: String,
    pub kind: SpanKind,
    pub start: SystemTime,
    pub duration: Duration,
    /// `--service-cluster`: Zipkin's serviceName.
    pub local_service: String,
    pub local_ip: IpAddr,
    /// The peer: the upstream host for a CLIENT span, the downstream client for a SERVER span.
    pub remote_endpoint: Option<SocketAddr>,
    /// Tag name (see `tags`) and value; a later duplicate replaces an earlier one.
    pub tags: Vec<(&'static str, String)>,
}

fn hex(n: u128, digits: usize) -> String {
    let mut buf = [0u8; 32];
    let out = &mut buf[..digits];
    hex_into(n, out);
    // Only ASCII hex digits were written.
    out.iter().map(|&b| char::from(b)).collect()
}

fn endpoint(service: Option<&str>, addr: Option<IpAddr>, port: Option<u16>) -> Value {
    let mut m = Map::new();
    if let Some(s) = service {
        m.insert("serviceName".into(), Value::from(s));
    }
    match addr {
        // An IPv4-mapped IPv6 peer is an IPv4 client on a dual-stack socket; Zipkin UIs show ipv4.
        Some(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_some() => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                m.insert("ipv4".into(), Value::from(v4.to_string()));
            }
        }
        Some(IpAddr::V4(v4)) => {
            m.insert("ipv4".into(), Value::from(v4.to_string()));
        }
        Some(IpAddr::V6(v6)) => {
            m.insert("ipv6".into(), Value::from(v6.to_string()));
        }
        None => {}
    }
    if let Some(p) = port.filter(|&p| p != 0) {
        m.insert("port".into(), Value::from(p));
    }
    Value::Object(m)
}

fn span_json(s: &Span) -> Value {
    let mut m = Map::new();
    let trace_digits = if s.ctx.trace_id >> 64 == 0 { 16 } else { 32 };
    m.insert("traceId".into(), Value::from(hex(s.ctx.trace_id, trace_digits)));
    m.insert("id".into(), Value::from(hex(u128::from(s.ctx.span_id), 16)));
    if let Some(parent) = s.ctx.parent_id {
        m.insert("parentId".into(), Value::from(hex(u128::from(parent), 16)));
    }
    m.insert("name".into(), Value::from(s.name.as_str()));
    m.insert("kind".into(), Value::from(if s.kind == SpanKind::Server { "SERVER" } else { "CLIENT" }));
    // A clock before 1970 is a broken host; 0 makes the span visibly wrong rather than dropped.
    let start_us = s.start.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros());
    m.insert("timestamp".into(), Value::from(u64::try_from(start_us).unwrap_or(u64::MAX)));
    // Zipkin reads a duration of 0 as "unknown"; anything measured took at least 1 µs.
    let duration_us = u64::try_from(s.duration.as_micros()).unwrap_or(u64::MAX).max(1);
    m.insert("duration".into(), Value::from(duration_us));
    m.insert("localEndpoint".into(), endpoint(Some(&s.local_service), Some(s.local_ip), None));
    if let Some(r) = s.remote_endpoint {
        m.insert("remoteEndpoint".into(), endpoint(None, Some(r.ip()), Some(r.port())));
    }
    if !s.tags.is_empty() {
        let tags: Map<String, Value> =
            s.tags.iter().map(|(k, v)| ((*k).to_string(), Value::from(v.as_str()))).collect();
        m.insert("tags".into(), Value::Object(tags));
    }
    if s.ctx.debug {
        m.insert("debug".into(), Value::Bool(true));
    }
    if s.ctx.shared {
        m.insert("shared".into(), Value::Bool(true));
    }
    Value::Object(m)
}

/// A JSON array of Zipkin v2 spans.
pub fn zipkin_json_v2(spans: &[Span]) -> Vec<u8> {
    let list = Value::Array(spans.iter().map(span_json).collect());
    // Serializing a `Value` (string keys, finite numbers) cannot fail; "[]" keeps the body valid
    // should that ever change.
    serde_json::to_vec(&list).unwrap_or_else(|_| b"[]".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(trace_id: u128, parent_id: Option<u64>) -> TraceContext {
        TraceContext {
            trace_id,
            span_id: 0xa2fb4a1d1a96d312,
            parent_id,
            sampled: Some(true),
            debug: false,
            shared: false,
            w3c_only: false,
        }
    }

    fn sample() -> Span {
        Span {
            ctx: ctx(0x463ac35c9f6413ad, Some(0x2a)),
            name: "GET /users".into(),
            kind: SpanKind::Client,
            start: UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456),
            duration: Duration::from_nanos(1_500_700),
            local_service: "front-proxy".into(),
            local_ip: "10.0.0.5".parse().expect("ip"),
            remote_endpoint: Some("10.0.0.9:8080".parse().expect("addr")),
            tags: vec![
                (tags::HTTP_METHOD, "GET".into()),
                (tags::HTTP_STATUS_CODE, "200".into()),
                (tags::GUID_X_REQUEST_ID, "f6b3".into()),
                (tags::HTTP_STATUS_CODE, "503".into()),
            ],
        }
    }

    fn parse(spans: &[Span]) -> Value {
        serde_json::from_slice(&zipkin_json_v2(spans)).expect("valid JSON")
    }

    #[test]
    fn a_client_span() {
        let v = parse(&[sample()]);
        assert_eq!(
            v,
            json!([{
                "traceId": "463ac35c9f6413ad",
                "id": "a2fb4a1d1a96d312",
                "parentId": "000000000000002a",
                "name": "GET /users",
                "kind": "CLIENT",
                "timestamp": 1_700_000_000_123_456u64,
                "duration": 1500,
                "localEndpoint": {"serviceName": "front-proxy", "ipv4": "10.0.0.5"},
                "remoteEndpoint": {"ipv4": "10.0.0.9", "port": 8080},
                "tags": {"http.method": "GET", "http.status_code": "503", "guid:x-request-id": "f6b3"}
            }])
        );
    }

    #[test]
    fn a_shared_debug_server_root_with_128_bit_id_and_ipv6() {
        let mut s = sample();
        s.ctx = TraceContext { debug: true, shared: true, ..ctx(0x80f198ee56343ba864fe8b2a57d3eff7, None) };
        s.kind = SpanKind::Server;
        s.duration = Duration::ZERO;
        s.local_ip = "fd00::1".parse().expect("ip");
        s.remote_endpoint = Some("[::ffff:192.0.2.7]:0".parse().expect("addr"));
        s.tags.clear();
        let v = parse(&[s.clone(), sample()]);
        let first = &v[0];
        assert_eq!(first["traceId"], "80f198ee56343ba864fe8b2a57d3eff7");
        assert!(first.get("parentId").is_none() && first.get("tags").is_none());
        assert_eq!(first["kind"], "SERVER");
        assert_eq!(first["duration"], 1);
        assert_eq!(first["localEndpoint"], json!({"serviceName": "front-proxy", "ipv6": "fd00::1"}));
        assert_eq!(first["remoteEndpoint"], json!({"ipv4": "192.0.2.7"}));
        assert_eq!((first["shared"].clone(), first["debug"].clone()), (json!(true), json!(true)));
        assert!(v[1].get("shared").is_none() && v[1].get("debug").is_none());
        assert_eq!(v.as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn an_empty_batch_and_awkward_strings() {
        assert_eq!(zipkin_json_v2(&[]), b"[]");
        let mut s = sample();
        s.name = "GET /\"quoted\"\n\u{0}é".into();
        s.tags = vec![(tags::HTTP_URL, "http://h/p?q=\"x\"".into())];
        let v = parse(&[s]);
        assert_eq!(v[0]["name"], "GET /\"quoted\"\n\u{0}é");
        assert_eq!(v[0]["tags"]["http.url"], "http://h/p?q=\"x\"");
    }
}
