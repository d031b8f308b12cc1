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
//!   one put before it; the last generation holds no tombstone;
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

    /// Drops the history that compaction at `at_rev` no longer needs: every
    /// generation whose tombstone is at or before `at_rev`, and within the
    /// generation alive at `at_rev` every revision before the newest one
    /// `<= at_rev`. Everything after `at_rev` stays.
    pub(crate) fn compact(&mut self, at_rev: i64) {
        let last = self.generations.len().saturating_sub(1);
        let mut first_kept = 0;
        while first_kept < last {
            match self.generations[first_kept].revs.last() {
                Some(tomb) if tomb.main > at_rev => break,
                _ => first_kept += 1,
            }
        }
        self.generations.drain(..first_kept);
        if let Some(g) = self.generations.first_mut() {
            if let Some(n) = g.revs.iter().rposition(|r| r.main <= at_rev) {
                g.revs.drain(..n);
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
        let cases: [(i64, Vec<i64>); 9] = [
            (1, vec![2, 4, 6, 8, 10, 12, 14, 16]),
            (2, vec![2, 4, 6, 8, 10, 12, 14, 16]),
            (3, vec![2, 4, 6, 8, 10, 12, 14, 16]),
            (4, vec![4, 6, 8, 10, 12, 14, 16]),
            (6, vec![8, 10, 12, 14, 16]),
            (9, vec![8, 10, 12, 14, 16]),
            (11, vec![10, 12, 14, 16]),
            (12, vec![14, 16]),
            (16, vec![16]),
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

    #[test]
    fn compacting_a_deleted_key_empties_it() {
        let mut ki = KeyIndex::new();
        ki.put(r(2)).unwrap();
        ki.tombstone(r(3)).unwrap();
        ki.compact(2);
        assert!(!ki.is_empty());
        ki.compact(3);
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
