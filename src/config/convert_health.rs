//! Endpoint health as configured: an endpoint's declared `health_status`, a cluster's
//! `common_lb_config.healthy_panic_threshold`, `load_assignment.policy.overprovisioning_factor` and
//! its active `health_checks` — their serde shape and their conversion to `model` with Envoy's
//! defaults and checks. Fields skiff accepts without acting on are warned about by `convert` (the
//! one place that names `unenforced` entries); everything else here is enforced or refused with its
//! path. What runs the checks and how the load balancer uses the result is `cluster::health` and
//! `control::health_check`'s.

// Fields accepted and never read exist so that `deny_unknown_fields` accepts them.
#![allow(dead_code)]

use super::duration::Dur;
use super::error::FieldPath;
use super::fields::{fail, headers_to_add, Res};
use super::model::{HealthCheck, HealthCheckKind, HealthStatus, HttpHealthCheck, LbHealth};
use super::raw::{Ci, CiEnum, Ign, RawHeaderValueOption, RawPercent};
use serde::Deserialize;
use std::time::Duration;

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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawCommonLb {
    pub healthy_panic_threshold: Option<RawPercent>,
    // Warned about.
    pub zone_aware_lb_config: Ign,
    pub locality_weighted_lb_config: Ign,
    pub update_merge_window: Ign,
    pub ignore_new_hosts_until_first_hc: Ign,
    pub close_connections_on_host_set_change: Ign,
    pub consistent_hashing_lb_config: Ign,
    pub override_host_status: Ign,
}

/// `load_assignment.policy`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawLbPolicyOptions {
    pub overprovisioning_factor: Option<u32>,
    // Warned about.
    pub drop_overloads: Ign,
    pub endpoint_stale_after: Ign,
    pub weighted_priority_health: Ign,
}

/// One of a cluster's `health_checks`.
#[derive(Debug, Deserialize)]
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

#[derive(Debug, Deserialize)]
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
#[derive(Debug, Deserialize)]
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping")]
pub struct RawTcpHealthCheck {
    pub send: Option<RawPayload>,
    pub receive: Option<Vec<RawPayload>>,
    // Rejected.
    pub proxy_protocol_config: Ign,
}

/// `HealthCheck.Payload`: hex `text` or base64 `binary`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a payload like {text: \"0102\"}")]
pub struct RawPayload {
    pub text: Option<String>,
    pub binary: Option<String>,
}

/// The panic threshold and overprovisioning factor of a cluster, with Envoy's defaults (50 %, 140).
pub(super) fn lb_health(
    p: &FieldPath,
    common: Option<&RawCommonLb>,
    policy: Option<&RawLbPolicyOptions>,
) -> Res<LbHealth> {
    let mut out = LbHealth::default();
    if let Some(t) = common.and_then(|c| c.healthy_panic_threshold.as_ref()) {
        let tp = p.key("common_lb_config").key("healthy_panic_threshold").key("value");
        let v = t.value.unwrap_or(0.0);
        if !(0.0..=100.0).contains(&v) {
            return fail(tp, format!("healthy_panic_threshold must be between 0 and 100, got {v}"));
        }
        // Envoy rounds the percent to an integer.
        out.panic_threshold = v.round() as u32;
    }
    if let Some(f) = policy.and_then(|o| o.overprovisioning_factor) {
        if f == 0 {
            let fp = p.key("load_assignment").key("policy").key("overprovisioning_factor");
            return fail(fp, "overprovisioning_factor must be greater than 0");
        }
        out.overprovisioning_factor = f;
    }
    Ok(out)
}

fn required(p: &FieldPath, field: &str, d: Option<Dur>) -> Res<Duration> {
    match d {
        Some(d) if !d.0.is_zero() => Ok(d.0),
        Some(_) => fail(p.key(field), format!("{field} must be greater than 0s")),
        None => fail(p.clone(), format!("a health check needs {field}")),
    }
}

fn threshold(p: &FieldPath, field: &str, v: Option<u32>) -> Res<u32> {
    match v {
        // Envoy counts to the threshold with `++n == threshold`; 0 would never be reached, so it
        // behaves as 1 there too.
        Some(n) => Ok(n.max(1)),
        None => fail(p.clone(), format!("a health check needs {field}")),
    }
}

fn positive(p: &FieldPath, field: &str, d: Option<Dur>) -> Res<Option<Duration>> {
    match d {
        Some(d) if d.0.is_zero() => fail(p.key(field), format!("{field} must be greater than 0s")),
        Some(d) => Ok(Some(d.0)),
        None => Ok(None),
    }
}

fn ranges(p: FieldPath, list: Option<Vec<RawRange>>, default: &[(u16, u16)]) -> Res<Vec<(u16, u16)>> {
    let Some(list) = list else { return Ok(default.to_vec()) };
    let mut out = Vec::new();
    for (i, r) in list.into_iter().enumerate() {
        let (start, end) = (r.start.unwrap_or(0), r.end.unwrap_or(0));
        // Envoy's bounds: 100 <= start < end <= 600.
        if !(100..600).contains(&start) || !(start + 1..=600).contains(&end) {
            return fail(
                p.idx(i),
                format!("a status range must satisfy 100 <= start < end <= 600, got [{start}, {end})"),
            );
        }
        out.push((start as u16, end as u16));
    }
    Ok(out)
}

fn payload(p: FieldPath, raw: RawPayload) -> Res<Vec<u8>> {
    match (raw.text, raw.binary) {
        (Some(text), None) => {
            let text = text.trim();
            if text.len() % 2 != 0 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
                return fail(p.key("text"), format!("text must be hex digits in pairs, got \"{text}\""));
            }
            Ok((0..text.len())
                .step_by(2)
                .filter_map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
                .collect())
        }
        (None, Some(_)) => fail(p.key("binary"), "binary payloads are not supported; use text (hex)"),
        _ => fail(p, "a payload needs exactly one of text or binary"),
    }
}

/// One `health_checks` entry at `p` for cluster `cluster` (the default HTTP host).
pub(super) fn health_check(p: FieldPath, cluster: &str, h: RawHealthCheck) -> Res<HealthCheck> {
    let timeout = required(&p, "timeout", h.timeout)?;
    let interval = required(&p, "interval", h.interval)?;
    let unhealthy_threshold = threshold(&p, "unhealthy_threshold", h.unhealthy_threshold)?;
    let healthy_threshold = threshold(&p, "healthy_threshold", h.healthy_threshold)?;
    if h.grpc_health_check.is_some() {
        return fail(p.key("grpc_health_check"), "grpc_health_check is not supported: skiff speaks HTTP/1.1");
    }
    if h.custom_health_check.is_some() {
        return fail(p.key("custom_health_check"), "custom_health_check is not supported");
    }
    for (field, present) in [
        ("tls_options", h.tls_options.is_some()),
        ("transport_socket_match_criteria", h.transport_socket_match_criteria.is_some()),
    ] {
        if present {
            return fail(p.key(field), format!("{field} is not supported: TLS not yet supported"));
        }
    }
    let alt_port = match h.alt_port {
        Some(0) | None => None,
        Some(n) => match u16::try_from(n) {
            Ok(port) => Some(port),
            Err(_) => return fail(p.key("alt_port"), format!("alt_port {n} is out of range (1-65535)")),
        },
    };
    let kind = match (h.http_health_check, h.tcp_health_check) {
        (Some(http), None) => HealthCheckKind::Http(http_check(p.key("http_health_check"), cluster, http)?),
        (None, Some(tcp)) => {
            let tp = p.key("tcp_health_check");
            if tcp.proxy_protocol_config.is_some() {
                return fail(tp.key("proxy_protocol_config"), "proxy_protocol_config is not supported");
            }
            let send = match tcp.send {
                Some(s) => payload(tp.key("send"), s)?,
                None => Vec::new(),
            };
            let mut receive = Vec::new();
            for (i, r) in tcp.receive.unwrap_or_default().into_iter().enumerate() {
                receive.push(payload(tp.key("receive").idx(i), r)?);
            }
            HealthCheckKind::Tcp { send, receive }
        }
        (None, None) => {
            return fail(
                p,
                "a health check needs http_health_check or tcp_health_check (the only kinds skiff runs)",
            )
        }
        (Some(_), Some(_)) => return fail(p, "give either http_health_check or tcp_health_check, not both"),
    };
    let unhealthy_interval = positive(&p, "unhealthy_interval", h.unhealthy_interval)?.unwrap_or(interval);
    let no_traffic_interval =
        positive(&p, "no_traffic_interval", h.no_traffic_interval)?.unwrap_or(Duration::from_secs(60));
    Ok(HealthCheck {
        timeout,
        interval,
        initial_jitter: h.initial_jitter.map_or(Duration::ZERO, |d| d.0),
        interval_jitter: h.interval_jitter.map_or(Duration::ZERO, |d| d.0),
        interval_jitter_percent: h.interval_jitter_percent.unwrap_or(0),
        unhealthy_threshold,
        healthy_threshold,
        alt_port,
        reuse_connection: h.reuse_connection.unwrap_or(true),
        kind,
        no_traffic_interval,
        no_traffic_healthy_interval: positive(
            &p,
            "no_traffic_healthy_interval",
            h.no_traffic_healthy_interval,
        )?
        .unwrap_or(no_traffic_interval),
        unhealthy_interval,
        unhealthy_edge_interval: positive(&p, "unhealthy_edge_interval", h.unhealthy_edge_interval)?
            .unwrap_or(unhealthy_interval),
        healthy_edge_interval: positive(&p, "healthy_edge_interval", h.healthy_edge_interval)?
            .unwrap_or(interval),
        always_log_failures: h.always_log_health_check_failures.unwrap_or(false),
        always_log_success: h.always_log_health_check_success.unwrap_or(false),
    })
}

fn http_check(p: FieldPath, cluster: &str, h: RawHttpHealthCheck) -> Res<HttpHealthCheck> {
    for (field, present) in [
        ("send", h.send.is_some()),
        ("receive", h.receive.is_some()),
        ("service_name_matcher", h.service_name_matcher.is_some()),
        ("service_name", h.service_name.is_some()),
    ] {
        if present {
            return fail(p.key(field), format!("{field} is not supported: not yet implemented in skiff"));
        }
    }
    if h.use_http2 == Some(true) {
        return fail(p.key("use_http2"), "use_http2 is not supported: skiff speaks HTTP/1.1");
    }
    let path = h.path.unwrap_or_default();
    if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return fail(p.key("path"), format!("path must be an absolute path without spaces, got \"{path}\""));
    }
    let host = h.host.filter(|h| !h.is_empty()).unwrap_or_else(|| cluster.to_string());
    if host.bytes().any(|b| b < b' ' || b == 0x7f) {
        return fail(p.key("host"), "host must not hold control characters");
    }
    let method = match h.method.as_deref().map(str::to_ascii_uppercase) {
        None => "GET".to_string(),
        Some(m)
            if ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH"]
                .contains(&m.as_str()) =>
        {
            m
        }
        Some(m) => return fail(p.key("method"), format!("method {m} is not allowed for a health check")),
    };
    Ok(HttpHealthCheck {
        host,
        path,
        method,
        request_headers_to_add: headers_to_add(p.key("request_headers_to_add"), h.request_headers_to_add)?,
        request_headers_to_remove: h
            .request_headers_to_remove
            .unwrap_or_default()
            .into_iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        expected_statuses: ranges(p.key("expected_statuses"), h.expected_statuses, &[(200, 201)])?,
        retriable_statuses: ranges(p.key("retriable_statuses"), h.retriable_statuses, &[])?,
    })
}
