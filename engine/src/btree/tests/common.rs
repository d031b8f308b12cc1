//! Helpers shared by the B-tree tests: temp dirs, the model, db dumps.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::btree::storage::mem::MemDisk;
use crate::btree::{BtreeError, Db, Options, ReadTxn};

/// Bucket → key → value.
pub(crate) type Model = BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>;

/// A directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "ferrocd-btree-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn open_mem(disk: &Arc<MemDisk>) -> Result<Db, BtreeError> {
    Db::open_storage(
        disk.clone(),
        Options {
            read_mode: crate::btree::ReadMode::Pread { cache_pages: 64 },
            verify_checksums: true,
        },
        None,
    )
}

/// Everything a snapshot holds.
pub(crate) fn dump_txn(r: &ReadTxn) -> Result<Model, BtreeError> {
    let mut m = Model::new();
    for b in r.buckets() {
        let mut entries = BTreeMap::new();
        for item in r.range(&b, ..)? {
            let (k, v) = item?;
            entries.insert(k, v);
        }
        m.insert(b, entries);
    }
    Ok(m)
}

pub(crate) fn dump(db: &Db) -> Result<Model, BtreeError> {
    dump_txn(&db.begin_read())
}

/// A value of `len` bytes derived from `seed`.
pub(crate) fn value(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Tiny deterministic RNG (xorshift64*).
pub(crate) struct Rng(pub u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
