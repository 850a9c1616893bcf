"""sarama 1.22 (Debian's golang-github-shopify-sarama-dev, unchanged) against the real
broker: ClusterAdmin.CreateTopic, a SyncProducer per codec (keyed records with headers),
Consumer.ConsumePartition (no group), Client.GetOffset (earliest, latest, by timestamp),
DescribeConfigs, ClusterAdmin.DeleteTopic. compat/go/src/saramacompat (built here once into
a cache directory) runs the client once per module and prints what it saw; each test below
checks one part of it. The last tests cross the clients: what kafkajs wrote, sarama reads
(and sees each batch's codec), and the other way round.

sarama 1.22 sends the same versions whatever config.Version says: Produce v3, Fetch v4,
ListOffsets v1, Metadata v5, CreateTopics v2, DeleteTopics v1, and DescribeConfigs v0 from
ClusterAdmin.DescribeConfig/ListTopics. config.Version = V2_1_0_0 (the newest it knows)
enables record headers and zstd."""

import pytest

from conftest import Broker
from stock_clients import (CODECS, PARTITIONS, by_partition, check_produced, check_roundtrip,
                           expected_offset_for_timestamp, run_kafkajs, run_sarama, sarama_binary,
                           step_ok)

TOPIC = "sarama-roundtrip"

TOPIC_CONFIG, DEFAULT_CONFIG = 1, 5
TOPIC_ALREADY_EXISTS, UNKNOWN_TOPIC_OR_PARTITION = 36, 3


@pytest.fixture(scope="module")
def sarama():
    return sarama_binary()


@pytest.fixture(scope="module")
def run(sarama, tmp_path_factory):
    """One broker and one run of the whole sarama scenario for this module's tests."""
    broker = Broker(tmp_path_factory.mktemp("sarama") / "data").start()
    try:
        out = run_sarama(sarama, broker.bootstrap, "scenario", TOPIC, broker=broker)
        yield broker, out
    finally:
        try:
            broker.stop(timeout=15)
        except Exception:
            broker.kill9()


def test_create_topic_with_cluster_admin(run):
    broker, out = run
    assert step_ok(out, "create", broker) == {"ok": True}
    again = step_ok(out, "create_again", broker)
    assert again.get("topic_error") == TOPIC_ALREADY_EXISTS, again
    assert TOPIC in step_ok(out, "topics_after_create", broker)
    (topic,) = step_ok(out, "metadata", broker)
    assert topic["name"] == TOPIC and topic["err"] == 0
    assert sorted(p["id"] for p in topic["partitions"]) == list(range(PARTITIONS))
    for p in topic["partitions"]:
        assert p["err"] == 0 and p["leader"] >= 0
        assert p["replicas"] == [p["leader"]] and p["isr"] == [p["leader"]]


def test_produce_in_every_codec(run):
    broker, out = run
    produce = step_ok(out, "produce", broker)
    for codec in CODECS:
        assert produce["sends"][codec] == {"ok": True}, f"{codec}: {produce['sends'][codec]}"
    check_produced(produce["produced"])


def test_records_read_back_unchanged_and_in_order(run):
    broker, out = run
    check_roundtrip(step_ok(out, "produce", broker)["produced"], step_ok(out, "consume", broker)["partitions"])


def check_batches(produced, consumed):
    """Per partition, one batch per codec in production order, stored and returned in the
    codec it was produced with (seen by sarama's own decoder of a Fetch response)."""
    parts = by_partition(produced)
    for p in range(PARTITIONS):
        batches = consumed[str(p)]["batches"]
        assert [b["codec"] for b in batches] == CODECS, f"partition {p}: {batches}"
        for codec, b in zip(CODECS, batches):
            offsets = [r["offset"] for r in parts[p] if r["codec"] == codec]
            assert (b["baseOffset"], b["lastOffset"], b["records"], b["magic"]) == \
                (min(offsets), max(offsets), len(offsets), 2), f"partition {p}: {b}"


def test_batches_stored_in_their_codec(run):
    broker, out = run
    check_batches(step_ok(out, "produce", broker)["produced"], step_ok(out, "consume", broker)["partitions"])


def test_get_offset_earliest_and_latest(run):
    broker, out = run
    counts = {p: len(recs) for p, recs in by_partition(step_ok(out, "produce", broker)["produced"]).items()}
    offsets = step_ok(out, "offsets", broker)
    assert offsets == {str(p): {"earliest": 0, "latest": counts[p]} for p in range(PARTITIONS)}


def test_get_offset_by_timestamp(run):
    """Every produced record's timestamp (most inside compressed batches), one before and
    one after all of them (-1: no such record)."""
    broker, out = run
    produced = step_ok(out, "produce", broker)["produced"]
    answers = step_ok(out, "offsets_by_timestamp", broker)
    assert len(answers) == len(produced) + 2
    for answer in answers:
        ts = answer["timestamp"]
        want = {str(p): expected_offset_for_timestamp(produced, p, ts) for p in range(PARTITIONS)}
        assert answer["partitions"] == want, f"offsets for timestamp {ts}"


def test_describe_configs(run):
    """DescribeConfigs v1 (with synonyms) sent with sarama's own request and response types;
    see test_cluster_admin_describe_config for ClusterAdmin.DescribeConfig (v0)."""
    broker, out = run
    described = step_ok(out, "describe_configs", broker)
    (res,) = described["all"]
    assert res["errorCode"] == 0 and res["name"] == TOPIC and res["type"] == 2, res
    entries = res["configs"]
    for name, value in out["created_configs"].items():
        e = entries[name]
        # (sarama decodes `default` only from v0 answers; v1 has the source instead.)
        assert (e["value"], e["source"]) == (value, TOPIC_CONFIG), (name, e)
        # Kafka lists the config itself first among its synonyms.
        assert e["synonyms"] and e["synonyms"][0] == {"name": name, "value": value, "source": TOPIC_CONFIG}, e
    defaults = {
        "retention.ms": "604800000",
        "cleanup.policy": "delete",
        "segment.bytes": "1073741824",
        "min.insync.replicas": "1",
        "compression.type": "producer",
        "message.timestamp.type": "CreateTime",
    }
    for name, value in defaults.items():
        e = entries[name]
        assert (e["value"], e["source"]) == (value, DEFAULT_CONFIG), (name, e)
    for name, e in entries.items():
        assert e["readOnly"] is False and e["sensitive"] is False, (name, e)

    (some,) = described["some"]
    assert some["errorCode"] == 0
    assert {k: v["value"] for k, v in some["configs"].items()} == {
        "retention.ms": "604800000", "cleanup.policy": "delete", "max.message.bytes": "2097152"}

    (missing,) = described["missing"]
    assert missing["errorCode"] == UNKNOWN_TOPIC_OR_PARTITION, missing


def test_delete_topic(run):
    broker, out = run
    assert TOPIC not in step_ok(out, "delete", broker)["topics_after"]
    (after,) = step_ok(out, "metadata_after_delete", broker)
    assert after["name"] == TOPIC and after["err"] == UNKNOWN_TOPIC_OR_PARTITION, after


def test_broker_still_running(run):
    broker, _ = run
    assert broker.proc.poll() is None, f"broker exited:\n{broker.log_tail()}"
    assert "panicked" not in broker.log_tail(200_000)


# ------------------------------------------------------------ across the two clients

def create_topic(sarama, broker, topic):
    out = run_sarama(sarama, broker.bootstrap, "create", topic, broker=broker)
    assert step_ok(out, "create", broker) == {"ok": True}


def test_sarama_reads_what_kafkajs_wrote(sarama, broker):
    """kafkajs' snappy (xerial-framed), LZ4-frame and zstd batches, written by the codecs of
    compat/js/codecs.js, decode in sarama (go-xerial-snappy, pierrec/lz4, libzstd)."""
    topic = "kafkajs-to-sarama"
    create_topic(sarama, broker, topic)
    produced = run_kafkajs(broker.bootstrap, "produce", topic, broker=broker)
    for codec in CODECS:
        assert "error" not in produced["sends"][codec], produced["sends"][codec]
    check_produced(produced["produced"])
    consumed = run_sarama(sarama, broker.bootstrap, "consume", topic, broker=broker)
    assert "error" not in consumed, consumed
    check_roundtrip(produced["produced"], consumed["partitions"])
    check_batches(produced["produced"], consumed["partitions"])


def test_kafkajs_reads_what_sarama_wrote(sarama, broker):
    """sarama's batches (its snappy is unframed) decode in kafkajs."""
    topic = "sarama-to-kafkajs"
    create_topic(sarama, broker, topic)
    produced = run_sarama(sarama, broker.bootstrap, "produce", topic, broker=broker)
    for codec in CODECS:
        assert produced["sends"][codec] == {"ok": True}, produced["sends"][codec]
    check_produced(produced["produced"])
    consumed = run_kafkajs(broker.bootstrap, "consume", topic, broker=broker)
    check_roundtrip(produced["produced"], consumed["partitions"])
    for codec in CODECS[1:]:
        assert consumed["codec_stats"].get(codec, {}).get("decompress", 0) >= PARTITIONS, consumed["codec_stats"]


def test_cluster_admin_describe_config(sarama, broker):
    """ClusterAdmin.DescribeConfig and ClusterAdmin.ListTopics of sarama 1.22 send
    DescribeConfigs v0, which Kafka 4.0 removed (KIP-896) and the broker does not advertise."""
    topic = "sarama-admin-v0"
    create_topic(sarama, broker, topic)
    out = run_sarama(sarama, broker.bootstrap, "admin-v0", topic, broker=broker)
    configs = step_ok(out, "describe_config", broker)
    assert configs["max.message.bytes"]["value"] == "2097152"
    assert configs["retention.ms"] == {"value": "604800000", "default": True}
    topics = step_ok(out, "list_topics", broker)
    assert topics[topic]["partitions"] == PARTITIONS
    assert topics[topic]["configs"] == {"max.message.bytes": "2097152", "retention.bytes": "1073741824"}
