# shellcheck shell=bash
# Shared by bench/*.sh and perf/flamegraph.sh: source it, don't run it.

# The Envoy v3 config every measurement proxies through: one listener on 127.0.0.1:PORT, one route,
# one STATIC cluster on 127.0.0.1:BACKEND_PORT. Printed to stdout.
#   skiff_bench_config PORT BACKEND_PORT [STAT_PREFIX]
skiff_bench_config() {
  cat <<YAML
static_resources:
  listeners:
    - name: ${3:-bench}
      address: { socket_address: { address: 127.0.0.1, port_value: $1 } }
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: ${3:-bench}
                route_config:
                  virtual_hosts:
                    - { name: all, domains: ["*"], routes: [ { match: { prefix: "/" }, route: { cluster: backend } } ] }
                http_filters: [ { name: envoy.filters.http.router } ]
  clusters:
    - name: backend
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: backend
        endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $2 } } } } ] } ]
YAML
}

# skiff as an L4 proxy: the same cluster behind a tcp_proxy listener (no HTTP parsing), the path
# that should cost what bench/relay.rs costs.
#   skiff_tcp_bench_config PORT BACKEND_PORT
skiff_tcp_bench_config() {
  skiff_bench_config "$1" "$2" | awk '
    /- name: envoy.filters.network.http_connection_manager/ {
      print "            - name: envoy.filters.network.tcp_proxy"
      print "              typed_config:"
      print "                \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
      print "                stat_prefix: bench"
      print "                cluster: backend"
      skip = 1; next
    }
    skip && /^  clusters:/ { skip = 0 }
    !skip'
}

# Envoy's v3 form of skiff_bench_config: the same listener, route and cluster, printed to stdout.
#   envoy_bench_config PORT BACKEND_PORT
envoy_bench_config() {
  cat <<ENVOY
static_resources:
  listeners:
    - name: bench
      address: { socket_address: { address: 127.0.0.1, port_value: $1 } }
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: bench
                route_config:
                  virtual_hosts:
                    - { name: all, domains: ["*"], routes: [ { match: { prefix: "/" }, route: { cluster: backend } } ] }
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
    - name: backend
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: backend
        endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $2 } } } } ] } ]
ENVOY
}

# A scratch directory ($work) and a list of started processes ($pids), both cleaned up when the
# script exits or is interrupted: kill what is listed, wait for it, remove the directory.
bench_scratch() {
  work=$(mktemp -d)
  pids=()
  trap bench_cleanup EXIT INT TERM
}
bench_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}

# Starts the `200 ok` nginx backend (nginx_ok_config) on 127.0.0.1:PORT under $work and lists it
# in $pids. Needs bench_scratch first.
#   start_ok_backend PORT
start_ok_backend() {
  ok_backend_files "$work"
  nginx_ok_config "$work" "$1" >"$work/nginx.conf"
  nginx -c "$work/nginx.conf" -p "$work" &
  pids+=($!)
}

# wrk and nginx from Debian's packages when missing.
ensure_wrk_nginx() {
  if ! command -v wrk >/dev/null 2>&1 || ! command -v nginx >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null
  fi
}

# The large bodies nginx_ok_config serves (/64k, /256k, /1m), under WORKDIR/www; nginx workers drop root
# to nobody and must read them.
#   ok_backend_files WORKDIR
ok_backend_files() {
  mkdir -p "$1/www"
  head -c 65536 /dev/zero | tr '\0' x >"$1/www/64k"
  head -c 262144 /dev/zero | tr '\0' x >"$1/www/256k"
  head -c 1048576 /dev/zero | tr '\0' x >"$1/www/1m"
  chmod 755 "$1" "$1/www"
  chmod 644 "$1/www/64k" "$1/www/256k" "$1/www/1m"
}

# An nginx that answers `200 ok` on 127.0.0.1:PORT with one worker, its files under WORKDIR: the
# cheapest backend there is, so the proxy is what a measurement sees; /64k, /256k and /1m are
# bodies of that size (ok_backend_files). Printed to stdout.
#   nginx_ok_config WORKDIR PORT
nginx_ok_config() {
  cat <<NGINX
worker_processes 1;
daemon off;
pid $1/nginx.pid;
error_log $1/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$2;
    location / { return 200 "ok"; }
    location ~ ^/(64k|256k|1m)\$ { root $1/www; }
  }
}
NGINX
}

# The bench listener behind TLS (a self-signed ECDSA P-256 certificate; TLS 1.3 as negotiated by
# default), in the Envoy v3 form both skiff and Envoy load. Session resumption is off on every TLS
# system in bench/run.sh, so a connection-per-request run is a full handshake per request.
#   tls_bench_config PORT BACKEND_PORT CERT KEY
tls_bench_config() {
  cat <<ENVOY
static_resources:
  listeners:
    - name: bench
      address: { socket_address: { address: 127.0.0.1, port_value: $1 } }
      filter_chains:
        - transport_socket:
            name: envoy.transport_sockets.tls
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
              disable_stateful_session_resumption: true
              disable_stateless_session_resumption: true
              common_tls_context:
                tls_certificates:
                  - { certificate_chain: { filename: "$3" }, private_key: { filename: "$4" } }
          filters:
$(envoy_bench_config "$1" "$2" | sed -n '/^            - name: envoy.filters.network.http_connection_manager/,/^  clusters:/p' | sed '$d')
$(envoy_bench_config "$1" "$2" | sed -n '/^  clusters:/,$p')
ENVOY
}

# The bench listener with codec AUTO, so that h2load's prior-knowledge HTTP/2 (h2c) is served.
#   h2c_bench_config PORT BACKEND_PORT
h2c_bench_config() {
  envoy_bench_config "$1" "$2" | sed 's/^\(                stat_prefix: bench\)$/\1\n                codec_type: AUTO/'
}
