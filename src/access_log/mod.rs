//! Envoy-compatible HTTP access logs: format strings, response flags, and the path from a finished
//! request to a line in a file.
//!
//! Owns: parsing Envoy text formats (`Format`, once per config), the per-request data they read
//! (`Record`, with `Wanted`/`Captured` keeping only the header values some format prints),
//! rendering a line into a byte buffer without allocating, and the sinks: one writer thread
//! (`Writer`) owns every open file, shards batch lines in `ShardBuffers` and hand them over
//! without ever blocking on a disk; when the writer is behind, lines are dropped and counted.
//!
//! Must not touch: the request path (`shard`) and config parsing (`config`) — the shard fills a
//! `Record` and calls `AccessLogs::log`; the config hands over `config::AccessLog`. Nothing here
//! runs I/O on a shard thread. JSON formats are out of scope (the config warns and falls back to
//! the default format).
//!
//! Per request, on a shard:
//! ```ignore
//! if !logs.is_empty() {
//!     req_captured.capture(logs.wanted_request(), head.headers.iter().map(|h| (h.name, h.value)));
//!     // ... on the response head:
//!     resp_captured.capture(logs.wanted_response(), resp.headers.iter().map(|h| (h.name, h.value)));
//!     // ... when the request is done:
//!     logs.log(&Record { .., request_headers: &req_captured, response_headers: &resp_captured }, &mut bufs);
//! }
//! // every 100 ms and at shutdown: bufs.flush();
//! ```

mod flags;
mod format;
mod num;
mod record;
pub(crate) mod time;
mod writer;

pub use flags::ResponseFlags;
pub use format::{Format, FormatError, ENVOY_DEFAULT_FORMAT};
pub use record::{Captured, Record, Wanted};
pub use writer::{ShardBuffers, SinkId, Writer, WriterStats, DEFAULT_QUEUE, FLUSH_AT};

use crate::config;

/// The access logs of one HTTP connection manager: each format with its sink, and the header
/// names any of them reads (indexed alike for all formats, so one capture serves all).
#[derive(Debug, Clone, Default)]
pub struct AccessLogs {
    logs: Vec<(Format, SinkId)>,
    req: Wanted,
    resp: Wanted,
}

impl AccessLogs {
    /// Parses every format (a missing one is Envoy's default) and opens the sinks. Formats are
    /// all checked before any file is opened, so a bad config opens nothing.
    pub fn new(configs: &[config::AccessLog], writer: &Writer) -> Result<AccessLogs, FormatError> {
        let mut formats = Vec::with_capacity(configs.len());
        let (mut req, mut resp) = (Wanted::new(), Wanted::new());
        for cfg in configs {
            let text = match cfg {
                config::AccessLog::File { format, .. }
                | config::AccessLog::Stdout { format }
                | config::AccessLog::Stderr { format } => format.as_deref(),
            };
            let mut format = match text {
                Some(t) => Format::parse(t)?,
                None => Format::envoy_default(),
            };
            if !format.rebind(&mut req, &mut resp) {
                return Err(FormatError::too_many_headers());
            }
            formats.push(format);
        }
        let logs = formats
            .into_iter()
            .zip(configs)
            .map(|(mut format, cfg)| {
                format.set_wanted(&req, &resp);
                (format, writer.open(cfg))
            })
            .collect();
        Ok(AccessLogs { logs, req, resp })
    }

    /// No access log configured: the proxy can skip capturing and recording entirely.
    pub fn is_empty(&self) -> bool {
        self.logs.is_empty()
    }

    /// Request header names (lower-case) to capture into `Record::request_headers`.
    pub fn wanted_request(&self) -> &Wanted {
        &self.req
    }

    /// Response header names (lower-case) to capture into `Record::response_headers`.
    pub fn wanted_response(&self) -> &Wanted {
        &self.resp
    }

    /// The formats and their sinks, in config order.
    pub fn entries(&self) -> impl Iterator<Item = (&Format, SinkId)> {
        self.logs.iter().map(|(f, s)| (f, *s))
    }

    /// Renders `r` once per configured log into this shard's buffers.
    pub fn log(&self, r: &Record<'_>, bufs: &mut ShardBuffers) {
        for (format, sink) in &self.logs {
            bufs.append(*sink, |out| format.render(r, out));
        }
    }
}
