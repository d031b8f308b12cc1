//! The seam between the B-tree and the bytes of its file.
//!
//! Everything the B-tree writes or (on the `pread` path) reads goes through
//! [`Storage`], so the crash tests can swap the file for an in-memory disk that
//! keeps what was written apart from what a completed sync made durable
//! (`storage::mem`, tests only). The file-backed impl and the one `unsafe`
//! site of the module (the memory map) live in `storage::file`.

use std::io;

pub(crate) mod file;
#[cfg(test)]
pub(crate) mod mem;

pub(crate) use file::{FileStorage, Mapping};

/// Positional I/O on one file. Implementations are shared by the writer and
/// every reader, so all methods take `&self`.
pub(crate) trait Storage: Send + Sync + 'static {
    /// Fills `buf` from `off`; reading past the end is an error
    /// (`UnexpectedEof`).
    fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes all of `buf` at `off`, extending the file if needed. Not durable
    /// until a later [`sync`](Storage::sync) returns `Ok`.
    fn write_at(&self, off: u64, buf: &[u8]) -> io::Result<()>;
    /// `fdatasync`: every write and length change before it is durable once it
    /// returns `Ok`. After an `Err` nothing is known (the caller poisons).
    fn sync(&self) -> io::Result<()>;
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Grows (with zeros) or truncates the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// A read-only shared mapping of the first `len` bytes, if this backend
    /// has one. Only the file backend does.
    fn map(&self, _len: u64) -> io::Result<Option<Mapping>> {
        Ok(None)
    }
}
