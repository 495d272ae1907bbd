//! `envoy.filters.http.cors`: answers CORS preflight requests itself and adds the
//! `access-control-*` headers to the response of an actual request whose `origin` is allowed, by
//! the policy of the request's route. Owns the policy each route resolves to (compiled once: the
//! cors filter's `typed_per_filter_config` of the route, then of its virtual host; when neither
//! has one, the route's and the virtual host's `cors` fields), and the decision; the request owner
//! sends the preflight answer and writes the response headers.

use super::verdict::{draw, header, joined_header, push_header, FilterReply, Verdict};
use crate::access_log::ResponseFlags;
use crate::config::{CorsPolicy, Fraction, PerFilterConfig, RouteAction, RouteConfig};
use crate::http::RequestHead;
use crate::route::{BuildError, Route};
use crate::stats::CorsStats;
use crate::string_match::StringMatch;

/// The cors filter of one connection manager.
#[derive(Debug)]
pub struct Cors {
    /// By `Route::id`: the policy a request on that route follows. None where no policy applies
    /// or the route forwards nothing (a redirect or direct response has no route entry, which
    /// Envoy's filter needs): the filter does nothing there.
    routes: Box<[Option<Policy>]>,
    /// Index of `http.<stat_prefix>.cors.*` in the chain's stats.
    pub(super) stats: usize,
}

/// The fields of a route's policies, each taken from the most specific policy that sets it, as
/// Envoy's filter reads them; `enabled` and `shadow` are the most specific policy's own.
#[derive(Debug)]
struct Policy {
    /// None: always (the policy has no `filter_enabled`).
    enabled: Option<Fraction>,
    /// None: never.
    shadow: Option<Fraction>,
    allow_origins: Vec<StringMatch>,
    allow_methods: Box<str>,
    allow_headers: Box<str>,
    expose_headers: Box<str>,
    max_age: Box<str>,
    allow_credentials: bool,
    allow_private_network: bool,
    forward_not_matching_preflights: bool,
}

impl Cors {
    /// `name`: the filter's name in `http_filters`, which its per-route policies are keyed by.
    pub(super) fn compile(name: &str, rc: &RouteConfig, stats: usize) -> Result<Self, BuildError> {
        let mut routes = Vec::new();
        // Route ids count routes across virtual hosts in config order, as `RouteTable::compile` does.
        for vh in &rc.virtual_hosts {
            for r in &vh.routes {
                let RouteAction::Forward(f) = &r.action else {
                    routes.push(None);
                    continue;
                };
                let mut list: Vec<&CorsPolicy> = typed(&r.filter_configs, name)
                    .into_iter()
                    .chain(typed(&vh.filter_configs, name))
                    .collect();
                // The `cors` fields count only when no per-filter policy applies (Envoy 1.40).
                if list.is_empty() {
                    list = f.cors.iter().chain(vh.cors.iter()).collect();
                }
                routes.push(if list.is_empty() { None } else { Some(Policy::resolve(&list)?) });
            }
        }
        let routes = if routes.iter().all(Option::is_none) { Box::default() } else { routes.into() };
        Ok(Cors { routes, stats })
    }

    /// Envoy's `decodeHeaders`, and what its `encodeHeaders` will add: a preflight is answered
    /// here; an actual request with an allowed origin gets its headers on the response.
    pub(super) fn on_request(
        &self,
        head: &RequestHead<'_>,
        route: &Route,
        stats: &CorsStats,
        roll: &mut dyn FnMut() -> u64,
        v: &mut Verdict<'_>,
    ) {
        let Some(Some(p)) = self.routes.get(route.id) else { return };
        let enabled = p.enabled.is_none_or(|f| draw(f, roll));
        let shadow = p.shadow.is_some_and(|f| draw(f, roll));
        if !enabled && !shadow {
            return;
        }
        let Some(origin) = joined_header(head, "origin").filter(|o| !o.is_empty()) else { return };
        let origin = &*origin;
        // Envoy tries each matcher against "*" too: a matcher of "*" allows every origin.
        let allowed = p.allow_origins.iter().any(|m| m.matches(b"*") || m.matches(origin));
        if allowed {
            stats.origin_valid.inc();
        } else {
            stats.origin_invalid.inc();
        }
        if !enabled {
            return;
        }
        let request_method = header(head, "access-control-request-method").filter(|m| !m.is_empty());
        let Some(request_method) = request_method.filter(|_| head.method == "OPTIONS") else {
            if allowed {
                p.response_headers(origin, &mut v.response_headers);
                v.response_headers_replace = true;
            }
            return;
        };
        if !allowed && p.forward_not_matching_preflights {
            return;
        }
        // Envoy's order: what decodeHeaders sets, then what encodeHeaders adds to the same answer.
        let mut h = Vec::new();
        if allowed {
            push_header(&mut h, b"access-control-allow-origin", origin);
        }
        if p.allow_credentials {
            push_header(&mut h, b"access-control-allow-credentials", b"true");
        }
        let echo = |configured: &str, asked: &[u8]| -> Vec<u8> {
            if configured == "*" {
                asked.to_vec()
            } else {
                configured.as_bytes().to_vec()
            }
        };
        if !p.allow_methods.is_empty() {
            push_header(&mut h, b"access-control-allow-methods", &echo(&p.allow_methods, request_method));
        }
        if !p.allow_headers.is_empty() {
            let asked = header(head, "access-control-request-headers").unwrap_or_default();
            push_header(&mut h, b"access-control-allow-headers", &echo(&p.allow_headers, asked));
        }
        if !p.max_age.is_empty() {
            push_header(&mut h, b"access-control-max-age", p.max_age.as_bytes());
        }
        if p.allow_private_network
            && header(head, "access-control-request-private-network") == Some(&b"true"[..])
        {
            push_header(&mut h, b"access-control-allow-private-network", b"true");
        }
        if allowed && !p.expose_headers.is_empty() {
            push_header(&mut h, b"access-control-expose-headers", p.expose_headers.as_bytes());
        }
        v.reply = Some(FilterReply {
            status: 200,
            body: std::borrow::Cow::Borrowed(b""),
            flag: ResponseFlags::NONE,
            headers: h,
            details: std::borrow::Cow::Borrowed("cors_response"),
            grpc_status: None,
        });
        v.encoded_reply = true;
    }
}

/// The cors filter's per-route policy among a route's or virtual host's `typed_per_filter_config`.
fn typed<'c>(configs: &'c [(String, PerFilterConfig)], name: &str) -> Option<&'c CorsPolicy> {
    configs.iter().find(|(n, _)| n == name).and_then(|(_, c)| match c {
        PerFilterConfig::Cors(p) => Some(p),
        _ => None,
    })
}

impl Policy {
    /// `list`: most specific first, never empty.
    fn resolve(list: &[&CorsPolicy]) -> Result<Self, BuildError> {
        let text = |field: fn(&CorsPolicy) -> &String| -> Box<str> {
            list.iter().map(|p| field(p)).find(|s| !s.is_empty()).cloned().unwrap_or_default().into()
        };
        let flag = |field: fn(&CorsPolicy) -> Option<bool>, default: bool| {
            list.iter().find_map(|p| field(p)).unwrap_or(default)
        };
        let origins = list.iter().map(|p| &p.allow_origins).find(|o| !o.is_empty());
        Ok(Policy {
            enabled: list.first().and_then(|p| p.filter_enabled),
            shadow: list.first().and_then(|p| p.shadow_enabled),
            allow_origins: origins
                .into_iter()
                .flatten()
                .map(StringMatch::compile)
                .collect::<Result<_, _>>()?,
            allow_methods: text(|p| &p.allow_methods),
            allow_headers: text(|p| &p.allow_headers),
            expose_headers: text(|p| &p.expose_headers),
            max_age: text(|p| &p.max_age),
            allow_credentials: flag(|p| p.allow_credentials, false),
            allow_private_network: flag(|p| p.allow_private_network_access, false),
            forward_not_matching_preflights: flag(|p| p.forward_not_matching_preflights, true),
        })
    }

    /// Envoy's `encodeHeaders` for an actual request whose origin is allowed.
    fn response_headers(&self, origin: &[u8], out: &mut Vec<u8>) {
        push_header(out, b"access-control-allow-origin", origin);
        if self.allow_credentials {
            push_header(out, b"access-control-allow-credentials", b"true");
        }
        if !self.expose_headers.is_empty() {
            push_header(out, b"access-control-expose-headers", self.expose_headers.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{StringMatcher, StringRule};

    #[test]
    fn each_field_comes_from_the_most_specific_policy_that_sets_it() {
        let route = CorsPolicy {
            allow_origins: vec![StringMatcher {
                rule: StringRule::Exact("http://b.com".into()),
                ignore_case: false,
            }],
            allow_methods: "*".into(),
            forward_not_matching_preflights: Some(false),
            ..CorsPolicy::default()
        };
        let vhost = CorsPolicy {
            allow_origins: vec![StringMatcher {
                rule: StringRule::Exact("http://a.com".into()),
                ignore_case: false,
            }],
            allow_methods: "GET".into(),
            max_age: "600".into(),
            allow_credentials: Some(true),
            filter_enabled: Some(Fraction::NONE),
            ..CorsPolicy::default()
        };
        let p = Policy::resolve(&[&route, &vhost]).expect("compiles");
        assert!(p.allow_origins.len() == 1 && p.allow_origins[0].matches(b"http://b.com"));
        assert_eq!((&*p.allow_methods, &*p.max_age), ("*", "600"));
        assert!(p.allow_credentials && !p.forward_not_matching_preflights);
        // Enabled is the route's own (unset: on), not the virtual host's 0 %.
        assert_eq!(p.enabled, None);
    }
}
