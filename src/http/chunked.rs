//! The chunked-body state machine (RFC 9112 §7.1). It keeps only a few integers between calls, so a
//! body can arrive split at any byte and nothing is buffered or copied: payload is reported as a
//! range of the caller's input.

use super::fields::{is_ctl, is_tchar};

/// Longest chunk-size line (size, whitespace and extensions, without CRLF) we walk over.
const MAX_SIZE_LINE: u32 = 4096;
/// Longest trailer section (every byte after the last-chunk line).
const MAX_TRAILERS: u32 = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum State {
    /// At the first byte of a chunk-size line; it must be a hex digit.
    #[default]
    SizeStart,
    SizeDigits {
        size: u64,
        line: u32,
    },
    /// Whitespace after the size: only a `;` extension may follow (BWS in the grammar).
    SizeWs {
        size: u64,
        line: u32,
    },
    Ext {
        size: u64,
        line: u32,
    },
    SizeLf {
        size: u64,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer field line, or of the CRLF that ends the message.
    TrailerStart {
        total: u32,
    },
    TrailerName {
        total: u32,
    },
    TrailerValue {
        total: u32,
    },
    TrailerLf {
        total: u32,
    },
    FinalLf,
    Done,
    /// Errors are sticky: the connection is unusable once framing is lost.
    Failed(&'static str),
}

#[inline]
fn hex_value(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}

fn size_line(line: u32) -> Result<u32, &'static str> {
    let line = line + 1;
    if line > MAX_SIZE_LINE {
        Err("chunk size line too long")
    } else {
        Ok(line)
    }
}

fn trailer_byte(total: u32) -> Result<u32, &'static str> {
    let total = total + 1;
    if total > MAX_TRAILERS {
        Err("trailers too large")
    } else {
        Ok(total)
    }
}

/// One framing byte (never called in `Data`, `Done` or `Failed`).
fn step(state: State, b: u8) -> Result<State, &'static str> {
    use State::*;
    Ok(match state {
        SizeStart => match hex_value(b) {
            Some(v) => SizeDigits { size: v, line: 1 },
            None => return Err("invalid chunk size"),
        },
        // The CR ending the line does not count toward its length.
        SizeDigits { size, .. } | Ext { size, .. } if b == b'\r' => SizeLf { size },
        SizeDigits { size, line } => {
            let line = size_line(line)?;
            match b {
                b';' => Ext { size, line },
                b' ' | b'\t' => SizeWs { size, line },
                b'\n' => return Err("bare LF in chunk size line"),
                _ => {
                    let v = hex_value(b).ok_or("invalid chunk size")?;
                    // Leading zeros are harmless; more than 64 significant bits are not.
                    if size > u64::MAX >> 4 {
                        return Err("chunk size overflows");
                    }
                    SizeDigits { size: (size << 4) | v, line }
                }
            }
        }
        SizeWs { size, line } => {
            let line = size_line(line)?;
            match b {
                b' ' | b'\t' => SizeWs { size, line },
                b';' => Ext { size, line },
                _ => return Err("invalid chunk size line"),
            }
        }
        Ext { size, line } => {
            let line = size_line(line)?;
            match b {
                b'\n' => return Err("bare LF in chunk extension"),
                _ if is_ctl(b) => return Err("control byte in chunk extension"),
                _ => Ext { size, line },
            }
        }
        SizeLf { size } => match (b, size) {
            (b'\n', 0) => TrailerStart { total: 0 },
            (b'\n', remaining) => Data { remaining },
            _ => return Err("bare CR in chunk size line"),
        },
        DataCr if b == b'\r' => DataLf,
        DataLf if b == b'\n' => SizeStart,
        DataCr | DataLf => return Err("missing CRLF after chunk data"),
        TrailerStart { total } => {
            let total = trailer_byte(total)?;
            match b {
                b'\r' => FinalLf,
                b'\n' => return Err("bare LF in trailers"),
                b' ' | b'\t' => return Err("obs-fold in trailers"),
                b':' => return Err("empty trailer name"),
                _ if is_tchar(b) => TrailerName { total },
                _ => return Err("invalid trailer name"),
            }
        }
        TrailerName { total } => {
            let total = trailer_byte(total)?;
            match b {
                b':' => TrailerValue { total },
                b' ' | b'\t' => return Err("whitespace before colon in trailer"),
                _ if is_tchar(b) => TrailerName { total },
                _ => return Err("invalid trailer name"),
            }
        }
        TrailerValue { total } => {
            let total = trailer_byte(total)?;
            match b {
                b'\r' => TrailerLf { total },
                b'\n' => return Err("bare LF in trailers"),
                _ if is_ctl(b) => return Err("control byte in trailer"),
                _ => TrailerValue { total },
            }
        }
        TrailerLf { total } if b == b'\n' => TrailerStart { total },
        TrailerLf { .. } | FinalLf if b != b'\n' => return Err("bare CR in trailers"),
        FinalLf => Done,
        // Handled by the caller; kept total so a refactor cannot turn this into a panic.
        TrailerLf { .. } | Data { .. } | Done | Failed(_) => state,
    })
}

pub(super) fn advance(state: &mut State, input: &[u8]) -> Result<ChunkProgress, ChunkError> {
    let mut pos = 0usize;
    let mut data = 0..0;
    loop {
        match *state {
            State::Done => break,
            State::Failed(reason) => return Err(ChunkError(reason)),
            State::Data { remaining } => {
                let available = input.len().saturating_sub(pos);
                // One data run per call, so the caller never has to stitch payload together.
                if available == 0 || !data.is_empty() {
                    break;
                }
                let take = usize::try_from(remaining).map_or(available, |r| r.min(available));
                data = pos..pos + take;
                pos += take;
                let remaining = remaining - take as u64;
                *state = if remaining == 0 { State::DataCr } else { State::Data { remaining } };
            }
            current => {
                let Some(&b) = input.get(pos) else { break };
                pos += 1;
                match step(current, b) {
                    Ok(next) => *state = next,
                    Err(reason) => {
                        *state = State::Failed(reason);
                        return Err(ChunkError(reason));
                    }
                }
            }
        }
    }
    Ok(ChunkProgress { consumed: pos, data, done: *state == State::Done })
}

/// Where a chunked body is, fed piece by piece as it arrives. After an error it keeps returning that
/// error; after the end it consumes nothing and reports `done`.
#[derive(Debug, Default, Clone)]
pub struct ChunkedDecoder {
    state: State,
}

/// One step of `ChunkedDecoder::advance`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkProgress {
    /// Bytes of the input that belong to the message and were walked over.
    pub consumed: usize,
    /// The payload bytes inside `input[..consumed]` (possibly empty): at most one contiguous run.
    pub data: std::ops::Range<usize>,
    /// The last chunk and trailers have been consumed: the message ends at `consumed`.
    pub done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkError(pub &'static str);

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder::default()
    }

    pub fn advance(&mut self, input: &[u8]) -> Result<ChunkProgress, ChunkError> {
        advance(&mut self.state, input)
    }
}

#[cfg(test)]
mod tests {
    use crate::http::{ChunkError, ChunkProgress, ChunkedDecoder};

    /// Feeds `pieces` in order (each call sees only the unconsumed rest of the current piece, as a
    /// caller that keeps unconsumed bytes would) and returns the payload, the bytes consumed and
    /// whether the message ended.
    fn decode_pieces(pieces: &[&[u8]]) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut dec = ChunkedDecoder::new();
        let mut payload = Vec::new();
        let mut consumed = 0;
        let mut done = false;
        for piece in pieces {
            let mut rest = *piece;
            loop {
                let p = dec.advance(rest)?;
                assert!(p.consumed <= rest.len());
                assert!(p.data.start <= p.data.end && p.data.end <= p.consumed);
                payload.extend_from_slice(&rest[p.data.clone()]);
                consumed += p.consumed;
                rest = &rest[p.consumed..];
                done = p.done;
                if p.done || p.consumed == 0 {
                    break;
                }
            }
            if done {
                break;
            }
        }
        Ok((payload, consumed, done))
    }

    fn decode(body: &[u8]) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        decode_pieces(&[body])
    }

    fn refused(body: &[u8]) -> &'static str {
        match decode(body) {
            Err(ChunkError(reason)) => reason,
            other => panic!("expected an error for {:?}, got {other:?}", String::from_utf8_lossy(body)),
        }
    }

    const BODIES: &[(&[u8], &[u8])] = &[
        (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
        (b"0\r\n\r\n", b""),
        (b"3\r\nabc\r\nA\r\n0123456789\r\n1\r\nz\r\n0\r\n\r\n", b"abc0123456789z"),
        (b"4;name=value;flag\r\nwiki\r\n5 ; q=\"a;b\"\r\npedia\r\n0;last\r\n\r\n", b"wikipedia"),
        (b"2\r\nhi\r\n0\r\nExpires: never\r\nX-Sum:\t1 2 3\r\nEmpty:\r\n\r\n", b"hi"),
        (b"000A\r\n0123456789\r\n00\r\n\r\n", b"0123456789"),
        (b"b\r\nhello world\r\n0\r\n\r\n", b"hello world"),
    ];

    #[test]
    fn chunked_bodies_decode_to_their_payload() {
        for (body, payload) in BODIES {
            assert_eq!(
                decode(body),
                Ok((payload.to_vec(), body.len(), true)),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn a_body_split_at_any_byte_decodes_the_same() {
        for (body, payload) in BODIES {
            for at in 0..=body.len() {
                let (a, b) = body.split_at(at);
                assert_eq!(
                    decode_pieces(&[a, b]),
                    Ok((payload.to_vec(), body.len(), true)),
                    "split at {at} of {:?}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }

    #[test]
    fn a_body_fed_byte_by_byte_decodes_the_same() {
        for (body, payload) in BODIES {
            let bytes: Vec<&[u8]> = body.chunks(1).collect();
            assert_eq!(decode_pieces(&bytes), Ok((payload.to_vec(), body.len(), true)));
        }
    }

    #[test]
    fn a_body_split_in_three_at_every_pair_of_points_decodes_the_same() {
        let (body, payload) = BODIES[4];
        for i in 0..=body.len() {
            for j in i..=body.len() {
                let got = decode_pieces(&[&body[..i], &body[i..j], &body[j..]]);
                assert_eq!(got, Ok((payload.to_vec(), body.len(), true)), "{i} {j}");
            }
        }
    }

    #[test]
    fn pipelined_bytes_after_the_body_are_not_consumed() {
        let body = b"3\r\nabc\r\n0\r\nX: y\r\n\r\n";
        let next = b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n";
        let all = [&body[..], &next[..]].concat();
        assert_eq!(decode(&all), Ok((b"abc".to_vec(), body.len(), true)));
        // Also when the end of the body and the next request arrive in the same read.
        let (a, b) = all.split_at(5);
        assert_eq!(decode_pieces(&[a, b]), Ok((b"abc".to_vec(), body.len(), true)));
    }

    #[test]
    fn each_call_reports_at_most_one_data_run() {
        let mut dec = ChunkedDecoder::new();
        let body = b"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n";
        let first = dec.advance(body).unwrap();
        assert_eq!(&body[first.data.clone()], b"abc");
        assert!(!first.done);
        let rest = &body[first.consumed..];
        let second = dec.advance(rest).unwrap();
        assert_eq!(&rest[second.data.clone()], b"def");
        assert!(second.done);
        assert_eq!(first.consumed + second.consumed, body.len());
    }

    #[test]
    fn a_large_chunk_is_passed_through_as_it_arrives() {
        let mut dec = ChunkedDecoder::new();
        let p = dec.advance(b"ffffffffffffffff\r\n0123").unwrap();
        assert_eq!(p, ChunkProgress { consumed: 22, data: 18..22, done: false });
        let p = dec.advance(b"4567").unwrap();
        assert_eq!(p, ChunkProgress { consumed: 4, data: 0..4, done: false });
    }

    #[test]
    fn a_finished_decoder_consumes_nothing_more() {
        let mut dec = ChunkedDecoder::new();
        assert!(dec.advance(b"0\r\n\r\n").unwrap().done);
        let p = dec.advance(b"5\r\nhello\r\n").unwrap();
        assert_eq!(p, ChunkProgress { consumed: 0, data: 0..0, done: true });
    }

    #[test]
    fn empty_input_makes_no_progress() {
        let mut dec = ChunkedDecoder::new();
        assert_eq!(dec.advance(b"").unwrap(), ChunkProgress { consumed: 0, data: 0..0, done: false });
    }

    #[test]
    fn incomplete_body_is_not_done() {
        let body = b"5\r\nhello\r\n0\r\nX: y\r\n\r\n";
        for end in 0..body.len() {
            let (_, consumed, done) = decode(&body[..end]).unwrap();
            assert!(!done, "prefix {end}");
            assert_eq!(consumed, end, "prefix {end}");
        }
    }

    #[test]
    fn non_hex_chunk_size_is_refused() {
        assert_eq!(refused(b"g\r\n"), "invalid chunk size");
        refused(b"5g\r\nhello\r\n");
        refused(b"0x5\r\nhello\r\n");
        refused(b"-5\r\nhello\r\n");
        refused(b"+5\r\nhello\r\n");
        refused(b"\r\n");
        refused(b";ext\r\n");
    }

    #[test]
    fn whitespace_before_the_chunk_size_is_refused() {
        refused(b" 5\r\nhello\r\n0\r\n\r\n");
        refused(b"\t5\r\nhello\r\n0\r\n\r\n");
    }

    #[test]
    fn whitespace_after_the_chunk_size_needs_an_extension() {
        refused(b"5 \r\nhello\r\n0\r\n\r\n");
        refused(b"5 6\r\nhello\r\n0\r\n\r\n");
        assert_eq!(decode(b"5\t;x\r\nhello\r\n0\r\n\r\n").unwrap().0, b"hello");
    }

    #[test]
    fn chunk_size_overflowing_u64_is_refused() {
        assert_eq!(refused(b"10000000000000000\r\n"), "chunk size overflows");
        refused(b"fffffffffffffffff\r\n");
        // Leading zeros are not significant.
        let mut dec = ChunkedDecoder::new();
        let p = dec.advance(b"0000000000000000000ffffffffffffffff\r\n").unwrap();
        assert!(!p.done);
    }

    #[test]
    fn missing_crlf_after_chunk_data_is_refused() {
        assert_eq!(refused(b"5\r\nhelloX\r\n0\r\n\r\n"), "missing CRLF after chunk data");
        refused(b"5\r\nhello\rX0\r\n\r\n");
        refused(b"5\r\nhello0\r\n\r\n");
        refused(b"5\r\nhello world\r\n0\r\n\r\n");
    }

    #[test]
    fn bare_lf_in_chunk_framing_is_refused() {
        refused(b"5\nhello\r\n0\r\n\r\n");
        refused(b"5\r\nhello\n0\r\n\r\n");
        refused(b"5;a=b\nhello\r\n0\r\n\r\n");
        refused(b"0\n\r\n");
        refused(b"0\r\n\n");
        refused(b"0\r\nX: y\n\r\n");
    }

    #[test]
    fn bare_cr_in_chunk_framing_is_refused() {
        refused(b"5\rhello\r\n0\r\n\r\n");
        refused(b"0\r\n\rX");
        refused(b"0\r\nX: y\rZ\r\n\r\n");
    }

    #[test]
    fn chunk_size_line_longer_than_4096_bytes_is_refused() {
        let at_limit = [b"5;".as_slice(), &[b'x'; 4094], b"\r\nhello\r\n0\r\n\r\n"].concat();
        assert_eq!(decode(&at_limit).unwrap().0, b"hello");
        let over = [b"5;".as_slice(), &[b'x'; 4095], b"\r\nhello\r\n0\r\n\r\n"].concat();
        assert_eq!(refused(&over), "chunk size line too long");
        let zeros = [&[b'0'; 4097][..], b"5\r\n"].concat();
        refused(&zeros);
    }

    #[test]
    fn trailer_section_longer_than_64k_is_refused() {
        let value = vec![b'v'; 60 * 1024];
        let fits = [b"0\r\nX: ".as_slice(), &value, b"\r\n\r\n"].concat();
        assert!(decode(&fits).unwrap().2);
        let too_big =
            [b"0\r\nX: ".as_slice(), &value, b"\r\nY: ", &vec![b'v'; 5 * 1024], b"\r\n\r\n"].concat();
        assert_eq!(refused(&too_big), "trailers too large");
    }

    #[test]
    fn control_bytes_in_extensions_and_trailers_are_refused() {
        assert_eq!(refused(b"5;a=\x00\r\nhello\r\n0\r\n\r\n"), "control byte in chunk extension");
        refused(b"5;a=\x7f\r\nhello\r\n0\r\n\r\n");
        assert_eq!(refused(b"0\r\nX: a\x01b\r\n\r\n"), "control byte in trailer");
        refused(b"0\r\nX: \x7f\r\n\r\n");
        assert_eq!(decode(b"5;a=\tb\r\nhello\r\n0\r\nX: a\tb\r\n\r\n").unwrap().0, b"hello");
    }

    #[test]
    fn malformed_trailer_lines_are_refused() {
        assert_eq!(refused(b"0\r\n X: y\r\n\r\n"), "obs-fold in trailers");
        refused(b"0\r\nX: y\r\n z\r\n\r\n");
        refused(b"0\r\n: y\r\n\r\n");
        refused(b"0\r\nX : y\r\n\r\n");
        refused(b"0\r\nNoColon\r\n\r\n");
        refused(b"0\r\nX(y): z\r\n\r\n");
    }

    #[test]
    fn errors_are_sticky() {
        let mut dec = ChunkedDecoder::new();
        let err = dec.advance(b"zz").unwrap_err();
        assert_eq!(dec.advance(b"0\r\n\r\n"), Err(err));
    }
}
