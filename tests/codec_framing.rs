//! Framing the codec decides for the whole proxy: what a Connection header may not strip, and which
//! request transfer codings are answered 501 (as Envoy 1.40 answers them).
mod support;

use std::time::Duration;
use support::*;

fn setup() -> (TestUpstream, Skiff) {
    let up = TestUpstream::echo();
    let skiff = start_with_driver(&custom_config(&[up.addr], "", "", ""), "auto");
    (up, skiff)
}

#[test]
fn connection_nominating_content_length_does_not_strip_the_framing() {
    let (up, skiff) = setup();
    let addr = skiff.listener("main");
    // Had Content-Length been dropped while "hello" was still forwarded, the upstream would read
    // "hello" as the start of a second request: the smuggling this guards against.
    let raw = b"POST /up HTTP/1.1\r\nHost: x\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello";
    let res = raw_until_close(addr, raw, Duration::from_secs(2));
    assert!(res.text.starts_with("HTTP/1.1 200 "), "{:?}", res.text);
    let seen = up.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].header("content-length"), Some("5"));
    assert_eq!(seen[0].body, b"hello");
}

#[test]
fn connection_nominating_host_is_a_bad_request() {
    let (up, skiff) = setup();
    let res = raw_until_close(
        skiff.listener("main"),
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: host\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(res.text.starts_with("HTTP/1.1 400 "), "{:?}", res.text);
    assert_eq!(up.count(), 0);
}

#[test]
fn request_transfer_codings_other_than_chunked_are_not_implemented() {
    let (up, skiff) = setup();
    let addr = skiff.listener("main");
    for te in ["gzip, chunked", "gzip", "identity", "chunked, chunked"] {
        let raw = format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {te}\r\n\r\n0\r\n\r\n");
        let res = raw_until_close(addr, raw.as_bytes(), Duration::from_secs(5));
        assert!(res.text.starts_with("HTTP/1.1 501 Not Implemented\r\n"), "{te}: {:?}", res.text);
        assert!(res.closed, "{te}: connection left open");
    }
    assert_eq!(up.count(), 0);
}

#[test]
fn response_connection_nominating_content_length_keeps_the_framing() {
    let up = TestUpstream::start(std::sync::Arc::new(|_: &Seen| {
        Reply::Raw(
            b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello".to_vec(),
            true,
        )
    }));
    let skiff = start_with_driver(&custom_config(&[up.addr], "", "", ""), "auto");
    let mut c = Client::connect(skiff.listener("main"));
    let r = c.get("/");
    assert_eq!((r.status, r.header("content-length"), r.text().as_str()), (200, Some("5"), "hello"));
    // The connection is still in step: a second exchange on it works.
    assert_eq!(c.get("/").text(), "hello");
}
