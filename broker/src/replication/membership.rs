//! Who votes in a raft group and how it comes up: timings per deployment, the first
//! initialisation of a group (one voter alone, or the same voter set on every voter), and
//! the leader's task that adds registered nodes as learners. Generic over the group type;
//! what a group stores lives elsewhere.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, Raft, RaftTypeConfig, ServerState};
use tokio::sync::watch;
use tracing::{info, warn};

use super::transport::peer::{PeerTransport, TransportLimits};
use super::transport::frame::GroupId;
use super::transport::raft::GroupRouter;
use crate::cluster::ClusterState;

/// Heartbeat and election timings of a raft group, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupTiming {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
}

impl GroupTiming {
    /// A lone voter never waits for others: short timings cost nothing.
    pub const SINGLE_NODE: GroupTiming = GroupTiming { heartbeat_ms: 100, election_min_ms: 300, election_max_ms: 600 };
    /// Between nodes. openraft bounds every AppendEntries, the follower's fsync included,
    /// by the heartbeat interval, and followers refuse votes for the maximum election
    /// timeout after last hearing the leader, so failover takes about 1 to 4 s.
    pub const CLUSTER: GroupTiming = GroupTiming { heartbeat_ms: 300, election_min_ms: 1_000, election_max_ms: 2_000 };
}

/// Brings a command group up on this node: initialises a group that never ran with this
/// node as its one voter, or asks a restarted lone voter to elect itself at once, then
/// waits up to `wait` for a leader. Errors are described for the operator.
pub(crate) async fn bootstrap_single_voter<C>(raft: &Raft<C>, node_id: u64, wait: Duration) -> Result<(), String>
where
    C: RaftTypeConfig<NodeId = u64, Node = BasicNode>,
{
    if !raft.is_initialized().await.map_err(|e| e.to_string())? {
        raft.initialize(BTreeMap::from([(node_id, BasicNode::default())])).await.map_err(|e| e.to_string())?;
    } else {
        // A lone voter need not wait for an election timeout after a restart.
        let _ = raft.trigger().elect().await;
    }
    let mut metrics = raft.metrics();
    let deadline = tokio::time::Instant::now() + wait;
    while metrics.borrow().current_leader.is_none() {
        match tokio::time::timeout_at(deadline, metrics.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err("the raft group stopped during start-up".into()),
            Err(_) => return Err(format!("no leader within {wait:?}")),
        }
    }
    Ok(())
}

/// Initialises a group that has never run with `voters` (all with the same empty node
/// record; the transport knows addresses). Every voter may do this with the same set: the
/// first entry is identical everywhere, so raft stays safe. A group that already has state
/// (a vote or entries, from an earlier run or a peer) is left alone.
pub(crate) async fn initialize_voters<C>(raft: &Raft<C>, voters: &[u64]) -> Result<(), String>
where
    C: RaftTypeConfig<NodeId = u64, Node = BasicNode>,
{
    if raft.is_initialized().await.map_err(|e| e.to_string())? {
        return Ok(());
    }
    // openraft initialises only a node that has never voted; one that voted was asked by a
    // peer that started the group. Checked here so that openraft does not log the refusal
    // as an error (thousands of times when a large topic is created).
    if raft.metrics().borrow().vote.leader_id().term > 0 {
        return Ok(());
    }
    let members: BTreeMap<u64, BasicNode> = voters.iter().map(|id| (*id, BasicNode::default())).collect();
    match raft.initialize(members).await {
        Ok(()) => Ok(()),
        // A peer reached this node first: the group is under way.
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// While this node leads `raft`, every registered broker that is not a member is added as a
/// learner, so that it receives the group's log (KRaft's observers), and learners whose
/// registration was removed (UnregisterBroker) leave the group.
pub(crate) async fn add_learners<C>(raft: Raft<C>, mut state: watch::Receiver<Arc<ClusterState>>)
where
    C: RaftTypeConfig<NodeId = u64, Node = BasicNode, Responder = openraft::impls::OneshotResponder<C>>,
{
    let mut metrics = raft.metrics();
    loop {
        let (missing, unregistered): (Vec<u64>, BTreeSet<u64>) = {
            let m = metrics.borrow();
            if m.state != ServerState::Leader {
                Default::default()
            } else {
                let membership = m.membership_config.membership();
                let members: BTreeSet<u64> = membership.nodes().map(|(id, _)| *id).collect();
                let brokers = &state.borrow().brokers;
                let missing = brokers.keys().copied().filter(|id| !members.contains(id)).collect();
                let unregistered = membership.learner_ids().filter(|id| !brokers.contains_key(id)).collect();
                (missing, unregistered)
            }
        };
        for id in missing {
            match raft.add_learner(id, BasicNode::default(), false).await {
                Ok(_) => info!(node = id, "added as a learner"),
                Err(e) => warn!(node = id, error = %e, "cannot add learner"),
            }
        }
        if !unregistered.is_empty() {
            match raft.change_membership(openraft::ChangeMembers::RemoveNodes(unregistered.clone()), false).await {
                Ok(_) => info!(nodes = ?unregistered, "unregistered nodes removed as learners"),
                Err(e) => warn!(nodes = ?unregistered, error = %e, "cannot remove learners"),
            }
        }
        tokio::select! {
            r = metrics.changed() => if r.is_err() { return },
            r = state.changed() => if r.is_err() { return },
        }
    }
}

/// Of `voters`, `me` (when it is one) and those `heard` from, sorted.
pub fn voters_reached(voters: impl IntoIterator<Item = u64>, me: u64, heard: impl Fn(u64) -> bool) -> Vec<u64> {
    let mut reached: Vec<u64> = voters.into_iter().filter(|v| *v == me || heard(*v)).collect();
    reached.sort_unstable();
    reached
}

/// Whether `me` and the voters `heard` from make a majority of `voters`.
pub fn reaches_majority(voters: &[u64], me: u64, heard: impl Fn(u64) -> bool) -> bool {
    voters_reached(voters.iter().copied(), me, heard).len() * 2 > voters.len()
}

/// How long a node being made a voter may take to catch up as a learner first.
const VOTER_CATCH_UP: Duration = Duration::from_secs(30);

/// The voters of a group's committed membership (both sets while a change is under way).
pub fn current_voters<C>(raft: &Raft<C>) -> BTreeSet<u64>
where
    C: RaftTypeConfig<NodeId = u64, Node = BasicNode>,
{
    raft.metrics().borrow().membership_config.membership().voter_ids().collect()
}

/// On a command group's leader (KIP-853): makes `target` its voters. Nodes not yet in the
/// group join as learners and catch up first; then one joint-consensus change replaces the
/// voters. Voters left out stay learners with `retain`, else leave the group.
pub(crate) async fn set_voters<C>(raft: &Raft<C>, target: &BTreeSet<u64>, retain: bool) -> Result<(), String>
where
    C: RaftTypeConfig<NodeId = u64, Node = BasicNode, Responder = openraft::impls::OneshotResponder<C>>,
{
    if target.is_empty() {
        return Err("a group needs at least one voter".into());
    }
    let known: BTreeSet<u64> = raft.metrics().borrow().membership_config.membership().nodes().map(|(id, _)| *id).collect();
    for id in target.difference(&known) {
        match tokio::time::timeout(VOTER_CATCH_UP, raft.add_learner(*id, BasicNode::default(), true)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("adding node {id} as a learner: {e}")),
            Err(_) => return Err(format!("node {id} did not catch up within {} s", VOTER_CATCH_UP.as_secs())),
        }
    }
    raft.change_membership(openraft::ChangeMembers::ReplaceAllVoters(target.clone()), retain).await.map(|_| ()).map_err(|e| e.to_string())
}

/// A group's place in the cluster: its voters and the transport to reach them.
#[derive(Clone)]
pub struct GroupMembers {
    /// The voters the cluster started with (`voters`); empty: a single-node cluster of
    /// this node alone. The controller group's voters now are its raft membership
    /// (`Controller::voters`), which AddRaftVoter and RemoveRaftVoter change.
    pub voters: Vec<u64>,
    pub transport: Arc<PeerTransport>,
    pub router: Arc<GroupRouter>,
}

impl GroupMembers {
    /// A node alone: no listener, no peers.
    pub fn single_node(node_id: u64) -> GroupMembers {
        GroupMembers {
            voters: Vec::new(),
            transport: PeerTransport::outbound_only(node_id, TransportLimits::default()),
            router: Arc::new(GroupRouter::default()),
        }
    }

    pub fn timing(&self) -> GroupTiming {
        if self.voters.is_empty() {
            GroupTiming::SINGLE_NODE
        } else {
            GroupTiming::CLUSTER
        }
    }
}

/// Whether the node these metrics describe leads its group and may serve as leader: it has
/// applied the first entry of its own term, so everything committed before it is applied
/// too (a producer retry is then recognised, not written twice), and in a group with other
/// voters a quorum acknowledged it within the shortest election timeout (a leader cut off
/// from the others stops serving before they can elect another).
pub fn serving_leader(m: &openraft::RaftMetrics<u64, BasicNode>) -> bool {
    if !leads_own_term(m) {
        return false;
    }
    let alone = m.membership_config.membership().voter_ids().count() <= 1;
    alone || m.millis_since_quorum_ack.is_some_and(|ms| ms < QUORUM_ACK_MAX_MS)
}

/// Whether the node these metrics describe leads its group and has applied the first entry
/// of its own term (the first half of `serving_leader`).
pub fn leads_own_term(m: &openraft::RaftMetrics<u64, BasicNode>) -> bool {
    m.state == ServerState::Leader && m.last_applied.is_some_and(|l| l.leader_id.term == m.vote.leader_id().term)
}

/// How stale a leader's last quorum acknowledgement may be before it stops serving: below
/// the shortest election timeout of `GroupTiming::CLUSTER`, so that an old leader stops
/// before a new one can be elected.
const QUORUM_ACK_MAX_MS: u64 = 900;

/// Follows a group's metrics in one task: returns a flag that follows `serving_leader`,
/// changed only when it flips (many waiters can watch it without each looking at every
/// metrics update), and, with `log`, logs each change of the group's state, leader or term
/// at that level (info for the controller and coordinator, debug for partitions, which
/// are many) for operators following a failover. The flag's sender goes away when the
/// group stops.
pub(crate) fn watch_serving(
    mut metrics: watch::Receiver<openraft::RaftMetrics<u64, BasicNode>>,
    group: GroupId,
    log: Option<tracing::Level>,
) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(serving_leader(&metrics.borrow()));
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let now = {
                let m = metrics.borrow_and_update();
                (m.state, m.current_leader, m.vote.leader_id().term, serving_leader(&m))
            };
            let (state, leader, term, serving) = now;
            tx.send_if_modified(|s| std::mem::replace(s, serving) != serving);
            if last != Some(now) {
                match log {
                    Some(tracing::Level::INFO) => info!(?group, ?state, ?leader, term, serving, "raft group state"),
                    Some(_) => tracing::debug!(?group, ?state, ?leader, term, serving, "raft group state"),
                    None => {}
                }
                last = Some(now);
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_reaches_the_cluster_with_a_majority_of_voters_counting_itself() {
        let voters = [1, 2, 3];
        assert!(reaches_majority(&voters, 1, |v| v == 2), "itself and one more of three");
        assert!(!reaches_majority(&voters, 1, |_| false), "itself alone");
        // A node that is not a voter needs two of three voters.
        assert!(!reaches_majority(&voters, 4, |v| v == 2));
        assert!(reaches_majority(&voters, 4, |v| v != 3));
        // Four voters: three are needed.
        assert!(!reaches_majority(&[1, 2, 3, 4], 1, |v| v == 2));
        assert!(reaches_majority(&[1, 2, 3, 4], 1, |v| v != 4));
    }
}
