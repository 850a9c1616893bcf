//! Consumer fetch loops: one connection per leader, one Fetch in flight (as Kafka's
//! consumers), sessionless. The counting loop reads record counts from batch headers
//! only; the stamped loop decodes every record to compute end-to-end latency from the
//! creation stamp in the first 8 bytes of its value.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::{Buf, Bytes};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, ListOffsetsRequest, TopicName};
use kafka_protocol::records::RecordBatchDecoder;

use crate::histogram::Histogram;
use crate::producer::Clock;
use crate::wire::{str_bytes, Connection, FETCH_VERSION, LIST_OFFSETS_VERSION};

#[derive(Clone)]
pub struct FetchSettings {
    pub topic: String,
    pub max_bytes: i32,
    pub partition_max_bytes: i32,
    pub max_wait_ms: i32,
    pub min_bytes: i32,
}

#[derive(Default)]
pub struct ConsumeOutcome {
    pub records: u64,
    /// Bytes of whole record batches received.
    pub batch_bytes: u64,
    pub fetches: u64,
    /// Send to response, per Fetch.
    pub fetch_latency: Histogram,
    /// Stamp to receipt, per record (stamped loop only).
    pub end_to_end: Histogram,
    /// Records whose value was too short to carry a stamp.
    pub unstamped: u64,
    pub first_fetch: Option<Instant>,
    pub last_data: Option<Instant>,
}

/// The log end offsets (ListOffsets "latest") of `partitions`.
pub async fn end_offsets(conn: &mut Connection, topic: &str, partitions: &[i32]) -> Result<BTreeMap<i32, i64>> {
    let req = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![ListOffsetsTopic::default()
        .with_name(TopicName(str_bytes(topic)))
        .with_partitions(
            partitions
                .iter()
                .map(|p| ListOffsetsPartition::default().with_partition_index(*p).with_current_leader_epoch(-1).with_timestamp(-1))
                .collect(),
        )]);
    let resp = conn.request(LIST_OFFSETS_VERSION, &req).await?;
    let mut out = BTreeMap::new();
    for t in &resp.topics {
        for p in &t.partitions {
            if p.error_code != 0 {
                bail!("ListOffsets for {topic}-{} failed with error code {}", p.partition_index, p.error_code);
            }
            out.insert(p.partition_index, p.offset);
        }
    }
    Ok(out)
}

fn fetch_request(settings: &FetchSettings, offsets: &[(i32, i64)]) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(settings.max_wait_ms)
        .with_min_bytes(settings.min_bytes)
        .with_max_bytes(settings.max_bytes)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default().with_topic(TopicName(str_bytes(&settings.topic))).with_partitions(
            offsets
                .iter()
                .map(|(p, o)| {
                    FetchPartition::default()
                        .with_partition(*p)
                        .with_current_leader_epoch(-1)
                        .with_fetch_offset(*o)
                        .with_last_fetched_epoch(-1)
                        .with_log_start_offset(-1)
                        .with_partition_max_bytes(settings.partition_max_bytes)
                })
                .collect(),
        )])
}

/// One whole batch found in a fetched records field.
struct BatchSpan {
    bytes: Bytes,
    records: u64,
    next_offset: i64,
}

/// Splits `records` into whole v2 batches from the headers alone (a trailing partial
/// batch is ignored; it is fetched again next time).
fn whole_batches(mut records: Bytes) -> Result<Vec<BatchSpan>> {
    let mut out = Vec::new();
    while records.len() >= 12 {
        let base_offset = (&records[0..8]).get_i64();
        let length = (&records[8..12]).get_i32();
        if length < 49 {
            bail!("record batch at offset {base_offset} has length {length}");
        }
        let total = 12 + length as usize;
        if records.len() < total {
            break;
        }
        let batch = records.split_to(total);
        if batch[16] != 2 {
            bail!("record batch at offset {base_offset} has magic {}, not 2", batch[16]);
        }
        let last_offset_delta = (&batch[23..27]).get_i32();
        let count = (&batch[57..61]).get_i32();
        out.push(BatchSpan { bytes: batch, records: count.max(0) as u64, next_offset: base_offset + last_offset_delta as i64 + 1 });
    }
    Ok(out)
}

/// Reads `partitions` from `start` up to `end` (exclusive), or until `max_records` or
/// `deadline`, counting records from batch headers.
pub async fn run_counting(
    addr: String,
    settings: FetchSettings,
    start: BTreeMap<i32, i64>,
    end: BTreeMap<i32, i64>,
    max_records: Option<u64>,
    deadline: Option<Instant>,
) -> Result<ConsumeOutcome> {
    let mut conn = Connection::connect(&addr).await?;
    let mut offsets = start;
    let mut out = ConsumeOutcome::default();
    loop {
        let wanted: Vec<(i32, i64)> =
            offsets.iter().filter(|(p, o)| end.get(p).is_some_and(|e| **o < *e)).map(|(p, o)| (*p, *o)).collect();
        let now = Instant::now();
        if wanted.is_empty() || max_records.is_some_and(|m| out.records >= m) || deadline.is_some_and(|d| now >= d) {
            break;
        }
        out.first_fetch.get_or_insert(now);
        let resp = conn.request(FETCH_VERSION, &fetch_request(&settings, &wanted)).await?;
        out.fetch_latency.record(now.elapsed().as_nanos() as u64);
        out.fetches += 1;
        if resp.error_code != 0 {
            bail!("Fetch failed with error code {}", resp.error_code);
        }
        for t in resp.responses {
            for p in t.partitions {
                if p.error_code != 0 {
                    bail!("Fetch of partition {} failed with error code {}", p.partition_index, p.error_code);
                }
                for b in whole_batches(p.records.unwrap_or_default())? {
                    out.records += b.records;
                    out.batch_bytes += b.bytes.len() as u64;
                    offsets.insert(p.partition_index, b.next_offset);
                    out.last_data = Some(Instant::now());
                }
            }
        }
    }
    Ok(out)
}

/// Progress shared between the producers and the stamped consumers of a latency run.
#[derive(Default)]
pub struct Progress {
    pub producers_done: AtomicBool,
    /// Records acknowledged to producers (sent, with acks=0).
    pub acked: AtomicU64,
    pub consumed: AtomicU64,
}

/// How long consumers keep reading after the producers finished before giving up on
/// records that did not arrive.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Long-polls `partitions` from `start`, decoding records and recording now − stamp for
/// each, until the producers are done and every acknowledged record has been read.
pub async fn run_stamped(
    addr: String,
    settings: FetchSettings,
    start: BTreeMap<i32, i64>,
    clock: Clock,
    progress: Arc<Progress>,
) -> Result<ConsumeOutcome> {
    let mut conn = Connection::connect(&addr).await?;
    let mut offsets = start;
    let mut out = ConsumeOutcome::default();
    let mut done_at: Option<Instant> = None;
    loop {
        if progress.producers_done.load(Ordering::Acquire) {
            let since = *done_at.get_or_insert_with(Instant::now);
            if progress.consumed.load(Ordering::Acquire) >= progress.acked.load(Ordering::Acquire) || since.elapsed() > DRAIN_TIMEOUT {
                break;
            }
        }
        let wanted: Vec<(i32, i64)> = offsets.iter().map(|(p, o)| (*p, *o)).collect();
        let sent = Instant::now();
        out.first_fetch.get_or_insert(sent);
        let resp = conn.request(FETCH_VERSION, &fetch_request(&settings, &wanted)).await?;
        let received = Instant::now();
        let now_ns = received.duration_since(clock.base).as_nanos() as u64;
        out.fetch_latency.record(received.duration_since(sent).as_nanos() as u64);
        out.fetches += 1;
        if resp.error_code != 0 {
            bail!("Fetch failed with error code {}", resp.error_code);
        }
        for t in resp.responses {
            for p in t.partitions {
                if p.error_code != 0 {
                    bail!("Fetch of partition {} failed with error code {}", p.partition_index, p.error_code);
                }
                for b in whole_batches(p.records.unwrap_or_default())? {
                    let mut bytes = b.bytes.clone();
                    let set = RecordBatchDecoder::decode(&mut bytes)?;
                    for r in &set.records {
                        match r.value.as_ref().filter(|v| v.len() >= 8) {
                            Some(v) => out.end_to_end.record(now_ns.saturating_sub((&v[..8]).get_u64_le())),
                            None => out.unstamped += 1,
                        }
                    }
                    out.records += b.records;
                    out.batch_bytes += b.bytes.len() as u64;
                    progress.consumed.fetch_add(b.records, Ordering::AcqRel);
                    offsets.insert(p.partition_index, b.next_offset);
                    out.last_data = Some(received);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer::encode_batch;

    #[test]
    fn whole_batches_counts_records_from_headers_and_skips_a_partial_tail() -> Result<()> {
        let a = encode_batch(&[Bytes::from_static(b"one"), Bytes::from_static(b"two")], 0)?;
        let b = encode_batch(&[Bytes::from_static(b"three")], 0)?;
        let mut joined = a.to_vec();
        joined.extend_from_slice(&b[..b.len() - 3]);
        let spans = whole_batches(Bytes::from(joined))?;
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].records, 2);
        assert_eq!(spans[0].next_offset, 2);
        Ok(())
    }
}
