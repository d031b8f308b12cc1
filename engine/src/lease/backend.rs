//! Leases in the B-tree file: the `lease` bucket (etcd keeps the same bucket
//! in bbolt). Written by the backend checkpoint in the **same B-tree commit**
//! as the key space and the applied index (`mvcc::save`), so a restart sees
//! leases and keys as of one applied index: a revoke's deleted keys and its
//! removed lease are durable together or not at all.
//!
//! Byte format (engine/FORMAT.md §3.5), little-endian except the key, which
//! is big-endian like etcd's `int64ToBytes`:
//!
//! ```text
//! lease bucket: key   = id:u64 BE                          (8 bytes)
//!               value = ttl:i64 | remaining_ttl:i64        (16 bytes)
//! ```
//!
//! Only the replicated state is stored. Deadlines are not (a new primary
//! derives them from `remaining_ttl`, or `ttl` when it is 0), and neither are
//! the attached keys (rebuilt from each key's `lease` field).

use super::LeaseId;
use crate::btree::{BtreeError, Db, WriteTxn};
use crate::mvcc::BackendError;

pub const LEASE_BUCKET: &str = "lease";

const VALUE_LEN: usize = 8 + 8;

/// One persisted lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    pub id: LeaseId,
    /// Granted TTL in seconds.
    pub ttl: i64,
    /// Last checkpointed remaining TTL in seconds; 0 = none.
    pub remaining_ttl: i64,
}

/// Leases written (`Some`) or removed (`None`) since the last checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseChanges(Vec<(LeaseId, Option<LeaseRecord>)>);

impl LeaseChanges {
    pub(crate) fn new(v: Vec<(LeaseId, Option<LeaseRecord>)>) -> LeaseChanges {
        LeaseChanges(v)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn key(id: LeaseId) -> [u8; 8] {
    (id.0 as u64).to_be_bytes()
}

fn encode(r: &LeaseRecord) -> [u8; VALUE_LEN] {
    let mut v = [0u8; VALUE_LEN];
    // offset 0: ttl:i64
    v[..8].copy_from_slice(&r.ttl.to_le_bytes());
    // offset 8 = 0 + size_of::<i64>(): remaining_ttl:i64
    v[8..].copy_from_slice(&r.remaining_ttl.to_le_bytes());
    v
}

fn decode(k: &[u8], v: &[u8]) -> Result<LeaseRecord, BackendError> {
    let k: [u8; 8] = k
        .try_into()
        .map_err(|_| BackendError::Corrupt(format!("lease key of {} bytes", k.len())))?;
    let id = LeaseId(u64::from_be_bytes(k) as i64);
    if v.len() != VALUE_LEN {
        return Err(BackendError::Corrupt(format!(
            "lease {id}: value of {} bytes",
            v.len()
        )));
    }
    let mut a = [0u8; 8];
    a.copy_from_slice(&v[..8]);
    let ttl = i64::from_le_bytes(a);
    a.copy_from_slice(&v[8..]);
    Ok(LeaseRecord {
        id,
        ttl,
        remaining_ttl: i64::from_le_bytes(a),
    })
}

/// Writes `ch` into `tx` (part of the caller's commit).
pub(crate) fn write(tx: &mut WriteTxn<'_>, ch: &LeaseChanges) -> Result<(), BtreeError> {
    tx.create_bucket(LEASE_BUCKET)?;
    for (id, rec) in &ch.0 {
        match rec {
            Some(r) => tx.insert(LEASE_BUCKET, &key(*id), &encode(r))?,
            None => {
                tx.remove(LEASE_BUCKET, &key(*id))?;
            }
        }
    }
    Ok(())
}

/// Every lease of the last commit, by ID (none in a file without the
/// bucket).
pub fn load(db: &Db) -> Result<Vec<LeaseRecord>, BackendError> {
    crate::mvcc::decode_bucket(&db.begin_read(), LEASE_BUCKET, decode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_lease_records_are_errors_not_panics() {
        assert!(decode(&[0; 7], &[0; 16]).is_err());
        assert!(decode(&[0; 8], &[0; 15]).is_err());
        assert!(decode(&[0; 8], &[0; 17]).is_err());
        let r = LeaseRecord {
            id: LeaseId(-5),
            ttl: 60,
            remaining_ttl: 17,
        };
        assert_eq!(decode(&key(r.id), &encode(&r)).unwrap(), r);
    }
}
