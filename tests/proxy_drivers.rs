//! The same representative behaviour on both io drivers: io_uring and epoll.
mod support;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

fn representative(driver: &str) {
    let up = TestUpstream::start(Arc::new(|s: &Seen| {
        let mut body = format!("{} {} {}\n", s.method, s.path, s.body.len()).into_bytes();
        body.extend_from_slice(&s.body);
        Reply::Full { status: 200, headers: vec![], body }
    }));
    let yaml = two_cluster_config(&[up.addr], up.addr, "", "").replace(
        "stat_prefix: ingress\n",
        "stat_prefix: ingress\n                request_headers_timeout: 1s\n",
    );
    let dead = dead_port();
    let yaml = yaml.replacen(
        "                        - match: { prefix: \"/good\" }\n",
        "                        - match: { prefix: \"/dead\" }\n                          route: { cluster: dead, timeout: 2s }\n                        - match: { prefix: \"/good\" }\n",
        1,
    ) + &format!(
        "    - name: dead\n      connect_timeout: 0.5s\n      type: STATIC\n      load_assignment:\n        cluster_name: dead\n        endpoints:\n          - lb_endpoints:\n              - endpoint:\n                  address:\n                    socket_address: {{ address: 127.0.0.1, port_value: {} }}\n",
        dead.port()
    );
    let skiff = start_with_driver(&yaml, driver);
    assert!(skiff.log().contains(if driver == "epoll" { "epoll" } else { "io_uring" }), "driver not in log");
    let addr = skiff.listener("main");
    let mut c = Client::connect(addr);

    // GET
    let r = c.get("/a");
    assert_eq!((r.status, r.text().as_str()), (200, "GET /a 0\n"), "{driver}");
    // POST with a Content-Length body, 256 KiB so it streams
    let big = pattern(256 * 1024, 1);
    c.send(format!("POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n", big.len()).as_bytes());
    c.send(&big);
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.ends_with(&big) && r.text().starts_with("POST /p 262144\n"), "{driver}");
    // chunked request body
    c.send(b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n");
    let r = c.read_response(false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "POST /c 7\nabcdefg"), "{driver}");
    // pipelining
    c.send(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\n\r\n");
    for i in 1..=3 {
        let r = c.read_response(false).unwrap();
        assert_eq!(r.text(), format!("GET /{i} 0\n"), "{driver}");
    }
    // a head that arrives byte by byte
    for b in b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n" {
        c.send(&[*b]);
        c.stream().flush().unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(c.read_response(false).unwrap().text(), "GET /slow 0\n", "{driver}");
    // connect refused
    let r = c.get("/dead");
    assert_eq!(r.status, 503, "{driver}");
    assert!(r.text().starts_with("upstream connect error or disconnect/reset before headers"));
    // a refusal
    let res = raw_until_close(
        addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        Duration::from_secs(10),
    );
    assert!(res.text.starts_with("HTTP/1.1 400 ") && res.closed, "{driver}: {:?}", res.text);
    // a head cut off by request_headers_timeout closes the connection
    let started = Instant::now();
    let res = raw_until_close(addr, b"GET / HTTP/1.1\r\nHo", Duration::from_secs(10));
    assert!(res.text.starts_with("HTTP/1.1 408 ") && res.closed, "{driver}: {:?}", res.text);
    assert!(started.elapsed() < Duration::from_secs(5));
    // and it still serves
    assert_eq!(get(addr, "/good").status, 200);
    assert_eq!(c.get("/after").status, 200);
}

#[test]
fn representative_behaviour_on_epoll() {
    representative("epoll");
}

#[test]
fn representative_behaviour_on_io_uring() {
    representative("uring");
}
