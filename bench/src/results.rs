//! What a run records: its inputs, its figures, the broker's and the client's cost, and
//! the machine. Written as JSON by every subcommand and read back by `report`. Units are
//! in the field names; MB and GB are 10^6 and 10^9 bytes of record values (payload).

use serde::{Deserialize, Serialize};

use crate::broker_proc::{Machine, ProcCost};
use crate::histogram::Percentiles;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// produce, consume, latency or partitions.
    pub kind: String,
    /// The command line exactly as run.
    pub command_line: String,
    pub started_unix_s: u64,
    pub machine: Machine,
    pub inputs: Inputs,
    /// How the broker was reached: "spawned", "--broker-pid" or "none" (no /proc figures).
    pub broker_source: String,
    /// Broker /proc figures over the measured interval (None without a pid).
    pub broker: Option<ProcCost>,
    /// This benchmark process over the same interval.
    pub client: ProcCost,
    /// Cores the whole machine kept busy over the interval (every process, from
    /// /proc/stat): on a shared machine, other work shows here.
    #[serde(default)]
    pub machine_busy_cores: Option<f64>,
    pub clk_tck: f64,
    pub clk_tck_source: String,
    pub produce: Option<ThroughputFigures>,
    pub consume: Option<ThroughputFigures>,
    pub latency: Option<LatencyFigures>,
    pub partition_scale: Option<PartitionScaleFigures>,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Inputs {
    pub bootstrap: String,
    /// Broker nodes (a spawned cluster, or the pids given); results from before this field
    /// were all one node.
    #[serde(default = "one_node")]
    pub nodes: usize,
    pub broker_args: Vec<String>,
    pub topic: String,
    pub partitions: i32,
    pub record_size: usize,
    pub batch_size: usize,
    pub records_per_batch: usize,
    pub linger_ms: u64,
    pub acks: i16,
    pub producers: usize,
    pub inflight: usize,
    pub max_request_bytes: usize,
    pub records: Option<u64>,
    pub duration_s: Option<f64>,
    pub rate_mb_per_s: Option<f64>,
    pub fetch_max_bytes: Option<i32>,
    pub partition_max_bytes: Option<i32>,
}

/// Produce or consume throughput.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ThroughputFigures {
    pub records: u64,
    pub payload_bytes: u64,
    pub batch_bytes: u64,
    pub requests: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed_s: f64,
    pub records_per_s: f64,
    pub mb_per_s: f64,
    /// Per Produce (send to response) or per Fetch.
    pub request_latency: Percentiles,
    /// Broker CPU seconds per GB of record values moved.
    pub broker_cpu_s_per_gb: Option<f64>,
    pub client_cpu_s_per_gb: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LatencyFigures {
    pub target_mb_per_s: f64,
    pub achieved_mb_per_s: f64,
    /// Achieved at least 95 % of the target.
    pub rate_met: bool,
    pub records_acked: u64,
    pub records_consumed: u64,
    pub errors: u64,
    /// Creation to acknowledgement, per record (includes time in the batch: linger).
    pub produce: Percentiles,
    /// Creation to receipt by the long-polling consumer, per record.
    pub end_to_end: Percentiles,
    pub broker_cpu_s_per_gb: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PartitionScaleFigures {
    pub partitions: usize,
    /// Why the run stopped before creating every partition (for example the broker's
    /// open-file limit), with `max_feasible_partitions` the projection of what would fit.
    pub not_run_reason: Option<String>,
    pub max_feasible_partitions: Option<usize>,
    /// Open files per partition measured on the first CreateTopics batch.
    pub fds_per_partition: Option<f64>,
    pub max_open_files: Option<u64>,
    pub topics: usize,
    pub create_s: f64,
    /// From the first CreateTopics to every partition having a leader.
    pub all_leaders_s: f64,
    pub idle_window_s: f64,
    pub idle_cpu_percent: Option<f64>,
    pub rss_mb: Option<f64>,
    pub peak_rss_mb: Option<f64>,
    pub threads: Option<u64>,
    pub open_fds: Option<u64>,
    pub data_dir_mb: Option<f64>,
    pub data_dir_files: Option<u64>,
    /// Metadata for every topic, sequential requests.
    pub metadata: Percentiles,
    pub metadata_response_bytes: usize,
}

fn one_node() -> usize {
    1
}
