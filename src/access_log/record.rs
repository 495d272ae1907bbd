//! What one finished request contributes to the access log: the `Record` the proxy fills, and the
//! header values it keeps for it (`Wanted` names, `Captured` values).

use super::flags::ResponseFlags;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

/// Everything the command operators read, filled by the proxy when a request ends. Borrowed so
/// that building one costs nothing: the strings live in the request's buffers until the line is
/// rendered.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// When the first byte of the request was received (`%START_TIME%`).
    pub start: SystemTime,
    /// From `start` to the last byte sent downstream, or to the end of the stream (`%DURATION%`).
    pub duration: Duration,
    /// From `start` to the last request byte received (`%REQUEST_DURATION%`).
    pub request_duration: Option<Duration>,
    /// From `start` to the first upstream response byte (`%RESPONSE_DURATION%`).
    pub response_duration: Option<Duration>,
    /// From the first upstream byte to the last byte sent downstream (`%RESPONSE_TX_DURATION%`).
    pub response_tx_duration: Option<Duration>,
    /// `%REQ(:METHOD)%`; empty when the request line never parsed (renders `-`).
    pub method: &'a str,
    /// `%REQ(:PATH)%`, as received.
    pub path: &'a str,
    /// `%REQ(:AUTHORITY)%` (the Host header on HTTP/1.1).
    pub authority: &'a str,
    /// `%PROTOCOL%`: "HTTP/1.1" or "HTTP/1.0"; empty renders `-`.
    pub protocol: &'static str,
    /// `%RESPONSE_CODE%`; 0 when no response was sent (Envoy prints 0 too).
    pub status: u16,
    /// `%RESPONSE_CODE_DETAILS%`, e.g. "via_upstream"; empty renders `-`.
    pub code_details: &'a str,
    pub flags: ResponseFlags,
    /// Request body bytes received (`%BYTES_RECEIVED%`), as Envoy counts: body only.
    pub bytes_received: u64,
    /// Response body bytes sent (`%BYTES_SENT%`).
    pub bytes_sent: u64,
    pub upstream_host: Option<SocketAddr>,
    pub upstream_cluster: Option<&'a str>,
    pub upstream_local: Option<SocketAddr>,
    /// `%UPSTREAM_TRANSPORT_FAILURE_REASON%`, e.g. "delayed connect error: 111"; empty renders `-`.
    pub upstream_transport_failure: &'a str,
    /// `%UPSTREAM_REQUEST_ATTEMPT_COUNT%`.
    pub attempts: u32,
    pub downstream_remote: SocketAddr,
    pub downstream_local: SocketAddr,
    /// `%ROUTE_NAME%`; empty renders `-`.
    pub route_name: &'a str,
    pub connection_id: u64,
    /// Request header values named by `AccessLogs::wanted_request()`.
    pub request_headers: &'a Captured,
    /// Response header values named by `AccessLogs::wanted_response()`.
    pub response_headers: &'a Captured,
}

/// The lower-case header names some format of one HCM reads, in index order. Built once per
/// config; the proxy asks `index` for every header of every logged request, so it compares the
/// length first and only then the bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    names: Vec<Box<str>>,
}

impl Wanted {
    pub fn new() -> Wanted {
        Wanted::default()
    }

    /// The index of `name` (any case), or None when no format reads it.
    #[inline]
    pub fn index(&self, name: impl AsRef<[u8]>) -> Option<u16> {
        let name = name.as_ref();
        // At most u16::MAX names can be inserted, so the position always fits.
        self.names
            .iter()
            .position(|n| n.len() == name.len() && n.as_bytes().eq_ignore_ascii_case(name))
            .map(|i| i as u16)
    }

    /// Adds `name` (lower-cased) unless present; its index. None past u16::MAX names, which no
    /// real format reaches; the caller turns that into a format error instead of panicking.
    pub(crate) fn insert(&mut self, name: &str) -> Option<u16> {
        if let Some(i) = self.index(name) {
            return Some(i);
        }
        let i = u16::try_from(self.names.len()).ok()?;
        self.names.push(name.to_ascii_lowercase().into_boxed_str());
        Some(i)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The names, lower-case, in index order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(|n| &**n)
    }

    pub(crate) fn name(&self, i: u16) -> Option<&str> {
        self.names.get(usize::from(i)).map(|n| &**n)
    }
}

/// The values of the wanted headers of one request (or response). One per connection or shard,
/// reused: `clear` keeps the capacity, so after warm-up capturing allocates nothing.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    buf: Vec<u8>,
    /// Per wanted index, the value's (start, end) in `buf`; `ABSENT` when not seen.
    slots: Vec<(u32, u32)>,
}

const ABSENT: (u32, u32) = (u32::MAX, u32::MAX);

impl Captured {
    pub const fn new() -> Captured {
        Captured { buf: Vec::new(), slots: Vec::new() }
    }

    /// Forgets every value, keeping the memory.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.slots.iter_mut().for_each(|s| *s = ABSENT);
    }

    /// Keeps `value` for wanted index `idx`. The first value wins, as Envoy's `%REQ()%` reads the
    /// first header of a repeated name. A value that would push the buffer past 4 GiB is dropped.
    #[inline]
    /// Like `put`, but replaces a value already captured (a header this hop rewrote).
    pub fn replace(&mut self, idx: u16, value: impl AsRef<[u8]>) {
        if let Some(slot) = self.slots.get_mut(usize::from(idx)) {
            *slot = ABSENT;
        }
        self.put(idx, value);
    }

    /// Forgets the value of wanted index `idx` (a header this hop removed).
    pub fn forget(&mut self, idx: u16) {
        if let Some(slot) = self.slots.get_mut(usize::from(idx)) {
            *slot = ABSENT;
        }
    }

    pub fn put(&mut self, idx: u16, value: impl AsRef<[u8]>) {
        let value = value.as_ref();
        let i = usize::from(idx);
        if i >= self.slots.len() {
            self.slots.resize(i + 1, ABSENT);
        }
        if self.slots[i] != ABSENT {
            return;
        }
        let (Ok(start), Ok(end)) =
            (u32::try_from(self.buf.len()), u32::try_from(self.buf.len() + value.len()))
        else {
            return;
        };
        self.buf.extend_from_slice(value);
        self.slots[i] = (start, end);
    }

    /// The value kept for wanted index `idx`.
    #[inline]
    pub fn get(&self, idx: u16) -> Option<&[u8]> {
        let &(start, end) = self.slots.get(usize::from(idx))?;
        if (start, end) == ABSENT {
            return None;
        }
        self.buf.get(start as usize..end as usize)
    }

    /// Captures every header of `headers` that `wanted` names: the loop the proxy runs per request.
    pub fn capture<N, V>(&mut self, wanted: &Wanted, headers: impl IntoIterator<Item = (N, V)>)
    where
        N: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        self.clear();
        if wanted.is_empty() {
            return;
        }
        for (name, value) in headers {
            if let Some(i) = wanted.index(name) {
                self.put(i, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_is_case_insensitive_and_deduplicated() {
        let mut w = Wanted::new();
        assert_eq!(w.insert("User-Agent"), Some(0));
        assert_eq!(w.insert("x-request-id"), Some(1));
        assert_eq!(w.insert("USER-AGENT"), Some(0));
        assert_eq!(w.index("user-agent"), Some(0));
        assert_eq!(w.index(b"X-Request-Id"), Some(1));
        assert_eq!(w.index("x-request"), None);
        assert_eq!(w.names().collect::<Vec<_>>(), ["user-agent", "x-request-id"]);
    }

    #[test]
    fn captured_keeps_first_value_and_clears() {
        let mut c = Captured::new();
        c.put(2, "b");
        c.put(0, b"a");
        c.put(2, "second");
        assert_eq!(c.get(0), Some(&b"a"[..]));
        assert_eq!(c.get(1), None);
        assert_eq!(c.get(2), Some(&b"b"[..]));
        assert_eq!(c.get(9), None);
        c.clear();
        assert_eq!(c.get(0), None);
        c.put(0, "");
        assert_eq!(c.get(0), Some(&b""[..]));
    }

    #[test]
    fn capture_loop() {
        let mut w = Wanted::new();
        w.insert("host");
        let mut c = Captured::new();
        c.capture(&w, [("Accept", "x"), ("HOST", "example.com")]);
        assert_eq!(c.get(0), Some(&b"example.com"[..]));
    }
}
