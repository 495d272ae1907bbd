//! Name resolution for STRICT_DNS/LOGICAL_DNS clusters: /etc/hosts first, then the resolv.conf
//! nameservers (or a cluster's own `dns_resolvers`) over UDP, falling back to TCP on truncation.
//! Blocking by design: it runs on the control thread's helper threads (one per cluster
//! resolution in flight), never on a shard.
//!
//! Both files are re-read on every call so edits apply without a restart. resolv.conf's
//! `search`/`domain`, `options ndots:/timeout:/attempts:` are applied as glibc does, also when a
//! cluster brings its own nameservers. No caching: callers re-resolve on their own schedule.

mod client;
mod hosts;
mod resolv_conf;

pub use resolv_conf::{candidates, ResolvConf};

use crate::config::DnsLookupFamily;
use client::Outcome;
use hickory_proto::rr::{Name, RecordType};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where to ask when neither the caller nor resolv.conf names a nameserver (glibc's default).
const DEFAULT_NAMESERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53);

#[derive(Debug)]
pub enum DnsError {
    /// No server answered in time.
    Timeout { name: String },
    /// The name does not exist (NXDOMAIN) or has no address of the wanted family.
    NotFound { name: String },
    /// A server answered with an error code or garbage.
    Server { name: String, detail: String },
    /// The hosts file or resolv.conf exists but could not be read.
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
    /// A missing file counts as empty.
    pub hosts_file: PathBuf,
    /// A missing file counts as empty (no search list, ndots 1, nameserver 127.0.0.1).
    pub resolv_conf: PathBuf,
    /// Per attempt, per server. resolv.conf's `options timeout:N` overrides it.
    pub timeout: Duration,
    /// Rounds through the server list. resolv.conf's `options attempts:N` overrides it; 0 acts
    /// as 1.
    pub attempts: u32,
}

impl Resolver {
    /// /etc/hosts and /etc/resolv.conf, 2 s timeout, 2 attempts (unless resolv.conf's options
    /// say otherwise).
    pub fn system() -> Self {
        Resolver {
            hosts_file: PathBuf::from("/etc/hosts"),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            timeout: Duration::from_secs(2),
            attempts: 2,
        }
    }

    /// Resolves `name` (an IP literal, bare or bracketed, resolves to itself whatever the
    /// family). `servers` overrides resolv.conf's nameservers when not empty. The answer is
    /// in the order the hosts file or the server gave it, without duplicates, and never empty
    /// (LOGICAL_DNS takes the first address, as Envoy does, so the order matters).
    ///
    /// Families: V4Only asks for A, V6Only for AAAA, Auto and V4Preferred for A and then AAAA
    /// only when the name has no A records, All for both. The hosts file wins over DNS when it
    /// lists the name with an address of the wanted family; when it lists the name only with the
    /// other family, DNS is asked, as glibc's `hosts: files dns` does.
    pub fn resolve(
        &self,
        name: &str,
        family: DnsLookupFamily,
        servers: &[SocketAddr],
    ) -> Result<Vec<IpAddr>, DnsError> {
        if let Some(ip) = ip_literal(name) {
            return Ok(vec![ip]);
        }
        let hosts = read_optional(&self.hosts_file, name)?;
        let from_hosts = by_family(hosts::lookup(&hosts, name), family);
        if !from_hosts.is_empty() {
            return Ok(deduped(from_hosts));
        }

        let conf = ResolvConf::parse(&read_optional(&self.resolv_conf, name)?);
        let servers = if !servers.is_empty() {
            servers.to_vec()
        } else if !conf.nameservers.is_empty() {
            conf.nameservers.clone()
        } else {
            vec![DEFAULT_NAMESERVER]
        };
        let timeout = conf.timeout.unwrap_or(self.timeout);
        let attempts = conf.attempts.unwrap_or(self.attempts).max(1);
        let types: &[RecordType] = match family {
            DnsLookupFamily::V4Only => &[RecordType::A],
            DnsLookupFamily::V6Only => &[RecordType::AAAA],
            DnsLookupFamily::Auto | DnsLookupFamily::V4Preferred | DnsLookupFamily::All => {
                &[RecordType::A, RecordType::AAAA]
            }
        };

        // Like glibc's res_search: NXDOMAIN, NODATA and SERVFAIL move on to the next candidate,
        // but a silent server ends the search, or a dead nameserver would cost a full timeout
        // per search domain.
        let mut failure = None;
        for candidate in candidates(name, &conf.search, conf.ndots) {
            // Too long, empty labels and the like: such a name cannot exist, try the next one.
            let Ok(qname) = Name::from_ascii(&candidate) else {
                continue;
            };
            let mut found = Vec::new();
            for &record_type in types {
                match client::lookup(&servers, &qname, record_type, timeout, attempts) {
                    Outcome::Addresses(ips) => found.extend(ips),
                    // The name does not exist, so neither does any other type of record for it.
                    Outcome::NxDomain => break,
                    Outcome::Failed(detail) => failure = Some(detail),
                    Outcome::Timeout => return Err(DnsError::Timeout { name: name.to_string() }),
                }
                if !found.is_empty() && family != DnsLookupFamily::All {
                    break;
                }
            }
            if !found.is_empty() {
                return Ok(deduped(found));
            }
        }
        Err(match failure {
            Some(detail) => DnsError::Server { name: name.to_string(), detail },
            None => DnsError::NotFound { name: name.to_string() },
        })
    }
}

fn ip_literal(name: &str) -> Option<IpAddr> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Some(ip);
    }
    let inner = name.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

/// The file's text, lossily decoded so one stray non-UTF-8 byte cannot hide every other line.
fn read_optional(path: &Path, name: &str) -> Result<String, DnsError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(DnsError::Io { name: name.to_string(), source }),
    }
}

/// Applies the family to a complete address list (the hosts file gives both families at once).
fn by_family(ips: Vec<IpAddr>, family: DnsLookupFamily) -> Vec<IpAddr> {
    let (v4, v6): (Vec<IpAddr>, Vec<IpAddr>) = ips.into_iter().partition(IpAddr::is_ipv4);
    match family {
        DnsLookupFamily::V4Only => v4,
        DnsLookupFamily::V6Only => v6,
        DnsLookupFamily::Auto | DnsLookupFamily::V4Preferred if !v4.is_empty() => v4,
        DnsLookupFamily::Auto | DnsLookupFamily::V4Preferred => v6,
        DnsLookupFamily::All => v4.into_iter().chain(v6).collect(),
    }
}

fn deduped(ips: Vec<IpAddr>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::with_capacity(ips.len());
    for ip in ips {
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn literals_resolve_to_themselves() {
        assert_eq!(ip_literal("10.1.2.3"), Some(ips(&["10.1.2.3"])[0]));
        assert_eq!(ip_literal("::1"), Some(ips(&["::1"])[0]));
        assert_eq!(ip_literal("[2001:db8::1]"), Some(ips(&["2001:db8::1"])[0]));
        assert_eq!(ip_literal("[10.1.2.3]"), None);
        assert_eq!(ip_literal("[::1"), None);
        assert_eq!(ip_literal("example.com"), None);
        assert_eq!(ip_literal(""), None);
    }

    #[test]
    fn literal_needs_no_files_or_servers() {
        let resolver = Resolver {
            hosts_file: PathBuf::from("/nonexistent/skiff-hosts"),
            resolv_conf: PathBuf::from("/nonexistent/skiff-resolv.conf"),
            timeout: Duration::from_millis(1),
            attempts: 1,
        };
        let got = resolver.resolve("[::1]", DnsLookupFamily::V4Only, &[]).unwrap();
        assert_eq!(got, ips(&["::1"]));
    }

    #[test]
    fn family_filter_on_complete_lists() {
        let both = ips(&["::1", "10.0.0.2", "10.0.0.1"]);
        let v6 = ips(&["::1"]);
        assert_eq!(by_family(both.clone(), DnsLookupFamily::V4Only), ips(&["10.0.0.2", "10.0.0.1"]));
        assert_eq!(by_family(both.clone(), DnsLookupFamily::V6Only), v6);
        assert_eq!(by_family(both.clone(), DnsLookupFamily::Auto), ips(&["10.0.0.2", "10.0.0.1"]));
        assert_eq!(by_family(v6.clone(), DnsLookupFamily::V4Preferred), v6);
        assert_eq!(by_family(both.clone(), DnsLookupFamily::All).len(), 3);
        assert!(by_family(v6, DnsLookupFamily::V4Only).is_empty());
    }

    #[test]
    fn answers_keep_their_order_without_duplicates() {
        assert_eq!(
            deduped(ips(&["::1", "10.0.0.2", "10.0.0.1", "10.0.0.2"])),
            ips(&["::1", "10.0.0.2", "10.0.0.1"])
        );
    }
}
