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
pub mod tick_gate;
pub mod transport;
pub mod types;

pub(crate) use membership::{add_learners, bootstrap_single_voter, initialize_voters, set_voters, watch_serving};
pub use membership::{current_voters, reaches_majority, serving_leader, voters_reached, GroupMembers, GroupTiming};
pub(crate) use rocks_log::{command_group_config, RocksLogStore};
pub use partition::{GroupMembership, LEADER_SILENT_AFTER, MarkerRequest, PartitionReplica, PartitionRequest, Proposal, ProposeHandle, ReplicaConfig, ReplicaFiles};

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

/// openraft's raft core logs at error level each RPC a peer did not answer while this
/// node asks for votes or confirms its leadership ("while requesting vote", "timeout"):
/// one line per group and attempt whenever a node is down or starting, thousands with
/// many partitions. The transport logs a peer going away and coming back once, so the
/// node's log filter drops these events, recognised by their target and their fields
/// (`error` and `target`, the peer), which no other error of the raft core has.
pub fn is_unanswered_peer_rpc(meta: &tracing::Metadata<'_>) -> bool {
    if meta.target() != "openraft::core::raft_core" || *meta.level() != tracing::Level::ERROR {
        return false;
    }
    let fields = meta.fields();
    fields.len() == 3 && fields.field("message").is_some() && fields.field("error").is_some() && fields.field("target").is_some()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::Layer;

    /// Records the messages of the events that pass the filter.
    struct Seen(Arc<Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> Layer<S> for Seen {
        fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            struct Message(String);
            impl tracing::field::Visit for Message {
                fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                    if f.name() == "message" {
                        self.0 = format!("{v:?}");
                    }
                }
            }
            let mut m = Message(String::new());
            event.record(&mut m);
            self.0.lock().expect("lock").push(m.0);
        }
    }

    #[test]
    fn unanswered_vote_and_leadership_rpcs_are_dropped_and_other_raft_errors_kept() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry()
            .with(Seen(seen.clone()).with_filter(tracing_subscriber::filter::filter_fn(|m| !super::is_unanswered_peer_rpc(m))));
        tracing::subscriber::with_default(subscriber, || {
            // The shapes of openraft 0.9's raft core events (see `is_unanswered_peer_rpc`).
            let (err, peer) = ("node 2 unreachable", 2);
            tracing::error!(target: "openraft::core::raft_core", {error = %err, target = %peer}, "while requesting vote");
            tracing::error!(target: "openraft::core::raft_core", {error = %err, target = %peer}, "timeout");
            tracing::error!(target: "openraft::core::raft_core", target = %peer, error = %err, "timeout while confirming leadership for read request");
            tracing::error!(target: "openraft::core::raft_core", error = %err, "quit RaftCore::main on error");
            tracing::error!(target: "openraft::core::raft_core", target = %peer, "fail to join task: {}", err);
            tracing::warn!(target: "openraft::core::raft_core", {error = %err, target = %peer}, "a warning");
            tracing::error!(target: "runnel::node", {error = %err, target = %peer}, "ours");
        });
        let seen = seen.lock().expect("lock").clone();
        assert_eq!(seen, vec!["quit RaftCore::main on error", "fail to join task: node 2 unreachable", "a warning", "ours"]);
    }
}
