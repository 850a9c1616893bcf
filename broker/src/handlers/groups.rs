//! Consumer group APIs: FindCoordinator, OffsetCommit, OffsetFetch, OffsetDelete (and the
//! membership APIs as the coordinator grows them). Typed request in, typed response out;
//! the state lives in `coordinator`.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, FindCoordinatorResponse, OffsetCommitRequest, OffsetCommitResponse,
    OffsetDeleteRequest, OffsetDeleteResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::metadata::str;
use crate::coordinator::{CommittedOffset, CoordinatorCommand, CoordinatorError};
use crate::node::Node;
use crate::protocol::errors::{kafka_error, BrokerError};

const KEY_TYPE_GROUP: i8 = 0;

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn code_of(e: CoordinatorError) -> i16 {
    kafka_error(&BrokerError::from(e)).code()
}

/// Where the coordinator of `key_type` keys is, or why there is none.
fn locate_coordinator(node: &Node, key_type: i8) -> Result<(i32, String, i32), (ResponseError, &'static str)> {
    if key_type != KEY_TYPE_GROUP {
        // Transactions are a later issue: no transaction coordinator runs yet.
        return Err((ResponseError::CoordinatorNotAvailable, "no transaction coordinator: transactions are not supported yet"));
    }
    if !node.coordinator.is_active() {
        return Err((ResponseError::CoordinatorNotAvailable, "the group coordinator is starting"));
    }
    Ok((node.node_id(), node.config.advertise_host.clone(), i32::from(node.config.advertise_port)))
}

pub fn handle_find_coordinator(node: &Node, req: FindCoordinatorRequest, version: i16) -> FindCoordinatorResponse {
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|key| {
                let c = Coordinator::default().with_key(key.clone());
                match locate_coordinator(node, req.key_type) {
                    Ok((id, host, port)) => c.with_node_id(BrokerId(id)).with_host(str(&host)).with_port(port).with_error_code(0),
                    Err((e, msg)) => c
                        .with_node_id(BrokerId(-1))
                        .with_host(str(""))
                        .with_port(-1)
                        .with_error_code(e.code())
                        .with_error_message(Some(str(msg))),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let r = FindCoordinatorResponse::default();
    match locate_coordinator(node, req.key_type) {
        Ok((id, host, port)) => r.with_error_code(0).with_node_id(BrokerId(id)).with_host(str(&host)).with_port(port),
        Err((e, msg)) => {
            let r = r.with_error_code(e.code()).with_node_id(BrokerId(-1)).with_host(str("")).with_port(-1);
            if version >= 1 {
                r.with_error_message(Some(str(msg)))
            } else {
                r
            }
        }
    }
}

fn partition_exists(node: &Node, topic: &str, partition: i32) -> bool {
    node.cluster().topics.get(topic).is_some_and(|t| partition >= 0 && (partition as usize) < t.partitions.len())
}

pub async fn handle_offset_commit(node: &Node, req: OffsetCommitRequest, _version: i16) -> OffsetCommitResponse {
    let group = req.group_id.0.to_string();
    let respond_all = |code: i16| {
        let topics = req
            .topics
            .iter()
            .map(|t| {
                OffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(
                    t.partitions.iter().map(|p| OffsetCommitResponsePartition::default().with_partition_index(p.partition_index).with_error_code(code)).collect(),
                )
            })
            .collect();
        OffsetCommitResponse::default().with_topics(topics)
    };
    if group.is_empty() {
        return respond_all(ResponseError::InvalidGroupId.code());
    }
    if let Err(code) = node.coordinator.validate_commit(
        &group,
        &req.member_id,
        req.group_instance_id.as_deref(),
        req.generation_id_or_member_epoch,
    ) {
        return respond_all(code);
    }
    let now = now_ms();
    let mut accepted = Vec::new();
    // Per partition: Some(code) is decided now; None means "stored with the batch".
    let mut decided: Vec<Vec<Option<i16>>> = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let mut row = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let metadata_len = p.committed_metadata.as_ref().map_or(0, |m| m.len());
            if metadata_len > node.coordinator.config.offset_metadata_max_bytes {
                row.push(Some(ResponseError::OffsetMetadataTooLarge.code()));
            } else if !partition_exists(node, &t.name, p.partition_index) {
                row.push(Some(ResponseError::UnknownTopicOrPartition.code()));
            } else {
                accepted.push((
                    t.name.0.to_string(),
                    p.partition_index,
                    CommittedOffset {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                        commit_timestamp_ms: now,
                    },
                ));
                row.push(None);
            }
        }
        decided.push(row);
    }
    let stored = if accepted.is_empty() {
        0
    } else {
        match node.coordinator.propose(CoordinatorCommand::CommitOffsets { group, offsets: accepted }).await {
            Ok(()) => 0,
            Err(e) => code_of(e),
        }
    };
    let topics = req
        .topics
        .iter()
        .zip(decided)
        .map(|(t, row)| {
            let partitions = t
                .partitions
                .iter()
                .zip(row)
                .map(|(p, d)| OffsetCommitResponsePartition::default().with_partition_index(p.partition_index).with_error_code(d.unwrap_or(stored)))
                .collect();
            OffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// One group's committed offsets for OffsetFetch: `(topic, [(partition, offset or None)])`
/// for the requested partitions, or every committed one when `wanted` is `None`.
type FetchedTopics = Vec<(String, Vec<(i32, Option<CommittedOffset>)>)>;

fn fetch_group(node: &Node, group: &str, wanted: Option<Vec<(String, Vec<i32>)>>) -> Result<FetchedTopics, CoordinatorError> {
    match wanted {
        Some(topics) => {
            let keys: Vec<(String, i32)> =
                topics.iter().flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p))).collect();
            let found = node.coordinator.fetch_offsets(group, Some(&keys))?;
            Ok(topics
                .into_iter()
                .map(|(t, ps)| {
                    let row = ps
                        .into_iter()
                        .map(|p| (p, found.iter().find(|(ft, fp, _)| *ft == t && *fp == p).map(|(_, _, o)| o.clone())))
                        .collect();
                    (t, row)
                })
                .collect())
        }
        None => {
            let mut out: FetchedTopics = Vec::new();
            for (t, p, o) in node.coordinator.fetch_offsets(group, None)? {
                match out.last_mut() {
                    Some((last, row)) if *last == t => row.push((p, Some(o))),
                    _ => out.push((t, vec![(p, Some(o))])),
                }
            }
            Ok(out)
        }
    }
}

fn metadata_of(o: &Option<CommittedOffset>) -> Option<StrBytes> {
    // Kafka answers an empty string for "no metadata" and for partitions without an offset.
    Some(str(o.as_ref().and_then(|o| o.metadata.as_deref()).unwrap_or("")))
}

pub fn handle_offset_fetch(node: &Node, req: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    let epoch_of = |o: &Option<CommittedOffset>| if version >= 5 { o.as_ref().map_or(-1, |o| o.leader_epoch) } else { -1 };
    if version >= 8 {
        let groups = req
            .groups
            .iter()
            .map(|g| {
                let wanted = g.topics.as_ref().map(|ts| ts.iter().map(|t| (t.name.0.to_string(), t.partition_indexes.clone())).collect());
                let r = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
                match fetch_group(node, &g.group_id, wanted) {
                    Ok(topics) => r.with_error_code(0).with_topics(
                        topics
                            .into_iter()
                            .map(|(t, row)| {
                                OffsetFetchResponseTopics::default().with_name(TopicName(str(&t))).with_partitions(
                                    row.into_iter()
                                        .map(|(p, o)| {
                                            OffsetFetchResponsePartitions::default()
                                                .with_partition_index(p)
                                                .with_committed_offset(o.as_ref().map_or(-1, |o| o.offset))
                                                .with_committed_leader_epoch(epoch_of(&o))
                                                .with_metadata(metadata_of(&o))
                                                .with_error_code(0)
                                        })
                                        .collect(),
                                )
                            })
                            .collect(),
                    ),
                    Err(e) => r.with_error_code(code_of(e)),
                }
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let wanted = req.topics.as_ref().map(|ts| ts.iter().map(|t| (t.name.0.to_string(), t.partition_indexes.clone())).collect());
    match fetch_group(node, &req.group_id, wanted) {
        Ok(topics) => OffsetFetchResponse::default().with_error_code(0).with_topics(
            topics
                .into_iter()
                .map(|(t, row)| {
                    OffsetFetchResponseTopic::default().with_name(TopicName(str(&t))).with_partitions(
                        row.into_iter()
                            .map(|(p, o)| {
                                OffsetFetchResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(o.as_ref().map_or(-1, |o| o.offset))
                                    .with_committed_leader_epoch(epoch_of(&o))
                                    .with_metadata(metadata_of(&o))
                                    .with_error_code(0)
                            })
                            .collect(),
                    )
                })
                .collect(),
        ),
        Err(e) => {
            let code = code_of(e);
            let r = OffsetFetchResponse::default();
            // v1 has no top-level error code: report it on every partition asked for.
            if version >= 2 {
                r.with_error_code(code)
            } else {
                r.with_topics(
                    req.topics
                        .unwrap_or_default()
                        .into_iter()
                        .map(|t| {
                            OffsetFetchResponseTopic::default().with_name(t.name).with_partitions(
                                t.partition_indexes
                                    .into_iter()
                                    .map(|p| OffsetFetchResponsePartition::default().with_partition_index(p).with_committed_offset(-1).with_error_code(code))
                                    .collect(),
                            )
                        })
                        .collect(),
                )
            }
        }
    }
}

pub async fn handle_offset_delete(node: &Node, req: OffsetDeleteRequest, _version: i16) -> OffsetDeleteResponse {
    let group = req.group_id.0.to_string();
    let top = |code: i16| OffsetDeleteResponse::default().with_error_code(code);
    let existing = match node.coordinator.fetch_offsets(&group, None) {
        Ok(o) => o,
        Err(e) => return top(code_of(e)),
    };
    if existing.is_empty() && !node.coordinator.group_exists(&group) {
        return top(ResponseError::GroupIdNotFound.code());
    }
    let mut delete = Vec::new();
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let code = if node.coordinator.group_subscribed_to(&group, &t.name) {
                        ResponseError::GroupSubscribedToTopic.code()
                    } else if !partition_exists(node, &t.name, p.partition_index) {
                        ResponseError::UnknownTopicOrPartition.code()
                    } else {
                        delete.push((t.name.0.to_string(), p.partition_index));
                        0
                    };
                    OffsetDeleteResponsePartition::default().with_partition_index(p.partition_index).with_error_code(code)
                })
                .collect();
            OffsetDeleteResponseTopic::default().with_name(t.name.clone()).with_partitions(partitions)
        })
        .collect();
    if !delete.is_empty() {
        if let Err(e) = node.coordinator.propose(CoordinatorCommand::DeleteOffsets { group, partitions: delete }).await {
            return top(code_of(e));
        }
    }
    OffsetDeleteResponse::default().with_error_code(0).with_topics(topics)
}

