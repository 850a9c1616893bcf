//! Record decoding for the few paths that must look inside a batch (a sarama batch whose
//! max timestamp needs recomputing, ListOffsets finding the exact record of a timestamp).
//! Decompression is bounded (by `log::compression`): a small compressed batch must not be
//! able to expand into gigabytes of memory. The fetch hot path never decodes records.

use bytes::Bytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder, RecordSet};

use crate::log;
pub use crate::log::compression::MAX_DECOMPRESSED_BYTES;

/// Decodes the single batch at the start of `batch`, decompressing at most `limit` bytes.
pub fn decode_batch_bounded(batch: &Bytes, limit: u64) -> anyhow::Result<RecordSet> {
    let mut buf = batch.clone();
    let decompress = move |data: &mut Bytes, c: Compression| decompress_bounded(data, c, limit);
    RecordBatchDecoder::decode_with_custom_compression(&mut buf, Some(decompress))
}

/// The records section of a batch, decompressed, refusing output beyond `limit` bytes.
fn decompress_bounded(data: &mut Bytes, compression: Compression, limit: u64) -> anyhow::Result<Bytes> {
    let input = data.split_to(data.len());
    let codec = match compression {
        Compression::None => return Ok(input),
        Compression::Gzip => log::Compression::Gzip,
        Compression::Snappy => log::Compression::Snappy,
        Compression::Lz4 => log::Compression::Lz4,
        Compression::Zstd => log::Compression::Zstd,
    };
    Ok(Bytes::from(log::compression::decompress(&input, codec, limit)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

    fn batch(compression: Compression, value: &[u8], n: usize) -> Bytes {
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: i as i32 - 1,
                timestamp: 1_000 + i as i64,
                key: None,
                value: Some(Bytes::copy_from_slice(value)),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(&mut buf, records.iter(), &RecordEncodeOptions { version: 2, compression }).expect("encode");
        buf.freeze()
    }

    #[test]
    fn every_codec_decodes_within_the_bound() {
        for c in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let set = decode_batch_bounded(&batch(c, b"value", 10), MAX_DECOMPRESSED_BYTES).expect("decode");
            assert_eq!(set.records.len(), 10, "{c:?}");
            assert_eq!(set.records.iter().map(|r| r.timestamp).max(), Some(1_009), "{c:?}");
        }
    }

    #[test]
    fn a_batch_expanding_beyond_the_bound_is_refused() {
        // 1,000 records of 10 KB zeros compress to a few KB and expand to 10 MB.
        let zeros = vec![0u8; 10_000];
        for c in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let b = batch(c, &zeros, 1_000);
            assert!(b.len() < 1_000_000, "{c:?} compressed to {}", b.len());
            assert!(decode_batch_bounded(&b, 1 << 20).is_err(), "{c:?} must not expand past 1 MiB");
            assert!(decode_batch_bounded(&b, 20 << 20).is_ok(), "{c:?} fits 20 MiB");
        }
    }
}
