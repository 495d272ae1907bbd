//! Conversions of the value types several parts of the config share (header edits, header
//! matchers, string matchers, regexes, runtime fractions, a route `match`, a kept `typed_config`
//! mapping read with located errors), used by `convert` for routes and by `convert_filters`,
//! `convert_cors`, `convert_jwt`, `convert_rbac` and `convert_tls`.
//! Owns no judgement of which fields are warned about: that is `convert`'s.

use super::error::{FieldPath, Finding};
use super::model::{
    Fraction, HeaderMatchRule, HeaderMatcher, HeaderValueOption, PathMatch, QueryParameterMatcher,
    RouteMatch, StringMatcher, StringRule,
};
use super::raw::{Ign, RawHeaderMatcher, RawHeaderValueOption, RawMatch, RawStringMatcher};
use serde::Deserialize;

pub(super) type Res<T> = Result<T, Finding>;

const NOT_YET: &str = "not yet implemented in skiff";

pub(super) fn fail<T>(path: FieldPath, message: impl Into<String>) -> Res<T> {
    Err(Finding { path, message: message.into() })
}

/// A configured header name or value goes onto the wire verbatim: a CR or LF in it would end the
/// line and let the config inject headers (or a whole message). Envoy refuses these too.
pub(super) fn no_crlf(p: FieldPath, text: &str) -> Res<()> {
    if text.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        let field = match p.0.last() {
            Some(super::error::Seg::Key(k)) => k.clone(),
            _ => "header".to_string(),
        };
        return fail(p, format!("{field} {text:?} must not contain CR, LF or NUL"));
    }
    Ok(())
}

pub(super) fn headers_to_add(
    p: FieldPath,
    list: Option<Vec<RawHeaderValueOption>>,
) -> Res<Vec<HeaderValueOption>> {
    let mut out = Vec::new();
    for (i, h) in list.unwrap_or_default().into_iter().enumerate() {
        let p = p.idx(i);
        if h.append.is_some() && h.append_action.is_some() {
            return fail(p, "give either append or append_action, not both");
        }
        if h.header.key.is_empty() {
            return fail(p.key("header").key("key"), "header name must not be empty");
        }
        no_crlf(p.key("header").key("key"), &h.header.key)?;
        if let Some(v) = &h.header.value {
            no_crlf(p.key("header").key("value"), v)?;
        }
        let append = h.append.or(h.append_action.map(|a| a.0 .0)).unwrap_or(true);
        out.push(HeaderValueOption {
            name: h.header.key.to_ascii_lowercase(),
            value: h.header.value.unwrap_or_default(),
            append,
        });
    }
    Ok(out)
}

pub(super) fn check_regex(p: FieldPath, re: &str) -> Res<String> {
    match regex::Regex::new(re) {
        Ok(_) => Ok(re.to_string()),
        // The regex crate's message spans lines (pattern, caret); errors here are one line.
        Err(e) => fail(
            p,
            format!("invalid regex: {}", e.to_string().split_whitespace().collect::<Vec<_>>().join(" ")),
        ),
    }
}

pub(super) fn header_matcher(p: FieldPath, h: RawHeaderMatcher) -> Res<HeaderMatcher> {
    if h.range_match.is_some() {
        return fail(p.key("range_match"), format!("range_match is not supported: {NOT_YET}"));
    }
    if h.treat_missing_header_as_empty.is_some() {
        return fail(
            p.key("treat_missing_header_as_empty"),
            format!("treat_missing_header_as_empty is not supported: {NOT_YET}"),
        );
    }
    let mut rules = Vec::new();
    if let Some(s) = h.exact_match {
        rules.push(HeaderMatchRule::Exact(s));
    }
    if let Some(s) = h.prefix_match {
        rules.push(HeaderMatchRule::Prefix(s));
    }
    if let Some(s) = h.suffix_match {
        rules.push(HeaderMatchRule::Suffix(s));
    }
    if let Some(s) = h.contains_match {
        rules.push(HeaderMatchRule::Contains(s));
    }
    if let Some(s) = h.safe_regex_match {
        rules
            .push(HeaderMatchRule::SafeRegex(check_regex(p.key("safe_regex_match").key("regex"), &s.regex)?));
    }
    if let Some(s) = h.regex_match {
        rules.push(HeaderMatchRule::SafeRegex(check_regex(p.key("regex_match"), &s)?));
    }
    if let Some(b) = h.present_match {
        rules.push(HeaderMatchRule::Present(b));
    }
    if let Some(sm) = h.string_match {
        let sp = p.key("string_match");
        if sm.ignore_case == Some(true) {
            return fail(sp.key("ignore_case"), format!("ignore_case is not supported: {NOT_YET}"));
        }
        rules.push(match string_match(&sp, sm)?.rule {
            StringRule::Exact(s) => HeaderMatchRule::Exact(s),
            StringRule::Prefix(s) => HeaderMatchRule::Prefix(s),
            StringRule::Suffix(s) => HeaderMatchRule::Suffix(s),
            StringRule::Contains(s) => HeaderMatchRule::Contains(s),
            StringRule::SafeRegex(s) => HeaderMatchRule::SafeRegex(s),
        });
    }
    if rules.len() > 1 {
        return fail(p, "a header matcher takes only one rule");
    }
    let rule = rules.pop().unwrap_or(HeaderMatchRule::Present(true));
    Ok(HeaderMatcher {
        name: h.name.to_ascii_lowercase(),
        rule,
        invert_match: h.invert_match.unwrap_or(false),
    })
}

/// Deserializes a kept mapping, naming the failing field by its full path (so the error is
/// located in the file).
pub(super) fn read<T: for<'de> Deserialize<'de>>(
    p: &FieldPath,
    value: impl Into<serde_norway::Value>,
) -> Res<T> {
    serde_path_to_error::deserialize(value.into()).map_err(|err| {
        let mut path = p.clone();
        for seg in err.path().iter() {
            match seg {
                serde_path_to_error::Segment::Map { key } => path = path.key(key),
                serde_path_to_error::Segment::Seq { index } => path = path.idx(*index),
                serde_path_to_error::Segment::Enum { variant } => path = path.key(variant),
                serde_path_to_error::Segment::Unknown => {}
            }
        }
        let message = err.into_inner().to_string();
        // serde_norway prefixes its own copy of the path; the finding carries it already.
        let message = match message.split_once(": ") {
            Some((head, rest)) if !head.contains(' ') => rest.to_string(),
            _ => message,
        };
        Finding { path, message }
    })
}

/// `type.v3.FractionalPercent`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFraction {
    pub(super) numerator: Option<u32>,
    denominator: Option<String>,
}

/// `config.core.v3.RuntimeFractionalPercent`: skiff has no runtime, so the default applies.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
// `runtime_key` is accepted so that `deny_unknown_fields` does, and never read.
#[allow(dead_code)]
pub(super) struct RawRuntimeFraction {
    pub(super) default_value: Option<RawFraction>,
    runtime_key: Ign,
}

pub(super) fn fraction(p: FieldPath, f: Option<RawFraction>) -> Res<Fraction> {
    let Some(f) = f else { return Ok(Fraction::NONE) };
    fraction_of(p, f.numerator, f.denominator.as_deref())
}

/// A `FractionalPercent` (`numerator` over `denominator`, HUNDRED by default) in parts per million.
pub(super) fn fraction_of(p: FieldPath, numerator: Option<u32>, denominator: Option<&str>) -> Res<Fraction> {
    let scale: u64 = match denominator.map(str::to_ascii_uppercase).as_deref() {
        None | Some("HUNDRED") => 10_000,
        Some("TEN_THOUSAND") => 100,
        Some("MILLION") => 1,
        Some(other) => {
            return fail(
                p.key("denominator"),
                format!("unknown denominator \"{other}\", expected HUNDRED, TEN_THOUSAND or MILLION"),
            )
        }
    };
    // Above 100 % means always, as Envoy clamps it.
    let per_million = u64::from(numerator.unwrap_or(0)) * scale;
    Ok(Fraction { per_million: per_million.min(1_000_000) as u32, unit: scale as u32 })
}

/// A route `match` (routes', and the JWT filter's `rules`).
pub(super) fn route_match(p: FieldPath, m: RawMatch) -> Res<RouteMatch> {
    let refused = [
        ("path_separated_prefix", m.path_separated_prefix.is_some(), NOT_YET),
        ("runtime_fraction", m.runtime_fraction.is_some(), NOT_YET),
        ("tls_context", m.tls_context.is_some(), NOT_YET),
        ("dynamic_metadata", m.dynamic_metadata.is_some(), NOT_YET),
    ];
    if let Some((field, _, why)) = refused.iter().find(|(_, present, _)| *present) {
        return fail(p.key(field), format!("{field} is not supported: {why}"));
    }
    let mut kinds = Vec::new();
    if let Some(s) = m.prefix {
        kinds.push(PathMatch::Prefix(s));
    }
    if let Some(s) = m.path {
        kinds.push(PathMatch::Path(s));
    }
    if let Some(s) = m.safe_regex {
        kinds.push(PathMatch::SafeRegex(check_regex(p.key("safe_regex").key("regex"), &s.regex)?));
    }
    if let Some(s) = m.regex {
        kinds.push(PathMatch::SafeRegex(check_regex(p.key("regex"), &s)?));
    }
    if m.connect_matcher.is_some() {
        kinds.push(PathMatch::Connect);
    }
    if kinds.len() != 1 {
        return fail(p, "a route match needs exactly one of prefix, path, safe_regex, connect_matcher");
    }
    let path = kinds.remove(0);
    let mut headers = Vec::new();
    for (i, h) in m.headers.unwrap_or_default().into_iter().enumerate() {
        headers.push(header_matcher(p.key("headers").idx(i), h)?);
    }
    let mut query_parameters = Vec::new();
    for (i, q) in m.query_parameters.unwrap_or_default().into_iter().enumerate() {
        let qp = p.key("query_parameters").idx(i);
        let exact = match (q.string_match, q.value, q.present_match) {
            (Some(sm), None, _) => {
                let sp = qp.key("string_match");
                match (sm.exact, sm.prefix, sm.suffix, sm.contains, sm.safe_regex, sm.ignore_case) {
                    (Some(e), None, None, None, None, None | Some(false)) => Some(e),
                    _ => return fail(sp, "only string_match.exact is supported for query parameters"),
                }
            }
            (None, Some(v), _) => {
                if q.regex == Some(true) {
                    return fail(qp.key("regex"), "regex query parameter matching is not supported");
                }
                Some(v)
            }
            (None, None, _) => None,
            (Some(_), Some(_), _) => return fail(qp, "give either string_match or value, not both"),
        };
        query_parameters.push(QueryParameterMatcher { name: q.name, exact });
    }
    Ok(RouteMatch {
        path,
        case_sensitive: m.case_sensitive.unwrap_or(true),
        headers,
        query_parameters,
        grpc: m.grpc.is_some(),
    })
}

/// A `StringMatcher` at `p`.
pub(super) fn string_match(p: &FieldPath, s: RawStringMatcher) -> Res<StringMatcher> {
    let ignore_case = s.ignore_case.unwrap_or(false);
    let mut rules = Vec::new();
    if let Some(v) = s.exact {
        rules.push(StringRule::Exact(v));
    }
    if let Some(v) = s.prefix {
        rules.push(StringRule::Prefix(v));
    }
    if let Some(v) = s.suffix {
        rules.push(StringRule::Suffix(v));
    }
    if let Some(v) = s.contains {
        rules.push(StringRule::Contains(v));
    }
    if let Some(re) = s.safe_regex {
        if ignore_case {
            return fail(p.key("ignore_case"), "ignore_case has no effect for safe_regex");
        }
        rules.push(StringRule::SafeRegex(check_regex(p.key("safe_regex").key("regex"), &re.regex)?));
    }
    if rules.len() > 1 {
        return fail(
            p.clone(),
            "a string matcher takes only one of exact, prefix, suffix, contains, safe_regex",
        );
    }
    match rules.pop() {
        Some(rule) => Ok(StringMatcher { rule, ignore_case }),
        None => fail(p.clone(), "a string matcher needs exact, prefix, suffix, contains or safe_regex"),
    }
}
