//! The controller raft group: cluster metadata commands replicated through openraft, with
//! the raft log (`replication::RocksLogStore`), vote and applied state in RocksDB. In
//! single-node mode the group has one voter; more voters make it KRaft-like without
//! changing what is stored.
// openraft's StorageError is large, and it is what its storage traits return; the helpers
// here return it unchanged rather than boxing it only to unbox it again.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{BasicNode, EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, Raft, StoredMembership};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::info;

use bytes::Bytes;
use futures::future::BoxFuture;

use super::{Applied, BrokerMeta, ClusterError, ClusterState, ControllerCommand};
use crate::replication::transport::frame::{GroupId, Kind};
use crate::replication::transport::peer::{PeerTransport, TransportError};
use crate::replication::transport::raft::{decode, encode, GroupNetwork, InboundGroup};
use crate::replication::types::storage_err;
use crate::replication::{add_learners, bootstrap_single_voter, command_group_config, initialize_voters, watch_serving, GroupMembers, RocksLogStore};
use crate::store::{cf, from_json, to_json, MetadataStore, StoreOp};

/// The reply to a proposer: what the command changed, or why it was refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControllerReply(pub Result<Applied, ClusterError>);

openraft::declare_raft_types!(
    /// openraft types of the controller group.
    pub ControllerRaft:
        D = ControllerCommand,
        R = ControllerReply,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<ControllerRaft>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

type LogId = openraft::LogId<u64>;
type Entry = openraft::Entry<ControllerRaft>;
type StorageError = openraft::StorageError<u64>;
type Membership = StoredMembership<u64, BasicNode>;

const KEY_STATE: &[u8] = b"state";
/// Key prefix of the controller's raft log and raft state.
const RAFT_PREFIX: &[u8] = b"controller/";

/// How long start-up waits for the controller group to elect a leader.
const LEADER_WAIT: Duration = Duration::from_secs(10);

fn read_err(subject: ErrorSubject<u64>, e: impl std::error::Error + 'static) -> StorageError {
    storage_err(subject, ErrorVerb::Read, e)
}

fn write_err(subject: ErrorSubject<u64>, e: impl std::error::Error + 'static) -> StorageError {
    storage_err(subject, ErrorVerb::Write, e)
}

/// The applied metadata as stored (and as a snapshot carries it).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AppliedRecord {
    last_applied: Option<LogId>,
    membership: Membership,
    state: ClusterState,
}

/// The controller state machine: `ClusterState` plus where it stands in the log.
struct ControllerStateMachine {
    store: Arc<MetadataStore>,
    applied: AppliedRecord,
    publish: watch::Sender<Arc<ClusterState>>,
}

impl ControllerStateMachine {
    /// The state machine as `store` last persisted it, and the receiver of its states.
    fn open(store: Arc<MetadataStore>) -> Result<(ControllerStateMachine, watch::Receiver<Arc<ClusterState>>), ClusterError> {
        let applied: AppliedRecord = store.get_json(cf::CLUSTER, KEY_STATE).map_err(unavailable)?.unwrap_or_default();
        let (publish, state) = watch::channel(Arc::new(applied.state.clone()));
        Ok((ControllerStateMachine { store, applied, publish }, state))
    }

    fn persist(&self) -> Result<(), StorageError> {
        let value = to_json(&self.applied).map_err(|e| write_err(ErrorSubject::StateMachine, e))?;
        self.store
            .write(&[StoreOp::Put { cf: cf::CLUSTER, key: KEY_STATE, value: &value }], true)
            .map_err(|e| write_err(ErrorSubject::StateMachine, e))
    }

    fn snapshot(&self) -> Result<Snapshot<ControllerRaft>, StorageError> {
        let data = to_json(&self.applied).map_err(|e| write_err(ErrorSubject::Snapshot(None), e))?;
        let meta = SnapshotMeta {
            last_log_id: self.applied.last_applied,
            last_membership: self.applied.membership.clone(),
            snapshot_id: format!("controller-{}", self.applied.last_applied.map(|l| l.index).unwrap_or(0)),
        };
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

/// Snapshots are built from a copy of the applied record taken when building starts.
struct ControllerSnapshotBuilder(ControllerStateMachine);

impl RaftSnapshotBuilder<ControllerRaft> for ControllerSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<ControllerRaft>, StorageError> {
        self.0.snapshot()
    }
}

impl RaftStateMachine<ControllerRaft> for ControllerStateMachine {
    type SnapshotBuilder = ControllerSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        Ok((self.applied.last_applied, self.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ControllerReply>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut replies = Vec::new();
        for e in entries {
            let reply = match e.payload {
                EntryPayload::Normal(cmd) => ControllerReply(self.applied.state.apply(cmd)),
                EntryPayload::Blank => ControllerReply(Ok(Applied::Nothing)),
                EntryPayload::Membership(m) => {
                    self.applied.membership = StoredMembership::new(Some(e.log_id), m);
                    ControllerReply(Ok(Applied::Nothing))
                }
            };
            self.applied.last_applied = Some(e.log_id);
            replies.push(reply);
        }
        self.persist()?;
        self.publish.send_replace(Arc::new(self.applied.state.clone()));
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        ControllerSnapshotBuilder(ControllerStateMachine {
            store: self.store.clone(),
            applied: self.applied.clone(),
            publish: self.publish.clone(),
        })
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let record: AppliedRecord = from_json(KEY_STATE, &snapshot.into_inner())
            .map_err(|e| read_err(ErrorSubject::Snapshot(Some(meta.signature())), e))?;
        self.applied = AppliedRecord { last_applied: meta.last_log_id, membership: meta.last_membership.clone(), state: record.state };
        self.persist()?;
        self.publish.send_replace(Arc::new(self.applied.state.clone()));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<ControllerRaft>>, StorageError> {
        Ok(Some(self.snapshot()?))
    }
}

/// This node's handle on the controller group.
pub struct Controller {
    raft: Raft<ControllerRaft>,
    state: watch::Receiver<Arc<ClusterState>>,
    store: Arc<MetadataStore>,
    node_id: u64,
    /// The controller voters (empty in single-node mode), tried in turn when no leader is known.
    voters: Vec<u64>,
    transport: Arc<PeerTransport>,
}

/// How this node takes part in the controller group.
pub struct ControllerSetup {
    /// This broker as it registers itself.
    pub me: BrokerMeta,
    pub members: GroupMembers,
    /// The id a new cluster takes if this node's proposal is the first committed.
    pub proposed_cluster_id: String,
}

/// The controller quorum as DescribeQuorum (KIP-595, KIP-853) reports it, seen from its
/// leader. Offsets are raft log indexes plus one (the offset after the last entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumInfo {
    pub leader: u64,
    /// The raft term.
    pub epoch: i32,
    /// The offset after the last entry the leader has applied (so committed).
    pub high_watermark: i64,
    pub voters: Vec<QuorumReplica>,
    /// Nodes that replicate the controller log without voting (raft learners).
    pub observers: Vec<QuorumReplica>,
}

/// One replica of the controller log, as its leader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumReplica {
    pub node_id: u64,
    /// The offset after the replica's last entry known to match the leader's; -1: unknown.
    pub log_end_offset: i64,
    /// When the leader last heard from the replica (ms since the epoch); -1: never.
    pub last_fetch_ms: i64,
    /// When the replica was last seen holding every entry of the leader's log: the time it
    /// was last heard from if it holds them now, else -1 (unknown).
    pub last_caught_up_ms: i64,
}

/// The offset after the entry at raft log `index` (DescribeQuorum's offsets).
fn offset_after(index: u64) -> i64 {
    i64::try_from(index).unwrap_or(i64::MAX).saturating_add(1)
}

/// The quorum from the leader's raft metrics; `None` on a node that does not lead.
/// `heard_ago` says how long ago a node was last heard from.
fn quorum_info(m: &openraft::RaftMetrics<u64, BasicNode>, now_ms: i64, heard_ago: impl Fn(u64) -> Option<Duration>) -> Option<QuorumInfo> {
    if m.state != openraft::ServerState::Leader {
        return None;
    }
    let end = m.last_log_index.map_or(0, offset_after);
    let replica = |id: u64| {
        if id == m.id {
            return QuorumReplica { node_id: id, log_end_offset: end, last_fetch_ms: now_ms, last_caught_up_ms: now_ms };
        }
        let matched = m.replication.as_ref().and_then(|r| r.get(&id).copied().flatten());
        let log_end_offset = matched.map_or(-1, |l| offset_after(l.index));
        let last_fetch_ms = heard_ago(id).map_or(-1, |ago| now_ms.saturating_sub(i64::try_from(ago.as_millis()).unwrap_or(i64::MAX)));
        let last_caught_up_ms = if log_end_offset == end { last_fetch_ms } else { -1 };
        QuorumReplica { node_id: id, log_end_offset, last_fetch_ms, last_caught_up_ms }
    };
    let membership = m.membership_config.membership();
    Some(QuorumInfo {
        leader: m.id,
        epoch: i32::try_from(m.vote.leader_id().term).unwrap_or(i32::MAX),
        high_watermark: m.last_applied.map_or(0, |l| offset_after(l.index)),
        voters: membership.voter_ids().map(replica).collect(),
        observers: membership.learner_ids().map(replica).collect(),
    })
}

fn local_quorum(raft: &Raft<ControllerRaft>, transport: &PeerTransport) -> Option<QuorumInfo> {
    quorum_info(&raft.metrics().borrow(), crate::clock::now_ms(), |id| transport.heard_ago(id))
}

/// The answer to a proposal forwarded to the leader.
#[derive(Debug, Serialize, Deserialize)]
struct Forwarded {
    result: Result<Applied, ClusterError>,
    /// Log index of the entry, so the forwarding node can wait until it applied it too.
    index: u64,
}

/// The controller's end of the transport: raft RPCs, proposals other nodes forward, and
/// their questions about the quorum.
struct ControllerInbound(Raft<ControllerRaft>, Arc<PeerTransport>);

impl InboundGroup for ControllerInbound {
    fn handle(&self, kind: Kind, body: Bytes) -> BoxFuture<'static, Result<Bytes, String>> {
        if kind == Kind::Query {
            let answer = local_quorum(&self.0, &self.1).ok_or(ClusterError::NotController { leader: self.0.metrics().borrow().current_leader });
            return Box::pin(std::future::ready(encode(&answer)));
        }
        if kind != Kind::Forward {
            return InboundGroup::handle(&self.0, kind, body);
        }
        let raft = self.0.clone();
        Box::pin(async move {
            let cmd: ControllerCommand = decode("forwarded controller command", &body)?;
            let answer = match raft.client_write(cmd).await {
                Ok(resp) => Forwarded { result: resp.data.0, index: resp.log_id.index },
                Err(e) => Forwarded { result: Err(write_error(e)), index: 0 },
            };
            encode(&answer)
        })
    }
}

fn write_error(e: RaftError<u64, ClientWriteError<u64, BasicNode>>) -> ClusterError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ClusterError::NotController { leader: f.leader_id },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => unavailable(e),
        RaftError::Fatal(f) => unavailable(f),
    }
}

/// How long a node may go unheard by the controller's leader before it is fenced (Kafka's
/// broker.session.timeout.ms).
const BROKER_SESSION_TIMEOUT: Duration = Duration::from_secs(9);
/// How long a node that still answers pings may leave the controller group unanswered
/// before it is fenced: a node busy starting thousands of partitions can fall behind on
/// the controller's log for longer than a session while it is plainly alive.
const BROKER_SESSION_TIMEOUT_WHILE_PINGED: Duration = Duration::from_secs(30);

/// Whether a node is fenced: the controller group last heard from it `raft_ago` ago and its
/// node last answered anything (pings included) `heard_ago` ago (`None`: never).
fn silent_broker(raft_ago: Duration, heard_ago: Option<Duration>) -> bool {
    let alive = heard_ago.is_some_and(|ago| ago < BROKER_SESSION_TIMEOUT);
    raft_ago >= BROKER_SESSION_TIMEOUT && (!alive || raft_ago >= BROKER_SESSION_TIMEOUT_WHILE_PINGED)
}

/// While this node leads the controller group: fences registered nodes that have not
/// answered it (heartbeats and appends reach voters and learners alike) for
/// `BROKER_SESSION_TIMEOUT`, or for `BROKER_SESSION_TIMEOUT_WHILE_PINGED` when their node
/// still answers pings (`silent_broker`), and unfences them when they answer again. A new leader waits
/// one session before fencing anybody, since it has heard from nobody yet.
async fn fence_silent_brokers(raft: Raft<ControllerRaft>, network: GroupNetwork, state: watch::Receiver<Arc<ClusterState>>) {
    let mut leading_since: Option<std::time::Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (me, leader) = {
            let m = raft.metrics();
            let m = m.borrow();
            if m.running_state.is_err() {
                return;
            }
            (m.id, m.state == openraft::ServerState::Leader)
        };
        if !leader {
            leading_since = None;
            continue;
        }
        let since = *leading_since.get_or_insert_with(std::time::Instant::now);
        if since.elapsed() < BROKER_SESSION_TIMEOUT {
            continue;
        }
        let answers = network.last_answers();
        let changes: Vec<(u64, bool)> = state
            .borrow()
            .brokers
            .values()
            .filter(|b| b.node_id != me)
            .filter_map(|b| {
                // Never answered this leader: silent for as long as it has led at least.
                let raft_ago = answers.get(&b.node_id).map_or(since.elapsed(), |t| t.elapsed());
                let silent = silent_broker(raft_ago, network.heard_ago(b.node_id));
                (silent != b.fenced).then_some((b.node_id, silent))
            })
            .collect();
        for (node_id, fenced) in changes {
            info!(node = node_id, fenced, "broker liveness changed");
            if let Err(e) = raft.client_write(ControllerCommand::FenceBroker { node_id, fenced }).await {
                tracing::debug!(error = %e, "cannot record broker liveness");
            }
        }
    }
}

/// How long stopping the controller group may take.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// How long a proposal looks for a leader before NOT_CONTROLLER.
const PROPOSE_WAIT: Duration = Duration::from_secs(10);
/// How long one forwarded proposal may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

fn unavailable(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Unavailable(e.to_string())
}

impl Controller {
    /// Starts the controller group from `store` and waits for a leader: a one-voter group
    /// initialised on first start in single-node mode; in a cluster every voter initialises
    /// the same voter set (safe in openraft), and other nodes join as learners once
    /// registered. Then registers this broker and names the cluster if nobody has.
    pub async fn start(setup: ControllerSetup, store: Arc<MetadataStore>) -> Result<Controller, ClusterError> {
        let node_id = setup.me.node_id;
        let (sm, state) = ControllerStateMachine::open(store.clone())?;
        let log = RocksLogStore::<ControllerRaft>::new(store.clone(), RAFT_PREFIX);
        let members = setup.members;
        let config = command_group_config("runnel-controller", 1_000, 100, members.timing()).map_err(unavailable)?;
        let network = GroupNetwork::new(members.transport.clone(), GroupId::Controller);
        let raft = Raft::new(node_id, config, network.clone(), log, sm).await.map_err(unavailable)?;
        members.router.register(GroupId::Controller, Arc::new(ControllerInbound(raft.clone(), members.transport.clone())));
        if !members.voters.is_empty() {
            let _ = watch_serving(raft.metrics(), GroupId::Controller, Some(tracing::Level::INFO));
        }
        info!(node_id, voters = ?members.voters, "starting the controller group");
        if members.voters.is_empty() {
            bootstrap_single_voter(&raft, node_id, LEADER_WAIT).await.map_err(ClusterError::Unavailable)?;
        } else {
            if members.voters.contains(&node_id) {
                initialize_voters(&raft, &members.voters).await.map_err(ClusterError::Unavailable)?;
            }
            tokio::spawn(add_learners(raft.clone(), state.clone()));
            tokio::spawn(fence_silent_brokers(raft.clone(), network, state.clone()));
        }
        let controller = Controller { raft, state, store, node_id, voters: members.voters, transport: members.transport };
        // Registration needs a quorum: keep trying, as a KRaft broker does, until there is one.
        let mut waited = Duration::ZERO;
        loop {
            let registered = controller.state().brokers.get(&node_id) == Some(&setup.me);
            let result = if registered { Ok(Applied::BrokerRegistered) } else { controller.propose(ControllerCommand::RegisterBroker(setup.me.clone())).await };
            match result {
                Ok(_) => break,
                Err(ClusterError::NotController { .. } | ClusterError::Unavailable(_)) if !controller.voters.is_empty() => {
                    waited += PROPOSE_WAIT;
                    tracing::warn!(waited_s = waited.as_secs(), "no controller quorum yet; waiting for more voters");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        }
        if controller.state().cluster_id.is_none() {
            controller.propose(ControllerCommand::InitCluster { cluster_id: setup.proposed_cluster_id }).await?;
        }
        Ok(controller)
    }

    /// Replicates `cmd` and applies it; returns what it changed or why it was refused. On a
    /// node that does not lead the group, the command is forwarded to the leader, and the
    /// answer waits until this node has applied it too (so the caller reads its own write).
    pub async fn propose(&self, cmd: ControllerCommand) -> Result<Applied, ClusterError> {
        let deadline = tokio::time::Instant::now() + PROPOSE_WAIT;
        let mut hint: Option<u64> = None;
        let mut next_voter = 0usize;
        loop {
            let leader = match self.raft.client_write(cmd.clone()).await {
                Ok(resp) => return resp.data.0,
                Err(e) => match write_error(e) {
                    ClusterError::NotController { leader } => hint.take().or(leader),
                    other => return Err(other),
                },
            };
            let target = leader.filter(|l| *l != self.node_id).or_else(|| {
                let others: Vec<u64> = self.voters().into_iter().filter(|v| *v != self.node_id).collect();
                next_voter += 1;
                others.get(next_voter % others.len().max(1)).copied()
            });
            if let Some(target) = target {
                let body = encode(&cmd).map_err(unavailable)?;
                match self.transport.request(target, Kind::Forward, GroupId::Controller, body, FORWARD_TIMEOUT).await {
                    Ok(reply) => {
                        let answer: Forwarded = decode("forwarded answer", &reply).map_err(unavailable)?;
                        match answer.result {
                            Err(ClusterError::NotController { leader }) => hint = leader.filter(|l| *l != target),
                            result => {
                                self.wait_applied(answer.index, deadline).await;
                                return result;
                            }
                        }
                    }
                    // It may have been applied: the caller decides whether to retry.
                    Err(TransportError::Timeout(_)) => return Err(unavailable(format!("node {target} did not answer a forwarded proposal"))),
                    Err(e) => tracing::debug!(error = %e, "forwarding a controller proposal"),
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClusterError::NotController { leader });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (until `deadline`) for this node to have applied the entry at `index`.
    async fn wait_applied(&self, index: u64, deadline: tokio::time::Instant) {
        let mut m = self.raft.metrics();
        while m.borrow().last_applied.is_none_or(|l| l.index < index) {
            if tokio::time::timeout_at(deadline, m.changed()).await.map_or(true, |r| r.is_err()) {
                return;
            }
        }
    }

    /// The latest applied metadata.
    pub fn state(&self) -> Arc<ClusterState> {
        self.state.borrow().clone()
    }

    /// A receiver notified whenever the metadata changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterState>> {
        self.state.clone()
    }

    /// The current controller leader, if known.
    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    /// The controller voters now: the group's raft membership as this node knows it (the
    /// `voters` setting only names the first ones, and stands in until this node has
    /// received the membership). Empty in single-node mode.
    pub fn voters(&self) -> Vec<u64> {
        if self.voters.is_empty() {
            return Vec::new();
        }
        let current = crate::replication::current_voters(&self.raft);
        if current.is_empty() {
            self.voters.clone()
        } else {
            current.into_iter().collect()
        }
    }

    /// The quorum (DescribeQuorum): this node's view when it leads, else its leader's.
    pub async fn describe_quorum(&self) -> Result<QuorumInfo, ClusterError> {
        if let Some(q) = local_quorum(&self.raft, &self.transport) {
            return Ok(q);
        }
        let leader = self.leader().filter(|l| *l != self.node_id).ok_or(ClusterError::NotController { leader: None })?;
        let reply = self.transport.request(leader, Kind::Query, GroupId::Controller, Bytes::new(), FORWARD_TIMEOUT).await.map_err(unavailable)?;
        decode::<Result<QuorumInfo, ClusterError>>("quorum answer", &reply).map_err(unavailable)?
    }

    /// Whether the group's membership is settled (not between two voter sets).
    pub fn voters_settled(&self) -> bool {
        self.raft.metrics().borrow().membership_config.membership().get_joint_config().len() == 1
    }

    /// KIP-853 on the controller's leader: makes the registered node `node` a controller
    /// voter (`add`; it catches up as a learner first), or a learner again. The node
    /// leading the coordinator group follows the new voter set (`Node::follow_voters`).
    pub async fn change_voter(&self, node: u64, add: bool) -> Result<(), ClusterError> {
        if self.voters.is_empty() {
            return Err(ClusterError::InvalidVoterChange("a single node has no controller voters to change".into()));
        }
        if self.raft.metrics().borrow().state != openraft::ServerState::Leader {
            return Err(ClusterError::NotController { leader: self.leader() });
        }
        let mut target: std::collections::BTreeSet<u64> = crate::replication::current_voters(&self.raft);
        if add {
            if target.contains(&node) {
                return Err(ClusterError::DuplicateVoter(node));
            }
            if !self.state().brokers.contains_key(&node) {
                return Err(ClusterError::BrokerNotRegistered(node));
            }
            target.insert(node);
        } else {
            if !target.remove(&node) {
                return Err(ClusterError::VoterNotFound(node));
            }
            if target.is_empty() {
                return Err(ClusterError::InvalidVoterChange(format!("node {node} is the last controller voter")));
            }
        }
        info!(node, add, voters = ?target, "changing the controller voters");
        crate::replication::set_voters(&self.raft, &target, true).await.map_err(ClusterError::Unavailable)
    }

    /// Stops the group and flushes RocksDB.
    pub async fn shutdown(&self) {
        // Bounded: openraft 0.9 may not return from shutting down a group that installed a
        // snapshot; everything it acknowledged is on disk already.
        match tokio::time::timeout(SHUTDOWN_WAIT, self.raft.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "controller shutdown"),
            Err(_) => tracing::warn!("the controller group did not stop within {SHUTDOWN_WAIT:?}; going on"),
        }
        if let Err(e) = self.store.flush() {
            tracing::warn!(error = %e, "flushing the metadata store");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_that_answers_pings_is_fenced_only_after_a_longer_silence_of_the_controller_group() {
        let s = Duration::from_secs;
        // Dead: nothing heard for a session.
        assert!(silent_broker(s(9), Some(s(9))));
        assert!(silent_broker(s(9), None));
        // Heard by the group within a session: live, whatever the pings.
        assert!(!silent_broker(s(8), None));
        // Busy: the group has not heard from it for a session, but its node answers pings.
        assert!(!silent_broker(s(20), Some(Duration::from_millis(300))));
        // ...until the group has not heard from it for much longer.
        assert!(silent_broker(s(30), Some(Duration::from_millis(300))));
    }
    use std::collections::BTreeMap;
    use uuid::Uuid;

    fn single(port: u16) -> ControllerSetup {
        ControllerSetup {
            me: BrokerMeta { node_id: 1, host: "127.0.0.1".into(), port, rack: None, raft_endpoint: String::new(), fenced: false },
            members: GroupMembers::single_node(1),
            proposed_cluster_id: "test-cluster".into(),
        }
    }

    fn create(name: &str) -> ControllerCommand {
        ControllerCommand::CreateTopic {
            name: name.into(),
            id: Uuid::new_v4(),
            partitions: 2,
            replication_factor: 1,
            assignments: None,
            configs: BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]),
        }
    }

    #[tokio::test]
    async fn metadata_survives_restart_and_refusals_change_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id;
        {
            let store = Arc::new(MetadataStore::open(dir.path()).expect("open"));
            let c = Controller::start(single(9092), store).await.expect("start");
            assert_eq!(c.leader(), Some(1));
            assert_eq!(c.propose(create("orders")).await, Ok(Applied::TopicCreated));
            assert!(matches!(c.propose(create("orders")).await, Err(ClusterError::TopicAlreadyExists(_))));
            id = c.state().topics["orders"].id;
            c.shutdown().await;
        }
        let store = Arc::new(MetadataStore::open(dir.path()).expect("reopen"));
        let c = Controller::start(single(9093), store).await.expect("restart");
        let s = c.state();
        assert_eq!(s.topics["orders"].id, id);
        assert_eq!(s.topics["orders"].partitions.len(), 2);
        assert_eq!(s.topics["orders"].configs.get("retention.ms").map(String::as_str), Some("1000"));
        assert_eq!(s.brokers[&1].port, 9093, "a changed endpoint is re-registered");
        c.shutdown().await;
    }

    /// Short timings, so that the tests' elections are quick.
    const FAST_ELECTIONS: crate::replication::GroupTiming = crate::replication::GroupTiming { heartbeat_ms: 100, election_min_ms: 300, election_max_ms: 600 };

    type TestNode = (u64, Arc<crate::replication::transport::raft::GroupRouter>, Arc<crate::replication::transport::peer::PeerTransport>);
    type TestController = (Raft<ControllerRaft>, watch::Receiver<Arc<ClusterState>>);

    /// `n` controller rafts (nodes 1..=n), each with its own store and transport on
    /// loopback, every transport knowing every other; none initialised.
    async fn controllers_over_the_transport(dir: &std::path::Path, n: u64, snapshot_every: u64, keep: u64) -> (Vec<TestNode>, Vec<TestController>) {
        use crate::replication::transport::frame::GroupId;
        use crate::replication::transport::peer::{PeerTransport, TransportLimits};
        use crate::replication::transport::raft::{GroupNetwork, GroupRouter};

        let mut nodes = Vec::new();
        for id in 1..=n {
            let router = Arc::new(GroupRouter::default());
            let transport = PeerTransport::start(id, "127.0.0.1:0".parse().expect("addr"), Default::default(), router.clone(), TransportLimits::default())
                .await
                .expect("transport");
            nodes.push((id, router, transport));
        }
        for (_, _, t) in &nodes {
            for (peer, _, other) in &nodes {
                t.set_address(*peer, other.local_addr());
            }
        }
        let mut rafts = Vec::new();
        for (id, router, transport) in &nodes {
            let store = Arc::new(MetadataStore::open(&dir.join(id.to_string())).expect("store"));
            let (sm, state) = ControllerStateMachine::open(store.clone()).expect("state machine");
            let log = RocksLogStore::<ControllerRaft>::new(store, RAFT_PREFIX);
            let config = command_group_config("runnel-controller", snapshot_every, keep, FAST_ELECTIONS).expect("config");
            let raft = Raft::new(*id, config, GroupNetwork::new(transport.clone(), GroupId::Controller), log, sm).await.expect("raft");
            router.register(GroupId::Controller, Arc::new(ControllerInbound(raft.clone(), transport.clone())));
            rafts.push((raft, state));
        }
        (nodes, rafts)
    }

    /// Three voters over the node-to-node transport: a command proposed on the leader is
    /// applied by all three; with the leader gone the other two elect a new one and go on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_voters_replicate_over_the_transport_and_survive_the_leader() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (nodes, rafts) = controllers_over_the_transport(dir.path(), 3, 1_000, 100).await;
        let voters: BTreeMap<u64, BasicNode> = (1..=3).map(|id| (id, BasicNode::default())).collect();
        rafts[0].0.initialize(voters).await.expect("initialise");

        let leader = |rafts: &[(Raft<ControllerRaft>, watch::Receiver<Arc<ClusterState>>)], skip: Option<usize>| {
            let rafts = rafts.to_vec();
            async move {
                for _ in 0..100 {
                    for (i, (r, _)) in rafts.iter().enumerate() {
                        if Some(i) != skip && r.metrics().borrow().current_leader == Some(i as u64 + 1) {
                            return i;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                panic!("no leader elected");
            }
        };
        let applied_everywhere = |rafts: &[(Raft<ControllerRaft>, watch::Receiver<Arc<ClusterState>>)], name: &str, skip: Option<usize>| {
            let (rafts, name) = (rafts.to_vec(), name.to_string());
            async move {
                for _ in 0..100 {
                    if rafts.iter().enumerate().all(|(i, (_, s))| Some(i) == skip || s.borrow().topics.contains_key(&name)) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let metrics: Vec<String> = rafts
                    .iter()
                    .map(|(r, s)| {
                        let m = r.metrics().borrow().clone();
                        format!("node {}: leader {:?} applied {:?} log {:?} topics {:?}", m.id, m.current_leader, m.last_applied, m.last_log_index, s.borrow().topics.keys().collect::<Vec<_>>())
                    })
                    .collect();
                panic!("{name} not applied on every live voter:\n{}", metrics.join("\n"));
            }
        };

        let first = leader(&rafts, None).await;
        let write = |i: usize, cmd: ControllerCommand| {
            let raft = rafts[i].0.clone();
            async move { raft.client_write(cmd).await.expect("written on the leader").data.0.expect("applied") }
        };
        for id in 1..=3u64 {
            write(first, ControllerCommand::RegisterBroker(BrokerMeta { node_id: id, host: "127.0.0.1".into(), port: 9092, rack: None, raft_endpoint: String::new(), fenced: false })).await;
        }
        write(first, create("orders")).await;
        applied_everywhere(&rafts, "orders", None).await;

        // DescribeQuorum's view, asked over the transport: the leader answers with every
        // voter caught up and recently heard; a follower refuses, naming the leader.
        let other = (first + 1) % 3;
        let ask = |from: usize, to: usize| {
            let t = nodes[from].2.clone();
            async move {
                let reply = t.request(to as u64 + 1, Kind::Query, GroupId::Controller, Bytes::new(), Duration::from_secs(5)).await.expect("answered");
                decode::<Result<QuorumInfo, ClusterError>>("quorum", &reply).expect("decodes")
            }
        };
        let mut quorum = None;
        for _ in 0..100 {
            let q = ask(other, first).await.expect("the leader answers");
            let end = q.voters.iter().find(|v| v.node_id == first as u64 + 1).map(|v| v.log_end_offset);
            if q.voters.iter().all(|v| Some(v.log_end_offset) == end && v.last_caught_up_ms > 0) {
                quorum = Some(q);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let q = quorum.expect("every voter caught up in the leader's view");
        assert_eq!(q.leader, first as u64 + 1);
        assert_eq!(q.voters.iter().map(|v| v.node_id).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(q.observers.is_empty());
        assert_eq!(q.epoch, i32::try_from(rafts[first].0.metrics().borrow().current_term).expect("term"));
        assert!(q.high_watermark > 0 && q.voters.iter().all(|v| v.log_end_offset >= q.high_watermark));
        let now = crate::clock::now_ms();
        assert!(q.voters.iter().all(|v| v.last_fetch_ms > now - 5_000 && v.last_fetch_ms <= now));
        match ask(first, other).await {
            Err(ClusterError::NotController { leader }) => assert_eq!(leader, Some(first as u64 + 1)),
            r => panic!("a follower answered {r:?}"),
        }

        // The leader goes away: its raft stops and its node answers no raft RPC.
        rafts[first].0.shutdown().await.expect("shutdown");
        nodes[first].1.unregister(crate::replication::transport::frame::GroupId::Controller);
        let second = leader(&rafts, Some(first)).await;
        assert_ne!(second, first);
        write(second, create("payments")).await;
        applied_everywhere(&rafts, "payments", Some(first)).await;
        for (i, (r, _)) in rafts.iter().enumerate() {
            if i != first {
                r.shutdown().await.expect("shutdown");
            }
        }
    }

    /// A node that joins after the voters have compacted their log into a snapshot gets
    /// the metadata by snapshot, over the transport.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_learner_joining_late_receives_the_metadata_by_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A snapshot every 5 entries, keeping none after it.
        let (_nodes, rafts) = controllers_over_the_transport(dir.path(), 4, 5, 0).await;
        let voters: BTreeMap<u64, BasicNode> = (1..=3).map(|id| (id, BasicNode::default())).collect();
        rafts[0].0.initialize(voters).await.expect("initialise");
        let mut leader = None;
        for _ in 0..100 {
            leader = rafts[..3].iter().position(|(r, _)| r.metrics().borrow().state == openraft::ServerState::Leader);
            if leader.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let leader = &rafts[leader.expect("a leader")].0;
        let broker = BrokerMeta { node_id: 1, host: "127.0.0.1".into(), port: 9092, rack: None, raft_endpoint: String::new(), fenced: false };
        leader.client_write(ControllerCommand::RegisterBroker(broker)).await.expect("written").data.0.expect("applied");
        for i in 0..20 {
            leader.client_write(create(&format!("topic-{i}"))).await.expect("written").data.0.expect("applied");
        }
        leader.trigger().snapshot().await.expect("snapshot");
        let mut m = leader.metrics();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while m.borrow().purged.is_none() {
            tokio::time::timeout_at(deadline, m.changed()).await.expect("the log is purged after a snapshot").expect("metrics");
        }
        let added = tokio::time::timeout(Duration::from_secs(20), leader.add_learner(4, BasicNode::default(), true)).await;
        assert!(added.is_ok(), "learner not caught up in 20 s: leader {:?} learner {:?}", leader.metrics().borrow(), rafts[3].0.metrics().borrow());
        added.expect("in time").expect("learner caught up");
        let learner = &rafts[3];
        let mut state = learner.1.clone();
        let all = tokio::time::timeout(Duration::from_secs(10), state.wait_for(|s| s.topics.len() == 20)).await;
        let m = learner.0.metrics().borrow().clone();
        assert!(all.is_ok(), "the learner has every topic: {} of 20; metrics {m:?}", learner.1.borrow().topics.len());
        let mut lm = learner.0.metrics();
        let installed = tokio::time::timeout(Duration::from_secs(10), lm.wait_for(|m| m.snapshot.is_some())).await;
        assert!(installed.is_ok(), "installed from a snapshot");
        for (r, _) in &rafts[..3] {
            r.shutdown().await.expect("shutdown");
        }
        // Known issue: openraft 0.9's shutdown of a group that installed a snapshot does not
        // return (seen here every run); bounded so the test ends. See docs/operations.md.
        let _ = tokio::time::timeout(Duration::from_secs(2), rafts[3].0.shutdown()).await;
    }
}
