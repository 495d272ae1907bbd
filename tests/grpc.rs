//! gRPC end to end: a real grpcio client and server (`tests/support/grpc_echo.py`) through the
//! shipped `configs/protocols/grpc.yaml` (HTTP/2 from the client, HTTP/2 to the server): unary,
//! server-streaming and bidi-streaming calls (all at once, and interactive: full duplex), a call failing with a status and trailing metadata,
//! an unknown method, and the server gone (the proxy's own trailers-only UNAVAILABLE). What the
//! client sees through the proxy must be what it sees talking to the server directly (but the
//! proxy's own answer), and the access log must say what each call was.
//!
//! The real Envoy 1.40 and skiff run the same config and traffic, and what the client sees through
//! each must be equal; so must what an HTTP/1.1 client gets from the same config. Envoy and grpcio
//! are found on PATH; without them these tests fail under CI and skip elsewhere.

mod support;

#[path = "support/envoy.rs"]
mod envoy;
#[path = "support/grpc.rs"]
mod grpc_support;

use grpc_support::{call_all, Call, EchoServer};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use support::{dead_port, raw_until_close, scratch_dir, Skiff};

/// The calls as the client sees them talking straight to the server.
fn direct(server: SocketAddr) -> Vec<Call> {
    call_all(server)
}

/// The metadata a proxy adds to what the server sent: its response headers, which a client of a
/// trailers-only answer (a failed call) reads as trailing metadata.
const PROXY_HEADERS: &[&str] = &["date", "server", "x-envoy-upstream-service-time"];

/// `calls` without the proxy's own metadata: what the server said.
fn from_server(calls: &[Call]) -> Vec<Call> {
    let keep = |m: &Vec<(String, String)>| {
        m.iter().filter(|(k, _)| !PROXY_HEADERS.contains(&k.as_str())).cloned().collect::<Vec<_>>()
    };
    calls
        .iter()
        .map(|c| Call { trailing: keep(&c.trailing), initial: keep(&c.initial), ..c.clone() })
        .collect()
}

/// `calls` with the values that change from run to run (the date, the service time) masked.
fn masked(calls: Vec<Call>) -> Vec<Call> {
    let mask = |m: Vec<(String, String)>| {
        m.into_iter()
            .map(|(k, v)| {
                if matches!(k.as_str(), "date" | "x-envoy-upstream-service-time") {
                    (k, "*".into())
                } else {
                    (k, v)
                }
            })
            .collect()
    };
    calls
        .into_iter()
        .map(|c| {
            let mut initial: Vec<(String, String)> = mask(c.initial);
            // The proxy adds the service time only when the request was complete as the response
            // head came (Envoy's router rule). The all-at-once bidi call races the client's
            // half-close against the server's first reply, on either proxy; the ping-pong call's
            // head always comes first, so it never has one.
            if c.call == "bidi" {
                initial.retain(|(k, _)| k != "x-envoy-upstream-service-time");
            }
            Call { trailing: mask(c.trailing), initial, ..c }
        })
        .collect()
}

/// The access log once it has `lines` lines (or what is there after 5 s), sorted.
fn log_lines(path: &Path, lines: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut got: Vec<String> = text.lines().map(str::to_string).collect();
        if got.len() >= lines || Instant::now() > deadline {
            got.sort();
            return got;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What one proxy showed for the calls: what the client saw with the server up, then with it
/// gone, and the access log.
#[derive(Debug, PartialEq)]
struct Run {
    calls: Vec<Call>,
    server_gone: Vec<Call>,
    log: Vec<String>,
}

/// Drives the calls through `listener`; `log` is the proxy's access log file. The server is
/// stopped half-way: `stop` drops it.
fn drive(listener: SocketAddr, log: &Path, stop: impl FnOnce()) -> Run {
    let calls = masked(call_all(listener));
    stop();
    let server_gone = masked(call_all(listener));
    let lines = calls.len() + server_gone.len();
    Run { calls, server_gone, log: log_lines(log, lines) }
}

fn through_envoy(bin: &Path) -> (Vec<Call>, Run) {
    let dir = scratch_dir("grpc-envoy");
    let log = dir.join("access.log");
    let server = EchoServer::start();
    let expected = direct(server.addr);
    let e =
        envoy::Envoy::start(bin, &dir, |port, admin| grpc_support::config(port, admin, server.addr, &log));
    let run = drive(e.listener, &log, || drop(server));
    drop(e);
    let _ = std::fs::remove_dir_all(&dir);
    (expected, run)
}

fn through_skiff() -> Run {
    let dir = scratch_dir("grpc-skiff");
    let log = dir.join("access.log");
    let server = EchoServer::start();
    let sk = Skiff::start(&grpc_support::config(0, 0, server.addr, &log), &[]);
    let run = drive(sk.listener("grpc_ingress"), &log, || drop(server));
    drop(sk);
    let _ = std::fs::remove_dir_all(&dir);
    run
}

/// The proxy's own answer with the server gone: UNAVAILABLE, its reason in the details.
fn assert_unavailable(gone: &[Call]) {
    assert_eq!(gone.len(), 6, "{gone:#?}");
    for c in gone {
        assert_eq!(c.code, "UNAVAILABLE", "{c:#?}");
        assert!(c.details.starts_with("upstream connect error"), "{c:#?}");
        assert!(
            c.messages.is_empty() && from_server(std::slice::from_ref(c))[0].trailing.is_empty(),
            "{c:#?}"
        );
    }
}

#[test]
fn grpc_calls_through_the_proxy_are_what_the_server_says() {
    if !grpc_support::grpcio_or_skip("grpc_calls_through_the_proxy") {
        return;
    }
    let Some(bin) = envoy::binary_or_skip("grpc_calls_through_the_proxy") else { return };
    let (expected, e) = through_envoy(&bin);
    // The service as it is: every kind of call, a status with trailing metadata, an unknown method.
    let by_name = |calls: &[Call], name: &str| calls.iter().find(|c| c.call == name).cloned();
    let unary = by_name(&expected, "unary").expect("unary");
    assert_eq!((unary.messages.as_slice(), unary.code.as_str()), (&["hello".to_string()][..], "OK"));
    assert_eq!(unary.trailing, [("x-echo-trailer".to_string(), "unary".to_string())]);
    assert_eq!(by_name(&expected, "server_stream").expect("stream").messages, ["tick-0", "tick-1", "tick-2"]);
    assert_eq!(by_name(&expected, "bidi").expect("bidi").messages, ["A", "BB", "CCC"]);
    // Interactive: the proxy must move both directions at once.
    assert_eq!(by_name(&expected, "pingpong").expect("pingpong").messages, ["ONE", "TWO", "THREE"]);
    let fail = by_name(&expected, "fail").expect("fail");
    assert_eq!((fail.code.as_str(), fail.details.as_str()), ("FAILED_PRECONDITION", "failed on purpose"));
    assert_eq!(fail.trailing, [("x-fail-reason".to_string(), "precondition".to_string())]);
    assert_eq!(by_name(&expected, "unknown_method").expect("unknown").code, "UNIMPLEMENTED");

    // Through Envoy: the same, and with the server gone its own trailers-only UNAVAILABLE.
    assert_eq!(from_server(&e.calls), expected, "through envoy");
    // A failed call's trailers-only answer carries the proxy's response headers too.
    let failed = by_name(&e.calls, "fail").expect("fail through envoy");
    assert!(failed.trailing.contains(&("server".to_string(), "envoy".to_string())), "{failed:#?}");
    assert_unavailable(&e.server_gone);
    let ok = "HTTP/2 200 - grpc_echo via_upstream";
    let refused = "HTTP/2 200 UF grpc_echo upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}";
    for line in [
        format!("POST /test.Echo/Unary {ok}"),
        format!("POST /test.Echo/ServerStream {ok}"),
        format!("POST /test.Echo/Bidi {ok}"),
        format!("POST /test.Echo/Fail {ok}"),
        format!("POST /test.Echo/Missing {ok}"),
        format!("POST /test.Echo/Unary {refused}"),
    ] {
        assert!(e.log.contains(&line), "{line:?} not in envoy's log {:#?}", e.log);
    }

    let k = through_skiff();
    assert_eq!(k, e, "skiff (left) against envoy (right)");
}

/// What an HTTP/1.1 client gets from the same config on both proxies: a gRPC request with the
/// server down is the trailers-only UNAVAILABLE, anything not gRPC the route's plain 404.
#[test]
fn http1_clients_get_the_same_answers_from_the_grpc_config() {
    let Some(bin) = envoy::binary_or_skip("http1_clients_grpc_config") else { return };
    let gone = dead_port();
    let requests = [
        "POST /test.Echo/Unary HTTP/1.1\r\nHost: x\r\ncontent-type: application/grpc\r\nte: trailers\r\n\
         connection: close\r\ncontent-length: 5\r\n\r\n\0\0\0\0\0",
        "GET /test.Echo/Unary HTTP/1.1\r\nHost: x\r\nconnection: close\r\n\r\n",
    ];
    let answers = |listener: SocketAddr| -> Vec<String> {
        requests
            .iter()
            .map(|r| {
                let text = raw_until_close(listener, r.as_bytes(), Duration::from_secs(5)).text;
                text.split("\r\n").filter(|l| !l.starts_with("date: ")).collect::<Vec<_>>().join("\n")
            })
            .collect()
    };
    let dir = scratch_dir("grpc-http1");
    let (elog, klog) = (dir.join("envoy.log"), dir.join("skiff.log"));
    let e = envoy::Envoy::start(&bin, &dir, |port, admin| grpc_support::config(port, admin, gone, &elog));
    let sk = Skiff::start(&grpc_support::config(0, 0, gone, &klog), &[]);
    let (from_envoy, from_skiff) = (answers(e.listener), answers(sk.listener("grpc_ingress")));
    let (envoy_log, skiff_log) = (log_lines(&elog, 2), log_lines(&klog, 2));
    drop((e, sk));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(from_skiff, from_envoy);
    assert_eq!(skiff_log, envoy_log);
    assert!(
        from_skiff[0].contains("grpc-status: 14\ngrpc-message: upstream connect error"),
        "{from_skiff:?}"
    );
    assert!(from_skiff[1].starts_with("HTTP/1.1 404 ") && from_skiff[1].ends_with("gRPC only\n"));
}
