//! The partition's raft state machine. The partition log itself is the state, so applying
//! an entry only moves the high watermark and reports the batch's assigned base offset.
//! A snapshot is the log's position (next index and next offset) and membership: a
//! follower that installs one starts an empty log there.
//!
//! Applying a producer batch or a transaction marker also updates the partition's producer
//! state (`log::ProducerStateTable`). That table is written to `producer-state.json` in the
//! partition directory every `PRODUCER_SNAPSHOT_INTERVAL_MS` and on shutdown, with the log
//! id it reflects; opening restores it and replays the log entries applied after it.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, StoredMembership};
use serde::{Deserialize, Serialize};

use super::log_store::{AppliedProducers, PartitionShared};
use crate::log::{parse_header, read_marker, PartitionLog, ProducerStateTable, StoredPayload};
use super::types::{storage_err, Entry, LogId, Membership, PartitionRaft, PartitionReply, StorageError};

/// What a partition snapshot holds.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotBody {
    last_applied: Option<LogId>,
    membership: Membership,
    next_offset: i64,
}

pub(crate) struct PartitionStateMachine {
    shared: Arc<PartitionShared>,
    last_applied: Option<LogId>,
    membership: Membership,
    snapshot: Option<(SnapshotMeta<u64, openraft::BasicNode>, Vec<u8>)>,
    /// When the producer state was last written to disk, and the log id it reflected.
    producers_saved_ms: i64,
    producers_saved_at: Option<LogId>,
}

const PRODUCER_SNAPSHOT_FILE: &str = "producer-state.json";
/// How often changed producer state is written out; a crash replays at most this much log.
const PRODUCER_SNAPSHOT_INTERVAL_MS: i64 = 30_000;

/// Applies one batch (as proposed or as stored) at `base_offset` to the producer table.
/// Returns whether the table changed (the batch had a producer id).
fn apply_to_producers(table: &mut ProducerStateTable, batch: &[u8], base_offset: i64) -> bool {
    let Ok(h) = parse_header(batch) else { return false };
    if h.producer_id < 0 {
        return false;
    }
    let marker = if h.is_control() { read_marker(batch).ok().flatten() } else { None };
    table.apply(&h, base_offset, marker);
    true
}

fn producer_snapshot_path(dir: &Path) -> PathBuf {
    dir.join(PRODUCER_SNAPSHOT_FILE)
}

/// Writes the producer state (with the log id it reflects) by write-and-rename. Not
/// fsynced: a lost or torn snapshot only means replaying more of the log on open.
pub(crate) fn save_producer_snapshot(shared: &PartitionShared, dir: &Path) -> std::io::Result<()> {
    let data = serde_json::to_vec(&*shared.producers()).map_err(std::io::Error::other)?;
    let path = producer_snapshot_path(dir);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, &path)
}

/// The producer state as of `applied`: the snapshot on disk when it is at or before
/// `applied` and agrees with the log, then every batch applied after it replayed from the
/// log. Without a usable snapshot the whole log is replayed.
fn restore_producers(log: &PartitionLog, dir: &Path, applied: Option<LogId>) -> AppliedProducers {
    let Some(applied) = applied else { return AppliedProducers::default() };
    let snapshot: Option<AppliedProducers> = std::fs::read(producer_snapshot_path(dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let usable = |s: &AppliedProducers| match s.applied {
        None => true,
        Some(id) => {
            id.index <= applied.index && log.entry_meta(id.index).ok().flatten().is_some_and(|m| m.term == id.leader_id.term)
        }
    };
    let mut state = match snapshot {
        Some(s) if usable(&s) => s,
        Some(_) => {
            tracing::warn!(dir = %dir.display(), "producer snapshot does not match the log; replaying the whole log");
            AppliedProducers::default()
        }
        None => AppliedProducers::default(),
    };
    let first = log.first_index().unwrap_or(0);
    let from = state.applied.map(|id| id.index + 1).unwrap_or(first).max(first);
    let mut replayed = 0u64;
    for index in from..=applied.index {
        match log.read_entry(index) {
            Ok(Some((meta, StoredPayload::Batch(b)))) => {
                if apply_to_producers(&mut state.table, &b, meta.base_offset) {
                    replayed += 1;
                }
            }
            Ok(Some((_, StoredPayload::Meta(_)))) => {}
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), index, error = %e, "cannot replay producer state past this entry");
                break;
            }
        }
    }
    if replayed > 0 {
        tracing::debug!(dir = %dir.display(), replayed, "producer state replayed from the log");
    }
    state.applied = Some(applied);
    state
}

impl PartitionStateMachine {
    /// Restores the applied position: the stored hint, clamped to what the log holds.
    pub fn open(shared: Arc<PartitionShared>) -> Self {
        let membership = shared.durable().membership.clone().unwrap_or_default();
        let mut last_applied = shared.files.load_applied();
        if let Some(applied) = last_applied {
            let log = shared.log();
            let in_log = log.entry_meta(applied.index).ok().flatten();
            last_applied = match (in_log, log.last_index(), log.last_term()) {
                (Some(meta), _, _) if meta.term == applied.leader_id.term => Some(applied),
                // Applied entries beyond the recovered log can only be lost with
                // `log_fsync: never`: nothing better than the log's end remains.
                (None, Some(last), Some(term)) if applied.index > last => Some(super::types::log_id(term, last)),
                // The hint disagrees with the log: re-apply from the log start, always safe.
                _ => None,
            };
            if last_applied.is_none() {
                tracing::warn!(hint = %applied, "applied hint not in the log; re-applying from the log start");
            }
        }
        {
            let log = shared.log();
            let restored = restore_producers(&log, log.dir(), last_applied);
            drop(log);
            *shared.producers() = restored;
        }
        let sm = PartitionStateMachine {
            shared,
            last_applied,
            membership,
            snapshot: None,
            producers_saved_ms: crate::clock::now_ms(),
            producers_saved_at: last_applied,
        };
        sm.publish_high_watermark();
        sm
    }

    /// Every `PRODUCER_SNAPSHOT_INTERVAL_MS` in which entries were applied: expire idle
    /// producers and write the producer snapshot. Also when no producer batch came: the
    /// snapshot's log id bounds how much log a start after a crash replays.
    fn maybe_save_producers(&mut self) {
        let now = crate::clock::now_ms();
        if self.producers_saved_at == self.last_applied || now - self.producers_saved_ms < PRODUCER_SNAPSHOT_INTERVAL_MS {
            return;
        }
        self.producers_saved_ms = now;
        self.producers_saved_at = self.last_applied;
        let expired = self.shared.producers().table.expire(now, self.shared.producer_expiration_ms);
        if expired > 0 {
            tracing::debug!(expired, "expired idle producer ids");
        }
        let dir = self.shared.log().dir().to_path_buf();
        if let Err(e) = save_producer_snapshot(&self.shared, &dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "could not write the producer snapshot");
        }
    }

    fn publish_high_watermark(&self) {
        let log = self.shared.log();
        let hw = match self.last_applied {
            Some(id) => log.end_offset_after(id.index).ok().flatten().unwrap_or_else(|| log.log_start_offset()),
            None => log.log_start_offset(),
        };
        drop(log);
        self.shared.high_watermark.send_if_modified(|cur| {
            if *cur != hw {
                *cur = hw;
                true
            } else {
                false
            }
        });
    }
}

impl RaftSnapshotBuilder<PartitionRaft> for PartitionStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<PartitionRaft>, StorageError> {
        let next_offset = *self.shared.high_watermark.borrow();
        let body = SnapshotBody { last_applied: self.last_applied, membership: self.membership.clone(), next_offset };
        let data = serde_json::to_vec(&body).map_err(|e| storage_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id: format!("{}-{}", self.last_applied.map(|l| l.index).unwrap_or(0), next_offset),
        };
        self.snapshot = Some((meta.clone(), data.clone()));
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

/// The snapshot builder works on a copy of the position; building is cheap.
pub(crate) struct PartitionSnapshotBuilder(PartitionStateMachine);

impl RaftSnapshotBuilder<PartitionRaft> for PartitionSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<PartitionRaft>, StorageError> {
        self.0.build_snapshot().await
    }
}

impl RaftStateMachine<PartitionRaft> for PartitionStateMachine {
    type SnapshotBuilder = PartitionSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<PartitionReply>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut replies = Vec::new();
        let mut membership_changed = false;
        {
            let log = self.shared.log();
            for e in entries {
                let reply = match &e.payload {
                    EntryPayload::Normal(super::types::PartitionCommand::Batch(batch)) => {
                        let meta = log
                            .entry_meta(e.log_id.index)
                            .map_err(|err| storage_err(ErrorSubject::Apply(e.log_id), ErrorVerb::Read, err))?;
                        let base_offset = meta.map(|m| m.base_offset).unwrap_or(-1);
                        // The table and the log id it reflects change under one lock.
                        let mut producers = self.shared.producers();
                        apply_to_producers(&mut producers.table, batch, base_offset);
                        producers.applied = Some(e.log_id);
                        PartitionReply { base_offset }
                    }
                    EntryPayload::Blank => PartitionReply { base_offset: -1 },
                    EntryPayload::Membership(m) => {
                        self.membership = StoredMembership::new(Some(e.log_id), m.clone());
                        membership_changed = true;
                        PartitionReply { base_offset: -1 }
                    }
                };
                if !matches!(e.payload, EntryPayload::Normal(_)) {
                    self.shared.producers().applied = Some(e.log_id);
                }
                self.last_applied = Some(e.log_id);
                replies.push(reply);
            }
        }
        if membership_changed {
            let mut d = self.shared.durable();
            d.membership = Some(self.membership.clone());
            self.shared
                .files
                .store(&d)
                .map_err(|e| storage_err(ErrorSubject::StateMachine, ErrorVerb::Write, e))?;
        }
        if let Some(id) = &self.last_applied {
            // A hint only: a lost write costs re-applying a few entries after a crash.
            let _ = self.shared.files.store_applied(id);
        }
        self.publish_high_watermark();
        self.shared.applied.notify_waiters();
        self.maybe_save_producers();
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        PartitionSnapshotBuilder(PartitionStateMachine {
            shared: self.shared.clone(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            snapshot: None,
            producers_saved_ms: self.producers_saved_ms,
            producers_saved_at: self.producers_saved_at,
        })
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let body: SnapshotBody = serde_json::from_slice(&data)
            .map_err(|e| storage_err(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Read, e))?;
        let next_index = meta.last_log_id.map(|l| l.index + 1).unwrap_or(0);
        {
            self.shared.recent().clear();
            let mut log = self.shared.log();
            log.reset_to(next_index, body.next_offset, crate::clock::now_ms())
                .map_err(|e| storage_err(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Write, e))?;
        }
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        // The log starts afresh at the snapshot: no producer history remains before it.
        *self.shared.producers() = AppliedProducers { applied: meta.last_log_id, table: ProducerStateTable::default() };
        {
            let mut d = self.shared.durable();
            d.membership = Some(self.membership.clone());
            d.last_purged = meta.last_log_id;
            self.shared
                .files
                .store(&d)
                .map_err(|e| storage_err(ErrorSubject::StateMachine, ErrorVerb::Write, e))?;
        }
        if let Some(id) = &self.last_applied {
            let _ = self.shared.files.store_applied(id);
        }
        self.snapshot = Some((meta.clone(), data));
        self.publish_high_watermark();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<PartitionRaft>>, StorageError> {
        Ok(self
            .snapshot
            .as_ref()
            .map(|(meta, data)| Snapshot { meta: meta.clone(), snapshot: Box::new(Cursor::new(data.clone())) }))
    }
}
