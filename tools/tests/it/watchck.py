#!/usr/bin/env python3
"""Driver of the watch-guarantee checker (tools/tests/it/watchck.rs).

A real gRPC client (grpcio with the etcd stubs shipped in the python `etcd3`
package) runs, against one server:

* one writer: a random history of puts, deletes (single keys and ranges),
  multi-op txns and compactions, each logged with the revision the server
  answered;
* several watchers, one watch per stream, each with its own key range and
  options (prev_kv, progress_notify, a filter, fragment). A watcher drops its
  stream at random moments (sometimes its whole channel) and resumes from
  the revision after the last one it has seen (the last event, or sometimes
  the last progress notification: a bookmark); now and then it asks for
  progress. Everything each stream received is logged, in order.

At the end every watcher runs until it has seen the final revision, a probe
watches from revision 1 after a compaction (must be canceled with that
compact revision), and the whole key space is read. The log goes to stdout
as JSON; the Rust side models the history from the writer log and checks.

The `etcd3` package's stubs predate `progress_request`, `watch_id`,
`fragment`: the Watch messages are rebuilt here from its descriptors with
those fields added (field numbers of etcd v3.5's rpc.proto).

Usage: watchck.py ENDPOINT SEED SECONDS [no-tombstone-compactions]

With `no-tombstone-compactions` the writer never compacts at a revision
that deleted something (etcd v3.5.1 drops the tombstone at the compaction
revision, so a watch from that revision misses the delete: etcd#18089,
fixed in etcd v3.5.15; ferrocd keeps it like etcd >= 3.5.15).
"""

import json
import queue
import random
import sys
import threading
import time
import zlib

import grpc
from etcd3.etcdrpc import auth_pb2, kv_pb2, rpc_pb2, rpc_pb2_grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

# ---------------------------------------------------------------------------
# Watch messages with etcd v3.5's fields
# ---------------------------------------------------------------------------


def _watch_messages():
    fdp = descriptor_pb2.FileDescriptorProto.FromString(rpc_pb2.DESCRIPTOR.serialized_pb)
    msgs = {m.name: m for m in fdp.message_type}
    F = descriptor_pb2.FieldDescriptorProto
    prog = fdp.message_type.add()
    prog.name = "WatchProgressRequest"
    wr = msgs["WatchRequest"]
    f = wr.field.add(name="progress_request", number=3, type=F.TYPE_MESSAGE,
                     label=F.LABEL_OPTIONAL, type_name=".etcdserverpb.WatchProgressRequest")
    f.oneof_index = 0
    wc = msgs["WatchCreateRequest"]
    if "watch_id" not in [x.name for x in wc.field]:
        wc.field.add(name="watch_id", number=7, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
    if "fragment" not in [x.name for x in wc.field]:
        wc.field.add(name="fragment", number=8, type=F.TYPE_BOOL, label=F.LABEL_OPTIONAL)
    wresp = msgs["WatchResponse"]
    if "fragment" not in [x.name for x in wresp.field]:
        wresp.field.add(name="fragment", number=7, type=F.TYPE_BOOL, label=F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(kv_pb2.DESCRIPTOR.serialized_pb))
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(auth_pb2.DESCRIPTOR.serialized_pb))
    pool.Add(fdp)
    factory = message_factory.MessageFactory(pool)

    def cls(name):
        return factory.GetPrototype(pool.FindMessageTypeByName("etcdserverpb." + name))

    return cls("WatchRequest"), cls("WatchResponse")


WatchRequest, WatchResponse = _watch_messages()

# ---------------------------------------------------------------------------
# Key space and values
# ---------------------------------------------------------------------------

KEYS = [b"w/" + bytes([c]) for c in b"abcdefgh"] + [b"x/a", b"x/b"]
BIG = 60 * 1024


def show(b):
    """A value as logged: itself if short, else its length and CRC."""
    if len(b) > 64:
        return "len%d:crc%08x" % (len(b), zlib.crc32(b))
    return b.decode("latin-1")


def kv_json(kv):
    return [kv.key.decode("latin-1"), show(kv.value), kv.create_revision,
            kv.mod_revision, kv.version, kv.lease]


# The watchers: key, range_end, options. One watch per stream.
WATCHERS = [
    dict(key=b"w/", end=b"w0", prev_kv=True, progress=True, fragment=True),
    dict(key=b"w/c", end=b"", prev_kv=True, progress=False),
    dict(key=b"w/b", end=b"w/e", prev_kv=False, progress=True),
    dict(key=b"\0", end=b"\0", prev_kv=True, progress=True, fragment=True),
    dict(key=b"w/", end=b"w0", prev_kv=False, progress=False, filters=[1]),  # NODELETE
    dict(key=b"w/e", end=b"\0", prev_kv=False, progress=True, filters=[0]),  # NOPUT
    # Three watches on one stream, with client-chosen IDs.
    dict(key=b"w/a", end=b"w/d", prev_kv=True, progress=True, stream="shared"),
    dict(key=b"x/", end=b"x0", prev_kv=False, progress=True, stream="shared"),
    dict(key=b"w/", end=b"w0", prev_kv=True, progress=False, filters=[0], stream="shared"),
]


def now_rev(kv):
    return kv.Range(rpc_pb2.RangeRequest(key=b"\0", limit=1)).header.revision


class Writer:
    def __init__(self, channel, rng, log):
        self.kv = rpc_pb2_grpc.KVStub(channel)
        self.rng = rng
        self.log = log
        self.seq = 0
        self.last_compact = 0
        # Set before a Compact is sent: no compaction above it is in effect.
        self.compact_hi = 0
        self.keep_from = None
        self.avoid = set()
        self.avoid_tombstones = False

    def logged(self, rev, ops):
        if any(op[0] == "del" for op in ops):
            self.avoid.add(rev)
        self.log.append(dict(op="txn", rev=rev, ops=ops))

    def value(self):
        self.seq += 1
        return ("v%d" % self.seq).encode()

    def step(self):
        r = self.rng.random()
        kv = self.kv
        if r < 0.40:
            k = self.rng.choice(KEYS)
            v = self.value()
            rev = kv.Put(rpc_pb2.PutRequest(key=k, value=v)).header.revision
            self.logged(rev, [["put", k.decode(), show(v)]])
        elif r < 0.55:
            if self.rng.random() < 0.7:
                k, end = self.rng.choice(KEYS), b""
            else:
                k, end = self.rng.choice([(b"w/b", b"w/e"), (b"w/", b"w0"), (b"x/", b"x0")])
            rev = kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=k, range_end=end)).header.revision
            self.logged(rev, [["del", k.decode(), end.decode()]])
        elif r < 0.95:
            keys = self.rng.sample(KEYS, self.rng.randint(2, 4))
            ops, reqs = [], []
            for k in keys:
                if self.rng.random() < 0.7:
                    v = self.value()
                    ops.append(["put", k.decode(), show(v)])
                    reqs.append(rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k, value=v)))
                else:
                    ops.append(["del", k.decode(), ""])
                    reqs.append(rpc_pb2.RequestOp(
                        request_delete_range=rpc_pb2.DeleteRangeRequest(key=k)))
            resp = kv.Txn(rpc_pb2.TxnRequest(success=reqs))
            assert resp.succeeded
            self.logged(resp.header.revision, ops)
        else:
            self.compact()

    def compact(self):
        cur = now_rev(self.kv)
        lo = self.last_compact + 1
        hi = cur - 3
        if self.keep_from is not None:
            # Keep the big revision until every fragment watcher got it.
            hi = min(hi, self.keep_from())
        if hi < lo:
            return
        rev = self.rng.randint(lo, hi)
        if self.avoid_tombstones:
            ok = [r for r in range(rev, hi + 1) if r not in self.avoid]
            if not ok:
                return
            rev = ok[0]
        self.compact_hi = rev
        self.kv.Compact(rpc_pb2.CompactionRequest(revision=rev))
        self.last_compact = rev
        self.log.append(dict(op="compact", rev=rev))

    def big_delete(self):
        """Puts large values under w/big/, then deletes them all in one
        revision: with prev_kv the response exceeds the fragment size."""
        ops = []
        for i in range(12):
            k = b"w/big/%d" % i
            v = bytes([97 + i]) * BIG
            rev = self.kv.Put(rpc_pb2.PutRequest(key=k, value=v)).header.revision
            self.logged(rev, [["put", k.decode(), show(v)]])
        rev = self.kv.DeleteRange(
            rpc_pb2.DeleteRangeRequest(key=b"w/big/", range_end=b"w/big0")).header.revision
        self.logged(rev, [["del", "w/big/", "w/big0"]])
        return rev


class Watcher:
    def __init__(self, idx, spec, endpoint, rng, stop, writer):
        self.writer = writer
        self.idx = idx
        self.spec = spec
        self.endpoint = endpoint
        self.rng = rng
        self.stop = stop
        self.sessions = []
        self.next_rev = 1
        self.bookmark = 0
        self.last_event = 0
        self.error = None
        # Watches that share this one's stream (run by this watcher).
        self.partners = []

    def create(self, start, watch_id):
        s = self.spec
        return WatchRequest(create_request=dict(
            key=s["key"], range_end=s["end"], start_revision=start,
            prev_kv=s.get("prev_kv", False), progress_notify=s.get("progress", False),
            filters=s.get("filters", []), fragment=s.get("fragment", False),
            watch_id=watch_id))

    def reached(self, rev):
        return self.last_event >= rev or self.bookmark >= rev

    def resume_point(self):
        nxt = self.last_event + 1
        if self.rng.random() < 0.5:
            nxt = max(nxt, self.bookmark + 1)
        return max(nxt, self.next_rev)

    def after_cancel(self, rec):
        c = rec["responses"][-1]["compact_revision"]
        if not c:
            raise RuntimeError("canceled: %r" % rec["responses"][-1])
        # Events before the compaction are gone: go on from the compact
        # revision, as clients do.
        self.next_rev = c
        self.last_event = max(self.last_event, c - 1)

    def group(self):
        return [self] + self.partners

    def run(self):
        try:
            channel = grpc.insecure_channel(self.endpoint)
            while not self.stop.is_set():
                recs = stream_session(self.group(), channel, self.rng)
                for m, rec in zip(self.group(), recs):
                    if rec["end"] == "canceled":
                        m.after_cancel(rec)
                if self.rng.random() < 0.3:
                    # Stay away a while: compactions may pass the resume
                    # point (then the watch is canceled).
                    time.sleep(self.rng.uniform(0.1, 1.0))
                if self.rng.random() < 0.2:
                    channel.close()
                    channel = grpc.insecure_channel(self.endpoint)
            self.channel = channel
        except Exception as e:  # reported, the checker fails the test
            for m in self.group():
                m.error = repr(e)

    def finish(self, final_rev):
        """Runs until every watch of the stream saw the final revision."""
        try:
            deadline = time.time() + 30
            channel = getattr(self, "channel", None) or grpc.insecure_channel(self.endpoint)
            while time.time() < deadline:
                if all(m.reached(final_rev) for m in self.group()):
                    return
                recs = stream_session(self.group(), channel, self.rng, until_rev=final_rev,
                                      max_secs=5.0)
                for m, rec in zip(self.group(), recs):
                    if rec["end"] == "canceled":
                        m.after_cancel(rec)
            raise RuntimeError("never saw the final revision %d" % final_rev)
        except Exception as e:
            for m in self.group():
                m.error = m.error or repr(e)


def stream_session(members, channel, rng, until_rev=None, max_secs=None):
    """One Watch stream carrying one watch per member, each from its resume
    point. A single watch gets a server-chosen ID, several get client-chosen
    ones. Returns one record per member when the stream is dropped (at a
    random moment, or once every member saw `until_rev`) or a member's
    watch is canceled by the server (then the whole stream is dropped and
    resumed)."""
    reqs = queue.Queue()
    multi = len(members) > 1
    ids = [100 + 7 * i if multi else 0 for i in range(len(members))]
    recs = []
    for m, wid in zip(members, ids):
        start = m.resume_point()
        # Compactions done before the create was sent: a start below them
        # must be canceled.
        rec = dict(start=start, compacted_before=m.writer.last_compact, responses=[],
                   end="", created=False)
        m.sessions.append(rec)
        recs.append(rec)
        reqs.put(m.create(start, wid))

    def gen():
        while True:
            r = reqs.get()
            if r is None:
                return
            yield r

    call = channel.stream_stream(
        "/etcdserverpb.Watch/Watch",
        request_serializer=WatchRequest.SerializeToString,
        response_deserializer=WatchResponse.FromString)(gen())
    if max_secs is None:
        max_secs = rng.choice([0.05, 0.2, 0.5, 1.0, 2.0])
    timer = threading.Timer(max_secs, call.cancel)
    timer.start()
    done = threading.Event()
    ask_rng = random.Random(rng.random())

    def ask():
        # Ask for progress now and then (answered with watch_id -1).
        while not done.is_set():
            time.sleep(ask_rng.uniform(0.05, 0.4))
            if done.is_set():
                break
            reqs.put(WatchRequest(progress_request={}))

    threading.Thread(target=ask, daemon=True).start()
    # Server-chosen IDs: the created responses arrive in create order.
    by_id = {}
    pending = list(range(len(members)))
    try:
        for resp in call:
            if resp.created:
                i = ids.index(resp.watch_id) if multi and resp.watch_id in ids else pending[0]
                if i in pending:
                    pending.remove(i)
                by_id[resp.watch_id] = i
                targets = [i]
            elif resp.watch_id == -1:
                targets = [i for i, r in enumerate(recs) if r["created"]]
            else:
                targets = [by_id.get(resp.watch_id, -1)]
            entry = dict(
                compact_hi=members[0].writer.compact_hi,
                rev=resp.header.revision, watch_id=resp.watch_id,
                created=resp.created, canceled=resp.canceled,
                compact_revision=resp.compact_revision,
                cancel_reason=resp.cancel_reason, fragment=resp.fragment,
                events=[[e.type, kv_json(e.kv),
                         kv_json(e.prev_kv) if e.HasField("prev_kv") else None]
                        for e in resp.events])
            canceled = False
            for i in targets:
                if i < 0:
                    # A response for no watch of this stream: recorded for
                    # every member, the checker rejects it.
                    for r in recs:
                        r["responses"].append(entry)
                    continue
                m, rec = members[i], recs[i]
                rec["created"] = True
                rec["responses"].append(entry)
                if resp.fragment:
                    # Only a whole (reassembled) response counts as seen.
                    pass
                elif resp.events:
                    m.last_event = resp.events[-1].kv.mod_revision
                elif not resp.created and not resp.canceled:
                    m.bookmark = max(m.bookmark, resp.header.revision)
                if resp.canceled:
                    rec["end"] = "canceled"
                    canceled = True
            if canceled:
                break
            if until_rev is not None and all(m.reached(until_rev) for m in members):
                for r in recs:
                    r["end"] = r["end"] or "done"
                break
    except grpc.RpcError as e:
        for r in recs:
            r["end"] = r["end"] or "dropped: %s" % e.code()
    finally:
        done.set()
        timer.cancel()
        call.cancel()
        reqs.put(None)
    return recs


def main():
    endpoint, seed, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    avoid_tombstones = sys.argv[4:] == ["no-tombstone-compactions"]
    rng = random.Random(seed)
    channel = grpc.insecure_channel(endpoint)
    grpc.channel_ready_future(channel).result(timeout=15)
    log = []
    w = Writer(channel, rng, log)
    w.avoid_tombstones = avoid_tombstones
    # Some history before the watchers start (they start from revision 1).
    for _ in range(20):
        w.step()
    stop = threading.Event()
    watchers = [Watcher(i, s, endpoint, random.Random(seed * 100 + i), stop, w)
                for i, s in enumerate(WATCHERS)]
    leaders = []
    for x in watchers:
        lead = next((l for l in leaders if x.spec.get("stream") and
                     l.spec.get("stream") == x.spec.get("stream")), None)
        if lead is None:
            leaders.append(x)
        else:
            lead.partners.append(x)
    threads = [threading.Thread(target=x.run) for x in leaders]
    for t in threads:
        t.start()
    t0 = time.time()
    big_done = False
    while time.time() - t0 < secs:
        w.step()
        if not big_done and time.time() - t0 > secs / 2:
            big = w.big_delete()
            frag = [x for x in watchers if x.spec.get("fragment")]
            w.keep_from = lambda: big if min(x.last_event for x in frag) < big else 1 << 62
            big_done = True
        time.sleep(rng.uniform(0, 0.01))
    w.compact()
    # The last write: a key every prefix watcher sees.
    rev = w.kv.Put(rpc_pb2.PutRequest(key=b"w/zz", value=b"end")).header.revision
    log.append(dict(op="txn", rev=rev, ops=[["put", "w/zz", "end"]]))
    final_rev = rev
    stop.set()
    for t in threads:
        t.join()
    fins = [threading.Thread(target=x.finish, args=(final_rev,)) for x in leaders]
    for t in fins:
        t.start()
    for t in fins:
        t.join()
    # Probe: a watch from a compacted revision is canceled with the
    # compaction's revision.
    probe_rev = final_rev - 1
    w.kv.Compact(rpc_pb2.CompactionRequest(revision=probe_rev))
    log.append(dict(op="compact", rev=probe_rev))
    w.last_compact = w.compact_hi = probe_rev
    probe = Watcher(len(WATCHERS), dict(key=b"w/", end=b"w0"), endpoint, rng, stop, w)
    stream_session([probe], channel, rng, max_secs=10.0)
    final = w.kv.Range(rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0"))
    out = dict(
        seed=seed,
        writes=log,
        final_rev=final_rev,
        final_kvs=[kv_json(kv) for kv in final.kvs],
        final_header_rev=final.header.revision,
        watchers=[dict(key=x.spec["key"].decode("latin-1"), end=x.spec["end"].decode("latin-1"),
                       prev_kv=x.spec.get("prev_kv", False),
                       progress=x.spec.get("progress", False),
                       fragment=x.spec.get("fragment", False),
                       filters=x.spec.get("filters", []),
                       sessions=x.sessions, error=x.error) for x in watchers],
        probe=dict(rev=probe_rev, session=probe.sessions[0]),
    )
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
