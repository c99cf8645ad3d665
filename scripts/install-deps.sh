#!/usr/bin/env bash
# Installs what building and testing goroscope needs on a Debian machine: clang and
# libclang (the rocksdb crate's bindings), protoc (the gRPC contract), Prometheus and
# node_exporter (third-party Go programs the end-to-end tests watch), Alertmanager (the
# notification tests post to it), iproute2 (the tests' network namespaces), systemd
# (systemd-analyze checks the units in deploy/) and curl (the HTTP API tests ask with it).
# Rust and Go must already be there (rustup; Go 1.26 or newer). Safe to run again: it
# installs only what is missing.
set -euo pipefail

need=()
command -v clang >/dev/null 2>&1 || need+=(clang)
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1 || need+=(libclang-dev)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
[ -x /usr/bin/prometheus ] || need+=(prometheus)
[ -x /usr/bin/prometheus-node-exporter ] || need+=(prometheus-node-exporter)
[ -x /usr/bin/prometheus-alertmanager ] || need+=(prometheus-alertmanager)
if ((${#need[@]})); then
  echo "installing ${need[*]}" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  # The Prometheus packages would start their services; the tests start their own.
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
  fi
  rc=0
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null || rc=$?
  [ -z "$policy" ] || $sudo rm -f "$policy"
  [ "$rc" = 0 ] || { echo "apt-get install ${need[*]} failed" >&2; exit "$rc"; }
fi

command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust with rustup" >&2; exit 1; }
command -v go >/dev/null 2>&1 || { echo "go not found: install Go 1.26 or newer" >&2; exit 1; }
