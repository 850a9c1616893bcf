"""Committed offsets without group membership: consumers that assign partitions themselves
commit (OffsetCommit), read them back (OffsetFetch, also batched through the admin API),
resume where they left off after the broker restarts or is killed, and admins delete them
(OffsetDelete). Membership (JoinGroup and friends) is tested once the broker has it."""

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata
from kafka import TopicPartition as KpTopicPartition

from test_confluent_kafka import TIMEOUT, admin_client, create_topic, producer

pytestmark = pytest.mark.timeout(120)


def fill(bootstrap, topic, partitions, per_partition):
    p = producer(bootstrap)
    for part in range(partitions):
        for i in range(per_partition):
            p.produce(topic, value=f"{part}-{i}".encode(), partition=part)
    assert p.flush(TIMEOUT) == 0


def consumer(bootstrap, group):
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                     "auto.offset.reset": "earliest", "socket.timeout.ms": 10000})


def read_n(c, n):
    got = []
    while len(got) < n:
        m = c.poll(TIMEOUT)
        assert m is not None, f"timed out after {len(got)} of {n} records"
        assert m.error() is None, m.error()
        got.append((m.partition(), m.offset(), m.value().decode()))
    return got


def test_manual_commits_resume_after_restart_and_kill9(broker):
    admin = admin_client(broker.bootstrap)
    create_topic(admin, "offs", partitions=2)
    fill(broker.bootstrap, "offs", 2, 10)

    c = consumer(broker.bootstrap, "g1")
    c.assign([TopicPartition("offs", 0), TopicPartition("offs", 1)])
    read_n(c, 20)
    c.commit(offsets=[TopicPartition("offs", 0, 4, metadata="m0"), TopicPartition("offs", 1, 7)], asynchronous=False)
    committed = {tp.partition: (tp.offset, tp.metadata) for tp in
                 c.committed([TopicPartition("offs", 0), TopicPartition("offs", 1)], timeout=TIMEOUT)}
    assert committed == {0: (4, "m0"), 1: (7, None)} or committed == {0: (4, "m0"), 1: (7, "")}
    c.close()

    for stop in ("clean", "kill9"):
        if stop == "clean":
            assert broker.stop() == 0
        else:
            broker.kill9()
        broker.start()
        c = consumer(broker.bootstrap, "g1")
        # No explicit offsets: the consumer starts from the committed ones.
        c.assign([TopicPartition("offs", 0), TopicPartition("offs", 1)])
        got = read_n(c, (10 - 4) + (10 - 7))
        firsts = {}
        for part, off, _ in got:
            firsts.setdefault(part, off)
        assert firsts == {0: 4, 1: 7}, got
        c.close()

    # A group that never committed starts at auto.offset.reset.
    c = consumer(broker.bootstrap, "g-new")
    c.assign([TopicPartition("offs", 0)])
    assert read_n(c, 1)[0][1] == 0
    res = c.committed([TopicPartition("offs", 0)], timeout=TIMEOUT)
    assert res[0].offset < 0, "no committed offset reads as invalid (-1001 in librdkafka)"
    c.close()


def test_admin_lists_and_deletes_committed_offsets(broker):
    admin = admin_client(broker.bootstrap)
    create_topic(admin, "offa", partitions=3)
    c = consumer(broker.bootstrap, "ga")
    c.commit(offsets=[TopicPartition("offa", p, 10 + p) for p in range(3)], asynchronous=False)
    c.close()
    # OffsetFetch v8+ (batched groups) through the admin client.
    res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions("ga")])["ga"].result(timeout=TIMEOUT)
    assert sorted((tp.topic, tp.partition, tp.offset) for tp in res.topic_partitions) == \
        [("offa", 0, 10), ("offa", 1, 11), ("offa", 2, 12)]
    # OffsetDelete, through kafka-python's admin (confluent-kafka's Python admin has none).
    ka = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        done = ka.delete_group_offsets("ga", [KpTopicPartition("offa", 1)])
        assert {tp: err.__name__ for tp, err in done.items()} == {KpTopicPartition("offa", 1): "NoError"}
        res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions("ga")])["ga"].result(timeout=TIMEOUT)
        assert sorted((tp.partition, tp.offset) for tp in res.topic_partitions) == [(0, 10), (2, 12)]
        # A group with no offsets and no members is GROUP_ID_NOT_FOUND.
        with pytest.raises(KafkaError) as e:
            ka.delete_group_offsets("nobody", [KpTopicPartition("offa", 0)])
        assert "GroupIdNotFound" in type(e.value).__name__ or "GROUP_ID_NOT_FOUND" in str(e.value)
    finally:
        ka.close()


def test_commit_to_an_unknown_partition_is_refused(broker):
    admin = admin_client(broker.bootstrap)
    create_topic(admin, "offu", partitions=1)
    c = consumer(broker.bootstrap, "gu")
    with pytest.raises(KafkaException) as e:
        c.commit(offsets=[TopicPartition("offu", 5, 1)], asynchronous=False)
    assert "UNKNOWN_TOPIC_OR_PART" in str(e.value)
    c.close()


def test_kafka_python_commits_and_reads_committed(broker):
    admin = admin_client(broker.bootstrap)
    create_topic(admin, "offk", partitions=2)
    fill(broker.bootstrap, "offk", 2, 5)
    kc = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id="gk", enable_auto_commit=False,
                       auto_offset_reset="earliest", consumer_timeout_ms=10000)
    tps = [KpTopicPartition("offk", 0), KpTopicPartition("offk", 1)]
    kc.assign(tps)
    kc.commit({tps[0]: OffsetAndMetadata(3, "meta", -1), tps[1]: OffsetAndMetadata(5, "", -1)})
    assert kc.committed(tps[0]) == 3
    assert kc.committed(tps[1]) == 5
    kc.close()
    kc = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id="gk", enable_auto_commit=False,
                       auto_offset_reset="earliest", consumer_timeout_ms=3000)
    kc.assign(tps)
    got = [(m.partition, m.offset) for m in kc]
    assert got == [(0, 3), (0, 4)], got
    kc.close()
