//! `envoy.filters.http.jwt_authn` as a user sees it in skiff alone: what the config refuses and
//! where (a bad JWKS, `remote_jwks`, an unknown provider), what it warns about, and the rules the
//! parity suite (`tests/parity_jwt.rs`) does not drive: every token of a request must pass, the
//! clock skew, a token kept with `forward: true`. Real skiff, real loopback upstream, tokens signed
//! in the test with fresh keys.

mod support;

#[path = "support/jwt.rs"]
mod jwt;

use jsonwebtoken::Algorithm;
use serde_json::json;
use skiff::config::load_str;
use support::filters::{self, req_with, Req};
use support::{scratch_dir, Skiff, TestUpstream};

const JWKS: &str = r#"{"keys":[{"kty":"oct","alg":"HS256","kid":"hs","k":"c2VjcmV0"}]}"#;

/// A bootstrap with the JWT filter `filter` (its `typed_config` body, column 0) and `routes`.
fn bootstrap(filter: &str, routes: &str) -> String {
    let filter = format!("{}{}", jwt::FILTER_HEAD, support::indent(filter, 4));
    // Only loaded, never run: nothing is written there.
    let log = std::env::temp_dir().join("skiff-jwt-config-test.log");
    filters::config(0, 0, &log, "127.0.0.1:1".parse().expect("addr"), &filter, routes)
}

fn load_err(filter: &str, routes: &str) -> String {
    match load_str(&bootstrap(filter, routes), "skiff.yaml") {
        Ok(_) => panic!("loaded:\n{filter}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_bad_jwks_is_refused_at_load_with_envoys_reason_and_its_place() {
    let err = load_err(
        "providers:\n  p:\n    issuer: i\n    local_jwks: { inline_string: \"not json\" }\n",
        filters::ALL_TO_BACKEND,
    );
    assert!(
        err.contains("Provider 'p' in jwt_authn config has invalid local jwks: Jwks is an invalid JSON"),
        "{err}"
    );
    assert!(err.contains("providers.p.local_jwks"), "{err}");
    let err = load_err(
        "providers:\n  p:\n    local_jwks: { inline_string: '{\"keys\":[{\"kty\":\"RSA\",\"e\":\"AQAB\"}]}' }\n",
        filters::ALL_TO_BACKEND,
    );
    assert!(err.contains("[n] field is missing for a RSA key"), "{err}");
}

#[test]
fn remote_jwks_unknown_providers_and_misplaced_configs_are_refused_by_name() {
    let remote = "providers:\n  p:\n    remote_jwks: { http_uri: { uri: \"https://x/jwks\", cluster: c, timeout: 1s } }\n";
    let err = load_err(remote, filters::ALL_TO_BACKEND);
    assert!(err.contains("remote_jwks is not supported") && err.contains("HTTP client"), "{err}");
    let unknown = format!(
        "providers:\n  p:\n    local_jwks: {{ inline_string: '{JWKS}' }}\nrules:\n  - match: {{ prefix: / }}\n    requires: {{ provider_name: q }}\n"
    );
    let err = load_err(&unknown, filters::ALL_TO_BACKEND);
    assert!(
        err.contains("Required provider ['q'] is not configured.") && err.contains("rules[0].requires"),
        "{err}"
    );
    let per_route_as_filter = "- name: envoy.filters.http.jwt_authn\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig\n    disabled: true\n";
    let log = std::env::temp_dir().join("skiff-jwt-config-test.log");
    let yaml = filters::config(
        0,
        0,
        &log,
        "127.0.0.1:1".parse().expect("addr"),
        per_route_as_filter,
        filters::ALL_TO_BACKEND,
    );
    let err = load_str(&yaml, "skiff.yaml").err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("PerRouteConfig belongs in typed_per_filter_config"), "{err}");
}

#[test]
fn payload_in_metadata_is_accepted_with_a_warning_naming_the_field() {
    let filter = format!(
        "providers:\n  p:\n    payload_in_metadata: jwt\n    local_jwks: {{ inline_string: '{JWKS}' }}\n"
    );
    let loaded = load_str(&bootstrap(&filter, filters::ALL_TO_BACKEND), "skiff.yaml")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.contains("providers.p.payload_in_metadata") && w.contains("no dynamic metadata")),
        "{:?}",
        loaded.warnings
    );
}

#[test]
fn the_shipped_jwt_config_loads() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/security/jwt.yaml");
    let loaded = skiff::config::load_file(std::path::Path::new(path)).unwrap_or_else(|e| panic!("{e}"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Every token a request carries must pass; a kept token goes upstream as it came; `keep`'s 5 s
/// clock skew lets a token 2 s past `exp` in and keeps one 60 s past out; repeated Authorization
/// lines are one value, as Envoy's codec joins them.
#[test]
fn every_token_must_pass_and_forward_keeps_the_token_within_the_clock_skew() {
    let keys = jwt::Keys::generate(&scratch_dir("jwt-keys"));
    let now = jwt::now();
    let good = keys.sign(Algorithm::RS256, &jwt::good_claims());
    let keep = |exp: i64| {
        keys.sign(Algorithm::ES256, &json!({ "iss": "https://keep.test", "exp": exp, "sub": "bob" }))
    };
    let (keep_recent, keep_old) = (keep(now - 2), keep(now - 60));
    let bad = jwt::tampered(&keep_recent);
    let requests: Vec<Req> = vec![
        // Repeated `x-token` lines are separate tokens (Authorization lines would be joined).
        req_with("/keep", &[("x-token", leak(keep_recent.clone())), ("x-token", leak(bad))]),
        req_with("/keep", &[("x-token", leak(keep_recent.clone())), ("x-token", leak(keep_recent.clone()))]),
        req_with("/keep", &[("x-token", leak(keep_recent.clone()))]),
        req_with("/keep", &[("x-token", leak(keep_old))]),
        req_with(
            "/api",
            &[
                ("authorization", leak(format!("Bearer {good}"))),
                ("authorization", leak(format!("Bearer {good}"))),
            ],
        ),
    ];
    let up = TestUpstream::echo();
    let dir = scratch_dir("jwt-run");
    let log = dir.join("access.log");
    let sk = Skiff::start(
        &filters::config(0, 0, &log, up.addr, &jwt::filter_yaml(&keys.jwks()), &jwt::routes()),
        &[],
    );
    let run = filters::drive(sk.listener("main"), sk.admin(), &log, &up, &requests);
    drop(sk);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(run.status(0), 401);
    assert_eq!(run.response(0).body, b"Jwt verification fails");
    assert_eq!(run.status(1), 200);
    // Two verified tokens: each adds its payload.
    assert_eq!(run.upstream[0].headers.iter().filter(|(n, _)| n == "x-keep-payload").count(), 2);
    assert_eq!(run.status(2), 200);
    assert_eq!(run.upstream[1].header("x-token"), Some(keep_recent.as_str()));
    assert_eq!(run.status(3), 401);
    assert_eq!(run.response(3).body, b"Jwt is expired");
    assert_eq!(run.status(4), 401);
    assert_eq!(
        run.response(4).body,
        b"Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
    );
    assert_eq!(run.stat("http.ingress.jwt_authn.denied"), 3);
    assert_eq!(run.stat("http.ingress.jwt_authn.allowed"), 2);
}
