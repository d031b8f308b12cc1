//! An in-memory disk for crash tests: it keeps the bytes every write produced
//! (`live`, what reads see) apart from the bytes a completed sync made durable,
//! and can build the image a power cut would leave behind.
//!
//! Crash model (the media assumptions of btree.rs): after a crash the file holds
//! the durable image plus any subset of the writes issued since the last
//! completed sync, each of which may be torn (any subset of its 512-byte sectors,
//! one sector possibly cut mid-way). A failing sync makes the disk dead: every
//! later call errors, like a machine that lost power during the sync.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use super::Storage;

#[derive(Default)]
struct MemState {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Writes since the last completed sync, in issue order.
    unsynced: Vec<(u64, Vec<u8>)>,
    /// Syncs called so far (the failing one included).
    syncs: u64,
    /// The sync with this 1-based number fails and the disk dies.
    crash_at: Option<u64>,
    /// The sync with this 1-based number fails (EIO) but the disk lives on.
    fail_at: Option<u64>,
    dead: bool,
}

#[derive(Default)]
pub(crate) struct MemDisk {
    st: Mutex<MemState>,
}

/// Which not-yet-synced writes a crash image keeps.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Survivors {
    /// Only what completed syncs made durable.
    None,
    /// Every write issued, whole (the power failed just before the sync
    /// returned).
    All,
    /// A pseudo-random subset of 512-byte sectors, one possibly cut mid-way.
    Torn(u64),
}

fn dead() -> io::Error {
    io::Error::other("memdisk: simulated power loss")
}

impl MemDisk {
    pub(crate) fn new() -> Arc<MemDisk> {
        Arc::new(MemDisk::default())
    }

    /// A disk whose durable (and live) content is `image`.
    pub(crate) fn from_image(image: Vec<u8>) -> Arc<MemDisk> {
        Arc::new(MemDisk {
            st: Mutex::new(MemState {
                live: image.clone(),
                durable: image,
                ..MemState::default()
            }),
        })
    }

    fn st(&self) -> MutexGuard<'_, MemState> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the `k`-th sync (1-based, counted from now) fail and kill the disk.
    pub(crate) fn crash_at_sync(&self, k: u64) {
        let mut st = self.st();
        st.crash_at = Some(st.syncs + k);
    }

    /// Makes the `k`-th sync from now fail with an I/O error, leaving the disk
    /// readable (fsyncgate: the kernel reports EIO and drops dirty pages).
    pub(crate) fn fail_sync(&self, k: u64) {
        let mut st = self.st();
        st.fail_at = Some(st.syncs + k);
    }

    pub(crate) fn syncs(&self) -> u64 {
        self.st().syncs
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.st().dead
    }

    /// The live bytes (what a clean shutdown would leave).
    pub(crate) fn live(&self) -> Vec<u8> {
        self.st().live.clone()
    }

    /// The file a crash right now would leave behind.
    pub(crate) fn crash_image(&self, survivors: Survivors) -> Vec<u8> {
        let st = self.st();
        let mut img = st.durable.clone();
        let mut rng = match survivors {
            Survivors::Torn(seed) => seed | 1,
            _ => 1,
        };
        let mut next = move || {
            // xorshift64
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for (off, data) in &st.unsynced {
            let off = *off as usize;
            match survivors {
                Survivors::None => {}
                Survivors::All => apply(&mut img, off, data),
                Survivors::Torn(_) => {
                    for (i, sector) in data.chunks(512).enumerate() {
                        match next() % 4 {
                            0 | 1 => {}
                            2 => apply(&mut img, off + i * 512, sector),
                            _ => {
                                let cut = (next() as usize) % (sector.len() + 1);
                                apply(&mut img, off + i * 512, &sector[..cut]);
                            }
                        }
                    }
                }
            }
        }
        img
    }
}

fn apply(img: &mut Vec<u8>, off: usize, data: &[u8]) {
    if img.len() < off + data.len() {
        img.resize(off + data.len(), 0);
    }
    img[off..off + data.len()].copy_from_slice(data);
}

impl Storage for MemDisk {
    fn read_at(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
        let st = self.st();
        if st.dead {
            return Err(dead());
        }
        let off = off as usize;
        let src = st
            .live
            .get(off..off + buf.len())
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_at(&self, off: u64, buf: &[u8]) -> io::Result<()> {
        let mut st = self.st();
        if st.dead {
            return Err(dead());
        }
        apply(&mut st.live, off as usize, buf);
        st.unsynced.push((off, buf.to_vec()));
        Ok(())
    }
    fn sync(&self) -> io::Result<()> {
        let mut st = self.st();
        if st.dead {
            return Err(dead());
        }
        st.syncs += 1;
        if st.crash_at == Some(st.syncs) {
            st.dead = true;
            return Err(dead());
        }
        if st.fail_at == Some(st.syncs) {
            return Err(io::Error::other("memdisk: injected fsync failure"));
        }
        st.durable = st.live.clone();
        st.unsynced.clear();
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        let st = self.st();
        if st.dead {
            return Err(dead());
        }
        Ok(st.live.len() as u64)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut st = self.st();
        if st.dead {
            return Err(dead());
        }
        st.live.resize(len as usize, 0);
        Ok(())
    }
}
