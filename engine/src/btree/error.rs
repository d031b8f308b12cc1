//! The errors a caller of the B-tree file acts on.

/// Why a B-tree operation failed. Each variant is a fact the caller acts on:
/// `Corrupt` stops the member (etcd's CORRUPT alarm), `Poisoned` means the
/// store must be reopened (after fixing the disk) before it takes writes again,
/// `Io` is an operating-system error, the rest are caller mistakes that changed
/// nothing.
#[derive(Debug, thiserror::Error)]
pub enum BtreeError {
    /// Bytes on disk failed a checksum or a structural check. `page` is the
    /// page id (0 and 1 are the meta pages).
    #[error("btree: corrupt page {page}: {what}")]
    Corrupt { page: u64, what: &'static str },
    /// An earlier fsync or write of a commit failed, so the durable state of
    /// the file is unknown (fsyncgate). The store keeps serving reads of the
    /// last good commit and refuses writes until reopened.
    #[error("btree: store poisoned by an earlier I/O failure; refusing writes")]
    Poisoned,
    /// The file has a valid meta page of a format version this build cannot
    /// read.
    #[error("btree: unsupported file format version {found}")]
    UnsupportedVersion { found: u32 },
    /// The named bucket does not exist.
    #[error("btree: bucket {0:?} not found")]
    BucketNotFound(String),
    /// Key longer than the format allows (`MAX_KEY_LEN`).
    #[error("btree: key of {len} bytes exceeds the limit of {max}")]
    KeyTooLarge { len: usize, max: usize },
    /// Value longer than the store accepts (`MAX_VALUE_LEN`).
    #[error("btree: value of {len} bytes exceeds the limit of {max}")]
    ValueTooLarge { len: usize, max: usize },
    /// An operating-system error (open, read, write, sync, mmap).
    #[error("btree: I/O error: {0}")]
    Io(#[from] std::io::Error),
}
