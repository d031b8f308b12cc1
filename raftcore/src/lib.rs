//! raftcore: where client requests become ordered, durable, applied state
//! changes: raft-rs's `RawNode` ready loop, the log store it persists to,
//! and the apply path into `engine::mvcc`.
//!
//! Today a cluster has one member (the peer transport comes with the Raft
//! issue); the single member goes through the same Raft path as a cluster.
#![forbid(unsafe_code)]

mod checkpoint;
mod log_store;
pub mod membership;
mod node;
pub mod proposal;
pub mod wal_log;

pub use checkpoint::{CheckpointConfig, DefragReport};
pub use log_store::{LogError, LogStore, MemLog};
pub use node::{
    Applied, Error, Header, LeaseGrant, MemberInfo, Node, NodeConfig, PeerDirectory, RaftLoop,
    RaftStatus, Recovered,
};
pub use wal_log::{RecoveredLog, WalLog, WalMetadata};
