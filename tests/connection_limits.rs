//! The HTTP connection manager's connection limits, `common_http_protocol_options`
//! `max_requests_per_connection` and `max_connection_duration`: the response to the last allowed
//! request says `connection: close` and the connection closes; an idle connection past its
//! duration closes. As Envoy 1.40 does (the parity suite holds the pipelined request limit to
//! Envoy; the duration cases were compared by hand, see README); 0 means no limit.

mod support;

use support::*;

/// One upstream, the connection manager's `common_http_protocol_options` set to `options`, and
/// an admin listener for the stats.
fn config(upstream: std::net::SocketAddr, options: &str) -> String {
    with_admin(&custom_config(
        &[upstream],
        &format!("                common_http_protocol_options: {{ {options} }}\n"),
        "",
        "",
    ))
}

#[test]
fn the_last_allowed_request_is_answered_with_connection_close_then_the_connection_closes() {
    let up = TestUpstream::echo();
    let skiff = Skiff::start(&config(up.addr, "max_requests_per_connection: 2"), &[]);
    let mut c = Client::connect(skiff.listener("main"));
    let first = c.get("/one");
    assert_eq!(first.status, 200);
    assert_eq!(first.header("connection"), None, "the first of two keeps the connection");
    let second = c.get("/two");
    assert_eq!(second.status, 200);
    assert_eq!(second.header("connection"), Some("close"), "the second of two closes it");
    assert!(c.closed(), "skiff closes the connection after the last allowed response");
    let stats = get(skiff.admin(), "/stats").text();
    assert!(
        stats.lines().any(|l| l == "http.ingress.downstream_cx_max_requests_reached: 1"),
        "counted once:\n{stats}"
    );
    // A new connection starts a new count.
    let mut again = Client::connect(skiff.listener("main"));
    assert_eq!(again.get("/three").header("connection"), None);
}

#[test]
fn zero_means_no_limit_and_the_field_is_no_longer_warned_about() {
    let up = TestUpstream::echo();
    let skiff = Skiff::start(&config(up.addr, "max_requests_per_connection: 0"), &[]);
    let mut c = Client::connect(skiff.listener("main"));
    for i in 0..5 {
        let r = c.get(&format!("/{i}"));
        assert_eq!((r.status, r.header("connection")), (200, None), "request {i}");
    }
    assert!(
        !skiff.log().contains("max_requests_per_connection"),
        "no load warning for an enforced field:\n{}",
        skiff.log()
    );
}

#[test]
fn an_idle_connection_closes_at_max_connection_duration() {
    let up = TestUpstream::echo();
    let skiff = Skiff::start(&config(up.addr, "max_connection_duration: 0.4s"), &[]);
    let mut c = Client::connect(skiff.listener("main"));
    let opened = std::time::Instant::now();
    assert_eq!(c.get("/").status, 200);
    assert!(c.closed(), "closed once its lifetime ran out");
    let lived = opened.elapsed();
    assert!(
        lived >= std::time::Duration::from_millis(350) && lived < std::time::Duration::from_secs(3),
        "closed after {lived:?}; the limit is 0.4 s from accept"
    );
    assert_eq!(stat(skiff.admin(), "http.ingress.downstream_cx_max_duration_reached"), Some(1));
}

#[test]
fn a_request_in_flight_at_max_connection_duration_is_answered_then_the_connection_closes() {
    let slow = TestUpstream::start(std::sync::Arc::new(|_: &Seen| {
        std::thread::sleep(std::time::Duration::from_millis(500));
        Reply::ok("slow")
    }));
    let skiff = Skiff::start(&config(slow.addr, "max_connection_duration: 0.2s"), &[]);
    let mut c = Client::connect(skiff.listener("main"));
    let r = c.get("/");
    assert_eq!((r.status, r.text()), (200, "slow".to_string()), "the request in flight completes");
    assert_eq!(r.header("connection"), Some("close"), "its response says it is the last (Envoy 1.40 too)");
    assert!(c.closed(), "and the connection closes after it");
    assert_eq!(stat(skiff.admin(), "http.ingress.downstream_cx_max_duration_reached"), Some(1));
    // A request that begins after the limit is the connection's last: `connection: close`.
    let up = TestUpstream::echo();
    let skiff = Skiff::start(&config(up.addr, "max_connection_duration: 0.3s"), &[]);
    let mut c = Client::connect(skiff.listener("main"));
    std::thread::sleep(std::time::Duration::from_millis(200));
    c.send(b"GET /late HTTP/1.1\r\nHost: test\r\n");
    std::thread::sleep(std::time::Duration::from_millis(250));
    c.send(b"\r\n");
    let late = c.read_response(false).expect("answered");
    assert_eq!((late.status, late.header("connection")), (200, Some("close")));
}
