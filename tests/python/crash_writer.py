"""Concurrent writers for the kill -9 durability test (tools/tests/it/crash.rs),
through python-etcd3 (a client library nobody here wrote).

One long-lived process serves many rounds (interpreter + grpc start-up costs
~0.5 s, too much to pay per crash). It reads commands on stdin, one per line,
and answers each on stdout:

  round ITER HOST:PORT ACKLOG SEED
      start THREADS writer threads against HOST:PORT; answer `started` once
      every thread has issued its first put. Each thread loops:
        - 1 put in 4 overwrites a shared key `s/K` (K < SHARED_KEYS),
        - the others create a unique key `u/ITER/THREAD/SEQ`, never written again;
      every value is unique (`v/ITER/THREAD/SEQ/...` + random padding, ~3 %
      of them 2-8 KiB so a commit spans several WAL blocks).
      Before a put: `key value` is appended to ACKLOG.attempts (flushed).
      After a put that returned OK: `key value revision` is appended to
      ACKLOG (flushed per line), revision = the response header's revision.
  stop
      stop the threads (the test has SIGKILLed the server by then, so puts
      in flight fail), wait for them, close the client, answer
      `stopped acked=N failed=M attempted=K`.
  quit (or EOF)
      exit.

Run with PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python (etcd3 0.12's
generated code predates protobuf 4).
"""
import random
import sys
import threading

import etcd3

THREADS = 8
SHARED_KEYS = 8
PUT_TIMEOUT_S = 5


class Round:
    def __init__(self, it, endpoint, acklog, seed):
        host, port = endpoint.rsplit(":", 1)
        self.it = int(it)
        self.seed = int(seed)
        self.client = etcd3.client(host=host, port=int(port), timeout=PUT_TIMEOUT_S)
        self.acks = open(acklog, "a", encoding="ascii")
        self.attempts = open(acklog + ".attempts", "a", encoding="ascii")
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.first_put = threading.Semaphore(0)
        self.acked = 0
        self.failed = 0
        self.attempted = 0
        self.errors = {}
        self.threads = [threading.Thread(target=self.run, args=(t,), daemon=True)
                        for t in range(THREADS)]
        for t in self.threads:
            t.start()
        for _ in self.threads:
            self.first_put.acquire()

    def run(self, t):
        rng = random.Random(self.seed * 1000003 + self.it * 101 + t)
        seq = 0
        announced = False
        while not self.stop.is_set():
            seq += 1
            if rng.random() < 0.25:
                key = "s/%d" % rng.randrange(SHARED_KEYS)
            else:
                key = "u/%05d/%02d/%06d" % (self.it, t, seq)
            pad = rng.randrange(2048, 8192) if rng.random() < 0.03 else rng.randrange(0, 300)
            value = "v/%d/%d/%d/%s" % (self.it, t, seq, "x" * pad)
            with self.lock:
                self.attempts.write("%s %s\n" % (key, value))
                self.attempts.flush()
                self.attempted += 1
            if not announced:
                announced = True
                self.first_put.release()
            try:
                resp = self.client.put(key, value)
            except Exception as e:  # noqa: BLE001 - any failure means "not acknowledged"
                name = type(e).__name__
                with self.lock:
                    self.failed += 1
                    self.errors[name] = self.errors.get(name, 0) + 1
                # The server is (being) killed: do not spin until `stop`.
                self.stop.wait(0.01)
                continue
            rev = resp.header.revision
            with self.lock:
                self.acks.write("%s %s %d\n" % (key, value, rev))
                self.acks.flush()
                self.acked += 1
        if not announced:
            self.first_put.release()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join()
        try:
            self.client.close()
        except Exception:  # noqa: BLE001
            pass
        self.acks.close()
        self.attempts.close()
        errs = ",".join("%s:%d" % kv for kv in sorted(self.errors.items())) or "-"
        return "stopped acked=%d failed=%d attempted=%d errors=%s" % (
            self.acked, self.failed, self.attempted, errs)


def main():
    current = None
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "round":
            assert current is None, "round while a round is running"
            current = Round(*words[1:5])
            print("started", flush=True)
        elif words[0] == "stop":
            assert current is not None, "stop without a round"
            print(current.finish(), flush=True)
            current = None
        elif words[0] == "quit":
            break
        else:
            raise SystemExit("unknown command %r" % line)
    if current is not None:
        current.finish()


if __name__ == "__main__":
    main()
