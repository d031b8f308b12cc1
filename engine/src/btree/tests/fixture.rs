//! Format fixture: a small v1 file checked in at `btree/testdata/v1-small.db`.
//! This build must open it with the expected contents and must write the same
//! bytes for the same operations, so a format change cannot slip in without a
//! new version (FORMAT.md §2 "Version history"). Regenerate after an
//! intended change with `FERROCD_BLESS_FIXTURES=1 cargo test -p engine fixture`.

use super::common::{dump, open_mem, value, Model, TempDir};
use crate::btree::format::{PAGE, PAGE_SIZE};
use crate::btree::storage::mem::MemDisk;
use crate::btree::{Db, Options, ReadMode};

const FIXTURE: &[u8] = include_bytes!("../testdata/v1-small.db");

fn rev_key(main: u64) -> Vec<u8> {
    let mut k = main.to_be_bytes().to_vec();
    k.push(b'_');
    k.extend_from_slice(&0u64.to_be_bytes());
    k
}

/// The operations that produce the fixture, applied to `db`; returns the model.
fn build(db: &Db) -> Model {
    let mut w = db.begin_write().unwrap();
    for b in ["key", "meta", "lease"] {
        w.create_bucket(b).unwrap();
    }
    for i in 1..=60u64 {
        w.insert("key", &rev_key(i), &value(i, 120)).unwrap();
    }
    w.insert("meta", b"consistent_index", &7u64.to_be_bytes())
        .unwrap();
    w.insert("lease", b"big", &value(99, 9000)).unwrap();
    w.commit().unwrap();
    // A second commit so the file has a free list and both meta slots.
    let mut w = db.begin_write().unwrap();
    for i in (1..=60u64).step_by(3) {
        w.remove("key", &rev_key(i)).unwrap();
    }
    w.insert("meta", b"consistent_index", &9u64.to_be_bytes())
        .unwrap();
    w.commit().unwrap();
    dump(db).unwrap()
}

/// The file this build writes for [`build`], cut to its page count (the
/// preallocated tail is not part of the format).
fn written() -> (Vec<u8>, Model) {
    let disk = MemDisk::new();
    let db = open_mem(&disk).unwrap();
    let model = build(&db);
    let pages = db.stats().unwrap().page_count;
    drop(db);
    let mut bytes = disk.live();
    bytes.truncate((pages * PAGE) as usize);
    (bytes, model)
}

#[test]
fn this_build_writes_the_v1_fixture_byte_for_byte() {
    let (bytes, _) = written();
    if std::env::var_os("FERROCD_BLESS_FIXTURES").is_some() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/btree/testdata/v1-small.db");
        std::fs::write(path, &bytes).unwrap();
        return;
    }
    assert_eq!(bytes.len(), FIXTURE.len(), "page count changed");
    for (p, (a, b)) in bytes
        .chunks(PAGE_SIZE)
        .zip(FIXTURE.chunks(PAGE_SIZE))
        .enumerate()
    {
        assert!(
            a == b,
            "page {p} differs from the v1 fixture: a format change needs a new version"
        );
    }
}

#[test]
fn v1_fixture_opens_with_the_expected_contents() {
    let (_, model) = written();
    for opts in [
        Options::default(),
        Options {
            read_mode: ReadMode::Pread { cache_pages: 0 },
            verify_checksums: true,
        },
    ] {
        let dir = TempDir::new("fixture");
        std::fs::write(dir.file("db"), FIXTURE).unwrap();
        let db = Db::open(dir.file("db"), opts).unwrap();
        assert_eq!(dump(&db).unwrap(), model);
        let r = db.begin_read();
        assert_eq!(
            r.get("meta", b"consistent_index").unwrap(),
            Some(9u64.to_be_bytes().to_vec())
        );
        assert_eq!(r.get("lease", b"big").unwrap(), Some(value(99, 9000)));
        let report = db.check_integrity().unwrap();
        assert!(
            report.free_pages > 0 && report.overflow_pages == 3,
            "{report:?}"
        );
        drop(r);
        // The fixture takes new commits.
        let mut w = db.begin_write().unwrap();
        w.insert("key", b"new", b"commit").unwrap();
        w.commit().unwrap();
        db.check_integrity().unwrap();
    }
}
