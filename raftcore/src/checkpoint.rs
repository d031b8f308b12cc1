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
//! Online defrag (`Maintenance.Defragment`) runs on the same thread, as a
//! job between two checkpoints: the thread is the B-tree's only writer, so
//! the defrag's copy is the last checkpoint and nothing needs to be caught
//! up. Clients do not wait for it: their reads and writes are served from
//! memory and the WAL; only the next checkpoint waits (the WAL holds the
//! writes meanwhile).

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::btree::Db;
use engine::mvcc::{AppliedState, Checkpoint};

enum Job {
    Checkpoint {
        cp: Checkpoint,
        applied: AppliedState,
    },
    Defrag(futures_channel::oneshot::Sender<Result<DefragReport, String>>),
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
    /// Defragments the B-tree file after the checkpoint in flight, if any.
    pub(crate) async fn defragment(&self) -> Result<DefragReport, String> {
        let (tx, rx) = futures_channel::oneshot::channel();
        self.jobs
            .send(Job::Defrag(tx))
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
    done: async_channel::Receiver<Result<AppliedState, String>>,
    in_flight: bool,
    /// Applied index of the last checkpoint submitted.
    last_index: u64,
    last_time: Instant,
    cfg: CheckpointConfig,
}

impl Checkpointer {
    pub(crate) fn spawn(
        db: Arc<Db>,
        cfg: CheckpointConfig,
        start_index: u64,
    ) -> std::io::Result<Checkpointer> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (done_tx, done) = async_channel::bounded(1);
        std::thread::Builder::new()
            .name("ferrocd-backend".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    match job {
                        Job::Checkpoint { cp, applied } => {
                            let r = engine::mvcc::save(&db, &cp, applied)
                                .map(|()| applied)
                                .map_err(|e| e.to_string());
                            if done_tx.send_blocking(r).is_err() {
                                return;
                            }
                        }
                        Job::Defrag(reply) => {
                            let start = Instant::now();
                            let r = db
                                .defrag_online()
                                .map(|rep| DefragReport {
                                    old_file_size: rep.source_file_size,
                                    new_file_size: rep.compacted_file_size,
                                    took: start.elapsed(),
                                })
                                .map_err(|e| format!("defragment: {e}"));
                            let _ = reply.send(r);
                        }
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

    pub(crate) fn submit(&mut self, cp: Checkpoint, applied: AppliedState) -> Result<(), String> {
        self.jobs
            .send(Job::Checkpoint { cp, applied })
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
    pub(crate) async fn finished(&mut self) -> Result<AppliedState, String> {
        let r = self
            .done
            .recv()
            .await
            .unwrap_or_else(|_| Err("backend thread is gone".to_string()));
        self.in_flight = false;
        r
    }
}
