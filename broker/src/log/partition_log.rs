//! `PartitionLog`: the ordered segments of one partition directory, with the raft-entry
//! API (append, flush, truncate, purge, reset by raft index) and the Kafka read API
//! (fetch ranges, offset/timestamp/leader-epoch lookups) on top of `segment.rs`.
//! Directory-level crash safety (open-time recovery order, clean-shutdown and reset
//! markers) lives here too; per-file formats do not.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tracing::{debug, info, warn};

use super::batch;
use super::codec::{self, FieldReader, FieldWriter};
use super::entry_index::{EntryKind, EntryMeta, SegmentHeader};
use super::error::LogError;
use super::segment::{self, OpenedLast, Segment};

/// Present after `mark_clean_shutdown`; lets `open` skip full validation.
const CLEAN_SHUTDOWN_MARKER: &str = "clean_shutdown";
/// Written (and synced) before `reset_to` deletes anything; `open` completes the reset.
const RESET_MARKER: &str = "reset.pending";
const RESET_MARKER_LEN: usize = 20;

/// Tunables of one partition log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll before a data append once the active `.log` holds at least this many bytes.
    pub segment_bytes: u64,
    /// Roll before a data append once the active segment is at least this old.
    pub segment_ms: u64,
    /// Add a `.timeindex` entry every time this many `.log` bytes were appended.
    pub index_interval_bytes: u32,
}

impl Default for LogConfig {
    /// Kafka's defaults: 1 GiB segments, 7 days, 4 KiB index interval.
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            index_interval_bytes: 4096,
        }
    }
}

/// What to append.
#[derive(Debug, Clone, Copy)]
pub enum EntryPayload<'a> {
    /// One whole Kafka v2 record batch (for example a `ValidatedBatch::bytes`).
    Batch(&'a Bytes),
    /// An opaque payload that takes no Kafka offset (raft blank/membership entries).
    Meta(&'a [u8]),
}

/// Offsets assigned by an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    /// Last offset of the batch; `base_offset - 1` for meta entries.
    pub last_offset: i64,
}

/// A stored entry's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredPayload {
    /// The batch as stored: baseOffset and partitionLeaderEpoch rewritten, CRC intact.
    Batch(Bytes),
    Meta(Bytes),
}

/// Per-segment facts for retention decisions (what `purge_through` would drop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSummary {
    pub base_offset: i64,
    /// Next offset after the segment.
    pub end_offset: i64,
    pub first_index: Option<u64>,
    pub last_index: Option<u64>,
    /// Bytes in `.log`.
    pub size_bytes: u64,
    pub max_timestamp: Option<i64>,
    pub is_active: bool,
}

/// A byte range of whole batches in one segment's `.log`, for Fetch.
///
/// It holds the open file, so it stays readable while the log is used concurrently,
/// but a later `truncate_from`/`purge_through`/`reset_to` can shorten or unlink that
/// file: read (or send) it promptly; a short read then surfaces as `LogError::Io`.
#[derive(Debug, Clone)]
pub struct ReadSlice {
    source: Option<(Arc<File>, PathBuf)>,
    position: u64,
    length: u64,
    first_offset: i64,
    end_offset: i64,
}

impl ReadSlice {
    fn empty(offset: i64) -> Self {
        ReadSlice {
            source: None,
            position: 0,
            length: 0,
            first_offset: offset,
            end_offset: offset,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.length == 0
    }

    /// The segment `.log` file to send from (`None` for an empty slice).
    pub fn file(&self) -> Option<&Arc<File>> {
        self.source.as_ref().map(|(file, _)| file)
    }

    pub fn path(&self) -> Option<&Path> {
        self.source.as_ref().map(|(_, path)| path.as_path())
    }

    /// Byte position of the first batch in the file.
    pub fn position(&self) -> u64 {
        self.position
    }

    pub fn len(&self) -> u64 {
        self.length
    }

    /// Base offset of the first batch (the requested offset for an empty slice).
    pub fn first_offset(&self) -> i64 {
        self.first_offset
    }

    /// Offset right after the last batch in the slice: where the next fetch starts.
    pub fn end_offset(&self) -> i64 {
        self.end_offset
    }

    /// Read the range into memory with a positional read.
    pub fn read_bytes(&self) -> Result<Bytes, LogError> {
        let Some((file, path)) = &self.source else {
            return Ok(Bytes::new());
        };
        let len = usize::try_from(self.length).map_err(|_| LogError::InvalidArgument {
            reason: "slice larger than the address space".to_string(),
        })?;
        let mut buf = vec![0u8; len];
        codec::read_exact_at(file, path, &mut buf, self.position)?;
        Ok(Bytes::from(buf))
    }
}

/// The on-disk log of one partition; see the module docs for the layout.
///
/// Mutations take `&mut self`; all reads take `&self` and use positional reads only, so
/// a `PartitionLog` behind an `RwLock` serves concurrent readers. Appends are durable
/// only once `flush` returns; `truncate_from`, `purge_through` and `reset_to` are
/// durable when they return. Only one `PartitionLog` may have a directory open.
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    /// Ordered by base offset and raft index; never empty; the last one is active.
    /// Only the active segment may be empty or hold unsynced writes.
    segments: Vec<Segment>,
    dir_dirty: bool,
    clean_marker_present: bool,
    needs_reopen: bool,
    /// Data entries were appended since the last barrier (`barrier_due`).
    data_since_barrier: bool,
    /// A meta entry was appended since the last barrier.
    meta_since_barrier: bool,
}

impl fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionLog")
            .field("dir", &self.dir)
            .field("segments", &self.segments.len())
            .field("first_index", &self.first_index())
            .field("last_index", &self.last_index())
            .field("log_start_offset", &self.log_start_offset())
            .field("log_end_offset", &self.log_end_offset())
            .finish()
    }
}

impl PartitionLog {
    /// Open (creating if needed) the log in `dir` and recover it.
    ///
    /// Closed segments get cheap consistency checks (they were synced before the next
    /// segment was created); the newest segment is fully validated and a torn tail is
    /// truncated, unless a clean-shutdown marker vouches for it. An empty newest segment
    /// with a predecessor is deleted. `now_ms` dates a freshly created segment.
    pub fn open(dir: &Path, config: LogConfig, now_ms: i64) -> Result<Self, LogError> {
        std::fs::create_dir_all(dir).map_err(|e| LogError::io(dir, e))?;
        finish_pending_reset(dir, now_ms)?;
        let marker = dir.join(CLEAN_SHUTDOWN_MARKER);
        let trusted = marker.try_exists().map_err(|e| LogError::io(&marker, e))?;
        let interval = config.index_interval_bytes;
        let bases = list_segments(dir)?;
        let mut segments: Vec<Segment> = Vec::with_capacity(bases.len().max(1));
        let mut dir_dirty = false;
        if let Some((&last_base, closed)) = bases.split_last() {
            for &base in closed {
                let segment = Segment::open_closed(dir, base, interval)?;
                if let Some(prev) = segments.last().and_then(|s| s.last_entry) {
                    segment.check_follows(&prev)?;
                }
                segments.push(segment);
            }
            let prev = segments.last().and_then(|s| s.last_entry);
            match Segment::open_last(dir, last_base, trusted, prev.as_ref(), interval)? {
                OpenedLast::Ready(segment) if segment.entry_count == 0 && !segments.is_empty() => {
                    warn!(dir = %dir.display(), base_offset = last_base, "deleting empty newest segment");
                    segment.delete_files()?;
                    dir_dirty = true;
                }
                OpenedLast::Ready(segment) => segments.push(*segment),
                OpenedLast::TornHeader => {
                    warn!(dir = %dir.display(), base_offset = last_base, "newest segment has a torn header; it never held flushed entries");
                    for ext in segment::SEGMENT_EXTS {
                        codec::remove_file_if_exists(&segment::segment_path(dir, last_base, ext))?;
                    }
                    dir_dirty = true;
                    if segments.is_empty() {
                        segments.push(Segment::create(dir, fresh_header(last_base, now_ms))?);
                    }
                }
            }
        }
        if segments.is_empty() {
            segments.push(Segment::create(dir, fresh_header(0, now_ms))?);
            dir_dirty = true;
        }
        if trusted {
            codec::remove_file_if_exists(&marker)?;
            codec::sync_dir(dir)?;
        }
        let recovered = segments.iter().any(|s| s.entry_count > 0);
        let log = PartitionLog {
            dir: dir.to_path_buf(),
            config,
            segments,
            dir_dirty,
            clean_marker_present: false,
            needs_reopen: false,
            // After a crash of the process alone, what recovery read may still be only in
            // the page cache: the first append after opening waits for a barrier.
            data_since_barrier: recovered,
            meta_since_barrier: recovered,
        };
        debug!(log = ?log, "opened partition log");
        Ok(log)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Append one entry at raft index `index`.
    ///
    /// `index` must be `next_index()`; on a brand-new log (no entries, no `reset_to`)
    /// any index is accepted and becomes the first. Terms may not decrease. A batch must
    /// be exactly one whole v2 batch with a valid CRC. Before a data append the active
    /// segment is rolled if it holds data and reached `segment_bytes` or `segment_ms`.
    /// Not durable until `flush`. A barrier that is due (`barrier_due`) is synced here,
    /// blocking; callers that must not block take it first (`take_barrier`).
    pub fn append(
        &mut self,
        index: u64,
        term: u64,
        payload: EntryPayload<'_>,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        self.check_usable()?;
        if let Some(expected) = self.next_index() {
            if index != expected {
                return Err(LogError::NonContiguousIndex {
                    expected,
                    got: index,
                });
            }
        }
        if let Some(last) = self.last_term() {
            if term < last {
                return Err(LogError::TermRegression { last, got: term });
            }
        }
        let header = match payload {
            EntryPayload::Batch(bytes) => Some(batch::check_batch_for_append(bytes)?),
            EntryPayload::Meta(_) => None,
        };
        if self.barrier_due(header.is_none()) {
            let synced = self.take_barrier()?.sync();
            self.poison_on_error(synced)?;
            self.barrier_synced();
        }
        self.drop_clean_marker()?;
        if header.is_some() && self.should_roll(now_ms) {
            self.roll(index, now_ms)?;
        }
        let interval = self.config.index_interval_bytes;
        let active = self.active_mut()?;
        let written = (|| {
            if !active.header.pinned {
                active.pin(index)?;
            }
            match (payload, header) {
                (EntryPayload::Batch(bytes), Some(header)) => active.append_data(index, term, bytes, &header, interval),
                (EntryPayload::Meta(bytes), _) => active.append_meta(index, term, bytes, interval),
                (EntryPayload::Batch(_), None) => Err(LogError::corrupt_batch("batch header missing")),
            }
        })();
        // A failed write may leave bytes no record references (a meta frame that would
        // stop recovery from rebuilding records, a batch it could take for the next
        // entry): nothing more is appended until the log is reopened and recovered.
        let entry = match written {
            Ok(entry) => entry,
            Err(e) => {
                self.needs_reopen = true;
                return Err(e);
            }
        };
        match entry.kind {
            EntryKind::Data => self.data_since_barrier = true,
            EntryKind::Meta => self.meta_since_barrier = true,
        }
        Ok(AppendInfo {
            base_offset: entry.base_offset,
            last_offset: entry.last_offset(),
        })
    }

    /// Make every append so far durable: fdatasync the active segment's written files
    /// (`.log`/`.meta` before `.entries`), then the directory if segments were created
    /// or deleted. A no-op when nothing was written since the last flush.
    pub fn flush(&mut self) -> Result<(), LogError> {
        self.check_usable()?;
        if let Some(active) = self.segments.last_mut() {
            active.sync()?;
        }
        if self.dir_dirty {
            codec::sync_dir(&self.dir)?;
            self.dir_dirty = false;
        }
        self.data_since_barrier = false;
        self.meta_since_barrier = false;
        Ok(())
    }

    /// Whether appending a meta entry (`meta`) or a data entry now must first wait for a
    /// barrier (`take_barrier`, synced). Group commit leaves data entries' records in
    /// `.entries` unsynced and recovery rebuilds them from the batches in `.log`, which
    /// is sound only if no meta entry can be lost between them: so a meta entry is
    /// written only once every entry before it is durable, and a data entry after a meta
    /// entry only once that is durable.
    pub fn barrier_due(&self, meta: bool) -> bool {
        if meta {
            self.data_since_barrier
        } else {
            self.meta_since_barrier
        }
    }

    /// The files a barrier syncs: the active segment's `.log`, `.meta` and `.entries`,
    /// whether group commit already took them or not (a sync waits for one in flight),
    /// and the directory if segments were created. Nothing may be appended between
    /// taking it and `barrier_synced`, called once the sync succeeded. Leaves the dirty
    /// state to group commit, which still syncs what its acknowledgements need.
    pub fn take_barrier(&self) -> Result<PendingSync, LogError> {
        self.check_usable()?;
        let mut files = Vec::new();
        if let Some(active) = self.segments.last() {
            active.barrier_files(&mut files)?;
        }
        let dir = self.dir_dirty.then(|| self.dir.clone());
        Ok(PendingSync { files, dir })
    }

    /// The barrier taken by `take_barrier` is synced: appends may go on.
    pub fn barrier_synced(&mut self) {
        self.data_since_barrier = false;
        self.meta_since_barrier = false;
    }

    /// Takes what `flush` would sync, so the caller can sync it after releasing the log:
    /// appends are durable once `PendingSync::sync` returns. Cheap when nothing is dirty.
    pub fn take_unsynced(&mut self) -> PendingSync {
        let mut files = Vec::new();
        if let Some(active) = self.segments.last_mut() {
            active.take_unsynced(&mut files);
        }
        let dir = if self.dir_dirty {
            self.dir_dirty = false;
            Some(self.dir.clone())
        } else {
            None
        };
        PendingSync { files, dir }
    }

    /// Delete every entry with raft index `>= index` (raft conflict resolution): whole
    /// later segments go, the segment holding `index` is truncated, the time index is
    /// cut back. No-op if `index > last_index()`; `IndexBeforeStart` if `index` was
    /// already purged. Durable when it returns. Truncating everything keeps the first
    /// segment, so the next append must again be at `index`.
    pub fn truncate_from(&mut self, index: u64) -> Result<(), LogError> {
        self.check_usable()?;
        let (Some(first), Some(last)) = (self.first_index(), self.last_index()) else {
            return Ok(());
        };
        if index > last {
            return Ok(());
        }
        if index < first {
            return Err(LogError::IndexBeforeStart { index, first });
        }
        self.drop_clean_marker()?;
        info!(dir = %self.dir.display(), index, last, "truncating log");
        let interval = self.config.index_interval_bytes;
        let result: Result<(), LogError> = (|| {
            let mut deleted = false;
            while self.segments.len() > 1
                && self
                    .segments
                    .last()
                    .is_some_and(|s| s.first_index() >= index)
            {
                if let Some(segment) = self.segments.pop() {
                    segment.delete_files()?;
                    deleted = true;
                }
            }
            let active = self.active_mut()?;
            let slot = index.saturating_sub(active.first_index());
            active.truncate_to_slot(slot, interval)?;
            if deleted {
                codec::sync_dir(&self.dir)?;
                self.dir_dirty = false;
            }
            Ok(())
        })();
        self.poison_on_error(result)
    }

    /// Delete whole segments whose last index is `<= index`, oldest first, never the
    /// active one. The log start offset moves to the first remaining segment.
    pub fn purge_through(&mut self, index: u64) -> Result<(), LogError> {
        self.check_usable()?;
        self.drop_clean_marker()?;
        let result: Result<(), LogError> = (|| {
            let mut deleted = 0usize;
            while self.segments.len() > 1
                && self
                    .segments
                    .first()
                    .and_then(|s| s.last_index())
                    .is_some_and(|last| last <= index)
            {
                let segment = self.segments.remove(0);
                segment.delete_files()?;
                deleted += 1;
            }
            if deleted > 0 {
                info!(dir = %self.dir.display(), index, deleted, log_start_offset = self.log_start_offset(), "purged segments");
                codec::sync_dir(&self.dir)?;
                self.dir_dirty = false;
            }
            Ok(())
        })();
        self.poison_on_error(result)
    }

    /// Drop everything: afterwards the log is empty, the next append must be at
    /// `next_index` and gets offset `next_offset` (installing a snapshot). Durable when
    /// it returns; a crash half-way is completed by the next `open`.
    pub fn reset_to(
        &mut self,
        next_index: u64,
        next_offset: i64,
        now_ms: i64,
    ) -> Result<(), LogError> {
        self.check_usable()?;
        if next_offset < 0 {
            return Err(LogError::InvalidArgument {
                reason: format!("reset_to offset {next_offset} is negative"),
            });
        }
        self.drop_clean_marker()?;
        info!(dir = %self.dir.display(), next_index, next_offset, "resetting log");
        let result: Result<(), LogError> = (|| {
            write_reset_marker(&self.dir, next_index, next_offset)?;
            let segment = perform_reset(&self.dir, next_index, next_offset, now_ms)?;
            self.segments = vec![segment];
            self.dir_dirty = false;
            Ok(())
        })();
        self.poison_on_error(result)
    }

    /// Flush and leave a marker so the next `open` trusts the active segment (after a
    /// size check) instead of validating every batch. Any later mutation removes it.
    pub fn mark_clean_shutdown(&mut self) -> Result<(), LogError> {
        self.flush()?;
        let path = self.dir.join(CLEAN_SHUTDOWN_MARKER);
        File::create(&path)
            .and_then(|f| f.sync_all())
            .map_err(|e| LogError::io(&path, e))?;
        codec::sync_dir(&self.dir)?;
        self.clean_marker_present = true;
        Ok(())
    }

    /// Raft index of the first entry, `None` when the log holds no entries.
    pub fn first_index(&self) -> Option<u64> {
        self.segments
            .first()
            .filter(|s| s.entry_count > 0)
            .map(Segment::first_index)
    }

    pub fn last_index(&self) -> Option<u64> {
        self.segments.iter().rev().find_map(Segment::last_index)
    }

    pub fn last_term(&self) -> Option<u64> {
        self.segments
            .iter()
            .rev()
            .find_map(|s| s.last_entry.map(|e| e.term))
    }

    /// The index the next append must carry; `None` on a brand-new log (any index).
    pub fn next_index(&self) -> Option<u64> {
        match self.last_index() {
            Some(last) => Some(last.saturating_add(1)),
            None => self
                .segments
                .first()
                .filter(|s| s.header.pinned)
                .map(Segment::first_index),
        }
    }

    /// Offset of the first batch still in the log (base of the oldest segment).
    pub fn log_start_offset(&self) -> i64 {
        self.segments.first().map_or(0, Segment::base_offset)
    }

    /// The next offset to assign.
    pub fn log_end_offset(&self) -> i64 {
        self.segments.last().map_or(0, |s| s.next_offset)
    }

    /// Size of all `.log` files.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.log_size).sum()
    }

    pub fn segment_summaries(&self) -> Vec<SegmentSummary> {
        let last = self.segments.len().saturating_sub(1);
        self.segments
            .iter()
            .enumerate()
            .map(|(i, s)| SegmentSummary {
                base_offset: s.base_offset(),
                end_offset: s.next_offset,
                first_index: s.first_entry.map(|e| e.index),
                last_index: s.last_index(),
                size_bytes: s.log_size,
                max_timestamp: s.time_index.max_timestamp,
                is_active: i == last,
            })
            .collect()
    }

    pub fn entry_meta(&self, index: u64) -> Result<Option<EntryMeta>, LogError> {
        match self.segment_for_index(index) {
            Some(segment) => segment.entry(index),
            None => Ok(None),
        }
    }

    /// The entry and its payload as stored (batches with rewritten offset/epoch).
    pub fn read_entry(&self, index: u64) -> Result<Option<(EntryMeta, StoredPayload)>, LogError> {
        let Some(segment) = self.segment_for_index(index) else {
            return Ok(None);
        };
        let Some(entry) = segment.entry(index)? else {
            return Ok(None);
        };
        let bytes = segment.read_payload(&entry)?;
        let payload = match entry.kind {
            EntryKind::Data => StoredPayload::Batch(bytes),
            EntryKind::Meta => StoredPayload::Meta(bytes),
        };
        Ok(Some((entry, payload)))
    }

    /// Kafka offset right after entry `index` (turns a raft commit index into a high
    /// watermark). Also answers for the entry just before the first one (purged or
    /// reset): the first segment's base offset. `None` for other unknown indexes.
    pub fn end_offset_after(&self, index: u64) -> Result<Option<i64>, LogError> {
        if let Some(entry) = self.entry_meta(index)? {
            return Ok(Some(entry.end_offset()));
        }
        let first = self.segments.first();
        let starts_right_after =
            first.is_some_and(|s| s.header.pinned && index.checked_add(1) == Some(s.first_index()));
        Ok(starts_right_after.then(|| self.log_start_offset()))
    }

    /// Fetch: whole batches from one segment's `.log`, starting at the batch containing
    /// `offset`, stopping before a batch based at or above `upper_offset` (the high
    /// watermark) and before exceeding `max_bytes` except that the first batch is
    /// always whole (KIP-74). Never crosses a segment end. Empty at the log end or at
    /// `upper_offset`; `OffsetOutOfRange` below the log start or past the log end.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: u32,
        upper_offset: i64,
    ) -> Result<ReadSlice, LogError> {
        let (log_start, log_end) = (self.log_start_offset(), self.log_end_offset());
        if offset < log_start || offset > log_end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            });
        }
        if offset == log_end || offset >= upper_offset {
            return Ok(ReadSlice::empty(offset));
        }
        let Some(segment) = self.segment_for_offset(offset) else {
            return Ok(ReadSlice::empty(offset));
        };
        let Some(range) = segment.find_range(offset, max_bytes, upper_offset)? else {
            return Ok(ReadSlice::empty(offset));
        };
        Ok(ReadSlice {
            source: Some((
                segment.log_file()?,
                segment.log_path().to_path_buf(),
            )),
            position: range.position,
            length: range.length,
            first_offset: range.first_offset,
            end_offset: range.end_offset,
        })
    }

    /// ListOffsets by timestamp: the first batch (in offset order) whose max timestamp
    /// is `>= ts`, as `(its base offset, its max timestamp)`. Kafka would return the
    /// exact record's offset and timestamp; we do not decode records, so clients get
    /// the batch start (they skip earlier records themselves). `None` if no batch has
    /// a timestamp that large.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, LogError> {
        for segment in &self.segments {
            if segment
                .time_index
                .max_timestamp
                .is_some_and(|max| max >= ts)
            {
                if let Some(entry) = segment.first_data_at_or_after(ts)? {
                    return Ok(Some((entry.base_offset, entry.max_timestamp)));
                }
            }
        }
        Ok(None)
    }

    /// ListOffsets MAX_TIMESTAMP (-3): the earliest batch holding the largest max
    /// timestamp in the log, as `(its last offset, that timestamp)`.
    pub fn max_timestamp_entry(&self) -> Result<Option<(i64, i64)>, LogError> {
        let mut best: Option<(&Segment, i64)> = None;
        for segment in &self.segments {
            if let Some(max) = segment.time_index.max_timestamp {
                if best.is_none_or(|(_, b)| max > b) {
                    best = Some((segment, max));
                }
            }
        }
        let Some((segment, max)) = best else {
            return Ok(None);
        };
        Ok(segment
            .first_data_at_or_after(max)?
            .map(|entry| (entry.last_offset(), entry.max_timestamp)))
    }

    /// OffsetForLeaderEpoch with raft terms as epochs: `(largest term <= term present
    /// in the log, start offset of the first entry with a larger term)`, the end offset
    /// being the log end offset when no later term exists. `None` when the log is empty
    /// or every entry still in it has a larger term (Kafka would answer with the
    /// requested epoch and the log start offset there; the caller decides).
    pub fn last_offset_for_term(&self, term: u64) -> Result<Option<(u64, i64)>, LogError> {
        let non_empty = self
            .segments
            .iter()
            .rposition(|s| s.entry_count > 0)
            .map_or(0, |i| i + 1);
        let segments = self.segments.get(..non_empty).unwrap_or_default();
        let i = segments.partition_point(|s| s.last_entry.is_some_and(|e| e.term <= term));
        let Some(segment) = segments.get(i) else {
            return Ok(self.last_term().map(|t| (t, self.log_end_offset())));
        };
        let slot = segment.first_slot_with_term_above(term)?;
        let above = segment.entry_at_slot(slot)?;
        let floor_term = match slot.checked_sub(1) {
            Some(prev) => Some(segment.entry_at_slot(prev)?.term),
            None => i
                .checked_sub(1)
                .and_then(|p| segments.get(p))
                .and_then(|s| s.last_entry)
                .map(|e| e.term),
        };
        Ok(floor_term.map(|t| (t, above.base_offset)))
    }

    fn segment_for_index(&self, index: u64) -> Option<&Segment> {
        let i = self.segments.partition_point(|s| s.first_index() <= index);
        self.segments
            .get(i.checked_sub(1)?)
            .filter(|s| s.contains_index(index))
    }

    fn segment_for_offset(&self, offset: i64) -> Option<&Segment> {
        let i = self.segments.partition_point(|s| s.base_offset() <= offset);
        self.segments
            .get(i.checked_sub(1)?)
            .filter(|s| offset < s.next_offset)
    }

    fn active_mut(&mut self) -> Result<&mut Segment, LogError> {
        let dir = self.dir.clone();
        self.segments
            .last_mut()
            .ok_or(LogError::NeedsReopen { path: dir })
    }

    fn should_roll(&self, now_ms: i64) -> bool {
        let Some(active) = self.segments.last() else {
            return false;
        };
        if !active.has_data() {
            return false;
        }
        let age = now_ms.saturating_sub(active.header.created_ms);
        active.log_size >= self.config.segment_bytes
            || u64::try_from(age).is_ok_and(|age| age >= self.config.segment_ms)
    }

    /// Seal (trim + sync) the active segment, then start a new one at the log end.
    fn roll(&mut self, first_index: u64, now_ms: i64) -> Result<(), LogError> {
        let base_offset = self.log_end_offset();
        self.active_mut()?.seal()?;
        let header = SegmentHeader {
            first_index,
            base_offset,
            created_ms: now_ms,
            pinned: true,
        };
        let segment = Segment::create(&self.dir, header)?;
        debug!(dir = %self.dir.display(), base_offset, first_index, "rolled new segment");
        self.segments.push(segment);
        self.dir_dirty = true;
        Ok(())
    }

    fn drop_clean_marker(&mut self) -> Result<(), LogError> {
        if self.clean_marker_present {
            codec::remove_file_if_exists(&self.dir.join(CLEAN_SHUTDOWN_MARKER))?;
            codec::sync_dir(&self.dir)?;
            self.clean_marker_present = false;
        }
        Ok(())
    }

    fn check_usable(&self) -> Result<(), LogError> {
        if self.needs_reopen {
            return Err(LogError::NeedsReopen {
                path: self.dir.clone(),
            });
        }
        Ok(())
    }

    fn poison_on_error(&mut self, result: Result<(), LogError>) -> Result<(), LogError> {
        if result.is_err() {
            self.needs_reopen = true;
        }
        result
    }
}

fn fresh_header(base_offset: i64, now_ms: i64) -> SegmentHeader {
    SegmentHeader {
        first_index: 0,
        base_offset,
        created_ms: now_ms,
        pinned: false,
    }
}

/// Base offsets of the segments in `dir` (those with an `.entries` file), ascending.
/// Stray side files before the first or after the last segment are leftovers of an
/// interrupted purge/truncate and are deleted; one between segments is corruption.
fn list_segments(dir: &Path) -> Result<Vec<i64>, LogError> {
    let mut found: BTreeMap<i64, (bool, Vec<PathBuf>)> = BTreeMap::new();
    let listing = std::fs::read_dir(dir).map_err(|e| LogError::io(dir, e))?;
    for item in listing {
        let item = item.map_err(|e| LogError::io(dir, e))?;
        let name = item.file_name();
        let Some((base, ext)) = name.to_str().and_then(segment::parse_segment_file_name) else {
            continue;
        };
        let slot = found.entry(base).or_default();
        slot.0 |= ext == segment::ENTRIES_EXT;
        slot.1.push(item.path());
    }
    let with_entries: Vec<i64> = found
        .iter()
        .filter(|(_, (has_entries, _))| *has_entries)
        .map(|(base, _)| *base)
        .collect();
    let (lo, hi) = (with_entries.first().copied(), with_entries.last().copied());
    for (base, (has_entries, paths)) in &found {
        if *has_entries {
            continue;
        }
        let inside = lo.is_some_and(|lo| *base > lo) && hi.is_some_and(|hi| *base < hi);
        if inside {
            return Err(LogError::corrupt_segment(
                &segment::segment_path(dir, *base, segment::ENTRIES_EXT),
                "segment files without an .entries file between other segments",
            ));
        }
        warn!(dir = %dir.display(), base_offset = base, "deleting leftover files of a removed segment");
        for path in paths {
            codec::remove_file_if_exists(path)?;
        }
    }
    Ok(with_entries)
}

fn encode_reset_marker(next_index: u64, next_offset: i64) -> [u8; RESET_MARKER_LEN] {
    let mut body = [0u8; 16];
    let mut w = FieldWriter::new(&mut body);
    w.u64(next_index);
    w.i64(next_offset);
    let mut buf = [0u8; RESET_MARKER_LEN];
    let mut w = FieldWriter::new(&mut buf);
    w.put(&body);
    w.u32(crc32c::crc32c(&body));
    buf
}

fn decode_reset_marker(raw: &[u8]) -> Option<(u64, i64)> {
    if raw.len() != RESET_MARKER_LEN {
        return None;
    }
    let mut r = FieldReader::new(raw);
    let (next_index, next_offset, crc) = (r.u64()?, r.i64()?, r.u32()?);
    (crc32c::crc32c(raw.get(..16)?) == crc && next_offset >= 0).then_some((next_index, next_offset))
}

fn write_reset_marker(dir: &Path, next_index: u64, next_offset: i64) -> Result<(), LogError> {
    let path = dir.join(RESET_MARKER);
    File::create(&path)
        .and_then(|mut f| {
            f.write_all(&encode_reset_marker(next_index, next_offset))?;
            f.sync_all()
        })
        .map_err(|e| LogError::io(&path, e))?;
    codec::sync_dir(dir)
}

/// With the reset marker durable: remove every segment file, create the single empty
/// segment, make it durable, then remove the marker.
fn perform_reset(
    dir: &Path,
    next_index: u64,
    next_offset: i64,
    now_ms: i64,
) -> Result<Segment, LogError> {
    let listing = std::fs::read_dir(dir).map_err(|e| LogError::io(dir, e))?;
    for item in listing {
        let item = item.map_err(|e| LogError::io(dir, e))?;
        if item
            .file_name()
            .to_str()
            .and_then(segment::parse_segment_file_name)
            .is_some()
        {
            codec::remove_file_if_exists(&item.path())?;
        }
    }
    let header = SegmentHeader {
        first_index: next_index,
        base_offset: next_offset,
        created_ms: now_ms,
        pinned: true,
    };
    let mut segment = Segment::create(dir, header)?;
    segment.sync()?;
    codec::sync_dir(dir)?;
    codec::remove_file_if_exists(&dir.join(RESET_MARKER))?;
    codec::sync_dir(dir)?;
    Ok(segment)
}

/// Complete a `reset_to` interrupted by a crash, or discard a torn marker (then the
/// reset had not started deleting anything).
fn finish_pending_reset(dir: &Path, now_ms: i64) -> Result<(), LogError> {
    let path = dir.join(RESET_MARKER);
    let raw = match std::fs::read(&path) {
        Ok(raw) => raw,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(LogError::io(&path, e)),
    };
    match decode_reset_marker(&raw) {
        Some((next_index, next_offset)) => {
            warn!(dir = %dir.display(), next_index, next_offset, "completing an interrupted reset");
            perform_reset(dir, next_index, next_offset, now_ms).map(drop)
        }
        None => {
            warn!(dir = %dir.display(), "discarding a torn reset marker");
            codec::remove_file_if_exists(&path)?;
            codec::sync_dir(dir)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::{parse_header, validate_produce_records};
    use crate::log::segment::{segment_path, ENTRIES_EXT, LOG_EXT, META_EXT, TIME_INDEX_EXT};
    use crate::log::test_batches::{batch_of_size, simple_batch};
    use std::fs::OpenOptions;
    use std::io::Write;

    const NO_ROLL_MS: u64 = 1 << 50;

    fn config(segment_bytes: u64, index_interval_bytes: u32) -> LogConfig {
        LogConfig {
            segment_bytes,
            segment_ms: NO_ROLL_MS,
            index_interval_bytes,
        }
    }

    fn open(dir: &Path, config: LogConfig) -> PartitionLog {
        PartitionLog::open(dir, config, 0).expect("open log")
    }

    fn data(log: &mut PartitionLog, index: u64, term: u64, batch: &Bytes) -> AppendInfo {
        log.append(index, term, EntryPayload::Batch(batch), 0)
            .expect("append data")
    }

    fn meta(log: &mut PartitionLog, index: u64, term: u64, payload: &[u8]) -> AppendInfo {
        log.append(index, term, EntryPayload::Meta(payload), 0)
            .expect("append meta")
    }

    /// Parse a fetched byte range into (base offset, last offset) per batch, checking
    /// every batch is whole and CRC-valid.
    fn batches_in(bytes: &Bytes) -> Vec<(i64, i64)> {
        validate_produce_records(bytes, u32::MAX)
            .expect("fetched bytes are whole valid batches")
            .iter()
            .map(|b| (b.header.base_offset, b.header.last_offset()))
            .collect()
    }

    fn file_len(path: &Path) -> u64 {
        std::fs::metadata(path).expect("metadata").len()
    }

    fn seg_file(dir: &Path, base: i64, ext: &str) -> PathBuf {
        segment_path(dir, base, ext)
    }

    fn log_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == LOG_EXT))
            .collect();
        files.sort();
        files
    }

    #[test]
    fn append_and_read_entry_round_trip_data_and_meta() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), LogConfig::default());
        let b1 = simple_batch(3, 10, 1_000);
        let b2 = simple_batch(2, 20, 2_000);
        assert_eq!(
            meta(&mut log, 1, 1, b"blank"),
            AppendInfo {
                base_offset: 0,
                last_offset: -1
            }
        );
        assert_eq!(
            data(&mut log, 2, 1, &b1),
            AppendInfo {
                base_offset: 0,
                last_offset: 2
            }
        );
        assert_eq!(
            meta(&mut log, 3, 2, b"membership"),
            AppendInfo {
                base_offset: 3,
                last_offset: 2
            }
        );
        assert_eq!(
            data(&mut log, 4, 2, &b2),
            AppendInfo {
                base_offset: 3,
                last_offset: 4
            }
        );

        assert_eq!(log.first_index(), Some(1));
        assert_eq!(log.last_index(), Some(4));
        assert_eq!(log.last_term(), Some(2));
        assert_eq!(log.next_index(), Some(5));
        assert_eq!(log.log_start_offset(), 0);
        assert_eq!(log.log_end_offset(), 5);

        let (m1, p1) = log.read_entry(1).expect("read").expect("present");
        assert_eq!(
            (m1.kind, m1.term, m1.base_offset, m1.offset_span),
            (EntryKind::Meta, 1, 0, 0)
        );
        assert_eq!(p1, StoredPayload::Meta(Bytes::from_static(b"blank")));
        let (m3, p3) = log.read_entry(3).expect("read").expect("present");
        assert_eq!((m3.kind, m3.base_offset), (EntryKind::Meta, 3));
        assert_eq!(p3, StoredPayload::Meta(Bytes::from_static(b"membership")));

        let (m4, p4) = log.read_entry(4).expect("read").expect("present");
        assert_eq!(
            (m4.kind, m4.term, m4.base_offset, m4.offset_span),
            (EntryKind::Data, 2, 3, 2)
        );
        assert_eq!(m4.max_timestamp, 2_001);
        let StoredPayload::Batch(stored) = p4 else {
            panic!("expected a batch")
        };
        assert_eq!(stored.len(), b2.len());
        assert_eq!(
            &stored[16..],
            &b2[16..],
            "only the 16-byte prefix may differ"
        );

        assert_eq!(
            log.entry_meta(2).expect("meta"),
            Some(log.read_entry(2).expect("read").expect("present").0)
        );
        assert_eq!(log.read_entry(0).expect("read"), None);
        assert_eq!(log.read_entry(5).expect("read"), None);
    }

    #[test]
    fn stored_batch_has_patched_base_offset_and_epoch_with_a_still_valid_crc() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), LogConfig::default());
        let first = simple_batch(3, 5, 10);
        let second = simple_batch(2, 5, 20);
        assert_eq!(parse_header(&second).expect("header").base_offset, 0);
        data(&mut log, 1, 6, &first);
        meta(&mut log, 2, 7, b"m");
        data(&mut log, 3, 7, &second);
        let Some((_, StoredPayload::Batch(stored))) = log.read_entry(3).expect("read") else {
            panic!("expected a batch")
        };
        let header = parse_header(&stored).expect("header");
        assert_eq!(header.base_offset, 3);
        assert_eq!(header.partition_leader_epoch, 7);
        assert_eq!(header.crc, parse_header(&second).expect("header").crc);
        assert_eq!(batches_in(&stored), vec![(3, 4)]);

        // The .log file holds exactly the stored batches back to back, nothing else.
        log.flush().expect("flush");
        let on_disk = std::fs::read(seg_file(dir.path(), 0, LOG_EXT)).expect("read .log");
        assert_eq!(on_disk.len(), first.len() + second.len());
        assert_eq!(batches_in(&Bytes::from(on_disk)), vec![(0, 2), (3, 4)]);
    }

    #[test]
    fn offsets_are_contiguous_across_data_and_meta_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), config(2_000, 300));
        let mut expected_next = 0i64;
        for index in 1..=60u64 {
            if index % 4 == 0 {
                let info = meta(&mut log, index, index / 10, b"meta");
                assert_eq!(info.base_offset, expected_next);
            } else {
                let n = (index % 3 + 1) as usize;
                let info = data(
                    &mut log,
                    index,
                    index / 10,
                    &simple_batch(n, 30, index as i64),
                );
                assert_eq!(info.base_offset, expected_next);
                assert_eq!(info.last_offset, expected_next + n as i64 - 1);
                expected_next += n as i64;
            }
            assert_eq!(log.log_end_offset(), expected_next);
        }
        assert!(
            log.segment_summaries().len() > 2,
            "test should span segments"
        );
        // Every offset is readable and lands on the batch that contains it.
        for offset in 0..expected_next {
            let slice = log.read(offset, 1, i64::MAX).expect("read");
            let batches = batches_in(&slice.read_bytes().expect("bytes"));
            assert!(
                batches[0].0 <= offset && offset <= batches[0].1,
                "offset {offset}: {batches:?}"
            );
        }
    }

    #[test]
    fn rolls_a_new_segment_by_size_only_before_data_appends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), config(600, 4096));
        let b = batch_of_size(300, 0);
        data(&mut log, 1, 1, &b); // 300
        data(&mut log, 2, 1, &b); // 600: at the limit, but rolling happens before appends
        assert_eq!(log_files(dir.path()).len(), 1);
        meta(&mut log, 3, 1, b"meta does not roll");
        assert_eq!(log_files(dir.path()).len(), 1);
        let info = data(&mut log, 4, 1, &b);
        assert_eq!(info.base_offset, 2);
        assert_eq!(
            log_files(dir.path()),
            vec![
                seg_file(dir.path(), 0, LOG_EXT),
                seg_file(dir.path(), 2, LOG_EXT)
            ]
        );
        let summaries = log.segment_summaries();
        assert_eq!(summaries[0].first_index, Some(1));
        assert_eq!(summaries[0].last_index, Some(3));
        assert_eq!(summaries[0].size_bytes, 600);
        assert_eq!(summaries[1].first_index, Some(4));
        assert!(summaries[1].is_active && !summaries[0].is_active);
        assert_eq!(file_len(&seg_file(dir.path(), 2, LOG_EXT)), 300);
    }

    #[test]
    fn rolls_by_time_once_the_active_segment_holds_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 1_000,
            index_interval_bytes: 4096,
        };
        let mut log = PartitionLog::open(dir.path(), cfg, 0).expect("open");
        let b = simple_batch(1, 10, 0);
        log.append(1, 1, EntryPayload::Meta(b"m"), 5_000)
            .expect("meta");
        log.append(2, 1, EntryPayload::Batch(&b), 5_000)
            .expect("first data, no roll: no data yet");
        assert_eq!(log.segment_summaries().len(), 1);
        log.append(3, 1, EntryPayload::Batch(&b), 5_500)
            .expect("old segment rolls");
        assert_eq!(log.segment_summaries().len(), 2);
        log.append(4, 1, EntryPayload::Batch(&b), 6_000)
            .expect("young segment");
        assert_eq!(log.segment_summaries().len(), 2);
        log.append(5, 1, EntryPayload::Batch(&b), 6_500)
            .expect("rolls again");
        let bases: Vec<i64> = log
            .segment_summaries()
            .iter()
            .map(|s| s.base_offset)
            .collect();
        assert_eq!(bases, vec![0, 1, 3]);
    }

    #[test]
    fn read_returns_whole_batches_starting_at_the_batch_containing_the_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), LogConfig::default());
        for i in 0..4 {
            data(&mut log, i + 1, 1, &simple_batch(3, 10, 0));
        }
        let slice = log.read(4, u32::MAX, i64::MAX).expect("read");
        assert_eq!(slice.first_offset(), 3);
        assert_eq!(slice.end_offset(), 12);
        assert_eq!(
            batches_in(&slice.read_bytes().expect("bytes")),
            vec![(3, 5), (6, 8), (9, 11)]
        );
    }

    #[test]
    fn read_stops_before_the_first_batch_at_or_above_upper_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), LogConfig::default());
        for i in 0..4 {
            data(&mut log, i + 1, 1, &simple_batch(2, 10, 0));
        }
        let slice = log.read(0, u32::MAX, 4).expect("read");
        assert_eq!(
            batches_in(&slice.read_bytes().expect("bytes")),
            vec![(0, 1), (2, 3)]
        );
        assert_eq!(slice.end_offset(), 4);
        let slice = log.read(2, u32::MAX, 5).expect("read");
        assert_eq!(
            batches_in(&slice.read_bytes().expect("bytes")),
            vec![(2, 3), (4, 5)]
        );
        assert!(log.read(4, u32::MAX, 4).expect("read").is_empty());
        assert!(log.read(6, u32::MAX, 4).expect("read").is_empty());
    }

    #[test]
    fn read_returns_the_whole_first_batch_even_when_larger_than_max_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), LogConfig::default());
        let big = batch_of_size(1_000, 0);
        data(&mut log, 1, 1, &big);
        data(&mut log, 2, 1, &batch_of_size(100, 0));
        let slice = log.read(0, 10, i64::MAX).expect("read");
        assert_eq!(slice.len(), 1_000);
        assert_eq!(
            batches_in(&slice.read_bytes().expect("bytes")),
            vec![(0, 0)]
        );
        let slice = log.read(0, 0, i64::MAX).expect("read");
        assert_eq!(slice.len(), 1_000);
    }

    #[test]
    fn read_respects_max_bytes_after_the_first_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), LogConfig::default());
        for i in 0..5 {
            data(&mut log, i + 1, 1, &batch_of_size(100, 0));
        }
        assert_eq!(log.read(0, 250, i64::MAX).expect("read").len(), 200);
        assert_eq!(log.read(0, 300, i64::MAX).expect("read").len(), 300);
        assert_eq!(log.read(1, 299, i64::MAX).expect("read").len(), 200);
        assert_eq!(log.read(0, u32::MAX, i64::MAX).expect("read").len(), 500);
    }

    #[test]
    fn read_at_the_end_is_empty_and_outside_the_log_is_out_of_range() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), LogConfig::default());
        assert!(log.read(0, 100, i64::MAX).expect("empty log").is_empty());
        data(&mut log, 1, 1, &simple_batch(2, 1, 0));
        let at_end = log.read(2, 100, i64::MAX).expect("read");
        assert!(at_end.is_empty());
        assert_eq!(at_end.read_bytes().expect("bytes"), Bytes::new());
        assert!(matches!(
            log.read(3, 100, i64::MAX),
            Err(LogError::OffsetOutOfRange {
                offset: 3,
                log_start: 0,
                log_end: 2
            })
        ));
        assert!(matches!(
            log.read(-1, 100, i64::MAX),
            Err(LogError::OffsetOutOfRange { .. })
        ));
    }

    #[test]
    fn read_skips_meta_entries_and_never_crosses_a_segment_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), config(250, 4096));
        let b = batch_of_size(100, 0);
        data(&mut log, 1, 1, &b);
        meta(&mut log, 2, 1, b"m");
        data(&mut log, 3, 1, &b);
        meta(&mut log, 4, 1, b"m");
        data(&mut log, 5, 1, &b); // 300 bytes in segment 0
        data(&mut log, 6, 1, &b); // rolls
        data(&mut log, 7, 1, &b);
        let slice = log.read(0, u32::MAX, i64::MAX).expect("read");
        assert_eq!(slice.position(), 0);
        assert_eq!(
            batches_in(&slice.read_bytes().expect("bytes")),
            vec![(0, 0), (1, 1), (2, 2)]
        );
        assert_eq!(slice.end_offset(), 3);
        let next = log
            .read(slice.end_offset(), u32::MAX, i64::MAX)
            .expect("read");
        assert_eq!(
            next.path(),
            Some(seg_file(dir.path(), 3, LOG_EXT).as_path())
        );
        assert_eq!(
            batches_in(&next.read_bytes().expect("bytes")),
            vec![(3, 3), (4, 4)]
        );
    }

    #[test]
    fn read_slice_exposes_the_file_and_position_for_zero_copy_sends() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), LogConfig::default());
        data(&mut log, 1, 1, &batch_of_size(100, 0));
        data(&mut log, 2, 1, &batch_of_size(120, 0));
        let slice = log.read(1, u32::MAX, i64::MAX).expect("read");
        assert_eq!((slice.position(), slice.len()), (100, 120));
        let mut buf = vec![0u8; 120];
        slice
            .file()
            .expect("file")
            .read_exact_at(&mut buf, slice.position())
            .expect("pread");
        assert_eq!(Bytes::from(buf), slice.read_bytes().expect("bytes"));
    }

    #[test]
    fn reopen_after_clean_shutdown_keeps_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(400, 150);
        let mut log = open(dir.path(), cfg);
        for i in 1..=12u64 {
            if i % 5 == 0 {
                meta(&mut log, i, 2, b"m");
            } else {
                data(&mut log, i, 2, &simple_batch(2, 40, i as i64 * 10));
            }
        }
        let before: Vec<_> = (1..=12).map(|i| log.read_entry(i).expect("read")).collect();
        let summaries = log.segment_summaries();
        log.mark_clean_shutdown().expect("clean shutdown");
        assert!(dir.path().join(CLEAN_SHUTDOWN_MARKER).exists());
        drop(log);

        let mut log = open(dir.path(), cfg);
        assert!(
            !dir.path().join(CLEAN_SHUTDOWN_MARKER).exists(),
            "marker is consumed"
        );
        let after: Vec<_> = (1..=12).map(|i| log.read_entry(i).expect("read")).collect();
        assert_eq!(before, after);
        assert_eq!(log.segment_summaries(), summaries);
        assert_eq!(log.next_index(), Some(13));
        data(&mut log, 13, 3, &simple_batch(1, 1, 0));
        assert_eq!(log.log_end_offset(), 21);
    }

    #[test]
    fn mutating_after_clean_shutdown_removes_the_marker() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), LogConfig::default());
        data(&mut log, 1, 1, &simple_batch(1, 1, 0));
        log.mark_clean_shutdown().expect("mark");
        data(&mut log, 2, 1, &simple_batch(1, 1, 0));
        assert!(!dir.path().join(CLEAN_SHUTDOWN_MARKER).exists());
    }

    #[test]
    fn reopen_after_unclean_close_keeps_flushed_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(300, 100);
        let mut log = open(dir.path(), cfg);
        for i in 1..=9u64 {
            data(&mut log, i, 1, &simple_batch(1, 50, i as i64));
        }
        meta(&mut log, 10, 1, b"blank");
        log.flush().expect("flush");
        let summaries = log.segment_summaries();
        drop(log);
        let log = open(dir.path(), cfg);
        assert_eq!(log.segment_summaries(), summaries);
        assert_eq!(log.last_index(), Some(10));
        assert_eq!(
            log.read_entry(10).expect("read").map(|(_, p)| p),
            Some(StoredPayload::Meta(Bytes::from_static(b"blank")))
        );
    }

    /// Three flushed batches, then the log is closed with `damage` applied to files.
    fn three_batches_then(dir: &Path, damage: impl FnOnce(&Path)) -> (Vec<Bytes>, LogConfig) {
        let cfg = config(1 << 20, 4096);
        let mut log = open(dir, cfg);
        let batches: Vec<Bytes> = (0..3).map(|i| simple_batch(2, 30, i * 100)).collect();
        for (i, b) in batches.iter().enumerate() {
            data(&mut log, i as u64 + 1, 1, b);
        }
        log.flush().expect("flush");
        drop(log);
        damage(dir);
        (batches, cfg)
    }

    #[test]
    fn recovery_truncates_torn_tail_and_keeps_complete_batches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (batches, cfg) = three_batches_then(dir.path(), |_| {});
        // A fourth append reached .entries but only half its batch reached .log.
        let mut log = open(dir.path(), cfg);
        let fourth = simple_batch(2, 30, 300);
        data(&mut log, 4, 1, &fourth);
        log.flush().expect("flush");
        drop(log);
        let log_path = seg_file(dir.path(), 0, LOG_EXT);
        let full: u64 = batches.iter().map(|b| b.len() as u64).sum();
        OpenOptions::new()
            .write(true)
            .open(&log_path)
            .expect("open")
            .set_len(full + fourth.len() as u64 / 2)
            .expect("tear");

        let mut log = open(dir.path(), cfg);
        assert_eq!(log.last_index(), Some(3));
        assert_eq!(log.log_end_offset(), 6);
        assert_eq!(file_len(&log_path), full);
        assert_eq!(file_len(&seg_file(dir.path(), 0, ENTRIES_EXT)), 64 + 3 * 64);
        let all = log
            .read(0, u32::MAX, i64::MAX)
            .expect("read")
            .read_bytes()
            .expect("bytes");
        assert_eq!(batches_in(&all), vec![(0, 1), (2, 3), (4, 5)]);
        // The log continues where the valid part ends.
        assert_eq!(data(&mut log, 4, 2, &fourth).base_offset, 6);
    }

    #[test]
    fn recovery_rebuilds_a_torn_entries_record_from_its_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (batches, cfg) = three_batches_then(dir.path(), |dir| {
            let path = seg_file(dir, 0, ENTRIES_EXT);
            let len = file_len(&path);
            OpenOptions::new()
                .write(true)
                .open(&path)
                .expect("open")
                .set_len(len - 10)
                .expect("tear");
        });
        let log = open(dir.path(), cfg);
        assert_eq!(log.last_index(), Some(3));
        assert_eq!(log.log_end_offset(), 6);
        let full: u64 = batches.iter().map(|b| b.len() as u64).sum();
        assert_eq!(file_len(&seg_file(dir.path(), 0, LOG_EXT)), full);
        assert_eq!(file_len(&seg_file(dir.path(), 0, ENTRIES_EXT)), 64 + 3 * 64);
    }

    #[test]
    fn recovery_rebuilds_entries_records_with_a_bad_checksum_from_their_batches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (batches, cfg) = three_batches_then(dir.path(), |dir| {
            let path = seg_file(dir, 0, ENTRIES_EXT);
            let file = OpenOptions::new().write(true).open(&path).expect("open");
            use std::os::unix::fs::FileExt;
            file.write_all_at(&[0xAB], 64 + 64 + 5)
                .expect("corrupt slot 1");
        });
        let log = open(dir.path(), cfg);
        assert_eq!(log.last_index(), Some(3));
        assert_eq!(log.log_end_offset(), 6);
        for (i, batch) in batches.iter().enumerate() {
            let stored = log.read_entry(i as u64 + 1).expect("read").map(|(m, _)| (m.term, m.length as usize));
            assert_eq!(stored, Some((1, batch.len())));
        }
    }

    /// Paths of what group commit would sync now.
    fn group_commit_files(log: &mut PartitionLog) -> Vec<String> {
        let pending = log.take_unsynced();
        let names = pending
            .files
            .iter()
            .map(|(_, p)| p.extension().and_then(|e| e.to_str()).unwrap_or_default().to_string())
            .collect();
        pending.sync().expect("sync");
        names
    }

    #[test]
    fn group_commit_syncs_entries_only_for_the_pinned_header_and_meta_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), config(1 << 20, 100));
        data(&mut log, 1, 1, &simple_batch(2, 30, 0));
        assert_eq!(group_commit_files(&mut log), vec![LOG_EXT, ENTRIES_EXT], "the first entry pins the header");
        data(&mut log, 2, 1, &simple_batch(2, 30, 100));
        data(&mut log, 3, 1, &simple_batch(2, 30, 200));
        assert_eq!(group_commit_files(&mut log), vec![LOG_EXT]);
        meta(&mut log, 4, 2, b"blank");
        assert_eq!(group_commit_files(&mut log), vec![META_EXT, ENTRIES_EXT]);
        data(&mut log, 5, 2, &simple_batch(2, 30, 300));
        assert_eq!(group_commit_files(&mut log), vec![LOG_EXT]);
        assert!(group_commit_files(&mut log).is_empty());
    }

    /// What a power loss after group commit can leave: the batches in `.log`, the records
    /// of the last `lost` data entries missing from `.entries`.
    fn lose_entries_records(dir: &Path, lost: u64) {
        let path = seg_file(dir, 0, ENTRIES_EXT);
        let len = file_len(&path);
        OpenOptions::new().write(true).open(&path).expect("open").set_len(len - lost * 64).expect("cut");
    }

    #[test]
    fn recovery_rebuilds_the_records_group_commit_left_unsynced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(1 << 20, 100);
        let mut log = open(dir.path(), cfg);
        data(&mut log, 1, 1, &simple_batch(2, 30, 0));
        meta(&mut log, 2, 2, b"blank");
        for i in 3..=6u64 {
            data(&mut log, i, 2, &simple_batch(3, 30, i as i64 * 100));
        }
        log.take_unsynced().sync().expect("group commit");
        let before: Vec<_> = (1..=6).map(|i| log.read_entry(i).expect("read")).collect();
        let ts_lookup = log.offset_for_timestamp(450).expect("by time");
        drop(log);
        lose_entries_records(dir.path(), 3);

        let mut log = open(dir.path(), cfg);
        assert_eq!(log.last_index(), Some(6));
        assert_eq!(log.last_term(), Some(2));
        assert_eq!(log.log_end_offset(), 2 + 4 * 3);
        let after: Vec<_> = (1..=6).map(|i| log.read_entry(i).expect("read")).collect();
        assert_eq!(before, after);
        assert_eq!(log.offset_for_timestamp(450).expect("by time"), ts_lookup);
        assert!(ts_lookup.is_some());
        assert_eq!(data(&mut log, 7, 3, &simple_batch(1, 1, 0)).base_offset, 14);
    }

    #[test]
    fn recovery_does_not_rebuild_past_a_meta_frame_no_record_references() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (batches, cfg) = three_batches_then(dir.path(), |_| {});
        let mut log = open(dir.path(), cfg);
        meta(&mut log, 4, 2, b"membership");
        data(&mut log, 5, 2, &simple_batch(1, 1, 0));
        log.take_unsynced().sync().expect("group commit");
        drop(log);
        // The meta entry's record is gone but its frame is not: where it stood among the
        // batches after it is unknown, so nothing after the last record is kept.
        lose_entries_records(dir.path(), 2);
        let log = open(dir.path(), cfg);
        assert_eq!(log.last_index(), Some(3));
        let full: u64 = batches.iter().map(|b| b.len() as u64).sum();
        assert_eq!(file_len(&seg_file(dir.path(), 0, LOG_EXT)), full);
        assert_eq!(file_len(&seg_file(dir.path(), 0, META_EXT)), 0);
    }

    #[test]
    fn a_meta_entry_is_written_after_a_barrier_and_data_after_it_after_another() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), config(1 << 20, 100));
        assert!(!log.barrier_due(true) && !log.barrier_due(false), "a new log has nothing to protect");
        meta(&mut log, 1, 1, b"membership");
        drop(log);
        let mut log = open(dir.path(), config(1 << 20, 100));
        assert!(log.barrier_due(true), "what recovery read may be only in the page cache");
        assert!(log.barrier_due(false));
        log.take_barrier().expect("barrier").sync().expect("sync");
        assert!(log.barrier_due(true), "passed only once the caller says it synced");
        log.barrier_synced();
        assert!(!log.barrier_due(true));
        assert!(!log.barrier_due(false));
        data(&mut log, 2, 1, &simple_batch(1, 1, 0));
        assert!(log.barrier_due(true));
        assert!(!log.barrier_due(false));
        let barrier = log.take_barrier().expect("barrier");
        let names: Vec<_> = barrier.files.iter().filter_map(|(_, p)| p.extension()?.to_str().map(str::to_string)).collect();
        assert_eq!(names, vec![LOG_EXT, META_EXT, ENTRIES_EXT]);
        barrier.sync().expect("sync");
        log.barrier_synced();
        meta(&mut log, 3, 2, b"blank");
        assert!(log.barrier_due(false));
        assert!(!log.barrier_due(true));
        // A caller that did not take it gets it synced inside append.
        data(&mut log, 4, 2, &simple_batch(1, 1, 0));
        assert!(!log.barrier_due(false));
        assert!(log.barrier_due(true));
        // The barrier leaves group commit's work alone.
        assert_eq!(group_commit_files(&mut log), vec![LOG_EXT, META_EXT, ENTRIES_EXT]);
    }

    #[test]
    fn recovery_truncates_a_batch_whose_bytes_fail_their_crc() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (batches, cfg) = three_batches_then(dir.path(), |dir| {
            use std::os::unix::fs::FileExt;
            let file = OpenOptions::new()
                .write(true)
                .open(seg_file(dir, 0, LOG_EXT))
                .expect("open");
            let last_byte = (batches_len_hint() - 1) as u64;
            file.write_all_at(&[0xFF], last_byte).expect("flip");
        });
        let log = open(dir.path(), cfg);
        assert_eq!(log.last_index(), Some(2));
        let kept = (batches[0].len() + batches[1].len()) as u64;
        assert_eq!(file_len(&seg_file(dir.path(), 0, LOG_EXT)), kept);
    }

    /// Total size of the batches made by `three_batches_then`.
    fn batches_len_hint() -> usize {
        (0..3).map(|i| simple_batch(2, 30, i * 100).len()).sum()
    }

    #[test]
    fn recovery_truncates_garbage_appended_to_the_log_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (batches, cfg) = three_batches_then(dir.path(), |dir| {
            let mut f = OpenOptions::new()
                .append(true)
                .open(seg_file(dir, 0, LOG_EXT))
                .expect("open");
            f.write_all(&[0x5A; 333]).expect("garbage");
        });
        let mut log = open(dir.path(), cfg);
        assert_eq!(log.last_index(), Some(3));
        let full: u64 = batches.iter().map(|b| b.len() as u64).sum();
        assert_eq!(file_len(&seg_file(dir.path(), 0, LOG_EXT)), full);
        let info = data(&mut log, 4, 1, &simple_batch(1, 1, 0));
        assert_eq!(info.base_offset, 6);
        let slice = log.read(6, u32::MAX, i64::MAX).expect("read");
        assert_eq!(slice.position(), full);
        assert_eq!(
            batches_in(&slice.read_bytes().expect("bytes")),
            vec![(6, 6)]
        );
    }

    #[test]
    fn recovery_drops_a_meta_entry_whose_payload_was_torn() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, cfg) = three_batches_then(dir.path(), |_| {});
        let mut log = open(dir.path(), cfg);
        meta(&mut log, 4, 2, b"membership change payload");
        data(&mut log, 5, 2, &simple_batch(1, 1, 0));
        log.flush().expect("flush");
        drop(log);
        let path = seg_file(dir.path(), 0, META_EXT);
        let len = file_len(&path);
        OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open")
            .set_len(len - 4)
            .expect("tear");
        let log = open(dir.path(), cfg);
        assert_eq!(log.last_index(), Some(3));
        assert_eq!(file_len(&path), 0);
        assert_eq!(log.log_end_offset(), 6);
    }

    #[test]
    fn recovery_with_a_clean_marker_still_catches_inconsistent_sizes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(1 << 20, 4096);
        let mut log = open(dir.path(), cfg);
        for i in 1..=3 {
            data(&mut log, i, 1, &simple_batch(1, 10, 0));
        }
        log.mark_clean_shutdown().expect("mark");
        drop(log);
        let path = seg_file(dir.path(), 0, LOG_EXT);
        let len = file_len(&path);
        OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open")
            .set_len(len - 1)
            .expect("tear");
        let log = open(dir.path(), cfg);
        assert_eq!(log.last_index(), Some(2));
    }

    fn multi_segment_log(dir: &Path, cfg: LogConfig) -> PartitionLog {
        // 3 batches of 100 bytes per segment (segment_bytes 300), plus a meta entry.
        let mut log = open(dir, cfg);
        let mut index = 1;
        for seg in 0..3 {
            for i in 0..3 {
                data(
                    &mut log,
                    index,
                    1 + seg,
                    &batch_of_size(100, (seg * 10 + i) as i64 * 100),
                );
                index += 1;
            }
            meta(&mut log, index, 1 + seg, b"m");
            index += 1;
        }
        log
    }

    #[test]
    fn recovery_rebuilds_missing_or_inconsistent_time_indexes_to_the_same_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(300, 150);
        let mut log = multi_segment_log(dir.path(), cfg);
        log.mark_clean_shutdown().expect("mark");
        drop(log);
        let bases = [0i64, 3, 6];
        let originals: Vec<Vec<u8>> = bases
            .iter()
            .map(|b| std::fs::read(seg_file(dir.path(), *b, TIME_INDEX_EXT)).expect("read"))
            .collect();
        assert!(originals.iter().all(|o| !o.is_empty() && o.len() % 16 == 0));

        // Missing, wrong size, and pointing past the end of its segment.
        std::fs::remove_file(seg_file(dir.path(), 0, TIME_INDEX_EXT)).expect("rm");
        OpenOptions::new()
            .append(true)
            .open(seg_file(dir.path(), 3, TIME_INDEX_EXT))
            .expect("open")
            .write_all(&[1, 2, 3])
            .expect("append");
        let mut past_end = Vec::new();
        past_end.extend_from_slice(&i64::MAX.to_be_bytes());
        past_end.extend_from_slice(&1_000i64.to_be_bytes());
        OpenOptions::new()
            .append(true)
            .open(seg_file(dir.path(), 6, TIME_INDEX_EXT))
            .expect("open")
            .write_all(&past_end)
            .expect("append");

        let log = open(dir.path(), cfg);
        for (base, original) in bases.iter().zip(&originals) {
            let rebuilt = std::fs::read(seg_file(dir.path(), *base, TIME_INDEX_EXT)).expect("read");
            assert_eq!(&rebuilt, original, "segment {base}");
        }
        assert_eq!(
            log.offset_for_timestamp(1_050).expect("lookup"),
            Some((4, 1_100))
        );
    }

    #[test]
    fn recovery_refuses_a_damaged_closed_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(300, 150);
        let mut log = multi_segment_log(dir.path(), cfg);
        log.flush().expect("flush");
        drop(log);
        let path = seg_file(dir.path(), 3, LOG_EXT);
        let len = file_len(&path);
        OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open")
            .set_len(len - 1)
            .expect("cut");
        let err = PartitionLog::open(dir.path(), cfg, 0).expect_err("closed segment damaged");
        assert!(matches!(err, LogError::CorruptSegment { .. }), "{err}");
    }

    #[test]
    fn recovery_deletes_an_empty_newest_segment_and_leftover_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(300, 150);
        let mut log = multi_segment_log(dir.path(), cfg);
        log.flush().expect("flush");
        drop(log);
        // The newest segment lost all its entries (crash right after a roll).
        let entries = seg_file(dir.path(), 6, ENTRIES_EXT);
        OpenOptions::new()
            .write(true)
            .open(&entries)
            .expect("open")
            .set_len(64)
            .expect("cut");
        // And a purge left a side file of an older segment behind.
        std::fs::write(
            seg_file(dir.path(), 0, META_EXT).with_file_name("00000000000000000000.meta"),
            b"",
        )
        .expect("touch");
        std::fs::remove_file(seg_file(dir.path(), 0, ENTRIES_EXT)).expect("rm");

        let mut log = open(dir.path(), cfg);
        assert!(!entries.exists());
        assert!(!seg_file(dir.path(), 0, LOG_EXT).exists());
        assert_eq!(log.first_index(), Some(5));
        assert_eq!(log.last_index(), Some(8));
        assert_eq!(log.log_start_offset(), 3);
        assert_eq!(log.log_end_offset(), 6);
        assert_eq!(data(&mut log, 9, 3, &batch_of_size(100, 0)).base_offset, 6);
    }

    #[test]
    fn recovery_replaces_a_torn_header_of_a_fresh_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = open(dir.path(), LogConfig::default());
        drop(log);
        let entries = seg_file(dir.path(), 0, ENTRIES_EXT);
        OpenOptions::new()
            .write(true)
            .open(&entries)
            .expect("open")
            .set_len(30)
            .expect("tear");
        let mut log = open(dir.path(), LogConfig::default());
        assert_eq!(log.next_index(), None);
        assert_eq!(meta(&mut log, 7, 1, b"m").base_offset, 0);
        assert_eq!(file_len(&entries), 128);
    }

    #[test]
    fn first_append_of_a_fresh_log_picks_the_first_index_and_it_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), LogConfig::default());
        assert_eq!(
            (log.first_index(), log.last_index(), log.next_index()),
            (None, None, None)
        );
        meta(&mut log, 42, 3, b"first");
        log.flush().expect("flush");
        drop(log);
        let mut log = open(dir.path(), LogConfig::default());
        assert_eq!(log.first_index(), Some(42));
        assert!(matches!(
            log.append(44, 3, EntryPayload::Meta(b"x"), 0),
            Err(LogError::NonContiguousIndex {
                expected: 43,
                got: 44
            })
        ));
    }

    #[test]
    fn append_rejects_gaps_lower_terms_and_corrupt_batches_without_writing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), LogConfig::default());
        data(&mut log, 1, 5, &simple_batch(1, 1, 0));
        let good = simple_batch(1, 1, 0);
        assert!(matches!(
            log.append(3, 5, EntryPayload::Batch(&good), 0),
            Err(LogError::NonContiguousIndex {
                expected: 2,
                got: 3
            })
        ));
        assert!(matches!(
            log.append(2, 4, EntryPayload::Batch(&good), 0),
            Err(LogError::TermRegression { last: 5, got: 4 })
        ));
        let mut bad = good.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(
            log.append(2, 5, EntryPayload::Batch(&Bytes::from(bad)), 0),
            Err(LogError::CorruptBatch { .. })
        ));
        let mut two = good.to_vec();
        two.extend_from_slice(&good);
        assert!(matches!(
            log.append(2, 5, EntryPayload::Batch(&Bytes::from(two)), 0),
            Err(LogError::CorruptBatch { .. })
        ));
        assert_eq!(log.last_index(), Some(1));
        assert_eq!(log.log_end_offset(), 1);
        assert_eq!(data(&mut log, 2, 5, &good).base_offset, 1);
    }

    #[test]
    fn truncate_from_across_segment_boundaries_then_append_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(300, 150);
        let mut log = multi_segment_log(dir.path(), cfg);
        // Segments: [idx 1-4, off 0-2], [idx 5-8, off 3-5], [idx 9-12, off 6-8].
        assert_eq!(log.segment_summaries().len(), 3);
        log.truncate_from(6).expect("truncate");
        assert_eq!(log.segment_summaries().len(), 2);
        assert!(!seg_file(dir.path(), 6, LOG_EXT).exists());
        assert_eq!(log.last_index(), Some(5));
        assert_eq!(log.last_term(), Some(2));
        assert_eq!(log.log_end_offset(), 4);
        assert_eq!(file_len(&seg_file(dir.path(), 3, LOG_EXT)), 100);
        assert_eq!(log.read_entry(6).expect("read"), None);
        assert!(log.read(4, 100, i64::MAX).expect("at end").is_empty());
        assert!(matches!(
            log.read(5, 100, i64::MAX),
            Err(LogError::OffsetOutOfRange { .. })
        ));
        assert_eq!(
            log.offset_for_timestamp(1_050).expect("ts"),
            None,
            "truncated batches leave the time index"
        );
        assert_eq!(log.max_timestamp_entry().expect("max"), Some((3, 1_000)));

        // A new leader's entries replace the old tail.
        let info = data(&mut log, 6, 4, &batch_of_size(100, 7_000));
        assert_eq!(info.base_offset, 4);
        let Some((_, StoredPayload::Batch(stored))) = log.read_entry(6).expect("read") else {
            panic!("expected a batch")
        };
        assert_eq!(
            parse_header(&stored)
                .expect("header")
                .partition_leader_epoch,
            4
        );
        log.flush().expect("flush");
        drop(log);
        let log = open(dir.path(), cfg);
        assert_eq!(log.last_index(), Some(6));
        assert_eq!(log.log_end_offset(), 5);
        assert_eq!(
            log.offset_for_timestamp(1_050).expect("ts"),
            Some((4, 7_000))
        );
    }

    #[test]
    fn truncate_from_the_first_entry_of_a_later_segment_removes_that_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(300, 150);
        let mut log = multi_segment_log(dir.path(), cfg);
        log.truncate_from(9).expect("truncate");
        assert_eq!(log.segment_summaries().len(), 2);
        assert_eq!(log.last_index(), Some(8));
        assert_eq!(log.log_end_offset(), 6);
        // The next data append rolls again since segment 3 is full.
        assert_eq!(data(&mut log, 9, 5, &batch_of_size(100, 0)).base_offset, 6);
        assert_eq!(log.segment_summaries().len(), 3);
    }

    #[test]
    fn truncate_from_the_first_index_empties_the_log_but_keeps_its_position() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), LogConfig::default());
        meta(&mut log, 10, 1, b"m");
        data(&mut log, 11, 1, &simple_batch(2, 1, 0));
        log.truncate_from(10).expect("truncate");
        assert_eq!((log.first_index(), log.last_index()), (None, None));
        assert_eq!(log.next_index(), Some(10));
        assert_eq!(log.log_end_offset(), 0);
        drop(log);
        let mut log = open(dir.path(), LogConfig::default());
        assert_eq!(log.next_index(), Some(10));
        assert_eq!(data(&mut log, 10, 2, &simple_batch(1, 1, 0)).base_offset, 0);
        // Past the end is a no-op.
        log.truncate_from(50).expect("no-op");
        assert_eq!(log.last_index(), Some(10));
    }

    #[test]
    fn purge_through_deletes_only_whole_closed_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(300, 150);
        let mut log = multi_segment_log(dir.path(), cfg);
        log.purge_through(7).expect("purge");
        assert_eq!(log.first_index(), Some(5));
        assert_eq!(log.log_start_offset(), 3);
        assert!(!seg_file(dir.path(), 0, ENTRIES_EXT).exists());
        assert_eq!(log.read_entry(4).expect("read"), None);
        assert!(matches!(
            log.read(2, 100, i64::MAX),
            Err(LogError::OffsetOutOfRange { .. })
        ));
        assert_eq!(
            batches_in(
                &log.read(3, 1, i64::MAX)
                    .expect("read")
                    .read_bytes()
                    .expect("bytes")
            ),
            vec![(3, 3)]
        );
        assert!(matches!(
            log.truncate_from(2),
            Err(LogError::IndexBeforeStart { index: 2, first: 5 })
        ));
        assert_eq!(log.end_offset_after(4).expect("hw"), Some(3));

        log.purge_through(1_000).expect("purge");
        assert_eq!(
            log.segment_summaries().len(),
            1,
            "the active segment is never purged"
        );
        assert_eq!(log.first_index(), Some(9));
        drop(log);
        let log = open(dir.path(), cfg);
        assert_eq!((log.first_index(), log.last_index()), (Some(9), Some(12)));
        assert_eq!(log.log_start_offset(), 6);
    }

    #[test]
    fn reset_to_empties_the_log_and_pins_the_next_index_and_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(300, 150);
        let mut log = multi_segment_log(dir.path(), cfg);
        assert!(matches!(
            log.reset_to(1, -1, 0),
            Err(LogError::InvalidArgument { .. })
        ));
        log.reset_to(100, 5_000, 0).expect("reset");
        let check = |log: &PartitionLog| {
            assert_eq!(
                (log.first_index(), log.last_index(), log.last_term()),
                (None, None, None)
            );
            assert_eq!(log.next_index(), Some(100));
            assert_eq!(
                (log.log_start_offset(), log.log_end_offset()),
                (5_000, 5_000)
            );
            assert_eq!(log.end_offset_after(99).expect("hw"), Some(5_000));
            assert!(log.read(5_000, 100, i64::MAX).expect("read").is_empty());
        };
        check(&log);
        assert_eq!(
            log_files(dir.path()),
            vec![seg_file(dir.path(), 5_000, LOG_EXT)]
        );
        drop(log);
        let mut log = open(dir.path(), cfg);
        check(&log);
        assert!(matches!(
            log.append(99, 9, EntryPayload::Meta(b"x"), 0),
            Err(LogError::NonContiguousIndex {
                expected: 100,
                got: 99
            })
        ));
        assert_eq!(
            data(&mut log, 100, 9, &simple_batch(2, 1, 0)).base_offset,
            5_000
        );
        assert_eq!(log.log_end_offset(), 5_002);
    }

    #[test]
    fn an_interrupted_reset_is_completed_on_open_and_a_torn_marker_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(300, 150);
        let mut log = multi_segment_log(dir.path(), cfg);
        log.flush().expect("flush");
        drop(log);
        std::fs::write(
            dir.path().join(RESET_MARKER),
            &encode_reset_marker(50, 77)[..10],
        )
        .expect("torn");
        let log = open(dir.path(), cfg);
        assert_eq!(log.last_index(), Some(12), "torn marker: nothing was reset");
        assert!(!dir.path().join(RESET_MARKER).exists());
        drop(log);
        write_reset_marker(dir.path(), 50, 77).expect("marker");
        let log = open(dir.path(), cfg);
        assert_eq!(
            (log.last_index(), log.next_index(), log.log_end_offset()),
            (None, Some(50), 77)
        );
        assert_eq!(
            log_files(dir.path()),
            vec![seg_file(dir.path(), 77, LOG_EXT)]
        );
    }

    #[test]
    fn offset_for_timestamp_returns_the_first_batch_reaching_the_timestamp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = config(250, 100);
        let mut log = open(dir.path(), cfg);
        // Max timestamps out of order, as producers may send them; 2 records each.
        let stamps = [100, 300, 200, 400, 350, 500, 450];
        for (i, ts) in stamps.iter().enumerate() {
            data(&mut log, i as u64 + 1, 1, &simple_batch(2, 40, ts - 1));
        }
        assert!(log.segment_summaries().len() > 1);
        let lookup = |ts| log.offset_for_timestamp(ts).expect("lookup");
        assert_eq!(lookup(-5), Some((0, 100)));
        assert_eq!(lookup(100), Some((0, 100)));
        assert_eq!(lookup(101), Some((2, 300)));
        assert_eq!(lookup(250), Some((2, 300)));
        assert_eq!(lookup(301), Some((6, 400)));
        assert_eq!(lookup(401), Some((10, 500)));
        assert_eq!(lookup(500), Some((10, 500)));
        assert_eq!(lookup(501), None);
        assert_eq!(log.max_timestamp_entry().expect("max"), Some((11, 500)));
    }

    #[test]
    fn max_timestamp_entry_prefers_the_earliest_batch_with_the_largest_timestamp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), config(1 << 20, 100));
        assert_eq!(log.max_timestamp_entry().expect("max"), None);
        for (i, ts) in [10, 90, 40, 90, 20].iter().enumerate() {
            data(&mut log, i as u64 + 1, 1, &simple_batch(3, 40, ts - 2));
        }
        assert_eq!(log.max_timestamp_entry().expect("max"), Some((5, 90)));
    }

    #[test]
    fn last_offset_for_term_follows_offset_for_leader_epoch_semantics() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), config(150, 4096));
        assert_eq!(log.last_offset_for_term(1).expect("lookup"), None);
        meta(&mut log, 1, 1, b"blank");
        data(&mut log, 2, 1, &batch_of_size(100, 0)); // offset 0
        data(&mut log, 3, 1, &batch_of_size(100, 0)); // offset 1
        meta(&mut log, 4, 3, b"blank"); // term 3 starts at offset 2
        data(&mut log, 5, 3, &batch_of_size(100, 0)); // offset 2, new segment
        data(&mut log, 6, 3, &batch_of_size(100, 0)); // offset 3
        meta(&mut log, 7, 6, b"blank"); // term 6 starts at offset 4
        data(&mut log, 8, 6, &batch_of_size(100, 0)); // offset 4, new segment
        assert_eq!(log.segment_summaries().len(), 3);
        let lookup = |t| log.last_offset_for_term(t).expect("lookup");
        assert_eq!(lookup(0), None);
        assert_eq!(lookup(1), Some((1, 2)));
        assert_eq!(lookup(2), Some((1, 2)));
        assert_eq!(lookup(3), Some((3, 4)));
        assert_eq!(lookup(5), Some((3, 4)));
        assert_eq!(lookup(6), Some((6, 5)));
        assert_eq!(lookup(9), Some((6, 5)));
    }

    #[test]
    fn end_offset_after_maps_raft_indexes_to_high_watermarks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), LogConfig::default());
        meta(&mut log, 1, 1, b"m");
        data(&mut log, 2, 1, &simple_batch(3, 1, 0));
        meta(&mut log, 3, 1, b"m");
        data(&mut log, 4, 1, &simple_batch(2, 1, 0));
        let hw = |i| log.end_offset_after(i).expect("hw");
        assert_eq!(hw(0), Some(0));
        assert_eq!(hw(1), Some(0));
        assert_eq!(hw(2), Some(3));
        assert_eq!(hw(3), Some(3));
        assert_eq!(hw(4), Some(5));
        assert_eq!(hw(5), None);
    }

    #[test]
    fn flush_without_changes_succeeds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), LogConfig::default());
        log.flush().expect("flush");
        data(&mut log, 1, 1, &simple_batch(1, 1, 0));
        log.flush().expect("flush");
        log.flush().expect("flush again");
    }

    #[test]
    fn concurrent_readers_see_consistent_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = open(dir.path(), config(500, 100));
        for i in 0..20u64 {
            data(&mut log, i + 1, 1, &simple_batch(2, 30, i as i64));
        }
        let log = &log;
        std::thread::scope(|scope| {
            for t in 0..4i64 {
                scope.spawn(move || {
                    for offset in (t..40).step_by(4) {
                        let slice = log.read(offset, 1, i64::MAX).expect("read");
                        let got = batches_in(&slice.read_bytes().expect("bytes"));
                        assert_eq!(got, vec![(offset / 2 * 2, offset / 2 * 2 + 1)]);
                    }
                });
            }
        });
    }

    #[test]
    fn partition_log_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<PartitionLog>();
        assert_send_sync::<ReadSlice>();
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Data {
                records: usize,
                value_len: usize,
                ts: i64,
            },
            Meta(Vec<u8>),
            Truncate(u64),
            Purge(u64),
            Reopen {
                clean: bool,
            },
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                6 => (1usize..4, 0usize..120, 0i64..1000)
                    .prop_map(|(records, value_len, ts)| Op::Data { records, value_len, ts }),
                2 => proptest::collection::vec(any::<u8>(), 0..20).prop_map(Op::Meta),
                1 => (0u64..6).prop_map(Op::Truncate),
                1 => (0u64..30).prop_map(Op::Purge),
                1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
            ]
        }

        #[derive(Debug, Clone)]
        struct ModelEntry {
            index: u64,
            term: u64,
            base_offset: i64,
            span: u32,
            payload: Bytes,
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
            #[test]
            fn log_matches_a_simple_model_through_appends_truncation_purge_and_reopen(
                ops in proptest::collection::vec(op(), 1..40),
            ) {
                let dir = tempfile::tempdir().expect("tempdir");
                let cfg = config(400, 200);
                let mut log = open(dir.path(), cfg);
                let mut model: Vec<ModelEntry> = Vec::new();
                let mut next_index = 1u64;
                let mut next_offset = 0i64;
                let mut term = 1u64;
                for op in ops {
                    match op {
                        Op::Data { records, value_len, ts } => {
                            let b = simple_batch(records, value_len, ts);
                            let info = data(&mut log, next_index, term, &b);
                            prop_assert_eq!(info.base_offset, next_offset);
                            model.push(ModelEntry { index: next_index, term, base_offset: next_offset, span: records as u32, payload: b });
                            next_offset += records as i64;
                            next_index += 1;
                        }
                        Op::Meta(payload) => {
                            meta(&mut log, next_index, term, &payload);
                            model.push(ModelEntry { index: next_index, term, base_offset: next_offset, span: 0, payload: Bytes::from(payload) });
                            next_index += 1;
                        }
                        Op::Truncate(back) => {
                            let first = model.first().map(|e| e.index);
                            let target = next_index.saturating_sub(back);
                            if first.is_some_and(|f| target >= f) {
                                log.truncate_from(target).expect("truncate");
                                while model.last().is_some_and(|e| e.index >= target) {
                                    let e = model.pop().expect("non-empty");
                                    next_offset = e.base_offset;
                                }
                                next_index = target;
                                term += 1;
                            }
                        }
                        Op::Purge(upto) => {
                            let old_first = log.first_index();
                            let old_segments = log.segment_summaries().len();
                            log.purge_through(upto).expect("purge");
                            let new_first = log.first_index();
                            prop_assert!(new_first >= old_first);
                            prop_assert!(!log.segment_summaries().is_empty());
                            let removed = old_segments - log.segment_summaries().len();
                            // Only whole segments ending at or before `upto` go.
                            prop_assert!(model.iter().filter(|e| new_first.is_some_and(|f| e.index < f)).all(|e| e.index <= upto));
                            if removed == 0 {
                                prop_assert_eq!(new_first, old_first);
                            }
                            model.retain(|e| new_first.is_some_and(|f| e.index >= f));
                        }
                        Op::Reopen { clean } => {
                            if clean {
                                log.mark_clean_shutdown().expect("mark");
                            } else {
                                log.flush().expect("flush");
                            }
                            drop(log);
                            log = open(dir.path(), cfg);
                        }
                    }
                    prop_assert_eq!(log.last_index(), model.last().map(|e| e.index));
                    prop_assert_eq!(log.first_index(), model.first().map(|e| e.index));
                    prop_assert_eq!(log.log_end_offset(), next_offset);
                    if let Some(first) = model.first() {
                        prop_assert_eq!(log.log_start_offset(), first.base_offset);
                    }
                }
                // Every entry reads back; every offset fetches its batch.
                for e in &model {
                    let (m, payload) = log.read_entry(e.index).expect("read").expect("present");
                    prop_assert_eq!((m.term, m.base_offset, m.offset_span), (e.term, e.base_offset, e.span));
                    match payload {
                        StoredPayload::Meta(p) => prop_assert_eq!(p, e.payload.clone()),
                        StoredPayload::Batch(b) => {
                            prop_assert_eq!(&b[16..], &e.payload[16..]);
                            prop_assert_eq!(parse_header(&b).expect("header").base_offset, e.base_offset);
                        }
                    }
                }
                for e in model.iter().filter(|e| e.span > 0) {
                    for offset in e.base_offset..e.base_offset + i64::from(e.span) {
                        let slice = log.read(offset, 1, i64::MAX).expect("read");
                        let got = batches_in(&slice.read_bytes().expect("bytes"));
                        prop_assert_eq!(got, vec![(e.base_offset, e.base_offset + i64::from(e.span) - 1)]);
                    }
                }
            }
        }
    }
}

/// Files written but not yet synced, taken from the log by `PartitionLog::take_unsynced`.
#[derive(Debug, Default)]
pub struct PendingSync {
    files: Vec<(Arc<File>, PathBuf)>,
    dir: Option<PathBuf>,
}

impl PendingSync {
    /// True when there is nothing to sync.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.dir.is_none()
    }

    /// fdatasyncs each file in order, then the directory if segments were created.
    pub fn sync(self) -> Result<(), LogError> {
        for (file, path) in &self.files {
            codec::sync_data(file, path)?;
        }
        if let Some(dir) = &self.dir {
            codec::sync_dir(dir)?;
        }
        Ok(())
    }
}
