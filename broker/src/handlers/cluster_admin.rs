//! Cluster administration: moving partitions between nodes (AlterPartitionReassignments and
//! ListPartitionReassignments, KIP-455), removing a node (UnregisterBroker), changing the
//! controller voters (AddRaftVoter and RemoveRaftVoter, KIP-853), describing them
//! (DescribeQuorum, KIP-595) and preferred-leader election (ElectLeaders, KIP-460). The
//! controller records what is wanted; partition leaders carry it out (see `node`).

use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_quorum_response;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::alter_partition_reassignments_response::{ReassignablePartitionResponse, ReassignableTopicResponse};
use kafka_protocol::messages::list_partition_reassignments_response::{OngoingPartitionReassignment, OngoingTopicReassignment};
use kafka_protocol::messages::{
    AddRaftVoterRequest, AddRaftVoterResponse, AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    DescribeQuorumRequest, DescribeQuorumResponse, ElectLeadersRequest, ElectLeadersResponse, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
    RemoveRaftVoterRequest, RemoveRaftVoterResponse, TopicName, UnregisterBrokerRequest, UnregisterBrokerResponse,
};

use super::metadata::str;
use crate::cluster::{ClusterError, ControllerCommand, PartitionMeta, QuorumReplica, TopicMeta};
use crate::node::Node;
use crate::protocol::errors::{kafka_error, BrokerError};

fn broker_ids(ids: &[u64]) -> Vec<BrokerId> {
    ids.iter().map(|id| BrokerId(i32::try_from(*id).unwrap_or(i32::MAX))).collect()
}

/// Starts or cancels one partition's reassignment through the controller.
async fn reassign(node: &Node, topic: &str, partition: i32, replicas: Option<Vec<BrokerId>>, allow_rf_change: bool) -> Result<(), BrokerError> {
    let state = node.cluster();
    let t = state.topics.get(topic).ok_or(BrokerError::UnknownTopicOrPartition)?;
    let target = match replicas {
        None => None,
        Some(r) => Some(
            r.iter()
                .map(|b| u64::try_from(b.0).map_err(|_| ClusterError::InvalidReplicaAssignment(format!("broker id {} is negative", b.0))))
                .collect::<Result<Vec<u64>, _>>()?,
        ),
    };
    let cmd = ControllerCommand::ReassignPartition { topic: t.id, partition, target, allow_rf_change };
    node.controller.propose(cmd).await?;
    Ok(())
}

pub async fn handle_alter_partition_reassignments(
    node: &Node,
    req: AlterPartitionReassignmentsRequest,
    _version: i16,
) -> AlterPartitionReassignmentsResponse {
    let allow_rf_change = req.allow_replication_factor_change;
    let mut responses = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let result = reassign(node, t.name.as_str(), p.partition_index, p.replicas, allow_rf_change).await;
            let (code, message) = match result {
                Ok(()) => (0, None),
                Err(e) => (kafka_error(&e).code(), Some(str(&e.to_string()))),
            };
            partitions.push(
                ReassignablePartitionResponse::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(code)
                    .with_error_message(message),
            );
        }
        responses.push(ReassignableTopicResponse::default().with_name(t.name).with_partitions(partitions));
    }
    AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(allow_rf_change)
        .with_error_code(0)
        .with_responses(responses)
}

fn ongoing(p: &PartitionMeta) -> Option<OngoingPartitionReassignment> {
    p.target.as_ref()?;
    Some(
        OngoingPartitionReassignment::default()
            .with_partition_index(p.index)
            .with_replicas(broker_ids(&p.all_replicas()))
            .with_adding_replicas(broker_ids(&p.adding()))
            .with_removing_replicas(broker_ids(&p.removing())),
    )
}

/// Ongoing reassignments: of every partition (topics null), or of the partitions named;
/// unknown topics and partitions with nothing ongoing are left out, as Kafka does.
pub fn handle_list_partition_reassignments(node: &Node, req: ListPartitionReassignmentsRequest, _version: i16) -> ListPartitionReassignmentsResponse {
    let state = node.cluster();
    let mut topics = Vec::new();
    match req.topics {
        None => {
            for t in state.topics.values() {
                let partitions: Vec<_> = t.partitions.iter().filter_map(ongoing).collect();
                if !partitions.is_empty() {
                    topics.push(OngoingTopicReassignment::default().with_name(TopicName(str(&t.name))).with_partitions(partitions));
                }
            }
        }
        Some(wanted) => {
            for w in wanted {
                let Some(t) = state.topics.get(w.name.as_str()) else { continue };
                let partitions: Vec<_> = t
                    .partitions
                    .iter()
                    .filter(|p| w.partition_indexes.contains(&p.index))
                    .filter_map(ongoing)
                    .collect();
                if !partitions.is_empty() {
                    topics.push(OngoingTopicReassignment::default().with_name(w.name).with_partitions(partitions));
                }
            }
        }
    }
    ListPartitionReassignmentsResponse::default().with_error_code(0).with_topics(topics)
}

/// Removes a node's registration, once it has been drained and stopped. A controller
/// voter must leave the voters first (RemoveRaftVoter).
pub async fn handle_unregister_broker(node: &Node, req: UnregisterBrokerRequest, _version: i16) -> UnregisterBrokerResponse {
    let id = req.broker_id.0;
    let result = match u64::try_from(id) {
        Err(_) => Err(BrokerError::from(ClusterError::BrokerNotRegistered(u64::MAX))),
        Ok(id) if node.controller.voters().contains(&id) => Err(BrokerError::InvalidRequest(format!(
            "node {id} is a controller voter; remove it from the voters first (RemoveRaftVoter)"
        ))),
        Ok(id) => node.controller.propose(ControllerCommand::UnregisterBroker { node_id: id }).await.map(|_| ()).map_err(BrokerError::from),
    };
    match result {
        Ok(()) => UnregisterBrokerResponse::default().with_error_code(0),
        Err(e) => UnregisterBrokerResponse::default()
            .with_error_code(kafka_error(&e).code())
            .with_error_message(Some(str(&format!("broker {id}: {e}")))),
    }
}

/// KIP-460's election types.
const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

/// One partition's election: `Ok(true)` when a leader changed, `Ok(false)` when none was
/// needed (ELECTION_NOT_NEEDED).
async fn elect(node: &Node, topic: &TopicMeta, p: &PartitionMeta, election_type: i8) -> Result<bool, (ResponseError, String)> {
    let leader = node.partition_leader(topic, p).map(|(l, _)| l);
    if election_type == UNCLEAN {
        // Raft elects among up-to-date replicas only, and does so by itself: there is no
        // unclean election to trigger.
        return match leader {
            Some(_) => Ok(false),
            None => Err((ResponseError::EligibleLeadersNotAvailable, "raft elects only up-to-date replicas; no unclean election".into())),
        };
    }
    let Some(&preferred) = p.replicas.first() else {
        return Err((ResponseError::PreferredLeaderNotAvailable, "no replicas".into()));
    };
    if leader == Some(preferred) {
        return Ok(false);
    }
    if node.preferred_in_sync(topic, p).is_none() {
        return Err((ResponseError::PreferredLeaderNotAvailable, format!("preferred leader {preferred} is not in sync")));
    }
    node.transfer_leadership(topic, p, preferred)
        .await
        .map(|()| true)
        .map_err(|e| (ResponseError::PreferredLeaderNotAvailable, format!("handing leadership to {preferred}: {e}")))
}

/// A partition an ElectLeaders request is about: its topic's name as asked, its index, and
/// the topic and partition when they exist.
type Wanted<'a> = (TopicName, i32, Option<(&'a TopicMeta, &'a PartitionMeta)>);

/// ElectLeaders: preferred-leader election (the first replica takes over, when it is in
/// sync), of the partitions named or, with none named, of every partition not led by its
/// preferred replica. Elections run concurrently; each pauses writes to its partition for
/// about two seconds (`PartitionReplica::transfer_leadership`).
pub async fn handle_elect_leaders(node: &Node, req: ElectLeadersRequest, version: i16) -> ElectLeadersResponse {
    let election_type = if version >= 1 { req.election_type } else { PREFERRED };
    let state = node.cluster();
    let mut wanted: Vec<Wanted> = Vec::new();
    let all = req.topic_partitions.is_none();
    match &req.topic_partitions {
        None => {
            for t in state.topics.values() {
                for p in &t.partitions {
                    let led_elsewhere = node.partition_leader(t, p).map(|(l, _)| l) != p.replicas.first().copied();
                    if election_type != PREFERRED || led_elsewhere {
                        wanted.push((TopicName(str(&t.name)), p.index, Some((t, p))));
                    }
                }
            }
        }
        Some(list) => {
            for tp in list {
                let t = state.topics.get(tp.topic.as_str());
                for index in &tp.partitions {
                    let found = t.and_then(|t| t.partition(*index).map(|p| (t, p)));
                    wanted.push((tp.topic.clone(), *index, found));
                }
            }
        }
    }
    let outcomes = futures::future::join_all(wanted.iter().map(|(_, _, found)| async move {
        match (election_type, found) {
            (PREFERRED | UNCLEAN, Some((t, p))) => elect(node, t, p, election_type).await,
            (PREFERRED | UNCLEAN, None) => Err((ResponseError::UnknownTopicOrPartition, "unknown topic or partition".into())),
            (other, _) => Err((ResponseError::InvalidRequest, format!("unknown election type {other}"))),
        }
    }))
    .await;
    let mut results: Vec<ReplicaElectionResult> = Vec::new();
    for ((topic, index, _), outcome) in wanted.into_iter().zip(outcomes) {
        let (code, message) = match outcome {
            Ok(true) => (0, None),
            // Asked about every partition, Kafka reports only those it elected.
            Ok(false) if all => continue,
            Ok(false) => (ResponseError::ElectionNotNeeded.code(), Some(str("the preferred leader leads already"))),
            Err((e, m)) => (e.code(), Some(str(&m))),
        };
        let result = PartitionResult::default().with_partition_id(index).with_error_code(code).with_error_message(message);
        match results.iter_mut().find(|r| r.topic == topic) {
            Some(r) => r.partition_result.push(result),
            None => results.push(ReplicaElectionResult::default().with_topic(topic).with_partition_result(vec![result])),
        }
    }
    ElectLeadersResponse::default().with_error_code(0).with_replica_election_results(results)
}

/// The timeout a voter change gets when the request names none (AddRaftVoter's default).
const VOTER_CHANGE_TIMEOUT_MS: i32 = 30_000;

/// KIP-853's AddRaftVoter and RemoveRaftVoter, on the controller's leader: a registered
/// node becomes a controller voter, or stops being one; the coordinator group follows.
/// The node's listeners and directory id are not checked: a node is known by its id and
/// registration, and keeps one data directory.
async fn change_voter(node: &Node, cluster_id: Option<&str>, voter_id: i32, add: bool, timeout_ms: i32) -> Result<(), BrokerError> {
    if let Some(c) = cluster_id.filter(|c| *c != node.cluster_id) {
        return Err(BrokerError::InconsistentClusterId(format!("cluster id {c} is not this cluster's ({})", node.cluster_id)));
    }
    let id = u64::try_from(voter_id).map_err(|_| BrokerError::InvalidRequest(format!("invalid voter id {voter_id}")))?;
    let timeout = Duration::from_millis(u64::try_from(if timeout_ms > 0 { timeout_ms } else { VOTER_CHANGE_TIMEOUT_MS }).unwrap_or(30_000));
    let deadline = tokio::time::Instant::now() + timeout;
    match tokio::time::timeout_at(deadline, node.controller.change_voter(id, add)).await {
        Ok(r) => r.map_err(BrokerError::from)?,
        Err(_) => return Err(BrokerError::Timeout),
    }
    // Answer once the coordinator group runs on the new voters too, so that the operator
    // may stop a removed voter right away. A node that removed itself no longer sees that
    // group's changes and answers at once.
    let wanted: std::collections::BTreeSet<u64> = node.controller.voters().into_iter().collect();
    if !wanted.contains(&(node.node_id() as u64)) {
        return Ok(());
    }
    while node.coordinator.voters() != wanted {
        if tokio::time::Instant::now() >= deadline {
            return Err(BrokerError::CoordinatorLagging(format!("the controller voters are now {wanted:?}; the coordinator group has not followed yet")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

pub async fn handle_add_raft_voter(node: &Node, req: AddRaftVoterRequest, _version: i16) -> AddRaftVoterResponse {
    let cluster_id = req.cluster_id.as_ref().map(|c| c.to_string());
    match change_voter(node, cluster_id.as_deref(), req.voter_id, true, req.timeout_ms).await {
        Ok(()) => AddRaftVoterResponse::default().with_error_code(0),
        Err(e) => AddRaftVoterResponse::default()
            .with_error_code(kafka_error(&e).code())
            .with_error_message(Some(str(&format!("voter {}: {e}", req.voter_id)))),
    }
}

pub async fn handle_remove_raft_voter(node: &Node, req: RemoveRaftVoterRequest, _version: i16) -> RemoveRaftVoterResponse {
    let cluster_id = req.cluster_id.as_ref().map(|c| c.to_string());
    match change_voter(node, cluster_id.as_deref(), req.voter_id, false, 0).await {
        Ok(()) => RemoveRaftVoterResponse::default().with_error_code(0),
        Err(e) => RemoveRaftVoterResponse::default()
            .with_error_code(kafka_error(&e).code())
            .with_error_message(Some(str(&format!("voter {}: {e}", req.voter_id)))),
    }
}

/// The controller log's name and partition in Kafka (KRaft); the only one DescribeQuorum
/// knows.
const METADATA_TOPIC: &str = "__cluster_metadata";

/// The listener name the voters' raft endpoints get in DescribeQuorum v2.
const RAFT_LISTENER: &str = "RAFT";

fn replica_state(r: &QuorumReplica, version: i16) -> describe_quorum_response::ReplicaState {
    let state = describe_quorum_response::ReplicaState::default()
        .with_replica_id(BrokerId(i32::try_from(r.node_id).unwrap_or(i32::MAX)))
        .with_log_end_offset(r.log_end_offset);
    if version >= 1 {
        state.with_last_fetch_timestamp(r.last_fetch_ms).with_last_caught_up_timestamp(r.last_caught_up_ms)
    } else {
        state
    }
}

/// DescribeQuorum (KIP-595; v1 adds fetch times, v2 directory ids and voter endpoints,
/// KIP-853): the controller quorum as its leader sees it, asked of the leader by any node
/// (Kafka's brokers forward it to the active controller). Replica directory ids are all
/// zero: Runnel keeps one data directory per node and does not name it.
pub async fn handle_describe_quorum(node: &Node, req: DescribeQuorumRequest, version: i16) -> DescribeQuorumResponse {
    let asks_metadata_log = matches!(req.topics.as_slice(), [t] if t.topic_name.0.as_str() == METADATA_TOPIC
        && matches!(t.partitions.as_slice(), [p] if p.partition_index == 0));
    if !asks_metadata_log {
        // As Kafka: anything but the one metadata partition is an invalid request.
        let r = DescribeQuorumResponse::default().with_error_code(ResponseError::InvalidRequest.code());
        return if version >= 2 { r.with_error_message(Some(str(&format!("only {METADATA_TOPIC}-0 has a quorum")))) } else { r };
    }
    let partition = describe_quorum_response::PartitionData::default().with_partition_index(0);
    let (partition, nodes) = match node.controller.describe_quorum().await {
        Ok(q) => {
            let state = node.cluster();
            let nodes = q
                .voters
                .iter()
                .filter_map(|v| state.brokers.get(&v.node_id))
                .filter_map(|b| {
                    let (host, port) = b.raft_endpoint.rsplit_once(':')?;
                    let listener =
                        describe_quorum_response::Listener::default().with_name(str(RAFT_LISTENER)).with_host(str(host)).with_port(port.parse().ok()?);
                    Some(describe_quorum_response::Node::default().with_node_id(BrokerId(i32::try_from(b.node_id).ok()?)).with_listeners(vec![listener]))
                })
                .collect();
            let partition = partition
                .with_error_code(0)
                .with_leader_id(BrokerId(i32::try_from(q.leader).unwrap_or(i32::MAX)))
                .with_leader_epoch(q.epoch)
                .with_high_watermark(q.high_watermark)
                .with_current_voters(q.voters.iter().map(|r| replica_state(r, version)).collect())
                .with_observers(q.observers.iter().map(|r| replica_state(r, version)).collect());
            (partition, nodes)
        }
        Err(e) => {
            // As Kafka's raft client off the leader; a leader that cannot be reached the same.
            let code = match &e {
                ClusterError::NotController { .. } | ClusterError::Unavailable(_) => ResponseError::NotLeaderOrFollower,
                other => kafka_error(&BrokerError::from(other.clone())),
            };
            let partition = partition.with_error_code(code.code());
            let partition = if version >= 2 { partition.with_error_message(Some(str(&format!("no controller leader answered: {e}")))) } else { partition };
            let partition = partition
                .with_leader_id(BrokerId(-1))
                .with_leader_epoch(-1)
                .with_high_watermark(-1);
            (partition, Vec::new())
        }
    };
    // Voter endpoints are v2 only.
    let nodes = if version >= 2 { nodes } else { Vec::new() };
    DescribeQuorumResponse::default().with_error_code(0).with_nodes(nodes).with_topics(vec![describe_quorum_response::TopicData::default()
        .with_topic_name(TopicName(str(METADATA_TOPIC)))
        .with_partitions(vec![partition])])
}
