//! The one place where errors of every layer become Kafka error codes.

use kafka_protocol::error::ResponseError;

use crate::cluster::topic_config::TopicConfigError;
use crate::cluster::ClusterError;
use crate::coordinator::txn::TxnError;
use crate::coordinator::CoordinatorError;
use crate::log::LogError;
use crate::replication::ReplicationError;

/// Any error a handler reports to a client.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    TopicConfig(#[from] TopicConfigError),
    #[error(transparent)]
    Coordinator(#[from] CoordinatorError),
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("unknown topic id")]
    UnknownTopicId,
    #[error("leader not available")]
    LeaderNotAvailable,
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The request names another cluster.
    #[error("{0}")]
    InconsistentClusterId(String),
    /// A controller voter change committed, but the coordinator group has not followed it
    /// within the request's timeout.
    #[error("{0}")]
    CoordinatorLagging(String),
    /// A node-level limit (such as the partition capacity) refuses the request.
    #[error("{0}")]
    PolicyViolation(String),
    #[error("timed out")]
    Timeout,
}

/// The Kafka error for `e`.
pub fn kafka_error(e: &BrokerError) -> ResponseError {
    match e {
        BrokerError::Log(l) => log_error(l),
        BrokerError::Replication(r) => match r {
            ReplicationError::Log(l) => log_error(l),
            ReplicationError::NotLeader { .. } => ResponseError::NotLeaderOrFollower,
            ReplicationError::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicas,
            ReplicationError::Stopped(_) => ResponseError::NotLeaderOrFollower,
            ReplicationError::Raft(_) | ReplicationError::Io(_) => ResponseError::KafkaStorageError,
        },
        BrokerError::Cluster(c) => cluster_error(c),
        BrokerError::TopicConfig(_) => ResponseError::InvalidConfig,
        BrokerError::Coordinator(c) => match c {
            CoordinatorError::NotCoordinator { .. } => ResponseError::NotCoordinator,
            CoordinatorError::LoadInProgress => ResponseError::CoordinatorLoadInProgress,
            CoordinatorError::Unavailable(_) | CoordinatorError::Store(_) => ResponseError::CoordinatorNotAvailable,
            CoordinatorError::Txn(t) => match t {
                TxnError::ProducerFenced => ResponseError::ProducerFenced,
                TxnError::InvalidProducerIdMapping => ResponseError::InvalidProducerIdMapping,
                TxnError::InvalidTxnState(_) => ResponseError::InvalidTxnState,
                TxnError::ConcurrentTransactions => ResponseError::ConcurrentTransactions,
                TxnError::InvalidTransactionTimeout(_) => ResponseError::InvalidTransactionTimeout,
            },
        },
        BrokerError::UnknownTopicOrPartition => ResponseError::UnknownTopicOrPartition,
        BrokerError::UnknownTopicId => ResponseError::UnknownTopicId,
        BrokerError::LeaderNotAvailable => ResponseError::LeaderNotAvailable,
        BrokerError::InvalidRequest(_) => ResponseError::InvalidRequest,
        BrokerError::InconsistentClusterId(_) => ResponseError::InconsistentClusterId,
        BrokerError::CoordinatorLagging(_) => ResponseError::RequestTimedOut,
        BrokerError::PolicyViolation(_) => ResponseError::PolicyViolation,
        BrokerError::Timeout => ResponseError::RequestTimedOut,
    }
}

/// Shorthand: the numeric code.
pub fn code(e: impl Into<BrokerError>) -> i16 {
    kafka_error(&e.into()).code()
}

fn log_error(e: &LogError) -> ResponseError {
    match e {
        LogError::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        // As Kafka: v0/v1 batches in a v3+ produce are INVALID_RECORD; any other magic means
        // the bytes are not a batch at all.
        LogError::UnsupportedMagic(0 | 1) => ResponseError::InvalidRecord,
        LogError::UnsupportedMagic(_) | LogError::CorruptBatch { .. } => ResponseError::CorruptMessage,
        LogError::InvalidRecords { .. } | LogError::InvalidRecordCount { .. } => ResponseError::InvalidRecord,
        LogError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        LogError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        LogError::InvalidProducerBatch { .. } => ResponseError::InvalidRecord,
        LogError::InvalidTxnState { .. } => ResponseError::InvalidTxnState,
        LogError::Io { .. } => ResponseError::KafkaStorageError,
        _ => ResponseError::KafkaStorageError,
    }
}

fn cluster_error(e: &ClusterError) -> ResponseError {
    match e {
        ClusterError::TopicAlreadyExists(_) => ResponseError::TopicAlreadyExists,
        ClusterError::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
        ClusterError::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        ClusterError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        ClusterError::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
        ClusterError::InvalidTopicName(_) => ResponseError::InvalidTopicException,
        ClusterError::InvalidConfig(_) => ResponseError::InvalidConfig,
        ClusterError::NotController { .. } => ResponseError::NotController,
        ClusterError::NoReassignmentInProgress(_) => ResponseError::NoReassignmentInProgress,
        ClusterError::BrokerNotRegistered(_) => ResponseError::BrokerIdNotRegistered,
        ClusterError::DuplicateVoter(_) => ResponseError::DuplicateVoter,
        ClusterError::VoterNotFound(_) => ResponseError::VoterNotFound,
        ClusterError::InvalidVoterChange(_) => ResponseError::InvalidRequest,
        ClusterError::Unavailable(_) => ResponseError::KafkaStorageError,
    }
}
