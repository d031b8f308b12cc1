//! The ordered map from key to its [`KeyIndex`] (etcd's `treeIndex`).
//!
//! Invariant: no key index in the map is empty (compaction removes those).

use std::collections::{BTreeMap, HashSet};

use smallvec::SmallVec;

use super::error::Error;
use super::key_index::{KeyAt, KeyIndex, Mark};
use super::key_range::KeyRange;
use super::revision::Revision;

/// A key as the index holds it: up to 16 bytes inside the map's node, so a
/// lookup's comparisons need no pointer chase for short keys (and no heap
/// block of their own); longer keys live on the heap as in a `Vec`. Same
/// size as a `Vec<u8>` (24 bytes); orders as the bytes do.
type IndexKey = SmallVec<[u8; 16]>;
const _: () = assert!(std::mem::size_of::<IndexKey>() == std::mem::size_of::<Vec<u8>>());

#[derive(Clone, Debug, Default)]
pub(crate) struct TreeIndex {
    keys: BTreeMap<IndexKey, KeyIndex>,
}

impl TreeIndex {
    /// Key indexes whose key lies in `range`, in key order.
    fn visit<'s>(&'s self, range: KeyRange<'_>) -> impl Iterator<Item = (&'s [u8], &'s KeyIndex)> {
        range
            .bounds()
            .map(|b| self.keys.range::<[u8], _>(b))
            .into_iter()
            .flatten()
            .map(|(k, ki)| (k.as_slice(), ki))
    }

    pub(crate) fn get(&self, key: &[u8], at_rev: i64) -> Option<KeyAt> {
        self.keys.get(key)?.get(at_rev)
    }

    /// Revisions of the keys alive at `at_rev` in `range`, in key order, at
    /// most `limit` of them (`0` = all), plus the uncapped number of such keys.
    pub(crate) fn revisions(
        &self,
        range: KeyRange<'_>,
        at_rev: i64,
        limit: usize,
    ) -> (Vec<Revision>, usize) {
        let mut revs = Vec::new();
        let mut total = 0;
        for (_, ki) in self.visit(range) {
            if let Some(at) = ki.get(at_rev) {
                if limit == 0 || revs.len() < limit {
                    revs.push(at.modified);
                }
                total += 1;
            }
        }
        (revs, total)
    }

    /// Number of keys alive at `at_rev` in `range`.
    pub(crate) fn count(&self, range: KeyRange<'_>, at_rev: i64) -> usize {
        self.visit(range)
            .filter(|(_, ki)| ki.get(at_rev).is_some())
            .count()
    }

    /// Keys alive at `at_rev` in `range`, in key order.
    pub(crate) fn keys(&self, range: KeyRange<'_>, at_rev: i64) -> Vec<Vec<u8>> {
        self.visit(range)
            .filter(|(_, ki)| ki.get(at_rev).is_some())
            .map(|(k, _)| k.to_vec())
            .collect()
    }

    /// Appends `rev` to `key`'s index (created if new) and returns, from the
    /// same lookup, the key as of `rev.main` before the put (earlier writes
    /// of the same txn included) and the mark to rewind it to (`None`: the
    /// key was new).
    pub(crate) fn put(
        &mut self,
        key: &[u8],
        rev: Revision,
    ) -> Result<(Option<KeyAt>, Option<Mark>), Error> {
        match self.keys.get_mut(key) {
            Some(ki) => {
                let at = ki.get(rev.main);
                let mark = ki.mark();
                ki.put(rev)?;
                Ok((at, Some(mark)))
            }
            None => {
                let mut ki = KeyIndex::new();
                ki.put(rev)?;
                self.keys.insert(IndexKey::from_slice(key), ki);
                Ok((None, None))
            }
        }
    }

    /// See [`KeyIndex::restore_put`].
    pub(crate) fn restore_put(
        &mut self,
        key: &[u8],
        rev: Revision,
        create_main: i64,
        version: i64,
    ) -> Result<(), Error> {
        self.keys
            .entry(IndexKey::from_slice(key))
            .or_default()
            .restore_put(rev, create_main, version)
    }

    /// Rebuilds history from a stored tombstone: ends the key's generation,
    /// or, when it is the key's first record (compaction at exactly its
    /// revision), starts the key's history with it
    /// ([`KeyIndex::restore_tombstone`], etcd#19188).
    pub(crate) fn restore_tombstone(&mut self, key: &[u8], rev: Revision) -> Result<(), Error> {
        match self.keys.get_mut(key) {
            Some(ki) => ki.tombstone(rev),
            None => {
                let mut ki = KeyIndex::new();
                ki.restore_tombstone(rev)?;
                self.keys.insert(IndexKey::from_slice(key), ki);
                Ok(())
            }
        }
    }

    pub(crate) fn tombstone(&mut self, key: &[u8], rev: Revision) -> Result<(), Error> {
        match self.keys.get_mut(key) {
            Some(ki) => ki.tombstone(rev),
            None => Err(Error::RevisionNotFound {
                main: rev.main,
                sub: rev.sub,
            }),
        }
    }

    /// Bookmarks `key`'s index before a write txn touches it (`None`: the
    /// key has no index yet).
    pub(crate) fn mark(&self, key: &[u8]) -> Option<Mark> {
        self.keys.get(key).map(KeyIndex::mark)
    }

    /// Undoes a write txn's changes to `key` back to `mark`.
    pub(crate) fn rewind(&mut self, key: Vec<u8>, mark: Option<Mark>) {
        match mark {
            Some(m) => {
                if let Some(ki) = self.keys.get_mut(key.as_slice()) {
                    ki.rewind(m);
                }
            }
            None => {
                self.keys.remove(key.as_slice());
            }
        }
    }

    /// Compacts every key index at `at_rev`, drops the ones left empty and
    /// returns the revisions `<= at_rev` that are still referenced; every
    /// other revision `<= at_rev` is now garbage.
    pub(crate) fn compact(&mut self, at_rev: i64) -> HashSet<Revision> {
        let mut keep = HashSet::new();
        self.keys.retain(|_, ki| {
            ki.compact(at_rev);
            keep.extend(ki.revisions().filter(|r| r.main <= at_rev));
            !ki.is_empty()
        });
        keep
    }

    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &KeyIndex)> {
        self.keys.iter().map(|(k, ki)| (k.as_slice(), ki))
    }
}
