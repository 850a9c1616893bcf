//! Produce: validate each partition's record batches, hand them to the partition's raft
//! group in request order, and answer once they are committed (acks=-1) or once the
//! leader has its own copy on disk (acks=1); with acks=0 the dispatcher sends nothing.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use uuid::Uuid;

use super::metadata::str;
use crate::coordinator::transactions::PartitionCheck;
use crate::log::{validate_produce_records, BatchHeader, with_log_append_time, with_max_timestamp, TimestampType, TxnGuard, ValidatedBatch};
use crate::clock::now_ms;
use crate::node::Node;
use crate::protocol::errors::{kafka_error, BrokerError};
use crate::protocol::records::{decode_batch_bounded, MAX_DECOMPRESSED_BYTES};
use crate::replication::{PartitionReplica, Proposal, ProposeHandle};

/// What became of one partition's part of the request by the time it was submitted.
enum Submitted {
    Failed(ResponseError, String),
    /// A producer retry of a batch already stored: answered with the original's offset.
    Duplicate { base_offset: i64, log_start_offset: i64 },
    Proposed { replica: Arc<PartitionReplica>, handles: Vec<ProposeHandle>, log_append_time: Option<i64> },
}

async fn submit_partition(node: &Node, topic_name: &str, topic_id: Option<Uuid>, partition: i32, records: Option<Bytes>, acks: i16) -> Submitted {
    let Some(topic_id) = topic_id else {
        return Submitted::Failed(ResponseError::UnknownTopicOrPartition, "unknown topic".into());
    };
    let Some(replica) = node.replica(topic_id, partition) else {
        let known = node.cluster().topic_by_id(&topic_id).is_some_and(|t| partition >= 0 && (partition as usize) < t.partitions.len());
        return if known {
            Submitted::Failed(ResponseError::NotLeaderOrFollower, "partition not hosted here".into())
        } else {
            Submitted::Failed(ResponseError::UnknownTopicOrPartition, format!("unknown partition {partition}"))
        };
    };
    let Some(records) = records else {
        return Submitted::Failed(ResponseError::CorruptMessage, "no records".into());
    };
    let settings = replica.settings();
    // As Kafka: acks=all needs min.insync.replicas in sync, or nothing is written.
    if acks == -1 && replica.is_leader() {
        let isr = replica.in_sync_replicas(node.config.replica_lag_time_max).len();
        if isr < usize::try_from(settings.min_insync_replicas).unwrap_or(usize::MAX) {
            let e = BrokerError::from(crate::replication::ReplicationError::NotEnoughReplicas { available: isr, required: settings.min_insync_replicas });
            return Submitted::Failed(kafka_error(&e), e.to_string());
        }
    }
    let mut batches = match validate_produce_records(&records, settings.max_message_bytes) {
        Ok(b) => b,
        Err(e) => {
            let e = BrokerError::from(e);
            return Submitted::Failed(kafka_error(&e), e.to_string());
        }
    };
    // As Kafka: a v3+ produce carries exactly one record batch per partition.
    let batch = match (batches.pop(), batches.is_empty()) {
        (Some(b), true) => b,
        (None, _) => return Submitted::Failed(ResponseError::CorruptMessage, "no record batch".into()),
        (Some(_), false) => {
            return Submitted::Failed(
                ResponseError::InvalidRecord,
                "produce requests of version 3 and above must contain exactly one record batch".into(),
            )
        }
    };
    if batch.header.is_control() {
        return Submitted::Failed(ResponseError::InvalidRecord, "clients may not write control batches".into());
    }
    let header = batch.header;
    let guard = match verify_transactional(node, &replica, &header, topic_name, partition).await {
        Ok(guard) => guard,
        Err(refusal) => return refusal,
    };
    let append_time = settings.log_append_time.then(now_ms);
    let batch = match repair_max_timestamp(batch) {
        Ok(b) => b,
        Err(msg) => return Submitted::Failed(ResponseError::CorruptMessage, msg),
    };
    let bytes = match append_time {
        Some(t) => match with_log_append_time(&batch.bytes, t) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                let e = BrokerError::from(e);
                return Submitted::Failed(kafka_error(&e), e.to_string());
            }
        },
        None => batch.bytes,
    };
    let handles = match replica.propose_batch(&header, bytes, acks == 1, guard).await {
        Ok(Proposal::Proposed(h)) => vec![h],
        Ok(Proposal::Duplicate(original)) => {
            return Submitted::Duplicate { base_offset: original.base_offset, log_start_offset: replica.log_start_offset() }
        }
        Err(e) => {
            let e = BrokerError::from(e);
            return Submitted::Failed(kafka_error(&e), e.to_string());
        }
    };
    Submitted::Proposed { replica, handles, log_append_time: append_time }
}

/// KIP-890 part 1: the first transactional batch of a producer on a partition must belong
/// to a transaction that AddPartitionsToTxn told the coordinator about; otherwise no marker
/// would ever end it and read_committed consumers would stall at it for good. The
/// coordinator may be on another node (`Node::check_txn_partition`); when it cannot answer,
/// the batch is refused with NOT_ENOUGH_REPLICAS, which clients retry (as Kafka does with
/// verification errors). A transactional batch gets the guard taken before the check: a
/// marker written before the batch is proposed (its transaction ended meanwhile) makes the
/// batch fail with INVALID_TXN_STATE instead of landing after the marker.
async fn verify_transactional(
    node: &Node,
    replica: &PartitionReplica,
    h: &BatchHeader,
    topic: &str,
    partition: i32,
) -> Result<Option<TxnGuard>, Submitted> {
    if !h.is_transactional() || h.producer_id < 0 {
        return Ok(None);
    }
    let (open, guard) = replica.open_transaction(h.producer_id);
    if open {
        return Ok(Some(guard));
    }
    match node.check_txn_partition(h.producer_id, h.producer_epoch, topic, partition).await {
        Ok(PartitionCheck::Added) => Ok(Some(guard)),
        Ok(PartitionCheck::StaleEpoch) => Err(Submitted::Failed(ResponseError::InvalidProducerEpoch, "the producer was fenced".into())),
        Ok(PartitionCheck::NotAdded) => Err(Submitted::Failed(
            ResponseError::InvalidTxnState,
            format!("partition {topic}-{partition} was not added to the producer's transaction"),
        )),
        Err(e) => Err(Submitted::Failed(ResponseError::NotEnoughReplicas, format!("cannot verify the transaction: {e}"))),
    }
}

/// Some producers (sarama 1.22) leave a CreateTime batch's maxTimestamp unset, below its
/// baseTimestamp. Kafka recomputes the max timestamp from the records of every batch;
/// Runnel trusts a consistent header (no per-record work on the hot path) and recomputes
/// only an inconsistent one, decoding the records, so time lookups and retention work.
fn repair_max_timestamp(batch: ValidatedBatch) -> Result<ValidatedBatch, String> {
    let h = batch.header;
    if h.timestamp_type() != TimestampType::CreateTime || h.max_timestamp >= h.base_timestamp {
        return Ok(batch);
    }
    let set = decode_batch_bounded(&batch.bytes, MAX_DECOMPRESSED_BYTES).map_err(|e| format!("records do not decode: {e:#}"))?;
    let max = set.records.iter().map(|r| r.timestamp).max().unwrap_or(h.base_timestamp);
    let bytes = with_max_timestamp(&batch.bytes, max).map_err(|e| e.to_string())?;
    Ok(ValidatedBatch { header: crate::log::parse_header(&bytes).map_err(|e| e.to_string())?, bytes: Bytes::from(bytes) })
}

/// Submits every partition's batches now and returns the future of the response.
pub async fn submit(node: &Arc<Node>, req: ProduceRequest, version: i16) -> impl Future<Output = ProduceResponse> + Send + 'static {
    let acks_ok = matches!(req.acks, -1..=1);
    let timeout = Duration::from_millis(req.timeout_ms.max(0) as u64);
    let mut topics = Vec::with_capacity(req.topic_data.len());
    for t in req.topic_data {
        let state = node.cluster();
        let (name, topic_id) = if version >= 13 {
            (state.topic_by_id(&t.topic_id).map(|x| x.name.clone()).unwrap_or_default(), state.topic_by_id(&t.topic_id).map(|x| x.id))
        } else {
            let n = t.name.0.to_string();
            let id = state.topics.get(n.as_str()).map(|x| x.id);
            (n, id)
        };
        let mut parts = Vec::with_capacity(t.partition_data.len());
        for p in t.partition_data {
            let s = if version < 3 {
                // Advertised for librdkafka's sake, never served: see `protocol::legacy`.
                Submitted::Failed(ResponseError::UnsupportedVersion, "produce v0-2 (message format v0/v1) is not supported; use v3 or later".into())
            } else if !acks_ok {
                Submitted::Failed(ResponseError::InvalidRequiredAcks, format!("acks must be -1, 0 or 1, not {}", req.acks))
            } else if version >= 13 && topic_id.is_none() {
                Submitted::Failed(ResponseError::UnknownTopicId, "unknown topic id".into())
            } else {
                submit_partition(node, &name, topic_id, p.index, p.records, req.acks).await
            };
            parts.push((p.index, s));
        }
        topics.push((name, t.topic_id, parts));
    }
    async move {
        let mut responses = Vec::with_capacity(topics.len());
        for (name, topic_id, parts) in topics {
            let mut partition_responses = Vec::with_capacity(parts.len());
            for (index, s) in parts {
                let r = PartitionProduceResponse::default().with_index(index).with_log_append_time_ms(-1).with_log_start_offset(-1);
                let r = match s {
                    Submitted::Failed(err, msg) => r.with_error_code(err.code()).with_base_offset(-1).with_error_message(Some(str(&msg))),
                    Submitted::Duplicate { base_offset, log_start_offset } => {
                        r.with_error_code(0).with_base_offset(base_offset).with_log_start_offset(log_start_offset)
                    }
                    Submitted::Proposed { replica, handles, log_append_time } => {
                        let mut base = None;
                        let mut failure = None;
                        for h in handles {
                            match tokio::time::timeout(timeout.max(Duration::from_millis(1)), h.committed()).await {
                                Ok(Ok(reply)) => {
                                    base.get_or_insert(reply.base_offset);
                                }
                                Ok(Err(e)) => {
                                    failure = Some(BrokerError::from(e));
                                    break;
                                }
                                Err(_) => {
                                    failure = Some(BrokerError::Timeout);
                                    break;
                                }
                            }
                        }
                        match failure {
                            Some(e) => r.with_error_code(kafka_error(&e).code()).with_base_offset(-1).with_error_message(Some(str(&e.to_string()))),
                            None => r
                                .with_error_code(0)
                                .with_base_offset(base.unwrap_or(-1))
                                .with_log_append_time_ms(log_append_time.unwrap_or(-1))
                                .with_log_start_offset(replica.log_start_offset()),
                        }
                    }
                };
                partition_responses.push(r);
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(TopicName(str(&name)))
                    .with_topic_id(topic_id)
                    .with_partition_responses(partition_responses),
            );
        }
        ProduceResponse::default().with_responses(responses)
    }
}
