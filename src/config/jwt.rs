//! The typed config of `envoy.filters.http.jwt_authn` (`JwtAuthentication`) and of its per-route
//! `PerRouteConfig`, with Envoy's defaults applied. Plain data: the JWKS stays the validated JSON
//! text it was written as (the filter builds its verification keys from it), and the conversion
//! from YAML lives in `convert_jwt`.

use super::model::RouteMatch;

/// `envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication`.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtAuthn {
    /// `providers`, by name, in name order.
    pub providers: Vec<(String, JwtProvider)>,
    /// `rules`, in order: the first whose match holds decides.
    pub rules: Vec<JwtRule>,
    /// `requirement_map`, by name, in name order (what `PerRouteConfig.requirement_name` and a
    /// rule's `requirement_name` pick from).
    pub requirement_map: Vec<(String, JwtRequirement)>,
    pub bypass_cors_preflight: bool,
    /// `strip_failure_response`: failures answer with an empty body and no `www-authenticate`.
    pub strip_failure_response: bool,
    /// Where, under the filter's `typed_config`, a field asks for dynamic metadata (which nothing
    /// in skiff reads): `convert` warns about each.
    pub metadata_fields: Vec<(String, &'static str)>,
    /// The `typed_config` as written (with its `@type`), which the admin config dump writes back.
    pub source: serde_json::Value,
}

/// One `providers` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtProvider {
    /// `issuer`; empty: tokens of any issuer.
    pub issuer: String,
    /// `audiences`; empty: any audience.
    pub audiences: Vec<String>,
    /// `local_jwks`, as JSON text (checked at load to hold at least one usable key).
    pub jwks: String,
    /// `from_headers` (lower-cased name, `value_prefix`); with no header, param or cookie given,
    /// Envoy's defaults `Authorization: Bearer ` and `access_token`.
    pub from_headers: Vec<(String, String)>,
    pub from_params: Vec<String>,
    pub from_cookies: Vec<String>,
    /// `forward`: keep the token in the request sent upstream (default false: it is removed).
    pub forward: bool,
    /// `forward_payload_header` (lower-cased); None: not sent.
    pub forward_payload_header: Option<String>,
    pub pad_forward_payload_header: bool,
    /// `claim_to_headers`: (lower-cased header name, claim name; `a.b` reaches into objects).
    pub claim_to_headers: Vec<(String, String)>,
    /// `clock_skew_seconds`; 0 in the config means Envoy's 60.
    pub clock_skew_seconds: u64,
}

/// A `rules` entry: requests matching `matcher` need `requires` (None: nothing is required).
#[derive(Debug, Clone, PartialEq)]
pub struct JwtRule {
    pub matcher: RouteMatch,
    pub requires: Option<JwtRequirement>,
}

/// `JwtRequirement`.
#[derive(Debug, Clone, PartialEq)]
pub enum JwtRequirement {
    /// `provider_name`, or `provider_and_audiences` when `audiences` is Some (they replace the
    /// provider's own).
    Provider {
        name: String,
        audiences: Option<Vec<String>>,
    },
    Any(Vec<JwtRequirement>),
    All(Vec<JwtRequirement>),
    AllowMissing,
    AllowMissingOrFailed,
    /// A requirement with none of its fields set: every request passes.
    AllowAll,
}

/// `envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtPerRoute {
    /// `disabled: true`: no requirement on this route.
    Disabled,
    /// `requirement_name`: the filter's `requirement_map` entry to apply (an unknown name is
    /// Envoy's 403 at request time, not a load error).
    Requirement(String),
}
