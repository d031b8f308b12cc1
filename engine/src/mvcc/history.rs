//! Bounded reads of the store's history, for watchers (`engine::watch`).
//!
//! [`Store::events_since`] replays everything after a revision at once;
//! a watcher catching up must not load an unbounded history into memory, so
//! [`Store::events_between`] reads a window `[from, to]` and stops after a
//! number of distinct main revisions, like etcd's `eventBatch`
//! (`watchBatchMaxRevs`, server/mvcc/watcher_group.go).

use super::error::Error;
use super::key_range::KeyRange;
use super::kv::{Event, EventKind, KeyValue};
use super::revision::Revision;
use super::revision_store::Record;
use super::store::Store;

/// One window of history: the events, and where the next window starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventPage {
    /// Events in revision order; all changes of one main revision are
    /// either all here or all absent.
    pub events: Vec<Event>,
    /// `Some(rev)`: the window stopped at the revision limit and `rev` is
    /// the first main revision with a matching event that is not included.
    /// `None`: everything in `[from, to]` is included.
    pub more: Option<i64>,
}

impl Store {
    /// Every change at main revisions in `[from, to]` to keys in
    /// `key`/`range_end` (same rules as [`Store::range`]), in revision order,
    /// with `prev_kv` as [`Store::events_since`] computes it. Stops before
    /// the `max_revisions + 1`-th distinct main revision that has a matching
    /// event (`max_revisions == 0` means no limit) and reports it in
    /// [`EventPage::more`].
    ///
    /// Fails with [`Error::Compacted`] if `from` is below the compaction
    /// revision (starting exactly at it is allowed, as etcd's watch does).
    pub fn events_between(
        &self,
        from: i64,
        to: i64,
        key: &[u8],
        range_end: &[u8],
        max_revisions: usize,
    ) -> Result<EventPage, Error> {
        let compact = self.compact_revision();
        if from < compact {
            return Err(Error::Compacted);
        }
        let range = KeyRange::new(key, range_end);
        let view = self.view();
        let mut page = EventPage::default();
        let mut revisions = 0usize;
        let mut last_main = None;
        for item in self.records.since(Revision::new(from, 0)) {
            let (r, record) = item?;
            if r.main > to {
                break;
            }
            if !range.contains(record.key()) {
                continue;
            }
            if last_main != Some(r.main) {
                if max_revisions != 0 && revisions == max_revisions {
                    page.more = Some(r.main);
                    break;
                }
                revisions += 1;
                last_main = Some(r.main);
            }
            let (kind, kv) = match record.into_owned() {
                Record::Put(kv) => (EventKind::Put, kv),
                Record::Tombstone { key } => (
                    EventKind::Delete,
                    KeyValue {
                        key,
                        mod_revision: r.main,
                        ..KeyValue::default()
                    },
                ),
            };
            let before = r.main - 1;
            let prev_kv = if before >= 1 && before >= compact {
                view.get_at(&kv.key, before)?
            } else {
                None
            };
            page.events.push(Event { kind, kv, prev_kv });
        }
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::{DeleteRangeRequest, PutRequest};

    fn put(s: &mut Store, k: &str, v: &str) {
        s.put(&PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        })
        .unwrap();
    }

    fn keys(p: &EventPage) -> Vec<(i64, String)> {
        p.events
            .iter()
            .map(|e| {
                (
                    e.kv.mod_revision,
                    String::from_utf8_lossy(&e.kv.key).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn window_is_bounded_by_revision_count_and_end() {
        let mut s = Store::new();
        for i in 0..5 {
            put(&mut s, &format!("k{i}"), "v"); // revisions 2..=6
        }
        put(&mut s, "other", "v"); // 7
        let p = s.events_between(2, 7, b"k", b"l", 2).unwrap();
        assert_eq!(keys(&p), vec![(2, "k0".into()), (3, "k1".into())]);
        assert_eq!(p.more, Some(4));
        let p = s.events_between(4, 5, b"k", b"l", 0).unwrap();
        assert_eq!(keys(&p), vec![(4, "k2".into()), (5, "k3".into())]);
        assert_eq!(p.more, None);
        // The limit counts revisions with matching events only.
        let p = s.events_between(2, 7, b"other", b"", 1).unwrap();
        assert_eq!(keys(&p), vec![(7, "other".into())]);
        assert_eq!(p.more, None);
    }

    #[test]
    fn a_revision_is_never_split_and_deletes_carry_prev_kv() {
        let mut s = Store::new();
        put(&mut s, "a", "1"); // 2
        put(&mut s, "b", "1"); // 3
        s.delete_range(&DeleteRangeRequest {
            key: b"a".to_vec(),
            range_end: b"c".to_vec(),
            ..Default::default()
        })
        .unwrap(); // 4: two tombstones
        let p = s.events_between(3, 4, b"a", b"c", 1).unwrap();
        assert_eq!(keys(&p), vec![(3, "b".into())]);
        assert_eq!(p.more, Some(4));
        let p = s.events_between(4, 4, b"a", b"c", 1).unwrap();
        assert_eq!(keys(&p), vec![(4, "a".into()), (4, "b".into())]);
        assert!(p.events.iter().all(|e| e.kind == EventKind::Delete));
        assert_eq!(p.events[0].prev_kv.as_ref().unwrap().value, b"1");
    }

    #[test]
    fn below_the_compaction_revision_is_compacted() {
        let mut s = Store::new();
        put(&mut s, "a", "1");
        put(&mut s, "a", "2");
        s.compact(3).unwrap();
        assert_eq!(s.events_between(2, 3, b"a", b"", 0), Err(Error::Compacted));
        let p = s.events_between(3, 3, b"a", b"", 0).unwrap();
        assert_eq!(keys(&p), vec![(3, "a".into())]);
        assert_eq!(p.more, None);
    }
}
