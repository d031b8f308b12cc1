//! WAL tests on real files (glommio executors, temp dirs under
//! `std::env::temp_dir()`). Crash cases are made by cutting or damaging the
//! bytes after the durable end (`Wal::position`) and reopening; fault
//! injection (`inject::fail_at`) is per thread, so these run in parallel.

use std::cell::RefCell;
use std::fs;
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use glommio::LocalExecutorBuilder;

use super::format::{self, BLOCK};
use super::*;

/// Runs `f` on a fresh glommio executor. 1 MiB of io_memory stays under the
/// 8 MiB memlock limit of CI machines with any test parallelism; larger
/// buffers fall back to the heap.
pub(super) fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    LocalExecutorBuilder::default()
        .io_memory(1 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

/// A fresh, empty directory (removed first if it exists).
pub(super) fn tmp_dir(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "ferrocd-wal-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&d);
    d
}

pub(super) const SEG: u64 = 16 * BLOCK; // 64 KiB: rotation after a few dozen batches

pub(super) fn opts() -> WalOptions {
    WalOptions {
        segment_size: SEG,
        max_wals: 2,
        ..WalOptions::default()
    }
}

pub(super) fn ent(index: u64, term: u64, len: usize) -> Record {
    let data: Vec<u8> = (0..len).map(|i| (index as usize * 31 + i) as u8).collect();
    Record::Entry(Entry {
        index,
        term,
        data: Bytes::from(data),
    })
}

fn entry_of(r: &Record) -> Entry {
    match r {
        Record::Entry(e) => e.clone(),
        other => panic!("not an entry: {other:?}"),
    }
}

fn indexes(es: &[Entry]) -> Vec<u64> {
    es.iter().map(|e| e.index).collect()
}

fn flip_byte(path: &Path, off: u64) {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, off).unwrap();
    b[0] ^= 0x40;
    f.write_all_at(&b, off).unwrap();
    f.sync_all().unwrap();
}

/// Zeros `[from, file end)` in place, keeping the length: a crash that lost
/// everything written after `from` in a preallocated file.
fn zero_from(path: &Path, from: u64) {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let len = f.metadata().unwrap().len();
    if from < len {
        f.write_all_at(&vec![0u8; (len - from) as usize], from)
            .unwrap();
    }
    f.sync_all().unwrap();
}

#[test]
fn round_trip_across_reopen() {
    run(|| async {
        let dir = tmp_dir("roundtrip");
        let wal = Wal::create(&dir, b"cluster=1 member=2", opts())
            .await
            .unwrap();
        let mut all = Vec::new();
        for i in 1..=40u64 {
            let r = ent(i, 1, (i as usize * 7) % 300);
            all.push(entry_of(&r));
            wal.append(&[r]).await.unwrap();
        }
        let hs = HardState {
            term: 1,
            vote: 3,
            commit: 30,
        };
        wal.append(&[
            Record::HardState(hs),
            Record::Checkpoint(Checkpoint { index: 10, term: 1 }),
        ])
        .await
        .unwrap();
        assert_eq!(wal.entries(5, 41).await.unwrap(), all[4..].to_vec());
        assert_eq!(wal.last_index(), 40);
        wal.close().await.unwrap();

        let (wal, rec) = Wal::open(&dir, opts()).await.unwrap();
        assert_eq!(&rec.metadata[..], b"cluster=1 member=2");
        assert_eq!(rec.hard_state, Some(hs));
        assert_eq!(rec.checkpoint, Some(Checkpoint { index: 10, term: 1 }));
        assert_eq!(
            rec.entries,
            all[10..].to_vec(),
            "entries after the checkpoint"
        );
        assert_eq!(rec.torn_tail, None);
        assert_eq!(
            wal.entries(1, 41).await.unwrap(),
            all,
            "older entries stay readable"
        );
        // Appends continue after the recovered log, across another reopen.
        wal.append(&[ent(41, 2, 10)]).await.unwrap();
        wal.close().await.unwrap();
        let (wal, rec) = Wal::open(&dir, opts()).await.unwrap();
        assert_eq!(indexes(&rec.entries), (11..=41).collect::<Vec<_>>());
        assert_eq!(rec.entries.last().unwrap().term, 2);
        wal.close().await.unwrap();
        fs::remove_dir_all(&dir).unwrap();
    });
}

#[test]
fn preallocated_zeros_are_not_records() {
    run(|| async {
        let dir = tmp_dir("zeros");
        let wal = Wal::create(&dir, b"m", opts()).await.unwrap();
        let segs = wal.segment_paths();
        wal.close().await.unwrap();
        assert_eq!(segs.len(), 1);
        assert_eq!(
            fs::metadata(&segs[0]).unwrap().len(),
            SEG,
            "preallocated to full size"
        );
        assert!(segs[0]
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with("-0000000000000001.wal"));
        let (wal, rec) = Wal::open(&dir, opts()).await.unwrap();
        assert!(rec.entries.is_empty());
        assert_eq!(rec.torn_tail, None, "zeros are the end, not a torn record");
        assert_eq!(
            wal.position().offset,
            2 * BLOCK,
            "header block + metadata batch"
        );
        wal.close().await.unwrap();
        fs::remove_dir_all(&dir).unwrap();
    });
}

#[test]
fn create_and_open_refuse_the_wrong_directory() {
    run(|| async {
        let dir = tmp_dir("exists");
        assert!(matches!(
            Wal::open(&dir, opts()).await,
            Err(WalError::NotFound { .. })
        ));
        assert!(!Wal::exists(&dir));
        let wal = Wal::create(&dir, b"m", opts()).await.unwrap();
        wal.close().await.unwrap();
        assert!(Wal::exists(&dir));
        assert!(matches!(
            Wal::create(&dir, b"m", opts()).await,
            Err(WalError::AlreadyExists { .. })
        ));
        // A leftover .tmp (crash while preparing a segment) is removed.
        fs::write(dir.join(format::tmp_name(7)), b"junk").unwrap();
        let (wal, _) = Wal::open(
            &dir,
            WalOptions {
                prepare_next: false,
                ..opts()
            },
        )
        .await
        .unwrap();
        assert!(!dir.join(format::tmp_name(7)).exists());
        wal.close().await.unwrap();
        fs::remove_dir_all(&dir).unwrap();
    });
}

/// A new WAL's first segment may be smaller than the rest (a fresh member
/// then zero-fills less before it serves): a batch that does not fit its
/// room moves to a full-size segment, and a reopen reads both by their
/// headers' sizes.
#[test]
fn first_segment_can_be_smaller() {
    run(|| async {
        let dir = tmp_dir("firstseg");
        let o = WalOptions {
            segment_size: 4 * SEG,
            first_segment_size: SEG,
            max_wals: 5,
            ..WalOptions::default()
        };
        let wal = Wal::create(&dir, b"m", o.clone()).await.unwrap();
        let mut all = Vec::new();
        // A few small batches, then one that fits a full segment's quarter
        // but not the first segment's room, then more small ones.
        for i in 1..=40u64 {
            let len = if i == 5 {
                SEG as usize - 2 * BLOCK as usize
            } else {
                3000
            };
            let r = ent(i, 1, len);
            all.push(entry_of(&r));
            wal.append(&[r]).await.unwrap();
        }
        wal.close().await.unwrap();
        let mut sizes: Vec<(String, u64)> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                (name, e.metadata().unwrap().len())
            })
            .filter(|(n, _)| n.ends_with(".wal"))
            .collect();
        sizes.sort();
        assert!(sizes.len() >= 2, "{sizes:?}");
        assert_eq!(sizes[0].1, SEG, "first segment: {sizes:?}");
        assert!(sizes[1..].iter().all(|(_, l)| *l == 4 * SEG), "{sizes:?}");
        let (wal, rec) = Wal::open(&dir, o.clone()).await.unwrap();
        assert_eq!(rec.entries, all);
        assert_eq!(rec.torn_tail, None);
        wal.close().await.unwrap();
        fs::remove_dir_all(&dir).unwrap();
        // Both sizes are checked like the segment size.
        let bad = WalOptions {
            first_segment_size: SEG + 1,
            ..o
        };
        assert!(matches!(
            Wal::create(&tmp_dir("firstseg-bad"), b"m", bad).await,
            Err(WalError::Unsupported { .. })
        ));
    });
}

#[test]
fn appends_are_validated() {
    run(|| async {
        let dir = tmp_dir("validate");
        let wal = Wal::create(&dir, b"m", opts()).await.unwrap();
        assert!(
            matches!(
                wal.append(&[ent(2, 1, 1)]).await,
                Err(WalError::OutOfOrder { .. })
            ),
            "gap"
        );
        wal.append(&[ent(1, 1, 1), ent(2, 1, 1)]).await.unwrap();
        // One bad record refuses the whole append.
        assert!(matches!(
            wal.append(&[ent(3, 1, 1), ent(5, 1, 1)]).await,
            Err(WalError::OutOfOrder { .. })
        ));
        wal.append(&[ent(3, 1, 1)]).await.unwrap();
        let big = Record::Entry(Entry {
            index: 4,
            term: 1,
            data: Bytes::from(vec![1u8; SEG as usize / 4]),
        });
        assert!(matches!(
            wal.append(&[big]).await,
            Err(WalError::TooLarge { .. })
        ));
        wal.append(&[Record::Checkpoint(Checkpoint { index: 2, term: 1 })])
            .await
            .unwrap();
        assert!(matches!(
            wal.append(&[Record::Checkpoint(Checkpoint { index: 1, term: 1 })])
                .await,
            Err(WalError::OutOfOrder { .. })
        ));
        assert!(
            matches!(
                wal.append(&[ent(2, 2, 1)]).await,
                Err(WalError::OutOfOrder { .. })
            ),
            "below checkpoint"
        );
        assert!(matches!(
            wal.entries(0, 2).await,
            Err(WalError::Unavailable { .. })
        ));
        assert!(matches!(
            wal.entries(1, 5).await,
            Err(WalError::Unavailable { .. })
        ));
        wal.append(&[]).await.unwrap(); // a barrier
        wal.close().await.unwrap();
        assert!(matches!(
            wal.append(&[ent(4, 1, 1)]).await,
            Err(WalError::Closed)
        ));
        fs::remove_dir_all(&dir).unwrap();
    });
}

#[test]
fn raft_overwrite_replaces_the_suffix() {
    run(|| async {
        let dir = tmp_dir("overwrite");
        let wal = Wal::create(&dir, b"m", opts()).await.unwrap();
        wal.append(&(1..=10).map(|i| ent(i, 1, 20)).collect::<Vec<_>>())
            .await
            .unwrap();
        // A new leader rewrites from index 6 on.
        wal.append(&[ent(6, 2, 5), ent(7, 2, 5)]).await.unwrap();
        assert_eq!(wal.last_index(), 7);
        let got = wal.entries(1, 8).await.unwrap();
        assert_eq!(
            got.iter().map(|e| e.term).collect::<Vec<_>>(),
            vec![1, 1, 1, 1, 1, 2, 2]
        );
        assert!(wal.entries(8, 9).await.is_err());
        wal.close().await.unwrap();
        let (wal, rec) = Wal::open(&dir, opts()).await.unwrap();
        assert_eq!(rec.entries, got);
        // A snapshot past the log restarts it.
        wal.append(&[
            Record::Checkpoint(Checkpoint {
                index: 100,
                term: 3,
            }),
            ent(101, 3, 1),
        ])
        .await
        .unwrap();
        wal.close().await.unwrap();
        let (wal, rec) = Wal::open(&dir, opts()).await.unwrap();
        assert_eq!(indexes(&rec.entries), vec![101]);
        assert_eq!(wal.first_index(), 101);
        wal.close().await.unwrap();
        fs::remove_dir_all(&dir).unwrap();
    });
}

#[test]
fn group_commit_shares_fsyncs() {
    run(|| async {
        let dir = tmp_dir("group");
        let wal = Rc::new(
            Wal::create(
                &dir,
                b"m",
                WalOptions {
                    segment_size: 1 << 20,
                    ..opts()
                },
            )
            .await
            .unwrap(),
        );
        let next = Rc::new(RefCell::new(1u64));
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let (wal, next) = (wal.clone(), next.clone());
            tasks.push(glommio::spawn_local(async move {
                for _ in 0..10 {
                    // Take an index and append synchronously in the same
                    // step, so indexes are queued in order.
                    let fut = {
                        let mut n = next.borrow_mut();
                        let f = wal.append(&[ent(*n, 1, 64)]);
                        *n += 1;
                        f
                    };
                    fut.await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await;
        }
        let s = wal.stats();
        assert_eq!(s.appends, 640);
        assert!(
            s.syncs * 4 < s.appends,
            "64 concurrent appenders should share fsyncs: {s:?}"
        );
        assert_eq!(s.syncs, s.batches);
        wal.close().await.unwrap();
        let (wal, rec) = Wal::open(&dir, opts()).await.unwrap();
        assert_eq!(indexes(&rec.entries), (1..=640).collect::<Vec<_>>());
        wal.close().await.unwrap();
        fs::remove_dir_all(&dir).unwrap();
    });
}

#[test]
fn rotation_and_release() {
    run(|| async {
        let dir = tmp_dir("rotate");
        let o = WalOptions {
            max_wals: 2,
            ..opts()
        };
        let wal = Wal::create(&dir, b"meta", o.clone()).await.unwrap();
        wal.append(&[Record::HardState(HardState {
            term: 1,
            vote: 1,
            commit: 0,
        })])
        .await
        .unwrap();
        // 1000-byte entries: one batch per append, 15 batches per segment.
        for i in 1..=100u64 {
            wal.append(&[ent(i, 1, 1000)]).await.unwrap();
        }
        let segs = wal.segment_paths();
        assert!(segs.len() >= 6, "{segs:?}");
        assert_eq!(wal.stats().rotations as usize, segs.len() - 1);
        for (i, p) in segs.iter().enumerate() {
            let (seq, _) =
                format::parse_segment_name(p.file_name().unwrap().to_str().unwrap()).unwrap();
            assert_eq!(seq, i as u64);
        }
        // Without a checkpoint in the wal nothing is released.
        assert_eq!(wal.release_to(1000).await.unwrap(), 0);
        wal.append(&[Record::Checkpoint(Checkpoint { index: 50, term: 1 })])
            .await
            .unwrap();
        let before = wal.segment_paths().len();
        let removed = wal.release_to(1000).await.unwrap(); // capped at the checkpoint, 50
        assert!(removed > 0);
        let kept = wal.segment_paths();
        assert_eq!(kept.len(), before - removed);
        assert!(kept.len() >= o.max_wals);
        for p in &segs[..removed] {
            assert!(!p.exists(), "{p:?} should be gone");
        }
        // Every entry after the checkpoint is still there.
        let first = wal.first_index();
        assert!(first <= 51, "first kept index {first}");
        assert!(matches!(
            wal.entries(first - 1, first).await,
            Err(WalError::Unavailable { .. })
        ));
        assert_eq!(
            indexes(&wal.entries(first, 101).await.unwrap()),
            (first..=100).collect::<Vec<_>>()
        );
        wal.close().await.unwrap();
        let (wal, rec) = Wal::open(&dir, o.clone()).await.unwrap();
        assert_eq!(indexes(&rec.entries), (51..=100).collect::<Vec<_>>());
        assert_eq!(
            rec.hard_state,
            Some(HardState {
                term: 1,
                vote: 1,
                commit: 0
            }),
            "copied into every segment"
        );
        assert_eq!(&rec.metadata[..], b"meta");
        // Release down to max_wals once the checkpoint covers everything.
        wal.append(&[Record::Checkpoint(Checkpoint {
            index: 100,
            term: 1,
        })])
        .await
        .unwrap();
        wal.release_to(100).await.unwrap();
        assert_eq!(wal.segment_paths().len(), o.max_wals);
        wal.close().await.unwrap();
        let (wal, rec) = Wal::open(&dir, o).await.unwrap();
        assert!(rec.entries.is_empty());
        assert_eq!(
            rec.checkpoint,
            Some(Checkpoint {
                index: 100,
                term: 1
            })
        );
        wal.close().await.unwrap();
        fs::remove_dir_all(&dir).unwrap();
    });
}

#[test]
fn missing_segment_is_corrupt() {
    run(|| async {
        let dir = tmp_dir("missingseg");
        let wal = Wal::create(&dir, b"m", opts()).await.unwrap();
        for i in 1..=60u64 {
            wal.append(&[ent(i, 1, 1000)]).await.unwrap();
        }
        let segs = wal.segment_paths();
        wal.close().await.unwrap();
        assert!(segs.len() >= 3);
        fs::remove_file(&segs[1]).unwrap();
        match Wal::open(&dir, opts()).await {
            Err(WalError::Corrupt { file, what, .. }) => {
                assert_eq!(file, segs[2]);
                assert!(what.contains("missing segment"), "{what}");
            }
            other => panic!("expected Corrupt, got {:?}", other.map(|_| ())),
        }
        fs::remove_dir_all(&dir).unwrap();
    });
}

/// Builds a WAL whose last append is the batch under test; returns the
/// durable end before that batch, the records acknowledged before it and the
/// last batch's records.
async fn wal_with_last_batch(dir: &Path, last: &[Record]) -> (WalPosition, Vec<Entry>) {
    let wal = Wal::create(
        dir,
        b"m",
        WalOptions {
            prepare_next: false,
            ..opts()
        },
    )
    .await
    .unwrap();
    let mut acked = Vec::new();
    for i in 1..=5u64 {
        let r = ent(i, 1, 100);
        acked.push(entry_of(&r));
        wal.append(&[r]).await.unwrap();
    }
    let pos = wal.position();
    wal.append(last).await.unwrap();
    wal.close().await.unwrap();
    (pos, acked)
}

#[test]
fn torn_tail_is_truncated_at_every_offset() {
    run(|| async {
        let dir = tmp_dir("torn");
        // Last batch: three records, ~600 bytes, so every byte of the batch
        // header, the record headers and the payloads gets cut.
        let last = vec![
            ent(6, 1, 150),
            Record::HardState(HardState {
                term: 1,
                vote: 1,
                commit: 6,
            }),
            ent(7, 1, 300),
        ];
        let (pos, acked) = wal_with_last_batch(&dir, &last).await;
        let image = fs::read(&pos.segment).unwrap();
        let batch_end =
            pos.offset + format::padded_batch_len(last.iter().map(format::record_len).sum());
        let o = WalOptions {
            prepare_next: false,
            ..opts()
        };
        for cut in pos.offset..=batch_end {
            fs::write(&pos.segment, &image).unwrap();
            zero_from(&pos.segment, cut);
            let (wal, rec) = Wal::open(&dir, o.clone())
                .await
                .unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            let data_end = pos.offset
                + (format::BATCH_HEADER_LEN + last.iter().map(format::record_len).sum::<usize>())
                    as u64;
            if cut >= data_end {
                // The whole batch made it (zeros past its data are padding).
                assert_eq!(
                    indexes(&rec.entries),
                    vec![1, 2, 3, 4, 5, 6, 7],
                    "cut at {cut}"
                );
                assert_eq!(rec.torn_tail, None, "cut at {cut}");
            } else {
                assert_eq!(
                    rec.entries, acked,
                    "cut at {cut}: exactly the acknowledged prefix"
                );
                assert_eq!(rec.hard_state, None, "cut at {cut}");
                assert_eq!(rec.torn_tail.is_some(), cut > pos.offset, "cut at {cut}");
                assert_eq!(
                    wal.position(),
                    pos,
                    "cut at {cut}: appends continue at the torn batch"
                );
            }
            wal.close().await.unwrap();
        }
        // After a repair the file is clean: the next open reports nothing.
        fs::write(&pos.segment, &image).unwrap();
        zero_from(&pos.segment, pos.offset + 100);
        let (wal, rec) = Wal::open(&dir, o.clone()).await.unwrap();
        assert!(rec.torn_tail.is_some());
        wal.append(&[ent(6, 2, 10)]).await.unwrap();
        wal.close().await.unwrap();
        let (wal, rec) = Wal::open(&dir, o).await.unwrap();
        assert_eq!(rec.torn_tail, None);
        assert_eq!(indexes(&rec.entries), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(rec.entries[5].term, 2);
        wal.close().await.unwrap();
        fs::remove_dir_all(&dir).unwrap();
    });
}

#[test]
fn torn_tail_with_holes_and_short_file_is_truncated() {
    run(|| async {
        let dir = tmp_dir("holes");
        // A 3-block last batch whose first block never reached the disk but
        // later ones did (no sector ordering is assumed).
        let last = vec![ent(6, 1, 5000), ent(7, 1, 5000)];
        let (pos, acked) = wal_with_last_batch(&dir, &last).await;
        let image = fs::read(&pos.segment).unwrap();
        let o = WalOptions {
            prepare_next: false,
            ..opts()
        };
        {
            let f = fs::OpenOptions::new()
                .write(true)
                .open(&pos.segment)
                .unwrap();
            f.write_all_at(&[0u8; BLOCK as usize], pos.offset).unwrap();
        }
        let (wal, rec) = Wal::open(&dir, o.clone()).await.unwrap();
        assert_eq!(rec.entries, acked);
        let t = rec.torn_tail.expect("torn tail");
        assert_eq!((t.offset, t.zeroed), (pos.offset, 3 * BLOCK));
        wal.close().await.unwrap();
        // The file cut short (truncated, not zeroed): reads as zeros, and is
        // re-extended to its full preallocated size.
        fs::write(&pos.segment, &image).unwrap();
        fs::OpenOptions::new()
            .write(true)
            .open(&pos.segment)
            .unwrap()
            .set_len(pos.offset + 777)
            .unwrap();
        let (wal, rec) = Wal::open(&dir, o).await.unwrap();
        assert_eq!(rec.entries, acked);
        assert!(rec.torn_tail.is_some());
        assert_eq!(fs::metadata(&pos.segment).unwrap().len(), SEG);
        wal.close().await.unwrap();
        fs::remove_dir_all(&dir).unwrap();
    });
}

#[test]
fn corrupt_middle_is_an_error() {
    run(|| async {
        let dir = tmp_dir("corrupt");
        let wal = Wal::create(&dir, b"m", opts()).await.unwrap();
        let mut positions = Vec::new();
        for i in 1..=6u64 {
            positions.push(wal.position());
            wal.append(&[ent(i, 1, 200)]).await.unwrap();
        }
        wal.close().await.unwrap();
        let image = fs::read(&positions[0].segment).unwrap();
        // A flipped payload byte, record header byte and batch header byte of
        // batch 3, each followed by valid batches 4..6.
        for (k, delta) in [(2usize, 24 + 12 + 16 + 5), (2, 24 + 1), (2, 3), (0, 100)] {
            fs::write(&positions[0].segment, &image).unwrap();
            let off = positions[k].offset + delta as u64;
            flip_byte(&positions[k].segment, off);
            match Wal::open(&dir, opts()).await {
                Err(WalError::Corrupt { file, offset, what }) => {
                    assert_eq!(file, positions[k].segment);
                    assert_eq!(offset, positions[k].offset, "{what}");
                    assert!(what.contains("valid batch"), "{what}");
                }
                other => panic!(
                    "flip at {off}: expected Corrupt, got {:?}",
                    other.map(|(_, r)| r)
                ),
            }
        }
        // A lost write in the middle (zeros, then valid batches) too.
        fs::write(&positions[0].segment, &image).unwrap();
        {
            let f = fs::OpenOptions::new()
                .write(true)
                .open(&positions[0].segment)
                .unwrap();
            f.write_all_at(&[0u8; BLOCK as usize], positions[3].offset)
                .unwrap();
        }
        assert!(matches!(
            Wal::open(&dir, opts()).await,
            Err(WalError::Corrupt { .. })
        ));
        // The segment header.
        fs::write(&positions[0].segment, &image).unwrap();
        flip_byte(&positions[0].segment, 20);
        match Wal::open(&dir, opts()).await {
            Err(WalError::Corrupt { offset: 0, .. }) => {}
            other => panic!("expected Corrupt at 0, got {:?}", other.map(|(_, r)| r)),
        }
        fs::remove_dir_all(&dir).unwrap();
    });
}

#[test]
fn damage_in_a_closed_segment_is_an_error() {
    run(|| async {
        let dir = tmp_dir("closedseg");
        let wal = Wal::create(&dir, b"m", opts()).await.unwrap();
        let mut last_of_first = None;
        for i in 1..=40u64 {
            let p = wal.position();
            wal.append(&[ent(i, 1, 1000)]).await.unwrap();
            if wal.segment_paths().len() == 1 {
                last_of_first = Some(p);
            }
        }
        let segs = wal.segment_paths();
        wal.close().await.unwrap();
        assert!(segs.len() >= 2);
        // The last batch of the first segment: nothing follows it in its
        // file, but it was synced before the next segment existed (I3).
        let p = last_of_first.unwrap();
        flip_byte(&p.segment, p.offset + 40);
        match Wal::open(&dir, opts()).await {
            Err(WalError::Corrupt { file, offset, .. }) => {
                assert_eq!((file, offset), (segs[0].clone(), p.offset))
            }
            other => panic!("expected Corrupt, got {:?}", other.map(|(_, r)| r)),
        }
        fs::remove_dir_all(&dir).unwrap();
    });
}

#[test]
fn poison_after_a_failed_fsync() {
    run(|| async {
        let dir = tmp_dir("poison");
        let wal = Rc::new(Wal::create(&dir, b"m", opts()).await.unwrap());
        wal.append(&[ent(1, 1, 10)]).await.unwrap();
        inject::fail_at("wal::append::before_fsync", 1);
        let a = wal.append(&[ent(2, 1, 10)]);
        let err = a.await.unwrap_err();
        assert!(
            matches!(
                &err,
                WalError::Io {
                    op: "wal::append::before_fsync",
                    ..
                }
            ),
            "{err}"
        );
        assert!(wal.poisoned().is_some());
        // Never again, not even after the fault is gone.
        inject::clear();
        assert!(matches!(
            wal.append(&[ent(3, 1, 10)]).await,
            Err(WalError::Poisoned { .. })
        ));
        assert!(matches!(
            wal.append(&[]).await,
            Err(WalError::Poisoned { .. })
        ));
        assert!(matches!(
            wal.release_to(1).await,
            Err(WalError::Poisoned { .. })
        ));
        assert!(matches!(wal.close().await, Err(WalError::Poisoned { .. })));
        // Recovery decides what reached the disk: the acknowledged prefix,
        // plus the failed batch if its bytes made it (here they did: only the
        // sync was refused).
        let (wal, rec) = Wal::open(&dir, opts()).await.unwrap();
        assert!(indexes(&rec.entries) == vec![1] || indexes(&rec.entries) == vec![1, 2]);
        wal.close().await.unwrap();
        fs::remove_dir_all(&dir).unwrap();
    });
}

#[test]
fn poison_fails_every_waiting_append() {
    run(|| async {
        let dir = tmp_dir("poison-many");
        let wal = Rc::new(Wal::create(&dir, b"m", opts()).await.unwrap());
        wal.append(&[ent(1, 1, 10)]).await.unwrap();
        // The next batch (all 19 queued before the flusher runs) fails.
        inject::fail_at("wal::append::before_write", 1);
        let futs: Vec<_> = (2..=20u64).map(|i| wal.append(&[ent(i, 1, 10)])).collect();
        for f in futs {
            match f.await {
                Err(WalError::Io { op, .. }) => assert_eq!(op, "wal::append::before_write"),
                other => panic!("expected the injected error, got {other:?}"),
            }
        }
        inject::clear();
        assert!(matches!(
            wal.append(&[ent(2, 1, 10)]).await,
            Err(WalError::Poisoned { .. })
        ));
        drop(wal);
        let (wal, rec) = Wal::open(&dir, opts()).await.unwrap();
        assert_eq!(indexes(&rec.entries), vec![1]);
        wal.close().await.unwrap();
        fs::remove_dir_all(&dir).unwrap();
    });
}

#[test]
fn crash_during_rotation_leaves_a_consistent_log() {
    for site in ["wal::rotate::before_rename", "wal::rotate::after_rename"] {
        run(move || async move {
            let dir = tmp_dir("rotcrash");
            let wal = Wal::create(&dir, b"m", opts()).await.unwrap();
            let mut acked = 0;
            inject::fail_at(site, 1);
            for i in 1..=40u64 {
                match wal.append(&[ent(i, 1, 1000)]).await {
                    Ok(()) => acked = i,
                    Err(_) => break,
                }
            }
            inject::clear();
            assert!(wal.poisoned().is_some(), "{site}");
            drop(wal);
            let (wal, rec) = Wal::open(&dir, opts()).await.unwrap();
            assert_eq!(
                indexes(&rec.entries),
                (1..=acked).collect::<Vec<_>>(),
                "{site}"
            );
            wal.append(&[ent(acked + 1, 1, 1000)]).await.unwrap();
            wal.close().await.unwrap();
            fs::remove_dir_all(&dir).unwrap();
        });
    }
}

/// splitmix64: a tiny deterministic generator, so that a failing case is
/// reproduced from the seed in the panic message.
pub(super) struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Property: random append batches (entries with Raft overwrites, hard
/// states, checkpoints, several segments), then a crash that keeps the
/// durable prefix and an arbitrary part of the last batch (cut at a random
/// offset at or after the durable end, or random blocks of it lost). Reopen
/// must give exactly the model of the acknowledged appends, or that plus the
/// whole last append; never a part of it, never an error.
#[test]
fn random_crash_points_recover_the_acknowledged_prefix() {
    let base = std::env::var("WAL_PROPTEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_u64);
    let cases: u64 = std::env::var("WAL_PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    run(move || async move {
        for case in 0..cases {
            let seed = base.wrapping_add(case);
            crash_case(seed).await;
        }
    });
}

#[derive(Clone, Default, Debug, PartialEq)]
struct Model {
    entries: Vec<Entry>, // all live entries, contiguous
    hard_state: Option<HardState>,
    checkpoint: Option<Checkpoint>,
}

impl Model {
    fn last(&self) -> u64 {
        self.entries
            .last()
            .map_or(0, |e| e.index)
            .max(self.checkpoint.map_or(0, |c| c.index))
    }

    fn apply(&mut self, r: &Record) {
        match r {
            Record::Entry(e) => {
                self.entries.retain(|x| x.index < e.index);
                self.entries.push(e.clone());
            }
            Record::HardState(h) => self.hard_state = Some(*h),
            Record::Checkpoint(c) => {
                if c.index > self.last() {
                    self.entries.clear();
                }
                self.checkpoint = Some(*c);
            }
            Record::Metadata(_) => {}
        }
    }

    fn recovered_entries(&self) -> Vec<Entry> {
        let ci = self.checkpoint.map_or(0, |c| c.index);
        self.entries
            .iter()
            .filter(|e| e.index > ci)
            .cloned()
            .collect()
    }
}

async fn crash_case(seed: u64) {
    let mut rng = Rng(seed);
    let dir = tmp_dir("prop");
    let methods = [
        SyncMethod::DmaFdatasync,
        SyncMethod::StdSyncData,
        SyncMethod::ODsync,
    ];
    let o = WalOptions {
        prepare_next: rng.below(2) == 0,
        sync: methods[rng.below(3) as usize],
        ..opts()
    };
    let wal = Wal::create(&dir, b"m", o.clone()).await.unwrap();
    let mut model = Model::default();
    let mut term = 1;
    let n_appends = 5 + rng.below(60);
    let mut before_last = (model.clone(), wal.position());
    for k in 0..n_appends {
        let mut recs = Vec::new();
        let mut m = model.clone();
        for _ in 0..1 + rng.below(6) {
            let r = match rng.below(10) {
                0 => Record::HardState(HardState {
                    term,
                    vote: rng.below(3),
                    commit: rng.below(m.last() + 1),
                }),
                1 if m.last() > 0 => {
                    let lo = m.checkpoint.map_or(0, |c| c.index);
                    Record::Checkpoint(Checkpoint {
                        index: lo + rng.below(m.last() - lo + 1),
                        term,
                    })
                }
                2 if m.last() > m.checkpoint.map_or(0, |c| c.index) + 1 => {
                    // Raft overwrite from a random point after the checkpoint.
                    term += 1;
                    let lo = m.checkpoint.map_or(0, |c| c.index) + 1;
                    ent(
                        lo + rng.below(m.last() - lo + 1),
                        term,
                        rng.below(2000) as usize,
                    )
                }
                _ => {
                    // At most 6 records of < 2.5 KB: under the 16 KiB append limit.
                    let max = if rng.below(8) == 0 { 2500 } else { 300 };
                    ent(m.last() + 1, term, rng.below(max) as usize)
                }
            };
            m.apply(&r);
            recs.push(r);
        }
        if k + 1 == n_appends {
            before_last = (model.clone(), wal.position());
        }
        wal.append(&recs)
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        model = m;
    }
    let end = wal.position();
    wal.close().await.unwrap();

    // The crash. The last append is treated as in flight: the disk keeps
    // everything before its batch, and an arbitrary part of it.
    let (model_before, pos) = before_last;
    let rotated = pos.segment != end.segment || pos.offset > end.offset;
    let damage = rng.below(3);
    if !rotated {
        match damage {
            0 => zero_from(
                &pos.segment,
                pos.offset + rng.below(end.offset - pos.offset + 1),
            ),
            1 => {
                // Lose random blocks of the batch, keep others.
                let f = fs::OpenOptions::new()
                    .write(true)
                    .open(&pos.segment)
                    .unwrap();
                let mut b = pos.offset;
                while b < end.offset {
                    if rng.below(2) == 0 {
                        f.write_all_at(&[0u8; BLOCK as usize], b).unwrap();
                    }
                    b += BLOCK;
                }
            }
            _ => {} // everything made it
        }
    }
    let (wal, rec) = Wal::open(&dir, o)
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: reopen failed: {e}"));
    let full = rec.entries == model.recovered_entries()
        && rec.hard_state == model.hard_state
        && rec.checkpoint == model.checkpoint;
    let prefix = rec.entries == model_before.recovered_entries()
        && rec.hard_state == model_before.hard_state
        && rec.checkpoint == model_before.checkpoint;
    assert!(
        full || prefix,
        "seed {seed}: recovered {:?} / {:?} / {:?}\n full model {:?}\n prefix model {:?}",
        indexes(&rec.entries),
        rec.hard_state,
        rec.checkpoint,
        indexes(&model.recovered_entries()),
        indexes(&model_before.recovered_entries()),
    );
    // Whatever was recovered is also what the reads give.
    if let (Some(a), Some(z)) = (rec.entries.first(), rec.entries.last()) {
        assert_eq!(
            wal.entries(a.index, z.index + 1).await.unwrap(),
            rec.entries,
            "seed {seed}"
        );
    }
    wal.close().await.unwrap();
    fs::remove_dir_all(&dir).unwrap();
}

/// For every k: the disk as it was right after the k-th commit's fdatasync
/// (later bytes of its segment zero, later segments not yet created), then
/// reopen: exactly the first k appends, across rotations.
#[test]
fn crash_after_every_sync_recovers_that_prefix() {
    run(|| async {
        let dir = tmp_dir("every-sync");
        let o = WalOptions {
            prepare_next: false,
            ..opts()
        };
        let wal = Wal::create(&dir, b"m", o.clone()).await.unwrap();
        let mut ends = vec![wal.position()];
        let mut appended = Vec::new();
        for i in 1..=40u64 {
            let r = ent(i, 1, (i as usize * 397) % 3000);
            appended.push(entry_of(&r));
            if i % 7 == 0 {
                wal.append(&[
                    r,
                    Record::HardState(HardState {
                        term: 1,
                        vote: 1,
                        commit: i,
                    }),
                ])
                .await
                .unwrap();
            } else {
                wal.append(&[r]).await.unwrap();
            }
            ends.push(wal.position());
        }
        let segs = wal.segment_paths();
        wal.close().await.unwrap();
        assert!(segs.len() >= 3, "the run should rotate: {segs:?}");
        let images: Vec<(PathBuf, Vec<u8>)> = segs
            .iter()
            .map(|p| (p.clone(), fs::read(p).unwrap()))
            .collect();
        for (k, end) in ends.iter().enumerate() {
            for (p, img) in &images {
                fs::write(p, img).unwrap();
            }
            let seg_ix = segs.iter().position(|p| *p == end.segment).unwrap();
            for p in &segs[seg_ix + 1..] {
                fs::remove_file(p).unwrap();
            }
            zero_from(&end.segment, end.offset);
            let (w, rec) = Wal::open(&dir, o.clone())
                .await
                .unwrap_or_else(|e| panic!("crash after sync {k}: {e}"));
            assert_eq!(rec.entries, appended[..k].to_vec(), "crash after sync {k}");
            let commit = (1..=k as u64).rev().find(|i| i % 7 == 0);
            assert_eq!(
                rec.hard_state.map(|h| h.commit),
                commit,
                "crash after sync {k}"
            );
            assert_eq!(rec.torn_tail, None, "crash after sync {k}: nothing torn");
            w.close().await.unwrap();
        }
        fs::remove_dir_all(&dir).unwrap();
    });
}

#[test]
fn failed_repair_refuses_to_open_and_the_next_open_repairs() {
    run(|| async {
        let dir = tmp_dir("repair");
        let last = vec![ent(6, 1, 3000)];
        let (pos, acked) = wal_with_last_batch(&dir, &last).await;
        zero_from(&pos.segment, pos.offset + 1000);
        let o = WalOptions {
            prepare_next: false,
            ..opts()
        };
        inject::fail_at("wal::recover::before_repair", 1);
        match Wal::open(&dir, o.clone()).await {
            Err(WalError::Io { op, .. }) => assert_eq!(op, "wal::recover::before_repair"),
            other => panic!(
                "expected the injected error, got {:?}",
                other.map(|(_, r)| r)
            ),
        }
        inject::clear();
        let (wal, rec) = Wal::open(&dir, o).await.unwrap();
        assert_eq!(rec.entries, acked);
        assert!(rec.torn_tail.is_some());
        wal.close().await.unwrap();
        fs::remove_dir_all(&dir).unwrap();
    });
}
