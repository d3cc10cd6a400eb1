#!/usr/bin/env bash
# The project's test command (README): installs what the tests need when it
# is missing, then builds and runs every test of the workspace.
#
# Bounded: the whole run is capped (ROOST_TEST_TIMEOUT, default 25 min) and
# every test bounds its own waits; no process is left running.
set -euo pipefail
cd "$(dirname "$0")/.."

# Reuse a target directory outside the clone when there is one, so CI does
# not rebuild every dependency on every fresh clone; a fresh machine builds
# from source all the same.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/roost/target}"
mkdir -p "$CARGO_TARGET_DIR"

ROOST_SETUP_TESTS=1 ./scripts/setup.sh

limit="${ROOST_TEST_TIMEOUT:-3000}"
echo "== cargo test --workspace (limit ${limit}s, target ${CARGO_TARGET_DIR})"
timeout --kill-after=30 "$limit" cargo test --workspace --all-targets --locked
