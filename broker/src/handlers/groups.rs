//! Consumer group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, OffsetDelete, ListGroups, DescribeGroups, DeleteGroups.
//! Typed request in, typed response out; the state lives in `coordinator`.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse, HeartbeatRequest,
    HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::messages::{
    BrokerId, FindCoordinatorRequest, FindCoordinatorResponse, OffsetCommitRequest, OffsetCommitResponse,
    OffsetDeleteRequest, OffsetDeleteResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::metadata::str;
use crate::coordinator::group::{self, JoinRequest, Reply, SyncRequest};
use crate::coordinator::{CommittedOffset, CoordinatorCommand, CoordinatorError};
use crate::clock::now_ms;
use crate::node::Node;
use crate::protocol::errors::{kafka_error, BrokerError};

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

fn code_of(e: CoordinatorError) -> i16 {
    kafka_error(&BrokerError::from(e)).code()
}

/// Where the coordinator of `key_type` keys is, or why there is none.
fn locate_coordinator(node: &Node, key_type: i8) -> Result<(i32, String, i32), (ResponseError, &'static str)> {
    if key_type != KEY_TYPE_GROUP && key_type != KEY_TYPE_TRANSACTION {
        return Err((ResponseError::InvalidRequest, "unknown coordinator key type"));
    }
    // Groups and transactions share the coordinator raft group, and so its leader: this
    // node, the leader its own replica of the group knows, or the one the controller was told.
    // A node that leads the coordinator group and is still loading it is the coordinator:
    // its requests answer COORDINATOR_LOAD_IN_PROGRESS, which clients retry there.
    if !matches!(node.coordinator.check_active(), Err(CoordinatorError::NotCoordinator { .. })) {
        return Ok((node.node_id(), node.config.advertise_host.clone(), i32::from(node.config.advertise_port)));
    }
    let state = node.cluster();
    let me = node.node_id() as u64;
    let known = node.coordinator.leader().filter(|(l, _)| *l != me);
    let leader = match (known, state.coordinator) {
        (Some(k), Some(r)) if r.1 > k.1 => Some(r.0),
        (Some(k), _) => Some(k.0),
        (None, r) => r.map(|r| r.0).filter(|l| *l != me),
    };
    match leader.and_then(|l| state.brokers.get(&l)) {
        Some(b) => Ok((b.node_id as i32, b.host.clone(), i32::from(b.port))),
        None => Err((ResponseError::CoordinatorNotAvailable, "the coordinator is moving or starting")),
    }
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

pub(super) fn partition_exists(node: &Node, topic: &str, partition: i32) -> bool {
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
    ).await {
        return respond_all(code);
    }
    let now = now_ms();
    let mut accepted = Vec::new();
    // Per partition: Some(code) is decided now; None means "stored with the batch".
    let mut decided: Vec<Vec<Option<i16>>> = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let mut row = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let offset = committed_offset(p.committed_offset, p.committed_leader_epoch, p.committed_metadata.as_ref(), now);
            row.push(accept_offset(node, &t.name, p.partition_index, offset, &mut accepted));
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

/// An offset as OffsetCommit and TxnOffsetCommit carry it, committed at `now`.
pub(super) fn committed_offset(offset: i64, leader_epoch: i32, metadata: Option<&StrBytes>, now: i64) -> CommittedOffset {
    CommittedOffset { offset, leader_epoch, metadata: metadata.map(|m| m.to_string()), commit_timestamp_ms: now }
}

/// The per-partition checks of OffsetCommit and TxnOffsetCommit: an error code for an
/// offset refused now (metadata too large, unknown partition), or `None` after adding it
/// to `accepted`, whose fate is the write of the whole request.
pub(super) fn accept_offset(
    node: &Node,
    topic: &TopicName,
    partition: i32,
    offset: CommittedOffset,
    accepted: &mut Vec<(String, i32, CommittedOffset)>,
) -> Option<i16> {
    if offset.metadata.as_ref().map_or(0, |m| m.len()) > node.coordinator.config.offset_metadata_max_bytes {
        Some(ResponseError::OffsetMetadataTooLarge.code())
    } else if !partition_exists(node, topic, partition) {
        Some(ResponseError::UnknownTopicOrPartition.code())
    } else {
        accepted.push((topic.0.to_string(), partition, offset));
        None
    }
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
    // KIP-447: with require_stable, partitions whose offsets an open transaction has
    // staged answer UNSTABLE_OFFSET_COMMIT (retriable) instead of an offset that is
    // about to change.
    let unstable = |group: &str| -> Vec<(String, i32)> {
        if version >= 7 && req.require_stable {
            node.transactions.staged_partitions(group).unwrap_or_default()
        } else {
            Vec::new()
        }
    };
    let partition_code = |unstable: &[(String, i32)], t: &str, p: i32| {
        if unstable.iter().any(|(ut, up)| ut == t && *up == p) {
            ResponseError::UnstableOffsetCommit.code()
        } else {
            0
        }
    };
    if version >= 8 {
        let groups = req
            .groups
            .iter()
            .map(|g| {
                let wanted = g.topics.as_ref().map(|ts| ts.iter().map(|t| (t.name.0.to_string(), t.partition_indexes.clone())).collect());
                let r = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
                let unstable = unstable(&g.group_id);
                match fetch_group(node, &g.group_id, wanted) {
                    Ok(topics) => r.with_error_code(0).with_topics(
                        topics
                            .into_iter()
                            .map(|(t, row)| {
                                let code = |p| partition_code(&unstable, &t, p);
                                OffsetFetchResponseTopics::default().with_name(TopicName(str(&t))).with_partitions(
                                    row.into_iter()
                                        .map(|(p, o)| {
                                            let o = if code(p) == 0 { o } else { None };
                                            OffsetFetchResponsePartitions::default()
                                                .with_partition_index(p)
                                                .with_committed_offset(o.as_ref().map_or(-1, |o| o.offset))
                                                .with_committed_leader_epoch(epoch_of(&o))
                                                .with_metadata(metadata_of(&o))
                                                .with_error_code(code(p))
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
    let unstable = unstable(&req.group_id);
    match fetch_group(node, &req.group_id, wanted) {
        Ok(topics) => OffsetFetchResponse::default().with_error_code(0).with_topics(
            topics
                .into_iter()
                .map(|(t, row)| {
                    let code = |p| partition_code(&unstable, &t, p);
                    OffsetFetchResponseTopic::default().with_name(TopicName(str(&t))).with_partitions(
                        row.into_iter()
                            .map(|(p, o)| {
                                let o = if code(p) == 0 { o } else { None };
                                OffsetFetchResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(o.as_ref().map_or(-1, |o| o.offset))
                                    .with_committed_leader_epoch(epoch_of(&o))
                                    .with_metadata(metadata_of(&o))
                                    .with_error_code(code(p))
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
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let subscribed = node.coordinator.group_subscribed_to(&group, &t.name).await;
        let partitions = t
            .partitions
            .iter()
            .map(|p| {
                let code = if subscribed {
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
        topics.push(OffsetDeleteResponseTopic::default().with_name(t.name.clone()).with_partitions(partitions));
    }
    if !delete.is_empty() {
        if let Err(e) = node.coordinator.propose(CoordinatorCommand::DeleteOffsets { group, partitions: delete }).await {
            return top(code_of(e));
        }
    }
    OffsetDeleteResponse::default().with_error_code(0).with_topics(topics)
}


fn opt_str(s: Option<&StrBytes>) -> Option<String> {
    s.map(|x| x.to_string())
}

pub async fn handle_join_group(node: &Node, req: JoinGroupRequest, version: i16, client_id: &str, client_host: &str) -> JoinGroupResponse {
    let group_id = req.group_id.0.to_string();
    let fail = |code: i16| JoinGroupResponse::default().with_error_code(code).with_generation_id(-1).with_member_id(req.member_id.clone());
    if group_id.is_empty() {
        return fail(ResponseError::InvalidGroupId.code());
    }
    let join = JoinRequest {
        member_id: req.member_id.to_string(),
        group_instance_id: opt_str(req.group_instance_id.as_ref()),
        client_id: client_id.to_string(),
        client_host: client_host.to_string(),
        session_timeout_ms: req.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if version >= 1 { req.rebalance_timeout_ms } else { req.session_timeout_ms },
        protocol_type: req.protocol_type.to_string(),
        protocols: req.protocols.iter().map(|p| (p.name.to_string(), p.metadata.clone())).collect(),
        require_known_member_id: version >= 4,
        supports_skip_assignment: version >= 9,
        reason: opt_str(req.reason.as_ref()),
    };
    match node.coordinator.join(&group_id, join).await {
        Reply::Join(j) => {
            let old_protocol_name = |n: Option<String>| if version >= 7 { n.map(|x| str(&x)) } else { Some(str(n.as_deref().unwrap_or(""))) };
            let r = JoinGroupResponse::default()
                .with_error_code(group::error_code(j.error))
                .with_generation_id(j.generation_id)
                .with_protocol_type(if version >= 7 { j.protocol_type.as_deref().map(str) } else { None })
                .with_protocol_name(old_protocol_name(j.protocol_name))
                .with_leader(str(&j.leader))
                .with_member_id(str(&j.member_id))
                .with_members(
                    j.members
                        .into_iter()
                        .map(|m| {
                            JoinGroupResponseMember::default()
                                .with_member_id(str(&m.member_id))
                                .with_group_instance_id(if version >= 5 { m.group_instance_id.as_deref().map(str) } else { None })
                                .with_metadata(m.metadata)
                        })
                        .collect(),
                );
            if version >= 9 {
                r.with_skip_assignment(j.skip_assignment)
            } else {
                r
            }
        }
        _ => fail(ResponseError::UnknownServerError.code()),
    }
}

pub async fn handle_sync_group(node: &Node, req: SyncGroupRequest, version: i16) -> SyncGroupResponse {
    let group_id = req.group_id.0.to_string();
    if group_id.is_empty() {
        return SyncGroupResponse::default().with_error_code(ResponseError::InvalidGroupId.code());
    }
    let sync = SyncRequest {
        member_id: req.member_id.to_string(),
        group_instance_id: opt_str(req.group_instance_id.as_ref()),
        generation_id: req.generation_id,
        protocol_type: opt_str(req.protocol_type.as_ref()),
        protocol_name: opt_str(req.protocol_name.as_ref()),
        assignments: req.assignments.iter().map(|a| (a.member_id.to_string(), a.assignment.clone())).collect(),
    };
    match node.coordinator.sync(&group_id, sync).await {
        Reply::Sync(r) => {
            let out = SyncGroupResponse::default().with_error_code(group::error_code(r.error)).with_assignment(r.assignment);
            if version >= 5 {
                out.with_protocol_type(r.protocol_type.as_deref().map(str)).with_protocol_name(r.protocol_name.as_deref().map(str))
            } else {
                out
            }
        }
        _ => SyncGroupResponse::default().with_error_code(ResponseError::UnknownServerError.code()),
    }
}

pub async fn handle_heartbeat(node: &Node, req: HeartbeatRequest, _version: i16) -> HeartbeatResponse {
    let code = node
        .coordinator
        .heartbeat(&req.group_id, &req.member_id, req.group_instance_id.as_deref(), req.generation_id)
        .await;
    HeartbeatResponse::default().with_error_code(code)
}

pub async fn handle_leave_group(node: &Node, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        req.members.iter().map(|m| (m.member_id.to_string(), opt_str(m.group_instance_id.as_ref()))).collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    match node.coordinator.leave(&req.group_id, members).await {
        Err(code) => LeaveGroupResponse::default().with_error_code(code),
        Ok(reply) => {
            if version >= 3 {
                LeaveGroupResponse::default().with_error_code(group::error_code(reply.error)).with_members(
                    reply
                        .members
                        .into_iter()
                        .map(|m| {
                            MemberResponse::default()
                                .with_member_id(str(&m.member_id))
                                .with_group_instance_id(m.group_instance_id.as_deref().map(str))
                                .with_error_code(group::error_code(m.error))
                        })
                        .collect(),
                )
            } else {
                // One member: its own result is the answer.
                let code = reply.error.or_else(|| reply.members.first().and_then(|m| m.error));
                LeaveGroupResponse::default().with_error_code(group::error_code(code))
            }
        }
    }
}

pub async fn handle_list_groups(node: &Node, req: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let listed = match node.coordinator.list_groups().await {
        Ok(l) => l,
        Err(e) => return ListGroupsResponse::default().with_error_code(code_of(e)),
    };
    let states: Vec<String> = req.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let types: Vec<String> = req.types_filter.iter().map(|s| s.to_lowercase()).collect();
    let groups = listed
        .into_iter()
        .filter(|g| states.is_empty() || states.contains(&g.state.to_lowercase()))
        // Every Runnel group is a classic group.
        .filter(|_| types.is_empty() || types.iter().any(|t| t == "classic"))
        .map(|g| {
            let l = ListedGroup::default().with_group_id(kafka_protocol::messages::GroupId(str(&g.group_id))).with_protocol_type(str(&g.protocol_type));
            let l = if version >= 4 { l.with_group_state(str(g.state)) } else { l };
            if version >= 5 {
                l.with_group_type(str("classic"))
            } else {
                l
            }
        })
        .collect();
    ListGroupsResponse::default().with_error_code(0).with_groups(groups)
}

pub async fn handle_describe_groups(node: &Node, req: DescribeGroupsRequest, version: i16) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(req.groups.len());
    for id in &req.groups {
        let base = DescribedGroup::default().with_group_id(id.clone()).with_authorized_operations(if req.include_authorized_operations {
            // READ, DESCRIBE, DELETE: every operation is allowed until ACLs exist.
            (1 << 3) | (1 << 6) | (1 << 8)
        } else {
            i32::MIN
        });
        let g = match node.coordinator.describe(id).await {
            Err(e) => base.with_error_code(code_of(e)).with_group_state(str("")).with_protocol_type(str("")).with_protocol_data(str("")),
            Ok(None) if version >= 6 => base
                .with_error_code(ResponseError::GroupIdNotFound.code())
                .with_error_message(Some(str(&format!("group {} not found", id.0))))
                .with_group_state(str("Dead"))
                .with_protocol_type(str(""))
                .with_protocol_data(str("")),
            // Before v6, Kafka describes an unknown group as Dead without an error.
            Ok(None) => base.with_error_code(0).with_group_state(str("Dead")).with_protocol_type(str("")).with_protocol_data(str("")),
            Ok(Some(d)) => base
                .with_error_code(0)
                .with_group_state(str(d.state.as_str()))
                .with_protocol_type(str(&d.protocol_type))
                .with_protocol_data(str(&d.protocol))
                .with_members(
                    d.members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(str(&m.member_id))
                                .with_group_instance_id(if version >= 4 { m.group_instance_id.as_deref().map(str) } else { None })
                                .with_client_id(str(&m.client_id))
                                .with_client_host(str(&m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect(),
                ),
        };
        groups.push(g);
    }
    DescribeGroupsResponse::default().with_groups(groups)
}

pub async fn handle_delete_groups(node: &Node, req: DeleteGroupsRequest, _version: i16) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for id in &req.groups_names {
        let code = match node.coordinator.delete_group(id).await {
            Ok(()) => 0,
            Err(code) => code,
        };
        results.push(DeletableGroupResult::default().with_group_id(id.clone()).with_error_code(code));
    }
    DeleteGroupsResponse::default().with_results(results)
}
