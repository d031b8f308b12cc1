"""Load for the online-defrag test (tools/tests/it/defrag.rs), through
python-etcd3 (a client library nobody here wrote).

  defrag_load.py HOST:PORT fill N VALUE_SIZE
      puts f/000000 .. f/N-1 (values of VALUE_SIZE bytes) in txns of 100,
      then deletes every odd one, and prints `rev R` (the last revision).
  defrag_load.py HOST:PORT write ACKLOG
      puts unique keys w/000001, w/000002, ... one at a time until a line
      `stop` arrives on stdin. After each put that returned OK it appends
      `key t_start t_end revision` to ACKLOG (times: time.time(), seconds);
      it prints `started` after the first ack and, at the end,
      `stopped acked=N failed=M`.

Run with PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python (etcd3 0.12's
generated code predates protobuf 4).
"""
import sys
import threading
import time

import etcd3


def client(endpoint):
    host, port = endpoint.rsplit(":", 1)
    return etcd3.client(host=host, port=int(port), timeout=30)


def fill(endpoint, n, size):
    c = client(endpoint)
    value = "x" * size
    for ops, keys in (("put", range(n)), ("delete", range(1, n, 2))):
        keys = list(keys)
        for i in range(0, len(keys), 100):
            chunk = keys[i:i + 100]
            if ops == "put":
                success = [c.transactions.put("f/%06d" % k, value) for k in chunk]
            else:
                success = [c.transactions.delete("f/%06d" % k) for k in chunk]
            ok, _ = c.transaction(compare=[], success=success, failure=[])
            assert ok
    _, meta = c.get("f/000000")
    rev = meta.response_header.revision
    print("rev %d" % rev, flush=True)


def write(endpoint, acklog):
    c = client(endpoint)
    stop = threading.Event()
    counts = {"acked": 0, "failed": 0}

    def run():
        seq = 0
        with open(acklog, "a", encoding="ascii") as out:
            while not stop.is_set():
                seq += 1
                key = "w/%06d" % seq
                t0 = time.time()
                try:
                    resp = c.put(key, "v%d" % seq)
                except Exception as e:  # noqa: BLE001 - counted, reported
                    counts["failed"] += 1
                    sys.stderr.write("put %s: %r\n" % (key, e))
                    continue
                t1 = time.time()
                out.write("%s %.6f %.6f %d\n" % (key, t0, t1, resp.header.revision))
                out.flush()
                counts["acked"] += 1
                if counts["acked"] == 1:
                    print("started", flush=True)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    for line in sys.stdin:
        if line.strip() == "stop":
            break
    stop.set()
    t.join()
    print("stopped acked=%d failed=%d" % (counts["acked"], counts["failed"]), flush=True)


def main():
    endpoint, mode = sys.argv[1], sys.argv[2]
    if mode == "fill":
        fill(endpoint, int(sys.argv[3]), int(sys.argv[4]))
    elif mode == "write":
        write(endpoint, sys.argv[3])
    else:
        sys.exit("unknown mode %r" % mode)


if __name__ == "__main__":
    main()
