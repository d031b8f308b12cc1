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

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::btree::Db;
use engine::mvcc::{AppliedState, Checkpoint};

struct Job {
    cp: Checkpoint,
    applied: AppliedState,
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
                    let r = engine::mvcc::save(&db, &job.cp, job.applied)
                        .map(|()| job.applied)
                        .map_err(|e| e.to_string());
                    if done_tx.send_blocking(r).is_err() {
                        return;
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

    pub(crate) fn submit(&mut self, cp: Checkpoint, applied: AppliedState) -> Result<(), String> {
        self.jobs
            .send(Job { cp, applied })
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
