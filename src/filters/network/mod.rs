//! The network filters a listener runs on each accepted connection before its terminal filter
//! (the connection manager or `tcp_proxy`) takes it: `envoy.filters.network.local_ratelimit`,
//! `envoy.filters.network.connection_limit` and `envoy.filters.network.rbac`, in config order,
//! compiled into the snapshot (`ListenerSnap::net_filters`, `TcpListenerSnap::net_filters`).
//! The limits answer on a new connection (Envoy's `onNewConnection` verdict: go on, or close
//! after a delay; the first close ends the chain, as Envoy's `StopIteration` does). RBAC answers
//! later, on the connection's first byte (`on_first_byte`), after the TLS handshake gave it the
//! peer's certificate and SNI: Envoy's RBAC passes `onNewConnection` and decides in `onData`, so
//! it never sees a connection a limit closed, and the limits never see its answer.
//!
//! Dispatch is static (a `match` over `NetFilter`), and a listener without network filters has an
//! empty chain: the accept path checks `is_empty` and does nothing else. A filter decides from
//! what `NewConnection` (the addresses) or `peer::Connection` (with the TLS peer) carries; it owns
//! no I/O: the shard's accept path (`shard::conn`, `shard::tcp_proxy`) waits, closes, delays and
//! logs. State the shards share (a token bucket, a count of open connections)
//! is an `Arc` in the compiled filter, carried from one snapshot to the next while the listener
//! and the filter's config stay the same (`carry`), as Envoy keeps a filter's config while its
//! listener is unchanged; stats are the shard's (`NetFilterStats`, by the index a filter holds).

mod connection_limit;
mod decision;
mod local_ratelimit;
mod rbac;

pub use connection_limit::Slot;
pub use decision::Decision;
pub use rbac::RbacVerdict;

use crate::config;
use crate::peer::Connection;
use crate::route::BuildError;
use crate::stats::{ConnectionLimitStats, NetLocalRateLimitStats, RbacShadowStats, RbacStats};
use connection_limit::ConnectionLimit;
use decision::Carried;
use local_ratelimit::LocalRateLimit;
use rbac::NetRbac;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, PoisonError};

/// A configured network filter (other than the terminal one), compiled.
#[derive(Debug)]
enum NetFilter {
    LocalRateLimit(LocalRateLimit),
    ConnectionLimit(ConnectionLimit),
}

/// Which stats block a chain's stat index stands for; the shard looks each up by name once per
/// snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetStatName {
    /// `local_rate_limit.<stat_prefix>.*`.
    LocalRateLimit(String),
    /// `connection_limit.<stat_prefix>.*`.
    ConnectionLimit(String),
    /// `<stat_prefix>.rbac.*`, and `<stat_prefix>.rbac.<shadow_rules_stat_prefix>.shadow_*`.
    Rbac { prefix: String, shadow: String },
}

/// One shard's stats block for a chain's stat index.
#[derive(Debug, Clone)]
pub enum NetFilterStats {
    LocalRateLimit(Rc<NetLocalRateLimitStats>),
    ConnectionLimit(Rc<ConnectionLimitStats>),
    Rbac(Rc<RbacStats>, Rc<RbacShadowStats>),
}

/// What a filter may decide a new connection on.
#[derive(Debug, Clone, Copy)]
pub struct NewConnection {
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

/// A new connection's verdict and the places it holds in connection limits: kept for the
/// connection's life (a refused one's too, until it is closed, as Envoy counts it), released on
/// drop.
#[derive(Debug)]
pub struct Admission {
    pub decision: Decision,
    pub held: Vec<Slot>,
}

/// The network filters of one listener, in config order.
#[derive(Debug, Default)]
pub struct NetFilterChain {
    filters: Box<[NetFilter]>,
    /// The RBAC filters, in config order: they decide on the first byte, not on accept.
    rbac: Box<[NetRbac]>,
    stat_names: Vec<NetStatName>,
}

impl NetFilterChain {
    /// Compiles `filters` (validated at load) of the listener named `listener`. A filter that
    /// `runtime_enabled` turns off is left out, its stats kept (Envoy creates them with the config).
    pub fn compile(filters: &[config::NetFilter], listener: &str) -> Result<Self, BuildError> {
        let mut stat_names = Vec::new();
        let mut compiled = Vec::new();
        let mut rbac = Vec::new();
        for (i, f) in filters.iter().enumerate() {
            let stats = stat_names.len();
            match f {
                config::NetFilter::LocalRateLimit(c) => {
                    stat_names.push(NetStatName::LocalRateLimit(c.stat_prefix.clone()));
                    if c.enabled {
                        let bucket =
                            carry(&local_ratelimit::CARRIED, listener, i, f, || LocalRateLimit::bucket(c));
                        compiled.push(NetFilter::LocalRateLimit(LocalRateLimit::new(bucket, stats)));
                    }
                }
                config::NetFilter::ConnectionLimit(c) => {
                    stat_names.push(NetStatName::ConnectionLimit(c.stat_prefix.clone()));
                    if c.enabled {
                        let open = carry(&connection_limit::CARRIED, listener, i, f, Default::default);
                        compiled.push(NetFilter::ConnectionLimit(ConnectionLimit::new(c, open, stats)));
                    }
                }
                config::NetFilter::Rbac(c) => {
                    stat_names.push(NetStatName::Rbac {
                        prefix: c.stat_prefix.clone(),
                        shadow: c.shadow_rules_stat_prefix.clone(),
                    });
                    rbac.push(NetRbac::compile(c, stats)?);
                }
            }
        }
        Ok(NetFilterChain { filters: compiled.into_boxed_slice(), rbac: rbac.into_boxed_slice(), stat_names })
    }

    /// No filter runs on accept (RBAC's, if any, run on the first byte).
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// Whether a connection must wait for its first byte before the terminal filter may have it.
    pub fn checks_first_byte(&self) -> bool {
        !self.rbac.is_empty()
    }

    /// Envoy's `onData` of the RBAC filters, once, on the first byte: each in order until one
    /// denies. `stats` is the shard's, aligned with `stat_names`.
    pub fn on_first_byte(&self, conn: &Connection<'_>, stats: &[NetFilterStats]) -> RbacVerdict {
        for f in self.rbac.iter() {
            let Some(NetFilterStats::Rbac(s, shadow)) = stats.get(f.stats) else { continue };
            let verdict = f.on_first_byte(conn, s, shadow);
            if verdict != RbacVerdict::Allowed {
                return verdict;
            }
        }
        RbacVerdict::Allowed
    }

    /// The stats blocks the chain's filters count into, by the index they hold.
    pub fn stat_names(&self) -> &[NetStatName] {
        &self.stat_names
    }

    /// Envoy's `onNewConnection` over the chain: every filter in order until one closes.
    /// `stats` is the shard's, aligned with `stat_names`.
    pub fn on_new_connection(&self, _c: &NewConnection, stats: &[NetFilterStats]) -> Admission {
        let mut held = Vec::new();
        for filter in self.filters.iter() {
            let decision = match filter {
                NetFilter::LocalRateLimit(f) => match stats.get(f.stats) {
                    Some(NetFilterStats::LocalRateLimit(s)) => f.on_new_connection(s),
                    _ => Decision::Continue,
                },
                NetFilter::ConnectionLimit(f) => match stats.get(f.stats) {
                    Some(NetFilterStats::ConnectionLimit(s)) => {
                        let (decision, slot) = f.on_new_connection(s);
                        held.push(slot);
                        decision
                    }
                    _ => Decision::Continue,
                },
            };
            if decision != Decision::Continue {
                return Admission { decision, held };
            }
        }
        Admission { decision: Decision::Continue, held }
    }
}

/// Runs on the control thread when a snapshot is built, never on a connection.
fn carry<T>(
    carried: &Carried<T>,
    listener: &str,
    index: usize,
    config: &config::NetFilter,
    make: impl FnOnce() -> T,
) -> Arc<T> {
    let mut entries = carried.lock().unwrap_or_else(PoisonError::into_inner);
    entries.retain(|(.., w)| w.strong_count() > 0);
    let found = entries
        .iter()
        .find(|(l, i, c, _)| l == listener && *i == index && c == config)
        .and_then(|(.., w)| w.upgrade());
    if let Some(state) = found {
        return state;
    }
    let state = Arc::new(make());
    entries.push((listener.to_string(), index, config.clone(), Arc::downgrade(&state)));
    state
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_log::ResponseFlags;
    use crate::config::{ConnectionLimit as Limit, NetFilter as Cfg, NetLocalRateLimit, TokenBucket};
    use std::time::Duration;

    fn conn() -> NewConnection {
        let a = SocketAddr::from(([127, 0, 0, 1], 1));
        NewConnection { peer: a, local: a }
    }

    fn limit(prefix: &str, max: u64) -> Cfg {
        Cfg::ConnectionLimit(Limit {
            stat_prefix: prefix.into(),
            max_connections: max,
            delay: None,
            enabled: true,
        })
    }

    fn stats(chain: &NetFilterChain) -> Vec<NetFilterStats> {
        let shard = crate::stats::ShardStats::default();
        chain
            .stat_names()
            .iter()
            .map(|n| match n {
                NetStatName::LocalRateLimit(p) => {
                    NetFilterStats::LocalRateLimit(shard.net_local_rate_limit(p))
                }
                NetStatName::ConnectionLimit(p) => NetFilterStats::ConnectionLimit(shard.connection_limit(p)),
                NetStatName::Rbac { prefix, shadow } => {
                    NetFilterStats::Rbac(shard.net_rbac(prefix), shard.net_rbac_shadow(prefix, shadow))
                }
            })
            .collect()
    }

    #[test]
    fn a_refused_connection_stops_the_chain_and_holds_its_slot_until_dropped() {
        let rate = Cfg::LocalRateLimit(NetLocalRateLimit {
            stat_prefix: "r".into(),
            token_bucket: TokenBucket {
                max_tokens: 5,
                tokens_per_fill: 1,
                fill_interval: Duration::from_secs(60),
            },
            enabled: true,
        });
        let chain = NetFilterChain::compile(&[limit("unit-a", 1), rate], "unit-a").expect("compiles");
        let s = stats(&chain);
        let first = chain.on_new_connection(&conn(), &s);
        assert_eq!(first.decision, Decision::Continue);
        let second = chain.on_new_connection(&conn(), &s);
        assert_eq!(second.decision, Decision::Close { delay: None, flags: ResponseFlags::NONE });
        let (NetFilterStats::ConnectionLimit(cl), NetFilterStats::LocalRateLimit(rl)) = (&s[0], &s[1]) else {
            panic!("stats out of order")
        };
        assert_eq!((cl.limited_connections.get(), cl.active_connections.get()), (1, 2));
        // The refusal came before the rate limit: it took one token, not two.
        assert_eq!(rl.rate_limited.get(), 0);
        drop((first, second));
        assert_eq!(cl.active_connections.get(), 0);
        assert_eq!(chain.on_new_connection(&conn(), &s).decision, Decision::Continue);
    }

    #[test]
    fn an_unchanged_filter_keeps_its_count_across_snapshots_and_a_changed_one_starts_anew() {
        let old = NetFilterChain::compile(&[limit("unit-b", 1)], "unit-b").expect("compiles");
        let s = stats(&old);
        let open = old.on_new_connection(&conn(), &s);
        let same = NetFilterChain::compile(&[limit("unit-b", 1)], "unit-b").expect("compiles");
        assert_ne!(same.on_new_connection(&conn(), &s).decision, Decision::Continue);
        let changed = NetFilterChain::compile(&[limit("unit-b", 2)], "unit-b").expect("compiles");
        assert_eq!(changed.on_new_connection(&conn(), &s).decision, Decision::Continue);
        drop(open);
    }

    #[test]
    fn a_disabled_filter_is_not_run_but_keeps_its_stats() {
        let Cfg::ConnectionLimit(mut c) = limit("unit-c", 1) else { return };
        c.enabled = false;
        let chain = NetFilterChain::compile(&[Cfg::ConnectionLimit(c)], "unit-c").expect("compiles");
        assert!(chain.is_empty());
        assert_eq!(chain.stat_names(), &[NetStatName::ConnectionLimit("unit-c".into())]);
    }
}
