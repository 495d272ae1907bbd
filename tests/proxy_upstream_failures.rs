//! Upstream failures are answers, not hangs: 503 on connect failure/timeout or no endpoints, 502 on a
//! broken response, 504 on the route timeout; retries where the route allows; and the proxy keeps
//! serving afterwards.
mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

const CONNECT_ERROR: &str = "upstream connect error or disconnect/reset before headers";

fn start(yaml: &str) -> Skiff {
    start_with_driver(yaml, "auto")
}

/// The `/good` route still answers.
fn still_serves(addr: SocketAddr) {
    let r = get(addr, "/good");
    assert_eq!((r.status, r.text().as_str()), (200, "good"));
}

#[test]
fn connect_refused_is_503_quickly() {
    let good = TestUpstream::named("good");
    let skiff = start(&two_cluster_config(&[dead_port()], good.addr, "", ""));
    let addr = skiff.listener("main");
    let mut c = Client::connect(addr);
    for _ in 0..3 {
        let started = Instant::now();
        let r = c.get("/x");
        assert_eq!(r.status, 503);
        assert!(r.text().starts_with(CONNECT_ERROR), "{}", r.text());
        assert!(started.elapsed() < Duration::from_millis(400), "took {:?}", started.elapsed());
    }
    // A body-less request keeps its connection after a local 503.
    assert_eq!(c.get("/good").status, 200);
    still_serves(addr);
}

/// A loopback listener whose accept queue is full, so further SYNs are dropped and connects hang.
/// None when this kernel does not behave that way.
fn blackhole() -> Option<(socket2::Socket, Vec<TcpStream>, SocketAddr)> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).ok()?;
    sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().ok()?.into()).ok()?;
    sock.listen(0).ok()?;
    let addr = sock.local_addr().ok()?.as_socket()?;
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(s) => fillers.push(s),
            // The queue is full: this is what skiff's connect will run into.
            Err(_) => return Some((sock, fillers, addr)),
        }
    }
    None
}

#[test]
fn connect_timeout_is_503_after_connect_timeout() {
    let Some((_sock, _fillers, hole)) = blackhole() else {
        eprintln!("SKIPPED: a full accept queue does not make loopback connects hang on this kernel");
        return;
    };
    let good = TestUpstream::named("good");
    let skiff = start(&two_cluster_config(&[hole], good.addr, "", ""));
    let addr = skiff.listener("main");
    let started = Instant::now();
    let r = get(addr, "/x");
    let took = started.elapsed();
    assert_eq!(r.status, 503);
    assert!(r.text().starts_with(CONNECT_ERROR), "{}", r.text());
    assert!(r.text().contains("timeout"), "{}", r.text());
    assert!(took >= Duration::from_millis(450) && took < Duration::from_millis(1800), "took {took:?}");
    still_serves(addr);
}

#[test]
fn upstream_closing_before_the_head_is_503_as_in_envoy() {
    let up = TestUpstream::start(Arc::new(|_: &Seen| Reply::Close));
    let good = TestUpstream::named("good");
    let skiff = start(&two_cluster_config(&[up.addr], good.addr, "", ""));
    let addr = skiff.listener("main");
    let r = get(addr, "/x");
    assert_eq!(r.status, 503);
    assert!(r.text().starts_with(CONNECT_ERROR), "{}", r.text());
    assert_eq!(up.count(), 1, "a request that may have reached the application is not retried");
    still_serves(addr);
}

#[test]
fn garbage_response_head_is_502() {
    let up =
        TestUpstream::start(Arc::new(|_: &Seen| Reply::Raw(b"SSH-2.0-OpenSSH_9.6\r\n\r\n".to_vec(), false)));
    let bad_cl = TestUpstream::start(Arc::new(|_: &Seen| {
        Reply::Raw(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec(), false)
    }));
    let good = TestUpstream::named("good");
    for bad in [up.addr, bad_cl.addr] {
        let skiff = start(&two_cluster_config(&[bad], good.addr, "", ""));
        let addr = skiff.listener("main");
        let r = get(addr, "/x");
        assert_eq!(r.status, 502, "{}", r.text());
        still_serves(addr);
    }
}

#[test]
fn hanging_upstream_is_504_after_the_route_timeout() {
    let up = TestUpstream::start(Arc::new(|_: &Seen| Reply::Hang(Duration::from_secs(8))));
    let good = TestUpstream::named("good");
    let skiff = start(&two_cluster_config(&[up.addr], good.addr, "", ""));
    let addr = skiff.listener("main");
    let started = Instant::now();
    let r = get(addr, "/x");
    let took = started.elapsed();
    assert_eq!(r.status, 504);
    assert_eq!(r.text(), "upstream request timeout");
    assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(4), "took {took:?}");
    still_serves(addr);
}

#[test]
fn retry_on_connect_failure_skips_a_dead_endpoint() {
    let up = TestUpstream::named("alive");
    let skiff = start(&custom_config(
        &[dead_port(), up.addr],
        "",
        ", retry_policy: { retry_on: connect-failure, num_retries: 3 }",
        "",
    ));
    let addr = skiff.listener("main");
    for i in 0..10 {
        let r = get(addr, &format!("/{i}"));
        assert_eq!((r.status, r.text().as_str()), (200, "alive"), "request {i}");
    }
}

#[test]
fn retry_on_5xx_recovers_from_one_failure() {
    // Every other attempt fails: each request fails once, then succeeds on its retry.
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let up = TestUpstream::start(Arc::new(move |s: &Seen| {
        if c.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
            Reply::Full { status: 503, headers: vec![], body: b"busy".to_vec() }
        } else {
            Reply::ok(&format!("lucky {}", String::from_utf8_lossy(&s.body)))
        }
    }));
    let skiff =
        start(&custom_config(&[up.addr], "", ", retry_policy: { retry_on: 5xx, num_retries: 1 }", ""));
    let mut c = Client::connect(skiff.listener("main"));
    let r = c.get("/x");
    assert_eq!((r.status, r.text().as_str()), (200, "lucky "));
    assert_eq!(up.count(), 2);
    // A POST whose body came with its head is replayed whole.
    c.send(b"POST /y HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
    let r = c.read_response(false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "lucky hello"));
    let seen = up.requests();
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[2].body, b"hello");
    assert_eq!(seen[3].body, b"hello");
}

#[test]
fn without_retry_policy_a_5xx_is_passed_through() {
    let up = TestUpstream::start(Arc::new(|_: &Seen| Reply::Full {
        status: 503,
        headers: vec![],
        body: b"busy".to_vec(),
    }));
    let skiff = start(&simple_config(&[up.addr]));
    let r = get(skiff.listener("main"), "/x");
    assert_eq!((r.status, r.text().as_str()), (503, "busy"));
    assert_eq!(up.count(), 1);
}

#[test]
fn pooled_connection_closed_by_upstream_is_replaced_transparently() {
    // Answers one request per connection with keep-alive framing, then closes 100 ms later: the
    // pooled connection is dead by the time the next request wants it.
    let up = RawUpstream::start(|mut s, _| {
        if read_head(&mut s).is_some() {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let skiff = start(&simple_config(&[up.addr]));
    let mut c = Client::connect(skiff.listener("main"));
    for i in 0..4 {
        let r = c.get(&format!("/{i}"));
        assert_eq!((r.status, r.text().as_str()), (200, "ok"), "request {i}");
        let seen = up.connections.load(Ordering::Relaxed);
        // Wait until the upstream has closed that connection (plus a margin for skiff to see FIN).
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(seen, i + 1);
    }
}

#[test]
fn pooled_connection_closed_by_upstream_with_post_body_is_replaced() {
    let up = echo_one_request_then_close();
    let skiff = start(&simple_config(&[up.addr]));
    let mut c = Client::connect(skiff.listener("main"));
    for i in 0..3 {
        c.send(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
        let r = c.read_response(false).unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "hello"), "request {i}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn cluster_without_endpoints_is_503_no_healthy_upstream() {
    let good = TestUpstream::named("good");
    let yaml = two_cluster_config(&[], good.addr, "", "");
    let skiff = match Skiff::try_start(&yaml, &["--concurrency", "2"]) {
        Ok(s) => s,
        Err(log) => panic!("a STATIC cluster with no endpoints should be accepted:\n{log}"),
    };
    let addr = skiff.listener("main");
    let mut c = Client::connect(addr);
    let r = c.get("/x");
    assert_eq!((r.status, r.text().as_str()), (503, "no healthy upstream"));
    assert_eq!(c.get("/good").status, 200);
}

#[test]
fn response_head_split_across_reads_is_parsed() {
    let up = RawUpstream::start(|mut s, _| {
        while read_head(&mut s).is_some() {
            for part in
                [&b"HTTP/1.1 200 OK\r\nContent-Le"[..], b"ngth: 11\r\nX-A: b\r", b"\n\r\nhello", b" world"]
            {
                if s.write_all(part).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(30));
            }
        }
    });
    let skiff = start(&simple_config(&[up.addr]));
    let mut c = Client::connect(skiff.listener("main"));
    for _ in 0..2 {
        let r = c.get("/");
        assert_eq!((r.status, r.text().as_str()), (200, "hello world"));
        assert_eq!(r.header("x-a"), Some("b"));
    }
}

#[test]
fn chunked_response_with_framing_split_across_reads() {
    let up = RawUpstream::start(|mut s, _| {
        while read_head(&mut s).is_some() {
            let parts: [&[u8]; 6] = [
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"1",
                b"0\r\n0123456789abcdef\r",
                b"\n5\r\nhel",
                b"lo\r\n0\r",
                b"\n\r\n",
            ];
            for part in parts {
                if s.write_all(part).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(30));
            }
        }
    });
    let skiff = start(&simple_config(&[up.addr]));
    let mut c = Client::connect(skiff.listener("main"));
    for _ in 0..2 {
        let r = c.get("/");
        assert_eq!((r.status, r.text().as_str()), (200, "0123456789abcdefhello"));
    }
}

#[test]
fn truncated_response_body_closes_the_client_connection() {
    let up = RawUpstream::start(|mut s, _| {
        if read_head(&mut s).is_some() {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part");
        }
    });
    let good = TestUpstream::named("good");
    let skiff = start(&two_cluster_config(&[up.addr], good.addr, "", ""));
    let addr = skiff.listener("main");
    let res = raw_until_close(addr, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n", Duration::from_secs(10));
    assert!(res.closed, "a truncated body must end the client connection");
    assert!(res.text.starts_with("HTTP/1.1 200"), "{:?}", res.text);
    assert!(res.text.ends_with("only part"), "{:?}", res.text);
    still_serves(addr);
}

#[test]
fn streamed_body_is_not_sent_on_a_pooled_connection_the_upstream_already_closed() {
    // Like an upstream with a short keep-alive timeout (Node's is 5 s): it closes idle connections
    // soon after answering. A request whose body is still arriving cannot be replayed, so it must
    // not be started on a connection that is already closed.
    let up = echo_one_request_then_close();
    let skiff = start(&simple_config(&[up.addr]));
    let mut c = Client::connect(skiff.listener("main"));
    assert_eq!(c.get("/warm-the-pool").status, 200);
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..3 {
        let body = pattern(200_000, i as u8);
        c.send(format!("POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
        std::thread::sleep(Duration::from_millis(20));
        c.send(&body);
        let r = c.read_response(false).unwrap();
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert!(r.body == body);
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn route_timeout_starts_when_the_request_is_complete() {
    // Envoy's route timeout covers waiting for the response, not a slow client's upload: a body that
    // takes 3 s to arrive under a 2 s route timeout still gets its answer.
    let up = TestUpstream::start(Arc::new(|s: &Seen| {
        if s.path == "/hang" {
            Reply::Hang(Duration::from_secs(8))
        } else {
            Reply::ok(&s.body.len().to_string())
        }
    }));
    let skiff = start(&simple_config(&[up.addr]));
    let addr = skiff.listener("main");
    let mut c = Client::connect(addr);
    c.send(b"POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 30000\r\n\r\n");
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(100));
        c.send(&[b'x'; 1000]);
    }
    let r = c.read_response(false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "30000"));

    // ... and it still applies once the streamed body is complete.
    c.send(b"POST /hang HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    std::thread::sleep(Duration::from_millis(100));
    c.send(b"5\r\nhello\r\n0\r\n\r\n");
    let sent = Instant::now();
    let r = c.read_response(false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (504, "upstream request timeout"));
    let took = sent.elapsed();
    assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(4), "took {took:?}");
    assert_eq!(get(addr, "/x").status, 200);
}

#[test]
fn early_response_to_an_upload_reaches_the_client() {
    // The upstream refuses the upload from its head, then drains the body it does not want (a
    // lingering close, as nginx does): the client gets the 413.
    let up = RawUpstream::start(|mut s, _| {
        if read_head(&mut s).is_some() {
            let _ = s.write_all(
                b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big!",
            );
            let _ = s.shutdown(std::net::Shutdown::Write);
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = std::io::copy(&mut s, &mut std::io::sink());
        }
    });
    let good = TestUpstream::named("good");
    let skiff = start(&two_cluster_config(&[up.addr], good.addr, "", ""));
    let addr = skiff.listener("main");
    let mut c = Client::connect(addr);
    let body = pattern(2 << 20, 9);
    c.send(format!("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
    // The upload is abandoned, as Envoy does: the client's writes may fail once skiff closes.
    let mut writer = c.stream().try_clone().unwrap();
    let uploader = std::thread::spawn(move || {
        let _ = writer.write_all(&body);
    });
    let r = c.read_response(false).unwrap();
    assert_eq!((r.status, r.text().as_str()), (413, "too big!"));
    // Whether the upload finished before the 413 arrived is a race here (a fast machine sends
    // 2 MiB in no time); tests/request_path.rs covers the abandoned upload with a slow client.
    uploader.join().unwrap();
    assert_eq!(get(addr, "/good").status, 200);
}

/// An upstream that answers one request per connection (echoing its body) and closes the
/// connection 50 ms later, like one whose keep-alive timeout is short.
fn echo_one_request_then_close() -> RawUpstream {
    RawUpstream::start(|mut s, _| {
        if let Some(head) = read_head(&mut s) {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            let mut body = vec![0; len];
            let _ = std::io::Read::read_exact(&mut s, &mut body);
            let _ = s.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").as_bytes());
            let _ = s.write_all(&body);
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

/// The keep-alive race: a pooled connection that closes as its next request arrives. skiff sends
/// an idempotent request once more on a fresh connection (RFC 9110 9.2.2: it may not have reached
/// the application, and repeating it is safe); a POST may have been acted on, so it gets Envoy's
/// 503 `UC` and is never sent twice.
#[test]
fn a_pooled_connection_closing_on_reuse_resends_only_idempotent_requests() {
    // Every connection answers its first request and closes on reading its second, unanswered.
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let up = RawUpstream::start(move |mut s, _| {
        for n in 0.. {
            let Some(head) = read_head(&mut s) else { return };
            log.lock().expect("log").push(head.lines().next().unwrap_or_default().to_string());
            if n == 1 {
                return;
            }
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        }
    });
    let good = TestUpstream::named("good");
    let skiff = start(&two_cluster_config(&[up.addr], good.addr, "", ""));
    let addr = skiff.listener("main");
    let mut c = Client::connect(addr);
    assert_eq!(c.get("/first").status, 200);
    // Reuses the pooled connection, which closes: sent again on a new one.
    assert_eq!(c.get("/again").status, 200);
    let lines = seen.lock().expect("log").clone();
    assert_eq!(lines, ["GET /first HTTP/1.1", "GET /again HTTP/1.1", "GET /again HTTP/1.1"]);

    // The fresh connection is pooled now and answered once: its next request hits the close.
    c.send(b"POST /order HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi");
    let r = c.read_response(false).expect("a reply");
    assert_eq!(r.status, 503);
    assert!(r.text().starts_with(CONNECT_ERROR), "{}", r.text());
    let posts = seen.lock().expect("log").iter().filter(|l| l.starts_with("POST")).count();
    assert_eq!(posts, 1, "the POST reached the upstream once");
    still_serves(addr);
}
