#!/usr/bin/env bash
# usage: bench/scripts/restart_1m.sh etcd|ferrocd BIN
# 1M puts (8 B keys, 256 B values, 256 clients / 16 conns), then RSS, data-dir
# size, restart time to the first served read. Loopback ports 24379/24380.
set -u
kind=$1; bin=$2; W=/tmp/rb-$kind; rm -rf $W; mkdir -p $W; cd $W
args="--name m1 --data-dir $W/data --listen-client-urls http://127.0.0.1:24379 --advertise-client-urls http://127.0.0.1:24379 --listen-peer-urls http://127.0.0.1:24380 --initial-advertise-peer-urls http://127.0.0.1:24380 --initial-cluster m1=http://127.0.0.1:24380"
start() { $bin $args > $W/log 2>&1 & pid=$!; t0=$(date +%s.%N); until etcdctl --endpoints 127.0.0.1:24379 --command-timeout=1s get x >/dev/null 2>&1; do sleep 0.02; done; t1=$(date +%s.%N); echo "start-to-first-read $(echo "$t1 - $t0" | bc) s"; }
start
/work/main/target/release/ferrobench --endpoints 127.0.0.1:24379 --clients 256 --conns 16 --server-pid $pid --json put --total 1000000 --key-size 8 --val-size 256 --key-space-size 1000000 --sequential-keys 2>/dev/null
echo "rss_kb $(grep VmRSS /proc/$pid/status | awk '{print $2}') hwm_kb $(grep VmHWM /proc/$pid/status | awk '{print $2}')"
sleep 1
echo "data-dir $(du -sm $W/data | cut -f1) MiB"; du -sm $W/data/member/* 
kill $pid; wait $pid 2>/dev/null
start
echo "count $(etcdctl --endpoints 127.0.0.1:24379 get --prefix '' --count-only -w fields | grep Count)"
echo "rss_after_restart_kb $(grep VmRSS /proc/$pid/status | awk '{print $2}')"
kill $pid; wait $pid 2>/dev/null
