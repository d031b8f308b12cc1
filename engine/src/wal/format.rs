//! The WAL's bytes: segment header, batch header, record framing, file names.
//!
//! Everything here is pure (no I/O) so that every field can be corrupted in a
//! unit test. The layouts repeat engine/FORMAT.md §1; where the two disagree,
//! this file is wrong only if FORMAT.md §1 was changed with a version bump.
//! All integers are fixed-width little-endian. Each offset below is built from
//! the previous one plus the previous field's size, so a field cannot silently
//! overlap its neighbour.

use bytes::Bytes;

use super::{Checkpoint, Entry, HardState, Record};

/// The write and padding unit. Every batch starts at a multiple of `BLOCK`
/// and is zero-padded to the next one, so a write never covers a block that
/// holds acknowledged data (module doc, "The tail block"). 4096 is the
/// physical sector size of the disks we run on and the page size; it must be a
/// multiple of the O_DIRECT alignment the file reports (checked at open).
pub const BLOCK: u64 = 4096;

/// Current on-disk format version (FORMAT.md §1, "Version history").
pub const VERSION: u32 = 1;

// ---------------------------------------------------------------------------
// Segment header: block 0 of every segment.
//
// | off | size | field        |
// |   0 |    8 | magic        | b"FRCDWAL\0"
// |   8 |    4 | version      | VERSION
// |  12 |    4 | block_size   | BLOCK
// |  16 |    8 | seq          | segment sequence number, = file name's first field
// |  24 |    8 | first_index  | = file name's second field
// |  32 |    8 | nonce        | random per WAL directory, same in every segment
// |  40 |    8 | segment_size | preallocated length of this file
// |  48 |    4 | crc32        | crc32fast over bytes [0, 48)
// |  52 | 4044 | zero         |
// ---------------------------------------------------------------------------

pub const SEGMENT_MAGIC: [u8; 8] = *b"FRCDWAL\0";
const SH_MAGIC: usize = 0;
const SH_VERSION: usize = SH_MAGIC + 8;
const SH_BLOCK_SIZE: usize = SH_VERSION + 4;
const SH_SEQ: usize = SH_BLOCK_SIZE + 4;
const SH_FIRST_INDEX: usize = SH_SEQ + 8;
const SH_NONCE: usize = SH_FIRST_INDEX + 8;
const SH_SEGMENT_SIZE: usize = SH_NONCE + 8;
const SH_CRC: usize = SH_SEGMENT_SIZE + 8;
/// Bytes of the segment header that carry meaning; the rest of block 0 is zero.
pub const SEGMENT_HEADER_LEN: usize = SH_CRC + 4;

/// The decoded segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub seq: u64,
    pub first_index: u64,
    pub nonce: u64,
    pub segment_size: u64,
}

impl SegmentHeader {
    /// Encodes block 0 (the whole block, zero-padded).
    pub fn encode_block(&self) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK as usize];
        b[SH_MAGIC..SH_VERSION].copy_from_slice(&SEGMENT_MAGIC);
        b[SH_VERSION..SH_BLOCK_SIZE].copy_from_slice(&VERSION.to_le_bytes());
        b[SH_BLOCK_SIZE..SH_SEQ].copy_from_slice(&(BLOCK as u32).to_le_bytes());
        b[SH_SEQ..SH_FIRST_INDEX].copy_from_slice(&self.seq.to_le_bytes());
        b[SH_FIRST_INDEX..SH_NONCE].copy_from_slice(&self.first_index.to_le_bytes());
        b[SH_NONCE..SH_SEGMENT_SIZE].copy_from_slice(&self.nonce.to_le_bytes());
        b[SH_SEGMENT_SIZE..SH_CRC].copy_from_slice(&self.segment_size.to_le_bytes());
        let crc = crc32fast::hash(&b[..SH_CRC]);
        b[SH_CRC..SEGMENT_HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and verifies a segment header. `Err` says what is wrong.
    pub fn decode(b: &[u8]) -> Result<SegmentHeader, String> {
        let h = b
            .get(..SEGMENT_HEADER_LEN)
            .ok_or("segment shorter than its header")?;
        if h[SH_MAGIC..SH_VERSION] != SEGMENT_MAGIC {
            return Err("bad segment magic".into());
        }
        let crc = le_u32(h, SH_CRC);
        if crc != crc32fast::hash(&h[..SH_CRC]) {
            return Err("segment header crc mismatch".into());
        }
        let version = le_u32(h, SH_VERSION);
        if version != VERSION {
            return Err(format!(
                "unsupported segment format version {version} (this build reads {VERSION})"
            ));
        }
        let block = le_u32(h, SH_BLOCK_SIZE);
        if u64::from(block) != BLOCK {
            return Err(format!(
                "unsupported block size {block} (this build uses {BLOCK})"
            ));
        }
        let hdr = SegmentHeader {
            seq: le_u64(h, SH_SEQ),
            first_index: le_u64(h, SH_FIRST_INDEX),
            nonce: le_u64(h, SH_NONCE),
            segment_size: le_u64(h, SH_SEGMENT_SIZE),
        };
        if hdr.segment_size < 2 * BLOCK || !hdr.segment_size.is_multiple_of(BLOCK) {
            return Err(format!("bad segment size {}", hdr.segment_size));
        }
        Ok(hdr)
    }
}

// ---------------------------------------------------------------------------
// Batch header: at the start of every commit (one write + one fdatasync),
// always at a multiple of BLOCK.
//
// | off | size | field    |
// |   0 |    4 | magic    | 0x4843_5442 (b"BTCH" read as LE u32)
// |   4 |    4 | body_len | bytes of records after this header, padding excluded
// |   8 |    8 | seq      | batch sequence number: +1 per batch over the whole log
// |  16 |    4 | count    | number of records in the body (>= 1)
// |  20 |    4 | crc32    | crc32fast over nonce (8 bytes LE) ++ bytes [0, 20)
// then `body_len` bytes of records, then zeros up to the next multiple of BLOCK.
//
// The nonce (from the segment header) in the header crc means a record payload
// that happens to contain a batch header's bytes (client data is arbitrary)
// cannot pass as a batch of this WAL without knowing its nonce.
// ---------------------------------------------------------------------------

pub const BATCH_MAGIC: u32 = u32::from_le_bytes(*b"BTCH");
const BH_MAGIC: usize = 0;
const BH_BODY_LEN: usize = BH_MAGIC + 4;
const BH_SEQ: usize = BH_BODY_LEN + 4;
const BH_COUNT: usize = BH_SEQ + 8;
const BH_CRC: usize = BH_COUNT + 4;
pub const BATCH_HEADER_LEN: usize = BH_CRC + 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub body_len: u32,
    pub seq: u64,
    pub count: u32,
}

/// What is found at a block boundary where a batch may start.
#[derive(Debug, PartialEq, Eq)]
pub enum BatchProbe {
    /// All header bytes are zero: preallocated space, the end of the log.
    Zero,
    /// Not a valid header of this WAL (bad magic or crc).
    Bad(&'static str),
    Valid(BatchHeader),
}

impl BatchHeader {
    pub fn encode(&self, nonce: u64, out: &mut [u8]) {
        out[BH_MAGIC..BH_BODY_LEN].copy_from_slice(&BATCH_MAGIC.to_le_bytes());
        out[BH_BODY_LEN..BH_SEQ].copy_from_slice(&self.body_len.to_le_bytes());
        out[BH_SEQ..BH_COUNT].copy_from_slice(&self.seq.to_le_bytes());
        out[BH_COUNT..BH_CRC].copy_from_slice(&self.count.to_le_bytes());
        let crc = batch_crc(nonce, &out[..BH_CRC]);
        out[BH_CRC..BATCH_HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    }

    /// Looks at the bytes at a block boundary. Reads past the end of `b`
    /// count as zeros (a file cut short reads as zeros past its end).
    pub fn probe(b: &[u8], nonce: u64) -> BatchProbe {
        let mut h = [0u8; BATCH_HEADER_LEN];
        let n = b.len().min(BATCH_HEADER_LEN);
        h[..n].copy_from_slice(&b[..n]);
        if h.iter().all(|&x| x == 0) {
            return BatchProbe::Zero;
        }
        if le_u32(&h, BH_MAGIC) != BATCH_MAGIC {
            return BatchProbe::Bad("bad batch magic");
        }
        if le_u32(&h, BH_CRC) != batch_crc(nonce, &h[..BH_CRC]) {
            return BatchProbe::Bad("batch header crc mismatch");
        }
        BatchProbe::Valid(BatchHeader {
            body_len: le_u32(&h, BH_BODY_LEN),
            seq: le_u64(&h, BH_SEQ),
            count: le_u32(&h, BH_COUNT),
        })
    }

    /// Bytes this batch occupies on disk, padding included.
    pub fn padded_len(&self) -> u64 {
        padded_batch_len(self.body_len as usize)
    }
}

/// Bytes a batch with `body_len` bytes of records occupies, padding included.
pub fn padded_batch_len(body_len: usize) -> u64 {
    align_up((BATCH_HEADER_LEN + body_len) as u64)
}

fn batch_crc(nonce: u64, header: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&nonce.to_le_bytes());
    h.update(header);
    h.finalize()
}

// ---------------------------------------------------------------------------
// Record: `len | type | reserved | crc32 | payload`, back to back in a batch
// body (no padding between records).
//
// | off | size | field    |
// |   0 |    4 | len      | payload length
// |   4 |    1 | type     | 1 Entry, 2 HardState, 3 Checkpoint, 4 Metadata (0 never)
// |   5 |    3 | reserved | zero
// |   8 |    4 | crc32    | crc32fast over bytes [0, 8) ++ payload
// |  12 |  len | payload  | per type:
//   Entry      (type 1): index u64 | term u64 | data (len - 16 bytes)
//   HardState  (type 2): term u64 | vote u64 | commit u64      (len = 24)
//   Checkpoint (type 3): index u64 | term u64                  (len = 16)
//   Metadata   (type 4): opaque bytes                          (len >= 0)
// ---------------------------------------------------------------------------

const RH_LEN: usize = 0;
const RH_TYPE: usize = RH_LEN + 4;
const RH_RESERVED: usize = RH_TYPE + 1;
const RH_CRC: usize = RH_RESERVED + 3;
pub const RECORD_HEADER_LEN: usize = RH_CRC + 4;

pub const TYPE_ENTRY: u8 = 1;
pub const TYPE_HARD_STATE: u8 = 2;
pub const TYPE_CHECKPOINT: u8 = 3;
pub const TYPE_METADATA: u8 = 4;

const ENTRY_FIXED: usize = 8 + 8;
const HARD_STATE_LEN: usize = 8 + 8 + 8;
const CHECKPOINT_LEN: usize = 8 + 8;

/// Encoded size of `r` (header included).
pub fn record_len(r: &Record) -> usize {
    RECORD_HEADER_LEN
        + match r {
            Record::Entry(e) => ENTRY_FIXED + e.data.len(),
            Record::HardState(_) => HARD_STATE_LEN,
            Record::Checkpoint(_) => CHECKPOINT_LEN,
            Record::Metadata(m) => m.len(),
        }
}

/// Appends the encoding of `r` to `out`. The caller has checked that the
/// payload fits in a u32 (appends are limited far below 4 GiB).
pub fn encode_record(r: &Record, out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + RECORD_HEADER_LEN, 0);
    let ty = match r {
        Record::Entry(e) => {
            out.extend_from_slice(&e.index.to_le_bytes());
            out.extend_from_slice(&e.term.to_le_bytes());
            out.extend_from_slice(&e.data);
            TYPE_ENTRY
        }
        Record::HardState(h) => {
            out.extend_from_slice(&h.term.to_le_bytes());
            out.extend_from_slice(&h.vote.to_le_bytes());
            out.extend_from_slice(&h.commit.to_le_bytes());
            TYPE_HARD_STATE
        }
        Record::Checkpoint(c) => {
            out.extend_from_slice(&c.index.to_le_bytes());
            out.extend_from_slice(&c.term.to_le_bytes());
            TYPE_CHECKPOINT
        }
        Record::Metadata(m) => {
            out.extend_from_slice(m);
            TYPE_METADATA
        }
    };
    let payload_len = (out.len() - start - RECORD_HEADER_LEN) as u32;
    let hdr = &mut out[start..start + RECORD_HEADER_LEN];
    hdr[RH_LEN..RH_TYPE].copy_from_slice(&payload_len.to_le_bytes());
    hdr[RH_TYPE] = ty;
    // reserved bytes stay zero
    let mut h = crc32fast::Hasher::new();
    h.update(&hdr[..RH_CRC]);
    h.update(&out[start + RECORD_HEADER_LEN..]);
    let crc = h.finalize();
    out[start + RH_CRC..start + RECORD_HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes the record at the start of `b`. Returns the record and its encoded
/// length, or what is wrong with it. Never panics on any input.
pub fn decode_record(b: &[u8]) -> Result<(Record, usize), String> {
    let h = b
        .get(..RECORD_HEADER_LEN)
        .ok_or("record header cut short")?;
    let len = le_u32(h, RH_LEN) as usize;
    let ty = h[RH_TYPE];
    let total = RECORD_HEADER_LEN
        .checked_add(len)
        .ok_or("record length overflows")?;
    let payload = b
        .get(RECORD_HEADER_LEN..total)
        .ok_or_else(|| format!("record length {len} runs past the end of its batch"))?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&h[..RH_CRC]);
    hasher.update(payload);
    if hasher.finalize() != le_u32(h, RH_CRC) {
        return Err(format!("record crc mismatch (type {ty}, len {len})"));
    }
    if h[RH_RESERVED..RH_CRC] != [0, 0, 0] {
        return Err("record reserved bytes are not zero".into());
    }
    let rec = match ty {
        TYPE_ENTRY => {
            let data = payload
                .get(ENTRY_FIXED..)
                .ok_or("entry record shorter than 16 bytes")?;
            Record::Entry(Entry {
                index: le_u64(payload, 0),
                term: le_u64(payload, 8),
                data: Bytes::copy_from_slice(data),
            })
        }
        TYPE_HARD_STATE if len == HARD_STATE_LEN => Record::HardState(HardState {
            term: le_u64(payload, 0),
            vote: le_u64(payload, 8),
            commit: le_u64(payload, 16),
        }),
        TYPE_CHECKPOINT if len == CHECKPOINT_LEN => Record::Checkpoint(Checkpoint {
            index: le_u64(payload, 0),
            term: le_u64(payload, 8),
        }),
        TYPE_METADATA => Record::Metadata(Bytes::copy_from_slice(payload)),
        TYPE_HARD_STATE | TYPE_CHECKPOINT => {
            return Err(format!("record type {ty} has wrong length {len}"));
        }
        _ => return Err(format!("unknown record type {ty}")),
    };
    Ok((rec, total))
}

// ---------------------------------------------------------------------------
// File names: `{seq:016x}-{first_index:016x}.wal` (etcd's scheme). A segment
// being prepared is `{seq:016x}.wal.tmp` until renamed.
// ---------------------------------------------------------------------------

pub const SEGMENT_SUFFIX: &str = ".wal";
pub const TMP_SUFFIX: &str = ".wal.tmp";

pub fn segment_name(seq: u64, first_index: u64) -> String {
    format!("{seq:016x}-{first_index:016x}{SEGMENT_SUFFIX}")
}

pub fn tmp_name(seq: u64) -> String {
    format!("{seq:016x}{TMP_SUFFIX}")
}

/// Parses a segment file name into `(seq, first_index)`.
pub fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
    let (a, b) = stem.split_once('-')?;
    if a.len() != 16 || b.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(a, 16).ok()?,
        u64::from_str_radix(b, 16).ok()?,
    ))
}

// ---------------------------------------------------------------------------

pub fn align_up(v: u64) -> u64 {
    v.div_ceil(BLOCK) * BLOCK
}

/// Little-endian u32 at `off`. Callers pass slices whose length they checked.
fn le_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64, data: &[u8]) -> Record {
        Record::Entry(Entry {
            index: i,
            term: 7,
            data: Bytes::copy_from_slice(data),
        })
    }

    #[test]
    fn records_round_trip() {
        let recs = vec![
            entry(5, b"hello"),
            entry(6, b""),
            Record::HardState(HardState {
                term: 1,
                vote: 2,
                commit: 3,
            }),
            Record::Checkpoint(Checkpoint { index: 9, term: 4 }),
            Record::Metadata(Bytes::from_static(b"cluster=1")),
            Record::Metadata(Bytes::new()),
        ];
        let mut buf = Vec::new();
        for r in &recs {
            let before = buf.len();
            encode_record(r, &mut buf);
            assert_eq!(buf.len() - before, record_len(r));
        }
        let mut off = 0;
        for r in &recs {
            let (got, n) = decode_record(&buf[off..]).unwrap();
            assert_eq!(&got, r);
            off += n;
        }
        assert_eq!(off, buf.len());
    }

    #[test]
    fn record_bit_flips_are_detected() {
        let mut buf = Vec::new();
        encode_record(&entry(1, b"payload"), &mut buf);
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[byte] ^= 1 << bit;
                assert!(
                    decode_record(&b).is_err(),
                    "flip of byte {byte} bit {bit} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn record_truncated_anywhere_is_an_error_not_a_panic() {
        let mut buf = Vec::new();
        encode_record(&entry(1, b"payload"), &mut buf);
        for n in 0..buf.len() {
            assert!(decode_record(&buf[..n]).is_err());
        }
        // A huge length field does not allocate or panic.
        let mut b = buf.clone();
        b[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_record(&b).is_err());
    }

    #[test]
    fn record_zeros_are_not_a_record() {
        assert!(decode_record(&[0u8; 64]).is_err());
    }

    #[test]
    fn segment_header_round_trip_and_every_field_is_checked() {
        let h = SegmentHeader {
            seq: 3,
            first_index: 77,
            nonce: 0xdead_beef,
            segment_size: 1 << 20,
        };
        let b = h.encode_block();
        assert_eq!(b.len() as u64, BLOCK);
        assert_eq!(SegmentHeader::decode(&b).unwrap(), h);
        for byte in 0..SEGMENT_HEADER_LEN {
            let mut c = b.clone();
            c[byte] ^= 0x10;
            assert!(
                SegmentHeader::decode(&c).is_err(),
                "corrupt byte {byte} accepted"
            );
        }
        assert!(SegmentHeader::decode(&b[..SEGMENT_HEADER_LEN - 1]).is_err());
    }

    #[test]
    fn batch_header_probe() {
        let h = BatchHeader {
            body_len: 100,
            seq: 42,
            count: 3,
        };
        let mut b = [0u8; BATCH_HEADER_LEN];
        h.encode(9, &mut b);
        assert_eq!(BatchHeader::probe(&b, 9), BatchProbe::Valid(h));
        // Another WAL's nonce: not ours.
        assert!(matches!(BatchHeader::probe(&b, 10), BatchProbe::Bad(_)));
        assert_eq!(BatchHeader::probe(&[0u8; 100], 9), BatchProbe::Zero);
        assert_eq!(BatchHeader::probe(&[], 9), BatchProbe::Zero);
        for byte in 0..BATCH_HEADER_LEN {
            let mut c = b;
            c[byte] ^= 1;
            assert!(
                matches!(BatchHeader::probe(&c, 9), BatchProbe::Bad(_)),
                "byte {byte}"
            );
        }
        assert_eq!(h.padded_len(), BLOCK);
        assert_eq!(padded_batch_len(BLOCK as usize - BATCH_HEADER_LEN), BLOCK);
        assert_eq!(
            padded_batch_len(BLOCK as usize - BATCH_HEADER_LEN + 1),
            2 * BLOCK
        );
    }

    #[test]
    fn file_names() {
        assert_eq!(
            segment_name(1, 0x10),
            "0000000000000001-0000000000000010.wal"
        );
        assert_eq!(
            parse_segment_name("0000000000000001-0000000000000010.wal"),
            Some((1, 16))
        );
        assert_eq!(parse_segment_name("0000000000000001.wal.tmp"), None);
        assert_eq!(parse_segment_name("1-2.wal"), None);
        assert_eq!(
            parse_segment_name("000000000000000g-0000000000000010.wal"),
            None
        );
        assert_eq!(tmp_name(2), "0000000000000002.wal.tmp");
    }
}
