//! Envoy YAML → the typed `model`. Owns parsing (v2 and v3 spellings), defaults and validation, and
//! the errors that name file, line, column and field path. Knows nothing of sockets, DNS or shards.

pub mod chain_match;
mod convert;
mod convert_compressor;
mod convert_cors;
mod convert_ext_authz;
mod convert_filters;
mod convert_health;
mod convert_jwt;
mod convert_rbac;
mod convert_rbac_matcher;
mod convert_tls;
mod duration;
pub mod dynamic;
mod error;
mod fields;
pub mod file_identity;
pub mod jwks;
mod lb;
pub mod model;
mod net_filter;
mod raw;
pub mod secrets;
pub mod tls;
pub mod tls_verify;
pub mod unenforced;

pub use convert_tls::read_secret;
pub use duration::NEVER;
pub use error::ConfigError;
pub use lb::{
    CookieGen, HashCookie, HashMethod, HashPolicy, HashTable, IntervalDetection, LeastRequest,
    OutlierDetection,
};
pub use model::*;

use std::path::Path;

/// A loaded, validated bootstrap plus what an operator should hear about it (fields accepted but not
/// acted on, a `filter_chains` mapping accepted in place of a list, ...).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub bootstrap: Bootstrap,
    pub warnings: Vec<String>,
}

/// Reads and validates a config file; `origin` in errors is the path as given.
pub fn load_file(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Io { origin: path.display().to_string(), source })?;
    load_str(&text, &path.display().to_string())
}

/// Validates YAML text; `origin` names it in errors (a path, or `--config-yaml`). The files of
/// its `dynamic_resources` are not read (as Envoy's `--mode validate`): `load_with` adds them.
pub fn load_str(text: &str, origin: &str) -> Result<Loaded, ConfigError> {
    load_with(text, origin, &dynamic::DocTexts::default()).map_err(|r| r.error)
}

/// The bootstrap `text` with the resources of the `dynamic_resources` files in `docs`; an error
/// says which file it is in and is located (line, column, field) in that file.
pub fn load_with(text: &str, origin: &str, docs: &dynamic::DocTexts) -> Result<Loaded, dynamic::Rejection> {
    let in_bootstrap = |error| dynamic::Rejection { doc: None, parse_failure: false, error };
    // An empty file parses as an empty bootstrap that serves nothing; far likelier a wrong path or
    // an unmounted ConfigMap than intent.
    if text.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#') || l.trim() == "---") {
        return Err(in_bootstrap(ConfigError::Invalid {
            origin: origin.to_string(),
            line: None,
            column: None,
            path: String::new(),
            message: "the config is empty".to_string(),
        }));
    }
    let de = serde_norway::Deserializer::from_str(text);
    let raw: raw::RawBootstrap =
        serde_path_to_error::deserialize(de).map_err(|err| in_bootstrap(error::from_serde(origin, err)))?;
    let files = raw::RawDynamicFiles {
        lds: docs.lds.as_ref().map(|d| dynamic::parse(Doc::Lds, d)).transpose()?,
        cds: docs.cds.as_ref().map(|d| dynamic::parse(Doc::Cds, d)).transpose()?,
        rds: dynamic::parse_all(&docs.rds, Doc::Rds)?,
        eds: dynamic::parse_all(&docs.eds, Doc::Eds)?,
    };
    // A finding names the file it is in; it is located in that file's text.
    let text_of = |finding: &error::Finding| match finding.path.document() {
        Some(doc) => docs.get(doc).map_or((text, origin), |d| (d.text.as_str(), d.origin.as_str())),
        None => (text, origin),
    };
    let converted = convert::convert(raw, files).map_err(|finding| {
        let (t, o) = text_of(&finding);
        dynamic::Rejection {
            doc: finding.path.document(),
            parse_failure: false,
            error: error::from_finding(t, o, finding),
        }
    })?;
    let warnings = converted
        .warnings
        .into_iter()
        .map(|w| {
            let (t, o) = text_of(&w);
            error::warning_text(t, o, w)
        })
        .collect();
    Ok(Loaded { bootstrap: converted.bootstrap, warnings })
}

/// An update of endpoint files alone (each of `eds` the new text of a file one cluster of
/// `running` reads): `running` with only those clusters converted again, from the bootstrap
/// `text` and those clusters' resources in the cluster file `cds` (`index` keeps that file
/// read). The result is what `load_with` of the bootstrap and every file would give, at the cost
/// of the changed clusters and a copy of the rest. None when it cannot be had that way (a file
/// that no cluster or several read, a cluster that is not in `cds`, or any error: `load_with` of
/// the whole then judges the update and locates what is wrong).
pub fn load_assignments(
    running: &Bootstrap,
    text: &str,
    origin: &str,
    index: &mut dynamic::ClusterIndex,
    cds: Option<&dynamic::DocText>,
    eds: &[dynamic::DocText],
) -> Option<Loaded> {
    use std::collections::{HashMap, HashSet};
    let mut readers: HashMap<&std::ffi::OsStr, Vec<usize>> = HashMap::new();
    for (i, c) in running.clusters.iter().enumerate() {
        if let Some(e) = &c.eds {
            readers.entry(e.source.path.as_os_str()).or_default().push(i);
        }
    }
    let mut changed = Vec::with_capacity(eds.len());
    for d in eds {
        match readers.get(std::ffi::OsStr::new(&d.origin)).map(Vec::as_slice) {
            Some([i]) => changed.push(*i),
            _ => return None,
        }
    }
    let dynamic: HashSet<&str> = running.xds.dynamic_clusters.iter().map(String::as_str).collect();
    let from_cds: Vec<&str> =
        changed.iter().map(|&i| running.clusters[i].name.as_str()).filter(|n| dynamic.contains(n)).collect();
    let cds = match from_cds.is_empty() {
        true => None,
        false => Some(index.subset(cds?, &from_cds)?),
    };
    let docs = dynamic::DocTexts { lds: None, cds, rds: Vec::new(), eds: eds.to_vec() };
    let part = load_with(text, origin, &docs).ok()?;
    let mut bootstrap = running.clone();
    for i in changed {
        let name = &running.clusters[i].name;
        bootstrap.clusters[i] = part.bootstrap.clusters.iter().find(|c| c.name == *name)?.clone();
    }
    Some(Loaded { bootstrap, warnings: part.warnings })
}
