//! The MVCC store: the public entry point.

use super::error::Error;
use super::index::TreeIndex;
use super::key_range::KeyRange;
use super::kv::{Event, EventKind, KeyValue};
use super::requests::{
    CompactResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use super::revision::Revision;
use super::revision_store::{Record, RevisionStore};
use super::txn;
use super::view::View;
use super::write::WriteTxn;

/// etcd v3.5's MVCC key space: the key index in memory, the records in
/// memory until a committed checkpoint lets them be read from the B-tree
/// file. See the module docs for the model and its invariants.
#[derive(Clone, Debug)]
pub struct Store {
    pub(super) index: TreeIndex,
    pub(super) records: RevisionStore,
    current_rev: i64,
    /// etcd's `compactMainRev`: -1 until the first compaction.
    compact_rev: i64,
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

impl Store {
    /// An empty store at revision 1.
    pub fn new() -> Store {
        Store {
            index: TreeIndex::default(),
            records: RevisionStore::default(),
            current_rev: 1,
            compact_rev: -1,
        }
    }

    /// The revision of the last write that changed something (1 on a fresh
    /// store).
    pub fn current_revision(&self) -> i64 {
        self.current_rev
    }

    /// The revision of the last successful compaction; 0 if never compacted.
    /// Reads at revisions below it fail with [`Error::Compacted`].
    pub fn compact_revision(&self) -> i64 {
        self.compact_rev.max(0)
    }

    /// etcd's `compactMainRev` as stored: -1 until the first compaction.
    pub(super) fn raw_compact_revision(&self) -> i64 {
        self.compact_rev
    }

    /// A store from its rebuilt key index and its records (as read back
    /// from the backend). Nothing is dirty afterwards.
    pub(super) fn restore(
        index: TreeIndex,
        records: RevisionStore,
        current_rev: i64,
        compact_rev: i64,
    ) -> Store {
        Store {
            index,
            records,
            current_rev,
            compact_rev,
        }
    }

    pub(super) fn view(&self) -> View<'_> {
        View {
            index: &self.index,
            records: &self.records,
            compact_rev: self.compact_rev,
            rev: self.current_rev,
        }
    }

    pub(super) fn set_current_revision(&mut self, rev: i64) {
        self.current_rev = rev;
    }

    /// Runs `f` in a write txn: committed if it succeeds, rolled back if not.
    fn write<T>(
        &mut self,
        f: impl FnOnce(&mut WriteTxn<'_>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut tx = WriteTxn::new(self);
        match f(&mut tx) {
            Ok(v) => {
                tx.commit();
                Ok(v)
            }
            Err(e) => {
                tx.rollback();
                Err(e)
            }
        }
    }

    /// etcd's Range.
    ///
    /// * Reads at `revision`, or at the current revision when `revision <= 0`;
    ///   [`Error::FutureRevision`] above the current revision,
    ///   [`Error::Compacted`] below the compaction revision (reading at the
    ///   compaction revision itself is allowed).
    /// * `count` is the number of keys in the range at that revision, before
    ///   filters and `limit`; `count_only` returns no kvs.
    /// * The min/max mod/create filters (each off when 0) drop kvs outside
    ///   them; then kvs are sorted (a non-key target without an order sorts
    ///   ascending; ties keep key order); then `limit > 0` truncates and sets
    ///   `more`. `keys_only` clears values. Without an explicit sort order or
    ///   a filter only the first `limit + 1` keys are read, so a sort target
    ///   alone sorts just those (etcd does the same).
    /// * The response revision is always the current revision, also for
    ///   historical reads.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, Error> {
        self.view().range(req)
    }

    /// etcd's Put: creates one revision. `version` is the previous version
    /// plus one (1 for a new key or after a delete); `create_revision` is
    /// kept while the key lives. `ignore_value` / `ignore_lease` keep the
    /// current value / lease and fail with [`Error::KeyNotFound`] if the key
    /// does not exist.
    pub fn put(&mut self, req: &PutRequest) -> Result<PutResponse, Error> {
        self.write(|tx| tx.put(req))
    }

    /// etcd's DeleteRange: tombstones every live key in the range (same
    /// `range_end` rules as [`Store::range`]) in one revision. Deleting
    /// nothing creates no revision and reports the current one.
    pub fn delete_range(&mut self, req: &DeleteRangeRequest) -> Result<DeleteRangeResponse, Error> {
        self.write(|tx| tx.delete_range(req))
    }

    /// etcd's Txn. All compares (also of nested txns) are evaluated against
    /// the store before the txn; the chosen branch is validated before
    /// anything is applied; its ops then run in order in one revision, each
    /// seeing the earlier ones' writes. A txn that changes nothing creates no
    /// revision. On error nothing is changed.
    ///
    /// Not checked here (the caller's job, as in etcd's gRPC layer): the
    /// maximum number of ops, duplicate keys among a txn's writes. Leases
    /// are not checked either; see [`Store::txn_checked`].
    pub fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse, Error> {
        self.txn_checked(req, &|_| true)
    }

    /// [`Store::txn`], refusing with [`Error::LeaseNotFound`] a put of the
    /// chosen branches whose non-zero lease `lease_exists` denies (checked
    /// with the other puts, before anything is applied, as etcd does).
    pub fn txn_checked(
        &mut self,
        req: &TxnRequest,
        lease_exists: &dyn Fn(i64) -> bool,
    ) -> Result<TxnResponse, Error> {
        let plan = {
            let view = self.view();
            let plan = txn::plan(&view, req)?;
            txn::check(&view, &plan, lease_exists)?;
            plan
        };
        self.write(|tx| {
            let mut resp = txn::apply(tx, &plan)?;
            resp.revision = tx.rev();
            Ok(resp)
        })
    }

    /// Deletes each of `keys` that exists, all in one revision (etcd's lease
    /// revoke: one `DeleteRange` per key, in the given order, in one write
    /// txn). Returns the header revision: the new one if anything was
    /// deleted, else the current one.
    pub fn delete_keys(&mut self, keys: &[Vec<u8>]) -> Result<i64, Error> {
        let mut tx = WriteTxn::new(self);
        for key in keys {
            let req = DeleteRangeRequest {
                key: key.clone(),
                range_end: Vec::new(),
                prev_kv: false,
            };
            if let Err(e) = tx.delete_range(&req) {
                tx.rollback();
                return Err(e);
            }
        }
        Ok(tx.commit())
    }

    /// Calls `f` with each key written at a main revision above `rev`, in
    /// revision order, with the lease it carries now: its put's lease, or 0
    /// for a delete. The apply layer keeps the lessor's key attachments in
    /// step with it. Fails only if the backend file cannot be read.
    pub fn key_leases_since(&self, rev: i64, mut f: impl FnMut(&[u8], i64)) -> Result<(), Error> {
        for item in self.records.since(Revision::new(rev.saturating_add(1), 0)) {
            let (_, rec) = item?;
            match &*rec {
                Record::Put(kv) => f(&kv.key, kv.lease),
                Record::Tombstone { key } => f(key, 0),
            }
        }
        Ok(())
    }

    /// etcd's Compact: forgets the history before `revision`. Fails with
    /// [`Error::Compacted`] if `revision` is not above the last compaction
    /// revision (etcd starts that at -1, so compacting at 0 once on a fresh
    /// store succeeds) and with [`Error::FutureRevision`] above the current
    /// revision. Per key, the newest revision `<= revision` of each of its
    /// generations that is still alive at `revision` or ends at it survives:
    /// a tombstone at exactly `revision` stays (etcd >= 3.5.15, etcd#18274),
    /// so a watch from `revision` still sees that delete, until a later
    /// compaction passes it. Keys deleted before `revision` vanish entirely.
    pub fn compact(&mut self, revision: i64) -> Result<CompactResponse, Error> {
        if revision <= self.compact_rev {
            return Err(Error::Compacted);
        }
        if revision > self.current_rev {
            return Err(Error::FutureRevision);
        }
        self.compact_rev = revision;
        let keep = self.index.compact(revision);
        self.records.compact(revision, &keep)?;
        Ok(CompactResponse {
            revision: self.current_rev,
        })
    }

    /// Every change at main revision `>= rev` to keys in `key`/`range_end`
    /// (same rules as [`Store::range`]), in revision order, for replaying
    /// history to a watcher. Changes made by one txn to the same key each
    /// appear. Fails with [`Error::Compacted`] if `rev` is below the
    /// compaction revision (as etcd's watch does). Starting exactly at the
    /// compaction revision is allowed; its deletes are kept (see
    /// [`Store::compact`]), but of several changes one txn there made to a
    /// key only those that ended a generation, and the last one, are left.
    /// Before any compaction etcd's compaction revision is -1, so only
    /// `rev < -1` fails then. `prev_kv` is the key as of revision
    /// `mod_revision - 1` when that is still readable.
    pub fn events_since(
        &self,
        rev: i64,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<Vec<Event>, Error> {
        if rev < self.compact_rev {
            return Err(Error::Compacted);
        }
        let range = KeyRange::new(key, range_end);
        let view = self.view();
        let mut events = Vec::new();
        for item in self.records.since(Revision::new(rev, 0)) {
            let (r, record) = item?;
            if !range.contains(record.key()) {
                continue;
            }
            let (kind, kv) = match record.into_owned() {
                Record::Put(kv) => (EventKind::Put, kv),
                Record::Tombstone { key } => (
                    EventKind::Delete,
                    KeyValue {
                        key,
                        mod_revision: r.main,
                        ..KeyValue::default()
                    },
                ),
            };
            let before = r.main - 1;
            let prev_kv = if before >= 1 && before >= self.compact_rev {
                view.get_at(&kv.key, before)?
            } else {
                None
            };
            events.push(Event { kind, kv, prev_kv });
        }
        Ok(events)
    }

    /// Asserts every invariant of the module docs (tests only).
    #[cfg(test)]
    pub(super) fn assert_invariants(&self) {
        use std::collections::BTreeSet;
        assert!(self.current_rev >= 1);
        assert!(self.compact_rev <= self.current_rev);
        let mut referenced = BTreeSet::new();
        for (key, ki) in self.index.iter() {
            assert!(!ki.is_empty(), "empty key index for {key:?}");
            let gens = ki.generations();
            assert!(!gens.is_empty());
            let mut prev: Option<Revision> = None;
            for (i, g) in gens.iter().enumerate() {
                let last = i + 1 == gens.len();
                let revs = g.revisions();
                if !last {
                    // A generation holds its tombstone alone only when
                    // compaction happened at exactly its revision.
                    assert!(
                        revs.len() >= 2 || revs.first().map(|r| r.main) == Some(self.compact_rev),
                        "{key:?}: short closed generation {revs:?}"
                    );
                }
                let mut prev_version = None;
                for (j, r) in revs.iter().enumerate() {
                    assert!(
                        prev.is_none_or(|p| p < *r),
                        "{key:?}: revisions not increasing"
                    );
                    assert!(r.main <= self.current_rev);
                    prev = Some(*r);
                    assert!(referenced.insert(*r), "revision {r:?} referenced twice");
                    let is_tombstone = !last && j + 1 == revs.len();
                    match self.records.get(*r).unwrap().as_deref() {
                        Some(Record::Tombstone { key: k }) => {
                            assert!(is_tombstone, "{key:?}: tombstone inside generation");
                            assert_eq!(k, key);
                        }
                        Some(Record::Put(kv)) => {
                            assert!(!is_tombstone, "{key:?}: generation not ended by tombstone");
                            assert_eq!(&kv.key, key);
                            assert_eq!(kv.mod_revision, r.main);
                            assert_eq!(kv.create_revision, g.created().main);
                            if let Some(v) = prev_version {
                                assert_eq!(kv.version, v + 1, "{key:?}: version gap");
                            }
                            prev_version = Some(kv.version);
                        }
                        None => panic!("{key:?}: revision {r:?} has no record"),
                    }
                }
            }
        }
        let stored: BTreeSet<Revision> = self
            .records
            .since(Revision::new(0, 0))
            .map(|item| item.unwrap().0)
            .collect();
        assert_eq!(stored, referenced, "records not referenced by the index");
    }
}
