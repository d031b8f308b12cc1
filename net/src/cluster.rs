//! The etcd Cluster service (`etcdserverpb.Cluster`): MemberAdd,
//! MemberRemove, MemberUpdate, MemberList and MemberPromote with etcd v3.5's
//! semantics (api/v3rpc/member.go): URL checks and member IDs here, the
//! changes themselves go through Raft (raftcore's membership), errors are
//! mapped in `errors`.
//!
//! Also the two peer-port methods members use among themselves (our own
//! names, like the rest of the peer protocol): `Members` (a serializable
//! member list with the cluster ID; a member joining with
//! `--initial-cluster-state existing` learns the cluster from it, and a
//! `new` start checks with it whether it was already bootstrapped) and
//! `Promote` (a follower forwards MemberPromote to the leader, which alone
//! knows whether the learner is in sync, as etcd does over peer HTTP).

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use raftcore::{MemberInfo, Node};

use crate::client::{CallOptions, Client, ClientConfig};
use crate::grpc::{unary, CallInfo, Code, Router, Status};
use crate::pb::etcdserverpb as pb;

pub const PEER_MEMBERS_PATH: &str = "/ferrocd.raft.Raft/Members";
pub const PEER_PROMOTE_PATH: &str = "/ferrocd.raft.Raft/Promote";

fn to_pb(members: Vec<MemberInfo>) -> Vec<pb::Member> {
    members
        .into_iter()
        .map(|m| pb::Member {
            id: m.id,
            name: m.name,
            peer_ur_ls: m.peer_urls,
            client_ur_ls: m.client_urls,
            is_learner: m.is_learner,
        })
        .collect()
}

fn status(e: raftcore::Error) -> Status {
    crate::errors::status_of(&e)
}

fn header(n: &Node) -> Result<pb::ResponseHeader, Status> {
    Ok(n.header(n.current_revision().map_err(status)?).into())
}

/// etcd's `types.NewURLs`: every URL `http(s)://host:port` without a path,
/// or `unix(s)://...`; sorted. `None` for an invalid list (etcd answers
/// "given member URLs are invalid").
pub fn parse_peer_urls(urls: &[String]) -> Option<Vec<String>> {
    if urls.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(urls.len());
    for u in urls {
        let u = u.trim();
        let (scheme, rest) = u.split_once("://")?;
        match scheme {
            "http" | "https" => {
                // host:port, nothing after it but an optional query.
                let host = rest.split(['?', '#']).next()?;
                if host.contains('/') {
                    return None;
                }
                let (h, port) = host.rsplit_once(':')?;
                if h.starts_with('[') != h.ends_with(']') || port.contains(']') {
                    return None;
                }
            }
            "unix" | "unixs" => {}
            _ => return None,
        }
        out.push(u.to_string());
    }
    out.sort();
    Some(out)
}

/// etcd's `computeMemberId` for MemberAdd: SHA-1 over the sorted peer URLs
/// concatenated, an empty cluster name, and the Unix time in seconds; the
/// first 8 bytes big-endian.
pub fn new_member_id(sorted_urls: &[String], unix_secs: u64) -> u64 {
    let mut data = sorted_urls.concat().into_bytes();
    data.extend_from_slice(unix_secs.to_string().as_bytes());
    let digest = sha1_smol::Sha1::from(&data).digest().bytes();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

pub fn register(router: &mut Router, node: Arc<Node>) {
    let node = Rc::new(node);
    let n0 = node.clone();
    router.add(
        "/etcdserverpb.Cluster/MemberList",
        unary(move |req: pb::MemberListRequest, _: CallInfo| {
            let n = n0.clone();
            async move {
                if req.linearizable {
                    n.read_barrier().await.map_err(status)?;
                }
                Ok::<_, Status>(pb::MemberListResponse {
                    header: Some(header(&n)?),
                    members: to_pb(n.members()),
                })
            }
        }),
    );
    let n0 = node.clone();
    router.add(
        "/etcdserverpb.Cluster/MemberAdd",
        unary(move |req: pb::MemberAddRequest, _: CallInfo| {
            let n = n0.clone();
            async move {
                let urls = parse_peer_urls(&req.peer_ur_ls).ok_or_else(|| {
                    Status::new(
                        Code::INVALID_ARGUMENT,
                        "etcdserver: given member URLs are invalid",
                    )
                })?;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let id = new_member_id(&urls, now);
                let members = n
                    .add_member(id, urls.clone(), req.is_learner)
                    .await
                    .map_err(status)?;
                Ok::<_, Status>(pb::MemberAddResponse {
                    header: Some(header(&n)?),
                    member: Some(pb::Member {
                        id,
                        name: String::new(),
                        peer_ur_ls: urls,
                        client_ur_ls: Vec::new(),
                        is_learner: req.is_learner,
                    }),
                    members: to_pb(members),
                })
            }
        }),
    );
    let n0 = node.clone();
    router.add(
        "/etcdserverpb.Cluster/MemberRemove",
        unary(move |req: pb::MemberRemoveRequest, _: CallInfo| {
            let n = n0.clone();
            async move {
                let members = n.remove_member(req.id).await.map_err(status)?;
                Ok::<_, Status>(pb::MemberRemoveResponse {
                    header: Some(header(&n)?),
                    members: to_pb(members),
                })
            }
        }),
    );
    let n0 = node.clone();
    router.add(
        "/etcdserverpb.Cluster/MemberUpdate",
        unary(move |req: pb::MemberUpdateRequest, _: CallInfo| {
            let n = n0.clone();
            async move {
                // etcd does not check the URLs of an update.
                let members = n
                    .update_member(req.id, req.peer_ur_ls)
                    .await
                    .map_err(status)?;
                Ok::<_, Status>(pb::MemberUpdateResponse {
                    header: Some(header(&n)?),
                    members: to_pb(members),
                })
            }
        }),
    );
    let n0 = node.clone();
    router.add(
        "/etcdserverpb.Cluster/MemberPromote",
        unary(move |req: pb::MemberPromoteRequest, _: CallInfo| {
            let n = n0.clone();
            async move {
                let members = match n.promote_member(req.id).await {
                    Ok(m) => to_pb(m),
                    Err(raftcore::Error::NotLeader) => forward_promote(&n, req.id).await?,
                    Err(e) => return Err(status(e)),
                };
                Ok::<_, Status>(pb::MemberPromoteResponse {
                    header: Some(header(&n)?),
                    members,
                })
            }
        }),
    );
}

/// Sends a MemberPromote to the leader's peer port and passes its answer
/// (members, or etcd's error) back.
async fn forward_promote(n: &Node, id: u64) -> Result<Vec<pb::Member>, Status> {
    let t = n.config().request_timeout;
    let deadline = std::time::Instant::now() + t;
    loop {
        let leader = n.leader();
        let url = n.peer_directory().url(leader);
        if let (true, Some(url)) = (leader != 0 && leader != n.config().member_id, url) {
            let cfg = ClientConfig {
                connect_timeout: Duration::from_secs(1),
                ..ClientConfig::default()
            };
            if let Ok(c) = Client::connect_with(&url, cfg).await {
                let opts = CallOptions {
                    timeout: Some(t),
                    ..CallOptions::default()
                };
                let r: Result<pb::MemberPromoteResponse, Status> = c
                    .unary_with(PEER_PROMOTE_PATH, &pb::MemberPromoteRequest { id }, &opts)
                    .await;
                return r.map(|r| r.members);
            }
        }
        if std::time::Instant::now() >= deadline {
            return Err(status(raftcore::Error::Timeout));
        }
        glommio::timer::sleep(Duration::from_millis(100)).await;
    }
}

/// The peer-port methods (see the module docs).
pub fn register_peer(router: &mut Router, node: Arc<Node>) {
    let node = Rc::new(node);
    let n0 = node.clone();
    router.add(
        PEER_MEMBERS_PATH,
        unary(move |_: pb::MemberListRequest, _: CallInfo| {
            let n = n0.clone();
            async move {
                Ok::<_, Status>(pb::MemberListResponse {
                    header: Some(header(&n)?),
                    members: to_pb(n.members()),
                })
            }
        }),
    );
    let n0 = node.clone();
    router.add(
        PEER_PROMOTE_PATH,
        unary(move |req: pb::MemberPromoteRequest, _: CallInfo| {
            let n = n0.clone();
            async move {
                let members = n.promote_member(req.id).await.map_err(status)?;
                Ok::<_, Status>(pb::MemberPromoteResponse {
                    header: Some(header(&n)?),
                    members: to_pb(members),
                })
            }
        }),
    );
}

/// The cluster as a running member sees it: `(cluster ID, members)`.
#[derive(Clone, Debug)]
pub struct RemoteCluster {
    pub cluster_id: u64,
    pub members: Vec<MemberInfo>,
}

/// Asks the members at `peer_urls` (in order) for the member list, like
/// etcd's `getClusterFromRemotePeers`; the first answer wins. Runs its own
/// short-lived executor, so it can be called before the server starts.
pub fn fetch_remote_cluster(
    peer_urls: &[String],
    timeout: Duration,
) -> Result<RemoteCluster, String> {
    let urls = peer_urls.to_vec();
    let r = glommio::LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .name("ferrocd-discover")
        .spawn(move || async move {
            let mut last = String::from("no peer URLs");
            for u in &urls {
                let cfg = ClientConfig {
                    connect_timeout: timeout,
                    ..ClientConfig::default()
                };
                let c = match Client::connect_with(u, cfg).await {
                    Ok(c) => c,
                    Err(e) => {
                        last = e.to_string();
                        continue;
                    }
                };
                let opts = CallOptions {
                    timeout: Some(timeout),
                    ..CallOptions::default()
                };
                let r: Result<pb::MemberListResponse, Status> = c
                    .unary_with(PEER_MEMBERS_PATH, &pb::MemberListRequest::default(), &opts)
                    .await;
                match r {
                    Ok(resp) => {
                        return Ok(RemoteCluster {
                            cluster_id: resp.header.map(|h| h.cluster_id).unwrap_or(0),
                            members: resp
                                .members
                                .into_iter()
                                .map(|m| MemberInfo {
                                    id: m.id,
                                    name: m.name,
                                    peer_urls: m.peer_ur_ls,
                                    client_urls: m.client_ur_ls,
                                    is_learner: m.is_learner,
                                })
                                .collect(),
                        })
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            Err(last)
        })
        .map_err(|e| format!("cannot start executor: {e}"))?
        .join()
        .map_err(|e| format!("executor failed: {e}"))?;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_urls_are_checked_and_sorted_like_etcd() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_peer_urls(&s(&["http://b:2", " http://a:1"])),
            Some(s(&["http://a:1", "http://b:2"]))
        );
        assert_eq!(parse_peer_urls(&s(&[])), None);
        assert_eq!(parse_peer_urls(&s(&["http://a"])), None);
        assert_eq!(parse_peer_urls(&s(&["http://a:1/path"])), None);
        assert_eq!(parse_peer_urls(&s(&["ftp://a:1"])), None);
        assert_eq!(parse_peer_urls(&s(&["a:1"])), None);
        assert!(parse_peer_urls(&s(&["https://[::1]:2380"])).is_some());
        assert!(parse_peer_urls(&s(&["unix://sock"])).is_some());
    }

    #[test]
    fn member_ids_follow_etcd_compute_member_id() {
        // Same inputs as tools' member_id_at (checked there against etcd's
        // IDs): urls concatenated, empty cluster name, time.
        let a = new_member_id(&["http://127.0.0.1:2380".to_string()], 1_700_000_000);
        let b = new_member_id(&["http://127.0.0.1:2380".to_string()], 1_700_000_001);
        assert_ne!(a, b);
        let digest = sha1_smol::Sha1::from("http://127.0.0.1:23801700000000")
            .digest()
            .bytes();
        assert_eq!(a.to_be_bytes(), digest[..8]);
    }
}
