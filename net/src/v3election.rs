//! etcd's Election service (`v3electionpb.Election`), as etcd v3.5 serves
//! it (server/etcdserver/api/v3election/election.go): a server-side run of
//! clientv3/concurrency's `Election` on this member's KV, Lease and Watch
//! (helpers shared with the Lock service are in `v3lock.rs`).
//!
//! * Campaign: the candidate key is `<name>/<lease in hex>`; one txn `if
//!   create_revision(key) == 0 then put(key, value, lease) else get(key)`;
//!   an existing key with another value is proclaimed; then wait until every
//!   key under the prefix created before ours is deleted. The answer's
//!   LeaderKey is {name, key, rev: our create revision, lease}. A request
//!   with lease 0 gets a fresh 60 s lease (etcd's `NewSession`).
//! * Proclaim: `if create_revision(key) == rev then put(key, value, lease)`,
//!   else "election: not leader".
//! * Resign: `if create_revision(key) == rev then delete(key)` (no error when
//!   the compare fails).
//! * Leader: the oldest key under the prefix, or "election: no leader".
//! * Observe: the current leader (or, with none, the first put under the
//!   prefix), then every change of that key until it is deleted, then again.
//!
//! Errors that etcd's handler returns as plain Go errors go out with code
//! Unknown and etcd's message ("election: not leader", "election: no
//! leader", `"leader" field must be provided`). A Campaign the client
//! cancels (or whose deadline passes) while waiting resigns, as etcd does.

use std::rc::Rc;
use std::sync::Arc;

use engine::mvcc;
use raftcore::Node;

use crate::errors::status_of;
use crate::grpc::server::{RequestStream, ResponseSink};
use crate::grpc::{streaming, unary, CallInfo, Code, Router, Status};
use crate::pb::v3electionpb as epb;
use crate::v3lock::{
    by_create, create_is, delete_txn, get_key, header, kv_to_pb, prefix_end, range_of,
    session_lease, txn, unknown, wait_deletes, Cleanup, KeyWatch,
};

/// concurrency's `ErrElectionNotLeader`.
fn not_leader() -> Status {
    Status::new(Code::UNKNOWN, "election: not leader")
}

/// concurrency's `ErrElectionNoLeader`.
fn no_leader() -> Status {
    Status::new(Code::UNKNOWN, "election: no leader")
}

/// v3election's `ErrMissingLeaderKey`.
fn missing_leader_key() -> Status {
    Status::new(Code::UNKNOWN, "\"leader\" field must be provided")
}

struct ElectionService {
    node: Arc<Node>,
}

/// Registers the Election methods on the client port's `router`.
pub fn register(router: &mut Router, node: Arc<Node>) {
    let svc = Rc::new(ElectionService { node });
    let s = svc.clone();
    router.add(
        "/v3electionpb.Election/Campaign",
        unary(move |req: epb::CampaignRequest, _: CallInfo| {
            let s = s.clone();
            async move { s.campaign(req).await.map_err(unknown) }
        }),
    );
    let s = svc.clone();
    router.add(
        "/v3electionpb.Election/Proclaim",
        unary(move |req: epb::ProclaimRequest, _: CallInfo| {
            let s = s.clone();
            async move { s.proclaim(req).await.map_err(unknown) }
        }),
    );
    let s = svc.clone();
    router.add(
        "/v3electionpb.Election/Leader",
        unary(move |req: epb::LeaderRequest, _: CallInfo| {
            let s = s.clone();
            async move { s.leader(req).await.map_err(unknown) }
        }),
    );
    let s = svc.clone();
    router.add(
        "/v3electionpb.Election/Resign",
        unary(move |req: epb::ResignRequest, _: CallInfo| {
            let s = s.clone();
            async move { s.resign(req).await.map_err(unknown) }
        }),
    );
    let s = svc;
    router.add(
        "/v3electionpb.Election/Observe",
        streaming(move |rx: RequestStream, tx: ResponseSink, info: CallInfo| {
            let s = s.clone();
            async move { s.observe(rx, tx, info.require_leader).await }
        }),
    );
}

fn prefix_of(name: &[u8]) -> Vec<u8> {
    let mut p = name.to_vec();
    p.push(b'/');
    p
}

impl ElectionService {
    /// `Election.Proclaim` on a resumed election: the new revision, or
    /// "not leader" if the key is gone or was re-created.
    async fn proclaim_key(
        &self,
        key: &[u8],
        rev: i64,
        lease: i64,
        value: Vec<u8>,
    ) -> Result<i64, Status> {
        let r = txn(
            &self.node,
            mvcc::TxnRequest {
                compare: vec![create_is(key, rev)],
                success: vec![mvcc::RequestOp::Put(mvcc::PutRequest {
                    key: key.to_vec(),
                    value,
                    lease,
                    ..Default::default()
                })],
                failure: Vec::new(),
            },
        )
        .await?;
        if !r.succeeded {
            return Err(not_leader());
        }
        Ok(r.revision)
    }

    async fn resign_key(&self, key: &[u8], rev: i64) -> Result<i64, Status> {
        let r = txn(&self.node, delete_txn(key, vec![create_is(key, rev)])).await?;
        Ok(r.revision)
    }

    async fn campaign(&self, req: epb::CampaignRequest) -> Result<epb::CampaignResponse, Status> {
        let node = &*self.node;
        let lease = session_lease(node, req.lease).await?;
        let prefix = prefix_of(&req.name);
        let key = [prefix.as_slice(), format!("{lease:x}").as_bytes()].concat();
        let resp = txn(
            node,
            mvcc::TxnRequest {
                compare: vec![create_is(&key, 0)],
                success: vec![mvcc::RequestOp::Put(mvcc::PutRequest {
                    key: key.clone(),
                    value: req.value.clone(),
                    lease,
                    ..Default::default()
                })],
                failure: vec![mvcc::RequestOp::Range(get_key(&key))],
            },
        )
        .await?;
        let mut rev = resp.revision;
        if !resp.succeeded {
            let kv = resp
                .responses
                .first()
                .and_then(range_of)
                .and_then(|r| r.kvs.first().cloned());
            if let Some(kv) = kv {
                rev = kv.create_revision;
                if kv.value != req.value {
                    if let Err(e) = self.proclaim_key(&key, rev, lease, req.value.clone()).await {
                        let _ = self.resign_key(&key, rev).await;
                        return Err(e);
                    }
                }
            }
        }
        // etcd resigns on a cancelled wait and keeps the key on other errors.
        let cleanup = Cleanup::new(
            self.node.clone(),
            delete_txn(&key, vec![create_is(&key, rev)]),
        );
        let waited = wait_deletes(node, &prefix, rev - 1).await;
        cleanup.disarm();
        waited?;
        Ok(epb::CampaignResponse {
            // etcd answers the header of the campaign's txn.
            header: header(node, resp.revision),
            leader: Some(epb::LeaderKey {
                name: req.name,
                key,
                rev,
                lease,
            }),
        })
    }

    async fn proclaim(&self, req: epb::ProclaimRequest) -> Result<epb::ProclaimResponse, Status> {
        let l = req.leader.ok_or_else(missing_leader_key)?;
        let rev = self.proclaim_key(&l.key, l.rev, l.lease, req.value).await?;
        Ok(epb::ProclaimResponse {
            header: header(&self.node, rev),
        })
    }

    async fn resign(&self, req: epb::ResignRequest) -> Result<epb::ResignResponse, Status> {
        let l = req.leader.ok_or_else(missing_leader_key)?;
        let rev = self.resign_key(&l.key, l.rev).await?;
        Ok(epb::ResignResponse {
            header: header(&self.node, rev),
        })
    }

    async fn leader(&self, req: epb::LeaderRequest) -> Result<epb::LeaderResponse, Status> {
        let prefix = prefix_of(&req.name);
        let r = self
            .node
            .range(&by_create(&prefix, false, 0), false)
            .await
            .map_err(|e| status_of(&e))?;
        let kv = r.kvs.into_iter().next().ok_or_else(no_leader)?;
        Ok(epb::LeaderResponse {
            header: header(&self.node, r.revision),
            kv: Some(kv_to_pb(kv)),
        })
    }

    /// Streams leader changes until the client goes away. Like etcd, the
    /// stream ends with OK when observing fails (e.g. a compacted watch).
    /// A require-leader stream (`hasleader: true`) ends with "etcdserver:
    /// no leader" once the member has lost its leader for three election
    /// timeouts: etcd's stream interceptor cancels the stream's context
    /// with that error, and Observe returns the context's error.
    async fn observe(
        &self,
        mut rx: RequestStream,
        tx: ResponseSink,
        require_leader: bool,
    ) -> Result<(), Status> {
        crate::require_leader::unless_leader_lost(&self.node, require_leader, async {
            let req: epb::LeaderRequest = rx.next().await?.unwrap_or_default();
            let prefix = prefix_of(&req.name);
            futures_lite::future::or(
                async {
                    let _ = self.observe_loop(&prefix, &tx).await;
                    Ok(())
                },
                async {
                    tx.closed().await;
                    Ok(())
                },
            )
            .await
        })
        .await
    }

    async fn observe_loop(&self, prefix: &[u8], tx: &ResponseSink) -> Result<(), Status> {
        let node = &*self.node;
        let end = prefix_end(prefix);
        loop {
            let r = node
                .range(&by_create(prefix, false, 0), false)
                .await
                .map_err(|e| status_of(&e))?;
            let (rev, kv) = match r.kvs.into_iter().next() {
                Some(kv) => (r.revision, kv),
                None => {
                    // Wait for the first put under the prefix.
                    let mut w = KeyWatch::new(node, prefix, &end, r.revision)?;
                    'first: loop {
                        let n = w.next().await?;
                        for e in &n.events {
                            if e.kind == mvcc::EventKind::Put {
                                break 'first (e.kv.mod_revision, e.kv.clone());
                            }
                        }
                    }
                }
            };
            tx.send(&epb::LeaderResponse {
                header: header(node, rev),
                kv: Some(kv_to_pb(kv.clone())),
            })
            .await?;
            // Follow that key until it is deleted.
            let mut w = KeyWatch::new(node, &kv.key, &[], rev + 1)?;
            'key: loop {
                let n = w.next().await?;
                for e in &n.events {
                    if e.kind == mvcc::EventKind::Delete {
                        break 'key;
                    }
                    tx.send(&epb::LeaderResponse {
                        header: header(node, n.revision),
                        kv: Some(kv_to_pb(e.kv.clone())),
                    })
                    .await?;
                }
            }
        }
    }
}
