//! `envoy.filters.http.jwt_authn`'s config (`JwtAuthentication`) and its per-route
//! `PerRouteConfig`: their serde shape, read from the `typed_config` mapping `raw` keeps, and their
//! conversion to `model`'s `JwtAuthn` with Envoy's defaults. The JWKS is read here (`jwks::parse`), so a bad one
//! is a located load error, as Envoy 1.40 refuses it. Fields asking for dynamic metadata are
//! returned for `convert` to warn about; the rest is enforced or refused here with its path.

// Fields accepted and never read exist so that `deny_unknown_fields` accepts them.
#![allow(dead_code)]

use super::error::FieldPath;
use super::fields::{fail, no_crlf, read, route_match, Res};
use super::model::{JwtAuthn, JwtPerRoute, JwtProvider, JwtRequirement, JwtRule};
use super::raw::{Ign, RawDataSource, RawMatch};
use serde::Deserialize;
use std::collections::BTreeMap;

pub(super) const NAME: &str = "envoy.filters.http.jwt_authn";
pub(super) const TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication";
pub(super) const PER_ROUTE_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig";

/// Why `remote_jwks` is refused.
const NO_REMOTE_JWKS: &str = "remote_jwks is not supported: fetching a JWKS needs an HTTP client on \
     skiff's control thread, which it does not have yet; give the keys in local_jwks (inline_string or filename)";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwtAuthn {
    providers: Option<BTreeMap<String, RawProvider>>,
    rules: Option<Vec<RawRule>>,
    requirement_map: Option<BTreeMap<String, RawRequirement>>,
    bypass_cors_preflight: Option<bool>,
    strip_failure_response: Option<bool>,
    filter_state_rules: Ign,
    stat_prefix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    issuer: Option<String>,
    audiences: Option<Vec<String>>,
    subjects: Ign,
    require_expiration: Option<bool>,
    max_lifetime: Ign,
    remote_jwks: Ign,
    local_jwks: Option<RawDataSource>,
    forward: Option<bool>,
    from_headers: Option<Vec<RawJwtHeader>>,
    from_params: Option<Vec<String>>,
    from_cookies: Option<Vec<String>>,
    forward_payload_header: Option<String>,
    pad_forward_payload_header: Option<bool>,
    payload_in_metadata: Option<String>,
    normalize_payload_in_metadata: Ign,
    header_in_metadata: Option<String>,
    failed_status_in_metadata: Option<String>,
    clock_skew_seconds: Option<u64>,
    jwt_cache_config: Ign,
    claim_to_headers: Option<Vec<RawClaimToHeader>>,
    clear_route_cache: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwtHeader {
    name: String,
    value_prefix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClaimToHeader {
    header_name: String,
    claim_name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(rename = "match")]
    matcher: RawMatch,
    requires: Option<RawRequirement>,
    requirement_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequirement {
    provider_name: Option<String>,
    provider_and_audiences: Option<RawProviderAndAudiences>,
    requires_any: Option<RawRequirementList>,
    requires_all: Option<RawRequirementList>,
    allow_missing_or_failed: Ign,
    allow_missing: Ign,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProviderAndAudiences {
    provider_name: String,
    audiences: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequirementList {
    requirements: Option<Vec<RawRequirement>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPerRoute {
    disabled: Option<bool>,
    requirement_name: Option<String>,
}

/// The filter's `typed_config` at `p`; `fields` is the mapping as written.
pub(super) fn jwt_authn(p: &FieldPath, fields: serde_norway::Value) -> Res<JwtAuthn> {
    let mut source = serde_json::to_value(&fields).unwrap_or_default();
    if let Some(map) = source.as_object_mut() {
        map.insert("@type".to_string(), TYPE.into());
    }
    let r: RawJwtAuthn = read(p, fields)?;
    if r.filter_state_rules.is_some() {
        return fail(
            p.key("filter_state_rules"),
            "filter_state_rules is not supported: skiff has no filter state",
        );
    }
    if r.stat_prefix.as_deref().is_some_and(|s| !s.is_empty()) {
        return fail(
            p.key("stat_prefix"),
            "stat_prefix is not supported: the stats are http.<prefix>.jwt_authn.*",
        );
    }
    let mut metadata_fields = Vec::new();
    let mut providers = Vec::new();
    let pp = p.key("providers");
    for (name, raw) in r.providers.unwrap_or_default() {
        let at = pp.key(&name);
        for (field, set) in [
            ("payload_in_metadata", raw.payload_in_metadata.as_deref().is_some_and(|s| !s.is_empty())),
            ("header_in_metadata", raw.header_in_metadata.as_deref().is_some_and(|s| !s.is_empty())),
            (
                "failed_status_in_metadata",
                raw.failed_status_in_metadata.as_deref().is_some_and(|s| !s.is_empty()),
            ),
            ("normalize_payload_in_metadata", raw.normalize_payload_in_metadata.is_some()),
            ("jwt_cache_config", raw.jwt_cache_config.is_some()),
        ] {
            if set {
                metadata_fields.push((name.clone(), field));
            }
        }
        providers.push((name.clone(), provider(&at, &name, raw)?));
    }
    let known = |path: FieldPath, name: &str| -> Res<()> {
        if providers.iter().any(|(n, _)| n == name) {
            Ok(())
        } else {
            fail(path, format!("Required provider ['{name}'] is not configured."))
        }
    };
    let mut requirement_map = Vec::new();
    let mp = p.key("requirement_map");
    for (name, raw) in r.requirement_map.unwrap_or_default() {
        requirement_map.push((name.clone(), requirement(&mp.key(&name), raw, &known)?));
    }
    let mut rules = Vec::new();
    let rp = p.key("rules");
    for (i, rule) in r.rules.unwrap_or_default().into_iter().enumerate() {
        let at = rp.idx(i);
        let matcher = route_match(at.key("match"), rule.matcher)?;
        if matcher.grpc {
            // Envoy's JWT rules match on path, headers and query only.
            return fail(at.key("match").key("grpc"), "grpc is not supported in jwt_authn rules");
        }
        let requires = match (rule.requires, rule.requirement_name) {
            (Some(_), Some(_)) => return fail(at, "give either requires or requirement_name, not both"),
            (Some(req), None) => Some(requirement(&at.key("requires"), req, &known)?),
            (None, Some(name)) => match requirement_map.iter().find(|(n, _)| *n == name) {
                Some((_, req)) => Some(req.clone()),
                None => {
                    return fail(
                        at.key("requirement_name"),
                        format!(
                            "Wrong requirement_name: {name}. It should be one of [{}]",
                            names(&requirement_map)
                        ),
                    )
                }
            },
            (None, None) => None,
        };
        rules.push(JwtRule { matcher, requires });
    }
    Ok(JwtAuthn {
        providers,
        rules,
        requirement_map,
        bypass_cors_preflight: r.bypass_cors_preflight.unwrap_or(false),
        strip_failure_response: r.strip_failure_response.unwrap_or(false),
        metadata_fields,
        source,
    })
}

/// `requirement_map`'s names as Envoy lists them in its 403 for an unknown one.
pub fn names(map: &[(String, JwtRequirement)]) -> String {
    map.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(",")
}

/// A `PerRouteConfig` at `p`.
pub(super) fn per_route(p: &FieldPath, fields: serde_norway::Value) -> Res<JwtPerRoute> {
    let r: RawPerRoute = read(p, fields)?;
    match (r.disabled, r.requirement_name) {
        (Some(true), None) => Ok(JwtPerRoute::Disabled),
        (None | Some(false), Some(name)) if !name.is_empty() => Ok(JwtPerRoute::Requirement(name)),
        _ => fail(p.clone(), "PerRouteConfig needs exactly one of disabled: true or requirement_name"),
    }
}

fn provider(p: &FieldPath, name: &str, r: RawProvider) -> Res<JwtProvider> {
    if r.remote_jwks.is_some() {
        return fail(p.key("remote_jwks"), NO_REMOTE_JWKS);
    }
    let refused = [
        ("subjects", r.subjects.is_some()),
        ("require_expiration", r.require_expiration == Some(true)),
        ("max_lifetime", r.max_lifetime.is_some()),
        ("clear_route_cache", r.clear_route_cache == Some(true)),
    ];
    if let Some((field, _)) = refused.iter().find(|(_, set)| *set) {
        return fail(p.key(field), format!("{field} is not supported: not yet implemented in skiff"));
    }
    let jp = p.key("local_jwks");
    let Some(source) = r.local_jwks else {
        return fail(p.clone(), "a provider needs local_jwks (remote_jwks is not supported)");
    };
    if source.inline_bytes.is_some() || source.environment_variable.is_some() {
        return fail(jp, "only local_jwks.inline_string and local_jwks.filename are supported");
    }
    let jwks = match (source.inline_string, source.filename) {
        (Some(s), None) => s,
        (None, Some(f)) => match std::fs::read_to_string(&f) {
            Ok(s) => s,
            Err(e) => return fail(jp.key("filename"), format!("cannot read {f:?}: {e}")),
        },
        _ => return fail(jp, "local_jwks needs exactly one of inline_string or filename"),
    };
    if let Err(why) = super::jwks::parse(&jwks) {
        return fail(jp, format!("Provider '{name}' in jwt_authn config has invalid local jwks: {why}"));
    }
    let header = |at: FieldPath, name: &str| -> Res<String> {
        no_crlf(at.clone(), name)?;
        if name.is_empty() || name.bytes().any(|b| b == b':' || b.is_ascii_whitespace()) {
            return fail(at, format!("{name:?} is not a header name"));
        }
        Ok(name.to_ascii_lowercase())
    };
    let mut from_headers = Vec::new();
    for (i, h) in r.from_headers.unwrap_or_default().into_iter().enumerate() {
        from_headers.push((
            header(p.key("from_headers").idx(i).key("name"), &h.name)?,
            h.value_prefix.unwrap_or_default(),
        ));
    }
    let mut claim_to_headers = Vec::new();
    for (i, c) in r.claim_to_headers.unwrap_or_default().into_iter().enumerate() {
        let at = p.key("claim_to_headers").idx(i);
        if c.claim_name.is_empty() {
            return fail(at.key("claim_name"), "claim_name must not be empty");
        }
        claim_to_headers.push((header(at.key("header_name"), &c.header_name)?, c.claim_name));
    }
    let forward_payload_header = match r.forward_payload_header.filter(|h| !h.is_empty()) {
        Some(h) => Some(header(p.key("forward_payload_header"), &h)?),
        None => None,
    };
    Ok(JwtProvider {
        issuer: r.issuer.unwrap_or_default(),
        audiences: r.audiences.unwrap_or_default(),
        jwks,
        from_headers,
        from_params: r.from_params.unwrap_or_default(),
        from_cookies: r.from_cookies.unwrap_or_default(),
        forward: r.forward.unwrap_or(false),
        forward_payload_header,
        pad_forward_payload_header: r.pad_forward_payload_header.unwrap_or(false),
        claim_to_headers,
        clock_skew_seconds: r.clock_skew_seconds.filter(|s| *s > 0).unwrap_or(60),
    })
}

fn requirement(
    p: &FieldPath,
    r: RawRequirement,
    known: &dyn Fn(FieldPath, &str) -> Res<()>,
) -> Res<JwtRequirement> {
    let set = [
        r.provider_name.is_some(),
        r.provider_and_audiences.is_some(),
        r.requires_any.is_some(),
        r.requires_all.is_some(),
        r.allow_missing_or_failed.is_some(),
        r.allow_missing.is_some(),
    ];
    if set.iter().filter(|s| **s).count() > 1 {
        return fail(p.clone(), "a requirement takes only one of provider_name, provider_and_audiences, requires_any, requires_all, allow_missing_or_failed, allow_missing");
    }
    let list = |at: FieldPath, l: RawRequirementList| -> Res<Vec<JwtRequirement>> {
        let items = l.requirements.unwrap_or_default();
        if items.len() < 2 {
            return fail(at.key("requirements"), "needs at least 2 requirements");
        }
        items
            .into_iter()
            .enumerate()
            .map(|(i, r)| requirement(&at.key("requirements").idx(i), r, known))
            .collect()
    };
    Ok(if let Some(name) = r.provider_name {
        known(p.key("provider_name"), &name)?;
        JwtRequirement::Provider { name, audiences: None }
    } else if let Some(pa) = r.provider_and_audiences {
        known(p.key("provider_and_audiences").key("provider_name"), &pa.provider_name)?;
        JwtRequirement::Provider { name: pa.provider_name, audiences: Some(pa.audiences.unwrap_or_default()) }
    } else if let Some(any) = r.requires_any {
        JwtRequirement::Any(list(p.key("requires_any"), any)?)
    } else if let Some(all) = r.requires_all {
        JwtRequirement::All(list(p.key("requires_all"), all)?)
    } else if r.allow_missing_or_failed.is_some() {
        JwtRequirement::AllowMissingOrFailed
    } else if r.allow_missing.is_some() {
        JwtRequirement::AllowMissing
    } else {
        JwtRequirement::AllowAll
    })
}
