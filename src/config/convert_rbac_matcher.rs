//! RBAC's `matcher` / `shadow_matcher` (`xds.type.matcher.v3.Matcher`): the subset Envoy's RBAC
//! matcher engine evaluates that skiff builds (`matcher_list`, `on_no_match`, string predicates
//! over request headers and connection addresses, `envoy.config.rbac.v3.Action`), converted to
//! `model::RbacMatcher`. Everything else is refused with its path; the input or action named by
//! its `@type`. Owns no matching (that is `rbac::matcher`'s).

use super::error::FieldPath;
use super::fields::{fail, read, string_match, Res};
use super::model::{
    RbacAction, RbacFieldMatcher, RbacMatchAction, RbacMatchInput, RbacMatcher, RbacPredicate,
};
use super::raw::{Ign, RawStringMatcher};
use serde::Deserialize;

const HEADER_INPUT: &str = "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput";
const NETWORK_INPUTS: &str = "type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.";
const RBAC_ACTION: &str = "type.googleapis.com/envoy.config.rbac.v3.Action";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatcher {
    matcher_list: Option<RawMatcherList>,
    matcher_tree: Ign,
    on_no_match: Option<RawOnMatch>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMatcherList {
    matchers: Option<Vec<RawFieldMatcher>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFieldMatcher {
    predicate: Option<RawPredicate>,
    on_match: Option<RawOnMatch>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPredicate {
    single_predicate: Option<RawSingle>,
    or_matcher: Option<RawPredicateList>,
    and_matcher: Option<RawPredicateList>,
    not_matcher: Option<Box<RawPredicate>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPredicateList {
    predicate: Option<Vec<RawPredicate>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSingle {
    input: Option<RawExtension>,
    value_match: Option<RawStringMatcher>,
    custom_match: Ign,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOnMatch {
    action: Option<RawExtension>,
    matcher: Ign,
    keep_matching: Option<bool>,
}

/// `config.core.v3.TypedExtensionConfig`: the name is free text, `typed_config` decides.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExtension {
    #[allow(dead_code)]
    name: Option<String>,
    typed_config: Option<serde_norway::Mapping>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeaderInput {
    header_name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    name: Option<String>,
    action: Option<String>,
}

/// A `matcher` or `shadow_matcher` at `p`.
pub(super) fn matcher(p: &FieldPath, fields: serde_norway::Value) -> Res<RbacMatcher> {
    let source = serde_json::to_value(&fields).unwrap_or_default();
    let r: RawMatcher = read(p, fields)?;
    if r.matcher_tree.is_some() {
        return fail(p.key("matcher_tree"), "matcher_tree is not supported: write it as a matcher_list");
    }
    let Some(list) = r.matcher_list else {
        return fail(p.key("matcher_list"), "a matcher needs a matcher_list (matcher_tree is not supported)");
    };
    let lp = p.key("matcher_list").key("matchers");
    let matchers = list
        .matchers
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let mp = lp.idx(i);
            let Some(predicate) = m.predicate else {
                return fail(mp.key("predicate"), "a matcher needs a predicate");
            };
            let Some(on_match) = m.on_match else {
                return fail(mp.key("on_match"), "a matcher needs on_match");
            };
            Ok(RbacFieldMatcher {
                predicate: self::predicate(&mp.key("predicate"), predicate)?,
                on_match: self::on_match(&mp.key("on_match"), on_match)?,
            })
        })
        .collect::<Res<Vec<_>>>()?;
    if matchers.is_empty() {
        return fail(lp, "a matcher_list needs at least one matcher");
    }
    let on_no_match = r.on_no_match.map(|m| on_match(&p.key("on_no_match"), m)).transpose()?;
    Ok(RbacMatcher { matchers, on_no_match, source })
}

fn predicate(p: &FieldPath, r: RawPredicate) -> Res<RbacPredicate> {
    let list = |field: &str, l: RawPredicateList| -> Res<Vec<RbacPredicate>> {
        let lp = p.key(field).key("predicate");
        let all = l.predicate.unwrap_or_default();
        if all.len() < 2 {
            return fail(lp, format!("{field} needs at least two predicates"));
        }
        all.into_iter().enumerate().map(|(i, x)| predicate(&lp.idx(i), x)).collect()
    };
    let set = [
        r.single_predicate.is_some(),
        r.or_matcher.is_some(),
        r.and_matcher.is_some(),
        r.not_matcher.is_some(),
    ];
    match set.iter().filter(|x| **x).count() {
        1 => {}
        0 => {
            return fail(
                p.clone(),
                "a predicate needs single_predicate, or_matcher, and_matcher or not_matcher",
            )
        }
        _ => {
            return fail(
                p.clone(),
                "a predicate takes only one of single_predicate, or_matcher, and_matcher, not_matcher",
            )
        }
    }
    if let Some(s) = r.single_predicate {
        return single(&p.key("single_predicate"), s);
    }
    if let Some(l) = r.or_matcher {
        return list("or_matcher", l).map(RbacPredicate::Or);
    }
    if let Some(l) = r.and_matcher {
        return list("and_matcher", l).map(RbacPredicate::And);
    }
    match r.not_matcher {
        Some(n) => predicate(&p.key("not_matcher"), *n).map(|x| RbacPredicate::Not(Box::new(x))),
        None => fail(p.clone(), "a predicate needs a rule"),
    }
}

fn single(p: &FieldPath, r: RawSingle) -> Res<RbacPredicate> {
    if r.custom_match.is_some() {
        return fail(p.key("custom_match"), "custom_match is not supported: write it as value_match");
    }
    let Some(input) = r.input else { return fail(p.key("input"), "a single_predicate needs an input") };
    let input = self::input(&p.key("input"), input)?;
    let Some(value) = r.value_match else {
        return fail(p.key("value_match"), "a single_predicate needs value_match");
    };
    // xds's RegexMatcher, unlike Envoy's own, requires its engine (Envoy refuses it without).
    if value.safe_regex.as_ref().is_some_and(|re| re.google_re2.is_none()) {
        return fail(p.key("value_match").key("safe_regex").key("google_re2"), "google_re2 is required here");
    }
    Ok(RbacPredicate::Single(input, string_match(&p.key("value_match"), value)?))
}

/// The `@type` of a `typed_config` at `p` and the rest of its fields.
fn typed(p: &FieldPath, e: RawExtension) -> Res<(String, serde_norway::Value)> {
    let Some(mut fields) = e.typed_config else {
        return fail(p.key("typed_config"), "typed_config is required");
    };
    let ty = match fields.remove("@type") {
        Some(serde_norway::Value::String(t)) => t,
        _ => return fail(p.key("typed_config").key("@type"), "typed_config needs an @type"),
    };
    Ok((ty, serde_norway::Value::Mapping(fields)))
}

fn input(p: &FieldPath, e: RawExtension) -> Res<RbacMatchInput> {
    let (ty, fields) = typed(p, e)?;
    let tp = p.key("typed_config");
    if ty == HEADER_INPUT {
        let h: RawHeaderInput = read(&tp, fields)?;
        return Ok(RbacMatchInput::RequestHeader(h.header_name.to_ascii_lowercase()));
    }
    let input = match ty.strip_prefix(NETWORK_INPUTS) {
        Some("DestinationIPInput") => RbacMatchInput::DestinationIp,
        Some("DestinationPortInput") => RbacMatchInput::DestinationPort,
        Some("SourceIPInput") => RbacMatchInput::SourceIp,
        Some("DirectSourceIPInput") => RbacMatchInput::DirectSourceIp,
        Some("ServerNameInput") => RbacMatchInput::ServerName,
        _ => {
            return fail(
                tp.key("@type"),
                format!(
                "input {ty} is not supported: skiff reads HttpRequestHeaderMatchInput, DestinationIPInput, \
                     DestinationPortInput, SourceIPInput, DirectSourceIPInput and ServerNameInput"
            ),
            )
        }
    };
    let _: Empty = read(&tp, fields)?;
    Ok(input)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

fn on_match(p: &FieldPath, r: RawOnMatch) -> Res<RbacMatchAction> {
    if r.matcher.is_some() {
        return fail(p.key("matcher"), "a nested matcher is not supported: give on_match an action");
    }
    if r.keep_matching == Some(true) {
        return fail(p.key("keep_matching"), "keep_matching is not supported");
    }
    let Some(action) = r.action else { return fail(p.key("action"), "on_match needs an action") };
    let ap = p.key("action");
    let (ty, fields) = typed(&ap, action)?;
    let tp = ap.key("typed_config");
    if ty != RBAC_ACTION {
        return fail(
            tp.key("@type"),
            format!("action {ty} is not supported: RBAC's action is {RBAC_ACTION}"),
        );
    }
    let a: RawAction = read(&tp, fields)?;
    let action = rbac_action(&tp.key("action"), a.action.as_deref())?;
    Ok(RbacMatchAction { name: a.name.unwrap_or_default(), action })
}

/// An RBAC `action` (the rules' or a matcher `Action`'s) at `p`; absent is ALLOW, as in protobuf.
pub(super) fn rbac_action(p: &FieldPath, v: Option<&str>) -> Res<RbacAction> {
    Ok(match v.map(str::to_ascii_uppercase).as_deref() {
        None | Some("ALLOW") => RbacAction::Allow,
        Some("DENY") => RbacAction::Deny,
        Some("LOG") => RbacAction::Log,
        Some(other) => {
            return fail(p.clone(), format!("unknown action \"{other}\", expected ALLOW, DENY or LOG"))
        }
    })
}
