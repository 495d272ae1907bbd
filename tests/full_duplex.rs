//! Full duplex over HTTP/1.1: an upstream that answers a streamed (chunked) upload's head at once
//! and echoes each body chunk as it arrives, and a client that sends a chunk only once the echo of
//! the one before came back. The request body must keep flowing up after the response head came
//! down (skiff used to give the upload up then, and the client hung). Also an upstream that answers
//! early and completely (a 413) while the upload goes on. The real Envoy 1.40 runs beside skiff on
//! the same config and traffic (skipped without it), and what the client sees must be equal.

mod support;

#[path = "support/envoy.rs"]
mod envoy;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};
use support::{scratch_dir, Skiff};

/// How the upstream answers a request whose head it has read.
#[derive(Clone, Copy)]
enum Upstream {
    /// `200` chunked at once, then each request chunk back upper-cased as it arrives.
    Echo,
    /// A complete `413` at once, then it keeps reading the upload.
    EarlyComplete,
}

fn start_upstream(mode: Upstream) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let addr = listener.local_addr().expect("upstream addr");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            std::thread::spawn(move || serve(conn, mode));
        }
    });
    addr
}

fn serve(mut c: TcpStream, mode: Upstream) {
    let _ = c.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match c.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    buf.drain(..head_end);
    match mode {
        Upstream::EarlyComplete => {
            let _ = c.write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\n\r\nbig!");
            while matches!(c.read(&mut chunk), Ok(1..)) {}
        }
        Upstream::Echo => {
            if c.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err() {
                return;
            }
            loop {
                // Every complete chunk in `buf` goes back at once.
                while let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") {
                    let Some(size) =
                        std::str::from_utf8(&buf[..eol]).ok().and_then(|s| usize::from_str_radix(s, 16).ok())
                    else {
                        return;
                    };
                    if buf.len() < eol + 2 + size + 2 {
                        break;
                    }
                    let data = buf[eol + 2..eol + 2 + size].to_ascii_uppercase();
                    buf.drain(..eol + 2 + size + 2);
                    let mut out = format!("{size:x}\r\n").into_bytes();
                    out.extend_from_slice(&data);
                    out.extend_from_slice(b"\r\n");
                    if c.write_all(&out).is_err() || size == 0 {
                        return;
                    }
                }
                match c.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        }
    }
}

/// The shared one-route config (`support::simple_config`), on `port` with an admin on `admin`
/// (0 = ephemeral, for skiff).
fn config(port: u16, admin: u16, upstream: SocketAddr) -> String {
    let admin =
        format!("admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}\n");
    admin
        + &support::simple_config(&[upstream]).replacen(
            "port_value: 0 }",
            &format!("port_value: {port} }}"),
            1,
        )
}

/// Reads until `want` is in `got` (true) or 5 s pass or the connection ends (false).
fn read_until(s: &mut TcpStream, got: &mut Vec<u8>, want: &[u8]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut chunk = [0u8; 4096];
    while !got.windows(want.len()).any(|w| w == want) {
        if Instant::now() > deadline {
            return false;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

/// The response head's lines, without the date.
fn head_lines(text: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(text);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    head.split("\r\n").filter(|l| !l.starts_with("date:")).map(str::to_string).collect()
}

/// The ping-pong: each chunk sent once the echo of the one before arrived. Returns the response
/// head's lines and the echoes that came back in turn (stopping at the first that did not).
fn ping_pong(listener: SocketAddr) -> (Vec<String>, Vec<String>) {
    let mut s = TcpStream::connect(listener).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    s.write_all(b"POST /duplex HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n").expect("head");
    let mut got = Vec::new();
    let mut echoes = Vec::new();
    for word in ["one", "two", "three"] {
        s.write_all(format!("{:x}\r\n{word}\r\n", word.len()).as_bytes()).expect("chunk");
        let echo = word.to_uppercase();
        if !read_until(&mut s, &mut got, format!("\r\n{echo}\r\n").as_bytes()) {
            break;
        }
        echoes.push(echo);
    }
    let _ = s.write_all(b"0\r\n\r\n");
    if read_until(&mut s, &mut got, b"\r\n0\r\n\r\n") {
        echoes.push("end".into());
    }
    (head_lines(&got), echoes)
}

/// A chunked upload answered early and completely: what the client reads.
fn early_complete(listener: SocketAddr) -> Vec<String> {
    let mut s = TcpStream::connect(listener).expect("connect");
    s.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    s.write_all(b"POST /big HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        .expect("send");
    let mut got = Vec::new();
    let answered = read_until(&mut s, &mut got, b"big!");
    let mut lines = head_lines(&got);
    lines.push(format!("body complete: {answered}"));
    lines
}

#[derive(Debug, PartialEq)]
struct Seen {
    ping_pong: (Vec<String>, Vec<String>),
    early_complete: Vec<String>,
}

fn drive(
    echo: SocketAddr,
    early: SocketAddr,
    start: impl Fn(SocketAddr) -> (SocketAddr, Box<dyn FnOnce()>),
) -> Seen {
    let (listener, stop) = start(echo);
    let ping_pong = ping_pong(listener);
    stop();
    let (listener, stop) = start(early);
    let early_complete = early_complete(listener);
    stop();
    Seen { ping_pong, early_complete }
}

fn through_skiff(echo: SocketAddr, early: SocketAddr) -> Seen {
    drive(echo, early, |up| {
        let sk = Skiff::start(&config(0, 0, up), &[]);
        (sk.listener("main"), Box::new(move || drop(sk)))
    })
}

#[test]
fn a_streamed_upload_keeps_flowing_after_the_response_head() {
    let (echo, early) = (start_upstream(Upstream::Echo), start_upstream(Upstream::EarlyComplete));
    let k = through_skiff(echo, early);
    // The head came before the request was complete: no service time, and the connection closes
    // after the response (Envoy's router and HTTP/1 codec do the same).
    let head = &k.ping_pong.0;
    assert_eq!(head[0], "HTTP/1.1 200 OK", "{k:#?}");
    assert!(head.contains(&"connection: close".to_string()), "{k:#?}");
    assert!(!head.iter().any(|l| l.starts_with("x-envoy-upstream-service-time")), "{k:#?}");
    assert_eq!(k.ping_pong.1, ["ONE", "TWO", "THREE", "end"], "{k:#?}");
    assert_eq!(k.early_complete[0], "HTTP/1.1 413 Payload Too Large", "{k:#?}");
    assert_eq!(k.early_complete.last().map(String::as_str), Some("body complete: true"), "{k:#?}");

    let Some(bin) = envoy::binary_or_skip("full_duplex") else { return };
    let dir = scratch_dir("full-duplex");
    let e = drive(echo, early, |up| {
        let e = envoy::Envoy::start(&bin, &dir, |port, admin| config(port, admin, up));
        (e.listener, Box::new(move || drop(e)))
    });
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(k, e, "skiff (left) against envoy (right)");
}
