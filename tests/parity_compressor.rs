//! Envoy parity for the compressor filter: the same chain (gzip, brotli, zstd compressor filters,
//! `support/compressor.rs`) and the same requests go through the real Envoy and through skiff,
//! each in front of its own upstream. Compared: status, the headers the filter decides on
//! (`content-encoding`, `vary` and their order, `etag`, `content-length`, whether the body is
//! chunked), the body after decoding, and every `compressor.*` stat except
//! `total_compressed_bytes` (the libraries' outputs differ in size, not in content); a second
//! scenario removes `accept-encoding` and compares what the upstream saw. Envoy is found via
//! `$ENVOY_BIN` or PATH; without it these tests fail under CI and skip elsewhere.

mod support;

#[path = "support/envoy.rs"]
mod envoy;

#[path = "support/compressor.rs"]
mod compressor_support;

use compressor_support::{get, send, Got, Req};
use support::{scratch_dir, Skiff};

fn requests() -> Vec<Req> {
    let mut all = Vec::new();
    for accept in [
        Some("gzip"),
        Some("br"),
        Some("zstd"),
        Some("br;q=0.9, gzip;q=0.5"),
        Some("gzip;q=0.2, zstd;q=0.8"),
        Some("*"),
        Some("gzip;q=0, *"),
        Some("identity"),
        Some("deflate"),
        Some("gzip;q=0"),
        Some("GZIP;Q=0.5, br;q=x"),
        Some("gzip, br, zstd"),
        Some("zstd;q=0.5, gzip;q=0.5"),
        Some("identity, br"),
        None,
    ] {
        for path in [
            "/len/2000",
            "/len/99",
            "/len/100",
            "/chunked/10000",
            "/strong-etag",
            "/weak-etag",
            "/encoded",
            "/image",
        ] {
            all.push(get(path, accept));
        }
    }
    for accept in [Some("gzip"), Some("br"), None] {
        for path in ["/no-transform", "/vary", "/204", "/304", "/close/5000", "/len/0", "/chunked/1"] {
            // An uncompressed close-delimited body: Envoy chunks it, skiff relays it as it came
            // (README, deliberate differences); not the compressor's doing.
            if path.starts_with("/close/") && accept.is_none() {
                continue;
            }
            all.push(get(path, accept));
        }
        all.push(Req { method: "HEAD", path: "/len/2000", accept });
    }
    // The route that turns gzip off: it still takes part in the choice (br is overshadowed).
    for accept in [Some("gzip"), Some("br"), Some("*"), Some("gzip;q=0.5, zstd;q=0.4"), None] {
        all.push(get("/off/len/2000", accept));
    }
    all
}

struct Run {
    responses: Vec<Got>,
    stats: Vec<(String, u64)>,
}

fn drive(listener: std::net::SocketAddr, admin: std::net::SocketAddr, requests: &[Req]) -> Run {
    let responses = requests.iter().map(|r| send(listener, *r)).collect();
    let text = envoy::admin_get(admin, "/stats").map(|(_, t)| t).unwrap_or_default();
    let stats = envoy::parse_stats(&text)
        .into_iter()
        .filter(|(n, _)| n.contains(".compressor.") && !n.ends_with("total_compressed_bytes"))
        .collect();
    Run { responses, stats }
}

fn render(run: &Run, requests: &[Req]) -> Vec<String> {
    let mut out = Vec::new();
    for (r, got) in requests.iter().zip(&run.responses) {
        let mut line = format!("{} {} {:?}: {}", r.method, r.path, r.accept, got.status);
        for name in ["content-encoding", "vary", "etag", "content-length", "transfer-encoding", "x-seen-ae"] {
            if let Some(v) = got.header(name) {
                line.push_str(&format!(" {name}={v}"));
            }
        }
        // The filters' own lines in the order they were added.
        let order: Vec<&str> = got
            .headers
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| *n == "content-encoding" || *n == "vary")
            .collect();
        line.push_str(&format!(" order={}", order.join(",")));
        line.push_str(&format!(" body={} bytes {:x}", got.decoded.len(), checksum(&got.decoded)));
        out.push(line);
    }
    out.extend(run.stats.iter().map(|(n, v)| format!("stat {n} = {v}")));
    out
}

fn checksum(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325u64, |h, x| (h ^ u64::from(*x)).wrapping_mul(0x100000001b3))
}

type Config = fn(u16, u16, &std::path::Path, std::net::SocketAddr) -> String;

/// Envoy's and skiff's renders of `requests` through the config `make`.
fn both(bin: &std::path::Path, make: Config, requests: &[Req]) -> (Vec<String>, Vec<String>) {
    let (e, k) = std::thread::scope(|s| {
        let e = s.spawn(|| {
            let dir = scratch_dir("parity-compressor-envoy");
            let up = compressor_support::upstream();
            let log = dir.join("access.log");
            let env = envoy::Envoy::start(bin, &dir, |port, admin| make(port, admin, &log, up.addr));
            let run = drive(env.listener, env.admin, requests);
            drop(env);
            let _ = std::fs::remove_dir_all(&dir);
            run
        });
        let k = s.spawn(|| {
            let dir = scratch_dir("parity-compressor-skiff");
            let up = compressor_support::upstream();
            let log = dir.join("access.log");
            let sk = Skiff::start(&make(0, 0, &log, up.addr), &["--concurrency", "2"]);
            let run = drive(sk.listener("main"), sk.admin(), requests);
            drop(sk);
            let _ = std::fs::remove_dir_all(&dir);
            run
        });
        (e.join().expect("envoy side"), k.join().expect("skiff side"))
    });
    (render(&e, requests), render(&k, requests))
}

#[test]
fn compressor_chain_matches_envoy() {
    let Some(bin) = envoy::binary_or_skip("compressor_chain_matches_envoy") else { return };
    let (e, k) = both(&bin, compressor_support::config, &requests());
    assert!(e.iter().any(|l| l.contains("content-encoding=gzip")), "{e:#?}");
    assert_eq!(e, k, "\nenvoy:\n{}\nskiff:\n{}", e.join("\n"), k.join("\n"));
}

/// brotli removes `accept-encoding`: the upstream sees none, zstd (after it) counts
/// `no_accept_header`, gzip (before it) still compresses.
#[test]
fn remove_accept_encoding_header_matches_envoy() {
    let Some(bin) = envoy::binary_or_skip("remove_accept_encoding_header_matches_envoy") else { return };
    let requests: Vec<Req> = [Some("gzip"), Some("br"), Some("zstd"), Some("*"), None]
        .into_iter()
        .flat_map(|a| [get("/len/2000", a), get("/chunked/3000", a), get("/off/len/2000", a)])
        .collect();
    let (e, k) = both(&bin, compressor_support::config_removing, &requests);
    assert!(e.iter().any(|l| l.contains("x-seen-ae=-")), "{e:#?}");
    assert_eq!(e, k, "\nenvoy:\n{}\nskiff:\n{}", e.join("\n"), k.join("\n"));
}
