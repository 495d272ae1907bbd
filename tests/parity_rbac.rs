//! Envoy parity for `envoy.filters.http.rbac`: the same v3 config and the same requests go through
//! the real Envoy and through skiff, each in front of its own upstream, and what the client saw
//! (status, body), the access-log lines (with `%RESPONSE_CODE_DETAILS%`: the policy that denied),
//! the `rbac` stats and what reached the upstream must be equal. The mTLS scenario uses
//! certificates made at test time and curl as the client. Envoy is found via `$ENVOY_BIN` or PATH;
//! without it these tests fail under CI and skip elsewhere.

mod support;

#[path = "support/envoy.rs"]
mod envoy;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use support::filters::{self, req, req_method, req_with, Req, Run};
use support::tls::{self, curl, Certs};
use support::{indent, scratch_dir, Skiff, TestUpstream};

const LOG_FORMAT: &str =
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %REQ(:METHOD)% %REQ(:PATH)%";

fn run(proxy: &str, bin: &Path, filters_yaml: &str, routes: &str, requests: &[Req]) -> Run {
    let dir = scratch_dir(&format!("parity-rbac-{proxy}"));
    let up = TestUpstream::echo();
    let log = dir.join("access.log");
    let config =
        |port, admin| filters::config_logging(port, admin, &log, up.addr, filters_yaml, routes, LOG_FORMAT);
    let run = if proxy == "envoy" {
        let e = envoy::Envoy::start(bin, &dir, config);
        filters::drive(e.listener, e.admin, &log, &up, requests)
    } else {
        let sk = Skiff::start(&config(0, 0), &["--concurrency", "2"]);
        filters::drive(sk.listener("main"), sk.admin(), &log, &up, requests)
    };
    let _ = std::fs::remove_dir_all(&dir);
    run
}

/// What is compared, as lines.
fn render(run: &Run) -> Vec<String> {
    let mut out = Vec::new();
    for (i, (resp, _)) in run.responses.iter().enumerate() {
        match resp {
            Some(r) if r.status == 403 => out.push(format!("#{i} 403 {:?}", r.text())),
            Some(r) => out.push(format!("#{i} {}", r.status)),
            None => out.push(format!("#{i} no response")),
        }
    }
    // Sorted: each of skiff's shards hands its lines to the writer on its own.
    let mut log = run.log.clone();
    log.sort();
    out.extend(log.iter().map(|l| format!("log {l}")));
    for (name, v) in &run.stats {
        if *v != 0 && name.contains(".rbac.") {
            out.push(format!("stat {name} = {v}"));
        }
    }
    let mut seen: Vec<String> = run.upstream.iter().map(|s| format!("{} {}", s.method, s.path)).collect();
    seen.sort();
    out.extend(seen.into_iter().map(|s| format!("upstream {s}")));
    out
}

/// Runs both and compares; None when Envoy is absent outside CI.
fn compare(name: &str, filters_yaml: &str, routes: &str, requests: &[Req]) -> Option<Run> {
    let bin = envoy::binary_or_skip(name)?;
    let (e, k) = std::thread::scope(|s| {
        let e = s.spawn(|| run("envoy", &bin, filters_yaml, routes, requests));
        let k = s.spawn(|| run("skiff", &bin, filters_yaml, routes, requests));
        (e.join().expect("envoy side"), k.join().expect("skiff side"))
    });
    let (er, kr) = (render(&e), render(&k));
    assert_eq!(er, kr, "{name}\nenvoy:\n{}\nskiff:\n{}", er.join("\n"), kr.join("\n"));
    Some(k)
}

const ALLOW: &str = r#"- name: envoy.filters.http.rbac
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
    rules_stat_prefix: enforced_
    shadow_rules_stat_prefix: audit
    rules:
      action: ALLOW
      policies:
        readers:
          permissions:
            - and_rules:
                rules:
                  - header: { name: ":method", string_match: { exact: GET } }
                  - not_rule: { url_path: { path: { prefix: /admin } } }
          principals: [{ any: true }]
        admins:
          permissions:
            - url_path: { path: { safe_regex: { regex: "/admin/[a-z]+" } } }
          principals:
            - or_ids:
                ids:
                  - header: { name: x-role, string_match: { exact: admin } }
                  - header: { name: x-role, string_match: { exact: root } }
    shadow_rules:
      action: DENY
      policies:
        no-secret:
          permissions: [{ url_path: { path: { exact: /secret, ignore_case: true } } }]
          principals: [{ any: true }]
"#;

/// `/open` turns the filter off (`rbac: {}`); `/strict` replaces its rules with a DENY of any
/// request carrying `x-block`, and counts into the same stats.
const ALLOW_ROUTES: &str = r#"virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
      - match: { prefix: "/open" }
        route: { cluster: backend }
        typed_per_filter_config:
          envoy.filters.http.rbac:
            "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute
            rbac: {}
      - match: { prefix: "/strict" }
        route: { cluster: backend }
        typed_per_filter_config:
          envoy.filters.http.rbac:
            "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute
            rbac:
              rules:
                action: DENY
                policies:
                  blocked:
                    permissions: [{ any: true }]
                    principals: [{ header: { name: x-block, present_match: true } }]
      - match: { prefix: "/" }
        route: { cluster: backend }
"#;

#[test]
fn allow_rules_shadow_rules_and_per_route_overrides_like_envoy() {
    let requests = [
        req("/a"),
        req_method("POST", "/a", &[]),
        req("/admin/x"),
        req_with("/admin/x", &[("x-role", "admin")]),
        req_with("/admin/y", &[("x-role", "guest"), ("x-role", "admin")]),
        req_method("DELETE", "/admin/users", &[("x-role", "ROOT")]),
        req_method("DELETE", "/admin/users/1", &[("x-role", "root")]),
        req("/SECRET?x=1"),
        req_method("PUT", "/open/door", &[]),
        req_method("POST", "/strict", &[]),
        req_with("/strict/no", &[("x-block", "1")]),
    ];
    let Some(k) = compare("allow_rules", ALLOW, ALLOW_ROUTES, &requests) else { return };
    assert_eq!(k.status(1), 403);
    // A repeated header matches when one of its lines does.
    assert_eq!(k.status(4), 200);
    assert!(
        k.log.contains(&"403 - rbac_access_denied_matched_policy[none] POST /a".to_string()),
        "{:?}",
        k.log
    );
    assert!(
        k.log.contains(&"403 - rbac_access_denied_matched_policy[blocked] GET /strict/no".to_string()),
        "{:?}",
        k.log
    );
    assert_eq!(k.stat("http.ingress.rbac.enforced_.denied"), 5);
    assert_eq!(k.stat("http.ingress.rbac.audit.shadow_denied"), 1);
}

const HEADER_INPUT: &str = "{ name: h, typed_config: { \"@type\": type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput, header_name: \"";

/// The matcher API: the first matching entry's action, no `on_no_match` (DENY, policy `none`),
/// a LOG action, predicates combined, a repeated header read joined with `,`, the client address
/// from `x-forwarded-for`, the shadow matcher on the connection's addresses; a route whose config has both `rules` and `matcher` (the matcher wins).
fn matcher_filter() -> String {
    let action = |name: &str, action: &str| {
        format!("{{ action: {{ name: a, typed_config: {{ \"@type\": type.googleapis.com/envoy.config.rbac.v3.Action, name: {name}, action: {action} }} }} }}")
    };
    let header = |name: &str, m: &str| {
        format!("{{ single_predicate: {{ input: {HEADER_INPUT}{name}\" }} }}, value_match: {m} }} }}")
    };
    format!(
        r#"- name: envoy.filters.http.rbac
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
    shadow_rules_stat_prefix: audit_
    matcher:
      matcher_list:
        matchers:
          - predicate:
              single_predicate:
                input: {{ name: ip, typed_config: {{ "@type": type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.SourceIPInput }} }}
                value_match: {{ exact: 10.9.9.9 }}
            on_match: {xff}
          - predicate:
              and_matcher:
                predicate:
                  - {role}
                  - not_matcher: {secret}
            on_match: {admins}
          - predicate:
              or_matcher:
                predicate:
                  - {tag}
                  - {head}
            on_match: {logged}
          - predicate: {block}
            on_match: {blocked}
          - predicate: {method}
            on_match: {reads}
    shadow_matcher:
      matcher_list:
        matchers:
          - predicate:
              and_matcher:
                predicate:
                  - single_predicate:
                      input: {{ name: ip, typed_config: {{ "@type": type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.DirectSourceIPInput }} }}
                      value_match: {{ exact: 127.0.0.1 }}
                  - single_predicate:
                      input: {{ name: ip, typed_config: {{ "@type": type.googleapis.com/envoy.extensions.matching.common_inputs.network.v3.DestinationIPInput }} }}
                      value_match: {{ prefix: "127." }}
            on_match: {local}
      on_no_match: {rest}
"#,
        xff = action("xff", "DENY"),
        role = header("x-role", "{ exact: admin }"),
        secret = header(":path", "{ prefix: /admin/secret }"),
        admins = action("admins", "ALLOW"),
        tag = header("x-tag", "{ exact: \"a,audit\" }"),
        head = header(":method", "{ exact: PUT }"),
        logged = action("logged", "LOG"),
        block = header("x-block", "{ safe_regex: { google_re2: {}, regex: \".*\" } }"),
        blocked = action("blocked", "DENY"),
        method = header(":method", "{ exact: GET }"),
        reads = action("reads", "ALLOW"),
        local = action("local", "DENY"),
        rest = action("rest", "ALLOW"),
    )
}

const MATCHER_ROUTES: &str = r#"virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
      - match: { prefix: "/mixed" }
        route: { cluster: backend }
        typed_per_filter_config:
          envoy.filters.http.rbac:
            "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute
            rbac:
              rules: { action: DENY, policies: {} }
              matcher:
                matcher_list:
                  matchers:
                    - predicate:
                        single_predicate:
                          input: { name: h, typed_config: { "@type": type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput, header_name: x-pass } }
                          value_match: { exact: "yes" }
                      on_match: { action: { name: a, typed_config: { "@type": type.googleapis.com/envoy.config.rbac.v3.Action, name: pass, action: ALLOW } } }
      - match: { prefix: "/" }
        route: { cluster: backend }
"#;

#[test]
fn matcher_and_shadow_matcher_like_envoy() {
    let requests = [
        req("/a"),
        req_method("POST", "/a", &[]),
        req_method("POST", "/admin/x", &[("x-role", "admin")]),
        req_method("POST", "/admin/secret", &[("x-role", "admin")]),
        req_method("POST", "/t", &[("x-tag", "a"), ("x-tag", "audit")]),
        req_method("POST", "/t", &[("x-tag", "audit")]),
        req_method("PUT", "/h", &[]),
        req_with("/b", &[("x-block", "")]),
        req_method("POST", "/mixed", &[("x-pass", "yes")]),
        req_method("POST", "/mixed", &[]),
        req_with("/c", &[("x-forwarded-for", "10.9.9.9")]),
    ];
    let Some(k) = compare("matcher", &matcher_filter(), MATCHER_ROUTES, &requests) else { return };
    let statuses: Vec<u16> = (0..requests.len()).map(|i| k.status(i)).collect();
    assert_eq!(statuses, [200, 403, 200, 403, 200, 403, 200, 403, 200, 403, 403]);
    for line in [
        "403 - rbac_access_denied_matched_policy[none] POST /a",
        "403 - rbac_access_denied_matched_policy[blocked] GET /b",
        "403 - rbac_access_denied_matched_policy[none] POST /mixed",
        "403 - rbac_access_denied_matched_policy[xff] GET /c",
    ] {
        assert!(k.log.contains(&line.to_string()), "{line} in {:?}", k.log);
    }
    assert_eq!(k.stat("http.ingress.rbac.denied"), 6);
    assert_eq!(k.stat("http.ingress.rbac.audit_.shadow_denied"), 9);
}

#[test]
fn deny_by_addresses_and_log_action_like_envoy() {
    let filters = r#"- name: envoy.filters.http.rbac
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
    rules:
      action: DENY
      policies:
        from-forwarded-net:
          permissions: [{ any: true }]
          principals: [{ remote_ip: { address_prefix: 10.9.0.0, prefix_len: 16 } }]
        local-with-flag:
          permissions:
            - and_rules:
                rules:
                  - destination_ip: { address_prefix: 127.0.0.1, prefix_len: 32 }
                  - not_rule: { destination_port: 1 }
                  - header: { name: x-flag, string_match: { prefix: "on" } }
          principals:
            - and_ids:
                ids:
                  - direct_remote_ip: { address_prefix: 127.0.0.0, prefix_len: 8 }
                  - not_id: { source_ip: { address_prefix: "::1", prefix_len: 128 } }
- name: envoy.filters.http.rbac
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
    rules_stat_prefix: logged
    rules:
      action: LOG
      policies:
        everything:
          permissions: [{ any: true }]
          principals: [{ url_path: { path: { suffix: ".json" } } }]
"#;
    let requests = [
        req("/plain"),
        req_with("/fwd", &[("x-forwarded-for", "10.9.3.4")]),
        req_with("/fwd-other", &[("x-forwarded-for", "10.9.3.4, 192.168.0.1")]),
        req_with("/flag", &[("x-flag", "only")]),
        req_with("/flag-off", &[("x-flag", "off")]),
        req("/data.json"),
    ];
    let Some(k) = compare("deny_and_log", filters, filters::ALL_TO_BACKEND, &requests) else { return };
    assert!(
        k.log.iter().any(|l| l.contains("rbac_access_denied_matched_policy[from-forwarded-net]")),
        "{:?}",
        k.log
    );
    assert!(
        k.log.iter().any(|l| l.contains("rbac_access_denied_matched_policy[local-with-flag]")),
        "{:?}",
        k.log
    );
    assert_eq!(k.stat("http.ingress.rbac.logged.allowed"), 4);
}

// ---- mTLS: principal_name against the client certificate, requested_server_name. ----

const TLS_LOG_FORMAT: &str = "%RESPONSE_CODE% %RESPONSE_CODE_DETAILS% %REQ(:PATH)%";

fn tls_config(port: u16, admin: u16, backend: SocketAddr, log: &Path, certs: &Certs) -> String {
    let socket = tls::downstream_socket(certs, "a", "", &tls::trusting(certs, &[]));
    let rbac = r#"- name: envoy.filters.http.rbac
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
    rules:
      action: ALLOW
      policies:
        by-uri-san:
          permissions: [{ url_path: { path: { prefix: /uri } } }]
          principals: [{ authenticated: { principal_name: { exact: "spiffe://test/client" } } }]
        by-dns-san:
          permissions: [{ url_path: { path: { prefix: /dns } } }]
          principals: [{ authenticated: { principal_name: { suffix: ".example" } } }]
        by-subject:
          permissions: [{ url_path: { path: { prefix: /subject } } }]
          principals: [{ authenticated: { principal_name: { exact: "CN=client" } } }]
        any-certificate:
          permissions: [{ url_path: { path: { prefix: /any-cert } } }]
          principals: [{ authenticated: {} }]
        by-sni:
          permissions: [{ requested_server_name: { exact: a.example } }]
          principals: [{ url_path: { path: { prefix: /sni } } }]
"#;
    let log = format!(
        "    access_log:\n    - name: envoy.access_loggers.file\n      typed_config:\n        \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n        path: {}\n        log_format: {{ text_format_source: {{ inline_string: \"{TLS_LOG_FORMAT}\\n\" }} }}\n",
        log.display()
    );
    tls_bootstrap(port, admin, backend, &socket, &log, &indent(rbac, 4))
}

/// A bootstrap with one TLS listener `main` (with `tls_inspector`) whose connection manager
/// `front` has `hcm_extra` (lines at column 4) and `filters` before the router, all to `backend`.
fn tls_bootstrap(
    port: u16,
    admin: u16,
    backend: SocketAddr,
    socket: &str,
    hcm_extra: &str,
    filters: &str,
) -> String {
    let hcm = format!(
        "filters:\n- name: envoy.filters.network.http_connection_manager\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n    stat_prefix: front\n{hcm_extra}    http_filters:\n{filters}    - name: envoy.filters.http.router\n      typed_config: {{ \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}\n    route_config:\n      virtual_hosts:\n      - name: all\n        domains: [\"*\"]\n        routes:\n        - match: {{ prefix: / }}\n          route: {{ cluster: backend }}\n",
    );
    let listener = format!(
        "- name: main\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}\n  listener_filters:\n  - name: envoy.filters.listener.tls_inspector\n    typed_config: {{ \"@type\": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector }}\n  filter_chains:\n  - {}{}",
        indent(socket, 4).trim_start(),
        indent(&hcm, 4),
    );
    format!(
        "admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}\nstatic_resources:\n  listeners:\n{}  clusters:\n{}",
        indent(&listener, 2),
        indent(&support::static_cluster_yaml("backend", "ROUND_ROBIN", &[(backend, 1)]), 2),
    )
}

/// What one proxy showed to curl, in its log and stats.
fn tls_run(proxy: &str, bin: &Path) -> (Vec<String>, Vec<String>, BTreeMap<String, u64>) {
    let dir = scratch_dir(&format!("parity-rbac-tls-{proxy}"));
    let log = dir.join("access.log");
    let backend = TestUpstream::echo();
    let certs = tls::shared();
    let (listener, admin, _envoy, _skiff);
    if proxy == "envoy" {
        let e =
            envoy::Envoy::start(bin, &dir, |port, admin| tls_config(port, admin, backend.addr, &log, certs));
        (listener, admin) = (e.listener, e.admin);
        (_envoy, _skiff) = (Some(e), None);
    } else {
        let k = Skiff::start(&tls_config(0, 0, backend.addr, &log, certs), &["--concurrency", "1"]);
        (listener, admin) = (k.listener("main"), k.admin());
        (_envoy, _skiff) = (None, Some(k));
    }
    let (crt, key) = (certs.path("client.crt"), certs.path("client.key"));
    let with_cert = ["--cert", crt.as_str(), "--key", key.as_str()];
    let mut client = Vec::new();
    let mut ask = |path: &str, host: &str, extra: &[&str]| {
        let c = curl(listener, host, path, certs, extra);
        let body = if c.status == Some(403) { c.body.clone() } else { String::new() };
        client.push(format!("{path} via {host} cert={}: {:?} {body:?}", !extra.is_empty(), c.status));
    };
    for path in ["/uri", "/dns", "/subject", "/any-cert"] {
        ask(path, "a.example", &with_cert);
        ask(path, "a.example", &[]);
    }
    ask("/sni", "a.example", &[]);
    ask("/sni", "localhost", &[]);
    support::wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&log).unwrap_or_default().lines().count() >= client.len()
    });
    let mut lines: Vec<String> =
        std::fs::read_to_string(&log).unwrap_or_default().lines().map(str::to_string).collect();
    lines.sort();
    let stats = envoy::parse_stats(&envoy::admin_get(admin, "/stats").map(|(_, b)| b).unwrap_or_default())
        .into_iter()
        .filter(|(n, v)| n.contains(".rbac.") && *v != 0)
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    (client, lines, stats)
}

#[test]
fn mtls_principal_names_and_sni_like_envoy() {
    let Some(bin) = envoy::binary_or_skip("rbac_mtls") else { return };
    let envoy = tls_run("envoy", &bin);
    let skiff = tls_run("skiff", &bin);
    assert_eq!(envoy, skiff, "left is Envoy, right is skiff");
    let (client, log, stats) = skiff;
    assert!(client.contains(&"/uri via a.example cert=true: Some(200) \"\"".to_string()), "{client:?}");
    assert!(
        client.contains(&"/uri via a.example cert=false: Some(403) \"RBAC: access denied\"".to_string()),
        "{client:?}"
    );
    assert!(log.contains(&"403 rbac_access_denied_matched_policy[none] /sni".to_string()), "{log:?}");
    assert_eq!(stats.get("http.front.rbac.allowed"), Some(&6));
}

/// Envoy runs the filter before the router: a request no route matches is still denied (403), and
/// one the rules allow then gets the router's 404 `NR`.
#[test]
fn a_request_without_a_route_is_still_judged_like_envoy() {
    let filter = r#"- name: envoy.filters.http.rbac
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
    rules:
      policies:
        readers:
          permissions: [{ header: { name: ":method", string_match: { exact: GET } } }]
          principals: [{ any: true }]
"#;
    let routes = "virtual_hosts:\n  - name: all\n    domains: [\"*\"]\n    routes:\n      - match: { prefix: \"/routed\" }\n        route: { cluster: backend }\n";
    let requests = [req_method("POST", "/nowhere", &[]), req("/nowhere"), req("/routed")];
    let Some(k) = compare("no_route", filter, routes, &requests) else { return };
    assert_eq!((k.status(0), k.status(1), k.status(2)), (403, 404, 200));
    assert!(k.log.contains(&"404 NR route_not_found GET /nowhere".to_string()), "{:?}", k.log);
}

// ---- x-forwarded-client-cert: each forward_client_cert_details mode, with and without a client
// certificate, a client-sent header to sanitize or append to. ----

fn xfcc_config(port: u16, admin: u16, backend: SocketAddr, certs: &Certs, mode: &str, log: &Path) -> String {
    // The server presents the `client` leaf too: its URI SAN is this hop's `By=`.
    let socket = tls::downstream_socket(certs, "client", "", &tls::trusting(certs, &[]));
    let mode =
        if mode.is_empty() { String::new() } else { format!("    forward_client_cert_details: {mode}\n") };
    // The log shows the header as this hop rewrote it.
    let extra = format!(
        "{mode}    set_current_client_cert_details: {{ subject: true, cert: true, dns: true, uri: true }}\n    access_log:\n    - name: envoy.access_loggers.file\n      typed_config:\n        \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n        path: {}\n        log_format: {{ text_format_source: {{ inline_string: \"%REQ(:PATH)% %REQ(X-FORWARDED-CLIENT-CERT)%\\n\" }} }}\n",
        log.display()
    );
    tls_bootstrap(port, admin, backend, &socket, &extra, "")
}

/// The `x-forwarded-client-cert` the upstream got (its lines joined by `,`), per request.
fn xfcc_run(proxy: &str, bin: &Path, mode: &str) -> Vec<String> {
    let dir = scratch_dir(&format!("parity-xfcc-{proxy}"));
    let log = dir.join("access.log");
    let backend = TestUpstream::echo();
    let certs = tls::shared();
    let (listener, _envoy, _skiff);
    if proxy == "envoy" {
        let e = envoy::Envoy::start(bin, &dir, |port, admin| {
            xfcc_config(port, admin, backend.addr, certs, mode, &log)
        });
        listener = e.listener;
        (_envoy, _skiff) = (Some(e), None);
    } else {
        let k = Skiff::start(&xfcc_config(0, 0, backend.addr, certs, mode, &log), &["--concurrency", "1"]);
        listener = k.listener("main");
        (_envoy, _skiff) = (None, Some(k));
    }
    let (crt, key) = (certs.path("client.crt"), certs.path("client.key"));
    let spoofed = "x-forwarded-client-cert: By=spiffe://evil;Hash=00";
    let with_cert =
        curl(listener, "client.example", "/mtls", certs, &["--cert", &crt, "--key", &key, "-H", spoofed]);
    let without = curl(listener, "client.example", "/plain", certs, &["-H", spoofed]);
    let mut out = vec![format!("{:?} {:?}", with_cert.status, without.status)];
    for seen in backend.requests() {
        let lines: Vec<&str> = seen
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-client-cert"))
            .map(|(_, v)| v.as_str())
            .collect();
        out.push(format!("{} {:?}", seen.path, lines.join(",")));
    }
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    support::wait_until(Duration::from_secs(5), || read_log().lines().count() >= 2);
    out.extend(read_log().lines().map(|l| format!("log {l}")));
    let _ = std::fs::remove_dir_all(&dir);
    out
}

#[test]
fn x_forwarded_client_cert_in_every_mode_like_envoy() {
    let Some(bin) = envoy::binary_or_skip("xfcc") else { return };
    for mode in ["", "FORWARD_ONLY", "APPEND_FORWARD", "SANITIZE_SET", "ALWAYS_FORWARD_ONLY"] {
        let envoy = xfcc_run("envoy", &bin, mode);
        let skiff = xfcc_run("skiff", &bin, mode);
        assert_eq!(envoy, skiff, "mode {mode:?}: left is Envoy, right is skiff");
        if mode == "SANITIZE_SET" {
            let set = &skiff[1];
            assert!(set.starts_with("/mtls \"By=spiffe://test/client;Hash="), "{set}");
            assert!(
                set.contains(";Subject=\\\"CN=client\\\";URI=spiffe://test/client;DNS=client.example"),
                "{set}"
            );
        }
    }
}
