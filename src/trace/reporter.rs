//! The span reporter: one thread per collector that batches spans and sends them to the collector
//! cluster: POSTed as Zipkin v2 JSON over blocking HTTP/1.1, or exported as OTLP over gRPC.
//!
//! Owns: the bounded queue between shards and the thread, batching, the collector connection and
//! the reporter counters. Must not touch: the shards' event loops (`SpanSender::report` never
//! blocks: a full queue drops the span and counts it) or address resolution (the `addrs` closure
//! given at start is asked on every flush, so DNS changes are seen without this module knowing how).

use super::otlp::{export_request, resource, OtlpClient};
use super::zipkin::{zipkin_json_v2, Span};
use opentelemetry_proto::tonic::resource::v1::Resource;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Counters, readable at any time (e.g. by the admin/stats code).
#[derive(Debug, Default)]
pub struct ReporterStats {
    /// Spans in batches the collector accepted (2xx).
    pub spans_sent: AtomicU64,
    /// Spans refused by `report` because the queue was full or the thread had stopped.
    pub spans_dropped: AtomicU64,
    /// Spans lost in batches whose POST failed.
    pub spans_failed: AtomicU64,
    /// POSTs that failed: no address, connect/write/read error or timeout, non-2xx status.
    pub reports_failed: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
pub struct ReporterOptions {
    /// A batch is sent at least this often (when not empty).
    pub flush_interval: Duration,
    /// ... or as soon as it holds this many spans.
    pub batch_size: usize,
    /// Spans waiting for the thread; beyond this `report` drops.
    pub queue_capacity: usize,
    /// Each of connect, write and read.
    pub io_timeout: Duration,
}

impl Default for ReporterOptions {
    fn default() -> Self {
        ReporterOptions {
            flush_interval: Duration::from_secs(1),
            batch_size: 100,
            // A few seconds of a busy proxy's spans; bounded so a dead collector costs memory once.
            queue_capacity: 8192,
            io_timeout: Duration::from_secs(1),
        }
    }
}

enum Msg {
    Span(Box<Span>),
    /// Flush what is queued and exit.
    Stop,
}

/// A cloneable, non-blocking handle for the request path.
#[derive(Clone)]
pub struct SpanSender {
    tx: SyncSender<Msg>,
    stats: Arc<ReporterStats>,
}

impl SpanSender {
    /// Queues a span; never blocks. A full queue or a stopped reporter drops it and counts the drop.
    pub fn report(&self, span: Span) {
        match self.tx.try_send(Msg::Span(Box::new(span))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.spans_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn stats(&self) -> &Arc<ReporterStats> {
        &self.stats
    }
}

/// The reporter thread and its handle. Dropping it leaves the thread running until every
/// `SpanSender` is gone; `shutdown` flushes and joins.
pub struct Reporter {
    sender: SpanSender,
    thread: Option<JoinHandle<()>>,
}

impl Reporter {
    /// Starts the thread with the default options. `host` is the `Host` header: Envoy's
    /// `collector_hostname`, or else the collector cluster's name (see `for_config`).
    pub fn start(
        collector_endpoint: &str,
        host: &str,
        addrs: impl Fn() -> Vec<SocketAddr> + Send + 'static,
    ) -> std::io::Result<Reporter> {
        Self::start_with(ReporterOptions::default(), collector_endpoint, host, addrs)
    }

    /// The OpenTelemetry tracer's reporter: OTLP/gRPC `Export` calls to the collector cluster.
    /// Envoy flushes every 5 s or at 5 spans (`tracing.opentelemetry.flush_interval_ms`,
    /// `min_flush_spans`); the queue holds `max_cache_size` spans.
    pub fn for_opentelemetry(
        config: &crate::config::OpenTelemetryConfig,
        addrs: impl Fn() -> Vec<SocketAddr> + Send + 'static,
    ) -> std::io::Result<Reporter> {
        let options = ReporterOptions {
            flush_interval: Duration::from_secs(5),
            batch_size: 5,
            queue_capacity: config.max_cache_size as usize,
            io_timeout: Duration::from_secs(1),
        };
        Self::start_otlp(options, config, addrs)
    }

    /// `for_opentelemetry` with other options (tests flush sooner).
    pub fn start_otlp(
        options: ReporterOptions,
        config: &crate::config::OpenTelemetryConfig,
        addrs: impl Fn() -> Vec<SocketAddr> + Send + 'static,
    ) -> std::io::Result<Reporter> {
        // Envoy's gRPC client has no deadline without `timeout`; a bounded one keeps a collector
        // that accepts but never answers from stalling the thread for ever.
        let call_timeout = config.timeout.unwrap_or(Duration::from_secs(5));
        let client = OtlpClient::new(&config.collector_cluster, options.io_timeout, call_timeout)?;
        let exporter = Exporter::Otlp {
            client: Box::new(client),
            resource: resource(&config.service_name, config.sdk_attributes),
        };
        Self::spawn(options, exporter, addrs)
    }

    /// `start` for a connection manager's Zipkin config.
    pub fn for_config(
        config: &crate::config::ZipkinConfig,
        addrs: impl Fn() -> Vec<SocketAddr> + Send + 'static,
    ) -> std::io::Result<Reporter> {
        let host = config.collector_hostname.as_deref().unwrap_or(&config.collector_cluster);
        Self::start(&config.collector_endpoint, host, addrs)
    }

    /// Fails only if the OS refuses a thread.
    pub fn start_with(
        options: ReporterOptions,
        collector_endpoint: &str,
        host: &str,
        addrs: impl Fn() -> Vec<SocketAddr> + Send + 'static,
    ) -> std::io::Result<Reporter> {
        // Everything before the Content-Length value is the same for every batch.
        let head = format!(
            "POST {collector_endpoint} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nUser-Agent: skiff\r\nConnection: close\r\nContent-Length: "
        )
        .into_bytes();
        Self::spawn(options, Exporter::Zipkin { head }, addrs)
    }

    fn spawn(
        options: ReporterOptions,
        exporter: Exporter,
        addrs: impl Fn() -> Vec<SocketAddr> + Send + 'static,
    ) -> std::io::Result<Reporter> {
        let (tx, rx) = mpsc::sync_channel(options.queue_capacity.max(1));
        let stats = Arc::new(ReporterStats::default());
        let mut worker =
            Worker { options, exporter, addrs: Box::new(addrs), next_addr: 0, stats: stats.clone() };
        let thread =
            std::thread::Builder::new().name("skiff-trace".to_string()).spawn(move || worker.run(rx))?;
        Ok(Reporter { sender: SpanSender { tx, stats }, thread: Some(thread) })
    }

    pub fn sender(&self) -> SpanSender {
        self.sender.clone()
    }

    pub fn stats(&self) -> &Arc<ReporterStats> {
        &self.sender.stats
    }

    /// Sends what is queued and stops the thread. Waits for the queue to have room for the stop
    /// message and for the last POST (bounded by the I/O timeouts).
    pub fn shutdown(mut self) {
        // An error means the thread is gone already.
        let _ = self.sender.tx.send(Msg::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How a batch leaves.
enum Exporter {
    /// Zipkin v2 JSON; `head` is the POST up to its Content-Length value.
    Zipkin { head: Vec<u8> },
    /// OTLP/gRPC `TraceService/Export`.
    Otlp { client: Box<OtlpClient>, resource: Resource },
}

struct Worker {
    options: ReporterOptions,
    exporter: Exporter,
    addrs: Box<dyn Fn() -> Vec<SocketAddr> + Send>,
    next_addr: usize,
    stats: Arc<ReporterStats>,
}

impl Worker {
    fn run(&mut self, rx: mpsc::Receiver<Msg>) {
        let mut batch: Vec<Span> = Vec::with_capacity(self.options.batch_size);
        let mut deadline = Instant::now() + self.options.flush_interval;
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            let stop = match rx.recv_timeout(wait) {
                Ok(Msg::Span(s)) => {
                    batch.push(*s);
                    false
                }
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => true,
                Err(RecvTimeoutError::Timeout) => false,
            };
            let due = Instant::now() >= deadline;
            if stop || due || batch.len() >= self.options.batch_size {
                if !batch.is_empty() {
                    self.flush(&batch);
                    batch.clear();
                }
                deadline = Instant::now() + self.options.flush_interval;
            }
            if stop {
                return;
            }
        }
    }

    fn flush(&mut self, batch: &[Span]) {
        let count = batch.len() as u64;
        let sent = match &self.exporter {
            Exporter::Zipkin { .. } => self.post(&zipkin_json_v2(batch)),
            Exporter::Otlp { resource, .. } => {
                let request = export_request(batch, resource);
                self.next_addr().and_then(|addr| match &mut self.exporter {
                    Exporter::Otlp { client, .. } => client.export(addr, request),
                    Exporter::Zipkin { .. } => Err("not an OTLP reporter".to_string()),
                })
            }
        };
        match sent {
            Ok(()) => {
                self.stats.spans_sent.fetch_add(count, Ordering::Relaxed);
            }
            Err(e) => {
                // Debug only: a missing collector must not flood the log once a second.
                log::debug!("tracing: sending {count} spans to the collector failed: {e}");
                self.stats.reports_failed.fetch_add(1, Ordering::Relaxed);
                self.stats.spans_failed.fetch_add(count, Ordering::Relaxed);
            }
        }
    }

    /// One attempt at the next address, round robin; a failed batch is not retried, so a slow or
    /// dead collector never backs spans up beyond the queue.
    fn post(&mut self, body: &[u8]) -> Result<(), String> {
        let Exporter::Zipkin { head } = &self.exporter else {
            return Err("not a Zipkin reporter".to_string());
        };
        let head = head.clone();
        let addr = self.next_addr()?;
        let timeout = self.options.io_timeout;
        let mut stream =
            TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect to {addr}: {e}"))?;
        stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let mut request = Vec::with_capacity(head.len() + 24 + body.len());
        request.extend_from_slice(&head);
        request.extend_from_slice(body.len().to_string().as_bytes());
        request.extend_from_slice(b"\r\n\r\n");
        request.extend_from_slice(body);
        stream.write_all(&request).map_err(|e| format!("write to {addr}: {e}"))?;
        let status = read_status(&mut stream).map_err(|e| format!("response from {addr}: {e}"))?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(format!("{addr} answered {status}"))
        }
    }
}

impl Worker {
    /// The collector address for this batch, round robin over what the cluster has now.
    fn next_addr(&mut self) -> Result<SocketAddr, String> {
        let addrs = (self.addrs)();
        if addrs.is_empty() {
            return Err("the collector cluster has no addresses".to_string());
        }
        let addr = addrs[self.next_addr % addrs.len()];
        self.next_addr = self.next_addr.wrapping_add(1);
        Ok(addr)
    }
}

/// Reads until the response head is complete and returns its status; the body is not needed.
fn read_status(stream: &mut TcpStream) -> Result<u16, String> {
    let mut buf = [0u8; 4096];
    let mut len = 0;
    loop {
        if len == buf.len() {
            return Err("response head larger than 4 KiB".to_string());
        }
        let n = stream.read(&mut buf[len..]).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before a response".to_string());
        }
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                return response.code.ok_or_else(|| "response without a status".to_string())
            }
            Ok(httparse::Status::Partial) => continue,
            Err(e) => return Err(format!("bad response: {e}")),
        }
    }
}
