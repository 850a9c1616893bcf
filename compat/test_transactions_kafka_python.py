"""Idempotent and transactional producers driven with kafka-python (3.0.x, pure Python):

- an idempotent KafkaProducer (enable_idempotence=True, kafka-python's default, set
  explicitly so it cannot quietly fall back) writes every record exactly once, in order;
- a committed, an aborted and another committed transaction: KafkaConsumer with
  isolation_level='read_committed' gets the committed records only, 'read_uncommitted'
  gets all of them, neither gets a control record;
- consume-transform-produce with send_offsets_to_transaction(offsets,
  consumer.group_metadata()): the group's committed offsets move with the commit;
- KafkaAdminClient.list_transactions / describe_transactions (KIP-664): an open
  transaction is listed as Ongoing with its partitions and timeout, CompleteCommit after
  the commit; an unknown transactional id is TRANSACTIONAL_ID_NOT_FOUND.
(confluent-kafka 2.16's AdminClient has no list/describe transactions, so this is where
those APIs are tested.)"""

import time
from collections import defaultdict

import pytest
import kafka.errors as Errors
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin._transactions import TransactionState
from kafka.structs import OffsetAndMetadata

from group_support import committed_offsets
from test_kafka_python import TIMEOUT_MS, admin_client, create_topic

pytestmark = pytest.mark.timeout(120)  # pytest-timeout: a hard limit per test on top of the client timeouts

FAST_GROUPS = ("--group-initial-rebalance-delay-ms", "300")


def txn_producer(bootstrap, txn_id, **extra):
    p = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=txn_id, linger_ms=5,
                      request_timeout_ms=TIMEOUT_MS, max_block_ms=TIMEOUT_MS, client_id=f"kp-{txn_id}",
                      **extra)
    p.init_transactions()
    return p


def send_values(p, topic, values_by_partition):
    """Sends {partition: [str value]} and returns the futures {value: future}."""
    futures = {}
    longest = max(len(v) for v in values_by_partition.values())
    for i in range(longest):
        for part, values in values_by_partition.items():
            if i < len(values):
                futures[values[i]] = p.send(topic, key=f"k{i}".encode(), value=values[i].encode(), partition=part)
    return futures


def txn_values(tag, partitions, per_partition):
    return {p: [f"{tag}-p{p}-{i}" for i in range(per_partition)] for p in range(partitions)}


def read_all(bootstrap, topic, partitions, isolation, timeout=30.0):
    """Every record from offset 0 up to the end offset for this isolation level (the last
    stable offset for read_committed): ({partition: [(offset, value)]}, end offsets)."""
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      isolation_level=isolation, fetch_max_wait_ms=100,
                      request_timeout_ms=TIMEOUT_MS, client_id=f"kp-reader-{isolation}")
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        c.assign(tps)
        c.seek_to_beginning()
        ends = c.end_offsets(tps)
        got = defaultdict(list)
        deadline = time.monotonic() + timeout
        while any(c.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, \
                f"timed out reading: positions {[c.position(tp) for tp in tps]}, ends {ends}"
            for tp, msgs in c.poll(timeout_ms=500).items():
                for m in msgs:
                    got[tp.partition].append((m.offset, m.value.decode()))
        return got, {tp.partition: off for tp, off in ends.items()}
    finally:
        c.close(autocommit=False)


def settled(bootstrap, topic, partitions, timeout=20.0):
    """Waits until no transaction is open on `topic` and every marker is written (the end
    offset for read_committed, the last stable offset, equals the high watermark); returns
    {partition: end offset}. Kafka writes the markers after EndTxn has answered."""
    consumers = {iso: KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, isolation_level=iso,
                                    request_timeout_ms=TIMEOUT_MS, client_id=f"kp-settled-{iso}")
                 for iso in ("read_committed", "read_uncommitted")}
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        deadline = time.monotonic() + timeout
        while True:
            ends = {iso: c.end_offsets(tps) for iso, c in consumers.items()}
            if ends["read_committed"] == ends["read_uncommitted"]:
                return {tp.partition: off for tp, off in ends["read_committed"].items()}
            assert time.monotonic() < deadline, f"{topic}: last stable offset never reached the high watermark: {ends}"
            time.sleep(0.1)
    finally:
        for c in consumers.values():
            c.close(autocommit=False)


def values(records, p):
    return [v for _, v in records[p]]


def test_idempotent_producer_writes_every_record_exactly_once(broker):
    admin = admin_client(broker.bootstrap)
    topic, partitions, n = "kp-idem", 3, 2000
    try:
        create_topic(admin, topic, partitions=partitions)
    finally:
        admin.close()
    p = KafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=True, acks="all",
                      linger_ms=2, batch_size=4096, max_in_flight_requests_per_connection=5,
                      request_timeout_ms=TIMEOUT_MS, max_block_ms=TIMEOUT_MS)
    try:
        futures = []
        for seq in range(n):
            futures.append((seq, p.send(topic, value=f"{seq:06d}".encode(), partition=seq % partitions)))
            if seq % 100 == 99:
                time.sleep(0.005)  # several requests, several batches per partition
        p.flush(timeout=TIMEOUT_MS / 1000)
        acked = {seq: (f.get(timeout=TIMEOUT_MS / 1000).partition, f.get().offset) for seq, f in futures}
        # Idempotence really was on: the producer was given a producer id (kafka-python
        # keeps it in its transaction manager; there is no public accessor).
        pid = p._transaction_manager.producer_id_and_epoch.producer_id
        assert pid is not None and pid >= 0, f"no producer id: {p._transaction_manager.producer_id_and_epoch}"
    finally:
        p.close(timeout=10)

    records, ends = read_all(broker.bootstrap, topic, partitions, "read_uncommitted")
    for part in range(partitions):
        want = [f"{seq:06d}" for seq in range(part, n, partitions)]
        assert values(records, part) == want, f"partition {part}: not every record exactly once in order"
        assert [o for o, _ in records[part]] == list(range(len(want)))
        assert ends[part] == len(want)
        for off, v in records[part]:
            assert acked[int(v)] == (part, off)


def test_read_committed_gets_committed_transactions_only(broker):
    admin = admin_client(broker.bootstrap)
    topic, partitions = "kp-txn", 2
    try:
        create_topic(admin, topic, partitions=partitions)
    finally:
        admin.close()
    p = txn_producer(broker.bootstrap, "kp-txn-app")
    try:
        committed = defaultdict(list)
        everything = defaultdict(list)
        for t, outcome in enumerate(["commit", "abort", "commit"]):
            vals = txn_values(f"t{t}-{outcome}", partitions, 8)
            p.begin_transaction()
            futures = send_values(p, topic, vals)
            if outcome == "commit":
                p.commit_transaction()
                for part, vs in vals.items():
                    committed[part].extend(vs)
            else:
                p.flush(timeout=TIMEOUT_MS / 1000)  # in the log before the abort
                p.abort_transaction()
            for f in futures.values():
                assert f.is_done and f.succeeded(), f"a send failed: {f.exception}"
            for part, vs in vals.items():
                everything[part].extend(vs)
    finally:
        p.close(timeout=10)

    # 3 transactions of 8 records and one marker each.
    assert settled(broker.bootstrap, topic, partitions) == {part: 3 * 9 for part in range(partitions)}
    rc, rc_ends = read_all(broker.bootstrap, topic, partitions, "read_committed")
    ru, ru_ends = read_all(broker.bootstrap, topic, partitions, "read_uncommitted")
    for part in range(partitions):
        assert values(rc, part) == committed[part], f"partition {part}: read_committed"
        assert values(ru, part) == everything[part], f"partition {part}: read_uncommitted"
        assert rc_ends[part] == ru_ends[part] == 3 * 9, (rc_ends, ru_ends)


def test_send_offsets_to_transaction_commits_the_group_offsets(broker_factory):
    broker = broker_factory(*FAST_GROUPS)
    admin = admin_client(broker.bootstrap)
    src, dst, partitions, group, n = "kp-ctp-in", "kp-ctp-out", 2, "kp-ctp-app", 30
    try:
        create_topic(admin, src, partitions=partitions)
        create_topic(admin, dst, partitions=partitions)
    finally:
        admin.close()
    plain = KafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=False, acks="all",
                          request_timeout_ms=TIMEOUT_MS, max_block_ms=TIMEOUT_MS)
    try:
        inputs = txn_values("in", partitions, n)
        for f in send_values(plain, src, inputs).values():
            f.get(timeout=TIMEOUT_MS / 1000)
    finally:
        plain.close(timeout=10)

    c = KafkaConsumer(src, bootstrap_servers=broker.bootstrap, group_id=group, enable_auto_commit=False,
                      auto_offset_reset="earliest", isolation_level="read_committed",
                      fetch_max_wait_ms=100, session_timeout_ms=6000, heartbeat_interval_ms=500,
                      request_timeout_ms=TIMEOUT_MS, client_id="kp-ctp-consumer")
    p = txn_producer(broker.bootstrap, "kp-ctp-txn")
    done, txns = 0, 0
    try:
        deadline = time.monotonic() + 60
        while done < n * partitions:
            assert time.monotonic() < deadline, f"processed {done} of {n * partitions}"
            batch = c.poll(timeout_ms=500, max_records=25)
            if not batch:
                continue
            p.begin_transaction()
            offsets = {}
            for tp, msgs in batch.items():
                for m in msgs:
                    p.send(dst, key=m.key, value=b"out-" + m.value, partition=m.partition)
                offsets[tp] = OffsetAndMetadata(msgs[-1].offset + 1, "", -1)
                done += len(msgs)
            p.send_offsets_to_transaction(offsets, c.group_metadata())
            p.commit_transaction()
            txns += 1
    finally:
        c.close(autocommit=False)
        p.close(timeout=10)
    assert done == n * partitions and txns > 1

    settled(broker.bootstrap, dst, partitions)
    deadline = time.monotonic() + 20
    while committed_offsets(broker.bootstrap, group, src, partitions) != {part: n for part in range(partitions)}:
        assert time.monotonic() < deadline, \
            f"group offsets {committed_offsets(broker.bootstrap, group, src, partitions)}, want {n} on each partition"
        time.sleep(0.1)
    out, _ = read_all(broker.bootstrap, dst, partitions, "read_committed")
    for part in range(partitions):
        assert values(out, part) == [f"out-{v}" for v in inputs[part]], f"output partition {part}"


def test_admin_lists_and_describes_transactions(broker):
    admin = admin_client(broker.bootstrap)
    topic, txn_id = "kp-txn-admin", "kp-admin-app"
    p = None
    try:
        create_topic(admin, topic, partitions=3)
        p = txn_producer(broker.bootstrap, txn_id, transaction_timeout_ms=45000)
        started = int(time.time() * 1000)
        p.begin_transaction()
        for f in send_values(p, topic, {0: ["x0", "x1"], 2: ["y0"]}).values():
            f.get(timeout=TIMEOUT_MS / 1000)

        # Open: listed and described as Ongoing, with the partitions written to.
        listed = admin.list_transactions()
        assert list(listed) == [1], listed
        mine = [t for t in listed[1] if t.transactional_id == txn_id]
        assert len(mine) == 1 and mine[0].state == TransactionState.ONGOING, listed
        ongoing = admin.list_transactions(state_filters=["Ongoing"])[1]
        assert txn_id in {t.transactional_id for t in ongoing}
        desc = admin.describe_transactions([txn_id])[txn_id]
        assert desc.state == TransactionState.ONGOING, desc
        assert desc.coordinator_id == 1
        assert desc.producer_id == mine[0].producer_id >= 0
        assert desc.producer_epoch >= 0
        assert desc.transaction_timeout_ms == 45000
        assert started - 5000 <= desc.transaction_start_time_ms <= int(time.time() * 1000) + 5000, desc
        assert desc.topic_partitions == {TopicPartition(topic, 0), TopicPartition(topic, 2)}

        p.commit_transaction()

        # Committed: CompleteCommit (after the markers are written), no partitions left.
        def complete():
            return admin.describe_transactions([txn_id])[txn_id].state == TransactionState.COMPLETE_COMMIT
        deadline = time.monotonic() + 20
        while not complete():
            assert time.monotonic() < deadline, admin.describe_transactions([txn_id])
            time.sleep(0.1)
        desc = admin.describe_transactions([txn_id])[txn_id]
        assert desc.topic_partitions == set(), desc
        assert txn_id not in {t.transactional_id for t in admin.list_transactions(state_filters=["Ongoing"])[1]}
        done = admin.list_transactions(state_filters=["CompleteCommit"])[1]
        assert [t.state for t in done if t.transactional_id == txn_id] == [TransactionState.COMPLETE_COMMIT]
        assert txn_id not in {t.transactional_id for t in admin.list_transactions(producer_id_filters=[desc.producer_id + 1000])[1]}

        # A transactional id nobody used.
        with pytest.raises(Errors.TransactionalIdNotFoundError):
            admin.describe_transactions(["kp-never-used"])
    finally:
        if p is not None:
            p.close(timeout=10)
        admin.close()
