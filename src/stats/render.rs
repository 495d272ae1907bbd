//! A merged `StatsDump` as the admin API shows it: Envoy's `/stats` text, `/stats?format=json`, and
//! `/stats/prometheus` (text format 0.0.4 with Envoy's `envoy_` names and tags).

use super::{Entry, Scope, StatsDump, Value};
use hdrhistogram::Histogram;
use std::fmt::Write;

/// The quantiles Envoy shows for a histogram, in percent.
const QUANTILES: [f64; 10] = [0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 100.0];

/// Envoy's default histogram buckets, in milliseconds.
const BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0,
    300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// The bucket's lowest value, so a value recorded exactly is shown exactly.
fn quantile_ms(h: &Histogram<u64>, percent: f64) -> f64 {
    h.lowest_equivalent(h.value_at_quantile(percent / 100.0)) as f64 / 1000.0
}

/// Which entries to show: `filter` (a regex on the full name) and `usedonly` (non-zero, or
/// histograms with samples).
pub struct Select<'a> {
    pub filter: Option<&'a regex::Regex>,
    pub used_only: bool,
}

impl Select<'_> {
    fn keeps(&self, e: &Entry, name: &str) -> bool {
        if self.filter.is_some_and(|re| !re.is_match(name)) {
            return false;
        }
        !self.used_only
            || match &e.value {
                Value::Counter(v) => *v > 0,
                Value::Gauge(v) => *v != 0,
                Value::GaugeU64(v) => *v != 0,
                // Set (even to ""), so used, as Envoy counts it.
                Value::Text(_) => true,
                Value::Histogram(h) => !h.is_empty(),
            }
    }
}

/// Text readouts as `name: "text"`, then `name: value` lines, then histograms as `name: P0(nan,v) P25(nan,v) ...` in milliseconds, as
/// Envoy prints them (skiff keeps no interval histograms, hence `nan`; the cumulative values are
/// exact to the histogram's 1 % precision, not bucket interpolations).
pub fn text(dump: &StatsDump, select: &Select<'_>) -> String {
    let mut texts = String::new();
    let mut out = String::new();
    let mut histograms = String::new();
    for e in &dump.entries {
        let name = e.full_name();
        if !select.keeps(e, &name) {
            continue;
        }
        match &e.value {
            Value::Counter(v) => {
                let _ = writeln!(out, "{name}: {v}");
            }
            Value::Gauge(v) => {
                let _ = writeln!(out, "{name}: {v}");
            }
            Value::GaugeU64(v) => {
                let _ = writeln!(out, "{name}: {v}");
            }
            Value::Text(v) => {
                let _ = writeln!(texts, "{name}: \"{v}\"");
            }
            Value::Histogram(h) if h.is_empty() => {
                let _ = writeln!(histograms, "{name}: No recorded values");
            }
            Value::Histogram(h) => {
                let _ = write!(histograms, "{name}:");
                for q in QUANTILES {
                    let _ = write!(histograms, " P{q}(nan,{})", quantile_ms(h, q));
                }
                histograms.push('\n');
            }
        }
    }
    texts + &out + &histograms
}

pub fn json(dump: &StatsDump, select: &Select<'_>) -> String {
    let mut texts = Vec::new();
    let mut stats = Vec::new();
    let mut computed = Vec::new();
    for e in &dump.entries {
        let name = e.full_name();
        if !select.keeps(e, &name) {
            continue;
        }
        match &e.value {
            Value::Counter(v) => stats.push(serde_json::json!({ "name": name, "value": v })),
            Value::Gauge(v) => stats.push(serde_json::json!({ "name": name, "value": v })),
            Value::GaugeU64(v) => stats.push(serde_json::json!({ "name": name, "value": v })),
            Value::Text(v) => texts.push(serde_json::json!({ "name": name, "value": v })),
            Value::Histogram(h) => {
                let values: Vec<_> = QUANTILES
                    .iter()
                    .map(|q| {
                        if h.is_empty() {
                            serde_json::json!({ "interval": null, "cumulative": null })
                        } else {
                            serde_json::json!({ "interval": null, "cumulative": quantile_ms(h, *q) })
                        }
                    })
                    .collect();
                computed.push(serde_json::json!({ "name": name, "values": values }));
            }
        }
    }
    texts.append(&mut stats);
    let mut stats = texts;
    stats.push(serde_json::json!({
        "histograms": { "supported_quantiles": QUANTILES, "computed_quantiles": computed }
    }));
    serde_json::to_string_pretty(&serde_json::json!({ "stats": stats })).unwrap_or_default() + "\n"
}

/// Envoy's response-code tags: `…_rq_2xx` is `…_rq_xx` tagged `envoy_response_code_class="2"`
/// (Envoy's `_rq(_(\dxx))$`), and `…_rq_503` is `…_rq` tagged `envoy_response_code="503"`
/// (`_rq(_(\d{3}))$`).
fn response_code_tag(name: &str) -> Option<(String, (&'static str, String))> {
    let (stem, last) = name.rsplit_once("_rq_")?;
    match last.as_bytes() {
        [c @ b'1'..=b'5', b'x', b'x'] => {
            Some((format!("{stem}_rq_xx"), ("envoy_response_code_class", (*c as char).to_string())))
        }
        [a, b, c] if [a, b, c].iter().all(|d| d.is_ascii_digit()) => {
            Some((format!("{stem}_rq"), ("envoy_response_code", last.to_string())))
        }
        _ => None,
    }
}

/// Envoy's tag extraction for the names skiff has: the metric name and its labels.
fn prometheus_name(e: &Entry) -> (String, Vec<(&'static str, String)>) {
    let (metric, mut labels): (String, Vec<(&'static str, String)>) = match response_code_tag(e.name) {
        Some((metric, tag)) => (metric, vec![tag]),
        None => (e.name.to_string(), vec![]),
    };
    let family = match &e.scope {
        Scope::Server => format!("envoy_server_{metric}"),
        Scope::Http1 => format!("envoy_http1_{metric}"),
        Scope::Http2 => format!("envoy_http2_{metric}"),
        Scope::TlsInspector => format!("envoy_tls_inspector_{metric}"),
        Scope::Http(prefix) => {
            labels.push(("envoy_http_conn_manager_prefix", prefix.clone()));
            format!("envoy_http_{metric}")
        }
        Scope::Fault(prefix) => {
            labels.push(("envoy_http_conn_manager_prefix", prefix.clone()));
            format!("envoy_http_fault_{metric}")
        }
        Scope::HttpFilter(prefix, filter) => {
            labels.push(("envoy_http_conn_manager_prefix", prefix.clone()));
            format!("envoy_http_{filter}_{metric}")
        }
        Scope::JwtAuthn(prefix) => {
            labels.push(("envoy_http_conn_manager_prefix", prefix.clone()));
            format!("envoy_http_jwt_authn_{metric}")
        }
        Scope::Rbac { hcm, rules } => {
            labels.push(("envoy_http_conn_manager_prefix", hcm.clone()));
            if rules.is_empty() {
                format!("envoy_http_rbac_{metric}")
            } else {
                format!("envoy_http_rbac_{rules}_{metric}")
            }
        }
        Scope::Compressor(prefix, rest) => {
            labels.push(("envoy_http_conn_manager_prefix", prefix.clone()));
            format!("envoy_http_compressor_{}_{}", rest.replace('.', "_"), metric.replace('.', "_"))
        }
        // Envoy extracts no tag from a root-level `<prefix>.http_local_rate_limit.*` or
        // `<prefix>.rbac.*` name, nor from `sds.<secret>.*`.
        Scope::LocalRateLimit(_) | Scope::NetRbac { .. } | Scope::Subscription(_) | Scope::Sds(_) => {
            format!("envoy_{}_{metric}", e.scope.prefix())
        }
        // Envoy's tags for `http.<prefix>.rds.<route_config>.*`, the route configuration's first.
        Scope::Rds { stat_prefix, route_config } => {
            labels.push(("envoy_rds_route_config", route_config.clone()));
            labels.push(("envoy_http_conn_manager_prefix", stat_prefix.clone()));
            format!("envoy_http_rds_{metric}")
        }
        Scope::Tcp(prefix) => {
            labels.push(("envoy_tcp_prefix", prefix.clone()));
            format!("envoy_tcp_{metric}")
        }
        Scope::NetLocalRateLimit(prefix) => {
            labels.push(("envoy_local_network_ratelimit_prefix", prefix.clone()));
            format!("envoy_local_rate_limit_{metric}")
        }
        Scope::ConnectionLimit(prefix) => {
            labels.push(("envoy_connection_limit_prefix", prefix.clone()));
            format!("envoy_connection_limit_{metric}")
        }
        Scope::Cluster(name) => {
            labels.push(("envoy_cluster_name", name.clone()));
            format!("envoy_cluster_{metric}")
        }
        // `<address>.worker_<n>`: Envoy's worker_id tag first, then the address.
        Scope::Listener(name) => match name.rsplit_once(".worker_") {
            Some((address, worker)) => {
                labels.push(("envoy_worker_id", worker.to_string()));
                labels.push(("envoy_listener_address", address.to_string()));
                format!("envoy_listener_worker_{metric}")
            }
            None => {
                labels.push(("envoy_listener_address", name.clone()));
                format!("envoy_listener_{metric}")
            }
        },
    };
    (sanitize(&family), labels)
}

fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == ':' { c } else { '_' }).collect()
}

fn label_text(labels: &[(&'static str, String)], extra: Option<(&str, String)>) -> String {
    let escape = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    let mut parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{}\"", escape(&v)));
    }
    // Envoy writes `{}` on a metric without labels too.
    format!("{{{}}}", parts.join(","))
}

/// Prometheus text exposition format 0.0.4; one `# TYPE` per family, families grouped.
pub fn prometheus(dump: &StatsDump, select: &Select<'_>) -> String {
    let mut families: std::collections::BTreeMap<String, (&'static str, Vec<String>)> = Default::default();
    for e in &dump.entries {
        if !select.keeps(e, &e.full_name()) || matches!(e.value, Value::Text(_)) {
            continue;
        }
        let (family, labels) = prometheus_name(e);
        let (kind, lines) = families.entry(family.clone()).or_insert_with(|| {
            let kind = match e.value {
                Value::Counter(_) => "counter",
                Value::Gauge(_) | Value::GaugeU64(_) | Value::Text(_) => "gauge",
                Value::Histogram(_) => "histogram",
            };
            (kind, Vec::new())
        });
        let _ = kind;
        match &e.value {
            Value::Counter(v) => lines.push(format!("{family}{} {v}", label_text(&labels, None))),
            Value::Gauge(v) => lines.push(format!("{family}{} {v}", label_text(&labels, None))),
            Value::GaugeU64(v) => lines.push(format!("{family}{} {v}", label_text(&labels, None))),
            Value::Text(_) => {}
            Value::Histogram(h) => {
                for le in BUCKETS_MS {
                    let upto_us = (le * 1000.0) as u64;
                    let count = if h.is_empty() { 0 } else { h.count_between(0, upto_us) };
                    lines.push(format!(
                        "{family}_bucket{} {count}",
                        label_text(&labels, Some(("le", format_float(le))))
                    ));
                }
                lines.push(format!(
                    "{family}_bucket{} {}",
                    label_text(&labels, Some(("le", "+Inf".into()))),
                    h.len()
                ));
                let sum_ms = h.mean() * h.len() as f64 / 1000.0;
                lines.push(format!("{family}_sum{} {}", label_text(&labels, None), format_float(sum_ms)));
                lines.push(format!("{family}_count{} {}", label_text(&labels, None), h.len()));
            }
        }
    }
    let mut out = String::new();
    for (family, (kind, lines)) in families {
        let _ = writeln!(out, "# TYPE {family} {kind}");
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
    }
    out
}

fn format_float(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::ShardStats;

    fn sample() -> StatsDump {
        let s = ShardStats::default();
        let c = s.cluster("backend");
        c.upstream_rq_2xx.inc();
        c.upstream_rq_2xx.inc();
        c.upstream_rq_time.record_us(2_000);
        s.http("ingress").downstream_rq_total.inc();
        StatsDump::merge([s.dump()])
    }

    #[test]
    fn text_has_envoy_names_and_percentiles() {
        let t = text(&sample(), &Select { filter: None, used_only: false });
        assert!(t.contains("cluster.backend.upstream_rq_2xx: 2\n"), "{t}");
        assert!(t.contains("http.ingress.downstream_rq_total: 1\n"));
        assert!(t.contains("cluster.backend.upstream_rq_time: P0(nan,2) P25(nan,2)"), "{t}");
    }

    #[test]
    fn prometheus_uses_envoy_tags() {
        let p = prometheus(&sample(), &Select { filter: None, used_only: false });
        assert!(
            p.contains("envoy_cluster_upstream_rq_xx{envoy_response_code_class=\"2\",envoy_cluster_name=\"backend\"} 2"),
            "{p}"
        );
        assert!(p.contains("# TYPE envoy_cluster_upstream_rq_time histogram"));
        assert!(
            p.contains("envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"backend\",le=\"5\"} 1")
        );
        assert!(p.contains("envoy_cluster_upstream_rq_time_count{envoy_cluster_name=\"backend\"} 1"));
        assert_eq!(p.matches("# TYPE envoy_cluster_upstream_rq_xx counter").count(), 1);
    }

    #[test]
    fn response_codes_are_tags_as_envoy_extracts_them() {
        let tag = |n: &str| response_code_tag(n).map(|(m, (k, v))| format!("{m} {k}={v}"));
        assert_eq!(tag("upstream_rq_503").as_deref(), Some("upstream_rq envoy_response_code=503"));
        assert_eq!(
            tag("retry.upstream_rq_200").as_deref(),
            Some("retry.upstream_rq envoy_response_code=200")
        );
        assert_eq!(tag("upstream_rq_4xx").as_deref(), Some("upstream_rq_xx envoy_response_code_class=4"));
        assert_eq!(tag("downstream_rq_2xx").as_deref(), Some("downstream_rq_xx envoy_response_code_class=2"));
        for untagged in
            ["upstream_rq_total", "upstream_rq_6xx", "upstream_rq_50", "upstream_rq_5000", "cx_2xx"]
        {
            assert_eq!(tag(untagged), None, "{untagged}");
        }
    }

    #[test]
    fn filter_and_usedonly_select_entries() {
        let re = regex::Regex::new("rq_2xx").unwrap();
        let t = text(&sample(), &Select { filter: Some(&re), used_only: true });
        assert_eq!(t, "cluster.backend.upstream_rq_2xx: 2\n");
    }
}
