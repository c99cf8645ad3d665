#!/usr/bin/env bash
# Runs the detection end-to-end tests (tests/e2e/detection.rs): every failure-pattern
# workload under the real collector and aggregator, and a healthy noisy one; then
# prints, per diagnosis, the time to detection and precision and recall over the
# workloads: the accuracy table of docs/detection.md. Pass a number to repeat the runs.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-1}"
bash scripts/install-deps.sh
. scripts/env.sh
cargo build --workspace --bins --locked
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
for _ in $(seq 1 "$runs"); do
  GOROSCOPE_ACCURACY_OUT="$out" cargo test -p goroscope-tests --test e2e --locked detection -- --test-threads=1 || true
done
python3 - "$out" <<'PY'
import json, sys, collections
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
diagnoses = sorted({r["expect"] for r in rows if r["expect"]} | {d for r in rows for d in r["got"]})
print(f"{len(rows)} workload runs\n")
print("| diagnosis | workload | detected | time to detection (s) | false alarms | precision | recall |")
print("|---|---|---|---|---|---|---|")
for d in diagnoses:
    mine = [r for r in rows if r["expect"] == d]
    hits = [r for r in mine if d in r["got"]]
    times = sorted(r["detected_s"] for r in hits if r["detected_s"] is not None)
    # A false alarm: the diagnosis on a workload that does not have it (neither its
    # own nor one it also has, as stack growth with a goroutine leak).
    false = [r for r in rows if d in r["unexpected"]]
    fired = len(hits) + len(false)
    precision = f"{len(hits) / fired:.2f}" if fired else "-"
    recall = f"{len(hits) / len(mine):.2f}" if mine else "-"
    workloads = ", ".join(sorted({r["workload"] for r in mine})) or "(none of its own)"
    t = "-" if not times else (f"{times[0]:.0f}" if len(times) == 1 else f"{times[0]:.0f}-{times[-1]:.0f} (median {times[len(times)//2]:.0f})")
    print(f"| `{d}` | {workloads} | {len(hits)} of {len(mine)} | {t} | {len(false)} | {precision} | {recall} |")
healthy = [r for r in rows if not r["expect"]]
print(f"\nHealthy runs with any anomaly: {sum(1 for r in healthy if r['got'])} of {len(healthy)}")
PY
