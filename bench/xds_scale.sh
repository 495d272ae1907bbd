#!/usr/bin/env bash
# xDS at scale (issue 10): N EDS clusters of 20 endpoints each pushed at once over ADS (state of
# the world) to skiff and to the real Envoy, each its own node on the same management server
# (tests/support/xds_server.rs, tonic), then one endpoint of one cluster moved to another upstream
# in a push that repeats every resource, as a state-of-the-world server does. For each proxy and
# step: milliseconds from the push until the proxy has ACKed every type, until a request routed to
# that cluster is answered as the push says (the first push: served at all; the change: by the
# moved endpoint), and its RSS before and after. Envoy runs with --concurrency 1, skiff with 2
# shards (tests/support: Skiff::start).
#
#   bench/xds_scale.sh [N...]        (default: 1000 10000)
#
# The driver is the ignored test `scale_clusters_pushed_at_once` of tests/xds_grpc.rs, built
# with `cargo test --release` (so skiff is target/release/skiff). The build honours the usual
# CARGO_PROFILE_RELEASE_* variables: the figures in bench/README.md were taken with
# CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16. Each run is bounded
# (XDS_SCALE_LIMIT_S, default 900 s). Envoy: $ENVOY_BIN or `envoy` on PATH.
# Output: a markdown table on stdout and in bench/out/xds-scale-<timestamp>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(1000 10000)
limit="${XDS_SCALE_LIMIT_S:-900}"
out="bench/out/xds-scale-$(date -u +%Y%m%dT%H%M%SZ).md"
mkdir -p bench/out
cargo test --release --test xds_grpc --no-run >&2
{
    echo "| clusters | step | proxy | ACK ms | serves ms | RSS before MiB | RSS after MiB |"
    echo "|---|---|---|---|---|---|---|"
    for n in "${counts[@]}"; do
        XDS_SCALE_N="$n" timeout "$limit" cargo test --release --test xds_grpc scale_clusters_pushed_at_once \
            -- --ignored --nocapture 2>&1 |
            awk '/^SCALE / {
                for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
                printf "| %s | %s | %s | %s | %s | %s | %s |\n", v["n"], v["step"], v["proxy"], v["ack_ms"],
                    v["serve_ms"], v["rss_before_mib"], v["rss_after_mib"]
            }'
    done
} | tee "$out"
