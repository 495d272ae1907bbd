//! RBAC's matcher engine (`matcher` / `shadow_matcher`), as Envoy's
//! `RoleBasedAccessControlMatcherEngineImpl` evaluates it: the first `matcher_list` entry whose
//! predicate matches gives the action, else `on_no_match`, else DENY. A predicate whose input has
//! no value (an absent header, no SNI) does not match. Owns no stats, no reply and no I/O.

use super::facts::{remote_ip, Decision, Subject};
use super::StringMatcher;
use crate::config::{self, RbacAction, RbacMatchInput};
use crate::route::BuildError;

#[derive(Debug)]
pub(super) struct Matcher {
    matchers: Box<[(Predicate, Action)]>,
    on_no_match: Option<Action>,
}

#[derive(Debug)]
struct Action {
    name: String,
    action: RbacAction,
}

#[derive(Debug)]
enum Predicate {
    Single(RbacMatchInput, StringMatcher),
    Or(Box<[Predicate]>),
    And(Box<[Predicate]>),
    Not(Box<Predicate>),
}

impl Matcher {
    pub(super) fn compile(m: &config::RbacMatcher) -> Result<Self, BuildError> {
        let action = |a: &config::RbacMatchAction| Action { name: a.name.clone(), action: a.action };
        Ok(Matcher {
            matchers: m
                .matchers
                .iter()
                .map(|f| Ok((Predicate::compile(&f.predicate)?, action(&f.on_match))))
                .collect::<Result<_, BuildError>>()?,
            on_no_match: m.on_no_match.as_ref().map(action),
        })
    }

    /// ALLOW and LOG allow, DENY denies, no action denies; the action's name is the policy.
    pub(super) fn decide(&self, s: &Subject<'_>) -> Decision<'_> {
        let hit = self.matchers.iter().find(|(p, _)| p.matches(s)).map(|(_, a)| a);
        match hit.or(self.on_no_match.as_ref()) {
            Some(a) => Decision { allowed: a.action != RbacAction::Deny, policy: Some(a.name.as_str()) },
            None => Decision { allowed: false, policy: None },
        }
    }
}

impl Predicate {
    fn compile(p: &config::RbacPredicate) -> Result<Self, BuildError> {
        use config::RbacPredicate as C;
        let all = |l: &[C]| l.iter().map(Predicate::compile).collect::<Result<Box<[_]>, _>>();
        Ok(match p {
            C::Single(input, m) => Predicate::Single(input.clone(), StringMatcher::compile(m)?),
            C::Or(l) => Predicate::Or(all(l)?),
            C::And(l) => Predicate::And(all(l)?),
            C::Not(x) => Predicate::Not(Box::new(Predicate::compile(x)?)),
        })
    }

    fn matches(&self, s: &Subject<'_>) -> bool {
        match self {
            Predicate::Single(input, m) => input_value(input, s).is_some_and(|v| m.matches(&v)),
            Predicate::Or(l) => l.iter().any(|x| x.matches(s)),
            Predicate::And(l) => l.iter().all(|x| x.matches(s)),
            Predicate::Not(x) => !x.matches(s),
        }
    }
}

/// The input's value, None when there is none (Envoy's `absl::monostate`).
fn input_value(input: &RbacMatchInput, s: &Subject<'_>) -> Option<String> {
    match input {
        RbacMatchInput::RequestHeader(name) => header(name, s),
        RbacMatchInput::DestinationIp => Some(s.conn.local.ip().to_string()),
        RbacMatchInput::DestinationPort => Some(s.conn.local.port().to_string()),
        RbacMatchInput::SourceIp => Some(remote_ip(s).to_string()),
        RbacMatchInput::DirectSourceIp => Some(s.conn.remote.ip().to_string()),
        RbacMatchInput::ServerName => s.conn.tls.and_then(|t| t.sni.clone()).filter(|n| !n.is_empty()),
    }
}

/// Every line of the header joined with `,` (Envoy's `getAllOfHeaderAsString`); the request
/// line's pseudo-headers as Envoy holds them. Not valid UTF-8 reads lossily.
fn header(name: &str, s: &Subject<'_>) -> Option<String> {
    let http = s.http?;
    let head = http.head;
    match name {
        ":method" => return Some(head.method.to_string()),
        ":path" => return Some(head.path.to_string()),
        ":authority" => return head.host.map(str::to_string),
        ":scheme" => return Some(if s.conn.tls.is_some() { "https" } else { "http" }.to_string()),
        _ => {}
    }
    let mut lines = head.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name));
    let mut out = String::from_utf8_lossy(lines.next()?.value).into_owned();
    for l in lines {
        out.push(',');
        out.push_str(&String::from_utf8_lossy(l.value));
    }
    Some(out)
}
