//! The etcd Lease service (`etcdserverpb.Lease`), as etcd v3.5 serves it
//! (server/etcdserver/api/v3rpc/lease.go, v3_server.go), on `raftcore`'s
//! lease methods.
//!
//! * LeaseGrant / LeaseRevoke go through Raft (any member; a follower's
//!   proposal reaches the leader through Raft).
//! * LeaseKeepAlive (bidirectional stream) and LeaseTimeToLive are answered
//!   by the leader without a Raft entry. On a follower `raftcore` answers
//!   `NotLeader` and this layer forwards the call to the leader over the
//!   peer port (`/ferrocd.lease.Lease/Renew`, `/TimeToLive`, registered by
//!   [`register_peer`]), retrying until the request timeout like etcd's
//!   forwarding over its peer HTTP API (`leasehttp`). The leader's peer
//!   handlers never forward again, so a call cannot loop.
//! * LeaseLeases is answered from this member's lessor.
//!
//! etcd behaviours kept on purpose: a keep-alive of an unknown (or revoked,
//! or expired) lease answers TTL 0 instead of failing the stream; its
//! header is taken before the renewal; TimeToLive of an unknown lease
//! answers TTL -1 with the ID and no error; the stream ends with OK when the
//! client half-closes. Where ferrocd differs: TimeToLive lists the attached
//! keys sorted (etcd: map order) and LeaseLeases orders leases with the same
//! deadline by ID (etcd: arbitrary).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::timer::sleep;
use raftcore::{Error, Node};

use crate::client::{CallOptions, Client, ClientConfig};
use crate::errors::status_of;
use crate::grpc::server::{RequestStream, ResponseSink};
use crate::grpc::{streaming, unary, CallInfo, Code, Router, Status};
use crate::pb::etcdserverpb as pb;

/// Peer-port methods a follower calls on the leader (ferrocd only: the
/// members of a cluster are all ferrocd). Requests and responses are etcd's
/// own messages.
pub const PEER_RENEW: &str = "/ferrocd.lease.Lease/Renew";
pub const PEER_TIME_TO_LIVE: &str = "/ferrocd.lease.Lease/TimeToLive";

/// Pause between two forwarding attempts (etcd: 50 ms).
const FORWARD_RETRY: Duration = Duration::from_millis(50);

struct LeaseService {
    node: Arc<Node>,
    /// Connections to the leaders' peer ports, by member ID (this
    /// executor's).
    peers: RefCell<HashMap<u64, Client>>,
}

/// Registers the Lease methods on the client port's `router`.
pub fn register(router: &mut Router, node: Arc<Node>) {
    let svc = Rc::new(LeaseService {
        node,
        peers: RefCell::new(HashMap::new()),
    });
    let s = svc.clone();
    router.add(
        "/etcdserverpb.Lease/LeaseGrant",
        unary(move |req: pb::LeaseGrantRequest, _: CallInfo| {
            let s = s.clone();
            async move { s.grant(req).await }
        }),
    );
    let s = svc.clone();
    router.add(
        "/etcdserverpb.Lease/LeaseRevoke",
        unary(move |req: pb::LeaseRevokeRequest, _: CallInfo| {
            let s = s.clone();
            async move { s.revoke(req).await }
        }),
    );
    let s = svc.clone();
    router.add(
        "/etcdserverpb.Lease/LeaseKeepAlive",
        streaming(move |rx: RequestStream, tx: ResponseSink, info: CallInfo| {
            let s = s.clone();
            async move { s.keep_alive(rx, tx, info.require_leader).await }
        }),
    );
    let s = svc.clone();
    router.add(
        "/etcdserverpb.Lease/LeaseTimeToLive",
        unary(move |req: pb::LeaseTimeToLiveRequest, _: CallInfo| {
            let s = s.clone();
            async move { s.time_to_live(req).await }
        }),
    );
    let s = svc;
    router.add(
        "/etcdserverpb.Lease/LeaseLeases",
        unary(move |_: pb::LeaseLeasesRequest, _: CallInfo| {
            let s = s.clone();
            async move { s.leases() }
        }),
    );
}

/// Registers the leader side of forwarded renewals and TimeToLive calls on
/// the peer port's `router`. They are served locally or refused with "not
/// leader" (never forwarded again).
pub fn register_peer(router: &mut Router, node: Arc<Node>) {
    let node = Rc::new(node);
    let n = node.clone();
    router.add(
        PEER_RENEW,
        unary(move |req: pb::LeaseKeepAliveRequest, _: CallInfo| {
            let n = n.clone();
            async move {
                let ttl = match n.lease_renew(req.id).await {
                    Ok(ttl) => ttl,
                    Err(e) => return Err(status_of(&e)),
                };
                Ok::<_, Status>(pb::LeaseKeepAliveResponse {
                    header: None,
                    id: req.id,
                    ttl,
                })
            }
        }),
    );
    let n = node;
    router.add(
        PEER_TIME_TO_LIVE,
        unary(move |req: pb::LeaseTimeToLiveRequest, _: CallInfo| {
            let n = n.clone();
            async move {
                match n.lease_time_to_live(req.id).await {
                    Ok(info) => Ok(ttl_response(&req, info)),
                    Err(e) => Err(status_of(&e)),
                }
            }
        }),
    );
}

/// etcd's LeaseTimeToLiveResponse without its header: TTL -1 (and granted
/// TTL 0) for an unknown lease.
fn ttl_response(
    req: &pb::LeaseTimeToLiveRequest,
    info: Option<engine::lease::LeaseInfo>,
) -> pb::LeaseTimeToLiveResponse {
    match info {
        None => pb::LeaseTimeToLiveResponse {
            header: None,
            id: req.id,
            ttl: -1,
            granted_ttl: 0,
            keys: Vec::new(),
        },
        Some(i) => pb::LeaseTimeToLiveResponse {
            header: None,
            id: req.id,
            ttl: i.remaining,
            granted_ttl: i.granted_ttl,
            keys: if req.keys { i.keys } else { Vec::new() },
        },
    }
}

/// The outcome of a call that only the leader can answer.
enum Forwarded<T> {
    Done(T),
    NotFound,
}

impl LeaseService {
    fn header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        Some(self.node.header(revision).into())
    }

    /// The header etcd's `hdr.fill` makes: this member's current revision.
    fn current_header(&self) -> Result<Option<pb::ResponseHeader>, Status> {
        let rev = self.node.current_revision().map_err(|e| status_of(&e))?;
        Ok(self.header(rev))
    }

    async fn grant(&self, req: pb::LeaseGrantRequest) -> Result<pb::LeaseGrantResponse, Status> {
        // etcd's quotaLeaseServer.
        self.node
            .check_quota_lease_grant()
            .await
            .map_err(|e| status_of(&e))?;
        let g = self
            .node
            .lease_grant(req.id, req.ttl)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(pb::LeaseGrantResponse {
            header: self.header(g.revision),
            id: g.id,
            ttl: g.ttl,
            error: String::new(),
        })
    }

    async fn revoke(&self, req: pb::LeaseRevokeRequest) -> Result<pb::LeaseRevokeResponse, Status> {
        let rev = self
            .node
            .lease_revoke(req.id)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(pb::LeaseRevokeResponse {
            header: self.header(rev),
        })
    }

    fn leases(&self) -> Result<pb::LeaseLeasesResponse, Status> {
        let ids = self.node.lease_leases().map_err(|e| status_of(&e))?;
        Ok(pb::LeaseLeasesResponse {
            header: self.current_header()?,
            leases: ids.into_iter().map(|id| pb::LeaseStatus { id }).collect(),
        })
    }

    async fn time_to_live(
        &self,
        req: pb::LeaseTimeToLiveRequest,
    ) -> Result<pb::LeaseTimeToLiveResponse, Status> {
        let mut resp = match self.node.lease_time_to_live(req.id).await {
            Ok(info) => ttl_response(&req, info),
            Err(Error::NotLeader) => {
                match self
                    .forward::<_, pb::LeaseTimeToLiveResponse>(PEER_TIME_TO_LIVE, &req)
                    .await?
                {
                    Forwarded::Done(r) => r,
                    Forwarded::NotFound => ttl_response(&req, None),
                }
            }
            Err(e) => return Err(status_of(&e)),
        };
        resp.header = self.current_header()?;
        Ok(resp)
    }

    /// One renewal: the TTL, 0 if the lease does not exist (etcd answers
    /// that rather than failing the stream).
    async fn renew(&self, id: i64) -> Result<i64, Status> {
        match self.node.lease_renew(id).await {
            Ok(ttl) => Ok(ttl),
            Err(Error::LeaseNotFound) => Ok(0),
            Err(Error::NotLeader) => {
                let req = pb::LeaseKeepAliveRequest { id };
                match self
                    .forward::<_, pb::LeaseKeepAliveResponse>(PEER_RENEW, &req)
                    .await?
                {
                    Forwarded::Done(r) => Ok(r.ttl),
                    Forwarded::NotFound => Ok(0),
                }
            }
            Err(e) => Err(status_of(&e)),
        }
    }

    async fn keep_alive(
        &self,
        mut rx: RequestStream,
        tx: ResponseSink,
        require_leader: bool,
    ) -> Result<(), Status> {
        // A require-leader stream ends with "no leader" once the member
        // has lost its leader for three election timeouts (etcd's
        // monitorLeader), even while the client is idle or a renewal is
        // under way.
        let node = self.node.clone();
        crate::require_leader::unless_leader_lost(&node, require_leader, async {
            self.keep_alive_loop(&mut rx, &tx).await
        })
        .await
    }

    async fn keep_alive_loop(
        &self,
        rx: &mut RequestStream,
        tx: &ResponseSink,
    ) -> Result<(), Status> {
        // A client half-close ends the call with OK (etcd: io.EOF → nil);
        // a reset ends it with the stream error (nobody is listening).
        loop {
            let req = rx.next::<pb::LeaseKeepAliveRequest>().await?;
            let Some(req) = req else {
                break;
            };
            // The header is taken before the renewal, so its revision is
            // never ahead of a revoke the client could observe (etcd).
            let header = self.current_header()?;
            let ttl = self.renew(req.id).await?;
            tx.send(&pb::LeaseKeepAliveResponse {
                header,
                id: req.id,
                ttl,
            })
            .await?;
        }
        Ok(())
    }

    /// Sends `req` to the leader's peer port until it answers, says the
    /// lease is not found, or the request timeout passes (etcd's
    /// `LeaseRenew` / `LeaseTimeToLive` forwarding loop). If this member
    /// becomes the leader meanwhile, the call goes to its own peer port,
    /// whose handler answers from the local lessor.
    async fn forward<Req, Resp>(&self, path: &str, req: &Req) -> Result<Forwarded<Resp>, Status>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let timeout = self.node.config().request_timeout;
        let deadline = Instant::now() + timeout;
        loop {
            let leader = self.node.leader();
            if let Some(client) = self.peer_client(leader).await {
                let opts = CallOptions {
                    timeout: Some(deadline.saturating_duration_since(Instant::now())),
                    ..CallOptions::default()
                };
                match client.unary_with::<Req, Resp>(path, req, &opts).await {
                    Ok(r) => return Ok(Forwarded::Done(r)),
                    Err(st) if st.code == Code::NOT_FOUND => return Ok(Forwarded::NotFound),
                    Err(_) => {
                        if client.closed_reason().is_some() {
                            self.peers.borrow_mut().remove(&leader);
                        }
                    }
                }
            }
            if Instant::now() + FORWARD_RETRY >= deadline {
                return Err(status_of(&if leader == 0 {
                    Error::NoLeader
                } else {
                    Error::Timeout
                }));
            }
            sleep(FORWARD_RETRY).await;
        }
    }

    /// A connection to `member`'s peer port (its first peer URL).
    async fn peer_client(&self, member: u64) -> Option<Client> {
        if member == 0 {
            return None;
        }
        if let Some(c) = self.peers.borrow().get(&member) {
            if c.closed_reason().is_none() {
                return Some(c.clone());
            }
        }
        let url = self
            .node
            .members()
            .into_iter()
            .find(|m| m.id == member)?
            .peer_urls
            .into_iter()
            .next()?;
        let cfg = ClientConfig {
            connect_timeout: Duration::from_secs(1),
            ..ClientConfig::default()
        };
        let c = Client::connect_with(&url, cfg).await.ok()?;
        self.peers.borrow_mut().insert(member, c.clone());
        Some(c)
    }
}
