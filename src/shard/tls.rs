//! TLS on a shard's connections: the handshake (the filter chain's context on a listener, the
//! cluster's context upstream), its stats, and then a *bridge*: a task that moves bytes between the TLS
//! socket and one end of a local socket pair, encrypting and decrypting with rustls, while the
//! HTTP path gets the other end as its ordinary `TcpStream`. So a TLS connection is served by
//! exactly the code a plaintext one is (ring reads, direct sends, a second handle for reading
//! while writing, cancelable reads), and the plaintext path pays nothing for TLS existing: the
//! bridge is TLS's own, simpler and slower path (two more socket copies per byte, one task).
//! Knows nothing of HTTP; owns no config (the contexts are built at load by `config`).

use super::socket::{self, would_block, Fd};
use super::state::Shard;
use crate::cluster::ClusterSnap;
use crate::config::tls::{ListenerTls, UpstreamTls};
use crate::config::tls_verify::PinMismatch;
use crate::peer::TlsPeer;
use crate::stats::{listener_stat_name, HttpSslStats, Scope, ShardStats, SslStats};
use monoio::net::TcpStream;
use rustls::{CertificateError, Connection, Error as TlsError};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Bytes the bridge moves per read, each way.
const CHUNK: usize = 16 * 1024;

/// What a TLS listener's connection needs before its handshake, looked up with the generation
/// current at accept.
pub(super) struct Terminate {
    tls: Arc<ListenerTls>,
    ssl: Rc<SslStats>,
    /// The connection manager's `downstream_cx_ssl_*` (None on a `tcp_proxy` listener).
    http: Option<Rc<HttpSslStats>>,
    timeout: Duration,
}

/// A `tcp_proxy` listener bounds the handshake with this (Envoy leaves it unbounded unless
/// `transport_socket_connect_timeout` is set; skiff never waits on a silent peer forever).
pub(super) const TCP_HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// A terminated TLS connection: the HTTP path's end of the bridge, and who the peer is.
pub(super) struct Bridged {
    pub stream: TcpStream,
    pub active: Active,
    /// Boxed: the connection task holds it for the connection's life.
    pub peer: Box<TlsPeer>,
    /// The client and the listener's `alpn_protocols` agreed on `h2`.
    pub alpn_h2: bool,
}

/// Keeps `downstream_cx_ssl_active` counted while the connection lives.
pub(super) struct Active(Option<Rc<HttpSslStats>>);

impl Drop for Active {
    fn drop(&mut self) {
        if let Some(http) = &self.0 {
            http.downstream_cx_ssl_active.dec();
        }
    }
}

impl Terminate {
    /// For a listener bound on `bound` whose connection manager (if any) has `stat_prefix`;
    /// `timeout` bounds the handshake.
    pub(super) fn new(
        shard: &Shard,
        tls: Arc<ListenerTls>,
        bound: SocketAddr,
        stat_prefix: Option<&str>,
        timeout: Duration,
    ) -> Self {
        Terminate {
            tls,
            ssl: shard.stats.ssl(Scope::Listener(listener_stat_name(bound))),
            http: stat_prefix.map(|p| shard.stats.http_ssl(p)),
            timeout,
        }
    }

    /// Reads the ClientHello (or goes on from the one the TLS inspector read: `hello`), completes
    /// the handshake within the chain's limit, and bridges. None: the connection is to close (not
    /// TLS, a failed handshake), counted as Envoy counts it.
    pub(super) async fn accept(self, tcp: TcpStream, hello: Option<Box<Hello>>) -> Option<Bridged> {
        let mut active = None;
        // Envoy knows the SNI only through a tls_inspector listener filter, and a listener with
        // one always hands its ClientHello over (`shard::chains`).
        let inspected = hello.is_some();
        let handshake = async {
            let mut fd = Fd(tcp.as_raw_fd());
            let accepted = match hello {
                Some(hello) => {
                    take_peeked(&tcp, hello.len).await?;
                    hello.accepted
                }
                None => read_client_hello(&tcp, &mut fd).await?,
            };
            // The connection manager exists from here on, as Envoy creates it with the chain.
            if let Some(http) = &self.http {
                http.downstream_cx_ssl_total.inc();
                http.downstream_cx_ssl_active.inc();
            }
            active = Some(Active(self.http.clone()));
            let conn =
                accepted.into_connection(self.tls.context.handshake_config()).map_err(|(e, mut alert)| {
                    let _ = alert.write(&mut fd);
                    Failure::Tls(e)
                })?;
            let mut conn = Connection::Server(conn);
            handshake(&tcp, &mut conn).await?;
            Ok::<_, Failure>((conn, self.tls.context.local_uri_sans.clone()))
        };
        let (conn, local) = match monoio::time::timeout(self.timeout, handshake).await {
            Ok(Ok(done)) => done,
            Ok(Err(f)) => {
                f.count(&self.ssl);
                return None;
            }
            Err(_) => {
                self.ssl.connection_error.inc();
                return None;
            }
        };
        self.ssl.handshake.inc();
        count_session(&self.ssl, &conn);
        let mut peer = None;
        let alpn_h2 = conn.alpn_protocol() == Some(b"h2");
        if let Connection::Server(s) = &conn {
            if s.peer_certificates().is_none_or(|c| c.is_empty()) {
                self.ssl.no_certificate.inc();
            }
            // Read once here, while rustls holds it; the bridge keeps the session to itself.
            let sni = s.server_name().filter(|_| inspected);
            peer = Some(Box::new(TlsPeer::new(sni, s.peer_certificates(), local)));
        }
        let app = bridge(tcp, conn).ok()?;
        Some(Bridged { stream: app, active: active?, peer: peer.unwrap_or_default(), alpn_h2 })
    }
}

/// A ClientHello the TLS inspector read by peeking (`shard::chains`): the handshake goes on from
/// it once its bytes are taken off the socket. Boxed where it travels, so that the connection
/// tasks that carry an `Option` of it (every plaintext one) stay small.
pub(super) struct Hello {
    pub(super) accepted: rustls::server::Accepted,
    /// How many bytes of the socket it was read from.
    pub(super) len: usize,
}

async fn read_client_hello(tcp: &TcpStream, fd: &mut Fd) -> Result<rustls::server::Accepted, Failure> {
    let mut acceptor = rustls::server::Acceptor::default();
    loop {
        match acceptor.read_tls(fd) {
            Ok(0) => return Err(Failure::Closed),
            Ok(_) => {}
            Err(e) if would_block(&e) => {
                tcp.readable(false).await.map_err(|_| Failure::Closed)?;
                continue;
            }
            Err(_) => return Err(Failure::Closed),
        }
        match acceptor.accept() {
            Ok(Some(a)) => return Ok(a),
            Ok(None) => {}
            Err((e, mut alert)) => {
                let _ = alert.write(fd);
                return Err(Failure::Tls(e));
            }
        }
    }
}

/// Reads and drops the `len` bytes the inspector peeked (they are in the socket already).
async fn take_peeked(tcp: &TcpStream, mut len: usize) -> Result<(), Failure> {
    let mut scratch = [0u8; 2048];
    let mut fd = Fd(tcp.as_raw_fd());
    while len > 0 {
        let want = len.min(scratch.len());
        match fd.read(&mut scratch[..want]) {
            Ok(0) => return Err(Failure::Closed),
            Ok(n) => len -= n,
            Err(e) if would_block(&e) => tcp.readable(false).await.map_err(|_| Failure::Closed)?,
            Err(_) => return Err(Failure::Closed),
        }
    }
    Ok(())
}

/// A new upstream connection to a cluster with a TLS context: handshake (within the cluster's
/// `connect_timeout`, as Envoy counts the handshake in the connect), then the bridge. A cluster
/// without one gets its socket back untouched. Err: the connection failed (Envoy's `UF`).
pub(super) async fn upstream(
    tcp: TcpStream,
    snap: &ClusterSnap,
    stats: &ShardStats,
    addr: SocketAddr,
) -> Result<TcpStream, ()> {
    let Some(tls) = &snap.tls else { return Ok(tcp) };
    let ssl = stats.ssl(Scope::Cluster(snap.name.clone()));
    upstream_with(tcp, tls, &ssl, snap.connect_timeout, addr).await
}

/// A cluster's cluster-scoped `ssl.*` stats, for `upstream_with`.
pub(super) fn cluster_ssl(stats: &ShardStats, cluster: &str) -> Rc<SslStats> {
    stats.ssl(Scope::Cluster(cluster.to_owned()))
}

/// `upstream` for a caller that holds the context and stats itself (the HTTP/2 pool, which
/// opens connections outside any request).
pub(super) async fn upstream_with(
    tcp: TcpStream,
    tls: &UpstreamTls,
    ssl: &SslStats,
    timeout: Duration,
    addr: SocketAddr,
) -> Result<TcpStream, ()> {
    upstream_negotiated(tcp, tls, ssl, timeout, addr).await.map(|(stream, _)| stream)
}

/// `upstream_with`, also telling whether the server chose `h2` by ALPN.
pub(super) async fn upstream_negotiated(
    tcp: TcpStream,
    tls: &UpstreamTls,
    ssl: &SslStats,
    timeout: Duration,
    addr: SocketAddr,
) -> Result<(TcpStream, bool), ()> {
    match monoio::time::timeout(timeout, client_handshake(&tcp, tls, addr)).await {
        Ok(Ok(conn)) => {
            ssl.handshake.inc();
            count_session(ssl, &conn);
            let h2 = conn.alpn_protocol() == Some(b"h2");
            bridge(tcp, conn).map(|stream| (stream, h2)).map_err(|e| log::debug!("tls to {addr}: {e}"))
        }
        Ok(Err(f)) => {
            log::debug!("tls to {addr}: {f:?}");
            f.count(ssl);
            Err(())
        }
        Err(_) => {
            ssl.connection_error.inc();
            Err(())
        }
    }
}

async fn client_handshake(
    tcp: &TcpStream,
    tls: &UpstreamTls,
    addr: SocketAddr,
) -> Result<Connection, Failure> {
    // Without `sni` Envoy sends none: the config has SNI off, and the name is only a placeholder
    // (the verifier checks SANs, never this name).
    let name = tls.sni.clone().unwrap_or_else(|| rustls_pki_types::ServerName::IpAddress(addr.ip().into()));
    let conn = rustls::ClientConnection::new(tls.handshake_config(), name).map_err(Failure::Tls)?;
    let mut conn = Connection::Client(conn);
    handshake(tcp, &mut conn).await?;
    Ok(conn)
}

#[derive(Debug)]
enum Failure {
    /// The peer closed or the socket failed mid-handshake.
    Closed,
    Tls(TlsError),
}

impl Failure {
    fn count(&self, ssl: &SslStats) {
        match self {
            Failure::Tls(TlsError::NoCertificatesPresented) => ssl.fail_verify_no_cert.inc(),
            Failure::Tls(TlsError::InvalidCertificate(CertificateError::ApplicationVerificationFailure)) => {
                ssl.fail_verify_san.inc()
            }
            Failure::Tls(TlsError::InvalidCertificate(CertificateError::Other(e)))
                if e.0.is::<PinMismatch>() =>
            {
                ssl.fail_verify_cert_hash.inc()
            }
            Failure::Tls(TlsError::InvalidCertificate(_)) => ssl.fail_verify_error.inc(),
            _ => ssl.connection_error.inc(),
        }
    }
}

fn count_session(ssl: &SslStats, conn: &Connection) {
    match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => ssl.tls13.inc(),
        Some(rustls::ProtocolVersion::TLSv1_2) => ssl.tls12.inc(),
        _ => {}
    }
    if conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
        ssl.session_reused.inc();
    }
}

/// Drives a handshake to its end over the non-blocking socket.
async fn handshake(tcp: &TcpStream, conn: &mut Connection) -> Result<(), Failure> {
    let mut fd = Fd(tcp.as_raw_fd());
    loop {
        while conn.wants_write() {
            match conn.write_tls(&mut fd) {
                Ok(_) => {}
                Err(e) if would_block(&e) => tcp.writable(false).await.map_err(|_| Failure::Closed)?,
                Err(_) => return Err(Failure::Closed),
            }
        }
        if !conn.is_handshaking() {
            return Ok(());
        }
        match conn.read_tls(&mut fd) {
            Ok(0) => return Err(Failure::Closed),
            Ok(_) => {
                if let Err(e) = conn.process_new_packets() {
                    // The alert rustls queued tells the peer why; best effort.
                    let _ = conn.write_tls(&mut fd);
                    return Err(Failure::Tls(e));
                }
            }
            Err(e) if would_block(&e) => tcp.readable(false).await.map_err(|_| Failure::Closed)?,
            Err(_) => return Err(Failure::Closed),
        }
    }
}

/// A connected local socket pair: one end for the bridge, the other (returned) for the HTTP
/// path, which treats it as the connection itself.
fn bridge(tcp: TcpStream, conn: Connection) -> std::io::Result<TcpStream> {
    let (ours, theirs) = socket::pair()?;
    monoio::spawn(pump(tcp, ours, conn));
    Ok(theirs)
}

/// Moves bytes both ways until either side is done: TLS records from the peer are decrypted
/// into the pair, plaintext from the pair is encrypted to the peer. Each side reads only while
/// the other side has taken what came before (backpressure). The pair end closing sends
/// `close_notify` and ends the connection; the peer closing shuts the pair's write side, so the
/// HTTP path sees the end of the stream as it would on a plaintext socket.
async fn pump(tcp: TcpStream, app: TcpStream, mut conn: Connection) {
    let (mut net, mut local) = (Fd(tcp.as_raw_fd()), Fd(app.as_raw_fd()));
    let mut buf = vec![0u8; CHUNK];
    let mut to_app: Vec<u8> = Vec::new();
    let mut sent = 0;
    // `tcp_eof`: the socket said end of stream; `net_eof`: and rustls has handed over all it had.
    let (mut tcp_eof, mut net_eof, mut app_eof, mut app_shut) = (false, false, false, false);
    loop {
        let mut progress = false;
        while conn.wants_write() {
            match conn.write_tls(&mut net) {
                Ok(_) => progress = true,
                Err(e) if would_block(&e) => break,
                Err(_) => return,
            }
        }
        if app_eof && !conn.wants_write() {
            return;
        }
        if sent < to_app.len() {
            match local.write(&to_app[sent..]) {
                Ok(n) => {
                    sent += n;
                    progress = true;
                }
                Err(e) if would_block(&e) => {}
                Err(_) => return,
            }
            if sent == to_app.len() {
                to_app.clear();
                sent = 0;
            }
        }
        if net_eof && to_app.is_empty() && !app_shut {
            // SAFETY: shuts down the write side of a descriptor `app` owns.
            unsafe { libc::shutdown(local.0, libc::SHUT_WR) };
            app_shut = true;
        }
        if !app_eof && !conn.wants_write() {
            match local.read(&mut buf) {
                Ok(0) => {
                    app_eof = true;
                    conn.send_close_notify();
                    progress = true;
                }
                Ok(n) => {
                    if conn.writer().write_all(&buf[..n]).is_err() {
                        return;
                    }
                    progress = true;
                }
                Err(e) if would_block(&e) => {}
                Err(_) => return,
            }
        }
        if !net_eof && to_app.is_empty() {
            // Plaintext rustls holds already: what the last read decrypted, or what came in the
            // handshake's last flight (a TLS 1.3 client sends its request with its Finished).
            loop {
                match conn.reader().read(&mut buf) {
                    Ok(0) => {
                        // close_notify: the peer's clean end of stream.
                        net_eof = true;
                        break;
                    }
                    Ok(n) => {
                        to_app.extend_from_slice(&buf[..n]);
                        progress = true;
                    }
                    Err(e) if would_block(&e) => {
                        net_eof = tcp_eof;
                        break;
                    }
                    // Closed without close_notify: the end of stream all the same.
                    Err(_) => {
                        net_eof = true;
                        break;
                    }
                }
            }
            if net_eof {
                // The end of stream is news too: the loop passes it on to the pair.
                progress = true;
            } else if !progress {
                // Plaintext is delivered first; the network is read once it is taken.
                match conn.read_tls(&mut net) {
                    Ok(0) => {
                        tcp_eof = true;
                        progress = true;
                    }
                    Ok(_) => {
                        progress = true;
                        if conn.process_new_packets().is_err() {
                            let _ = conn.write_tls(&mut net);
                            return;
                        }
                    }
                    Err(e) if would_block(&e) => {}
                    Err(_) => return,
                }
            }
        }
        if progress {
            continue;
        }
        if net_eof && app_shut && app_eof {
            return;
        }
        let waited = monoio::select! {
            r = tcp.readable(false), if !net_eof && to_app.is_empty() => r,
            r = tcp.writable(false), if conn.wants_write() => r,
            r = app.readable(false), if !app_eof && !conn.wants_write() => r,
            r = app.writable(false), if sent < to_app.len() => r,
            else => return,
        };
        if waited.is_err() {
            return;
        }
    }
}
