//! Every node setting in one place: its name, default, documentation and validation.
//!
//! Settings come from (highest priority first) command-line flags, `RUNNEL_*`
//! environment variables, the YAML file named by `--config`, and the defaults below.
//! Topic-level settings (Kafka's names) live in `cluster::topic_config`, not here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

/// An invalid setting: names the setting and the bad value. `main` exits with code 2.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {setting}: {value:?} ({reason})")]
pub struct ConfigError {
    pub setting: &'static str,
    pub value: String,
    pub reason: String,
}

impl ConfigError {
    fn new(setting: &'static str, value: impl ToString, reason: impl ToString) -> Self {
        ConfigError { setting, value: value.to_string(), reason: reason.to_string() }
    }
}

/// The `runnel` command line.
#[derive(Debug, Parser)]
#[command(name = "runnel", version, about = "A broker that speaks the Apache Kafka protocol")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings for `serve`, also accepted without the subcommand (`runnel` = `runnel serve`).
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a node (the default when no subcommand is given).
    Serve(ServeArgs),
}

impl Cli {
    /// The serve flags, whichever form the command line used.
    pub fn into_serve_args(self) -> ServeArgs {
        match self.command {
            Some(Command::Serve(args)) => args,
            None => self.serve,
        }
    }
}

/// Flags of `runnel serve`. Every flag is optional here so that the YAML file and the
/// defaults can fill in what the command line and the environment left out.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// YAML file with settings (keys as the flag names, with `_` for `-`).
    #[arg(long, env = "RUNNEL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory for logs and metadata [default: ./runnel-data]
    #[arg(long, env = "RUNNEL_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address clients connect to [default: 127.0.0.1:9092]
    #[arg(long, env = "RUNNEL_LISTEN", value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Address Metadata returns to clients [default: the listen address]
    #[arg(long, env = "RUNNEL_ADVERTISE", value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// This node's id, unique in the cluster [default: 1]
    #[arg(long, env = "RUNNEL_NODE_ID", value_name = "N")]
    pub node_id: Option<String>,
    /// Address this node listens on for other nodes (raft traffic); required with `voters` [default: none, single-node]
    #[arg(long, env = "RUNNEL_RAFT_LISTEN", value_name = "HOST:PORT")]
    pub raft_listen: Option<String>,
    /// The controller voters, as KRaft's controller.quorum.voters: `ID@HOST:PORT,...` with each voter's raft address. Empty: a single-node cluster of this node alone [default: none]
    #[arg(long, env = "RUNNEL_VOTERS", value_name = "ID@HOST:PORT,...")]
    pub voters: Option<String>,
    /// This node's rack (broker.rack); replicas of a partition are spread over racks [default: none]
    #[arg(long, env = "RUNNEL_RACK", value_name = "RACK")]
    pub rack: Option<String>,
    /// A follower that has not caught up with the leader for this long leaves the in-sync replicas (replica.lag.time.max.ms) [default: 30000]
    #[arg(long, env = "RUNNEL_REPLICA_LAG_TIME_MAX_MS", value_name = "MS")]
    pub replica_lag_time_max_ms: Option<String>,
    /// Replication factor of auto-created topics and of CreateTopics without one (default.replication.factor) [default: 1]
    #[arg(long, env = "RUNNEL_DEFAULT_REPLICATION_FACTOR", value_name = "N")]
    pub default_replication_factor: Option<String>,
    /// A partition with nothing written for this long goes quiet: no raft heartbeats or election timers until the next write (node-to-node pings watch the leader instead). 0: never [default: 2000]
    #[arg(long, env = "RUNNEL_PARTITION_QUIET_AFTER_MS", value_name = "MS")]
    pub partition_quiet_after_ms: Option<String>,
    /// Give leadership back to preferred replicas when a node leads too few of the partitions it prefers (auto.leader.rebalance.enable) [default: true]
    #[arg(long, env = "RUNNEL_AUTO_LEADER_REBALANCE_ENABLE", value_name = "BOOL")]
    pub auto_leader_rebalance_enable: Option<String>,
    /// How often the controller's leader looks for leadership imbalance (leader.imbalance.check.interval.seconds) [default: 300]
    #[arg(long, env = "RUNNEL_LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS", value_name = "S")]
    pub leader_imbalance_check_interval_seconds: Option<String>,
    /// Share of a node's preferred partitions that others may lead before they are given back, in percent (leader.imbalance.per.broker.percentage) [default: 10]
    #[arg(long, env = "RUNNEL_LEADER_IMBALANCE_PER_BROKER_PERCENTAGE", value_name = "PERCENT")]
    pub leader_imbalance_per_broker_percentage: Option<String>,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive [default: info]
    #[arg(long, env = "RUNNEL_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Create a topic when a client asks for an unknown one (auto.create.topics.enable) [default: true]
    #[arg(long, env = "RUNNEL_AUTO_CREATE_TOPICS_ENABLE", value_name = "BOOL")]
    pub auto_create_topics_enable: Option<String>,
    /// Partitions of auto-created topics and CreateTopics without a count (num.partitions) [default: 1]
    #[arg(long, env = "RUNNEL_NUM_PARTITIONS", value_name = "N")]
    pub num_partitions: Option<String>,
    /// Largest request frame accepted, in bytes (socket.request.max.bytes) [default: 104857600]
    #[arg(long, env = "RUNNEL_MAX_REQUEST_BYTES", value_name = "BYTES")]
    pub max_request_bytes: Option<String>,
    /// Most client connections open at once; more are closed on accept [default: 10000]
    #[arg(long, env = "RUNNEL_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<String>,
    /// Close a connection with no request for this long (connections.max.idle.ms) [default: 600000]
    #[arg(long, env = "RUNNEL_CONNECTIONS_MAX_IDLE_MS", value_name = "MS")]
    pub connections_max_idle_ms: Option<String>,
    /// Once the first byte of a request arrives, the whole request must arrive within this time, or the connection is closed (slow clients cannot hold a connection and its buffer) [default: 30000]
    #[arg(long, env = "RUNNEL_REQUEST_READ_TIMEOUT_MS", value_name = "MS")]
    pub request_read_timeout_ms: Option<String>,
    /// Requests one connection may have in progress before the broker stops reading it [default: 100]
    #[arg(long, env = "RUNNEL_MAX_INFLIGHT_REQUESTS", value_name = "N")]
    pub max_inflight_requests: Option<String>,
    /// Most partitions this node hosts; CreateTopics or auto-creation beyond it is refused with POLICY_VIOLATION. 0: 50,000 [default: 0]
    #[arg(long, env = "RUNNEL_MAX_PARTITIONS", value_name = "N")]
    pub max_partitions: Option<String>,
    /// Broker default of the topic setting max.message.bytes (message.max.bytes) [default: 1048588]
    #[arg(long, env = "RUNNEL_MESSAGE_MAX_BYTES", value_name = "BYTES")]
    pub message_max_bytes: Option<String>,
    /// Broker default of segment.bytes (log.segment.bytes) [default: 1073741824]
    #[arg(long, env = "RUNNEL_LOG_SEGMENT_BYTES", value_name = "BYTES")]
    pub log_segment_bytes: Option<String>,
    /// fsync the log before a write counts as stored: `always`, or `never` (Kafka's own default, relies on replication) [default: always]
    #[arg(long, env = "RUNNEL_LOG_FSYNC", value_name = "POLICY")]
    pub log_fsync: Option<String>,
    /// How long a new group's first rebalance waits for more members (group.initial.rebalance.delay.ms) [default: 3000]
    #[arg(long, env = "RUNNEL_GROUP_INITIAL_REBALANCE_DELAY_MS", value_name = "MS")]
    pub group_initial_rebalance_delay_ms: Option<String>,
    /// Smallest session timeout a group member may ask for (group.min.session.timeout.ms) [default: 6000]
    #[arg(long, env = "RUNNEL_GROUP_MIN_SESSION_TIMEOUT_MS", value_name = "MS")]
    pub group_min_session_timeout_ms: Option<String>,
    /// Largest session timeout a group member may ask for (group.max.session.timeout.ms) [default: 1800000]
    #[arg(long, env = "RUNNEL_GROUP_MAX_SESSION_TIMEOUT_MS", value_name = "MS")]
    pub group_max_session_timeout_ms: Option<String>,
    /// Most members one consumer group may have (group.max.size) [default: 2147483647]
    #[arg(long, env = "RUNNEL_GROUP_MAX_SIZE", value_name = "N")]
    pub group_max_size: Option<String>,
    /// Committed offsets of a group without members are deleted this long after the group emptied or the last commit (offsets.retention.minutes) [default: 10080]
    #[arg(long, env = "RUNNEL_OFFSETS_RETENTION_MINUTES", value_name = "MINUTES")]
    pub offsets_retention_minutes: Option<String>,
    /// Idle producer ids are forgotten by a partition after this long (producer.id.expiration.ms) [default: 86400000]
    #[arg(long, env = "RUNNEL_PRODUCER_ID_EXPIRATION_MS", value_name = "MS")]
    pub producer_id_expiration_ms: Option<String>,
    /// A transactional id without a transaction is forgotten after this long (transactional.id.expiration.ms) [default: 604800000]
    #[arg(long, env = "RUNNEL_TRANSACTIONAL_ID_EXPIRATION_MS", value_name = "MS")]
    pub transactional_id_expiration_ms: Option<String>,
    /// Largest transaction.timeout.ms a producer may ask for (transaction.max.timeout.ms) [default: 900000]
    #[arg(long, env = "RUNNEL_TRANSACTION_MAX_TIMEOUT_MS", value_name = "MS")]
    pub transaction_max_timeout_ms: Option<String>,
    /// How often transactions past their timeout are looked for and aborted (transaction.abort.timed.out.transaction.cleanup.interval.ms) [default: 10000]
    #[arg(long, env = "RUNNEL_TRANSACTION_ABORT_TIMED_OUT_TRANSACTION_CLEANUP_INTERVAL_MS", value_name = "MS")]
    pub transaction_abort_timed_out_transaction_cleanup_interval_ms: Option<String>,
}

/// The YAML file: the same keys as the flags, in snake_case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    data_dir: Option<PathBuf>,
    listen: Option<serde_norway::Value>,
    advertise: Option<serde_norway::Value>,
    node_id: Option<serde_norway::Value>,
    raft_listen: Option<serde_norway::Value>,
    voters: Option<serde_norway::Value>,
    rack: Option<serde_norway::Value>,
    default_replication_factor: Option<serde_norway::Value>,
    replica_lag_time_max_ms: Option<serde_norway::Value>,
    partition_quiet_after_ms: Option<serde_norway::Value>,
    auto_leader_rebalance_enable: Option<serde_norway::Value>,
    leader_imbalance_check_interval_seconds: Option<serde_norway::Value>,
    leader_imbalance_per_broker_percentage: Option<serde_norway::Value>,
    log_level: Option<serde_norway::Value>,
    auto_create_topics_enable: Option<serde_norway::Value>,
    num_partitions: Option<serde_norway::Value>,
    max_request_bytes: Option<serde_norway::Value>,
    max_connections: Option<serde_norway::Value>,
    connections_max_idle_ms: Option<serde_norway::Value>,
    request_read_timeout_ms: Option<serde_norway::Value>,
    max_inflight_requests: Option<serde_norway::Value>,
    max_partitions: Option<serde_norway::Value>,
    message_max_bytes: Option<serde_norway::Value>,
    log_segment_bytes: Option<serde_norway::Value>,
    log_fsync: Option<serde_norway::Value>,
    group_initial_rebalance_delay_ms: Option<serde_norway::Value>,
    group_min_session_timeout_ms: Option<serde_norway::Value>,
    group_max_session_timeout_ms: Option<serde_norway::Value>,
    group_max_size: Option<serde_norway::Value>,
    offsets_retention_minutes: Option<serde_norway::Value>,
    producer_id_expiration_ms: Option<serde_norway::Value>,
    transactional_id_expiration_ms: Option<serde_norway::Value>,
    transaction_max_timeout_ms: Option<serde_norway::Value>,
    transaction_abort_timed_out_transaction_cleanup_interval_ms: Option<serde_norway::Value>,
}

/// When the log is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// A write is acknowledged (acks=-1) only after it is on disk; concurrent writes share fsyncs.
    Always,
    /// Never fsync on the write path; the OS writes pages back. Kafka's default.
    Never,
}

/// A node's validated settings.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub advertise_host: String,
    pub advertise_port: u16,
    pub node_id: i32,
    /// Where other nodes reach this one; `None` in single-node mode.
    pub raft_listen: Option<SocketAddr>,
    /// The controller voters and their raft addresses; empty in single-node mode.
    pub voters: Vec<Voter>,
    pub rack: Option<String>,
    pub default_replication_factor: i16,
    pub replica_lag_time_max: Duration,
    /// Zero: partitions never go quiet.
    pub partition_quiet_after: Duration,
    pub auto_leader_rebalance_enable: bool,
    pub leader_imbalance_check_interval: Duration,
    pub leader_imbalance_per_broker_percentage: u32,
    pub log_level: String,
    pub auto_create_topics_enable: bool,
    pub num_partitions: i32,
    pub max_request_bytes: usize,
    pub max_connections: usize,
    pub connections_max_idle: Duration,
    pub request_read_timeout: Duration,
    pub max_inflight_requests: usize,
    /// Most partitions hosted here; 0 means `node::DEFAULT_PARTITION_CAPACITY`.
    pub max_partitions: usize,
    pub message_max_bytes: u32,
    pub log_segment_bytes: u64,
    pub log_fsync: FsyncPolicy,
    pub group_initial_rebalance_delay_ms: u64,
    pub group_min_session_timeout_ms: u64,
    pub group_max_session_timeout_ms: u64,
    pub group_max_size: usize,
    pub offsets_retention_minutes: u64,
    pub producer_id_expiration_ms: u64,
    pub transactional_id_expiration_ms: u64,
    pub transaction_max_timeout_ms: u64,
    pub transaction_abort_timed_out_transaction_cleanup_interval_ms: u64,
}

/// Every setting with its default, as documented in `docs/configuration.md`.
pub const SETTINGS: &[(&str, &str)] = &[
    ("config", "(none)"),
    ("data_dir", "./runnel-data"),
    ("listen", "127.0.0.1:9092"),
    ("advertise", "(the listen address)"),
    ("node_id", "1"),
    ("raft_listen", "(none: single-node)"),
    ("voters", "(none: single-node)"),
    ("rack", "(none)"),
    ("default_replication_factor", "1"),
    ("replica_lag_time_max_ms", "30000"),
    ("partition_quiet_after_ms", "2000"),
    ("auto_leader_rebalance_enable", "true"),
    ("leader_imbalance_check_interval_seconds", "300"),
    ("leader_imbalance_per_broker_percentage", "10"),
    ("log_level", "info"),
    ("auto_create_topics_enable", "true"),
    ("num_partitions", "1"),
    ("max_request_bytes", "104857600"),
    ("max_connections", "10000"),
    ("connections_max_idle_ms", "600000"),
    ("request_read_timeout_ms", "30000"),
    ("max_inflight_requests", "100"),
    ("max_partitions", "0"),
    ("message_max_bytes", "1048588"),
    ("log_segment_bytes", "1073741824"),
    ("log_fsync", "always"),
    ("group_initial_rebalance_delay_ms", "3000"),
    ("group_min_session_timeout_ms", "6000"),
    ("group_max_session_timeout_ms", "1800000"),
    ("group_max_size", "2147483647"),
    ("offsets_retention_minutes", "10080"),
    ("producer_id_expiration_ms", "86400000"),
    ("transactional_id_expiration_ms", "604800000"),
    ("transaction_max_timeout_ms", "900000"),
    ("transaction_abort_timed_out_transaction_cleanup_interval_ms", "10000"),
];

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("./runnel-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            advertise_host: "127.0.0.1".to_string(),
            advertise_port: 9092,
            node_id: 1,
            raft_listen: None,
            voters: Vec::new(),
            rack: None,
            default_replication_factor: 1,
            replica_lag_time_max: Duration::from_millis(30_000),
            partition_quiet_after: Duration::from_millis(2_000),
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval: Duration::from_secs(300),
            leader_imbalance_per_broker_percentage: 10,
            log_level: "info".to_string(),
            auto_create_topics_enable: true,
            num_partitions: 1,
            max_request_bytes: 100 * 1024 * 1024,
            max_connections: 10_000,
            connections_max_idle: Duration::from_millis(600_000),
            request_read_timeout: Duration::from_millis(30_000),
            max_inflight_requests: 100,
            max_partitions: 0,
            message_max_bytes: 1_048_588,
            log_segment_bytes: 1024 * 1024 * 1024,
            log_fsync: FsyncPolicy::Always,
            group_initial_rebalance_delay_ms: 3_000,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_max_size: i32::MAX as usize,
            offsets_retention_minutes: 10_080,
            producer_id_expiration_ms: 86_400_000,
            transactional_id_expiration_ms: 604_800_000,
            transaction_max_timeout_ms: 900_000,
            transaction_abort_timed_out_transaction_cleanup_interval_ms: 10_000,
        }
    }
}

/// A raw setting value and where it came from, before parsing.
fn pick(cli: Option<String>, file: Option<serde_norway::Value>) -> Option<String> {
    cli.or_else(|| {
        file.map(|v| match v {
            serde_norway::Value::String(s) => s,
            serde_norway::Value::Bool(b) => b.to_string(),
            serde_norway::Value::Number(n) => n.to_string(),
            other => serde_norway::to_string(&other).unwrap_or_default().trim().to_string(),
        })
    })
}

fn parse_num<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
    setting: &'static str,
    raw: Option<String>,
    default: T,
    min: T,
    max: T,
) -> Result<T, ConfigError> {
    match raw {
        None => Ok(default),
        Some(s) => {
            let v: T = s
                .trim()
                .parse()
                .map_err(|_| ConfigError::new(setting, &s, "expected a whole number"))?;
            if v < min || v > max {
                return Err(ConfigError::new(setting, &s, format!("must be between {min} and {max}")));
            }
            Ok(v)
        }
    }
}

fn parse_bool(setting: &'static str, raw: Option<String>, default: bool) -> Result<bool, ConfigError> {
    match raw.as_deref().map(str::trim) {
        None => Ok(default),
        Some("true") | Some("1") | Some("yes") => Ok(true),
        Some("false") | Some("0") | Some("no") => Ok(false),
        Some(other) => Err(ConfigError::new(setting, other, "expected true or false")),
    }
}

/// `HOST:PORT`, with an IPv6 host in brackets, as host and port.
pub(crate) fn parse_host_port(setting: &'static str, s: &str) -> Result<(String, u16), ConfigError> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| ConfigError::new(setting, s, "expected HOST:PORT"))?;
    let port: u16 = port.parse().map_err(|_| ConfigError::new(setting, s, "port must be 0-65535"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(ConfigError::new(setting, s, "expected HOST:PORT"));
    }
    Ok((host.to_string(), port))
}

/// A controller voter: its node id and raft address, as `--voters` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    pub node_id: u64,
    pub host: String,
    pub port: u16,
}

/// `HOST:PORT` as a socket address, resolving a host name (e.g. localhost) once.
fn resolve(setting: &'static str, raw: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(a) = raw.parse() {
        return Ok(a);
    }
    let (host, port) = parse_host_port(setting, raw)?;
    resolve_host(&host, port).ok_or_else(|| ConfigError::new(setting, raw, "cannot resolve host"))
}

/// The first address `host` (a name, such as a Kubernetes service, or an address) resolves
/// to, with `port`.
pub(crate) fn resolve_host(host: &str, port: u16) -> Option<SocketAddr> {
    use std::net::ToSocketAddrs;
    (host, port).to_socket_addrs().ok().and_then(|mut it| it.next())
}

/// `host:port` as `parse_host_port` reads it back (an IPv6 host in brackets).
pub(crate) fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `1@host:port,2@host:port`: distinct node ids, each with a raft address.
fn parse_voters(raw: &str) -> Result<Vec<Voter>, ConfigError> {
    let mut voters: Vec<Voter> = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part.split_once('@').ok_or_else(|| ConfigError::new("voters", raw, format!("'{part}' is not ID@HOST:PORT")))?;
        let node_id: u64 = id.trim().parse().map_err(|_| ConfigError::new("voters", raw, format!("'{id}' is not a node id")))?;
        if node_id > i32::MAX as u64 {
            return Err(ConfigError::new("voters", raw, format!("node id {node_id} is above {}", i32::MAX)));
        }
        let (host, port) = parse_host_port("voters", addr.trim())?;
        if port == 0 {
            return Err(ConfigError::new("voters", raw, format!("voter {node_id} has port 0")));
        }
        if voters.iter().any(|v| v.node_id == node_id) {
            return Err(ConfigError::new("voters", raw, format!("node id {node_id} appears twice")));
        }
        voters.push(Voter { node_id, host, port });
    }
    Ok(voters)
}

impl NodeConfig {
    /// Merges flags/environment (already merged by clap), the YAML file and the defaults,
    /// and validates every value.
    pub fn from_args(args: ServeArgs) -> Result<NodeConfig, ConfigError> {
        let file = match &args.config {
            None => FileSettings::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::new("config", path.display(), e))?;
                if text.trim().is_empty() {
                    FileSettings::default()
                } else {
                    serde_norway::from_str(&text)
                        .map_err(|e| ConfigError::new("config", path.display(), e))?
                }
            }
        };
        let d = NodeConfig::default();

        let data_dir = args.data_dir.or(file.data_dir).unwrap_or(d.data_dir);
        if data_dir.as_os_str().is_empty() {
            return Err(ConfigError::new("data_dir", "", "must not be empty"));
        }

        let listen_raw = pick(args.listen, file.listen).unwrap_or_else(|| d.listen.to_string());
        let listen = resolve("listen", &listen_raw)?;

        let (advertise_host, advertise_port) = match pick(args.advertise, file.advertise) {
            Some(a) => {
                let (h, p) = parse_host_port("advertise", &a)?;
                if p == 0 {
                    return Err(ConfigError::new("advertise", &a, "port must not be 0"));
                }
                (h, p)
            }
            // Filled in from the bound address once the listener is open (port 0 case).
            None => (listen.ip().to_string(), listen.port()),
        };

        let node_id = parse_num("node_id", pick(args.node_id, file.node_id), d.node_id, 0, i32::MAX)?;
        let raft_listen = match pick(args.raft_listen, file.raft_listen) {
            None => None,
            Some(raw) => Some(resolve("raft_listen", &raw)?),
        };
        let voters = match pick(args.voters, file.voters) {
            None => Vec::new(),
            Some(raw) => parse_voters(&raw)?,
        };
        if !voters.is_empty() && raft_listen.is_none() {
            return Err(ConfigError::new("raft_listen", "", "required when voters are given"));
        }
        let rack = pick(args.rack, file.rack).map(|r| r.trim().to_string()).filter(|r| !r.is_empty());
        let default_replication_factor = parse_num(
            "default_replication_factor",
            pick(args.default_replication_factor, file.default_replication_factor),
            d.default_replication_factor,
            1,
            i16::MAX,
        )?;
        let replica_lag_time_max_ms = parse_num(
            "replica_lag_time_max_ms",
            pick(args.replica_lag_time_max_ms, file.replica_lag_time_max_ms),
            d.replica_lag_time_max.as_millis() as u64,
            100,
            3_600_000,
        )?;
        let partition_quiet_after_ms = parse_num(
            "partition_quiet_after_ms",
            pick(args.partition_quiet_after_ms, file.partition_quiet_after_ms),
            d.partition_quiet_after.as_millis() as u64,
            0,
            86_400_000,
        )?;
        let auto_leader_rebalance_enable = parse_bool(
            "auto_leader_rebalance_enable",
            pick(args.auto_leader_rebalance_enable, file.auto_leader_rebalance_enable),
            d.auto_leader_rebalance_enable,
        )?;
        let leader_imbalance_check_interval_seconds = parse_num(
            "leader_imbalance_check_interval_seconds",
            pick(args.leader_imbalance_check_interval_seconds, file.leader_imbalance_check_interval_seconds),
            d.leader_imbalance_check_interval.as_secs(),
            1,
            86_400,
        )?;
        let leader_imbalance_per_broker_percentage = parse_num(
            "leader_imbalance_per_broker_percentage",
            pick(args.leader_imbalance_per_broker_percentage, file.leader_imbalance_per_broker_percentage),
            d.leader_imbalance_per_broker_percentage,
            0,
            100,
        )?;
        let log_level = pick(args.log_level, file.log_level).unwrap_or(d.log_level);
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            return Err(ConfigError::new("log_level", &log_level, "not a log level or tracing filter"));
        }
        let auto_create_topics_enable = parse_bool(
            "auto_create_topics_enable",
            pick(args.auto_create_topics_enable, file.auto_create_topics_enable),
            d.auto_create_topics_enable,
        )?;
        let num_partitions = parse_num(
            "num_partitions",
            pick(args.num_partitions, file.num_partitions),
            d.num_partitions,
            1,
            10_000,
        )?;
        let max_request_bytes = parse_num(
            "max_request_bytes",
            pick(args.max_request_bytes, file.max_request_bytes),
            d.max_request_bytes,
            1024,
            i32::MAX as usize,
        )?;
        let max_connections = parse_num(
            "max_connections",
            pick(args.max_connections, file.max_connections),
            d.max_connections,
            1,
            1_000_000,
        )?;
        let idle_ms = parse_num(
            "connections_max_idle_ms",
            pick(args.connections_max_idle_ms, file.connections_max_idle_ms),
            600_000u64,
            1,
            u64::MAX / 2,
        )?;
        let request_read_timeout_ms = parse_num(
            "request_read_timeout_ms",
            pick(args.request_read_timeout_ms, file.request_read_timeout_ms),
            30_000u64,
            1,
            3_600_000,
        )?;
        let max_inflight_requests = parse_num(
            "max_inflight_requests",
            pick(args.max_inflight_requests, file.max_inflight_requests),
            d.max_inflight_requests,
            1,
            100_000,
        )?;
        let max_partitions = parse_num(
            "max_partitions",
            pick(args.max_partitions, file.max_partitions),
            d.max_partitions,
            0,
            10_000_000,
        )?;
        let message_max_bytes = parse_num(
            "message_max_bytes",
            pick(args.message_max_bytes, file.message_max_bytes),
            d.message_max_bytes,
            64,
            i32::MAX as u32,
        )?;
        let log_segment_bytes = parse_num(
            "log_segment_bytes",
            pick(args.log_segment_bytes, file.log_segment_bytes),
            d.log_segment_bytes,
            14,
            i32::MAX as u64,
        )?;
        let log_fsync = match pick(args.log_fsync, file.log_fsync).as_deref().map(str::trim) {
            None | Some("always") => FsyncPolicy::Always,
            Some("never") => FsyncPolicy::Never,
            Some(other) => return Err(ConfigError::new("log_fsync", other, "expected always or never")),
        };
        let group_initial_rebalance_delay_ms = parse_num(
            "group_initial_rebalance_delay_ms",
            pick(args.group_initial_rebalance_delay_ms, file.group_initial_rebalance_delay_ms),
            d.group_initial_rebalance_delay_ms,
            0,
            3_600_000,
        )?;
        let group_min_session_timeout_ms = parse_num(
            "group_min_session_timeout_ms",
            pick(args.group_min_session_timeout_ms, file.group_min_session_timeout_ms),
            d.group_min_session_timeout_ms,
            1,
            i32::MAX as u64,
        )?;
        let group_max_session_timeout_ms = parse_num(
            "group_max_session_timeout_ms",
            pick(args.group_max_session_timeout_ms, file.group_max_session_timeout_ms),
            d.group_max_session_timeout_ms,
            group_min_session_timeout_ms,
            i32::MAX as u64,
        )?;
        let group_max_size = parse_num("group_max_size", pick(args.group_max_size, file.group_max_size), d.group_max_size, 1, i32::MAX as usize)?;
        let offsets_retention_minutes = parse_num(
            "offsets_retention_minutes",
            pick(args.offsets_retention_minutes, file.offsets_retention_minutes),
            d.offsets_retention_minutes,
            1,
            u64::from(u32::MAX),
        )?;

        let producer_id_expiration_ms = parse_num("producer_id_expiration_ms", pick(args.producer_id_expiration_ms, file.producer_id_expiration_ms), d.producer_id_expiration_ms, 1, i64::MAX as u64)?;
        let transactional_id_expiration_ms = parse_num("transactional_id_expiration_ms", pick(args.transactional_id_expiration_ms, file.transactional_id_expiration_ms), d.transactional_id_expiration_ms, 1, i64::MAX as u64)?;
        let transaction_max_timeout_ms = parse_num("transaction_max_timeout_ms", pick(args.transaction_max_timeout_ms, file.transaction_max_timeout_ms), d.transaction_max_timeout_ms, 1, i32::MAX as u64)?;
        let transaction_abort_timed_out_transaction_cleanup_interval_ms = parse_num("transaction_abort_timed_out_transaction_cleanup_interval_ms", pick(args.transaction_abort_timed_out_transaction_cleanup_interval_ms, file.transaction_abort_timed_out_transaction_cleanup_interval_ms), d.transaction_abort_timed_out_transaction_cleanup_interval_ms, 1, 3_600_000)?;
        Ok(NodeConfig {
            data_dir,
            listen,
            advertise_host,
            advertise_port,
            node_id,
            raft_listen,
            voters,
            rack,
            default_replication_factor,
            replica_lag_time_max: Duration::from_millis(replica_lag_time_max_ms),
            partition_quiet_after: Duration::from_millis(partition_quiet_after_ms),
            auto_leader_rebalance_enable,
            leader_imbalance_check_interval: Duration::from_secs(leader_imbalance_check_interval_seconds),
            leader_imbalance_per_broker_percentage,
            log_level,
            auto_create_topics_enable,
            num_partitions,
            max_request_bytes,
            max_connections,
            connections_max_idle: Duration::from_millis(idle_ms),
            request_read_timeout: Duration::from_millis(request_read_timeout_ms),
            max_inflight_requests,
            max_partitions,
            message_max_bytes,
            log_segment_bytes,
            log_fsync,
            group_initial_rebalance_delay_ms,
            group_min_session_timeout_ms,
            group_max_session_timeout_ms,
            group_max_size,
            offsets_retention_minutes,
            producer_id_expiration_ms,
            transactional_id_expiration_ms,
            transaction_max_timeout_ms,
            transaction_abort_timed_out_transaction_cleanup_interval_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> Result<NodeConfig, ConfigError> {
        let cli = Cli::try_parse_from(std::iter::once("runnel").chain(argv.iter().copied()))
            .map_err(|e| ConfigError::new("argv", "", e))?;
        NodeConfig::from_args(cli.into_serve_args())
    }

    #[test]
    fn no_arguments_gives_the_documented_defaults() {
        let c = parse(&[]).expect("defaults are valid");
        assert_eq!(c.listen.to_string(), "127.0.0.1:9092");
        assert_eq!(c.data_dir, PathBuf::from("./runnel-data"));
        assert_eq!(c.node_id, 1);
        assert!(c.auto_create_topics_enable);
        assert_eq!(c.log_fsync, FsyncPolicy::Always);
        assert_eq!((c.advertise_host.as_str(), c.advertise_port), ("127.0.0.1", 9092));
    }

    #[test]
    fn serve_subcommand_takes_the_same_flags() {
        let c = parse(&["serve", "--listen", "127.0.0.1:19092", "--node-id", "7"]).expect("valid");
        assert_eq!(c.listen.port(), 19092);
        assert_eq!(c.node_id, 7);
    }

    #[test]
    fn yaml_file_fills_what_flags_leave_out_and_flags_win() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("runnel.yaml");
        std::fs::write(&path, "node_id: 3\nlisten: 127.0.0.1:19093\nauto_create_topics_enable: false\n")
            .expect("write");
        let p = path.to_string_lossy().to_string();
        let c = parse(&["--config", &p, "--node-id", "4"]).expect("valid");
        assert_eq!(c.node_id, 4, "flag wins over file");
        assert_eq!(c.listen.port(), 19093, "file value used");
        assert!(!c.auto_create_topics_enable);
    }

    #[test]
    fn invalid_values_name_the_setting_and_the_value() {
        let e = parse(&["--listen", "nonsense"]).expect_err("invalid");
        assert_eq!(e.setting, "listen");
        assert_eq!(e.value, "nonsense");
        let e = parse(&["--node-id=-5"]).expect_err("invalid");
        assert_eq!(e.setting, "node_id");
        let e = parse(&["--log-fsync", "sometimes"]).expect_err("invalid");
        assert_eq!(e.setting, "log_fsync");
        assert!(e.to_string().contains("sometimes"));
    }

    #[test]
    fn voters_name_each_node_once_with_its_raft_address() {
        let c = parse(&["--node-id", "2", "--raft-listen", "127.0.0.1:19192", "--voters", "1@127.0.0.1:19191, 2@127.0.0.1:19192,3@localhost:19193"])
            .expect("valid");
        assert_eq!(c.raft_listen.map(|a| a.port()), Some(19192));
        let ids: Vec<u64> = c.voters.iter().map(|v| v.node_id).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert_eq!((c.voters[2].host.as_str(), c.voters[2].port), ("localhost", 19193));
        for bad in ["1@127.0.0.1:1,1@127.0.0.1:2", "x@127.0.0.1:1", "1-127.0.0.1:1", "1@127.0.0.1:0", "1@:5"] {
            let e = parse(&["--raft-listen", "127.0.0.1:1", "--voters", bad]).expect_err(bad);
            assert_eq!(e.setting, "voters", "{bad}");
        }
        let e = parse(&["--voters", "1@127.0.0.1:19191"]).expect_err("voters without raft_listen");
        assert_eq!(e.setting, "raft_listen");
        assert!(parse(&[]).expect("defaults").voters.is_empty(), "no voters: single-node");
    }

    #[test]
    fn unknown_yaml_key_is_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("runnel.yaml");
        std::fs::write(&path, "no_such_setting: 1\n").expect("write");
        let p = path.to_string_lossy().to_string();
        let e = parse(&["--config", &p]).expect_err("unknown key");
        assert_eq!(e.setting, "config");
        assert!(e.to_string().contains("no_such_setting"));
    }

    #[test]
    fn every_setting_is_documented() {
        let doc = include_str!("../../docs/configuration.md");
        for (name, default) in SETTINGS {
            assert!(doc.contains(&format!("`{name}`")), "docs/configuration.md lacks {name}");
            assert!(doc.contains(default), "docs/configuration.md lacks default {default} of {name}");
        }
    }
}
