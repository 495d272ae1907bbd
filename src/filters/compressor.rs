//! `envoy.filters.http.compressor`: which response is compressed, with which encoding, and what
//! its head then says (Envoy's `CompressorFilter::encodeHeaders`), and the streaming encoders of
//! the three libraries (`Encoder`). Several compressor filters in one chain decide together, as
//! Envoy's do: the encoding is chosen once per response from the request's `accept-encoding`
//! among the filters whose content types allow the response, then each filter, in encode order
//! (the chain's reverse), compresses, or not, and counts. Owns no I/O: the shard's compressing
//! relay (`shard::compress`) applies the decision to the head it wrote and to the body.

use super::CompressAsk;
use crate::config::{self, CompressorLibrary, GzipStrategy};
use crate::http::{header_is, ResponseHead};
use crate::stats::CompressorStats;
use std::io::Write;

/// One compressor filter, compiled.
#[derive(Debug)]
pub struct Compressor {
    config: config::Compressor,
    /// `content-encoding` it produces.
    pub(super) encoding: &'static str,
    /// Index of its stats in the chain's.
    pub(super) stats: usize,
}

impl Compressor {
    pub(super) fn compile(config: &config::Compressor, stats: usize) -> Compressor {
        let encoding = match config.library {
            CompressorLibrary::Gzip { .. } => "gzip",
            CompressorLibrary::Brotli { .. } => "br",
            CompressorLibrary::Zstd { .. } => "zstd",
        };
        Compressor { config: config.clone(), encoding, stats }
    }

    /// `<library name>.<library>`, the stat names' middle part.
    pub(super) fn stat_rest(&self) -> String {
        let lib = match self.config.library {
            CompressorLibrary::Gzip { .. } => "gzip",
            CompressorLibrary::Brotli { .. } => "brotli",
            CompressorLibrary::Zstd { .. } => "zstd",
        };
        format!("{}.{lib}", self.config.library_name)
    }

    /// Envoy removes the header only when the filter is enabled.
    pub(super) fn removes_accept_encoding(&self) -> bool {
        self.config.enabled && self.config.remove_accept_encoding_header
    }

    pub(super) fn response_prefix(&self) -> bool {
        self.config.stats_response_prefix
    }

    fn content_type_allowed(&self, content_type: Option<&[u8]>) -> bool {
        match content_type.map(media_type).filter(|t| !t.is_empty()) {
            Some(t) => self.config.content_types.iter().any(|c| c.as_bytes().eq_ignore_ascii_case(t)),
            None => true,
        }
    }
}

/// A response head's facts the decision reads, as the filters before have left them.
pub(super) struct HeadState<'h> {
    pub status: u16,
    /// The response has no body (Envoy's `end_stream` on its headers: HEAD, 204, 304, length 0).
    pub end_stream: bool,
    pub content_length: Option<&'h [u8]>,
    pub content_type: Option<&'h [u8]>,
    pub cache_control: Option<&'h [u8]>,
    pub etag: Option<&'h [u8]>,
    pub content_encoding: bool,
    pub transfer_encoding: Option<&'h [u8]>,
}

impl<'h> HeadState<'h> {
    pub(super) fn of(head: &ResponseHead<'h>, end_stream: bool) -> Self {
        let find = |name: &str| head.headers.iter().find(|h| header_is(h.name, name)).map(|h| h.value);
        HeadState {
            status: head.status,
            end_stream,
            content_length: find("content-length"),
            content_type: find("content-type"),
            cache_control: find("cache-control"),
            etag: find("etag"),
            content_encoding: find("content-encoding").is_some(),
            transfer_encoding: find("transfer-encoding"),
        }
    }
}

/// What the filters decided for one response head.
#[derive(Debug, Default)]
pub struct Decision {
    /// The filter that compresses (index in the chain), and its encoding.
    pub compress: Option<(usize, &'static str)>,
    /// `vary` gets `Accept-Encoding`.
    pub vary: bool,
    /// A filter that did not compress added `vary` before the one that did added
    /// `content-encoding` (Envoy's header order then).
    pub vary_first: bool,
    pub etag: EtagEdit,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum EtagEdit {
    #[default]
    Keep,
    Remove,
    Weaken,
}

/// The encoding chosen from `accept-encoding` (Envoy's `EncodingDecision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Choice<'a> {
    Compressor(&'a str),
    Identity,
    Wildcard(&'a str),
    NotValid,
}

/// Envoy's `chooseEncoding`: `registered` are the chain's compressor filters (config order) with
/// whether the response's content type allows each and whether it is `choose_first`.
fn choose<'a>(accept: &[u8], registered: &[(&'a str, bool, bool)]) -> Choice<'a> {
    // Encodings in registration order, first registration of each.
    let mut allowed: Vec<&'a str> = Vec::new();
    for (enc, ok, _) in registered {
        if *ok && !allowed.contains(enc) {
            allowed.push(enc);
        }
    }
    // The encoding that wins a tie of q-values: the last allowed `choose_first` filter's.
    let first = registered.iter().rev().find(|(_, ok, first)| *ok && *first).map(|(enc, _, _)| *enc);
    let text = String::from_utf8_lossy(accept);
    let mut pairs: Vec<(&str, f32)> = Vec::new();
    for token in text.split(',').filter(|t| !t.is_empty()) {
        let (name, params) = match token.split_once(';') {
            Some((n, p)) => (n.trim(), Some(p)),
            None => (token.trim(), None),
        };
        let mut q = 1.0f32;
        if let Some(params) = params {
            if let Some((key, value)) = params.split_once('=') {
                if key.trim().eq_ignore_ascii_case("q") {
                    match value.trim().parse::<f32>() {
                        Ok(v) => q = v,
                        Err(_) => continue,
                    }
                }
            }
        }
        pairs.push((name, q));
        if q == 0.0 {
            allowed.retain(|a| *a != name);
        }
    }
    if pairs.is_empty() || allowed.is_empty() {
        return Choice::NotValid;
    }
    let mut choice: (&str, f32) = ("identity", 0.0);
    for (name, q) in &pairs {
        let tie_won = *q == choice.1 && *q > 0.0 && first == Some(*name);
        if (*q > choice.1 || tie_won) && (allowed.contains(name) || *name == "identity" || *name == "*") {
            choice = (name, *q);
        }
    }
    if choice.1 == 0.0 {
        return Choice::NotValid;
    }
    match choice.0 {
        "identity" => Choice::Identity,
        "*" => Choice::Wildcard(allowed[0]),
        name => Choice::Compressor(allowed.iter().copied().find(|a| *a == name).unwrap_or("identity")),
    }
}

/// The response-head phase of the chain's compressor filters, in encode order: `ask` holds the
/// request's `accept-encoding` (None: it had none) and the filters its route turned off.
pub(super) fn decide(
    filters: &[(usize, &Compressor, &CompressorStats)],
    ask: &CompressAsk,
    head: &HeadState<'_>,
) -> Decision {
    let registered: Vec<(&str, bool, bool)> = filters
        .iter()
        .map(|(_, c, _)| (c.encoding, c.content_type_allowed(head.content_type), c.config.choose_first))
        .collect();
    let mut choice: Option<Choice<'_>> = None;
    let mut decision = Decision::default();
    // What earlier (in encode order) filters changed: a compressing one sets content-encoding,
    // removes content-length and perhaps the etag.
    let mut encoded = head.content_encoding;
    let mut content_length = head.content_length;
    let mut etag = head.etag;
    for (index, c, stats) in filters.iter().rev() {
        let cfg = &c.config;
        let route_off = 1u64.checked_shl(c.stats as u32).is_some_and(|bit| ask.disabled & bit != 0);
        let long_enough = cfg.enabled && !route_off && minimum_length(cfg, content_length, stats);
        let etag_allowed = || {
            let ok = !(cfg.disable_on_etag_header && etag.is_some());
            if !ok {
                stats.not_compressed_etag.inc();
            }
            ok
        };
        let compressible = long_enough
            && head.status != 101
            && c.content_type_allowed(head.content_type)
            && !head.cache_control.is_some_and(no_transform)
            && etag_allowed()
            && !encoded
            && !cfg.uncompressible_response_codes.contains(&head.status);
        let saw = 1u64.checked_shl(c.stats as u32).is_some_and(|bit| ask.saw_accept & bit != 0);
        let mut accepted = || match ask.accept_encoding.as_deref().filter(|_| saw) {
            None => {
                stats.no_accept_header.inc();
                false
            }
            Some(accept) => {
                let chosen = *choice.get_or_insert_with(|| choose(accept, &registered));
                should_compress(c.encoding, chosen, stats)
            }
        };
        // Envoy's order: the accept-encoding decision (and its counters) comes before the other
        // conditions, so a filter after the one that compressed still counts as overshadowed.
        if !head.end_stream
            && long_enough
            && accepted()
            && compressible
            && transfer_encoding_allowed(head.transfer_encoding)
        {
            stats.compressed.inc();
            decision.vary_first = decision.vary;
            decision.compress = Some((*index, c.encoding));
            if let Some(value) = etag {
                let weak = value.len() >= 2 && (value[0] == b'W' || value[0] == b'w') && value[1] == b'/';
                if !weak {
                    decision.etag =
                        if cfg.weaken_etag_on_compress { EtagEdit::Weaken } else { EtagEdit::Remove };
                    if decision.etag == EtagEdit::Remove {
                        etag = None;
                    }
                }
            }
            encoded = true;
            content_length = None;
        } else {
            stats.not_compressed.inc();
        }
        if compressible {
            decision.vary = true;
        }
    }
    decision
}

/// Envoy's `isMinimumContentLength`: a response without a length is long enough.
fn minimum_length(cfg: &config::Compressor, content_length: Option<&[u8]>, stats: &CompressorStats) -> bool {
    let Some(value) = content_length else { return true };
    let ok = std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n >= cfg.min_content_length);
    if !ok {
        stats.content_length_too_small.inc();
    }
    ok
}

fn should_compress(encoding: &str, choice: Choice<'_>, stats: &CompressorStats) -> bool {
    match choice {
        Choice::Compressor(chosen) => {
            let ours = chosen.eq_ignore_ascii_case(encoding);
            if ours {
                stats.header_compressor_used.inc();
            } else {
                stats.header_compressor_overshadowed.inc();
            }
            ours
        }
        Choice::Identity => {
            stats.header_identity.inc();
            false
        }
        Choice::Wildcard(chosen) => {
            stats.header_wildcard.inc();
            chosen.eq_ignore_ascii_case(encoding)
        }
        Choice::NotValid => {
            stats.header_not_valid.inc();
            false
        }
    }
}

/// A body already transfer-coded with compression is not compressed again.
fn transfer_encoding_allowed(te: Option<&[u8]>) -> bool {
    let Some(te) = te else { return true };
    !te.split(|b| *b == b',').map(|t| t.trim_ascii()).any(|t| {
        ["gzip", "deflate", "compress", "br", "zstd"].iter().any(|c| t.eq_ignore_ascii_case(c.as_bytes()))
    })
}

fn no_transform(cache_control: &[u8]) -> bool {
    cache_control.split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"no-transform"))
}

/// A content type without its parameters.
fn media_type(value: &[u8]) -> &[u8] {
    value.split(|b| *b == b';').next().unwrap_or_default().trim_ascii()
}

/// A streaming encoder of one response body. Each `compress` flushes what it was given, so a
/// streamed body reaches the client as it arrives (Envoy compresses each data frame with a flush).
pub enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    /// The encoder of the chain's filter `index` (which `decide` chose).
    pub(super) fn of(c: &Compressor) -> std::io::Result<Encoder> {
        Ok(match c.config.library {
            CompressorLibrary::Gzip { level, strategy, .. } => {
                // miniz_oxide has no window-bits, memory-level or strategy knob through flate2; a
                // non-default strategy is approximated by the level it favours.
                let level = match strategy {
                    GzipStrategy::HuffmanOnly | GzipStrategy::Rle => 1,
                    _ => level,
                };
                Encoder::Gzip(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level)))
            }
            CompressorLibrary::Brotli {
                quality,
                mode,
                window_bits,
                input_block_bits,
                chunk_size,
                disable_literal_context_modeling,
            } => {
                use brotli::enc::backward_references::{BrotliEncoderMode, BrotliEncoderParams};
                let params = BrotliEncoderParams {
                    quality: quality as i32,
                    lgwin: window_bits as i32,
                    lgblock: input_block_bits as i32,
                    mode: match mode {
                        1 => BrotliEncoderMode::BROTLI_MODE_TEXT,
                        2 => BrotliEncoderMode::BROTLI_MODE_FONT,
                        _ => BrotliEncoderMode::BROTLI_MODE_GENERIC,
                    },
                    disable_literal_context_modeling: i32::from(disable_literal_context_modeling),
                    ..Default::default()
                };
                Encoder::Brotli(Box::new(brotli::CompressorWriter::with_params(
                    Vec::new(),
                    chunk_size as usize,
                    &params,
                )))
            }
            CompressorLibrary::Zstd { level, checksum, strategy, .. } => {
                use zstd::stream::raw::CParameter;
                use zstd::zstd_safe::Strategy;
                let mut raw = zstd::stream::raw::Encoder::new(level as i32)?;
                raw.set_parameter(CParameter::ChecksumFlag(checksum))?;
                let strategy = match strategy {
                    1 => Some(Strategy::ZSTD_fast),
                    2 => Some(Strategy::ZSTD_dfast),
                    3 => Some(Strategy::ZSTD_greedy),
                    4 => Some(Strategy::ZSTD_lazy),
                    5 => Some(Strategy::ZSTD_lazy2),
                    6 => Some(Strategy::ZSTD_btlazy2),
                    7 => Some(Strategy::ZSTD_btopt),
                    8 => Some(Strategy::ZSTD_btultra),
                    9 => Some(Strategy::ZSTD_btultra2),
                    _ => None,
                };
                if let Some(s) = strategy {
                    raw.set_parameter(CParameter::Strategy(s))?;
                }
                Encoder::Zstd(zstd::stream::write::Encoder::with_encoder(Vec::new(), raw))
            }
        })
    }

    /// Compresses `data` with a flush; the compressed bytes are appended to `out`.
    pub fn compress(&mut self, data: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
        let produced = match self {
            Encoder::Gzip(e) => {
                e.write_all(data)?;
                e.flush()?;
                e.get_mut()
            }
            Encoder::Brotli(e) => {
                e.write_all(data)?;
                e.flush()?;
                e.get_mut()
            }
            Encoder::Zstd(e) => {
                e.write_all(data)?;
                e.flush()?;
                e.get_mut()
            }
        };
        out.append(produced);
        Ok(())
    }

    /// Ends the stream; its last bytes are appended to `out`.
    pub fn finish(self, out: &mut Vec<u8>) -> std::io::Result<()> {
        let mut rest = match self {
            Encoder::Gzip(e) => e.finish()?,
            Encoder::Brotli(e) => e.into_inner(),
            Encoder::Zstd(e) => e.finish()?,
        };
        out.append(&mut rest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_q_value_among_the_registered_encodings_wins() {
        let both = [("gzip", true, false), ("br", true, false)];
        assert_eq!(choose(b"br;q=0.9, gzip;q=0.5", &both), Choice::Compressor("br"));
        assert_eq!(choose(b"gzip, br", &both), Choice::Compressor("gzip"));
        assert_eq!(choose(b"*", &both), Choice::Wildcard("gzip"));
        assert_eq!(choose(b"gzip;q=0, *", &both), Choice::Wildcard("br"));
        assert_eq!(choose(b"identity", &both), Choice::Identity);
        assert_eq!(choose(b"deflate", &both), Choice::NotValid);
        assert_eq!(choose(b"gzip;q=0", &[("gzip", true, false)]), Choice::NotValid);
        assert_eq!(choose(b"gzip", &[("gzip", false, false)]), Choice::NotValid);
        // choose_first wins ties only (observed with Envoy 1.40).
        let br_first = [("gzip", true, false), ("br", true, true)];
        assert_eq!(choose(b"gzip, br", &br_first), Choice::Compressor("br"));
        assert_eq!(choose(b"gzip;q=0.9, br;q=0.5", &br_first), Choice::Compressor("gzip"));
        assert_eq!(choose(b"*", &br_first), Choice::Wildcard("gzip"));
        assert_eq!(choose(b"identity, gzip", &br_first), Choice::Identity);
    }

    #[test]
    fn each_encoder_round_trips_a_streamed_body() {
        let body: Vec<u8> = (0..20_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        let libs = [
            CompressorLibrary::Gzip {
                level: 6,
                strategy: GzipStrategy::Default,
                memory_level: 5,
                window_bits: 12,
                chunk_size: 4096,
            },
            CompressorLibrary::Brotli {
                quality: 3,
                mode: 0,
                window_bits: 18,
                input_block_bits: 24,
                chunk_size: 4096,
                disable_literal_context_modeling: false,
            },
            CompressorLibrary::Zstd { level: 3, checksum: true, strategy: 0, chunk_size: 4096 },
        ];
        for library in libs {
            let cfg = config::Compressor {
                library_name: "t".into(),
                library,
                enabled: true,
                min_content_length: 30,
                content_types: vec![],
                disable_on_etag_header: false,
                uncompressible_response_codes: vec![],
                weaken_etag_on_compress: false,
                remove_accept_encoding_header: false,
                choose_first: false,
                stats_response_prefix: true,
            };
            let c = Compressor::compile(&cfg, 0);
            let mut e = Encoder::of(&c).expect("encoder");
            let mut out = Vec::new();
            for part in body.chunks(7000) {
                e.compress(part, &mut out).expect("compress");
            }
            e.finish(&mut out).expect("finish");
            let mut back = Vec::new();
            match c.encoding {
                "gzip" => {
                    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&out[..]), &mut back)
                        .expect("gunzip");
                }
                "br" => {
                    brotli::BrotliDecompress(&mut &out[..], &mut back).expect("unbrotli");
                }
                _ => back = zstd::decode_all(&out[..]).expect("unzstd"),
            }
            assert_eq!(back, body, "{}", c.encoding);
        }
    }
}
