//! Envoy parity for `envoy.filters.http.ext_authz` over gRPC (`grpc_service.envoy_grpc`): the
//! same v3 config and the same requests go through the real Envoy and through skiff, each in
//! front of its own upstream and its own gRPC authorization server
//! (`support/authz_grpc.rs`, tonic with `envoy.service.auth.v3.Authorization`), and what the
//! client got, what the upstream saw, the `CheckRequest` and gRPC metadata the server got, the
//! access-log lines and the filter's stats must be equal. Also: Envoy's two gRPC examples
//! (`grpc-service`, `opa-service`) load in skiff (the first runs against the test server), and
//! skiff refuses a gRPC authorization
//! cluster that is not HTTP/2. Envoy is found via `$ENVOY_BIN` or PATH; without it the parity
//! tests fail under CI and skip elsewhere.

mod support;

#[path = "support/envoy.rs"]
mod envoy;

#[path = "support/authz_grpc.rs"]
mod authz_grpc;

use authz_grpc::AuthzServer;
use support::ext_authz::{self, get, post, Req, Run, ROUTES};
use support::{dead_port, scratch_dir, Reply, Seen, Skiff, TestUpstream};

/// The filter: a gRPC service on cluster `authz`, with initial metadata.
const GRPC: &str = r#"- name: envoy.filters.http.ext_authz
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
    transport_api_version: V3
    grpc_service:
      envoy_grpc: { cluster_name: authz }
      timeout: 0.25s
      initial_metadata: [{ key: x-tenant, value: t1 }]
"#;

/// `support::ext_authz::config` with the `authz` cluster speaking HTTP/2, as a gRPC one must, and
/// `context_extensions` on the virtual host and on the catch-all route (merged).
fn config(
    port: u16,
    admin: u16,
    log: &std::path::Path,
    addrs: (std::net::SocketAddr, std::net::SocketAddr),
    filter: &str,
) -> String {
    let catch_all = "      - match: { prefix: \"/\" }\n        route: { cluster: backend }\n";
    let extended = format!("{catch_all}        typed_per_filter_config:\n          envoy.filters.http.ext_authz:\n            \"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute\n            check_settings: {{ context_extensions: {{ service: backend, tier: b }} }}\n");
    let vhost = "    domains: [\"*\"]\n";
    let vhost_extended = format!("{vhost}    typed_per_filter_config:\n      envoy.filters.http.ext_authz:\n        \"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute\n        check_settings: {{ context_extensions: {{ service: vhost, zone: z }} }}\n");
    let routes = ROUTES.replace(catch_all, &extended).replace(vhost, &vhost_extended);
    assert_ne!(routes, ROUTES);
    let yaml = ext_authz::config(port, admin, log, addrs, filter, &routes);
    let h2 = "    - name: authz\n      connect_timeout: 0.5s\n      typed_extension_protocol_options:\n        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n          \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n          explicit_http_config: { http2_protocol_options: {} }\n";
    let out = yaml.replace("    - name: authz\n      connect_timeout: 0.5s\n", h2);
    assert_ne!(out, yaml);
    out
}

struct Side {
    run: Run,
    checks: Vec<String>,
}

/// Answers with the request line, and with headers of names the authorization server adds to
/// the response (`response_headers_to_add` with `append: true` or `APPEND_IF_EXISTS_OR_ADD`).
fn echo() -> TestUpstream {
    TestUpstream::start(std::sync::Arc::new(|s: &Seen| Reply::Full {
        status: 200,
        // Only the names the check adds to (skiff adds every response_headers_to_add line after
        // the upstream's; README's deliberate differences).
        headers: ["x-client-true", "x-client-append"]
            .iter()
            .map(|n| (n.to_string(), "up".to_string()))
            .collect(),
        body: format!("{} {}", s.method, s.path).into_bytes(),
    }))
}

fn run_side(envoy_bin: Option<&std::path::Path>, filter: &str, authz_up: bool, requests: &[Req]) -> Side {
    let dir = scratch_dir("parity-ext-authz-grpc");
    let (up, authz, unused) = (echo(), AuthzServer::start(), echo());
    let authz_addr = if authz_up { authz.addr } else { dead_port() };
    let log = dir.join("access.log");
    let run = match envoy_bin {
        Some(bin) => {
            let e = envoy::Envoy::start(bin, &dir, |port, admin| {
                config(port, admin, &log, (up.addr, authz_addr), filter)
            });
            let run = ext_authz::drive((e.listener, e.admin), &log, (&up, &unused), requests);
            drop(e);
            run
        }
        None => {
            let yaml = config(0, 0, &log, (up.addr, authz_addr), filter);
            let sk = Skiff::start(&yaml, &["--concurrency", "1"]);
            let run = ext_authz::drive((sk.listener("main"), sk.admin()), &log, (&up, &unused), requests);
            drop(sk);
            run
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    Side { run, checks: authz.seen() }
}

fn both(name: &str, filter: &str, authz_up: bool, requests: &[Req]) -> Option<(Side, Side)> {
    let bin = envoy::binary_or_skip(name)?;
    std::thread::scope(|s| {
        let e = s.spawn(|| run_side(Some(&bin), filter, authz_up, requests));
        let k = s.spawn(|| run_side(None, filter, authz_up, requests));
        Some((e.join().expect("envoy side"), k.join().expect("skiff side")))
    })
}

fn render(side: &Side) -> Vec<String> {
    // Not compared: skiff keeps no `upstream_rq_tx_reset` (Envoy's count of the stream reset at
    // the timeout), and counts a pending request for each new bridge to the shared HTTP/2
    // connection (after a timeout abandoned one) where Envoy opens a stream on it.
    let skip =
        |name: &str| name.ends_with("upstream_rq_tx_reset") || name.ends_with("upstream_rq_pending_total");
    ext_authz::render(&side.run, &side.checks, &skip)
}

fn assert_same(envoy: &Side, skiff: &Side) {
    ext_authz::assert_same_lines(&render(envoy), &render(skiff));
}

#[test]
fn allowed_with_header_mutations_denied_failing_slow_and_disabled() {
    let ok = ("authorization", "Bearer token1");
    let requests = [
        get("/service?q=1", &[("x-foo", "bar")]),
        get(
            "/service",
            &[
                ok,
                ("x-current-user", "evil"),
                ("x-appended", "a0"),
                ("x-append", "a0"),
                ("x-overwrite", "o0"),
                ("x-absent", "mine"),
                ("x-remove-me", "r"),
            ],
        ),
        get("/e", &[("authorization", "err")]),
        get("/s", &[("authorization", "slow")]),
        get("/p", &[("authorization", "plain")]),
        get("/open/x", &[]),
        post("/p", &[ok], "hello"),
    ];
    let Some((e, k)) = both("ext_authz_grpc_basic", GRPC, true, &requests) else { return };
    assert_same(&e, &k);
    assert_eq!(k.run.response(0).status, 401);
    // The route's context_extensions over its virtual host's.
    assert!(k.checks[0].contains("context_extensions [service=backend, tier=b, zone=z]"), "{}", k.checks[0]);
    assert!(
        k.run.log.contains(&"401 UAEX /service?q=1 backend ext_authz_denied".to_string()),
        "{:?}",
        k.run.log
    );
}

#[test]
fn failure_mode_allow_status_on_error_and_the_request_body() {
    let ok = ("authorization", "Bearer token1");
    let requests =
        [get("/e", &[("authorization", "err")]), post("/p", &[ok], "hello"), post("/p", &[ok], "hel")];
    let filter = GRPC.replace(
        "    transport_api_version: V3\n",
        "    transport_api_version: V3\n    failure_mode_allow: true\n    failure_mode_allow_header_add: true\n    with_request_body: { max_request_bytes: 4, allow_partial_message: true }\n",
    );
    let Some((e, k)) = both("ext_authz_grpc_full", &filter, true, &requests) else { return };
    assert_same(&e, &k);
    assert_eq!(k.run.stat("http.ingress.ext_authz.failure_mode_allowed"), 1);
}

#[test]
fn an_authorization_server_that_is_down() {
    let filter = GRPC.replace("    transport_api_version: V3\n", "    status_on_error: { code: 503 }\n");
    let requests = [get("/a", &[])];
    let Some((e, k)) = both("ext_authz_grpc_down", &filter, false, &requests) else { return };
    assert_same(&e, &k);
    assert_eq!(k.run.response(0).status, 503);
}

/// Envoy's two gRPC examples and the security config load in skiff (and in Envoy) unchanged.
#[test]
fn envoys_grpc_examples_and_the_security_config_load() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let files = [
        "configs/envoy-examples/envoyproxy-examples/ext_authz/config/grpc-service/v3.yaml",
        "configs/envoy-examples/envoyproxy-examples/ext_authz/config/opa-service/v3.yaml",
        "configs/security/ext-authz-grpc.yaml",
    ];
    for file in files {
        let yaml = std::fs::read_to_string(format!("{dir}/{file}")).expect("config");
        let (ok, out) = support::filters::validate(&yaml);
        assert!(ok, "{file}: {out}");
        assert!(!out.contains("warning"), "{file}: {out}");
    }
    let Some(bin) = envoy::binary_or_skip("ext_authz_grpc_configs") else { return };
    for file in files {
        let base_id = (std::process::id() % 100_000) * 100 + 98;
        let out = std::process::Command::new(&bin)
            .args(["--mode", "validate", "-c", &format!("{dir}/{file}"), "-l", "error"])
            .args(["--base-id", &base_id.to_string()])
            .output()
            .expect("envoy runs");
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// A gRPC service's cluster must speak HTTP/2: skiff says so at load (Envoy loads it and its
/// calls fail).
#[test]
fn a_grpc_service_on_an_http1_cluster_is_refused() {
    let up = "127.0.0.1:1".parse().expect("address");
    let yaml = ext_authz::config(0, 0, std::path::Path::new("/dev/null"), (up, up), GRPC, ROUTES);
    let (ok, out) = support::filters::validate(&yaml);
    assert!(!ok);
    assert!(
        out.contains(
            ".grpc_service.envoy_grpc.cluster_name: cluster \"authz\" of a gRPC service must speak HTTP/2"
        ),
        "{out}"
    );
}

/// Envoy's `grpc-service` example, its hostnames pointed at loopback servers, runs its check
/// against a real gRPC authorization server: a known token reaches the upstream with the
/// server's `x-current-user`, anything else gets the server's denial.
#[test]
fn envoys_grpc_service_example_runs() {
    let file = "configs/envoy-examples/envoyproxy-examples/ext_authz/config/grpc-service/v3.yaml";
    let example = std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).expect("example");
    let authz = AuthzServer::start();
    let (yaml, _app) = ext_authz::example_on_loopback(&example, "ext_authz-grpc-service", 9001, authz.addr);
    let sk = Skiff::start(&yaml, &[]);
    let addr = sk.listener("listener_0");
    let denied = support::get(addr, "/service");
    assert_eq!((denied.status, denied.text()), (401, "nope".to_string()));
    let allowed =
        support::get_host(addr, "localhost:8000", "/service", &[("authorization", "Bearer token1")]);
    assert_eq!((allowed.status, allowed.text()), (200, "Hello user1 from behind Envoy!".to_string()));
}
