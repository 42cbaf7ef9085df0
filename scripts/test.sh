#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine as root or on a prepared one:
#   1. installs what the build and the real-client tests need (scripts/install-deps.sh),
#   2. builds the workspace once, in release mode (tests, the keelson binary and the benchmark
#      tool share that one build),
#   3. checks formatting, runs every test (unit, raft, protocol, crash, real clients),
#   4. runs a short smoke run of the benchmark tool against Keelson, the reference registry and a
#      local 3-node cluster.
# Honours CARGO_TARGET_DIR (a cache outside the clone), never requires it.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

if ! command -v cargo >/dev/null 2>&1; then
    echo "test.sh: cargo is not installed (this machine kind ships a Rust toolchain)" >&2
    exit 1
fi
export CARGO_TERM_COLOR=never

echo "== format"
cargo fmt --all -- --check

echo "== build (release, shared by every stage)"
cargo build --release --workspace --all-targets

echo "== tests"
cargo test --release --workspace -- --test-threads=2

echo "== benchmark smoke run"
deploy/bench.sh --quick --no-build --cluster
