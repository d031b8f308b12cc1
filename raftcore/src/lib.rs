//! raftcore: where client requests become ordered, durable, applied state
//! changes: raft-rs's `RawNode` ready loop, the log store it persists to,
//! and the apply path into `engine::mvcc`.
//!
//! A single member goes through the same Raft path as a cluster; the
//! member list changes only through Raft conf changes (`membership`).
#![forbid(unsafe_code)]

mod checkpoint;
pub mod force;
mod log_store;
pub mod membership;
mod node;
pub mod proposal;
pub mod wal_log;

pub use checkpoint::{CheckpointConfig, DefragReport};
pub use log_store::{LogError, LogStore, MemLog};
pub use node::{
    open_backend, AlarmRequestAction, Applied, Error, Header, ImageReader, IncomingSnapshot,
    LeaseGrant, MemberInfo, Node, NodeConfig, OutgoingSnapshot, PeerDirectory, RaftLoop,
    RaftStatus, Recovered, SnapStats, DEFAULT_QUOTA_BYTES,
};
pub use wal_log::{RecoveredLog, WalLog, WalMetadata};
