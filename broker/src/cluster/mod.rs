//! Cluster metadata: the controller's state machine (brokers, topics, topic ids, partition
//! assignments, topic configs), the commands that change it, and the controller raft group
//! that replicates those commands (`controller`). Applying a command is a plain synchronous
//! function of the state, so every voter computes the same metadata.

mod controller;
pub mod placement;
pub mod topic_config;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use controller::{Controller, ControllerSetup, QuorumInfo, QuorumReplica};

/// Kafka's limit on topic name length.
pub const MAX_TOPIC_NAME_LEN: usize = 249;
/// Upper bound on the partitions of one topic: each partition is a raft group with open
/// files, so an absurd count is refused (INVALID_PARTITIONS) rather than exhausting the node.
pub const MAX_PARTITIONS_PER_TOPIC: i32 = 10_000;

/// Errors of cluster metadata changes; each maps to one Kafka error code in `protocol`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ClusterError {
    #[error("topic {0} already exists")]
    TopicAlreadyExists(String),
    #[error("unknown topic {0}")]
    UnknownTopic(String),
    #[error("invalid partition count: {0}")]
    InvalidPartitions(String),
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),
    #[error("invalid replica assignment: {0}")]
    InvalidReplicaAssignment(String),
    #[error("invalid topic name: {0}")]
    InvalidTopicName(String),
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// This node cannot commit metadata changes (no controller leader here).
    #[error("not the controller (leader: {leader:?})")]
    NotController { leader: Option<u64> },
    /// Cancelling a reassignment of a partition that has none (AlterPartitionReassignments).
    #[error("no reassignment of {0} is in progress")]
    NoReassignmentInProgress(String),
    #[error("broker {0} is not registered")]
    BrokerNotRegistered(u64),
    /// AddRaftVoter of a node that is a controller voter already.
    #[error("node {0} is a controller voter already")]
    DuplicateVoter(u64),
    /// RemoveRaftVoter of a node that is not a controller voter.
    #[error("node {0} is not a controller voter")]
    VoterNotFound(u64),
    /// A voter change that cannot be made (single-node mode, the last voter).
    #[error("{0}")]
    InvalidVoterChange(String),
    /// The controller's storage or raft group failed.
    #[error("controller unavailable: {0}")]
    Unavailable(String),
}

/// A broker as registered with the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerMeta {
    pub node_id: u64,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
    /// Where other nodes reach this one (`raft_listen`); empty in single-node mode.
    #[serde(default)]
    pub raft_endpoint: String,
    /// Set by the controller when the node stopped answering it: left out of Metadata and
    /// of new placements until it is heard from again (KRaft's fencing).
    #[serde(default)]
    pub fenced: bool,
}

/// One partition's assignment.
///
/// `replicas` are the voters of the partition's raft group as its leader last reported
/// them (set at creation, then changed only by the leader's reports), so a node never
/// drops a replica the group still counts on. A reassignment (KIP-455) sets `target`; the
/// leader adds the new nodes as learners, moves the voters over, and its report of the
/// new voters ends the reassignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMeta {
    pub index: i32,
    /// Replica node ids; the first is the preferred leader.
    pub replicas: Vec<u64>,
    /// The replica set an ongoing reassignment moves to, preferred leader first.
    #[serde(default)]
    pub target: Option<Vec<u64>>,
    /// Nodes in the raft group that are not voters (replicas being added), as reported.
    #[serde(default)]
    pub learners: Vec<u64>,
    /// The leader as it last reported itself, and its epoch (raft term); the leader's own
    /// node knows better, every other node answers Metadata from this.
    #[serde(default)]
    pub leader: Option<u64>,
    #[serde(default)]
    pub leader_epoch: i32,
    /// In-sync replicas as the leader last reported them.
    #[serde(default)]
    pub isr: Vec<u64>,
    /// The voters the leader has begun making the group's (`BeginVoterChange`), until it
    /// reports them: a cancel meanwhile must move the partition back, since the change
    /// may be committed already.
    #[serde(default)]
    pub changing_to: Option<Vec<u64>>,
}

impl PartitionMeta {
    /// A partition on `replicas` with no leader reported yet.
    pub fn new(index: i32, replicas: Vec<u64>) -> PartitionMeta {
        PartitionMeta { index, replicas, target: None, learners: Vec::new(), leader: None, leader_epoch: 0, isr: Vec::new(), changing_to: None }
    }

    /// Whether `node` keeps a replica of this partition: a voter, a learner, or part of the
    /// target of a reassignment.
    pub fn hosted_on(&self, node: u64) -> bool {
        self.replicas.contains(&node) || self.learners.contains(&node) || self.target.as_ref().is_some_and(|t| t.contains(&node))
    }

    /// The replicas as Kafka shows them during a reassignment: the target first, then the
    /// replicas being removed; just `replicas` otherwise.
    pub fn all_replicas(&self) -> Vec<u64> {
        match &self.target {
            None => self.replicas.clone(),
            Some(t) => t.iter().chain(self.replicas.iter().filter(|r| !t.contains(r))).copied().collect(),
        }
    }

    /// Replicas an ongoing reassignment adds (empty when none is ongoing).
    pub fn adding(&self) -> Vec<u64> {
        self.target.iter().flatten().filter(|r| !self.replicas.contains(r)).copied().collect()
    }

    /// Replicas an ongoing reassignment removes (empty when none is ongoing).
    pub fn removing(&self) -> Vec<u64> {
        match &self.target {
            None => Vec::new(),
            Some(t) => self.replicas.iter().filter(|r| !t.contains(r)).copied().collect(),
        }
    }

    /// The voters the partition's raft group should have: the target while one is set.
    pub fn desired_voters(&self) -> &[u64] {
        self.target.as_deref().unwrap_or(&self.replicas)
    }

    /// Takes the voters a leader reported: `replicas` follows them (keeping the target's
    /// order, else the current order, for the preferred leader), and a reassignment whose
    /// target they equal is complete.
    fn record_voters(&mut self, voters: &[u64], learners: Vec<u64>) {
        if self.changing_to.as_ref().is_some_and(|c| same_members(c, voters)) {
            self.changing_to = None;
        }
        if let Some(t) = self.target.take() {
            if same_members(&t, voters) {
                self.replicas = t;
            } else {
                self.target = Some(t);
            }
        }
        if !same_members(&self.replicas, voters) {
            let order = |r: &u64| {
                let in_target = self.target.as_ref().and_then(|t| t.iter().position(|x| x == r));
                (self.replicas.iter().position(|x| x == r).unwrap_or(usize::MAX), in_target.unwrap_or(usize::MAX), *r)
            };
            let mut v = voters.to_vec();
            v.sort_by_key(order);
            self.replicas = v;
        }
        self.learners = learners;
    }
}

/// A raft group's leader as the leader reports it to the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderReport {
    pub group: ReportedGroup,
    pub leader: u64,
    /// The raft term of the leader; reports with an older epoch than the stored one are ignored.
    pub epoch: i32,
    pub isr: Vec<u64>,
    /// A partition group's voters and learners (empty for the coordinator, and while the
    /// group is between two voter sets).
    #[serde(default)]
    pub voters: Vec<u64>,
    #[serde(default)]
    pub learners: Vec<u64>,
}

/// Which group a `LeaderReport` is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReportedGroup {
    Partition { topic: Uuid, partition: i32 },
    /// The group coordinator (consumer groups and transactions).
    Coordinator,
}

/// A topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    pub partitions: Vec<PartitionMeta>,
    /// Topic-level config overrides, by Kafka's names.
    pub configs: BTreeMap<String, String>,
}

impl TopicMeta {
    /// Partition `index` (partitions are kept in index order).
    pub fn partition(&self, index: i32) -> Option<&PartitionMeta> {
        let p = self.partitions.get(usize::try_from(index).ok()?)?;
        (p.index == index).then_some(p).or_else(|| self.partitions.iter().find(|p| p.index == index))
    }
}

/// The whole cluster metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    pub brokers: BTreeMap<u64, BrokerMeta>,
    pub topics: BTreeMap<String, TopicMeta>,
    /// Topic id -> name, kept in step with `topics`.
    topic_names: HashMap<Uuid, String>,
    /// The first producer id not yet handed to any node (KIP-730 style blocks).
    #[serde(default)]
    pub next_producer_id: i64,
    /// Set once, by the first `InitCluster` committed.
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// The group coordinator's leader and its epoch, as it last reported itself.
    #[serde(default)]
    pub coordinator: Option<(u64, i32)>,
}

/// A change to the cluster metadata, replicated through the controller log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerCommand {
    /// A broker announces (or changes) its client endpoint.
    RegisterBroker(BrokerMeta),
    /// Creates a topic. `id` is chosen by the proposer so that apply is deterministic.
    CreateTopic {
        name: String,
        id: Uuid,
        partitions: i32,
        replication_factor: i16,
        /// Explicit replica lists per partition, in partition order; placement otherwise.
        assignments: Option<Vec<Vec<u64>>>,
        configs: BTreeMap<String, String>,
    },
    DeleteTopic { id: Uuid },
    /// Replaces a topic's config overrides.
    AlterTopicConfigs { name: String, configs: BTreeMap<String, String> },
    /// Hands out the next `count` producer ids as one block, so every id is used once.
    AllocateProducerIds { count: i64 },
    /// Names the cluster; only the first one committed counts.
    InitCluster { cluster_id: String },
    /// Leaders announce the groups they lead (partitions, the coordinator).
    ReportLeaders(Vec<LeaderReport>),
    /// The controller's leader fences a node it no longer hears from, or unfences it.
    FenceBroker { node_id: u64, fenced: bool },
    /// Starts (`Some`) or cancels (`None`) moving a partition to another replica set
    /// (AlterPartitionReassignments). With `allow_rf_change` false the target must keep the
    /// replication factor (KIP-860).
    ReassignPartition { topic: Uuid, partition: i32, target: Option<Vec<u64>>, allow_rf_change: bool },
    /// Removes a broker's registration (UnregisterBroker): it leaves Metadata and gets no
    /// new replicas; replicas it still has stay assigned until moved.
    UnregisterBroker { node_id: u64 },
    /// A partition's leader is about to make `voters` its group's voters: accepted only
    /// while they are what the metadata wants (the reassignment's target, or the replicas
    /// when none is set), so that a cancel applied later knows the change may have happened
    /// and moves the partition back instead.
    BeginVoterChange { topic: Uuid, partition: i32, voters: Vec<u64> },
}

impl ControllerCommand {
    /// Partitions applying the command would add (a CreateTopic's count; 0 for the rest).
    pub fn partitions_added(&self) -> usize {
        match self {
            ControllerCommand::CreateTopic { partitions, .. } => usize::try_from(*partitions).unwrap_or(0),
            _ => 0,
        }
    }
}

/// What applying a command changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    BrokerRegistered,
    TopicCreated,
    TopicDeleted,
    ConfigsAltered,
    /// A block of producer ids starting at `first`.
    ProducerIdsAllocated { first: i64 },
    /// The cluster's id (the one stored first, whoever proposed it).
    ClusterInitialized,
    LeadersRecorded,
    BrokerFenced,
    /// A reassignment was started, or (a target with the same replicas) the replica order
    /// changed at once.
    ReassignmentStarted,
    ReassignmentCancelled,
    BrokerUnregistered,
    VoterChangeBegun,
    /// Raft's own entries (blank, membership), which change no metadata.
    Nothing,
}

/// Checks a topic name against Kafka's rules: 1-249 characters of `[a-zA-Z0-9._-]`, not
/// `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), ClusterError> {
    if name.is_empty() {
        return Err(ClusterError::InvalidTopicName("the empty string is not allowed".into()));
    }
    if name == "." || name == ".." {
        return Err(ClusterError::InvalidTopicName(format!("'{name}' is not allowed")));
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(ClusterError::InvalidTopicName(format!(
            "{} characters; the maximum is {MAX_TOPIC_NAME_LEN}",
            name.len()
        )));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(ClusterError::InvalidTopicName(format!(
            "'{name}' contains '{c}'; only ASCII alphanumerics, '.', '_' and '-' are allowed"
        )));
    }
    Ok(())
}

/// Whether two replica lists (each without repeats) name the same nodes, in any order.
pub fn same_members(a: &[u64], b: &[u64]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}

/// Kafka's collision key: '.' and '_' collide in metric names, so topics differing only
/// there may not coexist.
fn collision_key(name: &str) -> String {
    name.replace('.', "_")
}

impl ClusterState {
    /// Registered brokers that are not fenced: what Metadata shows clients.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerMeta> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&TopicMeta> {
        self.topic_names.get(id).and_then(|n| self.topics.get(n))
    }

    /// Applies `cmd`; on error the state is unchanged.
    pub fn apply(&mut self, cmd: ControllerCommand) -> Result<Applied, ClusterError> {
        match cmd {
            ControllerCommand::RegisterBroker(b) => {
                self.brokers.insert(b.node_id, b);
                Ok(Applied::BrokerRegistered)
            }
            ControllerCommand::CreateTopic { name, id, partitions, replication_factor, assignments, configs } => {
                let topic = self.plan_topic(name, id, partitions, replication_factor, assignments, configs)?;
                self.topic_names.insert(topic.id, topic.name.clone());
                self.topics.insert(topic.name.clone(), topic);
                Ok(Applied::TopicCreated)
            }
            ControllerCommand::DeleteTopic { id } => {
                let name = self.topic_names.remove(&id).ok_or_else(|| ClusterError::UnknownTopic(id.to_string()))?;
                self.topics.remove(&name);
                Ok(Applied::TopicDeleted)
            }
            ControllerCommand::AlterTopicConfigs { name, configs } => {
                topic_config::validate_all(&configs).map_err(|e| ClusterError::InvalidConfig(e.to_string()))?;
                let topic = self.topics.get_mut(&name).ok_or(ClusterError::UnknownTopic(name))?;
                topic.configs = configs;
                Ok(Applied::ConfigsAltered)
            }
            ControllerCommand::AllocateProducerIds { count } => {
                let first = self.next_producer_id;
                let next = first.checked_add(count.max(1)).ok_or_else(|| ClusterError::Unavailable("producer ids exhausted".into()))?;
                self.next_producer_id = next;
                Ok(Applied::ProducerIdsAllocated { first })
            }
            ControllerCommand::InitCluster { cluster_id } => {
                self.cluster_id.get_or_insert(cluster_id);
                Ok(Applied::ClusterInitialized)
            }
            ControllerCommand::FenceBroker { node_id, fenced } => {
                if let Some(b) = self.brokers.get_mut(&node_id) {
                    b.fenced = fenced;
                }
                Ok(Applied::BrokerFenced)
            }
            ControllerCommand::ReportLeaders(reports) => {
                for r in reports {
                    self.record_leader(r);
                }
                Ok(Applied::LeadersRecorded)
            }
            ControllerCommand::ReassignPartition { topic, partition, target, allow_rf_change } => {
                self.reassign(topic, partition, target, allow_rf_change)
            }
            ControllerCommand::UnregisterBroker { node_id } => {
                self.brokers.remove(&node_id).ok_or(ClusterError::BrokerNotRegistered(node_id))?;
                Ok(Applied::BrokerUnregistered)
            }
            ControllerCommand::BeginVoterChange { topic, partition, voters } => {
                let name = self.topic_names.get(&topic).cloned().unwrap_or_default();
                let p = self.partition_mut(&name, partition).ok_or_else(|| ClusterError::UnknownTopic(format!("{topic}-{partition}")))?;
                if !same_members(p.desired_voters(), &voters) {
                    return Err(ClusterError::NoReassignmentInProgress(format!("{name}-{partition} is no longer wanted on {voters:?}")));
                }
                p.changing_to = Some(voters);
                Ok(Applied::VoterChangeBegun)
            }
        }
    }

    fn reassign(&mut self, topic: Uuid, partition: i32, target: Option<Vec<u64>>, allow_rf_change: bool) -> Result<Applied, ClusterError> {
        let unknown = || ClusterError::UnknownTopic(format!("{topic}-{partition}"));
        let name = self.topic_names.get(&topic).ok_or_else(unknown)?.clone();
        let Some(target) = target else {
            let p = self.partition_mut(&name, partition).ok_or_else(unknown)?;
            p.target.take().ok_or_else(|| ClusterError::NoReassignmentInProgress(format!("{name}-{partition}")))?;
            // As Kafka, a cancel reverts: when the leader may have changed the voters
            // already, the partition moves back to the replicas it had.
            if let Some(to) = p.changing_to.take() {
                if !same_members(&to, &p.replicas) {
                    p.target = Some(p.replicas.clone());
                }
            }
            return Ok(Applied::ReassignmentCancelled);
        };
        self.check_replica_list(&target, &format!("{name}-{partition}"))?;
        let p = self.partition_mut(&name, partition).ok_or_else(unknown)?;
        if !allow_rf_change && target.len() != p.replicas.len() {
            return Err(ClusterError::InvalidReplicationFactor(format!(
                "the reassignment changes the replication factor from {} to {}",
                p.replicas.len(),
                target.len()
            )));
        }
        if same_members(&p.replicas, &target) {
            // The same replicas in another order: only the preferred leader changes.
            p.replicas = target;
            p.target = None;
        } else {
            p.target = Some(target);
        }
        Ok(Applied::ReassignmentStarted)
    }

    fn partition_mut(&mut self, topic: &str, partition: i32) -> Option<&mut PartitionMeta> {
        self.topics.get_mut(topic)?.partitions.iter_mut().find(|p| p.index == partition)
    }

    /// Stores a leader report unless a report of a later epoch is already stored.
    fn record_leader(&mut self, r: LeaderReport) {
        match r.group {
            ReportedGroup::Coordinator => {
                if self.coordinator.is_none_or(|(_, epoch)| epoch <= r.epoch) {
                    self.coordinator = Some((r.leader, r.epoch));
                }
            }
            ReportedGroup::Partition { topic, partition } => {
                let Some(name) = self.topic_names.get(&topic) else { return };
                let Some(t) = self.topics.get_mut(name) else { return };
                let Some(p) = t.partitions.iter_mut().find(|p| p.index == partition) else { return };
                if p.leader_epoch <= r.epoch {
                    p.leader = Some(r.leader);
                    p.leader_epoch = r.epoch;
                    p.isr = r.isr;
                    if !r.voters.is_empty() {
                        p.record_voters(&r.voters, r.learners);
                    }
                }
            }
        }
    }

    fn plan_topic(
        &self,
        name: String,
        id: Uuid,
        partitions: i32,
        replication_factor: i16,
        assignments: Option<Vec<Vec<u64>>>,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicMeta, ClusterError> {
        validate_topic_name(&name)?;
        if self.topics.contains_key(&name) {
            return Err(ClusterError::TopicAlreadyExists(name));
        }
        let key = collision_key(&name);
        if let Some(other) = self.topics.keys().find(|t| collision_key(t) == key) {
            return Err(ClusterError::InvalidTopicName(format!("topic '{name}' collides with existing topic '{other}'")));
        }
        if id.is_nil() || self.topic_names.contains_key(&id) {
            return Err(ClusterError::InvalidTopicName(format!("topic id {id} is nil or in use")));
        }
        topic_config::validate_all(&configs).map_err(|e| ClusterError::InvalidConfig(e.to_string()))?;
        let replicas = match assignments {
            Some(a) => {
                self.check_assignments(&a)?;
                a
            }
            None => self.place(&id, partitions, replication_factor)?,
        };
        let partitions = replicas.into_iter().enumerate().map(|(i, replicas)| PartitionMeta::new(i as i32, replicas)).collect();
        Ok(TopicMeta { name, id, partitions, configs })
    }

    fn check_assignments(&self, a: &[Vec<u64>]) -> Result<(), ClusterError> {
        if a.is_empty() || a.len() > MAX_PARTITIONS_PER_TOPIC as usize {
            return Err(ClusterError::InvalidPartitions(format!("{} partitions assigned", a.len())));
        }
        let rf = a[0].len();
        for (i, replicas) in a.iter().enumerate() {
            self.check_replica_list(replicas, &format!("partition {i}"))?;
            if replicas.len() != rf {
                return Err(ClusterError::InvalidReplicaAssignment(
                    "all partitions must have the same number of replicas".into(),
                ));
            }
        }
        Ok(())
    }

    /// One partition's replica list (`what` names it in errors): not empty, no broker
    /// twice, every broker registered.
    fn check_replica_list(&self, replicas: &[u64], what: &str) -> Result<(), ClusterError> {
        if replicas.is_empty() {
            return Err(ClusterError::InvalidReplicaAssignment(format!("{what} has no replicas")));
        }
        let mut seen = replicas.to_vec();
        seen.sort_unstable();
        seen.dedup();
        if seen.len() != replicas.len() {
            return Err(ClusterError::InvalidReplicaAssignment(format!("{what} lists a broker twice")));
        }
        if let Some(b) = replicas.iter().find(|b| !self.brokers.contains_key(b)) {
            return Err(ClusterError::InvalidReplicaAssignment(format!("unknown broker {b} for {what}")));
        }
        Ok(())
    }

    /// Kafka's placement (`placement::assign`, rack-aware when every broker has a rack)
    /// over the registered brokers that are not fenced, starting at a broker chosen from the topic id
    /// (deterministic on every voter).
    fn place(&self, id: &Uuid, partitions: i32, replication_factor: i16) -> Result<Vec<Vec<u64>>, ClusterError> {
        if partitions <= 0 {
            return Err(ClusterError::InvalidPartitions(format!("{partitions}; it must be greater than 0")));
        }
        if partitions > MAX_PARTITIONS_PER_TOPIC {
            return Err(ClusterError::InvalidPartitions(format!("{partitions}; at most {MAX_PARTITIONS_PER_TOPIC} per topic")));
        }
        if replication_factor <= 0 {
            return Err(ClusterError::InvalidReplicationFactor(format!("{replication_factor}; it must be greater than 0")));
        }
        // Fenced nodes (down, as far as the controller knows) get no new replicas.
        let brokers: Vec<(u64, Option<String>)> = self.live_brokers().map(|b| (b.node_id, b.rack.clone())).collect();
        let rf = replication_factor as usize;
        if rf > brokers.len() {
            return Err(ClusterError::InvalidReplicationFactor(format!(
                "{replication_factor} is larger than the number of available brokers ({})",
                brokers.len()
            )));
        }
        let n = brokers.len();
        let start = (id.as_u128() % n as u128) as usize;
        let shift = ((id.as_u128() >> 64) % n as u128) as usize;
        let out = placement::assign(&brokers, partitions as usize, rf, start, shift);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_brokers(n: u64) -> ClusterState {
        let mut s = ClusterState::default();
        for id in 1..=n {
            s.apply(ControllerCommand::RegisterBroker(BrokerMeta { node_id: id, host: "127.0.0.1".into(), port: 9092, rack: None, raft_endpoint: String::new(), fenced: false }))
                .expect("register");
        }
        s
    }

    fn create(name: &str, partitions: i32, rf: i16) -> ControllerCommand {
        ControllerCommand::CreateTopic {
            name: name.into(),
            id: Uuid::new_v4(),
            partitions,
            replication_factor: rf,
            assignments: None,
            configs: BTreeMap::new(),
        }
    }

    #[test]
    fn topic_names_follow_kafkas_rules() {
        assert!(validate_topic_name("orders.v1_x-y").is_ok());
        assert!(validate_topic_name(&"a".repeat(249)).is_ok());
        for bad in ["", ".", "..", "with space", "slash/", "ü", &"a".repeat(250)] {
            assert!(matches!(validate_topic_name(bad), Err(ClusterError::InvalidTopicName(_))), "{bad}");
        }
    }

    #[test]
    fn dot_and_underscore_names_collide() {
        let mut s = with_brokers(1);
        s.apply(create("a.b", 1, 1)).expect("create");
        assert!(matches!(s.apply(create("a_b", 1, 1)), Err(ClusterError::InvalidTopicName(_))));
        assert!(matches!(s.apply(create("a.b", 1, 1)), Err(ClusterError::TopicAlreadyExists(_))));
    }

    #[test]
    fn create_and_delete_keep_the_id_index() {
        let mut s = with_brokers(1);
        s.apply(create("t", 3, 1)).expect("create");
        let t = s.topics["t"].clone();
        assert_eq!(t.partitions.len(), 3);
        assert_eq!(s.topic_by_id(&t.id).map(|x| x.name.as_str()), Some("t"));
        s.apply(ControllerCommand::DeleteTopic { id: t.id }).expect("delete");
        assert!(s.topic_by_id(&t.id).is_none());
        assert!(s.topics.is_empty());
        assert!(matches!(s.apply(ControllerCommand::DeleteTopic { id: t.id }), Err(ClusterError::UnknownTopic(_))));
    }

    #[test]
    fn bad_counts_are_refused_without_changing_state() {
        let mut s = with_brokers(1);
        let before = s.clone();
        assert!(matches!(s.apply(create("t", 0, 1)), Err(ClusterError::InvalidPartitions(_))));
        assert!(matches!(s.apply(create("t", MAX_PARTITIONS_PER_TOPIC + 1, 1)), Err(ClusterError::InvalidPartitions(_))));
        assert!(matches!(s.apply(create("t", 1, 0)), Err(ClusterError::InvalidReplicationFactor(_))));
        assert!(matches!(s.apply(create("t", 1, 2)), Err(ClusterError::InvalidReplicationFactor(_))));
        assert_eq!(s, before);
    }

    #[test]
    fn placement_spreads_leaders_and_never_repeats_a_broker() {
        let s = with_brokers(3);
        let a = s.place(&Uuid::new_v4(), 6, 3).expect("place");
        for replicas in &a {
            let mut r = replicas.clone();
            r.sort_unstable();
            r.dedup();
            assert_eq!(r.len(), 3);
        }
        let mut leaders: Vec<u64> = a.iter().map(|r| r[0]).collect();
        leaders.sort_unstable();
        assert_eq!(leaders, vec![1, 1, 2, 2, 3, 3]);
    }

    #[test]
    fn fenced_brokers_get_no_new_replicas_until_unfenced() {
        let mut s = with_brokers(3);
        s.apply(ControllerCommand::FenceBroker { node_id: 2, fenced: true }).expect("fence");
        assert_eq!(s.live_brokers().map(|b| b.node_id).collect::<Vec<_>>(), [1, 3]);
        let a = s.place(&Uuid::new_v4(), 6, 2).expect("place");
        assert!(a.iter().all(|r| !r.contains(&2)), "{a:?}");
        assert!(matches!(s.place(&Uuid::new_v4(), 1, 3), Err(ClusterError::InvalidReplicationFactor(_))));
        s.apply(ControllerCommand::FenceBroker { node_id: 2, fenced: false }).expect("unfence");
        assert_eq!(s.place(&Uuid::new_v4(), 1, 3).expect("place").len(), 1);
    }

    #[test]
    fn explicit_assignments_are_checked() {
        let mut s = with_brokers(2);
        let cmd = |a: Vec<Vec<u64>>| ControllerCommand::CreateTopic {
            name: "t".into(),
            id: Uuid::new_v4(),
            partitions: -1,
            replication_factor: -1,
            assignments: Some(a),
            configs: BTreeMap::new(),
        };
        assert!(matches!(s.apply(cmd(vec![vec![1, 1]])), Err(ClusterError::InvalidReplicaAssignment(_))));
        assert!(matches!(s.apply(cmd(vec![vec![7]])), Err(ClusterError::InvalidReplicaAssignment(_))));
        assert!(matches!(s.apply(cmd(vec![vec![1], vec![1, 2]])), Err(ClusterError::InvalidReplicaAssignment(_))));
        s.apply(cmd(vec![vec![2, 1], vec![1, 2]])).expect("valid");
        assert_eq!(s.topics["t"].partitions[0].replicas, vec![2, 1]);
    }

    fn report(s: &ClusterState, topic: &str, leader: u64, epoch: i32, voters: &[u64], learners: &[u64]) -> ControllerCommand {
        let id = s.topics[topic].id;
        ControllerCommand::ReportLeaders(vec![LeaderReport {
            group: ReportedGroup::Partition { topic: id, partition: 0 },
            leader,
            epoch,
            isr: voters.to_vec(),
            voters: voters.to_vec(),
            learners: learners.to_vec(),
        }])
    }

    fn reassign(s: &ClusterState, topic: &str, target: Option<Vec<u64>>) -> ControllerCommand {
        ControllerCommand::ReassignPartition { topic: s.topics[topic].id, partition: 0, target, allow_rf_change: true }
    }

    #[test]
    fn a_reassignment_ends_when_the_leader_reports_the_target_voters() {
        let mut s = with_brokers(4);
        let assignments = Some(vec![vec![1, 2, 3]]);
        s.apply(ControllerCommand::CreateTopic { name: "t".into(), id: Uuid::new_v4(), partitions: -1, replication_factor: -1, assignments, configs: BTreeMap::new() })
            .expect("create");
        s.apply(reassign(&s, "t", Some(vec![4, 2, 1]))).expect("start");
        let p = s.topics["t"].partitions[0].clone();
        assert_eq!((p.all_replicas(), p.adding(), p.removing()), (vec![4, 2, 1, 3], vec![4], vec![3]));
        assert!(p.hosted_on(3) && p.hosted_on(4));
        // The leader adds 4 as a learner: the voters are unchanged, and 4 is a learner.
        s.apply(report(&s, "t", 1, 5, &[1, 2, 3], &[4])).expect("report");
        let p = s.topics["t"].partitions[0].clone();
        assert_eq!((p.replicas.clone(), p.learners.clone(), p.target.clone()), (vec![1, 2, 3], vec![4], Some(vec![4, 2, 1])));
        // The voters moved: the reassignment is done, in the target's order, and 3 is no
        // longer hosted.
        s.apply(report(&s, "t", 1, 5, &[1, 2, 4], &[])).expect("report");
        let p = s.topics["t"].partitions[0].clone();
        assert_eq!((p.replicas.clone(), p.target.clone()), (vec![4, 2, 1], None));
        assert!(!p.hosted_on(3));
        // A stale report from an older term changes nothing.
        s.apply(report(&s, "t", 3, 4, &[1, 2, 3], &[])).expect("report");
        assert_eq!(s.topics["t"].partitions[0].replicas, vec![4, 2, 1]);
    }

    #[test]
    fn reassignments_are_checked_and_can_be_cancelled() {
        let mut s = with_brokers(3);
        s.apply(create("t", 1, 2)).expect("create");
        let before = s.topics["t"].partitions[0].replicas.clone();
        let bad = |s: &mut ClusterState, target: Vec<u64>| s.apply(reassign(s, "t", Some(target)));
        assert!(matches!(bad(&mut s, vec![]), Err(ClusterError::InvalidReplicaAssignment(_))));
        assert!(matches!(bad(&mut s, vec![1, 1]), Err(ClusterError::InvalidReplicaAssignment(_))));
        assert!(matches!(bad(&mut s, vec![1, 9]), Err(ClusterError::InvalidReplicaAssignment(_))));
        let keep_rf = ControllerCommand::ReassignPartition { topic: s.topics["t"].id, partition: 0, target: Some(vec![1, 2, 3]), allow_rf_change: false };
        assert!(matches!(s.apply(keep_rf), Err(ClusterError::InvalidReplicationFactor(_))));
        let unknown = ControllerCommand::ReassignPartition { topic: s.topics["t"].id, partition: 7, target: Some(vec![1]), allow_rf_change: true };
        assert!(matches!(s.apply(unknown), Err(ClusterError::UnknownTopic(_))));
        assert!(matches!(s.apply(reassign(&s, "t", None)), Err(ClusterError::NoReassignmentInProgress(_))));
        // The same replicas in another order change only the order, at once.
        let reversed: Vec<u64> = before.iter().rev().copied().collect();
        s.apply(reassign(&s, "t", Some(reversed.clone()))).expect("reorder");
        assert_eq!((s.topics["t"].partitions[0].replicas.clone(), s.topics["t"].partitions[0].target.clone()), (reversed, None));
        s.apply(reassign(&s, "t", Some(vec![1, 2, 3]))).expect("start");
        s.apply(reassign(&s, "t", None)).expect("cancel");
        assert_eq!(s.topics["t"].partitions[0].target, None);
    }

    #[test]
    fn a_cancel_after_the_voter_change_began_moves_the_partition_back() {
        let mut s = with_brokers(4);
        let assignments = Some(vec![vec![1, 2, 3]]);
        s.apply(ControllerCommand::CreateTopic { name: "t".into(), id: Uuid::new_v4(), partitions: -1, replication_factor: -1, assignments, configs: BTreeMap::new() })
            .expect("create");
        let id = s.topics["t"].id;
        let begin = |voters: &[u64]| ControllerCommand::BeginVoterChange { topic: id, partition: 0, voters: voters.to_vec() };
        s.apply(reassign(&s, "t", Some(vec![4, 2, 1]))).expect("start");
        s.apply(report(&s, "t", 1, 5, &[1, 2, 3], &[4])).expect("learner added");
        // Only what is wanted may begin.
        assert!(matches!(s.apply(begin(&[1, 2, 3])), Err(ClusterError::NoReassignmentInProgress(_))));
        s.apply(begin(&[1, 2, 4])).expect("begin");
        // The cancel arrives while the change may be committing: it becomes a move back.
        assert_eq!(s.apply(reassign(&s, "t", None)), Ok(Applied::ReassignmentCancelled));
        let p = s.topics["t"].partitions[0].clone();
        assert_eq!((p.replicas.clone(), p.target.clone()), (vec![1, 2, 3], Some(vec![1, 2, 3])));
        // The change had committed: the partition is on the new voters, moving back.
        s.apply(report(&s, "t", 1, 5, &[1, 2, 4], &[])).expect("report");
        let p = s.topics["t"].partitions[0].clone();
        assert_eq!((p.target.clone(), p.adding(), p.removing(), p.changing_to.clone()), (Some(vec![1, 2, 3]), vec![3], vec![4], None));
        assert!(p.hosted_on(3) && p.hosted_on(4));
        // Moving back goes the same way, and ends on the original replicas.
        s.apply(begin(&[1, 2, 3])).expect("begin the way back");
        s.apply(report(&s, "t", 1, 5, &[1, 2, 3], &[])).expect("report");
        let p = s.topics["t"].partitions[0].clone();
        assert_eq!((p.replicas.clone(), p.target.clone(), p.changing_to.clone()), (vec![1, 2, 3], None, None));
        assert!(matches!(s.apply(reassign(&s, "t", None)), Err(ClusterError::NoReassignmentInProgress(_))));
        // A cancel before any change began simply drops the target.
        s.apply(reassign(&s, "t", Some(vec![4, 2, 1]))).expect("start again");
        s.apply(reassign(&s, "t", None)).expect("cancel");
        assert_eq!(s.topics["t"].partitions[0].target, None);
    }

    #[test]
    fn unregistering_removes_the_broker_once() {
        let mut s = with_brokers(2);
        s.apply(ControllerCommand::UnregisterBroker { node_id: 2 }).expect("unregister");
        assert_eq!(s.brokers.keys().copied().collect::<Vec<_>>(), [1]);
        assert_eq!(s.apply(ControllerCommand::UnregisterBroker { node_id: 2 }), Err(ClusterError::BrokerNotRegistered(2)));
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut s = with_brokers(2);
        s.apply(create("t", 2, 2)).expect("create");
        let json = serde_json::to_vec(&s).expect("encode");
        let back: ClusterState = serde_json::from_slice(&json).expect("decode");
        assert_eq!(back, s);
        let id = s.topics["t"].id;
        assert!(back.topic_by_id(&id).is_some());
    }
}
