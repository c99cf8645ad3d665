#!/usr/bin/env bash
# Checks the systemd units with `systemd-analyze verify`, against the binaries of this
# build: usage: verify.sh BIN_DIR. verify exits 0 on an unknown or misspelt directive
# (it only warns), so any output at all fails the check; and a copy of the collector
# unit with a misspelt directive must fail it, or the check proves nothing.
set -euo pipefail
bin="${1:?usage: verify.sh BIN_DIR (holding goroscope-collector and goroscope-aggregator)}"
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

check() { # check UNIT_FILE: fails on a non-zero exit or any output
  local out rc=0
  out="$(systemd-analyze verify --man=no "$1" 2>&1)" || rc=$?
  if [ "$rc" != 0 ] || [ -n "$out" ]; then
    printf '%s\n' "$out" >&2
    return 1
  fi
}

for unit in goroscope-collector.service goroscope-aggregator.service; do
  grep -q '^ExecStart=/usr/local/bin/' "$here/$unit" || { echo "$unit: ExecStart is not in /usr/local/bin" >&2; exit 1; }
  # The units name the installed path; verify wants an executable there.
  sed "s#^ExecStart=/usr/local/bin/#ExecStart=$bin/#" "$here/$unit" > "$work/$unit"
  if ! check "$work/$unit"; then
    echo "systemd-analyze verify: $unit has problems (above)" >&2
    exit 1
  fi
  echo "systemd-analyze verify: $unit ok"
done

mkdir "$work/bad"
sed 's/^ProtectSystem=/ProtectSystme=/' "$work/goroscope-collector.service" > "$work/bad/goroscope-collector.service"
if check "$work/bad/goroscope-collector.service" 2>/dev/null; then
  echo "systemd-analyze verify passed a unit with a misspelt directive: the check is broken" >&2
  exit 1
fi
echo "systemd-analyze verify: a misspelt directive is caught"
