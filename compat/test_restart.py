"""Durability and topic auto-creation, driven with confluent-kafka:

- a clean restart (SIGTERM, exit 0) keeps every topic, topic id, config and record;
- kill -9 while several producers write with acks=all: after a restart every acknowledged
  record is at exactly the offset it was acknowledged with, and clients work again;
- auto-creation on (Metadata for an unknown topic creates it with --num-partitions) and
  off (the topic is not created; clients get UNKNOWN_TOPIC_OR_PART)."""

import os
import threading

import pytest
from confluent_kafka import KafkaError, TopicPartition

from conftest import check_consumed, make_records, wait_until
from test_confluent_kafka import (
    TIMEOUT,
    admin_client,
    consume_partitions,
    consumer,
    create_topic,
    describe_topic_configs,
    produce_all,
    producer,
    source,
    topic_id,
)

pytestmark = pytest.mark.timeout(180)  # pytest-timeout: a hard limit per test on top of the client timeouts


def topic_state(admin, names):
    """What a user would compare across a restart: partitions, id and set configs."""
    out = {}
    for name in names:
        # Per-topic Metadata (the admin client never auto-creates): a topic lost in the
        # restart shows up as an error here.
        t = admin.list_topics(topic=name, timeout=TIMEOUT).topics[name]
        assert t.error is None, t.error
        cfg = describe_topic_configs(admin, name)
        out[name] = {
            "partitions": sorted(t.partitions),
            "leaders": sorted(p.leader for p in t.partitions.values()),
            "id": topic_id(admin, name),
            "configs": {k: (e.value, source(e).name) for k, e in cfg.items()},
        }
    return out


def watermarks(bootstrap, topic, partitions):
    c = consumer(bootstrap)
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=TIMEOUT) for p in range(partitions)}
    finally:
        c.close()


def test_clean_restart_keeps_topics_ids_configs_and_records(broker):
    admin = admin_client(broker.bootstrap)
    create_topic(admin, "rs-a", partitions=3, config={"retention.ms": "7200000", "cleanup.policy": "compact"})
    create_topic(admin, "rs-b", partitions=2, config={"max.message.bytes": "2000000"})
    recs_a = make_records(150, "rsa", 3)
    recs_b = make_records(80, "rsb", 2)
    delivered_a = {}
    for n, codec in enumerate(("gzip", "zstd", "none")):
        delivered_a.update(produce_all(broker.bootstrap, "rs-a", recs_a[n * 50:(n + 1) * 50], codec))
    delivered_b = produce_all(broker.bootstrap, "rs-b", recs_b, "lz4")
    before = topic_state(admin, ["rs-a", "rs-b"])
    assert before["rs-a"]["configs"]["retention.ms"] == ("7200000", "DYNAMIC_TOPIC_CONFIG")
    assert before["rs-b"]["configs"]["max.message.bytes"] == ("2000000", "DYNAMIC_TOPIC_CONFIG")
    del admin

    assert broker.stop() == 0, f"SIGTERM exit code is not 0: {broker.log_tail()}"
    broker.start()

    admin = admin_client(broker.bootstrap)
    wait_until(lambda: all(p.leader >= 0 for t in ("rs-a", "rs-b")
                           for p in admin.list_topics(topic=t, timeout=TIMEOUT).topics[t].partitions.values()),
               timeout=TIMEOUT, what="leaders after restart")
    after = topic_state(admin, ["rs-a", "rs-b"])
    assert after == before
    counts_a = {p: sum(1 for r in recs_a if r.partition == p) for p in range(3)}
    counts_b = {p: sum(1 for r in recs_b if r.partition == p) for p in range(2)}
    assert watermarks(broker.bootstrap, "rs-a", 3) == {p: (0, n) for p, n in counts_a.items()}
    assert watermarks(broker.bootstrap, "rs-b", 2) == {p: (0, n) for p, n in counts_b.items()}
    check_consumed(recs_a, delivered_a, consume_partitions(broker.bootstrap, "rs-a", counts_a))
    check_consumed(recs_b, delivered_b, consume_partitions(broker.bootstrap, "rs-b", counts_b))

    # Writes continue after the existing records.
    more = make_records(30, "rsa2", 3, base_ts=recs_a[-1].timestamp + 10)
    delivered_more = produce_all(broker.bootstrap, "rs-a", more, "snappy")
    got = consume_partitions(broker.bootstrap, "rs-a", {p: 10 for p in range(3)}, start=50)
    check_consumed(more, delivered_more, got, start_offsets={p: 50 for p in range(3)})


PRODUCERS = 3
PER_PRODUCER = 3000
KILL_AFTER_ACKS = 2000


def test_kill9_under_load_loses_no_acknowledged_record(broker):
    admin = admin_client(broker.bootstrap)
    topic = "rs-kill"
    partitions = 3
    create_topic(admin, topic, partitions=partitions)

    lock = threading.Lock()
    acked = []    # (producer, seq, partition, offset, key, value), in ack order
    failed = []   # (producer, seq, error)

    def run(pid):
        p = producer(broker.bootstrap, **{
            "linger.ms": 5, "compression.type": ("none", "lz4", "zstd")[pid],
            # Non-idempotent: one request in flight per connection keeps retries in order.
            "max.in.flight.requests.per.connection": 1,
            "message.timeout.ms": 60000, "retry.backoff.ms": 100,
            "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 500,
        })

        def cb(err, msg):
            seq = int(msg.key().split(b"-")[-1])
            with lock:
                if err is not None:
                    failed.append((pid, seq, err))
                else:
                    acked.append((pid, seq, msg.partition(), msg.offset(), msg.key(), msg.value()))

        for seq in range(PER_PRODUCER):
            key = f"p{pid}-{seq:06d}".encode()
            value = f"producer {pid} record {seq} ".encode() * (1 + seq % 5)
            while True:
                try:
                    p.produce(topic, key=key, value=value, partition=seq % partitions, on_delivery=cb)
                    break
                except BufferError:
                    p.poll(0.05)
            # Pace the writers (each poll waits for delivery reports up to 2 ms) so the
            # kill lands while they are still writing.
            p.poll(0.002 if seq % 10 == 0 else 0)
        assert p.flush(90) == 0, f"producer {pid}: messages still queued"

    errors = []

    def guarded(pid):
        try:
            run(pid)
        except BaseException as e:  # noqa: BLE001 - reported by the test thread
            errors.append((pid, e))

    threads = [threading.Thread(target=guarded, args=(i,), daemon=True) for i in range(PRODUCERS)]
    for t in threads:
        t.start()
    wait_until(lambda: len(acked) >= KILL_AFTER_ACKS or errors, timeout=60, interval=0.01,
               what=f"{KILL_AFTER_ACKS} acks")
    assert not errors, errors
    broker.kill9()
    with lock:
        acked_at_kill = list(acked)
    assert len(acked_at_kill) < PRODUCERS * PER_PRODUCER, \
        "every record was acknowledged before the kill: the test did not kill the broker under load"
    broker.start()
    for t in threads:
        t.join(timeout=100)
    assert not any(t.is_alive() for t in threads), "producers did not finish after the restart"
    assert not errors, errors

    # Every record acknowledged before the kill is in the log at its acknowledged offset,
    # and so is every record acknowledged after the restart (retried ones included).
    # Records not acknowledged may or may not be there (at-least-once without idempotence).
    with lock:
        all_acked = list(acked)
    assert not failed, f"{len(failed)} deliveries failed after the restart, e.g. {failed[:3]}"
    positions = {}
    for pid, seq, part, off, key, value in all_acked:
        assert (part, off) not in positions, f"two acknowledgements for partition {part} offset {off}"
        positions[(part, off)] = (key, value)
    hw = watermarks(broker.bootstrap, topic, partitions)
    for part in range(partitions):
        low, high = hw[part]
        assert low == 0
        top = max((off for (p_, off) in positions if p_ == part), default=-1)
        assert high > top, f"partition {part}: high watermark {high} <= acknowledged offset {top}"
    log = consume_partitions(broker.bootstrap, topic, {p: hw[p][1] for p in range(partitions)}, timeout=60)
    by_pos = {(g.partition, g.offset): g for g in log}
    for part in range(partitions):
        offs = sorted(o for (p_, o) in by_pos if p_ == part)
        assert offs == list(range(hw[part][1])), f"partition {part}: the log has holes"
    missing = [(pos, kv) for pos, kv in positions.items()
               if pos not in by_pos or (by_pos[pos].key, by_pos[pos].value) != kv]
    assert not missing, (f"{len(missing)} acknowledged records are not at their offsets "
                         f"(of {len(acked_at_kill)} acked before the kill), e.g. {missing[:3]}; "
                         f"broker log: {broker.log_tail(2000)}")
    # In order: for each producer and partition, sequence numbers increase with offsets.
    for pid in range(PRODUCERS):
        for part in range(partitions):
            mine = sorted((off, seq) for p_, seq, pt, off, _, _ in all_acked if p_ == pid and pt == part)
            seqs = [s for _, s in mine]
            assert seqs == sorted(seqs), f"producer {pid} partition {part}: acknowledged out of order"
    assert len(all_acked) == PRODUCERS * PER_PRODUCER
    print(f"kill -9 after {len(acked_at_kill)} of {PRODUCERS * PER_PRODUCER} acknowledgements; "
          f"log holds {len(log)} records ({len(log) - len(all_acked)} unacknowledged duplicates from retries)")

    # The restarted broker serves new clients: produce and consume.
    fresh = make_records(30, "after-kill", partitions)
    delivered = produce_all(broker.bootstrap, topic, fresh, "gzip")
    start = {p: hw[p][1] for p in range(partitions)}
    got = consume_partitions(broker.bootstrap, topic, {p: 10 for p in range(partitions)}, start=start)
    check_consumed(fresh, delivered, got, start_offsets=start)


def test_auto_create_on(broker_factory):
    b = broker_factory("--num-partitions", "4")
    admin = admin_client(b.bootstrap)

    # Producing to an unknown topic creates it (the producer's Metadata allows it).
    p = producer(b.bootstrap)
    delivered = []
    p.produce("auto-produced", key=b"k", value=b"v", partition=3,
              on_delivery=lambda err, msg: delivered.append((err, msg.partition(), msg.offset())))
    assert p.flush(TIMEOUT) == 0
    assert delivered == [(None, 3, 0)]
    t = admin.list_topics(topic="auto-produced", timeout=TIMEOUT).topics["auto-produced"]
    assert t.error is None and sorted(t.partitions) == [0, 1, 2, 3]

    # A Metadata request alone creates it too.
    md = p.list_topics(topic="auto-metadata", timeout=TIMEOUT)
    t = md.topics["auto-metadata"]
    assert t.error is None and sorted(t.partitions) == [0, 1, 2, 3]
    # ... with the defaults as its configs.
    cfg = describe_topic_configs(admin, "auto-metadata")
    assert {source(e).name for e in cfg.values()} == {"DEFAULT_CONFIG"}

    # A client that does not allow auto-creation (Metadata v4+ flag) does not create it.
    c = consumer(b.bootstrap, **{"allow.auto.create.topics": False})
    try:
        t = c.list_topics(topic="not-auto", timeout=TIMEOUT).topics["not-auto"]
        assert t.error is not None and t.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    finally:
        c.close()

    # The full topic list: both created, the other one not.
    topics = admin.list_topics(timeout=TIMEOUT).topics
    assert {"auto-produced", "auto-metadata"} <= set(topics) and "not-auto" not in topics


def test_auto_create_off(broker_factory):
    b = broker_factory("--auto-create-topics-enable", "false")
    admin = admin_client(b.bootstrap)
    p = producer(b.bootstrap, **{"topic.metadata.propagation.max.ms": 2000, "message.timeout.ms": 15000})

    md = p.list_topics(topic="never-created", timeout=TIMEOUT)
    t = md.topics["never-created"]
    assert t.error is not None and t.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, t.error

    reports = []
    p.produce("never-created", key=b"k", value=b"v",
              on_delivery=lambda err, msg: reports.append(err))
    assert p.flush(30) == 0
    assert len(reports) == 1 and reports[0] is not None, reports
    # librdkafka fails the message with the broker's UNKNOWN_TOPIC_OR_PART, or with its
    # local _UNKNOWN_TOPIC derived from that same Metadata answer.
    assert reports[0].code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC), reports[0]

    # Explicit creation still works.
    create_topic(admin, "created-explicitly", partitions=2)
    delivered = produce_all(b.bootstrap, "created-explicitly", make_records(10, "off", 2), "none")
    assert sorted(delivered.values()) == [(0, o) for o in range(5)] + [(1, o) for o in range(5)]

    # The full topic list has the created topic only.
    topics = admin.list_topics(timeout=TIMEOUT).topics
    assert "created-explicitly" in topics and "never-created" not in topics


def log_fds(pid, topic):
    """Descriptors the broker holds on files of `topic`'s partitions."""
    held = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if f"/{topic}-" in os.readlink(f"/proc/{pid}/fd/{fd}"):
                held += 1
        except OSError:
            pass
    return held


def test_more_partitions_than_the_open_file_limit_could_hold_open_keep_working_across_a_restart(broker_factory):
    # With `ulimit -n 1024` the broker keeps at most (1024 - 256) / 2 = 384 log files open;
    # 300 partitions have 1,500 (four per segment, one raft-applied each).
    limit, budget, partitions = 1024, 384, 300
    broker = broker_factory(nofile=limit)
    admin = admin_client(broker.bootstrap)
    topic = "ofl"
    create_topic(admin, topic, partitions=partitions)
    first = make_records(3 * partitions, "ofl-1", partitions=partitions)
    delivered = produce_all(broker.bootstrap, topic, first, "none")
    counts = {p: 3 for p in range(partitions)}
    check_consumed(first, delivered, consume_partitions(broker.bootstrap, topic, counts, timeout=90))
    held = log_fds(broker.proc.pid, topic)
    assert held <= budget, f"{held} descriptors on the topic's files, over the budget of {budget}"

    assert broker.stop() == 0
    broker.start()
    admin = admin_client(broker.bootstrap)
    assert topic_state(admin, [topic])[topic]["partitions"] == list(range(partitions))
    second = make_records(2 * partitions, "ofl-2", partitions=partitions)
    delivered_again = produce_all(broker.bootstrap, topic, second, "none")
    # Everything from before the restart, then everything after it, intact and in place.
    got = consume_partitions(broker.bootstrap, topic, {p: 5 for p in range(partitions)}, timeout=90)
    check_consumed(first, delivered, [g for g in got if g.offset < 3])
    check_consumed(second, delivered_again, [g for g in got if g.offset >= 3], start_offsets={p: 3 for p in range(partitions)})
    assert log_fds(broker.proc.pid, topic) <= budget
