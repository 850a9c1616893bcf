//! Runnel's on-disk partition log: one directory per partition, split into segments
//! whose `.log` files hold only Kafka record batches (so Fetch can send them as-is),
//! with `.entries`/`.meta`/`.timeindex` side files that let the same log serve as the
//! raft log. Nothing in here knows about raft or Kafka requests: callers append and
//! read entries, and map `LogError` to protocol errors themselves.

mod batch;
mod codec;
pub mod compression;
mod control;
mod entry_index;
mod error;
pub(crate) mod open_files;
mod partition_log;
mod producer_state;
mod records;
mod segment;
#[cfg(test)]
mod test_batches;
mod time_index;

pub use batch::{
    parse_header, validate_produce_records, with_log_append_time, with_max_timestamp, BatchHeader, Compression,
    TimestampType, ValidatedBatch, BATCH_HEADER_SIZE, CURRENT_MAGIC, LOG_OVERHEAD,
    MIN_BATCH_LENGTH,
};
pub use control::{marker_batch, read_marker, ControlType};
pub use producer_state::{last_sequence, AbortedTxn, Admission, BatchSequence, ProducerEntry, ProducerStateTable, TxnGuard};
pub use entry_index::{EntryKind, EntryMeta, ENTRY_RECORD_SIZE, NO_TIMESTAMP, SEGMENT_HEADER_SIZE};
pub use error::LogError;
pub use partition_log::{
    AppendInfo, EntryPayload, LogConfig, PartitionLog, PendingSync, ReadSlice, SegmentSummary,
    StoredPayload,
};
pub use time_index::TIME_INDEX_ENTRY_SIZE;
