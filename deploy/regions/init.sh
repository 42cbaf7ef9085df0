#!/bin/sh
# The `init` service of deploy/regions/compose.yml: forms this region's cluster on first start,
# names the region, links the peer regions. Every step is idempotent.
set -eu
node="https://${REGION}-node1:5000"
# Wait until each node's API answers at all (before the cluster exists it refuses every login).
for n in 1 2 3; do
  until keelson cluster --node "https://${REGION}-node$n:5000" status 2>&1 | grep -q "answered\|leader"; do
    sleep 1
  done
done
# The administrator's token exists once the cluster does: a status that succeeds means formed.
if keelson cluster --node "$node" status >/dev/null 2>&1; then
  echo "cluster already formed"
else
  keelson cluster --node "$node" init
fi
for n in 2 3; do
  if ! keelson cluster --node "$node" status --json | grep -q "\"${REGION}-node$n:7000\""; then
    keelson cluster --node "$node" add "$n" "${REGION}-node$n:7000" --api "${REGION}-node$n:5000" --fault-domain "fd$n"
  fi
done
keelson cluster --node "$node" status
if [ -n "${HOME_REGION:-}" ]; then
  keelson region --node "$node" set "$REGION" --home "$HOME_REGION"
else
  keelson region --node "$node" set "$REGION"
fi
printf '%s' "$KEELSON_TOKEN" >/tmp/admin.token
for peer in ${PEER_REGIONS:-}; do
  keelson region --node "$node" add-peer "$peer" --url "https://$peer.registry.test:5000" \
    --peer-user keelson/admin --token-file /tmp/admin.token --peer-ca "/certs/$peer/ca.pem"
done
rm -f /tmp/admin.token
keelson region --node "$node" show
