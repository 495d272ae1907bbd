//! The config of `envoy.filters.http.ext_authz` (`ExtAuthz`, its `http_service` or `grpc_service`
//! form) and its
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
use super::model::{ExtAuthz, ExtAuthzBody, ExtAuthzGrpc, ExtAuthzPerRoute, ExtAuthzWarned, StringMatcher};
use super::raw::{Ign, RawEnvoyGrpc, RawHeaderValue, RawStringMatcher};
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
    grpc_service: Option<RawGrpcService>,
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

/// `grpc_service`: Envoy's own client (`envoy_grpc`) only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrpcService {
    envoy_grpc: Option<RawEnvoyGrpc>,
    google_grpc: Ign,
    timeout: Option<Dur>,
    initial_metadata: Option<Vec<RawHeaderValue>>,
    retry_policy: Ign,
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
    Ok(ExtAuthzBody {
        max_request_bytes,
        allow_partial_message: b.allow_partial_message.unwrap_or(false),
        // Only a gRPC CheckRequest has two places for the body; the HTTP service sends it as it is.
        pack_as_bytes: b.pack_as_bytes.unwrap_or(false),
    })
}

/// `ExtAuthz` at `p`.
pub(super) fn ext_authz(p: &FieldPath, fields: serde_norway::Mapping) -> Res<ExtAuthz> {
    let r: RawExtAuthz = read(p, fields)?;
    let refuse = |field: &str, why: &str| fail(p.key(field), format!("{field} is not supported: {why}"));
    if r.grpc_service.is_some() && r.http_service.is_some() {
        return fail(p.clone(), "give either grpc_service or http_service, not both");
    }
    let grpc = r.grpc_service.map(|g| grpc_service(&p.key("grpc_service"), g)).transpose()?;
    let http = match (r.http_service, &grpc) {
        (Some(http), _) => http,
        (None, Some(_)) => RawHttpService {
            server_uri: None,
            path_prefix: None,
            authorization_request: None,
            authorization_response: None,
            retry_policy: None,
        },
        (None, None) => return fail(p.clone(), "ext_authz needs grpc_service or http_service"),
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
        let why = match grpc {
            Some(_) => "the gRPC check sends every request header",
            None => "set http_service.authorization_request.allowed_headers (the HTTP service's own list)",
        };
        return refuse("allowed_headers", why);
    }
    if r.include_tls_session == Some(true) {
        return refuse("include_tls_session", "the CheckRequest's tls_session is not filled in");
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
    let (uri, cluster, timeout) = match (&grpc, http.server_uri) {
        (Some((_, cluster, timeout)), _) => (String::new(), cluster.clone(), *timeout),
        (None, uri) => server_uri(&hp.key("server_uri"), uri)?,
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
    let headers_to_add = header_list(&rqp.key("headers_to_add"), rq.headers_to_add)?;
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
        uri,
        cluster,
        timeout,
        grpc: grpc.map(|(g, _, _)| g),
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

/// `http_service.server_uri` at `up`: (uri, cluster, timeout).
fn server_uri(up: &FieldPath, uri: Option<RawHttpUri>) -> Res<(String, String, Duration)> {
    let Some(uri) = uri else {
        return fail(up.clone(), "http_service needs server_uri");
    };
    let Some(cluster) = uri.cluster.filter(|c| !c.is_empty()) else {
        return fail(up.key("cluster"), "server_uri needs cluster");
    };
    let Some(u) = uri.uri.filter(|u| !u.is_empty()) else {
        return fail(up.key("uri"), "server_uri needs uri");
    };
    let timeout = match uri.timeout.map(|d| d.0) {
        None => return fail(up.key("timeout"), "server_uri needs timeout"),
        Some(t) if t.is_zero() => DEFAULT_TIMEOUT,
        Some(t) => t,
    };
    Ok((u, cluster, timeout))
}

/// A list of header keys and values at `lp`: (lower-case name, value), each a valid line.
fn header_list(lp: &FieldPath, list: Option<Vec<RawHeaderValue>>) -> Res<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (i, h) in list.unwrap_or_default().into_iter().enumerate() {
        let hp = lp.idx(i);
        if h.key.is_empty() {
            return fail(hp.key("key"), "header name must not be empty");
        }
        no_crlf(hp.key("key"), &h.key)?;
        let value = h.value.unwrap_or_default();
        no_crlf(hp.key("value"), &value)?;
        out.push((h.key.to_ascii_lowercase(), value));
    }
    Ok(out)
}

/// `grpc_service` at `gp`: the client, its cluster and the call's timeout (Envoy's 200 ms when
/// absent or 0).
fn grpc_service(gp: &FieldPath, g: RawGrpcService) -> Res<(ExtAuthzGrpc, String, Duration)> {
    if g.google_grpc.is_some() {
        return fail(
            gp.key("google_grpc"),
            "google_grpc is not supported: use envoy_grpc (skiff's own client)",
        );
    }
    if g.retry_policy.is_some() {
        return fail(gp.key("retry_policy"), "retry_policy is not supported: the check is sent once");
    }
    let Some(e) = g.envoy_grpc else {
        return fail(gp.clone(), "grpc_service needs envoy_grpc");
    };
    let ep = gp.key("envoy_grpc");
    if e.cluster_name.is_empty() {
        return fail(ep.key("cluster_name"), "cluster_name must not be empty");
    }
    if e.retry_policy.is_some() {
        return fail(ep.key("retry_policy"), "retry_policy is not supported: the check is sent once");
    }
    if e.max_receive_message_length.is_some() {
        return fail(ep.key("max_receive_message_length"), "max_receive_message_length is not supported");
    }
    if e.skip_envoy_headers.is_some() {
        return fail(ep.key("skip_envoy_headers"), "skip_envoy_headers is not supported");
    }
    let authority = e.authority.filter(|a| !a.is_empty()).unwrap_or_else(|| e.cluster_name.clone());
    no_crlf(ep.key("authority"), &authority)?;
    let initial_metadata = header_list(&gp.key("initial_metadata"), g.initial_metadata)?;
    let timeout = g.timeout.map(|d| d.0).filter(|t| !t.is_zero()).unwrap_or(DEFAULT_TIMEOUT);
    Ok((ExtAuthzGrpc { authority, initial_metadata }, e.cluster_name, timeout))
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
    context_extensions: Option<std::collections::BTreeMap<String, String>>,
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
            context_extensions: Vec::new(),
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
    let context_extensions = c.context_extensions.unwrap_or_default().into_iter().collect();
    let disable_request_body_buffering = c.disable_request_body_buffering.unwrap_or(false);
    if disable_request_body_buffering && c.with_request_body.is_some() {
        return fail(cp, "give either disable_request_body_buffering or with_request_body, not both");
    }
    Ok(ExtAuthzPerRoute {
        disabled: false,
        disable_request_body_buffering,
        with_request_body: c.with_request_body.map(|b| body(cp.key("with_request_body"), b)).transpose()?,
        context_extensions,
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
