//! Background checkpoints of the applied key space into the B-tree file.
//!
//! The Raft loop never waits for the B-tree: every `--backend-batch-interval`
//! (or `--backend-batch-limit` applied entries) it takes the store's changes
//! since the last checkpoint (under the store lock, no I/O) and hands them
//! to a dedicated thread, which commits them with the applied index in one
//! atomic B-tree commit (two fdatasyncs, off the write path). When the
//! commit is durable the loop records a WAL checkpoint at that index, after
//! which WAL segments and in-memory Raft entries below it can go.
//!
//! Invariant: at most one checkpoint is in flight, and checkpoints are
//! committed in applied-index order, so the file's applied index only grows
//! and always describes exactly the data committed with it.
//!
//! Once a commit is durable the thread takes a snapshot of the file and
//! hands it to the store with the checkpoint (`Store::checkpoint_committed`,
//! under the store's write lock): the store then reads the records that
//! checkpoint wrote from the file and drops them from memory. After an
//! online defrag it hands the store a snapshot of the new file, so the old
//! one can go. Both happen on this thread, the file's only writer, so the
//! store's snapshot only moves forward.
//!
//! Online defrag (`Maintenance.Defragment`) runs on the same thread, as a
//! job between two checkpoints: the thread is the B-tree's only writer, so
//! the defrag's copy is the last checkpoint and nothing needs to be caught
//! up. A defrag waits (parked on the thread) until a checkpoint covers the
//! applied index it was asked at, so what the client saw applied before it
//! asked (e.g. a compaction) is in the copy; the loop checkpoints every
//! `interval` while anything is unwritten, so it waits at most about that.
//! Clients do not wait for it: their reads and writes are served from
//! memory and the WAL; only the next checkpoint waits (the WAL holds the
//! writes meanwhile).

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::sync::RwLock;

use engine::btree::Db;
use engine::mvcc::{AppliedState, Checkpoint, Store};

enum Job {
    Checkpoint {
        cp: Checkpoint,
        applied: AppliedState,
        /// Also copy the file as of this commit to here (a Raft snapshot
        /// image for followers; module `node::snapshot`).
        image: Option<PathBuf>,
    },
    Defrag {
        /// Defragment once a checkpoint at this applied index is durable.
        after: u64,
        reply: DefragReply,
    },
    /// Let go of the file (None: a Raft snapshot is about to replace it)
    /// or take the new one; acknowledged once every earlier job is done.
    Replace(Option<Arc<Db>>, futures_channel::oneshot::Sender<()>),
}

type DefragReply = futures_channel::oneshot::Sender<Result<DefragReport, String>>;

/// The store reads from the file's last commit from now on.
fn use_new_file(db: &Db, store: &RwLock<Store>) {
    let snapshot = db.begin_read();
    if let Ok(mut s) = store.write() {
        s.use_snapshot(snapshot);
    }
}

fn defrag(db: &Db, store: &RwLock<Store>, reply: DefragReply) {
    let start = Instant::now();
    let r = db
        .defrag_online()
        .inspect(|_| use_new_file(db, store))
        .map(|rep| DefragReport {
            old_file_size: rep.source_file_size,
            new_file_size: rep.compacted_file_size,
            took: start.elapsed(),
        })
        .map_err(|e| format!("defragment: {e}"));
    let _ = reply.send(r);
}

/// A durable checkpoint.
#[derive(Debug)]
pub(crate) struct Done {
    pub applied: AppliedState,
    /// The image asked for with the checkpoint: its path and size, or why
    /// it could not be made (the checkpoint itself is durable either way).
    pub image: Option<Result<(PathBuf, u64), String>>,
}

/// What one online defrag did.
#[derive(Clone, Copy, Debug)]
pub struct DefragReport {
    pub old_file_size: u64,
    pub new_file_size: u64,
    /// Time spent in the defrag itself (the copy, sync, rename, reopen).
    pub took: Duration,
}

/// Queues online defrags on the backend thread (from any thread).
#[derive(Clone)]
pub(crate) struct Defragmenter {
    jobs: mpsc::Sender<Job>,
}

impl Defragmenter {
    /// Defragments the B-tree file once a checkpoint covers applied index
    /// `after`.
    pub(crate) async fn defragment(&self, after: u64) -> Result<DefragReport, String> {
        let (reply, rx) = futures_channel::oneshot::channel();
        self.jobs
            .send(Job::Defrag { after, reply })
            .map_err(|_| "backend thread is gone".to_string())?;
        rx.await
            .unwrap_or_else(|_| Err("backend thread is gone".to_string()))
    }
}

/// Settings with etcd's defaults.
#[derive(Clone, Copy, Debug)]
pub struct CheckpointConfig {
    /// `--backend-batch-interval` (etcd: 100 ms).
    pub interval: Duration,
    /// `--backend-batch-limit` (etcd: 10000).
    pub limit: u64,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            interval: Duration::from_millis(100),
            limit: 10_000,
        }
    }
}

pub(crate) struct Checkpointer {
    jobs: mpsc::Sender<Job>,
    done: async_channel::Receiver<Result<Done, String>>,
    in_flight: bool,
    /// Applied index of the last checkpoint submitted.
    last_index: u64,
    last_time: Instant,
    cfg: CheckpointConfig,
}

impl Checkpointer {
    pub(crate) fn spawn(
        db: Arc<Db>,
        store: Arc<RwLock<Store>>,
        cfg: CheckpointConfig,
        start_index: u64,
    ) -> std::io::Result<Checkpointer> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (done_tx, done) = async_channel::bounded(1);
        std::thread::Builder::new()
            .name("ferrocd-backend".into())
            .spawn(move || {
                let mut db = Some(db);
                const REPLACED: &str = "a Raft snapshot is replacing the backend file";
                // Applied index of the last durable checkpoint.
                let mut durable = start_index;
                let mut parked: Vec<(u64, DefragReply)> = Vec::new();
                while let Ok(job) = rx.recv() {
                    match job {
                        Job::Checkpoint { cp, applied, image } => {
                            let r = match &db {
                                Some(db) => engine::mvcc::save(db, &cp, applied)
                                    .map(|()| {
                                        // Taken after the commit, installed
                                        // with it; the store ignores it if
                                        // it was replaced meanwhile.
                                        let snapshot = db.begin_read();
                                        if let Ok(mut s) = store.write() {
                                            s.checkpoint_committed(&cp, snapshot);
                                        }
                                    })
                                    .map(|()| Done {
                                        applied,
                                        // This thread is the writer: the
                                        // last commit is the one just made.
                                        image: image.map(|p| copy_image(db, p)),
                                    })
                                    .map_err(|e| e.to_string()),
                                None => Err(REPLACED.to_string()),
                            };
                            if let Ok(d) = &r {
                                durable = d.applied.index;
                            }
                            let failed = r.as_ref().err().cloned();
                            if done_tx.send_blocking(r).is_err() {
                                return;
                            }
                            for (after, reply) in std::mem::take(&mut parked) {
                                match &failed {
                                    Some(e) => {
                                        let _ = reply.send(Err(format!("defragment: {e}")));
                                    }
                                    None if after <= durable => match &db {
                                        Some(db) => defrag(db, &store, reply),
                                        None => {
                                            let _ =
                                                reply.send(Err(format!("defragment: {REPLACED}")));
                                        }
                                    },
                                    None => parked.push((after, reply)),
                                }
                            }
                        }
                        Job::Replace(new, ack) => {
                            db = new;
                            if db.is_none() {
                                for (_, reply) in parked.drain(..) {
                                    let _ = reply.send(Err(format!("defragment: {REPLACED}")));
                                }
                            }
                            let _ = ack.send(());
                        }
                        Job::Defrag { reply, .. } if db.is_none() => {
                            let _ = reply.send(Err(format!("defragment: {REPLACED}")));
                        }
                        Job::Defrag { after, reply } if after <= durable => {
                            if let Some(db) = &db {
                                defrag(db, &store, reply);
                            }
                        }
                        Job::Defrag { after, reply } => parked.push((after, reply)),
                    }
                }
            })?;
        Ok(Checkpointer {
            jobs,
            done,
            in_flight: false,
            last_index: start_index,
            last_time: Instant::now(),
            cfg,
        })
    }

    /// Whether a checkpoint should start now.
    pub(crate) fn due(&self, applied: u64) -> bool {
        !self.in_flight
            && applied > self.last_index
            && (self.last_time.elapsed() >= self.cfg.interval
                || applied - self.last_index >= self.cfg.limit)
    }

    /// A handle that queues defrags on this checkpointer's thread.
    pub(crate) fn defragmenter(&self) -> Defragmenter {
        Defragmenter {
            jobs: self.jobs.clone(),
        }
    }

    /// Lets go of the B-tree file (None) or takes a new one, after every
    /// job queued before (a defrag in progress included) is done.
    pub(crate) async fn replace_db(&self, db: Option<Arc<Db>>) -> Result<(), String> {
        let (tx, rx) = futures_channel::oneshot::channel();
        self.jobs
            .send(Job::Replace(db, tx))
            .map_err(|_| "backend thread is gone".to_string())?;
        rx.await.map_err(|_| "backend thread is gone".to_string())
    }

    /// The file now holds everything up to `index` (a Raft snapshot was
    /// installed).
    pub(crate) fn reset(&mut self, index: u64) {
        self.last_index = index;
        self.last_time = Instant::now();
    }

    pub(crate) fn submit(
        &mut self,
        cp: Checkpoint,
        applied: AppliedState,
        image: Option<PathBuf>,
    ) -> Result<(), String> {
        self.jobs
            .send(Job::Checkpoint { cp, applied, image })
            .map_err(|_| "backend thread is gone".to_string())?;
        self.in_flight = true;
        self.last_index = applied.index;
        self.last_time = Instant::now();
        Ok(())
    }

    pub(crate) fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// Resolves when the checkpoint in flight is durable (or failed).
    pub(crate) async fn finished(&mut self) -> Result<Done, String> {
        let r = self
            .done
            .recv()
            .await
            .unwrap_or_else(|_| Err("backend thread is gone".to_string()));
        self.in_flight = false;
        r
    }
}

/// Copies the file's last commit, densely packed, to `path` (replacing a
/// leftover) and returns its size.
fn copy_image(db: &Db, path: PathBuf) -> Result<(PathBuf, u64), String> {
    let _ = std::fs::remove_file(&path);
    let r = db
        .compact_into(&path)
        .map_err(|e| format!("cannot copy the backend to {}: {e}", path.display()))?;
    Ok((path, r.compacted_file_size))
}

/// A B-tree checkpoint that fails (the engine's `btree::commit::*`
/// failpoints, armed for the backend thread) poisons the member: writes are
/// refused with a clear error, reads are served, and a restart from the
/// data on disk (the last good checkpoint + the WAL) has every acknowledged
/// write with its revision and takes writes again.
#[cfg(all(test, feature = "failpoints"))]
mod poison_tests {
    use std::sync::Arc;
    use std::time::Duration;

    use engine::btree::{Db, Options};
    use engine::mvcc::{PutRequest, RangeRequest};
    use engine::wal::{Wal, WalOptions};
    use glommio::timer::sleep;
    use glommio::LocalExecutorBuilder;

    use super::CheckpointConfig;
    use crate::log_store::LogError;
    use crate::wal_log::{bootstrap_log, records_of, recover, WalLog, WalMetadata};
    use crate::{Error, Node, NodeConfig, Recovered};

    fn all() -> RangeRequest {
        RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..Default::default()
        }
    }

    /// Starts a member on `dir` (B-tree + WAL), runs `f` on it.
    fn with_member<T: Send + 'static, F>(dir: std::path::PathBuf, f: fn(Arc<Node>) -> F) -> T
    where
        F: std::future::Future<Output = T> + 'static,
    {
        LocalExecutorBuilder::default()
            .io_memory(1 << 20)
            .spawn(move || async move {
                let wopts = WalOptions {
                    segment_size: 1 << 16,
                    ..Default::default()
                };
                let db = Arc::new(Db::open(dir.join("db"), Options::default()).unwrap());
                let (store, applied) = engine::mvcc::load(&db).unwrap();
                let wd = dir.join("wal");
                let (wal, log) = if Wal::exists(&wd) {
                    let (wal, rec) = Wal::open(&wd, wopts).await.unwrap();
                    (wal, recover(&rec).unwrap().1)
                } else {
                    let meta = WalMetadata {
                        cluster_id: 1,
                        member_id: 7,
                    };
                    let log = bootstrap_log(&[7]).unwrap();
                    let wal = Wal::create(&wd, &meta.encode(), wopts).await.unwrap();
                    wal.append(&records_of(&log)).await.unwrap();
                    (wal, log)
                };
                let rec = Recovered {
                    store,
                    applied,
                    backend: Some((
                        db,
                        CheckpointConfig {
                            interval: Duration::from_millis(5),
                            limit: 10,
                        },
                    )),
                    ..Default::default()
                };
                let (node, lp) = Node::start_with(NodeConfig::new(1, 7), log, rec).unwrap();
                glommio::spawn_local(async move {
                    let _ = lp.run(WalLog::new(wal)).await;
                })
                .detach();
                assert!(node.wait_leader(Duration::from_secs(10)).await);
                f(node).await
            })
            .unwrap()
            .join()
            .unwrap()
    }

    async fn put(node: &Node, k: String) -> Result<i64, Error> {
        node.put(PutRequest {
            key: k.into_bytes(),
            value: vec![b'v'; 100],
            ..Default::default()
        })
        .await
        .map(|r| r.revision)
    }

    #[test]
    fn a_failed_checkpoint_poisons_writes_keeps_reads_and_restart_recovers() {
        let dir = std::env::temp_dir().join(format!("raftcore-ckpt-poison-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let scenario = fail::FailScenario::setup();
        for site in [
            "btree::commit::after_pages",
            "btree::commit::before_meta",
            "btree::meta::flip",
        ] {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            fail::cfg(site, "return").unwrap();
            let (acked, msg, reads) = with_member(dir.clone(), |node| async move {
                let mut acked = Vec::new();
                for i in 0..20 {
                    acked.push((
                        format!("k{i:02}"),
                        put(&node, format!("k{i:02}")).await.unwrap(),
                    ));
                }
                // Fail every checkpoint from now on: the next one poisons.
                engine::btree::arm_failpoints_on_all_threads(true);
                let mut msg = String::new();
                for i in 20..2000 {
                    match put(&node, format!("k{i:04}")).await {
                        Ok(rev) => acked.push((format!("k{i:04}"), rev)),
                        Err(Error::Log(LogError::Poisoned(m))) => {
                            msg = m;
                            break;
                        }
                        Err(e) => panic!("unexpected error {e}"),
                    }
                    sleep(Duration::from_millis(1)).await;
                }
                engine::btree::arm_failpoints_on_all_threads(false);
                // Still refused (the member stays poisoned), still readable.
                let again = put(&node, "after".into()).await;
                assert!(
                    matches!(again, Err(Error::Log(LogError::Poisoned(_)))),
                    "{again:?}"
                );
                let reads = node.range(&all(), false).await.unwrap().kvs.len();
                (acked, msg, reads)
            });
            assert!(
                msg.contains("backend") && msg.contains("failpoint"),
                "{site}: {msg}"
            );
            assert_eq!(reads, acked.len(), "{site}: reads after the poison");
            fail::remove(site);
            // Restart: the last good checkpoint plus the WAL tail.
            let (found, wrote) = with_member(dir.clone(), |node| async move {
                let kvs = node.range(&all(), false).await.unwrap().kvs;
                let found: Vec<(String, i64)> = kvs
                    .into_iter()
                    .map(|kv| (String::from_utf8(kv.key).unwrap(), kv.mod_revision))
                    .collect();
                (found, put(&node, "after-restart".into()).await.is_ok())
            });
            let mut acked = acked;
            acked.sort();
            assert_eq!(found, acked, "{site}: acknowledged writes after restart");
            assert!(wrote, "{site}: writes after restart");
        }
        scenario.teardown();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
