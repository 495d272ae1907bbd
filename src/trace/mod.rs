//! Distributed tracing: reading and writing trace context headers (W3C `traceparent` and Zipkin
//! B3), deciding a request's span and whether it is sampled, encoding finished spans as Zipkin v2
//! JSON or OTLP, and reporting them to the collector cluster from a thread of its own.
//!
//! Owns: the wire formats of trace context, span ids and sampling, the Zipkin and OTLP encodings, and the
//! reporter thread with its counters. Must not touch: the request path (shards call `extract`,
//! `start`, `write_headers` and `SpanSender::report`; none of them blocks, allocates per header or
//! fails on bad input), the config (it reads `config::Tracing` only), or the cluster's address
//! resolution (the reporter asks a caller-given closure for addresses on every flush).

mod context;
mod otlp;
mod reporter;
mod zipkin;

pub use context::{
    extract, extract_as, is_propagation_header, start, write_headers, Format, Incoming, IncomingSpan,
    Sampling, TraceContext,
};
pub use otlp::{export_request, resource};
pub use reporter::{Reporter, ReporterOptions, ReporterStats, SpanSender};
pub use zipkin::{tags, zipkin_json_v2, Span, SpanKind};
