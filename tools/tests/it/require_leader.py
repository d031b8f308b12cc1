#!/usr/bin/env python3
"""Require-leader watches (clientv3's WithRequireLeader: gRPC metadata
`hasleader: true`), driven from tools/tests/it/leader_change.rs.

Opens two watch streams on one member, one with `hasleader: true` and one
without, and prints READY once both are created. Then waits for a line on
stdin (the other members have been stopped), and reports as JSON how each
stream ended within 30 s, and how a new require-leader watch, a
require-leader Range (unary) and a require-leader LeaseKeepAlive stream are
answered, and how an idle require-leader LeaseKeepAlive stream opened
before the stop ended. Likewise for v3election's Observe (a server stream):
one stream with `hasleader: true` and one without, opened before the stop
on an election that has a leader key, and a new require-leader Observe
after it.

Usage: require_leader.py ENDPOINT
"""

import json
import queue
import sys
import threading
import time

import grpc
from etcd3.etcdrpc import rpc_pb2, rpc_pb2_grpc

REQUIRE_LEADER = (("hasleader", "true"),)


class Stream:
    def __init__(self, stub, metadata):
        self.q = queue.Queue()
        self.q.put(rpc_pb2.WatchRequest(
            create_request=rpc_pb2.WatchCreateRequest(key=b"a")))
        self.created = threading.Event()
        self.ended = threading.Event()
        self.result = dict(end="open")
        self.t0 = time.time()
        self.call = stub.Watch(self.gen(), metadata=metadata)
        threading.Thread(target=self.read, daemon=True).start()

    def gen(self):
        while True:
            r = self.q.get()
            if r is None:
                return
            yield r

    def read(self):
        try:
            for r in self.call:
                if r.created:
                    self.created.set()
            self.result = dict(end="eof")
        except grpc.RpcError as e:
            self.result = dict(end="error", code=e.code().name, details=e.details())
        self.result["after"] = time.time() - self.t0
        self.ended.set()


def leader_request(name):
    """An encoded v3electionpb.LeaderRequest (field 1: name); etcd3 ships
    no v3election stubs."""
    assert len(name) < 128
    return b"\x0a" + bytes([len(name)]) + name


class Observe:
    """An Election.Observe stream; `seen` is set at its first response."""

    def __init__(self, channel, name, metadata):
        observe = channel.unary_stream(
            "/v3electionpb.Election/Observe",
            request_serializer=leader_request,
            # A LeaderResponse is {header = 1, kv = 2}: RangeResponse
            # {header = 1, repeated kvs = 2} reads it, kv as kvs[0].
            response_deserializer=rpc_pb2.RangeResponse.FromString,
        )
        self.seen = threading.Event()
        self.ended = threading.Event()
        self.result = dict(end="open")
        self.call = observe(name, metadata=metadata)
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        try:
            for r in self.call:
                if r.kvs:
                    self.seen.set()
            self.result = dict(end="eof")
        except grpc.RpcError as e:
            self.result = dict(end="error", code=e.code().name, details=e.details())
        self.ended.set()


class KeepAlive:
    """A require-leader LeaseKeepAlive stream that renews once, then stays
    open and idle until the server ends it."""

    def __init__(self, stub, lease_id):
        self.q = queue.Queue()
        self.q.put(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
        self.renewed = threading.Event()
        self.ended = threading.Event()
        self.result = dict(end="open")
        self.t0 = time.time()
        self.call = stub.LeaseKeepAlive(self.gen(), metadata=REQUIRE_LEADER)
        threading.Thread(target=self.read, daemon=True).start()

    def gen(self):
        while True:
            r = self.q.get()
            if r is None:
                return
            yield r

    def read(self):
        try:
            for r in self.call:
                if r.TTL > 0:
                    self.renewed.set()
            self.result = dict(end="eof")
        except grpc.RpcError as e:
            self.result = dict(end="error", code=e.code().name, details=e.details())
        self.result["after"] = time.time() - self.t0
        self.ended.set()


def main():
    channel = grpc.insecure_channel(sys.argv[1])
    grpc.channel_ready_future(channel).result(timeout=15)
    stub = rpc_pb2_grpc.WatchStub(channel)
    rl = Stream(stub, REQUIRE_LEADER)
    plain = Stream(stub, ())
    for s in (rl, plain):
        if not s.created.wait(15):
            print(json.dumps(dict(error="not created", result=s.result)))
            return
    lease = rpc_pb2_grpc.LeaseStub(channel)
    grant = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60), timeout=10)
    ka = KeepAlive(lease, grant.ID)
    if not ka.renewed.wait(15):
        print(json.dumps(dict(error="keep-alive not renewed", result=ka.result)))
        return
    # An election with a leader key (the oldest key under "<name>/"), and
    # two Observe streams on it that have seen that leader.
    kv = rpc_pb2_grpc.KVStub(channel)
    kv.Put(rpc_pb2.PutRequest(key=b"elect/1", value=b"v"), timeout=10)
    obs_rl = Observe(channel, b"elect", REQUIRE_LEADER)
    obs_plain = Observe(channel, b"elect", ())
    for o in (obs_rl, obs_plain):
        if not o.seen.wait(15):
            print(json.dumps(dict(error="observe saw no leader", result=o.result)))
            return
    print("READY", flush=True)
    sys.stdin.readline()
    t_go = time.time()
    rl.ended.wait(30)
    out = dict(require_leader=dict(rl.result), plain=dict(plain.result))
    if rl.ended.is_set():
        out["require_leader"]["after"] = rl.result["after"] - (t_go - rl.t0)
    # The idle require-leader keep-alive stream opened before the stop.
    ka.ended.wait(30)
    out["open_keepalive"] = dict(ka.result)
    out["open_keepalive"].pop("after", None)
    # The Observe streams opened before the stop.
    obs_rl.ended.wait(30)
    out["observe"] = dict(obs_rl.result)
    out["plain_observe"] = dict(obs_plain.result)
    # A new require-leader Observe on the leaderless member.
    obs_again = Observe(channel, b"elect", REQUIRE_LEADER)
    obs_again.ended.wait(10)
    out["new_observe"] = dict(obs_again.result, seen=obs_again.seen.is_set())
    # A new require-leader watch on the leaderless member.
    again = Stream(stub, REQUIRE_LEADER)
    again.ended.wait(10)
    out["new_require_leader"] = dict(again.result, created=again.created.is_set())
    try:
        kv.Range(rpc_pb2.RangeRequest(key=b"a", serializable=True), metadata=REQUIRE_LEADER,
                 timeout=10)
        out["range"] = dict(end="ok")
    except grpc.RpcError as e:
        out["range"] = dict(end="error", code=e.code().name, details=e.details())
    lease = rpc_pb2_grpc.LeaseStub(channel)
    try:
        reqs = iter([rpc_pb2.LeaseKeepAliveRequest(ID=1)])
        got = list(lease.LeaseKeepAlive(reqs, metadata=REQUIRE_LEADER, timeout=10))
        out["keepalive"] = dict(end="ok", responses=len(got))
    except grpc.RpcError as e:
        out["keepalive"] = dict(end="error", code=e.code().name, details=e.details())
    print(json.dumps(out), flush=True)
    for s in (rl, plain, again, ka):
        s.q.put(None)
        s.call.cancel()
    for o in (obs_rl, obs_plain, obs_again):
        o.call.cancel()


if __name__ == "__main__":
    main()
