//! Leases in the apply layer: etcd v3.5's lease flow
//! (server/etcdserver/v3_server.go, apply.go, server.go) on top of
//! `engine::lease::Lessor`.
//!
//! * **Grant, revoke, checkpoint** are Raft entries (proposal kinds 6–8),
//!   applied on every member into the lessor and the key space. A revoke
//!   deletes every attached key in **one** revision, in key order, in the
//!   same apply step that drops the lease; the backend checkpoint persists
//!   both in one B-tree commit.
//! * **Attachments** follow the key space: after each applied write, every
//!   key written at the new revision is attached to the lease in its
//!   `KeyValue` (or detached: lease 0, or deleted). So `put --lease` moves a
//!   key between leases and `ignore_lease` keeps it where it is, exactly as
//!   the stored `KeyValue` says.
//! * **Lease checks** happen at apply time, against the applied lessor, as
//!   in etcd: a put's lease before anything else, a txn's puts of the chosen
//!   branches only (with the `ignore_*` checks, before anything is applied).
//! * **Renewals** (keep-alive) and **TimeToLive** are served by the leader
//!   without a Raft entry; on another member they fail with `NotLeader` and
//!   the network layer forwards them to the leader (as etcd does over its
//!   peer HTTP API).
//! * **Expiry and checkpoints** are decided by the leader: on every Raft
//!   tick (one heartbeat) the loop asks the primary lessor for expired
//!   leases (proposes a revoke for each, at most `LEASE_REVOKE_RATE` per
//!   second) and for due checkpoints (one entry per batch). The lessor is
//!   promoted once this member leads and has applied everything committed
//!   (etcd: on applying the leader's empty entry), demoted as soon as it
//!   does not lead.
//!
//! Lock order: store, then lessor. The loop holds both while applying a
//! batch; renewals and TimeToLive take only the lessor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::MutexGuard;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use engine::lease::{LeaseError, LeaseId, LeaseInfo, Lessor, LessorConfig};
use engine::mvcc::Store;
use glommio::timer::sleep;
use raft::StateRole;

use super::{Applied, Error, Node, NodeConfig, RaftLoop, Request};
use crate::proposal::Proposal;
use engine::btree::Db;

/// How often a waiting renewal or TimeToLive looks again (an expired lease
/// being revoked, a leader being promoted).
const POLL: Duration = Duration::from_millis(20);

/// What `LeaseGrant` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseGrant {
    pub id: i64,
    /// Granted TTL (raised to the minimum).
    pub ttl: i64,
    /// Header revision (the store's, at apply).
    pub revision: i64,
}

impl From<LeaseError> for Error {
    fn from(e: LeaseError) -> Error {
        match e {
            LeaseError::NotFound | LeaseError::Expired => Error::LeaseNotFound,
            LeaseError::Exists => Error::LeaseExists,
            LeaseError::TtlTooLarge => Error::LeaseTtlTooLarge,
            LeaseError::NotPrimary => Error::NotLeader,
        }
    }
}

/// etcd's `idutil.Generator` for lease IDs: the member ID's low 16 bits,
/// then 40 bits of the start time in milliseconds and an 8-bit counter that
/// may carry into the time (unique across restarts more than 1 ms apart).
pub(super) struct LeaseIds {
    prefix: u64,
    suffix: AtomicU64,
}

const SUFFIX_BITS: u32 = 40 + 8;

impl LeaseIds {
    pub(super) fn new(member_id: u64) -> LeaseIds {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        LeaseIds {
            prefix: (member_id & 0xffff) << SUFFIX_BITS,
            suffix: AtomicU64::new((ms & ((1 << 40) - 1)) << 8),
        }
    }

    /// A positive ID (etcd: `Next() & (1<<63 - 1)`, never 0).
    fn next(&self) -> i64 {
        loop {
            let s = self.suffix.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
            let id = (self.prefix | (s & ((1 << SUFFIX_BITS) - 1))) & (u64::MAX >> 1);
            if id != 0 {
                return id as i64;
            }
        }
    }
}

/// etcd's minimum TTL: `ceil((3 * election_ticks / 2) * heartbeat)` seconds
/// (integer division of the ticks, as in etcd's server.go), so a lease
/// outlives a leader election.
pub(super) fn min_ttl(cfg: &NodeConfig) -> i64 {
    let ticks = u32::try_from(3 * cfg.election_ticks / 2).unwrap_or(u32::MAX);
    let d = cfg.heartbeat.saturating_mul(ticks);
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// The lessor as of the recovered state: the leases in the backend file
/// (same commit as `store`), with the keys of `store` attached.
pub(super) fn recover_lessor(
    cfg: &NodeConfig,
    db: Option<&Db>,
    store: &Store,
) -> Result<Lessor, Error> {
    let lcfg = LessorConfig {
        min_ttl: min_ttl(cfg),
        checkpoint_interval: cfg.lease_checkpoint_interval,
        expired_retry_interval: cfg.request_timeout,
    };
    let records = match db {
        Some(db) => engine::lease::load(db)
            .map_err(|e| Error::Backend(format!("cannot load leases: {e}")))?,
        None => Vec::new(),
    };
    let mut lessor = Lessor::restore(lcfg, records);
    if !lessor.is_empty() {
        // Replaying the history leaves every key with its current lease.
        store
            .key_leases_since(0, |key, lease| {
                lessor.set_key_lease(key, LeaseId(lease));
            })
            .map_err(|e| Error::Backend(format!("cannot attach keys to leases: {e}")))?;
    }
    Ok(lessor)
}

/// Keeps the lessor's attachments in step with the writes made after
/// revision `before`. No lease means no attachment can exist (a put with a
/// lease needs the lease), so the common case costs nothing. The writes
/// are in memory (not checkpointed yet), so this fails only if the store is
/// broken.
fn sync_key_leases(store: &Store, lessor: &mut Lessor, before: i64) -> Result<(), Error> {
    if lessor.is_empty() || store.current_revision() == before {
        return Ok(());
    }
    store
        .key_leases_since(before, |key, lease| {
            lessor.set_key_lease(key, LeaseId(lease));
        })
        .map_err(Error::Mvcc)
}

fn lease_checked(e: engine::mvcc::Error) -> Error {
    match e {
        engine::mvcc::Error::LeaseNotFound => Error::LeaseNotFound,
        e => Error::Mvcc(e),
    }
}

/// Applies the KV and lease requests that touch the lessor; `None` for the
/// others. Deterministic given the same entries (the clock only sets
/// primary deadlines, which are not replicated).
pub(super) fn apply_with_leases(
    store: &mut Store,
    lessor: &mut Lessor,
    req: &Request,
) -> Option<Result<Applied, Error>> {
    let before = store.current_revision();
    let r = match req {
        Request::Put(p) => {
            // etcd checks the lease before anything else (apply.go Put).
            if p.lease != 0 && !lessor.contains(LeaseId(p.lease)) {
                return Some(Err(Error::LeaseNotFound));
            }
            store.put(p).map(Applied::Put).map_err(Error::Mvcc)
        }
        Request::DeleteRange(d) => store
            .delete_range(d)
            .map(Applied::DeleteRange)
            .map_err(Error::Mvcc),
        Request::Txn(t) => store
            .txn_checked(t, &|id| lessor.contains(LeaseId(id)))
            .map(Applied::Txn)
            .map_err(lease_checked),
        Request::LeaseGrant { id, ttl } => lessor
            .grant(LeaseId(*id), *ttl, Instant::now())
            .map(|ttl| {
                Applied::LeaseGranted(LeaseGrant {
                    id: *id,
                    ttl,
                    revision: store.current_revision(),
                })
            })
            .map_err(Error::from),
        Request::LeaseRevoke { id } => revoke(store, lessor, LeaseId(*id)),
        Request::LeaseCheckpoint(cps) => {
            let now = Instant::now();
            for (id, remaining) in cps {
                lessor.checkpoint(LeaseId(*id), *remaining, now);
            }
            Ok(Applied::LeaseCheckpointed)
        }
        _ => return None,
    };
    if let Err(e) = sync_key_leases(store, lessor, before) {
        return Some(Err(e));
    }
    Some(r)
}

/// etcd's `Revoke`: the attached keys, sorted, deleted in one revision, and
/// the lease removed, in one apply step.
fn revoke(store: &mut Store, lessor: &mut Lessor, id: LeaseId) -> Result<Applied, Error> {
    let keys = lessor.keys(id)?;
    let before = store.current_revision();
    store.delete_keys(&keys)?;
    sync_key_leases(store, lessor, before)?;
    lessor.revoke(id)?;
    Ok(Applied::LeaseRevoked {
        revision: store.current_revision(),
    })
}

impl Node {
    fn lessor(&self) -> Result<MutexGuard<'_, Lessor>, Error> {
        self.shared.lessor.lock().map_err(|_| Error::Stopped)
    }

    /// LeaseGrant: `id` 0 lets the server choose a unique positive ID.
    pub async fn lease_grant(&self, id: i64, ttl: i64) -> Result<LeaseGrant, Error> {
        let id = if id == 0 { self.lease_ids.next() } else { id };
        match self.propose(Request::LeaseGrant { id, ttl }).await? {
            Applied::LeaseGranted(g) => Ok(g),
            _ => Err(Error::Stopped),
        }
    }

    /// LeaseRevoke: deletes the attached keys (one revision) and the lease.
    /// Returns the header revision.
    pub async fn lease_revoke(&self, id: i64) -> Result<i64, Error> {
        match self.propose(Request::LeaseRevoke { id }).await? {
            Applied::LeaseRevoked { revision } => Ok(revision),
            _ => Err(Error::Stopped),
        }
    }

    /// Waits until this member's lessor is primary (`Ok`), another member
    /// leads (`NotLeader`: forward to it), or no leader shows up within the
    /// request timeout (`NoLeader`).
    async fn wait_primary(&self, deadline: Instant) -> Result<(), Error> {
        loop {
            if self.lessor()?.is_primary() {
                return Ok(());
            }
            let leader = self.leader();
            if leader != 0 && leader != self.shared.cfg.member_id {
                return Err(Error::NotLeader);
            }
            if Instant::now() >= deadline {
                return Err(Error::NoLeader);
            }
            sleep(POLL).await;
        }
    }

    /// A keep-alive, served by the leader without a Raft entry: the lease
    /// gets its full TTL again; returns that TTL. `LeaseNotFound` for an
    /// unknown lease; an expired one is waited for until its revoke is
    /// applied (then not found), as etcd does. `NotLeader` on another
    /// member (the caller forwards to the leader).
    pub async fn lease_renew(&self, id: i64) -> Result<i64, Error> {
        let deadline = Instant::now() + self.shared.cfg.request_timeout;
        loop {
            self.wait_primary(deadline).await?;
            let r = self.lessor()?.renew(LeaseId(id), Instant::now());
            match r {
                Ok(renewed) => {
                    if renewed.clear_checkpoint {
                        // The checkpointed remainder is stale now; etcd
                        // clears it through Raft (errors ignored, as there:
                        // the next checkpoint overwrites it anyway).
                        let _ = self.propose(Request::LeaseCheckpoint(vec![(id, 0)])).await;
                    }
                    return Ok(renewed.ttl);
                }
                Err(LeaseError::Expired) => {
                    if Instant::now() >= deadline {
                        return Err(Error::Timeout);
                    }
                    sleep(POLL).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// LeaseTimeToLive on the leader (etcd asks the leader: only it knows
    /// deadlines). `Ok(None)` for an unknown lease; `NotLeader` on another
    /// member (the caller forwards).
    ///
    /// The primary check and the lookup happen under one lock, so a demotion
    /// in between cannot leak a follower's "no deadline" TTL (9223372036 s,
    /// the race etcd fixed in etcd#17642).
    pub async fn lease_time_to_live(&self, id: i64) -> Result<Option<LeaseInfo>, Error> {
        let deadline = Instant::now() + self.shared.cfg.request_timeout;
        loop {
            {
                let l = self.lessor()?;
                if l.is_primary() {
                    return Ok(l.time_to_live(LeaseId(id), Instant::now()));
                }
            }
            self.wait_primary(deadline).await?;
        }
    }

    /// Before a leadership handover (MoveLeader): checkpoints the remaining
    /// TTL of every lease through Raft and waits until they are applied.
    /// Nothing to do on a member that is not the primary.
    pub(super) async fn checkpoint_all_leases(&self) -> Result<(), Error> {
        let all = self.lessor()?.remaining_ttls(Instant::now());
        for batch in all.chunks(engine::lease::MAX_CHECKPOINT_BATCH) {
            let cps = batch.iter().map(|(id, rem)| (id.0, *rem)).collect();
            self.propose(Request::LeaseCheckpoint(cps)).await?;
        }
        Ok(())
    }

    /// LeaseLeases: this member's leases, soonest deadline first.
    pub fn lease_leases(&self) -> Result<Vec<i64>, Error> {
        Ok(self.lessor()?.leases().into_iter().map(|l| l.0).collect())
    }
}

/// Leases revoked per tick so that at most `LEASE_REVOKE_RATE` go per second.
fn revokes_per_tick(heartbeat: Duration) -> usize {
    let per_sec = engine::lease::LEASE_REVOKE_RATE as u128;
    let n = per_sec * heartbeat.as_millis() / 1000;
    usize::try_from(n).unwrap_or(usize::MAX).max(1)
}

impl RaftLoop {
    /// Promotes the lessor once this member leads and has applied all that
    /// is committed (etcd: on applying the leader's empty entry, with one
    /// election timeout of grace); demotes it as soon as it does not lead.
    pub(super) fn update_lessor(&mut self) {
        let leads = self.raw.raft.state == StateRole::Leader;
        let caught_up = leads
            && self.raw.raft.commit_to_current_term()
            && self.shared.applied.load(Ordering::Acquire) >= self.raw.raft.raft_log.committed;
        let Ok(mut l) = self.shared.lessor.lock() else {
            return;
        };
        if !leads && l.is_primary() {
            l.demote();
        } else if caught_up && !l.is_primary() {
            let cfg = &self.shared.cfg;
            let ticks = u32::try_from(cfg.election_ticks).unwrap_or(u32::MAX);
            l.promote(Instant::now(), cfg.heartbeat.saturating_mul(ticks));
        }
    }

    /// Every tick on the leader: propose a revoke for each expired lease and
    /// the due checkpoints. Proposals of the loop have no waiter (id 0); one
    /// that is lost is retried (expiry: after the retry interval; a
    /// checkpoint: at the next promotion, as in etcd).
    pub(super) fn lease_tick(&mut self) {
        if self.raw.raft.state != StateRole::Leader {
            return;
        }
        let now = Instant::now();
        let (expired, due) = {
            let Ok(mut l) = self.shared.lessor.lock() else {
                return;
            };
            if !l.is_primary() {
                return;
            }
            (
                l.expired(now, revokes_per_tick(self.shared.cfg.heartbeat)),
                l.due_checkpoints(now, engine::lease::MAX_CHECKPOINT_BATCH),
            )
        };
        let me = self.shared.cfg.member_id;
        let mut requests: Vec<Request> = expired
            .into_iter()
            .map(|id| Request::LeaseRevoke { id: id.0 })
            .collect();
        if !due.is_empty() {
            requests.push(Request::LeaseCheckpoint(
                due.into_iter().map(|(id, rem)| (id.0, rem)).collect(),
            ));
        }
        for request in requests {
            let data = Proposal {
                proposer: me,
                id: 0,
                request,
            }
            .encode();
            let _ = self.raw.propose(Vec::new(), data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log_store::MemLog;
    use engine::mvcc::{PutRequest, RangeRequest, TxnRequest};
    use glommio::LocalExecutorBuilder;
    use std::sync::Arc;

    fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
        LocalExecutorBuilder::default()
            .io_memory(256 << 10)
            .spawn(f)
            .expect("executor")
            .join()
            .expect("test");
    }

    fn fast_cfg() -> NodeConfig {
        let mut cfg = NodeConfig::new(1, 7);
        // min TTL = ceil(15 × 10 ms) = 1 s.
        cfg.heartbeat = Duration::from_millis(10);
        cfg.request_timeout = Duration::from_secs(3);
        cfg
    }

    fn put(k: &str, lease: i64) -> PutRequest {
        PutRequest {
            key: k.into(),
            value: b"v".to_vec(),
            lease,
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

    async fn start(cfg: NodeConfig) -> Arc<Node> {
        let (node, lp) = Node::new(cfg).unwrap();
        glommio::spawn_local(lp.run(MemLog::default())).detach();
        assert!(node.wait_leader(Duration::from_secs(5)).await);
        node
    }

    #[test]
    fn min_ttl_follows_etcds_formula() {
        let mut cfg = NodeConfig::new(1, 1);
        assert_eq!(min_ttl(&cfg), 2, "15 × 100 ms = 1.5 s, rounded up");
        cfg.election_ticks = 5;
        assert_eq!(min_ttl(&cfg), 1, "(15 / 2) × 100 ms = 0.7 s");
        cfg.heartbeat = Duration::from_millis(1000);
        cfg.election_ticks = 10;
        assert_eq!(min_ttl(&cfg), 15);
    }

    #[test]
    fn lease_ids_are_positive_unique_and_carry_the_member_id() {
        let g = LeaseIds::new(0xabcd_1234);
        let a = g.next();
        let b = g.next();
        assert!(a > 0 && b > a);
        assert_eq!((a as u64) >> 48, 0x1234 & 0x7fff);
    }

    #[test]
    fn grant_errors_and_put_checks_follow_etcd() {
        run(|| async {
            let node = start(fast_cfg()).await;
            let g = node.lease_grant(0, 60).await.unwrap();
            assert!(g.id > 0);
            assert_eq!(g.ttl, 60);
            assert!(matches!(
                node.lease_grant(g.id, 5).await,
                Err(Error::LeaseExists)
            ));
            assert!(matches!(
                node.lease_grant(0, engine::lease::MAX_LEASE_TTL + 1).await,
                Err(Error::LeaseTtlTooLarge)
            ));
            assert_eq!(node.lease_grant(42, 0).await.unwrap().ttl, 1, "min TTL");
            // A put naming an unknown lease changes nothing.
            let rev = node.current_revision().unwrap();
            assert!(matches!(
                node.put(put("k", 999)).await,
                Err(Error::LeaseNotFound)
            ));
            // Only the branch that runs is checked.
            let txn = |lease_ok: i64, lease_bad: i64| TxnRequest {
                compare: vec![],
                success: vec![engine::mvcc::RequestOp::Put(put("t", lease_ok))],
                failure: vec![engine::mvcc::RequestOp::Put(put("t", lease_bad))],
            };
            node.txn(txn(g.id, 999), false).await.unwrap();
            assert!(matches!(
                node.txn(txn(999, g.id), false).await,
                Err(Error::LeaseNotFound)
            ));
            assert_eq!(node.current_revision().unwrap(), rev + 1);
            assert!(matches!(
                node.lease_revoke(999).await,
                Err(Error::LeaseNotFound)
            ));
            let mut ids = node.lease_leases().unwrap();
            ids.sort();
            assert_eq!(ids, vec![42, g.id]);
        });
    }

    #[test]
    fn revoke_deletes_every_attached_key_in_one_revision() {
        run(|| async {
            let node = start(fast_cfg()).await;
            let a = node.lease_grant(0, 60).await.unwrap().id;
            let b = node.lease_grant(0, 60).await.unwrap().id;
            for k in ["k1", "k2", "k3"] {
                node.put(put(k, a)).await.unwrap();
            }
            node.put(put("other", b)).await.unwrap();
            node.put(put("plain", 0)).await.unwrap();
            // k3 moves to lease b; k2 drops its lease; ignore_lease keeps k1's.
            node.put(put("k3", b)).await.unwrap();
            node.put(put("k2", 0)).await.unwrap();
            node.put(PutRequest {
                key: b"k1".to_vec(),
                value: b"w".to_vec(),
                ignore_lease: true,
                ..Default::default()
            })
            .await
            .unwrap();
            let info = node.lease_time_to_live(a).await.unwrap().unwrap();
            assert_eq!(info.keys, vec![b"k1".to_vec()]);
            let info = node.lease_time_to_live(b).await.unwrap().unwrap();
            assert_eq!(info.keys, vec![b"k3".to_vec(), b"other".to_vec()]);
            let rev = node.current_revision().unwrap();
            let got = node.lease_revoke(b).await.unwrap();
            assert_eq!(got, rev + 1, "both keys go in one revision");
            let r = node.range(&all(), false).await.unwrap();
            let keys: Vec<_> = r.kvs.iter().map(|kv| kv.key.clone()).collect();
            assert_eq!(
                keys,
                vec![b"k1".to_vec(), b"k2".to_vec(), b"plain".to_vec()]
            );
            assert!(node.lease_time_to_live(b).await.unwrap().is_none());
            // A revoke of a lease without keys creates no revision.
            let c = node.lease_grant(0, 60).await.unwrap().id;
            assert_eq!(node.lease_revoke(c).await.unwrap(), rev + 1);
        });
    }

    #[test]
    fn an_expired_lease_is_revoked_by_the_leader_with_its_keys_in_one_revision() {
        run(|| async {
            let node = start(fast_cfg()).await;
            let short = node.lease_grant(0, 1).await.unwrap().id;
            let long = node.lease_grant(0, 60).await.unwrap().id;
            node.put(put("a", short)).await.unwrap();
            node.put(put("b", short)).await.unwrap();
            node.put(put("c", long)).await.unwrap();
            let rev = node.current_revision().unwrap();
            // Keep-alives hold it; then it expires within TTL + a tick or two.
            for _ in 0..3 {
                sleep(Duration::from_millis(400)).await;
                assert_eq!(node.lease_renew(short).await.unwrap(), 1);
            }
            let t0 = Instant::now();
            while node.lease_leases().unwrap().contains(&short) {
                assert!(t0.elapsed() < Duration::from_secs(3), "never expired");
                sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(node.current_revision().unwrap(), rev + 1);
            let r = node.range(&all(), false).await.unwrap();
            assert_eq!(r.kvs.len(), 1);
            assert_eq!(r.kvs[0].key, b"c");
            assert!(matches!(
                node.lease_renew(short).await,
                Err(Error::LeaseNotFound)
            ));
        });
    }

    /// etcd#9888: a restart must not hand a lease its full TTL again. With
    /// checkpoints every second, a 6 s lease restarted after ~3.5 s comes
    /// back with ~3 s left (plus one election timeout), keeps its key, and
    /// expires on time, deleting it.
    #[test]
    fn remaining_ttl_survives_a_restart_from_the_btree_and_wal() {
        use crate::checkpoint::CheckpointConfig;
        use crate::wal_log::{bootstrap_log, records_of, recover, WalLog, WalMetadata};
        use crate::Recovered;
        use engine::btree::Options;
        use engine::wal::{Wal, WalOptions};

        let dir = std::env::temp_dir().join(format!("raftcore-lease-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let wopts = || WalOptions {
            segment_size: 1 << 16,
            ..Default::default()
        };
        let round = |dir: std::path::PathBuf, first: bool| {
            LocalExecutorBuilder::default()
                .io_memory(1 << 20)
                .spawn(move || async move {
                    let db = Arc::new(Db::open(dir.join("db"), Options::default()).unwrap());
                    let (store, applied) = engine::mvcc::load(&db).unwrap();
                    let wd = dir.join("wal");
                    let (wal, log) = if first {
                        let meta = WalMetadata {
                            cluster_id: 1,
                            member_id: 7,
                        };
                        let log = bootstrap_log(&[7]).unwrap();
                        let wal = Wal::create(&wd, &meta.encode(), wopts()).await.unwrap();
                        wal.append(&records_of(&log)).await.unwrap();
                        (wal, log)
                    } else {
                        let (wal, rec) = Wal::open(&wd, wopts()).await.unwrap();
                        (wal, recover(&rec).unwrap().1)
                    };
                    let rec = Recovered {
                        store,
                        applied,
                        members: None,
                        backend: Some((
                            db,
                            CheckpointConfig {
                                interval: Duration::from_millis(1),
                                limit: 1,
                            },
                        )),
                    };
                    let mut cfg = fast_cfg();
                    cfg.lease_checkpoint_interval = Duration::from_secs(1);
                    let (node, lp) = Node::start_with(cfg, log, rec).unwrap();
                    glommio::spawn_local(async move {
                        if let Err(e) = lp.run(WalLog::new(wal)).await {
                            panic!("loop: {e}");
                        }
                    })
                    .detach();
                    assert!(node.wait_leader(Duration::from_secs(5)).await);
                    if first {
                        let id = node.lease_grant(0, 6).await.unwrap().id;
                        node.put(put("k", id)).await.unwrap();
                        sleep(Duration::from_millis(3500)).await;
                        let info = node.lease_time_to_live(id).await.unwrap().unwrap();
                        assert_eq!(info.remaining, 2);
                        return (id, 0, 0);
                    }
                    let id = node.lease_leases().unwrap()[0];
                    let info = node.lease_time_to_live(id).await.unwrap().unwrap();
                    assert_eq!(info.granted_ttl, 6);
                    assert_eq!(info.keys, vec![b"k".to_vec()]);
                    let t0 = Instant::now();
                    while node.lease_leases().unwrap().contains(&id) {
                        assert!(t0.elapsed() < Duration::from_secs(8), "never expired");
                        sleep(Duration::from_millis(20)).await;
                    }
                    let gone = node.range(&all(), false).await.unwrap().kvs.len();
                    (info.remaining, t0.elapsed().as_millis(), gone)
                })
                .unwrap()
                .join()
                .unwrap()
        };
        round(dir.clone(), true);
        let (remaining, expired_after_ms, keys_left) = round(dir.clone(), false);
        assert!(
            (2..=3).contains(&remaining),
            "restart gave the lease {remaining} s (full TTL: 6 s)"
        );
        assert!(
            expired_after_ms < 4500,
            "expired after {expired_after_ms} ms"
        );
        assert_eq!(keys_left, 0, "its key went with it");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// etcd#9888 across a leader change: the new leader starts a lease from
    /// its last checkpoint, not from its full TTL.
    #[test]
    fn remaining_ttl_survives_a_leader_change() {
        run(|| async {
            const IDS: &[u64] = &[11, 22, 33];
            let ids = IDS;
            let (nodes, cut) = crate::node::test_cluster::start(IDS, |cfg| {
                cfg.lease_checkpoint_interval = Duration::from_secs(1);
            });
            for n in &nodes {
                assert!(n.wait_leader(Duration::from_secs(5)).await);
            }
            let leader = nodes[0].leader();
            let li = ids.iter().position(|x| *x == leader).unwrap();
            let id = nodes[li].lease_grant(0, 8).await.unwrap().id;
            // A follower forwards TimeToLive: it answers NotLeader.
            let f = (li + 1) % 3;
            assert!(matches!(
                nodes[f].lease_time_to_live(id).await,
                Err(Error::NotLeader)
            ));
            assert!(matches!(
                nodes[f].lease_renew(id).await,
                Err(Error::NotLeader)
            ));
            sleep(Duration::from_millis(3500)).await;
            cut.borrow_mut().insert(leader);
            let rest: Vec<&Arc<Node>> = nodes.iter().filter(|n| n.leader() != 0).collect();
            let mut new = None;
            for _ in 0..500 {
                if let Some(n) = rest
                    .iter()
                    .find(|n| n.config().member_id != leader && n.leader() == n.config().member_id)
                {
                    new = Some(*n);
                    break;
                }
                sleep(Duration::from_millis(10)).await;
            }
            let new = new.expect("a new leader");
            let info = new.lease_time_to_live(id).await.unwrap().unwrap();
            assert!(
                (3..=5).contains(&info.remaining),
                "new leader gave the lease {} s (full TTL: 8 s)",
                info.remaining
            );
        });
    }
}
