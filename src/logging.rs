//! The process logger: Envoy's `-l/--log-level` levels and its spdlog-style `--log-format`
//! (`%Y-%m-%d %T.%e`, `%t`, `%l`, `%n`, `%v`, ...), written to stderr. The level can change live.

/// Installs the logger. `format` is Envoy's `--log-format` (None: Envoy's default
/// `[%Y-%m-%d %T.%e][%t][%l][%n] %v`).
pub fn init(level: log::LevelFilter, format: Option<&str>) {
    let _ = (level, format);
}

/// Parses Envoy's level names: trace, debug, info, warning/warn, error, critical, off.
pub fn parse_level(name: &str) -> Option<log::LevelFilter> {
    let _ = name;
    None
}
