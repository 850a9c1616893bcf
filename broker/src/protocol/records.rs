//! Record decoding for the few paths that must look inside a batch (a sarama batch whose
//! max timestamp needs recomputing, ListOffsets finding the exact record of a timestamp).
//! Decompression is bounded here: a small compressed batch must not be able to expand into
//! gigabytes of memory. The produce and fetch hot paths never decode records.

use std::io::Read;

use anyhow::{bail, Context};
use bytes::Bytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder, RecordSet};

/// Most bytes one batch may decompress to here (a 1 MiB batch compressing 128:1).
pub const MAX_DECOMPRESSED_BYTES: u64 = 128 << 20;

/// Decodes the single batch at the start of `batch`, decompressing at most `limit` bytes.
pub fn decode_batch_bounded(batch: &Bytes, limit: u64) -> anyhow::Result<RecordSet> {
    let mut buf = batch.clone();
    let decompress = move |data: &mut Bytes, c: Compression| decompress_bounded(data, c, limit);
    RecordBatchDecoder::decode_with_custom_compression(&mut buf, Some(decompress))
}

fn read_bounded(reader: impl Read, limit: u64) -> anyhow::Result<Bytes> {
    let mut out = Vec::new();
    reader.take(limit + 1).read_to_end(&mut out).context("records do not decompress")?;
    if out.len() as u64 > limit {
        bail!("records decompress to more than {limit} bytes");
    }
    Ok(Bytes::from(out))
}

/// The records section of a batch, decompressed, refusing output beyond `limit` bytes.
pub fn decompress_bounded(data: &mut Bytes, compression: Compression, limit: u64) -> anyhow::Result<Bytes> {
    let input = data.split_to(data.len());
    match compression {
        Compression::None => Ok(input),
        Compression::Gzip => read_bounded(flate2::read::GzDecoder::new(&input[..]), limit),
        Compression::Zstd => read_bounded(zstd::stream::read::Decoder::new(&input[..]).context("zstd")?, limit),
        Compression::Lz4 => read_bounded(lz4::Decoder::new(&input[..]).context("lz4")?, limit),
        Compression::Snappy => snappy_bounded(&input, limit),
    }
}

/// Kafka's snappy: xerial framing (a 16-byte header, then length-prefixed raw blocks), or
/// one raw block from clients that skip the framing.
fn snappy_bounded(input: &[u8], limit: u64) -> anyhow::Result<Bytes> {
    const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
    const XERIAL_HEADER_LEN: usize = 16;
    let mut out = Vec::new();
    let mut raw_block = |block: &[u8]| -> anyhow::Result<()> {
        let n = snap::raw::decompress_len(block).context("snappy block length")?;
        if (out.len() + n) as u64 > limit {
            bail!("records decompress to more than {limit} bytes");
        }
        let start = out.len();
        out.resize(start + n, 0);
        snap::raw::Decoder::new().decompress(block, &mut out[start..]).context("snappy block")?;
        Ok(())
    };
    if input.len() >= XERIAL_HEADER_LEN && input.starts_with(XERIAL_MAGIC) {
        let mut rest = &input[XERIAL_HEADER_LEN..];
        while !rest.is_empty() {
            let Some((len, tail)) = rest.split_first_chunk::<4>() else { bail!("truncated snappy block length") };
            let len = u32::from_be_bytes(*len) as usize;
            if tail.len() < len {
                bail!("truncated snappy block");
            }
            raw_block(&tail[..len])?;
            rest = &tail[len..];
        }
    } else {
        raw_block(input)?;
    }
    Ok(Bytes::from(out))
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

    #[test]
    fn garbage_instead_of_compressed_records_is_an_error() {
        for c in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let mut data = Bytes::from_static(b"definitely not compressed");
            assert!(decompress_bounded(&mut data, c, 1 << 20).is_err(), "{c:?}");
        }
    }
}
