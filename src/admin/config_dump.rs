//! Envoy's `/config_dump`: the running configuration as v3 protobuf JSON.
//!
//! Envoy dumps the config as loaded, not what it resolved to: cluster endpoints keep their host
//! names, listeners their configured address (port 0 stays 0). skiff does the same, from the
//! snapshot's `bootstrap`. The output follows protobuf's JSON mapping with the proto field names
//! Envoy prints: durations as `"0.250s"`, enums by upper-case name, fields at their proto3 default
//! left out (so `type: STATIC`, `lb_policy: ROUND_ROBIN`, `dns_lookup_family: AUTO` do not appear,
//! exactly as in Envoy). Timeouts whose default is skiff's own (request_headers_timeout) or that
//! operators look for (route timeout, idle_timeout, dns_refresh_rate) are written explicitly.
//!
//! The `bootstrap` object is itself a valid skiff/Envoy v3 config: loading it again gives an equal
//! model (the tests check this), so a dump can be fed back to `--config-path`.

use crate::config::*;
use crate::snapshot::Snapshot;
use serde_json::{json, Map, Value};
use std::time::Duration;

const BOOTSTRAP_DUMP: &str = "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump";
const CLUSTERS_DUMP: &str = "type.googleapis.com/envoy.admin.v3.ClustersConfigDump";
const LISTENERS_DUMP: &str = "type.googleapis.com/envoy.admin.v3.ListenersConfigDump";
const ROUTES_DUMP: &str = "type.googleapis.com/envoy.admin.v3.RoutesConfigDump";
const SECRETS_DUMP: &str = "type.googleapis.com/envoy.admin.v3.SecretsConfigDump";
const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const ROUTE_CONFIG: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
const HCM: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const TCP_PROXY: &str = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const NET_LOCAL_RATELIMIT: &str =
    "type.googleapis.com/envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit";
const CONNECTION_LIMIT: &str =
    "type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit";
const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
const JWT_PER_ROUTE: &str = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig";
const LOCAL_RATELIMIT: &str =
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";
const FAULT: &str = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";
const CORS: &str = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors";
const CORS_POLICY: &str = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy";
const CSRF: &str = "type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy";
const RBAC: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";
const NET_RBAC: &str = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC";
const RBAC_PER_ROUTE: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute";
const EXT_AUTHZ: &str = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz";
const EXT_AUTHZ_PER_ROUTE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute";
const FILE_LOG: &str = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog";
const STDOUT_LOG: &str = "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";
const STDERR_LOG: &str = "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog";
const ZIPKIN: &str = "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig";
const OTEL: &str = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig";

/// The `?resource=` names Envoy accepts for the config types skiff dumps, with the `@type` of one
/// element. Warming clusters and dynamic route configs are always empty (files apply at once;
/// no RDS) but are valid names, so Envoy tooling asking for them gets `{"configs": []}` rather
/// than an error.
pub const RESOURCES: &[(&str, &str)] = &[
    ("static_clusters", "type.googleapis.com/envoy.admin.v3.ClustersConfigDump.StaticCluster"),
    ("dynamic_active_clusters", "type.googleapis.com/envoy.admin.v3.ClustersConfigDump.DynamicCluster"),
    ("dynamic_warming_clusters", "type.googleapis.com/envoy.admin.v3.ClustersConfigDump.DynamicCluster"),
    ("static_listeners", "type.googleapis.com/envoy.admin.v3.ListenersConfigDump.StaticListener"),
    ("dynamic_listeners", "type.googleapis.com/envoy.admin.v3.ListenersConfigDump.DynamicListener"),
    ("static_route_configs", "type.googleapis.com/envoy.admin.v3.RoutesConfigDump.StaticRouteConfig"),
    ("dynamic_route_configs", "type.googleapis.com/envoy.admin.v3.RoutesConfigDump.DynamicRouteConfig"),
    ("static_secrets", "type.googleapis.com/envoy.admin.v3.SecretsConfigDump.StaticSecret"),
    ("dynamic_active_secrets", "type.googleapis.com/envoy.admin.v3.SecretsConfigDump.DynamicSecret"),
];

/// The whole `/config_dump` of the running snapshot.
pub fn render(snapshot: &Snapshot) -> Value {
    render_bootstrap(&snapshot.bootstrap)
}

/// The `/config_dump` of a bootstrap; `render` without needing a built snapshot.
pub fn render_bootstrap(b: &Bootstrap) -> Value {
    let (mut static_listeners, mut dynamic_listeners) = (Vec::new(), Vec::new());
    for l in listeners(b) {
        let name = l.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        if b.xds.dynamic_listeners.contains(&name) {
            dynamic_listeners.push((name, l));
        } else {
            static_listeners.push(l);
        }
    }
    let (mut static_clusters, mut dynamic_clusters) = (Vec::new(), Vec::new());
    for c in &b.clusters {
        if b.xds.dynamic_clusters.contains(&c.name) {
            dynamic_clusters.push(cluster(c));
        } else {
            static_clusters.push(cluster(c));
        }
    }

    let mut bootstrap = Map::new();
    let mut node = Map::new();
    for (key, value) in [("id", &b.xds.node_id), ("cluster", &b.xds.node_cluster)] {
        if !value.is_empty() {
            node.insert(key.into(), value.clone().into());
        }
    }
    if !node.is_empty() {
        bootstrap.insert("node".into(), Value::Object(node));
    }
    if let Some(a) = &b.admin {
        bootstrap.insert("admin".into(), admin(a));
    }
    let mut static_resources = json!({ "listeners": static_listeners, "clusters": static_clusters });
    if !b.secrets.is_empty() {
        let secrets: Vec<Value> = b.secrets.iter().map(|s| s.secret.clone()).collect();
        static_resources["secrets"] = secrets.into();
    }
    bootstrap.insert("static_resources".into(), static_resources);
    if b.xds.lds.is_some() || b.xds.cds.is_some() {
        bootstrap.insert("dynamic_resources".into(), dynamic_resources(&b.xds));
    }

    let mut clusters_dump = Map::new();
    clusters_dump.insert("@type".into(), CLUSTERS_DUMP.into());
    let cds = b.xds.applied(Doc::Cds);
    version_info(&mut clusters_dump, cds);
    let static_clusters: Vec<Value> =
        static_clusters.iter().map(|c| json!({ "cluster": with_type(CLUSTER, c) })).collect();
    clusters_dump.insert("static_clusters".into(), static_clusters.into());
    if !dynamic_clusters.is_empty() {
        let active: Vec<Value> = dynamic_clusters
            .iter()
            .map(|c| {
                let mut m = Map::new();
                version_info(&mut m, cds);
                m.insert("cluster".into(), with_type(CLUSTER, c));
                last_updated(&mut m, cds);
                Value::Object(m)
            })
            .collect();
        clusters_dump.insert("dynamic_active_clusters".into(), active.into());
    }

    let mut listeners_dump = Map::new();
    listeners_dump.insert("@type".into(), LISTENERS_DUMP.into());
    let lds = b.xds.applied(Doc::Lds);
    version_info(&mut listeners_dump, lds);
    let static_listeners: Vec<Value> =
        static_listeners.iter().map(|l| json!({ "listener": with_type(LISTENER, l) })).collect();
    listeners_dump.insert("static_listeners".into(), static_listeners.into());
    if !dynamic_listeners.is_empty() {
        let dynamic: Vec<Value> = dynamic_listeners
            .iter()
            .map(|(name, l)| {
                let mut state = Map::new();
                version_info(&mut state, lds);
                state.insert("listener".into(), with_type(LISTENER, l));
                last_updated(&mut state, lds);
                json!({ "name": name, "active_state": state })
            })
            .collect();
        listeners_dump.insert("dynamic_listeners".into(), dynamic.into());
    }

    // Inline route configs, wherever their listener came from (Envoy lists an LDS listener's
    // inline routes among the static ones too: only RDS makes them dynamic).
    let static_route_configs: Vec<Value> = b
        .listeners
        .iter()
        .filter(|l| l.hcm.rds.is_none())
        .map(|l| json!({ "route_config": with_type(ROUTE_CONFIG, &route_config(&l.hcm.route_config)) }))
        .collect();
    // Route configurations from files, each once however many connection managers name it.
    let mut dynamic_route_configs: Vec<Value> = Vec::new();
    let mut seen = Vec::new();
    for (h, r) in b.listeners.iter().filter_map(|l| l.hcm.rds.as_ref().map(|r| (&l.hcm, r))) {
        let key = (&r.source.path, &r.route_config_name);
        if r.applied.is_none() || seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let mut m = Map::new();
        version_info(&mut m, r.applied.as_ref());
        m.insert("route_config".into(), with_type(ROUTE_CONFIG, &route_config(&h.route_config)));
        last_updated(&mut m, r.applied.as_ref());
        dynamic_route_configs.push(Value::Object(m));
    }
    let mut routes_dump = Map::new();
    routes_dump.insert("@type".into(), ROUTES_DUMP.into());
    routes_dump.insert("static_route_configs".into(), static_route_configs.into());
    if !dynamic_route_configs.is_empty() {
        routes_dump.insert("dynamic_route_configs".into(), dynamic_route_configs.into());
    }

    let mut configs = vec![
        json!({ "@type": BOOTSTRAP_DUMP, "bootstrap": Value::Object(bootstrap) }),
        Value::Object(clusters_dump),
        Value::Object(listeners_dump),
        Value::Object(routes_dump),
    ];
    // Envoy prints an empty SecretsConfigDump too; skiff only when there are secrets.
    let sds = b.sds_secrets();
    if !b.secrets.is_empty() || !sds.is_empty() {
        let mut dump = Map::new();
        dump.insert("@type".into(), SECRETS_DUMP.into());
        if !b.secrets.is_empty() {
            let secrets: Vec<Value> = b
                .secrets
                .iter()
                .map(|s| json!({ "name": s.name, "secret": with_type(SECRET, &s.secret) }))
                .collect();
            dump.insert("static_secrets".into(), secrets.into());
        }
        if !sds.is_empty() {
            let secrets: Vec<Value> = sds
                .iter()
                .map(|s| {
                    let counts = s.counts();
                    let mut m = Map::new();
                    m.insert("name".into(), s.name.clone().into());
                    m.insert("version_info".into(), counts.version_text.into());
                    m.insert("last_updated".into(), timestamp(counts.update_time).into());
                    m.insert("secret".into(), s.dump());
                    Value::Object(m)
                })
                .collect();
            dump.insert("dynamic_active_secrets".into(), secrets.into());
        }
        configs.push(Value::Object(dump));
    }
    json!({ "configs": configs })
}

/// A `ConfigSource`, v3 spelling: a file, `ads: {}` or a gRPC `api_config_source`.
fn path_source(s: &PathSource) -> Value {
    if let Some(server) = &s.server {
        return match server.ads {
            true => json!({ "ads": {}, "resource_api_version": "V3" }),
            false => json!({ "api_config_source": api_source(server), "resource_api_version": "V3" }),
        };
    }
    let mut p = Map::new();
    p.insert("path".into(), s.path.display().to_string().into());
    if let Some(d) = &s.watched_directory {
        p.insert("watched_directory".into(), json!({ "path": d.display().to_string() }));
    }
    json!({ "path_config_source": p, "resource_api_version": "V3" })
}

/// A gRPC `ApiConfigSource`.
fn api_source(s: &crate::config::ServerSource) -> Value {
    json!({
        "api_type": if s.delta { "DELTA_GRPC" } else { "GRPC" },
        "transport_api_version": "V3",
        "grpc_services": [{ "envoy_grpc": { "cluster_name": s.cluster } }],
    })
}

/// The bootstrap's `dynamic_resources`, as written (v3 spelling).
fn dynamic_resources(xds: &Xds) -> Value {
    let source = path_source;
    let mut m = Map::new();
    if let Some(a) = &xds.ads {
        m.insert("ads_config".into(), api_source(a));
    }
    if let Some(s) = &xds.lds {
        m.insert("lds_config".into(), source(s));
    }
    if let Some(s) = &xds.cds {
        m.insert("cds_config".into(), source(s));
    }
    Value::Object(m)
}

/// `version_info` as Envoy writes it: left out while empty.
fn version_info(m: &mut Map<String, Value>, applied: Option<&Applied>) {
    if let Some(a) = applied.filter(|a| !a.version_info.is_empty()) {
        m.insert("version_info".into(), a.version_info.clone().into());
    }
}

/// `last_updated`: protobuf's JSON Timestamp, UTC with milliseconds as Envoy prints it.
fn last_updated(m: &mut Map<String, Value>, applied: Option<&Applied>) {
    let Some(a) = applied else { return };
    let since = a.last_updated.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    m.insert("last_updated".into(), timestamp(since.as_millis() as i64).into());
}

/// Milliseconds since the epoch as protobuf's JSON Timestamp, UTC with milliseconds.
fn timestamp(millis: i64) -> String {
    let secs = millis.div_euclid(1000);
    let (year, month, day) = crate::access_log::time::civil_from_days(secs.div_euclid(86_400));
    let of_day = secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        millis.rem_euclid(1000)
    )
}

/// Envoy's `?resource=NAME`: every element of that repeated field, across all dumps, each as its
/// own entry tagged with the element's type (`...ClustersConfigDump.StaticCluster`). `None` returns
/// the dump unchanged; a name not in `RESOURCES` gives `{"configs": []}` (Envoy answers 404 there:
/// the caller can check `RESOURCES` first).
pub fn filter(dump: Value, resource: Option<&str>) -> Value {
    let Some(resource) = resource else {
        return dump;
    };
    let mut out = Vec::new();
    if let Some((_, element_type)) = RESOURCES.iter().find(|(name, _)| *name == resource) {
        let configs = match dump {
            Value::Object(mut m) => m.remove("configs"),
            _ => None,
        };
        let configs = match configs {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        };
        for mut config in configs {
            if let Some(Value::Array(items)) = config.get_mut(resource).map(Value::take) {
                out.extend(items.into_iter().map(|item| with_type(element_type, &item)));
            }
        }
    }
    json!({ "configs": out })
}

/// `value` (an object) with `"@type"` first, as Envoy prints an `Any`.
fn with_type(type_url: &str, value: &Value) -> Value {
    let mut m = Map::new();
    m.insert("@type".into(), Value::String(type_url.to_string()));
    if let Value::Object(fields) = value {
        for (k, v) in fields {
            m.insert(k.clone(), v.clone());
        }
    }
    Value::Object(m)
}

/// protobuf's JSON form of a Duration: whole seconds, or 3, 6 or 9 fraction digits as needed
/// ("5s", "0.250s", "0.000001s").
pub fn duration(d: Duration) -> String {
    let (s, n) = (d.as_secs(), d.subsec_nanos());
    if n == 0 {
        format!("{s}s")
    } else if n % 1_000_000 == 0 {
        format!("{s}.{:03}s", n / 1_000_000)
    } else if n % 1_000 == 0 {
        format!("{s}.{:06}s", n / 1_000)
    } else {
        format!("{s}.{n:09}s")
    }
}

fn socket_address(address: &str, port: u16) -> Value {
    json!({ "socket_address": { "address": address, "port_value": port } })
}

fn admin(a: &Admin) -> Value {
    let mut m = Map::new();
    if let Some(path) = &a.access_log_path {
        // v3 replaced `access_log_path` with a file access log; the loader reads its path back.
        m.insert(
            "access_log".into(),
            json!([access_log(&AccessLog::File { path: path.clone(), format: None })]),
        );
    }
    m.insert("address".into(), socket_address(&a.address.ip().to_string(), a.address.port()));
    Value::Object(m)
}

fn access_log(l: &AccessLog) -> Value {
    let (name, type_url, path, format) = match l {
        AccessLog::File { path, format } => ("envoy.access_loggers.file", FILE_LOG, Some(path), format),
        AccessLog::Stdout { format } => ("envoy.access_loggers.stdout", STDOUT_LOG, None, format),
        AccessLog::Stderr { format } => ("envoy.access_loggers.stderr", STDERR_LOG, None, format),
    };
    let mut cfg = Map::new();
    cfg.insert("@type".into(), type_url.into());
    if let Some(p) = path {
        cfg.insert("path".into(), p.as_str().into());
    }
    if let Some(f) = format {
        cfg.insert("log_format".into(), json!({ "text_format_source": { "inline_string": f } }));
    }
    json!({ "name": name, "typed_config": Value::Object(cfg) })
}

/// One filter chain of a listener as the dump writes it, and what its listener says beside it.
struct DumpedChain<'a> {
    name: &'a str,
    address: std::net::SocketAddr,
    slot: &'a ChainSlot,
    chain: Value,
    outbound: bool,
}

/// The listeners, each with its filter chains gathered back from the model's per-chain entries.
fn listeners(b: &Bootstrap) -> Vec<Value> {
    let chains: Vec<DumpedChain> =
        b.listeners.iter().map(http_chain).chain(b.tcp_listeners.iter().map(tcp_chain)).collect();
    let mut out = Vec::new();
    let mut done: Vec<&str> = Vec::new();
    for first in &chains {
        if done.contains(&first.name) {
            continue;
        }
        done.push(first.name);
        let mut mine: Vec<&DumpedChain> = chains.iter().filter(|c| c.name == first.name).collect();
        mine.sort_by_key(|c| c.slot.index);
        let mut m = Map::new();
        m.insert("name".into(), first.name.into());
        m.insert("address".into(), socket_address(&first.address.ip().to_string(), first.address.port()));
        let regular: Vec<Value> =
            mine.iter().filter(|c| c.slot.index != DEFAULT_CHAIN).map(|c| c.chain.clone()).collect();
        if !regular.is_empty() {
            m.insert("filter_chains".into(), regular.into());
        }
        if let Some(d) = mine.iter().find(|c| c.slot.index == DEFAULT_CHAIN) {
            m.insert("default_filter_chain".into(), d.chain.clone());
        }
        if let Some(inspector) = first.slot.inspector {
            match inspector.timeout {
                Some(d) if d == Duration::from_secs(15) => {}
                Some(d) => _ = m.insert("listener_filters_timeout".into(), duration(d).into()),
                None => _ = m.insert("listener_filters_timeout".into(), "0s".into()),
            }
            if inspector.continue_on_timeout {
                m.insert("continue_on_listener_filters_timeout".into(), true.into());
            }
            m.insert(
                "listener_filters".into(),
                json!([{
                    "name": "envoy.filters.listener.tls_inspector",
                    "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector" },
                }]),
            );
        }
        // v3 has no tracing.operation_name: Envoy derives EGRESS from an OUTBOUND listener, so
        // that is how an egress tracing operation is written (and read back).
        if mine.iter().any(|c| c.outbound) {
            m.insert("traffic_direction".into(), "OUTBOUND".into());
        }
        out.push(Value::Object(m));
    }
    out
}

fn http_chain(l: &Listener) -> DumpedChain<'_> {
    let terminal =
        json!({ "name": "envoy.filters.network.http_connection_manager", "typed_config": hcm(&l.hcm) });
    DumpedChain {
        name: &l.name,
        address: l.address,
        slot: &l.chain,
        chain: chain(&l.chain, net_filters(&l.net_filters, terminal), l.tls.as_ref()),
        outbound: l.hcm.tracing.as_ref().is_some_and(|t| t.operation == TracingOperation::Egress),
    }
}

fn tcp_chain(l: &TcpListener) -> DumpedChain<'_> {
    let p = &l.proxy;
    let mut m = Map::new();
    m.insert("@type".into(), TCP_PROXY.into());
    m.insert("stat_prefix".into(), p.stat_prefix.as_str().into());
    cluster_specifier(&mut m, &p.cluster);
    m.insert("idle_timeout".into(), duration(p.idle_timeout).into());
    if p.max_connect_attempts != 1 {
        m.insert("max_connect_attempts".into(), p.max_connect_attempts.into());
    }
    if !p.access_logs.is_empty() {
        m.insert("access_log".into(), p.access_logs.iter().map(access_log).collect());
    }
    let terminal = json!({ "name": "envoy.filters.network.tcp_proxy", "typed_config": m });
    DumpedChain {
        name: &l.name,
        address: l.address,
        slot: &l.chain,
        chain: chain(&l.chain, net_filters(&l.net_filters, terminal), l.tls.as_ref()),
        outbound: false,
    }
}

/// A filter chain: its match, filters and TLS.
fn chain(slot: &ChainSlot, filters: Value, tls: Option<&crate::config::tls::ListenerTls>) -> Value {
    let mut chain = Map::new();
    if !slot.matcher.is_empty() {
        chain.insert("filter_chain_match".into(), chain_match(&slot.matcher));
    }
    chain.insert("filters".into(), filters);
    if let Some(tls) = tls {
        chain.insert("transport_socket".into(), tls.context.dump.clone());
        if let Some(limit) = tls.handshake_limit {
            chain.insert("transport_socket_connect_timeout".into(), duration(limit).into());
        }
    }
    Value::Object(chain)
}

fn chain_match(m: &chain_match::ChainMatch) -> Value {
    use chain_match::{SourceType, Transport};
    let cidrs = |c: &[chain_match::Cidr]| -> Value {
        c.iter().map(|c| json!({ "address_prefix": c.addr.to_string(), "prefix_len": c.len })).collect()
    };
    let mut out = Map::new();
    if let Some(port) = m.destination_port {
        out.insert("destination_port".into(), port.into());
    }
    if !m.destination_ips.is_empty() {
        out.insert("prefix_ranges".into(), cidrs(&m.destination_ips));
    }
    if !m.server_names.is_empty() {
        out.insert("server_names".into(), json!(m.server_names));
    }
    match m.transport_protocol {
        Some(Transport::Tls) => _ = out.insert("transport_protocol".into(), "tls".into()),
        Some(Transport::RawBuffer) => _ = out.insert("transport_protocol".into(), "raw_buffer".into()),
        None => {}
    }
    if !m.application_protocols.is_empty() {
        out.insert("application_protocols".into(), json!(m.application_protocols));
    }
    match m.source_type {
        SourceType::Any => {}
        SourceType::Local => _ = out.insert("source_type".into(), "SAME_IP_OR_LOOPBACK".into()),
        SourceType::External => _ = out.insert("source_type".into(), "EXTERNAL".into()),
    }
    if !m.source_ips.is_empty() {
        out.insert("source_prefix_ranges".into(), cidrs(&m.source_ips));
    }
    if !m.source_ports.is_empty() {
        out.insert("source_ports".into(), json!(m.source_ports));
    }
    Value::Object(out)
}

/// A chain's `filters`: the limits in order, then the terminal filter.
fn net_filters(limits: &[NetFilter], terminal: Value) -> Value {
    // skiff has no runtime and does not keep a flag's runtime_key; a disabled filter is written
    // with a key of its own so that the dump loads again.
    let flag = |enabled: bool, key: String| json!({ "default_value": enabled, "runtime_key": key });
    let mut out: Vec<Value> = limits
        .iter()
        .map(|f| match f {
            NetFilter::LocalRateLimit(l) => {
                let b = &l.token_bucket;
                let mut m = json!({
                    "@type": NET_LOCAL_RATELIMIT,
                    "stat_prefix": l.stat_prefix,
                    "token_bucket": {
                        "max_tokens": b.max_tokens,
                        "tokens_per_fill": b.tokens_per_fill,
                        "fill_interval": duration(b.fill_interval),
                    },
                });
                if !l.enabled {
                    m["runtime_enabled"] = flag(false, format!("local_rate_limit.{}.enabled", l.stat_prefix));
                }
                json!({ "name": "envoy.filters.network.local_ratelimit", "typed_config": m })
            }
            NetFilter::ConnectionLimit(c) => {
                let mut m = json!({
                    "@type": CONNECTION_LIMIT,
                    "stat_prefix": c.stat_prefix,
                    "max_connections": c.max_connections,
                });
                if let Some(d) = c.delay {
                    m["delay"] = duration(d).into();
                }
                if !c.enabled {
                    m["runtime_enabled"] = flag(false, format!("connection_limit.{}.enabled", c.stat_prefix));
                }
                json!({ "name": "envoy.filters.network.connection_limit", "typed_config": m })
            }
            NetFilter::Rbac(r) => {
                let mut m =
                    rbac_rule_sets(r.rules.as_ref(), r.shadow_rules.as_ref(), &r.shadow_rules_stat_prefix);
                m.insert("@type".into(), NET_RBAC.into());
                m.insert("stat_prefix".into(), r.stat_prefix.as_str().into());
                json!({ "name": "envoy.filters.network.rbac", "typed_config": m })
            }
        })
        .collect();
    out.push(terminal);
    out.into()
}

/// `filter_chains` (one per TLS context, each with its `server_names` and `transport_socket`,
/// keys redacted) and, on a TLS listener, the TLS inspector skiff always runs.
/// `upgrade_configs` of an HCM or a route (`enabled` only when false, its proto default being true).
fn upgrades(list: &[UpgradeConfig]) -> Value {
    list.iter()
        .map(|u| match u.enabled {
            true => json!({ "upgrade_type": u.upgrade_type }),
            false => json!({ "upgrade_type": u.upgrade_type, "enabled": false }),
        })
        .collect()
}

fn cluster_specifier(m: &mut Map<String, Value>, spec: &ClusterSpecifier) {
    match spec {
        ClusterSpecifier::Single(c) => {
            m.insert("cluster".into(), c.as_str().into());
        }
        ClusterSpecifier::Header(h) => {
            m.insert("cluster_header".into(), h.as_str().into());
        }
        ClusterSpecifier::Weighted(list) => {
            let clusters: Vec<Value> = list
                .iter()
                .map(|c| {
                    let mut m = Map::new();
                    m.insert("name".into(), c.name.as_str().into());
                    m.insert("weight".into(), c.weight.into());
                    header_lists(
                        &mut m,
                        &c.request_headers_to_add,
                        &c.request_headers_to_remove,
                        &c.response_headers_to_add,
                        &c.response_headers_to_remove,
                    );
                    Value::Object(m)
                })
                .collect();
            m.insert("weighted_clusters".into(), json!({ "clusters": clusters }));
        }
    }
}

/// A compressor filter's config as Envoy's v3 `Compressor` (response direction).
fn compressor(c: &crate::config::Compressor) -> Value {
    use crate::config::CompressorLibrary;
    let library = match &c.library {
        CompressorLibrary::Gzip { level, memory_level, window_bits, chunk_size, .. } => json!({
            "@type": "type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip",
            "compression_level": format!("COMPRESSION_LEVEL_{level}"),
            "memory_level": memory_level,
            "window_bits": window_bits,
            "chunk_size": chunk_size,
        }),
        CompressorLibrary::Brotli { quality, window_bits, input_block_bits, chunk_size, .. } => json!({
            "@type": "type.googleapis.com/envoy.extensions.compression.brotli.compressor.v3.Brotli",
            "quality": quality,
            "window_bits": window_bits,
            "input_block_bits": input_block_bits,
            "chunk_size": chunk_size,
        }),
        CompressorLibrary::Zstd { level, checksum, chunk_size, .. } => json!({
            "@type": "type.googleapis.com/envoy.extensions.compression.zstd.compressor.v3.Zstd",
            "compression_level": level,
            "enable_checksum": checksum,
            "chunk_size": chunk_size,
        }),
    };
    json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor",
        "compressor_library": { "name": c.library_name, "typed_config": library },
        "choose_first": c.choose_first,
        "response_direction_config": {
            "common_config": {
                "enabled": { "default_value": c.enabled, "runtime_key": "" },
                "min_content_length": c.min_content_length,
                "content_type": c.content_types,
            },
            "disable_on_etag_header": c.disable_on_etag_header,
            "remove_accept_encoding_header": c.remove_accept_encoding_header,
            "uncompressible_response_codes": c.uncompressible_response_codes,
            "weaken_etag_on_compress": c.weaken_etag_on_compress,
        },
    })
}

fn hcm(h: &HttpConnectionManager) -> Value {
    let mut m = Map::new();
    m.insert("@type".into(), HCM.into());
    m.insert("stat_prefix".into(), h.stat_prefix.as_str().into());
    match &h.rds {
        Some(r) => {
            let source = path_source(&r.source);
            m.insert(
                "rds".into(),
                json!({ "route_config_name": r.route_config_name, "config_source": source }),
            );
        }
        None => {
            m.insert("route_config".into(), route_config(&h.route_config));
        }
    }
    let filters: Vec<Value> = h
        .http_filters
        .iter()
        .map(|f| match f {
            HttpFilter::Router => {
                json!({ "name": "envoy.filters.http.router", "typed_config": { "@type": ROUTER } })
            }
            HttpFilter::LocalRateLimit { name, config } => json!({
                "name": name,
                "typed_config": filter_config(&PerFilterConfig::LocalRateLimit(config.clone())),
            }),
            HttpFilter::Fault { name, config } => {
                json!({ "name": name, "typed_config": filter_config(&PerFilterConfig::Fault(config.clone())) })
            }
            HttpFilter::Cors { name } => json!({ "name": name, "typed_config": { "@type": CORS } }),
            HttpFilter::Csrf { name, config } => {
                json!({ "name": name, "typed_config": filter_config(&PerFilterConfig::Csrf(config.clone())) })
            }
            // As written: the JWKS and matchers round-trip without a writer of every field.
            HttpFilter::JwtAuthn { name, config } => json!({ "name": name, "typed_config": config.source }),
            HttpFilter::Rbac { name, config } => {
                let mut typed = rbac(config);
                typed.insert("@type".into(), RBAC.into());
                json!({ "name": name, "typed_config": typed })
            }
            HttpFilter::ExtAuthz { name, config } => json!({ "name": name, "typed_config": ext_authz(config) }),
            HttpFilter::Compressor { name, config } => json!({ "name": name, "typed_config": compressor(config) }),
        })
        .collect();
    m.insert("http_filters".into(), filters.into());
    if !h.access_logs.is_empty() {
        m.insert("access_log".into(), h.access_logs.iter().map(access_log).collect());
    }
    if let Some(t) = &h.tracing {
        m.insert("tracing".into(), tracing(t));
    }
    if h.max_request_headers_kb != 60 {
        m.insert("max_request_headers_kb".into(), h.max_request_headers_kb.into());
    }
    // skiff's own default (10 s) differs from Envoy's (none), so it is always spelled out.
    m.insert("request_headers_timeout".into(), duration(h.request_headers_timeout).into());
    let mut common = Map::new();
    common.insert("idle_timeout".into(), duration(h.idle_timeout).into());
    if let Some(n) = h.max_requests_per_connection {
        common.insert("max_requests_per_connection".into(), n.into());
    }
    if let Some(d) = h.max_connection_duration {
        common.insert("max_connection_duration".into(), duration(d).into());
    }
    if let Some(d) = h.stream_limits.max_duration {
        common.insert("max_stream_duration".into(), duration(d).into());
    }
    if h.max_headers_count != MAX_HEADERS_COUNT {
        common.insert("max_headers_count".into(), h.max_headers_count.into());
    }
    match h.headers_with_underscores {
        UnderscoresAction::Allow => {}
        UnderscoresAction::RejectRequest => {
            common.insert("headers_with_underscores_action".into(), "REJECT_REQUEST".into());
        }
        UnderscoresAction::DropHeader => {
            common.insert("headers_with_underscores_action".into(), "DROP_HEADER".into());
        }
    }
    m.insert("common_http_protocol_options".into(), Value::Object(common));
    match h.codec {
        HttpCodec::Auto => {}
        HttpCodec::Http1 => {
            m.insert("codec_type".into(), "HTTP1".into());
        }
        HttpCodec::Http2 => {
            m.insert("codec_type".into(), "HTTP2".into());
        }
    }
    if h.http2 != Http2Options::default() {
        let o = &h.http2;
        m.insert(
            "http2_protocol_options".into(),
            json!({
                "max_concurrent_streams": o.max_concurrent_streams,
                "initial_stream_window_size": o.initial_stream_window_size,
                "initial_connection_window_size": o.initial_connection_window_size,
                "hpack_table_size": o.hpack_table_size,
            }),
        );
    }
    // `0s` (off) reads back as None.
    m.insert("stream_idle_timeout".into(), duration(h.stream_limits.idle.unwrap_or(Duration::ZERO)).into());
    if let Some(d) = h.stream_limits.request {
        m.insert("request_timeout".into(), duration(d).into());
    }
    if h.delayed_close_timeout != Some(Duration::from_secs(1)) {
        m.insert(
            "delayed_close_timeout".into(),
            duration(h.delayed_close_timeout.unwrap_or(Duration::ZERO)).into(),
        );
    }
    if !h.generate_request_id {
        m.insert("generate_request_id".into(), false.into());
    }
    if h.server_name != "envoy" {
        m.insert("server_name".into(), h.server_name.as_str().into());
    }
    let cc = &h.client_cert;
    let mode = match cc.mode {
        ForwardClientCert::Sanitize => None,
        ForwardClientCert::ForwardOnly => Some("FORWARD_ONLY"),
        ForwardClientCert::AppendForward => Some("APPEND_FORWARD"),
        ForwardClientCert::SanitizeSet => Some("SANITIZE_SET"),
        ForwardClientCert::AlwaysForwardOnly => Some("ALWAYS_FORWARD_ONLY"),
    };
    if let Some(mode) = mode {
        m.insert("forward_client_cert_details".into(), mode.into());
    }
    if cc.subject || cc.cert || cc.dns || cc.uri {
        m.insert(
            "set_current_client_cert_details".into(),
            json!({ "subject": cc.subject, "cert": cc.cert, "dns": cc.dns, "uri": cc.uri }),
        );
    }
    if h.use_remote_address {
        m.insert("use_remote_address".into(), true.into());
    }
    if h.xff_num_trusted_hops != 0 {
        m.insert("xff_num_trusted_hops".into(), h.xff_num_trusted_hops.into());
    }
    if !h.upgrades.is_empty() {
        m.insert("upgrade_configs".into(), upgrades(&h.upgrades));
    }
    Value::Object(m)
}

/// The provider as Envoy prints it: name and typed_config.
fn tracing_provider(p: &TracingProvider) -> Value {
    let z = match p {
        TracingProvider::Zipkin(z) => z,
        TracingProvider::OpenTelemetry(o) => {
            let mut grpc = Map::new();
            grpc.insert("envoy_grpc".into(), json!({ "cluster_name": o.collector_cluster }));
            if let Some(t) = o.timeout {
                grpc.insert("timeout".into(), duration(t).into());
            }
            let mut cfg = json!({
                "@type": OTEL,
                "grpc_service": Value::Object(grpc),
                "service_name": o.service_name,
            });
            if o.max_cache_size != 1024 {
                cfg["max_cache_size"] = o.max_cache_size.into();
            }
            if !o.sdk_attributes {
                cfg["set_telemetry_sdk_resource_attributes"] = false.into();
            }
            return json!({ "name": "envoy.tracers.opentelemetry", "typed_config": cfg });
        }
    };
    let mut cfg = Map::new();
    cfg.insert("@type".into(), ZIPKIN.into());
    cfg.insert("collector_cluster".into(), z.collector_cluster.as_str().into());
    cfg.insert("collector_endpoint".into(), z.collector_endpoint.as_str().into());
    cfg.insert("collector_endpoint_version".into(), "HTTP_JSON".into());
    if z.trace_id_128bit {
        cfg.insert("trace_id_128bit".into(), true.into());
    }
    // BoolValue wrapper: Envoy prints it only when set; skiff's default is true, so only false
    // needs saying.
    if !z.shared_span_context {
        cfg.insert("shared_span_context".into(), false.into());
    }
    if let Some(h) = &z.collector_hostname {
        cfg.insert("collector_hostname".into(), h.as_str().into());
    }
    json!({ "name": "envoy.tracers.zipkin", "typed_config": Value::Object(cfg) })
}

fn tracing(t: &Tracing) -> Value {
    let mut m = Map::new();
    let percent = |v: f64| json!({ "value": v });
    if t.client_sampling != 100.0 {
        m.insert("client_sampling".into(), percent(t.client_sampling));
    }
    if t.random_sampling != 100.0 {
        m.insert("random_sampling".into(), percent(t.random_sampling));
    }
    if t.overall_sampling != 100.0 {
        m.insert("overall_sampling".into(), percent(t.overall_sampling));
    }
    if t.max_path_tag_length != 256 {
        m.insert("max_path_tag_length".into(), t.max_path_tag_length.into());
    }
    m.insert("provider".into(), tracing_provider(&t.provider));
    Value::Object(m)
}

fn header_options(list: &[HeaderValueOption]) -> Value {
    list.iter()
        .map(|h| {
            let mut o = Map::new();
            o.insert("header".into(), json!({ "key": h.name, "value": h.value }));
            // APPEND_IF_EXISTS_OR_ADD is the enum's zero value, so only overwrite is printed.
            if !h.append {
                o.insert("append_action".into(), "OVERWRITE_IF_EXISTS_OR_ADD".into());
            }
            Value::Object(o)
        })
        .collect()
}

/// An HTTP filter's config as its v3 proto's JSON (header matchers by name only).
fn filter_config(c: &PerFilterConfig) -> Value {
    match c {
        PerFilterConfig::JwtAuthn(j) => j.source.clone(),
        PerFilterConfig::JwtPerRoute(JwtPerRoute::Disabled) => {
            json!({ "@type": JWT_PER_ROUTE, "disabled": true })
        }
        PerFilterConfig::JwtPerRoute(JwtPerRoute::Requirement(name)) => {
            json!({ "@type": JWT_PER_ROUTE, "requirement_name": name })
        }
        PerFilterConfig::LocalRateLimit(l) => {
            let mut m = Map::new();
            m.insert("@type".into(), LOCAL_RATELIMIT.into());
            m.insert("stat_prefix".into(), l.stat_prefix.as_str().into());
            if let Some(b) = l.token_bucket {
                m.insert(
                    "token_bucket".into(),
                    json!({ "max_tokens": b.max_tokens, "tokens_per_fill": b.tokens_per_fill,
                            "fill_interval": duration(b.fill_interval) }),
                );
            }
            m.insert("filter_enabled".into(), json!({ "default_value": fraction(l.filter_enabled) }));
            m.insert("filter_enforced".into(), json!({ "default_value": fraction(l.filter_enforced) }));
            m.insert("status".into(), json!({ "code": l.status }));
            m.insert("response_headers_to_add".into(), header_options(&l.response_headers_to_add));
            m.insert(
                "request_headers_to_add_when_not_enforced".into(),
                header_options(&l.request_headers_to_add_when_not_enforced),
            );
            if l.resource_exhausted {
                m.insert("rate_limited_as_resource_exhausted".into(), true.into());
            }
            if l.x_ratelimit_headers {
                m.insert("enable_x_ratelimit_headers".into(), "DRAFT_VERSION_03".into());
            }
            Value::Object(m)
        }
        PerFilterConfig::Fault(f) => {
            let mut m = Map::new();
            m.insert("@type".into(), FAULT.into());
            if let Some(d) = f.delay {
                let mut o = Map::new();
                match d.source {
                    FaultDelaySource::Fixed(t) => o.insert("fixed_delay".into(), duration(t).into()),
                    FaultDelaySource::Header => o.insert("header_delay".into(), json!({})),
                };
                o.insert("percentage".into(), fraction(d.percentage));
                m.insert("delay".into(), Value::Object(o));
            }
            if let Some(a) = f.abort {
                let mut o = Map::new();
                match a.source {
                    FaultAbortSource::Status(s) => o.insert("http_status".into(), s.into()),
                    FaultAbortSource::Grpc(g) => o.insert("grpc_status".into(), g.into()),
                    FaultAbortSource::Header => o.insert("header_abort".into(), json!({})),
                };
                o.insert("percentage".into(), fraction(a.percentage));
                m.insert("abort".into(), Value::Object(o));
            }
            if !f.headers.is_empty() {
                m.insert("headers".into(), f.headers.iter().map(header_matcher).collect());
            }
            if let Some(c) = &f.upstream_cluster {
                m.insert("upstream_cluster".into(), c.as_str().into());
            }
            if !f.downstream_nodes.is_empty() {
                m.insert("downstream_nodes".into(), f.downstream_nodes.clone().into());
            }
            if let Some(n) = f.max_active_faults {
                m.insert("max_active_faults".into(), n.into());
            }
            Value::Object(m)
        }
        PerFilterConfig::Cors(p) => {
            let mut m = cors_policy(p);
            m.insert("@type".into(), CORS_POLICY.into());
            Value::Object(m)
        }
        PerFilterConfig::CompressorPerRoute { disabled } => json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.http.compressor.v3.CompressorPerRoute",
            "disabled": disabled,
        }),
        PerFilterConfig::Csrf(c) => {
            let mut m = Map::new();
            m.insert("@type".into(), CSRF.into());
            m.insert("filter_enabled".into(), json!({ "default_value": fraction(c.filter_enabled) }));
            m.insert("shadow_enabled".into(), json!({ "default_value": fraction(c.shadow_enabled) }));
            if !c.additional_origins.is_empty() {
                m.insert(
                    "additional_origins".into(),
                    c.additional_origins.iter().map(string_matcher).collect(),
                );
            }
            Value::Object(m)
        }
        // On a route or virtual host: the connection manager's is written by `hcm`.
        PerFilterConfig::Rbac(r) => json!({ "@type": RBAC_PER_ROUTE, "rbac": rbac(r) }),
        PerFilterConfig::ExtAuthz(c) => ext_authz(c),
        PerFilterConfig::ExtAuthzPerRoute(r) => {
            let mut m = Map::new();
            m.insert("@type".into(), EXT_AUTHZ_PER_ROUTE.into());
            if r.disabled {
                m.insert("disabled".into(), true.into());
            } else {
                let mut c = Map::new();
                if r.disable_request_body_buffering {
                    c.insert("disable_request_body_buffering".into(), true.into());
                }
                if let Some(b) = r.with_request_body {
                    c.insert("with_request_body".into(), ext_authz_body(b));
                }
                if !r.context_extensions.is_empty() {
                    let ext: Map<String, Value> =
                        r.context_extensions.iter().map(|(k, v)| (k.clone(), v.as_str().into())).collect();
                    c.insert("context_extensions".into(), Value::Object(ext));
                }
                m.insert("check_settings".into(), Value::Object(c));
            }
            Value::Object(m)
        }
    }
}

/// An ext_authz filter's config (its HTTP or gRPC service).
fn ext_authz(c: &ExtAuthz) -> Value {
    let list = |l: &[StringMatcher]| json!({ "patterns": l.iter().map(string_matcher).collect::<Vec<_>>() });
    let mut response = Map::new();
    for (key, l) in [
        ("allowed_upstream_headers", &c.allowed_upstream_headers),
        ("allowed_upstream_headers_to_append", &c.allowed_upstream_headers_to_append),
        ("allowed_client_headers", &c.allowed_client_headers),
        ("allowed_client_headers_on_success", &c.allowed_client_headers_on_success),
    ] {
        if !l.is_empty() {
            response.insert(key.into(), list(l));
        }
    }
    let added: Vec<Value> = c.headers_to_add.iter().map(|(k, v)| json!({ "key": k, "value": v })).collect();
    let mut m = Map::new();
    m.insert("@type".into(), EXT_AUTHZ.into());
    if let Some(g) = &c.grpc {
        let metadata: Vec<Value> =
            g.initial_metadata.iter().map(|(k, v)| json!({ "key": k, "value": v })).collect();
        m.insert(
            "grpc_service".into(),
            json!({
                "envoy_grpc": { "cluster_name": c.cluster, "authority": g.authority },
                "timeout": duration(c.timeout),
                "initial_metadata": metadata,
            }),
        );
        m.insert("transport_api_version".into(), "V3".into());
    } else {
        m.insert(
        "http_service".into(),
        json!({
            "server_uri": { "uri": c.uri, "cluster": c.cluster, "timeout": duration(c.timeout) },
            "path_prefix": c.path_prefix,
            "authorization_request": { "allowed_headers": list(&c.allowed_headers), "headers_to_add": added },
            "authorization_response": Value::Object(response),
        }),
    );
    }
    m.insert("failure_mode_allow".into(), c.failure_mode_allow.into());
    m.insert("failure_mode_allow_header_add".into(), c.failure_mode_allow_header_add.into());
    m.insert("status_on_error".into(), json!({ "code": c.status_on_error }));
    if let Some(b) = c.with_request_body {
        m.insert("with_request_body".into(), ext_authz_body(b));
    }
    Value::Object(m)
}

fn ext_authz_body(b: ExtAuthzBody) -> Value {
    json!({
        "max_request_bytes": b.max_request_bytes,
        "allow_partial_message": b.allow_partial_message,
        "pack_as_bytes": b.pack_as_bytes,
    })
}

/// An RBAC config's fields (without `@type`).
fn rbac(r: &Rbac) -> Map<String, Value> {
    let mut m = rbac_rule_sets(r.rules.as_ref(), r.shadow_rules.as_ref(), &r.shadow_rules_stat_prefix);
    // Written as configured: the matcher API's tree is kept verbatim at load.
    if let Some(x) = &r.matcher {
        m.insert("matcher".into(), x.source.clone());
    }
    if let Some(x) = &r.shadow_matcher {
        m.insert("shadow_matcher".into(), x.source.clone());
    }
    if !r.rules_stat_prefix.is_empty() {
        m.insert("rules_stat_prefix".into(), r.rules_stat_prefix.as_str().into());
    }
    m
}

/// `rules`, `shadow_rules` and `shadow_rules_stat_prefix`, which the HTTP and network RBAC
/// configs share.
fn rbac_rule_sets(
    rules: Option<&RbacRules>,
    shadow: Option<&RbacRules>,
    shadow_prefix: &str,
) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(rules) = rules {
        m.insert("rules".into(), rbac_rules(rules));
    }
    if let Some(rules) = shadow {
        m.insert("shadow_rules".into(), rbac_rules(rules));
    }
    if !shadow_prefix.is_empty() {
        m.insert("shadow_rules_stat_prefix".into(), shadow_prefix.into());
    }
    m
}

fn rbac_rules(r: &RbacRules) -> Value {
    let action = match r.action {
        RbacAction::Allow => "ALLOW",
        RbacAction::Deny => "DENY",
        RbacAction::Log => "LOG",
    };
    let policies: Map<String, Value> = r
        .policies
        .iter()
        .map(|p| {
            let permissions: Vec<Value> = p.permissions.iter().map(rbac_permission).collect();
            let principals: Vec<Value> = p.principals.iter().map(rbac_principal).collect();
            (p.name.clone(), json!({ "permissions": permissions, "principals": principals }))
        })
        .collect();
    json!({ "action": action, "policies": policies })
}

fn rbac_permission(p: &RbacPermission) -> Value {
    match p {
        RbacPermission::Any => json!({ "any": true }),
        RbacPermission::Header(h) => json!({ "header": header_matcher(h) }),
        RbacPermission::UrlPath(m) => json!({ "url_path": { "path": string_match(m) } }),
        RbacPermission::And(l) => {
            json!({ "and_rules": { "rules": l.iter().map(rbac_permission).collect::<Vec<_>>() } })
        }
        RbacPermission::Or(l) => {
            json!({ "or_rules": { "rules": l.iter().map(rbac_permission).collect::<Vec<_>>() } })
        }
        RbacPermission::Not(x) => json!({ "not_rule": rbac_permission(x) }),
        RbacPermission::DestinationIp(c) => json!({ "destination_ip": cidr(c) }),
        RbacPermission::DestinationPort(n) => json!({ "destination_port": n }),
        RbacPermission::DestinationPortRange(a, b) => {
            json!({ "destination_port_range": { "start": a, "end": b } })
        }
        RbacPermission::RequestedServerName(m) => json!({ "requested_server_name": string_match(m) }),
    }
}

fn rbac_principal(p: &RbacPrincipal) -> Value {
    match p {
        RbacPrincipal::Any => json!({ "any": true }),
        RbacPrincipal::Authenticated(None) => json!({ "authenticated": {} }),
        RbacPrincipal::Authenticated(Some(m)) => {
            json!({ "authenticated": { "principal_name": string_match(m) } })
        }
        RbacPrincipal::SourceIp(c) => json!({ "source_ip": cidr(c) }),
        RbacPrincipal::DirectRemoteIp(c) => json!({ "direct_remote_ip": cidr(c) }),
        RbacPrincipal::RemoteIp(c) => json!({ "remote_ip": cidr(c) }),
        RbacPrincipal::Header(h) => json!({ "header": header_matcher(h) }),
        RbacPrincipal::UrlPath(m) => json!({ "url_path": { "path": string_match(m) } }),
        RbacPrincipal::And(l) => {
            json!({ "and_ids": { "ids": l.iter().map(rbac_principal).collect::<Vec<_>>() } })
        }
        RbacPrincipal::Or(l) => {
            json!({ "or_ids": { "ids": l.iter().map(rbac_principal).collect::<Vec<_>>() } })
        }
        RbacPrincipal::Not(x) => json!({ "not_id": rbac_principal(x) }),
    }
}

fn cidr(c: &CidrRange) -> Value {
    json!({ "address_prefix": c.address.to_string(), "prefix_len": c.prefix_len })
}

fn string_match(m: &StringMatcher) -> Value {
    let mut v = match &m.rule {
        StringRule::Exact(s) => json!({ "exact": s }),
        StringRule::Prefix(s) => json!({ "prefix": s }),
        StringRule::Suffix(s) => json!({ "suffix": s }),
        StringRule::Contains(s) => json!({ "contains": s }),
        StringRule::SafeRegex(s) => json!({ "safe_regex": { "regex": s } }),
    };
    if m.ignore_case {
        v["ignore_case"] = true.into();
    }
    v
}

/// A `FractionalPercent` over the denominator it was written with, so a header-given percentage
/// means the same.
fn fraction(f: Fraction) -> Value {
    let denominator = match f.unit {
        100 => "TEN_THOUSAND",
        1 => "MILLION",
        _ => "HUNDRED",
    };
    json!({ "numerator": f.per_million / f.unit.max(1), "denominator": denominator })
}

/// A CORS policy's fields (a route's or virtual host's `cors`, or the filter's per-route one).
fn cors_policy(p: &CorsPolicy) -> Map<String, Value> {
    let mut m = Map::new();
    if !p.allow_origins.is_empty() {
        m.insert("allow_origin_string_match".into(), p.allow_origins.iter().map(string_matcher).collect());
    }
    for (key, text) in [
        ("allow_methods", &p.allow_methods),
        ("allow_headers", &p.allow_headers),
        ("expose_headers", &p.expose_headers),
        ("max_age", &p.max_age),
    ] {
        if !text.is_empty() {
            m.insert(key.into(), text.as_str().into());
        }
    }
    for (key, flag) in [
        ("allow_credentials", p.allow_credentials),
        ("allow_private_network_access", p.allow_private_network_access),
        ("forward_not_matching_preflights", p.forward_not_matching_preflights),
    ] {
        if let Some(b) = flag {
            m.insert(key.into(), b.into());
        }
    }
    for (key, f) in [("filter_enabled", p.filter_enabled), ("shadow_enabled", p.shadow_enabled)] {
        if let Some(f) = f {
            m.insert(key.into(), json!({ "default_value": fraction(f) }));
        }
    }
    m
}

fn string_matcher(s: &StringMatcher) -> Value {
    let mut m = Map::new();
    match &s.rule {
        StringRule::Exact(v) => m.insert("exact".into(), v.as_str().into()),
        StringRule::Prefix(v) => m.insert("prefix".into(), v.as_str().into()),
        StringRule::Suffix(v) => m.insert("suffix".into(), v.as_str().into()),
        StringRule::Contains(v) => m.insert("contains".into(), v.as_str().into()),
        StringRule::SafeRegex(v) => m.insert("safe_regex".into(), json!({ "regex": v })),
    };
    if s.ignore_case {
        m.insert("ignore_case".into(), true.into());
    }
    Value::Object(m)
}

/// A route's or virtual host's `typed_per_filter_config` (the entries skiff enforces).
fn per_filter_configs(m: &mut Map<String, Value>, configs: &[(String, PerFilterConfig)]) {
    if !configs.is_empty() {
        let entries = configs.iter().map(|(name, c)| (name.clone(), filter_config(c))).collect();
        m.insert("typed_per_filter_config".into(), Value::Object(entries));
    }
}

/// The four header-mutation lists every level of a route config carries.
fn header_lists(
    m: &mut Map<String, Value>,
    req_add: &[HeaderValueOption],
    req_remove: &[String],
    resp_add: &[HeaderValueOption],
    resp_remove: &[String],
) {
    let add = header_options;
    if !req_add.is_empty() {
        m.insert("request_headers_to_add".into(), add(req_add));
    }
    if !req_remove.is_empty() {
        m.insert("request_headers_to_remove".into(), req_remove.into());
    }
    if !resp_add.is_empty() {
        m.insert("response_headers_to_add".into(), add(resp_add));
    }
    if !resp_remove.is_empty() {
        m.insert("response_headers_to_remove".into(), resp_remove.into());
    }
}

fn route_config(rc: &RouteConfig) -> Value {
    let mut m = Map::new();
    if !rc.name.is_empty() {
        m.insert("name".into(), rc.name.as_str().into());
    }
    m.insert("virtual_hosts".into(), rc.virtual_hosts.iter().map(virtual_host).collect());
    header_lists(
        &mut m,
        &rc.request_headers_to_add,
        &rc.request_headers_to_remove,
        &rc.response_headers_to_add,
        &rc.response_headers_to_remove,
    );
    Value::Object(m)
}

fn virtual_host(v: &VirtualHost) -> Value {
    let mut m = Map::new();
    if !v.name.is_empty() {
        m.insert("name".into(), v.name.as_str().into());
    }
    m.insert("domains".into(), v.domains.clone().into());
    // A virtual host's retry_policy was folded into each route that has none at load, so routes
    // carry it and the virtual host need not.
    m.insert("routes".into(), v.routes.iter().map(route).collect());
    per_filter_configs(&mut m, &v.filter_configs);
    if let Some(c) = &v.cors {
        m.insert("cors".into(), Value::Object(cors_policy(c)));
    }
    if v.attempt_count.upstream {
        m.insert("include_request_attempt_count".into(), true.into());
    }
    if v.attempt_count.client {
        m.insert("include_attempt_count_in_response".into(), true.into());
    }
    header_lists(
        &mut m,
        &v.request_headers_to_add,
        &v.request_headers_to_remove,
        &v.response_headers_to_add,
        &v.response_headers_to_remove,
    );
    Value::Object(m)
}

fn route(r: &Route) -> Value {
    let mut m = Map::new();
    if let Some(n) = &r.name {
        m.insert("name".into(), n.as_str().into());
    }
    m.insert("match".into(), route_match(&r.matcher));
    per_filter_configs(&mut m, &r.filter_configs);
    match &r.action {
        RouteAction::Forward(f) => {
            m.insert("route".into(), forward(f));
        }
        RouteAction::DirectResponse { status, body } => {
            let mut d = Map::new();
            d.insert("status".into(), (*status).into());
            if let Some(b) = body {
                d.insert("body".into(), json!({ "inline_string": b }));
            }
            m.insert("direct_response".into(), Value::Object(d));
        }
        RouteAction::Redirect(rd) => {
            m.insert("redirect".into(), redirect(rd));
        }
    }
    header_lists(
        &mut m,
        &r.request_headers_to_add,
        &r.request_headers_to_remove,
        &r.response_headers_to_add,
        &r.response_headers_to_remove,
    );
    Value::Object(m)
}

fn route_match(rm: &RouteMatch) -> Value {
    let mut m = Map::new();
    match &rm.path {
        PathMatch::Prefix(p) => m.insert("prefix".into(), p.as_str().into()),
        PathMatch::Path(p) => m.insert("path".into(), p.as_str().into()),
        PathMatch::SafeRegex(r) => m.insert("safe_regex".into(), json!({ "regex": r })),
        PathMatch::Connect => m.insert("connect_matcher".into(), json!({})),
    };
    // BoolValue wrapper, default true: printed only when it says something.
    if !rm.case_sensitive {
        m.insert("case_sensitive".into(), false.into());
    }
    if !rm.headers.is_empty() {
        m.insert("headers".into(), rm.headers.iter().map(header_matcher).collect());
    }
    if !rm.query_parameters.is_empty() {
        let qs: Vec<Value> = rm
            .query_parameters
            .iter()
            .map(|q| match &q.exact {
                Some(v) => json!({ "name": q.name, "string_match": { "exact": v } }),
                None => json!({ "name": q.name, "present_match": true }),
            })
            .collect();
        m.insert("query_parameters".into(), qs.into());
    }
    if rm.grpc {
        m.insert("grpc".into(), json!({}));
    }
    Value::Object(m)
}

fn header_matcher(h: &HeaderMatcher) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), h.name.as_str().into());
    let (key, value) = match &h.rule {
        HeaderMatchRule::Exact(s) => ("string_match", json!({ "exact": s })),
        HeaderMatchRule::Prefix(s) => ("string_match", json!({ "prefix": s })),
        HeaderMatchRule::Suffix(s) => ("string_match", json!({ "suffix": s })),
        HeaderMatchRule::Contains(s) => ("string_match", json!({ "contains": s })),
        HeaderMatchRule::SafeRegex(s) => ("string_match", json!({ "safe_regex": { "regex": s } })),
        HeaderMatchRule::Present(b) => ("present_match", Value::Bool(*b)),
    };
    m.insert(key.into(), value);
    if h.invert_match {
        m.insert("invert_match".into(), true.into());
    }
    Value::Object(m)
}

fn forward(f: &ForwardAction) -> Value {
    let mut m = Map::new();
    cluster_specifier(&mut m, &f.cluster);
    if let Some(c) = &f.cors {
        m.insert("cors".into(), Value::Object(cors_policy(c)));
    }
    if !f.upgrades.is_empty() {
        let mut list = upgrades(&f.upgrades);
        // The CONNECT entry that terminates carries its (empty: nothing else is accepted) config.
        if let Some(connect) = list.as_array_mut().and_then(|l| {
            l.iter_mut()
                .find(|u| u["upgrade_type"].as_str().is_some_and(|t| t.eq_ignore_ascii_case("connect")))
        }) {
            if f.terminate_connect {
                connect["connect_config"] = json!({});
            }
        }
        m.insert("upgrade_configs".into(), list);
    }
    // None is the operator's explicit "0s" (no timeout); the loader reads "0s" back as None.
    m.insert("timeout".into(), duration(f.timeout.unwrap_or(Duration::ZERO)).into());
    if let Some(p) = &f.prefix_rewrite {
        m.insert("prefix_rewrite".into(), p.as_str().into());
    }
    if let Some(h) = &f.host_rewrite_literal {
        m.insert("host_rewrite_literal".into(), h.as_str().into());
    }
    if let Some(r) = &f.retry_policy {
        let mut rp = Map::new();
        if !r.retry_on.is_empty() {
            rp.insert("retry_on".into(), r.retry_on.join(",").into());
        }
        rp.insert("num_retries".into(), r.num_retries.into());
        if let Some(t) = r.per_try_timeout {
            rp.insert("per_try_timeout".into(), duration(t).into());
        }
        if let Some(t) = r.per_try_idle_timeout {
            rp.insert("per_try_idle_timeout".into(), duration(t).into());
        }
        if !r.retriable_headers.is_empty() {
            rp.insert("retriable_headers".into(), r.retriable_headers.iter().map(header_matcher).collect());
        }
        if !r.retriable_status_codes.is_empty() {
            rp.insert("retriable_status_codes".into(), r.retriable_status_codes.clone().into());
        }
        if r.back_off != BackOff::default() {
            rp.insert(
                "retry_back_off".into(),
                json!({ "base_interval": duration(r.back_off.base), "max_interval": duration(r.back_off.max) }),
            );
        }
        if r.avoid_previous_hosts {
            rp.insert(
                "retry_host_predicate".into(),
                json!([{
                    "name": "envoy.retry_host_predicates.previous_hosts",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                    },
                }]),
            );
        }
        if r.host_selection_attempts != 1 {
            rp.insert("host_selection_retry_max_attempts".into(), r.host_selection_attempts.into());
        }
        m.insert("retry_policy".into(), Value::Object(rp));
    }
    if !f.hash_policy.is_empty() {
        m.insert("hash_policy".into(), f.hash_policy.iter().map(hash_policy).collect());
    }
    // Some(None) is the operator's `0s`.
    if let Some(t) = f.idle_timeout {
        m.insert("idle_timeout".into(), duration(t.unwrap_or(Duration::ZERO)).into());
    }
    if let Some(g) = f.grpc_timeout {
        m.insert("max_grpc_timeout".into(), duration(g.max.unwrap_or(Duration::ZERO)).into());
        if !g.offset.is_zero() {
            m.insert("grpc_timeout_offset".into(), duration(g.offset).into());
        }
    }
    let msd = &f.max_stream_duration;
    if *msd != RouteStreamDuration::default() {
        let mut d = Map::new();
        if let Some(t) = msd.max {
            d.insert("max_stream_duration".into(), duration(t.unwrap_or(Duration::ZERO)).into());
        }
        if let Some(t) = msd.grpc_header_max {
            d.insert("grpc_timeout_header_max".into(), duration(t.unwrap_or(Duration::ZERO)).into());
        }
        if !msd.grpc_header_offset.is_zero() {
            d.insert("grpc_timeout_header_offset".into(), duration(msd.grpc_header_offset).into());
        }
        m.insert("max_stream_duration".into(), Value::Object(d));
    }
    match f.cluster_not_found {
        404 => {
            m.insert("cluster_not_found_response_code".into(), "NOT_FOUND".into());
        }
        500 => {
            m.insert("cluster_not_found_response_code".into(), "INTERNAL_SERVER_ERROR".into());
        }
        _ => {}
    }
    if !f.mirrors.is_empty() {
        let mirrors: Vec<Value> = f.mirrors.iter().map(mirror).collect();
        m.insert("request_mirror_policies".into(), mirrors.into());
    }
    Value::Object(m)
}

fn mirror(p: &MirrorPolicy) -> Value {
    let mut m = Map::new();
    match &p.target {
        MirrorTarget::Cluster(c) => m.insert("cluster".into(), c.as_str().into()),
        MirrorTarget::Header(h) => m.insert("cluster_header".into(), h.as_str().into()),
    };
    if p.fraction.per_million < 1_000_000 {
        let denominator = match p.fraction.unit {
            1 => "MILLION",
            100 => "TEN_THOUSAND",
            _ => "HUNDRED",
        };
        let numerator = p.fraction.per_million / p.fraction.unit.max(1);
        m.insert(
            "runtime_fraction".into(),
            json!({ "default_value": { "numerator": numerator, "denominator": denominator } }),
        );
    }
    if !p.shadow_suffix {
        m.insert("disable_shadow_host_suffix_append".into(), true.into());
    }
    Value::Object(m)
}

fn hash_policy(h: &HashPolicy) -> Value {
    let mut m = match &h.method {
        HashMethod::Header(name) => json!({ "header": { "header_name": name } }),
        HashMethod::Cookie(c) => {
            let mut cookie = json!({ "name": c.name });
            if let Some(g) = &c.generate {
                cookie["ttl"] = format!("{}s", g.max_age).into();
                if !g.path.is_empty() {
                    cookie["path"] = g.path.as_str().into();
                }
                if !g.attributes.is_empty() {
                    let attributes: Vec<Value> =
                        g.attributes.iter().map(|(n, v)| json!({ "name": n, "value": v })).collect();
                    cookie["attributes"] = attributes.into();
                }
            }
            json!({ "cookie": cookie })
        }
        HashMethod::SourceIp => json!({ "connection_properties": { "source_ip": true } }),
        HashMethod::QueryParameter(name) => json!({ "query_parameter": { "name": name } }),
    };
    if h.terminal {
        m["terminal"] = true.into();
    }
    m
}

/// Every field of `outlier_detection`, defaults included (they are Envoy's too).
fn outlier_detection(o: &OutlierDetection) -> Value {
    json!({
        "consecutive_5xx": o.consecutive_5xx,
        "consecutive_gateway_failure": o.consecutive_gateway_failure,
        "consecutive_local_origin_failure": o.consecutive_local_origin_failure,
        "interval": duration(o.interval),
        "base_ejection_time": duration(o.base_ejection_time),
        "max_ejection_time": duration(o.max_ejection_time),
        "max_ejection_time_jitter": duration(o.max_ejection_time_jitter),
        "max_ejection_percent": o.max_ejection_percent,
        "enforcing_consecutive_5xx": o.enforcing_consecutive_5xx,
        "enforcing_consecutive_gateway_failure": o.enforcing_consecutive_gateway_failure,
        "enforcing_consecutive_local_origin_failure": o.enforcing_consecutive_local_origin_failure,
        "split_external_local_origin_errors": o.split_external_local_origin_errors,
        "always_eject_one_host": o.always_eject_one_host,
        "success_rate_minimum_hosts": o.success_rate.minimum_hosts,
        "success_rate_request_volume": o.success_rate.request_volume,
        "success_rate_stdev_factor": o.success_rate_stdev_factor,
        "failure_percentage_minimum_hosts": o.failure_percentage.minimum_hosts,
        "failure_percentage_request_volume": o.failure_percentage.request_volume,
        "failure_percentage_threshold": o.failure_percentage_threshold,
        "enforcing_success_rate": o.enforcing_success_rate,
        "enforcing_local_origin_success_rate": o.enforcing_local_origin_success_rate,
        "enforcing_failure_percentage": o.enforcing_failure_percentage,
        "enforcing_failure_percentage_local_origin": o.enforcing_failure_percentage_local_origin,
        "successful_active_health_check_uneject_host": o.successful_active_health_check_uneject_host,
    })
}

fn redirect(r: &Redirect) -> Value {
    let mut m = Map::new();
    if r.https_redirect {
        m.insert("https_redirect".into(), true.into());
    }
    if let Some(h) = &r.host_redirect {
        m.insert("host_redirect".into(), h.as_str().into());
    }
    if let Some(p) = &r.path_redirect {
        m.insert("path_redirect".into(), p.as_str().into());
    }
    if let Some(p) = &r.prefix_rewrite {
        m.insert("prefix_rewrite".into(), p.as_str().into());
    }
    let code = match r.status {
        302 => Some("FOUND"),
        303 => Some("SEE_OTHER"),
        307 => Some("TEMPORARY_REDIRECT"),
        308 => Some("PERMANENT_REDIRECT"),
        // 301, MOVED_PERMANENTLY, is the zero value; the loader accepts no other codes.
        _ => None,
    };
    if let Some(code) = code {
        m.insert("response_code".into(), code.into());
    }
    if r.strip_query {
        m.insert("strip_query".into(), true.into());
    }
    Value::Object(m)
}

/// A cluster's HTTP/2 choice as the v3 `HttpProtocolOptions` it is (whichever way it was
/// written), its `http2_protocol_options` with the fields that differ from Envoy's defaults.
fn http_protocol_options(protocol: &crate::config::UpstreamProtocol) -> Option<Value> {
    use crate::config::UpstreamProtocol as P;
    let (choice, h2) = match protocol {
        P::Http1 => return None,
        P::Http2(h2) => ("explicit_http_config", h2),
        P::Downstream(h2) => ("use_downstream_protocol_config", h2),
        P::Auto(h2) => ("auto_config", h2),
    };
    let d = crate::config::Http2Options::default();
    let mut o = Map::new();
    for (name, value, default) in [
        ("max_concurrent_streams", h2.max_concurrent_streams, d.max_concurrent_streams),
        ("initial_stream_window_size", h2.initial_stream_window_size, d.initial_stream_window_size),
        (
            "initial_connection_window_size",
            h2.initial_connection_window_size,
            d.initial_connection_window_size,
        ),
        ("hpack_table_size", h2.hpack_table_size, d.hpack_table_size),
    ] {
        if value != default {
            o.insert(name.into(), value.into());
        }
    }
    let mut config = Map::new();
    config.insert("http2_protocol_options".into(), Value::Object(o));
    let mut options = Map::new();
    options.insert(
        "@type".into(),
        "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into(),
    );
    options.insert(choice.into(), Value::Object(config));
    Some(Value::Object(options))
}

fn cluster(c: &Cluster) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), c.name.as_str().into());
    // STATIC, ROUND_ROBIN and AUTO are the enums' zero values, which protobuf JSON (and so Envoy)
    // leaves out.
    match c.discovery {
        DiscoveryType::Static => {}
        DiscoveryType::StrictDns => {
            m.insert("type".into(), "STRICT_DNS".into());
        }
        DiscoveryType::LogicalDns => {
            m.insert("type".into(), "LOGICAL_DNS".into());
        }
        DiscoveryType::Eds => {
            m.insert("type".into(), "EDS".into());
        }
    }
    if let Some(e) = &c.eds {
        let mut ec = Map::new();
        ec.insert("eds_config".into(), path_source(&e.source));
        if e.service_name_given {
            ec.insert("service_name".into(), e.service_name.as_str().into());
        }
        m.insert("eds_cluster_config".into(), Value::Object(ec));
    }
    m.insert("connect_timeout".into(), duration(c.connect_timeout).into());
    if let Some(tls) = &c.tls {
        m.insert("transport_socket".into(), tls.dump.clone());
    }
    match c.lb_policy {
        LbPolicy::RoundRobin => {}
        LbPolicy::LeastRequest => {
            m.insert("lb_policy".into(), "LEAST_REQUEST".into());
        }
        LbPolicy::Random => {
            m.insert("lb_policy".into(), "RANDOM".into());
        }
        LbPolicy::RingHash => {
            m.insert("lb_policy".into(), "RING_HASH".into());
        }
        LbPolicy::Maglev => {
            m.insert("lb_policy".into(), "MAGLEV".into());
        }
    }
    // Only meaningful for DNS clusters; for a STATIC one printed only if someone set it.
    let dns = matches!(c.discovery, DiscoveryType::StrictDns | DiscoveryType::LogicalDns);
    if dns || c.dns_refresh_rate != Duration::from_secs(5) {
        m.insert("dns_refresh_rate".into(), duration(c.dns_refresh_rate).into());
    }
    let family = match c.dns_lookup_family {
        DnsLookupFamily::Auto => None,
        DnsLookupFamily::V4Only => Some("V4_ONLY"),
        DnsLookupFamily::V6Only => Some("V6_ONLY"),
        DnsLookupFamily::V4Preferred => Some("V4_PREFERRED"),
        DnsLookupFamily::All => Some("ALL"),
    };
    if let Some(f) = family {
        m.insert("dns_lookup_family".into(), f.into());
    }
    if !c.dns_resolvers.is_empty() {
        let resolvers: Vec<Value> =
            c.dns_resolvers.iter().map(|a| socket_address(&a.ip().to_string(), a.port())).collect();
        m.insert("dns_resolution_config".into(), json!({ "resolvers": resolvers }));
    }
    // An EDS cluster's endpoints are its file's (Envoy's dump leaves them out of the cluster too).
    if c.eds.is_none() {
        m.insert("load_assignment".into(), load_assignment(c));
    }
    if !c.health_checks.is_empty() {
        m.insert("health_checks".into(), c.health_checks.iter().map(health_check).collect());
    }
    let mut common_lb = Map::new();
    if c.lb_health.panic_threshold != LbHealth::default().panic_threshold {
        common_lb.insert("healthy_panic_threshold".into(), json!({ "value": c.lb_health.panic_threshold }));
    }
    if c.locality_weighted {
        common_lb.insert("locality_weighted_lb_config".into(), json!({}));
    }
    if !common_lb.is_empty() {
        m.insert("common_lb_config".into(), Value::Object(common_lb));
    }
    if c.least_request != LeastRequest::default() {
        let lr = c.least_request;
        m.insert(
            "least_request_lb_config".into(),
            json!({
                "choice_count": lr.choice_count,
                "active_request_bias": { "default_value": lr.active_request_bias },
            }),
        );
    }
    if let Some(n) = c.max_requests_per_connection {
        m.insert("max_requests_per_connection".into(), n.into());
    }
    let mut common = Map::new();
    if c.idle_timeout != Duration::from_secs(3600) {
        common.insert("idle_timeout".into(), duration(c.idle_timeout).into());
    }
    if let Some(d) = c.max_connection_duration {
        common.insert("max_connection_duration".into(), duration(d).into());
    }
    if c.max_headers_count != MAX_HEADERS_COUNT {
        common.insert("max_headers_count".into(), c.max_headers_count.into());
    }
    if !common.is_empty() {
        m.insert("common_http_protocol_options".into(), Value::Object(common));
    }
    if let Some(options) = http_protocol_options(&c.protocol) {
        let mut typed = Map::new();
        typed.insert("envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into(), options);
        m.insert("typed_extension_protocol_options".into(), Value::Object(typed));
    }
    if let Some(k) = &c.tcp_keepalive {
        let mut ka = Map::new();
        if let Some(n) = k.probes {
            ka.insert("keepalive_probes".into(), n.into());
        }
        if let Some(t) = k.time {
            ka.insert("keepalive_time".into(), t.as_secs().into());
        }
        if let Some(t) = k.interval {
            ka.insert("keepalive_interval".into(), t.as_secs().into());
        }
        m.insert("upstream_connection_options".into(), json!({ "tcp_keepalive": ka }));
    }
    if c.circuit_breakers != CircuitBreakers::default() {
        let cb = c.circuit_breakers;
        let mut threshold = json!({
            "max_connections": cb.max_connections,
            "max_pending_requests": cb.max_pending_requests,
            "max_requests": cb.max_requests,
            "max_retries": cb.max_retries,
            "track_remaining": cb.track_remaining,
        });
        if let Some(b) = cb.retry_budget {
            threshold["retry_budget"] = json!({
                "budget_percent": { "value": b.budget_percent },
                "min_retry_concurrency": b.min_retry_concurrency,
            });
        }
        let mut breakers = json!({ "thresholds": [threshold] });
        if let Some(n) = cb.max_connections_per_host {
            breakers["per_host_thresholds"] = json!([{ "max_connections": n }]);
        }
        m.insert("circuit_breakers".into(), breakers);
    }
    if let Some(o) = &c.outlier_detection {
        m.insert("outlier_detection".into(), outlier_detection(o));
    }
    let t = c.hash_table;
    if t != HashTable::default() {
        m.insert(
            "ring_hash_lb_config".into(),
            json!({ "minimum_ring_size": t.minimum_ring_size, "maximum_ring_size": t.maximum_ring_size }),
        );
        m.insert("maglev_lb_config".into(), json!({ "table_size": t.maglev_table_size }));
    }
    Value::Object(m)
}

/// The endpoints as a v3 `load_assignment` (v2 `hosts` become one locality, as Envoy converts
/// them). The model keeps endpoints flat with their locality's index and priority; each run of
/// equal ones becomes one entry, which keeps the order and so loads back to the same list (the
/// entries of one locality merge again by their name, as Envoy merges them).
fn load_assignment(c: &Cluster) -> Value {
    let mut localities: Vec<(u32, u32, Vec<Value>)> = Vec::new();
    for e in &c.endpoints {
        let mut lb = Map::new();
        lb.insert("endpoint".into(), json!({ "address": socket_address(&e.host, e.port) }));
        if e.weight != 1 {
            lb.insert("load_balancing_weight".into(), e.weight.into());
        }
        let status = match e.health {
            HealthStatus::Unknown => None,
            HealthStatus::Healthy => Some("HEALTHY"),
            HealthStatus::Unhealthy => Some("UNHEALTHY"),
            HealthStatus::Draining => Some("DRAINING"),
            HealthStatus::Timeout => Some("TIMEOUT"),
            HealthStatus::Degraded => Some("DEGRADED"),
        };
        if let Some(s) = status {
            lb.insert("health_status".into(), s.into());
        }
        if e.check_port.is_some() || e.check_host.is_some() {
            let mut hc = Map::new();
            if let Some(p) = e.check_port {
                hc.insert("port_value".into(), p.into());
            }
            if let Some(h) = &e.check_host {
                hc.insert("hostname".into(), h.as_str().into());
            }
            if let Some(Value::Object(ep)) = lb.get_mut("endpoint") {
                ep.insert("health_check_config".into(), Value::Object(hc));
            }
        }
        match localities.last_mut() {
            Some((p, l, list)) if *p == e.priority && *l == e.locality => list.push(Value::Object(lb)),
            _ => {
                // A locality listed without endpoints keeps its place (its index is its order).
                let next = localities.iter().map(|(_, l, _)| l + 1).max().unwrap_or(0);
                for l in next..e.locality {
                    let priority = c.localities.get(l as usize).map_or(0, |l| l.priority);
                    localities.push((priority, l, Vec::new()));
                }
                localities.push((e.priority, e.locality, vec![Value::Object(lb)]))
            }
        }
    }
    let next = localities.iter().map(|(_, l, _)| l + 1).max().unwrap_or(0);
    for l in next..c.localities.len() as u32 {
        let priority = c.localities.get(l as usize).map_or(0, |l| l.priority);
        localities.push((priority, l, Vec::new()));
    }
    let endpoints: Vec<Value> = localities
        .into_iter()
        .map(|(priority, locality, lb_endpoints)| {
            let mut loc = Map::new();
            if let Some(l) = c.localities.get(locality as usize) {
                // Named (even empty) when weighted: Envoy reads no weight from an unnamed entry.
                if !l.region.is_empty() || !l.zone.is_empty() || !l.sub_zone.is_empty() || l.weight != 0 {
                    let mut name = Map::new();
                    for (k, v) in [("region", &l.region), ("zone", &l.zone), ("sub_zone", &l.sub_zone)] {
                        if !v.is_empty() {
                            name.insert(k.into(), v.as_str().into());
                        }
                    }
                    loc.insert("locality".into(), Value::Object(name));
                }
                if l.weight != 0 {
                    loc.insert("load_balancing_weight".into(), l.weight.into());
                }
            }
            loc.insert("lb_endpoints".into(), lb_endpoints.into());
            if priority != 0 {
                loc.insert("priority".into(), priority.into());
            }
            Value::Object(loc)
        })
        .collect();
    let mut la = json!({ "cluster_name": c.name, "endpoints": endpoints });
    if c.lb_health.overprovisioning_factor != LbHealth::default().overprovisioning_factor {
        la["policy"] = json!({ "overprovisioning_factor": c.lb_health.overprovisioning_factor });
    }
    la
}

/// One active health check, every field written (the loader reads them back as they are).
fn health_check(h: &HealthCheck) -> Value {
    let mut m = Map::new();
    for (k, d) in [
        ("timeout", h.timeout),
        ("interval", h.interval),
        ("initial_jitter", h.initial_jitter),
        ("interval_jitter", h.interval_jitter),
        ("no_traffic_interval", h.no_traffic_interval),
        ("no_traffic_healthy_interval", h.no_traffic_healthy_interval),
        ("unhealthy_interval", h.unhealthy_interval),
        ("unhealthy_edge_interval", h.unhealthy_edge_interval),
        ("healthy_edge_interval", h.healthy_edge_interval),
    ] {
        m.insert(k.into(), duration(d).into());
    }
    m.insert("interval_jitter_percent".into(), h.interval_jitter_percent.into());
    m.insert("unhealthy_threshold".into(), h.unhealthy_threshold.into());
    m.insert("healthy_threshold".into(), h.healthy_threshold.into());
    if let Some(p) = h.alt_port {
        m.insert("alt_port".into(), p.into());
    }
    m.insert("always_log_health_check_failures".into(), h.always_log_failures.into());
    m.insert("always_log_health_check_success".into(), h.always_log_success.into());
    m.insert("reuse_connection".into(), h.reuse_connection.into());
    let ranges = |list: &[(u16, u16)]| -> Value {
        list.iter().map(|(start, end)| json!({ "start": start, "end": end })).collect()
    };
    match &h.kind {
        HealthCheckKind::Http(x) => {
            let mut hh = Map::new();
            hh.insert("host".into(), x.host.as_str().into());
            hh.insert("path".into(), x.path.as_str().into());
            hh.insert("method".into(), x.method.as_str().into());
            if !x.request_headers_to_add.is_empty() {
                hh.insert("request_headers_to_add".into(), header_options(&x.request_headers_to_add));
            }
            if !x.request_headers_to_remove.is_empty() {
                hh.insert("request_headers_to_remove".into(), x.request_headers_to_remove.clone().into());
            }
            hh.insert("expected_statuses".into(), ranges(&x.expected_statuses));
            if !x.retriable_statuses.is_empty() {
                hh.insert("retriable_statuses".into(), ranges(&x.retriable_statuses));
            }
            m.insert("http_health_check".into(), Value::Object(hh));
        }
        HealthCheckKind::Tcp { send, receive } => {
            let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02X}")).collect::<String>();
            let mut t = Map::new();
            if !send.is_empty() {
                t.insert("send".into(), json!({ "text": hex(send) }));
            }
            if !receive.is_empty() {
                t.insert("receive".into(), receive.iter().map(|r| json!({ "text": hex(r) })).collect());
            }
            m.insert("tcp_health_check".into(), Value::Object(t));
        }
    }
    Value::Object(m)
}
