//! Finished spans as OTLP (`opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest`) and
//! the gRPC client that exports them, `TraceService/Export`, as Envoy's OpenTelemetry tracer does.
//!
//! Owns: the mapping from `Span` to OTLP messages (the generated types of `opentelemetry-proto`;
//! nothing is hand-encoded) and one HTTP/2 channel to a collector on a tokio current-thread runtime
//! of its own. Must not touch: the shards (only the reporter thread calls `export`), the queue and
//! batching (`reporter`), or address resolution (the caller passes the address to use).

use super::zipkin::{tags, Span, SpanKind};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, status, ResourceSpans, ScopeSpans, Status};
use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};
use tonic::transport::{Channel, Endpoint};

fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.to_string())) }),
        ..Default::default()
    }
}

fn unix_nanos(t: std::time::SystemTime) -> u64 {
    // A clock before 1970 is a broken host; 0 makes the span visibly wrong rather than dropped.
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn otlp_span(s: &Span) -> opentelemetry_proto::tonic::trace::v1::Span {
    let start = unix_nanos(s.start);
    // Tags keep their order; a later duplicate replaces an earlier one, as in the Zipkin encoding.
    let mut attributes: Vec<KeyValue> = Vec::with_capacity(s.tags.len());
    for (k, v) in &s.tags {
        match attributes.iter_mut().find(|a| a.key == *k) {
            Some(a) => *a = string_kv(k, v),
            None => attributes.push(string_kv(k, v)),
        }
    }
    let error = s.tags.iter().any(|(k, v)| *k == tags::ERROR && v == "true");
    opentelemetry_proto::tonic::trace::v1::Span {
        trace_id: s.ctx.trace_id.to_be_bytes().to_vec(),
        span_id: s.ctx.span_id.to_be_bytes().to_vec(),
        parent_span_id: s.ctx.parent_id.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default(),
        name: s.name.clone(),
        kind: match s.kind {
            SpanKind::Server => span::SpanKind::Server,
            SpanKind::Client => span::SpanKind::Client,
        } as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start.saturating_add(u64::try_from(s.duration.as_nanos()).unwrap_or(u64::MAX)),
        attributes,
        status: error.then(|| Status { code: status::StatusCode::Error as i32, ..Default::default() }),
        ..Default::default()
    }
}

/// The resource every span of a tracer shares: its `service.name` and, with `sdk_attributes`
/// (Envoy's default), the telemetry SDK's name, language and version. Envoy names itself there
/// (`envoy`, `cpp`, its build); skiff says what made the spans: `skiff`, `rust`, its version.
pub fn resource(service_name: &str, sdk_attributes: bool) -> Resource {
    let mut attributes = vec![string_kv("service.name", service_name)];
    if sdk_attributes {
        attributes.extend([
            string_kv("telemetry.sdk.language", "rust"),
            string_kv("telemetry.sdk.name", "skiff"),
            string_kv("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
        ]);
    }
    Resource { attributes, ..Default::default() }
}

/// One `ExportTraceServiceRequest`: one resource, one scope (`envoy`, as Envoy names it), the
/// batch's spans.
pub fn export_request(spans: &[Span], resource: &Resource) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope { name: "envoy".to_string(), ..Default::default() }),
                spans: spans.iter().map(otlp_span).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The reporter thread's gRPC client: a runtime only it drives and the channel to the address last
/// used (reused while the collector keeps answering, dropped on any failure so the next batch
/// reconnects, possibly elsewhere).
pub struct OtlpClient {
    runtime: tokio::runtime::Runtime,
    /// The `:authority` of each call: the cluster's name, as Envoy's gRPC client sends it.
    authority: String,
    connect_timeout: Duration,
    call_timeout: Duration,
    channel: Option<(SocketAddr, Channel)>,
}

impl OtlpClient {
    pub fn new(authority: &str, connect_timeout: Duration, call_timeout: Duration) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok(OtlpClient {
            runtime,
            authority: authority.to_string(),
            connect_timeout,
            call_timeout,
            channel: None,
        })
    }

    /// One Export call to `addr`, bounded by the connect and call timeouts; not retried.
    pub fn export(&mut self, addr: SocketAddr, request: ExportTraceServiceRequest) -> Result<(), String> {
        let channel = match &self.channel {
            Some((a, c)) if *a == addr => c.clone(),
            _ => {
                let origin = format!("http://{}", self.authority)
                    .parse()
                    .map_err(|e| format!("collector authority {:?}: {e}", self.authority))?;
                let endpoint = Endpoint::from_shared(format!("http://{addr}"))
                    .map_err(|e| format!("collector address {addr}: {e}"))?
                    .origin(origin)
                    .connect_timeout(self.connect_timeout)
                    .timeout(self.call_timeout);
                // The channel spawns its connection task on the runtime it is made in.
                let _in_runtime = self.runtime.enter();
                let c = endpoint.connect_lazy();
                self.channel = Some((addr, c.clone()));
                c
            }
        };
        let call_timeout = self.call_timeout;
        let result = self.runtime.block_on(async move {
            let mut client = TraceServiceClient::new(channel);
            tokio::time::timeout(call_timeout, client.export(request)).await
        });
        match result {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status)) => {
                self.channel = None;
                Err(format!("{addr}: {status}"))
            }
            Err(_) => {
                self.channel = None;
                Err(format!("{addr}: no answer within {call_timeout:?}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::TraceContext;
    use std::time::SystemTime;

    #[test]
    fn a_span_in_otlp() {
        let span = Span {
            ctx: TraceContext {
                trace_id: 0x0af7651916cd43dd8448eb211c80319c,
                span_id: 0x2a,
                parent_id: Some(0xb7ad6b7169203331),
                sampled: Some(true),
                debug: false,
                shared: false,
                w3c_only: true,
            },
            name: "ingress".into(),
            kind: SpanKind::Server,
            start: UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789),
            duration: Duration::from_nanos(1_500),
            local_service: "c".into(),
            local_ip: "10.0.0.5".parse().expect("ip"),
            remote_endpoint: None,
            tags: vec![
                (tags::HTTP_STATUS_CODE, "200".into()),
                (tags::ERROR, "true".into()),
                (tags::HTTP_STATUS_CODE, "503".into()),
            ],
        };
        let req = export_request(
            &[span, Span { start: SystemTime::UNIX_EPOCH, ..sample_root() }],
            &resource("svc", false),
        );
        let rs = &req.resource_spans[0];
        assert_eq!(
            rs.resource.as_ref().map(|r| r.attributes.clone()),
            Some(vec![string_kv("service.name", "svc")])
        );
        let spans = &rs.scope_spans[0].spans;
        let s = &spans[0];
        assert_eq!(hex(&s.trace_id), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(
            (hex(&s.span_id), hex(&s.parent_span_id)),
            ("000000000000002a".into(), "b7ad6b7169203331".into())
        );
        assert_eq!(
            (s.kind, s.start_time_unix_nano, s.end_time_unix_nano),
            (2, 1_700_000_000_123_456_789, 1_700_000_000_123_458_289)
        );
        assert_eq!(s.attributes, vec![string_kv("http.status_code", "503"), string_kv("error", "true")]);
        assert_eq!(s.status.as_ref().map(|st| st.code), Some(2));
        let root = &spans[1];
        assert!(root.parent_span_id.is_empty() && root.status.is_none() && root.attributes.is_empty());
        assert_eq!(root.kind, 3);
    }

    #[test]
    fn sdk_attributes() {
        let keys: Vec<String> = resource("s", true).attributes.into_iter().map(|kv| kv.key).collect();
        assert_eq!(
            keys,
            ["service.name", "telemetry.sdk.language", "telemetry.sdk.name", "telemetry.sdk.version"]
        );
    }

    fn sample_root() -> Span {
        Span {
            ctx: TraceContext {
                trace_id: 7,
                span_id: 7,
                parent_id: None,
                sampled: Some(true),
                debug: false,
                shared: false,
                w3c_only: true,
            },
            name: "egress h".into(),
            kind: SpanKind::Client,
            start: UNIX_EPOCH,
            duration: Duration::ZERO,
            local_service: String::new(),
            local_ip: "127.0.0.1".parse().expect("ip"),
            remote_endpoint: None,
            tags: Vec::new(),
        }
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
