//! End-to-end tests over the wire against the real binary, with a minimal client built on
//! `kafka-protocol`. The stock-client tests live in `compat/`, and every error path a client
//! can provoke (bad frames, bad batches, bad names) in `protocol-tests/tests/errors.rs`;
//! these pin protocol details (fallback encodings, restart and crash behaviour) precisely.

mod common;

use bytes::Bytes;
use common::{batch, create_topic, produce, proc_status_kib, s, Broker, Client};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::*;
use kafka_protocol::records::{Compression, RecordBatchDecoder};

/// A fetched record: offset, key, value, timestamp.
type Fetched = (i64, Option<Bytes>, Option<Bytes>, i64);

fn fetch_all(c: &mut Client, topic: &str, partition: i32, offset: i64) -> (i16, i64, Vec<Fetched>) {
    let req = FetchRequest::default()
        .with_max_wait_ms(100)
        .with_min_bytes(1)
        .with_max_bytes(50 * 1024 * 1024)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(s(topic)))
            .with_partitions(vec![FetchPartition::default().with_partition(partition).with_fetch_offset(offset).with_partition_max_bytes(10 * 1024 * 1024).with_current_leader_epoch(-1)])]);
    let resp = match c.request(ApiKey::Fetch, 12, RequestKind::Fetch(req)) {
        ResponseKind::Fetch(r) => r,
        other => panic!("{other:?}"),
    };
    let p = &resp.responses[0].partitions[0];
    let mut out = Vec::new();
    if let Some(mut records) = p.records.clone() {
        for set in RecordBatchDecoder::decode_all(&mut records).expect("decode fetched batches") {
            for r in set.records {
                out.push((r.offset, r.key, r.value, r.timestamp));
            }
        }
    }
    (p.error_code, p.high_watermark, out)
}

fn list_offset(c: &mut Client, topic: &str, partition: i32, ts: i64) -> (i16, i64, i64) {
    common::list_offsets(c, 7, topic, partition, ts)
}

#[test]
fn api_versions_advertises_produce_and_falls_back_for_future_versions() {
    let b = Broker::start(&[]);
    let mut c = b.client();
    match c.request(ApiKey::ApiVersions, 3, RequestKind::ApiVersions(ApiVersionsRequest::default().with_client_software_name(s("t")).with_client_software_version(s("1")))) {
        ResponseKind::ApiVersions(r) => {
            assert_eq!(r.error_code, 0);
            assert!(r.api_keys.iter().any(|k| k.api_key == ApiKey::Produce as i16 && k.max_version == 13));
        }
        other => panic!("{other:?}"),
    }
    // A version from the future: UNSUPPORTED_VERSION (35) in a v0 body with header v0.
    let frame = c.encode_request(ApiKey::ApiVersions, 3, &RequestKind::ApiVersions(ApiVersionsRequest::default()));
    let mut patched = frame.clone();
    patched[2..4].copy_from_slice(&77i16.to_be_bytes());
    c.send_raw(&patched);
    let mut resp = c.read_frame().expect("fallback response");
    let _header = <ResponseHeader as kafka_protocol::protocol::Decodable>::decode(&mut resp, 0).expect("header v0");
    let body = <ApiVersionsResponse as kafka_protocol::protocol::Decodable>::decode(&mut resp, 0).expect("v0 body");
    assert_eq!(body.error_code, 35);
    assert!(body.api_keys.iter().any(|k| k.api_key == ApiKey::ApiVersions as i16 && k.max_version == 4));
}

#[test]
fn produced_batches_come_back_with_contiguous_offsets_in_every_codec() {
    let b = Broker::start(&[]);
    let mut c = b.client();
    let r = create_topic(&mut c, "codecs", 2, &[]);
    assert_eq!(r.topics[0].error_code, 0, "{:?}", r.topics[0].error_message);
    let mut expected = Vec::new();
    let mut next = 0i64;
    for (i, codec) in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd].into_iter().enumerate() {
        let recs: Vec<(Option<String>, String, i64)> = (0..3).map(|j| (Some(format!("k{i}{j}")), format!("v{i}{j}"), 1_700_000_000_000 + (i * 3 + j) as i64)).collect();
        let refs: Vec<(Option<&str>, &str, i64)> = recs.iter().map(|(k, v, t)| (k.as_deref(), v.as_str(), *t)).collect();
        let resp = produce(&mut c, 9, "codecs", 1, batch(&refs, codec), -1).expect("response");
        assert_eq!(resp.error_code, 0, "{codec:?}: {:?}", resp.error_message);
        assert_eq!(resp.base_offset, next, "{codec:?}");
        for (k, v, t) in recs {
            expected.push((next, k, v, t));
            next += 1;
        }
    }
    let (err, hw, got) = fetch_all(&mut c, "codecs", 1, 0);
    assert_eq!(err, 0);
    assert_eq!(hw, next);
    assert_eq!(got.len(), expected.len());
    for ((off, k, v, ts), (eo, ek, ev, ets)) in got.iter().zip(expected.iter()) {
        assert_eq!(off, eo);
        assert_eq!(k.as_deref(), ek.as_deref().map(str::as_bytes));
        assert_eq!(v.as_deref(), Some(ev.as_bytes()));
        assert_eq!(ts, ets);
    }
    // Fetching from the middle of a batch returns that whole batch; clients skip to the offset.
    let (_, _, mid) = fetch_all(&mut c, "codecs", 1, 4);
    assert!(mid.iter().any(|(o, ..)| *o == 4));
    // ListOffsets: earliest, latest, by timestamp (exact record), max timestamp.
    assert_eq!(list_offset(&mut c, "codecs", 1, -2), (0, 0, -1));
    assert_eq!(list_offset(&mut c, "codecs", 1, -1), (0, next, -1));
    assert_eq!(list_offset(&mut c, "codecs", 1, 1_700_000_000_004), (0, 4, 1_700_000_000_004));
    assert_eq!(list_offset(&mut c, "codecs", 1, -3), (0, next - 1, 1_700_000_000_014));
    assert_eq!(list_offset(&mut c, "codecs", 1, 1_800_000_000_000).1, -1);
    // The other partition is untouched.
    assert_eq!(list_offset(&mut c, "codecs", 0, -1), (0, 0, -1));
}

#[test]
fn acks_zero_gets_no_response_but_later_responses_keep_order() {
    let b = Broker::start(&[]);
    let mut c = b.client();
    create_topic(&mut c, "acks0", 1, &[]);
    assert!(produce(&mut c, 9, "acks0", 0, batch(&[(None, "a", 1)], Compression::None), 0).is_none());
    let r = produce(&mut c, 9, "acks0", 0, batch(&[(None, "b", 2)], Compression::None), 1).expect("response");
    assert_eq!((r.error_code, r.base_offset), (0, 1));
}

fn metadata_for(c: &mut Client, topic: &str, allow_auto: bool) -> metadata_response::MetadataResponseTopic {
    let req = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(TopicName(s(topic))))]))
        .with_allow_auto_topic_creation(allow_auto);
    match c.request(ApiKey::Metadata, 12, RequestKind::Metadata(req)) {
        ResponseKind::Metadata(m) => m.topics[0].clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn metadata_auto_creates_topics_only_when_enabled() {
    let on = Broker::start(&[]);
    let mut c = on.client();
    let t = metadata_for(&mut c, "auto-on", true);
    assert_eq!(t.error_code, 0);
    assert!(!t.topic_id.is_nil());
    assert_eq!(t.partitions.len(), 1);
    assert_eq!(t.partitions[0].leader_id.0, 1);
    // The client may refuse auto-creation even when the broker allows it.
    assert_eq!(metadata_for(&mut c, "not-asked", false).error_code, 3);

    let off = Broker::start(&["--auto-create-topics-enable", "false"]);
    let mut c = off.client();
    assert_eq!(metadata_for(&mut c, "auto-off", true).error_code, 3);
}

#[test]
fn clean_restart_keeps_topics_ids_configs_and_records() {
    let mut b = Broker::start(&[]);
    let mut c = b.client();
    let created = create_topic(&mut c, "durable", 3, &[("retention.ms", "3600000")]);
    let id = created.topics[0].topic_id;
    for p in 0..3 {
        for i in 0..5 {
            let r = produce(&mut c, 9, "durable", p, batch(&[(Some("k"), &format!("p{p}-{i}"), 10 + i)], Compression::None), -1).expect("resp");
            assert_eq!((r.error_code, r.base_offset), (0, i));
        }
    }
    drop(c);
    assert_eq!(b.stop(), Some(0), "SIGTERM exits 0");
    b.restart();
    let mut c = b.client();
    let t = metadata_for(&mut c, "durable", false);
    assert_eq!(t.topic_id, id);
    assert_eq!(t.partitions.len(), 3);
    for p in 0..3 {
        let (err, hw, recs) = fetch_all(&mut c, "durable", p, 0);
        assert_eq!((err, hw, recs.len()), (0, 5, 5));
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(r.2.as_deref(), Some(format!("p{p}-{i}").as_bytes()));
        }
        // New writes continue the offsets.
        let r = produce(&mut c, 9, "durable", p, batch(&[(None, "after", 99)], Compression::None), -1).expect("resp");
        assert_eq!((r.error_code, r.base_offset), (0, 5));
    }
    let req = DescribeConfigsRequest::default().with_resources(vec![describe_configs_request::DescribeConfigsResource::default()
        .with_resource_type(2)
        .with_resource_name(s("durable"))
        .with_configuration_keys(None)]);
    match c.request(ApiKey::DescribeConfigs, 4, RequestKind::DescribeConfigs(req)) {
        ResponseKind::DescribeConfigs(r) => {
            let cfg = &r.results[0].configs;
            let ret = cfg.iter().find(|x| x.name.as_str() == "retention.ms").expect("retention.ms");
            assert_eq!(ret.value.as_deref(), Some("3600000"));
            assert_eq!(ret.config_source, 1, "DYNAMIC_TOPIC_CONFIG");
            let cp = cfg.iter().find(|x| x.name.as_str() == "cleanup.policy").expect("cleanup.policy");
            assert_eq!((cp.value.as_deref(), cp.config_source), (Some("delete"), 5));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn kill_nine_keeps_every_acknowledged_record() {
    let mut b = Broker::start(&[]);
    let mut c = b.client();
    create_topic(&mut c, "crash", 1, &[]);
    let mut acked = Vec::new();
    for i in 0..200 {
        let r = produce(&mut c, 9, "crash", 0, batch(&[(None, &format!("m{i}"), i)], Compression::None), -1).expect("resp");
        assert_eq!(r.error_code, 0);
        acked.push((r.base_offset, format!("m{i}")));
    }
    b.kill9();
    b.restart();
    let mut c = b.client();
    let mut got = Vec::new();
    let mut offset = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while got.len() < acked.len() && std::time::Instant::now() < deadline {
        let (err, _, recs) = fetch_all(&mut c, "crash", 0, offset);
        assert_eq!(err, 0);
        for r in recs {
            if r.0 >= offset {
                offset = r.0 + 1;
                got.push((r.0, String::from_utf8_lossy(r.2.as_deref().unwrap_or_default()).to_string()));
            }
        }
    }
    assert_eq!(got, acked);
}

#[test]
fn delete_topics_by_name_removes_it() {
    let b = Broker::start(&[]);
    let mut c = b.client();
    create_topic(&mut c, "doomed", 2, &[]);
    let req = DeleteTopicsRequest::default().with_topic_names(vec![TopicName(s("doomed"))]).with_timeout_ms(5000);
    match c.request(ApiKey::DeleteTopics, 5, RequestKind::DeleteTopics(req)) {
        ResponseKind::DeleteTopics(r) => assert_eq!(r.responses[0].error_code, 0),
        other => panic!("{other:?}"),
    }
    assert_eq!(metadata_for(&mut c, "doomed", false).error_code, 3);
    // Deleting again: UNKNOWN_TOPIC_OR_PARTITION.
    let req = DeleteTopicsRequest::default().with_topic_names(vec![TopicName(s("doomed"))]).with_timeout_ms(5000);
    match c.request(ApiKey::DeleteTopics, 5, RequestKind::DeleteTopics(req)) {
        ResponseKind::DeleteTopics(r) => assert_eq!(r.responses[0].error_code, 3),
        other => panic!("{other:?}"),
    }
    assert!(!b.data_dir().join("partitions/doomed-0").exists());
}

fn offset_for_epoch(c: &mut Client, topic: &str, epoch: i32, current: i32) -> (i16, i32, i64) {
    use kafka_protocol::messages::offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
    let req = OffsetForLeaderEpochRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![OffsetForLeaderTopic::default()
        .with_topic(TopicName(s(topic)))
        .with_partitions(vec![OffsetForLeaderPartition::default().with_partition(0).with_leader_epoch(epoch).with_current_leader_epoch(current)])]);
    match c.request(ApiKey::OffsetForLeaderEpoch, 4, RequestKind::OffsetForLeaderEpoch(req)) {
        ResponseKind::OffsetForLeaderEpoch(r) => {
            let p = &r.topics[0].partitions[0];
            (p.error_code, p.leader_epoch, p.end_offset)
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn offset_for_leader_epoch_answers_the_end_of_the_current_epoch_and_checks_the_callers_epoch() {
    let b = Broker::start(&[]);
    let mut c = b.client();
    assert_eq!(create_topic(&mut c, "epochs", 1, &[]).topics[0].error_code, 0);
    for i in 0..3 {
        let r = produce(&mut c, 9, "epochs", 0, batch(&[(None, "v", i)], Compression::None), -1).expect("response");
        assert_eq!(r.error_code, 0);
    }
    let epoch = match c.request(ApiKey::Metadata, 12, RequestKind::Metadata(MetadataRequest::default().with_topics(None))) {
        ResponseKind::Metadata(m) => m.topics.iter().find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == "epochs")).expect("topic").partitions[0].leader_epoch,
        other => panic!("{other:?}"),
    };
    assert!(epoch >= 0);
    // The current epoch ends at the log end: every record was written in it.
    assert_eq!(offset_for_epoch(&mut c, "epochs", epoch, -1), (0, epoch, 3));
    assert_eq!(offset_for_epoch(&mut c, "epochs", epoch, epoch), (0, epoch, 3));
    // A caller that knows a newer epoch than the broker gets UNKNOWN_LEADER_EPOCH (75), an
    // older one FENCED_LEADER_EPOCH (74); an unknown topic UNKNOWN_TOPIC_OR_PARTITION.
    assert_eq!(offset_for_epoch(&mut c, "epochs", epoch, epoch + 1).0, 75);
    if epoch > 0 {
        assert_eq!(offset_for_epoch(&mut c, "epochs", epoch, epoch - 1).0, 74);
    }
    assert_eq!(offset_for_epoch(&mut c, "nope", epoch, -1).0, 3);
}

#[test]
fn a_client_trickling_a_request_is_cut_off_and_its_declared_length_costs_nothing_up_front() {
    use std::io::{Read, Write};
    let b = Broker::start(&["--request-read-timeout-ms", "1500"]);
    let pid = b.child.as_ref().expect("running").id();
    let before = proc_status_kib(pid, "VmSize");
    // 30 connections each declare a 90 MiB request and send one byte of it.
    let mut slow: Vec<std::net::TcpStream> = (0..30)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(b.addr()).expect("connect");
            s.write_all(&(90i32 << 20).to_be_bytes()).expect("length");
            s.write_all(&[0]).expect("first byte");
            s
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let grown_mib = proc_status_kib(pid, "VmSize").saturating_sub(before) / 1024;
    assert!(grown_mib < 512, "declared lengths were allocated up front: address space grew {grown_mib} MiB");
    // A well-behaved client is served meanwhile.
    let mut c = b.client();
    assert_eq!(create_topic(&mut c, "served", 1, &[]).topics[0].error_code, 0);
    // Past the timeout every trickling connection is closed by the broker.
    for s in &mut slow {
        s.set_read_timeout(Some(std::time::Duration::from_secs(10))).expect("timeout");
        let _ = s.write_all(&[0; 16]);
        let mut buf = [0u8; 1];
        let started = std::time::Instant::now();
        match s.read(&mut buf) {
            Ok(0) | Err(_) => assert!(started.elapsed() < std::time::Duration::from_secs(9), "closed by the broker, not by our timeout"),
            Ok(n) => panic!("the broker answered {n} bytes to an unfinished request"),
        }
    }
    assert_eq!(create_topic(&mut c, "still-served", 1, &[]).topics[0].error_code, 0);
}

#[test]
fn five_thousand_idle_connections_are_held_while_a_client_is_served() {
    let b = Broker::start(&[]);
    let pid = b.child.as_ref().expect("running").id();
    let before = proc_status_kib(pid, "VmRSS");
    let idle: Vec<std::net::TcpStream> = (0..5000).map(|_| std::net::TcpStream::connect(b.addr()).expect("connect")).collect();
    // Every connection is accepted and kept: one in the middle and the last still answer.
    for i in [2500, 4999] {
        let mut c = Client::on(idle[i].try_clone().expect("clone"));
        match c.request(ApiKey::ApiVersions, 3, RequestKind::ApiVersions(ApiVersionsRequest::default())) {
            ResponseKind::ApiVersions(r) => assert_eq!(r.error_code, 0),
            other => panic!("{other:?}"),
        }
    }
    let mut c = b.client();
    assert_eq!(create_topic(&mut c, "busy", 1, &[]).topics[0].error_code, 0);
    let r = produce(&mut c, 9, "busy", 0, batch(&[(None, "v", 1)], Compression::None), -1).expect("response");
    assert_eq!(r.error_code, 0);
    let grown_mib = proc_status_kib(pid, "VmRSS").saturating_sub(before) / 1024;
    assert!(grown_mib < 200, "5000 idle connections cost {grown_mib} MiB of RSS");
    drop(idle);
}

/// Sends `n` ApiVersions requests back to back on `c` without reading; returns their
/// correlation ids in order.
fn pipeline_api_versions(c: &mut Client, n: usize) -> Vec<i32> {
    let mut ids = Vec::with_capacity(n);
    let mut out = Vec::new();
    for _ in 0..n {
        let frame = c.encode_request(ApiKey::ApiVersions, 3, &RequestKind::ApiVersions(ApiVersionsRequest::default()));
        ids.push(i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]));
        out.extend_from_slice(&(frame.len() as i32).to_be_bytes());
        out.extend_from_slice(&frame);
    }
    std::io::Write::write_all(&mut c.stream, &out).expect("write pipelined requests");
    ids
}

/// Reads `ids.len()` responses and checks they carry `ids` in order.
fn read_in_order(c: &mut Client, ids: &[i32]) {
    for want in ids {
        let frame = c.read_frame().expect("response");
        let got = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
        assert_eq!(got, *want, "responses out of order");
    }
}

#[test]
fn a_hundred_connections_pipelining_a_hundred_requests_are_answered_in_order() {
    let b = Broker::start(&[]);
    let threads: Vec<_> = (0..100)
        .map(|_| {
            let addr = b.addr();
            std::thread::spawn(move || {
                let mut c = Client::connect(&addr);
                let ids = pipeline_api_versions(&mut c, 100);
                read_in_order(&mut c, &ids);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
}

#[test]
fn a_client_that_never_reads_responses_does_not_grow_broker_memory() {
    let b = Broker::start(&[]);
    let pid = b.child.as_ref().expect("running").id();
    let mut c = b.client();
    let before = proc_status_kib(pid, "VmRSS");
    // 300,000 requests (some 80 MB of responses, far beyond the socket buffers), written from
    // another thread: the broker stops reading once its in-flight bound is reached, and the
    // writes block once the kernel's buffers are full.
    let mut writer = Client::on(c.stream.try_clone().expect("clone"));
    let sender = std::thread::spawn(move || (0..300).flat_map(|_| pipeline_api_versions(&mut writer, 1000)).collect::<Vec<_>>());
    std::thread::sleep(std::time::Duration::from_secs(2));
    let grown_mib = proc_status_kib(pid, "VmRSS").saturating_sub(before) / 1024;
    assert!(grown_mib < 32, "unread responses grew the broker by {grown_mib} MiB");
    assert!(!sender.is_finished(), "the broker read every request although no response was read");
    // Reading resumes the flow: every response arrives, in order.
    c.stream.set_read_timeout(Some(std::time::Duration::from_secs(30))).expect("timeout");
    let got: Vec<i32> = (0..300_000)
        .map(|i| {
            let frame = c.read_frame().unwrap_or_else(|| panic!("connection closed after {i} responses"));
            i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]])
        })
        .collect();
    let ids = sender.join().expect("sender");
    assert_eq!(got, ids, "responses out of order");
}

/// DescribeQuorum (what `kafka-metadata-quorum.sh describe --status` asks) at every
/// advertised version, on every node of a cluster: each answers for the controller's
/// leader (the others ask it), with the three voters, their fetch times from v1 and their
/// raft endpoints from v2; any other partition is an invalid request.
#[test]
fn every_node_describes_the_controller_quorum_at_every_version() {
    use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
    let nodes = common::cluster(3, &[]);
    let ask = |c: &mut Client, version: i16, topic: &str| {
        let req = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
            .with_topic_name(TopicName(s(topic)))
            .with_partitions(vec![PartitionData::default().with_partition_index(0)])]);
        match c.request(ApiKey::DescribeQuorum, version, RequestKind::DescribeQuorum(req)) {
            ResponseKind::DescribeQuorum(r) => r,
            other => panic!("{other:?}"),
        }
    };
    let mut leaders = Vec::new();
    for node in &nodes {
        let mut c = node.client();
        for version in 0..=2 {
            let r = ask(&mut c, version, "__cluster_metadata");
            assert_eq!(r.error_code, 0);
            let p = &r.topics[0].partitions[0];
            assert_eq!(p.error_code, 0, "v{version}: {p:?}");
            leaders.push(p.leader_id.0);
            assert!(p.leader_epoch > 0 && p.high_watermark > 0);
            assert_eq!(p.current_voters.iter().map(|v| v.replica_id.0).collect::<Vec<_>>(), vec![1, 2, 3]);
            assert!(p.current_voters.iter().all(|v| v.log_end_offset > 0));
            assert!(p.observers.is_empty());
            let fetched = p.current_voters.iter().all(|v| v.last_fetch_timestamp > 0);
            assert_eq!(fetched, version >= 1, "v{version}: fetch times are v1+");
            if version >= 2 {
                let mut ids: Vec<i32> = r.nodes.iter().map(|n| n.node_id.0).collect();
                ids.sort_unstable();
                assert_eq!(ids, vec![1, 2, 3]);
                assert!(r.nodes.iter().all(|n| n.listeners.len() == 1 && n.listeners[0].name.as_str() == "RAFT" && n.listeners[0].port > 0));
            } else {
                assert!(r.nodes.is_empty());
            }
        }
        assert_eq!(ask(&mut c, 1, "orders").error_code, 42, "INVALID_REQUEST");
    }
    leaders.dedup();
    assert_eq!(leaders.len(), 1, "every node names the same leader: {leaders:?}");
}
