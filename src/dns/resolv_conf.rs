//! resolv.conf parsing and the glibc search-list rules built on it.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::Duration;

/// glibc's caps (RES_MAXNDOTS, RES_MAXRETRANS, RES_MAXRETRY): a typo like `ndots:500` must not
/// turn one lookup into hundreds of queries or a minutes-long stall.
const MAX_NDOTS: u32 = 15;
const MAX_TIMEOUT_SECS: u64 = 30;
const MAX_ATTEMPTS: u32 = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    /// In file order, port 53. Empty when the file names none (the caller picks the default).
    pub nameservers: Vec<SocketAddr>,
    /// Suffixes from the last `search` or `domain` line, without trailing dots.
    pub search: Vec<String>,
    pub ndots: u32,
    /// `options timeout:N`, None when absent.
    pub timeout: Option<Duration>,
    /// `options attempts:N`, None when absent.
    pub attempts: Option<u32>,
}

impl Default for ResolvConf {
    fn default() -> Self {
        ResolvConf { nameservers: Vec::new(), search: Vec::new(), ndots: 1, timeout: None, attempts: None }
    }
}

impl ResolvConf {
    /// Never fails: unknown keywords, bad addresses and malformed options are skipped one by one,
    /// as the libc resolver does, so a single odd line cannot disable name resolution.
    pub fn parse(text: &str) -> Self {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            // Tokens after a comment character are dropped; glibc only honours comments at the
            // start of a line, but nothing legitimate in this file starts with '#' or ';'.
            let mut tokens =
                line.split_whitespace().take_while(|t| !t.starts_with('#') && !t.starts_with(';'));
            let Some(keyword) = tokens.next() else {
                continue;
            };
            match keyword {
                "nameserver" => {
                    if let Some(addr) = tokens.next().and_then(parse_nameserver) {
                        conf.nameservers.push(addr);
                    }
                }
                // `domain` and `search` override each other: the last one in the file wins.
                "domain" => conf.search = tokens.next().map(suffix).into_iter().flatten().collect(),
                "search" => conf.search = tokens.filter_map(suffix).collect(),
                "options" => {
                    for option in tokens {
                        conf.apply_option(option);
                    }
                }
                _ => {}
            }
        }
        conf
    }

    fn apply_option(&mut self, option: &str) {
        let Some((key, value)) = option.split_once(':') else {
            return;
        };
        let Ok(value) = value.parse::<u64>() else {
            return;
        };
        match key {
            "ndots" => self.ndots = value.min(u64::from(MAX_NDOTS)) as u32,
            // Zero would mean "never wait"; glibc rounds it up to one second too.
            "timeout" => self.timeout = Some(Duration::from_secs(value.clamp(1, MAX_TIMEOUT_SECS))),
            "attempts" => self.attempts = Some(value.clamp(1, u64::from(MAX_ATTEMPTS)) as u32),
            _ => {}
        }
    }
}

fn suffix(domain: &str) -> Option<String> {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    // "search ." means "no suffix"; appending the root would only repeat the as-is query.
    (!domain.is_empty()).then(|| domain.to_string())
}

fn parse_nameserver(text: &str) -> Option<SocketAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 53));
    }
    // Link-local IPv6 servers need their interface: fe80::1%eth0 or fe80::1%2.
    let (ip, scope) = text.split_once('%')?;
    let ip = ip.parse::<Ipv6Addr>().ok()?;
    let scope_id = match scope.parse::<u32>() {
        Ok(index) => index,
        Err(_) => interface_index(scope)?,
    };
    Some(SocketAddr::V6(SocketAddrV6::new(ip, 53, 0, scope_id)))
}

fn interface_index(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// The absolute names (each ending in '.') to query for `name`, in order, following glibc's
/// res_search: a trailing dot means the name is absolute and is tried alone; otherwise a name
/// with at least `ndots` dots is tried as-is first and then with each suffix, and a name with
/// fewer dots is tried with each suffix first and as-is last. Empty for an empty name.
pub fn candidates(name: &str, search: &[String], ndots: u32) -> Vec<String> {
    if let Some(absolute) = name.strip_suffix('.') {
        if absolute.is_empty() {
            return Vec::new();
        }
        return vec![name.to_string()];
    }
    if name.is_empty() {
        return Vec::new();
    }
    let as_is = format!("{name}.");
    let searched = search.iter().map(|s| format!("{name}.{s}."));
    let dots = name.bytes().filter(|&b| b == b'.').count();
    if dots >= ndots as usize {
        std::iter::once(as_is).chain(searched).collect()
    } else {
        searched.chain(std::iter::once(as_is)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_for_empty_or_garbage() {
        assert_eq!(ResolvConf::parse(""), ResolvConf::default());
        let conf = ResolvConf::parse("nameserver\nnameserver bogus\noptions ndots:x timeout: :\n\0\u{1}");
        assert_eq!(conf, ResolvConf::default());
        assert_eq!(conf.ndots, 1);
    }

    #[test]
    fn nameservers_v4_v6_and_comments() {
        let conf = ResolvConf::parse(
            "# generated\n; another comment\nnameserver 10.0.0.53\n\
             nameserver 2001:db8::53 # trailing\n#nameserver 9.9.9.9\n\
             nameserver fe80::1%3\n  nameserver\t1.1.1.1\nnameservers 8.8.8.8\n",
        );
        assert_eq!(
            conf.nameservers,
            vec![
                sa("10.0.0.53:53"),
                sa("[2001:db8::53]:53"),
                SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 53, 0, 3)),
                sa("1.1.1.1:53"),
            ]
        );
    }

    #[test]
    fn search_and_domain_last_wins() {
        let conf = ResolvConf::parse("domain corp.example\nsearch a.example b.example. .\n");
        assert_eq!(conf.search, vec!["a.example", "b.example"]);
        let conf = ResolvConf::parse("search a.example b.example\ndomain corp.example.\n");
        assert_eq!(conf.search, vec!["corp.example"]);
        let conf = ResolvConf::parse("search a.example\nsearch\n");
        assert!(conf.search.is_empty());
    }

    #[test]
    fn options_and_caps() {
        let conf = ResolvConf::parse("options rotate ndots:5 timeout:3 attempts:4 edns0\n");
        assert_eq!(conf.ndots, 5);
        assert_eq!(conf.timeout, Some(Duration::from_secs(3)));
        assert_eq!(conf.attempts, Some(4));
        let conf = ResolvConf::parse("options ndots:99 timeout:0 attempts:0\noptions timeout:999\n");
        assert_eq!(conf.ndots, 15);
        assert_eq!(conf.timeout, Some(Duration::from_secs(30)));
        assert_eq!(conf.attempts, Some(1));
        let conf = ResolvConf::parse("options ndots:0 attempts:99999999999999999999999\n");
        assert_eq!(conf.ndots, 0);
        assert_eq!(conf.attempts, None);
    }

    #[test]
    fn candidate_order_follows_ndots() {
        let search = vec!["a.example".to_string(), "b.example".to_string()];
        assert_eq!(candidates("web", &search, 1), vec!["web.a.example.", "web.b.example.", "web."]);
        assert_eq!(
            candidates("web.svc", &search, 1),
            vec!["web.svc.", "web.svc.a.example.", "web.svc.b.example."]
        );
        // Kubernetes-style ndots:5: even dotted names go through the search list first.
        assert_eq!(
            candidates("web.svc", &search, 5),
            vec!["web.svc.a.example.", "web.svc.b.example.", "web.svc."]
        );
        assert_eq!(candidates("web", &search, 0), vec!["web.", "web.a.example.", "web.b.example."]);
    }

    #[test]
    fn candidates_absolute_and_empty() {
        let search = vec!["a.example".to_string()];
        assert_eq!(candidates("web.example.", &search, 5), vec!["web.example."]);
        assert_eq!(candidates("web", &[], 1), vec!["web."]);
        assert!(candidates("", &search, 1).is_empty());
        assert!(candidates(".", &search, 1).is_empty());
    }
}
