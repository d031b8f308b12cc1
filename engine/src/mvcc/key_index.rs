//! The revision history of one key, split into generations.
//!
//! A generation is one life of the key: it starts with the put that creates
//! the key, collects one revision per later put, and ends with the tombstone
//! that deletes it; the next put starts a new generation. For example
//! `put@2, put@3, delete@4, put@6` on one key gives
//!
//! ```text
//! generations: [ {created 2, ver 3, revs 2, 3, 4(tombstone)}, {created 6, ver 1, revs 6} ]
//! ```
//!
//! and after `delete@7` a third, empty generation is appended.
//!
//! Invariants (hold between calls):
//! * there is always at least one generation, and only the last may be
//!   empty; an empty last generation means the key is deleted now;
//! * every generation but the last ends with a tombstone and holds at least
//!   one put before it, except that compaction at exactly the tombstone's
//!   revision leaves the tombstone alone (its `created` and `ver` are then
//!   zero); the last generation holds no tombstone;
//! * revisions strictly increase across the whole index;
//! * `ver` of a generation counts every revision ever added to it (puts and
//!   its tombstone), also those since dropped by compaction, so the version
//!   of the revision at position `i` is `ver - (revs.len() - 1 - i)`.

use super::error::Error;
use super::revision::Revision;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Generation {
    /// Revisions ever added to this generation (see module docs).
    ver: i64,
    /// Revision of the put that started the generation.
    created: Revision,
    revs: Vec<Revision>,
}

#[cfg(test)]
impl Generation {
    pub(crate) fn revisions(&self) -> &[Revision] {
        &self.revs
    }

    pub(crate) fn created(&self) -> Revision {
        self.created
    }
}

/// What a key looked like at some revision, as far as the index knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyAt {
    /// The revision holding the key's value at that point.
    pub modified: Revision,
    /// The put that created the generation.
    pub created: Revision,
    pub version: i64,
}

/// See [`KeyIndex::mark`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mark {
    modified: Revision,
    generations: usize,
    last_revs: usize,
    last_ver: i64,
    last_created: Revision,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyIndex {
    /// The newest revision ever added.
    modified: Revision,
    generations: Vec<Generation>,
}

impl Default for KeyIndex {
    fn default() -> Self {
        KeyIndex::new()
    }
}

impl KeyIndex {
    /// A key with no history yet: one empty generation.
    pub(crate) fn new() -> KeyIndex {
        KeyIndex {
            modified: Revision::default(),
            generations: vec![Generation::default()],
        }
    }

    /// A constant-size bookmark of the index's current shape. A write txn
    /// only appends to an index (revisions to the last generation, new
    /// generations after it), so rewinding to a mark undoes exactly the
    /// txn's changes, whatever the length of the key's history.
    pub(crate) fn mark(&self) -> Mark {
        let last = self.generations.last();
        Mark {
            modified: self.modified,
            generations: self.generations.len(),
            last_revs: last.map_or(0, |g| g.revs.len()),
            last_ver: last.map_or(0, |g| g.ver),
            last_created: last.map_or(Revision::default(), |g| g.created),
        }
    }

    /// Undoes everything appended since `mark` was taken.
    pub(crate) fn rewind(&mut self, mark: Mark) {
        self.generations.truncate(mark.generations.max(1));
        if let Some(g) = self.generations.last_mut() {
            g.revs.truncate(mark.last_revs);
            g.ver = mark.last_ver;
            g.created = mark.last_created;
        }
        self.modified = mark.modified;
    }

    /// True when no revision is left; such an index must be dropped.
    pub(crate) fn is_empty(&self) -> bool {
        self.generations.iter().all(|g| g.revs.is_empty())
    }

    #[cfg(test)]
    pub(crate) fn generations(&self) -> &[Generation] {
        &self.generations
    }

    /// Whether the key exists now (its last generation holds a put).
    pub(crate) fn is_live(&self) -> bool {
        self.generations.last().is_some_and(|g| !g.revs.is_empty())
    }

    /// Records a put at `rev`, starting a generation if the key is deleted.
    /// `rev` must be newer than every revision already recorded.
    pub(crate) fn put(&mut self, rev: Revision) -> Result<(), Error> {
        if rev <= self.modified {
            return Err(Error::RevisionNotFound {
                main: rev.main,
                sub: rev.sub,
            });
        }
        let g = self.last_generation_mut();
        if g.revs.is_empty() {
            g.created = rev;
        }
        g.revs.push(rev);
        g.ver += 1;
        self.modified = rev;
        Ok(())
    }

    /// Rebuilds history from a stored put record: like `put`, but the
    /// generation's creation revision and version come from the record,
    /// since compaction may have dropped the revisions that counted them.
    pub(crate) fn restore_put(
        &mut self,
        rev: Revision,
        create_main: i64,
        version: i64,
    ) -> Result<(), Error> {
        if rev <= self.modified {
            return Err(Error::RevisionNotFound {
                main: rev.main,
                sub: rev.sub,
            });
        }
        let g = self.last_generation_mut();
        if g.revs.is_empty() {
            g.created = Revision::new(
                create_main,
                if create_main == rev.main { rev.sub } else { 0 },
            );
        }
        g.revs.push(rev);
        g.ver = version;
        self.modified = rev;
        Ok(())
    }

    /// Rebuilds history from a stored tombstone that is the key's first
    /// record: compaction at exactly its revision kept it and dropped the
    /// puts before it (see [`KeyIndex::compact`]). The key must have no
    /// history yet.
    pub(crate) fn restore_tombstone(&mut self, rev: Revision) -> Result<(), Error> {
        if self.modified != Revision::default() || !self.is_empty() {
            return Err(Error::RevisionNotFound {
                main: rev.main,
                sub: rev.sub,
            });
        }
        self.generations = vec![
            Generation {
                ver: 0,
                created: Revision::default(),
                revs: vec![rev],
            },
            Generation::default(),
        ];
        self.modified = rev;
        Ok(())
    }

    /// Records the deletion of a live key at `rev`: the tombstone ends the
    /// current generation and a new empty one begins.
    pub(crate) fn tombstone(&mut self, rev: Revision) -> Result<(), Error> {
        if !self.is_live() {
            return Err(Error::RevisionNotFound {
                main: rev.main,
                sub: rev.sub,
            });
        }
        self.put(rev)?;
        self.generations.push(Generation::default());
        Ok(())
    }

    /// The key as of store revision `at_rev`, or `None` if it did not exist
    /// then.
    pub(crate) fn get(&self, at_rev: i64) -> Option<KeyAt> {
        let last = self.generations.len().checked_sub(1)?;
        // Newest generation first: the first one that started at or before
        // `at_rev` is the only candidate.
        for (i, g) in self.generations.iter().enumerate().rev() {
            let (Some(first), Some(tail)) = (g.revs.first(), g.revs.last()) else {
                continue;
            };
            if i != last && tail.main <= at_rev {
                // The generation's tombstone is at or before `at_rev`: the
                // key was deleted then.
                return None;
            }
            if first.main <= at_rev {
                let n = g.revs.iter().rposition(|r| r.main <= at_rev)?;
                let later = i64::try_from(g.revs.len() - 1 - n).unwrap_or(i64::MAX);
                return Some(KeyAt {
                    modified: g.revs[n],
                    created: g.created,
                    version: g.ver - later,
                });
            }
        }
        None
    }

    /// Drops the history that compaction at `at_rev` no longer needs,
    /// keeping what a read at `at_rev` or later and a watch from `at_rev` on
    /// see (etcd >= 3.5.15, etcd#18274):
    ///
    /// * every generation whose tombstone is before `at_rev` goes;
    /// * in every other generation, the revisions before its newest one
    ///   `<= at_rev` go. A tombstone at exactly `at_rev` thus stays, alone
    ///   in its generation, until a later compaction passes it: the delete
    ///   is an event of revision `at_rev`. So does a generation that a txn
    ///   at `at_rev` started after deleting the key (etcd#22376).
    ///
    /// Everything after `at_rev` stays. A generation left with only its
    /// tombstone loses its creation revision and version (set to zero): no
    /// read can land in it, and a restart could not recover them, so both
    /// ways of building the index agree (see [`KeyIndex::restore_tombstone`]).
    pub(crate) fn compact(&mut self, at_rev: i64) {
        let last = self.generations.len().saturating_sub(1);
        let mut first_kept = 0;
        while first_kept < last {
            match self.generations[first_kept].revs.last() {
                Some(tomb) if tomb.main >= at_rev => break,
                _ => first_kept += 1,
            }
        }
        self.generations.drain(..first_kept);
        let last = self.generations.len().saturating_sub(1);
        for (i, g) in self.generations.iter_mut().enumerate() {
            let Some(n) = g.revs.iter().rposition(|r| r.main <= at_rev) else {
                // This and every later generation lie after `at_rev`.
                break;
            };
            g.revs.drain(..n);
            if i != last && g.revs.len() == 1 {
                g.created = Revision::default();
                g.ver = 0;
            }
        }
    }

    /// Every revision, oldest first.
    pub(crate) fn revisions(&self) -> impl Iterator<Item = Revision> + '_ {
        self.generations.iter().flat_map(|g| g.revs.iter().copied())
    }

    fn last_generation_mut(&mut self) -> &mut Generation {
        if self.generations.is_empty() {
            self.generations.push(Generation::default());
        }
        let last = self.generations.len() - 1;
        &mut self.generations[last]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(main: i64) -> Revision {
        Revision::new(main, 0)
    }

    /// put@2, put@4, delete@6, put@8, put@10, delete@12, put@14, put@16.
    fn sample() -> KeyIndex {
        let mut ki = KeyIndex::new();
        ki.put(r(2)).unwrap();
        ki.put(r(4)).unwrap();
        ki.tombstone(r(6)).unwrap();
        ki.put(r(8)).unwrap();
        ki.put(r(10)).unwrap();
        ki.tombstone(r(12)).unwrap();
        ki.put(r(14)).unwrap();
        ki.put(r(16)).unwrap();
        ki
    }

    fn at(modified: i64, created: i64, version: i64) -> Option<KeyAt> {
        Some(KeyAt {
            modified: r(modified),
            created: r(created),
            version,
        })
    }

    #[test]
    fn get_walks_generations() {
        let ki = sample();
        let cases = [
            (1, None),
            (2, at(2, 2, 1)),
            (3, at(2, 2, 1)),
            (5, at(4, 2, 2)),
            (6, None),
            (7, None),
            (8, at(8, 8, 1)),
            (11, at(10, 8, 2)),
            (12, None),
            (13, None),
            (14, at(14, 14, 1)),
            (15, at(14, 14, 1)),
            (16, at(16, 14, 2)),
            (100, at(16, 14, 2)),
        ];
        for (rev, want) in cases {
            assert_eq!(ki.get(rev), want, "at {rev}");
        }
    }

    #[test]
    fn tombstone_requires_live_key() {
        let mut ki = KeyIndex::new();
        assert!(ki.tombstone(r(1)).is_err());
        ki.put(r(2)).unwrap();
        ki.tombstone(r(3)).unwrap();
        assert!(ki.tombstone(r(4)).is_err());
        assert!(!ki.is_live());
    }

    #[test]
    fn put_rejects_non_increasing_revision() {
        let mut ki = KeyIndex::new();
        ki.put(Revision::new(5, 1)).unwrap();
        assert!(ki.put(Revision::new(5, 1)).is_err());
        assert!(ki.put(Revision::new(5, 0)).is_err());
        assert!(ki.put(Revision::new(5, 2)).is_ok());
    }

    #[test]
    fn compaction_keeps_what_reads_at_or_after_the_revision_need() {
        let all = |ki: &KeyIndex| ki.revisions().map(|r| r.main).collect::<Vec<_>>();
        let cases: [(i64, Vec<i64>); 14] = [
            (1, vec![2, 4, 6, 8, 10, 12, 14, 16]),
            (2, vec![2, 4, 6, 8, 10, 12, 14, 16]),
            (3, vec![2, 4, 6, 8, 10, 12, 14, 16]),
            (4, vec![4, 6, 8, 10, 12, 14, 16]),
            (5, vec![4, 6, 8, 10, 12, 14, 16]),
            // The tombstone at exactly the compaction revision stays.
            (6, vec![6, 8, 10, 12, 14, 16]),
            (7, vec![8, 10, 12, 14, 16]),
            (9, vec![8, 10, 12, 14, 16]),
            (11, vec![10, 12, 14, 16]),
            (12, vec![12, 14, 16]),
            (13, vec![14, 16]),
            (15, vec![14, 16]),
            (16, vec![16]),
            (17, vec![16]),
        ];
        for (rev, want) in cases {
            let mut ki = sample();
            ki.compact(rev);
            assert_eq!(all(&ki), want, "compact at {rev}");
            // Reads at or after the compaction revision are unchanged.
            let before = sample();
            for read in rev..=17 {
                assert_eq!(ki.get(read), before.get(read), "compact {rev} read {read}");
            }
        }
    }

    /// etcd's TestKeyIndexCompactAndKeep (after etcd#18274), on its key:
    /// put 2, 4, tombstone 6, put 8, 10, tombstone 12, put 14, 15.1, 16.
    /// Each case: the compaction revision and the revisions left in each
    /// generation (the last, empty one not listed).
    #[test]
    fn compaction_matches_etcds_key_index_cases() {
        let rv = |main: i64, sub: i64| Revision::new(main, sub);
        let mut ki = KeyIndex::new();
        for (main, sub) in [(2, 0), (4, 0)] {
            ki.put(rv(main, sub)).unwrap();
        }
        ki.tombstone(rv(6, 0)).unwrap();
        for (main, sub) in [(8, 0), (10, 0)] {
            ki.put(rv(main, sub)).unwrap();
        }
        ki.tombstone(rv(12, 0)).unwrap();
        for (main, sub) in [(14, 0), (15, 1), (16, 0)] {
            ki.put(rv(main, sub)).unwrap();
        }
        ki.tombstone(rv(17, 0)).unwrap();
        let g1 = vec![rv(2, 0), rv(4, 0), rv(6, 0)];
        let g2 = vec![rv(8, 0), rv(10, 0), rv(12, 0)];
        let g3 = vec![rv(14, 0), rv(15, 1), rv(16, 0), rv(17, 0)];
        let cases: Vec<(i64, Vec<Vec<Revision>>)> = vec![
            (1, vec![g1.clone(), g2.clone(), g3.clone()]),
            (2, vec![g1.clone(), g2.clone(), g3.clone()]),
            (3, vec![g1.clone(), g2.clone(), g3.clone()]),
            (4, vec![g1[1..].to_vec(), g2.clone(), g3.clone()]),
            (5, vec![g1[1..].to_vec(), g2.clone(), g3.clone()]),
            (6, vec![g1[2..].to_vec(), g2.clone(), g3.clone()]),
            (7, vec![g2.clone(), g3.clone()]),
            (8, vec![g2.clone(), g3.clone()]),
            (9, vec![g2.clone(), g3.clone()]),
            (10, vec![g2[1..].to_vec(), g3.clone()]),
            (11, vec![g2[1..].to_vec(), g3.clone()]),
            (12, vec![g2[2..].to_vec(), g3.clone()]),
            (13, vec![g3.clone()]),
            (14, vec![g3.clone()]),
            (15, vec![g3[1..].to_vec()]),
            (16, vec![g3[2..].to_vec()]),
            (17, vec![g3[3..].to_vec()]),
            (18, vec![]),
        ];
        for (rev, want) in cases {
            let mut c = ki.clone();
            c.compact(rev);
            let mut got: Vec<Vec<Revision>> = c
                .generations()
                .iter()
                .map(|g| g.revisions().to_vec())
                .collect();
            assert_eq!(got.pop(), Some(vec![]), "compact {rev}: last generation");
            assert_eq!(got, want, "compact {rev}");
            assert_eq!(c.is_empty(), want.is_empty(), "compact {rev}");
            // Compacting the same index again at a later revision gives what
            // compacting the original there gives (etcd's
            // TestKeyIndexCompactOnFurtherRev).
            for later in rev..=18 {
                let (mut twice, mut once) = (c.clone(), ki.clone());
                twice.compact(later);
                once.compact(later);
                assert_eq!(twice, once, "compact {rev} then {later}");
            }
        }
    }

    /// etcd#22376: a txn at the compaction revision deleted the key and then
    /// put it again. Both the tombstone and the new value stay.
    #[test]
    fn compaction_keeps_a_key_deleted_and_recreated_at_the_revision() {
        let mut ki = KeyIndex::new();
        ki.put(r(4)).unwrap();
        ki.tombstone(Revision::new(7, 0)).unwrap();
        ki.put(Revision::new(7, 1)).unwrap();
        ki.put(r(8)).unwrap();
        let before = ki.clone();
        ki.compact(7);
        assert_eq!(
            ki.revisions().collect::<Vec<_>>(),
            vec![Revision::new(7, 0), Revision::new(7, 1), r(8)]
        );
        for read in 7..=9 {
            assert_eq!(ki.get(read), before.get(read), "read {read}");
        }
        assert_eq!(ki.get(7).map(|k| k.created), Some(Revision::new(7, 1)));
        ki.compact(8);
        assert_eq!(ki.revisions().collect::<Vec<_>>(), vec![r(8)]);
    }

    /// etcd's TestRestoreTombstone (etcd#19188): a stored tombstone that is
    /// a key's only record rebuilds the index compaction left.
    #[test]
    fn restored_tombstone_equals_the_compacted_index() {
        let mut compacted = KeyIndex::new();
        compacted.put(r(10)).unwrap();
        compacted.put(r(12)).unwrap();
        compacted.tombstone(r(16)).unwrap();
        compacted.compact(16);
        let mut restored = KeyIndex::new();
        restored.restore_tombstone(r(16)).unwrap();
        assert_eq!(restored, compacted);
        for read in 16..=20 {
            assert_eq!(restored.get(read), None, "read {read}");
        }
        assert!(!restored.is_empty() && !restored.is_live());
        // Only into an index without history.
        assert!(restored.clone().restore_tombstone(r(17)).is_err());
        assert!(restored.tombstone(r(17)).is_err());
        // The key can come back; a later compaction drops the tombstone.
        restored.put(r(17)).unwrap();
        restored.put(r(18)).unwrap();
        let mut again = restored.clone();
        again.compact(16);
        assert_eq!(again, restored);
        restored.compact(17);
        assert_eq!(restored.generations().len(), 1);
        assert_eq!(restored.revisions().collect::<Vec<_>>(), vec![r(17), r(18)]);
        assert_eq!(
            restored.get(18).map(|k| (k.created, k.version)),
            Some((r(17), 2))
        );
    }

    #[test]
    fn compacting_a_deleted_key_empties_it() {
        let mut ki = KeyIndex::new();
        ki.put(r(2)).unwrap();
        ki.tombstone(r(3)).unwrap();
        ki.compact(2);
        assert!(!ki.is_empty());
        // At the tombstone's revision only the tombstone is left ...
        ki.compact(3);
        assert!(!ki.is_empty());
        assert_eq!(ki.revisions().collect::<Vec<_>>(), vec![r(3)]);
        // ... until a later compaction passes it.
        ki.compact(4);
        assert!(ki.is_empty());
    }

    #[test]
    fn same_main_revision_keeps_only_the_last_sub_on_compaction() {
        let mut ki = KeyIndex::new();
        ki.put(Revision::new(2, 0)).unwrap();
        ki.put(Revision::new(2, 1)).unwrap();
        assert_eq!(ki.get(2).map(|k| k.version), Some(2));
        ki.compact(2);
        assert_eq!(
            ki.revisions().collect::<Vec<_>>(),
            vec![Revision::new(2, 1)]
        );
        assert_eq!(ki.get(2).map(|k| k.version), Some(2));
    }
}
