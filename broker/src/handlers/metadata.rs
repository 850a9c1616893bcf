//! Metadata and DescribeCluster: brokers, topics with their ids, partitions with leaders,
//! epochs and replicas; auto-creation of unknown topics when allowed.

use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic};
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::admin::create_topic_with_defaults;
use crate::cluster::{ClusterState, TopicMeta};
use crate::node::Node;

/// Kafka's "not requested" value for authorized operations.
const OPS_NOT_REQUESTED: i32 = i32::MIN;
/// READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS: no ACLs yet.
const TOPIC_OPS_ALL: i32 = (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);
/// CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE.
const CLUSTER_OPS_ALL: i32 = (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);

pub(super) fn str(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn brokers(state: &ClusterState) -> Vec<MetadataResponseBroker> {
    // As KRaft: fenced brokers are not shown to clients.
    state
        .live_brokers()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.node_id as i32))
                .with_host(str(&b.host))
                .with_port(i32::from(b.port))
                .with_rack(b.rack.as_deref().map(str))
        })
        .collect()
}

/// The controller id clients send admin requests to: the controller group's leader when it
/// is a registered broker, else this node (which forwards proposals to the leader). As in
/// KRaft it is never -1: librdkafka's admin client waits for a controller and does not
/// refresh metadata to find one.
fn controller_id(node: &Node) -> i32 {
    let state = node.cluster();
    match node.controller.leader().filter(|l| state.brokers.get(l).is_some_and(|b| !b.fenced)) {
        Some(l) => l as i32,
        None => node.node_id(),
    }
}

/// One topic's metadata as this node sees it.
pub(super) fn topic_metadata(node: &Node, topic: &TopicMeta, include_ops: bool) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .map(|p| {
            let ids = |v: &[u64]| v.iter().map(|id| BrokerId(*id as i32)).collect::<Vec<_>>();
            let mut out = MetadataResponsePartition::default()
                .with_partition_index(p.index)
                .with_replica_nodes(ids(&p.all_replicas()))
                .with_isr_nodes(ids(&node.in_sync_replicas(topic, p)))
                .with_offline_replicas(vec![]);
            match node.partition_leader(topic, p) {
                Some((leader, epoch)) => {
                    out = out.with_leader_id(BrokerId(leader as i32)).with_leader_epoch(epoch).with_error_code(0);
                }
                None => {
                    out = out
                        .with_leader_id(BrokerId(-1))
                        .with_leader_epoch(-1)
                        .with_error_code(ResponseError::LeaderNotAvailable.code());
                }
            }
            out
        })
        .collect();
    MetadataResponseTopic::default()
        .with_error_code(0)
        .with_name(Some(TopicName(str(&topic.name))))
        .with_topic_id(topic.id)
        .with_is_internal(false)
        .with_partitions(partitions)
        .with_topic_authorized_operations(if include_ops { TOPIC_OPS_ALL } else { OPS_NOT_REQUESTED })
}

fn unknown_topic(name: Option<&str>, id: Uuid, error: ResponseError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(error.code())
        .with_name(name.map(|n| TopicName(str(n))))
        .with_topic_id(id)
        .with_topic_authorized_operations(OPS_NOT_REQUESTED)
}

pub async fn handle_metadata(node: &Node, req: MetadataRequest, version: i16) -> MetadataResponse {
    let include_ops = req.include_topic_authorized_operations;
    // v0: an empty list means all topics; v1+: null means all, empty means none.
    let requested = match req.topics {
        None => None,
        Some(t) if t.is_empty() && version == 0 => None,
        Some(t) => Some(t),
    };
    let allow_auto_create = (version < 4 || req.allow_auto_topic_creation) && node.config.auto_create_topics_enable;
    let mut topics = Vec::new();
    match requested {
        None => {
            let state = node.cluster();
            topics.extend(state.topics.values().map(|t| topic_metadata(node, t, include_ops)));
        }
        Some(list) => {
            for t in list {
                let name = t.name.as_ref().map(|n| n.0.to_string());
                let state = node.cluster();
                let found = match &name {
                    Some(n) => state.topics.get(n.as_str()).cloned(),
                    None => state.topic_by_id(&t.topic_id).cloned(),
                };
                match (found, name) {
                    (Some(topic), _) => topics.push(topic_metadata(node, &topic, include_ops)),
                    (None, None) => topics.push(unknown_topic(None, t.topic_id, ResponseError::UnknownTopicId)),
                    (None, Some(name)) if allow_auto_create => {
                        match create_topic_with_defaults(node, &name).await {
                            Ok(topic) => {
                                node.wait_for_leaders(&topic, Duration::from_secs(5)).await;
                                topics.push(topic_metadata(node, &topic, include_ops));
                            }
                            Err(e) => {
                                let err = crate::protocol::errors::kafka_error(&e);
                                let err = if err == ResponseError::TopicAlreadyExists {
                                    // Created concurrently by another request: answer with it.
                                    match node.cluster().topics.get(name.as_str()) {
                                        Some(topic) => {
                                            topics.push(topic_metadata(node, topic, include_ops));
                                            continue;
                                        }
                                        None => ResponseError::LeaderNotAvailable,
                                    }
                                } else {
                                    err
                                };
                                topics.push(unknown_topic(Some(&name), Uuid::nil(), err));
                            }
                        }
                    }
                    (None, Some(name)) => {
                        // As Kafka: a name no topic could have is INVALID_TOPIC_EXCEPTION.
                        let err = match crate::cluster::validate_topic_name(&name) {
                            Ok(()) => ResponseError::UnknownTopicOrPartition,
                            Err(_) => ResponseError::InvalidTopicException,
                        };
                        topics.push(unknown_topic(Some(&name), Uuid::nil(), err))
                    }
                }
            }
        }
    }
    let state = node.cluster();
    MetadataResponse::default()
        .with_brokers(brokers(&state))
        .with_cluster_id(Some(str(&node.cluster_id)))
        .with_controller_id(BrokerId(controller_id(node)))
        .with_topics(topics)
        .with_cluster_authorized_operations(if req.include_cluster_authorized_operations { CLUSTER_OPS_ALL } else { OPS_NOT_REQUESTED })
}

pub fn handle_describe_cluster(node: &Node, req: DescribeClusterRequest, _version: i16) -> DescribeClusterResponse {
    let state = node.cluster();
    let brokers = state
        .brokers
        .values()
        .filter(|b| !b.fenced || req.include_fenced_brokers)
        .map(|b| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(b.node_id as i32))
                .with_host(str(&b.host))
                .with_port(i32::from(b.port))
                .with_rack(b.rack.as_deref().map(str))
                .with_is_fenced(b.fenced)
        })
        .collect();
    // endpoint_type 1 = brokers; 2 = controllers, which Runnel serves on the same nodes.
    DescribeClusterResponse::default()
        .with_error_code(0)
        .with_endpoint_type(req.endpoint_type.max(1))
        .with_cluster_id(str(&node.cluster_id))
        .with_controller_id(BrokerId(controller_id(node)))
        .with_brokers(brokers)
        .with_cluster_authorized_operations(if req.include_cluster_authorized_operations { CLUSTER_OPS_ALL } else { OPS_NOT_REQUESTED })
}
