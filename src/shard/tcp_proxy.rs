//! One connection on a `tcp_proxy` listener, from accept to its access-log line: pick the cluster
//! (`cluster` or `weighted_clusters`) and an endpoint, connect within the cluster's
//! `connect_timeout` (up to `max_connect_attempts` times), then relay bytes both ways
//! (`relay.rs`) under the proxy's `idle_timeout`. Counts `tcp.<stat_prefix>.*`, the listener's
//! and the cluster's connection stats as Envoy's TCP proxy does. A connection that gets no upstream
//! is closed (Envoy has no reply to send on a raw TCP connection). Knows nothing of HTTP.

use super::relay::{self, End, Pipe, Side};
use super::socket::second_handle;
use super::state::{Generation, Shard};
use super::tls::{Hello, Terminate};
use crate::access_log::{Captured, Record, ResponseFlags};
use crate::cluster::breaker::Resource;
use crate::cluster::pool::{Accounts, ConnSlot, PoolKey, Upstream};
use crate::filters::network::{Admission, Decision, NewConnection, RbacVerdict};
use crate::peer::Connection;
use crate::snapshot::{ChainKey, TcpListenerSnap};
use crate::stats::{ListenerStats, TcpStats, WorkerStats};
use bytes::BytesMut;
use monoio::buf::{IoBufMut, IoVecBufMut};
use monoio::io::{AsyncReadRent, Splitable};
use monoio::net::TcpStream;
use monoio::BufResult;
use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Instant, SystemTime};

/// Counts the connection open on the shard and its listener for as long as it lives.
struct ConnGuard<'a> {
    shard: &'a Shard,
    listener: &'a ListenerStats,
    worker: &'a WorkerStats,
}

impl<'a> ConnGuard<'a> {
    fn new(shard: &'a Shard, listener: &'a ListenerStats, worker: &'a WorkerStats) -> Self {
        shard.conn_opened();
        listener.downstream_cx_total.inc();
        listener.downstream_cx_active.inc();
        worker.downstream_cx_total.inc();
        worker.downstream_cx_active.inc();
        ConnGuard { shard, listener, worker }
    }
}

impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        self.shard.conn_closed();
        self.listener.downstream_cx_active.dec();
        self.listener.downstream_cx_destroy.inc();
        self.worker.downstream_cx_active.dec();
    }
}

/// What the access log says about a finished connection.
#[derive(Default)]
struct Outcome {
    flags: ResponseFlags,
    upstream_host: Option<SocketAddr>,
    cluster: Option<usize>,
    received: u64,
    sent: u64,
}

/// A `tcp_proxy` chain's connection (`key`), with the ClientHello the TLS inspector may have read.
pub(super) async fn serve(
    shard: Rc<Shard>,
    key: ChainKey,
    stream: TcpStream,
    peer: SocketAddr,
    hello: Option<Box<Hello>>,
) {
    let generation = shard.generation();
    let Some(i) = generation.snap.tcp_listener_index(key) else { return };
    let listener = &generation.snap.tcp_listeners[i];
    let (stats, listener_stats, worker) = &generation.tcp_stats[i];
    let _guard = ConnGuard::new(&shard, listener_stats, worker);
    stats.downstream_cx_total.inc();
    let (started, start) = (Instant::now(), SystemTime::now());
    // One syscall fewer per connection when nothing logs it or decides on it.
    let logged = !listener.observers.access_logs.is_empty();
    let filtered = !listener.net_filters.is_empty();
    // Network RBAC's destination rules read the local address on the first byte.
    let decided = filtered || listener.net_filters.checks_first_byte();
    let local = if logged || decided { stream.local_addr().unwrap_or(peer) } else { peer };
    let _held = if filtered {
        let c = NewConnection { peer, local };
        match listener.net_filters.on_new_connection(&c, &generation.tcp_net_filter_stats[i]) {
            Admission { decision: Decision::Continue, held } => held,
            Admission { decision: Decision::Close { delay, flags }, held: _held } => {
                // Envoy's tcp_proxy logs the connection an earlier filter closed, with its flags.
                super::conn::refuse(stream, delay).await;
                let outcome = Outcome { flags, ..Outcome::default() };
                log(
                    &shard,
                    &generation,
                    listener,
                    &outcome,
                    (started, start),
                    (peer, local),
                    shard.next_conn_id(),
                );
                return;
            }
        }
    } else {
        Vec::new()
    };
    let (stream, tls_peer) = match &listener.tls {
        None => (stream, None),
        Some(tls) => {
            let limit = tls.handshake_limit.unwrap_or(super::tls::TCP_HANDSHAKE_LIMIT);
            let t = Terminate::new(&shard, tls.clone(), listener.socket.bound, None, limit);
            match Box::pin(t.accept(stream, hello)).await {
                Some(bridged) => (bridged.stream, Some(bridged.peer)),
                None => return,
            }
        }
    };
    let connection_id = shard.next_conn_id();
    let conn = Connection { remote: peer, local, tls: tls_peer.as_deref() };
    let check = || listener.net_filters.on_first_byte(&conn, &generation.tcp_net_filter_stats[i]);
    let gate = listener.net_filters.checks_first_byte().then_some(&check as &dyn Fn() -> RbacVerdict);
    let outcome = proxy(&shard, &generation, listener, stats, stream, gate).await;
    log(&shard, &generation, listener, &outcome, (started, start), (peer, local), connection_id);
}

async fn proxy(
    shard: &Shard,
    generation: &Generation,
    listener: &TcpListenerSnap,
    stats: &TcpStats,
    client: TcpStream,
    gate: Option<&dyn Fn() -> RbacVerdict>,
) -> Outcome {
    // A tcp_proxy's targets are clusters named in its config, never a header.
    let Some(cluster) = listener.clusters.pick(shard.rng.next()) else { return Outcome::default() };
    let mut out = Outcome { cluster: Some(cluster), ..Outcome::default() };
    let (snap, lb) = (&generation.snap.clusters[cluster], &generation.clusters[cluster]);
    let cluster_stats = &generation.cluster_stats[cluster];
    // The cluster's `max_connections`, checked before connecting as Envoy's tcp_proxy does.
    let Some(connection) = snap.breaker.hold(Resource::Connections, &snap.circuit_breakers) else {
        cluster_stats.upstream_cx_overflow.inc();
        out.flags.insert(ResponseFlags::UO);
        return out;
    };
    let mut connected = None;
    for _ in 0..listener.max_connect_attempts {
        let Some(endpoint) = lb.pick(snap, &shard.rng) else {
            cluster_stats.upstream_cx_none_healthy.inc();
            out.flags.insert(ResponseFlags::UH);
            return out;
        };
        let addr = snap.endpoints[endpoint];
        out.upstream_host = Some(addr);
        let host = &generation.host_stats[cluster][endpoint];
        cluster_stats.upstream_cx_total.inc();
        if let Some(board) = &snap.board {
            board.note_traffic();
        }
        cluster_stats.upstream_rq_pending_total.inc();
        host.cx_total.inc();
        match Box::pin(monoio::time::timeout(snap.connect_timeout, TcpStream::connect_addr(addr))).await {
            Ok(Ok(stream)) => match Box::pin(super::tls::upstream(stream, snap, &shard.stats, addr)).await {
                Ok(stream) => {
                    connected = Some((stream, endpoint, addr));
                    break;
                }
                Err(()) => cluster_stats.upstream_cx_destroy_remote.inc(),
            },
            Ok(Err(e)) => {
                log::debug!("tcp_proxy: connect to {addr}: {e}");
                cluster_stats.upstream_cx_destroy_remote.inc();
            }
            Err(_) => {
                cluster_stats.upstream_cx_connect_timeout.inc();
                cluster_stats.upstream_cx_destroy_local.inc();
            }
        }
        cluster_stats.upstream_cx_connect_fail.inc();
        cluster_stats.upstream_rq_pending_failure_eject.inc();
        cluster_stats.upstream_cx_destroy.inc();
    }
    let Some((stream, endpoint, addr)) = connected else {
        cluster_stats.upstream_cx_connect_attempts_exceeded.inc();
        // Envoy flags an exhausted connect as failed and retried, whatever the attempt count.
        out.flags.insert(ResponseFlags::UF);
        out.flags.insert(ResponseFlags::URX);
        return out;
    };
    let _ = client.set_nodelay(true);
    let _ = stream.set_nodelay(true);
    if let Some(k) = &snap.connection.tcp_keepalive {
        if let Err(e) = super::socket::set_keepalive(&stream, k) {
            log::warn!("tcp_proxy to {addr}: cannot set tcp_keepalive: {e}");
        }
    }
    // The client's socket is owned here: split, not duplicated (no dup and close per connection).
    let (mut client_reader, mut client_writer) = client.into_split();
    let Ok(upstream_reader) = second_handle(&stream) else { return out };
    let host = &generation.host_stats[cluster][endpoint];
    // The Upstream value counts the connection active and, when dropped, how it was destroyed.
    let key = PoolKey::of(snap.pool_id, addr);
    connection.keep();
    let slot = ConnSlot::new(snap.breaker.clone(), shard.pool.endpoint(key));
    let accounts = Accounts { stats: cluster_stats.clone(), host: host.clone(), slot };
    let mut up = Upstream::new((stream, upstream_reader), key, accounts, 0, &snap.connection);
    up.in_request = true;
    cluster_stats.upstream_rq_total.inc();
    host.rq_total.inc();
    lb.begin(endpoint);
    let denied = Cell::new(None);
    let mut client_reader = FirstByte { inner: &mut client_reader, check: gate, denied: &denied };
    let relayed = {
        let Some((upstream_reader, _)) = up.read.parts() else { return out };
        let upward = Pipe {
            from: &mut client_reader,
            pending: BytesMut::new(),
            to: &mut up.stream,
            counters: &[&stats.downstream_cx_rx_bytes_total, &cluster_stats.upstream_cx_tx_bytes_total],
        };
        let downward = Pipe {
            from: upstream_reader,
            pending: BytesMut::new(),
            to: &mut client_writer,
            counters: &[&stats.downstream_cx_tx_bytes_total, &cluster_stats.upstream_cx_rx_bytes_total],
        };
        relay::relay(upward, downward, listener.idle_timeout, true).await
    };
    lb.end(endpoint);
    if let Some(read) = denied.get() {
        // Envoy counts the bytes its RBAC read and dropped, logs them as received, and sets no
        // response flag (the reason is the connection's termination details).
        stats.downstream_cx_rx_bytes_total.add(read);
        out.received = read;
        out.sent = relayed.to_downstream;
        return out;
    }
    up.peer_closed = match relayed.end {
        End::Failed(side) => side == Side::Upstream,
        End::IdleTimeout => false,
        End::Closed => relayed.last_close == Some(Side::Upstream),
    };
    if relayed.end == End::IdleTimeout {
        stats.idle_timeout.inc();
    }
    out.received = relayed.to_upstream;
    out.sent = relayed.to_downstream;
    out
}

/// The client's side of a connection whose network RBAC decides on its first bytes: they are
/// read, then decided on before they go upstream (the upstream's own bytes flow meanwhile, as
/// Envoy's tcp_proxy connects and relays them before the client sent anything). A denial is a
/// failed read: the relay ends and both connections close; `denied` keeps what was read.
struct FirstByte<'a, R> {
    inner: R,
    check: Option<&'a dyn Fn() -> RbacVerdict>,
    denied: &'a Cell<Option<u64>>,
}

impl<R> FirstByte<'_, R> {
    /// What the caller gets for a read: the read, or a denial once the check says so.
    fn decide<T>(&mut self, (read, buf): BufResult<usize, T>) -> BufResult<usize, T> {
        let n = match &read {
            Ok(n) if *n > 0 => *n,
            _ => return (read, buf),
        };
        match self.check.take().map(|check| check()) {
            Some(RbacVerdict::Denied { details }) => {
                log::debug!("tcp_proxy: closing: {details}");
                self.denied.set(Some(n as u64));
                let denied = std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "network RBAC denied the connection",
                );
                (Err(denied), buf)
            }
            _ => (read, buf),
        }
    }
}

impl<R: AsyncReadRent> AsyncReadRent for FirstByte<'_, R> {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        let read = self.inner.read(buf).await;
        self.decide(read)
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        let read = self.inner.readv(buf).await;
        self.decide(read)
    }
}

fn log(
    shard: &Shard,
    generation: &Generation,
    listener: &TcpListenerSnap,
    o: &Outcome,
    (started, start): (Instant, SystemTime),
    (peer, local): (SocketAddr, SocketAddr),
    connection_id: u64,
) {
    let logs = &listener.observers.access_logs;
    if logs.is_empty() {
        return;
    }
    let none = Captured::default();
    let record = Record {
        start,
        duration: started.elapsed(),
        request_duration: None,
        response_duration: None,
        response_tx_duration: None,
        method: "",
        path: "",
        authority: "",
        protocol: "",
        status: 0,
        code_details: "",
        flags: o.flags,
        bytes_received: o.received,
        bytes_sent: o.sent,
        upstream_host: o.upstream_host,
        upstream_cluster: o.cluster.and_then(|c| generation.snap.clusters.get(c)).map(|c| c.name.as_str()),
        upstream_local: None,
        upstream_transport_failure: "",
        attempts: 0,
        downstream_remote: peer,
        downstream_local: local,
        route_name: "",
        connection_id,
        request_headers: &none,
        response_headers: &none,
    };
    if let Ok(mut bufs) = shard.log_bufs.try_borrow_mut() {
        logs.log(&record, &mut bufs);
    }
}
