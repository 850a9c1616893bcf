//! Transaction control batches (COMMIT and ABORT markers): building the batch a
//! transaction coordinator appends to each partition of a transaction, and reading the
//! marker type back out of a stored one. Pure functions over bytes.

use super::batch::{parse_header, read_varint, ATTRIBUTES_AT, BATCH_HEADER_SIZE, LOG_OVERHEAD};
use super::error::LogError;

/// The two kinds of transaction marker (the control record key's `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlType {
    Abort,
    Commit,
}

impl ControlType {
    fn code(self) -> i16 {
        match self {
            ControlType::Abort => 0,
            ControlType::Commit => 1,
        }
    }
}

/// Attributes of a marker batch: control (bit 5) and transactional (bit 4), uncompressed.
const MARKER_ATTRIBUTES: i16 = 0x20 | 0x10;

fn put_varint(out: &mut Vec<u8>, v: i32) {
    let mut z = ((v << 1) ^ (v >> 31)) as u32;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// A one-record control batch marking the end of `producer_id`'s transaction, as Kafka
/// writes it: key (version 0, type), value (version 0, coordinator epoch), no headers,
/// baseSequence -1, CRC-32C set. The log assigns its offset when it is stored.
pub fn marker_batch(producer_id: i64, producer_epoch: i16, kind: ControlType, coordinator_epoch: i32, timestamp_ms: i64) -> Vec<u8> {
    let mut record_body = Vec::with_capacity(24);
    record_body.push(0); // record attributes
    put_varint(&mut record_body, 0); // timestampDelta
    put_varint(&mut record_body, 0); // offsetDelta
    put_varint(&mut record_body, 4);
    record_body.extend_from_slice(&0i16.to_be_bytes());
    record_body.extend_from_slice(&kind.code().to_be_bytes());
    put_varint(&mut record_body, 6);
    record_body.extend_from_slice(&0i16.to_be_bytes());
    record_body.extend_from_slice(&coordinator_epoch.to_be_bytes());
    put_varint(&mut record_body, 0); // headers
    let mut record = Vec::with_capacity(record_body.len() + 1);
    put_varint(&mut record, record_body.len() as i32);
    record.extend_from_slice(&record_body);

    let total = BATCH_HEADER_SIZE + record.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&0i64.to_be_bytes()); // baseOffset, assigned by the log
    out.extend_from_slice(&((total - LOG_OVERHEAD) as i32).to_be_bytes());
    out.extend_from_slice(&(-1i32).to_be_bytes()); // partitionLeaderEpoch
    out.push(2); // magic
    out.extend_from_slice(&0u32.to_be_bytes()); // crc, below
    out.extend_from_slice(&MARKER_ATTRIBUTES.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes()); // lastOffsetDelta
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    out.extend_from_slice(&producer_id.to_be_bytes());
    out.extend_from_slice(&producer_epoch.to_be_bytes());
    out.extend_from_slice(&(-1i32).to_be_bytes()); // baseSequence
    out.extend_from_slice(&1i32.to_be_bytes()); // record count
    out.extend_from_slice(&record);
    let crc = crc32c::crc32c(&out[ATTRIBUTES_AT..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

/// The marker type and coordinator epoch of a control batch (its first record's key and
/// value). A control batch whose key is not a known marker type is `None`: Kafka ignores
/// unknown control types, and so does the producer state.
pub fn read_marker(batch: &[u8]) -> Result<Option<(ControlType, i32)>, LogError> {
    let header = parse_header(batch)?;
    if !header.is_control() {
        return Ok(None);
    }
    let bad = |what: &str| LogError::corrupt_batch(format!("control record: {what}"));
    let mut rest = batch.get(BATCH_HEADER_SIZE..).ok_or_else(|| bad("missing"))?;
    let varint = |rest: &mut &[u8]| -> Result<i32, LogError> {
        let (v, n) = read_varint(rest)?;
        *rest = rest.get(n..).ok_or_else(|| bad("truncated"))?;
        Ok(v)
    };
    let _len = varint(&mut rest)?;
    rest = rest.get(1..).ok_or_else(|| bad("truncated"))?; // attributes
    read_varlong_skip(&mut rest)?; // timestampDelta
    let _offset_delta = varint(&mut rest)?;
    let key_len = varint(&mut rest)?;
    if key_len < 4 {
        return Ok(None);
    }
    let key = rest.get(..key_len as usize).ok_or_else(|| bad("key truncated"))?;
    let kind = match i16::from_be_bytes([key[2], key[3]]) {
        0 => ControlType::Abort,
        1 => ControlType::Commit,
        _ => return Ok(None),
    };
    rest = rest.get(key_len as usize..).ok_or_else(|| bad("key truncated"))?;
    let value_len = varint(&mut rest)?;
    let coordinator_epoch = match rest.get(..usize::try_from(value_len).unwrap_or(0)) {
        Some(v) if v.len() >= 6 => i32::from_be_bytes([v[2], v[3], v[4], v[5]]),
        _ => -1,
    };
    Ok(Some((kind, coordinator_epoch)))
}

/// Skips a varlong (timestampDelta), at most 10 bytes.
fn read_varlong_skip(rest: &mut &[u8]) -> Result<(), LogError> {
    let n = rest.iter().take(10).position(|b| b & 0x80 == 0).ok_or_else(|| LogError::corrupt_batch("control record: bad varlong"))?;
    *rest = rest.get(n + 1..).unwrap_or_default();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::check_batch_for_append;

    #[test]
    fn marker_batch_is_a_valid_control_batch_that_reads_back() {
        for kind in [ControlType::Commit, ControlType::Abort] {
            let b = marker_batch(4242, 7, kind, 3, 1_700_000_000_000);
            let h = check_batch_for_append(&b).expect("valid batch");
            assert!(h.is_control() && h.is_transactional());
            assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence, h.record_count), (4242, 7, -1, 1));
            assert_eq!(read_marker(&b).expect("parses"), Some((kind, 3)));
        }
    }

    #[test]
    fn marker_decodes_with_kafka_protocol_as_a_control_record() {
        let b = marker_batch(9, 1, ControlType::Commit, 0, 5);
        let mut buf = bytes::Bytes::from(b);
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf).expect("decodes");
        let r = &set.records[0];
        assert!(r.control && r.transactional);
        assert_eq!(r.key.as_deref(), Some(&[0u8, 0, 0, 1][..]));
    }

    #[test]
    fn a_data_batch_is_not_a_marker() {
        let spec = crate::log::test_batches::BatchSpec::new(1, vec![crate::log::test_batches::TestRecord::value(b"x")]);
        let raw = crate::log::test_batches::encode_batch(&spec);
        assert_eq!(read_marker(&raw).expect("parses"), None);
    }
}
