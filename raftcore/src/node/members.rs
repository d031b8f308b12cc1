//! Membership changes on the Raft path (etcd's `EtcdServer.AddMember`,
//! `RemoveMember`, `UpdateMember`, `PromoteMember` and `applyConfChange`):
//! the checks a member runs before proposing, the conf change proposal, its
//! application (crate::membership validates and changes the list, Raft's
//! configuration follows), the peer address book the transport reads, and
//! stopping a member that was removed.
//!
//! Invariants:
//! * The checks before proposing (`--strict-reconfig-check`, a learner's
//!   catch-up) use this member's view and may be stale; correctness rests
//!   on the validation at apply time, which every member runs identically.
//! * Only the leader judges whether a learner is in sync (it alone knows the
//!   followers' progress); elsewhere a promote answers `NotLeader` and the
//!   service forwards it to the leader, as etcd does.
//! * A member that applied its own removal, or that a peer refused as
//!   removed, stops its loop with [`Error::Removed`] one second later (so
//!   its acknowledgement of the removal still reaches the leader).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use raft::eraftpb::ConfChange;
use raft::{RawNode, StateRole};

use super::{Applied, Cmd, Error, Node, RaftLoop, Reply, Shared};
use crate::membership::{ChangeContext, MemberChange, MemberInfo, Outcome};
use crate::proposal::DecodeError;

/// etcd's `readyPercent`: a learner is in sync once its match index is at
/// least this share of the leader's.
const LEARNER_READY_PERCENT: f64 = 0.9;

/// How long a removed member keeps running before it stops (etcd's
/// `stopWithDelay`).
const REMOVED_STOP_DELAY: Duration = Duration::from_secs(1);

/// Where each member is reachable (its first peer URL), for the peer
/// transport; and whether this member was removed from the cluster. Shared
/// by the Raft loop (writer) and the transport (reader) without keeping the
/// node alive.
#[derive(Default)]
pub struct PeerDirectory {
    urls: RwLock<HashMap<u64, String>>,
    version: AtomicU64,
    removed: AtomicBool,
    /// Since when each peer has answered without a failure in between
    /// (etcd's transport ActiveSince).
    active: std::sync::Mutex<HashMap<u64, Instant>>,
}

impl PeerDirectory {
    /// The peer URL of member `id`, if known.
    pub fn url(&self, id: u64) -> Option<String> {
        self.urls.read().ok()?.get(&id).cloned()
    }

    /// Bumped on every change of an address.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    pub(super) fn set(&self, id: u64, urls: &[String]) {
        let Some(u) = urls.first() else {
            return;
        };
        if let Ok(mut m) = self.urls.write() {
            if m.get(&id) != Some(u) {
                m.insert(id, u.clone());
                self.version.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// A call to peer `id` succeeded (the transport also probes idle
    /// peers, so this keeps being true while the peer is reachable).
    pub fn note_up(&self, id: u64) {
        if let Ok(mut a) = self.active.lock() {
            a.entry(id).or_insert_with(Instant::now);
        }
    }

    /// A call to peer `id` failed, or it could not be reached.
    pub fn note_down(&self, id: u64) {
        if let Ok(mut a) = self.active.lock() {
            a.remove(&id);
        }
    }

    /// Since when peer `id` has been reachable, if it is.
    pub fn active_since(&self, id: u64) -> Option<Instant> {
        self.active.lock().ok()?.get(&id).copied()
    }

    /// A peer refused our messages because we were removed: stop.
    pub fn mark_removed(&self) {
        self.removed.store(true, Ordering::Release);
    }

    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }
}

impl Node {
    /// MemberAdd with an ID chosen by the caller (etcd: from the peer URLs
    /// and the time). Returns the member list after the change.
    pub async fn add_member(
        &self,
        id: u64,
        peer_urls: Vec<String>,
        is_learner: bool,
    ) -> Result<Vec<MemberInfo>, Error> {
        self.member_change(MemberChange::Add {
            id,
            name: String::new(),
            peer_urls,
            is_learner,
        })
        .await
    }

    pub async fn remove_member(&self, id: u64) -> Result<Vec<MemberInfo>, Error> {
        self.member_change(MemberChange::Remove { id }).await
    }

    pub async fn update_member(
        &self,
        id: u64,
        peer_urls: Vec<String>,
    ) -> Result<Vec<MemberInfo>, Error> {
        self.member_change(MemberChange::Update { id, peer_urls })
            .await
    }

    /// MemberPromote. On a member that is not the leader this answers
    /// `Error::NotLeader`; the caller forwards to the leader.
    pub async fn promote_member(&self, id: u64) -> Result<Vec<MemberInfo>, Error> {
        self.member_change(MemberChange::Promote { id }).await
    }

    async fn member_change(&self, change: MemberChange) -> Result<Vec<MemberInfo>, Error> {
        let (done, rx) = futures_channel::oneshot::channel();
        self.tx
            .send(Cmd::Member { change, done })
            .await
            .map_err(|_| Error::Stopped)?;
        match self.with_timeout(rx).await? {
            Applied::Members(m) => Ok(m),
            _ => Err(Error::Stopped),
        }
    }

    /// The transport's address book (see [`PeerDirectory`]).
    pub fn peer_directory(&self) -> Arc<PeerDirectory> {
        self.shared.directory.clone()
    }

    /// Election ticks fast-forwarded at start by
    /// `--initial-election-tick-advance` (0 if none; `u64::MAX` if this
    /// member campaigned at once, as the lowest ID of a fresh cluster).
    pub fn ticks_advanced(&self) -> u64 {
        self.shared.ticks_advanced.load(Ordering::Acquire)
    }

    /// Whether this member is a learner in the applied configuration.
    pub fn is_learner(&self) -> bool {
        self.shared.learner.load(Ordering::Acquire)
    }

    /// Whether `id` was removed from the cluster (its messages are refused).
    pub fn is_removed_member(&self, id: u64) -> bool {
        self.shared
            .members
            .read()
            .map(|m| m.is_removed(id))
            .unwrap_or(false)
    }
}

impl RaftLoop {
    /// Checks a membership request like etcd does before proposing, then
    /// proposes it as a conf change.
    pub(super) fn handle_member(&mut self, change: MemberChange, done: Reply<Applied>) {
        if let Err(e) = self.may_change(&change) {
            let _ = done.send(Err(e));
            return;
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let ctx = ChangeContext {
            proposer: self.shared.cfg.member_id,
            id,
            change,
        };
        let cc = ctx.change.conf_change(&ctx);
        match self.raw.propose_conf_change(Vec::new(), cc) {
            Ok(()) => {
                self.waiters.insert(id, done);
            }
            Err(_) => {
                let _ = done.send(Err(Error::NoLeader));
            }
        }
    }

    /// etcd's `isConnectedSince`: this member itself, or a peer reachable
    /// for longer than the health interval.
    fn connected(&self, id: u64) -> bool {
        let me = self.shared.cfg.member_id;
        let since = Instant::now().checked_sub(self.shared.cfg.health_interval);
        id == me
            || self
                .shared
                .directory
                .active_since(id)
                .zip(since)
                .is_some_and(|(t, s)| t <= s)
    }

    /// etcd's `mayAddMember` / `mayRemoveMember` / `mayPromoteMember`.
    fn may_change(&self, change: &MemberChange) -> Result<(), Error> {
        let strict = self.shared.cfg.strict_reconfig_check;
        let members = self.shared.members.read().map_err(|_| Error::Stopped)?;
        let me = self.shared.cfg.member_id;
        match change {
            MemberChange::Add { is_learner, .. } => {
                if !strict {
                    return Ok(());
                }
                if !is_learner && !members.ready_to_add_voter() {
                    return Err(Error::NotEnoughStarted);
                }
                // isConnectedFullySince: every voter reachable.
                if !members.voting_ids().into_iter().all(|v| self.connected(v)) {
                    return Err(Error::Unhealthy);
                }
            }
            MemberChange::Remove { id } => {
                let learner = members.get(*id).is_some_and(|m| m.is_learner);
                if !strict || learner {
                    return Ok(());
                }
                if !members.ready_to_remove_voter(*id) {
                    return Err(Error::NotEnoughStarted);
                }
                // A member that is down is safe to remove.
                if *id != me && self.shared.directory.active_since(*id).is_none() {
                    return Ok(());
                }
                // The reachable voters minus the removed one must still be
                // a quorum of the voters.
                let voters = members.voting_ids();
                let active = voters.iter().filter(|v| self.connected(**v)).count() as i64;
                if active - 1 < 1 + (voters.len() as i64 - 1) / 2 {
                    return Err(Error::Unhealthy);
                }
            }
            MemberChange::Promote { id } => {
                self.learner_ready(*id)?;
                if strict && !members.ready_to_promote() {
                    return Err(Error::NotEnoughStarted);
                }
            }
            MemberChange::Update { .. } => {}
        }
        Ok(())
    }

    /// etcd's `isLearnerReady`: only the leader knows; an ID Raft does not
    /// track passes here and is judged when the change applies.
    fn learner_ready(&self, id: u64) -> Result<(), Error> {
        if self.raw.raft.state != StateRole::Leader {
            return Err(Error::NotLeader);
        }
        let prs = self.raw.raft.prs();
        if let Some(pr) = prs.get(id) {
            let leader = prs
                .get(self.shared.cfg.member_id)
                .map(|p| p.matched)
                .unwrap_or(0);
            if (pr.matched as f64) < (leader as f64) * LEARNER_READY_PERCENT {
                return Err(Error::LearnerNotReady);
            }
        }
        Ok(())
    }

    /// Stops the loop once this member has been removed for a moment.
    pub(super) fn check_removed(&mut self) -> Result<(), Error> {
        if !self.shared.directory.is_removed() {
            return Ok(());
        }
        let at = *self.removed_at.get_or_insert_with(Instant::now);
        if at.elapsed() >= REMOVED_STOP_DELAY {
            return Err(Error::Removed);
        }
        Ok(())
    }
}

/// Applies one committed `EntryConfChange` (etcd's `applyConfChange`).
/// A refused change leaves the list and Raft untouched and fails its
/// waiter with etcd's error; an accepted one answers with the new list.
pub(super) fn apply_conf_entry(
    raw: &mut RawNode<super::snapshot::SnapStorage>,
    shared: &Shared,
    waiters: &mut HashMap<u64, Reply<Applied>>,
    replies: &mut Vec<(Reply<Applied>, Result<Applied, Error>)>,
    data: &[u8],
) -> Result<(), Error> {
    let mut cc = ConfChange::default();
    protobuf::Message::merge_from_bytes(&mut cc, data).map_err(|_| DecodeError("conf change"))?;
    let me = shared.cfg.member_id;
    let mut members = shared.members.write().map_err(|_| Error::Stopped)?;
    if cc.context.is_empty() {
        // A bootstrap entry of a log from before conf change contexts.
        let known = shared.cfg.members.iter().find(|m| m.id == cc.node_id);
        members.apply_bare(&cc, known);
        if let Some(m) = members.get(cc.node_id) {
            shared.directory.set(m.id, &m.peer_urls);
        }
        let cs = raw.apply_conf_change(&cc)?;
        raw.mut_store().wl().set_conf_state(cs);
        shared.learner.store(
            members.get(me).is_some_and(|m| m.is_learner),
            Ordering::Release,
        );
        return Ok(());
    }
    let ctx = ChangeContext::decode(&cc.context)?;
    let result = members.apply(&ctx);
    match &result {
        Ok(Outcome::Raft(cc)) => {
            let cs = raw.apply_conf_change(cc)?;
            raw.mut_store().wl().set_conf_state(cs);
        }
        Ok(Outcome::ListOnly) | Err(_) => {}
    }
    if result.is_ok() {
        match &ctx.change {
            MemberChange::Add { id, peer_urls, .. } | MemberChange::Update { id, peer_urls } => {
                shared.directory.set(*id, peer_urls)
            }
            MemberChange::Remove { id } if *id == me => shared.directory.mark_removed(),
            _ => {}
        }
    }
    shared.learner.store(
        members.get(me).is_some_and(|m| m.is_learner),
        Ordering::Release,
    );
    if ctx.proposer == me {
        if let Some(w) = waiters.remove(&ctx.id) {
            let r = match result {
                Ok(_) => Ok(Applied::Members(members.members())),
                Err(e) => Err(Error::Member(e)),
            };
            replies.push((w, r));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::MemberError;
    use glommio::timer::sleep;
    use glommio::LocalExecutorBuilder;

    async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..1000 {
            if f() {
                return;
            }
            sleep(Duration::from_millis(10)).await;
        }
        panic!("never: {what}");
    }

    /// The checks before proposing and the validation at apply, on a
    /// 3-member in-process cluster: a voter cannot be added before the
    /// members have published themselves (strict reconfig check), a learner
    /// can; a learner that never ran cannot be promoted; a second learner is
    /// refused; removal takes the member out of every member's list and of
    /// Raft's configuration, and its ID can never come back.
    #[test]
    fn membership_changes_through_raft() {
        LocalExecutorBuilder::default()
            .io_memory(1 << 20)
            .spawn(|| async {
                const IDS: &[u64] = &[11, 22, 33];
                let (nodes, _cut) =
                    crate::node::test_cluster::start(IDS, |c| c.health_interval = Duration::ZERO);
                for n in &nodes {
                    assert!(n.wait_leader(Duration::from_secs(5)).await);
                }
                // Bootstrap entries without names: nobody counts as started.
                let r = nodes[0]
                    .add_member(44, vec!["http://d:1".into()], false)
                    .await;
                assert!(matches!(r, Err(Error::NotEnoughStarted)), "{r:?}");
                let list = nodes[1]
                    .add_member(44, vec!["http://d:1".into()], true)
                    .await
                    .unwrap();
                assert!(list.iter().any(|m| m.id == 44 && m.is_learner));
                let r = nodes[2]
                    .add_member(55, vec!["http://e:1".into()], true)
                    .await;
                assert!(
                    matches!(r, Err(Error::Member(MemberError::TooManyLearners))),
                    "{r:?}"
                );
                let r = nodes[0]
                    .add_member(55, vec!["http://d:1".into()], false)
                    .await;
                assert!(matches!(r, Err(Error::NotEnoughStarted)), "{r:?}");
                let leader = nodes[0].leader();
                let ln = nodes
                    .iter()
                    .find(|n| n.config().member_id == leader)
                    .unwrap();
                let r = ln.promote_member(44).await;
                assert!(matches!(r, Err(Error::LearnerNotReady)), "{r:?}");
                let follower = nodes
                    .iter()
                    .find(|n| n.config().member_id != leader)
                    .unwrap();
                let r = follower.promote_member(44).await;
                assert!(matches!(r, Err(Error::NotLeader)), "{r:?}");
                // A voter is "in sync"; the strict check then counts started
                // members, and none has published a name here.
                let r = ln.promote_member(11).await;
                assert!(matches!(r, Err(Error::NotEnoughStarted)), "{r:?}");
                let list = follower.remove_member(44).await.unwrap();
                assert!(!list.iter().any(|m| m.id == 44));
                for n in &nodes {
                    eventually("removal applied everywhere", || {
                        n.members().len() == 3 && n.is_removed_member(44)
                    })
                    .await;
                }
                // Messages from the removed member are refused with etcd's
                // text (its transport then stops it).
                // (A stale heartbeat: raft ignores it from a known member.)
                let mut m = raft::eraftpb::Message::default();
                m.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
                m.term = 1;
                m.from = 44;
                m.to = 11;
                let b = protobuf::Message::write_to_bytes(&m).unwrap();
                assert!(matches!(nodes[0].step(&b).await, Err(Error::Removed)));
                m.from = 22;
                let b = protobuf::Message::write_to_bytes(&m).unwrap();
                assert!(nodes[0].step(&b).await.is_ok());
                let r = nodes[0]
                    .add_member(44, vec!["http://f:1".into()], true)
                    .await;
                assert!(
                    matches!(r, Err(Error::Member(MemberError::NotFound))),
                    "{r:?}"
                );
                let r = nodes[0].update_member(44, vec!["http://f:1".into()]).await;
                assert!(
                    matches!(r, Err(Error::Member(MemberError::NotFound))),
                    "{r:?}"
                );
                // Update: new peer URLs, seen by every member.
                nodes[2]
                    .update_member(22, vec!["http://b2:1".into()])
                    .await
                    .unwrap();
                for n in &nodes {
                    eventually("update applied everywhere", || {
                        n.members()
                            .iter()
                            .any(|m| m.id == 22 && m.peer_urls == ["http://b2:1"])
                    })
                    .await;
                }
                assert_eq!(
                    nodes[0].peer_directory().url(22).as_deref(),
                    Some("http://b2:1")
                );
                // Writes still commit with the changed configuration.
                nodes[1]
                    .put(engine::mvcc::PutRequest {
                        key: b"k".to_vec(),
                        value: b"v".to_vec(),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            })
            .unwrap()
            .join()
            .unwrap();
    }

    /// With `--strict-reconfig-check=false` the started-members check is
    /// off (etcd's flag): a voter joins a cluster whose members have not
    /// published themselves.
    #[test]
    fn strict_reconfig_check_can_be_turned_off() {
        LocalExecutorBuilder::default()
            .io_memory(1 << 20)
            .spawn(|| async {
                const IDS: &[u64] = &[11, 22, 33];
                let (nodes, _cut) =
                    crate::node::test_cluster::start(IDS, |c| c.strict_reconfig_check = false);
                for n in &nodes {
                    assert!(n.wait_leader(Duration::from_secs(5)).await);
                }
                let list = nodes[0]
                    .add_member(44, vec!["http://d:1".into()], false)
                    .await
                    .unwrap();
                assert!(list.iter().any(|m| m.id == 44 && !m.is_learner));
                // Four voters, one down: three still commit.
                nodes[2]
                    .put(engine::mvcc::PutRequest {
                        key: b"k".to_vec(),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                assert!(!nodes[1].is_learner());
            })
            .unwrap()
            .join()
            .unwrap();
    }

    /// Removing the leader (through a follower): the old leader applies its
    /// own removal and stops; the other two elect a leader and go on.
    #[test]
    fn the_removed_leader_stops_and_the_rest_go_on() {
        LocalExecutorBuilder::default()
            .io_memory(1 << 20)
            .spawn(|| async {
                const IDS: &[u64] = &[11, 22, 33];
                let (nodes, _cut) =
                    crate::node::test_cluster::start(IDS, |c| c.strict_reconfig_check = false);
                for n in &nodes {
                    assert!(n.wait_leader(Duration::from_secs(5)).await);
                }
                let leader = nodes[0].leader();
                let (old, rest): (Vec<_>, Vec<_>) = nodes
                    .iter()
                    .cloned()
                    .partition(|n| n.config().member_id == leader);
                let list = rest[0].remove_member(leader).await.unwrap();
                assert_eq!(list.len(), 2);
                eventually("the removed leader knows it", || {
                    old[0].peer_directory().is_removed()
                })
                .await;
                eventually("a new leader among the rest", || {
                    let l = rest[0].leader();
                    l != 0 && l != leader && rest[1].leader() == l
                })
                .await;
                rest[1]
                    .put(engine::mvcc::PutRequest {
                        key: b"after".to_vec(),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                // The old leader's loop is gone (a live loop would time out
                // instead).
                sleep(Duration::from_millis(1500)).await;
                let r = old[0]
                    .put(engine::mvcc::PutRequest {
                        key: b"x".to_vec(),
                        ..Default::default()
                    })
                    .await;
                assert!(matches!(r, Err(Error::Stopped)), "{r:?}");
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
