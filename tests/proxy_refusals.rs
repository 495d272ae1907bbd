//! Malformed or ambiguous requests: the client gets 400 (431, 408) and a closed connection, the
//! upstream never sees a byte of them, and the proxy keeps serving.
mod support;

use std::io::Write;
use std::time::{Duration, Instant};
use support::*;

struct Setup {
    up: TestUpstream,
    skiff: Skiff,
}

fn setup() -> Setup {
    let up = TestUpstream::echo();
    let yaml = custom_config(&[up.addr], "                request_headers_timeout: 1s\n", "", "");
    let skiff = start_with_driver(&yaml, "auto");
    Setup { up, skiff }
}

/// Sends `raw`, expects `status` and a close, checks the upstream saw nothing and a good request
/// still works.
fn refused(s: &Setup, raw: &[u8], status: u16) {
    let addr = s.skiff.listener("main");
    let res = raw_until_close(addr, raw, Duration::from_secs(10));
    let what: String = String::from_utf8_lossy(raw).chars().take(120).collect();
    assert!(res.text.starts_with(&format!("HTTP/1.1 {status} ")), "{what:?} got {:?}", res.text);
    assert!(res.text.contains("connection: close"), "{what:?} got {:?}", res.text);
    assert!(res.closed, "{what:?}: connection left open");
    assert_eq!(res.text.matches("HTTP/1.1").count(), 1, "{what:?}: more than one answer: {:?}", res.text);
    assert_eq!(s.up.count(), 0, "{what:?} reached the upstream: {:?}", s.up.requests());
    let ok = get(addr, "/good");
    assert_eq!(ok.status, 200);
    // Forget the good request so the next check starts from zero.
    s.up.seen.lock().unwrap().clear();
}

#[test]
fn content_length_with_transfer_encoding() {
    let s = setup();
    refused(
        &s,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    );
    refused(
        &s,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn bad_content_lengths() {
    let s = setup();
    refused(&s, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400);
    refused(&s, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400);
    refused(&s, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello", 400);
    refused(&s, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n", 400);
    refused(&s, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400);
    refused(&s, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello", 400);
    refused(&s, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello", 400);
    refused(&s, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400);
}

#[test]
fn bad_transfer_encodings() {
    let s = setup();
    // Envoy 1.40 answers any coding list but exactly `chunked` with 501 Not Implemented.
    refused(&s, b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabc", 501);
    refused(&s, b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 501);
    refused(&s, b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501);
    refused(&s, b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 501);
    refused(&s, b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400);
}

#[test]
fn bad_chunk_size() {
    let s = setup();
    refused(
        &s,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        400,
    );
    refused(
        &s,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
        400,
    );
    refused(
        &s,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
        400,
    );
}

#[test]
fn bad_chunk_size_arriving_after_the_head_is_not_forwarded_as_a_request() {
    // The head goes upstream before the broken chunk arrives; what must never happen is that the
    // bytes after it are taken for a request, or that the connection survives.
    let s = setup();
    let addr = s.skiff.listener("main");
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.write_all(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let _ = c.write_all(b"zz\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n");
    let res = read_until_close(&mut c, Duration::from_secs(10));
    assert!(res.closed, "connection left open after broken chunked framing: {:?}", res.text);
    assert!(!res.text.contains("200"), "{:?}", res.text);
    assert!(s.up.requests().iter().all(|r| r.path != "/smuggled"));
    assert_eq!(get(addr, "/good").status, 200);
}

#[test]
fn malformed_lines() {
    let s = setup();
    // obs-fold
    refused(&s, b"GET / HTTP/1.1\r\nHost: a\r\nX-A: one\r\n  two\r\n\r\n", 400);
    // bare LF line endings
    refused(&s, b"GET / HTTP/1.1\nHost: a\n\n", 400);
    refused(&s, b"GET / HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n", 400);
    // NUL and other control bytes in a value
    refused(&s, b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n", 400);
    refused(&s, b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\x01c\r\n\r\n", 400);
    refused(&s, b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n", 400);
    // whitespace before the colon
    refused(&s, b"GET / HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n", 400);
    refused(&s, b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400);
    // invalid method, version
    refused(&s, b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    refused(&s, b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 400);
    refused(&s, b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 400);
    refused(&s, b"GET / FOO/1.1\r\nHost: a\r\n\r\n", 400);
    // HTTP/1.1 without Host, or with two
    refused(&s, b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n", 400);
    refused(&s, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
    // bad request targets
    refused(&s, b"GET nopath HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    refused(&s, b"GET http://user@a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400);
}

#[test]
fn oversize_heads_get_431() {
    let s = setup();
    let mut big = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 70 * 1024));
    big.extend_from_slice(b"\r\n\r\n");
    refused(&s, &big, 431);

    let mut many = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..101 {
        many.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    refused(&s, &many, 431);

    // A 58 KiB head, under Envoy's default 60 KiB limit, arriving in several reads, still passes.
    let mut large = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-Large: ".to_vec();
    large.extend(std::iter::repeat_n(b'b', 58 * 1024));
    large.extend_from_slice(b"\r\n\r\n");
    let res = raw_until_close(s.skiff.listener("main"), &large, Duration::from_secs(10));
    assert!(res.text.starts_with("HTTP/1.1 200"), "{:?}", &res.text[..res.text.len().min(200)]);
    assert_eq!(s.up.requests()[0].header("x-large").map(str::len), Some(58 * 1024));
    s.up.seen.lock().unwrap().clear();

    // Exactly at the limit of 100 headers still passes.
    let mut hundred = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    // Host + 98 + Connection = 100 header lines.
    for i in 0..98 {
        hundred.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    hundred.extend_from_slice(b"Connection: close\r\n\r\n");
    let res = raw_until_close(s.skiff.listener("main"), &hundred, Duration::from_secs(10));
    assert!(res.text.starts_with("HTTP/1.1 200"), "{:?}", &res.text[..res.text.len().min(200)]);
}

#[test]
fn partial_head_then_silence_gets_408() {
    let s = setup();
    let addr = s.skiff.listener("main");
    let started = Instant::now();
    let res = raw_until_close(addr, b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ", Duration::from_secs(10));
    let took = started.elapsed();
    assert!(res.text.starts_with("HTTP/1.1 408 "), "{:?}", res.text);
    assert!(res.closed);
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(s.up.count(), 0);
    assert_eq!(get(addr, "/good").status, 200);
}

#[test]
fn head_dripped_byte_by_byte_is_still_cut_off_by_request_headers_timeout() {
    let s = setup();
    let addr = s.skiff.listener("main");
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    let started = Instant::now();
    let mut got_408 = false;
    for b in b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
        if c.write_all(&[*b]).is_err() {
            got_408 = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        if started.elapsed() > Duration::from_secs(6) {
            break;
        }
    }
    let res = read_until_close(&mut c, Duration::from_secs(5));
    assert!(got_408 || res.closed, "slow head kept the connection open for {:?}", started.elapsed());
    assert!(res.text.starts_with("HTTP/1.1 408 ") || res.text.is_empty(), "{:?}", res.text);
    assert!(started.elapsed() < Duration::from_secs(6));
    assert_eq!(s.up.count(), 0);
}

#[test]
fn smuggled_bytes_after_conflicting_framing_never_become_a_request() {
    let s = setup();
    // CL.TE: a proxy reading Content-Length would forward "0\r\n\r\n" as body and the rest as a
    // second request; TE.CL the other way round. Both are refused whole.
    refused(
        &s,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        400,
    );
    refused(
        &s,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        400,
    );
    // A good request pipelined before the ambiguous one is answered; the ambiguous one and what
    // follows it are not forwarded.
    let addr = s.skiff.listener("main");
    let res = raw_until_close(
        addr,
        b"GET /first HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
        Duration::from_secs(10),
    );
    assert!(res.text.starts_with("HTTP/1.1 200"), "{:?}", res.text);
    assert!(res.text.contains("HTTP/1.1 400"), "{:?}", res.text);
    assert!(res.closed);
    let paths: Vec<String> = s.up.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/first"]);
}

#[test]
fn body_bytes_are_never_parsed_as_a_request() {
    // A Content-Length body that looks like a request stays a body.
    let s = setup();
    let addr = s.skiff.listener("main");
    let inner = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut c = Client::connect(addr);
    c.send(format!("POST /outer HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n", inner.len()).as_bytes());
    c.send(inner);
    assert_eq!(c.read_response(false).unwrap().status, 200);
    assert_eq!(c.get("/next").status, 200);
    let paths: Vec<String> = s.up.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/outer", "/next"]);
}
