//! The peer transport: Raft messages between members, over our gRPC layer
//! on the peer port (`--listen-peer-urls`).
//!
//! Sending: the Raft loop queues `(to, message)`; one task per peer batches
//! whatever is queued and sends it on a long-lived `Stream` call to that
//! peer, one batch in flight: the next goes once the peer acknowledged the
//! last (after stepping all of it), so messages to a peer stay in order and
//! a peer that stops answering is noticed within `ACK_TIMEOUT`. A peer that
//! is down costs nothing but the dropped messages: Raft is built for lossy
//! networks and retries by itself. Receiving: every message of a batch is
//! stepped into the loop, then the batch is acknowledged.
//!
//! Why a stream: a unary call per batch cost a new HTTP/2 stream, request
//! and response headers and trailers, and a task on the receiver, for
//! every batch; on a stream a batch and its acknowledgement are one DATA
//! frame each (BENCHMARKS.md, session 4).
//!
//! The wire format is ours (members of one cluster are all ferrocd): the
//! service `ferrocd.raft.Raft`, method `Stream`, requests `RaftBatch {
//! repeated bytes msgs = 1 }` (each a raft-rs `eraftpb.Message`), each
//! answered by an empty `RaftAck`; a receiver that refuses the sender
//! (removed from the cluster) ends the call with that error.
//! Snapshots travel on their own calls and connections (`snapshot`).

mod snapshot;

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use glommio::timer::sleep;
use raftcore::Node;

use crate::client::{Client, ClientConfig, StreamRx, StreamTx};
use crate::grpc::server::{RequestStream, ResponseSink};
use crate::grpc::{streaming, CallInfo, Code, Router, Status};

pub const STREAM_PATH: &str = "/ferrocd.raft.Raft/Stream";

/// How long a batch may wait for its acknowledgement before the peer
/// counts as down and the stream is dropped.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest batch sent at once; more waits for the next batch.
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
        STREAM_PATH,
        streaming(
            move |mut rx: RequestStream, tx: ResponseSink, _: CallInfo| {
                let node = node.clone();
                async move {
                    while let Some(b) = rx.next::<RaftBatch>().await? {
                        for m in &b.msgs {
                            node.step(m)
                                .await
                                .map_err(|e| Status::new(Code::UNAVAILABLE, e.to_string()))?;
                        }
                        tx.send(&RaftAck {}).await?;
                    }
                    Ok(())
                }
            },
        ),
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
    // The open `Stream` call on `client`, if any.
    let mut stream: Option<(StreamTx, StreamRx)> = None;
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
            stream = None;
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
            if stream.is_none() {
                stream = c.streaming(STREAM_PATH, false).await.ok();
            }
            let r = match stream.as_mut() {
                Some((tx, rx)) => send_batch(tx, rx, &RaftBatch { msgs }).await,
                None => Err(Status::new(
                    Code::UNAVAILABLE,
                    "cannot open the peer stream",
                )),
            };
            if r.is_err() {
                stream = None;
            }
            match r {
                Ok(()) => dir.note_up(id),
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

/// Sends one batch on the peer stream and waits for its acknowledgement
/// (at most `ACK_TIMEOUT`). Any error leaves the stream unusable.
async fn send_batch(tx: &mut StreamTx, rx: &mut StreamRx, batch: &RaftBatch) -> Result<(), Status> {
    tx.send(batch)?;
    let ack = futures_lite::future::or(async { rx.next::<RaftAck>().await.map(Some) }, async {
        sleep(ACK_TIMEOUT).await;
        Ok(None)
    })
    .await?;
    match ack {
        Some(Some(RaftAck {})) => Ok(()),
        Some(None) => Err(Status::new(Code::UNAVAILABLE, "peer stream ended")),
        None => Err(Status::new(
            Code::UNAVAILABLE,
            "peer stream: no acknowledgement",
        )),
    }
}
