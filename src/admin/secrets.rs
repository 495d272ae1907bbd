//! The SDS stats Envoy keeps: `sds.<name>.*` per secret, and per TLS context that takes one
//! `listener.<address>.server_ssl_socket_factory.*` or `cluster.<name>.client_ssl_socket_factory.*`
//! (`ssl_context_update_by_sds`: how often its material changed). Read from the secrets the
//! running snapshot's contexts hold; counts only, never material.

use crate::config::secrets::Secret;
use crate::config::tls::ContextCerts;
use crate::snapshot::Snapshot;
use crate::stats::{listener_stat_name, Scope, StatsDump, Value};
use std::sync::Arc;

/// Pushes every SDS stat of `snapshot` into `out`.
pub fn push(out: &mut StatsDump, snapshot: &Snapshot) {
    for secret in snapshot.bootstrap.sds_secrets() {
        subscription(out, &secret);
    }
    // A listener's chains share its socket factory's stats: each listener once, with the
    // secrets of all its chains.
    let http = snapshot.listeners.iter().map(|l| (l.socket.bound, &l.tls));
    let tcp = snapshot.tcp_listeners.iter().map(|l| (l.socket.bound, &l.tls));
    let mut listeners: Vec<(std::net::SocketAddr, Vec<&ContextCerts>)> = Vec::new();
    for (bound, tls) in http.chain(tcp) {
        let Some(tls) = tls else { continue };
        match listeners.iter_mut().find(|(b, _)| *b == bound) {
            Some((_, certs)) => certs.push(&tls.context.certs),
            None => listeners.push((bound, vec![&tls.context.certs])),
        }
    }
    for (bound, certs) in listeners {
        factory(out, Scope::Listener(listener_stat_name(bound)), SERVER, &certs);
    }
    for c in &snapshot.bootstrap.clusters {
        if let Some(tls) = &c.tls {
            factory(out, Scope::Cluster(c.name.clone()), CLIENT, &[&tls.certs]);
        }
    }
}

const SERVER: [&str; 3] = [
    "server_ssl_socket_factory.ssl_context_update_by_sds",
    "server_ssl_socket_factory.downstream_context_secrets_not_ready",
    "server_ssl_socket_factory.upstream_context_secrets_not_ready",
];
const CLIENT: [&str; 3] = [
    "client_ssl_socket_factory.ssl_context_update_by_sds",
    "client_ssl_socket_factory.downstream_context_secrets_not_ready",
    "client_ssl_socket_factory.upstream_context_secrets_not_ready",
];

fn subscription(out: &mut StatsDump, secret: &Arc<Secret>) {
    let c = secret.counts();
    let scope = Scope::Sds(secret.name.clone());
    let counters = [
        ("init_fetch_timeout", 0),
        ("key_rotation_failed", c.key_rotation_failed),
        ("update_attempt", c.update_attempt),
        ("update_failure", c.update_failure),
        ("update_rejected", c.update_rejected),
        ("update_success", c.update_success),
    ];
    for (name, v) in counters {
        out.push(scope.clone(), name, Value::Counter(v));
    }
    out.push(scope.clone(), "update_time", Value::Gauge(c.update_time));
    let version =
        if c.version_text.is_empty() { 0 } else { xxhash_rust::xxh64::xxh64(c.version_text.as_bytes(), 0) };
    out.push(scope.clone(), "version", Value::GaugeU64(version));
    out.push(scope.clone(), "version_text", Value::Text(c.version_text));
    // Envoy records no file update's duration either.
    out.push(scope, "update_duration", Value::Histogram(Box::new(crate::stats::new_histogram())));
}

/// A socket factory's SDS stats, for one that takes a secret (Envoy makes them for those):
/// `names` are its update count and its two not-ready counts (always 0: a context's secrets
/// are loaded before it serves).
fn factory(out: &mut StatsDump, scope: Scope, names: [&'static str; 3], certs: &[&ContextCerts]) {
    let mut secrets: Vec<&Arc<Secret>> = Vec::new();
    for s in certs.iter().flat_map(|c| c.secrets()) {
        if !secrets.iter().any(|o| Arc::ptr_eq(o, s)) {
            secrets.push(s);
        }
    }
    if secrets.is_empty() {
        return;
    }
    let updates = secrets.iter().map(|s| s.counts().context_updates).sum();
    out.push(scope.clone(), names[0], Value::Counter(updates));
    out.push(scope.clone(), names[1], Value::Counter(0));
    out.push(scope, names[2], Value::Counter(0));
}
