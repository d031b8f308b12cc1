//! A write transaction: the changes of one request, all at the same new
//! main revision, committed together or undone together.
//!
//! Like etcd's `storeTxnWrite`, changes are applied to the index and the
//! revision store as they are made, numbered `(begin + 1, 0)`,
//! `(begin + 1, 1)`, ...; reads inside the txn see them (they read at
//! `begin + 1` once something changed). `commit` bumps the store revision if
//! anything changed; `rollback` restores every touched key index and removes
//! every written record, leaving the store as it was.

use std::collections::BTreeMap;

use super::error::Error;
use super::key_index::Mark;
use super::key_range::KeyRange;
use super::kv::KeyValue;
use super::requests::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
};
use super::revision::Revision;
use super::revision_store::Record;
use super::store::Store;
use super::view::View;

pub(crate) struct WriteTxn<'s> {
    store: &'s mut Store,
    begin_rev: i64,
    /// Number of changes so far; also the next sub revision.
    changes: i64,
    /// A bookmark of each touched key's index before the txn (`None`:
    /// absent), so rollback costs O(keys touched), not O(their history).
    saved: BTreeMap<Vec<u8>, Option<Mark>>,
    written: Vec<Revision>,
}

impl<'s> WriteTxn<'s> {
    pub(crate) fn new(store: &'s mut Store) -> WriteTxn<'s> {
        let begin_rev = store.current_revision();
        WriteTxn {
            store,
            begin_rev,
            changes: 0,
            saved: BTreeMap::new(),
            written: Vec::new(),
        }
    }

    /// The revision reads inside the txn see: the txn's own once it changed
    /// something. This is also the header revision of the txn so far.
    pub(crate) fn rev(&self) -> i64 {
        if self.changes > 0 {
            self.begin_rev + 1
        } else {
            self.begin_rev
        }
    }

    fn view(&self) -> View<'_> {
        let mut view = self.store.view();
        view.rev = self.rev();
        view
    }

    pub(crate) fn range(&self, req: &RangeRequest) -> Result<RangeResponse, Error> {
        self.view().range(req)
    }

    /// etcd's applier Put inside a write txn.
    pub(crate) fn put(&mut self, req: &PutRequest) -> Result<PutResponse, Error> {
        let needs_prev = req.prev_kv || req.ignore_value || req.ignore_lease;
        let prev = if needs_prev {
            self.view().get(&req.key)?
        } else {
            None
        };
        let (value, lease) = match (&prev, req.ignore_value || req.ignore_lease) {
            (None, true) => return Err(Error::KeyNotFound),
            (Some(p), true) => (
                if req.ignore_value {
                    p.value.clone()
                } else {
                    req.value.clone()
                },
                if req.ignore_lease { p.lease } else { req.lease },
            ),
            (_, false) => (req.value.clone(), req.lease),
        };
        self.write_put(&req.key, value, lease)?;
        Ok(PutResponse {
            prev_kv: if req.prev_kv { prev } else { None },
            revision: self.begin_rev + 1,
        })
    }

    /// etcd's applier DeleteRange inside a write txn.
    pub(crate) fn delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, Error> {
        let range = KeyRange::new(&req.key, &req.range_end);
        let prev_kvs = if req.prev_kv {
            self.view().all_in(range)?
        } else {
            Vec::new()
        };
        let keys = self.store.index.keys(range, self.rev());
        for key in &keys {
            self.write_tombstone(key)?;
        }
        Ok(DeleteRangeResponse {
            deleted: i64::try_from(keys.len()).unwrap_or(i64::MAX),
            prev_kvs,
            revision: self.rev(),
        })
    }

    fn next_revision(&self) -> Revision {
        Revision::new(self.begin_rev + 1, self.changes)
    }

    fn save(&mut self, key: &[u8]) {
        if !self.saved.contains_key(key) {
            let before = self.store.index.mark(key);
            self.saved.insert(key.to_vec(), before);
        }
    }

    fn write_put(&mut self, key: &[u8], value: Vec<u8>, lease: i64) -> Result<(), Error> {
        let rev = self.next_revision();
        // One index lookup for the previous state, the rewind mark and the put.
        let (before, mark) = self.store.index.put(key, rev)?;
        let (create_revision, version) = match before {
            Some(at) => (at.created.main, at.version + 1),
            None => (rev.main, 1),
        };
        if !self.saved.contains_key(key) {
            self.saved.insert(key.to_vec(), mark);
        }
        self.store.records.insert(
            rev,
            Record::Put(KeyValue {
                key: key.to_vec(),
                create_revision,
                mod_revision: rev.main,
                version,
                value,
                lease,
            }),
        );
        self.written.push(rev);
        self.changes += 1;
        Ok(())
    }

    fn write_tombstone(&mut self, key: &[u8]) -> Result<(), Error> {
        let rev = self.next_revision();
        self.save(key);
        self.store.index.tombstone(key, rev)?;
        self.store
            .records
            .insert(rev, Record::Tombstone { key: key.to_vec() });
        self.written.push(rev);
        self.changes += 1;
        Ok(())
    }

    /// Makes the changes visible; returns the header revision (the new
    /// revision if anything changed, else the unchanged current one).
    pub(crate) fn commit(self) -> i64 {
        let rev = self.rev();
        self.store.set_current_revision(rev);
        rev
    }

    /// Undoes every change; the store is as it was before the txn.
    pub(crate) fn rollback(self) {
        for rev in self.written {
            self.store.records.remove(rev);
        }
        for (key, before) in self.saved {
            self.store.index.rewind(key, before);
        }
    }
}
