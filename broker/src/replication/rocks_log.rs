//! A raft log kept in RocksDB (`store`) for the small raft groups whose entries are
//! commands rather than record batches: the controller and the group coordinator. Each
//! group's keys start with its own prefix, so the groups share the column families.
//!
//! Writes are rare and small, so RocksDB is called inline; every log write is a synced
//! WriteBatch, acknowledged to raft only once it is on disk.
// openraft's StorageError is large, and it is what its storage traits return; the helpers
// here return it unchanged rather than boxing it only to unbox it again.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{BasicNode, ErrorSubject, ErrorVerb, OptionalSend, RaftTypeConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::types::storage_err;
use crate::store::{cf, from_json, to_json, MetadataStore, StoreOp};

type LogId = openraft::LogId<u64>;
type StorageError = openraft::StorageError<u64>;

/// The raft log, vote and purge point of one group, under `prefix`.
pub(crate) struct RocksLogStore<C> {
    store: Arc<MetadataStore>,
    prefix: &'static [u8],
    _types: PhantomData<C>,
}

impl<C> Clone for RocksLogStore<C> {
    fn clone(&self) -> Self {
        RocksLogStore { store: self.store.clone(), prefix: self.prefix, _types: PhantomData }
    }
}

impl<C> RocksLogStore<C> {
    pub(crate) fn new(store: Arc<MetadataStore>, prefix: &'static [u8]) -> Self {
        RocksLogStore { store, prefix, _types: PhantomData }
    }

    fn entry_key(&self, index: u64) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.prefix.len() + 8);
        k.extend_from_slice(self.prefix);
        k.extend_from_slice(&index.to_be_bytes());
        k
    }

    fn state_key(&self, name: &str) -> Vec<u8> {
        let mut k = self.prefix.to_vec();
        k.extend_from_slice(name.as_bytes());
        k
    }

    fn get_state<T: DeserializeOwned>(&self, name: &str, subject: ErrorSubject<u64>) -> Result<Option<T>, StorageError> {
        self.store.get_json(cf::RAFT_STATE, &self.state_key(name)).map_err(|e| storage_err(subject, ErrorVerb::Read, e))
    }

    fn put_state<T: Serialize>(&self, name: &str, v: &T, sync: bool, subject: ErrorSubject<u64>) -> Result<(), StorageError> {
        let value = to_json(v).map_err(|e| storage_err(subject.clone(), ErrorVerb::Write, e))?;
        let key = self.state_key(name);
        self.store
            .write(&[StoreOp::Put { cf: cf::RAFT_STATE, key: &key, value: &value }], sync)
            .map_err(|e| storage_err(subject, ErrorVerb::Write, e))
    }
}

impl<C> RaftLogReader<C> for RocksLogStore<C>
where
    C: RaftTypeConfig<NodeId = u64, Node = BasicNode, Entry = openraft::Entry<C>>,
    openraft::Entry<C>: Serialize + DeserializeOwned,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<openraft::Entry<C>>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => u64::MAX,
        };
        if start >= end {
            return Ok(Vec::new());
        }
        let read = |e| storage_err(ErrorSubject::Logs, ErrorVerb::Read, e);
        let rows = self.store.range(cf::RAFT_LOG, &self.entry_key(start), &self.entry_key(end), usize::MAX).map_err(read)?;
        rows.iter().map(|(k, v)| from_json(k, v).map_err(read)).collect()
    }
}

impl<C> RaftLogStorage<C> for RocksLogStore<C>
where
    C: RaftTypeConfig<NodeId = u64, Node = BasicNode, Entry = openraft::Entry<C>>,
    openraft::Entry<C>: Serialize + DeserializeOwned,
{
    type LogReader = RocksLogStore<C>;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.get_state("last_purged", ErrorSubject::Logs)?;
        let read = |e| storage_err(ErrorSubject::Logs, ErrorVerb::Read, e);
        let last = self.store.last_in(cf::RAFT_LOG, &self.entry_key(0), &self.entry_key(u64::MAX)).map_err(read)?;
        let last_log_id = match last {
            Some((k, v)) => Some(from_json::<openraft::Entry<C>>(&k, &v).map_err(read)?.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &openraft::Vote<u64>) -> Result<(), StorageError> {
        self.put_state("vote", vote, true, ErrorSubject::Vote)
    }

    async fn read_vote(&mut self) -> Result<Option<openraft::Vote<u64>>, StorageError> {
        self.get_state("vote", ErrorSubject::Vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // A hint: losing it only means re-applying entries raft commits again.
        self.put_state("committed", &committed, false, ErrorSubject::Store)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_state::<Option<LogId>>("committed", ErrorSubject::Store)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<C>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = openraft::Entry<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut rows = Vec::new();
        for e in entries {
            let value = to_json(&e).map_err(|err| storage_err(ErrorSubject::Log(e.log_id), ErrorVerb::Write, err))?;
            rows.push((self.entry_key(e.log_id.index), value));
        }
        let ops: Vec<StoreOp<'_>> =
            rows.iter().map(|(k, v)| StoreOp::Put { cf: cf::RAFT_LOG, key: k.as_slice(), value: v.as_slice() }).collect();
        match self.store.write(&ops, true) {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(storage_err(ErrorSubject::Logs, ErrorVerb::Write, e))
            }
        }
    }

    async fn truncate(&mut self, id: LogId) -> Result<(), StorageError> {
        let (from, to) = (self.entry_key(id.index), self.entry_key(u64::MAX));
        self.store
            .write(&[StoreOp::DeleteRange { cf: cf::RAFT_LOG, from: &from, to: &to }], true)
            .map_err(|e| storage_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, id: LogId) -> Result<(), StorageError> {
        let value = to_json(&Some(id)).map_err(|e| storage_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        let key = self.state_key("last_purged");
        let (from, to) = (self.entry_key(0), self.entry_key(id.index.saturating_add(1)));
        self.store
            .write(
                &[
                    StoreOp::Put { cf: cf::RAFT_STATE, key: &key, value: &value },
                    StoreOp::DeleteRange { cf: cf::RAFT_LOG, from: &from, to: &to },
                ],
                true,
            )
            .map_err(|e| storage_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

/// openraft settings of a command group (controller, coordinator): the same timing as the
/// partition groups, and a snapshot every `snapshot_every` entries so applied entries can
/// be dropped, keeping `keep_after_snapshot` for lagging followers.
pub(crate) fn command_group_config(
    cluster_name: &str,
    snapshot_every: u64,
    keep_after_snapshot: u64,
    timing: super::GroupTiming,
) -> Result<Arc<openraft::Config>, String> {
    let config = openraft::Config {
        cluster_name: cluster_name.to_string(),
        heartbeat_interval: timing.heartbeat_ms,
        election_timeout_min: timing.election_min_ms,
        election_timeout_max: timing.election_max_ms,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(snapshot_every),
        max_in_snapshot_log_to_keep: keep_after_snapshot,
        ..Default::default()
    };
    config.validate().map(Arc::new).map_err(|e| e.to_string())
}

