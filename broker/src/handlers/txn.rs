//! Idempotent and transactional producer APIs: InitProducerId, AddPartitionsToTxn,
//! AddOffsetsToTxn, TxnOffsetCommit, EndTxn, ListTransactions, DescribeTransactions.
//! Typed request in, typed response out; the state lives in `coordinator::transactions`
//! (transaction records) and in each partition's producer state (sequences, markers).

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedTransaction;
use kafka_protocol::messages::txn_offset_commit_response::{TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest, AddPartitionsToTxnResponse,
    DescribeTransactionsRequest, DescribeTransactionsResponse, EndTxnRequest, EndTxnResponse, InitProducerIdRequest,
    InitProducerIdResponse, ListTransactionsRequest, ListTransactionsResponse, ProducerId, TopicName, TransactionalId,
    TxnOffsetCommitRequest, TxnOffsetCommitResponse,
};

use super::groups::{accept_offset, committed_offset, partition_exists};
use super::metadata::str;
use crate::clock::now_ms;
use crate::coordinator::txn::TxnError;
use crate::coordinator::CoordinatorError;
use crate::node::Node;
use crate::protocol::errors::{kafka_error, BrokerError};

/// The Kafka code of a coordinator error for a request of `version`. Versions before
/// `fenced_since` predate PRODUCER_FENCED (KIP-588) and get INVALID_PRODUCER_EPOCH.
fn code_for(e: CoordinatorError, version: i16, fenced_since: i16) -> i16 {
    if matches!(e, CoordinatorError::Txn(TxnError::ProducerFenced)) && version < fenced_since {
        return ResponseError::InvalidProducerEpoch.code();
    }
    kafka_error(&BrokerError::from(e)).code()
}

pub async fn handle_init_producer_id(node: &Node, req: InitProducerIdRequest, version: i16) -> InitProducerIdResponse {
    let r = InitProducerIdResponse::default().with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
    let expected = (req.producer_id.0 >= 0).then_some((req.producer_id.0, req.producer_epoch));
    let result = match req.transactional_id.as_ref().map(|t| t.0.to_string()) {
        // An idempotent producer: a fresh id every time (also when it re-initialises).
        None => node.transactions.new_producer_id().await.map(|id| (id, 0)),
        Some(id) if id.is_empty() => return r.with_error_code(ResponseError::InvalidRequest.code()),
        Some(id) => match node.transactions.check_active() {
            Ok(()) => node.transactions.init_producer_id(&id, req.transaction_timeout_ms, expected).await,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok((pid, epoch)) => r.with_error_code(0).with_producer_id(ProducerId(pid)).with_producer_epoch(epoch),
        Err(e) => r.with_error_code(code_for(e, version, 4)),
    }
}

pub async fn handle_add_partitions_to_txn(node: &Node, req: AddPartitionsToTxnRequest, version: i16) -> AddPartitionsToTxnResponse {
    let id = req.v3_and_below_transactional_id.0.to_string();
    let topics = &req.v3_and_below_topics;
    let wanted: Vec<(String, i32)> = topics.iter().flat_map(|t| t.partitions.iter().map(move |p| (t.name.0.to_string(), *p))).collect();
    // As Kafka: unknown partitions fail the request; the others are not attempted.
    let any_unknown = wanted.iter().any(|(t, p)| !partition_exists(node, t, *p));
    let code = if any_unknown {
        None
    } else {
        let result = match node.transactions.check_active() {
            Ok(()) => node.transactions.add(&id, req.v3_and_below_producer_id.0, req.v3_and_below_producer_epoch, &wanted, None).await,
            Err(e) => Err(e),
        };
        Some(result.map_or_else(|e| code_for(e, version, 2), |_| 0))
    };
    let results = topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let c = match code {
                        Some(c) => c,
                        None if partition_exists(node, &t.name, *p) => ResponseError::OperationNotAttempted.code(),
                        None => ResponseError::UnknownTopicOrPartition.code(),
                    };
                    AddPartitionsToTxnPartitionResult::default().with_partition_index(*p).with_partition_error_code(c)
                })
                .collect();
            AddPartitionsToTxnTopicResult::default().with_name(t.name.clone()).with_results_by_partition(partitions)
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results)
}

pub async fn handle_add_offsets_to_txn(node: &Node, req: AddOffsetsToTxnRequest, version: i16) -> AddOffsetsToTxnResponse {
    let group = req.group_id.0.to_string();
    if group.is_empty() {
        return AddOffsetsToTxnResponse::default().with_error_code(ResponseError::InvalidGroupId.code());
    }
    let result = match node.transactions.check_active() {
        Ok(()) => node.transactions.add(&req.transactional_id.0, req.producer_id.0, req.producer_epoch, &[], Some(&group)).await,
        Err(e) => Err(e),
    };
    AddOffsetsToTxnResponse::default().with_error_code(result.map_or_else(|e| code_for(e, version, 2), |_| 0))
}

pub async fn handle_txn_offset_commit(node: &Node, req: TxnOffsetCommitRequest, version: i16) -> TxnOffsetCommitResponse {
    let group = req.group_id.0.to_string();
    let respond_all = |code: i16| {
        let topics = req
            .topics
            .iter()
            .map(|t| {
                TxnOffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| TxnOffsetCommitResponsePartition::default().with_partition_index(p.partition_index).with_error_code(code))
                        .collect(),
                )
            })
            .collect();
        TxnOffsetCommitResponse::default().with_topics(topics)
    };
    if group.is_empty() {
        return respond_all(ResponseError::InvalidGroupId.code());
    }
    let txn_id = req.transactional_id.0.to_string();
    let checked = match node.transactions.check_active() {
        Ok(()) => node.transactions.check_offsets(&txn_id, req.producer_id.0, req.producer_epoch, &group).await,
        Err(e) => Err(e),
    };
    if let Err(e) = checked {
        return respond_all(code_for(e, version, 3));
    }
    if let Err(code) = node
        .coordinator
        .validate_txn_commit(&group, &req.member_id, req.group_instance_id.as_deref(), req.generation_id)
        .await
    {
        return respond_all(code);
    }
    let now = now_ms();
    let mut staged = Vec::new();
    let mut decided: Vec<Vec<Option<i16>>> = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let mut row = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let offset = committed_offset(p.committed_offset, p.committed_leader_epoch, p.committed_metadata.as_ref(), now);
            row.push(accept_offset(node, &t.name, p.partition_index, offset, &mut staged));
        }
        decided.push(row);
    }
    let stored = if staged.is_empty() {
        0
    } else {
        node.transactions.stage_offsets(&txn_id, &group, staged).await.map_or_else(|e| code_for(e, version, 3), |_| 0)
    };
    let topics = req
        .topics
        .iter()
        .zip(decided)
        .map(|(t, row)| {
            TxnOffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(
                t.partitions
                    .iter()
                    .zip(row)
                    .map(|(p, c)| {
                        TxnOffsetCommitResponsePartition::default().with_partition_index(p.partition_index).with_error_code(c.unwrap_or(stored))
                    })
                    .collect(),
            )
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}

pub async fn handle_end_txn(node: &Node, req: EndTxnRequest, version: i16) -> EndTxnResponse {
    let result = match node.transactions.check_active() {
        Ok(()) => node.transactions.end(&req.transactional_id.0, req.producer_id.0, req.producer_epoch, req.committed).await,
        Err(e) => Err(e),
    };
    EndTxnResponse::default().with_error_code(result.map_or_else(|e| code_for(e, version, 2), |_| 0))
}

pub async fn handle_list_transactions(node: &Node, req: ListTransactionsRequest, version: i16) -> ListTransactionsResponse {
    if let Err(e) = node.transactions.check_active() {
        return ListTransactionsResponse::default().with_error_code(code_for(e, version, 0));
    }
    const STATES: [&str; 8] =
        ["Empty", "Ongoing", "PrepareCommit", "PrepareAbort", "CompleteCommit", "CompleteAbort", "Dead", "PrepareEpochFence"];
    let unknown: Vec<_> = req.state_filters.iter().filter(|s| !STATES.contains(&s.as_str())).cloned().collect();
    let now = now_ms();
    let listed = node
        .transactions
        .transactions()
        .await
        .into_iter()
        .filter(|r| req.state_filters.is_empty() || req.state_filters.iter().any(|s| s.as_str() == r.state.name()))
        .filter(|r| req.producer_id_filters.is_empty() || req.producer_id_filters.iter().any(|p| p.0 == r.producer_id))
        // v1: only transactions running longer than duration_filter ms (-1: all).
        .filter(|r| req.duration_filter < 0 || (r.txn_start_ms >= 0 && now - r.txn_start_ms > req.duration_filter))
        .map(|r| {
            ListedTransaction::default()
                .with_transactional_id(TransactionalId(str(&r.transactional_id)))
                .with_producer_id(ProducerId(r.producer_id))
                .with_transaction_state(str(r.state.name()))
        })
        .collect();
    ListTransactionsResponse::default().with_error_code(0).with_unknown_state_filters(unknown).with_transaction_states(listed)
}

pub async fn handle_describe_transactions(node: &Node, req: DescribeTransactionsRequest, _version: i16) -> DescribeTransactionsResponse {
    let active = node.transactions.check_active().map_err(|e| code_for(e, 0, 0));
    let all = match active {
        Ok(()) => node.transactions.transactions().await,
        Err(_) => Vec::new(),
    };
    let states = req
        .transactional_ids
        .iter()
        .map(|id| {
            let s = TransactionState::default().with_transactional_id(id.clone()).with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
            if let Err(code) = active {
                return s.with_error_code(code);
            }
            match all.iter().find(|r| r.transactional_id == id.0.as_str()) {
                None => s.with_error_code(ResponseError::TransactionalIdNotFound.code()),
                Some(r) => {
                    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
                    for (t, p) in &r.partitions {
                        topics.entry(t.as_str()).or_default().push(*p);
                    }
                    s.with_error_code(0)
                        .with_transaction_state(str(r.state.name()))
                        .with_transaction_timeout_ms(r.timeout_ms)
                        .with_transaction_start_time_ms(r.txn_start_ms)
                        .with_producer_id(ProducerId(r.producer_id))
                        .with_producer_epoch(r.producer_epoch)
                        .with_topics(
                            topics
                                .into_iter()
                                .map(|(t, ps)| TopicData::default().with_topic(TopicName(str(t))).with_partitions(ps))
                                .collect(),
                        )
                }
            }
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}
