#!/usr/bin/env bash
# Installs what building and testing goroscope needs on a Debian machine: clang and
# libclang (the rocksdb crate's bindings), protoc (the gRPC contract). Rust and Go must
# already be there (rustup; Go 1.22 or newer). Safe to run again: it installs only what
# is missing.
set -euo pipefail

need=()
command -v clang >/dev/null 2>&1 || need+=(clang)
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1 || need+=(libclang-dev)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
command -v g++ >/dev/null 2>&1 || need+=(g++)
if ((${#need[@]})); then
  echo "installing ${need[*]}" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust with rustup" >&2; exit 1; }
command -v go >/dev/null 2>&1 || { echo "go not found: install Go 1.22 or newer" >&2; exit 1; }
