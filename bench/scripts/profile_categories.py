#!/usr/bin/env python3
"""Where a server's CPU time goes: sums `perf report` self-time samples of a
`perf record` file into a few categories (first match wins, in the order
below), so that BENCHMARKS.md can say where each request's time goes.

    python3 bench/scripts/profile_categories.py perf.data [more.data ...]

Categories are by thread (the checkpoint thread), by DSO (the kernel) and by
symbol name (crate paths). Whatever matches nothing is "other"; its largest
symbols are printed so that the table can be checked.
"""
import collections
import re
import subprocess
import sys

CATEGORIES = [
    ("checkpoint thread (B-tree commit, off the request path)",
     lambda comm, dso, sym: comm.startswith("ferrocd-backend")),
    ("kernel (TCP, io_uring, scheduling, page faults)", lambda c, d, s: "kernel" in d),
    ("malloc/free", lambda c, d, s: re.search(
        r"malloc|free|_int_|unlink_chunk|consolidate|realloc|\bmi_|mi_page|mi_segment", s)),
    ("memcpy/memmove/memset", lambda c, d, s: re.search(r"memmove|memcpy|memset", s)),
    ("memcmp (key comparisons)", lambda c, d, s: "memcmp" in s),
    ("HTTP/2 (h2, hpack, http)", lambda c, d, s: re.search(r"\bh2::|hpack|\bhttp::", s)),
    ("gRPC layer and services (net), protobuf (prost)",
     lambda c, d, s: re.search(r"\bnet::|prost|ferrocd::|tokio_util", s)),
    ("glommio runtime (tasks, timers, rings, channels)", lambda c, d, s: re.search(
        r"glommio|async_channel|event_listener|concurrent_queue|futures|slab::", s)),
    ("Raft (raft-rs, raftcore loop, proposals)", lambda c, d, s: re.search(r"\braft::|raftcore|protobuf", s)),
    ("WAL (engine::wal, crc32)", lambda c, d, s: re.search(r"engine::wal|crc32", s)),
    ("MVCC store, key index, watch, lease (engine)", lambda c, d, s: re.search(
        r"engine::(mvcc|watch|lease)|btree::map|btree::node", s)),
    ("B-tree file reads on the request path", lambda c, d, s: "engine::btree" in s),
]

LINE = re.compile(r"\s+([\d.]+)%\s+(\S+)\s+(\S+)\s+\[[.k]\]\s+(.*)")


def categorize(path):
    out = subprocess.run(
        ["perf", "report", "-i", path, "--no-children", "--sort", "comm,dso,sym",
         "--stdio", "-g", "none"],
        capture_output=True, text=True, check=True).stdout
    totals = collections.Counter()
    other = collections.Counter()
    for line in out.splitlines():
        m = LINE.match(line)
        if not m:
            continue
        pct, comm, dso, sym = float(m.group(1)), m.group(2), m.group(3), m.group(4)
        for name, match in CATEGORIES:
            if match(comm, dso, sym):
                totals[name] += pct
                break
        else:
            totals["other"] += pct
            other[sym[:70]] += pct
    return totals, other


def main():
    for path in sys.argv[1:]:
        totals, other = categorize(path)
        print(f"== {path}")
        for name in [n for n, _ in CATEGORIES] + ["other"]:
            print(f"  {name:<60} {totals[name]:5.1f}%")
        print("  largest 'other':", ", ".join(f"{s} {p:.1f}%" for s, p in other.most_common(5)))


if __name__ == "__main__":
    main()
