"""KV semantics checked through python-etcd3 (a client library we did not
write), against a server given as HOST:PORT. Exits non-zero on the first
failed assertion; prints ALL OK at the end.

Expected values are etcd v3.5 behaviour (the Rust black-box suite compares
etcdctl output with a real etcd 3.5.1 byte for byte; this script checks the
same semantics through a second, independent client stack)."""
import sys

import etcd3
import grpc
from etcd3 import etcdrpc

host, port = sys.argv[1].rsplit(":", 1)
c = etcd3.client(host=host, port=int(port), timeout=10)
kv = c.kvstub


def expect_error(fn, code, details):
    try:
        fn()
    except grpc.RpcError as e:
        assert e.code() == code, (e.code(), code)
        assert e.details() == details, (e.details(), details)
        return
    raise AssertionError("expected %s %r" % (code, details))


# put/get, revisions and versions
r = c.put("a", "1")
assert r.header.revision == 2, r.header.revision
assert r.header.cluster_id != 0 and r.header.member_id != 0
v, meta = c.get("a")
assert v == b"1" and meta.version == 1 and meta.create_revision == 2 and meta.mod_revision == 2
c.put("a", "2")
v, meta = c.get("a")
assert v == b"2" and meta.version == 2 and meta.create_revision == 2 and meta.mod_revision == 3

# prev_kv
r = c.put("a", "3", prev_kv=True)
assert r.prev_kv.value == b"2" and r.prev_kv.version == 2

# prefix, limit, sort, count, keys_only
for k in ["p/1", "p/2", "p/3", "q"]:
    c.put(k, "v" + k)
vals = [m.key for _, m in c.get_prefix("p/")]
assert vals == [b"p/1", b"p/2", b"p/3"], vals
resp = kv.Range(etcdrpc.RangeRequest(key=b"p/", range_end=b"p0", limit=2))
assert len(resp.kvs) == 2 and resp.more and resp.count == 3
resp = kv.Range(etcdrpc.RangeRequest(key=b"p/", range_end=b"p0", count_only=True))
assert len(resp.kvs) == 0 and resp.count == 3
resp = kv.Range(etcdrpc.RangeRequest(key=b"p/", range_end=b"p0", keys_only=True,
                                     sort_order=etcdrpc.RangeRequest.DESCEND))
assert [x.key for x in resp.kvs] == [b"p/3", b"p/2", b"p/1"] and all(x.value == b"" for x in resp.kvs)
# from-key ("\0" range end)
resp = kv.Range(etcdrpc.RangeRequest(key=b"p/3", range_end=b"\0"))
assert [x.key for x in resp.kvs] == [b"p/3", b"q"], resp.kvs
# all keys
resp = kv.Range(etcdrpc.RangeRequest(key=b"\0", range_end=b"\0", count_only=True))
assert resp.count == 5, resp.count

# historical read, and header revision is always the current one
cur = c.get("a")[1].mod_revision
resp = kv.Range(etcdrpc.RangeRequest(key=b"a", revision=2))
assert resp.kvs[0].value == b"1" and resp.header.revision >= cur

# min/max mod revision filters
resp = kv.Range(etcdrpc.RangeRequest(key=b"\0", range_end=b"\0", min_mod_revision=5))
assert all(x.mod_revision >= 5 for x in resp.kvs) and len(resp.kvs) == 4, resp.kvs

# delete with prev_kv, delete of nothing creates no revision
before = kv.Range(etcdrpc.RangeRequest(key=b"a")).header.revision
resp = kv.DeleteRange(etcdrpc.DeleteRangeRequest(key=b"nothing"))
assert resp.deleted == 0 and resp.header.revision == before
resp = kv.DeleteRange(etcdrpc.DeleteRangeRequest(key=b"p/", range_end=b"p0", prev_kv=True))
assert resp.deleted == 3 and [x.key for x in resp.prev_kvs] == [b"p/1", b"p/2", b"p/3"]
assert resp.header.revision == before + 1

# transactions: one revision for the whole txn, compares on every target
t = c.transactions
ok, responses = c.transaction(
    compare=[t.value("a") == "3", t.version("a") > 0, t.create("a") == 2, t.mod("a") < 100],
    success=[t.put("x", "1"), t.put("y", "2"), t.get("x")],
    failure=[t.put("z", "3")],
)
assert ok
assert responses[2][0][0] == b"1", responses  # a read inside the txn sees its own write
_, mx = c.get("x")
_, my = c.get("y")
assert mx.mod_revision == my.mod_revision, (mx.mod_revision, my.mod_revision)
ok, _ = c.transaction(compare=[t.value("a") == "nope"], success=[], failure=[t.put("z", "3")])
assert not ok and c.get("z")[0] == b"3"

# errors, with etcd's exact codes and strings
expect_error(lambda: kv.Range(etcdrpc.RangeRequest(key=b"")), grpc.StatusCode.INVALID_ARGUMENT,
             "etcdserver: key is not provided")
expect_error(lambda: kv.Put(etcdrpc.PutRequest(key=b"", value=b"v")), grpc.StatusCode.INVALID_ARGUMENT,
             "etcdserver: key is not provided")
expect_error(lambda: kv.Put(etcdrpc.PutRequest(key=b"missing", ignore_value=True)),
             grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: key not found")
expect_error(lambda: kv.Put(etcdrpc.PutRequest(key=b"a", value=b"v", ignore_value=True)),
             grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: value is provided")
expect_error(lambda: kv.Put(etcdrpc.PutRequest(key=b"a", lease=5, ignore_lease=True)),
             grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: lease is provided")
expect_error(lambda: kv.Put(etcdrpc.PutRequest(key=b"a", value=b"v", lease=12345)),
             grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found")
expect_error(lambda: kv.Range(etcdrpc.RangeRequest(key=b"a", revision=10 ** 6)),
             grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision")
many = [etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(key=b"k%d" % i)) for i in range(129)]
expect_error(lambda: kv.Txn(etcdrpc.TxnRequest(success=many)), grpc.StatusCode.INVALID_ARGUMENT,
             "etcdserver: too many operations in txn request")
dup = [etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(key=b"d")),
       etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(key=b"d"))]
expect_error(lambda: kv.Txn(etcdrpc.TxnRequest(success=dup)), grpc.StatusCode.INVALID_ARGUMENT,
             "etcdserver: duplicate key given in txn request")
expect_error(lambda: c.put("big", "x" * (70 * 1024)), grpc.StatusCode.INVALID_ARGUMENT,
             "etcdserver: request is too large")

# compaction
rev = c.get("a")[1].mod_revision
c.compact(rev, physical=True)
expect_error(lambda: kv.Range(etcdrpc.RangeRequest(key=b"a", revision=rev - 1)),
             grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted")
expect_error(lambda: c.compact(rev), grpc.StatusCode.OUT_OF_RANGE,
             "etcdserver: mvcc: required revision has been compacted")
assert c.get("a")[0] == b"3"

# the server is still fine after all those errors
c.put("after", "errors")
assert c.get("after")[0] == b"errors"
print("ALL OK")
