//! Require-leader streams other than Watch (gRPC metadata `hasleader:
//! true`, clientv3's `WithRequireLeader`): etcd's stream interceptor runs
//! `monitorLeader` beside every such stream, whatever its service
//! (LeaseKeepAlive, Election.Observe), and cancels it with "etcdserver: no
//! leader" once the member has seen no leader at
//! `watch::MAX_NO_LEADER_CHECKS` checks in a row, one check per election
//! timeout. The Watch stream runs the same check inside its own loop
//! (`watch.rs`), next to its progress timer.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use glommio::timer::sleep;
use raftcore::Node;

use crate::errors;
use crate::grpc::Status;
use crate::watch::MAX_NO_LEADER_CHECKS;

/// One election timeout of `node` (`--election-timeout`).
pub(crate) fn election_timeout(node: &Node) -> Duration {
    let cfg = node.config();
    cfg.heartbeat
        .saturating_mul(u32::try_from(cfg.election_ticks).unwrap_or(u32::MAX))
}

/// Completes with etcd's "no leader" status once `node` has had no leader
/// at `MAX_NO_LEADER_CHECKS` consecutive checks; never completes while a
/// leader is known. Race it against the stream's own work.
pub(crate) async fn leader_lost(node: Arc<Node>) -> Status {
    let every = election_timeout(&node);
    let mut misses = 0;
    loop {
        sleep(every).await;
        if node.leader() == 0 {
            misses += 1;
            if misses >= MAX_NO_LEADER_CHECKS {
                return errors::no_leader();
            }
        } else {
            misses = 0;
        }
    }
}

/// Runs a stream's `work`; when `require_leader` is set, ends it early with
/// etcd's "no leader" status once [`leader_lost`] completes (the stream
/// interceptor's cancel, which etcd's handlers answer with that error).
pub(crate) async fn unless_leader_lost<T>(
    node: &Arc<Node>,
    require_leader: bool,
    work: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    if !require_leader {
        return work.await;
    }
    futures_lite::future::or(work, async { Err(leader_lost(node.clone()).await) }).await
}
