//! Test-only encoder for real uncompressed Kafka v2 record batches: varint-framed
//! records (attributes, timestampDelta, offsetDelta, key, value, headers) and a correct
//! CRC-32C, so tests exercise genuine wire bytes. Compiled only under `cfg(test)`.

use bytes::Bytes;

pub(crate) struct TestRecord {
    pub timestamp_delta: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl TestRecord {
    pub(crate) fn value(v: &[u8]) -> Self {
        TestRecord {
            timestamp_delta: 0,
            key: None,
            value: Some(v.to_vec()),
            headers: Vec::new(),
        }
    }
}

pub(crate) struct BatchSpec {
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    pub attributes: i16,
    pub base_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records: Vec<TestRecord>,
    /// Force lastOffsetDelta (default: records.len() - 1).
    pub last_offset_delta_override: Option<i32>,
}

impl BatchSpec {
    pub(crate) fn new(base_timestamp: i64, records: Vec<TestRecord>) -> Self {
        BatchSpec {
            base_offset: 0,
            partition_leader_epoch: -1,
            attributes: 0,
            base_timestamp,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            records,
            last_offset_delta_override: None,
        }
    }
}

pub(crate) fn put_varint(out: &mut Vec<u8>, v: i32) {
    put_varlong(out, i64::from(v));
}

pub(crate) fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        if z < 0x80 {
            out.push(z as u8);
            return;
        }
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &Option<Vec<u8>>) {
    match b {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i32);
            out.extend_from_slice(b);
        }
    }
}

pub(crate) fn encode_batch(spec: &BatchSpec) -> Vec<u8> {
    let mut records = Vec::new();
    for (i, r) in spec.records.iter().enumerate() {
        let mut body = vec![0u8]; // record attributes
        put_varlong(&mut body, r.timestamp_delta);
        put_varint(&mut body, i as i32);
        put_bytes(&mut body, &r.key);
        put_bytes(&mut body, &r.value);
        put_varint(&mut body, r.headers.len() as i32);
        for (k, v) in &r.headers {
            put_bytes(&mut body, &Some(k.clone()));
            put_bytes(&mut body, v);
        }
        put_varint(&mut records, body.len() as i32);
        records.extend_from_slice(&body);
    }
    let max_delta = spec
        .records
        .iter()
        .map(|r| r.timestamp_delta)
        .max()
        .unwrap_or(0);
    let last_offset_delta = spec
        .last_offset_delta_override
        .unwrap_or(spec.records.len() as i32 - 1);
    let mut out = Vec::with_capacity(61 + records.len());
    out.extend_from_slice(&spec.base_offset.to_be_bytes());
    out.extend_from_slice(&((49 + records.len()) as i32).to_be_bytes());
    out.extend_from_slice(&spec.partition_leader_epoch.to_be_bytes());
    out.push(2);
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&spec.attributes.to_be_bytes());
    out.extend_from_slice(&last_offset_delta.to_be_bytes());
    out.extend_from_slice(&spec.base_timestamp.to_be_bytes());
    out.extend_from_slice(&(spec.base_timestamp.wrapping_add(max_delta)).to_be_bytes());
    out.extend_from_slice(&spec.producer_id.to_be_bytes());
    out.extend_from_slice(&spec.producer_epoch.to_be_bytes());
    out.extend_from_slice(&spec.base_sequence.to_be_bytes());
    out.extend_from_slice(&(spec.records.len() as i32).to_be_bytes());
    out.extend_from_slice(&records);
    fix_crc(&mut out);
    out
}

/// Recompute the CRC-32C field of a batch in place after a test edits it.
pub(crate) fn fix_crc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// `n` records with `value_len`-byte values, keys and one header, timestamps
/// `base_ts + i`: a realistic uncompressed batch.
pub(crate) fn simple_batch(n: usize, value_len: usize, base_ts: i64) -> Bytes {
    let records = (0..n)
        .map(|i| TestRecord {
            timestamp_delta: i as i64,
            key: Some(format!("k{i}").into_bytes()),
            value: Some(vec![b'v'; value_len]),
            headers: vec![(b"h".to_vec(), Some(b"1".to_vec()))],
        })
        .collect();
    Bytes::from(encode_batch(&BatchSpec::new(base_ts, records)))
}

/// A batch of exactly `total` bytes (one record whose value pads it), `n`=1 record.
pub(crate) fn batch_of_size(total: usize, base_ts: i64) -> Bytes {
    let overhead = simple_batch(1, 0, base_ts).len();
    assert!(total >= overhead + 2, "batch_of_size({total}) too small");
    // Value length prefix may grow by a byte or two as the value grows; adjust.
    let mut value_len = total - overhead;
    loop {
        let b = simple_batch(1, value_len, base_ts);
        match b.len().cmp(&total) {
            std::cmp::Ordering::Equal => return b,
            std::cmp::Ordering::Greater => value_len -= 1,
            std::cmp::Ordering::Less => panic!("cannot hit exactly {total} bytes"),
        }
    }
}
