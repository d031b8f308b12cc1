//! Revision → record storage, over the B-tree file's `key` bucket (etcd's
//! `key` bucket, keyed by revision).
//!
//! The MVCC layer only ever inserts records at new revisions, reads them by
//! revision, scans them in revision order, and deletes them (compaction, or
//! undoing a failed write). Keep this interface that small.
//!
//! # What is in memory, what is in the file
//!
//! Like etcd (which keeps only the key index in memory and reads values
//! from bbolt's mmap), the store keeps in memory only what is not durable in
//! the B-tree yet, and reads everything else from a snapshot [`ReadTxn`] of
//! the file:
//!
//! * `mem`: every record inserted since the last committed checkpoint that
//!   wrote it, including those of the checkpoint in flight. Each carries the
//!   *generation* of the checkpoint that takes it (`take_dirty` hands out
//!   generations 1, 2, 3, ...; a record inserted now belongs to generation
//!   `next_gen`).
//! * `removed`: revisions removed (compaction, undo) whose removal no
//!   committed checkpoint has written yet. They mask the file: a removed
//!   revision never comes back from a snapshot that still holds it.
//! * `file`: a snapshot taken after the last committed checkpoint (or at
//!   load). A revision is read from it only when it is in neither map.
//!
//! Invariants:
//! * A revision is in at most one of `mem` and `removed`.
//! * Every revision the store holds is in `mem`, or in the file snapshot and
//!   not in `removed`. Every revision the store does not hold is absent from
//!   `mem` and either absent from the file snapshot or in `removed`.
//! * [`RevisionStore::committed`] swaps in a snapshot taken after checkpoint
//!   `g` committed and, in the same `&mut` call (under the store's write
//!   lock), drops from `mem` exactly the records of generation `g` and from
//!   `removed` exactly the removals of generation `g`: what `g` wrote and
//!   nothing changed again since it was taken (a later change gets a later
//!   generation). So a revision is never read from a snapshot older than the
//!   commit that wrote it, and generations that never commit (a failed
//!   checkpoint) simply stay in memory.
//! * Snapshots only move forward: a commit older than the last installed one
//!   is ignored, as is one for another store (a store reloaded from a Raft
//!   snapshot image starts a new identity).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::iter::Peekable;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::backend::{decode_record, parse_rev_key, rev_key, KEY_BUCKET};
use super::error::Error;
use super::kv::KeyValue;
use super::revision::Revision;
use crate::btree::{BtreeError, ReadTxn};

/// What one revision recorded about its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Record {
    /// The key-value as written by a put (its `mod_revision` is the main
    /// revision of the record).
    Put(KeyValue),
    /// The key was deleted.
    Tombstone { key: Vec<u8> },
}

impl Record {
    pub(crate) fn key(&self) -> &[u8] {
        match self {
            Record::Put(kv) => &kv.key,
            Record::Tombstone { key } => key,
        }
    }
}

/// Identifies one checkpoint of one store: which records its commit made
/// durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Ticket {
    store: u64,
    gen: u64,
}

/// One change a checkpoint writes: the record now at a revision (shared
/// with the store, not copied), or `None` if it was removed.
pub(crate) type Change = (Revision, Option<Arc<Record>>);

#[derive(Clone, Debug)]
struct Held {
    record: Arc<Record>,
    /// The checkpoint generation that writes it.
    gen: u64,
}

/// The B-tree snapshot records are read from.
struct FileView {
    txn: ReadTxn,
    /// Whether the snapshot has a `key` bucket at all.
    has_keys: bool,
}

impl FileView {
    fn get(&self, rev: Revision) -> Result<Option<Record>, Error> {
        if !self.has_keys {
            return Ok(None);
        }
        match self.txn.get(KEY_BUCKET, &rev_key(rev)).map_err(btree_err)? {
            Some(v) => decode_record(rev, &v).map(Some).map_err(backend_err),
            None => Ok(None),
        }
    }
}

fn btree_err(e: BtreeError) -> Error {
    Error::Backend(e.to_string())
}

fn backend_err(e: super::backend::BackendError) -> Error {
    Error::Backend(e.to_string())
}

static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(1);

#[derive(Clone)]
pub(crate) struct RevisionStore {
    mem: BTreeMap<Revision, Held>,
    /// Removed revisions, with the generation that writes the removal.
    removed: BTreeMap<Revision, u64>,
    /// Revisions inserted or removed since the last `take_dirty` (what the
    /// next backend checkpoint must write or delete).
    dirty: BTreeSet<Revision>,
    /// The generation the next `take_dirty` hands out (and of changes made now).
    next_gen: u64,
    /// The last generation whose commit was installed (0: none).
    committed_gen: u64,
    file: Option<Arc<FileView>>,
    id: u64,
}

impl Default for RevisionStore {
    fn default() -> Self {
        RevisionStore {
            mem: BTreeMap::new(),
            removed: BTreeMap::new(),
            dirty: BTreeSet::new(),
            next_gen: 1,
            committed_gen: 0,
            file: None,
            id: NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl std::fmt::Debug for RevisionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevisionStore")
            .field("in_memory", &self.mem.len())
            .field("removed", &self.removed.len())
            .field("dirty", &self.dirty.len())
            .field("next_gen", &self.next_gen)
            .field("committed_gen", &self.committed_gen)
            .field("file_txn", &self.file.as_ref().map(|f| f.txn.txn_id()))
            .finish()
    }
}

impl RevisionStore {
    /// A store whose records are all in `snapshot` (as loaded at start-up).
    pub(crate) fn from_file(snapshot: ReadTxn) -> RevisionStore {
        let mut s = RevisionStore::default();
        s.use_snapshot(snapshot);
        s
    }

    pub(crate) fn insert(&mut self, rev: Revision, record: Record) {
        self.mem.insert(
            rev,
            Held {
                record: Arc::new(record),
                gen: self.next_gen,
            },
        );
        self.removed.remove(&rev);
        self.dirty.insert(rev);
    }

    /// The changes since the last call: each touched revision with its record
    /// now (`None`: removed), in revision order, and the ticket that tells
    /// [`committed`](RevisionStore::committed) what they were. Records are
    /// shared, not copied.
    pub(crate) fn take_dirty(&mut self) -> (Ticket, Vec<Change>) {
        let ticket = Ticket {
            store: self.id,
            gen: self.next_gen,
        };
        self.next_gen += 1;
        let changes = std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|r| (r, self.mem.get(&r).map(|h| h.record.clone())))
            .collect();
        (ticket, changes)
    }

    /// The checkpoint `ticket` is committed and `snapshot` was taken after
    /// that commit: read from it from now on and drop from memory what the
    /// checkpoint wrote and nothing changed since. Returns the number of
    /// records dropped from memory. A ticket of another store, or older
    /// than the last one installed, is ignored.
    pub(crate) fn committed(&mut self, ticket: Ticket, snapshot: ReadTxn) -> usize {
        if ticket.store != self.id
            || ticket.gen <= self.committed_gen
            || ticket.gen >= self.next_gen
        {
            return 0;
        }
        self.use_snapshot(snapshot);
        self.committed_gen = ticket.gen;
        let before = self.mem.len();
        self.mem.retain(|_, h| h.gen != ticket.gen);
        self.removed.retain(|_, g| *g != ticket.gen);
        before - self.mem.len()
    }

    /// Reads from `snapshot` from now on, which must hold every checkpoint
    /// committed so far (e.g. the file an online defrag wrote from the last
    /// commit).
    pub(crate) fn use_snapshot(&mut self, snapshot: ReadTxn) {
        let has_keys = snapshot.has_bucket(KEY_BUCKET);
        self.file = Some(Arc::new(FileView {
            txn: snapshot,
            has_keys,
        }));
    }

    /// The record at `rev`, from memory or the file.
    pub(crate) fn get(&self, rev: Revision) -> Result<Option<Cow<'_, Record>>, Error> {
        if let Some(h) = self.mem.get(&rev) {
            return Ok(Some(Cow::Borrowed(&*h.record)));
        }
        if self.removed.contains_key(&rev) {
            return Ok(None);
        }
        match &self.file {
            Some(f) => Ok(f.get(rev)?.map(Cow::Owned)),
            None => Ok(None),
        }
    }

    pub(crate) fn remove(&mut self, rev: Revision) {
        self.dirty.insert(rev);
        self.mem.remove(&rev);
        self.removed.insert(rev, self.next_gen);
    }

    /// Records at `from` and after, in revision order: memory and file
    /// merged. Stops after the first error.
    pub(crate) fn since(&self, from: Revision) -> Since<'_> {
        let mut it = Since {
            store: self,
            mem: self.mem.range(from..).peekable(),
            file: None,
            file_head: None,
            failed: None,
            done: false,
        };
        if let Some(f) = self.file.as_ref().filter(|f| f.has_keys) {
            let start = rev_key(from);
            match f.txn.range(KEY_BUCKET, start.as_slice()..) {
                Ok(r) => it.file = Some(r),
                Err(e) => it.failed = Some(btree_err(e)),
            }
        }
        it
    }

    /// Deletes every record whose main revision is `<= at_rev` and that is
    /// not in `keep`, in memory and in the file.
    pub(crate) fn compact(&mut self, at_rev: i64, keep: &HashSet<Revision>) -> Result<(), Error> {
        let end = Revision::new(at_rev, i64::MAX);
        let mut garbage: Vec<Revision> = self
            .mem
            .range(..=end)
            .map(|(r, _)| *r)
            .filter(|r| !keep.contains(r))
            .collect();
        if let Some(f) = self.file.as_ref().filter(|f| f.has_keys) {
            let end_key = rev_key(end);
            for item in f
                .txn
                .range(KEY_BUCKET, ..=end_key.as_slice())
                .map_err(btree_err)?
            {
                let (k, _) = item.map_err(btree_err)?;
                let r = parse_rev_key(&k).map_err(backend_err)?;
                if !keep.contains(&r)
                    && !self.mem.contains_key(&r)
                    && !self.removed.contains_key(&r)
                {
                    garbage.push(r);
                }
            }
        }
        for r in garbage {
            self.remove(r);
        }
        Ok(())
    }

    /// Number of records held in memory (not yet durable in the file, or
    /// written by a checkpoint whose commit was not installed yet).
    pub(crate) fn in_memory(&self) -> usize {
        self.mem.len()
    }
}

/// [`RevisionStore::since`]: the memory and file records merged in revision
/// order; memory wins, removed revisions are skipped.
pub(crate) struct Since<'a> {
    store: &'a RevisionStore,
    mem: Peekable<std::collections::btree_map::Range<'a, Revision, Held>>,
    /// The file's records; `None` once exhausted (or absent).
    file: Option<crate::btree::Range<'a>>,
    /// The next file record, read ahead.
    file_head: Option<(Revision, Vec<u8>)>,
    /// An error to report first (opening the file's range failed).
    failed: Option<Error>,
    /// An error was reported: nothing follows.
    done: bool,
}

impl<'a> Since<'a> {
    /// Reads the next file record ahead, if none is.
    fn fill(&mut self) -> Result<(), Error> {
        if self.file_head.is_some() {
            return Ok(());
        }
        let Some(it) = &mut self.file else {
            return Ok(());
        };
        match it.next() {
            None => {
                self.file = None;
                Ok(())
            }
            Some(Err(e)) => Err(btree_err(e)),
            Some(Ok((k, v))) => {
                self.file_head = Some((parse_rev_key(&k).map_err(backend_err)?, v));
                Ok(())
            }
        }
    }

    fn step(&mut self) -> Result<Option<(Revision, Cow<'a, Record>)>, Error> {
        loop {
            self.fill()?;
            let m = self.mem.peek().map(|(r, _)| **r);
            let f = self.file_head.as_ref().map(|(r, _)| *r);
            match (m, f) {
                (None, None) => return Ok(None),
                (Some(m), f) if f.is_none_or(|f| m <= f) => {
                    if f == Some(m) {
                        // Memory holds the newer record at this revision.
                        self.file_head = None;
                    }
                    return Ok(self
                        .mem
                        .next()
                        .map(|(r, h)| (*r, Cow::Borrowed(&*h.record))));
                }
                _ => {
                    let Some((r, v)) = self.file_head.take() else {
                        return Ok(None);
                    };
                    if self.store.removed.contains_key(&r) {
                        continue;
                    }
                    return decode_record(r, &v)
                        .map(|rec| Some((r, Cow::Owned(rec))))
                        .map_err(backend_err);
                }
            }
        }
    }
}

impl<'a> Iterator for Since<'a> {
    type Item = Result<(Revision, Cow<'a, Record>), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = match self.failed.take() {
            Some(e) => Err(e),
            None => self.step().transpose()?,
        };
        self.done = r.is_err();
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &[u8]) -> Record {
        Record::Put(KeyValue {
            key: key.to_vec(),
            ..KeyValue::default()
        })
    }

    fn revs(s: &RevisionStore) -> Vec<Revision> {
        s.since(Revision::new(0, 0)).map(|r| r.unwrap().0).collect()
    }

    #[test]
    fn compaction_deletes_unkept_records_up_to_the_revision() {
        let mut s = RevisionStore::default();
        for main in 1..=4 {
            for sub in 0..2 {
                s.insert(Revision::new(main, sub), put(b"k"));
            }
        }
        let keep: HashSet<_> = [Revision::new(2, 1)].into_iter().collect();
        s.compact(3, &keep).unwrap();
        assert_eq!(
            revs(&s),
            vec![
                Revision::new(2, 1),
                Revision::new(4, 0),
                Revision::new(4, 1)
            ]
        );
    }

    #[test]
    fn since_starts_at_the_given_revision() {
        let mut s = RevisionStore::default();
        s.insert(Revision::new(1, 0), put(b"a"));
        s.insert(Revision::new(2, 0), put(b"b"));
        s.insert(
            Revision::new(2, 1),
            Record::Tombstone { key: b"a".to_vec() },
        );
        let got: Vec<_> = s
            .since(Revision::new(2, 0))
            .map(|r| {
                let (r, rec) = r.unwrap();
                (r, rec.key().to_vec())
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (Revision::new(2, 0), b"b".to_vec()),
                (Revision::new(2, 1), b"a".to_vec())
            ]
        );
        s.remove(Revision::new(1, 0));
        assert!(s.get(Revision::new(1, 0)).unwrap().is_none());
    }

    fn mem_db() -> crate::btree::Db {
        crate::btree::Db::open_storage(
            crate::btree::MemDisk::new(),
            crate::btree::Options {
                read_mode: crate::btree::ReadMode::Pread { cache_pages: 0 },
                verify_checksums: true,
            },
            None,
        )
        .unwrap()
    }

    /// Memory wins over the file, removals hide the file's copy, and both
    /// merge in revision order.
    #[test]
    fn since_merges_memory_over_the_file() {
        let db = mem_db();
        let mut w = db.begin_write().unwrap();
        w.create_bucket(KEY_BUCKET).unwrap();
        let mut buf = Vec::new();
        for (main, key) in [(1, b"f1"), (3, b"f3"), (5, b"f5")] {
            super::super::backend::encode_record(&put(key), &mut buf);
            w.insert(KEY_BUCKET, &rev_key(Revision::new(main, 0)), &buf)
                .unwrap();
        }
        w.commit().unwrap();
        let mut s = RevisionStore::from_file(db.begin_read());
        s.insert(Revision::new(2, 0), put(b"m2"));
        s.insert(Revision::new(3, 0), put(b"m3"));
        s.remove(Revision::new(5, 0));
        let got: Vec<_> = s
            .since(Revision::new(0, 0))
            .map(|r| r.unwrap().1.key().to_vec())
            .collect();
        assert_eq!(got, [&b"f1"[..], b"m2", b"m3"]);
        assert!(s.get(Revision::new(5, 0)).unwrap().is_none());
        assert_eq!(s.get(Revision::new(1, 0)).unwrap().unwrap().key(), b"f1");
    }

    /// A corrupt record in the file is an error, and the scan ends there.
    #[test]
    fn a_corrupt_file_record_is_an_error_not_a_panic() {
        let db = mem_db();
        let mut w = db.begin_write().unwrap();
        w.create_bucket(KEY_BUCKET).unwrap();
        w.insert(KEY_BUCKET, &rev_key(Revision::new(2, 0)), &[9, 9])
            .unwrap();
        w.commit().unwrap();
        let mut s = RevisionStore::from_file(db.begin_read());
        s.insert(Revision::new(3, 0), put(b"m3"));
        assert!(matches!(s.get(Revision::new(2, 0)), Err(Error::Backend(_))));
        let items: Vec<_> = s.since(Revision::new(0, 0)).collect();
        assert_eq!(items.len(), 1);
        assert!(matches!(items[0], Err(Error::Backend(_))));
    }
}
