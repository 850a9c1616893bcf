//! The transaction coordinator: one `txn::TxnRecord` per transactional id, each change
//! stored through the coordinator raft group (`CoordinatorCommand::StoreTransaction`)
//! before it is acted on, and COMMIT/ABORT markers written to every partition of a
//! transaction through `TxnHost`. A timer aborts transactions past their timeout, finishes
//! transactions left half-way (after a crash) and forgets idle transactional ids.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::Mutex as AsyncMutex;
use tracing::{info, warn};

use super::state::{self, CommittedOffset, CoordinatorCommand};
use super::txn::{InitStep, TxnError, TxnRecord, TxnState};
use super::{CoordinatorError, GroupCoordinator};
use crate::clock::now_ms;
use crate::store::{from_json, to_json, MetadataStore};

/// What the coordinator needs from the node: fresh producer ids and marker writes.
pub trait TxnHost: Send + Sync {
    fn new_producer_id(&self) -> BoxFuture<'_, Result<i64, String>>;
    /// Appends a COMMIT or ABORT marker for the producer to each partition and waits
    /// until every one is committed. Partitions of deleted topics are skipped.
    fn write_markers(&self, producer_id: i64, epoch: i16, commit: bool, partitions: Vec<(String, i32)>) -> BoxFuture<'_, Result<(), String>>;
}

/// Settings, from the node config (Kafka's names).
#[derive(Debug, Clone)]
pub struct TxnConfig {
    /// transaction.max.timeout.ms
    pub max_timeout_ms: i32,
    /// transactional.id.expiration.ms
    pub id_expiration_ms: i64,
    /// transaction.abort.timed.out.transaction.cleanup.interval.ms
    pub cleanup_interval_ms: u64,
}

type Slot = Arc<AsyncMutex<Option<TxnRecord>>>;

/// Producer id -> (current epoch, partitions of its open transaction).
type ProducerIndex = HashMap<i64, (i16, BTreeSet<(String, i32)>)>;

/// Attempts at writing a transaction's markers before the request gives up; the timer
/// keeps retrying decided transactions afterwards.
const MARKER_ATTEMPTS: u32 = 5;

pub struct TransactionCoordinator {
    groups: Arc<GroupCoordinator>,
    store: Arc<MetadataStore>,
    host: Arc<dyn TxnHost>,
    pub config: TxnConfig,
    slots: Mutex<HashMap<String, Slot>>,
    /// Every transactional producer id: its current epoch and the partitions of its open
    /// transaction (empty when none is open), for produce-time checks.
    open: Mutex<ProducerIndex>,
    /// True while this node coordinates and has loaded the stored transactions.
    active: AtomicBool,
}

/// The slots and producer index of stored transaction records.
fn index_records(stored: Vec<crate::store::Row>) -> (HashMap<String, Slot>, ProducerIndex) {
    let mut slots = HashMap::new();
    let mut open = HashMap::new();
    for (k, v) in stored {
        match from_json::<TxnRecord>(&k, &v) {
            Ok(r) => {
                index_producer(&mut open, &r);
                slots.insert(r.transactional_id.clone(), Arc::new(AsyncMutex::new(Some(r))));
            }
            Err(e) => warn!(error = %e, "unreadable transaction record skipped"),
        }
    }
    (slots, open)
}

/// Reloads the stored transactions whenever this node takes over the coordinator group.
async fn follow_leadership(coordinator: Weak<TransactionCoordinator>, mut leadership: tokio::sync::watch::Receiver<bool>) {
    while leadership.changed().await.is_ok() {
        let Some(c) = coordinator.upgrade() else { return };
        let active = *leadership.borrow_and_update();
        if active {
            c.reload();
        }
        c.active.store(active, std::sync::atomic::Ordering::Release);
    }
}

/// Whether a transactional batch may be written to a partition (KIP-890 part 1). Sent
/// between nodes when the partition's leader is not the transaction coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PartitionCheck {
    /// The producer's open transaction includes the partition.
    Added,
    /// The producer's epoch is older than its transaction's: it was fenced.
    StaleEpoch,
    /// No open transaction of this producer includes the partition.
    NotAdded,
}

/// Records `r`'s producer id, epoch and open partitions; a producer id the record moved
/// away from keeps an epoch no batch can have, so its writes count as fenced.
fn index_producer(open: &mut ProducerIndex, r: &TxnRecord) {
    let partitions = if r.state == TxnState::Ongoing { r.partitions.clone() } else { BTreeSet::new() };
    open.insert(r.producer_id, (r.producer_epoch, partitions));
    if r.last_producer_id >= 0 {
        open.insert(r.last_producer_id, (i16::MAX, BTreeSet::new()));
    }
}

fn txn_err(e: TxnError) -> CoordinatorError {
    CoordinatorError::Txn(e)
}

impl TransactionCoordinator {
    /// The coordinator over the stored transaction records (`state::read_transactions`).
    /// Call `start_timer` once the node's partitions are open, so that decided
    /// transactions can be finished.
    pub fn new(
        groups: Arc<GroupCoordinator>,
        store: Arc<MetadataStore>,
        host: Arc<dyn TxnHost>,
        config: TxnConfig,
        stored: Vec<crate::store::Row>,
    ) -> Arc<TransactionCoordinator> {
        let (slots, open) = index_records(stored);
        info!(transactional_ids = slots.len(), "transaction coordinator loaded");
        let active_now = groups.is_active();
        let leadership = groups.watch_active();
        let coordinator = Arc::new(TransactionCoordinator {
            groups,
            store,
            host,
            config,
            slots: Mutex::new(slots),
            open: Mutex::new(open),
            active: AtomicBool::new(active_now),
        });
        tokio::spawn(follow_leadership(Arc::downgrade(&coordinator), leadership));
        coordinator
    }

    /// Whether this node coordinates transactions now.
    pub fn is_active(&self) -> bool {
        self.active.load(std::sync::atomic::Ordering::Acquire) && self.groups.is_active()
    }

    /// Ok while this node coordinates transactions; else the group coordinator's reason,
    /// or LoadInProgress while the stored transactions are being read again.
    pub fn check_active(&self) -> Result<(), CoordinatorError> {
        self.groups.check_active()?;
        if self.is_active() {
            Ok(())
        } else {
            Err(CoordinatorError::LoadInProgress)
        }
    }

    /// Reads the stored transactions again: this node has just taken over coordination,
    /// and what the previous leader stored is here through the coordinator raft group.
    fn reload(&self) {
        let rows = match crate::coordinator::state::read_transactions(&self.store) {
            Ok(rows) => rows,
            Err(e) => {
                warn!(error = %e, "cannot read stored transactions");
                return;
            }
        };
        let (slots, open) = index_records(rows);
        info!(transactional_ids = slots.len(), "transaction coordinator loaded");
        *self.slots.lock().unwrap_or_else(|p| p.into_inner()) = slots;
        *self.open.lock().unwrap_or_else(|p| p.into_inner()) = open;
    }

    /// Starts the timer: first pass at once (finishing transactions a crash left decided),
    /// then every `cleanup_interval_ms`.
    pub fn start_timer(self: &Arc<Self>) {
        tokio::spawn(run_timer(Arc::downgrade(self), Duration::from_millis(self.config.cleanup_interval_ms.max(1))));
    }

    fn slot(&self, id: &str) -> Slot {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).entry(id.to_string()).or_default().clone()
    }

    fn existing_slot(&self, id: &str) -> Option<Slot> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    /// Stores a record; every change of a record goes through here before it takes effect.
    async fn store_record(&self, record: &TxnRecord) -> Result<(), CoordinatorError> {
        let bytes = to_json(record)?;
        self.groups
            .propose(CoordinatorCommand::StoreTransaction { transactional_id: record.transactional_id.clone(), record: Some(bytes) })
            .await?;
        index_producer(&mut self.open.lock().unwrap_or_else(|p| p.into_inner()), record);
        Ok(())
    }

    /// Whether `producer_id` at `epoch` may start writing its transaction to a partition;
    /// `None` when this node does not coordinate transactions (its answer would be stale).
    pub fn check_partition(&self, producer_id: i64, epoch: i16, topic: &str, partition: i32) -> Option<PartitionCheck> {
        if !self.is_active() {
            return None;
        }
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        Some(match open.get(&producer_id) {
            Some((e, _)) if epoch < *e => PartitionCheck::StaleEpoch,
            Some((e, parts)) if epoch == *e && parts.contains(&(topic.to_string(), partition)) => PartitionCheck::Added,
            _ => PartitionCheck::NotAdded,
        })
    }

    /// A producer id never handed out before (also for idempotent producers without a
    /// transactional id).
    pub async fn new_producer_id(&self) -> Result<i64, CoordinatorError> {
        self.host.new_producer_id().await.map_err(CoordinatorError::Unavailable)
    }

    /// InitProducerId for a transactional id: (producer id, epoch).
    pub async fn init_producer_id(&self, id: &str, timeout_ms: i32, expected: Option<(i64, i16)>) -> Result<(i64, i16), CoordinatorError> {
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return Err(txn_err(TxnError::InvalidTransactionTimeout(timeout_ms)));
        }
        let slot = self.slot(id);
        let mut guard = slot.lock().await;
        loop {
            let now = now_ms();
            let Some(current) = guard.as_ref() else {
                if expected.is_some_and(|(pid, _)| pid >= 0) {
                    // A producer re-initialising an id this coordinator no longer knows.
                    return Err(txn_err(TxnError::InvalidProducerIdMapping));
                }
                let record = TxnRecord::new(id, self.new_producer_id().await?, timeout_ms, now);
                self.store_record(&record).await?;
                let answer = (record.producer_id, record.producer_epoch);
                *guard = Some(record);
                return Ok(answer);
            };
            // A fresh id is only used when the epoch is exhausted; take one lazily.
            let new_id = if current.producer_epoch >= super::txn::MAX_EPOCH { self.new_producer_id().await? } else { -1 };
            match current.init(expected, timeout_ms, new_id, now).map_err(txn_err)? {
                InitStep::Ready { record, changed } => {
                    if changed {
                        self.store_record(&record).await?;
                    }
                    let answer = (record.producer_id, record.producer_epoch);
                    *guard = Some(record);
                    return Ok(answer);
                }
                InitStep::AbortFirst(fenced) => {
                    info!(transactional_id = id, "fencing the previous producer and aborting its transaction");
                    self.store_record(&fenced).await?;
                    *guard = Some(fenced);
                    self.finish(&mut guard).await?;
                    // Evaluate again against the aborted record (bumps the epoch once more).
                }
            }
        }
    }

    /// Writes the markers of a decided (Prepare) record, settles staged offsets and
    /// stores the Complete record.
    async fn finish(&self, guard: &mut Option<TxnRecord>) -> Result<(), CoordinatorError> {
        let Some(record) = guard.as_ref() else { return Ok(()) };
        if !record.state.is_preparing() {
            return Ok(());
        }
        let commit = record.commits();
        let partitions: Vec<(String, i32)> = record.partitions.iter().cloned().collect();
        let mut attempt = 0;
        loop {
            match self.host.write_markers(record.producer_id, record.producer_epoch, commit, partitions.clone()).await {
                Ok(()) => break,
                Err(e) => {
                    attempt += 1;
                    if attempt >= MARKER_ATTEMPTS {
                        return Err(CoordinatorError::Unavailable(format!("writing transaction markers: {e}")));
                    }
                    warn!(transactional_id = %record.transactional_id, attempt, error = %e, "writing transaction markers failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                }
            }
        }
        if !record.groups.is_empty() {
            self.groups
                .propose(CoordinatorCommand::CompleteTxnOffsets {
                    transactional_id: record.transactional_id.clone(),
                    groups: record.groups.iter().cloned().collect(),
                    commit,
                })
                .await?;
        }
        let done = record.completed(now_ms());
        self.store_record(&done).await?;
        *guard = Some(done);
        Ok(())
    }

    /// Locks the record of `id` and runs `f` on it; unknown ids are INVALID_PRODUCER_ID_MAPPING.
    async fn with_record<T>(
        &self,
        id: &str,
        f: impl FnOnce(&TxnRecord) -> Result<T, TxnError>,
    ) -> Result<(T, tokio::sync::OwnedMutexGuard<Option<TxnRecord>>), CoordinatorError> {
        let slot = self.existing_slot(id).ok_or(txn_err(TxnError::InvalidProducerIdMapping))?;
        let guard = slot.lock_owned().await;
        let out = match guard.as_ref() {
            Some(r) => f(r).map_err(txn_err)?,
            None => return Err(txn_err(TxnError::InvalidProducerIdMapping)),
        };
        Ok((out, guard))
    }

    /// AddPartitionsToTxn (and, with `group`, AddOffsetsToTxn).
    pub async fn add(&self, id: &str, producer_id: i64, epoch: i16, partitions: &[(String, i32)], group: Option<&str>) -> Result<(), CoordinatorError> {
        let now = now_ms();
        let (next, mut guard) = self.with_record(id, |r| r.add(producer_id, epoch, partitions, group, now)).await?;
        if let Some(next) = next {
            self.store_record(&next).await?;
            *guard = Some(next);
        }
        Ok(())
    }

    /// Checks that `id`'s open transaction belongs to this producer (TxnOffsetCommit).
    pub async fn check_producer(&self, id: &str, producer_id: i64, epoch: i16) -> Result<(), CoordinatorError> {
        self.with_record(id, |r| r.check_producer(producer_id, epoch)).await.map(|_| ())
    }

    /// TxnOffsetCommit's check against the transaction: the current producer, with an open
    /// transaction to which AddOffsetsToTxn added `group` (else the staged offsets would
    /// never be settled).
    pub async fn check_offsets(&self, id: &str, producer_id: i64, epoch: i16, group: &str) -> Result<(), CoordinatorError> {
        self.with_record(id, |r| {
            r.check_producer(producer_id, epoch)?;
            if r.state != TxnState::Ongoing || !r.groups.contains(group) {
                return Err(TxnError::InvalidTxnState(format!("group {group} was not added to the transaction")));
            }
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// EndTxn: decides the transaction, writes its markers and settles its offsets.
    pub async fn end(&self, id: &str, producer_id: i64, epoch: i16, commit: bool) -> Result<(), CoordinatorError> {
        let now = now_ms();
        let (prepare, mut guard) = self.with_record(id, |r| r.end(producer_id, epoch, commit, now)).await?;
        let Some(prepare) = prepare else { return Ok(()) };
        self.store_record(&prepare).await?;
        *guard = Some(prepare);
        self.finish(&mut guard).await
    }

    /// TxnOffsetCommit: stages offsets until the transaction ends.
    pub async fn stage_offsets(&self, id: &str, group: &str, offsets: Vec<(String, i32, CommittedOffset)>) -> Result<(), CoordinatorError> {
        self.groups
            .propose(CoordinatorCommand::StageTxnOffsets { group: group.to_string(), transactional_id: id.to_string(), offsets })
            .await
    }

    /// Partitions of `group` with offsets staged by open transactions.
    pub fn staged_partitions(&self, group: &str) -> Result<Vec<(String, i32)>, CoordinatorError> {
        Ok(state::staged_partitions(&self.store, group)?)
    }

    /// Every known transaction (ListTransactions, DescribeTransactions).
    pub async fn transactions(&self) -> Vec<TxnRecord> {
        let slots: Vec<Slot> = self.slots.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        let mut out = Vec::with_capacity(slots.len());
        for s in slots {
            if let Some(r) = s.lock().await.as_ref() {
                out.push(r.clone());
            }
        }
        out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        out
    }

    /// One timer pass: abort timed-out transactions, finish decided ones, forget idle ids.
    async fn tick(&self) {
        let ids: Vec<(String, Slot)> =
            self.slots.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (id, slot) in ids {
            let mut guard = slot.lock().await;
            let now = now_ms();
            let Some(record) = guard.as_ref() else { continue };
            if record.state == TxnState::Ongoing {
                let new_id = if record.producer_epoch >= super::txn::MAX_EPOCH {
                    match self.new_producer_id().await {
                        Ok(i) => i,
                        Err(e) => {
                            warn!(error = %e, "no producer id for a timed-out transaction");
                            continue;
                        }
                    }
                } else {
                    -1
                };
                if let Some(aborting) = record.timed_out(new_id, now) {
                    info!(transactional_id = %id, "aborting a transaction past its timeout");
                    if let Err(e) = self.store_record(&aborting).await {
                        warn!(transactional_id = %id, error = %e, "could not store the timed-out transaction");
                        continue;
                    }
                    *guard = Some(aborting);
                }
            }
            if guard.as_ref().is_some_and(|r| r.state.is_preparing()) {
                if let Err(e) = self.finish(&mut guard).await {
                    warn!(transactional_id = %id, error = %e, "could not finish a decided transaction; will retry");
                }
                continue;
            }
            if guard.as_ref().is_some_and(|r| r.expired(now, self.config.id_expiration_ms)) {
                match self.groups.propose(CoordinatorCommand::StoreTransaction { transactional_id: id.clone(), record: None }).await {
                    Ok(()) => {
                        if let Some(r) = guard.take() {
                            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
                            open.remove(&r.producer_id);
                            open.remove(&r.last_producer_id);
                        }
                        drop(guard);
                        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
                        if slots.get(&id).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                            slots.remove(&id);
                        }
                    }
                    Err(e) => warn!(transactional_id = %id, error = %e, "could not forget an expired transactional id"),
                }
            }
        }
    }
}

async fn run_timer(coordinator: Weak<TransactionCoordinator>, period: Duration) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(c) = coordinator.upgrade() else { return };
        if c.groups.is_stopping() {
            return;
        }
        if c.is_active() {
            c.tick().await;
        }
    }
}
