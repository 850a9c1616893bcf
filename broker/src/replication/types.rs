//! The openraft type configuration of a partition group and its entry payloads.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// What a partition raft entry carries besides raft's own blank and membership entries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PartitionCommand {
    /// One validated Kafka record batch, as the producer sent it (with LogAppendTime applied
    /// by the leader when the topic asks for it). The log assigns its offsets.
    Batch(Bytes),
}

/// The outcome of applying one entry, sent back to the proposer.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartitionReply {
    /// First Kafka offset of the batch; -1 for entries that carry no batch.
    pub base_offset: i64,
}

openraft::declare_raft_types!(
    /// openraft types of a partition's raft group.
    pub PartitionRaft:
        D = PartitionCommand,
        R = PartitionReply,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<PartitionRaft>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = super::tick_gate::GatedRuntime,
);

pub type LogId = openraft::LogId<u64>;
pub type Entry = openraft::Entry<PartitionRaft>;
pub type StorageError = openraft::StorageError<u64>;
pub type Membership = openraft::StoredMembership<u64, openraft::BasicNode>;

/// A log id from the term and index the segment log stores.
pub fn log_id(term: u64, index: u64) -> LogId {
    // With `single-term-leader`, a committed leader id is the term alone.
    openraft::LogId::new(openraft::CommittedLeaderId::new(term, 0), index)
}

/// Turns any error into an openraft storage error on the log, for openraft to report.
pub fn storage_err(subject: openraft::ErrorSubject<u64>, verb: openraft::ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    openraft::StorageIOError::new(subject, verb, openraft::AnyError::new(&e)).into()
}
