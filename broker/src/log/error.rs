//! `LogError`, the single error type of the partition-log layer.
//! Variants describe failures in log terms (bad input batch, corrupt file, index out of
//! order, I/O); mapping them to Kafka error codes or raft storage errors is the caller's
//! job and does not live here.

use std::io;
use std::path::{Path, PathBuf};

/// Every fallible operation of the log returns this.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An operating-system I/O call failed on `path`.
    #[error("I/O error on {path:?}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A record batch's own bytes are damaged: header too short, length below the
    /// minimum, CRC mismatch. (Kafka's CorruptRecordException.)
    #[error("corrupt record batch: {reason}")]
    CorruptBatch { reason: String },

    /// The records inside a batch break the record format: framing, count, codec, or a
    /// compressed payload that does not decompress. (Kafka's InvalidRecordException.)
    #[error("invalid records: {reason}")]
    InvalidRecords { reason: String },

    /// `recordCount` is < 1 or differs from `lastOffsetDelta + 1`.
    #[error(
        "invalid record count {record_count} for a batch with lastOffsetDelta {last_offset_delta}"
    )]
    InvalidRecordCount {
        record_count: i32,
        last_offset_delta: i32,
    },

    /// A batch is larger than the topic's `max.message.bytes`.
    #[error("record batch of {size} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge { size: u64, max: u32 },

    /// Only magic v2 record batches are accepted.
    #[error("unsupported record batch magic {0}; only magic 2 is supported")]
    UnsupportedMagic(i8),

    /// An append's raft index is not the next one, or segments on disk do not join up.
    #[error("non-contiguous raft index: expected {expected}, got {got}")]
    NonContiguousIndex { expected: u64, got: u64 },

    /// An append's term is lower than the term of the last entry.
    #[error("term went backwards: last entry has term {last}, append has term {got}")]
    TermRegression { last: u64, got: u64 },

    /// A Kafka offset outside `[log_start, log_end]` was requested.
    #[error("offset {offset} is outside the log range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        log_end: i64,
    },

    /// A raft index below the first index still in the log was given to `truncate_from`.
    #[error("raft index {index} is before the first index {first} still in the log")]
    IndexBeforeStart { index: u64, first: u64 },

    /// Assigning offsets to the batch would overflow `i64` (or a file position `u64`).
    #[error("offset or file position space exhausted")]
    OffsetOverflow,

    /// An argument is outside what the operation accepts.
    #[error("invalid argument: {reason}")]
    InvalidArgument { reason: String },

    /// A segment file is inconsistent in a way recovery must not silently repair
    /// (closed segments, mismatched names, gaps between segments).
    #[error("corrupt segment file {path:?}: {reason}")]
    CorruptSegment { path: PathBuf, reason: String },

    /// A multi-step directory operation failed half-way earlier; the in-memory view may
    /// no longer match the disk. Drop the log and open it again (recovery repairs it).
    #[error("log at {path:?} must be reopened after an earlier failed operation")]
    NeedsReopen { path: PathBuf },

    /// A producer batch's epoch is older than the partition has seen for its producer id.
    #[error("producer {producer_id} epoch {epoch} is older than the current epoch {current}")]
    InvalidProducerEpoch { producer_id: i64, epoch: i16, current: i16 },

    /// A producer batch does not follow the producer's last sequence number.
    #[error("out of order sequence from producer {producer_id}: {reason}")]
    OutOfOrderSequence { producer_id: i64, reason: String },

    /// A producer batch breaks the rules of idempotent batches (a producer id without a
    /// sequence, a control batch from a client).
    #[error("invalid producer batch: {reason}")]
    InvalidProducerBatch { reason: String },

    /// A producer batch does not fit the producer's transaction state on the partition.
    #[error("invalid transaction state: {reason}")]
    InvalidTxnState { reason: String },
}

impl LogError {
    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        LogError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn corrupt_batch(reason: impl Into<String>) -> Self {
        LogError::CorruptBatch {
            reason: reason.into(),
        }
    }

    pub(crate) fn corrupt_segment(path: &Path, reason: impl Into<String>) -> Self {
        LogError::CorruptSegment {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}
