//! Envoy parity for gRPC over HTTP/1.1: the same v3 config and the same requests go through the real
//! Envoy and through skiff, each in front of its own upstream, and every response (head and body,
//! but `date`), the access-log lines and the response-class stats must be equal. Covers the local
//! replies Envoy turns into gRPC's trailers-only answer for a request whose `content-type` is gRPC's
//! (router, connection manager, filters), which requests count as gRPC, route `match.grpc` and
//! `retry_on` on gRPC codes read from a response head. Envoy is found via `$ENVOY_BIN` or PATH;
//! without it these tests fail under CI and skip elsewhere.

mod support;

#[path = "support/envoy.rs"]
mod envoy;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use support::{
    dead_port, indent, raw_until_close, scratch_dir, static_cluster_yaml, Reply, Seen, Skiff, TestUpstream,
};

const LOG_FORMAT: &str = "%RESPONSE_CODE% %RESPONSE_FLAGS% %REQ(:PATH)% %UPSTREAM_CLUSTER% %RESPONSE_CODE_DETAILS% %UPSTREAM_REQUEST_ATTEMPT_COUNT%";

/// The upstream: `/grpc/<n>` answers 200 with `grpc-status: n` in its head (a trailers-only
/// answer), `/trl/<n>` with `grpc-status: n` in chunked trailers, `/s/<code>` that HTTP status,
/// a path with `slow` in it nothing for 3 s; anything else 200 `ok`.
fn upstream() -> TestUpstream {
    TestUpstream::start(Arc::new(|s: &Seen| {
        let mut parts = s.path.trim_start_matches('/').splitn(2, '/');
        let (kind, arg) = (parts.next().unwrap_or(""), parts.next().unwrap_or("").to_string());
        match kind {
            _ if s.path.contains("slow") => Reply::Hang(Duration::from_secs(3)),
            "grpc" => Reply::Full {
                status: 200,
                headers: vec![
                    ("content-type".into(), "application/grpc".into()),
                    ("grpc-status".into(), arg),
                    ("grpc-message".into(), "from upstream".into()),
                ],
                body: Vec::new(),
            },
            "trl" => Reply::Raw(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/grpc\r\ntransfer-encoding: chunked\r\n\r\n\
                     5\r\n\0\0\0\0\0\r\n0\r\ngrpc-status: {arg}\r\n\r\n"
                )
                .into_bytes(),
                true,
            ),
            "s" => Reply::Full { status: arg.parse().unwrap_or(500), headers: vec![], body: b"up".to_vec() },
            _ => Reply::ok("ok"),
        }
    }))
}

/// A bootstrap with listener `main` (its `route_config` and `http_filters` before the router as
/// given, YAML at column 0), cluster `backend` at `up` and cluster `dead` (nothing listens).
fn config(port: u16, admin: u16, log: &Path, up: SocketAddr, filters: &str, routes: &str) -> String {
    let dead = static_cluster_yaml("dead", "ROUND_ROBIN", &[(dead_port(), 1)]);
    support::filters::config_logging(port, admin, log, up, filters, routes, LOG_FORMAT) + &indent(&dead, 4)
}

/// One request: its raw bytes (each on its own connection, saying `connection: close`).
/// A gRPC message frame (an empty message) is the body, but of a HEAD request.
fn grpc(method: &str, path: &str, content_type: &str, extra: &str) -> String {
    let body = if method == "HEAD" { "" } else { "\0\0\0\0\0" };
    format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\ncontent-type: {content_type}\r\nte: trailers\r\n\
         connection: close\r\n{extra}content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// What one proxy showed: each response as read until close (its `date` and
/// `x-envoy-upstream-service-time` lines left out), the log lines, the response-class and retry
/// stats, and how many requests reached the upstream.
#[derive(Debug, PartialEq)]
struct Run {
    responses: Vec<String>,
    /// The `x-envoy-expected-rq-timeout-ms` each request to a timeout route (`/timed`,
    /// `/capped`) reaching the upstream had, in order (a retry's says the time left: not compared).
    expected_timeouts: Vec<String>,
    log: Vec<String>,
    stats: Vec<String>,
    upstream: usize,
}

impl Run {
    fn response(&self, i: usize) -> &str {
        &self.responses[i]
    }
}

fn drive(listener: SocketAddr, admin: SocketAddr, log: &Path, up: &TestUpstream, requests: &[String]) -> Run {
    let responses = requests
        .iter()
        .map(|r| {
            let got = raw_until_close(listener, r.as_bytes(), Duration::from_secs(5));
            if r.contains(" /trl/") {
                // Envoy drops an HTTP/1.1 upstream's trailers on the way to an HTTP/1.1 client
                // (without `enable_trailers`), skiff relays them: not what these tests compare.
                return got.text.lines().next().unwrap_or("").to_string();
            }
            // A relayed answer with the rate limit's `x-ratelimit-*`: its headers as a set (skiff
            // appends those last, Envoy before `server`; not gRPC's, and not what these tests
            // compare); everything else whole, header order included.
            let relayed =
                got.text.contains("\r\nx-ratelimit-limit: ") && !got.text.contains("\r\ngrpc-status: ");
            let (head, body) = got.text.split_once("\r\n\r\n").unwrap_or((&got.text, ""));
            let mut lines: Vec<&str> = head
                .split("\r\n")
                .filter(|l| !l.starts_with("date: ") && !l.starts_with("x-envoy-upstream-service-time: "))
                // The seconds until the bucket refills, as each proxy rounds them.
                .map(|l| if l.starts_with("x-ratelimit-reset: ") { "x-ratelimit-reset: *" } else { l })
                .collect();
            if relayed {
                lines[1..].sort_unstable();
            }
            format!("{}\n\n{body}", lines.join("\n"))
        })
        .collect();
    let (mut log, stats) = support::filters::log_and_stats(admin, log, requests.len());
    // Sorted: each of skiff's shards hands its lines to the writer on its own.
    log.sort();
    let stats = stats
        .iter()
        .filter(|(n, v)| {
            **v != 0
                && (n.starts_with("http.ingress.downstream_rq_") && n.ends_with("xx") && !n.contains("http1")
                    || n.starts_with("cluster.backend.upstream_rq_retry")
                    || n.starts_with("cluster.backend.retry."))
        })
        .map(|(n, v)| format!("{n} = {v}"))
        .collect();
    let seen = up.requests();
    let expected_timeouts = seen
        .iter()
        .filter(|s| s.path.starts_with("/timed") || s.path.starts_with("/capped"))
        .filter_map(|s| s.header("x-envoy-expected-rq-timeout-ms").map(str::to_string))
        .collect();
    Run { responses, expected_timeouts, log, stats, upstream: seen.len() }
}

/// Makes a proxy's bootstrap: (listener port, admin port, access-log path, upstream).
type MakeConfig<'a> = &'a (dyn Fn(u16, u16, &Path, SocketAddr) -> String + Sync);

fn run_envoy(bin: &Path, make: MakeConfig<'_>, requests: &[String]) -> Run {
    let dir = scratch_dir("parity-grpc-envoy");
    let up = upstream();
    let log = dir.join("access.log");
    let e = envoy::Envoy::start(bin, &dir, |port, admin| make(port, admin, &log, up.addr));
    let run = drive(e.listener, e.admin, &log, &up, requests);
    drop(e);
    let _ = std::fs::remove_dir_all(&dir);
    run
}

fn run_skiff(make: MakeConfig<'_>, requests: &[String]) -> Run {
    let dir = scratch_dir("parity-grpc-skiff");
    let up = upstream();
    let log = dir.join("access.log");
    let sk = Skiff::start(&make(0, 0, &log, up.addr), &[]);
    let run = drive(sk.listener("main"), sk.admin(), &log, &up, requests);
    drop(sk);
    let _ = std::fs::remove_dir_all(&dir);
    run
}

/// Runs both on `config` with these filters and routes, and asserts they agree; skiff's run (None
/// when Envoy is absent outside CI).
fn same(name: &str, filters: &str, routes: &str, requests: &[String]) -> Option<Run> {
    same_with(name, &|port, admin, log, up| config(port, admin, log, up, filters, routes), requests)
}

/// `same` on the bootstrap `make` writes.
fn same_with(name: &str, make: MakeConfig<'_>, requests: &[String]) -> Option<Run> {
    let bin = envoy::binary_or_skip(name)?;
    let (e, k) = std::thread::scope(|s| {
        let e = s.spawn(|| run_envoy(&bin, make, requests));
        let k = s.spawn(|| run_skiff(make, requests));
        (e.join().expect("envoy side"), k.join().expect("skiff side"))
    });
    assert_eq!(e, k, "\nenvoy:\n{e:#?}\nskiff:\n{k:#?}");
    Some(k)
}

const ROUTE_LIST: &str = r#"      - match: { prefix: "/direct" }
        direct_response: { status: 503, body: { inline_string: "down: 100% é~\"\t\n" } }
      - match: { prefix: "/ok" }
        direct_response: { status: 200, body: { inline_string: "fine" } }
      - match: { prefix: "/moved" }
        redirect: { path_redirect: "/elsewhere" }
      - match: { prefix: "/dead" }
        route: { cluster: dead }
      - match: { prefix: "/slow" }
        route: { cluster: backend, timeout: 0.3s }
      - match: { prefix: "/timed" }
        route: { cluster: backend, max_stream_duration: { grpc_timeout_header_max: 10s } }
      - match: { prefix: "/capped" }
        route: { cluster: backend, timeout: 5s, max_grpc_timeout: 0.3s, grpc_timeout_offset: 0.05s }
{limited}      - match: { prefix: "/s/" }
        route: { cluster: backend }
"#;

/// A route `/limited` to `backend` whose own local rate limit (`per_route`) allows one request a
/// minute; `extra`: more of its fields (YAML at column 0).
fn limited_route(extra: &str) -> String {
    let limit = r#"      - match: { prefix: "/limited" }
        route: { cluster: backend }
        typed_per_filter_config:
          envoy.filters.http.local_ratelimit:
            "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
            stat_prefix: per_route
            token_bucket: { max_tokens: 1, tokens_per_fill: 1, fill_interval: 60s }
            filter_enabled: { default_value: { numerator: 100 } }
            filter_enforced: { default_value: { numerator: 100 } }
"#;
    format!("{limit}{}", indent(extra, 12))
}

/// `ROUTE_LIST` with its `/limited` route adding a header to its refusals, and the `x-ratelimit-*`
/// headers (the filter's response phase: after a trailers-only answer's gRPC lines) to all.
fn route_list() -> String {
    let header = "response_headers_to_add:\n  - append_action: OVERWRITE_IF_EXISTS_OR_ADD\n    header: { key: x-limited, value: \"yes\" }\nenable_x_ratelimit_headers: DRAFT_VERSION_03\n";
    ROUTE_LIST.replace("{limited}", &limited_route(header))
}

/// A route config of one virtual host for every domain, with `routes` (its entries, at column 6).
fn all_domains(routes: &str) -> String {
    format!("virtual_hosts:\n  - name: all\n    domains: [\"*\"]\n    routes:\n{routes}")
}

const FILTERS: &str = r#"- name: envoy.filters.http.fault
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
    abort: { header_abort: {}, percentage: { numerator: 100 } }
- name: envoy.filters.http.local_ratelimit
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
    stat_prefix: hcm_level
- name: envoy.filters.http.rbac
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
    rules:
      action: DENY
      policies:
        deny:
          permissions: [ { header: { name: x-deny, present_match: true } } ]
          principals: [ { any: true } ]
"#;

const G: &str = "application/grpc";

/// Every kind of local reply, to gRPC requests: HTTP 200, `content-type: application/grpc`, the
/// mapped `grpc-status`, the body as a percent-encoded `grpc-message`, no body; logged and counted
/// as the 200 it is.
#[test]
fn local_replies_to_grpc_requests_are_trailers_only_answers() {
    let requests = [
        grpc("POST", "/direct", G, ""),
        grpc("HEAD", "/direct", G, ""),
        grpc("POST", "/ok", G, ""),
        grpc("POST", "/moved", G, ""),
        grpc("POST", "/dead", G, ""),
        grpc("POST", "/nowhere", G, ""),
        grpc("POST", "/s/200", G, "x-deny: 1\r\n"),
        grpc("POST", "/s/200", "application/grpc+proto", "x-envoy-fault-abort-request: 429\r\n"),
        grpc("POST", "/s/200", G, "x-envoy-fault-abort-request: 401\r\n"),
        grpc("GET", "/limited", G, ""),
        grpc("GET", "/limited", G, ""),
        // A request without a Host: the connection manager's own refusal is gRPC's too.
        format!("POST /s/200 HTTP/1.1\r\ncontent-type: {G}\r\nconnection: close\r\n\r\n"),
        // The upstream's own answers are relayed as they are.
        grpc("POST", "/s/503", G, ""),
    ];
    let Some(k) = same("grpc_local_replies", FILTERS, &all_domains(&route_list()), &requests) else { return };
    assert_eq!(
        k.response(0),
        "HTTP/1.1 200 OK\ncontent-type: application/grpc\ngrpc-status: 14\n\
         grpc-message: down: 100%25 %C3%A9%7E\"%09%0A\nserver: envoy\nconnection: close\ncontent-length: 0\n\n"
    );
    assert!(k.response(5).contains("grpc-status: 12\n"), "{}", k.response(5));
    assert!(k.response(6).contains("grpc-status: 7\ngrpc-message: RBAC: access denied\n"));
    assert!(k.log.contains(&"200 UF /dead dead upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused} 1".to_string()), "{:?}", k.log);
    assert!(k.stats.contains(&"http.ingress.downstream_rq_2xx = 12".to_string()), "{:?}", k.stats);
}

/// Requests that are not gRPC by Envoy's rule (`application/grpc` or `application/grpc+…`, case
/// and all) get the plain HTTP replies; a codec refusal is never gRPC's.
#[test]
fn only_grpc_content_types_get_grpc_replies() {
    let requests = [
        grpc("POST", "/nowhere", "application/grpc-web", ""),
        grpc("POST", "/nowhere", "application/grpc;charset=utf-8", ""),
        grpc("POST", "/nowhere", "APPLICATION/GRPC", ""),
        grpc("POST", "/nowhere", "text/plain", ""),
        format!("POST /nowhere HTTP/1.0\r\ncontent-type: {G}\r\n\r\n"),
    ];
    let Some(k) = same("grpc_content_types", FILTERS, &all_domains(&route_list()), &requests) else { return };
    assert!(k.responses[..4].iter().all(|r| r.starts_with("HTTP/1.1 404 ")), "{:?}", k.responses);
    assert!(k.response(4).starts_with("HTTP/1.1 426 "), "{}", k.response(4));
}

/// A fault's `grpc_status` (fixed, or `x-envoy-fault-abort-grpc-request` when no valid HTTP
/// status header comes first) and a rate limit's `rate_limited_as_resource_exhausted`: a gRPC
/// request gets that code, any other request the plain 200 (the fault) or 429 (the limit).
#[test]
fn fault_grpc_status_and_rate_limit_resource_exhausted() {
    let routes = &all_domains(
        &r#"      - match: { prefix: "/fixed" }
        route: { cluster: backend }
        typed_per_filter_config:
          envoy.filters.http.fault:
            "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
            abort: { grpc_status: 5, percentage: { numerator: 100 } }
{limited}      - match: { prefix: "/" }
        route: { cluster: backend }
"#
        .replace("{limited}", &limited_route("rate_limited_as_resource_exhausted: true\n")),
    );
    let abort = |v: &str| format!("x-envoy-fault-abort-grpc-request: {v}\r\n");
    let requests = [
        grpc("POST", "/fixed", G, ""),
        grpc("POST", "/fixed", "text/plain", ""),
        grpc("POST", "/s/200", G, &abort("5")),
        grpc("POST", "/s/200", "text/plain", &abort("5")),
        grpc("POST", "/s/200", G, &format!("{}x-envoy-fault-abort-request: 503\r\n", abort("5"))),
        grpc("POST", "/s/200", G, &format!("{}x-envoy-fault-abort-request: 600\r\n", abort("9"))),
        grpc("POST", "/s/200", G, &abort("abc")),
        grpc("POST", "/s/200", G, &abort("99")),
        grpc("POST", "/limited", G, ""),
        grpc("POST", "/limited", G, ""),
        grpc("POST", "/limited", "text/plain", ""),
    ];
    let Some(k) = same("grpc_fault_and_rate_limit", FILTERS, routes, &requests) else { return };
    assert!(
        k.response(0).contains("grpc-status: 5\ngrpc-message: fault filter abort\n"),
        "{}",
        k.response(0)
    );
    assert!(k.response(1).starts_with("HTTP/1.1 200 OK") && k.response(1).ends_with("fault filter abort"));
    assert!(
        k.response(9).contains("grpc-status: 8\ngrpc-message: local_rate_limited\n"),
        "{}",
        k.response(9)
    );
    assert!(k.response(10).starts_with("HTTP/1.1 429 "), "{}", k.response(10));
}

/// An authorization service's denial (403 with its own body, headers and `content-type`, a 302,
/// a 500 that fails the check) is a gRPC answer too: the service's headers stay, its type gives
/// way to gRPC's, its body is the `grpc-message`.
#[test]
fn ext_authz_denials_are_grpc_answers() {
    let authz = support::ext_authz::authz_server();
    let make = |port, admin, log: &Path, up| {
        support::ext_authz::config(
            port,
            admin,
            log,
            (up, authz.addr),
            support::ext_authz::BASIC,
            support::filters::ALL_TO_BACKEND,
        )
    };
    let auth = |v: &str| format!("authorization: {v}\r\n");
    let requests = [
        grpc("POST", "/s/200", G, &auth("Bearer token1")),
        grpc("POST", "/s/200", G, &auth("nope")),
        grpc("POST", "/s/200", G, &auth("redirect")),
        grpc("POST", "/s/200", G, &auth("err")),
        grpc("POST", "/s/200", "text/plain", &auth("nope")),
    ];
    let Some(k) = same_with("grpc_ext_authz", &make, &requests) else { return };
    assert!(k.response(1).contains("grpc-status: 7\ngrpc-message: nope\n"), "{}", k.response(1));
    assert!(k.response(4).starts_with("HTTP/1.1 403 "), "{}", k.response(4));
}

/// The route timeout is UNAVAILABLE (504's mapping); a `grpc-timeout` that runs out is
/// DEADLINE_EXCEEDED. A route's (deprecated) `max_grpc_timeout` is a gRPC request's route timeout:
/// its `grpc-timeout` less the offset, capped; the route's `timeout` for any other request. Each
/// request's `x-envoy-expected-rq-timeout-ms` says which the upstream got. A route with a
/// `max_stream_duration` has no route timeout at all, gRPC or not.
#[test]
fn grpc_timeouts_answer_unavailable_and_deadline_exceeded() {
    let requests = [
        grpc("POST", "/slow", G, ""),
        grpc("POST", "/timed/slow", G, "grpc-timeout: 200m\r\n"),
        // A route with `max_stream_duration` has no route timeout (Envoy's "new timeouts").
        grpc("POST", "/timed/fast", "text/plain", ""),
        grpc("POST", "/capped/slow", G, ""),
        grpc("POST", "/capped/slow", G, "grpc-timeout: 150m\r\n"),
        grpc("POST", "/capped/slow", G, "grpc-timeout: 20S\r\n"),
        grpc("POST", "/capped/slow", G, "grpc-timeout: 40m\r\n"),
        grpc("POST", "/capped/fast", G, "grpc-timeout: 2S\r\n"),
        grpc("POST", "/capped/fast", "text/plain", "grpc-timeout: 2S\r\n"),
    ];
    let Some(k) = same("grpc_timeouts", FILTERS, &all_domains(&route_list()), &requests) else { return };
    assert!(k.response(0).contains("grpc-status: 14\ngrpc-message: upstream request timeout\n"));
    assert!(k.response(1).contains("grpc-status: 4\ngrpc-message: downstream duration timeout\n"));
    for i in 3..7 {
        assert!(k.response(i).contains("grpc-message: upstream request timeout\n"), "{}", k.response(i));
    }
    assert_eq!(k.expected_timeouts[k.expected_timeouts.len() - 2..], ["300", "5000"]);
}

/// `match.grpc` routes only gRPC requests.
#[test]
fn route_match_grpc_takes_only_grpc_requests() {
    let routes = &all_domains(
        r#"      - match: { prefix: "/svc", grpc: {} }
        route: { cluster: backend }
      - match: { prefix: "/" }
        direct_response: { status: 200, body: { inline_string: "not grpc" } }
"#,
    );
    let requests = [
        grpc("POST", "/svc/ok", G, ""),
        grpc("POST", "/svc/ok", "application/grpc+proto", ""),
        grpc("POST", "/svc/ok", "application/grpc-web", ""),
        grpc("POST", "/svc/ok", "text/plain", ""),
    ];
    let Some(k) = same("grpc_route_match", "", routes, &requests) else { return };
    assert_eq!(k.upstream, 2);
    assert!(k.response(3).ends_with("not grpc"), "{}", k.response(3));
}

/// `retry_on` gRPC codes retry a response whose head says one of them (whatever the request's
/// type), never one whose trailers do; `retriable_status_codes` stays HTTP's.
#[test]
fn retry_on_grpc_codes_reads_the_response_head() {
    let routes = &all_domains(
        r#"      - match: { prefix: "/" }
        route:
          cluster: backend
          retry_policy:
            retry_on: "cancelled,deadline-exceeded,internal,resource-exhausted,unavailable"
            num_retries: 2
            retry_back_off: { base_interval: 0.001s }
"#,
    );
    let requests = [
        grpc("POST", "/grpc/14", G, ""),
        grpc("POST", "/grpc/1", G, ""),
        grpc("POST", "/grpc/4", G, ""),
        grpc("POST", "/grpc/8", G, ""),
        grpc("POST", "/grpc/13", G, ""),
        grpc("POST", "/grpc/2", G, ""),
        grpc("POST", "/grpc/0", G, ""),
        grpc("POST", "/trl/14", G, ""),
        grpc("POST", "/s/503", G, ""),
        grpc("POST", "/grpc/14", "text/plain", ""),
    ];
    let Some(k) = same("grpc_retries", "", routes, &requests) else { return };
    // Six requests retried twice each, four answered at once.
    assert_eq!(k.upstream, 6 * 3 + 4);
    assert!(k.log.contains(&"200 URX /grpc/14 backend via_upstream 3".to_string()), "{:?}", k.log);
    assert!(k.log.contains(&"200 - /trl/14 backend via_upstream 1".to_string()), "{:?}", k.log);
}
