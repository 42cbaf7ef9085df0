#!/usr/bin/env bash
# Certificates for Keelson from one CA: for mutual TLS between peers, and for the registry API
# that docker, containerd, kubelet and the CLI reach over HTTPS. Each certificate is signed by the
# CA and usable both as a server and as a client certificate. A node accepts peer connections
# only from certificates of this CA; clients trust the API certificate through ca.pem (or use a
# certificate from a public CA or cert-manager instead, with --tls-ca naming its CA).
#
# Usage: deploy/certs.sh DIR NAME=HOST[,HOST...] [NAME=HOST...]
#   DIR gets ca.pem and ca.key (made once, reused on later runs), and for each NAME
#   NAME.pem and NAME.key, whose subjectAltNames are the HOSTs (DNS names, wildcards such as
#   *.keelson-peer, or IP addresses). Running it again for a NAME renews that certificate with a
#   new key; running nodes pick renewed API certificates up without a restart.
#   - a peer certificate names what other nodes dial: the host of the node's --advertise-peer;
#   - an API certificate names what clients dial: the load balancer's name and address, and the
#     host of the node's --advertise (nodes relay requests to each other's APIs over TLS).
#   Example (three hosts behind registry.example.com):
#     deploy/certs.sh ./certs peer1=10.0.0.11 peer2=10.0.0.12 peer3=10.0.0.13 \
#       api1=registry.example.com,10.0.0.11 api2=registry.example.com,10.0.0.12 \
#       api3=registry.example.com,10.0.0.13
#
# Then start each node with
#   keelson serve ... --peer-tls-cert DIR/peerN.pem --peer-tls-key DIR/peerN.key --peer-tls-ca DIR/ca.pem \
#     --tls-cert DIR/apiN.pem --tls-key DIR/apiN.key --tls-ca DIR/ca.pem
# (or the same keys in its config file), and give clients DIR/ca.pem: for docker
# /etc/docker/certs.d/<host:port>/ca.crt, for containerd a hosts.toml (see deploy/README.md).
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
    echo "certs.sh: expected NAME=HOST[,HOST...], got '$spec'" >&2
    exit 2
  fi
  san=""
  IFS=, read -r -a names <<<"$hosts"
  for h in "${names[@]}"; do
    if [[ $h =~ ^[0-9.]+$ || $h == *:* ]]; then san+="IP:$h,"; else san+="DNS:$h,"; fi
  done
  san=${san%,}
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$node" \
    -keyout "$dir/$node.key.new" -out "$dir/$node.csr" 2>/dev/null
  ext=$(mktemp)
  printf 'subjectAltName=%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n' \
    "$san" >"$ext"
  openssl x509 -req -in "$dir/$node.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 825 -extfile "$ext" -out "$dir/$node.pem.new" 2>/dev/null
  rm -f "$ext" "$dir/$node.csr"
  # Both files are replaced by renames, so a node watching them never reads half a file.
  mv "$dir/$node.key.new" "$dir/$node.key"
  mv "$dir/$node.pem.new" "$dir/$node.pem"
  echo "$dir/$node.pem ($san)"
done
