//! The group coordinator: consumer group membership (`group`, a plain state machine per
//! group) and committed offsets, with every change that must survive a restart written
//! through the coordinator raft group into RocksDB (`state`). Handlers call the async
//! methods here; nothing in this module parses Kafka requests.

pub mod state;

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::Raft;

pub use state::{CommittedOffset, CoordinatorCommand};
use state::{CoordinatorRaft, CoordinatorStateMachine};

use crate::replication::{bootstrap_single_voter, NoPeers, RocksLogStore};
use crate::store::{MetadataStore, StoreError};

/// Key prefix of the coordinator group's raft log and raft state.
const RAFT_PREFIX: &[u8] = b"coordinator/";
const LEADER_WAIT: Duration = Duration::from_secs(10);

/// Errors of the coordinator layer; mapped to Kafka codes in `protocol::errors`.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// This node does not lead the coordinator group (Kafka: NOT_COORDINATOR).
    #[error("not the coordinator (leader: {leader:?})")]
    NotCoordinator { leader: Option<u64> },
    /// The coordinator's raft group or storage failed (Kafka: COORDINATOR_NOT_AVAILABLE).
    #[error("coordinator unavailable: {0}")]
    Unavailable(String),
    #[error("offset store: {0}")]
    Store(#[from] StoreError),
}

/// Settings of the coordinator, from the node config.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// offset.metadata.max.bytes: longest metadata string an OffsetCommit may carry.
    pub offset_metadata_max_bytes: usize,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig { offset_metadata_max_bytes: 4096 }
    }
}

/// This node's group coordinator.
pub struct GroupCoordinator {
    raft: Raft<CoordinatorRaft>,
    store: Arc<MetadataStore>,
    pub config: CoordinatorConfig,
}

fn raft_config() -> Result<Arc<openraft::Config>, CoordinatorError> {
    let config = openraft::Config {
        cluster_name: "runnel-coordinator".to_string(),
        heartbeat_interval: 100,
        election_timeout_min: 300,
        election_timeout_max: 600,
        // The state is in RocksDB already; a snapshot lets raft drop applied log entries.
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(20_000),
        max_in_snapshot_log_to_keep: 1_000,
        ..Default::default()
    };
    config.validate().map(Arc::new).map_err(|e| CoordinatorError::Unavailable(e.to_string()))
}

impl GroupCoordinator {
    /// Starts the coordinator group (one voter in single-node mode) and waits for a leader.
    pub async fn start(node_id: u64, store: Arc<MetadataStore>, config: CoordinatorConfig) -> Result<GroupCoordinator, CoordinatorError> {
        let sm = CoordinatorStateMachine::open(store.clone())?;
        let log = RocksLogStore::<CoordinatorRaft>::new(store.clone(), RAFT_PREFIX);
        let raft = Raft::new(node_id, raft_config()?, NoPeers, log, sm)
            .await
            .map_err(|e| CoordinatorError::Unavailable(e.to_string()))?;
        bootstrap_single_voter(&raft, node_id, LEADER_WAIT).await.map_err(CoordinatorError::Unavailable)?;
        Ok(GroupCoordinator { raft, store, config })
    }

    /// Replicates `cmd` and waits until it is applied (on disk on a majority).
    pub async fn propose(&self, cmd: CoordinatorCommand) -> Result<(), CoordinatorError> {
        match self.raft.client_write(cmd).await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(CoordinatorError::NotCoordinator { leader: f.leader_id })
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => Err(CoordinatorError::Unavailable(e.to_string())),
            Err(RaftError::Fatal(f)) => Err(CoordinatorError::Unavailable(f.to_string())),
        }
    }

    /// Whether this node coordinates groups now.
    pub fn is_active(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.current_leader == Some(m.id)
    }

    /// Committed offsets of `group`: all of them, or those of `only`.
    pub fn fetch_offsets(
        &self,
        group: &str,
        only: Option<&[(String, i32)]>,
    ) -> Result<Vec<(String, i32, CommittedOffset)>, CoordinatorError> {
        Ok(state::read_offsets(&self.store, group, only)?)
    }

    /// Kafka's checks of an OffsetCommit's member and generation (error code on refusal).
    /// A commit with generation -1 and no member id is a "simple" commit by a consumer that
    /// assigns partitions itself; it is refused for a group under group management.
    pub fn validate_commit(&self, _group: &str, _member_id: &str, _instance_id: Option<&str>, generation: i32) -> Result<(), i16> {
        // Without membership state a group is never under management: as Kafka does for a
        // group it does not know, allow simple commits, refuse generations >= 0.
        if generation < 0 {
            Ok(())
        } else {
            Err(kafka_protocol::error::ResponseError::IllegalGeneration.code())
        }
    }

    /// Whether `group` has membership state (a group that only commits offsets has none).
    pub fn group_exists(&self, _group: &str) -> bool {
        false
    }

    /// Whether a member of `group` subscribes to `topic` (OffsetDelete refuses those).
    pub fn group_subscribed_to(&self, _group: &str, _topic: &str) -> bool {
        false
    }

    /// Group ids with committed offsets.
    pub fn groups_with_offsets(&self) -> Result<Vec<String>, CoordinatorError> {
        Ok(state::groups_with_offsets(&self.store)?)
    }

    /// Stops the coordinator group.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "coordinator shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(offset: i64) -> CommittedOffset {
        CommittedOffset { offset, leader_epoch: 3, metadata: Some("m".into()), commit_timestamp_ms: 1 }
    }

    #[tokio::test]
    async fn committed_offsets_survive_restart_and_group_deletion_removes_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Arc::new(MetadataStore::open(dir.path()).expect("open"));
            let c = GroupCoordinator::start(1, store, CoordinatorConfig::default()).await.expect("start");
            assert!(c.is_active());
            let offsets = vec![("t".to_string(), 0, committed(5)), ("t".to_string(), 1, committed(9))];
            c.propose(CoordinatorCommand::CommitOffsets { group: "g".into(), offsets }).await.expect("commit");
            c.propose(CoordinatorCommand::CommitOffsets { group: "g2".into(), offsets: vec![("t".into(), 0, committed(1))] })
                .await
                .expect("commit");
            c.shutdown().await;
        }
        let store = Arc::new(MetadataStore::open(dir.path()).expect("reopen"));
        let c = GroupCoordinator::start(1, store, CoordinatorConfig::default()).await.expect("restart");
        let all = c.fetch_offsets("g", None).expect("fetch");
        assert_eq!(all, vec![("t".to_string(), 0, committed(5)), ("t".to_string(), 1, committed(9))]);
        let one = c.fetch_offsets("g", Some(&[("t".to_string(), 1), ("t".to_string(), 7)])).expect("fetch");
        assert_eq!(one, vec![("t".to_string(), 1, committed(9))]);
        assert_eq!(c.groups_with_offsets().expect("groups"), vec!["g".to_string(), "g2".to_string()]);
        c.propose(CoordinatorCommand::DeleteGroup { group: "g".into() }).await.expect("delete");
        assert!(c.fetch_offsets("g", None).expect("fetch").is_empty());
        assert_eq!(c.fetch_offsets("g2", None).expect("fetch").len(), 1);
        c.shutdown().await;
    }
}
