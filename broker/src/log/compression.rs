//! Kafka's record codecs, read side: a streaming reader over a compressed records section
//! for each codec (gzip, snappy with or without xerial framing, lz4 frames, zstd), bounded
//! in how much it may produce. Produce validation walks records through it without
//! materialising them; the few paths that decode records use `decompress`. Nothing here
//! compresses, and nothing here parses records.

use std::io::{self, Read};

use super::batch::Compression;
use super::error::LogError;

/// Most bytes one batch may decompress to (a 1 MiB batch compressing 128:1). A batch
/// that expands further is refused as corrupt rather than costing unbounded CPU.
pub const MAX_DECOMPRESSED_BYTES: u64 = 128 << 20;

/// Snappy cannot expand a block more than about 22 times (a 3-byte copy op yields at
/// most 64 bytes); a block claiming more is corrupt and is refused before allocating.
const SNAPPY_MAX_RATIO: usize = 32;

/// A reader of the decompressed bytes of `section` (a batch's records section), failing
/// with `InvalidData` once more than `limit` bytes come out.
pub fn reader<'a>(section: &'a [u8], codec: Compression, limit: u64) -> Result<Box<dyn Read + 'a>, LogError> {
    let inner: Box<dyn Read + 'a> = match codec {
        Compression::None => Box::new(section),
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(section)),
        Compression::Snappy => Box::new(SnappyReader::new(section)),
        Compression::Lz4 => Box::new(lz4::Decoder::new(section).map_err(undecodable)?),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(section).map_err(undecodable)?),
    };
    Ok(Box::new(Bounded { inner, left: limit, limit }))
}

/// The whole decompressed `section`, at most `limit` bytes.
pub fn decompress(section: &[u8], codec: Compression, limit: u64) -> Result<Vec<u8>, LogError> {
    let mut out = Vec::new();
    reader(section, codec, limit)?.read_to_end(&mut out).map_err(undecodable)?;
    Ok(out)
}

pub(crate) fn undecodable(e: io::Error) -> LogError {
    LogError::InvalidRecords { reason: format!("records do not decompress: {e}") }
}

/// Fails a read once more than the limit has been produced.
struct Bounded<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = self.left.checked_sub(n as u64).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("records decompress to more than {} bytes", self.limit))
        })?;
        Ok(n)
    }
}

/// Kafka's snappy: xerial framing (a 16-byte header, then blocks each with a 4-byte
/// length), or one raw block from clients that skip the framing. Decodes a block at a time.
struct SnappyReader<'a> {
    rest: &'a [u8],
    framed: bool,
    block: Vec<u8>,
    pos: usize,
}

impl<'a> SnappyReader<'a> {
    const XERIAL_MAGIC: &'static [u8] = b"\x82SNAPPY\x00";
    const XERIAL_HEADER_LEN: usize = 16;

    fn new(input: &'a [u8]) -> Self {
        let framed = input.len() >= Self::XERIAL_HEADER_LEN && input.starts_with(Self::XERIAL_MAGIC);
        let rest = if framed { &input[Self::XERIAL_HEADER_LEN..] } else { input };
        SnappyReader { rest, framed, block: Vec::new(), pos: 0 }
    }

    /// Decodes the next block into `self.block`; false at the end of the input.
    fn next_block(&mut self) -> io::Result<bool> {
        if self.rest.is_empty() {
            return Ok(false);
        }
        let raw = if self.framed {
            let Some((len, tail)) = self.rest.split_first_chunk::<4>() else { return Err(corrupt("truncated snappy block length")) };
            let len = u32::from_be_bytes(*len) as usize;
            let block = tail.get(..len).ok_or_else(|| corrupt("truncated snappy block"))?;
            self.rest = &tail[len..];
            block
        } else {
            std::mem::take(&mut self.rest)
        };
        let n = snap::raw::decompress_len(raw).map_err(|e| corrupt(&format!("snappy block length: {e}")))?;
        if n > raw.len().saturating_mul(SNAPPY_MAX_RATIO).saturating_add(64) {
            return Err(corrupt("snappy block claims an impossible expansion"));
        }
        self.block.resize(n, 0);
        snap::raw::Decoder::new().decompress(raw, &mut self.block).map_err(|e| corrupt(&format!("snappy block: {e}")))?;
        self.pos = 0;
        Ok(true)
    }
}

fn corrupt(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

impl Read for SnappyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.block.len() {
            if !self.next_block()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.block.len() - self.pos);
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_instead_of_compressed_records_is_corrupt() {
        for c in [Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
            let err = decompress(b"definitely not compressed", c, 1 << 20).expect_err("garbage");
            assert!(matches!(err, LogError::InvalidRecords { .. }), "{c:?}: {err}");
        }
    }

    #[test]
    fn a_snappy_block_claiming_a_huge_expansion_is_refused_before_allocating() {
        // Varint 0xffff_ffff as the uncompressed length, then nothing.
        let raw = [0xff, 0xff, 0xff, 0xff, 0x0f];
        let err = decompress(&raw, Compression::Snappy, MAX_DECOMPRESSED_BYTES).expect_err("huge");
        assert!(err.to_string().contains("impossible expansion"), "{err}");
    }

    #[test]
    fn output_beyond_the_limit_is_refused() {
        let zeros = vec![0u8; 100_000];
        let packed = {
            use std::io::Write;
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(&zeros).expect("gzip");
            enc.finish().expect("gzip")
        };
        assert_eq!(decompress(&packed, Compression::Gzip, 100_000).expect("fits").len(), 100_000);
        let err = decompress(&packed, Compression::Gzip, 99_999).expect_err("too big");
        assert!(err.to_string().contains("more than"), "{err}");
    }
}
