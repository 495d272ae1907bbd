//! `0s` timeouts mean "never" as in Envoy: they are stored as `config::NEVER`, which the request
//! path must be able to arm as a timer without overflowing.
mod support;

use std::time::Duration;
use support::*;

#[test]
fn zero_second_timeouts_serve_requests_and_do_not_expire_at_once() {
    let up = TestUpstream::named("never");
    let hcm = "                request_headers_timeout: 0s\n                common_http_protocol_options: { idle_timeout: 0s }\n";
    let yaml = custom_config(&[up.addr], hcm, "", "").replace("timeout: 2s }", "timeout: 0s }");
    let skiff = Skiff::start(&yaml, &[]);
    let addr = skiff.listener("main");
    let mut c = Client::connect(addr);
    // A head sent in two parts: an already-expired header timer would have answered 408.
    c.send(b"GET / HTTP/1.1\r\n");
    std::thread::sleep(Duration::from_millis(300));
    c.send(b"Host: x\r\n\r\n");
    let r = c.read_response(false).expect("answered");
    assert_eq!((r.status, r.text().as_str()), (200, "never"));
    // An idle keep-alive connection is still usable later.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.get("/").text(), "never");
}
