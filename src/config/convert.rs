//! Raw (as written) → model (as used): picks v2 or v3 spelling, applies Envoy's defaults, checks
//! what can only be checked with the whole file in view (names, references, regexes), and judges
//! the fields skiff accepts without implementing: ignored, warned about, or rejected.

use super::chain_match::ChainMatch;
use super::convert_compressor;
use super::convert_cors::cors_policy;
use super::convert_filters::{filter_config, per_filter_config, Kind};
use super::convert_health;
use super::duration::{fmt_secs, zero_is_never};
use super::error::{FieldPath, Finding};
use super::fields::{fail, header_matcher, headers_to_add, no_crlf, route_match, Res};
use super::model::*;
use super::net_filter::{Role, Terminal};
use super::raw::*;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

/// Warns for each listed field that is present: skiff parses it but does not act on it, which
/// changes behaviour compared with Envoy.
/// `$scope.$f` names the entry in `unenforced::UNENFORCED` that says why.
macro_rules! warn_present {
    ($cx:expr, $p:expr, $raw:expr, $scope:literal, [$($f:ident),* $(,)?]) => {
        $( if $raw.$f.is_some() {
            $cx.unenforced($p.key(stringify!($f)), concat!($scope, ".", stringify!($f)));
        } )*
    };
}

/// Rejects each listed field that is present.
macro_rules! reject_present {
    ($p:expr, $raw:expr, [$($f:ident),* $(,)?], $why:expr) => {
        $( if $raw.$f.is_some() {
            return fail($p.key(stringify!($f)), format!("{} is not supported: {}", stringify!($f), $why));
        } )*
    };
}

/// Refuses each listed per-host threshold field that is present, in Envoy's words.
macro_rules! reject_per_host {
    ($p:expr, $raw:expr, [$($f:ident),* $(,)?]) => {
        $( if $raw.$f.is_some() {
            return fail($p.key(stringify!($f)), "Unsupported field in per_host_thresholds");
        } )*
    };
}

const NOT_YET: &str = "not yet implemented in skiff";

/// The most a sane retry policy asks for; beyond it a typo is likelier than intent.
const MAX_NUM_RETRIES: u32 = 100;
const ROUTER_NAMES: &[&str] = &["envoy.router", "envoy.filters.http.router"];
const ROUTER_TYPES: &[&str] = &[
    "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
    "type.googleapis.com/envoy.config.filter.http.router.v2.Router",
];

/// Envoy's ceiling for `max_request_headers_kb`.
const MAX_HEADERS_KB: u32 = 8192;

pub struct Converted {
    pub bootstrap: Bootstrap,
    pub warnings: Vec<Finding>,
}

#[derive(Default)]
struct Cx {
    warnings: Vec<Finding>,
    /// `static_resources.secrets`, which TLS contexts name.
    secrets: super::convert_tls::Secrets,
    /// Cluster names, for checking route references.
    clusters: HashSet<String>,
    /// Converting a route configuration whose `validate_clusters` is false (an RDS one's
    /// default): a route may name a cluster that does not exist (yet).
    unvalidated_clusters: bool,
    /// The clusters that speak HTTP/2 to their hosts, for a gRPC client's cluster.
    http2_clusters: HashSet<String>,
    /// Bootstrap `tracing.http`: the provider of every HCM `tracing` block without its own.
    bootstrap_tracer: Option<TracingProvider>,
    /// How many HCMs have a `tracing` block, to warn when the bootstrap's provider applies to none.
    hcm_tracing_blocks: usize,
    /// Route configuration files, `Doc::Rds(index)`.
    rds_files: Vec<ResourceFile<RawRouteConfig>>,
    /// Endpoint files, `Doc::Eds(index)`.
    eds_files: Vec<ResourceFile<RawLoadAssignment>>,
    /// Every `eds_config` the EDS clusters name, each once.
    eds_sources: Vec<PathSource>,
    /// Route configurations converted from them, by (file index, name): several connection
    /// managers may name the same one.
    rds_done: Vec<(usize, String, RouteConfig)>,
    /// Every `rds` source the connection managers name, each once.
    rds_sources: Vec<PathSource>,
    /// `dynamic_resources.ads_config`, for the `ads: {}` sources of `rds` and `eds_config`.
    ads: Option<ServerSource>,
    /// The index of each of `rds_files` and `eds_files` by path, and of each of `rds_sources`
    /// and `eds_sources` by path: a config of thousands of EDS clusters looks each up once.
    files_at: HashMap<(FileKind, String), usize>,
    sources_at: HashMap<(FileKind, std::ffi::OsString), Vec<usize>>,
}

/// Which files or sources an index entry of `Cx` is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum FileKind {
    Rds,
    Eds,
}

impl Cx {
    /// Adds `source` to the `kind` sources unless it is there already.
    fn add_source(&mut self, kind: FileKind, source: &PathSource) {
        let list = match kind {
            FileKind::Rds => &mut self.rds_sources,
            FileKind::Eds => &mut self.eds_sources,
        };
        let at = self.sources_at.entry((kind, source.path.as_os_str().to_os_string())).or_default();
        if !at.iter().any(|&i| list[i] == *source) {
            at.push(list.len());
            list.push(source.clone());
        }
    }
}

/// A route configuration or endpoint file: its resources are taken as they are converted.
struct ResourceFile<T> {
    path: String,
    applied: Applied,
    resources: Vec<Option<T>>,
}

impl<T> ResourceFile<T> {
    fn new((path, f): (String, RawFile<T>)) -> Self {
        ResourceFile {
            path,
            applied: Applied { version_info: f.version_info, last_updated: f.received },
            resources: f.resources.into_iter().map(Some).collect(),
        }
    }
}

impl Cx {
    fn warn(&mut self, path: FieldPath, message: impl Into<String>) {
        self.warnings.push(Finding { path, message: message.into() });
    }

    /// Warns that the field at `path` is accepted but not acted on; `key` is its
    /// `unenforced::UNENFORCED` entry.
    fn unenforced(&mut self, path: FieldPath, key: &str) {
        let field = key.rsplit('.').next().unwrap_or(key);
        let why = super::unenforced::lookup(key).map_or("not enforced by skiff", |u| u.why);
        self.warn(path, format!("{field} is accepted but ignored ({why})"));
    }

    fn cluster_ref(&self, path: FieldPath, name: &str) -> Res<String> {
        if self.clusters.contains(name) {
            Ok(name.to_string())
        } else {
            let mut known: Vec<&str> = self.clusters.iter().map(String::as_str).collect();
            known.sort_unstable();
            let known = if known.is_empty() { "none are defined".to_string() } else { known.join(", ") };
            fail(path, format!("unknown cluster \"{name}\" (clusters: {known})"))
        }
    }

    /// A route's cluster (`cluster`, a `weighted_clusters` entry): with `validate_clusters`
    /// false, as Envoy, one that does not exist is taken, and a request routed to it gets 503 `NC`
    /// (`cluster_not_found_response_code`) until a cluster of that name arrives.
    fn route_cluster(&self, path: FieldPath, name: &str) -> Res<String> {
        match self.unvalidated_clusters {
            true => Ok(name.to_string()),
            false => self.cluster_ref(path, name),
        }
    }
}

/// `raw` with the resources of `files` (the `dynamic_resources` files' contents) added to its
/// static ones, as Envoy combines them; a problem in a file's resource has a path rooted in it.
pub fn convert(raw: RawBootstrap, files: RawDynamicFiles) -> Res<Converted> {
    let rds_files = files.rds.into_iter().map(ResourceFile::new).collect();
    let eds_files = files.eds.into_iter().map(ResourceFile::new).collect();
    let mut cx = Cx { rds_files, eds_files, ..Cx::default() };
    let rds_at = cx.rds_files.iter().enumerate().map(|(i, f)| ((FileKind::Rds, f.path.clone()), i));
    let eds_at = cx.eds_files.iter().enumerate().map(|(i, f)| ((FileKind::Eds, f.path.clone()), i));
    // The first file of a path, as a search from the start would find.
    for (key, i) in rds_at.chain(eds_at) {
        cx.files_at.entry(key).or_insert(i);
    }
    let root = FieldPath::default();
    reject_present!(root, raw, [hds_config], "health discovery (HDS) needs a management server");
    let mut xds = match raw.dynamic_resources {
        Some(d) => dynamic_resources(root.key("dynamic_resources"), d)?,
        None => Xds::default(),
    };
    if let Some(node) = raw.node {
        xds.node_id = node.id.unwrap_or_default();
        xds.node_cluster = node.cluster.unwrap_or_default();
        xds.node_locality = node.locality;
        xds.node_metadata = node.metadata;
    }
    cx.ads = xds.ads.clone();
    warn_present!(cx, root, raw, "bootstrap", [stats_sinks, overload_manager]);

    let admin = match raw.admin {
        Some(a) => Some(admin(&mut cx, root.key("admin"), a)?),
        None => None,
    };

    let (listeners_raw, clusters_raw) = match raw.static_resources {
        Some(s) => {
            let sp = root.key("static_resources").key("secrets");
            cx.secrets = super::convert_tls::static_secrets(&sp, s.secrets.unwrap_or_default())?;
            (s.listeners.unwrap_or_default(), s.clusters.unwrap_or_default())
        }
        None => (Vec::new(), Vec::new()),
    };
    let sr = root.key("static_resources");
    let (lds, cds) = (files.lds, files.cds);
    if xds.lds.is_none() && lds.is_some() || xds.cds.is_none() && cds.is_some() {
        return fail(root.key("dynamic_resources"), "a resource file was given without its config source");
    }
    let cds_path = FieldPath::doc(Doc::Cds).key("resources");
    let lds_path = FieldPath::doc(Doc::Lds).key("resources");

    // Clusters first: routes refer to them, wherever they sit in the file.
    let cp = sr.key("clusters");
    let static_count = clusters_raw.len();
    let dynamic_clusters = cds.map(|f| {
        xds.cds_applied = Some(Applied { version_info: f.version_info, last_updated: f.received });
        f.resources
    });
    let all_clusters = clusters_raw.into_iter().enumerate().map(|(i, c)| (cp.idx(i), c));
    let all_clusters = all_clusters
        .chain(dynamic_clusters.into_iter().flatten().enumerate().map(|(i, c)| (cds_path.idx(i), c)));
    let mut clusters = Vec::with_capacity(static_count);
    for (p, c) in all_clusters {
        resource_type(&p, c.type_url.as_deref(), Doc::Cds)?;
        let is_static = |name: &str| {
            clusters[..static_count.min(clusters.len())].iter().any(|s: &Cluster| s.name == name)
        };
        if p.document().is_some() && is_static(&c.name) {
            // Envoy's cluster manager keeps a static cluster and applies the rest of the update.
            cx.warn(p.key("name"), format!("cluster \"{}\" is static: this one is ignored", c.name));
            continue;
        }
        if !cx.clusters.insert(c.name.clone()) {
            return fail(p.key("name"), format!("duplicate cluster name \"{}\"", c.name));
        }
        if p.document().is_some() {
            xds.dynamic_clusters.push(c.name.clone());
        }
        let c = cluster(&mut cx, p, c)?;
        if matches!(c.protocol, UpstreamProtocol::Http2(_)) {
            cx.http2_clusters.insert(c.name.clone());
        }
        clusters.push(c);
    }

    // As Envoy: the management server's cluster is a static one (a dynamic one would need the
    // server to be reached first).
    let statics = &clusters[..static_count.min(clusters.len())];
    let server_sources =
        [(&xds.ads, "ads_config"), (&xds.cds.as_ref().and_then(|s| s.server.clone()), "cds_config")];
    for (source, key) in server_sources {
        if let Some(s) = source.as_ref().filter(|s| !statics.iter().any(|c| c.name == s.cluster)) {
            let p = root.key("dynamic_resources").key(key);
            return fail(
                p,
                format!("the management server's cluster \"{}\" must be a static cluster", s.cluster),
            );
        }
    }

    // After the clusters (the collector cluster must exist), before the listeners (their HCMs
    // inherit it).
    let tracing_path = root.key("tracing");
    if let Some(t) = raw.tracing {
        if let Some(provider) = t.http {
            cx.bootstrap_tracer = Some(tracer(&mut cx, tracing_path.key("http"), provider)?);
        }
    }

    let lp = sr.key("listeners");
    let mut listeners = Vec::with_capacity(listeners_raw.len());
    let mut tcp_listeners = Vec::new();
    let mut names = HashSet::new();
    let mut addresses: Vec<(SocketAddr, FieldPath)> = Vec::new();
    if let Some(a) = &admin {
        addresses.push((a.address, root.key("admin").key("address")));
    }
    let dynamic_listeners = lds.map(|f| {
        xds.lds_applied = Some(Applied { version_info: f.version_info, last_updated: f.received });
        f.resources
    });
    let all_listeners = listeners_raw.into_iter().enumerate().map(|(i, l)| (lp.idx(i), i, l));
    let all_listeners = all_listeners
        .chain(dynamic_listeners.into_iter().flatten().enumerate().map(|(i, l)| (lds_path.idx(i), i, l)));
    let mut static_listeners = HashSet::new();
    for (p, i, l) in all_listeners {
        resource_type(&p, l.type_url.as_deref(), Doc::Lds)?;
        let name = match (&l.name, p.document()) {
            (Some(name), _) => name.clone(),
            (None, None) => format!("listener_{i}"),
            // Envoy's LDS keys listeners by name: one without cannot be updated or removed.
            (None, Some(_)) => return fail(p, "a listener from lds_config needs a name"),
        };
        if p.document().is_some() && static_listeners.contains(&name) {
            // Envoy's listener manager keeps a static listener and applies the rest of the update.
            cx.warn(p.key("name"), format!("listener \"{name}\" is static: this one is ignored"));
            continue;
        }
        if !names.insert(name.clone()) {
            return fail(p.key("name"), format!("duplicate listener name \"{name}\""));
        }
        if p.document().is_some() {
            xds.dynamic_listeners.push(name.clone());
        } else {
            static_listeners.insert(name.clone());
        }
        let built = listener(&mut cx, p.clone(), name, l)?;
        let address = match built.first() {
            Some(Built::Http(l)) => l.address,
            Some(Built::Tcp(l)) => l.address,
            None => continue,
        };
        // Port 0 asks the kernel for a fresh port per listener, so such listeners never collide
        // (as in Envoy); only a fixed port can be claimed twice.
        if let Some((_, other)) = addresses.iter().find(|(a, _)| *a == address && address.port() != 0) {
            return fail(p.key("address"), format!("address {address} is already used by {other}"));
        }
        addresses.push((address, p.key("address")));
        for chain in built {
            match chain {
                Built::Http(l) => listeners.push(*l),
                Built::Tcp(l) => tcp_listeners.push(*l),
            }
        }
    }

    if cx.bootstrap_tracer.is_some() && cx.hcm_tracing_blocks == 0 {
        cx.warn(
            tracing_path,
            "tracing is configured but no http_connection_manager has a tracing block, so nothing is traced",
        );
    }

    Ok(Converted {
        bootstrap: Bootstrap {
            admin,
            listeners,
            clusters,
            tcp_listeners,
            xds: Xds { rds: cx.rds_sources, eds: cx.eds_sources, ..xds },
            secrets: cx.secrets.dumps,
        },
        warnings: cx.warnings,
    })
}

/// Checks a resource's `"@type"`: only a resource in a `dynamic_resources` file (an `Any`) has one,
/// and there it must be the file's kind.
fn resource_type(p: &FieldPath, type_url: Option<&str>, doc: Doc) -> Res<()> {
    match (p.document(), type_url) {
        (None, None) => Ok(()),
        (None, Some(_)) => {
            fail(p.key("@type"), "\"@type\" belongs to a resource in a dynamic_resources file")
        }
        (Some(_), Some(t)) if t == doc.type_url() => Ok(()),
        (Some(_), Some(t)) => fail(p.key("@type"), format!("expected \"{}\", got \"{t}\"", doc.type_url())),
        (Some(_), None) => fail(p.clone(), format!("a resource needs \"@type\": {}", doc.type_url())),
    }
}

/// `dynamic_resources`: where listeners and clusters come from: files, or a management server
/// over gRPC (state of the world or delta; `ads_config` for `ads: {}` sources) or REST.
fn dynamic_resources(p: FieldPath, d: RawDynamic) -> Res<Xds> {
    const NO_LOCATOR: &str = "xDS-TP resource locators are not supported: give lds_config / cds_config";
    reject_present!(p, d, [lds_resources_locator, cds_resources_locator], NO_LOCATOR);
    let mut xds = Xds::default();
    if let Some(a) = d.ads_config {
        let timeout = std::time::Duration::ZERO;
        xds.ads = Some(api_config_source(p.key("ads_config"), a, true, timeout)?);
    }
    // Clusters first, as Envoy checks them.
    if let Some(c) = d.cds_config {
        xds.cds = Some(config_source(p.key("cds_config"), c, &xds.ads, "cds")?);
    }
    if let Some(c) = d.lds_config {
        xds.lds = Some(config_source(p.key("lds_config"), c, &xds.ads, "lds")?);
    }
    Ok(xds)
}

/// An `ApiConfigSource`: gRPC (state of the world, or delta) to a cluster named by `envoy_grpc`,
/// or REST polling of one of `cluster_names`.
fn api_config_source(
    p: FieldPath,
    a: RawApiConfigSource,
    ads: bool,
    initial_fetch_timeout: std::time::Duration,
) -> Res<ServerSource> {
    // rate_limit_settings and config_validators pace and check Envoy's own requests; skiff sends
    // one request per change and validates every resource.
    let _ = a.set_node_on_first_message_only; // The node goes on every request either way (valid).
    if let Some(v) = &a.transport_api_version {
        if !v.eq_ignore_ascii_case("V3") && !v.eq_ignore_ascii_case("AUTO") {
            return fail(p.key("transport_api_version"), format!("only V3 is supported, got {v}"));
        }
    }
    let delta = match a.api_type.as_deref().map(str::to_ascii_uppercase).as_deref() {
        Some("GRPC") => false,
        Some("DELTA_GRPC") => true,
        Some("REST") if ads => {
            return fail(p.key("api_type"), "ads_config needs api_type GRPC or DELTA_GRPC (as in Envoy)")
        }
        Some("REST") => return rest_source(p, a, initial_fetch_timeout),
        // Envoy 1.40 keeps these for xDS-TP config sources, which skiff refuses anyway.
        Some("AGGREGATED_GRPC" | "AGGREGATED_DELTA_GRPC") if ads => {
            return fail(
                p.key("api_type"),
                "ads_config's api_type must be of non-aggregated gRPC (GRPC or DELTA_GRPC, as in Envoy)",
            )
        }
        Some(t @ ("AGGREGATED_GRPC" | "AGGREGATED_DELTA_GRPC")) => {
            return fail(
                p.key("api_type"),
                format!("unsupported config source {t} (as in Envoy): use ads: {{}} with ads_config"),
            )
        }
        Some(t) => return fail(p.key("api_type"), format!("unknown api_type {t}")),
        None => return fail(p.key("api_type"), "api_type is required (GRPC, DELTA_GRPC or REST)"),
    };
    reject_present!(p, a, [cluster_names, refresh_delay, request_timeout], "these belong to api_type REST");
    let services = a.grpc_services.unwrap_or_default();
    let sp = p.key("grpc_services");
    let Some(first) = services.into_iter().next() else {
        return fail(sp, "api_type GRPC needs one grpc_services entry");
    };
    let sp = sp.idx(0);
    if first.google_grpc.is_some() {
        return fail(sp.key("google_grpc"), "google_grpc is not supported: name the cluster with envoy_grpc");
    }
    if first.initial_metadata.is_some() {
        // Headers a server may need (a token): refused rather than silently not sent.
        return fail(
            sp.key("initial_metadata"),
            "initial_metadata is not supported: skiff sends no extra headers",
        );
    }
    let Some(envoy_grpc) = first.envoy_grpc else {
        return fail(sp, "a grpc service needs envoy_grpc: {cluster_name: ...}");
    };
    if envoy_grpc.cluster_name.is_empty() {
        return fail(sp.key("envoy_grpc").key("cluster_name"), "cluster_name is empty");
    }
    let _ = envoy_grpc.authority; // :authority is the cluster name, as Envoy's default.
    let cluster = envoy_grpc.cluster_name;
    Ok(ServerSource { cluster, ads, delta, resource: String::new(), initial_fetch_timeout, rest: None })
}

/// `api_type: REST`: JSON polling of one cluster (`cluster_names`) every `refresh_delay`.
fn rest_source(
    p: FieldPath,
    a: RawApiConfigSource,
    initial_fetch_timeout: std::time::Duration,
) -> Res<ServerSource> {
    if a.grpc_services.is_some() {
        return fail(
            p.key("grpc_services"),
            "grpc_services belong to api_type GRPC; REST names cluster_names",
        );
    }
    let Some(refresh_delay) = a.refresh_delay else {
        return fail(p, "refresh_delay is required for REST API configuration sources (as in Envoy)");
    };
    let names = a.cluster_names.unwrap_or_default();
    let [cluster] = names.as_slice() else {
        let n = names.len();
        return fail(
            p.key("cluster_names"),
            format!("REST needs exactly one cluster in cluster_names, got {n}"),
        );
    };
    let request_timeout = a.request_timeout.map_or(std::time::Duration::from_secs(1), |d| d.0);
    let rest = Some(RestPolling { refresh_delay: refresh_delay.0, request_timeout });
    Ok(ServerSource {
        cluster: cluster.clone(),
        ads: false,
        delta: false,
        resource: String::new(),
        initial_fetch_timeout,
        rest,
    })
}

/// A `ConfigSource` for resources of `kind` ("lds", "cds", "rds", "eds"): a file, `ads: {}`
/// (the `ads_config` stream; `ads` is it) or a gRPC `api_config_source`.
fn config_source(
    p: FieldPath,
    c: RawConfigSource,
    ads: &Option<ServerSource>,
    kind: &str,
) -> Res<PathSource> {
    reject_present!(p, c, [self_source, authorities], "only files, ads and api_config_source are supported");
    let initial_fetch_timeout = c.initial_fetch_timeout.map_or(std::time::Duration::from_secs(15), |d| d.0);
    if let Some(v) = &c.resource_api_version {
        if !v.eq_ignore_ascii_case("V3") && !v.eq_ignore_ascii_case("AUTO") {
            return fail(p.key("resource_api_version"), format!("only V3 resources are supported, got {v}"));
        }
    }
    let server = match (c.ads, c.api_config_source) {
        (Some(_), Some(_)) => return fail(p, "give either ads or api_config_source, not both"),
        (Some(_), None) => match ads {
            Some(a) => Some(ServerSource { initial_fetch_timeout, ..a.clone() }),
            None => return fail(p.key("ads"), "ads: {} needs dynamic_resources.ads_config"),
        },
        (None, Some(a)) => {
            Some(api_config_source(p.key("api_config_source"), a, false, initial_fetch_timeout)?)
        }
        (None, None) => None,
    };
    if let Some(server) = server {
        if c.path_config_source.is_some() || c.path.is_some() {
            return fail(p, "give one of path_config_source, ads and api_config_source");
        }
        return Ok(PathSource { path: server.path(kind), watched_directory: None, server: Some(server) });
    }
    let v2 = c.path.is_some();
    let (path, watched_directory) = match (c.path_config_source, c.path) {
        (Some(_), Some(_)) => return fail(p, "give either path_config_source (v3) or path (v2), not both"),
        (Some(s), None) => (s.path, s.watched_directory.map(|w| w.path)),
        (None, Some(path)) => (path, None),
        (None, None) => return fail(p, "a config source needs path_config_source, ads or api_config_source"),
    };
    if path.is_empty() {
        return fail(p, "path_config_source.path is empty");
    }
    // As Envoy, which refuses to start on a file that is not there (an update can only replace
    // one that is).
    if !std::path::Path::new(&path).exists() {
        let key = if v2 { p.key("path") } else { p.key("path_config_source").key("path") };
        return fail(
            key,
            format!("paths must refer to an existing path in the system: '{path}' does not exist"),
        );
    }
    Ok(PathSource { path: path.into(), watched_directory: watched_directory.map(Into::into), server: None })
}

/// A server source for the one resource `name` of `kind` (an RDS or EDS subscription): its own
/// name, so that each resource is applied and counted as a file of its own would be.
fn for_resource(mut source: PathSource, kind: &str, name: &str) -> PathSource {
    if let Some(server) = &mut source.server {
        server.resource = name.to_string();
        source.path = server.path(kind);
    }
    source
}

/// A tracing provider (HCM `tracing.provider` or bootstrap `tracing.http`). The name and the
/// `"@type"` were checked to be Zipkin's or OpenTelemetry's while parsing.
fn tracer(cx: &mut Cx, p: FieldPath, t: RawTracingProvider) -> Res<TracingProvider> {
    let otel = t.name.0 == super::raw::OTEL_NAME;
    let (key, z) = match (t.config, t.typed_config) {
        (Some(_), Some(_)) => return fail(p, "give either config (v2) or typed_config (v3), not both"),
        (None, Some(c)) => ("typed_config", c),
        (Some(_), None) if otel => {
            return fail(p.key("config"), "the OpenTelemetry tracer needs typed_config")
        }
        (Some(c), None) => ("config", c),
        (None, None) if otel => return fail(p, "the OpenTelemetry tracer needs typed_config"),
        (None, None) => return fail(p, "the Zipkin tracer needs typed_config (or v2 config)"),
    };
    let zp = p.key(key);
    if let Some(super::raw::ZipkinTypeUrl(otel_type)) = &z.type_url {
        if *otel_type != otel {
            return fail(
                zp.key("@type"),
                format!("this @type does not match the provider name {:?}", t.name.0),
            );
        }
    }
    if otel {
        return otel_tracer(cx, zp, z).map(TracingProvider::OpenTelemetry);
    }
    let otel_fields = [
        ("grpc_service", z.grpc_service.is_some()),
        ("service_name", z.service_name.is_some()),
        ("http_service", z.http_service.is_some()),
        ("exporter", z.exporter.is_some()),
        ("resource_detectors", z.resource_detectors.is_some()),
        ("sampler", z.sampler.is_some()),
        ("max_cache_size", z.max_cache_size.is_some()),
        ("set_telemetry_sdk_resource_attributes", z.set_telemetry_sdk_resource_attributes.is_some()),
    ];
    if let Some((field, _)) = otel_fields.iter().find(|(_, present)| *present) {
        return fail(zp.key(field), "unknown field of a Zipkin config (it is an OpenTelemetry one)");
    }
    warn_present!(cx, zp, z, "zipkin", [split_spans_for_request, trace_context_option]);
    let _ = z.collector_endpoint_version; // HTTP_JSON is the only value that parses.
    let Some(cluster) = z.collector_cluster else {
        return fail(zp, "collector_cluster is required");
    };
    let collector_cluster = cx.cluster_ref(zp.key("collector_cluster"), &cluster)?;
    let collector_endpoint = z.collector_endpoint.unwrap_or_else(|| "/api/v2/spans".to_string());
    // Both go into the POST's request line and Host header verbatim.
    if collector_endpoint.is_empty() || collector_endpoint.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return fail(
            zp.key("collector_endpoint"),
            format!("collector_endpoint must be a non-empty path without spaces, got {collector_endpoint:?}"),
        );
    }
    if let Some(h) = &z.collector_hostname {
        if h.is_empty() || h.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return fail(
                zp.key("collector_hostname"),
                format!("collector_hostname must be a host name without spaces, got {h:?}"),
            );
        }
    }
    Ok(TracingProvider::Zipkin(ZipkinConfig {
        collector_cluster,
        collector_endpoint,
        trace_id_128bit: z.trace_id_128bit.unwrap_or(false),
        shared_span_context: z.shared_span_context.unwrap_or(true),
        collector_hostname: z.collector_hostname,
    }))
}

/// `envoy.tracers.opentelemetry`: OTLP over gRPC to an HTTP/2 cluster. What is not built (OTLP over
/// HTTP, custom exporters, resource detectors, samplers) is refused rather than silently dropped:
/// each changes where spans go or which requests are traced.
fn otel_tracer(cx: &mut Cx, zp: FieldPath, z: super::raw::RawZipkin) -> Res<OpenTelemetryConfig> {
    let zipkin_fields = [
        ("collector_cluster", z.collector_cluster.is_some()),
        ("collector_endpoint", z.collector_endpoint.is_some()),
        ("collector_endpoint_version", z.collector_endpoint_version.is_some()),
        ("trace_id_128bit", z.trace_id_128bit.is_some()),
        ("shared_span_context", z.shared_span_context.is_some()),
        ("collector_hostname", z.collector_hostname.is_some()),
        ("split_spans_for_request", z.split_spans_for_request.is_some()),
        ("trace_context_option", z.trace_context_option.is_some()),
        ("collector_service", z.collector_service.is_some()),
    ];
    if let Some((field, _)) = zipkin_fields.iter().find(|(_, present)| *present) {
        return fail(zp.key(field), "unknown field of an OpenTelemetry config (it is a Zipkin one)");
    }
    let refused = [
        ("http_service", z.http_service.is_some(), "OTLP over HTTP is not supported: use grpc_service"),
        ("exporter", z.exporter.is_some(), "custom exporters are not supported: use grpc_service"),
        ("resource_detectors", z.resource_detectors.is_some(), "resource detectors are not supported"),
        ("sampler", z.sampler.is_some(), "samplers are not supported: the HCM's tracing percentages decide"),
    ];
    if let Some((field, _, why)) = refused.iter().find(|(_, present, _)| *present) {
        return fail(zp.key(field), *why);
    }
    // Envoy: "This field can be left empty to disable reporting traces"; skiff has nothing to trace
    // to then, so it asks for it rather than tracing into the void.
    let Some(g) = z.grpc_service else {
        return fail(zp, "grpc_service is required (skiff exports spans over OTLP/gRPC only)");
    };
    let gp = zp.key("grpc_service");
    if g.google_grpc.is_some() {
        return fail(gp.key("google_grpc"), "google_grpc is not supported: use envoy_grpc");
    }
    if g.retry_policy.is_some() {
        return fail(gp.key("retry_policy"), "retry_policy is not supported: a batch is sent once");
    }
    if g.initial_metadata.is_some() {
        return fail(gp.key("initial_metadata"), "initial_metadata is not supported");
    }
    let Some(e) = g.envoy_grpc else {
        return fail(gp, "grpc_service needs envoy_grpc");
    };
    let ep = gp.key("envoy_grpc");
    if e.authority.is_some() || e.retry_policy.is_some() || e.max_receive_message_length.is_some() {
        return fail(ep, "only cluster_name (and skip_envoy_headers) of envoy_grpc are supported");
    }
    let collector_cluster = cx.cluster_ref(ep.key("cluster_name"), &e.cluster_name)?;
    if !cx.http2_clusters.contains(&collector_cluster) {
        return fail(
            ep.key("cluster_name"),
            format!(
                "cluster \"{collector_cluster}\" must speak HTTP/2 (http2_protocol_options) to carry gRPC"
            ),
        );
    }
    let timeout = g.timeout.map(|d| d.0).filter(|d| !d.is_zero());
    let service_name =
        z.service_name.filter(|s| !s.is_empty()).unwrap_or_else(|| "unknown_service:envoy".to_string());
    Ok(OpenTelemetryConfig {
        collector_cluster,
        timeout,
        service_name,
        sdk_attributes: z.set_telemetry_sdk_resource_attributes.unwrap_or(true),
        max_cache_size: z.max_cache_size.unwrap_or(1024),
    })
}

fn percent(p: FieldPath, v: Option<RawPercent>) -> Res<f64> {
    let Some(v) = v else {
        return Ok(100.0);
    };
    let value = v.value.unwrap_or(0.0);
    if !(0.0..=100.0).contains(&value) {
        return fail(p.key("value"), format!("a percentage must be between 0 and 100, got {value}"));
    }
    Ok(value)
}

/// HCM `tracing`. `direction` is the listener's `traffic_direction`, which v3 uses in place of v2's
/// `operation_name`.
fn hcm_tracing(
    cx: &mut Cx,
    p: FieldPath,
    t: RawHcmTracing,
    direction: Option<TrafficDirection>,
) -> Res<Option<Tracing>> {
    cx.hcm_tracing_blocks += 1;
    warn_present!(cx, p, t, "hcm.tracing", [custom_tags, request_headers_for_tags]);
    warn_present!(cx, p, t, "hcm.tracing", [verbose]);
    let operation = match (t.operation_name, direction) {
        (Some(op), _) => op.0,
        (None, Some(TrafficDirection::Outbound)) => TracingOperation::Egress,
        // Envoy: INBOUND and UNSPECIFIED (legacy behaviour) both mean ingress.
        (None, _) => TracingOperation::Ingress,
    };
    let random_sampling = percent(p.key("random_sampling"), t.random_sampling)?;
    let client_sampling = percent(p.key("client_sampling"), t.client_sampling)?;
    let overall_sampling = percent(p.key("overall_sampling"), t.overall_sampling)?;
    let max_path_tag_length = t.max_path_tag_length.unwrap_or(256);
    let provider = match t.provider {
        Some(provider) => tracer(cx, p.key("provider"), provider)?,
        None => match &cx.bootstrap_tracer {
            Some(z) => z.clone(),
            None => {
                cx.warn(
                    p,
                    "tracing has no provider (neither tracing.provider here nor a bootstrap tracing.http), so nothing is traced",
                );
                return Ok(None);
            }
        },
    };
    Ok(Some(Tracing {
        provider,
        operation,
        random_sampling,
        client_sampling,
        overall_sampling,
        max_path_tag_length,
    }))
}

fn bind_address(p: FieldPath, a: RawBindAddress) -> Res<SocketAddr> {
    if a.pipe.is_some() {
        return fail(p.key("pipe"), "pipe (unix socket) addresses are not supported");
    }
    if a.envoy_internal_address.is_some() {
        return fail(p.key("envoy_internal_address"), "internal addresses are not supported");
    }
    let Some(s) = a.socket_address else {
        return fail(p, "socket_address is required");
    };
    let Some(port) = s.port_value else {
        return fail(p.key("socket_address"), "port_value is required");
    };
    Ok(SocketAddr::new(s.address.0, port.0))
}

fn admin(cx: &mut Cx, p: FieldPath, a: RawAdmin) -> Res<Admin> {
    warn_present!(cx, p, a, "admin", [profile_path, socket_options]);
    let Some(address) = a.address else {
        return fail(p, "admin.address is required");
    };
    let address = bind_address(p.key("address"), address)?;
    let mut access_log_path = a.access_log_path;
    if let Some(logs) = a.access_log {
        let logs = access_logs(cx, p.key("access_log"), logs)?;
        if access_log_path.is_none() {
            access_log_path = logs.into_iter().find_map(|l| match l {
                AccessLog::File { path, .. } => Some(path),
                _ => None,
            });
        }
    }
    Ok(Admin { address, access_log_path })
}

fn access_logs(cx: &mut Cx, p: FieldPath, logs: Vec<RawAccessLog>) -> Res<Vec<AccessLog>> {
    let mut out = Vec::new();
    for (i, l) in logs.into_iter().enumerate() {
        let p = p.idx(i);
        warn_present!(cx, p, l, "access_log", [filter]);
        let (key, cfg) = match (l.config, l.typed_config) {
            (Some(_), Some(_)) => return fail(p, "give either config (v2) or typed_config (v3), not both"),
            (Some(c), None) => ("config", c),
            (None, Some(c)) => ("typed_config", c),
            (None, None) => {
                cx.warn(p, "access log without config is ignored");
                continue;
            }
        };
        let cp = p.key(key);
        let name = l.name.unwrap_or_default();
        let type_url = cfg.type_url.clone().unwrap_or_default();
        let kind = if name.ends_with("file_access_log")
            || name == "envoy.access_loggers.file"
            || type_url.ends_with(".FileAccessLog")
        {
            "file"
        } else if name == "envoy.access_loggers.stdout" || type_url.ends_with(".StdoutAccessLog") {
            "stdout"
        } else if name == "envoy.access_loggers.stderr" || type_url.ends_with(".StderrAccessLog") {
            "stderr"
        } else {
            let what = if type_url.is_empty() { name } else { type_url };
            cx.warn(
                p,
                format!("access log \"{what}\" is ignored (skiff writes file, stdout and stderr logs only)"),
            );
            continue;
        };
        warn_present!(cx, cp, cfg, "access_log.typed_config", [json_format, typed_json_format]);
        let mut format = cfg.format;
        if let Some(lf) = cfg.log_format {
            let lp = cp.key("log_format");
            warn_present!(cx, lp, lf, "access_log.typed_config.log_format", [json_format, formatters]);
            if let Some(t) = lf.text_format {
                format = Some(t);
            }
            if let Some(src) = lf.text_format_source {
                match src.inline_string {
                    Some(s) => format = Some(s),
                    None => return fail(lp.key("text_format_source"), "only inline_string is supported"),
                }
            }
        }
        out.push(match kind {
            "file" => match cfg.path {
                Some(path) => AccessLog::File { path, format },
                None => return fail(cp, "a file access log needs a path"),
            },
            "stdout" => AccessLog::Stdout { format },
            _ => AccessLog::Stderr { format },
        });
    }
    Ok(out)
}

/// A listener, by the network filter it runs.
enum Built {
    Http(Box<Listener>),
    Tcp(Box<TcpListener>),
}

/// A listener: one `Built` per filter chain (its `default_filter_chain` last), all sharing its
/// name and address.
fn listener(cx: &mut Cx, p: FieldPath, name: String, l: RawListener) -> Res<Vec<Built>> {
    reject_present!(p, l, [udp_listener_config], NOT_YET);
    warn_present!(
        cx,
        p,
        l,
        "listener",
        [socket_options, freebind, transparent, tcp_fast_open_queue_length, connection_balance_config]
    );
    if l.use_original_dst == Some(true) {
        return fail(p.key("use_original_dst"), format!("use_original_dst is not supported: {NOT_YET}"));
    }
    let inspects = match &l.listener_filters {
        Some(filters) => super::convert_tls::listener_filters(&p.key("listener_filters"), filters)?,
        None => false,
    };
    let inspector = inspects.then(|| Inspector {
        timeout: match l.listener_filters_timeout.map(|d| d.0) {
            None => Some(Duration::from_secs(15)),
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
        },
        continue_on_timeout: l.continue_on_listener_filters_timeout.unwrap_or(false),
    });
    let address = bind_address(p.key("address"), l.address)?;
    let direction = l.traffic_direction.map(|d| d.0);
    let fp = p.key("filter_chains");
    let chains = match l.filter_chains {
        Some(chains) => chains,
        None if l.default_filter_chain.is_some() => OneOrMany { items: Vec::new(), was_single: false },
        None => return fail(p, "filter_chains is required"),
    };
    if chains.was_single {
        cx.warn(
            fp.clone(),
            "filter_chains is a single mapping; Envoy expects a list. Accepted as a one-element list",
        );
    }
    // Single mapping: the path has no index, so errors point into the mapping itself.
    let chain_path = |i: usize| {
        if chains.was_single {
            fp.clone()
        } else {
            fp.idx(i)
        }
    };
    if chains.items.is_empty() && l.default_filter_chain.is_none() {
        return fail(fp.clone(), "filter_chains is empty");
    }
    let mut built = Vec::with_capacity(chains.items.len() + 1);
    let mut seen: Vec<(ChainMatch, FieldPath)> = Vec::new();
    for (i, mut chain) in chains.items.into_iter().enumerate() {
        let cp = chain_path(i);
        let mp = cp.key("filter_chain_match");
        let matcher = match chain.filter_chain_match.take() {
            Some(m) => super::convert_tls::chain_match(&mp, m)?,
            None => ChainMatch::default(),
        };
        if let Some((_, other)) = seen.iter().find(|(m, _)| super::convert_tls::same_rules(m, &matcher)) {
            return fail(
                mp,
                format!("multiple filter chains with the same matching rules are defined (as Envoy refuses): {other} too"),
            );
        }
        seen.push((matcher.clone(), cp.clone()));
        let slot = ChainSlot { index: i as u32, matcher, inspector };
        built.push(filter_chain(cx, cp, &name, address, direction, slot, chain)?);
    }
    if let Some(chain) = l.default_filter_chain {
        let dp = p.key("default_filter_chain");
        if chain.filter_chain_match.is_some() {
            return fail(
                dp.key("filter_chain_match"),
                "the default filter chain takes what no chain matches: it has no filter_chain_match",
            );
        }
        let slot = ChainSlot { index: DEFAULT_CHAIN, matcher: ChainMatch::default(), inspector };
        built.push(filter_chain(cx, dp, &name, address, direction, slot, chain)?);
    }
    Ok(built)
}

/// One filter chain: its TLS and its network filters, the last of which (the connection manager
/// or tcp_proxy) says which list it goes to.
fn filter_chain(
    cx: &mut Cx,
    cp: FieldPath,
    name: &str,
    address: SocketAddr,
    direction: Option<TrafficDirection>,
    chain: ChainSlot,
    raw: RawFilterChain,
) -> Res<Built> {
    reject_present!(cp, raw, [tls_context], "use transport_socket (v3) for TLS");
    if raw.use_proxy_proto == Some(true) {
        return fail(cp.key("use_proxy_proto"), "the PROXY protocol is not supported");
    }
    let handshake_limit = raw.transport_socket_connect_timeout.map(|d| d.0);
    let tls =
        super::convert_tls::chain_tls(&cp, raw.transport_socket.as_ref(), handshake_limit, &cx.secrets)?;
    let single = raw.filters.as_ref().is_some_and(|f| f.was_single);
    let filters = raw.filters.map_or_else(Vec::new, |f| {
        if f.was_single {
            cx.warn(
                cp.key("filters"),
                "filters is a single mapping; Envoy expects a list. Accepted as a one-element list",
            );
        }
        f.items
    });
    if filters.is_empty() {
        return fail(
            cp.key("filters"),
            "a filter chain needs a network filter: http_connection_manager or tcp_proxy, last",
        );
    }
    let last = filters.len() - 1;
    let mut limits = Vec::new();
    for (j, f) in filters.into_iter().enumerate() {
        // Single mapping: no index, as for filter_chains.
        let fp = if single { cp.key("filters") } else { cp.key("filters").idx(j) };
        let (key, raw) = match (f.config, f.typed_config) {
            (Some(_), Some(_)) => return fail(fp, "give either config (v2) or typed_config (v3), not both"),
            (Some(c), None) => {
                if c.type_url_given() {
                    return fail(
                        fp.key("config").key("@type"),
                        "\"@type\" belongs in typed_config, not config",
                    );
                }
                ("config", c)
            }
            (None, Some(c)) => {
                if !c.type_url_given() {
                    return fail(fp.key("typed_config"), "typed_config needs \"@type\"");
                }
                ("typed_config", c)
            }
            (None, None) => {
                return fail(fp, format!("network filter \"{}\" needs typed_config (or v2 config)", f.name.0))
            }
        };
        let terminal = match super::net_filter::role(&fp.key(key), raw)? {
            Role::Limit(_) if j == last => {
                return fail(
                    fp,
                    format!(
                        "network filter \"{}\" cannot end a filter chain: the last filter must be \
                         http_connection_manager or tcp_proxy",
                        f.name.0
                    ),
                )
            }
            Role::Limit(limit) => {
                limits.push(limit);
                continue;
            }
            Role::Terminal(terminal) => terminal,
        };
        if j != last {
            return fail(
                fp,
                format!(
                    "network filter \"{}\" must be the last in its filter chain (it takes the connection)",
                    f.name.0
                ),
            );
        }
        let name = name.to_string();
        let net_filters = std::mem::take(&mut limits);
        return Ok(match terminal {
            Terminal::Hcm(raw) => {
                let hcm = hcm(cx, fp.key(key), *raw, direction, address.port())?;
                Built::Http(Box::new(Listener { name, address, hcm, tls, net_filters, chain }))
            }
            Terminal::TcpProxy(raw) => {
                let proxy = tcp_proxy(cx, fp.key(key), *raw)?;
                Built::Tcp(Box::new(TcpListener { name, address, proxy, tls, net_filters, chain }))
            }
        });
    }
    fail(cp.key("filters"), "a filter chain needs http_connection_manager or tcp_proxy, last")
}

fn tcp_proxy(cx: &mut Cx, p: FieldPath, t: RawTcpProxy) -> Res<TcpProxy> {
    reject_present!(
        p,
        t,
        [
            on_demand,
            metadata_match,
            tunneling_config,
            downstream_idle_timeout,
            upstream_idle_timeout,
            access_log_flush_interval,
            access_log_options,
            flush_access_log_on_connected,
            hash_policy,
            max_downstream_connection_duration,
            backoff_options,
            deprecated_v1,
            proxy_protocol_tlvs
        ],
        NOT_YET
    );
    let Some(stat_prefix) = t.stat_prefix.filter(|s| !s.is_empty()) else {
        return fail(p, "stat_prefix is required");
    };
    let cluster = match (t.cluster, t.weighted_clusters) {
        (Some(c), None) => ClusterSpecifier::Single(cx.cluster_ref(p.key("cluster"), &c)?),
        (None, Some(w)) => weighted_clusters(cx, p.key("weighted_clusters"), w)?,
        (Some(_), Some(_)) => return fail(p, "give either cluster or weighted_clusters, not both"),
        (None, None) => return fail(p, "tcp_proxy needs cluster or weighted_clusters"),
    };
    let max_connect_attempts = t.max_connect_attempts.unwrap_or(1);
    if max_connect_attempts == 0 {
        return fail(p.key("max_connect_attempts"), "max_connect_attempts must be at least 1");
    }
    let access_logs = match t.access_log {
        Some(logs) => access_logs(cx, p.key("access_log"), logs)?,
        None => Vec::new(),
    };
    Ok(TcpProxy {
        stat_prefix,
        cluster,
        idle_timeout: t.idle_timeout.map_or(Duration::from_secs(3600), |d| zero_is_never(d.0)),
        max_connect_attempts,
        access_logs,
    })
}

/// `upgrade_configs` entries, lower-cased (CONNECT too: matched without regard to case).
fn upgrades<'a>(
    p: FieldPath,
    list: impl Iterator<Item = (&'a str, Option<bool>)>,
) -> Res<Vec<UpgradeConfig>> {
    let mut out: Vec<UpgradeConfig> = Vec::new();
    for (i, (upgrade_type, enabled)) in list.enumerate() {
        let ip = p.idx(i).key("upgrade_type");
        if upgrade_type.is_empty() {
            return fail(ip, "upgrade_type must not be empty");
        }
        let upgrade_type = upgrade_type.to_ascii_lowercase();
        if out.iter().any(|u| u.upgrade_type == upgrade_type) {
            return fail(ip, format!("upgrade_type {upgrade_type} is listed twice"));
        }
        out.push(UpgradeConfig { upgrade_type, enabled: enabled.unwrap_or(true) });
    }
    Ok(out)
}

/// Refuses a `connect_matcher` route that would forward the CONNECT to its upstream (the upgrade is
/// enabled, by the route or the connection manager, without the route's `connect_config`):
/// Envoy's default, which skiff does not do yet; it terminates CONNECT only.
fn refuse_forwarded_connect(p: &FieldPath, routes: &RouteConfig, hcm: &[UpgradeConfig]) -> Res<()> {
    for vhost in &routes.virtual_hosts {
        for route in &vhost.routes {
            let RouteAction::Forward(f) = &route.action else { continue };
            if route.matcher.path != PathMatch::Connect || f.terminate_connect {
                continue;
            }
            if UpgradeConfig::allowed("connect", hcm, Some(&f.upgrades)) {
                let name = route.name.as_deref().unwrap_or("(unnamed)");
                return fail(
                    p.clone(),
                    format!(
                        "route {name} in virtual host {}: a CONNECT forwarded to the upstream (no \
                         connect_config on the route's CONNECT upgrade_configs entry) is not supported: {NOT_YET}; \
                         add connect_config: {{}} to terminate it",
                        vhost.name
                    ),
                );
            }
        }
    }
    Ok(())
}

fn hcm(
    cx: &mut Cx,
    p: FieldPath,
    h: RawHcm,
    direction: Option<TrafficDirection>,
    listener_port: u16,
) -> Res<HttpConnectionManager> {
    reject_present!(p, h, [scoped_routes], "only an inline route_config or rds from a file is supported");
    reject_present!(p, h, [http3_protocol_options], "skiff speaks HTTP/1.1 and HTTP/2 only");
    warn_present!(
        cx,
        p,
        h,
        "hcm",
        [
            normalize_path,
            merge_slashes,
            skip_xff_append,
            via,
            always_set_request_id_in_response,
            proxy_100_continue,
            stream_error_on_invalid_http_message,
            local_reply_config,
            path_with_escaped_slashes_action,
            original_ip_detection_extensions,
            internal_address_config,
            preserve_external_request_id,
            add_user_agent,
            drain_timeout
        ]
    );
    if let Some(t) = &h.server_header_transformation {
        if !t.eq_ignore_ascii_case("OVERWRITE") {
            cx.unenforced(p.key("server_header_transformation"), "hcm.server_header_transformation");
        }
    }
    let Some(stat_prefix) = h.stat_prefix else {
        return fail(p, "stat_prefix is required");
    };

    let server_name = h.server_name.unwrap_or_else(|| "envoy".to_string());
    no_crlf(p.key("server_name"), &server_name)?;
    let strip_host_port = match (h.strip_matching_host_port, h.strip_any_host_port) {
        (Some(true), Some(true)) => {
            return fail(
                p.key("strip_any_host_port"),
                "Only one of `strip_matching_host_port` or `strip_any_host_port` can be set.",
            )
        }
        (Some(true), _) => StripHostPort::Matching(listener_port),
        (_, Some(true)) => StripHostPort::Any,
        _ => StripHostPort::No,
    };
    let (mut route_config, rds) = match (h.route_config, h.rds) {
        (Some(_), Some(_)) => return fail(p, "give either route_config or rds, not both"),
        (Some(rc), None) => {
            if rc.type_url.is_some() {
                return fail(
                    p.key("route_config").key("@type"),
                    "\"@type\" belongs to a resource in a route configuration file",
                );
            }
            (route_config(cx, p.key("route_config"), rc)?, None)
        }
        (None, Some(r)) => rds(cx, p.key("rds"), r)?,
        (None, None) => return fail(p, "route_config or rds is required"),
    };
    route_config.strip_host_port = strip_host_port;

    let (accept_http_10, default_host_for_http_10) = match h.http_protocol_options {
        Some(o) => {
            if let Some(host) = &o.default_host_for_http_10 {
                no_crlf(p.key("http_protocol_options").key("default_host_for_http_10"), host)?;
            }
            (o.accept_http_10.unwrap_or(false), o.default_host_for_http_10.filter(|h| !h.is_empty()))
        }
        None => (false, None),
    };

    let fp = p.key("http_filters");
    let mut http_filters = Vec::new();
    let filters = h.http_filters.unwrap_or_default();
    let count = filters.len();
    for (i, f) in filters.into_iter().enumerate() {
        let fpi = fp.idx(i);
        if f.disabled == Some(true) {
            cx.warn(fpi.key("disabled"), format!("http filter \"{}\" is disabled and ignored", f.name));
            continue;
        }
        reject_present!(fpi, f, [config_discovery], "filter config discovery is not supported");
        // Envoy picks a filter by its typed_config "@type" when there is one; the name is a label.
        let is_router = match f.typed_config.as_ref().and_then(|c| c.type_url.as_deref()) {
            Some(url) => ROUTER_TYPES.contains(&url),
            None => ROUTER_NAMES.contains(&f.name.as_str()),
        };
        let type_url = f.typed_config.as_ref().and_then(|c| c.type_url.clone());
        let compressor_type = match type_url.as_deref() {
            Some(url) => url == convert_compressor::COMPRESSOR_TYPE,
            None => f.name == convert_compressor::COMPRESSOR_NAME,
        };
        if compressor_type {
            let tp = fpi.key("typed_config");
            let fields = f.typed_config.as_ref().map(|t| t.fields.clone()).unwrap_or_default();
            let (config, request_direction) = convert_compressor::compressor(&tp, fields)?;
            if request_direction {
                cx.unenforced(tp.key("request_direction_config"), "compressor.request_direction_config");
            }
            http_filters.push(HttpFilter::Compressor { name: f.name, config: Box::new(config) });
            continue;
        }
        if type_url.as_deref() == Some(convert_compressor::DECOMPRESSOR_TYPE) {
            cx.unenforced(fpi.key("typed_config"), "http_filters.decompressor");
            continue;
        }
        if let Some(kind) = Kind::of(&f.name, type_url.as_deref()) {
            let config = filter_config(&fpi.key("typed_config"), kind, f.typed_config.as_ref())?;
            http_filters.push(match config {
                PerFilterConfig::LocalRateLimit(config) => {
                    HttpFilter::LocalRateLimit { name: f.name, config }
                }
                PerFilterConfig::Fault(config) => HttpFilter::Fault { name: f.name, config },
                PerFilterConfig::Cors(_) if kind == Kind::CorsPolicy => {
                    return fail(
                        fpi.key("typed_config").key("@type"),
                        "the cors filter's typed_config is a type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors (a CorsPolicy goes in typed_per_filter_config)",
                    );
                }
                PerFilterConfig::Cors(_) => HttpFilter::Cors { name: f.name },
                PerFilterConfig::Csrf(config) => HttpFilter::Csrf { name: f.name, config },
                PerFilterConfig::JwtAuthn(config) => {
                    let tp = fpi.key("typed_config").key("providers");
                    for (provider, field) in &config.metadata_fields {
                        let at = tp.key(provider).key(field);
                        // One literal key per call: the unenforced table's test reads them here.
                        match *field {
                            "payload_in_metadata" => {
                                cx.unenforced(at, "jwt_authn.providers.payload_in_metadata");
                            }
                            "header_in_metadata" => {
                                cx.unenforced(at, "jwt_authn.providers.header_in_metadata");
                            }
                            "failed_status_in_metadata" => {
                                cx.unenforced(at, "jwt_authn.providers.failed_status_in_metadata");
                            }
                            "normalize_payload_in_metadata" => {
                                cx.unenforced(at, "jwt_authn.providers.normalize_payload_in_metadata");
                            }
                            _ => {
                                cx.unenforced(at, "jwt_authn.providers.jwt_cache_config");
                            }
                        }
                    }
                    HttpFilter::JwtAuthn { name: f.name, config }
                }
                PerFilterConfig::JwtPerRoute(_) => {
                    return fail(
                        fpi.key("typed_config"),
                        "a jwt_authn PerRouteConfig belongs in typed_per_filter_config; the filter takes a JwtAuthentication",
                    )
                }
                PerFilterConfig::Rbac(config) => HttpFilter::Rbac { name: f.name, config },
                PerFilterConfig::ExtAuthz(config) => {
                    // One check per request is what the request owner awaits.
                    if http_filters.iter().any(|f| matches!(f, HttpFilter::ExtAuthz { .. })) {
                        return fail(fpi.key("name"), "a second ext_authz filter in one http_filters is not supported");
                    }
                    ext_authz_checks(cx, &fpi.key("typed_config"), &config)?;
                    HttpFilter::ExtAuthz { name: f.name, config }
                }
                PerFilterConfig::ExtAuthzPerRoute(_) => {
                    return fail(
                        fpi.key("typed_config").key("@type"),
                        "the ext_authz filter's typed_config is a type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz (an ExtAuthzPerRoute goes in typed_per_filter_config)",
                    );
                }
                PerFilterConfig::CompressorPerRoute { .. } => {
                    return fail(
                        fpi.key("typed_config").key("@type"),
                        "a CompressorPerRoute goes in typed_per_filter_config; the compressor filter's typed_config is a type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor",
                    );
                }
            });
            continue;
        }
        match f.name.as_str() {
            _ if is_router => {
                if i + 1 != count {
                    return fail(fpi.key("name"), "the router must be the last http filter");
                }
                http_filters.push(HttpFilter::Router);
            }
            other if f.is_optional == Some(true) => {
                cx.warn(
                    fpi.key("name"),
                    format!("optional http filter \"{other}\" is not supported and is skipped"),
                );
            }
            other => {
                let what = match type_url {
                    Some(url) => format!("http filter \"{other}\" (\"@type\" {url})"),
                    None => format!("http filter \"{other}\""),
                };
                return fail(
                    fpi.key("name"),
                    format!("{what} is not supported (only envoy.filters.http.router, envoy.filters.http.local_ratelimit, envoy.filters.http.fault, envoy.filters.http.cors, envoy.filters.http.csrf, envoy.filters.http.jwt_authn, envoy.filters.http.rbac, envoy.filters.http.ext_authz and envoy.filters.http.compressor; mark it is_optional: true to skip it)"),
                );
            }
        }
    }
    if http_filters.last() != Some(&HttpFilter::Router) {
        return fail(fp, "http_filters must end with the router (envoy.filters.http.router)");
    }

    let max_request_headers_kb = h.max_request_headers_kb.unwrap_or(60);
    if !(1..=MAX_HEADERS_KB).contains(&max_request_headers_kb) {
        return fail(
            p.key("max_request_headers_kb"),
            format!("max_request_headers_kb must be 1-{MAX_HEADERS_KB}, got {max_request_headers_kb}"),
        );
    }
    let mut idle_timeout = Duration::from_secs(3600);
    let mut max_requests_per_connection = None;
    let mut max_connection_duration = None;
    let mut max_stream_duration = None;
    let mut max_headers_count = MAX_HEADERS;
    let mut headers_with_underscores = UnderscoresAction::Allow;
    if let Some(c) = h.common_http_protocol_options {
        let cp = p.key("common_http_protocol_options");
        warn_present!(cx, cp, c, "hcm.common_http_protocol_options", [max_response_headers_kb]);
        if let Some(t) = c.idle_timeout {
            idle_timeout = zero_is_never(t.0);
        }
        max_requests_per_connection = c.max_requests_per_connection.filter(|n| *n > 0);
        max_connection_duration = c.max_connection_duration.map(|d| d.0).filter(|d| !d.is_zero());
        max_stream_duration = c.max_stream_duration.and_then(|d| off_if_zero(d.0));
        max_headers_count = headers_count(cp.key("max_headers_count"), c.max_headers_count)?;
        headers_with_underscores =
            c.headers_with_underscores_action.map_or(UnderscoresAction::Allow, |a| a.0);
    }
    let stream_limits = StreamLimits {
        idle: h.stream_idle_timeout.map_or(Some(Duration::from_secs(300)), |d| off_if_zero(d.0)),
        request: h.request_timeout.and_then(|d| off_if_zero(d.0)),
        max_duration: max_stream_duration,
    };
    let delayed_close_timeout =
        h.delayed_close_timeout.map_or(Some(Duration::from_secs(1)), |d| off_if_zero(d.0));
    let access_logs = match h.access_log {
        Some(logs) => access_logs(cx, p.key("access_log"), logs)?,
        None => Vec::new(),
    };
    let tracing = match h.tracing {
        Some(t) => hcm_tracing(cx, p.key("tracing"), t, direction)?,
        None => None,
    };
    let up = p.key("upgrade_configs");
    for (i, u) in h.upgrade_configs.iter().flatten().enumerate() {
        if u.filters.as_ref().is_some_and(|f| !f.is_empty()) {
            return fail(up.idx(i).key("filters"), "upgrade filter chains are not supported");
        }
    }
    let upgrades =
        upgrades(up, h.upgrade_configs.iter().flatten().map(|u| (u.upgrade_type.as_str(), u.enabled)))?;
    refuse_forwarded_connect(&p, &route_config, &upgrades)?;
    let codec = match h.codec_type.map(|c| c.0) {
        None | Some(CodecType::Auto) => HttpCodec::Auto,
        Some(CodecType::Http1) => HttpCodec::Http1,
        Some(CodecType::Http2) => HttpCodec::Http2,
    };
    let http2 = match h.http2_protocol_options {
        Some(o) => http2_options(cx, p.key("http2_protocol_options"), o)?,
        None => Http2Options::default(),
    };
    Ok(HttpConnectionManager {
        stat_prefix,
        route_config,
        rds,
        http_filters,
        max_request_headers_kb,
        request_headers_timeout: h
            .request_headers_timeout
            .map_or(Duration::from_secs(10), |d| zero_is_never(d.0)),
        idle_timeout,
        max_requests_per_connection,
        max_connection_duration,
        stream_limits,
        delayed_close_timeout,
        max_headers_count,
        headers_with_underscores,
        generate_request_id: h.generate_request_id.unwrap_or(true),
        server_name,
        access_logs,
        use_remote_address: h.use_remote_address.unwrap_or(false),
        client_cert: client_cert(&p, h.forward_client_cert_details, h.set_current_client_cert_details)?,
        xff_num_trusted_hops: {
            if h.xff_num_trusted_hops.is_some_and(|n| n > 0) {
                cx.unenforced(p.key("xff_num_trusted_hops"), "hcm.xff_num_trusted_hops");
            }
            h.xff_num_trusted_hops.unwrap_or(0)
        },
        tracing,
        accept_http_10,
        default_host_for_http_10,
        upgrades,
        codec,
        http2,
    })
}

/// A connection manager's `http2_protocol_options`: CONNECT and METADATA streams are refused
/// (not built); the flood limits are warned about (the h2 codec has its own guards).
fn http2_options(cx: &mut Cx, p: FieldPath, o: RawHttp2Options) -> Res<Http2Options> {
    reject_present!(p, o, [allow_connect, allow_metadata], "HTTP/2 CONNECT and METADATA are not implemented");
    warn_present!(
        cx,
        p,
        o,
        "hcm.http2_protocol_options",
        [
            max_outbound_frames,
            max_outbound_control_frames,
            max_consecutive_inbound_frames_with_empty_payload,
            max_inbound_priority_frames_per_stream,
            max_inbound_window_update_frames_per_data_frame_sent,
            connection_keepalive,
            custom_settings_parameters,
        ]
    );
    http2_settings(&p, &o)
}

/// The SETTINGS both sides enforce, with Envoy's defaults and its proto's ranges: the window
/// sizes 65535..=2^31-1, `max_concurrent_streams` 1..=2^31-1.
fn http2_settings(p: &FieldPath, o: &RawHttp2Options) -> Res<Http2Options> {
    const MAX: u32 = 2_147_483_647;
    let d = Http2Options::default();
    let ranged = |field: &str, v: Option<u32>, min: u32, default: u32| match v {
        None => Ok(default),
        Some(v) if (min..=MAX).contains(&v) => Ok(v),
        Some(v) => fail(p.key(field), format!("{field} must be between {min} and {MAX}, got {v}")),
    };
    Ok(Http2Options {
        max_concurrent_streams: ranged(
            "max_concurrent_streams",
            o.max_concurrent_streams,
            1,
            d.max_concurrent_streams,
        )?,
        initial_stream_window_size: ranged(
            "initial_stream_window_size",
            o.initial_stream_window_size,
            65535,
            d.initial_stream_window_size,
        )?,
        initial_connection_window_size: ranged(
            "initial_connection_window_size",
            o.initial_connection_window_size,
            65535,
            d.initial_connection_window_size,
        )?,
        hpack_table_size: o.hpack_table_size.unwrap_or(d.hpack_table_size),
    })
}

use super::model::MAX_HEADERS_COUNT as MAX_HEADERS;

/// Envoy's reading of an optional limit: `0s` turns it off.
fn off_if_zero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

/// `max_headers_count`: Envoy's default and skiff's parse limit are both 100, and skiff parses a
/// head into a fixed array of that many; a larger limit would be accepted and not honoured.
fn headers_count(p: FieldPath, n: Option<u32>) -> Res<usize> {
    match n {
        None => Ok(MAX_HEADERS),
        Some(n @ 1..) if n as usize <= MAX_HEADERS => Ok(n as usize),
        Some(n) => fail(p, format!("max_headers_count must be 1-{MAX_HEADERS} in skiff, got {n}")),
    }
}

fn lower_all(list: Option<Vec<String>>) -> Vec<String> {
    list.unwrap_or_default().into_iter().map(|s| s.to_ascii_lowercase()).collect()
}

/// An EDS cluster's `eds_cluster_config`: where its assignment stands (the path for its errors),
/// the assignment (None while the file has not been read), and the model's record of it. As in
/// Envoy, the file must hold exactly the cluster's assignment.
fn eds_assignment(
    cx: &mut Cx,
    p: FieldPath,
    ec: RawEdsClusterConfig,
    cluster: &str,
) -> Res<(FieldPath, Option<RawLoadAssignment>, Eds)> {
    let Some(config) = ec.eds_config else {
        return fail(p, "eds_cluster_config needs eds_config");
    };
    let service_name_given = ec.service_name.is_some();
    let service_name = ec.service_name.unwrap_or_else(|| cluster.to_string());
    let source = config_source(p.key("eds_config"), config, &cx.ads, "eds")?;
    let source = for_resource(source, "eds", &service_name);
    cx.add_source(FileKind::Eds, &source);
    let path = source.path.display().to_string();
    let Some(&k) = cx.files_at.get(&(FileKind::Eds, path)) else {
        let eds = Eds { service_name, service_name_given, source, applied: None };
        return Ok((p, None, eds));
    };
    let doc = Doc::Eds(u16::try_from(k).unwrap_or(u16::MAX));
    let file = &mut cx.eds_files[k];
    // As Envoy: the file holds this cluster's assignment and nothing else.
    if file.resources.len() != 1 {
        let n = file.resources.len();
        return fail(
            FieldPath::doc(doc),
            format!("an endpoint file holds exactly one ClusterLoadAssignment, got {n}"),
        );
    }
    let j = 0;
    let Some(found) = &file.resources[j] else {
        return fail(
            FieldPath::doc(doc),
            format!("cluster \"{cluster}\" reads an endpoint file another EDS cluster reads: not supported"),
        );
    };
    let got = found.cluster_name.as_deref().unwrap_or_default();
    if got != service_name {
        let np = FieldPath::doc(doc).key("resources").idx(j).key("cluster_name");
        return fail(np, format!("expected the ClusterLoadAssignment of \"{service_name}\" (cluster \"{cluster}\"), got \"{got}\""));
    }
    let la = file.resources[j].take();
    let applied = Some(file.applied.clone());
    let lap = FieldPath::doc(doc).key("resources").idx(j);
    resource_type(&lap, la.as_ref().and_then(|la| la.type_url.as_deref()), doc)?;
    Ok((lap, la, Eds { service_name, service_name_given, source, applied }))
}

/// An HCM's `rds`: the named route configuration from its file, converted where it stands in
/// that file (so an error in it is that file's); empty while the file has not been read. A file
/// without that name is invalid (Envoy rejects such an update).
fn rds(cx: &mut Cx, p: FieldPath, r: RawRds) -> Res<(RouteConfig, Option<Rds>)> {
    let name = r.route_config_name;
    let source = config_source(p.key("config_source"), r.config_source, &cx.ads, "rds")?;
    let source = for_resource(source, "rds", &name);
    cx.add_source(FileKind::Rds, &source);
    let path = source.path.display().to_string();
    let Some(&k) = cx.files_at.get(&(FileKind::Rds, path)) else {
        let empty = RouteConfig { name: name.clone(), ..RouteConfig::default() };
        return Ok((empty, Some(Rds { route_config_name: name, source, applied: None })));
    };
    let doc = Doc::Rds(u16::try_from(k).unwrap_or(u16::MAX));
    let applied = Some(cx.rds_files[k].applied.clone());
    if let Some((_, _, done)) = cx.rds_done.iter().find(|(i, n, _)| *i == k && *n == name) {
        return Ok((done.clone(), Some(Rds { route_config_name: name, source, applied })));
    }
    let found = cx.rds_files[k]
        .resources
        .iter()
        .position(|rc| rc.as_ref().is_some_and(|rc| rc.name.as_deref() == Some(&name)));
    let Some(j) = found else {
        return fail(
            FieldPath::doc(doc),
            format!("no route configuration named \"{name}\" (named by an rds at {p})"),
        );
    };
    let Some(rc) = cx.rds_files[k].resources[j].take() else {
        return fail(FieldPath::doc(doc), format!("route configuration \"{name}\" is given twice"));
    };
    let rp = FieldPath::doc(doc).key("resources").idx(j);
    resource_type(&rp, rc.type_url.as_deref(), doc)?;
    let converted = route_config(cx, rp, rc)?;
    cx.rds_done.push((k, name.clone(), converted.clone()));
    Ok((converted, Some(Rds { route_config_name: name, source, applied })))
}

fn route_config(cx: &mut Cx, p: FieldPath, rc: RawRouteConfig) -> Res<RouteConfig> {
    reject_present!(p, rc, [vhds, cluster_specifier_plugins], NOT_YET);
    warn_present!(cx, p, rc, "route_config", [internal_only_headers]);
    // Envoy's default: checked in a static route_config, not in one from RDS.
    let validate = rc.validate_clusters.unwrap_or(!matches!(p.document(), Some(Doc::Rds(_))));
    let vp = p.key("virtual_hosts");
    let mut virtual_hosts = Vec::new();
    let mut domains_seen: HashSet<String> = HashSet::new();
    cx.unvalidated_clusters = !validate;
    let converted: Res<Vec<VirtualHost>> = rc
        .virtual_hosts
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, v)| vhost(cx, vp.idx(i), v, &mut domains_seen))
        .collect();
    cx.unvalidated_clusters = false;
    virtual_hosts.extend(converted?);
    Ok(RouteConfig {
        name: rc.name.unwrap_or_default(),
        virtual_hosts,
        request_headers_to_add: headers_to_add(p.key("request_headers_to_add"), rc.request_headers_to_add)?,
        request_headers_to_remove: lower_all(rc.request_headers_to_remove),
        response_headers_to_add: headers_to_add(
            p.key("response_headers_to_add"),
            rc.response_headers_to_add,
        )?,
        response_headers_to_remove: lower_all(rc.response_headers_to_remove),
        strip_host_port: StripHostPort::No,
    })
}

fn vhost(cx: &mut Cx, p: FieldPath, v: RawVhost, seen: &mut HashSet<String>) -> Res<VirtualHost> {
    warn_present!(
        cx,
        p,
        v,
        "virtual_host",
        [rate_limits, per_filter_config, hedge_policy, virtual_clusters, per_request_buffer_limit_bytes]
    );
    let (filter_configs, others) = filter_configs(&p, v.typed_per_filter_config)?;
    for other in others {
        cx.unenforced(other, "virtual_host.typed_per_filter_config");
    }
    if let Some(t) = &v.require_tls {
        if !t.eq_ignore_ascii_case("NONE") {
            return fail(
                p.key("require_tls"),
                format!("require_tls {t} is not supported (not yet implemented in skiff)"),
            );
        }
    }
    let dp = p.key("domains");
    let domains = v.domains.unwrap_or_default();
    if domains.is_empty() {
        return fail(dp, "a virtual host needs at least one domain");
    }
    for (i, d) in domains.iter().enumerate() {
        if d.is_empty() {
            return fail(dp.idx(i), "domain must not be empty");
        }
        if !seen.insert(d.to_ascii_lowercase()) {
            let what = if d == "*" {
                "only one virtual host may use the wildcard domain \"*\"".to_string()
            } else {
                format!("duplicate domain \"{d}\" in this route_config")
            };
            return fail(dp.idx(i), what);
        }
    }
    let rp = p.key("routes");
    let mut routes = Vec::new();
    for (i, r) in v.routes.unwrap_or_default().into_iter().enumerate() {
        routes.push(route(cx, rp.idx(i), r, v.retry_policy.as_ref(), p.key("retry_policy"))?);
    }
    Ok(VirtualHost {
        name: v.name.unwrap_or_default(),
        domains,
        routes,
        request_headers_to_add: headers_to_add(p.key("request_headers_to_add"), v.request_headers_to_add)?,
        request_headers_to_remove: lower_all(v.request_headers_to_remove),
        response_headers_to_add: headers_to_add(p.key("response_headers_to_add"), v.response_headers_to_add)?,
        response_headers_to_remove: lower_all(v.response_headers_to_remove),
        filter_configs,
        cors: v.cors.map(|c| cors_policy(&p.key("cors"), c)).transpose()?,
        attempt_count: AttemptCount {
            upstream: v.include_request_attempt_count.unwrap_or(false),
            client: v.include_attempt_count_in_response.unwrap_or(false),
        },
    })
}

/// The ext_authz filter's cluster exists, and its accepted-but-ignored fields are warned about.
fn ext_authz_checks(cx: &mut Cx, p: &FieldPath, c: &ExtAuthz) -> Res<()> {
    let hp = p.key("http_service");
    if c.grpc.is_some() {
        let cp = p.key("grpc_service").key("envoy_grpc").key("cluster_name");
        cx.cluster_ref(cp.clone(), &c.cluster)?;
        // Envoy accepts one and its calls then fail at run time; skiff says so at load.
        if !cx.http2_clusters.contains(&c.cluster) {
            return fail(
                cp,
                format!(
                    "cluster \"{}\" of a gRPC service must speak HTTP/2 (typed_extension_protocol_options: envoy.extensions.upstreams.http.v3.HttpProtocolOptions with explicit_http_config: {{http2_protocol_options: {{}}}})",
                    c.cluster
                ),
            );
        }
        if c.warned.include_peer_certificate {
            cx.unenforced(p.key("include_peer_certificate"), "ext_authz.include_peer_certificate");
        }
        if c.warned.clear_route_cache {
            cx.unenforced(p.key("clear_route_cache"), "ext_authz.clear_route_cache");
        }
        return Ok(());
    }
    cx.cluster_ref(hp.key("server_uri").key("cluster"), &c.cluster)?;
    let rsp = hp.key("authorization_response");
    if c.warned.dynamic_metadata_from_headers {
        cx.unenforced(
            rsp.key("dynamic_metadata_from_headers"),
            "ext_authz.http_service.authorization_response.dynamic_metadata_from_headers",
        );
    }
    if c.warned.clear_route_cache {
        cx.unenforced(p.key("clear_route_cache"), "ext_authz.clear_route_cache");
    }
    if c.warned.include_peer_certificate {
        cx.unenforced(p.key("include_peer_certificate"), "ext_authz.include_peer_certificate");
    }
    Ok(())
}

type FilterConfigs = Vec<(String, PerFilterConfig)>;

/// `typed_per_filter_config` of a route or virtual host: the entries of the filters skiff
/// implements, and the paths of the others (warned about by the caller: their filter is not run).
fn filter_configs(
    p: &FieldPath,
    raw: Option<std::collections::BTreeMap<String, RawFilterTypedConfig>>,
) -> Res<(FilterConfigs, Vec<FieldPath>)> {
    let (mut known, mut others) = (Vec::new(), Vec::new());
    for (name, typed) in raw.unwrap_or_default() {
        let ep = p.key("typed_per_filter_config").key(&name);
        match per_filter_config(&ep, &name, &typed)? {
            Some(config) => known.push((name, config)),
            None => others.push(ep),
        }
    }
    Ok((known, others))
}

fn route(
    cx: &mut Cx,
    p: FieldPath,
    r: RawRoute,
    vhost_retry: Option<&RawRetry>,
    vhost_retry_path: FieldPath,
) -> Res<Route> {
    warn_present!(cx, p, r, "route", [per_filter_config, tracing, per_request_buffer_limit_bytes]);
    let (filter_configs, others) = filter_configs(&p, r.typed_per_filter_config)?;
    for other in others {
        cx.unenforced(other, "route.typed_per_filter_config");
    }
    let matcher = route_match(p.key("match"), r.matcher)?;
    let action = match (r.route, r.redirect, r.direct_response) {
        (Some(a), None, None) => {
            RouteAction::Forward(Box::new(forward(cx, p.key("route"), a, vhost_retry, vhost_retry_path)?))
        }
        (None, Some(rd), None) => RouteAction::Redirect(redirect(p.key("redirect"), rd)?),
        (None, None, Some(d)) => {
            let dp = p.key("direct_response");
            if !(200..=599).contains(&d.status) {
                return fail(dp.key("status"), format!("status must be 200-599, got {}", d.status));
            }
            let body = match d.body {
                None => None,
                Some(b) => match b.inline_string {
                    Some(s) => Some(s),
                    None => return fail(dp.key("body"), "only body.inline_string is supported"),
                },
            };
            RouteAction::DirectResponse { status: d.status as u16, body }
        }
        (None, None, None) => return fail(p, "a route needs one of route, redirect, direct_response"),
        _ => return fail(p, "a route takes only one of route, redirect, direct_response"),
    };
    Ok(Route {
        name: r.name,
        matcher,
        action,
        request_headers_to_add: headers_to_add(p.key("request_headers_to_add"), r.request_headers_to_add)?,
        request_headers_to_remove: lower_all(r.request_headers_to_remove),
        response_headers_to_add: headers_to_add(p.key("response_headers_to_add"), r.response_headers_to_add)?,
        response_headers_to_remove: lower_all(r.response_headers_to_remove),
        filter_configs,
    })
}

fn forward(
    cx: &mut Cx,
    p: FieldPath,
    a: RawRouteAction,
    vhost_retry: Option<&RawRetry>,
    vhost_retry_path: FieldPath,
) -> Res<ForwardAction> {
    reject_present!(
        p,
        a,
        [cluster_specifier_plugin],
        "only cluster, cluster_header and weighted_clusters are supported"
    );
    reject_present!(p, a, [regex_rewrite, host_rewrite_header, host_rewrite_path_regex], NOT_YET);
    warn_present!(
        cx,
        p,
        a,
        "route.route",
        [rate_limits, hedge_policy, metadata_match, internal_redirect_policy]
    );
    if a.auto_host_rewrite == Some(true) {
        return fail(p.key("auto_host_rewrite"), format!("auto_host_rewrite is not supported: {NOT_YET}"));
    }
    let cluster = match (a.cluster, a.cluster_header, a.weighted_clusters) {
        (Some(c), None, None) => ClusterSpecifier::Single(cx.route_cluster(p.key("cluster"), &c)?),
        (None, Some(h), None) if !h.is_empty() => ClusterSpecifier::Header(h.to_ascii_lowercase()),
        (None, None, Some(w)) => route_weighted_clusters(cx, p.key("weighted_clusters"), w)?,
        (None, None, None) => return fail(p, "route needs cluster, cluster_header or weighted_clusters"),
        _ => return fail(p, "give one of cluster, cluster_header or weighted_clusters"),
    };
    let cluster_not_found = match a.cluster_not_found_response_code.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("SERVICE_UNAVAILABLE") => 503,
        Some("NOT_FOUND") => 404,
        Some("INTERNAL_SERVER_ERROR") => 500,
        Some(other) => {
            return fail(
                p.key("cluster_not_found_response_code"),
                format!("unknown cluster_not_found_response_code {other} (SERVICE_UNAVAILABLE, NOT_FOUND or INTERNAL_SERVER_ERROR)"),
            )
        }
    };
    if a.host_rewrite_literal.is_some() && a.host_rewrite.is_some() {
        return fail(p, "give either host_rewrite_literal or host_rewrite, not both");
    }
    let timeout = match a.timeout {
        None => Some(Duration::from_secs(15)),
        Some(d) if d.0.is_zero() => None,
        Some(d) => Some(d.0),
    };
    // Envoy: a route's retry_policy replaces the virtual host's, it does not merge with it.
    let retry_policy = match (&a.retry_policy, vhost_retry) {
        (Some(r), _) => Some(retry(cx, p.key("retry_policy"), r)?),
        (None, Some(r)) => Some(retry(cx, vhost_retry_path, r)?),
        (None, None) => None,
    };
    let up = p.key("upgrade_configs");
    let mut terminate_connect = false;
    for (i, u) in a.upgrade_configs.iter().flatten().enumerate() {
        let Some(c) = &u.connect_config else { continue };
        let cp = up.idx(i).key("connect_config");
        if !u.upgrade_type.eq_ignore_ascii_case("CONNECT") {
            return fail(cp, "connect_config is only for upgrade_type CONNECT");
        }
        if c.allow_post == Some(true) {
            return fail(
                cp.key("allow_post"),
                format!("allow_post (POST tunnels) is not supported: {NOT_YET}"),
            );
        }
        if c.proxy_protocol_config.is_some() {
            return fail(
                cp.key("proxy_protocol_config"),
                format!("proxy_protocol_config is not supported: {NOT_YET}"),
            );
        }
        terminate_connect = true;
    }
    let upgrades =
        upgrades(up, a.upgrade_configs.iter().flatten().map(|u| (u.upgrade_type.as_str(), u.enabled)))?;
    let hash_policy = super::lb::hash_policies(p.key("hash_policy"), a.hash_policy.unwrap_or_default())?;
    Ok(ForwardAction {
        hash_policy,
        upgrades,
        terminate_connect,
        cluster,
        timeout,
        prefix_rewrite: a.prefix_rewrite,
        host_rewrite_literal: a.host_rewrite_literal.or(a.host_rewrite),
        retry_policy,
        idle_timeout: a.idle_timeout.map(|d| off_if_zero(d.0)),
        mirrors: mirrors(cx, &p, a.request_mirror_policy, a.request_mirror_policies)?,
        cluster_not_found,
        cors: a.cors.map(|c| cors_policy(&p.key("cors"), c)).transpose()?,
        // Deprecated in Envoy 1.40 (it warns), still acted on: a gRPC request's route timeout.
        grpc_timeout: a.max_grpc_timeout.map(|max| {
            let why = "deprecated in Envoy (still honoured); max_stream_duration.grpc_timeout_header_max replaces it";
            cx.warn(p.key("max_grpc_timeout"), why);
            GrpcRouteTimeout {
            max: off_if_zero(max.0),
                offset: a.grpc_timeout_offset.map_or(Duration::ZERO, |d| d.0),
            }
        }),
        max_stream_duration: a.max_stream_duration.map_or(RouteStreamDuration::default(), |m| {
            RouteStreamDuration {
                set: true,
                max: m.max_stream_duration.map(|d| off_if_zero(d.0)),
                grpc_header_max: m.grpc_timeout_header_max.map(|d| off_if_zero(d.0)),
                grpc_header_offset: m.grpc_timeout_header_offset.map_or(Duration::ZERO, |d| d.0),
            }
        }),
    })
}

/// A tcp_proxy's `weighted_clusters`: every cluster exists, some weight is non-zero.
fn weighted_clusters(cx: &Cx, wp: FieldPath, w: RawWeighted) -> Res<ClusterSpecifier> {
    let mut out = Vec::new();
    for (i, c) in w.clusters.into_iter().enumerate() {
        let name = cx.cluster_ref(wp.key("clusters").idx(i).key("name"), &c.name)?;
        out.push(WeightedCluster { name, weight: c.weight, ..WeightedCluster::default() });
    }
    let sum = some_weight(&wp, &out)?;
    if let Some(total) = w.total_weight {
        if u64::from(total) != sum {
            return fail(
                wp.key("total_weight"),
                format!("total_weight is {total} but the weights add up to {sum}"),
            );
        }
    }
    Ok(ClusterSpecifier::Weighted(out))
}

/// A route's `weighted_clusters`: as a tcp_proxy's, plus each entry's header edits.
/// `total_weight` is read and ignored, as Envoy 1.40 does.
fn route_weighted_clusters(cx: &Cx, wp: FieldPath, w: RawRouteWeighted) -> Res<ClusterSpecifier> {
    let mut out = Vec::new();
    for (i, c) in w.clusters.into_iter().enumerate() {
        let cp = wp.key("clusters").idx(i);
        out.push(WeightedCluster {
            name: cx.route_cluster(cp.key("name"), &c.name)?,
            weight: c.weight,
            request_headers_to_add: headers_to_add(
                cp.key("request_headers_to_add"),
                c.request_headers_to_add,
            )?,
            request_headers_to_remove: lower_all(c.request_headers_to_remove),
            response_headers_to_add: headers_to_add(
                cp.key("response_headers_to_add"),
                c.response_headers_to_add,
            )?,
            response_headers_to_remove: lower_all(c.response_headers_to_remove),
        });
    }
    some_weight(&wp, &out)?;
    Ok(ClusterSpecifier::Weighted(out))
}

/// The weights' sum, which must not be zero.
fn some_weight(wp: &FieldPath, list: &[WeightedCluster]) -> Res<u64> {
    let sum: u64 = list.iter().map(|c| u64::from(c.weight)).sum();
    if sum == 0 {
        return fail(
            wp.key("clusters"),
            "weighted_clusters needs at least one cluster with a non-zero weight",
        );
    }
    Ok(sum)
}

/// `request_mirror_policies` (v3) or `request_mirror_policy` (v2), not both.
fn mirrors(
    cx: &mut Cx,
    p: &FieldPath,
    one: Option<RawMirrorPolicy>,
    many: Option<Vec<RawMirrorPolicy>>,
) -> Res<Vec<MirrorPolicy>> {
    let list: Vec<(FieldPath, RawMirrorPolicy)> = match (one, many) {
        (Some(_), Some(_)) => {
            return fail(
                p.key("request_mirror_policy"),
                "give either request_mirror_policy or request_mirror_policies, not both",
            )
        }
        (Some(m), None) => vec![(p.key("request_mirror_policy"), m)],
        (None, Some(list)) => {
            list.into_iter().enumerate().map(|(i, m)| (p.key("request_mirror_policies").idx(i), m)).collect()
        }
        (None, None) => return Ok(Vec::new()),
    };
    let mut out = Vec::new();
    for (mp, m) in list {
        warn_present!(cx, mp, m, "request_mirror_policy", [trace_sampled]);
        let target = match (m.cluster, m.cluster_header) {
            (Some(c), None) => MirrorTarget::Cluster(cx.cluster_ref(mp.key("cluster"), &c)?),
            (None, Some(h)) if !h.is_empty() => MirrorTarget::Header(h.to_ascii_lowercase()),
            (Some(_), Some(_)) => return fail(mp, "give either cluster or cluster_header, not both"),
            _ => return fail(mp, "cluster or cluster_header is required"),
        };
        let fraction = match (m.runtime_fraction, m.runtime_key) {
            (Some(f), _) => match f.default_value {
                Some(v) => super::convert_filters::fraction_of(
                    mp.key("runtime_fraction").key("default_value"),
                    v.numerator,
                    v.denominator.as_deref(),
                )?,
                None => Fraction::NONE,
            },
            // v2: a runtime key with no runtime behind it is 0 %, as in Envoy without that key.
            (None, Some(_)) => Fraction::NONE,
            (None, None) => Fraction { per_million: 1_000_000, unit: 10_000 },
        };
        out.push(MirrorPolicy {
            target,
            fraction,
            shadow_suffix: !m.disable_shadow_host_suffix_append.unwrap_or(false),
        });
    }
    Ok(out)
}

/// The `retry_on` conditions skiff acts on (`refused-stream` is an HTTP/2 host's REFUSED_STREAM,
/// which an HTTP/1.1 upstream never sends; the gRPC codes are read
/// from a response head's `grpc-status`, as `route::GRPC_RETRY_ON` says).
const RETRY_ON_ENFORCED: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "connect-failure",
    "retriable-4xx",
    "retriable-status-codes",
    "retriable-headers",
    "refused-stream",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

const PREVIOUS_HOSTS: &str = "envoy.retry_host_predicates.previous_hosts";

fn retry(cx: &mut Cx, p: FieldPath, r: &RawRetry) -> Res<RetryPolicy> {
    warn_present!(
        cx,
        p,
        r,
        "retry_policy",
        [retriable_request_headers, rate_limited_retry_back_off, retry_priority]
    );
    let num_retries = r.num_retries.unwrap_or(1);
    if num_retries > MAX_NUM_RETRIES {
        return fail(
            p.key("num_retries"),
            format!("num_retries {num_retries} is too many (at most {MAX_NUM_RETRIES})"),
        );
    }
    let retry_on: Vec<String> = r
        .retry_on
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if retry_on.is_empty() {
        cx.warn(p.clone(), "retry_policy without retry_on never retries");
    }
    for on in &retry_on {
        if !RETRY_ON_ENFORCED.contains(&on.as_str()) {
            cx.warn(
                p.key("retry_on"),
                format!(
                    "retry_on \"{on}\" is not acted on by skiff (it retries on {})",
                    RETRY_ON_ENFORCED.join(", ")
                ),
            );
        }
    }
    let mut retriable_status_codes = Vec::new();
    for (i, code) in r.retriable_status_codes.iter().flatten().enumerate() {
        match u16::try_from(*code) {
            Ok(c @ 100..=599) => retriable_status_codes.push(c),
            _ => {
                return fail(p.key("retriable_status_codes").idx(i), format!("{code} is not an HTTP status"))
            }
        }
    }
    let mut retriable_headers = Vec::new();
    for (i, h) in r.retriable_headers.iter().flatten().enumerate() {
        retriable_headers.push(header_matcher(p.key("retriable_headers").idx(i), h.clone())?);
    }
    let mut back_off = BackOff::default();
    if let Some(b) = &r.retry_back_off {
        let bp = p.key("retry_back_off");
        let Some(base) = b.base_interval.map(|d| d.0) else {
            return fail(bp.key("base_interval"), "base_interval is required");
        };
        if base < Duration::from_millis(1) {
            return fail(bp.key("base_interval"), "base_interval must be at least 1ms");
        }
        let max = b.max_interval.map_or(base * 10, |d| d.0);
        if max < base {
            return fail(bp.key("max_interval"), "max_interval must not be less than base_interval");
        }
        back_off = BackOff { base, max };
    }
    let mut avoid_previous_hosts = false;
    for (i, pred) in r.retry_host_predicate.iter().flatten().enumerate() {
        let known = pred.name == PREVIOUS_HOSTS
            || pred
                .typed_config
                .as_ref()
                .and_then(|t| t.type_url.as_deref())
                .is_some_and(|t| t.ends_with(".PreviousHostsPredicate"));
        if !known {
            return fail(
                p.key("retry_host_predicate").idx(i).key("name"),
                format!("retry host predicate \"{}\" is not supported (only {PREVIOUS_HOSTS})", pred.name),
            );
        }
        avoid_previous_hosts = true;
    }
    let host_selection_attempts = match r.host_selection_retry_max_attempts {
        None => 1,
        Some(n @ 1..=16) => n as u32,
        Some(n) => {
            return fail(
                p.key("host_selection_retry_max_attempts"),
                format!("must be 1-16 in skiff, got {n}"),
            )
        }
    };
    Ok(RetryPolicy {
        retry_on,
        num_retries,
        per_try_timeout: r.per_try_timeout.and_then(|d| off_if_zero(d.0)),
        per_try_idle_timeout: r.per_try_idle_timeout.and_then(|d| off_if_zero(d.0)),
        retriable_status_codes,
        retriable_headers,
        back_off,
        avoid_previous_hosts,
        host_selection_attempts,
    })
}

fn redirect(p: FieldPath, r: RawRedirect) -> Res<Redirect> {
    reject_present!(p, r, [port_redirect, regex_rewrite], NOT_YET);
    if r.path_redirect.is_some() && r.prefix_rewrite.is_some() {
        return fail(p, "give either path_redirect or prefix_rewrite, not both");
    }
    let https_redirect = match (r.https_redirect, r.scheme_redirect.as_deref()) {
        (Some(_), Some(_)) => return fail(p, "give either https_redirect or scheme_redirect, not both"),
        (Some(b), None) => b,
        (None, Some(s)) if s.eq_ignore_ascii_case("https") => true,
        (None, Some(s)) if s.eq_ignore_ascii_case("http") => false,
        (None, Some(s)) => {
            return fail(
                p.key("scheme_redirect"),
                format!("scheme_redirect must be http or https, got \"{s}\""),
            )
        }
        (None, None) => false,
    };
    Ok(Redirect {
        host_redirect: r.host_redirect,
        path_redirect: r.path_redirect,
        prefix_rewrite: r.prefix_rewrite,
        https_redirect,
        status: r.response_code.map_or(301, |c| c.0 .0),
        strip_query: r.strip_query.unwrap_or(false),
    })
}

const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// The cluster's HTTP version to its hosts, from the v2 `http2_protocol_options` or the v3
/// `HttpProtocolOptions` extension, and the extension's `common_http_protocol_options` (with its
/// path), which the cluster reads as it reads its own.
fn upstream_protocol(
    cx: &mut Cx,
    p: &FieldPath,
    v2: Option<RawHttp2Options>,
    typed: Option<std::collections::BTreeMap<String, RawHttpProtocolOptions>>,
    tls: bool,
) -> Res<(UpstreamProtocol, Option<(FieldPath, RawCommonHttp)>)> {
    let mut protocol = match v2 {
        Some(h) => UpstreamProtocol::Http2(upstream_http2(cx, p.key("http2_protocol_options"), h)?),
        None => UpstreamProtocol::Http1,
    };
    let mut common = None;
    for (name, o) in typed.unwrap_or_default() {
        let tp = p.key("typed_extension_protocol_options").key(&name);
        let url_ok = o
            .type_url
            .as_deref()
            .is_none_or(|u| u.strip_prefix("type.googleapis.com/") == Some(HTTP_PROTOCOL_OPTIONS));
        if name != HTTP_PROTOCOL_OPTIONS || !url_ok {
            return fail(tp, format!("only {HTTP_PROTOCOL_OPTIONS} is supported here"));
        }
        reject_present!(tp, o, [http_filters, header_validation_config, outlier_detection], NOT_YET);
        warn_present!(
            cx,
            tp,
            o,
            "cluster.typed_extension_protocol_options",
            [upstream_http_protocol_options]
        );
        common = o.common_http_protocol_options.map(|c| (tp.key("common_http_protocol_options"), c));
        let chosen = [
            o.explicit_http_config.is_some(),
            o.use_downstream_protocol_config.is_some(),
            o.auto_config.is_some(),
        ];
        if chosen.iter().filter(|c| **c).count() != 1 {
            return fail(
                tp,
                "give exactly one of explicit_http_config, use_downstream_protocol_config and auto_config",
            );
        }
        if !matches!(protocol, UpstreamProtocol::Http1) {
            return fail(tp, "http2_protocol_options is also set on the cluster (give it in one place)");
        }
        if let Some(e) = o.explicit_http_config {
            let ep = tp.key("explicit_http_config");
            reject_present!(ep, e, [http3_protocol_options], "skiff speaks HTTP/1.1 and HTTP/2 to upstreams");
            protocol = match (e.http_protocol_options.is_some(), e.http2_protocol_options) {
                (true, None) => {
                    cx.unenforced(ep.key("http_protocol_options"), "cluster.http_protocol_options");
                    UpstreamProtocol::Http1
                }
                (false, Some(h)) => {
                    UpstreamProtocol::Http2(upstream_http2(cx, ep.key("http2_protocol_options"), h)?)
                }
                _ => return fail(ep, "give exactly one of http_protocol_options and http2_protocol_options"),
            };
        }
        if let Some(d) = o.use_downstream_protocol_config {
            let dp = tp.key("use_downstream_protocol_config");
            reject_present!(dp, d, [http3_protocol_options, alternate_protocols_cache_options], NOT_YET);
            if d.http_protocol_options.is_some() {
                cx.unenforced(dp.key("http_protocol_options"), "cluster.http_protocol_options");
            }
            let h2 = d.http2_protocol_options.unwrap_or_default();
            protocol =
                UpstreamProtocol::Downstream(upstream_http2(cx, dp.key("http2_protocol_options"), h2)?);
        }
        if let Some(a) = o.auto_config {
            // Envoy picks by ALPN over TLS and speaks HTTP/1.1 without it.
            let ap = tp.key("auto_config");
            reject_present!(ap, a, [http3_protocol_options, alternate_protocols_cache_options], NOT_YET);
            if a.http_protocol_options.is_some() {
                cx.unenforced(ap.key("http_protocol_options"), "cluster.http_protocol_options");
            }
            let h2 = upstream_http2(
                cx,
                ap.key("http2_protocol_options"),
                a.http2_protocol_options.unwrap_or_default(),
            )?;
            protocol = if tls { UpstreamProtocol::Auto(h2) } else { UpstreamProtocol::Http1 };
        }
    }
    Ok((protocol, common))
}

/// A cluster's `http2_protocol_options`: custom SETTINGS are refused; the limits on what a host
/// sends are warned about (h2 enforces its own defaults); `allow_connect` and `allow_metadata`
/// change nothing a connection to an upstream does here.
fn upstream_http2(cx: &mut Cx, p: FieldPath, h: RawHttp2Options) -> Res<Http2Options> {
    reject_present!(p, h, [custom_settings_parameters], NOT_YET);
    warn_present!(
        cx,
        p,
        h,
        "cluster.http2_protocol_options",
        [
            max_outbound_frames,
            max_outbound_control_frames,
            max_consecutive_inbound_frames_with_empty_payload,
            max_inbound_priority_frames_per_stream,
            max_inbound_window_update_frames_per_data_frame_sent,
            connection_keepalive,
            max_metadata_size
        ]
    );
    http2_settings(&p, &h)
}

fn cluster(cx: &mut Cx, p: FieldPath, c: RawCluster) -> Res<Cluster> {
    reject_present!(p, c, [tls_context], "use transport_socket (v3) for TLS");
    reject_present!(p, c, [transport_socket_matches], NOT_YET);
    let tls = match &c.transport_socket {
        Some(s) => super::convert_tls::upstream(&p.key("transport_socket"), s, &cx.secrets)?,
        None => None,
    };
    let (protocol, typed_common) = upstream_protocol(
        cx,
        &p,
        c.http2_protocol_options,
        c.typed_extension_protocol_options,
        tls.is_some(),
    )?;
    // Envoy offers `h2` over TLS to an HTTP/2 cluster whose context names no ALPN, and `h2` then
    // `http/1.1` to an `auto_config` one.
    let offer: &[&[u8]] = match protocol {
        UpstreamProtocol::Http2(_) => &[b"h2"],
        UpstreamProtocol::Auto(_) => &[b"h2", b"http/1.1"],
        _ => &[],
    };
    let tls = match tls {
        Some(mut t) if t.config.alpn_protocols.is_empty() && !offer.is_empty() => {
            let mut config = (*t.config).clone();
            config.alpn_protocols = offer.iter().map(|p| p.to_vec()).collect();
            t.config = std::sync::Arc::new(config);
            Some(t)
        }
        t => t,
    };
    reject_present!(p, c, [cluster_type, filters, load_balancing_policy], NOT_YET);
    let outlier_detection = match c.outlier_detection {
        Some(o) => Some(super::lb::outlier_detection(p.key("outlier_detection"), o)?),
        None => None,
    };
    let hash_table = super::lb::hash_table(&p, c.ring_hash_lb_config, c.maglev_lb_config)?;
    let lb_policy = c.lb_policy.map_or(LbPolicy::RoundRobin, |l| l.0);
    let least_request = match c.least_request_lb_config {
        Some(raw) => {
            let lp = p.key("least_request_lb_config");
            warn_present!(cx, lp, raw, "cluster.least_request_lb_config", [slow_start_config]);
            let (lr, bad_bias) = super::lb::least_request(&p, raw)?;
            if bad_bias {
                cx.warn(
                    lp.key("active_request_bias"),
                    "active_request_bias must be a number at least 0; using 1.0, as Envoy does",
                );
            }
            lr
        }
        None => Default::default(),
    };
    warn_present!(
        cx,
        p,
        c,
        "cluster",
        [
            http_protocol_options,
            upstream_http_protocol_options,
            per_connection_buffer_limit_bytes,
            round_robin_lb_config,
            original_dst_lb_config,
            protocol_selection,
            track_timeout_budgets,
            track_cluster_stats,
            alt_stat_name,
            preconnect_policy
        ]
    );
    warn_present!(
        cx,
        p,
        c,
        "cluster",
        [
            typed_dns_resolver_config,
            use_tcp_for_dns_lookups,
            lb_subset_config,
            upstream_bind_config,
            dns_failure_refresh_rate,
            connection_pool_per_downstream_connection
        ]
    );
    if c.respect_dns_ttl == Some(true) {
        cx.unenforced(p.key("respect_dns_ttl"), "cluster.respect_dns_ttl");
    }
    if c.name.is_empty() {
        return fail(p.key("name"), "cluster name must not be empty");
    }
    let discovery = c.discovery.map_or(DiscoveryType::Static, |d| d.0);
    let connect_timeout = c.connect_timeout.map_or(Duration::from_secs(5), |d| d.0);
    if connect_timeout.is_zero() {
        return fail(p.key("connect_timeout"), "connect_timeout must be greater than 0s");
    }
    let dns_refresh_rate = c.dns_refresh_rate.map_or(Duration::from_secs(5), |d| d.0);
    // Envoy requires at least 1 ms; a zero rate would spin the resolver.
    if dns_refresh_rate < Duration::from_millis(1) {
        return fail(
            p.key("dns_refresh_rate"),
            format!("dns_refresh_rate must be at least 0.001s, got {}", fmt_secs(dns_refresh_rate)),
        );
    }

    if let Some(lb) = &c.common_lb_config {
        let lp = p.key("common_lb_config");
        warn_present!(
            cx,
            lp,
            lb,
            "cluster.common_lb_config",
            [
                zone_aware_lb_config,
                update_merge_window,
                ignore_new_hosts_until_first_hc,
                close_connections_on_host_set_change,
                consistent_hashing_lb_config,
                override_host_status
            ]
        );
        if lb.locality_weighted_lb_config.is_some()
            && matches!(lb_policy, LbPolicy::RingHash | LbPolicy::Maglev)
        {
            cx.unenforced(
                lp.key("locality_weighted_lb_config"),
                "cluster.common_lb_config.locality_weighted_lb_config",
            );
        }
    }
    let locality_weighted =
        c.common_lb_config.as_ref().is_some_and(|lb| lb.locality_weighted_lb_config.is_some());
    let mut localities: Vec<Locality> = Vec::new();
    // An EDS cluster's assignment is its file's, found by service name.
    let (lap, load_assignment, eds) = if discovery == DiscoveryType::Eds {
        if c.hosts.is_some() || c.load_assignment.is_some() {
            return fail(
                p,
                "an EDS cluster takes its endpoints from eds_cluster_config, not hosts or load_assignment",
            );
        }
        let Some(ec) = c.eds_cluster_config else {
            return fail(p, "an EDS cluster needs eds_cluster_config");
        };
        let (lap, la, eds) = eds_assignment(cx, p.key("eds_cluster_config"), ec, &c.name)?;
        (lap, la, Some(eds))
    } else {
        if c.eds_cluster_config.is_some() {
            return fail(p.key("eds_cluster_config"), "eds_cluster_config belongs to a cluster of type EDS");
        }
        if c.load_assignment.as_ref().is_some_and(|la| la.type_url.is_some()) {
            return fail(
                p.key("load_assignment").key("@type"),
                "\"@type\" belongs to a resource in an endpoint file",
            );
        }
        (p.key("load_assignment"), c.load_assignment, None)
    };
    let policy = load_assignment.as_ref().and_then(|la| la.policy.as_ref());
    if let Some(po) = policy {
        let pp = lap.key("policy");
        warn_present!(
            cx,
            pp,
            po,
            "load_assignment.policy",
            [drop_overloads, endpoint_stale_after, weighted_priority_health]
        );
    }
    let lb_health = convert_health::lb_health(&p, c.common_lb_config.as_ref(), policy)?;
    let mut health_checks = Vec::new();
    for (i, h) in c.health_checks.unwrap_or_default().into_iter().enumerate() {
        let hp = p.key("health_checks").idx(i);
        warn_present!(cx, hp, h, "cluster.health_checks", [event_log_path, event_logger, event_service]);
        if let Some(http) = &h.http_health_check {
            let tp = hp.key("http_health_check");
            warn_present!(cx, tp, http, "cluster.health_checks.http_health_check", [response_buffer_size]);
        }
        health_checks.push(convert_health::health_check(hp, &c.name, h)?);
    }
    if health_checks.len() > 1 {
        return fail(p.key("health_checks").idx(1), "skiff runs one health check per cluster");
    }

    let mut endpoints = Vec::new();
    let mut endpoint_paths = Vec::new();
    match (c.hosts, load_assignment) {
        (Some(_), Some(_)) => return fail(p, "give either hosts (v2) or load_assignment (v3), not both"),
        (Some(hosts), None) => {
            // One unnamed locality, as Envoy converts v2 hosts.
            if !hosts.is_empty() {
                localities.push(Locality::default());
            }
            for (i, h) in hosts.into_iter().enumerate() {
                let hp = p.key("hosts").idx(i);
                endpoints.push(endpoint(hp.clone(), h, 1, 0)?);
                endpoint_paths.push(hp);
            }
        }
        (None, Some(la)) => {
            let lp = lap.clone();
            if let (Some(n), None) = (&la.cluster_name, &eds) {
                if *n != c.name {
                    cx.warn(
                        lp.key("cluster_name"),
                        format!(
                            "load_assignment.cluster_name \"{n}\" differs from the cluster name \"{}\"",
                            c.name
                        ),
                    );
                }
            }
            reject_present!(lp, la, [named_endpoints], NOT_YET);
            for (i, loc) in la.endpoints.unwrap_or_default().into_iter().enumerate() {
                let locp = lp.key("endpoints").idx(i);
                reject_present!(locp, loc, [leds_cluster_locality_config], NOT_YET);
                let priority = loc.priority.unwrap_or(0);
                if loc.load_balancing_weight == Some(0) {
                    return fail(
                        locp.key("load_balancing_weight"),
                        "load_balancing_weight must be at least 1",
                    );
                }
                let named = loc.locality.is_some();
                let name = loc.locality.unwrap_or(super::raw::RawLocalityName {
                    region: None,
                    zone: None,
                    sub_zone: None,
                });
                let this = Locality {
                    priority,
                    region: name.region.unwrap_or_default(),
                    zone: name.zone.unwrap_or_default(),
                    sub_zone: name.sub_zone.unwrap_or_default(),
                    weight: 0,
                };
                let same = |l: &Locality| Locality { weight: 0, ..l.clone() } == this;
                let index = match localities.iter().position(same) {
                    Some(at) => at,
                    None => {
                        localities.push(this);
                        localities.len() - 1
                    }
                };
                if let (true, Some(w), Some(l)) =
                    (named, loc.load_balancing_weight, localities.get_mut(index))
                {
                    l.weight = w;
                }
                for (j, lb) in loc.lb_endpoints.unwrap_or_default().into_iter().enumerate() {
                    let lbp = locp.key("lb_endpoints").idx(j);
                    let weight = lb.load_balancing_weight.unwrap_or(1);
                    if weight == 0 {
                        return fail(
                            lbp.key("load_balancing_weight"),
                            "load_balancing_weight must be at least 1",
                        );
                    }
                    let Some(ep) = lb.endpoint else {
                        return fail(lbp, "lb_endpoint needs an endpoint");
                    };
                    let ap = lbp.key("endpoint").key("address");
                    let mut e = endpoint(ap.clone(), ep.address, weight, priority)?;
                    e.locality = index as u32;
                    e.health = lb.health_status.map_or(HealthStatus::Unknown, |h| h.0);
                    if let Some(hc) = ep.health_check_config {
                        let hp = lbp.key("endpoint").key("health_check_config");
                        reject_present!(hp, hc, [address], NOT_YET);
                        if hc.disable_active_health_check == Some(true) {
                            return fail(
                                hp.key("disable_active_health_check"),
                                "disable_active_health_check is not supported: not yet implemented in skiff",
                            );
                        }
                        e.check_port = hc.port_value.map(|p| p.0).filter(|p| *p != 0);
                        e.check_host = hc.hostname.filter(|h| !h.is_empty());
                    }
                    endpoints.push(e);
                    endpoint_paths.push(ap);
                }
            }
        }
        (None, None) => {}
    }
    for (e, ep) in endpoints.iter().zip(&endpoint_paths) {
        if discovery == DiscoveryType::Eds && e.host.parse::<std::net::IpAddr>().is_err() {
            let ap = ep.key("socket_address").key("address");
            return fail(ap, format!("an EDS endpoint needs an IP address, got \"{}\"", e.host));
        }
        if discovery == DiscoveryType::Static && e.host.parse::<std::net::IpAddr>().is_err() {
            return fail(
                ep.key("socket_address").key("address"),
                format!(
                    "a STATIC cluster needs IP addresses, got \"{}\" (use type: STRICT_DNS for host names)",
                    e.host
                ),
            );
        }
    }
    if discovery == DiscoveryType::LogicalDns && endpoints.len() != 1 {
        return fail(p, format!("a LOGICAL_DNS cluster needs exactly one endpoint, got {}", endpoints.len()));
    }

    let mut dns_resolvers = Vec::new();
    if let Some(list) = c.dns_resolvers {
        for (i, a) in list.into_iter().enumerate() {
            dns_resolvers.push(bind_address(p.key("dns_resolvers").idx(i), a)?);
        }
    }
    if let Some(drc) = c.dns_resolution_config {
        let dp = p.key("dns_resolution_config");
        if !dns_resolvers.is_empty() {
            return fail(dp, "give either dns_resolvers or dns_resolution_config, not both");
        }
        warn_present!(cx, dp, drc, "cluster.dns_resolution_config", [dns_resolver_options]);
        for (i, a) in drc.resolvers.unwrap_or_default().into_iter().enumerate() {
            dns_resolvers.push(bind_address(dp.key("resolvers").idx(i), a)?);
        }
    }

    let mut max_requests_per_connection = c.max_requests_per_connection;
    let mut idle_timeout = Duration::from_secs(3600);
    let mut max_connection_duration = None;
    let mut max_headers_count = MAX_HEADERS;
    let common = match (c.common_http_protocol_options, typed_common) {
        (Some(_), Some((tp, _))) => {
            return fail(tp, "common_http_protocol_options is also set on the cluster (give it in one place)")
        }
        (Some(ch), None) => Some((p.key("common_http_protocol_options"), ch)),
        (None, t) => t,
    };
    if let Some((chp, ch)) = common {
        warn_present!(
            cx,
            chp,
            ch,
            "cluster.common_http_protocol_options",
            [max_stream_duration, headers_with_underscores_action, max_response_headers_kb]
        );
        if let Some(t) = ch.idle_timeout {
            idle_timeout = zero_is_never(t.0);
        }
        max_connection_duration = ch.max_connection_duration.and_then(|d| off_if_zero(d.0));
        max_headers_count = headers_count(chp.key("max_headers_count"), ch.max_headers_count)?;
        if ch.max_requests_per_connection.is_some() {
            if max_requests_per_connection.is_some() {
                return fail(
                    chp.key("max_requests_per_connection"),
                    "max_requests_per_connection is also set on the cluster",
                );
            }
            max_requests_per_connection = ch.max_requests_per_connection;
        }
    }
    // Envoy reads 0 as "no limit".
    let max_requests_per_connection = max_requests_per_connection.filter(|n| *n > 0);

    let circuit_breakers = match c.circuit_breakers {
        Some(cb) => circuit_breakers(cx, &p.key("circuit_breakers"), cb)?,
        None => CircuitBreakers::default(),
    };

    Ok(Cluster {
        tls,
        name: c.name,
        discovery,
        eds,
        connect_timeout,
        lb_policy,
        dns_refresh_rate,
        dns_lookup_family: c.dns_lookup_family.map_or(DnsLookupFamily::Auto, |f| f.0),
        dns_resolvers,
        endpoints,
        max_requests_per_connection,
        idle_timeout,
        max_connection_duration,
        max_headers_count,
        tcp_keepalive: match c.upstream_connection_options {
            Some(o) => {
                let op = p.key("upstream_connection_options");
                warn_present!(
                    cx,
                    op,
                    o,
                    "cluster.upstream_connection_options",
                    [set_local_interface_name_on_upstream_connections, happy_eyeballs_config]
                );
                o.tcp_keepalive.map(|k| TcpKeepalive {
                    probes: k.keepalive_probes,
                    time: k.keepalive_time.map(|s| Duration::from_secs(s.into())),
                    interval: k.keepalive_interval.map(|s| Duration::from_secs(s.into())),
                })
            }
            None => None,
        },
        circuit_breakers,
        outlier_detection,
        hash_table,
        least_request,
        localities,
        locality_weighted,
        lb_health,
        health_checks,
        protocol,
    })
}

/// A cluster's DEFAULT-priority thresholds and per-host connection cap, with Envoy's defaults.
fn circuit_breakers(cx: &mut Cx, cbp: &FieldPath, cb: RawCircuitBreakers) -> Res<CircuitBreakers> {
    let mut out = CircuitBreakers::default();
    let high = |cx: &mut Cx, tp: &FieldPath| {
        cx.unenforced(tp.key("priority"), "cluster.circuit_breakers.thresholds.priority");
    };
    if let Some((tp, t)) = default_threshold(cx, cbp, "thresholds", cb.thresholds, high, |cx, tp, t| {
        warn_present!(cx, tp, t, "cluster.circuit_breakers.thresholds", [max_connection_pools]);
        Ok(())
    })? {
        let d = CircuitBreakers::default();
        out = CircuitBreakers {
            max_connections: t.max_connections.unwrap_or(d.max_connections),
            max_pending_requests: t.max_pending_requests.unwrap_or(d.max_pending_requests),
            max_requests: t.max_requests.unwrap_or(d.max_requests),
            max_retries: t.max_retries.unwrap_or(d.max_retries),
            track_remaining: t.track_remaining.unwrap_or(false),
            retry_budget: match t.retry_budget {
                Some(b) => Some(retry_budget(&tp.key("retry_budget"), b)?),
                None => None,
            },
            max_connections_per_host: None,
        };
    }
    let high = |cx: &mut Cx, tp: &FieldPath| {
        cx.unenforced(tp.key("priority"), "cluster.circuit_breakers.per_host_thresholds.priority");
    };
    let per_host =
        default_threshold(cx, cbp, "per_host_thresholds", cb.per_host_thresholds, high, |_, tp, t| {
            // Envoy refuses every per-host limit but max_connections with this message (and
            // accepts `track_remaining`, which publishes nothing per host).
            reject_per_host!(
                tp,
                t,
                [max_pending_requests, max_requests, max_retries, retry_budget, max_connection_pools]
            );
            Ok(())
        })?;
    out.max_connections_per_host = per_host.and_then(|(_, t)| t.max_connections);
    Ok(out)
}

/// The DEFAULT-priority entry of the list `field` (each entry checked by `check` first): a HIGH
/// one is handed to `high` (skiff routes everything at DEFAULT priority), a second DEFAULT one
/// refused.
fn default_threshold(
    cx: &mut Cx,
    cbp: &FieldPath,
    field: &'static str,
    list: Option<Vec<RawThreshold>>,
    high: impl Fn(&mut Cx, &FieldPath),
    check: impl Fn(&mut Cx, &FieldPath, &RawThreshold) -> Res<()>,
) -> Res<Option<(FieldPath, RawThreshold)>> {
    let mut found = None;
    for (i, t) in list.unwrap_or_default().into_iter().enumerate() {
        let tp = cbp.key(field).idx(i);
        check(cx, &tp, &t)?;
        if t.priority.is_some_and(|p| p.0 == RoutingPriority::High) {
            high(cx, &tp);
            continue;
        }
        if found.is_some() {
            return fail(tp, format!("DEFAULT priority {field} are given twice"));
        }
        found = Some((tp, t));
    }
    Ok(found)
}

/// A `retry_budget`, with Envoy's defaults (20 %, 3): an empty one is a budget too (observed:
/// Envoy 1.40 then retries past `max_retries: 0`).
fn retry_budget(p: &FieldPath, b: RawRetryBudget) -> Res<RetryBudget> {
    let budget_percent = b.budget_percent.and_then(|v| v.value).unwrap_or(20.0);
    if !(0.0..=100.0).contains(&budget_percent) {
        let vp = p.key("budget_percent").key("value");
        return fail(vp, format!("budget_percent must be between 0 and 100, got {budget_percent}"));
    }
    Ok(RetryBudget { budget_percent, min_retry_concurrency: b.min_retry_concurrency.unwrap_or(3) })
}

fn endpoint(p: FieldPath, a: RawHostAddress, weight: u32, priority: u32) -> Res<Endpoint> {
    if a.pipe.is_some() {
        return fail(p.key("pipe"), "pipe (unix socket) addresses are not supported");
    }
    if a.envoy_internal_address.is_some() {
        return fail(p.key("envoy_internal_address"), "internal addresses are not supported");
    }
    let Some(s) = a.socket_address else {
        return fail(p, "socket_address is required");
    };
    let sp = p.key("socket_address");
    if s.resolver_name.is_some() {
        return fail(sp.key("resolver_name"), "custom resolvers are not supported");
    }
    let Some(port) = s.port_value else {
        return fail(sp, "port_value is required");
    };
    if port.0 == 0 {
        return fail(sp.key("port_value"), "an upstream port must not be 0");
    }
    if s.address.is_empty() {
        return fail(sp.key("address"), "address must not be empty");
    }
    // Brackets are how operators write IPv6 in URLs; the model wants the bare literal.
    let host = s.address.trim_start_matches('[').trim_end_matches(']').to_string();
    Ok(Endpoint {
        host,
        port: port.0,
        weight,
        priority,
        locality: 0,
        health: HealthStatus::Unknown,
        check_port: None,
        check_host: None,
    })
}

/// `forward_client_cert_details` (default SANITIZE) and `set_current_client_cert_details`.
fn client_cert(
    p: &FieldPath,
    mode: Option<String>,
    details: Option<super::raw::RawClientCertDetails>,
) -> Res<ClientCert> {
    let mode = match mode.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("SANITIZE") => ForwardClientCert::Sanitize,
        Some("FORWARD_ONLY") => ForwardClientCert::ForwardOnly,
        Some("APPEND_FORWARD") => ForwardClientCert::AppendForward,
        Some("SANITIZE_SET") => ForwardClientCert::SanitizeSet,
        Some("ALWAYS_FORWARD_ONLY") => ForwardClientCert::AlwaysForwardOnly,
        Some(other) => {
            return fail(
                p.key("forward_client_cert_details"),
                format!("unknown forward_client_cert_details \"{other}\", expected SANITIZE, FORWARD_ONLY, APPEND_FORWARD, SANITIZE_SET or ALWAYS_FORWARD_ONLY"),
            )
        }
    };
    let d = details.unwrap_or(super::raw::RawClientCertDetails {
        subject: None,
        cert: None,
        chain: None,
        dns: None,
        uri: None,
    });
    if d.chain == Some(true) {
        return fail(
            p.key("set_current_client_cert_details").key("chain"),
            "chain is not supported: Envoy writes the chain it verified (trust anchor included), which skiff does not rebuild",
        );
    }
    Ok(ClientCert {
        mode,
        subject: d.subject.unwrap_or(false),
        cert: d.cert.unwrap_or(false),
        dns: d.dns.unwrap_or(false),
        uri: d.uri.unwrap_or(false),
    })
}
