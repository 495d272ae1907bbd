//! `envoy.filters.http.ext_authz` over HTTP as a user sees it: Envoy's `ext_authz` example
//! (`config/http-service.yaml`) loads unchanged and behaves as its README says; an allowed
//! request reaches the upstream with the authorization server's headers, a denied one gets the
//! server's status, headers and body, a server that is down, failing or slow gives
//! `status_on_error` (or lets the request through with `failure_mode_allow`), a route can turn the
//! filter off, and `with_request_body` sends the body along. Real skiff, a real authorization
//! server and upstream on loopback.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};
use support::ext_authz::{self, authz_server, get, post, Req, Run, BASIC, FULL, ROUTES};
use support::{dead_port, scratch_dir, Reply, Seen, Skiff, TestUpstream};

const EXAMPLE: &str = "configs/envoy-examples/envoyproxy-examples/ext_authz/config/http-service.yaml";

fn run(filter: &str, authz: Option<&TestUpstream>, requests: &[Req]) -> Run {
    let dir = scratch_dir("ext-authz");
    let log = dir.join("access.log");
    let up = TestUpstream::echo();
    let down = TestUpstream::start(Arc::new(|_| Reply::Close));
    let authz_addr = authz.map_or_else(dead_port, |a| a.addr);
    let sk = Skiff::start(&ext_authz::config(0, 0, &log, (up.addr, authz_addr), filter, ROUTES), &[]);
    let run =
        ext_authz::drive((sk.listener("main"), sk.admin()), &log, (&up, authz.unwrap_or(&down)), requests);
    drop(sk);
    let _ = std::fs::remove_dir_all(&dir);
    run
}

#[test]
fn envoys_http_service_example_loads_unchanged_and_behaves_as_its_readme_says() {
    let path = format!("{}/{EXAMPLE}", env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(&path).expect("the example");
    // The example's server (auth/http-service/server.js): a known bearer token is allowed with
    // x-current-user, anything else gets an empty 403.
    let authz = TestUpstream::start(Arc::new(|s: &Seen| {
        let users = [("token1", "user1"), ("token2", "user2"), ("token3", "user3")];
        let token = s.header("authorization").and_then(|a| a.strip_prefix("Bearer "));
        match users.iter().find(|(t, _)| Some(*t) == token) {
            Some((_, user)) => Reply::Full {
                status: 200,
                headers: vec![("x-current-user".into(), (*user).into())],
                body: Vec::new(),
            },
            None => Reply::Full { status: 403, headers: vec![], body: Vec::new() },
        }
    }));
    // Only the addresses change: the compose hostnames become the loopback servers.
    let (yaml, _app) = ext_authz::example_on_loopback(&example, "ext_authz-http-service", 9002, authz.addr);
    let sk = Skiff::start(&yaml, &[]);
    let addr = sk.listener("listener_0");
    let denied = support::get(addr, "/service");
    assert_eq!((denied.status, denied.body.as_slice()), (403, &b""[..]));
    let allowed =
        support::get_host(addr, "localhost:8000", "/service", &[("authorization", "Bearer token1")]);
    assert_eq!((allowed.status, allowed.text()), (200, "Hello user1 from behind Envoy!".to_string()));
}

#[test]
fn an_allowed_request_reaches_the_upstream_with_the_allowed_headers_set() {
    let authz = authz_server();
    let k = run(
        BASIC,
        Some(&authz),
        &[get(
            "/service?q=1",
            &[("authorization", "Bearer token1"), ("x-current-user", "evil"), ("x-foo", "bar")],
        )],
    );
    let r = k.response(0);
    assert_eq!(r.status, 200);
    let seen = &k.upstream[0];
    // Set: the client's own line is replaced; x-other was not allowed upstream.
    let users: Vec<&str> =
        seen.headers.iter().filter(|(n, _)| n == "x-current-user").map(|(_, v)| v.as_str()).collect();
    assert_eq!(users, ["user1"]);
    assert_eq!(seen.header("x-other"), None);
    // The check: the method, the prefixed path, host, authorization, and nothing else of the client's.
    let check = &authz.requests()[0];
    assert_eq!((check.method.as_str(), check.path.as_str()), ("GET", "/check/service?q=1"));
    let names: Vec<&str> = check.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["host", "content-length", "authorization", "x-envoy-internal", "x-envoy-expected-rq-timeout-ms"]
    );
    assert_eq!(check.header("host"), Some("test"));
    assert_eq!(check.header("x-envoy-expected-rq-timeout-ms"), Some("250"));
    assert_eq!(k.log, ["200 - /service?q=1 backend via_upstream"]);
    assert_eq!(k.stat("http.ingress.ext_authz.ok"), 1);
}

#[test]
fn a_denied_request_gets_the_servers_status_headers_and_body_and_never_reaches_the_upstream() {
    let authz = authz_server();
    let k =
        run(BASIC, Some(&authz), &[get("/service", &[]), get("/service", &[("authorization", "redirect")])]);
    let r = k.response(0);
    assert_eq!((r.status, r.text()), (403, "nope".to_string()));
    for (name, value) in [
        ("x-deny", "d"),
        ("www-authenticate", "Bearer"),
        ("set-cookie", "a=b"),
        ("content-type", "text/plain"),
    ] {
        assert_eq!(r.header(name), Some(value), "{name}");
    }
    let types = r.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("content-type")).count();
    assert_eq!(types, 1, "{:?}", r.headers);
    let redirect = k.response(1);
    assert_eq!((redirect.status, redirect.header("location")), (302, Some("/login")));
    assert!(k.upstream.is_empty());
    // Two shards append their lines in either order.
    let mut log = k.log.clone();
    log.sort();
    assert_eq!(
        log,
        ["302 UAEX /service backend ext_authz_denied", "403 UAEX /service backend ext_authz_denied"]
    );
    assert_eq!(k.stat("http.ingress.ext_authz.denied"), 2);
}

#[test]
fn a_server_that_is_down_or_fails_gives_403_and_failure_mode_allow_lets_the_request_through() {
    let authz = authz_server();
    let k = run(BASIC, Some(&authz), &[get("/a", &[("authorization", "err")])]);
    let r = k.response(0);
    assert_eq!((r.status, r.body.len()), (403, 0));
    assert_eq!(k.log, ["403 UAEX /a backend ext_authz_error"]);
    assert_eq!(k.stat("http.ingress.ext_authz.error"), 1);

    let down = run(BASIC, None, &[get("/a", &[])]);
    assert_eq!(down.response(0).status, 403);
    assert_eq!(down.stat("http.ingress.ext_authz.error"), 1);

    let custom = BASIC.replace("    http_service:", "    status_on_error: { code: 503 }\n    http_service:");
    assert_eq!(run(&custom, None, &[get("/a", &[])]).response(0).status, 503);

    let allow = BASIC.replace(
        "    http_service:",
        "    failure_mode_allow: true\n    failure_mode_allow_header_add: true\n    http_service:",
    );
    let k = run(&allow, None, &[get("/a", &[])]);
    assert_eq!(k.response(0).status, 200);
    assert_eq!(k.upstream[0].header("x-envoy-auth-failure-mode-allowed"), Some("true"));
    assert_eq!(
        (k.stat("http.ingress.ext_authz.error"), k.stat("http.ingress.ext_authz.failure_mode_allowed")),
        (1, 1)
    );
}

#[test]
fn a_check_slower_than_its_timeout_is_an_error() {
    let authz = authz_server();
    let started = Instant::now();
    let k = run(BASIC, Some(&authz), &[get("/slow", &[("authorization", "slow")])]);
    assert_eq!(k.response(0).status, 403);
    assert!(started.elapsed() < Duration::from_millis(3000), "{:?}", started.elapsed());
    assert_eq!(k.stat("http.ingress.ext_authz.error"), 1);
    assert_eq!(k.stat("cluster.authz.upstream_rq_timeout"), 1);
    assert!(k.upstream.is_empty());
}

#[test]
fn a_route_with_the_filter_disabled_is_never_checked() {
    let authz = authz_server();
    let k = run(BASIC, Some(&authz), &[get("/open/x", &[])]);
    assert_eq!(k.response(0).status, 200);
    assert!(authz.requests().is_empty());
    assert_eq!(k.stat("http.ingress.ext_authz.ok") + k.stat("http.ingress.ext_authz.denied"), 0);
}

#[test]
fn with_request_body_sends_the_body_and_the_response_lists_pick_headers() {
    let authz = authz_server();
    let ok = ("authorization", "Bearer token1");
    let k = run(
        FULL,
        Some(&authz),
        &[
            post("/p", &[ok, ("x-foo", "bar"), ("x-append", "a0")], "hello"),
            post("/p", &[ok], "hel"),
            get("/d", &[]),
        ],
    );
    let checks = authz.requests();
    assert_eq!(
        (checks[0].body.as_slice(), checks[0].header("x-envoy-auth-partial-body")),
        (&b"hell"[..], Some("true"))
    );
    assert_eq!((checks[0].header("x-foo"), checks[0].header("x-added")), (Some("bar"), Some("v")));
    assert_eq!(
        (checks[1].body.as_slice(), checks[1].header("x-envoy-auth-partial-body")),
        (&b"hel"[..], Some("false"))
    );
    assert_eq!(checks[2].header("x-envoy-auth-partial-body"), None);
    // The connection manager's own headers, as the upstream gets them.
    assert_eq!(checks[0].header("x-forwarded-proto"), Some("http"));
    assert_eq!(checks[0].header("x-request-id"), k.upstream[0].header("x-request-id"));
    // The upstream gets the whole body, the appended header after the client's own.
    assert_eq!(k.upstream[0].body, b"hello");
    let appended: Vec<&str> =
        k.upstream[0].headers.iter().filter(|(n, _)| n == "x-append").map(|(_, v)| v.as_str()).collect();
    assert_eq!(appended, ["a0", "a1"]);
    assert_eq!(k.response(0).header("x-client-ok"), Some("c"));
    // A listed client header, plus the ones Envoy always lets through; set-cookie is not listed.
    let denied = k.response(2);
    assert_eq!(
        (denied.header("x-deny"), denied.header("www-authenticate"), denied.header("set-cookie")),
        (Some("d"), Some("Bearer"), None)
    );

    let whole = FULL.replace("allow_partial_message: true", "allow_partial_message: false");
    let k = run(&whole, Some(&authz), &[post("/p", &[ok], "hello")]);
    assert_eq!(k.response(0).status, 413);
    assert!(k.upstream.is_empty());
}

#[test]
fn a_second_ext_authz_filter_is_refused() {
    // Two checks per request would need two awaits: refused rather than one silently skipped.
    let twice = format!("{BASIC}{}", BASIC.replace("name: envoy.filters.http.ext_authz", "name: second"));
    let yaml = ext_authz::config(
        0,
        0,
        std::path::Path::new("/dev/null"),
        (dead_port(), dead_port()),
        &twice,
        ROUTES,
    );
    let err = Skiff::try_start(&yaml, &[]).err().expect("refused");
    assert!(err.contains("a second ext_authz filter"), "{err}");
}

#[test]
fn the_security_config_and_the_example_load_without_a_warning() {
    for file in ["configs/security/ext-authz.yaml", EXAMPLE] {
        let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["--mode", "validate", "-c", &path])
            .output()
            .expect("skiff runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && !stderr.contains("warn"), "{file}: {stderr}");
    }
}

#[test]
fn a_client_that_leaves_during_the_check_is_logged_dc_and_nothing_is_counted() {
    use std::io::Write;
    let authz = authz_server();
    let up = TestUpstream::echo();
    let dir = scratch_dir("ext-authz-left");
    let log = dir.join("access.log");
    let sk = Skiff::start(&ext_authz::config(0, 0, &log, (up.addr, authz.addr), BASIC, ROUTES), &[]);
    let mut c = std::net::TcpStream::connect(sk.listener("main")).expect("connect");
    c.write_all(b"GET /left HTTP/1.1\r\nhost: test\r\nauthorization: slow\r\n\r\n").expect("send");
    std::thread::sleep(Duration::from_millis(50));
    drop(c);
    let (lines, stats) = support::filters::log_and_stats(sk.admin(), &log, 1);
    assert_eq!(lines, ["0 DC /left backend downstream_remote_disconnect"]);
    let counted = |n: &str| stats.get(&format!("http.ingress.ext_authz.{n}")).copied().unwrap_or(0);
    assert_eq!((counted("ok"), counted("denied"), counted("error")), (0, 0, 0));
    assert!(up.requests().is_empty());
}
