//! The sparse `.timeindex` file: fixed 16-byte entries (running max timestamp of the
//! segment so far i64, base offset of the batch that completed an index interval i64),
//! appended every `index_interval_bytes` of `.log`, timestamps non-decreasing. Entry
//! encoding, the interval rule and searches live here; files are managed by `segment.rs`.

use std::fs::File;
use std::path::Path;

use super::codec::{self, FieldReader, FieldWriter};
use super::error::LogError;

/// Size of one `.timeindex` entry.
pub const TIME_INDEX_ENTRY_SIZE: u64 = 16;

/// One `.timeindex` entry: every batch of the segment up to and including the batch at
/// `offset` has a max timestamp `<= timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeIndexEntry {
    pub timestamp: i64,
    pub offset: i64,
}

impl TimeIndexEntry {
    pub(crate) fn encode(&self) -> [u8; 16] {
        let mut buf = [0u8; 16];
        let mut w = FieldWriter::new(&mut buf);
        w.i64(self.timestamp);
        w.i64(self.offset);
        buf
    }

    pub(crate) fn decode(raw: &[u8; 16]) -> Self {
        let mut r = FieldReader::new(raw);
        // A 16-byte array always holds two i64s.
        TimeIndexEntry {
            timestamp: r.i64().unwrap_or_default(),
            offset: r.i64().unwrap_or_default(),
        }
    }
}

/// In-memory state of a segment's time index: how many entries it has, how many `.log`
/// bytes were appended since the last one, and the segment's running max timestamp.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TimeIndexTracker {
    pub entries: u64,
    pub bytes_since_last: u64,
    pub max_timestamp: Option<i64>,
}

impl TimeIndexTracker {
    /// State after appending a batch, and the index entry to write if this batch
    /// completes an interval. Pure, so callers can commit it only after the write.
    pub(crate) fn after_batch(
        &self,
        batch_len: u32,
        batch_max_timestamp: i64,
        base_offset: i64,
        interval_bytes: u32,
    ) -> (TimeIndexTracker, Option<TimeIndexEntry>) {
        let max = self
            .max_timestamp
            .map_or(batch_max_timestamp, |m| m.max(batch_max_timestamp));
        let since = self.bytes_since_last.saturating_add(u64::from(batch_len));
        if since >= u64::from(interval_bytes) {
            let next = TimeIndexTracker {
                entries: self.entries + 1,
                bytes_since_last: 0,
                max_timestamp: Some(max),
            };
            (
                next,
                Some(TimeIndexEntry {
                    timestamp: max,
                    offset: base_offset,
                }),
            )
        } else {
            let next = TimeIndexTracker {
                entries: self.entries,
                bytes_since_last: since,
                max_timestamp: Some(max),
            };
            (next, None)
        }
    }
}

pub(crate) fn entry_position(slot: u64) -> u64 {
    slot.saturating_mul(TIME_INDEX_ENTRY_SIZE)
}

pub(crate) fn read_entry(file: &File, path: &Path, slot: u64) -> Result<TimeIndexEntry, LogError> {
    let mut raw = [0u8; 16];
    codec::read_exact_at(file, path, &mut raw, entry_position(slot))?;
    Ok(TimeIndexEntry::decode(&raw))
}

/// The last of the first `count` entries whose timestamp is `< ts`, if any.
pub(crate) fn last_entry_below(
    file: &File,
    path: &Path,
    count: u64,
    ts: i64,
) -> Result<Option<TimeIndexEntry>, LogError> {
    let first_not_below = codec::partition_point(0, count, |slot| {
        read_entry(file, path, slot).map(|e| e.timestamp < ts)
    })?;
    match first_not_below.checked_sub(1) {
        Some(slot) => read_entry(file, path, slot).map(Some),
        None => Ok(None),
    }
}

/// How many of the first `count` entries point at an offset `< end_offset` (entries
/// are in offset order, so these are a prefix).
pub(crate) fn entries_before_offset(
    file: &File,
    path: &Path,
    count: u64,
    end_offset: i64,
) -> Result<u64, LogError> {
    codec::partition_point(0, count, |slot| {
        read_entry(file, path, slot).map(|e| e.offset < end_offset)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn write_index(entries: &[TimeIndexEntry]) -> (tempfile::TempDir, File, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.timeindex");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("open");
        for (slot, e) in entries.iter().enumerate() {
            codec::write_all_at(&file, &path, &e.encode(), entry_position(slot as u64))
                .expect("write");
        }
        (dir, file, path)
    }

    #[test]
    fn tracker_emits_an_entry_once_the_interval_is_reached_and_keeps_the_running_max() {
        let t = TimeIndexTracker::default();
        let (t, e) = t.after_batch(1000, 50, 0, 4096);
        assert_eq!(e, None);
        let (t, e) = t.after_batch(1000, 40, 1, 4096);
        assert_eq!(e, None);
        assert_eq!(t.max_timestamp, Some(50));
        let (t, e) = t.after_batch(2096, 30, 2, 4096);
        assert_eq!(
            e,
            Some(TimeIndexEntry {
                timestamp: 50,
                offset: 2
            })
        );
        assert_eq!(
            t,
            TimeIndexTracker {
                entries: 1,
                bytes_since_last: 0,
                max_timestamp: Some(50)
            }
        );
        let (t, e) = t.after_batch(5000, 70, 3, 4096);
        assert_eq!(
            e,
            Some(TimeIndexEntry {
                timestamp: 70,
                offset: 3
            })
        );
        assert_eq!(t.entries, 2);
    }

    #[test]
    fn interval_zero_indexes_every_batch() {
        let (t, e) = TimeIndexTracker::default().after_batch(61, 5, 7, 0);
        assert_eq!(
            e,
            Some(TimeIndexEntry {
                timestamp: 5,
                offset: 7
            })
        );
        assert_eq!(t.entries, 1);
    }

    proptest! {
        #[test]
        fn running_max_entries_are_monotone_and_cover_every_earlier_batch(
            batches in proptest::collection::vec((61u32..3000, -5i64..100), 1..100),
            interval in 0u32..8000,
        ) {
            let mut t = TimeIndexTracker::default();
            let mut emitted = Vec::new();
            for (i, (len, ts)) in batches.iter().enumerate() {
                let (next, e) = t.after_batch(*len, *ts, i as i64, interval);
                t = next;
                emitted.extend(e);
            }
            for w in emitted.windows(2) {
                prop_assert!(w[0].timestamp <= w[1].timestamp);
                prop_assert!(w[0].offset < w[1].offset);
            }
            for e in &emitted {
                let covered = batches[..=e.offset as usize].iter().map(|(_, ts)| *ts).max();
                prop_assert_eq!(Some(e.timestamp), covered);
            }
            prop_assert_eq!(t.max_timestamp, batches.iter().map(|(_, ts)| *ts).max());
            prop_assert_eq!(t.entries, emitted.len() as u64);
        }

        #[test]
        fn searches_agree_with_linear_scans(
            mut stamps in proptest::collection::vec(-3i64..60, 0..80),
            ts in -5i64..70,
            end in -2i64..90,
        ) {
            stamps.sort_unstable();
            let entries: Vec<TimeIndexEntry> = stamps
                .iter()
                .enumerate()
                .map(|(i, s)| TimeIndexEntry { timestamp: *s, offset: i as i64 })
                .collect();
            let (_dir, file, path) = write_index(&entries);
            let n = entries.len() as u64;
            let expected_below = entries.iter().rev().find(|e| e.timestamp < ts).copied();
            prop_assert_eq!(last_entry_below(&file, &path, n, ts).expect("search"), expected_below);
            let expected_count = entries.iter().filter(|e| e.offset < end).count() as u64;
            prop_assert_eq!(entries_before_offset(&file, &path, n, end).expect("search"), expected_count);
        }

        #[test]
        fn entries_round_trip(timestamp in any::<i64>(), offset in any::<i64>()) {
            let e = TimeIndexEntry { timestamp, offset };
            prop_assert_eq!(TimeIndexEntry::decode(&e.encode()), e);
        }
    }
}
