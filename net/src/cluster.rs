//! The etcd Cluster service (`etcdserverpb.Cluster`): MemberList so far.
//! Membership changes (MemberAdd/Remove/Update/Promote) come with the rest
//! of issue #4 and answer UNIMPLEMENTED until then.

use std::rc::Rc;
use std::sync::Arc;

use raftcore::Node;

use crate::grpc::{unary, CallInfo, Router, Status};
use crate::pb::etcdserverpb as pb;

pub fn register(router: &mut Router, node: Arc<Node>) {
    let node = Rc::new(node);
    router.add(
        "/etcdserverpb.Cluster/MemberList",
        unary(move |req: pb::MemberListRequest, _: CallInfo| {
            let n = node.clone();
            async move {
                // etcd serves a linearizable list by default.
                if req.linearizable {
                    n.read_barrier()
                        .await
                        .map_err(|e| crate::errors::status_of(&e))?;
                }
                let rev = n
                    .current_revision()
                    .map_err(|e| crate::errors::status_of(&e))?;
                Ok::<_, Status>(pb::MemberListResponse {
                    header: Some(n.header(rev).into()),
                    members: n
                        .members()
                        .into_iter()
                        .map(|m| pb::Member {
                            id: m.id,
                            name: m.name,
                            peer_ur_ls: m.peer_urls,
                            client_ur_ls: m.client_urls,
                            is_learner: m.is_learner,
                        })
                        .collect(),
                })
            }
        }),
    );
}
