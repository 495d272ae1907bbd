//! A raw HTTP/2 client for the tests: frames written by hand (literal HPACK, no Huffman), so a
//! test can send what no well-behaved client would (rapid resets, CONTINUATION floods, HPACK
//! bombs, a zero window) and see which frames come back. Answers are read as frames; headers
//! are not decoded (curl and h2load read real responses).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;
pub const WINDOW_UPDATE: u8 = 8;
pub const CONTINUATION: u8 = 9;

pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const ACK: u8 = 0x1;

pub const REFUSED_STREAM: u32 = 0x7;
pub const CANCEL: u32 = 0x8;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// RST_STREAM's or GOAWAY's error code.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            RST_STREAM => 0,
            GOAWAY => 4,
            _ => return None,
        };
        let b = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK integer with an `n`-bit prefix, `first` holding the prefix's high bits.
fn int(out: &mut Vec<u8>, first: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128 + 128) as u8);
        v /= 128;
    }
    out.push(v as u8);
}

/// Header fields as literals without indexing (names as sent: lower case).
pub fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        literal(&mut out, 0x00, name, value.as_bytes());
    }
    out
}

/// A literal field with `first` (0x00: without indexing, 0x40: with incremental indexing).
pub fn literal(out: &mut Vec<u8>, first: u8, name: &str, value: &[u8]) {
    out.push(first);
    int(out, 0, 7, name.len());
    out.extend_from_slice(name.as_bytes());
    int(out, 0, 7, value.len());
    out.extend_from_slice(value);
}

/// An indexed field (a reference into the static or dynamic table).
pub fn indexed(out: &mut Vec<u8>, index: usize) {
    int(out, 0x80, 7, index);
}

/// A GET's header block for `path` on `authority`.
pub fn get(authority: &str, path: &str) -> Vec<u8> {
    block(&[(":method", "GET"), (":scheme", "http"), (":authority", authority), (":path", path)])
}

pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
    /// Whether PINGs are answered (as every real client does), as frames are read.
    pub answer_pings: bool,
}

impl Conn {
    /// Connects, sends the preface and `settings` (id, value pairs), and acknowledges nothing yet.
    pub fn open(addr: SocketAddr, settings: &[(u16, u32)]) -> Conn {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut c = Conn { stream, buf: Vec::new(), answer_pings: true };
        let mut payload = Vec::new();
        for (id, v) in settings {
            payload.extend_from_slice(&id.to_be_bytes());
            payload.extend_from_slice(&v.to_be_bytes());
        }
        let mut out = PREFACE.to_vec();
        out.extend(frame(SETTINGS, 0, 0, &payload));
        c.send(&out);
        c
    }

    pub fn send(&mut self, bytes: &[u8]) {
        // A peer that closed on us makes later writes fail; the frames read say why.
        let _ = self.stream.write_all(bytes);
    }

    pub fn headers(&mut self, stream: u32, block: &[u8], end_stream: bool) {
        let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        self.send(&frame(HEADERS, flags, stream, block));
    }

    /// The next frame within `limit` (None: none came, or the connection closed). SETTINGS and
    /// PINGs from the server are acknowledged as they come.
    pub fn next(&mut self, limit: Duration) -> Option<Frame> {
        let deadline = Instant::now() + limit;
        loop {
            if self.buf.len() >= 9 {
                let len = (self.buf[0] as usize) << 16 | (self.buf[1] as usize) << 8 | self.buf[2] as usize;
                if self.buf.len() >= 9 + len {
                    let f = Frame {
                        kind: self.buf[3],
                        flags: self.buf[4],
                        stream: u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]])
                            & 0x7fff_ffff,
                        payload: self.buf[9..9 + len].to_vec(),
                    };
                    self.buf.drain(..9 + len);
                    if f.kind == SETTINGS && f.flags & ACK == 0 {
                        self.send(&frame(SETTINGS, ACK, 0, &[]));
                    }
                    if f.kind == PING && f.flags & ACK == 0 && self.answer_pings {
                        self.send(&frame(PING, ACK, 0, &f.payload));
                    }
                    return Some(f);
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            let mut chunk = [0u8; 16384];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return None,
            }
        }
    }

    /// Frames until one matches `want` (returned) or `limit` passes / the connection closes (None).
    pub fn until(&mut self, limit: Duration, want: impl Fn(&Frame) -> bool) -> Option<Frame> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let f = self.next(deadline.saturating_duration_since(Instant::now()))?;
            if want(&f) {
                return Some(f);
            }
        }
        None
    }

    /// Whether the server closed the connection within `limit` (frames before that are read and
    /// dropped, PINGs answered).
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.next(deadline.saturating_duration_since(Instant::now())).is_none() {
                return Instant::now() < deadline;
            }
        }
        false
    }
}
