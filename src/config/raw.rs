//! The serde layer: Envoy's YAML as written, v2 and v3 field names side by side. Every struct denies
//! unknown fields so a typo is an error at its line; fields skiff accepts without acting on are
//! listed explicitly as `Ign` and judged (ignored, warned about, rejected) in `convert`.
//!
//! Leaf values (durations, ports, IPs, enum names) are checked here, inside deserialization, because
//! that is where serde_norway still knows the line and column.

// Silently ignored fields are never read: they exist so that `deny_unknown_fields` accepts them.
#![allow(dead_code)]

use super::duration::Dur;
use super::model::HealthStatus;
use super::model::{DiscoveryType, DnsLookupFamily, LbPolicy, TracingOperation, UnderscoresAction};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize as DeriveDeserialize;
use std::fmt;
use std::marker::PhantomData;
use std::net::IpAddr;

/// A field accepted for compatibility; `convert` decides whether its presence is ignored, warned
/// about or rejected.
pub type Ign = Option<IgnoredAny>;

// ---------------------------------------------------------------------------------------------
// Leaf types

/// A port number: YAML integer, or a decimal string as protobuf's JSON mapping also allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port(pub u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Port;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port number (0-65535)")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Port, E> {
                u16::try_from(v)
                    .map(Port)
                    .map_err(|_| E::custom(format!("port_value {v} is out of range (0-65535)")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Port, E> {
                u16::try_from(v)
                    .map(Port)
                    .map_err(|_| E::custom(format!("port_value {v} is out of range (0-65535)")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Port, E> {
                match v.parse::<u64>() {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!("expected a port number (0-65535), got \"{v}\""))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// An address skiff binds to or sends DNS queries to: must be an IP literal, because nothing
/// resolves host names before binding (Envoy refuses them too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpLit(pub IpAddr);

impl<'de> Deserialize<'de> for IpLit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IpLit;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an IP address such as \"0.0.0.0\" or \"::\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IpLit, E> {
                let trimmed = v.trim_start_matches('[').trim_end_matches(']');
                trimmed.parse::<IpAddr>().map(IpLit).map_err(|_| {
                    E::custom(format!(
                        "expected an IP address such as \"0.0.0.0\" or \"::\", got \"{v}\" (host names are not resolved here)"
                    ))
                })
            }
        }
        d.deserialize_str(V)
    }
}

/// Envoy enum values, matched in any case ("strict_dns", "STRICT_DNS") as the walkthrough files
/// spell them. Values Envoy knows but skiff does not implement are rejected by name, so the operator
/// learns it is a gap rather than a typo.
pub trait CiEnum: Sized + Copy + 'static {
    const FIELD: &'static str;
    const SUPPORTED: &'static [(&'static str, Self)];
    const UNSUPPORTED: &'static [&'static str];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ci<T>(pub T);

pub fn parse_ci<T: CiEnum>(v: &str) -> Result<T, String> {
    let upper = v.trim().to_ascii_uppercase();
    if let Some((_, value)) = T::SUPPORTED.iter().find(|(name, _)| *name == upper) {
        return Ok(*value);
    }
    let supported: Vec<&str> = T::SUPPORTED.iter().map(|(n, _)| *n).collect();
    if T::UNSUPPORTED.contains(&upper.as_str()) {
        return Err(format!(
            "{} {upper} is not yet supported (supported: {})",
            T::FIELD,
            supported.join(", ")
        ));
    }
    Err(format!("unknown {} \"{v}\", expected one of {}", T::FIELD, supported.join(", ")))
}

impl<'de, T: CiEnum> Deserialize<'de> for Ci<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<T: CiEnum> Visitor<'_> for V<T> {
            type Value = Ci<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a {} name", T::FIELD)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Ci<T>, E> {
                parse_ci::<T>(v).map(Ci).map_err(E::custom)
            }
        }
        d.deserialize_str(V(PhantomData))
    }
}

impl CiEnum for DiscoveryType {
    const FIELD: &'static str = "cluster type";
    const SUPPORTED: &'static [(&'static str, Self)] = &[
        ("STATIC", DiscoveryType::Static),
        ("STRICT_DNS", DiscoveryType::StrictDns),
        ("LOGICAL_DNS", DiscoveryType::LogicalDns),
        ("EDS", DiscoveryType::Eds),
    ];
    const UNSUPPORTED: &'static [&'static str] = &["ORIGINAL_DST"];
}

impl CiEnum for LbPolicy {
    const FIELD: &'static str = "lb_policy";
    const SUPPORTED: &'static [(&'static str, Self)] = &[
        ("ROUND_ROBIN", LbPolicy::RoundRobin),
        ("LEAST_REQUEST", LbPolicy::LeastRequest),
        ("RANDOM", LbPolicy::Random),
        ("RING_HASH", LbPolicy::RingHash),
        ("MAGLEV", LbPolicy::Maglev),
    ];
    const UNSUPPORTED: &'static [&'static str] =
        &["CLUSTER_PROVIDED", "ORIGINAL_DST_LB", "LOAD_BALANCING_POLICY_CONFIG"];
}

impl CiEnum for DnsLookupFamily {
    const FIELD: &'static str = "dns_lookup_family";
    const SUPPORTED: &'static [(&'static str, Self)] = &[
        ("AUTO", DnsLookupFamily::Auto),
        ("V4_ONLY", DnsLookupFamily::V4Only),
        ("V6_ONLY", DnsLookupFamily::V6Only),
        ("V4_PREFERRED", DnsLookupFamily::V4Preferred),
        ("ALL", DnsLookupFamily::All),
    ];
    const UNSUPPORTED: &'static [&'static str] = &[];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecType {
    /// HTTP/2 when the client opens with its connection preface, else HTTP/1.1.
    Auto,
    Http1,
    /// HTTP/2 only (prior knowledge, or `h2` by ALPN).
    Http2,
}

impl CiEnum for CodecType {
    const FIELD: &'static str = "codec_type";
    const SUPPORTED: &'static [(&'static str, Self)] =
        &[("AUTO", CodecType::Auto), ("HTTP1", CodecType::Http1), ("HTTP2", CodecType::Http2)];
    const UNSUPPORTED: &'static [&'static str] = &["HTTP3"];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tcp;

impl CiEnum for Tcp {
    const FIELD: &'static str = "protocol";
    const SUPPORTED: &'static [(&'static str, Self)] = &[("TCP", Tcp)];
    const UNSUPPORTED: &'static [&'static str] = &["UDP"];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutingPriority {
    Default,
    High,
}

impl CiEnum for RoutingPriority {
    const FIELD: &'static str = "priority";
    const SUPPORTED: &'static [(&'static str, Self)] =
        &[("DEFAULT", RoutingPriority::Default), ("HIGH", RoutingPriority::High)];
    const UNSUPPORTED: &'static [&'static str] = &[];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedirectCode(pub u16);

impl CiEnum for RedirectCode {
    const FIELD: &'static str = "response_code";
    const SUPPORTED: &'static [(&'static str, Self)] = &[
        ("MOVED_PERMANENTLY", RedirectCode(301)),
        ("FOUND", RedirectCode(302)),
        ("SEE_OTHER", RedirectCode(303)),
        ("TEMPORARY_REDIRECT", RedirectCode(307)),
        ("PERMANENT_REDIRECT", RedirectCode(308)),
    ];
    const UNSUPPORTED: &'static [&'static str] = &[];
}

/// `append_action`, folded into the model's `append` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendAction(pub bool);

impl CiEnum for AppendAction {
    const FIELD: &'static str = "append_action";
    const SUPPORTED: &'static [(&'static str, Self)] = &[
        ("APPEND_IF_EXISTS_OR_ADD", AppendAction(true)),
        ("OVERWRITE_IF_EXISTS_OR_ADD", AppendAction(false)),
    ];
    const UNSUPPORTED: &'static [&'static str] = &["ADD_IF_ABSENT", "OVERWRITE_IF_EXISTS"];
}

pub const HCM_NAMES: &[&str] =
    &["envoy.filters.network.http_connection_manager", "envoy.http_connection_manager"];
const HCM_TYPES: &[&str] = &[
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    "type.googleapis.com/envoy.config.filter.network.http_connection_manager.v2.HttpConnectionManager",
];

pub const TCP_PROXY_NAMES: &[&str] = &["envoy.filters.network.tcp_proxy", "envoy.tcp_proxy"];
pub const TCP_PROXY_TYPES: &[&str] = &[
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
    "type.googleapis.com/envoy.config.filter.network.tcp_proxy.v2.TcpProxy",
];

pub const NET_LOCAL_RATELIMIT_NAME: &str = "envoy.filters.network.local_ratelimit";
pub const NET_LOCAL_RATELIMIT_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit";
pub const CONNECTION_LIMIT_NAME: &str = "envoy.filters.network.connection_limit";
pub const CONNECTION_LIMIT_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit";
pub const NET_RBAC_NAME: &str = "envoy.filters.network.rbac";
pub const NET_RBAC_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC";

/// The network filters skiff runs: a listener is either HTTP or a TCP proxy (the terminal filter),
/// with limits before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetFilterKind {
    Hcm,
    TcpProxy,
    LocalRateLimit,
    ConnectionLimit,
    Rbac,
}

/// A network filter's name: anything skiff does not run is refused at the name, before its config
/// is read as the wrong type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetFilterName(pub String, pub NetFilterKind);

impl<'de> Deserialize<'de> for NetFilterName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(CheckedStr("a network filter name", |name: &str| {
            let kind = if HCM_NAMES.contains(&name) {
                NetFilterKind::Hcm
            } else if TCP_PROXY_NAMES.contains(&name) {
                NetFilterKind::TcpProxy
            } else if name == NET_LOCAL_RATELIMIT_NAME {
                NetFilterKind::LocalRateLimit
            } else if name == CONNECTION_LIMIT_NAME {
                NetFilterKind::ConnectionLimit
            } else if name == NET_RBAC_NAME {
                NetFilterKind::Rbac
            } else {
                return Err(format!(
                    "network filter \"{name}\" is not supported; skiff runs envoy.filters.network.http_connection_manager \
                     or envoy.filters.network.tcp_proxy, each after any of envoy.filters.network.local_ratelimit, \
                     envoy.filters.network.connection_limit and envoy.filters.network.rbac"
                ));
            };
            Ok(NetFilterName(name.to_string(), kind))
        }))
    }
}

/// Checks a string inside the visitor: an error raised after `String::deserialize` returns would
/// get the enclosing mapping's position instead of the value's.
struct CheckedStr<F>(&'static str, F);

impl<T, F: FnOnce(&str) -> Result<T, String>> Visitor<'_> for CheckedStr<F> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.1)(v).map_err(E::custom)
    }
}

/// The `"@type"` of an HCM `typed_config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HcmTypeUrl;

impl<'de> Deserialize<'de> for HcmTypeUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(CheckedStr("a type URL", |url: &str| {
            if HCM_TYPES.contains(&url) {
                Ok(HcmTypeUrl)
            } else {
                Err(format!("expected \"@type\" {}, got \"{url}\"", HCM_TYPES[0]))
            }
        }))
    }
}

/// The `"@type"` of a tcp_proxy `typed_config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpProxyTypeUrl;

impl<'de> Deserialize<'de> for TcpProxyTypeUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(CheckedStr("a type URL", |url: &str| {
            if TCP_PROXY_TYPES.contains(&url) {
                Ok(TcpProxyTypeUrl)
            } else {
                Err(format!("expected \"@type\" {}, got \"{url}\"", TCP_PROXY_TYPES[0]))
            }
        }))
    }
}

/// A list that Envoy users sometimes write as a single mapping (front-envoy.yaml's
/// `filter_chains`). Implemented as a visitor rather than an untagged enum so that errors inside
/// the element keep their own line and column instead of collapsing into "did not match any
/// variant".
#[derive(Debug, Clone)]
pub struct OneOrMany<T> {
    pub items: Vec<T>,
    pub was_single: bool,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = OneOrMany<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list (or a single mapping)")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(OneOrMany { items, was_single: false })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let item = T::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(OneOrMany { items: vec![item], was_single: true })
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(OneOrMany { items: Vec::new(), was_single: false })
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrafficDirection {
    Unspecified,
    Inbound,
    Outbound,
}

impl CiEnum for TrafficDirection {
    const FIELD: &'static str = "traffic_direction";
    const SUPPORTED: &'static [(&'static str, Self)] = &[
        ("UNSPECIFIED", TrafficDirection::Unspecified),
        ("INBOUND", TrafficDirection::Inbound),
        ("OUTBOUND", TrafficDirection::Outbound),
    ];
    const UNSUPPORTED: &'static [&'static str] = &[];
}

impl CiEnum for TracingOperation {
    const FIELD: &'static str = "operation_name";
    const SUPPORTED: &'static [(&'static str, Self)] =
        &[("INGRESS", TracingOperation::Ingress), ("EGRESS", TracingOperation::Egress)];
    const UNSUPPORTED: &'static [&'static str] = &[];
}

/// Zipkin's `collector_endpoint_version`: skiff reports JSON to the v2 API only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZipkinHttpJson;

impl CiEnum for ZipkinHttpJson {
    const FIELD: &'static str = "collector_endpoint_version";
    const SUPPORTED: &'static [(&'static str, Self)] = &[("HTTP_JSON", ZipkinHttpJson)];
    const UNSUPPORTED: &'static [&'static str] = &["HTTP_PROTO", "GRPC", "HTTP_JSON_V1"];
}

const ZIPKIN_NAMES: &[&str] = &["envoy.tracers.zipkin", "envoy.zipkin"];
const ZIPKIN_TYPES: &[&str] = &[
    "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig",
    "type.googleapis.com/envoy.config.trace.v2.ZipkinConfig",
];
pub const OTEL_NAME: &str = "envoy.tracers.opentelemetry";
pub const OTEL_TYPE: &str = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig";

fn unsupported_tracer(what: &str) -> String {
    format!(
        "tracing provider \"{what}\" is not supported; skiff reports to Zipkin (envoy.tracers.zipkin) and OpenTelemetry (envoy.tracers.opentelemetry) only"
    )
}

/// A tracing provider's name, refused here (not in `convert`) so that a Datadog or OpenTelemetry
/// config is reported as an unsupported provider, not as unknown fields in its `typed_config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracerName(pub String);

impl<'de> Deserialize<'de> for TracerName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(CheckedStr("a tracing provider name", |name: &str| {
            if ZIPKIN_NAMES.contains(&name) || name == OTEL_NAME {
                Ok(TracerName(name.to_string()))
            } else {
                Err(unsupported_tracer(name))
            }
        }))
    }
}

/// The `"@type"` of a tracer's `typed_config`; same reasoning as `TracerName`, for files that put
/// `typed_config` before `name`. True for OpenTelemetry's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipkinTypeUrl(pub bool);

impl<'de> Deserialize<'de> for ZipkinTypeUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(CheckedStr("a type URL", |url: &str| {
            if ZIPKIN_TYPES.contains(&url) || url == OTEL_TYPE {
                Ok(ZipkinTypeUrl(url == OTEL_TYPE))
            } else {
                Err(unsupported_tracer(url))
            }
        }))
    }
}

// ---------------------------------------------------------------------------------------------
// Bootstrap

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "an Envoy bootstrap mapping")]
pub struct RawBootstrap {
    pub admin: Option<RawAdmin>,
    pub static_resources: Option<RawStatic>,
    pub dynamic_resources: Option<RawDynamic>,
    pub node: Option<RawNode>,
    pub layered_runtime: Ign,
    pub runtime: Ign,
    pub cluster_manager: Ign,
    pub stats_config: Ign,
    pub stats_sinks: Ign,
    pub stats_flush_interval: Ign,
    pub tracing: Option<RawBootstrapTracing>,
    pub watchdog: Ign,
    pub watchdogs: Ign,
    pub overload_manager: Ign,
    pub hds_config: Ign,
    pub flags_path: Ign,
    pub enable_dispatcher_stats: Ign,
    pub header_prefix: Ign,
}

/// `node`: skiff reads its id and cluster (which `dynamic_resources` require, as in Envoy), and
/// its locality and metadata, which it sends to a management server as they are. Its other
/// fields describe Envoy's own build and extensions (skiff sends its own), so unknown ones are
/// let through rather than listed.
#[derive(Debug, DeriveDeserialize)]
#[serde(expecting = "a node mapping like {id, cluster}")]
pub struct RawNode {
    pub id: Option<String>,
    pub cluster: Option<String>,
    pub locality: Option<serde_json::Value>,
    pub metadata: Option<serde_json::Value>,
}

/// `dynamic_resources`: files or a management server (`convert` judges the sources).
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawDynamic {
    pub lds_config: Option<RawConfigSource>,
    pub cds_config: Option<RawConfigSource>,
    pub ads_config: Option<RawApiConfigSource>,
    pub lds_resources_locator: Ign,
    pub cds_resources_locator: Ign,
}

/// A `ConfigSource`, v3 `path_config_source` and v2 `path` side by side.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a config source mapping")]
pub struct RawConfigSource {
    pub path_config_source: Option<RawPathConfigSource>,
    pub path: Option<String>,
    pub resource_api_version: Option<String>,
    pub initial_fetch_timeout: Option<Dur>,
    pub api_config_source: Option<RawApiConfigSource>,
    pub ads: Option<RawAds>,
    #[serde(rename = "self")]
    pub self_source: Ign,
    pub authorities: Ign,
}

/// `ads: {}`: the source is the `ads_config` stream.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "an empty mapping: ads: {}")]
pub struct RawAds {}

/// An `ApiConfigSource` (`ads_config`, `api_config_source`).
#[derive(Debug, DeriveDeserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an api config source mapping like {api_type: GRPC, grpc_services: [...]}"
)]
pub struct RawApiConfigSource {
    pub api_type: Option<String>,
    pub transport_api_version: Option<String>,
    pub grpc_services: Option<Vec<RawGrpcService>>,
    pub cluster_names: Option<Vec<String>>,
    pub refresh_delay: Option<Dur>,
    pub request_timeout: Option<Dur>,
    pub rate_limit_settings: Ign,
    pub set_node_on_first_message_only: Option<bool>,
    pub config_validators: Ign,
}

/// A `GrpcService`: skiff's own client (`envoy_grpc`) only.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a grpc service mapping like {envoy_grpc: {cluster_name: ...}}")]
pub struct RawGrpcService {
    pub envoy_grpc: Option<RawEnvoyGrpc>,
    pub google_grpc: Ign,
    pub timeout: Ign,
    pub initial_metadata: Ign,
    pub retry_policy: Ign,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "an envoy_grpc mapping like {cluster_name: ...}")]
pub struct RawEnvoyGrpc {
    pub cluster_name: String,
    pub authority: Option<String>,
    pub retry_policy: Ign,
    pub max_receive_message_length: Ign,
    pub skip_envoy_headers: Ign,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a path_config_source mapping like {path: ...}")]
pub struct RawPathConfigSource {
    pub path: String,
    pub watched_directory: Option<RawWatchedDirectory>,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a watched directory mapping like {path: ...}")]
pub struct RawWatchedDirectory {
    pub path: String,
}

/// A `dynamic_resources` file: a `DiscoveryResponse` whose resources are `T` (each carrying its
/// `"@type"`, checked in `convert`).
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a DiscoveryResponse mapping like {resources: [...]}")]
pub struct RawDiscoveryResponse<T> {
    pub version_info: Option<String>,
    pub resources: Option<Vec<T>>,
    pub type_url: Option<String>,
    pub nonce: Ign,
    pub canary: Ign,
    pub control_plane: Ign,
}

/// One parsed `dynamic_resources` file, with what `convert` copies into the model's `Xds`.
#[derive(Debug)]
pub struct RawFile<T> {
    pub version_info: String,
    pub received: std::time::SystemTime,
    pub resources: Vec<T>,
}

/// The applied `dynamic_resources` files, None for a file that has contributed nothing.
#[derive(Debug, Default)]
pub struct RawDynamicFiles {
    pub lds: Option<RawFile<RawListener>>,
    pub cds: Option<RawFile<RawCluster>>,
    /// Route configuration files by path, in `DocTexts::rds` order.
    pub rds: Vec<(String, RawFile<RawRouteConfig>)>,
    /// Endpoint files by path, in `DocTexts::eds` order.
    pub eds: Vec<(String, RawFile<RawLoadAssignment>)>,
}

/// A cluster's `eds_cluster_config`.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "an eds_cluster_config mapping like {eds_config, service_name}")]
pub struct RawEdsClusterConfig {
    pub eds_config: Option<RawConfigSource>,
    pub service_name: Option<String>,
}

/// An HCM's `rds`.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "an rds mapping like {route_config_name, config_source}")]
pub struct RawRds {
    pub route_config_name: String,
    pub config_source: RawConfigSource,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawStatic {
    pub listeners: Option<Vec<RawListener>>,
    pub clusters: Option<Vec<RawCluster>>,
    /// Read by `convert_tls` (their shape is its own).
    pub secrets: Option<Vec<serde_norway::Mapping>>,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawAdmin {
    pub access_log_path: Option<String>,
    pub access_log: Option<Vec<RawAccessLog>>,
    pub address: Option<RawBindAddress>,
    pub profile_path: Ign,
    pub socket_options: Ign,
    pub ignore_global_conn_limit: Ign,
}

/// An address skiff binds to (listener, admin) or queries (DNS resolver): IP literal only.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "an address mapping like {socket_address: {address, port_value}}")]
pub struct RawBindAddress {
    pub socket_address: Option<RawBindSocket>,
    pub pipe: Ign,
    pub envoy_internal_address: Ign,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawBindSocket {
    pub address: IpLit,
    pub port_value: Option<Port>,
    pub protocol: Option<Ci<Tcp>>,
    pub ipv4_compat: Option<bool>,
}

/// An upstream endpoint's address: an IP literal or a host name, depending on the cluster type.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "an address mapping like {socket_address: {address, port_value}}")]
pub struct RawHostAddress {
    pub socket_address: Option<RawHostSocket>,
    pub pipe: Ign,
    pub envoy_internal_address: Ign,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawHostSocket {
    pub address: String,
    pub port_value: Option<Port>,
    pub protocol: Option<Ci<Tcp>>,
    pub ipv4_compat: Option<bool>,
    pub resolver_name: Ign,
}

// ---------------------------------------------------------------------------------------------
// Listeners

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a listener mapping")]
pub struct RawListener {
    /// Only in a `dynamic_resources` file, where each resource is an `Any`.
    #[serde(rename = "@type")]
    pub type_url: Option<String>,
    pub name: Option<String>,
    pub address: RawBindAddress,
    pub filter_chains: Option<OneOrMany<RawFilterChain>>,
    pub listener_filters: Option<Vec<RawListenerFilter>>,
    pub use_original_dst: Option<bool>,
    pub default_filter_chain: Option<RawFilterChain>,
    pub per_connection_buffer_limit_bytes: Ign,
    pub traffic_direction: Option<Ci<TrafficDirection>>,
    pub metadata: Ign,
    pub drain_type: Ign,
    pub stat_prefix: Ign,
    pub listener_filters_timeout: Option<Dur>,
    pub continue_on_listener_filters_timeout: Option<bool>,
    pub reuse_port: Ign,
    pub enable_reuse_port: Ign,
    pub socket_options: Ign,
    pub freebind: Ign,
    pub transparent: Ign,
    pub tcp_fast_open_queue_length: Ign,
    pub tcp_backlog_size: Ign,
    pub connection_balance_config: Ign,
    pub ignore_global_conn_limit: Ign,
    pub udp_listener_config: Ign,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a filter chain mapping")]
pub struct RawFilterChain {
    pub filters: Option<OneOrMany<RawNetFilter>>,
    pub filter_chain_match: Option<RawFilterChainMatch>,
    pub transport_socket: Option<RawTransportSocket>,
    pub tls_context: Ign,
    pub use_proxy_proto: Option<bool>,
    pub name: Ign,
    pub metadata: Ign,
    pub transport_socket_connect_timeout: Option<Dur>,
}

/// A `filter_chain_match`.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFilterChainMatch {
    pub server_names: Option<Vec<String>>,
    pub transport_protocol: Option<String>,
    pub destination_port: Option<u32>,
    pub prefix_ranges: Option<Vec<RawCidrRange>>,
    pub address_suffix: Ign,
    pub suffix_len: Ign,
    pub direct_source_prefix_ranges: Ign,
    pub source_type: Option<String>,
    pub source_prefix_ranges: Option<Vec<RawCidrRange>>,
    pub source_ports: Option<Vec<u32>>,
    pub application_protocols: Option<Vec<String>>,
}

/// A `CidrRange` (`prefix_len` absent = 0, as protobuf reads it).
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCidrRange {
    pub address_prefix: String,
    pub prefix_len: Option<u32>,
}

/// A `transport_socket`.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTransportSocket {
    pub name: Option<String>,
    pub typed_config: Option<RawFilterTypedConfig>,
    pub config: Ign,
}

/// A `listener_filters` entry.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerFilter {
    pub name: Option<String>,
    pub typed_config: Option<RawFilterTypedConfig>,
    pub config: Ign,
    pub filter_disabled: Ign,
}

/// A listener's network filter. Its config is read as the filter its `name` says (or, when the
/// config comes first, as its `"@type"` says); hence a hand-written visitor. See `net_filter.rs`.
#[derive(Debug)]
pub struct RawNetFilter {
    pub name: NetFilterName,
    pub config: Option<RawNetConfig>,
    pub typed_config: Option<RawNetConfig>,
}

/// A network filter's `config` (v2) or `typed_config` (v3).
#[derive(Debug)]
pub enum RawNetConfig {
    Hcm(Box<RawHcm>),
    TcpProxy(Box<RawTcpProxy>),
    LocalRateLimit(RawNetLocalRateLimit),
    ConnectionLimit(RawConnectionLimit),
    /// `envoy.extensions.filters.network.rbac.v3.RBAC`, read by `convert_rbac` (whose rule types
    /// it shares with the HTTP filter).
    Rbac(serde_norway::Value),
}

/// `envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit`.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a network local_ratelimit mapping")]
pub struct RawNetLocalRateLimit {
    #[serde(rename = "@type")]
    pub type_url: Option<String>,
    pub stat_prefix: Option<String>,
    pub token_bucket: Option<RawTokenBucket>,
    pub runtime_enabled: Option<RawFeatureFlag>,
    pub share_key: Option<String>,
}

/// `envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit`.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a connection_limit mapping")]
pub struct RawConnectionLimit {
    #[serde(rename = "@type")]
    pub type_url: Option<String>,
    pub stat_prefix: Option<String>,
    pub max_connections: Option<u64>,
    pub delay: Option<Dur>,
    pub runtime_enabled: Option<RawFeatureFlag>,
}

/// `config.core.v3.RuntimeFeatureFlag`: skiff has no runtime, so `default_value` decides.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFeatureFlag {
    pub default_value: Option<bool>,
    pub runtime_key: Option<String>,
}

/// `type.v3.TokenBucket`, shared by the HTTP and the network local rate limits.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTokenBucket {
    pub max_tokens: Option<u32>,
    pub tokens_per_fill: Option<u32>,
    pub fill_interval: Option<Dur>,
}

/// `envoy.filters.network.tcp_proxy` (v3 `TcpProxy`, v2 the same fields).
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a tcp_proxy mapping")]
pub struct RawTcpProxy {
    #[serde(rename = "@type")]
    pub type_url: Option<TcpProxyTypeUrl>,
    pub stat_prefix: Option<String>,
    pub cluster: Option<String>,
    pub weighted_clusters: Option<RawWeighted>,
    pub idle_timeout: Option<Dur>,
    pub max_connect_attempts: Option<u32>,
    pub access_log: Option<Vec<RawAccessLog>>,
    // Rejected.
    pub on_demand: Ign,
    pub metadata_match: Ign,
    pub tunneling_config: Ign,
    pub downstream_idle_timeout: Ign,
    pub upstream_idle_timeout: Ign,
    pub access_log_flush_interval: Ign,
    pub access_log_options: Ign,
    pub flush_access_log_on_connected: Ign,
    pub hash_policy: Ign,
    pub max_downstream_connection_duration: Ign,
    pub backoff_options: Ign,
    pub deprecated_v1: Ign,
    pub proxy_protocol_tlvs: Ign,
}

/// An HCM `upgrade_configs` entry.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "an upgrade config mapping like {upgrade_type: websocket}")]
pub struct RawHcmUpgrade {
    pub upgrade_type: String,
    pub enabled: Option<bool>,
    pub filters: Option<Vec<IgnoredAny>>,
}

/// A route's `upgrade_configs` entry.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "an upgrade config mapping like {upgrade_type: websocket}")]
pub struct RawRouteUpgrade {
    pub upgrade_type: String,
    pub enabled: Option<bool>,
    pub connect_config: Option<RawConnectConfig>,
}

/// A route CONNECT upgrade's `connect_config`: present = terminate the CONNECT.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a connect_config mapping")]
pub struct RawConnectConfig {
    pub allow_post: Option<bool>,
    pub proxy_protocol_config: Ign,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "an http_connection_manager mapping")]
pub struct RawHcm {
    #[serde(rename = "@type")]
    pub type_url: Option<HcmTypeUrl>,
    pub stat_prefix: Option<String>,
    pub codec_type: Option<Ci<CodecType>>,
    pub stream_idle_timeout: Option<Dur>,
    pub request_timeout: Option<Dur>,
    pub delayed_close_timeout: Option<Dur>,
    pub route_config: Option<RawRouteConfig>,
    pub http_filters: Option<Vec<RawHttpFilter>>,
    pub access_log: Option<Vec<RawAccessLog>>,
    pub max_request_headers_kb: Option<u32>,
    pub request_headers_timeout: Option<Dur>,
    pub common_http_protocol_options: Option<RawCommonHttp>,
    pub generate_request_id: Option<bool>,
    pub server_name: Option<String>,
    pub server_header_transformation: Option<String>,
    pub use_remote_address: Option<bool>,
    pub xff_num_trusted_hops: Option<u32>,
    // Rejected.
    pub rds: Option<RawRds>,
    pub scoped_routes: Ign,
    pub http3_protocol_options: Ign,
    pub http2_protocol_options: Option<RawHttp2Options>,
    pub tracing: Option<RawHcmTracing>,
    // Warned about.
    pub normalize_path: Ign,
    pub merge_slashes: Ign,
    pub skip_xff_append: Ign,
    pub via: Ign,
    pub always_set_request_id_in_response: Ign,
    pub forward_client_cert_details: Option<String>,
    pub set_current_client_cert_details: Option<RawClientCertDetails>,
    pub proxy_100_continue: Ign,
    pub stream_error_on_invalid_http_message: Ign,
    pub local_reply_config: Ign,
    pub path_with_escaped_slashes_action: Ign,
    pub original_ip_detection_extensions: Ign,
    pub strip_matching_host_port: Option<bool>,
    pub strip_any_host_port: Option<bool>,
    pub http_protocol_options: Option<RawHttp1Options>,
    pub upgrade_configs: Option<Vec<RawHcmUpgrade>>,
    // Warned about (config/unenforced.rs).
    pub drain_timeout: Ign,
    pub add_user_agent: Ign,
    pub preserve_external_request_id: Ign,
    pub internal_address_config: Ign,
}

/// Bootstrap `tracing` (v2 style, still accepted by v3): the provider every HCM with a `tracing`
/// block uses unless it names its own.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping like {http: {name, config}}")]
pub struct RawBootstrapTracing {
    pub http: Option<RawTracingProvider>,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a tracing provider mapping like {name, typed_config}")]
pub struct RawTracingProvider {
    pub name: TracerName,
    pub config: Option<RawZipkin>,
    pub typed_config: Option<RawZipkin>,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a Zipkin or OpenTelemetry config mapping")]
/// Zipkin's and OpenTelemetry's fields side by side (the provider's `name` may come after its
/// `typed_config`); `convert` refuses the other provider's fields.
pub struct RawZipkin {
    #[serde(rename = "@type")]
    pub type_url: Option<ZipkinTypeUrl>,
    pub collector_cluster: Option<String>,
    pub collector_endpoint: Option<String>,
    pub collector_endpoint_version: Option<Ci<ZipkinHttpJson>>,
    pub trace_id_128bit: Option<bool>,
    pub shared_span_context: Option<bool>,
    pub collector_hostname: Option<String>,
    // Warned about.
    pub split_spans_for_request: Ign,
    pub trace_context_option: Ign,
    // Ignored.
    pub collector_service: Ign,
    // OpenTelemetry.
    pub grpc_service: Option<RawOtelGrpcService>,
    pub service_name: Option<String>,
    pub http_service: Ign,
    pub exporter: Ign,
    pub resource_detectors: Ign,
    pub sampler: Ign,
    pub max_cache_size: Option<u32>,
    pub set_telemetry_sdk_resource_attributes: Option<bool>,
}

/// An OpenTelemetry tracer's `grpc_service`.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a grpc_service mapping like {envoy_grpc: {cluster_name: ...}}")]
pub struct RawOtelGrpcService {
    pub envoy_grpc: Option<RawEnvoyGrpc>,
    pub timeout: Option<Dur>,
    pub google_grpc: Ign,
    pub initial_metadata: Ign,
    pub retry_policy: Ign,
}

/// HCM `tracing`, v2 and v3 fields side by side.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a tracing mapping")]
pub struct RawHcmTracing {
    /// v3.
    pub provider: Option<RawTracingProvider>,
    /// v2.
    pub operation_name: Option<Ci<TracingOperation>>,
    pub random_sampling: Option<RawPercent>,
    pub client_sampling: Option<RawPercent>,
    pub overall_sampling: Option<RawPercent>,
    pub max_path_tag_length: Option<u32>,
    // Warned about.
    pub custom_tags: Ign,
    pub request_headers_for_tags: Ign,
    pub verbose: Ign,
    // Ignored: skiff makes one span per request either way.
    pub spawn_upstream_span: Ign,
}

/// `type.v3.Percent`: protobuf's default for a missing `value` is 0.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a percent mapping like {value: 100}")]
pub struct RawPercent {
    pub value: Option<f64>,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawCommonHttp {
    pub idle_timeout: Option<Dur>,
    pub max_requests_per_connection: Option<u32>,
    pub max_headers_count: Option<u32>,
    pub max_connection_duration: Option<Dur>,
    pub max_stream_duration: Option<Dur>,
    pub headers_with_underscores_action: Option<Ci<UnderscoresAction>>,
    // Warned about.
    pub max_response_headers_kb: Ign,
}

impl CiEnum for UnderscoresAction {
    const FIELD: &'static str = "headers_with_underscores_action";
    const SUPPORTED: &'static [(&'static str, Self)] = &[
        ("ALLOW", UnderscoresAction::Allow),
        ("REJECT_REQUEST", UnderscoresAction::RejectRequest),
        ("DROP_HEADER", UnderscoresAction::DropHeader),
    ];
    const UNSUPPORTED: &'static [&'static str] = &[];
}

/// A route's `max_stream_duration` block.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a max_stream_duration mapping")]
pub struct RawRouteStreamDuration {
    pub max_stream_duration: Option<Dur>,
    pub grpc_timeout_header_max: Option<Dur>,
    pub grpc_timeout_header_offset: Option<Dur>,
}

/// A route's request mirror (`request_mirror_policies[]`, v2 `request_mirror_policy`).
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a request mirror policy mapping")]
pub struct RawMirrorPolicy {
    pub cluster: Option<String>,
    pub runtime_fraction: Option<RawRuntimeFraction>,
    /// v2's `runtime_key` alone: the fraction is then 0 % unless the runtime says otherwise.
    pub runtime_key: Option<String>,
    pub disable_shadow_host_suffix_append: Option<bool>,
    pub cluster_header: Option<String>,
    // Warned about.
    pub trace_sampled: Ign,
}

/// `config.core.v3.RuntimeFractionalPercent`: skiff has no runtime, so the default applies.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a runtime fraction mapping like {default_value: {numerator: 50}}")]
pub struct RawRuntimeFraction {
    pub default_value: Option<RawFractionalPercent>,
    pub runtime_key: Ign,
}

/// `type.v3.FractionalPercent`.
#[derive(Debug, DeriveDeserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a fractional percent mapping like {numerator: 50, denominator: HUNDRED}"
)]
pub struct RawFractionalPercent {
    pub numerator: Option<u32>,
    pub denominator: Option<String>,
}

/// A cluster's `upstream_connection_options`.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "an upstream_connection_options mapping")]
pub struct RawUpstreamConnectionOptions {
    pub tcp_keepalive: Option<RawTcpKeepalive>,
    // Warned about.
    pub set_local_interface_name_on_upstream_connections: Ign,
    pub happy_eyeballs_config: Ign,
}

/// `tcp_keepalive`: each field unset means the kernel's own setting, as in Envoy.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a tcp_keepalive mapping")]
pub struct RawTcpKeepalive {
    pub keepalive_probes: Option<u32>,
    pub keepalive_time: Option<u32>,
    pub keepalive_interval: Option<u32>,
}

/// v3 `Http1ProtocolOptions` on the connection manager. The rest of its fields were accepted
/// silently before skiff read any of them; they stay that way.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "an http_protocol_options mapping")]
pub struct RawHttp1Options {
    pub accept_http_10: Option<bool>,
    pub default_host_for_http_10: Option<String>,
    // Ignored.
    pub allow_absolute_url: Ign,
    pub header_key_format: Ign,
    pub enable_trailers: Ign,
    pub allow_chunked_length: Ign,
    pub override_stream_error_on_invalid_http_message: Ign,
    pub send_fully_qualified_url: Ign,
    pub use_balsa_parser: Ign,
    pub allow_custom_methods: Ign,
    pub ignore_http_11_upgrade: Ign,
}

/// v3 `Http2ProtocolOptions`: a connection manager's (`shard::h2`) and a cluster's
/// (`shard::h2_upstream`). Which of the other fields each side enforces, warns about or refuses is
/// `convert`'s per-side rule.
#[derive(Debug, Default, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "an http2_protocol_options mapping")]
pub struct RawHttp2Options {
    pub max_concurrent_streams: Option<u32>,
    pub initial_stream_window_size: Option<u32>,
    pub initial_connection_window_size: Option<u32>,
    pub hpack_table_size: Option<u32>,
    pub max_outbound_frames: Ign,
    pub max_outbound_control_frames: Ign,
    pub max_consecutive_inbound_frames_with_empty_payload: Ign,
    pub max_inbound_priority_frames_per_stream: Ign,
    pub max_inbound_window_update_frames_per_data_frame_sent: Ign,
    pub connection_keepalive: Ign,
    pub custom_settings_parameters: Ign,
    pub allow_connect: Ign,
    pub allow_metadata: Ign,
    pub max_metadata_size: Ign,
    // Accepted on both sides: skiff's answer to an invalid message is its own either way.
    pub stream_error_on_invalid_http_messaging: Ign,
    pub override_stream_error_on_invalid_http_message: Ign,
    pub use_oghttp2_codec: Ign,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "an http filter mapping")]
pub struct RawHttpFilter {
    pub name: String,
    pub config: Ign,
    pub typed_config: Option<RawFilterTypedConfig>,
    pub is_optional: Option<bool>,
    pub disabled: Option<bool>,
    pub config_discovery: Ign,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawAccessLog {
    pub name: Option<String>,
    pub config: Option<RawAccessLogConfig>,
    pub typed_config: Option<RawAccessLogConfig>,
    pub filter: Ign,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawAccessLogConfig {
    #[serde(rename = "@type")]
    pub type_url: Option<String>,
    pub path: Option<String>,
    pub format: Option<String>,
    pub log_format: Option<RawLogFormat>,
    pub json_format: Ign,
    pub typed_json_format: Ign,
    pub common_config: Ign,
    pub additional_request_headers_to_log: Ign,
    pub additional_response_headers_to_log: Ign,
    pub additional_response_trailers_to_log: Ign,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawLogFormat {
    pub text_format: Option<String>,
    pub text_format_source: Option<RawDataSource>,
    pub json_format: Ign,
    pub omit_empty_values: Ign,
    pub content_type: Ign,
    pub formatters: Ign,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawDataSource {
    pub inline_string: Option<String>,
    pub filename: Option<String>,
    pub inline_bytes: Ign,
    pub environment_variable: Ign,
}

/// An http filter's `typed_config` (or a `typed_per_filter_config` entry): its `"@type"` (Envoy
/// picks the filter by it, whatever the `name`) and the rest as written, which `convert` reads
/// for the filters skiff implements (`convert_filters`) and leaves alone for the others.
#[derive(Debug)]
pub struct RawFilterTypedConfig {
    pub type_url: Option<String>,
    pub fields: serde_norway::Mapping,
}

impl<'de> Deserialize<'de> for RawFilterTypedConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawFilterTypedConfig;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a typed_config mapping with \"@type\"")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut type_url = None;
                let mut fields = serde_norway::Mapping::new();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "@type" {
                        type_url = Some(map.next_value::<String>()?);
                    } else {
                        let value = map.next_value::<serde_norway::Value>()?;
                        fields.insert(serde_norway::Value::String(key), value);
                    }
                }
                Ok(RawFilterTypedConfig { type_url, fields })
            }
        }
        d.deserialize_map(V)
    }
}

// ---------------------------------------------------------------------------------------------
// Routes

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawRouteConfig {
    /// Only in a route configuration file, where each resource is an `Any`.
    #[serde(rename = "@type")]
    pub type_url: Option<String>,
    pub name: Option<String>,
    pub virtual_hosts: Option<Vec<RawVhost>>,
    pub request_headers_to_add: Option<Vec<RawHeaderValueOption>>,
    pub request_headers_to_remove: Option<Vec<String>>,
    pub response_headers_to_add: Option<Vec<RawHeaderValueOption>>,
    pub response_headers_to_remove: Option<Vec<String>>,
    pub vhds: Ign,
    pub cluster_specifier_plugins: Ign,
    pub internal_only_headers: Ign,
    pub validate_clusters: Option<bool>,
    pub most_specific_header_mutations_wins: Ign,
    pub max_direct_response_body_size_bytes: Ign,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a virtual host mapping")]
pub struct RawVhost {
    pub name: Option<String>,
    pub domains: Option<Vec<String>>,
    pub routes: Option<Vec<RawRoute>>,
    pub request_headers_to_add: Option<Vec<RawHeaderValueOption>>,
    pub request_headers_to_remove: Option<Vec<String>>,
    pub response_headers_to_add: Option<Vec<RawHeaderValueOption>>,
    pub response_headers_to_remove: Option<Vec<String>>,
    pub retry_policy: Option<RawRetry>,
    pub require_tls: Option<String>,
    /// Read by `convert_cors` (the same fields as the cors filter's per-route policy).
    pub cors: Option<serde_norway::Value>,
    pub rate_limits: Ign,
    pub typed_per_filter_config: Option<std::collections::BTreeMap<String, RawFilterTypedConfig>>,
    pub per_filter_config: Ign,
    pub hedge_policy: Ign,
    pub virtual_clusters: Ign,
    pub include_request_attempt_count: Option<bool>,
    pub include_attempt_count_in_response: Option<bool>,
    pub per_request_buffer_limit_bytes: Ign,
    pub metadata: Ign,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a route mapping")]
pub struct RawRoute {
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub matcher: RawMatch,
    pub route: Option<RawRouteAction>,
    pub redirect: Option<RawRedirect>,
    pub direct_response: Option<RawDirect>,
    pub request_headers_to_add: Option<Vec<RawHeaderValueOption>>,
    pub request_headers_to_remove: Option<Vec<String>>,
    pub response_headers_to_add: Option<Vec<RawHeaderValueOption>>,
    pub response_headers_to_remove: Option<Vec<String>>,
    pub typed_per_filter_config: Option<std::collections::BTreeMap<String, RawFilterTypedConfig>>,
    pub per_filter_config: Ign,
    pub tracing: Ign,
    pub metadata: Ign,
    pub decorator: Ign,
    pub per_request_buffer_limit_bytes: Ign,
    pub stat_prefix: Ign,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawMatch {
    pub prefix: Option<String>,
    pub path: Option<String>,
    pub safe_regex: Option<RawRegex>,
    pub regex: Option<String>,
    pub path_separated_prefix: Ign,
    pub case_sensitive: Option<bool>,
    pub headers: Option<Vec<RawHeaderMatcher>>,
    pub query_parameters: Option<Vec<RawQueryMatcher>>,
    pub grpc: Ign,
    pub runtime_fraction: Ign,
    pub tls_context: Ign,
    pub dynamic_metadata: Ign,
    pub connect_matcher: Ign,
}

#[derive(Debug, Clone, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawRegex {
    pub regex: String,
    pub google_re2: Ign,
}

#[derive(Debug, Clone, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawHeaderMatcher {
    pub name: String,
    pub exact_match: Option<String>,
    pub prefix_match: Option<String>,
    pub suffix_match: Option<String>,
    pub contains_match: Option<String>,
    pub safe_regex_match: Option<RawRegex>,
    pub regex_match: Option<String>,
    pub present_match: Option<bool>,
    pub string_match: Option<RawStringMatcher>,
    pub invert_match: Option<bool>,
    pub range_match: Ign,
    pub treat_missing_header_as_empty: Ign,
}

#[derive(Debug, Clone, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawStringMatcher {
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub suffix: Option<String>,
    pub contains: Option<String>,
    pub safe_regex: Option<RawRegex>,
    pub ignore_case: Option<bool>,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawQueryMatcher {
    pub name: String,
    pub string_match: Option<RawStringMatcher>,
    pub present_match: Option<bool>,
    /// v2: `value` with `regex: false`.
    pub value: Option<String>,
    pub regex: Option<bool>,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawRouteAction {
    pub cluster: Option<String>,
    pub weighted_clusters: Option<RawRouteWeighted>,
    pub timeout: Option<Dur>,
    pub prefix_rewrite: Option<String>,
    pub host_rewrite_literal: Option<String>,
    pub host_rewrite: Option<String>,
    pub retry_policy: Option<RawRetry>,
    pub idle_timeout: Option<Dur>,
    pub max_stream_duration: Option<RawRouteStreamDuration>,
    pub cluster_header: Option<String>,
    pub cluster_not_found_response_code: Option<String>,
    /// v2's single mirror.
    pub request_mirror_policy: Option<RawMirrorPolicy>,
    pub request_mirror_policies: Option<Vec<RawMirrorPolicy>>,
    // Rejected.
    pub cluster_specifier_plugin: Ign,
    pub regex_rewrite: Ign,
    pub auto_host_rewrite: Option<bool>,
    pub host_rewrite_header: Ign,
    pub host_rewrite_path_regex: Ign,
    pub hash_policy: Option<Vec<super::lb::RawHashPolicy>>,
    /// Read by `convert_cors`.
    pub cors: Option<serde_norway::Value>,
    // Warned about.
    pub rate_limits: Ign,
    pub upgrade_configs: Option<Vec<RawRouteUpgrade>>,
    pub hedge_policy: Ign,
    pub metadata_match: Ign,
    pub internal_redirect_policy: Ign,
    pub max_grpc_timeout: Option<Dur>,
    pub grpc_timeout_offset: Option<Dur>,
    // Ignored.
    pub priority: Ign,
    pub include_vh_rate_limits: Ign,
    pub retry_policy_typed_config: Ign,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawWeighted {
    pub clusters: Vec<RawWeightedCluster>,
    pub total_weight: Option<u32>,
    pub runtime_key_prefix: Ign,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawWeightedCluster {
    pub name: String,
    pub weight: u32,
    pub metadata_match: Ign,
    pub typed_per_filter_config: Ign,
    pub per_filter_config: Ign,
}

/// A route's `weighted_clusters`: unlike tcp_proxy's, each entry may carry header edits.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawRouteWeighted {
    pub clusters: Vec<RawRouteWeightedCluster>,
    /// Deprecated; Envoy 1.40 ignores it (observed: a total that differs from the sum loads and
    /// the weights alone decide).
    pub total_weight: Ign,
    pub runtime_key_prefix: Ign,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawRouteWeightedCluster {
    pub name: String,
    pub weight: u32,
    pub request_headers_to_add: Option<Vec<RawHeaderValueOption>>,
    pub request_headers_to_remove: Option<Vec<String>>,
    pub response_headers_to_add: Option<Vec<RawHeaderValueOption>>,
    pub response_headers_to_remove: Option<Vec<String>>,
    pub metadata_match: Ign,
    pub typed_per_filter_config: Ign,
    pub per_filter_config: Ign,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawRetry {
    pub retry_on: Option<String>,
    pub num_retries: Option<u32>,
    pub per_try_timeout: Option<Dur>,
    pub retry_host_predicate: Option<Vec<RawRetryHostPredicate>>,
    pub retriable_status_codes: Option<Vec<u32>>,
    pub retriable_headers: Option<Vec<RawHeaderMatcher>>,
    pub retry_back_off: Option<RawBackOff>,
    pub host_selection_retry_max_attempts: Option<i64>,
    pub per_try_idle_timeout: Option<Dur>,
    // Warned about.
    pub retriable_request_headers: Ign,
    pub rate_limited_retry_back_off: Ign,
    pub retry_priority: Ign,
}

/// A `retry_host_predicate` entry: only `envoy.retry_host_predicates.previous_hosts` is known.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a retry host predicate mapping like {name: ...}")]
pub struct RawRetryHostPredicate {
    pub name: String,
    pub typed_config: Option<RawAnyTyped>,
}

/// A `typed_config` skiff only checks the `@type` of (an extension with no settings it reads).
#[derive(Debug, DeriveDeserialize)]
pub struct RawAnyTyped {
    #[serde(rename = "@type")]
    pub type_url: Option<String>,
}

/// `retry_back_off`.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a retry_back_off mapping")]
pub struct RawBackOff {
    pub base_interval: Option<Dur>,
    pub max_interval: Option<Dur>,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawRedirect {
    pub host_redirect: Option<String>,
    pub path_redirect: Option<String>,
    pub prefix_rewrite: Option<String>,
    pub https_redirect: Option<bool>,
    pub scheme_redirect: Option<String>,
    pub response_code: Option<Ci<RedirectCode>>,
    pub strip_query: Option<bool>,
    pub port_redirect: Ign,
    pub regex_rewrite: Ign,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawDirect {
    pub status: u32,
    pub body: Option<RawDataSource>,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping like {header: {key, value}}")]
pub struct RawHeaderValueOption {
    pub header: RawHeaderValue,
    pub append: Option<bool>,
    pub append_action: Option<Ci<AppendAction>>,
    pub keep_empty_value: Ign,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawHeaderValue {
    pub key: String,
    pub value: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Clusters

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a cluster mapping")]
pub struct RawCluster {
    /// Only in a `dynamic_resources` file, where each resource is an `Any`.
    #[serde(rename = "@type")]
    pub type_url: Option<String>,
    pub name: String,
    #[serde(rename = "type")]
    pub discovery: Option<Ci<DiscoveryType>>,
    pub connect_timeout: Option<Dur>,
    pub lb_policy: Option<Ci<LbPolicy>>,
    pub hosts: Option<Vec<RawHostAddress>>,
    pub load_assignment: Option<RawLoadAssignment>,
    pub dns_refresh_rate: Option<Dur>,
    pub dns_lookup_family: Option<Ci<DnsLookupFamily>>,
    pub dns_resolvers: Option<Vec<RawBindAddress>>,
    pub dns_resolution_config: Option<RawDnsResolutionConfig>,
    pub circuit_breakers: Option<RawCircuitBreakers>,
    pub max_requests_per_connection: Option<u32>,
    pub common_http_protocol_options: Option<RawCommonHttp>,
    pub respect_dns_ttl: Option<bool>,
    pub upstream_connection_options: Option<RawUpstreamConnectionOptions>,
    pub transport_socket: Option<RawTransportSocket>,
    /// The v2 way (deprecated in v3, still read by Envoy) to speak HTTP/2 to the hosts.
    pub http2_protocol_options: Option<RawHttp2Options>,
    /// Keyed by extension name; only `envoy.extensions.upstreams.http.v3.HttpProtocolOptions`.
    pub typed_extension_protocol_options: Option<std::collections::BTreeMap<String, RawHttpProtocolOptions>>,
    // Rejected.
    pub cluster_type: Ign,
    pub tls_context: Ign,
    pub transport_socket_matches: Ign,
    pub filters: Ign,
    pub load_balancing_policy: Ign,
    pub health_checks: Option<Vec<RawHealthCheck>>,
    pub common_lb_config: Option<RawCommonLb>,
    // Warned about.
    pub outlier_detection: Option<super::lb::RawOutlierDetection>,
    pub typed_dns_resolver_config: Ign,
    pub use_tcp_for_dns_lookups: Ign,
    pub lb_subset_config: Ign,
    pub upstream_bind_config: Ign,
    pub dns_failure_refresh_rate: Ign,
    pub connection_pool_per_downstream_connection: Ign,
    // Warned about (`cluster` in config/unenforced.rs), except: `cleanup_interval` (its cluster
    // type is refused), `metadata` (no effect without subsets), `wait_for_warm_on_init` (clusters
    // warm before serving anyway), and the two health fields.
    pub eds_cluster_config: Option<RawEdsClusterConfig>,
    pub http_protocol_options: Ign,
    pub upstream_http_protocol_options: Ign,
    pub per_connection_buffer_limit_bytes: Ign,
    pub least_request_lb_config: Option<super::lb::RawLeastRequest>,
    pub round_robin_lb_config: Ign,
    pub ring_hash_lb_config: Option<super::lb::RawRingHash>,
    pub maglev_lb_config: Option<super::lb::RawMaglev>,
    pub original_dst_lb_config: Ign,
    pub metadata: Ign,
    pub protocol_selection: Ign,
    pub close_connections_on_host_health_failure: Ign,
    pub ignore_health_on_host_removal: Ign,
    pub track_timeout_budgets: Ign,
    pub track_cluster_stats: Ign,
    pub cleanup_interval: Ign,
    pub alt_stat_name: Ign,
    pub wait_for_warm_on_init: Ign,
    pub preconnect_policy: Ign,
}

/// `envoy.extensions.upstreams.http.v3.HttpProtocolOptions`: which HTTP version a cluster speaks
/// to its hosts, and its connection options.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "an HttpProtocolOptions mapping")]
pub struct RawHttpProtocolOptions {
    #[serde(rename = "@type")]
    pub type_url: Option<String>,
    pub common_http_protocol_options: Option<RawCommonHttp>,
    pub explicit_http_config: Option<RawExplicitHttp>,
    pub use_downstream_protocol_config: Option<RawDownstreamHttp>,
    pub auto_config: Option<RawDownstreamHttp>,
    // Warned about.
    pub upstream_http_protocol_options: Ign,
    // Rejected.
    pub http_filters: Ign,
    pub header_validation_config: Ign,
    pub outlier_detection: Ign,
}

/// `explicit_http_config`: exactly one protocol.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with http_protocol_options or http2_protocol_options")]
pub struct RawExplicitHttp {
    pub http_protocol_options: Ign,
    pub http2_protocol_options: Option<RawHttp2Options>,
    pub http3_protocol_options: Ign,
}

/// `use_downstream_protocol_config` and `auto_config`: options per protocol.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of per-protocol options")]
pub struct RawDownstreamHttp {
    pub http_protocol_options: Ign,
    pub http2_protocol_options: Option<RawHttp2Options>,
    pub http3_protocol_options: Ign,
    /// `auto_config` only.
    pub alternate_protocols_cache_options: Ign,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawLoadAssignment {
    /// Only in an endpoint file, where each resource is an `Any`.
    #[serde(rename = "@type")]
    pub type_url: Option<String>,
    pub cluster_name: Option<String>,
    pub endpoints: Option<Vec<RawLocality>>,
    pub policy: Option<RawLbPolicyOptions>,
    pub named_endpoints: Ign,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawLocality {
    pub lb_endpoints: Option<Vec<RawLbEndpoint>>,
    pub priority: Option<u32>,
    pub locality: Option<RawLocalityName>,
    /// Read with `common_lb_config.locality_weighted_lb_config`.
    pub load_balancing_weight: Option<u32>,
    pub proximity: Ign,
    pub metadata: Ign,
    pub leds_cluster_locality_config: Ign,
}

/// `locality`: where a group of endpoints runs.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping like {region: eu, zone: zone-a}")]
pub struct RawLocalityName {
    pub region: Option<String>,
    pub zone: Option<String>,
    pub sub_zone: Option<String>,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawLbEndpoint {
    pub endpoint: Option<RawEndpoint>,
    pub load_balancing_weight: Option<u32>,
    pub health_status: Option<Ci<HealthStatus>>,
    pub metadata: Ign,
    pub endpoint_name: Ign,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawEndpoint {
    pub address: RawHostAddress,
    pub hostname: Ign,
    pub health_check_config: Option<RawEndpointCheck>,
    pub additional_addresses: Ign,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawDnsResolutionConfig {
    pub resolvers: Option<Vec<RawBindAddress>>,
    pub dns_resolver_options: Ign,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawCircuitBreakers {
    pub thresholds: Option<Vec<RawThreshold>>,
    pub per_host_thresholds: Option<Vec<RawThreshold>>,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawThreshold {
    pub priority: Option<Ci<RoutingPriority>>,
    pub max_connections: Option<u32>,
    pub max_pending_requests: Option<u32>,
    pub max_requests: Option<u32>,
    pub max_retries: Option<u32>,
    pub track_remaining: Option<bool>,
    pub retry_budget: Option<RawRetryBudget>,
    pub max_connection_pools: Ign,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawRetryBudget {
    pub budget_percent: Option<RawPercent>,
    pub min_retry_concurrency: Option<u32>,
}

// ---------------------------------------------------------------------------------------------
// Endpoint health (converted in `convert_health`)

impl CiEnum for HealthStatus {
    const FIELD: &'static str = "health_status";
    const SUPPORTED: &'static [(&'static str, Self)] = &[
        ("UNKNOWN", HealthStatus::Unknown),
        ("HEALTHY", HealthStatus::Healthy),
        ("UNHEALTHY", HealthStatus::Unhealthy),
        ("DRAINING", HealthStatus::Draining),
        ("TIMEOUT", HealthStatus::Timeout),
        ("DEGRADED", HealthStatus::Degraded),
    ];
    const UNSUPPORTED: &'static [&'static str] = &[];
}

/// `common_lb_config`.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawCommonLb {
    pub healthy_panic_threshold: Option<RawPercent>,
    /// An empty message: its presence turns locality weighting on.
    pub locality_weighted_lb_config: Ign,
    // Warned about.
    pub zone_aware_lb_config: Ign,
    pub update_merge_window: Ign,
    pub ignore_new_hosts_until_first_hc: Ign,
    pub close_connections_on_host_set_change: Ign,
    pub consistent_hashing_lb_config: Ign,
    pub override_host_status: Ign,
}

/// `load_assignment.policy`.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawLbPolicyOptions {
    pub overprovisioning_factor: Option<u32>,
    // Warned about.
    pub drop_overloads: Ign,
    pub endpoint_stale_after: Ign,
    pub weighted_priority_health: Ign,
}

/// One of a cluster's `health_checks`.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a health check mapping")]
pub struct RawHealthCheck {
    pub timeout: Option<Dur>,
    pub interval: Option<Dur>,
    pub initial_jitter: Option<Dur>,
    pub interval_jitter: Option<Dur>,
    pub interval_jitter_percent: Option<u32>,
    pub unhealthy_threshold: Option<u32>,
    pub healthy_threshold: Option<u32>,
    pub alt_port: Option<u32>,
    pub reuse_connection: Option<bool>,
    pub http_health_check: Option<RawHttpHealthCheck>,
    pub tcp_health_check: Option<RawTcpHealthCheck>,
    pub no_traffic_interval: Option<Dur>,
    pub no_traffic_healthy_interval: Option<Dur>,
    pub unhealthy_interval: Option<Dur>,
    pub unhealthy_edge_interval: Option<Dur>,
    pub healthy_edge_interval: Option<Dur>,
    pub always_log_health_check_failures: Option<bool>,
    pub always_log_health_check_success: Option<bool>,
    // Rejected.
    pub grpc_health_check: Ign,
    pub custom_health_check: Ign,
    pub tls_options: Ign,
    pub transport_socket_match_criteria: Ign,
    // Warned about.
    pub event_log_path: Ign,
    pub event_logger: Ign,
    pub event_service: Ign,
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawHttpHealthCheck {
    pub host: Option<String>,
    pub path: Option<String>,
    pub request_headers_to_add: Option<Vec<RawHeaderValueOption>>,
    pub request_headers_to_remove: Option<Vec<String>>,
    pub expected_statuses: Option<Vec<RawRange>>,
    pub retriable_statuses: Option<Vec<RawRange>>,
    /// HTTP1 is the only value that parses.
    pub codec_client_type: Option<Ci<CodecClientType>>,
    pub method: Option<String>,
    // Rejected.
    pub send: Ign,
    pub receive: Ign,
    pub service_name_matcher: Ign,
    // v2 spellings, rejected.
    pub service_name: Ign,
    pub use_http2: Option<bool>,
    // Warned about.
    pub response_buffer_size: Ign,
}

/// `type.v3.Int64Range`: `[start, end)`.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a range like {start: 200, end: 300}")]
pub struct RawRange {
    pub start: Option<i64>,
    pub end: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecClientType {
    Http1,
}

impl CiEnum for CodecClientType {
    const FIELD: &'static str = "codec_client_type";
    const SUPPORTED: &'static [(&'static str, Self)] = &[("HTTP1", CodecClientType::Http1)];
    const UNSUPPORTED: &'static [&'static str] = &["HTTP2", "HTTP3"];
}

#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawTcpHealthCheck {
    pub send: Option<RawPayload>,
    pub receive: Option<Vec<RawPayload>>,
    // Rejected.
    pub proxy_protocol_config: Ign,
}

/// `HealthCheck.Payload`: hex `text` or base64 `binary`.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a payload like {text: \"0102\"}")]
pub struct RawPayload {
    pub text: Option<String>,
    pub binary: Option<String>,
}

/// An endpoint's `health_check_config`.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawEndpointCheck {
    pub port_value: Option<Port>,
    pub hostname: Option<String>,
    // Rejected.
    pub address: Ign,
    pub disable_active_health_check: Option<bool>,
}

/// HCM `set_current_client_cert_details`.
#[derive(Debug, DeriveDeserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawClientCertDetails {
    pub subject: Option<bool>,
    pub cert: Option<bool>,
    pub chain: Option<bool>,
    pub dns: Option<bool>,
    pub uri: Option<bool>,
}
