//! Envoy parity for `envoy.filters.http.ext_authz` over HTTP: the same v3 config and the same
//! requests go through the real Envoy and through skiff, each in front of its own upstream and
//! its own authorization server (`support::ext_authz::authz_server`), and what the client got
//! (status, headers, body), what the upstream and the authorization server saw, the access-log
//! lines and the filter's stats must be equal. Header order is not compared (Envoy's own differs
//! between runs of its header map), nor values that are times or random ids. Envoy is found via
//! `$ENVOY_BIN` or PATH; without it these tests fail under CI and skip elsewhere.

mod support;

#[path = "support/envoy.rs"]
mod envoy;

use support::ext_authz::{self, authz_server, get, post, Req, Run, BASIC, FULL, ROUTES};
use support::{dead_port, scratch_dir, Reply, Seen, Skiff, TestUpstream};

fn servers(authz_up: bool) -> (TestUpstream, TestUpstream, std::net::SocketAddr) {
    let authz = authz_server();
    let addr = if authz_up { authz.addr } else { dead_port() };
    (TestUpstream::echo_plain(), authz, addr)
}

fn run_envoy(bin: &std::path::Path, filter: &str, authz_up: bool, requests: &[Req]) -> Run {
    let dir = scratch_dir("parity-ext-authz-envoy");
    let (up, authz, authz_addr) = servers(authz_up);
    let log = dir.join("access.log");
    let e = envoy::Envoy::start(bin, &dir, |port, admin| {
        ext_authz::config(port, admin, &log, (up.addr, authz_addr), filter, ROUTES)
    });
    let run = ext_authz::drive((e.listener, e.admin), &log, (&up, &authz), requests);
    drop(e);
    let _ = std::fs::remove_dir_all(&dir);
    run
}

fn run_skiff(filter: &str, authz_up: bool, requests: &[Req]) -> Run {
    let dir = scratch_dir("parity-ext-authz-skiff");
    let (up, authz, authz_addr) = servers(authz_up);
    let log = dir.join("access.log");
    // One shard, as Envoy's one worker: the check's connection reuse is compared too.
    let yaml = ext_authz::config(0, 0, &log, (up.addr, authz_addr), filter, ROUTES);
    let sk = Skiff::start(&yaml, &["--concurrency", "1"]);
    let run = ext_authz::drive((sk.listener("main"), sk.admin()), &log, (&up, &authz), requests);
    drop(sk);
    let _ = std::fs::remove_dir_all(&dir);
    run
}

fn both(name: &str, filter: &str, authz_up: bool, requests: &[Req]) -> Option<(Run, Run)> {
    let bin = envoy::binary_or_skip(name)?;
    std::thread::scope(|s| {
        let e = s.spawn(|| run_envoy(&bin, filter, authz_up, requests));
        let k = s.spawn(|| run_skiff(filter, authz_up, requests));
        Some((e.join().expect("envoy side"), k.join().expect("skiff side")))
    })
}

fn render(run: &Run) -> Vec<String> {
    ext_authz::render(run, &[], &|_| false)
}

fn assert_same(envoy: &Run, skiff: &Run) {
    ext_authz::assert_same_lines(&render(envoy), &render(skiff));
}

#[test]
fn allowed_denied_failing_slow_redirected_and_disabled_requests() {
    let ok = ("authorization", "Bearer token1");
    let requests = [
        get("/service?q=1", &[]),
        get("/service", &[ok, ("x-current-user", "evil"), ("x-foo", "bar")]),
        get("/e", &[("authorization", "err")]),
        get("/s", &[("authorization", "slow")]),
        get("/r", &[("authorization", "redirect")]),
        get("/open/x", &[]),
        post("/p", &[ok], "hello"),
    ];
    let Some((e, k)) = both("ext_authz_basic", BASIC, true, &requests) else { return };
    assert_same(&e, &k);
    assert_eq!(k.response(0).status, 403);
    assert!(k.log.contains(&"403 UAEX /service?q=1 backend ext_authz_denied".to_string()), "{:?}", k.log);
}

#[test]
fn header_lists_failure_mode_allow_and_the_request_body() {
    let ok = ("authorization", "Bearer token1");
    let requests = [
        get("/d", &[("x-foo", "bar")]),
        get("/a", &[ok, ("x-append", "a0")]),
        get("/e", &[("authorization", "err"), ("x-current-user", "evil")]),
        post("/p", &[ok], "hello"),
        post("/p", &[ok], "hel"),
    ];
    let filter = FULL.replace(
        "    with_request_body:",
        "    failure_mode_allow: true\n    failure_mode_allow_header_add: true\n    with_request_body:",
    );
    let Some((e, k)) = both("ext_authz_full", &filter, true, &requests) else { return };
    assert_same(&e, &k);
    assert_eq!(k.stat("http.ingress.ext_authz.failure_mode_allowed"), 1);
}

#[test]
fn an_authorization_server_that_is_down_and_a_body_over_the_limit() {
    let whole = FULL.replace("allow_partial_message: true", "allow_partial_message: false");
    let requests = [get("/a", &[]), post("/p", &[("authorization", "Bearer token1")], "hello")];
    let Some((e, k)) = both("ext_authz_down", &whole, false, &requests) else { return };
    assert_same(&e, &k);
    assert_eq!((k.response(0).status, k.response(1).status), (403, 413));
}

/// Keeps the echo's body free of the test server's own header order.
trait EchoPlain {
    fn echo_plain() -> TestUpstream;
}

impl EchoPlain for TestUpstream {
    fn echo_plain() -> TestUpstream {
        TestUpstream::start(std::sync::Arc::new(|s: &Seen| Reply::ok(&format!("{} {}", s.method, s.path))))
    }
}

#[test]
fn envoy_accepts_the_security_config_and_the_example() {
    let Some(bin) = envoy::binary_or_skip("ext_authz_configs") else { return };
    for file in [
        "configs/security/ext-authz.yaml",
        "configs/envoy-examples/envoyproxy-examples/ext_authz/config/http-service.yaml",
    ] {
        let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
        let base_id = (std::process::id() % 100_000) * 100 + 99;
        let out = std::process::Command::new(&bin)
            .args(["--mode", "validate", "-c", &path, "-l", "error", "--base-id", &base_id.to_string()])
            .output()
            .expect("envoy runs");
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
