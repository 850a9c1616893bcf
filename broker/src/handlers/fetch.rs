//! The read side: Fetch (long poll, byte limits, the KIP-74 first-batch rule, topic ids in
//! v13+, sessionless answers), ListOffsets and OffsetForLeaderEpoch. Reads stop at the
//! high watermark: consumers never see uncommitted data; read_committed reads stop at the
//! last stable offset and carry the aborted transactions of the range they return.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{AbortedTransaction, FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
use kafka_protocol::messages::{
    BrokerId, FetchRequest, ProducerId, FetchResponse, ListOffsetsRequest, ListOffsetsResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse, TopicName,
};
use crate::protocol::records::{decode_batch_bounded, MAX_DECOMPRESSED_BYTES};
use uuid::Uuid;

use super::metadata::str;
use crate::node::Node;
use crate::protocol::errors::{kafka_error, BrokerError};
use crate::replication::PartitionReplica;

/// Hard cap on how long a fetch may be held open, whatever the client asks.
const MAX_FETCH_WAIT: Duration = Duration::from_secs(30);

/// Checks a request's current_leader_epoch against ours (-1: the client does not check).
fn check_epoch(replica: &PartitionReplica, requested: i32) -> Result<(), ResponseError> {
    if requested < 0 {
        return Ok(());
    }
    let ours = replica.leader_epoch();
    if requested > ours {
        Err(ResponseError::UnknownLeaderEpoch)
    } else if requested < ours {
        Err(ResponseError::FencedLeaderEpoch)
    } else {
        Ok(())
    }
}

/// Finds the partition replica a request names, or the error to answer with.
fn locate(node: &Node, topic_id: Option<Uuid>, partition: i32, by_id: bool) -> Result<Arc<PartitionReplica>, ResponseError> {
    let Some(id) = topic_id else {
        return Err(if by_id { ResponseError::UnknownTopicId } else { ResponseError::UnknownTopicOrPartition });
    };
    match node.replica(id, partition) {
        Some(r) => {
            if r.is_leader() {
                Ok(r)
            } else {
                Err(ResponseError::NotLeaderOrFollower)
            }
        }
        None => {
            let exists = node.cluster().topic_by_id(&id).is_some_and(|t| partition >= 0 && (partition as usize) < t.partitions.len());
            Err(if exists { ResponseError::NotLeaderOrFollower } else { ResponseError::UnknownTopicOrPartition })
        }
    }
}

struct FetchTarget {
    index: i32,
    replica: Result<Arc<PartitionReplica>, ResponseError>,
    offset: i64,
    max_bytes: i32,
}

pub async fn handle_fetch(node: &Node, req: FetchRequest, version: i16) -> FetchResponse {
    let read_committed = req.isolation_level == 1;
    let by_id = version >= 13;
    let state = node.cluster();
    let mut topics: Vec<(String, Uuid, Vec<FetchTarget>)> = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let (name, id) = if by_id {
            (state.topic_by_id(&t.topic_id).map(|x| x.name.clone()).unwrap_or_default(), state.topic_by_id(&t.topic_id).map(|x| x.id))
        } else {
            let n = t.topic.0.to_string();
            let id = state.topics.get(n.as_str()).map(|x| x.id);
            (n, id)
        };
        let targets = t
            .partitions
            .iter()
            .map(|p| FetchTarget {
                index: p.partition,
                replica: locate(node, id, p.partition, by_id).and_then(|r| check_epoch(&r, p.current_leader_epoch).map(|_| r)),
                offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes,
            })
            .collect();
        topics.push((name, t.topic_id, targets));
    }
    drop(state);

    let wait = Duration::from_millis(req.max_wait_ms.max(0) as u64).min(MAX_FETCH_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    let min_bytes = req.min_bytes.max(0) as usize;
    let max_bytes = if req.max_bytes <= 0 { i32::MAX as usize } else { req.max_bytes as usize };
    // Subscribe before the first read so no commit between read and wait is missed.
    let mut watchers: Vec<tokio::sync::watch::Receiver<i64>> = topics
        .iter()
        .flat_map(|(_, _, ts)| ts.iter().filter_map(|t| t.replica.as_ref().ok().map(|r| r.watch_high_watermark())))
        .collect();
    loop {
        for w in watchers.iter_mut() {
            w.borrow_and_update();
        }
        let (response, bytes, any_error) = read_all(&topics, max_bytes, read_committed);
        let now = tokio::time::Instant::now();
        if bytes >= min_bytes || any_error || now >= deadline || watchers.is_empty() {
            return response;
        }
        let changed = futures::future::select_all(watchers.iter_mut().map(|w| Box::pin(w.changed())));
        match tokio::time::timeout_at(deadline, changed).await {
            Err(_) => {
                let (response, _, _) = read_all(&topics, max_bytes, read_committed);
                return response;
            }
            Ok((Err(_), _, _)) => {
                // A replica closed (topic deleted or shutdown): answer with what there is.
                let (response, _, _) = read_all(&topics, max_bytes, read_committed);
                return response;
            }
            Ok(_) => continue,
        }
    }
}

/// One pass over every requested partition. Returns the response, the bytes of records in
/// it, and whether any partition has an error (which answers at once, as Kafka does).
fn read_all(topics: &[(String, Uuid, Vec<FetchTarget>)], max_bytes: usize, read_committed: bool) -> (FetchResponse, usize, bool) {
    let mut remaining = max_bytes;
    let mut total = 0usize;
    let mut any_error = false;
    let mut responses = Vec::with_capacity(topics.len());
    for (name, topic_id, targets) in topics {
        let mut partitions = Vec::with_capacity(targets.len());
        for t in targets {
            let mut pd = PartitionData::default()
                .with_partition_index(t.index)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
                .with_preferred_read_replica(BrokerId(-1))
                .with_aborted_transactions(if read_committed { Some(vec![]) } else { None })
                .with_records(Some(Bytes::new()));
            match &t.replica {
                Err(e) => {
                    any_error = true;
                    pd = pd.with_error_code(e.code());
                }
                Ok(replica) => {
                    let hw = replica.high_watermark();
                    let lso = replica.last_stable_offset();
                    pd = pd.with_high_watermark(hw).with_last_stable_offset(lso).with_log_start_offset(replica.log_start_offset());
                    let limit = (t.max_bytes.max(0) as usize).min(remaining);
                    let first_in_response = total == 0;
                    if limit == 0 && !first_in_response {
                        partitions.push(pd);
                        continue;
                    }
                    let read = replica
                        .read(t.offset, limit.min(u32::MAX as usize) as u32, read_committed)
                        .and_then(|s| Ok((s.end_offset(), s.read_bytes()?)));
                    match read {
                        Ok((end_offset, data)) => {
                            // Only the first batch of the whole response may exceed the limits.
                            if data.len() > limit && !first_in_response {
                                partitions.push(pd);
                                continue;
                            }
                            total += data.len();
                            remaining = remaining.saturating_sub(data.len());
                            if read_committed && !data.is_empty() {
                                let aborted = replica
                                    .aborted_transactions(t.offset, end_offset)
                                    .into_iter()
                                    .map(|a| {
                                        AbortedTransaction::default()
                                            .with_producer_id(ProducerId(a.producer_id))
                                            .with_first_offset(a.first_offset)
                                    })
                                    .collect();
                                pd = pd.with_aborted_transactions(Some(aborted));
                            }
                            pd = pd.with_records(Some(data));
                        }
                        Err(e) => {
                            any_error = true;
                            pd = pd.with_error_code(kafka_error(&BrokerError::from(e)).code());
                        }
                    }
                }
            }
            partitions.push(pd);
        }
        responses.push(FetchableTopicResponse::default().with_topic(TopicName(str(name))).with_topic_id(*topic_id).with_partitions(partitions));
    }
    (FetchResponse::default().with_error_code(0).with_session_id(0).with_responses(responses), total, any_error)
}

/// The exact record offset and timestamp inside the batch starting at `batch_offset`:
/// the first record matching `pick`, decoded from the stored batch.
fn refine_in_batch(replica: &PartitionReplica, batch_offset: i64, pick: impl Fn(i64) -> bool) -> Option<(i64, i64, i32)> {
    let data = replica.read(batch_offset, 1, false).ok()?.read_bytes().ok()?;
    let epoch = if data.len() >= 16 { i32::from_be_bytes([data[12], data[13], data[14], data[15]]) } else { -1 };
    let set = decode_batch_bounded(&data, MAX_DECOMPRESSED_BYTES).ok()?;
    set.records.iter().find(|r| r.offset >= batch_offset && pick(r.timestamp)).map(|r| (r.offset, r.timestamp, epoch))
}

/// As Kafka: a negative timestamp must be one of the special values, each from the version
/// that introduced it (-3 max timestamp from v7, -4 earliest local from v8, -5 latest
/// tiered from v9); otherwise the partition is answered UNSUPPORTED_VERSION.
fn list_offsets_timestamp_supported(timestamp: i64, version: i16) -> bool {
    match timestamp {
        0.. | -1 | -2 => true,
        -3 => version >= 7,
        -4 => version >= 8,
        -5 => version >= 9,
        _ => false,
    }
}

pub fn handle_list_offsets(node: &Node, req: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    let state = node.cluster();
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let id = state.topics.get(t.name.0.as_str()).map(|x| x.id);
        let partitions = t
            .partitions
            .iter()
            .map(|p| {
                let r = ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index).with_timestamp(-1).with_offset(-1).with_leader_epoch(-1);
                let replica = match locate(node, id, p.partition_index, false).and_then(|rep| check_epoch(&rep, p.current_leader_epoch).map(|_| rep)) {
                    Ok(rep) => rep,
                    Err(e) => return r.with_error_code(e.code()),
                };
                if !list_offsets_timestamp_supported(p.timestamp, version) {
                    return r.with_error_code(ResponseError::UnsupportedVersion.code());
                }
                let epoch = replica.leader_epoch();
                let result: Result<(i64, i64, i32), BrokerError> = match p.timestamp {
                    -2 | -4 => Ok((replica.log_start_offset(), -1, epoch)),
                    -1 if req.isolation_level == 1 => Ok((replica.last_stable_offset(), -1, epoch)),
                    -1 => Ok((replica.high_watermark(), -1, epoch)),
                    // Latest tiered offset: Runnel has no tiered storage.
                    -5 => Ok((-1, -1, -1)),
                    -3 => match replica.max_timestamp() {
                        Ok(Some((offset, ts))) => {
                            let exact = refine_in_batch(&replica, offset, |x| x == ts);
                            Ok(exact.unwrap_or((offset, ts, epoch)))
                        }
                        Ok(None) => Ok((-1, -1, -1)),
                        Err(e) => Err(e.into()),
                    },
                    ts if ts >= 0 => match replica.offset_for_timestamp(ts) {
                        Ok(Some((offset, batch_ts))) => {
                            let exact = refine_in_batch(&replica, offset, |x| x >= ts);
                            Ok(exact.unwrap_or((offset, batch_ts, epoch)))
                        }
                        Ok(None) => Ok((-1, -1, -1)),
                        Err(e) => Err(e.into()),
                    },
                    _ => Err(BrokerError::InvalidRequest(format!("timestamp {}", p.timestamp))),
                };
                match result {
                    // The leader epoch field exists from v4 on.
                    Ok((offset, ts, ep)) => r.with_error_code(0).with_offset(offset).with_timestamp(ts).with_leader_epoch(if version >= 4 { ep } else { -1 }),
                    Err(e) => r.with_error_code(kafka_error(&e).code()),
                }
            })
            .collect();
        topics.push(ListOffsetsTopicResponse::default().with_name(t.name.clone()).with_partitions(partitions));
    }
    ListOffsetsResponse::default().with_topics(topics)
}

pub fn handle_offset_for_leader_epoch(node: &Node, req: OffsetForLeaderEpochRequest, _version: i16) -> OffsetForLeaderEpochResponse {
    let state = node.cluster();
    let topics = req
        .topics
        .iter()
        .map(|t| {
            let id = state.topics.get(t.topic.0.as_str()).map(|x| x.id);
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let r = EpochEndOffset::default().with_partition(p.partition).with_leader_epoch(-1).with_end_offset(-1);
                    let replica = match locate(node, id, p.partition, false).and_then(|rep| check_epoch(&rep, p.current_leader_epoch).map(|_| rep)) {
                        Ok(rep) => rep,
                        Err(e) => return r.with_error_code(e.code()),
                    };
                    match replica.end_offset_for_epoch(p.leader_epoch) {
                        Ok(Some((epoch, end))) => r.with_error_code(0).with_leader_epoch(epoch).with_end_offset(end),
                        Ok(None) => r.with_error_code(0),
                        Err(e) => r.with_error_code(kafka_error(&BrokerError::from(e)).code()),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default().with_topic(t.topic.clone()).with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
