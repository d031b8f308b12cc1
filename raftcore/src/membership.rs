//! The cluster's member list and how Raft configuration changes alter it
//! (etcd's `membership.RaftCluster`): which members exist, their peer and
//! client URLs, which are learners, and which IDs were removed for good.
//!
//! A membership change travels as a Raft `ConfChange` entry whose context is
//! a [`ChangeContext`] (our binary format, engine/FORMAT.md §3.7). Every
//! member validates it **when it applies the entry**, against the member
//! list as of that entry, with etcd's rules
//! (`RaftCluster.ValidateConfigurationChange`), so all members accept or
//! refuse the same changes; a refused change touches neither the list nor
//! Raft's configuration, and its proposer gets etcd's error.
//!
//! Invariants:
//! * The list is changed only by applying committed entries (the member's
//!   own publish included), so it is the same on every member at the same
//!   applied index, and it is persisted with that index (engine::members).
//! * A removed ID never comes back: adding, promoting, updating or removing
//!   it again is refused as "member not found", like etcd.
//! * Raft's voters are exactly the non-learner members, its learners the
//!   learner members.

use std::collections::{BTreeMap, BTreeSet};

use engine::members::{MemberRecord, MembersState};
use raft::eraftpb::{ConfChange, ConfChangeType, ConfState};

use crate::proposal::DecodeError;

/// etcd's `maxLearners`.
pub const MAX_LEARNERS: usize = 1;

/// One member as `MemberList` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberInfo {
    pub id: u64,
    /// Empty until the member has published itself.
    pub name: String,
    pub peer_urls: Vec<String>,
    /// Empty until the member has published itself.
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

impl MemberInfo {
    /// etcd's `IsStarted`: the member has published its name.
    pub fn is_started(&self) -> bool {
        !self.name.is_empty()
    }
}

/// What a membership change asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberChange {
    /// MemberAdd (or a bootstrap entry, which also carries the name).
    Add {
        id: u64,
        name: String,
        peer_urls: Vec<String>,
        is_learner: bool,
    },
    Remove {
        id: u64,
    },
    /// MemberUpdate: new peer URLs.
    Update {
        id: u64,
        peer_urls: Vec<String>,
    },
    /// MemberPromote: learner to voter.
    Promote {
        id: u64,
    },
}

impl MemberChange {
    pub fn id(&self) -> u64 {
        match self {
            MemberChange::Add { id, .. }
            | MemberChange::Remove { id }
            | MemberChange::Update { id, .. }
            | MemberChange::Promote { id } => *id,
        }
    }

    /// The Raft conf change carrying this change. Raft has no "update"; an
    /// update travels as an AddNode/AddLearnerNode of the member's current
    /// role that is never handed to Raft (only the list changes).
    pub fn conf_change(&self, ctx: &ChangeContext) -> ConfChange {
        let mut cc = ConfChange::default();
        cc.node_id = self.id();
        cc.set_change_type(match self {
            MemberChange::Add {
                is_learner: true, ..
            } => ConfChangeType::AddLearnerNode,
            MemberChange::Add { .. } | MemberChange::Promote { .. } => ConfChangeType::AddNode,
            MemberChange::Remove { .. } => ConfChangeType::RemoveNode,
            MemberChange::Update { .. } => ConfChangeType::AddNode,
        });
        cc.context = ctx.encode().into();
        cc
    }
}

/// A conf change's context: who waits for it, and the change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeContext {
    /// Member that proposed it (0: a bootstrap entry, nobody waits).
    pub proposer: u64,
    /// The proposer's request id.
    pub id: u64,
    pub change: MemberChange,
}

const CTX_VERSION: u8 = 1;

fn put_bytes(v: &mut Vec<u8>, b: &[u8]) {
    v.extend_from_slice(&(b.len() as u32).to_le_bytes());
    v.extend_from_slice(b);
}

fn put_urls(v: &mut Vec<u8>, urls: &[String]) {
    v.extend_from_slice(&(urls.len() as u32).to_le_bytes());
    for u in urls {
        put_bytes(v, u.as_bytes());
    }
}

struct R<'a>(&'a [u8]);

impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError("truncated conf change context"));
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<usize, DecodeError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a) as usize)
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        let n = self.u32()?;
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| DecodeError("conf change context: not UTF-8"))
    }
    fn urls(&mut self) -> Result<Vec<String>, DecodeError> {
        let n = self.u32()?;
        if n > self.0.len() / 4 {
            return Err(DecodeError("conf change context: URL count"));
        }
        (0..n).map(|_| self.string()).collect()
    }
}

impl ChangeContext {
    /// ```text
    /// ctx := version:u8 (=1) | proposer:u64 | id:u64 | kind:u8 | member_id:u64 | body
    /// kind 1 Add     body := is_learner:u8 | name:bytes | n:u32 peer_url:bytes*n
    /// kind 2 Remove  body := (empty)
    /// kind 3 Update  body := n:u32 peer_url:bytes*n
    /// kind 4 Promote body := (empty)
    /// ```
    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![CTX_VERSION];
        v.extend_from_slice(&self.proposer.to_le_bytes());
        v.extend_from_slice(&self.id.to_le_bytes());
        let kind = match &self.change {
            MemberChange::Add { .. } => 1,
            MemberChange::Remove { .. } => 2,
            MemberChange::Update { .. } => 3,
            MemberChange::Promote { .. } => 4,
        };
        v.push(kind);
        v.extend_from_slice(&self.change.id().to_le_bytes());
        match &self.change {
            MemberChange::Add {
                name,
                peer_urls,
                is_learner,
                ..
            } => {
                v.push(*is_learner as u8);
                put_bytes(&mut v, name.as_bytes());
                put_urls(&mut v, peer_urls);
            }
            MemberChange::Update { peer_urls, .. } => put_urls(&mut v, peer_urls),
            MemberChange::Remove { .. } | MemberChange::Promote { .. } => {}
        }
        v
    }

    pub fn decode(b: &[u8]) -> Result<ChangeContext, DecodeError> {
        let mut r = R(b);
        if r.u8()? != CTX_VERSION {
            return Err(DecodeError("conf change context version"));
        }
        let proposer = r.u64()?;
        let id = r.u64()?;
        let kind = r.u8()?;
        let member = r.u64()?;
        let change = match kind {
            1 => {
                let is_learner = match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError("conf change context: is_learner")),
                };
                let name = r.string()?;
                MemberChange::Add {
                    id: member,
                    name,
                    peer_urls: r.urls()?,
                    is_learner,
                }
            }
            2 => MemberChange::Remove { id: member },
            3 => MemberChange::Update {
                id: member,
                peer_urls: r.urls()?,
            },
            4 => MemberChange::Promote { id: member },
            _ => return Err(DecodeError("conf change context kind")),
        };
        if !r.0.is_empty() {
            return Err(DecodeError("conf change context: trailing bytes"));
        }
        Ok(ChangeContext {
            proposer,
            id,
            change,
        })
    }
}

/// Why a membership change was refused (etcd's membership errors, which
/// its gRPC layer maps to the texts below).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MemberError {
    /// etcd: ErrIDNotFound and ErrIDRemoved.
    #[error("etcdserver: member not found")]
    NotFound,
    #[error("etcdserver: member ID already exist")]
    IdExists,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: can only promote a learner member")]
    NotLearner,
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
}

/// What applying a change did.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Hand this to Raft's `apply_conf_change`.
    Raft(ConfChange),
    /// Only the member list changed (an update).
    ListOnly,
}

/// The member list and the removed IDs.
#[derive(Clone, Debug, Default)]
pub struct Membership {
    members: BTreeMap<u64, MemberInfo>,
    removed: BTreeSet<u64>,
    /// Changed since the last checkpoint took it.
    dirty: bool,
}

impl Membership {
    pub fn from_state(st: &MembersState) -> Membership {
        Membership {
            members: st
                .members
                .iter()
                .map(|m| {
                    (
                        m.id,
                        MemberInfo {
                            id: m.id,
                            name: m.name.clone(),
                            peer_urls: m.peer_urls.clone(),
                            client_urls: m.client_urls.clone(),
                            is_learner: m.is_learner,
                        },
                    )
                })
                .collect(),
            removed: st.removed.iter().copied().collect(),
            dirty: false,
        }
    }

    /// A list given from outside (e.g. `--initial-cluster` for a data dir
    /// written before member lists were persisted): written by the next
    /// checkpoint.
    pub fn from_members(members: &[MemberInfo]) -> Membership {
        Membership {
            members: members.iter().map(|m| (m.id, m.clone())).collect(),
            removed: BTreeSet::new(),
            dirty: true,
        }
    }

    pub fn state(&self) -> MembersState {
        MembersState {
            members: self
                .members
                .values()
                .map(|m| MemberRecord {
                    id: m.id,
                    name: m.name.clone(),
                    peer_urls: m.peer_urls.clone(),
                    client_urls: m.client_urls.clone(),
                    is_learner: m.is_learner,
                })
                .collect(),
            removed: self.removed.iter().copied().collect(),
        }
    }

    /// The list to persist, if it changed since the last call.
    pub fn take_dirty(&mut self) -> Option<MembersState> {
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        Some(self.state())
    }

    /// Raft's configuration for this list.
    pub fn conf_state(&self) -> ConfState {
        let voters = self
            .members
            .values()
            .filter(|m| !m.is_learner)
            .map(|m| m.id)
            .collect::<Vec<_>>();
        let learners = self
            .members
            .values()
            .filter(|m| m.is_learner)
            .map(|m| m.id)
            .collect::<Vec<_>>();
        ConfState::from((voters, learners))
    }

    /// Members by ID (etcd's `Members()`, sorted by ID).
    pub fn members(&self) -> Vec<MemberInfo> {
        self.members.values().cloned().collect()
    }

    pub fn get(&self, id: u64) -> Option<&MemberInfo> {
        self.members.get(&id)
    }

    pub fn is_removed(&self, id: u64) -> bool {
        self.removed.contains(&id)
    }

    /// The voting members' IDs.
    pub fn voting_ids(&self) -> Vec<u64> {
        self.voting().map(|m| m.id).collect()
    }

    fn voting(&self) -> impl Iterator<Item = &MemberInfo> {
        self.members.values().filter(|m| !m.is_learner)
    }

    /// A member's published attributes (etcd's publish); dropped for a
    /// member that is not (or no longer) in the cluster.
    pub fn publish(&mut self, id: u64, name: &str, client_urls: &[String]) {
        if let Some(m) = self.members.get_mut(&id) {
            if m.name != name || m.client_urls != client_urls {
                m.name = name.to_string();
                m.client_urls = client_urls.to_vec();
                self.dirty = true;
            }
        }
    }

    /// etcd's `IsReadyToAddVotingMember`.
    pub fn ready_to_add_voter(&self) -> bool {
        let mut members = 1;
        let mut started = 0;
        for m in self.voting() {
            if m.is_started() {
                started += 1;
            }
            members += 1;
        }
        if started == 1 && members == 2 {
            // Adding a second member to a one-member cluster (restore).
            return true;
        }
        started >= members / 2 + 1
    }

    /// etcd's `IsReadyToRemoveVotingMember`.
    pub fn ready_to_remove_voter(&self, id: u64) -> bool {
        let mut members = 0;
        let mut started = 0;
        for m in self.voting().filter(|m| m.id != id) {
            if m.is_started() {
                started += 1;
            }
            members += 1;
        }
        started >= members / 2 + 1
    }

    /// etcd's `IsReadyToPromoteMember`: the learner counts as started.
    pub fn ready_to_promote(&self) -> bool {
        let mut members = 1;
        let mut started = 1;
        for m in self.voting() {
            if m.is_started() {
                started += 1;
            }
            members += 1;
        }
        started >= members / 2 + 1
    }

    /// etcd's `ValidateConfigurationChange`.
    pub fn validate(&self, change: &MemberChange) -> Result<(), MemberError> {
        let id = change.id();
        if self.removed.contains(&id) {
            return Err(MemberError::NotFound);
        }
        match change {
            MemberChange::Promote { .. } => match self.members.get(&id) {
                None => Err(MemberError::NotFound),
                Some(m) if !m.is_learner => Err(MemberError::NotLearner),
                Some(_) => Ok(()),
            },
            MemberChange::Add {
                peer_urls,
                is_learner,
                ..
            } => {
                if self.members.contains_key(&id) {
                    return Err(MemberError::IdExists);
                }
                let taken: BTreeSet<&String> =
                    self.members.values().flat_map(|m| &m.peer_urls).collect();
                if peer_urls.iter().any(|u| taken.contains(u)) {
                    return Err(MemberError::PeerUrlExists);
                }
                if *is_learner
                    && self.members.values().filter(|m| m.is_learner).count() + 1 > MAX_LEARNERS
                {
                    return Err(MemberError::TooManyLearners);
                }
                Ok(())
            }
            MemberChange::Remove { .. } => {
                if self.members.contains_key(&id) {
                    Ok(())
                } else {
                    Err(MemberError::NotFound)
                }
            }
            MemberChange::Update { peer_urls, .. } => {
                if !self.members.contains_key(&id) {
                    return Err(MemberError::NotFound);
                }
                let taken: BTreeSet<&String> = self
                    .members
                    .values()
                    .filter(|m| m.id != id)
                    .flat_map(|m| &m.peer_urls)
                    .collect();
                if peer_urls.iter().any(|u| taken.contains(u)) {
                    return Err(MemberError::PeerUrlExists);
                }
                Ok(())
            }
        }
    }

    /// Validates and applies one committed change.
    pub fn apply(&mut self, ctx: &ChangeContext) -> Result<Outcome, MemberError> {
        self.validate(&ctx.change)?;
        let cc = ctx.change.conf_change(ctx);
        self.dirty = true;
        match &ctx.change {
            MemberChange::Add {
                id,
                name,
                peer_urls,
                is_learner,
            } => {
                self.members.insert(
                    *id,
                    MemberInfo {
                        id: *id,
                        name: name.clone(),
                        peer_urls: peer_urls.clone(),
                        client_urls: Vec::new(),
                        is_learner: *is_learner,
                    },
                );
            }
            MemberChange::Remove { id } => {
                self.members.remove(id);
                self.removed.insert(*id);
            }
            MemberChange::Update { id, peer_urls } => {
                // etcd 3.5 replaces the whole raft attributes here and so
                // loses the learner flag of an updated learner; we keep it
                // (Raft still has it as a learner).
                if let Some(m) = self.members.get_mut(id) {
                    m.peer_urls = peer_urls.clone();
                }
                return Ok(Outcome::ListOnly);
            }
            MemberChange::Promote { id } => {
                if let Some(m) = self.members.get_mut(id) {
                    m.is_learner = false;
                }
            }
        }
        Ok(Outcome::Raft(cc))
    }

    /// A conf change without our context (a bootstrap entry of a log
    /// written before contexts existed): adds the node as a voter, taking
    /// what is known about it from `known`.
    pub fn apply_bare(&mut self, cc: &ConfChange, known: Option<&MemberInfo>) {
        let id = cc.node_id;
        match cc.get_change_type() {
            ConfChangeType::RemoveNode => {
                self.members.remove(&id);
                self.removed.insert(id);
            }
            t => {
                let learner = t == ConfChangeType::AddLearnerNode;
                let m = self.members.entry(id).or_insert_with(|| {
                    let mut m = known.cloned().unwrap_or_default();
                    m.id = id;
                    m
                });
                m.is_learner = learner;
            }
        }
        self.dirty = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(id: u64, url: &str, learner: bool) -> ChangeContext {
        ChangeContext {
            proposer: 9,
            id: id + 100,
            change: MemberChange::Add {
                id,
                name: String::new(),
                peer_urls: vec![url.to_string()],
                is_learner: learner,
            },
        }
    }

    fn ctx(change: MemberChange) -> ChangeContext {
        ChangeContext {
            proposer: 1,
            id: 2,
            change,
        }
    }

    #[test]
    fn contexts_round_trip_and_garbage_is_an_error() {
        for c in [
            add(5, "http://a:1", true),
            ctx(MemberChange::Remove { id: 3 }),
            ctx(MemberChange::Update {
                id: 3,
                peer_urls: vec!["http://x:1".into(), "http://y:2".into()],
            }),
            ctx(MemberChange::Promote { id: u64::MAX }),
        ] {
            let b = c.encode();
            assert_eq!(ChangeContext::decode(&b), Ok(c.clone()));
            for cut in 0..b.len() {
                assert!(ChangeContext::decode(&b[..cut]).is_err());
            }
        }
    }

    #[test]
    fn etcd_validation_rules() {
        let mut m = Membership::default();
        assert!(matches!(
            m.apply(&add(1, "http://a:1", false)),
            Ok(Outcome::Raft(_))
        ));
        m.apply(&add(2, "http://b:1", false)).unwrap();
        assert_eq!(
            m.apply(&add(1, "http://c:1", false)),
            Err(MemberError::IdExists)
        );
        assert_eq!(
            m.apply(&add(3, "http://a:1", false)),
            Err(MemberError::PeerUrlExists)
        );
        m.apply(&add(3, "http://c:1", true)).unwrap();
        assert_eq!(
            m.apply(&add(4, "http://d:1", true)),
            Err(MemberError::TooManyLearners)
        );
        assert_eq!(
            m.apply(&ctx(MemberChange::Promote { id: 1 })),
            Err(MemberError::NotLearner)
        );
        assert_eq!(
            m.apply(&ctx(MemberChange::Promote { id: 8 })),
            Err(MemberError::NotFound)
        );
        assert_eq!(
            m.apply(&ctx(MemberChange::Update {
                id: 2,
                peer_urls: vec!["http://a:1".into()]
            })),
            Err(MemberError::PeerUrlExists)
        );
        assert_eq!(
            m.apply(&ctx(MemberChange::Update {
                id: 3,
                peer_urls: vec!["http://e:1".into()]
            })),
            Ok(Outcome::ListOnly)
        );
        assert!(m.get(3).unwrap().is_learner, "update keeps the role");
        let cs = m.conf_state();
        assert_eq!(
            (cs.voters.clone(), cs.learners.clone()),
            (vec![1, 2], vec![3])
        );
        m.apply(&ctx(MemberChange::Promote { id: 3 })).unwrap();
        assert_eq!(m.conf_state().voters, vec![1, 2, 3]);
        m.apply(&ctx(MemberChange::Remove { id: 2 })).unwrap();
        assert!(m.is_removed(2));
        // A removed ID is gone for good.
        for c in [
            add(2, "http://z:1", false),
            ctx(MemberChange::Remove { id: 2 }),
            ctx(MemberChange::Promote { id: 2 }),
        ] {
            assert_eq!(m.apply(&c), Err(MemberError::NotFound));
        }
        // Round trip through the persisted form.
        let again = Membership::from_state(&m.state());
        assert_eq!(again.members(), m.members());
        assert!(again.is_removed(2));
    }

    #[test]
    fn quorum_checks_count_started_voters_like_etcd() {
        let mut m = Membership::default();
        for (id, url) in [(1, "http://a:1"), (2, "http://b:1"), (3, "http://c:1")] {
            m.apply(&add(id, url, false)).unwrap();
        }
        // Nobody published yet: 0 of 4 started.
        assert!(!m.ready_to_add_voter());
        m.publish(1, "m1", &[]);
        m.publish(2, "m2", &[]);
        // 2 of 4 started: adding a fourth voter would need 3.
        assert!(!m.ready_to_add_voter());
        m.publish(3, "m3", &[]);
        assert!(m.ready_to_add_voter());
        // Removing 3 leaves 1 and 2, both started.
        assert!(m.ready_to_remove_voter(3));
        let mut two_down = m.clone();
        two_down.members.get_mut(&2).unwrap().name.clear();
        // Removing 1 leaves 2 (not started) and 3: 1 of 2 started.
        assert!(!two_down.ready_to_remove_voter(1));
        assert!(m.ready_to_promote());
    }
}
