//! Cluster metadata and topic creation: which broker leads each partition (Metadata),
//! creating topics with CreateTopics in batches, and waiting until every partition has
//! a leader. Nothing here is measured except where a caller times it.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{CreateTopicsRequest, MetadataRequest, MetadataResponse, TopicName};

use crate::wire::{str_bytes, Connection, CREATE_TOPICS_VERSION, METADATA_VERSION};

/// Kafka error codes this module treats specially.
const TOPIC_ALREADY_EXISTS: i16 = 36;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

/// Where a topic's partitions live: broker address -> partitions it leads.
#[derive(Debug, Clone)]
pub struct TopicLayout {
    pub by_leader: BTreeMap<String, Vec<i32>>,
    pub partitions: usize,
}

/// A Metadata request for `topics` (None: every topic), never auto-creating.
pub async fn metadata(conn: &mut Connection, topics: Option<&[String]>) -> Result<MetadataResponse> {
    let req = MetadataRequest::default()
        .with_topics(topics.map(|ts| {
            ts.iter().map(|t| MetadataRequestTopic::default().with_name(Some(TopicName(str_bytes(t))))).collect()
        }))
        .with_allow_auto_topic_creation(false);
    conn.request(METADATA_VERSION, &req).await
}

/// Partition count of `topic`, or None when the broker does not know it.
pub async fn partition_count(conn: &mut Connection, topic: &str) -> Result<Option<usize>> {
    let resp = metadata(conn, Some(&[topic.to_string()])).await?;
    match resp.topics.first() {
        Some(t) if t.error_code == 0 => Ok(Some(t.partitions.len())),
        Some(t) if t.error_code == UNKNOWN_TOPIC_OR_PARTITION => Ok(None),
        Some(t) => bail!("Metadata for {topic} failed with error code {}", t.error_code),
        None => Ok(None),
    }
}

/// Creates `names`, each with `partitions` partitions, `per_request` topics per
/// CreateTopics request. Topics that already exist are left as they are.
pub async fn create_topics(conn: &mut Connection, names: &[String], partitions: i32, per_request: usize) -> Result<()> {
    for chunk in names.chunks(per_request.max(1)) {
        let req = CreateTopicsRequest::default()
            .with_timeout_ms(120_000)
            .with_topics(
                chunk
                    .iter()
                    .map(|n| {
                        CreatableTopic::default()
                            .with_name(TopicName(str_bytes(n)))
                            .with_num_partitions(partitions)
                            .with_replication_factor(-1)
                    })
                    .collect(),
            );
        let resp = conn.request(CREATE_TOPICS_VERSION, &req).await?;
        for t in &resp.topics {
            if t.error_code != 0 && t.error_code != TOPIC_ALREADY_EXISTS {
                bail!(
                    "creating topic {} failed: error code {} {}",
                    t.name.0.as_str(),
                    t.error_code,
                    t.error_message.as_ref().map(|m| m.as_str()).unwrap_or("")
                );
            }
        }
    }
    Ok(())
}

/// Creates `topic` with `partitions` partitions unless it exists; an existing topic with
/// another partition count is an error (the run would not measure what it says).
pub async fn ensure_topic(conn: &mut Connection, topic: &str, partitions: i32) -> Result<()> {
    match partition_count(conn, topic).await? {
        Some(n) if n == partitions as usize => Ok(()),
        Some(n) => bail!("topic {topic} exists with {n} partitions, not {partitions}; choose another --topic"),
        None => create_topics(conn, &[topic.to_string()], partitions, 1).await,
    }
}

/// Waits until every partition of `topic` has a leader and returns who leads what.
pub async fn wait_for_layout(conn: &mut Connection, topic: &str, timeout: Duration) -> Result<TopicLayout> {
    let deadline = Instant::now() + timeout;
    loop {
        let resp = metadata(conn, Some(&[topic.to_string()])).await?;
        let brokers: HashMap<i32, String> = resp.brokers.iter().map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port))).collect();
        if let Some(t) = resp.topics.first().filter(|t| t.error_code == 0 && !t.partitions.is_empty()) {
            let mut by_leader: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            let mut complete = true;
            for p in &t.partitions {
                match brokers.get(&p.leader_id.0) {
                    Some(addr) if p.error_code == 0 => by_leader.entry(addr.clone()).or_default().push(p.partition_index),
                    _ => complete = false,
                }
            }
            if complete {
                for parts in by_leader.values_mut() {
                    parts.sort_unstable();
                }
                return Ok(TopicLayout { by_leader, partitions: t.partitions.len() });
            }
        }
        if Instant::now() > deadline {
            bail!("partitions of {topic} still had no leader after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every partition of every topic the broker knows has a leader; returns the
/// number of partitions. Gives up after `timeout`, or earlier when the count of partitions
/// with a leader stops growing for `stall` (a broker that failed to open them).
pub async fn wait_for_all_leaders(conn: &mut Connection, expected_partitions: usize, timeout: Duration, stall: Duration) -> Result<usize> {
    let deadline = Instant::now() + timeout;
    let mut best = 0;
    let mut progressed = Instant::now();
    loop {
        let resp = metadata(conn, None).await?;
        let total: usize = resp.topics.iter().map(|t| t.partitions.len()).sum();
        let led: usize = resp.topics.iter().flat_map(|t| &t.partitions).filter(|p| p.error_code == 0 && p.leader_id.0 >= 0).count();
        if total >= expected_partitions && led == total {
            return Ok(total);
        }
        if led > best {
            best = led;
            progressed = Instant::now();
        }
        if Instant::now() > deadline {
            bail!("{led} of {total} partitions had a leader after {timeout:?} ({expected_partitions} expected)");
        }
        if progressed.elapsed() > stall {
            bail!("{led} of {total} partitions had a leader and none gained one for {stall:?} ({expected_partitions} expected)");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
