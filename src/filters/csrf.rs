//! `envoy.filters.http.csrf`: refuses a mutating request (POST, PUT, DELETE, PATCH) whose source
//! origin (`origin`, else `referer`) is not the destination (`host`) nor one of the additional
//! origins, with Envoy's 403 `Invalid origin`. Owns the decision and its counters; the request
//! owner sends the reply.

use super::verdict::{draw, joined_header, FilterReply, Verdict};
use crate::access_log::ResponseFlags;
use crate::config::{self, Fraction};
use crate::http::RequestHead;
use crate::route::BuildError;
use crate::stats::CsrfStats;
use crate::string_match::StringMatch;
use std::borrow::Cow;

/// One `CsrfPolicy`, compiled.
#[derive(Debug)]
pub struct Csrf {
    enabled: Fraction,
    shadow: Fraction,
    additional_origins: Vec<StringMatch>,
}

impl Csrf {
    pub(super) fn compile(c: &config::Csrf) -> Result<Self, BuildError> {
        Ok(Csrf {
            enabled: c.filter_enabled,
            shadow: c.shadow_enabled,
            additional_origins: c
                .additional_origins
                .iter()
                .map(StringMatch::compile)
                .collect::<Result<_, _>>()?,
        })
    }

    /// Envoy's `decodeHeaders`: a request without a source origin counts
    /// `missing_source_origin`, one from elsewhere `request_invalid`; both are refused unless
    /// the policy only shadows.
    pub(super) fn on_request(
        &self,
        head: &RequestHead<'_>,
        stats: &CsrfStats,
        roll: &mut dyn FnMut() -> u64,
        v: &mut Verdict<'_>,
    ) {
        // Envoy asks the fractions first; the method first costs a GET no random draw.
        if !matches!(head.method, "POST" | "PUT" | "DELETE" | "PATCH") {
            return;
        }
        let enabled = draw(self.enabled, roll);
        let shadow = draw(self.shadow, roll);
        if !enabled && !shadow {
            return;
        }
        match source_origin(head) {
            None => stats.missing_source_origin.inc(),
            Some(source) => {
                let source = &*source;
                let target = head.host.map(|h| host_and_port(h.as_bytes()));
                if target == Some(source) || self.additional_origins.iter().any(|m| m.matches(source)) {
                    stats.request_valid.inc();
                    return;
                }
                stats.request_invalid.inc();
            }
        }
        if !enabled {
            return;
        }
        v.reply = Some(FilterReply {
            status: 403,
            body: std::borrow::Cow::Borrowed(b"Invalid origin"),
            flag: ResponseFlags::NONE,
            headers: Vec::new(),
            details: std::borrow::Cow::Borrowed("csrf_origin_mismatch"),
            grpc_status: None,
        });
    }
}

/// The host and port of `origin`, else of `referer`; None when neither says. Envoy 1.40 takes
/// `origin: null` (an opaque origin) as no source origin at all, without looking at `referer`.
fn source_origin<'h>(head: &RequestHead<'h>) -> Option<Cow<'h, [u8]>> {
    let of = |value: Cow<'h, [u8]>| match value {
        Cow::Borrowed(v) => Cow::Borrowed(host_and_port(v)),
        Cow::Owned(v) => Cow::Owned(host_and_port(&v).to_vec()),
    };
    match joined_header(head, "origin").filter(|o| !o.is_empty()) {
        Some(origin) if *origin == *b"null" => None,
        Some(origin) => Some(of(origin)),
        None => joined_header(head, "referer").filter(|r| !r.is_empty()).map(of),
    }
}

/// The authority of an absolute URL (`scheme://[userinfo@]host[:port]/...`) without its
/// userinfo, as Envoy's `Url::hostAndPort`; a value that is no such URL is taken as it is.
fn host_and_port(value: &[u8]) -> &[u8] {
    let Some(at) = value.windows(3).position(|w| w == b"://") else { return value };
    let scheme = &value[..at];
    let scheme_ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    let rest = &value[at + 3..];
    let end = rest.iter().position(|b| matches!(b, b'/' | b'?' | b'#')).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host = authority.iter().rposition(|&b| b == b'@').map_or(authority, |i| &authority[i + 1..]);
    if !scheme_ok || host.is_empty() {
        return value;
    }
    host
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_is_the_authority_without_userinfo() {
        assert_eq!(host_and_port(b"http://localhost:10000"), b"localhost:10000");
        assert_eq!(host_and_port(b"https://a.com/page?q=1"), b"a.com");
        assert_eq!(host_and_port(b"http://user@localhost:80/"), b"localhost:80");
        assert_eq!(host_and_port(b"localhost"), b"localhost");
        assert_eq!(host_and_port(b"null"), b"null");
        assert_eq!(host_and_port(b"http://"), b"http://");
    }
}
