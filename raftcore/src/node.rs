//! `Node`: one member's view of the cluster: identity, term, and the apply
//! path into the MVCC store.
//!
//! Invariant: mutating requests are applied one at a time (the store's lock
//! is the serialisation point a Raft log will take over), so each changes the
//! revision by at most one and responses report the revision they produced.

use std::sync::Mutex;

use engine::mvcc::{
    CompactResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, RequestOp, Store, TxnRequest, TxnResponse,
};

/// Errors of the apply layer; `net` maps each to etcd's gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Mvcc(#[from] engine::mvcc::Error),
    /// A put names a lease that does not exist (no leases exist yet).
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// The store lock was poisoned by a panic in another request.
    #[error("etcdserver: server stopped")]
    Stopped,
}

/// Static identity of this member.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub cluster_id: u64,
    pub member_id: u64,
}

/// The fields of etcd's `ResponseHeader`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub cluster_id: u64,
    pub member_id: u64,
    pub revision: i64,
    pub raft_term: u64,
}

pub struct Node {
    cfg: NodeConfig,
    store: Mutex<Store>,
}

impl Node {
    pub fn new(cfg: NodeConfig) -> Node {
        Node {
            cfg,
            store: Mutex::new(Store::new()),
        }
    }

    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    /// The current Raft term. Without Raft a single member stays leader of
    /// term 1 for its whole life.
    pub fn term(&self) -> u64 {
        1
    }

    pub fn header(&self, revision: i64) -> Header {
        Header {
            cluster_id: self.cfg.cluster_id,
            member_id: self.cfg.member_id,
            revision,
            raft_term: self.term(),
        }
    }

    fn store(&self) -> Result<std::sync::MutexGuard<'_, Store>, Error> {
        self.store.lock().map_err(|_| Error::Stopped)
    }

    pub fn current_revision(&self) -> Result<i64, Error> {
        Ok(self.store()?.current_revision())
    }

    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, Error> {
        Ok(self.store()?.range(req)?)
    }

    pub fn put(&self, req: &PutRequest) -> Result<PutResponse, Error> {
        check_lease(req)?;
        Ok(self.store()?.put(req)?)
    }

    pub fn delete_range(&self, req: &DeleteRangeRequest) -> Result<DeleteRangeResponse, Error> {
        Ok(self.store()?.delete_range(req)?)
    }

    pub fn txn(&self, req: &TxnRequest) -> Result<TxnResponse, Error> {
        check_txn_leases(req)?;
        Ok(self.store()?.txn(req)?)
    }

    pub fn compact(&self, revision: i64) -> Result<CompactResponse, Error> {
        Ok(self.store()?.compact(revision)?)
    }
}

fn check_lease(req: &PutRequest) -> Result<(), Error> {
    // No lease can exist until the lease issue lands; etcd refuses a put
    // naming an unknown lease before applying anything.
    if req.lease != 0 {
        return Err(Error::LeaseNotFound);
    }
    Ok(())
}

// etcd checks only the branch the compares select; without leases any lease
// in either branch is unknown, so checking both differs only when the
// offending put sits in the branch that would not run.
fn check_txn_leases(req: &TxnRequest) -> Result<(), Error> {
    for op in req.success.iter().chain(req.failure.iter()) {
        match op {
            RequestOp::Put(p) => check_lease(p)?,
            RequestOp::Txn(t) => check_txn_leases(t)?,
            _ => {}
        }
    }
    Ok(())
}
