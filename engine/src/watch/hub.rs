//! The hub (etcd's `watchableStore` minus the store) and the per-client
//! [`WatchStream`] (etcd's `mvcc.watchStream`). Invariants: module docs of
//! `engine::watch`.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::group::{Group, Span};
use super::{
    event_bytes, Created, Filters, History, HubConfig, Notification, WatchError, WatchId,
    WatchRequest,
};
use crate::mvcc::{Event, EventPage, Store};

/// The hub's maps are looked up once per (event, watcher) on publish:
/// foldhash (randomly seeded, as std's SipHash, but several times faster
/// on these small keys) instead of SipHash, which was ~6% of a 10,000
/// watcher publish.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

type StreamId = u64;

/// A watcher's identity in the hub.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Member {
    stream: StreamId,
    id: WatchId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// In `Inner::synced`: fed by `publish`.
    Synced,
    /// Not in `Inner::synced`: its stream reads history from `next_rev`.
    Unsynced,
}

struct Watcher {
    key: Vec<u8>,
    range_end: Vec<u8>,
    span: Span,
    filters: Filters,
    /// Invariant (module docs): every event in range below `next_rev` is
    /// queued, filtered or delivered; none at or above it is.
    next_rev: i64,
    /// The store revision at which the watcher was last known to be in sync
    /// (registration, end of a catch-up); progress never reports less.
    floor_rev: i64,
    state: State,
    /// Invariant: the number of this watcher's notifications in its
    /// stream's queue, and the sum of their `bytes`.
    pending: usize,
    pending_bytes: usize,
}

struct Queued {
    n: Notification,
    bytes: usize,
}

struct StreamState {
    /// Notifications not yet taken by the stream; per watcher in revision
    /// order.
    queue: VecDeque<Queued>,
    /// Every live watcher of the stream (compacted ones are gone).
    watchers: BTreeSet<WatchId>,
    /// The subset that is unsynced.
    unsynced: BTreeSet<WatchId>,
    /// Wakes the stream's task (capacity 1: one pending wake-up is enough).
    wake: async_channel::Sender<()>,
}

#[derive(Default)]
struct Inner {
    watchers: FastMap<Member, Watcher>,
    /// Exactly the watchers in state `Synced`.
    synced: Group<Member>,
    streams: FastMap<StreamId, StreamState>,
}

/// Counters for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HubStats {
    pub watchers: usize,
    pub synced: usize,
    pub unsynced: usize,
    /// Notifications queued and not yet taken, and their event bytes.
    pub queued: usize,
    pub queued_bytes: usize,
}

/// The registry of every watcher of one store. Shared by all executors;
/// one mutex guards it (taken once per applied batch by `publish`, and by
/// the streams when they register, cancel or drain).
pub struct Hub {
    cfg: HubConfig,
    inner: Mutex<Inner>,
    /// Registered watchers (synced or not). Read by the apply path without
    /// the hub lock (module docs, "Registration").
    count: AtomicUsize,
    /// Invariant: every revision `<= published` has been fanned out.
    published: AtomicI64,
    next_stream: AtomicU64,
}

impl Hub {
    pub fn new(cfg: HubConfig) -> Hub {
        Hub {
            cfg,
            inner: Mutex::new(Inner::default()),
            count: AtomicUsize::new(0),
            published: AtomicI64::new(0),
            next_stream: AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> &HubConfig {
        &self.cfg
    }

    /// Whether any watcher is registered. The apply path collects events
    /// only when this is true; read it under the store's write lock.
    pub fn has_watchers(&self) -> bool {
        self.count.load(Ordering::SeqCst) > 0
    }

    /// The highest revision fanned out so far.
    pub fn published_revision(&self) -> i64 {
        self.published.load(Ordering::SeqCst)
    }

    pub fn stats(&self) -> HubStats {
        let inner = self.lock();
        let mut s = HubStats {
            watchers: inner.watchers.len(),
            ..HubStats::default()
        };
        for w in inner.watchers.values() {
            match w.state {
                State::Synced => s.synced += 1,
                State::Unsynced => s.unsynced += 1,
            }
            s.queued += w.pending;
            s.queued_bytes += w.pending_bytes;
        }
        s
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock is a bug in this module; the state
        // it left is still memory-safe, and refusing every later watch call
        // would take the whole service down with it.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Fans out the events of the revisions up to `revision` (the store
    /// revision after an applied batch): each revision's events go, as one
    /// notification, to every synced watcher whose range holds one of them
    /// and whose `next_rev` has not passed it. A watcher whose queue is full
    /// becomes unsynced instead; this never blocks. `events` must be in
    /// revision order (as `collect_events` makes them); empty when nothing
    /// watched, then only the published revision moves.
    pub fn publish(&self, revision: i64, events: Vec<Event>) {
        if events.is_empty() {
            self.published.fetch_max(revision, Ordering::SeqCst);
            return;
        }
        let events: Vec<Arc<Event>> = events.into_iter().map(Arc::new).collect();
        let mut guard = self.lock();
        let Inner {
            watchers,
            synced,
            streams,
        } = &mut *guard;
        // One event in a revision (the common case): no grouping needed.
        let mut members: Vec<Member> = Vec::new();
        let mut batches: FastMap<Member, Vec<Arc<Event>>> = FastMap::default();
        for one_rev in events.chunk_by(|a, b| a.kv.mod_revision == b.kv.mod_revision) {
            let rev = one_rev.first().map_or(0, |e| e.kv.mod_revision);
            if let [e] = one_rev {
                members.clear();
                synced.for_each_watching(&e.kv.key, |m| members.push(m));
                for &m in &members {
                    self.deliver(watchers, synced, streams, rev, m, vec![e.clone()]);
                }
                continue;
            }
            for e in one_rev {
                synced.for_each_watching(&e.kv.key, |m| {
                    batches.entry(m).or_default().push(e.clone());
                });
            }
            for (m, evs) in batches.drain() {
                self.deliver(watchers, synced, streams, rev, m, evs);
            }
        }
        self.published.fetch_max(revision, Ordering::SeqCst);
    }

    /// Queues `evs` (of revision `rev`, matching watcher `m`) on its stream,
    /// or moves the watcher to catch-up from history when its queue is full.
    fn deliver(
        &self,
        watchers: &mut FastMap<Member, Watcher>,
        synced: &mut Group<Member>,
        streams: &mut FastMap<StreamId, StreamState>,
        rev: i64,
        m: Member,
        mut evs: Vec<Arc<Event>>,
    ) {
        let Some(w) = watchers.get_mut(&m) else {
            return;
        };
        // Registered after this revision was written: not its event
        // (etcd: "don't double notify").
        if rev < w.next_rev {
            return;
        }
        w.next_rev = rev + 1;
        if !w.filters.is_empty() {
            evs.retain(|e| w.filters.keeps(e));
        }
        if evs.is_empty() {
            return;
        }
        let Some(st) = streams.get_mut(&m.stream) else {
            return;
        };
        let bytes = evs.iter().map(|e| event_bytes(e)).sum::<usize>();
        let full = w.pending >= self.cfg.max_pending_revisions
            || (w.pending > 0 && w.pending_bytes + bytes > self.cfg.max_pending_bytes);
        if full {
            // Drop the batch; the stream re-reads it from history.
            w.next_rev = rev;
            w.state = State::Unsynced;
            synced.remove(&w.span, m);
            st.unsynced.insert(m.id);
        } else {
            w.pending += 1;
            w.pending_bytes += bytes;
            let was_empty = st.queue.is_empty();
            st.queue.push_back(Queued {
                n: Notification {
                    watch_id: m.id,
                    revision: rev,
                    events: evs,
                    compact_revision: 0,
                },
                bytes,
            });
            // The stream drains its whole queue under the hub lock, so a
            // queue that was not empty already has its wake-up coming.
            if !was_empty {
                return;
            }
        }
        let _ = st.wake.try_send(());
    }

    /// The store was replaced wholesale (a Raft snapshot installed) and is
    /// now at `revision`: no event stream connects the old store to the new
    /// one, so every synced watcher re-reads from its `next_rev` (etcd's
    /// `watchableStore.Restore` moves them all to unsynced). Call it after
    /// the new store is in place, with the store lock released.
    pub fn restore(&self, revision: i64) {
        let mut guard = self.lock();
        let Inner {
            watchers,
            synced,
            streams,
        } = &mut *guard;
        for (m, w) in watchers.iter_mut() {
            if w.state != State::Synced {
                continue;
            }
            w.state = State::Unsynced;
            synced.remove(&w.span, *m);
            if let Some(st) = streams.get_mut(&m.stream) {
                st.unsynced.insert(m.id);
                let _ = st.wake.try_send(());
            }
        }
        self.published.fetch_max(revision, Ordering::SeqCst);
    }

    /// Removes a watcher everywhere; false if it was not registered.
    fn remove(&self, inner: &mut Inner, m: Member) -> bool {
        let Some(w) = inner.watchers.remove(&m) else {
            return false;
        };
        if w.state == State::Synced {
            inner.synced.remove(&w.span, m);
        }
        if let Some(st) = inner.streams.get_mut(&m.stream) {
            st.watchers.remove(&m.id);
            st.unsynced.remove(&m.id);
            if w.pending > 0 {
                st.queue.retain(|q| q.n.watch_id != m.id);
            }
        }
        self.count.fetch_sub(1, Ordering::SeqCst);
        true
    }
}

/// A hub together with the store it serves: what a watch service needs
/// (raftcore's `Node::watch_hub`).
#[derive(Clone)]
pub struct Watchable {
    hub: Arc<Hub>,
    history: Arc<dyn History>,
}

impl Watchable {
    pub fn new(hub: Arc<Hub>, history: Arc<dyn History>) -> Watchable {
        Watchable { hub, history }
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// A new stream with no watchers (etcd's `NewWatchStream`).
    pub fn new_stream(&self) -> WatchStream {
        let id = self.hub.next_stream.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = async_channel::bounded(1);
        self.hub.lock().streams.insert(
            id,
            StreamState {
                queue: VecDeque::new(),
                watchers: BTreeSet::new(),
                unsynced: BTreeSet::new(),
                wake: tx,
            },
        );
        WatchStream {
            hub: self.hub.clone(),
            history: self.history.clone(),
            id,
            wake: rx,
            ids: BTreeSet::new(),
            next_id: 0,
            seen_rev: 0,
            last_caught_up: None,
        }
    }
}

/// What one read of history found for a watcher.
enum Read {
    /// Its next revision is below the compaction revision (etcd's value:
    /// -1 when the store was never compacted).
    Compacted(i64),
    Page {
        cur: i64,
        page: EventPage,
    },
}

fn read_history(s: &Store, from: i64, key: &[u8], end: &[u8], max_revs: usize) -> Read {
    let cur = s.current_revision();
    let compact = match s.compact_revision() {
        0 => -1,
        c => c,
    };
    if from < compact {
        return Read::Compacted(compact);
    }
    if from > cur {
        return Read::Page {
            cur,
            page: EventPage::default(),
        };
    }
    match s.events_between(from.max(1), cur, key, end, max_revs) {
        Ok(page) => Read::Page { cur, page },
        Err(_) => Read::Compacted(compact),
    }
}

/// One client stream's watchers. Not shared between tasks: the stream task
/// creates, cancels and drains through it; the hub wakes it through
/// [`WatchStream::notified`]. Dropping it removes all its watchers.
pub struct WatchStream {
    hub: Arc<Hub>,
    history: Arc<dyn History>,
    id: StreamId,
    wake: async_channel::Receiver<()>,
    /// Ids in use, including watchers cancelled by compaction that the
    /// client has not cancelled yet (etcd keeps those too).
    ids: BTreeSet<WatchId>,
    /// The next server-assigned id candidate (etcd: `nextID`, from 0).
    next_id: i64,
    /// The highest revision this stream reported, so `rev` never goes back.
    seen_rev: i64,
    /// Round-robin position among unsynced watchers.
    last_caught_up: Option<WatchId>,
}

impl WatchStream {
    /// Creates a watcher (etcd's `watchStream.Watch` + `watchableStore.watch`).
    pub fn watch(&mut self, req: WatchRequest) -> Result<Created, WatchError> {
        if !req.range_end.is_empty() && req.range_end != [0] && req.key >= req.range_end {
            return Err(WatchError::EmptyRange);
        }
        let id = if req.id == WatchId::AUTO {
            while self.ids.contains(&WatchId(self.next_id)) {
                self.next_id += 1;
            }
            let id = WatchId(self.next_id);
            self.next_id += 1;
            id
        } else if self.ids.contains(&req.id) {
            return Err(WatchError::DuplicateId);
        } else {
            req.id
        };
        let hub = self.hub.clone();
        let mut inner = hub.lock();
        // Count first, then read the store (module docs, "Registration").
        hub.count.fetch_add(1, Ordering::SeqCst);
        let mut cur = None;
        self.history
            .read_store(&mut |s| cur = Some(s.current_revision()));
        let (Some(cur), Some(st)) = (cur, inner.streams.get_mut(&self.id)) else {
            hub.count.fetch_sub(1, Ordering::SeqCst);
            return Err(WatchError::Stopped);
        };
        let synced = req.start_revision == 0 || req.start_revision > cur;
        st.watchers.insert(id);
        if !synced {
            st.unsynced.insert(id);
            let _ = st.wake.try_send(());
        }
        let span = Span::new(&req.key, &req.range_end);
        let m = Member {
            stream: self.id,
            id,
        };
        if synced {
            inner.synced.add(&span, m);
        }
        inner.watchers.insert(
            m,
            Watcher {
                key: req.key,
                range_end: req.range_end,
                span,
                filters: req.filters,
                next_rev: if synced {
                    (cur + 1).max(req.start_revision)
                } else {
                    req.start_revision
                },
                floor_rev: cur,
                state: if synced {
                    State::Synced
                } else {
                    State::Unsynced
                },
                pending: 0,
                pending_bytes: 0,
            },
        );
        drop(inner);
        self.ids.insert(id);
        self.seen_rev = self.seen_rev.max(cur);
        Ok(Created { id, revision: cur })
    }

    /// Cancels a watcher; its queued notifications are dropped. Cancelling
    /// a watcher that compaction already cancelled succeeds (etcd does).
    pub fn cancel(&mut self, id: WatchId) -> Result<(), WatchError> {
        if !self.ids.remove(&id) {
            return Err(WatchError::NotExist);
        }
        let mut inner = self.hub.lock();
        self.hub.remove(
            &mut inner,
            Member {
                stream: self.id,
                id,
            },
        );
        Ok(())
    }

    /// Queues a progress notification for `id` if it is synced and its
    /// queue has room (etcd's `RequestProgress`: a watcher that is behind or
    /// busy gets none). Its revision is the published revision: every event
    /// up to it is queued ahead of it.
    pub fn request_progress(&self, id: WatchId) {
        let mut guard = self.hub.lock();
        let Inner {
            watchers, streams, ..
        } = &mut *guard;
        let m = Member {
            stream: self.id,
            id,
        };
        let (Some(w), Some(st)) = (watchers.get_mut(&m), streams.get_mut(&self.id)) else {
            return;
        };
        if w.state != State::Synced || w.pending >= self.hub.cfg.max_pending_revisions {
            return;
        }
        w.pending += 1;
        st.queue.push_back(Queued {
            n: Notification {
                watch_id: id,
                revision: self.hub.published_revision().max(w.floor_rev),
                events: Vec::new(),
                compact_revision: 0,
            },
            bytes: 0,
        });
        let _ = st.wake.try_send(());
    }

    /// The revision this stream has observed (etcd's `watchStream.Rev()`):
    /// the published revision, or more if a registration or catch-up here
    /// read a newer store revision.
    pub fn rev(&self) -> i64 {
        self.hub.published_revision().max(self.seen_rev)
    }

    /// Waits until the hub may have something for this stream. May return
    /// spuriously; call [`WatchStream::poll`] after it.
    pub async fn notified(&self) {
        let _ = self.wake.recv().await;
    }

    /// Whether `poll` has work: queued notifications or unsynced watchers.
    pub fn has_work(&self) -> bool {
        let inner = self.hub.lock();
        inner
            .streams
            .get(&self.id)
            .is_some_and(|st| !st.queue.is_empty() || !st.unsynced.is_empty())
    }

    /// Takes what is ready without waiting: every queued notification if
    /// there are any, else one catch-up step of one unsynced watcher (which
    /// may produce nothing, e.g. when filters drop everything).
    pub fn poll(&mut self) -> Result<Vec<Notification>, WatchError> {
        let pick = {
            let mut guard = self.hub.lock();
            let Inner {
                watchers, streams, ..
            } = &mut *guard;
            let Some(st) = streams.get_mut(&self.id) else {
                return Err(WatchError::Stopped);
            };
            if !st.queue.is_empty() {
                let mut out = Vec::with_capacity(st.queue.len());
                for q in st.queue.drain(..) {
                    if let Some(w) = watchers.get_mut(&Member {
                        stream: self.id,
                        id: q.n.watch_id,
                    }) {
                        w.pending -= 1;
                        w.pending_bytes -= q.bytes;
                    }
                    out.push(q.n);
                }
                return Ok(out);
            }
            let after = self.last_caught_up;
            st.unsynced
                .iter()
                .find(|id| after.is_none_or(|a| **id > a))
                .or_else(|| st.unsynced.first())
                .copied()
        };
        let mut out = Vec::new();
        if let Some(id) = pick {
            self.last_caught_up = Some(id);
            self.catch_up(id, &mut out)?;
        }
        Ok(out)
    }

    /// One catch-up step (etcd's `syncWatchers` for one watcher): read up to
    /// `max_batch_revisions` revisions of history without the hub lock;
    /// then, under it, either finish (the store revision read there is the
    /// last one publish skipped for this watcher) or stay unsynced.
    fn catch_up(&mut self, id: WatchId, out: &mut Vec<Notification>) -> Result<(), WatchError> {
        let m = Member {
            stream: self.id,
            id,
        };
        let (key, end, from, filters) = {
            let inner = self.hub.lock();
            match inner.watchers.get(&m) {
                Some(w) if w.state == State::Unsynced => {
                    (w.key.clone(), w.range_end.clone(), w.next_rev, w.filters)
                }
                _ => return Ok(()),
            }
        };
        let max_revs = self.hub.cfg.max_batch_revisions;
        let mut read = None;
        self.history.read_store(&mut |s| {
            read = Some(read_history(s, from, &key, &end, max_revs));
        });
        let read = read.ok_or(WatchError::Stopped)?;

        let hub = self.hub.clone();
        let mut guard = hub.lock();
        let inner = &mut *guard;
        match inner.watchers.get(&m) {
            // Only this stream moves its unsynced watchers; anything else
            // means it was cancelled meanwhile.
            Some(w) if w.state == State::Unsynced && w.next_rev == from => {}
            _ => return Ok(()),
        }
        let (cur, page) = match read {
            Read::Compacted(c) => {
                hub.remove(inner, m);
                out.push(Notification {
                    watch_id: id,
                    revision: 0,
                    events: Vec::new(),
                    compact_revision: c,
                });
                return Ok(());
            }
            Read::Page { cur, page } => (cur, page),
        };
        let mut header = cur;
        let mut events = page.events;
        let mut next = page.more.unwrap_or(cur + 1);
        let mut synced = false;
        if page.more.is_none() {
            // Publishing is blocked while we hold the hub lock, so if the
            // store has not moved past `next - 1` (or only a little), the
            // watcher is in sync once those revisions are read.
            let limit = hub.cfg.max_locked_catch_up_revisions;
            let mut fin = None;
            self.history.read_store(&mut |s| {
                let now = s.current_revision();
                if next > now {
                    fin = Some((now, Vec::new()));
                } else if now - next < limit {
                    if let Read::Page { cur, page } = read_history(s, next, &key, &end, 0) {
                        fin = Some((cur, page.events));
                    }
                }
            });
            if let Some((now, more)) = fin {
                events.extend(more);
                header = header.max(now);
                next = now + 1;
                synced = true;
            }
        }
        let Inner {
            watchers,
            synced: group,
            streams,
        } = inner;
        let Some(w) = watchers.get_mut(&m) else {
            return Ok(());
        };
        w.next_rev = next;
        if synced {
            w.state = State::Synced;
            w.floor_rev = header;
            group.add(&w.span, m);
            if let Some(st) = streams.get_mut(&self.id) {
                st.unsynced.remove(&id);
            }
        }
        drop(guard);
        self.seen_rev = self.seen_rev.max(header);
        if !filters.is_empty() {
            events.retain(|e| filters.keeps(e));
        }
        if !events.is_empty() {
            out.push(Notification {
                watch_id: id,
                revision: header,
                events: events.into_iter().map(Arc::new).collect(),
                compact_revision: 0,
            });
        }
        Ok(())
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        let hub = self.hub.clone();
        let mut inner = hub.lock();
        let ids: Vec<WatchId> = inner
            .streams
            .get(&self.id)
            .map(|st| st.watchers.iter().copied().collect())
            .unwrap_or_default();
        for id in ids {
            hub.remove(
                &mut inner,
                Member {
                    stream: self.id,
                    id,
                },
            );
        }
        inner.streams.remove(&self.id);
    }
}
