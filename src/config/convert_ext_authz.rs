//! The config of `envoy.filters.http.ext_authz` (`ExtAuthz`, its `http_service` form) and its
//! per-route `ExtAuthzPerRoute`, read from the kept `typed_config` mapping and converted to
//! `model` with Envoy's defaults. Every field is enforced, refused here with its path, or flagged
//! in the model for `convert` to warn about (`ExtAuthzWarned`). Which filters exist and where they
//! sit is `convert`'s; the filters' `Kind` is `convert_filters`', which calls these.

// Fields accepted and never read exist so that `deny_unknown_fields` accepts them.
#![allow(dead_code)]

use super::convert_cors::matchers;
use super::duration::Dur;
use super::error::FieldPath;
use super::fields::{fail, no_crlf, read, Res};
use super::model::{ExtAuthz, ExtAuthzBody, ExtAuthzPerRoute, ExtAuthzWarned, StringMatcher};
use super::raw::{Ign, RawHeaderValue, RawStringMatcher};
use serde::Deserialize;
use std::time::Duration;

pub(super) const EXT_AUTHZ_NAME: &str = "envoy.filters.http.ext_authz";
pub(super) const EXT_AUTHZ_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz";
pub(super) const EXT_AUTHZ_PER_ROUTE_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute";

/// `server_uri.timeout` is required by Envoy's proto; this is what Envoy uses when it is 0.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExtAuthz {
    grpc_service: Ign,
    http_service: Option<RawHttpService>,
    transport_api_version: Option<String>,
    failure_mode_allow: Option<bool>,
    failure_mode_allow_header_add: Option<bool>,
    with_request_body: Option<RawBufferSettings>,
    clear_route_cache: Option<bool>,
    status_on_error: Option<RawHttpStatus>,
    validate_mutations: Option<bool>,
    metadata_context_namespaces: Option<Vec<String>>,
    typed_metadata_context_namespaces: Option<Vec<String>>,
    route_metadata_context_namespaces: Option<Vec<String>>,
    route_typed_metadata_context_namespaces: Option<Vec<String>>,
    filter_enabled: Ign,
    filter_enabled_metadata: Ign,
    deny_at_disable: Ign,
    include_peer_certificate: Option<bool>,
    include_tls_session: Option<bool>,
    stat_prefix: Option<String>,
    bootstrap_metadata_labels_key: Option<String>,
    allowed_headers: Option<RawListStringMatcher>,
    disallowed_headers: Option<RawListStringMatcher>,
    include_attributes: Option<bool>,
    charge_cluster_response_stats: Option<bool>,
    encode_raw_headers: Option<bool>,
    decoder_header_mutation_rules: Ign,
    enable_dynamic_metadata_ingestion: Option<bool>,
    filter_metadata: Ign,
    emit_filter_state_stats: Option<bool>,
    max_denied_response_body_bytes: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpService {
    server_uri: Option<RawHttpUri>,
    path_prefix: Option<String>,
    authorization_request: Option<RawAuthorizationRequest>,
    authorization_response: Option<RawAuthorizationResponse>,
    retry_policy: Ign,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpUri {
    uri: Option<String>,
    cluster: Option<String>,
    timeout: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthorizationRequest {
    allowed_headers: Option<RawListStringMatcher>,
    headers_to_add: Option<Vec<RawHeaderValue>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthorizationResponse {
    allowed_upstream_headers: Option<RawListStringMatcher>,
    allowed_upstream_headers_to_append: Option<RawListStringMatcher>,
    allowed_client_headers: Option<RawListStringMatcher>,
    allowed_client_headers_on_success: Option<RawListStringMatcher>,
    dynamic_metadata_from_headers: Option<RawListStringMatcher>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListStringMatcher {
    patterns: Option<Vec<RawStringMatcher>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBufferSettings {
    max_request_bytes: Option<u32>,
    allow_partial_message: Option<bool>,
    pack_as_bytes: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpStatus {
    code: Option<u32>,
}

/// `with_request_body` at `p`.
fn body(p: FieldPath, b: RawBufferSettings) -> Res<ExtAuthzBody> {
    let Some(max_request_bytes) = b.max_request_bytes.filter(|n| *n > 0) else {
        return fail(p.key("max_request_bytes"), "max_request_bytes must be greater than 0");
    };
    // `pack_as_bytes` shapes a gRPC CheckRequest; the HTTP service sends the body as it is.
    let _ = b.pack_as_bytes;
    Ok(ExtAuthzBody { max_request_bytes, allow_partial_message: b.allow_partial_message.unwrap_or(false) })
}

/// `ExtAuthz` at `p`.
pub(super) fn ext_authz(p: &FieldPath, fields: serde_norway::Mapping) -> Res<ExtAuthz> {
    let r: RawExtAuthz = read(p, fields)?;
    let refuse = |field: &str, why: &str| fail(p.key(field), format!("{field} is not supported: {why}"));
    if r.grpc_service.is_some() {
        return refuse(
            "grpc_service",
            "skiff's authorization check client speaks HTTP/1.1 only; use http_service",
        );
    }
    let Some(http) = r.http_service else {
        return fail(p.clone(), "ext_authz needs http_service (grpc_service is not supported)");
    };
    if r.filter_enabled.is_some() || r.filter_enabled_metadata.is_some() || r.deny_at_disable.is_some() {
        return refuse("filter_enabled", "skiff has no runtime; use a per-route ExtAuthzPerRoute disabled");
    }
    if r.filter_metadata.is_some() || r.enable_dynamic_metadata_ingestion == Some(true) {
        return refuse("filter_metadata", "skiff has no dynamic metadata");
    }
    if r.decoder_header_mutation_rules.is_some() || r.validate_mutations == Some(true) {
        return refuse("decoder_header_mutation_rules", "header mutation rules are not implemented");
    }
    if r.disallowed_headers.is_some() || r.allowed_headers.is_some() {
        return refuse(
            "allowed_headers",
            "set http_service.authorization_request.allowed_headers (the HTTP service's own list)",
        );
    }
    if r.include_tls_session == Some(true) {
        return refuse("include_tls_session", "only the gRPC service sends it");
    }
    if r.stat_prefix.as_deref().is_some_and(|s| !s.is_empty()) {
        return refuse("stat_prefix", "the filter counts in http.<stat_prefix>.ext_authz.* only");
    }
    if r.max_denied_response_body_bytes.is_some_and(|n| n > 0) {
        return refuse("max_denied_response_body_bytes", "the denied response's body is relayed whole");
    }
    if r.transport_api_version.as_deref().is_some_and(|v| !v.eq_ignore_ascii_case("V3")) {
        return fail(p.key("transport_api_version"), "only V3 exists");
    }
    let hp = p.key("http_service");
    if http.retry_policy.is_some() {
        return fail(hp.key("retry_policy"), "retry_policy is not supported: the check is sent once");
    }
    let up = hp.key("server_uri");
    let Some(uri) = http.server_uri else {
        return fail(up, "http_service needs server_uri");
    };
    let Some(cluster) = uri.cluster.filter(|c| !c.is_empty()) else {
        return fail(up.key("cluster"), "server_uri needs cluster");
    };
    if uri.uri.as_deref().is_none_or(str::is_empty) {
        return fail(up.key("uri"), "server_uri needs uri");
    }
    let timeout = match uri.timeout.map(|d| d.0) {
        None => return fail(up.key("timeout"), "server_uri needs timeout"),
        Some(t) if t.is_zero() => DEFAULT_TIMEOUT,
        Some(t) => t,
    };
    let path_prefix = http.path_prefix.unwrap_or_default();
    if !path_prefix.is_empty() && !path_prefix.starts_with('/') {
        return fail(hp.key("path_prefix"), "path_prefix must start with \"/\"");
    }
    no_crlf(hp.key("path_prefix"), &path_prefix)?;
    let list = |p: FieldPath, l: Option<RawListStringMatcher>| -> Res<Vec<StringMatcher>> {
        matchers(&p.key("patterns"), l.and_then(|l| l.patterns))
    };
    let rq = http
        .authorization_request
        .unwrap_or(RawAuthorizationRequest { allowed_headers: None, headers_to_add: None });
    let rqp = hp.key("authorization_request");
    let mut headers_to_add = Vec::new();
    for (i, h) in rq.headers_to_add.unwrap_or_default().into_iter().enumerate() {
        let hp = rqp.key("headers_to_add").idx(i);
        if h.key.is_empty() {
            return fail(hp.key("key"), "header name must not be empty");
        }
        no_crlf(hp.key("key"), &h.key)?;
        let value = h.value.unwrap_or_default();
        no_crlf(hp.key("value"), &value)?;
        headers_to_add.push((h.key.to_ascii_lowercase(), value));
    }
    let rs = http.authorization_response.unwrap_or(RawAuthorizationResponse {
        allowed_upstream_headers: None,
        allowed_upstream_headers_to_append: None,
        allowed_client_headers: None,
        allowed_client_headers_on_success: None,
        dynamic_metadata_from_headers: None,
    });
    let rsp = hp.key("authorization_response");
    let status_on_error = match r.status_on_error.and_then(|s| s.code) {
        None => 403,
        Some(c) if (200..600).contains(&c) => c as u16,
        Some(c) => {
            return fail(p.key("status_on_error").key("code"), format!("status must be 200-599, got {c}"))
        }
    };
    let with_request_body = r.with_request_body.map(|b| body(p.key("with_request_body"), b)).transpose()?;
    Ok(ExtAuthz {
        uri: uri.uri.unwrap_or_default(),
        cluster,
        timeout,
        path_prefix,
        allowed_headers: list(rqp.key("allowed_headers"), rq.allowed_headers)?,
        headers_to_add,
        allowed_upstream_headers: list(rsp.key("allowed_upstream_headers"), rs.allowed_upstream_headers)?,
        allowed_upstream_headers_to_append: list(
            rsp.key("allowed_upstream_headers_to_append"),
            rs.allowed_upstream_headers_to_append,
        )?,
        allowed_client_headers: list(rsp.key("allowed_client_headers"), rs.allowed_client_headers)?,
        allowed_client_headers_on_success: list(
            rsp.key("allowed_client_headers_on_success"),
            rs.allowed_client_headers_on_success,
        )?,
        failure_mode_allow: r.failure_mode_allow.unwrap_or(false),
        failure_mode_allow_header_add: r.failure_mode_allow_header_add.unwrap_or(false),
        status_on_error,
        with_request_body,
        warned: ExtAuthzWarned {
            dynamic_metadata_from_headers: rs
                .dynamic_metadata_from_headers
                .is_some_and(|l| l.patterns.is_some_and(|p| !p.is_empty())),
            clear_route_cache: r.clear_route_cache == Some(true),
            include_peer_certificate: r.include_peer_certificate == Some(true),
        },
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExtAuthzPerRoute {
    disabled: Option<bool>,
    check_settings: Option<RawCheckSettings>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheckSettings {
    context_extensions: Ign,
    disable_request_body_buffering: Option<bool>,
    with_request_body: Option<RawBufferSettings>,
    grpc_service: Ign,
    http_service: Ign,
}

/// `ExtAuthzPerRoute` at `p`.
pub(super) fn ext_authz_per_route(p: &FieldPath, fields: serde_norway::Mapping) -> Res<ExtAuthzPerRoute> {
    let r: RawExtAuthzPerRoute = read(p, fields)?;
    let disabled = r.disabled.unwrap_or(false);
    let Some(c) = r.check_settings else {
        return Ok(ExtAuthzPerRoute {
            disabled,
            disable_request_body_buffering: false,
            with_request_body: None,
        });
    };
    let cp = p.key("check_settings");
    if disabled {
        return fail(cp, "give either disabled or check_settings, not both");
    }
    if c.grpc_service.is_some() || c.http_service.is_some() {
        return fail(cp.key("http_service"), "a per-route authorization service is not supported");
    }
    // `context_extensions` only reach a gRPC service's CheckRequest: the HTTP service never
    // sees them, in Envoy either.
    let _ = c.context_extensions;
    let disable_request_body_buffering = c.disable_request_body_buffering.unwrap_or(false);
    if disable_request_body_buffering && c.with_request_body.is_some() {
        return fail(cp, "give either disable_request_body_buffering or with_request_body, not both");
    }
    Ok(ExtAuthzPerRoute {
        disabled: false,
        disable_request_body_buffering,
        with_request_body: c.with_request_body.map(|b| body(cp.key("with_request_body"), b)).transpose()?,
    })
}

/// Whether a `typed_config` type or filter name is this filter's (`per_route`: its per-route
/// type).
pub(super) fn kind_of(name: &str, type_url: Option<&str>) -> Option<bool> {
    match type_url {
        Some(EXT_AUTHZ_TYPE) => Some(false),
        Some(EXT_AUTHZ_PER_ROUTE_TYPE) => Some(true),
        Some(_) => None,
        None => (name == EXT_AUTHZ_NAME).then_some(false),
    }
}
