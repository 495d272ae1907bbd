//! `envoy.filters.network.rbac`: one config's enforced and shadow engines (`rbac::Engine`) and
//! its verdict on a connection, as Envoy's network `RoleBasedAccessControlFilter::onData` gives it
//! once, on the connection's first byte (after the TLS handshake, so that the peer certificate
//! and SNI are known): the shadow rules are only counted, the enforced rules' denial closes the
//! connection. Owns no I/O (the shard's accept path waits for the byte and closes) and no
//! matching logic (that is `rbac`'s).

use crate::config;
use crate::peer::Connection;
use crate::rbac::{Engine, Subject};
use crate::route::BuildError;
use crate::stats::{RbacShadowStats, RbacStats};

#[derive(Debug)]
pub(super) struct NetRbac {
    rules: Option<Engine>,
    shadow: Option<Engine>,
    /// The chain's stat index of this filter's blocks.
    pub(super) stats: usize,
}

/// The enforced rules' answer on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RbacVerdict {
    Allowed,
    /// Closed; `details` is Envoy's connection termination details,
    /// `rbac_access_denied_matched_policy[<policy>|none]`.
    Denied {
        details: String,
    },
}

impl NetRbac {
    pub(super) fn compile(c: &config::NetRbac, stats: usize) -> Result<Self, BuildError> {
        Ok(NetRbac {
            rules: c.rules.as_ref().map(Engine::compile).transpose()?,
            shadow: c.shadow_rules.as_ref().map(Engine::compile).transpose()?,
            stats,
        })
    }

    pub(super) fn on_first_byte(
        &self,
        conn: &Connection<'_>,
        stats: &RbacStats,
        shadow_stats: &RbacShadowStats,
    ) -> RbacVerdict {
        let subject = Subject { conn: *conn, http: None };
        if let Some(shadow) = &self.shadow {
            if shadow.decide(&subject).allowed {
                shadow_stats.shadow_allowed.inc();
            } else {
                shadow_stats.shadow_denied.inc();
            }
        }
        // Without rules Envoy's filter allows and counts nothing.
        let Some(rules) = &self.rules else { return RbacVerdict::Allowed };
        let decision = rules.decide(&subject);
        if decision.allowed {
            stats.allowed.inc();
            return RbacVerdict::Allowed;
        }
        stats.denied.inc();
        RbacVerdict::Denied {
            details: format!("rbac_access_denied_matched_policy[{}]", decision.policy.unwrap_or("none")),
        }
    }
}
