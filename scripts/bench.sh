#!/usr/bin/env bash
# Measures what goroscope costs to run (see docs/benchmarks.md), on release binaries:
#   fleet      one collector watching GOROSCOPE_BENCH_TARGETS Go processes (default 50) at
#              1 s for GOROSCOPE_BENCH_SECONDS (default 60), one aggregator;
#   footprint  the collector at 10 s with every source on, beside Debian's
#              prometheus-node-exporter scraped at the same interval (window
#              GOROSCOPE_FOOTPRINT_SECONDS, default 240);
#   observer   a Go service under load, watched and unwatched (arms of
#              GOROSCOPE_BENCH_ARM_SECONDS, default 60).
# Name the benches to run as arguments (default: all three), e.g. `bench.sh footprint`.
# Not part of scripts/test.sh: together they take about 20 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
. scripts/env.sh
cargo build --release --workspace --bins --locked
benches=("$@")
[[ ${#benches[@]} -gt 0 ]] || benches=(fleet footprint observer)
for bench in "${benches[@]}"; do
    case "$bench" in
        footprint)
            GOROSCOPE_BENCH_SECONDS="${GOROSCOPE_FOOTPRINT_SECONDS:-240}" \
                cargo bench -p goroscope-tests --bench footprint --locked ;;
        fleet | observer)
            cargo bench -p goroscope-tests --bench "$bench" --locked ;;
        *)
            echo "unknown bench $bench (fleet, footprint, observer)" >&2
            exit 64 ;;
    esac
done
