//! /etc/hosts parsing. Re-read on every lookup: the file is tiny and the control thread only
//! resolves every few seconds, so editing it takes effect without a restart.

use std::net::IpAddr;

/// Every address listed for `name` in hosts-file `text`, in file order (duplicates kept; the
/// resolver sorts and de-duplicates). Matching ignores ASCII case and one trailing dot on either
/// side, as glibc's files backend does.
pub fn lookup(text: &str, name: &str) -> Vec<IpAddr> {
    let wanted = normalize(name);
    if wanted.is_empty() {
        return Vec::new();
    }
    let mut found = Vec::new();
    for line in text.lines() {
        let line = match line.find('#') {
            Some(i) => &line[..i],
            None => line,
        };
        let mut fields = line.split_whitespace();
        let Some(addr) = fields.next() else { continue };
        // Lines with a scope id (fe80::1%eth0) or junk are skipped rather than failing the whole
        // file: IpAddr cannot carry a scope, and one bad line must not hide the others.
        let Ok(addr) = addr.parse::<IpAddr>() else {
            continue;
        };
        if fields.any(|alias| normalize(alias).eq_ignore_ascii_case(wanted)) {
            found.push(addr);
        }
    }
    found
}

fn normalize(name: &str) -> &str {
    name.strip_suffix('.').unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTS: &str = "\
# comment line
127.0.0.1\tlocalhost
::1     localhost ip6-localhost ip6-loopback  # trailing comment
10.0.0.1 Web.Example.com web www
10.0.0.2 db.example.com. db   # alias with trailing dot
   10.0.0.3   web
fe80::1%eth0 scoped
not-an-ip  broken
10.0.0.9 #commented-alias
";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn finds_all_addresses_across_lines() {
        assert_eq!(lookup(HOSTS, "localhost"), vec![ip("127.0.0.1"), ip("::1")]);
        assert_eq!(lookup(HOSTS, "web"), vec![ip("10.0.0.1"), ip("10.0.0.3")]);
    }

    #[test]
    fn aliases_case_and_trailing_dot() {
        assert_eq!(lookup(HOSTS, "web.example.com"), vec![ip("10.0.0.1")]);
        assert_eq!(lookup(HOSTS, "WEB.EXAMPLE.COM."), vec![ip("10.0.0.1")]);
        assert_eq!(lookup(HOSTS, "www"), vec![ip("10.0.0.1")]);
        assert_eq!(lookup(HOSTS, "db.example.com"), vec![ip("10.0.0.2")]);
        assert_eq!(lookup(HOSTS, "db.example.com."), vec![ip("10.0.0.2")]);
        assert_eq!(lookup(HOSTS, "ip6-loopback"), vec![ip("::1")]);
    }

    #[test]
    fn comments_bad_lines_and_misses() {
        assert!(lookup(HOSTS, "comment").is_empty());
        assert!(lookup(HOSTS, "commented-alias").is_empty());
        assert!(lookup(HOSTS, "#commented-alias").is_empty());
        assert!(lookup(HOSTS, "scoped").is_empty());
        assert!(lookup(HOSTS, "broken").is_empty());
        assert!(lookup(HOSTS, "not-an-ip").is_empty());
        assert!(lookup(HOSTS, "example.com").is_empty());
        assert!(lookup(HOSTS, "").is_empty());
        assert!(lookup(HOSTS, ".").is_empty());
        assert!(lookup("", "localhost").is_empty());
        assert!(lookup("\0\u{feff}garbage\n\n#", "localhost").is_empty());
    }
}
