#!/usr/bin/env bash
# Builds goroscope, creates development certificates, starts the aggregator (embedded
# RocksDB), a collector and two sample Go workloads (one healthy, one leaking
# goroutines), and prints `goroscope targets`. The stack keeps running until Ctrl-C;
# pass --once to stop after the first listing.
set -euo pipefail
cd "$(dirname "$0")/.."
once=0
[ "${1:-}" = "--once" ] && once=1
bash scripts/install-deps.sh
. scripts/env.sh

echo "building (the first build compiles RocksDB: about 20 minutes on 2 cores)..." >&2
cargo build --workspace --bins --locked
work="${GOROSCOPE_DEMO_DIR:-$PWD/demo}"
# A fresh database each run: the listing shows this run's processes only.
rm -rf "$work/data" "$work/spool"
mkdir -p "$work/bin" "$work/logs"
(cd tests/workloads && go build -o "$work/bin/" ./steady ./leaky)

certs="$work/certs"
host="$(cat /proc/sys/kernel/hostname)"
if [ ! -f "$certs/ca.pem" ]; then
  "$BIN/goroscope" certs init --dir "$certs"
  "$BIN/goroscope" certs issue --dir "$certs" --aggregator localhost
  "$BIN/goroscope" certs issue --dir "$certs" --operator "$(id -un)"
fi
[ -f "$certs/collector-$host.pem" ] || "$BIN/goroscope" certs issue --dir "$certs" --collector "$host"

port="${GOROSCOPE_DEMO_PORT:-7443}"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

GOROSCOPE_AGGREGATOR_TLS__CA="$certs/ca.pem" \
GOROSCOPE_AGGREGATOR_TLS__CERT="$certs/aggregator-localhost.pem" \
GOROSCOPE_AGGREGATOR_TLS__KEY="$certs/aggregator-localhost-key.pem" \
  "$BIN/goroscope-aggregator" --listen "127.0.0.1:$port" --data-dir "$work/data" \
  > "$work/logs/aggregator.log" 2>&1 &
pids+=($!)
"$work/bin/steady" > "$work/logs/steady.log" 2>&1 &
pids+=($!)
"$work/bin/leaky" -rate 5 > "$work/logs/leaky.log" 2>&1 &
pids+=($!)
GOROSCOPE_COLLECTOR_TLS__CA="$certs/ca.pem" \
GOROSCOPE_COLLECTOR_TLS__CERT="$certs/collector-$host.pem" \
GOROSCOPE_COLLECTOR_TLS__KEY="$certs/collector-$host-key.pem" \
  "$BIN/goroscope-collector" --host "$host" --aggregator "https://127.0.0.1:$port" --interval 2s \
  --spool-dir "$work/spool" \
  > "$work/logs/collector.log" 2>&1 &
pids+=($!)

export GOROSCOPE_ADDR="https://127.0.0.1:$port" GOROSCOPE_CA="$certs/ca.pem"
export GOROSCOPE_CERT="$certs/operator-$(id -un).pem" GOROSCOPE_KEY="$certs/operator-$(id -un)-key.pem"
for _ in $(seq 1 60); do
  if "$BIN/goroscope" targets -o json 2>/dev/null | grep -q '"go_goroutines"'; then break; fi
  sleep 1
done
sleep 4
"$BIN/goroscope" targets
echo
echo "goroscope is running: aggregator on 127.0.0.1:$port, logs in $work/logs." >&2
echo "Try:  GOROSCOPE_ADDR=$GOROSCOPE_ADDR GOROSCOPE_CA=$GOROSCOPE_CA GOROSCOPE_CERT=$GOROSCOPE_CERT GOROSCOPE_KEY=$GOROSCOPE_KEY \\" >&2
echo "        $BIN/goroscope query go_goroutines --target service=leaky --since 1m" >&2
echo "and, once the detectors have watched for a few minutes (the leak takes about 4):" >&2
echo "      goroscope anomalies; goroscope incidents; goroscope explain service=leaky" >&2
[ "$once" = 1 ] && exit 0
echo "Ctrl-C stops everything." >&2
wait
