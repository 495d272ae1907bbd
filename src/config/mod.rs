//! Envoy YAML → the typed `model`. Owns parsing (v2 and v3 spellings), defaults and validation, and
//! the errors that name file, line, column and field path. Knows nothing of sockets, DNS or shards.

mod convert;
mod convert_compressor;
mod convert_cors;
mod convert_filters;
mod convert_health;
mod convert_tls;
mod duration;
mod error;
mod fields;
mod lb;
pub mod model;
mod net_filter;
mod raw;
pub mod tls;
mod tls_verify;
pub mod unenforced;

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

/// Validates YAML text; `origin` names it in errors (a path, or `--config-yaml`).
pub fn load_str(text: &str, origin: &str) -> Result<Loaded, ConfigError> {
    // An empty file parses as an empty bootstrap that serves nothing; far likelier a wrong path or
    // an unmounted ConfigMap than intent.
    if text.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#') || l.trim() == "---") {
        return Err(ConfigError::Invalid {
            origin: origin.to_string(),
            line: None,
            column: None,
            path: String::new(),
            message: "the config is empty".to_string(),
        });
    }
    let de = serde_norway::Deserializer::from_str(text);
    let raw: raw::RawBootstrap =
        serde_path_to_error::deserialize(de).map_err(|err| error::from_serde(origin, err))?;
    let converted = convert::convert(raw).map_err(|finding| error::from_finding(text, origin, finding))?;
    let warnings = converted.warnings.into_iter().map(|w| error::warning_text(text, origin, w)).collect();
    Ok(Loaded { bootstrap: converted.bootstrap, warnings })
}
