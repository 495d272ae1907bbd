//! Compiled `type.matcher.v3.StringMatcher`s, for everything that matches a value against a
//! configured string rule: CORS's allowed origins, CSRF's additional origins, ext_authz's header
//! lists, RBAC's paths, names and SNI. Matches bytes as they came off the wire; allocates nothing
//! per match. Owns no config and no I/O.

use crate::config::{StringMatcher, StringRule};
use crate::route::BuildError;

#[derive(Debug)]
pub struct StringMatch {
    rule: Rule,
    ignore_case: bool,
}

#[derive(Debug)]
enum Rule {
    Exact(Box<[u8]>),
    Prefix(Box<[u8]>),
    Suffix(Box<[u8]>),
    Contains(Box<[u8]>),
    /// Anchored: Envoy's `safe_regex` matches the whole value.
    Regex(regex::bytes::Regex),
}

impl StringMatch {
    pub fn compile(m: &StringMatcher) -> Result<Self, BuildError> {
        let bytes = |s: &str| s.as_bytes().to_vec().into_boxed_slice();
        let rule = match &m.rule {
            StringRule::Exact(s) => Rule::Exact(bytes(s)),
            StringRule::Prefix(s) => Rule::Prefix(bytes(s)),
            StringRule::Suffix(s) => Rule::Suffix(bytes(s)),
            StringRule::Contains(s) => Rule::Contains(bytes(s)),
            StringRule::SafeRegex(re) => Rule::Regex(
                regex::bytes::Regex::new(&format!("^(?:{re})$"))
                    .map_err(|e| BuildError::BadRegex(e.to_string()))?,
            ),
        };
        Ok(StringMatch { rule, ignore_case: m.ignore_case })
    }

    pub fn matches(&self, value: impl AsRef<[u8]>) -> bool {
        let value = value.as_ref();
        let eq = |a: &[u8], b: &[u8]| if self.ignore_case { a.eq_ignore_ascii_case(b) } else { a == b };
        match &self.rule {
            Rule::Exact(s) => eq(value, s),
            Rule::Prefix(s) => value.len() >= s.len() && eq(&value[..s.len()], s),
            Rule::Suffix(s) => value.len() >= s.len() && eq(&value[value.len() - s.len()..], s),
            Rule::Contains(s) => s.is_empty() || value.windows(s.len()).any(|w| eq(w, s)),
            Rule::Regex(re) => re.is_match(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(rule: StringRule, ignore_case: bool) -> StringMatch {
        StringMatch::compile(&StringMatcher { rule, ignore_case }).expect("compiles")
    }

    #[test]
    fn rules_match_as_envoys_string_matcher() {
        assert!(m(StringRule::Exact("http://a.com".into()), false).matches(b"http://a.com"));
        assert!(!m(StringRule::Exact("http://a.com".into()), false).matches(b"http://A.com"));
        assert!(m(StringRule::Exact("http://a.com".into()), true).matches(b"http://A.com"));
        assert!(m(StringRule::Prefix("http://pre".into()), false).matches(b"http://prefix.com"));
        assert!(m(StringRule::Suffix(".io".into()), true).matches(b"http://x.IO"));
        assert!(m(StringRule::Contains("envoy".into()), false).matches(b"http://www.envoyproxy.io"));
        // A regex matches the whole value: `\*` is the literal "*" and nothing longer.
        let star = m(StringRule::SafeRegex(r"\*".into()), false);
        assert!(star.matches(b"*") && !star.matches(b"http://a.com"));
        assert!(!m(StringRule::SafeRegex(r".*\.envoyproxy\.io".into()), false).matches(b"http://a.com"));
    }
}
