//! The v2 record format inside a batch, for produce validation: a walk over a records
//! section that checks every record's framing (length, attributes, timestamp and offset
//! deltas, key, value, headers) as Kafka's `DefaultRecord` reader does, without decoding
//! or copying anything. The section is either the batch's own bytes or its decompressed
//! stream (`compression`). Batch headers live in `batch.rs`.

use std::io::BufRead;

use super::batch::Compression;
use super::compression;
use super::error::LogError;

/// Checks that `section` (the records of an uncompressed batch) holds exactly
/// `record_count` well-formed records. The produce hot path: plain index arithmetic over
/// the slice, a few nanoseconds a record; it accepts exactly what the streaming walk
/// accepts (a property test holds the two together).
pub(crate) fn walk_plain(section: &[u8], record_count: i32) -> Result<(), LogError> {
    let mut pos = 0usize;
    for index in 0..record_count {
        if pos >= section.len() {
            return Err(invalid(format!("record count mismatch: header says {record_count} records, found {index}")));
        }
        let Some((len, n)) = slice_varint(section, pos, 5) else {
            return Err(invalid(format!("record {index}: malformed length")));
        };
        let len = usize::try_from(len).map_err(|_| invalid(format!("record {index} has negative length {len}")))?;
        let start = pos + n;
        let record = section.get(start..start.saturating_add(len)).ok_or_else(|| {
            invalid(format!("truncated records: record {index} needs {len} bytes, {} remain", section.len() - start))
        })?;
        check_record(record).map_err(|what| invalid(format!("record {index}: {what}")))?;
        pos = start + len;
    }
    if pos != section.len() {
        return Err(invalid(format!("record count mismatch: bytes left after {record_count} records")));
    }
    Ok(())
}

/// A zigzag varint of at most `max_bytes` at `buf[at..]`: its value and length; `None`
/// when it is cut short or too long.
#[inline]
fn slice_varint(buf: &[u8], at: usize, max_bytes: usize) -> Option<(i64, usize)> {
    let first = *buf.get(at)?;
    // Most fields of a record (deltas, short lengths, counts) fit one byte.
    if first < 0x80 {
        return Some((i64::from(first >> 1) ^ -i64::from(first & 1), 1));
    }
    let mut raw: u64 = 0;
    for (i, b) in buf.get(at..)?.iter().take(max_bytes).enumerate() {
        raw |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((((raw >> 1) as i64) ^ -((raw & 1) as i64), i + 1));
        }
    }
    None
}

/// One record's fields must fill exactly its declared length; the error names the field.
fn check_record(r: &[u8]) -> Result<(), &'static str> {
    const PAST: &str = "runs past its declared length";
    let mut p = 1; // attributes
    if r.is_empty() {
        return Err(PAST);
    }
    #[inline]
    fn field(r: &[u8], p: &mut usize, max: usize) -> Result<i64, &'static str> {
        let (v, n) = slice_varint(r, *p, max).ok_or(PAST)?;
        *p += n;
        Ok(v)
    }
    #[inline]
    fn bytes(r: &[u8], p: &mut usize, nullable: bool, bad_length: &'static str) -> Result<(), &'static str> {
        let len = field(r, p, 5)?;
        match usize::try_from(len) {
            Ok(n) if n <= r.len() - *p => {
                *p += n;
                Ok(())
            }
            Ok(_) => Err(PAST),
            Err(_) if len == -1 && nullable => Ok(()),
            Err(_) => Err(bad_length),
        }
    }
    field(r, &mut p, 10)?; // timestamp delta
    field(r, &mut p, 5)?; // offset delta
    bytes(r, &mut p, true, "invalid key length")?;
    bytes(r, &mut p, true, "invalid value length")?;
    let headers = field(r, &mut p, 5)?;
    if headers < 0 {
        return Err("invalid header count");
    }
    for _ in 0..headers {
        bytes(r, &mut p, false, "invalid header key length")?;
        bytes(r, &mut p, true, "invalid header value length")?;
    }
    if p != r.len() {
        return Err("bytes left after its last header");
    }
    Ok(())
}

/// The same for a compressed records section, streamed through its codec: memory stays
/// constant whatever the records' sizes.
pub(crate) fn walk_compressed(section: &[u8], codec: Compression, record_count: i32) -> Result<(), LogError> {
    let reader = compression::reader(section, codec, compression::MAX_DECOMPRESSED_BYTES)?;
    walk(&mut StreamSource { inner: std::io::BufReader::with_capacity(8 * 1024, reader) }, record_count)
}

fn invalid(reason: String) -> LogError {
    LogError::InvalidRecords { reason }
}

/// Where a walk reads from.
trait Source {
    /// The next byte, or `None` at the end of the records.
    fn byte(&mut self) -> Result<Option<u8>, LogError>;
    /// Skips up to `n` bytes; returns how many there were.
    fn skip(&mut self, n: u64) -> Result<u64, LogError>;
}

/// The streaming walk over a plain slice: only the tests use it, to hold `walk_plain` to
/// the same verdicts.
#[cfg(test)]
struct SliceSource<'a> {
    rest: &'a [u8],
}

#[cfg(test)]
impl Source for SliceSource<'_> {
    fn byte(&mut self) -> Result<Option<u8>, LogError> {
        Ok(self.rest.split_first().map(|(b, rest)| {
            self.rest = rest;
            *b
        }))
    }

    fn skip(&mut self, n: u64) -> Result<u64, LogError> {
        let n = usize::try_from(n).unwrap_or(usize::MAX).min(self.rest.len());
        self.rest = &self.rest[n..];
        Ok(n as u64)
    }
}

struct StreamSource<R> {
    inner: R,
}

impl<R: BufRead> Source for StreamSource<R> {
    fn byte(&mut self) -> Result<Option<u8>, LogError> {
        let b = self.inner.fill_buf().map_err(compression::undecodable)?.first().copied();
        if b.is_some() {
            self.inner.consume(1);
        }
        Ok(b)
    }

    fn skip(&mut self, n: u64) -> Result<u64, LogError> {
        let mut done = 0u64;
        while done < n {
            let available = self.inner.fill_buf().map_err(compression::undecodable)?.len();
            if available == 0 {
                break;
            }
            let step = usize::try_from(n - done).unwrap_or(usize::MAX).min(available);
            self.inner.consume(step);
            done += step as u64;
        }
        Ok(done)
    }
}

/// Zigzag varint of at most `max_bytes` (5 for Kafka's varint, 10 for varlong); `None`
/// when the source ends before its first byte.
fn varint(src: &mut impl Source, max_bytes: u32) -> Result<Option<i64>, LogError> {
    let mut raw: u64 = 0;
    for i in 0..max_bytes {
        let Some(b) = src.byte()? else {
            return if i == 0 { Ok(None) } else { Err(invalid("truncated records: varint cut short".into())) };
        };
        raw |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some(((raw >> 1) as i64) ^ -((raw & 1) as i64)));
        }
    }
    Err(invalid(format!("malformed varint longer than {max_bytes} bytes")))
}

/// One record's bytes: reads past its declared length are errors.
struct Record<'a, S> {
    src: &'a mut S,
    left: u64,
    index: i32,
}

impl<S: Source> Source for Record<'_, S> {
    fn byte(&mut self) -> Result<Option<u8>, LogError> {
        if self.left == 0 {
            return Err(invalid(format!("record {} runs past its declared length", self.index)));
        }
        let b = self.src.byte()?;
        if b.is_none() {
            return Err(invalid(format!("truncated records: record {} ends early", self.index)));
        }
        self.left -= 1;
        Ok(b)
    }

    fn skip(&mut self, n: u64) -> Result<u64, LogError> {
        if n > self.left {
            return Err(invalid(format!("record {} runs past its declared length", self.index)));
        }
        let done = self.src.skip(n)?;
        if done < n {
            return Err(invalid(format!("truncated records: record {} needs {n} more bytes, {done} remain", self.index)));
        }
        self.left -= n;
        Ok(n)
    }
}

impl<S: Source> Record<'_, S> {
    fn field(&mut self, what: &str, max_bytes: u32) -> Result<i64, LogError> {
        varint(self, max_bytes)?.ok_or_else(|| invalid(format!("record {}: no {what}", self.index)))
    }

    /// A length-prefixed byte field; `-1` (null) is allowed when `nullable`.
    fn bytes(&mut self, what: &str, nullable: bool) -> Result<(), LogError> {
        let len = self.field(what, 5)?;
        match u64::try_from(len) {
            Ok(n) => self.skip(n).map(|_| ()),
            Err(_) if len == -1 && nullable => Ok(()),
            Err(_) => Err(invalid(format!("record {}: invalid {what} length {len}", self.index))),
        }
    }
}

fn walk(src: &mut impl Source, record_count: i32) -> Result<(), LogError> {
    for index in 0..record_count {
        let Some(len) = varint(src, 5)? else {
            return Err(invalid(format!("record count mismatch: header says {record_count} records, found {index}")));
        };
        let left = u64::try_from(len).map_err(|_| invalid(format!("record {index} has negative length {len}")))?;
        let mut r = Record { src: &mut *src, left, index };
        r.byte()?; // attributes (unused in v2)
        r.field("timestamp delta", 10)?;
        r.field("offset delta", 5)?;
        r.bytes("key", true)?;
        r.bytes("value", true)?;
        let headers = r.field("header count", 5)?;
        if headers < 0 {
            return Err(invalid(format!("record {index}: invalid header count {headers}")));
        }
        for _ in 0..headers {
            r.bytes("header key", false)?;
            r.bytes("header value", true)?;
        }
        if r.left != 0 {
            return Err(invalid(format!("record {index}: {} bytes left after its last header", r.left)));
        }
    }
    if src.byte()?.is_some() {
        return Err(invalid(format!("record count mismatch: bytes left after {record_count} records")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::test_batches::put_varint;

    /// One record: attributes 0, deltas, then the given key, value and headers.
    fn record(key: Option<&[u8]>, value: Option<&[u8]>, headers: &[(&[u8], Option<&[u8]>)]) -> Vec<u8> {
        let mut body = vec![0u8];
        put_varint(&mut body, 3); // timestamp delta
        put_varint(&mut body, 0); // offset delta
        for field in [key, value] {
            match field {
                Some(b) => {
                    put_varint(&mut body, b.len() as i32);
                    body.extend_from_slice(b);
                }
                None => put_varint(&mut body, -1),
            }
        }
        put_varint(&mut body, headers.len() as i32);
        for (k, v) in headers {
            put_varint(&mut body, k.len() as i32);
            body.extend_from_slice(k);
            match v {
                Some(v) => {
                    put_varint(&mut body, v.len() as i32);
                    body.extend_from_slice(v);
                }
                None => put_varint(&mut body, -1),
            }
        }
        let mut out = Vec::new();
        put_varint(&mut out, body.len() as i32);
        out.extend(body);
        out
    }

    #[test]
    fn well_formed_records_pass() {
        let mut s = record(Some(b"k"), Some(b"value"), &[(b"h", Some(b"1")), (b"n", None)]);
        s.extend(record(None, None, &[]));
        walk_plain(&s, 2).expect("two good records");
    }

    #[test]
    fn a_key_running_past_its_record_is_invalid() {
        let mut s = record(Some(b"key"), Some(b"v"), &[]);
        // Claim a 60-byte key: the record's length no longer covers it.
        s[4] = 120; // zigzag(60)
        let err = walk_plain(&s, 1).expect_err("key past the record");
        assert!(err.to_string().contains("runs past"), "{err}");
    }

    #[test]
    fn a_record_longer_than_its_fields_is_invalid() {
        let mut s = record(Some(b"k"), Some(b"v"), &[]);
        s[0] += 2; // two more bytes declared...
        s.extend([0, 0]); // ...and present, but no field covers them
        let err = walk_plain(&s, 1).expect_err("slack");
        assert!(err.to_string().contains("left after its last header"), "{err}");
    }

    #[test]
    fn a_null_header_key_and_a_negative_header_count_are_invalid() {
        let mut s = record(Some(b"k"), Some(b"v"), &[(b"h", None)]);
        let at = s.len() - 3; // header key length
        s[at] = 1; // zigzag(-1)
        assert!(walk_plain(&s, 1).expect_err("null header key").to_string().contains("header key"));
        let mut s = record(Some(b"k"), Some(b"v"), &[]);
        let last = s.len() - 1;
        s[last] = 3; // zigzag(-2) header count
        assert!(walk_plain(&s, 1).expect_err("negative count").to_string().contains("header count"));
    }

    #[test]
    fn counts_that_disagree_with_the_records_are_invalid() {
        let s = record(Some(b"k"), Some(b"v"), &[]);
        assert!(walk_plain(&s, 2).expect_err("too few").to_string().contains("found 1"));
        let mut two = s.clone();
        two.extend(&s);
        assert!(walk_plain(&two, 1).expect_err("too many").to_string().contains("left after"));
    }

    proptest::proptest! {
        /// The slice walk (hot path) and the streaming walk (compressed batches) accept
        /// and refuse the same sections, whatever bytes are changed.
        #[test]
        fn the_slice_walk_and_the_streaming_walk_agree(edits in proptest::collection::vec((0usize..64, proptest::prelude::any::<u8>()), 0..4), count in 0i32..4) {
            let mut s = record(Some(b"key"), Some(b"value"), &[(b"h", Some(b"v")), (b"n", None)]);
            s.extend(record(None, Some(b""), &[]));
            for (at, b) in edits {
                let at = at % s.len();
                s[at] = b;
            }
            let fast = walk_plain(&s, count).is_ok();
            let stream = walk(&mut SliceSource { rest: &s }, count).is_ok();
            proptest::prop_assert_eq!(fast, stream);
        }
    }

    #[test]
    fn every_prefix_of_a_record_is_refused_without_panicking() {
        let s = record(Some(b"key"), Some(b"value"), &[(b"h", Some(b"v"))]);
        for cut in 0..s.len() {
            assert!(walk_plain(&s[..cut], 1).is_err(), "cut at {cut}");
        }
    }
}
