//! A JSON Web Key Set (`local_jwks` of a JWT provider) read into verification keys, with Envoy's
//! checks and Envoy's words for what is wrong (its `Jwks::createFrom`). Used at load, where a bad
//! set is a located error as in Envoy 1.40, and by `filters::jwt_authn`, which keeps the keys.
//! The key material goes to `jsonwebtoken` (on ring) untouched; nothing here does crypto.

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

/// One usable key.
#[derive(Clone)]
pub struct Jwk {
    /// `kid`; None matches any token `kid`.
    pub kid: Option<String>,
    /// `alg`; None matches any token `alg` this key's type can check.
    pub alg: Option<String>,
    pub kind: KeyKind,
    pub key: DecodingKey,
}

impl std::fmt::Debug for Jwk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwk")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("kind", &self.kind)
            .finish()
    }
}

/// `kty` (and, for EC, the curve).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    /// P-256, P-384 or P-521 (which `jsonwebtoken` cannot check: ES512 tokens then fail).
    Ec(EcCurve),
    Oct,
    Ed25519,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcCurve {
    P256,
    P384,
    P521,
}

impl KeyKind {
    /// The `jsonwebtoken` algorithm that checks a token signed with `alg` under this key; None:
    /// this key cannot check it (Envoy then tries the next key).
    pub fn algorithm(self, alg: &str) -> Option<Algorithm> {
        Some(match (self, alg) {
            (KeyKind::Rsa, "RS256") => Algorithm::RS256,
            (KeyKind::Rsa, "RS384") => Algorithm::RS384,
            (KeyKind::Rsa, "RS512") => Algorithm::RS512,
            (KeyKind::Rsa, "PS256") => Algorithm::PS256,
            (KeyKind::Rsa, "PS384") => Algorithm::PS384,
            (KeyKind::Rsa, "PS512") => Algorithm::PS512,
            // Envoy picks the digest by `alg`; the curve must fit it for ring to check it.
            (KeyKind::Ec(EcCurve::P256), "ES256") => Algorithm::ES256,
            (KeyKind::Ec(EcCurve::P384), "ES384") => Algorithm::ES384,
            (KeyKind::Oct, "HS256") => Algorithm::HS256,
            (KeyKind::Oct, "HS384") => Algorithm::HS384,
            (KeyKind::Oct, "HS512") => Algorithm::HS512,
            (KeyKind::Ed25519, _) => Algorithm::EdDSA,
            _ => return None,
        })
    }
}

/// Reads a JWKS; the error is Envoy's status text for the first thing wrong.
pub fn parse(text: &str) -> Result<Vec<Jwk>, &'static str> {
    let Ok(Value::Object(set)) = serde_json::from_str::<Value>(text) else {
        return Err("Jwks is an invalid JSON");
    };
    let Some(keys) = set.get("keys") else { return Err("Jwks does not have [keys] field") };
    let Value::Array(keys) = keys else { return Err("[keys] in Jwks is not an array") };
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        // Envoy skips entries that are not objects.
        if let Value::Object(k) = k {
            out.push(key(k)?);
        }
    }
    if out.is_empty() {
        return Err("Jwks doesn't have any valid public key");
    }
    Ok(out)
}

fn string<'a>(
    k: &'a Map<String, Value>,
    field: &str,
    bad: &'static str,
) -> Result<Option<&'a str>, &'static str> {
    match k.get(field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad),
    }
}

fn key(k: &Map<String, Value>) -> Result<Jwk, &'static str> {
    let kty = string(k, "kty", "[kty] is bad in [keys]")?.ok_or("[kty] is missing in [keys]")?;
    let kid = string(k, "kid", "[kid] is bad in [keys]")?.map(str::to_string);
    let alg = string(k, "alg", "[alg] is bad in [keys]")?.map(str::to_string);
    let a = alg.as_deref().unwrap_or("");
    let (kind, key) = match kty {
        "RSA" => {
            if !a.is_empty() && !a.starts_with("RS") && !a.starts_with("PS") {
                return Err("[alg] is not started with [RS] or [PS] for an RSA key");
            }
            let n = string(k, "n", "[n] field is not string for a RSA key")?
                .ok_or("[n] field is missing for a RSA key")?;
            let e = string(k, "e", "[e] field is not string for a RSA key")?
                .ok_or("[e] field is missing for a RSA key")?;
            let bad = "Jwks RSA [n] or [e] field is missing or has a parse error";
            let (Some(n), Some(e)) = (b64url(n), b64url(e)) else { return Err(bad) };
            (KeyKind::Rsa, DecodingKey::from_rsa_raw_components(&n, &e))
        }
        "EC" => {
            if !a.is_empty() && !a.starts_with("ES") {
                return Err("[alg] is not started with [ES] for an EC key");
            }
            let crv = string(k, "crv", "[crv] field is not string for an EC key")?;
            let curve = match (crv.unwrap_or(""), a) {
                ("P-256", "" | "ES256") | ("", "ES256") => EcCurve::P256,
                ("P-384", "" | "ES384") | ("", "ES384") => EcCurve::P384,
                ("P-521", "" | "ES512") | ("", "ES512") => EcCurve::P521,
                ("P-256" | "P-384" | "P-521", _) => {
                    return Err("[crv] field specified is not compatible with [alg] for an EC key")
                }
                _ => return Err("[crv] or [alg] field is not supported for an EC key"),
            };
            let x = string(k, "x", "[x] field is not string for an EC key")?
                .ok_or("[x] field is missing for an EC key")?;
            let y = string(k, "y", "[y] field is not string for an EC key")?
                .ok_or("[y] field is missing for an EC key")?;
            if b64url(x).is_none() || b64url(y).is_none() {
                return Err("Jwks EC [x] or [y] field is an invalid Base64.");
            }
            let key = DecodingKey::from_ec_components(unpadded(x), unpadded(y))
                .map_err(|_| "Jwks EC [x] and [y] fields have a parse error.")?;
            (KeyKind::Ec(curve), key)
        }
        "oct" => {
            if !a.is_empty() && !a.starts_with("HS") {
                return Err("[alg] does not start with [HS] for an HMAC key");
            }
            let secret = string(k, "k", "[k] field is not string for an HMAC key")?
                .ok_or("[k] field is missing for an HMAC key")?;
            let secret = b64url(secret).ok_or("Jwks Oct key is an invalid Base64")?;
            (KeyKind::Oct, DecodingKey::from_secret(&secret))
        }
        "OKP" => {
            if !a.is_empty() && a != "EdDSA" {
                return Err("[alg] is not [EdDSA] for an OKP key");
            }
            let crv = string(k, "crv", "[crv] field is not string for an OKP key")?
                .ok_or("[crv] field is missing for an OKP key")?;
            if crv != "Ed25519" {
                return Err("[crv] field is not supported for an OKP key");
            }
            let x = string(k, "x", "[x] field is not string for an OKP key")?
                .ok_or("[x] field is missing for an OKP key")?;
            match b64url(x) {
                None => return Err("Jwks OKP [x] field is an invalid Base64."),
                Some(raw) if raw.len() != 32 => return Err("Jwks OKP [x] field is wrong length."),
                Some(_) => {}
            }
            let key = DecodingKey::from_ed_components(unpadded(x))
                .map_err(|_| "Jwks OKP [x] field is an invalid Base64.")?;
            (KeyKind::Ed25519, key)
        }
        "" => return Err("[kty] is bad in [keys]"),
        _ => return Err("[kty] is not supported in [keys]"),
    };
    Ok(Jwk { kid, alg, kind, key })
}

/// Base64url, padded or not (as Envoy's decoder takes it).
pub fn b64url(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(unpadded(text)).ok()
}

/// `jsonwebtoken` reads key components as unpadded base64url only.
fn unpadded(text: &str) -> &str {
    text.trim_end_matches('=')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoys_words_for_a_bad_set() {
        assert_eq!(parse("nope").err(), Some("Jwks is an invalid JSON"));
        assert_eq!(parse("{}").err(), Some("Jwks does not have [keys] field"));
        assert_eq!(parse(r#"{"keys":{}}"#).err(), Some("[keys] in Jwks is not an array"));
        assert_eq!(parse(r#"{"keys":[]}"#).err(), Some("Jwks doesn't have any valid public key"));
        assert_eq!(parse(r#"{"keys":[{"kty":"XX"}]}"#).err(), Some("[kty] is not supported in [keys]"));
        assert_eq!(
            parse(r#"{"keys":[{"kty":"RSA","e":"AQAB"}]}"#).err(),
            Some("[n] field is missing for a RSA key")
        );
        let hs =
            parse(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","alg":"HS256","kid":"a"}]}"#).unwrap_or_default();
        assert_eq!(hs.len(), 1);
        assert_eq!(hs[0].kind.algorithm("HS256"), Some(Algorithm::HS256));
        assert_eq!(hs[0].kind.algorithm("RS256"), None);
    }
}
