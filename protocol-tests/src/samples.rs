//! Sample requests and responses for the golden vectors: for every API and version Runnel
//! advertises, one message in which every field that exists at that version holds a
//! non-default value (and flexible versions carry an unknown tagged field). Encoding them and
//! comparing against `protocol-tests/vectors/` is the job of `tests/golden.rs`.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId,
    CreateTopicsRequest, CreateTopicsResponse, DeleteGroupsRequest, DeleteGroupsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, DescribeClusterRequest, DescribeClusterResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    DescribeTransactionsRequest, DescribeTransactionsResponse, ElectLeadersRequest, ElectLeadersResponse, EndTxnRequest, EndTxnResponse,
    FetchRequest, FetchResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, InitProducerIdRequest, InitProducerIdResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, ListOffsetsRequest, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, ListOffsetsResponse, ListTransactionsRequest,
    ListTransactionsResponse, MetadataRequest, MetadataResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse, OffsetFetchRequest,
    OffsetFetchResponse, OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, ProduceRequest,
    ProduceResponse, ProducerId, RequestKind, ResponseKind, SyncGroupRequest, SyncGroupResponse,
    TopicName, TransactionalId, TxnOffsetCommitRequest, TxnOffsetCommitResponse, UnregisterBrokerRequest,
    UnregisterBrokerResponse, AddRaftVoterRequest, AddRaftVoterResponse, RemoveRaftVoterRequest, RemoveRaftVoterResponse,
    DescribeQuorumRequest, DescribeQuorumResponse,
};
use kafka_protocol::protocol::{Request, StrBytes};
use runnel::protocol::{legacy, versions};
use uuid::Uuid;

/// One table drives `COVERED`, `request` and `response` (and the tests' default messages), so
/// an API cannot be listed without builders or the other way round. The version ranges are
/// the broker's own (`runnel::protocol::versions`).
macro_rules! samples {
    ($($api:ident => $request:ident, $response:ident;)*) => {
        /// The APIs these samples cover: every API Runnel advertises.
        pub const COVERED: &[ApiKey] = &[$(ApiKey::$api),*];

        /// A request of `api` at `version` in which every field that exists at that version
        /// holds a non-default value. A version coded by hand in `protocol::legacy` gets the
        /// sample of the version whose schema the broker decodes it with. Panics for an API
        /// or version Runnel does not advertise.
        pub fn request(api: ApiKey, version: i16) -> RequestKind {
            let version = sample_version(api, version);
            match api {
                $(ApiKey::$api => RequestKind::$api($request(version)),)*
                _ => unreachable!("sample_version rejects {api:?}"),
            }
        }

        /// The same for the response.
        pub fn response(api: ApiKey, version: i16) -> ResponseKind {
            let version = sample_version(api, version);
            match api {
                $(ApiKey::$api => ResponseKind::$api($response(version)),)*
                _ => unreachable!("sample_version rejects {api:?}"),
            }
        }

        /// `Default::default()` of the request type of `api`.
        #[cfg(test)]
        fn default_request(api: ApiKey) -> RequestKind {
            match api {
                $(ApiKey::$api => RequestKind::$api(Default::default()),)*
                _ => unreachable!("no samples for {api:?}"),
            }
        }

        /// `Default::default()` of the response type of `api`.
        #[cfg(test)]
        fn default_response(api: ApiKey) -> ResponseKind {
            match api {
                $(ApiKey::$api => ResponseKind::$api(Default::default()),)*
                _ => unreachable!("no samples for {api:?}"),
            }
        }
    };
}

samples! {
    Produce => produce_request, produce_response;
    Fetch => fetch_request, fetch_response;
    ListOffsets => list_offsets_request, list_offsets_response;
    Metadata => metadata_request, metadata_response;
    ApiVersions => api_versions_request, api_versions_response;
    CreateTopics => create_topics_request, create_topics_response;
    DeleteTopics => delete_topics_request, delete_topics_response;
    OffsetForLeaderEpoch => offset_for_leader_epoch_request, offset_for_leader_epoch_response;
    DescribeConfigs => describe_configs_request, describe_configs_response;
    DescribeCluster => describe_cluster_request, describe_cluster_response;
    FindCoordinator => find_coordinator_request, find_coordinator_response;
    OffsetCommit => offset_commit_request, offset_commit_response;
    OffsetFetch => offset_fetch_request, offset_fetch_response;
    OffsetDelete => offset_delete_request, offset_delete_response;
    JoinGroup => join_group_request, join_group_response;
    SyncGroup => sync_group_request, sync_group_response;
    Heartbeat => heartbeat_request, heartbeat_response;
    LeaveGroup => leave_group_request, leave_group_response;
    ListGroups => list_groups_request, list_groups_response;
    DescribeGroups => describe_groups_request, describe_groups_response;
    DeleteGroups => delete_groups_request, delete_groups_response;
    InitProducerId => init_producer_id_request, init_producer_id_response;
    AddPartitionsToTxn => add_partitions_to_txn_request, add_partitions_to_txn_response;
    AddOffsetsToTxn => add_offsets_to_txn_request, add_offsets_to_txn_response;
    TxnOffsetCommit => txn_offset_commit_request, txn_offset_commit_response;
    EndTxn => end_txn_request, end_txn_response;
    ListTransactions => list_transactions_request, list_transactions_response;
    DescribeTransactions => describe_transactions_request, describe_transactions_response;
    ElectLeaders => elect_leaders_request, elect_leaders_response;
    AlterPartitionReassignments => alter_partition_reassignments_request, alter_partition_reassignments_response;
    ListPartitionReassignments => list_partition_reassignments_request, list_partition_reassignments_response;
    UnregisterBroker => unregister_broker_request, unregister_broker_response;
    AddRaftVoter => add_raft_voter_request, add_raft_voter_response;
    RemoveRaftVoter => remove_raft_voter_request, remove_raft_voter_response;
    DescribeQuorum => describe_quorum_request, describe_quorum_response;
}

/// The version whose sample stands for `api` at `version`; panics when Runnel does not
/// advertise it.
fn sample_version(api: ApiKey, version: i16) -> i16 {
    assert!(COVERED.contains(&api), "no samples for {api:?}");
    let Some(range) = versions::advertised(api) else {
        panic!("no samples for {api:?}: it is not an API Runnel advertises");
    };
    assert!(
        (range.min..=range.max).contains(&version),
        "no sample for {api:?} v{version}: Runnel advertises v{}-{}", range.min, range.max
    );
    legacy::body_version(api, version)
}

// Values shared by the builders. Two of everything where a message has an array, so that
// element order and boundaries show in the bytes.

const ORDERS_ID: Uuid = Uuid::from_u128(0x0f1e_2d3c_4b5a_6978_8796_a5b4_c3d2_e1f0);
const PAYMENTS_ID: Uuid = Uuid::from_u128(0x1122_3344_5566_7788_99aa_bbcc_ddee_ff00);
const DIRECTORY_ID: Uuid = Uuid::from_u128(0xd1d2_d3d4_d5d6_d7d8_d9da_dbdc_dddd_dedf);

fn text(value: &'static str) -> StrBytes {
    StrBytes::from_static_str(value)
}

fn topic_name(value: &'static str) -> TopicName {
    TopicName(text(value))
}

fn group_id(value: &'static str) -> GroupId {
    GroupId(text(value))
}

fn txn_id(value: &'static str) -> TransactionalId {
    TransactionalId(text(value))
}

fn raw(value: &'static [u8]) -> Bytes {
    Bytes::from_static(value)
}

/// A tag that no schema defines, so a decoder must carry it through as unknown. Only flexible
/// versions (those with a v2 request header) have tagged fields; responses share the
/// request's flexible versions, so `R` is always the request type.
fn unknown_tags<R: Request>(version: i16) -> BTreeMap<i32, Bytes> {
    if R::header_version(version) >= 2 {
        BTreeMap::from([(9999, raw(b"\x01unknown-tag"))])
    } else {
        BTreeMap::new()
    }
}

fn produce_request(v: i16) -> ProduceRequest {
    use kafka_protocol::messages::produce_request::*;
    let partition = |index, records| {
        PartitionProduceData::default()
            .with_index(index)
            .with_records(Some(raw(records)))
    };
    let topic = |name, id, partitions| {
        let topic = TopicProduceData::default().with_partition_data(partitions);
        if v >= 13 {
            topic.with_topic_id(id)
        } else {
            topic.with_name(topic_name(name))
        }
    };
    ProduceRequest::default()
        .with_transactional_id(Some(txn_id("txn-produce")))
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            topic(
                "orders",
                ORDERS_ID,
                vec![
                    partition(1, b"\x00\x01batch-a"),
                    partition(2, b"\x00\x02batch-b"),
                ],
            ),
            topic(
                "payments",
                PAYMENTS_ID,
                vec![partition(3, b"\x00\x03batch-c")],
            ),
        ])
        .with_unknown_tagged_fields(unknown_tags::<ProduceRequest>(v))
}

fn produce_response(v: i16) -> ProduceResponse {
    use kafka_protocol::messages::produce_response::*;
    let partition = |index, base_offset| {
        let mut p = PartitionProduceResponse::default()
            .with_index(index)
            .with_error_code(10)
            .with_base_offset(base_offset)
            .with_log_append_time_ms(1_700_000_000_000 + base_offset);
        if v >= 5 {
            p.log_start_offset = base_offset - 50;
        }
        if v >= 8 {
            p.record_errors = vec![
                BatchIndexAndErrorMessage::default()
                    .with_batch_index(1)
                    .with_batch_index_error_message(Some(text("bad record 1"))),
                BatchIndexAndErrorMessage::default()
                    .with_batch_index(3)
                    .with_batch_index_error_message(Some(text("bad record 3"))),
            ];
            p.error_message = Some(text("record too large"));
        }
        if v >= 10 {
            p.current_leader = LeaderIdAndEpoch::default()
                .with_leader_id(BrokerId(2))
                .with_leader_epoch(7);
        }
        p
    };
    let topic = |name, id, partitions| {
        let topic = TopicProduceResponse::default().with_partition_responses(partitions);
        if v >= 13 {
            topic.with_topic_id(id)
        } else {
            topic.with_name(topic_name(name))
        }
    };
    let endpoint = |id, host, rack| {
        NodeEndpoint::default()
            .with_node_id(BrokerId(id))
            .with_host(text(host))
            .with_port(9090 + id)
            .with_rack(Some(text(rack)))
    };
    let mut r = ProduceResponse::default()
        .with_responses(vec![
            topic(
                "orders",
                ORDERS_ID,
                vec![partition(1, 100), partition(2, 200)],
            ),
            topic("payments", PAYMENTS_ID, vec![partition(3, 300)]),
        ])
        .with_throttle_time_ms(17)
        .with_unknown_tagged_fields(unknown_tags::<ProduceRequest>(v));
    if v >= 10 {
        r.node_endpoints = vec![
            endpoint(2, "broker-2.local", "rack-a"),
            endpoint(3, "broker-3.local", "rack-b"),
        ];
    }
    r
}

fn fetch_request(v: i16) -> FetchRequest {
    use kafka_protocol::messages::fetch_request::*;
    let partition = |partition, fetch_offset| {
        let mut p = FetchPartition::default()
            .with_partition(partition)
            .with_fetch_offset(fetch_offset)
            .with_partition_max_bytes(1_048_576 + partition);
        if v >= 5 {
            p.log_start_offset = fetch_offset - 40;
        }
        if v >= 9 {
            p.current_leader_epoch = 6;
        }
        if v >= 12 {
            p.last_fetched_epoch = 5;
        }
        if v >= 17 {
            p.replica_directory_id = DIRECTORY_ID;
        }
        if v >= 18 {
            p.high_watermark = fetch_offset + 10;
        }
        p
    };
    let topic = |name, id, partitions| {
        let topic = FetchTopic::default().with_partitions(partitions);
        if v >= 13 {
            topic.with_topic_id(id)
        } else {
            topic.with_topic(topic_name(name))
        }
    };
    let mut r = FetchRequest::default()
        .with_max_wait_ms(500)
        .with_min_bytes(1)
        .with_max_bytes(52_428_800)
        .with_isolation_level(1)
        .with_topics(vec![
            topic(
                "orders",
                ORDERS_ID,
                vec![partition(1, 100), partition(2, 200)],
            ),
            topic("payments", PAYMENTS_ID, vec![partition(3, 300)]),
        ])
        .with_unknown_tagged_fields(unknown_tags::<FetchRequest>(v));
    if v <= 14 {
        r.replica_id = BrokerId(3);
    } else {
        r.replica_state = ReplicaState::default()
            .with_replica_id(BrokerId(3))
            .with_replica_epoch(11);
    }
    if v >= 7 {
        r.session_id = 1234;
        r.session_epoch = 2;
        let forgotten = ForgottenTopic::default().with_partitions(vec![5, 6]);
        r.forgotten_topics_data = vec![if v >= 13 {
            forgotten.with_topic_id(PAYMENTS_ID)
        } else {
            forgotten.with_topic(topic_name("payments"))
        }];
    }
    if v >= 11 {
        r.rack_id = text("rack-a");
    }
    if v >= 12 {
        r.cluster_id = Some(text("runnel-cluster"));
    }
    r
}

fn fetch_response(v: i16) -> FetchResponse {
    use kafka_protocol::messages::fetch_response::*;
    let partition = |index, high_watermark, records| {
        let mut p = PartitionData::default()
            .with_partition_index(index)
            .with_error_code(1)
            .with_high_watermark(high_watermark)
            .with_last_stable_offset(high_watermark - 5)
            .with_aborted_transactions(Some(vec![
                AbortedTransaction::default()
                    .with_producer_id(ProducerId(9001))
                    .with_first_offset(high_watermark - 20),
                AbortedTransaction::default()
                    .with_producer_id(ProducerId(9002))
                    .with_first_offset(high_watermark - 10),
            ]))
            .with_records(Some(raw(records)));
        if v >= 5 {
            p.log_start_offset = high_watermark - 90;
        }
        if v >= 11 {
            p.preferred_read_replica = BrokerId(2);
        }
        if v >= 12 {
            p.diverging_epoch = EpochEndOffset::default()
                .with_epoch(4)
                .with_end_offset(high_watermark - 30);
            p.current_leader = LeaderIdAndEpoch::default()
                .with_leader_id(BrokerId(1))
                .with_leader_epoch(6);
            p.snapshot_id = SnapshotId::default()
                .with_end_offset(high_watermark - 60)
                .with_epoch(3);
        }
        p
    };
    let topic = |name, id, partitions| {
        let topic = FetchableTopicResponse::default().with_partitions(partitions);
        if v >= 13 {
            topic.with_topic_id(id)
        } else {
            topic.with_topic(topic_name(name))
        }
    };
    let endpoint = |id, host, rack| {
        NodeEndpoint::default()
            .with_node_id(BrokerId(id))
            .with_host(text(host))
            .with_port(9090 + id)
            .with_rack(Some(text(rack)))
    };
    let mut r = FetchResponse::default()
        .with_throttle_time_ms(17)
        .with_responses(vec![
            topic(
                "orders",
                ORDERS_ID,
                vec![
                    partition(1, 100, b"\x00\x01batch-a"),
                    partition(2, 200, b"\x00\x02batch-b"),
                ],
            ),
            topic(
                "payments",
                PAYMENTS_ID,
                vec![partition(3, 300, b"\x00\x03batch-c")],
            ),
        ])
        .with_unknown_tagged_fields(unknown_tags::<FetchRequest>(v));
    if v >= 7 {
        r.error_code = 70;
        r.session_id = 1234;
    }
    if v >= 16 {
        r.node_endpoints = vec![
            endpoint(1, "broker-1.local", "rack-a"),
            endpoint(2, "broker-2.local", "rack-b"),
        ];
    }
    r
}

fn list_offsets_request(v: i16) -> ListOffsetsRequest {
    use kafka_protocol::messages::list_offsets_request::*;
    let partition = |index, timestamp| {
        let p = ListOffsetsPartition::default()
            .with_partition_index(index)
            .with_timestamp(timestamp);
        if v >= 4 {
            p.with_current_leader_epoch(6)
        } else {
            p
        }
    };
    let mut r = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(topic_name("orders"))
                .with_partitions(vec![partition(1, -1), partition(2, 1_700_000_000_000)]),
            ListOffsetsTopic::default()
                .with_name(topic_name("payments"))
                .with_partitions(vec![partition(3, -2)]),
        ])
        .with_unknown_tagged_fields(unknown_tags::<ListOffsetsRequest>(v));
    if v >= 2 {
        r.isolation_level = 1;
    }
    if v >= 10 {
        r.timeout_ms = 30_000;
    }
    r
}

fn list_offsets_response(v: i16) -> ListOffsetsResponse {
    use kafka_protocol::messages::list_offsets_response::*;
    let partition = |index, offset| {
        let p = ListOffsetsPartitionResponse::default()
            .with_partition_index(index)
            .with_error_code(6)
            .with_timestamp(1_700_000_000_000 + offset)
            .with_offset(offset);
        if v >= 4 {
            p.with_leader_epoch(6)
        } else {
            p
        }
    };
    let mut r = ListOffsetsResponse::default()
        .with_topics(vec![
            ListOffsetsTopicResponse::default()
                .with_name(topic_name("orders"))
                .with_partitions(vec![partition(1, 100), partition(2, 200)]),
            ListOffsetsTopicResponse::default()
                .with_name(topic_name("payments"))
                .with_partitions(vec![partition(3, 300)]),
        ])
        .with_unknown_tagged_fields(unknown_tags::<ListOffsetsRequest>(v));
    if v >= 2 {
        r.throttle_time_ms = 17;
    }
    r
}

fn metadata_request(v: i16) -> MetadataRequest {
    use kafka_protocol::messages::metadata_request::*;
    let topic = |name, id| {
        let topic = MetadataRequestTopic::default().with_name(Some(topic_name(name)));
        if v >= 10 {
            topic.with_topic_id(id)
        } else {
            topic
        }
    };
    let mut r = MetadataRequest::default()
        .with_topics(Some(vec![
            topic("orders", ORDERS_ID),
            topic("payments", PAYMENTS_ID),
        ]))
        .with_unknown_tagged_fields(unknown_tags::<MetadataRequest>(v));
    if v >= 4 {
        r.allow_auto_topic_creation = false;
    }
    if (8..=10).contains(&v) {
        r.include_cluster_authorized_operations = true;
    }
    if v >= 8 {
        r.include_topic_authorized_operations = true;
    }
    r
}

fn metadata_response(v: i16) -> MetadataResponse {
    use kafka_protocol::messages::metadata_response::*;
    let broker = |id, host, rack| {
        let broker = MetadataResponseBroker::default()
            .with_node_id(BrokerId(id))
            .with_host(text(host))
            .with_port(9090 + id);
        if v >= 1 {
            broker.with_rack(Some(text(rack)))
        } else {
            broker
        }
    };
    let partition = |index, leader: i32, follower: i32| {
        let mut p = MetadataResponsePartition::default()
            .with_error_code(9)
            .with_partition_index(index)
            .with_leader_id(BrokerId(leader))
            .with_replica_nodes(vec![BrokerId(leader), BrokerId(follower)])
            .with_isr_nodes(vec![BrokerId(leader)]);
        if v >= 5 {
            p.offline_replicas = vec![BrokerId(follower)];
        }
        if v >= 7 {
            p.leader_epoch = 6 + index;
        }
        p
    };
    let topic = |name, id, partitions| {
        let mut t = MetadataResponseTopic::default()
            .with_error_code(3)
            .with_name(Some(topic_name(name)))
            .with_partitions(partitions);
        if v >= 1 {
            t.is_internal = true;
        }
        if v >= 8 {
            t.topic_authorized_operations = 0b1111_1000;
        }
        if v >= 10 {
            t.topic_id = id;
        }
        t
    };
    let mut r = MetadataResponse::default()
        .with_brokers(vec![
            broker(1, "broker-1.local", "rack-a"),
            broker(2, "broker-2.local", "rack-b"),
        ])
        .with_topics(vec![
            topic(
                "orders",
                ORDERS_ID,
                vec![partition(1, 1, 2), partition(2, 2, 1)],
            ),
            topic("payments", PAYMENTS_ID, vec![partition(3, 1, 2)]),
        ])
        .with_unknown_tagged_fields(unknown_tags::<MetadataRequest>(v));
    if v >= 1 {
        r.controller_id = BrokerId(1);
    }
    if v >= 2 {
        r.cluster_id = Some(text("runnel-cluster"));
    }
    if v >= 3 {
        r.throttle_time_ms = 17;
    }
    if (8..=10).contains(&v) {
        r.cluster_authorized_operations = 0b0111_0000;
    }
    if v >= 13 {
        r.error_code = 58;
    }
    r
}

fn api_versions_request(v: i16) -> ApiVersionsRequest {
    let r = ApiVersionsRequest::default()
        .with_unknown_tagged_fields(unknown_tags::<ApiVersionsRequest>(v));
    if v >= 3 {
        r.with_client_software_name(text("runnel-samples"))
            .with_client_software_version(text("1.2.3"))
    } else {
        r
    }
}

fn api_versions_response(v: i16) -> ApiVersionsResponse {
    use kafka_protocol::messages::api_versions_response::*;
    let api = |key, min, max| {
        ApiVersion::default()
            .with_api_key(key)
            .with_min_version(min)
            .with_max_version(max)
    };
    let mut r = ApiVersionsResponse::default()
        .with_error_code(35)
        .with_api_keys(vec![api(1, 4, 17), api(2, 1, 10)])
        .with_unknown_tagged_fields(unknown_tags::<ApiVersionsRequest>(v));
    if v >= 1 {
        r.throttle_time_ms = 17;
    }
    if v >= 3 {
        r.supported_features = vec![
            SupportedFeatureKey::default()
                .with_name(text("metadata.version"))
                .with_min_version(1)
                .with_max_version(20),
            SupportedFeatureKey::default()
                .with_name(text("transaction.version"))
                .with_min_version(2)
                .with_max_version(3),
        ];
        r.finalized_features_epoch = 42;
        r.finalized_features = vec![
            FinalizedFeatureKey::default()
                .with_name(text("metadata.version"))
                .with_max_version_level(19)
                .with_min_version_level(4),
            FinalizedFeatureKey::default()
                .with_name(text("transaction.version"))
                .with_max_version_level(3)
                .with_min_version_level(1),
        ];
        r.zk_migration_ready = true;
    }
    r
}

fn create_topics_request(v: i16) -> CreateTopicsRequest {
    use kafka_protocol::messages::create_topics_request::*;
    let assignment = |index, brokers: [i32; 2]| {
        CreatableReplicaAssignment::default()
            .with_partition_index(index)
            .with_broker_ids(brokers.map(BrokerId).to_vec())
    };
    let config = |name, value| {
        CreatableTopicConfig::default()
            .with_name(text(name))
            .with_value(Some(text(value)))
    };
    let topic = |name, partitions, replication| {
        CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(partitions)
            .with_replication_factor(replication)
    };
    CreateTopicsRequest::default()
        .with_topics(vec![
            topic("orders", 2, 2)
                .with_assignments(vec![assignment(1, [1, 2]), assignment(2, [2, 3])])
                .with_configs(vec![
                    config("cleanup.policy", "compact"),
                    config("retention.ms", "3600000"),
                ]),
            topic("payments", 3, 1)
                .with_assignments(vec![assignment(1, [3, 1])])
                .with_configs(vec![config("segment.bytes", "1048576")]),
        ])
        .with_timeout_ms(30_000)
        .with_validate_only(true)
        .with_unknown_tagged_fields(unknown_tags::<CreateTopicsRequest>(v))
}

fn create_topics_response(v: i16) -> CreateTopicsResponse {
    use kafka_protocol::messages::create_topics_response::*;
    let config = |name, value| {
        CreatableTopicConfigs::default()
            .with_name(text(name))
            .with_value(Some(text(value)))
            .with_read_only(true)
            .with_config_source(5)
            .with_is_sensitive(true)
    };
    let topic = |name, id, partitions| {
        let mut t = CreatableTopicResult::default()
            .with_name(topic_name(name))
            .with_error_code(36)
            .with_error_message(Some(text("topic already exists")));
        if v >= 5 {
            t.topic_config_error_code = 29;
            t.num_partitions = partitions;
            t.replication_factor = 2;
            t.configs = Some(vec![
                config("cleanup.policy", "compact"),
                config("retention.ms", "3600000"),
            ]);
        }
        if v >= 7 {
            t.topic_id = id;
        }
        t
    };
    CreateTopicsResponse::default()
        .with_throttle_time_ms(17)
        .with_topics(vec![
            topic("orders", ORDERS_ID, 2),
            topic("payments", PAYMENTS_ID, 3),
        ])
        .with_unknown_tagged_fields(unknown_tags::<CreateTopicsRequest>(v))
}

fn delete_topics_request(v: i16) -> DeleteTopicsRequest {
    use kafka_protocol::messages::delete_topics_request::*;
    let r = DeleteTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_unknown_tagged_fields(unknown_tags::<DeleteTopicsRequest>(v));
    if v >= 6 {
        let topic = |name, id| {
            DeleteTopicState::default()
                .with_name(Some(topic_name(name)))
                .with_topic_id(id)
        };
        r.with_topics(vec![
            topic("orders", ORDERS_ID),
            topic("payments", PAYMENTS_ID),
        ])
    } else {
        r.with_topic_names(vec![topic_name("orders"), topic_name("payments")])
    }
}

fn delete_topics_response(v: i16) -> DeleteTopicsResponse {
    use kafka_protocol::messages::delete_topics_response::*;
    let result = |name, id| {
        let mut t = DeletableTopicResult::default()
            .with_name(Some(topic_name(name)))
            .with_error_code(3);
        if v >= 5 {
            t.error_message = Some(text("unknown topic"));
        }
        if v >= 6 {
            t.topic_id = id;
        }
        t
    };
    DeleteTopicsResponse::default()
        .with_throttle_time_ms(17)
        .with_responses(vec![
            result("orders", ORDERS_ID),
            result("payments", PAYMENTS_ID),
        ])
        .with_unknown_tagged_fields(unknown_tags::<DeleteTopicsRequest>(v))
}

fn offset_for_leader_epoch_request(v: i16) -> OffsetForLeaderEpochRequest {
    use kafka_protocol::messages::offset_for_leader_epoch_request::*;
    let partition = |partition, leader_epoch| {
        OffsetForLeaderPartition::default()
            .with_partition(partition)
            .with_current_leader_epoch(leader_epoch + 1)
            .with_leader_epoch(leader_epoch)
    };
    let mut r = OffsetForLeaderEpochRequest::default()
        .with_topics(vec![
            OffsetForLeaderTopic::default()
                .with_topic(topic_name("orders"))
                .with_partitions(vec![partition(1, 4), partition(2, 5)]),
            OffsetForLeaderTopic::default()
                .with_topic(topic_name("payments"))
                .with_partitions(vec![partition(3, 6)]),
        ])
        .with_unknown_tagged_fields(unknown_tags::<OffsetForLeaderEpochRequest>(v));
    if v >= 3 {
        r.replica_id = BrokerId(3);
    }
    r
}

fn offset_for_leader_epoch_response(v: i16) -> OffsetForLeaderEpochResponse {
    use kafka_protocol::messages::offset_for_leader_epoch_response::*;
    let partition = |partition, end_offset| {
        EpochEndOffset::default()
            .with_error_code(75)
            .with_partition(partition)
            .with_leader_epoch(4 + partition)
            .with_end_offset(end_offset)
    };
    OffsetForLeaderEpochResponse::default()
        .with_throttle_time_ms(17)
        .with_topics(vec![
            OffsetForLeaderTopicResult::default()
                .with_topic(topic_name("orders"))
                .with_partitions(vec![partition(1, 100), partition(2, 200)]),
            OffsetForLeaderTopicResult::default()
                .with_topic(topic_name("payments"))
                .with_partitions(vec![partition(3, 300)]),
        ])
        .with_unknown_tagged_fields(unknown_tags::<OffsetForLeaderEpochRequest>(v))
}

fn describe_configs_request(v: i16) -> DescribeConfigsRequest {
    use kafka_protocol::messages::describe_configs_request::*;
    let resource = |kind, name, keys: Vec<StrBytes>| {
        DescribeConfigsResource::default()
            .with_resource_type(kind)
            .with_resource_name(text(name))
            .with_configuration_keys(Some(keys))
    };
    let mut r = DescribeConfigsRequest::default()
        .with_resources(vec![
            resource(
                2,
                "orders",
                vec![text("cleanup.policy"), text("retention.ms")],
            ),
            resource(4, "1", vec![text("log.dirs")]),
        ])
        .with_include_synonyms(true)
        .with_unknown_tagged_fields(unknown_tags::<DescribeConfigsRequest>(v));
    if v >= 3 {
        r.include_documentation = true;
    }
    r
}

fn describe_configs_response(v: i16) -> DescribeConfigsResponse {
    use kafka_protocol::messages::describe_configs_response::*;
    let synonym = |name, value, source| {
        DescribeConfigsSynonym::default()
            .with_name(text(name))
            .with_value(Some(text(value)))
            .with_source(source)
    };
    let config = |name, value| {
        let mut c = DescribeConfigsResourceResult::default()
            .with_name(text(name))
            .with_value(Some(text(value)))
            .with_read_only(true)
            .with_config_source(1)
            .with_is_sensitive(true)
            .with_synonyms(vec![
                synonym(name, value, 1),
                synonym("log.cleanup.policy", "delete", 5),
            ]);
        if v >= 3 {
            c.config_type = 2;
            c.documentation = Some(text("what the setting does"));
        }
        c
    };
    let result = |kind, name, configs| {
        DescribeConfigsResult::default()
            .with_error_code(40)
            .with_error_message(Some(text("partly failed")))
            .with_resource_type(kind)
            .with_resource_name(text(name))
            .with_configs(configs)
    };
    DescribeConfigsResponse::default()
        .with_throttle_time_ms(17)
        .with_results(vec![
            result(
                2,
                "orders",
                vec![
                    config("cleanup.policy", "compact"),
                    config("retention.ms", "3600000"),
                ],
            ),
            result(4, "1", vec![config("log.dirs", "/var/lib/runnel")]),
        ])
        .with_unknown_tagged_fields(unknown_tags::<DescribeConfigsRequest>(v))
}

fn describe_cluster_request(v: i16) -> DescribeClusterRequest {
    let mut r = DescribeClusterRequest::default()
        .with_include_cluster_authorized_operations(true)
        .with_unknown_tagged_fields(unknown_tags::<DescribeClusterRequest>(v));
    if v >= 1 {
        r.endpoint_type = 2;
    }
    if v >= 2 {
        r.include_fenced_brokers = true;
    }
    r
}

fn describe_cluster_response(v: i16) -> DescribeClusterResponse {
    use kafka_protocol::messages::describe_cluster_response::*;
    let broker = |id, host, rack| {
        let b = DescribeClusterBroker::default()
            .with_broker_id(BrokerId(id))
            .with_host(text(host))
            .with_port(9090 + id)
            .with_rack(Some(text(rack)));
        if v >= 2 {
            b.with_is_fenced(true)
        } else {
            b
        }
    };
    let mut r = DescribeClusterResponse::default()
        .with_throttle_time_ms(17)
        .with_error_code(31)
        .with_error_message(Some(text("not authorized")))
        .with_cluster_id(text("runnel-cluster"))
        .with_controller_id(BrokerId(1))
        .with_brokers(vec![
            broker(1, "broker-1.local", "rack-a"),
            broker(2, "broker-2.local", "rack-b"),
        ])
        .with_cluster_authorized_operations(0b0111_0000)
        .with_unknown_tagged_fields(unknown_tags::<DescribeClusterRequest>(v));
    if v >= 1 {
        r.endpoint_type = 2;
    }
    r
}

fn find_coordinator_request(v: i16) -> FindCoordinatorRequest {
    let mut r = FindCoordinatorRequest::default()
        .with_unknown_tagged_fields(unknown_tags::<FindCoordinatorRequest>(v));
    if v <= 3 {
        r.key = text("group-a");
    } else {
        r.coordinator_keys = vec![text("txn-a"), text("txn-b")];
    }
    if v >= 1 {
        r.key_type = 1;
    }
    r
}

fn find_coordinator_response(v: i16) -> FindCoordinatorResponse {
    use kafka_protocol::messages::find_coordinator_response::*;
    let mut r = FindCoordinatorResponse::default()
        .with_unknown_tagged_fields(unknown_tags::<FindCoordinatorRequest>(v));
    if v >= 1 {
        r.throttle_time_ms = 17;
    }
    if v <= 3 {
        r.error_code = 15;
        r.node_id = BrokerId(2);
        r.host = text("broker-2.local");
        r.port = 9092;
        if v >= 1 {
            r.error_message = Some(text("coordinator loading"));
        }
    } else {
        let coordinator = |key, id, host| {
            Coordinator::default()
                .with_key(text(key))
                .with_node_id(BrokerId(id))
                .with_host(text(host))
                .with_port(9090 + id)
                .with_error_code(14 + id as i16)
                .with_error_message(Some(text(key)))
        };
        r.coordinators = vec![
            coordinator("txn-a", 1, "broker-1.local"),
            coordinator("txn-b", 2, "broker-2.local"),
        ];
    }
    r
}

fn offset_commit_request(v: i16) -> OffsetCommitRequest {
    use kafka_protocol::messages::offset_commit_request::*;
    let partition = |index, offset| {
        let p = OffsetCommitRequestPartition::default()
            .with_partition_index(index)
            .with_committed_offset(offset)
            .with_committed_metadata(Some(text(if index == 1 { "meta-1" } else { "meta-n" })));
        if v >= 6 {
            p.with_committed_leader_epoch(6)
        } else {
            p
        }
    };
    let mut r = OffsetCommitRequest::default()
        .with_group_id(group_id("group-a"))
        .with_generation_id_or_member_epoch(7)
        .with_member_id(text("member-1"))
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(topic_name("orders"))
                .with_partitions(vec![partition(1, 100), partition(2, 200)]),
            OffsetCommitRequestTopic::default()
                .with_name(topic_name("payments"))
                .with_partitions(vec![partition(3, 300)]),
        ])
        .with_unknown_tagged_fields(unknown_tags::<OffsetCommitRequest>(v));
    if v <= 4 {
        r.retention_time_ms = 86_400_000;
    }
    if v >= 7 {
        r.group_instance_id = Some(text("instance-1"));
    }
    r
}

fn offset_commit_response(v: i16) -> OffsetCommitResponse {
    use kafka_protocol::messages::offset_commit_response::*;
    let partition = |index, error| {
        OffsetCommitResponsePartition::default()
            .with_partition_index(index)
            .with_error_code(error)
    };
    let topic = |name, id, partitions| {
        let t = OffsetCommitResponseTopic::default().with_partitions(partitions);
        if v >= 10 {
            t.with_topic_id(id)
        } else {
            t.with_name(topic_name(name))
        }
    };
    let mut r = OffsetCommitResponse::default()
        .with_topics(vec![
            topic(
                "orders",
                ORDERS_ID,
                vec![partition(1, 22), partition(2, 25)],
            ),
            topic("payments", PAYMENTS_ID, vec![partition(3, 27)]),
        ])
        .with_unknown_tagged_fields(unknown_tags::<OffsetCommitRequest>(v));
    if v >= 3 {
        r.throttle_time_ms = 17;
    }
    r
}

fn offset_fetch_request(v: i16) -> OffsetFetchRequest {
    use kafka_protocol::messages::offset_fetch_request::*;
    let mut r = OffsetFetchRequest::default()
        .with_unknown_tagged_fields(unknown_tags::<OffsetFetchRequest>(v));
    if v <= 7 {
        let topic = |name, partitions| {
            OffsetFetchRequestTopic::default()
                .with_name(topic_name(name))
                .with_partition_indexes(partitions)
        };
        r.group_id = group_id("group-a");
        r.topics = Some(vec![
            topic("orders", vec![1, 2]),
            topic("payments", vec![3]),
        ]);
    } else {
        let topic = |name, partitions| {
            OffsetFetchRequestTopics::default()
                .with_name(topic_name(name))
                .with_partition_indexes(partitions)
        };
        let group = |id, topics| {
            let g = OffsetFetchRequestGroup::default()
                .with_group_id(group_id(id))
                .with_topics(Some(topics));
            if v >= 9 {
                g.with_member_id(Some(text("member-1")))
                    .with_member_epoch(8)
            } else {
                g
            }
        };
        r.groups = vec![
            group(
                "group-a",
                vec![topic("orders", vec![1, 2]), topic("payments", vec![3])],
            ),
            group("group-b", vec![topic("orders", vec![4])]),
        ];
    }
    if v >= 7 {
        r.require_stable = true;
    }
    r
}

fn offset_fetch_response(v: i16) -> OffsetFetchResponse {
    use kafka_protocol::messages::offset_fetch_response::*;
    let mut r = OffsetFetchResponse::default()
        .with_unknown_tagged_fields(unknown_tags::<OffsetFetchRequest>(v));
    if v >= 3 {
        r.throttle_time_ms = 17;
    }
    if v <= 7 {
        let partition = |index, offset| {
            let p = OffsetFetchResponsePartition::default()
                .with_partition_index(index)
                .with_committed_offset(offset)
                .with_metadata(Some(text(if index == 1 { "meta-1" } else { "meta-n" })))
                .with_error_code(3);
            if v >= 5 {
                p.with_committed_leader_epoch(6)
            } else {
                p
            }
        };
        r.topics = vec![
            OffsetFetchResponseTopic::default()
                .with_name(topic_name("orders"))
                .with_partitions(vec![partition(1, 100), partition(2, 200)]),
            OffsetFetchResponseTopic::default()
                .with_name(topic_name("payments"))
                .with_partitions(vec![partition(3, 300)]),
        ];
        if v >= 2 {
            r.error_code = 14;
        }
    } else {
        let partition = |index, offset| {
            OffsetFetchResponsePartitions::default()
                .with_partition_index(index)
                .with_committed_offset(offset)
                .with_committed_leader_epoch(6)
                .with_metadata(Some(text(if index == 1 { "meta-1" } else { "meta-n" })))
                .with_error_code(3)
        };
        let topic = |name, id, partitions| {
            let t = OffsetFetchResponseTopics::default().with_partitions(partitions);
            if v >= 10 {
                t.with_topic_id(id)
            } else {
                t.with_name(topic_name(name))
            }
        };
        r.groups = vec![
            OffsetFetchResponseGroup::default()
                .with_group_id(group_id("group-a"))
                .with_topics(vec![
                    topic(
                        "orders",
                        ORDERS_ID,
                        vec![partition(1, 100), partition(2, 200)],
                    ),
                    topic("payments", PAYMENTS_ID, vec![partition(3, 300)]),
                ])
                .with_error_code(14),
            OffsetFetchResponseGroup::default()
                .with_group_id(group_id("group-b"))
                .with_topics(vec![topic("orders", ORDERS_ID, vec![partition(4, 400)])])
                .with_error_code(16),
        ];
    }
    r
}

/// OffsetDelete has one version, v0, which is not flexible.
fn offset_delete_request(_v: i16) -> OffsetDeleteRequest {
    use kafka_protocol::messages::offset_delete_request::*;
    let topic = |name, partitions: Vec<i32>| {
        OffsetDeleteRequestTopic::default()
            .with_name(topic_name(name))
            .with_partitions(
                partitions
                    .into_iter()
                    .map(|index| {
                        OffsetDeleteRequestPartition::default().with_partition_index(index)
                    })
                    .collect(),
            )
    };
    OffsetDeleteRequest::default()
        .with_group_id(group_id("group-a"))
        .with_topics(vec![
            topic("orders", vec![1, 2]),
            topic("payments", vec![3]),
        ])
}

fn offset_delete_response(_v: i16) -> OffsetDeleteResponse {
    use kafka_protocol::messages::offset_delete_response::*;
    let partition = |index, error| {
        OffsetDeleteResponsePartition::default()
            .with_partition_index(index)
            .with_error_code(error)
    };
    OffsetDeleteResponse::default()
        .with_error_code(86)
        .with_throttle_time_ms(17)
        .with_topics(vec![
            OffsetDeleteResponseTopic::default()
                .with_name(topic_name("orders"))
                .with_partitions(vec![partition(1, 3), partition(2, 86)]),
            OffsetDeleteResponseTopic::default()
                .with_name(topic_name("payments"))
                .with_partitions(vec![partition(3, 30)]),
        ])
}

fn join_group_request(v: i16) -> JoinGroupRequest {
    use kafka_protocol::messages::join_group_request::*;
    let protocol = |name, metadata| {
        JoinGroupRequestProtocol::default()
            .with_name(text(name))
            .with_metadata(raw(metadata))
    };
    let mut r = JoinGroupRequest::default()
        .with_group_id(group_id("group-a"))
        .with_session_timeout_ms(45_000)
        .with_member_id(text("member-1"))
        .with_protocol_type(text("consumer"))
        .with_protocols(vec![
            protocol("range", b"\x00\x03range-meta"),
            protocol("cooperative-sticky", b"\x00\x03sticky-meta"),
        ])
        .with_unknown_tagged_fields(unknown_tags::<JoinGroupRequest>(v));
    if v >= 1 {
        r.rebalance_timeout_ms = 300_000;
    }
    if v >= 5 {
        r.group_instance_id = Some(text("instance-1"));
    }
    if v >= 8 {
        r.reason = Some(text("rejoining after metadata change"));
    }
    r
}

fn join_group_response(v: i16) -> JoinGroupResponse {
    use kafka_protocol::messages::join_group_response::*;
    let member = |id, instance, metadata| {
        let m = JoinGroupResponseMember::default()
            .with_member_id(text(id))
            .with_metadata(raw(metadata));
        if v >= 5 {
            m.with_group_instance_id(Some(text(instance)))
        } else {
            m
        }
    };
    let mut r = JoinGroupResponse::default()
        .with_error_code(27)
        .with_generation_id(4)
        .with_protocol_name(Some(text("range")))
        .with_leader(text("member-1"))
        .with_member_id(text("member-2"))
        .with_members(vec![
            member("member-1", "instance-1", b"\x00\x03meta-1"),
            member("member-2", "instance-2", b"\x00\x03meta-2"),
        ])
        .with_unknown_tagged_fields(unknown_tags::<JoinGroupRequest>(v));
    if v >= 2 {
        r.throttle_time_ms = 17;
    }
    if v >= 7 {
        r.protocol_type = Some(text("consumer"));
    }
    if v >= 9 {
        r.skip_assignment = true;
    }
    r
}

fn sync_group_request(v: i16) -> SyncGroupRequest {
    use kafka_protocol::messages::sync_group_request::*;
    let assignment = |member, bytes| {
        SyncGroupRequestAssignment::default()
            .with_member_id(text(member))
            .with_assignment(raw(bytes))
    };
    let mut r = SyncGroupRequest::default()
        .with_group_id(group_id("group-a"))
        .with_generation_id(4)
        .with_member_id(text("member-1"))
        .with_assignments(vec![
            assignment("member-1", b"\x00\x03assign-1"),
            assignment("member-2", b"\x00\x03assign-2"),
        ])
        .with_unknown_tagged_fields(unknown_tags::<SyncGroupRequest>(v));
    if v >= 3 {
        r.group_instance_id = Some(text("instance-1"));
    }
    if v >= 5 {
        r.protocol_type = Some(text("consumer"));
        r.protocol_name = Some(text("range"));
    }
    r
}

fn sync_group_response(v: i16) -> SyncGroupResponse {
    let mut r = SyncGroupResponse::default()
        .with_error_code(27)
        .with_assignment(raw(b"\x00\x03assign-1"))
        .with_unknown_tagged_fields(unknown_tags::<SyncGroupRequest>(v));
    if v >= 1 {
        r.throttle_time_ms = 17;
    }
    if v >= 5 {
        r.protocol_type = Some(text("consumer"));
        r.protocol_name = Some(text("range"));
    }
    r
}

fn heartbeat_request(v: i16) -> HeartbeatRequest {
    let r = HeartbeatRequest::default()
        .with_group_id(group_id("group-a"))
        .with_generation_id(4)
        .with_member_id(text("member-1"))
        .with_unknown_tagged_fields(unknown_tags::<HeartbeatRequest>(v));
    if v >= 3 {
        r.with_group_instance_id(Some(text("instance-1")))
    } else {
        r
    }
}

fn heartbeat_response(v: i16) -> HeartbeatResponse {
    let r = HeartbeatResponse::default()
        .with_error_code(27)
        .with_unknown_tagged_fields(unknown_tags::<HeartbeatRequest>(v));
    if v >= 1 {
        r.with_throttle_time_ms(17)
    } else {
        r
    }
}

fn leave_group_request(v: i16) -> LeaveGroupRequest {
    use kafka_protocol::messages::leave_group_request::*;
    let member = |id, instance, reason| {
        let m = MemberIdentity::default()
            .with_member_id(text(id))
            .with_group_instance_id(Some(text(instance)));
        if v >= 5 {
            m.with_reason(Some(text(reason)))
        } else {
            m
        }
    };
    let r = LeaveGroupRequest::default()
        .with_group_id(group_id("group-a"))
        .with_unknown_tagged_fields(unknown_tags::<LeaveGroupRequest>(v));
    if v <= 2 {
        r.with_member_id(text("member-1"))
    } else {
        r.with_members(vec![
            member("member-1", "instance-1", "shutting down"),
            member("member-2", "instance-2", "scaling in"),
        ])
    }
}

fn leave_group_response(v: i16) -> LeaveGroupResponse {
    use kafka_protocol::messages::leave_group_response::*;
    let member = |id, instance, error| {
        MemberResponse::default()
            .with_member_id(text(id))
            .with_group_instance_id(Some(text(instance)))
            .with_error_code(error)
    };
    let mut r = LeaveGroupResponse::default()
        .with_error_code(25)
        .with_unknown_tagged_fields(unknown_tags::<LeaveGroupRequest>(v));
    if v >= 1 {
        r.throttle_time_ms = 17;
    }
    if v >= 3 {
        r.members = vec![
            member("member-1", "instance-1", 25),
            member("member-2", "instance-2", 82),
        ];
    }
    r
}

fn list_groups_request(v: i16) -> ListGroupsRequest {
    let mut r = ListGroupsRequest::default()
        .with_unknown_tagged_fields(unknown_tags::<ListGroupsRequest>(v));
    if v >= 4 {
        r.states_filter = vec![text("Stable"), text("Empty")];
    }
    if v >= 5 {
        r.types_filter = vec![text("classic"), text("consumer")];
    }
    r
}

fn list_groups_response(v: i16) -> ListGroupsResponse {
    use kafka_protocol::messages::list_groups_response::*;
    let group = |id, state, kind| {
        let mut g = ListedGroup::default()
            .with_group_id(group_id(id))
            .with_protocol_type(text("consumer"));
        if v >= 4 {
            g.group_state = text(state);
        }
        if v >= 5 {
            g.group_type = text(kind);
        }
        g
    };
    let mut r = ListGroupsResponse::default()
        .with_error_code(14)
        .with_groups(vec![
            group("group-a", "Stable", "classic"),
            group("group-b", "Empty", "consumer"),
        ])
        .with_unknown_tagged_fields(unknown_tags::<ListGroupsRequest>(v));
    if v >= 1 {
        r.throttle_time_ms = 17;
    }
    r
}

fn describe_groups_request(v: i16) -> DescribeGroupsRequest {
    let r = DescribeGroupsRequest::default()
        .with_groups(vec![group_id("group-a"), group_id("group-b")])
        .with_unknown_tagged_fields(unknown_tags::<DescribeGroupsRequest>(v));
    if v >= 3 {
        r.with_include_authorized_operations(true)
    } else {
        r
    }
}

fn describe_groups_response(v: i16) -> DescribeGroupsResponse {
    use kafka_protocol::messages::describe_groups_response::*;
    let member = |id, instance, host, assignment| {
        let m = DescribedGroupMember::default()
            .with_member_id(text(id))
            .with_client_id(text("client-1"))
            .with_client_host(text(host))
            .with_member_metadata(raw(b"\x00\x03subscription"))
            .with_member_assignment(raw(assignment));
        if v >= 4 {
            m.with_group_instance_id(Some(text(instance)))
        } else {
            m
        }
    };
    let group = |id, state, members| {
        let mut g = DescribedGroup::default()
            .with_error_code(15)
            .with_group_id(group_id(id))
            .with_group_state(text(state))
            .with_protocol_type(text("consumer"))
            .with_protocol_data(text("range"))
            .with_members(members);
        if v >= 3 {
            g.authorized_operations = 0b0111_1000;
        }
        if v >= 6 {
            g.error_message = Some(text("coordinator not available"));
        }
        g
    };
    let mut r = DescribeGroupsResponse::default()
        .with_groups(vec![
            group(
                "group-a",
                "Stable",
                vec![
                    member("member-1", "instance-1", "/10.0.0.1", b"\x00\x03assign-1"),
                    member("member-2", "instance-2", "/10.0.0.2", b"\x00\x03assign-2"),
                ],
            ),
            group(
                "group-b",
                "PreparingRebalance",
                vec![member(
                    "member-3",
                    "instance-3",
                    "/10.0.0.3",
                    b"\x00\x03assign-3",
                )],
            ),
        ])
        .with_unknown_tagged_fields(unknown_tags::<DescribeGroupsRequest>(v));
    if v >= 1 {
        r.throttle_time_ms = 17;
    }
    r
}

fn delete_groups_request(v: i16) -> DeleteGroupsRequest {
    DeleteGroupsRequest::default()
        .with_groups_names(vec![group_id("group-a"), group_id("group-b")])
        .with_unknown_tagged_fields(unknown_tags::<DeleteGroupsRequest>(v))
}

fn delete_groups_response(v: i16) -> DeleteGroupsResponse {
    use kafka_protocol::messages::delete_groups_response::*;
    let result = |id, error| {
        DeletableGroupResult::default()
            .with_group_id(group_id(id))
            .with_error_code(error)
    };
    DeleteGroupsResponse::default()
        .with_throttle_time_ms(17)
        .with_results(vec![result("group-a", 68), result("group-b", 69)])
        .with_unknown_tagged_fields(unknown_tags::<DeleteGroupsRequest>(v))
}

fn init_producer_id_request(v: i16) -> InitProducerIdRequest {
    let mut r = InitProducerIdRequest::default()
        .with_transactional_id(Some(txn_id("txn-a")))
        .with_transaction_timeout_ms(60_000)
        .with_unknown_tagged_fields(unknown_tags::<InitProducerIdRequest>(v));
    if v >= 3 {
        r.producer_id = ProducerId(9001);
        r.producer_epoch = 3;
    }
    r
}

fn init_producer_id_response(v: i16) -> InitProducerIdResponse {
    let mut r = InitProducerIdResponse::default()
        .with_throttle_time_ms(17)
        .with_error_code(47)
        .with_producer_id(ProducerId(9001))
        .with_producer_epoch(4)
        .with_unknown_tagged_fields(unknown_tags::<InitProducerIdRequest>(v));
    if v >= 6 {
        r.ongoing_txn_producer_id = ProducerId(9000);
        r.ongoing_txn_producer_epoch = 2;
    }
    r
}

fn add_partitions_to_txn_request(v: i16) -> AddPartitionsToTxnRequest {
    use kafka_protocol::messages::add_partitions_to_txn_request::*;
    let topics = || {
        vec![
            AddPartitionsToTxnTopic::default()
                .with_name(topic_name("orders"))
                .with_partitions(vec![1, 2]),
            AddPartitionsToTxnTopic::default()
                .with_name(topic_name("payments"))
                .with_partitions(vec![3]),
        ]
    };
    let r = AddPartitionsToTxnRequest::default()
        .with_unknown_tagged_fields(unknown_tags::<AddPartitionsToTxnRequest>(v));
    if v <= 3 {
        r.with_v3_and_below_transactional_id(txn_id("txn-a"))
            .with_v3_and_below_producer_id(ProducerId(9001))
            .with_v3_and_below_producer_epoch(3)
            .with_v3_and_below_topics(topics())
    } else {
        let transaction = |id, producer| {
            AddPartitionsToTxnTransaction::default()
                .with_transactional_id(txn_id(id))
                .with_producer_id(ProducerId(producer))
                .with_producer_epoch(3)
                .with_verify_only(true)
                .with_topics(topics())
        };
        r.with_transactions(vec![transaction("txn-a", 9001), transaction("txn-b", 9002)])
    }
}

fn add_partitions_to_txn_response(v: i16) -> AddPartitionsToTxnResponse {
    use kafka_protocol::messages::add_partitions_to_txn_response::*;
    let partition = |index, error| {
        AddPartitionsToTxnPartitionResult::default()
            .with_partition_index(index)
            .with_partition_error_code(error)
    };
    let topics = || {
        vec![
            AddPartitionsToTxnTopicResult::default()
                .with_name(topic_name("orders"))
                .with_results_by_partition(vec![partition(1, 48), partition(2, 53)]),
            AddPartitionsToTxnTopicResult::default()
                .with_name(topic_name("payments"))
                .with_results_by_partition(vec![partition(3, 3)]),
        ]
    };
    let r = AddPartitionsToTxnResponse::default()
        .with_throttle_time_ms(17)
        .with_unknown_tagged_fields(unknown_tags::<AddPartitionsToTxnRequest>(v));
    if v <= 3 {
        r.with_results_by_topic_v3_and_below(topics())
    } else {
        let result = |id| {
            AddPartitionsToTxnResult::default()
                .with_transactional_id(txn_id(id))
                .with_topic_results(topics())
        };
        r.with_error_code(48)
            .with_results_by_transaction(vec![result("txn-a"), result("txn-b")])
    }
}

fn add_offsets_to_txn_request(v: i16) -> AddOffsetsToTxnRequest {
    AddOffsetsToTxnRequest::default()
        .with_transactional_id(txn_id("txn-a"))
        .with_producer_id(ProducerId(9001))
        .with_producer_epoch(3)
        .with_group_id(group_id("group-a"))
        .with_unknown_tagged_fields(unknown_tags::<AddOffsetsToTxnRequest>(v))
}

fn add_offsets_to_txn_response(v: i16) -> AddOffsetsToTxnResponse {
    AddOffsetsToTxnResponse::default()
        .with_throttle_time_ms(17)
        .with_error_code(47)
        .with_unknown_tagged_fields(unknown_tags::<AddOffsetsToTxnRequest>(v))
}

fn txn_offset_commit_request(v: i16) -> TxnOffsetCommitRequest {
    use kafka_protocol::messages::txn_offset_commit_request::*;
    let partition = |index, offset| {
        let p = TxnOffsetCommitRequestPartition::default()
            .with_partition_index(index)
            .with_committed_offset(offset)
            .with_committed_metadata(Some(text(if index == 1 { "meta-1" } else { "meta-n" })));
        if v >= 2 {
            p.with_committed_leader_epoch(6)
        } else {
            p
        }
    };
    let mut r = TxnOffsetCommitRequest::default()
        .with_transactional_id(txn_id("txn-a"))
        .with_group_id(group_id("group-a"))
        .with_producer_id(ProducerId(9001))
        .with_producer_epoch(3)
        .with_topics(vec![
            TxnOffsetCommitRequestTopic::default()
                .with_name(topic_name("orders"))
                .with_partitions(vec![partition(1, 100), partition(2, 200)]),
            TxnOffsetCommitRequestTopic::default()
                .with_name(topic_name("payments"))
                .with_partitions(vec![partition(3, 300)]),
        ])
        .with_unknown_tagged_fields(unknown_tags::<TxnOffsetCommitRequest>(v));
    if v >= 3 {
        r.generation_id = 4;
        r.member_id = text("member-1");
        r.group_instance_id = Some(text("instance-1"));
    }
    r
}

fn txn_offset_commit_response(v: i16) -> TxnOffsetCommitResponse {
    use kafka_protocol::messages::txn_offset_commit_response::*;
    let partition = |index, error| {
        TxnOffsetCommitResponsePartition::default()
            .with_partition_index(index)
            .with_error_code(error)
    };
    TxnOffsetCommitResponse::default()
        .with_throttle_time_ms(17)
        .with_topics(vec![
            TxnOffsetCommitResponseTopic::default()
                .with_name(topic_name("orders"))
                .with_partitions(vec![partition(1, 22), partition(2, 25)]),
            TxnOffsetCommitResponseTopic::default()
                .with_name(topic_name("payments"))
                .with_partitions(vec![partition(3, 27)]),
        ])
        .with_unknown_tagged_fields(unknown_tags::<TxnOffsetCommitRequest>(v))
}

fn end_txn_request(v: i16) -> EndTxnRequest {
    EndTxnRequest::default()
        .with_transactional_id(txn_id("txn-a"))
        .with_producer_id(ProducerId(9001))
        .with_producer_epoch(3)
        .with_committed(true)
        .with_unknown_tagged_fields(unknown_tags::<EndTxnRequest>(v))
}

fn end_txn_response(v: i16) -> EndTxnResponse {
    let mut r = EndTxnResponse::default()
        .with_throttle_time_ms(17)
        .with_error_code(48)
        .with_unknown_tagged_fields(unknown_tags::<EndTxnRequest>(v));
    if v >= 5 {
        r.producer_id = ProducerId(9001);
        r.producer_epoch = 4;
    }
    r
}

fn list_transactions_request(v: i16) -> ListTransactionsRequest {
    let mut r = ListTransactionsRequest::default()
        .with_state_filters(vec![text("Ongoing"), text("PrepareCommit")])
        .with_producer_id_filters(vec![ProducerId(9001), ProducerId(9002)])
        .with_unknown_tagged_fields(unknown_tags::<ListTransactionsRequest>(v));
    if v >= 1 {
        r.duration_filter = 60_000;
    }
    if v >= 2 {
        r.transactional_id_pattern = Some(text("txn-.*"));
    }
    r
}

fn list_transactions_response(v: i16) -> ListTransactionsResponse {
    use kafka_protocol::messages::list_transactions_response::*;
    let state = |id, producer, state| {
        TransactionState::default()
            .with_transactional_id(txn_id(id))
            .with_producer_id(ProducerId(producer))
            .with_transaction_state(text(state))
    };
    ListTransactionsResponse::default()
        .with_throttle_time_ms(17)
        .with_error_code(15)
        .with_unknown_state_filters(vec![text("Bogus"), text("Other")])
        .with_transaction_states(vec![
            state("txn-a", 9001, "Ongoing"),
            state("txn-b", 9002, "PrepareCommit"),
        ])
        .with_unknown_tagged_fields(unknown_tags::<ListTransactionsRequest>(v))
}

fn describe_transactions_request(v: i16) -> DescribeTransactionsRequest {
    DescribeTransactionsRequest::default()
        .with_transactional_ids(vec![txn_id("txn-a"), txn_id("txn-b")])
        .with_unknown_tagged_fields(unknown_tags::<DescribeTransactionsRequest>(v))
}

fn describe_transactions_response(v: i16) -> DescribeTransactionsResponse {
    use kafka_protocol::messages::describe_transactions_response::*;
    let state = |id, producer, topics| {
        TransactionState::default()
            .with_error_code(15)
            .with_transactional_id(txn_id(id))
            .with_transaction_state(text("Ongoing"))
            .with_transaction_timeout_ms(60_000)
            .with_transaction_start_time_ms(1_700_000_000_000 + producer)
            .with_producer_id(ProducerId(producer))
            .with_producer_epoch(3)
            .with_topics(topics)
    };
    let topic = |name, partitions| {
        TopicData::default()
            .with_topic(topic_name(name))
            .with_partitions(partitions)
    };
    DescribeTransactionsResponse::default()
        .with_throttle_time_ms(17)
        .with_transaction_states(vec![
            state(
                "txn-a",
                9001,
                vec![topic("orders", vec![1, 2]), topic("payments", vec![3])],
            ),
            state("txn-b", 9002, vec![topic("orders", vec![4])]),
        ])
        .with_unknown_tagged_fields(unknown_tags::<DescribeTransactionsRequest>(v))
}

fn elect_leaders_request(v: i16) -> ElectLeadersRequest {
    use kafka_protocol::messages::elect_leaders_request::*;
    let mut r = ElectLeadersRequest::default()
        .with_topic_partitions(Some(vec![
            TopicPartitions::default().with_topic(topic_name("orders")).with_partitions(vec![0, 1]),
            TopicPartitions::default().with_topic(topic_name("payments")).with_partitions(vec![2]),
        ]))
        .with_timeout_ms(30_000)
        .with_unknown_tagged_fields(unknown_tags::<ElectLeadersRequest>(v));
    if v >= 1 {
        r.election_type = 1;
    }
    r
}

fn elect_leaders_response(v: i16) -> ElectLeadersResponse {
    use kafka_protocol::messages::elect_leaders_response::*;
    let partition = |id, code, message| PartitionResult::default().with_partition_id(id).with_error_code(code).with_error_message(message);
    let mut r = ElectLeadersResponse::default()
        .with_throttle_time_ms(17)
        .with_replica_election_results(vec![
            ReplicaElectionResult::default()
                .with_topic(topic_name("orders"))
                .with_partition_result(vec![partition(0, 0, None), partition(1, 84, Some(text("not needed")))]),
            ReplicaElectionResult::default().with_topic(topic_name("payments")).with_partition_result(vec![partition(2, 80, Some(text("not in sync")))]),
        ])
        .with_unknown_tagged_fields(unknown_tags::<ElectLeadersRequest>(v));
    if v >= 1 {
        r.error_code = 41;
    }
    r
}

fn alter_partition_reassignments_request(v: i16) -> AlterPartitionReassignmentsRequest {
    use kafka_protocol::messages::alter_partition_reassignments_request::*;
    let partition = |index, replicas: Option<Vec<i32>>| {
        ReassignablePartition::default()
            .with_partition_index(index)
            .with_replicas(replicas.map(|r| r.into_iter().map(BrokerId).collect()))
    };
    let mut r = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![
            ReassignableTopic::default()
                .with_name(topic_name("orders"))
                .with_partitions(vec![partition(0, Some(vec![4, 2, 1])), partition(1, None)]),
            ReassignableTopic::default().with_name(topic_name("payments")).with_partitions(vec![partition(2, Some(vec![3]))]),
        ])
        .with_unknown_tagged_fields(unknown_tags::<AlterPartitionReassignmentsRequest>(v));
    if v >= 1 {
        r.allow_replication_factor_change = false;
    }
    r
}

fn alter_partition_reassignments_response(v: i16) -> AlterPartitionReassignmentsResponse {
    use kafka_protocol::messages::alter_partition_reassignments_response::*;
    let partition = |index, code, message| {
        ReassignablePartitionResponse::default()
            .with_partition_index(index)
            .with_error_code(code)
            .with_error_message(message)
    };
    let mut r = AlterPartitionReassignmentsResponse::default()
        .with_throttle_time_ms(17)
        .with_error_code(41)
        .with_error_message(Some(text("not controller")))
        .with_responses(vec![
            ReassignableTopicResponse::default()
                .with_name(topic_name("orders"))
                .with_partitions(vec![partition(0, 0, None), partition(1, 85, Some(text("no reassignment")))]),
            ReassignableTopicResponse::default().with_name(topic_name("payments")).with_partitions(vec![partition(2, 39, Some(text("bad")))]),
        ])
        .with_unknown_tagged_fields(unknown_tags::<AlterPartitionReassignmentsRequest>(v));
    if v >= 1 {
        r.allow_replication_factor_change = false;
    }
    r
}

fn list_partition_reassignments_request(v: i16) -> ListPartitionReassignmentsRequest {
    use kafka_protocol::messages::list_partition_reassignments_request::*;
    ListPartitionReassignmentsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(Some(vec![
            ListPartitionReassignmentsTopics::default().with_name(topic_name("orders")).with_partition_indexes(vec![0, 1]),
            ListPartitionReassignmentsTopics::default().with_name(topic_name("payments")).with_partition_indexes(vec![2]),
        ]))
        .with_unknown_tagged_fields(unknown_tags::<ListPartitionReassignmentsRequest>(v))
}

fn list_partition_reassignments_response(v: i16) -> ListPartitionReassignmentsResponse {
    use kafka_protocol::messages::list_partition_reassignments_response::*;
    let ids = |r: &[i32]| r.iter().copied().map(BrokerId).collect::<Vec<_>>();
    let partition = |index, replicas: &[i32], adding: &[i32], removing: &[i32]| {
        OngoingPartitionReassignment::default()
            .with_partition_index(index)
            .with_replicas(ids(replicas))
            .with_adding_replicas(ids(adding))
            .with_removing_replicas(ids(removing))
    };
    ListPartitionReassignmentsResponse::default()
        .with_throttle_time_ms(17)
        .with_error_code(41)
        .with_error_message(Some(text("not controller")))
        .with_topics(vec![
            OngoingTopicReassignment::default()
                .with_name(topic_name("orders"))
                .with_partitions(vec![partition(0, &[4, 2, 1, 3], &[4], &[3]), partition(1, &[5, 6], &[6], &[])]),
            OngoingTopicReassignment::default().with_name(topic_name("payments")).with_partitions(vec![partition(2, &[3, 1], &[3], &[1])]),
        ])
        .with_unknown_tagged_fields(unknown_tags::<ListPartitionReassignmentsRequest>(v))
}

fn unregister_broker_request(v: i16) -> UnregisterBrokerRequest {
    UnregisterBrokerRequest::default()
        .with_broker_id(BrokerId(4))
        .with_unknown_tagged_fields(unknown_tags::<UnregisterBrokerRequest>(v))
}

fn unregister_broker_response(v: i16) -> UnregisterBrokerResponse {
    UnregisterBrokerResponse::default()
        .with_throttle_time_ms(17)
        .with_error_code(102)
        .with_error_message(Some(text("broker 4 is not registered")))
        .with_unknown_tagged_fields(unknown_tags::<UnregisterBrokerRequest>(v))
}

fn add_raft_voter_request(v: i16) -> AddRaftVoterRequest {
    AddRaftVoterRequest::default()
        .with_cluster_id(Some(text("golden-cluster")))
        .with_timeout_ms(30_000)
        .with_voter_id(4)
        .with_voter_directory_id(Uuid::from_u128(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10))
        .with_listeners(vec![kafka_protocol::messages::add_raft_voter_request::Listener::default()
            .with_name(text("CONTROLLER"))
            .with_host(text("h4"))
            .with_port(9093)])
        .with_unknown_tagged_fields(unknown_tags::<AddRaftVoterRequest>(v))
}

fn add_raft_voter_response(v: i16) -> AddRaftVoterResponse {
    AddRaftVoterResponse::default()
        .with_throttle_time_ms(17)
        .with_error_code(126)
        .with_error_message(Some(text("voter 4: node 4 is a controller voter already")))
        .with_unknown_tagged_fields(unknown_tags::<AddRaftVoterRequest>(v))
}

fn remove_raft_voter_request(v: i16) -> RemoveRaftVoterRequest {
    RemoveRaftVoterRequest::default()
        .with_cluster_id(Some(text("golden-cluster")))
        .with_voter_id(1)
        .with_voter_directory_id(Uuid::from_u128(0x1112_1314_1516_1718_191a_1b1c_1d1e_1f20))
        .with_unknown_tagged_fields(unknown_tags::<RemoveRaftVoterRequest>(v))
}

fn remove_raft_voter_response(v: i16) -> RemoveRaftVoterResponse {
    RemoveRaftVoterResponse::default()
        .with_throttle_time_ms(17)
        .with_error_code(127)
        .with_error_message(Some(text("voter 1: node 1 is not a controller voter")))
        .with_unknown_tagged_fields(unknown_tags::<RemoveRaftVoterRequest>(v))
}

fn describe_quorum_request(v: i16) -> DescribeQuorumRequest {
    use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
    DescribeQuorumRequest::default()
        .with_topics(vec![TopicData::default()
            .with_topic_name(TopicName(text("__cluster_metadata")))
            .with_partitions(vec![PartitionData::default().with_partition_index(0)])])
        .with_unknown_tagged_fields(unknown_tags::<DescribeQuorumRequest>(v))
}

fn describe_quorum_response(v: i16) -> DescribeQuorumResponse {
    use kafka_protocol::messages::describe_quorum_response::{Listener, Node, PartitionData, ReplicaState, TopicData};
    let replica = |id: i32, end: i64| {
        let r = ReplicaState::default().with_replica_id(BrokerId(id)).with_log_end_offset(end);
        let r = if v >= 1 { r.with_last_fetch_timestamp(1_700_000_000_000).with_last_caught_up_timestamp(1_700_000_000_000 - i64::from(id)) } else { r };
        if v >= 2 { r.with_replica_directory_id(Uuid::from_u128(u128::from(id.unsigned_abs()))) } else { r }
    };
    let response = DescribeQuorumResponse::default()
        .with_error_code(0)
        .with_topics(vec![TopicData::default().with_topic_name(TopicName(text("__cluster_metadata"))).with_partitions(vec![
            PartitionData::default()
                .with_partition_index(0)
                .with_error_code(0)
                .with_leader_id(BrokerId(2))
                .with_leader_epoch(7)
                .with_high_watermark(1234)
                .with_current_voters(vec![replica(1, 1234), replica(2, 1240), replica(3, -1)])
                .with_observers(vec![replica(4, 1200)]),
        ])]);
    let response = if v >= 2 {
        response
            .with_error_message(Some(text("")))
            .with_nodes(vec![Node::default().with_node_id(BrokerId(2)).with_listeners(vec![Listener::default()
                .with_name(text("RAFT"))
                .with_host(text("h2"))
                .with_port(19092)])])
    } else {
        response
    };
    response.with_unknown_tagged_fields(unknown_tags::<DescribeQuorumRequest>(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    /// Every advertised (api, version) except those coded by hand in `protocol::legacy`,
    /// which kafka-protocol cannot encode.
    fn versions() -> impl Iterator<Item = (ApiKey, i16)> {
        versions::SUPPORTED
            .iter()
            .flat_map(|&(api, r)| (r.min..=r.max).map(move |version| (api, version)))
            .filter(|&(api, version)| !legacy::is_legacy(api, version))
    }

    #[test]
    fn every_advertised_api_has_samples() {
        for (api, _) in versions::SUPPORTED {
            assert!(COVERED.contains(api), "no samples for {api:?}");
        }
    }

    fn encode_request(request: &RequestKind, api: ApiKey, version: i16) -> Bytes {
        let mut buf = BytesMut::new();
        request
            .encode(&mut buf, version)
            .unwrap_or_else(|e| panic!("encoding {api:?} request v{version}: {e:#}"));
        buf.freeze()
    }

    fn encode_response(response: &ResponseKind, api: ApiKey, version: i16) -> Bytes {
        let mut buf = BytesMut::new();
        response
            .encode(&mut buf, version)
            .unwrap_or_else(|e| panic!("encoding {api:?} response v{version}: {e:#}"));
        buf.freeze()
    }

    /// Request bodies that have no fields at all at this version, so no sample can differ
    /// from the default there: ApiVersions v0-2 and ListGroups v0-2 (flexible versions have at
    /// least the tag buffer, which carries the unknown tag).
    fn request_body_is_empty(api: ApiKey, version: i16) -> bool {
        matches!(
            (api, version),
            (ApiKey::ApiVersions, 0..=2) | (ApiKey::ListGroups, 0..=2)
        )
    }

    #[test]
    fn every_sample_round_trips_through_encode_and_decode() {
        for (api, version) in versions() {
            let sample = request(api, version);
            let mut bytes = encode_request(&sample, api, version);
            let decoded = RequestKind::decode(api, &mut bytes, version)
                .unwrap_or_else(|e| panic!("decoding {api:?} request v{version}: {e:#}"));
            assert_eq!(decoded, sample, "{api:?} request v{version}");
            assert!(
                bytes.is_empty(),
                "{api:?} request v{version} left {} bytes",
                bytes.len()
            );

            let sample = response(api, version);
            let mut bytes = encode_response(&sample, api, version);
            let decoded = ResponseKind::decode(api, &mut bytes, version)
                .unwrap_or_else(|e| panic!("decoding {api:?} response v{version}: {e:#}"));
            assert_eq!(decoded, sample, "{api:?} response v{version}");
            assert!(
                bytes.is_empty(),
                "{api:?} response v{version} left {} bytes",
                bytes.len()
            );
        }
    }

    #[test]
    fn every_sample_encodes_differently_from_the_default_message() {
        for (api, version) in versions() {
            let sample = encode_request(&request(api, version), api, version);
            let default = encode_request(&default_request(api), api, version);
            if request_body_is_empty(api, version) {
                assert!(
                    sample.is_empty(),
                    "{api:?} request v{version} was expected to be empty"
                );
            } else {
                assert_ne!(
                    sample, default,
                    "{api:?} request v{version} encodes like the default"
                );
            }

            let sample = encode_response(&response(api, version), api, version);
            let default = encode_response(&default_response(api), api, version);
            assert_ne!(
                sample, default,
                "{api:?} response v{version} encodes like the default"
            );
        }
    }

    #[test]
    fn legacy_versions_take_the_sample_of_the_version_they_are_decoded_as() {
        for (api, version) in [(ApiKey::DescribeConfigs, 0), (ApiKey::OffsetCommit, 1), (ApiKey::Produce, 2)] {
            let body_version = legacy::body_version(api, version);
            assert!(version < api.valid_versions().min, "{api:?} v{version} is not legacy any more");
            assert_eq!(request(api, version), request(api, body_version));
            assert_eq!(response(api, version), response(api, body_version));
        }
    }

    #[test]
    #[should_panic(expected = "Runnel advertises v4-17")]
    fn versions_outside_the_advertised_range_have_no_sample() {
        request(ApiKey::Fetch, 18);
    }
}
