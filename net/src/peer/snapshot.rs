//! Raft snapshots over the peer port: the leader streams a B-tree image to
//! a follower that fell behind its compacted log (raftcore's
//! `node::snapshot` module says what an image is and how it is installed).
//!
//! The image goes in chunks of `CHUNK` bytes, one unary call
//! `ferrocd.raft.Raft/Snapshot` each, on a connection of its own: a large
//! image is never limited by the message size limit and never queues in
//! front of the Raft messages (heartbeats, appends) of the peer's other
//! connection. The first chunk carries the Raft `MsgSnapshot`; the last one
//! the image's size and CRC-32, which the receiver checks before raft sees
//! the message. Calls of one transfer are sequential, so the receiver sees
//! offsets in order; a chunk out of order, a new transfer from the same
//! sender, or any error abandons the transfer (its partial file goes) and
//! the sender reports the failure to raft, which probes the follower and
//! asks for a snapshot again.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Weak};
use std::time::Duration;

use raftcore::{IncomingSnapshot, Node, OutgoingSnapshot, PeerDirectory};

use crate::client::{CallOptions, Client, ClientConfig};
use crate::grpc::{unary, CallInfo, Code, Router, Status};

pub const SNAPSHOT_PATH: &str = "/ferrocd.raft.Raft/Snapshot";

/// Bytes of image per call: well below the smallest message limit a
/// member accepts (`--max-request-bytes` + 512 KiB of gRPC overhead).
const CHUNK: usize = 256 << 10;

#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotChunk {
    /// Chosen by the sender, the same for every chunk of one transfer.
    #[prost(uint64, tag = "1")]
    pub transfer: u64,
    /// The sending member.
    #[prost(uint64, tag = "2")]
    pub from: u64,
    /// The raft `MsgSnapshot` (first chunk only).
    #[prost(bytes = "vec", tag = "3")]
    pub message: Vec<u8>,
    #[prost(uint64, tag = "4")]
    pub offset: u64,
    #[prost(bytes = "vec", tag = "5")]
    pub data: Vec<u8>,
    /// Set on the last chunk, with `size` and `crc`.
    #[prost(bool, tag = "6")]
    pub last: bool,
    #[prost(uint64, tag = "7")]
    pub size: u64,
    /// CRC-32 (IEEE) of the whole image.
    #[prost(uint32, tag = "8")]
    pub crc: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotAck {}

fn unavailable(e: impl std::fmt::Display) -> Status {
    Status::new(Code::UNAVAILABLE, e.to_string())
}

/// Registers the receiving side on the peer port's router.
pub fn register(router: &mut Router, node: Arc<Node>) {
    let node = Rc::new(node);
    // Transfers in progress on this executor, by sending member.
    let transfers: Rc<RefCell<HashMap<u64, (u64, IncomingSnapshot)>>> = Rc::default();
    router.add(
        SNAPSHOT_PATH,
        unary(move |c: SnapshotChunk, _: CallInfo| {
            let node = node.clone();
            let transfers = transfers.clone();
            async move {
                let mut inc = match transfers.borrow_mut().remove(&c.from) {
                    Some((t, inc)) if t == c.transfer && c.message.is_empty() => inc,
                    _ if c.offset == 0 && !c.message.is_empty() => {
                        node.begin_snapshot(&c.message).map_err(unavailable)?
                    }
                    _ => {
                        return Err(Status::new(
                            Code::FAILED_PRECONDITION,
                            "unknown snapshot transfer",
                        ))
                    }
                };
                inc.write(c.offset, &c.data).map_err(unavailable)?;
                if c.last {
                    inc.finish(&node, c.size, c.crc)
                        .await
                        .map_err(unavailable)?;
                } else {
                    transfers.borrow_mut().insert(c.from, (c.transfer, inc));
                }
                Ok::<_, Status>(SnapshotAck {})
            }
        }),
    );
}

/// Sends every snapshot the node queues, each on its own task and
/// connection, and reports the outcome to the node.
pub(super) async fn run_snapshots(
    node: Weak<Node>,
    dir: Arc<PeerDirectory>,
    peers: HashMap<u64, String>,
) {
    let Some(out) = node.upgrade().and_then(|n| n.take_snapshot_outbound()) else {
        return;
    };
    let me = node.upgrade().map_or(0, |n| n.config().member_id);
    let mut transfer = 0u64;
    while let Ok(s) = out.recv().await {
        transfer += 1;
        let node = node.clone();
        // Where the member list says the peer is (or the flags did).
        let ep = dir.url(s.to).or_else(|| peers.get(&s.to).cloned());
        let t = transfer;
        glommio::spawn_local(async move {
            let ok = match ep {
                Some(ep) => send(&ep, me, t, &s).await.is_ok(),
                None => false,
            };
            if let Some(n) = node.upgrade() {
                n.report_snapshot(s.to, ok).await;
            }
        })
        .detach();
    }
}

async fn send(endpoint: &str, me: u64, transfer: u64, s: &OutgoingSnapshot) -> Result<(), String> {
    let cfg = ClientConfig {
        connect_timeout: Duration::from_secs(2),
        ..ClientConfig::default()
    };
    let client = Client::connect_with(endpoint, cfg)
        .await
        .map_err(|e| e.to_string())?;
    let opts = CallOptions {
        timeout: Some(Duration::from_secs(30)),
        ..CallOptions::default()
    };
    let mut rd = s.reader().map_err(|e| e.to_string())?;
    let mut offset = 0u64;
    let mut first = true;
    loop {
        let data = rd.next_chunk(CHUNK).map_err(|e| e.to_string())?;
        let last = data.is_none();
        let data = data.unwrap_or_default();
        let n = data.len() as u64;
        let chunk = SnapshotChunk {
            transfer,
            from: me,
            message: if first { s.message.clone() } else { Vec::new() },
            offset,
            data,
            last,
            size: if last { s.size() } else { 0 },
            crc: if last { rd.crc() } else { 0 },
        };
        let _: SnapshotAck = client
            .unary_with(SNAPSHOT_PATH, &chunk, &opts)
            .await
            .map_err(|e| e.to_string())?;
        if last {
            return Ok(());
        }
        first = false;
        offset += n;
    }
}
