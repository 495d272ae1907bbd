//! Envoy parity for `envoy.filters.http.jwt_authn`: the same config (`support/jwt.rs`) and the
//! same tokens, signed in the test with fresh keys, go through the real Envoy and through skiff,
//! each in front of its own upstream; statuses, bodies, `www-authenticate`, what the upstream saw
//! (path, token, payload and claim headers), the access-log lines and the filter's stats must be
//! equal. Envoy is found via `$ENVOY_BIN` or PATH; without it these tests fail under CI and skip
//! elsewhere.

mod support;

#[path = "support/envoy.rs"]
mod envoy;
#[path = "support/jwt.rs"]
mod jwt;

use jsonwebtoken::Algorithm;
use serde_json::json;
use support::filters::{self, req, req_with, Req, Run};
use support::{scratch_dir, Skiff, TestUpstream};

/// Headers the upstream sees that the filter adds, removes or keeps.
const UPSTREAM_HEADERS: &[&str] = &[
    "authorization",
    "x-token",
    "x-jwt-payload",
    "x-keep-payload",
    "x-jwt-sub",
    "x-jwt-n",
    "x-jwt-team",
    "x-jwt-f",
    "x-jwt-neg",
    "x-jwt-admin",
];

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn run(bin: Option<&std::path::Path>, filter: &str, routes: &str, requests: &[Req]) -> Run {
    let dir = scratch_dir("parity-jwt");
    let up = TestUpstream::echo();
    let log = dir.join("access.log");
    // The shared log format carries the reply's code details (the filter's reason).
    let config = |port, admin| filters::config(port, admin, &log, up.addr, filter, routes);
    let run = match bin {
        Some(bin) => {
            let e = envoy::Envoy::start(bin, &dir, config);
            filters::drive(e.listener, e.admin, &log, &up, requests)
        }
        None => {
            let sk = Skiff::start(&config(0, 0), &["--concurrency", "2"]);
            filters::drive(sk.listener("main"), sk.admin(), &log, &up, requests)
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    run
}

/// What is compared, as lines.
fn render(run: &Run) -> Vec<String> {
    let mut out = Vec::new();
    for (i, (resp, _)) in run.responses.iter().enumerate() {
        let Some(r) = resp else {
            out.push(format!("#{i} no response"));
            continue;
        };
        // A 200's body is the echo upstream's view, compared header by header below.
        let body =
            if r.status == 200 { String::new() } else { String::from_utf8_lossy(&r.body).into_owned() };
        out.push(format!("#{i} {} {body:?}", r.status));
        for h in ["www-authenticate", "content-type"] {
            if let Some(v) = r.header(h) {
                out.push(format!("#{i} {h}: {v}"));
            }
        }
    }
    // The upstream's view, in arrival order (requests are sent one after another).
    for (i, seen) in run.upstream.iter().enumerate() {
        out.push(format!("up#{i} {}", seen.path));
        for h in UPSTREAM_HEADERS {
            if let Some(v) = seen.header(h) {
                out.push(format!("up#{i} {h}: {v}"));
            }
        }
    }
    let mut log = run.log.clone();
    log.sort();
    out.extend(log.iter().map(|l| format!("log {l}")));
    for (name, v) in &run.stats {
        if name.starts_with("http.ingress.jwt_authn.") {
            out.push(format!("stat {name} = {v}"));
        }
    }
    out
}

/// Runs `requests` through both and asserts they agree; returns skiff's run.
fn same(name: &str, requests: &[Req]) -> Option<Run> {
    same_with(name, jwt::filter_yaml, &jwt::routes(), requests)
}

/// `same` with the filter config `make_filter` writes for a JWKS.
fn same_with(name: &str, make_filter: fn(&str) -> String, routes: &str, requests: &[Req]) -> Option<Run> {
    let bin = envoy::binary_or_skip(name)?;
    let keys = jwt::Keys::generate(&scratch_dir("jwt-keys"));
    let filter = make_filter(&keys.jwks());
    // The tokens depend on the keys, so the caller's requests name them by placeholder.
    let tokens = tokens(&keys);
    let requests: Vec<Req> = requests
        .iter()
        .map(|r| Req {
            method: r.method,
            path: leak(fill(r.path, &tokens)),
            headers: r.headers.iter().map(|(n, v)| (*n, leak(fill(v, &tokens)))).collect(),
        })
        .collect();
    let (e, k) = std::thread::scope(|s| {
        let e = s.spawn(|| run(Some(&bin), &filter, routes, &requests));
        let k = s.spawn(|| run(None, &filter, routes, &requests));
        (e.join().expect("envoy side"), k.join().expect("skiff side"))
    });
    let (re, rk) = (render(&e), render(&k));
    if std::env::var_os("JWT_SHOW").is_some() {
        eprintln!("{}", re.join("\n"));
    }
    let diff: Vec<String> = (0..re.len().max(rk.len()))
        .filter(|i| re.get(*i) != rk.get(*i))
        .map(|i| format!("envoy: {:?}\nskiff: {:?}", re.get(i), rk.get(i)))
        .collect();
    assert!(
        diff.is_empty(),
        "{name}: envoy and skiff differ:\n{}\n\nenvoy:\n{}",
        diff.join("\n"),
        re.join("\n")
    );
    Some(k)
}

/// Replaces `{name}` placeholders with their tokens.
fn fill(text: &str, tokens: &[(&str, String)]) -> String {
    let mut out = text.to_string();
    for (name, token) in tokens {
        out = out.replace(name, token);
    }
    out
}

/// The tokens the placeholders name, signed now with `keys` (once per scenario: RSA signing in a
/// debug build is what a scenario would otherwise spend its time on).
fn tokens(keys: &jwt::Keys) -> Vec<(&'static str, String)> {
    let now = jwt::now();
    vec![
        ("{good}", keys.sign(Algorithm::RS256, &jwt::good_claims())),
        ("{good_ps}", keys.sign(Algorithm::PS256, &jwt::good_claims())),
        ("{good_es}", keys.sign(Algorithm::ES256, &jwt::good_claims())),
        ("{good_ed}", keys.sign(Algorithm::EdDSA, &jwt::good_claims())),
        ("{good_hs}", keys.sign(Algorithm::HS256, &jwt::good_claims())),
        ("{good_rs384}", keys.sign(Algorithm::RS384, &jwt::good_claims())),
        ("{good_rs512}", keys.sign(Algorithm::RS512, &jwt::good_claims())),
        ("{good_ps512}", keys.sign(Algorithm::PS512, &jwt::good_claims())),
        ("{good_hs512}", keys.sign(Algorithm::HS512, &jwt::good_claims())),
        ("{good_es384}", keys.sign(Algorithm::ES384, &jwt::good_claims())),
        ("{expired}", keys.sign(Algorithm::RS256, &jwt::claims_with(json!({ "exp": now - 3600 })))),
        ("{early}", keys.sign(Algorithm::ES256, &jwt::claims_with(json!({ "nbf": now + 3600 })))),
        (
            "{other_iss}",
            keys.sign(Algorithm::RS256, &jwt::claims_with(json!({ "iss": "https://other.test" }))),
        ),
        ("{web_aud}", keys.sign(Algorithm::RS256, &jwt::claims_with(json!({ "aud": ["web", "other"] })))),
        ("{tampered}", jwt::tampered(&keys.sign(Algorithm::RS256, &jwt::good_claims()))),
        (
            "{keep}",
            keys.sign(Algorithm::HS256, &jwt::claims_with(json!({ "iss": "https://keep.test", "x": "1" }))),
        ),
    ]
}

#[test]
fn valid_expired_wrong_issuer_wrong_audience_bad_signature_and_missing_tokens() {
    let requests = [
        req_with("/api", &[("authorization", "Bearer {good}")]),
        req_with("/api", &[("authorization", "Bearer {good_ps}")]),
        req_with("/api", &[("authorization", "Bearer {good_es}")]),
        req_with("/api", &[("authorization", "Bearer {good_ed}")]),
        req_with("/api", &[("authorization", "Bearer {good_hs}")]),
        req_with("/api?x=1", &[("authorization", "Bearer {expired}")]),
        req_with("/api", &[("authorization", "Bearer {early}")]),
        req_with("/api", &[("authorization", "Bearer {other_iss}")]),
        req_with("/api", &[("authorization", "Bearer {web_aud}")]),
        req_with("/api", &[("authorization", "Bearer {tampered}")]),
        req("/api/missing"),
        req_with("/api/missing", &[("x-forwarded-proto", "https")]),
        req_with("/api", &[("authorization", "Bearer not-a-jwt")]),
        req_with("/api", &[("authorization", "Basic dXNlcjpwYXNz")]),
        req_with("/api", &[("authorization", "Bearer {good_rs384}")]),
        req_with("/api", &[("authorization", "Bearer {good_rs512}")]),
        req_with("/api", &[("authorization", "Bearer {good_ps512}")]),
        req_with("/api", &[("authorization", "Bearer {good_hs512}")]),
        req_with("/api", &[("authorization", "Bearer {good_es384}")]),
        req_with("/api", &[("authorization", "Bearer {good}"), ("authorization", "Bearer {tampered}")]),
        req_with("/api", &[("authorization", "Bearer {tampered}"), ("authorization", "Bearer {good}")]),
        req_with("/api", &[("authorization", "Bearer {good}"), ("authorization", "Bearer {good_es}")]),
        req_with("/api", &[("authorization", "Bearer {good}"), ("x-jwt-team", "spoofed")]),
    ];
    let Some(k) = same("jwt_basic", &requests) else { return };
    assert_eq!(k.status(0), 200);
    assert_eq!(k.response(5).body, b"Jwt is expired");
    assert_eq!(
        k.response(5).header("www-authenticate"),
        Some("Bearer realm=\"http://test/api?x=1\", error=\"invalid_token\"")
    );
    assert_eq!(k.status(8), 403);
    assert_eq!(k.stat("http.ingress.jwt_authn.allowed"), 11);
    // Envoy joins repeated Authorization lines into one value: no longer a token.
    assert_eq!(k.status(21), 401);
    for i in 14..19 {
        assert_eq!(k.status(i), 200, "request {i}");
    }
    assert_eq!(k.response(11).header("www-authenticate"), Some("Bearer realm=\"https://test/api/missing\""));
    assert!(k.log.contains(&"401 - /api?x=1 backend jwt_authn_access_denied{Jwt_is_expired}".to_string()));
}

#[test]
fn token_in_query_param_is_taken_out_of_the_path_and_claims_become_headers() {
    let requests = [
        req("/api?b=2&access_token={good}&a=1"),
        req("/api?b=%2F&access_token={good}&c&a=%41+"),
        req_with("/api", &[("authorization", "bearer {good}")]),
        req_with("/public", &[("x-jwt-sub", "spoofed"), ("x-jwt-payload", "spoofed")]),
        req_with("/nothing-matches-this-rule?access_token=bad", &[("x-jwt-sub", "spoofed")]),
    ];
    let Some(k) = same("jwt_query", &requests) else { return };
    assert_eq!(k.upstream[0].path, "/api?a=1&b=2");
    assert_eq!(k.upstream[0].header("x-jwt-sub"), Some("alice"));
    assert_eq!(k.upstream[2].path, "/public");
    assert_eq!(k.upstream[2].header("x-jwt-sub"), None);
}

#[test]
fn requirements_any_all_audiences_and_per_route_overrides() {
    let requests = [
        req("/opt"),
        req_with("/opt", &[("authorization", "Bearer {expired}")]),
        req_with("/opt", &[("authorization", "Bearer {good}")]),
        req_with("/keep", &[("x-token", "{keep}")]),
        req_with("/keep", &[("x-token", "{good}")]),
        req_with("/both", &[("authorization", "Bearer {good}"), ("x-token", "{keep}")]),
        req_with("/both", &[("authorization", "Bearer {good}")]),
        req_with("/web", &[("authorization", "Bearer {web_aud}")]),
        req_with("/web", &[("authorization", "Bearer {good}")]),
        req_with("/mapped", &[("x-token", "{keep}")]),
        req("/mapped"),
        req("/off"),
        req("/unknown"),
    ];
    let Some(k) = same("jwt_requirements", &requests) else { return };
    assert_eq!(k.status(0), 200);
    assert_eq!(k.status(12), 403);
}

#[test]
fn cookies_allow_missing_or_failed_cors_preflight_and_stripped_failures() {
    let options = |path: &'static str| {
        let mut r =
            req_with(path, &[("origin", "http://web.test"), ("access-control-request-method", "GET")]);
        r.method = "OPTIONS";
        r
    };
    let requests = [
        req_with("/api", &[("cookie", "a=1; session={good_es}; b=2")]),
        req_with("/api", &[("cookie", "session=\"{good_ed}\"")]),
        req("/api?tok={good_hs}&z=1"),
        req_with("/api", &[("cookie", "session={expired}")]),
        req("/api"),
        req("/missing-ok"),
        req_with("/missing-ok", &[("cookie", "session={tampered}")]),
        req_with("/missing-ok", &[("cookie", "session={good}")]),
        req_with("/failed-ok", &[("cookie", "session={tampered}")]),
        req_with("/failed-ok?tok={good}", &[("cookie", "session={expired}")]),
        options("/api"),
    ];
    let Some(k) = same_with("jwt_lenient", jwt::lenient_filter_yaml, &jwt::routes(), &requests) else {
        return;
    };
    assert_eq!(k.status(3), 401);
    assert!(k.response(3).body.is_empty());
    assert_eq!(k.stat("http.ingress.jwt_authn.cors_preflight_bypassed"), 1);
}

/// Envoy's filters run before its router finds there is no route: a request for a host no
/// virtual host serves meets the JWT filter first (401), and only a valid token reaches the 404.
#[test]
fn a_request_without_a_route_meets_the_filter_before_the_404() {
    let routes = "virtual_hosts:\n  - name: only\n    domains: [only.test]\n    routes:\n      - match: { prefix: / }\n        route: { cluster: backend }\n";
    let requests = [req("/api"), req_with("/api", &[("authorization", "Bearer {good}")]), req("/public")];
    let Some(k) = same_with("jwt_no_route", jwt::filter_yaml, routes, &requests) else { return };
    assert_eq!(k.status(0), 401);
    assert_eq!(k.status(1), 404);
    assert_eq!(k.stat("http.ingress.jwt_authn.allowed"), 2);
}
