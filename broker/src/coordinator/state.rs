//! The coordinators' replicated state: committed offsets, group metadata, transaction
//! records and the offsets transactions have staged, changed only by `CoordinatorCommand`s
//! applied through the coordinator raft group and kept in RocksDB (`offsets`, `groups`
//! and `producers` column families). Keys and values live here;
//! the group membership protocol lives in `group`, the async facade in `mod.rs`.
// openraft's StorageError is large, and it is what its storage traits return; the helpers
// here return it unchanged rather than boxing it only to unbox it again.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{BasicNode, EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, StoredMembership};
use serde::{Deserialize, Serialize};

use crate::replication::types::storage_err;
use crate::store::{cf, from_json, prefix_end, to_json, MetadataStore, Row, StoreError, StoreOp};

/// One committed offset, as OffsetCommit stores it and OffsetFetch returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp_ms: i64,
}

/// A change to the coordinator state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoordinatorCommand {
    CommitOffsets { group: String, offsets: Vec<(String, i32, CommittedOffset)> },
    DeleteOffsets { group: String, partitions: Vec<(String, i32)> },
    /// Stores (or with `None` removes) a group's membership record.
    StoreGroup { group: String, record: Option<Vec<u8>> },
    /// Removes a group's record and every offset it committed.
    DeleteGroup { group: String },
    /// Stores (or with `None` removes) a transactional id's record (`txn::TxnRecord`).
    StoreTransaction { transactional_id: String, record: Option<Vec<u8>> },
    /// TxnOffsetCommit: offsets held back until the transaction ends.
    StageTxnOffsets { group: String, transactional_id: String, offsets: Vec<(String, i32, CommittedOffset)> },
    /// The transaction ended: its staged offsets in `groups` become committed offsets
    /// (`commit`) or are dropped.
    CompleteTxnOffsets { transactional_id: String, groups: Vec<String>, commit: bool },
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct CoordinatorReply;

openraft::declare_raft_types!(
    /// openraft types of the group coordinator's raft group.
    pub CoordinatorRaft:
        D = CoordinatorCommand,
        R = CoordinatorReply,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<CoordinatorRaft>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

type LogId = openraft::LogId<u64>;
type Entry = openraft::Entry<CoordinatorRaft>;
type StorageError = openraft::StorageError<u64>;
type Membership = StoredMembership<u64, BasicNode>;

/// Key (in `raft_state`) of the coordinator's last applied log id and membership, written in
/// the same batch as the state each apply changes.
const APPLIED_KEY: &[u8] = b"coordinator/applied";

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Group ids and topic names are length-prefixed so any string sorts and scans safely.
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
}

/// Key prefix of every offset of `group`.
pub fn group_prefix(group: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(group.len() + 2);
    put_str(&mut k, group);
    k
}

/// Key of one committed offset.
pub fn offset_key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
    let mut k = group_prefix(group);
    put_str(&mut k, topic);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

/// Key prefix (in `producers`) of transaction records.
const TXN_PREFIX: &[u8] = b"txn/";
/// Key prefix (in `producers`) of offsets staged by transactions.
const STAGED_PREFIX: &[u8] = b"staged/";

/// Key of a transactional id's record.
fn txn_key(transactional_id: &str) -> Vec<u8> {
    let mut k = TXN_PREFIX.to_vec();
    k.extend_from_slice(transactional_id.as_bytes());
    k
}

/// Key prefix of the offsets `transactional_id` staged for `group`.
fn staged_prefix(group: &str, transactional_id: &str) -> Vec<u8> {
    let mut k = STAGED_PREFIX.to_vec();
    put_str(&mut k, group);
    put_str(&mut k, transactional_id);
    k
}

/// Key prefix of every offset staged for `group`.
fn staged_group_prefix(group: &str) -> Vec<u8> {
    let mut k = STAGED_PREFIX.to_vec();
    put_str(&mut k, group);
    k
}

fn staged_key(group: &str, transactional_id: &str, topic: &str, partition: i32) -> Vec<u8> {
    let mut k = staged_prefix(group, transactional_id);
    put_str(&mut k, topic);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

/// Reads a length-prefixed string at the start of `buf`: (string, rest).
fn take_str(buf: &[u8]) -> Option<(String, &[u8])> {
    let len = usize::from(u16::from_be_bytes([*buf.first()?, *buf.get(1)?]));
    let s = std::str::from_utf8(buf.get(2..2 + len)?).ok()?.to_string();
    Some((s, buf.get(2 + len..)?))
}

/// Every stored transaction record (JSON bytes), in id order.
pub fn read_transactions(store: &MetadataStore) -> Result<Vec<Row>, StoreError> {
    store.range(cf::PRODUCERS, TXN_PREFIX, &prefix_end(TXN_PREFIX), usize::MAX)
}

/// Partitions of `group` with offsets staged by an open transaction (OffsetFetch with
/// require_stable answers UNSTABLE_OFFSET_COMMIT for those).
pub fn staged_partitions(store: &MetadataStore, group: &str) -> Result<Vec<(String, i32)>, StoreError> {
    let prefix = staged_group_prefix(group);
    let rows = store.range(cf::PRODUCERS, &prefix, &prefix_end(&prefix), usize::MAX)?;
    Ok(rows
        .iter()
        .filter_map(|(k, _)| {
            let (_txn, rest) = take_str(k.get(prefix.len()..)?)?;
            let (topic, rest) = take_str(rest)?;
            let p = rest.get(..4)?;
            Some((topic, i32::from_be_bytes([p[0], p[1], p[2], p[3]])))
        })
        .collect())
}

/// Topic and partition from an offset key of `group`.
fn parse_offset_key(group: &str, key: &[u8]) -> Option<(String, i32)> {
    let rest = key.get(group.len() + 2..)?;
    let len = usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?]));
    let topic = std::str::from_utf8(rest.get(2..2 + len)?).ok()?.to_string();
    let p = rest.get(2 + len..2 + len + 4)?;
    Some((topic, i32::from_be_bytes([p[0], p[1], p[2], p[3]])))
}

/// Committed offsets of `group` (all, or those of `only`), in key order.
pub fn read_offsets(
    store: &MetadataStore,
    group: &str,
    only: Option<&[(String, i32)]>,
) -> Result<Vec<(String, i32, CommittedOffset)>, StoreError> {
    match only {
        Some(parts) => {
            let mut out = Vec::with_capacity(parts.len());
            for (t, p) in parts {
                let key = offset_key(group, t, *p);
                if let Some(o) = store.get_json::<CommittedOffset>(cf::OFFSETS, &key)? {
                    out.push((t.clone(), *p, o));
                }
            }
            Ok(out)
        }
        None => {
            let prefix = group_prefix(group);
            let rows = store.range(cf::OFFSETS, &prefix, &prefix_end(&prefix), usize::MAX)?;
            let mut out = Vec::with_capacity(rows.len());
            for (k, v) in rows {
                if let Some((t, p)) = parse_offset_key(group, &k) {
                    out.push((t, p, from_json(&k, &v)?));
                }
            }
            Ok(out)
        }
    }
}

/// Every stored group record, by group id.
pub fn read_group_records(store: &MetadataStore) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let rows = store.range(cf::GROUPS, &[], &[0xff; 4], usize::MAX)?;
    Ok(rows.into_iter().map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v)).collect())
}

/// Group ids that have committed offsets.
pub fn groups_with_offsets(store: &MetadataStore) -> Result<Vec<String>, StoreError> {
    let mut out: Vec<String> = Vec::new();
    for (k, _) in store.range(cf::OFFSETS, &[], &[0xff; 4], usize::MAX)? {
        let len = usize::from(u16::from_be_bytes([k[0], k[1]]));
        if let Some(g) = k.get(2..2 + len).and_then(|b| std::str::from_utf8(b).ok()) {
            if out.last().map(String::as_str) != Some(g) {
                out.push(g.to_string());
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AppliedPosition {
    last_applied: Option<LogId>,
    membership: Membership,
}

/// What a snapshot of the coordinator holds: its position and every stored row.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotBody {
    position: AppliedPosition,
    offsets: Vec<Row>,
    groups: Vec<Row>,
    #[serde(default)]
    producers: Vec<Row>,
}

enum OwnedOp {
    Put(&'static str, Vec<u8>, Vec<u8>),
    Delete(&'static str, Vec<u8>),
    DeleteRange(&'static str, Vec<u8>, Vec<u8>),
}

/// The coordinator raft group's state machine: applies commands to RocksDB.
pub(crate) struct CoordinatorStateMachine {
    store: Arc<MetadataStore>,
    position: AppliedPosition,
}

fn sm_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    storage_err(ErrorSubject::StateMachine, verb, e)
}

impl CoordinatorStateMachine {
    pub(crate) fn open(store: Arc<MetadataStore>) -> Result<Self, StoreError> {
        let position = store.get_json(cf::RAFT_STATE, APPLIED_KEY)?.unwrap_or_default();
        Ok(CoordinatorStateMachine { store, position })
    }

    fn dump(&self) -> Result<Vec<u8>, StorageError> {
        let all = |cf| self.store.range(cf, &[], &[0xff; 4], usize::MAX).map_err(|e| sm_err(ErrorVerb::Read, e));
        let body = SnapshotBody {
            position: self.position.clone(),
            offsets: all(cf::OFFSETS)?,
            groups: all(cf::GROUPS)?,
            producers: all(cf::PRODUCERS)?,
        };
        to_json(&body).map_err(|e| sm_err(ErrorVerb::Write, e))
    }

    fn snapshot_of(&self, data: Vec<u8>) -> Snapshot<CoordinatorRaft> {
        let meta = SnapshotMeta {
            last_log_id: self.position.last_applied,
            last_membership: self.position.membership.clone(),
            snapshot_id: format!("coordinator-{}", self.position.last_applied.map(|l| l.index).unwrap_or(0)),
        };
        Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }
    }
}

/// A snapshot taken (dumped) when building starts, so later applies do not leak into it.
pub(crate) struct CoordinatorSnapshotBuilder(Option<Snapshot<CoordinatorRaft>>);

impl RaftSnapshotBuilder<CoordinatorRaft> for CoordinatorSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<CoordinatorRaft>, StorageError> {
        self.0.take().ok_or_else(|| sm_err(ErrorVerb::Read, std::io::Error::other("snapshot already built")))
    }
}

impl RaftStateMachine<CoordinatorRaft> for CoordinatorStateMachine {
    type SnapshotBuilder = CoordinatorSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        Ok((self.position.last_applied, self.position.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CoordinatorReply>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Every entry of the call goes into one atomic, synced batch with the new position,
        // in command order (a WriteBatch applies its operations in order).
        let mut owned: Vec<OwnedOp> = Vec::new();
        let mut replies = Vec::new();
        for e in entries {
            match e.payload {
                EntryPayload::Normal(cmd) => match cmd {
                    CoordinatorCommand::CommitOffsets { group, offsets } => {
                        for (t, p, o) in offsets {
                            let v = to_json(&o).map_err(|e| sm_err(ErrorVerb::Write, e))?;
                            owned.push(OwnedOp::Put(cf::OFFSETS, offset_key(&group, &t, p), v));
                        }
                    }
                    CoordinatorCommand::DeleteOffsets { group, partitions } => {
                        for (t, p) in partitions {
                            owned.push(OwnedOp::Delete(cf::OFFSETS, offset_key(&group, &t, p)));
                        }
                    }
                    CoordinatorCommand::StoreGroup { group, record } => match record {
                        Some(r) => owned.push(OwnedOp::Put(cf::GROUPS, group.into_bytes(), r)),
                        None => owned.push(OwnedOp::Delete(cf::GROUPS, group.into_bytes())),
                    },
                    CoordinatorCommand::DeleteGroup { group } => {
                        let prefix = group_prefix(&group);
                        let end = prefix_end(&prefix);
                        owned.push(OwnedOp::DeleteRange(cf::OFFSETS, prefix, end));
                        owned.push(OwnedOp::Delete(cf::GROUPS, group.into_bytes()));
                    }
                    CoordinatorCommand::StoreTransaction { transactional_id, record } => match record {
                        Some(r) => owned.push(OwnedOp::Put(cf::PRODUCERS, txn_key(&transactional_id), r)),
                        None => owned.push(OwnedOp::Delete(cf::PRODUCERS, txn_key(&transactional_id))),
                    },
                    CoordinatorCommand::StageTxnOffsets { group, transactional_id, offsets } => {
                        for (t, p, o) in offsets {
                            let v = to_json(&o).map_err(|e| sm_err(ErrorVerb::Write, e))?;
                            owned.push(OwnedOp::Put(cf::PRODUCERS, staged_key(&group, &transactional_id, &t, p), v));
                        }
                    }
                    CoordinatorCommand::CompleteTxnOffsets { transactional_id, groups, commit } => {
                        for group in groups {
                            let prefix = staged_prefix(&group, &transactional_id);
                            let end = prefix_end(&prefix);
                            if commit {
                                // Staged rows were written by earlier applies (a TxnOffsetCommit is
                                // answered only once applied, before its EndTxn is sent).
                                let rows = self.store.range(cf::PRODUCERS, &prefix, &end, usize::MAX).map_err(|e| sm_err(ErrorVerb::Read, e))?;
                                for (k, v) in rows {
                                    let Some((topic, rest)) = k.get(prefix.len()..).and_then(take_str) else { continue };
                                    let Some(p) = rest.get(..4) else { continue };
                                    let partition = i32::from_be_bytes([p[0], p[1], p[2], p[3]]);
                                    owned.push(OwnedOp::Put(cf::OFFSETS, offset_key(&group, &topic, partition), v));
                                }
                            }
                            owned.push(OwnedOp::DeleteRange(cf::PRODUCERS, prefix, end));
                        }
                    }
                },
                EntryPayload::Blank => {}
                EntryPayload::Membership(m) => self.position.membership = StoredMembership::new(Some(e.log_id), m),
            }
            self.position.last_applied = Some(e.log_id);
            replies.push(CoordinatorReply);
        }
        let position = to_json(&self.position).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        let mut ops: Vec<StoreOp<'_>> = owned
            .iter()
            .map(|op| match op {
                OwnedOp::Put(cf, key, value) => StoreOp::Put { cf, key, value },
                OwnedOp::Delete(cf, key) => StoreOp::Delete { cf, key },
                OwnedOp::DeleteRange(cf, from, to) => StoreOp::DeleteRange { cf, from, to },
            })
            .collect();
        ops.push(StoreOp::Put { cf: cf::RAFT_STATE, key: APPLIED_KEY, value: &position });
        self.store.write(&ops, true).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        CoordinatorSnapshotBuilder(self.dump().ok().map(|d| self.snapshot_of(d)))
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let body: SnapshotBody = from_json(APPLIED_KEY, &snapshot.into_inner()).map_err(|e| sm_err(ErrorVerb::Read, e))?;
        self.position = AppliedPosition { last_applied: meta.last_log_id, membership: meta.last_membership.clone() };
        let position = to_json(&self.position).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        let everything: &[u8] = &[0xff; 4];
        let mut ops = vec![
            StoreOp::DeleteRange { cf: cf::OFFSETS, from: &[], to: everything },
            StoreOp::DeleteRange { cf: cf::GROUPS, from: &[], to: everything },
            StoreOp::DeleteRange { cf: cf::PRODUCERS, from: &[], to: everything },
        ];
        for (k, v) in &body.producers {
            ops.push(StoreOp::Put { cf: cf::PRODUCERS, key: k, value: v });
        }
        for (k, v) in &body.offsets {
            ops.push(StoreOp::Put { cf: cf::OFFSETS, key: k, value: v });
        }
        for (k, v) in &body.groups {
            ops.push(StoreOp::Put { cf: cf::GROUPS, key: k, value: v });
        }
        ops.push(StoreOp::Put { cf: cf::RAFT_STATE, key: APPLIED_KEY, value: &position });
        self.store.write(&ops, true).map_err(|e| sm_err(ErrorVerb::Write, e))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<CoordinatorRaft>>, StorageError> {
        let data = self.dump()?;
        Ok(Some(self.snapshot_of(data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_keys_of_one_group_scan_together_and_parse_back() {
        let k = offset_key("g", "orders", 7);
        assert_eq!(parse_offset_key("g", &k), Some(("orders".to_string(), 7)));
        let p = group_prefix("g");
        assert!(k.starts_with(&p));
        assert!(!offset_key("g2", "orders", 7).starts_with(&p), "a longer group id is another prefix");
        assert!(k.as_slice() < prefix_end(&p).as_slice());
    }

    #[test]
    fn staged_keys_scan_by_group_and_transaction() {
        let k = staged_key("g", "tx", "orders", 3);
        assert!(k.starts_with(&staged_prefix("g", "tx")));
        assert!(k.starts_with(&staged_group_prefix("g")));
        assert!(!staged_key("g", "tx2", "orders", 3).starts_with(&staged_prefix("g", "tx")));
        let rest = &k[staged_group_prefix("g").len()..];
        let (txn, rest) = take_str(rest).expect("txn id");
        let (topic, rest) = take_str(rest).expect("topic");
        assert_eq!((txn.as_str(), topic.as_str(), rest), ("tx", "orders", &3i32.to_be_bytes()[..]));
    }
}
