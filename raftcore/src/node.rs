//! `Node`: one member. Client requests enter through the `Node` handle (any
//! executor, any thread); the `RaftLoop` (one task on one executor) orders
//! them with raft-rs, makes them durable through a `LogStore`, applies the
//! committed ones to the MVCC store and answers the waiters.
//!
//! The flow of one write (DESIGN.md): `Node::put` → `Cmd::Propose` over the
//! channel → `RawNode::propose` → Ready: entries → `LogStore::append`
//! (durable) → committed → `apply` → the waiter's oneshot → response.
//!
//! Invariants:
//! * An entry is applied only after it is committed, and it is committed
//!   only after it is durable on a quorum (one member: on our own disk), so
//!   a reader never sees a write that a crash could lose.
//! * Entries are applied in index order, exactly once; `applied` only grows.
//! * A linearizable read is answered only once `applied >= read index`
//!   (ReadIndex), so it reflects every write acknowledged before it began.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use engine::mvcc::{
    CompactResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, RequestOp, Store, TxnRequest, TxnResponse,
};
use futures_channel::oneshot;
use futures_lite::future;
use glommio::timer::sleep;
use raft::eraftpb::{ConfChangeV2, ConfState, Entry, EntryType, Message, MessageType};
use raft::prelude::ReadState;
use raft::storage::MemStorage;
use raft::{RawNode, StateRole};

mod alarm;
mod defrag;
mod lease;
mod members;
#[cfg(test)]
mod sim;
mod snapshot;

use crate::checkpoint::{CheckpointConfig, Checkpointer, Done};
use crate::log_store::{LogError, LogStore};
use crate::proposal::{DecodeError, Proposal, Request};
pub use alarm::{AlarmRequestAction, DEFAULT_QUOTA_BYTES};
use engine::btree::Db;
use engine::mvcc::AppliedState;
pub use lease::LeaseGrant;
pub use members::PeerDirectory;

pub use crate::membership::MemberInfo;
use crate::membership::{MemberChange, MemberError, Membership};
use snapshot::SnapStorage;
pub use snapshot::{open_backend, ImageReader, IncomingSnapshot, OutgoingSnapshot, SnapStats};

/// Errors of the consensus and apply layer; `net` maps each to etcd's
/// gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Mvcc(#[from] engine::mvcc::Error),
    /// The lease named by a put, revoke or keep-alive does not exist.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// LeaseGrant with an ID that is taken.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// LeaseGrant with a TTL above `engine::lease::MAX_LEASE_TTL`.
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("etcdserver: request timed out")]
    Timeout,
    /// The request timeout passed before Raft accepted the proposal at all
    /// (no leader known the whole time). etcd's raft node blocks such a
    /// proposal until the context ends and etcd returns the context's own
    /// error; so does ferrocd.
    #[error("context deadline exceeded")]
    NotProposed,
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: not leader")]
    NotLeader,
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    /// The backend quota is exhausted or the NOSPACE alarm is raised
    /// (module `alarm`).
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    #[error(transparent)]
    Log(#[from] LogError),
    /// A committed entry could not be decoded: the log is corrupt.
    #[error(transparent)]
    Corrupt(#[from] DecodeError),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// The B-tree file cannot be used with this WAL, or a checkpoint failed.
    #[error("backend: {0}")]
    Backend(String),
    /// A membership change refused when applied (etcd's membership errors).
    #[error(transparent)]
    Member(#[from] MemberError),
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStarted,
    /// The change could break the quorum of members this member is
    /// connected to (etcd's ErrUnhealthy).
    #[error("etcdserver: unhealthy cluster")]
    Unhealthy,
    /// This member was removed from the cluster (etcd's ErrMemberRemoved
    /// text); it stops.
    #[error("the member has been permanently removed from the cluster")]
    Removed,
}

/// Identity and timing of this member.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub cluster_id: u64,
    pub member_id: u64,
    /// `--heartbeat-interval` (100 ms): one Raft tick.
    pub heartbeat: Duration,
    /// `--election-timeout` / `--heartbeat-interval` (1000/100).
    pub election_ticks: usize,
    /// How long a request may wait for Raft before "request timed out".
    /// etcd: 5 s + 2 × election timeout.
    pub request_timeout: Duration,
    /// The initial voters (this member included); empty means just this
    /// member.
    pub voters: Vec<u64>,
    /// The initial members with their peer URLs (for MemberList).
    pub members: Vec<MemberInfo>,
    /// What this member publishes once it has joined: its name and the
    /// client URLs it advertises (`--advertise-client-urls`).
    pub name: String,
    pub client_urls: Vec<String>,
    /// How often the leader checkpoints each long lease's remaining TTL
    /// through Raft (etcd's lease checkpointing, on in ferrocd; etcd's
    /// default interval, 5 min). Leases shorter than this are not
    /// checkpointed.
    pub lease_checkpoint_interval: Duration,
    /// `--strict-reconfig-check`: refuse membership changes that could
    /// lose quorum (etcd's default: on).
    pub strict_reconfig_check: bool,
    /// `--initial-election-tick-advance` (etcd's default: on): once this
    /// member's transport reaches more than one peer after start, it
    /// fast-forwards `election_ticks - 2` ticks, so a fresh cluster elects
    /// its first leader after a few ticks instead of a whole election
    /// timeout (etcd's `adjustTicks`).
    pub initial_election_tick_advance: bool,
    /// `--pre-vote` (etcd 3.5's default: on): a member first asks whether it
    /// could win before it raises its term, so a member that was cut off
    /// cannot disrupt a working leader when it comes back.
    pub pre_vote: bool,
    /// `--snapshot-count`: the most entries the in-memory Raft log keeps
    /// behind the applied index for a lagging member (etcd: 100000, there
    /// the entries between two compactions).
    pub snapshot_count: u64,
    /// `--experimental-snapshot-catchup-entries`: entries always kept
    /// behind a compaction for members that lag (etcd: 5000); a member
    /// further behind than every kept entry gets a snapshot.
    pub snapshot_catchup_entries: u64,
    /// `--quota-backend-bytes` resolved: `None` disables the quota (a
    /// negative flag), else the limit in bytes (module `alarm`).
    pub quota_bytes: Option<u64>,
    /// How long a peer must have been reachable to count as connected for
    /// `--strict-reconfig-check` (etcd's HealthInterval, 5 s).
    pub health_interval: Duration,
}

impl NodeConfig {
    fn initial_voters(&self) -> Vec<u64> {
        if self.voters.is_empty() {
            vec![self.member_id]
        } else {
            self.voters.clone()
        }
    }

    pub fn new(cluster_id: u64, member_id: u64) -> NodeConfig {
        NodeConfig {
            cluster_id,
            member_id,
            heartbeat: Duration::from_millis(100),
            election_ticks: 10,
            request_timeout: Duration::from_secs(7),
            voters: Vec::new(),
            members: Vec::new(),
            name: String::new(),
            client_urls: Vec::new(),
            lease_checkpoint_interval: engine::lease::DEFAULT_CHECKPOINT_INTERVAL,
            strict_reconfig_check: true,
            initial_election_tick_advance: true,
            pre_vote: true,
            snapshot_count: 100_000,
            snapshot_catchup_entries: 5000,
            quota_bytes: Some(DEFAULT_QUOTA_BYTES),
            health_interval: Duration::from_secs(5),
        }
    }
}

/// The fields of etcd's `ResponseHeader`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub cluster_id: u64,
    pub member_id: u64,
    pub revision: i64,
    pub raft_term: u64,
}

/// The outcome of applying one proposal.
#[derive(Debug)]
pub enum Applied {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactResponse),
    Published,
    LeaseGranted(LeaseGrant),
    LeaseRevoked {
        revision: i64,
    },
    LeaseCheckpointed,
    /// A membership change applied: the member list after it.
    Members(Vec<MemberInfo>),
    /// The alarms an Alarm ACTIVATE / DEACTIVATE changed.
    Alarms(Vec<engine::alarm::AlarmMember>),
}

type Members = RwLock<Membership>;

type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// How long a ReadIndex request may go unanswered before it is asked again.
const READ_RETRY: Duration = Duration::from_millis(500);

/// What woke the idle Raft loop.
enum Wake {
    Cmd(Result<Cmd, async_channel::RecvError>),
    Checkpointed(Result<Done, String>),
    Tick,
}

enum Cmd {
    Propose {
        id: u64,
        data: Vec<u8>,
        /// Set once raft accepted the proposal (see `Error::NotProposed`).
        accepted: Arc<AtomicBool>,
        done: Reply<Applied>,
    },
    Read {
        done: Reply<()>,
    },
    /// A Raft message from a peer.
    Step(Box<Message>),
    /// Hand leadership to `target` (MoveLeader).
    TransferLeader {
        target: u64,
        done: Reply<()>,
    },
    /// A membership change (module `members`).
    Member {
        change: MemberChange,
        done: Reply<Applied>,
    },
    /// The transport delivered a snapshot to `to` (or failed to).
    SnapshotStatus {
        to: u64,
        ok: bool,
    },
}

/// State shared by the handle and the loop.
struct Shared {
    cfg: NodeConfig,
    /// Shared with the backend thread, which installs each committed
    /// checkpoint's snapshot (module `checkpoint`).
    store: Arc<RwLock<Store>>,
    term: AtomicU64,
    leader: AtomicU64,
    applied: AtomicU64,
    /// Last index in the Raft log (etcd's Status.raftIndex).
    last_index: AtomicU64,
    /// True while this member is the leader and the only voter. Then no
    /// other leader can exist and every acknowledged write is already
    /// applied (acks follow apply), so ReadIndex has nothing to wait for.
    sole_leader: AtomicBool,
    /// A leader is known, it has committed an entry of its term, and this
    /// member has applied everything committed: safe to serve.
    serving: AtomicBool,
    /// The B-tree file, for its size (Status.dbSize / dbSizeInUse);
    /// replaced when a snapshot is installed.
    db: RwLock<Option<Arc<Db>>>,
    /// Queues online defrags on the checkpoint thread (module `defrag`).
    defrag: Option<crate::checkpoint::Defragmenter>,
    /// The directory of the B-tree file, where snapshot images live.
    snap_dir: Option<std::path::PathBuf>,
    /// Snapshots received and sent, by peer (etcd's
    /// `etcd_network_snapshot_{receive,send}_success`).
    snap_stats: std::sync::Mutex<snapshot::SnapStats>,
    /// Indexes of the images received and kept (`snap/<index>.snap.db`)
    /// that may still wait for installation.
    snap_received_at: std::sync::Mutex<Vec<u64>>,
    /// Set once the log failed to persist: writes are refused from then on.
    poisoned: std::sync::Mutex<Option<String>>,
    /// The member list as of `applied` (crate::membership).
    members: Members,
    /// Peer addresses for the transport; the removed flag.
    directory: Arc<PeerDirectory>,
    /// Election ticks fast-forwarded at start (`TickAdvance`), 0 if none,
    /// `u64::MAX` if this member campaigned at once instead.
    ticks_advanced: AtomicU64,
    /// This member is a learner in the applied configuration (read on
    /// every client request; written where `members` changes).
    learner: AtomicBool,
    /// Id of this process's next proposal (waiters are matched by proposer
    /// and id). Starts from the wall clock (see `first_proposal_id`) so a
    /// restarted member never reuses an id of its previous life: an entry
    /// proposed before a crash and committed after the restart must not
    /// answer a new request that happens to carry the same id.
    next_id: AtomicU64,
    /// Watchers of `store` (engine::watch). `apply` publishes every applied
    /// revision's events to it after releasing the store lock.
    watch: Arc<engine::watch::Hub>,
    /// The leases (module `lease`). Lock order: `store`, then `lessor`.
    lessor: std::sync::Mutex<engine::lease::Lessor>,
    /// The raised alarms (module `alarm`). Lock order: after `lessor`.
    alarms: std::sync::Mutex<engine::alarm::Alarms>,
}

/// The watch hub reads history through the apply-layer store.
impl engine::watch::History for Shared {
    fn read_store(&self, f: &mut dyn FnMut(&Store)) -> bool {
        engine::watch::History::read_store(&*self.store, f)
    }
}

/// What `Maintenance.Status` reports about Raft.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RaftStatus {
    pub leader: u64,
    pub term: u64,
    pub raft_index: u64,
    pub applied_index: u64,
    pub is_learner: bool,
}

/// The handle through which requests reach the cluster. Cheap to share
/// (`Arc`) across executors.
pub struct Node {
    shared: Arc<Shared>,
    tx: async_channel::Sender<Cmd>,
    /// Encoded Raft messages for peers, `(to, message)`; taken once by the
    /// peer transport (in `net`).
    outbound: std::sync::Mutex<Option<async_channel::Receiver<(u64, Vec<u8>)>>>,
    /// Snapshots for peers (module `snapshot`); taken once by the transport.
    snap_outbound: std::sync::Mutex<Option<async_channel::Receiver<OutgoingSnapshot>>>,
    /// Server-chosen lease IDs.
    lease_ids: lease::LeaseIds,
}

impl Node {
    /// Creates a fresh single-member node whose log is kept in memory
    /// (tests; see `Node::start` for a node on a recovered log).
    pub fn new(cfg: NodeConfig) -> Result<(Arc<Node>, RaftLoop), Error> {
        let log = crate::wal_log::bootstrap_log(&[cfg.member_id])?;
        Node::start(cfg, log)
    }

    /// Creates the node on `log` (a fresh member's bootstrap log, or what the
    /// WAL recovered) and its loop, which must be run on one executor. The
    /// loop applies the committed part of `log` before it campaigns, so the
    /// store is rebuilt before the member serves.
    pub fn start(
        cfg: NodeConfig,
        log: crate::wal_log::RecoveredLog,
    ) -> Result<(Arc<Node>, RaftLoop), Error> {
        Node::start_with(cfg, log, Recovered::default())
    }

    /// Like `start`, on the state read back from the B-tree file: `store`
    /// already holds everything up to `applied`; the WAL's `log` supplies
    /// the entries after it. With `backend`, the loop checkpoints the store
    /// into that file in the background.
    pub fn start_with(
        cfg: NodeConfig,
        log: crate::wal_log::RecoveredLog,
        rec: Recovered,
    ) -> Result<(Arc<Node>, RaftLoop), Error> {
        let Recovered {
            store,
            applied,
            backend,
            members: persisted,
        } = rec;
        let last_index = log
            .entries
            .last()
            .map(|e| e.index)
            .or(log.snapshot.map(|s| s.0))
            .unwrap_or(0);
        if let Some((snap, _)) = log.snapshot {
            if applied.index < snap {
                return Err(Error::Backend(format!(
                    "the backend file is at applied index {} but the WAL starts after {snap}: \
                     entries in between are lost (was member/snap/db removed?)",
                    applied.index
                )));
            }
        }
        if applied.index > last_index {
            return Err(Error::Backend(format!(
                "the backend file is at applied index {} beyond the WAL's last entry {last_index}",
                applied.index
            )));
        }
        let raft_cfg = raft::Config {
            id: cfg.member_id,
            election_tick: cfg.election_ticks.max(2),
            heartbeat_tick: 1,
            applied: applied.index,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            // Appends to a peer that wait in the same Ready go as one
            // message (and get one response): proposals forwarded by
            // followers arrive one message each, and without this every
            // one became its own MsgAppend per follower (BENCHMARKS.md).
            batch_append: true,
            check_quorum: true,
            pre_vote: cfg.pre_vote,
            ..Default::default()
        };
        // The member list as of `applied`: persisted with it; none yet at
        // index 0 (the log's conf changes build it from scratch); from the
        // flags for a data dir written before member lists were persisted.
        let membership = match (&persisted, applied.index) {
            (Some(st), _) => Membership::from_state(st),
            (None, 0) => Membership::default(),
            (None, _) => {
                let mut known = cfg.members.clone();
                for id in cfg.initial_voters() {
                    if !known.iter().any(|m| m.id == id) {
                        known.push(MemberInfo {
                            id,
                            ..Default::default()
                        });
                    }
                }
                Membership::from_members(&known)
            }
        };
        let conf_state = membership.conf_state();
        let storage = MemStorage::new_with_conf_state(conf_state.clone());
        {
            let mut st = storage.wl();
            if let Some((index, term)) = log.snapshot {
                let mut snap = raft::eraftpb::Snapshot::default();
                snap.mut_metadata().index = index;
                snap.mut_metadata().term = term;
                snap.mut_metadata().set_conf_state(conf_state.clone());
                st.apply_snapshot(snap)?;
            }
            st.append(&log.entries)?;
            let mut hs = log.hard_state.clone();
            // What the backend applied was committed, even if the commit
            // index recorded in the WAL lags behind it.
            hs.commit = hs.commit.max(applied.index);
            st.set_hardstate(hs);
        }
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&raft_cfg, SnapStorage::new(storage), &logger)?;
        let watch = Arc::new(engine::watch::Hub::new(Default::default()));
        watch.publish(store.current_revision(), Vec::new());
        let directory = Arc::new(PeerDirectory::default());
        for m in cfg.members.iter().chain(membership.members().iter()) {
            directory.set(m.id, &m.peer_urls);
        }
        // Restarted after its removal was applied: stop again at once.
        if membership.is_removed(cfg.member_id) {
            directory.mark_removed();
        }
        let lessor = lease::recover_lessor(&cfg, backend.as_ref().map(|(db, _)| &**db), &store)?;
        let lease_ids = lease::LeaseIds::new(cfg.member_id);
        let alarms = alarm::recover(backend.as_ref().map(|(db, _)| &**db))?;
        let store = Arc::new(RwLock::new(store));
        let checkpointer = match &backend {
            Some((db, ccfg)) => Some(
                Checkpointer::spawn(db.clone(), store.clone(), *ccfg, applied.index)
                    .map_err(|e| Error::Backend(format!("cannot start the backend thread: {e}")))?,
            ),
            None => None,
        };
        let learner = membership.get(cfg.member_id).is_some_and(|m| m.is_learner);
        let shared = Arc::new(Shared {
            cfg,
            store,
            term: AtomicU64::new(0),
            leader: AtomicU64::new(0),
            applied: AtomicU64::new(applied.index),
            last_index: AtomicU64::new(0),
            sole_leader: AtomicBool::new(false),
            serving: AtomicBool::new(false),
            db: RwLock::new(backend.as_ref().map(|(db, _)| db.clone())),
            defrag: checkpointer.as_ref().map(Checkpointer::defragmenter),
            snap_dir: backend
                .as_ref()
                .and_then(|(db, _)| db.path())
                .and_then(|p| p.parent().map(|d| d.to_path_buf())),
            snap_stats: Default::default(),
            snap_received_at: Default::default(),
            poisoned: std::sync::Mutex::new(None),
            learner: AtomicBool::new(learner),
            members: RwLock::new(membership),
            directory,
            ticks_advanced: AtomicU64::new(0),
            next_id: AtomicU64::new(first_proposal_id()),
            watch,
            lessor: std::sync::Mutex::new(lessor),
            alarms: std::sync::Mutex::new(alarms),
        });
        let (tx, rx) = async_channel::unbounded();
        let (out_tx, out_rx) = async_channel::unbounded();
        let (snap_tx, snap_rx) = async_channel::unbounded();
        let node = Arc::new(Node {
            shared: shared.clone(),
            tx,
            outbound: std::sync::Mutex::new(Some(out_rx)),
            snap_outbound: std::sync::Mutex::new(Some(snap_rx)),
            lease_ids,
        });
        let lp = RaftLoop {
            raw,
            outbound: out_tx,
            rx,
            shared,
            waiters: HashMap::new(),
            unproposed: Vec::new(),
            pending_reads: Vec::new(),
            read_batches: HashMap::new(),
            read_issued: VecDeque::new(),
            reads_after_apply: VecDeque::new(),
            read_seq: 0,
            checkpointer,
            transfers: Vec::new(),
            published_at: None,
            published: false,
            removed_at: None,
            snap_outbound: snap_tx,
            snap_failures: Vec::new(),
            image_meta: None,
        };
        Ok((node, lp))
    }

    /// etcd's HashKV of the applied key space (see `Store::hash_kv`), after
    /// a read barrier so it covers every acknowledged write.
    pub async fn hash_kv(&self, revision: i64) -> Result<(u32, i64, i64), Error> {
        self.read_barrier().await?;
        Ok(self.read_store()?.hash_kv(revision)?)
    }

    /// The members as this member knows them, by ID.
    pub fn members(&self) -> Vec<MemberInfo> {
        self.shared
            .members
            .read()
            .map(|m| m.members())
            .unwrap_or_default()
    }

    /// MoveLeader: transfers leadership to `target` and waits until it leads.
    ///
    /// First, while it still leads, this member checkpoints the remaining
    /// TTL of every lease through Raft, so that the new leader starts each
    /// lease from what was left of it, not from its full TTL (etcd v3.5
    /// does the latter for every lease shorter than the checkpoint
    /// interval: etcd#9888).
    pub async fn move_leader(&self, target: u64) -> Result<(), Error> {
        if target != self.shared.cfg.member_id {
            self.checkpoint_all_leases().await?;
        }
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Cmd::TransferLeader { target, done })
            .await
            .map_err(|_| Error::Stopped)?;
        self.with_timeout(rx).await
    }

    /// The peer transport's end of the outbound queue (once).
    pub fn take_outbound(&self) -> Option<async_channel::Receiver<(u64, Vec<u8>)>> {
        self.outbound.lock().ok()?.take()
    }

    /// Hands a Raft message received from a peer to the loop.
    pub async fn step(&self, bytes: &[u8]) -> Result<(), Error> {
        let m: Message =
            protobuf::Message::parse_from_bytes(bytes).map_err(|_| DecodeError("raft message"))?;
        // etcd refuses messages of removed members, which then stop.
        if self.is_removed_member(m.from) {
            return Err(Error::Removed);
        }
        self.tx
            .send(Cmd::Step(Box::new(m)))
            .await
            .map_err(|_| Error::Stopped)
    }

    pub fn config(&self) -> &NodeConfig {
        &self.shared.cfg
    }

    pub fn term(&self) -> u64 {
        self.shared.term.load(Ordering::Acquire)
    }

    /// The current leader's member ID, 0 when none is known.
    pub fn leader(&self) -> u64 {
        self.shared.leader.load(Ordering::Acquire)
    }

    pub fn raft_status(&self) -> RaftStatus {
        RaftStatus {
            leader: self.leader(),
            term: self.term(),
            raft_index: self.shared.last_index.load(Ordering::Acquire),
            applied_index: self.applied_index(),
            is_learner: self.is_learner(),
        }
    }

    /// `(size, bytes in use)` of the backend file, if there is one. The
    /// size is etcd's (bbolt's `Size()`): the pages of the last commit,
    /// free ones included, not the file's preallocated tail; the quota is
    /// measured against the same number (module `alarm`).
    pub fn backend_size(&self) -> Option<(u64, u64)> {
        let db = self.shared.db.read().ok()?.clone()?;
        let st = db.stats().ok()?;
        Some((st.page_count * st.page_size, st.in_use_bytes))
    }

    pub fn applied_index(&self) -> u64 {
        self.shared.applied.load(Ordering::Acquire)
    }

    /// The watch hub with this member's store behind it (the Watch service
    /// opens one `WatchStream` per client stream from it).
    pub fn watch_hub(&self) -> engine::watch::Watchable {
        engine::watch::Watchable::new(self.shared.watch.clone(), self.shared.clone())
    }

    pub fn header(&self, revision: i64) -> Header {
        Header {
            cluster_id: self.shared.cfg.cluster_id,
            member_id: self.shared.cfg.member_id,
            revision,
            raft_term: self.term(),
        }
    }

    fn read_store(&self) -> Result<RwLockReadGuard<'_, Store>, Error> {
        self.shared.store.read().map_err(|_| Error::Stopped)
    }

    fn write_store(&self) -> Result<RwLockWriteGuard<'_, Store>, Error> {
        self.shared.store.write().map_err(|_| Error::Stopped)
    }

    pub fn current_revision(&self) -> Result<i64, Error> {
        Ok(self.read_store()?.current_revision())
    }

    /// Waits until the member can serve: a leader is known and everything
    /// committed, including what the WAL recovered, is applied.
    pub async fn wait_leader(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.shared.serving.load(Ordering::Acquire) {
            if Instant::now() >= deadline {
                return false;
            }
            sleep(Duration::from_millis(5)).await;
        }
        true
    }

    async fn with_timeout<T>(&self, rx: oneshot::Receiver<Result<T, Error>>) -> Result<T, Error> {
        let t = self.shared.cfg.request_timeout;
        future::or(async { rx.await.unwrap_or(Err(Error::Stopped)) }, async {
            sleep(t).await;
            Err(Error::Timeout)
        })
        .await
    }

    async fn propose(&self, request: Request) -> Result<Applied, Error> {
        if let Some(msg) = self
            .shared
            .poisoned
            .lock()
            .map_err(|_| Error::Stopped)?
            .clone()
        {
            return Err(Error::Log(LogError::Poisoned(msg)));
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let data = Proposal {
            proposer: self.shared.cfg.member_id,
            id,
            request,
        }
        .encode();
        let (done, rx) = oneshot::channel();
        let accepted = Arc::new(AtomicBool::new(false));
        self.tx
            .send(Cmd::Propose {
                id,
                data,
                accepted: accepted.clone(),
                done,
            })
            .await
            .map_err(|_| Error::Stopped)?;
        match self.with_timeout(rx).await {
            Err(Error::Timeout) if !accepted.load(Ordering::Acquire) => Err(Error::NotProposed),
            r => r,
        }
    }

    /// ReadIndex: resolves once this member has applied everything that was
    /// committed when the read arrived.
    pub async fn read_barrier(&self) -> Result<(), Error> {
        // A planted bug for the fault tests (feature `failpoints` only):
        // serve "linearizable" reads from local state without ReadIndex.
        #[cfg(feature = "failpoints")]
        fail::fail_point!("raftcore::read_barrier::skip", |_| Ok(()));
        if self.shared.sole_leader.load(Ordering::Acquire) {
            return Ok(());
        }
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Read { done })
            .await
            .map_err(|_| Error::Stopped)?;
        self.with_timeout(rx).await
    }

    pub async fn range(
        &self,
        req: &RangeRequest,
        serializable: bool,
    ) -> Result<RangeResponse, Error> {
        if !serializable {
            self.read_barrier().await?;
        }
        Ok(self.read_store()?.range(req)?)
    }

    /// A put; its lease (if any) is checked when the entry is applied.
    pub async fn put(&self, req: PutRequest) -> Result<PutResponse, Error> {
        match self.propose(Request::Put(req)).await? {
            Applied::Put(r) => Ok(r),
            _ => Err(Error::Stopped),
        }
    }

    pub async fn delete_range(
        &self,
        req: DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, Error> {
        match self.propose(Request::DeleteRange(req)).await? {
            Applied::DeleteRange(r) => Ok(r),
            _ => Err(Error::Stopped),
        }
    }

    /// A txn; read-only ones are served locally after a read barrier (or none
    /// when every range in it is serializable), like etcd.
    pub async fn txn(&self, req: TxnRequest, serializable: bool) -> Result<TxnResponse, Error> {
        if is_read_only(&req) {
            if !serializable {
                self.read_barrier().await?;
            }
            return Ok(self.write_store()?.txn(&req)?);
        }
        match self.propose(Request::Txn(req)).await? {
            Applied::Txn(r) => Ok(r),
            _ => Err(Error::Stopped),
        }
    }

    pub async fn compact(&self, revision: i64, physical: bool) -> Result<CompactResponse, Error> {
        match self
            .propose(Request::Compact { revision, physical })
            .await?
        {
            Applied::Compact(r) => Ok(r),
            _ => Err(Error::Stopped),
        }
    }
}

/// Milliseconds since the epoch shifted left by 20 bits (etcd's idutil does
/// the same with 8): a process would have to propose over a million
/// entries per millisecond of its life to reach the ids of the next one.
/// Never 0 (id 0 is "no waiter").
fn first_proposal_id() -> u64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    (ms << 20).max(1)
}

fn is_read_only(t: &TxnRequest) -> bool {
    t.success.iter().chain(t.failure.iter()).all(|op| match op {
        RequestOp::Range(_) => true,
        RequestOp::Txn(t) => is_read_only(t),
        _ => false,
    })
}

/// Applies one request to the store and the lessor. Deterministic: every
/// member computes the same result from the same entry. Lease checks happen
/// here, at apply time, as in etcd (module `lease`).
fn apply_request(
    store: &mut Store,
    lessor: &mut engine::lease::Lessor,
    members: &Members,
    req: &Request,
) -> Result<Applied, Error> {
    if let Some(r) = lease::apply_with_leases(store, lessor, req) {
        return r;
    }
    Ok(match req {
        Request::Publish {
            member_id,
            name,
            client_urls,
        } => {
            // Attributes of a member that is not (or no longer) in the
            // cluster are dropped, as etcd does.
            members
                .write()
                .map_err(|_| Error::Stopped)?
                .publish(*member_id, name, client_urls);
            Applied::Published
        }
        Request::Compact { revision, .. } => Applied::Compact(store.compact(*revision)?),
        // Handled by `lease::apply_with_leases`.
        Request::Put(_)
        | Request::DeleteRange(_)
        | Request::Txn(_)
        | Request::LeaseGrant { .. }
        | Request::LeaseRevoke { .. }
        | Request::LeaseCheckpoint(_)
        // Handled by `alarm::intercept`.
        | Request::Alarm { .. } => return Err(Error::Stopped),
    })
}

/// The Raft ready loop. Run it with [`RaftLoop::run`] on one executor.
pub struct RaftLoop {
    raw: RawNode<SnapStorage>,
    rx: async_channel::Receiver<Cmd>,
    /// Messages for peers, drained by the transport.
    outbound: async_channel::Sender<(u64, Vec<u8>)>,
    shared: Arc<Shared>,
    /// Proposals of ours not yet applied, by id.
    waiters: HashMap<u64, Reply<Applied>>,
    /// Proposals raft dropped (no leader yet); retried on every round until
    /// their caller times out.
    unproposed: Vec<(u64, Vec<u8>, Arc<AtomicBool>)>,
    /// Reads not yet sent as a ReadIndex request.
    pending_reads: Vec<Reply<()>>,
    /// ReadIndex requests in flight, by context.
    read_batches: HashMap<u64, Vec<Reply<()>>>,
    /// When each ReadIndex request went out, oldest first. Raft does not
    /// retry a ReadIndex whose message or answer was lost between members,
    /// so a batch unanswered after `READ_RETRY` is asked again.
    read_issued: VecDeque<(u64, Instant)>,
    /// Reads whose index is known, waiting for apply to reach it.
    /// Invariant: ordered by index.
    reads_after_apply: VecDeque<(u64, Vec<Reply<()>>)>,
    read_seq: u64,
    /// Background checkpoints into the B-tree file, if there is one.
    checkpointer: Option<Checkpointer>,
    /// MoveLeader calls waiting for their target to lead.
    transfers: Vec<(u64, Reply<()>)>,
    /// When this member last proposed its attributes (etcd's publish).
    published_at: Option<Instant>,
    /// Its attributes are applied: stop checking on every Ready.
    published: bool,
    /// When this member learnt it was removed (module `members`).
    removed_at: Option<Instant>,
    /// Snapshots for the transport (module `snapshot`).
    snap_outbound: async_channel::Sender<OutgoingSnapshot>,
    /// Members whose snapshot could not be handed to the transport; raft
    /// hears of it after the current Ready.
    snap_failures: Vec<u64>,
    /// The Raft configuration as of the checkpoint in flight that makes
    /// an image, for the snapshot's metadata.
    image_meta: Option<ConfState>,
}

/// The state a node starts from besides its Raft log.
#[derive(Default)]
pub struct Recovered {
    /// The key space as of `applied`.
    pub store: Store,
    pub applied: AppliedState,
    /// The B-tree file to checkpoint into, and how often.
    pub backend: Option<(Arc<Db>, CheckpointConfig)>,
    /// The member list persisted with `applied` (engine::members), if any.
    pub members: Option<engine::members::MembersState>,
}

/// etcd's `adjustTicks` for `--initial-election-tick-advance`: for up to
/// 5 s after start (rafthttp's ConnReadTimeout), once more than one peer is
/// reachable and no leader is known yet, fast-forward `election_ticks - 2`
/// ticks (2 spare, in case a leader's first message is just slow). Once.
///
/// Beyond etcd: in a cluster that never had a leader (term 1, the
/// bootstrap term), the voter with the lowest ID campaigns at that moment
/// instead of waiting out the rest of its randomized timeout, so a fresh
/// cluster serves a few round trips after its members can reach each
/// other. Timing never affects Raft's safety, and with pre-vote a
/// campaign cannot disrupt a leader the others already follow.
struct TickAdvance {
    until: Option<Instant>,
    ticks: usize,
}

impl TickAdvance {
    fn new(cfg: &NodeConfig) -> TickAdvance {
        TickAdvance {
            until: cfg
                .initial_election_tick_advance
                .then(|| Instant::now() + Duration::from_secs(5)),
            ticks: cfg.election_ticks.saturating_sub(2),
        }
    }

    /// What to do now (almost always nothing).
    fn due(
        &mut self,
        raw: &RawNode<SnapStorage>,
        directory: &PeerDirectory,
        now: Instant,
    ) -> Advance {
        let Some(until) = self.until else {
            return Advance::Nothing;
        };
        if now > until || raw.raft.leader_id != 0 {
            self.until = None;
            return Advance::Nothing;
        }
        let me = raw.raft.id;
        let voters = raw.raft.prs().conf().voters().ids();
        if voters.len() < 2 {
            self.until = None;
            return Advance::Nothing;
        }
        let active = voters
            .iter()
            .filter(|&id| id != me && directory.active_since(id).is_some())
            .count();
        if active > 1 {
            self.until = None;
            let lowest = voters.iter().min() == Some(me);
            if raw.raft.term <= 1 && lowest && raw.raft.promotable() {
                return Advance::Campaign;
            }
            return Advance::Ticks(self.ticks);
        }
        Advance::Nothing
    }
}

enum Advance {
    Nothing,
    Ticks(usize),
    Campaign,
}

impl RaftLoop {
    /// Runs until every `Node` handle is dropped or the log fails. `log` is
    /// passed here rather than to `Node::new` because a file-backed log
    /// belongs to the executor that runs the loop.
    pub async fn run<L: LogStore>(mut self, mut log: L) -> Result<(), Error> {
        let tick = self.shared.cfg.heartbeat;
        // Apply the bootstrap entries first: raft refuses to campaign while
        // a configuration change is committed but not applied.
        if self.raw.has_ready() {
            self.on_ready(&mut log).await?;
        }
        // A sole voter need not wait an election timeout to lead.
        if self.raw.raft.prs().conf().voters().ids().len() == 1 {
            self.raw.campaign()?;
        }
        let mut advance = TickAdvance::new(&self.shared.cfg);
        let mut next_tick = Instant::now() + tick;
        loop {
            let now = Instant::now();
            if now >= next_tick {
                self.raw.tick();
                self.lease_tick();
                next_tick = now + tick;
                match advance.due(&self.raw, &self.shared.directory, now) {
                    Advance::Nothing => {}
                    Advance::Ticks(n) => {
                        for _ in 0..n {
                            self.raw.tick();
                        }
                        self.shared
                            .ticks_advanced
                            .store(n as u64, Ordering::Release);
                    }
                    Advance::Campaign => {
                        self.raw.campaign()?;
                        self.shared
                            .ticks_advanced
                            .store(u64::MAX, Ordering::Release);
                    }
                }
            } else if !self.raw.has_ready() {
                let wait = next_tick - now;
                let ckpt = self.checkpointer.as_mut().filter(|c| c.in_flight());
                let got = future::or(
                    async { Wake::Cmd(self.rx.recv().await) },
                    future::or(
                        async {
                            match ckpt {
                                Some(c) => Wake::Checkpointed(c.finished().await),
                                None => std::future::pending().await,
                            }
                        },
                        async {
                            sleep(wait).await;
                            Wake::Tick
                        },
                    ),
                )
                .await;
                match got {
                    Wake::Cmd(Ok(cmd)) => self.handle(cmd),
                    Wake::Cmd(Err(_)) => return Ok(()),
                    Wake::Checkpointed(Ok(st)) => {
                        self.on_checkpointed(&mut log, st).await?;
                    }
                    // A failed B-tree commit (e.g. fdatasync error) poisons
                    // the file: everything acknowledged is still in the WAL,
                    // so refuse writes, keep serving reads, and let a
                    // restart recover from disk.
                    Wake::Checkpointed(Err(msg)) => {
                        return self.serve_poisoned(format!("backend: {msg}")).await;
                    }
                    Wake::Tick => {}
                }
            }
            // Everything that queued up while we were busy (e.g. during the
            // last fdatasync) goes into the next Ready together.
            while let Ok(cmd) = self.rx.try_recv() {
                self.handle(cmd);
            }
            for to in std::mem::take(&mut self.snap_failures) {
                self.raw.report_snapshot(to, raft::SnapshotStatus::Failure);
            }
            self.retry_unproposed();
            self.reissue_stale_reads();
            if !self.pending_reads.is_empty() && self.shared.leader.load(Ordering::Acquire) != 0 {
                let seq = self.read_seq;
                self.read_seq += 1;
                self.raw.read_index(seq.to_le_bytes().to_vec());
                self.read_batches
                    .insert(seq, std::mem::take(&mut self.pending_reads));
                self.read_issued.push_back((seq, Instant::now()));
            }
            if self.raw.has_ready() {
                if let Err(e) = self.on_ready(&mut log).await {
                    return match e {
                        // fsyncgate: after a failed write or sync the log's
                        // state is unknown; never retry. Refuse writes, keep
                        // serving what was applied.
                        Error::Log(LogError::Poisoned(msg)) => self.serve_poisoned(msg).await,
                        other => Err(other),
                    };
                }
            }
            self.maybe_checkpoint()?;
            self.check_removed()?;
        }
    }

    /// The log failed: fail every pending and future write with the
    /// poison error and keep answering reads (the applied state is still
    /// exactly what was acknowledged). A restart recovers from disk.
    async fn serve_poisoned(mut self, msg: String) -> Result<(), Error> {
        let err = || Error::Log(LogError::Poisoned(msg.clone()));
        *self.shared.poisoned.lock().map_err(|_| Error::Stopped)? = Some(msg.clone());
        for (_, w) in self.waiters.drain() {
            let _ = w.send(Err(err()));
        }
        self.unproposed.clear();
        let mut reads: Vec<Reply<()>> = std::mem::take(&mut self.pending_reads);
        reads.extend(self.read_batches.drain().flat_map(|(_, b)| b));
        reads.extend(self.reads_after_apply.drain(..).flat_map(|(_, b)| b));
        for r in reads {
            let _ = r.send(Ok(()));
        }
        while let Ok(cmd) = self.rx.recv().await {
            match cmd {
                Cmd::Propose { done, .. } => {
                    let _ = done.send(Err(err()));
                }
                Cmd::Read { done } => {
                    let _ = done.send(Ok(()));
                }
                Cmd::Step(_) | Cmd::SnapshotStatus { .. } => {}
                Cmd::TransferLeader { done, .. } => {
                    let _ = done.send(Err(err()));
                }
                Cmd::Member { done, .. } => {
                    let _ = done.send(Err(err()));
                }
            }
        }
        Ok(())
    }

    /// Starts a background checkpoint when one is due.
    fn maybe_checkpoint(&mut self) -> Result<(), Error> {
        let applied = self.shared.applied.load(Ordering::Acquire);
        let due = match self.checkpointer.as_ref() {
            Some(c) if !c.in_flight() => c.due(applied),
            _ => return Ok(()),
        };
        // An image for a follower that needs a snapshot rides on the next
        // checkpoint, due or not (module `snapshot`).
        let image = self.image_wanted();
        if !due && !image {
            return Ok(());
        }
        let term = self.raw.raft.raft_log.term(applied).unwrap_or(0);
        let conf = self.raw.raft.prs().conf().to_conf_state();
        // Keys, leases and the configuration as of the same applied index,
        // for one commit.
        let cp = {
            let mut store = self.shared.store.write().map_err(|_| Error::Stopped)?;
            let mut cp = store.take_checkpoint();
            cp.set_leases(
                self.shared
                    .lessor
                    .lock()
                    .map_err(|_| Error::Stopped)?
                    .take_changes(),
            );
            cp.set_members(
                self.shared
                    .members
                    .write()
                    .map_err(|_| Error::Stopped)?
                    .take_dirty(),
            );
            cp.set_alarms(
                self.shared
                    .alarms
                    .lock()
                    .map_err(|_| Error::Stopped)?
                    .take_changes(),
            );
            cp
        };
        let image_path = match (&self.shared.snap_dir, image) {
            (Some(dir), true) => {
                self.image_meta = Some(conf);
                Some(snapshot::outgoing_path(dir, applied))
            }
            _ => None,
        };
        let Some(c) = self.checkpointer.as_mut() else {
            return Ok(());
        };
        c.submit(
            cp,
            AppliedState {
                index: applied,
                term,
            },
            image_path,
        )
        .map_err(Error::Backend)
    }

    /// A checkpoint is durable: note it in the log and drop the Raft
    /// entries it covers from memory.
    async fn on_checkpointed<L: LogStore>(&mut self, log: &mut L, done: Done) -> Result<(), Error> {
        let st = done.applied;
        log.checkpoint(st.index, st.term).await?;
        self.on_image(st, done.image);
        self.tidy_images(st.index);
        Ok(())
    }

    /// Drops applied entries from the in-memory Raft log (the WAL keeps
    /// them until a checkpoint covers them; restart reads them from there).
    /// etcd compacts only every --snapshot-count applied entries (keeping
    /// --experimental-snapshot-catchup-entries), so it holds up to 105k
    /// entries in memory. Here the log keeps the catch-up entries, and as a
    /// leader also what a lagging member still needs, but never more than
    /// --snapshot-count entries behind the applied index (a member further
    /// behind gets a snapshot). A sole voter has no one to keep entries
    /// for. The entry at the compaction index stays: raft needs its term.
    /// Runs once a batch of entries can go (1024, fewer when the catch-up
    /// count is smaller), so the entries kept are moved in memory rarely.
    fn compact_log(&mut self) -> Result<(), Error> {
        let cfg = &self.shared.cfg;
        let batch = cfg.snapshot_catchup_entries.clamp(1, 1024);
        let applied = self.raw.raft.raft_log.applied;
        let first = raft::Storage::first_index(self.raw.store())?;
        if applied < first + batch {
            return Ok(());
        }
        let conf = self.raw.raft.prs().conf();
        let alone = conf.voters().ids().len() == 1 && conf.learners().is_empty();
        let upto = if alone {
            applied
        } else {
            let keep = applied.saturating_sub(cfg.snapshot_catchup_entries);
            if self.raw.raft.state == StateRole::Leader {
                let me = cfg.member_id;
                let lagging = self
                    .raw
                    .raft
                    .prs()
                    .iter()
                    .filter(|(id, _)| **id != me)
                    .map(|(_, p)| p.matched)
                    .min()
                    .unwrap_or(applied);
                keep.min(lagging.max(applied.saturating_sub(cfg.snapshot_count)))
            } else {
                keep
            }
        };
        if upto >= first + batch {
            self.raw.mut_store().wl().compact(upto)?;
        }
        Ok(())
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Propose {
                id,
                data,
                accepted,
                done,
            } => {
                self.waiters.insert(id, done);
                if self.raw.propose(Vec::new(), data.clone()).is_ok() {
                    accepted.store(true, Ordering::Release);
                } else {
                    self.unproposed.push((id, data, accepted));
                }
            }
            Cmd::Read { done } => self.pending_reads.push(done),
            Cmd::Member { change, done } => self.handle_member(change, done),
            Cmd::TransferLeader { target, done } => {
                if self.raw.raft.state != StateRole::Leader {
                    let _ = done.send(Err(Error::NotLeader));
                } else if !self.raw.raft.prs().conf().voters().contains(target) {
                    let _ = done.send(Err(Error::BadLeaderTransferee));
                } else if target == self.shared.cfg.member_id {
                    let _ = done.send(Ok(()));
                } else {
                    self.raw.transfer_leader(target);
                    self.transfers.push((target, done));
                }
            }
            Cmd::Step(m) => {
                // A message from a member we do not know, or a stale one:
                // raft drops or answers it; an error is not ours to report.
                let _ = self.raw.step(*m);
            }
            Cmd::SnapshotStatus { to, ok } => {
                let status = if ok {
                    raft::SnapshotStatus::Finish
                } else {
                    raft::SnapshotStatus::Failure
                };
                self.raw.report_snapshot(to, status);
            }
        }
    }

    /// Re-queues read batches whose ReadIndex went unanswered for too long.
    fn reissue_stale_reads(&mut self) {
        while let Some(&(seq, at)) = self.read_issued.front() {
            if !self.read_batches.contains_key(&seq) {
                self.read_issued.pop_front();
                continue;
            }
            if at.elapsed() < READ_RETRY {
                break;
            }
            self.read_issued.pop_front();
            if let Some(batch) = self.read_batches.remove(&seq) {
                self.pending_reads
                    .extend(batch.into_iter().filter(|r| !r.is_canceled()));
            }
        }
    }

    /// Proposes again what raft dropped for want of a leader, once one is
    /// known: the leader appends it, a follower forwards it (as etcd's raft
    /// node accepts a blocked proposal once it learns a leader). Dropped
    /// proposals went nowhere, so this cannot duplicate an entry.
    fn retry_unproposed(&mut self) {
        if self.unproposed.is_empty() || self.raw.raft.leader_id == raft::INVALID_ID {
            // Drop the ones whose caller gave up.
            self.unproposed
                .retain(|(id, _, _)| self.waiters.get(id).is_some_and(|w| !w.is_canceled()));
            return;
        }
        for (id, data, accepted) in std::mem::take(&mut self.unproposed) {
            if self.waiters.get(&id).is_some_and(|w| !w.is_canceled()) {
                if self.raw.propose(Vec::new(), data.clone()).is_ok() {
                    accepted.store(true, Ordering::Release);
                } else {
                    self.unproposed.push((id, data, accepted));
                }
            }
        }
    }

    /// Records the Raft role and answers what it settles, then publishes
    /// this member's attributes if due. Only outside a Ready (it may
    /// propose).
    fn update_role(&mut self) {
        self.note_role();
        self.maybe_publish();
    }

    /// [`Self::update_role`] without proposing anything.
    fn note_role(&mut self) {
        let leader = self.raw.raft.leader_id;
        self.shared.leader.store(leader, Ordering::Release);
        // Raft's configuration is the truth, whichever way it changed (a
        // conf change or an installed snapshot).
        let me = self.shared.cfg.member_id;
        self.shared.learner.store(
            self.raw.raft.prs().conf().learners().contains(&me),
            Ordering::Release,
        );
        self.shared
            .term
            .store(self.raw.raft.term, Ordering::Release);
        self.shared
            .last_index
            .store(self.raw.raft.raft_log.last_index(), Ordering::Release);
        let caught_up = self.raw.raft.commit_to_current_term()
            && self.shared.applied.load(Ordering::Acquire) >= self.raw.raft.raft_log.committed;
        if leader != 0 && caught_up {
            self.shared.serving.store(true, Ordering::Release);
        }
        let sole = self.raw.raft.state == StateRole::Leader
            && caught_up
            && self.raw.raft.prs().conf().voters().ids().len() == 1
            && self.raw.raft.prs().conf().learners().is_empty();
        self.shared.sole_leader.store(sole, Ordering::Release);
        if leader != 0 {
            for (target, done) in std::mem::take(&mut self.transfers) {
                if target == leader {
                    let _ = done.send(Ok(()));
                } else if !done.is_canceled() {
                    self.transfers.push((target, done));
                }
            }
        }
        self.update_lessor();
    }

    /// Proposes this member's name and client URLs once it serves, and
    /// again every few seconds until they are applied (etcd's publish).
    fn maybe_publish(&mut self) {
        if self.published || !self.shared.serving.load(Ordering::Acquire) {
            return;
        }
        let me = self.shared.cfg.member_id;
        let done = self
            .shared
            .members
            .read()
            .map(|m| {
                m.get(me).is_some_and(|i| {
                    i.name == self.shared.cfg.name && i.client_urls == self.shared.cfg.client_urls
                })
            })
            .unwrap_or(true);
        if done {
            // Applied: nothing more to do for this process's life.
            self.published = true;
            return;
        }
        if self
            .published_at
            .is_some_and(|t| t.elapsed() < Duration::from_secs(3))
        {
            return;
        }
        self.published_at = Some(Instant::now());
        let data = Proposal {
            proposer: me,
            // No waiter: proposal ids are never 0.
            id: 0,
            request: Request::Publish {
                member_id: me,
                name: self.shared.cfg.name.clone(),
                client_urls: self.shared.cfg.client_urls.clone(),
            },
        }
        .encode();
        let _ = self.raw.propose(Vec::new(), data);
    }

    async fn on_ready<L: LogStore>(&mut self, log: &mut L) -> Result<(), Error> {
        let mut ready = self.raw.ready();
        if !ready.snapshot().is_empty() {
            // A leader that compacted the entries we miss sent its state
            // instead (module `snapshot`).
            let snap = ready.snapshot().clone();
            self.install_snapshot(log, &snap).await?;
        }
        if ready.ss().is_some() || ready.hs().is_some() {
            // No proposals here: between `ready()` and `advance()` a
            // follower must not create messages (raft-rs panics "not leader
            // but has new msg after advance"); publishing waits for the
            // `update_role` after `advance`.
            self.note_role();
        }
        self.send(ready.take_messages());
        let committed = ready.take_committed_entries();
        self.apply(committed)?;
        for rs in ready.take_read_states() {
            self.on_read_state(rs);
        }
        if !ready.entries().is_empty() || ready.hs().is_some() {
            log.append(ready.entries(), ready.hs()).await?;
            let mut st = self.raw.mut_store().wl();
            st.append(ready.entries())?;
            if let Some(hs) = ready.hs() {
                st.set_hardstate(hs.clone());
            }
        }
        self.send(ready.take_persisted_messages());
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw
                .mut_store()
                .wl()
                .mut_hard_state()
                .set_commit(commit);
        }
        self.send(light.take_messages());
        self.apply(light.take_committed_entries())?;
        self.raw.advance_apply();
        self.compact_log()?;
        self.update_role();
        Ok(())
    }

    /// Peer transport comes with multi-member clusters; a sole member sends
    /// nothing.
    /// Hands messages to the peer transport. Never blocks the loop: the
    /// channel is unbounded and Raft tolerates lost messages (a peer that is
    /// down just misses them; raft retries by design).
    fn send(&mut self, msgs: Vec<Message>) {
        for m in msgs {
            if m.get_msg_type() == MessageType::MsgSnapshot {
                self.send_snapshot(m);
                continue;
            }
            let to = m.to;
            if let Ok(b) = protobuf::Message::write_to_bytes(&m) {
                let _ = self.outbound.try_send((to, b));
            }
        }
    }

    fn on_read_state(&mut self, rs: ReadState) {
        let mut b = [0u8; 8];
        if rs.request_ctx.len() != 8 {
            return;
        }
        b.copy_from_slice(&rs.request_ctx);
        let Some(batch) = self.read_batches.remove(&u64::from_le_bytes(b)) else {
            return;
        };
        if rs.index <= self.shared.applied.load(Ordering::Acquire) {
            for r in batch {
                let _ = r.send(Ok(()));
            }
        } else {
            // Read indexes are handed out in increasing order.
            self.reads_after_apply.push_back((rs.index, batch));
        }
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), Error> {
        let Some(last) = entries.last().map(|e| e.index) else {
            return Ok(());
        };
        let me = self.shared.cfg.member_id;
        let mut replies = Vec::new();
        // Watch hook: events of the revisions this batch creates, collected
        // under the write lock right after each write (a compaction later in
        // the batch could otherwise hide a delete), only if someone watches;
        // deciding that under the write lock is what makes a concurrent
        // registration safe (engine::watch module docs, "Registration").
        let mut events = Vec::new();
        let published;
        {
            let mut store = self.shared.store.write().map_err(|_| Error::Stopped)?;
            let mut lessor = self.shared.lessor.lock().map_err(|_| Error::Stopped)?;
            let watching = self.shared.watch.has_watchers();
            for e in &entries {
                match e.get_entry_type() {
                    EntryType::EntryNormal => {
                        // The leader's empty entry at the start of its term.
                        if e.data.is_empty() {
                            continue;
                        }
                        let p = Proposal::decode(&e.data)?;
                        let before = store.current_revision();
                        let result = match alarm::intercept(&self.shared.alarms, &p.request) {
                            Some(r) => r,
                            None => apply_request(
                                &mut store,
                                &mut lessor,
                                &self.shared.members,
                                &p.request,
                            ),
                        };
                        if watching {
                            engine::watch::collect_events(&store, before, &mut events);
                        }
                        if p.proposer == me {
                            if let Some(w) = self.waiters.remove(&p.id) {
                                replies.push((w, result));
                            }
                        }
                    }
                    EntryType::EntryConfChange => members::apply_conf_entry(
                        &mut self.raw,
                        &self.shared,
                        &mut self.waiters,
                        &mut replies,
                        &e.data,
                    )?,
                    EntryType::EntryConfChangeV2 => {
                        let mut cc = ConfChangeV2::default();
                        protobuf::Message::merge_from_bytes(&mut cc, &e.data)
                            .map_err(|_| DecodeError("conf change v2"))?;
                        self.raw.apply_conf_change(&cc)?;
                    }
                }
            }
            published = store.current_revision();
        }
        // Watch hook: fan out with the store lock released; never blocks
        // (a slow watcher is moved to the unsynced set instead).
        self.shared.watch.publish(published, events);
        self.shared.applied.store(last, Ordering::Release);
        for (w, r) in replies {
            let _ = w.send(r);
        }
        self.release_reads(last);
        Ok(())
    }

    /// Answers the reads waiting for apply to reach `applied`.
    fn release_reads(&mut self, applied: u64) {
        while self
            .reads_after_apply
            .front()
            .is_some_and(|(i, _)| *i <= applied)
        {
            if let Some((_, batch)) = self.reads_after_apply.pop_front() {
                for r in batch {
                    let _ = r.send(Ok(()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log_store::MemLog;
    use glommio::LocalExecutorBuilder;

    fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
        LocalExecutorBuilder::default()
            .io_memory(256 << 10)
            .spawn(f)
            .expect("executor")
            .join()
            .expect("test");
    }

    /// A restarted member (a new process, a new `Node`) must not reuse the
    /// proposal ids of its previous life (see `Shared::next_id`).
    #[test]
    fn proposal_ids_are_not_reused_by_a_restarted_member() {
        run(|| async {
            let (node, lp) = Node::new(NodeConfig::new(1, 7)).unwrap();
            glommio::spawn_local(lp.run(MemLog::default())).detach();
            assert!(node.wait_leader(Duration::from_secs(5)).await);
            for i in 0..20 {
                node.put(PutRequest {
                    key: format!("k{i}").into_bytes(),
                    value: b"v".to_vec(),
                    ..Default::default()
                })
                .await
                .unwrap();
            }
            let used = node.shared.next_id.load(Ordering::Relaxed);
            drop(node);
            glommio::timer::sleep(Duration::from_millis(2)).await;
            let (again, _lp) = Node::new(NodeConfig::new(1, 7)).unwrap();
            let first = again.shared.next_id.load(Ordering::Relaxed);
            assert!(
                first > used,
                "restarted member starts at proposal id {first}, its previous life reached {used}"
            );
        });
    }

    #[test]
    fn writes_go_through_raft_one_revision_each_and_reads_see_them() {
        run(|| async {
            let (node, lp) = Node::new(NodeConfig::new(1, 7)).unwrap();
            glommio::spawn_local(lp.run(MemLog::default())).detach();
            assert!(node.wait_leader(Duration::from_secs(5)).await);
            assert_eq!(node.leader(), 7);
            assert!(node.term() >= 1);
            let mut tasks = Vec::new();
            for i in 0..50 {
                let n = node.clone();
                tasks.push(glommio::spawn_local(async move {
                    n.put(PutRequest {
                        key: format!("k{i}").into_bytes(),
                        value: b"v".to_vec(),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .revision
                }));
            }
            let mut revs = Vec::new();
            for t in tasks {
                revs.push(t.await);
            }
            revs.sort();
            assert_eq!(revs, (2..52).collect::<Vec<i64>>());
            let r = node
                .range(
                    &RangeRequest {
                        key: vec![0],
                        range_end: vec![0],
                        count_only: true,
                        ..Default::default()
                    },
                    false,
                )
                .await
                .unwrap();
            assert_eq!(r.count, 50);
            assert!(node.applied_index() >= 51);
        });
    }

    #[test]
    fn errors_of_applied_requests_reach_the_proposer() {
        run(|| async {
            let (node, lp) = Node::new(NodeConfig::new(1, 7)).unwrap();
            glommio::spawn_local(lp.run(MemLog::default())).detach();
            assert!(matches!(
                node.compact(100, false).await,
                Err(Error::Mvcc(engine::mvcc::Error::FutureRevision))
            ));
            assert!(matches!(
                node.put(PutRequest {
                    key: b"k".to_vec(),
                    lease: 3,
                    ..Default::default()
                })
                .await,
                Err(Error::LeaseNotFound)
            ));
        });
    }

    #[test]
    fn a_failed_log_write_poisons_writes_and_keeps_reads() {
        run(|| async {
            struct FailAt(u64);
            impl LogStore for FailAt {
                async fn append(
                    &mut self,
                    _e: &[Entry],
                    _h: Option<&raft::eraftpb::HardState>,
                ) -> Result<(), LogError> {
                    self.0 = self.0.saturating_sub(1);
                    if self.0 == 0 {
                        return Err(LogError::Poisoned("injected fdatasync error".into()));
                    }
                    Ok(())
                }
            }
            let (node, lp) = Node::new(NodeConfig::new(1, 7)).unwrap();
            // Appends: campaign, empty entry of the term, first put; the
            // fourth (second put) fails.
            glommio::spawn_local(lp.run(FailAt(4))).detach();
            assert!(node.wait_leader(Duration::from_secs(5)).await);
            let put = |k: &str| PutRequest {
                key: k.into(),
                value: b"v".to_vec(),
                ..Default::default()
            };
            let mut ok = 0;
            let mut failed = 0;
            for i in 0..4 {
                match node.put(put(&format!("k{i}"))).await {
                    Ok(_) => ok += 1,
                    Err(Error::Log(LogError::Poisoned(m))) => {
                        assert!(m.contains("injected"));
                        failed += 1
                    }
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            assert!(ok >= 1 && failed >= 2, "ok {ok} failed {failed}");
            let r = node
                .range(
                    &RangeRequest {
                        key: vec![0],
                        range_end: vec![0],
                        ..Default::default()
                    },
                    false,
                )
                .await
                .unwrap();
            assert_eq!(r.kvs.len(), ok, "reads still serve what was acknowledged");
        });
    }

    #[test]
    fn group_commit_batches_concurrent_proposals() {
        run(|| async {
            struct Slow(Rc<std::cell::Cell<u64>>);
            impl LogStore for Slow {
                async fn append(
                    &mut self,
                    _e: &[Entry],
                    _h: Option<&raft::eraftpb::HardState>,
                ) -> Result<(), LogError> {
                    self.0.set(self.0.get() + 1);
                    sleep(Duration::from_millis(5)).await;
                    Ok(())
                }
            }
            use std::rc::Rc;
            let appends = Rc::new(std::cell::Cell::new(0));
            let (node, lp) = Node::new(NodeConfig::new(1, 7)).unwrap();
            glommio::spawn_local(lp.run(Slow(appends.clone()))).detach();
            assert!(node.wait_leader(Duration::from_secs(5)).await);
            let before = appends.get();
            let mut tasks = Vec::new();
            for i in 0..200 {
                let n = node.clone();
                tasks.push(glommio::spawn_local(async move {
                    n.put(PutRequest {
                        key: format!("k{i}").into_bytes(),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                }));
            }
            for t in tasks {
                t.await;
            }
            let used = appends.get() - before;
            assert!(used < 50, "200 concurrent puts took {used} appends");
        });
    }
}

#[cfg(test)]
mod wal_tests {
    use super::*;
    use crate::wal_log::{bootstrap_log, records_of, recover, WalLog, WalMetadata};
    use engine::wal::{Wal, WalOptions};
    use glommio::LocalExecutorBuilder;

    fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
        LocalExecutorBuilder::default()
            .io_memory(1 << 20)
            .spawn(f)
            .expect("executor")
            .join()
            .expect("test");
    }

    fn opts() -> WalOptions {
        WalOptions {
            segment_size: 1 << 20,
            ..Default::default()
        }
    }

    fn put(k: &str, v: &str) -> PutRequest {
        PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        }
    }

    #[test]
    fn acknowledged_writes_survive_a_restart_from_the_wal() {
        let dir = std::env::temp_dir().join(format!("raftcore-wal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let d = dir.clone();
        run(move || async move {
            let meta = WalMetadata {
                cluster_id: 1,
                member_id: 7,
            };
            let log = bootstrap_log(&[7]).unwrap();
            let wal = Wal::create(&d, &meta.encode(), opts()).await.unwrap();
            wal.append(&records_of(&log)).await.unwrap();
            let (node, lp) = Node::start(NodeConfig::new(1, 7), log).unwrap();
            glommio::spawn_local(async move {
                if let Err(e) = lp.run(WalLog::new(wal)).await {
                    panic!("raft loop failed: {e}")
                }
            })
            .detach();
            assert!(
                node.wait_leader(Duration::from_secs(5)).await,
                "never ready"
            );
            for i in 0..20 {
                node.put(put(&format!("k{i}"), "v")).await.unwrap();
            }
            node.delete_range(DeleteRangeRequest {
                key: b"k3".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap();
        });
        let d = dir.clone();
        run(move || async move {
            let (wal, rec) = Wal::open(&d, opts()).await.unwrap();
            let (meta, log) = recover(&rec).unwrap();
            assert_eq!(meta.member_id, 7);
            let (node, lp) = Node::start(NodeConfig::new(1, 7), log).unwrap();
            glommio::spawn_local(async move {
                if let Err(e) = lp.run(WalLog::new(wal)).await {
                    panic!("raft loop failed: {e}")
                }
            })
            .detach();
            assert!(
                node.wait_leader(Duration::from_secs(5)).await,
                "never ready after restart"
            );
            let r = node
                .range(
                    &RangeRequest {
                        key: vec![0],
                        range_end: vec![0],
                        ..Default::default()
                    },
                    false,
                )
                .await
                .unwrap();
            assert_eq!(r.kvs.len(), 19);
            assert_eq!(r.revision, 22);
            assert_eq!(node.term(), 3, "a restart is a new election");
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod backend_tests {
    use super::*;
    use crate::wal_log::{bootstrap_log, records_of, recover, WalLog, WalMetadata};
    use engine::btree::{Db, Options};
    use engine::wal::{Wal, WalOptions};
    use glommio::LocalExecutorBuilder;

    fn wopts() -> WalOptions {
        WalOptions {
            segment_size: 1 << 16,
            max_wals: 1,
            ..Default::default()
        }
    }

    fn all() -> RangeRequest {
        RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..Default::default()
        }
    }

    /// Writes with frequent checkpoints, a restart from B-tree + WAL tail,
    /// more writes, another restart: every acknowledged write is there, with
    /// its revision, and old WAL segments were released.
    #[test]
    fn restart_from_checkpoint_and_wal_tail_keeps_every_write() {
        let dir = std::env::temp_dir().join(format!("raftcore-backend-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ckpt = CheckpointConfig {
            interval: Duration::from_millis(1),
            limit: 5,
        };
        let mut expected_rev = 1;
        for round in 0..3 {
            let d = dir.clone();
            let got = LocalExecutorBuilder::default()
                .io_memory(1 << 20)
                .spawn(move || async move {
                    let db = Arc::new(Db::open(d.join("db"), Options::default()).unwrap());
                    let (store, applied) = engine::mvcc::load(&db).unwrap();
                    let wd = d.join("wal");
                    let (wal, log) = if Wal::exists(&wd) {
                        let (wal, rec) = Wal::open(&wd, wopts()).await.unwrap();
                        (wal, recover(&rec).unwrap().1)
                    } else {
                        let meta = WalMetadata {
                            cluster_id: 1,
                            member_id: 7,
                        };
                        let log = bootstrap_log(&[7]).unwrap();
                        let wal = Wal::create(&wd, &meta.encode(), wopts()).await.unwrap();
                        wal.append(&records_of(&log)).await.unwrap();
                        (wal, log)
                    };
                    let rec = Recovered {
                        store,
                        applied,
                        backend: Some((db, ckpt)),
                        members: None,
                    };
                    let (node, lp) = Node::start_with(NodeConfig::new(1, 7), log, rec).unwrap();
                    glommio::spawn_local(async move {
                        if let Err(e) = lp.run(WalLog::new(wal)).await {
                            panic!("loop: {e}");
                        }
                    })
                    .detach();
                    assert!(node.wait_leader(Duration::from_secs(5)).await);
                    let before = node.range(&all(), false).await.unwrap();
                    let mut revs = Vec::new();
                    for i in 0..300 {
                        let r = node
                            .put(PutRequest {
                                key: format!("r{round}-{i:03}").into_bytes(),
                                value: vec![b'x'; 200],
                                ..Default::default()
                            })
                            .await
                            .unwrap();
                        revs.push(r.revision);
                        if i % 50 == 0 {
                            sleep(Duration::from_millis(3)).await;
                        }
                    }
                    // The backend thread installs each committed
                    // checkpoint: its records leave memory and are read
                    // from the file.
                    let in_memory = || node.shared.store.read().unwrap().records_in_memory();
                    let deadline = Instant::now() + Duration::from_secs(20);
                    while in_memory() > 0 && Instant::now() < deadline {
                        sleep(Duration::from_millis(5)).await;
                    }
                    assert_eq!(in_memory(), 0, "round {round}: records left in memory");
                    let now = node.range(&all(), false).await.unwrap();
                    assert_eq!(now.kvs.len(), 300 * (round + 1));
                    assert!(now.kvs.iter().all(|kv| kv.value == vec![b'x'; 200]));
                    // After an online defrag the store reads the new file:
                    // no mapping of the old (unlinked) one is left.
                    node.defragment().await.unwrap().unwrap();
                    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
                    let old = format!("{} (deleted)", d.join("db").display());
                    assert!(!maps.contains(&old), "round {round}: old file still mapped");
                    assert_eq!(node.range(&all(), false).await.unwrap().kvs, now.kvs);
                    (before.kvs.len(), before.revision, revs)
                })
                .unwrap()
                .join()
                .unwrap();
            let (n_before, rev_before, revs) = got;
            assert_eq!(n_before, 300 * round, "round {round}: keys after restart");
            assert_eq!(
                rev_before, expected_rev,
                "round {round}: revision after restart"
            );
            assert_eq!(
                revs,
                ((expected_rev + 1)..=(expected_rev + 300)).collect::<Vec<_>>()
            );
            expected_rev += 300;
        }
        let segs = std::fs::read_dir(dir.join("wal")).unwrap().count();
        assert!(
            segs < 10,
            "old WAL segments were released ({segs} files left)"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod cluster_tests {
    //! Three members in one process, wired by channels (no sockets): the
    //! Raft path of a cluster, with a switch to cut a member off.
    use super::*;
    use glommio::LocalExecutorBuilder;

    fn put(k: &str, v: &str) -> PutRequest {
        PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        }
    }

    fn get(k: &str) -> RangeRequest {
        RangeRequest {
            key: k.into(),
            ..Default::default()
        }
    }

    async fn leader_of(nodes: &[Arc<Node>]) -> u64 {
        for _ in 0..500 {
            let l = nodes[0].leader();
            if l != 0 && nodes.iter().all(|n| n.leader() == l) {
                return l;
            }
            sleep(Duration::from_millis(10)).await;
        }
        panic!("no common leader");
    }

    /// `--initial-election-tick-advance`: with both peers reachable at start
    /// (the in-process network marks them so), every member fast-forwards
    /// `election_ticks - 2` ticks once, but for the lowest ID of a fresh
    /// cluster, which campaigns at once; with the flag off, none does.
    #[test]
    fn initial_election_tick_advance_fast_forwards_once_peers_are_up() {
        LocalExecutorBuilder::default()
            .io_memory(1 << 20)
            .spawn(|| async {
                const ON: &[u64] = &[11, 22, 33];
                const OFF: &[u64] = &[44, 55, 66];
                let (on, _) = super::test_cluster::start(ON, |c| c.election_ticks = 30);
                let (off, _) = super::test_cluster::start(OFF, |c| {
                    c.election_ticks = 30;
                    c.initial_election_tick_advance = false;
                });
                leader_of(&on).await;
                leader_of(&off).await;
                // A fresh cluster: the lowest ID campaigns at once instead.
                assert_eq!(on[0].ticks_advanced(), u64::MAX);
                for n in &on[1..] {
                    assert_eq!(n.ticks_advanced(), 28, "member {}", n.config().member_id);
                }
                for n in &off {
                    assert_eq!(n.ticks_advanced(), 0, "member {}", n.config().member_id);
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn three_members_elect_one_leader_and_replicate_through_any_member() {
        LocalExecutorBuilder::default()
            .io_memory(1 << 20)
            .spawn(|| async {
                const IDS: &[u64] = &[11, 22, 33];
                let ids = IDS;
                let (nodes, cut) = super::test_cluster::start(IDS, |_| {});
                let leader = leader_of(&nodes).await;
                assert!(ids.contains(&leader));
                for n in &nodes {
                    assert!(n.wait_leader(Duration::from_secs(5)).await);
                }
                // A write through every member (followers forward to the leader).
                for (i, n) in nodes.iter().enumerate() {
                    n.put(put(&format!("k{i}"), "v")).await.unwrap();
                }
                // Linearizable reads on every member see every write.
                for n in &nodes {
                    for i in 0..3 {
                        let r = n.range(&get(&format!("k{i}")), false).await.unwrap();
                        assert_eq!(r.kvs.len(), 1, "member {} key k{i}", n.config().member_id);
                    }
                }
                // Cut the leader off: the other two elect a new one and keep
                // serving; the old leader cannot commit.
                cut.borrow_mut().insert(leader);
                let rest: Vec<Arc<Node>> = nodes
                    .iter()
                    .filter(|n| n.config().member_id != leader)
                    .cloned()
                    .collect();
                let mut new_leader = 0;
                for _ in 0..500 {
                    let l = rest[0].leader();
                    if l != 0 && l != leader && rest.iter().all(|n| n.leader() == l) {
                        new_leader = l;
                        break;
                    }
                    sleep(Duration::from_millis(10)).await;
                }
                assert_ne!(new_leader, 0, "the majority elected a new leader");
                rest[0].put(put("after", "cut")).await.unwrap();
                let r = rest[1].range(&get("after"), false).await.unwrap();
                assert_eq!(r.kvs.len(), 1);
                let old = nodes
                    .iter()
                    .find(|n| n.config().member_id == leader)
                    .unwrap();
                assert!(
                    old.put(put("lost", "x")).await.is_err(),
                    "the minority cannot commit"
                );
                // Heal: the old leader catches up.
                cut.borrow_mut().clear();
                let mut seen = false;
                for _ in 0..300 {
                    if old
                        .range(&get("after"), true)
                        .await
                        .is_ok_and(|r| r.kvs.len() == 1)
                    {
                        seen = true;
                        break;
                    }
                    sleep(Duration::from_millis(10)).await;
                }
                assert!(seen, "the healed member caught up");
                let lost = old.range(&get("lost"), false).await.unwrap();
                assert!(lost.kvs.is_empty(), "an uncommitted write never appears");
            })
            .unwrap()
            .join()
            .unwrap();
    }
}

/// Test helper shared by the in-process cluster tests: members wired by
/// channels instead of sockets, with a switch to cut members off.
#[cfg(test)]
pub(crate) mod test_cluster {
    use super::*;
    use crate::log_store::MemLog;
    use std::cell::RefCell;
    use std::collections::HashSet;
    use std::rc::Rc;

    /// Members cut off from the network (messages from or to them are dropped).
    pub(crate) type Cut = Rc<RefCell<HashSet<u64>>>;

    /// Starts one member per id (10 ms heartbeat, 3 s request timeout,
    /// `tweak` for anything else) on the current executor and wires their
    /// outbound queues to each other.
    pub(crate) fn start(
        ids: &'static [u64],
        tweak: impl Fn(&mut NodeConfig),
    ) -> (Vec<Arc<Node>>, Cut) {
        let cut: Cut = Rc::default();
        let mut nodes = Vec::new();
        for &id in ids {
            let mut cfg = NodeConfig::new(1, id);
            cfg.voters = ids.to_vec();
            cfg.heartbeat = Duration::from_millis(10);
            cfg.request_timeout = Duration::from_secs(3);
            tweak(&mut cfg);
            let log = crate::wal_log::bootstrap_log(ids).unwrap();
            let (node, lp) = Node::start(cfg, log).unwrap();
            glommio::spawn_local(lp.run(MemLog::default())).detach();
            nodes.push(node);
        }
        for (i, n) in nodes.iter().enumerate() {
            let out = n.take_outbound().unwrap();
            let peers = nodes.clone();
            let cut = cut.clone();
            let from = ids[i];
            glommio::spawn_local(async move {
                while let Ok((to, m)) = out.recv().await {
                    if cut.borrow().contains(&from) || cut.borrow().contains(&to) {
                        continue;
                    }
                    if let Some(p) = ids.iter().position(|x| *x == to) {
                        let _ = peers[p].step(&m).await;
                    }
                }
            })
            .detach();
        }
        // Every peer reachable, as the transport's probes would find.
        for n in &nodes {
            for &id in ids {
                n.peer_directory().note_up(id);
            }
        }
        (nodes, cut)
    }
}
