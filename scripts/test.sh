#!/usr/bin/env bash
# Runs every test: unit tests of each crate (real RocksDB in temp dirs, real
# certificates) and the end-to-end tests (real Go workloads, the real binaries over
# mTLS on loopback), and the deployment files: the Kubernetes manifests decoded strictly
# into the API types (deploy/kubernetes/check, its modules from the Go module proxy) and
# the systemd units through systemd-analyze verify.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
. scripts/env.sh

(cd tests/workloads && go vet ./...)
(cd deploy/kubernetes/check && go vet ./... && go test -count=1 ./...)
# --benches: the benchmarks (scripts/bench.sh) are not run here, but must compile.
cargo build --workspace --bins --benches --locked
bash deploy/systemd/verify.sh "$BIN"
cargo test --workspace --locked "$@"
