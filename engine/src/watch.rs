//! `engine::watch`: etcd v3.5's watchable store (server/mvcc/watchable_store.go,
//! watcher_group.go, watcher.go) without any gRPC: a [`Hub`] of watchers
//! indexed by key range, fed the events of every applied revision, and one
//! [`WatchStream`] per client stream that creates, cancels and drains its
//! watchers.
//!
//! # Flow
//! ```text
//! apply (raftcore, store write lock) ── collect_events ──┐
//!                      store lock released ── Hub::publish(rev, events)
//!                                                │ fan-out to SYNCED watchers whose range has the key
//!                                                ▼
//!        per watcher: bounded queue ── full? ──▶ UNSYNCED (drop the batch, remember `next_rev`)
//!                                                │
//! WatchStream::poll (stream task, any executor) ─┤ 1. drain the stream's queue
//!                                                └ 2. catch up one UNSYNCED watcher from history
//!                                                     (`Store::events_between`); back to SYNCED
//!                                                     once it reached the store revision
//! ```
//! The apply path never waits for a watcher: it takes the hub lock, appends
//! to queues (or marks a watcher unsynced) and wakes the streams through
//! channels that wake tasks on any thread.
//!
//! # Invariants
//! * **`next_rev`** of a watcher: every event in its range at a revision
//!   `< next_rev` has been queued (or filtered out, or was delivered), and
//!   none at `>= next_rev` has. Publish delivers a revision `r` only to
//!   synced watchers with `next_rev <= r` and then sets `next_rev = r + 1`;
//!   catch-up reads history from `next_rev`. Hence every event reaches a
//!   watcher exactly once, in revision order, and the events of one revision
//!   travel together in one [`Notification`].
//! * **Registration**: a watcher is registered under the hub lock, reading
//!   the store revision `C` under the store's read lock; it starts synced
//!   with `next_rev = max(C + 1, start)` or unsynced with `next_rev = start`.
//!   Publish of revision `r` happens (hub lock) after the write that made
//!   `r` (store write lock), so either `r <= C` (skipped: `r < next_rev`) or
//!   the publish sees the watcher. The apply path collects events only when
//!   [`Hub::has_watchers`] says so, read under the store's write lock; a
//!   registration counts itself before it reads the store, so a watcher that
//!   could need a revision's events is always counted when they are made.
//! * **Synced → unsynced** only by an overflowing queue, at the revision of
//!   the dropped batch, or by [`Hub::restore`] (the store was replaced);
//!   **unsynced → synced** only under the hub lock after reading history up
//!   to the store revision read under that same lock.
//! * **Memory**: a watcher's queue holds at most
//!   [`HubConfig::max_pending_revisions`] notifications and, unless it holds
//!   just one, at most [`HubConfig::max_pending_bytes`]; an unsynced watcher
//!   holds nothing but `next_rev`; a catch-up step reads at most
//!   [`HubConfig::max_batch_revisions`] revisions.
//! * Lock order: hub, then store. The apply path never holds both.
//!
//! # Where this differs from etcd, and why
//! etcd keeps a watcher whose channel is full as a *victim* holding its
//! pending batch in memory, and one 100 ms loop syncs every unsynced watcher
//! of the process. Here the batch is dropped and the watcher re-reads it
//! from history (bounded memory, same events to the client), and each stream
//! task catches up its own watchers (the work stays on the client's
//! executor). One consequence: a slow watcher whose history is compacted
//! before it catches up gets the compaction cancel where etcd would still
//! have had the batch in memory.

mod group;
mod hub;
#[cfg(test)]
mod tests;

use std::sync::{Arc, RwLock};

use crate::mvcc::{Event, EventKind, Store};

pub use hub::{Hub, HubStats, WatchStream, Watchable};

/// A watcher's id, unique within its stream (etcd's `mvcc.WatchID`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WatchId(pub i64);

impl WatchId {
    /// "Assign one for me" (etcd's `AutoWatchID`): server-assigned ids
    /// start at 0 per stream, so a client cannot choose 0.
    pub const AUTO: WatchId = WatchId(0);
}

/// Server-side event filters (etcd's `WatchCreateRequest.FilterType`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filters {
    /// Drop put events (NOPUT).
    pub no_put: bool,
    /// Drop delete events (NODELETE).
    pub no_delete: bool,
}

impl Filters {
    fn keeps(&self, e: &Event) -> bool {
        match e.kind {
            EventKind::Put => !self.no_put,
            EventKind::Delete => !self.no_delete,
        }
    }

    fn is_empty(&self) -> bool {
        !self.no_put && !self.no_delete
    }
}

/// What to watch. Keys follow [`Store::range`]'s rules: `range_end` empty is
/// the single key, `[0]` every key `>= key`, otherwise `[key, range_end)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchRequest {
    /// [`WatchId::AUTO`] or a client-chosen id.
    pub id: WatchId,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    /// First revision to deliver; 0 (or anything above the store revision)
    /// means "after the current revision".
    pub start_revision: i64,
    pub filters: Filters,
}

/// A created watcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Created {
    pub id: WatchId,
    /// The store revision when it was registered (etcd puts it in the
    /// `created` response's header).
    pub revision: i64,
}

/// Why a watch call was refused. Display strings are etcd's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// `range_end` is set (and not `[0]`) and not above `key`.
    #[error("mvcc: watcher range is empty")]
    EmptyRange,
    /// The client-chosen id is in use on this stream (also by a watcher
    /// cancelled by compaction and not yet cancelled by the client).
    #[error("mvcc: duplicate watch ID provided on the WatchStream")]
    DuplicateId,
    /// Cancel of an id this stream does not have.
    #[error("mvcc: watcher does not exist")]
    NotExist,
    /// The store is unavailable (its lock was poisoned by a panic).
    #[error("etcdserver: server stopped")]
    Stopped,
}

/// One response's worth for one watcher (etcd's `mvcc.WatchResponse`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notification {
    pub watch_id: WatchId,
    /// The header revision: the events' revision for a live batch, the
    /// store revision read for a catch-up batch or a progress notification,
    /// 0 for a compaction cancel (as etcd).
    pub revision: i64,
    /// In revision order, filters applied; empty for a progress
    /// notification or a compaction cancel. `prev_kv` is always filled
    /// when known; the caller drops it unless the watcher asked for it.
    pub events: Vec<Arc<Event>>,
    /// Non-zero: the watcher needed history below this compaction revision
    /// and is cancelled (removed from the hub; its id stays reserved until
    /// the client cancels it, as in etcd).
    pub compact_revision: i64,
}

impl Notification {
    /// A progress notification (no events, not a cancel).
    pub fn is_progress(&self) -> bool {
        self.events.is_empty() && self.compact_revision == 0
    }
}

/// Limits of the hub. Defaults are etcd's where etcd has one.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Notifications a watcher may have queued before it is moved to the
    /// unsynced set. etcd: `chanBufLen` = 128 responses per stream.
    pub max_pending_revisions: usize,
    /// Bytes of events a watcher may have queued (a notification larger
    /// than this is still queued when the queue is empty, so a huge revision
    /// cannot stall a watcher forever). Stops one slow client from holding
    /// more than this much of the apply path's output.
    pub max_pending_bytes: usize,
    /// Distinct revisions per catch-up read. etcd: `watchBatchMaxRevs`.
    pub max_batch_revisions: usize,
    /// An unsynced watcher within this many revisions of the store finishes
    /// its catch-up while holding the hub lock (which blocks publishing), so
    /// a watcher behind a busy store still gets back to synced; larger gaps
    /// are read without the hub lock first.
    pub max_locked_catch_up_revisions: i64,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            max_pending_revisions: 128,
            max_pending_bytes: 4 << 20,
            max_batch_revisions: 1000,
            max_locked_catch_up_revisions: 16,
        }
    }
}

/// Read access to the store whose history the hub serves (raftcore's
/// apply-layer store; a plain `RwLock<Store>` in tests).
pub trait History: Send + Sync {
    /// Runs `f` on the store under its read lock; `false` (and `f` not run)
    /// if the store is unavailable.
    fn read_store(&self, f: &mut dyn FnMut(&Store)) -> bool;
}

impl History for RwLock<Store> {
    fn read_store(&self, f: &mut dyn FnMut(&Store)) -> bool {
        match self.read() {
            Ok(s) => {
                f(&s);
                true
            }
            Err(_) => false,
        }
    }
}

/// For the apply path: appends to `out` the events of the write that moved
/// the store from revision `before` to its current revision (nothing if the
/// write changed nothing). Call it right after each write, under the store
/// lock, so a compaction later in the same batch cannot hide them.
pub fn collect_events(store: &Store, before: i64, out: &mut Vec<Event>) {
    let now = store.current_revision();
    if now <= before {
        return;
    }
    // Every key: `[]` to `[0]` is "all keys >= the empty key". Reading at
    // `before + 1 > compaction revision` cannot fail.
    if let Ok(page) = store.events_between(before + 1, now, &[], &[0], 0) {
        out.extend(page.events);
    }
}

/// Approximate heap size of an event, for the queue's byte bound.
fn event_bytes(e: &Event) -> usize {
    const OVERHEAD: usize = 64;
    let prev = e
        .prev_kv
        .as_ref()
        .map_or(0, |p| p.key.len() + p.value.len() + OVERHEAD);
    e.kv.key.len() + e.kv.value.len() + prev + OVERHEAD
}
