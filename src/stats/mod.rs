//! Statistics with Envoy's names. Each shard counts into its own plain cells (no atomics, no locks
//! on the request path); the admin server asks every shard for a `StatsDump` and merges them on read,
//! so a counter read after N requests is exactly N. Rendering (text, JSON, Prometheus with Envoy's tag
//! names) lives in `render`. Owns no I/O.

pub mod render;

use hdrhistogram::Histogram;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;

/// What a stat belongs to; decides its dotted name and its Prometheus tags.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    Server,
    /// An http_connection_manager, by `stat_prefix`.
    Http(String),
    Cluster(String),
    /// A listener by its bound address (`127.0.0.1_10000`), or `<address>.worker_<n>` for one
    /// shard's share of it, as Envoy names them.
    Listener(String),
    /// `http1.*`: the HTTP/1.1 codec's counters, one set for the process as Envoy's.
    Http1,
    /// `http2.*`: the HTTP/2 codec's counters (clients' connections), one set for the process.
    Http2,
    /// `<stat_prefix>.http_local_rate_limit`: a local rate limit config's own prefix, at the root
    /// as Envoy puts it.
    LocalRateLimit(String),
    /// `http.<stat_prefix>.fault`: a connection manager's fault filter.
    Fault(String),
    /// `http.<stat_prefix>.<filter>`: a connection manager's filter that counts under its own
    /// name (`cors`, `csrf`).
    HttpFilter(String, &'static str),
    /// `http.<stat_prefix>.jwt_authn`: a connection manager's JWT filter.
    JwtAuthn(String),
    /// `http.<stat_prefix>.compressor.<library name>.<library>`: one compressor filter (its
    /// connection manager's prefix, then the rest).
    Compressor(String, String),
    /// A `tcp_proxy`, by `stat_prefix`.
    Tcp(String),
    /// `local_rate_limit.<stat_prefix>`: a network local rate limit.
    NetLocalRateLimit(String),
    /// `connection_limit.<stat_prefix>`: a network connection limit.
    ConnectionLimit(String),
    /// `http.<hcm>.rbac` of a connection manager's RBAC filter, or `http.<hcm>.rbac.<rules>` with
    /// a `rules_stat_prefix` / `shadow_rules_stat_prefix`.
    Rbac {
        hcm: String,
        rules: String,
    },
    /// `<stat_prefix>.rbac` of a network RBAC filter, or `<stat_prefix>.rbac.<rules>` with a
    /// `shadow_rules_stat_prefix`.
    NetRbac {
        prefix: String,
        rules: String,
    },
    /// A `dynamic_resources` subscription at the root: `listener_manager.lds`, `cluster_manager.cds`.
    Subscription(&'static str),
    /// A connection manager's route configuration file: `http.<stat_prefix>.rds.<route_config_name>`.
    Rds {
        stat_prefix: String,
        route_config: String,
    },
    /// `tls_inspector.*`: every listener's TLS inspector, one set for the process as Envoy's.
    TlsInspector,
    /// `sds.<secret name>`: one SDS secret's subscription.
    Sds(String),
}

impl Scope {
    pub fn prefix(&self) -> String {
        match self {
            Scope::Server => "server".to_string(),
            Scope::Http(p) => format!("http.{p}"),
            Scope::Cluster(c) => format!("cluster.{c}"),
            Scope::Listener(l) => format!("listener.{l}"),
            Scope::Http1 => "http1".to_string(),
            Scope::Http2 => "http2".to_string(),
            Scope::LocalRateLimit(p) => format!("{p}.http_local_rate_limit"),
            Scope::Fault(p) => format!("http.{p}.fault"),
            Scope::HttpFilter(p, filter) => format!("http.{p}.{filter}"),
            Scope::JwtAuthn(p) => format!("http.{p}.jwt_authn"),
            Scope::Compressor(p, rest) => format!("http.{p}.compressor.{rest}"),
            Scope::Tcp(p) => format!("tcp.{p}"),
            Scope::NetLocalRateLimit(p) => format!("local_rate_limit.{p}"),
            Scope::ConnectionLimit(p) => format!("connection_limit.{p}"),
            Scope::Rbac { hcm, rules } if rules.is_empty() => format!("http.{hcm}.rbac"),
            Scope::Rbac { hcm, rules } => format!("http.{hcm}.rbac.{rules}"),
            Scope::NetRbac { prefix, rules } if rules.is_empty() => format!("{prefix}.rbac"),
            Scope::NetRbac { prefix, rules } => format!("{prefix}.rbac.{rules}"),
            Scope::Subscription(p) => p.to_string(),
            Scope::Rds { stat_prefix, route_config } => format!("http.{stat_prefix}.rds.{route_config}"),
            Scope::TlsInspector => "tls_inspector".to_string(),
            Scope::Sds(name) => format!("sds.{name}"),
        }
    }
}

#[derive(Default, Debug)]
pub struct Counter(Cell<u64>);

impl Counter {
    #[inline]
    pub fn inc(&self) {
        self.0.set(self.0.get() + 1);
    }

    #[inline]
    pub fn add(&self, n: u64) {
        self.0.set(self.0.get().saturating_add(n));
    }

    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

#[derive(Default, Debug)]
pub struct Gauge(Cell<i64>);

impl Gauge {
    #[inline]
    pub fn inc(&self) {
        self.0.set(self.0.get() + 1);
    }

    #[inline]
    pub fn dec(&self) {
        self.0.set(self.0.get() - 1);
    }

    pub fn get(&self) -> i64 {
        self.0.get()
    }
}

/// Durations in microseconds, 1 µs to 1 h at two significant digits (1 % error, ~26 KiB).
#[derive(Debug)]
pub struct Timer(RefCell<Histogram<u64>>);

/// Highest recordable value: an hour, in µs.
const TIMER_MAX_US: u64 = 3_600_000_000;

pub fn new_histogram() -> Histogram<u64> {
    // Constant, valid bounds: this cannot fail.
    Histogram::new_with_bounds(1, TIMER_MAX_US, 2).unwrap_or_else(|_| unreachable!("valid histogram bounds"))
}

impl Default for Timer {
    fn default() -> Self {
        Timer(RefCell::new(new_histogram()))
    }
}

impl Timer {
    #[inline]
    pub fn record_us(&self, us: u64) {
        self.0.borrow_mut().saturating_record(us.clamp(1, TIMER_MAX_US));
    }
}

/// `upstream_rq_<code>`: one counter per status code 100-599, shown once used (Envoy creates them
/// on first use).
#[derive(Debug)]
pub struct CodeCounters(Box<[Cell<u64>; 500]>);

impl Default for CodeCounters {
    fn default() -> Self {
        CodeCounters(Box::new(std::array::from_fn(|_| Cell::new(0))))
    }
}

impl CodeCounters {
    #[inline]
    pub fn inc(&self, status: u16) {
        if let Some(c) = usize::from(status).checked_sub(100).and_then(|i| self.0.get(i)) {
            c.set(c.get() + 1);
        }
    }
}

/// "upstream_rq_100" ... "upstream_rq_599", or "retry.upstream_rq_100" ... when `retried`, made
/// once.
fn code_stat_name(status: usize, retried: bool) -> &'static str {
    static NAMES: std::sync::OnceLock<[Vec<String>; 2]> = std::sync::OnceLock::new();
    let names = NAMES
        .get_or_init(|| ["", "retry."].map(|p| (100..600).map(|c| format!("{p}upstream_rq_{c}")).collect()));
    names[usize::from(retried)].get(status - 100).map_or("upstream_rq_unknown", String::as_str)
}

impl Dump for CodeCounters {
    fn dump(&self, scope: &Scope, _name: &'static str, out: &mut StatsDump) {
        for (i, c) in self.0.iter().enumerate().filter(|(_, c)| c.get() != 0) {
            out.entries.push(Entry {
                scope: scope.clone(),
                name: code_stat_name(i + 100, false),
                value: Value::Counter(c.get()),
            });
        }
    }
}

/// Envoy's `retry.upstream_rq_completed`, `retry.upstream_rq_<class>` and
/// `retry.upstream_rq_<code>`: the responses a retry replaced, counted here instead of in
/// `upstream_rq_*`, each shown once used.
#[derive(Debug, Default)]
pub struct RetriedCodes(CodeCounters);

impl RetriedCodes {
    #[inline]
    pub fn inc(&self, status: u16) {
        self.0.inc(status);
    }
}

impl Dump for RetriedCodes {
    fn dump(&self, scope: &Scope, _name: &'static str, out: &mut StatsDump) {
        const CLASSES: [&str; 5] = [
            "retry.upstream_rq_1xx",
            "retry.upstream_rq_2xx",
            "retry.upstream_rq_3xx",
            "retry.upstream_rq_4xx",
            "retry.upstream_rq_5xx",
        ];
        let mut classes = [0u64; 5];
        let mut push =
            |name, n| out.entries.push(Entry { scope: scope.clone(), name, value: Value::Counter(n) });
        for (i, c) in self.0 .0.iter().enumerate().filter(|(_, c)| c.get() != 0) {
            classes[i / 100] += c.get();
            push(code_stat_name(i + 100, true), c.get());
        }
        for (name, n) in CLASSES.into_iter().zip(classes).filter(|(_, n)| *n != 0) {
            push(name, n);
        }
        let total: u64 = classes.iter().sum();
        if total != 0 {
            push("retry.upstream_rq_completed", total);
        }
    }
}

/// A value in a dump.
#[derive(Debug, Clone)]
pub enum Value {
    Counter(u64),
    Gauge(i64),
    /// A gauge that holds a hash (a subscription's `version`): Envoy's gauges are unsigned.
    GaugeU64(u64),
    /// A text readout (a subscription's `version_text`): Envoy lists these first, quoted, and
    /// leaves them out of Prometheus.
    Text(String),
    /// Microseconds.
    Histogram(Box<Histogram<u64>>),
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub scope: Scope,
    pub name: &'static str,
    pub value: Value,
}

impl Entry {
    pub fn full_name(&self) -> String {
        format!("{}.{}", self.scope.prefix(), self.name)
    }
}

/// Every stat of one shard (or, after `merge`, of all of them).
#[derive(Debug, Default, Clone)]
pub struct StatsDump {
    pub entries: Vec<Entry>,
    /// By (cluster, host address).
    pub hosts: BTreeMap<(String, SocketAddr), HostDump>,
}

trait Dump {
    fn dump(&self, scope: &Scope, name: &'static str, out: &mut StatsDump);
}

impl Dump for Counter {
    fn dump(&self, scope: &Scope, name: &'static str, out: &mut StatsDump) {
        out.entries.push(Entry { scope: scope.clone(), name, value: Value::Counter(self.get()) });
    }
}

impl Dump for Gauge {
    fn dump(&self, scope: &Scope, name: &'static str, out: &mut StatsDump) {
        out.entries.push(Entry { scope: scope.clone(), name, value: Value::Gauge(self.get()) });
    }
}

impl Dump for Timer {
    fn dump(&self, scope: &Scope, name: &'static str, out: &mut StatsDump) {
        let h = self.0.borrow().clone();
        out.entries.push(Entry { scope: scope.clone(), name, value: Value::Histogram(Box::new(h)) });
    }
}

/// A block of stats whose field names are Envoy's stat names.
macro_rules! stat_block {
    ($(#[$meta:meta])* $block:ident { $($field:ident: $kind:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Default, Debug)]
        pub struct $block {
            $(pub $field: $kind,)*
        }

        impl $block {
            pub fn dump(&self, scope: &Scope, out: &mut StatsDump) {
                $(self.$field.dump(scope, stringify!($field), out);)*
            }
        }
    };
}

stat_block! {
    /// `http.<stat_prefix>.*`, per http_connection_manager.
    HttpStats {
        downstream_cx_total: Counter,
        downstream_cx_active: Gauge,
        downstream_cx_protocol_error: Counter,
        downstream_cx_idle_timeout: Counter,
        downstream_cx_max_requests_reached: Counter,
        downstream_cx_max_duration_reached: Counter,
        downstream_cx_destroy_remote_active_rq: Counter,
        downstream_rq_total: Counter,
        downstream_rq_http1_total: Counter,
        downstream_rq_http2_total: Counter,
        downstream_cx_http2_total: Counter,
        downstream_cx_http2_active: Gauge,
        downstream_rq_too_many_premature_resets: Counter,
        downstream_rq_completed: Counter,
        downstream_rq_active: Gauge,
        downstream_rq_1xx: Counter,
        downstream_rq_2xx: Counter,
        downstream_rq_3xx: Counter,
        downstream_rq_4xx: Counter,
        downstream_rq_5xx: Counter,
        downstream_rq_header_timeout: Counter,
        downstream_rq_idle_timeout: Counter,
        downstream_rq_timeout: Counter,
        downstream_rq_max_duration_reached: Counter,
        downstream_cx_delayed_close_timeout: Counter,
        downstream_rq_time: Timer,
        no_route: Counter,
        no_cluster: Counter,
        rq_direct_response: Counter,
        rq_redirect: Counter,
        downstream_cx_upgrades_total: Counter,
        downstream_cx_upgrades_active: Gauge,
        downstream_rq_ws_on_non_ws_route: Counter,
    }
}

stat_block! {
    /// `tcp.<stat_prefix>.*`, per `tcp_proxy`.
    TcpStats {
        downstream_cx_total: Counter,
        downstream_cx_no_route: Counter,
        downstream_cx_tx_bytes_total: Counter,
        downstream_cx_rx_bytes_total: Counter,
        idle_timeout: Counter,
        upstream_flush_total: Counter,
        upstream_flush_active: Gauge,
    }
}

stat_block! {
    /// `http1.*`: what the HTTP/1.1 codec refused or changed, whichever connection manager.
    Http1Stats {
        dropped_headers_with_underscores: Counter,
        requests_rejected_with_underscores_in_headers: Counter,
    }
}

stat_block! {
    /// `http2.*`: what skiff's HTTP/2 bridge (`shard::h2`) sees of its clients' streams; the
    /// codec's own refusals (floods, refused streams) are not visible to it.
    Http2Stats {
        rx_reset: Counter,
        tx_reset: Counter,
        trailers: Counter,
        streams_active: Gauge,
        dropped_headers_with_underscores: Counter,
        requests_rejected_with_underscores_in_headers: Counter,
    }
}

stat_block! {
    /// `listener.<address>.*`: connections accepted on a listener, across shards.
    ListenerStats {
        downstream_cx_total: Counter,
        downstream_cx_active: Gauge,
        downstream_cx_destroy: Counter,
        no_filter_chain_match: Counter,
        downstream_pre_cx_timeout: Counter,
    }
}

stat_block! {
    /// `tls_inspector.*`: what the listeners' TLS inspectors found in their clients' first bytes.
    TlsInspectorStats {
        tls_found: Counter,
        tls_not_found: Counter,
        sni_found: Counter,
        sni_not_found: Counter,
        alpn_found: Counter,
        alpn_not_found: Counter,
        client_hello_too_large: Counter,
    }
}

stat_block! {
    /// `listener.<address>.worker_<n>.*`: one shard's share of a listener's connections (how
    /// evenly SO_REUSEPORT spreads them).
    WorkerStats {
        downstream_cx_total: Counter,
        downstream_cx_active: Gauge,
    }
}

stat_block! {
    /// `cluster.<name>.*`, the request-path part (the control thread adds membership and DNS).
    ClusterStats {
        upstream_cx_total: Counter,
        upstream_cx_http1_total: Counter,
        upstream_cx_http2_total: Counter,
        upstream_cx_active: Gauge,
        upstream_cx_tx_bytes_total: Counter,
        upstream_cx_rx_bytes_total: Counter,
        upstream_cx_connect_fail: Counter,
        upstream_cx_connect_attempts_exceeded: Counter,
        upstream_cx_connect_timeout: Counter,
        upstream_cx_destroy: Counter,
        upstream_cx_destroy_local: Counter,
        upstream_cx_destroy_remote: Counter,
        upstream_cx_destroy_with_active_rq: Counter,
        upstream_cx_destroy_local_with_active_rq: Counter,
        upstream_cx_destroy_remote_with_active_rq: Counter,
        upstream_cx_none_healthy: Counter,
        lb_healthy_panic: Counter,
        upstream_cx_idle_timeout: Counter,
        upstream_cx_max_duration_reached: Counter,
        upstream_cx_pool_overflow: Counter,
        upstream_cx_overflow: Counter,
        upstream_rq_total: Counter,
        upstream_rq_completed: Counter,
        upstream_rq_pending_total: Counter,
        upstream_rq_pending_failure_eject: Counter,
        upstream_rq_pending_overflow: Counter,
        upstream_rq_pending_active: Gauge,
        upstream_rq_active_overflow: Counter,
        upstream_rq_retry_overflow: Counter,
        upstream_rq_active: Gauge,
        upstream_rq_1xx: Counter,
        upstream_rq_2xx: Counter,
        upstream_rq_3xx: Counter,
        upstream_rq_4xx: Counter,
        upstream_rq_5xx: Counter,
        upstream_rq_retry: Counter,
        upstream_rq_retry_limit_exceeded: Counter,
        upstream_rq_retry_success: Counter,
        upstream_rq_retry_backoff_exponential: Counter,
        upstream_rq_timeout: Counter,
        upstream_rq_per_try_timeout: Counter,
        upstream_rq_per_try_idle_timeout: Counter,
        upstream_rq_time: Timer,
        upstream_rq_code: CodeCounters,
        retried_codes: RetriedCodes,
    }
}

stat_block! {
    /// `<stat_prefix>.http_local_rate_limit.*`, per local rate limit `stat_prefix`.
    LocalRateLimitStats {
        enabled: Counter,
        enforced: Counter,
        rate_limited: Counter,
        ok: Counter,
    }
}

stat_block! {
    /// `local_rate_limit.<stat_prefix>.*`, per network local rate limit `stat_prefix`.
    NetLocalRateLimitStats {
        rate_limited: Counter,
    }
}

stat_block! {
    /// `connection_limit.<stat_prefix>.*`, per connection limit `stat_prefix`.
    ConnectionLimitStats {
        limited_connections: Counter,
        active_connections: Gauge,
    }
}

stat_block! {
    /// `http.<stat_prefix>.fault.*`, per connection manager with a fault filter.
    FaultStats {
        delays_injected: Counter,
        aborts_injected: Counter,
        faults_overflow: Counter,
        active_faults: Gauge,
    }
}

stat_block! {
    /// `http.<stat_prefix>.cors.*`, per connection manager with a cors filter.
    CorsStats {
        origin_invalid: Counter,
        origin_valid: Counter,
    }
}

stat_block! {
    /// `http.<stat_prefix>.csrf.*`, per connection manager with a csrf filter.
    CsrfStats {
        missing_source_origin: Counter,
        request_invalid: Counter,
        request_valid: Counter,
    }
}

stat_block! {
    /// `http.<stat_prefix>.jwt_authn.*`, per connection manager with a JWT filter (Envoy's names;
    /// the JWKS fetch and cache counters stay 0: keys are local and tokens are not cached).
    JwtAuthnStats {
        allowed: Counter,
        denied: Counter,
        cors_preflight_bypassed: Counter,
        jwks_fetch_success: Counter,
        jwks_fetch_failed: Counter,
        jwt_cache_hit: Counter,
        jwt_cache_miss: Counter,
    }
}

stat_block! {
    /// `http.<stat_prefix>.rbac.[<rules_stat_prefix>.]*`: the enforced rules' decisions.
    RbacStats {
        allowed: Counter,
        denied: Counter,
    }
}

stat_block! {
    /// `http.<stat_prefix>.rbac.[<shadow_rules_stat_prefix>.]*`: the shadow rules' decisions.
    RbacShadowStats {
        shadow_allowed: Counter,
        shadow_denied: Counter,
    }
}

stat_block! {
    /// `http.<stat_prefix>.ext_authz.*`, per connection manager with an ext_authz filter.
    ExtAuthzStats {
        ok: Counter,
        denied: Counter,
        error: Counter,
        disabled: Counter,
        failure_mode_allowed: Counter,
    }
}

/// `http.<stat_prefix>.compressor.<library name>.<library>.*`, per compressor filter. The response
/// counters are `response.*` when the filter's config has a `response_direction_config`, and
/// unprefixed (Envoy's legacy names) when not.
#[derive(Default, Debug)]
pub struct CompressorStats {
    /// Names the response counters `response.*`.
    pub response_prefix: Cell<bool>,
    pub compressed: Counter,
    pub not_compressed: Counter,
    pub content_length_too_small: Counter,
    pub total_uncompressed_bytes: Counter,
    pub total_compressed_bytes: Counter,
    pub no_accept_header: Counter,
    pub header_identity: Counter,
    pub header_wildcard: Counter,
    pub header_not_valid: Counter,
    pub header_compressor_used: Counter,
    pub header_compressor_overshadowed: Counter,
    pub not_compressed_etag: Counter,
    pub request_not_compressed: Counter,
}

impl CompressorStats {
    pub fn dump(&self, scope: &Scope, out: &mut StatsDump) {
        let response: [(&Counter, &'static str, &'static str); 5] = [
            (&self.compressed, "response.compressed", "compressed"),
            (&self.not_compressed, "response.not_compressed", "not_compressed"),
            (&self.content_length_too_small, "response.content_length_too_small", "content_length_too_small"),
            (&self.total_uncompressed_bytes, "response.total_uncompressed_bytes", "total_uncompressed_bytes"),
            (&self.total_compressed_bytes, "response.total_compressed_bytes", "total_compressed_bytes"),
        ];
        for (c, prefixed, legacy) in response {
            c.dump(scope, if self.response_prefix.get() { prefixed } else { legacy }, out);
        }
        self.no_accept_header.dump(scope, "no_accept_header", out);
        self.header_identity.dump(scope, "header_identity", out);
        self.header_wildcard.dump(scope, "header_wildcard", out);
        self.header_not_valid.dump(scope, "header_not_valid", out);
        self.header_compressor_used.dump(scope, "header_compressor_used", out);
        self.header_compressor_overshadowed.dump(scope, "header_compressor_overshadowed", out);
        self.not_compressed_etag.dump(scope, "not_compressed_etag", out);
        self.request_not_compressed.dump(scope, "request.not_compressed", out);
        let zero = Counter::default();
        for name in [
            "request.compressed",
            "request.content_length_too_small",
            "request.total_compressed_bytes",
            "request.total_uncompressed_bytes",
        ] {
            zero.dump(scope, name, out);
        }
    }
}

impl HttpStats {
    pub fn response(&self, status: u16) -> &Counter {
        match status {
            100..=199 => &self.downstream_rq_1xx,
            200..=299 => &self.downstream_rq_2xx,
            300..=399 => &self.downstream_rq_3xx,
            400..=499 => &self.downstream_rq_4xx,
            _ => &self.downstream_rq_5xx,
        }
    }
}

impl ClusterStats {
    /// Counts a response (the upstream's, or the one skiff made for an upstream failure) in its
    /// class, its code and `upstream_rq_completed`.
    pub fn completed(&self, status: u16) {
        self.response(status).inc();
        self.upstream_rq_code.inc(status);
        self.upstream_rq_completed.inc();
    }

    pub fn response(&self, status: u16) -> &Counter {
        match status {
            100..=199 => &self.upstream_rq_1xx,
            200..=299 => &self.upstream_rq_2xx,
            300..=399 => &self.upstream_rq_3xx,
            400..=499 => &self.upstream_rq_4xx,
            _ => &self.upstream_rq_5xx,
        }
    }
}

/// Per upstream host of a cluster, for `/clusters` (Envoy keeps these out of `/stats` too).
#[derive(Default, Debug)]
pub struct HostStats {
    pub cx_active: Gauge,
    pub cx_total: Counter,
    pub rq_active: Gauge,
    pub rq_total: Counter,
    pub rq_success: Counter,
    pub rq_error: Counter,
}

/// A host's numbers in a dump.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostDump {
    pub cx_active: i64,
    pub cx_total: u64,
    pub rq_active: i64,
    pub rq_total: u64,
    pub rq_success: u64,
    pub rq_error: u64,
}

impl HostDump {
    fn add(&mut self, o: &HostDump) {
        self.cx_active += o.cx_active;
        self.cx_total += o.cx_total;
        self.rq_active += o.rq_active;
        self.rq_total += o.rq_total;
        self.rq_success += o.rq_success;
        self.rq_error += o.rq_error;
    }

    /// (name, value) in the order Envoy's `/clusters` prints them.
    pub fn fields(&self) -> [(&'static str, i64); 6] {
        [
            ("cx_active", self.cx_active),
            ("cx_total", self.cx_total as i64),
            ("rq_active", self.rq_active),
            ("rq_total", self.rq_total as i64),
            ("rq_success", self.rq_success as i64),
            ("rq_error", self.rq_error as i64),
        ]
    }
}

/// One shard's stats, by scope name. They outlive config reloads: a cluster keeps its counters
/// as long as its name stays.
#[derive(Default)]
pub struct ShardStats {
    pub http1: Http1Stats,
    pub http2: Http2Stats,
    http: RefCell<HashMap<String, Rc<HttpStats>>>,
    tcp: RefCell<HashMap<String, Rc<TcpStats>>>,
    listeners: RefCell<HashMap<String, Rc<ListenerStats>>>,
    workers: RefCell<HashMap<String, Rc<WorkerStats>>>,
    clusters: RefCell<HashMap<String, Rc<ClusterStats>>>,
    hosts: RefCell<HashMap<(String, SocketAddr), Rc<HostStats>>>,
    rate_limits: RefCell<HashMap<String, Rc<LocalRateLimitStats>>>,
    faults: RefCell<HashMap<String, Rc<FaultStats>>>,
    net_rate_limits: RefCell<HashMap<String, Rc<NetLocalRateLimitStats>>>,
    connection_limits: RefCell<HashMap<String, Rc<ConnectionLimitStats>>>,
    cors: RefCell<HashMap<String, Rc<CorsStats>>>,
    csrf: RefCell<HashMap<String, Rc<CsrfStats>>>,
    jwt_authn: RefCell<HashMap<String, Rc<JwtAuthnStats>>>,
    /// Keyed by (connection manager prefix, rules prefix).
    rbac: RefCell<HashMap<(String, String), Rc<RbacStats>>>,
    rbac_shadow: RefCell<HashMap<(String, String), Rc<RbacShadowStats>>>,
    /// Keyed by (network RBAC `stat_prefix`, rules prefix).
    net_rbac: RefCell<HashMap<(String, String), Rc<RbacStats>>>,
    net_rbac_shadow: RefCell<HashMap<(String, String), Rc<RbacShadowStats>>>,
    ext_authz: RefCell<HashMap<String, Rc<ExtAuthzStats>>>,
    /// Envoy's copy of the ext_authz counters under the routed cluster, by cluster name.
    cluster_ext_authz: RefCell<HashMap<String, Rc<ExtAuthzStats>>>,
    /// By (connection manager prefix, `<library name>.<library>`).
    compressors: RefCell<HashMap<(String, String), Rc<CompressorStats>>>,
    /// `ssl.*` of a listener or cluster scope, and `http.<prefix>.downstream_cx_ssl_*`.
    ssl: RefCell<HashMap<Scope, Rc<SslStats>>>,
    http_ssl: RefCell<HashMap<String, Rc<HttpSslStats>>>,
    /// Made when a listener first runs the TLS inspector (Envoy shows them from then on).
    tls_inspector: RefCell<Option<Rc<TlsInspectorStats>>>,
    /// `cluster.<name>.http2.*`, by cluster name, made with its first HTTP/2 connection.
    cluster_http2: RefCell<HashMap<String, Rc<UpstreamHttp2Stats>>>,
}

impl ShardStats {
    pub fn http(&self, stat_prefix: &str) -> Rc<HttpStats> {
        self.http.borrow_mut().entry(stat_prefix.to_string()).or_default().clone()
    }

    pub fn tcp(&self, stat_prefix: &str) -> Rc<TcpStats> {
        self.tcp.borrow_mut().entry(stat_prefix.to_string()).or_default().clone()
    }

    /// `listener.<name>.*`; `name` as `listener_stat_name` gives it.
    pub fn listener(&self, name: &str) -> Rc<ListenerStats> {
        self.listeners.borrow_mut().entry(name.to_string()).or_default().clone()
    }

    /// `listener.<name>.worker_<shard>.*`.
    pub fn worker(&self, name: &str, shard: usize) -> Rc<WorkerStats> {
        self.workers.borrow_mut().entry(format!("{name}.worker_{shard}")).or_default().clone()
    }

    pub fn cluster(&self, name: &str) -> Rc<ClusterStats> {
        self.clusters.borrow_mut().entry(name.to_string()).or_default().clone()
    }

    pub fn local_rate_limit(&self, stat_prefix: &str) -> Rc<LocalRateLimitStats> {
        self.rate_limits.borrow_mut().entry(stat_prefix.to_string()).or_default().clone()
    }

    /// `local_rate_limit.<stat_prefix>.*` of a network local rate limit.
    pub fn net_local_rate_limit(&self, stat_prefix: &str) -> Rc<NetLocalRateLimitStats> {
        self.net_rate_limits.borrow_mut().entry(stat_prefix.to_string()).or_default().clone()
    }

    /// `connection_limit.<stat_prefix>.*`.
    pub fn connection_limit(&self, stat_prefix: &str) -> Rc<ConnectionLimitStats> {
        self.connection_limits.borrow_mut().entry(stat_prefix.to_string()).or_default().clone()
    }

    /// `http.<stat_prefix>.fault.*` of a connection manager.
    pub fn fault(&self, stat_prefix: &str) -> Rc<FaultStats> {
        self.faults.borrow_mut().entry(stat_prefix.to_string()).or_default().clone()
    }

    /// `http.<stat_prefix>.cors.*` of a connection manager.
    pub fn cors(&self, stat_prefix: &str) -> Rc<CorsStats> {
        self.cors.borrow_mut().entry(stat_prefix.to_string()).or_default().clone()
    }

    /// `http.<stat_prefix>.csrf.*` of a connection manager.
    pub fn csrf(&self, stat_prefix: &str) -> Rc<CsrfStats> {
        self.csrf.borrow_mut().entry(stat_prefix.to_string()).or_default().clone()
    }

    /// `http.<stat_prefix>.jwt_authn.*` of a connection manager.
    pub fn jwt_authn(&self, stat_prefix: &str) -> Rc<JwtAuthnStats> {
        self.jwt_authn.borrow_mut().entry(stat_prefix.to_string()).or_default().clone()
    }

    /// `http.<hcm>.rbac[.<rules>].{allowed,denied}`.
    pub fn rbac(&self, hcm: &str, rules: &str) -> Rc<RbacStats> {
        self.rbac.borrow_mut().entry((hcm.to_string(), rules.to_string())).or_default().clone()
    }

    /// `http.<hcm>.rbac[.<rules>].{shadow_allowed,shadow_denied}`.
    pub fn rbac_shadow(&self, hcm: &str, rules: &str) -> Rc<RbacShadowStats> {
        self.rbac_shadow.borrow_mut().entry((hcm.to_string(), rules.to_string())).or_default().clone()
    }

    /// `<stat_prefix>.rbac.{allowed,denied}` of a network RBAC filter.
    pub fn net_rbac(&self, prefix: &str) -> Rc<RbacStats> {
        self.net_rbac.borrow_mut().entry((prefix.to_string(), String::new())).or_default().clone()
    }

    /// `<stat_prefix>.rbac[.<rules>].{shadow_allowed,shadow_denied}` of a network RBAC filter.
    pub fn net_rbac_shadow(&self, prefix: &str, rules: &str) -> Rc<RbacShadowStats> {
        self.net_rbac_shadow.borrow_mut().entry((prefix.to_string(), rules.to_string())).or_default().clone()
    }

    /// `http.<stat_prefix>.ext_authz.*` of a connection manager.
    pub fn ext_authz(&self, stat_prefix: &str) -> Rc<ExtAuthzStats> {
        self.ext_authz.borrow_mut().entry(stat_prefix.to_string()).or_default().clone()
    }

    /// `cluster.<name>.ext_authz.*`: the counters of the checks of requests routed to cluster
    /// `name` (looked up per check, which costs far less than its exchange).
    pub fn cluster_ext_authz(&self, name: &str) -> Rc<ExtAuthzStats> {
        self.cluster_ext_authz.borrow_mut().entry(name.to_string()).or_default().clone()
    }

    /// `http.<stat_prefix>.compressor.<rest>.*` of a compressor filter.
    pub fn compressor(&self, stat_prefix: &str, rest: &str, response_prefix: bool) -> Rc<CompressorStats> {
        let key = (stat_prefix.to_string(), rest.to_string());
        let stats = self.compressors.borrow_mut().entry(key).or_default().clone();
        stats.response_prefix.set(response_prefix);
        stats
    }

    /// `<scope>.ssl.*` (a `Scope::Listener` or `Scope::Cluster`); looked up per TLS connection,
    /// which costs far less than its handshake.
    pub fn ssl(&self, scope: Scope) -> Rc<SslStats> {
        self.ssl.borrow_mut().entry(scope).or_default().clone()
    }

    /// `cluster.<name>.http2.*`; looked up per new HTTP/2 connection.
    pub fn cluster_http2(&self, cluster: &str) -> Rc<UpstreamHttp2Stats> {
        self.cluster_http2.borrow_mut().entry(cluster.to_string()).or_default().clone()
    }

    /// `tls_inspector.*`.
    pub fn tls_inspector(&self) -> Rc<TlsInspectorStats> {
        self.tls_inspector.borrow_mut().get_or_insert_with(Rc::default).clone()
    }

    pub fn http_ssl(&self, stat_prefix: &str) -> Rc<HttpSslStats> {
        self.http_ssl.borrow_mut().entry(stat_prefix.to_string()).or_default().clone()
    }

    pub fn host(&self, cluster: &str, addr: SocketAddr) -> Rc<HostStats> {
        self.hosts.borrow_mut().entry((cluster.to_string(), addr)).or_default().clone()
    }

    /// Forgets hosts that left every cluster and hold no connection, so churning DNS answers (pods
    /// coming and going) do not grow the table without bound.
    pub fn retain_hosts(&self, keep: impl Fn(&str, &SocketAddr) -> bool) {
        self.hosts
            .borrow_mut()
            .retain(|(c, a), h| keep(c, a) || h.cx_active.get() > 0 || h.rq_active.get() > 0);
    }

    pub fn dump(&self) -> StatsDump {
        let mut out = StatsDump::default();
        for ((cluster, addr), h) in self.hosts.borrow().iter() {
            let d = HostDump {
                cx_active: h.cx_active.get(),
                cx_total: h.cx_total.get(),
                rq_active: h.rq_active.get(),
                rq_total: h.rq_total.get(),
                rq_success: h.rq_success.get(),
                rq_error: h.rq_error.get(),
            };
            out.hosts.insert((cluster.clone(), *addr), d);
        }
        self.http1.dump(&Scope::Http1, &mut out);
        self.http2.dump(&Scope::Http2, &mut out);
        for (prefix, s) in self.http.borrow().iter() {
            s.dump(&Scope::Http(prefix.clone()), &mut out);
        }
        for (prefix, s) in self.tcp.borrow().iter() {
            s.dump(&Scope::Tcp(prefix.clone()), &mut out);
        }
        for (name, s) in self.clusters.borrow().iter() {
            s.dump(&Scope::Cluster(name.clone()), &mut out);
        }
        for (name, s) in self.listeners.borrow().iter() {
            s.dump(&Scope::Listener(name.clone()), &mut out);
        }
        for (name, s) in self.workers.borrow().iter() {
            s.dump(&Scope::Listener(name.clone()), &mut out);
        }
        for (prefix, s) in self.rate_limits.borrow().iter() {
            s.dump(&Scope::LocalRateLimit(prefix.clone()), &mut out);
        }
        for (prefix, s) in self.faults.borrow().iter() {
            s.dump(&Scope::Fault(prefix.clone()), &mut out);
        }
        for (prefix, s) in self.net_rate_limits.borrow().iter() {
            s.dump(&Scope::NetLocalRateLimit(prefix.clone()), &mut out);
        }
        for (prefix, s) in self.connection_limits.borrow().iter() {
            s.dump(&Scope::ConnectionLimit(prefix.clone()), &mut out);
        }
        for (prefix, s) in self.cors.borrow().iter() {
            s.dump(&Scope::HttpFilter(prefix.clone(), "cors"), &mut out);
        }
        for (prefix, s) in self.csrf.borrow().iter() {
            s.dump(&Scope::HttpFilter(prefix.clone(), "csrf"), &mut out);
        }
        for (prefix, s) in self.jwt_authn.borrow().iter() {
            s.dump(&Scope::JwtAuthn(prefix.clone()), &mut out);
        }
        for ((hcm, rules), s) in self.rbac.borrow().iter() {
            s.dump(&Scope::Rbac { hcm: hcm.clone(), rules: rules.clone() }, &mut out);
        }
        for ((hcm, rules), s) in self.rbac_shadow.borrow().iter() {
            s.dump(&Scope::Rbac { hcm: hcm.clone(), rules: rules.clone() }, &mut out);
        }
        for ((prefix, rules), s) in self.net_rbac.borrow().iter() {
            s.dump(&Scope::NetRbac { prefix: prefix.clone(), rules: rules.clone() }, &mut out);
        }
        for ((prefix, rules), s) in self.net_rbac_shadow.borrow().iter() {
            s.dump(&Scope::NetRbac { prefix: prefix.clone(), rules: rules.clone() }, &mut out);
        }
        for (prefix, s) in self.ext_authz.borrow().iter() {
            s.dump(&Scope::HttpFilter(prefix.clone(), "ext_authz"), &mut out);
        }
        for (name, s) in self.cluster_ext_authz.borrow().iter() {
            let scope = Scope::Cluster(name.clone());
            s.ok.dump(&scope, "ext_authz.ok", &mut out);
            s.denied.dump(&scope, "ext_authz.denied", &mut out);
            s.error.dump(&scope, "ext_authz.error", &mut out);
            s.failure_mode_allowed.dump(&scope, "ext_authz.failure_mode_allowed", &mut out);
        }
        for ((prefix, rest), s) in self.compressors.borrow().iter() {
            s.dump(&Scope::Compressor(prefix.clone(), rest.clone()), &mut out);
        }
        for (scope, s) in self.ssl.borrow().iter() {
            s.dump(scope, &mut out);
        }
        for (cluster, s) in self.cluster_http2.borrow().iter() {
            s.dump(&Scope::Cluster(cluster.clone()), &mut out);
        }
        for (prefix, s) in self.http_ssl.borrow().iter() {
            s.dump(&Scope::Http(prefix.clone()), &mut out);
        }
        if let Some(s) = self.tls_inspector.borrow().as_ref() {
            s.dump(&Scope::TlsInspector, &mut out);
        }
        out
    }
}

impl StatsDump {
    pub fn push(&mut self, scope: Scope, name: &'static str, value: Value) {
        self.entries.push(Entry { scope, name, value });
    }

    /// Sums counters and gauges and adds histograms of the same stat; sorted by full name.
    pub fn merge(dumps: impl IntoIterator<Item = StatsDump>) -> StatsDump {
        let mut merged: BTreeMap<(String, &'static str), Entry> = BTreeMap::new();
        let mut hosts: BTreeMap<(String, SocketAddr), HostDump> = BTreeMap::new();
        for dump in dumps {
            for (k, h) in &dump.hosts {
                hosts.entry(k.clone()).or_default().add(h);
            }
            for e in dump.entries {
                let key = (e.scope.prefix(), e.name);
                match merged.get_mut(&key) {
                    None => {
                        merged.insert(key, e);
                    }
                    Some(m) => match (&mut m.value, e.value) {
                        (Value::Counter(a), Value::Counter(b)) => *a += b,
                        (Value::Gauge(a), Value::Gauge(b)) => *a += b,
                        (Value::Histogram(a), Value::Histogram(b)) => {
                            // Same bounds everywhere: addition cannot fail.
                            let _ = a.add(&*b);
                        }
                        _ => {}
                    },
                }
            }
        }
        StatsDump { entries: merged.into_values().collect(), hosts }
    }
}

// TLS: Envoy's `ssl.*` per listener and cluster, and a connection manager's TLS connections.

/// `cluster.<name>.http2.*`: the counters of Envoy's HTTP/2 codec that skiff's HTTP/2 client
/// keeps (made, as Envoy makes its set, with the cluster's first HTTP/2 connection).
#[derive(Default, Debug)]
pub struct UpstreamHttp2Stats {
    /// RST_STREAM received.
    pub rx_reset: Counter,
    /// RST_STREAM sent.
    pub tx_reset: Counter,
    pub streams_active: Gauge,
    /// Set with the cluster's first HTTP/2 connection: shown from then on.
    pub made: std::cell::Cell<bool>,
}

impl UpstreamHttp2Stats {
    pub fn dump(&self, scope: &Scope, out: &mut StatsDump) {
        if !self.made.get() {
            return;
        }
        self.rx_reset.dump(scope, "http2.rx_reset", out);
        self.tx_reset.dump(scope, "http2.tx_reset", out);
        self.streams_active.dump(scope, "http2.streams_active", out);
    }
}

/// `<listener or cluster>.ssl.*`.
#[derive(Default, Debug)]
pub struct SslStats {
    pub handshake: Counter,
    pub connection_error: Counter,
    pub no_certificate: Counter,
    pub fail_verify_no_cert: Counter,
    pub fail_verify_error: Counter,
    pub fail_verify_san: Counter,
    pub fail_verify_cert_hash: Counter,
    pub session_reused: Counter,
    pub tls12: Counter,
    pub tls13: Counter,
}

impl SslStats {
    pub fn dump(&self, scope: &Scope, out: &mut StatsDump) {
        let always = [
            ("ssl.handshake", &self.handshake),
            ("ssl.connection_error", &self.connection_error),
            ("ssl.no_certificate", &self.no_certificate),
            ("ssl.fail_verify_no_cert", &self.fail_verify_no_cert),
            ("ssl.fail_verify_error", &self.fail_verify_error),
            ("ssl.fail_verify_san", &self.fail_verify_san),
            ("ssl.fail_verify_cert_hash", &self.fail_verify_cert_hash),
            ("ssl.session_reused", &self.session_reused),
        ];
        for (name, c) in always {
            c.dump(scope, name, out);
        }
        // Envoy makes a version's counter when a handshake first uses it.
        for (name, c) in [("ssl.versions.TLSv1.2", &self.tls12), ("ssl.versions.TLSv1.3", &self.tls13)] {
            if c.get() != 0 {
                out.entries.push(Entry { scope: scope.clone(), name, value: Value::Counter(c.get()) });
            }
        }
    }
}

/// `http.<stat_prefix>.downstream_cx_ssl_*`: a connection manager's TLS connections.
#[derive(Default, Debug)]
pub struct HttpSslStats {
    pub downstream_cx_ssl_total: Counter,
    pub downstream_cx_ssl_active: Gauge,
}

impl HttpSslStats {
    pub fn dump(&self, scope: &Scope, out: &mut StatsDump) {
        self.downstream_cx_ssl_total.dump(scope, "downstream_cx_ssl_total", out);
        self.downstream_cx_ssl_active.dump(scope, "downstream_cx_ssl_active", out);
    }
}

/// A listener's name in stats, from the address it is bound on: `127.0.0.1_10000` (Envoy's form;
/// an IPv6 address keeps its brackets, its colons become underscores as Envoy sanitises them).
pub fn listener_stat_name(bound: SocketAddr) -> String {
    match bound {
        SocketAddr::V4(a) => format!("{}_{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}]_{}", a.ip(), a.port()).replace(':', "_"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_shards_sums_counters_and_histograms() {
        let (a, b) = (ShardStats::default(), ShardStats::default());
        for s in [&a, &b] {
            let c = s.cluster("backend");
            c.upstream_rq_total.inc();
            c.upstream_rq_time.record_us(1500);
        }
        a.cluster("backend").upstream_rq_total.inc();
        let merged = StatsDump::merge([a.dump(), b.dump()]);
        let total =
            merged.entries.iter().find(|e| e.full_name() == "cluster.backend.upstream_rq_total").unwrap();
        assert!(matches!(total.value, Value::Counter(3)));
        let time =
            merged.entries.iter().find(|e| e.full_name() == "cluster.backend.upstream_rq_time").unwrap();
        let Value::Histogram(h) = &time.value else { panic!("histogram") };
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn stats_survive_a_lookup_by_name() {
        let s = ShardStats::default();
        s.http("ingress").downstream_rq_total.inc();
        assert_eq!(s.http("ingress").downstream_rq_total.get(), 1);
    }
}
