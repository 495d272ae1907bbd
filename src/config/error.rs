//! Turning failures into `ConfigError`s that name origin, line, column and field path.
//!
//! Errors found while deserializing carry serde_norway's location and serde_path_to_error's path.
//! Errors found afterwards (an unknown cluster, a duplicate name) carry only a path; `locate` finds
//! that path's line and column by walking the document again and failing on purpose when it
//! reaches the node, so that serde_norway stamps its position on the error.

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Io { origin: String, source: std::io::Error },
    /// The YAML is malformed, a field has the wrong type or value, or a reference dangles.
    Invalid {
        origin: String,
        line: Option<usize>,
        column: Option<usize>,
        /// Dotted field path, e.g. `static_resources.clusters[1].connect_timeout`.
        path: String,
        message: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Io { origin, source } => write!(f, "{origin}: {source}"),
            ConfigError::Invalid { origin, line, column, path, message } => {
                write!(f, "{origin}")?;
                if let Some(line) = line {
                    write!(f, ":{line}")?;
                    if let Some(column) = column {
                        write!(f, ":{column}")?;
                    }
                }
                if path.is_empty() {
                    write!(f, ": {message}")
                } else {
                    write!(f, ": {path}: {message}")
                }
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// A resource file of `dynamic_resources` (a `DiscoveryResponse` on disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Doc {
    /// `lds_config`: listeners.
    Lds,
    /// `cds_config`: clusters.
    Cds,
    /// An HCM's `rds.config_source`: route configurations. The index is the file's place in the
    /// `DocTexts` the config was loaded with.
    Rds(u16),
    /// An EDS cluster's `eds_config`: endpoints. Indexed as `Rds`.
    Eds(u16),
}

impl Doc {
    /// Envoy's order of first fetch: clusters before the listeners whose routes name them.
    pub const ALL: [Doc; 2] = [Doc::Cds, Doc::Lds];

    /// The `@type` of this file's resources.
    pub fn type_url(self) -> &'static str {
        match self {
            Doc::Lds => "type.googleapis.com/envoy.config.listener.v3.Listener",
            Doc::Cds => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            Doc::Rds(_) => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            Doc::Eds(_) => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
        }
    }

    /// Envoy's stat prefix for this subscription (an RDS one's is per connection manager:
    /// `http.<stat_prefix>.rds.<route_config_name>`).
    pub fn stat_prefix(self) -> &'static str {
        match self {
            Doc::Lds => "listener_manager.lds",
            Doc::Cds => "cluster_manager.cds",
            Doc::Rds(_) => "rds",
            Doc::Eds(_) => "eds",
        }
    }
}

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
    /// The root of a path into a `dynamic_resources` file rather than the bootstrap; only ever
    /// first, and not part of the path as shown or located.
    Doc(Doc),
}

/// A field path as `convert` walks the raw tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(pub Vec<Seg>);

impl FieldPath {
    /// The root of `doc`'s file.
    pub fn doc(doc: Doc) -> FieldPath {
        FieldPath(vec![Seg::Doc(doc)])
    }

    /// The file this path points into: None for the bootstrap.
    pub fn document(&self) -> Option<Doc> {
        match self.0.first() {
            Some(Seg::Doc(d)) => Some(*d),
            _ => None,
        }
    }

    /// The steps below the file's root.
    fn in_document(&self) -> &[Seg] {
        match self.0.first() {
            Some(Seg::Doc(_)) => &self.0[1..],
            _ => &self.0,
        }
    }

    pub fn key(&self, key: &str) -> FieldPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_string()));
        FieldPath(segs)
    }

    pub fn idx(&self, index: usize) -> FieldPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        FieldPath(segs)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.in_document().iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
                Seg::Doc(_) => {}
            }
        }
        Ok(())
    }
}

/// A problem found after deserialization, to be located in the text.
#[derive(Debug, Clone)]
pub struct Finding {
    pub path: FieldPath,
    pub message: String,
}

/// Marks the deliberate error `locate` raises; never shown.
const FOUND: &str = "\u{0}skiff-config-locate";

/// Line and column (1-based) of the node at `path`, or of its nearest existing ancestor.
pub fn locate(text: &str, path: &FieldPath) -> Option<(usize, usize)> {
    let mut target = path.in_document();
    loop {
        if let Some(found) = locate_exact(text, target) {
            return Some(found);
        }
        if target.is_empty() {
            return None;
        }
        target = &target[..target.len() - 1];
    }
}

fn locate_exact(text: &str, target: &[Seg]) -> Option<(usize, usize)> {
    let de = serde_norway::Deserializer::from_str(text);
    match (Seek { target, depth: 0 }).deserialize(de) {
        Ok(()) => None,
        Err(err) if err.to_string().contains(FOUND) => err.location().map(|l| (l.line(), l.column())),
        Err(_) => None,
    }
}

struct Seek<'a> {
    target: &'a [Seg],
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Seek<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.depth == self.target.len() {
            // Fail from inside a visitor: only errors raised there get the node's position.
            return d.deserialize_any(Fail);
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seek<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let want = match self.target.get(self.depth) {
            Some(Seg::Key(k)) => Some(k.as_str()),
            _ => None,
        };
        while let Some(key) = map.next_key::<KeyText>()? {
            if want.is_some() && key.0.as_deref() == want {
                return map.next_value_seed(Seek { target: self.target, depth: self.depth + 1 });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let want = match self.target.get(self.depth) {
            Some(Seg::Index(n)) => Some(*n),
            _ => None,
        };
        let mut index = 0;
        loop {
            if Some(index) == want {
                return seq
                    .next_element_seed(Seek { target: self.target, depth: self.depth + 1 })
                    .map(|_| ());
            }
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

struct Fail;

impl<'de> Visitor<'de> for Fail {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
}

/// A mapping key as text, whatever scalar type YAML gave it.
struct KeyText(Option<String>);

impl<'de> de::Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_string())))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_string())))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_string())))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_string())))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<KeyText, E> {
                Ok(KeyText(Some(v.to_string())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<KeyText, E> {
                Ok(KeyText(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeyText, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(KeyText(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<KeyText, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(KeyText(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// A finding as an error, located in `text`.
pub fn from_finding(text: &str, origin: &str, finding: Finding) -> ConfigError {
    let (line, column) = match locate(text, &finding.path) {
        Some((l, c)) => (Some(l), Some(c)),
        None => (None, None),
    };
    ConfigError::Invalid {
        origin: origin.to_string(),
        line,
        column,
        path: finding.path.to_string(),
        message: finding.message,
    }
}

/// A finding as a warning line, in the same `origin:line:col: path: message` shape as errors.
pub fn warning_text(text: &str, origin: &str, finding: Finding) -> String {
    from_finding(text, origin, finding).to_string()
}

/// A deserialization failure as an error.
pub fn from_serde(origin: &str, err: serde_path_to_error::Error<serde_norway::Error>) -> ConfigError {
    let path = err.path().to_string();
    let inner = err.into_inner();
    let (line, column) = match inner.location() {
        Some(l) => (Some(l.line()), Some(l.column())),
        None => (None, None),
    };
    let message = clean_message(&inner.to_string(), &path);
    let path = if path == "." { String::new() } else { path };
    ConfigError::Invalid { origin: origin.to_string(), line, column, path, message: improve(&message) }
}

/// serde_norway's Display repeats its own path in front and the position behind; both are shown
/// separately, so strip them.
fn clean_message(display: &str, path: &str) -> String {
    let mut msg = display.to_string();
    // Positions appear as " at line N column M" (libyaml errors may carry two).
    while let Some(start) = msg.find(" at line ") {
        let rest = &msg[start + " at line ".len()..];
        let Some(col) = rest.find(" column ") else {
            break;
        };
        let after = &rest[col + " column ".len()..];
        let digits = after.bytes().take_while(|b| b.is_ascii_digit()).count();
        let end = start + " at line ".len() + col + " column ".len() + digits;
        msg.replace_range(start..end, "");
    }
    let prefix = format!("{path}: ");
    if let Some(rest) = msg.strip_prefix(&prefix) {
        return rest.to_string();
    }
    // serde_norway's path can differ from serde_path_to_error's (aliases, keys); a leading
    // whitespace-free token followed by ": " is its path, since serde's own messages start with
    // two words ("invalid type: ...").
    if let Some((head, rest)) = msg.split_once(": ") {
        if !head.is_empty()
            && !head.contains(char::is_whitespace)
            && (head.contains('.') || head.contains('['))
        {
            return rest.to_string();
        }
    }
    msg
}

/// Rewrites serde's unknown-field message to suggest the field the operator probably meant.
fn improve(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_string();
    };
    let Some((field, expected)) = rest.split_once('`') else {
        return message.to_string();
    };
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let best = candidates
        .iter()
        .map(|c| (edit_distance(field, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((_, c)) => format!("unknown field `{field}`, did you mean `{c}`?"),
        None if candidates.is_empty() => {
            format!("unknown field `{field}`: no fields are expected here")
        }
        None => format!("unknown field `{field}` (skiff does not know it here){expected}"),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_finds_nested_nodes() {
        let text = "a:\n  b:\n    - x: 1\n    - x: 2\n      y: [3, 4]\n";
        let p = FieldPath::default().key("a").key("b").idx(1).key("y").idx(1);
        assert_eq!(locate(text, &p), Some((5, 14)));
        // A missing key resolves to its nearest ancestor.
        let p = FieldPath::default().key("a").key("b").idx(0).key("nope");
        assert_eq!(locate(text, &p), Some((3, 7)));
    }

    #[test]
    fn suggests_close_field() {
        let m = improve("unknown field `conect_timeout`, expected one of `name`, `connect_timeout`, `type`");
        assert_eq!(m, "unknown field `conect_timeout`, did you mean `connect_timeout`?");
    }

    #[test]
    fn strips_position_and_path() {
        assert_eq!(clean_message("a.b[0]: bad thing at line 3 column 4", "a.b[0]"), "bad thing");
        assert_eq!(
            clean_message("invalid type: string \"x\" at line 3 column 4", "."),
            "invalid type: string \"x\""
        );
    }
}
