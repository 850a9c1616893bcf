"""kafkajs (npm, unchanged) against the real broker: create a topic with its admin, produce
keyed records with headers in every codec (gzip built in; snappy, lz4 and zstd through the
pure-JS/WASM codecs of compat/js/codecs.js), read them back, list offsets, describe configs
and delete the topic. compat/js/roundtrip.js runs the client once per module and prints what
it saw; each test below checks one part of it.

Reading without a consumer group: kafkajs' Consumer always joins a group (groups are tested
in test_groups_kafkajs.py), so this scenario reads with kafkajs' own Cluster/Broker classes: metadata
for the leaders, then Broker.fetch(), which kafkajs encodes and decodes as its Consumer does."""

import pytest

from conftest import Broker
from stock_clients import (CODECS, PARTITIONS, by_partition, check_produced,
                           check_roundtrip, expected_offset_for_timestamp, kafkajs_ready,
                           run_kafkajs, step_ok)

TOPIC = "kafkajs-roundtrip"

# Kafka's DescribeConfigs config sources.
TOPIC_CONFIG, DEFAULT_CONFIG = 1, 5
UNKNOWN_TOPIC_OR_PARTITION = 3


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One broker and one run of the whole kafkajs scenario for this module's tests."""
    kafkajs_ready()
    broker = Broker(tmp_path_factory.mktemp("kafkajs") / "data").start()
    try:
        out = run_kafkajs(broker.bootstrap, "scenario", TOPIC, broker=broker)
        yield broker, out
    finally:
        try:
            broker.stop(timeout=15)
        except Exception:
            broker.kill9()


def test_create_topic_with_admin(run):
    broker, out = run
    assert step_ok(out, "create", broker) == {"created": True}
    # kafkajs answers false (not an error) for a topic that already exists.
    assert step_ok(out, "create_again", broker) == {"created": False}
    assert TOPIC in step_ok(out, "list_after_create", broker)["topics"]
    (topic,) = step_ok(out, "metadata", broker)
    assert topic["name"] == TOPIC
    assert sorted(p["partitionId"] for p in topic["partitions"]) == list(range(PARTITIONS))
    for p in topic["partitions"]:
        assert p["partitionErrorCode"] == 0
        assert p["leader"] >= 0
        assert p["replicas"] == [p["leader"]] and p["isr"] == [p["leader"]]


def test_produce_in_every_codec(run):
    broker, out = run
    produce = step_ok(out, "produce", broker)
    for codec in CODECS:
        meta = produce["sends"][codec]
        assert not (isinstance(meta, dict) and "error" in meta), f"{codec}: {meta}"
        assert sorted(m["partition"] for m in meta) == list(range(PARTITIONS)), codec
        assert all(m["errorCode"] == 0 for m in meta), f"{codec}: {meta}"
    check_produced(produce["produced"])


def test_records_read_back_unchanged_and_in_order(run):
    broker, out = run
    produced = step_ok(out, "produce", broker)["produced"]
    consumed = step_ok(out, "consume", broker)["partitions"]
    check_roundtrip(produced, consumed)
    for p in consumed.values():
        assert {r["magic"] for r in p["records"]} == {2}


def test_batches_went_and_came_back_compressed(run):
    """Each codec compressed one batch per partition on the way in, and the broker returned
    batches in that codec, which kafkajs decompressed on the way out."""
    broker, out = run
    step_ok(out, "consume", broker)
    stats = out["codec_stats"]
    for codec in CODECS[1:]:
        assert codec in stats, f"{codec} codec never used; stats {stats}"
        assert stats[codec]["compress"] == PARTITIONS, f"{codec}: {stats[codec]}"
        assert stats[codec]["decompress"] >= PARTITIONS, f"{codec}: {stats[codec]}"


def test_list_offsets_earliest_and_latest(run):
    broker, out = run
    counts = {p: len(recs) for p, recs in by_partition(step_ok(out, "produce", broker)["produced"]).items()}
    offsets = step_ok(out, "offsets", broker)
    assert sorted(o["partition"] for o in offsets) == list(range(PARTITIONS))
    for o in offsets:
        assert o["low"] == "0", o
        assert o["high"] == str(counts[o["partition"]]), o
        assert o["offset"] == o["high"], o


def test_list_offsets_by_timestamp(run):
    """For every produced record's timestamp (most inside compressed batches), before and
    after all of them: the first offset at or after that time. kafkajs' admin reports
    "none" (-1) as the latest offset; the raw -1 is checked too."""
    broker, out = run
    produced = step_ok(out, "produce", broker)["produced"]
    counts = {p: len(recs) for p, recs in by_partition(produced).items()}
    answers = step_ok(out, "offsets_by_timestamp", broker)
    assert len(answers) == len(produced) + 2
    for answer in answers:
        ts = answer["timestamp"]
        got = {p["partition"]: int(p["offset"]) for p in answer["partitions"]}
        want = {}
        for p in range(PARTITIONS):
            e = expected_offset_for_timestamp(produced, p, ts)
            want[p] = counts[p] if e == -1 else e
        assert got == want, f"offsets for timestamp {ts}"
    raw = step_ok(out, "offsets_by_timestamp_raw", broker)
    assert sorted((p["partition"], p["offset"]) for p in raw) == [(p, "-1") for p in range(PARTITIONS)]


def test_describe_configs(run):
    broker, out = run
    described = step_ok(out, "describe_configs", broker)
    (res,) = described["all"]
    assert res["errorCode"] == 0
    assert res["resourceName"] == TOPIC and res["resourceType"] == 2
    entries = {e["configName"]: e for e in res["configEntries"]}
    assert len(entries) == len(res["configEntries"]), "a config listed twice"
    # Set at creation.
    for name, value in out["created_configs"].items():
        e = entries[name]
        assert e["configValue"] == value, name
        assert e["configSource"] == TOPIC_CONFIG and e["isDefault"] is False, e
    # Defaults a user looks at.
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
        assert e["configValue"] == value, name
        assert e["configSource"] == DEFAULT_CONFIG and e["isDefault"] is True, e
    for e in entries.values():
        assert e["readOnly"] is False and e["isSensitive"] is False, e

    (some,) = described["some"]
    assert some["errorCode"] == 0
    assert {e["configName"]: e["configValue"] for e in some["configEntries"]} == {
        "retention.ms": "604800000", "cleanup.policy": "delete", "max.message.bytes": "2097152"}

    missing = described["missing"]
    assert isinstance(missing, dict) and missing.get("type") == "UNKNOWN_TOPIC_OR_PARTITION", missing


def test_delete_topic(run):
    broker, out = run
    assert TOPIC not in step_ok(out, "delete", broker)["topics_after"]
    after = out["metadata_after_delete"]
    assert isinstance(after, dict) and after.get("type") == "UNKNOWN_TOPIC_OR_PARTITION", after


def test_broker_still_running(run):
    broker, _ = run
    assert broker.proc.poll() is None, f"broker exited:\n{broker.log_tail()}"
    assert "panicked" not in broker.log_tail(200_000)
