"""Concurrent clients for the linearizability-under-faults test
(tools/tests/it/linfault.rs), through python-etcd3 (a client library nobody
here wrote).

    lin_client.py ENDPOINT HISTORY CLIENT_BASE THREADS KEYS SECONDS SEED

Runs THREADS threads against ENDPOINT (host:port, one member) for SECONDS
seconds. Each thread has its own etcd3 client and, at random over KEYS keys
(`lin/0` .. `lin/KEYS-1`), issues:
  - get (linearizable: python-etcd3's default),
  - put of a unique value `CLIENT-SEQ`,
  - compare-and-swap: a txn `value(key) == expected` then `put(key, new)`,
    `expected` being the last value this thread saw for the key (so a good
    share succeed), `new` unique.
Every operation is appended to HISTORY as two JSON lines, each flushed at
once, one before the request is sent and one when it completes:
  {"ev": "call", "client": C, "seq": N, "key": K, "op": "get"|"put"|"cas",
   "value": V (put/cas new) | null, "expected": E (cas) | null, "call": NS}
  {"ev": "ret", "client": C, "seq": N, "ret": NS | null,
   "result": V | null (get), "succeeded": true | false (cas) | null,
   "error": S | null}
with times from time.monotonic_ns() (CLOCK_MONOTONIC, the clock Rust's
Instant and the test's clock_gettime use). An error or timeout gives
"ret": null, and a call line without a ret line (the process was killed
mid-request) means the same: an indeterminate operation, a write that may or
may not have taken effect. After any error the thread opens a fresh client (a
restarted member is reached at once instead of after grpc's reconnect
backoff).

On SIGTERM (or after SECONDS) the threads finish their current operation and
the process prints `done OPS ERRORS` on stdout.

Run with PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python (etcd3 0.12's
generated code predates protobuf 4).
"""
import json
import random
import signal
import sys
import threading
import time

import etcd3

OP_TIMEOUT_S = 8


def main():
    endpoint, path, base, threads, keys, seconds, seed = sys.argv[1:8]
    host, port = endpoint.rsplit(":", 1)
    base, threads, keys, seed = int(base), int(threads), int(keys), int(seed)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    out = open(path, "a", encoding="utf-8")
    lock = threading.Lock()
    counts = {"ops": 0, "errors": 0}

    def write(rec):
        line = json.dumps(rec)
        with lock:
            out.write(line + "\n")
            out.flush()

    def run(t):
        client_id = base + t
        rng = random.Random(seed * 7919 + client_id)
        client = etcd3.client(host=host, port=int(port), timeout=OP_TIMEOUT_S)
        seen = {}
        seq = 0
        while not stop.is_set():
            seq += 1
            key = "lin/%d" % rng.randrange(keys)
            r = rng.random()
            call = {"ev": "call", "client": client_id, "seq": seq, "key": key,
                    "value": None, "expected": None}
            ret = {"ev": "ret", "client": client_id, "seq": seq, "ret": None,
                   "result": None, "succeeded": None, "error": None}
            if r < 0.4:
                call["op"] = "get"
            elif r < 0.7 or key not in seen:
                call["op"] = "put"
                call["value"] = "%d-%d" % (client_id, seq)
            else:
                call["op"] = "cas"
                call["expected"] = seen[key]
                call["value"] = "%d-%d" % (client_id, seq)
            call["call"] = time.monotonic_ns()
            write(call)
            try:
                if call["op"] == "get":
                    value, _meta = client.get(key)
                    ret["ret"] = time.monotonic_ns()
                    if value is not None:
                        ret["result"] = value.decode()
                        seen[key] = ret["result"]
                elif call["op"] == "put":
                    client.put(key, call["value"])
                    ret["ret"] = time.monotonic_ns()
                    seen[key] = call["value"]
                else:
                    tx = client.transactions
                    ok, _ = client.transaction(
                        compare=[tx.value(key) == call["expected"]],
                        success=[tx.put(key, call["value"])],
                        failure=[])
                    ret["ret"] = time.monotonic_ns()
                    ret["succeeded"] = bool(ok)
                    if ok:
                        seen[key] = call["value"]
            except Exception as e:  # noqa: BLE001 - every failure is recorded
                ret["ret"] = None
                ret["error"] = "%s: %s" % (type(e).__name__, str(e)[:200])
            write(ret)
            with lock:
                counts["ops"] += 1
                if ret["error"] is not None:
                    counts["errors"] += 1
            if ret["error"] is not None:
                try:
                    client.close()
                except Exception:  # noqa: BLE001
                    pass
                time.sleep(0.05)
                client = etcd3.client(host=host, port=int(port), timeout=OP_TIMEOUT_S)
        client.close()

    ts = [threading.Thread(target=run, args=(t,), daemon=True) for t in range(threads)]
    for t in ts:
        t.start()
    deadline = time.monotonic() + float(seconds)
    while not stop.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    for t in ts:
        t.join(OP_TIMEOUT_S + 5)
    with lock:
        print("done %d %d" % (counts["ops"], counts["errors"]), flush=True)
        out.flush()


if __name__ == "__main__":
    main()
