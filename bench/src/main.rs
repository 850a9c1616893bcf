//! `runnel-bench`: a native Kafka client (built on `kafka-protocol`) that measures a
//! broker: produce and consume throughput, end-to-end latency at a fixed rate, and
//! partition scale, with the broker's CPU and memory read from /proc. This file parses
//! the command line and dispatches; `runs` holds the scenarios, `report` the Markdown.

mod admin;
mod broker_proc;
mod consumer;
mod histogram;
mod producer;
mod report;
mod results;
mod runs;
mod wire;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "runnel-bench", version, about = "Benchmark a Kafka-protocol broker (Runnel or Kafka) with a native client")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Produce throughput: records/s, MB/s, request latency, broker CPU per GB.
    Produce(ProduceArgs),
    /// Consume throughput: read a topic from its start to its end (filling it first if
    /// it holds fewer than --records).
    Consume(ConsumeArgs),
    /// Produce and end-to-end latency percentiles at a fixed produce rate.
    Latency(LatencyArgs),
    /// Partition scale: create many partitions, then idle CPU, memory and Metadata latency.
    Partitions(PartitionArgs),
    /// Print Markdown tables and the targets section from JSON results.
    Report(ReportArgs),
}

/// Which broker to measure.
#[derive(Args, Clone)]
pub struct BrokerArgs {
    /// Address of a running broker.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "spawn", required_unless_present = "spawn")]
    pub bootstrap: Option<String>,
    /// Start this `runnel` binary on a free 127.0.0.1 port with a temporary data
    /// directory, measure it, and stop it (by its pid) afterwards.
    #[arg(long, value_name = "PATH_TO_RUNNEL")]
    pub spawn: Option<PathBuf>,
    /// Extra argument for the spawned broker (repeat for more), e.g. --broker-arg=--log-fsync=never.
    #[arg(long = "broker-arg", value_name = "ARG", allow_hyphen_values = true, requires = "spawn")]
    pub broker_args: Vec<String>,
    /// Where the spawned broker's data directory is created [default: the temp dir].
    #[arg(long, value_name = "DIR", requires = "spawn")]
    pub spawn_dir: Option<PathBuf>,
    /// Spawn a cluster of this many nodes (every one a controller voter) instead of one
    /// broker; CPU time and memory are the sum over the nodes. Topics get the brokers'
    /// default replication factor: pass --broker-arg=--default-replication-factor=3.
    #[arg(long, default_value_t = 1, requires = "spawn", value_parser = clap::value_parser!(u16).range(1..=9))]
    pub nodes: u16,
    /// Pid of the --bootstrap broker, for its CPU time and peak RSS from /proc (repeat
    /// for every node of a cluster: the figures are their sum).
    #[arg(long, value_name = "PID", conflicts_with = "spawn")]
    pub broker_pid: Vec<u32>,
    /// Reset the --broker-pid broker's peak RSS (VmHWM) before measuring (writes
    /// /proc/PID/clear_refs). A spawned broker is always reset.
    #[arg(long)]
    pub reset_peak_rss: bool,
}

/// What producers send.
#[derive(Args, Clone)]
pub struct ProducerArgs {
    /// Topic [default: a new topic named after the run].
    #[arg(long)]
    pub topic: Option<String>,
    /// Partitions of the topic (created with CreateTopics if it is missing).
    #[arg(long, default_value_t = 1)]
    pub partitions: i32,
    /// Bytes of each record's value (no key, no headers).
    #[arg(long, default_value_t = 100)]
    pub record_size: usize,
    /// Most bytes of one record batch (Kafka's batch.size).
    #[arg(long, default_value_t = 16384)]
    pub batch_size: usize,
    /// How long a batch that is not full waits for more records (Kafka's linger.ms).
    /// Applies to paced producers; throughput producers always send full batches.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// -1 (all), 1 (leader) or 0 (no response: a request counts as done once written).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true, value_parser = clap::value_parser!(i16).range(-1..=1))]
    pub acks: i16,
    /// Producer connections (each writes to every partition).
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Produce requests in flight per connection (librdkafka's max.in.flight: 5).
    #[arg(long, default_value_t = 5)]
    pub inflight: usize,
    /// Most bytes of record batches in one Produce request (Kafka's max.request.size).
    #[arg(long, default_value_t = 1_048_576)]
    pub max_request_bytes: usize,
}

/// How long a run lasts and where its JSON goes.
#[derive(Args, Clone)]
pub struct RunArgs {
    /// Stop after this many records (rounded up to whole batches by producers).
    #[arg(long)]
    pub records: Option<u64>,
    /// Stop after this many seconds [default: 10 when --records is not given].
    #[arg(long)]
    pub duration_s: Option<f64>,
    /// Write the inputs and figures of the run to this file as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub producer: ProducerArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Producer settings used to fill the topic when it holds fewer than --records.
    #[command(flatten)]
    pub producer: ProducerArgs,
    #[command(flatten)]
    pub run: RunArgs,
    /// Fetch max_bytes.
    #[arg(long, default_value_t = 52_428_800)]
    pub fetch_max_bytes: i32,
    /// Fetch partition_max_bytes.
    #[arg(long, default_value_t = 8_388_608)]
    pub partition_max_bytes: i32,
}

#[derive(Args)]
pub struct LatencyArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    #[command(flatten)]
    pub producer: ProducerArgs,
    #[command(flatten)]
    pub run: RunArgs,
    /// Produce rate to hold, in MB/s (10^6 bytes of record values per second).
    #[arg(long, default_value_t = 5.0)]
    pub rate_mbps: f64,
    /// Consumer long-poll wait (Fetch max_wait_ms; min_bytes is 1).
    #[arg(long, default_value_t = 100)]
    pub max_wait_ms: i32,
}

#[derive(Args)]
pub struct PartitionArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Partitions to create in all.
    #[arg(long, default_value_t = 1000)]
    pub partitions: usize,
    /// Partitions of each topic; topics are named PREFIX-00000, PREFIX-00001, ...
    #[arg(long, default_value_t = 100)]
    pub partitions_per_topic: usize,
    /// Topic name prefix [default: a new prefix named after the run].
    #[arg(long)]
    pub topic: Option<String>,
    /// Topics per CreateTopics request.
    #[arg(long, default_value_t = 10)]
    pub create_batch: usize,
    /// Seconds to wait after every partition has a leader before measuring idle CPU.
    #[arg(long, default_value_t = 5.0)]
    pub settle_s: f64,
    /// Seconds over which idle CPU is measured.
    #[arg(long, default_value_t = 10.0)]
    pub duration_s: f64,
    /// Metadata requests (all topics) to time.
    #[arg(long, default_value_t = 50)]
    pub metadata_requests: usize,
    /// Give up when the partitions do not all have a leader within this many seconds.
    #[arg(long, default_value_t = 900)]
    pub leader_timeout_s: u64,
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Args)]
pub struct ReportArgs {
    /// JSON files written by the other subcommands.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Produce(a) => runs::produce(a).await,
        Command::Consume(a) => runs::consume(a).await,
        Command::Latency(a) => runs::latency(a).await,
        Command::Partitions(a) => runs::partitions(a).await,
        Command::Report(a) => report::print(&a.files),
    }
}
