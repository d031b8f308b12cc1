//! The Raft log on `engine::wal`: how raft-rs entries and hard state become
//! WAL records, the WAL's metadata record, and the records a new member's
//! log starts with.
//!
//! A WAL entry's data is `entry_type: u8 | raft data` (engine/FORMAT.md,
//! "Raft entry in the WAL"): the WAL knows indexes and terms, not Raft's
//! entry types.

use engine::wal::{self, Record, Wal};
use raft::eraftpb::{ConfChange, ConfChangeType, Entry, EntryType, HardState};

use crate::log_store::{LogError, LogStore};
use crate::proposal::DecodeError;

/// What every WAL segment starts with: who this member is. Restarting from
/// a data dir takes the IDs from here, not from the `--initial-*` flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalMetadata {
    pub cluster_id: u64,
    pub member_id: u64,
}

const META_VERSION: u8 = 1;

impl WalMetadata {
    /// `version:u8 (=1) | cluster_id:u64 | member_id:u64`, little-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(17);
        v.push(META_VERSION);
        v.extend_from_slice(&self.cluster_id.to_le_bytes());
        v.extend_from_slice(&self.member_id.to_le_bytes());
        v
    }

    pub fn decode(b: &[u8]) -> Result<WalMetadata, DecodeError> {
        if b.len() != 17 || b[0] != META_VERSION {
            return Err(DecodeError("wal metadata"));
        }
        let mut c = [0u8; 8];
        let mut m = [0u8; 8];
        c.copy_from_slice(&b[1..9]);
        m.copy_from_slice(&b[9..17]);
        Ok(WalMetadata {
            cluster_id: u64::from_le_bytes(c),
            member_id: u64::from_le_bytes(m),
        })
    }
}

/// The Raft log read back from the WAL, ready for `Node::restart`.
#[derive(Clone, Debug, Default)]
pub struct RecoveredLog {
    pub hard_state: HardState,
    /// The WAL's last checkpoint `(index, term)`: entries up to it are gone
    /// from the WAL; `entries` follow it.
    pub snapshot: Option<(u64, u64)>,
    pub entries: Vec<Entry>,
}

fn entry_type_byte(t: EntryType) -> u8 {
    match t {
        EntryType::EntryNormal => 0,
        EntryType::EntryConfChange => 1,
        EntryType::EntryConfChangeV2 => 2,
    }
}

fn to_wal_entry(e: &Entry) -> wal::Entry {
    let mut data = Vec::with_capacity(1 + e.data.len());
    data.push(entry_type_byte(e.get_entry_type()));
    data.extend_from_slice(&e.data);
    wal::Entry {
        index: e.index,
        term: e.term,
        data: data.into(),
    }
}

fn from_wal_entry(e: &wal::Entry) -> Result<Entry, DecodeError> {
    let (&t, data) = e.data.split_first().ok_or(DecodeError("empty wal entry"))?;
    let mut out = Entry::default();
    out.set_entry_type(match t {
        0 => EntryType::EntryNormal,
        1 => EntryType::EntryConfChange,
        2 => EntryType::EntryConfChangeV2,
        _ => return Err(DecodeError("raft entry type")),
    });
    out.index = e.index;
    out.term = e.term;
    out.data = data.to_vec().into();
    Ok(out)
}

fn to_wal_hs(hs: &HardState) -> wal::HardState {
    wal::HardState {
        term: hs.term,
        vote: hs.vote,
        commit: hs.commit,
    }
}

/// Turns what `Wal::open` recovered into the Raft log.
pub fn recover(r: &wal::Recovered) -> Result<(WalMetadata, RecoveredLog), DecodeError> {
    let meta = WalMetadata::decode(&r.metadata)?;
    let mut hard_state = HardState::default();
    if let Some(hs) = r.hard_state {
        hard_state.term = hs.term;
        hard_state.vote = hs.vote;
        hard_state.commit = hs.commit;
    }
    let entries = r
        .entries
        .iter()
        .map(from_wal_entry)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((
        meta,
        RecoveredLog {
            hard_state,
            snapshot: r.checkpoint.map(|c| (c.index, c.term)),
            entries,
        },
    ))
}

/// The log a new member starts with, as etcd bootstraps it: one committed
/// `ConfChangeAddNode` per initial member at term 1 (so the first election
/// moves to term 2 and indexes match etcd's).
pub fn bootstrap_log(member_ids: &[u64]) -> Result<RecoveredLog, DecodeError> {
    let mut entries = Vec::with_capacity(member_ids.len());
    for (i, id) in member_ids.iter().enumerate() {
        let mut cc = ConfChange::default();
        cc.set_change_type(ConfChangeType::AddNode);
        cc.node_id = *id;
        let mut e = Entry::default();
        e.set_entry_type(EntryType::EntryConfChange);
        e.term = 1;
        e.index = i as u64 + 1;
        e.data = protobuf::Message::write_to_bytes(&cc)
            .map_err(|_| DecodeError("conf change"))?
            .into();
        entries.push(e);
    }
    let mut hard_state = HardState::default();
    hard_state.term = 1;
    hard_state.commit = member_ids.len() as u64;
    Ok(RecoveredLog {
        hard_state,
        snapshot: None,
        entries,
    })
}

/// The log a new member of a new cluster starts with: like
/// [`bootstrap_log`], but each `ConfChangeAddNode` carries the member (name
/// and peer URLs) in its context, as etcd's do, so that a member replaying
/// the log from index 1 (one that joined later) learns every member from it.
pub fn bootstrap_log_with(
    members: &[crate::membership::MemberInfo],
) -> Result<RecoveredLog, DecodeError> {
    use crate::membership::{ChangeContext, MemberChange};
    let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
    let mut log = bootstrap_log(&ids)?;
    for (e, m) in log.entries.iter_mut().zip(members) {
        let ctx = ChangeContext {
            proposer: 0,
            id: 0,
            change: MemberChange::Add {
                id: m.id,
                name: m.name.clone(),
                peer_urls: m.peer_urls.clone(),
                is_learner: false,
            },
        };
        let cc = ctx.change.conf_change(&ctx);
        e.data = protobuf::Message::write_to_bytes(&cc)
            .map_err(|_| DecodeError("conf change"))?
            .into();
    }
    Ok(log)
}

/// The WAL records that append `entries` (replacing any WAL entries from
/// the first one's index on) and then `hs`.
pub fn records_for(entries: &[Entry], hs: &HardState) -> Vec<Record> {
    let mut v: Vec<Record> = entries
        .iter()
        .map(|e| Record::Entry(to_wal_entry(e)))
        .collect();
    v.push(Record::HardState(to_wal_hs(hs)));
    v
}

/// The WAL records that persist `log` (for a brand-new WAL).
pub fn records_of(log: &RecoveredLog) -> Vec<Record> {
    let mut v: Vec<Record> = log
        .entries
        .iter()
        .map(|e| Record::Entry(to_wal_entry(e)))
        .collect();
    v.push(Record::HardState(to_wal_hs(&log.hard_state)));
    v
}

/// `LogStore` on the WAL: one atomic WAL append per Ready; the WAL's group
/// commit and the loop's batching share fdatasyncs between proposals.
pub struct WalLog {
    wal: Wal,
}

impl WalLog {
    pub fn new(wal: Wal) -> WalLog {
        WalLog { wal }
    }
}

impl LogStore for WalLog {
    async fn checkpoint(&mut self, index: u64, term: u64) -> Result<(), LogError> {
        self.wal
            .append(&[Record::Checkpoint(wal::Checkpoint { index, term })])
            .await
            .map_err(|e| LogError::Poisoned(e.to_string()))?;
        // Segments wholly below the checkpoint are no longer needed here
        // (the WAL keeps at least --max-wals segments).
        self.wal
            .release_to(index)
            .await
            .map_err(|e| LogError::Poisoned(e.to_string()))?;
        Ok(())
    }

    async fn append(&mut self, entries: &[Entry], hs: Option<&HardState>) -> Result<(), LogError> {
        let mut recs: Vec<Record> = entries
            .iter()
            .map(|e| Record::Entry(to_wal_entry(e)))
            .collect();
        if let Some(hs) = hs {
            recs.push(Record::HardState(to_wal_hs(hs)));
        }
        self.wal
            .append(&recs)
            .await
            .map_err(|e| LogError::Poisoned(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_keep_their_type_through_the_wal() {
        let log = bootstrap_log(&[7]).unwrap();
        let w = to_wal_entry(&log.entries[0]);
        assert_eq!(w.data[0], 1);
        let back = from_wal_entry(&w).unwrap();
        assert_eq!(back, log.entries[0]);
        assert!(from_wal_entry(&wal::Entry {
            index: 1,
            term: 1,
            data: vec![9].into()
        })
        .is_err());
    }

    #[test]
    fn metadata_round_trips_and_rejects_garbage() {
        let m = WalMetadata {
            cluster_id: 1,
            member_id: u64::MAX,
        };
        assert_eq!(WalMetadata::decode(&m.encode()), Ok(m));
        assert!(WalMetadata::decode(&[1, 2, 3]).is_err());
    }
}
