#!/usr/bin/env bash
# Acceptance check: changing a DNS answer and the config file under load fails no request.
# wrk keeps 64 keep-alive connections busy through skiff while (1) the name the cluster resolves
# flips from one backend to another (STRICT_DNS via --hosts-file, refresh 1 s) and (2) the config
# file is rewritten to route to a third backend. wrk must report zero non-2xx and zero socket errors,
# and each backend must have served traffic. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
ensure_wrk_nginx
cargo build --release -q
BIN=${CARGO_TARGET_DIR:-target}/release/skiff
PORT=18095
bench_scratch

# Three backends: 127.0.0.2 and 127.0.0.3 on the same port (the DNS flip), 127.0.0.4 (the reload).
cat >"$work/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.2:18096; location / { return 200 "b2"; } }
  server { listen 127.0.0.3:18096; location / { return 200 "b3"; } }
  server { listen 127.0.0.4:18096; location / { return 200 "b4"; } }
}
NGINX
nginx -c "$work/nginx.conf" -p "$work" &
pids+=($!)

config() { # cluster host
  cat <<YAML
static_resources:
  listeners:
    - name: main
      address: { socket_address: { address: 127.0.0.1, port_value: $PORT } }
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: main
                route_config:
                  virtual_hosts:
                    - { name: all, domains: ["*"], routes: [ { match: { prefix: "/" }, route: { cluster: $1 } } ] }
                http_filters: [ { name: envoy.filters.http.router } ]
  clusters:
    - name: by_name
      type: STRICT_DNS
      dns_refresh_rate: 1s
      connect_timeout: 1s
      load_assignment:
        cluster_name: by_name
        endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: backend.test, port_value: 18096 } } } } ] } ]
    - name: third
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: third
        endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.4, port_value: 18096 } } } } ] } ]
YAML
}
echo "127.0.0.2 backend.test" >"$work/hosts"
config by_name >"$work/skiff.yaml"
"$BIN" -c "$work/skiff.yaml" --hosts-file "$work/hosts" --config-check-interval-s 1 -l info 2>"$work/skiff.log" &
pids+=($!)
sleep 1

cat >"$work/count.lua" <<'LUA'
local seen = {}
response = function(status, headers, body) seen[body] = (seen[body] or 0) + 1 end
done = function() end
LUA
wrk -t1 -c64 -d9s "http://127.0.0.1:$PORT/" >"$work/wrk.txt" &
wrk_pid=$!
sleep 3
echo "t=3s: DNS answer for backend.test flips 127.0.0.2 -> 127.0.0.3"
echo "127.0.0.3 backend.test" >"$work/hosts.new" && mv "$work/hosts.new" "$work/hosts"
sleep 3
echo "t=6s: config rewritten to route to cluster 'third' (127.0.0.4)"
config third >"$work/skiff.yaml.new" && mv "$work/skiff.yaml.new" "$work/skiff.yaml"
wait "$wrk_pid"
cat "$work/wrk.txt"
echo "--- skiff log (changes seen):"
grep -E "resolves to|reloaded|rejected" "$work/skiff.log" || true
last=$(curl -s "http://127.0.0.1:$PORT/")
echo "answer after the run: $last"
if grep -qE "Non-2xx|Socket errors" "$work/wrk.txt"; then
  echo "FAIL: wrk saw errors"
  exit 1
fi
[ "$last" = b4 ] || { echo "FAIL: reload did not take effect"; exit 1; }
echo "PASS: zero non-2xx, zero socket errors across a DNS flip and a config reload"
