//! `envoy.filters.http.jwt_authn`: finds a request's JSON Web Tokens (headers, query parameters,
//! cookies), checks them against the requirement its route or `rules` pick (providers, any/all,
//! allow missing or failed), and lets the request on with the token's payload and claims as
//! headers, or answers Envoy's 401/403. Owns token parsing and the requirement tree as Envoy 1.40's
//! `jwt_authn` and its JWT library do them, step for step and word for word; the signature check
//! itself is `jsonwebtoken`'s (on ring), with keys from `config::jwks`. Everything is synchronous:
//! the keys are local, read at load. Holds nothing shared between shards; stats are the shard's.

use super::verdict::{push_header, FilterReply, Scheme, Verdict};
use crate::access_log::ResponseFlags;
use crate::config::jwks::{self, Jwk, KeyKind};
use crate::config::{self as model, JwtPerRoute, JwtRequirement};
use crate::http::{header_is, RequestHead};
use crate::route::{BuildError, RequestMatch};
use crate::stats::JwtAuthnStats;
use base64::Engine;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Envoy's cap on the path in `www-authenticate`'s realm.
const MAX_REALM_PATH: usize = 256;

/// One connection manager's filter, compiled.
#[derive(Debug)]
pub struct JwtAuthn {
    providers: Box<[Provider]>,
    rules: Box<[Rule]>,
    /// `requirement_map`, by name.
    requirements: Box<[(String, Verifier)]>,
    /// The map's names as Envoy lists them when a route names another.
    requirement_names: String,
    /// Every provider's `forward_payload_header` and `claim_to_headers` names: a client must not
    /// be able to send what looks like a verified claim, so these go whatever the route requires.
    sanitize: Box<[String]>,
    bypass_cors_preflight: bool,
    strip_failure_response: bool,
    /// The scheme the realm of `www-authenticate` names.
    scheme: Scheme,
    /// Index of `http.<stat_prefix>.jwt_authn.*` in the chain's stats.
    pub(super) stats: usize,
}

#[derive(Debug)]
struct Provider {
    issuer: String,
    audiences: Box<[String]>,
    keys: Box<[Jwk]>,
    forward: bool,
    payload_header: Option<String>,
    pad_payload: bool,
    claims: Box<[(String, String)]>,
    clock_skew: u64,
}

#[derive(Debug)]
struct Rule {
    matcher: RequestMatch,
    verifier: Verifier,
}

/// A requirement, compiled as Envoy's verifier tree.
#[derive(Debug)]
enum Verifier {
    Provider {
        index: usize,
        audiences: Option<Box<[String]>>,
        extractor: Extractor,
    },
    Any(Box<[Verifier]>),
    All(Box<[Verifier]>),
    /// `allow_missing` (`failed: false`) or `allow_missing_or_failed`, over the tokens of the
    /// providers its `requires_any` names (or of every provider, on its own).
    Allow {
        failed: bool,
        extractor: Extractor,
    },
    AllowAll,
}

/// Where one verifier looks for tokens, in Envoy's order: headers by name and prefix, then query
/// parameters, then cookies, each sorted by key; a location lists the issuers it serves.
#[derive(Debug, Default)]
struct Extractor {
    headers: Vec<(String, String, Issuers)>,
    params: Vec<(String, Issuers)>,
    cookies: Vec<(String, Issuers)>,
}

/// The issuers a location may carry tokens of; `any` when a provider there names none.
#[derive(Debug, Default, Clone)]
struct Issuers {
    any: bool,
    named: Vec<String>,
}

impl Issuers {
    fn add(&mut self, issuer: &str) {
        if issuer.is_empty() {
            self.any = true;
        } else if !self.named.iter().any(|i| i == issuer) {
            self.named.push(issuer.to_string());
        }
    }

    fn allows(&self, issuer: &str) -> bool {
        self.any || self.named.iter().any(|i| i == issuer)
    }
}

impl Extractor {
    fn new(providers: &[(String, model::JwtProvider)], which: &[usize]) -> Self {
        let mut headers: BTreeMap<(String, String), Issuers> = BTreeMap::new();
        let mut params: BTreeMap<String, Issuers> = BTreeMap::new();
        let mut cookies: BTreeMap<String, Issuers> = BTreeMap::new();
        for &i in which {
            let Some((_, p)) = providers.get(i) else { continue };
            for (name, prefix) in &p.from_headers {
                headers.entry((name.clone(), prefix.clone())).or_default().add(&p.issuer);
            }
            for name in &p.from_params {
                params.entry(name.clone()).or_default().add(&p.issuer);
            }
            for name in &p.from_cookies {
                cookies.entry(name.clone()).or_default().add(&p.issuer);
            }
            if p.from_headers.is_empty() && p.from_params.is_empty() && p.from_cookies.is_empty() {
                let key = ("authorization".to_string(), "Bearer ".to_string());
                headers.entry(key).or_default().add(&p.issuer);
                params.entry("access_token".to_string()).or_default().add(&p.issuer);
            }
        }
        Extractor {
            headers: headers.into_iter().map(|((n, p), i)| (n, p, i)).collect(),
            params: params.into_iter().collect(),
            cookies: cookies.into_iter().collect(),
        }
    }
}

impl JwtAuthn {
    pub(super) fn compile(c: &model::JwtAuthn, stats: usize, scheme: Scheme) -> Result<Self, BuildError> {
        let mut providers = Vec::with_capacity(c.providers.len());
        let mut sanitize: Vec<String> = Vec::new();
        for (_, p) in &c.providers {
            // Checked at load; a failure here would be a changed file between load and build.
            let keys = jwks::parse(&p.jwks).map_err(|e| BuildError::BadJwks(e.to_string()))?;
            sanitize.extend(p.forward_payload_header.iter().cloned());
            sanitize.extend(p.claim_to_headers.iter().map(|(h, _)| h.clone()));
            providers.push(Provider {
                issuer: p.issuer.clone(),
                audiences: p.audiences.clone().into_boxed_slice(),
                keys: keys.into_boxed_slice(),
                forward: p.forward,
                payload_header: p.forward_payload_header.clone(),
                pad_payload: p.pad_forward_payload_header,
                claims: p.claim_to_headers.clone().into_boxed_slice(),
                clock_skew: p.clock_skew_seconds,
            });
        }
        sanitize.sort();
        sanitize.dedup();
        let build = |r: &JwtRequirement| verifier(r, &c.providers, None);
        let rules = c
            .rules
            .iter()
            .map(|r| {
                let verifier = r.requires.as_ref().map_or(Verifier::AllowAll, build);
                Ok(Rule { matcher: RequestMatch::compile(&r.matcher)?, verifier })
            })
            .collect::<Result<Vec<_>, BuildError>>()?;
        let requirements = c.requirement_map.iter().map(|(n, r)| (n.clone(), build(r))).collect::<Vec<_>>();
        let requirement_names =
            c.requirement_map.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(",");
        Ok(JwtAuthn {
            providers: providers.into_boxed_slice(),
            rules: rules.into_boxed_slice(),
            requirements: requirements.into_boxed_slice(),
            requirement_names,
            sanitize: sanitize.into_boxed_slice(),
            bypass_cors_preflight: c.bypass_cors_preflight,
            strip_failure_response: c.strip_failure_response,
            scheme,
            stats,
        })
    }

    /// Envoy's `decodeHeaders`: sanitize, CORS preflight, the route's `PerRouteConfig` or the
    /// first matching rule, then the verdict. `per_route` is the most specific override.
    pub(super) fn on_request<'a>(
        &'a self,
        head: &RequestHead<'_>,
        per_route: Option<&JwtPerRoute>,
        stats: &JwtAuthnStats,
        v: &mut Verdict<'a>,
    ) {
        for name in self.sanitize.iter() {
            if head.headers.iter().any(|h| header_is(h.name, name)) {
                v.remove_request_headers.push(name);
            }
        }
        if self.bypass_cors_preflight && is_cors_preflight(head) {
            stats.cors_preflight_bypassed.inc();
            stats.allowed.inc();
            return;
        }
        let verifier = match per_route {
            Some(JwtPerRoute::Disabled) => None,
            Some(JwtPerRoute::Requirement(name)) => match self.requirements.iter().find(|(n, _)| n == name) {
                Some((_, verifier)) => Some(verifier),
                None => {
                    stats.denied.inc();
                    let reason = format!(
                        "Wrong requirement_name: {name}. It should be one of [{}]",
                        self.requirement_names
                    );
                    let body = if self.strip_failure_response {
                        Cow::Borrowed(&b""[..])
                    } else {
                        Cow::Owned(format!("Failed JWT authentication: {reason}").into_bytes())
                    };
                    v.reply = Some(FilterReply {
                        status: 403,
                        body,
                        flag: ResponseFlags::NONE,
                        headers: Vec::new(),
                        details: Cow::Owned(denied_details(&reason)),
                        grpc_status: None,
                    });
                    return;
                }
            },
            None => {
                self.rules.iter().find(|r| r.matcher.matches(head.path, head.headers)).map(|r| &r.verifier)
            }
        };
        let Some(verifier) = verifier else {
            stats.allowed.inc();
            return;
        };
        let mut cx = Cx { head, providers: &self.providers, stats, out: Output::default(), now: unix_now() };
        let status = cx.verify(verifier);
        if status == Status::Ok {
            stats.allowed.inc();
            let out = cx.out;
            v.request_headers.extend_from_slice(&out.added);
            v.remove_request_headers.extend(out.removed);
            if !out.removed_params.is_empty() {
                v.path = Some(without_params(head.path, &out.removed_params));
            }
            return;
        }
        stats.denied.inc();
        let status_code = if status == Status::AudienceNotAllowed { 403 } else { 401 };
        if self.strip_failure_response {
            v.reply = Some(FilterReply {
                status: status_code,
                body: Cow::Borrowed(b""),
                flag: ResponseFlags::NONE,
                headers: Vec::new(),
                details: Cow::Owned(denied_details(status.message())),
                grpc_status: None,
            });
            return;
        }
        let mut realm = format!("Bearer realm=\"{}\"", original_uri(head, self.scheme));
        if status != Status::Missing {
            realm.push_str(", error=\"invalid_token\"");
        }
        let mut headers = Vec::new();
        push_header(&mut headers, b"www-authenticate", realm.as_bytes());
        v.reply = Some(FilterReply {
            status: status_code,
            body: Cow::Borrowed(status.message().as_bytes()),
            flag: ResponseFlags::NONE,
            headers,
            details: Cow::Owned(denied_details(status.message())),
            grpc_status: None,
        });
    }
}

/// Envoy's `%RESPONSE_CODE_DETAILS%` for a refusal: the reason with its spaces as `_`.
fn denied_details(reason: &str) -> String {
    let reason: String = reason.chars().map(|c| if c.is_whitespace() { '_' } else { c }).collect();
    format!("jwt_authn_access_denied{{{reason}}}")
}

/// Builds a requirement's verifier; `used` is set inside `requires_any`, where an allow-missing
/// child checks only the tokens of the providers its siblings name (Envoy's rule).
fn verifier(
    r: &JwtRequirement,
    providers: &[(String, model::JwtProvider)],
    used: Option<&[usize]>,
) -> Verifier {
    let index_of = |name: &str| providers.iter().position(|(n, _)| n == name);
    match r {
        JwtRequirement::Provider { name, audiences } => match index_of(name) {
            Some(index) => Verifier::Provider {
                index,
                audiences: audiences.clone().map(Vec::into_boxed_slice),
                extractor: Extractor::new(providers, &[index]),
            },
            // Checked at load: every named provider exists.
            None => Verifier::AllowAll,
        },
        JwtRequirement::All(list) => {
            Verifier::All(list.iter().map(|r| verifier(r, providers, None)).collect())
        }
        JwtRequirement::Any(list) => {
            let mut children = Vec::new();
            let mut named = Vec::new();
            let mut bypass: Option<bool> = None;
            for r in list {
                match r {
                    JwtRequirement::AllowMissing => bypass = Some(bypass.unwrap_or(false)),
                    JwtRequirement::AllowMissingOrFailed => bypass = Some(true),
                    other => {
                        if let JwtRequirement::Provider { name, .. } = other {
                            named.extend(index_of(name));
                        }
                        children.push(verifier(other, providers, None));
                    }
                }
            }
            if let Some(failed) = bypass {
                let r =
                    if failed { JwtRequirement::AllowMissingOrFailed } else { JwtRequirement::AllowMissing };
                children.push(verifier(&r, providers, Some(&named)));
            }
            Verifier::Any(children.into_boxed_slice())
        }
        JwtRequirement::AllowMissing | JwtRequirement::AllowMissingOrFailed => {
            let all: Vec<usize> = (0..providers.len()).collect();
            Verifier::Allow {
                failed: matches!(r, JwtRequirement::AllowMissingOrFailed),
                extractor: Extractor::new(providers, used.unwrap_or(&all)),
            }
        }
        JwtRequirement::AllowAll => Verifier::AllowAll,
    }
}

/// What verified tokens ask of the request sent upstream.
#[derive(Default)]
struct Output<'a> {
    /// Header lines to add (payloads, claims).
    added: Vec<u8>,
    /// Headers to remove (tokens not forwarded).
    removed: Vec<&'a str>,
    /// Query parameters to remove (tokens not forwarded).
    removed_params: Vec<&'a str>,
}

/// One request's verification.
struct Cx<'a, 'h> {
    head: &'h RequestHead<'h>,
    providers: &'a [Provider],
    stats: &'h JwtAuthnStats,
    out: Output<'a>,
    now: u64,
}

/// Where a token was found.
enum Location<'a> {
    Header(&'a str),
    Param(&'a str),
    Cookie,
}

struct Found<'a> {
    token: String,
    at: Location<'a>,
    issuers: &'a Issuers,
}

impl<'a> Cx<'a, '_> {
    fn verify(&mut self, v: &'a Verifier) -> Status {
        match v {
            Verifier::AllowAll => Status::Ok,
            Verifier::All(list) => {
                for child in list.iter() {
                    let s = self.verify(child);
                    if s != Status::Ok {
                        return s;
                    }
                }
                Status::Ok
            }
            Verifier::Any(list) => {
                let mut last = Status::Ok;
                for child in list.iter() {
                    last = self.verify(child);
                    if last == Status::Ok {
                        return last;
                    }
                }
                last
            }
            Verifier::Provider { index, audiences, extractor } => {
                let named = Some((*index, audiences.as_deref()));
                self.authenticate(extractor, named, false, false)
            }
            Verifier::Allow { failed, extractor } => self.authenticate(extractor, None, *failed, true),
        }
    }

    /// Envoy's authenticator: every token found must pass, last found first; allow-missing
    /// and allow-failed soften the outcome as Envoy's `doneWithStatus` does.
    fn authenticate(
        &mut self,
        extractor: &'a Extractor,
        named: Option<(usize, Option<&[String]>)>,
        allow_failed: bool,
        allow_missing: bool,
    ) -> Status {
        let mut tokens = self.extract(extractor);
        loop {
            let status = match tokens.pop() {
                None => Status::Missing,
                Some(found) => self.check(found, named),
            };
            if (status != Status::Ok && !allow_failed && !allow_missing) || tokens.is_empty() {
                return if allow_failed || (allow_missing && status == Status::Missing) {
                    Status::Ok
                } else {
                    status
                };
            }
        }
    }

    fn extract(&self, e: &'a Extractor) -> Vec<Found<'a>> {
        let mut found = Vec::new();
        for (name, prefix, issuers) in &e.headers {
            // A header an earlier verifier removed (its token not forwarded) is gone for the rest.
            if self.out.removed.iter().any(|r| r == name) {
                continue;
            }
            let lines = self.head.headers.iter().filter(|h| header_is(h.name, name));
            let values: Vec<Cow<'_, [u8]>> = if name == "authorization" {
                // An inline header in Envoy: its codec joins repeated lines into one value with
                // commas, and the filter sees that one value.
                let mut joined: Option<Vec<u8>> = None;
                for h in lines {
                    match joined.as_mut() {
                        None => joined = Some(h.value.to_vec()),
                        Some(j) => {
                            j.push(b',');
                            j.extend_from_slice(h.value);
                        }
                    }
                }
                joined.into_iter().map(Cow::Owned).collect()
            } else {
                lines.map(|h| Cow::Borrowed(h.value)).collect()
            };
            for value in &values {
                let Ok(value) = std::str::from_utf8(value) else { continue };
                let token = if prefix.is_empty() {
                    value
                } else {
                    match value.find(prefix.as_str()) {
                        Some(at) => after_prefix(value, at + prefix.len()),
                        None => continue,
                    }
                };
                found.push(Found { token: token.to_string(), at: Location::Header(name), issuers });
            }
        }
        if !e.params.is_empty() {
            if let Some((_, query)) = self.head.path.split_once('?') {
                for (name, issuers) in &e.params {
                    if self.out.removed_params.iter().any(|r| r == name) {
                        continue;
                    }
                    if let Some(value) = query_param(query, name) {
                        found.push(Found { token: value, at: Location::Param(name), issuers });
                    }
                }
            }
        }
        for (name, issuers) in &e.cookies {
            if let Some(value) = cookie(self.head.headers, name) {
                found.push(Found { token: value.to_string(), at: Location::Cookie, issuers });
            }
        }
        found
    }

    /// One token, Envoy's `startVerify` .. `handleGoodJwt`.
    fn check(&mut self, found: Found<'a>, named: Option<(usize, Option<&[String]>)>) -> Status {
        if named.is_some() {
            self.stats.jwt_cache_miss.inc();
        }
        let jwt = match Jwt::parse(&found.token) {
            Ok(jwt) => jwt,
            Err(s) => return s,
        };
        if !found.issuers.allows(&jwt.iss) {
            return Status::UnknownIssuer;
        }
        let index = match named {
            Some((i, _)) => i,
            None => {
                let by_issuer = self.providers.iter().position(|p| p.issuer == jwt.iss);
                match by_issuer.or_else(|| self.providers.iter().position(|p| p.issuer.is_empty())) {
                    Some(i) => i,
                    None => return Status::UnknownIssuer,
                }
            }
        };
        let Some(provider) = self.providers.get(index) else { return Status::UnknownIssuer };
        if self.now.saturating_add(provider.clock_skew) < jwt.nbf {
            return Status::NotYetValid;
        }
        if jwt.exp != 0 && self.now > jwt.exp.saturating_add(provider.clock_skew) {
            return Status::Expired;
        }
        let allowed = named.and_then(|(_, a)| a).unwrap_or(&provider.audiences);
        if !audiences_allowed(allowed, &jwt.aud) {
            return Status::AudienceNotAllowed;
        }
        let status = jwt.verify_signature(&provider.keys);
        if status != Status::Ok {
            return status;
        }
        if let Some(name) = &provider.payload_header {
            let mut payload = Cow::Borrowed(jwt.payload_b64);
            if provider.pad_payload && !payload.len().is_multiple_of(4) {
                let pad = 4 - payload.len() % 4;
                payload.to_mut().push_str(&"=="[..pad.min(2)]);
            }
            push_header(&mut self.out.added, name.as_bytes(), payload.as_bytes());
        }
        for (header, claim) in provider.claims.iter() {
            if let Some(value) = claim_value(&jwt.payload, claim).filter(|v| !v.is_empty()) {
                push_header(&mut self.out.added, header.as_bytes(), value.as_bytes());
            }
        }
        if !provider.forward {
            match found.at {
                Location::Header(name) => self.out.removed.push(name),
                Location::Param(name) => self.out.removed_params.push(name),
                // Envoy leaves a cookie in place.
                Location::Cookie => {}
            }
        }
        Status::Ok
    }
}

/// Envoy's `extractJWT`: from `after`, skip to the first base64url character or dot and take the
/// rest; with none, the whole value (as Envoy does, for compatibility).
fn after_prefix(value: &str, after: usize) -> &str {
    let tail = value.get(after..).unwrap_or("");
    match tail.find(|c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') {
        Some(i) => &tail[i..],
        None => value,
    }
}

/// The first value of query parameter `name`, percent-decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

/// `%XX` decoding, as Envoy's query parser does it (a `+` stays a `+`).
fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).and_then(|c| hex(*c)), b.get(i + 2).and_then(|c| hex(*c))) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The path with the named query parameters removed; Envoy rebuilds the query from its parsed
/// (decoded, key-sorted) parameters, and drops the `?` when none is left.
fn without_params(path: &str, removed: &[&str]) -> String {
    let Some((base, query)) = path.split_once('?') else { return path.to_string() };
    let mut kept: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .filter(|(k, _)| !removed.contains(&k.as_str()))
        .collect();
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = base.to_string();
    for (i, (k, v)) in kept.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Cookie `name` from the request's `cookie` headers (first one wins; quotes around the value go).
fn cookie<'h>(headers: &'h [httparse::Header<'_>], name: &str) -> Option<&'h str> {
    headers.iter().filter(|h| header_is(h.name, "cookie")).find_map(|h| {
        std::str::from_utf8(h.value).ok()?.split(';').find_map(|pair| {
            let (k, v) = pair.trim_start().split_once('=')?;
            (k == name).then(|| v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v))
        })
    })
}

fn is_cors_preflight(head: &RequestHead<'_>) -> bool {
    let present = |name: &str| head.headers.iter().any(|h| header_is(h.name, name) && !h.value.is_empty());
    head.method == "OPTIONS" && present("origin") && present("access-control-request-method")
}

/// Envoy's `buildOriginalUri`: the scheme of `x-forwarded-proto` as the connection manager left it
/// (the client's, unless absent or replaced at the edge), the Host as sent, the path (with its
/// query) cut at 256 bytes.
fn original_uri(head: &RequestHead<'_>, scheme: Scheme) -> String {
    let own = if scheme.tls { "https" } else { "http" };
    let claimed = head
        .headers
        .iter()
        .find(|h| header_is(h.name, "x-forwarded-proto"))
        .and_then(|h| std::str::from_utf8(h.value).ok());
    let proto = if scheme.edge { own } else { claimed.unwrap_or(own) };
    let mut cut = head.path.len().min(MAX_REALM_PATH);
    while !head.path.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{proto}://{}{}", head.host.unwrap_or(""), &head.path[..cut])
}

/// `CheckAudience`: none configured allows any; otherwise one of the token's must be listed, each
/// side compared without an `http://`/`https://` scheme or a trailing `/`.
fn audiences_allowed(allowed: &[String], token: &[String]) -> bool {
    fn bare(a: &str) -> &str {
        let a = a.strip_prefix("http://").or_else(|| a.strip_prefix("https://")).unwrap_or(a);
        a.strip_suffix('/').unwrap_or(a)
    }
    allowed.is_empty() || token.iter().any(|t| allowed.iter().any(|a| bare(a) == bare(t)))
}

/// A claim as a header value: strings as they are, whole non-negative numbers as integers, other
/// numbers as C's `%f`, booleans as `true`/`false`; `a.b` looks into objects. Other kinds: None.
fn claim_value(payload: &Map<String, Value>, claim: &str) -> Option<String> {
    let mut parts = claim.split('.');
    let mut value = payload.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                return Some(u.to_string());
            }
            let f = n.as_f64()?;
            if f >= 0.0 && f.fract() == 0.0 && f < u64::MAX as f64 {
                Some((f as u64).to_string())
            } else {
                Some(format!("{f:.6}"))
            }
        }
        _ => None,
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A token taken apart as Envoy's `Jwt::parseFromString` does.
struct Jwt<'t> {
    header_b64: &'t str,
    payload_b64: &'t str,
    /// The signature re-encoded without padding, as `jsonwebtoken` reads it.
    signature_b64: String,
    signature_len: usize,
    alg: String,
    kid: String,
    payload: Map<String, Value>,
    iss: String,
    aud: Vec<String>,
    exp: u64,
    nbf: u64,
}

const IMPLEMENTED_ALGS: &[&str] = &[
    "ES256", "ES384", "ES512", "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384",
    "PS512", "EdDSA",
];

impl<'t> Jwt<'t> {
    fn parse(token: &'t str) -> Result<Self, Status> {
        if token.bytes().filter(|b| *b == b'.').count() != 2 {
            return Err(Status::BadFormat);
        }
        let parts: Vec<&str> = token.split('.').filter(|p| !p.is_empty()).collect();
        let [header_b64, payload_b64, signature] = parts[..] else { return Err(Status::BadFormat) };
        let header = jwks::b64url(header_b64).ok_or(Status::HeaderBadBase64)?;
        let Ok(Value::Object(header)) = serde_json::from_slice::<Value>(&header) else {
            return Err(Status::HeaderBadJson);
        };
        let Some(Value::String(alg)) = header.get("alg") else { return Err(Status::HeaderBadAlg) };
        if !IMPLEMENTED_ALGS.contains(&alg.as_str()) {
            return Err(Status::HeaderNotImplementedAlg);
        }
        let kid = match header.get("kid") {
            None => String::new(),
            Some(Value::String(k)) => k.clone(),
            Some(_) => return Err(Status::HeaderBadKid),
        };
        let payload = jwks::b64url(payload_b64).ok_or(Status::PayloadBadBase64)?;
        let Ok(Value::Object(payload)) = serde_json::from_slice::<Value>(&payload) else {
            return Err(Status::PayloadBadJson);
        };
        let text = |field: &str, bad: Status| match payload.get(field) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(bad),
        };
        let iss = text("iss", Status::IssNotString)?;
        text("sub", Status::SubNotString)?;
        let time = |field: &str, not_int: Status, range: Status| match payload.get(field) {
            None => Ok(0),
            Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
                (Some(u), _) if u <= i64::MAX as u64 => Ok(u),
                (None, Some(f)) if f >= 0.0 && f < i64::MAX as f64 => Ok(f as u64),
                _ => Err(range),
            },
            Some(_) => Err(not_int),
        };
        time("iat", Status::IatNotInteger, Status::IatOutOfRange)?;
        let nbf = time("nbf", Status::NbfNotInteger, Status::NbfOutOfRange)?;
        let exp = time("exp", Status::ExpNotInteger, Status::ExpOutOfRange)?;
        text("jti", Status::JtiNotString)?;
        let aud = match payload.get("aud") {
            None => Vec::new(),
            Some(Value::String(a)) => vec![a.clone()],
            Some(Value::Array(list)) => list
                .iter()
                .map(|a| a.as_str().map(str::to_string).ok_or(Status::AudNotString))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(Status::AudNotString),
        };
        let signature = jwks::b64url(signature).ok_or(Status::SignatureBadBase64)?;
        let signature_b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&signature);
        Ok(Jwt {
            header_b64,
            payload_b64,
            signature_b64,
            signature_len: signature.len(),
            alg: alg.clone(),
            kid,
            payload,
            iss,
            aud,
            exp,
            nbf,
        })
    }

    /// Envoy's `verifyJwtWithoutTimeChecking`: keys whose `kid` and `alg` fit, in order.
    fn verify_signature(&self, keys: &[Jwk]) -> Status {
        let signed = format!("{}.{}", self.header_b64, self.payload_b64);
        let mut matched = false;
        for key in keys {
            if !self.kid.is_empty() && key.kid.as_deref().is_some_and(|k| !k.is_empty() && k != self.kid) {
                continue;
            }
            if key.alg.as_deref().is_some_and(|a| !a.is_empty() && a != self.alg) {
                continue;
            }
            matched = true;
            if key.kind == KeyKind::Ed25519 && self.signature_len != 64 {
                return Status::Ed25519WrongLength;
            }
            let Some(alg) = key.kind.algorithm(&self.alg) else { continue };
            if let Ok(true) =
                jsonwebtoken::crypto::verify(&self.signature_b64, signed.as_bytes(), &key.key, alg)
            {
                return Status::Ok;
            }
        }
        if matched {
            Status::VerificationFail
        } else {
            Status::KidAlgMismatch
        }
    }
}

/// The outcomes Envoy's JWT library names, with its words (the 401/403 body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    Missing,
    NotYetValid,
    Expired,
    BadFormat,
    HeaderBadBase64,
    HeaderBadJson,
    HeaderBadAlg,
    HeaderNotImplementedAlg,
    HeaderBadKid,
    PayloadBadBase64,
    PayloadBadJson,
    IssNotString,
    SubNotString,
    IatNotInteger,
    IatOutOfRange,
    NbfNotInteger,
    NbfOutOfRange,
    ExpNotInteger,
    ExpOutOfRange,
    JtiNotString,
    AudNotString,
    SignatureBadBase64,
    UnknownIssuer,
    AudienceNotAllowed,
    VerificationFail,
    KidAlgMismatch,
    Ed25519WrongLength,
}

impl Status {
    fn message(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Missing => "Jwt is missing",
            Status::NotYetValid => "Jwt not yet valid",
            Status::Expired => "Jwt is expired",
            Status::BadFormat => {
                "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
            }
            Status::HeaderBadBase64 => "Jwt header is an invalid Base64url encoded",
            Status::HeaderBadJson => "Jwt header is an invalid JSON",
            Status::HeaderBadAlg => "Jwt header [alg] field is required and must be a string",
            Status::HeaderNotImplementedAlg => "Jwt header [alg] is not supported",
            Status::HeaderBadKid => "Jwt header [kid] field is not a string",
            Status::PayloadBadBase64 => "Jwt payload is an invalid Base64url encoded",
            Status::PayloadBadJson => "Jwt payload is an invalid JSON",
            Status::IssNotString => "Jwt payload [iss] field is not a string",
            Status::SubNotString => "Jwt payload [sub] field is not a string",
            Status::IatNotInteger => "Jwt payload [iat] field is not an integer",
            Status::IatOutOfRange => "Jwt payload [iat] field is not a positive 64 bit integer",
            Status::NbfNotInteger => "Jwt payload [nbf] field is not an integer",
            Status::NbfOutOfRange => "Jwt payload [nbf] field is not a positive 64 bit integer",
            Status::ExpNotInteger => "Jwt payload [exp] field is not an integer",
            Status::ExpOutOfRange => "Jwt payload [exp] field is not a positive 64 bit integer",
            Status::JtiNotString => "Jwt payload [jti] field is not a string",
            Status::AudNotString => "Jwt payload [aud] field is not a string or string list",
            Status::SignatureBadBase64 => "Jwt signature is an invalid Base64url encoded",
            Status::UnknownIssuer => "Jwt issuer is not configured",
            Status::AudienceNotAllowed => "Audiences in Jwt are not allowed",
            Status::VerificationFail => "Jwt verification fails",
            Status::KidAlgMismatch => "Jwks doesn't have key to match kid or alg from Jwt",
            Status::Ed25519WrongLength => "Jwt ED25519 signature is wrong length",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_taken_after_its_prefix_as_envoy_extracts_it() {
        assert_eq!(after_prefix("Bearer abc.def.ghi", 7), "abc.def.ghi");
        assert_eq!(after_prefix("Bearer   abc", 7), "abc");
        // Nothing token-like after the prefix: Envoy hands on the whole value.
        assert_eq!(after_prefix("Bearer !!", 7), "Bearer !!");
    }

    #[test]
    fn removing_the_token_parameter_rebuilds_the_query_sorted() {
        assert_eq!(without_params("/q?access_token=t&y=2", &["access_token"]), "/q?y=2");
        assert_eq!(without_params("/q?z=1&access_token=t&a=%41", &["access_token"]), "/q?a=A&z=1");
        assert_eq!(without_params("/q?access_token=t", &["access_token"]), "/q");
    }

    #[test]
    fn audiences_compare_without_scheme_or_trailing_slash() {
        let allowed = vec!["https://api.example.com/".to_string()];
        assert!(audiences_allowed(&allowed, &["api.example.com".to_string()]));
        assert!(!audiences_allowed(&allowed, &["web".to_string()]));
        assert!(!audiences_allowed(&allowed, &[]));
        assert!(audiences_allowed(&[], &[]));
    }

    #[test]
    fn claims_become_header_values_as_envoy_writes_them() {
        let Ok(Value::Object(p)) = serde_json::from_str::<Value>(
            r#"{"s":"x","n":42,"f":1.5,"neg":-2,"b":true,"o":{"in":"deep"},"l":[1]}"#,
        ) else {
            panic!("test payload")
        };
        assert_eq!(claim_value(&p, "s").as_deref(), Some("x"));
        assert_eq!(claim_value(&p, "n").as_deref(), Some("42"));
        assert_eq!(claim_value(&p, "f").as_deref(), Some("1.500000"));
        assert_eq!(claim_value(&p, "neg").as_deref(), Some("-2.000000"));
        assert_eq!(claim_value(&p, "b").as_deref(), Some("true"));
        assert_eq!(claim_value(&p, "o.in").as_deref(), Some("deep"));
        assert_eq!(claim_value(&p, "l"), None);
        assert_eq!(claim_value(&p, "missing"), None);
    }

    #[test]
    fn malformed_tokens_get_envoys_status() {
        assert_eq!(Jwt::parse("abc").err(), Some(Status::BadFormat));
        assert_eq!(Jwt::parse("a..b").err(), Some(Status::BadFormat));
        assert_eq!(Jwt::parse("!!.e30.c2ln").err(), Some(Status::HeaderBadBase64));
        // {"alg":"none"}
        assert_eq!(Jwt::parse("eyJhbGciOiJub25lIn0.e30.c2ln").err(), Some(Status::HeaderNotImplementedAlg));
    }
}
