//! The typed, validated configuration: what `config::load_*` hands to the rest of skiff.
//!
//! Every Envoy spelling (v2 `config:`/`hosts:`, v3 `typed_config`/`load_assignment`) is folded into
//! this one model, so nothing downstream knows which version a file was written in. Values are
//! already checked (durations parsed, enums known, route clusters exist), but host names are not
//! resolved: that is the control loop's job.

use std::net::SocketAddr;
use std::time::Duration;

/// The whole bootstrap file.
#[derive(Debug, Clone, PartialEq)]
pub struct Bootstrap {
    pub admin: Option<Admin>,
    /// Listeners whose network filter is the http_connection_manager.
    pub listeners: Vec<Listener>,
    pub clusters: Vec<Cluster>,
    /// Listeners whose network filter is `envoy.filters.network.tcp_proxy`. One entry per filter
    /// chain: the entries of one listener (in either list) share its name, address and socket, and
    /// differ by their `chain`.
    pub tcp_listeners: Vec<TcpListener>,
    /// `dynamic_resources` from files, and which listeners and clusters came from them.
    pub xds: Xds,
    /// `static_resources.secrets` for `/config_dump` (contexts hold what they were built from).
    pub secrets: Vec<super::tls::SecretDump>,
}

/// Which file a resource came from (defined with the field paths that point into it).
pub use super::error::Doc;

/// Where resources come from: `path_config_source`, a file re-read when it is replaced, or a
/// management server (`server`), whose resources then travel under `path` as a name (see
/// `ServerSource::path`): errors name it, nothing reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathSource {
    pub path: std::path::PathBuf,
    /// `watched_directory.path`: the directory whose renames signal an update (a Kubernetes
    /// ConfigMap's `..data` swap).
    pub watched_directory: Option<std::path::PathBuf>,
    pub server: Option<ServerSource>,
}

/// A management server's stream: `ads: {}` (the `ads_config` stream) or an `api_config_source`
/// of `api_type: GRPC` or `DELTA_GRPC` (or REST polling).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSource {
    /// The static cluster the stream runs to (`grpc_services[0].envoy_grpc.cluster_name`).
    pub cluster: String,
    /// One aggregated stream for every type (ADS), or a stream per type.
    pub ads: bool,
    /// Incremental xDS (`DELTA_GRPC`): `DeltaDiscoveryRequest`s, resources sent as they change.
    pub delta: bool,
    /// The resource this source fetches for an RDS or EDS subscription (route configuration or
    /// EDS service name); empty for listeners and clusters (every resource).
    pub resource: String,
    /// `initial_fetch_timeout` (default 15 s; zero: none).
    pub initial_fetch_timeout: std::time::Duration,
    /// `api_type: REST`: JSON polling over HTTP/1.1 instead of a gRPC stream.
    pub rest: Option<RestPolling>,
}

/// A REST source's `refresh_delay` (between polls) and `request_timeout` (per poll, default 1 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestPolling {
    pub refresh_delay: std::time::Duration,
    pub request_timeout: std::time::Duration,
}

impl ServerSource {
    /// The name its resources of `kind` ("lds", "cds", "rds", "eds") travel under.
    pub fn path(&self, kind: &str) -> std::path::PathBuf {
        server_path(&self.stream_name(), kind, &self.resource)
    }

    /// "ads", "grpc:<cluster>", "delta:<cluster>" or "rest:<cluster>".
    pub fn stream_name(&self) -> String {
        match (self.ads, self.delta, self.rest.is_some()) {
            (true, _, _) => "ads".to_string(),
            (false, true, _) => format!("delta:{}", self.cluster),
            (false, false, false) => format!("grpc:{}", self.cluster),
            (false, false, true) => format!("rest:{}", self.cluster),
        }
    }
}

/// The name under which resources of `kind` from a management server's `stream` (see
/// `ServerSource::stream_name`) travel: "xds:ads/lds", "xds:grpc:<cluster>/rds/<route config
/// name>", ...; `resource` is empty for LDS and CDS.
pub fn server_path(stream: &str, kind: &str, resource: &str) -> std::path::PathBuf {
    match resource {
        "" => format!("xds:{stream}/{kind}").into(),
        name => format!("xds:{stream}/{kind}/{name}").into(),
    }
}

/// A connection manager's `rds`: a route configuration by name from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rds {
    pub route_config_name: String,
    pub source: PathSource,
    /// The version of the file the route configuration came from; None while it has none.
    pub applied: Option<Applied>,
}

/// An EDS cluster's `eds_cluster_config`: its endpoints by `service_name` from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eds {
    /// The `cluster_name` of its `ClusterLoadAssignment` (the cluster's own name when not given).
    pub service_name: String,
    /// Whether `service_name` was given (the dump writes it back only then).
    pub service_name_given: bool,
    pub source: PathSource,
    /// The version of the file the endpoints came from; None while it has none.
    pub applied: Option<Applied>,
}

/// The version of one applied resource file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub version_info: String,
    /// When the file that holds this version was read.
    pub last_updated: std::time::SystemTime,
}

/// `dynamic_resources` and what they contributed to this bootstrap.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Xds {
    pub lds: Option<PathSource>,
    pub cds: Option<PathSource>,
    /// The route configuration files the connection managers' `rds` name, each once.
    pub rds: Vec<PathSource>,
    /// The endpoint files EDS clusters name, each once.
    pub eds: Vec<PathSource>,
    /// The applied version of each file (None: that file has contributed nothing yet).
    pub lds_applied: Option<Applied>,
    pub cds_applied: Option<Applied>,
    /// The bootstrap's `node.id` and `node.cluster` (empty when not given): Envoy needs both, or
    /// their command-line forms, to subscribe to anything.
    pub node_id: String,
    pub node_cluster: String,
    /// The bootstrap's `node.locality` and `node.metadata`, as given, for a management server.
    pub node_locality: Option<serde_json::Value>,
    pub node_metadata: Option<serde_json::Value>,
    /// `ads_config`: the aggregated stream `ads: {}` sources use.
    pub ads: Option<ServerSource>,
    /// Names of the listeners (HTTP and TCP) and clusters that came from the files.
    pub dynamic_listeners: Vec<String>,
    pub dynamic_clusters: Vec<String>,
}

impl Xds {
    pub fn source(&self, doc: Doc) -> Option<&PathSource> {
        match doc {
            Doc::Lds => self.lds.as_ref(),
            Doc::Cds => self.cds.as_ref(),
            Doc::Rds(_) | Doc::Eds(_) => None,
        }
    }

    pub fn applied(&self, doc: Doc) -> Option<&Applied> {
        match doc {
            Doc::Lds => self.lds_applied.as_ref(),
            Doc::Cds => self.cds_applied.as_ref(),
            Doc::Rds(_) | Doc::Eds(_) => None,
        }
    }
}

/// Where a filter chain sits on its listener, and which connections it takes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChainSlot {
    /// Its position in `filter_chains`; `DEFAULT_CHAIN` for `default_filter_chain`.
    pub index: u32,
    pub matcher: super::chain_match::ChainMatch,
    /// The listener's `envoy.filters.listener.tls_inspector` (same on every chain of it).
    pub inspector: Option<Inspector>,
}

/// A listener's TLS inspector and how long it waits for the client's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inspector {
    /// `listener_filters_timeout`, Envoy's default 15 s; None (`0s`): no limit.
    pub timeout: Option<Duration>,
    /// `continue_on_listener_filters_timeout`: past the limit, pick a chain with what is known
    /// (a plaintext connection) rather than close.
    pub continue_on_timeout: bool,
}

/// `ChainSlot::index` of a listener's `default_filter_chain`.
pub const DEFAULT_CHAIN: u32 = u32::MAX;

/// A listener that relays bytes to a cluster (`envoy.filters.network.tcp_proxy`).
#[derive(Debug, Clone, PartialEq)]
pub struct TcpListener {
    pub name: String,
    pub address: SocketAddr,
    pub proxy: TcpProxy,
    /// The chain's `DownstreamTlsContext`: TLS is terminated before the relay.
    pub tls: Option<super::tls::ListenerTls>,
    /// The network filters before the tcp_proxy, in config order.
    pub net_filters: Vec<NetFilter>,
    pub chain: ChainSlot,
}

/// A network filter that runs on each accepted connection before the terminal one (the
/// connection manager or tcp_proxy) takes it.
#[derive(Debug, Clone, PartialEq)]
pub enum NetFilter {
    /// `envoy.filters.network.local_ratelimit`.
    LocalRateLimit(NetLocalRateLimit),
    /// `envoy.filters.network.connection_limit`.
    ConnectionLimit(ConnectionLimit),
    /// `envoy.filters.network.rbac`.
    Rbac(NetRbac),
}

/// `envoy.filters.network.rbac` (enforcement ONE_TIME_ON_FIRST_BYTE): the enforced and the shadow
/// rules, with no `header` rule (refused at load, as Envoy refuses it; a `url_path` rule never
/// matches a connection).
#[derive(Debug, Clone, PartialEq)]
pub struct NetRbac {
    /// `<stat_prefix>.rbac.*`, without a trailing dot (Envoy's scope adds one).
    pub stat_prefix: String,
    pub rules: Option<RbacRules>,
    pub shadow_rules: Option<RbacRules>,
    /// Joined into `<stat_prefix>.rbac.<shadow_rules_stat_prefix>.shadow_allowed` when not empty.
    pub shadow_rules_stat_prefix: String,
}

/// `envoy.filters.network.local_ratelimit`: a connection that finds no token is closed.
#[derive(Debug, Clone, PartialEq)]
pub struct NetLocalRateLimit {
    /// `local_rate_limit.<stat_prefix>.*`.
    pub stat_prefix: String,
    pub token_bucket: TokenBucket,
    /// `runtime_enabled.default_value` (enabled when absent).
    pub enabled: bool,
}

/// `envoy.filters.network.connection_limit`: at most `max_connections` open at once.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionLimit {
    /// `connection_limit.<stat_prefix>.*`.
    pub stat_prefix: String,
    /// At least 1.
    pub max_connections: u64,
    /// How long a refused connection stays open (read nothing) before it is closed.
    pub delay: Option<Duration>,
    /// `runtime_enabled.default_value` (enabled when absent).
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TcpProxy {
    /// `tcp.<stat_prefix>.*`.
    pub stat_prefix: String,
    /// `cluster` or `weighted_clusters` (picked per connection), checked to exist at load.
    pub cluster: ClusterSpecifier,
    /// `idle_timeout`, Envoy's default 1 h; `0s` = never (`NEVER`).
    pub idle_timeout: Duration,
    /// `max_connect_attempts`, Envoy's default 1 (at least 1).
    pub max_connect_attempts: u32,
    pub access_logs: Vec<AccessLog>,
}

/// An `upgrade_configs` entry (connection manager or route): whether requests asking for
/// `Upgrade: <upgrade_type>` may become a byte relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeConfig {
    /// Lower-cased: matched without regard to case, as Envoy does.
    pub upgrade_type: String,
    /// `enabled`, default true.
    pub enabled: bool,
}

impl UpgradeConfig {
    /// Whether `kind` may upgrade: a route entry for the type decides (`enabled`); without one,
    /// the connection manager's entry does; a type neither lists is refused (Envoy's rule).
    pub fn allowed(kind: &str, hcm: &[UpgradeConfig], route: Option<&[UpgradeConfig]>) -> bool {
        let find = |list: &[UpgradeConfig]| {
            list.iter().find(|u| u.upgrade_type.eq_ignore_ascii_case(kind)).map(|u| u.enabled)
        };
        match route.and_then(find) {
            Some(enabled) => enabled,
            None => find(hcm).unwrap_or(false),
        }
    }
}

impl Bootstrap {
    /// Every TLS context's certificates: listener chains (HTTP, then TCP), then clusters, each
    /// in config order (`/certs`'s order).
    pub fn tls_certs(&self) -> impl Iterator<Item = &super::tls::ContextCerts> {
        let listeners = self.listeners.iter().filter_map(|l| l.tls.as_ref());
        let tcp = self.tcp_listeners.iter().filter_map(|l| l.tls.as_ref());
        let downstream = listeners.chain(tcp).map(|t| &t.context.certs);
        downstream.chain(self.clusters.iter().filter_map(|c| c.tls.as_ref()).map(|t| &t.certs))
    }

    /// Every SDS secret the TLS contexts use, each once, in `tls_certs` order.
    pub fn sds_secrets(&self) -> Vec<std::sync::Arc<super::secrets::Secret>> {
        let mut out: Vec<std::sync::Arc<super::secrets::Secret>> = Vec::new();
        for s in self.tls_certs().flat_map(|c| c.secrets()) {
            if !out.iter().any(|o| std::sync::Arc::ptr_eq(o, s)) {
                out.push(s.clone());
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    pub address: SocketAddr,
    /// `access_log_path` (v2) or the path of the first file `access_log` (v3).
    pub access_log_path: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    pub name: String,
    pub address: SocketAddr,
    pub hcm: HttpConnectionManager,
    /// Its chain's `transport_socket` with `DownstreamTlsContext`; None: plaintext.
    pub tls: Option<super::tls::ListenerTls>,
    /// The network filters before the connection manager, in config order.
    pub net_filters: Vec<NetFilter>,
    pub chain: ChainSlot,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpConnectionManager {
    pub stat_prefix: String,
    /// Inline, or from `rds`'s file (empty until that file names it).
    pub route_config: RouteConfig,
    /// `rds`: where `route_config` comes from.
    pub rds: Option<Rds>,
    /// In order; the last one is the router.
    pub http_filters: Vec<HttpFilter>,
    /// `max_request_headers_kb`, Envoy's default 60.
    pub max_request_headers_kb: u32,
    /// `request_headers_timeout`; skiff defaults to 10 s where Envoy leaves it off, because an
    /// unbounded header read is a slow-loris hole.
    pub request_headers_timeout: Duration,
    /// `common_http_protocol_options.idle_timeout`, Envoy's default 1 h.
    pub idle_timeout: Duration,
    /// `common_http_protocol_options.max_requests_per_connection`: the response to the last
    /// request a client connection may carry says `connection: close`, and the connection closes
    /// after it (requests pipelined behind it are not read). None (unset or 0) = no limit.
    pub max_requests_per_connection: Option<u32>,
    /// `common_http_protocol_options.max_connection_duration`, from accept: an idle connection
    /// past it closes; one with a request in flight closes after that request. None = no limit.
    pub max_connection_duration: Option<Duration>,
    /// The per-request limits: `stream_idle_timeout` (Envoy's default 5 min),
    /// `request_timeout`, `common_http_protocol_options.max_stream_duration`.
    pub stream_limits: StreamLimits,
    /// `delayed_close_timeout`, Envoy's default 1 s: how long a connection skiff closes after a
    /// reply waits for the client to close first. None (`0s`) = close at once.
    pub delayed_close_timeout: Option<Duration>,
    /// `common_http_protocol_options.max_headers_count`, Envoy's default 100: a request with more
    /// header lines is answered 431.
    pub max_headers_count: usize,
    /// `common_http_protocol_options.headers_with_underscores_action`, default ALLOW.
    pub headers_with_underscores: UnderscoresAction,
    /// `generate_request_id`, default true.
    pub generate_request_id: bool,
    /// `server_name`, default "envoy" as Envoy sends it (dashboards and tests key on it).
    pub server_name: String,
    /// `access_log` entries, parsed and kept for the observability work.
    pub access_logs: Vec<AccessLog>,
    /// `use_remote_address`, default false: whether the peer address (rather than the last
    /// `x-forwarded-for` entry) is the client address, as Envoy decides for XFF and `x-envoy-external-address`.
    pub use_remote_address: bool,
    /// `forward_client_cert_details` and `set_current_client_cert_details`: what the upstream gets
    /// as `x-forwarded-client-cert`.
    pub client_cert: ClientCert,
    /// `xff_num_trusted_hops`, default 0.
    pub xff_num_trusted_hops: u32,
    /// `tracing`, with its provider resolved: the HCM's own `tracing.provider` (v3) or else the
    /// bootstrap's `tracing.http` (v2 style). None when the HCM has no `tracing` block, or has one
    /// but no provider is configured anywhere (warned about).
    pub tracing: Option<Tracing>,
    /// `http_protocol_options.accept_http_10`, default false: Envoy answers HTTP/1.0 with 426.
    pub accept_http_10: bool,
    /// `http_protocol_options.default_host_for_http_10`: the Host given to an HTTP/1.0 request
    /// that has none.
    pub default_host_for_http_10: Option<String>,
    /// `upgrade_configs`.
    pub upgrades: Vec<UpgradeConfig>,
    /// `codec_type`.
    pub codec: HttpCodec,
    /// `http2_protocol_options` (Envoy's defaults when unset).
    pub http2: Http2Options,
}

/// `codec_type`: which protocol a client connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpCodec {
    /// HTTP/2 when the client opens with the HTTP/2 connection preface (prior knowledge, or after
    /// ALPN `h2`), else HTTP/1.1.
    Auto,
    Http1,
    Http2,
}

/// Envoy's `Http2ProtocolOptions`, the SETTINGS and limits of an HTTP/2 connection: a connection
/// manager's for its clients' connections, a cluster's for its connections to upstreams (there
/// `max_concurrent_streams` also bounds how many streams one pooled connection carries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2Options {
    /// `max_concurrent_streams`, Envoy's default 2147483647; a stream beyond it is refused
    /// (RST_STREAM REFUSED_STREAM).
    pub max_concurrent_streams: u32,
    /// `initial_stream_window_size`, Envoy's default 256 MiB.
    pub initial_stream_window_size: u32,
    /// `initial_connection_window_size`, Envoy's default 256 MiB.
    pub initial_connection_window_size: u32,
    /// `hpack_table_size`, Envoy's default 4096: the HPACK decoder table the client may use.
    pub hpack_table_size: u32,
}

impl Default for Http2Options {
    fn default() -> Self {
        Http2Options {
            max_concurrent_streams: 2_147_483_647,
            initial_stream_window_size: 268_435_456,
            initial_connection_window_size: 268_435_456,
            hpack_table_size: 4096,
        }
    }
}

/// The most header lines a head may have: the parser's fixed array (`http::MAX_HEADERS`, checked
/// equal by a test in `shard::request`), and Envoy's default `max_headers_count`.
pub const MAX_HEADERS_COUNT: usize = 100;

/// The connection manager's limits on each request (None = off, as Envoy's `0s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamLimits {
    /// `stream_idle_timeout`: no bytes either way for this long ends the request (504/408 `SI`).
    pub idle: Option<Duration>,
    /// `request_timeout`: the whole request must have arrived within this, from its head (408).
    pub request: Option<Duration>,
    /// `common_http_protocol_options.max_stream_duration`: the whole exchange, from its head.
    pub max_duration: Option<Duration>,
}

/// `headers_with_underscores_action`: what a header name with `_` in it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnderscoresAction {
    Allow,
    /// 400, before the request exists.
    RejectRequest,
    /// Not forwarded.
    DropHeader,
}

/// `strip_matching_host_port` / `strip_any_host_port`: whether the port comes off the Host before
/// the virtual host is chosen (and in the Host sent upstream), as Envoy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StripHostPort {
    /// The Host is matched as sent: `example.com:8080` does not match domain `example.com`.
    #[default]
    No,
    /// Only this port (the listener's) is stripped.
    Matching(u16),
    Any,
}

/// What one connection manager traces and where spans go.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracing {
    pub provider: TracingProvider,
    pub operation: TracingOperation,
    /// `random_sampling.value`: percent (0-100) of requests without an incoming sampling decision
    /// that are traced. Default 100.
    pub random_sampling: f64,
    /// `client_sampling.value`: percent of requests carrying `x-client-trace-id` that are force
    /// traced. Default 100.
    pub client_sampling: f64,
    /// `overall_sampling.value`: a cap applied after the other two. Default 100.
    pub overall_sampling: f64,
    /// `max_path_tag_length`, Envoy's default 256: the `http.url` tag is cut to this many bytes.
    pub max_path_tag_length: u32,
}

/// Envoy's tracing operation: which side of the call this proxy's span stands for.
///
/// v2 spells it `tracing.operation_name`; v3 removed that field and derives it from the listener's
/// `traffic_direction` (OUTBOUND → Egress, INBOUND → Ingress). With neither, skiff picks Ingress,
/// as Envoy does ("continuing legacy behavior", and INGRESS is v2's zero value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TracingOperation {
    /// The proxy sits in front of the local service: a SERVER span.
    Ingress,
    /// The proxy calls out to another service: a CLIENT span.
    Egress,
}

/// Where an HCM's spans go and in which wire formats its trace context travels.
#[derive(Debug, Clone, PartialEq)]
pub enum TracingProvider {
    Zipkin(ZipkinConfig),
    OpenTelemetry(OpenTelemetryConfig),
}

impl TracingProvider {
    /// The cluster the spans are sent to (checked to exist at load).
    pub fn collector_cluster(&self) -> &str {
        match self {
            TracingProvider::Zipkin(z) => &z.collector_cluster,
            TracingProvider::OpenTelemetry(o) => &o.collector_cluster,
        }
    }
}

/// `envoy.tracers.opentelemetry` (v3 `OpenTelemetryConfig`) over OTLP/gRPC: spans go to
/// `grpc_service.envoy_grpc.cluster_name` as `TraceService/Export` calls, and the trace context
/// travels as W3C `traceparent`/`tracestate` only.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenTelemetryConfig {
    /// `grpc_service.envoy_grpc.cluster_name`; an HTTP/2 cluster, checked at load.
    pub collector_cluster: String,
    /// `grpc_service.timeout`: the deadline of one Export call. None: no deadline of its own (the
    /// reporter's connect timeout still bounds a dead collector).
    pub timeout: Option<std::time::Duration>,
    /// `service_name`: the resource's `service.name`; Envoy's default "unknown_service:envoy".
    pub service_name: String,
    /// `set_telemetry_sdk_resource_attributes`, default true: the resource also says which
    /// telemetry SDK made the spans (`telemetry.sdk.name`, `.language`, `.version`).
    pub sdk_attributes: bool,
    /// `max_cache_size`, default 1024: the spans waiting for the reporter (the collector slow or
    /// away); beyond it a span is dropped and counted.
    pub max_cache_size: u32,
}

/// `envoy.tracers.zipkin` (v3 `ZipkinConfig`, v2 `envoy.zipkin` config). Only HTTP_JSON (v2 API)
/// reporting exists.
#[derive(Debug, Clone, PartialEq)]
pub struct ZipkinConfig {
    /// Checked to exist at load.
    pub collector_cluster: String,
    /// Default "/api/v2/spans".
    pub collector_endpoint: String,
    /// Whether new root traces get 128-bit ids. Default false.
    pub trace_id_128bit: bool,
    /// Whether an ingress (SERVER) span reuses the caller's span id, Zipkin's shared-span model.
    /// Default true.
    pub shared_span_context: bool,
    /// `Host` of the POST; None means the cluster name, as Envoy does.
    pub collector_hostname: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AccessLog {
    File { path: String, format: Option<String> },
    Stdout { format: Option<String> },
    Stderr { format: Option<String> },
}

#[derive(Debug, Clone, PartialEq)]
pub enum HttpFilter {
    Router,
    /// `envoy.filters.http.local_ratelimit`; `name` is the filter's `name`, the key its
    /// `typed_per_filter_config` entries are found by.
    LocalRateLimit {
        name: String,
        config: LocalRateLimit,
    },
    /// `envoy.filters.http.fault`.
    Fault {
        name: String,
        config: Fault,
    },
    /// `envoy.filters.http.cors`: its own config is empty; the policies are the routes' and
    /// virtual hosts' (`typed_per_filter_config` CorsPolicy, else their `cors` field).
    Cors {
        name: String,
    },
    /// `envoy.filters.http.csrf`.
    Csrf {
        name: String,
        config: Csrf,
    },
    /// `envoy.filters.http.jwt_authn`.
    JwtAuthn {
        name: String,
        config: Box<JwtAuthn>,
    },
    /// `envoy.filters.http.rbac`.
    Rbac {
        name: String,
        config: Rbac,
    },
    /// `envoy.filters.http.ext_authz` (its HTTP service).
    ExtAuthz {
        name: String,
        config: Box<ExtAuthz>,
    },
    /// `envoy.filters.http.compressor`.
    Compressor {
        name: String,
        config: Box<Compressor>,
    },
}

/// A `typed_per_filter_config` entry of a route or virtual host, by the filter name it is keyed by.
#[derive(Debug, Clone, PartialEq)]
pub enum PerFilterConfig {
    LocalRateLimit(LocalRateLimit),
    Fault(Fault),
    Cors(CorsPolicy),
    Csrf(Csrf),
    /// A whole `JwtAuthentication`: only as an `http_filters` entry's config.
    JwtAuthn(Box<JwtAuthn>),
    /// `jwt_authn`'s `PerRouteConfig`: only in `typed_per_filter_config`.
    JwtPerRoute(JwtPerRoute),
    /// `RBAC` at the connection manager, `RBACPerRoute.rbac` on a route or virtual host (whose
    /// stat prefixes are empty: a per-route config counts into the filter's own stats).
    Rbac(Rbac),
    ExtAuthz(Box<ExtAuthz>),
    ExtAuthzPerRoute(ExtAuthzPerRoute),
    /// The compressor's `CompressorPerRoute`: `disabled` (its only other field is refused).
    CompressorPerRoute {
        disabled: bool,
    },
}

/// `envoy.extensions.filters.http.compressor.v3.Compressor` (its response direction; the
/// deprecated top-level fields fold into the same), with Envoy's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Compressor {
    /// `compressor_library.name`: part of the stat names.
    pub library_name: String,
    pub library: CompressorLibrary,
    /// `common_config.enabled.default_value` (or `runtime_enabled`); true when absent.
    pub enabled: bool,
    pub min_content_length: u64,
    /// Lowercase; Envoy's default list when the config's is empty.
    pub content_types: Vec<String>,
    pub disable_on_etag_header: bool,
    pub uncompressible_response_codes: Vec<u16>,
    pub weaken_etag_on_compress: bool,
    /// The upstream request goes without `accept-encoding` (the filters after this one in the
    /// chain do not see it either, as in Envoy).
    pub remove_accept_encoding_header: bool,
    /// Wins a tie of q-values (the last such filter in the chain, as in Envoy).
    pub choose_first: bool,
    /// `response_direction_config` is set: the response counters are named `response.*`, as
    /// Envoy names them then (without it, its legacy unprefixed names).
    pub stats_response_prefix: bool,
}

/// `compressor_library`'s typed config, with Envoy's defaults.
#[derive(Debug, Clone, PartialEq)]
pub enum CompressorLibrary {
    Gzip {
        level: u32,
        strategy: GzipStrategy,
        memory_level: u32,
        window_bits: u32,
        chunk_size: u32,
    },
    /// `mode`: 0 generic, 1 text, 2 font (brotli's `BrotliEncoderMode`).
    Brotli {
        quality: u32,
        mode: u32,
        window_bits: u32,
        input_block_bits: u32,
        chunk_size: u32,
        disable_literal_context_modeling: bool,
    },
    /// `strategy`: 0 for zstd's default, else `ZSTD_strategy`.
    Zstd {
        level: u32,
        checksum: bool,
        strategy: u32,
        chunk_size: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GzipStrategy {
    Default,
    Filtered,
    HuffmanOnly,
    Rle,
    Fixed,
}

/// `type.matcher.v3.StringMatcher` (CORS's allowed origins, CSRF's additional origins, RBAC's
/// paths, names and SNI).
#[derive(Debug, Clone, PartialEq)]
pub struct StringMatcher {
    pub rule: StringRule,
    /// Applies to every rule but the regex, as in Envoy.
    pub ignore_case: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StringRule {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    /// RE2 syntax, checked to compile at load; matches the whole value.
    SafeRegex(String),
}

/// A CORS policy: a route's or virtual host's `cors` (`config.route.v3.CorsPolicy`) or the cors
/// filter's per-route `envoy.extensions.filters.http.cors.v3.CorsPolicy` (the same fields).
/// Unset fields stay unset (empty, None): the filter takes each field from the most specific
/// policy that sets it, as Envoy does.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CorsPolicy {
    pub allow_origins: Vec<StringMatcher>,
    pub allow_methods: String,
    pub allow_headers: String,
    pub expose_headers: String,
    pub max_age: String,
    pub allow_credentials: Option<bool>,
    pub allow_private_network_access: Option<bool>,
    pub forward_not_matching_preflights: Option<bool>,
    /// `filter_enabled.default_value`; None (absent) = enabled.
    pub filter_enabled: Option<Fraction>,
    /// `shadow_enabled.default_value`; None (absent) = not in shadow mode.
    pub shadow_enabled: Option<Fraction>,
}

/// `envoy.extensions.filters.http.ext_authz.v3.ExtAuthz` (an `http_service`, or a `grpc_service`
/// when `grpc` is set), with Envoy's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtAuthz {
    /// `http_service.server_uri.uri`: shown in /config_dump only (the check goes to `cluster`).
    pub uri: String,
    /// `http_service.server_uri.cluster`, or `grpc_service.envoy_grpc.cluster_name`.
    pub cluster: String,
    /// `http_service.server_uri.timeout` (0 means Envoy's 200 ms), or `grpc_service.timeout`.
    pub timeout: std::time::Duration,
    /// The check is a gRPC `Authorization/Check` call (`grpc_service`); the HTTP service's
    /// fields are then empty.
    pub grpc: Option<ExtAuthzGrpc>,
    pub path_prefix: String,
    /// `authorization_request.allowed_headers`: sent besides Envoy's fixed set.
    pub allowed_headers: Vec<StringMatcher>,
    /// `authorization_request.headers_to_add`: (lower-case name, value).
    pub headers_to_add: Vec<(String, String)>,
    pub allowed_upstream_headers: Vec<StringMatcher>,
    pub allowed_upstream_headers_to_append: Vec<StringMatcher>,
    /// Empty: every header of a denial but `host`.
    pub allowed_client_headers: Vec<StringMatcher>,
    pub allowed_client_headers_on_success: Vec<StringMatcher>,
    pub failure_mode_allow: bool,
    pub failure_mode_allow_header_add: bool,
    /// `status_on_error.code`, default 403.
    pub status_on_error: u16,
    pub with_request_body: Option<ExtAuthzBody>,
    /// Accepted fields `convert` warns about.
    pub warned: ExtAuthzWarned,
}

/// `grpc_service` of ext_authz (its `envoy_grpc` client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtAuthzGrpc {
    /// `envoy_grpc.authority`, else the cluster's name (the call's `:authority`, as Envoy's).
    pub authority: String,
    /// `initial_metadata`: (lower-case name, value), sent with every call.
    pub initial_metadata: Vec<(String, String)>,
}

/// `with_request_body`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtAuthzBody {
    pub max_request_bytes: u32,
    pub allow_partial_message: bool,
    /// A gRPC check sends the body as `raw_body` (bytes) instead of `body` (text).
    pub pack_as_bytes: bool,
}

/// The ext_authz fields skiff accepts and does not act on (see `unenforced`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExtAuthzWarned {
    pub dynamic_metadata_from_headers: bool,
    pub clear_route_cache: bool,
    pub include_peer_certificate: bool,
}

/// `ExtAuthzPerRoute`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtAuthzPerRoute {
    pub disabled: bool,
    /// `check_settings.disable_request_body_buffering`.
    pub disable_request_body_buffering: bool,
    /// `check_settings.with_request_body`: replaces the filter's.
    pub with_request_body: Option<ExtAuthzBody>,
    /// `check_settings.context_extensions` (sorted by key): a gRPC check's
    /// `attributes.context_extensions`.
    pub context_extensions: Vec<(String, String)>,
}

/// `envoy.extensions.filters.http.csrf.v3.CsrfPolicy`.
#[derive(Debug, Clone, PartialEq)]
pub struct Csrf {
    /// `filter_enabled.default_value` (required).
    pub filter_enabled: Fraction,
    /// `shadow_enabled.default_value`; absent = 0 %.
    pub shadow_enabled: Fraction,
    pub additional_origins: Vec<StringMatcher>,
}

/// `envoy.extensions.filters.http.rbac.v3.RBAC`: the enforced and the shadow rules, either absent
/// (no engine: the request goes on and nothing is counted for it).
#[derive(Debug, Clone, PartialEq)]
pub struct Rbac {
    pub rules: Option<RbacRules>,
    pub shadow_rules: Option<RbacRules>,
    /// Joined into `http.<prefix>.rbac.<rules_stat_prefix>.allowed` when not empty.
    pub rules_stat_prefix: String,
    pub shadow_rules_stat_prefix: String,
    /// `matcher`: when set, Envoy ignores `rules` and so does skiff.
    pub matcher: Option<RbacMatcher>,
    /// `shadow_matcher`: when set, `shadow_rules` are ignored.
    pub shadow_matcher: Option<RbacMatcher>,
}

/// The subset of `xds.type.matcher.v3.Matcher` RBAC reads: a `matcher_list` (the first entry
/// whose predicate matches gives the action) and `on_no_match`. Without a match and without
/// `on_no_match` the request is denied, as Envoy's matcher engine does.
#[derive(Debug, Clone, PartialEq)]
pub struct RbacMatcher {
    pub matchers: Vec<RbacFieldMatcher>,
    pub on_no_match: Option<RbacMatchAction>,
    /// The matcher as written, for `/config_dump`.
    pub source: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RbacFieldMatcher {
    pub predicate: RbacPredicate,
    pub on_match: RbacMatchAction,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RbacPredicate {
    /// `single_predicate`: the input's value, when there is one, against `value_match`.
    Single(RbacMatchInput, StringMatcher),
    Or(Vec<RbacPredicate>),
    And(Vec<RbacPredicate>),
    Not(Box<RbacPredicate>),
}

/// The inputs a predicate reads.
#[derive(Debug, Clone, PartialEq)]
pub enum RbacMatchInput {
    /// `HttpRequestHeaderMatchInput`: lower-cased name; several lines are joined with `,`.
    RequestHeader(String),
    DestinationIp,
    DestinationPort,
    /// The client address as the connection manager decided it (`x-forwarded-for` or the peer).
    SourceIp,
    DirectSourceIp,
    ServerName,
}

/// `envoy.config.rbac.v3.Action`.
#[derive(Debug, Clone, PartialEq)]
pub struct RbacMatchAction {
    pub name: String,
    pub action: RbacAction,
}

/// `config.rbac.v3.RBAC`.
#[derive(Debug, Clone, PartialEq)]
pub struct RbacRules {
    pub action: RbacAction,
    /// Sorted by name, as Envoy's engine keeps them: the first match names the effective policy.
    pub policies: Vec<RbacPolicy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RbacAction {
    Allow,
    Deny,
    /// Never denies; Envoy only marks the request for logging.
    Log,
}

/// A policy matches when any permission and any principal match.
#[derive(Debug, Clone, PartialEq)]
pub struct RbacPolicy {
    pub name: String,
    pub permissions: Vec<RbacPermission>,
    pub principals: Vec<RbacPrincipal>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RbacPermission {
    Any,
    Header(HeaderMatcher),
    /// `url_path.path`: the path without its query string.
    UrlPath(StringMatcher),
    And(Vec<RbacPermission>),
    Or(Vec<RbacPermission>),
    Not(Box<RbacPermission>),
    DestinationIp(CidrRange),
    DestinationPort(u16),
    /// `destination_port_range`: start inclusive, end exclusive.
    DestinationPortRange(u32, u32),
    RequestedServerName(StringMatcher),
}

#[derive(Debug, Clone, PartialEq)]
pub enum RbacPrincipal {
    Any,
    /// `authenticated`: a TLS peer certificate; with `principal_name`, one of its URI SANs, DNS
    /// SANs or its subject matches.
    Authenticated(Option<StringMatcher>),
    /// The connection's peer (`source_ip`, deprecated in Envoy but still read).
    SourceIp(CidrRange),
    DirectRemoteIp(CidrRange),
    /// The client address the connection manager decided (`x-forwarded-for` when not
    /// `use_remote_address`).
    RemoteIp(CidrRange),
    Header(HeaderMatcher),
    UrlPath(StringMatcher),
    And(Vec<RbacPrincipal>),
    Or(Vec<RbacPrincipal>),
    Not(Box<RbacPrincipal>),
}

/// `config.core.v3.CidrRange`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CidrRange {
    pub address: std::net::IpAddr,
    pub prefix_len: u8,
}

/// `envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit`, with Envoy's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalRateLimit {
    pub stat_prefix: String,
    /// None: no bucket, every request is allowed (Envoy's filter without `token_bucket`).
    pub token_bucket: Option<TokenBucket>,
    /// `filter_enabled.default_value`; absent = 0 %, as Envoy (the filter then does nothing).
    pub filter_enabled: Fraction,
    /// `filter_enforced.default_value`; absent = 0 % (rate-limited requests are only counted).
    pub filter_enforced: Fraction,
    /// `status.code`, default 429.
    pub status: u16,
    pub response_headers_to_add: Vec<HeaderValueOption>,
    pub request_headers_to_add_when_not_enforced: Vec<HeaderValueOption>,
    /// `rate_limited_as_resource_exhausted`: a gRPC request limited gets RESOURCE_EXHAUSTED
    /// instead of the UNAVAILABLE its 429 maps to.
    pub resource_exhausted: bool,
    /// `enable_x_ratelimit_headers: DRAFT_VERSION_03`.
    pub x_ratelimit_headers: bool,
}

/// `token_bucket`: `tokens_per_fill` every `fill_interval`, up to `max_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    pub max_tokens: u32,
    /// Default 1.
    pub tokens_per_fill: u32,
    pub fill_interval: Duration,
}

/// A `FractionalPercent` in parts per million (HUNDRED, TEN_THOUSAND and MILLION all fit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fraction {
    pub per_million: u32,
    /// Parts per million of one unit of the written denominator (10 000 for HUNDRED): a
    /// header-given numerator (`x-envoy-fault-*-percentage`) is over the same denominator.
    pub unit: u32,
}

impl Fraction {
    pub const NONE: Fraction = Fraction { per_million: 0, unit: 10_000 };
}

/// `envoy.extensions.filters.http.fault.v3.HTTPFault`.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub delay: Option<FaultDelay>,
    pub abort: Option<FaultAbort>,
    /// `headers`: every matcher must hold for a fault to apply.
    pub headers: Vec<HeaderMatcher>,
    /// `upstream_cluster`: only requests routed to this cluster.
    pub upstream_cluster: Option<String>,
    /// `downstream_nodes`: only requests whose `x-envoy-downstream-service-node` is one of these.
    pub downstream_nodes: Vec<String>,
    /// `max_active_faults`; None = no limit.
    pub max_active_faults: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultDelaySource {
    Fixed(Duration),
    /// `header_delay`: `x-envoy-fault-delay-request` (milliseconds).
    Header,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultDelay {
    pub source: FaultDelaySource,
    /// `percentage`; absent = 0 %, as Envoy.
    pub percentage: Fraction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAbortSource {
    Status(u16),
    /// `grpc_status`: HTTP 200 with this `grpc-status` (a request that is not gRPC gets the
    /// plain 200 local reply, as from Envoy).
    Grpc(u32),
    /// `header_abort`: `x-envoy-fault-abort-request` (an HTTP status), else
    /// `x-envoy-fault-abort-grpc-request` (a gRPC status).
    Header,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultAbort {
    pub source: FaultAbortSource,
    /// `percentage`; absent = 0 %, as Envoy.
    pub percentage: Fraction,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteConfig {
    pub name: String,
    pub virtual_hosts: Vec<VirtualHost>,
    pub request_headers_to_add: Vec<HeaderValueOption>,
    pub request_headers_to_remove: Vec<String>,
    pub response_headers_to_add: Vec<HeaderValueOption>,
    pub response_headers_to_remove: Vec<String>,
    /// From the connection manager that holds this route config: the route table is compiled
    /// from the route config alone, and host matching depends on it.
    pub strip_host_port: StripHostPort,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct VirtualHost {
    pub name: String,
    /// As written: exact, `*.suffix`, `prefix*`, `*`, each optionally with `:port`.
    pub domains: Vec<String>,
    pub routes: Vec<Route>,
    pub request_headers_to_add: Vec<HeaderValueOption>,
    pub request_headers_to_remove: Vec<String>,
    pub response_headers_to_add: Vec<HeaderValueOption>,
    pub response_headers_to_remove: Vec<String>,
    /// `typed_per_filter_config` entries of the filters skiff implements, by filter name.
    pub filter_configs: Vec<(String, PerFilterConfig)>,
    /// `cors`: read by the cors filter when no `typed_per_filter_config` policy applies.
    pub cors: Option<CorsPolicy>,
    /// `include_request_attempt_count` / `include_attempt_count_in_response`:
    /// `x-envoy-attempt-count` to the upstream / to the client.
    pub attempt_count: AttemptCount,
}

/// Where a virtual host reports a request's attempt number (`x-envoy-attempt-count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AttemptCount {
    pub upstream: bool,
    pub client: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: Option<String>,
    pub matcher: RouteMatch,
    pub action: RouteAction,
    pub request_headers_to_add: Vec<HeaderValueOption>,
    pub request_headers_to_remove: Vec<String>,
    pub response_headers_to_add: Vec<HeaderValueOption>,
    pub response_headers_to_remove: Vec<String>,
    /// `typed_per_filter_config` entries of the filters skiff implements, by filter name.
    pub filter_configs: Vec<(String, PerFilterConfig)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteMatch {
    pub path: PathMatch,
    /// `case_sensitive`, default true (applies to prefix and path).
    pub case_sensitive: bool,
    pub headers: Vec<HeaderMatcher>,
    pub query_parameters: Vec<QueryParameterMatcher>,
    /// `grpc: {}`: only gRPC requests (by their `content-type`) match.
    pub grpc: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PathMatch {
    Prefix(String),
    Path(String),
    /// `safe_regex.regex` (RE2 syntax; checked to compile at load). Matches the whole path
    /// without the query string.
    SafeRegex(String),
    /// `connect_matcher: {}`: CONNECT requests, which no other path match matches.
    Connect,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HeaderMatcher {
    /// Lower-cased.
    pub name: String,
    pub rule: HeaderMatchRule,
    pub invert_match: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HeaderMatchRule {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    SafeRegex(String),
    /// `present_match: true|false`; a matcher with no rule at all means "present".
    Present(bool),
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueryParameterMatcher {
    pub name: String,
    /// None: the parameter must be present, any value.
    pub exact: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RouteAction {
    /// Boxed: the largest action by far, and routes are many.
    Forward(Box<ForwardAction>),
    DirectResponse {
        status: u16,
        body: Option<String>,
    },
    Redirect(Redirect),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ForwardAction {
    pub cluster: ClusterSpecifier,
    /// `timeout`: Envoy's default 15 s; `0s` means none.
    pub timeout: Option<Duration>,
    pub prefix_rewrite: Option<String>,
    pub host_rewrite_literal: Option<String>,
    pub retry_policy: Option<RetryPolicy>,
    /// `upgrade_configs`: overrides the connection manager's per upgrade type.
    pub upgrades: Vec<UpgradeConfig>,
    /// The route's CONNECT `upgrade_configs` entry has a `connect_config`: skiff answers the
    /// CONNECT itself and tunnels the bytes to the cluster's host (Envoy's termination).
    pub terminate_connect: bool,
    /// `idle_timeout`: replaces the connection manager's `stream_idle_timeout` for this route.
    /// None = not set; Some(None) = `0s`, which turns the connection manager's off too.
    pub idle_timeout: Option<Option<Duration>>,
    /// `max_stream_duration`.
    pub max_stream_duration: RouteStreamDuration,
    /// `max_grpc_timeout` / `grpc_timeout_offset` (deprecated in Envoy, still honoured by it).
    pub grpc_timeout: Option<GrpcRouteTimeout>,
    /// `hash_policy`: the request's hash for RING_HASH and MAGLEV clusters.
    pub hash_policy: Vec<super::lb::HashPolicy>,
    /// `request_mirror_policies` (and v2 `request_mirror_policy`).
    pub mirrors: Vec<MirrorPolicy>,
    /// `cluster_not_found_response_code`: the answer when `cluster_header` names no cluster
    /// (SERVICE_UNAVAILABLE 503, NOT_FOUND 404 or INTERNAL_SERVER_ERROR 500).
    pub cluster_not_found: u16,
    /// `cors`: read by the cors filter when no `typed_per_filter_config` policy applies.
    pub cors: Option<CorsPolicy>,
}

/// Where a mirror sends its copies.
#[derive(Debug, Clone, PartialEq)]
pub enum MirrorTarget {
    /// `cluster` (checked to exist at load).
    Cluster(String),
    /// `cluster_header` (lower-cased): the cluster the request's header names, if it exists.
    Header(String),
}

/// One request mirror: a copy of each request (a sampled fraction) goes to `cluster`, its Host
/// suffixed `-shadow` unless disabled, and its response is discarded.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorPolicy {
    pub target: MirrorTarget,
    /// `runtime_fraction.default_value` (absent: every request).
    pub fraction: Fraction,
    pub shadow_suffix: bool,
}

/// A route's `max_stream_duration` block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RouteStreamDuration {
    /// The route has a `max_stream_duration` (even an empty one): Envoy then gives its requests
    /// no route timeout (`timeout` and `max_grpc_timeout` are not used, "new timeouts").
    pub set: bool,
    /// `max_stream_duration`: replaces the connection manager's for this route, as `idle_timeout`.
    pub max: Option<Option<Duration>>,
    /// `grpc_timeout_header_max`: when set, a request's `grpc-timeout` header is its max stream
    /// duration, capped at this (Some(None): `0s`, not capped).
    pub grpc_header_max: Option<Option<Duration>>,
    /// `grpc_timeout_header_offset`: taken off the header's value.
    pub grpc_header_offset: Duration,
}

/// A route's `max_grpc_timeout` with its `grpc_timeout_offset`: a gRPC request's route timeout is
/// its `grpc-timeout` less the offset (when that leaves some), capped at `max`; without the
/// header, `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcRouteTimeout {
    /// None: `0s`, no cap (and no timeout for a request without the header).
    pub max: Option<Duration>,
    pub offset: Duration,
}

impl GrpcRouteTimeout {
    /// The route timeout of a gRPC request whose `grpc-timeout` says `header` (Envoy's
    /// `FilterUtility::finalTimeout`); None: no timeout.
    pub fn route_timeout(&self, header: Option<Duration>) -> Option<Duration> {
        let mut timeout = header.unwrap_or(Duration::ZERO);
        // The offset only where it leaves some time: zero is no timeout.
        if self.offset < timeout {
            timeout -= self.offset;
        }
        match self.max {
            Some(max) if timeout.is_zero() || timeout > max => Some(max),
            _ => (!timeout.is_zero()).then_some(timeout),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ClusterSpecifier {
    /// `cluster: NAME` — checked to exist at load.
    Single(String),
    /// `cluster_header` (lower-cased): the cluster a request header names, looked up per request.
    Header(String),
    /// `weighted_clusters.clusters`, each checked to exist at load.
    Weighted(Vec<WeightedCluster>),
}

/// One entry of `weighted_clusters.clusters`. Its header edits (a route's only; tcp_proxy has
/// none) apply when this entry is picked, before the route's (Envoy's order).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WeightedCluster {
    pub name: String,
    pub weight: u32,
    pub request_headers_to_add: Vec<HeaderValueOption>,
    pub request_headers_to_remove: Vec<String>,
    pub response_headers_to_add: Vec<HeaderValueOption>,
    pub response_headers_to_remove: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// `retry_on`, split on commas and trimmed: "5xx", "connect-failure", "gateway-error",
    /// "reset", "retriable-4xx", "refused-stream", ...
    pub retry_on: Vec<String>,
    /// `num_retries`, default 1.
    pub num_retries: u32,
    pub per_try_timeout: Option<Duration>,
    /// `per_try_idle_timeout`: a try whose response makes no progress this long ends (retried
    /// as a per-try timeout before the response began, a reset after).
    pub per_try_idle_timeout: Option<Duration>,
    /// `retriable_status_codes` (used with `retry_on: retriable-status-codes`).
    pub retriable_status_codes: Vec<u16>,
    /// `retriable_headers` (used with `retry_on: retriable-headers`): a response any of these
    /// match is retried.
    pub retriable_headers: Vec<HeaderMatcher>,
    /// `retry_back_off`: Envoy's default base 25 ms, max 10 × base.
    pub back_off: BackOff,
    /// `retry_host_predicate` has `envoy.retry_host_predicates.previous_hosts`.
    pub avoid_previous_hosts: bool,
    /// `host_selection_retry_max_attempts` (default 1): picks tried to find a host the predicate
    /// accepts.
    pub host_selection_attempts: u32,
}

/// Jittered exponential back-off between retries, as Envoy's: before retry n (1-based) a uniform
/// random wait below min(base × (2^n − 1), max).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackOff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for BackOff {
    fn default() -> Self {
        BackOff { base: Duration::from_millis(25), max: Duration::from_millis(250) }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Redirect {
    pub host_redirect: Option<String>,
    pub path_redirect: Option<String>,
    pub prefix_rewrite: Option<String>,
    pub https_redirect: bool,
    /// 301 by default (`response_code: MOVED_PERMANENTLY`).
    pub status: u16,
    pub strip_query: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HeaderValueOption {
    /// Lower-cased.
    pub name: String,
    pub value: String,
    /// `append` (v2/v3 bool) or `append_action`; default true as in Envoy.
    pub append: bool,
}

/// `upstream_connection_options.tcp_keepalive`: unset fields keep the kernel's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpKeepalive {
    pub probes: Option<u32>,
    pub time: Option<Duration>,
    pub interval: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub name: String,
    pub discovery: DiscoveryType,
    /// `eds_cluster_config` of an EDS cluster (whose `endpoints` come from that file).
    pub eds: Option<Eds>,
    /// Envoy's default 5 s.
    pub connect_timeout: Duration,
    pub lb_policy: LbPolicy,
    /// Envoy's default 5 s.
    pub dns_refresh_rate: Duration,
    pub dns_lookup_family: DnsLookupFamily,
    /// `dns_resolvers` (v2) or `dns_resolution_config.resolvers` (v3); empty means the system's
    /// (/etc/resolv.conf).
    pub dns_resolvers: Vec<SocketAddr>,
    pub endpoints: Vec<Endpoint>,
    /// `max_requests_per_connection` (or v3 `common_http_protocol_options`), None = unlimited.
    pub max_requests_per_connection: Option<u32>,
    /// `common_http_protocol_options.idle_timeout`: a pooled connection idle this long is closed
    /// (Envoy's default 1 h).
    pub idle_timeout: Duration,
    /// `common_http_protocol_options.max_connection_duration`: a connection this old is not
    /// reused (closed after its request). None = no limit.
    pub max_connection_duration: Option<Duration>,
    /// `common_http_protocol_options.max_headers_count`: a response with more header lines is a
    /// malformed response (502 `UPE`). Envoy's default 100.
    pub max_headers_count: usize,
    /// `upstream_connection_options.tcp_keepalive`: None = no keepalive probes.
    pub tcp_keepalive: Option<TcpKeepalive>,
    pub circuit_breakers: CircuitBreakers,
    /// `outlier_detection`: None when the cluster has none (no host is ever ejected).
    pub outlier_detection: Option<super::lb::OutlierDetection>,
    /// `ring_hash_lb_config` / `maglev_lb_config` sizes (read for RING_HASH and MAGLEV).
    pub hash_table: super::lb::HashTable,
    /// `least_request_lb_config` (read for LEAST_REQUEST).
    pub least_request: super::lb::LeastRequest,
    /// The localities of `load_assignment`, indexed by `Endpoint::locality`.
    pub localities: Vec<Locality>,
    /// `common_lb_config.locality_weighted_lb_config`: localities share a level's load by weight.
    pub locality_weighted: bool,
    /// `transport_socket` with `UpstreamTlsContext`; None: plaintext.
    pub tls: Option<super::tls::UpstreamTls>,
    /// `common_lb_config.healthy_panic_threshold` and `load_assignment.policy.overprovisioning_factor`.
    pub lb_health: LbHealth,
    /// `health_checks` (active).
    pub health_checks: Vec<HealthCheck>,
    /// Which HTTP version it speaks to its hosts.
    pub protocol: UpstreamProtocol,
}

/// A cluster's HTTP version to its hosts: `http2_protocol_options` (v2) or
/// `HttpProtocolOptions` (`explicit_http_config`, `use_downstream_protocol_config`,
/// `auto_config`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    Http2(Http2Options),
    /// `use_downstream_protocol_config`: HTTP/2 for a client that spoke HTTP/2, else HTTP/1.1.
    Downstream(Http2Options),
    /// `auto_config` over TLS: HTTP/2 when the host picks `h2` by ALPN, else HTTP/1.1.
    Auto(Http2Options),
}

impl UpstreamProtocol {
    /// The HTTP/2 options a request goes upstream with, given what the client spoke; None:
    /// HTTP/1.1, or for `Auto` what ALPN picks.
    pub fn http2_for(&self, client_http2: bool) -> Option<&Http2Options> {
        match self {
            UpstreamProtocol::Http1 | UpstreamProtocol::Auto(_) => None,
            UpstreamProtocol::Http2(o) => Some(o),
            UpstreamProtocol::Downstream(o) => client_http2.then_some(o),
        }
    }
}

/// A locality of a cluster's `load_assignment`: entries naming the same `locality` at the same
/// `priority` are one locality, as in Envoy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Locality {
    pub priority: u32,
    pub region: String,
    pub zone: String,
    pub sub_zone: String,
    /// `load_balancing_weight` of the last entry that gives `locality` and a weight (Envoy reads
    /// no weight from an entry without `locality`); 0: none, it takes no weighted traffic.
    pub weight: u32,
}

/// How a cluster's load balancer weighs unhealthy hosts (Envoy's defaults: 50 %, 140).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LbHealth {
    /// Whole percent; 0 turns panic mode off.
    pub panic_threshold: u32,
    /// Percent: 140 means a level at 1/1.4 of its hosts healthy still takes all its load.
    pub overprovisioning_factor: u32,
}

impl Default for LbHealth {
    fn default() -> Self {
        LbHealth { panic_threshold: 50, overprovisioning_factor: 140 }
    }
}

/// An endpoint's `health_status` as declared in `load_assignment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HealthStatus {
    #[default]
    Unknown,
    Healthy,
    Unhealthy,
    Draining,
    Timeout,
    Degraded,
}

/// One active health check of a cluster, with Envoy's defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    pub timeout: Duration,
    pub interval: Duration,
    pub initial_jitter: Duration,
    pub interval_jitter: Duration,
    pub interval_jitter_percent: u32,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
    /// Checks go to this port instead of the endpoint's.
    pub alt_port: Option<u16>,
    pub kind: HealthCheckKind,
    /// Default 60 s: the interval until the cluster has carried traffic.
    pub no_traffic_interval: Duration,
    pub no_traffic_healthy_interval: Duration,
    /// Default `interval`.
    pub unhealthy_interval: Duration,
    /// Default `unhealthy_interval`.
    pub unhealthy_edge_interval: Duration,
    /// Default `interval`.
    pub healthy_edge_interval: Duration,
    pub always_log_failures: bool,
    pub always_log_success: bool,
    /// `reuse_connection` (default true): an HTTP check's connection carries the next check.
    pub reuse_connection: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HealthCheckKind {
    Http(HttpHealthCheck),
    /// Empty `send` and `receive`: a connect is the check.
    Tcp {
        send: Vec<u8>,
        receive: Vec<Vec<u8>>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpHealthCheck {
    /// Default: the cluster's name.
    pub host: String,
    pub path: String,
    pub method: String,
    pub request_headers_to_add: Vec<HeaderValueOption>,
    /// Lower-cased names.
    pub request_headers_to_remove: Vec<String>,
    /// `[start, end)` ranges; default `[200, 201)`.
    pub expected_statuses: Vec<(u16, u16)>,
    pub retriable_statuses: Vec<(u16, u16)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryType {
    Static,
    StrictDns,
    LogicalDns,
    /// Endpoints (IP addresses) from a file of `ClusterLoadAssignment`s (`Cluster::eds`).
    Eds,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
    LeastRequest,
    Random,
    RingHash,
    Maglev,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsLookupFamily {
    /// Envoy's default: AAAA first, falling back to A... in practice what the resolver gives; skiff
    /// asks for A then AAAA and keeps IPv4 answers first.
    Auto,
    V4Only,
    V6Only,
    V4Preferred,
    All,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// An IP literal (STATIC) or a host name (STRICT_DNS/LOGICAL_DNS).
    pub host: String,
    pub port: u16,
    /// `load_balancing_weight`, default 1.
    pub weight: u32,
    /// `priority` of the locality (v3), default 0.
    pub priority: u32,
    /// Its locality: an index into `Cluster::localities` (0, and no locality, for v2 `hosts`).
    pub locality: u32,
    /// `health_status`, default UNKNOWN (counted as healthy).
    pub health: HealthStatus,
    /// `endpoint.health_check_config`: the port and `Host` its active checks use instead.
    pub check_port: Option<u16>,
    pub check_host: Option<String>,
}

/// Envoy's per-cluster thresholds (default priority), with Envoy's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreakers {
    pub max_connections: u32,
    pub max_pending_requests: u32,
    pub max_requests: u32,
    pub max_retries: u32,
    /// `track_remaining`: publish `circuit_breakers.default.remaining_*` gauges.
    pub track_remaining: bool,
    /// `thresholds[].retry_budget`: when set, the retry limit instead of `max_retries`.
    pub retry_budget: Option<RetryBudget>,
    /// `per_host_thresholds[].max_connections` (DEFAULT priority): each host's connection cap.
    pub max_connections_per_host: Option<u32>,
}

/// Envoy's retry budget: at most `budget_percent` of the cluster's active and pending requests
/// may be retries, and never fewer than `min_retry_concurrency`.
#[derive(Debug, Clone, Copy)]
pub struct RetryBudget {
    /// 0 to 100.
    pub budget_percent: f64,
    pub min_retry_concurrency: u32,
}

impl RetryBudget {
    /// How many retries may be in progress with `active` requests and pending requests, as
    /// Envoy computes it (the percentage's product truncated).
    pub fn limit(&self, active: u32) -> u32 {
        let share = (self.budget_percent / 100.0 * f64::from(active)) as u32;
        share.max(self.min_retry_concurrency)
    }
}

// The percent is compared by its bits: a config reloaded with the same text is the same budget.
impl PartialEq for RetryBudget {
    fn eq(&self, o: &Self) -> bool {
        self.budget_percent.to_bits() == o.budget_percent.to_bits()
            && self.min_retry_concurrency == o.min_retry_concurrency
    }
}

impl Eq for RetryBudget {}

impl Default for CircuitBreakers {
    fn default() -> Self {
        CircuitBreakers {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
            track_remaining: false,
            retry_budget: None,
            max_connections_per_host: None,
        }
    }
}

// --- envoy.filters.http.jwt_authn (converted by `convert_jwt`; the JWKS stays the checked JSON
// text, which `filters::jwt_authn` builds its keys from).

/// `envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication`.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtAuthn {
    /// `providers`, by name, in name order.
    pub providers: Vec<(String, JwtProvider)>,
    /// `rules`, in order: the first whose match holds decides.
    pub rules: Vec<JwtRule>,
    /// `requirement_map`, by name, in name order (what `PerRouteConfig.requirement_name` and a
    /// rule's `requirement_name` pick from).
    pub requirement_map: Vec<(String, JwtRequirement)>,
    pub bypass_cors_preflight: bool,
    /// `strip_failure_response`: failures answer with an empty body and no `www-authenticate`.
    pub strip_failure_response: bool,
    /// Where, under the filter's `typed_config`, a field asks for dynamic metadata (which nothing
    /// in skiff reads): `convert` warns about each.
    pub metadata_fields: Vec<(String, &'static str)>,
    /// The `typed_config` as written (with its `@type`), which the admin config dump writes back.
    pub source: serde_json::Value,
}

/// One `providers` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtProvider {
    /// `issuer`; empty: tokens of any issuer.
    pub issuer: String,
    /// `audiences`; empty: any audience.
    pub audiences: Vec<String>,
    /// `local_jwks`, as JSON text (checked at load to hold at least one usable key).
    pub jwks: String,
    /// `from_headers` (lower-cased name, `value_prefix`); with no header, param or cookie given,
    /// Envoy's defaults `Authorization: Bearer ` and `access_token`.
    pub from_headers: Vec<(String, String)>,
    pub from_params: Vec<String>,
    pub from_cookies: Vec<String>,
    /// `forward`: keep the token in the request sent upstream (default false: it is removed).
    pub forward: bool,
    /// `forward_payload_header` (lower-cased); None: not sent.
    pub forward_payload_header: Option<String>,
    pub pad_forward_payload_header: bool,
    /// `claim_to_headers`: (lower-cased header name, claim name; `a.b` reaches into objects).
    pub claim_to_headers: Vec<(String, String)>,
    /// `clock_skew_seconds`; 0 in the config means Envoy's 60.
    pub clock_skew_seconds: u64,
}

/// A `rules` entry: requests matching `matcher` need `requires` (None: nothing is required).
#[derive(Debug, Clone, PartialEq)]
pub struct JwtRule {
    pub matcher: RouteMatch,
    pub requires: Option<JwtRequirement>,
}

/// `JwtRequirement`.
#[derive(Debug, Clone, PartialEq)]
pub enum JwtRequirement {
    /// `provider_name`, or `provider_and_audiences` when `audiences` is Some (they replace the
    /// provider's own).
    Provider {
        name: String,
        audiences: Option<Vec<String>>,
    },
    Any(Vec<JwtRequirement>),
    All(Vec<JwtRequirement>),
    AllowMissing,
    AllowMissingOrFailed,
    /// A requirement with none of its fields set: every request passes.
    AllowAll,
}

/// `envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtPerRoute {
    /// `disabled: true`: no requirement on this route.
    Disabled,
    /// `requirement_name`: the filter's `requirement_map` entry to apply (an unknown name is
    /// Envoy's 403 at request time, not a load error).
    Requirement(String),
}

/// HCM `forward_client_cert_details` with `set_current_client_cert_details` (`chain` refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClientCert {
    pub mode: ForwardClientCert,
    pub subject: bool,
    pub cert: bool,
    pub dns: bool,
    pub uri: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardClientCert {
    /// Remove the client's header (Envoy's default).
    #[default]
    Sanitize,
    /// On an mTLS connection pass the client's header on; otherwise remove it.
    ForwardOnly,
    /// On an mTLS connection append this hop's details to the client's header.
    AppendForward,
    /// On an mTLS connection replace the client's header with this hop's details.
    SanitizeSet,
    /// Pass the client's header on, whatever the connection.
    AlwaysForwardOnly,
}
