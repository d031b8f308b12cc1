#!/usr/bin/env bash
# profile.sh OUT_DIR: where a 1-member ferrocd's CPU time goes, per workload.
# Starts a fresh ferrocd (target/release), samples it with `perf record -e
# cpu-clock` (software clock: works where hardware counters do not) during
# each ferrobench workload, and sums the samples into categories with
# profile_categories.py. Needs linux-perf; build with
# `cargo build --release --bins` first.
set -euo pipefail
OUT=${1:?usage: profile.sh OUT_DIR}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
F=$ROOT/target/release/ferrocd
B=$ROOT/target/release/ferrobench
mkdir -p "$OUT"; D=$OUT/data; rm -rf "$D"
"$F" --data-dir "$D" --listen-client-urls http://127.0.0.1:23999 \
  --advertise-client-urls http://127.0.0.1:23999 --listen-peer-urls http://127.0.0.1:24000 \
  >"$OUT/ferrocd.log" 2>&1 &
P=$!
trap 'kill $P 2>/dev/null || true' EXIT
sleep 0.5
run() { # name, ferrobench args...
  local name=$1; shift
  perf record -q -e cpu-clock -F 4000 -p $P -o "$OUT/$name.data" 2>/dev/null &
  local rec=$!
  sleep 0.3
  "$B" --endpoints 127.0.0.1:23999 --server-pid $P "$@" 2>&1 | grep -E "Requests/sec|Server CPU" | sed "s/^/$name: /"
  kill -INT $rec; wait $rec || true
}
run put-256 --clients 256 --conns 16 put --total 100000 --key-size 8 --val-size 256 --key-space-size 100000
run range-l-256 --clients 256 --conns 16 range k --total 100000
run put-1 --clients 1 --conns 1 put --total 10000 --key-size 8 --val-size 256
python3 "$ROOT/bench/scripts/profile_categories.py" "$OUT"/put-256.data "$OUT"/range-l-256.data "$OUT"/put-1.data
