//! Idle keep-alive client connections: a connection that waits long gives its read buffer back
//! (its read is cancelled after a second and it waits for readability instead); what a client sees
//! must not change — the next request is answered, bytes that arrive as the wait changes mode are
//! not lost, the idle timeout still closes, and a drain still closes idle connections. On both
//! I/O drivers.

mod support;

use std::time::{Duration, Instant};
use support::*;

/// Longer than skiff's one second with a buffered read, so the connection is waiting in its
/// buffer-less mode when the next request comes.
const LONG_IDLE: Duration = Duration::from_millis(1400);

fn both_drivers(check: impl Fn(&str)) {
    for driver in ["uring", "epoll"] {
        check(driver);
    }
}

#[test]
fn a_request_after_a_long_idle_is_answered_on_the_same_connection() {
    both_drivers(|driver| {
        let up = TestUpstream::echo();
        let skiff = start_with_driver(&simple_config(&[up.addr]), driver);
        let mut c = Client::connect(skiff.listener("main"));
        assert_eq!(c.get("/first").status, 200, "{driver}");
        std::thread::sleep(LONG_IDLE);
        assert_eq!(c.get("/second").status, 200, "{driver}: the connection that idled answers");
        // And again right away (the buffered wait), then after another long idle.
        assert_eq!(c.get("/third").status, 200, "{driver}");
        std::thread::sleep(LONG_IDLE);
        assert_eq!(c.get("/fourth").status, 200, "{driver}");
        let paths: Vec<String> = up.requests().iter().map(|r| r.path.clone()).collect();
        assert_eq!(paths, ["/first", "/second", "/third", "/fourth"], "{driver}");
    });
}

#[test]
fn a_request_sent_in_pieces_across_the_mode_change_arrives_whole() {
    both_drivers(|driver| {
        let up = TestUpstream::echo();
        let skiff = start_with_driver(&simple_config(&[up.addr]), driver);
        let mut c = Client::connect(skiff.listener("main"));
        assert_eq!(c.get("/warm").status, 200, "{driver}");
        // Bytes just before, around and after the moment the buffered read is cancelled.
        let head = b"GET /pieces HTTP/1.1\r\nHost: test\r\nx-piece: abcdefghij\r\n\r\n";
        let started = Instant::now();
        let mut sent = 0;
        for (i, chunk) in head.chunks(8).enumerate() {
            let at = Duration::from_millis(900 + 40 * i as u64);
            std::thread::sleep(at.saturating_sub(started.elapsed()));
            c.send(chunk);
            sent += chunk.len();
        }
        assert_eq!(sent, head.len());
        let r = c.read_response(false).expect("a response");
        assert_eq!(r.status, 200, "{driver}");
        let seen = up.requests();
        assert_eq!(seen.last().map(|r| r.path.as_str()), Some("/pieces"), "{driver}");
        assert_eq!(seen.last().and_then(|r| r.header("x-piece")), Some("abcdefghij"), "{driver}");
    });
}

#[test]
fn the_idle_timeout_still_closes_a_long_idle_connection() {
    both_drivers(|driver| {
        let up = TestUpstream::echo();
        let yaml = custom_config(
            &[up.addr],
            "                common_http_protocol_options: { idle_timeout: 1.5s }\n",
            "",
            "",
        );
        let skiff = start_with_driver(&yaml, driver);
        let mut c = Client::connect(skiff.listener("main"));
        assert_eq!(c.get("/").status, 200, "{driver}");
        let t = Instant::now();
        assert!(c.closed(), "{driver}: closed by the idle timeout");
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_millis(1300) && waited < Duration::from_secs(4),
            "{driver}: closed after {waited:?}, the idle timeout is 1.5 s"
        );
    });
}

#[test]
fn a_drain_closes_connections_idle_in_either_mode() {
    let up = TestUpstream::echo();
    let mut skiff = Skiff::start(&simple_config(&[up.addr]), &["--drain-time-s", "5"]);
    let addr = skiff.listener("main");
    let mut long = Client::connect(addr);
    assert_eq!(long.get("/").status, 200);
    std::thread::sleep(LONG_IDLE);
    let mut short = Client::connect(addr);
    assert_eq!(short.get("/").status, 200);
    let t = Instant::now();
    // SIGTERM: skiff drains, and idle connections close after a short grace.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(skiff.child.id() as i32, libc::SIGTERM) };
    assert!(short.closed(), "the connection idle for a moment closes");
    assert!(long.closed(), "the connection idle without a buffer closes");
    assert!(t.elapsed() < Duration::from_secs(3), "closed by the drain, not a timeout: {:?}", t.elapsed());
    let _ = skiff.terminate();
}
