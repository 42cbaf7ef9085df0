#!/usr/bin/env bash
# A local 3-node Keelson cluster on 127.0.0.1, formed with the `keelson cluster` CLI, with
# `keelson lb` (round-robin TCP) in front of the three APIs.
#
# Usage: deploy/cluster.sh [start] [DIR]   start (or restart) the cluster in the foreground;
#                                          Ctrl-C (or SIGTERM) stops everything it started
#        deploy/cluster.sh stop [DIR]      stop a cluster started from another shell
#        deploy/cluster.sh status [DIR]    `keelson cluster status` through the load balancer
#   DIR holds node1/ node2/ node3/ (data and keelson.log of each node), lb.log and pids;
#   default ./keelson-cluster. Starting again on the same DIR restarts the same cluster (same
#   ids, same ports, same data); init/add only run until the cluster is formed once.
#
# Environment (defaults in brackets):
#   KEELSON_BIN        the keelson binary [target/release/keelson, built with
#                      `cargo build --release -p keelson` when missing; CARGO_TARGET_DIR honoured]
#   KEELSON_HOST       address everything binds to [127.0.0.1]
#   KEELSON_LB_PORT    load balancer port, the registry address clients use [5000]
#   KEELSON_API_PORTS  API ports of nodes 1 2 3 [5001 5002 5003]
#   KEELSON_PEER_PORTS peer (Raft + blob transfer) ports of nodes 1 2 3 [7001 7002 7003]
#   KEELSON_REPLICAS   copies kept of every blob [3]
#   KEELSON_AUTH       identity: off (anonymous full access, fine on loopback) or enforce [off];
#                      with enforce the administrator keelson/admin gets the token in
#                      KEELSON_BOOTSTRAP_TOKEN, or a generated one kept in DIR/admin-token, and
#                      clients log in with it (docker login -u keelson/admin 127.0.0.1:5000)
#   RUST_LOG           node log filter [info,openraft=warn]
# Node i runs with --node-id i --fault-domain fdi.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

cmd=start
case "${1:-}" in
  start|stop|status) cmd=$1; shift ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
esac
dir=${1:-./keelson-cluster}
host=${KEELSON_HOST:-127.0.0.1}
lb_port=${KEELSON_LB_PORT:-5000}
read -r -a api_ports <<<"${KEELSON_API_PORTS:-5001 5002 5003}"
read -r -a peer_ports <<<"${KEELSON_PEER_PORTS:-7001 7002 7003}"
replicas=${KEELSON_REPLICAS:-3}
export RUST_LOG=${RUST_LOG:-info,openraft=warn}
export KEELSON_AUTH=${KEELSON_AUTH:-off}

die() { echo "cluster.sh: $*" >&2; exit 1; }
[ ${#api_ports[@]} -eq 3 ] || die "KEELSON_API_PORTS needs three ports"
[ ${#peer_ports[@]} -eq 3 ] || die "KEELSON_PEER_PORTS needs three ports"

find_bin() {
  if [ -n "${KEELSON_BIN:-}" ]; then
    [ -x "$KEELSON_BIN" ] || die "KEELSON_BIN=$KEELSON_BIN is not executable"
    bin=$KEELSON_BIN
    return
  fi
  local target=${CARGO_TARGET_DIR:-$root/target}
  case "$target" in /*) ;; *) target=$root/$target ;; esac
  bin=$target/release/keelson
  if [ ! -x "$bin" ]; then
    echo "building $bin ..." >&2
    (cd "$root" && cargo build --release -p keelson) || die "cargo build failed"
  fi
}

# Stops the processes listed in $dir/pids (only those: we never kill by name).
stop_all() {
  local pidfile=$dir/pids pid
  [ -f "$pidfile" ] || return 0
  while read -r pid; do
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
  done <"$pidfile"
  for _ in $(seq 100); do
    local alive=0
    while read -r pid; do
      [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && alive=1
    done <"$pidfile"
    [ $alive -eq 0 ] && break
    sleep 0.1
  done
  while read -r pid; do
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
  done <"$pidfile"
  rm -f "$pidfile"
}

# Polls `$2...` (a command) until it succeeds, at most $1 seconds.
wait_for() {
  local limit=$1; shift
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

api() { echo "$host:${api_ports[$1]}"; }
# A TCP connection to host:port succeeds (bash's /dev/tcp; no HTTP, so no credentials needed).
listening() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }
peer() { echo "$host:${peer_ports[$1]}"; }

# The cluster has a leader and lists $1 voters (as node $2 sees it).
has_voters() {
  "$bin" cluster --node "$(api "$2")" status --json |
    tr -d ' \n' | grep -q '"leader":[0-9]' || return 1
  [ "$("$bin" cluster --node "$(api "$2")" status --json | grep -c '"voter": true')" -ge "$1" ]
}

start() {
  find_bin
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/pids" ]; then
    local pid
    while read -r pid; do
      kill -0 "$pid" 2>/dev/null && die "a cluster is already running from $dir (pid $pid); run: $0 stop $dir"
    done <"$dir/pids"
    rm -f "$dir/pids"
  fi
  trap 'echo; echo "stopping the cluster"; stop_all; rm -f "$dir/cluster.pid"; exit 0' INT TERM
  trap 'stop_all; rm -f "$dir/cluster.pid"' EXIT
  echo $$ >"$dir/cluster.pid"
  if [ "$KEELSON_AUTH" = enforce ]; then
    # The administrator's token: preset on the nodes (used by whichever node runs init) and
    # given to every `keelson cluster` call below.
    token_note='$KEELSON_BOOTSTRAP_TOKEN'
    if [ -z "${KEELSON_BOOTSTRAP_TOKEN:-}" ]; then
      [ -s "$dir/admin-token" ] ||
        (umask 077 && head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$dir/admin-token")
      KEELSON_BOOTSTRAP_TOKEN=$(cat "$dir/admin-token")
      token_note=$dir/admin-token
    fi
    export KEELSON_BOOTSTRAP_TOKEN KEELSON_TOKEN=$KEELSON_BOOTSTRAP_TOKEN KEELSON_USER=keelson/admin
  fi

  for i in 0 1 2; do
    local n=$((i + 1)) d="$dir/node$((i + 1))"
    mkdir -p "$d"
    rm -f "$d/keelson.addr" "$d/keelson.peer"
    "$bin" serve --data-dir "$d" --listen "$(api $i)" --peer-listen "$(peer $i)" \
      --node-id $n --fault-domain "fd$n" --replicas "$replicas" >/dev/null 2>>"$d/keelson.log" &
    echo $! >>"$dir/pids"
  done
  for i in 0 1 2; do
    local d="$dir/node$((i + 1))"
    wait_for 60 test -s "$d/keelson.peer" || die "node $((i + 1)) did not start; see $d/keelson.log"
    wait_for 60 listening "$(api $i)" || die "node $((i + 1)) API not listening; see $d/keelson.log"
  done

  # Form the cluster on the first run (or finish forming it when a first run was interrupted).
  # Afterwards the membership is left alone: members removed by hand stay removed.
  if [ ! -f "$dir/formed" ]; then
    local status out
    # init answers an error when a first run already initialised the cluster; that is fine.
    # It goes without credentials: a pristine cluster has no administrator to check them
    # against (it rejects them), and accepts an anonymous init.
    if out=$(env -u KEELSON_TOKEN -u KEELSON_USER "$bin" cluster --node "$(api 0)" init 2>&1); then
      echo "$out"
    elif ! "$bin" cluster --node "$(api 0)" status --json 2>/dev/null | grep -q '"voter": true'; then
      die "cluster init failed: $out"
    fi
    wait_for 30 has_voters 1 0 || die "node 1 did not become leader; see $dir/node1/keelson.log"
    status=$("$bin" cluster --node "$(api 0)" status --json)
    for i in 1 2; do
      local n=$((i + 1))
      if ! grep -Eq "^ +\"id\": $n," <<<"$status"; then
        "$bin" cluster --node "$(api 0)" add $n "$(peer $i)" --api "$(api $i)" --fault-domain "fd$n"
      fi
    done
    touch "$dir/formed"
  fi
  wait_for 60 has_voters 1 0 || die "the cluster elected no leader in 60 s; see $dir/node*/keelson.log"

  "$bin" lb --listen "$host:$lb_port" \
    --backend "$(api 0)" --backend "$(api 1)" --backend "$(api 2)" >/dev/null 2>>"$dir/lb.log" &
  echo $! >>"$dir/pids"
  wait_for 30 listening "$host:$lb_port" || die "load balancer not listening; see $dir/lb.log"

  "$bin" cluster --node "$host:$lb_port" status
  echo
  echo "registry: $host:$lb_port (load balancer)  nodes: $(api 0) $(api 1) $(api 2)"
  echo "data and logs: $dir   stop: Ctrl-C (or $0 stop $dir from another shell)"
  if [ "$KEELSON_AUTH" = enforce ]; then
    echo "identity enforced: log in as keelson/admin with the token in $token_note"
  fi
  # Serve until Ctrl-C / SIGTERM (the trap stops everything). A node that exits (or is stopped
  # after `cluster remove`) leaves the others running; the lb skips backends it cannot reach.
  wait || true
  echo "every cluster process has exited" >&2
  exit 1
}

case "$cmd" in
  start) start ;;
  stop)
    [ -d "$dir" ] || die "no cluster directory $dir"
    # Ask the foreground script to stop its cluster; then make sure nothing is left.
    if [ -f "$dir/cluster.pid" ]; then
      script=$(cat "$dir/cluster.pid")
      if kill -TERM "$script" 2>/dev/null; then
        wait_for 30 sh -c "! kill -0 $script 2>/dev/null" || true
      fi
      rm -f "$dir/cluster.pid"
    fi
    stop_all
    echo "stopped"
    ;;
  status)
    find_bin
    if [ "$KEELSON_AUTH" = enforce ] && [ -z "${KEELSON_TOKEN:-}" ] && [ -s "$dir/admin-token" ]; then
      export KEELSON_TOKEN KEELSON_USER=keelson/admin
      KEELSON_TOKEN=$(cat "$dir/admin-token")
    fi
    "$bin" cluster --node "$host:$lb_port" status
    ;;
esac
