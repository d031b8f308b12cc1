//! etcd v3.5's MVCC data model: a key space in which every write creates a
//! new store revision and older revisions stay readable until compacted.
//!
//! # Model
//!
//! * The store revision starts at 1 on a fresh store. Each `put`,
//!   `delete_range` or `txn` that changes at least one key creates exactly one
//!   new *main* revision; the individual changes inside it are numbered by a
//!   *sub* revision (0, 1, 2, ...) in the order they were applied. A request
//!   that changes nothing (a delete of absent keys, a read-only or no-op txn)
//!   leaves the revision alone.
//! * Each key has a history of *generations* (module `key_index`): a generation
//!   starts with the put that creates the key (its `create_revision`), gains
//!   one revision per later put (each bumping `version` by one) and ends with
//!   a tombstone when the key is deleted. The next put starts a new
//!   generation with `version` 1.
//! * The revisions themselves (revision → stored key-value or tombstone) live
//!   in a `RevisionStore` (module `revision_store`) over the B-tree file's
//!   `key` bucket. The key index only holds revisions, and is always
//!   entirely in memory (as etcd's `treeIndex`).
//! * In memory vs in the file: a record is held in memory from its write
//!   until the checkpoint that wrote it is committed and installed
//!   (`Store::checkpoint_committed`, with a snapshot of the file taken after
//!   that commit); from then on it is read from that snapshot (the file's
//!   memory map). Removals (compaction, undo) are kept in memory until
//!   committed, and hide the file's copy. A store without a file
//!   (`Store::new`, never checkpointed) keeps everything in memory. A store
//!   loaded from the file (`load`) rebuilds only the key index.
//! * Compaction at revision `c` forgets every revision that is not needed to
//!   read at `c` or later or to watch from `c`: per key it keeps the newest
//!   revision `<= c` of each generation alive at `c` or deleted at exactly
//!   `c` (so a tombstone at `c` stays, as in etcd >= 3.5.15, until a later
//!   compaction passes it), and everything after `c`.
//!
//! # Invariants
//!
//! * `current_revision()` increases by exactly one per write that changes
//!   something, and never otherwise; `compact_revision() <= current_revision()`.
//! * Every key in the index has at least one revision; only its last
//!   generation may be empty, and an empty last generation means the key is
//!   deleted now. Every generation but the last ends with a tombstone and
//!   holds at least one put before it, unless the tombstone is at the
//!   compaction revision; the last generation holds no tombstone.
//! * Revisions in a key index are strictly increasing, and every revision in
//!   the revision store (memory and file together, removals applied) is
//!   referenced by exactly one key index (and vice versa). All stored main
//!   revisions are `<= current_revision()`.
//! * Reads at any revision in `[compact_revision(), current_revision()]` see
//!   exactly the key space as it was right after that revision's write.
//! * A request that fails leaves the store exactly as it was (a txn's branch
//!   is validated before it runs, and anything that still fails mid-way is
//!   rolled back).

mod backend;
mod error;
mod history;
mod index;
mod key_index;
mod key_range;
mod kv;
mod requests;
mod revision;
mod revision_store;
mod store;
mod txn;
mod view;
mod write;

pub(crate) use backend::decode_bucket;
pub use backend::{load, load_meta, save, AppliedState, BackendError, Checkpoint};
pub use error::Error;
pub use history::EventPage;
pub use kv::{Event, EventKind, KeyValue};
pub use requests::{
    CompactResponse, Compare, CompareResult, CompareTarget, DeleteRangeRequest,
    DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp,
    ResponseOp, SortOrder, SortTarget, TxnRequest, TxnResponse,
};
pub use store::Store;

#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;
