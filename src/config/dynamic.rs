//! `dynamic_resources` files: a `DiscoveryResponse` in YAML or JSON (`version_info`, `resources`)
//! read into raw listeners or clusters, and the verdict on a file that cannot be applied, told
//! apart as Envoy counts it: `update_failure` (the file does not parse) or `update_rejected` (it
//! parses but the resources are invalid, alone or with the rest of the config). Owns no watching
//! and no state: the control loop decides when a file is read and keeps the last good text. A
//! management server's resources come here as the JSON text of such a file (control/xds.rs).

use super::error::{self, ConfigError};
use super::model::Doc;
use super::raw::{RawDiscoveryResponse, RawFile};
use serde::de::DeserializeOwned;
use std::time::SystemTime;

/// One read of a resource file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocText {
    /// The path as configured, naming the file in errors.
    pub origin: String,
    pub text: String,
    pub received: SystemTime,
}

/// The text of each resource file to combine with the bootstrap (None: nothing from that file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DocTexts {
    pub lds: Option<DocText>,
    pub cds: Option<DocText>,
    /// Route configuration files, `Doc::Rds(index)`, each with its path as `origin`.
    pub rds: Vec<DocText>,
    /// Endpoint files, `Doc::Eds(index)`, likewise.
    pub eds: Vec<DocText>,
}

impl DocTexts {
    pub fn get(&self, doc: Doc) -> Option<&DocText> {
        match doc {
            Doc::Lds => self.lds.as_ref(),
            Doc::Cds => self.cds.as_ref(),
            Doc::Rds(i) => self.rds.get(usize::from(i)),
            Doc::Eds(i) => self.eds.get(usize::from(i)),
        }
    }

    pub fn set(&mut self, doc: Doc, text: Option<DocText>) {
        match doc {
            Doc::Lds => self.lds = text,
            Doc::Cds => self.cds = text,
            Doc::Rds(i) => set_at(&mut self.rds, usize::from(i), text),
            Doc::Eds(i) => set_at(&mut self.eds, usize::from(i), text),
        }
    }

    /// The `Doc` of the route configuration file at `path`, if it is among these.
    pub fn rds_doc(&self, path: &str) -> Option<Doc> {
        let i = self.rds.iter().position(|d| d.origin == path)?;
        u16::try_from(i).ok().map(Doc::Rds)
    }

    /// The `Doc` of the endpoint file at `path`, if it is among these.
    pub fn eds_doc(&self, path: &str) -> Option<Doc> {
        let i = self.eds.iter().position(|d| d.origin == path)?;
        u16::try_from(i).ok().map(Doc::Eds)
    }
}

/// Puts `text` at `i` of `list` (at its end when `i` is past it), or removes the one at `i`.
fn set_at(list: &mut Vec<DocText>, i: usize, text: Option<DocText>) {
    match text {
        Some(t) if i < list.len() => list[i] = t,
        Some(t) => list.push(t),
        None if i < list.len() => {
            list.remove(i);
        }
        None => {}
    }
}

/// Why a combination of bootstrap and resource files cannot be applied.
#[derive(Debug)]
pub struct Rejection {
    /// The file the error is in; None for the bootstrap.
    pub doc: Option<Doc>,
    /// The file did not parse as a `DiscoveryResponse` of its kind (Envoy's `update_failure`);
    /// otherwise it was rejected (`update_rejected`).
    pub parse_failure: bool,
    pub error: ConfigError,
}

/// Parses each of a list of resource files (`doc(index)` names each), keeping its path.
pub(super) fn parse_all<T: DeserializeOwned>(
    list: &[DocText],
    doc: fn(u16) -> Doc,
) -> Result<Vec<(String, RawFile<T>)>, Rejection> {
    list.iter()
        .enumerate()
        .map(|(i, d)| parse(doc(u16::try_from(i).unwrap_or(u16::MAX)), d).map(|f| (d.origin.clone(), f)))
        .collect()
}

/// Parses one resource file's text.
pub(super) fn parse<T: DeserializeOwned>(doc: Doc, d: &DocText) -> Result<RawFile<T>, Rejection> {
    let failed = |error| Rejection { doc: Some(doc), parse_failure: true, error };
    if d.text.trim().is_empty() {
        return Err(failed(ConfigError::Invalid {
            origin: d.origin.clone(),
            line: None,
            column: None,
            path: String::new(),
            message: "the resource file is empty".to_string(),
        }));
    }
    let de = serde_norway::Deserializer::from_str(&d.text);
    let raw: RawDiscoveryResponse<T> =
        serde_path_to_error::deserialize(de).map_err(|e| failed(error::from_serde(&d.origin, e)))?;
    // The response's own type_url, when given, must match its resources' kind.
    if let Some(url) = raw.type_url.as_deref().filter(|u| *u != doc.type_url()) {
        return Err(Rejection {
            doc: Some(doc),
            parse_failure: false,
            error: ConfigError::Invalid {
                origin: d.origin.clone(),
                line: None,
                column: None,
                path: "type_url".to_string(),
                message: format!("expected \"{}\", got \"{url}\"", doc.type_url()),
            },
        });
    }
    Ok(RawFile {
        version_info: raw.version_info.unwrap_or_default(),
        received: d.received,
        resources: raw.resources.unwrap_or_default(),
    })
}

/// The resources of a cluster file's text by cluster name, read once per text: the clusters an
/// endpoint update converts again are taken from here (`super::load_assignments`).
#[derive(Debug, Default)]
pub struct ClusterIndex {
    /// A hash of the text indexed; None: nothing indexed yet.
    key: Option<u64>,
    version: serde_json::Value,
    by_name: std::collections::HashMap<String, serde_json::Value>,
}

impl ClusterIndex {
    /// The text of a cluster file holding only the clusters `names` of `cds`, with its version
    /// and origin; None when `cds` cannot be indexed (a resource without a name) or lacks one.
    pub fn subset(&mut self, cds: &DocText, names: &[&str]) -> Option<DocText> {
        let key = xxhash_rust::xxh64::xxh64(cds.text.as_bytes(), 0);
        if self.key != Some(key) {
            self.key = None;
            let doc: serde_json::Value =
                serde_json::from_str(&cds.text).or_else(|_| serde_norway::from_str(&cds.text)).ok()?;
            let resources = doc.get("resources").and_then(|r| r.as_array())?;
            let mut by_name = std::collections::HashMap::with_capacity(resources.len());
            for r in resources {
                let name = r.get("name").and_then(|n| n.as_str())?;
                by_name.insert(name.to_string(), r.clone());
            }
            self.version = doc.get("version_info").cloned().unwrap_or_default();
            self.by_name = by_name;
            self.key = Some(key);
        }
        let picked: Option<Vec<&serde_json::Value>> = names.iter().map(|n| self.by_name.get(*n)).collect();
        let mut body = serde_json::json!({ "resources": picked? });
        if !self.version.is_null() {
            body["version_info"] = self.version.clone();
        }
        let text = serde_json::to_string(&body).ok()?;
        Some(DocText { origin: cds.origin.clone(), text, received: cds.received })
    }
}
