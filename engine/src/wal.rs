//! `engine::wal`: the segmented, append-only write-ahead log under the Raft
//! log (etcd's `member/wal`).
//!
//! A [`Wal`] lives on one glommio executor (it is `!Send`); every method must
//! be called from inside that executor. Appends from any number of tasks on
//! that executor are group-committed: one O_DIRECT write plus one durability
//! barrier per batch (an `O_DSYNC` write by default, see "Sync method"), and
//! [`Wal::append`] resolves only after its records are durable. Call
//! [`Wal::close`] before dropping the executor: a dropped `Wal` still writes
//! what is queued, but only while its executor runs.
//!
//! API in short: [`Wal::create`] / [`Wal::open`] (recovery, returns
//! [`Recovered`]), [`Wal::append`] (group commit), [`Wal::entries`] (reads
//! by index for Raft), [`Wal::release_to`] (drop segments a checkpoint
//! covers), [`Wal::close`]; `stats`, `position`, `segment_paths` to inspect.
//!
//! # On-disk format (byte-exact tables: `format.rs` and engine/FORMAT.md §1)
//!
//! ```text
//! <dir>/0000000000000000-0000000000000001.wal     {seq:016x}-{first_index:016x}.wal
//! <dir>/0000000000000001-00000000000004d2.wal     first_index = last index + 1 at creation
//! <dir>/0000000000000002.wal.tmp                  next segment being prepared (deleted at open)
//!
//! segment (preallocated, zero-filled, default 64 MiB):
//! | block 0: segment header (52 B) + zeros | batch | batch | ... | zeros ... |
//!   a batch starts at a multiple of BLOCK (4096) and is zero-padded to the next:
//! | batch header (24 B) | record | record | ... | zero padding |
//!   record = len u32 | type u8 | reserved [u8; 3] | crc32 u32 | payload
//! ```
//!
//! The first batch of every segment holds `Metadata` (the caller's cluster and
//! member ids), then copies of the latest `HardState` and `Checkpoint`, so that
//! dropping older segments never loses them (etcd does the same on cut).
//!
//! # Invariants
//!
//! * I1 (durable prefix): every batch before the write position of the active
//!   segment, and every batch of an older segment, is durable (written and
//!   fdatasync'ed). Appends are acknowledged only after I1 covers them.
//! * I2 (clean tail): on disk, every byte from the write position to the end
//!   of the active segment is zero. Segments are zero-filled before use, a
//!   write only covers bytes past the write position, and recovery re-zeroes a
//!   torn tail (and syncs) before the first new write.
//! * I3 (one write in flight): batch `k + 1` is written only after batch `k`'s
//!   fdatasync returned. So after a crash, at most the last batch of the last
//!   segment can be damaged, and damage anywhere else is corruption.
//! * I4 (sequence): batch seqs increase by exactly one over the whole log,
//!   across segments; segment seqs are contiguous. A gap is corruption (a lost
//!   write in the middle), never skipped.
//! * I5 (entry indexes): an appended entry's index is in `(checkpoint, last + 1]`;
//!   an index `<= last` truncates the log suffix from there (Raft's conflict
//!   rule), a `Checkpoint` beyond `last` restarts the log after it (snapshot).
//!   `last` is `max(last entry index, checkpoint index)`. Recovery replays the
//!   same rules and reports a violation as corruption.
//! * I6 (poison): once a write, fdatasync, rotation or repair fails, the `Wal`
//!   never writes again and every later append returns [`WalError::Poisoned`]
//!   (fsyncgate: a failed fsync may have dropped the dirty state; retrying it
//!   would report success for data that is gone). Restart and recover instead.
//!
//! # The tail block: each commit starts at a fresh block (padding)
//!
//! O_DIRECT writes whole blocks. If a commit re-wrote the partially filled
//! block that ends the previous commit, a power loss during that write could
//! tear data that was already acknowledged. We never do that: every batch
//! starts at a multiple of `BLOCK` (4096, the physical sector size of this
//! disk: logical 512, physical 4096) and is zero-padded to the next multiple.
//! Case by case, for commit `k` that writes blocks `[p, p + n)`, all zero on
//! disk by I2:
//!
//! * crash before the write is submitted: the disk holds batches `< k`;
//!   recovery reads a zero header at `p` and stops: exactly the acknowledged
//!   prefix.
//! * crash during the write, or after it but before fdatasync returned: each
//!   byte of `[p, p + n)` is old (zero) or new, in any pattern (we assume no
//!   atomicity at all, not even per sector). Bytes before `p` are not covered by
//!   this write, so acknowledged batches are intact (media assumption M1
//!   below). Batch `k` counts only if its header crc, every record crc, its
//!   record count and its body length all agree; otherwise recovery sees damage
//!   at `p`, finds no valid batch header of this WAL at any later block
//!   boundary (the only non-zero bytes after `p` are batch `k`'s), calls it a
//!   torn tail, zeroes `[p, last non-zero block)`, syncs, and continues at `p`.
//!   Batch `k` was never acknowledged, so losing it is allowed; if all of it
//!   reached the disk it is recovered, which is allowed too.
//! * crash after fdatasync returned but before the appenders were woken: batch
//!   `k` is durable and recovered although nobody heard back. Raft tolerates
//!   that (an unacknowledged entry may survive).
//! * fdatasync (or the write) fails: I6, poison. What reached the disk is
//!   decided by recovery exactly as in the crash cases.
//! * rotation: the next segment is prepared under `{seq}.wal.tmp` (fallocate,
//!   zero-fill, fdatasync), then its header and first batch are written and
//!   fdatasync'ed, then it is renamed to its final name and the directory is
//!   fsynced. A crash before the rename leaves a `.tmp` that open deletes; a
//!   crash after it leaves either the old or the new name, and the new file is
//!   complete either way. Older segments are never written again.
//! * release: whole segments are unlinked oldest first, the directory fsynced
//!   after each, so a crash leaves a contiguous run of segments.
//!
//! Rewriting the tail block instead would be safe only if the device wrote
//! each physical sector atomically (old or new, never garbage) and if our
//! in-memory copy of the block were exactly the durable bytes. Consumer SSDs
//! without power-loss protection do not promise the first, and with a 512-byte
//! logical / 4096-byte physical disk a 512-aligned rewrite is a read-modify-
//! write inside the device. Padding needs neither assumption.
//!
//! Space cost (measured by the `wal_bench` test, 256-byte payloads: a record
//! is 12 + 16 + 256 = 284 bytes): with one appender every commit is one record
//! in one 4 KiB block: 6.9% of the bytes written are records, 93.1% header
//! and padding. At 16 appenders (16 records per commit, 2 blocks) 55.5% are
//! records; at 256 appenders (~256 per commit) 98.6%. The disk does the same
//! 4 KiB write per commit either way (a rewrite also writes a whole block);
//! the cost is segment space: at one appender a 64 MiB segment holds ~16 k
//! commits, i.e. one rotation (and one background zero-fill of 64 MiB) every
//! ~1.6-2 s at ~8-10 k commits/s, and `max_wals` segments cover less time.
//!
//! # Torn tail vs corrupt middle
//!
//! Recovery scans segments in seq order and batches in file order. In the
//! last segment, damage at the write position with no valid batch of this WAL
//! at any later block boundary is a torn tail and is truncated. Anything else
//! is [`WalError::Corrupt`] with the file, offset and what is wrong: damage
//! followed by a valid batch, damage in an older segment, a batch seq gap, a
//! header that does not match its file name, an entry index that breaks I5,
//! non-zero bytes after the end of an older segment. Nothing is ever skipped.
//! Limit (shared with etcd, LevelDB, raft-engine): bit rot inside the very last
//! acknowledged batch, with nothing after it, looks exactly like a torn write
//! and is truncated.
//!
//! # Sync method: `O_DSYNC` writes, chosen by measurement
//!
//! `wal_bench` (release build; ext4 on virtio; the 2 cores shared with other
//! builds, so single cells swing 2-3x: medians of 3 rounds of 2 s cells,
//! [min-max] in brackets; 256-byte entries, default 64 MiB segments):
//!
//! | | DmaFdatasync | StdSyncData | ODsync |
//! |---|---|---|---|
//! | floor: 4 KiB write + sync, p50 | 110 us [108-122] | 100 us [99-107] | 97 us [79-100] |
//! | floor: writes+syncs/s | 6.7 k [6.0-7.4 k] | 4.8 k [2.1-8.5 k] | 6.6 k [5.7-9.3 k] |
//! | WAL, 1 appender: p50 / records/s | 110 us / 8.2 k | 94 us / 7.3 k | 87 us / 6.3 k [3.7-10.9 k] |
//! | WAL, 16 appenders: p50 / records/s | 115 us / 103 k | 113 us / 98 k | 96 us / 144 k [138-155 k] |
//! | WAL, 16 appenders: fsyncs/s | 6.4 k | 6.1 k | 9.0 k |
//! | WAL, 256 appenders: p50 / records/s | 265 us / 882 k | 200 us / 1045 k | 209 us / 1014 k |
//! | WAL, 256 appenders: fsyncs/s | 3.4 k | 4.1 k | 4.0 k |
//!
//! Records per sync: 1.0, 16.0 and 255.8. At 1 appender records/s is
//! dominated by multi-ms host stalls (p99 up to ~4 ms in some cells of every
//! method), so compare the p50s there. Replay (`open`) reads ~0.5 GB/s:
//! 240 k entries in two 64 MiB segments took 239 ms.
//!
//! DESIGN.md's "DmaFile fdatasync is 1.5-2x std sync_data" reproduced only
//! at 256 appenders (1.3x the p50); at 1 and 16 appenders the medians are
//! within ~15%. `StdSyncData` blocks the executor thread for every sync (no
//! request is parsed or answered on that core meanwhile). `ODsync` (segments
//! opened `O_DIRECT | O_DSYNC`, so a write completes only once durable: one
//! io_uring op per commit instead of two) had the lowest median latency at 1
//! and 16 appenders, is within 5% of the best at 256, and does not block the
//! executor, so it is the default. All three stay selectable
//! (`WalOptions::sync`) and the crash property test runs all three. Group
//! commit is the lever either way.
//!
//! # Media assumptions
//!
//! * M1: a write to one block range never changes bytes outside it.
//! * M2: after fdatasync (or an `O_DSYNC` write) returns success, the written
//!   bytes survive power loss (the device honours cache flushes / FUA).
//! * M3: the filesystem keeps a file's preallocated, zero-filled blocks in
//!   place: overwriting them needs no metadata update, so fdatasync persists
//!   data only (ext4 and xfs do). Segments are never grown by appending.
//! * Nothing is assumed about write atomicity, not even per sector.
//!
//! # glommio notes
//!
//! * Every segment file is created with std I/O and given a non-empty first
//!   block before it is opened as a `DmaFile`: if the first `DmaFile` an
//!   executor opens on a device is empty, glommio decides the device supports
//!   polled I/O and every later read fails with EOPNOTSUPP (upstream #605/#670).
//! * Files are opened with read+write `OpenOptions` (`DmaFile::create` is
//!   write-only). Buffers come from `DmaFile::alloc_dma_buffer` (4 KiB aligned;
//!   from the executor's `io_memory` pool, falling back to the heap).
//! * Dropping an `append` future does not cancel the append: its records are
//!   already queued in call order and will be written.
//!
//! # Testing crash behaviour
//!
//! [`Wal::position`] is the durable end. The tests (in `wal/tests.rs`) make
//! crashes by changing only bytes at or after it: zeroing from every byte
//! offset of the last batch, losing random blocks of it, truncating the file,
//! and "the disk right after sync k" for every k across rotations; a property
//! test drives random appends (Raft overwrites, checkpoints, rotations, all
//! three sync methods) against a model. Write-path faults are injected per
//! thread with `inject::fail_at(site, n)` at the failpoint sites below, so
//! poison, rotation and release failures are covered by the normal test run.
//!
//! # Failpoints (cargo feature `failpoints`)
//!
//! `wal::append::before_write`, `wal::append::after_write`,
//! `wal::append::before_fsync`, `wal::append::after_fsync`,
//! `wal::rotate::before_rename`, `wal::rotate::after_rename`,
//! `wal::release::before_remove`, `wal::recover::before_repair`. Configure with
//! `fail::cfg(name, "return")` (the site fails with an injected I/O error).
//! They fire only on threads that called `wal::failpoints::arm(true)`, so
//! tests in the same process that did not arm them are not disturbed; still,
//! `fail`'s registry is process-global, so run them under nextest (one process
//! per test): `cargo nextest run -p engine --features failpoints wal::`.

use std::io;
use std::path::PathBuf;

use bytes::Bytes;

mod format;
mod log;
mod recovery;
mod segment;

pub use format::BLOCK;
pub use log::Wal;

/// One Raft log entry. `data` is opaque to the WAL (raftcore encodes the
/// entry type and context into it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub index: u64,
    pub term: u64,
    pub data: Bytes,
}

/// Raft's hard state: persisted before any message that depends on it is sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: u64,
    pub vote: u64,
    pub commit: u64,
}

/// "The state machine up to `index` is durable in the B-tree file": entries
/// up to here are not replayed at recovery, and segments holding only such
/// entries may be released. Invariant: checkpoint indexes never decrease.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    pub index: u64,
    pub term: u64,
}

/// One WAL record. See `format.rs` for the bytes of each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Entry(Entry),
    HardState(HardState),
    Checkpoint(Checkpoint),
    /// Cluster/member identity; written at the start of every segment. An
    /// appended `Metadata` replaces it from then on.
    Metadata(Bytes),
}

/// What [`Wal::open`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The latest `Metadata` record.
    pub metadata: Bytes,
    /// The latest `HardState`, if one was ever appended.
    pub hard_state: Option<HardState>,
    /// The latest `Checkpoint`, if one was ever appended.
    pub checkpoint: Option<Checkpoint>,
    /// The live entries with index greater than the checkpoint's, in index
    /// order, contiguous (Raft's overwrites already applied).
    pub entries: Vec<Entry>,
    /// Set when a torn last batch was found and truncated.
    pub torn_tail: Option<TornTail>,
}

/// A truncated torn tail: where it was and what was wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub file: PathBuf,
    pub offset: u64,
    /// Bytes from `offset` that were re-zeroed.
    pub zeroed: u64,
    pub what: String,
}

/// How a commit is made durable after its O_DIRECT write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMethod {
    /// glommio `DmaFile::fdatasync` (an io_uring op; the executor keeps running).
    DmaFdatasync,
    /// `std::fs::File::sync_data` on a second descriptor: a blocking syscall
    /// that stalls the executor thread for its duration.
    StdSyncData,
    /// Open segments with `O_DSYNC`: the write itself completes only when
    /// durable (FUA or write + flush in the kernel), one io_uring op per commit.
    ODsync,
}

/// Tunables. `Default` is what ferrocd runs with.
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// Preallocated size of each segment; a multiple of [`BLOCK`], at least
    /// 16 blocks. etcd's is 64 MB; ours 64 MiB.
    pub segment_size: u64,
    /// Size of the first segment of a new WAL (capped at `segment_size`).
    /// Smaller than the others so that a new member does not zero-fill
    /// 64 MiB before it serves (measured: ~40 ms of a ~114 ms fresh start);
    /// the next segment, full size, is prepared in the background as usual.
    /// Each segment's header carries its own size, so readers need no
    /// setting.
    pub first_segment_size: u64,
    /// `release_to` keeps at least this many segments (etcd `--max-wals`, 5).
    pub max_wals: usize,
    pub sync: SyncMethod,
    /// Prepare (fallocate + zero-fill) the next segment in the background
    /// once the active one is a quarter full, so rotation does not stall
    /// appends.
    pub prepare_next: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size: 64 << 20,
            first_segment_size: 4 << 20,
            max_wals: 5,
            sync: DEFAULT_SYNC,
            prepare_next: true,
        }
    }
}

/// Chosen by measurement on the project machine (module doc, "Sync method").
pub const DEFAULT_SYNC: SyncMethod = SyncMethod::ODsync;

/// Counters since open; cheap to read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Calls of `append` with at least one record.
    pub appends: u64,
    pub records: u64,
    /// Commits (one write each), rotation batches excluded.
    pub batches: u64,
    /// Durability barriers issued (fdatasync calls, or O_DSYNC writes).
    pub syncs: u64,
    /// Bytes written by commits, padding included.
    pub bytes_written: u64,
    /// Of those, bytes of encoded records (the rest is batch headers and padding).
    pub record_bytes: u64,
    pub rotations: u64,
}

/// Where the next batch will be written: the durable end of the log. Crash
/// tests cut files at or after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalPosition {
    pub segment: PathBuf,
    pub offset: u64,
}

/// Why a WAL operation failed. Every variant is a fact a caller acts on.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// An I/O call failed. On the write path this also poisons the `Wal`.
    #[error("wal: {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A bad record, header or sequence that is not a torn tail. The member
    /// must stop (etcd raises the CORRUPT alarm); nothing was skipped.
    #[error("wal corrupt: {file}: offset {offset}: {what}")]
    Corrupt {
        file: PathBuf,
        offset: u64,
        what: String,
    },
    /// An earlier write or fdatasync failed; this `Wal` accepts no more
    /// appends. Restart and recover.
    #[error("wal: poisoned by an earlier write/sync failure ({cause}); restart to recover")]
    Poisoned { cause: String },
    /// `open` found no segment in the directory.
    #[error("wal: no segments in {dir}")]
    NotFound { dir: PathBuf },
    /// `create` found segments already there.
    #[error("wal: {dir} already holds a wal")]
    AlreadyExists { dir: PathBuf },
    /// One append (or the metadata) is too large for a segment.
    #[error("wal: {what} of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        what: &'static str,
        size: u64,
        max: u64,
    },
    /// An entry or checkpoint breaks the index rules (invariant I5).
    #[error("wal: {what}")]
    OutOfOrder { what: String },
    /// `entries(lo, hi)` asked for entries the WAL does not hold.
    #[error("wal: entries [{lo}, {hi}) unavailable: the wal holds [{first}, {last}]")]
    Unavailable {
        lo: u64,
        hi: u64,
        first: u64,
        last: u64,
    },
    /// The `Wal` was closed.
    #[error("wal: closed")]
    Closed,
    /// The directory's file system cannot do what the WAL needs.
    #[error("wal: unsupported: {what}")]
    Unsupported { what: String },
}

impl WalError {
    fn io(op: &'static str, path: impl Into<PathBuf>, source: impl Into<io::Error>) -> WalError {
        WalError::Io {
            op,
            path: path.into(),
            source: source.into(),
        }
    }

    fn corrupt(file: impl Into<PathBuf>, offset: u64, what: impl Into<String>) -> WalError {
        WalError::Corrupt {
            file: file.into(),
            offset,
            what: what.into(),
        }
    }
}

/// Failpoint arming (feature `failpoints`): the sites fire only on threads
/// that armed them.
#[cfg(feature = "failpoints")]
pub mod failpoints {
    use std::cell::Cell;

    thread_local! {
        static ARMED: Cell<bool> = const { Cell::new(false) };
    }

    /// Let the WAL failpoints configured with `fail::cfg` fire on this thread.
    pub fn arm(on: bool) {
        ARMED.with(|a| a.set(on));
    }

    pub(super) fn armed() -> bool {
        ARMED.with(|a| a.get())
    }
}

/// Test-only fault injection without the `fail` crate: per thread, "fail
/// the n-th time site X is reached". Lets the normal test run cover the
/// poison paths; the `fail`-based tests cover the feature itself.
#[cfg(test)]
pub(crate) mod inject {
    use std::cell::RefCell;
    use std::collections::HashMap;

    thread_local! {
        static SITES: RefCell<HashMap<&'static str, u32>> = RefCell::new(HashMap::new());
    }

    /// Fail the `nth` (1-based) hit of `site` on this thread.
    pub fn fail_at(site: &'static str, nth: u32) {
        SITES.with(|s| s.borrow_mut().insert(site, nth));
    }

    pub fn clear() {
        SITES.with(|s| s.borrow_mut().clear());
    }

    pub fn hit(site: &'static str) -> bool {
        SITES.with(|s| {
            let mut s = s.borrow_mut();
            match s.get_mut(site) {
                Some(n) if *n <= 1 => {
                    s.remove(site);
                    true
                }
                Some(n) => {
                    *n -= 1;
                    false
                }
                None => false,
            }
        })
    }
}

/// `failpoint!("wal::x::y", path)`: with feature `failpoints`, on an armed
/// thread, a `return` action makes the enclosing fn return an injected
/// `WalError::Io`; in tests, so does `inject::fail_at`. Otherwise it compiles
/// to nothing.
macro_rules! failpoint {
    ($name:literal, $path:expr) => {
        #[cfg(test)]
        {
            if crate::wal::inject::hit($name) {
                return Err(crate::wal::WalError::Io {
                    op: $name,
                    path: std::path::PathBuf::from($path),
                    source: std::io::Error::other(concat!("injected at ", $name)),
                });
            }
        }
        #[cfg(feature = "failpoints")]
        {
            if crate::wal::failpoints::armed() {
                if let Some(e) = fail::eval($name, |_| crate::wal::WalError::Io {
                    op: $name,
                    path: std::path::PathBuf::from($path),
                    source: std::io::Error::other(concat!("injected by failpoint ", $name)),
                }) {
                    return Err(e);
                }
            }
        }
    };
}
pub(crate) use failpoint;

#[cfg(test)]
mod tests;

#[cfg(all(test, feature = "failpoints"))]
mod failpoint_tests;

#[cfg(test)]
mod bench;
