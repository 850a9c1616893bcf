//! openraft glue for partition logs: one raft group per partition whose raft log IS the
//! partition's segment log (`log::PartitionLog`), so a record batch is written to disk once.
//!
//! Kafka offsets are assigned by the log as entries are appended, from the log's own
//! contents, so every replica computes the same offsets; the high watermark is the end
//! offset of the last applied (committed) entry. Nothing here parses Kafka requests.

mod log_store;
mod membership;
mod partition;
mod raft_state;
mod rocks_log;
mod state_machine;
pub mod transport;
pub mod types;

pub(crate) use membership::{add_learners, bootstrap_single_voter, initialize_voters, set_voters, watch_serving};
pub use membership::{current_voters, reaches_majority, serving_leader, voters_reached, GroupMembers, GroupTiming};
pub(crate) use rocks_log::{command_group_config, RocksLogStore};
pub use partition::{GroupMembership, LEADER_SILENT_AFTER, MarkerRequest, PartitionReplica, PartitionRequest, Proposal, ProposeHandle, ReplicaConfig};

use crate::log::LogError;

/// Errors of the replication layer.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error(transparent)]
    Log(#[from] LogError),
    /// This node does not lead the partition's raft group (Kafka: NOT_LEADER_OR_FOLLOWER).
    #[error("not the leader of this partition (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    /// Fewer replicas than min.insync.replicas can take part (Kafka: NOT_ENOUGH_REPLICAS).
    #[error("{available} replicas available, min.insync.replicas is {required}")]
    NotEnoughReplicas { available: usize, required: i32 },
    /// The raft group has stopped (shutdown or a fatal storage error).
    #[error("partition replica stopped: {0}")]
    Stopped(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}
