//! What the HTTP filters decided for one request (`Verdict`), and the per-request state a
//! decision holds until the request ends (`ActiveFault`). Shared by the chain and its filters;
//! owns no decision itself.

use crate::access_log::ResponseFlags;
use crate::config::Fraction;
use crate::http::RequestHead;
use crate::stats::FaultStats;
use std::borrow::Cow;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A filter's own reply (the router never sees the request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterReply {
    pub status: u16,
    pub body: &'static [u8],
    pub flag: ResponseFlags,
    /// Header lines (`name: value\r\n`) the reply carries besides skiff's own.
    pub headers: Vec<u8>,
}

/// What the chain decided for one request, carried out by the request owner and held until the
/// request ends (it holds the active-fault count).
#[derive(Debug, Default)]
pub struct Verdict<'a> {
    /// Answer the request with this.
    pub reply: Option<FilterReply>,
    /// Wait this long first (the fault filter's delay), then reply or forward.
    pub delay: Option<Duration>,
    /// Flags the request logs whatever happens next (`DI`).
    pub flags: ResponseFlags,
    /// Header lines to add to the upstream request.
    pub request_headers: Vec<u8>,
    /// Header lines to add to the upstream's response.
    pub response_headers: Vec<u8>,
    /// `response_headers` replace the upstream's headers of the same names where they stand
    /// (Envoy's `setInline`, as the CORS filter sets its headers); the others are appended.
    pub response_headers_replace: bool,
    /// `reply` is a response the filter wrote itself (Envoy's `encodeHeaders`, as the CORS
    /// preflight answer), not a local reply (`sendLocalReply`): it has no body or content-type,
    /// and Envoy's codec writes its `content-length: 0` after `date` and `server`.
    pub encoded_reply: bool,
    pub(super) fault: Option<ActiveFault<'a>>,
    /// The chain has compressor filters: they decide when the response head arrives.
    pub compress: Option<CompressAsk>,
}

/// What the compressor filters keep of the request for the response: its `accept-encoding`.
#[derive(Debug)]
pub struct CompressAsk {
    pub accept_encoding: Option<Box<[u8]>>,
    /// The compressor filters that saw `accept-encoding` (none after one that removed it), by
    /// their stat index (bit i: index i).
    pub saw_accept: u64,
    /// A filter removed `accept-encoding` from the upstream request.
    pub remove_accept_encoding: bool,
    /// The compressor filters a `CompressorPerRoute` turns off for this request, by their stat
    /// index (bit i: index i).
    pub disabled: u64,
}

impl<'a> Verdict<'a> {
    /// The verdict to keep for the request: None when the filters decided nothing, so an
    /// untriggered filter costs the request no allocation.
    pub fn kept(self) -> Option<Box<Verdict<'a>>> {
        let nothing = self.reply.is_none()
            && self.delay.is_none()
            && self.flags == ResponseFlags::NONE
            && self.request_headers.is_empty()
            && self.response_headers.is_empty()
            && self.fault.is_none()
            && self.compress.is_none();
        (!nothing).then(|| Box::new(self))
    }
}

/// What the fault filter of one connection manager shares across its configs and shards: the
/// process-wide count of requests with a fault in progress (Envoy's `active_faults`, which
/// `max_active_faults` is checked against). Touched only by requests a fault is injected into.
#[derive(Debug, Default)]
pub struct Active(AtomicU64);

impl Active {
    pub(super) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Holds `active_faults` (the shard's gauge and the process-wide count) up while a request with
/// an injected fault lives.
#[derive(Debug)]
pub struct ActiveFault<'a> {
    active: &'a Active,
    stats: Rc<FaultStats>,
}

impl<'a> ActiveFault<'a> {
    pub(super) fn begin(active: &'a Active, stats: Rc<FaultStats>) -> Self {
        active.0.fetch_add(1, Ordering::Relaxed);
        stats.active_faults.inc();
        ActiveFault { active, stats }
    }
}

impl Drop for ActiveFault<'_> {
    fn drop(&mut self) {
        self.active.0.fetch_sub(1, Ordering::Relaxed);
        self.stats.active_faults.dec();
    }
}

/// Whether a fraction applies to this request; `roll` is uniformly random.
pub(super) fn hit(f: Fraction, roll: u64) -> bool {
    f.per_million >= 1_000_000 || (roll % 1_000_000) < u64::from(f.per_million)
}

/// `hit`, drawing a random number only for a fraction strictly between 0 and 100 % (the cost of
/// a filter that is simply on or off).
pub(super) fn draw(f: Fraction, roll: &mut dyn FnMut() -> u64) -> bool {
    match f.per_million {
        0 => false,
        p if p >= 1_000_000 => true,
        _ => hit(f, roll()),
    }
}

/// The first value of the request header `name`.
pub(super) fn header<'h>(head: &RequestHead<'h>, name: &str) -> Option<&'h [u8]> {
    head.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
}

/// The request header `name` as Envoy keeps an inline header (`origin`, `referer`): its repeated
/// lines joined by `,`. Borrowed unless it is repeated.
pub(super) fn joined_header<'h>(head: &RequestHead<'h>, name: &str) -> Option<Cow<'h, [u8]>> {
    let mut lines = head.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name));
    let first = lines.next()?.value;
    let mut joined = Cow::Borrowed(first);
    for more in lines {
        let out = joined.to_mut();
        out.push(b',');
        out.extend_from_slice(more.value);
    }
    Some(joined)
}

/// Appends one header line.
pub(super) fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_hit_in_proportion() {
        let half = Fraction { per_million: 500_000, unit: 10_000 };
        assert!(hit(half, 499_999) && !hit(half, 500_000));
        assert!(!hit(Fraction::NONE, 0));
        assert!(hit(Fraction { per_million: 1_000_000, unit: 10_000 }, u64::MAX));
    }
}
