#!/usr/bin/env bash
# Envoy's classic service-mesh walkthrough (configs/envoy-examples/seed/) on one machine, with
# skiff in place of each of the four Envoys:
#
#   client    -> front-envoy     127.0.0.2:80   -> service_a_envoy 127.0.0.3:8786 -> service_a 127.0.0.1:8081
#   service_a -> service_a_envoy 127.0.0.3:8788 -> service_b_envoy 127.0.0.4:8789 -> service_b 127.0.0.1:8082
#   service_a -> service_a_envoy 127.0.0.3:8791 -> service_c_envoy 127.0.0.5:8790 -> service_c 127.0.0.1:8083
#
# The seed configs run as they are, except for what one machine forces: each proxy gets its own
# loopback address so the seed's ports (admin 9901 included) need not change, and the host names
# docker-compose would resolve come from a hosts file given with --hosts-file (/etc/hosts is left
# alone). Each skiff runs with the command line of the seed's docker-compose.yaml.
#
# Usage: scripts/demo.sh [--keep]
#   --keep     leave the mesh running until Ctrl-C, to curl it yourself
#   SKIFF_BIN  run this skiff binary instead of building one with cargo
set -Eeuo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
seed=$root/configs/envoy-examples/seed
demo_service=$root/scripts/demo_service.py
log_format='[METADATA][%Y-%m-%d %T.%e][%t][%l][%n] %v'
front_url=http://127.0.0.2:80/
requests=3
wait_s=20

# name, seed config, loopback address, --service-cluster/--service-node (docker-compose's).
proxies=(
  "front-envoy     front-envoy.yaml 127.0.0.2 front-envoy"
  "service_a_envoy service-a.yaml   127.0.0.3 service-a"
  "service_b_envoy service-b.yaml   127.0.0.4 service-b"
  "service_c_envoy service-c.yaml   127.0.0.5 service-c"
)
# name, listen address, URLs to call for each request: service_a reaches B and C only through
# its own sidecar's egress listeners, which is the point of the walkthrough.
services=(
  "service_a 127.0.0.1:8081 http://127.0.0.3:8788/ http://127.0.0.3:8791/"
  "service_b 127.0.0.1:8082"
  "service_c 127.0.0.1:8083"
)
# Which proxies a request went through, by the Host it reached a service with (proxies pass Host
# on unchanged): for the path printout only.
hops=(
  --hop "127.0.0.2:80=front-envoy 127.0.0.2:80 -> service_a_envoy 127.0.0.3:8786 (ingress)"
  --hop "127.0.0.3:8788=service_a_envoy 127.0.0.3:8788 (egress) -> service_b_envoy 127.0.0.4:8789"
  --hop "127.0.0.3:8791=service_a_envoy 127.0.0.3:8791 (egress) -> service_c_envoy 127.0.0.5:8790"
)

keep=false
for arg in "$@"; do
  case $arg in
    --keep) keep=true ;;
    -h | --help)
      sed -n '2,/^set -/{/^set -/d; s/^# \{0,1\}//; p}' "$0"
      exit 0
      ;;
    *)
      echo "demo.sh: unknown argument: $arg (try --help)" >&2
      exit 2
      ;;
  esac
done

die() {
  echo "demo.sh: $*" >&2
  exit 1
}

need() {
  command -v "$1" >/dev/null || die "needs $1: $2"
}

# Everything started, in start order; names[i] is the process behind pids[i] and its log's name.
pids=()
names=()
work=

stop_all() {
  local status=$? pid alive
  trap - EXIT INT TERM
  if ((${#pids[@]})); then
    echo "stopping the mesh (${#pids[@]} processes)"
    kill "${pids[@]}" 2>/dev/null || true
    for _ in {1..50}; do
      alive=false
      for pid in "${pids[@]}"; do
        kill -0 "$pid" 2>/dev/null && alive=true
      done
      $alive || break
      sleep 0.1
    done
    kill -KILL "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  [[ -z $work ]] || echo "configs, hosts file and logs: $work"
  exit "$status"
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'echo "demo.sh: line $LINENO: \"$BASH_COMMAND\" failed" >&2' ERR

# Prints the last lines of a process's log and stops: the log usually says why.
fail() {
  local name=$1
  shift
  echo "demo.sh: $*" >&2
  if [[ -s $work/$name.log ]]; then
    echo "--- last lines of $work/$name.log:" >&2
    tail -n 20 "$work/$name.log" >&2
  else
    echo "--- $work/$name.log is empty" >&2
  fi
  exit 1
}

start() {
  local name=$1
  shift
  "$@" >"$work/$name.log" 2>&1 &
  pids+=("$!")
  names+=("$name")
}

# Waits until name's address accepts connections, failing early if its process is gone.
wait_for() {
  local name=$1 pid=$2 addr=$3 port=$4
  local deadline=$((SECONDS + wait_s)) status=0
  until (exec 3<>"/dev/tcp/$addr/$port") 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" || status=$?
      fail "$name" "$name exited (status $status) before $addr:$port accepted connections"
    fi
    ((SECONDS < deadline)) || fail "$name" "$name: $addr:$port did not accept connections within $wait_s s"
    sleep 0.1
  done
}

# "admin PORT" and "listener PORT" lines for a config; cluster ports are other processes'.
ports_of() {
  awk '/^admin:/ { s = "admin" }
       /^[[:space:]]*listeners:/ { s = "listener" }
       /^[[:space:]]*clusters:/ { s = "cluster" }
       /port_value:/ && s != "cluster" { print s, $2 }' "$1"
}

pid_of() {
  local i
  for i in "${!names[@]}"; do
    [[ ${names[$i]} != "$1" ]] || {
      echo "${pids[$i]}"
      return
    }
  done
}

need python3 "it runs the three services (scripts/demo_service.py)"
need curl "it sends the requests"
need ss "it checks that the ports are free (package iproute2)"
[[ -n ${SKIFF_BIN:-} ]] || need cargo "it builds skiff (or set SKIFF_BIN to a skiff binary)"
[[ -d $seed ]] || die "no seed configs at $seed"

work=$(mktemp -d "${TMPDIR:-/tmp}/skiff-demo.XXXXXX")
hosts=$work/hosts

echo "== configs: the seed's, with each proxy's listener and admin addresses moved to its own loopback address"
{
  echo "# The names docker-compose resolved for the walkthrough, for skiff's --hosts-file."
  echo "127.0.0.1 localhost"
  for s in "${services[@]}"; do
    read -r -a f <<<"$s"
    echo "${f[1]%:*} ${f[0]}"
  done
  for p in "${proxies[@]}"; do
    read -r name _ addr _ <<<"$p"
    echo "$addr $name"
  done
} >"$hosts"
for p in "${proxies[@]}"; do
  read -r name file addr _ <<<"$p"
  sed -e "s/address: \"0\.0\.0\.0\"/address: \"$addr\"/" \
    -e "s/address: \"127\.0\.0\.1\"/address: \"$addr\"/" "$seed/$file" >"$work/$file"
  echo "  $file ($name):"
  # The seed files stay line-for-line, so comparing line by line is the whole diff.
  awk 'NR == FNR { seed[FNR] = $0; next }
       $0 != seed[FNR] { old = seed[FNR]; new = $0; sub(/^ +/, "", old); sub(/^ +/, "", new)
                         printf "    line %d: %s -> %s\n", FNR, old, new; n++ }
       END { exit n == 0 }' "$seed/$file" "$work/$file" ||
    die "$file: nothing to rewrite; has the seed changed?"
done
echo "  hosts file ($hosts):"
sed -n 's/^[0-9]/    &/p' "$hosts"

# Every address the mesh binds, as addr:port.
wanted=()
for s in "${services[@]}"; do
  read -r name listen _ <<<"$s"
  wanted+=("$listen")
done
for p in "${proxies[@]}"; do
  read -r name file addr _ <<<"$p"
  while read -r _ port; do
    wanted+=("$addr:$port")
  done < <(ports_of "$work/$file")
done
listening=$(ss -ltn | awk 'NR > 1 { print $4 }')
busy=()
for want in "${wanted[@]}"; do
  port=${want##*:}
  # A wildcard listener on the port takes it from every loopback address too.
  for taken in "$want" "0.0.0.0:$port" "*:$port" "[::]:$port"; do
    if grep -qxF -- "$taken" <<<"$listening"; then
      busy+=("$want (taken by a listener on $taken)")
      break
    fi
  done
done
if ((${#busy[@]})); then
  echo "demo.sh: the mesh needs these ports, but something already listens on them:" >&2
  printf '  %s\n' "${busy[@]}" >&2
  echo "Stop what holds them (\`ss -ltnp\` names the process) and run the demo again." >&2
  exit 1
fi

if [[ -n ${SKIFF_BIN:-} ]]; then
  bin=$SKIFF_BIN
  [[ -x $bin ]] || die "SKIFF_BIN=$bin is not an executable file"
else
  echo "== building skiff (cargo build --release)"
  (cd "$root" && cargo build --release)
  # cargo metadata knows CARGO_TARGET_DIR and any target-dir from .cargo/config.
  target_dir=$(cd "$root" && cargo metadata --no-deps --format-version 1 |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
  bin=$target_dir/release/skiff
fi

# The front proxy keeps the seed's port 80, which needs privilege.
unprivileged_from=$(cat /proc/sys/net/ipv4/ip_unprivileged_port_start 2>/dev/null || echo 1024)
if ((EUID != 0 && unprivileged_from > 80)) &&
  ! { command -v getcap >/dev/null && getcap "$bin" | grep -q cap_net_bind_service; }; then
  die "front-envoy listens on 127.0.0.2:80 as in the seed, and ports below $unprivileged_from need" \
    "privilege: run as root, or \`sudo setcap cap_net_bind_service=+ep $bin\`, or" \
    "\`sudo sysctl net.ipv4.ip_unprivileged_port_start=80\`"
fi

echo "== starting the services"
for s in "${services[@]}"; do
  read -r -a f <<<"$s"
  args=(--name "${f[0]}" --listen "${f[1]}")
  for url in "${f[@]:2}"; do
    args+=(--call "$url")
  done
  start "${f[0]}" python3 "$demo_service" "${args[@]}"
  echo "  ${f[0]} on ${f[1]}${f[2]:+, calling ${f[*]:2}}"
done
for s in "${services[@]}"; do
  read -r name listen _ <<<"$s"
  wait_for "$name" "$(pid_of "$name")" "${listen%:*}" "${listen##*:}"
done

echo "== starting skiff ($bin) as each Envoy of the walkthrough, e.g.:"
first=true
for p in "${proxies[@]}"; do
  read -r name file addr cluster <<<"$p"
  cmd=("$bin" -c "$work/$file" --v2-config-only -l info --service-cluster "$cluster"
    --service-node "$cluster" --log-format "$log_format" --hosts-file "$hosts")
  if $first; then
    shown=
    for arg in "${cmd[@]}"; do
      [[ $arg =~ ^[[:alnum:]_./:=-]+$ ]] || arg="'$arg'"
      shown+=" $arg"
    done
    echo " $shown"
    first=false
  fi
  start "$name" "${cmd[@]}"
done
for p in "${proxies[@]}"; do
  read -r name file addr _ <<<"$p"
  accepting=()
  while read -r kind port; do
    [[ $kind == listener ]] || continue
    wait_for "$name" "$(pid_of "$name")" "$addr" "$port"
    accepting+=("$addr:$port")
  done < <(ports_of "$work/$file")
  echo "  $name accepting on ${accepting[*]}"
done

echo "== $requests requests through the front proxy: curl -s $front_url"
answered=0
for ((i = 1; i <= requests; i++)); do
  rm -f "$work/answer.json" "$work/answer.headers"
  status=$(curl -s -o "$work/answer.json" -D "$work/answer.headers" -w '%{http_code}' \
    --max-time 10 "$front_url") || status="none (curl exit $?)"
  server=$(tr -d '\r' <"$work/answer.headers" 2>/dev/null | sed -n 's/^[Ss]erver: //p' | tail -n 1)
  echo "request $i: HTTP $status${server:+, server: $server}"
  [[ $status != 200 ]] || answered=$((answered + 1))
  if [[ -s $work/answer.json ]]; then
    python3 "$demo_service" --explain "${hops[@]}" <"$work/answer.json"
  fi
done
echo "$answered of $requests requests answered 200"

echo "== admin interfaces"
for p in "${proxies[@]}"; do
  read -r name file addr _ <<<"$p"
  port=$(ports_of "$work/$file" | awk '$1 == "admin" { print $2 }')
  ready=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$addr:$port/ready" || true)
  [[ $ready != 000 ]] || ready="no answer"
  printf '  %-16s http://%s:%s/  (GET /ready: %s)\n' "$name" "$addr" "$port" "$ready"
done

if $keep; then
  echo "== the mesh is running: try \`curl -s $front_url\`; logs in $work; Ctrl-C stops it"
  while sleep 1; do
    for i in "${!pids[@]}"; do
      kill -0 "${pids[$i]}" 2>/dev/null || fail "${names[$i]}" "${names[$i]} exited"
    done
  done
fi
((answered == requests)) || exit 1
