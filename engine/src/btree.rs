//! `engine::btree`: the page file that holds etcd's backend (what bbolt is for
//! etcd): a copy-on-write B+tree of named buckets in one file of 4 KiB pages.
//!
//! ```text
//! page 0   page 1   page 2 ...                                  page_count-1
//! [meta A] [meta B] [leaf][branch][overflow][free][free-list]...[leaf] [preallocated, unused]
//!    \________\__ txn n is written to page n % 2; the valid one with the higher txn wins
//!                  meta ─▶ catalog tree (bucket name ─▶ root page, key count)
//!                       ─▶ free-list chain (runs of free pages)
//!                  bucket root ─▶ branch ─▶ leaf ─▶ overflow chain (values > ~1.3 KiB)
//! ```
//! Byte-exact layouts: `engine/FORMAT.md` §2 (repeated in `btree/format.rs`).
//!
//! # Use
//! One writer ([`Db::begin_write`] → [`WriteTxn`], serialised by a mutex) and
//! any number of snapshot readers ([`Db::begin_read`] → [`ReadTxn`], `Send +
//! Sync`, usable while a commit is being written). Every commit is durable when
//! [`WriteTxn::commit`] returns (two `fdatasync`s). DESIGN.md's contract puts
//! commits on the checkpoint path, never on the client write path, and stores
//! the applied index in the `meta` bucket in the same commit as the data.
//!
//! # Invariants
//! * **A page reachable from the durable meta, or from a registered snapshot
//!   (a live `ReadTxn`), is never written.** Commits write only pages that are
//!   free (see below) or past the old page count, and publish them with a new
//!   meta in the other slot.
//! * **Free means unreachable from every snapshot that can still be read.** A
//!   page unlinked by txn `F` (reachable from snapshot `F-1`, not from `F`) is
//!   *pending* until every registered reader has a snapshot `>= F`; only then
//!   may a commit reuse it. `F` is always durable by then, since a commit is
//!   durable before it is published. The write txn reads only its base
//!   snapshot, which is the newest, so it needs no registration: nothing it can
//!   reach is pending.
//! * **Every page below `page_count` is exactly one of:** meta (0, 1), a tree
//!   page (catalog or bucket), an overflow page, a free-list page of the
//!   durable meta, or listed in that free list. Pending pages are in the
//!   persisted free list (after a restart no reader is left), so a reopen leaks
//!   nothing. [`Db::check_integrity`] checks exactly this.
//! * **The file is at least `page_count` pages long** while any snapshot with
//!   that page count is registered: it grows (in steps, see `grow_target`)
//!   before pages are written and shrinks only when no reader of an older
//!   snapshot is left.
//! * B+tree shape: see `btree/tree.rs`.
//!
//! # Commit protocol
//! 1. Pending pages whose freeing txn is `<=` the oldest reader become free.
//! 2. Dirty nodes are rebalanced and written bottom-up to newly allocated
//!    pages (lowest free page first, else the end of the file), then the
//!    catalog, then the free list (whose own pages come from the free set).
//! 3. `set_len` if the file must grow; write all new pages; **fdatasync**.
//! 4. Write the new meta (txn `n`) to page `n % 2`, the older slot; **fdatasync**.
//! 5. Publish: new readers see txn `n`; the pages it unlinked become pending.
//!
//! Any error in 2–5 poisons the Db (fsyncgate: after a failed fsync the page
//! cache may have dropped dirty pages, so the file's state is unknown); it
//! keeps serving reads of the last published commit and refuses writes until
//! reopened, when recovery below decides what survived.
//!
//! # Crash safety, case by case
//! Recovery: read both meta pages, keep those whose CRC (and magic) is valid,
//! take the higher txn id. A file of at most two pages with no valid meta was
//! never initialised and starts empty; a larger one is `Corrupt`.
//! * **Crash before or during the page writes (step 3)**: only free pages and
//!   pages past the old page count were touched; no valid meta points at them.
//!   The durable meta `n-1` and everything it reaches are intact: state `n-1`.
//! * **Crash after the page writes, before the first fdatasync returns**: some
//!   of the new pages may be on disk, torn or not at all; same as above.
//! * **Crash after the first fdatasync, before or during the meta write
//!   (step 4)**: the new pages are durable but unreferenced. The meta slot being
//!   written held txn `n-2`; if the write tore, that slot fails its CRC and
//!   recovery takes txn `n-1` from the other slot (untouched). If the write
//!   reached the disk whole, recovery takes txn `n`, whose pages are durable.
//!   Either way a committed state: `n-1` or `n`, never a mix.
//! * **Crash after the meta write, before the second fdatasync returns**: as the
//!   previous case (the meta may or may not be durable). The caller has not
//!   seen `commit` return `Ok`, so either outcome is allowed.
//! * **Crash after the second fdatasync**: txn `n` is durable; recovery takes it.
//! * Why falling back to `n-1` is always safe: txn `n` never wrote a page that
//!   `n-1` reaches (first invariant, `n-1` being the durable meta), and its free
//!   list is the one `n-1` wrote.
//! * **Growth**: `set_len` comes before the page writes and is made durable by
//!   the first fdatasync (which flushes the size needed to read the data), so a
//!   durable meta never names a page past the durable end of file (the redb
//!   bug in its `crash_consistency` test). A shrink happens after the meta is
//!   durable and only drops pages past the new page count; if it is lost, the
//!   file is just longer than needed.
//! * **File creation**: the new file's directory entry is fsynced before the
//!   first commit; `compact_into`/`defrag` fsync the copy, rename it, and
//!   fsync the directory.
//!
//! The crash tests (`btree/tests/crash.rs`) cut the in-memory disk at every
//! sync of a workload, with none, all or a torn subset of the unsynced writes
//! surviving, and compare the reopened state with the model.
//!
//! # Media assumptions
//! * A completed `fdatasync` makes every earlier write, and the file length,
//!   durable. Nothing is assumed about writes since the last sync: any subset
//!   may survive, in any order, and each may be torn at any byte (4 KiB page
//!   writes may tear; we do not even rely on 512-byte sectors being atomic).
//! * Powersafe overwrite: a write does not damage bytes outside its range
//!   (writing page 0 cannot destroy page 1).
//! * The CRC32 of a meta page covers its first 56 bytes (all fields); a torn
//!   meta fails it except with probability 2^-32. Every other page carries a
//!   CRC32 of bytes 4..4096 and its own page id, which catches bit rot and
//!   misdirected or lost writes of a reachable page (reported as `Corrupt`,
//!   never skipped). Only reachable pages are trusted, and they were durable
//!   before any meta named them.
//!
//! # Read path: memory map vs `pread` + page cache (measured)
//! Readers need a page of their snapshot to stay valid while the writer
//! commits. That holds on both paths by the first invariant: the pages of a
//! registered snapshot are never rewritten, so a mapped slice stays unchanged
//! for as long as the `ReadTxn` lives, and a `pread` (or a cached copy) returns
//! the bytes the snapshot committed. The cache is keyed by page id; the writer
//! invalidates each page it writes before publishing, and no reader could have
//! been reading those pages (else they would not be free). The map stays valid
//! because it only ever grows (a bigger file gets a new map; old readers keep
//! their `Arc` of the old one) and the file is only truncated when no reader
//! of an older snapshot is left.
//!
//! Measured with `engine/examples/btree_bench.rs` (release, this 2-core VM,
//! ext4 on virtio, file in the OS page cache): 1M keys of 17 bytes with
//! 256-byte values (283 MiB of pages, 3 levels), uniformly random point gets,
//! then one full scan. Gets per second; the scan in entries per second.
//!
//! | read path | get/s, 1 thread | get/s, 1 thread, `begin_read` per get | get/s, 2 threads | scan entries/s |
//! |---|---|---|---|---|
//! | mmap, CRC checked once per page (default) | 1.00 M | 0.98 M | 2.17 M | 19.8 M |
//! | mmap, no CRC check | 1.11 M | 1.05 M | 2.10 M | 19.9 M |
//! | pread + cache holding every page | 0.84 M | 0.78 M | 1.51 M | 9.0 M |
//! | pread + cache of 1/8 of the pages | 0.47 M | 0.49 M | 0.85 M | 6.7 M |
//! | pread, no cache | 0.31 M | 0.28 M | 0.61 M | 10.2 M |
//!
//! Other helpers' builds and tests shared the 2 cores: numbers move by ±20%
//! between runs (a later run: 0.86 M / 1.64 M get/s for the default, 0.64 M /
//! 0.60 M for the full cache), the ranking held in all runs.
//!
//! Decision: **memory map** ([`ReadMode::Mmap`], the default). It is 1.2× the
//! best cache on one thread, 1.4× on two (the cache's shard locks and `Arc`
//! counts are shared writes; the map needs none) and 2× on scans, and it leaves
//! caching to the kernel, which etcd's bbolt relies on too. The `pread` paths
//! stay for backends without a map (the crash tests' in-memory disk) and as a
//! fallback. Checking the CRC of every page on every access cost about 25%
//! (0.89 M vs 1.17 M get/s in the first run); a per-mapping bitmap of pages
//! already checked (`storage::file::Mapping::verified`, cleared by the writer
//! for each page it rewrites) brings that to ~10% while every page is still
//! checked once before its bytes are used.
//!
//! # Online defrag
//! [`Db::defrag_online`] copies the last commit into `<path>.defrag`, renames
//! it over the file and continues on the new one, holding the write lock for
//! the whole copy (writers wait; ferrocd's only writer is the checkpoint
//! thread, which runs the defrag between two checkpoints, so clients never
//! wait: their writes are served from memory and the WAL). The open file is
//! an `Arc<Inner>` that the defrag replaces; a snapshot (a `ReadTxn`, e.g.
//! a Raft snapshot being sent) holds the `Arc` of the file it was taken
//! from and reads that image to the end, the old file staying open, unlinked,
//! until its last reader is gone. Crash cases: in [`Db::defrag_online`].
//!
//! # Not yet
//! Non-durable commits (redb's), an advisory file lock against a second
//! process.

mod cursor;
mod db;
mod error;
mod format;
mod pages;
mod storage;
mod tree;

#[cfg(test)]
mod tests;

pub use cursor::{Entry, Range};
#[cfg(feature = "failpoints")]
pub use db::fp::arm_all_threads as arm_failpoints_on_all_threads;
pub use db::{CompactReport, Db, IntegrityReport, Options, ReadMode, ReadTxn, Stats, WriteTxn};
pub use error::BtreeError;
/// The in-memory disk, for tests of layers above (e.g. the MVCC model test).
#[cfg(test)]
pub(crate) use storage::mem::MemDisk;

/// Longest key (and bucket name) accepted, in bytes.
pub const MAX_KEY_LEN: usize = format::MAX_KEY_LEN;
/// Longest value accepted, in bytes.
pub const MAX_VALUE_LEN: usize = format::MAX_VALUE_LEN;
/// Page size of the file.
pub const PAGE_SIZE: usize = format::PAGE_SIZE;
