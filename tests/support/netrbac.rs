//! The network RBAC tests' pieces (tests/netrbac.rs, tests/parity_netrbac.rs): the filter, a
//! listener, a greeting upstream and a client that checks the proxy stays silent until it speaks.
//! Include with `#[path = "support/netrbac.rs"] mod netrbac;` next to `mod support;`.
#![allow(dead_code)]

use super::support::indent;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The TLS inspector as a listener's `listener_filters` entry (YAML at column 4): without it,
/// neither Envoy nor skiff knows a connection's SNI.
pub const TLS_INSPECTOR: &str = "    - name: envoy.filters.listener.tls_inspector\n      typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector }\n";

pub const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

/// A network RBAC filter (YAML at column 0) counting into `<prefix>.rbac.*`, with `rules` (the
/// lines of its `rules:` mapping, at column 0) and `extra` fields (at column 0).
pub fn rbac(prefix: &str, rules: &str, extra: &str) -> String {
    format!(
        "- name: envoy.filters.network.rbac\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC\n    stat_prefix: {prefix}\n{}    rules:\n{}",
        indent(extra, 4),
        indent(rules, 6)
    )
}

/// An ALLOW policy `name` for any permission from the principals `principals` (a flow list).
pub fn allow(name: &str, permissions: &str, principals: &str) -> String {
    format!(
        "action: ALLOW\npolicies:\n  {name}: {{ permissions: {permissions}, principals: {principals} }}\n"
    )
}

/// A tcp_proxy to cluster `backend` (YAML at column 0), logging `format` to `log` if given.
pub fn tcp_proxy(log: Option<(&std::path::Path, &str)>) -> String {
    let log = log.map(|(path, format)| indent(&super::support::file_access_log_yaml(path, format), 4));
    format!(
        "- name: envoy.filters.network.tcp_proxy\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\n    stat_prefix: tcp_in\n    cluster: backend\n{}",
        log.unwrap_or_default()
    )
}

/// A listener (YAML at column 0) on `port` (0: ephemeral) with one chain of `filters`.
pub fn listener(name: &str, port: u16, filters: &str) -> String {
    format!(
        "- name: {name}\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}\n  filter_chains:\n    - filters:\n{}",
        indent(filters, 8)
    )
}

/// `listener` with `socket` (a `transport_socket` block) on its chain and the TLS inspector.
pub fn tls_listener(name: &str, port: u16, filters: &str, socket: &str) -> String {
    super::support::tls::with_socket(&listener(name, port, filters), socket).replacen(
        "  filter_chains:\n",
        &format!("  listener_filters:\n{TLS_INSPECTOR}  filter_chains:\n"),
        1,
    )
}

/// A bootstrap with an admin on `admin` (0: ephemeral), `listeners` and the cluster `backend`.
pub fn bootstrap(admin: u16, listeners: &[String], upstream: SocketAddr) -> String {
    format!(
        "admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}\n{}",
        super::support::bootstrap_yaml(
            listeners,
            &[super::support::static_cluster_yaml("backend", "ROUND_ROBIN", &[(upstream, 1)])]
        )
    )
}

/// An upstream that greets each connection with `hello;`, then echoes.
pub fn greeting_upstream() -> super::support::RawUpstream {
    super::support::RawUpstream::start(|mut s, _| {
        let _ = s.write_all(b"hello;");
        let mut buf = [0u8; 64];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    })
}

/// Connects, checks that nothing closes before the client speaks (a greeting may come), sends
/// `payload`, and returns all that came back until the proxy closed, or until `until` was seen.
pub fn exchange(addr: SocketAddr, payload: &[u8], until: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(400))).expect("timeout");
    let mut buf = [0u8; 1024];
    let mut got = Vec::new();
    if let Ok(n) = s.read(&mut buf) {
        assert!(n > 0, "closed before the first byte");
        got.extend_from_slice(&buf[..n]);
    }
    s.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
    // A denied connection may be closed before all of it lands: a broken pipe is an outcome too.
    let _ = s.write_all(payload);
    while until.is_empty() || !String::from_utf8_lossy(&got).contains(until) {
        match s.read(&mut buf) {
            Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}
