//! Role-based access control, Envoy's RBAC engine: compiled rules (`Engine`: an action and named
//! policies, a policy matching when any of its permissions and any of its principals match) and
//! their decision for one request or connection (`Subject`). Shared by the HTTP filter
//! (`filters::rbac`) and meant for the network filter: a `Subject` without HTTP facts is a
//! connection, on which header and path rules never match. The matcher API (`matcher`,
//! `shadow_matcher`) compiles to the same `Engine` (`matcher`). Owns no stats, no reply and no I/O.

mod facts;
mod matcher;

pub use crate::string_match::StringMatch as StringMatcher;
pub use facts::{Decision, HttpFacts, Subject};

use crate::config::{self, CidrRange, RbacAction};
use crate::route::{BuildError, HeaderMatcher};
use facts::remote_ip;
use std::net::IpAddr;

/// One set of rules (`rules` or `shadow_rules`, or a `matcher` or `shadow_matcher`), compiled.
#[derive(Debug)]
pub struct Engine {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Rules {
        action: RbacAction,
        /// In name order, the order Envoy tries them in: the first match is the effective policy.
        policies: Box<[Policy]>,
    },
    Matcher(matcher::Matcher),
}

#[derive(Debug)]
struct Policy {
    name: String,
    permissions: Box<[Permission]>,
    principals: Box<[Principal]>,
}

#[derive(Debug)]
enum Permission {
    Any,
    Header(HeaderMatcher),
    UrlPath(StringMatcher),
    And(Box<[Permission]>),
    Or(Box<[Permission]>),
    Not(Box<Permission>),
    DestinationIp(CidrRange),
    DestinationPort(u16),
    DestinationPortRange(u32, u32),
    RequestedServerName(StringMatcher),
}

#[derive(Debug)]
enum Principal {
    Any,
    Authenticated(Option<StringMatcher>),
    SourceIp(CidrRange),
    DirectRemoteIp(CidrRange),
    RemoteIp(CidrRange),
    Header(HeaderMatcher),
    UrlPath(StringMatcher),
    And(Box<[Principal]>),
    Or(Box<[Principal]>),
    Not(Box<Principal>),
}

impl Engine {
    pub fn compile(rules: &config::RbacRules) -> Result<Self, BuildError> {
        let policies = rules
            .policies
            .iter()
            .map(|p| {
                Ok(Policy {
                    name: p.name.clone(),
                    permissions: p.permissions.iter().map(Permission::compile).collect::<Result<_, _>>()?,
                    principals: p.principals.iter().map(Principal::compile).collect::<Result<_, _>>()?,
                })
            })
            .collect::<Result<_, BuildError>>()?;
        Ok(Engine { kind: Kind::Rules { action: rules.action, policies } })
    }

    pub fn compile_matcher(m: &config::RbacMatcher) -> Result<Self, BuildError> {
        Ok(Engine { kind: Kind::Matcher(matcher::Matcher::compile(m)?) })
    }

    /// ALLOW allows what a policy matches, DENY denies it, LOG allows everything (and only names
    /// the policy that matched).
    pub fn decide(&self, s: &Subject<'_>) -> Decision<'_> {
        let (action, policies) = match &self.kind {
            Kind::Rules { action, policies } => (*action, policies),
            Kind::Matcher(m) => return m.decide(s),
        };
        let matched = policies
            .iter()
            .find(|p| p.permissions.iter().any(|x| x.matches(s)) && p.principals.iter().any(|x| x.matches(s)))
            .map(|p| p.name.as_str());
        let allowed = match action {
            RbacAction::Allow => matched.is_some(),
            RbacAction::Deny => matched.is_none(),
            RbacAction::Log => true,
        };
        Decision { allowed, policy: matched }
    }
}

impl Permission {
    fn compile(p: &config::RbacPermission) -> Result<Self, BuildError> {
        use config::RbacPermission as C;
        let all = |list: &[C]| list.iter().map(Permission::compile).collect::<Result<Box<[_]>, _>>();
        Ok(match p {
            C::Any => Permission::Any,
            C::Header(h) => Permission::Header(HeaderMatcher::compile(h)?),
            C::UrlPath(m) => Permission::UrlPath(StringMatcher::compile(m)?),
            C::And(list) => Permission::And(all(list)?),
            C::Or(list) => Permission::Or(all(list)?),
            C::Not(inner) => Permission::Not(Box::new(Permission::compile(inner)?)),
            C::DestinationIp(c) => Permission::DestinationIp(*c),
            C::DestinationPort(n) => Permission::DestinationPort(*n),
            C::DestinationPortRange(a, b) => Permission::DestinationPortRange(*a, *b),
            C::RequestedServerName(m) => Permission::RequestedServerName(StringMatcher::compile(m)?),
        })
    }

    fn matches(&self, s: &Subject<'_>) -> bool {
        match self {
            Permission::Any => true,
            Permission::Header(h) => header(h, s),
            Permission::UrlPath(m) => url_path(m, s),
            Permission::And(list) => list.iter().all(|x| x.matches(s)),
            Permission::Or(list) => list.iter().any(|x| x.matches(s)),
            Permission::Not(inner) => !inner.matches(s),
            Permission::DestinationIp(c) => in_range(c, s.conn.local.ip()),
            Permission::DestinationPort(n) => s.conn.local.port() == *n,
            Permission::DestinationPortRange(a, b) => (*a..*b).contains(&u32::from(s.conn.local.port())),
            // Envoy reads the SNI as the empty string when there is none.
            Permission::RequestedServerName(m) => {
                m.matches(s.conn.tls.and_then(|t| t.sni.as_deref()).unwrap_or(""))
            }
        }
    }
}

impl Principal {
    fn compile(p: &config::RbacPrincipal) -> Result<Self, BuildError> {
        use config::RbacPrincipal as C;
        let all = |list: &[C]| list.iter().map(Principal::compile).collect::<Result<Box<[_]>, _>>();
        Ok(match p {
            C::Any => Principal::Any,
            C::Authenticated(m) => {
                Principal::Authenticated(m.as_ref().map(StringMatcher::compile).transpose()?)
            }
            C::SourceIp(c) => Principal::SourceIp(*c),
            C::DirectRemoteIp(c) => Principal::DirectRemoteIp(*c),
            C::RemoteIp(c) => Principal::RemoteIp(*c),
            C::Header(h) => Principal::Header(HeaderMatcher::compile(h)?),
            C::UrlPath(m) => Principal::UrlPath(StringMatcher::compile(m)?),
            C::And(list) => Principal::And(all(list)?),
            C::Or(list) => Principal::Or(all(list)?),
            C::Not(inner) => Principal::Not(Box::new(Principal::compile(inner)?)),
        })
    }

    fn matches(&self, s: &Subject<'_>) -> bool {
        match self {
            Principal::Any => true,
            Principal::Authenticated(name) => authenticated(name.as_ref(), s),
            Principal::SourceIp(c) | Principal::DirectRemoteIp(c) => in_range(c, s.conn.remote.ip()),
            Principal::RemoteIp(c) => in_range(c, remote_ip(s)),
            Principal::Header(h) => header(h, s),
            Principal::UrlPath(m) => url_path(m, s),
            Principal::And(list) => list.iter().all(|x| x.matches(s)),
            Principal::Or(list) => list.iter().any(|x| x.matches(s)),
            Principal::Not(inner) => !inner.matches(s),
        }
    }
}

/// Envoy's order: any URI SAN, then any DNS SAN, then the subject. A plaintext connection is
/// never authenticated; without a name, any TLS connection is (with or without a client
/// certificate, as Envoy's check is for TLS); a TLS peer without a certificate has no SANs and
/// the empty subject.
fn authenticated(name: Option<&StringMatcher>, s: &Subject<'_>) -> bool {
    let Some(tls) = s.conn.tls else { return false };
    let Some(m) = name else { return true };
    let Some(cert) = &tls.cert else { return m.matches("") };
    cert.uri_sans.iter().any(|u| m.matches(u))
        || cert.dns_sans.iter().any(|d| m.matches(d))
        || m.matches(&cert.subject)
}

/// A header rule on the request (never on a bare connection); `:method`, `:path`, `:authority`
/// and `:scheme` read the request line as Envoy's pseudo-headers hold it. A header sent on
/// several lines matches when one of them does (Envoy 1.40, checked against it).
fn header(h: &HeaderMatcher, s: &Subject<'_>) -> bool {
    let Some(http) = &s.http else { return false };
    let head = http.head;
    let value = match h.name() {
        ":method" => Some(head.method.as_bytes()),
        ":path" => Some(head.path.as_bytes()),
        ":authority" => head.host.map(str::as_bytes),
        ":scheme" => Some(if s.conn.tls.is_some() { &b"https"[..] } else { &b"http"[..] }),
        name => {
            let lines = head.headers.iter().filter(|x| x.name.eq_ignore_ascii_case(name));
            return h.matches_any(lines.map(|x| x.value));
        }
    };
    h.matches_value(value)
}

/// The path without its query string or fragment, as Envoy's `PathMatcher` reads it.
fn url_path(m: &StringMatcher, s: &Subject<'_>) -> bool {
    let Some(http) = &s.http else { return false };
    let path = http.head.path;
    let end = path.find(['?', '#']).unwrap_or(path.len());
    m.matches(&path[..end])
}

fn in_range(c: &CidrRange, ip: IpAddr) -> bool {
    match (c.address, ip) {
        (IpAddr::V4(net), IpAddr::V4(ip)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(c.prefix_len)).unwrap_or(0);
            u32::from(net) & mask == u32::from(ip) & mask
        }
        (IpAddr::V6(net), IpAddr::V6(ip)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(c.prefix_len)).unwrap_or(0);
            u128::from(net) & mask == u128::from(ip) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{StringMatcher as StringMatchConfig, StringRule};
    use crate::peer::Connection;
    use crate::peer::{PeerCert, TlsPeer};

    fn conn(tls: Option<&TlsPeer>) -> Connection<'_> {
        Connection { remote: "10.0.0.7:5555".parse().unwrap(), local: "127.0.0.1:8443".parse().unwrap(), tls }
    }

    fn exact(s: &str) -> StringMatchConfig {
        StringMatchConfig { rule: StringRule::Exact(s.into()), ignore_case: false }
    }

    fn engine(
        action: RbacAction,
        permissions: Vec<config::RbacPermission>,
        principals: Vec<config::RbacPrincipal>,
    ) -> Engine {
        let policy = config::RbacPolicy { name: "p".into(), permissions, principals };
        Engine::compile(&config::RbacRules { action, policies: vec![policy] }).unwrap()
    }

    #[test]
    fn cidr_ranges_compare_the_prefix_only_and_never_across_families() {
        let c = CidrRange { address: "10.0.0.0".parse().unwrap(), prefix_len: 8 };
        assert!(in_range(&c, "10.200.1.1".parse().unwrap()));
        assert!(!in_range(&c, "11.0.0.1".parse().unwrap()));
        assert!(!in_range(&c, "::ffff:10.0.0.1".parse().unwrap()));
        let all = CidrRange { address: "0.0.0.0".parse().unwrap(), prefix_len: 0 };
        assert!(in_range(&all, "192.168.1.1".parse().unwrap()));
        let host = CidrRange { address: "::1".parse().unwrap(), prefix_len: 128 };
        assert!(in_range(&host, "::1".parse().unwrap()) && !in_range(&host, "::2".parse().unwrap()));
    }

    #[test]
    fn principal_name_tries_uri_sans_then_dns_sans_then_the_subject() {
        let cert = |uri: &[&str], dns: &[&str], subject: &str| TlsPeer {
            sni: None,
            local_uri_sans: Vec::new(),
            cert: Some(PeerCert {
                uri_sans: uri.iter().map(|s| s.to_string()).collect(),
                dns_sans: dns.iter().map(|s| s.to_string()).collect(),
                subject: subject.into(),
                chain: Vec::new(),
            }),
        };
        let by_name = |name: &str| {
            engine(
                RbacAction::Allow,
                vec![config::RbacPermission::Any],
                vec![config::RbacPrincipal::Authenticated(Some(exact(name)))],
            )
        };
        let peer = cert(&["spiffe://t/a"], &["a.example"], "CN=a");
        for name in ["spiffe://t/a", "a.example", "CN=a"] {
            let s = Subject { conn: conn(Some(&peer)), http: None };
            assert!(by_name(name).decide(&s).allowed, "{name}");
        }
        let s = Subject { conn: conn(Some(&peer)), http: None };
        assert_eq!(by_name("CN=b").decide(&s), Decision { allowed: false, policy: None });
        // Without a name any TLS connection is authenticated, a client certificate or not (as
        // Envoy's parity run shows); plaintext never is.
        let anyone = engine(
            RbacAction::Allow,
            vec![config::RbacPermission::Any],
            vec![config::RbacPrincipal::Authenticated(None)],
        );
        let no_cert = TlsPeer { sni: Some("x".into()), cert: None, local_uri_sans: Vec::new() };
        assert!(anyone.decide(&Subject { conn: conn(Some(&no_cert)), http: None }).allowed);
        assert!(!anyone.decide(&Subject { conn: conn(None), http: None }).allowed);
        assert!(anyone.decide(&Subject { conn: conn(Some(&peer)), http: None }).allowed);
        assert!(!by_name("CN=a").decide(&Subject { conn: conn(Some(&no_cert)), http: None }).allowed);
    }

    #[test]
    fn deny_names_the_policy_it_matched_and_log_never_denies() {
        let port = || vec![config::RbacPermission::DestinationPort(8443)];
        let deny = engine(RbacAction::Deny, port(), vec![config::RbacPrincipal::Any]);
        let s = Subject { conn: conn(None), http: None };
        assert_eq!(deny.decide(&s), Decision { allowed: false, policy: Some("p") });
        let log = engine(RbacAction::Log, port(), vec![config::RbacPrincipal::Any]);
        assert_eq!(log.decide(&s), Decision { allowed: true, policy: Some("p") });
        let other = engine(
            RbacAction::Deny,
            vec![config::RbacPermission::DestinationPort(1)],
            vec![config::RbacPrincipal::Any],
        );
        assert_eq!(other.decide(&s), Decision { allowed: true, policy: None });
    }

    #[test]
    fn string_matchers_ignore_ascii_case_when_asked() {
        let m = StringMatcher::compile(&StringMatchConfig {
            rule: StringRule::Prefix("/API".into()),
            ignore_case: true,
        })
        .unwrap();
        assert!(m.matches("/api/x") && m.matches("/Api") && !m.matches("/ap"));
        let re = StringMatcher::compile(&StringMatchConfig {
            rule: StringRule::SafeRegex("/a/[0-9]+".into()),
            ignore_case: false,
        })
        .unwrap();
        assert!(re.matches("/a/12") && !re.matches("/a/12/b"));
    }
}
