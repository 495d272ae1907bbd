//! The request path where a client, the proxy and an upstream disagree about where a message ends
//! or who is still listening: hop-by-hop headers that would strip framing, late bytes on pooled
//! connections, upstreams that answer before the upload ends, clients that hang up, route timeouts,
//! the trust boundary for `x-envoy-*` headers, HTTP/1.0 and odd transfer codings, and drain. Each
//! expected outcome is what Envoy 1.40 does on the same input (checked with the real binary).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;

const ADMIN: &str = "admin:\n  address:\n    socket_address: { address: 127.0.0.1, port_value: 0 }\n";

/// One shard, so every request shares the same upstream pool.
fn start_one_shard(yaml: &str) -> Skiff {
    Skiff::start(yaml, &["--concurrency", "1"])
}

/// `name: value` from `/stats` text.
fn stat(admin: SocketAddr, name: &str) -> Option<String> {
    let (status, body) = admin_request(admin, "GET", "/stats");
    assert_eq!(status, 200, "{body}");
    body.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")).map(str::to_string))
}

/// The request line's path of a raw request head.
fn head_path(head: &str) -> String {
    head.split_whitespace().nth(1).unwrap_or("").to_string()
}

/// Answers every request on `s` (GETs, no body) with 200 and `body`, keep-alive, until EOF.
fn answer_forever(mut s: TcpStream, body: &str) {
    while read_head(&mut s).is_some() {
        let out = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
        if s.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}

/// Reads (and drops) whatever `s` sends until the peer closes it.
fn wait_for_eof(s: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
}

// ---------------------------------------------------------------------------------------------
// 1. `Connection: content-length` must not strip the framing header.

#[test]
fn connection_content_length_cannot_smuggle_a_second_request_to_the_upstream() {
    let up = TestUpstream::echo();
    let skiff = start_one_shard(&simple_config(&[up.addr]));
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let raw = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nConnection: content-length\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let mut client = Client::connect_with_timeout(skiff.listener("main"), Duration::from_secs(3));
    client.send(raw.as_bytes());
    let res = client.read_response(false);
    // A smuggled request would reach the upstream right behind the first one.
    std::thread::sleep(Duration::from_millis(300));
    let seen = up.requests();
    let lines: Vec<String> = seen.iter().map(|s| format!("{} {}", s.method, s.path)).collect();
    assert!(!lines.iter().any(|l| l.contains("/smuggled")), "the upstream saw a smuggled request: {lines:?}");
    match res {
        Some(r) if r.status == 400 => assert!(seen.is_empty(), "refused with 400 but forwarded: {lines:?}"),
        _ => {
            // Forwarded: with its length (Envoy re-frames it as chunked), so the upstream reads the
            // whole 'GET /smuggled' text as the POST's body.
            assert_eq!(lines, vec!["POST /".to_string()], "what the upstream saw");
            assert_eq!(String::from_utf8_lossy(&seen[0].body), smuggled, "the POST body the upstream read");
        }
    }
}

#[test]
fn connection_content_length_on_a_response_keeps_its_length_and_the_connection_usable() {
    let up = RawUpstream::start(|mut s, _| {
        while read_head(&mut s).is_some() {
            let out = "HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello";
            if s.write_all(out.as_bytes()).is_err() {
                return;
            }
        }
    });
    let skiff = start_one_shard(&simple_config(&[up.addr]));
    let mut s = TcpStream::connect(skiff.listener("main")).unwrap();
    s.write_all(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let first = read_until_close(&mut s, Duration::from_millis(700));
    let head = first.text.split("\r\n\r\n").next().unwrap_or("").to_ascii_lowercase();
    assert!(first.text.starts_with("HTTP/1.1 200 "), "first response: {:?}", first.text);
    assert!(
        head.contains("content-length: 5") || head.contains("transfer-encoding: chunked"),
        "the response lost its length on a keep-alive connection: {:?}",
        first.text
    );
    assert!(!first.closed, "the connection closed after the first response: {:?}", first.text);
    s.write_all(b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let second = read_until_close(&mut s, Duration::from_millis(700));
    assert!(second.text.starts_with("HTTP/1.1 200 "), "second request on the connection: {:?}", second.text);
    assert!(second.text.ends_with("hello"), "second response: {:?}", second.text);
}

// ---------------------------------------------------------------------------------------------
// 2. Bytes an upstream sends after a complete response belong to no request.

/// An upstream that answers `/late` correctly and then sends `late` (an unsolicited response),
/// `pause` later on the same connection; anything else gets `own <path>`.
fn late_bytes_case(first: &'static str, late: &'static str, pause: Duration) {
    let up = RawUpstream::start(move |mut s, _| {
        while let Some(head) = read_head(&mut s) {
            let path = head_path(&head);
            if path == "/late" {
                let _ = s.write_all(first.as_bytes());
                std::thread::sleep(pause);
                let _ = s.write_all(late.as_bytes());
            } else {
                let body = format!("own {path}");
                let out = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                if s.write_all(out.as_bytes()).is_err() {
                    return;
                }
            }
        }
    });
    let skiff = start_one_shard(&simple_config(&[up.addr]));
    let addr = skiff.listener("main");
    let r = get(addr, "/late");
    assert!(matches!(r.status, 200 | 204), "{first:?} then {late:?}: first answer {r:?}");
    // Let the late bytes land in the pooled connection.
    std::thread::sleep(Duration::from_millis(100));
    let next = Client::connect_with_timeout(addr, Duration::from_secs(3)).request("x", "/next", &[]);
    let next = next.map(|r| (r.status, r.text()));
    assert_eq!(
        next,
        Some((200, "own /next".to_string())),
        "{first:?} then {late:?}: the next client got someone else's bytes"
    );
    assert_eq!(
        up.connections.load(Ordering::Relaxed),
        2,
        "{first:?} then {late:?}: the connection with unread bytes was reused"
    );
}

#[test]
fn a_late_unsolicited_response_never_reaches_the_next_client() {
    late_bytes_case(
        "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst",
        "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nLATE",
        Duration::from_millis(20),
    );
}

#[test]
fn a_body_after_a_204_never_reaches_the_next_client() {
    late_bytes_case(
        "HTTP/1.1 204 No Content\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nLATE",
        Duration::from_millis(20),
    );
}

// ---------------------------------------------------------------------------------------------
// 3. An upstream may answer before the request body is complete.

#[test]
fn early_413_from_upstream_reaches_the_client_before_the_upload_finishes() {
    // The upstream reads only the head, answers `/<status>` with that status and closes later.
    let up = RawUpstream::start(|mut s, _| {
        let Some(head) = read_head(&mut s) else { return };
        let status = head_path(&head).trim_start_matches('/').to_string();
        let reason = match status.as_str() {
            "413" => "Payload Too Large",
            "401" => "Unauthorized",
            _ => "OK",
        };
        let out = format!("HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        let _ = s.write_all(out.as_bytes());
        std::thread::sleep(Duration::from_secs(3));
    });
    let skiff = start_one_shard(&simple_config(&[up.addr]));
    let addr = skiff.listener("main");
    for status in [413u16, 401, 200] {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(
            format!("POST /{status} HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n").as_bytes(),
        )
        .unwrap();
        // Upload 1 KiB every 50 ms until told to stop or the proxy stops reading.
        let stop = Arc::new(AtomicBool::new(false));
        let uploader = {
            let (mut w, stop) = (s.try_clone().unwrap(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) && w.write_all(&[b'x'; 1024]).is_ok() {
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        let started = Instant::now();
        let res = read_until_close(&mut s, Duration::from_millis(1200));
        stop.store(true, Ordering::Relaxed);
        let _ = uploader.join();
        assert!(
            res.text.starts_with(&format!("HTTP/1.1 {status} ")),
            "early {status}: after {:?} the client had {:?} (closed: {})",
            started.elapsed(),
            res.text,
            res.closed
        );
        // Envoy ends the connection: the rest of the upload has nowhere to go.
        assert!(
            res.closed || res.text.to_ascii_lowercase().contains("connection: close"),
            "early {status}: connection neither closed nor marked close: {:?}",
            res.text
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 4. A client that hangs up cancels its request.

#[test]
fn client_hanging_up_resets_the_upstream_request_and_logs_0_dc() {
    // What the upstream saw after the head: Ok(after) when the proxy closed on it, Err when it had
    // to answer (after 2 s).
    let outcome: Arc<Mutex<Option<Result<Duration, ()>>>> = Arc::new(Mutex::new(None));
    let o = outcome.clone();
    let up = RawUpstream::start(move |mut s, _| {
        if read_head(&mut s).is_none() {
            return;
        }
        let got_head = Instant::now();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut b = [0u8; 1];
        let result = match s.read(&mut b) {
            Ok(0) => Ok(got_head.elapsed()),
            Err(e) if !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                Ok(got_head.elapsed())
            }
            _ => {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nlate");
                Err(())
            }
        };
        *o.lock().unwrap() = Some(result);
    });
    let dir = scratch_dir("client-hangup");
    let log = dir.join("access.log");
    let hcm = format!(
        "                access_log:\n                  - name: envoy.access_loggers.file\n                    typed_config:\n                      \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n                      path: {}\n                      log_format: {{ text_format_source: {{ inline_string: \"%RESPONSE_CODE% %RESPONSE_FLAGS%\\n\" }} }}\n",
        log.display()
    );
    let yaml =
        format!("{ADMIN}{}", custom_config(&[up.addr], &hcm, "", "").replace("timeout: 2s", "timeout: 5s"));
    let skiff = start_one_shard(&yaml);
    let mut c = TcpStream::connect(skiff.listener("main")).unwrap();
    c.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(c);

    let mut problems = Vec::new();
    eventually(Duration::from_millis(2500), || outcome.lock().unwrap().is_some());
    match *outcome.lock().unwrap() {
        Some(Ok(after)) if after < Duration::from_secs(1) => {}
        other => problems.push(format!("upstream connection not reset within 1 s of the hang-up: {other:?}")),
    }
    let logged = eventually(Duration::from_secs(1), || {
        std::fs::read_to_string(&log).unwrap_or_default().lines().any(|l| l == "0 DC")
    });
    if !logged {
        problems.push(format!(
            "access log is {:?}, want \"0 DC\"",
            std::fs::read_to_string(&log).unwrap_or_default()
        ));
    }
    let admin = skiff.admin();
    let name = "http.ingress.downstream_cx_destroy_remote_active_rq";
    let counted = eventually(Duration::from_secs(1), || stat(admin, name).as_deref() == Some("1"));
    if !counted {
        problems.push(format!("{name} is {:?}, want 1", stat(admin, name)));
    }
    assert!(problems.is_empty(), "client hung up 200 ms into a 2 s request:\n{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// 5. Route timeouts release the request's slot on the upstream.

#[test]
fn route_timeouts_leave_no_active_upstream_requests_behind() {
    let up = RawUpstream::start(|mut s, _| {
        let _ = read_head(&mut s);
        wait_for_eof(&mut s);
    });
    let yaml = format!("{ADMIN}{}", simple_config(&[up.addr]).replace("timeout: 2s", "timeout: 0.2s"));
    let skiff = start_one_shard(&yaml);
    let addr = skiff.listener("main");
    for i in 0..3 {
        let r = get(addr, &format!("/hang{i}"));
        assert_eq!(r.status, 504, "request {i}: {r:?}");
    }
    let admin = skiff.admin();
    let settled = eventually(Duration::from_secs(1), || {
        stat(admin, "cluster.backend.upstream_rq_active").as_deref() == Some("0")
    });
    let (active, timeouts) = (
        stat(admin, "cluster.backend.upstream_rq_active"),
        stat(admin, "cluster.backend.upstream_rq_timeout"),
    );
    assert!(
        settled && timeouts.as_deref() == Some("3"),
        "after 3 timeouts: upstream_rq_active {active:?} (want 0), upstream_rq_timeout {timeouts:?} (want 3)"
    );
}

#[test]
fn least_request_spreads_evenly_again_after_one_endpoint_timed_out() {
    // Endpoint A leaves its first 3 requests unanswered, then answers like B.
    let hung = Arc::new(AtomicUsize::new(0));
    let h = hung.clone();
    let a = RawUpstream::start(move |mut s, _| {
        while read_head(&mut s).is_some() {
            if h.fetch_add(1, Ordering::Relaxed) < 3 {
                wait_for_eof(&mut s);
                return;
            }
            if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nA").is_err() {
                return;
            }
        }
    });
    let b = RawUpstream::start(|s, _| answer_forever(s, "B"));
    let yaml = simple_config(&[])
        .replace("timeout: 2s", "timeout: 0.2s")
        .replace("ROUND_ROBIN", "LEAST_REQUEST")
        .replace(
            "          - lb_endpoints:\n",
            &format!(
                "          - lb_endpoints:\n              - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}\n              - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}\n",
                a.addr.port(),
                b.addr.port()
            ),
        );
    let skiff = start_one_shard(&yaml);
    let addr = skiff.listener("main");
    let mut warmup = Vec::new();
    for _ in 0..60 {
        if hung.load(Ordering::Relaxed) >= 3 {
            break;
        }
        warmup.push(get(addr, "/").status);
    }
    assert!(hung.load(Ordering::Relaxed) >= 3, "A never got its 3 hanging requests: statuses {warmup:?}");
    assert_eq!(warmup.iter().filter(|s| **s == 504).count(), 3, "warm-up statuses {warmup:?}");
    let mut client = Client::connect(addr);
    let (mut on_a, mut on_b) = (0, 0);
    for _ in 0..200 {
        match client.get("/").text().as_str() {
            "A" => on_a += 1,
            "B" => on_b += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(
        (70..=130).contains(&on_a) && (70..=130).contains(&on_b),
        "200 requests after A's 3 timeouts: A {on_a}, B {on_b} (each should get 35%..65%)"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. The trust boundary: what a client may tell the proxy through `x-envoy-*` and friends.

/// The headers a client sends to try to steer the proxy.
const STEERING: &[(&str, &str)] = &[
    ("x-envoy-retry-on", "5xx"),
    ("x-envoy-upstream-rq-timeout-ms", "1"),
    ("x-envoy-foo", "bar"),
    ("x-forwarded-for", "1.2.3.4"),
    ("x-envoy-external-address", "9.9.9.9"),
    ("x-envoy-internal", "true"),
    ("x-request-id", "abc"),
];

/// Starts an echo upstream (`/slow` answers after 300 ms, `/503` answers 503) behind skiff with
/// `hcm_extra`, sends `/slow` and `/503` with `STEERING`, and returns (the `/slow` request as the
/// upstream saw it, how many `/503` requests the upstream saw).
fn steer(hcm_extra: &str) -> (Seen, usize) {
    let up = TestUpstream::start(Arc::new(|s: &Seen| {
        if s.path == "/503" {
            return Reply::Full { status: 503, headers: vec![], body: b"no".to_vec() };
        }
        std::thread::sleep(Duration::from_millis(300));
        Reply::ok("slow")
    }));
    let skiff = start_one_shard(&custom_config(&[up.addr], hcm_extra, "", ""));
    let addr = skiff.listener("main");
    let slow = get_host(addr, "x", "/slow", STEERING);
    assert_eq!(
        (slow.status, slow.text().as_str()),
        (200, "slow"),
        "x-envoy-upstream-rq-timeout-ms from the client was obeyed"
    );
    let failed = get_host(addr, "x", "/503", STEERING);
    assert_eq!(failed.status, 503);
    // A retry would follow right away.
    std::thread::sleep(Duration::from_millis(200));
    let seen = up.requests();
    let tries = seen.iter().filter(|s| s.path == "/503").count();
    let slow = seen.into_iter().find(|s| s.path == "/slow").expect("/slow reached the upstream");
    (slow, tries)
}

/// What Envoy does on every request from outside (no `internal_address_config` makes any client
/// internal in 1.40), whatever `use_remote_address` says; `extra` are the mode's own rules as
/// (header, expected value). Lists every difference at once.
fn check_steered(seen: &Seen, tries: usize, extra: &[(&str, Option<&str>)]) {
    let mut want: Vec<(&str, Option<&str>)> = vec![
        ("x-envoy-retry-on", None),
        ("x-envoy-upstream-rq-timeout-ms", None),
        ("x-envoy-internal", None),
        ("x-envoy-foo", Some("bar")),
        ("x-forwarded-proto", Some("http")),
    ];
    want.extend_from_slice(extra);
    let mut problems: Vec<String> = want
        .iter()
        .filter(|(name, value)| seen.header(name) != *value)
        .map(|(name, value)| format!("{name}: {:?}, want {value:?}", seen.header(name)))
        .collect();
    if tries != 1 {
        problems.push(format!("x-envoy-retry-on: 5xx from the client was obeyed: {tries} tries"));
    }
    assert!(problems.is_empty(), "{}\nthe upstream saw {:?}", problems.join("\n"), seen.headers);
}

#[test]
fn client_x_envoy_control_headers_are_dropped_and_forwarding_headers_kept_by_default() {
    let (seen, tries) = steer("");
    // use_remote_address: false trusts the forwarding headers as they came.
    check_steered(
        &seen,
        tries,
        &[
            ("x-forwarded-for", Some("1.2.3.4")),
            ("x-envoy-external-address", Some("9.9.9.9")),
            ("x-request-id", Some("abc")),
        ],
    );
}

#[test]
fn with_use_remote_address_the_edge_appends_the_peer_and_overwrites_external_address() {
    let (seen, tries) = steer("                use_remote_address: true\n");
    // Envoy appends the peer with a bare comma; for a loopback peer it appends its own local
    // address instead (192.0.2.2 on the machine it was checked on), so only the shape is fixed.
    let xff = seen.header("x-forwarded-for").unwrap_or("").to_string();
    let appended = xff.strip_prefix("1.2.3.4,").filter(|hop| hop.parse::<std::net::IpAddr>().is_ok());
    let id = seen.header("x-request-id").unwrap_or("").to_string();
    // An external request gets a fresh id.
    let fresh_id = (id != "abc" && id.len() == 36).then_some(id.as_str());
    check_steered(
        &seen,
        tries,
        &[
            ("x-forwarded-for", appended.map(|_| xff.as_str()).or(Some("1.2.3.4,<this hop>"))),
            ("x-envoy-external-address", Some("127.0.0.1")),
            ("x-request-id", fresh_id.or(Some("<a fresh uuid>"))),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// 7. HTTP/1.0 and transfer codings Envoy does not implement.

#[test]
fn http_1_0_without_accept_http_10_gets_426_and_transfer_coding_gzip_chunked_gets_501() {
    let up = TestUpstream::echo();
    let skiff = start_one_shard(&simple_config(&[up.addr]));
    let addr = skiff.listener("main");
    let mut problems = Vec::new();
    for (raw, want) in [
        (&b"GET / HTTP/1.0\r\n\r\n"[..], "HTTP/1.1 426 Upgrade Required"),
        (
            &b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                [..],
            "HTTP/1.1 501 Not Implemented",
        ),
    ] {
        let what = String::from_utf8_lossy(raw).lines().next().unwrap_or("").to_string();
        let res = raw_until_close(addr, raw, Duration::from_secs(2));
        if !(res.text.starts_with(want) && res.text.contains("connection: close") && res.closed) {
            problems.push(format!(
                "{what:?}: got {:?} (closed: {}), want {want:?} and a close",
                res.text, res.closed
            ));
        }
    }
    let forwarded: Vec<String> = up.requests().iter().map(|s| format!("{} {}", s.method, s.path)).collect();
    if !forwarded.is_empty() {
        problems.push(format!("forwarded to the upstream: {forwarded:?}"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// 9. Drain: a request already on the wire when SIGTERM arrives is answered.

#[test]
fn a_keep_alive_request_sent_as_sigterm_arrives_is_answered_with_connection_close() {
    let up = TestUpstream::start(Arc::new(|s: &Seen| {
        if s.path == "/second" {
            std::thread::sleep(Duration::from_millis(300));
        }
        Reply::ok(&s.path)
    }));
    let skiff = Skiff::start(&simple_config(&[up.addr]), &["--concurrency", "1", "--drain-time-s", "5"]);
    let mut client = Client::connect_with_timeout(skiff.listener("main"), Duration::from_secs(3));
    assert_eq!(client.get("/first").text(), "/first");
    // The request follows SIGTERM by 5 ms, on a connection that was idle when the drain began: a
    // graceful drain answers it and says `connection: close` (Envoy's HCM drain does the same;
    // Envoy itself exits on SIGTERM, dropping the connection).
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(skiff.child.id() as i32, libc::SIGTERM);
    }
    std::thread::sleep(Duration::from_millis(5));
    client.send(b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n");
    let r = client.read_response(false);
    let got = r.as_ref().map(|r| (r.status, r.text(), r.header("connection").map(str::to_string)));
    assert_eq!(
        got,
        Some((200, "/second".to_string(), Some("close".to_string()))),
        "second keep-alive request during SIGTERM; upstream saw {:?}",
        up.requests().iter().map(|s| s.path.clone()).collect::<Vec<_>>()
    );
}
