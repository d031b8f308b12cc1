//! `Maintenance.Defragment` on this member: an online defrag of the B-tree
//! file, run by the checkpoint thread between two checkpoints (see
//! `checkpoint.rs`). Like etcd's, it is local to the member it is sent to
//! (not replicated through Raft). Unlike etcd's, it blocks no client: reads
//! and writes are served from memory and the WAL while the file is rewritten.

use std::time::Duration;

use futures_lite::future;
use glommio::timer::sleep;

use super::{Error, Node};
use crate::checkpoint::DefragReport;
use crate::log_store::LogError;

impl Node {
    fn poison_message(&self) -> Result<Option<String>, Error> {
        Ok(self
            .shared
            .poisoned
            .lock()
            .map_err(|_| Error::Stopped)?
            .clone())
    }

    /// Rewrites the B-tree file without its free pages. A member without a
    /// backend file (tests) has nothing to defragment. A member that gets
    /// poisoned while the defrag waits for its checkpoint (which then never
    /// comes) answers with the poison error.
    pub async fn defragment(&self) -> Result<Option<DefragReport>, Error> {
        if let Some(msg) = self.poison_message()? {
            return Err(Error::Log(LogError::Poisoned(msg)));
        }
        let Some(d) = &self.shared.defrag else {
            return Ok(None);
        };
        // Everything applied when the request arrived goes into the copy.
        let after = self.applied_index();
        future::or(
            async { d.defragment(after).await.map(Some).map_err(Error::Backend) },
            async {
                loop {
                    sleep(Duration::from_millis(100)).await;
                    if let Some(msg) = self.poison_message()? {
                        return Err(Error::Log(LogError::Poisoned(msg)));
                    }
                }
            },
        )
        .await
    }
}
