//! openraft over the transport: `GroupNetwork` sends one group's raft RPCs to peers, and
//! `GroupRouter` hands each inbound RPC to the local raft of the group it names. Bodies
//! are JSON for now (openraft's serde types); partition entries will get a binary form
//! that keeps record batches zero-copy.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use bytes::Bytes;
use futures::future::BoxFuture;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest, VoteResponse};
use openraft::{BasicNode, Raft, RaftTypeConfig};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::frame::{GroupId, Kind};
use super::peer::{InboundHandler, PeerTransport, TransportError};

/// The raft network of one group: every RPC goes over the shared transport, tagged with
/// the group.
#[derive(Clone)]
pub struct GroupNetwork {
    transport: Arc<PeerTransport>,
    group: GroupId,
    /// When each peer last answered one of this group's RPCs.
    answers: Arc<std::sync::Mutex<HashMap<u64, Instant>>>,
}

impl GroupNetwork {
    pub fn new(transport: Arc<PeerTransport>, group: GroupId) -> Self {
        GroupNetwork { transport, group, answers: Arc::default() }
    }

    /// When each peer last answered this group (a follower that stopped answering is not
    /// in sync, however far its log got).
    pub fn last_answers(&self) -> HashMap<u64, Instant> {
        self.answers.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// How long ago `peer`'s node was last heard from at all (pings included).
    pub fn heard_ago(&self, peer: u64) -> Option<std::time::Duration> {
        self.transport.heard_ago(peer)
    }
}

/// A client of one peer for one group (openraft makes one per replication stream).
pub struct GroupPeer {
    network: GroupNetwork,
    target: u64,
}

impl<C: RaftTypeConfig<NodeId = u64, Node = BasicNode>> RaftNetworkFactory<C> for GroupNetwork
where
    AppendEntriesRequest<C>: Serialize,
    InstallSnapshotRequest<C>: Serialize,
{
    type Network = GroupPeer;
    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> GroupPeer {
        GroupPeer { network: self.clone(), target }
    }
}

fn rpc_error<E: std::error::Error>(e: TransportError) -> RPCError<u64, BasicNode, E> {
    match e {
        TransportError::UnknownPeer(_) | TransportError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
        TransportError::Timeout(_) | TransportError::Remote { .. } => RPCError::Network(NetworkError::new(&e)),
    }
}

impl GroupNetwork {
    fn note_answer(&self, peer: u64) {
        if let Ok(mut a) = self.answers.lock() {
            a.insert(peer, Instant::now());
        }
    }
}

impl GroupPeer {
    /// Sends one RPC; a `heartbeat` (AppendEntries without entries) goes in a batch with
    /// other groups' heartbeats to the same peer.
    async fn call<Req: Serialize, Resp: DeserializeOwned, E: std::error::Error + DeserializeOwned>(
        &self,
        kind: Kind,
        rpc: &Req,
        option: &RPCOption,
        heartbeat: bool,
    ) -> Result<Resp, RPCError<u64, BasicNode, RaftError<u64, E>>> {
        let body = Bytes::from(bincode::serialize(rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?);
        let (transport, group, ttl) = (&self.network.transport, self.network.group, option.hard_ttl());
        let reply = if heartbeat {
            transport.heartbeat(self.target, group, body, ttl).await
        } else {
            transport.request(self.target, kind, group, body, ttl).await
        };
        let reply = reply.map_err(rpc_error)?;
        self.network.note_answer(self.target);
        let result: Result<Resp, RaftError<u64, E>> = bincode::deserialize(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(self.target, e)))
    }
}

impl<C: RaftTypeConfig<NodeId = u64, Node = BasicNode>> RaftNetwork<C> for GroupPeer
where
    AppendEntriesRequest<C>: Serialize,
    InstallSnapshotRequest<C>: Serialize,
{
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let heartbeat = rpc.entries.is_empty();
        self.call(Kind::AppendEntries, &rpc, &option, heartbeat).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<C>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>> {
        self.call(Kind::InstallSnapshot, &rpc, &option, false).await
    }

    async fn vote(&mut self, rpc: VoteRequest<u64>, option: RPCOption) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(Kind::Vote, &rpc, &option, false).await
    }
}

/// A local raft group that answers RPCs from peers.
pub trait InboundGroup: Send + Sync + 'static {
    fn handle(&self, kind: Kind, body: Bytes) -> BoxFuture<'static, Result<Bytes, String>>;
}

/// Encodes a reply body (bincode).
pub fn encode<T: Serialize>(value: &T) -> Result<Bytes, String> {
    bincode::serialize(value).map(Bytes::from).map_err(|e| e.to_string())
}

/// Decodes a request or reply body (bincode), naming what was expected on failure.
pub fn decode<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, String> {
    bincode::deserialize(body).map_err(|e| format!("malformed {what}: {e}"))
}

impl<C: RaftTypeConfig<NodeId = u64, Node = BasicNode>> InboundGroup for Raft<C>
where
    AppendEntriesRequest<C>: DeserializeOwned,
    InstallSnapshotRequest<C>: DeserializeOwned,
{
    fn handle(&self, kind: Kind, body: Bytes) -> BoxFuture<'static, Result<Bytes, String>> {
        let raft = self.clone();
        Box::pin(async move {
            match kind {
                Kind::AppendEntries => encode(&raft.append_entries(decode("AppendEntries", &body)?).await),
                Kind::Vote => encode(&raft.vote(decode("Vote", &body)?).await),
                Kind::InstallSnapshot => encode(&raft.install_snapshot(decode("InstallSnapshot", &body)?).await),
                other => Err(format!("{other:?} is not a raft RPC")),
            }
        })
    }
}

/// The groups open on this node, by id; the transport's inbound handler.
#[derive(Default)]
pub struct GroupRouter {
    groups: RwLock<HashMap<GroupId, Arc<dyn InboundGroup>>>,
}

impl GroupRouter {
    pub fn register(&self, group: GroupId, raft: Arc<dyn InboundGroup>) {
        if let Ok(mut g) = self.groups.write() {
            g.insert(group, raft);
        }
    }

    pub fn unregister(&self, group: GroupId) {
        if let Ok(mut g) = self.groups.write() {
            g.remove(&group);
        }
    }
}

impl InboundHandler for GroupRouter {
    fn handle(&self, _from: u64, kind: Kind, group: GroupId, body: Bytes) -> BoxFuture<'static, Result<Bytes, String>> {
        let target = self.groups.read().ok().and_then(|g| g.get(&group).cloned());
        match target {
            Some(raft) => raft.handle(kind, body),
            // A group a peer knows before this node has opened it (or after it closed it):
            // the sender sees an error and retries.
            None => Box::pin(async move { Err(format!("group {group:?} is not open here")) }),
        }
    }
}
