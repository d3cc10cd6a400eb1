#!/usr/bin/env bash
# Cross-node throughput vs single node (issue #4), release build:
#   cargo build --release -p roost -p roost-chaos && chaos/bench-cross-node.sh OUTFILE
# Two nodes on loopback; publishers on n1, subscribers on n1 (single) or n2 (cross).
set -u
T=~/.cache/roost/target/release; D=$(mktemp -d); OUT=$1
export ROOST_CLUSTER__COOKIE=bench-cookie-123
S=localhost:19501,localhost:19502
for i in 1 2; do
  $T/roost start --node-name n$i@localhost --mqtt 127.0.0.1:1930$i --mgmt 127.0.0.1:1940$i \
    --cluster-listen 127.0.0.1:1950$i --data-dir $D/n$i --seeds $S > $D/n$i.log 2>&1 &
  eval P$i=$!
done
sleep 3
run() { timeout 60 $T/roost-chaos bench "$@" --duration 5s --warmup 1s --settle 1s 2>&1 | grep -E "msg/s|lost|deliver" | head -4; }
{
for q in ${QOS:-0 1}; do
  echo "== pairs 10 qos $q single-node (n1)"; run pairs --pairs 10 --qos $q --port 19301 --broker-pid $P1
  echo "== pairs 10 qos $q cross-node (pub n1, sub n2)"; run pairs --pairs 10 --qos $q --port 19301 --sub-port 19302 --broker-pid $P1
  echo "== fan-in 50 qos $q single-node"; run fan-in --publishers 50 --qos $q --port 19301 --broker-pid $P1
  echo "== fan-in 50 qos $q cross-node"; run fan-in --publishers 50 --qos $q --port 19301 --sub-port 19302 --broker-pid $P1
done
echo "== drop counters (all runs)"
for i in 1 2; do
  $T/roost ctl --node http://127.0.0.1:1940$i --data-dir $D/n$i metrics \
    | grep -E '^roost_(messages_dropped|cluster_forward|cluster_.*(dropped|duplicates)|publisher_pause)' | grep -v ' 0$' | sed "s/^/n$i /"
done
} > $OUT
kill $P1 $P2; wait
rm -rf $D
