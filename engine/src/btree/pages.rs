//! Reading pages of one snapshot: through the memory map, or with `pread`
//! into an optional shared page cache.
//!
//! Both paths rest on the same invariant (see btree.rs): a page reachable from
//! a registered snapshot is never rewritten while that snapshot lives. So a
//! mapped slice, a `pread` and a cache entry of such a page all hold the bytes
//! the snapshot committed. The cache is keyed by page id alone; the writer
//! drops a page's entry after writing the page and before publishing the commit
//! that makes it reachable, so no reader can meet a stale entry (a reader that
//! could see the old bytes would have kept the page from being reused).

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex};

use super::db::Inner;
use super::error::BtreeError;
use super::format::{self, Meta, NodePage, PageBuf, PageId, FIRST_DATA_PAGE, PAGE, PAGE_SIZE};
use super::storage::Mapping;

/// One page's bytes, borrowed from the map or shared from the cache.
pub(crate) enum PageRef<'a> {
    Mapped(&'a [u8]),
    Owned(Arc<PageBuf>),
}

impl Deref for PageRef<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            PageRef::Mapped(b) => b,
            PageRef::Owned(b) => &b[..],
        }
    }
}

/// Page access for one snapshot (`meta`). Held by a `ReadTxn` (registered) or
/// by the write txn for its base snapshot.
pub(crate) struct Reader {
    pub(crate) inner: Arc<Inner>,
    pub(crate) map: Option<Arc<Mapping>>,
    pub(crate) meta: Meta,
}

impl Reader {
    /// Page `id` of this snapshot, and whether its checksum still needs
    /// checking (pages from the cache were checked when loaded).
    pub(crate) fn page(&self, id: PageId) -> Result<(PageRef<'_>, bool), BtreeError> {
        if !(FIRST_DATA_PAGE..self.meta.page_count).contains(&id) {
            return Err(BtreeError::Corrupt {
                page: id,
                what: "page pointer out of range",
            });
        }
        if let Some(map) = &self.map {
            let bytes = map.page(id).ok_or(BtreeError::Corrupt {
                page: id,
                what: "page beyond the mapped file",
            })?;
            if self.inner.verify_checksums && !map.is_verified(id) {
                format::check_crc(bytes, id)?;
                map.set_verified(id);
            }
            return Ok((PageRef::Mapped(bytes), false));
        }
        if let Some(cache) = &self.inner.cache {
            if let Some(p) = cache.get(id) {
                return Ok((PageRef::Owned(p), false));
            }
        }
        let mut buf: Arc<PageBuf> = Arc::new([0u8; PAGE_SIZE]);
        // A fresh Arc has one owner; make_mut never copies here.
        self.inner
            .store
            .read_at(id * PAGE, &mut Arc::make_mut(&mut buf)[..])?;
        match &self.inner.cache {
            Some(cache) => {
                // Check before caching, so the cache only holds checked pages.
                format::check_header(&buf[..], id, true)?;
                cache.insert(id, buf.clone());
                Ok((PageRef::Owned(buf), false))
            }
            None => Ok((PageRef::Owned(buf), self.inner.verify_checksums)),
        }
    }

    /// Page `id` as a leaf or branch.
    pub(crate) fn node(&self, id: PageId) -> Result<(PageRef<'_>, usize, bool), BtreeError> {
        let (page, verify) = self.page(id)?;
        let n = NodePage::new(&page, id, verify)?;
        let (count, leaf) = (n.count, n.leaf);
        Ok((page, count, leaf))
    }

    /// Reads an overflow value of `len` bytes starting at page `first`.
    pub(crate) fn overflow(&self, first: PageId, len: u64) -> Result<Vec<u8>, BtreeError> {
        let len = usize::try_from(len).map_err(|_| BtreeError::Corrupt {
            page: first,
            what: "overflow length",
        })?;
        let mut out = Vec::with_capacity(len.min(format::MAX_VALUE_LEN));
        let mut next = first;
        // The chain has exactly overflow_pages(len) pages, each full but the
        // last; anything else (including a cycle) is corruption.
        for i in 0..format::overflow_pages(len) {
            let id = next;
            let (page, verify) = self.page(id)?;
            let (n, data) = format::decode_overflow(&page, id, verify)?;
            let want = (len - out.len()).min(format::OVERFLOW_DATA_LEN);
            if data.len() != want || (i + 1 < format::overflow_pages(len)) == (n == format::NO_PAGE)
            {
                return Err(BtreeError::Corrupt {
                    page: id,
                    what: "overflow chain does not match the value length",
                });
            }
            out.extend_from_slice(data);
            next = n;
        }
        if out.len() != len {
            return Err(BtreeError::Corrupt {
                page: first,
                what: "overflow chain does not match the value length",
            });
        }
        Ok(out)
    }

    /// The page ids of an overflow chain (to free them).
    pub(crate) fn overflow_pages(
        &self,
        first: PageId,
        len: u64,
    ) -> Result<Vec<PageId>, BtreeError> {
        let n = format::overflow_pages(usize::try_from(len).unwrap_or(usize::MAX));
        let mut ids = Vec::with_capacity(n.min(1 << 16));
        let mut next = first;
        for _ in 0..n {
            let (page, verify) = self.page(next)?;
            let (n, _) = format::decode_overflow(&page, next, verify)?;
            ids.push(next);
            next = n;
        }
        Ok(ids)
    }
}

/// A sharded page cache with CLOCK eviction, for the `pread` read path.
pub(crate) struct PageCache {
    shards: Vec<Mutex<Shard>>,
}

struct Shard {
    index: HashMap<PageId, usize>,
    slots: Vec<(PageId, Arc<PageBuf>, bool)>,
    hand: usize,
    cap: usize,
}

const SHARDS: usize = 16;

impl PageCache {
    pub(crate) fn new(pages: usize) -> PageCache {
        let cap = pages.div_ceil(SHARDS).max(1);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    index: HashMap::new(),
                    slots: Vec::new(),
                    hand: 0,
                    cap,
                })
            })
            .collect();
        PageCache { shards }
    }

    fn shard(&self, id: PageId) -> std::sync::MutexGuard<'_, Shard> {
        // Consecutive pages go to different shards.
        self.shards[(id as usize) % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, id: PageId) -> Option<Arc<PageBuf>> {
        let mut s = self.shard(id);
        let i = *s.index.get(&id)?;
        let slot = &mut s.slots[i];
        slot.2 = true;
        Some(slot.1.clone())
    }

    pub(crate) fn insert(&self, id: PageId, page: Arc<PageBuf>) {
        let mut s = self.shard(id);
        if let Some(&i) = s.index.get(&id) {
            s.slots[i].1 = page;
            return;
        }
        if s.slots.len() < s.cap {
            let i = s.slots.len();
            s.slots.push((id, page, false));
            s.index.insert(id, i);
            return;
        }
        // CLOCK: clear reference bits until an unreferenced slot comes up.
        loop {
            let h = s.hand;
            s.hand = (h + 1) % s.slots.len();
            if std::mem::replace(&mut s.slots[h].2, false) {
                continue;
            }
            let old = s.slots[h].0;
            s.index.remove(&old);
            s.slots[h] = (id, page, false);
            s.index.insert(id, h);
            return;
        }
    }

    pub(crate) fn invalidate(&self, id: PageId) {
        let mut s = self.shard(id);
        if let Some(i) = s.index.remove(&id) {
            s.slots.swap_remove(i);
            if i < s.slots.len() {
                let moved = s.slots[i].0;
                s.index.insert(moved, i);
            }
            if s.hand >= s.slots.len() {
                s.hand = 0;
            }
        }
    }
}
