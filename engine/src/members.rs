//! The cluster's member list in the B-tree file: the `members` and
//! `members_removed` buckets (etcd keeps buckets of the same names in
//! bbolt). Written by the backend checkpoint in the **same B-tree commit** as
//! the key space and the applied index (`mvcc::save`), so a restart sees the
//! member list as of exactly that applied index and replays the membership
//! changes after it from the WAL.
//!
//! The engine only stores the list; what a member is and how it changes is
//! decided above (raftcore's membership module).
//!
//! Byte format (engine/FORMAT.md §3.6), little-endian except the keys, which
//! are big-endian so byte order is ID order:
//!
//! ```text
//! members bucket:         key   = id:u64 BE                      (8 bytes)
//!                         value = version:u8 (=1) | is_learner:u8 | name:bytes
//!                                 | n:u32 | peer_url:bytes * n | m:u32 | client_url:bytes * m
//! members_removed bucket: key   = id:u64 BE, value = 1:u8
//! bytes := len:u32 | len bytes
//! ```
//!
//! Invariant: a checkpoint that carries a member list replaces both buckets
//! whole (the list is small and changes rarely), so the file never mixes two
//! versions of it.

use crate::btree::{BtreeError, Db, WriteTxn};
use crate::mvcc::BackendError;

pub const MEMBERS_BUCKET: &str = "members";
pub const REMOVED_BUCKET: &str = "members_removed";

const VERSION: u8 = 1;

/// One member as persisted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberRecord {
    pub id: u64,
    /// Empty until the member has published itself.
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

/// The whole member list at one applied index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MembersState {
    /// By ID, ascending.
    pub members: Vec<MemberRecord>,
    /// IDs removed from the cluster; never reused.
    pub removed: Vec<u64>,
}

fn put_bytes(v: &mut Vec<u8>, b: &[u8]) {
    v.extend_from_slice(&(b.len() as u32).to_le_bytes());
    v.extend_from_slice(b);
}

fn put_list(v: &mut Vec<u8>, l: &[String]) {
    v.extend_from_slice(&(l.len() as u32).to_le_bytes());
    for s in l {
        put_bytes(v, s.as_bytes());
    }
}

fn encode(m: &MemberRecord) -> Vec<u8> {
    let mut v = vec![VERSION, m.is_learner as u8];
    put_bytes(&mut v, m.name.as_bytes());
    put_list(&mut v, &m.peer_urls);
    put_list(&mut v, &m.client_urls);
    v
}

struct Reader<'a> {
    b: &'a [u8],
    id: u64,
}

impl<'a> Reader<'a> {
    fn bad(&self, what: &str) -> BackendError {
        BackendError::Corrupt(format!("member {:x}: {what}", self.id))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], BackendError> {
        if self.b.len() < n {
            return Err(self.bad("truncated"));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }

    fn u32(&mut self) -> Result<usize, BackendError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a) as usize)
    }

    fn string(&mut self) -> Result<String, BackendError> {
        let n = self.u32()?;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.bad("not UTF-8"))
    }

    fn list(&mut self) -> Result<Vec<String>, BackendError> {
        let n = self.u32()?;
        // Each element takes at least 4 bytes: a corrupt count cannot make
        // us allocate more than the input.
        if n > self.b.len() / 4 {
            return Err(self.bad("list longer than record"));
        }
        (0..n).map(|_| self.string()).collect()
    }
}

fn key_id(k: &[u8]) -> Result<u64, BackendError> {
    let a: [u8; 8] = k
        .try_into()
        .map_err(|_| BackendError::Corrupt(format!("member key of {} bytes", k.len())))?;
    Ok(u64::from_be_bytes(a))
}

fn decode(k: &[u8], v: &[u8]) -> Result<MemberRecord, BackendError> {
    let id = key_id(k)?;
    let mut r = Reader { b: v, id };
    let head = r.take(2)?;
    if head[0] != VERSION {
        return Err(r.bad("unknown version"));
    }
    let is_learner = match head[1] {
        0 => false,
        1 => true,
        _ => return Err(r.bad("is_learner not 0/1")),
    };
    let name = r.string()?;
    let peer_urls = r.list()?;
    let client_urls = r.list()?;
    if !r.b.is_empty() {
        return Err(r.bad("trailing bytes"));
    }
    Ok(MemberRecord {
        id,
        name,
        peer_urls,
        client_urls,
        is_learner,
    })
}

/// Replaces both buckets with `st` (part of the caller's commit).
pub(crate) fn write(tx: &mut WriteTxn<'_>, st: &MembersState) -> Result<(), BtreeError> {
    tx.delete_bucket(MEMBERS_BUCKET)?;
    tx.delete_bucket(REMOVED_BUCKET)?;
    tx.create_bucket(MEMBERS_BUCKET)?;
    tx.create_bucket(REMOVED_BUCKET)?;
    for m in &st.members {
        tx.insert(MEMBERS_BUCKET, &m.id.to_be_bytes(), &encode(m))?;
    }
    for id in &st.removed {
        tx.insert(REMOVED_BUCKET, &id.to_be_bytes(), &[1])?;
    }
    Ok(())
}

/// The member list of the last commit; `None` in a file that never stored
/// one (a fresh file, or one written before member lists were persisted).
pub fn load(db: &Db) -> Result<Option<MembersState>, BackendError> {
    let rd = db.begin_read();
    if !rd.has_bucket(MEMBERS_BUCKET) {
        return Ok(None);
    }
    Ok(Some(MembersState {
        members: crate::mvcc::decode_bucket(&rd, MEMBERS_BUCKET, decode)?,
        removed: crate::mvcc::decode_bucket(&rd, REMOVED_BUCKET, |k, _| key_id(k))?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btree::Options;

    #[test]
    fn member_list_round_trips_and_is_replaced_whole() {
        let d = std::env::temp_dir().join(format!("engine-members-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let db = Db::open(d.join("db"), Options::default()).unwrap();
        assert_eq!(load(&db).unwrap(), None);
        let st = MembersState {
            members: vec![
                MemberRecord {
                    id: 1,
                    name: "m1".into(),
                    peer_urls: vec!["http://a:2380".into(), "http://b:2380".into()],
                    client_urls: vec!["http://a:2379".into()],
                    is_learner: false,
                },
                MemberRecord {
                    id: u64::MAX,
                    peer_urls: vec!["http://c:2380".into()],
                    is_learner: true,
                    ..Default::default()
                },
            ],
            removed: vec![7, 9],
        };
        let mut tx = db.begin_write().unwrap();
        write(&mut tx, &st).unwrap();
        tx.commit().unwrap();
        assert_eq!(load(&db).unwrap(), Some(st));
        let smaller = MembersState {
            members: vec![MemberRecord {
                id: 3,
                ..Default::default()
            }],
            removed: vec![],
        };
        let mut tx = db.begin_write().unwrap();
        write(&mut tx, &smaller).unwrap();
        tx.commit().unwrap();
        assert_eq!(load(&db).unwrap(), Some(smaller));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn corrupt_records_are_errors_not_panics() {
        let good = encode(&MemberRecord {
            id: 5,
            name: "n".into(),
            peer_urls: vec!["http://x:1".into()],
            ..Default::default()
        });
        for cut in 0..good.len() {
            assert!(
                decode(&5u64.to_be_bytes(), &good[..cut]).is_err(),
                "cut {cut}"
            );
        }
        assert!(decode(&5u64.to_be_bytes(), &good).is_ok());
        assert!(decode(&[1, 2], &good).is_err());
        let mut huge = vec![1, 0, 0, 0, 0, 0];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&5u64.to_be_bytes(), &huge).is_err());
    }
}
