#!/usr/bin/env bash
# The project's start command (README): installs what the build needs when
# it is missing (scripts/setup.sh), then builds and starts one node with the
# embedded default configuration: MQTT on 0.0.0.0:1883, management API on
# 127.0.0.1:18083, data in ./data. Arguments go to `roost start`
# (`./scripts/start.sh --mqtt 127.0.0.1:1884`, `--config FILE`, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec cargo run --release --locked -- start "$@"
