//! `engine::lease`: etcd v3.5's lessor (server/lease/lessor.go) without gRPC
//! or Raft: the lease table, which keys are attached to which lease, the
//! leader-side expiry queue and the schedule of TTL checkpoints.
//!
//! # Two kinds of state
//! * **Replicated** (changed only by applying Raft entries, identical on every
//!   member, persisted in the B-tree `lease` bucket by the backend
//!   checkpoint): each lease's ID, granted TTL and last checkpointed
//!   remaining TTL, and the keys attached to it (derived from the key space:
//!   a key is attached to the lease in its current `KeyValue::lease`).
//! * **Primary** (only on the member whose Raft role is leader, never
//!   persisted, driven by the caller's clock): each lease's deadline, the
//!   expiry queue and the checkpoint schedule. A follower keeps no deadlines
//!   (etcd's "forever"); a member that becomes leader *promotes* its lessor,
//!   giving every lease `now + extend + remaining` (extend = one election
//!   timeout, the time an old leader may still have accepted keep-alives).
//!
//! Time is passed in (`now: Instant`) by the caller, so the logic is tested
//! without sleeping.
//!
//! # Remaining TTL across leader changes and restarts (etcd#9888)
//! A deadline lives in the leader's memory only. Without checkpoints every
//! election (and every restart) would hand each lease its full TTL again, so
//! a lease could live forever if elections came often enough. The primary
//! therefore schedules, for every lease whose remaining TTL exceeds the
//! checkpoint interval, a checkpoint one interval later
//! ([`Lessor::due_checkpoints`]); the caller proposes the remaining TTLs
//! through Raft and applies them with [`Lessor::checkpoint`], which records
//! them (persisted, as etcd's `--experimental-enable-lease-checkpoint-persist`)
//! and schedules the next one. A new primary starts each lease from its
//! checkpointed remaining TTL. A keep-alive restarts the full TTL, so the
//! caller must then propose a checkpoint of 0 (= "none"), which
//! [`Lessor::renew`] asks for with `clear_checkpoint`.
//!
//! Leases shorter than the interval are never checkpointed on schedule (as
//! in etcd). So that a graceful leader change (MoveLeader) does not give
//! them their full TTL again, the leader first checkpoints every lease
//! ([`Lessor::remaining_ttls`]); after a crash of the leader they still
//! restart from their last checkpoint or full TTL, as in etcd.
//!
//! # Invariants
//! * `items[k] == id` if and only if `k` is in `leases[id].keys`; a key is
//!   attached to at most one lease, and only to a lease that exists.
//! * `primary` is false ⇒ no lease has a deadline and both queues are empty.
//!   `primary` is true ⇒ every lease has a deadline and exactly one entry in
//!   `expiry_queue`, at `queued_at` (its deadline, or the retry time after it
//!   was reported expired).
//! * `dirty` holds every lease whose persisted record (`ttl`,
//!   `remaining_ttl`, existence) may differ from the one in memory since the
//!   last [`Lessor::take_changes`].
//! * Granted TTLs are in `[min_ttl, MAX_LEASE_TTL]`.

mod backend;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

pub(crate) use backend::write as write_changes;
pub use backend::{load, LeaseChanges, LeaseRecord, LEASE_BUCKET};

/// etcd's `MaxLeaseTTL`: larger TTLs are refused ("too large lease TTL").
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// etcd's `defaultLeaseCheckpointInterval`.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// etcd's `leaseRevokeRate`: leases revoked per second at most; also the
/// lease count from which a new primary spreads out piled-up expiries.
pub const LEASE_REVOKE_RATE: usize = 1000;

/// etcd's `maxLeaseCheckpointBatchSize`: checkpoints per Raft entry.
pub const MAX_CHECKPOINT_BATCH: usize = 1000;

/// A lease's ID (etcd's `LeaseID`); 0 means "no lease".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseId(pub i64);

impl LeaseId {
    pub const NONE: LeaseId = LeaseId(0);
}

/// As etcdctl prints it: 16 hex digits.
impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Why a lessor operation was refused. Display strings are etcd's
/// `lease.Err*` (the network layer maps them to etcd's gRPC errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error("lease not found")]
    NotFound,
    #[error("lease already exists")]
    Exists,
    #[error("too large lease TTL")]
    TtlTooLarge,
    /// Renewals are served by the primary (the leader) only.
    #[error("not a primary lessor")]
    NotPrimary,
    /// The lease is past its deadline and about to be revoked: a renewal
    /// must wait for the revoke (then the lease is not found) or for a
    /// leader change (then it retries on the new leader), as in etcd.
    #[error("lease expired")]
    Expired,
}

/// Settings (etcd's `LessorConfig`).
#[derive(Clone, Copy, Debug)]
pub struct LessorConfig {
    /// Smaller granted TTLs are raised to this (seconds). etcd:
    /// `ceil((3 * election_ticks / 2) * heartbeat)`, so that a lease outlives
    /// a leader election.
    pub min_ttl: i64,
    /// Between two checkpoints of one lease's remaining TTL.
    pub checkpoint_interval: Duration,
    /// After a lease was reported expired, when to report it again if it is
    /// still there (its revoke was lost). etcd: the request timeout.
    pub expired_retry_interval: Duration,
}

impl Default for LessorConfig {
    fn default() -> Self {
        LessorConfig {
            min_ttl: 2,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            expired_retry_interval: Duration::from_secs(7),
        }
    }
}

#[derive(Clone, Debug)]
struct Lease {
    /// Granted TTL in seconds.
    ttl: i64,
    /// Checkpointed remaining TTL in seconds; 0 = none (use `ttl`).
    remaining_ttl: i64,
    keys: BTreeSet<Vec<u8>>,
    /// Primary only: when the lease expires.
    deadline: Option<Instant>,
    /// Primary only: this lease's entry in `expiry_queue`.
    queued_at: Option<Instant>,
}

impl Lease {
    /// etcd's `Lease.RemainingTTL`: the checkpointed remaining TTL if set.
    fn remaining_or_ttl(&self) -> i64 {
        if self.remaining_ttl > 0 {
            self.remaining_ttl
        } else {
            self.ttl
        }
    }
}

/// What a successful renewal tells the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Renewed {
    /// The TTL the lease got again (seconds).
    pub ttl: i64,
    /// A remaining TTL was checkpointed: propose a checkpoint of 0 so that a
    /// later leader or restart does not start from that stale value.
    pub clear_checkpoint: bool,
}

/// What `LeaseTimeToLive` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    pub id: LeaseId,
    /// Granted TTL (seconds).
    pub granted_ttl: i64,
    /// Seconds until the deadline, truncated toward zero (etcd:
    /// `int64(Remaining().Seconds())`); huge without a deadline.
    pub remaining: i64,
    /// Attached keys, sorted.
    pub keys: Vec<Vec<u8>>,
}

/// The lease table. See the module docs.
#[derive(Debug)]
pub struct Lessor {
    cfg: LessorConfig,
    leases: BTreeMap<LeaseId, Lease>,
    items: HashMap<Vec<u8>, LeaseId>,
    primary: bool,
    /// Primary only: `(time to look at the lease, id)`.
    expiry_queue: BTreeSet<(Instant, LeaseId)>,
    /// Primary only: `(time of the next checkpoint, id)`; may hold stale or
    /// repeated entries, which `due_checkpoints` skips (as etcd's heap).
    checkpoint_queue: BTreeSet<(Instant, LeaseId)>,
    dirty: BTreeSet<LeaseId>,
}

/// `now + secs`, saturating far in the future instead of overflowing.
fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(now)
}

fn secs(n: i64) -> Duration {
    Duration::from_secs(u64::try_from(n).unwrap_or(0))
}

impl Lessor {
    pub fn new(cfg: LessorConfig) -> Lessor {
        Lessor {
            cfg,
            leases: BTreeMap::new(),
            items: HashMap::new(),
            primary: false,
            expiry_queue: BTreeSet::new(),
            checkpoint_queue: BTreeSet::new(),
            dirty: BTreeSet::new(),
        }
    }

    /// A lessor holding the leases read back from the backend (not primary,
    /// nothing dirty, no keys attached yet: the caller attaches them from
    /// the key space with [`Lessor::set_key_lease`]). TTLs below the minimum
    /// are raised to it, as etcd's `initAndRecover` does.
    pub fn restore(cfg: LessorConfig, records: impl IntoIterator<Item = LeaseRecord>) -> Lessor {
        let mut l = Lessor::new(cfg);
        for r in records {
            l.leases.insert(
                r.id,
                Lease {
                    ttl: r.ttl.max(cfg.min_ttl),
                    remaining_ttl: r.remaining_ttl,
                    keys: BTreeSet::new(),
                    deadline: None,
                    queued_at: None,
                },
            );
        }
        l
    }

    pub fn config(&self) -> &LessorConfig {
        &self.cfg
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    pub fn contains(&self, id: LeaseId) -> bool {
        self.leases.contains_key(&id)
    }

    /// Whether this lessor keeps deadlines (its member leads).
    pub fn is_primary(&self) -> bool {
        self.primary
    }

    /// etcd's `Grant`, at apply time. Returns the granted TTL (raised to the
    /// minimum). Errors in etcd's order: ID 0, TTL too large, ID taken.
    pub fn grant(&mut self, id: LeaseId, ttl: i64, now: Instant) -> Result<i64, LeaseError> {
        if id == LeaseId::NONE {
            return Err(LeaseError::NotFound);
        }
        if ttl > MAX_LEASE_TTL {
            return Err(LeaseError::TtlTooLarge);
        }
        if self.leases.contains_key(&id) {
            return Err(LeaseError::Exists);
        }
        let ttl = ttl.max(self.cfg.min_ttl);
        self.leases.insert(
            id,
            Lease {
                ttl,
                remaining_ttl: 0,
                keys: BTreeSet::new(),
                deadline: None,
                queued_at: None,
            },
        );
        self.dirty.insert(id);
        if self.primary {
            self.refresh(id, now, Duration::ZERO);
            self.schedule_checkpoint(id, now);
        }
        Ok(ttl)
    }

    /// The keys attached to `id`, sorted (a revoke deletes them in this
    /// order, so every member writes the same revision).
    pub fn keys(&self, id: LeaseId) -> Result<Vec<Vec<u8>>, LeaseError> {
        let l = self.leases.get(&id).ok_or(LeaseError::NotFound)?;
        Ok(l.keys.iter().cloned().collect())
    }

    /// Removes the lease and detaches its keys. The caller deletes the keys
    /// from the key space in the same apply step (etcd's `Revoke`: one
    /// backend transaction for both).
    pub fn revoke(&mut self, id: LeaseId) -> Result<(), LeaseError> {
        let l = self.leases.remove(&id).ok_or(LeaseError::NotFound)?;
        for k in &l.keys {
            self.items.remove(k);
        }
        if let Some(t) = l.queued_at {
            self.expiry_queue.remove(&(t, id));
        }
        self.dirty.insert(id);
        Ok(())
    }

    /// etcd's `Checkpoint`, at apply time: records the remaining TTL (0
    /// clears it). Unknown leases are ignored (revoked in between).
    pub fn checkpoint(&mut self, id: LeaseId, remaining_ttl: i64, now: Instant) {
        let Some(l) = self.leases.get_mut(&id) else {
            return;
        };
        l.remaining_ttl = remaining_ttl;
        self.dirty.insert(id);
        if self.primary {
            self.schedule_checkpoint(id, now);
        }
    }

    /// etcd's `Renew` on the primary: the lease gets its full TTL again.
    pub fn renew(&mut self, id: LeaseId, now: Instant) -> Result<Renewed, LeaseError> {
        if !self.primary {
            return Err(LeaseError::NotPrimary);
        }
        let l = self.leases.get(&id).ok_or(LeaseError::NotFound)?;
        if l.deadline.is_some_and(|d| d <= now) {
            return Err(LeaseError::Expired);
        }
        let out = Renewed {
            ttl: l.ttl,
            clear_checkpoint: l.remaining_ttl > 0,
        };
        // The full TTL, not a checkpointed remainder: the caller clears
        // that through Raft (etcd does so before refreshing).
        self.set_deadline(id, after(now, secs(out.ttl)));
        Ok(out)
    }

    /// etcd's `Lookup` as `LeaseTimeToLive` uses it.
    pub fn time_to_live(&self, id: LeaseId, now: Instant) -> Option<LeaseInfo> {
        let l = self.leases.get(&id)?;
        let remaining = match l.deadline {
            // Go's time.Duration(math.MaxInt64).Seconds(), truncated.
            None => i64::MAX / 1_000_000_000,
            Some(d) if d >= now => i64::try_from((d - now).as_secs()).unwrap_or(i64::MAX),
            Some(d) => -i64::try_from((now - d).as_secs()).unwrap_or(i64::MAX),
        };
        Some(LeaseInfo {
            id,
            granted_ttl: l.ttl,
            remaining,
            keys: l.keys.iter().cloned().collect(),
        })
    }

    /// etcd's `Leases`: every lease, soonest deadline first (leases without
    /// a deadline last; ties by ID, where etcd's order is arbitrary).
    pub fn leases(&self) -> Vec<LeaseId> {
        let mut v: Vec<(Option<Instant>, LeaseId)> = self
            .leases
            .iter()
            .map(|(id, l)| (l.deadline, *id))
            .collect();
        v.sort_by(|a, b| match (a.0, b.0) {
            (Some(x), Some(y)) => x.cmp(&y).then(a.1.cmp(&b.1)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.1.cmp(&b.1),
        });
        v.into_iter().map(|(_, id)| id).collect()
    }

    /// Records that `key` now carries `lease` (`LeaseId::NONE`: none, e.g.
    /// deleted): detaches it from its previous lease, attaches it to the new
    /// one. Returns false if `lease` does not exist (the key stays
    /// detached; etcd logs this when it rebuilds the key space).
    pub fn set_key_lease(&mut self, key: &[u8], lease: LeaseId) -> bool {
        match self.items.get(key) {
            Some(old) if *old == lease => return true,
            Some(old) => {
                let old = *old;
                if let Some(l) = self.leases.get_mut(&old) {
                    l.keys.remove(key);
                }
                self.items.remove(key);
            }
            None => {}
        }
        if lease == LeaseId::NONE {
            return true;
        }
        let Some(l) = self.leases.get_mut(&lease) else {
            return false;
        };
        l.keys.insert(key.to_vec());
        self.items.insert(key.to_vec(), lease);
        true
    }

    /// The lease `key` is attached to.
    pub fn lease_of(&self, key: &[u8]) -> LeaseId {
        self.items.get(key).copied().unwrap_or(LeaseId::NONE)
    }

    /// etcd's `Promote`: this member leads now. Every lease expires
    /// `extend` after its (checkpointed) remaining TTL; when many leases
    /// would expire in the same second, later ones are spread out so that
    /// revokes stay below [`LEASE_REVOKE_RATE`] (etcd's algorithm).
    pub fn promote(&mut self, now: Instant, extend: Duration) {
        self.primary = true;
        let ids: Vec<LeaseId> = self.leases.keys().copied().collect();
        for id in &ids {
            self.refresh(*id, now, extend);
            self.schedule_checkpoint(*id, now);
        }
        if ids.len() < LEASE_REVOKE_RATE {
            return;
        }
        let remaining = |l: &Lessor, id: LeaseId| -> f64 {
            l.leases
                .get(&id)
                .and_then(|x| x.deadline)
                .map_or(f64::MAX, |d| {
                    d.saturating_duration_since(now).as_secs_f64()
                        - now.saturating_duration_since(d).as_secs_f64()
                })
        };
        let mut by_expiry: Vec<(f64, LeaseId)> =
            ids.iter().map(|id| (remaining(self, *id), *id)).collect();
        by_expiry.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let target = (3 * LEASE_REVOKE_RATE / 4) as f64;
        let mut base = by_expiry.first().map_or(0.0, |x| x.0);
        let mut next = base + 1.0;
        let mut expires = 0usize;
        for (rem, id) in by_expiry {
            if rem > next {
                base = rem;
                next = base + 1.0;
                expires = 1;
                continue;
            }
            expires += 1;
            if expires as f64 <= target {
                continue;
            }
            let delay = (expires as f64 / target) - (rem - base);
            next = base + delay;
            let delay = Duration::try_from_secs_f64(delay.max(0.0)).unwrap_or(Duration::ZERO);
            self.refresh(id, now, delay + extend);
            self.schedule_checkpoint(id, now);
        }
    }

    /// etcd's `Demote`: this member no longer leads; forget every deadline.
    pub fn demote(&mut self) {
        self.primary = false;
        for l in self.leases.values_mut() {
            l.deadline = None;
            l.queued_at = None;
        }
        self.expiry_queue.clear();
        self.checkpoint_queue.clear();
    }

    /// Primary: leases past their deadline, at most `limit`, soonest first.
    /// Each one reported is not reported again before the retry interval
    /// (its revoke is in flight).
    pub fn expired(&mut self, now: Instant, limit: usize) -> Vec<LeaseId> {
        let mut out = Vec::new();
        if !self.primary {
            return out;
        }
        while out.len() < limit {
            let Some(&(t, id)) = self.expiry_queue.first() else {
                break;
            };
            if t > now {
                break;
            }
            self.expiry_queue.remove(&(t, id));
            let retry = after(now, self.cfg.expired_retry_interval);
            let Some(l) = self.leases.get_mut(&id) else {
                continue;
            };
            l.queued_at = Some(retry);
            self.expiry_queue.insert((retry, id));
            if l.deadline.is_some_and(|d| d <= now) {
                out.push(id);
            }
        }
        out
    }

    /// Primary: the checkpoints due now, `(id, remaining TTL in whole
    /// seconds, rounded up)`, at most `limit`. Leases that are expired, or
    /// still have their full TTL, need none.
    pub fn due_checkpoints(&mut self, now: Instant, limit: usize) -> Vec<(LeaseId, i64)> {
        let mut out = Vec::new();
        if !self.primary {
            return out;
        }
        while out.len() < limit {
            let Some(&(t, id)) = self.checkpoint_queue.first() else {
                break;
            };
            if t > now {
                break;
            }
            self.checkpoint_queue.remove(&(t, id));
            let Some(l) = self.leases.get(&id) else {
                continue;
            };
            let Some(deadline) = l.deadline.filter(|d| *d > now) else {
                continue;
            };
            let left = deadline - now;
            let remaining = i64::try_from(left.as_secs()).unwrap_or(i64::MAX)
                + i64::from(left.subsec_nanos() > 0);
            if remaining >= l.ttl {
                continue;
            }
            out.push((id, remaining));
        }
        out
    }

    /// Primary: the remaining TTL of every live lease (whole seconds,
    /// rounded up), for a checkpoint of all of them before this member
    /// hands leadership over (not in etcd v3.5, which resets every lease
    /// shorter than the checkpoint interval to its full TTL on a leader
    /// change: etcd#9888). Leases with their full TTL left need none.
    pub fn remaining_ttls(&self, now: Instant) -> Vec<(LeaseId, i64)> {
        if !self.primary {
            return Vec::new();
        }
        self.leases
            .iter()
            .filter_map(|(id, l)| {
                let left = l.deadline.filter(|d| *d > now)? - now;
                let remaining = i64::try_from(left.as_secs()).unwrap_or(i64::MAX)
                    + i64::from(left.subsec_nanos() > 0);
                (remaining < l.ttl).then_some((*id, remaining))
            })
            .collect()
    }

    /// The persisted records changed since the last call (for the backend
    /// checkpoint, taken at the same applied index as the key space's).
    pub fn take_changes(&mut self) -> LeaseChanges {
        let ids = std::mem::take(&mut self.dirty);
        LeaseChanges::new(
            ids.into_iter()
                .map(|id| {
                    let rec = self.leases.get(&id).map(|l| LeaseRecord {
                        id,
                        ttl: l.ttl,
                        remaining_ttl: l.remaining_ttl,
                    });
                    (id, rec)
                })
                .collect(),
        )
    }

    /// Sets the lease's deadline to `now + extend + remaining TTL`.
    fn refresh(&mut self, id: LeaseId, now: Instant, extend: Duration) {
        let Some(l) = self.leases.get(&id) else {
            return;
        };
        let d = after(after(now, extend), secs(l.remaining_or_ttl()));
        self.set_deadline(id, d);
    }

    fn set_deadline(&mut self, id: LeaseId, d: Instant) {
        let Some(l) = self.leases.get_mut(&id) else {
            return;
        };
        if let Some(t) = l.queued_at.take() {
            self.expiry_queue.remove(&(t, id));
        }
        l.deadline = Some(d);
        l.queued_at = Some(d);
        self.expiry_queue.insert((d, id));
    }

    /// etcd's `scheduleCheckpointIfNeeded`: only leases that outlive one
    /// interval are checkpointed.
    fn schedule_checkpoint(&mut self, id: LeaseId, now: Instant) {
        let Some(l) = self.leases.get(&id) else {
            return;
        };
        let interval = i64::try_from(self.cfg.checkpoint_interval.as_secs()).unwrap_or(i64::MAX);
        if l.remaining_or_ttl() > interval {
            self.checkpoint_queue
                .insert((after(now, self.cfg.checkpoint_interval), id));
        }
    }

    /// Asserts the module's invariants (tests).
    #[cfg(test)]
    pub(crate) fn assert_invariants(&self) {
        for (k, id) in &self.items {
            let l = self.leases.get(id).expect("item of a missing lease");
            assert!(l.keys.contains(k));
        }
        for (id, l) in &self.leases {
            for k in &l.keys {
                assert_eq!(self.items.get(k), Some(id));
            }
            assert!(l.ttl >= self.cfg.min_ttl && l.ttl <= MAX_LEASE_TTL);
            if self.primary {
                let q = l.queued_at.expect("primary lease without queue entry");
                assert!(self.expiry_queue.contains(&(q, *id)));
                assert!(l.deadline.is_some());
            } else {
                assert!(l.deadline.is_none() && l.queued_at.is_none());
            }
        }
        if self.primary {
            assert_eq!(self.expiry_queue.len(), self.leases.len());
        } else {
            assert!(self.expiry_queue.is_empty() && self.checkpoint_queue.is_empty());
        }
    }
}
