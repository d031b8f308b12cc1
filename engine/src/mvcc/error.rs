//! The errors a caller of the MVCC store acts on.
//!
//! Display strings are etcd's own, so the network layer can pass them through.

/// Why a request to the [`Store`](super::Store) was refused. A refused request
/// changed nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The requested revision is older than the compaction revision (or, for
    /// `compact`, not newer than it).
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    /// The requested revision is newer than the current revision.
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    /// A put with `ignore_value` or `ignore_lease` named a key that does not
    /// exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// A put of a txn's chosen branch names a lease that does not exist
    /// (checked by `Store::txn_checked` with the caller's lease table).
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// The key index points at a revision the revision store does not hold,
    /// or asked to tombstone a key that is not live. This means the store's
    /// internal state is inconsistent (corruption); it is never caused by a
    /// request's contents.
    #[error("mvcc: revision not found")]
    RevisionNotFound { main: i64, sub: i64 },
    /// Reading a record from the backend file failed (an I/O error or a
    /// corrupt page or record). Never caused by a request's contents.
    #[error("mvcc: backend: {0}")]
    Backend(String),
}
