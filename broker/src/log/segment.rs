//! One segment of a partition: its four files (`.log`, `.entries`, `.meta`,
//! `.timeindex`), the constant-size summary kept in memory for it, appends, truncation,
//! open-time consistency checks, crash recovery and lookups inside it. Deciding which
//! segment to use (rolling, purging, routing a lookup) lives in `partition_log.rs`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tracing::warn;

use super::batch::{self, BatchHeader, ATTRIBUTES_AT, BATCH_HEADER_SIZE, BROKER_PREFIX_LEN};
use super::codec::{self, FieldReader, FieldWriter};
use super::entry_index::{
    self, EntryKind, EntryMeta, RecordScanner, SegmentHeader, ENTRY_RECORD_SIZE, META_FRAME_HEADER,
    NO_TIMESTAMP, SEGMENT_HEADER_SIZE,
};
use super::error::LogError;
use super::open_files::LogFile;
use super::time_index::{self, TimeIndexTracker, TIME_INDEX_ENTRY_SIZE};

pub(crate) const LOG_EXT: &str = "log";
pub(crate) const ENTRIES_EXT: &str = "entries";
pub(crate) const META_EXT: &str = "meta";
pub(crate) const TIME_INDEX_EXT: &str = "timeindex";
/// Deletion order matters: `.entries` defines a segment, so it goes first.
pub(crate) const SEGMENT_EXTS: [&str; 4] = [ENTRIES_EXT, LOG_EXT, META_EXT, TIME_INDEX_EXT];
/// Buffer size for streaming CRC checks and time-index rebuilds.
const STREAM_CHUNK: usize = 64 * 1024;

/// `<dir>/<base offset, 20 digits>.<ext>`.
pub(crate) fn segment_path(dir: &Path, base_offset: i64, ext: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{ext}"))
}

/// Base offset and extension of a segment file name, or `None` for other files.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<(i64, &'static str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ext = SEGMENT_EXTS.into_iter().find(|known| *known == ext)?;
    let base: i64 = stem.parse().ok()?;
    Some((base, ext))
}

/// Partition leader epoch stamped into stored batches: the raft term truncated to i32.
pub(crate) fn epoch_for_term(term: u64) -> i32 {
    term as i32
}

struct Paths {
    log: PathBuf,
    entries: PathBuf,
    meta: PathBuf,
    timeindex: PathBuf,
}

impl Paths {
    fn new(dir: &Path, base_offset: i64) -> Self {
        Paths {
            log: segment_path(dir, base_offset, LOG_EXT),
            entries: segment_path(dir, base_offset, ENTRIES_EXT),
            meta: segment_path(dir, base_offset, META_EXT),
            timeindex: segment_path(dir, base_offset, TIME_INDEX_EXT),
        }
    }
}

/// The segment's files, open while in use (`open_files`); each knows whether it was
/// written since its last fdatasync.
struct Files {
    log: LogFile,
    entries: LogFile,
    meta: LogFile,
    timeindex: LogFile,
}

impl Files {
    fn open(paths: Paths, truncate: bool) -> Result<Files, LogError> {
        Ok(Files {
            log: LogFile::open(paths.log, truncate)?,
            entries: LogFile::open(paths.entries, truncate)?,
            meta: LogFile::open(paths.meta, truncate)?,
            timeindex: LogFile::open(paths.timeindex, truncate)?,
        })
    }

    /// In the order they must be synced: data files before `.entries`, which points
    /// into them.
    fn in_sync_order(&self) -> [&LogFile; 4] {
        [&self.log, &self.meta, &self.entries, &self.timeindex]
    }
}

/// Constant-size description of a segment as found on disk.
struct Summary {
    header: SegmentHeader,
    entry_count: u64,
    next_offset: i64,
    log_size: u64,
    meta_size: u64,
    first_entry: Option<EntryMeta>,
    last_entry: Option<EntryMeta>,
}

/// Result of opening the newest segment of a directory.
pub(crate) enum OpenedLast {
    Ready(Box<Segment>),
    /// The `.entries` header is missing or torn: nothing in the segment was ever
    /// flushed, so the caller discards or re-creates it.
    TornHeader,
}

/// A contiguous byte range of whole batches in one segment's `.log`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogRange {
    pub position: u64,
    pub length: u64,
    pub first_offset: i64,
    pub end_offset: i64,
}

/// One open segment. Memory use is constant per segment: the header, sizes, the
/// first and last entry, the time-index tracker and four files (open while in use).
pub(crate) struct Segment {
    pub(crate) header: SegmentHeader,
    pub(crate) entry_count: u64,
    /// Next Kafka offset after the segment's last entry.
    pub(crate) next_offset: i64,
    pub(crate) log_size: u64,
    pub(crate) meta_size: u64,
    pub(crate) first_entry: Option<EntryMeta>,
    pub(crate) last_entry: Option<EntryMeta>,
    pub(crate) time_index: TimeIndexTracker,
    files: Files,
    /// `.entries` holds a record group commit must sync: the pinned header, or a meta
    /// entry's record. Data entries' records need no sync of their own: recovery
    /// rebuilds them from `.log` (`Segment::recover`).
    entries_needed: bool,
    /// `.entries` or `.timeindex` were written since they were last fdatasynced, and
    /// group commit left them to the page cache (`take_unsynced`).
    lazy_unsynced: bool,
}

fn exists(path: &Path) -> Result<bool, LogError> {
    path.try_exists().map_err(|e| LogError::io(path, e))
}

/// Open an existing segment's files; returns whether `.timeindex` already existed.
fn open_existing(dir: &Path, base_offset: i64) -> Result<(Files, bool), LogError> {
    let paths = Paths::new(dir, base_offset);
    let timeindex_existed = exists(&paths.timeindex)?;
    let files = Files::open(paths, false)?;
    Ok((files, timeindex_existed))
}

/// Cheap consistency check of a segment's files (header, whole records, first and last
/// record, file sizes agreeing with the last record). `Ok(Err(reason))` = inconsistent.
fn summarize(
    files: &Files,
    base_offset: i64,
) -> Result<Result<Summary, String>, LogError> {
    let entries_len = codec::file_len(&*files.entries.get()?, files.entries.path())?;
    let log_len = codec::file_len(&*files.log.get()?, files.log.path())?;
    let meta_len = codec::file_len(&*files.meta.get()?, files.meta.path())?;
    let header = match entry_index::read_raw_header(&*files.entries.get()?, files.entries.path(), entries_len)? {
        None => return Ok(Err("segment header is missing or torn".to_string())),
        Some(raw) => match SegmentHeader::decode(&raw) {
            Ok(header) => header,
            Err(reason) => return Ok(Err(format!("segment header: {reason}"))),
        },
    };
    if header.base_offset != base_offset {
        return Ok(Err(format!(
            "header base offset {} does not match the file name",
            header.base_offset
        )));
    }
    if (entries_len - SEGMENT_HEADER_SIZE) % ENTRY_RECORD_SIZE != 0 {
        return Ok(Err("entries file ends with a partial record".to_string()));
    }
    let count = entry_index::whole_slots(entries_len);
    let Some(last_slot) = count.checked_sub(1) else {
        if log_len != 0 || meta_len != 0 {
            return Ok(Err("segment without entries has data bytes".to_string()));
        }
        return Ok(Ok(Summary {
            header,
            entry_count: 0,
            next_offset: base_offset,
            log_size: 0,
            meta_size: 0,
            first_entry: None,
            last_entry: None,
        }));
    };
    if !header.pinned {
        return Ok(Err("entries follow an unpinned header".to_string()));
    }
    let decode = |slot: u64| -> Result<Result<EntryMeta, String>, LogError> {
        let raw = entry_index::read_raw_record(&*files.entries.get()?, files.entries.path(), slot)?;
        Ok(EntryMeta::decode(&raw).map_err(|reason| format!("slot {slot}: {reason}")))
    };
    let first = match decode(0)? {
        Ok(rec) => rec,
        Err(reason) => return Ok(Err(reason)),
    };
    let last = match decode(last_slot)? {
        Ok(rec) => rec,
        Err(reason) => return Ok(Err(reason)),
    };
    let problem = if first.index != header.first_index {
        Some(format!(
            "first record has index {}, header says {}",
            first.index, header.first_index
        ))
    } else if header.first_index.checked_add(last_slot) != Some(last.index) {
        Some(format!(
            "last record has index {} but {count} records follow index {}",
            last.index, header.first_index
        ))
    } else if first.base_offset != base_offset
        || first.log_position != 0
        || first.meta_position != 0
    {
        Some("first record does not start the segment".to_string())
    } else if last.log_end() != log_len {
        Some(format!(
            ".log holds {log_len} bytes but the entries end at {}",
            last.log_end()
        ))
    } else if last.meta_end() != meta_len {
        Some(format!(
            ".meta holds {meta_len} bytes but the entries end at {}",
            last.meta_end()
        ))
    } else if last.term < first.term {
        Some("terms decrease within the segment".to_string())
    } else {
        None
    };
    if let Some(reason) = problem {
        return Ok(Err(reason));
    }
    Ok(Ok(Summary {
        header,
        entry_count: count,
        next_offset: last.end_offset(),
        log_size: log_len,
        meta_size: meta_len,
        first_entry: Some(first),
        last_entry: Some(last),
    }))
}

/// Running state of the recovery walk over the active segment.
struct Walk {
    next_index: u64,
    min_term: u64,
    next_offset: i64,
    log_pos: u64,
    meta_pos: u64,
    valid: u64,
    first: Option<EntryMeta>,
    last: Option<EntryMeta>,
}

impl Walk {
    fn accept(&mut self, rec: EntryMeta) {
        self.next_index = rec.index.saturating_add(1);
        self.min_term = rec.term;
        self.next_offset = rec.end_offset();
        self.log_pos = rec.log_end();
        self.meta_pos = rec.meta_end();
        self.valid += 1;
        self.first.get_or_insert(rec);
        self.last = Some(rec);
    }
}

/// CRC-32C continuing from `crc` over `file[start..end]`, streamed through `scratch`.
fn stream_crc(
    file: &File,
    path: &Path,
    start: u64,
    end: u64,
    mut crc: u32,
    scratch: &mut [u8],
) -> Result<u32, LogError> {
    let mut pos = start;
    while pos < end {
        let n = usize::try_from(end - pos).map_or(scratch.len(), |left| left.min(scratch.len()));
        let Some(chunk) = scratch.get_mut(..n).filter(|c| !c.is_empty()) else {
            return Err(LogError::corrupt_segment(path, "empty scratch buffer"));
        };
        codec::read_exact_at(file, path, chunk, pos)?;
        crc = crc32c::crc32c_append(crc, chunk);
        pos += n as u64;
    }
    Ok(crc)
}

/// Full check of a stored batch against its entry record: header parses, length, the
/// rewritten baseOffset and epoch, offset span, max timestamp and the CRC-32C.
fn verify_stored_batch(
    log: &File,
    path: &Path,
    rec: &EntryMeta,
    scratch: &mut [u8],
) -> Result<Result<(), String>, LogError> {
    let mut head = [0u8; BATCH_HEADER_SIZE];
    codec::read_exact_at(log, path, &mut head, rec.log_position)?;
    let header = match batch::parse_header(&head) {
        Ok(header) => header,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let problem = if header.total_size() != u64::from(rec.length) {
        Some(format!(
            "batch is {} bytes, entry says {}",
            header.total_size(),
            rec.length
        ))
    } else if header.base_offset != rec.base_offset {
        Some(format!(
            "stored baseOffset {} but entry says {}",
            header.base_offset, rec.base_offset
        ))
    } else if header.partition_leader_epoch != epoch_for_term(rec.term) {
        Some("stored partitionLeaderEpoch does not match the entry's term".to_string())
    } else if i64::from(header.last_offset_delta) + 1 != i64::from(rec.offset_span) {
        Some("lastOffsetDelta does not match the entry's offset span".to_string())
    } else if header.max_timestamp != rec.max_timestamp {
        Some("maxTimestamp does not match the entry".to_string())
    } else {
        None
    };
    if let Some(reason) = problem {
        return Ok(Err(reason));
    }
    let crc = crc32c::crc32c(head.get(ATTRIBUTES_AT..).unwrap_or_default());
    let crc = stream_crc(
        log,
        path,
        rec.log_position + BATCH_HEADER_SIZE as u64,
        rec.log_end(),
        crc,
        scratch,
    )?;
    if crc != header.crc {
        return Ok(Err("stored batch fails its CRC-32C".to_string()));
    }
    Ok(Ok(()))
}

/// Check a `.meta` frame (length u32, CRC-32C u32, payload) against its entry record.
fn verify_meta_frame(
    meta: &File,
    path: &Path,
    rec: &EntryMeta,
    scratch: &mut [u8],
) -> Result<Result<(), String>, LogError> {
    let mut frame = [0u8; META_FRAME_HEADER as usize];
    codec::read_exact_at(meta, path, &mut frame, rec.meta_position)?;
    let mut r = FieldReader::new(&frame);
    let (Some(len), Some(crc)) = (r.u32(), r.u32()) else {
        return Ok(Err("short meta frame".to_string()));
    };
    if len != rec.length {
        return Ok(Err(format!(
            "meta frame holds {len} bytes, entry says {}",
            rec.length
        )));
    }
    let start = rec.meta_position + META_FRAME_HEADER;
    if stream_crc(meta, path, start, rec.meta_end(), 0, scratch)? != crc {
        return Ok(Err("meta payload fails its CRC-32C".to_string()));
    }
    Ok(Ok(()))
}

impl Segment {
    /// Create a new, empty segment (truncating any stale files of the same name), its
    /// files synced; the caller syncs the directory.
    pub(crate) fn create(dir: &Path, header: SegmentHeader) -> Result<Self, LogError> {
        let paths = Paths::new(dir, header.base_offset);
        let stale = [exists(&paths.log)?, exists(&paths.meta)?, exists(&paths.entries)?, exists(&paths.timeindex)?];
        let files = Files::open(paths, true)?;
        codec::write_all_at(&*files.entries.for_write()?, files.entries.path(), &header.encode(), 0)?;
        // Synced now rather than at the next flush, so that a burst of new segments (topics
        // of thousands of partitions) leaves no dirty file that the open-file budget could
        // not close. A new file is empty and needs no sync of its own; a stale one emptied
        // by the truncation does.
        for (f, stale) in files.in_sync_order().into_iter().zip(stale) {
            if stale || f.is_dirty() {
                codec::sync_data(&*f.for_write()?, f.path())?;
                f.synced();
            }
        }
        Ok(Segment {
            header,
            entry_count: 0,
            next_offset: header.base_offset,
            log_size: 0,
            meta_size: 0,
            first_entry: None,
            last_entry: None,
            time_index: TimeIndexTracker::default(),
            files,
            entries_needed: false,
            lazy_unsynced: false,
        })
    }

    fn from_parts(files: Files, s: Summary) -> Self {
        Segment {
            header: s.header,
            entry_count: s.entry_count,
            next_offset: s.next_offset,
            log_size: s.log_size,
            meta_size: s.meta_size,
            first_entry: s.first_entry,
            last_entry: s.last_entry,
            time_index: TimeIndexTracker::default(),
            files,
            entries_needed: false,
            lazy_unsynced: false,
        }
    }

    /// Open a segment that is not the newest. Closed segments were fsynced when the
    /// next one was created, so only cheap checks run; any inconsistency is an error
    /// rather than something to repair silently.
    pub(crate) fn open_closed(
        dir: &Path,
        base_offset: i64,
        interval: u32,
    ) -> Result<Self, LogError> {
        let (files, timeindex_existed) = open_existing(dir, base_offset)?;
        let summary = match summarize(&files, base_offset)? {
            Ok(summary) => summary,
            Err(reason) => return Err(LogError::corrupt_segment(files.entries.path(), reason)),
        };
        if summary.entry_count == 0 {
            return Err(LogError::corrupt_segment(
                files.entries.path(),
                "a segment that is not the newest holds no entries",
            ));
        }
        let mut segment = Segment::from_parts(files, summary);
        segment.init_time_index(interval, timeindex_existed)?;
        Ok(segment)
    }

    /// Open the newest segment. With `trusted` (clean-shutdown marker) only the cheap
    /// checks run, falling back to full recovery if they fail; otherwise every entry
    /// and batch is verified and a torn tail is truncated. `prev` is the last entry of
    /// the previous segment, if any.
    pub(crate) fn open_last(
        dir: &Path,
        base_offset: i64,
        trusted: bool,
        prev: Option<&EntryMeta>,
        interval: u32,
    ) -> Result<OpenedLast, LogError> {
        let (files, timeindex_existed) = open_existing(dir, base_offset)?;
        if trusted {
            match summarize(&files, base_offset)? {
                Ok(summary) => {
                    let mut segment = Segment::from_parts(files, summary);
                    if let Some(prev) = prev {
                        segment.check_follows(prev)?;
                    }
                    segment.init_time_index(interval, timeindex_existed)?;
                    return Ok(OpenedLast::Ready(Box::new(segment)));
                }
                Err(reason) => warn!(
                    segment = %files.entries.path().display(),
                    %reason,
                    "clean-shutdown marker present but the active segment is inconsistent; running full recovery"
                ),
            }
        }
        Segment::recover(files, base_offset, prev, interval)
    }

    fn recover(
        files: Files,
        base_offset: i64,
        prev: Option<&EntryMeta>,
        interval: u32,
    ) -> Result<OpenedLast, LogError> {
        let entries_len = codec::file_len(&*files.entries.get()?, files.entries.path())?;
        let log_len = codec::file_len(&*files.log.get()?, files.log.path())?;
        let meta_len = codec::file_len(&*files.meta.get()?, files.meta.path())?;
        let header =
            match entry_index::read_raw_header(&*files.entries.get()?, files.entries.path(), entries_len)?
                .map(|raw| SegmentHeader::decode(&raw))
            {
                Some(Ok(header)) => header,
                _ => return Ok(OpenedLast::TornHeader),
            };
        if header.base_offset != base_offset {
            return Err(LogError::corrupt_segment(
                files.entries.path(),
                format!(
                    "header base offset {} does not match the file name",
                    header.base_offset
                ),
            ));
        }
        if let Some(prev) = prev {
            check_header_follows(files.entries.path(), &header, prev)?;
        }

        let total_slots = entry_index::whole_slots(entries_len);
        let mut walk = Walk {
            next_index: header.first_index,
            min_term: prev.map_or(0, |p| p.term),
            next_offset: base_offset,
            log_pos: 0,
            meta_pos: 0,
            valid: 0,
            first: None,
            last: None,
        };
        let mut stop_reason = None;
        if total_slots > 0 && !header.pinned {
            stop_reason = Some("entries follow an unpinned header (never flushed)".to_string());
        } else {
            let mut scratch = vec![0u8; STREAM_CHUNK];
            let entries = files.entries.get()?;
            let mut scanner = RecordScanner::new(&entries, files.entries.path(), 0, total_slots);
            while let Some((slot, raw)) = scanner.next_raw()? {
                match check_recovered_record(
                    &raw,
                    &walk,
                    &files,
                    log_len,
                    meta_len,
                    &mut scratch,
                )? {
                    Ok(rec) => walk.accept(rec),
                    Err(reason) => {
                        stop_reason = Some(format!("slot {slot}: {reason}"));
                        break;
                    }
                }
            }
        }

        // Group commit syncs `.log` but leaves data entries' records in `.entries` to the
        // page cache, so batches past the last record may be durable (and acknowledged).
        // Every meta entry is durable before anything after it is written, and everything
        // before it is durable before it is written (`PartitionLog::barrier_due`): unless
        // `.meta` holds a frame no record references (a meta entry torn mid-write, or a
        // damaged record), the batches after the walk are the entries right after it.
        let walked = walk.valid;
        if header.pinned && meta_len == walk.meta_pos {
            let mut scratch = vec![0u8; STREAM_CHUNK];
            let entries = files.entries.for_write()?;
            while let Some(rec) = rebuilt_data_entry(&walk, &files, log_len, &mut scratch)? {
                codec::write_all_at(&entries, files.entries.path(), &rec.encode(), entry_index::slot_position(walk.valid))?;
                walk.accept(rec);
            }
        }
        let rebuilt = walk.valid - walked;
        if rebuilt > 0 {
            warn!(
                segment = %files.entries.path().display(),
                rebuilt,
                last_index = walk.next_index.saturating_sub(1),
                "recovery rebuilt the records of batches that .entries had not yet written"
            );
        }
        let keep_entries = entry_index::slot_position(walk.valid);
        if rebuilt > 0 || entries_len > keep_entries || log_len > walk.log_pos || meta_len > walk.meta_pos {
            warn!(
                segment = %files.entries.path().display(),
                kept_entries = walk.valid,
                dropped_entries = total_slots.saturating_sub(walk.valid),
                dropped_entry_bytes = entries_len.saturating_sub(keep_entries),
                dropped_log_bytes = log_len - walk.log_pos,
                dropped_meta_bytes = meta_len - walk.meta_pos,
                reason = stop_reason.as_deref().unwrap_or("unreferenced bytes after the last entry"),
                "recovery truncated a torn tail of the active segment"
            );
            // Cut .entries first: once it no longer references the tail, the rest is
            // garbage. Synced last: a record (rebuilt, or read from the page cache after
            // a crash of the process alone) must not be durable before what it points to.
            for (file, len) in [(&files.entries, keep_entries), (&files.log, walk.log_pos), (&files.meta, walk.meta_pos)] {
                codec::set_len(&*file.for_write()?, file.path(), len)?;
            }
            for file in [&files.log, &files.meta, &files.entries] {
                codec::sync_data(&*file.for_write()?, file.path())?;
                file.synced();
            }
        }
        let summary = Summary {
            header,
            entry_count: walk.valid,
            next_offset: walk.next_offset,
            log_size: walk.log_pos,
            meta_size: walk.meta_pos,
            first_entry: walk.first,
            last_entry: walk.last,
        };
        let mut segment = Segment::from_parts(files, summary);
        // The walk already read everything; rebuilding is cheaper than checking.
        segment.rebuild_time_index(interval)?;
        Ok(OpenedLast::Ready(Box::new(segment)))
    }

    /// Check that this segment continues right after `prev` (the previous segment's
    /// last entry): next raft index, next Kafka offset, no lower term.
    pub(crate) fn check_follows(&self, prev: &EntryMeta) -> Result<(), LogError> {
        check_header_follows(self.files.entries.path(), &self.header, prev)?;
        if let Some(first) = self.first_entry {
            if first.term < prev.term {
                return Err(LogError::corrupt_segment(
                    self.files.entries.path(),
                    format!(
                        "first term {} is below the previous segment's last term {}",
                        first.term, prev.term
                    ),
                ));
            }
        }
        Ok(())
    }

    fn init_time_index(&mut self, interval: u32, existed: bool) -> Result<(), LogError> {
        if !existed {
            warn!(segment = %self.files.timeindex.path().display(), "time index missing; rebuilding it");
            return self.rebuild_time_index(interval);
        }
        match self.load_time_index_state(interval)? {
            Ok(tracker) => {
                self.time_index = tracker;
                Ok(())
            }
            Err(reason) => {
                warn!(segment = %self.files.timeindex.path().display(), %reason, "time index inconsistent; rebuilding it");
                self.rebuild_time_index(interval)
            }
        }
    }

    /// Derive the tracker from the `.timeindex` file and the entries after its last
    /// entry (at most one index interval of batches). `Ok(Err(reason))` means the file
    /// does not fit the entries and must be rebuilt.
    fn load_time_index_state(
        &self,
        interval: u32,
    ) -> Result<Result<TimeIndexTracker, String>, LogError> {
        let len = codec::file_len(&*self.files.timeindex.get()?, self.files.timeindex.path())?;
        if len % TIME_INDEX_ENTRY_SIZE != 0 {
            return Ok(Err(format!(
                "size {len} is not a multiple of {TIME_INDEX_ENTRY_SIZE}"
            )));
        }
        let count = len / TIME_INDEX_ENTRY_SIZE;
        let Some(last_slot) = count.checked_sub(1) else {
            if self.log_size > 0 && self.log_size >= u64::from(interval) {
                return Ok(Err(
                    "no entries although .log holds a full interval".to_string()
                ));
            }
            return Ok(Ok(TimeIndexTracker {
                entries: 0,
                bytes_since_last: self.log_size,
                max_timestamp: self.scan_max_timestamp(0)?,
            }));
        };
        let last = time_index::read_entry(&*self.files.timeindex.get()?, self.files.timeindex.path(), last_slot)?;
        if last.offset < self.header.base_offset || last.offset >= self.next_offset {
            return Ok(Err(format!(
                "last entry points at offset {} outside the segment",
                last.offset
            )));
        }
        let Some(slot) = self.slot_for_offset(last.offset)? else {
            return Ok(Err("last entry points past the end".to_string()));
        };
        let rec = self.record_at_slot(slot)?;
        if rec.kind != EntryKind::Data || rec.base_offset != last.offset {
            return Ok(Err(
                "last entry does not point at the start of a batch".to_string()
            ));
        }
        if last.timestamp < rec.max_timestamp {
            return Ok(Err(
                "last entry's timestamp is below its batch's max timestamp".to_string(),
            ));
        }
        let Some(since) = self.log_size.checked_sub(rec.log_end()) else {
            return Ok(Err("last entry's batch ends past .log".to_string()));
        };
        if since != 0 && since >= u64::from(interval) {
            return Ok(Err(
                "an interval since the last entry has no entry".to_string()
            ));
        }
        let tail_max = self.scan_max_timestamp(slot + 1)?;
        Ok(Ok(TimeIndexTracker {
            entries: count,
            bytes_since_last: since,
            max_timestamp: Some(tail_max.map_or(last.timestamp, |m| m.max(last.timestamp))),
        }))
    }

    /// Max timestamp of data entries in slots `from..`.
    fn scan_max_timestamp(&self, from_slot: u64) -> Result<Option<i64>, LogError> {
        let mut max = None;
        let entries = self.files.entries.get()?;
        let mut scanner = RecordScanner::new(&entries, self.files.entries.path(), from_slot, self.entry_count);
        while let Some((_, rec)) = scanner.next_record()? {
            if rec.kind == EntryKind::Data {
                max = Some(max.map_or(rec.max_timestamp, |m: i64| m.max(rec.max_timestamp)));
            }
        }
        Ok(max)
    }

    /// Rewrite `.timeindex` from `.entries` (same interval rule as appends) and sync it.
    pub(crate) fn rebuild_time_index(&mut self, interval: u32) -> Result<(), LogError> {
        let timeindex = self.files.timeindex.for_write()?;
        let (file, path) = (&*timeindex, self.files.timeindex.path());
        codec::set_len(file, path, 0)?;
        let mut tracker = TimeIndexTracker::default();
        let mut pending = Vec::new();
        let mut written = 0u64;
        let entries = self.files.entries.get()?;
        let mut scanner = RecordScanner::new(&entries, self.files.entries.path(), 0, self.entry_count);
        while let Some((_, rec)) = scanner.next_record()? {
            if rec.kind != EntryKind::Data {
                continue;
            }
            let (next, entry) =
                tracker.after_batch(rec.length, rec.max_timestamp, rec.base_offset, interval);
            tracker = next;
            if let Some(entry) = entry {
                pending.extend_from_slice(&entry.encode());
                if pending.len() >= STREAM_CHUNK {
                    codec::write_all_at(file, path, &pending, written)?;
                    written += pending.len() as u64;
                    pending.clear();
                }
            }
        }
        codec::write_all_at(file, path, &pending, written)?;
        codec::sync_data(file, path)?;
        self.files.timeindex.synced();
        self.time_index = tracker;
        Ok(())
    }

    pub(crate) fn first_index(&self) -> u64 {
        self.header.first_index
    }

    pub(crate) fn base_offset(&self) -> i64 {
        self.header.base_offset
    }

    pub(crate) fn last_index(&self) -> Option<u64> {
        self.last_entry.map(|e| e.index)
    }

    pub(crate) fn contains_index(&self, index: u64) -> bool {
        index >= self.header.first_index && index - self.header.first_index < self.entry_count
    }

    pub(crate) fn has_data(&self) -> bool {
        self.log_size > 0
    }

    /// The `.log` file, opened again if it was closed.
    pub(crate) fn log_file(&self) -> Result<Arc<File>, LogError> {
        self.files.log.get()
    }

    pub(crate) fn log_path(&self) -> &Path {
        self.files.log.path()
    }

    /// Fix the first raft index of a fresh, empty, unpinned segment.
    pub(crate) fn pin(&mut self, first_index: u64) -> Result<(), LogError> {
        let header = SegmentHeader {
            first_index,
            pinned: true,
            ..self.header
        };
        codec::write_all_at(&*self.files.entries.for_write()?, self.files.entries.path(), &header.encode(), 0)?;
        self.header = header;
        self.entries_needed = true;
        Ok(())
    }

    /// Append a batch that passed `check_batch_for_append`. The stored copy differs
    /// only in baseOffset and partitionLeaderEpoch (outside the CRC): a patched 16-byte
    /// prefix is written from the stack, then the rest of the caller's buffer as-is.
    pub(crate) fn append_data(
        &mut self,
        index: u64,
        term: u64,
        batch: &[u8],
        header: &BatchHeader,
        interval: u32,
    ) -> Result<EntryMeta, LogError> {
        let length = u32::try_from(batch.len())
            .map_err(|_| LogError::corrupt_batch("batch larger than 4 GiB"))?;
        let offset_span = u32::try_from(header.last_offset_delta)
            .ok()
            .and_then(|d| d.checked_add(1))
            .ok_or(LogError::InvalidRecordCount {
                record_count: header.record_count,
                last_offset_delta: header.last_offset_delta,
            })?;
        let base_offset = self.next_offset;
        if base_offset.checked_add(i64::from(offset_span)).is_none()
            || self.log_size.checked_add(u64::from(length)).is_none()
        {
            return Err(LogError::OffsetOverflow);
        }
        let (original_prefix, body) = batch
            .split_at_checked(BROKER_PREFIX_LEN)
            .ok_or_else(|| LogError::corrupt_batch("batch shorter than its header"))?;
        let mut r = FieldReader::new(original_prefix);
        let (Some(_), Some(batch_length)) = (r.i64(), r.array::<4>()) else {
            return Err(LogError::corrupt_batch("batch shorter than its header"));
        };
        let mut prefix = [0u8; BROKER_PREFIX_LEN];
        let mut w = FieldWriter::new(&mut prefix);
        w.i64(base_offset);
        w.put(&batch_length);
        w.put(&epoch_for_term(term).to_be_bytes());

        let entry = EntryMeta {
            index,
            term,
            kind: EntryKind::Data,
            base_offset,
            offset_span,
            max_timestamp: header.max_timestamp,
            length,
            log_position: self.log_size,
            meta_position: self.meta_size,
        };
        let log = self.files.log.for_write()?;
        codec::write_all_at(&log, self.files.log.path(), &prefix, entry.log_position)?;
        codec::write_all_at(&log, self.files.log.path(), body, entry.log_position + BROKER_PREFIX_LEN as u64)?;
        self.commit_entry(entry, interval)
    }

    /// Append a meta payload as a `.meta` frame: length u32, CRC-32C u32, payload.
    pub(crate) fn append_meta(
        &mut self,
        index: u64,
        term: u64,
        payload: &[u8],
        interval: u32,
    ) -> Result<EntryMeta, LogError> {
        let length = u32::try_from(payload.len()).map_err(|_| LogError::InvalidArgument {
            reason: "meta payload larger than 4 GiB".to_string(),
        })?;
        if self
            .meta_size
            .checked_add(META_FRAME_HEADER + u64::from(length))
            .is_none()
        {
            return Err(LogError::OffsetOverflow);
        }
        let entry = EntryMeta {
            index,
            term,
            kind: EntryKind::Meta,
            base_offset: self.next_offset,
            offset_span: 0,
            max_timestamp: NO_TIMESTAMP,
            length,
            log_position: self.log_size,
            meta_position: self.meta_size,
        };
        let mut frame = [0u8; META_FRAME_HEADER as usize];
        let mut w = FieldWriter::new(&mut frame);
        w.u32(length);
        w.u32(crc32c::crc32c(payload));
        let meta = self.files.meta.for_write()?;
        codec::write_all_at(&meta, self.files.meta.path(), &frame, entry.meta_position)?;
        codec::write_all_at(&meta, self.files.meta.path(), payload, entry.meta_position + META_FRAME_HEADER)?;
        let entry = self.commit_entry(entry, interval)?;
        self.entries_needed = true;
        Ok(entry)
    }

    /// Write the entry record (and a time-index entry if due), then update memory.
    /// Nothing in memory changes unless every write succeeded, so a failed append can
    /// simply be retried: it overwrites the same positions.
    fn commit_entry(&mut self, entry: EntryMeta, interval: u32) -> Result<EntryMeta, LogError> {
        let slot_pos = entry_index::slot_position(self.entry_count);
        codec::write_all_at(&*self.files.entries.for_write()?, self.files.entries.path(), &entry.encode(), slot_pos)?;
        let mut tracker = self.time_index;
        if entry.kind == EntryKind::Data {
            let (next, index_entry) = tracker.after_batch(
                entry.length,
                entry.max_timestamp,
                entry.base_offset,
                interval,
            );
            if let Some(index_entry) = index_entry {
                let pos = time_index::entry_position(tracker.entries);
                codec::write_all_at(&*self.files.timeindex.for_write()?, self.files.timeindex.path(), &index_entry.encode(), pos)?;
            }
            tracker = next;
        }
        self.time_index = tracker;
        self.entry_count += 1;
        self.next_offset = entry.end_offset();
        self.log_size = entry.log_end();
        self.meta_size = entry.meta_end();
        self.first_entry.get_or_insert(entry);
        self.last_entry = Some(entry);
        Ok(entry)
    }

    /// Drop the entries in slots `slot..` from all four files and sync them.
    pub(crate) fn truncate_to_slot(&mut self, slot: u64, interval: u32) -> Result<(), LogError> {
        if slot >= self.entry_count {
            return Ok(());
        }
        let cut = self.record_at_slot(slot)?;
        let new_last = match slot.checked_sub(1) {
            Some(prev) => Some(self.record_at_slot(prev)?),
            None => None,
        };
        let keep_index = time_index::entries_before_offset(
            &*self.files.timeindex.get()?,
            self.files.timeindex.path(),
            self.time_index.entries,
            cut.base_offset,
        )?;
        // `.log` and `.meta` are cut and synced first: recovery rebuilds records for the
        // batches it finds past the last record, so none may outlive the cut.
        for (file, len) in [(&self.files.log, cut.log_position), (&self.files.meta, cut.meta_position)] {
            let f = file.for_write()?;
            codec::set_len(&f, file.path(), len)?;
            codec::sync_data(&f, file.path())?;
        }
        codec::set_len(
            &*self.files.entries.for_write()?,
            self.files.entries.path(),
            entry_index::slot_position(slot),
        )?;
        codec::set_len(
            &*self.files.timeindex.for_write()?,
            self.files.timeindex.path(),
            time_index::entry_position(keep_index),
        )?;
        self.entry_count = slot;
        self.next_offset = cut.base_offset;
        self.log_size = cut.log_position;
        self.meta_size = cut.meta_position;
        self.last_entry = new_last;
        if slot == 0 {
            self.first_entry = None;
        }
        match self.load_time_index_state(interval)? {
            Ok(tracker) => self.time_index = tracker,
            Err(reason) => {
                warn!(segment = %self.files.timeindex.path().display(), %reason, "time index inconsistent after truncation; rebuilding it");
                self.rebuild_time_index(interval)?;
            }
        }
        self.sync_all()
    }

    /// Cut files back to their logical sizes (a failed append may have left bytes past
    /// them) and sync everything: done before a segment stops being the newest.
    pub(crate) fn seal(&mut self) -> Result<(), LogError> {
        codec::set_len(&*self.files.log.for_write()?, self.files.log.path(), self.log_size)?;
        codec::set_len(&*self.files.meta.for_write()?, self.files.meta.path(), self.meta_size)?;
        codec::set_len(
            &*self.files.entries.for_write()?,
            self.files.entries.path(),
            entry_index::slot_position(self.entry_count),
        )?;
        codec::set_len(
            &*self.files.timeindex.for_write()?,
            self.files.timeindex.path(),
            time_index::entry_position(self.time_index.entries),
        )?;
        self.sync_all()
    }

    /// fdatasync the files written since the last sync, those group commit left to the
    /// page cache included: data files before `.entries`.
    pub(crate) fn sync(&mut self) -> Result<(), LogError> {
        for f in self.files.in_sync_order() {
            let left_lazily = self.lazy_unsynced && (std::ptr::eq(f, &self.files.entries) || std::ptr::eq(f, &self.files.timeindex));
            if f.is_dirty() || left_lazily {
                codec::sync_data(&*f.for_write()?, f.path())?;
                f.synced();
            }
        }
        self.entries_needed = false;
        self.lazy_unsynced = false;
        Ok(())
    }

    /// The active segment's `.log`, `.meta` and `.entries`, whether written since their
    /// last sync or not, for a barrier (`PartitionLog::take_barrier`): syncing a file
    /// also waits for a sync of it that group commit has in flight. Dirty flags stay as
    /// they are, so group commit still syncs (and answers for) what it has to.
    pub(crate) fn barrier_files(&self, out: &mut Vec<(Arc<File>, PathBuf)>) -> Result<(), LogError> {
        for f in [&self.files.log, &self.files.meta, &self.files.entries] {
            out.push((f.get()?, f.path().to_path_buf()));
        }
        Ok(())
    }

    /// Hands out the files group commit must sync for the appends so far to be durable,
    /// in the order they must be synced (`.log`, `.meta`, then `.entries` when it holds
    /// the pinned header or a meta entry's record), and marks every written file clean:
    /// the caller syncs them without holding the log, so appends can go on meanwhile.
    /// The records of data entries in `.entries` and the time index are left to the page
    /// cache (and may be closed by the open-file budget): recovery rebuilds both from
    /// `.log`, so one fdatasync per flush suffices. The descriptors handed out are the
    /// ones the writes went through.
    pub(crate) fn take_unsynced(&mut self, out: &mut Vec<(Arc<File>, PathBuf)>) {
        for f in self.files.in_sync_order() {
            if !f.is_dirty() {
                continue;
            }
            let lazy = std::ptr::eq(f, &self.files.timeindex)
                || (std::ptr::eq(f, &self.files.entries) && !self.entries_needed);
            if lazy {
                self.lazy_unsynced = true;
            } else if let Some(file) = f.if_open() {
                // A dirty file is always open: the budget never closes one.
                out.push((file, f.path().to_path_buf()));
            }
            f.synced();
        }
        self.entries_needed = false;
    }

    fn sync_all(&mut self) -> Result<(), LogError> {
        for f in self.files.in_sync_order() {
            codec::sync_data(&*f.for_write()?, f.path())?;
            f.synced();
        }
        self.entries_needed = false;
        self.lazy_unsynced = false;
        Ok(())
    }

    /// Remove the segment's files (`.entries` first). Open handles stay valid.
    pub(crate) fn delete_files(&self) -> Result<(), LogError> {
        for path in [
            self.files.entries.path(),
            self.files.log.path(),
            self.files.meta.path(),
            self.files.timeindex.path(),
        ] {
            codec::remove_file_if_exists(path)?;
        }
        Ok(())
    }

    fn record_at_slot(&self, slot: u64) -> Result<EntryMeta, LogError> {
        if let Some(last) = self.last_entry {
            if slot.checked_add(1) == Some(self.entry_count) {
                return Ok(last);
            }
        }
        entry_index::read_record(&*self.files.entries.get()?, self.files.entries.path(), slot)
    }

    /// The entry with raft index `index`, if this segment holds it.
    pub(crate) fn entry(&self, index: u64) -> Result<Option<EntryMeta>, LogError> {
        if !self.contains_index(index) {
            return Ok(None);
        }
        let rec = self.record_at_slot(index - self.header.first_index)?;
        if rec.index != index {
            return Err(LogError::corrupt_segment(
                self.files.entries.path(),
                format!("slot for index {index} holds index {}", rec.index),
            ));
        }
        Ok(Some(rec))
    }

    /// Slot of the data batch containing `offset`: the first entry ending after it.
    pub(crate) fn slot_for_offset(&self, offset: i64) -> Result<Option<u64>, LogError> {
        let count = self.entry_count;
        let slot =
            entry_index::search_slots(&*self.files.entries.get()?, self.files.entries.path(), 0, count, |r| {
                r.end_offset() <= offset
            })?;
        Ok((slot < count).then_some(slot))
    }

    /// The payload of `entry` as stored (batch bytes with the rewritten prefix, or
    /// the meta payload after checking its frame).
    pub(crate) fn read_payload(&self, entry: &EntryMeta) -> Result<Bytes, LogError> {
        let mut buf = vec![0u8; entry.length as usize];
        match entry.kind {
            EntryKind::Data => {
                codec::read_exact_at(
                    &*self.files.log.get()?,
                    self.files.log.path(),
                    &mut buf,
                    entry.log_position,
                )?;
            }
            EntryKind::Meta => {
                let mut frame = [0u8; META_FRAME_HEADER as usize];
                codec::read_exact_at(
                    &*self.files.meta.get()?,
                    self.files.meta.path(),
                    &mut frame,
                    entry.meta_position,
                )?;
                codec::read_exact_at(
                    &*self.files.meta.get()?,
                    self.files.meta.path(),
                    &mut buf,
                    entry.meta_position + META_FRAME_HEADER,
                )?;
                let mut r = FieldReader::new(&frame);
                if r.u32() != Some(entry.length) || r.u32() != Some(crc32c::crc32c(&buf)) {
                    return Err(LogError::corrupt_segment(
                        self.files.meta.path(),
                        format!("meta frame of index {} fails its check", entry.index),
                    ));
                }
            }
        }
        Ok(Bytes::from(buf))
    }

    /// Whole batches from the one containing `offset`: stop before a batch based at or
    /// above `upper_offset` or one that would take the range past `max_bytes`, but
    /// always include the first batch (KIP-74). `None` if no batch here holds `offset`.
    pub(crate) fn find_range(
        &self,
        offset: i64,
        max_bytes: u32,
        upper_offset: i64,
    ) -> Result<Option<LogRange>, LogError> {
        let Some(first_slot) = self.slot_for_offset(offset)? else {
            return Ok(None);
        };
        let first = self.record_at_slot(first_slot)?;
        if first.kind != EntryKind::Data {
            return Err(LogError::corrupt_segment(
                self.files.entries.path(),
                format!("offset {offset} resolved to a meta entry"),
            ));
        }
        let start = first.log_position;
        let budget_end = start.saturating_add(u64::from(max_bytes));
        let stop = entry_index::search_slots(
            &*self.files.entries.get()?,
            self.files.entries.path(),
            first_slot,
            self.entry_count,
            |r| r.base_offset < upper_offset && r.log_end() <= budget_end,
        )?;
        let last = match stop.checked_sub(1).filter(|s| *s > first_slot) {
            Some(slot) => self.record_at_slot(slot)?,
            None => first,
        };
        Ok(Some(LogRange {
            position: start,
            length: last.log_end().max(first.log_end()) - start,
            first_offset: first.base_offset,
            end_offset: last.end_offset().max(first.end_offset()),
        }))
    }

    /// First data entry whose max timestamp is `>= ts`, starting the scan just after
    /// the last time-index entry below `ts` (all batches up to it are below `ts`).
    pub(crate) fn first_data_at_or_after(&self, ts: i64) -> Result<Option<EntryMeta>, LogError> {
        let below = time_index::last_entry_below(
            &*self.files.timeindex.get()?,
            self.files.timeindex.path(),
            self.time_index.entries,
            ts,
        )?;
        let start_slot = match below {
            Some(entry) => self.slot_for_offset(entry.offset)?.map_or(0, |s| s + 1),
            None => 0,
        };
        let entries = self.files.entries.get()?;
        let mut scanner = RecordScanner::new(&entries, self.files.entries.path(), start_slot, self.entry_count);
        while let Some((_, rec)) = scanner.next_record()? {
            if rec.kind == EntryKind::Data && rec.max_timestamp >= ts {
                return Ok(Some(rec));
            }
        }
        Ok(None)
    }

    /// First slot whose entry has a term above `term` (`entry_count` if none).
    pub(crate) fn first_slot_with_term_above(&self, term: u64) -> Result<u64, LogError> {
        entry_index::search_slots(
            &*self.files.entries.get()?,
            self.files.entries.path(),
            0,
            self.entry_count,
            |r| r.term <= term,
        )
    }

    pub(crate) fn entry_at_slot(&self, slot: u64) -> Result<EntryMeta, LogError> {
        self.record_at_slot(slot)
    }
}

fn check_header_follows(
    path: &Path,
    header: &SegmentHeader,
    prev: &EntryMeta,
) -> Result<(), LogError> {
    let expected = prev.index.saturating_add(1);
    if !header.pinned || header.first_index != expected {
        return Err(LogError::NonContiguousIndex {
            expected,
            got: header.first_index,
        });
    }
    if header.base_offset != prev.end_offset() {
        return Err(LogError::corrupt_segment(
            path,
            format!(
                "segment starts at offset {} but the previous one ends at {}",
                header.base_offset,
                prev.end_offset()
            ),
        ));
    }
    Ok(())
}

/// The record of the batch at the walk's `.log` position, when that is a whole, intact
/// batch that can follow the walk (next offset, no lower term); `None` where the log ends
/// or is torn.
fn rebuilt_data_entry(
    walk: &Walk,
    files: &Files,
    log_len: u64,
    scratch: &mut [u8],
) -> Result<Option<EntryMeta>, LogError> {
    if log_len.saturating_sub(walk.log_pos) < BATCH_HEADER_SIZE as u64 {
        return Ok(None);
    }
    let mut head = [0u8; BATCH_HEADER_SIZE];
    codec::read_exact_at(&*files.log.get()?, files.log.path(), &mut head, walk.log_pos)?;
    let Ok(header) = batch::parse_header(&head) else { return Ok(None) };
    let (Ok(term), Ok(length), Some(offset_span)) = (
        u64::try_from(header.partition_leader_epoch),
        u32::try_from(header.total_size()),
        u32::try_from(header.last_offset_delta).ok().and_then(|d| d.checked_add(1)),
    ) else {
        return Ok(None);
    };
    let rec = EntryMeta {
        index: walk.next_index,
        term,
        kind: EntryKind::Data,
        base_offset: header.base_offset,
        offset_span,
        max_timestamp: header.max_timestamp,
        length,
        log_position: walk.log_pos,
        meta_position: walk.meta_pos,
    };
    if rec.term < walk.min_term || rec.base_offset != walk.next_offset || rec.log_end() > log_len {
        return Ok(None);
    }
    Ok(verify_stored_batch(&*files.log.get()?, files.log.path(), &rec, scratch)?.ok().map(|()| rec))
}

/// Recovery's judgement of one raw entry record given the walk so far.
fn check_recovered_record(
    raw: &[u8; ENTRY_RECORD_SIZE as usize],
    walk: &Walk,
    files: &Files,
    log_len: u64,
    meta_len: u64,
    scratch: &mut [u8],
) -> Result<Result<EntryMeta, String>, LogError> {
    let rec = match EntryMeta::decode(raw) {
        Ok(rec) => rec,
        Err(reason) => return Ok(Err(reason)),
    };
    let problem = if rec.index != walk.next_index {
        Some(format!(
            "index {} where {} was expected",
            rec.index, walk.next_index
        ))
    } else if rec.term < walk.min_term {
        Some(format!(
            "term {} below the previous term {}",
            rec.term, walk.min_term
        ))
    } else if rec.base_offset != walk.next_offset {
        Some(format!(
            "base offset {} where {} was expected",
            rec.base_offset, walk.next_offset
        ))
    } else if rec.log_position != walk.log_pos || rec.meta_position != walk.meta_pos {
        Some("file positions out of step with the previous entry".to_string())
    } else if rec.log_end() > log_len {
        Some(format!(
            "batch runs past the end of .log ({} > {log_len})",
            rec.log_end()
        ))
    } else if rec.meta_end() > meta_len {
        Some(format!(
            "meta payload runs past the end of .meta ({} > {meta_len})",
            rec.meta_end()
        ))
    } else {
        None
    };
    if let Some(reason) = problem {
        return Ok(Err(reason));
    }
    let verdict = match rec.kind {
        EntryKind::Data => verify_stored_batch(&*files.log.get()?, files.log.path(), &rec, scratch)?,
        EntryKind::Meta => verify_meta_frame(&*files.meta.get()?, files.meta.path(), &rec, scratch)?,
    };
    Ok(verdict.map(|()| rec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_file_names_are_20_digit_base_offsets_with_known_extensions() {
        let path = segment_path(Path::new("/d"), 42, LOG_EXT);
        assert_eq!(path, Path::new("/d/00000000000000000042.log"));
        assert_eq!(
            parse_segment_file_name("00000000000000000042.entries"),
            Some((42, ENTRIES_EXT))
        );
        assert_eq!(
            parse_segment_file_name("00000000000000000042.timeindex"),
            Some((42, TIME_INDEX_EXT))
        );
        assert_eq!(parse_segment_file_name("0000000000000000042.log"), None);
        assert_eq!(parse_segment_file_name("00000000000000000042.index"), None);
        assert_eq!(parse_segment_file_name("0000000000000000004x.log"), None);
        assert_eq!(parse_segment_file_name("99999999999999999999.log"), None);
        assert_eq!(parse_segment_file_name("clean_shutdown"), None);
    }

    #[test]
    fn epoch_is_the_term_truncated_to_i32() {
        assert_eq!(epoch_for_term(7), 7);
        assert_eq!(epoch_for_term((1 << 32) + 5), 5);
    }
}
