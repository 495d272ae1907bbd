#!/usr/bin/env bash
# A CPU flamegraph of skiff proxying keep-alive HTTP/1.1 to an nginx `return 200` backend under a
# bounded wrk load, plus a `perf stat` summary per request. Loopback only. See perf/README.md.
#
#   perf/flamegraph.sh [DURATION_S] [CONNECTIONS]        (defaults: 10 64)
#
# Environment: SKIFF_ARGS (extra skiff flags, e.g. "--io-driver epoll"), SKIFF_CONCURRENCY (shards,
# default 1 so that wrk and nginx get the other core of a 2-core VM), PERF_TARGET_DIR (default
# target/perf), CALL_GRAPH (default "fp"; "dwarf" if frame pointers give broken stacks).
# Writes perf/out/<timestamp>/{flamegraph.svg,perf.folded,perf-stat.txt,wrk-*.txt,summary.txt}.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
DURATION=${1:-10}
CONNS=${2:-64}
CONCURRENCY=${SKIFF_CONCURRENCY:-1}
CALL_GRAPH=${CALL_GRAPH:-fp}
BACKEND_PORT=19180
SKIFF_PORT=19181
ADMIN_PORT=19182
TARGET=${PERF_TARGET_DIR:-target/perf}

need() { command -v "$1" >/dev/null 2>&1; }
if ! need perf || ! need wrk || ! need nginx; then
  apt-get update -qq
  # Debian bookworm packages perf as linux-perf; the kernel need not be Debian's for it to work.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf wrk nginx-light >/dev/null
fi
if ! need inferno-flamegraph || ! need inferno-collapse-perf; then
  cargo install --locked inferno
fi

# Frame pointers so that `perf record -g` can walk Rust stacks cheaply (std is prebuilt without
# them, so frames inside std may be cut short; CALL_GRAPH=dwarf walks those too, at a far larger
# perf.data). Full debug info names inlined functions. A separate target directory keeps the normal
# release build untouched.
RUSTFLAGS="-C force-frame-pointers=yes" CARGO_PROFILE_RELEASE_DEBUG=true \
  CARGO_TARGET_DIR="$TARGET" cargo build --release --locked -q --bin skiff
BIN=$TARGET/release/skiff

out=perf/out/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

nginx_ok_config "$work" "$BACKEND_PORT" >"$work/nginx.conf"
nginx -c "$work/nginx.conf" -p "$work" &
pids+=($!)

{
  printf 'admin:\n  address: { socket_address: { address: 127.0.0.1, port_value: %s } }\n' "$ADMIN_PORT"
  skiff_bench_config "$SKIFF_PORT" "$BACKEND_PORT" perf
} >"$work/skiff.yaml"
# SKIFF_ARGS is split on purpose: it holds several flags.
# shellcheck disable=SC2086
"$BIN" -c "$work/skiff.yaml" -l warning --concurrency "$CONCURRENCY" ${SKIFF_ARGS:-} 2>"$out/skiff.log" &
skiff_pid=$!
pids+=("$skiff_pid")
for _ in $(seq 50); do
  curl -fs "http://127.0.0.1:$ADMIN_PORT/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS -o /dev/null "http://127.0.0.1:$SKIFF_PORT/" # fails the script if the path is broken
driver=$(curl -fsS "http://127.0.0.1:$ADMIN_PORT/server_info" | sed -n 's/.*"io_driver": *"\([^"]*\)".*/\1/p')

# Warm the upstream pool and the page cache so the profile shows the steady state.
wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$SKIFF_PORT/" >/dev/null

requests() { awk '/requests in/ {print $1}' "$1"; }

# 1. The profile: sample skiff at 999 Hz (not a multiple of common timer rates) while wrk runs.
#    On a VM without hardware counters perf falls back to the cpu-clock software event.
echo "recording ${DURATION}s of wrk -c$CONNS through skiff (pid $skiff_pid, $driver) ..."
perf record -F 999 --call-graph "$CALL_GRAPH" -p "$skiff_pid" -o "$work/perf.data" -- sleep "$DURATION" \
  2>"$work/perf-record.log" &
perf_pid=$!
wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$SKIFF_PORT/" >"$out/wrk-record.txt"
wait "$perf_pid"
perf script -i "$work/perf.data" 2>/dev/null | inferno-collapse-perf >"$out/perf.folded"
inferno-flamegraph --title "skiff: wrk -c$CONNS, nginx return 200, $driver, $CONCURRENCY shard(s)" \
  <"$out/perf.folded" >"$out/flamegraph.svg"

# 2. The counters, in a second run of the same load (perf stat and perf record would disturb each
#    other). Events the machine lacks print as <not supported>, which the summary reports.
events=cycles,instructions,task-clock,context-switches,cpu-migrations,raw_syscalls:sys_enter
perf stat -e "$events" -x, -o "$out/perf-stat.txt" -p "$skiff_pid" -- sleep "$DURATION" &
stat_pid=$!
wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$SKIFF_PORT/" >"$out/wrk-stat.txt"
wait "$stat_pid"

reqs=$(requests "$out/wrk-stat.txt")
{
  echo "skiff $driver, $CONCURRENCY shard(s); wrk -t1 -c$CONNS -d${DURATION}s; $reqs requests"
  grep -E 'Requests/sec|^ +99%' "$out/wrk-stat.txt" | sed 's/^ */wrk: /'
  # perf stat -x, rows: value,unit,event,...
  awk -F, -v reqs="$reqs" '
    /^#/ || NF < 3 { next }
    $1 ~ /not (supported|counted)/ { printf "%-24s %s\n", $3, "not supported on this machine"; next }
    $3 == "task-clock" { printf "%-24s %.2f CPU-us per request\n", "task-clock", $1 * 1000 / reqs; next }
    { printf "%-24s %.3f per request (%s total)\n", $3, $1 / reqs, $1 }' "$out/perf-stat.txt"
  echo "top frames (self time, % of samples):"
  # Self time per leaf function, from the folded stacks: the last frame of each stack.
  awk '{n = $NF; $NF = ""; k = split($0, f, ";"); leaf = f[k]; sub(/ +$/, "", leaf); s[leaf] += n; t += n }
       END { for (l in s) printf "%6.2f%%  %s\n", 100 * s[l] / t, l }' "$out/perf.folded" | sort -rn | head -15
  echo "skiff's own frames (total time including callees, % of samples):"
  awk '{ n = $NF; t += n; $NF = ""; k = split($0, f, ";"); delete seen
         for (i = 1; i <= k; i++) { g = f[i]; sub(/ +$/, "", g); if (!(g in seen)) { seen[g] = 1; s[g] += n } } }
       END { for (g in s) if (g ~ /skiff::|monoio::/) printf "%6.2f%%  %s\n", 100 * s[g] / t, g }' \
    "$out/perf.folded" | sort -rn | head -12
} | tee "$out/summary.txt"
echo "flamegraph: $out/flamegraph.svg"
