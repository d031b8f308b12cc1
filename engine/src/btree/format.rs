//! Bytes on disk: the meta page, the common page header and the leaf, branch,
//! overflow and free-list page bodies.
//!
//! This file repeats the tables of `engine/FORMAT.md` §2; where the two
//! disagree, both are wrong until fixed together. Every offset is built from the
//! previous one plus the size of the previous field, all integers are
//! little-endian fixed width, and every decoder checks each offset and length it
//! reads against the page bounds: bad bytes give `Corrupt`, never a panic.

use super::error::BtreeError;

/// Size of every page, meta pages included. Fixed for format version 1.
///
/// 4 KiB is the page size of the Linux page cache and of the file system block
/// on the machines we run on, so one page is one block write.
pub(crate) const PAGE_SIZE: usize = 4096;
/// [`PAGE_SIZE`] as a file offset unit.
pub(crate) const PAGE: u64 = PAGE_SIZE as u64;

/// One page's bytes.
pub(crate) type PageBuf = [u8; PAGE_SIZE];

/// A page id. Pages 0 and 1 are the meta pages; id 0 also serves as "none" in
/// every pointer field, since no tree, overflow or free-list pointer can name a
/// meta page.
pub(crate) type PageId = u64;
pub(crate) const NO_PAGE: PageId = 0;
/// The first page that can hold anything but a meta.
pub(crate) const FIRST_DATA_PAGE: PageId = 2;

fn get_u16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
fn get_u32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}
fn get_u64(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}
// Encoders only write at offsets computed from constants and lengths the
// encoder checked itself, so these index directly.
fn put_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

fn corrupt(page: PageId, what: &'static str) -> BtreeError {
    BtreeError::Corrupt { page, what }
}

// ---------------------------------------------------------------------------
// Meta page (pages 0 and 1)
//
// | offset | size | field            |
// |--------|------|------------------|
// | 0      | 8    | magic "FRCDBT\r\n" |
// | 8      | 4    | format version (1) |
// | 12     | 4    | page size (4096) |
// | 16     | 8    | txn id           |
// | 24     | 8    | catalog root page (0 = no buckets) |
// | 32     | 8    | free-list head page (0 = empty) |
// | 40     | 8    | free pages (count listed in the free list) |
// | 48     | 8    | page count (pages 0..count belong to the db) |
// | 56     | 4    | crc32 of bytes 0..56 |
// | 60..4096 |    | zero, not covered |
// ---------------------------------------------------------------------------

/// Identifies a ferrocd B-tree file. `\r\n` catches text-mode mangling like
/// PNG's magic does.
pub(crate) const MAGIC: [u8; 8] = *b"FRCDBT\r\n";
/// The format version this code writes and the only one it reads.
pub(crate) const FORMAT_VERSION: u32 = 1;

const META_MAGIC_OFF: usize = 0;
const META_VERSION_OFF: usize = META_MAGIC_OFF + MAGIC.len();
const META_PAGE_SIZE_OFF: usize = META_VERSION_OFF + size_of::<u32>();
const META_TXN_OFF: usize = META_PAGE_SIZE_OFF + size_of::<u32>();
const META_CATALOG_OFF: usize = META_TXN_OFF + size_of::<u64>();
const META_FREELIST_OFF: usize = META_CATALOG_OFF + size_of::<u64>();
const META_FREE_PAGES_OFF: usize = META_FREELIST_OFF + size_of::<u64>();
const META_PAGE_COUNT_OFF: usize = META_FREE_PAGES_OFF + size_of::<u64>();
const META_CRC_OFF: usize = META_PAGE_COUNT_OFF + size_of::<u64>();
/// Bytes of a meta page that carry data; the rest of the page is zero.
pub(crate) const META_LEN: usize = META_CRC_OFF + size_of::<u32>();

/// One commit's root record. Two copies alternate in pages 0 and 1: txn `n`
/// is written to page `n % 2`.
///
/// Invariant: `FIRST_DATA_PAGE <= page_count`, every page id reachable from
/// this meta is `< page_count`, and the file is at least `page_count` pages
/// long once this meta is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    pub txn: u64,
    pub catalog_root: PageId,
    pub freelist_head: PageId,
    pub free_pages: u64,
    pub page_count: u64,
}

impl Meta {
    /// The meta of a new, empty file.
    pub(crate) fn empty() -> Meta {
        Meta {
            txn: 0,
            catalog_root: NO_PAGE,
            freelist_head: NO_PAGE,
            free_pages: 0,
            page_count: FIRST_DATA_PAGE,
        }
    }

    /// The meta page slot txn `txn` is written to.
    pub(crate) fn slot(txn: u64) -> PageId {
        txn % 2
    }

    pub(crate) fn encode(&self) -> Box<PageBuf> {
        let mut b = Box::new([0u8; PAGE_SIZE]);
        b[META_MAGIC_OFF..META_MAGIC_OFF + MAGIC.len()].copy_from_slice(&MAGIC);
        put_u32(&mut b[..], META_VERSION_OFF, FORMAT_VERSION);
        put_u32(&mut b[..], META_PAGE_SIZE_OFF, PAGE_SIZE as u32);
        put_u64(&mut b[..], META_TXN_OFF, self.txn);
        put_u64(&mut b[..], META_CATALOG_OFF, self.catalog_root);
        put_u64(&mut b[..], META_FREELIST_OFF, self.freelist_head);
        put_u64(&mut b[..], META_FREE_PAGES_OFF, self.free_pages);
        put_u64(&mut b[..], META_PAGE_COUNT_OFF, self.page_count);
        let crc = crc32fast::hash(&b[..META_CRC_OFF]);
        put_u32(&mut b[..], META_CRC_OFF, crc);
        b
    }

    /// Decodes the meta in `slot`'s bytes. `Ok(None)` means "not a valid
    /// commit" (bad checksum, zeroed, torn): the caller falls back to the other
    /// slot. A checksummed meta of another format version or page size is an
    /// error, not a fallback, since the other slot would be an older commit of
    /// a file this code cannot read either.
    pub(crate) fn decode(slot: PageId, b: &[u8]) -> Result<Option<Meta>, BtreeError> {
        if b.len() < META_LEN {
            return Ok(None);
        }
        let (Some(head), Some(crc)) = (b.get(..META_CRC_OFF), get_u32(b, META_CRC_OFF)) else {
            return Ok(None);
        };
        if crc32fast::hash(head) != crc || head.get(..MAGIC.len()) != Some(&MAGIC[..]) {
            return Ok(None);
        }
        let field = |off| get_u64(b, off).ok_or_else(|| corrupt(slot, "meta page too short"));
        let version =
            get_u32(b, META_VERSION_OFF).ok_or_else(|| corrupt(slot, "meta page too short"))?;
        if version != FORMAT_VERSION {
            return Err(BtreeError::UnsupportedVersion { found: version });
        }
        if get_u32(b, META_PAGE_SIZE_OFF) != Some(PAGE_SIZE as u32) {
            return Err(corrupt(slot, "meta page size is not 4096"));
        }
        let meta = Meta {
            txn: field(META_TXN_OFF)?,
            catalog_root: field(META_CATALOG_OFF)?,
            freelist_head: field(META_FREELIST_OFF)?,
            free_pages: field(META_FREE_PAGES_OFF)?,
            page_count: field(META_PAGE_COUNT_OFF)?,
        };
        let ptr_ok = |p: PageId| p == NO_PAGE || (FIRST_DATA_PAGE..meta.page_count).contains(&p);
        if meta.page_count < FIRST_DATA_PAGE
            || !ptr_ok(meta.catalog_root)
            || !ptr_ok(meta.freelist_head)
            || meta.free_pages > meta.page_count - FIRST_DATA_PAGE
        {
            return Err(corrupt(slot, "meta fields out of range"));
        }
        Ok(Some(meta))
    }
}

// ---------------------------------------------------------------------------
// Common page header (every page but the metas)
//
// | offset | size | field |
// |--------|------|-------|
// | 0      | 4    | crc32 of bytes 4..4096 |
// | 4      | 1    | page type: 1 leaf, 2 branch, 3 overflow, 4 free list |
// | 5      | 1    | flags (0) |
// | 6      | 2    | count (entries / children / runs; 0 for overflow) |
// | 8      | 8    | this page's own id (catches misdirected reads and writes) |
// ---------------------------------------------------------------------------

const HDR_CRC_OFF: usize = 0;
const HDR_TYPE_OFF: usize = HDR_CRC_OFF + size_of::<u32>();
const HDR_FLAGS_OFF: usize = HDR_TYPE_OFF + size_of::<u8>();
const HDR_COUNT_OFF: usize = HDR_FLAGS_OFF + size_of::<u8>();
const HDR_ID_OFF: usize = HDR_COUNT_OFF + size_of::<u16>();
pub(crate) const HEADER_LEN: usize = HDR_ID_OFF + size_of::<u64>();

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum PageType {
    Leaf = 1,
    Branch = 2,
    Overflow = 3,
    FreeList = 4,
}

impl PageType {
    fn from_u8(v: u8) -> Option<PageType> {
        Some(match v {
            1 => PageType::Leaf,
            2 => PageType::Branch,
            3 => PageType::Overflow,
            4 => PageType::FreeList,
            _ => return None,
        })
    }
}

/// Bytes a page body can use.
pub(crate) const BODY_LEN: usize = PAGE_SIZE - HEADER_LEN;

fn start_page(b: &mut PageBuf, ty: PageType, count: u16, id: PageId) {
    b[HDR_TYPE_OFF] = ty as u8;
    b[HDR_FLAGS_OFF] = 0;
    put_u16(b, HDR_COUNT_OFF, count);
    put_u64(b, HDR_ID_OFF, id);
}

fn seal_page(b: &mut PageBuf) {
    let crc = crc32fast::hash(&b[HDR_TYPE_OFF..]);
    put_u32(b, HDR_CRC_OFF, crc);
}

/// Checks a page's CRC32 (bytes 4..4096 against the stored one).
pub(crate) fn check_crc(b: &[u8], id: PageId) -> Result<(), BtreeError> {
    let stored = get_u32(b, HDR_CRC_OFF).ok_or_else(|| corrupt(id, "short page"))?;
    if b.len() != PAGE_SIZE || crc32fast::hash(b.get(HDR_TYPE_OFF..).unwrap_or_default()) != stored
    {
        return Err(corrupt(id, "page checksum mismatch"));
    }
    Ok(())
}

/// Checks a page's checksum (when `verify_crc`), its self id and its type;
/// returns the type and the count field. Every reader goes through this before
/// it looks at a body.
pub(crate) fn check_header(
    b: &[u8],
    id: PageId,
    verify_crc: bool,
) -> Result<(PageType, usize), BtreeError> {
    if b.len() != PAGE_SIZE {
        return Err(corrupt(id, "short page"));
    }
    if verify_crc {
        check_crc(b, id)?;
    }
    if get_u64(b, HDR_ID_OFF) != Some(id) {
        return Err(corrupt(id, "page holds another page's id"));
    }
    let ty = b
        .get(HDR_TYPE_OFF)
        .copied()
        .and_then(PageType::from_u8)
        .ok_or_else(|| corrupt(id, "unknown page type"))?;
    let count = get_u16(b, HDR_COUNT_OFF).ok_or_else(|| corrupt(id, "short page"))?;
    Ok((ty, usize::from(count)))
}

// ---------------------------------------------------------------------------
// Leaf page (type 1)
//
// | offset          | size      | field |
// |-----------------|-----------|-------|
// | 16              | 2 × count | entry offsets (u16, from page start), keys ascending |
// | entry + 0       | 2         | key length |
// | entry + 2       | 1         | value kind: 0 inline, 1 overflow |
// | entry + 3       | 4         | value length (the whole value, also for overflow) |
// | entry + 7       | key len   | key |
// | entry + 7 + kl  | vlen or 8 | inline value, or the first overflow page id (u64) |
//
// Branch page (type 2), count = number of children (>= 1)
//
// | offset          | size      | field |
// |-----------------|-----------|-------|
// | 16              | 2 × count | entry offsets |
// | entry + 0       | 2         | key length (0 for entry 0) |
// | entry + 2       | 8         | child page id |
// | entry + 10      | key len   | separator key |
//
// Child i holds keys >= key i and < key i+1; key 0 is not stored (it is the
// separator in the parent).
// ---------------------------------------------------------------------------

const SLOT_LEN: usize = size_of::<u16>();
const LEAF_KEY_LEN_OFF: usize = 0;
const LEAF_KIND_OFF: usize = LEAF_KEY_LEN_OFF + size_of::<u16>();
const LEAF_VAL_LEN_OFF: usize = LEAF_KIND_OFF + size_of::<u8>();
const LEAF_KEY_OFF: usize = LEAF_VAL_LEN_OFF + size_of::<u32>();
const BRANCH_KEY_LEN_OFF: usize = 0;
const BRANCH_CHILD_OFF: usize = BRANCH_KEY_LEN_OFF + size_of::<u16>();
const BRANCH_KEY_OFF: usize = BRANCH_CHILD_OFF + size_of::<u64>();

const KIND_INLINE: u8 = 0;
const KIND_OVERFLOW: u8 = 1;

/// Longest key any tree accepts. With [`MAX_LEAF_ENTRY`] it guarantees every
/// leaf and branch entry uses at most a third of a page body, so a node split
/// at its byte midpoint always gives halves that fit (see `tree::chunk`).
pub(crate) const MAX_KEY_LEN: usize = 1024;
/// Largest encoded leaf entry (slot included) stored inline; a bigger value
/// goes to overflow pages. `BODY_LEN / 3`.
pub(crate) const MAX_LEAF_ENTRY: usize = BODY_LEN / 3;
/// Largest value accepted. etcd caps a request at 1.5 MiB; the format's limit
/// is `u32::MAX`, this one keeps a single value's memory bounded.
pub(crate) const MAX_VALUE_LEN: usize = 64 << 20;

/// Bytes a leaf entry takes in a page (slot included).
pub(crate) fn leaf_entry_len(key_len: usize, stored_value_len: usize) -> usize {
    SLOT_LEN + LEAF_KEY_OFF + key_len + stored_value_len
}
/// Stored size of an overflow reference in a leaf.
pub(crate) const OVERFLOW_REF_LEN: usize = size_of::<u64>();
/// Bytes a branch entry takes in a page (slot included).
pub(crate) fn branch_entry_len(key_len: usize) -> usize {
    SLOT_LEN + BRANCH_KEY_OFF + key_len
}

/// A leaf value as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StoredValue<'a> {
    Inline(&'a [u8]),
    Overflow { first: PageId, len: u64 },
}

/// Encodes a leaf. The caller guarantees the entries fit (sum of
/// [`leaf_entry_len`] <= [`BODY_LEN`]) and are sorted.
pub(crate) fn encode_leaf<'a>(
    id: PageId,
    entries: impl ExactSizeIterator<Item = (&'a [u8], StoredValue<'a>)>,
) -> Box<PageBuf> {
    let mut b = Box::new([0u8; PAGE_SIZE]);
    let count = entries.len();
    start_page(&mut b, PageType::Leaf, count as u16, id);
    let mut off = HEADER_LEN + SLOT_LEN * count;
    for (i, (key, val)) in entries.enumerate() {
        put_u16(&mut b[..], HEADER_LEN + SLOT_LEN * i, off as u16);
        put_u16(&mut b[..], off + LEAF_KEY_LEN_OFF, key.len() as u16);
        let key_at = off + LEAF_KEY_OFF;
        b[key_at..key_at + key.len()].copy_from_slice(key);
        let val_at = key_at + key.len();
        match val {
            StoredValue::Inline(v) => {
                b[off + LEAF_KIND_OFF] = KIND_INLINE;
                put_u32(&mut b[..], off + LEAF_VAL_LEN_OFF, v.len() as u32);
                b[val_at..val_at + v.len()].copy_from_slice(v);
                off = val_at + v.len();
            }
            StoredValue::Overflow { first, len } => {
                b[off + LEAF_KIND_OFF] = KIND_OVERFLOW;
                put_u32(&mut b[..], off + LEAF_VAL_LEN_OFF, len as u32);
                put_u64(&mut b[..], val_at, first);
                off = val_at + OVERFLOW_REF_LEN;
            }
        }
    }
    seal_page(&mut b);
    b
}

/// Encodes a branch. `keys[0]` is not stored. The caller guarantees fit.
pub(crate) fn encode_branch<'a>(
    id: PageId,
    entries: impl ExactSizeIterator<Item = (&'a [u8], PageId)>,
) -> Box<PageBuf> {
    let mut b = Box::new([0u8; PAGE_SIZE]);
    let count = entries.len();
    start_page(&mut b, PageType::Branch, count as u16, id);
    let mut off = HEADER_LEN + SLOT_LEN * count;
    for (i, (key, child)) in entries.enumerate() {
        let key: &[u8] = if i == 0 { &[] } else { key };
        put_u16(&mut b[..], HEADER_LEN + SLOT_LEN * i, off as u16);
        put_u16(&mut b[..], off + BRANCH_KEY_LEN_OFF, key.len() as u16);
        put_u64(&mut b[..], off + BRANCH_CHILD_OFF, child);
        let key_at = off + BRANCH_KEY_OFF;
        b[key_at..key_at + key.len()].copy_from_slice(key);
        off = key_at + key.len();
    }
    seal_page(&mut b);
    b
}

/// Checked accessors over a leaf or branch page whose header passed
/// [`check_header`]. Each access checks the offsets it reads, so a page is
/// never validated as a whole up front (a point read touches log(n) entries).
#[derive(Clone, Copy)]
pub(crate) struct NodePage<'a> {
    pub bytes: &'a [u8],
    pub id: PageId,
    pub count: usize,
    pub leaf: bool,
}

impl<'a> NodePage<'a> {
    pub(crate) fn new(
        bytes: &'a [u8],
        id: PageId,
        verify_crc: bool,
    ) -> Result<NodePage<'a>, BtreeError> {
        let (ty, count) = check_header(bytes, id, verify_crc)?;
        let leaf = match ty {
            PageType::Leaf => true,
            PageType::Branch => false,
            _ => return Err(corrupt(id, "expected a leaf or branch page")),
        };
        if HEADER_LEN + SLOT_LEN * count > PAGE_SIZE || (!leaf && count == 0) {
            return Err(corrupt(id, "entry count does not fit the page"));
        }
        Ok(NodePage {
            bytes,
            id,
            count,
            leaf,
        })
    }

    fn entry_off(&self, i: usize) -> Result<usize, BtreeError> {
        if i >= self.count {
            return Err(corrupt(self.id, "entry index out of range"));
        }
        let off = get_u16(self.bytes, HEADER_LEN + SLOT_LEN * i)
            .ok_or_else(|| corrupt(self.id, "slot out of page"))?;
        let off = usize::from(off);
        if off < HEADER_LEN + SLOT_LEN * self.count {
            return Err(corrupt(self.id, "entry overlaps the slot array"));
        }
        Ok(off)
    }

    fn slice(&self, from: usize, len: usize, what: &'static str) -> Result<&'a [u8], BtreeError> {
        from.checked_add(len)
            .and_then(|end| self.bytes.get(from..end))
            .ok_or_else(|| corrupt(self.id, what))
    }

    /// Key of entry `i` (for a branch, `i == 0` gives the empty key).
    pub(crate) fn key(&self, i: usize) -> Result<&'a [u8], BtreeError> {
        let off = self.entry_off(i)?;
        let (len_off, key_off) = if self.leaf {
            (LEAF_KEY_LEN_OFF, LEAF_KEY_OFF)
        } else {
            (BRANCH_KEY_LEN_OFF, BRANCH_KEY_OFF)
        };
        let kl = get_u16(self.bytes, off + len_off)
            .ok_or_else(|| corrupt(self.id, "entry out of page"))?;
        self.slice(off + key_off, usize::from(kl), "key out of page")
    }

    /// Child page of branch entry `i`.
    pub(crate) fn child(&self, i: usize) -> Result<PageId, BtreeError> {
        let off = self.entry_off(i)?;
        get_u64(self.bytes, off + BRANCH_CHILD_OFF)
            .ok_or_else(|| corrupt(self.id, "child out of page"))
    }

    /// Key and value of leaf entry `i`.
    pub(crate) fn entry(&self, i: usize) -> Result<(&'a [u8], StoredValue<'a>), BtreeError> {
        let key = self.key(i)?;
        let off = self.entry_off(i)?;
        let kind = self.bytes.get(off + LEAF_KIND_OFF).copied();
        let vlen = get_u32(self.bytes, off + LEAF_VAL_LEN_OFF)
            .ok_or_else(|| corrupt(self.id, "entry out of page"))?;
        let val_at = off + LEAF_KEY_OFF + key.len();
        let val = match kind {
            Some(KIND_INLINE) => {
                StoredValue::Inline(self.slice(val_at, vlen as usize, "value out of page")?)
            }
            Some(KIND_OVERFLOW) => {
                let first = get_u64(self.bytes, val_at)
                    .ok_or_else(|| corrupt(self.id, "overflow ref out of page"))?;
                StoredValue::Overflow {
                    first,
                    len: u64::from(vlen),
                }
            }
            _ => return Err(corrupt(self.id, "unknown value kind")),
        };
        Ok((key, val))
    }

    /// Leaf: index of the first entry with key >= `key`, and whether it is
    /// equal. Binary search; a page whose keys are out of order gives a wrong
    /// answer but never a panic.
    pub(crate) fn lower_bound(&self, key: &[u8]) -> Result<(usize, bool), BtreeError> {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.key(mid)?.cmp(key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Equal => return Ok((mid, true)),
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        Ok((lo, false))
    }

    /// Branch: index of the child whose range holds `key` (the last child
    /// whose separator is <= key; child 0 if none).
    pub(crate) fn child_index(&self, key: &[u8]) -> Result<usize, BtreeError> {
        let (mut lo, mut hi) = (1, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.key(mid)? <= key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo - 1)
    }
}

// ---------------------------------------------------------------------------
// Overflow page (type 3), count = 0
//
// | offset | size | field |
// |--------|------|-------|
// | 16     | 8    | next overflow page (0 = last) |
// | 24     | 4    | data length in this page |
// | 28     | len  | data |
//
// Every page of a chain but the last is full (`OVERFLOW_DATA_LEN` bytes).
// ---------------------------------------------------------------------------

const OVF_NEXT_OFF: usize = HEADER_LEN;
const OVF_LEN_OFF: usize = OVF_NEXT_OFF + size_of::<u64>();
const OVF_DATA_OFF: usize = OVF_LEN_OFF + size_of::<u32>();
/// Value bytes per overflow page.
pub(crate) const OVERFLOW_DATA_LEN: usize = PAGE_SIZE - OVF_DATA_OFF;

/// Pages an overflow value of `len` bytes takes.
pub(crate) fn overflow_pages(len: usize) -> usize {
    len.div_ceil(OVERFLOW_DATA_LEN)
}

pub(crate) fn encode_overflow(id: PageId, next: PageId, data: &[u8]) -> Box<PageBuf> {
    let mut b = Box::new([0u8; PAGE_SIZE]);
    start_page(&mut b, PageType::Overflow, 0, id);
    put_u64(&mut b[..], OVF_NEXT_OFF, next);
    put_u32(&mut b[..], OVF_LEN_OFF, data.len() as u32);
    b[OVF_DATA_OFF..OVF_DATA_OFF + data.len()].copy_from_slice(data);
    seal_page(&mut b);
    b
}

/// Next page and this page's data of an overflow page.
pub(crate) fn decode_overflow(
    b: &[u8],
    id: PageId,
    verify_crc: bool,
) -> Result<(PageId, &[u8]), BtreeError> {
    let (ty, _) = check_header(b, id, verify_crc)?;
    if ty != PageType::Overflow {
        return Err(corrupt(id, "expected an overflow page"));
    }
    let next = get_u64(b, OVF_NEXT_OFF).ok_or_else(|| corrupt(id, "short page"))?;
    let len = get_u32(b, OVF_LEN_OFF).ok_or_else(|| corrupt(id, "short page"))? as usize;
    let data = b
        .get(OVF_DATA_OFF..OVF_DATA_OFF.saturating_add(len))
        .ok_or_else(|| corrupt(id, "overflow length out of page"))?;
    Ok((next, data))
}

// ---------------------------------------------------------------------------
// Free-list page (type 4), count = number of runs
//
// | offset      | size | field |
// |-------------|------|-------|
// | 16          | 8    | next free-list page (0 = last) |
// | 24 + 12 × i | 8    | run i: first free page |
// | 32 + 12 × i | 4    | run i: length in pages (>= 1) |
// ---------------------------------------------------------------------------

const FL_NEXT_OFF: usize = HEADER_LEN;
const FL_RUNS_OFF: usize = FL_NEXT_OFF + size_of::<u64>();
const FL_RUN_LEN: usize = size_of::<u64>() + size_of::<u32>();
/// Runs per free-list page.
pub(crate) const FREELIST_RUNS_PER_PAGE: usize = (PAGE_SIZE - FL_RUNS_OFF) / FL_RUN_LEN;

pub(crate) fn encode_freelist(id: PageId, next: PageId, runs: &[(PageId, u32)]) -> Box<PageBuf> {
    let mut b = Box::new([0u8; PAGE_SIZE]);
    start_page(&mut b, PageType::FreeList, runs.len() as u16, id);
    put_u64(&mut b[..], FL_NEXT_OFF, next);
    for (i, &(start, len)) in runs.iter().enumerate() {
        let at = FL_RUNS_OFF + FL_RUN_LEN * i;
        put_u64(&mut b[..], at, start);
        put_u32(&mut b[..], at + size_of::<u64>(), len);
    }
    seal_page(&mut b);
    b
}

/// Next page and runs of a free-list page.
pub(crate) fn decode_freelist(
    b: &[u8],
    id: PageId,
) -> Result<(PageId, Vec<(PageId, u32)>), BtreeError> {
    let (ty, count) = check_header(b, id, true)?;
    if ty != PageType::FreeList {
        return Err(corrupt(id, "expected a free-list page"));
    }
    if count > FREELIST_RUNS_PER_PAGE {
        return Err(corrupt(id, "free-list run count does not fit the page"));
    }
    let next = get_u64(b, FL_NEXT_OFF).ok_or_else(|| corrupt(id, "short page"))?;
    let mut runs = Vec::with_capacity(count);
    for i in 0..count {
        let at = FL_RUNS_OFF + FL_RUN_LEN * i;
        let start = get_u64(b, at).ok_or_else(|| corrupt(id, "run out of page"))?;
        let len =
            get_u32(b, at + size_of::<u64>()).ok_or_else(|| corrupt(id, "run out of page"))?;
        runs.push((start, len));
    }
    Ok((next, runs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_layout_matches_format_doc() {
        // FORMAT.md §2's table: crc at 56, 60 bytes used.
        assert_eq!(META_CRC_OFF, 56);
        assert_eq!(META_LEN, 60);
        assert_eq!(HEADER_LEN, 16);
        assert_eq!(OVERFLOW_DATA_LEN, 4068);
        assert_eq!(FREELIST_RUNS_PER_PAGE, 339);
        assert_eq!(MAX_LEAF_ENTRY, 1360);
        // Entry-size bound that makes midpoint splits always fit.
        assert!(leaf_entry_len(MAX_KEY_LEN, OVERFLOW_REF_LEN) <= MAX_LEAF_ENTRY);
        assert!(branch_entry_len(MAX_KEY_LEN) <= MAX_LEAF_ENTRY);
    }

    #[test]
    fn meta_round_trips_and_every_corrupted_field_is_rejected() {
        let m = Meta {
            txn: 7,
            catalog_root: 5,
            freelist_head: 9,
            free_pages: 3,
            page_count: 10,
        };
        let b = m.encode();
        assert_eq!(Meta::decode(1, &b[..]).unwrap(), Some(m));
        // Flipping any covered byte makes the slot invalid (fallback), never Ok(Some).
        for i in 0..META_LEN {
            let mut c = b.clone();
            c[i] ^= 0x40;
            assert!(!matches!(Meta::decode(1, &c[..]), Ok(Some(_))), "byte {i}");
        }
        // Bytes past the covered area are ignored.
        let mut c = b.clone();
        c[PAGE_SIZE - 1] = 0xff;
        assert_eq!(Meta::decode(1, &c[..]).unwrap(), Some(m));
        assert_eq!(Meta::decode(0, &[0u8; PAGE_SIZE]).unwrap(), None);
        assert_eq!(Meta::decode(0, &[]).unwrap(), None);
    }

    #[test]
    fn meta_with_valid_crc_but_wild_pointers_is_corrupt() {
        let m = Meta {
            txn: 7,
            catalog_root: 50,
            freelist_head: 0,
            free_pages: 0,
            page_count: 10,
        };
        assert!(matches!(
            Meta::decode(1, &m.encode()[..]),
            Err(BtreeError::Corrupt { page: 1, .. })
        ));
    }

    #[test]
    fn leaf_and_branch_round_trip() {
        let entries: Vec<(&[u8], StoredValue)> = vec![
            (b"a", StoredValue::Inline(b"1")),
            (
                b"bb",
                StoredValue::Overflow {
                    first: 42,
                    len: 9000,
                },
            ),
            (b"c", StoredValue::Inline(b"")),
        ];
        let p = encode_leaf(3, entries.clone().into_iter());
        let n = NodePage::new(&p[..], 3, true).unwrap();
        assert!(n.leaf);
        assert_eq!(n.count, 3);
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(n.entry(i).unwrap(), *e);
        }
        assert_eq!(n.lower_bound(b"b").unwrap(), (1, false));
        assert_eq!(n.lower_bound(b"c").unwrap(), (2, true));
        assert_eq!(n.lower_bound(b"d").unwrap(), (3, false));
        assert!(matches!(
            NodePage::new(&p[..], 4, true),
            Err(BtreeError::Corrupt { page: 4, .. })
        ));

        let p = encode_branch(8, [(&b"ignored"[..], 2), (b"m", 3), (b"t", 4)].into_iter());
        let n = NodePage::new(&p[..], 8, true).unwrap();
        assert!(!n.leaf);
        assert_eq!(n.key(0).unwrap(), b"");
        assert_eq!(n.child_index(b"a").unwrap(), 0);
        assert_eq!(n.child_index(b"m").unwrap(), 1);
        assert_eq!(n.child_index(b"s").unwrap(), 1);
        assert_eq!(n.child_index(b"z").unwrap(), 2);
        assert_eq!(n.child(2).unwrap(), 4);
    }

    #[test]
    fn flipped_page_byte_fails_the_checksum() {
        let p = encode_leaf(3, [(&b"k"[..], StoredValue::Inline(b"v"))].into_iter());
        for i in [0, 4, 6, 8, 20, 100, PAGE_SIZE - 1] {
            let mut c = p.clone();
            c[i] ^= 1;
            assert!(
                matches!(
                    NodePage::new(&c[..], 3, true),
                    Err(BtreeError::Corrupt { .. })
                ),
                "byte {i}"
            );
        }
    }

    #[test]
    fn overflow_and_freelist_round_trip() {
        let p = encode_overflow(5, 6, b"hello");
        assert_eq!(
            decode_overflow(&p[..], 5, true).unwrap(),
            (6, &b"hello"[..])
        );
        let runs = vec![(2, 3), (10, 1)];
        let p = encode_freelist(7, 0, &runs);
        assert_eq!(decode_freelist(&p[..], 7).unwrap(), (0, runs));
    }
}
