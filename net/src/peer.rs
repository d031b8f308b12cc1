//! The peer transport: Raft messages between members, over our gRPC layer
//! on the peer port (`--listen-peer-urls`).
//!
//! Sending: the Raft loop queues `(to, message)`; one task per peer batches
//! whatever is queued into one `Send` call, one call in flight per peer, so
//! messages to a peer stay in order. A peer that is down costs nothing but
//! the dropped messages: Raft is built for lossy networks and retries by
//! itself. Receiving: every message of a batch is stepped into the loop.
//!
//! The wire format is ours (members of one cluster are all ferrocd): the
//! service `ferrocd.raft.Raft`, method `Send`, request `RaftBatch { repeated
//! bytes msgs = 1 }` (each a raft-rs `eraftpb.Message`), response empty.
//! Snapshots travel on their own calls and connections (`snapshot`).

mod snapshot;

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use glommio::timer::sleep;
use raftcore::Node;

use crate::client::{CallOptions, Client, ClientConfig};
use crate::grpc::{unary, CallInfo, Code, Router, Status};

pub const SEND_PATH: &str = "/ferrocd.raft.Raft/Send";

/// Largest batch one call carries; more waits for the next call.
const MAX_BATCH_BYTES: usize = 4 << 20;

/// An idle peer gets an empty batch this often, so that its reachability
/// is known (membership changes check it, like etcd's transport).
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Probe interval while a peer has not been reached yet: at start-up the
/// members find each other within a few ticks, so that
/// `--initial-election-tick-advance` (which waits for reachable peers) can
/// fire before the first election timeout, as etcd's transport, which dials
/// its peers at once, allows.
const FIRST_PROBE_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Clone, PartialEq, prost::Message)]
pub struct RaftBatch {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub msgs: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RaftAck {}

/// Registers the receiving side on the peer port's router.
pub fn register(router: &mut Router, node: Arc<Node>) {
    snapshot::register(router, node.clone());
    let node = Rc::new(node);
    router.add(
        SEND_PATH,
        unary(move |b: RaftBatch, _: CallInfo| {
            let node = node.clone();
            async move {
                for m in &b.msgs {
                    node.step(m)
                        .await
                        .map_err(|e| Status::new(Code::UNAVAILABLE, e.to_string()))?;
                }
                Ok::<_, Status>(RaftAck {})
            }
        }),
    );
}

/// Runs the sending side until the node is dropped. `peers` maps member IDs
/// to peer endpoints (`host:port` or `http://host:port`); members added
/// later, and new addresses of updated ones, come from the node's
/// `PeerDirectory`, which wins over `peers`.
pub async fn run_transport(node: Arc<Node>, peers: HashMap<u64, String>) {
    let Some(out) = node.take_outbound() else {
        return;
    };
    let dir = node.peer_directory();
    glommio::spawn_local(snapshot::run_snapshots(
        Arc::downgrade(&node),
        dir.clone(),
        peers.clone(),
    ))
    .detach();
    drop(node);
    // Per peer: its endpoint and its sender task's queue (dropping the
    // queue ends the task).
    let mut queues: HashMap<u64, (String, async_channel::Sender<Vec<u8>>)> = HashMap::new();
    let start = |id: u64, ep: String| {
        let (tx, rx) = async_channel::unbounded::<Vec<u8>>();
        glommio::spawn_local(peer_sender(id, ep.clone(), rx, dir.clone())).detach();
        (ep, tx)
    };
    for (id, ep) in peers {
        let ep = dir.url(id).unwrap_or(ep);
        queues.insert(id, start(id, ep));
    }
    let mut seen = dir.version();
    while let Ok((to, m)) = out.recv().await {
        let v = dir.version();
        if v != seen || !queues.contains_key(&to) {
            seen = v;
            let ids: Vec<u64> = queues.keys().copied().chain([to]).collect();
            for id in ids {
                if let Some(url) = dir.url(id) {
                    if queues.get(&id).map(|q| &q.0) != Some(&url) {
                        queues.insert(id, start(id, url));
                    }
                }
            }
        }
        if let Some((_, q)) = queues.get(&to) {
            let _ = q.try_send(m);
        }
    }
}

async fn peer_sender(
    id: u64,
    endpoint: String,
    rx: async_channel::Receiver<Vec<u8>>,
    dir: Arc<raftcore::PeerDirectory>,
) {
    let mut client: Option<Client> = None;
    let mut backoff = Duration::from_millis(50);
    let cfg = ClientConfig {
        connect_timeout: Duration::from_secs(1),
        ..ClientConfig::default()
    };
    let opts = CallOptions {
        timeout: Some(Duration::from_secs(5)),
        ..CallOptions::default()
    };
    // The first probe goes out at once.
    let mut quiet = Duration::ZERO;
    loop {
        // A message, or after a quiet interval an empty probe batch.
        let first = futures_lite::future::or(async { rx.recv().await.map(Some) }, async {
            sleep(quiet).await;
            Ok(None)
        })
        .await;
        quiet = if dir.active_since(id).is_some() {
            PROBE_INTERVAL
        } else {
            FIRST_PROBE_INTERVAL
        };
        let Ok(first) = first else {
            return;
        };
        let mut size = first.as_ref().map_or(0, Vec::len);
        let mut msgs: Vec<Vec<u8>> = first.into_iter().collect();
        while !msgs.is_empty() && size < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(m) => {
                    size += m.len();
                    msgs.push(m);
                }
                Err(_) => break,
            }
        }
        if client.as_ref().is_some_and(|c| c.closed_reason().is_some()) {
            client = None;
        }
        if client.is_none() {
            match Client::connect_with(&endpoint, cfg.clone()).await {
                Ok(c) => {
                    client = Some(c);
                    backoff = Duration::from_millis(50);
                }
                Err(_) => {
                    // The peer is down: drop this batch and what queues up
                    // while we wait; Raft resends what matters.
                    dir.note_down(id);
                    sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    while rx.try_recv().is_ok() {}
                    continue;
                }
            }
        }
        if let Some(c) = &client {
            let r: Result<RaftAck, Status> =
                c.unary_with(SEND_PATH, &RaftBatch { msgs }, &opts).await;
            match r {
                Ok(_) => dir.note_up(id),
                // The peer refuses us because we were removed from the
                // cluster (etcd: HTTP 410 from rafthttp): stop.
                Err(s) if s.message == raftcore::Error::Removed.to_string() => {
                    dir.mark_removed();
                }
                Err(_) => {
                    dir.note_down(id);
                    client = None
                }
            }
        }
    }
}
