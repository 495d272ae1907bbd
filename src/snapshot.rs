//! The immutable model a shard serves from: listeners with compiled routes and settings, clusters
//! with resolved endpoints. Built by the control thread, validated before it is broadcast, then
//! shared read-only (`Arc`); a shard swaps it between requests. Its clusters are `Arc` pieces a
//! snapshot shares with the one before it when they did not change.

use crate::cluster::{ClusterSnap, Resolved};
use crate::config::chain_match::{select, ChainMatch, Seen};
use crate::config::{self, Bootstrap};
use crate::config::{Inspector, DEFAULT_CHAIN};
use crate::filters::network::NetFilterChain;
use crate::filters::{FilterChain, Scheme};
use crate::listener::BoundListener;
use crate::route::{RouteTable, Targets};
use crate::telemetry::Observers;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub listeners: Vec<ListenerSnap>,
    /// Listeners running `tcp_proxy` (served by `shard::tcp_proxy`, not the HTTP connection).
    /// Both lists hold one entry per filter chain; a socket's entries share it.
    pub tcp_listeners: Vec<TcpListenerSnap>,
    /// The sockets whose connections must be matched to a filter chain first (`shard::chains`):
    /// those with several chains, one chain that does not take every connection, or the TLS
    /// inspector. Empty for the usual listener, whose connections go straight to its one chain.
    pub selectors: Vec<ChainSelector>,
    /// Shared with the previous snapshot for each cluster that did not change.
    pub clusters: Vec<Arc<ClusterSnap>>,
    pub bootstrap: Arc<Bootstrap>,
}

#[derive(Debug)]
pub struct ListenerSnap {
    pub socket: Arc<BoundListener>,
    /// Its filter chain's `ChainSlot::index`.
    pub chain: u32,
    /// The network filters a connection passes before the connection manager takes it.
    pub net_filters: NetFilterChain,
    pub hcm: HcmSettings,
    /// The connection manager's HTTP filters, router excluded.
    pub filters: FilterChain,
    pub routes: RouteTable,
    pub observers: Observers,
    /// A TLS filter chain: its connections are TLS (`shard::tls`); None: plaintext.
    pub tls: Option<Arc<crate::config::tls::ListenerTls>>,
}

/// What serves a filter chain: the connection manager or tcp_proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serves {
    Http,
    Tcp,
}

/// A listener socket's filter chains, to pick one per connection by `chain_match::select`.
#[derive(Debug)]
pub struct ChainSelector {
    pub socket: Arc<BoundListener>,
    /// The listener's TLS inspector: the ClientHello is read (peeked) before the pick.
    pub inspector: Option<Inspector>,
    /// `filter_chains` in order: their matches and what serves each (by `ChainSlot::index`).
    pub matches: Vec<ChainMatch>,
    pub chains: Vec<(u32, Serves)>,
    /// `default_filter_chain`.
    pub default: Option<(u32, Serves)>,
}

impl ChainSelector {
    /// The chain for a connection; None: none matches and there is no default (Envoy closes it).
    pub fn pick(&self, seen: &Seen) -> Option<(u32, Serves)> {
        match select(&self.matches, seen) {
            Some(i) => self.chains.get(i).copied(),
            None => self.default,
        }
    }
}

/// A `tcp_proxy` listener: where its connections go and what they are allowed.
#[derive(Debug)]
pub struct TcpListenerSnap {
    pub socket: Arc<BoundListener>,
    /// Its filter chain's `ChainSlot::index`.
    pub chain: u32,
    /// The network filters a connection passes before it is relayed.
    pub net_filters: NetFilterChain,
    pub stat_prefix: String,
    pub clusters: Targets,
    /// `NEVER` when off.
    pub idle_timeout: Duration,
    pub max_connect_attempts: u32,
    /// Access logs only: a TCP connection has no span.
    pub observers: Observers,
    /// TLS filter chain: connections are terminated (`shard::tls`) before they are relayed.
    pub tls: Option<Arc<crate::config::tls::ListenerTls>>,
}

/// The http_connection_manager settings a connection needs, in the units it uses.
#[derive(Debug, Clone)]
pub struct HcmSettings {
    pub stat_prefix: String,
    pub max_head_len: usize,
    pub request_headers_timeout: Duration,
    pub idle_timeout: Duration,
    /// `common_http_protocol_options.max_requests_per_connection` (None = no limit).
    pub max_requests_per_connection: Option<u32>,
    /// `common_http_protocol_options.max_connection_duration` (None = no limit).
    pub max_connection_duration: Option<Duration>,
    /// `stream_idle_timeout`, `request_timeout`, `max_stream_duration`.
    pub stream_limits: config::StreamLimits,
    /// `delayed_close_timeout` (None = close at once).
    pub delayed_close_timeout: Option<Duration>,
    /// `max_headers_count` (431 beyond it).
    pub max_headers_count: usize,
    pub headers_with_underscores: config::UnderscoresAction,
    pub generate_request_id: bool,
    pub server_name: String,
    /// `use_remote_address`: the peer is the client (edge proxy), see `shard::headers`.
    pub use_remote_address: bool,
    /// `forward_client_cert_details` / `set_current_client_cert_details` (`shard::headers`).
    pub client_cert: config::ClientCert,
    /// `http_protocol_options.accept_http_10`: without it an HTTP/1.0 request gets 426.
    pub accept_http_10: bool,
    /// `http_protocol_options.default_host_for_http_10`.
    pub default_host_for_http_10: Option<String>,
    /// `upgrade_configs`, lower-cased types (a route's own override them).
    pub upgrades: Vec<config::UpgradeConfig>,
    /// `codec_type`: whether a connection may or must speak HTTP/2 (`shard::h2`).
    pub codec: config::HttpCodec,
    /// `http2_protocol_options`.
    pub http2: config::Http2Options,
}

impl HcmSettings {
    fn new(hcm: &config::HttpConnectionManager) -> Self {
        HcmSettings {
            stat_prefix: hcm.stat_prefix.clone(),
            max_head_len: hcm.max_request_headers_kb as usize * 1024,
            request_headers_timeout: hcm.request_headers_timeout,
            idle_timeout: hcm.idle_timeout,
            max_requests_per_connection: hcm.max_requests_per_connection,
            max_connection_duration: hcm.max_connection_duration,
            stream_limits: hcm.stream_limits,
            delayed_close_timeout: hcm.delayed_close_timeout,
            max_headers_count: hcm.max_headers_count,
            headers_with_underscores: hcm.headers_with_underscores,
            generate_request_id: hcm.generate_request_id,
            server_name: hcm.server_name.clone(),
            use_remote_address: hcm.use_remote_address,
            client_cert: hcm.client_cert,
            accept_http_10: hcm.accept_http_10,
            default_host_for_http_10: hcm.default_host_for_http_10.clone(),
            upgrades: hcm.upgrades.clone(),
            codec: hcm.codec,
            http2: hcm.http2,
        }
    }
}

impl Snapshot {
    /// `endpoints[i]`: the resolved hosts and the breakers of `bootstrap.clusters[i]`;
    /// `sockets`: the bound listener for each of `bootstrap.listeners`, by name; `observers[i]`:
    /// the access logs and tracing of `bootstrap.listeners[i]`, then those of each of
    /// `bootstrap.tcp_listeners` (`Telemetry::prepare`). Pure: it
    /// opens no file and starts no thread, so a rejected build leaves nothing behind.
    pub fn build(
        generation: u64,
        bootstrap: Arc<Bootstrap>,
        endpoints: &[Resolved],
        sockets: &HashMap<String, Arc<BoundListener>>,
        observers: &[Observers],
    ) -> Result<Snapshot, String> {
        let clusters = bootstrap
            .clusters
            .iter()
            .enumerate()
            .map(|(i, c)| Arc::new(ClusterSnap::new(c, endpoints.get(i).cloned().unwrap_or_default())))
            .collect();
        Snapshot::assemble(generation, bootstrap, clusters, sockets, observers)
    }

    /// `build` with the clusters already built (`clusters[i]` is `bootstrap.clusters[i]`'s): the
    /// control thread hands over the previous snapshot's `Arc` for each cluster whose spec and
    /// hosts did not change, so that one endpoint change builds one cluster and a shard sees
    /// by pointer which clusters it can carry over whole.
    pub fn assemble(
        generation: u64,
        bootstrap: Arc<Bootstrap>,
        clusters: Vec<Arc<ClusterSnap>>,
        sockets: &HashMap<String, Arc<BoundListener>>,
        observers: &[Observers],
    ) -> Result<Snapshot, String> {
        let index: HashMap<&str, usize> =
            bootstrap.clusters.iter().enumerate().map(|(i, c)| (c.name.as_str(), i)).collect();
        let mut listeners = Vec::with_capacity(bootstrap.listeners.len());
        for (i, l) in bootstrap.listeners.iter().enumerate() {
            let Some(socket) = sockets.get(&l.name) else { continue };
            listeners.push(ListenerSnap {
                socket: socket.clone(),
                chain: l.chain.index,
                net_filters: NetFilterChain::compile(&l.net_filters, &l.name).map_err(|e| e.to_string())?,
                hcm: HcmSettings::new(&l.hcm),
                filters: FilterChain::compile(
                    &l.hcm,
                    &index,
                    Scheme { tls: l.tls.is_some(), edge: l.hcm.use_remote_address },
                    &format!("{}#{}", l.name, l.chain.index),
                )
                .map_err(|e| e.to_string())?,
                routes: RouteTable::compile(&l.hcm.route_config, &index, socket.bound.port())
                    .map_err(|e| e.to_string())?,
                observers: observers.get(i).cloned().unwrap_or_default(),
                tls: l.tls.clone().map(Arc::new),
            });
        }
        let mut tcp_listeners = Vec::with_capacity(bootstrap.tcp_listeners.len());
        for (i, l) in bootstrap.tcp_listeners.iter().enumerate() {
            let Some(socket) = sockets.get(&l.name) else { continue };
            tcp_listeners.push(TcpListenerSnap {
                socket: socket.clone(),
                chain: l.chain.index,
                net_filters: NetFilterChain::compile(&l.net_filters, &l.name).map_err(|e| e.to_string())?,
                stat_prefix: l.proxy.stat_prefix.clone(),
                clusters: Targets::compile(&l.proxy.cluster, &index).map_err(|e| e.to_string())?,
                idle_timeout: l.proxy.idle_timeout,
                max_connect_attempts: l.proxy.max_connect_attempts,
                observers: observers.get(bootstrap.listeners.len() + i).cloned().unwrap_or_default(),
                tls: l.tls.clone().map(Arc::new),
            });
        }
        let selectors = selectors(&bootstrap, sockets);
        Ok(Snapshot { generation, listeners, tcp_listeners, selectors, clusters, bootstrap })
    }

    /// The entry of a listener socket's filter chain.
    pub fn listener_index(&self, key: ChainKey) -> Option<usize> {
        self.listeners.iter().position(|l| l.socket.id == key.socket && l.chain == key.chain)
    }

    pub fn tcp_listener_index(&self, key: ChainKey) -> Option<usize> {
        self.tcp_listeners.iter().position(|l| l.socket.id == key.socket && l.chain == key.chain)
    }

    /// How a new connection on socket `id` is served: through its selector, or straight by
    /// its one chain.
    pub fn route_connection(&self, id: u64) -> Option<Accepted<'_>> {
        if let Some(s) = self.selectors.iter().find(|s| s.socket.id == id) {
            return Some(Accepted::Select(s));
        }
        if let Some(l) = self.listeners.iter().find(|l| l.socket.id == id) {
            return Some(Accepted::Chain(l.chain, Serves::Http));
        }
        self.tcp_listeners.iter().find(|l| l.socket.id == id).map(|l| Accepted::Chain(l.chain, Serves::Tcp))
    }
}

/// One filter chain of a listener socket, as a connection keeps it across snapshots (a reload that
/// keeps the socket and the chain's position keeps serving it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainKey {
    /// `BoundListener::id`.
    pub socket: u64,
    /// `ChainSlot::index`.
    pub chain: u32,
}

/// Where an accepted connection goes first.
#[derive(Debug, Clone, Copy)]
pub enum Accepted<'s> {
    Select(&'s ChainSelector),
    Chain(u32, Serves),
}

/// A selector for each listener that needs one, from the model's chain entries (grouped by
/// listener name, filter chains in config order).
fn selectors(b: &Bootstrap, sockets: &HashMap<String, Arc<BoundListener>>) -> Vec<ChainSelector> {
    let http = b.listeners.iter().map(|l| (&l.name, &l.chain, Serves::Http));
    let all: Vec<_> = http.chain(b.tcp_listeners.iter().map(|l| (&l.name, &l.chain, Serves::Tcp))).collect();
    let mut out: Vec<ChainSelector> = Vec::new();
    for (name, _, _) in &all {
        let Some(socket) = sockets.get(*name) else { continue };
        if out.iter().any(|s| Arc::ptr_eq(&s.socket, socket)) {
            continue;
        }
        let mut mine: Vec<_> = all.iter().filter(|(n, _, _)| n == name).collect();
        mine.sort_by_key(|(_, c, _)| c.index);
        // One chain taking every connection, and no inspector to run first.
        let single = matches!(mine.as_slice(), [(_, c, _)] if c.matcher.is_empty() && c.inspector.is_none());
        if single {
            continue;
        }
        let (defaults, chains): (Vec<_>, Vec<_>) =
            mine.into_iter().partition(|(_, c, _)| c.index == DEFAULT_CHAIN);
        out.push(ChainSelector {
            socket: socket.clone(),
            inspector: chains.first().or(defaults.first()).and_then(|(_, c, _)| c.inspector),
            matches: chains.iter().map(|(_, c, _)| c.matcher.clone()).collect(),
            chains: chains.iter().map(|(_, c, s)| (c.index, *s)).collect(),
            default: defaults.first().map(|(_, c, s)| (c.index, *s)),
        });
    }
    out
}
