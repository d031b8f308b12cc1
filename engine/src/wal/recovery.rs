//! Recovery, the pure part: scanning one segment's bytes into batches, and
//! replaying records into the log state (invariant I5). File handling, the
//! torn-tail repair and the corrupt/torn decision per segment live in `log.rs`.

use std::collections::VecDeque;

use bytes::Bytes;

use super::format::{self, BatchHeader, BatchProbe, SegmentHeader, BATCH_HEADER_LEN, BLOCK};
use super::{Checkpoint, Entry, HardState, Record};

/// A valid batch found in a segment.
#[derive(Debug)]
pub(super) struct ScannedBatch {
    pub offset: u64,
    pub seq: u64,
    /// Records with their file offsets.
    pub records: Vec<(u64, Record)>,
}

/// What one segment holds.
#[derive(Debug)]
pub(super) struct SegmentScan {
    pub batches: Vec<ScannedBatch>,
    /// Where the valid batches end: the next batch goes here.
    pub end: u64,
    /// Why the scan stopped at `end` when it was not a zero header: the start
    /// of a torn tail, or of corruption.
    pub damage: Option<String>,
    /// End of the last block at or after `end` that holds a non-zero byte
    /// (`== end` if everything from `end` on is zero).
    pub nonzero_end: u64,
}

/// Where a scan reads a segment's bytes from: a byte slice (tests, and
/// anything already in memory) or the file itself through a bounded window
/// (`FileWindow`), so opening a 64 MiB segment does not hold 64 MiB.
pub(super) trait SegmentSource {
    /// Up to `len` bytes at `pos`; fewer (possibly none) where the file ends.
    /// The slice is valid until the next call.
    fn bytes_at(&mut self, pos: u64, len: usize) -> std::io::Result<&[u8]>;
}

impl SegmentSource for &[u8] {
    fn bytes_at(&mut self, pos: u64, len: usize) -> std::io::Result<&[u8]> {
        let start = (pos as usize).min(self.len());
        let end = start.saturating_add(len).min(self.len());
        Ok(&self[start..end])
    }
}

/// A segment file read through one reusable buffer of at least
/// `WINDOW` bytes (larger only while one batch needs more).
pub(super) struct FileWindow<'a> {
    file: &'a std::fs::File,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    base: u64,
}

/// Read size of a `FileWindow`.
const WINDOW: usize = 1 << 20;

impl<'a> FileWindow<'a> {
    pub fn new(file: &'a std::fs::File) -> FileWindow<'a> {
        FileWindow {
            file,
            buf: Vec::new(),
            base: 0,
        }
    }
}

impl SegmentSource for FileWindow<'_> {
    fn bytes_at(&mut self, pos: u64, len: usize) -> std::io::Result<&[u8]> {
        let have = pos >= self.base && pos + len as u64 <= self.base + self.buf.len() as u64;
        if !have {
            use std::os::unix::fs::FileExt;
            let want = len.max(WINDOW);
            self.buf.resize(want, 0);
            let mut got = 0;
            while got < want {
                match self.file.read_at(&mut self.buf[got..], pos + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            self.buf.truncate(got);
            self.base = pos;
        }
        let start = ((pos - self.base) as usize).min(self.buf.len());
        let end = start.saturating_add(len).min(self.buf.len());
        Ok(&self.buf[start..end])
    }
}

/// Why a scan failed.
#[derive(Debug)]
pub(super) enum ScanError {
    /// Corruption that is not a tail question: a bad header, or a valid batch
    /// after the place where the valid batches stop.
    Corrupt(u64, String),
    Io(std::io::Error),
}

impl From<std::io::Error> for ScanError {
    fn from(e: std::io::Error) -> ScanError {
        ScanError::Io(e)
    }
}

/// Scans a segment read from `src` (which may end before the segment size
/// if the file was cut; the rest reads as zeros). Reads the whole segment,
/// one window at a time: the valid batches, then every block after them
/// (no valid batch may follow the end; the tail's last non-zero block).
pub(super) fn scan_segment(
    mut src: impl SegmentSource,
    nonce: Option<u64>,
) -> Result<SegmentScan, ScanError> {
    let header = SegmentHeader::decode(src.bytes_at(0, BLOCK as usize)?)
        .map_err(|w| ScanError::Corrupt(0, w))?;
    if let Some(n) = nonce {
        if header.nonce != n {
            return Err(ScanError::Corrupt(
                0,
                format!(
                    "segment nonce {:#x} differs from the wal's {n:#x}",
                    header.nonce
                ),
            ));
        }
    }
    // Never look past the preallocated size, whatever the file length is.
    let size = header.segment_size;
    let mut batches = Vec::new();
    let mut pos = BLOCK;
    let mut damage = None;
    while pos + BATCH_HEADER_LEN as u64 <= size {
        match BatchHeader::probe(src.bytes_at(pos, BATCH_HEADER_LEN)?, header.nonce) {
            BatchProbe::Zero => break,
            BatchProbe::Bad(what) => {
                damage = Some(what.to_string());
                break;
            }
            BatchProbe::Valid(h) => {
                let body = if pos + h.padded_len() > size {
                    Err(format!(
                        "body of {} bytes runs past the end of the segment",
                        h.body_len
                    ))
                } else {
                    let at = src.bytes_at(pos, BATCH_HEADER_LEN + h.body_len as usize)?;
                    decode_body(at, &h, pos)
                };
                match body {
                    Ok(records) => {
                        batches.push(ScannedBatch {
                            offset: pos,
                            seq: h.seq,
                            records,
                        });
                        pos += h.padded_len();
                    }
                    Err(what) => {
                        damage = Some(format!("batch seq {}: {what}", h.seq));
                        break;
                    }
                }
            }
        }
    }
    let end = pos.min(size);
    // Nothing after `end` may be a batch of this WAL: by I3 only the batch
    // being written at `end` can have left bytes there, and its later blocks
    // hold record bytes, not headers that pass our nonce'd crc. The same
    // pass finds the last non-zero byte of the tail.
    let mut nonzero_end = end;
    let mut chunk_at = end;
    while chunk_at < size {
        let want = (size - chunk_at).min(WINDOW as u64) as usize;
        let chunk = src.bytes_at(chunk_at, want)?;
        if chunk.is_empty() {
            break; // the file ends here: the rest reads as zeros
        }
        if let Some(i) = chunk.iter().rposition(|&x| x != 0) {
            nonzero_end = chunk_at + format::align_up(i as u64 + 1);
        }
        // Blocks are BLOCK-aligned and `end`, `chunk_at` are too.
        let mut off = 0usize;
        while off < chunk.len() {
            let b = chunk_at + off as u64;
            if b > end && b + BATCH_HEADER_LEN as u64 <= size {
                if let BatchProbe::Valid(h) = BatchHeader::probe(&chunk[off..], header.nonce) {
                    let why = damage.as_deref().unwrap_or("zero header (missing batch)");
                    return Err(ScanError::Corrupt(
                        end,
                        format!(
                            "{why} at offset {end}, but a valid batch (seq {}) follows at offset {b}",
                            h.seq
                        ),
                    ));
                }
            }
            off += BLOCK as usize;
        }
        chunk_at += chunk.len() as u64;
    }
    Ok(SegmentScan {
        batches,
        end,
        damage,
        nonzero_end: nonzero_end.min(format::align_up(size)),
    })
}

/// Decodes a batch body: exactly `count` valid records filling exactly
/// `body_len` bytes (the caller checked that they lie inside the segment).
fn decode_body(at: &[u8], h: &BatchHeader, pos: u64) -> Result<Vec<(u64, Record)>, String> {
    if h.count == 0 {
        return Err("empty batch".into());
    }
    let body = at
        .get(BATCH_HEADER_LEN..BATCH_HEADER_LEN + h.body_len as usize)
        .ok_or("body runs past the end of the file")?;
    let mut off = 0usize;
    let mut records = Vec::with_capacity((h.count as usize).min(1 << 16));
    for i in 0..h.count {
        let rest = body.get(off..).unwrap_or(&[]);
        let (r, n) = format::decode_record(rest).map_err(|w| {
            format!(
                "record {i} at offset {}: {w}",
                pos + (BATCH_HEADER_LEN + off) as u64
            )
        })?;
        records.push((pos + (BATCH_HEADER_LEN + off) as u64, r));
        off += n;
    }
    if off != body.len() {
        return Err(format!(
            "{} records end at body byte {off}, body has {}",
            h.count,
            body.len()
        ));
    }
    Ok(records)
}

/// Where an entry's record lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Loc {
    pub index: u64,
    pub term: u64,
    pub seg_seq: u64,
    /// File offset of the record header.
    pub offset: u64,
    /// Encoded record length.
    pub len: u32,
}

/// The log's logical state, shared by recovery and the live writer (which
/// applies a batch after it is durable). Also used, on a copy, to validate
/// appends before they are queued.
#[derive(Clone, Debug, Default)]
pub(super) struct LogState {
    /// Entry locations, contiguous by index (`locs[i].index == first + i`),
    /// latest version of each index.
    pub locs: VecDeque<Loc>,
    /// Invariant: `last >= checkpoint.index`; `last` is the last entry's index
    /// if there are entries after the checkpoint.
    pub last: u64,
    pub checkpoint: Option<Checkpoint>,
    pub hard_state: Option<HardState>,
    pub metadata: Bytes,
}

impl LogState {
    pub fn checkpoint_index(&self) -> u64 {
        self.checkpoint.map_or(0, |c| c.index)
    }

    /// Checks a record against I5 without changing anything.
    pub fn check(&self, r: &Record) -> Result<(), String> {
        match r {
            Record::Entry(e) => {
                let ci = self.checkpoint_index();
                if e.index <= ci || e.index > self.last + 1 {
                    return Err(format!(
                        "entry index {} out of order: expected one in ({ci}, {}]",
                        e.index,
                        self.last + 1
                    ));
                }
            }
            Record::Checkpoint(c) => {
                if c.index < self.checkpoint_index() {
                    return Err(format!(
                        "checkpoint index {} is below the previous checkpoint {}",
                        c.index,
                        self.checkpoint_index()
                    ));
                }
            }
            Record::HardState(_) | Record::Metadata(_) => {}
        }
        Ok(())
    }

    /// Applies a checked record. `loc` is where an entry lives (None while
    /// validating, before it has a place).
    pub fn apply(&mut self, r: &Record, loc: Option<Loc>) {
        match r {
            Record::Entry(e) => {
                // Raft's conflict rule: an index <= last replaces the suffix.
                let first = self.locs.front().map(|l| l.index);
                if let Some(f) = first {
                    if e.index < f {
                        self.locs.clear();
                    } else {
                        self.locs.truncate((e.index - f) as usize);
                    }
                }
                if let Some(l) = loc {
                    self.locs.push_back(l);
                }
                self.last = e.index;
            }
            Record::Checkpoint(c) => {
                self.checkpoint = Some(*c);
                if c.index > self.last {
                    // A snapshot past our log: the log restarts after it.
                    self.locs.clear();
                    self.last = c.index;
                }
            }
            Record::HardState(h) => self.hard_state = Some(*h),
            Record::Metadata(m) => self.metadata = m.clone(),
        }
    }
}

/// Entries kept during recovery for `Recovered::entries`, with the same
/// overwrite rule as `LogState::locs` and dropping what a checkpoint covers.
#[derive(Debug, Default)]
pub(super) struct ReplayEntries {
    pub entries: VecDeque<Entry>,
}

impl ReplayEntries {
    pub fn apply(&mut self, r: &Record) {
        match r {
            Record::Entry(e) => {
                if let Some(f) = self.entries.front().map(|x| x.index) {
                    if e.index < f {
                        self.entries.clear();
                    } else {
                        self.entries.truncate((e.index - f) as usize);
                    }
                }
                self.entries.push_back(e.clone());
            }
            Record::Checkpoint(c) => {
                while self.entries.front().is_some_and(|e| e.index <= c.index) {
                    self.entries.pop_front();
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::format::{encode_record, padded_batch_len, SegmentHeader};

    const NONCE: u64 = 0x5eed;
    const SIZE: u64 = 16 * BLOCK;

    fn seg() -> Vec<u8> {
        let mut b = SegmentHeader {
            seq: 0,
            first_index: 1,
            nonce: NONCE,
            segment_size: SIZE,
        }
        .encode_block();
        b.resize(SIZE as usize, 0);
        b
    }

    /// Writes a batch at `pos`, returns the next position.
    fn put_batch(b: &mut [u8], pos: u64, seq: u64, recs: &[Record]) -> u64 {
        let mut body = Vec::new();
        for r in recs {
            encode_record(r, &mut body);
        }
        let h = BatchHeader {
            body_len: body.len() as u32,
            seq,
            count: recs.len() as u32,
        };
        let p = pos as usize;
        h.encode(NONCE, &mut b[p..p + BATCH_HEADER_LEN]);
        b[p + BATCH_HEADER_LEN..p + BATCH_HEADER_LEN + body.len()].copy_from_slice(&body);
        pos + padded_batch_len(body.len())
    }

    fn e(i: u64) -> Record {
        Record::Entry(Entry {
            index: i,
            term: 1,
            data: Bytes::from(vec![i as u8; 100]),
        })
    }

    #[test]
    fn scan_stops_at_zeros_and_reports_clean_end() {
        let mut b = seg();
        let p = put_batch(
            &mut b,
            BLOCK,
            1,
            &[Record::Metadata(Bytes::from_static(b"m"))],
        );
        let p = put_batch(&mut b, p, 2, &[e(1), e(2)]);
        let s = scan_segment(&b[..], Some(NONCE)).unwrap();
        assert_eq!(s.batches.len(), 2);
        assert_eq!(s.end, p);
        assert_eq!(s.damage, None);
        assert_eq!(s.nonzero_end, p);
    }

    #[test]
    fn damaged_last_batch_is_a_tail_not_an_error() {
        let mut b = seg();
        let p = put_batch(&mut b, BLOCK, 1, &[e(1)]);
        let q = put_batch(&mut b, p, 2, &[e(2)]);
        b[p as usize + BATCH_HEADER_LEN + 20] ^= 1;
        let s = scan_segment(&b[..], Some(NONCE)).unwrap();
        assert_eq!(s.batches.len(), 1);
        assert_eq!(s.end, p);
        assert!(s.damage.is_some());
        assert_eq!(s.nonzero_end, q);
    }

    #[test]
    fn damage_followed_by_a_valid_batch_is_corrupt() {
        let mut b = seg();
        let p = put_batch(&mut b, BLOCK, 1, &[e(1)]);
        let q = put_batch(&mut b, p, 2, &[e(2)]);
        put_batch(&mut b, q, 3, &[e(3)]);
        b[p as usize + BATCH_HEADER_LEN + 20] ^= 1;
        let Err(ScanError::Corrupt(off, what)) = scan_segment(&b[..], Some(NONCE)) else {
            panic!("expected corruption")
        };
        assert_eq!(off, p);
        assert!(what.contains("valid batch (seq 3)"), "{what}");
    }

    #[test]
    fn zeroed_middle_batch_followed_by_a_valid_batch_is_corrupt() {
        let mut b = seg();
        let p = put_batch(&mut b, BLOCK, 1, &[e(1)]);
        let q = put_batch(&mut b, p, 2, &[e(2)]);
        put_batch(&mut b, q, 3, &[e(3)]);
        b[p as usize..q as usize].fill(0);
        assert!(scan_segment(&b[..], Some(NONCE)).is_err());
    }

    #[test]
    fn a_batch_of_another_wal_is_not_ours() {
        let mut b = seg();
        let p = put_batch(&mut b, BLOCK, 1, &[e(1)]);
        put_batch(&mut b, p, 2, &[e(2)]);
        let s = scan_segment(&b[..], Some(NONCE)).unwrap();
        assert_eq!(s.batches.len(), 2);
        assert!(
            scan_segment(&b[..], Some(NONCE + 1)).is_err(),
            "segment nonce must match"
        );
    }

    #[test]
    fn cut_file_reads_as_zeros() {
        let mut b = seg();
        let p = put_batch(&mut b, BLOCK, 1, &[e(1)]);
        put_batch(&mut b, p, 2, &[e(2)]);
        for cut in [
            BLOCK as usize,
            p as usize,
            p as usize + 10,
            p as usize + 100,
        ] {
            let s = scan_segment(&b[..cut], Some(NONCE)).unwrap();
            assert_eq!(
                s.end,
                if cut <= BLOCK as usize { BLOCK } else { p },
                "cut {cut}"
            );
        }
    }

    /// The file scan (bounded window) finds exactly what the in-memory scan
    /// finds, with batches larger than the window and a tail beyond it.
    #[test]
    fn file_window_scan_equals_slice_scan() {
        let size = 4u64 << 20;
        let mut b = SegmentHeader {
            seq: 0,
            first_index: 1,
            nonce: NONCE,
            segment_size: size,
        }
        .encode_block();
        b.resize(size as usize, 0);
        let big = Record::Entry(Entry {
            index: 2,
            term: 1,
            data: Bytes::from(vec![7u8; (WINDOW * 3) / 2]),
        });
        let p = put_batch(&mut b, BLOCK, 1, &[e(1)]);
        let p = put_batch(&mut b, p, 2, &[big]);
        let q = put_batch(&mut b, p, 3, &[e(3)]);
        let r = put_batch(&mut b, q, 4, &[e(4)]);
        let path = std::env::temp_dir().join(format!("ferrocd-scan-{}", std::process::id()));
        let summary = |s: &SegmentScan| {
            (
                s.batches
                    .iter()
                    .map(|b| (b.offset, b.seq, b.records.len()))
                    .collect::<Vec<_>>(),
                s.end,
                s.damage.clone(),
                s.nonzero_end,
            )
        };
        let by_file = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            let f = std::fs::File::open(&path).unwrap();
            scan_segment(FileWindow::new(&f), Some(NONCE))
        };
        // Clean, then a torn last batch, then a file cut inside the big batch.
        let clean = scan_segment(&b[..], Some(NONCE)).unwrap();
        assert_eq!(clean.end, r);
        assert_eq!(summary(&by_file(&b).unwrap()), summary(&clean));
        let mut torn = b.clone();
        torn[q as usize + BATCH_HEADER_LEN + 3] ^= 0xff;
        let t = scan_segment(&torn[..], Some(NONCE)).unwrap();
        assert_eq!((t.end, t.nonzero_end), (q, r));
        assert_eq!(summary(&by_file(&torn).unwrap()), summary(&t));
        let cut = &b[..(p as usize + WINDOW)];
        let c = scan_segment(cut, Some(NONCE)).unwrap();
        assert_eq!(summary(&by_file(cut).unwrap()), summary(&c));
        // Damage in the big batch with valid batches after it, beyond the
        // first window: corrupt, at the same offset both ways.
        let mut mid = b.clone();
        mid[p as usize + BATCH_HEADER_LEN + 10] ^= 0xff;
        let Err(ScanError::Corrupt(o1, _)) = scan_segment(&mid[..], Some(NONCE)) else {
            panic!("expected corruption")
        };
        let Err(ScanError::Corrupt(o2, w)) = by_file(&mid) else {
            panic!("expected corruption")
        };
        assert_eq!((o1, o2), (p, p), "{w}");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn log_state_applies_raft_overwrites_and_checkpoints() {
        let mut st = LogState::default();
        let loc = |i: u64, t: u64| Loc {
            index: i,
            term: t,
            seg_seq: 0,
            offset: 0,
            len: 0,
        };
        for i in 1..=5 {
            let r = e(i);
            st.check(&r).unwrap();
            st.apply(&r, Some(loc(i, 1)));
        }
        assert!(st.check(&e(7)).is_err(), "gap");
        let r = Record::Entry(Entry {
            index: 3,
            term: 2,
            data: Bytes::new(),
        });
        st.check(&r).unwrap();
        st.apply(&r, Some(loc(3, 2)));
        assert_eq!(st.last, 3);
        assert_eq!(
            st.locs
                .iter()
                .map(|l| (l.index, l.term))
                .collect::<Vec<_>>(),
            vec![(1, 1), (2, 1), (3, 2)]
        );
        let c = Record::Checkpoint(Checkpoint { index: 2, term: 1 });
        st.check(&c).unwrap();
        st.apply(&c, None);
        assert!(st.check(&e(2)).is_err(), "at or below the checkpoint");
        assert!(st
            .check(&Record::Checkpoint(Checkpoint { index: 1, term: 1 }))
            .is_err());
        // A snapshot past the log.
        st.apply(
            &Record::Checkpoint(Checkpoint {
                index: 100,
                term: 5,
            }),
            None,
        );
        assert_eq!(st.last, 100);
        assert!(st.locs.is_empty());
        st.check(&e(101)).unwrap();
        assert!(st.check(&e(100)).is_err());
    }
}
