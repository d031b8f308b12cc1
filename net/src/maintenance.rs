//! The etcd Maintenance service (`etcdserverpb.Maintenance`): the parts that
//! exist so far. Status reports this member's Raft position and backend
//! size; Defragment rewrites this member's B-tree file online (clients are
//! not blocked, unlike etcd); Alarm lists, raises and disarms alarms
//! (raftcore's `alarm` module: the NOSPACE alarm of the backend quota).

use std::rc::Rc;
use std::sync::Arc;

use raftcore::{AlarmRequestAction, Node};

use crate::grpc::{unary, CallInfo, Router, Status};
use crate::pb::etcdserverpb as pb;

/// The etcd API version we implement, reported where etcd reports its own.
pub const ETCD_VERSION: &str = "3.5.1";

pub fn register(router: &mut Router, node: Arc<Node>) {
    let node = Rc::new(node);
    let n = node.clone();
    router.add(
        "/etcdserverpb.Maintenance/Status",
        unary(move |_: pb::StatusRequest, _: CallInfo| {
            let n = n.clone();
            async move { status(&n) }
        }),
    );
    let n = node.clone();
    router.add(
        "/etcdserverpb.Maintenance/MoveLeader",
        unary(move |req: pb::MoveLeaderRequest, _: CallInfo| {
            let n = n.clone();
            async move {
                n.move_leader(req.target_id)
                    .await
                    .map_err(|e| crate::errors::status_of(&e))?;
                Ok::<_, Status>(pb::MoveLeaderResponse {
                    header: header(&n)?,
                })
            }
        }),
    );
    let n = node.clone();
    router.add(
        "/etcdserverpb.Maintenance/HashKV",
        unary(move |req: pb::HashKvRequest, _: CallInfo| {
            let n = n.clone();
            async move {
                let (hash, compact_revision, rev) = n
                    .hash_kv(req.revision)
                    .await
                    .map_err(|e| crate::errors::status_of(&e))?;
                let mut h = header(&n)?;
                if let Some(h) = h.as_mut() {
                    h.revision = rev.max(h.revision);
                }
                Ok::<_, Status>(pb::HashKvResponse {
                    header: h,
                    hash,
                    compact_revision,
                })
            }
        }),
    );
    let n = node.clone();
    router.add(
        "/etcdserverpb.Maintenance/Defragment",
        unary(move |_: pb::DefragmentRequest, _: CallInfo| {
            let n = n.clone();
            async move {
                n.defragment()
                    .await
                    .map_err(|e| crate::errors::status_of(&e))?;
                Ok::<_, Status>(pb::DefragmentResponse {
                    header: header(&n)?,
                })
            }
        }),
    );
    let n = node;
    router.add(
        "/etcdserverpb.Maintenance/Alarm",
        unary(move |req: pb::AlarmRequest, _: CallInfo| {
            let n = n.clone();
            async move {
                let action = match req.action {
                    0 => AlarmRequestAction::Get,
                    1 => AlarmRequestAction::Activate,
                    2 => AlarmRequestAction::Deactivate,
                    // etcd answers an unknown action with an empty response.
                    _ => return Ok(pb::AlarmResponse::default()),
                };
                let alarm = u8::try_from(req.alarm).unwrap_or(u8::MAX);
                let alarms = n
                    .alarm(action, req.member_id, alarm)
                    .await
                    .map_err(|e| crate::errors::status_of(&e))?;
                Ok::<_, Status>(pb::AlarmResponse {
                    header: header(&n)?,
                    alarms: alarms
                        .into_iter()
                        .map(|m| pb::AlarmMember {
                            member_id: m.member_id,
                            alarm: i32::from(m.alarm.code()),
                        })
                        .collect(),
                })
            }
        }),
    );
}

fn header(n: &Node) -> Result<Option<pb::ResponseHeader>, Status> {
    let rev = n
        .current_revision()
        .map_err(|e| crate::errors::status_of(&e))?;
    Ok(Some(n.header(rev).into()))
}

fn status(n: &Node) -> Result<pb::StatusResponse, Status> {
    let rs = n.raft_status();
    let (db_size, in_use) = n.backend_size().unwrap_or((0, 0));
    Ok(pb::StatusResponse {
        header: header(n)?,
        version: ETCD_VERSION.to_string(),
        db_size: i64::try_from(db_size).unwrap_or(i64::MAX),
        leader: rs.leader,
        raft_index: rs.raft_index,
        raft_term: rs.term,
        raft_applied_index: rs.applied_index,
        // etcd: "etcdserver: no leader" for a member without a leader, then
        // one entry per raised alarm (the AlarmMember's text form).
        errors: (rs.leader == 0)
            .then(|| raftcore::Error::NoLeader.to_string())
            .into_iter()
            .chain(
                n.alarm_list(None)
                    .into_iter()
                    .map(|m| format!("memberID:{} alarm:{} ", m.member_id, m.alarm.name())),
            )
            .collect(),
        db_size_in_use: i64::try_from(in_use).unwrap_or(i64::MAX),
        is_learner: rs.is_learner,
    })
}
