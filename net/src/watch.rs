//! The etcd Watch service (`/etcdserverpb.Watch/Watch`, bidirectional
//! streaming), as etcd v3.5's server/etcdserver/api/v3rpc/watch.go serves
//! it, on top of `engine::watch` (which does the mvcc part: watcher groups,
//! synced/unsynced, history replay).
//!
//! One task per call (the gRPC layer's stream task) owns one
//! `engine::watch::WatchStream`. It loops: send whatever the hub has for the
//! stream (which also catches up unsynced watchers), then wait for a request,
//! a wake-up from the hub (possibly from the Raft loop's executor), the
//! progress ticker, or the client going away.
//!
//! Invariants:
//! * A watcher's `created` response is sent before any of its events (the
//!   create is handled to completion, response included, before the next
//!   drain), and nothing is sent for it after its `canceled` response (a
//!   cancel drops what is queued for it).
//! * Responses of one watcher are sent in revision order, each revision's
//!   events in one response unless the watcher asked for `fragment` and the
//!   response is at least the fragment size.
//! * Like etcd, a client half-close does not end the call: it ends when the
//!   client resets the stream or the connection closes.
//!
//! etcd behaviours kept on purpose: server-assigned ids start at 0 per
//! stream; errors of a create come back as a `created` + `canceled` response
//! with `watch_id: -1` and etcd's `cancel_reason`; a cancel of an unknown id
//! is silently ignored; a progress request is answered with `watch_id: -1`
//! and the stream's revision; a compaction cancel carries header revision 0.
//!
//! Require-leader streams (gRPC metadata `hasleader: true`, clientv3's
//! `WithRequireLeader`), as etcd's stream interceptor and `monitorLeader`:
//! refused with "etcdserver: no leader" (Unavailable) when the member has no
//! leader (by the router's gate, server.rs, as every require-leader call),
//! and ended with it after [`MAX_NO_LEADER_CHECKS`] checks in a row, one
//! per election timeout, without a leader.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::mvcc::EventKind;
use engine::watch::{Filters, Notification, WatchId, WatchRequest, WatchStream};
use futures_lite::future;
use glommio::timer::sleep;
use raftcore::Node;

use crate::errors;
use crate::grpc::server::{RequestStream, ResponseSink};
use crate::grpc::{streaming, CallInfo, Router, Status};
use crate::pb::etcdserverpb as pb;
use crate::pb::mvccpb;

/// Maps on the per-event path hash with foldhash (randomly seeded per map),
/// not SipHash: their keys are watch ids (a stream's own) and addresses.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// etcd's `maxNoLeaderCnt`: a stream opened with `hasleader: true` ends
/// with "etcdserver: no leader" once this member has seen no leader at this
/// many checks in a row, one check per election timeout (etcd's
/// `monitorLeader`).
pub const MAX_NO_LEADER_CHECKS: u32 = 3;

/// etcd's `minWatchProgressInterval`: shorter settings are raised to it.
pub const MIN_PROGRESS_NOTIFY_INTERVAL: Duration = Duration::from_millis(100);

/// Settings of the Watch service.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// `--experimental-watch-progress-notify-interval` (etcd: 10 min; at
    /// least [`MIN_PROGRESS_NOTIFY_INTERVAL`]). Each stream adds a random
    /// jitter of up to a tenth, as etcd does, so streams opened together do
    /// not notify together.
    pub progress_notify_interval: Duration,
    /// A response of a `fragment` watcher at least this large is split
    /// (etcd: `--max-request-bytes` + 512 KiB of gRPC overhead).
    pub fragment_bytes: usize,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            progress_notify_interval: Duration::from_secs(10 * 60),
            fragment_bytes: 1536 * 1024 + 512 * 1024,
        }
    }
}

struct WatchService {
    node: Arc<Node>,
    cfg: WatchConfig,
}

/// Registers `/etcdserverpb.Watch/Watch` on `router`.
pub fn register(router: &mut Router, node: Arc<Node>, cfg: WatchConfig) {
    let svc = Rc::new(WatchService { node, cfg });
    router.add(
        "/etcdserverpb.Watch/Watch",
        streaming(move |rx: RequestStream, tx: ResponseSink, info: CallInfo| {
            let svc = svc.clone();
            async move { svc.serve(rx, tx, info.require_leader).await }
        }),
    );
}

/// What the stream remembers per watcher (etcd's `progress`, `prevKV`,
/// `fragment` maps).
struct Opts {
    prev_kv: bool,
    fragment: bool,
    /// `Some(ok)` for `progress_notify` watchers: `ok` is false when events
    /// went out since the last tick (etcd elides that tick's notification).
    progress: Option<bool>,
}

enum Wake {
    Request(Result<Option<pb::WatchRequest>, Status>),
    Notified,
    Tick,
    Gone,
}

impl WatchService {
    fn header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        Some(self.node.header(revision).into())
    }

    fn progress_interval(&self) -> Duration {
        let base = self
            .cfg
            .progress_notify_interval
            .max(MIN_PROGRESS_NOTIFY_INTERVAL);
        // etcd: interval + rand(interval / 10).
        let tenth = u64::try_from(base.as_nanos() / 10).unwrap_or(u64::MAX);
        let r = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        base + Duration::from_nanos(r % tenth.max(1))
    }

    /// One election timeout: how often a require-leader stream looks for a
    /// leader.
    async fn serve(
        &self,
        mut rx: RequestStream,
        tx: ResponseSink,
        require_leader: bool,
    ) -> Result<(), Status> {
        let mut ws = self.node.watch_hub().new_stream();
        let mut opts: FastMap<WatchId, Opts> = FastMap::default();
        let interval = self.progress_interval();
        let mut next_tick = Instant::now() + interval;
        let election = crate::require_leader::election_timeout(&self.node);
        let mut next_leader_check = require_leader.then(|| Instant::now() + election);
        let mut no_leader_checks = 0;
        let mut half_closed = false;
        loop {
            self.flush(&mut ws, &tx, &mut opts).await?;
            let wake_at = next_leader_check.map_or(next_tick, |c| c.min(next_tick));
            let wait_tick = wake_at.saturating_duration_since(Instant::now());
            let wake = future::or(
                async {
                    if half_closed {
                        future::pending::<()>().await;
                    }
                    Wake::Request(rx.next::<pb::WatchRequest>().await)
                },
                future::or(
                    async {
                        ws.notified().await;
                        Wake::Notified
                    },
                    future::or(
                        async {
                            sleep(wait_tick).await;
                            Wake::Tick
                        },
                        async {
                            tx.closed().await;
                            Wake::Gone
                        },
                    ),
                ),
            )
            .await;
            match wake {
                Wake::Request(Ok(Some(req))) => {
                    self.handle(req, &mut ws, &tx, &mut opts).await?;
                }
                // etcd keeps serving after the client's half-close, until
                // the client cancels the call.
                Wake::Request(Ok(None)) => half_closed = true,
                Wake::Request(Err(st)) => return Err(st),
                Wake::Notified => {}
                Wake::Tick => {
                    let now = Instant::now();
                    // The leader check of a require-leader stream.
                    if next_leader_check.is_some_and(|c| now >= c) {
                        next_leader_check = Some(now + election);
                        if self.node.leader() == 0 {
                            no_leader_checks += 1;
                            if no_leader_checks >= MAX_NO_LEADER_CHECKS {
                                return Err(errors::no_leader());
                            }
                        } else {
                            no_leader_checks = 0;
                        }
                    }
                    if now >= next_tick {
                        next_tick = now + interval;
                        for (id, o) in opts.iter_mut() {
                            if let Some(ok) = o.progress.as_mut() {
                                if *ok {
                                    ws.request_progress(*id);
                                }
                                *ok = true;
                            }
                        }
                    }
                }
                Wake::Gone => return Ok(()),
            }
        }
    }

    async fn handle(
        &self,
        req: pb::WatchRequest,
        ws: &mut WatchStream,
        tx: &ResponseSink,
        opts: &mut FastMap<WatchId, Opts>,
    ) -> Result<(), Status> {
        use pb::watch_request::RequestUnion as U;
        match req.request_union {
            Some(U::CreateRequest(c)) => {
                let wsrev = ws.rev();
                let filters = c.filters.iter().fold(Filters::default(), |f, x| match x {
                    0 => Filters { no_put: true, ..f },
                    1 => Filters {
                        no_delete: true,
                        ..f
                    },
                    _ => f,
                });
                let wreq = WatchRequest {
                    id: WatchId(c.watch_id),
                    // etcd: an empty key is `\0`, the smallest key. The
                    // range end keeps the same conventions in the engine
                    // (empty: one key, `\0`: from the key on).
                    key: if c.key.is_empty() { vec![0] } else { c.key },
                    range_end: c.range_end,
                    start_revision: c.start_revision,
                    filters,
                };
                let resp = match ws.watch(wreq) {
                    Ok(created) => {
                        opts.insert(
                            created.id,
                            Opts {
                                prev_kv: c.prev_kv,
                                fragment: c.fragment,
                                progress: c.progress_notify.then_some(true),
                            },
                        );
                        pb::WatchResponse {
                            header: self.header(created.revision.max(wsrev)),
                            watch_id: created.id.0,
                            created: true,
                            ..Default::default()
                        }
                    }
                    Err(engine::watch::WatchError::Stopped) => return Err(errors::stopped()),
                    Err(e) => pb::WatchResponse {
                        header: self.header(wsrev),
                        watch_id: -1,
                        created: true,
                        canceled: true,
                        cancel_reason: e.to_string(),
                        ..Default::default()
                    },
                };
                tx.send(&resp).await
            }
            Some(U::CancelRequest(c)) => {
                let id = WatchId(c.watch_id);
                if ws.cancel(id).is_err() {
                    // etcd answers nothing for an unknown id.
                    return Ok(());
                }
                opts.remove(&id);
                tx.send(&pb::WatchResponse {
                    header: self.header(ws.rev()),
                    watch_id: id.0,
                    canceled: true,
                    ..Default::default()
                })
                .await
            }
            Some(U::ProgressRequest(_)) => {
                // Send what is queued first, so the revision reported is not
                // ahead of events still on their way.
                self.flush(ws, tx, opts).await?;
                tx.send(&pb::WatchResponse {
                    header: self.header(ws.rev()),
                    // Not tied to a watcher: clients broadcast it to all.
                    watch_id: -1,
                    ..Default::default()
                })
                .await
            }
            // etcd ignores a request with nothing set.
            None => Ok(()),
        }
    }

    /// Sends everything the hub has for this stream, catching up unsynced
    /// watchers until none is left.
    async fn flush(
        &self,
        ws: &mut WatchStream,
        tx: &ResponseSink,
        opts: &mut FastMap<WatchId, Opts>,
    ) -> Result<(), Status> {
        loop {
            let batch = ws.poll().map_err(|_| errors::stopped())?;
            if batch.is_empty() && !ws.has_work() {
                return Ok(());
            }
            // The watchers of one stream mostly get the same events (the
            // hub shares them as `Arc`s): encode each once per batch. The
            // batch's responses go out as one run of gRPC messages (at most
            // about `COALESCE_BYTES` per send), not one HTTP/2 send each.
            // Each run's buffer is sized from an estimate of what is left,
            // so a stream holds no buffer between flushes.
            let mut cache = EncodedEvents::default();
            let mut left: usize = batch.iter().map(size_estimate).sum();
            let mut out = bytes::BytesMut::new();
            for n in batch {
                if out.is_empty() {
                    out.reserve(left.min(COALESCE_BYTES + (8 << 10)));
                }
                left = left.saturating_sub(size_estimate(&n));
                self.add_notification(n, tx, opts, &mut cache, &mut out)
                    .await?;
                if out.len() >= COALESCE_BYTES {
                    tx.send_frame(out.split().freeze()).await?;
                }
            }
            if !out.is_empty() {
                tx.send_frame(out.freeze()).await?;
            }
            glommio::yield_if_needed().await;
        }
    }

    /// Appends `n`'s response to `out`; a fragmented one is sent at once,
    /// after what `out` held.
    async fn add_notification(
        &self,
        n: Notification,
        tx: &ResponseSink,
        opts: &mut FastMap<WatchId, Opts>,
        cache: &mut EncodedEvents,
        out: &mut bytes::BytesMut,
    ) -> Result<(), Status> {
        let o = opts.get_mut(&n.watch_id);
        let (prev_kv, fragment) = o
            .as_ref()
            .map_or((false, false), |o| (o.prev_kv, o.fragment));
        let has_events = !n.events.is_empty();
        let mut resp = pb::WatchResponse {
            header: self.header(n.revision),
            watch_id: n.watch_id.0,
            compact_revision: n.compact_revision,
            canceled: n.compact_revision != 0,
            ..Default::default()
        };
        if fragment {
            if !out.is_empty() {
                tx.send_frame(out.split().freeze()).await?;
            }
            resp.events = n.events.iter().map(|e| event_to_pb(e, prev_kv)).collect();
            for part in fragments(resp, self.cfg.fragment_bytes) {
                tx.send(&part).await?;
            }
        } else {
            cache.append_frame(&resp, &n.events, prev_kv, out);
        }
        if has_events {
            if let Some(ok) = o.and_then(|o| o.progress.as_mut()) {
                // Elide the next progress notification.
                *ok = false;
            }
        }
        Ok(())
    }
}

/// `WatchResponse.events` is field 11 (etcd's rpc.proto).
const EVENTS_FIELD: u32 = 11;

/// A flush sends its responses in runs of about this many bytes.
const COALESCE_BYTES: usize = 64 << 10;

/// About the encoded size of `n`'s response (to size buffers, not exact).
fn size_estimate(n: &Notification) -> usize {
    let kv = |kv: &engine::mvcc::KeyValue| 32 + kv.key.len() + kv.value.len();
    64 + n
        .events
        .iter()
        .map(|e| 8 + kv(&e.kv) + e.prev_kv.as_ref().map_or(0, kv))
        .sum::<usize>()
}

/// Each event of a flush encoded once, as the bytes of one `events` entry
/// of a `WatchResponse` (field key, length, `mvccpb.Event`), keyed by the
/// hub's `Arc` and whether `prev_kv` is wanted. The entry keeps its `Arc`,
/// so the address cannot be reused for another event while it is cached.
/// A response is then its other fields, encoded by prost, followed by
/// these bytes: protobuf decoders accept a repeated field's entries after
/// the lower-numbered fields, which is also prost's own order.
#[derive(Default)]
struct EncodedEvents {
    map: FastMap<(usize, bool), (Arc<engine::mvcc::Event>, bytes::Bytes)>,
    /// The last response header seen and its encoding as field 1 of a
    /// `WatchResponse` (a flush's responses mostly share one).
    header: Option<(pb::ResponseHeader, bytes::Bytes)>,
}

impl EncodedEvents {
    /// The length of `e`'s encoding, encoding and caching it first if new.
    fn entry_len(&mut self, e: &Arc<engine::mvcc::Event>, prev_kv: bool) -> usize {
        let key = (Arc::as_ptr(e) as usize, prev_kv);
        if let Some((_, b)) = self.map.get(&key) {
            return b.len();
        }
        let ev = event_to_pb(e, prev_kv);
        let body = prost::Message::encoded_len(&ev);
        let mut buf = bytes::BytesMut::with_capacity(body + 16);
        prost::encoding::encode_key(
            EVENTS_FIELD,
            prost::encoding::WireType::LengthDelimited,
            &mut buf,
        );
        prost::encoding::encode_varint(body as u64, &mut buf);
        // Only fails for want of capacity, which `buf` grows to have.
        let _ = prost::Message::encode(&ev, &mut buf);
        let len = buf.len();
        self.map.insert(key, (e.clone(), buf.freeze()));
        len
    }

    /// The encoding of `header` as field 1, from the cache (re-encoded when
    /// the header differs from the cached one).
    fn header(&mut self, header: &pb::ResponseHeader) -> &[u8] {
        if self.header.as_ref().is_none_or(|(h, _)| h != header) {
            let mut b = bytes::BytesMut::new();
            prost::encoding::message::encode(1, header, &mut b);
            self.header = Some((header.clone(), b.freeze()));
        }
        self.header.as_ref().map_or(&[], |(_, b)| b)
    }

    /// Appends one gRPC message to `out`: `head` (a response without
    /// events) and `events`.
    fn append_frame(
        &mut self,
        head: &pb::WatchResponse,
        events: &[Arc<engine::mvcc::Event>],
        prev_kv: bool,
        out: &mut bytes::BytesMut,
    ) {
        use bytes::BufMut;
        use prost::encoding::{bool as pbool, int64};
        let events_len = events
            .iter()
            .map(|e| self.entry_len(e, prev_kv))
            .sum::<usize>();
        // A notification's head is its header (cached), watch_id and, when
        // compacted, canceled and compact_revision: fields 1, 2, 4, 5 in
        // prost's order. Anything else goes through prost.
        let simple = !head.created
            && head.cancel_reason.is_empty()
            && !head.fragment
            && head.events.is_empty();
        let header: &[u8] = match (&head.header, simple) {
            (Some(h), true) => self.header(h),
            _ => &[],
        };
        let head_len = if simple {
            let mut n = header.len();
            if head.watch_id != 0 {
                n += int64::encoded_len(2, &head.watch_id);
            }
            if head.canceled {
                n += pbool::encoded_len(4, &head.canceled);
            }
            if head.compact_revision != 0 {
                n += int64::encoded_len(5, &head.compact_revision);
            }
            n
        } else {
            prost::Message::encoded_len(head)
        };
        let len = head_len + events_len;
        out.reserve(crate::grpc::codec::HEADER_LEN + len);
        out.put_u8(0);
        out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
        if simple {
            out.extend_from_slice(header);
            if head.watch_id != 0 {
                int64::encode(2, &head.watch_id, out);
            }
            if head.canceled {
                pbool::encode(4, &head.canceled, out);
            }
            if head.compact_revision != 0 {
                int64::encode(5, &head.compact_revision, out);
            }
        } else {
            // Only fails for want of capacity, reserved above.
            let _ = prost::Message::encode(head, out);
        }
        // Every event is cached by now (`entry_len`).
        for e in events {
            if let Some((_, b)) = self.map.get(&(Arc::as_ptr(e) as usize, prev_kv)) {
                out.extend_from_slice(b);
            }
        }
    }
}

fn kv_to_pb(kv: &engine::mvcc::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key.clone(),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value.clone(),
        lease: kv.lease,
    }
}

/// etcd fills `prev_kv` only when the watcher asked for it and the event is
/// not a create (`IsCreateEvent`: a put with `create_revision ==
/// mod_revision`).
fn event_to_pb(e: &engine::mvcc::Event, want_prev: bool) -> mvccpb::Event {
    let is_create = e.kind == EventKind::Put && e.kv.create_revision == e.kv.mod_revision;
    mvccpb::Event {
        r#type: e.kind.as_i32(),
        kv: Some(kv_to_pb(&e.kv)),
        prev_kv: if want_prev && !is_create {
            e.prev_kv.as_ref().map(kv_to_pb)
        } else {
            None
        },
    }
}

/// etcd's `sendFragments`: a response smaller than `max` or with fewer than
/// two events goes whole; otherwise each part takes events while it stays
/// below `max` (a part always takes at least one), every part but the last
/// has `fragment: true`.
fn fragments(wr: pb::WatchResponse, max: usize) -> Vec<pb::WatchResponse> {
    use prost::Message;
    if wr.encoded_len() < max || wr.events.len() < 2 {
        return vec![wr];
    }
    let mut base = wr;
    let events = std::mem::take(&mut base.events);
    base.fragment = true;
    let base_len = base.encoded_len();
    let mut out = Vec::new();
    let mut cur = base.clone();
    let mut cur_len = base_len;
    for ev in events {
        // Field 11, length-delimited: one tag byte, the length, the body.
        let body = ev.encoded_len();
        let len = 1 + prost::encoding::encoded_len_varint(body as u64) + body;
        if !cur.events.is_empty() && cur_len + len >= max {
            out.push(std::mem::replace(&mut cur, base.clone()));
            cur_len = base_len;
        }
        cur.events.push(ev);
        cur_len += len;
    }
    cur.fragment = false;
    out.push(cur);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn ev(key: &str, value_len: usize) -> mvccpb::Event {
        mvccpb::Event {
            r#type: 0,
            kv: Some(mvccpb::KeyValue {
                key: key.into(),
                value: vec![b'v'; value_len],
                mod_revision: 5,
                create_revision: 5,
                version: 1,
                lease: 0,
            }),
            prev_kv: None,
        }
    }

    fn resp(events: Vec<mvccpb::Event>) -> pb::WatchResponse {
        pb::WatchResponse {
            header: Some(pb::ResponseHeader {
                cluster_id: 1,
                member_id: 2,
                revision: 5,
                raft_term: 3,
            }),
            watch_id: 4,
            events,
            ..Default::default()
        }
    }

    #[test]
    fn fragments_split_like_etcd() {
        // Small or single-event responses go whole.
        let small = resp(vec![ev("a", 10), ev("b", 10)]);
        assert_eq!(fragments(small.clone(), 1000), vec![small]);
        let one = resp(vec![ev("a", 5000)]);
        assert_eq!(fragments(one.clone(), 1000), vec![one]);
        // Each part stays below the limit unless it holds one event.
        let big = resp((0..10).map(|i| ev(&format!("k{i}"), 300)).collect());
        let parts = fragments(big.clone(), 1000);
        assert!(parts.len() > 1);
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(p.fragment, i + 1 < parts.len());
            assert!(p.encoded_len() < 1000 || p.events.len() == 1);
            // Adding the next event would have reached the limit.
            if let Some(next) = parts.get(i + 1) {
                let mut more = p.clone();
                more.events.push(next.events[0].clone());
                assert!(more.encoded_len() >= 1000);
            }
            assert_eq!(p.watch_id, 4);
            assert_eq!(p.header, big.header);
        }
        let all: Vec<_> = parts.into_iter().flat_map(|p| p.events).collect();
        assert_eq!(all, big.events);
    }

    #[test]
    fn prev_kv_only_when_asked_and_never_for_a_create() {
        let prev = engine::mvcc::KeyValue {
            key: b"k".to_vec(),
            value: b"old".to_vec(),
            ..Default::default()
        };
        let update = engine::mvcc::Event {
            kind: EventKind::Put,
            kv: engine::mvcc::KeyValue {
                key: b"k".to_vec(),
                create_revision: 2,
                mod_revision: 3,
                ..Default::default()
            },
            prev_kv: Some(prev.clone()),
        };
        assert!(event_to_pb(&update, true).prev_kv.is_some());
        assert!(event_to_pb(&update, false).prev_kv.is_none());
        let create = engine::mvcc::Event {
            kv: engine::mvcc::KeyValue {
                create_revision: 3,
                ..update.kv.clone()
            },
            ..update
        };
        assert!(event_to_pb(&create, true).prev_kv.is_none());
    }

    /// A frame built from events encoded once is byte for byte what prost
    /// makes of the whole response, for every prev_kv choice, event kind
    /// and header, and a repeated event is encoded once.
    #[test]
    fn encoded_events_frame_matches_prost() {
        let kv = |key: &str, c: i64, m: i64, v: &str| engine::mvcc::KeyValue {
            key: key.as_bytes().to_vec(),
            create_revision: c,
            mod_revision: m,
            version: m - c + 1,
            value: v.as_bytes().to_vec(),
            lease: 7,
        };
        let put = Arc::new(engine::mvcc::Event {
            kind: EventKind::Put,
            kv: kv("a", 2, 5, "new value"),
            prev_kv: Some(kv("a", 2, 4, "old")),
        });
        let create = Arc::new(engine::mvcc::Event {
            kind: EventKind::Put,
            kv: kv("b", 5, 5, &"x".repeat(300)),
            prev_kv: None,
        });
        let delete = Arc::new(engine::mvcc::Event {
            kind: EventKind::Delete,
            kv: engine::mvcc::KeyValue {
                key: b"c".to_vec(),
                mod_revision: 5,
                ..Default::default()
            },
            prev_kv: Some(kv("c", 3, 3, "gone")),
        });
        let mut cache = EncodedEvents::default();
        for prev_kv in [false, true] {
            for events in [
                vec![put.clone()],
                vec![put.clone(), create.clone(), delete.clone()],
                vec![delete.clone(), put.clone()],
            ] {
                for variant in 0..5 {
                    let mut head = resp(Vec::new());
                    head.watch_id = if prev_kv { 300 } else { 0 };
                    match variant {
                        // Another header than the cached one, then none.
                        1 => head.header.as_mut().unwrap().revision = 9,
                        2 => head.header = None,
                        // A compacted watcher's cancel, negative ids too.
                        3 => {
                            head.canceled = true;
                            head.compact_revision = 4;
                            head.watch_id = -1;
                        }
                        // Fields only prost encodes here.
                        4 => {
                            head.created = true;
                            head.cancel_reason = "r".into();
                            head.fragment = true;
                        }
                        _ => {}
                    }
                    let whole = pb::WatchResponse {
                        events: events.iter().map(|e| event_to_pb(e, prev_kv)).collect(),
                        ..head.clone()
                    };
                    let want = crate::grpc::codec::encode_frame(&whole);
                    let mut out = bytes::BytesMut::from(&b"before"[..]);
                    cache.append_frame(&head, &events, prev_kv, &mut out);
                    assert_eq!(&out[..6], b"before");
                    assert_eq!(&out[6..], &want[..]);
                    // And it decodes back to the same response.
                    let got = pb::WatchResponse::decode(&want[5..]).unwrap();
                    assert_eq!(got, whole);
                }
            }
        }
        // Three events, each with and without prev_kv.
        assert_eq!(cache.map.len(), 6);
    }
}
