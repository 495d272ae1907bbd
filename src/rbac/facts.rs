//! What RBAC's engines are asked and answer, shared by the rules engine (`rbac`) and the matcher
//! engine (`rbac::matcher`): the `Subject` (a connection, and for HTTP the request head), the
//! `Decision`, and the client address as the connection manager decided it. Owns no rules and no
//! I/O.

use crate::http::RequestHead;
use crate::peer::Connection;
use std::net::IpAddr;

/// What the rules are asked about: a connection, and for an HTTP request its head.
#[derive(Clone, Copy)]
pub struct Subject<'a> {
    pub conn: Connection<'a>,
    pub http: Option<HttpFacts<'a>>,
}

#[derive(Clone, Copy)]
pub struct HttpFacts<'a> {
    pub head: &'a RequestHead<'a>,
    /// The connection manager's `use_remote_address`: whether the socket's peer, rather than the
    /// last `x-forwarded-for` address, is the client (`remote_ip`).
    pub use_remote_address: bool,
}

/// An engine's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'e> {
    pub allowed: bool,
    /// The policy that matched (Envoy's effective policy id), if one did.
    pub policy: Option<&'e str>,
}

/// The client as the connection manager decided it: the last `x-forwarded-for` address unless
/// `use_remote_address` (or none is there, or it is no address), else the socket's peer.
pub(crate) fn remote_ip(s: &Subject<'_>) -> IpAddr {
    let peer = s.conn.remote.ip();
    let Some(http) = s.http.filter(|h| !h.use_remote_address) else { return peer };
    let last = http.head.headers.iter().rev().find(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"));
    last.and_then(|h| std::str::from_utf8(h.value).ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or(peer)
}
