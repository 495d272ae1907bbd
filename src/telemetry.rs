//! The control thread's side of access logs and tracing: the one access-log writer thread, one
//! span reporter per collector config, and the collector clusters' current addresses. Turns an HCM's
//! config into what a shard needs per request (`Observers`). Never on the request path.

use crate::access_log::{AccessLogs, Writer};
use crate::cluster::ClusterSnap;
use crate::config::{self, TracingOperation, TracingProvider};
use crate::trace::{Reporter, Sampling, SpanSender};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

/// Who this proxy is, for spans and logs.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub service_cluster: String,
    pub service_node: String,
}

/// Per connection manager: its access logs and its tracing, ready for the request path.
#[derive(Clone, Default)]
pub struct Observers {
    pub access_logs: AccessLogs,
    pub tracing: Option<TraceSettings>,
}

impl Observers {
    /// Whether requests on this connection manager leave a log line or a span.
    pub fn any(&self) -> bool {
        !self.access_logs.is_empty() || self.tracing.is_some()
    }
}

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observers")
            .field("access_logs", &!self.access_logs.is_empty())
            .field("tracing", &self.tracing.is_some())
            .finish()
    }
}

#[derive(Clone)]
pub struct TraceSettings {
    pub sampling: Sampling,
    pub operation: TracingOperation,
    pub sender: SpanSender,
    pub max_path_tag_length: usize,
    pub node: Arc<NodeInfo>,
}

type Addrs = Arc<Mutex<Vec<SocketAddr>>>;

pub struct Telemetry {
    writer: Writer,
    node: Arc<NodeInfo>,
    /// By collector config: the reporter thread and the address slot it reads.
    reporters: Vec<(TracingProvider, Reporter)>,
    /// Collector cluster name → its current addresses (shared with the reporters).
    collectors: HashMap<String, Addrs>,
}

impl Telemetry {
    pub fn new(node: NodeInfo) -> Self {
        Telemetry {
            writer: Writer::start(),
            node: Arc::new(node),
            reporters: Vec::new(),
            collectors: HashMap::new(),
        }
    }

    /// Who this proxy is (the command line's `--service-node` / `--service-cluster`).
    pub fn node(&self) -> &NodeInfo {
        &self.node
    }

    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// The access logs and tracing of every listener of `bootstrap`, in its order (`listeners`,
    /// then `tcp_listeners`): opens the
    /// access-log sinks and starts the Zipkin reporters they need (both idempotent: a sink or a
    /// collector config already running is reused). Call before `Snapshot::build`; Err names the
    /// listener and what is wrong with it.
    pub fn prepare(&mut self, bootstrap: &config::Bootstrap) -> Result<Vec<Observers>, String> {
        let mut out = Vec::with_capacity(bootstrap.listeners.len() + bootstrap.tcp_listeners.len());
        for l in &bootstrap.listeners {
            out.push(self.observers(&l.hcm).map_err(|e| format!("listener {:?}: {e}", l.name))?);
        }
        for l in &bootstrap.tcp_listeners {
            let access_logs = AccessLogs::new(&l.proxy.access_logs, &self.writer)
                .map_err(|e| format!("listener {:?}: {e}", l.name))?;
            out.push(Observers { access_logs, tracing: None });
        }
        Ok(out)
    }

    /// The access logs and tracing of one connection manager. Err names what is wrong.
    pub fn observers(&mut self, hcm: &config::HttpConnectionManager) -> Result<Observers, String> {
        let access_logs = AccessLogs::new(&hcm.access_logs, &self.writer).map_err(|e| e.to_string())?;
        let tracing = match &hcm.tracing {
            None => None,
            Some(t) => Some(TraceSettings {
                sampling: Sampling::from_config(t),
                operation: t.operation,
                sender: self.reporter(&t.provider)?,
                max_path_tag_length: t.max_path_tag_length as usize,
                node: self.node.clone(),
            }),
        };
        Ok(Observers { access_logs, tracing })
    }

    fn reporter(&mut self, provider: &TracingProvider) -> Result<SpanSender, String> {
        if let Some((_, r)) = self.reporters.iter().find(|(c, _)| c == provider) {
            return Ok(r.sender());
        }
        let addrs = self.collectors.entry(provider.collector_cluster().to_string()).or_default().clone();
        let addrs = move || addrs.lock().map(|a| a.clone()).unwrap_or_default();
        let reporter = match provider {
            TracingProvider::Zipkin(z) => Reporter::for_config(z, addrs),
            TracingProvider::OpenTelemetry(o) => Reporter::for_opentelemetry(o, addrs),
        }
        .map_err(|e| format!("cannot start the span reporter: {e}"))?;
        let sender = reporter.sender();
        self.reporters.push((provider.clone(), reporter));
        Ok(sender)
    }

    /// Sends the spans still queued and stops the reporter threads; for the end of a graceful
    /// exit, after the shards drained (each POST is bounded by the reporter's I/O timeouts).
    pub fn shutdown(self) {
        for (_, reporter) in self.reporters {
            reporter.shutdown();
        }
    }

    /// Points the reporters at the collector clusters' current endpoints; call with every snapshot
    /// about to be installed.
    pub fn update_collectors(&self, clusters: &[std::sync::Arc<ClusterSnap>]) {
        for (name, slot) in &self.collectors {
            if let Some(c) = clusters.iter().find(|c| &c.name == name) {
                if let Ok(mut addrs) = slot.lock() {
                    addrs.clone_from(&c.endpoints);
                }
            }
        }
    }
}

/// The address spans name as this proxy's: the listener's, unless it is a wildcard.
pub fn local_ip(listener: SocketAddr) -> IpAddr {
    if listener.ip().is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        listener.ip()
    }
}
