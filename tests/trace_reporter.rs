//! The reporter against a real HTTP collector on 127.0.0.1: spans queued on the request path
//! arrive as one Zipkin v2 JSON POST with the headers a Zipkin server needs.

use skiff::trace::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

/// One received request: head (lower-cased) and body.
struct Posted {
    head: String,
    body: Vec<u8>,
}

/// Accepts `count` connections, each carrying one POST with a Content-Length body, answers
/// `status` and passes the request on.
fn collector(count: usize, status: &'static str) -> (SocketAddr, mpsc::Receiver<Posted>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for _ in 0..count {
            let Ok((mut conn, _)) = listener.accept() else { return };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head, body) = loop {
                let n = conn.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .expect("content-length");
                if buf.len() >= end + 4 + length {
                    break (head, buf[end + 4..end + 4 + length].to_vec());
                }
            };
            let _ = conn.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes());
            let _ = tx.send(Posted { head, body });
        }
    });
    (addr, rx)
}

fn span(n: u64) -> Span {
    Span {
        ctx: TraceContext {
            trace_id: 0x463ac35c9f6413ad,
            span_id: n,
            parent_id: None,
            sampled: Some(true),
            debug: false,
            shared: false,
            w3c_only: false,
        },
        name: format!("GET /{n}"),
        kind: SpanKind::Server,
        start: SystemTime::now(),
        duration: Duration::from_millis(3),
        local_service: "svc".into(),
        local_ip: "127.0.0.1".parse().expect("ip"),
        remote_endpoint: None,
        tags: vec![(tags::HTTP_METHOD, "GET".into())],
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_batch_reaches_the_collector_as_zipkin_v2_json() {
    let (addr, rx) = collector(1, "202 Accepted");
    let reporter = Reporter::start("/api/v2/spans", "zipkin.internal", move || vec![addr]).expect("thread");
    let sender = reporter.sender();
    let other = sender.clone();
    sender.report(span(1));
    other.report(span(2));
    sender.report(span(3));
    // The flush interval (1 s) sends the batch.
    let posted = rx.recv_timeout(Duration::from_secs(5)).expect("a POST within the flush interval");
    let first_line = posted.head.lines().next().unwrap_or_default();
    assert_eq!(first_line, "post /api/v2/spans http/1.1");
    assert!(posted.head.contains("\r\nhost: zipkin.internal"), "{}", posted.head);
    assert!(posted.head.contains("\r\ncontent-type: application/json"), "{}", posted.head);
    let spans: serde_json::Value = serde_json::from_slice(&posted.body).expect("JSON body");
    let spans = spans.as_array().expect("an array");
    assert_eq!(spans.len(), 3);
    let ids: Vec<&str> = spans.iter().map(|s| s["id"].as_str().unwrap_or_default()).collect();
    assert_eq!(ids, ["0000000000000001", "0000000000000002", "0000000000000003"]);
    for s in spans {
        assert_eq!(s["traceId"], "463ac35c9f6413ad");
        assert_eq!(s["kind"], "SERVER");
        assert_eq!(s["localEndpoint"]["serviceName"], "svc");
        assert_eq!(s["tags"]["http.method"], "GET");
        assert!(s["timestamp"].as_u64().is_some_and(|t| t > 1_600_000_000_000_000));
        assert_eq!(s["duration"], 3000);
    }
    let stats = reporter.stats().clone();
    wait_for("spans_sent", || stats.spans_sent.load(Ordering::Relaxed) == 3);
    assert_eq!(stats.reports_failed.load(Ordering::Relaxed), 0);
    assert_eq!(stats.spans_dropped.load(Ordering::Relaxed), 0);
    reporter.shutdown();
}

#[test]
fn a_full_batch_is_sent_at_once_and_addresses_rotate() {
    let (a, rx_a) = collector(1, "202 Accepted");
    let (b, rx_b) = collector(1, "202 Accepted");
    let options =
        ReporterOptions { flush_interval: Duration::from_secs(60), batch_size: 2, ..Default::default() };
    let reporter = Reporter::start_with(options, "/spans", "zipkin", move || vec![a, b]).expect("thread");
    let sender = reporter.sender();
    for n in 1..=4 {
        sender.report(span(n));
    }
    let first = rx_a.recv_timeout(Duration::from_secs(5)).expect("first batch to the first address");
    let second = rx_b.recv_timeout(Duration::from_secs(5)).expect("second batch to the second address");
    for p in [first, second] {
        let v: serde_json::Value = serde_json::from_slice(&p.body).expect("JSON");
        assert_eq!(v.as_array().map(Vec::len), Some(2));
    }
    reporter.shutdown();
}

#[test]
fn failures_are_counted_and_shutdown_flushes() {
    // A collector that answers 500, then nothing listening at all.
    let (addr, rx) = collector(1, "500 Internal Server Error");
    let reporter = Reporter::start_with(
        ReporterOptions { flush_interval: Duration::from_secs(60), ..Default::default() },
        "/api/v2/spans",
        "zipkin",
        move || vec![addr],
    )
    .expect("thread");
    reporter.sender().report(span(1));
    let stats = reporter.stats().clone();
    // Shutdown sends what is queued even though the flush interval has not passed.
    reporter.shutdown();
    assert!(rx.recv_timeout(Duration::from_secs(5)).is_ok());
    assert_eq!(stats.reports_failed.load(Ordering::Relaxed), 1);
    assert_eq!(stats.spans_failed.load(Ordering::Relaxed), 1);
    assert_eq!(stats.spans_sent.load(Ordering::Relaxed), 0);

    let none = Reporter::start_with(
        ReporterOptions { flush_interval: Duration::from_millis(20), ..Default::default() },
        "/api/v2/spans",
        "zipkin",
        Vec::new,
    )
    .expect("thread");
    none.sender().report(span(1));
    let stats = none.stats().clone();
    wait_for("a failed report", || stats.reports_failed.load(Ordering::Relaxed) == 1);
    none.shutdown();
}

#[test]
fn a_full_queue_drops_without_blocking() {
    // A collector that accepts and never answers keeps the thread in its POST (1 s read timeout)
    // while the request path goes on reporting.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (accepted_tx, accepted) = mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((conn, _)) = listener.accept() {
            let _ = accepted_tx.send(());
            std::thread::sleep(Duration::from_secs(3));
            drop(conn);
        }
    });
    let options = ReporterOptions { queue_capacity: 4, batch_size: 1, ..Default::default() };
    let reporter =
        Reporter::start_with(options, "/api/v2/spans", "zipkin", move || vec![addr]).expect("thread");
    let sender = reporter.sender();
    sender.report(span(0));
    accepted.recv_timeout(Duration::from_secs(5)).expect("the thread is posting");
    let begin = Instant::now();
    for n in 1..=1000 {
        sender.report(span(n));
    }
    assert!(begin.elapsed() < Duration::from_millis(500), "report must not block");
    assert_eq!(sender.stats().spans_dropped.load(Ordering::Relaxed), 1000 - 4);
    drop(sender);
    reporter.shutdown();
}
