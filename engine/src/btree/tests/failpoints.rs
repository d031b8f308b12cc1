//! Failpoints at the commit sites (feature `failpoints`): an injected I/O
//! error poisons the Db, which keeps serving reads; a panic at the site (a
//! crash mid-commit) leaves a file that reopens to the old or the new commit.
//! Failpoints are process-global: each test arms them for its own thread only
//! (`db::fp`), and `FailScenario` serialises the tests that configure them.

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::common::TempDir;
use crate::btree::db::fp;
use crate::btree::{BtreeError, Db, Options};

const SITES: [&str; 3] = [
    "btree::commit::after_pages",
    "btree::commit::before_meta",
    "btree::meta::flip",
];

fn setup(dir: &TempDir) -> Db {
    let db = Db::open(dir.file("db"), Options::default()).unwrap();
    let mut w = db.begin_write().unwrap();
    w.create_bucket("b").unwrap();
    w.insert("b", b"k", b"v1").unwrap();
    w.commit().unwrap();
    db
}

fn read_k(db: &Db) -> Option<Vec<u8>> {
    db.begin_read().get("b", b"k").unwrap()
}

#[test]
fn failpoint_error_at_each_commit_site_poisons_writes_and_keeps_reads() {
    let _scenario = fail::FailScenario::setup();
    fp::arm(true);
    for site in SITES {
        let dir = TempDir::new("fp-err");
        let db = setup(&dir);
        fail::cfg(site, "return").unwrap();
        let mut w = db.begin_write().unwrap();
        w.insert("b", b"k", b"v2").unwrap();
        assert!(matches!(w.commit(), Err(BtreeError::Io(_))), "{site}");
        fail::remove(site);
        assert!(db.is_poisoned());
        assert!(
            matches!(db.begin_write().map(|_| ()), Err(BtreeError::Poisoned)),
            "{site}"
        );
        assert_eq!(
            read_k(&db),
            Some(b"v1".to_vec()),
            "{site}: reads go on at the last published commit"
        );
        drop(db);
        let db = Db::open(dir.file("db"), Options::default()).unwrap();
        let want: &[u8] = if site == "btree::meta::flip" {
            b"v2"
        } else {
            b"v1"
        };
        // Without a power loss the meta written before the failing sync is in
        // the page cache, so only `meta::flip` reopens to the new commit.
        assert_eq!(read_k(&db).as_deref(), Some(want), "{site}");
        db.check_integrity().unwrap();
    }
    fp::arm(false);
}

#[test]
fn failpoint_panic_at_each_commit_site_reopens_to_a_whole_commit() {
    let _scenario = fail::FailScenario::setup();
    fp::arm(true);
    for site in SITES {
        let dir = TempDir::new("fp-panic");
        let db = setup(&dir);
        fail::cfg(site, "panic").unwrap();
        let crashed = catch_unwind(AssertUnwindSafe(|| {
            let mut w = db.begin_write().unwrap();
            w.insert("b", b"k", b"v2").unwrap();
            w.insert("b", b"big", &vec![7u8; 50_000]).unwrap();
            w.commit()
        }));
        fail::remove(site);
        assert!(crashed.is_err(), "{site}: the failpoint did not fire");
        // The writer died holding the lock: no more writes, reads go on.
        assert!(
            matches!(db.begin_write().map(|_| ()), Err(BtreeError::Poisoned)),
            "{site}"
        );
        assert_eq!(read_k(&db), Some(b"v1".to_vec()));
        drop(db);
        let db = Db::open(dir.file("db"), Options::default()).unwrap();
        let got = read_k(&db);
        assert!(
            got.as_deref() == Some(b"v1") || got.as_deref() == Some(b"v2"),
            "{site}: {got:?}"
        );
        db.check_integrity().unwrap();
        let mut w = db.begin_write().unwrap();
        w.insert("b", b"k", b"v3").unwrap();
        w.commit().unwrap();
        assert_eq!(read_k(&db), Some(b"v3".to_vec()));
    }
    fp::arm(false);
}

const DEFRAG_SITES: [&str; 3] = [
    "btree::defrag::before_rename",
    "btree::defrag::after_rename",
    "btree::defrag::after_dir_sync",
];

/// A db with garbage to defrag and two buckets.
fn setup_for_defrag(dir: &TempDir) -> (Db, Vec<(Vec<u8>, Vec<u8>)>) {
    let db = setup(dir);
    let mut w = db.begin_write().unwrap();
    for i in 0..3000u32 {
        w.insert("b", format!("x{i:05}").as_bytes(), &[i as u8; 300])
            .unwrap();
    }
    w.commit().unwrap();
    let mut w = db.begin_write().unwrap();
    for i in 0..3000u32 {
        if i % 7 != 0 {
            w.remove("b", format!("x{i:05}").as_bytes()).unwrap();
        }
    }
    w.create_bucket("c").unwrap();
    w.insert("c", b"big", &vec![3u8; 40_000]).unwrap();
    w.commit().unwrap();
    let all = db
        .begin_read()
        .range("b", ..)
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    (db, all)
}

fn check_same(db: &Db, want: &[(Vec<u8>, Vec<u8>)], site: &str) {
    let r = db.begin_read();
    let got: Vec<_> = r.range("b", ..).unwrap().map(|e| e.unwrap()).collect();
    assert_eq!(got, want, "{site}");
    assert_eq!(
        r.get("c", b"big").unwrap(),
        Some(vec![3u8; 40_000]),
        "{site}"
    );
    db.check_integrity().unwrap();
}

/// A crash (panic) at every step of an online defrag: reopening finds the
/// old or the new file, whole, with every commit; never no file.
#[test]
fn crash_at_each_defrag_step_reopens_to_the_old_or_the_new_file() {
    let _scenario = fail::FailScenario::setup();
    fp::arm(true);
    for site in DEFRAG_SITES {
        let dir = TempDir::new("fp-defrag-panic");
        let (db, want) = setup_for_defrag(&dir);
        let old_size = db.stats().unwrap().file_size;
        fail::cfg(site, "panic").unwrap();
        let crashed = catch_unwind(AssertUnwindSafe(|| db.defrag_online()));
        fail::remove(site);
        assert!(crashed.is_err(), "{site}: the failpoint did not fire");
        // The crashed defrag held the write lock: writes are refused,
        // reads go on.
        assert!(matches!(
            db.begin_write().map(|_| ()),
            Err(BtreeError::Poisoned)
        ));
        check_same(&db, &want, site);
        drop(db);
        assert!(dir.file("db").exists(), "{site}: the file is gone");
        let db = Db::open(dir.file("db"), Options::default()).unwrap();
        check_same(&db, &want, site);
        let size = db.stats().unwrap().file_size;
        if site == "btree::defrag::before_rename" {
            assert_eq!(size, old_size, "{site}: not renamed yet");
        } else {
            assert!(size < old_size, "{site}: renamed: {size} vs {old_size}");
        }
        // The stale copy is cleaned up by the open.
        assert!(!dir.file("db.defrag").exists(), "{site}");
        let mut w = db.begin_write().unwrap();
        w.insert("b", b"k", b"after").unwrap();
        w.commit().unwrap();
        db.defrag_online().unwrap();
        drop(db);
        let db = Db::open(dir.file("db"), Options::default()).unwrap();
        assert_eq!(read_k(&db), Some(b"after".to_vec()), "{site}");
    }
    fp::arm(false);
}

/// An I/O error before the rename leaves the handle on the old file and
/// usable; after the rename it poisons the handle (reads go on), and a
/// reopen finds the new file.
#[test]
fn io_error_at_each_defrag_step() {
    let _scenario = fail::FailScenario::setup();
    fp::arm(true);
    for site in DEFRAG_SITES {
        let dir = TempDir::new("fp-defrag-err");
        let (db, want) = setup_for_defrag(&dir);
        fail::cfg(site, "return").unwrap();
        assert!(
            matches!(db.defrag_online(), Err(BtreeError::Io(_))),
            "{site}"
        );
        fail::remove(site);
        check_same(&db, &want, site);
        if site == "btree::defrag::before_rename" {
            assert!(!db.is_poisoned(), "{site}");
            assert!(!dir.file("db.defrag").exists(), "{site}: copy left");
            let mut w = db.begin_write().unwrap();
            w.insert("b", b"k", b"v2").unwrap();
            w.commit().unwrap();
        } else {
            assert!(db.is_poisoned(), "{site}");
        }
        drop(db);
        let db = Db::open(dir.file("db"), Options::default()).unwrap();
        db.check_integrity().unwrap();
        let r = db.begin_read();
        let got: Vec<_> = r
            .range("b", ..)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|(k, _)| k != b"k")
            .collect();
        let want: Vec<_> = want.iter().filter(|(k, _)| k != b"k").cloned().collect();
        assert_eq!(got, want, "{site}");
    }
    fp::arm(false);
}
