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

use super::{Applied, BrokerMeta, ClusterError, ClusterState, ControllerCommand};
use crate::replication::types::storage_err;
use crate::replication::{bootstrap_single_voter, command_group_config, NoPeers, RocksLogStore};
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
                EntryPayload::Blank => ControllerReply(Ok(Applied::BrokerRegistered)),
                EntryPayload::Membership(m) => {
                    self.applied.membership = StoredMembership::new(Some(e.log_id), m);
                    ControllerReply(Ok(Applied::BrokerRegistered))
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
}

fn unavailable(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Unavailable(e.to_string())
}

impl Controller {
    /// Starts the controller group from `store` (initialising a one-voter group on first
    /// start), waits for a leader and registers this broker's client endpoint.
    pub async fn start(node_id: u64, host: String, port: u16, store: Arc<MetadataStore>) -> Result<Controller, ClusterError> {
        let (sm, state) = ControllerStateMachine::open(store.clone())?;
        let log = RocksLogStore::<ControllerRaft>::new(store.clone(), RAFT_PREFIX);
        let config = command_group_config("runnel-controller", 1_000, 100).map_err(unavailable)?;
        let raft = Raft::new(node_id, config, NoPeers, log, sm).await.map_err(unavailable)?;
        info!(node_id, "starting the controller group");
        bootstrap_single_voter(&raft, node_id, LEADER_WAIT).await.map_err(ClusterError::Unavailable)?;
        let controller = Controller { raft, state, store };
        let me = BrokerMeta { node_id, host, port, rack: None };
        if controller.state().brokers.get(&node_id) != Some(&me) {
            controller.propose(ControllerCommand::RegisterBroker(me)).await?;
        }
        Ok(controller)
    }

    /// Replicates `cmd` and applies it; returns what it changed or why it was refused.
    pub async fn propose(&self, cmd: ControllerCommand) -> Result<Applied, ClusterError> {
        match self.raft.client_write(cmd).await {
            Ok(resp) => resp.data.0,
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(ClusterError::NotController { leader: f.leader_id }),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => Err(unavailable(e)),
            Err(RaftError::Fatal(f)) => Err(unavailable(f)),
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

    /// Stops the group and flushes RocksDB.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "controller shutdown");
        }
        if let Err(e) = self.store.flush() {
            tracing::warn!(error = %e, "flushing the metadata store");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use uuid::Uuid;

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
            let c = Controller::start(1, "127.0.0.1".into(), 9092, store).await.expect("start");
            assert_eq!(c.leader(), Some(1));
            assert_eq!(c.propose(create("orders")).await, Ok(Applied::TopicCreated));
            assert!(matches!(c.propose(create("orders")).await, Err(ClusterError::TopicAlreadyExists(_))));
            id = c.state().topics["orders"].id;
            c.shutdown().await;
        }
        let store = Arc::new(MetadataStore::open(dir.path()).expect("reopen"));
        let c = Controller::start(1, "127.0.0.1".into(), 9093, store).await.expect("restart");
        let s = c.state();
        assert_eq!(s.topics["orders"].id, id);
        assert_eq!(s.topics["orders"].partitions.len(), 2);
        assert_eq!(s.topics["orders"].configs.get("retention.ms").map(String::as_str), Some("1000"));
        assert_eq!(s.brokers[&1].port, 9093, "a changed endpoint is re-registered");
        c.shutdown().await;
    }

    /// Three voters over the node-to-node transport: a command proposed on the leader is
    /// applied by all three; with the leader gone the other two elect a new one and go on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_voters_replicate_over_the_transport_and_survive_the_leader() {
        use crate::replication::transport::frame::GroupId;
        use crate::replication::transport::peer::{PeerTransport, TransportLimits};
        use crate::replication::transport::raft::{GroupNetwork, GroupRouter};

        let dir = tempfile::tempdir().expect("tempdir");
        let mut nodes = Vec::new();
        for id in 1..=3u64 {
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
            let store = Arc::new(MetadataStore::open(&dir.path().join(id.to_string())).expect("store"));
            let (sm, state) = ControllerStateMachine::open(store.clone()).expect("state machine");
            let log = RocksLogStore::<ControllerRaft>::new(store, RAFT_PREFIX);
            let config = command_group_config("runnel-controller", 1_000, 100).expect("config");
            let network = GroupNetwork::new(transport.clone(), GroupId::Controller);
            let raft = Raft::new(*id, config, network, log, sm).await.expect("raft");
            router.register(GroupId::Controller, Arc::new(raft.clone()));
            rafts.push((raft, state));
        }
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
            write(first, ControllerCommand::RegisterBroker(BrokerMeta { node_id: id, host: "127.0.0.1".into(), port: 9092, rack: None })).await;
        }
        write(first, create("orders")).await;
        applied_everywhere(&rafts, "orders", None).await;

        // The leader goes away: its raft stops and its node answers no raft RPC.
        rafts[first].0.shutdown().await.expect("shutdown");
        nodes[first].1.unregister(GroupId::Controller);
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
}
