//! A real OTLP/gRPC trace collector for the tests (`opentelemetry.proto.collector.trace.v1.
//! TraceService/Export` on tonic, with the generated types skiff itself exports with), on a thread
//! of its own: it accepts every export and records each span with its resource's `service.name`.
#![allow(dead_code)]

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};
use tonic_thread::TonicThread;

#[path = "tonic_thread.rs"]
mod tonic_thread;

/// One exported span, its ids as hex.
#[derive(Debug, Clone)]
pub struct SeenSpan {
    pub service_name: String,
    pub resource: Vec<(String, String)>,
    pub scope: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub name: String,
    /// OTLP's numbers: 2 SERVER, 3 CLIENT.
    pub kind: i32,
    pub start: u64,
    pub end: u64,
    pub attributes: Vec<(String, String)>,
    /// None: unset.
    pub status: Option<i32>,
}

impl SeenSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

pub struct Collector {
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<SeenSpan>>>,
    _server: TonicThread,
}

#[derive(Clone)]
struct Service {
    spans: Arc<Mutex<Vec<SeenSpan>>>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn pairs(kvs: &[KeyValue]) -> Vec<(String, String)> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut out = Vec::new();
        for rs in request.into_inner().resource_spans {
            let resource = rs.resource.map(|r| pairs(&r.attributes)).unwrap_or_default();
            let service_name = resource
                .iter()
                .find(|(k, _)| k == "service.name")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            for ss in rs.scope_spans {
                let scope = ss.scope.map(|s| s.name).unwrap_or_default();
                for s in ss.spans {
                    out.push(SeenSpan {
                        service_name: service_name.clone(),
                        resource: resource.clone(),
                        scope: scope.clone(),
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_span_id: hex(&s.parent_span_id),
                        name: s.name,
                        kind: s.kind,
                        start: s.start_time_unix_nano,
                        end: s.end_time_unix_nano,
                        attributes: pairs(&s.attributes),
                        status: s.status.map(|st| st.code),
                    });
                }
            }
        }
        self.spans.lock().unwrap().extend(out);
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    pub fn start() -> Collector {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let service = Service { spans: spans.clone() };
        let server = TonicThread::serve(TraceServiceServer::new(service));
        Collector { addr: server.addr, spans, _server: server }
    }

    pub fn spans(&self) -> Vec<SeenSpan> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits until at least `n` spans arrived; returns them all.
    pub fn wait_for(&self, n: usize, limit: Duration) -> Vec<SeenSpan> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let spans = self.spans();
            if spans.len() >= n {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.spans()
    }
}
