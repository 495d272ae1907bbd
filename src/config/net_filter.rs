//! Reading a listener's network filter: its `config`/`typed_config` is a connection manager or a
//! TCP proxy depending on the filter's `name`, which YAML may give before or after the config. When
//! the config comes first its `"@type"` decides (v3 files put it first); a v2 `config` before its
//! `name` is read as a connection manager, as it was before the TCP proxy existed. Owns only this
//! dispatch; the fields themselves are `raw`'s structs and `convert` judges them.

use super::raw::{
    NetFilterKind, NetFilterName, RawHcm, RawNetConfig, RawNetFilter, RawTcpProxy, TCP_PROXY_TYPES,
};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;

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
        let kind = if TCP_PROXY_TYPES.contains(&url.as_str()) {
            NetFilterKind::TcpProxy
        } else {
            NetFilterKind::Hcm
        };
        read_as(kind, Replay { key: Some(first), value: Some(url), rest: map })
    }
}

fn read_as<'de, A: MapAccess<'de>>(kind: NetFilterKind, map: A) -> Result<RawNetConfig, A::Error> {
    let d = de::value::MapAccessDeserializer::new(map);
    Ok(match kind {
        NetFilterKind::Hcm => RawNetConfig::Hcm(Box::new(RawHcm::deserialize(d)?)),
        NetFilterKind::TcpProxy => RawNetConfig::TcpProxy(Box::new(RawTcpProxy::deserialize(d)?)),
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
            Some(v) => seed.deserialize(de::value::StringDeserializer::new(v)),
            None => self.rest.next_value_seed(seed),
        }
    }
}
