//! Raft snapshots: catching up a member that fell behind a compacted log
//! with the leader's B-tree image.
//!
//! # What a snapshot is
//!
//! The Raft snapshot message carries metadata (applied index, its term, the
//! configuration — voters and learners — as of that index) and no data.
//! The key space, its history, the leases and the member list travel beside
//! it as the **image**: a densely packed copy of the leader's B-tree file as
//! of a checkpoint (`Db::compact_into`), whose meta bucket holds the same
//! applied index and term and whose `members` buckets the member list the
//! configuration derives from. The image is exactly the file a member would
//! have after applying everything up to the index.
//!
//! # Leader
//!
//! raft-rs asks `Storage::snapshot` when a follower needs entries that were
//! compacted away. `SnapStorage` answers with the prepared image of the
//! last checkpoint if it is recent enough (the log still holds the entries
//! after it); otherwise it notes the wish and says "temporarily
//! unavailable" (raft retries on the follower's next heartbeat response).
//! The loop then makes the next checkpoint carry an image request; the
//! backend thread copies the file right after that commit, so the image is
//! that checkpoint, byte for byte. The Raft message goes to the peer
//! transport with the image (`OutgoingSnapshot`), which streams the file
//! in chunks on its own connection and reports the outcome
//! (`Node::report_snapshot`); a failure puts the follower back to probing.
//! One image at a time: a newer one replaces it, and a file is removed when
//! the last transfer using it ends.
//!
//! # Follower
//!
//! `Node::begin_snapshot` / `IncomingSnapshot` receive the image into
//! `snap/<index>.snap.db.part`, check size and CRC-32, sync it, check that
//! it is a sound B-tree whose applied index and term are the message's,
//! and rename it to `snap/<index:016x>.snap.db`; only then is the Raft
//! message stepped. If raft accepts it, the loop installs it
//! (`RaftLoop::install_snapshot`):
//!
//! 1. a WAL `Checkpoint` record at the snapshot's index and term (the WAL
//!    restarts its log after it: engine/FORMAT.md, "Checkpoint"),
//! 2. rename the image over `snap/db` and sync the directory,
//! 3. reopen the file and reload the store, leases and members from it.
//!
//! Crash safety: before step 1 is durable the member restarts as it was
//! (the image is a leftover, removed at start). After it, the WAL says the
//! log starts after the snapshot index while `snap/db` may still be older:
//! `open_backend` at start-up finds `snap/<index>.snap.db` and finishes the
//! rename (etcd does the same with its `.snap.db` files). After step 2 the
//! file and the WAL agree. Failpoints (feature `failpoints`):
//! `snap::receive::before_rename`, `snap::install::before_wal`,
//! `snap::install::before_rename`, `snap::install::after_rename`.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use engine::btree::{Db, Options};
use engine::mvcc::{AppliedState, Store};
use raft::eraftpb::{Entry, Message, MessageType, Snapshot};
use raft::storage::{MemStorage, MemStorageCore, RaftState};
use raft::{GetEntriesContext, Storage, StorageError};

use super::{Cmd, Error, Node, RaftLoop};
use crate::log_store::LogStore;
use crate::proposal::DecodeError;

/// A failpoint named after its site: an armed `return` fails the enclosing
/// function with a backend error (a crash at that instant, as far as the
/// disk is concerned).
macro_rules! failpoint {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        fail::fail_point!($name, |_| Err(Error::Backend(
            concat!("failpoint ", $name).to_string()
        )));
    };
}

/// A received image, complete and verified, waiting to be installed.
fn image_name(index: u64) -> String {
    format!("{index:016x}.snap.db")
}

/// An image being received.
fn part_name(index: u64) -> String {
    format!("{index:016x}.snap.db.part")
}

/// An image made for followers: `<index>-<n>.send.db`, `n` counting the
/// images this process made (two images of one index are two files, so
/// removing the older never touches the newer).
pub(crate) fn outgoing_path(dir: &Path, index: u64) -> PathBuf {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    dir.join(format!("{index:016x}-{n}.send.db"))
}

fn parse_index(name: &str, suffix: &str) -> Option<u64> {
    let hex = name.strip_suffix(suffix)?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Backend(format!("{what} {}: {e}", path.display()))
}

/// Reads the applied state straight from a file's meta bucket (without
/// rebuilding its key space).
fn applied_of(db: &Db) -> Result<AppliedState, Error> {
    let get = |k: &str| -> Result<u64, Error> {
        let v = engine::mvcc::load_meta(db, k)
            .map_err(|e| Error::Backend(format!("snapshot image: {e}")))?
            .ok_or_else(|| Error::Backend(format!("snapshot image has no {k}")))?;
        let a: [u8; 8] = v
            .as_slice()
            .try_into()
            .map_err(|_| Error::Backend(format!("snapshot image: bad {k}")))?;
        Ok(u64::from_le_bytes(a))
    };
    Ok(AppliedState {
        index: get("consistent_index")?,
        term: get("term")?,
    })
}

/// Opens the member's B-tree file `dir/db` and rebuilds the store from it,
/// first finishing an interrupted snapshot installation: when the WAL says
/// its log restarts after `wal_snapshot` but the file is older, the
/// verified image `dir/<index>.snap.db` becomes the file. Leftover images
/// (partial, sent, or older than the file) are removed.
pub fn open_backend(
    dir: &Path,
    wal_snapshot: Option<u64>,
) -> Result<(Db, Store, AppliedState), Error> {
    let db_path = dir.join("db");
    let open = || -> Result<(Db, Store, AppliedState), Error> {
        let db = Db::open(&db_path, Options::default())
            .map_err(|e| Error::Backend(format!("cannot open {}: {e}", db_path.display())))?;
        let (store, applied) = engine::mvcc::load(&db)
            .map_err(|e| Error::Backend(format!("cannot load backend: {e}")))?;
        Ok((db, store, applied))
    };
    let (mut db, mut store, mut applied) = open()?;
    if let Some(index) = wal_snapshot.filter(|i| *i > applied.index) {
        let image = dir.join(image_name(index));
        if image.exists() {
            drop((db, store));
            fs::rename(&image, &db_path).map_err(|e| io_err("cannot install", &image, e))?;
            sync_dir(dir).map_err(|e| io_err("cannot sync", dir, e))?;
            (db, store, applied) = open()?;
        }
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let stale = name.ends_with(".snap.db.part")
                || name.ends_with(".send.db")
                || parse_index(&name, ".snap.db").is_some_and(|i| i <= applied.index);
            if stale {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    Ok((db, store, applied))
}

/// Snapshots this member received (verified, handed to raft) and sent
/// (delivered), by peer ID.
#[derive(Clone, Debug, Default)]
pub struct SnapStats {
    pub received: BTreeMap<u64, u64>,
    pub sent: BTreeMap<u64, u64>,
}

// ---------------------------------------------------------------- leader

/// How long an image no transfer uses stays on the leader's disk.
const IMAGE_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// An image file made for followers; removed when the last user drops it.
pub(crate) struct Image {
    path: PathBuf,
    size: u64,
    /// When the last transfer of it started (or it was made).
    used: Mutex<std::time::Instant>,
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// The leader's snapshot state shared by `SnapStorage` (raft asks) and the
/// loop (which makes images).
#[derive(Default)]
pub(crate) struct Outbox {
    /// The Raft snapshot describing the current image, and the image.
    prepared: Option<(Snapshot, Arc<Image>)>,
    /// raft asked for a snapshot that `prepared` could not answer.
    wanted: bool,
}

impl Outbox {
    pub(crate) fn take_wanted(&mut self) -> bool {
        std::mem::take(&mut self.wanted)
    }
}

/// raft-rs's storage: the in-memory log (`MemStorage`) plus the prepared
/// snapshot. `wl`/`rl` reach the log as on a `MemStorage`.
pub(crate) struct SnapStorage {
    mem: MemStorage,
    pub(crate) outbox: Arc<Mutex<Outbox>>,
}

impl SnapStorage {
    pub(crate) fn new(mem: MemStorage) -> SnapStorage {
        SnapStorage {
            mem,
            outbox: Arc::default(),
        }
    }

    pub(crate) fn wl(&self) -> std::sync::RwLockWriteGuard<'_, MemStorageCore> {
        self.mem.wl()
    }
}

impl Storage for SnapStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.mem.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.mem.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.mem.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.mem.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.mem.last_index()
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let first = self.mem.first_index()?;
        let mut ob = self
            .outbox
            .lock()
            .map_err(|_| raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable))?;
        if let Some((snap, _)) = &ob.prepared {
            let index = snap.get_metadata().index;
            // Usable if the log still holds what follows it.
            if index >= request_index && index + 1 >= first {
                return Ok(snap.clone());
            }
        }
        ob.wanted = true;
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable,
        ))
    }
}

/// A snapshot for the peer transport to deliver: the Raft message, then the
/// image, streamed (`ImageReader`). Report the outcome with
/// `Node::report_snapshot`.
pub struct OutgoingSnapshot {
    pub to: u64,
    /// The encoded raft `MsgSnapshot`.
    pub message: Vec<u8>,
    image: Arc<Image>,
}

impl OutgoingSnapshot {
    pub fn size(&self) -> u64 {
        self.image.size
    }

    /// Reads the image from the start.
    pub fn reader(&self) -> std::io::Result<ImageReader> {
        Ok(ImageReader {
            file: File::open(&self.image.path)?,
            crc: crc32fast::Hasher::new(),
            left: self.image.size,
        })
    }
}

/// Reads an image in chunks and computes its CRC-32 on the way.
pub struct ImageReader {
    file: File,
    crc: crc32fast::Hasher,
    left: u64,
}

impl ImageReader {
    /// The next chunk of at most `max` bytes; None at the end.
    pub fn next_chunk(&mut self, max: usize) -> std::io::Result<Option<Vec<u8>>> {
        if self.left == 0 {
            return Ok(None);
        }
        let n = (max as u64).min(self.left) as usize;
        let mut buf = vec![0u8; n];
        self.file.read_exact(&mut buf)?;
        self.left -= n as u64;
        self.crc.update(&buf);
        Ok(Some(buf))
    }

    /// CRC-32 (IEEE) of everything read.
    pub fn crc(&self) -> u32 {
        self.crc.clone().finalize()
    }
}

impl Node {
    /// The peer transport's end of the snapshot queue (once).
    pub fn take_snapshot_outbound(&self) -> Option<async_channel::Receiver<OutgoingSnapshot>> {
        self.snap_outbound.lock().ok()?.take()
    }

    /// The transport delivered (`ok`) or failed to deliver a snapshot to
    /// `to`; raft resumes replication or probes again.
    pub async fn report_snapshot(&self, to: u64, ok: bool) {
        if ok {
            if let Ok(mut st) = self.shared.snap_stats.lock() {
                *st.sent.entry(to).or_default() += 1;
            }
        }
        let _ = self.tx.send(Cmd::SnapshotStatus { to, ok }).await;
    }

    /// Snapshots received and sent so far, by peer.
    pub fn snapshot_stats(&self) -> SnapStats {
        self.shared
            .snap_stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Starts receiving a snapshot: `message` is the raft `MsgSnapshot`
    /// that came with it.
    pub fn begin_snapshot(&self, message: &[u8]) -> Result<IncomingSnapshot, Error> {
        let msg: Message = protobuf::Message::parse_from_bytes(message)
            .map_err(|_| DecodeError("raft message"))?;
        if msg.get_msg_type() != MessageType::MsgSnapshot
            || msg.get_snapshot().get_metadata().index == 0
        {
            return Err(Error::Corrupt(DecodeError("snapshot message")));
        }
        let dir = self
            .shared
            .snap_dir
            .clone()
            .ok_or_else(|| Error::Backend("this member has no backend file".into()))?;
        let index = msg.get_snapshot().get_metadata().index;
        let part = dir.join(part_name(index));
        let file = File::create(&part).map_err(|e| io_err("cannot create", &part, e))?;
        Ok(IncomingSnapshot {
            msg,
            dir,
            part,
            file: Some(file),
            crc: crc32fast::Hasher::new(),
            written: 0,
        })
    }
}

/// An image being received; the partial file goes away if it is dropped
/// unfinished.
pub struct IncomingSnapshot {
    msg: Message,
    dir: PathBuf,
    part: PathBuf,
    file: Option<File>,
    crc: crc32fast::Hasher,
    written: u64,
}

impl Drop for IncomingSnapshot {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.part);
        }
    }
}

impl IncomingSnapshot {
    /// The sending member.
    pub fn from(&self) -> u64 {
        self.msg.from
    }

    /// Appends a chunk, which must start where the last one ended.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        if offset != self.written {
            return Err(Error::Backend(format!(
                "snapshot chunk at offset {offset}, expected {}",
                self.written
            )));
        }
        let f = self
            .file
            .as_mut()
            .ok_or_else(|| Error::Backend("snapshot already finished".into()))?;
        f.write_all(data)
            .map_err(|e| io_err("cannot write", &self.part, e))?;
        self.crc.update(data);
        self.written += data.len() as u64;
        Ok(())
    }

    /// Checks the whole image (`size` bytes with CRC-32 `crc`, a sound
    /// B-tree at the message's index and term), makes it durable under its
    /// final name and hands the message to raft.
    pub async fn finish(mut self, node: &Node, size: u64, crc: u32) -> Result<(), Error> {
        let meta = self.msg.get_snapshot().get_metadata().clone();
        if self.written != size || self.crc.clone().finalize() != crc {
            return Err(Error::Backend(format!(
                "snapshot image damaged in transit ({} of {size} bytes, crc {:08x} vs {crc:08x})",
                self.written,
                self.crc.clone().finalize()
            )));
        }
        // Syncing and walking the whole file may take a while: on a thread
        // of its own, so the executor (and the Raft loop, when it shares
        // it) keeps answering heartbeats meanwhile.
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| Error::Backend("snapshot already finished".into()))?
            .try_clone()
            .map_err(|e| io_err("cannot sync", &self.part, e))?;
        let (part, dir) = (self.part.clone(), self.dir.clone());
        let (tx, rx) = futures_channel::oneshot::channel();
        std::thread::Builder::new()
            .name("ferrocd-snap-verify".into())
            .spawn(move || {
                let _ = tx.send(verify_and_keep(file, &part, &dir, meta.index, meta.term));
            })
            .map_err(|e| Error::Backend(format!("cannot start a thread: {e}")))?;
        rx.await.unwrap_or(Err(Error::Stopped))?;
        // Renamed: nothing left to clean up.
        self.file = None;
        let msg = std::mem::take(&mut self.msg);
        if let Ok(mut p) = node.shared.snap_received_at.lock() {
            p.push(msg.get_snapshot().get_metadata().index);
        }
        if let Ok(mut st) = node.shared.snap_stats.lock() {
            *st.received.entry(msg.from).or_default() += 1;
        }
        node.tx
            .send(Cmd::Step(Box::new(msg)))
            .await
            .map_err(|_| Error::Stopped)
    }
}

/// Makes a received image durable, checks it (a sound B-tree at `index` and
/// `term`) and renames it to its final name (module docs, "Follower").
fn verify_and_keep(
    file: File,
    part: &Path,
    dir: &Path,
    index: u64,
    term: u64,
) -> Result<(), Error> {
    file.sync_all()
        .map_err(|e| io_err("cannot sync", part, e))?;
    {
        let db = Db::open(part, Options::default())
            .map_err(|e| Error::Backend(format!("snapshot image: {e}")))?;
        db.check_integrity()
            .map_err(|e| Error::Backend(format!("snapshot image: {e}")))?;
        let applied = applied_of(&db)?;
        if applied.index != index || applied.term != term {
            return Err(Error::Backend(format!(
                "snapshot image is at {}/{}, the message says {index}/{term}",
                applied.index, applied.term
            )));
        }
    }
    failpoint!("snap::receive::before_rename");
    let done = dir.join(image_name(index));
    fs::rename(part, &done).map_err(|e| io_err("cannot rename", part, e))?;
    sync_dir(dir).map_err(|e| io_err("cannot sync", dir, e))
}

// ---------------------------------------------------------------- the loop

impl RaftLoop {
    /// Whether the next checkpoint should carry an image for a follower.
    pub(super) fn image_wanted(&mut self) -> bool {
        if self.image_meta.is_some() || self.shared.snap_dir.is_none() {
            return false;
        }
        self.raw
            .store()
            .outbox
            .lock()
            .map(|mut o| o.take_wanted())
            .unwrap_or(false)
    }

    /// An image was made with the checkpoint at `applied`: it answers raft's
    /// next snapshot request.
    pub(super) fn on_image(
        &mut self,
        applied: AppliedState,
        image: Option<Result<(PathBuf, u64), String>>,
    ) {
        let Some(conf) = self.image_meta.take() else {
            return;
        };
        let Some(Ok((path, size))) = image else {
            // Could not copy (e.g. disk full): the next request retries.
            return;
        };
        let mut snap = Snapshot::default();
        let m = snap.mut_metadata();
        m.index = applied.index;
        m.term = applied.term;
        m.set_conf_state(conf);
        if let Ok(mut ob) = self.raw.store().outbox.lock() {
            ob.prepared = Some((
                snap,
                Arc::new(Image {
                    path,
                    size,
                    used: Mutex::new(std::time::Instant::now()),
                }),
            ));
        }
    }

    /// Disk hygiene after each checkpoint: the leader's image goes once no
    /// transfer has used it for `IMAGE_IDLE` (the next request makes a new
    /// one); received images at or below `applied` were overtaken by the
    /// log (raft refuses them) or installed, so their files go too.
    pub(super) fn tidy_images(&mut self, applied: u64) {
        if let Ok(mut ob) = self.raw.store().outbox.lock() {
            let idle = ob.prepared.as_ref().is_some_and(|(_, i)| {
                Arc::strong_count(i) == 1
                    && i.used.lock().map_or(true, |t| t.elapsed() >= IMAGE_IDLE)
            });
            if idle {
                ob.prepared = None;
            }
        }
        let Ok(mut pending) = self.shared.snap_received_at.lock() else {
            return;
        };
        if let Some(dir) = &self.shared.snap_dir {
            pending.retain(|&index| {
                if index > applied {
                    return true;
                }
                let _ = fs::remove_file(dir.join(image_name(index)));
                false
            });
        }
    }

    /// Hands a `MsgSnapshot` from raft to the transport with its image.
    pub(super) fn send_snapshot(&mut self, m: Message) {
        let to = m.to;
        let index = m.get_snapshot().get_metadata().index;
        let image = self.raw.store().outbox.lock().ok().and_then(|ob| {
            ob.prepared
                .as_ref()
                .filter(|(s, _)| s.get_metadata().index == index)
                .map(|(_, i)| i.clone())
        });
        if let Some(i) = &image {
            if let Ok(mut t) = i.used.lock() {
                *t = std::time::Instant::now();
            }
        }
        let sent = match (image, protobuf::Message::write_to_bytes(&m)) {
            (Some(image), Ok(message)) => self
                .snap_outbound
                .try_send(OutgoingSnapshot { to, message, image })
                .is_ok(),
            _ => false,
        };
        if !sent {
            self.snap_failures.push(to);
        }
    }

    /// Installs the snapshot raft accepted (module docs, "Follower").
    pub(super) async fn install_snapshot<L: LogStore>(
        &mut self,
        log: &mut L,
        snap: &Snapshot,
    ) -> Result<(), Error> {
        let meta = snap.get_metadata();
        let (index, term) = (meta.index, meta.term);
        let dir =
            self.shared.snap_dir.clone().ok_or_else(|| {
                Error::Backend("a snapshot arrived but there is no backend".into())
            })?;
        let image = dir.join(image_name(index));
        if !image.exists() {
            return Err(Error::Backend(format!(
                "raft accepted snapshot {index} but its image {} is missing",
                image.display()
            )));
        }
        // A checkpoint in flight is below the snapshot: finish it first so
        // the WAL's checkpoints stay in order and it does not write to the
        // file being replaced.
        if let Some(c) = self.checkpointer.as_mut().filter(|c| c.in_flight()) {
            let done = c.finished().await.map_err(Error::Backend)?;
            self.on_checkpointed(log, done).await?;
        }
        // The backend thread lets go of the file (after a defrag in
        // progress, which would otherwise rename its copy over ours).
        if let Some(c) = self.checkpointer.as_ref() {
            c.replace_db(None).await.map_err(Error::Backend)?;
        }
        failpoint!("snap::install::before_wal");
        log.checkpoint(index, term).await?;
        failpoint!("snap::install::before_rename");
        let db_path = dir.join("db");
        fs::rename(&image, &db_path).map_err(|e| io_err("cannot install", &image, e))?;
        sync_dir(&dir).map_err(|e| io_err("cannot sync", &dir, e))?;
        failpoint!("snap::install::after_rename");
        let db = Arc::new(
            Db::open(&db_path, Options::default())
                .map_err(|e| Error::Backend(format!("cannot open installed snapshot: {e}")))?,
        );
        let (store, applied) = engine::mvcc::load(&db)
            .map_err(|e| Error::Backend(format!("cannot load installed snapshot: {e}")))?;
        if applied.index != index {
            return Err(Error::Backend(format!(
                "installed snapshot is at applied index {}, expected {index}",
                applied.index
            )));
        }
        let lessor = super::lease::recover_lessor(&self.shared.cfg, Some(&db), &store)?;
        // The alarms as of the snapshot index came with the image too.
        let alarms = super::alarm::recover(Some(&db))?;
        let revision = store.current_revision();
        {
            let mut st = self.shared.store.write().map_err(|_| Error::Stopped)?;
            let mut ls = self.shared.lessor.lock().map_err(|_| Error::Stopped)?;
            let mut al = self.shared.alarms.lock().map_err(|_| Error::Stopped)?;
            *st = store;
            *ls = lessor;
            *al = alarms;
        }
        // The member list as of the snapshot index came with the image.
        let members = engine::members::load(&db)
            .map_err(|e| Error::Backend(format!("cannot load installed members: {e}")))?;
        if let Some(st) = members {
            let me = self.shared.cfg.member_id;
            for m in &st.members {
                self.shared.directory.set(m.id, &m.peer_urls);
            }
            if st.removed.contains(&me) {
                self.shared.directory.mark_removed();
            }
            if let Ok(mut m) = self.shared.members.write() {
                *m = crate::membership::Membership::from_state(&st);
            }
        }
        if let Ok(mut d) = self.shared.db.write() {
            *d = Some(db.clone());
        }
        self.shared.watch.restore(revision);
        if let Some(c) = self.checkpointer.as_mut() {
            c.replace_db(Some(db)).await.map_err(Error::Backend)?;
            c.reset(index);
        }
        self.shared
            .applied
            .store(index, std::sync::atomic::Ordering::Release);
        self.raw.mut_store().wl().apply_snapshot(snap.clone())?;
        self.release_reads(index);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
