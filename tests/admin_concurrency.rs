//! The admin server as a prober sees it while other clients misbehave: connections that send half
//! a request and stall (or send nothing) do not hold up `/ready` for anyone else, and are closed
//! once the per-request deadline (10 s) passes.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::*;

fn with_admin(upstream: std::net::SocketAddr) -> String {
    format!(
        "{}admin:\n  address:\n    socket_address: {{ address: 127.0.0.1, port_value: 0 }}\n",
        simple_config(&[upstream])
    )
}

#[test]
fn stalled_clients_do_not_block_ready_and_are_closed_after_the_deadline() {
    let up = TestUpstream::named("a");
    let skiff = Skiff::start(&with_admin(up.addr), &["--concurrency", "2"]);
    let admin = skiff.admin();

    let opened = Instant::now();
    let mut stalled: Vec<TcpStream> = (0..5)
        .map(|i| {
            let mut s = TcpStream::connect(admin).expect("connect");
            // One holds its connection without a byte; the rest trickle half a request line.
            if i > 0 {
                s.write_all(b"GET /rea").expect("write");
            }
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));

    let asked = Instant::now();
    let (status, body) = admin_request(admin, "GET", "/ready");
    assert_eq!((status, body.as_str()), (200, "LIVE\n"));
    assert!(asked.elapsed() < Duration::from_secs(1), "/ready took {:?}", asked.elapsed());
    // Stats need every shard's answer: still prompt with the stalled connections open.
    let (status, body) = admin_request(admin, "GET", "/stats?filter=server.live");
    assert_eq!(status, 200);
    assert!(body.contains("server.live: 1"), "{body}");

    for s in &mut stalled {
        s.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
        let mut buf = [0u8; 64];
        // Closed by the server: EOF (or a reset), not our read timeout.
        match s.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("unexpected answer {:?}", String::from_utf8_lossy(&buf[..n])),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
    let took = opened.elapsed();
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(12),
        "stalled connections closed after {took:?}, wanted the 10 s deadline"
    );
}
