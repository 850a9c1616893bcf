//! The network between replicas of a partition group. Single-node mode has one voter and
//! sends nothing, so every call answers "unreachable"; the multi-node transport (one
//! connection per pair of nodes carrying every group's messages) replaces this.

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest, VoteResponse};
use openraft::{BasicNode, RaftTypeConfig};

/// The network of a one-voter group (partition or controller): there is nobody to call.
#[derive(Debug, Clone, Default)]
pub(crate) struct NoPeers;

#[derive(Debug)]
pub(crate) struct NoPeerConnection {
    target: u64,
}

fn unreachable<E: std::error::Error>(target: u64) -> RPCError<u64, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        format!("node {target}: no transport between nodes in single-node mode"),
    )))
}

impl<C: RaftTypeConfig<NodeId = u64, Node = BasicNode>> RaftNetworkFactory<C> for NoPeers {
    type Network = NoPeerConnection;
    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Self::Network {
        NoPeerConnection { target }
    }
}

impl<C: RaftTypeConfig<NodeId = u64, Node = BasicNode>> RaftNetwork<C> for NoPeerConnection {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<C>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(unreachable(self.target))
    }
    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<C>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>> {
        Err(unreachable(self.target))
    }
    async fn vote(
        &mut self,
        _rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(unreachable(self.target))
    }
}
