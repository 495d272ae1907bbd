//! The command line: Envoy's flags, so that existing deployment manifests start skiff unchanged.
//! Owns parsing and the meaning of each flag; knows nothing of what runs.

use clap::{Parser, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "skiff",
    version,
    about = "An io_uring, thread-per-core HTTP/1.1 and HTTP/2 proxy that runs Envoy's configs.",
    long_about = "An io_uring, thread-per-core HTTP/1.1 and HTTP/2 proxy that runs Envoy's configs.\n\n\
        Start it exactly like Envoy: `skiff -c envoy.yaml`. Flags that only matter to Envoy's \
        hot restart or its C++ internals are accepted and ignored, so existing manifests need no edit.",
    after_help = "Examples:\n  skiff -c envoy.yaml\n  skiff -c envoy.yaml --mode validate\n  \
        skiff --config-yaml \"$(cat envoy.yaml)\" --concurrency 2"
)]
pub struct Options {
    /// Envoy bootstrap config file (YAML; v2 or v3 spelling).
    #[arg(short = 'c', long = "config-path", value_name = "FILE")]
    pub config_path: Option<PathBuf>,

    /// Bootstrap config as a YAML string (used instead of, or without, --config-path).
    #[arg(long = "config-yaml", value_name = "YAML")]
    pub config_yaml: Option<String>,

    /// serve: run the proxy. validate: check the config and exit 0 (valid) or 1.
    #[arg(long, value_enum, default_value_t = Mode::Serve)]
    pub mode: Mode,

    /// Log level: trace, debug, info, warning, error, critical, off.
    #[arg(short = 'l', long = "log-level", default_value = "info", value_name = "LEVEL")]
    pub log_level: String,

    /// Log line format, Envoy's spdlog flags (%Y-%m-%d %T.%e, %t, %l, %n, %v, ...).
    #[arg(long = "log-format", value_name = "FORMAT")]
    pub log_format: Option<String>,

    /// Name of the local service (shown in logs and, later, in traces and /server_info).
    #[arg(long = "service-cluster", value_name = "NAME")]
    pub service_cluster: Option<String>,

    /// Name of this node.
    #[arg(long = "service-node", value_name = "NAME")]
    pub service_node: Option<String>,

    /// Zone of this node.
    #[arg(long = "service-zone", value_name = "ZONE")]
    pub service_zone: Option<String>,

    /// Number of shards (worker threads, one per core). Default: the cores this process may use.
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,

    /// On SIGTERM: seconds to let in-flight requests finish before exiting.
    #[arg(long = "drain-time-s", default_value_t = 600, value_name = "SECONDS", value_parser = clamped_seconds)]
    pub drain_time_s: u64,

    /// Upper bound on the whole shutdown; the drain is cut to fit inside it.
    #[arg(long = "parent-shutdown-time-s", default_value_t = 900, value_name = "SECONDS", value_parser = clamped_seconds)]
    pub parent_shutdown_time_s: u64,

    /// I/O driver: io_uring, epoll, or auto (io_uring where the kernel allows it).
    #[arg(long = "io-driver", value_enum, default_value_t = IoDriver::Auto)]
    pub io_driver: IoDriver,

    /// Shard threads: `auto` pins each to its core when there are exactly as many shards as cores
    /// this process may use (a cpuset of its own); `none` never pins, for a proxy that shares its
    /// cores with busy processes (an app beside its sidecar, a load generator), where a pinned
    /// shard cannot leave a core another process holds and its requests wait (skiff extension).
    #[arg(long = "shard-affinity", value_enum, default_value_t = ShardAffinity::Auto)]
    pub shard_affinity: ShardAffinity,

    /// Hosts file consulted before DNS (skiff extension; default /etc/hosts).
    #[arg(long = "hosts-file", value_name = "FILE", default_value = "/etc/hosts")]
    pub hosts_file: PathBuf,

    /// Seconds between checks of the config file for changes (skiff extension).
    #[arg(long = "config-check-interval-s", default_value_t = 5, value_name = "SECONDS")]
    pub config_check_interval_s: u64,

    // Accepted for compatibility with Envoy command lines; they have no effect in skiff.
    /// (no effect) Envoy v2-only flag.
    #[arg(long = "v2-config-only")]
    pub v2_config_only: bool,
    /// (no effect) Envoy hot-restart base id.
    #[arg(long = "base-id", value_name = "ID")]
    pub base_id: Option<u64>,
    /// (no effect) Envoy hot-restart epoch.
    #[arg(long = "restart-epoch", value_name = "N")]
    pub restart_epoch: Option<u64>,
    /// (no effect) skiff has no hot restart.
    #[arg(long = "disable-hot-restart")]
    pub disable_hot_restart: bool,
    /// (no effect) skiff drains by closing keep-alive connections after their current request.
    #[arg(long = "drain-strategy", value_name = "STRATEGY")]
    pub drain_strategy: Option<String>,
    /// (no effect) Envoy's local address IP version.
    #[arg(long = "local-address-ip-version", value_name = "v4|v6")]
    pub local_address_ip_version: Option<String>,
    /// (no effect) Envoy's file flush interval.
    #[arg(long = "file-flush-interval-msec", value_name = "MS")]
    pub file_flush_interval_msec: Option<u64>,
    /// (no effect) skiff always refuses unknown fields that change behaviour.
    #[arg(long = "allow-unknown-fields")]
    pub allow_unknown_fields: bool,
    /// (no effect) as --allow-unknown-fields.
    #[arg(long = "allow-unknown-static-fields")]
    pub allow_unknown_static_fields: bool,
    /// (no effect) per-component log levels.
    #[arg(long = "component-log-level", value_name = "LEVELS")]
    pub component_log_level: Option<String>,
    /// (no effect) Envoy's deprecated-field logging.
    #[arg(long = "skip-deprecated-logs")]
    pub skip_deprecated_logs: bool,
    /// (no effect) Envoy's stat name length limit.
    #[arg(long = "max-obj-name-len", value_name = "N")]
    pub max_obj_name_len: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Serve,
    Validate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShardAffinity {
    Auto,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IoDriver {
    Auto,
    Uring,
    Epoll,
}

/// Seconds, capped at `config::NEVER`: the shutdown code adds them to an `Instant`, which would
/// overflow (and abort) for values near `u64::MAX`; nobody can tell 100 years from forever.
fn clamped_seconds(text: &str) -> Result<u64, String> {
    let secs: u64 = text.trim().parse().map_err(|e| format!("expected a number of seconds: {e}"))?;
    Ok(secs.min(crate::config::NEVER.as_secs()))
}
