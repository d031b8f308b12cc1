//! How a `(key, range_end)` pair selects keys, following etcd.
//!
//! * `range_end` empty: the single key `key`.
//! * `range_end == [0]`: every key `>= key` (etcd's `mkGteRange`); so
//!   `key = [0], range_end = [0]` is every non-empty key and `key = []` with
//!   `range_end = [0]` is every key.
//! * otherwise the half-open interval `[key, range_end)`, which is empty when
//!   `range_end <= key`.

use std::ops::Bound;

/// Start and end bounds over byte-string keys.
pub(crate) type Bounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyRange<'a> {
    /// Selects nothing.
    Empty,
    /// Exactly one key.
    Single(&'a [u8]),
    /// Every key greater than or equal to this one.
    From(&'a [u8]),
    /// `[start, end)` with `start < end`.
    Between(&'a [u8], &'a [u8]),
}

impl<'a> KeyRange<'a> {
    pub(crate) fn new(key: &'a [u8], range_end: &'a [u8]) -> KeyRange<'a> {
        if range_end.is_empty() {
            KeyRange::Single(key)
        } else if range_end == [0] {
            KeyRange::From(key)
        } else if range_end <= key {
            KeyRange::Empty
        } else {
            KeyRange::Between(key, range_end)
        }
    }

    pub(crate) fn contains(&self, k: &[u8]) -> bool {
        match *self {
            KeyRange::Empty => false,
            KeyRange::Single(key) => k == key,
            KeyRange::From(start) => k >= start,
            KeyRange::Between(start, end) => k >= start && k < end,
        }
    }

    /// The bounds to hand to an ordered map's `range`; `None` when nothing is
    /// selected. The bounds never make `BTreeMap::range` panic: the start is
    /// always included and, when an end exists, it is not below the start.
    pub(crate) fn bounds(&self) -> Option<Bounds<'a>> {
        match *self {
            KeyRange::Empty => None,
            KeyRange::Single(key) => Some((Bound::Included(key), Bound::Included(key))),
            KeyRange::From(start) => Some((Bound::Included(start), Bound::Unbounded)),
            KeyRange::Between(start, end) => Some((Bound::Included(start), Bound::Excluded(end))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_end_rules_follow_etcd() {
        let cases: &[(&[u8], &[u8], KeyRange<'static>)] = &[
            (b"a", b"", KeyRange::Single(b"a")),
            (b"", b"", KeyRange::Single(b"")),
            (b"a", b"\0", KeyRange::From(b"a")),
            (b"\0", b"\0", KeyRange::From(b"\0")),
            (b"a", b"c", KeyRange::Between(b"a", b"c")),
            (b"c", b"a", KeyRange::Empty),
            (b"a", b"a", KeyRange::Empty),
            (b"a\0", b"a", KeyRange::Empty),
            (b"", b"\0\0", KeyRange::Between(b"", b"\0\0")),
        ];
        for (key, end, want) in cases {
            assert_eq!(KeyRange::new(key, end), *want, "key {key:?} end {end:?}");
        }
    }

    #[test]
    fn contains_matches_bounds() {
        let keys: &[&[u8]] = &[b"", b"\0", b"a", b"ab", b"b", b"c", b"\xff"];
        let ends: &[&[u8]] = &[b"", b"\0", b"a", b"b", b"c", b"\xff"];
        for start in keys {
            for end in ends {
                let r = KeyRange::new(start, end);
                for k in keys {
                    let in_bounds = r
                        .bounds()
                        .is_some_and(|b| std::ops::RangeBounds::<[u8]>::contains(&b, *k));
                    assert_eq!(r.contains(k), in_bounds, "{r:?} {k:?}");
                }
            }
        }
    }
}
