"""Watch semantics checked through python-etcd3 (a client library we did not
write: grpcio, one bidirectional Watch stream shared by all watches of the
client), against a server given as HOST:PORT. Exits non-zero on the first
failed assertion; prints ALL OK at the end.

Expected values are etcd v3.5 behaviour (the Rust black-box suite compares
etcdctl watch output with a real etcd 3.5.1 byte for byte)."""
import queue
import threading
import sys

import etcd3
from etcd3 import etcdrpc, events, exceptions

host, port = sys.argv[1].rsplit(":", 1)
c = etcd3.client(host=host, port=int(port), timeout=10)
TIMEOUT = 10


def take(it, n):
    out = []
    for e in it:
        out.append(e)
        if len(out) == n:
            return out
    raise AssertionError("iterator ended after %d of %d" % (len(out), n))


def collector():
    q = queue.Queue()
    return q, q.put


# watch(): a single key, events after the watch started
it, cancel = c.watch("w/a")
c.put("w/a", "1")
c.put("w/b", "not watched")
c.delete("w/a")
got = take(it, 2)
assert isinstance(got[0], events.PutEvent), got[0]
assert got[0].key == b"w/a" and got[0].value == b"1" and got[0].version == 1
assert isinstance(got[1], events.DeleteEvent), got[1]
assert got[1].key == b"w/a" and got[1].mod_revision == got[0].mod_revision + 2
cancel()

# watch_prefix() from a start revision: history first, then live
first = c.put("p/1", "a").header.revision
c.put("p/2", "b")
c.put("q", "not watched")
c.put("p/1", "c")
it, cancel = c.watch_prefix("p/", start_revision=first)
c.put("p/3", "live")
got = take(it, 4)
assert [(e.key, e.value, e.mod_revision) for e in got] == [
    (b"p/1", b"a", first),
    (b"p/2", b"b", first + 1),
    (b"p/1", b"c", first + 3),
    (b"p/3", b"live", first + 4),
], [(e.key, e.value, e.mod_revision) for e in got]
cancel()

# one txn = one response, events in op order, header = the txn's revision;
# prev_kv on request, never on a create
q, cb = collector()
wid = c.add_watch_prefix_callback("t/", cb, prev_kv=True)
c.put("t/2", "old")
r = c.transaction(
    compare=[],
    success=[c.transactions.put("t/1", "x"), c.transactions.put("t/2", "y")],
    failure=[],
)
resp = q.get(timeout=TIMEOUT)  # the put of t/2
assert [e.key for e in resp.events] == [b"t/2"]
resp = q.get(timeout=TIMEOUT)
rev = c.get("t/1")[1].mod_revision
assert [(e.key, e.value) for e in resp.events] == [(b"t/1", b"x"), (b"t/2", b"y")]
assert all(e.mod_revision == rev for e in resp.events)
assert resp.header.revision == rev, (resp.header.revision, rev)
assert not resp.events[0]._event.HasField("prev_kv"), "no prev_kv on a create"
assert resp.events[1].prev_value == b"old"
c.cancel_watch(wid)

# filters: NOPUT sees only deletes. python-etcd3 0.12 cannot send filters
# (it assigns to a repeated field), so this one uses the generated stub on a
# stream of its own: also shows server-assigned ids start at 0 per stream.
stop = threading.Event()


def requests():
    yield etcdrpc.WatchRequest(create_request=etcdrpc.WatchCreateRequest(
        key=b"f", filters=[etcdrpc.WatchCreateRequest.NOPUT]))
    stop.wait(TIMEOUT)


responses = etcdrpc.WatchStub(c.channel).Watch(requests(), timeout=TIMEOUT)
created = next(responses)
assert created.created and not created.canceled and created.watch_id == 0, created
c.put("f", "1")
c.delete("f")
resp = next(responses)
assert [e.type for e in resp.events] == [1], resp  # DELETE
stop.set()
responses.cancel()

# two watches on the same stream, ids are distinct; cancel stops delivery
q1, cb1 = collector()
q2, cb2 = collector()
w1 = c.add_watch_callback("m", cb1)
w2 = c.add_watch_callback("m", cb2)
assert w1 != w2, (w1, w2)
c.put("m", "1")
assert q1.get(timeout=TIMEOUT).events[0].value == b"1"
assert q2.get(timeout=TIMEOUT).events[0].value == b"1"
c.cancel_watch(w1)
c.put("m", "2")
assert q2.get(timeout=TIMEOUT).events[0].value == b"2"
try:
    leftover = q1.get(timeout=0.5)
    raise AssertionError("canceled watch got %r" % (leftover,))
except queue.Empty:
    pass
c.cancel_watch(w2)

# a start revision below the compaction: the watch is created, then
# canceled with compact_revision (the callback gets RevisionCompactedError)
compact_at = c.put("cmp", "1").header.revision
c.put("cmp", "2")
c.compact(compact_at)
q, cb = collector()
c.add_watch_callback("cmp", cb, start_revision=compact_at - 1)
err = q.get(timeout=TIMEOUT)
assert isinstance(err, exceptions.RevisionCompactedError), err
assert err.compacted_revision == compact_at, err.compacted_revision

print("ALL OK")
