//! Group coordinator over the wire: the error codes stale or unknown members get, and a
//! thousand members joining at once, against the real binary.

mod common;

use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use common::{proc_status_kib, s, Broker, Client};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, GroupId, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    OffsetCommitRequest, RequestKind, ResponseHeader, ResponseKind, SyncGroupRequest, TopicName,
};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::protocol::Decodable;

const MEMBER_ID_REQUIRED: i16 = 79;
const ILLEGAL_GENERATION: i16 = 22;
const UNKNOWN_MEMBER_ID: i16 = 25;
const INVALID_SESSION_TIMEOUT: i16 = 26;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;

fn join(group: &str, member: &str, protocol_type: &str, session_ms: i32) -> RequestKind {
    RequestKind::JoinGroup(
        JoinGroupRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_session_timeout_ms(session_ms)
            .with_rebalance_timeout_ms(10_000)
            .with_member_id(s(member))
            .with_protocol_type(s(protocol_type))
            .with_protocols(vec![JoinGroupRequestProtocol::default().with_name(s("range")).with_metadata(Bytes::from_static(b"\x00\x01"))]),
    )
}

fn join_resp(r: ResponseKind) -> JoinGroupResponse {
    match r {
        ResponseKind::JoinGroup(j) => j,
        other => panic!("unexpected {other:?}"),
    }
}

fn heartbeat(c: &mut Client, group: &str, member: &str, generation: i32) -> i16 {
    let r = c.request(
        ApiKey::Heartbeat,
        4,
        RequestKind::Heartbeat(HeartbeatRequest::default().with_group_id(GroupId(s(group))).with_member_id(s(member)).with_generation_id(generation)),
    );
    match r {
        ResponseKind::Heartbeat(h) => h.error_code,
        other => panic!("unexpected {other:?}"),
    }
}

fn commit(c: &mut Client, group: &str, member: &str, generation: i32) -> i16 {
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_member_id(s(member))
        .with_generation_id_or_member_epoch(generation)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(s("t")))
            .with_partitions(vec![OffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(1)])]);
    match c.request(ApiKey::OffsetCommit, 8, RequestKind::OffsetCommit(req)) {
        ResponseKind::OffsetCommit(r) => r.topics[0].partitions[0].error_code,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn stale_generations_and_unknown_members_get_kafkas_error_codes() {
    let b = Broker::start(&["--group-initial-rebalance-delay-ms", "0"]);
    let mut c = b.client();
    let topic = CreatableTopic::default().with_name(TopicName(s("t"))).with_num_partitions(1).with_replication_factor(1);
    c.request(ApiKey::CreateTopics, 7, RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![topic]).with_timeout_ms(10_000)));

    // KIP-394: a first join without a member id is answered with one to rejoin with.
    let first = join_resp(c.request(ApiKey::JoinGroup, 9, join("g", "", "consumer", 10_000)));
    assert_eq!(first.error_code, MEMBER_ID_REQUIRED);
    let member = first.member_id.to_string();
    assert!(!member.is_empty());
    let joined = join_resp(c.request(ApiKey::JoinGroup, 9, join("g", &member, "consumer", 10_000)));
    assert_eq!(joined.error_code, 0);
    assert_eq!(joined.generation_id, 1);
    assert_eq!(joined.leader.as_str(), member, "the only member leads");
    assert_eq!(joined.members.len(), 1, "the leader gets every member's metadata");

    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_generation_id(1)
        .with_member_id(s(&member))
        .with_protocol_type(Some(s("consumer")))
        .with_protocol_name(Some(s("range")))
        .with_assignments(vec![SyncGroupRequestAssignment::default().with_member_id(s(&member)).with_assignment(Bytes::from_static(b"A"))]);
    match c.request(ApiKey::SyncGroup, 5, RequestKind::SyncGroup(sync.clone())) {
        ResponseKind::SyncGroup(r) => {
            assert_eq!(r.error_code, 0);
            assert_eq!(r.assignment, Bytes::from_static(b"A"));
        }
        other => panic!("unexpected {other:?}"),
    }
    match c.request(ApiKey::SyncGroup, 5, RequestKind::SyncGroup(sync.with_generation_id(7))) {
        ResponseKind::SyncGroup(r) => assert_eq!(r.error_code, ILLEGAL_GENERATION),
        other => panic!("unexpected {other:?}"),
    }

    assert_eq!(heartbeat(&mut c, "g", &member, 1), 0);
    assert_eq!(heartbeat(&mut c, "g", &member, 0), ILLEGAL_GENERATION);
    assert_eq!(heartbeat(&mut c, "g", "nobody", 1), UNKNOWN_MEMBER_ID);
    assert_eq!(heartbeat(&mut c, "no-such-group", &member, 1), UNKNOWN_MEMBER_ID);

    assert_eq!(commit(&mut c, "g", &member, 1), 0);
    assert_eq!(commit(&mut c, "g", &member, 2), ILLEGAL_GENERATION);
    assert_eq!(commit(&mut c, "g", "nobody", 1), UNKNOWN_MEMBER_ID);
    // A "simple" commit (no member, generation -1) into a group with members is refused.
    assert_eq!(commit(&mut c, "g", "", -1), UNKNOWN_MEMBER_ID);
    // A group nobody manages takes simple commits and refuses generations.
    assert_eq!(commit(&mut c, "standalone", "", -1), 0);
    assert_eq!(commit(&mut c, "standalone2", "m", 3), ILLEGAL_GENERATION);

    // Session timeouts outside the broker's bounds, and a different protocol type.
    assert_eq!(join_resp(c.request(ApiKey::JoinGroup, 9, join("g2", "", "consumer", 100))).error_code, INVALID_SESSION_TIMEOUT);
    assert_eq!(join_resp(c.request(ApiKey::JoinGroup, 5, join("g", &member, "connect", 10_000))).error_code, INCONSISTENT_GROUP_PROTOCOL);

    // LeaveGroup v3+: per-member results.
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_members(vec![MemberIdentity::default().with_member_id(s("nobody")), MemberIdentity::default().with_member_id(s(&member))]);
    match c.request(ApiKey::LeaveGroup, 5, RequestKind::LeaveGroup(leave)) {
        ResponseKind::LeaveGroup(r) => {
            assert_eq!(r.error_code, 0);
            let codes: Vec<i16> = r.members.iter().map(|m| m.error_code).collect();
            assert_eq!(codes, vec![UNKNOWN_MEMBER_ID, 0]);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(heartbeat(&mut c, "g", &member, 1), UNKNOWN_MEMBER_ID, "the member left");
}

#[test]
fn a_thousand_members_joining_at_once_finish_in_one_bounded_rebalance() {
    let b = Broker::start(&["--group-initial-rebalance-delay-ms", "300"]);
    let pid = b.child.as_ref().expect("running").id();
    let before = proc_status_kib(pid, "VmRSS");
    let started = Instant::now();
    // Ten connections, each pipelining 100 JoinGroup v3 requests (members are added at once
    // before v4); every answer waits for the same rebalance.
    let mut clients: Vec<Client> = (0..10).map(|_| b.client()).collect();
    let mut expected = Vec::new();
    for c in clients.iter_mut() {
        let mut ids = Vec::new();
        for _ in 0..100 {
            let frame = c.encode_request(ApiKey::JoinGroup, 3, &join("big", "", "consumer", 30_000));
            c.send_raw(&frame);
            ids.push(());
        }
        expected.push(ids.len());
    }
    let mut generations = Vec::new();
    let mut leaders = Vec::new();
    for (c, n) in clients.iter_mut().zip(expected) {
        for _ in 0..n {
            let mut frame = c.read_frame().expect("join response");
            let _ = ResponseHeader::decode(&mut frame, ApiKey::JoinGroup.response_header_version(3)).expect("header");
            let r = JoinGroupResponse::decode(&mut frame, 3).expect("decode");
            assert!(!frame.has_remaining());
            assert_eq!(r.error_code, 0);
            generations.push(r.generation_id);
            leaders.push(r.leader.to_string());
            if r.member_id == r.leader {
                assert_eq!(r.members.len(), 1000, "the leader sees every member");
            }
        }
    }
    let elapsed = started.elapsed();
    assert!(generations.iter().all(|g| *g == 1), "one rebalance: {:?}", &generations[..5]);
    leaders.dedup();
    assert_eq!(leaders.len(), 1, "one leader");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    let grown = proc_status_kib(pid, "VmRSS").saturating_sub(before);
    assert!(grown < 100 * 1024, "RSS grew by {grown} KiB");
}

#[test]
fn joins_beyond_group_max_size_are_refused() {
    let b = Broker::start(&["--group-initial-rebalance-delay-ms", "200", "--group-max-size", "2"]);
    let mut c = b.client();
    // Three JoinGroup v3 (members are added without MEMBER_ID_REQUIRED), pipelined: the
    // third is refused at once, the first two complete one rebalance together.
    for _ in 0..3 {
        let frame = c.encode_request(ApiKey::JoinGroup, 3, &join("small", "", "consumer", 10_000));
        c.send_raw(&frame);
    }
    let mut codes = Vec::new();
    for _ in 0..3 {
        let mut frame = c.read_frame().expect("join response");
        let _ = ResponseHeader::decode(&mut frame, ApiKey::JoinGroup.response_header_version(3)).expect("header");
        codes.push(JoinGroupResponse::decode(&mut frame, 3).expect("decode").error_code);
    }
    // Responses come back in request order; the refusal was decided before the others.
    assert_eq!(codes, vec![0, 0, 81], "GROUP_MAX_SIZE_REACHED for the third member");
}

fn fetch_committed(c: &mut Client, group: &str) -> i64 {
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    let req = kafka_protocol::messages::OffsetFetchRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default().with_name(TopicName(s("t"))).with_partition_indexes(vec![0])]));
    match c.request(ApiKey::OffsetFetch, 7, RequestKind::OffsetFetch(req)) {
        ResponseKind::OffsetFetch(r) => r.topics[0].partitions[0].committed_offset,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn committed_offsets_of_a_group_without_members_expire_after_the_retention() {
    // One minute is the smallest retention; the broker checks every half retention.
    let b = Broker::start(&["--offsets-retention-minutes", "1"]);
    let mut c = b.client();
    let topic = CreatableTopic::default().with_name(TopicName(s("t"))).with_num_partitions(1).with_replication_factor(1);
    c.request(ApiKey::CreateTopics, 7, RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![topic]).with_timeout_ms(10_000)));
    let committed_at = Instant::now();
    assert_eq!(commit(&mut c, "lonely", "", -1), 0);
    assert_eq!(fetch_committed(&mut c, "lonely"), 1);
    let deadline = committed_at + Duration::from_secs(150);
    loop {
        let offset = fetch_committed(&mut c, "lonely");
        if offset == -1 {
            assert!(committed_at.elapsed() >= Duration::from_secs(60), "expired early, after {:?}", committed_at.elapsed());
            break;
        }
        assert!(Instant::now() < deadline, "offset still there after {:?}", committed_at.elapsed());
        std::thread::sleep(Duration::from_secs(2));
    }
}
