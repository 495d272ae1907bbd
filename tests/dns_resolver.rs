//! skiff::dns::Resolver against a real (test) DNS server on loopback.

#[path = "support/dns_server.rs"]
mod dns_server;

use dns_server::TestDnsServer;
use skiff::config::DnsLookupFamily;
use skiff::dns::{DnsError, Resolver};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

/// A file in the temp dir, unique per test process and call, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str, contents: &str) -> TempFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("skiff-dns-{}-{tag}-{n}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Files that do not exist: no hosts entries, no search list, and the servers come from the test.
fn resolver() -> Resolver {
    Resolver {
        hosts_file: PathBuf::from("/nonexistent/skiff-test-hosts"),
        resolv_conf: PathBuf::from("/nonexistent/skiff-test-resolv.conf"),
        timeout: Duration::from_millis(500),
        attempts: 2,
    }
}

#[test]
fn a_lookup_keeps_the_server_order_without_duplicates() {
    let server = TestDnsServer::start();
    server.set("web.test", ips(&["10.0.0.2", "10.0.0.1", "10.0.0.2"]));
    let got = resolver().resolve("web.test", DnsLookupFamily::V4Only, &[server.addr()]).unwrap();
    assert_eq!(got, ips(&["10.0.0.2", "10.0.0.1"]));
    // Case and a trailing dot do not matter.
    let got = resolver().resolve("WEB.Test.", DnsLookupFamily::Auto, &[server.addr()]).unwrap();
    assert_eq!(got, ips(&["10.0.0.2", "10.0.0.1"]));
}

#[test]
fn families() {
    let server = TestDnsServer::start();
    server.set("both.test", ips(&["10.0.0.1", "2001:db8::1"]));
    server.set("v6.test", ips(&["2001:db8::6"]));
    let r = resolver();
    let s = [server.addr()];
    let both = |family| r.resolve("both.test", family, &s).unwrap();
    assert_eq!(both(DnsLookupFamily::Auto), ips(&["10.0.0.1"]));
    assert_eq!(both(DnsLookupFamily::V4Preferred), ips(&["10.0.0.1"]));
    assert_eq!(both(DnsLookupFamily::V4Only), ips(&["10.0.0.1"]));
    assert_eq!(both(DnsLookupFamily::V6Only), ips(&["2001:db8::1"]));
    assert_eq!(both(DnsLookupFamily::All), ips(&["10.0.0.1", "2001:db8::1"]));

    // Auto falls back to AAAA when there is no A record.
    let got = r.resolve("v6.test", DnsLookupFamily::Auto, &s).unwrap();
    assert_eq!(got, ips(&["2001:db8::6"]));
    let got = r.resolve("v6.test", DnsLookupFamily::V4Preferred, &s).unwrap();
    assert_eq!(got, ips(&["2001:db8::6"]));
    // V4Only never looks at AAAA.
    let before = server.queries();
    let err = r.resolve("v6.test", DnsLookupFamily::V4Only, &s).unwrap_err();
    assert!(matches!(err, DnsError::NotFound { .. }), "{err:?}");
    assert_eq!(server.queries() - before, 1);
}

#[test]
fn nxdomain_is_not_found() {
    let server = TestDnsServer::start();
    let err = resolver().resolve("missing.test", DnsLookupFamily::Auto, &[server.addr()]).unwrap_err();
    assert!(matches!(err, DnsError::NotFound { ref name } if name == "missing.test"), "{err:?}");
    // NXDOMAIN for A means no AAAA either: one query, not two.
    assert_eq!(server.queries(), 1);
}

#[test]
fn changes_are_seen_on_next_call() {
    let server = TestDnsServer::start();
    let r = resolver();
    let s = [server.addr()];
    server.set("svc.test", ips(&["10.0.0.1"]));
    assert_eq!(r.resolve("svc.test", DnsLookupFamily::V4Only, &s).unwrap(), ips(&["10.0.0.1"]));
    server.set("svc.test", ips(&["10.0.0.7", "10.0.0.8"]));
    assert_eq!(r.resolve("svc.test", DnsLookupFamily::V4Only, &s).unwrap(), ips(&["10.0.0.7", "10.0.0.8"]));
    server.remove("svc.test");
    let err = r.resolve("svc.test", DnsLookupFamily::V4Only, &s).unwrap_err();
    assert!(matches!(err, DnsError::NotFound { .. }), "{err:?}");
}

#[test]
fn cname_chain_is_followed() {
    let server = TestDnsServer::start();
    server.set_cname("alias.test", "middle.test");
    server.set_cname("middle.test", "real.test");
    server.set("real.test", ips(&["10.0.0.42"]));
    let got = resolver().resolve("alias.test", DnsLookupFamily::Auto, &[server.addr()]).unwrap();
    assert_eq!(got, ips(&["10.0.0.42"]));
}

#[test]
fn truncated_udp_falls_back_to_tcp() {
    let server = TestDnsServer::start();
    server.set_truncate_udp(true);
    server.set("big.test", ips(&["10.0.0.1", "10.0.0.2", "2001:db8::1"]));
    let got = resolver().resolve("big.test", DnsLookupFamily::All, &[server.addr()]).unwrap();
    assert_eq!(got, ips(&["10.0.0.1", "10.0.0.2", "2001:db8::1"]));
    // Each of A and AAAA: one UDP query, then one over TCP.
    assert_eq!(server.queries(), 4);
}

#[test]
fn stray_and_garbage_datagrams_are_ignored() {
    let server = TestDnsServer::start();
    server.set_junk_first(true);
    server.set("web.test", ips(&["10.0.0.1"]));
    let got = resolver().resolve("web.test", DnsLookupFamily::V4Only, &[server.addr()]).unwrap();
    assert_eq!(got, ips(&["10.0.0.1"]));
}

#[test]
fn dead_server_times_out() {
    // Bound but never read: no answer and no ICMP port unreachable either.
    let dead = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut r = resolver();
    r.timeout = Duration::from_millis(200);
    r.attempts = 2;
    let start = Instant::now();
    let err = r.resolve("web.test", DnsLookupFamily::Auto, &[dead.local_addr().unwrap()]).unwrap_err();
    let elapsed = start.elapsed();
    assert!(matches!(err, DnsError::Timeout { .. }), "{err:?}");
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
}

#[test]
fn failing_server_passes_to_next() {
    let dead = UdpSocket::bind("127.0.0.1:0").unwrap();
    let failing = TestDnsServer::start();
    failing.set_servfail(true);
    let good = TestDnsServer::start();
    good.set("web.test", ips(&["10.0.0.1"]));
    let mut r = resolver();
    r.timeout = Duration::from_millis(200);
    let servers: Vec<SocketAddr> = vec![dead.local_addr().unwrap(), failing.addr(), good.addr()];
    let got = r.resolve("web.test", DnsLookupFamily::V4Only, &servers).unwrap();
    assert_eq!(got, ips(&["10.0.0.1"]));

    // SERVFAIL from everyone is a server error, not "no such host".
    let err = r.resolve("web.test", DnsLookupFamily::V4Only, &[failing.addr()]).unwrap_err();
    assert!(matches!(err, DnsError::Server { .. }), "{err:?}");
}

#[test]
fn hosts_file_takes_precedence() {
    let server = TestDnsServer::start();
    server.set("web.test", ips(&["10.0.0.1"]));
    server.set("v6host.test", ips(&["10.9.9.9"]));
    let hosts = TempFile::new(
        "hosts",
        "# test hosts\n192.0.2.1 Web.Test other # comment\n192.0.2.2 web.test\n2001:db8::7 v6host.test\n",
    );
    let mut r = resolver();
    r.hosts_file = hosts.0.clone();
    let s = [server.addr()];
    let got = r.resolve("web.test", DnsLookupFamily::Auto, &s).unwrap();
    assert_eq!(got, ips(&["192.0.2.1", "192.0.2.2"]));
    let got = r.resolve("other", DnsLookupFamily::All, &s).unwrap();
    assert_eq!(got, ips(&["192.0.2.1"]));
    assert_eq!(server.queries(), 0);
    // Listed only with IPv6: a V4Only lookup goes on to DNS, like glibc's `hosts: files dns`.
    let got = r.resolve("v6host.test", DnsLookupFamily::V4Only, &s).unwrap();
    assert_eq!(got, ips(&["10.9.9.9"]));

    // The file is re-read on every call.
    std::fs::write(&hosts.0, "192.0.2.9 web.test\n").unwrap();
    let got = r.resolve("web.test", DnsLookupFamily::Auto, &s).unwrap();
    assert_eq!(got, ips(&["192.0.2.9"]));
}

#[test]
fn resolv_conf_search_domains_and_nameserver() {
    let server = TestDnsServer::start();
    server.set("web.b.test", ips(&["10.0.0.2"]));
    server.set("web", ips(&["10.0.0.99"]));
    server.set("db.svc.a.test", ips(&["10.0.0.3"]));
    server.set("db.svc", ips(&["10.0.0.98"]));
    let conf = |ndots: u32| {
        TempFile::new(
            "resolv",
            &format!("nameserver 192.0.2.53\nsearch a.test b.test\noptions ndots:{ndots} timeout:1\n"),
        )
    };
    let mut r = resolver();
    let s = [server.addr()];

    // "web" has fewer dots than ndots:1: suffixes first (a.test NXDOMAIN, b.test hit).
    let file = conf(1);
    r.resolv_conf = file.0.clone();
    assert_eq!(r.resolve("web", DnsLookupFamily::V4Only, &s).unwrap(), ips(&["10.0.0.2"]));
    // "db.svc" has enough dots: tried as-is first.
    assert_eq!(r.resolve("db.svc", DnsLookupFamily::V4Only, &s).unwrap(), ips(&["10.0.0.98"]));
    // A trailing dot means absolute: no search list.
    assert_eq!(r.resolve("web.", DnsLookupFamily::V4Only, &s).unwrap(), ips(&["10.0.0.99"]));

    // With ndots:2 the search list comes first for "db.svc" too.
    let file = conf(2);
    r.resolv_conf = file.0.clone();
    assert_eq!(r.resolve("db.svc", DnsLookupFamily::V4Only, &s).unwrap(), ips(&["10.0.0.3"]));
}

#[test]
fn resolv_conf_options_override_resolver_settings() {
    let dead = UdpSocket::bind("127.0.0.1:0").unwrap();
    let file = TempFile::new(
        "resolv",
        "options timeout:1 attempts:1
",
    );
    let mut r = resolver();
    r.resolv_conf = file.0.clone();
    r.timeout = Duration::from_millis(100);
    r.attempts = 5;
    let start = Instant::now();
    let err = r.resolve("web.test", DnsLookupFamily::V4Only, &[dead.local_addr().unwrap()]).unwrap_err();
    let elapsed = start.elapsed();
    assert!(matches!(err, DnsError::Timeout { .. }), "{err:?}");
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(2500), "{elapsed:?}");
}
