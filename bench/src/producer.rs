//! Producer senders: one connection each, several Produce requests in flight (as
//! librdkafka's `max.in.flight`), record batches built with `RecordBatchEncoder` (magic 2,
//! no compression). Throughput senders reuse one pre-encoded batch; paced senders create
//! records at a fixed rate, stamp each value with its creation time, and batch them the
//! way Kafka's accumulator does (a batch goes when full or when `linger` has passed).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::histogram::Histogram;
use crate::wire::{self, Connection, PRODUCE_VERSION};

/// A monotonic clock shared by producers and consumers of one process: record stamps are
/// nanoseconds since `base`.
#[derive(Clone, Copy)]
pub struct Clock {
    pub base: Instant,
}

impl Clock {
    pub fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
    pub fn at(&self, ns: u64) -> Instant {
        self.base + Duration::from_nanos(ns)
    }
}

/// Settings shared by every sender of a run.
#[derive(Clone)]
pub struct ProducerSettings {
    pub topic: String,
    pub record_size: usize,
    /// Kafka's batch.size: the most bytes of one record batch.
    pub batch_size: usize,
    pub linger: Duration,
    pub acks: i16,
    /// Produce requests a connection may have awaiting a response.
    pub inflight: usize,
    /// Kafka's max.request.size: a request carries one batch for each of as many
    /// partitions as fit.
    pub max_request_bytes: usize,
    pub timeout_ms: i32,
}

/// When a sender stops creating records.
#[derive(Clone, Copy)]
pub struct StopAt {
    pub records: Option<u64>,
    pub deadline: Option<Instant>,
}

impl StopAt {
    fn reached(&self, records: u64, now: Instant) -> bool {
        self.records.is_some_and(|n| records >= n) || self.deadline.is_some_and(|d| now >= d)
    }
}

/// What one sender did.
#[derive(Default)]
pub struct SenderOutcome {
    /// Records acknowledged without error (sent, for acks=0).
    pub records: u64,
    /// Bytes of acknowledged record batches as sent on the wire.
    pub batch_bytes: u64,
    pub requests: u64,
    /// Partitions answered with an error code, and the first such code.
    pub errors: u64,
    pub first_error: Option<String>,
    /// Send to response, per request.
    pub request_latency: Histogram,
    /// Creation (stamp) to acknowledgement, per record: paced senders only.
    pub record_latency: Histogram,
    pub first_send: Option<Instant>,
    pub last_ack: Option<Instant>,
}

/// Records of `record_size` value bytes that fit in one batch of `batch_size` bytes (at least one).
pub fn records_per_batch(settings: &ProducerSettings) -> Result<usize> {
    let one = encode_batch(&[Bytes::from(vec![0u8; settings.record_size])], 0)?;
    let per_record = one.len() - BATCH_HEADER_BYTES;
    Ok(((settings.batch_size.saturating_sub(BATCH_HEADER_BYTES)) / per_record).max(1))
}

/// Size of a v2 record batch header.
pub const BATCH_HEADER_BYTES: usize = 61;

/// Encodes `values` (no keys, no headers) as one v2 batch without compression and without
/// idempotence (producer id -1, base sequence -1).
pub fn encode_batch(values: &[Bytes], timestamp_ms: i64) -> Result<Bytes> {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder starts a new batch when offset - sequence changes; a constant
            // difference gives one batch whose base sequence is -1.
            sequence: i as i32 - 1,
            timestamp: timestamp_ms,
            key: None,
            value: Some(v.clone()),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::with_capacity(BATCH_HEADER_BYTES + values.iter().map(|v| v.len() + 16).sum::<usize>());
    RecordBatchEncoder::encode(&mut buf, records.iter(), &RecordEncodeOptions { version: 2, compression: Compression::None })?;
    Ok(buf.freeze())
}

pub fn unix_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Filler for record values: a fixed pattern (no compression is used, content is irrelevant).
fn filler(len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| b'a' + (i % 26) as u8).collect::<Vec<u8>>())
}

/// A request on the wire that awaits its response.
struct InFlight {
    correlation: i32,
    sent: Instant,
    records: u64,
    batch_bytes: u64,
    /// Creation stamps of every record in the request (paced senders).
    stamps: Vec<u64>,
}

/// One producer connection to one broker, with its response reader task.
struct Sender {
    write: OwnedWriteHalf,
    responses: mpsc::Receiver<Result<Bytes>>,
    reader: JoinHandle<()>,
    correlation: i32,
    in_flight: VecDeque<InFlight>,
    settings: ProducerSettings,
    topic: TopicName,
    outcome: SenderOutcome,
}

impl Sender {
    async fn connect(addr: &str, settings: &ProducerSettings) -> Result<Sender> {
        let conn = Connection::connect(addr).await?;
        let (mut read, write) = conn.into_split();
        let (tx, rx) = mpsc::channel(settings.inflight.max(1) + 1);
        let reader = tokio::spawn(async move {
            loop {
                let frame = wire::read_frame(&mut read).await;
                let failed = frame.is_err();
                if tx.send(frame).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Sender {
            write,
            responses: rx,
            reader,
            correlation: 0,
            in_flight: VecDeque::with_capacity(settings.inflight),
            topic: TopicName(wire::str_bytes(&settings.topic)),
            settings: settings.clone(),
            outcome: SenderOutcome::default(),
        })
    }

    fn has_room(&self) -> bool {
        self.in_flight.len() < self.settings.inflight
    }

    /// Writes one Produce request carrying one batch per (partition, batch) pair.
    async fn send(&mut self, batches: Vec<(i32, Bytes)>, records: u64, stamps: Vec<u64>) -> Result<()> {
        self.correlation = self.correlation.wrapping_add(1);
        let batch_bytes = batches.iter().map(|(_, b)| b.len() as u64).sum();
        let request = ProduceRequest::default()
            .with_acks(self.settings.acks)
            .with_timeout_ms(self.settings.timeout_ms)
            .with_topic_data(vec![TopicProduceData::default().with_name(self.topic.clone()).with_partition_data(
                batches.into_iter().map(|(p, b)| PartitionProduceData::default().with_index(p).with_records(Some(b))).collect(),
            )]);
        let frame = wire::encode_request(PRODUCE_VERSION, self.correlation, &request)?;
        let sent = Instant::now();
        self.outcome.first_send.get_or_insert(sent);
        self.write.write_all(&frame).await.context("sending a Produce request")?;
        self.outcome.requests += 1;
        if self.settings.acks == 0 {
            // No response will come: the request counts once written.
            self.outcome.records += records;
            self.outcome.batch_bytes += batch_bytes;
            self.outcome.last_ack = Some(Instant::now());
        } else {
            self.in_flight.push_back(InFlight { correlation: self.correlation, sent, records, batch_bytes, stamps });
        }
        Ok(())
    }

    /// Handles one response frame: the oldest request in flight is the one it answers.
    fn on_response(&mut self, frame: Bytes, clock: &Clock) -> Result<()> {
        let now = Instant::now();
        let req = self.in_flight.pop_front().ok_or_else(|| anyhow!("a Produce response arrived with nothing in flight"))?;
        let response: ProduceResponse = wire::decode_response::<ProduceRequest>(PRODUCE_VERSION, req.correlation, frame)?;
        let mut failed = false;
        for t in &response.responses {
            for p in &t.partition_responses {
                if p.error_code != 0 {
                    failed = true;
                    self.outcome.errors += 1;
                    self.outcome.first_error.get_or_insert_with(|| {
                        format!("partition {} error code {} {:?}", p.index, p.error_code, p.error_message.as_ref().map(|m| m.to_string()))
                    });
                }
            }
        }
        self.outcome.request_latency.record(now.duration_since(req.sent).as_nanos() as u64);
        self.outcome.last_ack = Some(now);
        if !failed {
            self.outcome.records += req.records;
            self.outcome.batch_bytes += req.batch_bytes;
            let now_ns = now.duration_since(clock.base).as_nanos() as u64;
            for s in req.stamps {
                self.outcome.record_latency.record(now_ns.saturating_sub(s));
            }
        }
        Ok(())
    }

    async fn next_response(&mut self) -> Result<Bytes> {
        match self.responses.recv().await {
            Some(frame) => frame,
            None => bail!("the response reader stopped"),
        }
    }

    async fn drain(&mut self, clock: &Clock) -> Result<()> {
        while !self.in_flight.is_empty() {
            let frame = tokio::time::timeout(Duration::from_secs(60), self.next_response())
                .await
                .map_err(|_| anyhow!("no Produce response within 60 s"))??;
            self.on_response(frame, clock)?;
        }
        Ok(())
    }

    fn finish(self) -> SenderOutcome {
        self.reader.abort();
        self.outcome
    }
}

/// Sends the same pre-encoded batch as fast as the in-flight limit allows, rotating over
/// `partitions`, until `stop`.
pub async fn run_throughput(
    addr: String,
    partitions: Vec<i32>,
    settings: ProducerSettings,
    stop: StopAt,
    clock: Clock,
) -> Result<SenderOutcome> {
    if partitions.is_empty() {
        return Ok(SenderOutcome::default());
    }
    let per_batch = records_per_batch(&settings)?;
    let value = filler(settings.record_size);
    let values: Vec<Bytes> = (0..per_batch).map(|_| value.clone()).collect();
    let batch = encode_batch(&values, unix_ms())?;
    let per_request = (settings.max_request_bytes / batch.len()).clamp(1, partitions.len());
    let mut sender = Sender::connect(&addr, &settings).await?;
    let mut next_partition = 0usize;
    let mut created = 0u64;
    loop {
        while sender.has_room() && !stop.reached(created, Instant::now()) {
            let mut batches = Vec::with_capacity(per_request);
            let mut records = 0u64;
            while batches.len() < per_request && !stop.reached(created + records, Instant::now()) {
                batches.push((partitions[next_partition % partitions.len()], batch.clone()));
                next_partition += 1;
                records += per_batch as u64;
            }
            created += records;
            sender.send(batches, records, Vec::new()).await?;
        }
        if stop.reached(created, Instant::now()) {
            break;
        }
        let frame = sender.next_response().await?;
        sender.on_response(frame, &clock)?;
    }
    sender.drain(&clock).await?;
    Ok(sender.finish())
}

/// A batch being filled (sticky partitioner: one open batch at a time).
struct OpenBatch {
    partition: i32,
    stamps: Vec<u64>,
}

/// Most full batches waiting for an in-flight slot; when reached, record creation pauses
/// (the stamps keep their intended times, so the wait shows in the latency).
const MAX_WAITING_BATCHES: usize = 256;

/// Creates records at `records_per_s` (each stamped with its intended creation time, so
/// a sender that falls behind shows it as latency), batches and sends them until `stop`.
pub async fn run_paced(
    addr: String,
    partitions: Vec<i32>,
    settings: ProducerSettings,
    records_per_s: f64,
    stop: StopAt,
    clock: Clock,
) -> Result<SenderOutcome> {
    if partitions.is_empty() || records_per_s <= 0.0 {
        return Ok(SenderOutcome::default());
    }
    let per_batch = records_per_batch(&settings)?;
    let interval_ns = 1e9 / records_per_s;
    let fill = filler(settings.record_size);
    let mut sender = Sender::connect(&addr, &settings).await?;
    let start_ns = clock.now_ns();
    let mut created = 0u64;
    let mut creating = true;
    let mut next_partition = 0usize;
    let mut open: Option<OpenBatch> = None;
    let mut full: VecDeque<OpenBatch> = VecDeque::new();
    loop {
        let now_ns = clock.now_ns();
        if creating && stop.reached(created, clock.at(now_ns)) {
            creating = false;
        }
        if creating {
            let due = ((now_ns - start_ns) as f64 / interval_ns) as u64 + 1;
            let due = stop.records.map_or(due, |n| due.min(n));
            while created < due && full.len() < MAX_WAITING_BATCHES {
                let batch = open.get_or_insert_with(|| {
                    let partition = partitions[next_partition % partitions.len()];
                    next_partition += 1;
                    OpenBatch { partition, stamps: Vec::with_capacity(per_batch) }
                });
                batch.stamps.push(start_ns + (created as f64 * interval_ns) as u64);
                created += 1;
                if batch.stamps.len() >= per_batch {
                    full.extend(open.take());
                }
            }
        }
        // Send what is ready: full batches first, then the open batch once its linger passed
        // (or at the end of the run).
        while sender.has_room() {
            let linger_over = open.as_ref().is_some_and(|b| {
                !creating || b.stamps.first().is_some_and(|s| now_ns.saturating_sub(*s) >= settings.linger.as_nanos() as u64)
            });
            if full.is_empty() && linger_over {
                full.extend(open.take());
            }
            if full.is_empty() {
                break;
            }
            let mut batches = Vec::new();
            let mut stamps = Vec::new();
            let mut bytes = 0usize;
            while let Some(b) = full.front() {
                if batches.iter().any(|(p, _)| *p == b.partition) || (bytes > 0 && bytes + b.stamps.len() * settings.record_size > settings.max_request_bytes) {
                    break;
                }
                let Some(b) = full.pop_front() else { break };
                let encoded = encode_stamped(&b.stamps, &fill)?;
                bytes += encoded.len();
                batches.push((b.partition, encoded));
                stamps.extend_from_slice(&b.stamps);
            }
            let records = stamps.len() as u64;
            sender.send(batches, records, stamps).await?;
        }
        if !creating && open.is_none() && full.is_empty() {
            break;
        }
        // Wait for a response or the next thing to do (a record due, a linger to expire).
        let mut wake: Option<Instant> = None;
        if creating && full.len() < MAX_WAITING_BATCHES {
            wake = Some(clock.at(start_ns + (created as f64 * interval_ns) as u64));
        }
        if sender.has_room() {
            if let Some(first) = open.as_ref().and_then(|b| b.stamps.first()) {
                let linger_end = clock.at(*first) + settings.linger;
                wake = Some(wake.map_or(linger_end, |w| w.min(linger_end)));
            }
        }
        match wake {
            Some(wake) if sender.in_flight.is_empty() => tokio::time::sleep_until(wake.into()).await,
            Some(wake) => {
                let frame = tokio::select! {
                    frame = sender.next_response() => Some(frame?),
                    _ = tokio::time::sleep_until(wake.into()) => None,
                };
                if let Some(frame) = frame {
                    sender.on_response(frame, &clock)?;
                }
            }
            None if sender.in_flight.is_empty() => bail!("paced sender has nothing to wait for"),
            None => {
                let frame = sender.next_response().await?;
                sender.on_response(frame, &clock)?;
            }
        }
        // Take every response already waiting before creating more records.
        while let Ok(frame) = sender.responses.try_recv() {
            sender.on_response(frame?, &clock)?;
        }
    }
    sender.drain(&clock).await?;
    Ok(sender.finish())
}

/// A batch whose record values start with their 8-byte little-endian creation stamp.
fn encode_stamped(stamps: &[u64], fill: &Bytes) -> Result<Bytes> {
    let size = fill.len();
    if size < 8 {
        bail!("stamped records need at least 8 bytes, not {size}");
    }
    let mut values = BytesMut::with_capacity(stamps.len() * size);
    for s in stamps {
        values.put_u64_le(*s);
        values.put_slice(&fill[..size - 8]);
    }
    let values = values.freeze();
    let per: Vec<Bytes> = (0..stamps.len()).map(|i| values.slice(i * size..(i + 1) * size)).collect();
    encode_batch(&per, unix_ms())
}
