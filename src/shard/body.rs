//! Message bodies in transit: one decoder (`Framing`: a length, chunked, or until the peer closes)
//! and one relay loop used for request bodies (client → upstream) and response bodies (upstream →
//! client) alike. Stops exactly at the body's end, so bytes after it (a pipelined request, an
//! upstream's unsolicited extra bytes) stay in the buffer for the caller to judge. Knows nothing of
//! heads, routes or pools.

use super::socket::{read_up_to, write_prefix, BODY_CHUNK};
use super::splice::{SpliceError, SPLICE_PAST};
use super::timer::Timers;
use crate::http::{BodyKind, ChunkedDecoder};
use bytes::{Buf, BytesMut};
use monoio::net::TcpStream;
use std::time::Duration;

/// Where a body in transit stands.
#[derive(Debug, Clone)]
pub(super) enum Framing {
    /// This many body bytes are still to come.
    Length(u64),
    Chunked(ChunkedDecoder),
    /// The body ends when the sender closes (responses only).
    UntilClose,
}

impl Framing {
    /// The framing of a body that has not started; None when there is no body.
    pub fn of(kind: BodyKind) -> Option<Framing> {
        match kind {
            BodyKind::None | BodyKind::Length(0) => None,
            BodyKind::Length(n) => Some(Framing::Length(n)),
            BodyKind::Chunked => Some(Framing::Chunked(ChunkedDecoder::new())),
            BodyKind::CloseDelimited => Some(Framing::UntilClose),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RelayError {
    /// The sender closed early or failed.
    Read,
    /// The receiver failed.
    Write,
    /// Neither side moved for the idle limit (Envoy's stream idle timeout).
    Idle,
    /// Broken chunked framing: nothing sane can follow on either connection.
    Framing,
}

impl From<SpliceError> for RelayError {
    fn from(e: SpliceError) -> RelayError {
        match e {
            SpliceError::Read => RelayError::Read,
            SpliceError::Write => RelayError::Write,
            SpliceError::Idle => RelayError::Idle,
        }
    }
}

/// Relays the rest of a body from `src` (after what `buf` already holds) to `dst`, as it is
/// (chunked framing included, validated on the way). Returns the payload bytes relayed (framing
/// excluded), which is what Envoy's `%BYTES_RECEIVED%`/`%BYTES_SENT%` count. `idle` bounds every
/// single read and write. A length-delimited body with `SPLICE_PAST` bytes or more still to come
/// (and none buffered) is spliced, not copied (`splice`).
pub(super) async fn relay(
    src: &mut TcpStream,
    buf: &mut BytesMut,
    dst: &mut TcpStream,
    framing: Framing,
    idle: Option<Idle<'_>>,
) -> Result<u64, RelayError> {
    match framing {
        Framing::Length(mut remaining) => {
            let total = remaining;
            while remaining > 0 {
                if buf.is_empty() {
                    if remaining >= SPLICE_PAST {
                        if let Some(spliced) = super::splice::relay(src, dst, remaining, idle).await {
                            return spliced.map(|()| total).map_err(RelayError::from);
                        }
                    }
                    read_within(src, buf, idle).await?;
                }
                let n = buf.len().min(usize::try_from(remaining).unwrap_or(usize::MAX));
                write_within(dst, buf, n, idle).await?;
                remaining -= n as u64;
            }
            Ok(total)
        }
        Framing::Chunked(mut decoder) => {
            let mut total = 0u64;
            loop {
                let (pos, payload, done) = walk_chunks(&mut decoder, buf)?;
                total += payload;
                if pos > 0 {
                    write_within(dst, buf, pos, idle).await?;
                }
                if done {
                    return Ok(total);
                }
                read_within(src, buf, idle).await?;
            }
        }
        Framing::UntilClose => {
            let mut total = 0u64;
            loop {
                if !buf.is_empty() {
                    let n = buf.len();
                    write_within(dst, buf, n, idle).await?;
                    total += n as u64;
                }
                match read_up_to(src, buf, BODY_CHUNK).await {
                    Ok(0) => return Ok(total),
                    Ok(_) => {}
                    Err(_) => return Err(RelayError::Read),
                }
            }
        }
    }
}

/// A chunked body to a client that cannot read chunked framing (HTTP/1.0): payload only; the
/// connection closes after it.
pub(super) async fn relay_dechunked(
    src: &mut TcpStream,
    buf: &mut BytesMut,
    dst: &mut TcpStream,
    out: &mut Vec<u8>,
    idle: Option<Idle<'_>>,
) -> Result<u64, RelayError> {
    let mut decoder = ChunkedDecoder::new();
    let mut total = 0u64;
    loop {
        let mut pos = 0;
        let mut done = false;
        while pos < buf.len() {
            let step = decoder.advance(&buf[pos..]).map_err(|_| RelayError::Framing)?;
            out.extend_from_slice(&buf[pos + step.data.start..pos + step.data.end]);
            total += step.data.len() as u64;
            pos += step.consumed;
            done = step.done;
            if done || step.consumed == 0 {
                break;
            }
        }
        buf.advance(pos);
        super::socket::write_out(dst, out).await.map_err(|_| RelayError::Write)?;
        if done {
            return Ok(total);
        }
        read_within(src, buf, idle).await?;
    }
}

/// Walks the chunked framing present in `buf`: (bytes that belong to the body, payload bytes among
/// them, whether the body ended).
fn walk_chunks(decoder: &mut ChunkedDecoder, buf: &[u8]) -> Result<(usize, u64, bool), RelayError> {
    let mut pos = 0;
    let mut payload = 0u64;
    while pos < buf.len() {
        let step = decoder.advance(&buf[pos..]).map_err(|_| RelayError::Framing)?;
        payload += step.data.len() as u64;
        pos += step.consumed;
        if step.done {
            return Ok((pos, payload, true));
        }
        if step.consumed == 0 {
            break;
        }
    }
    Ok((pos, payload, false))
}

/// How much of a body arrived together with its head.
pub(super) struct BodyScan {
    /// Body bytes present in the buffer (all of them when `complete`).
    pub len: usize,
    /// Of those, payload bytes (chunked framing excluded).
    pub payload: u64,
    pub complete: bool,
    /// Where the body's framing stands after `len` bytes; None when complete.
    pub rest: Option<Framing>,
}

/// Err: the chunked framing that arrived is already invalid (never forwarded).
pub(super) fn scan(kind: BodyKind, available: &[u8]) -> Result<BodyScan, RelayError> {
    Ok(match kind {
        BodyKind::None | BodyKind::CloseDelimited => {
            BodyScan { len: 0, payload: 0, complete: true, rest: None }
        }
        BodyKind::Length(n) => {
            let complete = n <= available.len() as u64;
            let len = if complete { n as usize } else { available.len() };
            let rest = (!complete).then(|| Framing::Length(n - len as u64));
            BodyScan { len, payload: len as u64, complete, rest }
        }
        BodyKind::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            let (len, payload, complete) = walk_chunks(&mut decoder, available)?;
            BodyScan { len, payload, complete, rest: (!complete).then_some(Framing::Chunked(decoder)) }
        }
    })
}

/// A limit on every single read and write of a relay: the shard's timers and the duration.
pub(super) type Idle<'t> = (&'t Timers, Duration);

/// `write_prefix` within `idle` when given: a peer that stops reading must not hold the exchange.
async fn write_within(
    dst: &mut TcpStream,
    buf: &mut BytesMut,
    n: usize,
    idle: Option<Idle<'_>>,
) -> Result<(), RelayError> {
    let written = match idle {
        Some((timers, limit)) => {
            timers.limit(limit, write_prefix(dst, buf, n)).await.ok_or(RelayError::Idle)?
        }
        None => write_prefix(dst, buf, n).await,
    };
    written.map_err(|_| RelayError::Write)
}

/// One read that must bring bytes (EOF is an error), within `idle` when given.
async fn read_within(
    src: &mut TcpStream,
    buf: &mut BytesMut,
    idle: Option<Idle<'_>>,
) -> Result<(), RelayError> {
    let read = match idle {
        Some((timers, limit)) => {
            timers.limit(limit, read_up_to(src, buf, BODY_CHUNK)).await.ok_or(RelayError::Idle)?
        }
        None => read_up_to(src, buf, BODY_CHUNK).await,
    };
    match read {
        Ok(0) | Err(_) => Err(RelayError::Read),
        Ok(_) => Ok(()),
    }
}
