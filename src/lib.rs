//! skiff: an io_uring, thread-per-core HTTP/1.1 and HTTP/2 proxy that runs Envoy's configs.
//!
//! Data flows one way: `config` (YAML → typed model) → `control` (resolve, bind, build a
//! `snapshot`) → `shard`s (serve requests from their own copy). `server` wires them together for
//! the binary; `main.rs` only parses the command line.

pub mod access_log;
pub mod admin;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod control;
pub mod dns;
pub mod filters;
pub mod http;
pub mod listener;
pub mod logging;
pub mod peer;
pub mod rbac;
pub mod route;
pub mod server;
pub mod shard;
pub mod snapshot;
pub mod stats;
pub mod string_match;
pub mod telemetry;
pub mod trace;
pub mod xds;
