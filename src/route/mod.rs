//! Route tables compiled from a `RouteConfig`: virtual host by Host, then the first matching route.
//! Built off the request path (in the control thread, inside a snapshot); matching allocates
//! nothing. Knows cluster *indices* into the snapshot, never cluster state.

use crate::config::{
    self, ClusterSpecifier, HeaderMatchRule, HeaderValueOption, PathMatch, RouteAction, RouteConfig,
    StripHostPort,
};
use crate::http::header_is;

pub mod hash;
use std::collections::HashMap;
use std::time::Duration;

/// Header edits at one level (route config, virtual host or route).
#[derive(Debug, Default)]
pub struct HeaderEdits {
    pub add: Vec<HeaderValueOption>,
    pub remove: Vec<String>,
}

impl HeaderEdits {
    fn new(add: &[HeaderValueOption], remove: &[String]) -> Self {
        HeaderEdits { add: add.to_vec(), remove: remove.iter().map(|n| n.to_ascii_lowercase()).collect() }
    }

    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }

    /// Whether an incoming header `name` is dropped at this level: removed, or replaced by an add
    /// that does not append.
    pub fn drops(&self, name: &str) -> bool {
        self.remove.iter().any(|r| header_is(name, r))
            || self.add.iter().any(|a| !a.append && header_is(name, &a.name))
    }
}

#[derive(Debug)]
pub struct RouteTable {
    vhosts: Vec<VirtualHost>,
    exact: Vec<(String, usize)>,
    /// `*.example.com` stored as `.example.com`, longest first.
    suffixes: Vec<(String, usize)>,
    /// `api.*` stored as `api.`, longest first.
    prefixes: Vec<(String, usize)>,
    wildcard: Option<usize>,
    strip_host_port: StripHostPort,
    pub request_edits: HeaderEdits,
    pub response_edits: HeaderEdits,
}

#[derive(Debug)]
pub struct VirtualHost {
    pub name: String,
    /// Its position in the route config: what per-virtual-host filter configs are found by.
    pub id: usize,
    pub routes: Vec<Route>,
    pub request_edits: HeaderEdits,
    pub response_edits: HeaderEdits,
    /// Where `x-envoy-attempt-count` goes (upstream, client).
    pub attempt_count: config::AttemptCount,
}

#[derive(Debug)]
pub struct Route {
    /// Its position among all routes of the route config, counted across virtual hosts in config
    /// order: what per-route filter configs are found by (`filters::FilterChain` counts the same).
    pub id: usize,
    path: PathMatcher,
    headers: Vec<HeaderMatcher>,
    query: Vec<config::QueryParameterMatcher>,
    /// `match.grpc`: only a gRPC request matches.
    grpc: bool,
    pub action: Action,
    pub request_edits: HeaderEdits,
    pub response_edits: HeaderEdits,
}

#[derive(Debug)]
enum PathMatcher {
    Prefix {
        prefix: String,
        case_sensitive: bool,
    },
    Exact {
        path: String,
        case_sensitive: bool,
    },
    Regex(regex::Regex),
    /// `connect_matcher`: a CONNECT, whose path is empty (`http::CONNECT_PATH`).
    Connect,
}

/// A compiled header matcher (routes', and the fault filter's `headers`).
#[derive(Debug)]
pub struct HeaderMatcher {
    name: String,
    rule: HeaderRule,
    invert: bool,
}

#[derive(Debug)]
enum HeaderRule {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    Regex(regex::Regex),
    Present(bool),
}

#[derive(Debug)]
pub enum Action {
    Forward(Forward),
    Direct { status: u16, body: Option<String> },
    Redirect(config::Redirect),
}

#[derive(Debug)]
pub struct Forward {
    pub clusters: Targets,
    pub timeout: Option<Duration>,
    /// The matched prefix (or exact path) this rewrite replaces; not set for regex routes.
    pub prefix_rewrite: Option<(String, String)>,
    pub host_rewrite: Option<String>,
    /// Boxed: most routes have none, and it would size every route by ~100 bytes.
    pub retry: Option<Box<Retry>>,
    /// `idle_timeout`: replaces the connection manager's `stream_idle_timeout` (Some(None): off).
    pub idle_timeout: Option<Option<Duration>>,
    /// `max_stream_duration`.
    pub max_stream_duration: crate::config::RouteStreamDuration,
    /// `max_grpc_timeout` / `grpc_timeout_offset`: a gRPC request's route timeout. Boxed: a
    /// deprecated field few routes have, and `Action` stays small.
    pub grpc_timeout: Option<Box<config::GrpcRouteTimeout>>,
    /// `request_mirror_policies`, with their clusters resolved.
    pub mirrors: Box<[Mirror]>,
    /// `cluster_not_found_response_code`, for `Targets::Header`.
    pub cluster_not_found: u16,
    /// The route's `upgrade_configs` (they override the connection manager's per type).
    pub upgrades: Vec<config::UpgradeConfig>,
    /// The route answers a CONNECT itself and tunnels it (`connect_config`).
    pub terminate_connect: bool,
    /// `hash_policy`: the request's key for RING_HASH and MAGLEV clusters (`hash::request_hash`).
    pub hash_policy: Vec<config::HashPolicy>,
}

#[derive(Debug)]
pub enum Targets {
    Single(usize),
    /// `cluster_header`: the request names its cluster (see `shard::request`).
    Header(Box<str>),
    /// The entries (cumulative weights), and the total.
    Weighted(Vec<WeightedTarget>, u32),
}

/// One `weighted_clusters` entry: its cluster, its weight added to those before it, and the
/// header edits that apply when it is picked.
#[derive(Debug)]
pub struct WeightedTarget {
    pub cluster: usize,
    pub upto: u32,
    pub request_edits: HeaderEdits,
    pub response_edits: HeaderEdits,
}

/// The edits of a route whose cluster is not a weighted entry's.
pub static NO_EDITS: HeaderEdits = HeaderEdits { add: Vec::new(), remove: Vec::new() };

/// A route's cluster that does not exist (a route configuration with `validate_clusters`
/// false): a request routed to it gets 503 `NC`, as Envoy's.
pub const MISSING_CLUSTER: usize = usize::MAX;

impl Targets {
    /// The clusters of a tcp_proxy, as indices into the snapshot's clusters.
    pub fn compile(spec: &ClusterSpecifier, clusters: &HashMap<&str, usize>) -> Result<Targets, BuildError> {
        Self::resolve(spec, clusters, false)
    }

    /// The clusters of a route or tcp_proxy; with `missing_ok` (a route: the config module
    /// checked the names it had to) an unknown one is `MISSING_CLUSTER`.
    fn resolve(
        spec: &ClusterSpecifier,
        clusters: &HashMap<&str, usize>,
        missing_ok: bool,
    ) -> Result<Targets, BuildError> {
        let find = |name: &str| match clusters.get(name) {
            Some(&i) => Ok(i),
            None if missing_ok => Ok(MISSING_CLUSTER),
            None => Err(BuildError::UnknownCluster(name.to_string())),
        };
        Ok(match spec {
            ClusterSpecifier::Single(name) => Targets::Single(find(name)?),
            ClusterSpecifier::Header(name) => Targets::Header(name.as_str().into()),
            ClusterSpecifier::Weighted(list) => {
                let mut upto = 0u32;
                let mut out = Vec::with_capacity(list.len());
                for c in list {
                    upto = upto.saturating_add(c.weight);
                    out.push(WeightedTarget {
                        cluster: find(&c.name)?,
                        upto,
                        request_edits: HeaderEdits::new(
                            &c.request_headers_to_add,
                            &c.request_headers_to_remove,
                        ),
                        response_edits: HeaderEdits::new(
                            &c.response_headers_to_add,
                            &c.response_headers_to_remove,
                        ),
                    });
                }
                Targets::Weighted(out, upto)
            }
        })
    }

    /// Picks a cluster; `roll` is a uniformly random number. None for `Header`, which only a
    /// request can resolve.
    pub fn pick(&self, roll: u64) -> Option<usize> {
        match self {
            Targets::Single(c) => Some(*c),
            Targets::Header(_) => None,
            Targets::Weighted(..) => self.pick_weighted(roll).map(|t| t.cluster),
        }
    }

    /// The weighted entry `roll` lands on; None unless these are `Weighted`.
    pub fn pick_weighted(&self, roll: u64) -> Option<&WeightedTarget> {
        let Targets::Weighted(list, total) = self else { return None };
        let point = (roll % u64::from((*total).max(1))) as u32;
        list.iter().find(|t| point < t.upto).or(list.last())
    }
}

#[derive(Debug)]
pub struct Retry {
    pub on_connect_failure: bool,
    pub on_5xx: bool,
    /// 502, 503, 504 only.
    pub on_gateway_error: bool,
    pub on_reset: bool,
    /// `refused-stream`: an HTTP/2 host's REFUSED_STREAM (never seen over HTTP/1.1).
    pub on_refused_stream: bool,
    pub num_retries: u32,
    pub per_try_timeout: Option<Duration>,
    pub per_try_idle_timeout: Option<Duration>,
    /// `retriable-4xx` (409 only, as Envoy) and `retriable-status-codes` with its list.
    pub statuses: StatusSet,
    /// `retriable-headers` with `retriable_headers`: a response any of these match is retried.
    pub headers: Box<[HeaderMatcher]>,
    /// The gRPC codes retried (`cancelled`, `deadline-exceeded`, `internal`,
    /// `resource-exhausted`, `unavailable`), one bit per code; 0 when none.
    pub grpc_codes: u32,
    pub back_off: config::BackOff,
    /// `previous_hosts` host predicate, and how many picks may be tried to satisfy it.
    pub avoid_previous_hosts: bool,
    pub host_selection_attempts: u32,
}

impl Retry {
    pub fn retries_status(&self, status: u16) -> bool {
        (self.on_5xx && status >= 500)
            || (self.on_gateway_error && matches!(status, 502..=504))
            || self.statuses.contains(status)
    }

    /// Whether a response (status and head) is one the policy retries.
    pub fn retries_response(&self, status: u16, headers: &[httparse::Header<'_>]) -> bool {
        self.retries_status(status)
            || self.headers.iter().any(|m| m.matches(headers))
            || (self.grpc_codes != 0 && self.retries_grpc(headers))
    }

    /// Whether the response head's `grpc-status` (a trailers-only answer's; Envoy's retry state
    /// never reads trailers) is one of the retried gRPC codes.
    fn retries_grpc(&self, headers: &[httparse::Header<'_>]) -> bool {
        let Some(value) =
            headers.iter().find(|h| h.name.eq_ignore_ascii_case("grpc-status")).map(|h| h.value)
        else {
            return false;
        };
        let code = std::str::from_utf8(value).ok().and_then(|v| v.trim().parse::<u32>().ok());
        code.is_some_and(|c| c < 32 && self.grpc_codes & (1 << c) != 0)
    }

    /// The jittered exponential wait before retry `n` (1-based), as Envoy's: uniform below
    /// min(base × (2^n − 1), max); `roll` is a uniformly random number.
    pub fn back_off(&self, n: u32, roll: u64) -> Duration {
        let base = self.back_off.base.as_millis() as u64;
        let ceiling =
            base.saturating_mul((1u64 << n.min(32)) - 1).min(self.back_off.max.as_millis() as u64).max(1);
        Duration::from_millis(roll % ceiling)
    }
}

/// Where a mirror's copies go: a cluster (an index into the snapshot's clusters), or the cluster
/// a request header names (looked up per request; none found, no copy, as Envoy).
#[derive(Debug, Clone)]
pub enum MirrorTarget {
    Cluster(usize),
    Header(Box<str>),
}

/// A request mirror: where it goes, the sampled share of
/// requests in parts per million, and whether the Host gets `-shadow`.
#[derive(Debug, Clone)]
pub struct Mirror {
    pub target: MirrorTarget,
    pub per_million: u32,
    pub shadow_suffix: bool,
}

/// A set of HTTP status codes (100-599) in a few words, so that `Retry` stays `Copy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusSet([u64; 8]);

impl StatusSet {
    pub fn insert(&mut self, status: u16) {
        if let Some(i) = status.checked_sub(100).filter(|i| *i < 500) {
            self.0[usize::from(i / 64)] |= 1 << (i % 64);
        }
    }

    pub fn contains(&self, status: u16) -> bool {
        status
            .checked_sub(100)
            .filter(|i| *i < 500)
            .is_some_and(|i| self.0[usize::from(i / 64)] & (1 << (i % 64)) != 0)
    }
}

#[derive(Debug)]
pub enum BuildError {
    UnknownCluster(String),
    BadRegex(String),
    BadJwks(String),
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::UnknownCluster(c) => write!(f, "route refers to unknown cluster {c:?}"),
            BuildError::BadRegex(e) => write!(f, "bad regex: {e}"),
            BuildError::BadJwks(e) => write!(f, "bad JWKS: {e}"),
        }
    }
}

impl RouteTable {
    /// `listener_port`: the port the listener is bound on (what `strip_matching_host_port` strips;
    /// for `port_value: 0` only the bound socket knows it).
    pub fn compile(
        rc: &RouteConfig,
        clusters: &HashMap<&str, usize>,
        listener_port: u16,
    ) -> Result<Self, BuildError> {
        let mut table = RouteTable {
            vhosts: Vec::with_capacity(rc.virtual_hosts.len()),
            exact: Vec::new(),
            suffixes: Vec::new(),
            prefixes: Vec::new(),
            wildcard: None,
            strip_host_port: match rc.strip_host_port {
                StripHostPort::Matching(_) => StripHostPort::Matching(listener_port),
                other => other,
            },
            request_edits: HeaderEdits::new(&rc.request_headers_to_add, &rc.request_headers_to_remove),
            response_edits: HeaderEdits::new(&rc.response_headers_to_add, &rc.response_headers_to_remove),
        };
        let mut route_id = 0;
        for (index, vh) in rc.virtual_hosts.iter().enumerate() {
            for domain in &vh.domains {
                let d = domain.to_ascii_lowercase();
                if d == "*" {
                    table.wildcard.get_or_insert(index);
                } else if let Some(rest) = d.strip_prefix('*') {
                    table.suffixes.push((rest.to_string(), index));
                } else if let Some(rest) = d.strip_suffix('*') {
                    table.prefixes.push((rest.to_string(), index));
                } else {
                    table.exact.push((d, index));
                }
            }
            let routes = vh
                .routes
                .iter()
                .map(|r| {
                    route_id += 1;
                    compile_route(route_id - 1, r, clusters)
                })
                .collect::<Result<_, _>>()?;
            table.vhosts.push(VirtualHost {
                name: vh.name.clone(),
                id: index,
                routes,
                request_edits: HeaderEdits::new(&vh.request_headers_to_add, &vh.request_headers_to_remove),
                response_edits: HeaderEdits::new(&vh.response_headers_to_add, &vh.response_headers_to_remove),
                attempt_count: vh.attempt_count,
            });
        }
        table.suffixes.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        table.prefixes.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        Ok(table)
    }

    /// The Host as Envoy matches it and sends it upstream: with `strip_any_host_port` any port
    /// comes off, with `strip_matching_host_port` only the listener's; otherwise it stays as sent.
    pub fn host_for_matching<'h>(&self, host: &'h str) -> &'h str {
        let strip = match self.strip_host_port {
            StripHostPort::No => false,
            StripHostPort::Any => true,
            StripHostPort::Matching(port) => port_of(host) == Some(port),
        };
        if strip {
            strip_port(host).unwrap_or(host)
        } else {
            host
        }
    }

    /// Envoy's order: exact domain, longest `*.suffix`, longest `prefix*`, then `*`, all against
    /// `host_for_matching`: Envoy 1.40 does not match `example.com:8080` to a domain
    /// `example.com` unless told to strip the port.
    pub fn virtual_host(&self, host: &str) -> Option<&VirtualHost> {
        let host = self.host_for_matching(host);
        self.exact_index(host)
            .or_else(|| self.suffix_index(host))
            .or_else(|| self.prefix_index(host))
            .or(self.wildcard)
            .map(|i| &self.vhosts[i])
    }

    fn exact_index(&self, host: &str) -> Option<usize> {
        self.exact.iter().find(|(d, _)| d.eq_ignore_ascii_case(host)).map(|(_, i)| *i)
    }

    fn suffix_index(&self, host: &str) -> Option<usize> {
        let lower_ends = |s: &str| {
            host.len() > s.len() && host.as_bytes()[host.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
        };
        self.suffixes.iter().find(|(s, _)| lower_ends(s)).map(|(_, i)| *i)
    }

    fn prefix_index(&self, host: &str) -> Option<usize> {
        let lower_starts =
            |p: &str| host.len() > p.len() && host.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes());
        self.prefixes.iter().find(|(p, _)| lower_starts(p)).map(|(_, i)| *i)
    }
}

/// `host:8080` → `host`; `[::1]:80` → `[::1]`; a bare IPv6 literal has no port to strip.
fn strip_port(host: &str) -> Option<&str> {
    let (name, port) = host.rsplit_once(':')?;
    let numeric = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    (numeric && (!name.contains(':') || name.ends_with(']'))).then_some(name)
}

fn port_of(host: &str) -> Option<u16> {
    let name = strip_port(host)?;
    host.get(name.len() + 1..)?.parse().ok()
}

impl VirtualHost {
    /// The first route whose path, header and query matchers all hold.
    pub fn route(&self, path: &str, headers: &[httparse::Header<'_>]) -> Option<&Route> {
        let (path_only, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        self.routes.iter().find(|r| r.matches(path_only, query, headers))
    }
}

impl Route {
    fn matches(&self, path: &str, query: Option<&str>, headers: &[httparse::Header<'_>]) -> bool {
        path_matches(&self.path, path)
            && self.headers.iter().all(|m| m.matches(headers))
            && self.query.iter().all(|q| query_matches(q, query))
            && (!self.grpc || is_grpc(headers))
    }

    /// The `location` a redirect route answers for `host` and `path`. Envoy's `prefix_rewrite`
    /// replaces the part of the path the route matched: the prefix, or the whole path.
    pub fn redirect_location(&self, r: &config::Redirect, host: &str, path: &str) -> String {
        let scheme = if r.https_redirect { "https" } else { "http" };
        let host = r.host_redirect.as_deref().unwrap_or(host);
        let (path_only, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let new_path = match (&r.path_redirect, &r.prefix_rewrite, &self.path) {
            (Some(p), _, _) => p.clone(),
            (None, Some(rw), PathMatcher::Prefix { prefix, .. }) => {
                format!("{rw}{}", path_only.get(prefix.len()..).unwrap_or(""))
            }
            (None, Some(rw), _) => rw.clone(),
            (None, None, _) => path_only.to_string(),
        };
        match query {
            Some(q) if !r.strip_query && !new_path.contains('?') => {
                format!("{scheme}://{host}{new_path}?{q}")
            }
            _ => format!("{scheme}://{host}{new_path}"),
        }
    }

    /// For a prefix or exact-path route: the path after `prefix_rewrite`.
    pub fn rewrite_path(&self, path: &str, out: &mut String) -> bool {
        let Action::Forward(Forward { prefix_rewrite: Some((prefix, replacement)), .. }) = &self.action
        else {
            return false;
        };
        out.clear();
        out.push_str(replacement);
        out.push_str(path.get(prefix.len()..).unwrap_or(""));
        true
    }
}

impl HeaderMatcher {
    pub fn compile(h: &config::HeaderMatcher) -> Result<Self, BuildError> {
        let rule = match &h.rule {
            HeaderMatchRule::Exact(s) => HeaderRule::Exact(s.clone()),
            HeaderMatchRule::Prefix(s) => HeaderRule::Prefix(s.clone()),
            HeaderMatchRule::Suffix(s) => HeaderRule::Suffix(s.clone()),
            HeaderMatchRule::Contains(s) => HeaderRule::Contains(s.clone()),
            HeaderMatchRule::SafeRegex(s) => HeaderRule::Regex(anchored(s)?),
            HeaderMatchRule::Present(p) => HeaderRule::Present(*p),
        };
        Ok(HeaderMatcher { name: h.name.clone(), rule, invert: h.invert_match })
    }

    pub fn matches(&self, headers: &[httparse::Header<'_>]) -> bool {
        let value = headers.iter().find(|h| h.name.eq_ignore_ascii_case(&self.name)).map(|h| h.value);
        self.matches_value(value)
    }

    /// The (lower-cased) header name it reads.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the rule holds for the header's value (None: the request has no such header), so
    /// a caller can match values that are not header lines (RBAC's `:method`, `:path`).
    pub fn matches_value(&self, value: Option<&[u8]>) -> bool {
        self.rule_holds(value) != self.invert
    }

    /// Whether the rule holds for any of a repeated header's lines (`invert_match` applied to the
    /// whole), as Envoy 1.40's RBAC matches a header sent more than once.
    pub fn matches_any<'v>(&self, mut values: impl Iterator<Item = &'v [u8]>) -> bool {
        let hit = match values.next() {
            None => self.rule_holds(None),
            Some(first) => self.rule_holds(Some(first)) || values.any(|v| self.rule_holds(Some(v))),
        };
        hit != self.invert
    }

    fn rule_holds(&self, value: Option<&[u8]>) -> bool {
        match (&self.rule, value) {
            (HeaderRule::Present(want), v) => v.is_some() == *want,
            (_, None) => false,
            (HeaderRule::Exact(s), Some(v)) => v == s.as_bytes(),
            (HeaderRule::Prefix(s), Some(v)) => v.starts_with(s.as_bytes()),
            (HeaderRule::Suffix(s), Some(v)) => v.ends_with(s.as_bytes()),
            (HeaderRule::Contains(s), Some(v)) => v.windows(s.len().max(1)).any(|w| w == s.as_bytes()),
            (HeaderRule::Regex(re), Some(v)) => std::str::from_utf8(v).is_ok_and(|v| re.is_match(v)),
        }
    }
}

/// The gRPC `retry_on` conditions and the `grpc-status` code each retries.
pub const GRPC_RETRY_ON: &[(&str, u32)] = &[
    ("cancelled", 1),
    ("deadline-exceeded", 4),
    ("resource-exhausted", 8),
    ("internal", 13),
    ("unavailable", 14),
];

/// Whether a request is gRPC by its `content-type`, as Envoy's `Grpc::Common::hasGrpcContentType`
/// decides: `application/grpc` exactly or `application/grpc+<subtype>`, case and all (so neither
/// gRPC-Web nor `application/grpc;…` is). Its local replies (`shard::reply`) ask the same.
pub fn is_grpc(headers: &[httparse::Header<'_>]) -> bool {
    headers.iter().any(|h| {
        h.name.len() == 12
            && h.name.eq_ignore_ascii_case("content-type")
            && (h.value == b"application/grpc" || h.value.starts_with(b"application/grpc+"))
    })
}

fn query_matches(m: &config::QueryParameterMatcher, query: Option<&str>) -> bool {
    query.unwrap_or("").split('&').any(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        k == m.name && m.exact.as_deref().is_none_or(|want| want == v)
    })
}

fn anchored(re: &str) -> Result<regex::Regex, BuildError> {
    regex::Regex::new(&format!("^(?:{re})$")).map_err(|e| BuildError::BadRegex(e.to_string()))
}

fn compile_route(id: usize, r: &config::Route, clusters: &HashMap<&str, usize>) -> Result<Route, BuildError> {
    let RequestMatch { path, headers, query, grpc } = RequestMatch::compile(&r.matcher)?;
    let action = match &r.action {
        RouteAction::Forward(f) => {
            let targets = Targets::resolve(&f.cluster, clusters, true)?;
            // Envoy swaps "the matched prefix (or path)": for a `path` route that is the whole
            // path, which has the same length as the written one even when matched without case.
            let prefix_rewrite = match (&f.prefix_rewrite, &r.matcher.path) {
                (Some(rw), PathMatch::Prefix(p) | PathMatch::Path(p)) => Some((p.clone(), rw.clone())),
                _ => None,
            };
            Action::Forward(Forward {
                clusters: targets,
                timeout: f.timeout,
                prefix_rewrite,
                host_rewrite: f.host_rewrite_literal.clone(),
                idle_timeout: f.idle_timeout,
                max_stream_duration: f.max_stream_duration,
                grpc_timeout: f.grpc_timeout.map(Box::new),
                upgrades: f.upgrades.clone(),
                terminate_connect: f.terminate_connect,
                cluster_not_found: f.cluster_not_found,
                mirrors: f
                    .mirrors
                    .iter()
                    .map(|m| {
                        let target = match &m.target {
                            config::MirrorTarget::Cluster(c) => MirrorTarget::Cluster(
                                clusters
                                    .get(c.as_str())
                                    .copied()
                                    .ok_or_else(|| BuildError::UnknownCluster(c.clone()))?,
                            ),
                            config::MirrorTarget::Header(h) => MirrorTarget::Header(h.as_str().into()),
                        };
                        Ok(Mirror {
                            target,
                            per_million: m.fraction.per_million,
                            shadow_suffix: m.shadow_suffix,
                        })
                    })
                    .collect::<Result<_, BuildError>>()?,
                hash_policy: f.hash_policy.clone(),
                retry: f
                    .retry_policy
                    .as_ref()
                    .map(|p| -> Result<Box<Retry>, BuildError> {
                        let on = |k: &str| p.retry_on.iter().any(|x| x == k);
                        let headers = if on("retriable-headers") {
                            p.retriable_headers
                                .iter()
                                .map(HeaderMatcher::compile)
                                .collect::<Result<_, _>>()?
                        } else {
                            Box::default()
                        };
                        Ok(Box::new(Retry {
                            on_connect_failure: on("connect-failure") || on("5xx") || on("gateway-error"),
                            on_5xx: on("5xx"),
                            on_gateway_error: on("gateway-error"),
                            on_reset: on("reset") || on("5xx"),
                            on_refused_stream: on("refused-stream"),
                            num_retries: p.num_retries,
                            per_try_timeout: p.per_try_timeout,
                            per_try_idle_timeout: p.per_try_idle_timeout,
                            statuses: {
                                let mut set = StatusSet::default();
                                if on("retriable-4xx") {
                                    set.insert(409);
                                }
                                if on("retriable-status-codes") {
                                    p.retriable_status_codes.iter().for_each(|c| set.insert(*c));
                                }
                                set
                            },
                            headers,
                            grpc_codes: GRPC_RETRY_ON
                                .iter()
                                .filter(|(name, _)| on(name))
                                .fold(0, |bits, (_, code)| bits | 1 << code),
                            back_off: p.back_off,
                            avoid_previous_hosts: p.avoid_previous_hosts,
                            host_selection_attempts: p.host_selection_attempts,
                        }))
                    })
                    .transpose()?,
            })
        }
        RouteAction::DirectResponse { status, body } => {
            Action::Direct { status: *status, body: body.clone() }
        }
        RouteAction::Redirect(rd) => Action::Redirect(rd.clone()),
    };
    Ok(Route {
        id,
        path,
        headers,
        query,
        grpc,
        action,
        request_edits: HeaderEdits::new(&r.request_headers_to_add, &r.request_headers_to_remove),
        response_edits: HeaderEdits::new(&r.response_headers_to_add, &r.response_headers_to_remove),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_requests_are_known_by_their_content_type_as_envoy_knows_them() {
        let with = |v: &'static [u8]| [httparse::Header { name: "Content-Type", value: v }];
        assert!(is_grpc(&with(b"application/grpc")) && is_grpc(&with(b"application/grpc+proto")));
        for not in [&b"application/grpc-web"[..], b"application/grpc;x=y", b"APPLICATION/GRPC", b"text/plain"]
        {
            assert!(!is_grpc(&with(not)), "{}", String::from_utf8_lossy(not));
        }
        assert!(!is_grpc(&[]));
    }

    /// Envoy's `finalTimeout` for `max_grpc_timeout` 300 ms with a 50 ms offset, and `0s`.
    #[test]
    fn a_grpc_route_timeout_is_the_header_less_the_offset_capped() {
        let ms = Duration::from_millis;
        let capped = config::GrpcRouteTimeout { max: Some(ms(300)), offset: ms(50) };
        assert_eq!(capped.route_timeout(None), Some(ms(300)));
        assert_eq!(capped.route_timeout(Some(ms(150))), Some(ms(100)));
        assert_eq!(capped.route_timeout(Some(ms(40))), Some(ms(40)));
        assert_eq!(capped.route_timeout(Some(ms(20_000))), Some(ms(300)));
        let uncapped = config::GrpcRouteTimeout { max: None, offset: Duration::ZERO };
        assert_eq!(uncapped.route_timeout(None), None);
        assert_eq!(uncapped.route_timeout(Some(ms(20_000))), Some(ms(20_000)));
    }

    #[test]
    fn retry_back_off_is_envoys_jittered_exponential_and_status_sets_hold_their_codes() {
        let mut statuses = StatusSet::default();
        for c in [409, 418, 599, 100] {
            statuses.insert(c);
        }
        statuses.insert(600); // out of range: ignored
        assert!([409, 418, 599, 100].iter().all(|c| statuses.contains(*c)));
        assert!(![200, 410, 503, 600, 99].iter().any(|c| statuses.contains(*c)));
        let retry = Retry {
            on_connect_failure: false,
            on_5xx: false,
            on_gateway_error: false,
            on_reset: false,
            on_refused_stream: false,
            num_retries: 3,
            per_try_timeout: None,
            per_try_idle_timeout: None,
            statuses,
            headers: Box::default(),
            grpc_codes: 1 << 14 | 1 << 4,
            back_off: config::BackOff::default(),
            avoid_previous_hosts: false,
            host_selection_attempts: 1,
        };
        assert!(retry.retries_status(418) && !retry.retries_status(503));
        let grpc = |v: &'static [u8]| [httparse::Header { name: "Grpc-Status", value: v }];
        assert!(retry.retries_response(200, &grpc(b"14")) && retry.retries_response(200, &grpc(b"4")));
        assert!(!retry.retries_response(200, &grpc(b"13")) && !retry.retries_response(200, &grpc(b"x")));
        assert!(!retry.retries_response(200, &grpc(b"99")) && !retry.retries_response(200, &[]));
        // Below 25 ms, then 75 ms, then 175 ms, then capped at 250 ms (base 25 ms, max 250 ms).
        let ms = |n, roll| retry.back_off(n, roll).as_millis();
        assert_eq!((ms(1, 24), ms(1, 25)), (24, 0));
        assert_eq!((ms(2, 74), ms(3, 174), ms(4, 249), ms(9, 250)), (74, 174, 249, 0));
    }
}

/// A route `match` on its own (path, headers, query), for filters that pick by it (the JWT
/// filter's `rules`); matches as a route's does.
#[derive(Debug)]
pub struct RequestMatch {
    path: PathMatcher,
    headers: Vec<HeaderMatcher>,
    query: Vec<config::QueryParameterMatcher>,
    grpc: bool,
}

impl RequestMatch {
    pub fn compile(m: &config::RouteMatch) -> Result<Self, BuildError> {
        let case_sensitive = m.case_sensitive;
        let path = match &m.path {
            PathMatch::Prefix(p) => PathMatcher::Prefix { prefix: p.clone(), case_sensitive },
            PathMatch::Path(p) => PathMatcher::Exact { path: p.clone(), case_sensitive },
            PathMatch::SafeRegex(re) => PathMatcher::Regex(anchored(re)?),
            PathMatch::Connect => PathMatcher::Connect,
        };
        let headers = m.headers.iter().map(HeaderMatcher::compile).collect::<Result<_, _>>()?;
        Ok(RequestMatch { path, headers, query: m.query_parameters.clone(), grpc: m.grpc })
    }

    /// `path` is the request target, query included.
    pub fn matches(&self, path: &str, headers: &[httparse::Header<'_>]) -> bool {
        let (path_only, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        path_matches(&self.path, path_only)
            && self.headers.iter().all(|m| m.matches(headers))
            && self.query.iter().all(|q| query_matches(q, query))
            && (!self.grpc || is_grpc(headers))
    }
}

fn path_matches(m: &PathMatcher, path: &str) -> bool {
    // A CONNECT has no path: only `connect_matcher` matches it (Envoy: not even `prefix: ""`).
    if path.is_empty() {
        return matches!(m, PathMatcher::Connect);
    }
    match m {
        PathMatcher::Connect => false,
        PathMatcher::Prefix { prefix, case_sensitive: true } => path.starts_with(prefix.as_str()),
        PathMatcher::Prefix { prefix, case_sensitive: false } => {
            path.len() >= prefix.len()
                && path.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
        }
        PathMatcher::Exact { path: p, case_sensitive: true } => path == p,
        PathMatcher::Exact { path: p, case_sensitive: false } => path.eq_ignore_ascii_case(p),
        PathMatcher::Regex(re) => re.is_match(path),
    }
}
