#!/usr/bin/env bash
# Compare roost against mosquitto (and rumqttd, when it is on PATH) with
# `roost-chaos bench`: every scenario against every broker, same run, same
# parameters, each broker on its own loopback port. Prints markdown tables
# with absolute figures and ratios against mosquitto.
#
# Usage: chaos/bench-compare.sh
# Knobs (environment):
#   DURATION=10s  WARMUP=1s  QOS_LIST="0 1"  MQTT_VERSION=4  PAYLOAD=64
#   SCENARIOS="idle fan-in fan-out pairs latency"   (idle first: RSS per
#   connection is only meaningful on a fresh broker)
#   PUBLISHERS=50 SUBSCRIBERS=50 PAIRS=50 RATE=1000 CONNECTIONS=10000
#   BROKERS="mosquitto roost rumqttd"   (rumqttd only if installed)
#   BASE_PORT=21883   OUT=<dir for logs and JSON>   SKIP_BUILD=1
#
# Needs: cargo, and root (or sudo-less apt) to install mosquitto if missing.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-1s}
QOS_LIST=${QOS_LIST:-"0 1"}
MQTT_VERSION=${MQTT_VERSION:-4}
PAYLOAD=${PAYLOAD:-64}
SCENARIOS=${SCENARIOS:-"idle fan-in fan-out pairs latency"}
PUBLISHERS=${PUBLISHERS:-50}
SUBSCRIBERS=${SUBSCRIBERS:-50}
PAIRS=${PAIRS:-50}
RATE=${RATE:-1000}
CONNECTIONS=${CONNECTIONS:-10000}
BROKERS=${BROKERS:-"mosquitto roost rumqttd"}
BASE_PORT=${BASE_PORT:-21883}
OUT=${OUT:-$(mktemp -d /tmp/roost-bench.XXXXXX)}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
CHAOS=$TARGET/release/roost-chaos
ROOST=$TARGET/release/roost
RESULTS=$OUT/results.jsonl

mkdir -p "$OUT"
: > "$RESULTS"
declare -A PIDS=()
declare -A PORTS=()

log() { printf '==> %s\n' "$*" >&2; }

cleanup() {
    for name in "${!PIDS[@]}"; do
        kill "${PIDS[$name]}" 2>/dev/null || true
    done
    sleep 0.5
    for name in "${!PIDS[@]}"; do
        kill -9 "${PIDS[$name]}" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

build() {
    if [[ -n "${SKIP_BUILD:-}" ]]; then
        return 0
    fi
    log "building roost and roost-chaos (release)"
    if ! (cd "$ROOT" && cargo build --release -p roost -p roost-chaos); then
        log "roost does not build: building roost-chaos alone; roost is skipped"
        (cd "$ROOT" && cargo build --release -p roost-chaos)
        rm -f "$OUT/.roost-ok"
        return 0
    fi
    touch "$OUT/.roost-ok"
}

find_mosquitto() {
    command -v mosquitto 2>/dev/null || { [[ -x /usr/sbin/mosquitto ]] && echo /usr/sbin/mosquitto; } || true
}

install_mosquitto() {
    if [[ -n "$(find_mosquitto)" ]]; then
        return 0
    fi
    log "installing mosquitto"
    apt-get install -y mosquitto || { apt-get update && apt-get install -y mosquitto; }
}

# The idle scenario needs many descriptors in this shell's children
# (brokers and roost-chaos alike).
raise_fd_limit() {
    local want=$((CONNECTIONS + 1024)) hard
    hard=$(ulimit -Hn)
    if [[ "$hard" != unlimited && "$hard" -lt "$want" ]]; then
        ulimit -Hn "$want" 2>/dev/null || want=$hard
    fi
    ulimit -Sn "$want" 2>/dev/null || log "could not raise the open file limit to $want (now $(ulimit -n))"
}

# wait_ready NAME PORT: until PORT accepts TCP connections (30 s), or the
# broker died.
wait_ready() {
    local name=$1 port=$2 pid=${PIDS[$1]}
    for _ in $(seq 1 300); do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "$name exited during start-up; last log lines:"
            tail -n 20 "$OUT/$name.log" >&2 || true
            unset "PIDS[$name]"
            return 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    log "$name did not listen on $port within 30 s"
    return 1
}

start_mosquitto() {
    local port=$1 bin conf=$OUT/mosquitto.conf
    bin=$(find_mosquitto)
    [[ -n "$bin" ]] || { log "mosquitto not available"; return 1; }
    printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 10000\n' "$port" > "$conf"
    "$bin" -c "$conf" > "$OUT/mosquitto.log" 2>&1 &
    PIDS[mosquitto]=$!
}

start_roost() {
    local port=$1 data
    [[ -x "$ROOST" && ( -n "${SKIP_BUILD:-}" || -e "$OUT/.roost-ok" ) ]] || {
        log "roost binary not built; skipping roost"
        return 1
    }
    data=$(mktemp -d "$OUT/roost-data.XXXXXX")
    "$ROOST" start --mqtt "127.0.0.1:$port" --data-dir "$data" > "$OUT/roost.log" 2>&1 &
    PIDS[roost]=$!
}

start_rumqttd() {
    local port=$1 conf=$OUT/rumqttd.toml section=v4
    command -v rumqttd > /dev/null || { log "rumqttd not on PATH; skipping it"; return 1; }
    if [[ "$MQTT_VERSION" == 5 ]]; then
        section=v5
    fi
    cat > "$conf" <<EOF
id = 0

[router]
id = 0
max_connections = $((CONNECTIONS + 100))
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[$section.1]
name = "$section-1"
listen = "127.0.0.1:$port"
next_connection_delay_ms = 0
    [$section.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 20480
    max_inflight_count = 100
    dynamic_filters = true
EOF
    rumqttd --config "$conf" > "$OUT/rumqttd.log" 2>&1 &
    PIDS[rumqttd]=$!
}

start_brokers() {
    local port=$BASE_PORT name
    for name in $BROKERS; do
        if "start_$name" "$port" && wait_ready "$name" "$port"; then
            PORTS[$name]=$port
            log "$name: pid ${PIDS[$name]} on 127.0.0.1:$port"
        fi
        port=$((port + 1))
    done
}

# scenario_args SCENARIO: the scenario's own size flag.
scenario_args() {
    case $1 in
        fan-in) echo "--publishers $PUBLISHERS" ;;
        fan-out) echo "--subscribers $SUBSCRIBERS" ;;
        pairs) echo "--pairs $PAIRS" ;;
        latency) echo "--rate $RATE" ;;
        idle) echo "--connections $CONNECTIONS" ;;
    esac
}

# run_one BROKER SCENARIO QOS: one bench run; its JSON line goes to RESULTS.
run_one() {
    local name=$1 scenario=$2 qos=$3 json
    local pid=${PIDS[$name]:-}
    if [[ -z "$pid" ]] || ! kill -0 "$pid" 2>/dev/null; then
        log "$name is not running; skipping $scenario qos $qos"
        return 0
    fi
    log "$scenario qos $qos against $name"
    # shellcheck disable=SC2046 # scenario_args is meant to split
    if json=$("$CHAOS" bench "$scenario" $(scenario_args "$scenario") \
        --host 127.0.0.1 --port "${PORTS[$name]}" --broker-pid "$pid" \
        --duration "$DURATION" --warmup "$WARMUP" --qos "$qos" --payload "$PAYLOAD" \
        --mqtt-version "$MQTT_VERSION" --label "$name" --json \
        2> >(tee -a "$OUT/bench.log" >&2)); then
        echo "$json" >> "$RESULTS"
    else
        log "$scenario qos $qos against $name failed (see $OUT/bench.log)"
    fi
    sleep 1 # let the broker settle between runs
}

main() {
    build
    install_mosquitto
    raise_fd_limit
    start_brokers
    [[ ${#PORTS[@]} -gt 0 ]] || { log "no broker started"; exit 1; }
    local scenario qos name
    for scenario in $SCENARIOS; do
        for qos in $QOS_LIST; do
            # idle publishes nothing: QoS does not matter, run it once.
            if [[ "$scenario" == idle && "$qos" != "${QOS_LIST%% *}" ]]; then
                continue
            fi
            for name in $BROKERS; do
                if [[ -n "${PORTS[$name]:-}" ]]; then
                    run_one "$name" "$scenario" "$qos"
                fi
            done
        done
    done
    echo
    echo "## roost-chaos bench: $DURATION per run, payload ${PAYLOAD}B, MQTT v$MQTT_VERSION"
    echo
    echo "Ratios are broker / mosquitto. Runs: $RESULTS; logs: $OUT"
    echo
    "$CHAOS" bench-table --baseline mosquitto "$RESULTS"
}

main "$@"
