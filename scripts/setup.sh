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
# The tests (scripts/test.sh sets ROOST_SETUP_TESTS=1) run Debian's
# mosquitto as the remote broker of tests/bridges.rs, on their own ports.
with_mosquitto=
if [ "${ROOST_SETUP_TESTS:-}" = 1 ] && [ ! -x /usr/sbin/mosquitto ]; then
  need+=(mosquitto)
  with_mosquitto=1
fi

if [ ${#need[@]} -gt 0 ]; then
  echo "== installing: ${need[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  # Installing mosquitto must not start its system service: it would take
  # port 1883 from `roost start`. policy-rc.d tells the package scripts not
  # to start daemons (only if no policy is in place already).
  policy=
  if [ -n "$with_mosquitto" ] && [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
  fi
  status=0
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" || status=$?
  if [ -n "$policy" ]; then $SUDO rm -f "$policy"; fi
  if [ "$status" -ne 0 ]; then exit "$status"; fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not installed: install Rust (https://rustup.rs) first" >&2
  exit 1
fi
