//! Routing as a user sees it: which virtual host and route a request lands on, what the upstream
//! receives after rewrites and header edits, local replies, and how load spreads over clusters and
//! endpoints.

mod support;

use std::collections::HashMap;
use support::*;

const ROUTES: &str = r#"name: rc
request_headers_to_add:
  - header: { key: x-rc-added, value: rc }
request_headers_to_remove: [x-drop-rc]
response_headers_to_add:
  - header: { key: x-rc-resp, value: rc }
virtual_hosts:
  - name: exact
    domains: ["example.com"]
    routes:
      - match: { prefix: "/" }
        route: { cluster: a }
  - name: suffix
    domains: ["*.example.com"]
    routes:
      - match: { prefix: "/" }
        route: { cluster: b }
  - name: prefix
    domains: ["api.*"]
    routes:
      - match: { prefix: "/" }
        route: { cluster: c }
  - name: ported
    domains: ["ported.test:9000"]
    routes:
      - match: { prefix: "/" }
        direct_response: { status: 200, body: { inline_string: ported } }
  - name: main
    domains: ["main.test"]
    request_headers_to_add:
      - header: { key: x-vh-added, value: vh }
    request_headers_to_remove: [x-drop-vh]
    response_headers_to_add:
      - header: { key: x-vh-resp, value: vh }
    response_headers_to_remove: [x-upstream]
    routes:
      - match: { path: "/exact" }
        direct_response: { status: 200, body: { inline_string: exact } }
      - match: { path: "/legacy" }
        route: { cluster: a, prefix_rewrite: "/modern" }
      - match: { safe_regex: { regex: "/re/[0-9]+" } }
        direct_response: { status: 201, body: { inline_string: regex } }
      - match:
          prefix: "/h"
          headers: [{ name: x-flag, exact_match: "yes" }]
        direct_response: { status: 200, body: { inline_string: header-exact } }
      - match:
          prefix: "/h"
          headers: [{ name: x-present, present_match: true }]
        direct_response: { status: 200, body: { inline_string: header-present } }
      - match:
          prefix: "/h"
          headers: [{ name: x-block, exact_match: "1", invert_match: true }]
        direct_response: { status: 200, body: { inline_string: header-invert } }
      - match:
          prefix: "/q"
          query_parameters: [{ name: debug, string_match: { exact: "1" } }]
        direct_response: { status: 200, body: { inline_string: query } }
      - match: { prefix: "/first" }
        direct_response: { status: 200, body: { inline_string: first } }
      - match: { prefix: "/first/second" }
        direct_response: { status: 200, body: { inline_string: second } }
      - match: { prefix: "/api/" }
        route: { cluster: a, prefix_rewrite: "/v2/", host_rewrite_literal: backend.internal }
        request_headers_to_add:
          - header: { key: x-route-added, value: route }
        request_headers_to_remove: [x-drop-route]
        response_headers_to_add:
          - header: { key: x-route-resp, value: route }
      - match: { prefix: "/old" }
        redirect: { path_redirect: "/new" }
      - match: { prefix: "/split" }
        route:
          weighted_clusters:
            clusters:
              - { name: a, weight: 75 }
              - { name: b, weight: 25 }
  - name: weighted
    domains: ["weighted.test"]
    routes:
      - match: { prefix: "/" }
        request_headers_to_add:
          - header: { key: x-level, value: route }
            append_action: OVERWRITE_IF_EXISTS_OR_ADD
          - header: { key: x-both, value: route }
        response_headers_to_add:
          - header: { key: x-both-resp, value: route }
        route:
          weighted_clusters:
            total_weight: 7
            clusters:
              - name: a
                weight: 1
                request_headers_to_add:
                  - header: { key: x-entry, value: a }
                  - header: { key: x-level, value: entry }
                  - header: { key: x-both, value: entry }
                request_headers_to_remove: [x-drop-entry]
                response_headers_to_add:
                  - header: { key: x-entry-resp, value: a }
                  - header: { key: x-both-resp, value: entry }
                response_headers_to_remove: [x-upstream]
              - name: b
                weight: 1
                request_headers_to_add:
                  - header: { key: x-entry, value: b }
  - name: fallback
    domains: ["*"]
    routes:
      - match: { prefix: "/only" }
        direct_response: { status: 200, body: { inline_string: fallback } }
"#;

struct Fixture {
    skiff: Skiff,
    _ups: Vec<TestUpstream>,
}

fn fixture() -> Fixture {
    let ups =
        vec![TestUpstream::echo_named("a"), TestUpstream::echo_named("b"), TestUpstream::echo_named("c")];
    let clusters: Vec<String> = ["a", "b", "c"]
        .iter()
        .zip(&ups)
        .map(|(n, u)| static_cluster_yaml(n, "ROUND_ROBIN", &[(u.addr, 1)]))
        .collect();
    let yaml = bootstrap_yaml(&[listener_yaml("main", "127.0.0.1", ROUTES)], &clusters);
    Fixture { skiff: Skiff::start(&yaml, &[]), _ups: ups }
}

#[test]
fn virtual_hosts_by_domain() {
    let f = fixture();
    let addr = f.skiff.listener("main");
    let who = |host: &str| {
        let r = get_host(addr, host, "/only", &[]);
        (r.status, r.first_line())
    };
    // Exact, case-insensitive. Envoy 1.40 matches the Host as sent, port included: a port the
    // domain does not name takes the request out of an exact or `*.suffix` match (checked with
    // Envoy; `strip_matching_host_port` / `strip_any_host_port` change that).
    assert_eq!(who("example.com").1, "a");
    assert_eq!(who("EXAMPLE.Com").1, "a");
    assert_eq!(who("example.com:8080").1, "fallback");
    // `*.suffix` (not the bare domain), `prefix*` (which a port does not disturb).
    assert_eq!(who("www.example.com").1, "b");
    assert_eq!(who("Deep.WWW.example.com").1, "b");
    assert_eq!(who("Deep.WWW.example.com:81").1, "fallback");
    assert_eq!(who("api.other.test").1, "c");
    assert_eq!(who("api.other.test:8443").1, "c");
    // A domain written with a port matches that port only.
    assert_eq!(who("ported.test:9000"), (200, "ported".to_string()));
    assert_eq!(who("ported.test"), (200, "fallback".to_string()));
    // Everything else: the `*` host.
    assert_eq!(who("unknown.test"), (200, "fallback".to_string()));
    // `*` host without a matching route → 404.
    assert_eq!(get_host(addr, "unknown.test", "/nothing", &[]).status, 404);
}

#[test]
fn exact_domain_beats_wildcards_but_not_with_a_port() {
    // An exact domain outranks a `prefix*` one; a Host with a port no longer matches it exactly,
    // so the `prefix*` host takes it, as in Envoy 1.40.
    let up = TestUpstream::echo_named("exact");
    let other = TestUpstream::echo_named("prefix");
    let routes = r#"virtual_hosts:
  - name: prefix
    domains: ["api.*"]
    routes: [{ match: { prefix: "/" }, route: { cluster: p } }]
  - name: exact
    domains: ["api.example.com"]
    routes: [{ match: { prefix: "/" }, route: { cluster: e } }]
"#;
    let yaml = bootstrap_yaml(
        &[listener_yaml("main", "127.0.0.1", routes)],
        &[
            static_cluster_yaml("e", "ROUND_ROBIN", &[(up.addr, 1)]),
            static_cluster_yaml("p", "ROUND_ROBIN", &[(other.addr, 1)]),
        ],
    );
    let skiff = Skiff::start(&yaml, &[]);
    let addr = skiff.listener("main");
    assert_eq!(get_host(addr, "api.example.com", "/", &[]).first_line(), "exact");
    assert_eq!(get_host(addr, "api.example.com:8080", "/", &[]).first_line(), "prefix");
    assert_eq!(get_host(addr, "api.other.com:8080", "/", &[]).first_line(), "prefix");
}

#[test]
fn no_virtual_host_is_404() {
    let up = TestUpstream::echo_named("a");
    let routes = r#"virtual_hosts:
  - name: only
    domains: ["only.test"]
    routes: [{ match: { prefix: "/" }, route: { cluster: a } }]
"#;
    let yaml = bootstrap_yaml(
        &[listener_yaml("main", "127.0.0.1", routes)],
        &[static_cluster_yaml("a", "ROUND_ROBIN", &[(up.addr, 1)])],
    );
    let skiff = Skiff::start(&yaml, &[]);
    let addr = skiff.listener("main");
    assert_eq!(get_host(addr, "only.test", "/x", &[]).status, 200);
    assert_eq!(get_host(addr, "elsewhere.test", "/x", &[]).status, 404);
    assert_eq!(up.count(), 1);
}

#[test]
fn route_matchers_and_first_match_wins() {
    let f = fixture();
    let addr = f.skiff.listener("main");
    let body = |path: &str, headers: &[(&str, &str)]| {
        let r = get_host(addr, "main.test", path, headers);
        (r.status, r.text())
    };
    assert_eq!(body("/exact", &[]), (200, "exact".into()));
    // `path` is exact: a longer path or a query-less trailing slash is not it.
    assert_eq!(body("/exact/more", &[]).0, 404);
    assert_eq!(body("/exact?x=1", &[]), (200, "exact".into()));
    // safe_regex matches the whole path, not a part of it.
    assert_eq!(body("/re/123", &[]), (201, "regex".into()));
    assert_eq!(body("/re/12a", &[]).0, 404);
    // headers: exact, present, invert — in route order.
    assert_eq!(body("/h", &[("x-flag", "yes"), ("x-block", "1")]).1, "header-exact");
    assert_eq!(body("/h", &[("x-flag", "no"), ("x-present", ""), ("x-block", "1")]).1, "header-present");
    assert_eq!(body("/h", &[("x-flag", "no")]).1, "header-invert");
    assert_eq!(body("/h", &[("x-block", "1")]).0, 404);
    // query_parameters.
    assert_eq!(body("/q?a=2&debug=1", &[]), (200, "query".into()));
    assert_eq!(body("/q?debug=0", &[]).0, 404);
    assert_eq!(body("/q", &[]).0, 404);
    // The first matching route wins, even when a later one is more specific.
    assert_eq!(body("/first/second", &[]), (200, "first".into()));
}

#[test]
fn rewrites_and_header_edits_reach_the_upstream() {
    let f = fixture();
    let addr = f.skiff.listener("main");
    let r = get_host(
        addr,
        "main.test",
        "/api/users?id=7",
        &[("x-drop-rc", "1"), ("x-drop-vh", "1"), ("x-drop-route", "1"), ("x-keep", "1")],
    );
    assert_eq!(r.status, 200);
    let text = r.text();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("a"));
    assert_eq!(lines.next(), Some("GET /v2/users?id=7"), "{text}");
    let seen: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
        .collect();
    assert_eq!(seen.get("host").map(String::as_str), Some("backend.internal"), "{text}");
    assert_eq!(seen.get("x-envoy-original-path").map(String::as_str), Some("/api/users?id=7"), "{text}");
    assert_eq!(seen.get("x-rc-added").map(String::as_str), Some("rc"), "{text}");
    assert_eq!(seen.get("x-vh-added").map(String::as_str), Some("vh"), "{text}");
    assert_eq!(seen.get("x-route-added").map(String::as_str), Some("route"), "{text}");
    assert_eq!(seen.get("x-keep").map(String::as_str), Some("1"), "{text}");
    for gone in ["x-drop-rc", "x-drop-vh", "x-drop-route"] {
        assert!(!seen.contains_key(gone), "{gone} reached the upstream:\n{text}");
    }
    // Response edits at all three levels; the vhost removes the upstream's x-upstream header.
    assert_eq!(r.header("x-route-resp"), Some("route"));
    assert_eq!(r.header("x-vh-resp"), Some("vh"));
    assert_eq!(r.header("x-rc-resp"), Some("rc"));
    assert_eq!(r.header("x-upstream"), None);
    // Another vhost: only the route-config level applies, and its upstream header stays.
    let r = get_host(addr, "example.com", "/plain", &[]);
    assert_eq!(r.header("x-rc-resp"), Some("rc"));
    assert_eq!(r.header("x-vh-resp"), None);
    assert_eq!(r.header("x-upstream"), Some("a"));
    assert!(!r.text().contains("x-envoy-original-path"), "no rewrite, no original path:\n{}", r.text());
}

#[test]
fn prefix_rewrite_on_an_exact_path_route_swaps_the_whole_path() {
    let f = fixture();
    let addr = f.skiff.listener("main");
    let r = get_host(addr, "main.test", "/legacy?q=1", &[]);
    assert_eq!(r.text().lines().nth(1), Some("GET /modern?q=1"), "{}", r.text());
    assert!(r.text().contains("x-envoy-original-path: /legacy?q=1"), "{}", r.text());
}

#[test]
fn direct_response_and_redirect() {
    let f = fixture();
    let addr = f.skiff.listener("main");
    let r = get_host(addr, "main.test", "/re/9", &[]);
    assert_eq!((r.status, r.text().as_str()), (201, "regex"));
    let r = get_host(addr, "main.test", "/old?x=1", &[]);
    assert_eq!(r.status, 301);
    let location = r.header("location").unwrap_or_default();
    assert!(location.ends_with("main.test/new?x=1"), "location {location:?}");
    assert!(location.starts_with("http://"), "location {location:?}");
}

#[test]
fn weighted_clusters_split_roughly_by_weight() {
    let f = fixture();
    let addr = f.skiff.listener("main");
    let mut client = Client::connect(addr);
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..400 {
        let r = client.request("main.test", "/split", &[]).expect("response");
        assert_eq!(r.status, 200);
        *counts.entry(r.first_line()).or_default() += 1;
    }
    let a = counts.get("a").copied().unwrap_or(0);
    let b = counts.get("b").copied().unwrap_or(0);
    assert_eq!(a + b, 400, "{counts:?}");
    // 75/25 of 400: expect 300/100; allow a wide band for randomness.
    assert!((240..=360).contains(&a), "{counts:?}");
}

#[test]
fn a_weighted_entry_edits_headers_when_picked_before_the_route_does() {
    let f = fixture();
    let addr = f.skiff.listener("main");
    let mut client = Client::connect(addr);
    let mut seen_clusters = Vec::new();
    // `total_weight: 7` differs from the weights' sum (2): Envoy 1.40 ignores it, so does skiff.
    for _ in 0..40 {
        let r = client.request("weighted.test", "/", &[("x-drop-entry", "1")]).expect("response");
        assert_eq!(r.status, 200);
        let text = r.text();
        let cluster = r.first_line();
        let lines: Vec<&str> = text.lines().collect();
        let has = |line: &str| lines.contains(&line);
        if cluster == "a" {
            assert!(has("x-entry: a") && !has("x-drop-entry: 1"), "{text}");
            // The route's overwrite comes after the entry's add and replaces it; appends keep
            // Envoy's order, the entry's first.
            assert!(has("x-level: route") && !has("x-level: entry"), "{text}");
            let both: Vec<&&str> = lines.iter().filter(|l| l.starts_with("x-both: ")).collect();
            assert_eq!(both, [&"x-both: entry", &"x-both: route"], "{text}");
            assert_eq!(r.header("x-entry-resp"), Some("a"));
            assert_eq!(r.header("x-upstream"), None, "the entry removes it");
            let both: Vec<&str> =
                r.headers.iter().filter(|(n, _)| n == "x-both-resp").map(|(_, v)| v.as_str()).collect();
            assert_eq!(both, ["entry", "route"]);
        } else {
            assert_eq!(cluster, "b");
            assert!(has("x-entry: b") && has("x-drop-entry: 1"), "{text}");
            assert_eq!(r.header("x-entry-resp"), None);
            assert_eq!(r.header("x-upstream"), Some("b"));
        }
        seen_clusters.push(cluster);
    }
    assert!(seen_clusters.iter().any(|c| c == "a") && seen_clusters.iter().any(|c| c == "b"));
}

/// One cluster `lb` over three named upstreams (with weights), one listener routing to it.
fn balanced(lb: &str, weights: [u32; 3]) -> (Skiff, Vec<TestUpstream>) {
    let ups =
        vec![TestUpstream::echo_named("u0"), TestUpstream::echo_named("u1"), TestUpstream::echo_named("u2")];
    let eps: Vec<_> = ups.iter().zip(weights).map(|(u, w)| (u.addr, w)).collect();
    let routes = r#"virtual_hosts:
  - name: all
    domains: ["*"]
    routes: [{ match: { prefix: "/" }, route: { cluster: pool } }]
"#;
    let yaml = bootstrap_yaml(
        &[listener_yaml("main", "127.0.0.1", routes)],
        &[static_cluster_yaml("pool", lb, &eps)],
    );
    (Skiff::start(&yaml, &["--concurrency", "1"]), ups)
}

fn spread(skiff: &Skiff, n: usize) -> Vec<String> {
    let mut client = Client::connect(skiff.listener("main"));
    (0..n).map(|_| client.request("x", "/", &[]).expect("response").first_line()).collect()
}

#[test]
fn round_robin_is_even() {
    let (skiff, _ups) = balanced("ROUND_ROBIN", [1, 1, 1]);
    let seq = spread(&skiff, 30);
    for name in ["u0", "u1", "u2"] {
        assert_eq!(seq.iter().filter(|s| *s == name).count(), 10, "{seq:?}");
    }
    // Strict rotation: no upstream twice in any window of three.
    for w in seq.windows(3) {
        assert!(w[0] != w[1] && w[1] != w[2] && w[0] != w[2], "{seq:?}");
    }
}

#[test]
fn least_request_and_random_reach_every_endpoint() {
    for lb in ["LEAST_REQUEST", "RANDOM"] {
        let (skiff, _ups) = balanced(lb, [1, 1, 1]);
        let seq = spread(&skiff, 90);
        for name in ["u0", "u1", "u2"] {
            let n = seq.iter().filter(|s| *s == name).count();
            assert!(n >= 5, "{lb}: {name} got {n} of 90: {seq:?}");
        }
    }
}

#[test]
fn endpoint_weights_are_respected() {
    let (skiff, _ups) = balanced("ROUND_ROBIN", [1, 2, 5]);
    let seq = spread(&skiff, 400);
    let count = |name: &str| seq.iter().filter(|s| *s == name).count();
    // Expected 50 / 100 / 250.
    assert!((30..=75).contains(&count("u0")), "u0 {}", count("u0"));
    assert!((70..=130).contains(&count("u1")), "u1 {}", count("u1"));
    assert!((200..=300).contains(&count("u2")), "u2 {}", count("u2"));
}

#[test]
fn more_matchers_and_redirect_forms() {
    let routes = r#"virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
      - match: { prefix: "/CaSe", case_sensitive: false }
        direct_response: { status: 200, body: { inline_string: nocase } }
      - match: { prefix: "/hp", headers: [{ name: x-v, prefix_match: "ab" }] }
        direct_response: { status: 200, body: { inline_string: hprefix } }
      - match: { prefix: "/hr", headers: [{ name: x-v, safe_regex_match: { regex: "[0-9]{3}" } }] }
        direct_response: { status: 200, body: { inline_string: hregex } }
      - match: { prefix: "/qp", query_parameters: [{ name: flag, present_match: true }] }
        direct_response: { status: 200, body: { inline_string: qpresent } }
      - match: { prefix: "/to-https" }
        redirect: { https_redirect: true }
      - match: { prefix: "/moved" }
        redirect: { host_redirect: "new.test", response_code: FOUND }
      - match: { prefix: "/strip" }
        redirect: { path_redirect: "/stripped", strip_query: true, response_code: TEMPORARY_REDIRECT }
"#;
    let up = TestUpstream::echo_named("a");
    let yaml = bootstrap_yaml(
        &[listener_yaml("main", "127.0.0.1", routes)],
        &[static_cluster_yaml("a", "ROUND_ROBIN", &[(up.addr, 1)])],
    );
    let skiff = Skiff::start(&yaml, &[]);
    let addr = skiff.listener("main");
    let text = |path: &str, headers: &[(&str, &str)]| get_host(addr, "h.test", path, headers).text();
    assert_eq!(text("/case/x", &[]), "nocase");
    assert_eq!(text("/hp", &[("x-v", "abc")]), "hprefix");
    assert_eq!(text("/hr", &[("x-v", "123")]), "hregex");
    assert_eq!(get_host(addr, "h.test", "/hr", &[("x-v", "1234")]).status, 404);
    assert_eq!(text("/qp?flag", &[]), "qpresent");
    assert_eq!(text("/qp?x=1&flag=", &[]), "qpresent");
    assert_eq!(get_host(addr, "h.test", "/qp?flags=1", &[]).status, 404);
    let redirect = |path: &str| {
        let r = get_host(addr, "h.test:8080", path, &[]);
        (r.status, r.header("location").unwrap_or_default().to_string())
    };
    assert_eq!(redirect("/to-https?a=1"), (301, "https://h.test:8080/to-https?a=1".to_string()));
    assert_eq!(redirect("/moved/x"), (302, "http://new.test/moved/x".to_string()));
    assert_eq!(redirect("/strip?a=1"), (307, "http://h.test:8080/stripped".to_string()));
}

#[test]
fn redirect_prefix_rewrite_replaces_the_matched_prefix() {
    let routes = r#"virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
      - match: { prefix: "/pre/" }
        redirect: { prefix_rewrite: "/post/", response_code: PERMANENT_REDIRECT }
"#;
    let up = TestUpstream::echo_named("a");
    let yaml = bootstrap_yaml(
        &[listener_yaml("main", "127.0.0.1", routes)],
        &[static_cluster_yaml("a", "ROUND_ROBIN", &[(up.addr, 1)])],
    );
    let skiff = Skiff::start(&yaml, &[]);
    let r = get_host(skiff.listener("main"), "h.test", "/pre/x?y=2", &[]);
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("http://h.test/post/x?y=2"));
}
