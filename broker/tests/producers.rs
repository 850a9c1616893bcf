//! Idempotent and transactional producers over the wire, with a minimal client: the exact
//! answers to retried, out-of-order, stale and transactional batches, and producer state
//! across restarts. Stock-client scenarios live in `compat/test_transactions_*.py`.

mod common;

use bytes::Bytes;
use common::{cluster, create_topic, produce, producer_batch, s, wait_for, Broker, Client};
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::*;
use kafka_protocol::records::{Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType};

const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const INVALID_TXN_STATE: i16 = 48;
const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
const INVALID_RECORD: i16 = 87;
const PRODUCER_FENCED: i16 = 90;

fn init_producer_id(c: &mut Client, txn: Option<&str>, timeout_ms: i32) -> InitProducerIdResponse {
    let req = InitProducerIdRequest::default()
        .with_transactional_id(txn.map(|t| TransactionalId(s(t))))
        .with_transaction_timeout_ms(timeout_ms)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    match c.request(ApiKey::InitProducerId, 4, RequestKind::InitProducerId(req)) {
        ResponseKind::InitProducerId(r) => r,
        other => panic!("{other:?}"),
    }
}

fn add_partition(c: &mut Client, txn: &str, pid: i64, epoch: i16, topic: &str, partition: i32) -> i16 {
    let req = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(s(txn)))
        .with_v3_and_below_producer_id(ProducerId(pid))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default().with_name(TopicName(s(topic))).with_partitions(vec![partition])]);
    match c.request(ApiKey::AddPartitionsToTxn, 3, RequestKind::AddPartitionsToTxn(req)) {
        ResponseKind::AddPartitionsToTxn(r) => r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
        other => panic!("{other:?}"),
    }
}

fn end_txn(c: &mut Client, txn: &str, pid: i64, epoch: i16, commit: bool) -> i16 {
    let req = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(s(txn)))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_committed(commit);
    match c.request(ApiKey::EndTxn, 3, RequestKind::EndTxn(req)) {
        ResponseKind::EndTxn(r) => r.error_code,
        other => panic!("{other:?}"),
    }
}

/// What a read_committed or read_uncommitted Fetch from offset 0 returns.
struct Fetched {
    high_watermark: i64,
    last_stable_offset: i64,
    /// (producer id, first offset) of aborted transactions in the answer.
    aborted: Vec<(i64, i64)>,
    /// Data records (offset, value); control records are counted apart.
    records: Vec<(i64, Bytes)>,
    control_records: usize,
}

fn fetch(c: &mut Client, topic: &str, read_committed: bool) -> Fetched {
    let req = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(0)
        .with_max_bytes(1 << 20)
        .with_isolation_level(i8::from(read_committed))
        .with_topics(vec![FetchTopic::default().with_topic(TopicName(s(topic))).with_partitions(vec![FetchPartition::default()
            .with_partition(0)
            .with_fetch_offset(0)
            .with_partition_max_bytes(1 << 20)
            .with_current_leader_epoch(-1)])]);
    let p = match c.request(ApiKey::Fetch, 12, RequestKind::Fetch(req)) {
        ResponseKind::Fetch(r) => r.responses[0].partitions[0].clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(p.error_code, 0);
    let mut records = Vec::new();
    let mut control_records = 0;
    if let Some(mut data) = p.records.clone() {
        for set in RecordBatchDecoder::decode_all(&mut data).expect("decode") {
            for r in set.records {
                if r.control {
                    control_records += 1;
                } else {
                    records.push((r.offset, r.value.unwrap_or_default()));
                }
            }
        }
    }
    Fetched {
        high_watermark: p.high_watermark,
        last_stable_offset: p.last_stable_offset,
        aborted: p.aborted_transactions.unwrap_or_default().iter().map(|a| (a.producer_id.0, a.first_offset)).collect(),
        records,
        control_records,
    }
}

#[test]
fn a_retried_batch_gets_its_original_offset_and_is_stored_once() {
    let b = Broker::start(&[]);
    let mut c = b.client();
    create_topic(&mut c, "idem", 1, &[]);
    let init = init_producer_id(&mut c, None, 60_000);
    assert_eq!(init.error_code, 0);
    let (pid, epoch) = (init.producer_id.0, init.producer_epoch);
    assert!(pid >= 0 && epoch == 0);
    let first = producer_batch(pid, epoch, 0, 3, false);
    let second = producer_batch(pid, epoch, 3, 2, false);
    assert_eq!(produce(&mut c, 9, "idem", 0, first.clone(), -1).map(|r| (r.error_code, r.base_offset)), Some((0, 0)));
    assert_eq!(produce(&mut c, 9, "idem", 0, second.clone(), -1).map(|r| (r.error_code, r.base_offset)), Some((0, 3)));
    // Retries of either batch: success with the original offset, nothing written.
    assert_eq!(produce(&mut c, 9, "idem", 0, first, -1).map(|r| (r.error_code, r.base_offset)), Some((0, 0)));
    assert_eq!(produce(&mut c, 9, "idem", 0, second, -1).map(|r| (r.error_code, r.base_offset)), Some((0, 3)));
    let f = fetch(&mut c, "idem", false);
    assert_eq!((f.high_watermark, f.records.len()), (5, 5));
    // Another producer id is independent.
    let other = init_producer_id(&mut c, None, 60_000).producer_id.0;
    assert_ne!(other, pid, "every InitProducerId without a transactional id gets a new id");
}

#[test]
fn gaps_and_stale_epochs_get_kafkas_error_codes() {
    let b = Broker::start(&[]);
    let mut c = b.client();
    create_topic(&mut c, "seq", 1, &[]);
    let pid = init_producer_id(&mut c, None, 60_000).producer_id.0;
    assert_eq!(produce(&mut c, 9, "seq", 0, producer_batch(pid, 0, 0, 2, false), -1).map(|r| r.error_code), Some(0));
    let gap = produce(&mut c, 9, "seq", 0, producer_batch(pid, 0, 5, 1, false), -1).expect("response");
    assert_eq!((gap.error_code, gap.base_offset), (OUT_OF_ORDER_SEQUENCE_NUMBER, -1));
    // A new epoch must start at sequence 0; then the old epoch is stale.
    assert_eq!(produce(&mut c, 9, "seq", 0, producer_batch(pid, 1, 4, 1, false), -1).map(|r| r.error_code), Some(OUT_OF_ORDER_SEQUENCE_NUMBER));
    assert_eq!(produce(&mut c, 9, "seq", 0, producer_batch(pid, 1, 0, 1, false), -1).map(|r| r.error_code), Some(0));
    assert_eq!(produce(&mut c, 9, "seq", 0, producer_batch(pid, 0, 2, 1, false), -1).map(|r| r.error_code), Some(INVALID_PRODUCER_EPOCH));
    assert_eq!(fetch(&mut c, "seq", false).records.len(), 3, "refused batches are not stored");
}

#[test]
fn producer_state_survives_a_clean_restart_and_kill_nine() {
    let mut b = Broker::start(&[]);
    let mut c = b.client();
    create_topic(&mut c, "durable", 1, &[]);
    let pid = init_producer_id(&mut c, None, 60_000).producer_id.0;
    let mut seq = 0;
    let mut last = Bytes::new();
    for round in 0..2 {
        for _ in 0..3 {
            last = producer_batch(pid, 0, seq, 2, false);
            assert_eq!(produce(&mut c, 9, "durable", 0, last.clone(), -1).map(|r| r.error_code), Some(0));
            seq += 2;
        }
        if round == 0 {
            assert_eq!(b.stop(), Some(0)); // clean: the producer snapshot is written on shutdown
        } else {
            b.kill9(); // the state is replayed from the log after the snapshot
        }
        b.restart();
        c = b.client();
        let retry = produce(&mut c, 9, "durable", 0, last.clone(), -1).expect("response");
        assert_eq!((retry.error_code, retry.base_offset), (0, i64::from(seq) - 2), "round {round}: the retry is a duplicate");
        let gap = produce(&mut c, 9, "durable", 0, producer_batch(pid, 0, seq + 1, 1, false), -1).expect("response");
        assert_eq!(gap.error_code, OUT_OF_ORDER_SEQUENCE_NUMBER, "round {round}: the sequence was remembered");
    }
    assert_eq!(fetch(&mut c, "durable", false).records.len(), 12);
}

#[test]
fn clients_may_not_write_control_batches() {
    let b = Broker::start(&[]);
    let mut c = b.client();
    create_topic(&mut c, "ctl", 1, &[]);
    let marker = Record {
        transactional: true,
        control: true,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: 5,
        producer_epoch: 0,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: 1,
        key: Some(Bytes::from_static(&[0, 0, 0, 1])),
        value: Some(Bytes::from_static(&[0, 0, 0, 0, 0, 0])),
        headers: Default::default(),
    };
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, [marker].iter(), &RecordEncodeOptions { version: 2, compression: Compression::None }).expect("encode");
    let r = produce(&mut c, 9, "ctl", 0, buf.freeze(), -1).expect("response");
    assert_eq!(r.error_code, INVALID_RECORD);
}

#[test]
fn a_transaction_holds_read_committed_at_its_start_and_an_abort_is_reported() {
    let b = Broker::start(&[]);
    let mut c = b.client();
    create_topic(&mut c, "txn", 1, &[]);
    let init = init_producer_id(&mut c, Some("app"), 60_000);
    assert_eq!(init.error_code, 0);
    let (pid, epoch) = (init.producer_id.0, init.producer_epoch);
    // Not added to the transaction yet: refused, so no transaction can hang the partition.
    let early = produce(&mut c, 9, "txn", 0, producer_batch(pid, epoch, 0, 3, true), -1).expect("response");
    assert_eq!(early.error_code, INVALID_TXN_STATE);
    assert_eq!(add_partition(&mut c, "app", pid, epoch, "txn", 0), 0);
    assert_eq!(produce(&mut c, 9, "txn", 0, producer_batch(pid, epoch, 0, 3, true), -1).map(|r| r.error_code), Some(0));
    let open = fetch(&mut c, "txn", true);
    assert_eq!((open.high_watermark, open.last_stable_offset, open.records.len()), (3, 0, 0), "read_committed stops at the open transaction");
    assert_eq!(fetch(&mut c, "txn", false).records.len(), 3);

    assert_eq!(end_txn(&mut c, "app", pid, epoch, false), 0);
    let after = fetch(&mut c, "txn", true);
    assert_eq!((after.high_watermark, after.last_stable_offset), (4, 4), "the ABORT marker takes offset 3");
    assert_eq!(after.aborted, vec![(pid, 0)], "the aborted transaction is reported for the client to skip");
    assert_eq!(after.control_records, 1);

    // The next transaction commits: no aborted transaction is reported beyond the first.
    assert_eq!(add_partition(&mut c, "app", pid, epoch, "txn", 0), 0);
    assert_eq!(produce(&mut c, 9, "txn", 0, producer_batch(pid, epoch, 3, 2, true), -1).map(|r| r.error_code), Some(0));
    assert_eq!(end_txn(&mut c, "app", pid, epoch, true), 0);
    assert_eq!(end_txn(&mut c, "app", pid, epoch, true), 0, "a retried EndTxn succeeds");
    assert_eq!(end_txn(&mut c, "app", pid, epoch, false), INVALID_TXN_STATE);
    let done = fetch(&mut c, "txn", true);
    assert_eq!((done.high_watermark, done.last_stable_offset), (7, 7));
    assert_eq!(done.aborted, vec![(pid, 0)]);
    assert_eq!(done.records.iter().map(|(o, _)| *o).collect::<Vec<_>>(), vec![0, 1, 2, 4, 5], "records of both, for the client to filter");
}

#[test]
fn a_new_producer_fences_the_old_one_and_timeouts_are_bounded() {
    let b = Broker::start(&[]);
    let mut c = b.client();
    create_topic(&mut c, "fence", 1, &[]);
    assert_eq!(init_producer_id(&mut c, Some("x"), 900_001).error_code, INVALID_TRANSACTION_TIMEOUT);
    let old = init_producer_id(&mut c, Some("x"), 60_000);
    assert_eq!(add_partition(&mut c, "x", old.producer_id.0, old.producer_epoch, "fence", 0), 0);
    assert_eq!(produce(&mut c, 9, "fence", 0, producer_batch(old.producer_id.0, old.producer_epoch, 0, 2, true), -1).map(|r| r.error_code), Some(0));
    let new = init_producer_id(&mut c, Some("x"), 60_000);
    assert_eq!(new.error_code, 0);
    assert_eq!(new.producer_id, old.producer_id);
    assert!(new.producer_epoch > old.producer_epoch);
    // The old producer's transaction was aborted; its writes and its commit are refused.
    let f = fetch(&mut c, "fence", true);
    assert_eq!((f.last_stable_offset, f.aborted), (3, vec![(old.producer_id.0, 0)]));
    assert_eq!(
        produce(&mut c, 9, "fence", 0, producer_batch(old.producer_id.0, old.producer_epoch, 2, 1, true), -1).map(|r| r.error_code),
        Some(INVALID_PRODUCER_EPOCH)
    );
    assert_eq!(end_txn(&mut c, "x", old.producer_id.0, old.producer_epoch, true), PRODUCER_FENCED);
}

#[test]
fn reinitialising_with_the_current_epoch_bumps_it_and_a_lost_answer_is_repeated() {
    let b = Broker::start(&[]);
    let mut c = b.client();
    let init = |c: &mut Client, pid: i64, epoch: i16| {
        let req = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(s("kip360"))))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch);
        match c.request(ApiKey::InitProducerId, 4, RequestKind::InitProducerId(req)) {
            ResponseKind::InitProducerId(r) => (r.error_code, r.producer_id.0, r.producer_epoch),
            other => panic!("{other:?}"),
        }
    };
    let (code, pid, epoch) = init(&mut c, -1, -1);
    assert_eq!((code, epoch), (0, 0));
    // KIP-360: the producer re-initialises with its current id and epoch: bumped.
    assert_eq!(init(&mut c, pid, 0), (0, pid, 1));
    // It retries because it lost that answer: the same answer, no second bump.
    assert_eq!(init(&mut c, pid, 0), (0, pid, 1));
    // An epoch that is neither current nor the previous one belongs to a fenced producer.
    assert_eq!(init(&mut c, pid, 7).0, PRODUCER_FENCED);
    // Without an id and epoch (a new producer instance): bumped again.
    assert_eq!(init(&mut c, -1, -1), (0, pid, 2));
}

/// The node leading each partition of `topic`, by partition index (waits for them all).
fn partition_leaders(c: &mut Client, topic: &str, partitions: usize) -> Vec<i32> {
    let mut leaders = Vec::new();
    wait_for("a leader for every partition", || {
        let req = MetadataRequest::default()
            .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default().with_name(Some(TopicName(s(topic))))]));
        let ResponseKind::Metadata(m) = c.request(ApiKey::Metadata, 12, RequestKind::Metadata(req)) else { return false };
        let mut parts: Vec<(i32, i32)> = m.topics.first().map(|t| t.partitions.iter().map(|p| (p.partition_index, p.leader_id.0)).collect()).unwrap_or_default();
        parts.sort_unstable();
        leaders = parts.into_iter().map(|(_, l)| l).collect();
        leaders.len() == partitions && leaders.iter().all(|l| *l > 0)
    });
    leaders
}

#[test]
fn a_transactional_batch_is_verified_with_the_coordinator_on_another_node() {
    let nodes = cluster(3, &[]);
    let mut c = nodes[0].client();
    // Where the transaction coordinator is: FindCoordinator for the transactional id.
    let mut coordinator = -1;
    wait_for("a transaction coordinator", || {
        let req = FindCoordinatorRequest::default().with_key_type(1).with_coordinator_keys(vec![s("app")]);
        let ResponseKind::FindCoordinator(r) = c.request(ApiKey::FindCoordinator, 4, RequestKind::FindCoordinator(req)) else { return false };
        coordinator = r.coordinators[0].node_id.0;
        r.coordinators[0].error_code == 0
    });
    // Three single-replica partitions spread over the nodes: one is led elsewhere.
    assert_eq!(create_topic(&mut c, "verified", 3, &[]).topics[0].error_code, 0);
    let leaders = partition_leaders(&mut c, "verified", 3);
    let partition = leaders.iter().position(|l| *l != coordinator).expect("a partition not led by the coordinator") as i32;
    let leader_node = &nodes[leaders[partition as usize] as usize - 1];
    let mut txn = nodes[coordinator as usize - 1].client();
    let mut at_leader = leader_node.client();

    let init = init_producer_id(&mut txn, Some("app"), 60_000);
    assert_eq!(init.error_code, 0);
    let (pid, epoch) = (init.producer_id.0, init.producer_epoch);
    // Not added to the transaction: refused by the partition's leader after asking the
    // coordinator on the other node, so no transaction can hang the partition.
    let early = produce(&mut at_leader, 9, "verified", partition, producer_batch(pid, epoch, 0, 3, true), -1).expect("response");
    assert_eq!(early.error_code, INVALID_TXN_STATE);
    assert_eq!(add_partition(&mut txn, "app", pid, epoch, "verified", partition), 0);
    let added = produce(&mut at_leader, 9, "verified", partition, producer_batch(pid, epoch, 0, 3, true), -1).expect("response");
    assert_eq!(added.error_code, 0);
    assert_eq!(end_txn(&mut txn, "app", pid, epoch, true), 0);
    // The next transaction needs the partition added again.
    let next = produce(&mut at_leader, 9, "verified", partition, producer_batch(pid, epoch, 3, 1, true), -1).expect("response");
    assert_eq!(next.error_code, INVALID_TXN_STATE);
    // A fenced producer (the transactional id was initialised again) is told so.
    let newer = init_producer_id(&mut txn, Some("app"), 60_000);
    assert!(newer.producer_epoch > epoch);
    assert_eq!(add_partition(&mut txn, "app", pid, newer.producer_epoch, "verified", partition), 0);
    let stale = produce(&mut at_leader, 9, "verified", partition, producer_batch(pid, epoch, 3, 1, true), -1).expect("response");
    assert_eq!(stale.error_code, INVALID_PRODUCER_EPOCH);
}
