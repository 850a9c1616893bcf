//! The running node: opens the metadata store and the controller, keeps the partition
//! replicas hosted here in step with the cluster metadata, and owns the settings that
//! handlers read. It does not listen on sockets (see `server`) or parse requests.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use tokio::sync::Mutex as AsyncMutex;
use tracing::{info, warn};
use uuid::Uuid;

use crate::cluster::topic_config::LogSettings;
use crate::cluster::{
    same_members, BrokerMeta, ClusterState, Controller, ControllerCommand, ControllerSetup, LeaderReport, PartitionMeta, ReportedGroup, TopicMeta,
};
use crate::config::{join_host_port, parse_host_port, resolve_host, NodeConfig};
use crate::coordinator::group::GroupConfig;
use crate::coordinator::transactions::{PartitionCheck, TransactionCoordinator, TxnConfig, TxnHost};
use crate::coordinator::{CoordinatorConfig, GroupCoordinator};
use crate::log::ControlType;
use crate::log::LogConfig;
use crate::replication::transport::frame::{GroupId, Kind};
use crate::replication::transport::peer::{PeerTransport, TransportLimits};
use crate::replication::transport::raft::{decode, encode, GroupRouter};
use crate::replication::{GroupMembers, MarkerRequest, PartitionReplica, PartitionRequest, ReplicaConfig};
use crate::store::MetadataStore;

/// A partition's identity on this node.
pub type PartitionKey = (Uuid, i32);

/// Errors while starting or running the node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot listen for other nodes on {addr}: {source}")]
    RaftListen { addr: SocketAddr, source: std::io::Error },
    #[error("data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("metadata store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("controller: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("group coordinator: {0}")]
    Coordinator(#[from] crate::coordinator::CoordinatorError),
    #[error("partition {topic}-{partition}: {source}")]
    Partition { topic: String, partition: i32, source: crate::replication::ReplicationError },
}

pub struct Node {
    pub config: NodeConfig,
    pub cluster_id: String,
    /// The transport to other nodes and the groups it serves here (idle in single-node mode).
    members: GroupMembers,
    pub controller: Controller,
    pub coordinator: Arc<GroupCoordinator>,
    pub transactions: Arc<TransactionCoordinator>,
    replicas: RwLock<HashMap<PartitionKey, Arc<PartitionReplica>>>,
    /// Serialises reconciliation so two callers never open the same partition twice.
    reconcile_lock: AsyncMutex<()>,
    /// Partitions whose raft membership this node (as their leader) is changing now.
    moving: std::sync::Mutex<HashSet<PartitionKey>>,
    /// Broker-level settings that override Kafka's topic defaults (by Kafka's broker names).
    pub broker_overrides: BTreeMap<&'static str, String>,
    /// The unused part of the producer id block this node holds: `[next, end)`.
    producer_ids: AsyncMutex<(i64, i64)>,
    /// Most partitions hosted here (`max_partitions`, or derived from the open-file limit).
    pub partition_capacity: usize,
    /// Held while a topic creation checks the capacity and proposes, so that concurrent
    /// creations cannot both pass the check.
    pub topic_creation: AsyncMutex<()>,
    /// Whether clients are served: false while the node is cut off from a majority of the
    /// controller voters (`watch_cluster_contact`). Always true on a single node.
    serving_clients: tokio::sync::watch::Sender<bool>,
}

/// Descriptors kept back for RocksDB, logs and the listener.
const RESERVED_FILES: usize = 256;

/// Log files (segments' four files, partitions' `raft-applied`) a node keeps open with an
/// open-file limit of `limit`: half of what is left after the reserve, so that
/// connections (one descriptor each) keep the other half. Files beyond it are closed
/// while not in use (`log::open_files`), so descriptors no longer bound the partitions.
pub fn log_files_for_file_limit(limit: u64) -> usize {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    (limit.saturating_sub(RESERVED_FILES) / 2).max(16)
}

/// Partitions a node hosts when `max_partitions` is 0. An idle partition costs memory
/// (its raft group, caches) and no descriptor, so this bounds memory.
pub const DEFAULT_PARTITION_CAPACITY: usize = 50_000;

/// What one node asks the transaction coordinator on another (`Kind::Forward` on the
/// coordinator group).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum CoordinatorRequest {
    /// KIP-890 part 1, from a partition's leader: may this producer's transactional batch
    /// be written to the partition? Answer: `Result<PartitionCheck, String>`, an error when
    /// the node asked does not coordinate transactions (any more).
    VerifyTxnPartition { producer_id: i64, epoch: i16, topic: String, partition: i32 },
}

/// How long a partition leader waits for the transaction coordinator on another node to
/// verify a transactional batch.
const TXN_VERIFY_TIMEOUT: Duration = Duration::from_secs(2);

/// The coordinator group's end of the transport: raft RPCs, and requests from other nodes
/// for the transaction coordinator.
struct CoordinatorInbound {
    raft: Arc<dyn crate::replication::transport::raft::InboundGroup>,
    node: Weak<Node>,
}

impl crate::replication::transport::raft::InboundGroup for CoordinatorInbound {
    fn handle(&self, kind: Kind, body: bytes::Bytes) -> futures::future::BoxFuture<'static, Result<bytes::Bytes, String>> {
        if kind != Kind::Forward {
            return self.raft.handle(kind, body);
        }
        let node = self.node.clone();
        Box::pin(async move {
            let node = node.upgrade().ok_or("the node is stopping")?;
            let answer = match decode::<CoordinatorRequest>("coordinator request", &body)? {
                CoordinatorRequest::VerifyTxnPartition { producer_id, epoch, topic, partition } => node
                    .transactions
                    .check_partition(producer_id, epoch, &topic, partition)
                    .ok_or_else(|| format!("node {} does not coordinate transactions", node.config.node_id)),
            };
            encode::<Result<PartitionCheck, String>>(&answer)
        })
    }
}

/// The node as the transaction coordinator sees it: producer ids from the controller,
/// markers appended to the partitions hosted here.
struct NodeTxnHost(Weak<Node>);

impl TxnHost for NodeTxnHost {
    fn new_producer_id(&self) -> futures::future::BoxFuture<'_, Result<i64, String>> {
        Box::pin(async move {
            let node = self.0.upgrade().ok_or("the node is stopping")?;
            node.new_producer_id().await.map_err(|e| e.to_string())
        })
    }

    fn write_markers(
        &self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        partitions: Vec<(String, i32)>,
    ) -> futures::future::BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let node = self.0.upgrade().ok_or("the node is stopping")?;
            let state = node.cluster();
            let mut writes = Vec::with_capacity(partitions.len());
            for (topic, partition) in partitions {
                // A topic deleted during the transaction has nothing left to mark.
                let Some(meta) = state.topics.get(&topic).cloned() else { continue };
                let marker = MarkerRequest { producer_id, epoch, commit, coordinator_epoch: 0 };
                let node = node.clone();
                writes.push(async move { node.write_marker_anywhere(&meta, partition, marker).await });
            }
            for r in futures::future::join_all(writes).await {
                r?;
            }
            Ok(())
        })
    }
}

/// Producer ids a node takes from the controller at a time.
const PRODUCER_ID_BLOCK: i64 = 1000;

fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join("partitions").join(format!("{topic}-{partition}"))
}

const TOPIC_ID_FILE: &str = "topic-id";

fn load_or_create_cluster_id(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join("cluster-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Ok(_) | Err(_) => {
            // Kafka cluster ids are 22-character URL-safe base64 of a UUID.
            let id = base64_url(Uuid::new_v4().as_bytes());
            let tmp = data_dir.join("cluster-id.tmp");
            std::fs::write(&tmp, &id)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            Ok(id)
        }
    }
}

fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    }
    out
}

impl Node {
    /// Opens storage and the controller, and opens every partition assigned to this node.
    pub async fn start(config: NodeConfig) -> Result<Arc<Node>, NodeError> {
        let data_dir = config.data_dir.clone();
        let dd = |source| NodeError::DataDir { path: data_dir.clone(), source };
        std::fs::create_dir_all(data_dir.join("partitions")).map_err(dd)?;
        let local_cluster_id = load_or_create_cluster_id(&data_dir).map_err(dd)?;
        let store = Arc::new(MetadataStore::open(&data_dir.join("meta"))?);
        let me = config.node_id as u64;
        let members = match config.raft_listen {
            None => GroupMembers::single_node(me),
            Some(listen) => {
                let router = Arc::new(GroupRouter::default());
                let addresses: HashMap<u64, SocketAddr> =
                    config.voters.iter().filter_map(|v| resolve_host(&v.host, v.port).map(|a| (v.node_id, a))).collect();
                let transport = PeerTransport::start(me, listen, addresses, router.clone(), TransportLimits::default())
                    .await
                    .map_err(|source| NodeError::RaftListen { addr: listen, source })?;
                info!(raft_listen = %transport.local_addr(), "listening for other nodes");
                GroupMembers { voters: config.voters.iter().map(|v| v.node_id).collect(), transport, router }
            }
        };
        let raft_endpoint = match (config.voters.iter().find(|v| v.node_id == me), config.raft_listen) {
            (Some(v), _) => join_host_port(&v.host, v.port),
            (None, Some(_)) => members.transport.local_addr().to_string(),
            (None, None) => String::new(),
        };
        let broker = BrokerMeta {
            node_id: me,
            host: config.advertise_host.clone(),
            port: config.advertise_port,
            rack: config.rack.clone(),
            raft_endpoint,
            fenced: false,
        };
        let setup = ControllerSetup { me: broker, members: members.clone(), proposed_cluster_id: local_cluster_id.clone() };
        let controller = Controller::start(setup, store.clone()).await?;
        let cluster_id = controller.state().cluster_id.clone().unwrap_or(local_cluster_id);
        let coordinator_config = CoordinatorConfig {
            offsets_retention_ms: (config.offsets_retention_minutes as i64).saturating_mul(60_000),
            group: GroupConfig {
                initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms as i64,
                max_size: config.group_max_size,
                min_session_timeout_ms: config.group_min_session_timeout_ms as i64,
                max_session_timeout_ms: config.group_max_session_timeout_ms as i64,
                ..GroupConfig::default()
            },
            ..CoordinatorConfig::default()
        };
        let coordinator = GroupCoordinator::start(me, store.clone(), coordinator_config, members.clone()).await?;
        let mut broker_overrides = BTreeMap::new();
        let defaults = NodeConfig::default();
        if config.message_max_bytes != defaults.message_max_bytes {
            broker_overrides.insert("message.max.bytes", config.message_max_bytes.to_string());
        }
        if config.log_segment_bytes != defaults.log_segment_bytes {
            broker_overrides.insert("log.segment.bytes", config.log_segment_bytes.to_string());
        }
        let txn_config = TxnConfig {
            max_timeout_ms: i32::try_from(config.transaction_max_timeout_ms).unwrap_or(i32::MAX),
            id_expiration_ms: i64::try_from(config.transactional_id_expiration_ms).unwrap_or(i64::MAX),
            cleanup_interval_ms: config.transaction_abort_timed_out_transaction_cleanup_interval_ms,
        };
        let stored_txns = crate::coordinator::state::read_transactions(&store)?;
        let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((1024, 1024));
        let open_log_files = log_files_for_file_limit(soft);
        crate::log::open_files::Budget::global().set_limit(open_log_files);
        let partition_capacity = match config.max_partitions {
            0 => DEFAULT_PARTITION_CAPACITY,
            n => n,
        };
        info!(partition_capacity, open_log_files, "partitions this node may host, and log files it keeps open");
        let node = Arc::new_cyclic(|weak: &Weak<Node>| Node {
            transactions: TransactionCoordinator::new(
                coordinator.clone(),
                store.clone(),
                Arc::new(NodeTxnHost(weak.clone())),
                txn_config,
                stored_txns,
            ),
            config,
            cluster_id,
            members,
            controller,
            coordinator,
            replicas: RwLock::new(HashMap::new()),
            reconcile_lock: AsyncMutex::new(()),
            moving: std::sync::Mutex::new(HashSet::new()),
            broker_overrides,
            producer_ids: AsyncMutex::new((0, 0)),
            partition_capacity,
            topic_creation: AsyncMutex::new(()),
            serving_clients: tokio::sync::watch::Sender::new(true),
        });
        node.members.router.register(
            GroupId::Coordinator,
            Arc::new(CoordinatorInbound { raft: node.coordinator.raft_inbound(), node: Arc::downgrade(&node) }),
        );
        node.reconcile().await?;
        remove_orphan_partition_dirs(&node.config.data_dir, &node.controller.state());
        node.transactions.start_timer();
        node.update_peer_addresses();
        // Keep replicas and peer addresses in step with metadata changes made by any node.
        let weak = Arc::downgrade(&node);
        let mut rx = node.controller.subscribe();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let Some(node) = weak.upgrade() else { break };
                node.update_peer_addresses();
                if let Err(e) = node.reconcile().await {
                    warn!(error = %e, "reconciling partitions failed");
                }
            }
        });
        if !node.config.partition_quiet_after.is_zero() {
            tokio::spawn(quiet_groups(Arc::downgrade(&node)));
        }
        if node.is_clustered() {
            node.members.transport.start_pings(PING_INTERVAL);
            tokio::spawn(watch_cluster_contact(Arc::downgrade(&node)));
            tokio::spawn(follow_voters(Arc::downgrade(&node)));
            tokio::spawn(report_leaders(Arc::downgrade(&node)));
            if node.config.auto_leader_rebalance_enable {
                tokio::spawn(rebalance_leaders(Arc::downgrade(&node)));
            }
            node.prefetch_producer_ids().await;
        }
        Ok(node)
    }

    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    /// Whether other nodes may exist (voters were configured).
    pub fn is_clustered(&self) -> bool {
        !self.members.voters.is_empty()
    }

    /// Follows whether this node serves clients (see `watch_cluster_contact`).
    pub fn serving_clients(&self) -> tokio::sync::watch::Receiver<bool> {
        self.serving_clients.subscribe()
    }

    /// Points the transport at every registered node's raft endpoint (voters excepted).
    fn update_peer_addresses(&self) {
        if !self.is_clustered() {
            return;
        }
        for b in self.cluster().brokers.values() {
            // A voter's address comes from this node's own `voters` setting, which wins over
            // what the voter registered (so each node may reach a peer by its own route).
            let configured = self.config.voters.iter().any(|v| v.node_id == b.node_id);
            if b.node_id == self.config.node_id as u64 || b.raft_endpoint.is_empty() || configured {
                continue;
            }
            let resolved = parse_host_port("raft_endpoint", &b.raft_endpoint).ok().and_then(|(h, p)| resolve_host(&h, p));
            match resolved {
                Some(addr) => self.members.transport.set_address(b.node_id, addr),
                None => warn!(node = b.node_id, endpoint = %b.raft_endpoint, "cannot resolve a node's raft endpoint"),
            }
        }
    }

    /// The leader of a partition and its epoch: from the local replica when there is one,
    /// else (or when the controller heard of a later epoch) as the leader last reported it.
    pub fn partition_leader(&self, topic: &TopicMeta, p: &PartitionMeta) -> Option<(u64, i32)> {
        let me = self.config.node_id as u64;
        // A local replica that thinks it leads but may not serve (cut off from a quorum, or
        // not yet caught up in its term) is no leader to send clients to.
        let local = self
            .replica(topic.id, p.index)
            .and_then(|r| r.leader().filter(|l| *l != me || r.is_leader()).map(|l| (l, r.leader_epoch())));
        let reported = p.leader.map(|l| (l, p.leader_epoch));
        match (local, reported) {
            (Some(l), Some(r)) if r.1 > l.1 => Some(r),
            (Some(l), _) => Some(l),
            (None, r) => r.filter(|(l, _)| *l != me),
        }
    }

    /// In-sync replicas of a partition: the leader's own view here, else as last reported.
    pub fn in_sync_replicas(&self, topic: &TopicMeta, p: &PartitionMeta) -> Vec<u64> {
        if let Some(r) = self.replica(topic.id, p.index).filter(|r| r.is_leader()) {
            return r.in_sync_replicas(self.config.replica_lag_time_max);
        }
        if p.isr.is_empty() {
            p.replicas.clone()
        } else {
            p.isr.clone()
        }
    }

    /// Writes a COMMIT or ABORT marker on a partition through its leader, here or on the
    /// node that leads it, retrying across leader changes for up to `MARKER_WAIT`.
    async fn write_marker_anywhere(&self, topic: &TopicMeta, partition: i32, marker: MarkerRequest) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + MARKER_WAIT;
        let kind = if marker.commit { ControlType::Commit } else { ControlType::Abort };
        loop {
            let state = self.cluster();
            let p = state.topics.get(&topic.name).and_then(|t| t.partition(partition));
            let leader = p.and_then(|p| self.partition_leader(topic, p)).map(|(l, _)| l);
            let attempt = match (leader, self.replica(topic.id, partition)) {
                (Some(l), Some(r)) if l == self.config.node_id as u64 => {
                    r.write_marker(marker.producer_id, marker.epoch, kind, marker.coordinator_epoch).await.map(|_| ()).map_err(|e| e.to_string())
                }
                (Some(l), _) => {
                    let group = GroupId::Partition { topic: topic.id, partition };
                    match encode(&PartitionRequest::Marker(marker.clone())) {
                        Ok(body) => match self.members.transport.request(l, Kind::Forward, group, body, MARKER_WAIT).await {
                            Ok(reply) => decode::<Result<i64, String>>("marker answer", &reply).and_then(|r| r).map(|_| ()),
                            Err(e) => Err(e.to_string()),
                        },
                        Err(e) => Err(e),
                    }
                }
                (None, _) => Err("no leader".to_string()),
            };
            match attempt {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(format!("{}-{partition}: {e}", topic.name)),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// A partition's preferred replica (its first), when it can take over leadership: its
    /// node is registered and not fenced, and it is in sync.
    pub fn preferred_in_sync(&self, topic: &TopicMeta, p: &PartitionMeta) -> Option<u64> {
        let preferred = *p.replicas.first()?;
        let live = self.cluster().brokers.get(&preferred).is_some_and(|b| !b.fenced);
        (live && self.in_sync_replicas(topic, p).contains(&preferred)).then_some(preferred)
    }

    /// Asks the leader of a partition (here or elsewhere) to hand its leadership to `to`,
    /// and waits for the hand-over (`PartitionReplica::transfer_leadership`).
    pub async fn transfer_leadership(&self, topic: &TopicMeta, p: &PartitionMeta, to: u64) -> Result<(), String> {
        let leader = self.partition_leader(topic, p).map(|(l, _)| l).ok_or("no leader")?;
        if leader == self.config.node_id as u64 {
            let r = self.replica(topic.id, p.index).ok_or("no replica here")?;
            return r.transfer_leadership(to).await.map_err(|e| e.to_string());
        }
        let group = GroupId::Partition { topic: topic.id, partition: p.index };
        let body = encode(&PartitionRequest::TransferLeadership { to })?;
        let reply = self.members.transport.request(leader, Kind::Forward, group, body, HANDOVER_TIMEOUT).await.map_err(|e| e.to_string())?;
        decode::<Result<(), String>>("hand-over answer", &reply).and_then(|r| r)
    }

    pub fn cluster(&self) -> Arc<ClusterState> {
        self.controller.state()
    }

    pub fn replica(&self, topic_id: Uuid, partition: i32) -> Option<Arc<PartitionReplica>> {
        self.replicas.read().unwrap_or_else(|p| p.into_inner()).get(&(topic_id, partition)).cloned()
    }

    /// KIP-890 part 1: whether the transaction coordinator, here or on the node leading the
    /// coordinator group, has `partition` in the producer's open transaction. An error when
    /// no coordinator could answer (none elected, loading, unreachable).
    pub async fn check_txn_partition(&self, producer_id: i64, epoch: i16, topic: &str, partition: i32) -> Result<PartitionCheck, String> {
        if let Some(check) = self.transactions.check_partition(producer_id, epoch, topic, partition) {
            return Ok(check);
        }
        let leader = match self.coordinator.leader() {
            Some((l, _)) if l != self.config.node_id as u64 => l,
            Some(_) => return Err("the transaction coordinator is loading".into()),
            None => return Err("no transaction coordinator is elected".into()),
        };
        let request = CoordinatorRequest::VerifyTxnPartition { producer_id, epoch, topic: topic.to_string(), partition };
        let reply = self
            .members
            .transport
            .request(leader, Kind::Forward, GroupId::Coordinator, encode(&request)?, TXN_VERIFY_TIMEOUT)
            .await
            .map_err(|e| format!("transaction coordinator on node {leader}: {e}"))?;
        decode::<Result<PartitionCheck, String>>("verification answer", &reply).and_then(|r| r)
    }

    /// A producer id never handed out before, from this node's block (a new block is
    /// allocated through the controller when it runs out).
    pub async fn new_producer_id(&self) -> Result<i64, crate::cluster::ClusterError> {
        let mut ids = self.producer_ids.lock().await;
        if ids.0 >= ids.1 {
            *ids = self.allocate_producer_ids().await?;
        }
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
    }

    /// Takes a block of producer ids at start, so that idempotent producers get ids from
    /// this node even while it is cut off from the controller.
    async fn prefetch_producer_ids(&self) {
        let mut ids = self.producer_ids.lock().await;
        if ids.0 >= ids.1 {
            match self.allocate_producer_ids().await {
                Ok(block) => *ids = block,
                Err(e) => warn!(error = %e, "cannot take a block of producer ids yet"),
            }
        }
    }

    async fn allocate_producer_ids(&self) -> Result<(i64, i64), crate::cluster::ClusterError> {
        let applied = self.controller.propose(ControllerCommand::AllocateProducerIds { count: PRODUCER_ID_BLOCK }).await?;
        let crate::cluster::Applied::ProducerIdsAllocated { first } = applied else {
            return Err(crate::cluster::ClusterError::Unavailable(format!("unexpected controller answer {applied:?}")));
        };
        Ok((first, first + PRODUCER_ID_BLOCK))
    }

    pub fn log_settings(&self, topic: &TopicMeta) -> LogSettings {
        LogSettings::resolve(&topic.configs, &self.broker_overrides)
    }

    /// Opens replicas of partitions assigned here and closes (and deletes) those of topics
    /// that no longer exist or that were moved to other nodes.
    pub async fn reconcile(&self) -> Result<(), NodeError> {
        let _guard = self.reconcile_lock.lock().await;
        let state = self.controller.state();
        let me = self.config.node_id as u64;
        // Close replicas whose topic is gone, or that a finished reassignment took away.
        let gone: Vec<(PartitionKey, Arc<PartitionReplica>)> = {
            let map = self.replicas.read().unwrap_or_else(|p| p.into_inner());
            map.iter()
                .filter(|((id, index), _)| {
                    let p = state.topic_by_id(id).and_then(|t| t.partition(*index));
                    p.is_none_or(|p| !p.hosted_on(me))
                })
                .map(|(k, v)| (*k, v.clone()))
                .collect()
        };
        for (key, replica) in gone {
            self.replicas.write().unwrap_or_else(|p| p.into_inner()).remove(&key);
            replica.shutdown().await;
            let dir = replica.dir().to_path_buf();
            info!(dir = %dir.display(), "deleting a partition replica no longer assigned here");
            if let Err(e) = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir)).await {
                warn!(error = %e, "deleting partition directory failed");
            }
        }
        // Open replicas newly assigned here, a few at a time: a topic of thousands of
        // partitions would otherwise queue thousands of blocking opens (each syncs its new
        // files and directories) at once.
        let disk = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_REPLICA_OPENS));
        let mut opening = tokio::task::JoinSet::new();
        for topic in state.topics.values() {
            for p in &topic.partitions {
                if !p.hosted_on(me) || self.replica(topic.id, p.index).is_some() {
                    continue;
                }
                let dir = partition_dir(&self.config.data_dir, &topic.name, p.index);
                let settings = self.log_settings(topic);
                let rc = ReplicaConfig {
                    node_id: me,
                    topic_id: topic.id,
                    partition: p.index,
                    replicas: p.replicas.clone(),
                    timing: self.members.timing(),
                    transport: self.members.transport.clone(),
                    router: self.members.router.clone(),
                    // Only the first replicas of a new partition start its group; a node
                    // a reassignment adds waits for the leader to add it.
                    may_initialize: p.leader.is_none() && p.replicas.contains(&me) && p.target.is_none() && p.learners.is_empty(),
                    log: LogConfig {
                        segment_bytes: settings.segment_bytes,
                        segment_ms: settings.segment_ms,
                        index_interval_bytes: settings.index_interval_bytes,
                    },
                    fsync: self.config.log_fsync,
                    producer_expiration_ms: i64::try_from(self.config.producer_id_expiration_ms).unwrap_or(i64::MAX),
                    start_quiet: !self.config.partition_quiet_after.is_zero(),
                };
                let (topic_name, topic_id, index) = (topic.name.clone(), topic.id, p.index);
                let disk = disk.clone();
                opening.spawn(async move {
                    let r = open_replica(disk, dir, topic_id, rc, settings).await;
                    (topic_name, topic_id, index, r)
                });
            }
        }
        let mut first_error = None;
        while let Some(joined) = opening.join_next().await {
            let Ok((topic, topic_id, partition, result)) = joined else { continue };
            match result {
                Ok(replica) => {
                    self.replicas.write().unwrap_or_else(|p| p.into_inner()).insert((topic_id, partition), replica);
                }
                Err(source) => {
                    warn!(%topic, partition, error = %source, "cannot open partition");
                    first_error.get_or_insert(NodeError::Partition { topic, partition, source });
                }
            }
        }
        // Topic configs may have changed: refresh write-path settings.
        for topic in state.topics.values() {
            let s = self.log_settings(topic);
            for p in &topic.partitions {
                if let Some(r) = self.replica(topic.id, p.index) {
                    r.update_settings(s.clone());
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// What this node, leading a partition, tells the controller about it: its epoch, ISR,
    /// and the group's voters and learners once a membership change is committed.
    fn leader_report(&self, topic: Uuid, p: &PartitionMeta, r: &PartitionReplica) -> LeaderReport {
        let m = r.membership();
        let (voters, learners) = if m.joint || !m.committed {
            (Vec::new(), Vec::new())
        } else {
            (m.voters.into_iter().collect(), m.learners.into_iter().collect())
        };
        LeaderReport {
            group: ReportedGroup::Partition { topic, partition: p.index },
            leader: self.config.node_id as u64,
            epoch: r.leader_epoch(),
            isr: r.in_sync_replicas(self.config.replica_lag_time_max),
            voters,
            learners,
        }
    }

    /// Starts moving the raft membership of a partition led here towards the voters the
    /// metadata wants (a reassignment, or its cancellation), unless that is under way.
    fn move_replicas(self: Arc<Self>, topic: Uuid, partition: i32) {
        if !self.moving.lock().unwrap_or_else(|p| p.into_inner()).insert((topic, partition)) {
            return;
        }
        tokio::spawn(async move {
            if let Err(e) = self.move_replicas_step(topic, partition).await {
                info!(%topic, partition, error = %e, "moving partition replicas; will retry");
            }
            self.moving.lock().unwrap_or_else(|p| p.into_inner()).remove(&(topic, partition));
        });
    }

    /// One pass of a membership change, as KIP-455 does it with raft: new replicas join as
    /// learners (and are reported, so they keep their replica whatever happens to the
    /// reassignment), catch up, then become voters in one joint-consensus change that
    /// drops the replicas left out; learners nobody wants are removed. The report loop
    /// tells the controller the result, which ends the reassignment.
    async fn move_replicas_step(&self, topic: Uuid, partition: i32) -> Result<(), String> {
        let desired_now = |node: &Node| -> Option<BTreeSet<u64>> {
            let state = node.cluster();
            let p = state.topic_by_id(&topic)?.partition(partition)?;
            Some(p.desired_voters().iter().copied().collect())
        };
        let Some(desired) = desired_now(self) else { return Ok(()) };
        let Some(r) = self.replica(topic, partition).filter(|r| r.is_leader()) else { return Ok(()) };
        let m = r.membership();
        if m.joint {
            // A change a previous leader left half done: finish it towards what is wanted now.
            return r.change_voters(&desired).await.map_err(|e| e.to_string());
        }
        let missing: BTreeSet<u64> = desired.iter().filter(|d| !m.voters.contains(d) && !m.learners.contains(d)).copied().collect();
        if !missing.is_empty() {
            info!(%topic, partition, nodes = ?missing, "adding replicas as learners");
            r.add_learners(&missing).await.map_err(|e| e.to_string())?;
            let state = self.cluster();
            let Some(p) = state.topic_by_id(&topic).and_then(|t| t.partition(partition)) else { return Ok(()) };
            let report = self.leader_report(topic, p, &r);
            self.controller.propose(ControllerCommand::ReportLeaders(vec![report])).await.map_err(|e| e.to_string())?;
        }
        if m.voters != desired {
            let joining: BTreeSet<u64> = desired.difference(&m.voters).copied().collect();
            if !r.wait_caught_up(&joining, CATCH_UP_WAIT).await {
                return Err(format!("replicas {joining:?} not caught up yet"));
            }
            // Tell the controller first, which refuses if the target changed meanwhile; a
            // cancel after this reverts the change (`ControllerCommand::BeginVoterChange`).
            let begin = ControllerCommand::BeginVoterChange { topic, partition, voters: desired.iter().copied().collect() };
            match self.controller.propose(begin).await {
                Ok(_) => {}
                Err(crate::cluster::ClusterError::NoReassignmentInProgress(_)) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            }
            info!(%topic, partition, voters = ?desired, "changing the partition's voters");
            r.change_voters(&desired).await.map_err(|e| e.to_string())?;
        }
        let m = r.membership();
        let unwanted: BTreeSet<u64> = m.learners.difference(&desired).copied().collect();
        if !unwanted.is_empty() && r.is_leader() {
            r.remove_learners(&unwanted).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Waits until every partition of `topic` has a known leader, up to `timeout`.
    pub async fn wait_for_leaders(&self, topic: &TopicMeta, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let state = self.cluster();
            let Some(t) = state.topics.get(&topic.name) else { return };
            if t.partitions.iter().all(|p| self.partition_leader(t, p).is_some()) || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for every local partition to have a leader (start-up), up to `timeout`.
    pub async fn wait_for_all_leaders(&self, timeout: Duration) {
        let replicas: Vec<_> = self.replicas.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        let deadline = tokio::time::Instant::now() + timeout;
        for r in replicas {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            r.wait_for_leader(left).await;
        }
    }

    /// First step of a graceful stop, before in-flight requests are waited for: requests
    /// that wait on other clients (JoinGroup, SyncGroup) are answered now.
    pub async fn begin_shutdown(&self) {
        self.coordinator.unload().await;
    }

    /// Stops every replica and the controller; logs are closed cleanly.
    pub async fn shutdown(&self) {
        let replicas: Vec<_> = self.replicas.write().unwrap_or_else(|p| p.into_inner()).drain().map(|(_, r)| r).collect();
        let mut set = tokio::task::JoinSet::new();
        for r in replicas {
            set.spawn(async move { r.shutdown().await });
        }
        while set.join_next().await.is_some() {}
        self.coordinator.shutdown().await;
        self.controller.shutdown().await;
        self.members.transport.shutdown().await;
    }
}

/// How long a forwarded leadership hand-over may take (it waits out a follower lease).
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a transaction marker keeps looking for its partition's leader.
const MARKER_WAIT: Duration = Duration::from_secs(10);
/// How long one pass of a reassignment waits for new replicas to catch up (the next pass
/// waits again; replication goes on meanwhile).
const CATCH_UP_WAIT: Duration = Duration::from_secs(10);
/// Quiet partitions are looked at on every this many rounds, and whenever the metadata or
/// the set of nodes heard from changed (what their reports depend on).
const QUIET_REPORT_EVERY: u64 = 40;
/// How often leaders compare what the controller knows of them with the truth.
const LEADER_REPORT_INTERVAL: Duration = Duration::from_millis(250);

/// Tells the controller which groups this node leads, with their epochs and in-sync
/// replicas, whenever that differs from what the metadata says, so that Metadata and
/// FindCoordinator answer truly on every node.
async fn report_leaders(node: Weak<Node>) {
    let mut round: u64 = 0;
    let mut last_seen: Option<(Arc<ClusterState>, BTreeSet<u64>)> = None;
    loop {
        tokio::time::sleep(LEADER_REPORT_INTERVAL).await;
        round += 1;
        let Some(node) = node.upgrade() else { return };
        let me = node.config.node_id as u64;
        let state = node.cluster();
        let mut reports = Vec::new();
        // A quiet leader's report changes only with the metadata or with which nodes answer
        // (its ISR): quiet replicas are looked at when either changed, and now and then.
        let silent = node.members.transport.silent_peers(node.config.replica_lag_time_max);
        let unchanged = last_seen.as_ref().is_some_and(|(s, q)| Arc::ptr_eq(s, &state) && *q == silent);
        let with_quiet = !unchanged || round % QUIET_REPORT_EVERY == 0;
        last_seen = Some((state.clone(), silent));
        let replicas: Vec<(PartitionKey, Arc<PartitionReplica>)> = node
            .replicas
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, r)| with_quiet || !r.is_quiet())
            .map(|(k, r)| (*k, r.clone()))
            .collect();
        for ((topic_id, index), r) in replicas {
            if !r.is_leader() {
                continue;
            }
            let Some(topic) = state.topic_by_id(&topic_id) else { continue };
            let Some(p) = topic.partition(index) else { continue };
            {
                let report = node.leader_report(topic.id, p, &r);
                let (voters, learners) = (&report.voters, &report.learners);
                // A target the voters already are (a cancel that turned into a move back
                // before anything moved) is ended by a report too.
                let target_reached = p.target.as_deref().is_some_and(|t| same_members(t, voters));
                let members_differ = !voters.is_empty() && (!same_members(voters, &p.replicas) || *learners != p.learners || target_reached);
                if p.leader != Some(me) || p.leader_epoch != report.epoch || p.isr != report.isr || members_differ {
                    reports.push(report);
                }
                if membership_differs(&r.membership(), p.desired_voters()) {
                    node.clone().move_replicas(topic.id, p.index);
                }
            }
        }
        if node.coordinator.is_active() {
            if let Some((leader, epoch)) = node.coordinator.leader().filter(|(l, _)| *l == me) {
                if state.coordinator != Some((leader, epoch)) {
                    reports.push(LeaderReport { group: ReportedGroup::Coordinator, leader, epoch, isr: Vec::new(), voters: Vec::new(), learners: Vec::new() });
                }
            }
        }
        if !reports.is_empty() {
            if let Err(e) = node.controller.propose(ControllerCommand::ReportLeaders(reports)).await {
                tracing::debug!(error = %e, "cannot report leadership to the controller");
            }
        }
    }
}

/// Whether a partition group's membership is not yet `desired` voters and nothing else.
fn membership_differs(m: &crate::replication::GroupMembership, desired: &[u64]) -> bool {
    m.joint || !m.learners.is_empty() || m.voters.len() != desired.len() || !desired.iter().all(|d| m.voters.contains(d))
}

/// How often each node pings every other (`PeerTransport::start_pings`): quiet partition
/// groups learn from these pings whether their leader's node is up.
const PING_INTERVAL: Duration = Duration::from_millis(300);
/// A voter not heard from for this long does not count towards reaching the cluster.
const CONTACT_WINDOW: Duration = Duration::from_secs(1);
/// How long a node may go without reaching a majority of the controller voters before it
/// stops serving clients: as long as the controller waits before fencing a silent node
/// (Kafka's broker.session.timeout.ms, 9 s), so that a node busy for a few seconds keeps
/// its clients.
const CUT_OFF_AFTER: Duration = Duration::from_secs(9);
/// How often contact with the controller voters is looked at.
const CONTACT_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// A node cut off from a majority of the controller voters can neither commit writes nor
/// learn who leads now, yet clients that reach it would keep asking it (librdkafka takes
/// its metadata from a broker it is connected to, and this one would answer "no leader"
/// for as long as the cut lasts). After `CUT_OFF_AFTER` without a majority it closes its
/// client connections and refuses new ones, so that clients go to the nodes that can
/// serve them, as they do when a broker is down; it serves again as soon as it reaches a
/// majority. Raft traffic between nodes is not affected.
async fn watch_cluster_contact(node: Weak<Node>) {
    let mut last_contact = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(CONTACT_CHECK_INTERVAL).await;
        let Some(node) = node.upgrade() else { return };
        let me = node.config.node_id as u64;
        let transport = &node.members.transport;
        if crate::replication::reaches_majority(&node.controller.voters(), me, |v| transport.heard_within(v, CONTACT_WINDOW)) {
            last_contact = tokio::time::Instant::now();
        }
        let serving = last_contact.elapsed() < CUT_OFF_AFTER;
        if node.serving_clients.send_if_modified(|s| std::mem::replace(s, serving) != serving) {
            metrics::gauge!("runnel_cluster_cut_off").set(if serving { 0.0 } else { 1.0 });
            if serving {
                info!("in contact with a majority of the controller voters again; serving clients");
            } else {
                warn!(
                    after_ms = CUT_OFF_AFTER.as_millis() as u64,
                    "cut off from a majority of the controller voters; closing client connections and refusing new ones until contact returns"
                );
            }
        }
    }
}

/// How often the coordinator group's voters are compared with the controller's.
const VOTER_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The coordinator group runs on the controller voters. On the node leading it, whenever
/// the controller's voter set changed (AddRaftVoter, RemoveRaftVoter) and is settled, the
/// coordinator group's voters are made the same, so that groups, offsets and transactions
/// survive the loss of the nodes that were voters first.
async fn follow_voters(node: Weak<Node>) {
    loop {
        tokio::time::sleep(VOTER_CHECK_INTERVAL).await;
        let Some(node) = node.upgrade() else { return };
        if !node.coordinator.leads_group() || !node.controller.voters_settled() {
            continue;
        }
        let wanted: BTreeSet<u64> = node.controller.voters().into_iter().collect();
        if wanted.is_empty() || wanted == node.coordinator.voters() {
            continue;
        }
        info!(voters = ?wanted, "the coordinator group follows the controller voters");
        if let Err(e) = node.coordinator.set_voters(&wanted).await {
            warn!(error = %e, "cannot change the coordinator group's voters yet");
        }
    }
}

/// How often replicas are looked at for going quiet or waking.
const QUIET_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// Idle partition groups go quiet (`PartitionReplica::try_quiesce`): no heartbeats and no
/// election timers, so that thousands of idle partitions cost next to nothing; quiet
/// followers whose leader's node stopped answering wake and elect.
async fn quiet_groups(node: Weak<Node>) {
    loop {
        tokio::time::sleep(QUIET_CHECK_INTERVAL).await;
        let Some(node) = node.upgrade() else { return };
        let idle = node.config.partition_quiet_after;
        let silent = node.members.transport.silent_peers(crate::replication::LEADER_SILENT_AFTER);
        let now_ms = crate::clock::now_ms();
        // Looked at in place: with thousands of quiet replicas, cloning every handle each
        // round would cost more than the checks.
        let mut quiescing: Vec<Arc<PartitionReplica>> = Vec::new();
        for r in node.replicas.read().unwrap_or_else(|p| p.into_inner()).values() {
            if r.is_quiet() {
                r.wake_if_leader_gone(&silent, now_ms);
            } else if r.may_quiesce(idle, now_ms) {
                quiescing.push(r.clone());
            }
        }
        for r in quiescing {
            tokio::spawn(async move { r.try_quiesce(idle).await });
        }
    }
}

/// Leader hand-overs the automatic rebalance runs at once.
const REBALANCE_CONCURRENCY: usize = 8;

/// Kafka's auto.leader.rebalance: on the node leading the controller group, every
/// `leader_imbalance_check_interval`, hands leaderships back to preferred replicas that are
/// live and in sync, for nodes leading too few of the partitions they prefer
/// (`placement::imbalanced`).
async fn rebalance_leaders(node: Weak<Node>) {
    let Some(interval) = node.upgrade().map(|n| n.config.leader_imbalance_check_interval) else { return };
    loop {
        tokio::time::sleep(interval).await;
        let Some(node) = node.upgrade() else { return };
        let me = node.config.node_id as u64;
        if node.controller.leader() != Some(me) {
            continue;
        }
        let state = node.cluster();
        let partitions: Vec<(&TopicMeta, &PartitionMeta)> =
            state.topics.values().flat_map(|t| t.partitions.iter().filter(|p| !p.replicas.is_empty()).map(move |p| (t, p))).collect();
        let views: Vec<(u64, Option<u64>)> =
            partitions.iter().map(|(t, p)| (p.replicas[0], node.partition_leader(t, p).map(|(l, _)| l))).collect();
        let moves: Vec<(&TopicMeta, &PartitionMeta)> = crate::cluster::placement::imbalanced(&views, node.config.leader_imbalance_per_broker_percentage)
            .into_iter()
            .map(|i| partitions[i])
            .filter(|(t, p)| node.preferred_in_sync(t, p).is_some())
            .collect();
        if moves.is_empty() {
            continue;
        }
        info!(partitions = moves.len(), "handing leadership back to preferred replicas");
        use futures::StreamExt;
        let node = &node;
        futures::stream::iter(moves)
            .for_each_concurrent(REBALANCE_CONCURRENCY, |(t, p)| async move {
                if let Err(e) = node.transfer_leadership(t, p, p.replicas[0]).await {
                    info!(topic = %t.name, partition = p.index, error = %e, "preferred leader did not take over");
                }
            })
            .await;
    }
}

/// Replicas whose files are being opened at once (`Node::reconcile`): enough to keep the
/// disk busy, few enough that the blocking pool and the runtime stay responsive.
const CONCURRENT_REPLICA_OPENS: usize = 16;

/// Prepares a replica's directory and opens its files on the blocking pool, holding one of
/// `disk`'s permits meanwhile, then starts its raft group.
async fn open_replica(
    disk: Arc<tokio::sync::Semaphore>,
    dir: PathBuf,
    topic_id: Uuid,
    rc: ReplicaConfig,
    settings: LogSettings,
) -> Result<Arc<PartitionReplica>, crate::replication::ReplicationError> {
    use crate::replication::ReplicationError;
    let permit = disk.acquire_owned().await.map_err(|e| ReplicationError::Stopped(e.to_string()))?;
    let log_config = rc.log;
    let opened = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            prepare_dir(&dir, topic_id)?;
            PartitionReplica::open_files(&dir, log_config)
        })
        .await
        .map_err(|e| ReplicationError::Stopped(e.to_string()))??
    };
    drop(permit);
    PartitionReplica::start(&dir, opened, rc, settings).await
}

/// Makes sure `dir` belongs to `topic_id`: a directory left by an older topic of the same
/// name (deleted while this node was down) is removed first.
fn prepare_dir(dir: &Path, topic_id: Uuid) -> std::io::Result<()> {
    let id_file = dir.join(TOPIC_ID_FILE);
    match std::fs::read_to_string(&id_file) {
        Ok(existing) if existing.trim() == topic_id.to_string() => return Ok(()),
        Ok(_) => {
            warn!(dir = %dir.display(), "partition directory belongs to an older topic; removing it");
            std::fs::remove_dir_all(dir)?;
        }
        Err(_) => {}
    }
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{TOPIC_ID_FILE}.tmp"));
    std::fs::write(&tmp, topic_id.to_string())?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &id_file)?;
    std::fs::File::open(dir)?.sync_all()?;
    // The new directory's own entry must survive a power loss too.
    match dir.parent() {
        Some(parent) => std::fs::File::open(parent)?.sync_all(),
        None => Ok(()),
    }
}

/// Deletes partition directories of topics that no longer exist (deleted while down).
fn remove_orphan_partition_dirs(data_dir: &Path, state: &ClusterState) {
    let Ok(entries) = std::fs::read_dir(data_dir.join("partitions")) else { return };
    for entry in entries.flatten() {
        let dir = entry.path();
        let id = std::fs::read_to_string(dir.join(TOPIC_ID_FILE)).ok().and_then(|s| Uuid::parse_str(s.trim()).ok());
        let keep = id.is_some_and(|id| state.topic_by_id(&id).is_some());
        if !keep {
            info!(dir = %dir.display(), "removing partition directory of a deleted topic");
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                warn!(dir = %dir.display(), error = %e, "cannot remove");
            }
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn log_files_leave_half_the_descriptors_to_connections() {
        assert_eq!(super::log_files_for_file_limit(20_000), (20_000 - 256) / 2);
        assert_eq!(super::log_files_for_file_limit(1_024), 384);
        assert_eq!(super::log_files_for_file_limit(100), 16);
        assert_eq!(super::log_files_for_file_limit(u64::MAX), (usize::MAX - 256) / 2);
    }

    use super::*;

    #[test]
    fn cluster_ids_are_22_url_safe_characters() {
        let id = base64_url(Uuid::new_v4().as_bytes());
        assert_eq!(id.len(), 22);
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }
}
