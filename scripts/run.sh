#!/usr/bin/env bash
# Runs Keelson on its embedded default: one node that bootstraps itself as a one-node cluster,
# data under ./keelson-data, the registry API on 127.0.0.1:5000. The first start prints the
# cluster administrator's auth token (once). Extra arguments go to `keelson serve`.
# Installs the build's system packages (Debian 12) when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
[ -e /usr/include/rocksdb/db.h ] || missing+=(librocksdb-dev)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
dpkg-query -W -f='${Status}' libclang-dev 2>/dev/null | grep -q 'install ok installed' || missing+=(libclang-dev)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "run.sh: installing ${missing[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# The same build as scripts/test.sh (the whole workspace with its tests): after a test run this
# is a no-op, where building the binary alone would resolve other features and rebuild.
cargo build --release --workspace --all-targets
exec "${CARGO_TARGET_DIR:-target}/release/keelson" serve "$@"
