//! skiff: an io_uring, thread-per-core HTTP/1.1 proxy that runs Envoy's configs.
//!
//! Data flows one way: `config` (YAML → typed model) → `control` (resolve, bind, build a
//! `snapshot`) → `shard`s (serve requests from their own copy). See DESIGN.md in the README.

pub mod config;
pub mod dns;
pub mod http;
pub mod logging;
