//! Endpoint health as configured: a cluster's `common_lb_config.healthy_panic_threshold`,
//! `load_assignment.policy.overprovisioning_factor` and its active `health_checks`, converted from
//! their serde shape (`raw`) to `model` with Envoy's defaults and checks. Fields skiff accepts without acting on are warned about by `convert` (the
//! one place that names `unenforced` entries); everything else here is enforced or refused with its
//! path. What runs the checks and how the load balancer uses the result is `cluster::health` and
//! `control::health_check`'s.

use super::duration::Dur;
use super::error::FieldPath;
use super::fields::{fail, headers_to_add, Res};
use super::model::{HealthCheck, HealthCheckKind, HttpHealthCheck, LbHealth};
use super::raw::{RawCommonLb, RawHealthCheck, RawHttpHealthCheck, RawLbPolicyOptions, RawPayload, RawRange};
use std::time::Duration;

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
        return fail(
            p.key("grpc_health_check"),
            "grpc_health_check is not supported: skiff's health checker speaks HTTP/1.1 only",
        );
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
        reuse_connection: h.reuse_connection.unwrap_or(true),
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
        return fail(
            p.key("use_http2"),
            "use_http2 is not supported: skiff's health checker speaks HTTP/1.1 only",
        );
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
