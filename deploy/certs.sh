#!/usr/bin/env bash
# Certificates for mutual TLS between Keelson peers: one cluster CA, and one certificate per
# node signed by it, usable both as a server (the node's peer endpoint) and as a client (when it
# dials the other nodes). A node accepts peer connections only from certificates of this CA.
#
# Usage: deploy/certs.sh DIR NODE=HOST[,HOST...] [NODE=HOST...]
#   DIR gets ca.pem and ca.key (made once, reused on later runs), and for each NODE
#   NODE.pem and NODE.key, whose subjectAltNames are the HOSTs: the names or IP addresses
#   other nodes use to reach NODE's peer endpoint (the host part of its --advertise-peer).
#   Example: deploy/certs.sh ./certs node1=127.0.0.1 node2=10.0.0.2,keelson-1.keelson
#
# Then start each node with
#   keelson serve ... --peer-tls-cert DIR/NODE.pem --peer-tls-key DIR/NODE.key --peer-tls-ca DIR/ca.pem
# (or peer-tls-cert / peer-tls-key / peer-tls-ca in its config file).
set -euo pipefail

if [ $# -lt 2 ]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
fi
dir=$1
shift
mkdir -p "$dir"
umask 077

if [ ! -s "$dir/ca.pem" ] || [ ! -s "$dir/ca.key" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -subj "/CN=keelson cluster CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
fi

for spec in "$@"; do
  node=${spec%%=*}
  hosts=${spec#*=}
  if [ -z "$node" ] || [ "$node" = "$spec" ] || [ -z "$hosts" ]; then
    echo "certs.sh: expected NODE=HOST[,HOST...], got '$spec'" >&2
    exit 2
  fi
  san=""
  IFS=, read -r -a names <<<"$hosts"
  for h in "${names[@]}"; do
    if [[ $h =~ ^[0-9.]+$ || $h == *:* ]]; then san+="IP:$h,"; else san+="DNS:$h,"; fi
  done
  san=${san%,}
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$node" \
    -keyout "$dir/$node.key" -out "$dir/$node.csr" 2>/dev/null
  ext=$(mktemp)
  printf 'subjectAltName=%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n' \
    "$san" >"$ext"
  openssl x509 -req -in "$dir/$node.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 825 -extfile "$ext" -out "$dir/$node.pem" 2>/dev/null
  rm -f "$ext" "$dir/$node.csr"
  echo "$dir/$node.pem ($san)"
done
