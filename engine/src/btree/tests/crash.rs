//! Crash tests: cut the in-memory disk at every sync of a workload, rebuild the
//! file a power loss would leave (none, all or a torn subset of the unsynced
//! writes), reopen, and compare with the model: nothing committed is lost,
//! nothing uncommitted is visible, and the file stays usable.

use super::common::{dump, open_mem, value, Model, Rng};
use crate::btree::storage::mem::{MemDisk, Survivors};
use crate::btree::{BtreeError, WriteTxn};

#[derive(Clone, Debug)]
enum Op {
    Put {
        bucket: usize,
        key: u64,
        len: usize,
        seed: u64,
    },
    Del {
        bucket: usize,
        key: u64,
    },
    /// Delete the bucket and create it again, empty.
    Reset {
        bucket: usize,
    },
}

struct Txn {
    ops: Vec<Op>,
    commit: bool,
}

const BUCKETS: [&str; 3] = ["key", "lease", "meta"];

fn key(k: u64) -> Vec<u8> {
    let mut v = k.to_be_bytes().to_vec();
    v.extend(std::iter::repeat_n(b'.', (k % 13) as usize));
    v
}

fn workload(seed: u64, txns: usize) -> Vec<Txn> {
    let mut rng = Rng(seed);
    (0..txns)
        .map(|t| {
            let n = 1 + rng.below(40) as usize;
            let ops = (0..n)
                .map(|_| {
                    let bucket = rng.below(3) as usize;
                    let key = rng.below(300);
                    match rng.below(20) {
                        0 if t > 5 => Op::Reset { bucket },
                        1..=6 => Op::Del { bucket, key },
                        r => {
                            let len = match r {
                                19 => 5_000 + rng.below(20_000) as usize,
                                17 | 18 => 500 + rng.below(1_500) as usize,
                                _ => rng.below(300) as usize,
                            };
                            Op::Put {
                                bucket,
                                key,
                                len,
                                seed: rng.next(),
                            }
                        }
                    }
                })
                .collect();
            Txn {
                ops,
                commit: rng.below(8) != 0,
            }
        })
        .collect()
}

fn apply(w: &mut WriteTxn<'_>, m: &mut Model, op: &Op) -> Result<(), BtreeError> {
    match *op {
        Op::Put {
            bucket,
            key: k,
            len,
            seed,
        } => {
            let (b, v) = (BUCKETS[bucket], value(seed, len));
            w.insert(b, &key(k), &v)?;
            m.entry(b.to_string()).or_default().insert(key(k), v);
        }
        Op::Del { bucket, key: k } => {
            let b = BUCKETS[bucket];
            let had = w.remove(b, &key(k))?;
            assert_eq!(
                had,
                m.entry(b.to_string())
                    .or_default()
                    .remove(&key(k))
                    .is_some()
            );
        }
        Op::Reset { bucket } => {
            let b = BUCKETS[bucket];
            assert!(w.delete_bucket(b)?);
            w.create_bucket(b)?;
            m.insert(b.to_string(), Default::default());
        }
    }
    Ok(())
}

/// Runs the workload until the disk fails; returns the model after open and
/// after each commit that returned `Ok`.
fn run(disk: &std::sync::Arc<MemDisk>, txns: &[Txn]) -> Vec<Model> {
    let mut models = vec![Model::new()];
    let Ok(db) = open_mem(disk) else {
        return models;
    };
    let step = |models: &mut Vec<Model>, first: bool, t: &Txn| -> Result<(), BtreeError> {
        let mut w = db.begin_write()?;
        let mut m = models.last().cloned().unwrap_or_default();
        if first {
            for b in BUCKETS {
                w.create_bucket(b)?;
                m.insert(b.to_string(), Default::default());
            }
        }
        for op in &t.ops {
            apply(&mut w, &mut m, op)?;
        }
        if t.commit || first {
            w.commit()?;
            models.push(m);
        }
        Ok(())
    };
    for (i, t) in txns.iter().enumerate() {
        if step(&mut models, i == 0, t).is_err() {
            break;
        }
    }
    models
}

#[test]
fn crash_at_every_sync_recovers_the_last_commit_or_the_one_in_flight() {
    crash_at_every_sync(0xC0FFEE, 40);
}

#[test]
fn crash_at_every_sync_of_a_second_workload() {
    crash_at_every_sync(0x5EED_0002, 150);
}

fn crash_at_every_sync(seed: u64, txns: usize) {
    let txns = workload(seed, txns);
    let probe = MemDisk::new();
    let models = run(&probe, &txns);
    let total = probe.syncs();
    assert!(
        models.len() > 30,
        "workload too small: {} commits",
        models.len()
    );
    assert_eq!(
        dump(&open_mem(&probe).unwrap()).unwrap(),
        *models.last().unwrap()
    );
    for k in 1..=total {
        let disk = MemDisk::new();
        disk.crash_at_sync(k);
        let reached = run(&disk, &txns);
        assert!(disk.is_dead(), "sync {k} was never reached");
        let c = reached.len() - 1;
        assert_eq!(reached[..], models[..=c]);
        for survivors in [
            Survivors::None,
            Survivors::All,
            Survivors::Torn(k),
            Survivors::Torn(k * 7919 + 3),
        ] {
            let image = disk.crash_image(survivors);
            let after = MemDisk::from_image(image);
            let db = open_mem(&after)
                .unwrap_or_else(|e| panic!("sync {k} {survivors:?}: reopen failed: {e}"));
            let got = dump(&db).unwrap();
            let in_flight = c + 1 < models.len() && got == models[c + 1];
            match survivors {
                // Nothing after the last completed sync: exactly the last commit.
                Survivors::None => assert!(got == models[c], "sync {k}: state is not commit {c}"),
                _ => assert!(
                    got == models[c] || in_flight,
                    "sync {k} {survivors:?}: state is neither commit {c} nor {}",
                    c + 1
                ),
            }
            db.check_integrity()
                .unwrap_or_else(|e| panic!("sync {k} {survivors:?}: {e}"));
            // The recovered file takes new commits and reopens cleanly.
            let mut w = db.begin_write().unwrap();
            w.create_bucket("after").unwrap();
            w.create_bucket("key").unwrap();
            w.insert("after", b"k", &value(k, 6000)).unwrap();
            w.insert("key", b"after", b"crash").unwrap();
            w.commit().unwrap();
            drop(db);
            let db = open_mem(&after).unwrap();
            assert_eq!(
                db.begin_read().get("after", b"k").unwrap(),
                Some(value(k, 6000))
            );
            db.check_integrity().unwrap();
        }
    }
}

#[test]
fn crash_during_first_open_leaves_a_file_that_opens_empty() {
    let disk = MemDisk::new();
    disk.crash_at_sync(1);
    assert!(open_mem(&disk).is_err());
    for survivors in [Survivors::None, Survivors::All, Survivors::Torn(5)] {
        let after = MemDisk::from_image(disk.crash_image(survivors));
        let db = open_mem(&after).unwrap();
        assert_eq!(dump(&db).unwrap(), Model::new());
    }
}
