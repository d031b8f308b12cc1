//! Segment files: preparing (create, fallocate, zero-fill), opening, reading,
//! block writes and the three sync methods. Every error names its file.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaBuffer, DmaFile, OpenOptions};

use super::format::{self, BLOCK};
use super::{SyncMethod, WalError};

/// Zero-fill and repair write size: large enough to stream, small enough to
/// share the disk with commits.
const ZERO_CHUNK: usize = 1 << 20;
/// Read size for scanning a segment at open.
const READ_CHUNK: usize = 1 << 20;

/// An open segment file.
pub(super) struct SegFile {
    pub path: PathBuf,
    pub dma: Rc<DmaFile>,
    /// A second, ordinary descriptor, only for `SyncMethod::StdSyncData`.
    pub std: Option<fs::File>,
}

impl SegFile {
    /// Opens an existing, non-empty file (see the glommio note in the module
    /// doc of `wal`: never open an empty file as the first `DmaFile`).
    pub async fn open(path: &Path, sync: SyncMethod) -> Result<SegFile, WalError> {
        let mut oo = OpenOptions::new();
        oo.read(true).write(true);
        if sync == SyncMethod::ODsync {
            oo.custom_flags(libc::O_DSYNC);
        }
        let dma = oo
            .dma_open(path)
            .await
            .map_err(|e| WalError::io("open", path, e))?;
        if dma.alignment() > BLOCK || !BLOCK.is_multiple_of(dma.alignment()) {
            let a = dma.alignment();
            let _ = dma.close().await;
            return Err(WalError::Unsupported {
                what: format!(
                    "{}: O_DIRECT alignment {a} does not divide the block size {BLOCK}",
                    path.display()
                ),
            });
        }
        let std = match sync {
            SyncMethod::StdSyncData => Some(
                fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .map_err(|e| WalError::io("open", path, e))?,
            ),
            _ => None,
        };
        Ok(SegFile {
            path: path.to_path_buf(),
            dma: Rc::new(dma),
            std,
        })
    }

    /// Writes `buf` (a whole number of blocks) at `pos`, all of it or an error.
    pub async fn write_at(&self, buf: DmaBuffer, pos: u64) -> Result<(), WalError> {
        let len = buf.len();
        debug_assert!(pos.is_multiple_of(BLOCK) && (len as u64).is_multiple_of(BLOCK));
        let n = self
            .dma
            .write_at(buf, pos)
            .await
            .map_err(|e| WalError::io("write", &self.path, e))?;
        if n != len {
            return Err(WalError::io(
                "write",
                &self.path,
                std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    format!("short write: {n} of {len} bytes at {pos}"),
                ),
            ));
        }
        Ok(())
    }

    /// Makes everything written so far durable. With `ODsync` the writes
    /// already were; this is then a no-op.
    pub async fn sync(&self, method: SyncMethod) -> Result<(), WalError> {
        match method {
            SyncMethod::DmaFdatasync => self
                .dma
                .fdatasync()
                .await
                .map_err(|e| WalError::io("fdatasync", &self.path, e)),
            SyncMethod::StdSyncData => match &self.std {
                Some(f) => f
                    .sync_data()
                    .map_err(|e| WalError::io("fdatasync", &self.path, e)),
                None => self
                    .dma
                    .fdatasync()
                    .await
                    .map_err(|e| WalError::io("fdatasync", &self.path, e)),
            },
            SyncMethod::ODsync => Ok(()),
        }
    }

    /// A zeroed DMA buffer of `len` bytes (DMA buffers come uninitialised).
    pub fn zeroed_buffer(&self, len: usize) -> DmaBuffer {
        let mut b = self.dma.alloc_dma_buffer(len);
        b.as_bytes_mut().fill(0);
        b
    }

    /// Writes zeros over `[from, to)` (block aligned), without syncing.
    pub async fn zero_range(&self, from: u64, to: u64) -> Result<(), WalError> {
        let mut pos = from;
        while pos < to {
            let n = ((to - pos) as usize).min(ZERO_CHUNK);
            self.write_at(self.zeroed_buffer(n), pos).await?;
            pos += n as u64;
        }
        Ok(())
    }

    /// Reads the first `len` bytes of the file (fewer if it is shorter).
    pub async fn read_prefix(&self, len: u64) -> Result<Vec<u8>, WalError> {
        let mut out = Vec::with_capacity(len as usize);
        let mut pos = 0u64;
        while pos < len {
            let want = ((len - pos) as usize).min(READ_CHUNK);
            let want_aligned = format::align_up(want as u64) as usize;
            let r = self
                .dma
                .read_at_aligned(pos, want_aligned)
                .await
                .map_err(|e| WalError::io("read", &self.path, e))?;
            let got = r.len().min(want);
            out.extend_from_slice(&r[..got]);
            if r.len() < want_aligned {
                break; // end of file
            }
            pos += got as u64;
        }
        Ok(out)
    }

    /// Reads `len` bytes at any `pos`.
    pub async fn read_exact_at(&self, pos: u64, len: usize) -> Result<Vec<u8>, WalError> {
        let r = self
            .dma
            .read_at(pos, len)
            .await
            .map_err(|e| WalError::io("read", &self.path, e))?;
        if r.len() != len {
            return Err(WalError::corrupt(
                &self.path,
                pos,
                format!("short read: {} of {len} bytes", r.len()),
            ));
        }
        Ok(r.to_vec())
    }

    pub async fn close(self) {
        // Other `Rc`s (an `entries` read in flight) close it when dropped.
        let _ = self.dma.close_rc().await;
    }
}

/// Creates `dir/{seq}.wal.tmp` of `size` bytes: allocated, zero-filled and
/// synced, so that later commits overwrite allocated blocks and fdatasync
/// never has to persist allocation metadata (media assumption M3).
pub(super) async fn prepare(
    dir: &Path,
    seq: u64,
    size: u64,
    sync: SyncMethod,
) -> Result<SegFile, WalError> {
    let path = dir.join(format::tmp_name(seq));
    // Block 0 through std I/O first: the file is non-empty before glommio
    // sees it (EOPNOTSUPP pitfall).
    {
        let mut f = fs::File::create(&path).map_err(|e| WalError::io("create", &path, e))?;
        f.write_all(&[0u8; BLOCK as usize])
            .map_err(|e| WalError::io("write", &path, e))?;
    }
    let f = SegFile::open(&path, sync).await?;
    f.dma
        .pre_allocate(size, false)
        .await
        .map_err(|e| WalError::io("fallocate", &path, e))?;
    // fallocate alone leaves "unwritten" extents whose first write costs a
    // metadata update at fdatasync; writing zeros once makes them plain data.
    f.zero_range(BLOCK, size).await?;
    f.dma
        .fdatasync()
        .await
        .map_err(|e| WalError::io("fdatasync", &path, e))?;
    Ok(f)
}

/// fsyncs a directory, so that a rename, create or unlink in it is durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| WalError::io("fsync dir", dir, e))
}

/// `(seq, first_index, path)` of each segment, and the leftover `.tmp` files.
pub(super) type Listing = (Vec<(u64, u64, PathBuf)>, Vec<PathBuf>);

/// Segment files in `dir`, sorted by seq, and leftover `.tmp` files.
pub(super) fn list(dir: &Path) -> Result<Listing, WalError> {
    let mut segs = Vec::new();
    let mut tmps = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((segs, tmps)),
        Err(e) => return Err(WalError::io("read dir", dir, e)),
    };
    for ent in rd {
        let ent = ent.map_err(|e| WalError::io("read dir", dir, e))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some((seq, first)) = format::parse_segment_name(name) {
            segs.push((seq, first, ent.path()));
        } else if name.ends_with(format::TMP_SUFFIX) {
            tmps.push(ent.path());
        }
    }
    segs.sort_by_key(|s| s.0);
    Ok((segs, tmps))
}
