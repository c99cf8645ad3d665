#!/usr/bin/env bash
# Measures what goroscope costs to run (see docs/benchmarks.md): release binaries, one
# collector watching GOROSCOPE_BENCH_TARGETS Go processes (default 50) at 1 s for
# GOROSCOPE_BENCH_SECONDS (default 60), one aggregator.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
. scripts/env.sh
cargo build --release --workspace --bins --locked
cargo bench -p goroscope-tests --bench fleet --locked
