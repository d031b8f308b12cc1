//! Copy-on-write B+tree operations.
//!
//! A write txn never modifies a page. The first time it changes a node it
//! copies the node into an in-memory arena ([`MemNode`], "dirty") and records
//! the page as freed by this txn; parents on the path are copied the same way
//! and point at the copy with [`NodeRef::Mem`]. Dirty nodes may grow past a page
//! or shrink to nothing while the txn runs. At commit, [`Cow::rebalance`] merges
//! small dirty nodes into a sibling and [`Cow::spill`] writes the dirty part
//! bottom-up, splitting every node into page-sized chunks and allocating the
//! page ids only then (bbolt's rebalance/spill, on an arena instead of pointers).
//!
//! Invariant (B+tree): all leaves are at the same depth; in a branch, child `i`
//! holds keys `>= key[i]` (for `i > 0`) and `< key[i+1]`; keys in a leaf are
//! strictly ascending. A dirty node keeps the same rule; `keys[0]` of a dirty
//! branch is carried but never stored or compared.

use super::error::BtreeError;
use super::format::{
    self, branch_entry_len, leaf_entry_len, NodePage, PageBuf, PageId, StoredValue, BODY_LEN,
    MAX_LEAF_ENTRY, OVERFLOW_DATA_LEN, OVERFLOW_REF_LEN,
};
use super::pages::{PageRef, Reader};

/// Deepest tree accepted. A node has at least 3 children after a split
/// (entries are at most a third of a page), so 32 levels is far beyond any
/// file; a deeper descent means a pointer cycle on disk.
pub(crate) const MAX_DEPTH: usize = 32;

/// A dirty node whose encoded size is below this is merged into a sibling at
/// commit (bbolt's 25% rule). Merging then re-splitting at the midpoint keeps
/// every written page at least about a quarter full, except a root and a
/// lone child.
const MERGE_THRESHOLD: usize = BODY_LEN / 4;

/// A node: a page of the base snapshot, or a dirty copy in the arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NodeRef {
    Page(PageId),
    Mem(usize),
}

/// A value in a dirty leaf.
#[derive(Clone, Debug)]
pub(crate) enum MemValue {
    /// Small enough to store in the leaf.
    Inline(Vec<u8>),
    /// An overflow chain already on disk (copied from a base page).
    Overflow { first: PageId, len: u64 },
    /// A new value that goes to overflow pages at commit.
    Big(Vec<u8>),
}

impl MemValue {
    /// Wraps a new value, choosing inline or overflow by the entry size.
    pub(crate) fn new(key: &[u8], value: &[u8]) -> MemValue {
        if leaf_entry_len(key.len(), value.len()) <= MAX_LEAF_ENTRY {
            MemValue::Inline(value.to_vec())
        } else {
            MemValue::Big(value.to_vec())
        }
    }

    fn stored_len(&self) -> usize {
        match self {
            MemValue::Inline(v) => v.len(),
            MemValue::Overflow { .. } | MemValue::Big(_) => OVERFLOW_REF_LEN,
        }
    }
}

#[derive(Debug)]
pub(crate) enum MemNode {
    Leaf(Vec<(Vec<u8>, MemValue)>),
    Branch {
        keys: Vec<Vec<u8>>,
        children: Vec<NodeRef>,
    },
}

impl MemNode {
    fn encoded_len(&self) -> usize {
        match self {
            MemNode::Leaf(e) => e
                .iter()
                .map(|(k, v)| leaf_entry_len(k.len(), v.stored_len()))
                .sum(),
            MemNode::Branch { keys, .. } => {
                keys.iter()
                    .skip(1)
                    .map(|k| branch_entry_len(k.len()))
                    .sum::<usize>()
                    + branch_entry_len(0)
            }
        }
    }
}

/// Where a value lives, as found by a lookup.
pub(crate) enum ValRef<'a> {
    Slice(&'a [u8]),
    Overflow { first: PageId, len: u64 },
}

/// A loaded node: a checked page of the snapshot or a dirty node.
pub(crate) enum Loaded<'a> {
    Page {
        page: PageRef<'a>,
        id: PageId,
        count: usize,
        leaf: bool,
    },
    Mem(&'a MemNode),
}

impl Loaded<'_> {
    fn view(&self) -> Option<NodePage<'_>> {
        match self {
            Loaded::Page {
                page,
                id,
                count,
                leaf,
            } => Some(NodePage {
                bytes: page,
                id: *id,
                count: *count,
                leaf: *leaf,
            }),
            Loaded::Mem(_) => None,
        }
    }

    pub(crate) fn is_leaf(&self) -> bool {
        match self {
            Loaded::Page { leaf, .. } => *leaf,
            Loaded::Mem(n) => matches!(n, MemNode::Leaf(_)),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Loaded::Page { count, .. } => *count,
            Loaded::Mem(MemNode::Leaf(e)) => e.len(),
            Loaded::Mem(MemNode::Branch { children, .. }) => children.len(),
        }
    }

    /// Key `i` (a branch's key 0 is empty on disk and unused).
    pub(crate) fn entry_key(&self, i: usize) -> Result<&[u8], BtreeError> {
        match (self.view(), self) {
            (Some(v), _) => v.key(i),
            (None, Loaded::Mem(MemNode::Leaf(e))) => {
                e.get(i).map(|e| e.0.as_slice()).ok_or(BtreeError::Corrupt {
                    page: 0,
                    what: "dirty entry index",
                })
            }
            (None, Loaded::Mem(MemNode::Branch { keys, .. })) => {
                keys.get(i).map(Vec::as_slice).ok_or(BtreeError::Corrupt {
                    page: 0,
                    what: "dirty entry index",
                })
            }
            _ => Err(BtreeError::Corrupt {
                page: 0,
                what: "entry index",
            }),
        }
    }

    pub(crate) fn child(&self, i: usize) -> Result<NodeRef, BtreeError> {
        match (self.view(), self) {
            (Some(v), _) => Ok(NodeRef::Page(v.child(i)?)),
            (None, Loaded::Mem(MemNode::Branch { children, .. })) => {
                children.get(i).copied().ok_or(BtreeError::Corrupt {
                    page: 0,
                    what: "dirty child index",
                })
            }
            _ => Err(BtreeError::Corrupt {
                page: 0,
                what: "child of a leaf",
            }),
        }
    }

    pub(crate) fn child_index(&self, key: &[u8]) -> Result<usize, BtreeError> {
        match (self.view(), self) {
            (Some(v), _) => v.child_index(key),
            (None, Loaded::Mem(MemNode::Branch { keys, .. })) => Ok(mem_child_index(keys, key)),
            _ => Err(BtreeError::Corrupt {
                page: 0,
                what: "child of a leaf",
            }),
        }
    }

    pub(crate) fn lower_bound(&self, key: &[u8]) -> Result<(usize, bool), BtreeError> {
        match (self.view(), self) {
            (Some(v), _) => v.lower_bound(key),
            (None, Loaded::Mem(MemNode::Leaf(e))) => {
                Ok(match e.binary_search_by(|(k, _)| k.as_slice().cmp(key)) {
                    Ok(i) => (i, true),
                    Err(i) => (i, false),
                })
            }
            _ => Err(BtreeError::Corrupt {
                page: 0,
                what: "entry of a branch",
            }),
        }
    }

    pub(crate) fn entry(&self, i: usize) -> Result<(&[u8], ValRef<'_>), BtreeError> {
        match self {
            Loaded::Page {
                page,
                id,
                count,
                leaf,
            } => {
                let v = NodePage {
                    bytes: page,
                    id: *id,
                    count: *count,
                    leaf: *leaf,
                };
                let (k, val) = v.entry(i)?;
                Ok((
                    k,
                    match val {
                        StoredValue::Inline(s) => ValRef::Slice(s),
                        StoredValue::Overflow { first, len } => ValRef::Overflow { first, len },
                    },
                ))
            }
            Loaded::Mem(MemNode::Leaf(e)) => {
                let (k, v) = e.get(i).ok_or(BtreeError::Corrupt {
                    page: 0,
                    what: "dirty entry index",
                })?;
                Ok((
                    k,
                    match v {
                        MemValue::Inline(s) | MemValue::Big(s) => ValRef::Slice(s),
                        MemValue::Overflow { first, len } => ValRef::Overflow {
                            first: *first,
                            len: *len,
                        },
                    },
                ))
            }
            Loaded::Mem(_) => Err(BtreeError::Corrupt {
                page: 0,
                what: "entry of a branch",
            }),
        }
    }
}

fn mem_child_index(keys: &[Vec<u8>], key: &[u8]) -> usize {
    // Last i >= 1 with keys[i] <= key, else 0.
    keys.get(1..)
        .map_or(0, |rest| rest.partition_point(|k| k.as_slice() <= key))
}

/// What nodes are read from: the snapshot's pages, plus the write txn's arena.
#[derive(Clone, Copy)]
pub(crate) struct Src<'a> {
    pub reader: &'a Reader,
    pub arena: &'a [MemNode],
}

impl<'a> Src<'a> {
    pub(crate) fn load(&self, r: NodeRef) -> Result<Loaded<'a>, BtreeError> {
        match r {
            NodeRef::Page(id) => {
                let (page, count, leaf) = self.reader.node(id)?;
                Ok(Loaded::Page {
                    page,
                    id,
                    count,
                    leaf,
                })
            }
            NodeRef::Mem(i) => self
                .arena
                .get(i)
                .map(Loaded::Mem)
                .ok_or(BtreeError::Corrupt {
                    page: 0,
                    what: "dirty node index",
                }),
        }
    }

    pub(crate) fn value(&self, v: ValRef<'_>) -> Result<Vec<u8>, BtreeError> {
        match v {
            ValRef::Slice(s) => Ok(s.to_vec()),
            ValRef::Overflow { first, len } => self.reader.overflow(first, len),
        }
    }

    /// Point lookup.
    pub(crate) fn get(
        &self,
        root: Option<NodeRef>,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, BtreeError> {
        let Some(mut r) = root else { return Ok(None) };
        for _ in 0..MAX_DEPTH {
            let node = self.load(r)?;
            if node.is_leaf() {
                let (i, found) = node.lower_bound(key)?;
                if !found {
                    return Ok(None);
                }
                let (_, v) = node.entry(i)?;
                return self.value(v).map(Some);
            }
            r = node.child(node.child_index(key)?)?;
        }
        Err(depth_error(r))
    }
}

pub(crate) fn depth_error(r: NodeRef) -> BtreeError {
    let page = match r {
        NodeRef::Page(p) => p,
        NodeRef::Mem(_) => 0,
    };
    BtreeError::Corrupt {
        page,
        what: "tree deeper than MAX_DEPTH (pointer cycle?)",
    }
}

/// Hands out page ids at commit. Implemented by the commit's allocator.
pub(crate) trait Alloc {
    fn alloc(&mut self) -> PageId;
}

/// A write txn's copy-on-write state.
#[derive(Default)]
pub(crate) struct Cow {
    pub arena: Vec<MemNode>,
    /// Pages of the base snapshot this txn unlinked: freed by this txn.
    pub freed: Vec<PageId>,
}

impl Cow {
    /// Makes `r` dirty: a base page is decoded into the arena and recorded as
    /// freed. Keys are checked to be in order, so a corrupt page is not
    /// rewritten into a tree that breaks the invariant.
    fn make_dirty(&mut self, reader: &Reader, r: NodeRef) -> Result<usize, BtreeError> {
        let id = match r {
            NodeRef::Mem(i) => return Ok(i),
            NodeRef::Page(id) => id,
        };
        let (page, count, leaf) = reader.node(id)?;
        let v = NodePage {
            bytes: &page,
            id,
            count,
            leaf,
        };
        let unordered = BtreeError::Corrupt {
            page: id,
            what: "keys out of order",
        };
        let node = if leaf {
            let mut entries: Vec<(Vec<u8>, MemValue)> = Vec::with_capacity(count);
            for i in 0..count {
                let (k, val) = v.entry(i)?;
                if entries.last().is_some_and(|(p, _)| p.as_slice() >= k) {
                    return Err(unordered);
                }
                let val = match val {
                    StoredValue::Inline(s) => MemValue::Inline(s.to_vec()),
                    StoredValue::Overflow { first, len } => MemValue::Overflow { first, len },
                };
                entries.push((k.to_vec(), val));
            }
            MemNode::Leaf(entries)
        } else {
            let mut keys: Vec<Vec<u8>> = Vec::with_capacity(count);
            let mut children = Vec::with_capacity(count);
            for i in 0..count {
                let k = v.key(i)?;
                if i > 1 && keys.last().is_some_and(|p| p.as_slice() >= k) {
                    return Err(unordered);
                }
                keys.push(k.to_vec());
                children.push(NodeRef::Page(v.child(i)?));
            }
            MemNode::Branch { keys, children }
        };
        self.arena.push(node);
        self.freed.push(id);
        Ok(self.arena.len() - 1)
    }

    /// Copies the path to `key`'s leaf; returns the leaf's arena index. Every
    /// node on the path becomes dirty and its parent points at the copy, so the
    /// spill at commit rewrites exactly the changed paths (copy-on-write) and
    /// the base pages they replace are freed by this txn.
    fn dirty_path(
        &mut self,
        reader: &Reader,
        root: &mut NodeRef,
        key: &[u8],
    ) -> Result<usize, BtreeError> {
        let mut idx = self.make_dirty(reader, *root)?;
        *root = NodeRef::Mem(idx);
        for _ in 0..MAX_DEPTH {
            let (ci, child) = match &self.arena[idx] {
                MemNode::Leaf(_) => return Ok(idx),
                MemNode::Branch { keys, children } => {
                    let ci = mem_child_index(keys, key);
                    (ci, children[ci])
                }
            };
            let cidx = self.make_dirty(reader, child)?;
            if let MemNode::Branch { children, .. } = &mut self.arena[idx] {
                children[ci] = NodeRef::Mem(cidx);
            }
            idx = cidx;
        }
        Err(depth_error(*root))
    }

    /// Inserts or replaces; returns the old value.
    pub(crate) fn insert(
        &mut self,
        reader: &Reader,
        root: &mut Option<NodeRef>,
        key: &[u8],
        value: MemValue,
    ) -> Result<Option<MemValue>, BtreeError> {
        let Some(r) = root else {
            self.arena.push(MemNode::Leaf(vec![(key.to_vec(), value)]));
            *root = Some(NodeRef::Mem(self.arena.len() - 1));
            return Ok(None);
        };
        let leaf = self.dirty_path(reader, r, key)?;
        let MemNode::Leaf(entries) = &mut self.arena[leaf] else {
            unreachable!("dirty_path ends at a leaf")
        };
        match entries.binary_search_by(|(k, _)| k.as_slice().cmp(key)) {
            Ok(i) => Ok(Some(std::mem::replace(&mut entries[i].1, value))),
            Err(i) => {
                entries.insert(i, (key.to_vec(), value));
                Ok(None)
            }
        }
    }

    /// Removes `key`; returns the old value. A miss copies nothing: the read
    /// first saves copying a path (and freeing its pages) for an absent key,
    /// which etcd's deletes of absent keys would otherwise pay per commit.
    pub(crate) fn remove(
        &mut self,
        reader: &Reader,
        root: &mut Option<NodeRef>,
        key: &[u8],
    ) -> Result<Option<MemValue>, BtreeError> {
        let Some(r) = root else { return Ok(None) };
        let src = Src {
            reader,
            arena: &self.arena,
        };
        if src.get(Some(*r), key)?.is_none() {
            return Ok(None);
        }
        let leaf = self.dirty_path(reader, r, key)?;
        let MemNode::Leaf(entries) = &mut self.arena[leaf] else {
            unreachable!("dirty_path ends at a leaf")
        };
        match entries.binary_search_by(|(k, _)| k.as_slice().cmp(key)) {
            Ok(i) => Ok(Some(entries.remove(i).1)),
            Err(_) => Ok(None),
        }
    }

    /// Frees what a replaced or removed value held on disk.
    pub(crate) fn free_value(&mut self, reader: &Reader, v: MemValue) -> Result<(), BtreeError> {
        if let MemValue::Overflow { first, len } = v {
            let ids = reader.overflow_pages(first, len)?;
            self.freed.extend(ids);
        }
        Ok(())
    }

    /// Frees every page of a tree (a deleted bucket): base pages and overflow
    /// chains go to `freed`; dirty nodes are simply dropped.
    pub(crate) fn free_tree(
        &mut self,
        reader: &Reader,
        root: Option<NodeRef>,
    ) -> Result<(), BtreeError> {
        let mut stack: Vec<(NodeRef, usize)> = root.into_iter().map(|r| (r, 0)).collect();
        while let Some((r, depth)) = stack.pop() {
            if depth > MAX_DEPTH {
                return Err(depth_error(r));
            }
            let src = Src {
                reader,
                arena: &self.arena,
            };
            let node = src.load(r)?;
            let mut chains = Vec::new();
            for i in 0..node.len() {
                if node.is_leaf() {
                    if let (_, ValRef::Overflow { first, len }) = node.entry(i)? {
                        chains.push((first, len));
                    }
                } else {
                    stack.push((node.child(i)?, depth + 1));
                }
            }
            drop(node);
            for (first, len) in chains {
                self.free_value(reader, MemValue::Overflow { first, len })?;
            }
            if let NodeRef::Page(id) = r {
                self.freed.push(id);
            }
        }
        Ok(())
    }

    /// Merges dirty nodes below [`MERGE_THRESHOLD`] into a sibling, bottom-up,
    /// and collapses a root with a single child or no entries.
    pub(crate) fn rebalance(
        &mut self,
        reader: &Reader,
        root: &mut Option<NodeRef>,
    ) -> Result<(), BtreeError> {
        let Some(NodeRef::Mem(idx)) = *root else {
            return Ok(());
        };
        self.rebalance_node(reader, idx, 0)?;
        for _ in 0..MAX_DEPTH {
            let Some(NodeRef::Mem(i)) = *root else { break };
            match &self.arena[i] {
                MemNode::Branch { children, .. } if children.len() == 1 => {
                    *root = Some(children[0])
                }
                MemNode::Leaf(e) if e.is_empty() => *root = None,
                _ => break,
            }
        }
        Ok(())
    }

    fn rebalance_node(
        &mut self,
        reader: &Reader,
        idx: usize,
        depth: usize,
    ) -> Result<(), BtreeError> {
        if depth > MAX_DEPTH {
            return Err(depth_error(NodeRef::Mem(idx)));
        }
        let dirty_children: Vec<usize> = match &self.arena[idx] {
            MemNode::Leaf(_) => return Ok(()),
            MemNode::Branch { children, .. } => children
                .iter()
                .filter_map(|c| {
                    if let NodeRef::Mem(i) = c {
                        Some(*i)
                    } else {
                        None
                    }
                })
                .collect(),
        };
        for c in dirty_children {
            self.rebalance_node(reader, c, depth + 1)?;
        }
        let mut i = 0;
        loop {
            let (n, child) = match &self.arena[idx] {
                MemNode::Branch { children, .. } => (children.len(), children.get(i).copied()),
                MemNode::Leaf(_) => unreachable!("checked above"),
            };
            let Some(child) = child else { break };
            if n < 2 {
                break;
            }
            let small = match child {
                NodeRef::Mem(ci) => self.arena[ci].encoded_len() < MERGE_THRESHOLD,
                NodeRef::Page(_) => false,
            };
            if !small {
                i += 1;
                continue;
            }
            // Merge with the right sibling (the left one for the last child);
            // a clean sibling is copied first. The merged node may be too big:
            // the spill splits it again, which redistributes the entries.
            let (l, r) = if i + 1 < n { (i, i + 1) } else { (i - 1, i) };
            let (lref, rref, sep) = match &self.arena[idx] {
                MemNode::Branch { keys, children } => (children[l], children[r], keys[r].clone()),
                MemNode::Leaf(_) => unreachable!("checked above"),
            };
            let lidx = self.make_dirty(reader, lref)?;
            let ridx = self.make_dirty(reader, rref)?;
            let right = std::mem::replace(&mut self.arena[ridx], MemNode::Leaf(Vec::new()));
            match (&mut self.arena[lidx], right) {
                (MemNode::Leaf(a), MemNode::Leaf(b)) => a.extend(b),
                (
                    MemNode::Branch {
                        keys: ka,
                        children: ca,
                    },
                    MemNode::Branch {
                        keys: kb,
                        children: cb,
                    },
                ) => {
                    // The parent's separator becomes the key of the right node's first child.
                    ka.push(sep);
                    ka.extend(kb.into_iter().skip(1));
                    ca.extend(cb);
                }
                _ => {
                    return Err(BtreeError::Corrupt {
                        page: 0,
                        what: "siblings at different levels",
                    })
                }
            }
            if let MemNode::Branch { keys, children } = &mut self.arena[idx] {
                children[l] = NodeRef::Mem(lidx);
                children.remove(r);
                keys.remove(r);
            }
            i = l;
        }
        Ok(())
    }

    /// Writes the dirty part of the tree and returns its root page.
    pub(crate) fn spill(
        &mut self,
        root: Option<NodeRef>,
        alloc: &mut dyn Alloc,
        out: &mut Vec<(PageId, Box<PageBuf>)>,
    ) -> Result<Option<PageId>, BtreeError> {
        let idx = match root {
            None => return Ok(None),
            Some(NodeRef::Page(p)) => return Ok(Some(p)),
            Some(NodeRef::Mem(i)) => i,
        };
        // Children are written before their parents (a parent needs their page
        // ids), so pages of one commit never point at pages not yet allocated.
        let mut pieces = self.spill_node(idx, alloc, out, 0)?;
        // A split root grows the tree by one level per round.
        for _ in 0..MAX_DEPTH {
            if pieces.len() <= 1 {
                return Ok(pieces.first().map(|p| p.1));
            }
            pieces = write_branch(pieces, alloc, out);
        }
        Err(depth_error(NodeRef::Mem(idx)))
    }

    /// Writes dirty node `idx` (children first) as one or more pages; returns
    /// `(first key, page)` per page. The first piece's key is not used: the
    /// parent keeps its own separator for it.
    fn spill_node(
        &mut self,
        idx: usize,
        alloc: &mut dyn Alloc,
        out: &mut Vec<(PageId, Box<PageBuf>)>,
        depth: usize,
    ) -> Result<Vec<(Vec<u8>, PageId)>, BtreeError> {
        if depth > MAX_DEPTH {
            return Err(depth_error(NodeRef::Mem(idx)));
        }
        match std::mem::replace(&mut self.arena[idx], MemNode::Leaf(Vec::new())) {
            MemNode::Leaf(mut entries) => {
                for (_, v) in entries.iter_mut() {
                    if let MemValue::Big(data) = v {
                        let len = data.len() as u64;
                        let first = write_overflow(data, alloc, out);
                        *v = MemValue::Overflow { first, len };
                    }
                }
                let sizes: Vec<usize> = entries
                    .iter()
                    .map(|(k, v)| leaf_entry_len(k.len(), v.stored_len()))
                    .collect();
                let mut pieces = Vec::new();
                for range in chunk(&sizes) {
                    let id = alloc.alloc();
                    let part = &entries[range];
                    let page = format::encode_leaf(
                        id,
                        part.iter().map(|(k, v)| {
                            let sv = match v {
                                MemValue::Inline(s) => StoredValue::Inline(s),
                                MemValue::Overflow { first, len } => StoredValue::Overflow {
                                    first: *first,
                                    len: *len,
                                },
                                MemValue::Big(_) => unreachable!("written above"),
                            };
                            (k.as_slice(), sv)
                        }),
                    );
                    out.push((id, page));
                    pieces.push((part.first().map(|e| e.0.clone()).unwrap_or_default(), id));
                }
                Ok(pieces)
            }
            MemNode::Branch { keys, children } => {
                let mut entries = Vec::with_capacity(children.len());
                for (key, child) in keys.into_iter().zip(children) {
                    match child {
                        NodeRef::Page(p) => entries.push((key, p)),
                        NodeRef::Mem(c) => {
                            let sub = self.spill_node(c, alloc, out, depth + 1)?;
                            let mut key = Some(key);
                            for (sk, sp) in sub {
                                entries.push((key.take().unwrap_or(sk), sp));
                            }
                        }
                    }
                }
                Ok(write_branch(entries, alloc, out))
            }
        }
    }
}

/// Writes branch entries as one or more pages.
fn write_branch(
    entries: Vec<(Vec<u8>, PageId)>,
    alloc: &mut dyn Alloc,
    out: &mut Vec<(PageId, Box<PageBuf>)>,
) -> Vec<(Vec<u8>, PageId)> {
    // Entry 0 of each chunk is stored without its key; sizing it with the key
    // overestimates by at most one key, which is safe.
    let sizes: Vec<usize> = entries
        .iter()
        .map(|(k, _)| branch_entry_len(k.len()))
        .collect();
    let mut pieces = Vec::new();
    for range in chunk(&sizes) {
        let id = alloc.alloc();
        let part = &entries[range];
        out.push((
            id,
            format::encode_branch(id, part.iter().map(|(k, c)| (k.as_slice(), *c))),
        ));
        pieces.push((part.first().map(|e| e.0.clone()).unwrap_or_default(), id));
    }
    pieces
}

/// Writes a value to a new overflow chain; returns its first page.
fn write_overflow(
    data: &[u8],
    alloc: &mut dyn Alloc,
    out: &mut Vec<(PageId, Box<PageBuf>)>,
) -> PageId {
    let ids: Vec<PageId> = (0..format::overflow_pages(data.len()))
        .map(|_| alloc.alloc())
        .collect();
    for (i, part) in data.chunks(OVERFLOW_DATA_LEN).enumerate() {
        let next = ids.get(i + 1).copied().unwrap_or(format::NO_PAGE);
        out.push((ids[i], format::encode_overflow(ids[i], next, part)));
    }
    ids.first().copied().unwrap_or(format::NO_PAGE)
}

/// Splits entries (by encoded size) into page-sized runs: greedy fill, then a
/// tail below [`MERGE_THRESHOLD`] is evened out with the run before it. So
/// appends in key order fill pages completely (etcd's revision keys) and a
/// random insert into a full page splits it about in half.
///
/// Every entry is at most `MAX_LEAF_ENTRY = BODY_LEN / 3`, so both halves of an
/// evened pair fit: the left holds at most half the pair plus one entry
/// (`BODY_LEN / 2 + BODY_LEN / 3`), the right at most half.
fn chunk(sizes: &[usize]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut acc) = (0, 0);
    for (i, &s) in sizes.iter().enumerate() {
        if acc + s > BODY_LEN && i > start {
            out.push(start..i);
            (start, acc) = (i, 0);
        }
        acc += s;
    }
    out.push(start..sizes.len());
    let n = out.len();
    if n >= 2 && acc < MERGE_THRESHOLD {
        let (a, b) = (out[n - 2].start, out[n - 1].end);
        let total: usize = sizes[a..b].iter().sum();
        let mut left = 0;
        let mut mid = a;
        while mid < b - 1 && (left + sizes[mid]) * 2 <= total {
            left += sizes[mid];
            mid += 1;
        }
        let mid = mid.max(a + 1);
        out[n - 2] = a..mid;
        out[n - 1] = mid..b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_fills_pages_and_evens_a_small_tail() {
        // 100-byte entries: 40 per page.
        let sizes = vec![100; 81];
        let c = chunk(&sizes);
        assert_eq!(c.len(), 3);
        for r in &c {
            let total: usize = sizes[r.clone()].iter().sum();
            assert!(total <= BODY_LEN);
        }
        // The one-entry tail was evened with the page before it.
        assert!(c[2].len() > 1);
        // Worst case: max-size entries.
        let sizes = vec![MAX_LEAF_ENTRY; 7];
        for r in chunk(&sizes) {
            assert!(sizes[r].iter().sum::<usize>() <= BODY_LEN);
        }
        assert_eq!(chunk(&[]), vec![0..0]);
    }
}
