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

/// Scans a segment. `bytes` is the file's content (it may be shorter than the
/// segment size if the file was cut; the rest reads as zeros). `Err` is
/// `(offset, what)` of corruption that is not a tail question: a bad header,
/// or a valid batch after the place where the valid batches stop.
pub(super) fn scan_segment(bytes: &[u8], nonce: Option<u64>) -> Result<SegmentScan, (u64, String)> {
    let header = SegmentHeader::decode(bytes).map_err(|w| (0, w))?;
    if let Some(n) = nonce {
        if header.nonce != n {
            return Err((
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
    let bytes = bytes.get(..bytes.len().min(size as usize)).unwrap_or(bytes);
    let mut batches = Vec::new();
    let mut pos = BLOCK;
    let mut damage = None;
    while pos + BATCH_HEADER_LEN as u64 <= size {
        let at = bytes.get(pos as usize..).unwrap_or(&[]);
        match BatchHeader::probe(at, header.nonce) {
            BatchProbe::Zero => break,
            BatchProbe::Bad(what) => {
                damage = Some(what.to_string());
                break;
            }
            BatchProbe::Valid(h) => match decode_body(at, &h, pos, size) {
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
            },
        }
    }
    let end = pos.min(size);
    // Nothing after `end` may be a batch of this WAL: by I3 only the batch
    // being written at `end` can have left bytes there, and its later blocks
    // hold record bytes, not headers that pass our nonce'd crc.
    let mut b = end + BLOCK;
    while b + BATCH_HEADER_LEN as u64 <= size {
        if let BatchProbe::Valid(h) =
            BatchHeader::probe(bytes.get(b as usize..).unwrap_or(&[]), header.nonce)
        {
            let why = damage.as_deref().unwrap_or("zero header (missing batch)");
            return Err((
                end,
                format!(
                    "{why} at offset {end}, but a valid batch (seq {}) follows at offset {b}",
                    h.seq
                ),
            ));
        }
        b += BLOCK;
    }
    let tail = bytes.get(end as usize..).unwrap_or(&[]);
    let nonzero_end = match tail.iter().rposition(|&x| x != 0) {
        Some(i) => end + format::align_up(i as u64 + 1),
        None => end,
    };
    Ok(SegmentScan {
        batches,
        end,
        damage,
        nonzero_end,
    })
}

/// Decodes a batch body: exactly `count` valid records filling exactly
/// `body_len` bytes, all inside the segment.
fn decode_body(
    at: &[u8],
    h: &BatchHeader,
    pos: u64,
    size: u64,
) -> Result<Vec<(u64, Record)>, String> {
    if pos + h.padded_len() > size {
        return Err(format!(
            "body of {} bytes runs past the end of the segment",
            h.body_len
        ));
    }
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
        let s = scan_segment(&b, Some(NONCE)).unwrap();
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
        let s = scan_segment(&b, Some(NONCE)).unwrap();
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
        let (off, what) = scan_segment(&b, Some(NONCE)).unwrap_err();
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
        assert!(scan_segment(&b, Some(NONCE)).is_err());
    }

    #[test]
    fn a_batch_of_another_wal_is_not_ours() {
        let mut b = seg();
        let p = put_batch(&mut b, BLOCK, 1, &[e(1)]);
        put_batch(&mut b, p, 2, &[e(2)]);
        let s = scan_segment(&b, Some(NONCE)).unwrap();
        assert_eq!(s.batches.len(), 2);
        assert!(
            scan_segment(&b, Some(NONCE + 1)).is_err(),
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
