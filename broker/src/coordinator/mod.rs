//! The group coordinator: consumer group membership (`group`, a plain state machine per
//! group) and committed offsets, with every change that must survive a restart written
//! through the coordinator raft group into RocksDB (`state`). Handlers call the async
//! methods here; nothing in this module parses Kafka requests.

pub mod group;
pub mod state;
pub mod transactions;
pub mod txn;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ConsumerProtocolSubscription;
use kafka_protocol::protocol::Decodable;
use tokio::sync::{oneshot, watch, Mutex as AsyncMutex};
use tracing::{info, warn};

use group::{Group, GroupConfig, GroupDescription, GroupRecord, GroupState, JoinRequest, Reply, ReplyId, SyncRequest};

use openraft::error::{ClientWriteError, RaftError};
use openraft::Raft;

pub use state::{CommittedOffset, CoordinatorCommand};
use state::{CoordinatorRaft, CoordinatorStateMachine};

use crate::clock::now_ms;
use crate::replication::transport::frame::GroupId;
use crate::replication::transport::raft::GroupNetwork;
use crate::replication::{bootstrap_single_voter, command_group_config, initialize_voters, GroupMembers, RocksLogStore};
use crate::store::{MetadataStore, StoreError};

/// Key prefix of the coordinator group's raft log and raft state.
const RAFT_PREFIX: &[u8] = b"coordinator/";
const LEADER_WAIT: Duration = Duration::from_secs(10);

/// Errors of the coordinator layer; mapped to Kafka codes in `protocol::errors`.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// This node does not lead the coordinator group (Kafka: NOT_COORDINATOR).
    #[error("not the coordinator (leader: {leader:?})")]
    NotCoordinator { leader: Option<u64> },
    /// This node leads the coordinator group but has not loaded its state yet
    /// (Kafka: COORDINATOR_LOAD_IN_PROGRESS, which clients retry on the same node).
    #[error("the coordinator is loading")]
    LoadInProgress,
    /// The coordinator's raft group or storage failed (Kafka: COORDINATOR_NOT_AVAILABLE).
    #[error("coordinator unavailable: {0}")]
    Unavailable(String),
    #[error("offset store: {0}")]
    Store(#[from] StoreError),
    /// A transactional request refused by the transaction state machine.
    #[error(transparent)]
    Txn(#[from] txn::TxnError),
}

/// Settings of the coordinator, from the node config.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// offset.metadata.max.bytes: longest metadata string an OffsetCommit may carry.
    pub offset_metadata_max_bytes: usize,
    /// offsets.retention.minutes, in milliseconds.
    pub offsets_retention_ms: i64,
    pub group: GroupConfig,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig { offset_metadata_max_bytes: 4096, offsets_retention_ms: 7 * 24 * 3600 * 1000, group: GroupConfig::default() }
    }
}

/// How often membership timers (rebalance delays and timeouts, sessions) are checked.
const TICK: Duration = Duration::from_millis(50);

/// One group's membership state, shared by its requests and the timer task.
struct GroupSlot {
    /// Held across persisting the group record, so records are written in order.
    group: AsyncMutex<Group>,
    /// When the group last became Empty (for offset expiry); -1 while it has members.
    empty_since_ms: AtomicI64,
    /// The group's next timer, mirrored outside the lock for the timer task; i64::MAX: none.
    next_deadline_ms: AtomicI64,
}

/// A group as ListGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: &'static str,
}

/// This node's group coordinator.
pub struct GroupCoordinator {
    raft: Raft<CoordinatorRaft>,
    store: Arc<MetadataStore>,
    pub config: CoordinatorConfig,
    groups: Mutex<HashMap<String, Arc<GroupSlot>>>,
    waiters: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    next_reply: AtomicU64,
    /// Set when the node stops: groups are unloaded and nothing more is written.
    stopping: AtomicBool,
    /// True while this node leads the coordinator group and has its groups loaded.
    active: watch::Sender<bool>,
}

fn member_id_suffixes() -> group::MemberIdSource {
    Box::new(|| uuid::Uuid::new_v4().to_string())
}

/// Offsets of a group without members that have outlived `retention_ms`: all of them once
/// the group has been Empty that long (a group that had members), else each offset whose
/// last commit is that old (a group that only commits).
pub fn expired_offsets(
    offsets: &[(String, i32, CommittedOffset)],
    empty_since_ms: Option<i64>,
    now_ms: i64,
    retention_ms: i64,
) -> Vec<(String, i32)> {
    offsets
        .iter()
        .filter(|(_, _, o)| {
            let base = match empty_since_ms {
                Some(since) => since.max(o.commit_timestamp_ms),
                None => o.commit_timestamp_ms,
            };
            base.saturating_add(retention_ms) <= now_ms
        })
        .map(|(t, p, _)| (t.clone(), *p))
        .collect()
}

impl GroupCoordinator {
    /// Starts the coordinator group: in single-node mode a lone voter, waited for, with the
    /// groups loaded before this returns; in a cluster the controller voters initialise it,
    /// and whichever node leads it loads the groups then (`follow_leadership`).
    pub async fn start(
        node_id: u64,
        store: Arc<MetadataStore>,
        config: CoordinatorConfig,
        members: GroupMembers,
    ) -> Result<Arc<GroupCoordinator>, CoordinatorError> {
        let sm = CoordinatorStateMachine::open(store.clone())?;
        let log = RocksLogStore::<CoordinatorRaft>::new(store.clone(), RAFT_PREFIX);
        // The state is in RocksDB already; snapshots only let raft drop applied entries.
        let raft_config = command_group_config("runnel-coordinator", 20_000, 1_000, members.timing()).map_err(CoordinatorError::Unavailable)?;
        let network = GroupNetwork::new(members.transport.clone(), GroupId::Coordinator);
        let raft = Raft::new(node_id, raft_config, network, log, sm)
            .await
            .map_err(|e| CoordinatorError::Unavailable(e.to_string()))?;
        members.router.register(GroupId::Coordinator, Arc::new(raft.clone()));
        let log = (!members.voters.is_empty()).then_some(tracing::Level::INFO);
        let serving = crate::replication::watch_serving(raft.metrics(), GroupId::Coordinator, log);
        if members.voters.is_empty() {
            bootstrap_single_voter(&raft, node_id, LEADER_WAIT).await.map_err(CoordinatorError::Unavailable)?;
        } else if members.voters.contains(&node_id) {
            initialize_voters(&raft, &members.voters).await.map_err(CoordinatorError::Unavailable)?;
        }
        let (active_tx, _) = watch::channel(false);
        let coordinator = Arc::new(GroupCoordinator {
            raft,
            store,
            config,
            groups: Mutex::new(HashMap::new()),
            waiters: Mutex::new(HashMap::new()),
            next_reply: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
            active: active_tx,
        });
        if members.voters.is_empty() {
            // A lone voter leads at once; its groups are there before the node serves.
            let mut lone = serving.clone();
            if !matches!(tokio::time::timeout(LEADER_WAIT, lone.wait_for(|s| *s)).await, Ok(Ok(_))) {
                return Err(CoordinatorError::Unavailable("the coordinator group did not apply its first entry".into()));
            }
            coordinator.activate();
        }
        tokio::spawn(follow_leadership(Arc::downgrade(&coordinator), serving));
        tokio::spawn(run_timers(Arc::downgrade(&coordinator)));
        tokio::spawn(run_offset_expiry(Arc::downgrade(&coordinator)));
        Ok(coordinator)
    }

    /// Loads every stored group, as this node takes over coordination.
    fn activate(&self) {
        let now = now_ms();
        let mut groups = HashMap::new();
        let records = match state::read_group_records(&self.store) {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "cannot read group records; not coordinating");
                return;
            }
        };
        for (id, bytes) in records {
            let record: GroupRecord = match crate::store::from_json(id.as_bytes(), &bytes) {
                Ok(r) => r,
                Err(e) => {
                    warn!(group = %id, error = %e, "unreadable group record; the group starts empty");
                    continue;
                }
            };
            match Group::from_record(record, now, self.config.group.clone(), member_id_suffixes()) {
                Ok(g) => {
                    groups.insert(id, Arc::new(GroupSlot::new(g, now)));
                }
                Err(e) => warn!(group = %id, error = %e, "invalid group record; the group starts empty"),
            }
        }
        info!(groups = groups.len(), "coordinating groups");
        *self.groups.lock().unwrap_or_else(|p| p.into_inner()) = groups;
        self.active.send_replace(true);
    }

    /// Gives up coordination (leadership lost): waiting requests are answered so that their
    /// clients look for the new coordinator, and the groups are dropped from memory.
    async fn deactivate(&self) {
        self.active.send_replace(false);
        let slots: Vec<Arc<GroupSlot>> = self.groups.lock().unwrap_or_else(|p| p.into_inner()).drain().map(|(_, s)| s).collect();
        for slot in slots {
            let out = slot.group.lock().await.mark_dead();
            self.deliver(out);
        }
        info!("no longer coordinating groups");
    }

    /// Whether this node coordinates groups, as a receiver that changes with leadership.
    pub fn watch_active(&self) -> watch::Receiver<bool> {
        self.active.subscribe()
    }

    /// The coordinator group's raft end of the transport, for a wrapper that also answers
    /// requests forwarded from other nodes (`node::CoordinatorInbound`).
    pub fn raft_inbound(&self) -> Arc<dyn crate::replication::transport::raft::InboundGroup> {
        Arc::new(self.raft.clone())
    }

    /// The coordinator group's voters now.
    pub fn voters(&self) -> std::collections::BTreeSet<u64> {
        crate::replication::current_voters(&self.raft)
    }

    /// Whether this node leads the coordinator group (whether or not it has loaded yet).
    pub fn leads_group(&self) -> bool {
        self.raft.metrics().borrow().state == openraft::ServerState::Leader
    }

    /// On the group's leader: makes `target` its voters (KIP-853: the coordinator group
    /// runs on the controller voters and follows their changes).
    pub async fn set_voters(&self, target: &std::collections::BTreeSet<u64>) -> Result<(), String> {
        crate::replication::set_voters(&self.raft, target, false).await
    }

    /// The coordinator group's leader as this node knows it, and its epoch (the raft term).
    pub fn leader(&self) -> Option<(u64, i32)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.current_leader.map(|l| (l, i32::try_from(m.vote.leader_id().term).unwrap_or(i32::MAX)))
    }

    /// Replicates `cmd` and waits until it is applied (on disk on a majority).
    pub async fn propose(&self, cmd: CoordinatorCommand) -> Result<(), CoordinatorError> {
        match self.raft.client_write(cmd).await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(CoordinatorError::NotCoordinator { leader: f.leader_id })
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => Err(CoordinatorError::Unavailable(e.to_string())),
            Err(RaftError::Fatal(f)) => Err(CoordinatorError::Unavailable(f.to_string())),
        }
    }

    /// Whether the node is stopping (nothing more is written).
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Kafka's checks of a TxnOffsetCommit's member and generation (KIP-447): like
    /// OffsetCommit's, but allowed while the group rebalances.
    pub async fn validate_txn_commit(&self, group: &str, member_id: &str, instance_id: Option<&str>, generation: i32) -> Result<(), i16> {
        self.check_active().map_err(crate::protocol::errors::code)?;
        match self.slot(group) {
            Some(slot) => slot.group.lock().await.validate_txn_offset_commit(member_id, instance_id, generation).map_err(|e| e.code()),
            None if generation < 0 => Ok(()),
            None => Err(ResponseError::IllegalGeneration.code()),
        }
    }

    /// Whether this node coordinates groups now (it leads the coordinator group and has
    /// loaded the groups).
    pub fn is_active(&self) -> bool {
        *self.active.borrow() && !self.is_stopping()
    }

    /// Ok while this node coordinates; else why not: LoadInProgress while it leads the
    /// coordinator group but has not loaded it (Kafka answers so until its load finishes),
    /// NotCoordinator otherwise.
    pub fn check_active(&self) -> Result<(), CoordinatorError> {
        if self.is_active() {
            Ok(())
        } else if self.leads_group() && !self.is_stopping() {
            Err(CoordinatorError::LoadInProgress)
        } else {
            Err(CoordinatorError::NotCoordinator { leader: self.leader().map(|(l, _)| l) })
        }
    }

    /// Committed offsets of `group`: all of them, or those of `only`.
    pub fn fetch_offsets(
        &self,
        group: &str,
        only: Option<&[(String, i32)]>,
    ) -> Result<Vec<(String, i32, CommittedOffset)>, CoordinatorError> {
        self.check_active()?;
        Ok(state::read_offsets(&self.store, group, only)?)
    }

    /// Kafka's checks of an OffsetCommit's member and generation (error code on refusal).
    /// A commit with generation -1 and no member id is a "simple" commit by a consumer that
    /// assigns partitions itself; it is refused for a group under group management.
    pub async fn validate_commit(&self, group: &str, member_id: &str, instance_id: Option<&str>, generation: i32) -> Result<(), i16> {
        self.check_active().map_err(crate::protocol::errors::code)?;
        match self.slot(group) {
            Some(slot) => {
                let mut g = slot.group.lock().await;
                g.validate_offset_commit(now_ms(), member_id, instance_id, generation).map_err(|e| e.code())
            }
            // As Kafka for a group it does not know: simple commits only.
            None if generation < 0 => Ok(()),
            None => Err(ResponseError::IllegalGeneration.code()),
        }
    }

    /// Whether `group` has membership state (a group that only commits offsets has none).
    pub fn group_exists(&self, group: &str) -> bool {
        self.slot(group).is_some()
    }

    /// Whether a member of `group` subscribes to `topic` (OffsetDelete refuses those).
    pub async fn group_subscribed_to(&self, group: &str, topic: &str) -> bool {
        let Some(slot) = self.slot(group) else { return false };
        let record = slot.group.lock().await.to_record();
        if record.protocol_type.as_deref() != Some("consumer") || record.members.is_empty() {
            return false;
        }
        let Some(protocol) = record.protocol.as_deref() else { return false };
        record.members.iter().any(|m| {
            m.protocols.iter().filter(|p| p.name == protocol).any(|p| subscription_topics(&p.metadata).iter().any(|t| t == topic))
        })
    }

    /// Group ids with committed offsets.
    pub fn groups_with_offsets(&self) -> Result<Vec<String>, CoordinatorError> {
        Ok(state::groups_with_offsets(&self.store)?)
    }

    fn slot(&self, group: &str) -> Option<Arc<GroupSlot>> {
        self.groups.lock().unwrap_or_else(|p| p.into_inner()).get(group).cloned()
    }

    fn slot_or_create(&self, group: &str) -> Arc<GroupSlot> {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        groups
            .entry(group.to_string())
            .or_insert_with(|| Arc::new(GroupSlot::new(Group::new(self.config.group.clone(), member_id_suffixes()), now_ms())))
            .clone()
    }

    fn register(&self) -> (ReplyId, oneshot::Receiver<Reply>) {
        let id = self.next_reply.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().unwrap_or_else(|p| p.into_inner()).insert(id, tx);
        (ReplyId(id), rx)
    }

    fn deliver(&self, out: Vec<(ReplyId, Reply)>) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        for (id, reply) in out {
            if let Some(tx) = waiters.remove(&id.0) {
                // The requester may have gone (connection closed): nothing to do then.
                let _ = tx.send(reply);
            }
        }
    }

    /// Runs `op` on the group, writes its record if it changed, then sends every reply the
    /// operation made ready, and waits for the one of this request.
    async fn run(&self, group_id: &str, create: bool, op: impl FnOnce(&mut Group, ReplyId, i64) -> Vec<(ReplyId, Reply)>) -> Option<Reply> {
        if !self.is_active() {
            return Some(stopping_reply());
        }
        let slot = if create { self.slot_or_create(group_id) } else { self.slot(group_id)? };
        let (id, rx) = self.register();
        let out = {
            let mut g = slot.group.lock().await;
            let now = now_ms();
            let out = op(&mut g, id, now);
            self.after_change(group_id, &slot, &mut g, now).await;
            out
        };
        self.deliver(out);
        rx.await.ok()
    }

    /// Bookkeeping after any change to a group: timers, empty-since, the persisted record.
    async fn after_change(&self, group_id: &str, slot: &GroupSlot, g: &mut Group, now: i64) {
        slot.next_deadline_ms.store(g.next_deadline().unwrap_or(i64::MAX), Ordering::Relaxed);
        if g.state() == GroupState::Empty {
            let _ = slot.empty_since_ms.compare_exchange(-1, now, Ordering::Relaxed, Ordering::Relaxed);
        } else {
            slot.empty_since_ms.store(-1, Ordering::Relaxed);
        }
        if let Some(record) = g.take_record() {
            match crate::store::to_json(&record) {
                Ok(bytes) => {
                    if let Err(e) = self.propose(CoordinatorCommand::StoreGroup { group: group_id.to_string(), record: Some(bytes) }).await {
                        warn!(group = %group_id, error = %e, "could not store the group record");
                    }
                }
                Err(e) => warn!(group = %group_id, error = %e, "could not encode the group record"),
            }
        }
    }

    pub async fn join(&self, group_id: &str, req: JoinRequest) -> Reply {
        self.run(group_id, true, |g, id, now| g.join(id, now, req))
            .await
            .unwrap_or_else(|| group::join_error("", group::GroupError::CoordinatorNotAvailable))
    }

    pub async fn sync(&self, group_id: &str, req: SyncRequest) -> Reply {
        // Kafka: a sync for a group it does not know is UNKNOWN_MEMBER_ID.
        match self.run(group_id, false, |g, id, now| g.sync(id, now, req)).await {
            Some(Reply::Sync(r)) => Reply::Sync(r),
            Some(_) => group::sync_error(group::GroupError::CoordinatorNotAvailable),
            None => group::sync_error(group::GroupError::UnknownMemberId),
        }
    }

    pub async fn heartbeat(&self, group_id: &str, member_id: &str, instance_id: Option<&str>, generation: i32) -> i16 {
        match self.run(group_id, false, |g, id, now| g.heartbeat(id, now, member_id, instance_id, generation)).await {
            Some(Reply::Heartbeat(h)) => group::error_code(h.error),
            Some(_) => ResponseError::CoordinatorNotAvailable.code(),
            None => ResponseError::UnknownMemberId.code(),
        }
    }

    /// LeaveGroup: per-member results, or the top-level error for an unknown group.
    pub async fn leave(&self, group_id: &str, members: Vec<(String, Option<String>)>) -> Result<group::LeaveReply, i16> {
        match self.run(group_id, false, |g, id, now| g.leave(id, now, members)).await {
            Some(Reply::Leave(l)) => Ok(l),
            Some(_) => Err(ResponseError::CoordinatorNotAvailable.code()),
            None => Err(ResponseError::UnknownMemberId.code()),
        }
    }

    /// Every group: those with membership state and those that only commit offsets.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>, CoordinatorError> {
        let slots: Vec<(String, Arc<GroupSlot>)> =
            self.groups.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut out = Vec::with_capacity(slots.len());
        for (id, slot) in &slots {
            let g = slot.group.lock().await;
            out.push(GroupListing { group_id: id.clone(), protocol_type: g.protocol_type().unwrap_or("").to_string(), state: g.state().as_str() });
        }
        for id in self.groups_with_offsets()? {
            if !slots.iter().any(|(s, _)| *s == id) {
                out.push(GroupListing { group_id: id, protocol_type: String::new(), state: GroupState::Empty.as_str() });
            }
        }
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(out)
    }

    /// DescribeGroups: `None` for a group Runnel does not know at all.
    pub async fn describe(&self, group_id: &str) -> Result<Option<GroupDescription>, CoordinatorError> {
        if let Some(slot) = self.slot(group_id) {
            return Ok(Some(slot.group.lock().await.describe()));
        }
        if !self.fetch_offsets(group_id, None)?.is_empty() {
            return Ok(Some(GroupDescription { state: GroupState::Empty, protocol_type: String::new(), protocol: String::new(), members: Vec::new() }));
        }
        Ok(None)
    }

    /// DeleteGroups for one group: only a group without members can be deleted.
    pub async fn delete_group(&self, group_id: &str) -> Result<(), i16> {
        let slot = self.slot(group_id);
        let has_offsets = !self.fetch_offsets(group_id, None).map_err(crate::protocol::errors::code)?.is_empty();
        match &slot {
            None if !has_offsets => return Err(ResponseError::GroupIdNotFound.code()),
            Some(s) => {
                let mut g = s.group.lock().await;
                if g.state() != GroupState::Empty && g.state() != GroupState::Dead {
                    return Err(ResponseError::NonEmptyGroup.code());
                }
                let out = g.mark_dead();
                drop(g);
                self.deliver(out);
            }
            None => {}
        }
        self.groups.lock().unwrap_or_else(|p| p.into_inner()).remove(group_id);
        self.propose(CoordinatorCommand::DeleteGroup { group: group_id.to_string() }).await.map_err(crate::protocol::errors::code)
    }

    /// Unloads every group as the node stops, as Kafka's coordinator does when it resigns:
    /// requests waiting for a rebalance are answered at once (COORDINATOR_NOT_AVAILABLE, so
    /// clients look for the coordinator again) and nothing more is written, so the groups
    /// come back at their last stored generation.
    pub async fn unload(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        let slots: Vec<Arc<GroupSlot>> = self.groups.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        for slot in slots {
            let out = slot.group.lock().await.mark_dead();
            self.deliver(out);
        }
    }

    /// Fires due membership timers of every group.
    async fn tick_due(&self) {
        if !self.is_active() {
            return;
        }
        let now = now_ms();
        let due: Vec<(String, Arc<GroupSlot>)> = self
            .groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, s)| s.next_deadline_ms.load(Ordering::Relaxed) <= now)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (id, slot) in due {
            let out = {
                let mut g = slot.group.lock().await;
                let now = now_ms();
                let out = g.tick(now);
                self.after_change(&id, &slot, &mut g, now).await;
                out
            };
            self.deliver(out);
        }
    }

    /// Deletes offsets of groups without members that outlived the retention.
    async fn expire_offsets(&self) -> Result<(), CoordinatorError> {
        let now = now_ms();
        for group_id in self.groups_with_offsets()? {
            let empty_since = match self.slot(&group_id) {
                Some(slot) => match slot.empty_since_ms.load(Ordering::Relaxed) {
                    -1 => continue, // the group has members: its offsets stay
                    since => Some(since),
                },
                None => None,
            };
            let offsets = self.fetch_offsets(&group_id, None)?;
            let expired = expired_offsets(&offsets, empty_since, now, self.config.offsets_retention_ms);
            if expired.is_empty() {
                continue;
            }
            info!(group = %group_id, partitions = expired.len(), "expiring committed offsets");
            if expired.len() == offsets.len() && empty_since.is_some() {
                // Kafka removes an Empty group whose offsets have all expired.
                if let Some(slot) = self.slot(&group_id) {
                    let mut g = slot.group.lock().await;
                    if g.state() == GroupState::Empty {
                        let out = g.mark_dead();
                        drop(g);
                        self.deliver(out);
                        self.groups.lock().unwrap_or_else(|p| p.into_inner()).remove(&group_id);
                        self.propose(CoordinatorCommand::DeleteGroup { group: group_id.clone() }).await?;
                        continue;
                    }
                }
            }
            self.propose(CoordinatorCommand::DeleteOffsets { group: group_id, partitions: expired }).await?;
        }
        Ok(())
    }

    /// Stops the coordinator group.
    pub async fn shutdown(&self) {
        // Bounded: openraft 0.9 may not return from shutting down a group that installed a
        // snapshot; everything it acknowledged is on disk already.
        match tokio::time::timeout(Duration::from_secs(5), self.raft.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "coordinator shutdown"),
            Err(_) => tracing::warn!("the coordinator group did not stop within 5 s; going on"),
        }
    }
}

impl GroupSlot {
    fn new(group: Group, now: i64) -> GroupSlot {
        let empty = if group.state() == GroupState::Empty { now } else { -1 };
        let deadline = group.next_deadline().unwrap_or(i64::MAX);
        GroupSlot { group: AsyncMutex::new(group), empty_since_ms: AtomicI64::new(empty), next_deadline_ms: AtomicI64::new(deadline) }
    }
}

/// The answer to any membership request once the coordinator is stopping.
fn stopping_reply() -> Reply {
    group::join_error("", group::GroupError::CoordinatorNotAvailable)
}

/// Topics named in a consumer protocol subscription (empty when it does not decode).
fn subscription_topics(metadata: &Bytes) -> Vec<String> {
    let mut buf = metadata.clone();
    if buf.len() < 2 {
        return Vec::new();
    }
    let version = i16::from_be_bytes([buf[0], buf[1]]);
    bytes::Buf::advance(&mut buf, 2);
    match ConsumerProtocolSubscription::decode(&mut buf, version.clamp(0, 3)) {
        Ok(s) => s.topics.iter().map(|t| t.to_string()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Loads the groups when this node becomes the serving leader of the coordinator group and
/// drops them when it stops being it.
async fn follow_leadership(coordinator: Weak<GroupCoordinator>, mut serving: watch::Receiver<bool>) {
    loop {
        let serving_now = *serving.borrow_and_update();
        {
            let Some(c) = coordinator.upgrade() else { return };
            if c.is_stopping() {
                return;
            }
            let active = *c.active.borrow();
            if serving_now && !active {
                c.activate();
            } else if !serving_now && active {
                c.deactivate().await;
            }
        }
        if serving.changed().await.is_err() {
            return;
        }
    }
}

async fn run_timers(coordinator: Weak<GroupCoordinator>) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(c) = coordinator.upgrade() else { return };
        c.tick_due().await;
    }
}

async fn run_offset_expiry(coordinator: Weak<GroupCoordinator>) {
    let period = {
        let Some(c) = coordinator.upgrade() else { return };
        // Kafka checks every 10 minutes (offsets.retention.check.interval.ms).
        Duration::from_millis((c.config.offsets_retention_ms / 2).clamp(1_000, 600_000) as u64)
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(c) = coordinator.upgrade() else { return };
        if let Err(e) = c.expire_offsets().await {
            warn!(error = %e, "expiring committed offsets failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_expire_after_retention_from_commit_or_from_emptiness() {
        let o = |t: i64| CommittedOffset { offset: 1, leader_epoch: -1, metadata: None, commit_timestamp_ms: t };
        let offsets = vec![("a".to_string(), 0, o(100)), ("a".to_string(), 1, o(500))];
        // A group that only commits: each offset by its own commit time.
        assert_eq!(expired_offsets(&offsets, None, 1_100, 1_000), vec![("a".to_string(), 0)]);
        assert!(expired_offsets(&offsets, None, 1_099, 1_000).is_empty());
        // A group that emptied at 2000: nothing before 3000, everything from then.
        assert!(expired_offsets(&offsets, Some(2_000), 2_999, 1_000).is_empty());
        assert_eq!(expired_offsets(&offsets, Some(2_000), 3_000, 1_000).len(), 2);
    }

    fn committed(offset: i64) -> CommittedOffset {
        CommittedOffset { offset, leader_epoch: 3, metadata: Some("m".into()), commit_timestamp_ms: 1 }
    }

    #[tokio::test]
    async fn committed_offsets_survive_restart_and_group_deletion_removes_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Arc::new(MetadataStore::open(dir.path()).expect("open"));
            let c = GroupCoordinator::start(1, store, CoordinatorConfig::default(), GroupMembers::single_node(1)).await.expect("start");
            assert!(c.is_active());
            let offsets = vec![("t".to_string(), 0, committed(5)), ("t".to_string(), 1, committed(9))];
            c.propose(CoordinatorCommand::CommitOffsets { group: "g".into(), offsets }).await.expect("commit");
            c.propose(CoordinatorCommand::CommitOffsets { group: "g2".into(), offsets: vec![("t".into(), 0, committed(1))] })
                .await
                .expect("commit");
            c.shutdown().await;
        }
        let store = Arc::new(MetadataStore::open(dir.path()).expect("reopen"));
        let c = GroupCoordinator::start(1, store, CoordinatorConfig::default(), GroupMembers::single_node(1)).await.expect("restart");
        let all = c.fetch_offsets("g", None).expect("fetch");
        assert_eq!(all, vec![("t".to_string(), 0, committed(5)), ("t".to_string(), 1, committed(9))]);
        let one = c.fetch_offsets("g", Some(&[("t".to_string(), 1), ("t".to_string(), 7)])).expect("fetch");
        assert_eq!(one, vec![("t".to_string(), 1, committed(9))]);
        assert_eq!(c.groups_with_offsets().expect("groups"), vec!["g".to_string(), "g2".to_string()]);
        c.propose(CoordinatorCommand::DeleteGroup { group: "g".into() }).await.expect("delete");
        assert!(c.fetch_offsets("g", None).expect("fetch").is_empty());
        assert_eq!(c.fetch_offsets("g2", None).expect("fetch").len(), 1);
        c.shutdown().await;
    }

    #[tokio::test]
    async fn a_leader_still_loading_answers_load_in_progress_not_not_coordinator() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(MetadataStore::open(dir.path()).expect("open"));
        let c = GroupCoordinator::start(1, store, CoordinatorConfig::default(), GroupMembers::single_node(1)).await.expect("start");
        assert!(c.check_active().is_ok());
        // Leading the group with the groups not (yet) loaded, as between election and load.
        c.active.send_replace(false);
        assert!(c.leads_group());
        assert!(matches!(c.fetch_offsets("g", None), Err(CoordinatorError::LoadInProgress)));
        assert_eq!(c.validate_commit("g", "", None, -1).await, Err(ResponseError::CoordinatorLoadInProgress.code()));
        assert_eq!(c.validate_txn_commit("g", "", None, -1).await, Err(ResponseError::CoordinatorLoadInProgress.code()));
        // A stopping node is not coming back as coordinator: clients must look elsewhere.
        c.stopping.store(true, Ordering::Relaxed);
        assert!(matches!(c.fetch_offsets("g", None), Err(CoordinatorError::NotCoordinator { .. })));
        c.shutdown().await;
    }
}
