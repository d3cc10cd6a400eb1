#!/usr/bin/env bash
# Installs what building and testing Roost needs on a Debian machine, only
# when it is missing. Safe to run again.
set -euo pipefail

need=()
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v c++ >/dev/null 2>&1 || need+=(g++)
command -v timeout >/dev/null 2>&1 || need+=(coreutils)
# The bundled RocksDB (roost-storage) runs bindgen, which loads libclang at
# build time; a C++ compiler (g++ above) builds its ~400 objects.
has_libclang() {
  local f
  for f in "${LIBCLANG_PATH:-/nonexistent}"/libclang.so* \
    /usr/lib/llvm-*/lib/libclang.so /usr/lib/*/libclang.so \
    /usr/lib/*/libclang-[0-9]*.so; do
    [ -e "$f" ] && return 0
  done
  return 1
}
has_libclang || need+=(libclang-dev)

if [ ${#need[@]} -gt 0 ]; then
  echo "== installing: ${need[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not installed: install Rust (https://rustup.rs) first" >&2
  exit 1
fi
