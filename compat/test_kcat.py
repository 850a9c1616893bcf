"""kcat from Debian (librdkafka 2.0) against the real broker: produce in every codec with
keys and headers to explicit partitions, consume with a format string, metadata (-L),
offset queries (-Q).

kcat has no admin mode: topics are created, described (DescribeConfigs) and deleted with
confluent-kafka's AdminClient; everything else goes through kcat."""

import json
import re
import shutil
import subprocess
import time

import pytest

from conftest import CODECS, wait_until
from test_confluent_kafka import admin_client, create_topic, describe_topic_configs, source
from confluent_kafka.admin import ConfigSource

KCAT = shutil.which("kcat") or "/usr/bin/kcat"
PARTITIONS = 3
PER_RUN = 25  # records per (codec, partition) kcat run

pytestmark = [
    pytest.mark.skipif(not shutil.which("kcat"), reason="kcat is not installed (apt-get install kcat)"),
    pytest.mark.timeout(120),  # pytest-timeout: a hard limit per test on top of the client timeouts
]


def kcat(bootstrap, *args, stdin=None, timeout=60):
    cmd = [KCAT, "-b", bootstrap, "-m", "15", *args]
    r = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd} exited {r.returncode}: {r.stderr.decode(errors='replace')[-2000:]}"
    return r.stdout.decode()


def kcat_produce(bootstrap, topic, partition, codec, lines, headers):
    args = ["-P", "-t", topic, "-p", str(partition), "-K", "\\t",
            "-X", "enable.idempotence=false", "-X", "acks=all", "-X", "linger.ms=50"]
    if codec != "none":
        args += ["-z", codec]
    for name, value in headers:
        args += ["-H", f"{name}={value}"]
    kcat(bootstrap, *args, stdin="".join(f"{k}\t{v}\n" for k, v in lines).encode())


FMT = "%p\\t%o\\t%T\\t%k\\t%h\\t%s\\n"


def kcat_consume(bootstrap, topic, *extra, offset="beginning"):
    """Records of `topic` (all partitions unless -p is given, to the end) as dicts, in
    kcat's order."""
    out = kcat(bootstrap, "-C", "-t", topic, "-o", offset, "-e", "-f", FMT, *extra)
    records = []
    for line in out.splitlines():
        p, o, ts, k, h, v = line.split("\t")
        headers = [tuple(x.split("=", 1)) for x in h.split(",")] if h else []
        records.append(dict(partition=int(p), offset=int(o), timestamp=int(ts), key=k, headers=headers, value=v))
    return records


def kcat_query(bootstrap, topic, partition, ts):
    out = kcat(bootstrap, "-Q", "-t", f"{topic}:{partition}:{ts}")
    m = re.search(rf"^{re.escape(topic)} \[{partition}\]\s+offset (-?\d+)\s*$", out, re.M)
    assert m, f"unexpected -Q output: {out!r}"
    return int(m.group(1))


def produce_every_codec(bootstrap, topic):
    """One kcat run per (codec, partition), keys with -K, headers with -H. Returns the
    expected records per partition in produce order, and each run's wall-clock window."""
    expected = {p: [] for p in range(PARTITIONS)}  # (key, value, headers)
    windows = {p: [] for p in range(PARTITIONS)}   # (first index, last index, t0, t1)
    for codec in CODECS:
        for p in range(PARTITIONS):
            lines = [(f"{codec}-p{p}-key-{i:03d}", f"{codec} value {i} for partition {p} " + "abc " * (i % 20))
                     for i in range(PER_RUN)]
            headers = [("codec", codec), ("part", str(p)), ("dup", "first"), ("dup", "second")]
            t0 = int(time.time() * 1000)
            kcat_produce(bootstrap, topic, p, codec, lines, headers)
            t1 = int(time.time() * 1000)
            first = len(expected[p])
            expected[p] += [(k, v, headers) for k, v in lines]
            windows[p].append((first, len(expected[p]) - 1, t0, t1))
    return expected, windows


@pytest.fixture
def kcat_topic(broker):
    """A 3-partition topic made with confluent-kafka's AdminClient (kcat cannot create
    topics), filled by kcat in every codec."""
    admin = admin_client(broker.bootstrap)
    topic = "kcat-codecs"
    create_topic(admin, topic)
    expected, windows = produce_every_codec(broker.bootstrap, topic)
    return topic, expected, windows


def test_kcat_produce_and_consume_every_codec(broker, kcat_topic):
    topic, expected, windows = kcat_topic
    got = kcat_consume(broker.bootstrap, topic)
    by_part = {p: [r for r in got if r["partition"] == p] for p in range(PARTITIONS)}
    for p in range(PARTITIONS):
        recs = by_part[p]
        assert [r["offset"] for r in recs] == list(range(len(expected[p]))), f"partition {p}: offsets"
        for r, (k, v, headers) in zip(recs, expected[p]):
            where = f"partition {p} offset {r['offset']}"
            assert (r["key"], r["value"]) == (k, v), where
            assert r["headers"] == headers, f"{where}: headers {r['headers']}"
        # CreateTime stamped by the producer: inside the run's wall-clock window, in order.
        for first, last, t0, t1 in windows[p]:
            for r in recs[first:last + 1]:
                assert t0 <= r["timestamp"] <= t1, f"partition {p} offset {r['offset']}: ts {r['timestamp']} not in [{t0}, {t1}]"
        stamps = [r["timestamp"] for r in recs]
        assert stamps == sorted(stamps), f"partition {p}: timestamps go backwards"


def stored_codecs(data_dir, topic, partition):
    """The compression codec of every record batch stored for the partition, in log order,
    read from its segment files (which hold the batches byte for byte as produced)."""
    codecs = []
    pdir = data_dir / "partitions" / f"{topic}-{partition}"
    for seg in sorted(pdir.glob("*.log")):
        data = seg.read_bytes()
        pos = 0
        while pos + 23 <= len(data):
            length = int.from_bytes(data[pos + 8:pos + 12], "big")
            attributes = int.from_bytes(data[pos + 21:pos + 23], "big")
            codecs.append(attributes & 7)
            pos += 12 + length
    return codecs


def test_kcat_compresses_with_the_codec_asked_for(broker, kcat_topic):
    """librdkafka before 2.10 sends uncompressed batches, whatever -z says, to a broker whose
    Produce minimum version is above 0 (librdkafka #4956); Runnel advertises 0 as Kafka 4.0
    does, so every codec must reach the log as asked."""
    topic, _, _ = kcat_topic
    ids = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
    for p in range(PARTITIONS):
        assert set(stored_codecs(broker.data_dir, topic, p)) == {ids[c] for c in CODECS}, f"partition {p}"


def test_kcat_consume_one_partition_from_an_offset(broker, kcat_topic):
    topic, expected, _ = kcat_topic
    got = kcat_consume(broker.bootstrap, topic, "-p", "1", "-c", "5", offset="37")
    assert [(r["partition"], r["offset"], r["key"]) for r in got] == [(1, o, expected[1][o][0]) for o in range(37, 42)]
    # Relative to the end: the last 3 records of partition 2.
    n = len(expected[2])
    got = kcat_consume(broker.bootstrap, topic, "-p", "2", offset="-3")
    assert [(r["offset"], r["key"]) for r in got] == [(o, expected[2][o][0]) for o in range(n - 3, n)]


def test_kcat_metadata(broker, kcat_topic):
    topic, _, _ = kcat_topic
    md = json.loads(kcat(broker.bootstrap, "-L", "-J"))
    assert [(b["id"], b["name"]) for b in md["brokers"]] == [(1, broker.bootstrap)]
    assert md["controllerid"] == 1
    [t] = [t for t in md["topics"] if t["topic"] == topic]
    assert "error" not in t, t
    assert sorted(x["partition"] for x in t["partitions"]) == [0, 1, 2]
    for x in t["partitions"]:
        assert x["leader"] == 1 and [r["id"] for r in x["replicas"]] == [1] and [r["id"] for r in x["isrs"]] == [1]


def test_kcat_query_offsets(broker, kcat_topic):
    topic, expected, _ = kcat_topic
    # Timestamps as stored, read back from absolute offset 0 (no ListOffsets needed).
    got = kcat_consume(broker.bootstrap, topic, offset="0")
    for p in range(PARTITIONS):
        recs = [r for r in got if r["partition"] == p]
        assert len(recs) == len(expected[p])
        assert kcat_query(broker.bootstrap, topic, p, -2) == 0                 # earliest
        assert kcat_query(broker.bootstrap, topic, p, -1) == len(recs)         # latest
        for r in (recs[0], recs[PER_RUN], recs[len(recs) // 2], recs[-1]):    # by timestamp
            want = min(x["offset"] for x in recs if x["timestamp"] >= r["timestamp"])
            assert kcat_query(broker.bootstrap, topic, p, r["timestamp"]) == want, f"partition {p} ts {r['timestamp']}"
        assert kcat_query(broker.bootstrap, topic, p, recs[-1]["timestamp"] + 1) == -1


def test_kcat_topic_configs_and_delete(broker, kcat_topic):
    topic, _, _ = kcat_topic
    # DescribeConfigs and DeleteTopics: kcat has neither, so confluent-kafka's AdminClient.
    admin = admin_client(broker.bootstrap)
    entries = describe_topic_configs(admin, topic)
    assert (entries["cleanup.policy"].value, source(entries["cleanup.policy"])) == ("delete", ConfigSource.DEFAULT_CONFIG)
    admin.delete_topics([topic], operation_timeout=20, request_timeout=20)[topic].result(timeout=20)
    # kcat sees it gone (-L for all topics: asking for the topic by name could auto-create it).
    wait_until(lambda: topic not in [t["topic"] for t in json.loads(kcat(broker.bootstrap, "-L", "-J"))["topics"]],
               timeout=20, what="deleted topic to leave kcat's metadata")
