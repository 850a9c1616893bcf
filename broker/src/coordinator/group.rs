//! Classic (pre-KIP-848) Kafka consumer-group coordinator state machine for ONE group:
//! JoinGroup / SyncGroup / Heartbeat / LeaveGroup handling, rebalance and session timers,
//! static membership (KIP-345), offset-commit validation and the persisted `GroupRecord`.
//! Pure and synchronous: time comes in as `now_ms`, member-id suffixes from a caller-provided
//! source, and deferred responses come out as `(ReplyId, Reply)` pairs.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

/// Caller-chosen handle of one request; every request gets exactly one reply carrying its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplyId(pub u64);

/// Source of member-id suffixes (a UUID generator in the broker, a counter in tests).
/// Member ids are `"{client_id}-{suffix}"` (dynamic) or `"{group_instance_id}-{suffix}"` (static).
pub type MemberIdSource = Box<dyn FnMut() -> String + Send>;

/// A deterministic suffix source yielding "1", "2", ... (tests, tools).
pub fn counter_member_ids() -> MemberIdSource {
    let mut n: u64 = 0;
    Box::new(move || {
        n += 1;
        n.to_string()
    })
}

/// Errors returned to clients; each maps 1:1 onto a Kafka error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum GroupError {
    #[error("UNKNOWN_SERVER_ERROR")]
    UnknownServerError,
    #[error("COORDINATOR_NOT_AVAILABLE")]
    CoordinatorNotAvailable,
    #[error("ILLEGAL_GENERATION")]
    IllegalGeneration,
    #[error("INCONSISTENT_GROUP_PROTOCOL")]
    InconsistentGroupProtocol,
    #[error("UNKNOWN_MEMBER_ID")]
    UnknownMemberId,
    #[error("INVALID_SESSION_TIMEOUT")]
    InvalidSessionTimeout,
    #[error("REBALANCE_IN_PROGRESS")]
    RebalanceInProgress,
    #[error("MEMBER_ID_REQUIRED")]
    MemberIdRequired,
    #[error("GROUP_MAX_SIZE_REACHED")]
    GroupMaxSizeReached,
    #[error("FENCED_INSTANCE_ID")]
    FencedInstanceId,
}

impl GroupError {
    /// The Kafka protocol error code.
    pub fn code(&self) -> i16 {
        match self {
            GroupError::UnknownServerError => -1,
            GroupError::CoordinatorNotAvailable => 15,
            GroupError::IllegalGeneration => 22,
            GroupError::InconsistentGroupProtocol => 23,
            GroupError::UnknownMemberId => 25,
            GroupError::InvalidSessionTimeout => 26,
            GroupError::RebalanceInProgress => 27,
            GroupError::MemberIdRequired => 79,
            GroupError::GroupMaxSizeReached => 81,
            GroupError::FencedInstanceId => 82,
        }
    }
}

/// Error code of an optional error (0 = NONE).
pub fn error_code(error: Option<GroupError>) -> i16 {
    error.map_or(0, |e| e.code())
}

/// Classic group states (Kafka's `ClassicGroupState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka reports in DescribeGroups / ListGroups.
    pub fn as_str(&self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

impl fmt::Display for GroupState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Broker-level settings (`group.*` configs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// `group.initial.rebalance.delay.ms`.
    pub initial_rebalance_delay_ms: i64,
    /// `group.max.size`.
    pub max_size: usize,
    /// `group.min.session.timeout.ms`.
    pub min_session_timeout_ms: i64,
    /// `group.max.session.timeout.ms`.
    pub max_session_timeout_ms: i64,
    /// How long a brand-new member's parked JoinGroup may wait before the member is dropped
    /// (Kafka's `NewMemberJoinTimeoutMs`, 5 minutes).
    pub new_member_join_timeout_ms: i64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            initial_rebalance_delay_ms: 3000,
            max_size: i32::MAX as usize,
            min_session_timeout_ms: 6000,
            max_session_timeout_ms: 1_800_000,
            new_member_join_timeout_ms: 300_000,
        }
    }
}

/// A JoinGroup request (one group).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JoinRequest {
    /// Empty on a member's first join.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// (protocol name, metadata) in preference order. Duplicate names: the first one counts.
    pub protocols: Vec<(String, Bytes)>,
    /// True for JoinGroup v4+ (KIP-394).
    pub require_known_member_id: bool,
    /// True for JoinGroup v9+ (KIP-814): a static leader replaced in a Stable group is told
    /// it is the leader with `skip_assignment = true`.
    pub supports_skip_assignment: bool,
    pub reason: Option<String>,
}

/// One member as listed in the leader's JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// The member's metadata for the selected protocol.
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinReply {
    pub error: Option<GroupError>,
    /// -1 on error.
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub skip_assignment: bool,
    pub member_id: String,
    /// All members' metadata, for the leader only; empty for followers.
    pub members: Vec<JoinedMember>,
}

/// A SyncGroup request (one group).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation_id: i32,
    /// SyncGroup v5+; checked against the group's when present.
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// Leader only: (member id, assignment). Members left out get an empty assignment.
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReply {
    pub error: Option<GroupError>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatReply {
    pub error: Option<GroupError>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveMemberResult {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub error: Option<GroupError>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveReply {
    /// Top-level error (only COORDINATOR_NOT_AVAILABLE for a dead group).
    pub error: Option<GroupError>,
    pub members: Vec<LeaveMemberResult>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Join(JoinReply),
    Sync(SyncReply),
    Heartbeat(HeartbeatReply),
    Leave(LeaveReply),
}

/// DescribeGroups view of the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub state: GroupState,
    pub protocol_type: String,
    /// The selected protocol; empty unless Stable (as Kafka).
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Metadata for the selected protocol; empty unless Stable (as Kafka).
    pub metadata: Bytes,
    /// Empty unless Stable (as Kafka).
    pub assignment: Bytes,
}

/// Persisted form of the group (Kafka's GroupMetadata record value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub generation_id: i32,
    pub leader: Option<String>,
    pub members: Vec<MemberRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocols: Vec<ProtocolRecord>,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolRecord {
    pub name: String,
    pub metadata: Bytes,
}

/// Why a `GroupRecord` could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("member id is empty or duplicated: {0:?}")]
    BadMemberId(String),
    #[error("group instance id is duplicated: {0:?}")]
    DuplicateInstanceId(String),
    #[error("a group with members needs a protocol type and a protocol")]
    MissingProtocol,
    #[error("member {0:?} does not support the group protocol")]
    UnsupportedProtocol(String),
    #[error("leader {0:?} is not a member")]
    BadLeader(Option<String>),
}

// ---------------------------------------------------------------------------------------------
// Internal state
// ---------------------------------------------------------------------------------------------

type Out = Vec<(ReplyId, Reply)>;

#[derive(Debug, Clone)]
struct Member {
    member_id: String,
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    session_timeout_ms: i64,
    rebalance_timeout_ms: i64,
    /// None until the leader's SyncGroup assigned this member (or after a reset).
    assignment: Option<Bytes>,
    awaiting_join: Option<ReplyId>,
    awaiting_sync: Option<ReplyId>,
    /// Added by a JoinGroup of the current rebalance; expires by the new-member join timeout.
    is_new: bool,
    /// Armed heartbeat deadline (mirrored in `Group::member_timers`).
    deadline: Option<i64>,
}

impl Member {
    /// Kafka's `hasSatisfiedHeartbeat`: a parked JoinGroup/SyncGroup counts as liveness,
    /// except for new members, whose parked JoinGroup expires by the new-member timeout.
    fn heartbeat_satisfied(&self) -> bool {
        !self.is_new && (self.awaiting_join.is_some() || self.awaiting_sync.is_some())
    }

    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn matches(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JoinTimer {
    /// Kafka's InitialDelayedJoin: the first rebalance out of Empty.
    Initial { deadline: i64, delay_ms: i64, remaining_ms: i64 },
    /// Kafka's DelayedJoin: completes at the rebalance timeout.
    Rebalance { deadline: i64 },
}

impl JoinTimer {
    fn deadline(&self) -> i64 {
        match *self {
            JoinTimer::Initial { deadline, .. } | JoinTimer::Rebalance { deadline } => deadline,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Due {
    Member(u64),
    Pending(String),
    Sync,
    Join,
}

/// One classic consumer group. See the module documentation.
///
/// Persistence contract: the group raises `record_changed()` exactly where Kafka appends a
/// GroupMetadata record (a rebalance ending with no members, the leader's SyncGroup moving the
/// group to Stable, a static member replaced without a rebalance). The caller then writes
/// `to_record()` (or uses `take_record()`, which also clears the flag).
pub struct Group {
    config: GroupConfig,
    state: GroupState,
    /// The current PreparingRebalance was entered from Empty (Kafka: previousState == EMPTY);
    /// such a rebalance only completes through its (initial-delay) timer.
    initial_rebalance: bool,
    new_member_added: bool,
    generation_id: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<u64>,
    /// Members by join sequence number (insertion order = "first joined").
    members: BTreeMap<u64, Member>,
    member_seq: HashMap<String, u64>,
    /// group.instance.id -> member sequence number.
    static_members: HashMap<String, u64>,
    next_seq: u64,
    /// Members told MEMBER_ID_REQUIRED, with their expiry deadline.
    pending_members: HashMap<String, i64>,
    pending_timers: BTreeSet<(i64, String)>,
    member_timers: BTreeSet<(i64, u64)>,
    /// Members that have not sent SyncGroup since the last join phase completed.
    pending_sync: HashSet<u64>,
    num_awaiting_join: usize,
    /// Protocol name -> number of members supporting it.
    supported_protocols: HashMap<String, usize>,
    join_timer: Option<JoinTimer>,
    /// (deadline, generation) of the pending-sync expiration.
    sync_timer: Option<(i64, i32)>,
    record_changed: bool,
    member_ids: MemberIdSource,
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("state", &self.state)
            .field("generation_id", &self.generation_id)
            .field("protocol_type", &self.protocol_type)
            .field("protocol_name", &self.protocol_name)
            .field("leader", &self.leader_id())
            .field("members", &self.members.len())
            .field("pending_members", &self.pending_members.len())
            .finish_non_exhaustive()
    }
}

pub fn join_error(member_id: &str, error: GroupError) -> Reply {
    Reply::Join(JoinReply {
        error: Some(error),
        generation_id: -1,
        protocol_type: None,
        protocol_name: None,
        leader: String::new(),
        skip_assignment: false,
        member_id: member_id.to_string(),
        members: Vec::new(),
    })
}

pub fn sync_error(error: GroupError) -> Reply {
    Reply::Sync(SyncReply {
        error: Some(error),
        protocol_type: None,
        protocol_name: None,
        assignment: Bytes::new(),
    })
}

fn dedup_protocols(protocols: Vec<(String, Bytes)>) -> Vec<(String, Bytes)> {
    let mut seen = HashSet::new();
    protocols
        .into_iter()
        .filter(|(name, _)| seen.insert(name.clone()))
        .collect()
}

impl Group {
    /// A new, Empty group at generation 0.
    pub fn new(config: GroupConfig, member_ids: MemberIdSource) -> Self {
        Group {
            config,
            state: GroupState::Empty,
            initial_rebalance: false,
            new_member_added: false,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: BTreeMap::new(),
            member_seq: HashMap::new(),
            static_members: HashMap::new(),
            next_seq: 0,
            pending_members: HashMap::new(),
            pending_timers: BTreeSet::new(),
            member_timers: BTreeSet::new(),
            pending_sync: HashSet::new(),
            num_awaiting_join: 0,
            supported_protocols: HashMap::new(),
            join_timer: None,
            sync_timer: None,
            record_changed: false,
            member_ids,
        }
    }

    // ----- accessors -------------------------------------------------------------------------

    pub fn state(&self) -> GroupState {
        self.state
    }

    /// Kafka's `isEmpty()`: the group is in the Empty state (no members, may be deleted).
    pub fn is_empty(&self) -> bool {
        self.state == GroupState::Empty
    }

    pub fn generation(&self) -> i32 {
        self.generation_id
    }

    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    pub fn protocol_name(&self) -> Option<&str> {
        self.protocol_name.as_deref()
    }

    pub fn leader(&self) -> Option<&str> {
        self.leader_id()
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    pub fn has_member(&self, member_id: &str) -> bool {
        self.member_seq.contains_key(member_id)
    }

    /// Member ids in join order.
    pub fn member_ids(&self) -> Vec<String> {
        self.members.values().map(|m| m.member_id.clone()).collect()
    }

    /// True when the persisted record changed since the last `take_record()`.
    pub fn record_changed(&self) -> bool {
        self.record_changed
    }

    /// The record to persist if it changed since the last call; clears the flag.
    pub fn take_record(&mut self) -> Option<GroupRecord> {
        if self.record_changed {
            self.record_changed = false;
            Some(self.to_record())
        } else {
            None
        }
    }

    /// When `tick` should next be called (None: no timer armed).
    pub fn next_deadline(&self) -> Option<i64> {
        self.next_due().map(|(deadline, _)| deadline)
    }

    // ----- requests --------------------------------------------------------------------------

    /// Fires every timer due at `now_ms`; returns the replies that became ready.
    pub fn tick(&mut self, now_ms: i64) -> Vec<(ReplyId, Reply)> {
        let mut out = Vec::new();
        self.fire_timers(now_ms, &mut out);
        out
    }

    /// JoinGroup. The reply for `reply_id` may be deferred until the rebalance completes.
    /// Due timers are fired first.
    pub fn join(&mut self, reply_id: ReplyId, now_ms: i64, req: JoinRequest) -> Vec<(ReplyId, Reply)> {
        let mut out = Vec::new();
        self.fire_timers(now_ms, &mut out);
        self.handle_join(reply_id, now_ms, req, &mut out);
        if self.state == GroupState::PreparingRebalance {
            self.maybe_complete_join_phase(now_ms, &mut out);
        }
        out
    }

    /// SyncGroup. Followers' replies are deferred until the leader's assignment arrives.
    /// Due timers are fired first.
    pub fn sync(&mut self, reply_id: ReplyId, now_ms: i64, req: SyncRequest) -> Vec<(ReplyId, Reply)> {
        let mut out = Vec::new();
        self.fire_timers(now_ms, &mut out);
        self.handle_sync(reply_id, now_ms, req, &mut out);
        out
    }

    /// Heartbeat; always answered immediately. Due timers are fired first.
    pub fn heartbeat(
        &mut self,
        reply_id: ReplyId,
        now_ms: i64,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
    ) -> Vec<(ReplyId, Reply)> {
        let mut out = Vec::new();
        self.fire_timers(now_ms, &mut out);
        let error = self.handle_heartbeat(now_ms, member_id, group_instance_id, generation_id);
        out.push((reply_id, Reply::Heartbeat(HeartbeatReply { error })));
        out
    }

    /// LeaveGroup (v3+ batch form; `(member_id, group_instance_id)` per leaving member, member
    /// id empty to remove a static member by instance id). Answered immediately; removing
    /// members may complete or start a rebalance, answering other parked requests.
    pub fn leave(
        &mut self,
        reply_id: ReplyId,
        now_ms: i64,
        members: Vec<(String, Option<String>)>,
    ) -> Vec<(ReplyId, Reply)> {
        let mut out = Vec::new();
        self.fire_timers(now_ms, &mut out);
        let reply = self.handle_leave(now_ms, members, &mut out);
        out.push((reply_id, Reply::Leave(reply)));
        out
    }

    /// Kafka's OffsetCommit validation (non-transactional). On success the member's session is
    /// extended (as Kafka does for Stable/PreparingRebalance groups). Does not fire timers.
    pub fn validate_offset_commit(
        &mut self,
        now_ms: i64,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
    ) -> Result<(), GroupError> {
        let seq = self.validate_commit(member_id, group_instance_id, generation_id, false)?;
        if let Some(seq) = seq {
            if matches!(self.state, GroupState::Stable | GroupState::PreparingRebalance) {
                self.touch(seq, now_ms);
            }
        }
        Ok(())
    }

    /// Kafka's TxnOffsetCommit validation: like `validate_offset_commit` but an anonymous
    /// (generation -1, no member id) commit is accepted in any state and CompletingRebalance is
    /// not rejected.
    pub fn validate_txn_offset_commit(
        &self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
    ) -> Result<(), GroupError> {
        self.validate_commit(member_id, group_instance_id, generation_id, true)
            .map(|_| ())
    }

    /// Marks the group deleted/unloaded. Parked requests are answered COORDINATOR_NOT_AVAILABLE
    /// and every later call answers COORDINATOR_NOT_AVAILABLE.
    pub fn mark_dead(&mut self) -> Vec<(ReplyId, Reply)> {
        let mut out = Vec::new();
        if self.state == GroupState::Dead {
            return out;
        }
        for m in self.members.values_mut() {
            if let Some(r) = m.awaiting_join.take() {
                out.push((r, join_error(&m.member_id, GroupError::CoordinatorNotAvailable)));
            }
            if let Some(r) = m.awaiting_sync.take() {
                out.push((r, sync_error(GroupError::CoordinatorNotAvailable)));
            }
        }
        self.state = GroupState::Dead;
        self.members.clear();
        self.member_seq.clear();
        self.static_members.clear();
        self.pending_members.clear();
        self.pending_timers.clear();
        self.member_timers.clear();
        self.pending_sync.clear();
        self.supported_protocols.clear();
        self.num_awaiting_join = 0;
        self.leader = None;
        self.join_timer = None;
        self.sync_timer = None;
        self.initial_rebalance = false;
        self.new_member_added = false;
        out
    }

    /// DescribeGroups. As Kafka, the protocol, metadata and assignments are only reported for a
    /// Stable group.
    pub fn describe(&self) -> GroupDescription {
        let stable = self.state == GroupState::Stable;
        let protocol = if stable { self.protocol_name.clone().unwrap_or_default() } else { String::new() };
        let members = if self.state == GroupState::Dead {
            Vec::new()
        } else {
            self.members
                .values()
                .map(|m| MemberDescription {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: if stable { m.metadata_for(&protocol) } else { Bytes::new() },
                    assignment: if stable { m.assignment.clone().unwrap_or_default() } else { Bytes::new() },
                })
                .collect()
        };
        GroupDescription {
            state: self.state,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol,
            members,
        }
    }

    // ----- persistence -----------------------------------------------------------------------

    /// The current persisted form of the group.
    pub fn to_record(&self) -> GroupRecord {
        GroupRecord {
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol_name.clone(),
            generation_id: self.generation_id,
            leader: self.leader_id().map(str::to_string),
            members: self
                .members
                .values()
                .map(|m| MemberRecord {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: i32::try_from(m.session_timeout_ms).unwrap_or(i32::MAX),
                    rebalance_timeout_ms: i32::try_from(m.rebalance_timeout_ms).unwrap_or(i32::MAX),
                    protocols: m
                        .protocols
                        .iter()
                        .map(|(name, metadata)| ProtocolRecord { name: name.clone(), metadata: metadata.clone() })
                        .collect(),
                    assignment: m.assignment.clone().unwrap_or_default(),
                })
                .collect(),
        }
    }

    /// Restores a group after a broker restart: Stable with the recorded members and
    /// assignments (each member gets a fresh session deadline), or Empty when it has no members.
    /// A restored group over `max_size` starts a rebalance, as Kafka does.
    pub fn from_record(
        record: GroupRecord,
        now_ms: i64,
        config: GroupConfig,
        member_ids: MemberIdSource,
    ) -> Result<Group, RecordError> {
        let mut group = Group::new(config, member_ids);
        group.generation_id = record.generation_id;
        group.protocol_type = record.protocol_type.filter(|t| !t.is_empty());
        if record.members.is_empty() {
            group.protocol_name = None;
            return Ok(group);
        }
        let (Some(protocol_type), Some(protocol)) = (group.protocol_type.clone(), record.protocol) else {
            return Err(RecordError::MissingProtocol);
        };
        for mr in record.members {
            if mr.member_id.is_empty() || group.member_seq.contains_key(&mr.member_id) {
                return Err(RecordError::BadMemberId(mr.member_id));
            }
            if let Some(iid) = &mr.group_instance_id {
                if group.static_members.contains_key(iid) {
                    return Err(RecordError::DuplicateInstanceId(iid.clone()));
                }
            }
            let protocols =
                dedup_protocols(mr.protocols.into_iter().map(|p| (p.name, p.metadata)).collect());
            if !protocols.iter().any(|(name, _)| *name == protocol) {
                return Err(RecordError::UnsupportedProtocol(mr.member_id));
            }
            let session = i64::from(mr.session_timeout_ms).max(0);
            let member = Member {
                member_id: mr.member_id,
                group_instance_id: mr.group_instance_id,
                client_id: mr.client_id,
                client_host: mr.client_host,
                protocol_type: protocol_type.clone(),
                protocols,
                session_timeout_ms: session,
                rebalance_timeout_ms: i64::from(mr.rebalance_timeout_ms).max(0),
                assignment: Some(mr.assignment),
                awaiting_join: None,
                awaiting_sync: None,
                is_new: false,
                deadline: None,
            };
            let seq = group.insert_member(member);
            group.set_deadline(seq, Some(now_ms.saturating_add(session)));
        }
        let leader = match &record.leader {
            Some(l) => group.member_seq.get(l).copied(),
            None => None,
        };
        let Some(leader) = leader else {
            return Err(RecordError::BadLeader(record.leader));
        };
        group.leader = Some(leader);
        group.protocol_name = Some(protocol);
        group.state = GroupState::Stable;
        if group.members.len() > group.config.max_size {
            // Kafka: "Freshly-loaded group is over capacity"; rebalancing lets consumers commit.
            let mut out = Vec::new();
            group.prepare_rebalance(now_ms, &mut out);
            debug_assert!(out.is_empty(), "a restored group has no parked requests");
        }
        Ok(group)
    }

    // ----- join ------------------------------------------------------------------------------

    fn handle_join(&mut self, reply_id: ReplyId, now: i64, mut req: JoinRequest, out: &mut Out) {
        if self.state == GroupState::Dead {
            out.push((reply_id, join_error(&req.member_id, GroupError::CoordinatorNotAvailable)));
            return;
        }
        let session = i64::from(req.session_timeout_ms);
        if session < self.config.min_session_timeout_ms || session > self.config.max_session_timeout_ms {
            out.push((reply_id, join_error(&req.member_id, GroupError::InvalidSessionTimeout)));
            return;
        }
        req.protocols = dedup_protocols(std::mem::take(&mut req.protocols));

        if !self.accept_joining_member(&req) {
            // Kafka removes the rejected member (this kicks out the last rejoining members of an
            // over-capacity group).
            if let Some(&seq) = self.member_seq.get(&req.member_id) {
                self.remove_member(seq, out);
            }
            self.remove_pending_member(&req.member_id);
            out.push((reply_id, join_error("", GroupError::GroupMaxSizeReached)));
            return;
        }

        if req.member_id.is_empty() {
            self.join_new_member(reply_id, now, req, out);
        } else {
            self.join_existing_member(reply_id, now, req, out);
        }
    }

    fn accept_joining_member(&self, req: &JoinRequest) -> bool {
        // Deliberate deviation: a static member rejoining with an unknown member id replaces its
        // old incarnation and does not grow the group, so it is never refused for size.
        if req.member_id.is_empty() {
            if let Some(iid) = &req.group_instance_id {
                if self.static_members.contains_key(iid) {
                    return true;
                }
            }
        }
        let existing = self.member_seq.get(&req.member_id).and_then(|s| self.members.get(s));
        match self.state {
            GroupState::Empty | GroupState::Dead => true,
            GroupState::PreparingRebalance => {
                existing.is_some_and(|m| m.awaiting_join.is_some())
                    || self.num_awaiting_join < self.config.max_size
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                existing.is_some() || self.members.len() < self.config.max_size
            }
        }
    }

    fn join_new_member(&mut self, reply_id: ReplyId, now: i64, req: JoinRequest, out: &mut Out) {
        if !self.supports_protocols(&req.protocol_type, &req.protocols) {
            out.push((reply_id, join_error("", GroupError::InconsistentGroupProtocol)));
            return;
        }
        let new_member_id = self.generate_member_id(&req.client_id, req.group_instance_id.as_deref());
        match req.group_instance_id.clone() {
            Some(iid) => match self.static_members.get(&iid).copied() {
                Some(seq) => self.replace_static_member(reply_id, now, seq, new_member_id, req, out),
                None => self.add_member_and_rebalance(reply_id, now, new_member_id, req, out),
            },
            None if req.require_known_member_id => {
                let deadline = now.saturating_add(i64::from(req.session_timeout_ms));
                self.pending_members.insert(new_member_id.clone(), deadline);
                self.pending_timers.insert((deadline, new_member_id.clone()));
                out.push((reply_id, join_error(&new_member_id, GroupError::MemberIdRequired)));
            }
            None => self.add_member_and_rebalance(reply_id, now, new_member_id, req, out),
        }
    }

    fn join_existing_member(&mut self, reply_id: ReplyId, now: i64, req: JoinRequest, out: &mut Out) {
        if !self.supports_protocols(&req.protocol_type, &req.protocols) {
            out.push((reply_id, join_error(&req.member_id, GroupError::InconsistentGroupProtocol)));
            return;
        }
        if req.group_instance_id.is_none() && self.pending_members.contains_key(&req.member_id) {
            let member_id = req.member_id.clone();
            self.add_member_and_rebalance(reply_id, now, member_id, req, out);
            return;
        }
        let seq = match self.validate_member(&req.member_id, req.group_instance_id.as_deref()) {
            Ok(seq) => seq,
            Err(e) => {
                out.push((reply_id, join_error(&req.member_id, e)));
                return;
            }
        };
        let rebalance_timeout = i64::from(req.rebalance_timeout_ms).max(0);
        let session_timeout = i64::from(req.session_timeout_ms);
        match self.state {
            GroupState::PreparingRebalance => {
                self.update_member(seq, req.protocols, rebalance_timeout, session_timeout, reply_id, out);
                self.maybe_complete_join_phase(now, out);
            }
            GroupState::CompletingRebalance => {
                let unchanged = self.members.get(&seq).is_some_and(|m| m.matches(&req.protocols));
                if unchanged {
                    // Probably a lost JoinGroup response: hand back the current generation.
                    self.touch(seq, now);
                    let reply = self.current_join_reply(seq);
                    out.push((reply_id, Reply::Join(reply)));
                } else {
                    self.update_member(seq, req.protocols, rebalance_timeout, session_timeout, reply_id, out);
                    self.maybe_prepare_rebalance_or_complete_join(now, out);
                }
            }
            GroupState::Stable => {
                let is_leader = self.leader == Some(seq);
                let unchanged = self.members.get(&seq).is_some_and(|m| m.matches(&req.protocols));
                if is_leader || !unchanged {
                    // The leader's JoinGroup always rebalances (it may have seen metadata changes).
                    self.update_member(seq, req.protocols, rebalance_timeout, session_timeout, reply_id, out);
                    self.maybe_prepare_rebalance_or_complete_join(now, out);
                } else {
                    self.touch(seq, now);
                    let reply = self.current_join_reply(seq);
                    out.push((reply_id, Reply::Join(reply)));
                }
            }
            GroupState::Empty | GroupState::Dead => {
                out.push((reply_id, join_error(&req.member_id, GroupError::UnknownMemberId)));
            }
        }
    }

    /// JoinGroup response for the current generation (leader gets the member list).
    fn current_join_reply(&self, seq: u64) -> JoinReply {
        let is_leader = self.leader == Some(seq);
        JoinReply {
            error: None,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader_id().unwrap_or_default().to_string(),
            skip_assignment: false,
            member_id: self.members.get(&seq).map(|m| m.member_id.clone()).unwrap_or_default(),
            members: if is_leader { self.current_members() } else { Vec::new() },
        }
    }

    fn current_members(&self) -> Vec<JoinedMember> {
        let protocol = self.protocol_name.as_deref().unwrap_or("");
        self.members
            .values()
            .map(|m| JoinedMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                metadata: m.metadata_for(protocol),
            })
            .collect()
    }

    fn add_member_and_rebalance(
        &mut self,
        reply_id: ReplyId,
        now: i64,
        member_id: String,
        req: JoinRequest,
        out: &mut Out,
    ) {
        let member = Member {
            member_id,
            group_instance_id: req.group_instance_id,
            client_id: req.client_id,
            client_host: req.client_host,
            protocol_type: req.protocol_type,
            protocols: req.protocols,
            session_timeout_ms: i64::from(req.session_timeout_ms),
            rebalance_timeout_ms: i64::from(req.rebalance_timeout_ms).max(0),
            assignment: None,
            awaiting_join: Some(reply_id),
            awaiting_sync: None,
            is_new: true,
            deadline: None,
        };
        if self.state == GroupState::PreparingRebalance && self.initial_rebalance {
            self.new_member_added = true;
        }
        if self.members.is_empty() {
            self.protocol_type = Some(member.protocol_type.clone());
        }
        self.remove_pending_member(&member.member_id);
        let seq = self.insert_member(member);
        self.num_awaiting_join += 1;
        // A parked JoinGroup of a new member is bounded by the new-member join timeout rather
        // than the session timeout (the client cannot heartbeat before it has joined).
        self.set_deadline(seq, Some(now.saturating_add(self.config.new_member_join_timeout_ms)));
        self.maybe_prepare_rebalance_or_complete_join(now, out);
    }

    /// KIP-345: a known static member rejoins with an unknown member id (a restarted client).
    fn replace_static_member(
        &mut self,
        reply_id: ReplyId,
        now: i64,
        seq: u64,
        new_member_id: String,
        req: JoinRequest,
        out: &mut Out,
    ) {
        let previous_leader = self.leader_id().map(str::to_string);
        let Some(m) = self.members.get_mut(&seq) else {
            out.push((reply_id, join_error("", GroupError::UnknownMemberId)));
            return;
        };
        let old_member_id = std::mem::replace(&mut m.member_id, new_member_id.clone());
        // Fence the old incarnation's parked requests.
        if let Some(r) = m.awaiting_join.take() {
            self.num_awaiting_join = self.num_awaiting_join.saturating_sub(1);
            out.push((r, join_error(&old_member_id, GroupError::FencedInstanceId)));
        }
        if let Some(r) = m.awaiting_sync.take() {
            out.push((r, sync_error(GroupError::FencedInstanceId)));
        }
        self.member_seq.remove(&old_member_id);
        self.member_seq.insert(new_member_id.clone(), seq);

        let rebalance_timeout = i64::from(req.rebalance_timeout_ms).max(0);
        let session_timeout = i64::from(req.session_timeout_ms);
        self.update_member(seq, req.protocols, rebalance_timeout, session_timeout, reply_id, out);
        self.touch(seq, now);

        match self.state {
            GroupState::Stable => {
                if self.select_protocol() == self.protocol_name {
                    // No rebalance: persist the new member id, hand back the current generation.
                    self.record_changed = true;
                    let is_leader = self.leader == Some(seq);
                    let reply = if req.supports_skip_assignment {
                        JoinReply {
                            error: None,
                            generation_id: self.generation_id,
                            protocol_type: self.protocol_type.clone(),
                            protocol_name: self.protocol_name.clone(),
                            leader: self.leader_id().unwrap_or_default().to_string(),
                            skip_assignment: is_leader,
                            member_id: new_member_id,
                            members: if is_leader { self.current_members() } else { Vec::new() },
                        }
                    } else {
                        // Pre-v9: report the previous leader id so that a replaced leader does
                        // not run an assignment a Stable group would ignore.
                        JoinReply {
                            error: None,
                            generation_id: self.generation_id,
                            protocol_type: self.protocol_type.clone(),
                            protocol_name: self.protocol_name.clone(),
                            leader: previous_leader.unwrap_or_default(),
                            skip_assignment: false,
                            member_id: new_member_id,
                            members: Vec::new(),
                        }
                    };
                    self.complete_join_reply(seq, reply, now, out);
                } else {
                    self.maybe_prepare_rebalance_or_complete_join(now, out);
                }
            }
            // The old member id may already be in the leader's assignment: rebalance.
            GroupState::CompletingRebalance => self.prepare_rebalance(now, out),
            GroupState::PreparingRebalance => self.maybe_complete_join_phase(now, out),
            GroupState::Empty | GroupState::Dead => {
                // Unreachable (static members imply members), but never leave a reply parked.
                self.complete_join_reply(seq, JoinReply {
                    error: Some(GroupError::UnknownMemberId),
                    generation_id: -1,
                    protocol_type: None,
                    protocol_name: None,
                    leader: String::new(),
                    skip_assignment: false,
                    member_id: String::new(),
                    members: Vec::new(),
                }, now, out);
            }
        }
    }

    /// Answers a member's parked JoinGroup with `reply`.
    fn complete_join_reply(&mut self, seq: u64, reply: JoinReply, now: i64, out: &mut Out) {
        if let Some(m) = self.members.get_mut(&seq) {
            if let Some(r) = m.awaiting_join.take() {
                self.num_awaiting_join = self.num_awaiting_join.saturating_sub(1);
                out.push((r, Reply::Join(reply)));
                self.touch(seq, now);
            }
        }
    }

    /// Updates a member's protocols/timeouts and parks `reply_id` as its JoinGroup. A JoinGroup
    /// already parked for the member is superseded and answered REBALANCE_IN_PROGRESS (a
    /// retriable error for JoinGroup clients).
    fn update_member(
        &mut self,
        seq: u64,
        protocols: Vec<(String, Bytes)>,
        rebalance_timeout_ms: i64,
        session_timeout_ms: i64,
        reply_id: ReplyId,
        out: &mut Out,
    ) {
        let Some(m) = self.members.get_mut(&seq) else {
            out.push((reply_id, join_error("", GroupError::UnknownMemberId)));
            return;
        };
        for (name, _) in &m.protocols {
            if let Some(c) = self.supported_protocols.get_mut(name) {
                *c -= 1;
                if *c == 0 {
                    self.supported_protocols.remove(name);
                }
            }
        }
        m.protocols = protocols;
        for (name, _) in &m.protocols {
            *self.supported_protocols.entry(name.clone()).or_insert(0) += 1;
        }
        m.rebalance_timeout_ms = rebalance_timeout_ms;
        m.session_timeout_ms = session_timeout_ms;
        match m.awaiting_join.replace(reply_id) {
            Some(old) => out.push((old, join_error(&m.member_id, GroupError::RebalanceInProgress))),
            None => self.num_awaiting_join += 1,
        }
    }

    // ----- rebalance machinery ---------------------------------------------------------------

    fn can_rebalance(&self) -> bool {
        matches!(
            self.state,
            GroupState::Stable | GroupState::CompletingRebalance | GroupState::Empty
        )
    }

    fn has_all_members_joined(&self) -> bool {
        self.members.len() == self.num_awaiting_join && self.pending_members.is_empty()
    }

    /// Max rebalance timeout over the members (Kafka's `group.rebalanceTimeoutMs`).
    fn rebalance_timeout_ms(&self) -> i64 {
        self.members.values().map(|m| m.rebalance_timeout_ms).max().unwrap_or(0)
    }

    fn maybe_prepare_rebalance_or_complete_join(&mut self, now: i64, out: &mut Out) {
        if self.can_rebalance() {
            self.prepare_rebalance(now, out);
        } else {
            self.maybe_complete_join_phase(now, out);
        }
    }

    /// Completes the join phase if every member rejoined — except for the initial rebalance
    /// out of Empty, which only ends through its delay timer.
    fn maybe_complete_join_phase(&mut self, now: i64, out: &mut Out) {
        if self.state == GroupState::PreparingRebalance
            && !self.initial_rebalance
            && self.has_all_members_joined()
        {
            self.complete_join(now, out);
        }
    }

    fn prepare_rebalance(&mut self, now: i64, out: &mut Out) {
        if self.state == GroupState::CompletingRebalance {
            self.reset_and_propagate_assignment_error(GroupError::RebalanceInProgress, now, out);
        }
        self.pending_sync.clear();
        self.sync_timer = None;
        if self.state == GroupState::Empty {
            // InitialDelayedJoin: wait `initial delay`, extended while new members keep arriving,
            // never beyond the rebalance timeout.
            let delay = self.config.initial_rebalance_delay_ms.max(0);
            let remaining = (self.rebalance_timeout_ms() - delay).max(0);
            self.join_timer = Some(JoinTimer::Initial {
                deadline: now.saturating_add(delay),
                delay_ms: delay,
                remaining_ms: remaining,
            });
            self.initial_rebalance = true;
            self.new_member_added = false;
            self.state = GroupState::PreparingRebalance;
        } else {
            self.initial_rebalance = false;
            self.state = GroupState::PreparingRebalance;
            if self.has_all_members_joined() {
                self.complete_join(now, out);
            } else {
                self.schedule_rebalance_timeout(now);
            }
        }
    }

    fn schedule_rebalance_timeout(&mut self, now: i64) {
        // At least 1ms so that a zero rebalance timeout cannot make `tick` spin.
        let timeout = self.rebalance_timeout_ms().max(1);
        self.join_timer = Some(JoinTimer::Rebalance { deadline: now.saturating_add(timeout) });
    }

    /// End of the join phase: drop dynamic members that did not rejoin, elect the leader, start
    /// the next generation and answer every parked JoinGroup.
    fn complete_join(&mut self, now: i64, out: &mut Out) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        self.join_timer = None;
        self.initial_rebalance = false;
        self.new_member_added = false;

        // Static members that did not rejoin are kept (KIP-345): they leave by session timeout,
        // pending-sync expiry or an explicit LeaveGroup.
        let not_rejoined: Vec<u64> = self
            .members
            .iter()
            .filter(|(_, m)| m.awaiting_join.is_none() && m.group_instance_id.is_none())
            .map(|(&seq, _)| seq)
            .collect();
        for seq in not_rejoined {
            self.remove_member(seq, out);
        }

        if !self.maybe_elect_new_joined_leader() && !self.members.is_empty() {
            // Nobody rejoined (only static members are left): wait another rebalance timeout,
            // session expiry will eventually remove them.
            self.schedule_rebalance_timeout(now);
            return;
        }

        self.generation_id = self.generation_id.saturating_add(1);
        self.pending_sync.clear();
        if self.members.is_empty() {
            self.protocol_name = None;
            self.state = GroupState::Empty;
            self.record_changed = true;
            return;
        }
        self.protocol_name = self.select_protocol();
        self.state = GroupState::CompletingRebalance;

        let leader_members = self.current_members();
        let generation_id = self.generation_id;
        let leader_id = self.leader_id().unwrap_or_default().to_string();
        let seqs: Vec<u64> = self.members.keys().copied().collect();
        for seq in seqs {
            let is_leader = self.leader == Some(seq);
            let Some(m) = self.members.get_mut(&seq) else { continue };
            if let Some(r) = m.awaiting_join.take() {
                self.num_awaiting_join = self.num_awaiting_join.saturating_sub(1);
                out.push((
                    r,
                    Reply::Join(JoinReply {
                        error: None,
                        generation_id,
                        protocol_type: self.protocol_type.clone(),
                        protocol_name: self.protocol_name.clone(),
                        leader: leader_id.clone(),
                        skip_assignment: false,
                        member_id: m.member_id.clone(),
                        members: if is_leader { leader_members.clone() } else { Vec::new() },
                    }),
                ));
            }
            m.is_new = false;
            self.pending_sync.insert(seq);
            self.touch(seq, now);
        }
        let timeout = self.rebalance_timeout_ms().max(1);
        self.sync_timer = Some((now.saturating_add(timeout), generation_id));
    }

    /// Keeps the leader if it rejoined, else the first (oldest) member that rejoined.
    fn maybe_elect_new_joined_leader(&mut self) -> bool {
        let Some(leader) = self.leader else { return false };
        if self.members.get(&leader).is_some_and(|m| m.awaiting_join.is_some()) {
            return true;
        }
        match self.members.iter().find(|(_, m)| m.awaiting_join.is_some()) {
            Some((&seq, _)) => {
                self.leader = Some(seq);
                true
            }
            None => false,
        }
    }

    /// Kafka's vote: candidates are the protocols every member supports; each member votes for
    /// its most preferred candidate; most votes wins. Kafka breaks ties by hash-map iteration
    /// order (unspecified); here ties go to the leader's preference order.
    fn select_protocol(&self) -> Option<String> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let candidates: HashSet<&str> = self
            .supported_protocols
            .iter()
            .filter(|(_, &c)| c == n)
            .map(|(p, _)| p.as_str())
            .collect();
        let mut votes: HashMap<&str, usize> = HashMap::new();
        for m in self.members.values() {
            if let Some((name, _)) = m.protocols.iter().find(|(name, _)| candidates.contains(name.as_str())) {
                *votes.entry(name.as_str()).or_insert(0) += 1;
            }
        }
        let preference = self
            .leader
            .and_then(|l| self.members.get(&l))
            .or_else(|| self.members.values().next())?;
        let mut best: Option<(&str, usize)> = None;
        for (name, _) in &preference.protocols {
            let v = votes.get(name.as_str()).copied().unwrap_or(0);
            if v > 0 && best.is_none_or(|(_, b)| v > b) {
                best = Some((name.as_str(), v));
            }
        }
        best.map(|(name, _)| name.to_string())
    }

    fn supports_protocols(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.state == GroupState::Empty {
            !protocol_type.is_empty() && !protocols.is_empty()
        } else {
            let n = self.members.len();
            self.protocol_type.as_deref() == Some(protocol_type)
                && protocols
                    .iter()
                    .any(|(name, _)| self.supported_protocols.get(name).copied().unwrap_or(0) == n)
        }
    }

    fn reset_and_propagate_assignment_error(&mut self, error: GroupError, now: i64, out: &mut Out) {
        let seqs: Vec<u64> = self.members.keys().copied().collect();
        for seq in seqs {
            let Some(m) = self.members.get_mut(&seq) else { continue };
            m.assignment = None;
            if let Some(r) = m.awaiting_sync.take() {
                out.push((r, sync_error(error)));
                self.touch(seq, now);
            }
        }
    }

    // ----- sync ------------------------------------------------------------------------------

    fn handle_sync(&mut self, reply_id: ReplyId, now: i64, req: SyncRequest, out: &mut Out) {
        if self.state == GroupState::Dead {
            out.push((reply_id, sync_error(GroupError::CoordinatorNotAvailable)));
            return;
        }
        let seq = match self.validate_member(&req.member_id, req.group_instance_id.as_deref()) {
            Ok(seq) => seq,
            Err(e) => {
                out.push((reply_id, sync_error(e)));
                return;
            }
        };
        if req.generation_id != self.generation_id {
            out.push((reply_id, sync_error(GroupError::IllegalGeneration)));
            return;
        }
        let type_mismatch = req.protocol_type.is_some() && req.protocol_type != self.protocol_type;
        let name_mismatch = req.protocol_name.is_some() && req.protocol_name != self.protocol_name;
        if type_mismatch || name_mismatch {
            out.push((reply_id, sync_error(GroupError::InconsistentGroupProtocol)));
            return;
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => {
                out.push((reply_id, sync_error(GroupError::UnknownMemberId)));
            }
            GroupState::PreparingRebalance => {
                self.touch(seq, now);
                out.push((reply_id, sync_error(GroupError::RebalanceInProgress)));
            }
            GroupState::CompletingRebalance => {
                if let Some(m) = self.members.get_mut(&seq) {
                    if let Some(old) = m.awaiting_sync.replace(reply_id) {
                        out.push((old, sync_error(GroupError::RebalanceInProgress)));
                    }
                }
                self.remove_pending_sync(seq);
                if self.leader == Some(seq) {
                    let mut assignment: HashMap<String, Bytes> = req.assignments.into_iter().collect();
                    for m in self.members.values_mut() {
                        m.assignment = Some(assignment.remove(&m.member_id).unwrap_or_default());
                    }
                    self.state = GroupState::Stable;
                    self.record_changed = true;
                    self.propagate_assignment(now, out);
                }
            }
            GroupState::Stable => {
                self.remove_pending_sync(seq);
                self.touch(seq, now);
                let assignment = self
                    .members
                    .get(&seq)
                    .and_then(|m| m.assignment.clone())
                    .unwrap_or_default();
                out.push((
                    reply_id,
                    Reply::Sync(SyncReply {
                        error: None,
                        protocol_type: self.protocol_type.clone(),
                        protocol_name: self.protocol_name.clone(),
                        assignment,
                    }),
                ));
            }
        }
    }

    fn remove_pending_sync(&mut self, seq: u64) {
        self.pending_sync.remove(&seq);
        if self.pending_sync.is_empty() {
            self.sync_timer = None;
        }
    }

    fn propagate_assignment(&mut self, now: i64, out: &mut Out) {
        let seqs: Vec<u64> = self.members.keys().copied().collect();
        for seq in seqs {
            let Some(m) = self.members.get_mut(&seq) else { continue };
            if let Some(r) = m.awaiting_sync.take() {
                out.push((
                    r,
                    Reply::Sync(SyncReply {
                        error: None,
                        protocol_type: self.protocol_type.clone(),
                        protocol_name: self.protocol_name.clone(),
                        assignment: m.assignment.clone().unwrap_or_default(),
                    }),
                ));
                self.touch(seq, now);
            }
        }
    }

    // ----- heartbeat / leave / commit --------------------------------------------------------

    fn handle_heartbeat(
        &mut self,
        now: i64,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
    ) -> Option<GroupError> {
        if self.state == GroupState::Dead {
            return Some(GroupError::CoordinatorNotAvailable);
        }
        let seq = match self.validate_member(member_id, group_instance_id) {
            Ok(seq) => seq,
            Err(e) => return Some(e),
        };
        if generation_id != self.generation_id {
            return Some(GroupError::IllegalGeneration);
        }
        match self.state {
            GroupState::Empty | GroupState::Dead => Some(GroupError::UnknownMemberId),
            GroupState::PreparingRebalance => {
                self.touch(seq, now);
                Some(GroupError::RebalanceInProgress)
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.touch(seq, now);
                None
            }
        }
    }

    fn handle_leave(&mut self, now: i64, leaving: Vec<(String, Option<String>)>, out: &mut Out) -> LeaveReply {
        if self.state == GroupState::Dead {
            return LeaveReply { error: Some(GroupError::CoordinatorNotAvailable), members: Vec::new() };
        }
        let mut results = Vec::with_capacity(leaving.len());
        let mut removed_member = false;
        let mut removed_pending = false;
        for (member_id, group_instance_id) in leaving {
            let error = if member_id.is_empty() {
                // Administrative removal by group.instance.id.
                match group_instance_id.as_ref().and_then(|i| self.static_members.get(i)).copied() {
                    Some(seq) => {
                        self.remove_member(seq, out);
                        removed_member = true;
                        None
                    }
                    None => Some(GroupError::UnknownMemberId),
                }
            } else if self.pending_members.contains_key(&member_id) {
                self.remove_pending_member(&member_id);
                removed_pending = true;
                None
            } else {
                match self.validate_member(&member_id, group_instance_id.as_deref()) {
                    Ok(seq) => {
                        self.remove_member(seq, out);
                        removed_member = true;
                        None
                    }
                    Err(e) => Some(e),
                }
            };
            results.push(LeaveMemberResult { member_id, group_instance_id, error });
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance if removed_member => {
                self.maybe_prepare_rebalance_or_complete_join(now, out);
            }
            GroupState::PreparingRebalance if removed_member || removed_pending => {
                self.maybe_complete_join_phase(now, out);
            }
            _ => {}
        }
        LeaveReply { error: None, members: results }
    }

    /// Shared OffsetCommit / TxnOffsetCommit checks; returns the member's seq when validated as
    /// a member.
    fn validate_commit(
        &self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
        transactional: bool,
    ) -> Result<Option<u64>, GroupError> {
        if self.state == GroupState::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if generation_id < 0 && self.state == GroupState::Empty {
            // Admin client / manual assignment ("simple") commits into an empty group.
            return Ok(None);
        }
        let mut seq = None;
        if generation_id >= 0 || !member_id.is_empty() || group_instance_id.is_some() {
            seq = Some(self.validate_member(member_id, group_instance_id)?);
            if generation_id != self.generation_id {
                return Err(GroupError::IllegalGeneration);
            }
        } else if !transactional && self.state != GroupState::Empty {
            // Only members may commit into a non-empty group.
            return Err(GroupError::UnknownMemberId);
        }
        if !transactional && self.state == GroupState::CompletingRebalance {
            return Err(GroupError::RebalanceInProgress);
        }
        Ok(seq)
    }

    /// `group_instance_id` given: it must map to `member_id` (FENCED_INSTANCE_ID otherwise);
    /// then `member_id` must be a member.
    fn validate_member(&self, member_id: &str, group_instance_id: Option<&str>) -> Result<u64, GroupError> {
        if let Some(iid) = group_instance_id {
            match self.static_members.get(iid).and_then(|s| self.members.get(s)) {
                None => return Err(GroupError::UnknownMemberId),
                Some(m) if m.member_id != member_id => return Err(GroupError::FencedInstanceId),
                Some(_) => {}
            }
        }
        self.member_seq.get(member_id).copied().ok_or(GroupError::UnknownMemberId)
    }

    // ----- membership bookkeeping ------------------------------------------------------------

    fn leader_id(&self) -> Option<&str> {
        self.leader
            .and_then(|l| self.members.get(&l))
            .map(|m| m.member_id.as_str())
    }

    fn generate_member_id(&mut self, client_id: &str, group_instance_id: Option<&str>) -> String {
        let prefix = group_instance_id.unwrap_or(client_id);
        loop {
            let id = format!("{prefix}-{}", (self.member_ids)());
            if !self.member_seq.contains_key(&id) && !self.pending_members.contains_key(&id) {
                return id;
            }
            // The source repeated itself: disambiguate with the (monotonic) sequence number.
            let id = format!("{id}-{}", self.next_seq);
            self.next_seq += 1;
            if !self.member_seq.contains_key(&id) && !self.pending_members.contains_key(&id) {
                return id;
            }
        }
    }

    /// Adds a member (no timers, no awaiting counters) and returns its sequence number.
    fn insert_member(&mut self, member: Member) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(iid) = &member.group_instance_id {
            self.static_members.insert(iid.clone(), seq);
        }
        for (name, _) in &member.protocols {
            *self.supported_protocols.entry(name.clone()).or_insert(0) += 1;
        }
        self.member_seq.insert(member.member_id.clone(), seq);
        if self.leader.is_none() {
            self.leader = Some(seq);
        }
        self.members.insert(seq, member);
        seq
    }

    /// Removes a member, answering its parked requests with UNKNOWN_MEMBER_ID.
    fn remove_member(&mut self, seq: u64, out: &mut Out) {
        let Some(m) = self.members.remove(&seq) else { return };
        self.member_seq.remove(&m.member_id);
        if let Some(iid) = &m.group_instance_id {
            if self.static_members.get(iid) == Some(&seq) {
                self.static_members.remove(iid);
            }
        }
        for (name, _) in &m.protocols {
            if let Some(c) = self.supported_protocols.get_mut(name) {
                *c -= 1;
                if *c == 0 {
                    self.supported_protocols.remove(name);
                }
            }
        }
        if let Some(r) = m.awaiting_join {
            self.num_awaiting_join = self.num_awaiting_join.saturating_sub(1);
            out.push((r, join_error("", GroupError::UnknownMemberId)));
        }
        if let Some(r) = m.awaiting_sync {
            out.push((r, sync_error(GroupError::UnknownMemberId)));
        }
        if let Some(d) = m.deadline {
            self.member_timers.remove(&(d, seq));
        }
        self.pending_sync.remove(&seq);
        if self.leader == Some(seq) {
            self.leader = self.members.keys().next().copied();
        }
    }

    fn remove_pending_member(&mut self, member_id: &str) {
        if let Some(d) = self.pending_members.remove(member_id) {
            self.pending_timers.remove(&(d, member_id.to_string()));
        }
    }

    fn set_deadline(&mut self, seq: u64, deadline: Option<i64>) {
        let Some(m) = self.members.get_mut(&seq) else { return };
        if let Some(old) = m.deadline {
            self.member_timers.remove(&(old, seq));
        }
        m.deadline = deadline;
        if let Some(d) = deadline {
            self.member_timers.insert((d, seq));
        }
    }

    /// Liveness from the member: next heartbeat expected within its session timeout.
    fn touch(&mut self, seq: u64, now: i64) {
        let Some(session) = self.members.get(&seq).map(|m| m.session_timeout_ms) else { return };
        self.set_deadline(seq, Some(now.saturating_add(session)));
    }

    // ----- timers ----------------------------------------------------------------------------

    fn next_due(&self) -> Option<(i64, Due)> {
        if self.state == GroupState::Dead {
            return None;
        }
        let mut best: Option<(i64, Due)> = None;
        let mut consider = |deadline: i64, due: Due| {
            if best.as_ref().is_none_or(|(b, _)| deadline < *b) {
                best = Some((deadline, due));
            }
        };
        if let Some(&(d, seq)) = self.member_timers.first() {
            consider(d, Due::Member(seq));
        }
        if let Some((d, id)) = self.pending_timers.first() {
            consider(*d, Due::Pending(id.clone()));
        }
        if let Some((d, _)) = self.sync_timer {
            consider(d, Due::Sync);
        }
        if let Some(t) = self.join_timer {
            consider(t.deadline(), Due::Join);
        }
        best
    }

    fn fire_timers(&mut self, now: i64, out: &mut Out) {
        while let Some((deadline, due)) = self.next_due() {
            if deadline > now {
                break;
            }
            match due {
                Due::Member(seq) => self.on_member_deadline(seq, now, out),
                Due::Pending(id) => {
                    self.remove_pending_member(&id);
                    if self.state == GroupState::PreparingRebalance {
                        self.maybe_complete_join_phase(now, out);
                    }
                }
                Due::Sync => self.on_sync_deadline(now, out),
                Due::Join => self.on_join_deadline(deadline, now, out),
            }
        }
    }

    fn on_member_deadline(&mut self, seq: u64, now: i64, out: &mut Out) {
        let Some(m) = self.members.get(&seq) else {
            self.member_timers.retain(|&(_, s)| s != seq);
            return;
        };
        if m.heartbeat_satisfied() {
            // Parked JoinGroup/SyncGroup: the timer is re-armed when the request is answered.
            self.set_deadline(seq, None);
            return;
        }
        self.remove_member(seq, out);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.maybe_prepare_rebalance_or_complete_join(now, out);
            }
            GroupState::PreparingRebalance => self.maybe_complete_join_phase(now, out),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    fn on_sync_deadline(&mut self, now: i64, out: &mut Out) {
        let Some((_, generation)) = self.sync_timer.take() else { return };
        if generation != self.generation_id
            || !matches!(self.state, GroupState::CompletingRebalance | GroupState::Stable)
            || self.pending_sync.is_empty()
        {
            return;
        }
        // Members that never sent SyncGroup within the rebalance timeout are dropped.
        let mut laggards: Vec<u64> = self.pending_sync.iter().copied().collect();
        laggards.sort_unstable();
        for seq in laggards {
            self.remove_member(seq, out);
        }
        self.prepare_rebalance(now, out);
    }

    /// `fired_at` is the timer's own deadline: an extension of the initial delay is counted
    /// from it, so the total delay does not depend on how late the caller ticks.
    fn on_join_deadline(&mut self, fired_at: i64, now: i64, out: &mut Out) {
        match self.join_timer.take() {
            Some(JoinTimer::Initial { delay_ms, remaining_ms, .. })
                if self.new_member_added && remaining_ms != 0 =>
            {
                self.new_member_added = false;
                let delay = self.config.initial_rebalance_delay_ms.max(0).min(remaining_ms);
                let remaining = (remaining_ms - delay_ms).max(0);
                self.join_timer = Some(JoinTimer::Initial {
                    deadline: fired_at.saturating_add(delay),
                    delay_ms: delay,
                    remaining_ms: remaining,
                });
            }
            Some(_) => self.complete_join(now, out),
            None => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Test-only invariant checks
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
impl Group {
    /// Panics if an internal invariant is broken.
    fn check_invariants(&self) {
        assert_eq!(self.members.len(), self.member_seq.len(), "member index size");
        let mut counts: HashMap<String, usize> = HashMap::new();
        let mut awaiting = 0;
        let mut statics = 0;
        let mut parked = false;
        for (&seq, m) in &self.members {
            assert_eq!(self.member_seq.get(&m.member_id), Some(&seq), "member index");
            if let Some(iid) = &m.group_instance_id {
                statics += 1;
                assert_eq!(self.static_members.get(iid), Some(&seq), "static index");
            }
            for (name, _) in &m.protocols {
                *counts.entry(name.clone()).or_insert(0) += 1;
            }
            if m.awaiting_join.is_some() {
                awaiting += 1;
                parked = true;
                assert_eq!(self.state, GroupState::PreparingRebalance, "join parked outside PreparingRebalance");
            }
            if m.awaiting_sync.is_some() {
                parked = true;
                assert_eq!(self.state, GroupState::CompletingRebalance, "sync parked outside CompletingRebalance");
            }
            if let Some(d) = m.deadline {
                assert!(self.member_timers.contains(&(d, seq)), "member timer missing");
            }
            if self.state == GroupState::Stable {
                assert!(m.assignment.is_some(), "Stable member {} without assignment", m.member_id);
            }
            if matches!(self.state, GroupState::Stable | GroupState::CompletingRebalance) {
                let p = self.protocol_name.as_deref().expect("protocol selected");
                assert!(m.protocols.iter().any(|(n, _)| n == p), "member does not support group protocol");
            }
        }
        assert_eq!(statics, self.static_members.len(), "static index size");
        assert_eq!(awaiting, self.num_awaiting_join, "awaiting join count");
        assert_eq!(counts, self.supported_protocols, "protocol counts");
        assert_eq!(self.member_timers.len(), self.members.values().filter(|m| m.deadline.is_some()).count());
        assert_eq!(self.pending_timers.len(), self.pending_members.len());
        for (d, id) in &self.pending_timers {
            assert_eq!(self.pending_members.get(id), Some(d));
        }
        for seq in &self.pending_sync {
            assert!(self.members.contains_key(seq), "pending sync of a non-member");
        }
        match self.leader {
            Some(l) => assert!(self.members.contains_key(&l), "leader is not a member"),
            None => assert!(self.members.is_empty(), "members without a leader"),
        }
        if matches!(self.state, GroupState::Empty | GroupState::Dead) {
            assert!(self.members.is_empty(), "{} group with members", self.state);
        }
        assert_eq!(self.join_timer.is_some(), self.state == GroupState::PreparingRebalance, "join timer iff PreparingRebalance");
        if parked {
            assert!(self.next_deadline().is_some(), "parked request with no timer armed");
        }
    }

    /// Reply ids of every parked JoinGroup/SyncGroup.
    fn parked_replies(&self) -> HashSet<ReplyId> {
        self.members
            .values()
            .flat_map(|m| m.awaiting_join.into_iter().chain(m.awaiting_sync))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: i32 = 10_000;
    const REBALANCE: i32 = 30_000;
    const DELAY: i64 = 3000;

    struct H {
        g: Group,
        next: u64,
        now: i64,
    }

    impl H {
        fn new() -> Self {
            H::with(GroupConfig::default())
        }

        fn with(config: GroupConfig) -> Self {
            H { g: Group::new(config, counter_member_ids()), next: 0, now: 0 }
        }

        fn rid(&mut self) -> ReplyId {
            self.next += 1;
            ReplyId(self.next)
        }

        fn join(&mut self, req: JoinRequest) -> (ReplyId, Out) {
            let id = self.rid();
            let out = self.g.join(id, self.now, req);
            self.g.check_invariants();
            (id, out)
        }

        fn sync(&mut self, req: SyncRequest) -> (ReplyId, Out) {
            let id = self.rid();
            let out = self.g.sync(id, self.now, req);
            self.g.check_invariants();
            (id, out)
        }

        fn hb(&mut self, member_id: &str, instance: Option<&str>, generation: i32) -> Option<GroupError> {
            let id = self.rid();
            let out = self.g.heartbeat(id, self.now, member_id, instance, generation);
            self.g.check_invariants();
            match out.iter().find(|(r, _)| *r == id) {
                Some((_, Reply::Heartbeat(h))) => h.error,
                other => panic!("no heartbeat reply: {other:?}"),
            }
        }

        fn leave(&mut self, members: &[(&str, Option<&str>)]) -> (LeaveReply, Out) {
            let id = self.rid();
            let members = members.iter().map(|(m, i)| (m.to_string(), i.map(str::to_string))).collect();
            let out = self.g.leave(id, self.now, members);
            self.g.check_invariants();
            let reply = match out.iter().find(|(r, _)| *r == id) {
                Some((_, Reply::Leave(l))) => l.clone(),
                other => panic!("no leave reply: {other:?}"),
            };
            (reply, out)
        }

        /// Moves the clock to `t` and fires due timers.
        fn at(&mut self, t: i64) -> Out {
            self.now = t;
            let out = self.g.tick(t);
            self.g.check_invariants();
            out
        }

        fn advance(&mut self, ms: i64) -> Out {
            self.at(self.now + ms)
        }
    }

    fn req(client: &str) -> JoinRequest {
        JoinRequest {
            member_id: String::new(),
            group_instance_id: None,
            client_id: client.to_string(),
            client_host: "/10.0.0.1".to_string(),
            session_timeout_ms: SESSION,
            rebalance_timeout_ms: REBALANCE,
            protocol_type: "consumer".to_string(),
            protocols: vec![("range".to_string(), Bytes::from(format!("{client}-range")))],
            require_known_member_id: false,
            supports_skip_assignment: false,
            reason: None,
        }
    }

    fn rejoin(client: &str, member_id: &str) -> JoinRequest {
        JoinRequest { member_id: member_id.to_string(), ..req(client) }
    }

    fn static_req(client: &str, instance: &str) -> JoinRequest {
        JoinRequest { group_instance_id: Some(instance.to_string()), ..req(client) }
    }

    fn sreq(member_id: &str, generation_id: i32, assignments: Vec<(String, Bytes)>) -> SyncRequest {
        SyncRequest {
            member_id: member_id.to_string(),
            group_instance_id: None,
            generation_id,
            protocol_type: Some("consumer".to_string()),
            protocol_name: None,
            assignments,
        }
    }

    fn find(out: &Out, id: ReplyId) -> Option<&Reply> {
        let hits: Vec<&Reply> = out.iter().filter(|(r, _)| *r == id).map(|(_, r)| r).collect();
        assert!(hits.len() <= 1, "reply {id:?} answered {} times", hits.len());
        hits.into_iter().next()
    }

    fn join_reply(out: &Out, id: ReplyId) -> JoinReply {
        match find(out, id) {
            Some(Reply::Join(j)) => j.clone(),
            other => panic!("expected a join reply for {id:?}, got {other:?} in {out:?}"),
        }
    }

    fn sync_reply(out: &Out, id: ReplyId) -> SyncReply {
        match find(out, id) {
            Some(Reply::Sync(s)) => s.clone(),
            other => panic!("expected a sync reply for {id:?}, got {other:?}"),
        }
    }

    fn assignment_for(member: &str) -> Bytes {
        Bytes::from(format!("assign-{member}"))
    }

    /// Joins `clients` into an empty group, waits the initial delay and completes SyncGroup.
    /// Returns member ids in join order (the first one is the leader).
    fn stable_group(h: &mut H, clients: &[&str]) -> Vec<String> {
        let mut ids = Vec::new();
        let start = h.now;
        for c in clients {
            ids.push(h.join(req(c)).0);
        }
        let mut out = h.at(start + DELAY);
        if out.len() < ids.len() {
            out.extend(h.at(start + 2 * DELAY));
        }
        let replies: Vec<JoinReply> = ids.iter().map(|id| join_reply(&out, *id)).collect();
        assert!(replies.iter().all(|r| r.error.is_none()));
        let members: Vec<String> = replies.iter().map(|r| r.member_id.clone()).collect();
        let gen = replies[0].generation_id;
        let leader = replies[0].leader.clone();
        assert_eq!(h.g.state(), GroupState::CompletingRebalance);
        let assignments: Vec<(String, Bytes)> = members.iter().map(|m| (m.clone(), assignment_for(m))).collect();
        let mut parked = Vec::new();
        for m in members.iter().filter(|m| **m != leader) {
            let (id, out) = h.sync(sreq(m, gen, vec![]));
            assert!(out.is_empty(), "follower sync must wait for the leader");
            parked.push((m.clone(), id));
        }
        let (lid, out) = h.sync(sreq(&leader, gen, assignments));
        assert_eq!(sync_reply(&out, lid).assignment, assignment_for(&leader));
        for (m, id) in parked {
            assert_eq!(sync_reply(&out, id).assignment, assignment_for(&m));
        }
        assert_eq!(h.g.state(), GroupState::Stable);
        members
    }

    // ----- 1. states -------------------------------------------------------------------------

    #[test]
    fn states_go_empty_preparing_completing_stable() {
        let mut h = H::new();
        assert_eq!(h.g.state(), GroupState::Empty);
        assert!(h.g.is_empty());
        assert_eq!(h.g.generation(), 0);
        let (a, out) = h.join(req("a"));
        assert!(out.is_empty());
        assert_eq!(h.g.state(), GroupState::PreparingRebalance);
        let out = h.at(DELAY);
        let ja = join_reply(&out, a);
        assert_eq!(ja.error, None);
        assert_eq!(ja.generation_id, 1);
        assert_eq!(h.g.state(), GroupState::CompletingRebalance);
        let (s, out) = h.sync(sreq(&ja.member_id, 1, vec![(ja.member_id.clone(), Bytes::from_static(b"x"))]));
        assert_eq!(sync_reply(&out, s).assignment, Bytes::from_static(b"x"));
        assert_eq!(h.g.state(), GroupState::Stable);
        assert_eq!(h.g.state().as_str(), "Stable");
    }

    #[test]
    fn dead_group_answers_parked_requests_and_every_call_with_coordinator_not_available() {
        let mut h = H::new();
        let (a, _) = h.join(req("a"));
        let out = h.g.mark_dead();
        assert_eq!(join_reply(&out, a).error, Some(GroupError::CoordinatorNotAvailable));
        assert_eq!(h.g.state(), GroupState::Dead);
        assert_eq!(h.g.next_deadline(), None);
        let (j, out) = h.join(req("b"));
        assert_eq!(join_reply(&out, j).error, Some(GroupError::CoordinatorNotAvailable));
        let (s, out) = h.sync(sreq("a-1", 1, vec![]));
        assert_eq!(sync_reply(&out, s).error, Some(GroupError::CoordinatorNotAvailable));
        assert_eq!(h.hb("a-1", None, 1), Some(GroupError::CoordinatorNotAvailable));
        let (l, _) = h.leave(&[("a-1", None)]);
        assert_eq!(l.error, Some(GroupError::CoordinatorNotAvailable));
        assert_eq!(h.g.validate_offset_commit(0, "", None, -1), Err(GroupError::CoordinatorNotAvailable));
        assert_eq!(h.g.describe().state.as_str(), "Dead");
        assert!(h.g.tick(1_000_000).is_empty());
    }

    #[test]
    fn dead_group_answers_parked_syncs_too() {
        let mut h = H::new();
        let ids = stable_group(&mut h, &["a", "b"]);
        let (j, _) = h.join(rejoin("a", &ids[0]));
        let (k, out) = h.join(rejoin("b", &ids[1]));
        assert_eq!(join_reply(&out, j).generation_id, 2);
        assert!(find(&out, k).is_some());
        let (s, out) = h.sync(sreq(&ids[1], 2, vec![]));
        assert!(out.is_empty());
        let out = h.g.mark_dead();
        assert_eq!(sync_reply(&out, s).error, Some(GroupError::CoordinatorNotAvailable));
    }

    // ----- 2. member id required -------------------------------------------------------------

    #[test]
    fn first_join_requiring_known_member_id_gets_member_id_required_and_must_rejoin_with_it() {
        let mut h = H::new();
        let (a, out) = h.join(JoinRequest { require_known_member_id: true, ..req("client") });
        let r = join_reply(&out, a);
        assert_eq!(r.error, Some(GroupError::MemberIdRequired));
        assert_eq!(r.member_id, "client-1");
        assert_eq!(r.generation_id, -1);
        assert_eq!(h.g.member_count(), 0, "pending, not yet a member");
        assert_eq!(h.g.state(), GroupState::Empty);
        h.now = 100;
        let (b, out) = h.join(JoinRequest { require_known_member_id: true, ..rejoin("client", "client-1") });
        assert!(out.is_empty());
        assert!(h.g.has_member("client-1"));
        let out = h.at(100 + DELAY);
        let r = join_reply(&out, b);
        assert_eq!(r.error, None);
        assert_eq!(r.member_id, "client-1");
        assert_eq!(r.leader, "client-1");
    }

    #[test]
    fn pending_member_that_does_not_rejoin_within_session_timeout_is_forgotten() {
        let mut h = H::new();
        let (a, out) = h.join(JoinRequest { require_known_member_id: true, ..req("client") });
        let id = join_reply(&out, a).member_id;
        assert_eq!(h.g.next_deadline(), Some(i64::from(SESSION)));
        h.at(i64::from(SESSION));
        assert_eq!(h.g.next_deadline(), None);
        let (b, out) = h.join(rejoin("client", &id));
        assert_eq!(join_reply(&out, b).error, Some(GroupError::UnknownMemberId));
    }

    #[test]
    fn join_without_required_known_member_id_adds_member_directly() {
        let mut h = H::new();
        let (a, out) = h.join(req("old-client"));
        assert!(out.is_empty(), "parked until the rebalance completes");
        assert!(h.g.has_member("old-client-1"));
        let out = h.at(DELAY);
        assert_eq!(join_reply(&out, a).member_id, "old-client-1");
    }

    #[test]
    fn pending_member_holds_a_rebalance_until_it_rejoins() {
        let mut h = H::new();
        let ids = stable_group(&mut h, &["a"]);
        let (p, out) = h.join(JoinRequest { require_known_member_id: true, ..req("b") });
        let pid = join_reply(&out, p).member_id;
        // The existing leader rejoins: the group waits for the pending member too.
        let (a, out) = h.join(rejoin("a", &ids[0]));
        assert!(out.is_empty());
        let (b, out) = h.join(rejoin("b", &pid));
        assert_eq!(join_reply(&out, a).generation_id, 2);
        assert_eq!(join_reply(&out, b).generation_id, 2);
    }

    // ----- 3. protocols ----------------------------------------------------------------------

    #[test]
    fn join_with_other_protocol_type_is_inconsistent_group_protocol() {
        let mut h = H::new();
        stable_group(&mut h, &["a"]);
        let (b, out) = h.join(JoinRequest { protocol_type: "connect".into(), ..req("b") });
        let r = join_reply(&out, b);
        assert_eq!(r.error, Some(GroupError::InconsistentGroupProtocol));
        assert_eq!(r.error.map(|e| e.code()), Some(23));
        assert_eq!(h.g.state(), GroupState::Stable);
    }

    #[test]
    fn join_without_a_protocol_supported_by_all_members_is_inconsistent_group_protocol() {
        let mut h = H::new();
        stable_group(&mut h, &["a"]);
        let (b, out) = h.join(JoinRequest {
            protocols: vec![("roundrobin".into(), Bytes::new())],
            ..req("b")
        });
        assert_eq!(join_reply(&out, b).error, Some(GroupError::InconsistentGroupProtocol));
        // An empty protocol list or type is refused even by an Empty group.
        let mut h = H::new();
        let (c, out) = h.join(JoinRequest { protocols: vec![], ..req("c") });
        assert_eq!(join_reply(&out, c).error, Some(GroupError::InconsistentGroupProtocol));
        let (d, out) = h.join(JoinRequest { protocol_type: String::new(), ..req("d") });
        assert_eq!(join_reply(&out, d).error, Some(GroupError::InconsistentGroupProtocol));
    }

    fn protos(names: &[&str]) -> Vec<(String, Bytes)> {
        names.iter().map(|n| (n.to_string(), Bytes::from(format!("meta-{n}")))).collect()
    }

    #[test]
    fn protocol_is_selected_by_member_votes_among_protocols_all_support() {
        let mut h = H::new();
        let (a, _) = h.join(JoinRequest { protocols: protos(&["range", "roundrobin", "sticky"]), ..req("a") });
        h.join(JoinRequest { protocols: protos(&["roundrobin", "range"]), ..req("b") });
        h.join(JoinRequest { protocols: protos(&["sticky", "roundrobin", "range"]), ..req("c") });
        // Candidates {range, roundrobin} ("sticky" is not supported by b); c votes roundrobin.
        let out = h.at(2 * DELAY);
        let r = join_reply(&out, a);
        assert_eq!(r.protocol_name.as_deref(), Some("roundrobin"));
        assert_eq!(h.g.protocol_name(), Some("roundrobin"));
    }

    #[test]
    fn protocol_vote_tie_goes_to_the_leaders_preference() {
        let mut h = H::new();
        let (a, _) = h.join(JoinRequest { protocols: protos(&["roundrobin", "range"]), ..req("a") });
        h.join(JoinRequest { protocols: protos(&["range", "roundrobin"]), ..req("b") });
        let out = h.at(2 * DELAY);
        let r = join_reply(&out, a);
        assert_eq!(r.leader, r.member_id);
        assert_eq!(r.protocol_name.as_deref(), Some("roundrobin"));
    }

    // ----- 4. initial delay ------------------------------------------------------------------

    #[test]
    fn first_joiner_of_empty_group_is_answered_after_the_initial_delay_not_a_session_timeout() {
        let mut h = H::new();
        let (a, _) = h.join(req("a"));
        assert_eq!(h.g.next_deadline(), Some(DELAY));
        assert!(h.at(DELAY - 1).is_empty());
        let out = h.at(DELAY);
        assert_eq!(join_reply(&out, a).generation_id, 1);
    }

    #[test]
    fn initial_delay_is_not_cut_short_when_every_member_has_joined() {
        let mut h = H::new();
        h.join(req("a"));
        h.now = 10;
        let (_, out) = h.join(req("b"));
        assert!(out.is_empty());
        assert_eq!(h.g.state(), GroupState::PreparingRebalance);
    }

    #[test]
    fn initial_delay_extends_per_new_member_but_never_beyond_rebalance_timeout() {
        let mut h = H::new();
        let short = |c: &str| JoinRequest { rebalance_timeout_ms: 10_000, ..req(c) };
        let (a, _) = h.join(short("a"));
        h.now = 2000;
        h.join(short("b"));
        assert!(h.at(3000).is_empty(), "extended: b joined during the first delay");
        assert_eq!(h.g.next_deadline(), Some(6000));
        h.now = 5000;
        h.join(short("c"));
        assert!(h.at(6000).is_empty());
        assert_eq!(h.g.next_deadline(), Some(9000));
        h.now = 8500;
        h.join(short("d"));
        assert!(h.at(9000).is_empty());
        assert_eq!(h.g.next_deadline(), Some(10_000), "capped by the rebalance timeout");
        h.now = 9500;
        h.join(short("e"));
        assert!(h.at(9999).is_empty());
        let out = h.at(10_000);
        let r = join_reply(&out, a);
        assert_eq!(r.members.len(), 5);
        assert_eq!(out.len(), 5);
    }

    // ----- 5. rebalance completion, leader, generation ---------------------------------------

    #[test]
    fn rebalance_completes_as_soon_as_all_known_members_rejoin() {
        let mut h = H::new();
        let ids = stable_group(&mut h, &["a", "b", "c"]);
        h.now = 10_000;
        let (b, out) = h.join(rejoin("b", &ids[1]).clone_with_metadata("new"));
        assert!(out.is_empty());
        assert_eq!(h.g.state(), GroupState::PreparingRebalance);
        let (a, _) = h.join(rejoin("a", &ids[0]));
        let (c, out) = h.join(rejoin("c", &ids[2]));
        for id in [a, b, c] {
            assert_eq!(join_reply(&out, id).generation_id, 2);
        }
        assert_eq!(h.g.state(), GroupState::CompletingRebalance);
    }

    impl JoinRequest {
        fn clone_with_metadata(&self, tag: &str) -> JoinRequest {
            let protocols = self
                .protocols
                .iter()
                .map(|(n, _)| (n.clone(), Bytes::from(format!("{}-{tag}", self.client_id))))
                .collect();
            JoinRequest { protocols, ..self.clone() }
        }
    }

    #[test]
    fn rebalance_timeout_removes_members_that_did_not_rejoin() {
        let mut h = H::new();
        let ids = stable_group(&mut h, &["a", "b", "c"]);
        let t0 = 1000;
        h.now = t0;
        // Keep c alive with heartbeats so only the rebalance timeout can drop it.
        let (a, _) = h.join(rejoin("a", &ids[0]));
        let (b, _) = h.join(rejoin("b", &ids[1]));
        let mut t = t0;
        while t + 5000 < t0 + i64::from(REBALANCE) {
            t += 5000;
            h.at(t);
            assert_eq!(h.hb(&ids[2], None, 1), Some(GroupError::RebalanceInProgress));
        }
        let out = h.at(t0 + i64::from(REBALANCE));
        let ra = join_reply(&out, a);
        assert_eq!(ra.generation_id, 2);
        assert_eq!(ra.members.len(), 2);
        assert!(find(&out, b).is_some());
        assert!(!h.g.has_member(&ids[2]));
        assert_eq!(h.hb(&ids[2], None, 2), Some(GroupError::UnknownMemberId));
    }

    #[test]
    fn leader_is_kept_if_it_rejoins_otherwise_the_oldest_rejoined_member_leads() {
        let mut h = H::new();
        let ids = stable_group(&mut h, &["a", "b", "c"]);
        assert_eq!(h.g.leader(), Some(ids[0].as_str()));
        // All rejoin: the leader stays.
        let (_, _) = h.join(rejoin("c", &ids[2]).clone_with_metadata("x"));
        h.join(rejoin("b", &ids[1]));
        let (a, out) = h.join(rejoin("a", &ids[0]));
        assert_eq!(join_reply(&out, a).leader, ids[0]);
        // The leader leaves: the oldest remaining member leads.
        let (_, _) = h.leave(&[(&ids[0], None)]);
        assert_eq!(h.g.leader(), Some(ids[1].as_str()));
        let mut h = H::new();
        let ids = stable_group(&mut h, &["a", "b", "c"]);
        h.now = 100;
        // The leader does not rejoin before the rebalance timeout: the oldest member that did
        // rejoin (b, joined before c) leads.
        let (c, _) = h.join(rejoin("c", &ids[2]).clone_with_metadata("x"));
        h.join(rejoin("b", &ids[1]));
        // Keep the old leader's session alive; it simply never rejoins.
        for k in 1..6 {
            h.at(100 + k * 5000);
            h.hb(&ids[0], None, 1);
        }
        let out = h.at(100 + i64::from(REBALANCE));
        let rc = join_reply(&out, c);
        assert_eq!(rc.leader, ids[1]);
        assert!(rc.members.is_empty(), "c is a follower");
        assert!(!h.g.has_member(&ids[0]));
    }

    #[test]
    fn generation_increments_on_every_rebalance() {
        let mut h = H::new();
        let ids = stable_group(&mut h, &["a", "b"]);
        assert_eq!(h.g.generation(), 1);
        for round in 2..5 {
            let (a, _) = h.join(rejoin("a", &ids[0]));
            let (_, out) = h.join(rejoin("b", &ids[1]));
            assert_eq!(join_reply(&out, a).generation_id, round);
            let (_, _) = h.sync(sreq(&ids[0], round, vec![]));
            assert_eq!(h.g.generation(), round);
        }
    }

    #[test]
    fn leader_join_reply_lists_selected_protocol_metadata_and_followers_get_none() {
        let mut h = H::new();
        let (a, _) = h.join(JoinRequest { protocols: protos(&["range", "roundrobin"]), ..req("a") });
        let (b, _) = h.join(JoinRequest { protocols: protos(&["range"]), ..req("b") });
        let out = h.at(2 * DELAY);
        let ra = join_reply(&out, a);
        let rb = join_reply(&out, b);
        assert_eq!(ra.leader, ra.member_id);
        assert_eq!(rb.leader, ra.member_id);
        assert!(rb.members.is_empty());
        assert!(!ra.skip_assignment);
        let listed: Vec<(&str, &[u8])> = ra.members.iter().map(|m| (m.member_id.as_str(), &m.metadata[..])).collect();
        assert_eq!(listed, vec![(ra.member_id.as_str(), &b"meta-range"[..]), (rb.member_id.as_str(), &b"meta-range"[..])]);
        assert_eq!(ra.protocol_type.as_deref(), Some("consumer"));
    }

    // ----- 6. sync ---------------------------------------------------------------------------

    #[test]
    fn followers_sync_waits_for_the_leader_then_everyone_gets_its_assignment() {
        let mut h = H::new();
        stable_group(&mut h, &["a", "b", "c"]);
        let d = h.g.describe();
        assert_eq!(d.members.len(), 3);
        assert!(d.members.iter().all(|m| m.assignment == assignment_for(&m.member_id)));
    }

    #[test]
    fn leader_assignment_missing_members_get_empty_assignments() {
        let mut h = H::new();
        let (a, _) = h.join(req("a"));
        let (b, _) = h.join(req("b"));
        let out = h.at(2 * DELAY);
        let (ra, rb) = (join_reply(&out, a), join_reply(&out, b));
        let (sb, _) = h.sync(sreq(&rb.member_id, 1, vec![]));
        let (_, out) = h.sync(sreq(&ra.member_id, 1, vec![(ra.member_id.clone(), Bytes::from_static(b"all"))]));
        assert_eq!(sync_reply(&out, sb).assignment, Bytes::new());
        assert_eq!(sync_reply(&out, sb).error, None);
    }

    #[test]
    fn sync_with_wrong_generation_is_illegal_generation() {
        let mut h = H::new();
        let ids = stable_group(&mut h, &["a"]);
        let (s, out) = h.sync(sreq(&ids[0], 7, vec![]));
        assert_eq!(sync_reply(&out, s).error, Some(GroupError::IllegalGeneration));
    }

    #[test]
    fn sync_from_unknown_member_is_unknown_member_id() {
        let mut h = H::new();
        stable_group(&mut h, &["a"]);
        let (s, out) = h.sync(sreq("nobody", 1, vec![]));
        assert_eq!(sync_reply(&out, s).error, Some(GroupError::UnknownMemberId));
    }

    #[test]
    fn sync_during_preparing_rebalance_is_rebalance_in_progress() {
        let mut h = H::new();
        let ids = stable_group(&mut h, &["a", "b"]);
        h.join(rejoin("a", &ids[0]));
        let (s, out) = h.sync(sreq(&ids[1], 1, vec![]));
        assert_eq!(sync_reply(&out, s).error, Some(GroupError::RebalanceInProgress));
    }

    #[test]
    fn sync_with_mismatched_protocol_type_or_name_is_inconsistent_group_protocol() {
        let mut h = H::new();
        let ids = stable_group(&mut h, &["a"]);
        let (s, out) = h.sync(SyncRequest { protocol_type: Some("connect".into()), ..sreq(&ids[0], 1, vec![]) });
        assert_eq!(sync_reply(&out, s).error, Some(GroupError::InconsistentGroupProtocol));
        let (s, out) = h.sync(SyncRequest { protocol_name: Some("roundrobin".into()), ..sreq(&ids[0], 1, vec![]) });
        assert_eq!(sync_reply(&out, s).error, Some(GroupError::InconsistentGroupProtocol));
        let (s, out) = h.sync(SyncRequest { protocol_name: Some("range".into()), ..sreq(&ids[0], 1, vec![]) });
        let r = sync_reply(&out, s);
        assert_eq!(r.error, None);
        assert_eq!(r.protocol_name.as_deref(), Some("range"));
    }

    #[test]
    fn leader_that_never_syncs_expires_by_session_timeout_and_parked_followers_get_rebalance_in_progress() {
        let mut h = H::new();
        let (a, _) = h.join(req("a"));
        let (b, _) = h.join(req("b"));
        let out = h.at(2 * DELAY);
        let (ra, rb) = (join_reply(&out, a), join_reply(&out, b));
        let (sb, out) = h.sync(sreq(&rb.member_id, 1, vec![]));
        assert!(out.is_empty());
        // b is parked in SyncGroup (counts as alive); the leader goes silent.
        let out = h.at(2 * DELAY + i64::from(SESSION));
        assert_eq!(sync_reply(&out, sb).error, Some(GroupError::RebalanceInProgress));
        assert!(!h.g.has_member(&ra.member_id));
        assert_eq!(h.g.state(), GroupState::PreparingRebalance);
        // b rejoins and becomes the leader of generation 2.
        let (b2, out) = h.join(rejoin("b", &rb.member_id));
        let r = join_reply(&out, b2);
        assert_eq!((r.generation_id, r.leader.as_str()), (2, rb.member_id.as_str()));
    }

    #[test]
    fn members_that_never_send_sync_group_are_removed_at_the_rebalance_timeout() {
        let mut h = H::new();
        let long = |c: &str| JoinRequest { session_timeout_ms: 60_000, ..req(c) };
        let (a, _) = h.join(long("a"));
        let (b, _) = h.join(long("b"));
        let out = h.at(2 * DELAY);
        let (ra, rb) = (join_reply(&out, a), join_reply(&out, b));
        let (_, _) = h.sync(sreq(&ra.member_id, 1, vec![]));
        assert_eq!(h.g.state(), GroupState::Stable);
        // b keeps heartbeating but never syncs.
        for k in 1..=5 {
            h.at(2 * DELAY + k * 5000);
            assert_eq!(h.hb(&rb.member_id, None, 1), None);
        }
        h.at(2 * DELAY + i64::from(REBALANCE));
        assert!(!h.g.has_member(&rb.member_id));
        assert_eq!(h.g.state(), GroupState::PreparingRebalance);
    }

    // ----- 7. heartbeat and sessions ---------------------------------------------------------

    #[test]
    fn heartbeat_answers_by_state_generation_and_membership() {
        let mut h = H::new();
        let (a, _) = h.join(req("a"));
        let (b, _) = h.join(req("b"));
        let out = h.at(2 * DELAY);
        let (ra, rb) = (join_reply(&out, a), join_reply(&out, b));
        assert_eq!(h.hb(&rb.member_id, None, 1), None, "CompletingRebalance heartbeats are fine");
        h.sync(sreq(&ra.member_id, 1, vec![]));
        assert_eq!(h.hb(&rb.member_id, None, 1), None, "Stable");
        assert_eq!(h.hb(&rb.member_id, None, 0), Some(GroupError::IllegalGeneration));
        assert_eq!(h.hb("ghost", None, 1), Some(GroupError::UnknownMemberId));
        h.join(rejoin("a", &ra.member_id));
        assert_eq!(h.hb(&rb.member_id, None, 1), Some(GroupError::RebalanceInProgress));
        assert_eq!(GroupError::RebalanceInProgress.code(), 27);
    }

    #[test]
    fn heartbeats_extend_the_session_and_a_silent_member_is_removed_with_a_rebalance() {
        let mut h = H::new();
        let ids = stable_group(&mut h, &["a", "b"]);
        let t0 = h.now;
        for k in 1..=2 {
            h.at(t0 + k * 4000);
            assert_eq!(h.hb(&ids[0], None, 1), None);
        }
        assert!(h.g.has_member(&ids[1]));
        // b never heartbeated after its sync at t0: gone at t0 + session timeout.
        h.at(t0 + i64::from(SESSION) - 1);
        assert!(h.g.has_member(&ids[1]));
        h.at(t0 + i64::from(SESSION));
        assert!(h.g.has_member(&ids[0]), "a's heartbeats kept it");
        assert!(!h.g.has_member(&ids[1]));
        assert_eq!(h.g.state(), GroupState::PreparingRebalance);
        assert_eq!(h.hb(&ids[0], None, 1), Some(GroupError::RebalanceInProgress));
        let (a, out) = h.join(rejoin("a", &ids[0]));
        assert_eq!(join_reply(&out, a).generation_id, 2);
    }

    #[test]
    fn join_and_sync_also_extend_the_session() {
        let mut h = H::new();
        let ids = stable_group(&mut h, &["a", "b"]);
        let t0 = h.now;
        h.at(t0 + 8000);
        h.hb(&ids[0], None, 1);
        let (j, out) = h.join(rejoin("b", &ids[1])); // unchanged follower: answered at once
        assert_eq!(join_reply(&out, j).generation_id, 1);
        h.at(t0 + 16_000);
        h.hb(&ids[0], None, 1);
        let (s, out) = h.sync(sreq(&ids[1], 1, vec![]));
        assert_eq!(sync_reply(&out, s).error, None);
        h.at(t0 + 24_000);
        assert!(h.g.has_member(&ids[1]), "b's join at 8s and sync at 16s kept it alive");
        assert_eq!(h.g.state(), GroupState::Stable);
    }

    #[test]
    fn last_member_session_expiry_leaves_the_group_empty() {
        let mut h = H::new();
        let ids = stable_group(&mut h, &["a"]);
        let t0 = h.now;
        h.at(t0 + i64::from(SESSION));
        assert!(!h.g.has_member(&ids[0]));
        assert_eq!(h.g.state(), GroupState::Empty);
        assert_eq!(h.g.generation(), 2);
        assert_eq!(h.g.next_deadline(), None);
    }

    #[test]
    fn new_member_parked_in_join_expires_by_the_new_member_join_timeout() {
        let mut h = H::new();
        let (a, _) = h.join(JoinRequest { rebalance_timeout_ms: 600_000, ..req("a") });
        let out = h.at(DELAY);
        let ida = join_reply(&out, a).member_id;
        h.sync(sreq(&ida, 1, vec![]));
        // b joins; a keeps heartbeating but never rejoins, so the rebalance waits up to 600s.
        let (b, _) = h.join(req("b"));
        let mut out = Vec::new();
        while h.now < DELAY + 300_000 {
            out.extend(h.advance(5000));
            assert_eq!(h.hb(&ida, None, 1), Some(GroupError::RebalanceInProgress));
        }
        let r = join_reply(&out, b);
        assert_eq!((r.error, r.member_id.as_str()), (Some(GroupError::UnknownMemberId), ""));
        assert!(!h.g.has_member("b-2"));
        assert_eq!(h.g.state(), GroupState::PreparingRebalance);
    }

    // ----- 8. rejoins in Stable --------------------------------------------------------------

    #[test]
    fn new_member_joining_a_stable_group_triggers_a_rebalance() {
        let mut h = H::new();
        let ids = stable_group(&mut h, &["a"]);
        let (c, out) = h.join(req("c"));
        assert!(out.is_empty());
        assert_eq!(h.g.state(), GroupState::PreparingRebalance);
        let (a, out) = h.join(rejoin("a", &ids[0]));
        let (ra, rc) = (join_reply(&out, a), join_reply(&out, c));
        assert_eq!(ra.generation_id, 2);
        assert_eq!(ra.members.len(), 2);
        assert_eq!(rc.leader, ids[0]);
    }

    #[test]
    fn follower_rejoining_stable_group_with_same_metadata_gets_current_generation_without_rebalance() {
        let mut h = H::new();
        let ids = stable_group(&mut h, &["a", "b"]);
        let (b, out) = h.join(rejoin("b", &ids[1]));
        let r = join_reply(&out, b);
        assert_eq!((r.error, r.generation_id, r.leader.as_str()), (None, 1, ids[0].as_str()));
        assert!(r.members.is_empty());
        assert_eq!(h.g.state(), GroupState::Stable);
    }

    #[test]
    fn leader_rejoin_or_changed_follower_metadata_in_stable_triggers_a_rebalance() {
        let mut h = H::new();
        let ids = stable_group(&mut h, &["a", "b"]);
        let (_, out) = h.join(rejoin("a", &ids[0]));
        assert!(out.is_empty());
        assert_eq!(h.g.state(), GroupState::PreparingRebalance);
        let mut h = H::new();
        let ids = stable_group(&mut h, &["a", "b"]);
        let (_, out) = h.join(rejoin("b", &ids[1]).clone_with_metadata("changed"));
        assert!(out.is_empty());
        assert_eq!(h.g.state(), GroupState::PreparingRebalance);
    }

    #[test]
    fn rejoin_during_completing_rebalance_with_same_metadata_returns_current_generation() {
        let mut h = H::new();
        let (a, _) = h.join(req("a"));
        let (b, _) = h.join(req("b"));
        let out = h.at(2 * DELAY);
        let (ra, rb) = (join_reply(&out, a), join_reply(&out, b));
        let (a2, out) = h.join(rejoin("a", &ra.member_id));
        let r = join_reply(&out, a2);
        assert_eq!(r.generation_id, 1);
        assert_eq!(r.members.len(), 2, "the leader gets the member list again");
        let (b2, out) = h.join(rejoin("b", &rb.member_id).clone_with_metadata("changed"));
        assert!(find(&out, b2).is_none());
        assert_eq!(h.g.state(), GroupState::PreparingRebalance);
    }

    #[test]
    fn superseded_join_is_answered_rebalance_in_progress() {
        let mut h = H::new();
        let ids = stable_group(&mut h, &["a", "b"]);
        let (first, _) = h.join(rejoin("a", &ids[0]));
        let (second, out) = h.join(rejoin("a", &ids[0]));
        let r = join_reply(&out, first);
        assert_eq!(r.error, Some(GroupError::RebalanceInProgress));
        assert!(find(&out, second).is_none());
        let (_, out) = h.join(rejoin("b", &ids[1]));
        assert_eq!(join_reply(&out, second).generation_id, 2);
    }

    #[test]
    fn superseded_sync_is_answered_rebalance_in_progress() {
        let mut h = H::new();
        let (a, _) = h.join(req("a"));
        let (b, _) = h.join(req("b"));
        let out = h.at(2 * DELAY);
        let (ra, rb) = (join_reply(&out, a), join_reply(&out, b));
        let (s1, _) = h.sync(sreq(&rb.member_id, 1, vec![]));
        let (s2, out) = h.sync(sreq(&rb.member_id, 1, vec![]));
        assert_eq!(sync_reply(&out, s1).error, Some(GroupError::RebalanceInProgress));
        let (_, out) = h.sync(sreq(&ra.member_id, 1, vec![(rb.member_id.clone(), Bytes::from_static(b"b"))]));
        assert_eq!(sync_reply(&out, s2).assignment, Bytes::from_static(b"b"));
    }

    // ----- 9. leave --------------------------------------------------------------------------

    #[test]
    fn batched_leave_reports_per_member_results_and_triggers_a_rebalance() {
        let mut h = H::new();
        let (s, _) = h.join(static_req("s", "inst-s"));
        let (a, _) = h.join(req("a"));
        let (b, _) = h.join(req("b"));
        let out = h.at(2 * DELAY);
        let (rs, ra, rb) = (join_reply(&out, s), join_reply(&out, a), join_reply(&out, b));
        h.sync(sreq(&rs.member_id, 1, vec![]));
        let (reply, _) = h.leave(&[
            (&ra.member_id, None),
            ("ghost", None),
            ("wrong-id", Some("inst-s")),
            ("", Some("no-such-instance")),
        ]);
        assert_eq!(reply.error, None);
        let errors: Vec<Option<GroupError>> = reply.members.iter().map(|m| m.error).collect();
        assert_eq!(
            errors,
            vec![None, Some(GroupError::UnknownMemberId), Some(GroupError::FencedInstanceId), Some(GroupError::UnknownMemberId)]
        );
        assert_eq!(reply.members[2].group_instance_id.as_deref(), Some("inst-s"));
        assert!(!h.g.has_member(&ra.member_id));
        assert_eq!(h.g.state(), GroupState::PreparingRebalance);
        let (j1, _) = h.join(rejoin("s", &rs.member_id));
        let (j2, out) = h.join(rejoin("b", &rb.member_id));
        assert_eq!(join_reply(&out, j1).generation_id, 2);
        assert_eq!(join_reply(&out, j2).generation_id, 2);
    }

    #[test]
    fn last_member_leaving_makes_the_group_empty() {
        let mut h = H::new();
        let ids = stable_group(&mut h, &["a", "b"]);
        h.leave(&[(&ids[0], None), (&ids[1], None)]);
        assert_eq!(h.g.state(), GroupState::Empty);
        assert_eq!(h.g.generation(), 2);
        assert_eq!(h.g.protocol_name(), None);
        assert_eq!(h.g.member_count(), 0);
    }

    #[test]
    fn leave_of_the_last_missing_member_completes_the_join_phase() {
        let mut h = H::new();
        let ids = stable_group(&mut h, &["a", "b", "c"]);
        let (a, _) = h.join(rejoin("a", &ids[0]));
        let (b, _) = h.join(rejoin("b", &ids[1]));
        let (_, out) = h.leave(&[(&ids[2], None)]);
        assert_eq!(join_reply(&out, a).generation_id, 2);
        assert_eq!(join_reply(&out, b).generation_id, 2);
    }

    #[test]
    fn member_leaving_while_its_join_is_parked_gets_unknown_member_id() {
        let mut h = H::new();
        let ids = stable_group(&mut h, &["a", "b"]);
        let (a, _) = h.join(rejoin("a", &ids[0]));
        let (_, out) = h.leave(&[(&ids[0], None)]);
        assert_eq!(join_reply(&out, a).error, Some(GroupError::UnknownMemberId));
    }

    #[test]
    fn member_leaving_while_its_sync_is_parked_gets_unknown_member_id() {
        let mut h = H::new();
        let (a, _) = h.join(req("a"));
        let (b, _) = h.join(req("b"));
        let out = h.at(2 * DELAY);
        let (_, rb) = (join_reply(&out, a), join_reply(&out, b));
        let (sb, _) = h.sync(sreq(&rb.member_id, 1, vec![]));
        let (_, out) = h.leave(&[(&rb.member_id, None)]);
        assert_eq!(sync_reply(&out, sb).error, Some(GroupError::UnknownMemberId));
    }

    #[test]
    fn leaving_pending_member_is_accepted_without_rebalance() {
        let mut h = H::new();
        stable_group(&mut h, &["a"]);
        let (p, out) = h.join(JoinRequest { require_known_member_id: true, ..req("b") });
        let pid = join_reply(&out, p).member_id;
        let (reply, _) = h.leave(&[(&pid, None)]);
        assert_eq!(reply.members[0].error, None);
        assert_eq!(h.g.state(), GroupState::Stable);
    }

    // ----- 10. static membership -------------------------------------------------------------

    #[test]
    fn static_member_restart_in_stable_group_gets_new_id_same_generation_and_old_assignment_without_rebalance() {
        let mut h = H::new();
        let (a, _) = h.join(req("a"));
        let (s, _) = h.join(static_req("s", "inst-s"));
        let out = h.at(2 * DELAY);
        let (ra, rs) = (join_reply(&out, a), join_reply(&out, s));
        assert_eq!(rs.member_id, "inst-s-2", "static member ids are prefixed by the instance id");
        h.sync(sreq(&rs.member_id, 1, vec![]));
        h.sync(sreq(&ra.member_id, 1, vec![(rs.member_id.clone(), Bytes::from_static(b"s-parts"))]));
        let _ = h.g.take_record();
        // The static client restarts: unknown member id, same instance id, same protocols.
        let (s2, out) = h.join(static_req("s", "inst-s"));
        let r = join_reply(&out, s2);
        assert_eq!(r.error, None);
        assert_ne!(r.member_id, rs.member_id);
        assert_eq!(r.generation_id, 1);
        assert_eq!(r.leader, ra.member_id);
        assert_eq!(h.g.state(), GroupState::Stable, "no rebalance");
        assert!(h.g.record_changed(), "the new member id must be persisted");
        let (sync, out) = h.sync(SyncRequest { group_instance_id: Some("inst-s".into()), ..sreq(&r.member_id, 1, vec![]) });
        assert_eq!(sync_reply(&out, sync).assignment, Bytes::from_static(b"s-parts"));
    }

    #[test]
    fn requests_with_a_replaced_static_member_id_are_fenced() {
        let mut h = H::new();
        let (s, _) = h.join(static_req("s", "inst"));
        let out = h.at(DELAY);
        let old = join_reply(&out, s).member_id;
        h.sync(SyncRequest { group_instance_id: Some("inst".into()), ..sreq(&old, 1, vec![]) });
        let (s2, out) = h.join(static_req("s", "inst"));
        let new = join_reply(&out, s2).member_id;
        assert_eq!(h.hb(&old, Some("inst"), 1), Some(GroupError::FencedInstanceId));
        assert_eq!(GroupError::FencedInstanceId.code(), 82);
        assert_eq!(h.hb(&old, None, 1), Some(GroupError::UnknownMemberId));
        let (j, out) = h.join(JoinRequest { member_id: old.clone(), ..static_req("s", "inst") });
        assert_eq!(join_reply(&out, j).error, Some(GroupError::FencedInstanceId));
        let (sy, out) = h.sync(SyncRequest { group_instance_id: Some("inst".into()), ..sreq(&old, 1, vec![]) });
        assert_eq!(sync_reply(&out, sy).error, Some(GroupError::FencedInstanceId));
        assert_eq!(h.g.validate_offset_commit(h.now, &old, Some("inst"), 1), Err(GroupError::FencedInstanceId));
        assert_eq!(h.hb(&new, Some("inst"), 1), None);
    }

    #[test]
    fn parked_requests_of_a_replaced_static_member_are_fenced() {
        let mut h = H::new();
        let ids = stable_group(&mut h, &["a"]);
        let (s, _) = h.join(static_req("s", "inst"));
        assert_eq!(h.g.state(), GroupState::PreparingRebalance);
        let (s2, out) = h.join(static_req("s", "inst"));
        assert_eq!(join_reply(&out, s).error, Some(GroupError::FencedInstanceId));
        let (a, out) = h.join(rejoin("a", &ids[0]));
        assert_eq!(join_reply(&out, a).generation_id, 2);
        assert_eq!(join_reply(&out, s2).generation_id, 2);
    }

    #[test]
    fn static_leader_restart_v9_keeps_leadership_with_skip_assignment() {
        let mut h = H::new();
        let (s, _) = h.join(static_req("s", "inst-s"));
        let (b, _) = h.join(req("b"));
        let out = h.at(2 * DELAY);
        let (rs, rb) = (join_reply(&out, s), join_reply(&out, b));
        assert_eq!(rs.leader, rs.member_id);
        h.sync(sreq(&rs.member_id, 1, vec![(rb.member_id.clone(), Bytes::from_static(b"b"))]));
        let (s2, out) = h.join(JoinRequest { supports_skip_assignment: true, ..static_req("s", "inst-s") });
        let r = join_reply(&out, s2);
        assert_eq!(r.leader, r.member_id, "the new incarnation is the leader");
        assert!(r.skip_assignment, "but must not run the assignor");
        assert_eq!(r.members.len(), 2);
        assert_eq!(h.g.leader(), Some(r.member_id.as_str()));
        assert_eq!(h.g.state(), GroupState::Stable);
    }

    #[test]
    fn static_leader_restart_before_v9_is_told_the_old_leader_id() {
        let mut h = H::new();
        let (s, _) = h.join(static_req("s", "inst-s"));
        let out = h.at(DELAY);
        let rs = join_reply(&out, s);
        h.sync(sreq(&rs.member_id, 1, vec![]));
        let (s2, out) = h.join(static_req("s", "inst-s"));
        let r = join_reply(&out, s2);
        assert_eq!(r.leader, rs.member_id, "old id, so the client does not act as leader");
        assert!(!r.skip_assignment);
        assert!(r.members.is_empty());
        assert_eq!(h.g.leader(), Some(r.member_id.as_str()), "internally it still leads");
    }

    #[test]
    fn static_member_restart_that_changes_the_selected_protocol_triggers_a_rebalance() {
        let mut h = H::new();
        let (s, _) = h.join(JoinRequest { protocols: protos(&["range", "roundrobin"]), ..static_req("s", "inst") });
        let out = h.at(DELAY);
        let rs = join_reply(&out, s);
        assert_eq!(rs.protocol_name.as_deref(), Some("range"));
        h.sync(sreq(&rs.member_id, 1, vec![]));
        // Sole member: the rebalance it triggers completes at once.
        let (s2, out) = h.join(JoinRequest { protocols: protos(&["roundrobin", "range"]), ..static_req("s", "inst") });
        let r = join_reply(&out, s2);
        assert_eq!(r.generation_id, 2);
        assert_eq!(r.protocol_name.as_deref(), Some("roundrobin"));
    }

    #[test]
    fn static_member_that_misses_a_rebalance_is_kept_until_its_session_times_out() {
        let mut h = H::new();
        let (d, _) = h.join(req("d"));
        let (s, _) = h.join(JoinRequest { session_timeout_ms: 60_000, ..static_req("s", "inst") });
        let out = h.at(2 * DELAY);
        let (rd, rs) = (join_reply(&out, d), join_reply(&out, s));
        h.sync(sreq(&rs.member_id, 1, vec![]));
        h.sync(sreq(&rd.member_id, 1, vec![]));
        let t0 = h.now;
        // The dynamic leader rejoins; the static member is restarting and does not.
        let (d2, _) = h.join(rejoin("d", &rd.member_id));
        let out = h.at(t0 + i64::from(REBALANCE));
        let r = join_reply(&out, d2);
        assert_eq!(r.generation_id, 2);
        assert_eq!(r.members.len(), 2, "the static member is still listed for assignment");
        assert!(h.g.has_member(&rs.member_id));
        // It comes back (new incarnation) before its session expires and takes its place; in
        // CompletingRebalance that forces another rebalance (its old id may be in the assignment).
        let (s2, out) = h.join(static_req("s", "inst"));
        assert!(find(&out, s2).is_none());
        assert_eq!(h.hb(&rd.member_id, None, 2), Some(GroupError::RebalanceInProgress));
        let (d3, out) = h.join(rejoin("d", &rd.member_id));
        let (r2, r3) = (join_reply(&out, s2), join_reply(&out, d3));
        assert_eq!((r2.generation_id, r3.generation_id), (3, 3));
        assert_eq!(r3.members.len(), 2);
        assert!(!h.g.has_member(&rs.member_id));
        assert!(h.g.has_member(&r2.member_id));
    }

    #[test]
    fn static_member_that_never_returns_is_removed_at_session_timeout() {
        let mut h = H::new();
        let (d, _) = h.join(JoinRequest { session_timeout_ms: 60_000, ..req("d") });
        let (s, _) = h.join(JoinRequest { session_timeout_ms: 20_000, ..static_req("s", "inst") });
        let out = h.at(2 * DELAY);
        let (rd, rs) = (join_reply(&out, d), join_reply(&out, s));
        h.sync(sreq(&rs.member_id, 1, vec![]));
        h.sync(sreq(&rd.member_id, 1, vec![]));
        let t0 = h.now;
        h.at(t0 + 10_000);
        h.hb(&rd.member_id, None, 1);
        assert!(h.g.has_member(&rs.member_id), "no LeaveGroup on restart: still a member");
        h.at(t0 + 20_000);
        assert!(!h.g.has_member(&rs.member_id));
        assert_eq!(h.g.state(), GroupState::PreparingRebalance);
    }

    #[test]
    fn explicit_leave_with_instance_id_removes_the_static_member() {
        let mut h = H::new();
        let (a, _) = h.join(req("a"));
        let (s, _) = h.join(static_req("s", "inst"));
        let out = h.at(2 * DELAY);
        let (ra, rs) = (join_reply(&out, a), join_reply(&out, s));
        h.sync(sreq(&ra.member_id, 1, vec![]));
        let (reply, _) = h.leave(&[("", Some("inst"))]);
        assert_eq!(reply.members[0].error, None);
        assert!(!h.g.has_member(&rs.member_id));
        assert_eq!(h.g.state(), GroupState::PreparingRebalance);
        // By member id + instance id works too.
        let mut h = H::new();
        let (s, _) = h.join(static_req("s", "inst"));
        let out = h.at(DELAY);
        let rs = join_reply(&out, s);
        let (reply, _) = h.leave(&[(&rs.member_id, Some("inst"))]);
        assert_eq!(reply.members[0].error, None);
        assert_eq!(h.g.state(), GroupState::Empty);
    }

    // ----- 11/12. limits ---------------------------------------------------------------------

    #[test]
    fn joins_beyond_group_max_size_get_group_max_size_reached() {
        let mut h = H::with(GroupConfig { max_size: 2, ..GroupConfig::default() });
        let (a, _) = h.join(req("a"));
        let (b, _) = h.join(req("b"));
        let (c, out) = h.join(req("c"));
        let r = join_reply(&out, c);
        assert_eq!(r.error, Some(GroupError::GroupMaxSizeReached));
        assert_eq!(r.member_id, "");
        assert_eq!(GroupError::GroupMaxSizeReached.code(), 81);
        let out = h.at(2 * DELAY);
        let ra = join_reply(&out, a);
        join_reply(&out, b);
        h.sync(sreq(&ra.member_id, 1, vec![]));
        let (d, out) = h.join(req("d"));
        assert_eq!(join_reply(&out, d).error, Some(GroupError::GroupMaxSizeReached));
        assert_eq!(h.g.state(), GroupState::Stable);
    }

    #[test]
    fn static_member_restarting_in_a_full_group_is_not_refused() {
        let mut h = H::with(GroupConfig { max_size: 1, ..GroupConfig::default() });
        let (s, _) = h.join(static_req("s", "inst"));
        let out = h.at(DELAY);
        let old = join_reply(&out, s).member_id;
        h.sync(sreq(&old, 1, vec![]));
        let (s2, out) = h.join(static_req("s", "inst"));
        let r = join_reply(&out, s2);
        assert_eq!(r.error, None);
        assert_eq!(h.g.member_count(), 1);
    }

    #[test]
    fn restored_group_over_max_size_rebalances_and_keeps_only_max_size_rejoiners() {
        let mut h = H::new();
        let ids = stable_group(&mut h, &["a", "b", "c"]);
        let record = h.g.to_record();
        let mut g = Group::from_record(record, 0, GroupConfig { max_size: 2, ..GroupConfig::default() }, counter_member_ids())
            .expect("valid record");
        assert_eq!(g.state(), GroupState::PreparingRebalance);
        let o1 = g.join(ReplyId(1), 10, rejoin("a", &ids[0]));
        let o2 = g.join(ReplyId(2), 10, rejoin("b", &ids[1]));
        let o3 = g.join(ReplyId(3), 10, rejoin("c", &ids[2]));
        g.check_invariants();
        assert_eq!(join_reply(&o3, ReplyId(3)).error, Some(GroupError::GroupMaxSizeReached));
        assert!(!g.has_member(&ids[2]));
        let all: Out = o1.into_iter().chain(o2).chain(o3).collect();
        assert_eq!(join_reply(&all, ReplyId(1)).generation_id, 2);
        assert_eq!(join_reply(&all, ReplyId(2)).generation_id, 2);
    }

    #[test]
    fn session_timeout_outside_configured_bounds_is_invalid_session_timeout() {
        let mut h = H::new();
        for bad in [5999, 1_800_001, -1] {
            let (j, out) = h.join(JoinRequest { session_timeout_ms: bad, ..req("a") });
            assert_eq!(join_reply(&out, j).error, Some(GroupError::InvalidSessionTimeout));
        }
        assert_eq!(h.g.state(), GroupState::Empty);
        for ok in [6000, 1_800_000] {
            let (_, out) = h.join(JoinRequest { session_timeout_ms: ok, ..req("a") });
            assert!(out.is_empty());
        }
        assert_eq!(GroupError::InvalidSessionTimeout.code(), 26);
    }

    // ----- 13. cooperative rebalancing -------------------------------------------------------

    /// Minimal stand-in for cooperative-sticky subscription metadata: the owned partitions.
    fn coop(client: &str, member_id: &str, owned: &[u32]) -> JoinRequest {
        let owned: Vec<String> = owned.iter().map(|p| p.to_string()).collect();
        JoinRequest {
            member_id: member_id.to_string(),
            protocols: vec![("cooperative-sticky".into(), Bytes::from(owned.join(",")))],
            ..req(client)
        }
    }

    fn parts(b: &Bytes) -> Vec<u32> {
        std::str::from_utf8(b)
            .expect("utf8")
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().expect("partition"))
            .collect()
    }

    fn enc(p: &[u32]) -> Bytes {
        Bytes::from(p.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(","))
    }

    #[test]
    fn cooperative_two_round_rebalance_converges_without_errors() {
        let mut h = H::new();
        // Generation 1: a owns 0-2, b owns 3-5.
        let (a, _) = h.join(coop("a", "", &[]));
        let (b, _) = h.join(coop("b", "", &[]));
        let out = h.at(2 * DELAY);
        let (ida, idb) = (join_reply(&out, a).member_id, join_reply(&out, b).member_id);
        let (sb, _) = h.sync(sreq(&idb, 1, vec![]));
        let (_, out) = h.sync(sreq(&ida, 1, vec![(ida.clone(), enc(&[0, 1, 2])), (idb.clone(), enc(&[3, 4, 5]))]));
        assert_eq!(parts(&sync_reply(&out, sb).assignment), vec![3, 4, 5]);

        // c joins: round 1 (generation 2). Everyone rejoins reporting what it owns.
        h.now += 1000;
        let (c, _) = h.join(coop("c", "", &[]));
        assert_eq!(h.hb(&idb, None, 1), Some(GroupError::RebalanceInProgress));
        let (a2, _) = h.join(coop("a", &ida, &[0, 1, 2]));
        let (b2, out) = h.join(coop("b", &idb, &[3, 4, 5]));
        let (ja, jb, jc) = (join_reply(&out, a2), join_reply(&out, b2), join_reply(&out, c));
        assert_eq!((ja.generation_id, jb.generation_id, jc.generation_id), (2, 2, 2));
        let idc = jc.member_id.clone();
        // The leader revokes 2 from a and 5 from b but does not hand them out yet.
        let owned: HashMap<String, Vec<u32>> = ja.members.iter().map(|m| (m.member_id.clone(), parts(&m.metadata))).collect();
        assert_eq!(owned[&ida], vec![0, 1, 2]);
        let (sc, _) = h.sync(sreq(&idc, 2, vec![]));
        let (sb, _) = h.sync(sreq(&idb, 2, vec![]));
        let (sa, out) = h.sync(sreq(&ida, 2, vec![(ida.clone(), enc(&[0, 1])), (idb.clone(), enc(&[3, 4])), (idc.clone(), enc(&[]))]));
        for id in [sa, sb, sc] {
            assert_eq!(sync_reply(&out, id).error, None);
        }
        assert_eq!(h.g.state(), GroupState::Stable);

        // Round 2: members that revoked partitions rejoin immediately; c follows on heartbeat.
        h.now += 10;
        let (b3, out) = h.join(coop("b", &idb, &[3, 4]));
        assert!(out.is_empty());
        assert_eq!(h.hb(&idc, None, 2), Some(GroupError::RebalanceInProgress));
        let (c3, _) = h.join(coop("c", &idc, &[]));
        let (a3, out) = h.join(coop("a", &ida, &[0, 1]));
        let ja = join_reply(&out, a3);
        assert_eq!(ja.generation_id, 3);
        assert!(join_reply(&out, b3).error.is_none() && join_reply(&out, c3).error.is_none());
        let (sb, _) = h.sync(sreq(&idb, 3, vec![]));
        let (sc, _) = h.sync(sreq(&idc, 3, vec![]));
        let (_, out) = h.sync(sreq(&ida, 3, vec![(ida.clone(), enc(&[0, 1])), (idb.clone(), enc(&[3, 4])), (idc.clone(), enc(&[2, 5]))]));
        assert_eq!(parts(&sync_reply(&out, sc).assignment), vec![2, 5]);
        assert_eq!(parts(&sync_reply(&out, sb).assignment), vec![3, 4]);

        // Converged: nothing revoked, so nobody rejoins; heartbeats are clean.
        for id in [&ida, &idb, &idc] {
            assert_eq!(h.hb(id, None, 3), None);
        }
        assert_eq!(h.g.state(), GroupState::Stable);
        assert_eq!(h.g.generation(), 3);
    }

    // ----- 14. scale -------------------------------------------------------------------------

    #[test]
    fn thousand_members_joining_at_once_complete_in_one_rebalance_quickly() {
        let started = std::time::Instant::now();
        let mut g = Group::new(GroupConfig::default(), counter_member_ids());
        let mut out = Vec::new();
        for i in 0..1000u64 {
            out.extend(g.join(ReplyId(i), 0, req(&format!("c{i}"))));
        }
        assert!(out.is_empty());
        let mut now = 0;
        while out.len() < 1000 {
            now = g.next_deadline().expect("a timer is armed");
            out.extend(g.tick(now));
        }
        assert_eq!(now, 2 * DELAY, "one extension because members kept arriving during the first delay");
        assert_eq!(out.len(), 1000);
        assert_eq!(g.generation(), 1);
        let replies: Vec<JoinReply> = (0..1000).map(|i| join_reply(&out, ReplyId(i))).collect();
        let leader = replies[0].leader.clone();
        let lead = replies.iter().find(|r| r.member_id == leader).expect("leader answered");
        assert_eq!(lead.members.len(), 1000);
        assert_eq!(replies.iter().filter(|r| !r.members.is_empty()).count(), 1);
        let mut synced = Vec::new();
        for (i, r) in replies.iter().enumerate().filter(|(_, r)| r.member_id != leader) {
            synced.extend(g.sync(ReplyId(10_000 + i as u64), now, sreq(&r.member_id, 1, vec![])));
        }
        assert!(synced.is_empty());
        let assignments = replies.iter().map(|r| (r.member_id.clone(), assignment_for(&r.member_id))).collect();
        synced.extend(g.sync(ReplyId(20_000), now, sreq(&leader, 1, assignments)));
        assert_eq!(synced.len(), 1000);
        g.check_invariants();
        assert_eq!(g.state(), GroupState::Stable);
        let elapsed = started.elapsed();
        assert!(elapsed < std::time::Duration::from_secs(1), "took {elapsed:?}");
    }

    // ----- 15. persistence -------------------------------------------------------------------

    #[test]
    fn record_round_trips_through_json_preserving_generation_members_and_assignments() {
        let mut h = H::new();
        let (a, _) = h.join(req("a"));
        let (s, _) = h.join(static_req("s", "inst"));
        let out = h.at(2 * DELAY);
        let (ra, rs) = (join_reply(&out, a), join_reply(&out, s));
        h.sync(sreq(&ra.member_id, 1, vec![(ra.member_id.clone(), Bytes::from_static(b"A")), (rs.member_id.clone(), Bytes::from_static(b"S"))]));
        let record = h.g.take_record().expect("leader sync changed the record");
        assert!(!h.g.record_changed());
        let json = serde_json::to_string(&record).expect("serialise");
        let back: GroupRecord = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, record);
        let g = Group::from_record(back, 50_000, GroupConfig::default(), counter_member_ids()).expect("restore");
        g.check_invariants();
        assert_eq!(g.state(), GroupState::Stable);
        assert_eq!(g.generation(), 1);
        assert_eq!(g.leader(), Some(ra.member_id.as_str()));
        assert_eq!(g.protocol_name(), Some("range"));
        assert_eq!(g.to_record(), record);
        let d = g.describe();
        let got: Vec<(String, Option<String>, Bytes)> =
            d.members.iter().map(|m| (m.member_id.clone(), m.group_instance_id.clone(), m.assignment.clone())).collect();
        assert_eq!(
            got,
            vec![
                (ra.member_id.clone(), None, Bytes::from_static(b"A")),
                (rs.member_id.clone(), Some("inst".into()), Bytes::from_static(b"S")),
            ]
        );
    }

    #[test]
    fn restored_group_accepts_heartbeats_and_expires_members_that_never_return() {
        let mut h = H::new();
        let ids = stable_group(&mut h, &["a", "b"]);
        let record = h.g.to_record();
        let restart = 1_000_000;
        let mut g = Group::from_record(record, restart, GroupConfig::default(), counter_member_ids()).expect("restore");
        assert_eq!(g.next_deadline(), Some(restart + i64::from(SESSION)));
        let out = g.heartbeat(ReplyId(1), restart + 5000, &ids[0], None, 1);
        assert_eq!(out, vec![(ReplyId(1), Reply::Heartbeat(HeartbeatReply { error: None }))]);
        let out = g.tick(restart + i64::from(SESSION));
        assert!(out.is_empty());
        assert!(!g.has_member(&ids[1]), "b never came back");
        assert_eq!(g.state(), GroupState::PreparingRebalance);
        let out = g.join(ReplyId(2), restart + 11_000, rejoin("a", &ids[0]));
        assert_eq!(join_reply(&out, ReplyId(2)).generation_id, 2);
        // Empty record restores an Empty group.
        let empty = Group::new(GroupConfig::default(), counter_member_ids()).to_record();
        let g = Group::from_record(empty, 0, GroupConfig::default(), counter_member_ids()).expect("restore");
        assert_eq!(g.state(), GroupState::Empty);
    }

    #[test]
    fn from_record_rejects_inconsistent_records() {
        let mut h = H::new();
        stable_group(&mut h, &["a", "b"]);
        let good = h.g.to_record();
        let cfg = GroupConfig::default;
        let mut r = good.clone();
        r.leader = Some("nobody".into());
        assert!(matches!(Group::from_record(r, 0, cfg(), counter_member_ids()), Err(RecordError::BadLeader(_))));
        let mut r = good.clone();
        r.members[1].member_id = r.members[0].member_id.clone();
        assert!(matches!(Group::from_record(r, 0, cfg(), counter_member_ids()), Err(RecordError::BadMemberId(_))));
        let mut r = good.clone();
        r.protocol = Some("roundrobin".into());
        assert!(matches!(Group::from_record(r, 0, cfg(), counter_member_ids()), Err(RecordError::UnsupportedProtocol(_))));
        let mut r = good;
        r.protocol = None;
        assert!(matches!(Group::from_record(r, 0, cfg(), counter_member_ids()), Err(RecordError::MissingProtocol)));
    }

    #[test]
    fn record_changed_is_raised_where_kafka_writes_group_metadata() {
        let mut h = H::new();
        let (a, _) = h.join(req("a"));
        assert!(!h.g.record_changed(), "joining does not write");
        let out = h.at(DELAY);
        assert!(!h.g.record_changed(), "completing the join phase with members does not write");
        let id = join_reply(&out, a).member_id;
        h.sync(sreq(&id, 1, vec![]));
        assert!(h.g.take_record().is_some(), "leader sync writes");
        h.hb(&id, None, 1);
        assert!(h.g.take_record().is_none());
        h.leave(&[(&id, None)]);
        let rec = h.g.take_record().expect("the group went Empty: write");
        assert_eq!(rec.generation_id, 2);
        assert!(rec.members.is_empty());
    }

    // ----- offset commits, describe, codes ---------------------------------------------------

    #[test]
    fn offset_commit_validation_follows_kafka_rules() {
        let mut h = H::new();
        // Simple (manual-assignment) commits: only into an Empty group.
        assert_eq!(h.g.validate_offset_commit(0, "", None, -1), Ok(()));
        let ids = stable_group(&mut h, &["a", "b"]);
        let now = h.now;
        assert_eq!(h.g.validate_offset_commit(now, "", None, -1), Err(GroupError::UnknownMemberId));
        assert_eq!(h.g.validate_offset_commit(now, &ids[0], None, 1), Ok(()));
        assert_eq!(h.g.validate_offset_commit(now, &ids[0], None, 0), Err(GroupError::IllegalGeneration));
        assert_eq!(h.g.validate_offset_commit(now, "ghost", None, 1), Err(GroupError::UnknownMemberId));
        assert_eq!(h.g.validate_offset_commit(now, &ids[0], Some("inst"), 1), Err(GroupError::UnknownMemberId));
        assert_eq!(h.g.validate_txn_offset_commit("", None, -1), Ok(()));
        // PreparingRebalance: the previous generation may still commit.
        h.join(rejoin("a", &ids[0]));
        assert_eq!(h.g.validate_offset_commit(now, &ids[1], None, 1), Ok(()));
        h.join(rejoin("b", &ids[1]));
        assert_eq!(h.g.state(), GroupState::CompletingRebalance);
        assert_eq!(h.g.validate_offset_commit(now, &ids[1], None, 2), Err(GroupError::RebalanceInProgress));
        assert_eq!(h.g.validate_txn_offset_commit(&ids[1], None, 2), Ok(()));
    }

    #[test]
    fn offset_commit_extends_the_member_session() {
        let mut h = H::new();
        let ids = stable_group(&mut h, &["a"]);
        let t0 = h.now;
        assert_eq!(h.g.validate_offset_commit(t0 + 9000, &ids[0], None, 1), Ok(()));
        h.at(t0 + 15_000);
        assert!(h.g.has_member(&ids[0]));
    }

    #[test]
    fn describe_reports_state_protocol_members_metadata_and_assignment() {
        let mut h = H::new();
        let (a, _) = h.join(JoinRequest { client_host: "/1.2.3.4".into(), ..req("a") });
        let d = h.g.describe();
        assert_eq!((d.state.as_str(), d.protocol.as_str(), d.protocol_type.as_str()), ("PreparingRebalance", "", "consumer"));
        assert_eq!(d.members[0].metadata, Bytes::new(), "no metadata unless Stable");
        let out = h.at(DELAY);
        let id = join_reply(&out, a).member_id;
        h.sync(sreq(&id, 1, vec![(id.clone(), Bytes::from_static(b"x"))]));
        let d = h.g.describe();
        assert_eq!(d.state, GroupState::Stable);
        assert_eq!(d.protocol, "range");
        assert_eq!(
            d.members,
            vec![MemberDescription {
                member_id: id,
                group_instance_id: None,
                client_id: "a".into(),
                client_host: "/1.2.3.4".into(),
                metadata: Bytes::from_static(b"a-range"),
                assignment: Bytes::from_static(b"x"),
            }]
        );
    }

    #[test]
    fn error_codes_match_kafka() {
        let codes = [
            (GroupError::UnknownServerError, -1),
            (GroupError::CoordinatorNotAvailable, 15),
            (GroupError::IllegalGeneration, 22),
            (GroupError::InconsistentGroupProtocol, 23),
            (GroupError::UnknownMemberId, 25),
            (GroupError::InvalidSessionTimeout, 26),
            (GroupError::RebalanceInProgress, 27),
            (GroupError::MemberIdRequired, 79),
            (GroupError::GroupMaxSizeReached, 81),
            (GroupError::FencedInstanceId, 82),
        ];
        for (e, c) in codes {
            assert_eq!(e.code(), c, "{e}");
        }
        assert_eq!(error_code(None), 0);
    }

    #[test]
    fn group_can_move_between_threads() {
        fn assert_send<T: Send>() {}
        assert_send::<Group>();
        assert_send::<Reply>();
    }

    #[test]
    fn member_ids_never_collide_even_if_the_suffix_source_repeats() {
        let mut g = Group::new(GroupConfig::default(), Box::new(|| "same".to_string()));
        let mut ids = HashSet::new();
        for i in 0..5 {
            let out = g.join(ReplyId(i), 0, JoinRequest { require_known_member_id: true, ..req("c") });
            assert!(ids.insert(join_reply(&out, ReplyId(i)).member_id));
        }
    }

    // ----- property-based --------------------------------------------------------------------

    mod prop {
        use super::*;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Op {
            Join { c: usize, fresh: bool, require_known: bool, proto: u8, session: u8 },
            Sync { c: usize, gen_delta: i8 },
            Heartbeat { c: usize, gen_delta: i8 },
            Leave { c: usize, by_instance: bool },
            Commit { c: usize },
            Advance { ms: u32 },
            /// Broker restart: restore from the last record the group asked to persist.
            Restart,
        }

        fn op() -> impl Strategy<Value = Op> {
            let delta = prop_oneof![8 => Just(0i8), 1 => -1i8..=1];
            prop_oneof![
                5 => (0usize..4, any::<bool>(), any::<bool>(), 0u8..5, 0u8..4).prop_map(
                    |(c, fresh, require_known, proto, session)| Op::Join { c, fresh, require_known, proto, session }
                ),
                4 => (0usize..4, delta.clone()).prop_map(|(c, gen_delta)| Op::Sync { c, gen_delta }),
                3 => (0usize..4, delta).prop_map(|(c, gen_delta)| Op::Heartbeat { c, gen_delta }),
                1 => (0usize..4, any::<bool>()).prop_map(|(c, by_instance)| Op::Leave { c, by_instance }),
                1 => (0usize..4).prop_map(|c| Op::Commit { c }),
                4 => prop_oneof![0u32..2000, 0u32..40_000].prop_map(|ms| Op::Advance { ms }),
                1 => Just(Op::Restart),
            ]
        }

        #[derive(Debug, Default, Clone)]
        struct Client {
            member_id: String,
            instance: Option<String>,
            generation: i32,
            leader: bool,
            members: Vec<String>,
        }

        struct Sim {
            g: Group,
            now: i64,
            next: u64,
            clients: Vec<Client>,
            owner: HashMap<ReplyId, usize>,
            outstanding: HashSet<ReplyId>,
            last_generation: i32,
            persisted: GroupRecord,
        }

        impl Sim {
            fn new() -> Sim {
                let g = Group::new(GroupConfig::default(), counter_member_ids());
                let persisted = g.to_record();
                let clients = (0..4)
                    .map(|i| Client { instance: (i >= 2).then(|| format!("i{i}")), ..Client::default() })
                    .collect();
                Sim { g, now: 0, next: 0, clients, owner: HashMap::new(), outstanding: HashSet::new(), last_generation: 0, persisted }
            }

            fn rid(&mut self, c: usize) -> ReplyId {
                self.next += 1;
                let id = ReplyId(self.next);
                self.outstanding.insert(id);
                self.owner.insert(id, c);
                id
            }

            fn absorb(&mut self, out: Out) {
                for (id, reply) in out {
                    assert!(self.outstanding.remove(&id), "{id:?} answered twice or never asked: {reply:?}");
                    let Some(&c) = self.owner.get(&id) else { continue };
                    let client = &mut self.clients[c];
                    match reply {
                        Reply::Join(r) => match r.error {
                            None => {
                                client.member_id = r.member_id.clone();
                                client.generation = r.generation_id;
                                client.leader = r.leader == r.member_id && !r.skip_assignment;
                                client.members = r.members.iter().map(|m| m.member_id.clone()).collect();
                            }
                            Some(GroupError::MemberIdRequired) => client.member_id = r.member_id,
                            Some(GroupError::UnknownMemberId | GroupError::FencedInstanceId) => client.member_id.clear(),
                            Some(_) => {}
                        },
                        Reply::Sync(r) => {
                            if matches!(r.error, Some(GroupError::UnknownMemberId | GroupError::FencedInstanceId)) {
                                client.member_id.clear();
                            }
                        }
                        Reply::Heartbeat(r) => {
                            if matches!(r.error, Some(GroupError::UnknownMemberId | GroupError::FencedInstanceId)) {
                                client.member_id.clear();
                            }
                        }
                        Reply::Leave(_) => {}
                    }
                }
                if let Some(rec) = self.g.take_record() {
                    self.persisted = rec;
                }
                self.check();
            }

            fn check(&mut self) {
                self.g.check_invariants();
                assert!(self.g.generation() >= self.last_generation, "generation went backwards");
                self.last_generation = self.g.generation();
                assert_eq!(self.g.parked_replies(), self.outstanding, "a request is neither parked nor answered");
            }

            fn apply(&mut self, op: Op) {
                match op {
                    Op::Join { c, fresh, require_known, proto, session } => {
                        let client = self.clients[c].clone();
                        let name = format!("c{c}");
                        let (ptype, protocols): (&str, Vec<(String, Bytes)>) = match proto {
                            0 => ("consumer", vec![("range".into(), Bytes::from_static(b"m0"))]),
                            1 => ("consumer", vec![("range".into(), Bytes::from_static(b"m1")), ("roundrobin".into(), Bytes::from_static(b"m1"))]),
                            2 => ("consumer", vec![("roundrobin".into(), Bytes::from_static(b"m2"))]),
                            3 => ("connect", vec![("range".into(), Bytes::from_static(b"m0"))]),
                            _ => ("consumer", vec![("range".into(), Bytes::from(name.clone()))]),
                        };
                        let req = JoinRequest {
                            member_id: if fresh { String::new() } else { client.member_id.clone() },
                            group_instance_id: client.instance.clone(),
                            client_id: name,
                            client_host: "/h".into(),
                            session_timeout_ms: [10_000, 6000, 30_000, 100][usize::from(session)],
                            rebalance_timeout_ms: 20_000,
                            protocol_type: ptype.into(),
                            protocols,
                            require_known_member_id: require_known,
                            supports_skip_assignment: c == 3,
                            reason: None,
                        };
                        let id = self.rid(c);
                        let out = self.g.join(id, self.now, req);
                        self.absorb(out);
                    }
                    Op::Sync { c, gen_delta } => {
                        let client = self.clients[c].clone();
                        let assignments = if client.leader {
                            client.members.iter().map(|m| (m.clone(), Bytes::from(m.clone()))).collect()
                        } else {
                            Vec::new()
                        };
                        let req = SyncRequest {
                            member_id: client.member_id.clone(),
                            group_instance_id: client.instance.clone(),
                            generation_id: client.generation + i32::from(gen_delta),
                            protocol_type: Some("consumer".into()),
                            protocol_name: None,
                            assignments,
                        };
                        let id = self.rid(c);
                        let out = self.g.sync(id, self.now, req);
                        self.absorb(out);
                    }
                    Op::Heartbeat { c, gen_delta } => {
                        let client = self.clients[c].clone();
                        let id = self.rid(c);
                        let out = self.g.heartbeat(id, self.now, &client.member_id, client.instance.as_deref(), client.generation + i32::from(gen_delta));
                        assert!(out.iter().any(|(r, _)| *r == id), "heartbeat answered immediately");
                        self.absorb(out);
                    }
                    Op::Leave { c, by_instance } => {
                        let client = self.clients[c].clone();
                        let member = if by_instance && client.instance.is_some() { String::new() } else { client.member_id.clone() };
                        let id = self.rid(c);
                        let out = self.g.leave(id, self.now, vec![(member, client.instance.clone())]);
                        assert!(out.iter().any(|(r, _)| *r == id), "leave answered immediately");
                        self.absorb(out);
                        self.clients[c].member_id.clear();
                    }
                    Op::Commit { c } => {
                        let client = self.clients[c].clone();
                        let _ = self.g.validate_offset_commit(self.now, &client.member_id, client.instance.as_deref(), client.generation);
                        self.check();
                    }
                    Op::Advance { ms } => {
                        self.now += i64::from(ms);
                        let out = self.g.tick(self.now);
                        self.absorb(out);
                    }
                    Op::Restart => {
                        let json = serde_json::to_string(&self.persisted).expect("serialise");
                        let record: GroupRecord = serde_json::from_str(&json).expect("deserialise");
                        self.g = Group::from_record(record, self.now, GroupConfig::default(), counter_member_ids())
                            .expect("every persisted record restores");
                        // In-flight requests die with their connections.
                        self.outstanding.clear();
                        self.last_generation = self.g.generation();
                        self.check();
                    }
                }
            }

            /// Lets time run with no more requests until no timer is armed.
            fn settle(&mut self) {
                for _ in 0..10_000 {
                    match self.g.next_deadline() {
                        Some(d) => {
                            self.now = self.now.max(d);
                            let out = self.g.tick(self.now);
                            self.absorb(out);
                        }
                        None => break,
                    }
                }
                assert_eq!(self.g.next_deadline(), None, "timers never settle");
                assert!(self.outstanding.is_empty(), "unanswered: {:?}", self.outstanding);
                assert_eq!(self.g.state(), GroupState::Empty, "silent members all expire");
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            #[test]
            fn random_client_traffic_never_panics_never_leaks_a_reply_and_keeps_invariants(
                ops in proptest::collection::vec(op(), 1..80),
                die in any::<bool>(),
            ) {
                let mut sim = Sim::new();
                for op in ops {
                    sim.apply(op);
                }
                if die {
                    let out = sim.g.mark_dead();
                    sim.absorb(out);
                    prop_assert!(sim.outstanding.is_empty());
                    prop_assert_eq!(sim.g.next_deadline(), None);
                } else {
                    sim.settle();
                }
            }
        }
    }
}
