//! Alarms (etcd's `alarmStore`): a set of `(member ID, alarm type)` raised
//! through Raft and applied on every member, persisted in the B-tree file's
//! `alarm` bucket in the same commit as the key space and the applied index
//! (`mvcc::save`), so a restart sees the alarms as of the applied index it
//! resumes from and the WAL replays the rest.
//!
//! Byte format (engine/FORMAT.md §3.6):
//!
//! ```text
//! alarm bucket: key   = member_id:u64 BE | alarm:u8     (9 bytes)
//!               value = empty
//! ```
//!
//! `alarm` is etcd's `AlarmType` number (1 NOSPACE, 2 CORRUPT). Invariant:
//! the set never holds alarm type 0 (NONE), which etcd uses only to mean
//! "any" in requests.

use std::collections::BTreeSet;

use crate::btree::{BtreeError, Db, WriteTxn};
use crate::mvcc::BackendError;

pub const ALARM_BUCKET: &str = "alarm";

/// etcd's `AlarmType` (rpc.proto), by number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlarmType {
    /// The backend quota is exhausted: writes that need space are refused.
    Nospace,
    /// Data corruption detected.
    Corrupt,
}

impl AlarmType {
    /// The protobuf enum number.
    pub fn code(self) -> u8 {
        match self {
            AlarmType::Nospace => 1,
            AlarmType::Corrupt => 2,
        }
    }

    /// `None` for 0 (NONE: "any alarm" in requests) and unknown numbers.
    pub fn from_code(c: i64) -> Option<AlarmType> {
        match c {
            1 => Some(AlarmType::Nospace),
            2 => Some(AlarmType::Corrupt),
            _ => None,
        }
    }

    /// The protobuf enum name, as etcd prints it.
    pub fn name(self) -> &'static str {
        match self {
            AlarmType::Nospace => "NOSPACE",
            AlarmType::Corrupt => "CORRUPT",
        }
    }
}

/// One raised alarm (etcd's `AlarmMember`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AlarmMember {
    pub member_id: u64,
    pub alarm: AlarmType,
}

/// The alarms of the cluster, as applied on this member.
#[derive(Debug, Default)]
pub struct Alarms {
    set: BTreeSet<AlarmMember>,
    /// Changed since the last [`Alarms::take_changes`].
    dirty: bool,
}

impl Alarms {
    pub fn from_records(v: Vec<AlarmMember>) -> Alarms {
        Alarms {
            set: v.into_iter().collect(),
            dirty: false,
        }
    }

    /// etcd's `Activate`: adds the alarm; returns it (also when it was
    /// already raised).
    pub fn activate(&mut self, m: AlarmMember) -> AlarmMember {
        if self.set.insert(m) {
            self.dirty = true;
        }
        m
    }

    /// etcd's `Deactivate`: removes the alarm; `None` if it was not raised.
    pub fn deactivate(&mut self, m: AlarmMember) -> Option<AlarmMember> {
        let had = self.set.remove(&m);
        self.dirty |= had;
        had.then_some(m)
    }

    /// etcd's `Get`: the alarms of one type, or all (`None`: NONE).
    pub fn get(&self, alarm: Option<AlarmType>) -> Vec<AlarmMember> {
        self.set
            .iter()
            .filter(|m| alarm.is_none_or(|a| m.alarm == a))
            .copied()
            .collect()
    }

    pub fn is_raised(&self, alarm: AlarmType) -> bool {
        self.set.iter().any(|m| m.alarm == alarm)
    }

    /// The whole set if it changed since the last call (the set is tiny:
    /// a checkpoint rewrites the bucket).
    pub fn take_changes(&mut self) -> Option<Vec<AlarmMember>> {
        std::mem::take(&mut self.dirty).then(|| self.set.iter().copied().collect())
    }
}

fn key(m: &AlarmMember) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[..8].copy_from_slice(&m.member_id.to_be_bytes());
    k[8] = m.alarm.code();
    k
}

fn decode(k: &[u8], v: &[u8]) -> Result<AlarmMember, BackendError> {
    let bad = || BackendError::Corrupt(format!("alarm record {k:02x?}"));
    if k.len() != 9 || !v.is_empty() {
        return Err(bad());
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&k[..8]);
    Ok(AlarmMember {
        member_id: u64::from_be_bytes(id),
        alarm: AlarmType::from_code(i64::from(k[8])).ok_or_else(bad)?,
    })
}

/// Replaces the bucket's contents by `set` (part of the caller's commit).
pub(crate) fn write(tx: &mut WriteTxn<'_>, set: &[AlarmMember]) -> Result<(), BtreeError> {
    tx.delete_bucket(ALARM_BUCKET)?;
    tx.create_bucket(ALARM_BUCKET)?;
    for m in set {
        tx.insert(ALARM_BUCKET, &key(m), &[])?;
    }
    Ok(())
}

/// The alarms of the last commit (none in a file without the bucket).
pub fn load(db: &Db) -> Result<Vec<AlarmMember>, BackendError> {
    crate::mvcc::decode_bucket(&db.begin_read(), ALARM_BUCKET, decode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btree::Options;
    use crate::mvcc::{save, AppliedState, Store};

    #[test]
    fn activate_deactivate_get_follow_etcd() {
        let mut a = Alarms::default();
        let n1 = AlarmMember {
            member_id: 1,
            alarm: AlarmType::Nospace,
        };
        let c2 = AlarmMember {
            member_id: 2,
            alarm: AlarmType::Corrupt,
        };
        assert_eq!(a.activate(n1), n1);
        assert_eq!(a.activate(n1), n1);
        a.activate(c2);
        assert_eq!(a.get(None), vec![n1, c2]);
        assert_eq!(a.get(Some(AlarmType::Corrupt)), vec![c2]);
        assert!(a.is_raised(AlarmType::Nospace));
        assert_eq!(a.take_changes(), Some(vec![n1, c2]));
        assert_eq!(a.take_changes(), None);
        assert_eq!(a.deactivate(n1), Some(n1));
        assert_eq!(a.deactivate(n1), None);
        assert!(!a.is_raised(AlarmType::Nospace));
        assert_eq!(a.take_changes(), Some(vec![c2]));
    }

    #[test]
    fn alarms_persist_with_the_checkpoint_and_bad_records_are_errors() {
        let dir = std::env::temp_dir().join(format!("alarm-backend-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = Db::open(dir.join("db"), Options::default()).unwrap();
        assert!(load(&db).unwrap().is_empty());
        let mut a = Alarms::default();
        let m = AlarmMember {
            member_id: 0xdead_beef,
            alarm: AlarmType::Nospace,
        };
        a.activate(m);
        let mut store = Store::new();
        let mut cp = store.take_checkpoint();
        cp.set_alarms(a.take_changes());
        save(&db, &cp, AppliedState { index: 3, term: 1 }).unwrap();
        drop(db);
        let db = Db::open(dir.join("db"), Options::default()).unwrap();
        assert_eq!(load(&db).unwrap(), vec![m]);
        // A checkpoint without alarm changes keeps them; a cleared set
        // empties the bucket.
        let cp = store.take_checkpoint();
        save(&db, &cp, AppliedState { index: 4, term: 1 }).unwrap();
        assert_eq!(load(&db).unwrap(), vec![m]);
        a.deactivate(m);
        let mut cp = store.take_checkpoint();
        cp.set_alarms(a.take_changes());
        save(&db, &cp, AppliedState { index: 5, term: 1 }).unwrap();
        assert!(load(&db).unwrap().is_empty());
        assert!(decode(&[0; 9], &[]).is_err(), "type 0 is not an alarm");
        assert!(decode(&[0; 8], &[]).is_err());
        assert!(decode(&key(&m), &[1]).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
