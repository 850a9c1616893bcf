//! Small shared helpers: a bounds-checked big-endian field reader/writer, a fallible
//! binary search over positions, and path-annotated positional file I/O.
//! No file format is defined here; the layouts live in `batch.rs`, `entry_index.rs`
//! and `time_index.rs`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::error::LogError;

/// Reads consecutive big-endian fields; every read is bounds-checked and returns
/// `None` once the buffer is exhausted.
pub(crate) struct FieldReader<'a> {
    rest: &'a [u8],
}

impl<'a> FieldReader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        FieldReader { rest: buf }
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, tail) = self.rest.split_first_chunk::<N>()?;
        self.rest = tail;
        Some(*head)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|b| b[0])
    }

    pub(crate) fn i8(&mut self) -> Option<i8> {
        self.array().map(i8::from_be_bytes)
    }

    pub(crate) fn i16(&mut self) -> Option<i16> {
        self.array().map(i16::from_be_bytes)
    }

    pub(crate) fn i32(&mut self) -> Option<i32> {
        self.array().map(i32::from_be_bytes)
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    pub(crate) fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_be_bytes)
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }
}

/// Writes consecutive big-endian fields into a fixed buffer. Used only for our own
/// fixed layouts, whose sizes are checked by round-trip tests; a write past the end is
/// a layout bug, caught by `debug_assert` and otherwise dropped rather than panicking.
pub(crate) struct FieldWriter<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> FieldWriter<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        FieldWriter { buf, pos: 0 }
    }

    pub(crate) fn put(&mut self, bytes: &[u8]) {
        let end = self.pos.saturating_add(bytes.len());
        debug_assert!(end <= self.buf.len(), "fixed layout overflows its buffer");
        if let Some(dst) = self.buf.get_mut(self.pos..end) {
            dst.copy_from_slice(bytes);
        }
        self.pos = end;
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.put(&[v]);
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.put(&v.to_be_bytes());
    }

    pub(crate) fn i64(&mut self, v: i64) {
        self.put(&v.to_be_bytes());
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.put(&v.to_be_bytes());
    }
}

/// First position in `[lo, hi)` for which `is_before` is false, assuming `is_before`
/// is true for a (possibly empty) prefix and false afterwards; `hi` if it never is.
pub(crate) fn partition_point<E>(
    lo: u64,
    hi: u64,
    mut is_before: impl FnMut(u64) -> Result<bool, E>,
) -> Result<u64, E> {
    let (mut lo, mut hi) = (lo, hi);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if is_before(mid)? {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

pub(crate) fn read_exact_at(
    file: &File,
    path: &Path,
    buf: &mut [u8],
    pos: u64,
) -> Result<(), LogError> {
    file.read_exact_at(buf, pos)
        .map_err(|e| LogError::io(path, e))
}

pub(crate) fn write_all_at(file: &File, path: &Path, buf: &[u8], pos: u64) -> Result<(), LogError> {
    file.write_all_at(buf, pos)
        .map_err(|e| LogError::io(path, e))
}

pub(crate) fn file_len(file: &File, path: &Path) -> Result<u64, LogError> {
    file.metadata()
        .map(|m| m.len())
        .map_err(|e| LogError::io(path, e))
}

pub(crate) fn set_len(file: &File, path: &Path, len: u64) -> Result<(), LogError> {
    file.set_len(len).map_err(|e| LogError::io(path, e))
}

pub(crate) fn sync_data(file: &File, path: &Path) -> Result<(), LogError> {
    file.sync_data().map_err(|e| LogError::io(path, e))
}

/// fsync a directory so that file creations, deletions and renames in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io(dir, e))
}

/// Remove a file, treating "already gone" as success.
pub(crate) fn remove_file_if_exists(path: &Path) -> Result<(), LogError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LogError::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn partition_point_matches_slice_partition_point(
            mut values in proptest::collection::vec(0u32..50, 0..64),
            pivot in 0u32..60,
        ) {
            values.sort_unstable();
            let expected = values.partition_point(|v| *v < pivot) as u64;
            let got = partition_point(0, values.len() as u64, |i| {
                Ok::<bool, ()>(values[i as usize] < pivot)
            });
            prop_assert_eq!(got, Ok(expected));
        }

        #[test]
        fn field_reader_never_reads_past_the_end(bytes in proptest::collection::vec(any::<u8>(), 0..20)) {
            let mut r = FieldReader::new(&bytes);
            let mut consumed = 0usize;
            while r.i32().is_some() {
                consumed += 4;
            }
            prop_assert_eq!(consumed, bytes.len() / 4 * 4);
        }
    }

    #[test]
    fn field_writer_and_reader_round_trip_big_endian() {
        let mut buf = [0u8; 21];
        let mut w = FieldWriter::new(&mut buf);
        w.u64(0x0102_0304_0506_0708);
        w.u32(0xdead_beef);
        w.i64(-2);
        w.u8(7);
        assert_eq!(&buf[..4], &[1, 2, 3, 4]);
        let mut r = FieldReader::new(&buf);
        assert_eq!(r.u64(), Some(0x0102_0304_0506_0708));
        assert_eq!(r.u32(), Some(0xdead_beef));
        assert_eq!(r.i64(), Some(-2));
        assert_eq!(r.u8(), Some(7));
        assert_eq!(r.u8(), None);
    }
}
