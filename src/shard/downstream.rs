//! The client side of one connection as a request sees it: the socket, its buffers, who the peer is,
//! and the facts of the current request (status sent, whether a response started, its log record).
//! Owned by the connection task (`conn`), lent to one request at a time. No logic beyond resets.

use super::observe::Observed;
use crate::peer::TlsPeer;
use bytes::BytesMut;
use monoio::net::TcpStream;
use std::net::SocketAddr;

pub(super) struct Downstream {
    pub stream: TcpStream,
    /// Bytes read from the client not yet consumed: the current head, body, pipelined requests.
    pub buf: BytesMut,
    /// The request as it goes upstream (head, and the body when it arrived with the head), kept
    /// until the exchange ends so that a retry can send it again.
    pub req_out: Vec<u8>,
    /// Bytes on their way to the client.
    pub resp_out: Vec<u8>,
    /// Once anything of the response reached the client, errors can only close the connection.
    pub response_started: bool,
    /// The current request's body was not read whole: the client may still be sending it, so a
    /// close must linger (`conn::linger`).
    pub body_unread: bool,
    /// The status sent to the client for the current request (0 until one is, and for a request
    /// the client abandoned: Envoy logs those as `0 DC`).
    pub status: u16,
    pub peer_ip: String,
    /// What an edge request appends to `x-forwarded-for` for this client: its address, or this
    /// node's when it is on loopback (Envoy's rule). Decided once per connection.
    pub xff_ip: String,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// A TLS connection's SNI and client certificate (None: plaintext).
    pub tls: Option<Box<TlsPeer>>,
    pub connection_id: u64,
    /// Requests this connection has begun (for `max_requests_per_connection`).
    pub requests: u32,
    /// When `max_connection_duration` ends this connection (None: no limit).
    pub expires: Option<std::time::Instant>,
    /// The current request's facts for its access log and span.
    pub obs: Observed,
    /// Cancels the read an idle connection waits with, once it has waited long (`conn`).
    pub canceller: monoio::io::Canceller,
    /// The requests on this connection are an HTTP/2 client's streams, written as HTTP/1.1 onto
    /// a bridge pair by `h2`: logged and counted as HTTP/2, and the HTTP/1-only connection rules
    /// (per-connection request limits, lingering close) are the h2 connection's business.
    pub http2: bool,
}

impl Downstream {
    /// `local` is the accepted socket's address: `stream` may be a TLS bridge's socket pair end,
    /// which has none.
    pub fn new(stream: TcpStream, peer: SocketAddr, local: SocketAddr, connection_id: u64) -> Self {
        let peer_ip = peer.ip().to_string();
        let xff_ip = match super::socket::node_address() {
            Some(node) if peer.ip().is_loopback() => node.to_string(),
            _ => peer_ip.clone(),
        };
        Downstream {
            stream,
            buf: BytesMut::new(),
            req_out: Vec::new(),
            resp_out: Vec::new(),
            response_started: false,
            body_unread: false,
            status: 0,
            peer_ip,
            xff_ip,
            peer,
            local,
            tls: None,
            connection_id,
            requests: 0,
            expires: None,
            obs: Observed::default(),
            canceller: monoio::io::Canceller::new(),
            http2: false,
        }
    }
}
