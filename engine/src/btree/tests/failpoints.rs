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
