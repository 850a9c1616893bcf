"""kafka-python (pure Python, 3.0.x) against the real broker: topics, every compression
codec, manual-assignment consumption, ListOffsets, DescribeConfigs, DescribeCluster,
DeleteTopics.

Consumers here run with group_id=None and assign(), and producers disable idempotence
(kafka-python 3 turns it on by default), so these tests pin plain batches and fetches;
consumer groups are tested in test_groups_kafka_python.py, idempotent and transactional
producers in test_transactions_kafka_python.py."""

import time

import pytest
import kafka.errors as Errors
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, OffsetSpec

from conftest import CODECS, Got, check_consumed, make_records, wait_until

pytestmark = pytest.mark.timeout(120)  # pytest-timeout: a hard limit per test on top of the client timeouts

PARTITIONS = 3
PER_CODEC = 60
TIMEOUT_MS = 20000


def admin_client(bootstrap):
    return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=TIMEOUT_MS, client_id="compat-admin")


def create_topic(admin, name, partitions=PARTITIONS, configs=None):
    result = admin.create_topics(
        {name: {"num_partitions": partitions, "replication_factor": 1, "configs": configs or {}}},
        timeout_ms=TIMEOUT_MS, wait_for_metadata=True)
    [topic] = result["topics"]
    assert (topic["name"], topic["error_code"]) == (name, 0), topic
    return topic


def produce_all(bootstrap, topic, records, codec):
    """Sends `records` with one producer and the given codec; returns
    {index: (partition, offset)} from the acknowledgements."""
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False,
                      compression_type=None if codec == "none" else codec,
                      linger_ms=20, request_timeout_ms=TIMEOUT_MS, max_block_ms=TIMEOUT_MS)
    try:
        futures = [(rec, p.send(topic, value=rec.value, key=rec.key, headers=list(rec.headers),
                                partition=rec.partition, timestamp_ms=rec.timestamp))
                   for rec in records]
        p.flush(timeout=TIMEOUT_MS / 1000)
        delivered = {}
        for rec, f in futures:
            md = f.get(timeout=TIMEOUT_MS / 1000)
            assert md.timestamp == rec.timestamp, f"{codec}: record {rec.index} acknowledged with timestamp {md.timestamp}"
            delivered[rec.index] = (md.partition, md.offset)
        return delivered
    finally:
        p.close(timeout=10)


def consumer(bootstrap):
    return KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest", fetch_max_wait_ms=100,
                         request_timeout_ms=TIMEOUT_MS, client_id="compat-consumer")


def consume_partitions(bootstrap, topic, counts, start=0, timeout=30.0):
    c = consumer(bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in counts]
        c.assign(tps)
        for tp in tps:
            c.seek(tp, start)
        got, have = [], {p: 0 for p in counts}
        deadline = time.monotonic() + timeout
        while any(have[p] < n for p, n in counts.items()):
            assert time.monotonic() < deadline, f"timed out consuming: have {have}, want {counts}"
            for tp, msgs in c.poll(timeout_ms=1000).items():
                for m in msgs:
                    assert m.timestamp_type == 0, f"timestamp type {m.timestamp_type} (0 = CreateTime)"
                    got.append(Got(m.partition, m.offset, m.key, m.value, tuple(m.headers), m.timestamp))
                    have[m.partition] += 1
        return got
    finally:
        c.close(autocommit=False)


def test_every_codec_round_trips_keys_values_headers_timestamps(broker):
    admin = admin_client(broker.bootstrap)
    topic = "kp-codecs"
    try:
        create_topic(admin, topic)
        records = make_records(PER_CODEC * len(CODECS), "kp", PARTITIONS)
        delivered = {}
        for n, codec in enumerate(CODECS):
            delivered.update(produce_all(broker.bootstrap, topic, records[n * PER_CODEC:(n + 1) * PER_CODEC], codec))
        counts = {p: sum(1 for r in records if r.partition == p) for p in range(PARTITIONS)}
        got = consume_partitions(broker.bootstrap, topic, counts)
        check_consumed(records, delivered, got)
    finally:
        admin.close()


def test_consume_from_the_middle_of_a_compressed_batch(broker):
    admin = admin_client(broker.bootstrap)
    try:
        create_topic(admin, "kp-mid", partitions=1)
    finally:
        admin.close()
    records = make_records(40, "kpmid", partitions=1)
    produce_all(broker.bootstrap, "kp-mid", records, "gzip")
    got = consume_partitions(broker.bootstrap, "kp-mid", {0: 40 - 23}, start=23)
    assert [g.offset for g in got] == list(range(23, 40))
    assert [(g.key, g.value) for g in got] == [(r.key, r.value) for r in records[23:]]


def test_list_offsets_earliest_latest_and_by_timestamp(broker):
    admin = admin_client(broker.bootstrap)
    topic = "kp-offsets"
    try:
        create_topic(admin, topic)
        records = make_records(90, "kplo", PARTITIONS)
        delivered = produce_all(broker.bootstrap, topic, records, "snappy")
        per_part = {p: [r for r in records if r.partition == p] for p in range(PARTITIONS)}
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]

        c = consumer(broker.bootstrap)
        try:
            assert c.beginning_offsets(tps, timeout_ms=TIMEOUT_MS) == {tp: 0 for tp in tps}
            assert c.end_offsets(tps, timeout_ms=TIMEOUT_MS) == {tp: len(per_part[tp.partition]) for tp in tps}
            for tp in tps:
                recs = per_part[tp.partition]
                target = recs[len(recs) // 2]
                off = delivered[target.index][1]
                for ts, want in [(target.timestamp, (off, target.timestamp)),
                                 (target.timestamp - 5, (off, target.timestamp)),
                                 (recs[0].timestamp - 60_000, (0, recs[0].timestamp))]:
                    res = c.offsets_for_times({tp: ts}, timeout_ms=TIMEOUT_MS)[tp]
                    assert res is not None and (res.offset, res.timestamp) == want, \
                        f"{tp}: offsets_for_times({ts}) = {res}, want {want}"
                # Past the last record: no offset (kafka-python answers None).
                assert c.offsets_for_times({tp: recs[-1].timestamp + 1}, timeout_ms=TIMEOUT_MS)[tp] is None
        finally:
            c.close(autocommit=False)

        # The admin API (ListOffsets by spec), including MAX_TIMESTAMP.
        for tp in tps:
            recs = per_part[tp.partition]
            mid = recs[len(recs) // 3]
            res = admin.list_partition_offsets({tp: OffsetSpec.EARLIEST})[tp]
            assert res.offset == 0, res
            res = admin.list_partition_offsets({tp: OffsetSpec.LATEST})[tp]
            assert res.offset == len(recs), res
            res = admin.list_partition_offsets({tp: OffsetSpec.MAX_TIMESTAMP})[tp]
            assert (res.offset, res.timestamp) == (len(recs) - 1, recs[-1].timestamp), res
            res = admin.list_partition_offsets({tp: mid.timestamp})[tp]
            assert (res.offset, res.timestamp) == (delivered[mid.index][1], mid.timestamp), res
    finally:
        admin.close()


def test_describe_configs_values_and_sources(broker):
    admin = admin_client(broker.bootstrap)
    topic = "kp-configs"
    set_at_creation = {"retention.ms": "3600000", "cleanup.policy": "compact"}
    try:
        created = create_topic(admin, topic, configs=set_at_creation)
        # CreateTopics v5+ answers with the topic's configs and their sources.
        cfg = created.get("configs") or {}
        assert cfg.get("retention.ms", {}).get("value") == "3600000", cfg.get("retention.ms")
        assert cfg["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
        assert (cfg["segment.bytes"]["value"], cfg["segment.bytes"]["config_source"]) == ("1073741824", "DEFAULT_CONFIG")

        topic_res = ConfigResource(ConfigResourceType.TOPIC, topic)
        # The default filter shows what was changed from the defaults: exactly what was set.
        modified = admin.describe_configs([topic_res])["topic"][topic]
        assert {k: v["value"] for k, v in modified.items()} == set_at_creation
        assert {v["config_source"] for v in modified.values()} == {"DYNAMIC_TOPIC_CONFIG"}

        everything = admin.describe_configs([topic_res], include_synonyms=True, config_filter="all")["topic"][topic]
        for name, value in {"segment.bytes": "1073741824", "retention.bytes": "-1",
                            "max.message.bytes": "1048588", "min.insync.replicas": "1",
                            "message.timestamp.type": "CreateTime"}.items():
            e = everything[name]
            assert (e["value"], e["config_source"], e["read_only"]) == (value, "DEFAULT_CONFIG", False), (name, e)
        ret = everything["retention.ms"]
        assert (ret["value"], ret["config_source"]) == ("3600000", "DYNAMIC_TOPIC_CONFIG")
        # Synonyms, most specific first: the topic's own value, then the broker-level
        # default (Kafka names log.retention.hours=168; log.retention.ms is fine too).
        syn = [(s["name"], s["value"], s["source"]) for s in ret["synonyms"]]
        assert syn[0] == ("retention.ms", "3600000", "DYNAMIC_TOPIC_CONFIG"), syn
        assert all(src != "DYNAMIC_TOPIC_CONFIG" for _, _, src in syn[1:]), syn
        assert any(n.startswith("log.retention.") and src == "DEFAULT_CONFIG" for n, _, src in syn[1:]), syn

        broker_res = ConfigResource(ConfigResourceType.BROKER, "1")
        bcfg = admin.describe_configs([broker_res], config_filter="all")["broker"]["1"]
        assert bcfg["num.partitions"]["value"] == "1"
        assert bcfg["log.segment.bytes"]["value"] == "1073741824"
        assert bcfg["auto.create.topics.enable"]["value"] == "true"
    finally:
        admin.close()


def test_describe_configs_broker_override(broker_factory):
    """A broker flag (log.segment.bytes) is the topic's segment.bytes unless the topic sets
    it: STATIC_BROKER_CONFIG, with the broker synonyms listed most specific first."""
    b = broker_factory("--log-segment-bytes", "4194304")
    admin = admin_client(b.bootstrap)
    try:
        create_topic(admin, "kp-override")
        create_topic(admin, "kp-override-own", configs={"segment.bytes": "2097152"})
        res = [ConfigResource(ConfigResourceType.TOPIC, "kp-override"),
               ConfigResource(ConfigResourceType.TOPIC, "kp-override-own")]
        cfg = admin.describe_configs(res, include_synonyms=True, config_filter="all")["topic"]
        seg = cfg["kp-override"]["segment.bytes"]
        assert (seg["value"], seg["config_source"]) == ("4194304", "STATIC_BROKER_CONFIG")
        assert [(s["name"], s["value"], s["source"]) for s in seg["synonyms"]] == [
            ("log.segment.bytes", "4194304", "STATIC_BROKER_CONFIG"),
            ("log.segment.bytes", "1073741824", "DEFAULT_CONFIG"),
        ]
        own = cfg["kp-override-own"]["segment.bytes"]
        assert (own["value"], own["config_source"]) == ("2097152", "DYNAMIC_TOPIC_CONFIG")
        assert [s["source"] for s in own["synonyms"]] == ["DYNAMIC_TOPIC_CONFIG", "STATIC_BROKER_CONFIG", "DEFAULT_CONFIG"]
        broker_res = ConfigResource(ConfigResourceType.BROKER, "1")
        bseg = admin.describe_configs([broker_res], config_filter="all")["broker"]["1"]["log.segment.bytes"]
        assert (bseg["value"], bseg["config_source"]) == ("4194304", "STATIC_BROKER_CONFIG")
    finally:
        admin.close()


def test_metadata_and_describe_cluster(broker):
    admin = admin_client(broker.bootstrap)
    try:
        create_topic(admin, "kp-meta", partitions=4)
        [t] = admin.describe_topics(["kp-meta"])
        assert t["name"] == "kp-meta" and t["error_code"] == 0
        assert sorted(p["partition_index"] for p in t["partitions"]) == [0, 1, 2, 3]
        assert all(p["leader_id"] == 1 and p["replica_nodes"] == [1] for p in t["partitions"])
        cluster = admin.describe_cluster()
        assert cluster["cluster_id"]
        assert [(b["broker_id"], b["host"], b["port"]) for b in cluster["brokers"]] == [(1, "127.0.0.1", broker.port)]
        assert cluster["controller_id"] == 1
        with pytest.raises(Errors.TopicAlreadyExistsError):
            admin.create_topics({"kp-meta": {"num_partitions": 1, "replication_factor": 1}}, timeout_ms=TIMEOUT_MS)
    finally:
        admin.close()


def test_delete_topic(broker):
    admin = admin_client(broker.bootstrap)
    topic = "kp-delete"
    try:
        create_topic(admin, topic)
        create_topic(admin, "kp-keep", partitions=1)
        produce_all(broker.bootstrap, topic, make_records(30, "kpdel", PARTITIONS), "zstd")
        result = admin.delete_topics([topic], timeout_ms=TIMEOUT_MS)
        assert [(t["name"], t["error_code"]) for t in result["topics"]] == [(topic, 0)]
        wait_until(lambda: topic not in admin.list_topics(), timeout=20, what="deleted topic to leave metadata")
        assert "kp-keep" in admin.list_topics()
        with pytest.raises(Errors.UnknownTopicOrPartitionError):
            admin.delete_topics([topic], timeout_ms=TIMEOUT_MS)
        # Recreated under the same name it is empty: the old records are gone.
        create_topic(admin, topic)
        c = consumer(broker.bootstrap)
        try:
            tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            assert c.end_offsets(tps, timeout_ms=TIMEOUT_MS) == {tp: 0 for tp in tps}
        finally:
            c.close(autocommit=False)
    finally:
        admin.close()
