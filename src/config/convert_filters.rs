//! The typed configs of the HTTP filters skiff implements (`envoy.filters.http.local_ratelimit`,
//! `envoy.filters.http.fault`): their serde shape, read from the `typed_config` mapping `raw`
//! keeps as written, and their conversion to `model` with Envoy's defaults. Every field of these
//! protos is enforced, or refused here with its path; none is warned about. Which filters exist
//! and where they may sit (router last, optional filters) is `convert`'s.

// Fields accepted and never read (runtime keys, an optional wrapper's flag) exist so that
// `deny_unknown_fields` accepts them.
#![allow(dead_code)]

use super::convert_compressor::{self, COMPRESSOR_PER_ROUTE_TYPE};
use super::convert_cors::{
    cors_filter, cors_policy, csrf, CORS_NAME, CORS_POLICY_TYPE, CORS_TYPE, CSRF_NAME, CSRF_TYPE,
};
use super::convert_ext_authz::{
    ext_authz, ext_authz_per_route, kind_of as ext_authz_kind, EXT_AUTHZ_PER_ROUTE_TYPE,
};
use super::convert_jwt;
use super::convert_rbac::{self, RBAC_NAME, RBAC_PER_ROUTE_TYPE, RBAC_TYPE};
use super::duration::Dur;
use super::error::FieldPath;
use super::fields::{fail, fraction, header_matcher, headers_to_add, RawFraction, RawRuntimeFraction, Res};
pub(super) use super::fields::{fraction_of, read};
use super::model::{
    CorsPolicy, Fault, FaultAbort, FaultAbortSource, FaultDelay, FaultDelaySource, LocalRateLimit,
    PerFilterConfig, TokenBucket,
};
use super::raw::{Ign, RawFilterTypedConfig, RawHeaderMatcher, RawHeaderValueOption, RawTokenBucket};
use serde::Deserialize;

pub(super) const LOCAL_RATELIMIT_NAME: &str = "envoy.filters.http.local_ratelimit";
pub(super) const LOCAL_RATELIMIT_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";
pub(super) const FAULT_NAMES: &[&str] = &["envoy.filters.http.fault", "envoy.fault"];
pub(super) const FAULT_TYPES: &[&str] = &[
    "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
    "type.googleapis.com/envoy.config.filter.http.fault.v2.HTTPFault",
];
/// The wrapper a `typed_per_filter_config` entry may use (`config`, `is_optional`, `disabled`).
const FILTER_CONFIG_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.FilterConfig";

/// Which implemented filter a `typed_config` (or, without one, a filter name) stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    LocalRateLimit,
    Fault,
    /// The cors filter's own (empty) `Cors` config.
    Cors,
    /// The cors filter's per-route `CorsPolicy`.
    CorsPolicy,
    Csrf,
    JwtAuthn,
    /// `jwt_authn`'s `PerRouteConfig` (only valid in `typed_per_filter_config`).
    JwtPerRoute,
    Rbac,
    /// `RBACPerRoute`: only in `typed_per_filter_config`.
    RbacPerRoute,
    ExtAuthz,
    /// The ext_authz filter's per-route `ExtAuthzPerRoute`.
    ExtAuthzPerRoute,
    /// The compressor's per-route `CompressorPerRoute` (its filter config is `convert`'s).
    CompressorPerRoute,
}

impl Kind {
    /// By `"@type"` when there is one (Envoy's rule), else by name.
    pub(super) fn of(name: &str, type_url: Option<&str>) -> Option<Kind> {
        if let Some(per_route) = ext_authz_kind(name, type_url) {
            return Some(Kind::of_ext_authz(per_route));
        }
        match type_url {
            Some(LOCAL_RATELIMIT_TYPE) => Some(Kind::LocalRateLimit),
            Some(url) if FAULT_TYPES.contains(&url) => Some(Kind::Fault),
            Some(CORS_TYPE) => Some(Kind::Cors),
            Some(CORS_POLICY_TYPE) => Some(Kind::CorsPolicy),
            Some(CSRF_TYPE) => Some(Kind::Csrf),
            Some(convert_jwt::TYPE) => Some(Kind::JwtAuthn),
            Some(convert_jwt::PER_ROUTE_TYPE) => Some(Kind::JwtPerRoute),
            Some(RBAC_TYPE) => Some(Kind::Rbac),
            Some(RBAC_PER_ROUTE_TYPE) => Some(Kind::RbacPerRoute),
            Some(COMPRESSOR_PER_ROUTE_TYPE) => Some(Kind::CompressorPerRoute),
            Some(_) => None,
            None if name == LOCAL_RATELIMIT_NAME => Some(Kind::LocalRateLimit),
            None if FAULT_NAMES.contains(&name) => Some(Kind::Fault),
            None if name == CORS_NAME => Some(Kind::Cors),
            None if name == CSRF_NAME => Some(Kind::Csrf),
            None if name == convert_jwt::NAME => Some(Kind::JwtAuthn),
            None if name == RBAC_NAME => Some(Kind::Rbac),
            None => None,
        }
    }

    fn of_ext_authz(per_route: bool) -> Kind {
        if per_route {
            Kind::ExtAuthzPerRoute
        } else {
            Kind::ExtAuthz
        }
    }
}

/// A filter's config from its `typed_config` at `p` (which holds `fields`).
pub(super) fn filter_config(
    p: &FieldPath,
    kind: Kind,
    typed: Option<&RawFilterTypedConfig>,
) -> Res<PerFilterConfig> {
    let fields = typed.map(|t| t.fields.clone()).unwrap_or_default();
    Ok(match kind {
        Kind::LocalRateLimit => PerFilterConfig::LocalRateLimit(local_rate_limit(p, read(p, fields)?)?),
        Kind::Fault => PerFilterConfig::Fault(fault(p, read(p, fields)?)?),
        // The connection manager's entry: its policies are the routes'.
        Kind::Cors => {
            cors_filter(p, fields)?;
            PerFilterConfig::Cors(CorsPolicy::default())
        }
        Kind::CorsPolicy => PerFilterConfig::Cors(cors_policy(p, fields)?),
        Kind::Csrf => PerFilterConfig::Csrf(csrf(p, fields)?),
        Kind::JwtAuthn => PerFilterConfig::JwtAuthn(Box::new(convert_jwt::jwt_authn(p, fields.into())?)),
        Kind::JwtPerRoute => PerFilterConfig::JwtPerRoute(convert_jwt::per_route(p, fields.into())?),
        Kind::Rbac => PerFilterConfig::Rbac(convert_rbac::rbac(p, fields.into())?),
        Kind::RbacPerRoute => {
            return fail(
                p.key("@type"),
                "RBACPerRoute belongs in typed_per_filter_config; the filter takes RBAC",
            )
        }
        Kind::ExtAuthz => PerFilterConfig::ExtAuthz(Box::new(ext_authz(p, fields)?)),
        Kind::ExtAuthzPerRoute => PerFilterConfig::ExtAuthzPerRoute(ext_authz_per_route(p, fields)?),
        Kind::CompressorPerRoute => {
            PerFilterConfig::CompressorPerRoute { disabled: convert_compressor::per_route(p, fields)? }
        }
    })
}

/// A route's or virtual host's entry for a filter of `kind`: the per-route type where the filter
/// has one of its own (RBAC's `RBACPerRoute`), else the filter's own config.
fn route_config(p: &FieldPath, kind: Kind, typed: &RawFilterTypedConfig) -> Res<PerFilterConfig> {
    match kind {
        Kind::RbacPerRoute => {
            Ok(PerFilterConfig::Rbac(convert_rbac::rbac_per_route(p, typed.fields.clone().into())?))
        }
        Kind::Rbac => fail(p.key("@type"), format!("a per-route RBAC config is {RBAC_PER_ROUTE_TYPE}")),
        _ => filter_config(p, kind, Some(typed)),
    }
}

/// A `typed_per_filter_config` entry at `p`: None when it is for a filter skiff does not
/// implement (the caller warns), or is an optional/disabled `FilterConfig` wrapper of one.
pub(super) fn per_filter_config(
    p: &FieldPath,
    name: &str,
    typed: &RawFilterTypedConfig,
) -> Res<Option<PerFilterConfig>> {
    if typed.type_url.as_deref() == Some(FILTER_CONFIG_TYPE) {
        let wrapper: RawFilterConfigWrapper = read(p, typed.fields.clone())?;
        if wrapper.disabled == Some(true) {
            return fail(p.key("disabled"), "a disabled per-route filter config is not supported");
        }
        let inner_path = p.key("config");
        let Some(config) = wrapper.config else {
            return fail(inner_path, "FilterConfig needs config");
        };
        let inner: RawFilterTypedConfig = read(&inner_path, config)?;
        return match Kind::of(name, inner.type_url.as_deref()) {
            Some(kind) => route_config(&inner_path, kind, &inner).map(Some),
            None => Ok(None),
        };
    }
    match Kind::of(name, typed.type_url.as_deref()) {
        Some(Kind::Cors) => fail(p.key("@type"), format!("a per-route cors config is a {CORS_POLICY_TYPE}")),
        Some(Kind::JwtAuthn) => fail(
            p.clone(),
            "a jwt_authn route override is a PerRouteConfig (requirement_name or disabled), not a JwtAuthentication",
        ),
        Some(Kind::ExtAuthz) => {
            fail(p.key("@type"), format!("a per-route ext_authz config is a {EXT_AUTHZ_PER_ROUTE_TYPE}"))
        }
        Some(kind) => route_config(p, kind, typed).map(Some),
        None => Ok(None),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilterConfigWrapper {
    config: Option<serde_norway::Value>,
    is_optional: Option<bool>,
    disabled: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatus {
    code: Option<RawStatusCode>,
}

/// `type.v3.HttpStatus.code`: an enum Envoy's YAML writes by name (`TooManyRequests`) or number.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawStatusCode {
    Number(u32),
    Name(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocalRateLimit {
    stat_prefix: Option<String>,
    status: Option<RawStatus>,
    token_bucket: Option<RawTokenBucket>,
    filter_enabled: Option<RawRuntimeFraction>,
    filter_enforced: Option<RawRuntimeFraction>,
    request_headers_to_add_when_not_enforced: Option<Vec<RawHeaderValueOption>>,
    response_headers_to_add: Option<Vec<RawHeaderValueOption>>,
    local_rate_limit_per_downstream_connection: Option<bool>,
    enable_x_ratelimit_headers: Option<String>,
    // Refused when given (not implemented).
    descriptors: Option<Vec<serde_norway::Value>>,
    stage: Option<u32>,
    local_cluster_rate_limit: Ign,
    vh_rate_limits: Option<String>,
    always_consume_default_token_bucket: Option<bool>,
    rate_limited_as_resource_exhausted: Option<bool>,
    rate_limits: Option<Vec<serde_norway::Value>>,
    max_dynamic_descriptors: Ign,
}

fn local_rate_limit(p: &FieldPath, r: RawLocalRateLimit) -> Res<LocalRateLimit> {
    let refuse = |field: &str, why: &str| fail(p.key(field), format!("{field} is not supported: {why}"));
    if r.descriptors.as_ref().is_some_and(|d| !d.is_empty()) {
        return refuse("descriptors", "skiff's local rate limit has one token bucket per config");
    }
    if r.rate_limits.as_ref().is_some_and(|d| !d.is_empty()) {
        return refuse("rate_limits", "descriptors are not implemented");
    }
    if r.stage.is_some_and(|s| s != 0) {
        return refuse("stage", "only stage 0 exists in skiff");
    }
    if r.local_cluster_rate_limit.is_some() {
        return refuse("local_cluster_rate_limit", "the limit is this process's");
    }
    if r.vh_rate_limits.as_deref().is_some_and(|v| !v.eq_ignore_ascii_case("OVERRIDE")) {
        return refuse("vh_rate_limits", "descriptors are not implemented");
    }
    if r.local_rate_limit_per_downstream_connection == Some(true) {
        return refuse(
            "local_rate_limit_per_downstream_connection",
            "the bucket is the process's (false, Envoy's default)",
        );
    }
    if r.max_dynamic_descriptors.is_some() {
        return refuse("max_dynamic_descriptors", "descriptors are not implemented");
    }
    // Only meaningful with descriptors, which are refused above: the default bucket is always used.
    let _ = r.always_consume_default_token_bucket;
    let Some(stat_prefix) = r.stat_prefix.filter(|s| !s.is_empty()) else {
        return fail(p.key("stat_prefix"), "stat_prefix is required");
    };
    let token_bucket = match r.token_bucket {
        None => None,
        Some(b) => Some(token_bucket(p.key("token_bucket"), b)?),
    };
    let status = match r.status.and_then(|s| s.code) {
        None => 429,
        Some(RawStatusCode::Number(n)) if (200..600).contains(&n) => n as u16,
        Some(RawStatusCode::Number(n)) => {
            return fail(p.key("status").key("code"), format!("status code must be 200-599, got {n}"))
        }
        Some(RawStatusCode::Name(name)) => match status_by_name(&name) {
            Some(code) => code,
            None => {
                return fail(
                    p.key("status").key("code"),
                    format!("unknown status code \"{name}\" (write it as a number)"),
                )
            }
        },
    };
    let x_ratelimit_headers = match r.enable_x_ratelimit_headers.as_deref().map(str::to_ascii_uppercase) {
        None => false,
        Some(v) if v == "OFF" => false,
        Some(v) if v == "DRAFT_VERSION_03" => true,
        Some(v) => {
            return fail(
                p.key("enable_x_ratelimit_headers"),
                format!("unknown enable_x_ratelimit_headers \"{v}\", expected OFF or DRAFT_VERSION_03"),
            )
        }
    };
    let enabled = r.filter_enabled.and_then(|f| f.default_value);
    let enforced = r.filter_enforced.and_then(|f| f.default_value);
    Ok(LocalRateLimit {
        stat_prefix,
        token_bucket,
        filter_enabled: fraction(p.key("filter_enabled").key("default_value"), enabled)?,
        filter_enforced: fraction(p.key("filter_enforced").key("default_value"), enforced)?,
        status,
        response_headers_to_add: headers_to_add(p.key("response_headers_to_add"), r.response_headers_to_add)?,
        request_headers_to_add_when_not_enforced: headers_to_add(
            p.key("request_headers_to_add_when_not_enforced"),
            r.request_headers_to_add_when_not_enforced,
        )?,
        x_ratelimit_headers,
        resource_exhausted: r.rate_limited_as_resource_exhausted.unwrap_or(false),
    })
}

/// A `token_bucket` at `bp`, with Envoy's defaults and limits.
pub(super) fn token_bucket(bp: FieldPath, b: RawTokenBucket) -> Res<TokenBucket> {
    let Some(max_tokens) = b.max_tokens.filter(|n| *n > 0) else {
        return fail(bp.key("max_tokens"), "max_tokens must be greater than 0");
    };
    let tokens_per_fill = b.tokens_per_fill.unwrap_or(1);
    if tokens_per_fill == 0 {
        return fail(bp.key("tokens_per_fill"), "tokens_per_fill must be greater than 0");
    }
    let Some(fill_interval) = b.fill_interval.map(|d| d.0) else {
        return fail(bp.key("fill_interval"), "fill_interval is required");
    };
    // Envoy's own floor for the bucket's fill timer.
    if fill_interval < std::time::Duration::from_millis(50) {
        return fail(bp.key("fill_interval"), "fill_interval must be at least 50ms");
    }
    Ok(TokenBucket { max_tokens, tokens_per_fill, fill_interval })
}

/// The `type.v3.StatusCode` names the examples use; any status may be written as its number.
fn status_by_name(name: &str) -> Option<u16> {
    Some(match name {
        "OK" => 200,
        "BadRequest" => 400,
        "Unauthorized" => 401,
        "Forbidden" => 403,
        "NotFound" => 404,
        "TooManyRequests" => 429,
        "InternalServerError" => 500,
        "ServiceUnavailable" => 503,
        _ => return None,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFaultDelay {
    fixed_delay: Option<Dur>,
    header_delay: Ign,
    percentage: Option<RawFraction>,
    #[serde(rename = "type")]
    kind: Ign,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFaultAbort {
    http_status: Option<u32>,
    grpc_status: Option<u32>,
    header_abort: Ign,
    percentage: Option<RawFraction>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    delay: Option<RawFaultDelay>,
    abort: Option<RawFaultAbort>,
    upstream_cluster: Option<String>,
    headers: Option<Vec<RawHeaderMatcher>>,
    downstream_nodes: Option<Vec<String>>,
    max_active_faults: Option<u32>,
    response_rate_limit: Ign,
    disable_downstream_cluster_stats: Option<bool>,
    filter_metadata: Ign,
    // Runtime keys: skiff has no runtime, so the configured values always apply.
    delay_percent_runtime: Ign,
    abort_percent_runtime: Ign,
    delay_duration_runtime: Ign,
    abort_http_status_runtime: Ign,
    max_active_faults_runtime: Ign,
    response_rate_limit_percent_runtime: Ign,
    abort_grpc_status_runtime: Ign,
}

fn fault(p: &FieldPath, r: RawFault) -> Res<Fault> {
    if r.response_rate_limit.is_some() {
        return fail(
            p.key("response_rate_limit"),
            "response_rate_limit is not supported: response bodies are not throttled",
        );
    }
    if r.filter_metadata.is_some() {
        return fail(
            p.key("filter_metadata"),
            "filter_metadata is not supported: skiff has no dynamic metadata",
        );
    }
    // Per-downstream-cluster stats are not kept, which is what this asks for.
    let _ = r.disable_downstream_cluster_stats;
    let delay = match r.delay {
        None => None,
        Some(d) => {
            let dp = p.key("delay");
            let source = match (d.fixed_delay, d.header_delay.is_some()) {
                (Some(t), false) => FaultDelaySource::Fixed(t.0),
                (None, true) => FaultDelaySource::Header,
                (Some(_), true) => return fail(dp, "give either fixed_delay or header_delay, not both"),
                (None, false) => return fail(dp, "a delay needs fixed_delay or header_delay"),
            };
            Some(FaultDelay { source, percentage: fraction(dp.key("percentage"), d.percentage)? })
        }
    };
    let abort = match r.abort {
        None => None,
        Some(a) => {
            let ap = p.key("abort");
            let source = match (a.http_status, a.grpc_status, a.header_abort.is_some()) {
                (Some(s), None, false) if (200..600).contains(&s) => FaultAbortSource::Status(s as u16),
                (Some(s), None, false) => {
                    return fail(ap.key("http_status"), format!("http_status must be 200-599, got {s}"))
                }
                (None, Some(g), false) => FaultAbortSource::Grpc(g),
                (None, None, true) => FaultAbortSource::Header,
                (None, None, false) => {
                    return fail(ap, "an abort needs http_status, grpc_status or header_abort")
                }
                _ => return fail(ap, "give one of http_status, grpc_status and header_abort"),
            };
            Some(FaultAbort { source, percentage: fraction(ap.key("percentage"), a.percentage)? })
        }
    };
    let hp = p.key("headers");
    let headers = r
        .headers
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, h)| header_matcher(hp.idx(i), h))
        .collect::<Res<Vec<_>>>()?;
    Ok(Fault {
        delay,
        abort,
        headers,
        upstream_cluster: r.upstream_cluster.filter(|c| !c.is_empty()),
        downstream_nodes: r.downstream_nodes.unwrap_or_default(),
        max_active_faults: r.max_active_faults,
    })
}
