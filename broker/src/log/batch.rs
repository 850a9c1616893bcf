//! Kafka record batch (magic v2) header parsing and produce-side validation.
//! Pure functions over bytes: no I/O, no segments, no raft. Rewriting the
//! broker-assigned fields (baseOffset, partitionLeaderEpoch) when storing a batch is
//! done by `segment.rs`; the records inside a batch are walked by `records.rs`.

use bytes::Bytes;

use super::codec::{FieldReader, FieldWriter};
use super::error::LogError;
use super::records;

/// Size of the fixed v2 batch header; records start right after it.
pub const BATCH_HEADER_SIZE: usize = 61;
/// baseOffset + batchLength: the bytes not counted by `batchLength`.
pub const LOG_OVERHEAD: usize = 12;
/// Smallest legal `batchLength` (a header with no records).
pub const MIN_BATCH_LENGTH: i32 = (BATCH_HEADER_SIZE - LOG_OVERHEAD) as i32;
/// The only record batch format accepted.
pub const CURRENT_MAGIC: i8 = 2;

const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
/// The CRC-32C covers the batch from here to its end.
pub(crate) const ATTRIBUTES_AT: usize = 21;
const MAX_TIMESTAMP_AT: usize = 35;
/// Bytes `0..16` (baseOffset, batchLength, partitionLeaderEpoch) sit outside the CRC;
/// the log rewrites baseOffset and partitionLeaderEpoch in this prefix when storing.
pub(crate) const BROKER_PREFIX_LEN: usize = 16;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

/// Compression codec from attribute bits 0-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

/// Timestamp type from attribute bit 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// The fixed 61-byte header of a v2 record batch, fields in wire order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// The codec; values 5-7 are not defined by Kafka and are rejected.
    pub fn compression(&self) -> Result<Compression, LogError> {
        match self.attributes & COMPRESSION_MASK {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Gzip),
            2 => Ok(Compression::Snappy),
            3 => Ok(Compression::Lz4),
            4 => Ok(Compression::Zstd),
            other => Err(LogError::InvalidRecords {
                reason: format!("unknown compression codec {other}"),
            }),
        }
    }

    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// Whole batch size in bytes: `12 + batchLength` (0 for a negative length, which
    /// `parse_header` never returns).
    pub fn total_size(&self) -> u64 {
        u64::try_from(self.batch_length).map_or(0, |len| len + LOG_OVERHEAD as u64)
    }

    /// Offset of the batch's last record (`baseOffset + lastOffsetDelta`).
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }
}

/// One batch of a produce request that passed `validate_produce_records`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedBatch {
    /// Zero-copy slice of the request buffer holding exactly this batch.
    pub bytes: Bytes,
    pub header: BatchHeader,
}

/// Parse the fixed header at the start of `buf` (which may hold more bytes after it).
///
/// Checks only what is needed to interpret the header: magic is 2 (checked first, since
/// v0/v1 message sets have a different, shorter layout) and `batchLength >= 49`. It
/// does not check that the whole batch is present or that its CRC matches.
pub fn parse_header(buf: &[u8]) -> Result<BatchHeader, LogError> {
    if let Some(&raw) = buf.get(MAGIC_AT) {
        let magic = i8::from_be_bytes([raw]);
        if magic != CURRENT_MAGIC {
            return Err(LogError::UnsupportedMagic(magic));
        }
    }
    let truncated = || {
        LogError::corrupt_batch(format!(
            "truncated batch header: {} of {BATCH_HEADER_SIZE} bytes",
            buf.len()
        ))
    };
    let mut r = FieldReader::new(buf);
    // Field order is wire order; a missing field means the buffer ended early.
    let header = BatchHeader {
        base_offset: r.i64().ok_or_else(truncated)?,
        batch_length: r.i32().ok_or_else(truncated)?,
        partition_leader_epoch: r.i32().ok_or_else(truncated)?,
        magic: r.i8().ok_or_else(truncated)?,
        crc: r.u32().ok_or_else(truncated)?,
        attributes: r.i16().ok_or_else(truncated)?,
        last_offset_delta: r.i32().ok_or_else(truncated)?,
        base_timestamp: r.i64().ok_or_else(truncated)?,
        max_timestamp: r.i64().ok_or_else(truncated)?,
        producer_id: r.i64().ok_or_else(truncated)?,
        producer_epoch: r.i16().ok_or_else(truncated)?,
        base_sequence: r.i32().ok_or_else(truncated)?,
        record_count: r.i32().ok_or_else(truncated)?,
    };
    if header.batch_length < MIN_BATCH_LENGTH {
        return Err(LogError::corrupt_batch(format!(
            "batch length {} is below the minimum of {MIN_BATCH_LENGTH}",
            header.batch_length
        )));
    }
    Ok(header)
}

/// Validate the `records` field of one partition in a produce request, which may hold
/// one or more consecutive v2 batches, and split it into zero-copy per-batch slices.
///
/// Per batch: magic 2, `batchLength >= 49` and within the buffer (a trailing partial
/// batch is `InvalidRecords`), size `<= max_message_bytes`, CRC-32C, known codec,
/// `recordCount >= 1 && recordCount == lastOffsetDelta + 1`, and a walk over the records
/// (`records.rs`) that must find exactly `recordCount` well-formed records ending at the
/// end of the batch; for a compressed batch, at the end of the decompressed stream, which
/// is read through (as Kafka does) but never held in memory. An empty buffer yields no batches;
/// whether that is acceptable is the caller's decision. Control batches are not
/// rejected here either (the caller knows whether the writer may send them).
pub fn validate_produce_records(
    records: &Bytes,
    max_message_bytes: u32,
) -> Result<Vec<ValidatedBatch>, LogError> {
    let mut batches = Vec::new();
    let mut pos = 0usize;
    while let Some(rest) = records.get(pos..).filter(|r| !r.is_empty()) {
        let header = parse_header(rest)?;
        let size = header.total_size();
        let len = usize::try_from(size)
            .ok()
            .filter(|len| *len <= rest.len())
            .ok_or_else(|| LogError::InvalidRecords {
                reason: format!("batch at byte {pos} declares {size} bytes but only {} remain", rest.len()),
            })?;
        if size > u64::from(max_message_bytes) {
            return Err(LogError::MessageTooLarge {
                size,
                max: max_message_bytes,
            });
        }
        let batch = rest
            .get(..len)
            .ok_or_else(|| LogError::corrupt_batch("batch length exceeds buffer"))?;
        check_crc(batch, &header)?;
        let compression = header.compression()?;
        check_record_count(&header)?;
        let section = batch.get(BATCH_HEADER_SIZE..).unwrap_or_default();
        if compression == Compression::None {
            records::walk_plain(section, header.record_count)?;
        } else {
            records::walk_compressed(section, compression, header.record_count)?;
        }
        batches.push(ValidatedBatch {
            bytes: records.slice(pos..pos + len),
            header,
        });
        pos += len;
    }
    Ok(batches)
}

/// Copy of `batch` switched to LogAppendTime: attribute bit 3 set, maxTimestamp set to
/// `now_ms` (as Kafka does; baseTimestamp and the records are left alone) and the CRC
/// recomputed. The input's CRC is verified first so corrupt bytes are never re-signed.
/// Bytes after the batch's declared end are not copied.
pub fn with_log_append_time(batch: &[u8], now_ms: i64) -> Result<Vec<u8>, LogError> {
    resign(batch, |h| (h.attributes | TIMESTAMP_TYPE_BIT, now_ms))
}

/// Copy of `batch` with maxTimestamp replaced by `max_timestamp` and the CRC recomputed,
/// for producers that send an inconsistent header (Kafka recomputes it from the records).
pub fn with_max_timestamp(batch: &[u8], max_timestamp: i64) -> Result<Vec<u8>, LogError> {
    resign(batch, |h| (h.attributes, max_timestamp))
}

/// Copies one CRC-checked batch with new attributes and maxTimestamp, and re-signs it.
fn resign(batch: &[u8], fields: impl Fn(&BatchHeader) -> (i16, i64)) -> Result<Vec<u8>, LogError> {
    let header = parse_header(batch)?;
    let len = usize::try_from(header.total_size())
        .ok()
        .filter(|len| *len <= batch.len())
        .ok_or_else(|| LogError::corrupt_batch("batch length exceeds buffer"))?;
    let body = batch
        .get(..len)
        .ok_or_else(|| LogError::corrupt_batch("batch length exceeds buffer"))?;
    check_crc(body, &header)?;
    let (attributes, max_timestamp) = fields(&header);
    let mut out = body.to_vec();
    put_field(&mut out, ATTRIBUTES_AT, &attributes.to_be_bytes())?;
    put_field(&mut out, MAX_TIMESTAMP_AT, &max_timestamp.to_be_bytes())?;
    let crc = crc32c::crc32c(out.get(ATTRIBUTES_AT..).unwrap_or_default());
    put_field(&mut out, CRC_AT, &crc.to_be_bytes())?;
    Ok(out)
}

/// CRC-32C of a whole batch as Kafka defines it (attributes to end), or `None` if the
/// buffer is shorter than a header.
pub(crate) fn compute_crc(batch: &[u8]) -> Option<u32> {
    if batch.len() < BATCH_HEADER_SIZE {
        return None;
    }
    batch.get(ATTRIBUTES_AT..).map(crc32c::crc32c)
}

/// The checks `PartitionLog::append` applies to a batch before storing it; they match
/// what recovery later accepts, so a stored batch can never look torn: header parses,
/// the buffer is exactly one batch, the CRC matches and `lastOffsetDelta >= 0`.
pub(crate) fn check_batch_for_append(batch: &[u8]) -> Result<BatchHeader, LogError> {
    let header = parse_header(batch)?;
    if header.total_size() != batch.len() as u64 {
        return Err(LogError::corrupt_batch(format!(
            "batch length field says {} bytes but the entry holds {}",
            header.total_size(),
            batch.len()
        )));
    }
    check_crc(batch, &header)?;
    if header.last_offset_delta < 0 {
        return Err(LogError::InvalidRecordCount {
            record_count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    Ok(header)
}

fn check_crc(batch: &[u8], header: &BatchHeader) -> Result<(), LogError> {
    match compute_crc(batch) {
        Some(actual) if actual == header.crc => Ok(()),
        Some(actual) => Err(LogError::corrupt_batch(format!(
            "CRC-32C mismatch: header says {:#010x}, computed {actual:#010x}",
            header.crc
        ))),
        None => Err(LogError::corrupt_batch("batch shorter than its header")),
    }
}

fn check_record_count(header: &BatchHeader) -> Result<(), LogError> {
    let dense = i64::from(header.last_offset_delta) + 1 == i64::from(header.record_count);
    if header.record_count < 1 || !dense {
        return Err(LogError::InvalidRecordCount {
            record_count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    Ok(())
}

/// Decode a zigzag varint (Kafka's `varint`, at most 5 bytes) from the start of `buf`;
/// returns the value and the number of bytes it took.
pub(crate) fn read_varint(buf: &[u8]) -> Result<(i32, usize), LogError> {
    let mut raw: u32 = 0;
    for (i, byte) in buf.iter().take(5).enumerate() {
        raw |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let value = ((raw >> 1) as i32) ^ -((raw & 1) as i32);
            return Ok((value, i + 1));
        }
    }
    if buf.len() < 5 {
        Err(LogError::corrupt_batch(
            "truncated records: varint cut short",
        ))
    } else {
        Err(LogError::corrupt_batch(
            "malformed varint longer than 5 bytes",
        ))
    }
}

fn put_field(buf: &mut [u8], at: usize, bytes: &[u8]) -> Result<(), LogError> {
    let dst = buf
        .get_mut(at..at + bytes.len())
        .ok_or_else(|| LogError::corrupt_batch("batch shorter than its header"))?;
    FieldWriter::new(dst).put(bytes);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::test_batches::{
        encode_batch, fix_crc, put_varint, simple_batch, BatchSpec, TestRecord,
    };
    use proptest::prelude::*;

    fn bytes_of(v: Vec<u8>) -> Bytes {
        Bytes::from(v)
    }

    fn set_i16(buf: &mut [u8], at: usize, v: i16) {
        buf[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    fn set_i32(buf: &mut [u8], at: usize, v: i32) {
        buf[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }

    #[test]
    fn parse_header_reads_every_field_at_its_documented_offset() {
        let mut spec = BatchSpec::new(
            1_700_000_000_000,
            vec![TestRecord::value(b"a"), TestRecord::value(b"bb")],
        );
        spec.base_offset = 0x0102_0304_0506_0708;
        spec.partition_leader_epoch = 77;
        spec.attributes = 0x10; // transactional
        spec.producer_id = 991;
        spec.producer_epoch = 3;
        spec.base_sequence = 42;
        spec.records[1].timestamp_delta = 5;
        let raw = encode_batch(&spec);
        let h = parse_header(&raw).expect("valid header");
        assert_eq!(h.base_offset, 0x0102_0304_0506_0708);
        assert_eq!(h.total_size(), raw.len() as u64);
        assert_eq!(h.partition_leader_epoch, 77);
        assert_eq!(h.magic, 2);
        assert_eq!(h.crc, crc32c::crc32c(&raw[21..]));
        assert_eq!(h.attributes, 0x10);
        assert!(h.is_transactional());
        assert!(!h.is_control());
        assert_eq!(h.timestamp_type(), TimestampType::CreateTime);
        assert_eq!(h.compression().expect("codec"), Compression::None);
        assert_eq!(h.last_offset_delta, 1);
        assert_eq!(h.base_timestamp, 1_700_000_000_000);
        assert_eq!(h.max_timestamp, 1_700_000_000_005);
        assert_eq!(h.producer_id, 991);
        assert_eq!(h.producer_epoch, 3);
        assert_eq!(h.base_sequence, 42);
        assert_eq!(h.record_count, 2);
        assert_eq!(h.last_offset(), 0x0102_0304_0506_0709);
    }

    #[test]
    fn attribute_helpers_decode_every_codec_and_flag() {
        let raw = encode_batch(&BatchSpec::new(0, vec![TestRecord::value(b"x")]));
        let mut h = parse_header(&raw).expect("valid header");
        let codecs = [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ];
        for (bits, codec) in codecs.iter().enumerate() {
            h.attributes = bits as i16;
            assert_eq!(h.compression().expect("known codec"), *codec);
        }
        for bits in 5..8 {
            h.attributes = bits;
            assert!(matches!(
                h.compression(),
                Err(LogError::InvalidRecords { .. })
            ));
        }
        h.attributes = 0x08 | 0x20;
        assert_eq!(h.timestamp_type(), TimestampType::LogAppendTime);
        assert!(h.is_control());
        assert!(!h.is_transactional());
    }

    #[test]
    fn parse_header_rejects_old_magic_before_checking_length() {
        let mut raw = vec![0u8; 30];
        raw[16] = 1;
        assert!(matches!(
            parse_header(&raw),
            Err(LogError::UnsupportedMagic(1))
        ));
        raw[16] = 0;
        assert!(matches!(
            parse_header(&raw),
            Err(LogError::UnsupportedMagic(0))
        ));
    }

    #[test]
    fn parse_header_rejects_short_buffers_and_short_lengths() {
        let raw = encode_batch(&BatchSpec::new(0, vec![TestRecord::value(b"x")]));
        assert!(matches!(
            parse_header(&raw[..60]),
            Err(LogError::CorruptBatch { .. })
        ));
        assert!(matches!(
            parse_header(&raw[..10]),
            Err(LogError::CorruptBatch { .. })
        ));
        let mut short = raw.clone();
        set_i32(&mut short, 8, 48);
        assert!(matches!(
            parse_header(&short),
            Err(LogError::CorruptBatch { .. })
        ));
    }

    #[test]
    fn validate_splits_consecutive_batches_into_zero_copy_slices() {
        let a = simple_batch(3, 10, 1000);
        let b = simple_batch(1, 200, 2000);
        let mut joined = a.to_vec();
        joined.extend_from_slice(&b);
        let records = bytes_of(joined);
        let batches = validate_produce_records(&records, 1 << 20).expect("valid");
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].bytes, a);
        assert_eq!(batches[1].bytes, b);
        assert_eq!(batches[0].header.record_count, 3);
        assert_eq!(batches[1].header.record_count, 1);
        // Zero copy: the slices point into the request buffer.
        assert_eq!(batches[0].bytes.as_ptr(), records.as_ptr());
        assert_eq!(batches[1].bytes.as_ptr(), records[a.len()..].as_ptr());
    }

    #[test]
    fn validate_returns_no_batches_for_an_empty_buffer() {
        assert!(validate_produce_records(&Bytes::new(), 100)
            .expect("ok")
            .is_empty());
    }

    #[test]
    fn validate_rejects_a_bad_crc() {
        let mut raw = simple_batch(2, 5, 0).to_vec();
        let last = raw.len() - 1;
        raw[last] ^= 0xff;
        let err = validate_produce_records(&bytes_of(raw), 1 << 20).expect_err("bad crc");
        assert!(
            matches!(err, LogError::CorruptBatch { ref reason } if reason.contains("CRC")),
            "{err}"
        );
    }

    #[test]
    fn validate_rejects_a_trailing_partial_batch() {
        let mut raw = simple_batch(2, 5, 0).to_vec();
        let second = simple_batch(1, 5, 0);
        raw.extend_from_slice(&second[..second.len() - 3]);
        let err = validate_produce_records(&bytes_of(raw.clone()), 1 << 20).expect_err("partial");
        assert!(matches!(err, LogError::InvalidRecords { .. }), "{err}");
        // A trailing fragment shorter than a header is rejected too.
        let first_len = simple_batch(2, 5, 0).len();
        raw.truncate(first_len + 20);
        let err = validate_produce_records(&bytes_of(raw), 1 << 20).expect_err("fragment");
        assert!(matches!(err, LogError::CorruptBatch { .. }), "{err}");
    }

    #[test]
    fn validate_rejects_a_length_field_that_disagrees_with_the_records() {
        // batchLength one byte too short: the walk runs past the declared end.
        let mut raw = simple_batch(2, 5, 0).to_vec();
        let declared = i32::from_be_bytes(raw[8..12].try_into().expect("4 bytes"));
        set_i32(&mut raw, 8, declared - 1);
        raw.pop();
        fix_crc(&mut raw);
        let err = validate_produce_records(&bytes_of(raw), 1 << 20).expect_err("wrong length");
        assert!(
            matches!(err, LogError::InvalidRecords { ref reason } if reason.contains("truncated records")),
            "{err}"
        );
        // batchLength below the minimum.
        let mut raw = simple_batch(1, 5, 0).to_vec();
        set_i32(&mut raw, 8, 20);
        let err = validate_produce_records(&bytes_of(raw), 1 << 20).expect_err("too small");
        assert!(matches!(err, LogError::CorruptBatch { .. }), "{err}");
    }

    #[test]
    fn validate_rejects_magic_1() {
        let mut raw = simple_batch(1, 5, 0).to_vec();
        raw[16] = 1;
        let err = validate_produce_records(&bytes_of(raw), 1 << 20).expect_err("magic 1");
        assert!(matches!(err, LogError::UnsupportedMagic(1)), "{err}");
    }

    #[test]
    fn validate_rejects_record_count_that_disagrees_with_last_offset_delta() {
        let mut raw = simple_batch(3, 5, 0).to_vec();
        set_i32(&mut raw, 57, 2);
        fix_crc(&mut raw);
        let err = validate_produce_records(&bytes_of(raw), 1 << 20).expect_err("mismatch");
        assert!(
            matches!(
                err,
                LogError::InvalidRecordCount {
                    record_count: 2,
                    last_offset_delta: 2
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn validate_rejects_a_batch_with_zero_records() {
        let mut spec = BatchSpec::new(0, vec![]);
        spec.last_offset_delta_override = Some(-1);
        let raw = encode_batch(&spec);
        let err = validate_produce_records(&bytes_of(raw), 1 << 20).expect_err("empty");
        assert!(
            matches!(
                err,
                LogError::InvalidRecordCount {
                    record_count: 0,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn validate_rejects_a_record_walk_that_finds_more_records_than_declared() {
        // Header claims 2 records (dense) but the section holds 3.
        let mut raw = simple_batch(3, 5, 0).to_vec();
        set_i32(&mut raw, 57, 2);
        set_i32(&mut raw, 23, 1);
        fix_crc(&mut raw);
        let err = validate_produce_records(&bytes_of(raw), 1 << 20).expect_err("extra records");
        assert!(
            matches!(err, LogError::InvalidRecords { ref reason } if reason.contains("record count mismatch")),
            "{err}"
        );
    }

    #[test]
    fn validate_rejects_a_record_walk_that_finds_fewer_records_than_declared() {
        let mut raw = simple_batch(2, 5, 0).to_vec();
        set_i32(&mut raw, 57, 3);
        set_i32(&mut raw, 23, 2);
        fix_crc(&mut raw);
        let err = validate_produce_records(&bytes_of(raw), 1 << 20).expect_err("missing records");
        assert!(
            matches!(err, LogError::InvalidRecords { ref reason } if reason.contains("record count mismatch")),
            "{err}"
        );
    }

    #[test]
    fn validate_rejects_truncated_uncompressed_records() {
        // Last record's length prefix claims more bytes than the batch holds.
        let mut raw = simple_batch(1, 5, 0).to_vec();
        let mut prefix = Vec::new();
        put_varint(&mut prefix, 60);
        assert_eq!(prefix.len(), 1);
        raw[61] = prefix[0];
        fix_crc(&mut raw);
        let err = validate_produce_records(&bytes_of(raw), 1 << 20).expect_err("truncated");
        assert!(matches!(err, LogError::InvalidRecords { .. }), "{err}");
    }

    #[test]
    fn validate_rejects_compression_codec_6() {
        let mut raw = simple_batch(1, 5, 0).to_vec();
        set_i16(&mut raw, 21, 6);
        fix_crc(&mut raw);
        let err = validate_produce_records(&bytes_of(raw), 1 << 20).expect_err("codec 6");
        assert!(
            matches!(err, LogError::InvalidRecords { ref reason } if reason.contains("codec")),
            "{err}"
        );
    }

    /// `raw` (an uncompressed batch) with its records section gzipped, re-signed.
    fn gzipped(raw: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&raw[BATCH_HEADER_SIZE..]).expect("gzip");
        let mut out = raw[..BATCH_HEADER_SIZE].to_vec();
        out.extend(enc.finish().expect("gzip"));
        let len = (out.len() - LOG_OVERHEAD) as i32;
        set_i32(&mut out, 8, len);
        set_i16(&mut out, 21, 1);
        fix_crc(&mut out);
        out
    }

    #[test]
    fn validate_accepts_a_well_formed_compressed_batch() {
        let raw = gzipped(&simple_batch(3, 50, 0));
        let batches = validate_produce_records(&bytes_of(raw), 1 << 20).expect("valid gzip batch");
        assert_eq!(batches[0].header.compression().expect("codec"), Compression::Gzip);
    }

    #[test]
    fn validate_decompresses_to_check_compressed_batches() {
        // Garbage where the gzip stream belongs, with a valid CRC.
        let mut raw = simple_batch(2, 5, 0).to_vec();
        set_i16(&mut raw, 21, 1);
        for b in &mut raw[61..] {
            *b = 0xff;
        }
        fix_crc(&mut raw);
        let err = validate_produce_records(&bytes_of(raw), 1 << 20).expect_err("garbage");
        assert!(matches!(err, LogError::InvalidRecords { ref reason } if reason.contains("decompress")), "{err}");

        // A header claiming three records over a stream holding two.
        let mut raw = simple_batch(2, 5, 0).to_vec();
        set_i32(&mut raw, 23, 2); // lastOffsetDelta
        set_i32(&mut raw, 57, 3); // recordCount
        let err = validate_produce_records(&bytes_of(gzipped(&raw)), 1 << 20).expect_err("count");
        assert!(matches!(err, LogError::InvalidRecords { ref reason } if reason.contains("found 2")), "{err}");

        // And one claiming one record over a stream holding two.
        let mut raw = simple_batch(2, 5, 0).to_vec();
        set_i32(&mut raw, 23, 0);
        set_i32(&mut raw, 57, 1);
        let err = validate_produce_records(&bytes_of(gzipped(&raw)), 1 << 20).expect_err("count");
        assert!(matches!(err, LogError::InvalidRecords { ref reason } if reason.contains("left after")), "{err}");
    }

    #[test]
    fn validate_rejects_a_batch_larger_than_max_message_bytes() {
        let raw = simple_batch(1, 500, 0);
        let size = raw.len() as u64;
        let err = validate_produce_records(&raw, size as u32 - 1).expect_err("too large");
        assert!(
            matches!(err, LogError::MessageTooLarge { size: s, max } if s == size && max == size as u32 - 1),
            "{err}"
        );
        assert!(validate_produce_records(&raw, size as u32).is_ok());
    }

    #[test]
    fn with_log_append_time_sets_the_flag_and_max_timestamp_and_keeps_the_crc_valid() {
        let raw = simple_batch(3, 7, 1_000);
        let out = with_log_append_time(&raw, 99_000).expect("rewrite");
        let h = parse_header(&out).expect("header");
        assert_eq!(h.timestamp_type(), TimestampType::LogAppendTime);
        assert_eq!(h.max_timestamp, 99_000);
        assert_eq!(h.base_timestamp, 1_000);
        assert_eq!(out.len(), raw.len());
        assert_eq!(&out[61..], &raw[61..]);
        let validated = validate_produce_records(&Bytes::from(out), 1 << 20).expect("still valid");
        assert_eq!(validated.len(), 1);
    }

    #[test]
    fn with_max_timestamp_replaces_only_the_max_timestamp_and_re_signs() {
        let raw = simple_batch(2, 5, 1_000);
        let out = with_max_timestamp(&raw, 1_234).expect("rewrite");
        let h = parse_header(&out).expect("header");
        assert_eq!(h.max_timestamp, 1_234);
        assert_eq!(h.timestamp_type(), TimestampType::CreateTime);
        assert_eq!(compute_crc(&out), Some(h.crc));
        assert_eq!(out[MAX_TIMESTAMP_AT + 8..], raw[MAX_TIMESTAMP_AT + 8..]);
    }

    #[test]
    fn with_log_append_time_refuses_to_resign_a_corrupt_batch() {
        let mut raw = simple_batch(1, 7, 1_000).to_vec();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        assert!(matches!(
            with_log_append_time(&raw, 5),
            Err(LogError::CorruptBatch { .. })
        ));
    }

    #[test]
    fn check_batch_for_append_requires_exactly_one_whole_batch() {
        let raw = simple_batch(2, 5, 0);
        assert!(check_batch_for_append(&raw).is_ok());
        let mut longer = raw.to_vec();
        longer.push(0);
        assert!(matches!(
            check_batch_for_append(&longer),
            Err(LogError::CorruptBatch { .. })
        ));
        assert!(matches!(
            check_batch_for_append(&raw[..raw.len() - 1]),
            Err(LogError::CorruptBatch { .. })
        ));
    }

    proptest! {
        #[test]
        fn parse_header_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = parse_header(&bytes);
        }

        #[test]
        fn validate_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = validate_produce_records(&Bytes::from(bytes), 1 << 20);
        }

        #[test]
        fn validate_never_panics_on_mutated_valid_batches(
            n in 1usize..5,
            value_len in 0usize..40,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            recrc in any::<bool>(),
        ) {
            let mut raw = simple_batch(n, value_len, 10).to_vec();
            for (at, x) in flips {
                let i = at % raw.len();
                raw[i] ^= x;
            }
            if recrc && raw.len() >= 61 {
                fix_crc(&mut raw);
            }
            let _ = validate_produce_records(&Bytes::from(raw), 1 << 20);
        }

        #[test]
        fn parse_header_round_trips_arbitrary_field_values(
            base_offset in any::<i64>(),
            epoch in any::<i32>(),
            attributes in any::<i16>(),
            base_ts in any::<i64>(),
            producer_id in any::<i64>(),
            producer_epoch in any::<i16>(),
            base_sequence in any::<i32>(),
        ) {
            let mut spec = BatchSpec::new(base_ts, vec![TestRecord::value(b"v")]);
            spec.base_offset = base_offset;
            spec.partition_leader_epoch = epoch;
            spec.attributes = attributes;
            spec.producer_id = producer_id;
            spec.producer_epoch = producer_epoch;
            spec.base_sequence = base_sequence;
            let raw = encode_batch(&spec);
            let h = parse_header(&raw).expect("valid");
            prop_assert_eq!(h.base_offset, base_offset);
            prop_assert_eq!(h.partition_leader_epoch, epoch);
            prop_assert_eq!(h.attributes, attributes);
            prop_assert_eq!(h.base_timestamp, base_ts);
            prop_assert_eq!(h.producer_id, producer_id);
            prop_assert_eq!(h.producer_epoch, producer_epoch);
            prop_assert_eq!(h.base_sequence, base_sequence);
            prop_assert_eq!(h.total_size(), raw.len() as u64);
        }

        #[test]
        fn varint_decoding_inverts_the_test_encoder(v in any::<i32>(), tail in proptest::collection::vec(any::<u8>(), 0..4)) {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            let n = buf.len();
            buf.extend(tail);
            prop_assert_eq!(read_varint(&buf).expect("valid varint"), (v, n));
        }
    }
}
