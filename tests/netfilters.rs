//! The network filters before the connection manager or tcp_proxy, as a user sees them from
//! skiff alone: where a filter may sit in a chain and what is refused (with its place in the
//! file), a rate that is the process's across shards, `runtime_enabled` turning a filter off, a
//! connection limit's delay, a count that survives a config reload, and the stats' names in
//! `/stats` and `/stats/prometheus`. What Envoy does with the same traffic is tests/parity_netfilters.rs.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use support::{admin_request, indent, served_hcm_yaml, Skiff};

const RATE_LIMIT: &str = r#"- name: envoy.filters.network.local_ratelimit
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit
    stat_prefix: rl
    token_bucket: { max_tokens: 3, tokens_per_fill: 1, fill_interval: 3600s }
"#;

fn connection_limit(max: u32, extra: &str) -> String {
    format!(
        r#"- name: envoy.filters.network.connection_limit
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit
    stat_prefix: cl
    max_connections: {max}
{}"#,
        indent(extra, 4)
    )
}

const TCP_PROXY: &str = r#"- name: envoy.filters.network.tcp_proxy
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
    stat_prefix: tcp_in
    cluster: backend
"#;

/// A bootstrap with listener `main` running `filters`, a cluster `backend` at `upstream` and the
/// line `marker` (a comment, so that a reload can change the file and nothing else).
fn config(filters: &str, upstream: SocketAddr, marker: &str) -> String {
    format!(
        "# {marker}\nadmin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}\nstatic_resources:\n  listeners:\n    - name: main\n      address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}\n      filter_chains:\n        - filters:\n{}  clusters:\n{}",
        indent(filters, 12),
        indent(&support::static_cluster_yaml("backend", "ROUND_ROBIN", &[(upstream, 1)]), 4)
    )
}

fn load_error(filters: &str) -> String {
    let yaml = config(filters, SocketAddr::from(([127, 0, 0, 1], 9)), "");
    match skiff::config::load_str(&yaml, "skiff.yaml") {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

/// Sends one request on a new connection and keeps it open: Some(stream) when it was served,
/// None when the proxy closed the connection.
fn open(addr: SocketAddr) -> Option<TcpStream> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("served") {
        match s.read(&mut buf) {
            Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
    Some(s)
}

/// Asserts `/stats/prometheus` has the sample `line`.
fn assert_prometheus(skiff: &Skiff, line: &str) {
    let (_, prometheus) = admin_request(skiff.admin(), "GET", "/stats/prometheus");
    assert!(prometheus.contains(line), "no {line} in:\n{prometheus}");
}

fn stat(skiff: &Skiff, name: &str) -> i64 {
    let (_, body) = admin_request(skiff.admin(), "GET", "/stats");
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(": ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /stats:\n{body}"))
}

#[test]
fn a_limit_must_come_before_the_terminal_filter_and_unknown_filters_stay_refused() {
    let hcm = served_hcm_yaml("ingress", "");
    let last = load_error(&format!("{hcm}{RATE_LIMIT}"));
    assert!(
        last.contains("filters[0]: network filter \"envoy.filters.network.http_connection_manager\" must be the last in its filter chain"),
        "{last}"
    );
    let alone = load_error(RATE_LIMIT);
    assert!(
        alone.contains(
            "filters[0]: network filter \"envoy.filters.network.local_ratelimit\" cannot end a filter chain"
        ),
        "{alone}"
    );
    let mysql = format!(
        "- name: envoy.filters.network.mysql_proxy\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.filters.network.mysql_proxy.v3.MySQLProxy\n    stat_prefix: mysql\n{TCP_PROXY}"
    );
    let mysql = load_error(&mysql);
    assert!(
        mysql.contains("filters[0].name: network filter \"envoy.filters.network.mysql_proxy\" is not supported; skiff runs envoy.filters.network.http_connection_manager or envoy.filters.network.tcp_proxy, each after any of envoy.filters.network.local_ratelimit, envoy.filters.network.connection_limit and envoy.filters.network.rbac"),
        "{mysql}"
    );
    let share = load_error(&format!(
        "{}{hcm}",
        RATE_LIMIT.replace("stat_prefix: rl", "stat_prefix: rl\n    share_key: k")
    ));
    assert!(share.contains("typed_config.share_key: share_key is not supported"), "{share}");
    let zero = load_error(&format!("{}{TCP_PROXY}", connection_limit(0, "")));
    assert!(
        zero.contains("typed_config.max_connections: max_connections is required and must be at least 1"),
        "{zero}"
    );
    let wrong_type = load_error(&format!(
        "{}{hcm}",
        RATE_LIMIT.replace(
            "network.local_ratelimit.v3.LocalRateLimit",
            "network.connection_limit.v3.ConnectionLimit"
        )
    ));
    assert!(
        wrong_type.contains("filters[0].typed_config.@type: expected \"@type\" type.googleapis.com/envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit, got \"type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit\""),
        "{wrong_type}"
    );
}

#[test]
fn limits_on_a_listener_with_several_filter_chains_are_each_chains_own() {
    let hcm = served_hcm_yaml("ingress", "");
    let yaml = config(&format!("{RATE_LIMIT}{hcm}"), SocketAddr::from(([127, 0, 0, 1], 9)), "");
    let second = format!(
        "        - filter_chain_match: {{ source_ports: [1] }}\n          filters:\n{}",
        indent(&format!("{RATE_LIMIT}{hcm}"), 12)
    );
    let yaml = yaml.replace("  clusters:\n", &format!("{second}  clusters:\n"));
    let loaded = skiff::config::load_str(&yaml, "skiff.yaml").unwrap_or_else(|e| panic!("{e}"));
    let limits: Vec<usize> = loaded.bootstrap.listeners.iter().map(|l| l.net_filters.len()).collect();
    assert_eq!(limits, [1, 1]);
}

#[test]
fn the_rate_is_the_processs_across_shards_and_refused_connections_never_reach_the_upstream() {
    let upstream = support::RawUpstream::start(|mut s, _| {
        let _ = s.write_all(b"served");
    });
    let skiff = Skiff::start(
        &config(&format!("{RATE_LIMIT}{TCP_PROXY}"), upstream.addr, ""),
        &["--concurrency", "2"],
    );
    let addr = skiff.listener("main");
    let served = (0..6)
        .filter(|_| {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            out == "served"
        })
        .count();
    assert_eq!(served, 3, "max_tokens 3 across both shards");
    assert_eq!(upstream.connections.load(std::sync::atomic::Ordering::Relaxed), 3);
    assert_eq!(stat(&skiff, "local_rate_limit.rl.rate_limited"), 3);
    assert_prometheus(
        &skiff,
        "envoy_local_rate_limit_rate_limited{envoy_local_network_ratelimit_prefix=\"rl\"} 3",
    );
}

#[test]
fn a_connection_over_the_limit_waits_out_the_delay_and_the_count_survives_a_reload() {
    let hcm = served_hcm_yaml("ingress", "");
    let filters = format!("{}{hcm}", connection_limit(2, "delay: 0.3s\n"));
    let unused = SocketAddr::from(([127, 0, 0, 1], 9));
    let skiff = Skiff::start(&config(&filters, unused, "first"), &["--concurrency", "2"]);
    let addr = skiff.listener("main");
    let held: Vec<_> = (0..2).map(|_| open(addr).expect("within the limit")).collect();
    assert_eq!(stat(&skiff, "connection_limit.cl.active_connections"), 2);
    let started = Instant::now();
    assert!(open(addr).is_none(), "a third connection is over the limit");
    assert!(started.elapsed() >= Duration::from_millis(280), "closed after {:?}", started.elapsed());
    assert_eq!(stat(&skiff, "connection_limit.cl.limited_connections"), 1);
    // A reload that leaves the filter as it was keeps its count of the open connections.
    skiff.rewrite_config(&config(&filters, unused, "second"));
    assert!(skiff.wait_for_log("(generation 2)", Duration::from_secs(6)), "{}", skiff.log());
    assert!(open(addr).is_none(), "the reload forgot the two open connections");
    drop(held);
    assert!(support::wait_until(Duration::from_secs(5), || stat(
        &skiff,
        "connection_limit.cl.active_connections"
    ) == 0));
    assert!(open(addr).is_some(), "a connection closed gives its place back");
    assert_prometheus(
        &skiff,
        "envoy_connection_limit_limited_connections{envoy_connection_limit_prefix=\"cl\"} 2",
    );
}

#[test]
fn runtime_enabled_false_turns_a_filter_off_and_keeps_its_stats() {
    let hcm = served_hcm_yaml("ingress", "");
    let filters = format!(
        "{}{hcm}",
        connection_limit(1, "runtime_enabled: { default_value: false, runtime_key: cl_on }\n")
    );
    let skiff = Skiff::start(&config(&filters, SocketAddr::from(([127, 0, 0, 1], 9)), ""), &[]);
    let addr = skiff.listener("main");
    let held: Vec<_> = (0..3).map(|_| open(addr)).collect();
    assert!(held.iter().all(Option::is_some));
    assert_eq!(stat(&skiff, "connection_limit.cl.limited_connections"), 0);
    assert_eq!(stat(&skiff, "connection_limit.cl.active_connections"), 0);
}

#[test]
fn a_tls_connection_is_refused_before_its_handshake() {
    let certs = support::tls::shared();
    let socket = support::tls::downstream_socket(certs, "a", "", "");
    let hcm = served_hcm_yaml("ingress", "");
    let yaml = config(
        &format!("{}{hcm}", RATE_LIMIT.replace("max_tokens: 3", "max_tokens: 1")),
        SocketAddr::from(([127, 0, 0, 1], 9)),
        "",
    )
    .replace(
        "        - filters:\n",
        &format!("        - {}          filters:\n", indent(&socket, 10).trim_start()),
    );
    let skiff = Skiff::start(&yaml, &[]);
    let addr = skiff.listener("main");
    let first = support::tls::curl(addr, "a.example", "/", certs, &[]);
    assert_eq!((first.status, first.body.as_str()), (Some(200), "served"), "{first:?}");
    let second = support::tls::curl(addr, "a.example", "/", certs, &[]);
    assert_eq!(second.status, None, "{second:?}");
    assert_eq!(stat(&skiff, "local_rate_limit.rl.rate_limited"), 1);
    // The refused connection never reached the TLS handshake.
    assert_eq!(stat(&skiff, &format!("listener.127.0.0.1_{}.ssl.handshake", addr.port())), 1);
}

#[test]
fn a_filter_whose_typed_config_comes_before_its_name_loads() {
    // YAML order means nothing to Envoy: the `"@type"` says which filter the config is for.
    let name_last = |filter: &str| {
        let (name, rest) = filter.split_once('\n').unwrap_or_default();
        format!("- {}  {}\n", rest.trim_start(), name.trim_start_matches("- "))
    };
    let limit = name_last(&connection_limit(1, ""));
    let proxy = name_last(TCP_PROXY);
    let yaml = config(&format!("{limit}{proxy}"), SocketAddr::from(([127, 0, 0, 1], 9)), "");
    let loaded = skiff::config::load_str(&yaml, "skiff.yaml").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let listener = &loaded.bootstrap.tcp_listeners[0];
    assert_eq!(listener.proxy.stat_prefix, "tcp_in");
    assert!(
        matches!(&listener.net_filters[..], [skiff::config::NetFilter::ConnectionLimit(c)] if c.max_connections == 1)
    );
}
