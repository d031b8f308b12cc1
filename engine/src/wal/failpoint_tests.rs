//! Tests through the `fail` crate's failpoints (feature `failpoints`).
//! `fail`'s registry is process-global: run these under nextest, one process
//! per test: `cargo nextest run -p engine --features failpoints wal::`. They
//! also take `FailScenario` (a global lock) and arm the sites only on their
//! own executor thread, so other tests in the same process are not affected.

use std::fs;

use super::tests::{ent, opts, run, tmp_dir};
use super::*;

fn with_failpoint(site: &'static str, action: &'static str, f: impl FnOnce()) {
    let scenario = fail::FailScenario::setup();
    fail::cfg(site, action).unwrap();
    f();
    fail::remove(site);
    scenario.teardown();
}

#[test]
fn failpoint_before_fsync_poisons() {
    with_failpoint("wal::append::before_fsync", "1*off->return", || {
        run(|| async {
            failpoints::arm(true);
            let dir = tmp_dir("fp-fsync");
            let wal = Wal::create(&dir, b"m", opts()).await.unwrap();
            wal.append(&[ent(1, 1, 10)]).await.unwrap();
            assert!(matches!(
                wal.append(&[ent(2, 1, 10)]).await,
                Err(WalError::Io { .. })
            ));
            assert!(matches!(
                wal.append(&[ent(3, 1, 10)]).await,
                Err(WalError::Poisoned { .. })
            ));
            failpoints::arm(false);
            drop(wal);
            let (wal, rec) = Wal::open(&dir, opts()).await.unwrap();
            assert!(!rec.entries.is_empty() && rec.entries[0].index == 1);
            wal.close().await.unwrap();
            fs::remove_dir_all(&dir).unwrap();
        });
    });
}

#[test]
fn failpoint_after_fsync_keeps_the_batch_durable() {
    with_failpoint("wal::append::after_fsync", "return", || {
        run(|| async {
            failpoints::arm(true);
            let dir = tmp_dir("fp-after");
            let wal = Wal::create(&dir, b"m", opts()).await.unwrap();
            // Durable, but the appender hears an error (a crash right after
            // the sync looks the same to it).
            assert!(wal.append(&[ent(1, 1, 10)]).await.is_err());
            failpoints::arm(false);
            drop(wal);
            let (wal, rec) = Wal::open(&dir, opts()).await.unwrap();
            assert_eq!(rec.entries.len(), 1);
            wal.close().await.unwrap();
            fs::remove_dir_all(&dir).unwrap();
        });
    });
}

#[test]
fn failpoint_release_before_remove_keeps_a_contiguous_suffix() {
    with_failpoint("wal::release::before_remove", "1*off->return", || {
        run(|| async {
            failpoints::arm(true);
            let dir = tmp_dir("fp-release");
            let o = WalOptions {
                max_wals: 1,
                ..opts()
            };
            let wal = Wal::create(&dir, b"m", o.clone()).await.unwrap();
            for i in 1..=60u64 {
                wal.append(&[ent(i, 1, 1000)]).await.unwrap();
            }
            wal.append(&[Record::Checkpoint(Checkpoint { index: 60, term: 1 })])
                .await
                .unwrap();
            assert!(
                wal.release_to(60).await.is_err(),
                "the second removal fails"
            );
            failpoints::arm(false);
            drop(wal);
            let (wal, rec) = Wal::open(&dir, o).await.unwrap();
            assert!(rec.entries.is_empty());
            assert_eq!(rec.checkpoint, Some(Checkpoint { index: 60, term: 1 }));
            wal.close().await.unwrap();
            fs::remove_dir_all(&dir).unwrap();
        });
    });
}
