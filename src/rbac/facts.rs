//! What RBAC's engines are asked and answer, shared by the rules engine (`rbac`) and the matcher
//! engine (`rbac::matcher`): the `Subject` (a connection, and for HTTP the request head), the
//! `Decision`, the client address as the connection manager decided it, and the compiled
//! `StringMatcher`. Owns no rules and no I/O.

use crate::config::{StringMatcher as StringMatchConfig, StringRule};
use crate::http::RequestHead;
use crate::peer::Connection;
use crate::route::BuildError;
use std::net::IpAddr;

/// What the rules are asked about: a connection, and for an HTTP request its head.
#[derive(Clone, Copy)]
pub struct Subject<'a> {
    pub conn: Connection<'a>,
    pub http: Option<HttpFacts<'a>>,
}

#[derive(Clone, Copy)]
pub struct HttpFacts<'a> {
    pub head: &'a RequestHead<'a>,
    /// The connection manager's `use_remote_address`: whether the socket's peer, rather than the
    /// last `x-forwarded-for` address, is the client (`remote_ip`).
    pub use_remote_address: bool,
}

/// An engine's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'e> {
    pub allowed: bool,
    /// The policy that matched (Envoy's effective policy id), if one did.
    pub policy: Option<&'e str>,
}

/// The client as the connection manager decided it: the last `x-forwarded-for` address unless
/// `use_remote_address` (or none is there, or it is no address), else the socket's peer.
pub(crate) fn remote_ip(s: &Subject<'_>) -> IpAddr {
    let peer = s.conn.remote.ip();
    let Some(http) = s.http.filter(|h| !h.use_remote_address) else { return peer };
    let last = http.head.headers.iter().rev().find(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"));
    last.and_then(|h| std::str::from_utf8(h.value).ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or(peer)
}

/// A compiled `StringMatcher`.
#[derive(Debug)]
pub struct StringMatcher {
    rule: Rule,
    ignore_case: bool,
}

#[derive(Debug)]
enum Rule {
    /// Lower-cased when the matcher ignores case.
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    Regex(regex::Regex),
}

impl StringMatcher {
    pub fn compile(m: &StringMatchConfig) -> Result<Self, BuildError> {
        let text = |s: &str| if m.ignore_case { s.to_ascii_lowercase() } else { s.to_string() };
        let rule = match &m.rule {
            StringRule::Exact(s) => Rule::Exact(text(s)),
            StringRule::Prefix(s) => Rule::Prefix(text(s)),
            StringRule::Suffix(s) => Rule::Suffix(text(s)),
            StringRule::Contains(s) => Rule::Contains(text(s)),
            StringRule::SafeRegex(re) => Rule::Regex(
                regex::Regex::new(&format!("^(?:{re})$")).map_err(|e| BuildError::BadRegex(e.to_string()))?,
            ),
        };
        Ok(StringMatcher { rule, ignore_case: m.ignore_case })
    }

    pub fn matches(&self, value: &str) -> bool {
        if let Rule::Regex(re) = &self.rule {
            return re.is_match(value);
        }
        let lowered;
        let value = if self.ignore_case {
            lowered = value.to_ascii_lowercase();
            lowered.as_str()
        } else {
            value
        };
        match &self.rule {
            Rule::Exact(s) => value == s,
            Rule::Prefix(s) => value.starts_with(s.as_str()),
            Rule::Suffix(s) => value.ends_with(s.as_str()),
            Rule::Contains(s) => value.contains(s.as_str()),
            Rule::Regex(_) => false,
        }
    }
}
