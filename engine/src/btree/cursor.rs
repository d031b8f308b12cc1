//! Range iteration over one tree, in key order or reverse.

use std::ops::Bound;

use super::error::BtreeError;
use super::tree::{depth_error, Loaded, NodeRef, Src, MAX_DEPTH};

/// One `(key, value)` pair, owned.
pub type Entry = (Vec<u8>, Vec<u8>);

/// A path from the root to a leaf position. For a branch the index is the
/// child on the path; for the leaf it is, going forward, the next entry to
/// yield and, going backward, one past it.
struct Cursor<'a> {
    stack: Vec<(Loaded<'a>, usize)>,
}

impl<'a> Cursor<'a> {
    fn push(&mut self, node: Loaded<'a>, i: usize) -> Result<(), BtreeError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(BtreeError::Corrupt {
                page: 0,
                what: "tree deeper than MAX_DEPTH (pointer cycle?)",
            });
        }
        self.stack.push((node, i));
        Ok(())
    }

    /// Descends from `r` to the leaf that holds `key`. `forward`: position at
    /// the first entry >= key (or > key if `!inclusive`). Backward: position
    /// after the last entry <= key (or < key).
    fn seek(
        &mut self,
        src: Src<'a>,
        mut r: NodeRef,
        key: &[u8],
        forward: bool,
        inclusive: bool,
    ) -> Result<(), BtreeError> {
        for _ in 0..MAX_DEPTH {
            let node = src.load(r)?;
            if node.is_leaf() {
                let (i, found) = node.lower_bound(key)?;
                let pos = if found && (forward != inclusive) {
                    i + 1
                } else {
                    i
                };
                return self.push(node, pos);
            }
            let ci = node.child_index(key)?;
            r = node.child(ci)?;
            self.push(node, ci)?;
        }
        Err(depth_error(r))
    }

    /// Descends from `r` along the first (`forward`) or last children.
    fn edge(&mut self, src: Src<'a>, mut r: NodeRef, forward: bool) -> Result<(), BtreeError> {
        for _ in 0..MAX_DEPTH {
            let node = src.load(r)?;
            let n = node.len();
            if node.is_leaf() {
                return self.push(node, if forward { 0 } else { n });
            }
            let ci = if forward { 0 } else { n.saturating_sub(1) };
            r = node.child(ci)?;
            self.push(node, ci)?;
        }
        Err(depth_error(r))
    }

    /// Yields the next entry in the direction, moving across leaves.
    fn step(&mut self, src: Src<'a>, forward: bool) -> Result<Option<Entry>, BtreeError> {
        loop {
            let Some((node, i)) = self.stack.last_mut() else {
                return Ok(None);
            };
            if node.is_leaf() {
                let at = if forward {
                    (*i < node.len()).then_some(*i)
                } else {
                    i.checked_sub(1)
                };
                if let Some(at) = at {
                    *i = if forward { at + 1 } else { at };
                    let (k, v) = node.entry(at)?;
                    let k = k.to_vec();
                    return Ok(Some((k, src.value(v)?)));
                }
                self.stack.pop();
                continue;
            }
            // A branch on top: its subtree at `i` is done; move to the sibling.
            let next = if forward {
                (*i + 1 < node.len()).then_some(*i + 1)
            } else {
                i.checked_sub(1)
            };
            match next {
                Some(ci) => {
                    *i = ci;
                    let child = node.child(ci)?;
                    self.edge(src, child, forward)?;
                }
                None => {
                    self.stack.pop();
                }
            }
        }
    }
}

/// Entries of one bucket with keys in a range, in key order; `.rev()` (or
/// `next_back`) walks from the end. Each item is an owned `(key, value)`. After
/// an error the iterator is finished.
pub struct Range<'a> {
    src: Src<'a>,
    root: Option<NodeRef>,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    front: Option<Cursor<'a>>,
    back: Option<Cursor<'a>>,
    /// Last keys yielded from each end: the two ends stop when they meet.
    front_last: Option<Vec<u8>>,
    back_last: Option<Vec<u8>>,
    done: bool,
}

fn owned(b: Bound<&&[u8]>) -> Bound<Vec<u8>> {
    match b {
        Bound::Included(k) => Bound::Included(k.to_vec()),
        Bound::Excluded(k) => Bound::Excluded(k.to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl<'a> Range<'a> {
    pub(crate) fn new(
        src: Src<'a>,
        root: Option<NodeRef>,
        start: Bound<&&[u8]>,
        end: Bound<&&[u8]>,
    ) -> Range<'a> {
        Range {
            src,
            root,
            start: owned(start),
            end: owned(end),
            front: None,
            back: None,
            front_last: None,
            back_last: None,
            done: false,
        }
    }

    fn after_start(&self, k: &[u8]) -> bool {
        match &self.start {
            Bound::Included(s) => k >= s.as_slice(),
            Bound::Excluded(s) => k > s.as_slice(),
            Bound::Unbounded => true,
        }
    }

    fn before_end(&self, k: &[u8]) -> bool {
        match &self.end {
            Bound::Included(e) => k <= e.as_slice(),
            Bound::Excluded(e) => k < e.as_slice(),
            Bound::Unbounded => true,
        }
    }

    fn advance(&mut self, forward: bool) -> Result<Option<Entry>, BtreeError> {
        let Some(root) = self.root else {
            return Ok(None);
        };
        let src = self.src;
        let slot = if forward {
            &mut self.front
        } else {
            &mut self.back
        };
        if slot.is_none() {
            let mut c = Cursor { stack: Vec::new() };
            let bound = if forward { &self.start } else { &self.end };
            match bound {
                Bound::Included(k) => c.seek(src, root, k, forward, true)?,
                Bound::Excluded(k) => c.seek(src, root, k, forward, false)?,
                Bound::Unbounded => c.edge(src, root, forward)?,
            }
            *slot = Some(c);
        }
        let Some(cursor) = slot.as_mut() else {
            return Ok(None);
        };
        let Some((k, v)) = cursor.step(src, forward)? else {
            return Ok(None);
        };
        // An entry is yielded once: the front stops before the last key the
        // back yielded and vice versa, and each end stops at its bound.
        let inside = if forward {
            self.before_end(&k) && self.back_last.as_ref().is_none_or(|b| k < *b)
        } else {
            self.after_start(&k) && self.front_last.as_ref().is_none_or(|f| k > *f)
        };
        if !inside {
            return Ok(None);
        }
        if forward {
            self.front_last = Some(k.clone());
        } else {
            self.back_last = Some(k.clone());
        }
        Ok(Some((k, v)))
    }

    fn next_in(&mut self, forward: bool) -> Option<Result<Entry, BtreeError>> {
        if self.done {
            return None;
        }
        match self.advance(forward) {
            Ok(Some(item)) => Some(Ok(item)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl Iterator for Range<'_> {
    type Item = Result<Entry, BtreeError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_in(true)
    }
}

impl DoubleEndedIterator for Range<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.next_in(false)
    }
}
