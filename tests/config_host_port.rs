//! Virtual host choice with a port in the Host, as Envoy 1.40 does it (checked with the binary):
//! the Host is matched as sent unless the connection manager says `strip_any_host_port` or
//! `strip_matching_host_port` (the latter strips the listener's own port only).
mod support;

use support::*;

/// Two virtual hosts answering their own name, and a catch-all answering "fallback".
fn config(listener_port: u16, hcm_extra: &str) -> String {
    let reply = |name: &str, domains: &str| {
        format!(
            "                    - name: {name}\n                      domains: {domains}\n                      routes:\n                        - match: {{ prefix: \"/\" }}\n                          direct_response: {{ status: 200, body: {{ inline_string: {name} }} }}\n"
        )
    };
    let vhosts = [
        reply("exact", "[\"example.com\"]"),
        reply("prefix", "[\"api.*\"]"),
        reply("exact_api", "[\"api.example.com\"]"),
        reply("fallback", "[\"*\"]"),
    ]
    .concat();
    simple_config(&[dead_port()])
        .replace("port_value: 0 }", &format!("port_value: {listener_port} }}"))
        .replace("stat_prefix: ingress\n", &format!("stat_prefix: ingress\n{hcm_extra}"))
        .replace(
            "                    - name: all\n                      domains: [\"*\"]\n                      routes:\n                        - match: { prefix: \"/\" }\n                          route: { cluster: backend, timeout: 2s }\n",
            &vhosts,
        )
}

fn who(skiff: &Skiff, host: &str) -> String {
    let r = get_host(skiff.listener("main"), host, "/", &[]);
    assert_eq!(r.status, 200, "{host}");
    r.text()
}

#[test]
fn host_with_a_port_does_not_match_a_portless_domain_by_default() {
    let skiff = Skiff::start(&config(0, ""), &[]);
    assert_eq!(who(&skiff, "example.com"), "exact");
    assert_eq!(who(&skiff, "EXAMPLE.com"), "exact");
    assert_eq!(who(&skiff, "example.com:8080"), "fallback");
    assert_eq!(who(&skiff, "example.com:80"), "fallback");
    // Envoy matches "api.example.com:8080" against the domains as sent: the prefix one wins.
    assert_eq!(who(&skiff, "api.example.com"), "exact_api");
    assert_eq!(who(&skiff, "api.example.com:8080"), "prefix");
}

#[test]
fn strip_any_host_port_matches_without_the_port() {
    let skiff = Skiff::start(&config(0, "                strip_any_host_port: true\n"), &[]);
    assert_eq!(who(&skiff, "example.com:8080"), "exact");
    assert_eq!(who(&skiff, "EXAMPLE.com:80"), "exact");
    assert_eq!(who(&skiff, "api.example.com:8080"), "exact_api");
}

#[test]
fn strip_matching_host_port_strips_only_the_listeners_port() {
    let port = free_port();
    let skiff = Skiff::start(&config(port, "                strip_matching_host_port: true\n"), &[]);
    assert_eq!(skiff.listener("main").port(), port);
    assert_eq!(who(&skiff, &format!("example.com:{port}")), "exact");
    assert_eq!(who(&skiff, "example.com:1"), "fallback");
    assert_eq!(who(&skiff, "example.com"), "exact");
}

#[test]
fn both_strip_options_are_refused_as_envoy_refuses_them() {
    let yaml = config(
        0,
        "                strip_any_host_port: true\n                strip_matching_host_port: true\n",
    );
    let err = Skiff::try_start(&yaml, &[]).err().expect("config with both strip options loaded");
    assert!(
        err.contains("Only one of `strip_matching_host_port` or `strip_any_host_port` can be set."),
        "{err}"
    );
}
