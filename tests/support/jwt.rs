//! Keys and tokens for the JWT filter tests (`tests/jwt.rs`, `tests/parity_jwt.rs`): fresh RSA,
//! P-256, P-384 and Ed25519 key pairs made by the `openssl` CLI, their public halves as a JWKS, and
//! tokens signed with them by `jsonwebtoken`. Include with `#[path = "support/jwt.rs"]`.
#![allow(dead_code)]

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

/// A shared HMAC secret (kid `hs`), as its JWKS `k`.
pub const HMAC_SECRET: &[u8] = b"a-test-secret-of-thirty-two-bytes!!";

pub struct Keys {
    rsa_der: Vec<u8>,
    rsa_n: String,
    ec_der: Vec<u8>,
    ec_x: String,
    ec_y: String,
    ec384_der: Vec<u8>,
    ec384_x: String,
    ec384_y: String,
    ed_der: Vec<u8>,
    ed_x: String,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

impl Keys {
    /// New key pairs, made in `dir`, which is removed afterwards (the keys live in memory).
    pub fn generate(dir: &Path) -> Keys {
        openssl(dir, &["genrsa", "-out", "rsa.pem", "2048"]);
        let rsa_der = openssl(dir, &["rsa", "-in", "rsa.pem", "-outform", "DER", "-traditional"]);
        let modulus =
            String::from_utf8(openssl(dir, &["rsa", "-in", "rsa.pem", "-noout", "-modulus"])).expect("utf8");
        let hex = modulus.trim().trim_start_matches("Modulus=");
        let n: Vec<u8> =
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect();
        openssl(dir, &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ec.pem"]);
        let ec_der = openssl(dir, &["pkcs8", "-topk8", "-nocrypt", "-in", "ec.pem", "-outform", "DER"]);
        let ec_pub = openssl(dir, &["ec", "-in", "ec.pem", "-pubout", "-outform", "DER"]);
        let point = &ec_pub[ec_pub.len() - 64..];
        openssl(dir, &["ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out", "ec384.pem"]);
        let ec384_der = openssl(dir, &["pkcs8", "-topk8", "-nocrypt", "-in", "ec384.pem", "-outform", "DER"]);
        let ec384_pub = openssl(dir, &["ec", "-in", "ec384.pem", "-pubout", "-outform", "DER"]);
        let point384 = &ec384_pub[ec384_pub.len() - 96..];
        openssl(dir, &["genpkey", "-algorithm", "ed25519", "-out", "ed.pem"]);
        let ed_der = openssl(dir, &["pkey", "-in", "ed.pem", "-outform", "DER"]);
        let ed_pub = openssl(dir, &["pkey", "-in", "ed.pem", "-pubout", "-outform", "DER"]);
        let _ = std::fs::remove_dir_all(dir);
        Keys {
            rsa_der,
            rsa_n: b64(&n),
            ec_der,
            ec_x: b64(&point[..32]),
            ec_y: b64(&point[32..]),
            ec384_der,
            ec384_x: b64(&point384[..48]),
            ec384_y: b64(&point384[48..]),
            ed_der,
            ed_x: b64(&ed_pub[ed_pub.len() - 32..]),
        }
    }

    /// The public keys: `rsa` (RS256), `ps` (the same RSA key for PS256), `ec` (ES256), `ec384`
    /// (ES384), `ed`
    /// (EdDSA), `hs` (HS256), and `rsa-any` / `hs-any` without an `alg`.
    pub fn jwks(&self) -> String {
        json!({ "keys": [
            { "kty": "RSA", "alg": "RS256", "kid": "rsa", "n": self.rsa_n, "e": "AQAB" },
            { "kty": "RSA", "alg": "PS256", "kid": "ps", "n": self.rsa_n, "e": "AQAB" },
            { "kty": "EC", "alg": "ES256", "kid": "ec", "crv": "P-256", "x": self.ec_x, "y": self.ec_y },
            { "kty": "EC", "alg": "ES384", "kid": "ec384", "crv": "P-384", "x": self.ec384_x, "y": self.ec384_y },
            { "kty": "OKP", "alg": "EdDSA", "kid": "ed", "crv": "Ed25519", "x": self.ed_x },
            { "kty": "oct", "alg": "HS256", "kid": "hs", "k": b64(HMAC_SECRET) },
            // No `alg`: any algorithm of the key's family.
            { "kty": "RSA", "kid": "rsa-any", "n": self.rsa_n, "e": "AQAB" },
            { "kty": "oct", "kid": "hs-any", "k": b64(HMAC_SECRET) },
        ]})
        .to_string()
    }

    /// A token for `claims` signed with `alg` under the matching key.
    pub fn sign(&self, alg: Algorithm, claims: &Value) -> String {
        let (kid, key) = match alg {
            Algorithm::RS256 => ("rsa", EncodingKey::from_rsa_der(&self.rsa_der)),
            Algorithm::PS256 => ("ps", EncodingKey::from_rsa_der(&self.rsa_der)),
            Algorithm::ES256 => ("ec", EncodingKey::from_ec_der(&self.ec_der)),
            Algorithm::ES384 => ("ec384", EncodingKey::from_ec_der(&self.ec384_der)),
            Algorithm::EdDSA => ("ed", EncodingKey::from_ed_der(&self.ed_der)),
            Algorithm::HS256 => ("hs", EncodingKey::from_secret(HMAC_SECRET)),
            Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS384 | Algorithm::PS512 => {
                ("rsa-any", EncodingKey::from_rsa_der(&self.rsa_der))
            }
            Algorithm::HS384 | Algorithm::HS512 => ("hs-any", EncodingKey::from_secret(HMAC_SECRET)),
        };
        let mut header = Header::new(alg);
        header.kid = Some(kid.to_string());
        jsonwebtoken::encode(&header, claims, &key).expect("sign")
    }
}

/// Seconds since the epoch, for `exp` and `nbf`.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// A token's payload segment, as `forward_payload_header` carries it.
pub fn payload_segment(token: &str) -> &str {
    token.split('.').nth(1).unwrap_or("")
}

/// The same token with its signature's first character changed.
pub fn tampered(token: &str) -> String {
    let (signed, sig) = token.rsplit_once('.').expect("a token");
    let first = if sig.starts_with('A') { 'B' } else { 'A' };
    format!("{signed}.{first}{}", &sig[1..])
}

/// The start of a jwt_authn `http_filters` entry, up to its `typed_config`'s fields (column 4).
pub const FILTER_HEAD: &str = r#"- name: envoy.filters.http.jwt_authn
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
"#;

/// The `http_filters` entry the JWT tests share (column 0): provider `main` (issuer
/// `https://issuer.test`, audience `api`, default token locations, payload and claims forwarded as
/// headers), provider `keep` (its own header `x-token`, token kept, padded payload), rules by
/// path, and a `requirement_map` the routes pick from.
pub fn filter_yaml(jwks: &str) -> String {
    let jwks = crate::support::indent(jwks, 12);
    format!(
        r#"{FILTER_HEAD}    providers:
      main:
        issuer: https://issuer.test
        audiences: [api]
        local_jwks:
          inline_string: |
{jwks}        forward_payload_header: x-jwt-payload
        claim_to_headers:
          - {{ header_name: x-jwt-sub, claim_name: sub }}
          - {{ header_name: x-jwt-n, claim_name: "n" }}
          - {{ header_name: x-jwt-team, claim_name: org.team }}
          - {{ header_name: x-jwt-f, claim_name: f }}
          - {{ header_name: x-jwt-neg, claim_name: neg }}
          - {{ header_name: x-jwt-admin, claim_name: admin }}
      keep:
        issuer: https://keep.test
        from_headers: [ {{ name: x-token }} ]
        forward: true
        forward_payload_header: x-keep-payload
        pad_forward_payload_header: true
        clock_skew_seconds: 5
        local_jwks:
          inline_string: |
{jwks}    requirement_map:
      alpha: {{ provider_name: keep }}
      either:
        requires_any:
          requirements: [ {{ provider_name: main }}, {{ provider_name: keep }} ]
    rules:
      - match: {{ prefix: /public }}
      - match: {{ prefix: /opt }}
        requires:
          requires_any:
            requirements: [ {{ provider_name: main }}, {{ allow_missing: {{}} }} ]
      - match: {{ prefix: /keep }}
        requires: {{ provider_name: keep }}
      - match: {{ prefix: /both }}
        requires:
          requires_all:
            requirements: [ {{ provider_name: main }}, {{ provider_name: keep }} ]
      - match: {{ prefix: /web }}
        requires: {{ provider_and_audiences: {{ provider_name: main, audiences: [web] }} }}
      - match: {{ prefix: / }}
        requires: {{ provider_name: main }}
"#
    )
}

/// Routes for `filter_yaml` (the contents of `route_config:`): `/mapped` takes the map's
/// `either`, `/off` turns the filter off, `/unknown` names a requirement the map lacks.
pub fn routes() -> String {
    let with_config = |prefix: &str, setting: &str| {
        format!(
            r#"      - match: {{ prefix: {prefix} }}
        route: {{ cluster: backend }}
        typed_per_filter_config:
          envoy.filters.http.jwt_authn:
            "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig
            {setting}
"#
        )
    };
    format!(
        "virtual_hosts:\n  - name: all\n    domains: [\"*\"]\n    routes:\n{}{}{}      - match: {{ prefix: / }}\n        route: {{ cluster: backend }}\n",
        with_config("/mapped", "requirement_name: either"),
        with_config("/off", "disabled: true"),
        with_config("/unknown", "requirement_name: nope"),
    )
}

/// Claims of a token `main` accepts: issuer, audience, an hour to live, and the claims the
/// filter copies to headers.
pub fn good_claims() -> Value {
    json!({ "iss": "https://issuer.test", "aud": "api", "sub": "alice", "exp": now() + 3600,
            "n": 42, "org": { "team": "core" }, "f": 1.5, "neg": -2, "admin": true })
}

/// `good_claims` with `changes` merged over them.
pub fn claims_with(changes: Value) -> Value {
    let mut c = good_claims();
    if let (Some(c), Value::Object(changes)) = (c.as_object_mut(), changes) {
        c.extend(changes);
    }
    c
}

/// A second filter config (column 0): provider `c` reads cookie `session` and parameter `tok`
/// (issuer any), `bypass_cors_preflight` and `strip_failure_response` are on, and rules use
/// `allow_missing` / `allow_missing_or_failed` on their own.
pub fn lenient_filter_yaml(jwks: &str) -> String {
    let jwks = crate::support::indent(jwks, 12);
    format!(
        r#"{FILTER_HEAD}    bypass_cors_preflight: true
    strip_failure_response: true
    providers:
      c:
        from_cookies: [session]
        from_params: [tok]
        forward_payload_header: x-jwt-payload
        pad_forward_payload_header: true
        claim_to_headers: [ {{ header_name: x-jwt-sub, claim_name: sub }} ]
        local_jwks:
          inline_string: |
{jwks}    rules:
      - match: {{ prefix: /missing-ok }}
        requires: {{ allow_missing: {{}} }}
      - match: {{ prefix: /failed-ok }}
        requires: {{ allow_missing_or_failed: {{}} }}
      - match: {{ prefix: / }}
        requires: {{ provider_name: c }}
"#
    )
}
