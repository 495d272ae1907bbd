#!/usr/bin/env bash
# A first side-by-side: the same nginx `return 200` backend measured directly and through skiff,
# with wrk, interleaved over several rounds so drift hits both alike. Loopback only.
#
#   bench/quick.sh [ROUNDS] [DURATION] [CONNECTIONS]     (defaults: 3 10s 64)
#
# Needs wrk and nginx (installs them with apt-get when missing). Prints requests/s and p99 per run
# and the medians; CPU-µs per request of the skiff process is printed too.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
DURATION=${2:-10s}
CONNS=${3:-64}
BACKEND_PORT=18090
SKIFF_PORT=18091

# shellcheck source=bench/lib.sh
. bench/lib.sh
ensure_wrk_nginx
cargo build --release -q
BIN=${CARGO_TARGET_DIR:-target}/release/skiff

bench_scratch

start_ok_backend "$BACKEND_PORT"

skiff_bench_config "$SKIFF_PORT" "$BACKEND_PORT" >"$work/skiff.yaml"
# SKIFF_ARGS holds several flags: split on purpose.
# shellcheck disable=SC2086
"$BIN" -c "$work/skiff.yaml" -l warning ${SKIFF_ARGS:-} &
skiff_pid=$!
pids+=("$skiff_pid")
sleep 1

cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
run() { # name url -> "rps p99_us requests"
  local out
  out=$(wrk -t1 -c"$CONNS" -d"$DURATION" --latency "$2")
  local rps p99 reqs
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v)} else if (v ~ /ms$/) {sub(/ms/,"",v); v=v*1000} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000000}; print v}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  echo "$rps $p99 $reqs"
}
hz=$(getconf CLK_TCK)
printf '%-8s %-6s %12s %10s %14s\n' target round req/s p99_us skiff_cpu_us/req
for r in $(seq 1 "$ROUNDS"); do
  read -r rps p99 _ < <(run direct "http://127.0.0.1:$BACKEND_PORT/")
  printf '%-8s %-6s %12s %10s %14s\n' direct "$r" "$rps" "$p99" -
  echo "direct $rps $p99" >>"$work/results"
  t0=$(cpu_ticks "$skiff_pid")
  read -r rps p99 reqs < <(run skiff "http://127.0.0.1:$SKIFF_PORT/")
  t1=$(cpu_ticks "$skiff_pid")
  cpu=$(awk -v a="$t0" -v b="$t1" -v n="$reqs" -v hz="$hz" 'BEGIN { printf "%.1f", (b-a)/hz*1e6/n }')
  printf '%-8s %-6s %12s %10s %14s\n' skiff "$r" "$rps" "$p99" "$cpu"
  echo "skiff $rps $p99" >>"$work/results"
done
echo
median() { sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
for t in direct skiff; do
  rps=$(awk -v t="$t" '$1==t {print $2}' "$work/results" | median)
  p99=$(awk -v t="$t" '$1==t {print $3}' "$work/results" | median)
  printf 'median %-7s req/s %s  p99 %s us\n' "$t" "$rps" "$p99"
done
