//! The etcd KV service (`etcdserverpb.KV`): request validation exactly as
//! etcd's v3rpc layer does it (server/etcdserver/api/v3rpc/key.go), then the
//! call into `raftcore`, then the response with its header.

use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;

use engine::mvcc;
use raftcore::Node;

use crate::errors::{self, status_of};
use crate::grpc::{unary, CallInfo, Router, Status};
use crate::pb::etcdserverpb as pb;
use crate::pb::mvccpb;

/// Limits the KV service enforces (etcd flags).
#[derive(Clone, Debug)]
pub struct KvLimits {
    /// `--max-txn-ops` (128): ops in one txn branch or compares.
    pub max_txn_ops: usize,
    /// `--max-request-bytes` (1.5 MiB): largest proposal.
    pub max_request_bytes: usize,
}

impl Default for KvLimits {
    fn default() -> Self {
        KvLimits {
            max_txn_ops: 128,
            max_request_bytes: 1536 * 1024,
        }
    }
}

pub struct KvService {
    node: Arc<Node>,
    limits: KvLimits,
}

/// Registers the KV methods on `router`.
pub fn register(router: &mut Router, node: Arc<Node>, limits: KvLimits) {
    let svc = Rc::new(KvService { node, limits });
    let s = svc.clone();
    router.add(
        "/etcdserverpb.KV/Range",
        unary(move |req: pb::RangeRequest, _: CallInfo| {
            let s = s.clone();
            async move { s.range(req).await }
        }),
    );
    let s = svc.clone();
    router.add(
        "/etcdserverpb.KV/Put",
        unary(move |req: pb::PutRequest, info: CallInfo| {
            let s = s.clone();
            async move { s.put(req, info).await }
        }),
    );
    let s = svc.clone();
    router.add(
        "/etcdserverpb.KV/DeleteRange",
        unary(move |req: pb::DeleteRangeRequest, info: CallInfo| {
            let s = s.clone();
            async move { s.delete_range(req, info).await }
        }),
    );
    let s = svc.clone();
    router.add(
        "/etcdserverpb.KV/Txn",
        unary(move |req: pb::TxnRequest, info: CallInfo| {
            let s = s.clone();
            async move { s.txn(req, info).await }
        }),
    );
    let s = svc;
    router.add(
        "/etcdserverpb.KV/Compact",
        unary(move |req: pb::CompactionRequest, info: CallInfo| {
            let s = s.clone();
            async move { s.compact(req, info).await }
        }),
    );
}

impl KvService {
    fn header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        Some(self.node.header(revision).into())
    }

    /// etcd refuses proposals larger than --max-request-bytes; the proposal
    /// is the request plus a small internal header, which `request_len`
    /// approximates from above by 16 bytes.
    fn check_size(&self, info: &CallInfo) -> Result<(), Status> {
        if info.request_len + 16 > self.limits.max_request_bytes {
            return Err(errors::request_too_large());
        }
        Ok(())
    }

    async fn range(&self, req: pb::RangeRequest) -> Result<pb::RangeResponse, Status> {
        check_range(&req)?;
        let serializable = req.serializable;
        if !serializable && self.node.is_learner() {
            return Err(crate::errors::not_supported_for_learner());
        }
        let r = self
            .node
            .range(&range_from_pb(req), serializable)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(range_to_pb(r, self))
    }

    async fn put(&self, req: pb::PutRequest, info: CallInfo) -> Result<pb::PutResponse, Status> {
        check_put(&req)?;
        self.check_size(&info)?;
        let req = put_from_pb(req);
        // etcd's quotaKVServer (there before the request checks; an invalid
        // request over quota gets the NOSPACE error from etcd, its own here).
        self.node
            .check_quota_put(&req)
            .await
            .map_err(|e| status_of(&e))?;
        let r = self.node.put(req).await.map_err(|e| status_of(&e))?;
        Ok(put_to_pb(r, self))
    }

    async fn delete_range(
        &self,
        req: pb::DeleteRangeRequest,
        info: CallInfo,
    ) -> Result<pb::DeleteRangeResponse, Status> {
        check_delete(&req)?;
        self.check_size(&info)?;
        let r = self
            .node
            .delete_range(delete_from_pb(req))
            .await
            .map_err(|e| status_of(&e))?;
        Ok(delete_to_pb(r, self))
    }

    async fn txn(&self, req: pb::TxnRequest, info: CallInfo) -> Result<pb::TxnResponse, Status> {
        check_txn(&req, self.limits.max_txn_ops)?;
        check_intervals(&req.success)?;
        check_intervals(&req.failure)?;
        self.check_size(&info)?;
        let serializable = is_txn_serializable(&req);
        let txn = txn_from_pb(req);
        // etcd's quotaKVServer (see `put`).
        self.node
            .check_quota_txn(&txn)
            .await
            .map_err(|e| status_of(&e))?;
        let r = self
            .node
            .txn(txn, serializable)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(txn_to_pb(r, self))
    }

    async fn compact(
        &self,
        req: pb::CompactionRequest,
        info: CallInfo,
    ) -> Result<pb::CompactionResponse, Status> {
        self.check_size(&info)?;
        let r = self
            .node
            .compact(req.revision, req.physical)
            .await
            .map_err(|e| status_of(&e))?;
        Ok(pb::CompactionResponse {
            header: self.header(r.revision),
        })
    }
}

// ---- validation (etcd v3rpc/key.go) ----

/// etcd serves a read-only txn without a read barrier only when every op of
/// both branches is a serializable range (top level only, as etcd checks).
fn is_txn_serializable(r: &pb::TxnRequest) -> bool {
    use pb::request_op::Request;
    r.success
        .iter()
        .chain(r.failure.iter())
        .all(|op| matches!(&op.request, Some(Request::RequestRange(rr)) if rr.serializable))
}

fn check_range(r: &pb::RangeRequest) -> Result<(), Status> {
    if r.key.is_empty() {
        return Err(errors::empty_key());
    }
    Ok(())
}

fn check_put(r: &pb::PutRequest) -> Result<(), Status> {
    if r.key.is_empty() {
        return Err(errors::empty_key());
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(errors::value_provided());
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(errors::lease_provided());
    }
    Ok(())
}

fn check_delete(r: &pb::DeleteRangeRequest) -> Result<(), Status> {
    if r.key.is_empty() {
        return Err(errors::empty_key());
    }
    Ok(())
}

fn check_txn(r: &pb::TxnRequest, max_ops: usize) -> Result<(), Status> {
    let opc = r.compare.len().max(r.success.len()).max(r.failure.len());
    if opc > max_ops {
        return Err(errors::too_many_ops());
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(errors::empty_key());
    }
    // etcd passes the remaining budget down to nested txns.
    let rest = max_ops - opc;
    for op in r.success.iter().chain(r.failure.iter()) {
        check_op(op, rest)?;
    }
    Ok(())
}

fn check_op(op: &pb::RequestOp, max_ops: usize) -> Result<(), Status> {
    use pb::request_op::Request;
    match &op.request {
        Some(Request::RequestRange(r)) => check_range(r),
        Some(Request::RequestPut(r)) => check_put(r),
        Some(Request::RequestDeleteRange(r)) => check_delete(r),
        Some(Request::RequestTxn(r)) => check_txn(r, max_ops),
        // An empty op: etcd answers "key not found".
        None => Err(errors::key_not_found()),
    }
}

/// A delete's key interval: `[key, end)`, or the single point `key` when
/// `end` is empty. An empty `end` of an interval means "no upper bound" in
/// etcd's interval tree; `"\0"` is an ordinary (tiny) bound there.
#[derive(Clone)]
struct Interval {
    key: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Interval {
    fn contains(&self, k: &[u8]) -> bool {
        match &self.end {
            None => self.key == k,
            Some(end) => self.key.as_slice() <= k && (end.is_empty() || k < end.as_slice()),
        }
    }
}

/// etcd's duplicate-key rule: within one branch (and its nested txns) no key
/// may be put twice or both put and deleted; the two branches of a nested
/// txn may put the same key since only one of them runs.
fn check_intervals(ops: &[pb::RequestOp]) -> Result<(HashSet<Vec<u8>>, Vec<Interval>), Status> {
    use pb::request_op::Request;
    let mut dels: Vec<Interval> = Vec::new();
    for op in ops {
        if let Some(Request::RequestDeleteRange(d)) = &op.request {
            dels.push(Interval {
                key: d.key.clone(),
                end: (!d.range_end.is_empty()).then(|| d.range_end.clone()),
            });
        }
    }
    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    for op in ops {
        if let Some(Request::RequestTxn(t)) = &op.request {
            let (puts_then, dels_then) = check_intervals(&t.success)?;
            let (puts_else, dels_else) = check_intervals(&t.failure)?;
            for k in &puts_then {
                if puts.contains(k) || dels.iter().any(|d| d.contains(k)) {
                    return Err(errors::duplicate_key());
                }
                puts.insert(k.clone());
            }
            for k in &puts_else {
                if puts.contains(k) && !puts_then.contains(k) {
                    return Err(errors::duplicate_key());
                }
                if dels.iter().any(|d| d.contains(k)) {
                    return Err(errors::duplicate_key());
                }
                puts.insert(k.clone());
            }
            dels.extend(dels_then);
            dels.extend(dels_else);
        }
    }
    for op in ops {
        if let Some(Request::RequestPut(p)) = &op.request {
            if puts.contains(&p.key) || dels.iter().any(|d| d.contains(&p.key)) {
                return Err(errors::duplicate_key());
            }
            puts.insert(p.key.clone());
        }
    }
    Ok((puts, dels))
}

// ---- conversions pb <-> engine ----

fn range_from_pb(r: pb::RangeRequest) -> mvcc::RangeRequest {
    mvcc::RangeRequest {
        key: r.key,
        range_end: r.range_end,
        limit: r.limit,
        revision: r.revision,
        sort_order: match r.sort_order {
            1 => mvcc::SortOrder::Ascend,
            2 => mvcc::SortOrder::Descend,
            _ => mvcc::SortOrder::None,
        },
        sort_target: match r.sort_target {
            1 => mvcc::SortTarget::Version,
            2 => mvcc::SortTarget::Create,
            3 => mvcc::SortTarget::Mod,
            4 => mvcc::SortTarget::Value,
            _ => mvcc::SortTarget::Key,
        },
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    }
}

fn put_from_pb(r: pb::PutRequest) -> mvcc::PutRequest {
    mvcc::PutRequest {
        key: r.key,
        value: r.value,
        lease: r.lease,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    }
}

fn delete_from_pb(r: pb::DeleteRangeRequest) -> mvcc::DeleteRangeRequest {
    mvcc::DeleteRangeRequest {
        key: r.key,
        range_end: r.range_end,
        prev_kv: r.prev_kv,
    }
}

fn compare_from_pb(c: pb::Compare) -> mvcc::Compare {
    use pb::compare::TargetUnion as U;
    let result = match c.result {
        1 => mvcc::CompareResult::Greater,
        2 => mvcc::CompareResult::Less,
        3 => mvcc::CompareResult::NotEqual,
        _ => mvcc::CompareResult::Equal,
    };
    // etcd reads the union member that matches `target` and treats a missing
    // or mismatched member as zero.
    let int = |want: fn(&U) -> Option<i64>| c.target_union.as_ref().and_then(want).unwrap_or(0);
    let target = match c.target {
        1 => mvcc::CompareTarget::Create(int(|u| match u {
            U::CreateRevision(v) => Some(*v),
            _ => None,
        })),
        2 => mvcc::CompareTarget::Mod(int(|u| match u {
            U::ModRevision(v) => Some(*v),
            _ => None,
        })),
        3 => mvcc::CompareTarget::Value(match &c.target_union {
            Some(U::Value(v)) => v.clone(),
            _ => Vec::new(),
        }),
        4 => mvcc::CompareTarget::Lease(int(|u| match u {
            U::Lease(v) => Some(*v),
            _ => None,
        })),
        _ => mvcc::CompareTarget::Version(int(|u| match u {
            U::Version(v) => Some(*v),
            _ => None,
        })),
    };
    mvcc::Compare {
        result,
        target,
        key: c.key,
        range_end: c.range_end,
    }
}

fn op_from_pb(op: pb::RequestOp) -> Option<mvcc::RequestOp> {
    use pb::request_op::Request;
    Some(match op.request? {
        Request::RequestRange(r) => mvcc::RequestOp::Range(range_from_pb(r)),
        Request::RequestPut(r) => mvcc::RequestOp::Put(put_from_pb(r)),
        Request::RequestDeleteRange(r) => mvcc::RequestOp::DeleteRange(delete_from_pb(r)),
        Request::RequestTxn(r) => mvcc::RequestOp::Txn(txn_from_pb(r)),
    })
}

fn txn_from_pb(r: pb::TxnRequest) -> mvcc::TxnRequest {
    // Empty ops were refused by `check_op`.
    mvcc::TxnRequest {
        compare: r.compare.into_iter().map(compare_from_pb).collect(),
        success: r.success.into_iter().filter_map(op_from_pb).collect(),
        failure: r.failure.into_iter().filter_map(op_from_pb).collect(),
    }
}

fn kv_to_pb(kv: mvcc::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

fn range_to_pb(r: mvcc::RangeResponse, s: &KvService) -> pb::RangeResponse {
    pb::RangeResponse {
        header: s.header(r.revision),
        kvs: r.kvs.into_iter().map(kv_to_pb).collect(),
        more: r.more,
        count: r.count,
    }
}

fn put_to_pb(r: mvcc::PutResponse, s: &KvService) -> pb::PutResponse {
    pb::PutResponse {
        header: s.header(r.revision),
        prev_kv: r.prev_kv.map(kv_to_pb),
    }
}

fn delete_to_pb(r: mvcc::DeleteRangeResponse, s: &KvService) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: s.header(r.revision),
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(kv_to_pb).collect(),
    }
}

fn txn_to_pb(r: mvcc::TxnResponse, s: &KvService) -> pb::TxnResponse {
    pb::TxnResponse {
        header: s.header(r.revision),
        succeeded: r.succeeded,
        responses: ops_to_pb(r.responses),
    }
}

/// Responses inside a txn carry a header with only the revision, as etcd's
/// apply layer fills them (cluster, member and term only in the outer one).
fn ops_to_pb(ops: Vec<mvcc::ResponseOp>) -> Vec<pb::ResponseOp> {
    use pb::response_op::Response;
    let h = |revision: i64| {
        Some(pb::ResponseHeader {
            revision,
            ..Default::default()
        })
    };
    ops.into_iter()
        .map(|op| pb::ResponseOp {
            response: Some(match op {
                mvcc::ResponseOp::Range(r) => Response::ResponseRange(pb::RangeResponse {
                    header: h(r.revision),
                    kvs: r.kvs.into_iter().map(kv_to_pb).collect(),
                    more: r.more,
                    count: r.count,
                }),
                mvcc::ResponseOp::Put(r) => Response::ResponsePut(pb::PutResponse {
                    header: h(r.revision),
                    prev_kv: r.prev_kv.map(kv_to_pb),
                }),
                mvcc::ResponseOp::DeleteRange(r) => {
                    Response::ResponseDeleteRange(pb::DeleteRangeResponse {
                        header: h(r.revision),
                        deleted: r.deleted,
                        prev_kvs: r.prev_kvs.into_iter().map(kv_to_pb).collect(),
                    })
                }
                mvcc::ResponseOp::Txn(r) => Response::ResponseTxn(pb::TxnResponse {
                    header: (r.revision != 0).then(|| pb::ResponseHeader {
                        revision: r.revision,
                        ..Default::default()
                    }),
                    succeeded: r.succeeded,
                    responses: ops_to_pb(r.responses),
                }),
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::request_op::Request;

    fn put(k: &str) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(Request::RequestPut(pb::PutRequest {
                key: k.into(),
                ..Default::default()
            })),
        }
    }
    fn del(k: &str, end: &str) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(Request::RequestDeleteRange(pb::DeleteRangeRequest {
                key: k.into(),
                range_end: end.into(),
                ..Default::default()
            })),
        }
    }
    fn txn(success: Vec<pb::RequestOp>, failure: Vec<pb::RequestOp>) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(Request::RequestTxn(pb::TxnRequest {
                compare: vec![],
                success,
                failure,
            })),
        }
    }

    #[test]
    fn duplicate_key_rule_matches_etcd() {
        assert!(check_intervals(&[put("a"), put("b")]).is_ok());
        assert!(check_intervals(&[put("a"), put("a")]).is_err());
        assert!(check_intervals(&[del("a", ""), put("a")]).is_err());
        assert!(check_intervals(&[del("a", "c"), put("b")]).is_err());
        assert!(check_intervals(&[del("a", "c"), put("c")]).is_ok());
        // the two branches of a nested txn may both put a key
        assert!(check_intervals(&[txn(vec![put("a")], vec![put("a")])]).is_ok());
        // but not together with an outer put
        assert!(check_intervals(&[txn(vec![put("a")], vec![]), put("a")]).is_err());
        assert!(check_intervals(&[del("a", "z"), txn(vec![put("b")], vec![])]).is_err());
    }

    #[test]
    fn txn_op_budget_counts_the_widest_list() {
        let many = pb::TxnRequest {
            compare: vec![],
            success: (0..129).map(|i| put(&format!("k{i}"))).collect(),
            failure: vec![],
        };
        assert_eq!(
            check_txn(&many, 128).unwrap_err().message,
            "etcdserver: too many operations in txn request"
        );
        let ok = pb::TxnRequest {
            success: (0..128).map(|i| put(&format!("k{i}"))).collect(),
            ..many
        };
        assert!(check_txn(&ok, 128).is_ok());
    }

    #[test]
    fn empty_op_is_key_not_found() {
        let t = pb::TxnRequest {
            compare: vec![],
            success: vec![pb::RequestOp { request: None }],
            failure: vec![],
        };
        assert_eq!(
            check_txn(&t, 128).unwrap_err().message,
            "etcdserver: key not found"
        );
    }
}
