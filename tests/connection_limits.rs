//! `common_http_protocol_options.max_requests_per_connection` on the HTTP connection manager: the
//! response to the last allowed request says `connection: close` and the connection closes, as
//! Envoy does (the parity suite holds the pipelined case to Envoy); 0 means no limit.

mod support;

use support::*;

fn config(upstream: std::net::SocketAddr, max: u32) -> String {
    let proxy = custom_config(
        &[upstream],
        &format!("                common_http_protocol_options: {{ max_requests_per_connection: {max} }}\n"),
        "",
        "",
    );
    format!("{proxy}admin:\n  address:\n    socket_address: {{ address: 127.0.0.1, port_value: 0 }}\n")
}

#[test]
fn the_last_allowed_request_is_answered_with_connection_close_then_the_connection_closes() {
    let up = TestUpstream::echo();
    let skiff = Skiff::start(&config(up.addr, 2), &[]);
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
    let skiff = Skiff::start(&config(up.addr, 0), &[]);
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
