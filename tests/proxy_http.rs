//! What a client sees through skiff in front of real upstream servers: framing, keep-alive,
//! streaming, header rewriting, concurrency.
mod support;

use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use support::*;

fn proxy(upstream: &TestUpstream) -> Skiff {
    start_with_driver(&simple_config(&[upstream.addr]), "auto")
}

fn chunked(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in body.chunks(chunk) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Answers with the received body's length, so big bodies do not come back.
fn body_len_upstream() -> TestUpstream {
    TestUpstream::start(Arc::new(|s: &Seen| Reply::ok(&s.body.len().to_string())))
}

#[test]
fn get_is_proxied() {
    let up = TestUpstream::named("alpha");
    let skiff = proxy(&up);
    let resp = get(skiff.listener("main"), "/hello?x=1");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "alpha");
    assert_eq!(resp.header("server"), Some("envoy"));
    assert!(resp.header("x-envoy-upstream-service-time").is_some());
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].path, "/hello?x=1");
    assert_eq!(seen[0].header("host"), Some("test"));
}

#[test]
fn keep_alive_reuses_one_upstream_connection() {
    let up = TestUpstream::named("alpha");
    let skiff = proxy(&up);
    let mut c = Client::connect(skiff.listener("main"));
    for i in 0..10 {
        let r = c.get(&format!("/{i}"));
        assert_eq!((r.status, r.text().as_str()), (200, "alpha"));
    }
    assert_eq!(up.count(), 10);
    assert_eq!(
        up.connections.load(Ordering::Relaxed),
        1,
        "all requests of one client on one upstream connection"
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let up = TestUpstream::echo();
    let skiff = proxy(&up);
    let mut c = Client::connect(skiff.listener("main"));
    c.send(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\nGET /three HTTP/1.1\r\nHost: a\r\n\r\n");
    for path in ["/one", "/two", "/three"] {
        let r = c.read_response(false).expect("pipelined response");
        assert_eq!(r.status, 200);
        assert!(r.text().starts_with(&format!("GET {path}\n")), "{}", r.text());
    }
    let r = c.get("/after");
    assert!(r.text().starts_with("GET /after\n"));
}

#[test]
fn post_with_content_length_small_and_one_mebibyte() {
    let up = body_len_upstream();
    let skiff = proxy(&up);
    let mut c = Client::connect(skiff.listener("main"));
    c.send(b"POST /small HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
    let r = c.read_response(false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "5"));

    let big = pattern(1 << 20, 7);
    c.send(format!("POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n", big.len()).as_bytes());
    c.send(&big);
    let r = c.read_response(false).unwrap();
    assert_eq!((r.status, r.text()), (200, big.len().to_string()));
    let seen = up.requests();
    assert_eq!(seen[0].body, b"hello");
    assert!(seen[1].body == big, "1 MiB body arrived changed");
    // Keep-alive still holds after a streamed body.
    assert_eq!(c.get("/x").status, 200);
}

/// Large content-length bodies both ways (past the size skiff splices instead of copying) arrive
/// intact, and nothing after them is consumed: a request pipelined right behind the upload, in the
/// same write, is answered next, and the upstream connection is reused after the download.
#[test]
fn large_bodies_both_ways_stop_exactly_at_their_end() {
    let up = TestUpstream::echo();
    let skiff = proxy(&up);
    let mut c = Client::connect(skiff.listener("main"));
    for (round, len) in [(0u8, 1 << 20), (1, 200_000), (2, 40_000)] {
        let big = pattern(len, round);
        let mut raw =
            format!("POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n", big.len()).into_bytes();
        raw.extend_from_slice(&big);
        raw.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
        c.send(&raw);
        let r = c.read_response(false).expect("response to the upload");
        assert_eq!(r.status, 200);
        assert!(r.body.ends_with(&big), "{len}-byte body came back changed");
        assert!(r.body.starts_with(b"POST /big\n"));
        let next = c.read_response(false).expect("response to the pipelined request");
        assert!(next.text().starts_with("GET /next\n"), "{}", next.text());
    }
    assert!(up.requests().iter().filter(|s| s.method == "POST").all(|s| s.body.len() >= 40_000));
    assert_eq!(up.connections.load(Ordering::Relaxed), 1, "one upstream connection throughout");
}

/// A large response body that stops coming mid-way is still bound by the stream idle timeout: the
/// client gets what arrived, then the connection closes, long before the upstream's stall ends.
#[test]
fn a_large_response_body_that_stalls_is_cut_by_the_stream_idle_timeout() {
    let sent = pattern(300_000, 5);
    let body = sent.clone();
    let up = RawUpstream::start(move |mut s, _| {
        if read_head(&mut s).is_some() {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n");
            let _ = s.write_all(&body);
            std::thread::sleep(Duration::from_secs(5));
        }
    });
    let skiff = start_with_driver(
        &custom_config(&[up.addr], "                stream_idle_timeout: 0.3s\n", "", ""),
        "auto",
    );
    let started = std::time::Instant::now();
    let mut s = std::net::TcpStream::connect(skiff.listener("main")).expect("connect");
    s.write_all(b"GET /stall HTTP/1.1\r\nHost: a\r\n\r\n").expect("write");
    s.set_read_timeout(Some(Duration::from_secs(4))).unwrap();
    let mut got = Vec::new();
    let closed = match std::io::Read::read_to_end(&mut s, &mut got) {
        Ok(_) => true,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    };
    assert!(closed, "the connection stayed open past the idle timeout");
    assert!(started.elapsed() < Duration::from_millis(1800), "closed after {:?}", started.elapsed());
    assert!(got.ends_with(&sent), "the {} bytes that came were not all relayed", sent.len());
}

#[test]
fn chunked_request_bodies_arrive_exactly() {
    let up = body_len_upstream();
    let skiff = proxy(&up);
    let mut c = Client::connect(skiff.listener("main"));
    c.send(b"POST /small HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n");
    let r = c.read_response(false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "11"));

    let big = pattern(700_000, 3);
    c.send(b"POST /big HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    c.send(&chunked(&big, 3000));
    let r = c.read_response(false).unwrap();
    assert_eq!((r.status, r.text()), (200, big.len().to_string()));
    let seen = up.requests();
    assert_eq!(seen[0].body, b"hello world");
    assert_eq!(seen[0].header("transfer-encoding"), Some("chunked"));
    assert!(seen[1].body == big, "large chunked body arrived changed");
    assert_eq!(c.get("/x").status, 200);
}

#[test]
fn chunked_response_is_passed_through() {
    let up = TestUpstream::start(Arc::new(|_: &Seen| {
        Reply::Raw(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
                .to_vec(),
            true,
        )
    }));
    let skiff = proxy(&up);
    let mut c = Client::connect(skiff.listener("main"));
    for _ in 0..3 {
        let r = c.get("/");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        assert_eq!(r.text(), "hello world");
    }
}

#[test]
fn five_mebibyte_response_streams_intact() {
    let body = pattern(5 << 20, 11);
    let b = body.clone();
    let up = TestUpstream::start(Arc::new(move |_: &Seen| Reply::Full {
        status: 200,
        headers: vec![],
        body: b.clone(),
    }));
    let skiff = proxy(&up);
    let mut c = Client::connect(skiff.listener("main"));
    for _ in 0..2 {
        let r = c.get("/big");
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), body.len());
        assert!(r.body == body, "5 MiB body changed on the way");
    }
}

#[test]
fn head_has_no_body_and_keep_alive_continues() {
    let up = TestUpstream::named("some body");
    let skiff = proxy(&up);
    let mut c = Client::connect(skiff.listener("main"));
    c.send(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n");
    let r = c.read_response(true).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("9"));
    let r = c.get("/next");
    assert_eq!((r.status, r.text().as_str()), (200, "some body"));
}

#[test]
fn no_body_statuses_204_and_304() {
    let up = TestUpstream::start(Arc::new(|s: &Seen| {
        let status = if s.path == "/204" { "204 No Content" } else { "304 Not Modified" };
        Reply::Raw(format!("HTTP/1.1 {status}\r\netag: \"x\"\r\n\r\n").into_bytes(), true)
    }));
    let skiff = proxy(&up);
    let mut c = Client::connect(skiff.listener("main"));
    for _ in 0..2 {
        assert_eq!(c.get("/204").status, 204);
        let r = c.get("/304");
        assert_eq!(r.status, 304);
        assert_eq!(r.header("etag"), Some("\"x\""));
    }
    // Nothing stray was left on the connection: a following request still lines up.
    c.send(b"GET /204 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_eq!(c.read_response(false).unwrap().status, 204);
    assert!(c.closed());
}

#[test]
fn close_delimited_upstream_response_reaches_client_whole_then_closes() {
    let body = pattern(300_000, 5);
    let b = body.clone();
    let up = TestUpstream::start(Arc::new(move |_: &Seen| {
        let mut out = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
        out.extend_from_slice(&b);
        Reply::Raw(out, false)
    }));
    let skiff = proxy(&up);
    let mut c = Client::connect(skiff.listener("main"));
    let r = c.get("/");
    assert_eq!(r.status, 200);
    assert!(r.header("content-length").is_none());
    assert!(r.body == body, "close-delimited body changed ({} bytes)", r.body.len());
}

#[test]
fn http10_client_closes_unless_keep_alive() {
    let up = TestUpstream::named("ten");
    let skiff = http10_proxy(&up);
    let addr = skiff.listener("main");
    let mut c = Client::connect(addr);
    c.send(b"GET / HTTP/1.0\r\n\r\n");
    let r = c.read_response(false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "ten"));
    assert!(c.closed(), "HTTP/1.0 without keep-alive must close");

    let mut c = Client::connect(addr);
    for _ in 0..3 {
        c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let r = c.read_response(false).unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "ten"));
        assert!(r.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("keep-alive")));
    }
}

#[test]
fn http10_client_gets_chunked_upstream_body_unchunked() {
    let up = TestUpstream::start(Arc::new(|_: &Seen| {
        Reply::Raw(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
            true,
        )
    }));
    let skiff = http10_proxy(&up);
    let res = raw_until_close(skiff.listener("main"), b"GET / HTTP/1.0\r\n\r\n", Duration::from_secs(10));
    assert!(res.closed);
    // An HTTP/1.0 client is answered in HTTP/1.0, as Envoy does.
    assert!(res.text.starts_with("HTTP/1.0 200"), "{}", res.text);
    assert!(res.text.ends_with("\r\n\r\nhello"), "{}", res.text);
    assert!(!res.text.to_ascii_lowercase().contains("transfer-encoding"), "{}", res.text);
}

#[test]
fn expect_100_continue() {
    let up = TestUpstream::echo();
    let skiff = proxy(&up);
    let mut c = Client::connect(skiff.listener("main"));
    c.send(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    let interim = c.read_response(false).unwrap();
    assert_eq!(interim.status, 100);
    c.send(b"hello");
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.text().ends_with("\n\nhello"), "{}", r.text());
    let seen = up.requests();
    assert_eq!(seen[0].body, b"hello");
    assert!(seen[0].header("expect").is_none(), "Expect must not be forwarded");
    assert_eq!(c.get("/x").status, 200);
}

#[test]
fn hop_by_hop_headers_are_not_forwarded() {
    let up = TestUpstream::echo();
    let skiff = proxy(&up);
    let mut c = Client::connect(skiff.listener("main"));
    c.send(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nTE: gzip\r\n\
Upgrade: websocket\r\nProxy-Connection: keep-alive\r\nX-Hop: secret\r\nX-End-To-End: yes\r\n\r\n",
    );
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 200);
    let seen = &up.requests()[0];
    for name in ["connection", "keep-alive", "te", "upgrade", "proxy-connection", "x-hop"] {
        assert!(seen.header(name).is_none(), "{name} was forwarded: {:?}", seen.headers);
    }
    assert_eq!(seen.header("x-end-to-end"), Some("yes"));
    // As Envoy: `te` goes on reduced to `trailers` when it names exactly that (gRPC needs it).
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\nTE: gzip, trailers\r\n\r\n");
    assert_eq!(c.read_response(false).unwrap().status, 200);
    assert_eq!(up.requests()[1].header("te"), Some("trailers"));
}

#[test]
fn hop_by_hop_response_headers_are_not_returned() {
    let up = TestUpstream::start(Arc::new(|_: &Seen| {
        Reply::Raw(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=3\r\nServer: gunicorn\r\n\r\nok"
                .to_vec(),
            true,
        )
    }));
    let skiff = proxy(&up);
    let r = get(skiff.listener("main"), "/");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    assert!(r.header("x-secret").is_none());
    assert!(r.header("keep-alive").is_none());
    assert_eq!(r.header("server"), Some("envoy"));
}

/// A proxy that takes HTTP/1.0 requests (Envoy answers them 426 unless told to), giving those
/// without Host the host `a` (without one, Envoy answers 400).
fn http10_proxy(upstream: &TestUpstream) -> Skiff {
    let yaml = simple_config(&[upstream.addr]).replace(
        "                stat_prefix: ingress\n",
        "                stat_prefix: ingress\n                http_protocol_options: {accept_http_10: true, default_host_for_http_10: a}\n",
    );
    start_with_driver(&yaml, "auto")
}

/// An edge proxy (`use_remote_address: true`): the peer is the client.
fn edge_proxy(upstream: &TestUpstream) -> Skiff {
    let yaml = simple_config(&[upstream.addr]).replace(
        "                stat_prefix: ingress\n",
        "                stat_prefix: ingress\n                use_remote_address: true\n",
    );
    start_with_driver(&yaml, "auto")
}

#[test]
fn a_sidecar_passes_x_forwarded_for_as_it_came_and_adds_proto_and_request_id() {
    let up = TestUpstream::echo();
    let skiff = proxy(&up);
    let mut c = Client::connect(skiff.listener("main"));
    c.get("/plain");
    c.send(b"GET /chain HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.1.2.3\r\n\r\n");
    c.read_response(false).unwrap();
    let seen = up.requests();
    // Envoy without use_remote_address neither adds nor appends x-forwarded-for.
    assert_eq!(seen[0].header("x-forwarded-for"), None);
    assert_eq!(seen[0].header("x-envoy-external-address"), None);
    assert_eq!(seen[0].header("x-forwarded-proto"), Some("http"));
    assert!(seen[0].header("x-request-id").is_some());
    assert_eq!(seen[1].header("x-forwarded-for"), Some("10.1.2.3"));
}

#[test]
fn forwarding_headers() {
    let up = TestUpstream::echo();
    let skiff = edge_proxy(&up);
    let mut c = Client::connect(skiff.listener("main"));
    c.get("/plain");
    c.send(b"GET /chain HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.1.2.3\r\nX-Request-Id: my-id-42\r\n\r\n");
    c.read_response(false).unwrap();
    c.get("/plain2");
    let seen = up.requests();
    // The client is on loopback: Envoy appends this node's own address, not 127.0.0.1.
    let node = seen[0].header("x-forwarded-for").expect("x-forwarded-for added").to_string();
    assert!(node.parse::<std::net::IpAddr>().is_ok(), "not an address: {node}");
    assert_eq!(seen[0].header("x-envoy-external-address"), Some("127.0.0.1"));
    assert_eq!(seen[0].header("x-forwarded-proto"), Some("http"));
    let id = seen[0].header("x-request-id").expect("x-request-id generated");
    let groups: Vec<usize> = id.split('-').map(str::len).collect();
    assert_eq!(groups, [8, 4, 4, 4, 12], "not a UUID: {id}");
    assert!(id.chars().all(|ch| ch == '-' || ch.is_ascii_hexdigit()), "not a UUID: {id}");
    assert_ne!(seen[2].header("x-request-id"), Some(id), "request ids must differ");
    // Envoy appends with a bare comma, and an edge request's id is this hop's, not the client's.
    assert_eq!(seen[1].header("x-forwarded-for"), Some(format!("10.1.2.3,{node}").as_str()));
    assert_ne!(seen[1].header("x-request-id"), Some("my-id-42"));
}

#[test]
fn several_x_forwarded_for_lines_get_the_client_once() {
    let up = TestUpstream::echo();
    let skiff = edge_proxy(&up);
    let mut c = Client::connect(skiff.listener("main"));
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-For: 10.0.0.2\r\n\r\n");
    assert_eq!(c.read_response(false).unwrap().status, 200);
    let xff: Vec<String> = up.requests()[0]
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for"))
        .map(|(_, v)| v.clone())
        .collect();
    let joined = xff.join(", ");
    let appended = joined.strip_prefix("10.0.0.1, 10.0.0.2,").unwrap_or_else(|| panic!("{joined}"));
    assert!(appended.parse::<std::net::IpAddr>().is_ok(), "{joined}");
}

#[test]
fn fifty_concurrent_clients_twenty_requests_each() {
    let up = TestUpstream::echo();
    let skiff = proxy(&up);
    let addr = skiff.listener("main");
    let threads: Vec<_> = (0..50)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                for i in 0..20 {
                    let path = format!("/c{t}/r{i}");
                    let r = c.get(&path);
                    assert_eq!(r.status, 200);
                    assert!(r.text().starts_with(&format!("GET {path}\n")), "crossed answers: {}", r.text());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    assert_eq!(up.count(), 1000);
}

/// Envoy 1.40 takes a client's FIN before the response as the client leaving: it resets the
/// upstream request, answers nothing and counts `downstream_cx_destroy_remote_active_rq` (checked
/// with the real Envoy; skiff did answer before).
#[test]
fn client_half_close_after_request_is_the_client_leaving_as_in_envoy() {
    let up = TestUpstream::start(Arc::new(|_: &Seen| {
        std::thread::sleep(Duration::from_millis(300));
        Reply::ok("late")
    }));
    let skiff = proxy(&up);
    let mut s = std::net::TcpStream::connect(skiff.listener("main")).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let res = read_until_close(&mut s, Duration::from_secs(10));
    assert_eq!(res.text, "", "no response after the client left");
}

#[test]
fn absolute_form_target_authority_replaces_host() {
    let up = TestUpstream::echo();
    let skiff = proxy(&up);
    let mut c = Client::connect(skiff.listener("main"));
    c.send(b"GET http://routed.example/abs?q=1 HTTP/1.1\r\nHost: other.example\r\n\r\n");
    assert_eq!(c.read_response(false).unwrap().status, 200);
    let seen = &up.requests()[0];
    assert_eq!(seen.path, "/abs?q=1");
    assert_eq!(seen.header("host"), Some("routed.example"));
}

#[test]
fn http10_upstream_and_connection_close_responses_are_not_pooled() {
    let up = TestUpstream::start(Arc::new(|s: &Seen| {
        let raw: &[u8] = if s.path == "/ten" {
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
        };
        Reply::Raw(raw.to_vec(), false)
    }));
    let skiff = proxy(&up);
    let mut c = Client::connect(skiff.listener("main"));
    for path in ["/ten", "/close", "/ten", "/close"] {
        let r = c.get(path);
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
        // The client's own connection stays open: the upstream's close is hop-by-hop.
        assert!(r.header("connection").is_none(), "{:?}", r.headers);
    }
    assert_eq!(up.connections.load(Ordering::Relaxed), 4);
}

#[test]
fn interim_upstream_responses_are_skipped() {
    let up = TestUpstream::start(Arc::new(|_: &Seen| {
        Reply::Raw(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal"
                .to_vec(),
            true,
        )
    }));
    let skiff = proxy(&up);
    let mut c = Client::connect(skiff.listener("main"));
    for _ in 0..2 {
        let r = c.get("/");
        assert_eq!((r.status, r.text().as_str()), (200, "final"));
    }
}
