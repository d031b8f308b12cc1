//! Where Raft's entries and hard state become durable.
//!
//! The ready loop calls `append` with each Ready's new entries and hard
//! state and acknowledges nothing that depends on them until it returns.
//! Because the loop keeps collecting proposals while an `append` is in
//! flight, the next Ready carries all of them: one write + fdatasync per
//! batch (group commit at the Raft level).

use raft::eraftpb::{Entry, HardState};

/// Durable storage of the Raft log.
#[allow(async_fn_in_trait)]
pub trait LogStore {
    /// Makes `entries` (which may overwrite a suffix) and `hard_state`
    /// durable before returning.
    async fn append(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), LogError>;

    /// Everything up to `index` is durable elsewhere (the B-tree): record
    /// that and drop what is no longer needed.
    async fn checkpoint(&mut self, _index: u64, _term: u64) -> Result<(), LogError> {
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The log failed to persist and refuses further writes (fsyncgate).
    #[error("wal: poisoned after an I/O error: {0}")]
    Poisoned(String),
}

/// A log kept in memory only: nothing survives a restart. Used by tests of
/// the apply path and, until the WAL is wired in, by the server (the README
/// says so).
#[derive(Default)]
pub struct MemLog {
    pub appended_entries: u64,
    pub appends: u64,
}

impl LogStore for MemLog {
    async fn append(&mut self, entries: &[Entry], _hs: Option<&HardState>) -> Result<(), LogError> {
        self.appended_entries += entries.len() as u64;
        self.appends += 1;
        Ok(())
    }
}
