//! etcd's Lock service (`v3lockpb.Lock`), as etcd v3.5 serves it
//! (server/etcdserver/api/v3lock/lock.go): a server-side run of
//! clientv3/concurrency's `Mutex` on this member's own KV, Lease and Watch.
//! The helpers shared with the Election service (`v3election.rs`) live here
//! too: the session lease, the prefix ranges and `waitDeletes`.
//!
//! Algorithm and key layout (concurrency/mutex.go, key.go):
//! * the lock key is `<name>/<lease id in lower-case hex>`; a request with
//!   lease 0 gets a fresh 60 s lease, as `concurrency.NewSession` grants one
//!   (etcd then orphans the session: nobody keeps that lease alive);
//! * `tryAcquire` is one txn: `if create_revision(key) == 0 then put(key, "",
//!   lease), get(prefix, first by create revision) else get(key), get(prefix,
//!   first by create revision)`; "my revision" is the txn's revision, or the
//!   existing key's create revision (re-entrance with the same lease);
//! * if the oldest key under the prefix is not ours, wait until every key
//!   with a smaller create revision is deleted (`waitDeletes`: repeatedly
//!   take the newest such key and watch it from the read revision until a
//!   delete), then check that our key still exists ("session expired"
//!   otherwise); a failed wait deletes our key (etcd's `Unlock`).
//! * Unlock is a plain delete of the given key.
//!
//! Waiting uses this member's watch hub ([`KeyWatch`]), not polling.
//!
//! Errors: etcd returns the in-process client's errors from the handler, so
//! gRPC sends them with code Unknown and etcd's message (also server errors
//! such as "etcdserver: requested lease not found"); ferrocd does the same.
//!
//! Cancellation: a call the client cancels (RST_STREAM; the gRPC layer then
//! drops the handler) or whose deadline passes while waiting deletes its
//! key in a task of its own ([`Cleanup`]), like etcd's `Unlock` on a failed
//! wait. A call dropped by server shutdown leaves its key to its lease.

use std::rc::Rc;
use std::sync::Arc;

use engine::mvcc;
use engine::watch::{Filters, Notification, WatchId, WatchRequest, WatchStream};
use raftcore::Node;

use crate::errors::{self, status_of};
use crate::grpc::{unary, CallInfo, Code, Router, Status};
use crate::pb::etcdserverpb as pb;
use crate::pb::mvccpb;
use crate::pb::v3lockpb as lpb;

/// `concurrency.NewSession`'s default TTL, granted when a request has no lease.
pub(crate) const DEFAULT_SESSION_TTL: i64 = 60;

/// concurrency's `ErrSessionExpired`.
pub(crate) fn session_expired() -> Status {
    Status::new(Code::UNKNOWN, "session expired")
}

/// etcd's handlers return the in-process client's errors, which are not
/// gRPC statuses any more: gRPC sends them with code Unknown and the same
/// message.
pub(crate) fn unknown(st: Status) -> Status {
    Status::new(Code::UNKNOWN, st.message)
}

/// The response header etcd's client responses carry.
pub(crate) fn header(node: &Node, revision: i64) -> Option<pb::ResponseHeader> {
    Some(node.header(revision).into())
}

pub(crate) fn kv_to_pb(kv: mvcc::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

/// clientv3's `GetPrefixRangeEnd`.
pub(crate) fn prefix_end(p: &[u8]) -> Vec<u8> {
    let mut end = p.to_vec();
    while let Some(&last) = end.last() {
        if last < 0xff {
            let n = end.len();
            end[n - 1] = last + 1;
            return end;
        }
        end.pop();
    }
    vec![0]
}

/// The lease a session uses: the given one, or (0) a fresh one with the
/// default session TTL. `NewSession(WithLease(-1))` (Leader, Observe) takes
/// -1 as is and never writes with it.
pub(crate) async fn session_lease(node: &Node, lease: i64) -> Result<i64, Status> {
    if lease != 0 {
        return Ok(lease);
    }
    let g = node
        .lease_grant(0, DEFAULT_SESSION_TTL)
        .await
        .map_err(|e| status_of(&e))?;
    Ok(g.id)
}

/// A get of the first (oldest, `newest == false`) or last key under
/// `prefix` by create revision, optionally only keys created at or before
/// `max_create_rev` (clientv3's `WithFirstCreate` / `WithLastCreate` /
/// `WithMaxCreateRev`).
pub(crate) fn by_create(prefix: &[u8], newest: bool, max_create_rev: i64) -> mvcc::RangeRequest {
    mvcc::RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: if newest {
            mvcc::SortOrder::Descend
        } else {
            mvcc::SortOrder::Ascend
        },
        sort_target: mvcc::SortTarget::Create,
        max_create_revision: max_create_rev,
        ..Default::default()
    }
}

pub(crate) fn get_key(key: &[u8]) -> mvcc::RangeRequest {
    mvcc::RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    }
}

pub(crate) fn range_of(op: &mvcc::ResponseOp) -> Option<&mvcc::RangeResponse> {
    match op {
        mvcc::ResponseOp::Range(r) => Some(r),
        _ => None,
    }
}

/// One watcher on this member's watch hub, from `start_revision` on.
pub(crate) struct KeyWatch {
    ws: WatchStream,
}

impl KeyWatch {
    pub(crate) fn new(
        node: &Node,
        key: &[u8],
        range_end: &[u8],
        start_revision: i64,
    ) -> Result<KeyWatch, Status> {
        let mut ws = node.watch_hub().new_stream();
        ws.watch(WatchRequest {
            id: WatchId::AUTO,
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            start_revision,
            filters: Filters::default(),
        })
        .map_err(|e| Status::new(Code::UNKNOWN, e.to_string()))?;
        Ok(KeyWatch { ws })
    }

    /// The next notification with events. A compaction of the history the
    /// watcher needs ends it with etcd's "compacted" error.
    pub(crate) async fn next(&mut self) -> Result<Notification, Status> {
        loop {
            let batch = self.ws.poll().map_err(|_| errors::stopped())?;
            let empty = batch.is_empty();
            for n in batch {
                if n.compact_revision != 0 {
                    return Err(errors::compacted());
                }
                if !n.events.is_empty() {
                    return Ok(n);
                }
            }
            if empty && !self.ws.has_work() {
                self.ws.notified().await;
            } else {
                glommio::yield_if_needed().await;
            }
        }
    }
}

/// concurrency's `waitDelete`: waits for a delete of `key` at or after `rev`.
async fn wait_delete(node: &Node, key: &[u8], rev: i64) -> Result<(), Status> {
    let mut w = KeyWatch::new(node, key, &[], rev)?;
    loop {
        let n = w.next().await?;
        if n.events.iter().any(|e| e.kind == mvcc::EventKind::Delete) {
            return Ok(());
        }
    }
}

/// concurrency's `waitDeletes`: waits until no key under `prefix` has a
/// create revision `<= max_create_rev`; answers the last read's revision.
pub(crate) async fn wait_deletes(
    node: &Node,
    prefix: &[u8],
    max_create_rev: i64,
) -> Result<i64, Status> {
    loop {
        let r = node
            .range(&by_create(prefix, true, max_create_rev), false)
            .await
            .map_err(|e| status_of(&e))?;
        let Some(last) = r.kvs.first() else {
            return Ok(r.revision);
        };
        wait_delete(node, &last.key, r.revision).await?;
    }
}

/// Runs `txn` (a write) and maps errors.
pub(crate) async fn txn(node: &Node, t: mvcc::TxnRequest) -> Result<mvcc::TxnResponse, Status> {
    node.txn(t, false).await.map_err(|e| status_of(&e))
}

/// Undoes a registration when the call is dropped before it finished (the
/// client cancelled, or the deadline passed): runs `cleanup` (a txn) in a
/// task of its own, as etcd's `Unlock` / `Resign` with the client's context.
pub(crate) struct Cleanup {
    node: Arc<Node>,
    txn: Option<mvcc::TxnRequest>,
}

impl Cleanup {
    pub(crate) fn new(node: Arc<Node>, txn: mvcc::TxnRequest) -> Cleanup {
        Cleanup {
            node,
            txn: Some(txn),
        }
    }

    /// Runs the cleanup now (a failed wait).
    pub(crate) async fn run(mut self) {
        if let Some(t) = self.txn.take() {
            let _ = self.node.txn(t, false).await;
        }
    }

    /// The call succeeded: nothing to undo.
    pub(crate) fn disarm(mut self) {
        self.txn = None;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(t) = self.txn.take() {
            let node = self.node.clone();
            // A call dropped while its executor is being torn down (server
            // shutdown) has no executor to spawn on: glommio panics then,
            // and the key goes with its lease instead.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                glommio::spawn_local(async move {
                    let _ = node.txn(t, false).await;
                })
                .detach();
            }));
        }
    }
}

/// A delete of one key, as a txn without compares.
pub(crate) fn delete_txn(key: &[u8], compare: Vec<mvcc::Compare>) -> mvcc::TxnRequest {
    mvcc::TxnRequest {
        compare,
        success: vec![mvcc::RequestOp::DeleteRange(mvcc::DeleteRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })],
        failure: Vec::new(),
    }
}

/// `create_revision(key) == rev`.
pub(crate) fn create_is(key: &[u8], rev: i64) -> mvcc::Compare {
    mvcc::Compare {
        result: mvcc::CompareResult::Equal,
        target: mvcc::CompareTarget::Create(rev),
        key: key.to_vec(),
        range_end: Vec::new(),
    }
}

struct LockService {
    node: Arc<Node>,
}

/// Registers the Lock methods on the client port's `router`.
pub fn register(router: &mut Router, node: Arc<Node>) {
    let svc = Rc::new(LockService { node });
    let s = svc.clone();
    router.add(
        "/v3lockpb.Lock/Lock",
        unary(move |req: lpb::LockRequest, _: CallInfo| {
            let s = s.clone();
            async move { s.lock(req).await.map_err(unknown) }
        }),
    );
    let s = svc;
    router.add(
        "/v3lockpb.Lock/Unlock",
        unary(move |req: lpb::UnlockRequest, _: CallInfo| {
            let s = s.clone();
            async move { s.unlock(req).await.map_err(unknown) }
        }),
    );
}

impl LockService {
    async fn lock(&self, req: lpb::LockRequest) -> Result<lpb::LockResponse, Status> {
        let node = &*self.node;
        let lease = session_lease(node, req.lease).await?;
        let mut prefix = req.name;
        prefix.push(b'/');
        let my_key = [prefix.as_slice(), format!("{lease:x}").as_bytes()].concat();
        // tryAcquire.
        let owner = mvcc::RequestOp::Range(by_create(&prefix, false, 0));
        let resp = txn(
            node,
            mvcc::TxnRequest {
                compare: vec![create_is(&my_key, 0)],
                success: vec![
                    mvcc::RequestOp::Put(mvcc::PutRequest {
                        key: my_key.clone(),
                        lease,
                        ..Default::default()
                    }),
                    owner.clone(),
                ],
                failure: vec![mvcc::RequestOp::Range(get_key(&my_key)), owner],
            },
        )
        .await?;
        let my_rev = if resp.succeeded {
            resp.revision
        } else {
            resp.responses
                .first()
                .and_then(range_of)
                .and_then(|r| r.kvs.first())
                .map_or(0, |kv| kv.create_revision)
        };
        let owner_rev = resp
            .responses
            .get(1)
            .and_then(range_of)
            .and_then(|r| r.kvs.first())
            .map(|kv| kv.create_revision);
        if owner_rev.is_none() || owner_rev == Some(my_rev) {
            return Ok(lpb::LockResponse {
                header: header(node, resp.revision),
                key: my_key,
            });
        }
        let cleanup = Cleanup::new(self.node.clone(), delete_txn(&my_key, Vec::new()));
        if let Err(e) = wait_deletes(node, &prefix, my_rev - 1).await {
            cleanup.run().await;
            return Err(e);
        }
        // Make sure the session is not expired and our key still exists.
        let g = match node.range(&get_key(&my_key), false).await {
            Ok(g) => g,
            Err(e) => {
                cleanup.run().await;
                return Err(status_of(&e));
            }
        };
        cleanup.disarm();
        if g.kvs.is_empty() {
            return Err(session_expired());
        }
        Ok(lpb::LockResponse {
            header: header(node, g.revision),
            key: my_key,
        })
    }

    async fn unlock(&self, req: lpb::UnlockRequest) -> Result<lpb::UnlockResponse, Status> {
        // etcd's client refuses an empty key before sending the delete.
        if req.key.is_empty() {
            return Err(errors::empty_key());
        }
        let r = self
            .node
            .delete_range(mvcc::DeleteRangeRequest {
                key: req.key,
                ..Default::default()
            })
            .await
            .map_err(|e| status_of(&e))?;
        Ok(lpb::UnlockResponse {
            header: header(&self.node, r.revision),
        })
    }
}
