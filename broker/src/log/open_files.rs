//! The process's budget of open log files. Every segment keeps four files and every
//! partition one more, so ten thousand partitions would hold fifty thousand descriptors
//! if each stayed open. A `LogFile` is opened on first use and closed again when more
//! than the budget's limit are open, least recently used first; the next use opens it
//! again. A file written and not yet marked synced is never closed: its fsync must see
//! any write-back error, which is surest through the descriptor that was open during the
//! write. Files whose content recovery can rebuild (`.entries` records of batches, the
//! time index) are marked synced without an fsync (`Segment::take_unsynced`), and may be
//! closed with pages still unwritten; a later fsync reopens them (Linux reports an error
//! not yet seen by any descriptor to the next fsync through a new one).
//! What lives elsewhere: which files a segment has and when they are synced (`segment`).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::error::LogError;

/// Open files the process keeps when nothing sets a limit (tests; `set_limit` at start-up).
const DEFAULT_LIMIT: usize = 4096;

/// Open log files and their limit. One per process (`Budget::global`); tests make their own.
pub(crate) struct Budget {
    limit: AtomicUsize,
    open: AtomicUsize,
    /// Increases on every use: a file's last use orders eviction.
    clock: AtomicU64,
    /// Every file that is open, and some that were closed since the last eviction.
    files: Mutex<Vec<Weak<Slot>>>,
}

/// One file's descriptor, when open.
struct Slot {
    file: Mutex<Option<Arc<File>>>,
    last_used: AtomicU64,
    /// Written since its last fsync: never closed by the budget.
    dirty: AtomicBool,
    budget: Arc<Budget>,
}

impl Slot {
    /// Whether its descriptor is open; a slot locked by someone else counts as open (it
    /// is in use, or being opened).
    fn is_open(&self) -> bool {
        self.file.try_lock().map(|f| f.is_some()).unwrap_or(true)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let open = self.file.get_mut().map(|f| f.is_some()).unwrap_or(false);
        if open {
            self.budget.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            limit: AtomicUsize::new(limit.max(1)),
            open: AtomicUsize::new(0),
            clock: AtomicU64::new(0),
            files: Mutex::new(Vec::new()),
        })
    }

    /// The process's budget.
    pub(crate) fn global() -> &'static Arc<Budget> {
        static GLOBAL: OnceLock<Arc<Budget>> = OnceLock::new();
        GLOBAL.get_or_init(|| Budget::new(DEFAULT_LIMIT))
    }

    /// Sets how many log files may be open at once; files above it are closed as they
    /// are next found least recently used.
    pub(crate) fn set_limit(&self, limit: usize) {
        self.limit.store(limit.max(1), Ordering::Relaxed);
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Log files open now (dirty ones can keep this above the limit).
    #[cfg(test)]
    pub(crate) fn open_count(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts `slot`'s file as open, closing others when that is above the limit.
    fn opened(&self, slot: &Arc<Slot>) {
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::counter!("runnel_log_files_opened_total").increment(1);
        let Ok(mut files) = self.files.lock() else { return };
        files.push(Arc::downgrade(slot));
        if files.len() > 2 * open + 1024 {
            // Files dropped or closed since the last eviction.
            files.retain(|w| w.upgrade().is_some_and(|s| s.is_open()));
        }
        let limit = self.limit();
        if open > limit {
            // Close an eighth of the limit more than needed, so that a scan of every open
            // file is paid once per many opens, not on each.
            self.evict(&mut files, open - limit + limit / 8);
        }
    }

    /// Closes up to `count` clean files, least recently used first. A file in use right
    /// now (its slot locked, as the file asking for room is) is skipped.
    fn evict(&self, files: &mut Vec<Weak<Slot>>, count: usize) {
        let mut open: Vec<(u64, Arc<Slot>)> = files
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|s| s.is_open())
            .map(|s| (s.last_used.load(Ordering::Relaxed), s))
            .collect();
        open.sort_unstable_by_key(|(used, _)| *used);
        let mut closed = 0;
        for (_, slot) in &open {
            if closed == count {
                break;
            }
            if slot.dirty.load(Ordering::Acquire) {
                continue;
            }
            let Ok(mut file) = slot.file.try_lock() else { continue };
            // Checked again under the lock: `for_write` marks the file dirty before it
            // takes the lock, so a write that came in since the check above is seen here;
            // one that marks it after this check finds the slot closed and reopens it.
            if file.is_some() && !slot.dirty.load(Ordering::Acquire) {
                *file = None;
                self.open.fetch_sub(1, Ordering::Relaxed);
                closed += 1;
            }
        }
        metrics::counter!("runnel_log_files_closed_total").increment(closed as u64);
        files.clear();
        files.extend(open.iter().filter(|(_, s)| s.is_open()).map(|(_, s)| Arc::downgrade(s)));
    }
}

/// A log file opened when used and closed by the budget when it has not been for a while.
pub(crate) struct LogFile {
    path: PathBuf,
    slot: Arc<Slot>,
}

impl std::fmt::Debug for LogFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogFile").field("path", &self.path).finish()
    }
}

fn open_rw(path: &Path, create: bool, truncate: bool) -> Result<File, LogError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(truncate)
        .open(path)
        .map_err(|e| LogError::io(path, e))
}

impl LogFile {
    /// Opens (creating it if missing, emptying it with `truncate`) a file under the
    /// process's budget.
    pub(crate) fn open(path: PathBuf, truncate: bool) -> Result<LogFile, LogError> {
        LogFile::open_in(Budget::global(), path, truncate)
    }

    pub(crate) fn open_in(budget: &Arc<Budget>, path: PathBuf, truncate: bool) -> Result<LogFile, LogError> {
        let file = open_rw(&path, true, truncate)?;
        let slot = Arc::new(Slot {
            file: Mutex::new(None),
            last_used: AtomicU64::new(budget.tick()),
            dirty: AtomicBool::new(false),
            budget: budget.clone(),
        });
        {
            let mut guard = slot.file.lock().map_err(|_| poisoned(&path))?;
            *guard = Some(Arc::new(file));
            budget.opened(&slot);
        }
        Ok(LogFile { path, slot })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The open file, opening it again if the budget closed it.
    pub(crate) fn get(&self) -> Result<Arc<File>, LogError> {
        let slot = &self.slot;
        slot.last_used.store(slot.budget.tick(), Ordering::Relaxed);
        let mut guard = slot.file.lock().map_err(|_| poisoned(&self.path))?;
        if let Some(f) = guard.as_ref() {
            return Ok(f.clone());
        }
        // The file exists: it was created when this `LogFile` was, and is removed only
        // after it is dropped.
        let file = Arc::new(open_rw(&self.path, false, false)?);
        *guard = Some(file.clone());
        slot.budget.opened(slot);
        Ok(file)
    }

    /// The open file to write to; it stays open until `synced`.
    pub(crate) fn for_write(&self) -> Result<Arc<File>, LogError> {
        // Marked before it is looked up so that no eviction between the two can close it.
        self.slot.dirty.store(true, Ordering::Release);
        self.get()
    }

    /// Whether it was written since its last `synced`.
    pub(crate) fn is_dirty(&self) -> bool {
        self.slot.dirty.load(Ordering::Acquire)
    }

    /// Its writes are on disk: the budget may close it again. Call only after an fsync of
    /// a descriptor that was open during every write since the last one.
    pub(crate) fn synced(&self) {
        self.slot.dirty.store(false, Ordering::Release);
    }

    /// The descriptor, if open now (a dirty file always is).
    pub(crate) fn if_open(&self) -> Option<Arc<File>> {
        self.slot.file.lock().ok().and_then(|f| f.clone())
    }
}

fn poisoned(path: &Path) -> LogError {
    LogError::io(path, std::io::Error::other("log file state poisoned"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    /// Descriptors this process holds on files under `dir`.
    fn fds_under(dir: &Path) -> usize {
        std::fs::read_dir("/proc/self/fd")
            .map(|d| d.filter_map(|e| e.ok()).filter_map(|e| std::fs::read_link(e.path()).ok()).filter(|t| t.starts_with(dir)).count())
            .unwrap_or(0)
    }

    #[test]
    fn files_over_the_limit_are_closed_least_recently_used_first_and_reopen_on_use() {
        let dir = tempfile::tempdir().expect("tempdir");
        let budget = Budget::new(8);
        let files: Vec<LogFile> = (0..8)
            .map(|i| {
                let f = LogFile::open_in(&budget, dir.path().join(format!("{i}")), false).expect("open");
                f.get().expect("get").write_all_at(format!("file {i}").as_bytes(), 0).expect("write");
                f
            })
            .collect();
        assert_eq!(budget.open_count(), 8);
        // Use file 0 again, then open a ninth: the least recently used (1) goes, not 0.
        files[0].get().expect("get");
        let ninth = LogFile::open_in(&budget, dir.path().join("9"), false).expect("open");
        assert!(budget.open_count() <= 8, "{} open", budget.open_count());
        assert!(files[0].if_open().is_some(), "the file used last stays open");
        assert!(files[1].if_open().is_none(), "the least recently used is closed");
        // A closed file opens again on use, with its contents.
        let mut buf = [0u8; 6];
        files[1].get().expect("reopened").read_exact_at(&mut buf, 0).expect("read");
        assert_eq!(&buf, b"file 1");
        drop(ninth);
        drop(files);
        assert_eq!(budget.open_count(), 0, "dropping files gives their room back");
    }

    #[test]
    fn a_file_written_since_its_last_sync_is_never_closed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let budget = Budget::new(2);
        let dirty = LogFile::open_in(&budget, dir.path().join("dirty"), false).expect("open");
        dirty.for_write().expect("write").write_all(b"unsynced").expect("write");
        let others: Vec<_> = (0..20).map(|i| LogFile::open_in(&budget, dir.path().join(format!("{i}")), false).expect("open")).collect();
        assert!(dirty.if_open().is_some(), "an unsynced file stays open whatever the budget");
        assert!(dirty.is_dirty());
        dirty.for_write().expect("write").sync_data().expect("sync");
        dirty.synced();
        let more: Vec<_> = (0..3).map(|i| LogFile::open_in(&budget, dir.path().join(format!("more {i}")), false).expect("open")).collect();
        assert!(dirty.if_open().is_none(), "once synced it may be closed");
        drop((others, more));
        assert!(budget.open_count() <= 2 + 1, "{} open", budget.open_count());
    }

    #[test]
    fn thousands_of_files_keep_at_most_the_limit_of_descriptors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let budget = Budget::new(64);
        let files: Vec<_> = (0..2_000).map(|i| LogFile::open_in(&budget, dir.path().join(format!("{i}")), false).expect("open")).collect();
        for (i, f) in files.iter().enumerate().rev() {
            f.get().expect("get").write_all_at(&(i as u64).to_be_bytes(), 0).expect("write");
        }
        let held = fds_under(dir.path());
        assert!(held <= 64, "{held} descriptors held for 2,000 files under a limit of 64");
        for (i, f) in files.iter().enumerate() {
            let mut buf = [0u8; 8];
            f.get().expect("get").read_exact_at(&mut buf, 0).expect("read");
            assert_eq!(u64::from_be_bytes(buf), i as u64);
        }
    }
}
