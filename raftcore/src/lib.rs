//! raftcore: where requests become ordered, applied state changes.
//!
//! Today this is the single-member apply path: every mutating request is
//! applied to `engine::mvcc` under one lock, in arrival order, which is the
//! order a Raft log would give it. The Raft issue replaces the lock with a
//! raft-rs `RawNode` ready loop (propose → WAL → commit → apply) behind the
//! same `Node` API, so `net` does not change.
#![forbid(unsafe_code)]

mod node;

pub use node::{Error, Header, Node, NodeConfig};
