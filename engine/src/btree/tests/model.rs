//! Property test against `BTreeMap`: random inserts, removes, gets and ranges
//! over several buckets and many commits, aborts, reopenings, held snapshots
//! and big (overflow) values, on the file (both read paths) and the in-memory
//! disk.

use std::collections::BTreeMap;
use std::ops::Bound;

use proptest::prelude::*;

use super::common::{dump, dump_txn, open_mem, value, Model, TempDir};
use crate::btree::storage::mem::MemDisk;
use crate::btree::{Db, Options, ReadMode, MAX_KEY_LEN};

const BUCKETS: [&str; 3] = ["key", "lease", "auth"];

#[derive(Clone, Debug)]
enum Mut {
    /// Puts (or removes) `n` consecutive long keys: deep trees, so branch
    /// pages split and merge too.
    Bulk {
        b: usize,
        start: u16,
        n: u16,
        del: bool,
    },
    Put {
        b: usize,
        k: u16,
        len: usize,
        seed: u8,
    },
    Del {
        b: usize,
        k: u16,
    },
    Reset {
        b: usize,
    },
    Get {
        b: usize,
        k: u16,
    },
    Range {
        b: usize,
        lo: u16,
        hi: u16,
        rev: bool,
    },
}

#[derive(Clone, Debug)]
enum Step {
    Txn {
        muts: Vec<Mut>,
        commit: bool,
        hold_reader: bool,
    },
    Reopen,
}

fn key(k: u16) -> Vec<u8> {
    let mut v = k.to_be_bytes().to_vec();
    if k.is_multiple_of(211) {
        v.resize(MAX_KEY_LEN, b'#');
    } else {
        v.extend(std::iter::repeat_n(b'.', usize::from(k % 23)));
    }
    v
}

fn bulk_key(k: u16) -> Vec<u8> {
    let mut v = vec![b'~'];
    v.extend_from_slice(&k.to_be_bytes());
    v.extend(std::iter::repeat_n(b'-', 200));
    v
}

fn mut_strategy() -> impl Strategy<Value = Mut> {
    let b = 0..BUCKETS.len();
    let k = 0u16..600;
    let len = prop_oneof![6 => 0usize..64, 3 => 64usize..1400, 1 => 1400usize..20_000];
    prop_oneof![
        10 => (b.clone(), k.clone(), len, any::<u8>()).prop_map(|(b, k, len, seed)| Mut::Put { b, k, len, seed }),
        5 => (b.clone(), k.clone()).prop_map(|(b, k)| Mut::Del { b, k }),
        1 => b.clone().prop_map(|b| Mut::Reset { b }),
        2 => (b.clone(), k.clone()).prop_map(|(b, k)| Mut::Get { b, k }),
        2 => (b.clone(), k.clone(), k, any::<bool>()).prop_map(|(b, lo, hi, rev)| Mut::Range { b, lo, hi, rev }),
        1 => (b, 0u16..8000, 0u16..3000, any::<bool>()).prop_map(|(b, start, n, del)| Mut::Bulk { b, start, n, del }),
    ]
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (prop::collection::vec(mut_strategy(), 0..80), prop::bool::weighted(0.8), prop::bool::weighted(0.3))
            .prop_map(|(muts, commit, hold_reader)| Step::Txn { muts, commit, hold_reader }),
        1 => Just(Step::Reopen),
    ]
}

fn range_of(
    m: &BTreeMap<Vec<u8>, Vec<u8>>,
    lo: &[u8],
    hi: &[u8],
    rev: bool,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut v: Vec<_> = m
        .range::<[u8], _>((Bound::Included(lo), Bound::Excluded(hi)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if rev {
        v.reverse();
    }
    v
}

enum Backend {
    File(TempDir, Options),
    Mem(std::sync::Arc<MemDisk>),
}

impl Backend {
    fn open(&self) -> Db {
        match self {
            Backend::File(dir, opts) => Db::open(dir.file("db"), opts.clone()).unwrap(),
            Backend::Mem(disk) => open_mem(disk).unwrap(),
        }
    }
}

fn run(mode: u8, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let backend = match mode {
        0 => Backend::File(TempDir::new("model"), Options::default()),
        1 => Backend::File(
            TempDir::new("model"),
            Options {
                read_mode: ReadMode::Pread { cache_pages: 32 },
                verify_checksums: true,
            },
        ),
        _ => Backend::Mem(MemDisk::new()),
    };
    let mut db = backend.open();
    let mut model = Model::new();
    {
        let mut w = db.begin_write().unwrap();
        for b in BUCKETS {
            w.create_bucket(b).unwrap();
            model.insert(b.to_string(), BTreeMap::new());
        }
        w.commit().unwrap();
    }
    for step in steps {
        match step {
            Step::Reopen => {
                drop(db);
                db = backend.open();
                prop_assert_eq!(&dump(&db).unwrap(), &model);
            }
            Step::Txn {
                muts,
                commit,
                hold_reader,
            } => {
                let held = hold_reader.then(|| db.begin_read());
                let mut pending = model.clone();
                let mut w = db.begin_write().unwrap();
                for m in muts {
                    match m {
                        Mut::Put { b, k, len, seed } => {
                            let v = value(u64::from(seed) << 16 | u64::from(k), len);
                            w.insert(BUCKETS[b], &key(k), &v).unwrap();
                            pending.get_mut(BUCKETS[b]).unwrap().insert(key(k), v);
                        }
                        Mut::Del { b, k } => {
                            let had = w.remove(BUCKETS[b], &key(k)).unwrap();
                            prop_assert_eq!(
                                had,
                                pending
                                    .get_mut(BUCKETS[b])
                                    .unwrap()
                                    .remove(&key(k))
                                    .is_some()
                            );
                        }
                        Mut::Reset { b } => {
                            prop_assert!(w.delete_bucket(BUCKETS[b]).unwrap());
                            prop_assert!(w.get(BUCKETS[b], &key(1)).is_err());
                            w.create_bucket(BUCKETS[b]).unwrap();
                            pending.insert(BUCKETS[b].to_string(), BTreeMap::new());
                        }
                        Mut::Bulk { b, start, n, del } => {
                            let m = pending.get_mut(BUCKETS[b]).unwrap();
                            for k in start..start.saturating_add(n) {
                                if del {
                                    let had = w.remove(BUCKETS[b], &bulk_key(k)).unwrap();
                                    prop_assert_eq!(had, m.remove(&bulk_key(k)).is_some());
                                } else {
                                    let v = value(u64::from(k), usize::from(k % 40));
                                    w.insert(BUCKETS[b], &bulk_key(k), &v).unwrap();
                                    m.insert(bulk_key(k), v);
                                }
                            }
                        }
                        Mut::Get { b, k } => {
                            let got = w.get(BUCKETS[b], &key(k)).unwrap();
                            prop_assert_eq!(got.as_ref(), pending[BUCKETS[b]].get(&key(k)));
                        }
                        Mut::Range { b, lo, hi, rev } => {
                            let (lo, hi) = (key(lo.min(hi)), key(lo.max(hi)));
                            let want = range_of(&pending[BUCKETS[b]], &lo, &hi, rev);
                            let it = w.range(BUCKETS[b], lo.as_slice()..hi.as_slice()).unwrap();
                            let got: Vec<_> = if rev {
                                it.rev().map(Result::unwrap).collect()
                            } else {
                                it.map(Result::unwrap).collect()
                            };
                            prop_assert_eq!(&got, &want);
                            // The committed snapshot is unaffected by the open txn.
                            let r = db.begin_read();
                            let got: Vec<_> = r
                                .range(BUCKETS[b], lo.as_slice()..hi.as_slice())
                                .unwrap()
                                .map(Result::unwrap)
                                .collect();
                            prop_assert_eq!(got, range_of(&model[BUCKETS[b]], &lo, &hi, false));
                        }
                    }
                }
                for b in BUCKETS {
                    prop_assert_eq!(w.bucket_len(b).unwrap(), pending[b].len() as u64);
                }
                let before = model.clone();
                if commit {
                    w.commit().unwrap();
                    model = pending;
                } else {
                    w.abort();
                }
                prop_assert_eq!(&dump(&db).unwrap(), &model);
                if let Some(r) = held {
                    prop_assert_eq!(&dump_txn(&r).unwrap(), &before);
                }
                let report = db.check_integrity().unwrap();
                let st = db.stats().unwrap();
                prop_assert_eq!(report.free_pages, st.free_pages);
                prop_assert!(st.file_size >= st.page_count * 4096);
            }
        }
    }
    drop(db);
    let db = backend.open();
    prop_assert_eq!(&dump(&db).unwrap(), &model);
    db.check_integrity().unwrap();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn btree_matches_btreemap_model(mode in 0u8..3, steps in prop::collection::vec(step_strategy(), 1..14)) {
        run(mode, steps)?;
    }
}
