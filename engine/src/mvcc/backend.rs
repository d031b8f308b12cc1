//! The MVCC key space in the B-tree file (`engine::btree`), as etcd keeps it
//! in bbolt: the `key` bucket maps revisions to records, the `meta` bucket
//! holds the applied Raft index and the store's revisions.
//!
//! A checkpoint writes every record inserted or removed since the previous
//! one plus the meta values **in one B-tree commit**, so the applied index
//! on disk always matches the data on disk (the etcd 3.5.0–3.5.2 bug
//! etcd#13766 was these two drifting apart). Recovery opens the last commit,
//! rebuilds the key index from the records (without keeping their values:
//! the store reads them from a snapshot of the file, module
//! `revision_store`), and replays the WAL after `consistent_index`.
//!
//! After [`save`] returns, the caller hands the store a snapshot taken
//! after that commit ([`Store::checkpoint_committed`]); the store then drops
//! from memory the records the checkpoint wrote and reads them from the file.
//!
//! Byte formats (engine/FORMAT.md, "MVCC in the B-tree"), little-endian
//! except the revision key, which is big-endian so that byte order is
//! revision order:
//!
//! ```text
//! key bucket:   key   = main:u64 BE | '_' | sub:u64 BE                      (17 bytes)
//!               value = 1:u8 | create:i64 | version:i64 | lease:i64 | key_len:u32 | key | value   (put)
//!                     | 2:u8 | key                                          (tombstone)
//! meta bucket:  "consistent_index" -> u64, "term" -> u64,
//!               "current_rev" -> i64, "compact_rev" -> i64 (-1: never compacted)
//! lease bucket: written by engine::lease (its backend module) in the same commit
//! members, members_removed buckets: written by engine::members in the same commit
//! alarm bucket: written by engine::alarm in the same commit
//! ```

use super::kv::KeyValue;
use super::revision::Revision;
use super::revision_store::{Change, Record, RevisionStore, Ticket};
use super::store::Store;
use crate::btree::{BtreeError, Db, ReadTxn};

pub const KEY_BUCKET: &str = "key";
pub const META_BUCKET: &str = "meta";

/// What the B-tree says about Raft: the last applied entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppliedState {
    pub index: u64,
    pub term: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Btree(#[from] BtreeError),
    #[error("backend corrupt: {0}")]
    Corrupt(String),
}

/// The changes a checkpoint writes: taken from the store under its lock,
/// written to the B-tree without it.
#[derive(Debug, Default)]
pub struct Checkpoint {
    /// Records are shared with the store (which keeps them readable until
    /// the commit is installed), not copied.
    changes: Vec<Change>,
    ticket: Ticket,
    current_rev: i64,
    compact_rev: i64,
    /// The lessor's changes as of the same applied index (engine::lease),
    /// written in the same commit.
    leases: crate::lease::LeaseChanges,
    /// The member list, when it changed since the last checkpoint
    /// (engine::members), written in the same commit.
    members: Option<crate::members::MembersState>,
    /// The whole alarm set if it changed (engine::alarm), same commit.
    alarms: Option<Vec<crate::alarm::AlarmMember>>,
}

impl Checkpoint {
    /// Adds the alarm set as of the same applied index, if it changed.
    pub fn set_alarms(&mut self, alarms: Option<Vec<crate::alarm::AlarmMember>>) {
        self.alarms = alarms;
    }

    /// Adds the lessor's changes taken at the same applied index, so that
    /// keys and leases become durable together.
    pub fn set_leases(&mut self, leases: crate::lease::LeaseChanges) {
        self.leases = leases;
    }

    /// Adds the member list as of the same applied index (only when it
    /// changed: the buckets are rewritten whole).
    pub fn set_members(&mut self, members: Option<crate::members::MembersState>) {
        self.members = members;
    }

    /// Records written or removed by this checkpoint.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

impl Store {
    /// Takes the changes made since the last call.
    pub fn take_checkpoint(&mut self) -> Checkpoint {
        let (ticket, changes) = self.records.take_dirty();
        Checkpoint {
            changes,
            ticket,
            current_rev: self.current_revision(),
            compact_rev: self.raw_compact_revision(),
            leases: Default::default(),
            members: None,
            alarms: None,
        }
    }
}

impl Store {
    /// `cp` (taken from this store) is committed, and `snapshot` was taken
    /// from the same file after that commit: the store reads from it from
    /// now on and drops from memory every record `cp` wrote that was not
    /// changed again since. Returns how many records it dropped. A
    /// checkpoint of another store (e.g. the one a Raft snapshot replaced),
    /// or older than one already installed, changes nothing.
    pub fn checkpoint_committed(&mut self, cp: &Checkpoint, snapshot: ReadTxn) -> usize {
        self.records.committed(cp.ticket, snapshot)
    }

    /// Reads from `snapshot` from now on. It must hold every checkpoint
    /// committed so far, e.g. a snapshot of the file an online defrag
    /// (`Db::defrag_online`) rewrote, so the old file can be let go.
    pub fn use_snapshot(&mut self, snapshot: ReadTxn) {
        self.records.use_snapshot(snapshot);
    }

    /// Number of records held in memory rather than read from the file:
    /// those written since the last checkpoint installed with
    /// [`checkpoint_committed`](Store::checkpoint_committed).
    pub fn records_in_memory(&self) -> usize {
        self.records.in_memory()
    }
}

pub(super) fn rev_key(r: Revision) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[..8].copy_from_slice(&(r.main as u64).to_be_bytes());
    k[8] = b'_';
    k[9..].copy_from_slice(&(r.sub as u64).to_be_bytes());
    k
}

pub(super) fn parse_rev_key(k: &[u8]) -> Result<Revision, BackendError> {
    if k.len() != 17 || k[8] != b'_' {
        return Err(BackendError::Corrupt(format!(
            "revision key of {} bytes",
            k.len()
        )));
    }
    let mut a = [0u8; 8];
    a.copy_from_slice(&k[..8]);
    let main = u64::from_be_bytes(a) as i64;
    a.copy_from_slice(&k[9..]);
    Ok(Revision::new(main, u64::from_be_bytes(a) as i64))
}

/// Encodes `rec` into `buf` (cleared first), as stored in the key bucket.
pub(super) fn encode_record(rec: &Record, buf: &mut Vec<u8>) {
    buf.clear();
    match rec {
        Record::Put(kv) => {
            buf.reserve(29 + kv.key.len() + kv.value.len());
            buf.push(1);
            buf.extend_from_slice(&kv.create_revision.to_le_bytes());
            buf.extend_from_slice(&kv.version.to_le_bytes());
            buf.extend_from_slice(&kv.lease.to_le_bytes());
            buf.extend_from_slice(&(kv.key.len() as u32).to_le_bytes());
            buf.extend_from_slice(&kv.key);
            buf.extend_from_slice(&kv.value);
        }
        Record::Tombstone { key } => {
            buf.reserve(1 + key.len());
            buf.push(2);
            buf.extend_from_slice(key);
        }
    }
}

/// A stored record, borrowed from its bytes.
enum Parsed<'b> {
    Put {
        create: i64,
        version: i64,
        lease: i64,
        key: &'b [u8],
        value: &'b [u8],
    },
    Tombstone {
        key: &'b [u8],
    },
}

fn parse_record(rev: Revision, b: &[u8]) -> Result<Parsed<'_>, BackendError> {
    let bad =
        |what: &str| BackendError::Corrupt(format!("record {}/{}: {what}", rev.main, rev.sub));
    let (&kind, rest) = b.split_first().ok_or_else(|| bad("empty"))?;
    match kind {
        1 => {
            if rest.len() < 28 {
                return Err(bad("short put"));
            }
            let i64_at = |o: usize| {
                let mut a = [0u8; 8];
                a.copy_from_slice(&rest[o..o + 8]);
                i64::from_le_bytes(a)
            };
            let mut l = [0u8; 4];
            l.copy_from_slice(&rest[24..28]);
            let klen = u32::from_le_bytes(l) as usize;
            let body = &rest[28..];
            if body.len() < klen {
                return Err(bad("key longer than record"));
            }
            Ok(Parsed::Put {
                create: i64_at(0),
                version: i64_at(8),
                lease: i64_at(16),
                key: &body[..klen],
                value: &body[klen..],
            })
        }
        2 => Ok(Parsed::Tombstone { key: rest }),
        _ => Err(bad("unknown kind")),
    }
}

pub(super) fn decode_record(rev: Revision, b: &[u8]) -> Result<Record, BackendError> {
    Ok(match parse_record(rev, b)? {
        Parsed::Put {
            create,
            version,
            lease,
            key,
            value,
        } => Record::Put(KeyValue {
            key: key.to_vec(),
            create_revision: create,
            mod_revision: rev.main,
            version,
            value: value.to_vec(),
            lease,
        }),
        Parsed::Tombstone { key } => Record::Tombstone { key: key.to_vec() },
    })
}

impl Store {
    /// etcd's HashKV: a CRC-32 over every record (revision key and encoded
    /// record, as stored in the B-tree) with main revision <= `revision`
    /// (the current one when <= 0), except a tombstone at exactly the
    /// compaction revision: compaction keeps that one now, older ferrocd
    /// (like etcd < 3.5.15) dropped it, and etcd's hasher skips it so that
    /// both hash the same (etcd#18274). Members that applied the same history
    /// hash the same, whatever their checkpoints and restarts. Returns
    /// `(hash, compact revision, hashed revision)`.
    pub fn hash_kv(&self, revision: i64) -> Result<(u32, i64, i64), super::Error> {
        let cur = self.current_revision();
        let rev = if revision <= 0 { cur } else { revision };
        if rev > cur {
            return Err(super::Error::FutureRevision);
        }
        if rev < self.compact_revision() {
            return Err(super::Error::Compacted);
        }
        let mut h = crc32fast::Hasher::new();
        let mut buf = Vec::new();
        for item in self.records.since(Revision::new(0, 0)) {
            let (r, rec) = item?;
            if r.main > rev {
                break;
            }
            if r.main == self.raw_compact_revision() && matches!(&*rec, Record::Tombstone { .. }) {
                continue;
            }
            h.update(&rev_key(r));
            encode_record(&rec, &mut buf);
            h.update(&buf);
        }
        Ok((h.finalize(), self.compact_revision(), rev))
    }
}

fn meta_u64(db_val: Option<Vec<u8>>, name: &str) -> Result<Option<u64>, BackendError> {
    match db_val {
        None => Ok(None),
        Some(v) if v.len() == 8 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(&v);
            Ok(Some(u64::from_le_bytes(a)))
        }
        Some(v) => Err(BackendError::Corrupt(format!(
            "meta {name} of {} bytes",
            v.len()
        ))),
    }
}

/// Writes `cp` and the applied state in one atomic B-tree commit.
pub fn save(db: &Db, cp: &Checkpoint, applied: AppliedState) -> Result<(), BackendError> {
    let mut tx = db.begin_write()?;
    tx.create_bucket(KEY_BUCKET)?;
    tx.create_bucket(META_BUCKET)?;
    // One buffer for every record: the B-tree copies what it keeps.
    let mut buf = Vec::new();
    for (rev, rec) in &cp.changes {
        let k = rev_key(*rev);
        match rec {
            Some(r) => {
                encode_record(r, &mut buf);
                tx.insert(KEY_BUCKET, &k, &buf)?
            }
            None => {
                tx.remove(KEY_BUCKET, &k)?;
            }
        }
    }
    tx.insert(
        META_BUCKET,
        b"consistent_index",
        &applied.index.to_le_bytes(),
    )?;
    tx.insert(META_BUCKET, b"term", &applied.term.to_le_bytes())?;
    tx.insert(META_BUCKET, b"current_rev", &cp.current_rev.to_le_bytes())?;
    tx.insert(META_BUCKET, b"compact_rev", &cp.compact_rev.to_le_bytes())?;
    crate::lease::write_changes(&mut tx, &cp.leases)?;
    if let Some(m) = &cp.members {
        crate::members::write(&mut tx, m)?;
    }
    if let Some(alarms) = &cp.alarms {
        crate::alarm::write(&mut tx, alarms)?;
    }
    tx.commit()?;
    Ok(())
}

/// Every record of `bucket` in the snapshot, decoded in key order; none
/// when the file has no such bucket (written before it existed).
pub(crate) fn decode_bucket<T>(
    rd: &ReadTxn,
    bucket: &str,
    decode: impl Fn(&[u8], &[u8]) -> Result<T, BackendError>,
) -> Result<Vec<T>, BackendError> {
    if !rd.has_bucket(bucket) {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for item in rd.range(bucket, ..)? {
        let (k, v) = item?;
        out.push(decode(&k, &v)?);
    }
    Ok(out)
}

/// A value of the meta bucket as of the last commit (e.g. the applied
/// index of a snapshot image, without rebuilding its key space).
pub fn load_meta(db: &Db, key: &str) -> Result<Option<Vec<u8>>, BackendError> {
    let rd = db.begin_read();
    if !rd.has_bucket(META_BUCKET) {
        return Ok(None);
    }
    Ok(rd.get(META_BUCKET, key.as_bytes())?)
}

/// Rebuilds the store from the last commit: the key index from the key
/// bucket's records (their values are not kept: the store reads them from a
/// snapshot of this commit). A file without our buckets is a fresh store at
/// applied index 0.
pub fn load(db: &Db) -> Result<(Store, AppliedState), BackendError> {
    let rd = db.begin_read();
    if !rd.has_bucket(META_BUCKET) {
        return Ok((Store::new(), AppliedState::default()));
    }
    let index = meta_u64(
        rd.get(META_BUCKET, b"consistent_index")?,
        "consistent_index",
    )?
    .unwrap_or(0);
    let term = meta_u64(rd.get(META_BUCKET, b"term")?, "term")?.unwrap_or(0);
    let current =
        meta_u64(rd.get(META_BUCKET, b"current_rev")?, "current_rev")?.map_or(1, |v| v as i64);
    let compact =
        meta_u64(rd.get(META_BUCKET, b"compact_rev")?, "compact_rev")?.map_or(-1, |v| v as i64);
    let mut index_of = super::index::TreeIndex::default();
    if rd.has_bucket(KEY_BUCKET) {
        let corrupt = |e| BackendError::Corrupt(format!("rebuilding the key index: {e}"));
        for item in rd.range(KEY_BUCKET, ..)? {
            let (k, v) = item?;
            let rev = parse_rev_key(&k)?;
            match parse_record(rev, &v)? {
                Parsed::Put {
                    create,
                    version,
                    key,
                    ..
                } => index_of
                    .restore_put(key, rev, create, version)
                    .map_err(corrupt)?,
                Parsed::Tombstone { key } => {
                    index_of.restore_tombstone(key, rev).map_err(corrupt)?
                }
            }
        }
    }
    let store = Store::restore(index_of, RevisionStore::from_file(rd), current, compact);
    Ok((store, AppliedState { index, term }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btree::Options;
    use crate::mvcc::{DeleteRangeRequest, PutRequest, RangeRequest};

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("mvcc-backend-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d.join("db")
    }

    fn all(s: &Store, rev: i64) -> Vec<KeyValue> {
        s.range(&RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision: rev,
            ..Default::default()
        })
        .unwrap()
        .kvs
    }

    /// Random writes, deletes and compactions, checkpointed at random
    /// points: the store rebuilt from the file answers every readable
    /// revision exactly like the live one.
    #[test]
    fn store_rebuilt_from_checkpoints_equals_the_live_store() {
        let path = tmp("model");
        let db = Db::open(&path, Options::default()).unwrap();
        let mut s = Store::new();
        let mut seed = 0x2545F4914F6CDD1Du64;
        let mut rnd = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut applied = 0;
        // The store rebuilt at the last checkpoint, then fed the same writes
        // as the live one: a wrong rebuilt index shows in later writes too.
        let mut rebuilt: Option<Store> = None;
        for step in 0..600 {
            let k = format!("k{}", rnd(12)).into_bytes();
            let op = rnd(10);
            let (lease, wide, c) = (rnd(3) as i64, rnd(3) == 0, rnd(4) as i64);
            for st in std::iter::once(&mut s).chain(rebuilt.as_mut()) {
                match op {
                    0..=5 => {
                        st.put(&PutRequest {
                            key: k.clone(),
                            value: format!("v{step}").into_bytes(),
                            lease,
                            ..Default::default()
                        })
                        .unwrap();
                    }
                    6 | 7 => {
                        let _ = st.delete_range(&DeleteRangeRequest {
                            key: k.clone(),
                            range_end: if wide { b"k5".to_vec() } else { vec![] },
                            prev_kv: false,
                        });
                    }
                    8 => {
                        let target = st.compact_revision() + 1 + c;
                        let _ = st.compact(target.min(st.current_revision()));
                    }
                    _ => {}
                }
            }
            if let Some(r) = &rebuilt {
                assert_eq!(
                    all(r, 0),
                    all(&s, 0),
                    "rebuilt store diverged at step {step}"
                );
            }
            if rnd(7) == 0 || step == 599 {
                applied += 1;
                let cp = s.take_checkpoint();
                save(
                    &db,
                    &cp,
                    AppliedState {
                        index: applied,
                        term: 2,
                    },
                )
                .unwrap();
                let (r, st) = load(&db).unwrap();
                assert_eq!(
                    st,
                    AppliedState {
                        index: applied,
                        term: 2
                    }
                );
                assert_eq!(r.current_revision(), s.current_revision());
                assert_eq!(r.compact_revision(), s.compact_revision());
                for rev in s.compact_revision().max(1)..=s.current_revision() {
                    assert_eq!(all(&r, rev), all(&s, rev), "at revision {rev}, step {step}");
                }
                rebuilt = Some(r);
            }
        }
        drop(db);
        // And across a reopen of the file.
        let db = Db::open(&path, Options::default()).unwrap();
        let (r, _) = load(&db).unwrap();
        assert_eq!(all(&r, 0), all(&s, 0));
    }

    fn put(s: &mut Store, k: &str, v: &str) {
        s.put(&PutRequest {
            key: k.as_bytes().to_vec(),
            value: v.as_bytes().to_vec(),
            ..Default::default()
        })
        .unwrap();
    }

    /// What a reader can observe: every readable revision, the history and
    /// the hash.
    type Observed = (Vec<Vec<KeyValue>>, Vec<crate::mvcc::Event>, (u32, i64, i64));

    fn observe(s: &Store) -> Observed {
        let revs = (s.compact_revision().max(1)..=s.current_revision())
            .map(|r| all(s, r))
            .collect();
        let events = s
            .events_since(s.compact_revision().max(1), &[0], &[0])
            .unwrap();
        (revs, events, s.hash_kv(0).unwrap())
    }

    /// After a committed checkpoint the store holds none of its records in
    /// memory and reads them back from the file; a later compaction and
    /// online defrag keep it that way.
    #[test]
    fn committed_records_are_evicted_and_read_from_the_file() {
        let path = tmp("evict");
        let db = Db::open(&path, Options::default()).unwrap();
        let (mut s, _) = load(&db).unwrap();
        for i in 0..200 {
            put(&mut s, &format!("k{:03}", i % 50), &format!("v{i}"));
        }
        s.delete_range(&DeleteRangeRequest {
            key: b"k000".to_vec(),
            range_end: b"k010".to_vec(),
            prev_kv: false,
        })
        .unwrap();
        assert_eq!(s.records_in_memory(), 210);
        let before = observe(&s);
        let cp = s.take_checkpoint();
        // Written after the checkpoint was taken: stays in memory.
        put(&mut s, "late", "x");
        save(&db, &cp, AppliedState { index: 1, term: 1 }).unwrap();
        assert_eq!(s.checkpoint_committed(&cp, db.begin_read()), 210);
        assert_eq!(s.records_in_memory(), 1);
        // Installing the same checkpoint again changes nothing.
        assert_eq!(s.checkpoint_committed(&cp, db.begin_read()), 0);
        let after = observe(&s);
        assert_eq!(after.0[..before.0.len()], before.0[..]);
        assert_eq!(after.1[..before.1.len()], before.1[..]);
        assert_eq!(all(&s, 0).len(), 41);

        // Compaction removes records from the file too; until the
        // removal is committed the file's copies stay hidden.
        s.compact(150).unwrap();
        let compacted = observe(&s);
        let cp = s.take_checkpoint();
        // Revisions 2..=150 held 149 puts to 50 keys; 99 of them are
        // garbage, all in the file only. Plus "late", still unwritten.
        assert_eq!(cp.len(), 99 + 1);
        save(&db, &cp, AppliedState { index: 2, term: 1 }).unwrap();
        s.checkpoint_committed(&cp, db.begin_read());
        assert_eq!(s.records_in_memory(), 0);
        assert_eq!(observe(&s), compacted);

        // Online defrag: the store moves to the new file, old one gone.
        db.defrag_online().unwrap();
        s.use_snapshot(db.begin_read());
        assert_eq!(observe(&s), compacted);
        put(&mut s, "k001", "again");
        let cp = s.take_checkpoint();
        save(&db, &cp, AppliedState { index: 3, term: 1 }).unwrap();
        s.checkpoint_committed(&cp, db.begin_read());
        assert_eq!(s.records_in_memory(), 0);
        let last = observe(&s);
        drop(s);
        // A restart rebuilds only the index and reads the same.
        let (r, _) = load(&db).unwrap();
        assert_eq!(r.records_in_memory(), 0);
        assert_eq!(observe(&r), last);
    }

    /// A checkpoint taken from another store (e.g. the one a Raft snapshot
    /// replaced) evicts nothing.
    #[test]
    fn a_checkpoint_of_another_store_evicts_nothing() {
        let path = tmp("other");
        let db = Db::open(&path, Options::default()).unwrap();
        let mut a = Store::new();
        let mut b = Store::new();
        put(&mut a, "k", "a");
        put(&mut b, "k", "b");
        let cp = a.take_checkpoint();
        save(&db, &cp, AppliedState { index: 1, term: 1 }).unwrap();
        assert_eq!(b.checkpoint_committed(&cp, db.begin_read()), 0);
        assert_eq!(all(&b, 0)[0].value, b"b");
        assert_eq!(a.checkpoint_committed(&cp, db.begin_read()), 1);
        assert_eq!(all(&a, 0)[0].value, b"a");
    }

    #[test]
    fn hash_kv_tells_histories_apart_and_respects_revisions() {
        let mut a = Store::new();
        let mut b = Store::new();
        for s in [&mut a, &mut b] {
            s.put(&PutRequest {
                key: b"k".to_vec(),
                value: b"1".to_vec(),
                ..Default::default()
            })
            .unwrap();
        }
        assert_eq!(a.hash_kv(0).unwrap(), b.hash_kv(0).unwrap());
        b.put(&PutRequest {
            key: b"k".to_vec(),
            value: b"2".to_vec(),
            ..Default::default()
        })
        .unwrap();
        assert_ne!(a.hash_kv(0).unwrap().0, b.hash_kv(0).unwrap().0);
        // At the common revision the histories agree.
        assert_eq!(a.hash_kv(2).unwrap().0, b.hash_kv(2).unwrap().0);
        assert!(matches!(
            a.hash_kv(9),
            Err(crate::mvcc::Error::FutureRevision)
        ));
        b.compact(3).unwrap();
        assert!(matches!(b.hash_kv(2), Err(crate::mvcc::Error::Compacted)));
    }

    fn key_indexes(s: &Store) -> Vec<(Vec<u8>, crate::mvcc::key_index::KeyIndex)> {
        s.index
            .iter()
            .map(|(k, ki)| (k.to_vec(), ki.clone()))
            .collect()
    }

    fn records(s: &Store) -> Vec<(Revision, Record)> {
        s.records
            .since(Revision::new(0, 0))
            .map(|item| {
                let (r, rec) = item.unwrap();
                (r, rec.into_owned())
            })
            .collect()
    }

    fn checkpoint(db: &Db, s: &mut Store, index: u64) -> Store {
        let cp = s.take_checkpoint();
        save(db, &cp, AppliedState { index, term: 1 }).unwrap();
        let (r, _) = load(db).unwrap();
        r.assert_invariants();
        r
    }

    /// etcd#19188: after a compaction at a revision that deleted a key, the
    /// tombstone is the key's only record in the file; a restart rebuilds
    /// the same key index from it (watch from the compaction revision still
    /// sees the delete), and a later compaction removes it from the file.
    #[test]
    fn a_tombstone_kept_by_compaction_survives_a_restart() {
        let path = tmp("tombstone");
        let db = Db::open(&path, Options::default()).unwrap();
        let mut s = Store::new();
        let put = |s: &mut Store, k: &str| {
            s.put(&PutRequest {
                key: k.into(),
                value: b"v".to_vec(),
                ..Default::default()
            })
            .unwrap();
        };
        put(&mut s, "a"); // 2
        put(&mut s, "a"); // 3
        put(&mut s, "b"); // 4
        s.delete_range(&DeleteRangeRequest {
            key: b"a".to_vec(),
            ..Default::default()
        })
        .unwrap(); // 5
        put(&mut s, "b"); // 6
        checkpoint(&db, &mut s, 1);
        s.compact(5).unwrap();
        let r = checkpoint(&db, &mut s, 2);
        drop(db);
        let db = Db::open(&path, Options::default()).unwrap();
        let (mut r2, _) = load(&db).unwrap();
        for restarted in [&r, &r2] {
            assert_eq!(key_indexes(restarted), key_indexes(&s));
            assert_eq!(records(restarted), records(&s));
            let events = restarted.events_since(5, b"a", b"").unwrap();
            assert_eq!(events.len(), 1);
            assert_eq!(events[0].kind, crate::mvcc::EventKind::Delete);
            assert_eq!(events[0].kv.mod_revision, 5);
            assert_eq!(restarted.hash_kv(0).unwrap(), s.hash_kv(0).unwrap());
        }
        assert!(records(&r2).iter().any(
            |(rev, rec)| *rev == Revision::new(5, 0) && matches!(rec, Record::Tombstone { .. })
        ));
        // The key comes back on the restarted store as on the live one; a
        // later compaction passes the tombstone and deletes it from the file.
        for st in [&mut s, &mut r2] {
            put(st, "a"); // 7
            st.compact(6).unwrap();
            st.assert_invariants();
        }
        let r3 = checkpoint(&db, &mut s, 3);
        assert_eq!(key_indexes(&r3), key_indexes(&r2));
        assert_eq!(records(&r3), records(&s));
        assert!(records(&r3).iter().all(|(rev, _)| rev.main != 5));
        assert_eq!(all(&r3, 6), all(&s, 6));
    }

    /// Hashing skips a tombstone at exactly the compaction revision (as
    /// etcd's hasher does, etcd#18274): a member that kept it hashes like
    /// one that compacted before ferrocd kept it.
    #[test]
    fn hash_kv_skips_the_tombstone_at_the_compaction_revision() {
        let mut s = Store::new();
        for k in ["a", "b"] {
            s.put(&PutRequest {
                key: k.into(),
                value: b"v".to_vec(),
                ..Default::default()
            })
            .unwrap();
        }
        s.delete_range(&DeleteRangeRequest {
            key: b"a".to_vec(),
            ..Default::default()
        })
        .unwrap(); // 4
        let uncompacted = s.hash_kv(0).unwrap().0;
        s.compact(4).unwrap();
        assert!(s.records.get(Revision::new(4, 0)).unwrap().is_some());
        let kept = s.hash_kv(0).unwrap();
        let mut dropped = s.clone();
        dropped.records.remove(Revision::new(4, 0));
        assert_eq!(kept, dropped.hash_kv(0).unwrap());
        assert_eq!(kept, (kept.0, 4, 4));
        // It is a change of the hashed history, not an empty hash.
        assert_ne!(kept.0, uncompacted);
    }

    #[test]
    fn corrupt_records_are_errors_not_panics() {
        let rev = Revision::new(5, 0);
        for bad in [&[][..], &[1, 2, 3], &[9], &[1; 20]] {
            assert!(decode_record(rev, bad).is_err());
        }
        assert!(parse_rev_key(b"short").is_err());
    }
}
