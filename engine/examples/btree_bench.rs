//! Small bench of `engine::btree`: load etcd-style revision keys in batches,
//! then point reads and a full range scan with each read path.
//!
//! ```text
//! cargo run --release -p engine --example btree_bench -- [keys] [batch] [value_len] [dir]
//! ```
//! Defaults: 1_000_000 keys of 17 bytes, 1000 per commit, 256-byte values, a
//! directory under the system temp dir (removed at the end).

use std::time::{Duration, Instant};

use engine::btree::{Db, Options, ReadMode};

fn rev_key(main: u64) -> [u8; 17] {
    // etcd's revision key: 8-byte main revision, '_', 8-byte sub revision.
    let mut k = [0u8; 17];
    k[..8].copy_from_slice(&main.to_be_bytes());
    k[8] = b'_';
    k
}

fn value(i: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (i as usize).wrapping_mul(31).wrapping_add(j) as u8)
        .collect()
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn per_sec(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let keys = arg(1, 1_000_000);
    let batch = arg(2, 1000);
    let vlen = arg(3, 256) as usize;
    let dir = args
        .get(4)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("btree-bench-{}", std::process::id()))
        });
    std::fs::create_dir_all(&dir).expect("bench dir");
    let path = dir.join("bench.db");
    let _ = std::fs::remove_file(&path);

    // Load.
    let db = Db::open(&path, Options::default()).expect("open");
    let t = Instant::now();
    let mut w = db.begin_write().expect("begin_write");
    w.create_bucket("key").expect("bucket");
    w.commit().expect("commit");
    let mut i = 0;
    while i < keys {
        let mut w = db.begin_write().expect("begin_write");
        for j in i..(i + batch).min(keys) {
            w.insert("key", &rev_key(j + 1), &value(j, vlen))
                .expect("insert");
        }
        w.commit().expect("commit");
        i += batch;
    }
    let load = t.elapsed();
    let st = db.stats().expect("stats");
    println!(
        "load: {keys} keys x ({} + {vlen}) B in {} commits: {:.2} s, {:.0} keys/s, {:.0} commits/s",
        17,
        keys.div_ceil(batch),
        load.as_secs_f64(),
        per_sec(keys, load),
        per_sec(keys.div_ceil(batch), load)
    );
    println!(
        "file: {:.1} MiB on disk, {} pages ({:.1} MiB), {} free, {:.1} MiB in use, {:.1} B/key",
        st.file_size as f64 / 1048576.0,
        st.page_count,
        (st.page_count * 4096) as f64 / 1048576.0,
        st.free_pages,
        st.in_use_bytes as f64 / 1048576.0,
        st.in_use_bytes as f64 / keys as f64
    );
    drop(db);

    let modes: [(&str, Options); 5] = [
        (
            "mmap, crc once per page (default)",
            Options {
                read_mode: ReadMode::Mmap,
                verify_checksums: true,
            },
        ),
        (
            "mmap, no crc",
            Options {
                read_mode: ReadMode::Mmap,
                verify_checksums: false,
            },
        ),
        (
            "pread + cache (all)",
            Options {
                read_mode: ReadMode::Pread {
                    cache_pages: 1 << 17,
                },
                verify_checksums: true,
            },
        ),
        (
            "pread + cache (1/8)",
            Options {
                read_mode: ReadMode::Pread {
                    cache_pages: (st.page_count / 8) as usize,
                },
                verify_checksums: true,
            },
        ),
        (
            "pread, no cache",
            Options {
                read_mode: ReadMode::Pread { cache_pages: 0 },
                verify_checksums: true,
            },
        ),
    ];
    let reads = keys.min(1_000_000);
    println!("| read path | get/s (one snapshot) | get/s (snapshot per get) | get/s 2 threads | scan entries/s |");
    println!("|---|---|---|---|---|");
    for (name, opts) in modes {
        let db = Db::open(&path, opts).expect("open");
        // Warm-up pass (fills the cache, faults the map in).
        let r = db.begin_read();
        let mut rng = Rng(0x1234_5678);
        for _ in 0..reads {
            let k = rng.next() % keys + 1;
            r.get("key", &rev_key(k)).expect("get").expect("present");
        }
        let t = Instant::now();
        for _ in 0..reads {
            let k = rng.next() % keys + 1;
            r.get("key", &rev_key(k)).expect("get").expect("present");
        }
        let one = per_sec(reads, t.elapsed());
        drop(r);
        let t = Instant::now();
        for _ in 0..reads {
            let k = rng.next() % keys + 1;
            db.begin_read()
                .get("key", &rev_key(k))
                .expect("get")
                .expect("present");
        }
        let each = per_sec(reads, t.elapsed());
        let t = Instant::now();
        std::thread::scope(|s| {
            for th in 0..2u64 {
                let db = &db;
                s.spawn(move || {
                    let r = db.begin_read();
                    let mut rng = Rng(0x9999 + th);
                    for _ in 0..reads / 2 {
                        let k = rng.next() % keys + 1;
                        r.get("key", &rev_key(k)).expect("get").expect("present");
                    }
                });
            }
        });
        let two = per_sec(reads / 2 * 2, t.elapsed());
        let r = db.begin_read();
        let t = Instant::now();
        let mut n = 0u64;
        for item in r.range("key", ..).expect("range") {
            let (k, v) = item.expect("entry");
            n += (k.len() + v.len() > 0) as u64;
        }
        let scan = t.elapsed();
        assert_eq!(n, keys);
        println!(
            "| {name} | {one:.0} | {each:.0} | {two:.0} | {:.0} ({:.2} s) |",
            per_sec(n, scan),
            scan.as_secs_f64()
        );
    }
    if args.get(4).is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
