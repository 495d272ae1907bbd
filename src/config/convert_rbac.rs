//! The typed config of `envoy.filters.http.rbac` (`RBAC` at the connection manager, `RBACPerRoute`
//! on routes and virtual hosts): its serde shape and its conversion to `model::Rbac`. Every field is
//! enforced or refused here with its path (`matcher` and `shadow_matcher` in
//! `convert_rbac_matcher`); CEL `condition`s, metadata, filter state and URI templates are
//! refused, as skiff has none of them.

// Fields accepted only so that they can be refused by name.
#![allow(dead_code)]

use super::convert_rbac_matcher::{matcher, rbac_action};
use super::error::FieldPath;
use super::fields::{fail, header_matcher, read, string_match, Res};
use super::model::{
    CidrRange, NetRbac, Rbac, RbacPermission, RbacPolicy, RbacPrincipal, RbacRules, StringMatcher,
};
use super::raw::{Ign, RawHeaderMatcher, RawStringMatcher};
use serde::Deserialize;
use std::collections::BTreeMap;

pub(super) const RBAC_NAME: &str = "envoy.filters.http.rbac";
pub(super) const RBAC_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";
pub(super) const RBAC_PER_ROUTE_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRbac {
    rules: Option<RawRules>,
    rules_stat_prefix: Option<String>,
    matcher: Option<serde_norway::Value>,
    shadow_rules: Option<RawRules>,
    shadow_rules_stat_prefix: Option<String>,
    shadow_matcher: Option<serde_norway::Value>,
    track_per_rule_stats: Option<bool>,
}

/// `envoy.extensions.filters.network.rbac.v3.RBAC`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetRbac {
    #[serde(rename = "@type")]
    type_url: Option<String>,
    rules: Option<RawRules>,
    matcher: Ign,
    shadow_rules: Option<RawRules>,
    shadow_matcher: Ign,
    shadow_rules_stat_prefix: Option<String>,
    stat_prefix: Option<String>,
    enforcement_type: Option<String>,
    delay_deny: Ign,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRbacPerRoute {
    rbac: Option<serde_norway::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    action: Option<String>,
    policies: Option<BTreeMap<String, RawPolicy>>,
    audit_logging_options: Ign,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    permissions: Option<Vec<RawPermission>>,
    principals: Option<Vec<RawPrincipal>>,
    condition: Ign,
    checked_condition: Ign,
    cel_config: Ign,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPermission {
    any: Option<bool>,
    header: Option<RawHeaderMatcher>,
    url_path: Option<RawPathMatcher>,
    and_rules: Option<RawPermissionSet>,
    or_rules: Option<RawPermissionSet>,
    not_rule: Option<Box<RawPermission>>,
    destination_ip: Option<RawCidr>,
    destination_port: Option<u32>,
    destination_port_range: Option<RawRange>,
    requested_server_name: Option<RawStringMatcher>,
    metadata: Ign,
    sourced_metadata: Ign,
    matcher: Ign,
    uri_template: Ign,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPermissionSet {
    rules: Option<Vec<RawPermission>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrincipal {
    any: Option<bool>,
    authenticated: Option<RawAuthenticated>,
    source_ip: Option<RawCidr>,
    direct_remote_ip: Option<RawCidr>,
    remote_ip: Option<RawCidr>,
    header: Option<RawHeaderMatcher>,
    url_path: Option<RawPathMatcher>,
    and_ids: Option<RawPrincipalSet>,
    or_ids: Option<RawPrincipalSet>,
    not_id: Option<Box<RawPrincipal>>,
    metadata: Ign,
    sourced_metadata: Ign,
    filter_state: Ign,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrincipalSet {
    ids: Option<Vec<RawPrincipal>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthenticated {
    principal_name: Option<RawStringMatcher>,
}

/// `type.matcher.v3.PathMatcher`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPathMatcher {
    path: Option<RawStringMatcher>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCidr {
    address_prefix: String,
    prefix_len: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRange {
    start: Option<i64>,
    end: Option<i64>,
}

/// `RBAC` (the connection manager's filter) from its `typed_config` fields at `p`.
pub(super) fn rbac(p: &FieldPath, fields: serde_norway::Value) -> Res<Rbac> {
    let r: RawRbac = read(p, fields)?;
    if r.track_per_rule_stats == Some(true) {
        return fail(p.key("track_per_rule_stats"), "track_per_rule_stats is not supported");
    }
    Ok(Rbac {
        rules: r.rules.map(|x| rules(&p.key("rules"), x)).transpose()?,
        shadow_rules: r.shadow_rules.map(|x| rules(&p.key("shadow_rules"), x)).transpose()?,
        rules_stat_prefix: r.rules_stat_prefix.unwrap_or_default(),
        shadow_rules_stat_prefix: r.shadow_rules_stat_prefix.unwrap_or_default(),
        matcher: r.matcher.map(|m| matcher(&p.key("matcher"), m)).transpose()?,
        shadow_matcher: r.shadow_matcher.map(|m| matcher(&p.key("shadow_matcher"), m)).transpose()?,
    })
}

/// The network filter's config at `p`. Envoy 1.40 refuses a `header` rule anywhere in it (there
/// is no request at the network level); so does skiff, at the policy. A `url_path` rule Envoy
/// accepts and never matches there; so does skiff (`rbac` matches it only on a request).
pub(super) fn net_rbac(p: &FieldPath, fields: serde_norway::Value) -> Res<NetRbac> {
    let r: RawNetRbac = read(p, fields)?;
    if let Some(url) = r.type_url.as_deref().filter(|u| *u != super::raw::NET_RBAC_TYPE) {
        return fail(
            p.key("@type"),
            format!("expected \"@type\" {}, got \"{url}\"", super::raw::NET_RBAC_TYPE),
        );
    }
    for (field, given) in [("matcher", &r.matcher), ("shadow_matcher", &r.shadow_matcher)] {
        if given.is_some() {
            let rules = field.replace("matcher", "rules");
            return fail(p.key(field), format!("{field} is not supported: write the policies in {rules}"));
        }
    }
    if r.delay_deny.is_some() {
        return fail(
            p.key("delay_deny"),
            "delay_deny is not supported: a denied connection is closed at once",
        );
    }
    // CONTINUOUS re-evaluates on every read; the facts skiff's rules see (addresses, SNI, peer
    // certificate) do not change on a connection, so it would only recount the same answer.
    match r.enforcement_type.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("ONE_TIME_ON_FIRST_BYTE") => {}
        Some("CONTINUOUS") => {
            return fail(
                p.key("enforcement_type"),
                "enforcement_type CONTINUOUS is not supported: skiff decides once, on the first byte \
                 (ONE_TIME_ON_FIRST_BYTE)",
            )
        }
        Some(other) => {
            return fail(
                p.key("enforcement_type"),
                format!(
                    "unknown enforcement_type \"{other}\", expected ONE_TIME_ON_FIRST_BYTE or CONTINUOUS"
                ),
            )
        }
    }
    // Envoy's scope joins the prefix with a dot of its own: `x.` and `x` both count `x.rbac.*`.
    let stat_prefix = match r.stat_prefix.as_deref().map(|s| s.strip_suffix('.').unwrap_or(s)) {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => return fail(p.key("stat_prefix"), "stat_prefix is required"),
    };
    let mut out = NetRbac {
        stat_prefix,
        rules: None,
        shadow_rules: None,
        shadow_rules_stat_prefix: r.shadow_rules_stat_prefix.unwrap_or_default(),
    };
    for (field, raw, slot) in
        [("rules", r.rules, &mut out.rules), ("shadow_rules", r.shadow_rules, &mut out.shadow_rules)]
    {
        let Some(raw) = raw else { continue };
        let rp = p.key(field);
        let converted = rules(&rp, raw)?;
        for policy in &converted.policies {
            let pp = rp.key("policies").key(&policy.name);
            if let Some(kind) = policy.permissions.iter().find_map(http_only_permission) {
                return fail(pp.key("permissions"), net_http_rule(kind));
            }
            if let Some(kind) = policy.principals.iter().find_map(http_only_principal) {
                return fail(pp.key("principals"), net_http_rule(kind));
            }
        }
        *slot = Some(converted);
    }
    Ok(out)
}

fn net_http_rule(kind: &str) -> String {
    format!("a {kind} rule is not supported by the network RBAC filter (there is no request to match)")
}

/// The first rule (depth first) Envoy refuses at the network level.
fn http_only_permission(p: &RbacPermission) -> Option<&'static str> {
    match p {
        RbacPermission::Header(_) => Some("header"),
        RbacPermission::And(l) | RbacPermission::Or(l) => l.iter().find_map(http_only_permission),
        RbacPermission::Not(inner) => http_only_permission(inner),
        _ => None,
    }
}

fn http_only_principal(p: &RbacPrincipal) -> Option<&'static str> {
    match p {
        RbacPrincipal::Header(_) => Some("header"),
        RbacPrincipal::And(l) | RbacPrincipal::Or(l) => l.iter().find_map(http_only_principal),
        RbacPrincipal::Not(inner) => http_only_principal(inner),
        _ => None,
    }
}

/// `RBACPerRoute` at `p`: its `rbac` replaces the filter's rules for the route (absent or `{}`: no
/// rules at all, the filter does nothing there). Its stat prefixes are not read: Envoy counts a
/// per-route config into the filter's stats.
pub(super) fn rbac_per_route(p: &FieldPath, fields: serde_norway::Value) -> Res<Rbac> {
    let r: RawRbacPerRoute = read(p, fields)?;
    let inner = p.key("rbac");
    let mut config = match r.rbac {
        Some(v) => rbac(&inner, v)?,
        None => Rbac {
            rules: None,
            shadow_rules: None,
            rules_stat_prefix: String::new(),
            shadow_rules_stat_prefix: String::new(),
            matcher: None,
            shadow_matcher: None,
        },
    };
    config.rules_stat_prefix.clear();
    config.shadow_rules_stat_prefix.clear();
    Ok(config)
}

fn rules(p: &FieldPath, r: RawRules) -> Res<RbacRules> {
    if r.audit_logging_options.is_some() {
        return fail(p.key("audit_logging_options"), "audit_logging_options is not supported");
    }
    let action = rbac_action(&p.key("action"), r.action.as_deref())?;
    let pp = p.key("policies");
    let mut policies = Vec::new();
    // A BTreeMap: sorted by name, the order Envoy's engine tries them in.
    for (name, raw) in r.policies.unwrap_or_default() {
        let p = pp.key(&name);
        if raw.condition.is_some() || raw.checked_condition.is_some() || raw.cel_config.is_some() {
            let field = if raw.condition.is_some() {
                "condition"
            } else if raw.checked_condition.is_some() {
                "checked_condition"
            } else {
                "cel_config"
            };
            return fail(p.key(field), format!("{field} is not supported: skiff has no CEL"));
        }
        let perms = raw.permissions.unwrap_or_default();
        if perms.is_empty() {
            return fail(p.key("permissions"), "a policy needs at least one permission");
        }
        let ids = raw.principals.unwrap_or_default();
        if ids.is_empty() {
            return fail(p.key("principals"), "a policy needs at least one principal");
        }
        let permissions = perms
            .into_iter()
            .enumerate()
            .map(|(i, x)| permission(&p.key("permissions").idx(i), x))
            .collect::<Res<_>>()?;
        let principals = ids
            .into_iter()
            .enumerate()
            .map(|(i, x)| principal(&p.key("principals").idx(i), x))
            .collect::<Res<_>>()?;
        policies.push(RbacPolicy { name, permissions, principals });
    }
    Ok(RbacRules { action, policies })
}

/// The one rule a `Permission` or `Principal` oneof holds: fails unless exactly one is set.
fn one_of<T>(p: &FieldPath, what: &str, mut set: Vec<(&str, Option<Res<T>>)>) -> Res<T> {
    set.retain(|(_, v)| v.is_some());
    match set.len() {
        1 => set
            .pop()
            .and_then(|(_, v)| v)
            .unwrap_or_else(|| fail(p.clone(), format!("a {what} needs a rule"))),
        0 => fail(p.clone(), format!("a {what} needs one rule")),
        _ => fail(p.clone(), format!("a {what} takes only one rule, got {}", names(&set))),
    }
}

fn names<T>(set: &[(&str, Option<T>)]) -> String {
    set.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

fn any(p: &FieldPath, v: bool) -> Res<()> {
    if v {
        Ok(())
    } else {
        fail(p.key("any"), "any must be true")
    }
}

fn refuse<T>(p: &FieldPath, field: &str, why: &str) -> Option<Res<T>> {
    Some(fail(p.key(field), format!("{field} is not supported: {why}")))
}

fn permission(p: &FieldPath, r: RawPermission) -> Res<RbacPermission> {
    use RbacPermission as P;
    let set = |field: &str, s: RawPermissionSet| -> Res<Vec<RbacPermission>> {
        let sp = p.key(field).key("rules");
        s.rules.unwrap_or_default().into_iter().enumerate().map(|(i, x)| permission(&sp.idx(i), x)).collect()
    };
    one_of(
        p,
        "permission",
        vec![
            ("any", r.any.map(|v| any(p, v).map(|_| P::Any))),
            ("header", r.header.map(|h| header_matcher(p.key("header"), h).map(P::Header))),
            ("url_path", r.url_path.map(|u| path(&p.key("url_path"), u).map(P::UrlPath))),
            ("and_rules", r.and_rules.map(|s| set("and_rules", s).map(P::And))),
            ("or_rules", r.or_rules.map(|s| set("or_rules", s).map(P::Or))),
            ("not_rule", r.not_rule.map(|n| permission(&p.key("not_rule"), *n).map(|x| P::Not(Box::new(x))))),
            (
                "destination_ip",
                r.destination_ip.map(|c| cidr(&p.key("destination_ip"), c).map(P::DestinationIp)),
            ),
            ("destination_port", r.destination_port.map(|n| port(&p.key("destination_port"), n))),
            (
                "destination_port_range",
                r.destination_port_range.map(|r| range(&p.key("destination_port_range"), r)),
            ),
            (
                "requested_server_name",
                r.requested_server_name
                    .map(|s| string_match(&p.key("requested_server_name"), s).map(P::RequestedServerName)),
            ),
            ("metadata", r.metadata.and_then(|_| refuse(p, "metadata", "skiff has no dynamic metadata"))),
            (
                "sourced_metadata",
                r.sourced_metadata.and_then(|_| refuse(p, "sourced_metadata", "skiff has no metadata")),
            ),
            ("matcher", r.matcher.and_then(|_| refuse(p, "matcher", "no matcher extension exists in skiff"))),
            ("uri_template", r.uri_template.and_then(|_| refuse(p, "uri_template", "write it as url_path"))),
        ],
    )
}

fn principal(p: &FieldPath, r: RawPrincipal) -> Res<RbacPrincipal> {
    use RbacPrincipal as P;
    let set = |field: &str, s: RawPrincipalSet| -> Res<Vec<RbacPrincipal>> {
        let sp = p.key(field).key("ids");
        s.ids.unwrap_or_default().into_iter().enumerate().map(|(i, x)| principal(&sp.idx(i), x)).collect()
    };
    let authenticated = |a: RawAuthenticated| -> Res<RbacPrincipal> {
        let name = a.principal_name.map(|s| string_match(&p.key("authenticated").key("principal_name"), s));
        Ok(P::Authenticated(name.transpose()?))
    };
    one_of(
        p,
        "principal",
        vec![
            ("any", r.any.map(|v| any(p, v).map(|_| P::Any))),
            ("authenticated", r.authenticated.map(authenticated)),
            ("source_ip", r.source_ip.map(|c| cidr(&p.key("source_ip"), c).map(P::SourceIp))),
            (
                "direct_remote_ip",
                r.direct_remote_ip.map(|c| cidr(&p.key("direct_remote_ip"), c).map(P::DirectRemoteIp)),
            ),
            ("remote_ip", r.remote_ip.map(|c| cidr(&p.key("remote_ip"), c).map(P::RemoteIp))),
            ("header", r.header.map(|h| header_matcher(p.key("header"), h).map(P::Header))),
            ("url_path", r.url_path.map(|u| path(&p.key("url_path"), u).map(P::UrlPath))),
            ("and_ids", r.and_ids.map(|s| set("and_ids", s).map(P::And))),
            ("or_ids", r.or_ids.map(|s| set("or_ids", s).map(P::Or))),
            ("not_id", r.not_id.map(|n| principal(&p.key("not_id"), *n).map(|x| P::Not(Box::new(x))))),
            ("metadata", r.metadata.and_then(|_| refuse(p, "metadata", "skiff has no dynamic metadata"))),
            (
                "sourced_metadata",
                r.sourced_metadata.and_then(|_| refuse(p, "sourced_metadata", "skiff has no metadata")),
            ),
            (
                "filter_state",
                r.filter_state.and_then(|_| refuse(p, "filter_state", "skiff has no filter state")),
            ),
        ],
    )
}

fn path(p: &FieldPath, r: RawPathMatcher) -> Res<StringMatcher> {
    match r.path {
        Some(s) => string_match(&p.key("path"), s),
        None => fail(p.key("path"), "url_path needs path"),
    }
}

fn port(p: &FieldPath, n: u32) -> Res<RbacPermission> {
    match u16::try_from(n) {
        Ok(port) => Ok(RbacPermission::DestinationPort(port)),
        Err(_) => fail(p.clone(), format!("destination_port must be at most 65535, got {n}")),
    }
}

fn range(p: &FieldPath, r: RawRange) -> Res<RbacPermission> {
    let (start, end) = (r.start.unwrap_or(0), r.end.unwrap_or(0));
    if !(0..=65536).contains(&start) || !(0..=65536).contains(&end) {
        return fail(p.clone(), format!("a port range must be within 0-65536, got {start}-{end}"));
    }
    if start >= end {
        return fail(
            p.clone(),
            format!("range start {start} cannot be greater or equal than range end {end}"),
        );
    }
    Ok(RbacPermission::DestinationPortRange(start as u32, end as u32))
}

fn cidr(p: &FieldPath, r: RawCidr) -> Res<CidrRange> {
    let Ok(address) = r.address_prefix.parse::<std::net::IpAddr>() else {
        return fail(p.key("address_prefix"), format!("\"{}\" is not an IP address", r.address_prefix));
    };
    let max = if address.is_ipv4() { 32 } else { 128 };
    let len = r.prefix_len.unwrap_or(0);
    if len > max {
        return fail(p.key("prefix_len"), format!("prefix_len must be at most {max}, got {len}"));
    }
    Ok(CidrRange { address, prefix_len: len as u8 })
}
