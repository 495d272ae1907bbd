//! The config of `envoy.filters.http.compressor` (`Compressor`) and of its three compression
//! libraries (`envoy.compression.{gzip,brotli,zstd}.compressor`), read from the kept `typed_config`
//! mapping and converted to `model::Compressor` with Envoy's defaults and ranges. Every field is
//! enforced or refused here with its path, except `request_direction_config`, which `convert`
//! warns about (skiff does not compress request bodies). Which filters exist and where they sit
//! is `convert`'s.

// Runtime keys are accepted so that `deny_unknown_fields` does, and never read.
#![allow(dead_code)]

use super::error::FieldPath;
use super::fields::{fail, read, Res};
use super::model::{Compressor, CompressorLibrary, GzipStrategy};
use super::raw::Ign;
use serde::Deserialize;

pub(super) const COMPRESSOR_NAME: &str = "envoy.filters.http.compressor";
pub(super) const COMPRESSOR_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor";
pub(super) const COMPRESSOR_PER_ROUTE_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.compressor.v3.CompressorPerRoute";
pub(super) const DECOMPRESSOR_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.decompressor.v3.Decompressor";
const GZIP_TYPE: &str = "type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip";
const BROTLI_TYPE: &str = "type.googleapis.com/envoy.extensions.compression.brotli.compressor.v3.Brotli";
const ZSTD_TYPE: &str = "type.googleapis.com/envoy.extensions.compression.zstd.compressor.v3.Zstd";

/// Envoy's content types compressed when `content_type` is empty.
pub const DEFAULT_CONTENT_TYPES: [&str; 18] = [
    "text/html",
    "text/plain",
    "text/css",
    "application/javascript",
    "application/x-javascript",
    "text/javascript",
    "text/x-javascript",
    "text/ecmascript",
    "text/js",
    "text/jscript",
    "text/x-js",
    "application/ecmascript",
    "application/x-json",
    "application/xml",
    "application/json",
    "image/svg+xml",
    "text/xml",
    "application/xhtml+xml",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCompressor {
    compressor_library: Option<RawLibrary>,
    response_direction_config: Option<RawResponseDirection>,
    request_direction_config: Option<serde_norway::Value>,
    choose_first: Option<bool>,
    // The deprecated top-level spellings of the response direction's fields.
    content_length: Option<u32>,
    content_type: Option<Vec<String>>,
    disable_on_etag_header: Option<bool>,
    remove_accept_encoding_header: Option<bool>,
    runtime_enabled: Option<RawFeatureFlag>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLibrary {
    name: Option<String>,
    typed_config: Option<serde_norway::Mapping>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResponseDirection {
    common_config: Option<RawCommon>,
    disable_on_etag_header: Option<bool>,
    remove_accept_encoding_header: Option<bool>,
    uncompressible_response_codes: Option<Vec<u32>>,
    status_header_enabled: Option<bool>,
    weaken_etag_on_compress: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommon {
    enabled: Option<RawFeatureFlag>,
    min_content_length: Option<u32>,
    content_type: Option<Vec<String>>,
}

/// `config.core.v3.RuntimeFeatureFlag`: skiff has no runtime, so the default applies.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeatureFlag {
    default_value: Option<bool>,
    runtime_key: Ign,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGzip {
    #[serde(rename = "@type")]
    type_url: Option<String>,
    memory_level: Option<u32>,
    compression_level: Option<String>,
    compression_strategy: Option<String>,
    window_bits: Option<u32>,
    chunk_size: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBrotli {
    #[serde(rename = "@type")]
    type_url: Option<String>,
    quality: Option<u32>,
    encoder_mode: Option<String>,
    window_bits: Option<u32>,
    input_block_bits: Option<u32>,
    chunk_size: Option<u32>,
    disable_literal_context_modeling: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZstd {
    #[serde(rename = "@type")]
    type_url: Option<String>,
    compression_level: Option<u32>,
    enable_checksum: Option<bool>,
    strategy: Option<String>,
    dictionary: Ign,
    chunk_size: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPerRoute {
    #[serde(rename = "@type")]
    type_url: Option<String>,
    disabled: Option<bool>,
    overrides: Option<RawOverrides>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverrides {
    response_direction_config: Option<RawResponseOverrides>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResponseOverrides {
    remove_accept_encoding_header: Option<bool>,
}

/// A route's or virtual host's `CompressorPerRoute` at `p`: whether it turns the filter off there.
pub(super) fn per_route(p: &FieldPath, fields: serde_norway::Mapping) -> Res<bool> {
    let r: RawPerRoute = read(p, fields)?;
    let remove =
        r.overrides.and_then(|o| o.response_direction_config).and_then(|d| d.remove_accept_encoding_header);
    if remove.is_some() {
        return fail(
            p.key("overrides").key("response_direction_config").key("remove_accept_encoding_header"),
            "a per-route remove_accept_encoding_header is not supported",
        );
    }
    Ok(r.disabled.unwrap_or(false))
}

/// The filter's config at `p`, and whether `request_direction_config` is present (the caller
/// warns: skiff compresses responses only).
pub(super) fn compressor(p: &FieldPath, fields: serde_norway::Mapping) -> Res<(Compressor, bool)> {
    let r: RawCompressor = read(p, fields)?;
    let lib_path = p.key("compressor_library");
    let Some(lib) = r.compressor_library else {
        return fail(lib_path, "compressor_library is required");
    };
    let library_name = lib.name.unwrap_or_default();
    let library = library(&lib_path.key("typed_config"), lib.typed_config.unwrap_or_default())?;

    let legacy_enabled = r.runtime_enabled.and_then(|f| f.default_value);
    let (stats_response_prefix, enabled, min_len, types, etag_off, remove_ae, codes, weaken) =
        match r.response_direction_config {
            Some(d) => {
                let dp = p.key("response_direction_config");
                if d.status_header_enabled == Some(true) {
                    return fail(dp.key("status_header_enabled"), "status_header_enabled is not supported");
                }
                let c = d.common_config.unwrap_or(RawCommon {
                    enabled: None,
                    min_content_length: None,
                    content_type: None,
                });
                (
                    true,
                    c.enabled.and_then(|f| f.default_value),
                    c.min_content_length,
                    c.content_type,
                    d.disable_on_etag_header,
                    d.remove_accept_encoding_header,
                    d.uncompressible_response_codes.unwrap_or_default(),
                    d.weaken_etag_on_compress.unwrap_or(false),
                )
            }
            None => (
                false,
                legacy_enabled,
                r.content_length,
                r.content_type,
                r.disable_on_etag_header,
                r.remove_accept_encoding_header,
                Vec::new(),
                false,
            ),
        };
    for (i, code) in codes.iter().enumerate() {
        if !(200..=599).contains(code) {
            return fail(
                p.key("response_direction_config").key("uncompressible_response_codes").idx(i),
                format!("a response code must be 200-599, got {code}"),
            );
        }
    }
    let types = types.filter(|t| !t.is_empty());
    let content_types = match types {
        Some(t) => t.into_iter().map(|t| t.to_ascii_lowercase()).collect(),
        None => DEFAULT_CONTENT_TYPES.iter().map(|t| t.to_string()).collect(),
    };
    Ok((
        Compressor {
            library_name,
            library,
            enabled: enabled.unwrap_or(true),
            // Envoy: 0 (or absent) means its default of 30.
            min_content_length: u64::from(min_len.filter(|n| *n > 0).unwrap_or(30)),
            content_types,
            disable_on_etag_header: etag_off.unwrap_or(false),
            uncompressible_response_codes: codes.into_iter().map(|c| c as u16).collect(),
            weaken_etag_on_compress: weaken,
            remove_accept_encoding_header: remove_ae.unwrap_or(false),
            choose_first: r.choose_first.unwrap_or(false),
            stats_response_prefix,
        },
        r.request_direction_config.is_some(),
    ))
}

fn library(p: &FieldPath, fields: serde_norway::Mapping) -> Res<CompressorLibrary> {
    let type_url = fields.get("@type").and_then(|v| v.as_str()).map(str::to_string);
    // Envoy's proto ranges; an absent field takes Envoy's default.
    let range = |field: &str, v: Option<u32>, lo: u32, hi: u32, default: u32| -> Res<u32> {
        match v {
            None => Ok(default),
            Some(n) if (lo..=hi).contains(&n) => Ok(n),
            Some(n) => fail(p.key(field), format!("{field} must be {lo}-{hi}, got {n}")),
        }
    };
    match type_url.as_deref() {
        Some(GZIP_TYPE) => {
            let g: RawGzip = read(p, fields)?;
            let level = match g.compression_level.as_deref() {
                None | Some("DEFAULT_COMPRESSION") => 6,
                Some("BEST_SPEED") | Some("COMPRESSION_LEVEL_1") => 1,
                Some("BEST_COMPRESSION") | Some("COMPRESSION_LEVEL_9") => 9,
                Some(l) => match l.strip_prefix("COMPRESSION_LEVEL_").and_then(|n| n.parse().ok()) {
                    Some(n @ 2..=8) => n,
                    _ => {
                        return fail(p.key("compression_level"), format!("unknown compression_level \"{l}\""))
                    }
                },
            };
            let strategy = match g.compression_strategy.as_deref() {
                None | Some("DEFAULT_STRATEGY") => GzipStrategy::Default,
                Some("FILTERED") => GzipStrategy::Filtered,
                Some("HUFFMAN_ONLY") => GzipStrategy::HuffmanOnly,
                Some("RLE") => GzipStrategy::Rle,
                Some("FIXED") => GzipStrategy::Fixed,
                Some(s) => {
                    return fail(
                        p.key("compression_strategy"),
                        format!("unknown compression_strategy \"{s}\""),
                    )
                }
            };
            Ok(CompressorLibrary::Gzip {
                level,
                strategy,
                memory_level: range("memory_level", g.memory_level, 1, 9, 5)?,
                window_bits: range("window_bits", g.window_bits, 9, 15, 12)?,
                chunk_size: range("chunk_size", g.chunk_size, 4096, 65536, 4096)?,
            })
        }
        Some(BROTLI_TYPE) => {
            let b: RawBrotli = read(p, fields)?;
            let mode = match b.encoder_mode.as_deref() {
                None | Some("DEFAULT") | Some("GENERIC") => 0,
                Some("TEXT") => 1,
                Some("FONT") => 2,
                Some(m) => return fail(p.key("encoder_mode"), format!("unknown encoder_mode \"{m}\"")),
            };
            Ok(CompressorLibrary::Brotli {
                quality: range("quality", b.quality, 0, 11, 3)?,
                mode,
                window_bits: range("window_bits", b.window_bits, 10, 24, 18)?,
                input_block_bits: range("input_block_bits", b.input_block_bits, 16, 24, 24)?,
                chunk_size: range("chunk_size", b.chunk_size, 4096, 65536, 4096)?,
                disable_literal_context_modeling: b.disable_literal_context_modeling.unwrap_or(false),
            })
        }
        Some(ZSTD_TYPE) => {
            let z: RawZstd = read(p, fields)?;
            if z.dictionary.is_some() {
                return fail(p.key("dictionary"), "zstd dictionaries are not supported");
            }
            let strategy = match z.strategy.as_deref() {
                None | Some("DEFAULT") => 0,
                Some(s) => match ZSTD_STRATEGIES.iter().position(|n| *n == s) {
                    Some(i) => i as u32 + 1,
                    None => return fail(p.key("strategy"), format!("unknown strategy \"{s}\"")),
                },
            };
            Ok(CompressorLibrary::Zstd {
                // ZSTD_CLEVEL_DEFAULT.
                level: range("compression_level", z.compression_level, 0, 22, 3)?,
                checksum: z.enable_checksum.unwrap_or(false),
                strategy,
                chunk_size: range("chunk_size", z.chunk_size, 4096, 65536, 4096)?,
            })
        }
        Some(other) => fail(
            p.key("@type"),
            format!("compression library \"{other}\" is not supported (gzip, brotli or zstd compressor)"),
        ),
        None => fail(p.key("@type"), "compressor_library.typed_config needs an \"@type\""),
    }
}

/// zstd's strategies, numbered from 1 as `ZSTD_strategy`.
const ZSTD_STRATEGIES: [&str; 9] =
    ["FAST", "DFAST", "GREEDY", "LAZY", "LAZY2", "BTLAZY2", "BTOPT", "BTULTRA", "BTULTRA2"];
