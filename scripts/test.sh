#!/usr/bin/env bash
# Runs every test: unit tests of each crate (real RocksDB in temp dirs, real
# certificates) and the end-to-end tests (real Go workloads, the real binaries over
# mTLS on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
. scripts/env.sh

(cd tests/workloads && go vet ./...)
cargo build --workspace --bins --locked
cargo test --workspace --locked "$@"
