//! Behaviour tests: API, buckets, overflow, snapshots, reuse, compaction,
//! corruption, poisoning.

use std::collections::BTreeMap;

use super::common::{dump, dump_txn, open_mem, value, Model, Rng, TempDir};
use crate::btree::format::{PAGE, PAGE_SIZE};
use crate::btree::storage::mem::MemDisk;
use crate::btree::{BtreeError, Db, Options, ReadMode, MAX_KEY_LEN};

const BUCKETS: [&str; 5] = ["key", "meta", "lease", "auth", "members"];

fn rev_key(main: u64, sub: u64) -> Vec<u8> {
    // etcd's 17-byte revision key: 8-byte main, '_', 8-byte sub.
    let mut k = main.to_be_bytes().to_vec();
    k.push(b'_');
    k.extend_from_slice(&sub.to_be_bytes());
    k
}

fn all_modes() -> Vec<Options> {
    vec![
        Options {
            read_mode: ReadMode::Mmap,
            verify_checksums: true,
        },
        Options {
            read_mode: ReadMode::Mmap,
            verify_checksums: false,
        },
        Options {
            read_mode: ReadMode::Pread { cache_pages: 0 },
            verify_checksums: true,
        },
        Options {
            read_mode: ReadMode::Pread { cache_pages: 16 },
            verify_checksums: true,
        },
    ]
}

#[test]
fn etcd_buckets_round_trip_across_reopen_in_every_read_mode() {
    for opts in all_modes() {
        let dir = TempDir::new("buckets");
        let path = dir.file("db");
        let mut model = Model::new();
        {
            let db = Db::open(&path, opts.clone()).unwrap();
            let mut w = db.begin_write().unwrap();
            for b in BUCKETS {
                w.create_bucket(b).unwrap();
                model.insert(b.to_string(), BTreeMap::new());
            }
            for i in 0..3000u64 {
                let k = rev_key(i + 1, 0);
                let v = value(i, 256);
                w.insert("key", &k, &v).unwrap();
                model.get_mut("key").unwrap().insert(k, v);
            }
            w.insert("meta", b"consistent_index", &42u64.to_be_bytes())
                .unwrap();
            model
                .get_mut("meta")
                .unwrap()
                .insert(b"consistent_index".to_vec(), 42u64.to_be_bytes().to_vec());
            w.commit().unwrap();
            assert_eq!(dump(&db).unwrap(), model);
            db.check_integrity().unwrap();
        }
        let db = Db::open(&path, opts.clone()).unwrap();
        assert_eq!(db.uses_mmap(), opts.read_mode == ReadMode::Mmap);
        assert_eq!(dump(&db).unwrap(), model);
        let r = db.begin_read();
        assert_eq!(r.get("key", &rev_key(17, 0)).unwrap(), Some(value(16, 256)));
        assert_eq!(r.get("key", &rev_key(5000, 0)).unwrap(), None);
        assert_eq!(r.bucket_len("key").unwrap(), 3000);
        assert_eq!(r.buckets(), vec!["auth", "key", "lease", "members", "meta"]);
    }
}

#[test]
fn range_bounds_and_reverse_match_btreemap() {
    let disk = MemDisk::new();
    let db = open_mem(&disk).unwrap();
    let mut w = db.begin_write().unwrap();
    w.create_bucket("b").unwrap();
    let mut model = BTreeMap::new();
    for i in (0..2000u32).step_by(3) {
        let k = i.to_be_bytes().to_vec();
        w.insert("b", &k, &value(i.into(), (i % 50) as usize))
            .unwrap();
        model.insert(k, value(i.into(), (i % 50) as usize));
    }
    w.commit().unwrap();
    let r = db.begin_read();
    let w = db.begin_write().unwrap();
    let mut rng = Rng(7);
    for _ in 0..200 {
        let a = (rng.below(2100) as u32).to_be_bytes();
        let b = (rng.below(2100) as u32).to_be_bytes();
        let (a, b) = (a.as_slice(), b.as_slice());
        if a > b {
            continue;
        }
        let want: Vec<_> = model
            .range::<[u8], _>((std::ops::Bound::Included(a), std::ops::Bound::Excluded(b)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let got: Vec<_> = r.range("b", a..b).unwrap().map(Result::unwrap).collect();
        assert_eq!(got, want);
        let got_w: Vec<_> = w.range("b", a..b).unwrap().map(Result::unwrap).collect();
        assert_eq!(got_w, want);
        let mut want_rev = want.clone();
        want_rev.reverse();
        let got: Vec<_> = r
            .range("b", a..b)
            .unwrap()
            .rev()
            .map(Result::unwrap)
            .collect();
        assert_eq!(got, want_rev);
        let want_incl: Vec<_> = model
            .range::<[u8], _>((std::ops::Bound::Included(a), std::ops::Bound::Included(b)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let got: Vec<_> = r.range("b", a..=b).unwrap().map(Result::unwrap).collect();
        assert_eq!(got, want_incl);
        // Both ends at once meet in the middle without repeating.
        let mut it = r.range("b", a..=b).unwrap();
        let mut front = Vec::new();
        let mut back = Vec::new();
        while let Some(x) = it.next() {
            front.push(x.unwrap());
            match it.next_back() {
                Some(x) => back.push(x.unwrap()),
                None => break,
            }
        }
        back.reverse();
        front.extend(back);
        assert_eq!(front, want_incl);
    }
    assert_eq!(r.range("b", ..).unwrap().count(), model.len());
    assert_eq!(r.range("b", ..).unwrap().rev().count(), model.len());
}

#[test]
fn big_values_use_overflow_pages_and_are_freed() {
    let disk = MemDisk::new();
    let db = open_mem(&disk).unwrap();
    let mut w = db.begin_write().unwrap();
    w.create_bucket("key").unwrap();
    let big = value(1, 1536 * 1024); // etcd's max request size
    w.insert("key", b"big", &big).unwrap();
    w.insert("key", b"edge", &value(2, 1400)).unwrap();
    // The txn sees its own big value before commit.
    assert_eq!(w.get("key", b"big").unwrap().as_deref(), Some(&big[..]));
    w.commit().unwrap();
    let r = db.begin_read();
    assert_eq!(r.get("key", b"big").unwrap().as_deref(), Some(&big[..]));
    assert_eq!(r.get("key", b"edge").unwrap(), Some(value(2, 1400)));
    let report = db.check_integrity().unwrap();
    assert_eq!(report.overflow_pages, (big.len().div_ceil(4068) + 1) as u64);
    drop(r);
    let in_use = db.stats().unwrap().in_use_bytes;
    let mut w = db.begin_write().unwrap();
    assert!(w.remove("key", b"big").unwrap());
    w.commit().unwrap();
    let report = db.check_integrity().unwrap();
    assert_eq!(report.overflow_pages, 1);
    assert!(db.stats().unwrap().in_use_bytes < in_use - 1024 * 1024);
}

#[test]
fn caller_mistakes_are_typed_errors_that_change_nothing() {
    let disk = MemDisk::new();
    let db = open_mem(&disk).unwrap();
    let mut w = db.begin_write().unwrap();
    assert!(
        matches!(w.insert("nope", b"k", b"v"), Err(BtreeError::BucketNotFound(b)) if b == "nope")
    );
    w.create_bucket("b").unwrap();
    assert!(matches!(
        w.insert("b", &vec![0; MAX_KEY_LEN + 1], b"v"),
        Err(BtreeError::KeyTooLarge { .. })
    ));
    w.insert("b", &vec![7; MAX_KEY_LEN], &vec![1; 5000])
        .unwrap();
    assert!(matches!(
        w.get("missing", b"k"),
        Err(BtreeError::BucketNotFound(_))
    ));
    w.commit().unwrap();
    let r = db.begin_read();
    assert!(matches!(
        r.get("missing", b"k"),
        Err(BtreeError::BucketNotFound(_))
    ));
    assert_eq!(
        r.get("b", &vec![7; MAX_KEY_LEN]).unwrap(),
        Some(vec![1; 5000])
    );
}

#[test]
fn abort_and_empty_commit_leave_the_file_alone() {
    let disk = MemDisk::new();
    let db = open_mem(&disk).unwrap();
    let mut w = db.begin_write().unwrap();
    w.create_bucket("b").unwrap();
    w.insert("b", b"k", b"v").unwrap();
    w.commit().unwrap();
    let before = (db.stats().unwrap(), disk.syncs());
    let mut w = db.begin_write().unwrap();
    w.insert("b", b"k", b"other").unwrap();
    w.create_bucket("c").unwrap();
    w.abort();
    let w = db.begin_write().unwrap();
    w.commit().unwrap();
    let mut w = db.begin_write().unwrap();
    assert!(!w.remove("b", b"absent").unwrap());
    w.commit().unwrap();
    assert_eq!((db.stats().unwrap(), disk.syncs()), before);
    assert_eq!(db.begin_read().get("b", b"k").unwrap(), Some(b"v".to_vec()));
}

#[test]
fn snapshot_stays_readable_while_later_commits_reuse_pages() {
    let dir = TempDir::new("snap");
    let db = Db::open(dir.file("db"), Options::default()).unwrap();
    let mut w = db.begin_write().unwrap();
    w.create_bucket("b").unwrap();
    for i in 0..2000u32 {
        w.insert("b", &i.to_be_bytes(), &value(i.into(), 100))
            .unwrap();
    }
    w.commit().unwrap();
    let old = db.begin_read();
    let old_model = super::common::dump_txn(&old).unwrap();
    // Readers on other threads while commits rewrite every key.
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            for _ in 0..20 {
                assert_eq!(super::common::dump_txn(&old).unwrap(), old_model);
            }
        });
        for round in 1..30u64 {
            let mut w = db.begin_write().unwrap();
            for i in 0..2000u32 {
                w.insert(
                    "b",
                    &i.to_be_bytes(),
                    &value(u64::from(i) + round * 10_000, 100),
                )
                .unwrap();
            }
            w.commit().unwrap();
        }
        h.join().unwrap();
    });
    assert_eq!(super::common::dump_txn(&old).unwrap(), old_model);
    assert_eq!(
        db.begin_read().get("b", &5u32.to_be_bytes()).unwrap(),
        Some(value(5 + 29 * 10_000, 100))
    );
    drop(old);
    db.check_integrity().unwrap();
}

#[test]
fn free_pages_are_reused_so_an_overwrite_loop_keeps_the_file_bounded() {
    let dir = TempDir::new("reuse");
    let db = Db::open(dir.file("db"), Options::default()).unwrap();
    let mut w = db.begin_write().unwrap();
    w.create_bucket("key").unwrap();
    w.commit().unwrap();
    let mut sizes = Vec::new();
    for round in 0..200u64 {
        let mut w = db.begin_write().unwrap();
        for i in 0..1000u64 {
            w.insert("key", &rev_key(i, 0), &value(i + round, 256))
                .unwrap();
        }
        // A big value replaced every round exercises overflow reuse too.
        w.insert("key", b"big", &value(round, 100_000)).unwrap();
        w.commit().unwrap();
        sizes.push(db.stats().unwrap().page_count);
    }
    let (first, last) = (sizes[5], *sizes.last().unwrap());
    assert!(
        last <= first + first / 4,
        "page count grew from {first} to {last}"
    );
    let st = db.stats().unwrap();
    assert!(
        st.file_size <= 2 * st.page_count * PAGE + (1 << 20),
        "{st:?}"
    );
    db.check_integrity().unwrap();
    drop(db);
    // The free list survives a reopen: no page leaked.
    let db = Db::open(dir.file("db"), Options::default()).unwrap();
    let report = db.check_integrity().unwrap();
    assert_eq!(report.free_pages, db.stats().unwrap().free_pages);
}

#[test]
fn file_shrinks_after_mass_delete_at_the_tail() {
    let disk = MemDisk::new();
    let db = open_mem(&disk).unwrap();
    let mut w = db.begin_write().unwrap();
    w.create_bucket("b").unwrap();
    for i in 0..20_000u32 {
        w.insert("b", &i.to_be_bytes(), &value(i.into(), 200))
            .unwrap();
    }
    w.commit().unwrap();
    let big = db.stats().unwrap();
    // Delete everything over a few commits; freed pages are cut off the end.
    for _ in 0..3 {
        let mut w = db.begin_write().unwrap();
        let keys: Vec<_> = w.range("b", ..).unwrap().map(|r| r.unwrap().0).collect();
        for k in keys {
            w.remove("b", &k).unwrap();
        }
        w.insert("b", b"x", b"y").unwrap();
        w.commit().unwrap();
    }
    let small = db.stats().unwrap();
    assert!(
        small.page_count < big.page_count / 20,
        "{big:?} -> {small:?}"
    );
    assert!(small.file_size < big.file_size / 4, "{big:?} -> {small:?}");
    db.check_integrity().unwrap();
    drop(db);
    let db = open_mem(&disk).unwrap();
    assert_eq!(db.begin_read().get("b", b"x").unwrap(), Some(b"y".to_vec()));
    db.check_integrity().unwrap();
}

#[test]
fn compact_into_copies_everything_into_a_smaller_file() {
    let dir = TempDir::new("compact");
    let db = Db::open(dir.file("db"), Options::default()).unwrap();
    let mut w = db.begin_write().unwrap();
    for b in BUCKETS {
        w.create_bucket(b).unwrap();
    }
    for i in 0..30_000u64 {
        w.insert("key", &rev_key(i, 0), &value(i, 256)).unwrap();
    }
    w.insert("lease", b"big", &value(9, 300_000)).unwrap();
    w.commit().unwrap();
    let mut w = db.begin_write().unwrap();
    for i in 0..30_000u64 {
        if i % 5 != 0 {
            w.remove("key", &rev_key(i, 0)).unwrap();
        }
    }
    w.commit().unwrap();
    let model = dump(&db).unwrap();
    // A write committed while the copy runs is not in it (the copy reads a snapshot).
    let report = db.compact_into(dir.file("copy")).unwrap();
    assert_eq!(report.keys, 6000 + 1);
    let copy = Db::open(dir.file("copy"), Options::default()).unwrap();
    assert_eq!(dump(&copy).unwrap(), model);
    copy.check_integrity().unwrap();
    let (a, b) = (db.stats().unwrap(), copy.stats().unwrap());
    assert!(b.file_size * 3 < a.file_size, "{a:?} vs {b:?}");
    assert!(b.page_count * 3 < a.page_count, "{a:?} vs {b:?}");
    assert!(matches!(
        db.compact_into(dir.file("copy")),
        Err(BtreeError::Io(_))
    ));
    drop(copy);
    // Offline defrag swaps the compacted file in.
    let db = db.defrag(Options::default()).unwrap();
    assert_eq!(dump(&db).unwrap(), model);
    assert!(db.stats().unwrap().file_size * 3 < a.file_size);
    let mut w = db.begin_write().unwrap();
    w.insert("key", b"after", b"defrag").unwrap();
    w.commit().unwrap();
    db.check_integrity().unwrap();
}

#[test]
fn failed_fsync_poisons_writes_but_reads_go_on() {
    let disk = MemDisk::new();
    let db = open_mem(&disk).unwrap();
    let mut w = db.begin_write().unwrap();
    w.create_bucket("b").unwrap();
    w.insert("b", b"k", b"v1").unwrap();
    w.commit().unwrap();
    for k in [1, 2] {
        // k = 1: the page sync fails; k = 2: the meta sync fails.
        let disk = MemDisk::from_image(disk.live());
        let db = open_mem(&disk).unwrap();
        disk.fail_sync(k);
        let mut w = db.begin_write().unwrap();
        w.insert("b", b"k", b"v2").unwrap();
        assert!(matches!(w.commit(), Err(BtreeError::Io(_))));
        assert!(db.is_poisoned());
        assert!(matches!(
            db.begin_write().map(|_| ()),
            Err(BtreeError::Poisoned)
        ));
        assert_eq!(
            db.begin_read().get("b", b"k").unwrap(),
            Some(b"v1".to_vec())
        );
    }
}

#[test]
fn torn_newest_meta_falls_back_to_the_previous_commit() {
    let disk = MemDisk::new();
    let db = open_mem(&disk).unwrap();
    let mut w = db.begin_write().unwrap();
    w.create_bucket("b").unwrap();
    w.insert("b", b"k", b"old").unwrap();
    w.commit().unwrap();
    let mut w = db.begin_write().unwrap();
    w.insert("b", b"k", b"new").unwrap();
    w.insert("b", b"k2", &value(3, 9000)).unwrap();
    w.commit().unwrap();
    let txn = db.stats().unwrap().txn_id;
    drop(db);
    let image = disk.live();
    for cut in [1usize, 8, 20, 40, 59, 512, 4095] {
        // The newest meta's write tore after `cut` bytes: the rest is the
        // older content of that slot (txn - 2).
        let mut torn = image.clone();
        let slot = (txn % 2) as usize * PAGE_SIZE;
        let older = crate::btree::format::Meta {
            txn: txn - 2,
            ..crate::btree::format::Meta::empty()
        }
        .encode();
        torn[slot + cut..slot + PAGE_SIZE].copy_from_slice(&older[cut..]);
        let db = open_mem(&MemDisk::from_image(torn)).unwrap();
        let r = db.begin_read();
        if cut >= 60 {
            // The 60 covered bytes all made it: the commit is whole.
            assert_eq!(r.get("b", b"k").unwrap(), Some(b"new".to_vec()));
        } else {
            assert_eq!(r.txn_id(), txn - 1);
            assert_eq!(r.get("b", b"k").unwrap(), Some(b"old".to_vec()));
            assert_eq!(r.get("b", b"k2").unwrap(), None);
        }
        drop(r);
        db.check_integrity().unwrap();
    }
    // Both metas gone: an error, not an empty database.
    let mut both = image.clone();
    both[..2 * PAGE_SIZE].fill(0xAB);
    assert!(matches!(
        open_mem(&MemDisk::from_image(both)),
        Err(BtreeError::Corrupt { page: 0, .. })
    ));
}

#[test]
fn flipped_byte_in_any_page_gives_corrupt_never_a_panic() {
    let disk = MemDisk::new();
    let db = open_mem(&disk).unwrap();
    let mut w = db.begin_write().unwrap();
    for b in ["a", "b"] {
        w.create_bucket(b).unwrap();
    }
    for i in 0..600u32 {
        w.insert("a", &i.to_be_bytes(), &value(i.into(), 150))
            .unwrap();
    }
    w.insert("b", b"big", &value(1, 20_000)).unwrap();
    w.commit().unwrap();
    let model = dump(&db).unwrap();
    let pages = db.stats().unwrap().page_count;
    drop(db);
    let image = disk.live();
    let mut corrupt_seen = 0;
    for p in 2..pages {
        for at in [0usize, 5, 9, 17, 300, 4000] {
            let mut img = image.clone();
            img[p as usize * PAGE_SIZE + at] ^= 0x10;
            let outcome = open_mem(&MemDisk::from_image(img)).and_then(|db| {
                let m = dump(&db)?;
                db.check_integrity()?;
                Ok(m)
            });
            match outcome {
                Ok(m) => assert_eq!(
                    m, model,
                    "page {p} byte {at}: wrong data instead of an error"
                ),
                Err(BtreeError::Corrupt { .. }) => corrupt_seen += 1,
                Err(e) => panic!("page {p} byte {at}: {e}"),
            }
        }
    }
    assert!(corrupt_seen > 0);
}

#[test]
fn garbage_with_valid_checksums_gives_corrupt_never_a_panic() {
    // Bytes that pass the CRC (a buggy writer, or a check disabled) must
    // still be bounds-checked: random bodies, resealed.
    let disk = MemDisk::new();
    let db = open_mem(&disk).unwrap();
    let mut w = db.begin_write().unwrap();
    w.create_bucket("a").unwrap();
    for i in 0..400u32 {
        w.insert("a", &i.to_be_bytes(), &value(i.into(), (i % 300) as usize))
            .unwrap();
    }
    w.insert("a", b"big", &value(1, 10_000)).unwrap();
    w.commit().unwrap();
    let pages = db.stats().unwrap().page_count;
    drop(db);
    let image = disk.live();
    let mut rng = Rng(99);
    for round in 0..400 {
        let mut img = image.clone();
        let p = 2 + rng.below(pages - 2) as usize;
        let page = &mut img[p * PAGE_SIZE..(p + 1) * PAGE_SIZE];
        for _ in 0..1 + rng.below(20) {
            let at = 4 + rng.below(PAGE_SIZE as u64 - 4) as usize;
            // Favour the header and slot area, where offsets live.
            let at = if round % 2 == 0 { 4 + at % 64 } else { at };
            page[at] = rng.next() as u8;
        }
        let crc = crc32fast::hash(&page[4..]);
        page[..4].copy_from_slice(&crc.to_le_bytes());
        let outcome = open_mem(&MemDisk::from_image(img)).and_then(|db| {
            let m = dump(&db)?;
            let r = db.begin_read();
            for k in 0..400u32 {
                r.get("a", &k.to_be_bytes())?;
            }
            let _ = r.range("a", ..)?.rev().count();
            db.check_integrity()?;
            let mut w = db.begin_write()?;
            for k in 0..50u32 {
                w.insert("a", &(k * 7).to_be_bytes(), b"x")?;
                w.remove("a", &(k * 5).to_be_bytes())?;
            }
            w.commit()?;
            Ok(m)
        });
        match outcome {
            Ok(_) | Err(BtreeError::Corrupt { .. }) => {}
            Err(e) => panic!("round {round}: {e}"),
        }
    }
}

#[test]
fn flipped_byte_is_caught_through_the_memory_map_too() {
    let dir = TempDir::new("mmap-corrupt");
    let path = dir.file("db");
    {
        let db = Db::open(&path, Options::default()).unwrap();
        let mut w = db.begin_write().unwrap();
        w.create_bucket("b").unwrap();
        for i in 0..500u32 {
            w.insert("b", &i.to_be_bytes(), &value(i.into(), 100))
                .unwrap();
        }
        w.commit().unwrap();
    }
    let clean = std::fs::read(&path).unwrap();
    let pages = (clean.len() / PAGE_SIZE) as u64;
    let mut caught = 0;
    for p in 2..pages.min(40) {
        let mut img = clean.clone();
        img[p as usize * PAGE_SIZE + 100] ^= 0x01;
        std::fs::write(&path, &img).unwrap();
        for verify in [true, false] {
            let db = match Db::open(
                &path,
                Options {
                    read_mode: ReadMode::Mmap,
                    verify_checksums: verify,
                },
            ) {
                Ok(db) => db,
                Err(BtreeError::Corrupt { .. }) => continue,
                Err(e) => panic!("{e}"),
            };
            match dump(&db) {
                Err(BtreeError::Corrupt { .. }) => caught += usize::from(verify),
                Err(e) => panic!("{e}"),
                Ok(_) => {}
            }
        }
    }
    assert!(caught > 0);
}

#[test]
fn compact_into_copies_one_snapshot_while_writes_continue() {
    let dir = TempDir::new("compact-live");
    let db = Db::open(dir.file("db"), Options::default()).unwrap();
    let mut w = db.begin_write().unwrap();
    w.create_bucket("key").unwrap();
    for i in 0..20_000u64 {
        w.insert("key", &rev_key(i, 0), &value(i, 256)).unwrap();
    }
    w.commit().unwrap();
    let base_txn = db.stats().unwrap().txn_id;
    let base = dump(&db).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let report = std::thread::scope(|s| {
        s.spawn(|| {
            for r in 1..=40u64 {
                let mut w = db.begin_write().unwrap();
                w.insert("key", format!("w{r:03}").as_bytes(), &value(r, 3000))
                    .unwrap();
                w.remove("key", &rev_key(r, 0)).unwrap();
                w.commit().unwrap();
                if r == 1 {
                    tx.send(()).unwrap();
                }
            }
        });
        rx.recv().unwrap();
        db.compact_into(dir.file("copy")).unwrap()
    });
    // The copy is exactly the snapshot it reports, whatever the writer did meanwhile.
    let rounds = report.txn_id - base_txn;
    assert!((1..=40).contains(&rounds));
    let mut want = base;
    for r in 1..=rounds {
        let b = want.get_mut("key").unwrap();
        b.insert(format!("w{r:03}").into_bytes(), value(r, 3000));
        b.remove(&rev_key(r, 0));
    }
    let copy = Db::open(dir.file("copy"), Options::default()).unwrap();
    assert_eq!(dump(&copy).unwrap(), want);
    copy.check_integrity().unwrap();
    db.check_integrity().unwrap();
}

#[test]
fn handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Db>();
    send_sync::<crate::btree::ReadTxn>();
    send_sync::<crate::btree::Range<'static>>();
}

/// Online defrag: a snapshot taken before it keeps reading the old file;
/// a writer thread keeps committing around it; afterwards the file is
/// smaller, holds every commit, and reopens to the same state.
#[test]
fn online_defrag_swaps_the_file_under_live_readers_and_writers() {
    let dir = TempDir::new("defrag-online");
    let db = Db::open(dir.file("db"), Options::default()).unwrap();
    let mut w = db.begin_write().unwrap();
    w.create_bucket("key").unwrap();
    for i in 0..20_000u64 {
        w.insert("key", &rev_key(i, 0), &value(i, 256)).unwrap();
    }
    w.commit().unwrap();
    let mut w = db.begin_write().unwrap();
    for i in 0..20_000u64 {
        if i % 10 != 0 {
            w.remove("key", &rev_key(i, 0)).unwrap();
        }
    }
    w.commit().unwrap();
    let before = db.stats().unwrap();
    let old_snap = db.begin_read();
    let old_model = dump_txn(&old_snap).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reports = std::thread::scope(|s| {
        s.spawn(|| {
            for r in 1..=60u64 {
                let mut w = db.begin_write().unwrap();
                w.insert("key", format!("w{r:03}").as_bytes(), &value(r, 700))
                    .unwrap();
                w.commit().unwrap();
                if r == 1 {
                    tx.send(()).unwrap();
                }
            }
        });
        rx.recv().unwrap();
        // Two defrags while the writer runs.
        let a = db.defrag_online().unwrap();
        let b = db.defrag_online().unwrap();
        (a, b)
    });
    // Each copy is a whole commit: the writer only adds keys, so the second
    // copy holds at least the keys of the first. (Txn ids restart in each
    // new file: they are not comparable across a defrag.)
    assert!(reports.0.keys >= 2000, "{:?}", reports.0);
    assert!(reports.1.keys >= reports.0.keys, "{reports:?}");
    // The old snapshot still reads its (now unlinked) file.
    assert_eq!(dump_txn(&old_snap).unwrap(), old_model);
    drop(old_snap);
    let mut want = old_model;
    for r in 1..=60u64 {
        want.get_mut("key")
            .unwrap()
            .insert(format!("w{r:03}").into_bytes(), value(r, 700));
    }
    assert_eq!(dump(&db).unwrap(), want);
    db.check_integrity().unwrap();
    // One more defrag with nothing written meanwhile: the file shrinks to
    // what the data needs.
    db.defrag_online().unwrap();
    let after = db.stats().unwrap();
    assert!(
        after.file_size * 3 < before.file_size,
        "{before:?} vs {after:?}"
    );
    assert_eq!(after.free_pages, 0, "{after:?}");
    assert_eq!(db.allocated_bytes(), after.page_count * after.page_size);
    assert!(db.allocated_bytes() <= after.file_size);
    assert!(!dir.file("db.defrag").exists());
    drop(db);
    let db = Db::open(dir.file("db"), Options::default()).unwrap();
    assert_eq!(dump(&db).unwrap(), want);
    db.check_integrity().unwrap();
}
