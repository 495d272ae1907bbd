//! What a network filter answers on a new connection (`Decision`), and the registry type through
//! which a compiled filter's shared state outlives its snapshot (`Carried`). Types only, shared by
//! the chain (`mod.rs`) and each filter; owns no behaviour.

use crate::access_log::ResponseFlags;
use crate::config;
use std::sync::{Mutex, Weak};
use std::time::Duration;

/// The chain's verdict on a new connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Hand it to the terminal filter.
    Continue,
    /// Close it without reading (after `delay`, reading nothing meanwhile); `flags` are what a
    /// `tcp_proxy` access log says of it (Envoy's connection stream info).
    Close { delay: Option<Duration>, flags: ResponseFlags },
}

/// Shared state of compiled filters, by (listener name, position in its chain, config): a new
/// snapshot of an unchanged filter takes its predecessor's state. Only weak references are kept,
/// so state no snapshot or connection holds goes away (its entry with the next compile).
pub(super) type Carried<T> = Mutex<Vec<(String, usize, config::NetFilter, Weak<T>)>>;
