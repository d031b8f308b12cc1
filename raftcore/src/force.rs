//! `--force-new-cluster` (etcd's `restartAsStandaloneNode`): a member that
//! restarts from its data dir with the flag becomes the only member of its
//! cluster, keeping its data and cluster ID. As etcd does, the Raft log is
//! cut back to its commit index (uncommitted entries may never have been
//! agreed on), then one committed `ConfChangeRemoveNode` per other member
//! (voters and learners) is appended at the current term. The caller writes
//! those entries and the new hard state to the WAL before the member starts,
//! so the change survives a restart; the Raft loop applies them like any
//! other committed conf change, after which this member is the sole voter
//! and elects itself.

use raft::eraftpb::{ConfChange, Entry, EntryType};

use crate::membership::{ChangeContext, MemberChange, MemberInfo, Membership};
use crate::wal_log::RecoveredLog;
use engine::members::MembersState;

/// Rewrites `log` as described in the module doc and returns the appended
/// entries (empty if this member is already alone). `persisted` is the
/// member list stored with the backend's `applied` index (`None` for a data
/// dir without one: then `initial`, the `--initial-cluster` members).
pub fn force_new_cluster(
    log: &mut RecoveredLog,
    me: u64,
    persisted: Option<&MembersState>,
    applied: u64,
    initial: &[MemberInfo],
) -> Result<Vec<Entry>, String> {
    // What the backend applied was committed, even if the commit index
    // saved in the WAL lags behind it (as `Node::start` also assumes).
    let commit = log.hard_state.commit.max(applied);
    log.entries.retain(|e| e.index <= commit);
    let mut members = match persisted {
        Some(st) => Membership::from_state(st),
        None => Membership::from_members(initial),
    };
    // Conf changes committed after the backend's checkpoint.
    for e in log.entries.iter().filter(|e| e.index > applied) {
        if e.get_entry_type() != EntryType::EntryConfChange {
            continue;
        }
        let mut cc = ConfChange::default();
        protobuf::Message::merge_from_bytes(&mut cc, &e.data)
            .map_err(|_| format!("entry {}: bad conf change", e.index))?;
        if cc.context.is_empty() {
            let known = initial.iter().find(|m| m.id == cc.node_id);
            members.apply_bare(&cc, known);
        } else {
            let ctx = ChangeContext::decode(&cc.context)
                .map_err(|e| format!("bad conf change context: {e}"))?;
            // A change refused at apply time changes nothing there either.
            let _ = members.apply(&ctx);
        }
    }
    let ids: Vec<u64> = members.members().iter().map(|m| m.id).collect();
    if !ids.contains(&me) {
        return Err(format!(
            "member {me:x} is not in its own member list {ids:x?}; cannot force a new cluster"
        ));
    }
    let term = log.hard_state.term;
    let mut index = log
        .entries
        .last()
        .map(|e| e.index)
        .or(log.snapshot.map(|s| s.0))
        .unwrap_or(0)
        .max(commit);
    let mut added = Vec::new();
    for id in ids.into_iter().filter(|id| *id != me) {
        let ctx = ChangeContext {
            proposer: 0,
            id: 0,
            change: MemberChange::Remove { id },
        };
        let cc = ctx.change.conf_change(&ctx);
        index += 1;
        let mut e = Entry::default();
        e.set_entry_type(EntryType::EntryConfChange);
        e.term = term;
        e.index = index;
        e.data = protobuf::Message::write_to_bytes(&cc)
            .map_err(|_| "cannot encode a conf change".to_string())?
            .into();
        added.push(e);
    }
    log.entries.extend(added.iter().cloned());
    log.hard_state.commit = index;
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal_log::bootstrap_log_with;

    fn member(id: u64) -> MemberInfo {
        MemberInfo {
            id,
            name: format!("m{id}"),
            peer_urls: vec![format!("http://127.0.0.1:{id}")],
            ..Default::default()
        }
    }

    #[test]
    fn cuts_uncommitted_entries_and_removes_every_other_member() {
        let members = [member(1), member(2), member(3)];
        let mut log = bootstrap_log_with(&members).unwrap();
        // Two more entries at term 2, only the first committed.
        for index in 4..=5 {
            let mut e = Entry::default();
            e.index = index;
            e.term = 2;
            log.entries.push(e);
        }
        log.hard_state.term = 2;
        log.hard_state.commit = 4;
        let added = force_new_cluster(&mut log, 2, None, 0, &members).unwrap();
        let removed: Vec<(u64, u64)> = added
            .iter()
            .map(|e| {
                let mut cc = ConfChange::default();
                protobuf::Message::merge_from_bytes(&mut cc, &e.data).unwrap();
                let ctx = ChangeContext::decode(&cc.context).unwrap();
                assert_eq!(ctx.change, MemberChange::Remove { id: cc.node_id });
                assert_eq!(e.term, 2);
                (e.index, cc.node_id)
            })
            .collect();
        // Entry 5 was never committed: the removals replace it.
        assert_eq!(removed, vec![(5, 1), (6, 3)]);
        assert_eq!(log.hard_state.commit, 6);
        assert_eq!(log.entries.last().map(|e| e.index), Some(6));
        // Alone already: nothing to add.
        let mut alone = bootstrap_log_with(&[member(7)]).unwrap();
        let n = alone.hard_state.commit;
        assert!(force_new_cluster(&mut alone, 7, None, 0, &[member(7)])
            .unwrap()
            .is_empty());
        assert_eq!(alone.hard_state.commit, n);
        // Not a member of its own list: refused.
        let mut other = bootstrap_log_with(&members).unwrap();
        assert!(force_new_cluster(&mut other, 9, None, 0, &members).is_err());
    }
}
