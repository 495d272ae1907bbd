//! Reading a listener's network filter: its `config`/`typed_config` is a connection manager, a
//! TCP proxy, a network local rate limit, a connection limit or a network RBAC depending on the filter's `name`,
//! which YAML may give before or after the config. When the config comes first its `"@type"`
//! decides (v3 files put it first); a v2 `config` before its `name` is read as a connection
//! manager, as it was before the TCP proxy existed. Owns this dispatch and the judgement of the
//! two limits' fields (`role`); every filter's fields are `raw`'s structs, `convert` judges the
//! terminal filters' and decides where a filter may sit in a chain.

use super::convert_filters::token_bucket;
use super::error::FieldPath;
use super::fields::{fail, Res};
use super::model::{ConnectionLimit, NetFilter, NetLocalRateLimit};
use super::raw::{
    NetFilterKind, NetFilterName, RawConnectionLimit, RawFeatureFlag, RawHcm, RawNetConfig, RawNetFilter,
    RawNetLocalRateLimit, RawTcpProxy, CONNECTION_LIMIT_TYPE, NET_LOCAL_RATELIMIT_TYPE, NET_RBAC_TYPE,
    TCP_PROXY_TYPES,
};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::marker::PhantomData;

impl RawNetConfig {
    pub(super) fn type_url_given(&self) -> bool {
        match self {
            RawNetConfig::Hcm(h) => h.type_url.is_some(),
            RawNetConfig::TcpProxy(t) => t.type_url.is_some(),
            RawNetConfig::LocalRateLimit(l) => l.type_url.is_some(),
            RawNetConfig::ConnectionLimit(c) => c.type_url.is_some(),
            RawNetConfig::Rbac(v) => v.get("@type").is_some(),
        }
    }
}

/// What a network filter does in its chain: limit connections before the terminal filter, or be
/// the terminal filter.
pub(super) enum Role {
    Limit(NetFilter),
    Terminal(Terminal),
}

/// The filter that takes a connection, its config for `convert` to judge.
pub(super) enum Terminal {
    Hcm(Box<RawHcm>),
    TcpProxy(Box<RawTcpProxy>),
}

/// A filter's config at `p`: a limit's judged here, a terminal filter's handed on.
pub(super) fn role(p: &FieldPath, raw: RawNetConfig) -> Res<Role> {
    Ok(match raw {
        RawNetConfig::LocalRateLimit(r) => Role::Limit(NetFilter::LocalRateLimit(local_rate_limit(p, r)?)),
        RawNetConfig::ConnectionLimit(r) => Role::Limit(NetFilter::ConnectionLimit(connection_limit(p, r)?)),
        RawNetConfig::Rbac(v) => Role::Limit(NetFilter::Rbac(super::convert_rbac::net_rbac(p, v)?)),
        RawNetConfig::Hcm(h) => Role::Terminal(Terminal::Hcm(h)),
        RawNetConfig::TcpProxy(t) => Role::Terminal(Terminal::TcpProxy(t)),
    })
}

fn type_url(p: &FieldPath, given: Option<&str>, expected: &str) -> Res<()> {
    match given {
        Some(url) if url != expected => {
            fail(p.key("@type"), format!("expected \"@type\" {expected}, got \"{url}\""))
        }
        _ => Ok(()),
    }
}

fn stat_prefix(p: &FieldPath, given: Option<String>) -> Res<String> {
    match given.filter(|s| !s.is_empty()) {
        Some(s) => Ok(s),
        None => fail(p.key("stat_prefix"), "stat_prefix is required"),
    }
}

/// A `RuntimeFeatureFlag` needs its `default_value` (Envoy 1.40 accepts a flag without
/// `runtime_key`); absent, the filter is enabled.
fn enabled(p: &FieldPath, flag: Option<RawFeatureFlag>) -> Res<bool> {
    let Some(flag) = flag else { return Ok(true) };
    match flag.default_value {
        Some(v) => Ok(v),
        None => fail(p.key("runtime_enabled").key("default_value"), "default_value is required"),
    }
}

fn local_rate_limit(p: &FieldPath, r: RawNetLocalRateLimit) -> Res<NetLocalRateLimit> {
    type_url(p, r.type_url.as_deref(), NET_LOCAL_RATELIMIT_TYPE)?;
    if r.share_key.as_ref().is_some_and(|k| !k.is_empty()) {
        return fail(
            p.key("share_key"),
            "share_key is not supported: each local_ratelimit filter has a bucket of its own",
        );
    }
    let stat_prefix = stat_prefix(p, r.stat_prefix)?;
    let Some(bucket) = r.token_bucket else {
        return fail(p.key("token_bucket"), "token_bucket is required");
    };
    let token_bucket = token_bucket(p.key("token_bucket"), bucket)?;
    Ok(NetLocalRateLimit { stat_prefix, token_bucket, enabled: enabled(p, r.runtime_enabled)? })
}

fn connection_limit(p: &FieldPath, r: RawConnectionLimit) -> Res<ConnectionLimit> {
    type_url(p, r.type_url.as_deref(), CONNECTION_LIMIT_TYPE)?;
    let stat_prefix = stat_prefix(p, r.stat_prefix)?;
    let Some(max_connections) = r.max_connections.filter(|n| *n > 0) else {
        return fail(p.key("max_connections"), "max_connections is required and must be at least 1");
    };
    // Envoy closes at once when the delay is absent or zero.
    let delay = r.delay.map(|d| d.0).filter(|d| !d.is_zero());
    Ok(ConnectionLimit { stat_prefix, max_connections, delay, enabled: enabled(p, r.runtime_enabled)? })
}

impl<'de> Deserialize<'de> for RawNetFilter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(FilterVisitor)
    }
}

struct FilterVisitor;

impl<'de> Visitor<'de> for FilterVisitor {
    type Value = RawNetFilter;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a network filter mapping")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawNetFilter, A::Error> {
        let (mut name, mut config, mut typed_config): (Option<NetFilterName>, _, _) = (None, None, None);
        while let Some(key) = map.next_key::<String>()? {
            let kind = name.as_ref().map(|n| n.1);
            match key.as_str() {
                "name" => name = Some(map.next_value()?),
                "config" => config = Some(map.next_value_seed(ConfigSeed(kind))?),
                "typed_config" => typed_config = Some(map.next_value_seed(ConfigSeed(kind))?),
                other => return Err(de::Error::unknown_field(other, &["name", "config", "typed_config"])),
            }
        }
        let name = name.ok_or_else(|| de::Error::missing_field("name"))?;
        for c in [&config, &typed_config].into_iter().flatten() {
            let read_as = match c {
                RawNetConfig::Hcm(_) => NetFilterKind::Hcm,
                RawNetConfig::TcpProxy(_) => NetFilterKind::TcpProxy,
                RawNetConfig::LocalRateLimit(_) => NetFilterKind::LocalRateLimit,
                RawNetConfig::ConnectionLimit(_) => NetFilterKind::ConnectionLimit,
                RawNetConfig::Rbac(_) => NetFilterKind::Rbac,
            };
            if read_as != name.1 {
                return Err(de::Error::custom(format!(
                    "the config of network filter \"{}\" is of another filter (its \"@type\" does not match the name)",
                    name.0
                )));
            }
        }
        Ok(RawNetFilter { name, config, typed_config })
    }
}

/// Reads a filter config as `kind`, or, when the name has not been seen yet, as its `"@type"` says.
struct ConfigSeed(Option<NetFilterKind>);

impl<'de> DeserializeSeed<'de> for ConfigSeed {
    type Value = RawNetConfig;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawNetConfig, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ConfigSeed {
    type Value = RawNetConfig;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a network filter config mapping")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawNetConfig, A::Error> {
        if let Some(kind) = self.0 {
            return read_as(kind, map);
        }
        let Some(first) = map.next_key::<String>()? else {
            return read_as(NetFilterKind::Hcm, map);
        };
        if first != "@type" {
            return read_as(NetFilterKind::Hcm, Replay { key: Some(first), value: None, rest: map });
        }
        let url: String = map.next_value()?;
        let kind = match url.as_str() {
            u if TCP_PROXY_TYPES.contains(&u) => NetFilterKind::TcpProxy,
            NET_LOCAL_RATELIMIT_TYPE => NetFilterKind::LocalRateLimit,
            CONNECTION_LIMIT_TYPE => NetFilterKind::ConnectionLimit,
            NET_RBAC_TYPE => NetFilterKind::Rbac,
            _ => NetFilterKind::Hcm,
        };
        read_as(kind, Replay { key: Some(first), value: Some(url), rest: map })
    }
}

fn read_as<'de, A: MapAccess<'de>>(kind: NetFilterKind, map: A) -> Result<RawNetConfig, A::Error> {
    let d = de::value::MapAccessDeserializer::new(map);
    Ok(match kind {
        NetFilterKind::Hcm => RawNetConfig::Hcm(Box::new(RawHcm::deserialize(d)?)),
        NetFilterKind::TcpProxy => RawNetConfig::TcpProxy(Box::new(RawTcpProxy::deserialize(d)?)),
        NetFilterKind::LocalRateLimit => RawNetConfig::LocalRateLimit(RawNetLocalRateLimit::deserialize(d)?),
        NetFilterKind::ConnectionLimit => RawNetConfig::ConnectionLimit(RawConnectionLimit::deserialize(d)?),
        NetFilterKind::Rbac => RawNetConfig::Rbac(serde_norway::Value::deserialize(d)?),
    })
}

/// A mapping whose first key (and, once read, its string value) is given back before the rest.
struct Replay<A> {
    key: Option<String>,
    value: Option<String>,
    rest: A,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Replay<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, A::Error> {
        match self.key.take() {
            Some(k) => seed.deserialize(de::value::StringDeserializer::new(k)).map(Some),
            None => self.rest.next_key_seed(seed),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        match self.value.take() {
            Some(v) => seed.deserialize(ReplayedStr(v, PhantomData)),
            None => self.rest.next_value_seed(seed),
        }
    }
}

/// The replayed `"@type"` value. serde's `StringDeserializer` cannot be read as an `Option`, which
/// is how every typed config declares its `"@type"`; this one can.
struct ReplayedStr<E>(String, PhantomData<E>);

impl<'de, E: de::Error> Deserializer<'de> for ReplayedStr<E> {
    type Error = E;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, E> {
        visitor.visit_string(self.0)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, E> {
        visitor.visit_some(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit
        unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}
