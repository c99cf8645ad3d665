#!/usr/bin/env bash
# Measures what goroscope costs to run (see docs/benchmarks.md), on release binaries:
#   fleet      one collector watching GOROSCOPE_BENCH_TARGETS Go processes (default 50) at
#              1 s for GOROSCOPE_BENCH_SECONDS (default 60), one aggregator;
#   footprint  the collector at 10 s with every source on, beside Debian's
#              prometheus-node-exporter scraped at the same interval (window
#              GOROSCOPE_FOOTPRINT_SECONDS, default 240);
#   observer   a Go service under load, watched and unwatched (arms of
#              GOROSCOPE_BENCH_ARM_SECONDS, default 60);
#   ingest     1,000 simulated collectors over mTLS gRPC into one aggregator, then the
#              same load into Prometheus' remote-write receiver (GOROSCOPE_LOAD_*);
#   store      bytes per sample and query times, goroscope beside Prometheus on the
#              same samples.
# Name the benches to run as arguments (default: the first three), e.g.
# `bench.sh footprint`.
# With GOROSCOPE_BENCH_ISOLATE=1 (root) they run in a network namespace of their own
# with loopback only, so that no other collector on the host (a test run) reaches their
# processes, and theirs reaches nothing outside. Not part of scripts/test.sh: together
# they take about 20 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
. scripts/env.sh
cargo build --release --workspace --bins --locked
run=()
if [[ "${GOROSCOPE_BENCH_ISOLATE:-0}" == 1 ]]; then
    ns="goroscope-bench-$$"
    ip netns add "$ns"
    trap 'ip netns del "$ns"' EXIT
    ip -n "$ns" link set lo up
    run=(ip netns exec "$ns")
fi
benches=("$@")
[[ ${#benches[@]} -gt 0 ]] || benches=(fleet footprint observer)
for bench in "${benches[@]}"; do
    case "$bench" in
        footprint)
            GOROSCOPE_BENCH_SECONDS="${GOROSCOPE_FOOTPRINT_SECONDS:-240}" \
                "${run[@]}" cargo bench -p goroscope-tests --bench footprint --locked --offline ;;
        fleet | observer | store)
            "${run[@]}" cargo bench -p goroscope-tests --bench "$bench" --locked --offline ;;
        ingest)
            "${run[@]}" cargo bench -p goroscope-tests --bench ingest --locked --offline
            "${run[@]}" cargo bench -p goroscope-tests --bench ingest_prometheus --locked --offline ;;
        *)
            echo "unknown bench $bench (fleet, footprint, observer, ingest, store)" >&2
            exit 64 ;;
    esac
done
