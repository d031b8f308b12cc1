//! engine: ferrocd's storage layer.
//!
//! For now this is [`mvcc`], etcd v3.5's multi-version key space kept in
//! memory. The crate knows nothing of gRPC, protobuf or Raft: it speaks plain
//! Rust types, and the `net` / `raftcore` crates translate to and from them.

#![deny(unsafe_code)]

pub mod mvcc;

pub use mvcc::{
    CompactResponse, Compare, CompareResult, CompareTarget, DeleteRangeRequest,
    DeleteRangeResponse, Error, Event, EventKind, KeyValue, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, ResponseOp, SortOrder, SortTarget, Store, TxnRequest, TxnResponse,
};
pub mod alarm;
pub mod btree;
pub mod lease;
pub mod members;
pub mod wal;
pub mod watch;
