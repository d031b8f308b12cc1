//! WAL bench (ignored test). Run on the target disk, release build:
//!
//! ```text
//! cargo test --release -p engine wal::bench -- --ignored --nocapture
//! WAL_BENCH_DIR=/path/on/disk WAL_BENCH_SECS=3 (defaults: temp dir, 2 s per cell)
//! ```
//!
//! Prints (1) the raw floor of this disk: a loop of one 4 KiB O_DIRECT write +
//! durability barrier at consecutive offsets of a preallocated, zero-filled
//! file, for each `SyncMethod`; (2) the WAL with 1, 16 and 256 concurrent
//! appenders of one 256-byte entry each, for each `SyncMethod`: records/s,
//! fsyncs/s, records per fsync, append latency p50/p99 and the share of bytes
//! written that are records (the padding cost); (3) replay (open) time.

use std::cell::RefCell;
use std::fs;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::LocalExecutorBuilder;

use super::segment::{self, SegFile};
use super::*;

fn bench_dir(name: &str) -> std::path::PathBuf {
    let base = std::env::var("WAL_BENCH_DIR")
        .map(Into::into)
        .unwrap_or_else(|_| std::env::temp_dir());
    let d = base.join(format!("ferrocd-wal-bench-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn secs() -> Duration {
    let s = std::env::var("WAL_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    Duration::from_secs_f64(s)
}

const METHODS: [SyncMethod; 3] = [
    SyncMethod::DmaFdatasync,
    SyncMethod::StdSyncData,
    SyncMethod::ODsync,
];

/// Waits for the disk to quiet down after preparing files (the zero-fill
/// of 64 MiB is still being flushed by the host for a while).
async fn settle() {
    glommio::timer::sleep(Duration::from_millis(1500)).await;
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p) as usize]
}

async fn raw_floor(method: SyncMethod) {
    let dir = bench_dir("floor");
    let size = 64u64 << 20;
    let f = segment::prepare(&dir, 0, size, method).await.unwrap();
    let f = match method {
        // `prepare` opened it without O_DSYNC; reopen the way the WAL would.
        SyncMethod::ODsync => {
            let p = f.path.clone();
            f.close().await;
            SegFile::open(&p, method).await.unwrap()
        }
        _ => f,
    };
    settle().await;
    let mut lat = Vec::new();
    let start = Instant::now();
    let mut pos = BLOCK;
    while start.elapsed() < secs() && pos + BLOCK <= size {
        let t = Instant::now();
        let mut b = f.zeroed_buffer(BLOCK as usize);
        b.as_bytes_mut()[..8].copy_from_slice(&pos.to_le_bytes());
        f.write_at(b, pos).await.unwrap();
        f.sync(method).await.unwrap();
        lat.push(t.elapsed());
        pos += BLOCK;
    }
    let el = start.elapsed().as_secs_f64();
    let n = lat.len();
    let (p50, p99) = (pct(&mut lat, 0.5), pct(&mut lat, 0.99));
    println!(
        "floor  {method:<13?} 4 KiB write+sync: {:>8.0} /s   p50 {:>6.1} us   p99 {:>6.1} us",
        n as f64 / el,
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
    f.close().await;
    let _ = fs::remove_dir_all(&dir);
}

async fn wal_cell(method: SyncMethod, appenders: usize) {
    let dir = bench_dir("wal");
    let o = WalOptions {
        sync: method,
        ..WalOptions::default()
    };
    let wal = Rc::new(Wal::create(&dir, b"bench", o).await.unwrap());
    // Let the background preparation of the next segment finish first.
    settle().await;
    let next = Rc::new(RefCell::new(1u64));
    let lat = Rc::new(RefCell::new(Vec::new()));
    let payload = Bytes::from(vec![0xabu8; 256]);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..appenders {
        let (wal, next, lat, payload) = (wal.clone(), next.clone(), lat.clone(), payload.clone());
        tasks.push(glommio::spawn_local(async move {
            while start.elapsed() < secs() {
                let t = Instant::now();
                let fut = {
                    let mut n = next.borrow_mut();
                    let f = wal.append(&[Record::Entry(Entry {
                        index: *n,
                        term: 1,
                        data: payload.clone(),
                    })]);
                    *n += 1;
                    f
                };
                fut.await.unwrap();
                lat.borrow_mut().push(t.elapsed());
            }
        }));
    }
    for t in tasks {
        t.await;
    }
    let el = start.elapsed().as_secs_f64();
    let s = wal.stats();
    let (p50, p99) = {
        let mut lat = lat.borrow_mut();
        (pct(&mut lat, 0.5), pct(&mut lat, 0.99))
    };
    println!(
        "wal    {method:<13?} {appenders:>3} appenders: {:>8.0} rec/s {:>7.0} fsync/s {:>6.1} rec/fsync   p50 {:>7.1} us  p99 {:>7.1} us   records {:>5.1}% of bytes written, {} rotations",
        s.records as f64 / el,
        s.syncs as f64 / el,
        s.records as f64 / s.syncs.max(1) as f64,
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        100.0 * s.record_bytes as f64 / s.bytes_written.max(1) as f64,
        s.rotations,
    );
    wal.close().await.unwrap();
    drop(wal);
    if appenders == 16 && method == DEFAULT_SYNC {
        // Replay time of what was just written.
        let t = Instant::now();
        let (w, rec) = Wal::open(
            &dir,
            WalOptions {
                sync: method,
                ..WalOptions::default()
            },
        )
        .await
        .unwrap();
        let el = t.elapsed();
        let segs = w.segment_paths().len();
        println!(
            "replay {} entries in {segs} segments of 64 MiB: {:.1} ms ({:.0} entries/s)",
            rec.entries.len(),
            el.as_secs_f64() * 1e3,
            rec.entries.len() as f64 / el.as_secs_f64()
        );
        w.close().await.unwrap();
    }
    let _ = fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "bench: cargo test --release -p engine wal::bench -- --ignored --nocapture"]
fn wal_bench() {
    LocalExecutorBuilder::default()
        .io_memory(2 << 20)
        .spawn(|| async {
            let rounds = std::env::var("WAL_BENCH_ROUNDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(2);
            for round in 0..rounds {
                println!("-- round {round}");
                for m in METHODS {
                    raw_floor(m).await;
                }
                for n in [1, 16, 256] {
                    for m in METHODS {
                        wal_cell(m, n).await;
                    }
                }
            }
        })
        .unwrap()
        .join()
        .unwrap();
}
