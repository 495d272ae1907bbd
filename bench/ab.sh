#!/usr/bin/env bash
# Two skiff binaries side by side (a change against its base), interleaved over rounds so drift
# hits both alike: the same nginx `return 200` backend, wrk keep-alive at each connection count,
# CPU microseconds per request of each skiff process (user + system, from /proc), per-round ratio
# B/A. Loopback only, ports 19200-19202 (AB_PORT=P: P, P+1, P+2).
#
#   bench/ab.sh A_BIN B_BIN [ROUNDS] [DURATION] [CONNS...]   (defaults: 5 3s 1 64)
#
# AB_WRK_ARGS='-H Connection:close': more wrk arguments (here: a connection per request).
# AB_PATH=/64k: the path requested (default /: a 2-byte body); /64k, /256k and /1m are bodies of
# that size (bench/lib.sh ok_backend_files).
# B_SED_FILE=script: B's config is A's run through `sed -f script` (one binary, two configs; e.g.
# bench/all-timeouts.sed sets every timeout skiff enforces).
#
# Example: build the base in a worktree, then
#   bench/ab.sh /work/base/target/release/skiff target/release/skiff
set -euo pipefail
cd "$(dirname "$0")/.."
A=${1:?usage: bench/ab.sh A_BIN B_BIN [ROUNDS] [DURATION] [CONNS...]}
B=${2:?usage: bench/ab.sh A_BIN B_BIN [ROUNDS] [DURATION] [CONNS...]}
ROUNDS=${3:-5}
DUR=${4:-3s}
shift $(($# < 4 ? $# : 4))
CONNS=("$@")
[ ${#CONNS[@]} -gt 0 ] || CONNS=(1 64)
BACKEND=${AB_PORT:-19200}
PORT_A=$((BACKEND + 1))
PORT_B=$((BACKEND + 2))
# shellcheck source=bench/lib.sh
. bench/lib.sh
ensure_wrk_nginx

bench_scratch

start_ok_backend "$BACKEND"
skiff_bench_config "$PORT_A" "$BACKEND" a >"$work/a.yaml"
skiff_bench_config "$PORT_B" "$BACKEND" b | sed -f "${B_SED_FILE:-/dev/null}" >"$work/b.yaml"
# AB_B_HTTP_FILTERS: flow-style http_filters entries run before B's router (the cost of a filter).
if [ -n "${AB_B_HTTP_FILTERS:-}" ]; then
  sed -i "s|http_filters: \[ { name: envoy.filters.http.router } \]|http_filters: [ $AB_B_HTTP_FILTERS, { name: envoy.filters.http.router } ]|" "$work/b.yaml"
fi
"$A" -c "$work/a.yaml" -l warning &
a_pid=$!
pids+=("$a_pid")
"$B" -c "$work/b.yaml" -l warning &
b_pid=$!
pids+=("$b_pid")
sleep 1

# AB_WRK_ARGS: more wrk arguments, e.g. '-H Connection:close' for connection per request.
read -r -a WRK_ARGS <<<"${AB_WRK_ARGS:-}"
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
measure() { # pid port conns -> cpu_us_per_req
  local t0 t1 reqs
  t0=$(ticks "$1")
  reqs=$(wrk -t1 -c"$3" -d"$DUR" "${WRK_ARGS[@]}" "http://127.0.0.1:$2${AB_PATH:-/}" | awk '/requests in/ {print $1}')
  t1=$(ticks "$1")
  awk -v a="$t0" -v b="$t1" -v n="$reqs" -v hz="$hz" 'BEGIN { printf "%.2f", (b-a)/hz*1e6/n }'
}
printf '%-6s %-6s %10s %10s %8s\n' conns round A_us/req B_us/req B/A
for c in "${CONNS[@]}"; do
  for r in $(seq 1 "$ROUNDS"); do
    # Alternate which goes first, so neither always runs on a warmer (or busier) machine.
    if [ $((r % 2)) -eq 1 ]; then
      a=$(measure "$a_pid" "$PORT_A" "$c"); b=$(measure "$b_pid" "$PORT_B" "$c")
    else
      b=$(measure "$b_pid" "$PORT_B" "$c"); a=$(measure "$a_pid" "$PORT_A" "$c")
    fi
    printf '%-6s %-6s %10s %10s %8s\n' "$c" "$r" "$a" "$b" "$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", b/a }')"
  done
done
