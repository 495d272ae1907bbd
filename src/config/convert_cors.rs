//! The configs of the CORS and CSRF filters: `envoy.filters.http.cors` (its empty `Cors`
//! message, its per-route `CorsPolicy`, and the route's / virtual host's `cors` field, which has
//! the same fields) and `envoy.filters.http.csrf` (`CsrfPolicy`, as the filter's config and per
//! route), read from the kept mappings and converted to `model` with Envoy's defaults. Every
//! field is enforced or refused here with its path. Which filters exist and where they sit is
//! `convert`'s; the filters' `Kind` is `convert_filters`', which calls these.

use super::error::FieldPath;
use super::fields::{check_regex, fail, fraction, no_crlf, read, RawRuntimeFraction, Res};
use super::model::{CorsPolicy, Csrf, Fraction, StringMatcher, StringRule};
use super::raw::RawStringMatcher;
use serde::Deserialize;

pub(super) const CORS_NAME: &str = "envoy.filters.http.cors";
pub(super) const CORS_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors";
pub(super) const CORS_POLICY_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy";
pub(super) const CSRF_NAME: &str = "envoy.filters.http.csrf";
pub(super) const CSRF_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.csrf.v3.CsrfPolicy";

/// `envoy.extensions.filters.http.cors.v3.Cors`: no fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCors {}

/// The CORS filter's own config: only checks that it is the empty message.
pub(super) fn cors_filter(p: &FieldPath, fields: serde_norway::Mapping) -> Res<()> {
    let _: RawCors = read(p, fields)?;
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCorsPolicy {
    allow_origin_string_match: Option<Vec<RawStringMatcher>>,
    allow_methods: Option<String>,
    allow_headers: Option<String>,
    expose_headers: Option<String>,
    max_age: Option<String>,
    allow_credentials: Option<bool>,
    allow_private_network_access: Option<bool>,
    forward_not_matching_preflights: Option<bool>,
    filter_enabled: Option<RawRuntimeFraction>,
    shadow_enabled: Option<RawRuntimeFraction>,
}

/// A CORS policy at `p`: a per-route `CorsPolicy` or a route's / virtual host's `cors`.
pub(super) fn cors_policy(p: &FieldPath, value: impl Into<serde_norway::Value>) -> Res<CorsPolicy> {
    let r: RawCorsPolicy = read(p, value)?;
    // These go onto the wire as header values.
    let text = |field: &str, v: Option<String>| -> Res<String> {
        let v = v.unwrap_or_default();
        no_crlf(p.key(field), &v)?;
        Ok(v)
    };
    let runtime = |field: &str, f: Option<RawRuntimeFraction>| -> Res<Option<Fraction>> {
        f.map(|f| fraction(p.key(field).key("default_value"), f.default_value)).transpose()
    };
    Ok(CorsPolicy {
        allow_origins: matchers(&p.key("allow_origin_string_match"), r.allow_origin_string_match)?,
        allow_methods: text("allow_methods", r.allow_methods)?,
        allow_headers: text("allow_headers", r.allow_headers)?,
        expose_headers: text("expose_headers", r.expose_headers)?,
        max_age: text("max_age", r.max_age)?,
        allow_credentials: r.allow_credentials,
        allow_private_network_access: r.allow_private_network_access,
        forward_not_matching_preflights: r.forward_not_matching_preflights,
        filter_enabled: runtime("filter_enabled", r.filter_enabled)?,
        shadow_enabled: runtime("shadow_enabled", r.shadow_enabled)?,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCsrf {
    filter_enabled: Option<RawRuntimeFraction>,
    shadow_enabled: Option<RawRuntimeFraction>,
    additional_origins: Option<Vec<RawStringMatcher>>,
}

/// `CsrfPolicy` at `p`, as the filter's config or a per-route one.
pub(super) fn csrf(p: &FieldPath, fields: serde_norway::Mapping) -> Res<Csrf> {
    let r: RawCsrf = read(p, fields)?;
    let Some(enabled) = r.filter_enabled else {
        // Envoy's proto requires it.
        return fail(p.key("filter_enabled"), "filter_enabled is required");
    };
    let shadow = r.shadow_enabled.and_then(|s| s.default_value);
    Ok(Csrf {
        filter_enabled: fraction(p.key("filter_enabled").key("default_value"), enabled.default_value)?,
        shadow_enabled: fraction(p.key("shadow_enabled").key("default_value"), shadow)?,
        additional_origins: matchers(&p.key("additional_origins"), r.additional_origins)?,
    })
}

pub(super) fn matchers(p: &FieldPath, list: Option<Vec<RawStringMatcher>>) -> Res<Vec<StringMatcher>> {
    let list = list.unwrap_or_default();
    list.into_iter().enumerate().map(|(i, m)| string_matcher(p.idx(i), m)).collect()
}

fn string_matcher(p: FieldPath, m: RawStringMatcher) -> Res<StringMatcher> {
    let mut rules = Vec::new();
    rules.extend(m.exact.map(StringRule::Exact));
    rules.extend(m.prefix.map(StringRule::Prefix));
    rules.extend(m.suffix.map(StringRule::Suffix));
    rules.extend(m.contains.map(StringRule::Contains));
    if let Some(re) = m.safe_regex {
        rules.push(StringRule::SafeRegex(check_regex(p.key("safe_regex").key("regex"), &re.regex)?));
    }
    if rules.len() != 1 {
        return fail(p, "a string matcher takes exactly one of exact, prefix, suffix, contains, safe_regex");
    }
    let rule = rules.remove(0);
    if matches!(&rule, StringRule::Prefix(s) | StringRule::Suffix(s) | StringRule::Contains(s) if s.is_empty())
    {
        // Envoy's proto: prefix, suffix and contains must not be empty.
        return fail(p, "prefix, suffix and contains must not be empty");
    }
    Ok(StringMatcher { rule, ignore_case: m.ignore_case.unwrap_or(false) })
}
