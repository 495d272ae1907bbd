//! The compressor filters' share of a response: their decision applied to the head skiff wrote
//! (`on_head`: `content-encoding`, `vary`, no `content-length`, the ETag, the client's framing)
//! and the compressing body relay (`relay`), which decodes the upstream's framing, compresses
//! each read with a flush and sends the result chunked (to an HTTP/1.0 client: as it is, and the
//! connection closes after it). Only a request whose chain has a compressor filter comes here,
//! and only a response the filters chose to compress takes this relay: every other response
//! keeps the plain relay of `body`. Knows nothing of routes, pools or retries.

use super::body::{self, Framing, RelayError};
use super::headers::ResponseShape;
use super::socket::{read_up_to, write_out, BODY_CHUNK};
use crate::filters::compressor::Encoder;
use crate::filters::compressor::{Decision, EtagEdit};
use crate::filters::{CompressAsk, FilterChain, FilterStats};
use crate::http::{BodyKind, ChunkedDecoder, ResponseHead};
use crate::stats::CompressorStats;
use bytes::{Buf, BytesMut};
use monoio::net::TcpStream;
use std::rc::Rc;

/// What the request's compressor filters see of it: its `accept-encoding` and the shard's
/// stats of its chain.
#[derive(Clone, Copy)]
pub(super) struct Ask<'a> {
    pub ask: &'a CompressAsk,
    pub chain: &'a FilterChain,
    pub stats: &'a [FilterStats],
}

/// A response being compressed: its encoder, the filter's counters, the upstream body's framing
/// and whether the client's is chunked (else it ends with the connection: HTTP/1.0).
pub(super) struct Compressing {
    encoder: Encoder,
    stats: Rc<CompressorStats>,
    body: BodyKind,
    chunked: bool,
}

/// The filters' decision on a response head that skiff wrote into `out`: edits the head, and
/// returns the encoder when the body is compressed (then `shape` says how the client's body is
/// framed: chunked, or until close for an HTTP/1.0 client). `keep_alive`: the client's
/// connection may go on after this response as far as the request is concerned.
pub(super) fn on_head(
    ask: Ask<'_>,
    head: &ResponseHead<'_>,
    out: &mut Vec<u8>,
    shape: &mut ResponseShape,
    (http10, keep_alive): (bool, bool),
) -> Option<Compressing> {
    let end_stream = matches!(head.body, BodyKind::None | BodyKind::Length(0));
    let (decision, encoder) = ask.chain.on_response_head(ask.ask, head, end_stream, ask.stats);
    let Decision { compress, vary, vary_first, etag } = decision;
    let compressing = compress.is_some() && encoder.is_some();
    if !compressing && !vary {
        // The head stays as written: no copy.
        return None;
    }
    let head_end = out.windows(4).position(|w| w == b"\r\n\r\n")?;
    // Lines from after the status line to the blank line, as (start, end) with the CRLF.
    let status_end = out.iter().position(|b| *b == b'\n').map_or(0, |i| i + 1);
    let mut lines: Vec<Vec<u8>> =
        out[status_end..head_end + 2].split_inclusive(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
    let is = |line: &[u8], name: &str| {
        line.len() > name.len()
            && line[name.len()] == b':'
            && line[..name.len()].eq_ignore_ascii_case(name.as_bytes())
    };
    if compressing {
        lines.retain(|l| !is(l, "content-length"));
        match etag {
            EtagEdit::Keep => {}
            EtagEdit::Remove => lines.retain(|l| !is(l, "etag")),
            EtagEdit::Weaken => {
                for l in lines.iter_mut().filter(|l| is(l, "etag")) {
                    let value = l[5..].trim_ascii().to_vec();
                    *l = [b"etag: W/".as_slice(), &value, b"\r\n"].concat();
                }
            }
        }
    }
    // Envoy's order: each filter appends its lines as it runs.
    let encoding_line = compress
        .filter(|_| compressing)
        .map(|(_, encoding)| [b"content-encoding: ", encoding.as_bytes(), b"\r\n"].concat());
    if let Some(line) = encoding_line.clone().filter(|_| !vary_first) {
        lines.push(line);
    }
    if vary {
        match lines.iter_mut().find(|l| is(l, "vary")) {
            Some(l) => {
                let value = l[5..].trim_ascii().to_vec();
                let listed = value
                    .split(|b| *b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"accept-encoding"));
                if !listed {
                    *l = [b"vary: ".as_slice(), &value, b", Accept-Encoding\r\n"].concat();
                }
            }
            None => lines.push(b"vary: Accept-Encoding\r\n".to_vec()),
        }
    }
    if let Some(line) = encoding_line.filter(|_| vary_first) {
        lines.push(line);
    }
    if compressing {
        if http10 {
            // No chunked framing for this client: the body ends when the connection closes.
            lines.retain(|l| !is(l, "connection"));
            lines.push(b"connection: close\r\n".to_vec());
            shape.client_keep_alive = false;
        } else if head.body != BodyKind::Chunked {
            lines.push(b"transfer-encoding: chunked\r\n".to_vec());
            if head.body == BodyKind::CloseDelimited && keep_alive {
                // Chunked now, its end no longer the close: the client's connection goes on, as
                // Envoy's does.
                lines.retain(|l| !is(l, "connection"));
                shape.client_keep_alive = true;
            }
        }
    }
    let mut rebuilt = Vec::with_capacity(out.len() + 64);
    rebuilt.extend_from_slice(&out[..status_end]);
    for l in &lines {
        rebuilt.extend_from_slice(l);
    }
    rebuilt.extend_from_slice(b"\r\n");
    *out = rebuilt;
    let (encoder, stats) = encoder.filter(|_| compressing)?;
    Some(Compressing { encoder, stats, body: head.body, chunked: !http10 })
}

/// Removes every `name:` line from the head skiff wrote at the start of `out` (a compressor's
/// `remove_accept_encoding_header` on the upstream request).
pub(super) fn drop_header_lines(out: &mut Vec<u8>, name: &[u8]) {
    let Some(head_end) = out.windows(4).position(|w| w == b"\r\n\r\n") else { return };
    let mut at = out.iter().position(|b| *b == b'\n').map_or(head_end, |i| i + 1);
    let mut end = head_end + 2;
    while at < end {
        let line_end = out[at..end].windows(2).position(|w| w == b"\r\n").map_or(end, |i| at + i + 2);
        let line = &out[at..line_end];
        let named = line.len() > name.len()
            && line[name.len()] == b':'
            && line[..name.len()].eq_ignore_ascii_case(name);
        if named {
            out.drain(at..line_end);
            end -= line_end - at;
        } else {
            at = line_end;
        }
    }
}

/// Relays the response body from `src` (after what `buf` holds) to `dst` compressed; the head is
/// in `head_out` and goes first. Returns the bytes written to the client (compressed payload).
pub(super) async fn relay(
    src: &mut TcpStream,
    buf: &mut BytesMut,
    dst: &mut TcpStream,
    head_out: &mut Vec<u8>,
    c: Compressing,
    idle: Option<body::Idle<'_>>,
) -> Result<u64, RelayError> {
    let Compressing { encoder, stats, body, chunked } = c;
    let mut encoder = Some(encoder);
    let mut framing = Framing::of(body).unwrap_or(Framing::UntilClose);
    let mut plain = Vec::new();
    let mut packed = Vec::new();
    let mut sent = 0u64;
    loop {
        let done = take_payload(&mut framing, buf, &mut plain)?;
        if !plain.is_empty() || done {
            stats.total_uncompressed_bytes.add(plain.len() as u64);
            let before = packed.len();
            if let Some(e) = encoder.as_mut().filter(|_| !plain.is_empty()) {
                e.compress(&plain, &mut packed).map_err(|_| RelayError::Write)?;
            }
            plain.clear();
            if done {
                if let Some(e) = encoder.take() {
                    e.finish(&mut packed).map_err(|_| RelayError::Write)?;
                }
            }
            stats.total_compressed_bytes.add((packed.len() - before) as u64);
            sent += (packed.len() - before) as u64;
            frame(head_out, &packed, chunked, done);
            packed.clear();
        }
        if !head_out.is_empty() {
            write_within(dst, head_out, idle).await?;
        }
        if done {
            return Ok(sent);
        }
        let read = match idle {
            Some((timers, limit)) => {
                timers.limit(limit, read_up_to(src, buf, BODY_CHUNK)).await.ok_or(RelayError::Idle)?
            }
            None => read_up_to(src, buf, BODY_CHUNK).await,
        };
        match read {
            Ok(0) if matches!(framing, Framing::UntilClose) => framing = Framing::Length(0),
            Ok(0) | Err(_) => return Err(RelayError::Read),
            Ok(_) => {}
        }
    }
}

/// Moves the payload in `buf` to `plain` per the upstream's framing; true when the body ended.
fn take_payload(framing: &mut Framing, buf: &mut BytesMut, plain: &mut Vec<u8>) -> Result<bool, RelayError> {
    match framing {
        Framing::Length(remaining) => {
            let n = buf.len().min(usize::try_from(*remaining).unwrap_or(usize::MAX));
            plain.extend_from_slice(&buf[..n]);
            buf.advance(n);
            *remaining -= n as u64;
            Ok(*remaining == 0)
        }
        Framing::Chunked(decoder) => dechunk(decoder, buf, plain),
        Framing::UntilClose => {
            plain.extend_from_slice(buf);
            buf.clear();
            Ok(false)
        }
    }
}

fn dechunk(
    decoder: &mut ChunkedDecoder,
    buf: &mut BytesMut,
    plain: &mut Vec<u8>,
) -> Result<bool, RelayError> {
    let mut pos = 0;
    let mut done = false;
    while pos < buf.len() {
        let step = decoder.advance(&buf[pos..]).map_err(|_| RelayError::Framing)?;
        plain.extend_from_slice(&buf[pos + step.data.start..pos + step.data.end]);
        pos += step.consumed;
        done = step.done;
        if done || step.consumed == 0 {
            break;
        }
    }
    buf.advance(pos);
    Ok(done)
}

/// Appends compressed bytes as the client reads them: a chunk (and the last chunk at the end),
/// or as they are.
fn frame(out: &mut Vec<u8>, packed: &[u8], chunked: bool, last: bool) {
    if !chunked {
        out.extend_from_slice(packed);
        return;
    }
    if !packed.is_empty() {
        out.extend_from_slice(format!("{:x}\r\n", packed.len()).as_bytes());
        out.extend_from_slice(packed);
        out.extend_from_slice(b"\r\n");
    }
    if last {
        out.extend_from_slice(b"0\r\n\r\n");
    }
}

async fn write_within(
    dst: &mut TcpStream,
    out: &mut Vec<u8>,
    idle: Option<body::Idle<'_>>,
) -> Result<(), RelayError> {
    let written = match idle {
        Some((timers, limit)) => timers.limit(limit, write_out(dst, out)).await.ok_or(RelayError::Idle)?,
        None => write_out(dst, out).await,
    };
    written.map_err(|_| RelayError::Write)
}
