//! `RaftLogStorage` over the partition's segment log: raft entries are Kafka batches in the
//! `.log` files (blank and membership entries go to the log's meta records), the vote and
//! purge point live in `raft_state`. Appends are acknowledged to raft once fsynced by the
//! partition's flusher, which serves every append waiting at that moment with one fsync.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftLogId};
use tokio::sync::{mpsc, watch};

use super::raft_state::{DurableRaftState, RaftStateFiles};
use super::types::{log_id, storage_err, Entry, LogId, PartitionCommand, PartitionRaft, StorageError};
use crate::clock::now_ms;
use crate::config::FsyncPolicy;
use crate::log::{EntryPayload as LogPayload, LogError, PartitionLog, ProducerStateTable, StoredPayload};

const META_BLANK: u8 = 0;
const META_MEMBERSHIP: u8 = 1;

/// Most entries and bytes kept in memory after append, so that applying and replicating
/// fresh entries does not read them back from disk. Older entries are read from disk.
const RECENT_MAX_ENTRIES: usize = 4096;
const RECENT_MAX_BYTES: usize = 8 * 1024 * 1024;
/// Bytes of recent entries all the partitions of the process may keep together: each
/// keeps at most an equal share (at most `RECENT_MAX_BYTES`, at least
/// `RECENT_MIN_SHARE_BYTES`), so busy partitions do not add up without bound (at 8 MiB
/// each, 64 busy partitions took 575 MB of RSS).
const NODE_RECENT_MAX_BYTES: usize = 128 * 1024 * 1024;
/// The share a partition keeps however many there are: sixteen 16 KiB batches, enough
/// for the entries being applied and replicated. With `max_partitions` partitions the
/// cache can reach this times their number when that is above `NODE_RECENT_MAX_BYTES`.
const RECENT_MIN_SHARE_BYTES: usize = 256 * 1024;

/// Partition caches open in the process, which share `NODE_RECENT_MAX_BYTES`.
static OPEN_CACHES: AtomicUsize = AtomicUsize::new(0);

/// The bytes one partition may keep when `open` caches share the node's budget.
fn share_of(open: usize) -> usize {
    (NODE_RECENT_MAX_BYTES / open.max(1)).clamp(RECENT_MIN_SHARE_BYTES, RECENT_MAX_BYTES)
}

/// Entries appended recently, contiguous by index.
pub(crate) struct RecentEntries {
    entries: VecDeque<Entry>,
    bytes: usize,
}

impl Default for RecentEntries {
    fn default() -> Self {
        OPEN_CACHES.fetch_add(1, Ordering::Relaxed);
        RecentEntries { entries: VecDeque::new(), bytes: 0 }
    }
}

impl Drop for RecentEntries {
    fn drop(&mut self) {
        OPEN_CACHES.fetch_sub(1, Ordering::Relaxed);
    }
}

fn entry_size(e: &Entry) -> usize {
    match &e.payload {
        EntryPayload::Normal(PartitionCommand::Batch(b)) => b.len() + 64,
        _ => 64,
    }
}

impl RecentEntries {
    fn push(&mut self, e: Entry) {
        if let Some(last) = self.entries.back() {
            if last.log_id.index + 1 != e.log_id.index {
                self.clear();
            }
        }
        self.bytes += entry_size(&e);
        self.entries.push_back(e);
        let max_bytes = share_of(OPEN_CACHES.load(Ordering::Relaxed));
        // The newest entry stays whatever its size: it is about to be applied and sent.
        while self.entries.len() > 1 && (self.entries.len() > RECENT_MAX_ENTRIES || self.bytes > max_bytes) {
            match self.entries.pop_front() {
                Some(old) => self.bytes -= entry_size(&old),
                None => break,
            }
        }
    }
    fn get(&self, index: u64) -> Option<&Entry> {
        let first = self.entries.front()?.log_id.index;
        let pos = usize::try_from(index.checked_sub(first)?).ok()?;
        self.entries.get(pos)
    }
    fn truncate_from(&mut self, index: u64) {
        while self.entries.back().is_some_and(|e| e.log_id.index >= index) {
            if let Some(e) = self.entries.pop_back() {
                self.bytes -= entry_size(&e);
            }
        }
    }
    pub(super) fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

/// Everything the log store, the state machine and the partition handle share.
pub(crate) struct PartitionShared {
    pub log: Mutex<PartitionLog>,
    pub files: RaftStateFiles,
    pub durable: Mutex<DurableRaftState>,
    pub recent: Mutex<RecentEntries>,
    /// The high watermark: end offset of the last applied entry.
    pub high_watermark: watch::Sender<i64>,
    pub fsync: FsyncPolicy,
    /// Producer state as of the last applied entry (idempotence, open and aborted
    /// transactions); see `state_machine` for how it is restored and snapshotted.
    pub producers: Mutex<AppliedProducers>,
    /// Woken whenever entries are applied, for retries waiting on an in-flight batch.
    pub applied: tokio::sync::Notify,
    /// `producer.id.expiration.ms`.
    pub producer_expiration_ms: i64,
    /// acks=1 proposals waiting for this leader's own append (and fsync) of their batch.
    pub local_appends: LocalAppends,
}

/// Proposals waiting for the leader's own copy of their batch rather than the commit
/// (acks=1). A waiter is found by its batch's buffer: the entry raft hands the log store on
/// the leader carries the proposal's own `Bytes`. One that is never found is answered at
/// the commit instead.
#[derive(Default)]
pub(crate) struct LocalAppends {
    waiters: Mutex<std::collections::HashMap<(usize, usize), tokio::sync::oneshot::Sender<i64>>>,
    count: std::sync::atomic::AtomicUsize,
}

impl LocalAppends {
    /// A batch's key: its buffer's address and length.
    pub fn key(batch: &Bytes) -> (usize, usize) {
        (batch.as_ptr() as usize, batch.len())
    }

    /// Waits for `batch`'s local append: its base offset.
    pub fn register(&self, batch: &Bytes) -> tokio::sync::oneshot::Receiver<i64> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut w = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if w.insert(Self::key(batch), tx).is_none() {
            self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        rx
    }

    /// Forgets the waiter of the batch with `key`, if it is still there.
    pub fn forget(&self, key: (usize, usize)) {
        let mut w = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if w.remove(&key).is_some() {
            self.count.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// The waiter of an appended batch, taken out.
    fn take(&self, batch: &Bytes) -> Option<tokio::sync::oneshot::Sender<i64>> {
        if self.count.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            return None;
        }
        let mut w = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        let tx = w.remove(&Self::key(batch))?;
        self.count.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        Some(tx)
    }
}

/// acks=1 answers due once the appends they wait for are on disk.
type LocalAnswers = Vec<(tokio::sync::oneshot::Sender<i64>, i64)>;

/// The producer table and the raft log id it reflects.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct AppliedProducers {
    pub applied: Option<LogId>,
    pub table: ProducerStateTable,
}

impl PartitionShared {
    /// Locks the log. A poisoned lock means a panic happened mid-write; the log's own
    /// recovery on restart is the remedy, so keep serving what is there.
    pub fn log(&self) -> MutexGuard<'_, PartitionLog> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }
    pub(super) fn recent(&self) -> MutexGuard<'_, RecentEntries> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }
    pub(crate) fn producers(&self) -> MutexGuard<'_, AppliedProducers> {
        self.producers.lock().unwrap_or_else(|p| p.into_inner())
    }
    pub(super) fn durable(&self) -> MutexGuard<'_, DurableRaftState> {
        self.durable.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads entries `[start, end)` from the cache or the disk.
    pub(super) fn read_entries(&self, start: u64, end: u64) -> Result<Vec<Entry>, LogError> {
        let mut out = Vec::with_capacity(end.saturating_sub(start).min(1024) as usize);
        let mut missing_from = None;
        {
            let recent = self.recent();
            for i in start..end {
                match recent.get(i) {
                    Some(e) => out.push(e.clone()),
                    None => {
                        missing_from = Some(i);
                        break;
                    }
                }
            }
        }
        if missing_from.is_some() {
            out.clear();
            let log = self.log();
            for i in start..end {
                match log.read_entry(i)? {
                    Some((meta, payload)) => out.push(stored_to_entry(meta.term, i, payload)?),
                    None => break,
                }
            }
        }
        Ok(out)
    }
}

fn stored_to_entry(term: u64, index: u64, payload: StoredPayload) -> Result<Entry, LogError> {
    let payload = match payload {
        StoredPayload::Batch(b) => EntryPayload::Normal(PartitionCommand::Batch(b)),
        StoredPayload::Meta(m) => match m.first() {
            Some(&META_BLANK) => EntryPayload::Blank,
            Some(&META_MEMBERSHIP) => {
                let membership = serde_json::from_slice(&m[1..]).map_err(|e| LogError::CorruptBatch {
                    reason: format!("membership entry {index}: {e}"),
                })?;
                EntryPayload::Membership(membership)
            }
            _ => {
                return Err(LogError::CorruptBatch { reason: format!("unknown meta entry kind at index {index}") });
            }
        },
    };
    Ok(Entry { log_id: log_id(term, index), payload })
}

/// Writes one raft entry into the log.
/// Appends `e`; for a batch, returns its base offset.
fn append_entry(log: &mut PartitionLog, e: &Entry, now_ms: i64) -> Result<Option<i64>, LogError> {
    let (index, term) = (e.log_id.index, e.log_id.leader_id.term);
    match &e.payload {
        EntryPayload::Normal(PartitionCommand::Batch(b)) => {
            return Ok(Some(log.append(index, term, LogPayload::Batch(b), now_ms)?.base_offset));
        }
        EntryPayload::Blank => {
            log.append(index, term, LogPayload::Meta(&[META_BLANK]), now_ms)?;
        }
        EntryPayload::Membership(m) => {
            let mut buf = vec![META_MEMBERSHIP];
            serde_json::to_writer(&mut buf, m).map_err(|e| LogError::CorruptBatch { reason: e.to_string() })?;
            log.append(index, term, LogPayload::Meta(&buf), now_ms)?;
        }
    }
    Ok(None)
}


/// The raft log storage of one partition.
pub(crate) struct PartitionLogStore {
    pub shared: Arc<PartitionShared>,
    flush_tx: mpsc::UnboundedSender<(LogFlushed<PartitionRaft>, LocalAnswers)>,
}

impl PartitionLogStore {
    pub fn new(shared: Arc<PartitionShared>) -> Self {
        let (flush_tx, flush_rx) = mpsc::unbounded_channel();
        tokio::spawn(run_flusher(shared.clone(), flush_rx));
        PartitionLogStore { shared, flush_tx }
    }
}

/// Group commit: waits for appends, fsyncs once for all of them, then acknowledges each
/// (to raft, and to acks=1 proposals waiting for them).
async fn run_flusher(shared: Arc<PartitionShared>, mut rx: mpsc::UnboundedReceiver<(LogFlushed<PartitionRaft>, LocalAnswers)>) {
    let mut waiting = Vec::new();
    while let Some(first) = rx.recv().await {
        waiting.push(first);
        while let Ok(more) = rx.try_recv() {
            waiting.push(more);
        }
        let s = shared.clone();
        let result = tokio::task::spawn_blocking(move || {
            let pending = s.log().take_unsynced();
            pending.sync().map_err(std::io::Error::other)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        metrics::counter!("runnel_log_fsyncs_total").increment(1);
        for (cb, answers) in waiting.drain(..) {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            };
            // A failed fsync answers nobody early: the commit (or its failure) will.
            if r.is_ok() {
                for (tx, base_offset) in answers {
                    let _ = tx.send(base_offset);
                }
            }
            cb.log_io_completed(r);
        }
    }
}

fn range_bounds<RB: RangeBounds<u64>>(range: &RB) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s + 1,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e + 1,
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<PartitionRaft> for Arc<PartitionShared> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let (start, end) = range_bounds(&range);
        let end = {
            let last = self.log().last_index();
            match last {
                Some(l) => end.min(l + 1),
                None => return Ok(Vec::new()),
            }
        };
        self.read_entries(start, end).map_err(|e| storage_err(ErrorSubject::Logs, ErrorVerb::Read, e))
    }

    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
        // Bound one replication message to a few MiB of batches.
        let end = end.min(start + 256);
        self.try_get_log_entries(start..end).await
    }
}

impl RaftLogReader<PartitionRaft> for PartitionLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.shared.try_get_log_entries(range).await
    }
}

impl RaftLogStorage<PartitionRaft> for PartitionLogStore {
    type LogReader = Arc<PartitionShared>;

    async fn get_log_state(&mut self) -> Result<LogState<PartitionRaft>, StorageError> {
        let last_purged_log_id = self.shared.durable().last_purged;
        let log = self.shared.log();
        let last_log_id = match (log.last_index(), log.last_term()) {
            (Some(i), Some(t)) => Some(log_id(t, i)),
            _ => last_purged_log_id,
        };
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.shared.clone()
    }

    async fn save_vote(&mut self, vote: &openraft::Vote<u64>) -> Result<(), StorageError> {
        let shared = self.shared.clone();
        let vote = *vote;
        tokio::task::spawn_blocking(move || {
            let mut d = shared.durable();
            d.vote = Some(vote);
            shared.files.store(&d)
        })
        .await
        .map_err(|e| storage_err(ErrorSubject::Vote, ErrorVerb::Write, std::io::Error::other(e)))?
        .map_err(|e| storage_err(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<openraft::Vote<u64>>, StorageError> {
        Ok(self.shared.durable().vote)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<PartitionRaft>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let now = now_ms();
        let mut answers = LocalAnswers::new();
        for e in entries {
            let meta = !matches!(e.payload, EntryPayload::Normal(PartitionCommand::Batch(_)));
            let barrier = {
                let log = self.shared.log();
                match log.barrier_due(meta).then(|| log.take_barrier()).transpose() {
                    Ok(barrier) => barrier,
                    Err(err) => return Err(storage_err(ErrorSubject::Log(*e.get_log_id()), ErrorVerb::Write, err)),
                }
            };
            if let Some(barrier) = barrier {
                // Rare (leader changes, membership changes): synced off the runtime, and
                // nothing more is written until it is done.
                tokio::task::spawn_blocking(move || barrier.sync())
                    .await
                    .map_err(|err| storage_err(ErrorSubject::Log(*e.get_log_id()), ErrorVerb::Write, std::io::Error::other(err)))?
                    .map_err(|err| storage_err(ErrorSubject::Log(*e.get_log_id()), ErrorVerb::Write, err))?;
                self.shared.log().barrier_synced();
            }
            let mut log = self.shared.log();
            let base_offset = append_entry(&mut log, &e, now).map_err(|err| {
                storage_err(ErrorSubject::Log(*e.get_log_id()), ErrorVerb::Write, err)
            })?;
            if let (Some(base_offset), EntryPayload::Normal(PartitionCommand::Batch(b))) = (base_offset, &e.payload) {
                if let Some(tx) = self.shared.local_appends.take(b) {
                    answers.push((tx, base_offset));
                }
            }
            // Under the log's lock, so that readers find in the cache what the log holds.
            self.shared.recent().push(e);
        }
        match self.shared.fsync {
            FsyncPolicy::Always => {
                if let Err(mpsc::error::SendError((cb, _))) = self.flush_tx.send((callback, answers)) {
                    cb.log_io_completed(Err(std::io::Error::other("flusher stopped")));
                }
            }
            FsyncPolicy::Never => {
                for (tx, base_offset) in answers {
                    let _ = tx.send(base_offset);
                }
                callback.log_io_completed(Ok(()))
            }
        }
        Ok(())
    }

    async fn truncate(&mut self, id: LogId) -> Result<(), StorageError> {
        self.shared.recent().truncate_from(id.index);
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || shared.log().truncate_from(id.index))
            .await
            .map_err(|e| storage_err(ErrorSubject::Logs, ErrorVerb::Delete, std::io::Error::other(e)))?
            .map_err(|e| storage_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, id: LogId) -> Result<(), StorageError> {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || -> Result<(), std::io::Error> {
            {
                let mut d = shared.durable();
                d.last_purged = Some(id);
                shared.files.store(&d)?;
            }
            shared.log().purge_through(id.index).map_err(std::io::Error::other)
        })
        .await
        .map_err(|e| storage_err(ErrorSubject::Logs, ErrorVerb::Delete, std::io::Error::other(e)))?
        .map_err(|e| storage_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

/// Bytes of a stored batch for callers outside raft (fetch reads the log directly).
#[allow(dead_code)]
pub(crate) fn batch_bytes(e: &Entry) -> Option<&Bytes> {
    match &e.payload {
        EntryPayload::Normal(PartitionCommand::Batch(b)) => Some(b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_share_the_node_budget_between_a_floor_and_a_ceiling() {
        assert_eq!(share_of(0), RECENT_MAX_BYTES);
        assert_eq!(share_of(16), RECENT_MAX_BYTES);
        assert_eq!(share_of(64), 2 * 1024 * 1024);
        assert_eq!(share_of(10_000), RECENT_MIN_SHARE_BYTES);
        // Whatever the count, the total stays within the budget or the floor per partition.
        for n in [1, 7, 16, 17, 100, 512, 513, 2_000] {
            assert!(share_of(n) * n <= NODE_RECENT_MAX_BYTES.max(RECENT_MIN_SHARE_BYTES * n), "{n} partitions");
        }
    }

    #[test]
    fn the_newest_entry_stays_and_older_ones_go_beyond_the_share() {
        let entry = |index: u64, size: usize| Entry {
            log_id: log_id(1, index),
            payload: EntryPayload::Normal(PartitionCommand::Batch(Bytes::from(vec![0u8; size]))),
        };
        let mut cache = RecentEntries::default();
        cache.push(entry(1, 1024));
        cache.push(entry(2, RECENT_MAX_BYTES + 1));
        assert!(cache.get(1).is_none(), "the older entry made room");
        assert!(cache.get(2).is_some(), "the newest stays, however large");
        assert_eq!(cache.bytes, RECENT_MAX_BYTES + 1 + 64);
    }
}
