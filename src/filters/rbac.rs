//! `envoy.filters.http.rbac`: one config's enforced and shadow engines (`rbac::Engine`) and the
//! filter's verdict, as Envoy's `RoleBasedAccessControlFilter::decodeHeaders` gives it: the
//! shadow rules are only counted, the enforced rules answer a denied request 403 `RBAC: access
//! denied` with `rbac_access_denied_matched_policy[<policy>|none]` as its response code details.
//! Owns no I/O and no matching logic (that is `rbac`'s).

use super::verdict::{FilterReply, Verdict};
use crate::access_log::ResponseFlags;
use crate::config;
use crate::rbac::{Engine, Subject};
use crate::route::BuildError;
use crate::stats::{RbacShadowStats, RbacStats};

/// One config (the connection manager's, or a route's `RBACPerRoute.rbac`), compiled. A route's
/// config replaces both engines: `rbac: {}` leaves none, and the filter does nothing there.
#[derive(Debug)]
pub struct Rbac {
    rules: Option<Engine>,
    shadow: Option<Engine>,
}

impl Rbac {
    pub(super) fn compile(c: &config::Rbac) -> Result<Self, BuildError> {
        Ok(Rbac {
            // A matcher wins over rules, as in Envoy.
            rules: match &c.matcher {
                Some(m) => Some(Engine::compile_matcher(m)?),
                None => c.rules.as_ref().map(Engine::compile).transpose()?,
            },
            shadow: match &c.shadow_matcher {
                Some(m) => Some(Engine::compile_matcher(m)?),
                None => c.shadow_rules.as_ref().map(Engine::compile).transpose()?,
            },
        })
    }

    pub(super) fn on_request(
        &self,
        subject: &Subject<'_>,
        stats: &RbacStats,
        shadow_stats: &RbacShadowStats,
        v: &mut Verdict<'_>,
    ) {
        if let Some(shadow) = &self.shadow {
            if shadow.decide(subject).allowed {
                shadow_stats.shadow_allowed.inc();
            } else {
                shadow_stats.shadow_denied.inc();
            }
        }
        let Some(rules) = &self.rules else { return };
        let decision = rules.decide(subject);
        if decision.allowed {
            stats.allowed.inc();
            return;
        }
        stats.denied.inc();
        v.reply = Some(FilterReply {
            status: 403,
            body: std::borrow::Cow::Borrowed(b"RBAC: access denied"),
            // Envoy sets no response flag for it; the details say why.
            flag: ResponseFlags::NONE,
            headers: Vec::new(),
            details: std::borrow::Cow::Owned(format!(
                "rbac_access_denied_matched_policy[{}]",
                decision.policy.unwrap_or("none")
            )),
            grpc_status: None,
        });
    }
}
