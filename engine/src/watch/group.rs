//! Watchers indexed by what they watch (etcd's `watcherGroup`): single keys
//! in a hash map, ranges in an ordered map by start key.
//!
//! Finding the watchers of a key costs one hash lookup plus a scan of the
//! ranges that start at or before the key (etcd uses an interval tree; a
//! range-heavy workload with many ranges would want one here too).
//!
//! Invariant: each member appears exactly once, in the slot its
//! `(key, range_end)` selects; `len` counts members.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::ops::Bound;

/// The part of `(key, range_end)` that places a watcher; same rules as
/// `mvcc::KeyRange` (`[]` single key, `[0]` from key, else `[key, end)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Span {
    Key(Vec<u8>),
    /// `[start, end)`; `end == None` is unbounded.
    Range(Vec<u8>, Option<Vec<u8>>),
}

impl Span {
    pub(super) fn new(key: &[u8], range_end: &[u8]) -> Span {
        if range_end.is_empty() {
            Span::Key(key.to_vec())
        } else if range_end == [0] {
            Span::Range(key.to_vec(), None)
        } else {
            Span::Range(key.to_vec(), Some(range_end.to_vec()))
        }
    }
}

/// The members whose range starts at one key: `(end, member)`, `None` for
/// no end; ends may repeat.
type Starting<M> = Vec<(Option<Vec<u8>>, M)>;

pub(super) struct Group<M> {
    keys: HashMap<Vec<u8>, Vec<M>>,
    /// Start key → the ranges starting there.
    ranges: BTreeMap<Vec<u8>, Starting<M>>,
    len: usize,
}

impl<M> Default for Group<M> {
    fn default() -> Self {
        Group {
            keys: HashMap::new(),
            ranges: BTreeMap::new(),
            len: 0,
        }
    }
}

impl<M: Copy + Eq + Hash> Group<M> {
    pub(super) fn add(&mut self, span: &Span, m: M) {
        match span {
            Span::Key(k) => self.keys.entry(k.clone()).or_default().push(m),
            Span::Range(start, end) => self
                .ranges
                .entry(start.clone())
                .or_default()
                .push((end.clone(), m)),
        }
        self.len += 1;
    }

    /// Removes `m` from `span`'s slot; false if it was not there.
    pub(super) fn remove(&mut self, span: &Span, m: M) -> bool {
        let removed = match span {
            Span::Key(k) => match self.keys.get_mut(k) {
                Some(v) => {
                    let before = v.len();
                    v.retain(|x| *x != m);
                    let removed = v.len() != before;
                    if v.is_empty() {
                        self.keys.remove(k);
                    }
                    removed
                }
                None => false,
            },
            Span::Range(start, _) => match self.ranges.get_mut(start) {
                Some(v) => {
                    let before = v.len();
                    v.retain(|(_, x)| *x != m);
                    let removed = v.len() != before;
                    if v.is_empty() {
                        self.ranges.remove(start);
                    }
                    removed
                }
                None => false,
            },
        };
        if removed {
            self.len -= 1;
        }
        removed
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Calls `f` once for every member that watches `key`.
    pub(super) fn for_each_watching(&self, key: &[u8], mut f: impl FnMut(M)) {
        if let Some(v) = self.keys.get(key) {
            v.iter().copied().for_each(&mut f);
        }
        let starts = (Bound::Unbounded, Bound::Included(key));
        for (_, v) in self.ranges.range::<[u8], _>(starts) {
            for (end, m) in v {
                if end.as_deref().is_none_or(|e| key < e) {
                    f(*m);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(g: &Group<u32>, key: &[u8]) -> Vec<u32> {
        let mut v = Vec::new();
        g.for_each_watching(key, |m| v.push(m));
        v.sort();
        v
    }

    #[test]
    fn keys_prefixes_and_from_key_ranges_match_like_a_range_read() {
        let mut g = Group::default();
        g.add(&Span::new(b"a", b""), 1);
        g.add(&Span::new(b"a", b"b"), 2); // prefix "a"
        g.add(&Span::new(b"b", &[0]), 3); // from "b"
        g.add(&Span::new(&[0], &[0]), 4); // every non-empty key
        g.add(&Span::new(b"a", b""), 5);
        assert_eq!(who(&g, b"a"), vec![1, 2, 4, 5]);
        assert_eq!(who(&g, b"ab"), vec![2, 4]);
        assert_eq!(who(&g, b"b"), vec![3, 4]);
        assert_eq!(who(&g, b"zzz"), vec![3, 4]);
        assert_eq!(who(&g, b""), Vec::<u32>::new());
        assert_eq!(g.len(), 5);
        assert!(g.remove(&Span::new(b"a", b""), 1));
        assert!(!g.remove(&Span::new(b"a", b""), 1));
        assert!(g.remove(&Span::new(b"a", b"b"), 2));
        assert!(!g.remove(&Span::new(b"a", b"b"), 3), "3 is in another slot");
        assert_eq!(who(&g, b"a"), vec![4, 5]);
        assert_eq!(g.len(), 3);
    }
}
