//! The four scenarios (produce, consume, latency, partition scale): set up the broker and
//! the topic, take /proc readings around the measured interval, run the senders and
//! fetch loops, then print one table row and write the JSON record.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kafka_protocol::protocol::Encodable;

use crate::admin::{self, TopicLayout};
use crate::broker_proc::{self, ProcCost, ProcSample, SpawnedBroker};
use crate::consumer::{self, ConsumeOutcome, FetchSettings, Progress};
use crate::histogram::{Histogram, Percentiles};
use crate::producer::{self, Clock, ProducerSettings, SenderOutcome, StopAt};
use crate::results::{Inputs, LatencyFigures, PartitionScaleFigures, RunRecord, ThroughputFigures};
use crate::wire::{Connection, METADATA_VERSION};
use crate::{BrokerArgs, ConsumeArgs, LatencyArgs, PartitionArgs, ProduceArgs, ProducerArgs, RunArgs};

/// How long topic set-up may take before a run gives up.
const LAYOUT_TIMEOUT: Duration = Duration::from_secs(120);
const MB: f64 = 1e6;
const GB: f64 = 1e9;

/// The broker under test: one process, or every node of a spawned cluster.
struct Target {
    /// The address the benchmark's own connection uses (the first node).
    addr: String,
    /// Every node's address, comma-separated (what a client is bootstrapped with).
    bootstrap: String,
    /// Broker processes whose /proc figures are added together.
    pids: Vec<u32>,
    source: &'static str,
    spawned: Vec<SpawnedBroker>,
    reset_peak_rss: bool,
    /// Machine facts taken before anything was measured.
    machine: broker_proc::Machine,
}


/// How long a spawned cluster may take until every node is registered.
const CLUSTER_FORM_TIMEOUT: Duration = Duration::from_secs(60);

impl Target {
    async fn open(args: &BrokerArgs) -> Result<(Target, Connection)> {
        let mut machine = broker_proc::machine();
        machine.fdatasync_16k_ms = broker_proc::fdatasync_probe_ms(&args.spawn_dir.clone().unwrap_or_else(std::env::temp_dir));
        let target = match (&args.spawn, &args.bootstrap) {
            (Some(binary), _) => {
                let parent = args.spawn_dir.clone().unwrap_or_else(std::env::temp_dir);
                let brokers = if args.nodes > 1 {
                    SpawnedBroker::start_cluster(binary, &parent, &args.broker_args, usize::from(args.nodes))?
                } else {
                    vec![SpawnedBroker::start(binary, &parent, &args.broker_args)?]
                };
                for b in &brokers {
                    eprintln!("runnel-bench: started {} (pid {}) on {}", binary.display(), b.pid().map_or("?".into(), |p| p.to_string()), b.addr);
                }
                Target {
                    addr: brokers[0].addr.clone(),
                    bootstrap: brokers.iter().map(|b| b.addr.as_str()).collect::<Vec<_>>().join(","),
                    pids: brokers.iter().filter_map(SpawnedBroker::pid).collect(),
                    source: "spawned",
                    spawned: brokers,
                    reset_peak_rss: true,
                    machine,
                }
            }
            (None, Some(addr)) => Target {
                addr: addr.split(',').next().unwrap_or(addr).to_string(),
                bootstrap: addr.clone(),
                pids: args.broker_pid.clone(),
                source: if args.broker_pid.is_empty() { "none" } else { "--broker-pid" },
                spawned: Vec::new(),
                reset_peak_rss: args.reset_peak_rss,
                machine,
            },
            (None, None) => bail!("give --bootstrap HOST:PORT or --spawn PATH_TO_RUNNEL"),
        };
        let mut conn = Connection::connect(&target.addr).await?;
        conn.check_api_versions().await?;
        if target.spawned.len() > 1 {
            let deadline = Instant::now() + CLUSTER_FORM_TIMEOUT;
            while admin::metadata(&mut conn, None).await?.brokers.len() < target.spawned.len() {
                if Instant::now() > deadline {
                    bail!("the {} nodes did not all register within {} s", target.spawned.len(), CLUSTER_FORM_TIMEOUT.as_secs());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok((target, conn))
    }

    /// Broker nodes measured: the spawned ones, or the pids given.
    fn nodes(&self) -> usize {
        if self.spawned.is_empty() {
            self.pids.len().max(1)
        } else {
            self.spawned.len()
        }
    }

    fn data_dirs(&self) -> Vec<&Path> {
        self.spawned.iter().map(|b| b.data_dir.as_path()).collect()
    }

    /// Open files of every broker process together (None when one cannot be read).
    fn open_fds(&self) -> Option<u64> {
        (!self.pids.is_empty()).then_some(())?;
        self.pids.iter().map(|p| broker_proc::open_fds(*p)).sum()
    }

    /// Open files of the broker process holding the most (each has its own limit).
    fn open_fds_max(&self) -> Option<u64> {
        let each: Option<Vec<u64>> = self.pids.iter().map(|p| broker_proc::open_fds(*p)).collect();
        each?.into_iter().max()
    }

    /// The lowest open-file limit among the broker processes.
    fn max_open_files(&self) -> Option<u64> {
        self.pids.iter().filter_map(|p| broker_proc::max_open_files(*p)).min()
    }

    fn stop(mut self) {
        for b in &mut self.spawned {
            b.stop();
        }
    }
}

/// /proc readings of the broker(s) and of this process around a measured interval.
struct Meter {
    machine_busy_start: Option<u64>,
    broker_pids: Vec<u32>,
    broker_start: Option<ProcSample>,
    client_start: ProcSample,
    ticks: (f64, &'static str),
}

impl Meter {
    fn start(target: &Target) -> Result<Meter> {
        let ticks = broker_proc::clock_ticks_per_second();
        if target.reset_peak_rss {
            for pid in &target.pids {
                if let Err(e) = broker_proc::reset_peak_rss(*pid) {
                    eprintln!("runnel-bench: peak RSS not reset ({e:#}); it is the peak since the broker started");
                }
            }
        }
        let broker_start = (!target.pids.is_empty()).then(|| broker_proc::sample_all(&target.pids)).transpose()?;
        let client_start = broker_proc::sample(std::process::id())?;
        let machine_busy_start = broker_proc::machine_busy_ticks();
        Ok(Meter { machine_busy_start, broker_pids: target.pids.clone(), broker_start, client_start, ticks })
    }

    /// Cores the whole machine kept busy since `start`.
    fn machine_busy_cores(&self) -> Option<f64> {
        let busy = broker_proc::machine_busy_ticks()?.checked_sub(self.machine_busy_start?)?;
        let wall = self.client_start.at.elapsed().as_secs_f64();
        (wall > 0.0).then(|| busy as f64 / self.ticks.0 / wall)
    }

    /// Broker cost (all nodes together), client cost and the machine's busy cores since `start`.
    fn finish(&self) -> Result<(Option<ProcCost>, ProcCost, Option<f64>)> {
        let broker = match &self.broker_start {
            Some(start) => Some(broker_proc::cost(start, &broker_proc::sample_all(&self.broker_pids)?, self.ticks.0)),
            None => None,
        };
        let client = broker_proc::cost(&self.client_start, &broker_proc::sample(std::process::id())?, self.ticks.0);
        Ok((broker, client, self.machine_busy_cores()))
    }
}

fn run_name(kind: &str) -> String {
    format!("bench-{kind}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

fn producer_settings(p: &ProducerArgs, topic: &str) -> ProducerSettings {
    ProducerSettings {
        topic: topic.to_string(),
        record_size: p.record_size,
        batch_size: p.batch_size,
        linger: Duration::from_millis(p.linger_ms),
        acks: p.acks,
        inflight: p.inflight.max(1),
        max_request_bytes: p.max_request_bytes,
        timeout_ms: 30_000,
    }
}

fn inputs(target: &Target, broker: &BrokerArgs, p: &ProducerArgs, run: &RunArgs, topic: &str) -> Inputs {
    Inputs {
        bootstrap: target.bootstrap.clone(),
        nodes: target.nodes(),
        broker_args: broker.broker_args.clone(),
        topic: topic.to_string(),
        partitions: p.partitions,
        record_size: p.record_size,
        batch_size: p.batch_size,
        records_per_batch: 0,
        linger_ms: p.linger_ms,
        acks: p.acks,
        producers: p.producers,
        inflight: p.inflight,
        max_request_bytes: p.max_request_bytes,
        records: run.records,
        duration_s: run.duration_s,
        ..Inputs::default()
    }
}

/// One sender per (producer, leader): partitions of each leader, rotated per producer so
/// that producers do not start on the same partition, and each sender's share of `total`.
fn sender_plan(layout: &TopicLayout, producers: usize, total: Option<u64>) -> Vec<(String, Vec<i32>, Option<u64>)> {
    let mut plan = Vec::new();
    let weight_total = (layout.partitions * producers.max(1)) as u64;
    for i in 0..producers.max(1) {
        for (addr, parts) in &layout.by_leader {
            let mut parts = parts.clone();
            let n = parts.len();
            parts.rotate_left((i * n / producers.max(1)) % n.max(1));
            let share = total.map(|t| (t * n as u64).div_ceil(weight_total));
            plan.push((addr.clone(), parts, share));
        }
    }
    plan
}

fn deadline(run: &RunArgs) -> Option<Instant> {
    let secs = match (run.records, run.duration_s) {
        (_, Some(s)) => s,
        (Some(_), None) => return None,
        (None, None) => 10.0,
    };
    Some(Instant::now() + Duration::from_secs_f64(secs))
}

/// Runs throughput senders to completion and merges what they did.
async fn produce_full_speed(layout: &TopicLayout, p: &ProducerArgs, settings: &ProducerSettings, records: Option<u64>, until: Option<Instant>, clock: Clock) -> Result<SenderOutcome> {
    let mut tasks = Vec::new();
    for (addr, parts, share) in sender_plan(layout, p.producers, records) {
        let stop = StopAt { records: share, deadline: until };
        tasks.push(tokio::spawn(producer::run_throughput(addr, parts, settings.clone(), stop, clock)));
    }
    merge_senders(tasks).await
}

async fn merge_senders(tasks: Vec<tokio::task::JoinHandle<Result<SenderOutcome>>>) -> Result<SenderOutcome> {
    let mut all = SenderOutcome::default();
    for t in tasks {
        let o = t.await.context("producer task panicked")??;
        all.records += o.records;
        all.batch_bytes += o.batch_bytes;
        all.requests += o.requests;
        all.errors += o.errors;
        if all.first_error.is_none() {
            all.first_error = o.first_error;
        }
        all.request_latency.merge(&o.request_latency);
        all.record_latency.merge(&o.record_latency);
        all.first_send = match (all.first_send, o.first_send) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        all.last_ack = all.last_ack.max(o.last_ack);
    }
    Ok(all)
}

/// CPU seconds per GB of record values; None when nothing moved.
fn per_gb(cpu_s: f64, payload_bytes: u64) -> Option<f64> {
    (payload_bytes > 0).then(|| cpu_s / (payload_bytes as f64 / GB))
}

fn fmt_ms(p: &Percentiles) -> (String, String, String) {
    if p.samples == 0 {
        return ("-".into(), "-".into(), "-".into());
    }
    (format!("{:.2}", p.p50_ms), format!("{:.2}", p.p99_ms), format!("{:.2}", p.max_ms))
}

fn cost_fields(broker: &Option<ProcCost>, client: &ProcCost, per_gb_broker: Option<f64>, machine_busy: Option<f64>) -> String {
    let b = match broker {
        Some(b) => format!(
            "broker_cpu_s={:.2} broker_cores={:.2} cpu_s_per_GB={} peak_rss_MB={:.0}",
            b.cpu_s,
            b.cores,
            per_gb_broker.map_or("-".into(), |v| format!("{v:.2}")),
            b.peak_rss_mb
        ),
        None => "broker_cpu_s=- (no --broker-pid)".into(),
    };
    let machine = machine_busy.map_or("-".into(), |m| format!("{m:.2}"));
    format!("{b} client_cores={:.2} machine_busy_cores={machine}", client.cores)
}

fn command_line() -> String {
    std::env::args()
        .map(|a| if a.contains(' ') || a.is_empty() { format!("'{a}'") } else { a })
        .collect::<Vec<_>>()
        .join(" ")
}

fn record(kind: &str, target: &Target, inputs: Inputs, broker: Option<ProcCost>, client: ProcCost) -> RunRecord {
    let ticks = broker_proc::clock_ticks_per_second();
    RunRecord {
        kind: kind.into(),
        command_line: command_line(),
        started_unix_s: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        machine: target.machine.clone(),
        inputs,
        broker_source: target.source.into(),
        broker,
        client,
        machine_busy_cores: None,
        clk_tck: ticks.0,
        clk_tck_source: ticks.1.into(),
        produce: None,
        consume: None,
        latency: None,
        partition_scale: None,
        notes: Vec::new(),
    }
}

fn write_json(path: &Option<PathBuf>, rec: &RunRecord) -> Result<()> {
    if let Some(path) = path {
        let text = serde_json::to_string_pretty(rec)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn throughput_figures(o: &SenderOutcome, record_size: usize, broker: &Option<ProcCost>, client: &ProcCost) -> ThroughputFigures {
    let elapsed_s = match (o.first_send, o.last_ack) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    let payload_bytes = o.records * record_size as u64;
    ThroughputFigures {
        records: o.records,
        payload_bytes,
        batch_bytes: o.batch_bytes,
        requests: o.requests,
        errors: o.errors,
        first_error: o.first_error.clone(),
        elapsed_s,
        records_per_s: if elapsed_s > 0.0 { o.records as f64 / elapsed_s } else { 0.0 },
        mb_per_s: if elapsed_s > 0.0 { payload_bytes as f64 / MB / elapsed_s } else { 0.0 },
        request_latency: o.request_latency.percentiles(),
        broker_cpu_s_per_gb: broker.as_ref().and_then(|b| per_gb(b.cpu_s, payload_bytes)),
        client_cpu_s_per_gb: per_gb(client.cpu_s, payload_bytes),
    }
}

pub async fn produce(a: ProduceArgs) -> Result<()> {
    let (target, mut conn) = Target::open(&a.broker).await?;
    let topic = a.producer.topic.clone().unwrap_or_else(|| run_name("produce"));
    admin::ensure_topic(&mut conn, &topic, a.producer.partitions).await?;
    let layout = admin::wait_for_layout(&mut conn, &topic, LAYOUT_TIMEOUT).await?;
    let settings = producer_settings(&a.producer, &topic);
    let clock = Clock { base: Instant::now() };
    let meter = Meter::start(&target)?;
    let until = deadline(&a.run);
    let outcome = produce_full_speed(&layout, &a.producer, &settings, a.run.records, until, clock).await?;
    let (broker, client, busy) = meter.finish()?;

    let figures = throughput_figures(&outcome, a.producer.record_size, &broker, &client);
    let (p50, p99, max) = fmt_ms(&figures.request_latency);
    println!(
        "produce  acks={} p={} size={} batch={} producers={} inflight={} records={} records/s={:.0} MB/s={:.1} p50_ms={p50} p99_ms={p99} max_ms={max} errors={} {}",
        a.producer.acks,
        a.producer.partitions,
        a.producer.record_size,
        a.producer.batch_size,
        a.producer.producers,
        a.producer.inflight,
        figures.records,
        figures.records_per_s,
        figures.mb_per_s,
        figures.errors,
        cost_fields(&broker, &client, figures.broker_cpu_s_per_gb, busy),
    );
    if let Some(e) = &figures.first_error {
        eprintln!("runnel-bench: {} partition errors; first: {e}", figures.errors);
    }
    let mut inputs = inputs(&target, &a.broker, &a.producer, &a.run, &topic);
    inputs.records_per_batch = producer::records_per_batch(&settings)?;
    let mut rec = record("produce", &target, inputs, broker, client);
    rec.machine_busy_cores = busy;
    rec.produce = Some(figures);
    write_json(&a.run.json, &rec)?;
    target.stop();
    Ok(())
}

pub async fn consume(a: ConsumeArgs) -> Result<()> {
    let (target, mut conn) = Target::open(&a.broker).await?;
    let topic = a.producer.topic.clone().unwrap_or_else(|| "bench-consume".to_string());
    admin::ensure_topic(&mut conn, &topic, a.producer.partitions).await?;
    let layout = admin::wait_for_layout(&mut conn, &topic, LAYOUT_TIMEOUT).await?;

    // Fill the topic up to --records first; not measured.
    let mut notes = Vec::new();
    let mut available: i64 = available_records(&layout, &topic).await?;
    if let Some(want) = a.run.records {
        if (available as u64) < want {
            let missing = want - available as u64;
            eprintln!("runnel-bench: filling {topic} with {missing} records (not measured)");
            let settings = producer_settings(&a.producer, &topic);
            let filled = produce_full_speed(&layout, &a.producer, &settings, Some(missing), None, Clock { base: Instant::now() }).await?;
            if filled.errors > 0 {
                bail!("filling {topic} failed: {:?}", filled.first_error);
            }
            notes.push(format!("filled with {} records before measuring", filled.records));
            available = available_records(&layout, &topic).await?;
        }
    }

    let fetch = FetchSettings {
        topic: topic.clone(),
        max_bytes: a.fetch_max_bytes,
        partition_max_bytes: a.partition_max_bytes,
        max_wait_ms: 500,
        min_bytes: 1,
    };
    let until = match (a.run.records, a.run.duration_s) {
        (_, Some(s)) => Some(Instant::now() + Duration::from_secs_f64(s)),
        _ => None,
    };
    let meter = Meter::start(&target)?;
    let mut tasks = Vec::new();
    for (addr, parts) in &layout.by_leader {
        let mut c = Connection::connect(addr).await?;
        let start = earliest_offsets(&mut c, &topic, parts).await?;
        let end = consumer::end_offsets(&mut c, &topic, parts).await?;
        let share = a.run.records.map(|r| (r * parts.len() as u64).div_ceil(layout.partitions as u64));
        tasks.push(tokio::spawn(consumer::run_counting(addr.clone(), fetch.clone(), start, end, share, until)));
    }
    let mut outcome = ConsumeOutcome::default();
    for t in tasks {
        let o = t.await.context("consumer task panicked")??;
        outcome.records += o.records;
        outcome.batch_bytes += o.batch_bytes;
        outcome.fetches += o.fetches;
        outcome.fetch_latency.merge(&o.fetch_latency);
        outcome.first_fetch = match (outcome.first_fetch, o.first_fetch) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        };
        outcome.last_data = outcome.last_data.max(o.last_data);
    }
    let (broker, client, busy) = meter.finish()?;
    let elapsed_s = match (outcome.first_fetch, outcome.last_data) {
        (Some(x), Some(y)) => y.duration_since(x).as_secs_f64(),
        _ => 0.0,
    };
    let payload_bytes = outcome.records * a.producer.record_size as u64;
    let figures = ThroughputFigures {
        records: outcome.records,
        payload_bytes,
        batch_bytes: outcome.batch_bytes,
        requests: outcome.fetches,
        errors: 0,
        first_error: None,
        elapsed_s,
        records_per_s: if elapsed_s > 0.0 { outcome.records as f64 / elapsed_s } else { 0.0 },
        mb_per_s: if elapsed_s > 0.0 { payload_bytes as f64 / MB / elapsed_s } else { 0.0 },
        request_latency: outcome.fetch_latency.percentiles(),
        broker_cpu_s_per_gb: broker.as_ref().and_then(|b| per_gb(b.cpu_s, payload_bytes)),
        client_cpu_s_per_gb: per_gb(client.cpu_s, payload_bytes),
    };
    let (p50, p99, max) = fmt_ms(&figures.request_latency);
    println!(
        "consume  p={} size={} records={} (of {available}) fetches={} records/s={:.0} MB/s={:.1} fetch_p50_ms={p50} fetch_p99_ms={p99} fetch_max_ms={max} {}",
        a.producer.partitions,
        a.producer.record_size,
        figures.records,
        figures.requests,
        figures.records_per_s,
        figures.mb_per_s,
        cost_fields(&broker, &client, figures.broker_cpu_s_per_gb, busy),
    );
    let mut inputs = inputs(&target, &a.broker, &a.producer, &a.run, &topic);
    inputs.fetch_max_bytes = Some(a.fetch_max_bytes);
    inputs.partition_max_bytes = Some(a.partition_max_bytes);
    let mut rec = record("consume", &target, inputs, broker, client);
    rec.machine_busy_cores = busy;
    rec.notes = notes;
    rec.notes.push("MB/s and per-GB figures assume every record value is --record-size bytes".into());
    rec.consume = Some(figures);
    write_json(&a.run.json, &rec)?;
    target.stop();
    Ok(())
}

/// Records between the earliest and the latest offsets of every partition.
async fn available_records(layout: &TopicLayout, topic: &str) -> Result<i64> {
    let mut total = 0;
    for (addr, parts) in &layout.by_leader {
        let mut c = Connection::connect(addr).await?;
        let start = earliest_offsets(&mut c, topic, parts).await?;
        let end = consumer::end_offsets(&mut c, topic, parts).await?;
        total += end.iter().map(|(p, e)| e - start.get(p).copied().unwrap_or(0)).sum::<i64>();
    }
    Ok(total)
}

/// Log start offsets (ListOffsets "earliest"): with no retention yet, 0 on Runnel.
async fn earliest_offsets(conn: &mut Connection, topic: &str, parts: &[i32]) -> Result<BTreeMap<i32, i64>> {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::{BrokerId, ListOffsetsRequest, TopicName};
    let req = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![ListOffsetsTopic::default()
        .with_name(TopicName(crate::wire::str_bytes(topic)))
        .with_partitions(
            parts.iter().map(|p| ListOffsetsPartition::default().with_partition_index(*p).with_current_leader_epoch(-1).with_timestamp(-2)).collect(),
        )]);
    let resp = conn.request(crate::wire::LIST_OFFSETS_VERSION, &req).await?;
    let mut out = BTreeMap::new();
    for t in &resp.topics {
        for p in &t.partitions {
            if p.error_code != 0 {
                bail!("ListOffsets (earliest) for {topic}-{} failed with error code {}", p.partition_index, p.error_code);
            }
            out.insert(p.partition_index, p.offset);
        }
    }
    Ok(out)
}

pub async fn latency(a: LatencyArgs) -> Result<()> {
    if a.producer.record_size < 8 {
        bail!("--record-size must be at least 8 for latency runs (the value carries an 8-byte stamp)");
    }
    if a.rate_mbps <= 0.0 {
        bail!("--rate-mbps must be positive");
    }
    let (target, mut conn) = Target::open(&a.broker).await?;
    let topic = a.producer.topic.clone().unwrap_or_else(|| run_name("latency"));
    admin::ensure_topic(&mut conn, &topic, a.producer.partitions).await?;
    let layout = admin::wait_for_layout(&mut conn, &topic, LAYOUT_TIMEOUT).await?;
    let settings = producer_settings(&a.producer, &topic);
    let records_per_s = a.rate_mbps * MB / a.producer.record_size as f64;
    let fetch = FetchSettings {
        topic: topic.clone(),
        max_bytes: 52_428_800,
        partition_max_bytes: 8_388_608,
        max_wait_ms: a.max_wait_ms,
        min_bytes: 1,
    };
    let clock = Clock { base: Instant::now() };
    let progress = Arc::new(Progress::default());

    // Consumers start at the current end, so earlier records (other clocks) are never read.
    let mut consumers = Vec::new();
    for (addr, parts) in &layout.by_leader {
        let mut c = Connection::connect(addr).await?;
        let start = consumer::end_offsets(&mut c, &topic, parts).await?;
        consumers.push(tokio::spawn(consumer::run_stamped(addr.clone(), fetch.clone(), start, clock, progress.clone())));
    }
    let meter = Meter::start(&target)?;
    let until = deadline(&a.run);
    let total_weight = (layout.partitions * a.producer.producers.max(1)) as f64;
    let mut senders = Vec::new();
    for (addr, parts, share) in sender_plan(&layout, a.producer.producers, a.run.records) {
        let rate = records_per_s * parts.len() as f64 / total_weight;
        let stop = StopAt { records: share, deadline: until };
        senders.push(tokio::spawn(producer::run_paced(addr, parts, settings.clone(), rate, stop, clock)));
    }
    let sent = merge_senders(senders).await;
    // Let the consumers finish (or time out) even when a sender failed.
    progress.acked.store(sent.as_ref().map(|s| s.records).unwrap_or(0), Ordering::Release);
    progress.producers_done.store(true, Ordering::Release);
    let sent = sent?;
    let mut e2e = Histogram::default();
    let mut consumed = 0;
    for c in consumers {
        let o = c.await.context("consumer task panicked")??;
        e2e.merge(&o.end_to_end);
        consumed += o.records;
        if o.unstamped > 0 {
            eprintln!("runnel-bench: {} records without a stamp", o.unstamped);
        }
    }
    let (broker, client, busy) = meter.finish()?;

    let elapsed_s = match (sent.first_send, sent.last_ack) {
        (Some(x), Some(y)) => y.duration_since(x).as_secs_f64(),
        _ => 0.0,
    };
    let payload = sent.records * a.producer.record_size as u64;
    let achieved = if elapsed_s > 0.0 { payload as f64 / MB / elapsed_s } else { 0.0 };
    let figures = LatencyFigures {
        target_mb_per_s: a.rate_mbps,
        achieved_mb_per_s: achieved,
        rate_met: achieved >= 0.95 * a.rate_mbps,
        records_acked: sent.records,
        records_consumed: consumed,
        errors: sent.errors,
        produce: sent.record_latency.percentiles(),
        end_to_end: e2e.percentiles(),
        broker_cpu_s_per_gb: broker.as_ref().and_then(|b| per_gb(b.cpu_s, payload)),
    };
    let p = &figures.produce;
    let e = &figures.end_to_end;
    println!(
        "latency  acks={} p={} size={} batch={} linger={} producers={} target_MB/s={:.1} MB/s={:.1} records={} consumed={} produce_p50_ms={:.2} produce_p99_ms={:.2} produce_p99.9_ms={:.2} produce_max_ms={:.2} e2e_p50_ms={:.2} e2e_p99_ms={:.2} e2e_p99.9_ms={:.2} e2e_max_ms={:.2} errors={} {}",
        a.producer.acks,
        a.producer.partitions,
        a.producer.record_size,
        a.producer.batch_size,
        a.producer.linger_ms,
        a.producer.producers,
        a.rate_mbps,
        achieved,
        sent.records,
        consumed,
        p.p50_ms,
        p.p99_ms,
        p.p999_ms,
        p.max_ms,
        e.p50_ms,
        e.p99_ms,
        e.p999_ms,
        e.max_ms,
        sent.errors,
        cost_fields(&broker, &client, figures.broker_cpu_s_per_gb, busy),
    );
    if !figures.rate_met {
        eprintln!("runnel-bench: the target rate was not reached ({achieved:.1} of {:.1} MB/s)", a.rate_mbps);
    }
    let mut inputs = inputs(&target, &a.broker, &a.producer, &a.run, &topic);
    inputs.records_per_batch = producer::records_per_batch(&settings)?;
    inputs.rate_mb_per_s = Some(a.rate_mbps);
    let mut rec = record("latency", &target, inputs, broker, client);
    rec.machine_busy_cores = busy;
    if consumed < sent.records {
        rec.notes.push(format!("{} acknowledged records were not read back within 10 s", sent.records - consumed));
    }
    rec.latency = Some(figures);
    write_json(&a.run.json, &rec)?;
    target.stop();
    Ok(())
}

/// Size and file count of a directory tree.
fn dir_usage(dir: &Path) -> (u64, u64) {
    let mut bytes = 0;
    let mut files = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => {
                    bytes += m.len();
                    files += 1;
                }
                Err(_) => {}
            }
        }
    }
    (bytes, files)
}

pub async fn partitions(a: PartitionArgs) -> Result<()> {
    let (target, mut conn) = Target::open(&a.broker).await?;
    let prefix = a.topic.clone().unwrap_or_else(|| run_name("scale"));
    let per_topic = a.partitions_per_topic.clamp(1, a.partitions.max(1));
    let topics = a.partitions.div_ceil(per_topic);
    let names: Vec<String> = (0..topics).map(|i| format!("{prefix}-{i:05}")).collect();
    let before: usize = admin::metadata(&mut conn, None).await?.topics.iter().map(|t| t.partitions.len()).sum();

    // Each node has its own open-file limit: the check is on the node holding the most.
    let fd_limit = target.max_open_files();
    let fds_before = target.open_fds_max();
    let stall = Duration::from_secs(60);
    let timeout = Duration::from_secs(a.leader_timeout_s);

    let meter_create = Meter::start(&target)?;
    let t0 = Instant::now();
    // The first CreateTopics batch goes alone: it measures open files per partition while
    // few enough are open that the broker keeps them all (it closes log files beyond its
    // budget, half its open-file limit, while they are not in use).
    let first = a.create_batch.max(1).min(names.len());
    admin::create_topics(&mut conn, &names[..first], per_topic as i32, first).await?;
    admin::wait_for_all_leaders(&mut conn, before + first * per_topic, timeout, stall).await?;
    let fds_now = target.open_fds_max();
    let fds_per_partition = match (fds_before, fds_now) {
        (Some(b), Some(n)) => Some(n.saturating_sub(b) as f64 / (first * per_topic) as f64),
        _ => None,
    };
    admin::create_topics(&mut conn, &names[first..], per_topic as i32, a.create_batch).await?;
    let create_s = t0.elapsed().as_secs_f64();
    eprintln!("runnel-bench: CreateTopics for {} partitions answered in {create_s:.1} s; waiting for leaders", topics * per_topic);
    admin::wait_for_all_leaders(&mut conn, before + topics * per_topic, timeout, stall).await?;
    let all_leaders_s = t0.elapsed().as_secs_f64();
    let (create_cost, _, _) = meter_create.finish()?;
    eprintln!("runnel-bench: every partition has a leader after {all_leaders_s:.1} s; settling {} s", a.settle_s);
    tokio::time::sleep(Duration::from_secs_f64(a.settle_s)).await;

    let meter = Meter::start(&target)?;
    tokio::time::sleep(Duration::from_secs_f64(a.duration_s)).await;
    let (broker, client, busy) = meter.finish()?;

    let mut hist = Histogram::default();
    let mut response_bytes = 0;
    for _ in 0..a.metadata_requests.max(1) {
        let t = Instant::now();
        let resp = admin::metadata(&mut conn, None).await?;
        hist.record(t.elapsed().as_nanos() as u64);
        response_bytes = resp.compute_size(METADATA_VERSION)?;
    }
    let dirs = target.data_dirs();
    let (dir_bytes, dir_files) = if dirs.is_empty() {
        (None, None)
    } else {
        let (b, f) = dirs.iter().map(|d| dir_usage(d)).fold((0, 0), |a, u| (a.0 + u.0, a.1 + u.1));
        (Some(b as f64 / MB), Some(f))
    };
    let figures = PartitionScaleFigures {
        partitions: topics * per_topic,
        not_run_reason: None,
        max_feasible_partitions: None,
        fds_per_partition,
        max_open_files: fd_limit,
        topics,
        create_s,
        all_leaders_s,
        idle_window_s: a.duration_s,
        idle_cpu_percent: broker.as_ref().map(|b| b.cores * 100.0),
        rss_mb: broker.as_ref().map(|b| b.rss_mb_end),
        peak_rss_mb: broker.as_ref().map(|b| b.peak_rss_mb.max(create_cost.as_ref().map_or(0.0, |c| c.peak_rss_mb))),
        threads: broker.as_ref().map(|b| b.threads),
        open_fds: target.open_fds(),
        data_dir_mb: dir_bytes,
        data_dir_files: dir_files,
        metadata: hist.percentiles(),
        metadata_response_bytes: response_bytes,
    };
    let opt = |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
    println!(
        "partitions  partitions={} topics={} create_s={:.1} all_leaders_s={:.1} idle_cpu_%={} rss_MB={} peak_rss_MB={} threads={} fds={} metadata_p50_ms={:.2} metadata_p99_ms={:.2} metadata_bytes={} create_broker_cpu_s={}",
        figures.partitions,
        figures.topics,
        figures.create_s,
        figures.all_leaders_s,
        opt(figures.idle_cpu_percent, 1),
        opt(figures.rss_mb, 0),
        opt(figures.peak_rss_mb, 0),
        figures.threads.map_or("-".into(), |t| t.to_string()),
        figures.open_fds.map_or("-".into(), |t| t.to_string()),
        figures.metadata.p50_ms,
        figures.metadata.p99_ms,
        figures.metadata_response_bytes,
        opt(create_cost.as_ref().map(|c| c.cpu_s), 1),
    );
    let inputs = Inputs {
        bootstrap: target.bootstrap.clone(),
        nodes: target.nodes(),
        broker_args: a.broker.broker_args.clone(),
        topic: prefix,
        partitions: (topics * per_topic) as i32,
        duration_s: Some(a.duration_s),
        ..Inputs::default()
    };
    let mut rec = record("partitions", &target, inputs, broker, client);
    rec.machine_busy_cores = busy;
    if before > 0 {
        rec.notes.push(format!("{before} partitions existed before the run"));
    }
    if let Some(c) = create_cost {
        rec.notes.push(format!("creating and electing leaders took {:.1} broker CPU seconds", c.cpu_s));
    }
    rec.partition_scale = Some(figures);
    write_json(&a.json, &rec)?;
    target.stop();
    Ok(())
}
