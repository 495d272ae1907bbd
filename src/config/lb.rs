//! A cluster's `outlier_detection`, `ring_hash_lb_config`, `maglev_lb_config` and
//! `least_request_lb_config`, and a route's `hash_policy`: their YAML (`Raw*`, unknown fields
//! denied), their typed form with Envoy's defaults, and the conversion between the two with located
//! errors. Owns what is refused here (outlier `monitors`); the warnings table and the rest of a
//! cluster or route are `convert`'s.

use super::duration::Dur;
use super::error::{FieldPath, Finding};
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::time::Duration;

type Ign = Option<IgnoredAny>;
type Res<T> = Result<T, Finding>;

fn fail<T>(path: FieldPath, message: impl Into<String>) -> Res<T> {
    Err(Finding { path, message: message.into() })
}

// ---------------------------------------------------------------------------------------------
// Outlier detection

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an outlier_detection mapping")]
pub struct RawOutlierDetection {
    pub consecutive_5xx: Option<u32>,
    pub consecutive_gateway_failure: Option<u32>,
    pub consecutive_local_origin_failure: Option<u32>,
    pub interval: Option<Dur>,
    pub base_ejection_time: Option<Dur>,
    pub max_ejection_time: Option<Dur>,
    pub max_ejection_time_jitter: Option<Dur>,
    pub max_ejection_percent: Option<u32>,
    pub enforcing_consecutive_5xx: Option<u32>,
    pub enforcing_consecutive_gateway_failure: Option<u32>,
    pub enforcing_consecutive_local_origin_failure: Option<u32>,
    pub split_external_local_origin_errors: Option<bool>,
    pub always_eject_one_host: Option<bool>,
    pub successful_active_health_check_uneject_host: Option<bool>,
    pub enforcing_success_rate: Option<u32>,
    pub enforcing_local_origin_success_rate: Option<u32>,
    pub enforcing_failure_percentage: Option<u32>,
    pub enforcing_failure_percentage_local_origin: Option<u32>,
    pub success_rate_minimum_hosts: Option<u32>,
    pub success_rate_request_volume: Option<u32>,
    pub success_rate_stdev_factor: Option<u32>,
    pub failure_percentage_threshold: Option<u32>,
    pub failure_percentage_minimum_hosts: Option<u32>,
    pub failure_percentage_request_volume: Option<u32>,
    // Refused.
    pub monitors: Ign,
}

/// `outlier_detection` with Envoy's defaults: consecutive-error detection on every result,
/// success-rate and failure-percentage detection on every `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierDetection {
    pub consecutive_5xx: u32,
    pub consecutive_gateway_failure: u32,
    pub consecutive_local_origin_failure: u32,
    pub interval: Duration,
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    pub max_ejection_time_jitter: Duration,
    pub max_ejection_percent: u32,
    /// Percent chances (0-100) that a detection ejects.
    pub enforcing_consecutive_5xx: u32,
    pub enforcing_consecutive_gateway_failure: u32,
    pub enforcing_consecutive_local_origin_failure: u32,
    pub split_external_local_origin_errors: bool,
    pub always_eject_one_host: bool,
    pub success_rate: IntervalDetection,
    /// `success_rate_stdev_factor`: thousandths of a standard deviation (1900 = 1.9).
    pub success_rate_stdev_factor: u32,
    pub failure_percentage: IntervalDetection,
    /// `failure_percentage_threshold`: a host failing at least this percent is an outlier.
    pub failure_percentage_threshold: u32,
    /// Percent chances that an external / local-origin success-rate detection ejects.
    pub enforcing_success_rate: u32,
    pub enforcing_local_origin_success_rate: u32,
    pub enforcing_failure_percentage: u32,
    pub enforcing_failure_percentage_local_origin: u32,
    /// A passing active health check returns an ejected host at once.
    pub successful_active_health_check_uneject_host: bool,
}

/// Which hosts one interval detector (success rate or failure percentage) looks at: those with at
/// least `request_volume` results in the interval, when at least `minimum_hosts` have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntervalDetection {
    pub minimum_hosts: u32,
    pub request_volume: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_5xx: 5,
            consecutive_gateway_failure: 5,
            consecutive_local_origin_failure: 5,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_time_jitter: Duration::ZERO,
            max_ejection_percent: 10,
            enforcing_consecutive_5xx: 100,
            enforcing_consecutive_gateway_failure: 0,
            enforcing_consecutive_local_origin_failure: 100,
            split_external_local_origin_errors: false,
            always_eject_one_host: false,
            success_rate: IntervalDetection { minimum_hosts: 5, request_volume: 100 },
            success_rate_stdev_factor: 1900,
            failure_percentage: IntervalDetection { minimum_hosts: 5, request_volume: 50 },
            failure_percentage_threshold: 85,
            enforcing_success_rate: 100,
            enforcing_local_origin_success_rate: 100,
            enforcing_failure_percentage: 0,
            enforcing_failure_percentage_local_origin: 0,
            successful_active_health_check_uneject_host: true,
        }
    }
}

pub fn outlier_detection(p: FieldPath, o: RawOutlierDetection) -> Res<OutlierDetection> {
    if o.monitors.is_some() {
        return fail(p.key("monitors"), "monitors (outlier detection extensions) are not supported");
    }
    let d = OutlierDetection::default();
    let percent = |name: &str, v: Option<u32>, default: u32| -> Res<u32> {
        match v {
            Some(v) if v > 100 => fail(p.key(name), format!("{name} is a percentage (0-100), got {v}")),
            v => Ok(v.unwrap_or(default)),
        }
    };
    let positive = |name: &str, v: Option<Dur>, default: Duration| -> Res<Duration> {
        match v {
            Some(Dur(t)) if t.is_zero() => fail(p.key(name), format!("{name} must be greater than 0s")),
            v => Ok(v.map_or(default, |t| t.0)),
        }
    };
    let base_ejection_time = positive("base_ejection_time", o.base_ejection_time, d.base_ejection_time)?;
    // Envoy: when not given, the larger of 300 s and base_ejection_time.
    let max_ejection_time = match o.max_ejection_time {
        Some(Dur(t)) if t < base_ejection_time => {
            return fail(
                p.key("max_ejection_time"),
                "max_ejection_time cannot be smaller than base_ejection_time",
            )
        }
        Some(Dur(t)) => t,
        None => d.max_ejection_time.max(base_ejection_time),
    };
    Ok(OutlierDetection {
        consecutive_5xx: o.consecutive_5xx.unwrap_or(d.consecutive_5xx),
        consecutive_gateway_failure: o.consecutive_gateway_failure.unwrap_or(d.consecutive_gateway_failure),
        consecutive_local_origin_failure: o
            .consecutive_local_origin_failure
            .unwrap_or(d.consecutive_local_origin_failure),
        interval: positive("interval", o.interval, d.interval)?,
        base_ejection_time,
        max_ejection_time,
        max_ejection_time_jitter: o.max_ejection_time_jitter.map_or(Duration::ZERO, |t| t.0),
        max_ejection_percent: percent(
            "max_ejection_percent",
            o.max_ejection_percent,
            d.max_ejection_percent,
        )?,
        enforcing_consecutive_5xx: percent(
            "enforcing_consecutive_5xx",
            o.enforcing_consecutive_5xx,
            d.enforcing_consecutive_5xx,
        )?,
        enforcing_consecutive_gateway_failure: percent(
            "enforcing_consecutive_gateway_failure",
            o.enforcing_consecutive_gateway_failure,
            d.enforcing_consecutive_gateway_failure,
        )?,
        enforcing_consecutive_local_origin_failure: percent(
            "enforcing_consecutive_local_origin_failure",
            o.enforcing_consecutive_local_origin_failure,
            d.enforcing_consecutive_local_origin_failure,
        )?,
        split_external_local_origin_errors: o.split_external_local_origin_errors.unwrap_or(false),
        always_eject_one_host: o.always_eject_one_host.unwrap_or(false),
        success_rate: IntervalDetection {
            minimum_hosts: o.success_rate_minimum_hosts.unwrap_or(d.success_rate.minimum_hosts),
            request_volume: o.success_rate_request_volume.unwrap_or(d.success_rate.request_volume),
        },
        success_rate_stdev_factor: o.success_rate_stdev_factor.unwrap_or(d.success_rate_stdev_factor),
        failure_percentage: IntervalDetection {
            minimum_hosts: o.failure_percentage_minimum_hosts.unwrap_or(d.failure_percentage.minimum_hosts),
            request_volume: o
                .failure_percentage_request_volume
                .unwrap_or(d.failure_percentage.request_volume),
        },
        failure_percentage_threshold: percent(
            "failure_percentage_threshold",
            o.failure_percentage_threshold,
            d.failure_percentage_threshold,
        )?,
        enforcing_success_rate: percent(
            "enforcing_success_rate",
            o.enforcing_success_rate,
            d.enforcing_success_rate,
        )?,
        enforcing_local_origin_success_rate: percent(
            "enforcing_local_origin_success_rate",
            o.enforcing_local_origin_success_rate,
            d.enforcing_local_origin_success_rate,
        )?,
        enforcing_failure_percentage: percent(
            "enforcing_failure_percentage",
            o.enforcing_failure_percentage,
            d.enforcing_failure_percentage,
        )?,
        enforcing_failure_percentage_local_origin: percent(
            "enforcing_failure_percentage_local_origin",
            o.enforcing_failure_percentage_local_origin,
            d.enforcing_failure_percentage_local_origin,
        )?,
        successful_active_health_check_uneject_host: o
            .successful_active_health_check_uneject_host
            .unwrap_or(d.successful_active_health_check_uneject_host),
    })
}

// ---------------------------------------------------------------------------------------------
// Hash load balancers

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a ring_hash_lb_config mapping")]
pub struct RawRingHash {
    pub minimum_ring_size: Option<u64>,
    pub maximum_ring_size: Option<u64>,
    pub hash_function: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a maglev_lb_config mapping")]
pub struct RawMaglev {
    pub table_size: Option<u64>,
}

/// The sizes of a RING_HASH cluster's ring and a MAGLEV cluster's table (Envoy's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashTable {
    pub minimum_ring_size: u64,
    pub maximum_ring_size: u64,
    pub maglev_table_size: u64,
}

/// Envoy's ceiling for either ring size.
const MAX_RING: u64 = 8 * 1024 * 1024;
/// Envoy's ceiling for a Maglev table.
const MAX_MAGLEV: u64 = 5_000_011;

impl Default for HashTable {
    fn default() -> Self {
        HashTable { minimum_ring_size: 1024, maximum_ring_size: MAX_RING, maglev_table_size: 65537 }
    }
}

pub fn hash_table(p: &FieldPath, ring: Option<RawRingHash>, maglev: Option<RawMaglev>) -> Res<HashTable> {
    let mut t = HashTable::default();
    if let Some(r) = ring {
        let rp = p.key("ring_hash_lb_config");
        if let Some(f) = r.hash_function {
            match f.to_ascii_uppercase().as_str() {
                "XX_HASH" => {}
                "MURMUR_HASH_2" => {
                    return fail(
                        rp.key("hash_function"),
                        "hash_function MURMUR_HASH_2 is not supported (XX_HASH is)",
                    )
                }
                _ => {
                    return fail(
                        rp.key("hash_function"),
                        format!("unknown hash_function \"{f}\", expected XX_HASH"),
                    )
                }
            }
        }
        for (name, v) in
            [("minimum_ring_size", r.minimum_ring_size), ("maximum_ring_size", r.maximum_ring_size)]
        {
            if v.is_some_and(|v| v == 0 || v > MAX_RING) {
                return fail(rp.key(name), format!("{name} must be between 1 and {MAX_RING}"));
            }
        }
        t.minimum_ring_size = r.minimum_ring_size.unwrap_or(t.minimum_ring_size);
        t.maximum_ring_size = r.maximum_ring_size.unwrap_or(t.maximum_ring_size);
        if t.minimum_ring_size > t.maximum_ring_size {
            return fail(
                rp,
                format!(
                    "minimum_ring_size ({}) > maximum_ring_size ({})",
                    t.minimum_ring_size, t.maximum_ring_size
                ),
            );
        }
    }
    if let Some(size) = maglev.and_then(|m| m.table_size) {
        let mp = p.key("maglev_lb_config").key("table_size");
        if size > MAX_MAGLEV || !is_prime(size) {
            return fail(
                mp,
                format!("the table size of maglev must be a prime number up to {MAX_MAGLEV}, got {size}"),
            );
        }
        t.maglev_table_size = size;
    }
    Ok(t)
}

fn is_prime(n: u64) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| !n.is_multiple_of(d))
}

// ---------------------------------------------------------------------------------------------
// LEAST_REQUEST

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a least_request_lb_config mapping")]
pub struct RawLeastRequest {
    pub choice_count: Option<u32>,
    pub active_request_bias: Option<RawRuntimeDouble>,
    /// Warned about by `convert`.
    pub slow_start_config: Ign,
}

/// Envoy's `RuntimeDouble`: skiff has no runtime, so the default is the value.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping like {default_value: 1.0, runtime_key: x}")]
pub struct RawRuntimeDouble {
    pub default_value: Option<f64>,
    /// Read by Envoy's runtime, which skiff has not: the default is the value.
    #[allow(dead_code)]
    pub runtime_key: Ign,
}

/// `least_request_lb_config` with Envoy's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeastRequest {
    /// Hosts drawn (with replacement) per pick when the hosts' weights are equal; at least 2.
    pub choice_count: u32,
    /// With unequal weights a host weighs `weight / (active + 1)^bias`.
    pub active_request_bias: f64,
}

impl Default for LeastRequest {
    fn default() -> Self {
        LeastRequest { choice_count: 2, active_request_bias: 1.0 }
    }
}

/// The typed config, and whether `active_request_bias` was unusable (negative or NaN: Envoy logs it
/// and uses 1.0, and so does skiff, with a load warning from `convert`).
pub fn least_request(p: &FieldPath, raw: RawLeastRequest) -> Res<(LeastRequest, bool)> {
    let mut out = LeastRequest::default();
    if let Some(n) = raw.choice_count {
        if n < 2 {
            return fail(
                p.key("least_request_lb_config").key("choice_count"),
                format!("choice_count must be at least 2, got {n}"),
            );
        }
        out.choice_count = n;
    }
    let bias = raw.active_request_bias.map(|b| b.default_value.unwrap_or(0.0));
    let bad = bias.is_some_and(|b| b.is_nan() || b < 0.0);
    if let Some(b) = bias.filter(|_| !bad) {
        out.active_request_bias = b;
    }
    Ok((out, bad))
}

// ---------------------------------------------------------------------------------------------
// Route hash_policy

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a hash_policy entry (header, cookie, connection_properties or query_parameter)"
)]
pub struct RawHashPolicy {
    pub header: Option<RawHashHeader>,
    pub cookie: Option<RawHashCookie>,
    pub connection_properties: Option<RawHashConnection>,
    pub query_parameter: Option<RawHashQuery>,
    pub filter_state: Ign,
    pub terminal: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping like {header_name: x-user}")]
pub struct RawHashHeader {
    pub header_name: String,
    pub regex_rewrite: Ign,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping like {name: session}")]
pub struct RawHashCookie {
    pub name: String,
    pub ttl: Option<Dur>,
    pub path: Option<String>,
    pub attributes: Option<Vec<RawCookieAttribute>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping like {name: SameSite, value: Lax}")]
pub struct RawCookieAttribute {
    pub name: String,
    pub value: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping like {source_ip: true}")]
pub struct RawHashConnection {
    pub source_ip: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping like {name: user}")]
pub struct RawHashQuery {
    pub name: String,
}

/// What one hash policy hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashMethod {
    /// A request header, by lower-case name.
    Header(String),
    Cookie(HashCookie),
    SourceIp,
    QueryParameter(String),
}

/// A cookie hash policy: the cookie hashed, and, with `ttl`, the cookie generated when a request
/// lacks it (Envoy's router adds its `set-cookie` to the response).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashCookie {
    pub name: String,
    pub generate: Option<Box<CookieGen>>,
}

/// What a generated hash cookie says beside its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieGen {
    /// `Max-Age` in whole seconds (the ttl truncated); 0 writes none (a session cookie).
    pub max_age: u64,
    /// `Path`; empty writes none.
    pub path: String,
    /// `; name` or `; name=value` each, in order.
    pub attributes: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashPolicy {
    pub method: HashMethod,
    /// `terminal`: once a hash is made, the policies after this one are not evaluated.
    pub terminal: bool,
}

pub fn hash_policies(p: FieldPath, list: Vec<RawHashPolicy>) -> Res<Vec<HashPolicy>> {
    let mut out = Vec::with_capacity(list.len());
    for (i, h) in list.into_iter().enumerate() {
        let hp = p.idx(i);
        if h.filter_state.is_some() {
            return fail(
                hp.key("filter_state"),
                "filter_state is not supported: not yet implemented in skiff",
            );
        }
        let given = [
            h.header.is_some(),
            h.cookie.is_some(),
            h.connection_properties.is_some(),
            h.query_parameter.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return fail(hp, "give exactly one of header, cookie, connection_properties or query_parameter");
        }
        let method = if let Some(hh) = h.header {
            if hh.regex_rewrite.is_some() {
                return fail(
                    hp.key("header").key("regex_rewrite"),
                    "regex_rewrite is not supported: not yet implemented in skiff",
                );
            }
            if hh.header_name.is_empty() {
                return fail(hp.key("header").key("header_name"), "header_name must not be empty");
            }
            HashMethod::Header(hh.header_name.to_ascii_lowercase())
        } else if let Some(c) = h.cookie {
            let cp = hp.key("cookie");
            if c.name.is_empty() {
                return fail(cp.key("name"), "name must not be empty");
            }
            // They are written into a response header.
            let text_ok = |t: &str| !t.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0));
            if !text_ok(&c.name) {
                return fail(cp.key("name"), "name must not contain CR, LF or NUL");
            }
            if !c.path.as_deref().is_none_or(text_ok) {
                return fail(cp.key("path"), "path must not contain CR, LF or NUL");
            }
            let mut attributes = Vec::new();
            for (k, a) in c.attributes.unwrap_or_default().into_iter().enumerate() {
                let ap = cp.key("attributes").idx(k);
                if a.name.is_empty() {
                    return fail(ap.key("name"), "name must not be empty");
                }
                let value = a.value.unwrap_or_default();
                if !text_ok(&a.name) || !text_ok(&value) {
                    return fail(ap, "a cookie attribute must not contain CR, LF or NUL");
                }
                attributes.push((a.name, value));
            }
            // Envoy uses `path` and `attributes` only when it generates the cookie (with `ttl`).
            let generate = c.ttl.map(|ttl| {
                Box::new(CookieGen { max_age: ttl.0.as_secs(), path: c.path.unwrap_or_default(), attributes })
            });
            HashMethod::Cookie(HashCookie { name: c.name, generate })
        } else if let Some(c) = h.connection_properties {
            if c.source_ip != Some(true) {
                return fail(hp.key("connection_properties").key("source_ip"), "source_ip must be true");
            }
            HashMethod::SourceIp
        } else if let Some(q) = h.query_parameter {
            if q.name.is_empty() {
                return fail(hp.key("query_parameter").key("name"), "name must not be empty");
            }
            HashMethod::QueryParameter(q.name)
        } else {
            return fail(hp, "empty hash_policy entry");
        };
        out.push(HashPolicy { method, terminal: h.terminal.unwrap_or(false) });
    }
    Ok(out)
}
