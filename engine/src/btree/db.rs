//! The database: open, snapshots, the write txn and the commit protocol.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use super::cursor::Range;
use super::error::BtreeError;
use super::format::{
    self, Meta, PageBuf, PageId, FIRST_DATA_PAGE, FREELIST_RUNS_PER_PAGE, MAX_KEY_LEN,
    MAX_VALUE_LEN, NO_PAGE, PAGE, PAGE_SIZE,
};
use super::pages::{PageCache, Reader};
use super::storage::{self, FileStorage, Mapping, Storage};
use super::tree::{Alloc, Cow, MemValue, NodeRef, Src, ValRef, MAX_DEPTH};

/// Failpoints are process-global; a test arms them for its own thread so that
/// other tests committing concurrently in the same binary are not hit, or
/// (tests of the layers above, whose commits run on a thread they do not
/// own) for every thread of the process.
#[cfg(feature = "failpoints")]
pub(crate) mod fp {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicBool, Ordering};
    thread_local!(static ARMED: Cell<bool> = const { Cell::new(false) });
    static ALL: AtomicBool = AtomicBool::new(false);
    pub(crate) fn armed() -> bool {
        ALL.load(Ordering::SeqCst) || ARMED.with(|a| a.get())
    }
    /// Arms the B-tree failpoints on every thread (feature `failpoints`).
    pub fn arm_all_threads(on: bool) {
        ALL.store(on, Ordering::SeqCst);
    }
    #[cfg(test)]
    pub(crate) fn arm(on: bool) {
        ARMED.with(|a| a.set(on));
    }
}

/// A failpoint named after its site; an armed `return` makes the enclosing
/// `io::Result` function fail, `panic` simulates a crash at that point.
macro_rules! failpoint {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        fail::fail_point!($name, fp::armed(), |_| Err(io::Error::other(concat!(
            "failpoint ",
            $name
        ))));
    };
}

/// How readers get at pages (see "Read path" in btree.rs for the measurement).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// Read through a shared read-only memory map of the file.
    Mmap,
    /// `pread` each page, keeping up to `cache_pages` pages in a shared cache
    /// (0: no cache).
    Pread { cache_pages: usize },
}

/// Settings for [`Db::open`].
#[derive(Clone, Debug)]
pub struct Options {
    pub read_mode: ReadMode,
    /// Check the CRC of every page a reader touches through the memory map
    /// (pages read with `pread` are always checked once when loaded).
    pub verify_checksums: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            read_mode: ReadMode::Mmap,
            verify_checksums: true,
        }
    }
}

/// Sizes for etcd's `dbSize` / `dbSizeInUse`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    /// Txn id of the last commit (in this file: a defrag's new file
    /// counts from 1 again).
    pub txn_id: u64,
    /// Length of the file in bytes (etcd's `dbSize`); it includes
    /// preallocated room past `page_count`.
    pub file_size: u64,
    pub page_size: u64,
    /// Pages that belong to the database (metas, trees, free list, free).
    pub page_count: u64,
    /// Pages in the free list (reusable now or once older readers finish).
    pub free_pages: u64,
    /// `(page_count - free_pages) * page_size` (etcd's `dbSizeInUse`).
    pub in_use_bytes: u64,
}

/// What [`Db::compact_into`] copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactReport {
    /// The snapshot (txn id) that was copied; writes after it are not in the copy.
    pub txn_id: u64,
    pub keys: u64,
    pub source_file_size: u64,
    pub compacted_file_size: u64,
}

/// What [`Db::check_integrity`] walked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntegrityReport {
    pub txn_id: u64,
    pub page_count: u64,
    pub tree_pages: u64,
    pub overflow_pages: u64,
    pub freelist_pages: u64,
    pub free_pages: u64,
    /// Bucket name and number of keys.
    pub buckets: Vec<(String, u64)>,
}

/// A bucket as recorded in the catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BucketDesc {
    pub root: PageId,
    pub count: u64,
}

const DESC_LEN: usize = 16;

impl BucketDesc {
    fn encode(&self) -> [u8; DESC_LEN] {
        let mut b = [0u8; DESC_LEN];
        b[..8].copy_from_slice(&self.root.to_le_bytes());
        b[8..].copy_from_slice(&self.count.to_le_bytes());
        b
    }
    fn decode(b: &[u8], meta: &Meta) -> Result<BucketDesc, BtreeError> {
        let bad = BtreeError::Corrupt {
            page: meta.catalog_root,
            what: "bad bucket descriptor in the catalog",
        };
        let (Some(r), Some(c)) = (b.get(..8), b.get(8..16)) else {
            return Err(bad);
        };
        let root = u64::from_le_bytes(r.try_into().map_err(|_| BtreeError::Corrupt {
            page: 0,
            what: "descriptor",
        })?);
        let count = u64::from_le_bytes(c.try_into().map_err(|_| BtreeError::Corrupt {
            page: 0,
            what: "descriptor",
        })?);
        if b.len() != DESC_LEN
            || (root != NO_PAGE && !(FIRST_DATA_PAGE..meta.page_count).contains(&root))
        {
            return Err(bad);
        }
        Ok(BucketDesc { root, count })
    }
    fn root_ref(&self) -> Option<NodeRef> {
        (self.root != NO_PAGE).then_some(NodeRef::Page(self.root))
    }
}

type Buckets = Arc<BTreeMap<Vec<u8>, BucketDesc>>;

/// The published state: what a new reader sees.
pub(crate) struct State {
    meta: Meta,
    buckets: Buckets,
    map: Option<Arc<Mapping>>,
    /// Registered readers per snapshot txn id.
    readers: BTreeMap<u64, usize>,
    /// Current file length.
    file_len: u64,
}

/// The allocator, owned by whoever holds the write lock.
pub(crate) struct WriterState {
    /// Pages no live snapshot and no durable meta can reach: reusable now.
    free: BTreeSet<PageId>,
    /// Pages freed by txn `F`, not yet reusable: a reader of a snapshot older
    /// than `F` may still read them. Invariant: `F <=` the last durable txn.
    pending: Vec<(u64, Vec<PageId>)>,
    /// The free-list pages of the durable meta (freed by the next commit).
    freelist_pages: Vec<PageId>,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Storage>,
    pub(crate) cache: Option<PageCache>,
    pub(crate) verify_checksums: bool,
    use_mmap: bool,
    state: Mutex<State>,
    /// Locked by the writer only while it commits (the Db's write lock
    /// serialises writers; this one guards the allocator of this file).
    writer: Mutex<WriterState>,
    path: Option<PathBuf>,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn writer(&self) -> MutexGuard<'_, WriterState> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A B-tree file: named buckets of sorted byte keys, one writer, many
/// snapshot readers.
///
/// The open file is an `Arc<Inner>` that an online defrag
/// ([`Db::defrag_online`]) replaces by the rewritten file; every snapshot
/// holds the `Arc` of the file it was taken from, so it keeps reading a
/// consistent image (the old file stays open, unlinked, until its last
/// reader is gone).
pub struct Db {
    current: RwLock<Arc<Inner>>,
    /// Serialises writers and defrag. Held by a [`WriteTxn`] for its whole
    /// life, so the file cannot be swapped under it.
    write_lock: Mutex<()>,
    /// Set when a commit's I/O failed (fsyncgate): no more writes.
    poisoned: AtomicBool,
    opts: Options,
}

/// Extra room the file grows by beyond what a commit needs, so the map is not
/// redone on every commit: a quarter of the size, between 256 KiB and 64 MiB.
fn grow_target(needed: u64) -> u64 {
    let slack = (needed / 4).clamp(256 << 10, 64 << 20);
    (needed + slack).div_ceil(PAGE) * PAGE
}

impl Db {
    /// Opens the B-tree file at `path`, creating an empty one if it does not
    /// exist. Recovers to the newest meta page whose checksum is valid.
    pub fn open(path: impl AsRef<Path>, opts: Options) -> Result<Db, BtreeError> {
        let path = path.as_ref();
        // A copy left by a defrag that crashed before its rename.
        let stale = defrag_tmp_path(path);
        if stale.exists() {
            std::fs::remove_file(&stale)?;
        }
        let store: Arc<dyn Storage> = Arc::new(FileStorage::open(path)?);
        Db::open_storage(store, opts, Some(path.to_path_buf()))
    }

    pub(crate) fn open_storage(
        store: Arc<dyn Storage>,
        opts: Options,
        path: Option<PathBuf>,
    ) -> Result<Db, BtreeError> {
        let inner = open_inner(store, &opts, path)?;
        Ok(Db {
            current: RwLock::new(inner),
            write_lock: Mutex::new(()),
            poisoned: AtomicBool::new(false),
            opts,
        })
    }

    /// The open file.
    fn inner(&self) -> Arc<Inner> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A snapshot of the last commit. Usable from any thread, while writes
    /// commit; the pages it can reach are not reused until it is dropped.
    /// It keeps reading the file it was taken from, even after an online
    /// defrag has swapped in a new one.
    pub fn begin_read(&self) -> ReadTxn {
        let inner = self.inner();
        let mut st = inner.state();
        let meta = st.meta;
        *st.readers.entry(meta.txn).or_default() += 1;
        let reader = Reader {
            inner: inner.clone(),
            map: st.map.clone(),
            meta,
        };
        ReadTxn {
            reader,
            buckets: st.buckets.clone(),
        }
    }

    fn lock_writes(&self) -> Result<MutexGuard<'_, ()>, BtreeError> {
        let guard = match self.write_lock.lock() {
            Ok(g) => g,
            // A writer panicked mid-commit: the allocator state is unknown.
            Err(_) => {
                self.poisoned.store(true, Ordering::SeqCst);
                return Err(BtreeError::Poisoned);
            }
        };
        // Checked after taking the lock: a commit that failed while we waited
        // has set it by now.
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(BtreeError::Poisoned);
        }
        Ok(guard)
    }

    /// Starts the write txn, waiting for the previous one to finish.
    pub fn begin_write(&self) -> Result<WriteTxn<'_>, BtreeError> {
        let guard = self.lock_writes()?;
        // Read after taking the lock: a defrag (which holds it) cannot swap
        // the file until this txn is gone.
        let inner = self.inner();
        let st = inner.state();
        let reader = Reader {
            inner: inner.clone(),
            map: st.map.clone(),
            meta: st.meta,
        };
        let base_buckets = st.buckets.clone();
        drop(st);
        Ok(WriteTxn {
            db: self,
            _guard: guard,
            inner,
            reader,
            cow: Cow::default(),
            base_buckets,
            buckets: BTreeMap::new(),
        })
    }

    /// Whether readers go through the memory map.
    #[cfg(test)]
    pub(crate) fn uses_mmap(&self) -> bool {
        self.inner().use_mmap
    }

    /// The file this Db was opened from (None for the in-memory test disk).
    pub fn path(&self) -> Option<PathBuf> {
        self.inner().path.clone()
    }

    /// True once a commit's I/O failed; the Db then refuses writes.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst)
    }

    /// Bytes of the pages the last commit uses, free ones included
    /// (`page_count × page size`: bbolt's `Size()`, etcd's quota measure).
    /// Cheaper than [`stats`](Db::stats): no system call.
    pub fn allocated_bytes(&self) -> u64 {
        self.inner().state().meta.page_count * PAGE
    }

    /// Sizes of the last commit.
    pub fn stats(&self) -> Result<Stats, BtreeError> {
        let inner = self.inner();
        let meta = inner.state().meta;
        Ok(Stats {
            txn_id: meta.txn,
            file_size: inner.store.len()?,
            page_size: PAGE,
            page_count: meta.page_count,
            free_pages: meta.free_pages,
            in_use_bytes: (meta.page_count - meta.free_pages) * PAGE,
        })
    }

    /// Copies the live data of the current snapshot into a new file at `dest`
    /// (which must not exist), densely packed. Works from a read snapshot, so
    /// writes to `self` may continue meanwhile; they are not in the copy.
    pub fn compact_into(&self, dest: impl AsRef<Path>) -> Result<CompactReport, BtreeError> {
        let dest = dest.as_ref();
        if dest.exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists", dest.display()),
            )
            .into());
        }
        let snap = self.begin_read();
        let out = Db::open(
            dest,
            Options {
                read_mode: ReadMode::Pread { cache_pages: 0 },
                verify_checksums: true,
            },
        )?;
        let keys = snap.copy_into(&out)?;
        out.trim_file()?;
        Ok(CompactReport {
            txn_id: snap.txn_id(),
            keys,
            source_file_size: snap.reader.inner.store.len()?,
            compacted_file_size: out.inner().store.len()?,
        })
    }

    /// Offline defragmentation: [`defrag_online`](Db::defrag_online), then
    /// the handle reads with `opts`.
    pub fn defrag(mut self, opts: Options) -> Result<Db, BtreeError> {
        self.opts = opts;
        self.defrag_online()?;
        Ok(self)
    }

    /// Online defragmentation: copies the live data of the last commit into
    /// `<path>.defrag` (densely packed, committed and fsynced), renames it
    /// over the file, fsyncs the directory and continues on the new file.
    ///
    /// Writers wait for it (it holds the write lock, so the copy is the last
    /// commit); readers do not: snapshots taken before the swap keep reading
    /// the old file, which stays open (unlinked) until the last of them is
    /// dropped, and new snapshots read the new one.
    ///
    /// Crash safety (failpoints `btree::defrag::*`): until the rename, the
    /// name holds the old file, untouched, and the copy is a stale
    /// `<path>.defrag` that the next open or defrag deletes. The rename is
    /// atomic: after a crash the name holds the old or the new file, both
    /// whole commits of the same data and applied index, never neither. An
    /// error before the rename leaves this handle on the old file and
    /// usable; an error after it poisons the handle (which file the name
    /// will hold after a crash is unknown until the directory is synced).
    pub fn defrag_online(&self) -> Result<CompactReport, BtreeError> {
        let _guard = self.lock_writes()?;
        let old = self.inner();
        let Some(path) = old.path.clone() else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "defrag needs a file-backed db",
            )
            .into());
        };
        let tmp = defrag_tmp_path(&path);
        if tmp.exists() {
            std::fs::remove_file(&tmp)?;
        }
        let copied = self.compact_into(&tmp).and_then(|report| {
            // The copy's commits are durable and its directory entry was
            // synced when it was created; the trim may be lost (harmless).
            rename_over(&tmp, &path)?;
            Ok(report)
        });
        let report = match copied {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let reopened = (|| -> Result<Arc<Inner>, BtreeError> {
            sync_renamed(&path)?;
            let store: Arc<dyn Storage> = Arc::new(FileStorage::open(&path)?);
            open_inner(store, &self.opts, Some(path.clone()))
        })();
        match reopened {
            Ok(new) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = new;
                Ok(report)
            }
            Err(e) => {
                self.poisoned.store(true, Ordering::SeqCst);
                Err(e)
            }
        }
    }

    /// Cuts the file down to its page count when no reader of an older
    /// snapshot could touch the pages past it.
    fn trim_file(&self) -> Result<(), BtreeError> {
        let inner = self.inner();
        let _w = inner.writer();
        let mut st = inner.state();
        let target = st.meta.page_count * PAGE;
        if st.readers.is_empty() && st.file_len > target {
            inner.store.set_len(target)?;
            st.file_len = target;
        }
        Ok(())
    }

    /// Walks every tree, overflow chain and the free list of the current
    /// snapshot and checks the invariants: every page below the page count is
    /// exactly one of meta, tree page, overflow page, free-list page or free;
    /// keys ascend within and across pages; bucket counts match.
    pub fn check_integrity(&self) -> Result<IntegrityReport, BtreeError> {
        let snap = self.begin_read();
        snap.check_integrity()
    }
}

/// Opens one file: recovers its newest valid meta, reads its free list and
/// catalog.
fn open_inner(
    store: Arc<dyn Storage>,
    opts: &Options,
    path: Option<PathBuf>,
) -> Result<Arc<Inner>, BtreeError> {
    let mut len = store.len()?;
    let read_meta = |slot: PageId| -> Result<Option<Meta>, BtreeError> {
        if len < (slot + 1) * PAGE {
            return Ok(None);
        }
        let mut b = [0u8; PAGE_SIZE];
        store.read_at(slot * PAGE, &mut b)?;
        Meta::decode(slot, &b)
    };
    let meta = match (read_meta(0)?, read_meta(1)?) {
        (Some(a), Some(b)) => {
            if a.txn >= b.txn {
                a
            } else {
                b
            }
        }
        (Some(m), None) | (None, Some(m)) => m,
        (None, None) if len <= 2 * PAGE => {
            // Never initialised (or the first init was cut short before
            // its sync): nothing was ever committed, start empty.
            // The length first and durable, then the meta: a valid meta
            // never names pages past the durable end of the file.
            let m = Meta::empty();
            store.set_len(2 * PAGE)?;
            store.write_at(PAGE, &[0u8; PAGE_SIZE])?;
            store.sync()?;
            store.write_at(0, &m.encode()[..])?;
            store.sync()?;
            len = 2 * PAGE;
            m
        }
        (None, None) => {
            return Err(BtreeError::Corrupt {
                page: 0,
                what: "no valid meta page",
            })
        }
    };
    if len < meta.page_count * PAGE {
        return Err(BtreeError::Corrupt {
            page: meta.page_count - 1,
            what: "file shorter than the meta's page count",
        });
    }
    // The free list of the chosen meta is the whole allocator state: no
    // reader survives a restart, so nothing is pending.
    let (free, freelist_pages) = read_freelist(&*store, &meta)?;
    // Backends without a map (the in-memory test disk) read with pread.
    let map = match opts.read_mode {
        ReadMode::Mmap => store.map(len)?.map(Arc::new),
        ReadMode::Pread { .. } => None,
    };
    let use_mmap = map.is_some();
    let cache = match opts.read_mode {
        ReadMode::Pread { cache_pages } if cache_pages > 0 => Some(PageCache::new(cache_pages)),
        _ => None,
    };
    let inner = Arc::new(Inner {
        store,
        cache,
        verify_checksums: opts.verify_checksums,
        use_mmap,
        state: Mutex::new(State {
            meta,
            buckets: Arc::default(),
            map: map.clone(),
            readers: BTreeMap::new(),
            file_len: len,
        }),
        writer: Mutex::new(WriterState {
            free,
            pending: Vec::new(),
            freelist_pages,
        }),
        path,
    });
    let reader = Reader {
        inner: inner.clone(),
        map,
        meta,
    };
    let buckets = load_catalog(&reader)?;
    drop(reader);
    inner.state().buckets = Arc::new(buckets);
    Ok(inner)
}

fn read_freelist(
    store: &dyn Storage,
    meta: &Meta,
) -> Result<(BTreeSet<PageId>, Vec<PageId>), BtreeError> {
    let mut free = BTreeSet::new();
    let mut chain = Vec::new();
    let mut next = meta.freelist_head;
    while next != NO_PAGE {
        if chain.len() as u64 >= meta.page_count
            || !(FIRST_DATA_PAGE..meta.page_count).contains(&next)
        {
            return Err(BtreeError::Corrupt {
                page: next,
                what: "free-list chain out of range or cyclic",
            });
        }
        let mut b = [0u8; PAGE_SIZE];
        store.read_at(next * PAGE, &mut b)?;
        let (n, runs) = format::decode_freelist(&b, next)?;
        for (start, len) in runs {
            let end = start
                .checked_add(u64::from(len))
                .filter(|&e| len > 0 && start >= FIRST_DATA_PAGE && e <= meta.page_count);
            let Some(end) = end else {
                return Err(BtreeError::Corrupt {
                    page: next,
                    what: "free run out of range",
                });
            };
            for p in start..end {
                if !free.insert(p) {
                    return Err(BtreeError::Corrupt {
                        page: next,
                        what: "page listed twice in the free list",
                    });
                }
            }
        }
        chain.push(next);
        next = n;
    }
    if free.len() as u64 != meta.free_pages || chain.iter().any(|p| free.contains(p)) {
        return Err(BtreeError::Corrupt {
            page: meta.freelist_head,
            what: "free list does not match the meta",
        });
    }
    Ok((free, chain))
}

fn load_catalog(reader: &Reader) -> Result<BTreeMap<Vec<u8>, BucketDesc>, BtreeError> {
    let src = Src { reader, arena: &[] };
    let root =
        (reader.meta.catalog_root != NO_PAGE).then_some(NodeRef::Page(reader.meta.catalog_root));
    let mut out = BTreeMap::new();
    for item in Range::new(
        src,
        root,
        std::ops::Bound::Unbounded,
        std::ops::Bound::Unbounded,
    ) {
        let (k, v) = item?;
        out.insert(k, BucketDesc::decode(&v, &reader.meta)?);
    }
    Ok(out)
}

/// A read-only snapshot of one commit.
pub struct ReadTxn {
    reader: Reader,
    buckets: Buckets,
}

impl Drop for ReadTxn {
    fn drop(&mut self) {
        let mut st = self.reader.inner.state();
        let txn = self.reader.meta.txn;
        if let Some(n) = st.readers.get_mut(&txn) {
            *n -= 1;
            if *n == 0 {
                st.readers.remove(&txn);
            }
        }
    }
}

fn bucket_not_found(name: &[u8]) -> BtreeError {
    BtreeError::BucketNotFound(String::from_utf8_lossy(name).into_owned())
}

impl ReadTxn {
    /// The txn id of the commit this snapshot shows.
    pub fn txn_id(&self) -> u64 {
        self.reader.meta.txn
    }

    fn desc(&self, bucket: &str) -> Result<&BucketDesc, BtreeError> {
        self.buckets
            .get(bucket.as_bytes())
            .ok_or_else(|| bucket_not_found(bucket.as_bytes()))
    }

    fn src(&self) -> Src<'_> {
        Src {
            reader: &self.reader,
            arena: &[],
        }
    }

    pub fn get(&self, bucket: &str, key: &[u8]) -> Result<Option<Vec<u8>>, BtreeError> {
        let root = self.desc(bucket)?.root_ref();
        self.src().get(root, key)
    }

    /// Entries with keys in `range`, in key order (`.rev()` for descending).
    pub fn range<'k>(
        &self,
        bucket: &str,
        range: impl RangeBounds<&'k [u8]>,
    ) -> Result<Range<'_>, BtreeError> {
        let root = self.desc(bucket)?.root_ref();
        Ok(Range::new(
            self.src(),
            root,
            range.start_bound(),
            range.end_bound(),
        ))
    }

    /// Bucket names, sorted.
    pub fn buckets(&self) -> Vec<String> {
        self.buckets
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    }

    /// Whether the snapshot has a bucket of that name.
    pub fn has_bucket(&self, bucket: &str) -> bool {
        self.buckets.contains_key(bucket.as_bytes())
    }

    /// Number of keys in a bucket.
    pub fn bucket_len(&self, bucket: &str) -> Result<u64, BtreeError> {
        Ok(self.desc(bucket)?.count)
    }

    /// Copies every bucket into `out`, committing every 16 MiB.
    fn copy_into(&self, out: &Db) -> Result<u64, BtreeError> {
        const BATCH: usize = 16 << 20;
        let mut keys = 0;
        for (name, desc) in self.buckets.iter() {
            let name = std::str::from_utf8(name).map_err(|_| BtreeError::Corrupt {
                page: self.reader.meta.catalog_root,
                what: "bucket name is not UTF-8",
            })?;
            let mut w = out.begin_write()?;
            w.create_bucket(name)?;
            let mut bytes = 0;
            for item in Range::new(
                self.src(),
                desc.root_ref(),
                std::ops::Bound::Unbounded,
                std::ops::Bound::Unbounded,
            ) {
                let (k, v) = item?;
                bytes += k.len() + v.len();
                w.insert(name, &k, &v)?;
                keys += 1;
                if bytes >= BATCH {
                    w.commit()?;
                    w = out.begin_write()?;
                    bytes = 0;
                }
            }
            w.commit()?;
        }
        Ok(keys)
    }

    fn check_integrity(&self) -> Result<IntegrityReport, BtreeError> {
        let meta = self.reader.meta;
        let mut seen = vec![false; meta.page_count as usize];
        seen[0] = true;
        seen[1] = true;
        let mut mark = |p: PageId, what: &'static str| -> Result<(), BtreeError> {
            match seen.get_mut(p as usize) {
                Some(s) if !*s => {
                    *s = true;
                    Ok(())
                }
                _ => Err(BtreeError::Corrupt { page: p, what }),
            }
        };
        let mut report = IntegrityReport {
            txn_id: meta.txn,
            page_count: meta.page_count,
            tree_pages: 0,
            overflow_pages: 0,
            freelist_pages: 0,
            free_pages: 0,
            buckets: Vec::new(),
        };
        let catalog = load_catalog(&self.reader)?;
        if catalog != *self.buckets {
            return Err(BtreeError::Corrupt {
                page: meta.catalog_root,
                what: "catalog differs from the published buckets",
            });
        }
        let mut trees = vec![(String::from("<catalog>"), meta.catalog_root, None)];
        for (name, d) in catalog.iter() {
            trees.push((
                String::from_utf8_lossy(name).into_owned(),
                d.root,
                Some(d.count),
            ));
        }
        for (name, root, count) in trees {
            let mut n = 0u64;
            if root != NO_PAGE {
                // (page, depth, lower bound, upper bound)
                let mut stack: Vec<CheckFrame> = vec![(root, 0, None, None)];
                let mut leaf_depth = None;
                while let Some((p, depth, lo, hi)) = stack.pop() {
                    if depth > MAX_DEPTH {
                        return Err(BtreeError::Corrupt {
                            page: p,
                            what: "tree too deep",
                        });
                    }
                    mark(p, "tree page reachable twice or out of range")?;
                    report.tree_pages += 1;
                    let node = self.src().load(NodeRef::Page(p))?;
                    let len = node.len();
                    let in_bounds = |k: &[u8]| {
                        lo.as_deref().is_none_or(|l| k >= l) && hi.as_deref().is_none_or(|h| k < h)
                    };
                    if node.is_leaf() {
                        if *leaf_depth.get_or_insert(depth) != depth {
                            return Err(BtreeError::Corrupt {
                                page: p,
                                what: "leaves at different depths",
                            });
                        }
                        let mut prev: Option<Vec<u8>> = None;
                        for i in 0..len {
                            let (k, v) = node.entry(i)?;
                            if !in_bounds(k) || prev.as_deref().is_some_and(|pk| pk >= k) {
                                return Err(BtreeError::Corrupt {
                                    page: p,
                                    what: "leaf keys out of order or outside the parent's bounds",
                                });
                            }
                            prev = Some(k.to_vec());
                            if let ValRef::Overflow { first, len } = v {
                                for op in self.reader.overflow_pages(first, len)? {
                                    mark(op, "overflow page reachable twice or out of range")?;
                                    report.overflow_pages += 1;
                                }
                                self.reader.overflow(first, len)?;
                            }
                            n += 1;
                        }
                    } else {
                        let mut keys = Vec::with_capacity(len);
                        for i in 0..len {
                            keys.push(if i == 0 {
                                lo.clone()
                            } else {
                                Some(node.entry_key(i)?.to_vec())
                            });
                        }
                        for i in 1..len {
                            let k = keys[i].as_deref().unwrap_or_default();
                            if !in_bounds(k) || (i > 1 && keys[i - 1].as_deref() >= Some(k)) {
                                return Err(BtreeError::Corrupt {
                                    page: p,
                                    what: "branch keys out of order or outside the parent's bounds",
                                });
                            }
                        }
                        for i in 0..len {
                            let child_hi = if i + 1 < len {
                                keys[i + 1].clone()
                            } else {
                                hi.clone()
                            };
                            let NodeRef::Page(c) = node.child(i)? else {
                                unreachable!("pages only")
                            };
                            stack.push((c, depth + 1, keys[i].clone(), child_hi));
                        }
                    }
                }
            }
            if let Some(c) = count {
                if c != n {
                    return Err(BtreeError::Corrupt {
                        page: root,
                        what: "bucket key count differs from its descriptor",
                    });
                }
                report.buckets.push((name, n));
            }
        }
        let (free, chain) = read_freelist(&*self.reader.inner.store, &meta)?;
        for p in chain {
            mark(p, "free-list page is also in use")?;
            report.freelist_pages += 1;
        }
        for p in free {
            mark(p, "free page is also in use")?;
            report.free_pages += 1;
        }
        if let Some(p) = seen.iter().position(|s| !s) {
            return Err(BtreeError::Corrupt {
                page: p as u64,
                what: "page leaked: neither reachable nor free",
            });
        }
        Ok(report)
    }
}

/// A page to check: id, depth, and the key bounds its parent gives it.
type CheckFrame = (PageId, usize, Option<Vec<u8>>, Option<Vec<u8>>);

/// A bucket as the write txn sees it.
#[derive(Clone, Copy)]
struct WBucket {
    root: Option<NodeRef>,
    count: u64,
    dirty: bool,
}

/// The single write txn. Changes are private until [`commit`](WriteTxn::commit)
/// returns; dropping it (or [`abort`](WriteTxn::abort)) discards them.
pub struct WriteTxn<'db> {
    db: &'db Db,
    _guard: MutexGuard<'db, ()>,
    /// The file this txn writes (fixed: a defrag waits for the write lock).
    inner: Arc<Inner>,
    reader: Reader,
    cow: Cow,
    base_buckets: Buckets,
    /// Buckets touched by this txn; `None` = deleted.
    buckets: BTreeMap<Vec<u8>, Option<WBucket>>,
}

/// The allocator used while a commit writes pages.
struct CommitAlloc<'a> {
    free: &'a mut BTreeSet<PageId>,
    page_count: u64,
}

impl Alloc for CommitAlloc<'_> {
    fn alloc(&mut self) -> PageId {
        // Lowest first, so the tail of the file empties and can be cut.
        // Every page handed out here is free (no snapshot and no durable meta
        // reaches it) or past the base page count: the first invariant.
        self.free.pop_first().unwrap_or_else(|| {
            self.page_count += 1;
            self.page_count - 1
        })
    }
}

fn check_key(key: &[u8]) -> Result<(), BtreeError> {
    if key.len() > MAX_KEY_LEN {
        return Err(BtreeError::KeyTooLarge {
            len: key.len(),
            max: MAX_KEY_LEN,
        });
    }
    Ok(())
}

impl<'db> WriteTxn<'db> {
    /// The bucket as of this txn, if it exists.
    fn view(&self, name: &[u8]) -> Option<WBucket> {
        match self.buckets.get(name) {
            Some(b) => *b,
            None => self.base_buckets.get(name).map(|d| WBucket {
                root: d.root_ref(),
                count: d.count,
                dirty: false,
            }),
        }
    }

    fn bucket_mut(&mut self, name: &[u8]) -> Result<&mut WBucket, BtreeError> {
        let b = self.view(name).ok_or_else(|| bucket_not_found(name))?;
        let slot = self.buckets.entry(name.to_vec()).or_insert(Some(b));
        slot.as_mut().ok_or_else(|| bucket_not_found(name))
    }

    /// Creates the bucket if it does not exist.
    pub fn create_bucket(&mut self, name: &str) -> Result<(), BtreeError> {
        check_key(name.as_bytes())?;
        if self.view(name.as_bytes()).is_none() {
            self.buckets.insert(
                name.as_bytes().to_vec(),
                Some(WBucket {
                    root: None,
                    count: 0,
                    dirty: true,
                }),
            );
        }
        Ok(())
    }

    /// Deletes a bucket and everything in it; false if it did not exist.
    pub fn delete_bucket(&mut self, name: &str) -> Result<bool, BtreeError> {
        let Some(b) = self.view(name.as_bytes()) else {
            return Ok(false);
        };
        self.cow.free_tree(&self.reader, b.root)?;
        self.buckets.insert(name.as_bytes().to_vec(), None);
        Ok(true)
    }

    /// Inserts or replaces `key`'s value in `bucket`.
    pub fn insert(&mut self, bucket: &str, key: &[u8], value: &[u8]) -> Result<(), BtreeError> {
        check_key(key)?;
        if value.len() > MAX_VALUE_LEN {
            return Err(BtreeError::ValueTooLarge {
                len: value.len(),
                max: MAX_VALUE_LEN,
            });
        }
        let mut b = *self.bucket_mut(bucket.as_bytes())?;
        let old = self
            .cow
            .insert(&self.reader, &mut b.root, key, MemValue::new(key, value))?;
        match old {
            Some(v) => self.cow.free_value(&self.reader, v)?,
            None => b.count = b.count.saturating_add(1),
        }
        b.dirty = true;
        *self.bucket_mut(bucket.as_bytes())? = b;
        Ok(())
    }

    /// Removes `key` from `bucket`; false if it was not there.
    pub fn remove(&mut self, bucket: &str, key: &[u8]) -> Result<bool, BtreeError> {
        let mut b = *self.bucket_mut(bucket.as_bytes())?;
        let Some(old) = self.cow.remove(&self.reader, &mut b.root, key)? else {
            return Ok(false);
        };
        self.cow.free_value(&self.reader, old)?;
        b.count = b.count.saturating_sub(1);
        b.dirty = true;
        *self.bucket_mut(bucket.as_bytes())? = b;
        Ok(true)
    }

    fn src(&self) -> Src<'_> {
        Src {
            reader: &self.reader,
            arena: &self.cow.arena,
        }
    }

    /// Reads `key` as this txn sees it (its own changes included).
    pub fn get(&self, bucket: &str, key: &[u8]) -> Result<Option<Vec<u8>>, BtreeError> {
        let b = self
            .view(bucket.as_bytes())
            .ok_or_else(|| bucket_not_found(bucket.as_bytes()))?;
        self.src().get(b.root, key)
    }

    /// Entries with keys in `range` as this txn sees them, in key order.
    pub fn range<'k>(
        &self,
        bucket: &str,
        range: impl RangeBounds<&'k [u8]>,
    ) -> Result<Range<'_>, BtreeError> {
        let b = self
            .view(bucket.as_bytes())
            .ok_or_else(|| bucket_not_found(bucket.as_bytes()))?;
        Ok(Range::new(
            self.src(),
            b.root,
            range.start_bound(),
            range.end_bound(),
        ))
    }

    /// Number of keys in a bucket as this txn sees it.
    pub fn bucket_len(&self, bucket: &str) -> Result<u64, BtreeError> {
        Ok(self
            .view(bucket.as_bytes())
            .ok_or_else(|| bucket_not_found(bucket.as_bytes()))?
            .count)
    }

    /// Discards the txn's changes (same as dropping it).
    pub fn abort(self) {}

    /// Makes the txn's changes durable and visible to new readers. On `Err`
    /// the Db is poisoned (the file may or may not hold this commit; reopen to
    /// find out) and keeps serving reads of the previous commit.
    pub fn commit(mut self) -> Result<(), BtreeError> {
        if self.buckets.values().all(|b| b.is_some_and(|b| !b.dirty)) {
            return Ok(());
        }
        let result = self.commit_inner();
        if result.is_err() {
            self.db.poisoned.store(true, Ordering::SeqCst);
        }
        result
    }

    fn commit_inner(&mut self) -> Result<(), BtreeError> {
        let inner = self.inner.clone();
        let base = self.reader.meta;
        let txn = base.txn + 1;
        let mut wguard = inner.writer();
        let w = &mut *wguard;

        // 1. Pages freed by txn F become reusable once no reader of a
        //    snapshot older than F is left.
        let oldest = inner
            .state()
            .readers
            .keys()
            .next()
            .copied()
            .unwrap_or(u64::MAX);
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut w.pending)
            .into_iter()
            .partition(|(f, _)| *f <= oldest);
        w.pending = waiting;
        for (_, pages) in ready {
            w.free.extend(pages);
        }

        // 2. Write the dirty trees, then the catalog that points at them.
        let mut out: Vec<(PageId, Box<PageBuf>)> = Vec::new();
        let mut alloc = CommitAlloc {
            free: &mut w.free,
            page_count: base.page_count,
        };
        let mut catalog =
            (base.catalog_root != NO_PAGE).then_some(NodeRef::Page(base.catalog_root));
        let mut published: BTreeMap<Vec<u8>, BucketDesc> = (*self.base_buckets).clone();
        for (name, b) in std::mem::take(&mut self.buckets) {
            match b {
                Some(mut b) if b.dirty => {
                    self.cow.rebalance(&self.reader, &mut b.root)?;
                    let root = self
                        .cow
                        .spill(b.root, &mut alloc, &mut out)?
                        .unwrap_or(NO_PAGE);
                    let desc = BucketDesc {
                        root,
                        count: b.count,
                    };
                    self.cow.insert(
                        &self.reader,
                        &mut catalog,
                        &name,
                        MemValue::Inline(desc.encode().to_vec()),
                    )?;
                    published.insert(name, desc);
                }
                Some(_) => {}
                None => {
                    self.cow.remove(&self.reader, &mut catalog, &name)?;
                    published.remove(&name);
                }
            }
        }
        self.cow.rebalance(&self.reader, &mut catalog)?;
        let catalog_root = self
            .cow
            .spill(catalog, &mut alloc, &mut out)?
            .unwrap_or(NO_PAGE);

        // 3. Everything the old meta reached and this one does not is freed by
        //    this txn, the old free-list pages included.
        let mut freed_now = std::mem::take(&mut self.cow.freed);
        freed_now.append(&mut w.freelist_pages);

        // 4. Cut free pages off the end of the file. Only reusable pages:
        //    a pending or just-freed page may still be read by a snapshot and
        //    must stay below the page count (and inside the file).
        let mut page_count = alloc.page_count;
        while page_count > FIRST_DATA_PAGE && alloc.free.remove(&(page_count - 1)) {
            page_count -= 1;
        }
        alloc.page_count = page_count;

        // 5. The free list: reusable, pending and just-freed pages, written to
        //    pages taken from the free set itself (or the end of the file).
        let mut all: Vec<PageId> = alloc
            .free
            .iter()
            .copied()
            .chain(w.pending.iter().flat_map(|(_, p)| p.iter().copied()))
            .chain(freed_now.iter().copied())
            .collect();
        all.sort_unstable();
        // A page in two of these sets would be handed out twice later: only a
        // page reachable twice (corruption) or a bug gets here. Refuse to commit.
        if let Some(d) = all.windows(2).find(|p| p[0] == p[1]) {
            return Err(BtreeError::Corrupt {
                page: d[0],
                what: "page freed twice (reachable twice?)",
            });
        }
        let mut fl_pages: Vec<PageId> = Vec::new();
        // Taking a page from the free set for the list can only shrink the
        // list (taking a run's first page never adds a run), so this settles
        // after a round or two.
        let runs = loop {
            let runs = to_runs(&all);
            if fl_pages.len() >= runs.len().div_ceil(FREELIST_RUNS_PER_PAGE) {
                break runs;
            }
            let p = alloc.alloc();
            fl_pages.push(p);
            if let Ok(i) = all.binary_search(&p) {
                all.remove(i);
            }
        };
        let mut chunks = runs.chunks(FREELIST_RUNS_PER_PAGE);
        for (i, &p) in fl_pages.iter().enumerate() {
            let next = fl_pages.get(i + 1).copied().unwrap_or(NO_PAGE);
            out.push((
                p,
                format::encode_freelist(p, next, chunks.next().unwrap_or(&[])),
            ));
        }
        let meta = Meta {
            txn,
            catalog_root,
            freelist_head: fl_pages.first().copied().unwrap_or(NO_PAGE),
            free_pages: all.len() as u64,
            page_count: alloc.page_count,
        };

        // 6. The commit protocol (see "Crash safety" in btree.rs).
        let file_len = inner.state().file_len;
        let needed = meta.page_count * PAGE;
        let grow_to = (file_len < needed).then(|| grow_target(needed));
        write_commit(&*inner.store, &mut out, &meta, grow_to)?;

        // 7. Publish. Cached copies of reused pages go first (no reader can
        //    reach them before the state below changes).
        if let Some(cache) = &inner.cache {
            for (p, _) in &out {
                cache.invalidate(*p);
            }
        }
        let mut st = inner.state();
        if let Some(len) = grow_to {
            st.file_len = len;
            if inner.use_mmap && st.map.as_ref().is_none_or(|m| m.len() < len) {
                st.map = inner.store.map(len)?.map(Arc::new);
            }
        }
        if let Some(map) = &st.map {
            // A reused page's old "checked" bit must not vouch for its new bytes.
            for (p, _) in &out {
                map.clear_verified(*p);
            }
        }
        st.meta = meta;
        st.buckets = Arc::new(published);
        w.pending.push((txn, freed_now));
        w.freelist_pages = fl_pages;
        // Shrink the file when no reader of an older snapshot is left (their
        // pages may lie past the new end) and the excess is worth it.
        if st.readers.is_empty() && st.file_len > needed + 2 * (grow_target(needed) - needed) {
            let target = grow_target(needed);
            inner.store.set_len(target)?;
            st.file_len = target;
        }
        Ok(())
    }
}

/// Coalesces sorted page ids into `(start, len)` runs.
/// Run-length form keeps the free list small after a mass delete, when most
/// freed pages are neighbours (and a page holds 339 runs).
fn to_runs(sorted: &[PageId]) -> Vec<(PageId, u32)> {
    let mut runs: Vec<(PageId, u32)> = Vec::new();
    for &p in sorted {
        match runs.last_mut() {
            Some((s, l)) if *s + u64::from(*l) == p && *l < u32::MAX => *l += 1,
            _ => runs.push((p, 1)),
        }
    }
    runs
}

/// Writes one commit: pages, sync, meta, sync. Adjacent pages go out in one
/// write of up to 1 MiB.
fn write_commit(
    store: &dyn Storage,
    pages: &mut [(PageId, Box<PageBuf>)],
    meta: &Meta,
    grow_to: Option<u64>,
) -> io::Result<()> {
    const MAX_WRITE: usize = 1 << 20;
    if let Some(len) = grow_to {
        store.set_len(len)?;
    }
    pages.sort_unstable_by_key(|p| p.0);
    let mut buf: Vec<u8> = Vec::with_capacity(MAX_WRITE);
    let mut start = NO_PAGE;
    for (i, (p, page)) in pages.iter().enumerate() {
        if buf.is_empty() {
            start = *p;
        }
        buf.extend_from_slice(&page[..]);
        let next_adjacent = pages.get(i + 1).is_some_and(|(n, _)| *n == p + 1);
        if !next_adjacent || buf.len() >= MAX_WRITE {
            store.write_at(start * PAGE, &buf)?;
            buf.clear();
        }
    }
    failpoint!("btree::commit::after_pages");
    store.sync()?;
    failpoint!("btree::commit::before_meta");
    store.write_at(Meta::slot(meta.txn) * PAGE, &meta.encode()[..])?;
    failpoint!("btree::meta::flip");
    store.sync()?;
    Ok(())
}

/// Where [`Db::defrag_online`] builds the copy.
fn defrag_tmp_path(path: &Path) -> PathBuf {
    let mut tmp = path.to_path_buf().into_os_string();
    tmp.push(".defrag");
    PathBuf::from(tmp)
}

/// Renames the finished copy over the live file (atomic: the name holds one
/// or the other).
fn rename_over(tmp: &Path, path: &Path) -> io::Result<()> {
    failpoint!("btree::defrag::before_rename");
    std::fs::rename(tmp, path)
}

/// Makes the rename durable.
fn sync_renamed(path: &Path) -> io::Result<()> {
    failpoint!("btree::defrag::after_rename");
    storage::file::sync_parent_dir(path)?;
    failpoint!("btree::defrag::after_dir_sync");
    Ok(())
}
