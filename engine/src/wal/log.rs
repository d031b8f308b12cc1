//! The live WAL: open/create (with recovery), the group-commit flusher,
//! rotation, release and entry reads.
//!
//! Concurrency model: one glommio executor. `Shared` is behind an `Rc`; its
//! `RefCell` is never borrowed across an `.await`. Appends are encoded and
//! validated synchronously in `append` (so the log order is the call order)
//! and queued; one flusher task takes everything queued, writes it as one
//! batch, syncs, and wakes the appenders whose tickets it covered. Appends
//! that arrive while a write + sync is in flight wait in the queue and share
//! the next one.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs;
use std::future::{poll_fn, Future};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::task::{Poll, Waker};

use bytes::Bytes;
use glommio::Task;

use super::format::{self, BatchHeader, SegmentHeader, BATCH_HEADER_LEN, BLOCK};
use super::recovery::{self, Loc, LogState, ReplayEntries};
use super::segment::{self, SegFile};
use super::{
    failpoint, Checkpoint, Entry, HardState, Record, Recovered, TornTail, WalError, WalOptions,
    WalPosition, WalStats,
};

/// Largest batch body one commit writes; more waits for the next commit.
/// Keeps one write's latency bounded and `body_len` far inside u32.
const MAX_BATCH_BODY: usize = 8 << 20;

/// The write-ahead log. See the module doc of `engine::wal`.
pub struct Wal {
    sh: Rc<Shared>,
}

struct Shared {
    dir: PathBuf,
    opts: WalOptions,
    /// Random per WAL directory; mixed into every batch header crc.
    nonce: u64,
    /// Largest encoded append (and metadata): a quarter segment, so that the
    /// header block, the first batch and one append always fit a segment.
    max_append: u64,
    st: RefCell<State>,
}

struct Segment {
    seq: u64,
    size: u64,
    file: Rc<SegFile>,
    /// Highest entry index written in this segment (None: no entries).
    max_entry: Option<u64>,
}

/// One queued append, already encoded.
struct Pending {
    ticket: u64,
    bytes: Vec<u8>,
    /// Records (entry data stripped) with their offset and length in `bytes`.
    metas: Vec<(Record, u32, u32)>,
}

struct Poison {
    cause: String,
    /// The tickets of the batch whose write or sync failed, and the error,
    /// which those appenders get in full.
    failed: Option<(u64, u64, &'static str, PathBuf, io::ErrorKind, String)>,
}

struct State {
    // ---- append side ----
    pending: VecDeque<Pending>,
    /// Ticket of the next append. Tickets start at 1.
    next_ticket: u64,
    /// Invariant: every append with ticket <= durable_ticket is durable (I1).
    durable_ticket: u64,
    /// Tickets being written right now (first, last).
    in_flight: Option<(u64, u64)>,
    /// The log state including queued appends, for validating new ones (no locs).
    accepted: LogState,
    poison: Option<Poison>,
    closing: bool,
    flusher_done: bool,
    closed: bool,
    flusher_waker: Option<Waker>,
    waiters: Vec<Waker>,
    // ---- durable side ----
    /// Ordered by seq, contiguous; the last is the active one.
    segments: Vec<Segment>,
    /// Invariant: block aligned; everything from here to the end of the active
    /// segment is zero on disk (I2).
    write_pos: u64,
    next_batch_seq: u64,
    /// The durable log state, with entry locations.
    log: LogState,
    /// The next segment, being prepared in the background.
    prepared: Option<Task<Result<SegFile, WalError>>>,
    stats: WalStats,
}

impl Wal {
    /// Whether `dir` holds WAL segments.
    pub fn exists(dir: impl AsRef<Path>) -> bool {
        segment::list(dir.as_ref())
            .map(|(s, _)| !s.is_empty())
            .unwrap_or(false)
    }

    /// Creates a new WAL in `dir` (created if missing), whose segments all
    /// start with `metadata`. Fails with `AlreadyExists` if `dir` holds one.
    pub async fn create(
        dir: impl AsRef<Path>,
        metadata: &[u8],
        opts: WalOptions,
    ) -> Result<Wal, WalError> {
        let dir = dir.as_ref().to_path_buf();
        check_opts(&opts)?;
        fs::create_dir_all(&dir).map_err(|e| WalError::io("create dir", &dir, e))?;
        if let Some(parent) = dir.parent() {
            if !parent.as_os_str().is_empty() {
                segment::sync_dir(parent)?;
            }
        }
        let (segs, tmps) = segment::list(&dir)?;
        if !segs.is_empty() {
            return Err(WalError::AlreadyExists { dir });
        }
        remove_tmps(&tmps)?;
        let max_append = opts.segment_size / 4;
        if metadata.len() as u64 > max_append {
            return Err(WalError::TooLarge {
                what: "metadata",
                size: metadata.len() as u64,
                max: max_append,
            });
        }
        let log = LogState {
            metadata: Bytes::copy_from_slice(metadata),
            ..LogState::default()
        };
        let sh = Rc::new(Shared {
            dir,
            nonce: random_u64(),
            max_append,
            st: RefCell::new(State::new(log, Vec::new(), 0, 1)),
            opts,
        });
        new_segment(&sh).await?;
        Ok(Wal::start(sh))
    }

    /// Opens the WAL in `dir` and recovers it: verifies every batch and
    /// record, truncates a torn tail of the last segment, and refuses with
    /// `Corrupt` on anything else. Returns the live `Wal` (appends go after the
    /// recovered log) and what it found.
    pub async fn open(
        dir: impl AsRef<Path>,
        opts: WalOptions,
    ) -> Result<(Wal, Recovered), WalError> {
        let dir = dir.as_ref().to_path_buf();
        check_opts(&opts)?;
        let (segs, tmps) = segment::list(&dir)?;
        if segs.is_empty() {
            return Err(WalError::NotFound { dir });
        }
        remove_tmps(&tmps)?;
        for w in segs.windows(2) {
            if w[1].0 != w[0].0 + 1 {
                return Err(WalError::corrupt(
                    &w[1].2,
                    0,
                    format!("segment seq {} follows {}: missing segment", w[1].0, w[0].0),
                ));
            }
        }

        let mut log = LogState::default();
        let mut replay = ReplayEntries::default();
        let mut nonce = None;
        let mut next_seq: Option<u64> = None;
        let mut segments = Vec::with_capacity(segs.len());
        let mut torn_tail = None;
        let mut write_pos = BLOCK;
        let n = segs.len();
        for (i, (seq, first_index, path)) in segs.into_iter().enumerate() {
            let is_last = i + 1 == n;
            let len = fs::metadata(&path)
                .map_err(|e| WalError::io("stat", &path, e))?
                .len();
            if len < BLOCK {
                // Also keeps glommio from ever opening an empty file.
                return Err(WalError::corrupt(
                    &path,
                    0,
                    format!("file of {len} bytes is shorter than its header block"),
                ));
            }
            let f = SegFile::open(&path, opts.sync).await?;
            let head = f.read_prefix(BLOCK).await?;
            let h = SegmentHeader::decode(&head).map_err(|w| WalError::corrupt(&path, 0, w))?;
            // Scanned through a bounded window of ordinary reads (this runs
            // once, before the log serves anything).
            let reader = fs::File::open(&path).map_err(|e| WalError::io("open", &path, e))?;
            let scan =
                recovery::scan_segment(recovery::FileWindow::new(&reader), nonce).map_err(|e| {
                    match e {
                        recovery::ScanError::Corrupt(o, w) => WalError::corrupt(&path, o, w),
                        recovery::ScanError::Io(e) => WalError::io("read", &path, e),
                    }
                })?;
            drop(reader);
            nonce = Some(h.nonce);
            if h.seq != seq || h.first_index != first_index {
                return Err(WalError::corrupt(
                    &path,
                    0,
                    format!(
                        "header says seq {} first index {}, the file name says {seq} {first_index}",
                        h.seq, h.first_index
                    ),
                ));
            }
            if i == 0 {
                // Older segments were released: the log starts here.
                log.last = first_index.saturating_sub(1);
            } else if first_index != log.last + 1 {
                return Err(WalError::corrupt(
                    &path,
                    0,
                    format!(
                        "segment starts at index {first_index}, but the log before it ends at {}",
                        log.last
                    ),
                ));
            }
            match scan.batches.first() {
                None => {
                    let what = scan.damage.as_deref().unwrap_or("zero header");
                    return Err(WalError::corrupt(
                        &path,
                        BLOCK,
                        format!("segment has no valid first batch: {what}"),
                    ));
                }
                Some(b) if !matches!(b.records.first(), Some((_, Record::Metadata(_)))) => {
                    return Err(WalError::corrupt(
                        &path,
                        b.offset,
                        "first batch does not start with metadata",
                    ));
                }
                Some(_) => {}
            }
            let mut max_entry = None;
            for b in &scan.batches {
                if let Some(want) = next_seq {
                    if b.seq != want {
                        return Err(WalError::corrupt(
                            &path,
                            b.offset,
                            format!(
                                "batch seq {} where {want} was expected: batches are missing",
                                b.seq
                            ),
                        ));
                    }
                }
                next_seq = Some(b.seq + 1);
                for (off, r) in &b.records {
                    log.check(r)
                        .map_err(|w| WalError::corrupt(&path, *off, w))?;
                    let loc = match r {
                        Record::Entry(e) => {
                            max_entry = Some(e.index);
                            Some(Loc {
                                index: e.index,
                                term: e.term,
                                seg_seq: seq,
                                offset: *off,
                                len: format::record_len(r) as u32,
                            })
                        }
                        _ => None,
                    };
                    log.apply(r, loc);
                    replay.apply(r);
                }
            }
            if !is_last {
                if let Some(d) = &scan.damage {
                    return Err(WalError::corrupt(
                        &path,
                        scan.end,
                        format!("{d} in a closed segment"),
                    ));
                }
                if scan.nonzero_end > scan.end {
                    return Err(WalError::corrupt(
                        &path,
                        scan.end,
                        "non-zero bytes after the last batch of a closed segment",
                    ));
                }
            } else {
                write_pos = scan.end;
                let short = len < h.segment_size;
                if scan.damage.is_some() || scan.nonzero_end > scan.end || short {
                    // Torn tail: re-zero it (I2) and make that durable before
                    // anything new is written after it.
                    failpoint!("wal::recover::before_repair", &path);
                    let zero_to =
                        scan.nonzero_end
                            .max(if short { h.segment_size } else { scan.end });
                    f.zero_range(scan.end, zero_to).await?;
                    f.dma
                        .fdatasync()
                        .await
                        .map_err(|e| WalError::io("fdatasync", &path, e))?;
                    let what = match (&scan.damage, short) {
                        (Some(d), _) => d.clone(),
                        (None, false) => "non-zero bytes after the last batch".to_string(),
                        (None, true) => format!("file cut short at {len} bytes"),
                    };
                    torn_tail = Some(TornTail {
                        file: path.clone(),
                        offset: scan.end,
                        zeroed: zero_to - scan.end,
                        what,
                    });
                }
            }
            segments.push(Segment {
                seq,
                size: h.segment_size,
                file: Rc::new(f),
                max_entry,
            });
        }

        let ci = log.checkpoint_index();
        if let (Some(first), Some(seg0)) = (replay.entries.front(), segments.first()) {
            if first.index > ci + 1 {
                return Err(WalError::corrupt(
                    &seg0.file.path,
                    0,
                    format!(
                        "entries ({ci}, {}) are neither in the wal nor covered by the checkpoint",
                        first.index
                    ),
                ));
            }
        }
        let recovered = Recovered {
            metadata: log.metadata.clone(),
            hard_state: log.hard_state,
            checkpoint: log.checkpoint,
            entries: replay
                .entries
                .into_iter()
                .filter(|e| e.index > ci)
                .collect(),
            torn_tail,
        };
        let Some(nonce) = nonce else {
            return Err(WalError::NotFound { dir });
        };
        let sh = Rc::new(Shared {
            dir,
            nonce,
            max_append: opts.segment_size / 4,
            st: RefCell::new(State::new(log, segments, write_pos, next_seq.unwrap_or(1))),
            opts,
        });
        spawn_prepare(&sh);
        Ok((Wal::start(sh), recovered))
    }

    fn start(sh: Rc<Shared>) -> Wal {
        glommio::spawn_local(flusher(sh.clone())).detach();
        Wal { sh }
    }

    /// Queues `records` as one atomic append (all or none of them recover) and
    /// returns a future that resolves once they are durable. Validation and
    /// ordering happen now, at the call: appends are logged in call order,
    /// and dropping the future does not withdraw the records. Appends queued
    /// while a write + fdatasync is in flight share the next one (group
    /// commit). An empty `records` is a barrier: it resolves when everything
    /// appended before it is durable.
    pub fn append(
        &self,
        records: &[Record],
    ) -> impl Future<Output = Result<(), WalError>> + 'static {
        let queued = self.sh.enqueue(records);
        let sh = self.sh.clone();
        async move {
            let ticket = queued?;
            poll_fn(|cx| sh.poll_durable(ticket, cx.waker())).await
        }
    }

    /// Reads the entries with index in `[lo, hi)` (durable ones only).
    pub async fn entries(&self, lo: u64, hi: u64) -> Result<Vec<Entry>, WalError> {
        if lo >= hi {
            return Ok(Vec::new());
        }
        // Runs of consecutive locations in the same segment, read with one I/O each.
        let runs: Vec<(Rc<SegFile>, Vec<Loc>)> = {
            let st = self.sh.st.borrow();
            if st.closed {
                return Err(WalError::Closed);
            }
            let unavailable = || WalError::Unavailable {
                lo,
                hi,
                first: st.log.locs.front().map_or(st.log.last + 1, |l| l.index),
                last: st.log.last,
            };
            let first = st.log.locs.front().ok_or_else(unavailable)?.index;
            if lo < first || hi > st.log.last + 1 {
                return Err(unavailable());
            }
            let seg0 = st.segments.first().map_or(0, |s| s.seq);
            let mut runs: Vec<(Rc<SegFile>, Vec<Loc>)> = Vec::new();
            for l in st
                .log
                .locs
                .range((lo - first) as usize..(hi - first) as usize)
            {
                match runs.last_mut() {
                    Some((_, v)) if v.last().is_some_and(|p| p.seg_seq == l.seg_seq) => v.push(*l),
                    _ => {
                        let seg = st
                            .segments
                            .get((l.seg_seq - seg0) as usize)
                            .ok_or_else(unavailable)?;
                        runs.push((seg.file.clone(), vec![*l]));
                    }
                }
            }
            runs
        };
        let mut out = Vec::with_capacity((hi - lo) as usize);
        for (file, locs) in runs {
            let start = locs.iter().map(|l| l.offset).min().unwrap_or(0);
            let end = locs
                .iter()
                .map(|l| l.offset + u64::from(l.len))
                .max()
                .unwrap_or(start);
            let buf = file.read_exact_at(start, (end - start) as usize).await?;
            for l in locs {
                let at = buf.get((l.offset - start) as usize..).unwrap_or(&[]);
                match format::decode_record(at) {
                    Ok((Record::Entry(e), _)) if e.index == l.index && e.term == l.term => {
                        out.push(e)
                    }
                    Ok((r, _)) => {
                        return Err(WalError::corrupt(
                            &file.path,
                            l.offset,
                            format!("expected entry {} but found {r:?}", l.index),
                        ))
                    }
                    Err(w) => return Err(WalError::corrupt(&file.path, l.offset, w)),
                }
            }
        }
        Ok(out)
    }

    /// Removes whole segments, oldest first, whose entries all have index
    /// `<= index`, keeping at least `max_wals` segments and never the active
    /// one. `index` is capped at the last durable `Checkpoint` in the WAL, so
    /// recovery never needs a removed entry. Returns how many were removed.
    pub async fn release_to(&self, index: u64) -> Result<usize, WalError> {
        let removed: Vec<Segment> = {
            let mut st = self.sh.st.borrow_mut();
            if let Some(p) = &st.poison {
                return Err(WalError::Poisoned {
                    cause: p.cause.clone(),
                });
            }
            if st.closed {
                return Err(WalError::Closed);
            }
            let limit = index.min(st.log.checkpoint_index());
            let n = st.segments.len();
            let below = st.segments[..n - 1]
                .iter()
                .take_while(|s| s.max_entry.is_none_or(|m| m <= limit))
                .count();
            let k = below.min(n.saturating_sub(self.sh.opts.max_wals));
            let removed: Vec<Segment> = st.segments.drain(..k).collect();
            // Locations are monotone in segment order (a rewrite of index i
            // also rewrites everything after i), so the dropped ones are a prefix.
            if let Some(first_kept) = st.segments.first().map(|s| s.seq) {
                while st.log.locs.front().is_some_and(|l| l.seg_seq < first_kept) {
                    st.log.locs.pop_front();
                }
            }
            removed
        };
        let count = removed.len();
        for s in removed {
            failpoint!("wal::release::before_remove", &s.file.path);
            fs::remove_file(&s.file.path).map_err(|e| WalError::io("remove", &s.file.path, e))?;
            // One directory sync per unlink: POSIX does not order unlinks, and
            // a crash must leave a contiguous run of segments (a seq gap is
            // corruption at open).
            segment::sync_dir(&self.sh.dir)?;
            if let Ok(f) = Rc::try_unwrap(s.file) {
                f.close().await;
            }
        }
        Ok(count)
    }

    /// Stops accepting appends, waits for the queued ones to be written, and
    /// closes the files. Idempotent.
    pub async fn close(&self) -> Result<(), WalError> {
        self.sh.st.borrow_mut().begin_close();
        poll_fn(|cx| {
            let mut st = self.sh.st.borrow_mut();
            if st.flusher_done {
                Poll::Ready(())
            } else {
                st.waiters.push(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        let (prepared, segments) = {
            let mut st = self.sh.st.borrow_mut();
            st.closed = true;
            (st.prepared.take(), std::mem::take(&mut st.segments))
        };
        if let Some(t) = prepared {
            if let Some(Ok(f)) = t.cancel().await {
                f.close().await;
            }
        }
        for s in segments {
            if let Ok(f) = Rc::try_unwrap(s.file) {
                f.close().await;
            }
        }
        match &self.sh.st.borrow().poison {
            Some(p) => Err(WalError::Poisoned {
                cause: p.cause.clone(),
            }),
            None => Ok(()),
        }
    }

    /// The index of the first entry held (`last_index() + 1` if none).
    pub fn first_index(&self) -> u64 {
        let st = self.sh.st.borrow();
        st.log.locs.front().map_or(st.log.last + 1, |l| l.index)
    }

    /// The last durable entry index (or the checkpoint index, if larger).
    pub fn last_index(&self) -> u64 {
        self.sh.st.borrow().log.last
    }

    pub fn hard_state(&self) -> Option<HardState> {
        self.sh.st.borrow().log.hard_state
    }

    pub fn checkpoint(&self) -> Option<Checkpoint> {
        self.sh.st.borrow().log.checkpoint
    }

    pub fn stats(&self) -> WalStats {
        self.sh.st.borrow().stats
    }

    /// The durable end: where the next batch will be written.
    pub fn position(&self) -> WalPosition {
        let st = self.sh.st.borrow();
        WalPosition {
            segment: st
                .segments
                .last()
                .map(|s| s.file.path.clone())
                .unwrap_or_default(),
            offset: st.write_pos,
        }
    }

    /// Paths of the live segments, oldest first.
    pub fn segment_paths(&self) -> Vec<PathBuf> {
        self.sh
            .st
            .borrow()
            .segments
            .iter()
            .map(|s| s.file.path.clone())
            .collect()
    }

    /// Why the WAL is poisoned, if it is.
    pub fn poisoned(&self) -> Option<String> {
        self.sh.st.borrow().poison.as_ref().map(|p| p.cause.clone())
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        // The flusher writes what is queued, then exits and drops its Rc.
        self.sh.st.borrow_mut().begin_close();
    }
}

impl State {
    fn new(log: LogState, segments: Vec<Segment>, write_pos: u64, next_batch_seq: u64) -> State {
        let accepted = LogState {
            locs: VecDeque::new(),
            last: log.last,
            checkpoint: log.checkpoint,
            hard_state: log.hard_state,
            metadata: log.metadata.clone(),
        };
        State {
            pending: VecDeque::new(),
            next_ticket: 1,
            durable_ticket: 0,
            in_flight: None,
            accepted,
            poison: None,
            closing: false,
            flusher_done: false,
            closed: false,
            flusher_waker: None,
            waiters: Vec::new(),
            segments,
            write_pos,
            next_batch_seq,
            log,
            prepared: None,
            stats: WalStats::default(),
        }
    }

    fn begin_close(&mut self) {
        self.closing = true;
        if let Some(w) = self.flusher_waker.take() {
            w.wake();
        }
    }

    fn wake_waiters(&mut self) {
        for w in self.waiters.drain(..) {
            w.wake();
        }
    }
}

impl Shared {
    /// Validates and encodes an append and queues it. Returns its ticket.
    fn enqueue(&self, records: &[Record]) -> Result<u64, WalError> {
        let mut st = self.st.borrow_mut();
        if let Some(p) = &st.poison {
            return Err(WalError::Poisoned {
                cause: p.cause.clone(),
            });
        }
        if st.closing {
            return Err(WalError::Closed);
        }
        if records.is_empty() {
            // A barrier: wait for everything queued so far.
            return Ok(st.next_ticket - 1);
        }
        let size: u64 = records.iter().map(|r| format::record_len(r) as u64).sum();
        if size > self.max_append {
            return Err(WalError::TooLarge {
                what: "append",
                size,
                max: self.max_append,
            });
        }
        let mut scratch = st.accepted.clone();
        for r in records {
            scratch
                .check(r)
                .map_err(|what| WalError::OutOfOrder { what })?;
            scratch.apply(r, None);
        }
        st.accepted = scratch;
        let mut bytes = Vec::with_capacity(size as usize);
        let mut metas = Vec::with_capacity(records.len());
        for r in records {
            let off = bytes.len() as u32;
            format::encode_record(r, &mut bytes);
            let meta = match r {
                Record::Entry(e) => Record::Entry(Entry {
                    index: e.index,
                    term: e.term,
                    data: Bytes::new(),
                }),
                other => other.clone(),
            };
            metas.push((meta, off, bytes.len() as u32 - off));
        }
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.stats.appends += 1;
        st.stats.records += records.len() as u64;
        st.pending.push_back(Pending {
            ticket,
            bytes,
            metas,
        });
        if let Some(w) = st.flusher_waker.take() {
            w.wake();
        }
        Ok(ticket)
    }

    fn poll_durable(&self, ticket: u64, waker: &Waker) -> Poll<Result<(), WalError>> {
        let mut st = self.st.borrow_mut();
        if st.durable_ticket >= ticket {
            return Poll::Ready(Ok(()));
        }
        if let Some(p) = &st.poison {
            if let Some((a, b, op, path, kind, msg)) = &p.failed {
                if (*a..=*b).contains(&ticket) {
                    return Poll::Ready(Err(WalError::Io {
                        op,
                        path: path.clone(),
                        source: io::Error::new(*kind, msg.clone()),
                    }));
                }
            }
            return Poll::Ready(Err(WalError::Poisoned {
                cause: p.cause.clone(),
            }));
        }
        if st.flusher_done {
            return Poll::Ready(Err(WalError::Closed));
        }
        st.waiters.push(waker.clone());
        Poll::Pending
    }

    /// I6: never write again; fail the batch in flight with `err` and every
    /// other waiting append with `Poisoned`.
    fn poison(&self, err: WalError) {
        let mut st = self.st.borrow_mut();
        let failed = match (&err, st.in_flight) {
            (WalError::Io { op, path, source }, Some((a, b))) => {
                Some((a, b, *op, path.clone(), source.kind(), source.to_string()))
            }
            _ => None,
        };
        st.poison = Some(Poison {
            cause: err.to_string(),
            failed,
        });
        st.pending.clear();
        st.wake_waiters();
    }
}

/// The group-commit loop: one task per `Wal`.
async fn flusher(sh: Rc<Shared>) {
    loop {
        let work = poll_fn(|cx| {
            let mut st = sh.st.borrow_mut();
            if st.poison.is_some() {
                Poll::Ready(false)
            } else if !st.pending.is_empty() {
                Poll::Ready(true)
            } else if st.closing {
                Poll::Ready(false)
            } else {
                st.flusher_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        if !work {
            break;
        }
        if let Err(e) = commit(&sh).await {
            sh.poison(e);
            break;
        }
        spawn_prepare(&sh);
    }
    let mut st = sh.st.borrow_mut();
    st.flusher_done = true;
    st.wake_waiters();
}

/// Writes everything queued (that fits the active segment) as one batch and
/// makes it durable.
async fn commit(sh: &Rc<Shared>) -> Result<(), WalError> {
    let mut rotated = false;
    loop {
        let (fits, need) = {
            let st = sh.st.borrow();
            let (Some(seg), Some(p)) = (st.segments.last(), st.pending.front()) else {
                return Ok(());
            };
            let need = format::padded_batch_len(p.bytes.len());
            (st.write_pos + need <= seg.size, need)
        };
        if fits {
            break;
        }
        if rotated {
            // Cannot happen: appends are limited to a quarter segment. Fail
            // (and poison) rather than rotate forever.
            return Err(WalError::TooLarge {
                what: "batch",
                size: need,
                max: sh.opts.segment_size,
            });
        }
        new_segment(sh).await?;
        rotated = true;
    }
    // Take the longest prefix of the queue that fits, build the batch.
    let (file, seg_seq, pos, buf, taken, padded) = {
        let mut st = sh.st.borrow_mut();
        let Some(seg) = st.segments.last() else {
            return Ok(());
        };
        let (file, seg_seq, room) = (seg.file.clone(), seg.seq, seg.size - st.write_pos);
        let mut body = 0usize;
        let mut k = 0;
        for p in &st.pending {
            let next = body + p.bytes.len();
            if k > 0 && (next > MAX_BATCH_BODY || format::padded_batch_len(next) > room) {
                break;
            }
            body = next;
            k += 1;
        }
        let taken: Vec<Pending> = st.pending.drain(..k).collect();
        let count: usize = taken.iter().map(|p| p.metas.len()).sum();
        let padded = format::padded_batch_len(body);
        let mut buf = file.dma.alloc_dma_buffer(padded as usize);
        {
            let b = buf.as_bytes_mut();
            let hdr = BatchHeader {
                body_len: body as u32,
                seq: st.next_batch_seq,
                count: count as u32,
            };
            hdr.encode(sh.nonce, &mut b[..BATCH_HEADER_LEN]);
            let mut off = BATCH_HEADER_LEN;
            for p in &taken {
                b[off..off + p.bytes.len()].copy_from_slice(&p.bytes);
                off += p.bytes.len();
            }
            // DMA buffers are not initialised: the padding must be zeros.
            b[off..].fill(0);
        }
        if let (Some(a), Some(z)) = (taken.first(), taken.last()) {
            st.in_flight = Some((a.ticket, z.ticket));
        }
        (file, seg_seq, st.write_pos, buf, taken, padded)
    };

    failpoint!("wal::append::before_write", &file.path);
    file.write_at(buf, pos).await?;
    failpoint!("wal::append::after_write", &file.path);
    failpoint!("wal::append::before_fsync", &file.path);
    file.sync(sh.opts.sync).await?;
    failpoint!("wal::append::after_fsync", &file.path);

    // Durable: publish.
    let mut st = sh.st.borrow_mut();
    let mut off = pos + BATCH_HEADER_LEN as u64;
    let mut max_entry = None;
    let mut record_bytes = 0u64;
    for p in &taken {
        for (r, o, len) in &p.metas {
            let loc = match r {
                Record::Entry(e) => {
                    max_entry = Some(e.index);
                    Some(Loc {
                        index: e.index,
                        term: e.term,
                        seg_seq,
                        offset: off + u64::from(*o),
                        len: *len,
                    })
                }
                _ => None,
            };
            st.log.apply(r, loc);
        }
        off += p.bytes.len() as u64;
        record_bytes += p.bytes.len() as u64;
    }
    if let Some(m) = max_entry {
        if let Some(seg) = st.segments.last_mut() {
            seg.max_entry = Some(seg.max_entry.map_or(m, |x| x.max(m)));
        }
    }
    st.write_pos = pos + padded;
    st.next_batch_seq += 1;
    st.in_flight = None;
    if let Some(last) = taken.last() {
        st.durable_ticket = last.ticket;
    }
    st.stats.batches += 1;
    st.stats.syncs += 1;
    st.stats.bytes_written += padded;
    st.stats.record_bytes += record_bytes;
    st.wake_waiters();
    Ok(())
}

/// Takes the next segment into use: header block and first batch (metadata,
/// latest hard state and checkpoint) written and synced under the `.tmp`
/// name, then renamed and the directory fsynced. Also used by `create`.
async fn new_segment(sh: &Rc<Shared>) -> Result<(), WalError> {
    let (seq, first_index, prepared, records, batch_seq, first) = {
        let mut st = sh.st.borrow_mut();
        let seq = st.segments.last().map_or(0, |s| s.seq + 1);
        let mut records = vec![Record::Metadata(st.log.metadata.clone())];
        records.extend(st.log.hard_state.map(Record::HardState));
        records.extend(st.log.checkpoint.map(Record::Checkpoint));
        (
            seq,
            st.log.last + 1,
            st.prepared.take(),
            records,
            st.next_batch_seq,
            st.segments.is_empty(),
        )
    };
    let size = if first {
        sh.opts.first_segment_size.min(sh.opts.segment_size)
    } else {
        sh.opts.segment_size
    };
    let mut f = match prepared {
        Some(t) => t.await?,
        None => segment::prepare(&sh.dir, seq, size, sh.opts.sync).await?,
    };
    let tmp_path = f.path.clone();
    let mut body = Vec::new();
    for r in &records {
        format::encode_record(r, &mut body);
    }
    let padded = format::padded_batch_len(body.len());
    let header = SegmentHeader {
        seq,
        first_index,
        nonce: sh.nonce,
        segment_size: size,
    }
    .encode_block();
    let mut buf = f.dma.alloc_dma_buffer((BLOCK + padded) as usize);
    {
        let b = buf.as_bytes_mut();
        b.fill(0);
        b[..BLOCK as usize].copy_from_slice(&header);
        let at = BLOCK as usize;
        BatchHeader {
            body_len: body.len() as u32,
            seq: batch_seq,
            count: records.len() as u32,
        }
        .encode(sh.nonce, &mut b[at..at + BATCH_HEADER_LEN]);
        b[at + BATCH_HEADER_LEN..at + BATCH_HEADER_LEN + body.len()].copy_from_slice(&body);
    }
    f.write_at(buf, 0).await?;
    f.dma
        .fdatasync()
        .await
        .map_err(|e| WalError::io("fdatasync", &tmp_path, e))?;
    failpoint!("wal::rotate::before_rename", &tmp_path);
    let final_path = sh.dir.join(format::segment_name(seq, first_index));
    fs::rename(&tmp_path, &final_path).map_err(|e| WalError::io("rename", &tmp_path, e))?;
    segment::sync_dir(&sh.dir)?;
    f.path = final_path;
    failpoint!("wal::rotate::after_rename", &f.path);
    {
        let mut st = sh.st.borrow_mut();
        let rotated = !st.segments.is_empty();
        st.segments.push(Segment {
            seq,
            size,
            file: Rc::new(f),
            max_entry: None,
        });
        st.write_pos = BLOCK + padded;
        st.next_batch_seq += 1;
        if rotated {
            st.stats.rotations += 1;
        }
    }
    spawn_prepare(sh);
    Ok(())
}

/// Starts preparing the segment after the active one, if configured, once
/// the active one is a quarter full (appends are at most a quarter segment,
/// so three quarters of a segment are written before the next is needed).
/// Not at once: a fresh member would otherwise zero-fill a second 64 MiB
/// while it starts and takes its first writes.
fn spawn_prepare(sh: &Rc<Shared>) {
    if !sh.opts.prepare_next {
        return;
    }
    let mut st = sh.st.borrow_mut();
    if st.prepared.is_some() {
        return;
    }
    let Some((seq, size)) = st.segments.last().map(|s| (s.seq + 1, s.size)) else {
        return;
    };
    if st.write_pos < size / 4 {
        return;
    }
    let (dir, size, sync) = (sh.dir.clone(), sh.opts.segment_size, sh.opts.sync);
    st.prepared = Some(glommio::spawn_local(async move {
        segment::prepare(&dir, seq, size, sync).await
    }));
}

fn check_opts(o: &WalOptions) -> Result<(), WalError> {
    if !o.segment_size.is_multiple_of(BLOCK)
        || o.segment_size < 16 * BLOCK
        || o.segment_size > 1 << 40
    {
        return Err(WalError::Unsupported {
            what: format!(
                "segment size {} (must be a multiple of {BLOCK}, at least {})",
                o.segment_size,
                16 * BLOCK
            ),
        });
    }
    let first = o.first_segment_size.min(o.segment_size);
    if !first.is_multiple_of(BLOCK) || first < 16 * BLOCK {
        return Err(WalError::Unsupported {
            what: format!(
                "first segment size {} (must be a multiple of {BLOCK}, at least {})",
                o.first_segment_size,
                16 * BLOCK
            ),
        });
    }
    if o.max_wals == 0 {
        return Err(WalError::Unsupported {
            what: "max_wals 0".into(),
        });
    }
    Ok(())
}

fn remove_tmps(tmps: &[PathBuf]) -> Result<(), WalError> {
    for t in tmps {
        match fs::remove_file(t) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(WalError::io("remove", t, e)),
        }
    }
    Ok(())
}

/// A random u64 without a rand dependency: std's per-process random hasher
/// keys, mixed with the time and pid.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(now);
    h.write_u32(std::process::id());
    h.finish()
}
