//! `PartitionReplica`: one partition's raft group and log, as the handlers see it:
//! propose a batch, wait for its commit, read committed data, answer offset queries.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::ClientWriteResponse;
use openraft::{BasicNode, Raft, ServerState};
use tokio::sync::{oneshot, watch};

use super::log_store::{PartitionLogStore, PartitionShared, RecentEntries};
use super::membership::{initialize_voters, leads_own_term, serving_leader, watch_serving, GroupTiming};
use super::transport::frame::{GroupId, Kind};
use super::transport::peer::PeerTransport;
use super::transport::raft::{decode, encode, GroupNetwork, GroupRouter, InboundGroup};
use super::raft_state::RaftStateFiles;
use super::tick_gate::{run_gated, TickGate};
use super::state_machine::PartitionStateMachine;
use super::types::{PartitionCommand, PartitionRaft, PartitionReply};
use super::ReplicationError;
use crate::config::FsyncPolicy;
use crate::log::{
    marker_batch, AbortedTxn, Admission, BatchHeader, BatchSequence, ControlType, LogConfig, PartitionLog, ReadSlice, TxnGuard,
};

/// How to open a partition replica.
#[derive(Clone)]
pub struct ReplicaConfig {
    pub node_id: u64,
    pub topic_id: uuid::Uuid,
    pub partition: i32,
    pub log: LogConfig,
    pub fsync: FsyncPolicy,
    /// The assigned replicas, preferred leader first: the group's voters when it is
    /// created for the first time.
    pub replicas: Vec<u64>,
    /// Heartbeats and election timeouts: `GroupTiming::CLUSTER` whenever other nodes may
    /// join the group (a reassignment can add replicas to any partition of a cluster).
    pub timing: GroupTiming,
    /// The transport to the other replicas, and where inbound RPCs find this group.
    pub transport: Arc<PeerTransport>,
    pub router: Arc<GroupRouter>,
    /// False once the group is known to have had a leader: a replica without raft state
    /// (a wiped disk) must then be filled by that leader, never start the group again.
    pub may_initialize: bool,
    /// `producer.id.expiration.ms`: idle producer ids are forgotten after this long.
    pub producer_expiration_ms: i64,
    /// Whether an existing group with other voters starts quiet (`try_quiesce`); false
    /// when groups never go quiet.
    pub start_quiet: bool,
}

/// One partition replica on this node.
pub struct PartitionReplica {
    raft: Raft<PartitionRaft>,
    /// `serving_leader` of the group's metrics, kept by a task, changed only when it flips.
    serving: watch::Receiver<bool>,
    group: GroupId,
    router: Arc<GroupRouter>,
    network: GroupNetwork,
    /// Per follower, when it was last seen caught up with the leader's committed entries.
    caught_up: Mutex<BTreeMap<u64, std::time::Instant>>,
    /// The term this node was last seen leading, and since when (`in_sync_replicas`).
    leading_since: Mutex<Option<(u64, std::time::Instant)>>,
    shared: Arc<PartitionShared>,
    dir: PathBuf,
    /// Settings read on the write path, updated when topic configs change.
    settings: Mutex<crate::cluster::topic_config::LogSettings>,
    /// Held from checking a producer batch's sequence until it is handed to raft, so
    /// that checks and proposals of producer batches happen in the same order.
    producer_gate: tokio::sync::Mutex<()>,
    /// Set while this leader hands its leadership over: it takes no new writes.
    handing_over: std::sync::atomic::AtomicBool,
    transport: Arc<PeerTransport>,
    timing: GroupTiming,
    /// A quiet group: raft's ticker is off here (no heartbeats, no election timer); see
    /// `try_quiesce`.
    quiet: AtomicBool,
    /// Held while `quiet`, raft's ticker and `tick_gate` change (`set_quiet`, `wake`).
    quiet_switch: Mutex<()>,
    /// Shut while quiet, so that raft's tick task sleeps until the group wakes.
    tick_gate: Arc<TickGate>,
    /// Set while a quiesce handshake runs, so that only one does.
    quiescing: AtomicBool,
    /// When this replica last wrote or woke (ms, `clock::now_ms`).
    last_active_ms: AtomicI64,
    /// While quiet: the leader it went quiet under (`NO_LEADER` when unknown).
    quiet_leader: std::sync::atomic::AtomicU64,
    /// When this replica was opened (ms): a quiet follower waits a little after start before
    /// judging its leader gone, so that node pings have been answered.
    opened_ms: i64,
}

/// A proposed batch that has been handed to raft, in proposal order.
pub struct ProposeHandle {
    rx: oneshot::Receiver<Result<ClientWriteResponse<PartitionRaft>, ClientWriteError<u64, BasicNode>>>,
    /// Whether this node is a serving leader: the wait gives up when it turns false.
    serving: watch::Receiver<bool>,
    metrics: watch::Receiver<openraft::RaftMetrics<u64, BasicNode>>,
    /// acks=1: the leader's own append of the batch answers, before the commit.
    local: Option<LocalWait>,
}

/// An acks=1 proposal's wait for the leader's own append (`LocalAppends`).
struct LocalWait {
    appended: oneshot::Receiver<i64>,
    key: (usize, usize),
    shared: Arc<PartitionShared>,
}

impl Drop for LocalWait {
    fn drop(&mut self) {
        // Answered, or given up on: either way nobody waits any more.
        self.shared.local_appends.forget(self.key);
    }
}

/// A partition group's voters and learners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMembership {
    pub voters: BTreeSet<u64>,
    pub learners: BTreeSet<u64>,
    /// Between two voter sets (raft's joint consensus): `voters` is their union.
    pub joint: bool,
    /// Whether the membership is applied (so committed) here, not only appended.
    pub committed: bool,
}

/// What became of a proposed batch.
pub enum Proposal {
    /// Handed to raft; wait on the handle for its commit.
    Proposed(ProposeHandle),
    /// A producer retry of a batch already in the log, not written again.
    Duplicate(BatchSequence),
}

/// How long each replica after the preferred leader waits before creating a partition
/// group that nobody has started.
const INITIALISE_FALLBACK: Duration = Duration::from_secs(3);

/// A transaction marker the transaction coordinator asks a partition's leader to write.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MarkerRequest {
    pub producer_id: i64,
    pub epoch: i16,
    pub commit: bool,
    pub coordinator_epoch: i32,
}

/// What other nodes ask of a partition replica here, besides raft's own RPCs.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum PartitionRequest {
    /// Write a transaction marker (to the leader). Answer: `Result<i64, String>`, the offset.
    Marker(MarkerRequest),
    /// Hand leadership to replica `to` (to the leader; preferred-leader election).
    /// Answer: `Result<(), String>`.
    TransferLeadership { to: u64 },
    /// Stand for election now (from a leader handing over to this replica).
    /// Answer: `Result<(), String>`.
    Campaign,
    /// Go quiet (from the leader of an idle group, whose log ends at `last_index` in
    /// `term`). Answer: `Result<(), String>`, an error when this replica is not there.
    Quiesce { term: u64, last_index: u64 },
}

/// The partition's end of the transport: raft RPCs, markers from the transaction
/// coordinator on another node, and leadership hand-overs.
struct PartitionInbound(std::sync::Weak<PartitionReplica>);

impl InboundGroup for PartitionInbound {
    fn handle(&self, kind: Kind, body: Bytes) -> futures::future::BoxFuture<'static, Result<Bytes, String>> {
        let Some(replica) = self.0.upgrade() else {
            return Box::pin(async { Err("the partition is closing".to_string()) });
        };
        if kind != Kind::Forward {
            // Any raft traffic ends a quiet spell here: the leader writes or heartbeats
            // again, or someone campaigns. The RPC is handled first, so that a follower's
            // election timer restarts from it.
            let answer = InboundGroup::handle(&replica.raft, kind, body);
            return Box::pin(async move {
                let result = answer.await;
                replica.wake();
                result
            });
        }
        Box::pin(async move {
            match decode::<PartitionRequest>("partition request", &body)? {
                PartitionRequest::Quiesce { term, last_index } => {
                    let from = replica.leader();
                    encode(&replica.quiesce_follower(term, last_index, from))
                }
                PartitionRequest::Marker(m) => {
                    let kind = if m.commit { ControlType::Commit } else { ControlType::Abort };
                    let result = replica.write_marker(m.producer_id, m.epoch, kind, m.coordinator_epoch).await.map_err(|e| e.to_string());
                    encode(&result)
                }
                PartitionRequest::TransferLeadership { to } => encode(&replica.transfer_leadership(to).await.map_err(|e| e.to_string())),
                PartitionRequest::Campaign => {
                    replica.wake();
                    let result = replica.raft.trigger().elect().await.map_err(|e| e.to_string());
                    encode(&result)
                }
            }
        })
    }
}

/// A quiet leader serves while a majority of its voters' nodes answered a ping this recently
/// (as `membership::QUORUM_ACK_MAX_MS` for raft's own acknowledgements).
const QUIET_QUORUM_WITHIN: Duration = Duration::from_millis(900);
/// A quiet follower wakes when its leader's node has not answered a ping for this long.
pub const LEADER_SILENT_AFTER: Duration = Duration::from_millis(1_000);
/// `quiet_leader` when the leader is not known.
const NO_LEADER: u64 = u64::MAX;
/// After opening, a quiet follower waits this long before judging its leader gone.
const QUIET_START_GRACE: Duration = Duration::from_millis(1_500);
/// How long a follower may take to answer a quiesce request.
const QUIESCE_WAIT: Duration = Duration::from_secs(1);

/// How long a leadership hand-over waits for the new leader to catch up, and then for it to
/// be elected.
const HANDOVER_CATCH_UP: Duration = Duration::from_secs(5);
const HANDOVER_WAIT: Duration = Duration::from_secs(5);
/// Margin over the followers' lease before the new leader campaigns.
const HANDOVER_MARGIN_MS: u64 = 200;

/// How long a retried batch waits for its in-flight original to be applied.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(30);

fn raft_config(timing: GroupTiming) -> Result<Arc<openraft::Config>, ReplicationError> {
    let config = openraft::Config {
        cluster_name: "runnel-partition".to_string(),
        heartbeat_interval: timing.heartbeat_ms,
        election_timeout_min: timing.election_min_ms,
        election_timeout_max: timing.election_max_ms,
        // The log is the state: never snapshot for compaction; retention purges segments.
        snapshot_policy: openraft::SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: u64::MAX / 2,
        max_payload_entries: 256,
        ..Default::default()
    };
    config.validate().map(Arc::new).map_err(|e| ReplicationError::Raft(e.to_string()))
}

fn map_write_error(e: RaftError<u64, ClientWriteError<u64, BasicNode>>) -> ReplicationError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ReplicationError::NotLeader { leader: f.leader_id },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => ReplicationError::Raft(c.to_string()),
        RaftError::Fatal(f) => ReplicationError::Stopped(f.to_string()),
    }
}

impl ProposeHandle {
    /// Waits until the batch is committed (and, with the default fsync policy, on disk on a
    /// majority), returning the offset the log assigned it.
    /// A producer batch stays pending whatever the answer (see `ProducerStateTable`).
    pub async fn committed(mut self) -> Result<PartitionReply, ReplicationError> {
        // openraft never makes a leader cut off from its followers step down, and its
        // proposals would wait for good: as Kafka answers requests waiting on a partition
        // whose leadership moved, they are answered NOT_LEADER_OR_FOLLOWER once this node
        // stops being a serving leader, so that clients look for the new one. (The batch
        // may still commit if the node gets its quorum back; idempotent producers' retries
        // wait for it as in flight, then are recognised as duplicates.)
        let mut serving = self.serving.clone();
        let lost = async move {
            // Ends when the flag turns false, or the group stops (the sender is dropped).
            let _ = serving.wait_for(|s| !*s).await;
        };
        // acks=1 is answered by the leader's own append and fsync; if that never comes (the
        // entry was not appended here, or the wait was lost), by the commit.
        let appended = self.local.as_mut().map(|l| &mut l.appended);
        let local = async move {
            match appended {
                Some(rx) => match rx.await {
                    Ok(base_offset) => base_offset,
                    Err(_) => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        };
        let result = tokio::select! {
            base_offset = local => return Ok(PartitionReply { base_offset }),
            r = &mut self.rx => r,
            () = lost => {
                let m = self.metrics.borrow();
                return Err(ReplicationError::NotLeader { leader: m.current_leader.filter(|l| *l != m.id) });
            }
        };
        match result {
            Ok(Ok(resp)) => Ok(resp.data),
            Ok(Err(ClientWriteError::ForwardToLeader(f))) => Err(ReplicationError::NotLeader { leader: f.leader_id }),
            Ok(Err(ClientWriteError::ChangeMembershipError(c))) => Err(ReplicationError::Raft(c.to_string())),
            Err(_) => Err(ReplicationError::Stopped("raft dropped the proposal".into())),
        }
    }
}

/// A replica's files, opened and recovered (`PartitionReplica::open_files`), before its
/// raft group starts.
pub struct ReplicaFiles {
    log: PartitionLog,
    files: RaftStateFiles,
}

impl PartitionReplica {
    /// Opens (recovering) the log and raft state in `dir`. Blocks on the disk: call it off
    /// the async runtime's threads.
    pub fn open_files(dir: &Path, config: LogConfig) -> Result<ReplicaFiles, ReplicationError> {
        let log = PartitionLog::open(dir, config, crate::clock::now_ms())?;
        let files = RaftStateFiles::open(dir)?;
        Ok(ReplicaFiles { log, files })
    }

    /// Starts the raft group of a replica whose files `open_files` opened. A group that has
    /// never been initialised is initialised with the configured replicas.
    pub async fn start(
        dir: &Path,
        opened: ReplicaFiles,
        config: ReplicaConfig,
        settings: crate::cluster::topic_config::LogSettings,
    ) -> Result<Arc<PartitionReplica>, ReplicationError> {
        let ReplicaFiles { log, files } = opened;
        let durable = files.load()?;
        let start = log.log_start_offset();
        let (hw_tx, _) = watch::channel(start);
        let shared = Arc::new(PartitionShared {
            log: Mutex::new(log),
            files,
            durable: Mutex::new(durable),
            recent: Mutex::new(RecentEntries::default()),
            high_watermark: hw_tx,
            fsync: config.fsync,
            producers: Mutex::new(Default::default()),
            applied: tokio::sync::Notify::new(),
            producer_expiration_ms: config.producer_expiration_ms,
            local_appends: Default::default(),
        });
        let store = PartitionLogStore::new(shared.clone());
        let sm = PartitionStateMachine::open(shared.clone());
        let timing = config.timing;
        if config.replicas.len() > 1 {
            // openraft checks election timeouts on a tick (1.5 heartbeats), and the replicas
            // of a new partition all create their group within a millisecond of each other
            // (when the controller's CreateTopic is applied), so their ticks would be in
            // phase: after losing a leader, two followers would become candidates on the
            // same tick, split the vote, and do it again round after round. A random delay
            // puts each replica's ticks at its own phase.
            let tick_ms = timing.heartbeat_ms * 3 / 2;
            tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % tick_ms.max(1))).await;
        }
        let group = GroupId::Partition { topic: config.topic_id, partition: config.partition };
        let network = GroupNetwork::new(config.transport.clone(), group);
        let tick_gate = TickGate::new(false);
        let raft = run_gated(tick_gate.clone(), Raft::new(config.node_id, raft_config(timing)?, network.clone(), store, sm))
            .await
            .map_err(|e| ReplicationError::Raft(e.to_string()))?;
        let replica = Arc::new(PartitionReplica {
            serving: watch_serving(raft.metrics(), group, Some(tracing::Level::DEBUG)),
            raft: raft.clone(),
            group,
            router: config.router.clone(),
            network,
            caught_up: Mutex::new(BTreeMap::new()),
            leading_since: Mutex::new(None),
            shared,
            dir: dir.to_path_buf(),
            settings: Mutex::new(settings),
            producer_gate: tokio::sync::Mutex::new(()),
            handing_over: std::sync::atomic::AtomicBool::new(false),
            transport: config.transport.clone(),
            timing,
            quiet: AtomicBool::new(false),
            quiet_switch: Mutex::new(()),
            tick_gate,
            quiescing: AtomicBool::new(false),
            quiet_leader: std::sync::atomic::AtomicU64::new(NO_LEADER),
            last_active_ms: AtomicI64::new(crate::clock::now_ms()),
            opened_ms: crate::clock::now_ms(),
        });
        config.router.register(group, Arc::new(PartitionInbound(Arc::downgrade(&replica))));
        let initialized = raft.is_initialized().await.map_err(|e| ReplicationError::Stopped(e.to_string()))?;
        let position = config.replicas.iter().position(|r| *r == config.node_id).unwrap_or(0);
        if !initialized && !config.may_initialize {
            tracing::info!(topic = %config.topic_id, partition = config.partition, "replica without raft state of an existing group; waiting for its leader");
        } else if !initialized && position == 0 {
            initialize_voters(&raft, &config.replicas).await.map_err(ReplicationError::Raft)?;
        } else if !initialized {
            // The preferred leader creates the group, so that leaders start spread as
            // placement intended. If it is down, the next replica does so after a while,
            // with the same voters (safe: the first entry is identical everywhere).
            let (raft, voters) = (raft.clone(), config.replicas.clone());
            tokio::spawn(async move {
                tokio::time::sleep(INITIALISE_FALLBACK * position as u32).await;
                let waiting = raft.metrics().borrow().current_leader.is_none();
                if waiting {
                    if let Err(e) = initialize_voters(&raft, &voters).await {
                        tracing::warn!(error = %e, "cannot initialise the partition group");
                    }
                }
            });
        } else if replica.membership().voters.len() <= 1 {
            // A lone voter need not wait for an election timeout after a restart.
            let _ = raft.trigger().elect().await;
        } else if config.start_quiet {
            // A restarted replica of a group that may be quiet must not campaign against a
            // leader that is alive and merely silent: it starts quiet, and wakes when the
            // leader sends anything or turns out to be gone (`wake_if_leader_gone`).
            let leader = replica.leader().filter(|l| *l != config.node_id).unwrap_or(NO_LEADER);
            replica.quiet_leader.store(leader, Ordering::SeqCst);
            replica.set_quiet(true);
        }
        Ok(replica)
    }

    /// Waits up to `timeout` for this group to have a leader.
    pub async fn wait_for_leader(&self, timeout: Duration) -> bool {
        let mut m = self.raft.metrics();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if m.borrow().current_leader.is_some() {
                return true;
            }
            match tokio::time::timeout_at(deadline, m.changed()).await {
                Ok(Ok(())) => continue,
                _ => return m.borrow().current_leader.is_some(),
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn settings(&self) -> crate::cluster::topic_config::LogSettings {
        self.settings.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn update_settings(&self, s: crate::cluster::topic_config::LogSettings) {
        *self.settings.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }

    /// The leader's node id, if one is known.
    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    /// True when this node leads the group and may serve as leader: `serving_leader`; in a
    /// quiet group, where no heartbeat refreshes raft's quorum acknowledgement, the leader
    /// serves while a majority of the voters' nodes answer pings (`PeerTransport::heard_within`).
    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        if !self.quiet.load(Ordering::SeqCst) {
            return serving_leader(&m);
        }
        let voters = m.membership_config.membership().voter_ids().count();
        leads_own_term(&m) && self.voters_heard_within(&m, QUIET_QUORUM_WITHIN).len() * 2 > voters
    }

    /// The voters (this node among them) whose node answered within `within`, sorted.
    fn voters_heard_within(&self, m: &openraft::RaftMetrics<u64, BasicNode>, within: Duration) -> Vec<u64> {
        super::voters_reached(m.membership_config.membership().voter_ids(), m.id, |v| self.transport.heard_within(v, within))
    }

    /// Whether `try_quiesce` may be worth trying: a serving leader, not quiet, not already
    /// trying, and nothing written for `idle`.
    pub fn may_quiesce(&self, idle: Duration, now_ms: i64) -> bool {
        !self.is_quiet()
            && !self.quiescing.load(Ordering::SeqCst)
            && now_ms.saturating_sub(self.last_active_ms.load(Ordering::SeqCst)) >= idle.as_millis() as i64
            && serving_leader(&self.raft.metrics().borrow())
    }

    /// Whether the group is quiet here.
    pub fn is_quiet(&self) -> bool {
        self.quiet.load(Ordering::SeqCst)
    }

    /// The flag, raft's ticker and the tick gate change together under `quiet_switch`: a
    /// `wake` between a `set_quiet(true)`'s flag and its ticker would otherwise leave the
    /// group awake by its flag with its ticker off (no heartbeats, no election timer).
    fn set_quiet(&self, quiet: bool) {
        let _switch = self.quiet_switch.lock().unwrap_or_else(|p| p.into_inner());
        self.quiet.store(quiet, Ordering::SeqCst);
        self.raft.runtime_config().tick(!quiet);
        self.tick_gate.set_shut(quiet);
    }

    /// Ends a quiet spell here (raft ticks again), if there is one.
    pub fn wake(&self) {
        // Every write calls this: the lock is taken only when the group is quiet.
        if !self.quiet.load(Ordering::SeqCst) {
            return;
        }
        let _switch = self.quiet_switch.lock().unwrap_or_else(|p| p.into_inner());
        if self.quiet.swap(false, Ordering::SeqCst) {
            self.raft.runtime_config().tick(true);
            self.tick_gate.set_shut(false);
        }
    }

    /// Notes a write: the group is busy, and wakes if it was quiet.
    fn touch(&self) {
        self.last_active_ms.store(crate::clock::now_ms(), Ordering::SeqCst);
        self.wake();
    }

    /// Leader only: makes an idle group quiet, so that it costs nothing until written to
    /// again. When nothing was written for `idle`, every voter has the whole log and it is
    /// committed, each follower is asked to go quiet (it stops its election timer, checking
    /// it has the same log and leader), then this leader stops heartbeats. A write, any raft
    /// message, or the loss of the leader's node (`wake_if_leader_gone`) wakes a replica.
    /// Returns whether the group is quiet now.
    pub async fn try_quiesce(&self, idle: Duration) -> bool {
        let start = self.last_active_ms.load(Ordering::SeqCst);
        if !self.may_quiesce(idle, crate::clock::now_ms()) || self.handing_over.load(Ordering::SeqCst) {
            return self.is_quiet();
        }
        let (term, last_index, followers) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let membership = m.membership_config.membership();
            let settled = m.state == ServerState::Leader
                && serving_leader(&m)
                && membership.get_joint_config().len() == 1
                && membership.learner_ids().next().is_none()
                && m.last_log_index.is_some()
                && m.last_applied.map(|l| l.index) == m.last_log_index
                && m.replication.as_ref().is_some_and(|r| r.values().all(|l| l.map(|l| l.index) == m.last_log_index));
            if !settled {
                return false;
            }
            let followers: Vec<u64> = membership.voter_ids().filter(|v| *v != m.id).collect();
            (m.vote.leader_id().term, m.last_log_index.unwrap_or(0), followers)
        };
        if self.quiescing.swap(true, Ordering::SeqCst) {
            return false;
        }
        let body = encode(&PartitionRequest::Quiesce { term, last_index });
        let asks = followers.iter().map(|f| {
            let body = body.clone();
            async move {
                let body = body.map_err(|e| e.to_string())?;
                let reply = self.transport.request(*f, Kind::Forward, self.group, body, QUIESCE_WAIT).await.map_err(|e| e.to_string())?;
                decode::<Result<(), String>>("quiesce answer", &reply).and_then(|r| r)
            }
        });
        let all_quiet = futures::future::join_all(asks).await.iter().all(|r| r.is_ok());
        if all_quiet {
            tracing::debug!(group = ?self.group, "partition group went quiet");
            self.quiet_leader.store(self.node_id(), Ordering::SeqCst);
            self.set_quiet(true);
            // A write that came in meanwhile either saw the flag (and woke the group) or
            // moved `last_active_ms`, seen here.
            if self.last_active_ms.load(Ordering::SeqCst) != start {
                self.wake();
            }
        }
        // Followers that went quiet wake on this leader's next message.
        self.quiescing.store(false, Ordering::SeqCst);
        self.is_quiet()
    }

    /// Follower side of `try_quiesce`: goes quiet if this replica follows `leader` in
    /// `term` with the log ending at `last_index`, all of it applied.
    fn quiesce_follower(&self, term: u64, last_index: u64, leader: Option<u64>) -> Result<(), String> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let same = m.state == ServerState::Follower
            && m.current_leader.is_some()
            && m.current_leader == leader
            && m.vote.leader_id().term == term
            && m.last_log_index == Some(last_index)
            && m.last_applied.map(|l| l.index) == Some(last_index);
        drop(m);
        if !same {
            return Err("not in step with the leader".into());
        }
        self.quiet_leader.store(leader.unwrap_or(NO_LEADER), Ordering::SeqCst);
        self.set_quiet(true);
        Ok(())
    }

    /// Quiet follower only: wakes (so that its election timer runs) when the leader it went
    /// quiet under is unknown or among `silent` (nodes that stopped answering pings); not
    /// in the first `QUIET_START_GRACE` after opening, while pings have not had time to be
    /// answered. A quiet leader is left alone. Cheap: no metrics are read.
    pub fn wake_if_leader_gone(&self, silent: &std::collections::BTreeSet<u64>, now_ms: i64) {
        if !self.is_quiet() || now_ms.saturating_sub(self.opened_ms) < QUIET_START_GRACE.as_millis() as i64 {
            return;
        }
        let leader = self.quiet_leader.load(Ordering::SeqCst);
        if leader == NO_LEADER || silent.contains(&leader) {
            tracing::debug!(group = ?self.group, leader, "the leader of a quiet group is gone; waking");
            self.wake();
        }
    }

    /// Kafka leader epoch: the term of the leader this node last voted for (with
    /// single-term leaders, one leader per term).
    pub fn leader_epoch(&self) -> i32 {
        i32::try_from(self.raft.metrics().borrow().vote.leader_id().term).unwrap_or(i32::MAX)
    }

    /// In-sync replicas, as the leader sees them: itself, and each follower that answered
    /// within `lag` and was caught up with the committed entries within `lag` (Kafka's
    /// replica.lag.time.max.ms). Empty when this node does not lead.
    pub fn in_sync_replicas(&self, lag: Duration) -> Vec<u64> {
        let m = self.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            return Vec::new();
        }
        if self.is_quiet() {
            // Every voter had the whole log when the group went quiet, and nothing was
            // written since: the voters whose node answers are in sync.
            return self.voters_heard_within(&m, lag);
        }
        let committed = m.last_applied.map(|l| l.index);
        let now = std::time::Instant::now();
        // As Kafka's new leader does for its followers, a follower never heard from yet (a
        // new group's) counts from when this leadership began: it is in sync until `lag`
        // passes without it answering and catching up, not out until it first does.
        let since = {
            let term = m.vote.leader_id().term;
            let mut leading = self.leading_since.lock().unwrap_or_else(|p| p.into_inner());
            match *leading {
                Some((t, at)) if t == term => at,
                _ => leading.insert((term, now)).1,
            }
        };
        let answered = self.network.last_answers();
        let mut caught_up = self.caught_up.lock().unwrap_or_else(|p| p.into_inner());
        let mut isr = vec![m.id];
        for (id, matched) in m.replication.iter().flatten() {
            if *id == m.id {
                continue;
            }
            if matched.map(|l| l.index) >= committed {
                caught_up.insert(*id, now);
            }
            let recent = |t: Option<&std::time::Instant>| now.duration_since(t.copied().unwrap_or(since)) < lag;
            if recent(answered.get(id)) && recent(caught_up.get(id)) {
                isr.push(*id);
            }
        }
        isr.sort_unstable();
        isr
    }

    /// Replica node ids (voters and learners) of the group.
    pub fn replicas(&self) -> BTreeSet<u64> {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.membership_config.membership().nodes().map(|(id, _)| *id).collect()
    }

    /// The group's membership as this node last applied it.
    pub fn membership(&self) -> GroupMembership {
        let m = self.raft.metrics();
        let m = m.borrow();
        let stored = &m.membership_config;
        let membership = stored.membership();
        GroupMembership {
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            joint: membership.get_joint_config().len() > 1,
            committed: stored.log_id().is_none_or(|id| m.last_applied.is_some_and(|a| a.index >= id.index)),
        }
    }

    /// Leader only: adds `nodes` to the group as learners, without waiting for them.
    pub async fn add_learners(&self, nodes: &BTreeSet<u64>) -> Result<(), ReplicationError> {
        self.touch();
        for id in nodes {
            self.raft.add_learner(*id, BasicNode::default(), false).await.map_err(map_write_error)?;
        }
        Ok(())
    }

    /// Leader only: waits up to `timeout` for each of `nodes` to have replicated the log as
    /// far as it reaches now. False on timeout or when this node stops leading.
    pub async fn wait_caught_up(&self, nodes: &BTreeSet<u64>, timeout: Duration) -> bool {
        let mut metrics = self.raft.metrics();
        let goal = metrics.borrow().last_log_index;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            {
                let m = metrics.borrow_and_update();
                if m.state != ServerState::Leader {
                    return false;
                }
                let replicated = |id: &u64| m.replication.as_ref().and_then(|r| r.get(id)).is_some_and(|l| l.map(|l| l.index) >= goal);
                if nodes.iter().all(replicated) {
                    return true;
                }
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                _ => return false,
            }
        }
    }

    /// Leader only: makes `voters` the group's voters (raft's joint consensus, two log
    /// entries); voters left out leave the group. Every new voter must already be a
    /// learner. Returns once the change is committed.
    pub async fn change_voters(&self, voters: &BTreeSet<u64>) -> Result<(), ReplicationError> {
        self.touch();
        self.raft.change_membership(voters.clone(), false).await.map_err(map_write_error)?;
        Ok(())
    }

    /// Leader only: removes learners (never voters) from the group.
    pub async fn remove_learners(&self, nodes: &BTreeSet<u64>) -> Result<(), ReplicationError> {
        self.touch();
        self.raft.change_membership(openraft::ChangeMembers::RemoveNodes(nodes.clone()), false).await.map_err(map_write_error)?;
        Ok(())
    }

    /// Hands a batch to raft. Calls made in some order are appended in that order.
    /// With `local_ack` (acks=1) the handle answers once this leader has its own copy of the
    /// batch on disk, before the commit, as Kafka answers acks=1 after the leader's append.
    pub async fn propose(&self, batch: Bytes, local_ack: bool) -> Result<ProposeHandle, ReplicationError> {
        self.check_writable()?;
        self.touch();
        let local = local_ack.then(|| LocalWait {
            appended: self.shared.local_appends.register(&batch),
            key: super::log_store::LocalAppends::key(&batch),
            shared: self.shared.clone(),
        });
        let rx = self
            .raft
            .client_write_ff(PartitionCommand::Batch(batch))
            .await
            .map_err(|e| ReplicationError::Stopped(e.to_string()))?;
        Ok(ProposeHandle { rx, serving: self.serving.clone(), metrics: self.raft.metrics(), local })
    }

    /// Hands a client's batch to raft after Kafka's producer checks: a batch with a producer
    /// id must be in sequence for its epoch; a retry of a batch already in the log is
    /// answered with the original's offsets and not written again; a retry of one still in
    /// flight waits for it. Batches without a producer id go straight to `propose`.
    /// A transactional batch carries the `guard` taken before its transaction was checked.
    pub async fn propose_batch(
        &self,
        header: &BatchHeader,
        batch: Bytes,
        local_ack: bool,
        guard: Option<TxnGuard>,
    ) -> Result<Proposal, ReplicationError> {
        // As Kafka, leadership before sequences: otherwise a batch pipelined behind one
        // refused with NOT_LEADER_OR_FOLLOWER would get OUT_OF_ORDER_SEQUENCE_NUMBER, on
        // which librdkafka bumps its epoch and resends, duplicating batches that did commit.
        self.check_writable()?;
        if header.producer_id < 0 {
            return self.propose(batch, local_ack).await.map(Proposal::Proposed);
        }
        let deadline = tokio::time::Instant::now() + IN_FLIGHT_WAIT;
        loop {
            let applied = self.shared.applied.notified();
            tokio::pin!(applied);
            applied.as_mut().enable();
            let gate = self.producer_gate.lock().await;
            let term = self.raft.metrics().borrow().current_term;
            let admission = self.shared.producers().table.check(header, guard, term)?;
            match admission {
                Admission::Duplicate(b) => return Ok(Proposal::Duplicate(b)),
                Admission::InFlight => {
                    drop(gate);
                    if tokio::time::timeout_at(deadline, applied).await.is_err() {
                        return Err(ReplicationError::Stopped("the original of a retried batch was not applied in time".into()));
                    }
                }
                Admission::Append => {
                    self.shared.producers().table.reserve(header, term);
                    let proposed = self.propose(batch, local_ack).await;
                    if proposed.is_err() {
                        self.shared.producers().table.unreserve(header);
                    }
                    return proposed.map(Proposal::Proposed);
                }
            }
        }
    }

    /// Appends a transaction marker for `producer_id` and waits for its commit (the
    /// transaction coordinator's write; clients cannot send control batches).
    pub async fn write_marker(&self, producer_id: i64, epoch: i16, kind: ControlType, coordinator_epoch: i32) -> Result<i64, ReplicationError> {
        let batch = marker_batch(producer_id, epoch, kind, coordinator_epoch, crate::clock::now_ms());
        {
            // Under the gate: a batch checked before this was proposed before the marker,
            // one checked after is refused (`TxnGuard`).
            let _gate = self.producer_gate.lock().await;
            self.shared.producers().table.outdate_txn_guards(producer_id);
        }
        let reply = self.append(Bytes::from(batch)).await?;
        Ok(reply.base_offset)
    }

    /// The last stable offset: the first offset of the oldest open transaction, or the
    /// high watermark when that is lower or no transaction is open.
    pub fn last_stable_offset(&self) -> i64 {
        let hw = self.high_watermark();
        self.shared.producers().table.first_unstable_offset().map_or(hw, |f| f.min(hw))
    }

    /// Aborted transactions overlapping `[from, to)`, for read_committed fetches.
    pub fn aborted_transactions(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.shared.producers().table.aborted_between(from, to)
    }

    /// Whether `producer_id` has a transaction open on this partition, and the guard under
    /// which that was seen (taken first).
    pub fn open_transaction(&self, producer_id: i64) -> (bool, TxnGuard) {
        let producers = self.shared.producers();
        let guard = producers.table.txn_guard(producer_id);
        (producers.table.has_open_transaction(producer_id), guard)
    }

    /// A serving leader that is not handing its leadership over takes writes.
    fn check_writable(&self) -> Result<(), ReplicationError> {
        if !self.is_leader() || self.handing_over.load(Ordering::Acquire) {
            return Err(ReplicationError::NotLeader { leader: self.leader().filter(|l| *l != self.node_id()) });
        }
        Ok(())
    }

    fn node_id(&self) -> u64 {
        self.raft.metrics().borrow().id
    }

    /// Leader only: hands leadership to the voter `to` (preferred-leader election), which
    /// must be caught up. openraft 0.9 has no leader transfer, so: stop taking writes and
    /// heartbeats, wait out the lease in which followers refuse to vote (the longest
    /// election timeout), then ask `to` to campaign; the followers' own election timers
    /// run a further election timeout, so `to` is first. Writes pause for about
    /// `election_max_ms`. Returns once `to` leads, or fails (and this node goes on leading,
    /// or the group elects as after a failure).
    pub async fn transfer_leadership(&self, to: u64) -> Result<(), ReplicationError> {
        self.check_writable()?;
        let me = self.node_id();
        if to == me {
            return Ok(());
        }
        if !self.membership().voters.contains(&to) {
            return Err(ReplicationError::Raft(format!("node {to} is not a voter of this partition")));
        }
        if !self.wait_caught_up(&BTreeSet::from([to]), HANDOVER_CATCH_UP).await {
            return Err(ReplicationError::Raft(format!("node {to} is not caught up")));
        }
        if self.handing_over.swap(true, Ordering::AcqRel) {
            return Err(ReplicationError::Raft("a hand-over is already under way".into()));
        }
        self.touch();
        self.raft.runtime_config().heartbeat(false);
        let result = async {
            tokio::time::sleep(Duration::from_millis(self.timing.election_max_ms + HANDOVER_MARGIN_MS)).await;
            let body = encode(&PartitionRequest::Campaign).map_err(ReplicationError::Raft)?;
            let reply = self
                .transport
                .request(to, Kind::Forward, self.group, body, HANDOVER_WAIT)
                .await
                .map_err(|e| ReplicationError::Raft(e.to_string()))?;
            decode::<Result<(), String>>("campaign answer", &reply).and_then(|r| r).map_err(ReplicationError::Raft)?;
            let mut m = self.raft.metrics();
            let led = tokio::time::timeout(HANDOVER_WAIT, m.wait_for(|m| m.current_leader == Some(to))).await;
            match led {
                Ok(Ok(_)) => Ok(()),
                _ => Err(ReplicationError::Raft(format!("node {to} did not take over in time"))),
            }
        }
        .await;
        self.raft.runtime_config().heartbeat(true);
        self.handing_over.store(false, Ordering::Release);
        result
    }

    /// Proposes and waits for the commit.
    pub async fn append(&self, batch: Bytes) -> Result<PartitionReply, ReplicationError> {
        self.check_writable()?;
        self.touch();
        let resp = self.raft.client_write(PartitionCommand::Batch(batch)).await.map_err(map_write_error)?;
        Ok(resp.data)
    }

    pub fn high_watermark(&self) -> i64 {
        *self.shared.high_watermark.borrow()
    }

    /// Changes to the high watermark, for long-polling fetches.
    pub fn watch_high_watermark(&self) -> watch::Receiver<i64> {
        self.shared.high_watermark.subscribe()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.shared.log().log_start_offset()
    }

    pub fn log_end_offset(&self) -> i64 {
        self.shared.log().log_end_offset()
    }

    /// Locates committed data from `offset` (whole batches, KIP-74 first-batch rule),
    /// below the high watermark, or below the last stable offset for read_committed.
    pub fn read(&self, offset: i64, max_bytes: u32, read_committed: bool) -> Result<ReadSlice, ReplicationError> {
        let upper = if read_committed { self.last_stable_offset() } else { self.high_watermark() };
        Ok(self.shared.log().read(offset, max_bytes, upper)?)
    }

    /// First committed batch with a timestamp at or after `ts`: (offset, timestamp).
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, ReplicationError> {
        let hw = self.high_watermark();
        Ok(self.shared.log().offset_for_timestamp(ts)?.filter(|(o, _)| *o < hw))
    }

    /// The committed batch with the largest timestamp: (offset, timestamp).
    pub fn max_timestamp(&self) -> Result<Option<(i64, i64)>, ReplicationError> {
        let hw = self.high_watermark();
        Ok(self.shared.log().max_timestamp_entry()?.filter(|(o, _)| *o < hw))
    }

    /// OffsetForLeaderEpoch: the largest epoch <= `epoch` in the log and its end offset.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Result<Option<(i32, i64)>, ReplicationError> {
        let Ok(term) = u64::try_from(epoch) else { return Ok(None) };
        let r = self.shared.log().last_offset_for_term(term)?;
        Ok(r.map(|(t, off)| (i32::try_from(t).unwrap_or(i32::MAX), off.min(self.log_end_offset()))))
    }

    /// Stops the raft group and marks the log cleanly closed.
    pub async fn shutdown(&self) {
        self.router.unregister(self.group);
        let _ = self.raft.shutdown().await;
        let shared = self.shared.clone();
        let dir = self.dir.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = super::state_machine::save_producer_snapshot(&shared, &dir) {
                tracing::warn!(error = %e, "could not write the producer snapshot");
            }
            if let Err(e) = shared.log().mark_clean_shutdown() {
                tracing::warn!(error = %e, "could not close partition log cleanly");
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::GroupMembers;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_quiet_group_s_tick_timer_sleeps_until_the_group_wakes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let members = GroupMembers::single_node(1);
        let config = ReplicaConfig {
            node_id: 1,
            topic_id: uuid::Uuid::new_v4(),
            partition: 0,
            log: LogConfig::default(),
            fsync: FsyncPolicy::Never,
            replicas: vec![1],
            timing: members.timing(),
            transport: members.transport.clone(),
            router: members.router.clone(),
            may_initialize: true,
            producer_expiration_ms: i64::MAX,
            start_quiet: false,
        };
        let files = PartitionReplica::open_files(dir.path(), config.log).expect("open files");
        let settings = crate::cluster::topic_config::LogSettings::resolve(&Default::default(), &Default::default());
        let replica = PartitionReplica::start(dir.path(), files, config, settings).await.expect("start");
        assert!(replica.wait_for_leader(Duration::from_secs(10)).await, "a lone voter elects itself");
        let ticking = |ms| {
            let r = replica.clone();
            async move {
                let before = r.tick_gate.ticks_ended();
                tokio::time::sleep(Duration::from_millis(ms)).await;
                r.tick_gate.ticks_ended() - before
            }
        };
        // Heartbeats every 100 ms: openraft ticks every 150 ms.
        assert!(ticking(1_000).await >= 3, "an awake group ticks");
        let mut quiet = false;
        for _ in 0..50 {
            quiet = replica.try_quiesce(Duration::ZERO).await;
            if quiet {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(quiet, "an idle lone voter goes quiet");
        // A sleep armed before the group went quiet may still end once.
        let while_quiet = ticking(1_500).await;
        assert!(while_quiet <= 1, "{while_quiet} tick sleeps ended in 1.5 s while quiet");
        replica.wake();
        assert!(ticking(1_000).await >= 3, "a woken group ticks again");
        replica.shutdown().await;
    }
}
