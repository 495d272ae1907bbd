//! Name resolution for STRICT_DNS/LOGICAL_DNS clusters: /etc/hosts first, then the resolv.conf
//! nameservers (or a cluster's own `dns_resolvers`) over UDP, falling back to TCP on truncation.
//! Blocking by design: it runs only on the control thread, never on a shard.

use crate::config::DnsLookupFamily;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug)]
pub enum DnsError {
    /// No server answered in time.
    Timeout { name: String },
    /// The name does not exist (NXDOMAIN) or has no address of the wanted family.
    NotFound { name: String },
    /// A server answered with an error code or garbage.
    Server { name: String, detail: String },
    Io { name: String, source: std::io::Error },
}

impl std::fmt::Display for DnsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DnsError::Timeout { name } => write!(f, "resolving {name}: no nameserver answered"),
            DnsError::NotFound { name } => write!(f, "resolving {name}: no such host"),
            DnsError::Server { name, detail } => write!(f, "resolving {name}: {detail}"),
            DnsError::Io { name, source } => write!(f, "resolving {name}: {source}"),
        }
    }
}

impl std::error::Error for DnsError {}

pub struct Resolver {
    pub hosts_file: PathBuf,
    pub resolv_conf: PathBuf,
    /// Per attempt, per server.
    pub timeout: Duration,
    pub attempts: u32,
}

impl Resolver {
    /// /etc/hosts and /etc/resolv.conf, 2 s timeout, 2 attempts.
    pub fn system() -> Self {
        Resolver {
            hosts_file: PathBuf::from("/etc/hosts"),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            timeout: Duration::from_secs(2),
            attempts: 2,
        }
    }

    /// Resolves `name` (an IP literal resolves to itself). `servers` overrides resolv.conf's
    /// nameservers when not empty. The answer is sorted and de-duplicated so callers can compare.
    pub fn resolve(
        &self,
        name: &str,
        family: DnsLookupFamily,
        servers: &[SocketAddr],
    ) -> Result<Vec<IpAddr>, DnsError> {
        let _ = (name, family, servers);
        unimplemented!("dns helper")
    }
}
