//! Model-based property test: random sequences of put / delete / txn /
//! compact / range run against both the [`Store`] and a deliberately naive
//! model that keeps a full snapshot of the key space per revision. Every
//! response (or error) must match, and after every step every readable
//! revision must read back exactly the model's snapshot, along with the
//! history replayed by `events_since`.
//!
//! A second property runs the same histories on a store backed by a B-tree
//! file, with checkpoints taken, committed (evicting what they wrote from
//! memory), lost, and restarts from the file at random points; the same
//! checks hold, plus `hash_kv` against a hash computed from the model.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::revision::Revision;
use super::revision_store::Record;
use super::*;

type Snapshot = BTreeMap<Vec<u8>, KeyValue>;

const KEYS: &[&[u8]] = &[b"a", b"b", b"ba", b"c", b"d"];
const ENDS: &[&[u8]] = &[b"", b"", b"\0", b"\0", b"a", b"b", b"bb", b"c", b"e"];
const VALUES: &[&[u8]] = &[b"", b"x", b"y", b"zz"];

fn in_range(key: &[u8], end: &[u8], k: &[u8]) -> bool {
    if end.is_empty() {
        k == key
    } else if end == [0] {
        k >= key
    } else {
        k >= key && k < end
    }
}

/// One change inside a model write, in application order.
#[derive(Clone, Debug)]
struct Change {
    kind: EventKind,
    kv: KeyValue,
}

struct Model {
    /// `snaps[r]` is the key space at revision `r`; `snaps[0]` is unused.
    snaps: Vec<Snapshot>,
    /// etcd's raw compaction revision: -1 until the first compaction.
    compacted: i64,
    /// Changes per main revision.
    history: BTreeMap<i64, Vec<Change>>,
}

/// A write in progress: a working copy of the key space.
struct Work {
    cur: i64,
    snap: Snapshot,
    changes: Vec<Change>,
}

impl Work {
    fn header(&self) -> i64 {
        if self.changes.is_empty() {
            self.cur
        } else {
            self.cur + 1
        }
    }
}

impl Model {
    fn new() -> Model {
        Model {
            snaps: vec![Snapshot::new(), Snapshot::new()],
            compacted: -1,
            history: BTreeMap::new(),
        }
    }

    fn cur(&self) -> i64 {
        self.snaps.len() as i64 - 1
    }

    fn snap(&self, rev: i64) -> &Snapshot {
        &self.snaps[rev as usize]
    }

    fn work(&self) -> Work {
        Work {
            cur: self.cur(),
            snap: self.snap(self.cur()).clone(),
            changes: Vec::new(),
        }
    }

    fn commit(&mut self, w: Work) {
        if !w.changes.is_empty() {
            self.history.insert(w.cur + 1, w.changes);
            self.snaps.push(w.snap);
        }
    }

    fn range_in(&self, w: &Work, req: &RangeRequest) -> Result<RangeResponse, Error> {
        let header = w.header();
        if req.revision > header {
            return Err(Error::FutureRevision);
        }
        let snap = if req.revision <= 0 || req.revision == header {
            &w.snap
        } else {
            if req.revision < self.compacted {
                return Err(Error::Compacted);
            }
            self.snap(req.revision)
        };
        let mut kvs: Vec<KeyValue> = snap
            .values()
            .filter(|kv| in_range(&req.key, &req.range_end, &kv.key))
            .cloned()
            .collect();
        let count = kvs.len() as i64;
        if req.count_only {
            kvs.clear();
        }
        // etcd's quirk: without a sort order or filters only the first
        // `limit + 1` keys (in key order) are fetched, even when a sort
        // target is given.
        let unfiltered = req.min_mod_revision == 0
            && req.max_mod_revision == 0
            && req.min_create_revision == 0
            && req.max_create_revision == 0;
        if req.sort_order == SortOrder::None && unfiltered && req.limit > 0 {
            kvs.truncate(req.limit as usize + 1);
        }
        kvs.retain(|kv| {
            (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
                && (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
                && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
                && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
        });
        let field = |kv: &KeyValue| -> (i64, Vec<u8>) {
            match req.sort_target {
                SortTarget::Key => (0, kv.key.clone()),
                SortTarget::Version => (kv.version, Vec::new()),
                SortTarget::Create => (kv.create_revision, Vec::new()),
                SortTarget::Mod => (kv.mod_revision, Vec::new()),
                SortTarget::Value => (0, kv.value.clone()),
            }
        };
        match req.sort_order {
            SortOrder::Descend => kvs.sort_by_key(|kv| std::cmp::Reverse(field(kv))),
            _ => kvs.sort_by_key(field),
        }
        let mut more = false;
        if req.limit > 0 && kvs.len() as i64 > req.limit {
            kvs.truncate(req.limit as usize);
            more = true;
        }
        if req.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value.clear());
        }
        Ok(RangeResponse {
            kvs,
            more,
            count,
            revision: header,
        })
    }

    fn put_in(&self, w: &mut Work, req: &PutRequest) -> Result<PutResponse, Error> {
        let prev = w.snap.get(&req.key).cloned();
        if (req.ignore_value || req.ignore_lease) && prev.is_none() {
            return Err(Error::KeyNotFound);
        }
        let new_rev = w.cur + 1;
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision: prev.as_ref().map_or(new_rev, |p| p.create_revision),
            mod_revision: new_rev,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value: match (&prev, req.ignore_value) {
                (Some(p), true) => p.value.clone(),
                _ => req.value.clone(),
            },
            lease: match (&prev, req.ignore_lease) {
                (Some(p), true) => p.lease,
                _ => req.lease,
            },
        };
        w.snap.insert(req.key.clone(), kv.clone());
        w.changes.push(Change {
            kind: EventKind::Put,
            kv,
        });
        Ok(PutResponse {
            prev_kv: if req.prev_kv { prev } else { None },
            revision: new_rev,
        })
    }

    fn delete_in(&self, w: &mut Work, req: &DeleteRangeRequest) -> DeleteRangeResponse {
        let doomed: Vec<KeyValue> = w
            .snap
            .values()
            .filter(|kv| in_range(&req.key, &req.range_end, &kv.key))
            .cloned()
            .collect();
        for kv in &doomed {
            w.snap.remove(&kv.key);
            w.changes.push(Change {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: kv.key.clone(),
                    mod_revision: w.cur + 1,
                    ..KeyValue::default()
                },
            });
        }
        DeleteRangeResponse {
            deleted: doomed.len() as i64,
            prev_kvs: if req.prev_kv { doomed } else { Vec::new() },
            revision: w.header(),
        }
    }

    fn compare(&self, c: &Compare) -> bool {
        let kvs: Vec<&KeyValue> = self
            .snap(self.cur())
            .values()
            .filter(|kv| in_range(&c.key, &c.range_end, &kv.key))
            .collect();
        let zero = KeyValue::default();
        let kvs = if kvs.is_empty() {
            if matches!(c.target, CompareTarget::Value(_)) {
                return false;
            }
            vec![&zero]
        } else {
            kvs
        };
        kvs.iter().all(|kv| {
            let ord = match &c.target {
                CompareTarget::Version(v) => kv.version.cmp(v),
                CompareTarget::Create(v) => kv.create_revision.cmp(v),
                CompareTarget::Mod(v) => kv.mod_revision.cmp(v),
                CompareTarget::Value(v) => kv.value.cmp(v),
                CompareTarget::Lease(v) => kv.lease.cmp(v),
            };
            match c.result {
                CompareResult::Equal => ord == std::cmp::Ordering::Equal,
                CompareResult::NotEqual => ord != std::cmp::Ordering::Equal,
                CompareResult::Greater => ord == std::cmp::Ordering::Greater,
                CompareResult::Less => ord == std::cmp::Ordering::Less,
            }
        })
    }

    fn branch<'r>(&self, req: &'r TxnRequest) -> (bool, &'r [RequestOp]) {
        if req.compare.iter().all(|c| self.compare(c)) {
            (true, &req.success)
        } else {
            (false, &req.failure)
        }
    }

    fn check_puts(&self, req: &TxnRequest) -> Result<(), Error> {
        for op in self.branch(req).1 {
            match op {
                RequestOp::Put(p)
                    if (p.ignore_value || p.ignore_lease)
                        && !self.snap(self.cur()).contains_key(&p.key) =>
                {
                    return Err(Error::KeyNotFound);
                }
                RequestOp::Txn(t) => self.check_puts(t)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn check_ranges(&self, req: &TxnRequest) -> Result<(), Error> {
        for op in self.branch(req).1 {
            match op {
                RequestOp::Range(r) if r.revision != 0 => {
                    if r.revision > self.cur() {
                        return Err(Error::FutureRevision);
                    }
                    if r.revision < self.compacted {
                        return Err(Error::Compacted);
                    }
                }
                RequestOp::Txn(t) => self.check_ranges(t)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn apply_in(&self, w: &mut Work, req: &TxnRequest) -> Result<TxnResponse, Error> {
        let (succeeded, ops) = self.branch(req);
        let mut responses = Vec::new();
        for op in ops {
            responses.push(match op {
                RequestOp::Range(r) => ResponseOp::Range(self.range_in(w, r)?),
                RequestOp::Put(p) => ResponseOp::Put(self.put_in(w, p)?),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.delete_in(w, d)),
                RequestOp::Txn(t) => ResponseOp::Txn(self.apply_in(w, t)?),
            });
        }
        Ok(TxnResponse {
            succeeded,
            responses,
            revision: 0,
        })
    }

    fn range(&self, req: &RangeRequest) -> Result<RangeResponse, Error> {
        self.range_in(&self.work(), req)
    }

    fn put(&mut self, req: &PutRequest) -> Result<PutResponse, Error> {
        let mut w = self.work();
        let resp = self.put_in(&mut w, req)?;
        self.commit(w);
        Ok(resp)
    }

    fn delete_range(&mut self, req: &DeleteRangeRequest) -> DeleteRangeResponse {
        let mut w = self.work();
        let resp = self.delete_in(&mut w, req);
        self.commit(w);
        resp
    }

    fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse, Error> {
        self.check_puts(req)?;
        self.check_ranges(req)?;
        let mut w = self.work();
        let mut resp = self.apply_in(&mut w, req)?;
        resp.revision = w.header();
        self.commit(w);
        Ok(resp)
    }

    fn compact(&mut self, rev: i64) -> Result<CompactResponse, Error> {
        if rev <= self.compacted {
            return Err(Error::Compacted);
        }
        if rev > self.cur() {
            return Err(Error::FutureRevision);
        }
        self.compacted = rev;
        Ok(CompactResponse {
            revision: self.cur(),
        })
    }

    /// etcd's HashKV at `rev` computed from the history: every change at a
    /// main revision `<= rev` that compaction kept (everything after the
    /// compaction revision; at or before it, per key only the newest
    /// change, if it is a put), hashed as stored in the B-tree.
    fn hash(&self, rev: i64) -> u32 {
        let c = self.compacted;
        let mut newest: BTreeMap<&[u8], (i64, usize)> = BTreeMap::new();
        for (main, changes) in self.history.range(..=c) {
            for (sub, ch) in changes.iter().enumerate() {
                newest.insert(&ch.kv.key, (*main, sub));
            }
        }
        let mut h = crc32fast::Hasher::new();
        let mut buf = Vec::new();
        for (main, changes) in self.history.range(..=rev) {
            for (sub, ch) in changes.iter().enumerate() {
                let kept = *main > c
                    || (ch.kind == EventKind::Put
                        && newest.get(ch.kv.key.as_slice()) == Some(&(*main, sub)));
                if !kept {
                    continue;
                }
                let record = match ch.kind {
                    EventKind::Put => Record::Put(ch.kv.clone()),
                    EventKind::Delete => Record::Tombstone {
                        key: ch.kv.key.clone(),
                    },
                };
                h.update(&backend::rev_key(Revision::new(*main, sub as i64)));
                backend::encode_record(&record, &mut buf);
                h.update(&buf);
            }
        }
        h.finalize()
    }

    /// History from `rev` on; only meaningful for `rev` above the
    /// compaction revision.
    fn events_since(&self, rev: i64) -> Vec<Event> {
        self.history
            .range(rev..)
            .flat_map(|(main, changes)| {
                changes.iter().map(move |c| Event {
                    kind: c.kind,
                    kv: c.kv.clone(),
                    prev_kv: self.snap(main - 1).get(&c.kv.key).cloned(),
                })
            })
            .collect()
    }

    /// History from the compaction revision `c` on, as compaction leaves it
    /// (etcd >= 3.5.15): every change at `c` stays except one that a later
    /// change at `c` to the same key supersedes within its generation (a
    /// tombstone ends its generation, so it always stays); events at `c`
    /// have no `prev_kv` (it is compacted).
    fn events_from_compaction(&self) -> Vec<Event> {
        let c = self.compacted;
        let mut events = self.events_since(c);
        let at_c = events.iter().take_while(|e| e.kv.mod_revision == c).count();
        let mut keep = vec![true; at_c];
        for i in 0..at_c {
            let superseded = events[i + 1..at_c]
                .iter()
                .any(|later| later.kv.key == events[i].kv.key);
            keep[i] = events[i].kind == EventKind::Delete || !superseded;
        }
        let mut i = 0;
        events.retain(|_| {
            i += 1;
            i > at_c || keep[i - 1]
        });
        for e in events.iter_mut().take_while(|e| e.kv.mod_revision == c) {
            e.prev_kv = None;
        }
        events
    }
}

/// A generated step. Range revisions are generated as selectors and mapped
/// onto the revisions that exist when the step runs (see `resolve`).
#[derive(Clone, Debug)]
enum Step {
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Range(RangeRequest),
    Txn(TxnRequest),
    Compact(u32),
    /// Take a checkpoint (it is then in flight).
    Take,
    /// Commit the oldest checkpoint in flight and install its snapshot.
    Commit,
    /// Lose the oldest checkpoint in flight (its commit never happens).
    Lose,
    /// Checkpoint everything and rebuild the store from the file.
    Restart,
}

/// Maps a selector onto `-1 ..= cur + 1` (a quarter of them onto 0, the
/// current revision), so reads hit past, present, future and compacted
/// revisions alike.
fn resolve(sel: i64, cur: i64) -> i64 {
    if sel % 4 == 0 {
        0
    } else {
        sel % (cur + 3) - 1
    }
}

fn resolve_ops(ops: &mut [RequestOp], cur: i64) {
    for op in ops {
        match op {
            RequestOp::Range(r) => r.revision = resolve(r.revision, cur),
            RequestOp::Txn(t) => {
                resolve_ops(&mut t.success, cur);
                resolve_ops(&mut t.failure, cur);
            }
            _ => {}
        }
    }
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(KEYS).prop_map(|k| k.to_vec())
}

fn end() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(ENDS).prop_map(|e| e.to_vec())
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(VALUES).prop_map(|v| v.to_vec())
}

fn small_filter() -> impl Strategy<Value = i64> {
    prop_oneof![10 => Just(0i64), 1 => 1i64..12]
}

fn put_req() -> impl Strategy<Value = PutRequest> {
    (
        key(),
        value(),
        0i64..3,
        any::<bool>(),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.15),
    )
        .prop_map(
            |(key, value, lease, prev_kv, ignore_value, ignore_lease)| PutRequest {
                key,
                value,
                lease,
                prev_kv,
                ignore_value,
                ignore_lease,
            },
        )
}

fn delete_req() -> impl Strategy<Value = DeleteRangeRequest> {
    (key(), end(), any::<bool>()).prop_map(|(key, range_end, prev_kv)| DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

fn range_req() -> impl Strategy<Value = RangeRequest> {
    (
        (key(), end(), -1i64..4, 0i64..1000),
        (
            0i32..3,
            0i32..5,
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.2),
        ),
        (
            small_filter(),
            small_filter(),
            small_filter(),
            small_filter(),
        ),
    )
        .prop_map(
            |((key, range_end, limit, revision), (order, target, keys_only, count_only), f)| {
                RangeRequest {
                    key,
                    range_end,
                    limit,
                    revision,
                    sort_order: SortOrder::try_from(order).unwrap_or_default(),
                    sort_target: SortTarget::try_from(target).unwrap_or_default(),
                    keys_only,
                    count_only,
                    min_mod_revision: f.0,
                    max_mod_revision: f.1,
                    min_create_revision: f.2,
                    max_create_revision: f.3,
                }
            },
        )
}

fn compare() -> impl Strategy<Value = Compare> {
    let target = prop_oneof![
        (0i64..3).prop_map(CompareTarget::Version),
        (0i64..10).prop_map(CompareTarget::Create),
        (0i64..10).prop_map(CompareTarget::Mod),
        value().prop_map(CompareTarget::Value),
        (0i64..3).prop_map(CompareTarget::Lease),
    ];
    let cmp_end = prop_oneof![3 => Just(Vec::new()), 1 => end()];
    (key(), cmp_end, 0i32..4, target).prop_map(|(key, range_end, result, target)| Compare {
        result: CompareResult::try_from(result).unwrap_or_default(),
        target,
        key,
        range_end,
    })
}

fn request_op() -> impl Strategy<Value = RequestOp> {
    let leaf = prop_oneof![
        3 => put_req().prop_map(RequestOp::Put),
        2 => delete_req().prop_map(RequestOp::DeleteRange),
        2 => range_req().prop_map(RequestOp::Range),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        (
            prop::collection::vec(compare(), 0..3),
            prop::collection::vec(inner.clone(), 0..4),
            prop::collection::vec(inner, 0..3),
        )
            .prop_map(|(compare, success, failure)| {
                RequestOp::Txn(TxnRequest {
                    compare,
                    success,
                    failure,
                })
            })
    })
}

fn txn_req() -> impl Strategy<Value = TxnRequest> {
    (
        prop::collection::vec(compare(), 0..3),
        prop::collection::vec(request_op(), 0..5),
        prop::collection::vec(request_op(), 0..4),
    )
        .prop_map(|(compare, success, failure)| TxnRequest {
            compare,
            success,
            failure,
        })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => put_req().prop_map(Step::Put),
        2 => delete_req().prop_map(Step::Delete),
        3 => range_req().prop_map(Step::Range),
        3 => txn_req().prop_map(Step::Txn),
        1 => any::<u32>().prop_map(Step::Compact),
    ]
}

fn run_step(store: &mut Store, model: &mut Model, step: &Step) -> Result<(), TestCaseError> {
    let cur = model.cur();
    match step.clone() {
        Step::Put(req) => prop_assert_eq!(store.put(&req), model.put(&req)),
        Step::Delete(req) => {
            prop_assert_eq!(store.delete_range(&req), Ok(model.delete_range(&req)))
        }
        Step::Range(mut req) => {
            req.revision = resolve(req.revision, cur);
            prop_assert_eq!(store.range(&req), model.range(&req));
        }
        Step::Txn(mut req) => {
            resolve_ops(&mut req.success, cur);
            resolve_ops(&mut req.failure, cur);
            prop_assert_eq!(store.txn(&req), model.txn(&req));
        }
        Step::Compact(sel) => {
            let rev = i64::from(sel) % (cur + 3) - 1;
            prop_assert_eq!(store.compact(rev), model.compact(rev));
        }
        Step::Take | Step::Commit | Step::Lose | Step::Restart => {}
    }
    Ok(())
}

fn backed_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        10 => step(),
        2 => Just(Step::Take),
        2 => Just(Step::Commit),
        1 => Just(Step::Lose),
        1 => Just(Step::Restart),
    ]
}

/// A store over a B-tree file (an in-memory disk) and its checkpoints in
/// flight, oldest first.
struct Backed {
    db: crate::btree::Db,
    store: Store,
    in_flight: std::collections::VecDeque<Checkpoint>,
    applied: u64,
    /// A checkpoint was lost: the file misses changes, so no restart.
    lost: bool,
}

impl Backed {
    fn new() -> Backed {
        let disk = crate::btree::MemDisk::new();
        let db = crate::btree::Db::open_storage(
            disk,
            crate::btree::Options {
                read_mode: crate::btree::ReadMode::Pread { cache_pages: 16 },
                verify_checksums: true,
            },
            None,
        )
        .unwrap();
        let (store, _) = load(&db).unwrap();
        Backed {
            db,
            store,
            in_flight: Default::default(),
            applied: 0,
            lost: false,
        }
    }

    fn commit_oldest(&mut self) -> Result<(), TestCaseError> {
        if let Some(cp) = self.in_flight.pop_front() {
            self.applied += 1;
            let applied = AppliedState {
                index: self.applied,
                term: 1,
            };
            save(&self.db, &cp, applied).unwrap();
            let before = self.store.records_in_memory();
            let dropped = self.store.checkpoint_committed(&cp, self.db.begin_read());
            prop_assert_eq!(self.store.records_in_memory(), before - dropped);
            prop_assert!(dropped <= cp.len());
        }
        Ok(())
    }

    fn step(&mut self, model: &mut Model, step: &Step) -> Result<(), TestCaseError> {
        match step {
            Step::Take => self.in_flight.push_back(self.store.take_checkpoint()),
            Step::Commit => self.commit_oldest()?,
            Step::Lose => self.lost |= self.in_flight.pop_front().is_some(),
            Step::Restart if !self.lost => {
                while !self.in_flight.is_empty() {
                    self.commit_oldest()?;
                }
                self.in_flight.push_back(self.store.take_checkpoint());
                self.commit_oldest()?;
                prop_assert_eq!(self.store.records_in_memory(), 0);
                let (store, st) = load(&self.db).unwrap();
                prop_assert_eq!(st.index, self.applied);
                prop_assert_eq!(store.records_in_memory(), 0);
                self.store = store;
            }
            Step::Restart => {}
            _ => run_step(&mut self.store, model, step)?,
        }
        Ok(())
    }
}

/// [`check_state`] plus the hash of every readable revision against the
/// model's.
fn check_backed(store: &Store, model: &Model) -> Result<(), TestCaseError> {
    check_state(store, model)?;
    let cur = model.cur();
    for rev in model.compacted.max(1)..=cur {
        prop_assert_eq!(
            store.hash_kv(rev).map(|h| h.0),
            Ok(model.hash(rev)),
            "hash at revision {}",
            rev
        );
    }
    // A bounded watch replay from the oldest readable revision.
    let from = (model.compacted + 1).max(1);
    let page = store.events_between(from, cur, b"", b"\0", 0);
    prop_assert_eq!(page.map(|p| p.events), Ok(model.events_since(from)));
    Ok(())
}

/// The whole observable state: revisions, every readable snapshot, history.
fn check_state(store: &Store, model: &Model) -> Result<(), TestCaseError> {
    store.assert_invariants();
    let cur = model.cur();
    prop_assert_eq!(store.current_revision(), cur);
    prop_assert_eq!(store.compact_revision(), model.compacted.max(0));
    let all = |revision| RangeRequest {
        key: Vec::new(),
        range_end: vec![0],
        revision,
        ..RangeRequest::default()
    };
    for rev in model.compacted.max(1)..=cur {
        let got = store.range(&all(rev));
        let want: Vec<KeyValue> = model.snap(rev).values().cloned().collect();
        let count = want.len() as i64;
        prop_assert_eq!(
            got,
            Ok(RangeResponse {
                kvs: want,
                more: false,
                count,
                revision: cur,
            }),
            "snapshot at revision {}",
            rev
        );
    }
    if model.compacted > 1 {
        prop_assert_eq!(
            store.range(&all(model.compacted - 1)),
            Err(Error::Compacted)
        );
    }
    prop_assert_eq!(store.range(&all(cur + 1)), Err(Error::FutureRevision));
    if model.compacted >= 1 {
        prop_assert_eq!(
            store.events_since(model.compacted, b"", b"\0"),
            Ok(model.events_from_compaction()),
            "events since the compaction revision {}",
            model.compacted
        );
    }
    for rev in (model.compacted + 1).max(1)..=cur + 1 {
        prop_assert_eq!(
            store.events_since(rev, b"", b"\0"),
            Ok(model.events_since(rev)),
            "events since {}",
            rev
        );
    }
    Ok(())
}

proptest! {
    // 256 cases by default; set PROPTEST_CASES for a longer soak.
    #[test]
    fn store_matches_snapshot_model(steps in prop::collection::vec(step(), 1..40)) {
        let mut store = Store::new();
        let mut model = Model::new();
        for step in &steps {
            run_step(&mut store, &mut model, step)?;
            check_state(&store, &model)?;
        }
    }

    #[test]
    fn file_backed_store_with_checkpoints_matches_snapshot_model(
        steps in prop::collection::vec(backed_step(), 1..50)
    ) {
        let mut backed = Backed::new();
        let mut model = Model::new();
        for step in &steps {
            backed.step(&mut model, step)?;
            check_backed(&backed.store, &model)?;
        }
    }
}
