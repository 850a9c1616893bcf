//! The `.entries` file format: a 64-byte segment header followed by one fixed 64-byte
//! record per raft entry (data batch or meta payload). Lookup by raft index is
//! arithmetic; lookup by Kafka offset or term is a binary search of positional reads.
//! Encoding, decoding and read-side scanning live here; what to append or truncate
//! and when is decided in `segment.rs`.

use std::fs::File;
use std::path::Path;

use super::batch::BATCH_HEADER_SIZE;
use super::codec::{self, FieldReader, FieldWriter};
use super::error::LogError;

/// Size of one entry record in `.entries`.
pub const ENTRY_RECORD_SIZE: u64 = 64;
/// Size of the segment header at the start of `.entries`.
pub const SEGMENT_HEADER_SIZE: u64 = 64;
/// Kafka's "no timestamp"; used as the max timestamp of meta entries.
pub const NO_TIMESTAMP: i64 = -1;
/// Bytes before each payload in `.meta`: length u32, CRC-32C u32.
pub(crate) const META_FRAME_HEADER: u64 = 8;

const RECORD_LEN: usize = ENTRY_RECORD_SIZE as usize;
const CRC_AT: usize = 60;
const HEADER_MAGIC: [u8; 8] = *b"RNLSEG01";
const KIND_DATA: u8 = 1;
const KIND_META: u8 = 2;
const FLAG_PINNED: u32 = 1;
/// Records read per positional read when scanning sequentially (16 KiB).
const SCAN_CHUNK_RECORDS: u64 = 256;

/// What an entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A Kafka record batch, stored in `.log`.
    Data,
    /// An opaque payload (raft blank entry, membership change), stored in `.meta`;
    /// it takes no Kafka offset.
    Meta,
}

/// Everything the log records about one entry (one `.entries` record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryMeta {
    pub index: u64,
    pub term: u64,
    pub kind: EntryKind,
    /// Data: the batch's (assigned) base offset. Meta: the next offset at that point.
    pub base_offset: i64,
    /// Data: `lastOffsetDelta + 1`. Meta: 0.
    pub offset_span: u32,
    /// Data: the batch's maxTimestamp. Meta: `NO_TIMESTAMP`.
    pub max_timestamp: i64,
    /// Data: whole batch size. Meta: payload size.
    pub length: u32,
    /// Data: where the batch starts in `.log`. Meta: size of `.log` at that point.
    pub log_position: u64,
    /// Meta: where the frame starts in `.meta`. Data: size of `.meta` at that point.
    pub meta_position: u64,
}

impl EntryMeta {
    /// Next Kafka offset after this entry.
    pub fn end_offset(&self) -> i64 {
        self.base_offset.saturating_add(i64::from(self.offset_span))
    }

    /// Last offset of a data entry (`base_offset - 1` for meta entries).
    pub fn last_offset(&self) -> i64 {
        self.end_offset().saturating_sub(1)
    }

    /// Size of `.log` right after this entry.
    pub fn log_end(&self) -> u64 {
        match self.kind {
            EntryKind::Data => self.log_position.saturating_add(u64::from(self.length)),
            EntryKind::Meta => self.log_position,
        }
    }

    /// Size of `.meta` right after this entry.
    pub fn meta_end(&self) -> u64 {
        match self.kind {
            EntryKind::Data => self.meta_position,
            EntryKind::Meta => self
                .meta_position
                .saturating_add(META_FRAME_HEADER + u64::from(self.length)),
        }
    }

    /// Layout (big-endian): index u64 @0, term u64 @8, base_offset i64 @16,
    /// max_timestamp i64 @24, log_position u64 @32, meta_position u64 @40, length u32 @48,
    /// offset_span u32 @52, kind u8 @56 (1 data, 2 meta), 3 reserved zero bytes @57,
    /// CRC-32C of bytes 0..60 as u32 @60.
    pub(crate) fn encode(&self) -> [u8; RECORD_LEN] {
        let mut buf = [0u8; RECORD_LEN];
        let mut w = FieldWriter::new(&mut buf);
        w.u64(self.index);
        w.u64(self.term);
        w.i64(self.base_offset);
        w.i64(self.max_timestamp);
        w.u64(self.log_position);
        w.u64(self.meta_position);
        w.u32(self.length);
        w.u32(self.offset_span);
        w.u8(match self.kind {
            EntryKind::Data => KIND_DATA,
            EntryKind::Meta => KIND_META,
        });
        seal(&mut buf);
        buf
    }

    /// Decode and sanity-check a record; `Err` carries the reason it is unusable.
    pub(crate) fn decode(raw: &[u8; RECORD_LEN]) -> Result<Self, String> {
        check_seal(raw)?;
        let mut r = FieldReader::new(raw);
        let short = || "record too short".to_string();
        let index = r.u64().ok_or_else(short)?;
        let term = r.u64().ok_or_else(short)?;
        let base_offset = r.i64().ok_or_else(short)?;
        let max_timestamp = r.i64().ok_or_else(short)?;
        let log_position = r.u64().ok_or_else(short)?;
        let meta_position = r.u64().ok_or_else(short)?;
        let length = r.u32().ok_or_else(short)?;
        let offset_span = r.u32().ok_or_else(short)?;
        let kind = match r.u8().ok_or_else(short)? {
            KIND_DATA => EntryKind::Data,
            KIND_META => EntryKind::Meta,
            other => return Err(format!("unknown entry kind {other}")),
        };
        if base_offset < 0 || base_offset.checked_add(i64::from(offset_span)).is_none() {
            return Err(format!("impossible base offset {base_offset}"));
        }
        match kind {
            EntryKind::Data if offset_span == 0 || (length as usize) < BATCH_HEADER_SIZE => {
                return Err(format!(
                    "data entry with offset span {offset_span} and length {length}"
                ));
            }
            EntryKind::Meta if offset_span != 0 => {
                return Err(format!("meta entry with offset span {offset_span}"));
            }
            _ => {}
        }
        if log_position.checked_add(u64::from(length)).is_none()
            || meta_position
                .checked_add(META_FRAME_HEADER + u64::from(length))
                .is_none()
        {
            return Err("impossible file position".to_string());
        }
        Ok(EntryMeta {
            index,
            term,
            kind,
            base_offset,
            offset_span,
            max_timestamp,
            length,
            log_position,
            meta_position,
        })
    }
}

/// The first 64 bytes of `.entries`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    /// Raft index of the segment's first entry (slot 0).
    pub first_index: u64,
    /// Kafka offset of the segment's first batch; also the file name.
    pub base_offset: i64,
    /// When the segment was created (drives time-based rolling).
    pub created_ms: i64,
    /// False only for the very first segment of a fresh log before its first append:
    /// then the first append may carry any index and pins it.
    pub pinned: bool,
}

impl SegmentHeader {
    /// Layout (big-endian): magic "RNLSEG01" @0, first_index u64 @8, base_offset i64
    /// @16, created_ms i64 @24, flags u32 @32 (bit 0 pinned), zero @36..60, CRC-32C @60.
    pub(crate) fn encode(&self) -> [u8; RECORD_LEN] {
        let mut buf = [0u8; RECORD_LEN];
        let mut w = FieldWriter::new(&mut buf);
        w.put(&HEADER_MAGIC);
        w.u64(self.first_index);
        w.i64(self.base_offset);
        w.i64(self.created_ms);
        w.u32(if self.pinned { FLAG_PINNED } else { 0 });
        seal(&mut buf);
        buf
    }

    pub(crate) fn decode(raw: &[u8; RECORD_LEN]) -> Result<Self, String> {
        check_seal(raw)?;
        let mut r = FieldReader::new(raw);
        let short = || "header too short".to_string();
        if r.array::<8>().ok_or_else(short)? != HEADER_MAGIC {
            return Err("bad segment header magic".to_string());
        }
        let first_index = r.u64().ok_or_else(short)?;
        let base_offset = r.i64().ok_or_else(short)?;
        let created_ms = r.i64().ok_or_else(short)?;
        let flags = r.u32().ok_or_else(short)?;
        if base_offset < 0 {
            return Err(format!("negative base offset {base_offset}"));
        }
        Ok(SegmentHeader {
            first_index,
            base_offset,
            created_ms,
            pinned: flags & FLAG_PINNED != 0,
        })
    }
}

fn seal(buf: &mut [u8; RECORD_LEN]) {
    let (body, crc) = buf.split_at_mut(CRC_AT);
    crc.copy_from_slice(&crc32c::crc32c(body).to_be_bytes());
}

fn check_seal(raw: &[u8; RECORD_LEN]) -> Result<(), String> {
    let (body, crc) = raw.split_at(CRC_AT);
    let stored = FieldReader::new(crc).u32().ok_or("record too short")?;
    if crc32c::crc32c(body) != stored {
        return Err("record checksum mismatch".to_string());
    }
    Ok(())
}

/// File position of the record in `slot` (0-based from the segment's first index).
pub(crate) fn slot_position(slot: u64) -> u64 {
    SEGMENT_HEADER_SIZE.saturating_add(slot.saturating_mul(ENTRY_RECORD_SIZE))
}

/// Whole records held by an `.entries` file of `len` bytes.
pub(crate) fn whole_slots(len: u64) -> u64 {
    len.saturating_sub(SEGMENT_HEADER_SIZE) / ENTRY_RECORD_SIZE
}

/// Read the raw segment header, or `None` if the file is too short to hold one.
pub(crate) fn read_raw_header(
    file: &File,
    path: &Path,
    file_len: u64,
) -> Result<Option<[u8; RECORD_LEN]>, LogError> {
    if file_len < SEGMENT_HEADER_SIZE {
        return Ok(None);
    }
    let mut raw = [0u8; RECORD_LEN];
    codec::read_exact_at(file, path, &mut raw, 0)?;
    Ok(Some(raw))
}

pub(crate) fn read_raw_record(
    file: &File,
    path: &Path,
    slot: u64,
) -> Result<[u8; RECORD_LEN], LogError> {
    let mut raw = [0u8; RECORD_LEN];
    codec::read_exact_at(file, path, &mut raw, slot_position(slot))?;
    Ok(raw)
}

/// Read and decode the record in `slot`; an undecodable record is `CorruptSegment`.
pub(crate) fn read_record(file: &File, path: &Path, slot: u64) -> Result<EntryMeta, LogError> {
    let raw = read_raw_record(file, path, slot)?;
    EntryMeta::decode(&raw)
        .map_err(|reason| LogError::corrupt_segment(path, format!("slot {slot}: {reason}")))
}

/// Binary search over slots `[lo, hi)`: the first slot whose record does not satisfy
/// `is_before` (which must hold for a prefix of the range only).
pub(crate) fn search_slots(
    file: &File,
    path: &Path,
    lo: u64,
    hi: u64,
    mut is_before: impl FnMut(&EntryMeta) -> bool,
) -> Result<u64, LogError> {
    codec::partition_point(lo, hi, |slot| {
        read_record(file, path, slot).map(|rec| is_before(&rec))
    })
}

/// Sequential reader over slots `[start, end)` that reads records in 16 KiB chunks.
pub(crate) struct RecordScanner<'a> {
    file: &'a File,
    path: &'a Path,
    next_slot: u64,
    end_slot: u64,
    buf: Vec<u8>,
    buf_first_slot: u64,
    buf_slots: u64,
}

impl<'a> RecordScanner<'a> {
    pub(crate) fn new(file: &'a File, path: &'a Path, start_slot: u64, end_slot: u64) -> Self {
        RecordScanner {
            file,
            path,
            next_slot: start_slot,
            end_slot,
            buf: Vec::new(),
            buf_first_slot: start_slot,
            buf_slots: 0,
        }
    }

    /// Next slot and its raw bytes, undecoded (recovery wants to judge them itself).
    pub(crate) fn next_raw(&mut self) -> Result<Option<(u64, [u8; RECORD_LEN])>, LogError> {
        if self.next_slot >= self.end_slot {
            return Ok(None);
        }
        if self.next_slot >= self.buf_first_slot + self.buf_slots {
            let count = (self.end_slot - self.next_slot).min(SCAN_CHUNK_RECORDS);
            // count <= 256, so the byte length fits easily in usize.
            self.buf.resize((count * ENTRY_RECORD_SIZE) as usize, 0);
            codec::read_exact_at(
                self.file,
                self.path,
                &mut self.buf,
                slot_position(self.next_slot),
            )?;
            self.buf_first_slot = self.next_slot;
            self.buf_slots = count;
        }
        let at = ((self.next_slot - self.buf_first_slot) * ENTRY_RECORD_SIZE) as usize;
        let raw: [u8; RECORD_LEN] = self
            .buf
            .get(at..at + RECORD_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| LogError::corrupt_segment(self.path, "scanner buffer out of step"))?;
        let slot = self.next_slot;
        self.next_slot += 1;
        Ok(Some((slot, raw)))
    }

    /// Next slot and its decoded record; an undecodable record is `CorruptSegment`.
    pub(crate) fn next_record(&mut self) -> Result<Option<(u64, EntryMeta)>, LogError> {
        match self.next_raw()? {
            None => Ok(None),
            Some((slot, raw)) => EntryMeta::decode(&raw)
                .map(|rec| Some((slot, rec)))
                .map_err(|reason| {
                    LogError::corrupt_segment(self.path, format!("slot {slot}: {reason}"))
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data(index: u64, base_offset: i64, span: u32, log_position: u64, length: u32) -> EntryMeta {
        EntryMeta {
            index,
            term: 3,
            kind: EntryKind::Data,
            base_offset,
            offset_span: span,
            max_timestamp: 1_000 + index as i64,
            length,
            log_position,
            meta_position: 0,
        }
    }

    fn arb_entry() -> impl Strategy<Value = EntryMeta> {
        (
            any::<u64>(),
            any::<u64>(),
            any::<bool>(),
            0i64..i64::MAX / 2,
            1u32..10_000,
            any::<i64>(),
            61u32..u32::MAX / 2,
            0u64..u64::MAX / 4,
            0u64..u64::MAX / 4,
        )
            .prop_map(
                |(index, term, is_data, base_offset, span, ts, length, lp, mp)| EntryMeta {
                    index,
                    term,
                    kind: if is_data {
                        EntryKind::Data
                    } else {
                        EntryKind::Meta
                    },
                    base_offset,
                    offset_span: if is_data { span } else { 0 },
                    max_timestamp: if is_data { ts } else { NO_TIMESTAMP },
                    length,
                    log_position: lp,
                    meta_position: mp,
                },
            )
    }

    proptest! {
        #[test]
        fn entry_records_round_trip(entry in arb_entry()) {
            prop_assert_eq!(EntryMeta::decode(&entry.encode()), Ok(entry));
        }

        #[test]
        fn any_single_bit_flip_in_a_record_is_detected(entry in arb_entry(), bit in 0usize..(64 * 8)) {
            let mut raw = entry.encode();
            raw[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(EntryMeta::decode(&raw).is_err());
        }

        #[test]
        fn segment_headers_round_trip(first_index in any::<u64>(), base in 0i64..i64::MAX, created in any::<i64>(), pinned in any::<bool>()) {
            let h = SegmentHeader { first_index, base_offset: base, created_ms: created, pinned };
            prop_assert_eq!(SegmentHeader::decode(&h.encode()), Ok(h));
        }

        #[test]
        fn offset_search_over_a_file_matches_a_linear_scan(
            spans in proptest::collection::vec(0u32..5, 1..200),
            probe in 0i64..800,
        ) {
            // A dense run of entries (span 0 = meta) written to a real file; the binary
            // search for "first entry ending after `probe`" must agree with a scan.
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("x.entries");
            let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).expect("open");
            let mut offset = 0i64;
            let mut log_pos = 0u64;
            let mut entries = Vec::new();
            for (slot, span) in spans.iter().enumerate() {
                let mut e = data(slot as u64, offset, *span, log_pos, 100);
                if *span == 0 {
                    e.kind = EntryKind::Meta;
                    e.max_timestamp = NO_TIMESTAMP;
                } else {
                    log_pos += 100;
                }
                offset += i64::from(*span);
                codec::write_all_at(&file, &path, &e.encode(), slot_position(slot as u64)).expect("write");
                entries.push(e);
            }
            let expected = entries.iter().position(|e| e.end_offset() > probe).map_or(entries.len(), |p| p) as u64;
            let got = search_slots(&file, &path, 0, entries.len() as u64, |e| e.end_offset() <= probe).expect("search");
            prop_assert_eq!(got, expected);
            if (got as usize) < entries.len() {
                // The hit is always the data batch containing the offset.
                let hit = entries[got as usize];
                prop_assert_eq!(hit.kind, EntryKind::Data);
                prop_assert!(hit.base_offset <= probe && probe < hit.end_offset());
            }
            // Arithmetic lookup by slot returns what was written.
            let slot = (probe as u64) % entries.len() as u64;
            prop_assert_eq!(read_record(&file, &path, slot).expect("read"), entries[slot as usize]);
        }
    }

    #[test]
    fn decode_rejects_unknown_kinds_and_impossible_shapes() {
        let mut raw = data(1, 0, 1, 0, 100).encode();
        raw[56] = 9;
        seal(&mut raw);
        assert!(EntryMeta::decode(&raw)
            .expect_err("kind 9")
            .contains("kind"));

        let zero_span = data(1, 0, 0, 0, 100).encode();
        assert!(EntryMeta::decode(&zero_span).is_err());

        let mut meta_with_span = data(1, 0, 2, 0, 100);
        meta_with_span.kind = EntryKind::Meta;
        assert!(EntryMeta::decode(&meta_with_span.encode()).is_err());

        let negative = data(1, -5, 1, 0, 100).encode();
        assert!(EntryMeta::decode(&negative).is_err());
    }

    #[test]
    fn scanner_reads_across_chunk_boundaries_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.entries");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("open");
        let n = SCAN_CHUNK_RECORDS * 2 + 7;
        for slot in 0..n {
            let e = data(slot + 10, slot as i64, 1, slot * 100, 100);
            codec::write_all_at(&file, &path, &e.encode(), slot_position(slot)).expect("write");
        }
        let mut scanner = RecordScanner::new(&file, &path, 3, n);
        let mut expected = 3;
        while let Some((slot, rec)) = scanner.next_record().expect("scan") {
            assert_eq!(slot, expected);
            assert_eq!(rec.index, slot + 10);
            expected += 1;
        }
        assert_eq!(expected, n);
    }
}
