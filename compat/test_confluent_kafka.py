"""confluent-kafka (librdkafka) against the real broker: topics, every compression codec,
manual-assignment consumption, ListOffsets, DescribeConfigs, DescribeCluster, DeleteTopics.

No consumer groups: the broker has no FindCoordinator/JoinGroup yet, so consumers use
assign() with explicit offsets and never commit. (confluent-kafka's Python Consumer refuses
to start without a group.id, so one is set; with assign() and auto-commit off librdkafka
never joins it, and it sends no group request the broker does not advertise.)"""

import time

import pytest
from confluent_kafka import (
    TIMESTAMP_CREATE_TIME,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource, NewTopic, OffsetSpec, ResourceType

from conftest import CODECS, Got, check_consumed, make_records, wait_until

pytestmark = pytest.mark.timeout(120)  # pytest-timeout: a hard limit per test on top of the client timeouts

PARTITIONS = 3
PER_CODEC = 60
TIMEOUT = 20  # seconds, every client call


# ---------------------------------------------------------------------------
# helpers (also used by test_kcat.py and test_restart.py)

def admin_client(bootstrap):
    # librdkafka's admin handle is a producer handle, whose Metadata requests allow
    # auto-creation by default: turn that off so describing a topic never creates it.
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000,
                        "allow.auto.create.topics": False})


def create_topic(admin, name, partitions=PARTITIONS, config=None):
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=TIMEOUT, request_timeout=TIMEOUT)
    futures[name].result(timeout=TIMEOUT)
    # The topic is usable once every partition has a leader in metadata.
    wait_until(lambda: _has_leaders(admin, name, partitions), timeout=TIMEOUT, what=f"leaders for {name}")


def _has_leaders(admin, name, partitions):
    t = admin.list_topics(topic=name, timeout=TIMEOUT).topics.get(name)
    return (t is not None and t.error is None and len(t.partitions) == partitions
            and all(p.leader >= 0 and p.error is None for p in t.partitions.values()))


def producer(bootstrap, **extra):
    conf = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": False,  # no InitProducerId on this broker
        "acks": "all",
        "linger.ms": 20,
        "message.timeout.ms": 30000,
    }
    conf.update(extra)
    return Producer(conf)


def produce_all(bootstrap, topic, records, codec, **extra):
    """Produces `records` (explicit partition and timestamp each) with one producer and
    `compression.type=codec`; returns {index: (partition, offset)} from delivery reports."""
    delivered, errors = {}, []

    def report(rec):
        def cb(err, msg):
            if err is not None:
                errors.append((rec.index, err))
            else:
                delivered[rec.index] = (msg.partition(), msg.offset())
        return cb

    p = producer(bootstrap, **{"compression.type": codec}, **extra)
    for rec in records:
        p.produce(topic, value=rec.value, key=rec.key, partition=rec.partition,
                  timestamp=rec.timestamp, headers=list(rec.headers) or None, on_delivery=report(rec))
        p.poll(0)
    assert p.flush(TIMEOUT * 2) == 0, f"{codec}: messages still queued after flush"
    assert not errors, f"{codec}: delivery failed: {errors[:5]}"
    return delivered


def consumer(bootstrap, **extra):
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": "runnel-compat-unused",  # required by the Python binding; never joined
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "error",
        "fetch.wait.max.ms": 100,
    }
    conf.update(extra)
    return Consumer(conf)


def consume_partitions(bootstrap, topic, counts, start=0, timeout=30.0):
    """Reads `counts[p]` records from each partition p from offset `start` (an int, or
    {partition: offset}) with a manually assigned consumer; returns [Got] in the order
    the consumer returned them."""
    starts = start if isinstance(start, dict) else {p: start for p in counts}
    c = consumer(bootstrap)
    try:
        c.assign([TopicPartition(topic, p, starts[p]) for p in counts])
        got, have = [], {p: 0 for p in counts}
        deadline = time.monotonic() + timeout
        while any(have[p] < n for p, n in counts.items()):
            assert time.monotonic() < deadline, f"timed out consuming: have {have}, want {counts}"
            msg = c.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(msg.error())
            ts_type, ts = msg.timestamp()
            assert ts_type == TIMESTAMP_CREATE_TIME, f"timestamp type {ts_type}"
            got.append(Got(msg.partition(), msg.offset(), msg.key(), msg.value(),
                           tuple(msg.headers() or ()), ts))
            have[msg.partition()] += 1
        return got
    finally:
        c.close()


def topic_id(admin, name):
    desc = admin.describe_topics(TopicCollection([name]), request_timeout=TIMEOUT)[name].result(timeout=TIMEOUT)
    return str(desc.topic_id)


def source(entry):
    """A ConfigEntry's source as a ConfigSource (the C layer may hand back the int)."""
    return entry.source if isinstance(entry.source, ConfigSource) else ConfigSource(entry.source)


def describe_topic_configs(admin, name):
    res = ConfigResource(ResourceType.TOPIC, name)
    return admin.describe_configs([res], request_timeout=TIMEOUT)[res].result(timeout=TIMEOUT)


# ---------------------------------------------------------------------------
# tests

def test_every_codec_round_trips_keys_values_headers_timestamps(broker):
    admin = admin_client(broker.bootstrap)
    topic = "ck-codecs"
    create_topic(admin, topic)

    records = make_records(PER_CODEC * len(CODECS), "ck", PARTITIONS)
    delivered = {}
    for n, codec in enumerate(CODECS):
        delivered.update(produce_all(broker.bootstrap, topic, records[n * PER_CODEC:(n + 1) * PER_CODEC], codec))

    counts = {p: sum(1 for r in records if r.partition == p) for p in range(PARTITIONS)}
    got = consume_partitions(broker.bootstrap, topic, counts)
    check_consumed(records, delivered, got)

    # Nothing beyond what was produced: the high watermarks equal the counts.
    c = consumer(broker.bootstrap)
    try:
        for p, n in counts.items():
            assert c.get_watermark_offsets(TopicPartition(topic, p), timeout=TIMEOUT) == (0, n)
    finally:
        c.close()


def test_consume_from_the_middle_of_a_compressed_batch(broker):
    """A fetch from an offset inside a batch returns records from that offset on
    (the client drops the earlier ones of the batch; the broker must serve the batch)."""
    admin = admin_client(broker.bootstrap)
    topic = "ck-mid"
    create_topic(admin, topic, partitions=1)
    records = make_records(40, "mid", partitions=1)
    delivered = produce_all(broker.bootstrap, topic, records, "zstd", **{"linger.ms": 200})
    got = consume_partitions(broker.bootstrap, topic, {0: 40 - 17}, start=17)
    assert [g.offset for g in got] == list(range(17, 40))
    assert [g.key for g in got] == [r.key for r in records[17:]]
    assert delivered[17] == (0, 17)


def test_list_offsets_earliest_latest_and_by_timestamp(broker):
    admin = admin_client(broker.bootstrap)
    topic = "ck-offsets"
    create_topic(admin, topic)
    records = make_records(90, "lo", PARTITIONS)
    # Batches of several records, so by-timestamp lookups land inside compressed batches.
    delivered = produce_all(broker.bootstrap, topic, records, "lz4", **{"linger.ms": 100})
    per_part = {p: [r for r in records if r.partition == p] for p in range(PARTITIONS)}

    # Consumer API: watermarks and offsets_for_times.
    c = consumer(broker.bootstrap)
    try:
        for p, recs in per_part.items():
            assert c.get_watermark_offsets(TopicPartition(topic, p), timeout=TIMEOUT) == (0, len(recs))
        for p, recs in per_part.items():
            target = recs[len(recs) // 2 + 1]
            off = delivered[target.index][1]
            queries = [
                (target.timestamp, off),            # exact timestamp of a record
                (target.timestamp - 5, off),        # between two records of the partition
                (recs[0].timestamp - 60_000, 0),    # before everything: the first record
                (recs[-1].timestamp + 1, -1),       # after everything: no such record (end)
            ]
            for ts, want in queries:
                [res] = c.offsets_for_times([TopicPartition(topic, p, ts)], timeout=TIMEOUT)
                assert res.error is None, res.error
                assert res.offset == want, f"partition {p}: offsets_for_times({ts}) = {res.offset}, want {want}"
    finally:
        c.close()

    # Admin API (ListOffsets with OffsetSpec, KIP-396), including max_timestamp (v7).
    for p, recs in per_part.items():
        tp = TopicPartition(topic, p)
        mid = recs[len(recs) // 3]
        specs = {
            "earliest": (OffsetSpec.earliest(), 0, None),
            "latest": (OffsetSpec.latest(), len(recs), None),
            "max_timestamp": (OffsetSpec.max_timestamp(), len(recs) - 1, recs[-1].timestamp),
            "for_timestamp": (OffsetSpec.for_timestamp(mid.timestamp), delivered[mid.index][1], mid.timestamp),
        }
        for name, (spec, want_off, want_ts) in specs.items():
            info = admin.list_offsets({tp: spec}, request_timeout=TIMEOUT)[tp].result(timeout=TIMEOUT)
            assert info.offset == want_off, f"partition {p} {name}: offset {info.offset}, want {want_off}"
            if want_ts is not None:
                assert info.timestamp == want_ts, f"partition {p} {name}: timestamp {info.timestamp}, want {want_ts}"


def test_describe_configs_values_and_sources(broker_factory):
    b = broker_factory("--log-segment-bytes", "4194304")
    admin = admin_client(b.bootstrap)
    topic = "ck-configs"
    create_topic(admin, topic, config={"retention.ms": "3600000", "cleanup.policy": "compact"})

    entries = describe_topic_configs(admin, topic)
    # Set at creation: dynamic topic configs.
    for name, value in {"retention.ms": "3600000", "cleanup.policy": "compact"}.items():
        e = entries[name]
        assert e.value == value, f"{name} = {e.value}"
        assert source(e) == ConfigSource.DYNAMIC_TOPIC_CONFIG, f"{name} source {e.source}"
        assert not e.is_default and not e.is_read_only and not e.is_sensitive
    # Set on the broker's command line: static broker config, with its broker synonym.
    seg = entries["segment.bytes"]
    assert seg.value == "4194304"
    assert source(seg) == ConfigSource.STATIC_BROKER_CONFIG, f"segment.bytes source {seg.source}"
    # (confluent-kafka keys synonyms by name, so of log.segment.bytes' STATIC_BROKER and
    # DEFAULT entries only one survives: check the name only; kafka-python checks the list.)
    assert "log.segment.bytes" in seg.synonyms, f"synonyms {list(seg.synonyms)}"
    # Untouched: Kafka's defaults.
    for name, value in {"retention.bytes": "-1", "max.message.bytes": "1048588",
                        "min.insync.replicas": "1", "compression.type": "producer",
                        "message.timestamp.type": "CreateTime", "segment.ms": "604800000"}.items():
        e = entries[name]
        assert (e.value, source(e), e.is_default) == (value, ConfigSource.DEFAULT_CONFIG, True), \
            f"{name}: value {e.value} source {e.source} is_default {e.is_default}"

    # Another topic with nothing set: segment.bytes still the broker's, retention the default.
    create_topic(admin, "ck-configs-plain")
    plain = describe_topic_configs(admin, "ck-configs-plain")
    assert (plain["retention.ms"].value, source(plain["retention.ms"])) == ("604800000", ConfigSource.DEFAULT_CONFIG)
    assert (plain["cleanup.policy"].value, source(plain["cleanup.policy"])) == ("delete", ConfigSource.DEFAULT_CONFIG)
    assert plain["segment.bytes"].value == "4194304"

    # The broker resource (node id 1 by default).
    res = ConfigResource(ResourceType.BROKER, "1")
    bcfg = admin.describe_configs([res], request_timeout=TIMEOUT)[res].result(timeout=TIMEOUT)
    assert (bcfg["log.segment.bytes"].value, source(bcfg["log.segment.bytes"])) == \
        ("4194304", ConfigSource.STATIC_BROKER_CONFIG)
    assert bcfg["num.partitions"].value == "1"

    # An unknown topic is an error, not an empty answer.
    res = ConfigResource(ResourceType.TOPIC, "no-such-topic")
    with pytest.raises(KafkaException) as exc:
        admin.describe_configs([res], request_timeout=TIMEOUT)[res].result(timeout=TIMEOUT)
    assert exc.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_metadata_describe_topics_and_cluster(broker):
    admin = admin_client(broker.bootstrap)
    create_topic(admin, "ck-meta", partitions=5)

    desc = admin.describe_topics(TopicCollection(["ck-meta"]), request_timeout=TIMEOUT)["ck-meta"].result(timeout=TIMEOUT)
    assert desc.name == "ck-meta" and not desc.is_internal
    assert str(desc.topic_id) not in ("", "AAAAAAAAAAAAAAAAAAAAAA")  # a real (non-zero) topic id
    assert [p.id for p in desc.partitions] == [0, 1, 2, 3, 4]
    for p in desc.partitions:
        assert (p.leader.id, [r.id for r in p.replicas], [r.id for r in p.isr]) == (1, [1], [1])

    cluster = admin.describe_cluster(request_timeout=TIMEOUT).result(timeout=TIMEOUT)
    assert cluster.cluster_id
    assert [(n.id, n.host, n.port) for n in cluster.nodes] == [(1, "127.0.0.1", broker.port)]
    assert cluster.controller is not None and cluster.controller.id == 1

    # Creating an existing topic is refused with TOPIC_ALREADY_EXISTS.
    fut = admin.create_topics([NewTopic("ck-meta", num_partitions=1, replication_factor=1)],
                              request_timeout=TIMEOUT)["ck-meta"]
    with pytest.raises(KafkaException) as exc:
        fut.result(timeout=TIMEOUT)
    assert exc.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS

    # Metadata for one topic, then for all topics (what list_topics() asks for).
    t = admin.list_topics(topic="ck-meta", timeout=TIMEOUT).topics["ck-meta"]
    assert t.error is None and sorted(t.partitions) == [0, 1, 2, 3, 4]
    md = admin.list_topics(timeout=TIMEOUT)
    assert md.cluster_id == cluster.cluster_id
    assert [(b.id, b.host, b.port) for b in md.brokers.values()] == [(1, "127.0.0.1", broker.port)]
    t = md.topics["ck-meta"]
    assert sorted(t.partitions) == [0, 1, 2, 3, 4]
    for p in t.partitions.values():
        assert (p.leader, p.replicas, p.isrs) == (1, [1], [1])


def _gone(admin, topic):
    """Per-topic Metadata says UNKNOWN_TOPIC_OR_PART (the admin client never auto-creates)."""
    t = admin.list_topics(topic=topic, timeout=TIMEOUT).topics[topic]
    return t.error is not None and t.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_delete_topic(broker):
    admin = admin_client(broker.bootstrap)
    topic = "ck-delete"
    create_topic(admin, topic)
    create_topic(admin, "ck-keep", partitions=1)
    produce_all(broker.bootstrap, topic, make_records(30, "del", PARTITIONS), "gzip")

    admin.delete_topics([topic], operation_timeout=TIMEOUT, request_timeout=TIMEOUT)[topic].result(timeout=TIMEOUT)
    wait_until(lambda: _gone(admin, topic), timeout=TIMEOUT, what="deleted topic to be unknown")
    assert not _gone(admin, "ck-keep")
    # Its data is unreachable: ListOffsets for it fails.
    c = consumer(broker.bootstrap)
    try:
        with pytest.raises(KafkaException) as exc:
            c.get_watermark_offsets(TopicPartition(topic, 0), timeout=TIMEOUT)
        assert exc.value.args[0].code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_PARTITION,
                                            KafkaError._UNKNOWN_TOPIC)
    finally:
        c.close()
    # Deleting it again: UNKNOWN_TOPIC_OR_PART.
    with pytest.raises(KafkaException) as exc:
        admin.delete_topics([topic], request_timeout=TIMEOUT)[topic].result(timeout=TIMEOUT)
    assert exc.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    # Gone from the list of all topics; the other topic is still there.
    topics = admin.list_topics(timeout=TIMEOUT).topics
    assert topic not in topics and "ck-keep" in topics


def test_recreated_topic_is_new_and_empty(broker):
    admin = admin_client(broker.bootstrap)
    topic = "ck-recreate"
    create_topic(admin, topic)
    old_id = topic_id(admin, topic)
    produce_all(broker.bootstrap, topic, make_records(30, "rec", PARTITIONS), "snappy")
    admin.delete_topics([topic], operation_timeout=TIMEOUT, request_timeout=TIMEOUT)[topic].result(timeout=TIMEOUT)
    wait_until(lambda: _gone(admin, topic), timeout=TIMEOUT, what="deleted topic to be unknown")

    # The same name again is a new, empty topic with a new id: old records do not come back.
    create_topic(admin, topic)
    assert topic_id(admin, topic) != old_id
    c = consumer(broker.bootstrap)
    try:
        for p in range(PARTITIONS):
            assert c.get_watermark_offsets(TopicPartition(topic, p), timeout=TIMEOUT) == (0, 0)
    finally:
        c.close()
