//! Watch-guarantee checker (etcd's "API guarantees" for Watch): randomized
//! write histories on a server, watchers through a real gRPC client that
//! drop their streams and resume at random moments, and a checker of the
//! guarantees.
//!
//! `watchck.py` (python grpcio with the etcd stubs of the `etcd3` package)
//! drives the server and logs what the writer did and everything every
//! watch received (six watches on streams of their own, three sharing one
//! stream with client-chosen IDs; `watch_id -1` progress answers go to
//! every watch of the stream). This module:
//! * **models** the store from the writer log alone (puts, deletes, txns in
//!   op order, compactions), checking each answered revision against the
//!   model and the final key space against a final range read: that is the
//!   history the watchers must see, obtained independently of Watch;
//! * **checks** every watcher, per stream and across its reconnects:
//!   - *ordered*: revisions strictly increase across responses, and within a
//!     revision the events come in the txn's op order;
//!   - *unique*: no event twice (nothing below the next revision due);
//!   - *reliable*: no gap: the events equal the model's history for the
//!     watcher's range and filters from its start revision, prev_kv
//!     included; across reconnects from the first start to the final
//!     revision. A prev_kv may only be missing when its revision was
//!     compacted by then (etcd reads it at `mod_revision - 1` and leaves it
//!     out when that fails);
//!   - *atomic*: all events of a revision in one response (fragments of a
//!     `fragment` watch reassembled first; fragments to any other watch are
//!     an error);
//!   - *resumable*: a watch from an uncompacted revision delivers; one from
//!     a revision compacted before it was created gets no event and is
//!     canceled with a `compact_revision` that was compacted; a cancel is
//!     only allowed when the next revision due is compacted;
//!   - *bookmarkable*: a progress notification (the watch's own or a
//!     `watch_id -1` answer to a progress request) never reports a revision
//!     at or above an event the watch has not been sent yet.
//!
//! The unit tests at the end feed the checker crafted bad streams (a gap, a
//! duplicate, a split txn, a reordered txn, a bookmark ahead, a wrong
//! prev_kv, a missing compaction cancel, ...) and require it to fail.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::harness::{subject_kind, Server};

/// `[key, value, create_revision, mod_revision, version, lease]`; long
/// values are logged as their length and CRC.
type Kv = (String, String, i64, i64, i64, i64);

#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Write {
    /// One write request (a put and a delete are one-op txns): `ops` are
    /// `["put", key, value]` or `["del", key, range_end]`; `rev` is the
    /// header revision the server answered.
    Txn {
        rev: i64,
        ops: Vec<(String, String, String)>,
    },
    Compact {
        rev: i64,
    },
}

#[derive(Clone, Debug, Default, Deserialize)]
struct Resp {
    /// No compaction above this revision was in effect when the response
    /// arrived (the writer sets it before sending a Compact).
    compact_hi: i64,
    rev: i64,
    watch_id: i64,
    created: bool,
    canceled: bool,
    compact_revision: i64,
    cancel_reason: String,
    fragment: bool,
    /// `[type, kv, prev_kv]`, type 0 = PUT, 1 = DELETE.
    events: Vec<(i32, Kv, Option<Kv>)>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct Session {
    start: i64,
    /// The writer's last compaction before the create was sent.
    compacted_before: i64,
    responses: Vec<Resp>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct WatcherLog {
    key: String,
    end: String,
    prev_kv: bool,
    fragment: bool,
    filters: Vec<i32>,
    sessions: Vec<Session>,
    error: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
struct Probe {
    rev: i64,
    session: Session,
}

#[derive(Clone, Debug, Deserialize)]
struct Log {
    seed: u64,
    writes: Vec<Write>,
    final_rev: i64,
    final_kvs: Vec<Kv>,
    final_header_rev: i64,
    watchers: Vec<WatcherLog>,
    probe: Probe,
}

// ---------------------------------------------------------------------------
// The model: the history, from the writer log
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
struct Ev {
    kind: i32,
    kv: Kv,
    /// The key's previous version (none for a create).
    prev: Option<Kv>,
}

#[derive(Debug, Default)]
struct History {
    /// revision → its events, in order.
    revs: BTreeMap<i64, Vec<Ev>>,
    compactions: Vec<i64>,
    state: BTreeMap<String, Kv>,
    rev: i64,
}

/// `end` as etcd reads it: empty = the key alone, `\0` = from the key on.
fn in_range(key: &str, start: &str, end: &str) -> bool {
    match end {
        "" => key == start,
        "\0" => key >= start,
        _ => key >= start && key < end,
    }
}

impl History {
    /// Replays the writer log; each answered revision must be the model's.
    fn from_writes(writes: &[Write]) -> Result<History, String> {
        let mut h = History {
            rev: 1,
            ..Default::default()
        };
        for (i, w) in writes.iter().enumerate() {
            match w {
                Write::Compact { rev } => h.compactions.push(*rev),
                Write::Txn { rev, ops } => {
                    let next = h.rev + 1;
                    let mut evs = Vec::new();
                    for (op, key, arg) in ops {
                        match op.as_str() {
                            "put" => {
                                let prev = h.state.get(key).cloned();
                                let kv = (
                                    key.clone(),
                                    arg.clone(),
                                    prev.as_ref().map_or(next, |p| p.2),
                                    next,
                                    prev.as_ref().map_or(1, |p| p.4 + 1),
                                    0,
                                );
                                h.state.insert(key.clone(), kv.clone());
                                evs.push(Ev { kind: 0, kv, prev });
                            }
                            "del" => {
                                let gone: Vec<String> = h
                                    .state
                                    .keys()
                                    .filter(|k| in_range(k, key, arg))
                                    .cloned()
                                    .collect();
                                for k in gone {
                                    let prev = h.state.remove(&k);
                                    let kv = (k, String::new(), 0, next, 0, 0);
                                    evs.push(Ev { kind: 1, kv, prev });
                                }
                            }
                            other => return Err(format!("write {i}: unknown op {other:?}")),
                        }
                    }
                    if !evs.is_empty() {
                        h.rev = next;
                        h.revs.insert(next, evs);
                    }
                    if *rev != h.rev {
                        return Err(format!(
                            "write {i} {ops:?}: the server answered revision {rev}, \
                             the model is at {}",
                            h.rev
                        ));
                    }
                }
            }
        }
        Ok(h)
    }

    fn compacted(&self, rev: i64) -> bool {
        self.compactions.contains(&rev)
    }
}

// ---------------------------------------------------------------------------
// The checker
// ---------------------------------------------------------------------------

/// What the checks saw (the test requires each path to be exercised).
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    sessions: usize,
    events: usize,
    multi_event_revisions: usize,
    progress_checked: usize,
    compact_cancels: usize,
    fragmented: usize,
    prev_kv_compacted: usize,
}

impl Stats {
    fn add(&mut self, o: Stats) {
        self.sessions += o.sessions;
        self.events += o.events;
        self.multi_event_revisions += o.multi_event_revisions;
        self.progress_checked += o.progress_checked;
        self.compact_cancels += o.compact_cancels;
        self.fragmented += o.fragmented;
        self.prev_kv_compacted += o.prev_kv_compacted;
    }
}

struct Checker<'a> {
    h: &'a History,
    w: &'a WatcherLog,
}

impl Checker<'_> {
    /// The events of revision `rev` this watch must get (range, filters,
    /// prev_kv), if any.
    fn expected(&self, rev: i64) -> Option<Vec<Ev>> {
        let evs: Vec<Ev> = self
            .h
            .revs
            .get(&rev)?
            .iter()
            .filter(|e| in_range(&e.kv.0, &self.w.key, &self.w.end))
            .filter(|e| !self.w.filters.contains(&e.kind))
            .map(|e| {
                let create = e.kind == 0 && e.kv.2 == e.kv.3;
                Ev {
                    prev: if self.w.prev_kv && !create {
                        e.prev.clone()
                    } else {
                        None
                    },
                    ..e.clone()
                }
            })
            .collect();
        (!evs.is_empty()).then_some(evs)
    }

    /// The first revision at or after `from` with events for this watch.
    fn next_expected(&self, from: i64) -> Option<i64> {
        self.h
            .revs
            .range(from..)
            .map(|(r, _)| *r)
            .find(|r| self.expected(*r).is_some())
    }

    /// Checks one stream; returns the next revision due after it (what it
    /// delivered or bookmarked) and whether it ended in a compact cancel.
    fn session(
        &self,
        s: &Session,
        problems: &mut Vec<String>,
        st: &mut Stats,
    ) -> (i64, Option<i64>) {
        let mut p = |m: String| problems.push(format!("session from {}: {m}", s.start));
        let mut next = s.start;
        let mut bookmark_next = s.start;
        let mut id: Option<i64> = None;
        let mut pending: Vec<(i32, Kv, Option<Kv>)> = Vec::new();
        let mut cancel = None;
        st.sessions += 1;
        for (i, r) in s.responses.iter().enumerate() {
            if cancel.is_some() {
                p(format!("response {i} after the cancel: {r:?}"));
                break;
            }
            if i == 0 {
                if !r.created || r.canceled || r.watch_id < 0 || !r.events.is_empty() {
                    p(format!("first response is not a plain `created`: {r:?}"));
                    return (next, None);
                }
                id = Some(r.watch_id);
                continue;
            }
            if r.created {
                p(format!("a second `created`: {r:?}"));
                continue;
            }
            if r.watch_id != id.unwrap_or(-2) && !(r.watch_id == -1 && r.events.is_empty()) {
                p(format!(
                    "response for watch {} on a stream of watch {id:?}",
                    r.watch_id
                ));
            }
            if r.fragment {
                if !self.w.fragment {
                    p(format!(
                        "a fragment to a watch that did not ask for it: {r:?}"
                    ));
                }
                pending.extend(r.events.iter().cloned());
                continue;
            }
            let fragmented = !pending.is_empty();
            let mut events = std::mem::take(&mut pending);
            events.extend(r.events.iter().cloned());
            if r.canceled {
                if !events.is_empty() {
                    p(format!("a cancel with events: {r:?}"));
                }
                let c = r.compact_revision;
                if c == 0 {
                    p(format!(
                        "canceled without a compaction: {:?}",
                        r.cancel_reason
                    ));
                } else if !self.h.compacted(c) {
                    p(format!("compact_revision {c} was never compacted"));
                } else if next >= c {
                    p(format!(
                        "canceled for compaction {c}, but revision {next} is due"
                    ));
                } else if c < s.compacted_before {
                    p(format!(
                        "compact_revision {c} is older than compaction {}",
                        s.compacted_before
                    ));
                }
                st.compact_cancels += 1;
                cancel = Some(c);
                continue;
            }
            if r.compact_revision != 0 {
                p(format!("compact_revision without a cancel: {r:?}"));
            }
            if events.is_empty() {
                // A progress notification: nothing at or below its revision
                // may still be due.
                if let Some(due) = self.next_expected(next).filter(|d| *d <= r.rev) {
                    p(format!(
                        "progress notification at revision {} runs ahead of revision {due}, \
                         not delivered yet",
                        r.rev
                    ));
                }
                st.progress_checked += 1;
                bookmark_next = bookmark_next.max(r.rev + 1);
                continue;
            }
            if s.start < s.compacted_before {
                p(format!(
                    "events from start {} although revision {} was compacted before the \
                     watch was created",
                    s.start, s.compacted_before
                ));
            }
            if fragmented {
                st.fragmented += 1;
            }
            // Group by revision, in order of arrival.
            let mut groups: Vec<(i64, Vec<Ev>)> = Vec::new();
            for (kind, kv, prev) in events {
                let ev = Ev { kind, kv, prev };
                match groups.last_mut() {
                    Some((rev, g)) if *rev == ev.kv.3 => g.push(ev),
                    _ => groups.push((ev.kv.3, vec![ev])),
                }
            }
            for (rev, got) in groups {
                if rev > r.rev {
                    p(format!(
                        "event of revision {rev} in a response of revision {}",
                        r.rev
                    ));
                }
                if rev < next {
                    p(format!(
                        "revision {rev} again or out of order (next due: {next}): {got:?}"
                    ));
                    continue;
                }
                match self.next_expected(next) {
                    Some(due) if due < rev => p(format!(
                        "gap: revision {due} was never delivered, got {rev} next ({:?})",
                        self.expected(due)
                    )),
                    None => p(format!(
                        "revision {rev} has no events for this watch: {got:?}"
                    )),
                    _ => {}
                }
                let mut want = self.expected(rev).unwrap_or_default();
                // etcd: no prev_kv when `rev - 1` is compacted.
                if rev - 1 < r.compact_hi {
                    for (w, g) in want.iter_mut().zip(&got) {
                        if g.prev.is_none() && w.prev.is_some() {
                            w.prev = None;
                            st.prev_kv_compacted += 1;
                        }
                    }
                }
                if got != want {
                    if got.len() < want.len() && want.starts_with(&got) {
                        p(format!(
                            "revision {rev} not atomic: {} of its {} events in one response",
                            got.len(),
                            want.len()
                        ));
                    } else {
                        p(format!(
                            "revision {rev}: got {got:?}\n  want (op order) {want:?}"
                        ));
                    }
                }
                if want.len() > 1 {
                    st.multi_event_revisions += 1;
                }
                st.events += got.len();
                next = rev + 1;
            }
        }
        if !pending.is_empty() {
            // A stream dropped mid-fragments: the client discards them.
            pending.clear();
        }
        (next.max(bookmark_next), cancel)
    }

    /// Checks every session of the watch and the chain of reconnects.
    fn check(&self, final_rev: i64) -> (Vec<String>, Stats) {
        let mut problems = Vec::new();
        let mut st = Stats::default();
        if let Some(e) = &self.w.error {
            problems.push(format!("driver error: {e}"));
        }
        let mut due: Option<i64> = None;
        for s in &self.w.sessions {
            if let Some(d) = due {
                // A resume must not skip anything the watch has not got.
                if s.start > d {
                    problems.push(format!(
                        "resumed from {} although revision {d} was the next due",
                        s.start
                    ));
                }
            }
            let (next, cancel) = self.session(s, &mut problems, &mut st);
            let d = due.unwrap_or(s.start).max(next);
            // After a compaction cancel, history restarts at its revision.
            due = Some(cancel.map_or(d, |c| d.max(c)));
        }
        match due {
            Some(d) if d > final_rev => {}
            other => problems.push(format!(
                "the watch never got to the final revision {final_rev} (next due: {other:?})"
            )),
        }
        (problems, st)
    }
}

/// Checks a whole run; `Err` lists every violation.
fn check_log(log: &Log) -> Result<Stats, String> {
    let mut problems = Vec::new();
    let h = match History::from_writes(&log.writes) {
        Ok(h) => h,
        Err(e) => return Err(format!("writer log: {e}")),
    };
    if h.rev != log.final_rev || log.final_header_rev != log.final_rev {
        problems.push(format!(
            "final revision: model {}, writer {}, range header {}",
            h.rev, log.final_rev, log.final_header_rev
        ));
    }
    let got: BTreeMap<String, Kv> = log
        .final_kvs
        .iter()
        .map(|kv| (kv.0.clone(), kv.clone()))
        .collect();
    if got != h.state {
        problems.push(format!(
            "final key space differs from the model:\n  read  {got:?}\n  model {:?}",
            h.state
        ));
    }
    let mut stats = Stats::default();
    for (i, w) in log.watchers.iter().enumerate() {
        let (p, st) = Checker { h: &h, w }.check(log.final_rev);
        stats.add(st);
        problems.extend(p.into_iter().map(|m| {
            format!(
                "watcher {i} [{:?}, {:?}) filters {:?}: {m}",
                w.key, w.end, w.filters
            )
        }));
    }
    // The probe: a watch from revision 1 after compacting at `probe.rev`.
    let pr = &log.probe.session.responses;
    let ok = pr.len() == 2
        && pr[0].created
        && !pr[0].canceled
        && pr[1].canceled
        && pr[1].compact_revision == log.probe.rev
        && pr[1].events.is_empty();
    stats.compact_cancels += usize::from(ok);
    if !ok {
        problems.push(format!(
            "a watch from revision 1 after compacting at {} was not canceled with \
             compact_revision {}: {pr:?}",
            log.probe.rev, log.probe.rev
        ));
    }
    if problems.is_empty() {
        Ok(stats)
    } else {
        Err(problems.join("\n"))
    }
}

// ---------------------------------------------------------------------------
// The randomized run
// ---------------------------------------------------------------------------

fn run_driver(server: &Server, seed: u64, secs: f64, tombstone_compactions: bool) -> Log {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/watchck.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .arg(server.endpoint())
        .arg(seed.to_string())
        .arg(secs.to_string());
    if !tombstone_compactions {
        cmd.arg("no-tombstone-compactions");
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .expect("run python3 watchck.py");
    assert!(
        out.status.success(),
        "watchck.py failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "watchck.py printed no log ({e}):\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// One randomized run against the subject, then the checks.
/// `FERROCD_WATCHCK_SEED` replays a seed (the writer's and each watcher's
/// choices; thread timing still varies); `FERROCD_WATCHCK_SECS` runs longer
/// than the default 15 s of writes.
fn watchck(tombstone_compactions: bool) {
    let seed = std::env::var("FERROCD_WATCHCK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_secs())
        });
    let secs: f64 = std::env::var("FERROCD_WATCHCK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15.0);
    // Small requests so that one revision of large deletes with prev_kv
    // exceeds the fragment size (max request + 512 KiB).
    let server = Server::start(
        subject_kind(),
        &[
            "--experimental-watch-progress-notify-interval=200ms",
            "--max-request-bytes=65536",
        ],
    );
    let log = run_driver(&server, seed, secs, tombstone_compactions);
    let stats = check_log(&log).unwrap_or_else(|e| {
        panic!(
            "{}: watch guarantees violated (seed {seed}; FERROCD_WATCHCK_SEED={seed} replays \
             the choices):\n{e}",
            server.kind.label()
        )
    });
    eprintln!(
        "[it] watchck seed {} on {}: {} revisions, {stats:?}",
        log.seed,
        server.kind.label(),
        log.final_rev
    );
    // Every guarantee was actually exercised.
    assert!(stats.sessions >= 3 * log.watchers.len(), "{stats:?}");
    assert!(stats.events > 100, "{stats:?}");
    assert!(stats.multi_event_revisions > 10, "{stats:?}");
    assert!(stats.progress_checked > 10, "{stats:?}");
    // The probe's, and at least one of a resume behind a compaction.
    assert!(stats.compact_cancels >= 2, "{stats:?}");
    assert!(stats.fragmented >= 1, "{stats:?}");
}

/// Compactions only at revisions without a delete: see
/// `watch_guarantees_with_compactions_at_deleting_revisions`.
#[test]
fn watch_guarantees_hold_over_random_histories_with_reconnects_and_compactions() {
    watchck(false);
}

/// Compactions at any revision, also at ones that deleted keys. ferrocd
/// keeps the tombstone at the compaction revision until a later compaction
/// passes it, as etcd >= 3.5.15 does (etcd#18274), so a watch from the
/// compaction revision (where a client resumes after a compact cancel) gets
/// that revision's deletes too (`engine::mvcc::key_index::KeyIndex::compact`).
/// Fails on real etcd 3.5.1 (`FERROCD_IT_SUBJECT=etcd`), which drops the
/// tombstone: the revision arrives without its delete events, a gap
/// (etcd#18089).
#[test]
fn watch_guarantees_with_compactions_at_deleting_revisions() {
    watchck(true);
}

// ---------------------------------------------------------------------------
// The checker fails on bad streams
// ---------------------------------------------------------------------------

#[cfg(test)]
mod checker_tests {
    use super::*;

    fn txn(rev: i64, ops: &[(&str, &str, &str)]) -> Write {
        Write::Txn {
            rev,
            ops: ops
                .iter()
                .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
                .collect(),
        }
    }

    /// rev 2: put a; 3: txn put b, put c, del a; 4: put x (outside);
    /// 5: put b; compaction at 3; 6: put a.
    fn writes() -> Vec<Write> {
        vec![
            txn(2, &[("put", "a", "1")]),
            txn(3, &[("put", "b", "1"), ("put", "c", "1"), ("del", "a", "")]),
            txn(4, &[("put", "x", "1")]),
            // deleting nothing makes no revision
            txn(4, &[("del", "zz", "")]),
            txn(5, &[("put", "b", "2")]),
            Write::Compact { rev: 3 },
            txn(6, &[("put", "a", "2")]),
        ]
    }

    fn kv(k: &str, v: &str, c: i64, m: i64, ver: i64) -> Kv {
        (k.into(), v.into(), c, m, ver, 0)
    }
    fn put(k: &str, v: &str, c: i64, m: i64, ver: i64) -> (i32, Kv, Option<Kv>) {
        (0, kv(k, v, c, m, ver), None)
    }
    fn del(k: &str, m: i64) -> (i32, Kv, Option<Kv>) {
        (1, kv(k, "", 0, m, 0), None)
    }
    fn created() -> Resp {
        Resp {
            rev: 1,
            watch_id: 0,
            created: true,
            ..Default::default()
        }
    }
    fn events(rev: i64, evs: Vec<(i32, Kv, Option<Kv>)>) -> Resp {
        Resp {
            rev,
            events: evs,
            ..Default::default()
        }
    }
    fn progress(rev: i64) -> Resp {
        Resp {
            rev,
            watch_id: -1,
            ..Default::default()
        }
    }

    /// The correct stream of a prefix watch on everything below "w".
    fn good() -> Vec<Resp> {
        vec![
            created(),
            events(2, vec![put("a", "1", 2, 2, 1)]),
            events(
                3,
                vec![put("b", "1", 3, 3, 1), put("c", "1", 3, 3, 1), del("a", 3)],
            ),
            progress(4),
            events(5, vec![put("b", "2", 3, 5, 2)]),
            events(6, vec![put("a", "2", 6, 6, 1)]),
        ]
    }

    fn watcher(sessions: Vec<Session>) -> WatcherLog {
        WatcherLog {
            key: "a".into(),
            end: "w".into(),
            sessions,
            ..Default::default()
        }
    }

    fn session(start: i64, responses: Vec<Resp>) -> Session {
        Session {
            start,
            responses,
            ..Default::default()
        }
    }

    fn check(w: &WatcherLog) -> Vec<String> {
        let h = History::from_writes(&writes()).expect("model");
        Checker { h: &h, w }.check(6).0
    }

    fn assert_fails(w: WatcherLog, needle: &str) {
        let p = check(&w);
        assert!(
            p.iter().any(|m| m.contains(needle)),
            "expected a problem containing {needle:?}, got {p:?}"
        );
    }

    #[test]
    fn a_correct_stream_passes() {
        assert_eq!(
            check(&watcher(vec![session(2, good())])),
            Vec::<String>::new()
        );
        // Split in two streams, resumed from the bookmark after a progress
        // notification and from the last event.
        let g = good();
        let first = vec![g[0].clone(), g[1].clone(), g[2].clone(), g[3].clone()];
        let second = vec![created(), g[4].clone(), g[5].clone()];
        assert_eq!(
            check(&watcher(vec![session(2, first), session(5, second)])),
            Vec::<String>::new()
        );
    }

    #[test]
    fn events_of_another_watch_on_the_stream_fail() {
        let mut g = good();
        g[4].watch_id = 7;
        assert_fails(watcher(vec![session(2, g)]), "response for watch 7");
    }

    #[test]
    fn a_gap_fails() {
        let mut g = good();
        g.remove(1);
        assert_fails(watcher(vec![session(2, g)]), "gap: revision 2");
    }

    #[test]
    fn a_duplicate_fails() {
        let mut g = good();
        let again = g[4].clone();
        g.insert(5, again);
        assert_fails(watcher(vec![session(2, g)]), "revision 5 again");
    }

    #[test]
    fn revisions_out_of_order_fail() {
        let mut g = good();
        g.swap(4, 5);
        let p = check(&watcher(vec![session(2, g)]));
        assert!(!p.is_empty(), "{p:?}");
    }

    #[test]
    fn a_txn_split_over_two_responses_fails() {
        let mut g = good();
        g[2] = events(3, vec![put("b", "1", 3, 3, 1)]);
        g.insert(3, events(3, vec![put("c", "1", 3, 3, 1), del("a", 3)]));
        assert_fails(watcher(vec![session(2, g)]), "not atomic");
    }

    #[test]
    fn a_txn_in_another_order_fails() {
        let mut g = good();
        g[2] = events(
            3,
            vec![put("c", "1", 3, 3, 1), put("b", "1", 3, 3, 1), del("a", 3)],
        );
        assert_fails(watcher(vec![session(2, g)]), "want (op order)");
    }

    #[test]
    fn a_bookmark_ahead_of_undelivered_events_fails() {
        let mut g = good();
        g.insert(2, progress(3));
        assert_fails(
            watcher(vec![session(2, g)]),
            "progress notification at revision 3 runs ahead of revision 3",
        );
    }

    #[test]
    fn resuming_after_a_bookmark_that_ran_ahead_is_caught_as_a_gap() {
        let g = good();
        // The server claimed 5 before sending 5: the client resumes at 6.
        let first = vec![g[0].clone(), g[1].clone(), g[2].clone(), progress(5)];
        let second = vec![created(), g[5].clone()];
        let p = check(&watcher(vec![session(2, first), session(6, second)]));
        assert!(p.iter().any(|m| m.contains("runs ahead")), "{p:?}");
    }

    #[test]
    fn a_wrong_event_or_prev_kv_fails() {
        let mut g = good();
        g[4] = events(5, vec![put("b", "2", 5, 5, 1)]);
        assert_fails(watcher(vec![session(2, g)]), "revision 5: got");
        // prev_kv asked: a missing one fails.
        let mut w = watcher(vec![session(2, good())]);
        w.prev_kv = true;
        assert_fails(w, "revision 3: got");
    }

    #[test]
    fn a_missing_prev_kv_is_allowed_only_below_the_compaction() {
        let mut g = good();
        let up = |mut r: Resp, hi| {
            r.compact_hi = hi;
            r
        };
        // rev 5 (put b, prev at 3): given, then left out while 4 is compacted.
        g[1].events[0].2 = None;
        g[2].events[2].2 = Some(kv("a", "1", 2, 2, 1));
        g[4] = up(events(5, vec![put("b", "2", 3, 5, 2)]), 5);
        let mut w = watcher(vec![session(2, g.clone())]);
        w.prev_kv = true;
        assert_eq!(check(&w), Vec::<String>::new());
        // Not compacted that far: a missing prev_kv fails.
        g[4].compact_hi = 4;
        let mut w = watcher(vec![session(2, g)]);
        w.prev_kv = true;
        assert_fails(w, "revision 5: got");
    }

    #[test]
    fn events_outside_the_range_or_filter_fail() {
        let mut w = watcher(vec![session(2, good())]);
        w.end = "b".into();
        assert!(!check(&w).is_empty());
        let mut w = watcher(vec![session(2, good())]);
        w.filters = vec![1];
        assert!(!check(&w).is_empty());
    }

    #[test]
    fn a_resume_that_skips_revisions_fails() {
        let g = good();
        let first = vec![g[0].clone(), g[1].clone()];
        let second = vec![created(), g[4].clone(), g[5].clone()];
        assert_fails(
            watcher(vec![session(2, first), session(5, second)]),
            "resumed from 5 although revision 3",
        );
    }

    #[test]
    fn a_stream_that_never_reaches_the_end_fails() {
        let mut g = good();
        g.truncate(5);
        assert_fails(
            watcher(vec![session(2, g)]),
            "never got to the final revision",
        );
    }

    #[test]
    fn compaction_cancels_are_checked() {
        let cancel = |c| Resp {
            canceled: true,
            compact_revision: c,
            ..Default::default()
        };
        // Start 2 after compaction 3: canceled with 3, resumed from 3: fine.
        let mut s = session(2, vec![created(), cancel(3)]);
        s.compacted_before = 3;
        let g = good();
        let resumed = session(3, vec![created(), g[2].clone(), g[4].clone(), g[5].clone()]);
        assert_eq!(
            check(&watcher(vec![s.clone(), resumed.clone()])),
            Vec::<String>::new()
        );
        // Events from a revision compacted before the create.
        let mut bad = session(2, good());
        bad.compacted_before = 3;
        assert_fails(watcher(vec![bad]), "compacted before the watch was created");
        // A cancel when nothing due was compacted.
        let s2 = session(3, vec![created(), cancel(3)]);
        assert_fails(watcher(vec![s2, resumed.clone()]), "revision 3 is due");
        // A compact revision never compacted.
        let s3 = session(2, vec![created(), cancel(4)]);
        assert_fails(watcher(vec![s3, resumed.clone()]), "never compacted");
        // A cancel without a compaction.
        let s4 = session(2, vec![created(), cancel(0)]);
        assert_fails(watcher(vec![s4, resumed]), "canceled without a compaction");
    }

    #[test]
    fn fragments_are_reassembled_and_only_for_fragment_watches() {
        let mut g = good();
        g[2] = Resp {
            fragment: true,
            ..events(3, vec![put("b", "1", 3, 3, 1)])
        };
        g.insert(3, events(3, vec![put("c", "1", 3, 3, 1), del("a", 3)]));
        let mut w = watcher(vec![session(2, g.clone())]);
        w.fragment = true;
        assert_eq!(check(&w), Vec::<String>::new());
        assert_fails(watcher(vec![session(2, g)]), "did not ask for it");
    }

    #[test]
    fn a_writer_log_that_disagrees_with_the_model_fails() {
        let mut w = writes();
        w[3] = txn(5, &[("del", "zz", "")]);
        assert!(History::from_writes(&w).is_err());
    }
}
