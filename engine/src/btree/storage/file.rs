//! The file-backed [`Storage`] and the read-only memory map.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};

use super::Storage;
use crate::btree::format::{PageId, PAGE, PAGE_SIZE};

/// A B-tree file opened read-write.
pub(crate) struct FileStorage {
    file: File,
}

impl FileStorage {
    /// Opens `path`, creating it if missing. A new file's directory entry is
    /// made durable (fsync of the parent directory) before this returns, so a
    /// crash cannot lose a file that later commits were synced into.
    pub(crate) fn open(path: &Path) -> io::Result<FileStorage> {
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if !existed {
            sync_parent_dir(path)?;
        }
        Ok(FileStorage { file })
    }
}

/// fsync of `path`'s directory, after creating or renaming `path`.
pub(crate) fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

impl Storage for FileStorage {
    fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, off)
    }
    fn write_at(&self, off: u64, buf: &[u8]) -> io::Result<()> {
        self.file.write_all_at(buf, off)
    }
    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    fn map(&self, len: u64) -> io::Result<Option<Mapping>> {
        let len = usize::try_from(len).map_err(io::Error::other)?;
        let raw = MmapOptions::new().len(len).map_raw_read_only(&self.file)?;
        let words = (len / PAGE_SIZE).div_ceil(64);
        let verified = (0..words).map(|_| AtomicU64::new(0)).collect();
        Ok(Some(Mapping { raw, verified }))
    }
}

/// A read-only `MAP_SHARED` mapping of the file's first `len()` bytes.
///
/// `MmapRaw` hands out no references, only a pointer; [`Mapping::page`] turns
/// one page of it into a slice. That is the only `unsafe` in the B-tree.
pub(crate) struct Mapping {
    raw: MmapRaw,
    /// One bit per page: its CRC was checked through this mapping since the
    /// writer last wrote it. Saves the CRC on every later access (measured in
    /// btree.rs). The writer clears a page's bit after writing the page and
    /// before publishing the commit that makes it reachable; a new mapping
    /// starts with every bit clear.
    verified: Box<[AtomicU64]>,
}

impl Mapping {
    pub(crate) fn len(&self) -> u64 {
        self.raw.len() as u64
    }

    fn bit(&self, id: PageId) -> Option<(&AtomicU64, u64)> {
        let word = self.verified.get(usize::try_from(id / 64).ok()?)?;
        Some((word, 1 << (id % 64)))
    }

    pub(crate) fn is_verified(&self, id: PageId) -> bool {
        self.bit(id)
            .is_some_and(|(w, b)| w.load(Ordering::Acquire) & b != 0)
    }

    pub(crate) fn set_verified(&self, id: PageId) {
        if let Some((w, b)) = self.bit(id) {
            w.fetch_or(b, Ordering::AcqRel);
        }
    }

    pub(crate) fn clear_verified(&self, id: PageId) {
        if let Some((w, b)) = self.bit(id) {
            w.fetch_and(!b, Ordering::AcqRel);
        }
    }

    /// The bytes of page `id`, or `None` if the mapping does not cover it.
    ///
    /// Contract (kept by `pages::Reader`, the only caller): `id` is below the
    /// page count of a snapshot that the caller keeps registered (a `ReadTxn`)
    /// or that is the writer's own base snapshot, for as long as the slice
    /// lives.
    pub(crate) fn page(&self, id: PageId) -> Option<&[u8]> {
        let off = id.checked_mul(PAGE)?;
        let end = off.checked_add(PAGE)?;
        if end > self.len() {
            return None;
        }
        let off = usize::try_from(off).ok()?;
        #[expect(
            unsafe_code,
            reason = "reading a page through the memory map (measured faster than pread + cache, see btree.rs)"
        )]
        // SAFETY:
        // * In bounds: `off + PAGE_SIZE <= self.raw.len()` was checked above, and the
        //   mapping lives as long as `&self`, which the returned slice borrows.
        // * No SIGBUS: the file is never truncated below the page count of any
        //   snapshot that is still registered (the truncation in `Db::commit` runs only
        //   when no reader of an older snapshot is alive), and the caller only asks for
        //   pages below its snapshot's page count.
        // * No write while borrowed: the slice is only taken for a page below the
        //   snapshot's page count, and the pages the writer writes are free pages that
        //   no live snapshot can reach (Invariant: a page reachable from a registered
        //   snapshot or from the durable meta is never written; see btree.rs). A corrupt
        //   child pointer can still name a page that the writer is filling right now;
        //   then the bytes read are garbage that fails the page checksum or structure
        //   checks, as when another process writes a mapped file: the inherent mmap
        //   hazard that memmap2 documents, accepted here and never turned into a panic.
        let page = unsafe { std::slice::from_raw_parts(self.raw.as_ptr().add(off), PAGE_SIZE) };
        Some(page)
    }
}
