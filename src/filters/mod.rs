//! The HTTP filter chain of one connection manager: the `http_filters` of its config, in order,
//! compiled into the snapshot (`ListenerSnap::filters`) with each filter's per-virtual-host and
//! per-route overrides (`typed_per_filter_config`), and run by the shard's request owner once the
//! route is known. The router is always last and is not in the chain: it is the request owner
//! itself (`shard::request` and `shard::upstream`). The connection manager's own header steps
//! (`x-forwarded-*`, the `x-envoy-*` trust boundary, request ids, trace headers) are not filters
//! in Envoy either (its `ConnectionManagerUtility`), and stay fused in `shard::headers`' single pass.
//!
//! Dispatch is static: a `match` over `HttpFilter`, no boxed trait object per request, and an
//! empty chain is a loop over an empty slice. Owns no I/O: a filter's answer is a `Verdict` (a
//! reply, a delay, header lines for the upstream request or the client's response) that the
//! request owner carries out and keeps for the request's life. State shared across shards (a rate
//! limit's token bucket, the count of active faults) lives in the compiled filter, in the snapshot;
//! stats are the shard's (`FilterStats`, found by the index the filter holds).
//!
//! The network filters a listener runs on a new connection, before the connection manager, are
//! `network`'s: a separate chain with its own phase, which reuses `local_ratelimit`'s bucket.

pub mod compressor;
pub mod cors;
pub mod csrf;
pub mod ext_authz;
pub mod ext_authz_grpc;
pub mod fault;
pub mod jwt_authn;
pub mod local_ratelimit;
pub mod network;
pub mod rbac;
mod verdict;

pub use verdict::{
    Check, CheckAnswer, CheckFailure, CheckOutcome, CheckReply, CompressAsk, FilterReply, Scheme, Verdict,
};

use crate::config::{self, JwtPerRoute, PerFilterConfig, RouteConfig};
use crate::http::RequestHead;
use crate::http::ResponseHead;
use crate::peer::Connection;
use crate::route::{BuildError, Route, VirtualHost};
use crate::stats::{
    CompressorStats, CorsStats, CsrfStats, ExtAuthzStats, FaultStats, JwtAuthnStats, LocalRateLimitStats,
    RbacShadowStats, RbacStats,
};
use compressor::Compressor;
use cors::Cors;
use csrf::Csrf;
use ext_authz::ExtAuthz;
use fault::Fault;
use jwt_authn::JwtAuthn;
use local_ratelimit::LocalRateLimit;
use rbac::Rbac;
use std::collections::HashMap;
use std::rc::Rc;
use verdict::Active;

/// A configured HTTP filter (other than the router), compiled.
#[derive(Debug)]
pub enum HttpFilter {
    LocalRateLimit(Scoped<LocalRateLimit>),
    Fault {
        configs: Scoped<Fault>,
        /// Index of `http.<stat_prefix>.fault.*` in the chain's stats.
        stats: usize,
        active: Active,
    },
    Cors(Cors),
    Csrf {
        configs: Scoped<Csrf>,
        /// Index of `http.<stat_prefix>.csrf.*` in the chain's stats.
        stats: usize,
    },
    /// Boxed: one per connection manager that has it, and large.
    JwtAuthn {
        filter: Box<JwtAuthn>,
        /// `PerRouteConfig` overrides; the connection manager level has none.
        per_route: Scoped<Option<JwtPerRoute>>,
    },
    Rbac {
        configs: Scoped<Rbac>,
        /// Index of the filter's `http.<stat_prefix>.rbac.*` blocks in the chain's stats.
        stats: usize,
        /// The connection manager's, for `remote_ip`.
        use_remote_address: bool,
    },
    /// Its per-route settings are all an override can change (`ExtAuthzPerRoute`).
    ExtAuthz {
        filter: ExtAuthz,
        per_route: Scoped<config::ExtAuthzPerRoute>,
    },
    Compressor {
        filter: Compressor,
        /// `CompressorPerRoute.disabled` by virtual host and route (the base: not disabled).
        disabled: Scoped<bool>,
    },
}

/// A filter's config at the connection manager and its overrides, most specific first: a
/// route's, then its virtual host's (indexed by `Route::id` / `VirtualHost::id`; empty when no
/// route or virtual host has one, so a lookup then costs two length checks).
#[derive(Debug)]
pub struct Scoped<T> {
    base: T,
    vhosts: Box<[Option<T>]>,
    routes: Box<[Option<T>]>,
}

impl<T> Scoped<T> {
    /// The config for a request routed to `found` (None: no route, the connection manager's).
    /// The config for a request routed to `route` in `vhost`; a request no route matched gets the
    /// connection manager's (Envoy runs the filters before the router answers 404).
    fn at(&self, found: Option<(&VirtualHost, &Route)>) -> &T {
        let Some((vhost, route)) = found else { return &self.base };
        let route_level = self.routes.get(route.id).and_then(Option::as_ref);
        let vhost_level = || self.vhosts.get(vhost.id).and_then(Option::as_ref);
        route_level.or_else(vhost_level).unwrap_or(&self.base)
    }
}

/// Which stats block a chain's stat index stands for; the shard looks each up by name once per
/// snapshot (`FilterStats`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatName {
    /// `<stat_prefix>.http_local_rate_limit.*`.
    LocalRateLimit(String),
    /// `http.<connection manager stat_prefix>.fault.*`.
    Fault(String),
    /// `http.<connection manager stat_prefix>.cors.*`.
    Cors(String),
    /// `http.<connection manager stat_prefix>.csrf.*`.
    Csrf(String),
    /// `http.<connection manager stat_prefix>.jwt_authn.*`.
    JwtAuthn(String),
    /// `http.<hcm>.rbac[.<rules>].*` and `http.<hcm>.rbac[.<shadow>].shadow_*`.
    Rbac { hcm: String, rules: String, shadow: String },
    /// `http.<connection manager stat_prefix>.ext_authz.*`.
    ExtAuthz(String),
    /// `http.<connection manager stat_prefix>.compressor.<rest>.*`; whether its response
    /// counters are `response.*`.
    Compressor { prefix: String, rest: String, response_prefix: bool },
}

/// One shard's stats block for a chain's stat index.
#[derive(Debug, Clone)]
pub enum FilterStats {
    LocalRateLimit(Rc<LocalRateLimitStats>),
    Fault(Rc<FaultStats>),
    Cors(Rc<CorsStats>),
    Csrf(Rc<CsrfStats>),
    JwtAuthn(Rc<JwtAuthnStats>),
    Rbac(Rc<RbacStats>, Rc<RbacShadowStats>),
    ExtAuthz(Rc<ExtAuthzStats>),
    Compressor(Rc<CompressorStats>),
}

/// The filters of one connection manager, in config order.
#[derive(Debug, Default)]
pub struct FilterChain {
    filters: Box<[HttpFilter]>,
    stat_names: Vec<StatName>,
}

impl FilterChain {
    /// Compiles the connection manager's `http_filters` (validated at load: the router is last,
    /// every other filter is one skiff implements) with their overrides in its route config.
    /// `chain` names the listener's filter chain, under which shared state (a rate limit's bucket)
    /// is carried to the next snapshot.
    pub fn compile(
        hcm: &config::HttpConnectionManager,
        clusters: &HashMap<&str, usize>,
        scheme: Scheme,
        chain: &str,
    ) -> Result<Self, BuildError> {
        let (rc, stat_prefix) = (&hcm.route_config, hcm.stat_prefix.as_str());
        let mut stat_names = Vec::new();
        let mut compiled = Vec::new();
        for (at, f) in hcm.http_filters.iter().enumerate() {
            match f {
                // Terminal: the request owner is the router.
                config::HttpFilter::Router => {}
                config::HttpFilter::LocalRateLimit { name, config } => {
                    // The base config first, then the overrides in route-config order.
                    let mut scope = 0;
                    let mut limit = |c: &config::LocalRateLimit| {
                        stat_names.push(StatName::LocalRateLimit(c.stat_prefix.clone()));
                        let place = format!("{chain}/{at}/{scope}");
                        scope += 1;
                        Ok(LocalRateLimit::compile(c, stat_names.len() - 1, &place))
                    };
                    let base = limit(config)?;
                    let (vhosts, routes) = overrides(rc, name, as_rate_limit, &mut limit)?;
                    compiled.push(HttpFilter::LocalRateLimit(Scoped { base, vhosts, routes }));
                }
                config::HttpFilter::Fault { name, config } => {
                    stat_names.push(StatName::Fault(stat_prefix.to_string()));
                    let stats = stat_names.len() - 1;
                    let mut fault = |c: &config::Fault| Fault::compile(c, clusters);
                    let base = fault(config)?;
                    let (vhosts, routes) = overrides(rc, name, as_fault, &mut fault)?;
                    let configs = Scoped { base, vhosts, routes };
                    compiled.push(HttpFilter::Fault { configs, stats, active: Active::default() });
                }
                config::HttpFilter::Cors { name } => {
                    stat_names.push(StatName::Cors(stat_prefix.to_string()));
                    compiled.push(HttpFilter::Cors(Cors::compile(name, rc, stat_names.len() - 1)?));
                }
                config::HttpFilter::Csrf { name, config } => {
                    stat_names.push(StatName::Csrf(stat_prefix.to_string()));
                    let stats = stat_names.len() - 1;
                    let base = Csrf::compile(config)?;
                    let (vhosts, routes) = overrides(rc, name, as_csrf, &mut Csrf::compile)?;
                    compiled.push(HttpFilter::Csrf { configs: Scoped { base, vhosts, routes }, stats });
                }
                config::HttpFilter::JwtAuthn { name, config } => {
                    stat_names.push(StatName::JwtAuthn(stat_prefix.to_string()));
                    let filter = Box::new(JwtAuthn::compile(config, stat_names.len() - 1, scheme)?);
                    let mut pick = |c: &JwtPerRoute| Ok(Some(c.clone()));
                    let (vhosts, routes) = overrides(rc, name, as_jwt_per_route, &mut pick)?;
                    let per_route = Scoped { base: None, vhosts, routes };
                    compiled.push(HttpFilter::JwtAuthn { filter, per_route });
                }
                config::HttpFilter::Rbac { name, config } => {
                    // Per-route configs count into the filter's own stats, as Envoy's.
                    stat_names.push(StatName::Rbac {
                        hcm: stat_prefix.to_string(),
                        rules: config.rules_stat_prefix.clone(),
                        shadow: config.shadow_rules_stat_prefix.clone(),
                    });
                    let stats = stat_names.len() - 1;
                    let base = Rbac::compile(config)?;
                    let (vhosts, routes) = overrides(rc, name, as_rbac, &mut Rbac::compile)?;
                    let configs = Scoped { base, vhosts, routes };
                    let use_remote_address = hcm.use_remote_address;
                    compiled.push(HttpFilter::Rbac { configs, stats, use_remote_address });
                }
                config::HttpFilter::ExtAuthz { name, config } => {
                    stat_names.push(StatName::ExtAuthz(stat_prefix.to_string()));
                    let filter = ExtAuthz::compile(config, clusters, stat_names.len() - 1)?;
                    let base = config::ExtAuthzPerRoute {
                        disabled: false,
                        disable_request_body_buffering: false,
                        with_request_body: None,
                        context_extensions: Vec::new(),
                    };
                    let mut keep = |c: &config::ExtAuthzPerRoute| Ok(c.clone());
                    let (vhosts, mut routes) = overrides(rc, name, as_ext_authz, &mut keep)?;
                    merge_context_extensions(rc, &vhosts, &mut routes);
                    compiled
                        .push(HttpFilter::ExtAuthz { filter, per_route: Scoped { base, vhosts, routes } });
                }
                config::HttpFilter::Compressor { name, config } => {
                    let c = Compressor::compile(config, stat_names.len());
                    stat_names.push(StatName::Compressor {
                        prefix: stat_prefix.to_string(),
                        rest: c.stat_rest(),
                        response_prefix: c.response_prefix(),
                    });
                    let (vhosts, routes) = overrides(rc, name, as_compressor, &mut |d: &bool| Ok(*d))?;
                    let disabled = Scoped { base: false, vhosts, routes };
                    compiled.push(HttpFilter::Compressor { filter: c, disabled });
                }
            }
        }
        Ok(FilterChain { filters: compiled.into_boxed_slice(), stat_names })
    }

    pub fn len(&self) -> usize {
        self.filters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// The stats blocks the chain's filters count into, by the index they hold.
    pub fn stat_names(&self) -> &[StatName] {
        &self.stat_names
    }

    /// The request-headers phase, after routing and before the router acts: every filter runs in
    /// order until one answers. `found` is the request's virtual host and route; None when none
    /// matched, which Envoy's filters see too (the router answers 404 only after them). `stats` is
    /// the shard's, aligned with `stat_names`; `conn` is the connection the request came on.
    pub fn on_request_headers<'a>(
        &'a self,
        head: &RequestHead<'_>,
        conn: &Connection<'_>,
        found: Option<(&VirtualHost, &Route)>,
        stats: &[FilterStats],
        roll: &mut dyn FnMut() -> u64,
    ) -> Verdict<'a> {
        let mut v = Verdict::default();
        for (index, filter) in self.filters.iter().enumerate() {
            match filter {
                HttpFilter::LocalRateLimit(configs) => {
                    let limit = configs.at(found);
                    if let Some(FilterStats::LocalRateLimit(s)) = stats.get(limit.stats) {
                        limit.on_request(s, roll, &mut v);
                    }
                }
                HttpFilter::Fault { configs, stats: i, active } => {
                    if let Some(FilterStats::Fault(s)) = stats.get(*i) {
                        let targets = match found.map(|(_, r)| &r.action) {
                            Some(crate::route::Action::Forward(f)) => Some(&f.clusters),
                            _ => None,
                        };
                        configs.at(found).on_request(head, targets, active, s, roll, &mut v);
                    }
                }
                HttpFilter::JwtAuthn { filter, per_route } => {
                    if let Some(FilterStats::JwtAuthn(s)) = stats.get(filter.stats) {
                        filter.on_request(head, per_route.at(found).as_ref(), s, &mut v);
                    }
                }
                // Without a route there is no CORS policy (Envoy's filter reads the route's).
                HttpFilter::Cors(cors) => {
                    if let (Some((_, route)), Some(FilterStats::Cors(s))) = (found, stats.get(cors.stats)) {
                        cors.on_request(head, route, s, roll, &mut v);
                    }
                }
                HttpFilter::Csrf { configs, stats: i } => {
                    if let Some(FilterStats::Csrf(s)) = stats.get(*i) {
                        configs.at(found).on_request(head, s, roll, &mut v);
                    }
                }
                HttpFilter::Rbac { configs, stats: i, use_remote_address } => {
                    if let Some(FilterStats::Rbac(s, shadow)) = stats.get(*i) {
                        let http = crate::rbac::HttpFacts { head, use_remote_address: *use_remote_address };
                        let subject = crate::rbac::Subject { conn: *conn, http: Some(http) };
                        configs.at(found).on_request(&subject, s, shadow, &mut v);
                    }
                }
                HttpFilter::ExtAuthz { filter, per_route } => {
                    filter.on_request(head, conn, per_route.at(found), index, &mut v);
                }
                HttpFilter::Compressor { filter, disabled } => {
                    if let Some(FilterStats::Compressor(s)) = stats.get(filter.stats) {
                        // Request bodies are not compressed (request_direction_config is warned).
                        s.request_not_compressed.inc();
                    }
                    let ask = v.compress.get_or_insert_with(|| CompressAsk {
                        accept_encoding: verdict::header(head, "accept-encoding").map(Box::<[u8]>::from),
                        saw_accept: 0,
                        remove_accept_encoding: false,
                        disabled: 0,
                    });
                    let bit = 1u64.checked_shl(filter.stats as u32).unwrap_or(0);
                    if ask.accept_encoding.is_some() && !ask.remove_accept_encoding {
                        ask.saw_accept |= bit;
                    }
                    if filter.removes_accept_encoding() {
                        ask.remove_accept_encoding = true;
                    }
                    // Off for this route: it still takes part in choosing the encoding, as Envoy's.
                    if *disabled.at(found) {
                        ask.disabled |= bit;
                    }
                }
            }
            if v.reply.is_some() {
                break;
            }
        }
        v
    }
}

impl FilterChain {
    /// Completes `check` with what the asking filter takes from the upstream request head
    /// `upstream` (as written for a forwarded request: the connection manager's own headers).
    pub fn complete_check(&self, check: &mut Check, upstream: &[u8]) {
        if let Some(HttpFilter::ExtAuthz { filter, .. }) = self.filters.get(check.filter) {
            filter.complete(check, upstream);
        }
    }

    /// The decision of the filter that asked for `check` on its answer (or its failure).
    /// `routed`: the routed cluster's copy of ext_authz's counters, when there is a cluster.
    pub fn decide(
        &self,
        check: &Check,
        answer: Result<CheckAnswer, CheckFailure>,
        stats: &[FilterStats],
        routed: Option<&ExtAuthzStats>,
    ) -> CheckOutcome {
        match self.filters.get(check.filter) {
            Some(HttpFilter::ExtAuthz { filter, .. }) => match stats.get(filter.stats) {
                Some(FilterStats::ExtAuthz(s)) => filter.decide(s, routed, answer),
                _ => CheckOutcome::default(),
            },
            _ => CheckOutcome::default(),
        }
    }
}

impl FilterChain {
    /// The response-head phase of the chain's compressor filters (only for a request whose
    /// verdict holds a `CompressAsk`): what the head must say, and the encoder of the body when
    /// it is compressed. `end_stream`: the response has no body.
    pub fn on_response_head(
        &self,
        ask: &CompressAsk,
        head: &ResponseHead<'_>,
        end_stream: bool,
        stats: &[FilterStats],
    ) -> (compressor::Decision, Option<(compressor::Encoder, Rc<CompressorStats>)>) {
        let filters: Vec<(usize, &Compressor, &CompressorStats)> = self
            .filters
            .iter()
            .enumerate()
            .filter_map(|(i, f)| match (f, f.compressor_stats(stats)) {
                (HttpFilter::Compressor { filter, .. }, Some(s)) => Some((i, filter, s)),
                _ => None,
            })
            .collect();
        let state = compressor::HeadState::of(head, end_stream);
        let decision = compressor::decide(&filters, ask, &state);
        let encoder = decision.compress.and_then(|(i, _)| match self.filters.get(i) {
            Some(HttpFilter::Compressor { filter: c, .. }) => {
                match (compressor::Encoder::of(c), stats.get(c.stats)) {
                    (Ok(e), Some(FilterStats::Compressor(s))) => Some((e, s.clone())),
                    (Ok(_), _) => None,
                    (Err(e), _) => {
                        log::warn!("compressor: cannot start an encoder: {e}");
                        None
                    }
                }
            }
            _ => None,
        });
        (decision, encoder)
    }
}

impl HttpFilter {
    fn compressor_stats<'s>(&self, stats: &'s [FilterStats]) -> Option<&'s CompressorStats> {
        match (self, self.stat_index().and_then(|i| stats.get(i))) {
            (HttpFilter::Compressor { .. }, Some(FilterStats::Compressor(s))) => Some(s),
            _ => None,
        }
    }

    fn stat_index(&self) -> Option<usize> {
        match self {
            HttpFilter::Compressor { filter, .. } => Some(filter.stats),
            _ => None,
        }
    }
}

/// A filter's overrides by virtual host and by route id, for the filter named `name`.
#[allow(clippy::type_complexity)]
fn overrides<C, T>(
    rc: &RouteConfig,
    name: &str,
    pick: fn(&PerFilterConfig) -> Option<&C>,
    compile: &mut dyn FnMut(&C) -> Result<T, BuildError>,
) -> Result<(Box<[Option<T>]>, Box<[Option<T>]>), BuildError> {
    let mut find = |configs: &[(String, PerFilterConfig)]| -> Result<Option<T>, BuildError> {
        match configs.iter().find(|(n, _)| n == name).and_then(|(_, c)| pick(c)) {
            Some(c) => compile(c).map(Some),
            None => Ok(None),
        }
    };
    let mut vhosts = Vec::with_capacity(rc.virtual_hosts.len());
    let mut routes = Vec::new();
    // Route ids count routes across virtual hosts in config order, as `RouteTable::compile` does.
    for vh in &rc.virtual_hosts {
        vhosts.push(find(&vh.filter_configs)?);
        for r in &vh.routes {
            routes.push(find(&r.filter_configs)?);
        }
    }
    let trim = |list: Vec<Option<T>>| {
        if list.iter().all(Option::is_none) {
            Box::default()
        } else {
            list.into_boxed_slice()
        }
    };
    Ok((trim(vhosts), trim(routes)))
}

/// A route's ext_authz `context_extensions` over its virtual host's, as Envoy merges them (the
/// route's value wins for a key both give); the other settings are the most specific config's.
fn merge_context_extensions(
    rc: &RouteConfig,
    vhosts: &[Option<config::ExtAuthzPerRoute>],
    routes: &mut [Option<config::ExtAuthzPerRoute>],
) {
    let mut id = 0;
    for (vi, vh) in rc.virtual_hosts.iter().enumerate() {
        let outer = vhosts.get(vi).and_then(Option::as_ref).map_or(&[][..], |v| &v.context_extensions[..]);
        for _ in &vh.routes {
            if let Some(Some(route)) = routes.get_mut(id) {
                for (key, value) in outer {
                    if !route.context_extensions.iter().any(|(k, _)| k == key) {
                        route.context_extensions.push((key.clone(), value.clone()));
                    }
                }
                route.context_extensions.sort();
            }
            id += 1;
        }
    }
}

fn as_rate_limit(c: &PerFilterConfig) -> Option<&config::LocalRateLimit> {
    match c {
        PerFilterConfig::LocalRateLimit(c) => Some(c),
        _ => None,
    }
}

fn as_fault(c: &PerFilterConfig) -> Option<&config::Fault> {
    match c {
        PerFilterConfig::Fault(c) => Some(c),
        _ => None,
    }
}

fn as_ext_authz(c: &PerFilterConfig) -> Option<&config::ExtAuthzPerRoute> {
    match c {
        PerFilterConfig::ExtAuthzPerRoute(c) => Some(c),
        _ => None,
    }
}

fn as_compressor(c: &PerFilterConfig) -> Option<&bool> {
    match c {
        PerFilterConfig::CompressorPerRoute { disabled } => Some(disabled),
        _ => None,
    }
}

fn as_csrf(c: &PerFilterConfig) -> Option<&config::Csrf> {
    match c {
        PerFilterConfig::Csrf(c) => Some(c),
        _ => None,
    }
}

fn as_jwt_per_route(c: &PerFilterConfig) -> Option<&JwtPerRoute> {
    match c {
        PerFilterConfig::JwtPerRoute(c) => Some(c),
        _ => None,
    }
}

fn as_rbac(c: &PerFilterConfig) -> Option<&config::Rbac> {
    match c {
        PerFilterConfig::Rbac(c) => Some(c),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_router_is_not_in_the_chain_and_an_empty_chain_lets_everything_through() {
        let yaml = r#"
static_resources:
  listeners:
  - name: l
    address: { socket_address: { address: 127.0.0.1, port_value: 1 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: x
          route_config: { virtual_hosts: [] }
          http_filters: [{ name: envoy.filters.http.router }]
"#;
        let loaded = config::load_str(yaml, "test").map_err(|e| e.to_string());
        let hcm = &loaded.as_ref().map(|l| &l.bootstrap.listeners[0].hcm);
        let chain = match hcm {
            Ok(hcm) => FilterChain::compile(hcm, &HashMap::new(), Scheme::default(), "l").unwrap_or_default(),
            Err(e) => panic!("{e}"),
        };
        assert!(chain.is_empty());
        assert!(chain.stat_names().is_empty());
    }
}
