//! A shard's idle upstream connections, per cluster and endpoint address (so they survive config
//! and DNS updates that keep both, and two clusters on one address never share a connection or its
//! stats). LIFO: the most recently used connection is the least likely to have been closed by the
//! upstream. Bounded in count and idle age. Every pooled connection has a read armed on it, so one
//! that received anything while idle (late bytes, an EOF) is never handed out.

use super::breaker::{Breaker, HostConns, Resource};
use super::pending::EndpointConns;
use crate::stats::{ClusterStats, HostStats};
use bytes::BytesMut;
use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;
use monoio::net::TcpStream;
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// Which idle connections a request may take: the cluster's pool id and the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub cluster: u64,
    pub addr: SocketAddr,
    /// A `use_downstream_protocol_config` cluster's HTTP/2 connections, for HTTP/2 clients: kept
    /// apart from its HTTP/1.1 ones (false for every other cluster).
    pub downstream_http2: bool,
}

impl PoolKey {
    /// The key of `cluster`'s HTTP/1.1 (or only) connections to `addr`.
    pub fn of(cluster: u64, addr: SocketAddr) -> Self {
        PoolKey { cluster, addr, downstream_http2: false }
    }
}

/// A read submitted on an idle connection: whatever completes it before the next request is
/// written (a late second response, a body after a 204, an EOF) disqualifies the connection, and
/// when nothing does, it is the next response's first read. So a connection is checked for unread
/// bytes when pooled and when taken without a syscall of its own.
type ArmedRead = Pin<Box<dyn Future<Output = (std::io::Result<usize>, TcpStream, BytesMut)>>>;

/// An upstream connection, its read buffer (which travels with it, so a response's leftover bytes
/// can never leak into another exchange: a connection is only pooled when its buffer is empty),
/// and a second handle on its socket for reading, so a request body can be written while the
/// response is read.
pub struct Upstream {
    /// Requests (heads and bodies) are written here.
    pub stream: TcpStream,
    /// Responses are read here.
    pub read: ReadSide,
    /// Requests sent on this connection so far.
    pub requests: u32,
    pub key: PoolKey,
    /// The cluster that opened it, and the host: their `cx_active` count this connection until it
    /// closes.
    pub stats: Rc<ClusterStats>,
    pub host: Rc<HostStats>,
    /// The upstream closed or reset it (else skiff closes it): Envoy's `destroy_remote`/`_local`.
    pub peer_closed: bool,
    /// A request is on it whose response has not been read whole: `destroy_with_active_rq`.
    pub in_request: bool,
    /// Seconds it may idle in the pool (its cluster's `idle_timeout`).
    pub idle_secs: u64,
    /// When it stops taking new requests (its cluster's `max_connection_duration`).
    pub expires: Option<Instant>,
    /// Its place in the cluster's `max_connections` and in this shard's count for the endpoint.
    slot: ConnSlot,
    /// Set when this is not a connection but a socket-pair end bridged to HTTP/2 streams
    /// (`shard::h2_upstream`): the bridge counts its real connections, and says here how the
    /// stream behind the last request ended when it ended without a response.
    pub bridge: Option<Rc<BridgeNote>>,
}

/// What an HTTP/2 bridge tells the HTTP/1 path about the stream behind a request it closed
/// without a complete response.
#[derive(Debug, Default)]
pub struct BridgeNote {
    pub ended: std::cell::Cell<Option<StreamEnd>>,
}

/// How an HTTP/2 stream ended before its response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// RST_STREAM with REFUSED_STREAM: the host did not process it.
    Refused,
    /// RST_STREAM with another code.
    Reset,
    /// The connection closed or went away with the stream open.
    ConnectionTermination,
    /// No HTTP/2 connection to the host could be made (`timed_out`: within `connect_timeout`).
    ConnectFailed { timed_out: bool },
}

/// What an open connection holds of the circuit breakers, given back when it closes.
pub struct ConnSlot {
    pub breaker: Arc<Breaker>,
    pub conns: Rc<EndpointConns>,
    /// Its host's count, with `per_host_thresholds`.
    host: Option<HostConns>,
}

impl ConnSlot {
    /// Counts a connection already taken on `breaker` (`Resource::Connections`).
    pub fn new(breaker: Arc<Breaker>, conns: Rc<EndpointConns>) -> Self {
        conns.opened();
        ConnSlot { breaker, conns, host: None }
    }

    /// Counts the connection in its host's count too (given back with the rest).
    pub fn on_host(mut self, host: Option<&HostConns>) -> Self {
        if let Some(n) = host {
            n.fetch_add(1, Ordering::Relaxed);
            self.host = Some(n.clone());
        }
        self
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.breaker.give_back(Resource::Connections);
        if let Some(n) = &self.host {
            n.fetch_sub(1, Ordering::Relaxed);
        }
        self.conns.closed();
    }
}

/// What a new upstream connection counts in while it is open: its cluster's and host's stats and
/// its circuit-breaker slot.
pub struct Accounts {
    pub stats: Rc<ClusterStats>,
    pub host: Rc<HostStats>,
    pub slot: ConnSlot,
}

impl Upstream {
    pub fn new(
        (stream, reader): (TcpStream, TcpStream),
        key: PoolKey,
        Accounts { stats, host, slot }: Accounts,
        read_buf: usize,
        limits: &super::ConnectionLimits,
    ) -> Self {
        // `upstream_cx_total` counted the attempt that made it (`connect`).
        stats.upstream_cx_active.inc();
        host.cx_active.inc();
        Upstream {
            stream,
            read: ReadSide { reader: Some(reader), buf: BytesMut::with_capacity(read_buf), armed: None },
            requests: 0,
            key,
            stats,
            host,
            peer_closed: false,
            in_request: false,
            idle_secs: limits.idle_secs,
            expires: limits.max_duration.and_then(|d| Instant::now().checked_add(d)),
            slot,
            bridge: None,
        }
    }

    /// A socket-pair end bridged to HTTP/2 streams (`shard::h2_upstream`): pooled and used as a
    /// connection, but counted in no connection stat (the bridge counts its real connections).
    pub fn bridged(
        streams: (TcpStream, TcpStream),
        key: PoolKey,
        accounts: Accounts,
        read_buf: usize,
        limits: &super::ConnectionLimits,
        note: Rc<BridgeNote>,
    ) -> Self {
        let mut up = Upstream::new(streams, key, accounts, read_buf, limits);
        up.stats.upstream_cx_active.dec();
        up.host.cx_active.dec();
        up.bridge = Some(note);
        up
    }

    /// Past its `max_connection_duration` (counted once, when found): it takes no new request.
    pub fn expired(&self) -> bool {
        let expired = self.expires.is_some_and(|t| Instant::now() >= t);
        if expired && self.bridge.is_none() {
            self.stats.upstream_cx_max_duration_reached.inc();
        }
        expired
    }

    /// Idled in the pool past its `idle_timeout` (counted when found).
    fn idled_out(&self, since: u64, now: u64) -> bool {
        let out = now.saturating_sub(since) >= self.idle_secs;
        if out && self.bridge.is_none() {
            self.stats.upstream_cx_idle_timeout.inc();
        }
        out
    }
}

/// The reading half of an upstream connection: its own handle on the socket, the read buffer,
/// and the read armed while it idles in the pool.
pub struct ReadSide {
    /// None while a read is armed.
    reader: Option<TcpStream>,
    pub buf: BytesMut,
    armed: Option<ArmedRead>,
}

impl ReadSide {
    /// The handle and buffer to read with; None while a read is armed (`disarm` first).
    pub fn parts(&mut self) -> Option<(&mut TcpStream, &mut BytesMut)> {
        Some((self.reader.as_mut()?, &mut self.buf))
    }

    /// Submits a read on the idle connection (see `ArmedRead`). False when bytes or an EOF are
    /// already there: the connection must not be pooled.
    pub fn arm(&mut self, want: usize) -> bool {
        if self.armed.is_some() {
            return false;
        }
        let Some(mut reader) = self.reader.take() else { return false };
        let mut buf = std::mem::take(&mut self.buf);
        buf.reserve(want);
        let mut read: ArmedRead = Box::pin(async move {
            let len = buf.len();
            let (res, buf) = reader.read(buf.slice_mut(len..)).await;
            (res, reader, buf.into_inner())
        });
        match read.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Pending => {
                self.armed = Some(read);
                true
            }
            Poll::Ready((_, reader, buf)) => {
                self.reader = Some(reader);
                self.buf = buf;
                false
            }
        }
    }

    /// Arms a read unless one is armed already; false as for `arm`.
    pub fn ensure_armed(&mut self, want: usize) -> bool {
        self.armed.is_some() || self.arm(want)
    }

    /// Whether an armed idle connection is still quiet (nothing arrived, no EOF).
    pub fn quiet(&mut self) -> bool {
        match self.armed.as_mut() {
            Some(read) => read.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_pending(),
            None => self.reader.is_some(),
        }
    }

    /// Waits for the armed read, if any, and puts its reader and buffer back: Some(what the read
    /// returned) — the first bytes of the response to the request just written — or None when no
    /// read was armed.
    pub async fn disarm(&mut self) -> Option<std::io::Result<usize>> {
        let read = self.armed.take()?;
        let (res, reader, buf) = read.await;
        self.reader = Some(reader);
        self.buf = buf;
        Some(res)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if self.bridge.is_some() {
            return;
        }
        let s = &self.stats;
        s.upstream_cx_active.dec();
        self.host.cx_active.dec();
        s.upstream_cx_destroy.inc();
        match (self.peer_closed, self.in_request) {
            (true, false) => s.upstream_cx_destroy_remote.inc(),
            (false, false) => s.upstream_cx_destroy_local.inc(),
            (true, true) => {
                s.upstream_cx_destroy_remote.inc();
                s.upstream_cx_destroy_remote_with_active_rq.inc();
                s.upstream_cx_destroy_with_active_rq.inc();
            }
            (false, true) => {
                s.upstream_cx_destroy_local.inc();
                s.upstream_cx_destroy_local_with_active_rq.inc();
                s.upstream_cx_destroy_with_active_rq.inc();
            }
        }
    }
}

/// A cheap hasher for pool keys (a cluster id and an address, not attacker-chosen strings): the
/// pool is looked up twice per request, and SipHash showed in profiles.
#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type KeyMap<V> = HashMap<PoolKey, V, std::hash::BuildHasherDefault<KeyHasher>>;

struct Idle {
    conn: Upstream,
    /// When it was pooled, in whole seconds of the shard's coarse clock: reading a clock on every
    /// take and put showed in profiles, and idle timeouts are counted in seconds.
    since: u64,
}

pub struct Pool {
    idle: RefCell<KeyMap<Vec<Idle>>>,
    /// Open connections and waiting requests per endpoint (Envoy's per-worker pool).
    endpoints: RefCell<KeyMap<Rc<EndpointConns>>>,
    max_idle_per_endpoint: usize,
}

impl Pool {
    pub fn new(max_idle_per_endpoint: usize) -> Self {
        Pool {
            idle: RefCell::new(KeyMap::default()),
            endpoints: RefCell::new(KeyMap::default()),
            max_idle_per_endpoint,
        }
    }

    /// The most recently pooled idle connection for `key` that has not idled out or reached its
    /// `max_connection_duration`, if any; `now` in seconds of the shard's coarse clock.
    pub fn take(&self, key: PoolKey, now: u64) -> Option<Upstream> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&key)?;
        while let Some(entry) = list.pop() {
            if !entry.conn.idled_out(entry.since, now) && !entry.conn.expired() {
                return Some(entry.conn);
            }
        }
        None
    }

    /// Returns a connection whose last exchange ended cleanly; `now` as for `take`. The first
    /// request waiting for a connection to its endpoint is woken to take it.
    pub fn put(&self, conn: Upstream, now: u64) {
        debug_assert!(conn.read.buf.is_empty());
        let conns = conn.slot.conns.clone();
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(conn.key).or_default();
        let oldest = if list.len() >= self.max_idle_per_endpoint {
            // Drop the oldest: it is the likeliest to be closed by the peer soon.
            Some(list.remove(0))
        } else {
            None
        };
        list.push(Idle { conn, since: now });
        drop(idle);
        drop(oldest);
        conns.released();
    }

    /// This shard's open connections and waiting requests for `key`.
    pub fn endpoint(&self, key: PoolKey) -> Rc<EndpointConns> {
        self.endpoints.borrow_mut().entry(key).or_default().clone()
    }

    /// Closes connections idle too long or to cluster endpoints no longer in use.
    pub fn sweep(&self, now: u64, keep: impl Fn(&PoolKey) -> bool) {
        let mut idle = self.idle.borrow_mut();
        idle.retain(|key, list| {
            if !keep(key) {
                return false;
            }
            list.retain(|e| !e.conn.idled_out(e.since, now) && !e.conn.expired());
            !list.is_empty()
        });
        drop(idle);
        // An endpoint nothing holds any more (no connection, no waiter) is forgotten.
        self.endpoints.borrow_mut().retain(|_, e| Rc::strong_count(e) > 1);
    }

    pub fn idle_count(&self) -> usize {
        self.idle.borrow().values().map(Vec::len).sum()
    }
}
