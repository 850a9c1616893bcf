"""Fault tests of a three-node cluster, driven with confluent-kafka (librdkafka):

- kill -9 of partition leaders under idempotent acks=all producers, again and again: every
  acknowledged record is there exactly once and in order, and a consumer group reads all;
- a rolling restart (SIGTERM, start) of every node under load loses nothing;
- kill -9 of every node at once, then a start: records, topics, committed group offsets
  and transaction outcomes are all intact.

RUNNEL_FAULT_KILLS sets the number of leader kills (default 20) for a longer soak."""

import os
import shutil
import socket
import struct
import threading
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from conftest import metadata_from, wait_until
from test_confluent_kafka import TIMEOUT, admin_client, consumer

pytestmark = pytest.mark.timeout(900)

PARTITIONS = 3
KILLS = int(os.environ.get("RUNNEL_FAULT_KILLS", "20"))
# Followers leave the in-sync replicas quickly, so that "all in sync" means "caught up now".
CLUSTER_ARGS = ("--replica-lag-time-max-ms", "3000", "--default-replication-factor", "3")


def wait_formed(admin, n=3):
    """Until every node has registered (before that, replication factor n is refused)."""
    wait_until(lambda: len(admin.list_topics(timeout=TIMEOUT).brokers) == n, timeout=60, what=f"{n} brokers registered")


def create_replicated_topic(admin, name, partitions=PARTITIONS):
    wait_formed(admin)
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=3)],
                                  operation_timeout=TIMEOUT, request_timeout=TIMEOUT)
    futures[name].result(timeout=TIMEOUT)
    wait_until(lambda: all_in_sync(admin, name, partitions), timeout=60, what=f"{name}: leaders and full ISR")


def partition_states(admin, name):
    t = admin.list_topics(topic=name, timeout=TIMEOUT).topics.get(name)
    if t is None or t.error is not None:
        return {}
    return {p.id: (p.leader, sorted(p.replicas), sorted(p.isrs)) for p in t.partitions.values() if p.error is None}


def all_in_sync(admin, name, partitions=PARTITIONS, nodes=(1, 2, 3)):
    try:
        states = partition_states(admin, name)
    except KafkaException:
        return False
    return len(states) == partitions and all(l in nodes and isr == sorted(nodes) for l, _, isr in states.values())


class SequenceProducer:
    """An idempotent acks=all producer writing `p:seq` to every partition in turn, in a
    thread, at a steady pace; delivery reports record what was acknowledged where. Values
    start with `prefix`, so that producers writing one after another stay in order."""

    def __init__(self, bootstrap, topic, rate=1000, partitions=PARTITIONS, prefix=""):
        self.topic = topic
        self.prefix = prefix
        self.rate = rate
        self.partitions = partitions
        self.producer = Producer({
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": 180000,
        })
        self.acked = {p: [] for p in range(partitions)}  # partition -> [(offset, value)]
        self.errors = []
        self.sent = 0
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _report(self, err, msg):
        if err is not None:
            self.errors.append(err)
        else:
            self.acked[msg.partition()].append((msg.offset(), msg.value()))

    def _run(self):
        seq = 0
        start = time.monotonic()
        while not self.stop_flag.is_set():
            p = seq % self.partitions
            try:
                self.producer.produce(self.topic, value=f"{self.prefix}{p}:{seq // self.partitions:09d}".encode(), partition=p, on_delivery=self._report)
            except BufferError:
                # librdkafka's queue is full (nothing acknowledged for a while): wait for room.
                self.producer.poll(0.1)
                continue
            seq += 1
            self.sent = seq
            self.producer.poll(0)
            ahead = seq / self.rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)

    def acked_count(self):
        return sum(len(v) for v in self.acked.values())

    def wait_for_more(self, n, what, timeout=60):
        """Until more than `n` further records have been acknowledged."""
        before = self.acked_count()
        wait_until(lambda: self.acked_count() > before + n, timeout=timeout, what=what)

    def start(self):
        self.thread.start()
        return self

    def finish(self):
        self.stop_flag.set()
        self.thread.join()
        left = self.producer.flush(180)
        assert left == 0, f"{left} records never acknowledged"


def write_records(bootstrap, topic, at_least, partitions=PARTITIONS, prefix=""):
    """Writes at least `at_least` acknowledged records with a SequenceProducer; returns it."""
    producer = SequenceProducer(bootstrap, topic, rate=5000, partitions=partitions, prefix=prefix).start()
    wait_until(lambda: producer.acked_count() > at_least, timeout=60, what="records written")
    producer.finish()
    assert not producer.errors, f"delivery errors: {producer.errors[:5]}"
    return producer


def read_all_in_group(bootstrap, topic, group, expected_counts, timeout=120):
    """Reads every partition from the start as a member of `group`, committing; returns
    {partition: [(offset, value)]}."""
    c = consumer(bootstrap, **{"group.id": group, "auto.offset.reset": "earliest", "enable.partition.eof": False,
                                "isolation.level": "read_committed", "enable.auto.offset.store": True})
    got = {p: [] for p in expected_counts}
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + timeout
        while any(len(got[p]) < n for p, n in expected_counts.items()):
            assert time.monotonic() < deadline, f"timed out: have {({p: len(v) for p, v in got.items()})}, want {expected_counts}"
            msg = c.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            got[msg.partition()].append((msg.offset(), msg.value()))
        c.commit(asynchronous=False)
    finally:
        c.close()
    return got


def read_once_in_order(bootstrap, topic, group, acked):
    """A consumer group reads every acknowledged record of `acked` ({partition: [(offset,
    value)]}), each once and in order."""
    got = read_all_in_group(bootstrap, topic, group, {p: len(v) for p, v in acked.items()})
    check_exactly_once_in_order(acked, got)


def check_exactly_once_in_order(acked, got):
    for p, records in acked.items():
        consumed = got[p]
        values = [v for _, v in consumed]
        assert len(values) == len(set(values)), f"partition {p}: duplicates in the log"
        assert values == sorted(values), f"partition {p}: records out of order"
        offsets = [o for o, _ in consumed]
        assert offsets == sorted(offsets) and len(offsets) == len(set(offsets))
        by_offset = dict(consumed)
        for offset, value in records:
            if offset is None:
                # librdkafka acknowledges a batch implicitly, without its offset, when the
                # broker accepts a later batch of the producer while the earlier one waits
                # for a retry (its first answer was a retriable error, yet it was stored).
                assert value in by_offset.values(), f"partition {p}: acknowledged {value!r} (offset unknown) is not in the log"
                continue
            assert by_offset.get(offset) == value, f"partition {p}: acknowledged {value!r} at {offset}, log has {by_offset.get(offset)!r}"


def leader_of(admin, topic, partition):
    states = partition_states(admin, topic)
    return states.get(partition, (-1, None, None))[0]


def current_leader(admin, topic, partition):
    """The partition's leader, waiting while the node asked does not know one yet."""
    return wait_until(lambda: (lambda l: l if l > 0 else None)(leader_of(admin, topic, partition)),
                      timeout=30, what=f"a leader of {topic}-{partition}")


def test_kill9_of_leaders_under_idempotent_producers_loses_and_duplicates_nothing(cluster_factory):
    cluster = cluster_factory(3, *CLUSTER_ARGS)
    admin = admin_client(cluster.bootstrap)
    topic = "kills"
    create_replicated_topic(admin, topic)
    producer = SequenceProducer(cluster.bootstrap, topic).start()
    killed = []
    try:
        for k in range(KILLS):
            producer.wait_for_more(200, f"kill {k}: writes going on")
            leader = current_leader(admin, topic, k % PARTITIONS)
            node = cluster.nodes[leader]
            node.kill9()
            killed.append(leader)
            time.sleep(0.5)
            node.start()
            # The next kill waits until the restarted node has caught up everywhere, so
            # that a majority of every partition always has the data.
            wait_until(lambda: all_in_sync(admin, topic), timeout=60, what=f"kill {k} of node {leader}: all replicas back in sync")
        producer.wait_for_more(200, "writes after the last kill")
    finally:
        producer.finish()
    assert not producer.errors, f"delivery errors: {producer.errors[:5]}"
    assert len(killed) == KILLS and len(set(killed)) > 1, killed
    read_once_in_order(cluster.bootstrap, topic, "kill-verify", producer.acked)
    assert producer.acked_count() == producer.sent, "every record sent was acknowledged"


def test_rolling_restart_under_load_loses_nothing(cluster_factory):
    cluster = cluster_factory(3, *CLUSTER_ARGS)
    admin = admin_client(cluster.bootstrap)
    topic = "rolling"
    create_replicated_topic(admin, topic)
    producer = SequenceProducer(cluster.bootstrap, topic).start()
    try:
        for node_id, node in cluster.nodes.items():
            producer.wait_for_more(200, "writes going on")
            assert node.stop() == 0, f"node {node_id} did not stop cleanly: {node.log_tail()}"
            node.start()
            wait_until(lambda: all_in_sync(admin, topic), timeout=60, what=f"node {node_id} back in sync")
        producer.wait_for_more(200, "writes after the restarts")
    finally:
        producer.finish()
    assert not producer.errors, f"delivery errors: {producer.errors[:5]}"
    read_once_in_order(cluster.bootstrap, topic, "rolling-verify", producer.acked)


def test_kill9_of_every_node_keeps_records_topics_offsets_and_transactions(cluster_factory):
    cluster = cluster_factory(3, *CLUSTER_ARGS)
    admin = admin_client(cluster.bootstrap)
    topic = "power-loss"
    create_replicated_topic(admin, topic)
    # Plain acknowledged records.
    producer = write_records(cluster.bootstrap, topic, 3000)
    counts = {p: len(v) for p, v in producer.acked.items()}
    # A group's committed offsets: the group reads everything and commits.
    read_all_in_group(cluster.bootstrap, topic, "power-group", counts)
    # One committed and one aborted transaction.
    txp = Producer({"bootstrap.servers": cluster.bootstrap, "transactional.id": "power-txn", "acks": "all"})
    txp.init_transactions(TIMEOUT)
    for outcome in ("commit", "abort"):
        txp.begin_transaction()
        for p in range(PARTITIONS):
            txp.produce(topic, value=f"txn-{outcome}-{p}".encode(), partition=p)
        txp.flush(TIMEOUT)
        (txp.commit_transaction if outcome == "commit" else txp.abort_transaction)(TIMEOUT)
    ids_before = admin.list_topics(topic=topic, timeout=TIMEOUT).topics[topic]

    for node in cluster.nodes.values():
        node.kill9()
    for node in cluster.nodes.values():
        node.start()
    admin = admin_client(cluster.bootstrap)
    wait_until(lambda: all_in_sync(admin, topic), timeout=60, what="the cluster back")

    t = admin.list_topics(topic=topic, timeout=TIMEOUT).topics[topic]
    assert sorted(t.partitions) == sorted(ids_before.partitions)
    # The group's offsets survived: it resumes at the end of what it read.
    c = consumer(cluster.bootstrap, **{"group.id": "power-group"})

    def committed_offsets():
        # Right after the restart the coordinator group may still be electing or loading:
        # librdkafka reports that to the caller of committed(), who retries.
        try:
            return c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=TIMEOUT)
        except KafkaException as e:
            retriable = (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE)
            if e.args[0].code() in retriable:
                return None
            raise

    try:
        committed = wait_until(committed_offsets, timeout=60, interval=1, what="the group's committed offsets")
        assert {tp.partition: tp.offset for tp in committed} == {p: counts[p] for p in range(PARTITIONS)}
    finally:
        c.close()
    # Every acknowledged record is there, and read_committed sees the committed
    # transaction's records and not the aborted one's.
    got = read_all_in_group(cluster.bootstrap, topic, "power-verify", {p: counts[p] + 1 for p in range(PARTITIONS)})
    check_exactly_once_in_order(producer.acked, {p: v[:counts[p]] for p, v in got.items()})
    for p in range(PARTITIONS):
        assert got[p][counts[p]][1] == f"txn-commit-{p}".encode()
    c = consumer(cluster.bootstrap, **{"isolation.level": "read_committed", "enable.partition.eof": True})
    try:
        c.assign([TopicPartition(topic, p, counts[p] + 1) for p in range(PARTITIONS)])
        eof, deadline = set(), time.monotonic() + 30
        while len(eof) < PARTITIONS and time.monotonic() < deadline:
            msg = c.poll(1.0)
            if msg is None:
                continue
            if msg.error() and msg.error().code() == KafkaError._PARTITION_EOF:
                eof.add(msg.partition())
                continue
            assert msg.error() is None and b"abort" not in msg.value(), f"read past the committed transaction: {msg.value()!r}"
        assert len(eof) == PARTITIONS
    finally:
        c.close()


def segment_bytes(node, topic, partition):
    """The partition's segment files on `node`, concatenated in name order."""
    d = node.data_dir / "partitions" / f"{topic}-{partition}"
    return b"".join(f.read_bytes() for f in sorted(d.glob("*.log")))


def raw_produce(sock, topic, partition, value, timeout_ms=10000):
    """Sends one acks=all Produce v3 with one record over `sock` (a socket connected to one
    node) and returns the partition's error code, or None when the node closed the
    connection without answering."""
    from kafka.record.default_records import DefaultRecordBatchBuilder

    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                        producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=1 << 20)
    builder.append(0, timestamp=int(time.time() * 1000), key=None, value=value, headers=[])
    batch = bytes(builder.build())

    def string(text):
        b = text.encode()
        return struct.pack(">h", len(b)) + b

    client = b"runnel-compat"
    body = struct.pack(">hhih", 0, 3, 11, len(client)) + client
    body += struct.pack(">hhi", -1, -1, timeout_ms)  # no transactional id, acks=all, timeout
    body += struct.pack(">i", 1) + string(topic) + struct.pack(">ii", 1, partition) + struct.pack(">i", len(batch)) + batch
    sock.sendall(struct.pack(">i", len(body)) + body)
    try:
        size = struct.unpack(">i", _recv_exact(sock, 4))[0]
        frame = _recv_exact(sock, size)
    except ConnectionError:
        return None
    # correlation id; [topic name, [partition, error code, base offset, append time]]; throttle
    (correlation,) = struct.unpack_from(">i", frame)
    assert correlation == 11
    pos = 4 + 4
    name_len = struct.unpack_from(">h", frame, pos)[0]
    pos += 2 + name_len + 4
    _index, error = struct.unpack_from(">ih", frame, pos)
    return error


def refuses_clients(port):
    """Whether the node on `port` closes a new client connection without answering."""
    try:
        metadata_from(port, "any", timeout=5)
        return False
    except OSError:  # ConnectionError included
        return True


def test_isolated_leader_acknowledges_nothing_and_rejoins_without_divergence(cluster_factory):
    cluster = cluster_factory(3, *CLUSTER_ARGS, proxied=True)
    admin = admin_client(cluster.bootstrap)
    topic = "split"
    create_replicated_topic(admin, topic, partitions=1)
    old = current_leader(admin, topic, 0)
    majority = [n for n in cluster.nodes if n != old]
    majority_bootstrap = ",".join(cluster.nodes[n].bootstrap for n in majority)
    # Clients of the old leader from before the cut: a stock producer that knows only the
    # old leader's address (it learns the others from Metadata), and a raw connection.
    stranded = Producer({"bootstrap.servers": cluster.nodes[old].bootstrap, "acks": "all", "linger.ms": 0,
                         "message.timeout.ms": 60000, "enable.idempotence": True})
    stranded.list_topics(topic, timeout=10)
    raw = socket.create_connection(("127.0.0.1", cluster.nodes[old].port), timeout=30)

    cluster.isolate(old)
    cut_at = time.monotonic()
    # The minority side acknowledges nothing: the old leader cannot commit a write.
    with raw:
        answer = raw_produce(raw, topic, 0, b"minority-raw")
    assert answer != 0, "the isolated old leader acknowledged a write"
    stranded_results = []
    for i in range(50):
        stranded.produce(topic, value=f"minority-{i}".encode(), partition=0,
                         on_delivery=lambda err, msg: stranded_results.append(err))
    # The majority side elects a new leader within a few seconds.
    def majority_leader():
        views = {metadata_from(cluster.nodes[n].port, topic).get(0, (None, -1))[1] for n in majority}
        return views.pop() if len(views) == 1 and views <= set(majority) else None

    new = wait_until(majority_leader, timeout=15, interval=0.2, what="a new leader on the majority side")
    elected_after = time.monotonic() - cut_at
    assert elected_after < 10, f"new leader after {elected_after:.1f}s"
    # Cut off from the majority, the old leader stops serving clients, so that they move on.
    wait_until(lambda: refuses_clients(cluster.nodes[old].port), timeout=20, what="the old leader to refuse clients")
    producer = SequenceProducer(majority_bootstrap, topic, rate=2000, partitions=1).start()
    wait_until(lambda: producer.acked_count() > 500, timeout=30, what="writes on the majority side")
    # The stranded producer found the new leader through the other nodes.
    stranded.flush(60)
    assert len(stranded_results) == 50 and all(e is None for e in stranded_results), \
        f"the stranded producer's deliveries: {stranded_results[:5]}"

    cluster.heal()
    wait_until(lambda: all_in_sync(admin, topic, partitions=1), timeout=60, what="the old leader back in sync")
    # In contact again, the old leader serves clients and names the new leader.
    wait_until(lambda: not refuses_clients(cluster.nodes[old].port) and metadata_from(cluster.nodes[old].port, topic)[0][1] != old,
               timeout=15, what="the old leader serving again, as a follower")
    producer.finish()
    assert not producer.errors, producer.errors[:5]
    got = read_all_in_group(majority_bootstrap, topic, "split-verify", {0: len(producer.acked[0]) + 50})
    check_exactly_once_in_order(producer.acked, {0: [(o, v) for o, v in got[0] if not v.startswith(b"minority")]})
    stranded_values = [v for _, v in got[0] if v.startswith(b"minority-")]
    assert sorted(stranded_values) == sorted(f"minority-{i}".encode() for i in range(50)), "each stranded record once"
    assert b"minority-raw" not in {v for _, v in got[0]}, "the write the old leader took survived the cut"
    # No replica diverged: once caught up, every node holds the same bytes.
    wait_until(lambda: len({segment_bytes(n, topic, 0) for n in cluster.nodes.values()}) == 1, timeout=30,
               what="identical segment files on every replica")
    assert new != old


def test_min_insync_replicas_refuses_acks_all_but_not_acks_1(cluster_factory):
    cluster = cluster_factory(3, *CLUSTER_ARGS)
    admin = admin_client(cluster.bootstrap)
    topic = "min-isr"
    wait_formed(admin)
    futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=3, config={"min.insync.replicas": "3"})],
                                  operation_timeout=TIMEOUT, request_timeout=TIMEOUT)
    futures[topic].result(timeout=TIMEOUT)
    wait_until(lambda: all_in_sync(admin, topic, partitions=1), timeout=60, what="full ISR")
    leader = current_leader(admin, topic, 0)

    def produce_one(acks):
        results = []
        # No retries: librdkafka retries NOT_ENOUGH_REPLICAS and would report a timeout.
        p = Producer({"bootstrap.servers": cluster.bootstrap, "acks": acks, "message.timeout.ms": 10000,
                      "enable.idempotence": False, "retries": 0})
        p.produce(topic, value=f"acks={acks}".encode(), partition=0, on_delivery=lambda err, msg: results.append(err))
        p.flush(30)
        return results[0]

    assert produce_one("all") is None, "three in sync: acks=all is acknowledged"
    follower = next(n for n in cluster.nodes if n != leader)
    cluster.nodes[follower].kill9()
    others = [n for n in cluster.nodes if n != follower]
    wait_until(lambda: all_in_sync(admin, topic, partitions=1, nodes=others), timeout=30, what="the ISR to shrink")
    err = produce_one("all")
    assert err is not None and err.code() == KafkaError.NOT_ENOUGH_REPLICAS, err
    assert produce_one("1") is None, "acks=1 does not need min.insync.replicas"
    cluster.nodes[follower].start()
    wait_until(lambda: all_in_sync(admin, topic, partitions=1), timeout=60, what="the follower back")
    assert produce_one("all") is None


def test_coordinator_kill9_moves_groups_offsets_and_an_open_transaction(cluster_factory):
    cluster = cluster_factory(3, *CLUSTER_ARGS)
    admin = admin_client(cluster.bootstrap)
    topic = "coord"
    create_replicated_topic(admin, topic)
    producer = write_records(cluster.bootstrap, topic, 3000)
    counts = {p: len(v) for p, v in producer.acked.items()}
    total = sum(counts.values())

    # A group member reads about half and commits.
    member = consumer(cluster.bootstrap, **{"group.id": "coord-group", "auto.offset.reset": "earliest",
                                            "enable.auto.offset.store": True, "enable.partition.eof": False,
                                            "isolation.level": "read_committed"})
    member.subscribe([topic])
    seen = []

    def read(n, timeout=60):
        deadline = time.monotonic() + timeout
        while len(seen) < n:
            assert time.monotonic() < deadline, f"read {len(seen)} of {n}"
            msg = member.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            seen.append((msg.partition(), msg.offset(), msg.value()))

    read(total // 2)
    member.commit(asynchronous=False)
    # A transaction is open when the coordinator dies.
    txp = Producer({"bootstrap.servers": cluster.bootstrap, "transactional.id": "coord-txn", "acks": "all"})
    txp.init_transactions(TIMEOUT)
    txp.begin_transaction()
    for p in range(PARTITIONS):
        txp.produce(topic, value=f"txn-{p}".encode(), partition=p)
    txp.flush(TIMEOUT)

    group = admin.describe_consumer_groups(["coord-group"])["coord-group"].result(timeout=TIMEOUT)
    coordinator = group.coordinator.id
    cluster.nodes[coordinator].kill9()

    # The transaction commits through the coordinator that took over, and the member goes
    # on reading and committing in the same group.
    txp.commit_transaction(60)
    read(total + PARTITIONS, timeout=120)
    member.commit(asynchronous=False)
    member.close()
    cluster.nodes[coordinator].start()

    values = [v for _, _, v in seen]
    assert len(values) == len(set(values)) == total + PARTITIONS, "every record once, the transaction's included"
    assert sorted(v for v in values if v.startswith(b"txn-")) == [f"txn-{p}".encode() for p in range(PARTITIONS)]
    c = consumer(cluster.bootstrap, **{"group.id": "coord-group"})
    try:
        committed = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=TIMEOUT)
        # Past each partition's records and the transaction's one (librdkafka commits the
        # offset after the last record it delivered; the commit marker follows it).
        for tp in committed:
            assert counts[tp.partition] + 1 <= tp.offset <= counts[tp.partition] + 2, (tp, counts)
    finally:
        c.close()


def test_a_replica_whose_disk_was_wiped_is_refilled_by_the_leader(cluster_factory):
    cluster = cluster_factory(3, *CLUSTER_ARGS)
    admin = admin_client(cluster.bootstrap)
    topic = "wiped"
    create_replicated_topic(admin, topic, partitions=1)
    write_records(cluster.bootstrap, topic, 2000, partitions=1)
    # The preferred replica (the one that created the group) loses its disk.
    preferred = admin.list_topics(topic=topic, timeout=TIMEOUT).topics[topic].partitions[0].replicas[0]
    node = cluster.nodes[preferred]
    node.kill9()
    others = [n for n in cluster.nodes if n != preferred]
    wait_until(lambda: current_leader(admin, topic, 0) in others, timeout=30, what="a leader among the others")
    shutil.rmtree(node.data_dir / "partitions" / f"{topic}-0")
    node.start()
    wait_until(lambda: all_in_sync(admin, topic, partitions=1), timeout=60, what="the wiped replica back in sync")
    wait_until(lambda: len({segment_bytes(n, topic, 0) for n in cluster.nodes.values()}) == 1, timeout=30,
               what="the wiped replica holding the same bytes as the others")
    assert len(segment_bytes(node, topic, 0)) > 0


def test_a_node_added_at_runtime_takes_new_partitions(cluster_factory):
    cluster = cluster_factory(3, *CLUSTER_ARGS)
    admin = admin_client(cluster.bootstrap)
    wait_formed(admin)
    new = cluster.add_node()
    wait_formed(admin, 4)
    topic = "grown"
    futures = admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=3)],
                                  operation_timeout=TIMEOUT, request_timeout=TIMEOUT)
    futures[topic].result(timeout=TIMEOUT)
    nodes = tuple(cluster.nodes)

    def settled():
        # One Metadata answer, checked and returned whole: a later answer may catch a
        # partition between leaders.
        states = partition_states(admin, topic)
        full = len(states) == 4 and all(sorted(isr) == sorted(replicas) and leader in nodes
                                        for leader, replicas, isr in states.values())
        return states if full else None

    states = wait_until(settled, timeout=60, what="leaders and full ISR")
    assert sum(new in replicas for _, replicas, _ in states.values()) == 3, states
    assert any(leader == new for leader, _, _ in states.values()), states
    producer = write_records(cluster.bootstrap, topic, 2000, partitions=4)
    read_once_in_order(cluster.nodes[new].bootstrap, topic, "grown-verify", producer.acked)


def test_a_node_that_stops_answering_is_fenced_and_gets_no_new_replicas(cluster_factory):
    cluster = cluster_factory(3, *CLUSTER_ARGS)
    admin = admin_client(cluster.bootstrap)
    wait_formed(admin)
    down = 3
    cluster.nodes[down].kill9()
    live = ",".join(cluster.nodes[n].bootstrap for n in (1, 2))
    admin = admin_client(live)
    # Fenced after the session timeout (9 s): Metadata no longer lists it.
    wait_until(lambda: sorted(admin.list_topics(timeout=TIMEOUT).brokers) == [1, 2], timeout=30, what="node 3 fenced")
    topic = "placed-live"
    futures = admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=2)],
                                  operation_timeout=TIMEOUT, request_timeout=TIMEOUT)
    futures[topic].result(timeout=TIMEOUT)
    states = wait_until(lambda: (lambda s: s if len(s) == 6 else None)(partition_states(admin, topic)),
                        timeout=30, what="leaders")
    assert all(down not in replicas for _, replicas, _ in states.values()), states
    # Three replicas cannot be placed on two live nodes.
    futures = admin.create_topics([NewTopic("too-wide", num_partitions=1, replication_factor=3)],
                                  operation_timeout=TIMEOUT, request_timeout=TIMEOUT)
    with pytest.raises(KafkaException) as refused:
        futures["too-wide"].result(timeout=TIMEOUT)
    assert refused.value.args[0].code() == KafkaError.INVALID_REPLICATION_FACTOR
    cluster.nodes[down].start()
    wait_until(lambda: sorted(admin.list_topics(timeout=TIMEOUT).brokers) == [1, 2, 3], timeout=30, what="node 3 back")


def producer_epochs(node, topic, partition):
    """The (producer id, epoch) pairs of the record batches in a replica's segment files."""
    seen = set()
    for f in sorted((node.data_dir / "partitions" / f"{topic}-{partition}").glob("*.log")):
        data, pos = f.read_bytes(), 0
        while pos + 61 <= len(data):
            length = struct.unpack_from(">i", data, pos + 8)[0]
            if length <= 0:
                break
            pid, epoch = struct.unpack_from(">qh", data, pos + 43)
            seen.add((pid, epoch))
            pos += 12 + length
    return seen


def flexible_request(port, api_key, version, body, timeout):
    """Sends one flexible request of `api_key` at `version` with `body` (fields and tags)
    to the node on `port`; returns the response, from its header (correlation id, tagged
    fields) on, once its correlation id is checked."""
    client = b"runnel-compat"
    # Header v2: api key, version, correlation id, client id (int16 string), no tagged fields.
    frame = struct.pack(">hhih", api_key, version, 7, len(client)) + client + b"\x00" + body
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", _recv_exact(s, 4))[0]
        reply = _recv_exact(s, size)
    assert struct.unpack_from(">i", reply)[0] == 7
    return reply


def flexible_admin_call(port, api_key, body, timeout):
    """A flexible v0 request (`flexible_request`) whose response starts with a throttle
    time and an error code (UnregisterBroker, AddRaftVoter, RemoveRaftVoter): that code."""
    reply = flexible_request(port, api_key, 0, body, timeout)
    # Response header v1: correlation id, no tagged fields; body: throttle time, error code.
    _correlation, _tags, _throttle, error = struct.unpack_from(">ibih", reply)
    return error


def unregister_broker(port, broker_id, timeout=5.0):
    """UnregisterBroker v0 sent by hand (no stock Python client has it): the error code."""
    return flexible_admin_call(port, 64, struct.pack(">i", broker_id) + b"\x00", timeout)


def describe_quorum(port, timeout=5.0):
    """DescribeQuorum v1 sent by hand, as `kafka-metadata-quorum.sh describe --status` asks
    it (no stock Python client has it). Returns the partition's error code and, when it is
    0, the leader, epoch, high watermark and {node: (log end offset, last caught up ms)}
    of the voters and of the observers."""
    topic = b"__cluster_metadata"
    # Body: topics [name, partitions [index 0, tags], tags], tags (compact).
    body = b"\x02" + bytes([len(topic) + 1]) + topic + b"\x02" + struct.pack(">i", 0) + b"\x00" + b"\x00" + b"\x00"
    reply = flexible_request(port, 55, 1, body, timeout)
    pos = 4  # after the correlation id

    def take(fmt):
        nonlocal pos
        values = struct.unpack_from(fmt, reply, pos)
        pos += struct.calcsize(fmt)
        return values if len(values) > 1 else values[0]

    def varint():
        nonlocal pos
        shift = value = 0
        while True:
            b = reply[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7

    def skip_tags():
        for _ in range(varint()):
            varint()
            nonlocal pos
            pos += varint()

    def replicas():
        out = {}
        for _ in range(varint() - 1):
            node, end, _fetch, caught_up = take(">iqqq")
            skip_tags()
            out[node] = (end, caught_up)
        return out

    skip_tags()
    assert take(">h") == 0, "top-level error"
    assert varint() - 1 == 1, "one topic"
    name_len = varint() - 1
    assert reply[pos:pos + name_len] == topic
    pos += name_len
    assert varint() - 1 == 1, "one partition"
    index, error, leader, epoch, high_watermark = take(">ihiiq")
    assert index == 0
    if error != 0:
        return {"error": error}
    return {"error": 0, "leader": leader, "epoch": epoch, "high_watermark": high_watermark,
            "voters": replicas(), "observers": replicas()}


def _recv_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def test_partitions_move_off_a_node_which_is_then_removed(cluster_factory):
    """KIP-455 with kafka-python's admin client: every partition with a replica on node 4
    (the preferred leader of one) moves to node 3 under an idempotent producer; node 4's
    replicas are deleted, node 3 holds the same bytes as the others, nothing acknowledged is
    lost; then node 4 is stopped and unregistered and leaves the cluster."""
    from kafka import KafkaAdminClient
    from kafka import TopicPartition as KTopicPartition
    from kafka.errors import InvalidReplicationAssignmentError, NoReassignmentInProgressError

    cluster = cluster_factory(3, *CLUSTER_ARGS)
    admin = admin_client(cluster.bootstrap)
    wait_formed(admin)
    leaving = cluster.add_node()
    wait_formed(admin, 4)
    topic = "moving"
    before = {0: [leaving, 1, 2], 1: [1, leaving, 2], 2: [2, 1, leaving]}
    after = {0: [3, 1, 2], 1: [1, 3, 2], 2: [2, 1, 3]}
    futures = admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replica_assignment=[before[p] for p in range(PARTITIONS)])],
                                  operation_timeout=TIMEOUT, request_timeout=TIMEOUT)
    futures[topic].result(timeout=TIMEOUT)
    nodes = (1, 2, leaving)
    wait_until(lambda: all_in_sync(admin, topic, nodes=nodes), timeout=60, what="the topic on nodes 1, 2 and 4")

    kadmin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap, request_timeout_ms=30000, client_id="compat-reassign")
    try:
        # Refusals a user can make: an unknown broker, cancelling nothing.
        bad = kadmin.alter_partition_reassignments({KTopicPartition(topic, 0): [1, 2, 99]})
        assert bad == {KTopicPartition(topic, 0): InvalidReplicationAssignmentError}, bad
        none = kadmin.alter_partition_reassignments({KTopicPartition(topic, 1): None})
        assert none == {KTopicPartition(topic, 1): NoReassignmentInProgressError}, none

        producer = SequenceProducer(cluster.bootstrap, topic).start()
        try:
            wait_until(lambda: producer.acked_count() > 3000, timeout=60, what="writes before the move")
            started = kadmin.alter_partition_reassignments({KTopicPartition(topic, p): after[p] for p in range(PARTITIONS)})
            assert started == {KTopicPartition(topic, p): None for p in range(PARTITIONS)}, started
            ongoing = kadmin.list_partition_reassignments()
            for tp, r in ongoing.items():
                # While it runs, Kafka's view: target first, node 3 added, node 4 removed.
                assert r["adding_replicas"] == [3] and r["removing_replicas"] == [leaving], r
                assert r["replicas"] == after[tp.partition] + [leaving], r
            wait_until(lambda: kadmin.list_partition_reassignments() == {}, timeout=90, interval=0.5,
                       what="every reassignment finished")
            states = wait_until(lambda: (lambda s: s if len(s) == PARTITIONS and all(
                sorted(isr) == [1, 2, 3] and leader in (1, 2, 3) for leader, _, isr in s.values()) else None)(
                partition_states(admin, topic)), timeout=60, what="leaders and full ISR on nodes 1-3")
            assert {p: replicas for p, (_, replicas, _) in states.items()} == {p: sorted(after[p]) for p in after}, states
            producer.wait_for_more(500, "writes after the move")
        finally:
            producer.finish()
        assert not producer.errors, f"delivery errors: {producer.errors[:5]}"

        # Node 4 deleted its replicas; node 3 has every byte the others have.
        wait_until(lambda: not any((cluster.nodes[leaving].data_dir / "partitions" / f"{topic}-{p}").exists()
                                   for p in range(PARTITIONS)), timeout=30, what="node 4's replicas deleted")
        for p in range(PARTITIONS):
            wait_until(lambda: len({segment_bytes(cluster.nodes[n], topic, p) for n in (1, 2, 3)}) == 1, timeout=30,
                       what=f"partition {p}: the same bytes on nodes 1, 2 and 3")
            # The producer saw only retriable errors: it never had to bump its epoch (which
            # librdkafka does after OUT_OF_ORDER_SEQUENCE_NUMBER, and which can duplicate).
            assert len(producer_epochs(cluster.nodes[1], topic, p)) == 1, producer_epochs(cluster.nodes[1], topic, p)

        # Node 4 leaves: stopped, then unregistered; voters cannot be.
        assert cluster.nodes[leaving].stop() == 0
        port = cluster.nodes[1].port
        assert unregister_broker(port, leaving) == 0
        assert unregister_broker(port, leaving) == 102  # BROKER_ID_NOT_REGISTERED
        assert unregister_broker(port, 1) == 42  # INVALID_REQUEST: a controller voter
        wait_until(lambda: sorted(admin.list_topics(timeout=TIMEOUT).brokers) == [1, 2, 3], timeout=30,
                   what="node 4 gone from Metadata")
    finally:
        kadmin.close()

    remaining = ",".join(cluster.nodes[n].bootstrap for n in (1, 2, 3))
    read_once_in_order(remaining, topic, "moving-verify", producer.acked)


def test_preferred_leader_election_gives_leadership_back(cluster_factory):
    """ElectLeaders (KIP-460) with confluent-kafka's admin client: after a restart moved a
    node's leaderships away, a preferred election hands them back under an idempotent
    producer, with nothing lost; elections that are not needed say so; kafka-python's
    election of every partition finds nothing left to do."""
    from confluent_kafka import ElectionType
    from kafka import KafkaAdminClient

    cluster = cluster_factory(3, *CLUSTER_ARGS, "--auto-leader-rebalance-enable", "false")
    admin = admin_client(cluster.bootstrap)
    topic = "preferred"
    create_replicated_topic(admin, topic)
    preferred = preferred_leaders(cluster, topic)
    wait_until(lambda: all(leader_of(admin, topic, p) == preferred[p] for p in preferred), timeout=30,
               what="every partition led by its preferred replica at first")
    moved = preferred[0]
    # A restart of that node moves its leaderships to the others.
    assert cluster.nodes[moved].stop() == 0
    wait_until(lambda: leader_of(admin, topic, 0) not in (-1, moved), timeout=30, what="a new leader of partition 0")
    cluster.nodes[moved].start()
    wait_until(lambda: all_in_sync(admin, topic), timeout=60, what="the restarted node back in sync")
    displaced = [p for p in preferred if leader_of(admin, topic, p) != preferred[p]]
    assert 0 in displaced

    producer = SequenceProducer(cluster.bootstrap, topic).start()
    try:
        wait_until(lambda: producer.acked_count() > 1000, timeout=60, what="writes before the election")
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        # (confluent-kafka 2.16's binding fails on any timeout keyword; the defaults are 60 s.)
        result = admin.elect_leaders(ElectionType.PREFERRED, partitions).result(timeout=90)
        for tp, err in result.items():
            if tp.partition in displaced:
                assert err is None, (tp, err)
            else:
                assert err is not None and err.code() == KafkaError.ELECTION_NOT_NEEDED, (tp, err)
        wait_until(lambda: all(leader_of(admin, topic, p) == preferred[p] for p in preferred), timeout=30,
                   what="every partition led by its preferred replica again")
        producer.wait_for_more(500, "writes after the election")
    finally:
        producer.finish()
    assert not producer.errors, f"delivery errors: {producer.errors[:5]}"

    # Every partition (a null list): Kafka reports only partitions it elected; none here.
    assert admin.elect_leaders(ElectionType.PREFERRED, None).result(timeout=90) == {}
    kadmin = KafkaAdminClient(bootstrap_servers=cluster.bootstrap, request_timeout_ms=30000, client_id="compat-elect")
    try:
        # kafka-python names every partition of the cluster: none is left to elect.
        response = kadmin.elect_leaders(0, raise_errors=False)
        codes = {(r.topic, p.partition_id): p.error_code for r in response.replica_election_results for p in r.partition_result}
        assert response.error_code == 0 and codes == {(topic, p): 84 for p in range(PARTITIONS)}, response
    finally:
        kadmin.close()
    read_once_in_order(cluster.bootstrap, topic, "preferred-verify", producer.acked)


def preferred_leaders(cluster, topic):
    """Each partition's first replica, as one node itself lists them (partition_states sorts)."""
    return {p: v[2][0] for p, v in metadata_from(cluster.nodes[1].port, topic).items()}


def test_leadership_goes_back_to_preferred_replicas_by_itself(cluster_factory):
    """auto.leader.rebalance: a node restarted under load gets its leaderships back without
    anyone asking, and the producer loses nothing."""
    cluster = cluster_factory(3, *CLUSTER_ARGS, "--leader-imbalance-check-interval-seconds", "2")
    admin = admin_client(cluster.bootstrap)
    topic = "rebalanced"
    create_replicated_topic(admin, topic)
    preferred = preferred_leaders(cluster, topic)
    wait_until(lambda: all(leader_of(admin, topic, p) == preferred[p] for p in preferred), timeout=30,
               what="every partition led by its preferred replica at first")
    producer = SequenceProducer(cluster.bootstrap, topic).start()
    try:
        wait_until(lambda: producer.acked_count() > 500, timeout=60, what="writes before the restart")
        restarted = preferred[0]
        assert cluster.nodes[restarted].stop() == 0
        wait_until(lambda: leader_of(admin, topic, 0) not in (-1, restarted), timeout=30, what="another leader of partition 0")
        cluster.nodes[restarted].start()
        wait_until(lambda: all(leader_of(admin, topic, p) == preferred[p] for p in preferred), timeout=60,
                   what="leadership back with the preferred replicas")
        producer.wait_for_more(500, "writes after the rebalance")
    finally:
        producer.finish()
    assert not producer.errors, f"delivery errors: {producer.errors[:5]}"
    read_once_in_order(cluster.bootstrap, topic, "rebalanced-verify", producer.acked)


def quiet_events(cluster):
    """How many times partition groups went quiet, over every node's log."""
    return sum(b.log_path.read_bytes().count(b"partition group went quiet") for b in cluster.nodes.values()
               if b.log_path.exists())


def test_quiet_partitions_keep_their_isr_wake_for_writes_and_fail_over(cluster_factory):
    """Idle partitions go quiet (no raft heartbeats). From that state: Metadata keeps the
    full ISR past replica_lag_time_max_ms, writes wake them, kill -9 of a leader is
    failed over, and the restarted node catches up; nothing acknowledged is lost."""
    cluster = cluster_factory(3, *CLUSTER_ARGS, "--partition-quiet-after-ms", "500",
                              "--log-level", "info,runnel::replication::partition=debug")
    admin = admin_client(cluster.bootstrap)
    topic = "quiet"
    create_replicated_topic(admin, topic)
    first = write_records(cluster.bootstrap, topic, 300, prefix="a")
    went_quiet = quiet_events(cluster)
    wait_until(lambda: quiet_events(cluster) >= went_quiet + PARTITIONS, timeout=30, what="the partitions going quiet")
    # Quiet for longer than replica_lag_time_max_ms (3 s): every replica is still in sync.
    time.sleep(4)
    assert all_in_sync(admin, topic), partition_states(admin, topic)

    second = write_records(cluster.bootstrap, topic, 300, prefix="b")
    assert not second.errors
    went_quiet = quiet_events(cluster)
    wait_until(lambda: quiet_events(cluster) >= went_quiet + PARTITIONS, timeout=30, what="the partitions quiet again")
    leader = current_leader(admin, topic, 0)
    cluster.nodes[leader].kill9()
    others = [n for n in cluster.nodes if n != leader]
    others_admin = admin_client(",".join(cluster.nodes[n].bootstrap for n in others))
    wait_until(lambda: leader_of(others_admin, topic, 0) in others, timeout=15, what="a new leader of the quiet partition")
    third = write_records(",".join(cluster.nodes[n].bootstrap for n in others), topic, 300, prefix="c")
    assert not third.errors
    cluster.nodes[leader].start()
    wait_until(lambda: all_in_sync(admin, topic), timeout=60, what="the restarted node back in sync")

    acked = {p: first.acked[p] + second.acked[p] + third.acked[p] for p in range(PARTITIONS)}
    read_once_in_order(cluster.bootstrap, topic, "quiet-verify", acked)


def test_acks_1_is_answered_by_the_leaders_own_copy_acks_all_by_the_commit(cluster_factory):
    """acks=1 returns after the leader's append (Kafka's meaning): with the leader's links to
    its followers paused, an acks=1 record is acknowledged, not yet below the high
    watermark, and an acks=all record waits; both commit once the links resume."""
    cluster = cluster_factory(3, *CLUSTER_ARGS, "--partition-quiet-after-ms", "0", proxied=True)
    admin = admin_client(cluster.bootstrap)
    topic = "acks"
    create_replicated_topic(admin, topic, partitions=1)
    leader = current_leader(admin, topic, 0)
    conf = {"bootstrap.servers": cluster.nodes[leader].bootstrap, "linger.ms": 0, "enable.idempotence": False}
    one, everyone = Producer({**conf, "acks": 1}), Producer({**conf, "acks": "all"})
    for p in (one, everyone):
        p.produce(topic, value=b"warm-up", partition=0)
        assert p.flush(30) == 0
    reader = consumer(cluster.nodes[leader].bootstrap)
    try:
        delivered = {}
        links = [cluster.links[(leader, f)] for f in cluster.nodes if f != leader]
        for link in links:
            link.pause()
        try:
            everyone.produce(topic, value=b"acks-all", partition=0,
                             on_delivery=lambda err, msg: delivered.__setitem__("all", (err, msg.offset())))
            one.produce(topic, value=b"acks-1", partition=0,
                        on_delivery=lambda err, msg: delivered.__setitem__("one", (err, msg.offset())))
            # Well within the 0.9 s after which a leader without acknowledgements stops serving.
            assert one.flush(0.5) == 0, "acks=1 not answered while the followers were unreachable"
            everyone.poll(0.1)
            assert "all" not in delivered, f"acks=all answered without the followers: {delivered}"
            err, offset = delivered["one"]
            assert err is None
            _, high = reader.get_watermark_offsets(TopicPartition(topic, 0), timeout=5, cached=False)
            assert high <= offset, f"high watermark {high} already past the acks=1 record at {offset}"
        finally:
            for link in links:
                link.resume()
        assert everyone.flush(30) == 0 and delivered["all"][0] is None, delivered
        wait_until(lambda: reader.get_watermark_offsets(TopicPartition(topic, 0), timeout=5, cached=False)[1] > offset,
                   timeout=30, what="the acks=1 record committed")
    finally:
        reader.close()


def _uvarint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def raft_voter_change(port, voter_id, add, timeout=40.0):
    """AddRaftVoter v0 (add) or RemoveRaftVoter v0 sent by hand (Kafka's Java admin sends
    them; no stock Python client does): the error code."""
    body = _uvarint(0)  # cluster id: null
    if add:
        body += struct.pack(">ii", 30000, voter_id) + bytes(16)
        # One listener: name, host, port, no tags.
        body += _uvarint(2) + _uvarint(10) + b"PLAINTEXT" + _uvarint(10) + b"127.0.0.1" + struct.pack(">H", 9092) + b"\x00"
    else:
        body += struct.pack(">i", voter_id) + bytes(16)
    return flexible_admin_call(port, 80 if add else 81, body + b"\x00", timeout)


NOT_CONTROLLER = 41


def on_controller(cluster, change):
    """Runs `change(port)` on the node leading the controller group (the others answer
    NOT_CONTROLLER); its error code."""
    def attempt():
        for n in cluster.nodes.values():
            if n.proc is None or n.proc.poll() is not None:
                continue
            code = change(n.port)
            if code != NOT_CONTROLLER:
                return (code,)
        return None
    return wait_until(attempt, timeout=30, interval=0.5, what="the controller's answer")[0]


def test_controller_voters_are_replaced_at_runtime(cluster_factory):
    """KIP-853: a fourth node becomes a controller voter and an original one leaves the
    voters; then two original voters die and the cluster (controller, partitions, group
    offsets) goes on with the other two. With the voters the cluster started with, two
    of three dead would stop it."""
    cluster = cluster_factory(3, *CLUSTER_ARGS)
    admin = admin_client(cluster.bootstrap)
    wait_formed(admin)
    newcomer = cluster.add_node()
    wait_formed(admin, 4)

    assert on_controller(cluster, lambda port: raft_voter_change(port, newcomer, add=True)) == 0
    assert on_controller(cluster, lambda port: raft_voter_change(port, newcomer, add=True)) == 126, "DUPLICATE_VOTER"
    leader = admin.describe_cluster().result(timeout=TIMEOUT).controller.id
    leaving = next(n for n in (1, 2, 3) if n != leader)
    assert on_controller(cluster, lambda port: raft_voter_change(port, leaving, add=False)) == 0
    assert on_controller(cluster, lambda port: raft_voter_change(port, leaving, add=False)) == 127, "VOTER_NOT_FOUND"
    assert on_controller(cluster, lambda port: raft_voter_change(port, 99, add=True)) == 102, "BROKER_ID_NOT_REGISTERED"
    staying = next(n for n in (1, 2, 3) if n != leaving)
    assert unregister_broker(cluster.nodes[staying].port, staying) == 42, "a voter cannot be unregistered: INVALID_REQUEST"

    # DescribeQuorum, asked of a node that does not lead (it asks the leader), shows the
    # new voters, all caught up, and the removed voter as an observer.
    voters = sorted({1, 2, 3, newcomer} - {leaving})
    asked = next(n for n in voters if n != leader)

    def quorum_settled():
        q = describe_quorum(cluster.nodes[asked].port)
        return q["error"] == 0 and sorted(q["voters"]) == voters and leaving in q["observers"] and all(
            end >= q["high_watermark"] and caught_up > 0 for end, caught_up in q["voters"].values())

    wait_until(quorum_settled, timeout=30, what="DescribeQuorum showing the new voters")
    q = describe_quorum(cluster.nodes[asked].port)
    assert q["leader"] == leader and q["epoch"] > 0

    # Two of the three original voters die: the leaving one and another.
    cluster.nodes[leaving].kill9()
    cluster.nodes[staying].kill9()
    alive = [n for n in cluster.nodes if n not in (leaving, staying)]
    alive_bootstrap = ",".join(cluster.nodes[n].bootstrap for n in alive)
    admin = admin_client(alive_bootstrap)
    wait_until(lambda: sorted(admin.list_topics(timeout=TIMEOUT).brokers) == sorted(alive), timeout=60,
               what="the dead nodes fenced")
    # The controller commits a new topic, its partitions elect leaders on the living nodes,
    # and a consumer group commits its offsets through the coordinator group.
    futures = admin.create_topics([NewTopic("after", num_partitions=2, replication_factor=2)],
                                  operation_timeout=TIMEOUT, request_timeout=TIMEOUT)
    futures["after"].result(timeout=TIMEOUT)
    wait_until(lambda: all_in_sync(admin, "after", partitions=2, nodes=alive), timeout=60, what="leaders on the living nodes")
    producer = write_records(alive_bootstrap, "after", 200, partitions=2)
    read_once_in_order(alive_bootstrap, "after", "after-group", producer.acked)
    # The quorum goes on with two of its three voters, the third not caught up.
    after = describe_quorum(cluster.nodes[alive[0]].port)
    assert after["error"] == 0 and after["leader"] in alive and sorted(after["voters"]) == voters
    assert after["high_watermark"] > q["high_watermark"]
    assert after["voters"][staying][1] == -1 and after["voters"][staying][0] < after["high_watermark"]
