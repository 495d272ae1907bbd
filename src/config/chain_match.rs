//! `filter_chain_match`, as the model carries it, and Envoy's rule for picking a listener's filter
//! chain for a connection (`FilterChainManagerImpl::findFilterChain`): destination port, then
//! destination IP, server name, transport protocol, application protocols, source type, source IP
//! and source port, each step keeping only the chains of its most specific match. Pure: no
//! parsing (that is `convert_tls`), no socket (the shard hands in what it learned).

use std::net::{IpAddr, SocketAddr};

/// A chain's `filter_chain_match`. Empty fields match anything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChainMatch {
    pub destination_port: Option<u16>,
    /// `prefix_ranges`.
    pub destination_ips: Vec<Cidr>,
    /// Lower-cased; `*.suffix` wildcards are kept as written.
    pub server_names: Vec<String>,
    pub transport_protocol: Option<Transport>,
    pub application_protocols: Vec<String>,
    pub source_type: SourceType,
    /// `source_prefix_ranges`.
    pub source_ips: Vec<Cidr>,
    pub source_ports: Vec<u16>,
}

impl ChainMatch {
    pub fn is_empty(&self) -> bool {
        *self == ChainMatch::default()
    }
}

/// `transport_protocol`, as the TLS inspector detects it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tls,
    RawBuffer,
}

/// `source_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourceType {
    #[default]
    Any,
    /// `SAME_IP_OR_LOOPBACK`: the peer is a loopback address or the connection's own address.
    Local,
    External,
}

/// A `CidrRange`, its address already masked to `len` bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    /// `addr/len`, masked; None when `len` is longer than the address.
    pub fn new(addr: IpAddr, len: u8) -> Option<Cidr> {
        let addr = match addr {
            IpAddr::V4(a) if len <= 32 => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) if len <= 128 => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
            _ => return None,
        };
        Some(Cidr { addr, len })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        Cidr::new(ip, self.len).is_some_and(|c| c.addr == self.addr)
    }
}

/// What a connection shows the chain matcher: its addresses always; its transport protocol, SNI
/// and ALPN only when the listener runs the TLS inspector (without it, Envoy sees `raw_buffer` and
/// neither name nor protocols, whatever the client sent).
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub local: Option<SocketAddr>,
    pub peer: Option<SocketAddr>,
    pub tls: bool,
    /// Lower-cased.
    pub sni: Option<String>,
    /// In the client's order.
    pub alpn: Vec<Vec<u8>>,
}

/// Index (into the slice given to `select`) of the chain Envoy would pick; None: no chain matches
/// (the connection goes to `default_filter_chain`, or is closed). `chains` must not hold two
/// identical matches (the loader refuses them, as Envoy does).
pub fn select(chains: &[ChainMatch], c: &Seen) -> Option<usize> {
    let all: Vec<usize> = (0..chains.len()).collect();
    let port = c.local.map(|a| a.port());
    // Chains for the connection's exact port take it over whole: if none of them matches, the
    // connection gets no chain (Envoy does not go on to the chains for any port).
    let exact: Vec<usize> =
        all.iter().copied().filter(|&i| port.is_some() && chains[i].destination_port == port).collect();
    if !exact.is_empty() {
        return after_port(chains, exact, c);
    }
    let any: Vec<usize> = all.into_iter().filter(|&i| chains[i].destination_port.is_none()).collect();
    after_port(chains, any, c)
}

/// Keeps the candidates whose rank is the best any of them has; a rank of None does not match.
fn narrow(cands: Vec<usize>, rank: impl Fn(usize) -> Option<u32>) -> Vec<usize> {
    let ranked: Vec<(usize, u32)> = cands.into_iter().filter_map(|i| rank(i).map(|r| (i, r))).collect();
    let Some(best) = ranked.iter().map(|(_, r)| *r).max() else { return Vec::new() };
    ranked.into_iter().filter(|(_, r)| *r == best).map(|(i, _)| i).collect()
}

/// The most specific prefix of `ranges` holding `ip` (0 for a chain with no ranges: any address).
fn by_prefix(ranges: &[Cidr], ip: Option<IpAddr>) -> Option<u32> {
    if ranges.is_empty() {
        return Some(0);
    }
    let ip = ip?;
    ranges.iter().filter(|r| r.contains(ip)).map(|r| 1 + u32::from(r.len)).max()
}

fn after_port(chains: &[ChainMatch], cands: Vec<usize>, c: &Seen) -> Option<usize> {
    let local_ip = c.local.map(|a| a.ip());
    let cands = narrow(cands, |i| by_prefix(&chains[i].destination_ips, local_ip));
    let cands = narrow(cands, |i| server_name_rank(&chains[i].server_names, c.sni.as_deref()));
    let cands = narrow(cands, |i| match chains[i].transport_protocol {
        None => Some(0),
        Some(Transport::Tls) => c.tls.then_some(1),
        Some(Transport::RawBuffer) => (!c.tls).then_some(1),
    });
    let cands = narrow(cands, |i| {
        let protocols = &chains[i].application_protocols;
        if protocols.is_empty() {
            return Some(0);
        }
        // The first protocol the client offers that some chain names wins.
        let offered = c.alpn.iter().position(|p| protocols.iter().any(|q| q.as_bytes() == p.as_slice()))?;
        Some(u32::MAX - offered as u32)
    });
    let is_local = || c.peer.is_some_and(|p| p.ip().is_loopback() || Some(p.ip()) == local_ip);
    let cands = narrow(cands, |i| match chains[i].source_type {
        SourceType::Any => Some(0),
        SourceType::Local => is_local().then_some(1),
        SourceType::External => (!is_local()).then_some(1),
    });
    let cands = narrow(cands, |i| by_prefix(&chains[i].source_ips, c.peer.map(|p| p.ip())));
    let peer_port = c.peer.map(|p| p.port());
    let cands = narrow(cands, |i| {
        let ports = &chains[i].source_ports;
        if ports.is_empty() {
            Some(0)
        } else {
            peer_port.filter(|p| ports.contains(p)).map(|_| 1)
        }
    });
    cands.first().copied()
}

/// An exact name ranks above every wildcard, a longer wildcard above a shorter one; a chain without
/// names takes any connection (and one without SNI), at the lowest rank.
fn server_name_rank(names: &[String], sni: Option<&str>) -> Option<u32> {
    if names.is_empty() {
        return Some(0);
    }
    let sni = sni?;
    names
        .iter()
        .filter_map(|n| match n.strip_prefix('*') {
            None => (n == sni).then_some(u32::MAX),
            // `*.example.com` needs at least one label before the suffix, as Envoy's lookup does.
            Some(suffix) => {
                (sni.len() > suffix.len() && sni.ends_with(suffix)).then_some(suffix.len() as u32)
            }
        })
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(sni: Option<&str>, alpn: &[&str], tls: bool) -> Seen {
        Seen {
            local: Some("127.0.0.1:10000".parse().unwrap_or_else(|e| panic!("{e}"))),
            peer: Some("127.0.0.1:40000".parse().unwrap_or_else(|e| panic!("{e}"))),
            tls,
            sni: sni.map(str::to_string),
            alpn: alpn.iter().map(|a| a.as_bytes().to_vec()).collect(),
        }
    }

    fn names(n: &[&str]) -> ChainMatch {
        ChainMatch { server_names: n.iter().map(|s| s.to_string()).collect(), ..ChainMatch::default() }
    }

    #[test]
    fn sni_picks_exact_then_longest_wildcard_then_the_catch_all() {
        let chains = [
            names(&["*.example.com"]),
            names(&["*.api.example.com"]),
            names(&["www.example.com"]),
            names(&[]),
        ];
        let pick = |sni: Option<&str>| select(&chains, &seen(sni, &[], true));
        assert_eq!(pick(Some("www.example.com")), Some(2));
        assert_eq!(pick(Some("v1.api.example.com")), Some(1));
        assert_eq!(pick(Some("shop.example.com")), Some(0));
        assert_eq!(pick(Some("example.com")), Some(3));
        assert_eq!(pick(None), Some(3));
        let strict = [names(&["a.example"])];
        assert_eq!(select(&strict, &seen(None, &[], true)), None);
    }

    #[test]
    fn a_more_specific_step_does_not_fall_back() {
        // The exact name wins the server-name step; its chain asks for h2, so an http/1.1 client
        // matches nothing (Envoy does not go back to the catch-all name).
        let h2 = ChainMatch { application_protocols: vec!["h2".into()], ..names(&["a.example"]) };
        let chains = [h2, names(&[])];
        assert_eq!(select(&chains, &seen(Some("a.example"), &["http/1.1"], true)), None);
        assert_eq!(select(&chains, &seen(Some("a.example"), &["http/1.1", "h2"], true)), Some(0));
        assert_eq!(select(&chains, &seen(Some("b.example"), &["h2"], true)), Some(1));
    }

    #[test]
    fn a_chain_for_the_exact_port_shuts_out_the_others() {
        let port = ChainMatch { destination_port: Some(10000), ..names(&["a.example"]) };
        let chains = [port, names(&[])];
        assert_eq!(select(&chains, &seen(Some("a.example"), &[], true)), Some(0));
        assert_eq!(select(&chains, &seen(Some("b.example"), &[], true)), None);
        let other = ChainMatch { destination_port: Some(10001), ..names(&["a.example"]) };
        let chains = [other, names(&[])];
        assert_eq!(select(&chains, &seen(Some("a.example"), &[], true)), Some(1));
    }

    #[test]
    fn alpn_follows_the_clients_order_and_prefixes_the_longest() {
        let a = ChainMatch { application_protocols: vec!["h2".into()], ..ChainMatch::default() };
        let b = ChainMatch { application_protocols: vec!["http/1.1".into()], ..ChainMatch::default() };
        let chains = [a, b];
        assert_eq!(select(&chains, &seen(None, &["http/1.1", "h2"], true)), Some(1));
        assert_eq!(select(&chains, &seen(None, &["h2", "http/1.1"], true)), Some(0));
        assert_eq!(select(&chains, &seen(None, &[], false)), None);
        let wide = Cidr::new("127.0.0.0".parse().unwrap_or_else(|e| panic!("{e}")), 8);
        let narrow = Cidr::new("127.0.0.1".parse().unwrap_or_else(|e| panic!("{e}")), 32);
        let chains = [
            ChainMatch { source_ips: wide.into_iter().collect(), ..ChainMatch::default() },
            ChainMatch { source_ips: narrow.into_iter().collect(), ..ChainMatch::default() },
        ];
        assert_eq!(select(&chains, &seen(None, &[], false)), Some(1));
    }
}
