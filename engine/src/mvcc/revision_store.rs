//! Revision → record storage: the seam the durable B-tree bucket will later
//! implement (etcd's `key` bucket, keyed by revision).
//!
//! The MVCC layer only ever inserts records at new revisions, reads them by
//! revision, scans them in revision order, and deletes them (compaction, or
//! undoing a failed write). Keep this interface that small.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::kv::KeyValue;
use super::revision::Revision;

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

#[derive(Clone, Debug, Default)]
pub(crate) struct RevisionStore {
    records: BTreeMap<Revision, Record>,
    /// Revisions inserted or removed since the last `take_dirty` (what the
    /// next backend checkpoint must write or delete).
    dirty: BTreeSet<Revision>,
}

impl RevisionStore {
    pub(crate) fn insert(&mut self, rev: Revision, record: Record) {
        self.records.insert(rev, record);
        self.dirty.insert(rev);
    }

    /// Inserts a record read back from the backend (not dirty).
    pub(crate) fn load(&mut self, rev: Revision, record: Record) {
        self.records.insert(rev, record);
    }

    /// The changes since the last call: each touched revision with its record
    /// now (`None`: removed), in revision order.
    pub(crate) fn take_dirty(&mut self) -> Vec<(Revision, Option<Record>)> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|r| (r, self.records.get(&r).cloned()))
            .collect()
    }

    pub(crate) fn get(&self, rev: Revision) -> Option<&Record> {
        self.records.get(&rev)
    }

    pub(crate) fn remove(&mut self, rev: Revision) -> Option<Record> {
        self.dirty.insert(rev);
        self.records.remove(&rev)
    }

    /// Records at `from` and after, in revision order.
    pub(crate) fn since(&self, from: Revision) -> impl Iterator<Item = (Revision, &Record)> {
        self.records.range(from..).map(|(r, rec)| (*r, rec))
    }

    /// Deletes every record whose main revision is `<= at_rev` and that is
    /// not in `keep`.
    pub(crate) fn compact(&mut self, at_rev: i64, keep: &HashSet<Revision>) {
        let garbage: Vec<Revision> = self
            .records
            .range(..=Revision::new(at_rev, i64::MAX))
            .map(|(r, _)| *r)
            .filter(|r| !keep.contains(r))
            .collect();
        for r in garbage {
            self.records.remove(&r);
            self.dirty.insert(r);
        }
    }

    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Revision, &Record)> {
        self.records.iter()
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

    #[test]
    fn compaction_deletes_unkept_records_up_to_the_revision() {
        let mut s = RevisionStore::default();
        for main in 1..=4 {
            for sub in 0..2 {
                s.insert(Revision::new(main, sub), put(b"k"));
            }
        }
        let keep: HashSet<_> = [Revision::new(2, 1)].into_iter().collect();
        s.compact(3, &keep);
        let left: Vec<_> = s.iter().map(|(r, _)| *r).collect();
        assert_eq!(
            left,
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
            .map(|(r, rec)| (r, rec.key().to_vec()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Revision::new(2, 0), b"b".to_vec()),
                (Revision::new(2, 1), b"a".to_vec())
            ]
        );
        assert!(s.remove(Revision::new(1, 0)).is_some());
        assert!(s.get(Revision::new(1, 0)).is_none());
    }
}
