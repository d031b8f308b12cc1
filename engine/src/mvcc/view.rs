//! A read view of the store at one revision, and the Range semantics of
//! etcd's applier (limit, filters, sorting, count) on top of it.

use std::borrow::Cow;
use std::cmp::Ordering;

use super::error::Error;
use super::index::TreeIndex;
use super::key_range::KeyRange;
use super::kv::KeyValue;
use super::requests::{RangeRequest, RangeResponse, SortOrder, SortTarget};
use super::revision::Revision;
use super::revision_store::{Record, RevisionStore};

/// Reads at `rev` (the "current" revision of whoever opened the view: the
/// store's, or a write txn's own once it has written).
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub(crate) index: &'a TreeIndex,
    pub(crate) records: &'a RevisionStore,
    /// etcd's `compactMainRev`: -1 until the first compaction.
    pub(crate) compact_rev: i64,
    pub(crate) rev: i64,
}

impl View<'_> {
    /// The key-value a put recorded at `rev`.
    pub(crate) fn kv_at(&self, rev: Revision) -> Result<KeyValue, Error> {
        match self.records.get(rev)? {
            Some(Cow::Borrowed(Record::Put(kv))) => Ok(kv.clone()),
            Some(Cow::Owned(Record::Put(kv))) => Ok(kv),
            _ => Err(Error::RevisionNotFound {
                main: rev.main,
                sub: rev.sub,
            }),
        }
    }

    /// One key at the view's revision.
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, Error> {
        self.get_at(key, self.rev)
    }

    /// One key at `at_rev` (which the caller has checked is readable).
    pub(crate) fn get_at(&self, key: &[u8], at_rev: i64) -> Result<Option<KeyValue>, Error> {
        match self.index.get(key, at_rev) {
            Some(at) => self.kv_at(at.modified).map(Some),
            None => Ok(None),
        }
    }

    /// Every key-value in `range` at the view's revision, in key order.
    pub(crate) fn all_in(&self, range: KeyRange<'_>) -> Result<Vec<KeyValue>, Error> {
        let (revs, _) = self.index.revisions(range, self.rev, 0);
        revs.into_iter().map(|r| self.kv_at(r)).collect()
    }

    /// etcd's Range: the applier's option handling around the store's
    /// `rangeKeys`.
    pub(crate) fn range(&self, req: &RangeRequest) -> Result<RangeResponse, Error> {
        let fetch_all = req.sort_order != SortOrder::None
            || req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        // Fetch one more than asked for so `more` can be told; an explicit
        // sort order or a filter needs everything. As in etcd, a sort target
        // with `SortOrder::None` does not count: then only the first
        // `limit + 1` keys (in key order) get sorted.
        let fetch_limit = if fetch_all || req.limit <= 0 {
            0
        } else {
            usize::try_from(req.limit.saturating_add(1)).unwrap_or(usize::MAX)
        };

        let mut at_rev = req.revision;
        if at_rev > self.rev {
            return Err(Error::FutureRevision);
        }
        if at_rev <= 0 {
            at_rev = self.rev;
        }
        if at_rev < self.compact_rev {
            return Err(Error::Compacted);
        }

        let range = KeyRange::new(&req.key, &req.range_end);
        let (mut kvs, count) = if req.count_only {
            (Vec::new(), self.index.count(range, at_rev))
        } else {
            let (revs, total) = self.index.revisions(range, at_rev, fetch_limit);
            let kvs = revs
                .into_iter()
                .map(|r| self.kv_at(r))
                .collect::<Result<Vec<_>, _>>()?;
            (kvs, total)
        };

        if req.max_mod_revision != 0 {
            kvs.retain(|kv| kv.mod_revision <= req.max_mod_revision);
        }
        if req.min_mod_revision != 0 {
            kvs.retain(|kv| kv.mod_revision >= req.min_mod_revision);
        }
        if req.max_create_revision != 0 {
            kvs.retain(|kv| kv.create_revision <= req.max_create_revision);
        }
        if req.min_create_revision != 0 {
            kvs.retain(|kv| kv.create_revision >= req.min_create_revision);
        }

        sort_kvs(&mut kvs, req.sort_order, req.sort_target);

        let mut more = false;
        if req.limit > 0 {
            let limit = usize::try_from(req.limit).unwrap_or(usize::MAX);
            if kvs.len() > limit {
                kvs.truncate(limit);
                more = true;
            }
        }
        if req.keys_only {
            for kv in &mut kvs {
                kv.value.clear();
            }
        }
        Ok(RangeResponse {
            kvs,
            more,
            count: i64::try_from(count).unwrap_or(i64::MAX),
            revision: self.rev,
        })
    }
}

/// Sorts as etcd's applier does: results come in key order, so a key sort
/// ascending is a no-op and a non-key target without an order sorts
/// ascending. Ties keep key order (the sort is stable, for both directions).
fn sort_kvs(kvs: &mut [KeyValue], order: SortOrder, target: SortTarget) {
    let order = match (order, target) {
        (SortOrder::None, SortTarget::Key) => return,
        (SortOrder::None, _) => SortOrder::Ascend,
        (SortOrder::Ascend, SortTarget::Key) => return,
        (o, _) => o,
    };
    let cmp = |a: &KeyValue, b: &KeyValue| -> Ordering {
        match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        }
    };
    match order {
        SortOrder::Descend => kvs.sort_by(|a, b| cmp(b, a)),
        _ => kvs.sort_by(cmp),
    }
}
