#!/usr/bin/env bash
# Two Keelson regions on one Docker host: iad (home of identity) and fra, three nodes each,
# linked as peers over the `keelson-wan` network, from deploy/regions/compose.yml.
#
# Usage: deploy/regions/up.sh DIR        start (or start again) with state under DIR
#        deploy/regions/up.sh down DIR   stop both regions and remove their containers and volumes
#   DIR gets the compose file, init.sh, certs/{iad,fra}/ (deploy/certs.sh) and admin.token.
#   IAD_PORT, FRA_PORT   host ports of the two balancers (default 5000, 5100; 127.0.0.1 only)
#   KEELSON_ADMIN_TOKEN  the administrator token (default: generated once into DIR/admin.token)
#   KEELSON_IMAGE        image to run (default keelson:local, built by deploy/image.sh if missing)
# Needs docker with compose (`docker-compose`, Debian's package of that name, or `docker compose`).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
if [ "${1:-}" = down ]; then
  dir=${2:?usage: up.sh down DIR}
  cd "$dir"
  mode=down
else
  dir=${1:?usage: up.sh DIR}
  mode=up
fi
if docker-compose version >/dev/null 2>&1; then compose=(docker-compose); else compose=(docker compose); fi
export KEELSON_IMAGE=${KEELSON_IMAGE:-keelson:local}
iad_port=${IAD_PORT:-5000}
fra_port=${FRA_PORT:-5100}

region() { # region NAME PORT HOME PEERS -- compose args...
  local name=$1 port=$2 home=$3 peers=$4
  shift 5
  REGION=$name KEELSON_PORT=$port HOME_REGION=$home PEER_REGIONS=$peers \
    "${compose[@]}" -p "$name" -f "$dir/compose.yml" "$@"
}

if [ "$mode" = down ]; then
  export KEELSON_ADMIN_TOKEN=${KEELSON_ADMIN_TOKEN:-$(cat "$dir/admin.token" 2>/dev/null || echo unset)}
  region fra "$fra_port" iad iad -- down -v --remove-orphans
  region iad "$iad_port" "" fra -- down -v --remove-orphans
  docker network rm keelson-wan >/dev/null 2>&1 || true
  exit 0
fi

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
cp "$here/compose.yml" "$here/init.sh" "$dir/"
if [ -z "${KEELSON_ADMIN_TOKEN:-}" ]; then
  [ -s "$dir/admin.token" ] || (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/admin.token")
  KEELSON_ADMIN_TOKEN=$(cat "$dir/admin.token")
fi
export KEELSON_ADMIN_TOKEN
for r in iad fra; do
  [ -s "$dir/certs/$r/api3.pem" ] && continue
  names="$r.registry.test,localhost,127.0.0.1"
  "$here/../certs.sh" "$dir/certs/$r" \
    "peer1=$r-node1" "peer2=$r-node2" "peer3=$r-node3" \
    "api1=$r-node1,$names" "api2=$r-node2,$names" "api3=$r-node3,$names" >/dev/null
done
chmod -R a+rX "$dir/certs"
docker image inspect "$KEELSON_IMAGE" >/dev/null 2>&1 || "$here/../image.sh" "$KEELSON_IMAGE"
docker network inspect keelson-wan >/dev/null 2>&1 || docker network create keelson-wan >/dev/null

start() { # start NAME PORT HOME PEERS
  region "$1" "$2" "$3" "$4" -- up -d
  local init
  init=$(region "$1" "$2" "$3" "$4" -- ps -q init)
  local rc
  rc=$(timeout 300 docker wait "$init")
  echo "--- $1: init (exit $rc)"
  docker logs "$init" 2>&1
  [ "$rc" = 0 ]
}
start iad "$iad_port" "" fra
start fra "$fra_port" iad iad
echo "iad: https://127.0.0.1:$iad_port  fra: https://127.0.0.1:$fra_port  (CAs: $dir/certs/{iad,fra}/ca.pem)"
echo "administrator: keelson/admin, token in $dir/admin.token"
