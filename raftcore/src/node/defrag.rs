//! `Maintenance.Defragment` on this member: an online defrag of the B-tree
//! file, run by the checkpoint thread between two checkpoints (see
//! `checkpoint.rs`). Like etcd's, it is local to the member it is sent to
//! (not replicated through Raft). Unlike etcd's, it blocks no client: reads
//! and writes are served from memory and the WAL while the file is rewritten.

use super::{Error, Node};
use crate::checkpoint::DefragReport;
use crate::log_store::LogError;

impl Node {
    /// Rewrites the B-tree file without its free pages. A member without a
    /// backend file (tests) has nothing to defragment.
    pub async fn defragment(&self) -> Result<Option<DefragReport>, Error> {
        if let Some(msg) = self
            .shared
            .poisoned
            .lock()
            .map_err(|_| Error::Stopped)?
            .clone()
        {
            return Err(Error::Log(LogError::Poisoned(msg)));
        }
        let Some(d) = &self.shared.defrag else {
            return Ok(None);
        };
        // Everything applied when the request arrived goes into the copy.
        d.defragment(self.applied_index())
            .await
            .map(Some)
            .map_err(Error::Backend)
    }
}
