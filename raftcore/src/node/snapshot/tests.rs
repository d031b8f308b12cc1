//! Members on files (B-tree + WAL) in one process, wired by channels: a
//! member that fell behind a compacted log catches up from a snapshot, also
//! across restarts and crashes at every installation step.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use engine::mvcc::{PutRequest, RangeRequest};
use engine::wal::{Wal, WalOptions};
use glommio::timer::sleep;
use glommio::{LocalExecutorBuilder, Task};

use super::super::{Error, Node, NodeConfig, Recovered};
use super::{open_backend, OutgoingSnapshot};
use crate::checkpoint::CheckpointConfig;
use crate::wal_log::{bootstrap_log, records_of, recover, WalLog, WalMetadata};

const IDS: [u64; 3] = [11, 22, 33];

fn wopts() -> WalOptions {
    WalOptions {
        segment_size: 1 << 16,
        max_wals: 1,
        ..Default::default()
    }
}

/// The members' network: who is up, who is cut off, snapshots delivered.
#[derive(Default)]
struct Net {
    nodes: RefCell<HashMap<u64, Arc<Node>>>,
    cut: RefCell<HashSet<u64>>,
    snapshots: Cell<u32>,
}

struct Cluster {
    root: PathBuf,
    net: Rc<Net>,
    loops: HashMap<u64, Task<Result<(), Error>>>,
}

async fn deliver(s: &OutgoingSnapshot, target: &Node) -> Result<(), Error> {
    let mut inc = target.begin_snapshot(&s.message)?;
    let mut rd = s
        .reader()
        .map_err(|e| Error::Backend(format!("read image: {e}")))?;
    let mut off = 0u64;
    // Small chunks: many per image, as over the network.
    while let Some(c) = rd
        .next_chunk(8192)
        .map_err(|e| Error::Backend(format!("read image: {e}")))?
    {
        inc.write(off, &c)?;
        off += c.len() as u64;
    }
    inc.finish(target, s.size(), rd.crc()).await
}

impl Cluster {
    fn new(name: &str) -> Cluster {
        let root =
            std::env::temp_dir().join(format!("raftcore-snap-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        Cluster {
            root,
            net: Rc::default(),
            loops: HashMap::new(),
        }
    }

    fn dir(&self, id: u64) -> PathBuf {
        self.root.join(id.to_string())
    }

    /// Starts (or restarts, from its files) member `id` and wires it.
    async fn start(&mut self, id: u64) {
        let dir = self.dir(id);
        let (node, task) = start_member(&dir, id).await;
        let net = self.net.clone();
        let out = node.take_outbound().unwrap();
        glommio::spawn_local(async move {
            while let Ok((to, m)) = out.recv().await {
                if net.cut.borrow().contains(&id) || net.cut.borrow().contains(&to) {
                    continue;
                }
                let peer = net.nodes.borrow().get(&to).cloned();
                if let Some(p) = peer {
                    let _ = p.step(&m).await;
                }
            }
        })
        .detach();
        let net = self.net.clone();
        let snaps = node.take_snapshot_outbound().unwrap();
        let me = Arc::downgrade(&node);
        glommio::spawn_local(async move {
            while let Ok(s) = snaps.recv().await {
                let peer = net.nodes.borrow().get(&s.to).cloned();
                let cut = net.cut.borrow().contains(&id) || net.cut.borrow().contains(&s.to);
                let ok = match peer {
                    Some(p) if !cut => match deliver(&s, &p).await {
                        Ok(()) => true,
                        Err(e) => {
                            eprintln!("snapshot to {} failed: {e}", s.to);
                            false
                        }
                    },
                    _ => false,
                };
                if ok {
                    net.snapshots.set(net.snapshots.get() + 1);
                }
                match me.upgrade() {
                    Some(n) => n.report_snapshot(s.to, ok).await,
                    None => return,
                }
            }
        })
        .detach();
        self.net.nodes.borrow_mut().insert(id, node);
        self.loops.insert(id, task);
    }

    /// Kills member `id` (its loop is cancelled wherever it is, like a
    /// SIGKILL as far as its files are concerned).
    async fn kill(&mut self, id: u64) {
        self.net.nodes.borrow_mut().remove(&id);
        if let Some(t) = self.loops.remove(&id) {
            drop(t);
        }
        sleep(Duration::from_millis(20)).await;
    }

    /// Waits for member `id`'s loop to stop by itself; returns its result.
    #[allow(dead_code)]
    async fn stopped(&mut self, id: u64) -> Result<(), Error> {
        let t = self.loops.remove(&id).expect("running");
        // The handle stays until the loop ends: dropping every handle
        // would stop the loop cleanly instead.
        let r = t.await;
        self.net.nodes.borrow_mut().remove(&id);
        r
    }

    fn node(&self, id: u64) -> Arc<Node> {
        self.net.nodes.borrow()[&id].clone()
    }

    async fn leader(&self) -> u64 {
        for _ in 0..1000 {
            let nodes: Vec<Arc<Node>> = self.net.nodes.borrow().values().cloned().collect();
            let l = nodes.first().map_or(0, |n| n.leader());
            if l != 0
                && nodes.iter().all(|n| n.leader() == l)
                && self.net.nodes.borrow().contains_key(&l)
            {
                return l;
            }
            sleep(Duration::from_millis(10)).await;
        }
        panic!("no common leader");
    }

    /// Puts `n` keys through the leader (retrying over a leader change).
    async fn write(&self, prefix: &str, n: usize) {
        for i in 0..n {
            let mut tries = 0;
            loop {
                let l = self.leader().await;
                let r = self
                    .node(l)
                    .put(PutRequest {
                        key: format!("{prefix}{i:05}").into_bytes(),
                        value: vec![b'v'; 100],
                        ..Default::default()
                    })
                    .await;
                match r {
                    Ok(_) => break,
                    Err(e) if tries < 20 => {
                        tries += 1;
                        let _ = e;
                        sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => panic!("put {prefix}{i}: {e}"),
                }
            }
        }
    }

    /// Waits until every running member has applied the same index, then
    /// compares their key spaces and hashes.
    async fn converged(&self) {
        let mut last = String::new();
        for _ in 0..1500 {
            let nodes: Vec<Arc<Node>> = self.net.nodes.borrow().values().cloned().collect();
            let applied: Vec<u64> = nodes.iter().map(|n| n.applied_index()).collect();
            let revs: Vec<i64> = nodes
                .iter()
                .map(|n| n.current_revision().unwrap())
                .collect();
            if applied.iter().all(|a| *a == applied[0]) && revs.iter().all(|r| *r == revs[0]) {
                let all = RangeRequest {
                    key: vec![0],
                    range_end: vec![0],
                    ..Default::default()
                };
                let mut kvs = Vec::new();
                let mut hashes = Vec::new();
                for n in &nodes {
                    kvs.push(n.range(&all, true).await.unwrap().kvs);
                    hashes.push(n.read_store().unwrap().hash_kv(0).unwrap());
                }
                assert!(kvs.iter().all(|k| *k == kvs[0]), "key spaces differ");
                assert!(
                    hashes.iter().all(|h| *h == hashes[0]),
                    "hashes differ: {hashes:?}"
                );
                return;
            }
            last = format!("applied {applied:?} revisions {revs:?}");
            sleep(Duration::from_millis(10)).await;
        }
        panic!("members did not converge: {last}");
    }
}

async fn start_member(dir: &Path, id: u64) -> (Arc<Node>, Task<Result<(), Error>>) {
    let snap = dir.join("snap");
    std::fs::create_dir_all(&snap).unwrap();
    let wd = dir.join("wal");
    let (wal, log) = if Wal::exists(&wd) {
        let (wal, rec) = Wal::open(&wd, wopts()).await.unwrap();
        (wal, recover(&rec).unwrap().1)
    } else {
        let meta = WalMetadata {
            cluster_id: 1,
            member_id: id,
        };
        let log = bootstrap_log(&IDS).unwrap();
        let wal = Wal::create(&wd, &meta.encode(), wopts()).await.unwrap();
        wal.append(&records_of(&log)).await.unwrap();
        (wal, log)
    };
    let (db, store, applied) = open_backend(&snap, log.snapshot.map(|s| s.0)).unwrap();
    let members = engine::members::load(&db).unwrap();
    let rec = Recovered {
        store,
        applied,
        members,
        backend: Some((
            Arc::new(db),
            CheckpointConfig {
                interval: Duration::from_millis(5),
                limit: 10,
            },
        )),
    };
    let mut cfg = NodeConfig::new(1, id);
    cfg.voters = IDS.to_vec();
    cfg.heartbeat = Duration::from_millis(10);
    cfg.request_timeout = Duration::from_secs(3);
    cfg.snapshot_count = 20;
    cfg.snapshot_catchup_entries = 10;
    let (node, lp) = Node::start_with(cfg, log, rec).unwrap();
    let task = glommio::spawn_local(lp.run(WalLog::new(wal)));
    (node, task)
}

fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
    LocalExecutorBuilder::default()
        .io_memory(4 << 20)
        .spawn(f)
        .expect("executor")
        .join()
        .expect("test");
}

/// Stops a follower, writes far more than the leader keeps for it (the
/// leader compacts its log), restarts it: it catches up through a
/// snapshot, ends with the same key space and hash, and restarts again
/// from the installed snapshot.
#[test]
fn a_member_behind_a_compacted_log_catches_up_from_a_snapshot() {
    run(|| async {
        let mut c = Cluster::new("catchup");
        for id in IDS {
            c.start(id).await;
        }
        c.write("a", 30).await;
        c.converged().await;
        let leader = c.leader().await;
        let f = *IDS.iter().find(|i| **i != leader).unwrap();
        c.kill(f).await;
        c.write("b", 300).await;
        assert_eq!(c.net.snapshots.get(), 0);
        c.start(f).await;
        c.converged().await;
        assert!(
            c.net.snapshots.get() >= 1,
            "the member caught up from a snapshot"
        );
        assert_eq!(
            c.node(f)
                .range(
                    &RangeRequest {
                        key: b"b".to_vec(),
                        range_end: b"c".to_vec(),
                        count_only: true,
                        ..Default::default()
                    },
                    true
                )
                .await
                .unwrap()
                .count,
            300
        );
        // Writes after the snapshot replicate normally.
        c.write("c", 20).await;
        c.converged().await;
        // No received image is left once the member is past it.
        let mut left = Vec::new();
        for _ in 0..200 {
            left = std::fs::read_dir(c.dir(f).join("snap"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".snap.db") || n.ends_with(".part"))
                .collect::<Vec<_>>();
            if left.is_empty() {
                break;
            }
            sleep(Duration::from_millis(10)).await;
        }
        assert!(left.is_empty(), "images left behind: {left:?}");
        // It restarts from the installed image and the WAL after it.
        c.kill(f).await;
        c.start(f).await;
        c.write("d", 5).await;
        c.converged().await;
        let _ = std::fs::remove_dir_all(&c.root);
    });
}

/// A crash at each step of receiving and installing a snapshot: the member
/// restarts from its files (finishing an interrupted install where the WAL
/// already records it), catches up, and agrees with the others; and it
/// restarts once more from what it installed.
#[cfg(feature = "failpoints")]
#[test]
fn a_crash_at_any_install_step_restarts_consistently() {
    for site in [
        "snap::receive::before_rename",
        "snap::install::before_wal",
        "snap::install::before_rename",
        "snap::install::after_rename",
    ] {
        run(move || async move {
            let scenario = fail::FailScenario::setup();
            let mut c = Cluster::new(&site.replace("::", "-"));
            for id in IDS {
                c.start(id).await;
            }
            c.write("a", 30).await;
            c.converged().await;
            let leader = c.leader().await;
            let f = *IDS.iter().find(|i| **i != leader).unwrap();
            c.kill(f).await;
            c.write("b", 300).await;
            fail::cfg(site, "1*return").unwrap();
            c.start(f).await;
            if site.starts_with("snap::install") {
                // The member stops at the failpoint, as a crash would.
                let r = c.stopped(f).await;
                assert!(
                    matches!(&r, Err(Error::Backend(m)) if m.contains(site)),
                    "{site}: {r:?}"
                );
                fail::remove(site);
                c.start(f).await;
            }
            c.converged().await;
            fail::remove(site);
            assert!(
                c.net.snapshots.get() >= 1,
                "{site}: caught up from a snapshot"
            );
            c.write("c", 10).await;
            c.converged().await;
            c.kill(f).await;
            c.start(f).await;
            c.converged().await;
            let _ = std::fs::remove_dir_all(&c.root);
            scenario.teardown();
        });
    }
}

/// The receiving side keeps only complete images that are what the message
/// says: a damaged transfer or an image at another index is refused and
/// leaves no file behind; a good one is kept under its final name.
#[test]
fn received_images_are_verified_before_raft_sees_them() {
    run(|| async {
        let root = std::env::temp_dir().join(format!("raftcore-snap-recv-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        // An image: a B-tree file checkpointed at index 40, term 3.
        let image = root.join("image.db");
        {
            let db = engine::btree::Db::open(&image, Default::default()).unwrap();
            let mut store = engine::mvcc::Store::new();
            for i in 0..50 {
                store
                    .put(&PutRequest {
                        key: format!("k{i}").into_bytes(),
                        value: vec![b'x'; 300],
                        ..Default::default()
                    })
                    .unwrap();
            }
            let cp = store.take_checkpoint();
            engine::mvcc::save(&db, &cp, engine::mvcc::AppliedState { index: 40, term: 3 })
                .unwrap();
        }
        let bytes = std::fs::read(&image).unwrap();
        let crc = crc32fast::hash(&bytes);
        // A member that receives (its loop not running: nothing installs).
        let dir = root.join("m");
        let snap = dir.join("snap");
        std::fs::create_dir_all(&snap).unwrap();
        let (db, store, applied) = open_backend(&snap, None).unwrap();
        let rec = Recovered {
            store,
            applied,
            members: None,
            backend: Some((Arc::new(db), CheckpointConfig::default())),
        };
        let mut cfg = NodeConfig::new(1, 11);
        cfg.voters = IDS.to_vec();
        let (node, _lp) = Node::start_with(cfg, bootstrap_log(&IDS).unwrap(), rec).unwrap();
        let msg = |index: u64| {
            let mut m = raft::eraftpb::Message::default();
            m.set_msg_type(raft::eraftpb::MessageType::MsgSnapshot);
            m.from = 22;
            m.to = 11;
            m.term = 3;
            m.mut_snapshot().mut_metadata().index = index;
            m.mut_snapshot().mut_metadata().term = 3;
            protobuf::Message::write_to_bytes(&m).unwrap()
        };
        let send = |index: u64, damage: bool, crc: u32| {
            let node = node.clone();
            let mut data = bytes.clone();
            if damage {
                data[5000] ^= 1;
            }
            let m = msg(index);
            async move {
                let mut inc = node.begin_snapshot(&m)?;
                let mut off = 0;
                for c in data.chunks(4096) {
                    inc.write(off, c)?;
                    off += c.len() as u64;
                }
                inc.finish(&node, data.len() as u64, crc).await
            }
        };
        let files = || {
            let mut v: Vec<String> = std::fs::read_dir(&snap)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let e = send(40, true, crc).await.unwrap_err().to_string();
        assert!(e.contains("damaged in transit"), "{e}");
        let e = send(41, false, crc).await.unwrap_err().to_string();
        assert!(e.contains("image is at 40/3"), "{e}");
        assert_eq!(files(), ["db"], "refused images leave nothing behind");
        // Out of order chunks are refused too.
        let mut inc = node.begin_snapshot(&msg(40)).unwrap();
        assert!(inc.write(4096, &bytes[..10]).is_err());
        drop(inc);
        send(40, false, crc).await.unwrap();
        assert_eq!(files(), [format!("{:016x}.snap.db", 40), "db".into()]);
        assert_eq!(node.snapshot_stats().received.get(&22), Some(&1));
        let _ = std::fs::remove_dir_all(&root);
    });
}
