"""Idempotent and transactional producers driven with confluent-kafka (librdkafka), end to end:

- an idempotent producer (enable.idempotence) writing while the broker restarts (SIGTERM,
  and kill -9) leaves every record in the log exactly once and in order;
- transactions that commit and abort, several records on several partitions each:
  read_committed consumers get every committed record once and no aborted one,
  read_uncommitted consumers get both, and no consumer ever gets a control record;
- an open transaction holds read_committed consumers (and ListOffsets with
  isolation READ_COMMITTED) at the last stable offset until it commits;
- consume-transform-produce with send_offsets_to_transaction: the group's committed
  offsets move with committed transactions only, and the output is exactly once;
- zombie fencing: a second producer with the same transactional.id fences the first,
  whose open transaction never becomes visible;
- kill -9 of the broker (and of the producing app) in the middle of a transaction: the
  transaction is aborted by its timeout, or at once by the next producer with the same
  transactional.id, and read_committed consumers move past it; kill -9 right after a
  commit: the committed records are visible after the restart and the producer goes on.

librdkafka's isolation.level defaults to read_committed; the tests set it explicitly.
confluent-kafka 2.16's AdminClient has no list_transactions/describe_transactions (those
are tested with kafka-python's admin in test_transactions_kafka_python.py)."""

import selectors
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict

import pytest
from cutting_proxy import CuttingProxy
from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import OffsetSpec

from conftest import Broker, wait_until
from test_confluent_kafka import TIMEOUT, admin_client, consumer, create_topic, producer

pytestmark = pytest.mark.timeout(120)  # pytest-timeout: a hard limit per test on top of the client timeouts

FAST_GROUPS = ("--group-initial-rebalance-delay-ms", "300")
FENCED = (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH)
# Look for timed-out transactions every 500 ms instead of Kafka's 10 s.
FAST_TXN_CLEANUP = ("--transaction-abort-timed-out-transaction-cleanup-interval-ms", "500")


# ---------------------------------------------------------------------------
# helpers

def txn_producer(bootstrap, txn_id, init=True, **extra):
    """A transactional producer; init_transactions() done unless `init` is false."""
    conf = {
        "bootstrap.servers": bootstrap,
        "transactional.id": txn_id,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "socket.timeout.ms": 10000,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
    }
    conf.update(extra)
    p = Producer(conf)
    if init:
        p.init_transactions(TIMEOUT)
    return p


class Deliveries:
    """Delivery reports of one producer: {value: (partition, offset)} and failures."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ok = {}
        self.failed = []

    def cb(self, err, msg):
        with self.lock:
            if err is not None:
                self.failed.append((msg.value(), err))
            else:
                assert msg.value() not in self.ok, f"{msg.value()!r} acknowledged twice"
                self.ok[msg.value()] = (msg.partition(), msg.offset())

    def count(self):
        with self.lock:
            return len(self.ok)


def produce_values(p, topic, values_by_partition, deliveries=None):
    """Produces {partition: [str value, ...]} (interleaving partitions, so one transaction's
    records go out in several batches) and serves delivery reports."""
    longest = max(len(v) for v in values_by_partition.values())
    for i in range(longest):
        for part, values in values_by_partition.items():
            if i < len(values):
                p.produce(topic, key=f"k{i}".encode(), value=values[i].encode(), partition=part,
                          on_delivery=deliveries.cb if deliveries else None)
        p.poll(0)


def txn_values(tag, partitions, per_partition):
    return {p: [f"{tag}-p{p}-{i}" for i in range(per_partition)] for p in range(partitions)}


class Reader:
    """A manually assigned consumer with one isolation level reading `topic` from offset 0.
    Keeps every record it returned ({partition: [(offset, value)]}) and, per partition,
    the offset where it last reported the end (EOF: the last stable offset for
    read_committed, the high watermark for read_uncommitted) with no record since."""

    def __init__(self, bootstrap, topic, partitions, isolation):
        self.topic = topic
        self.partitions = partitions
        self.c = consumer(bootstrap, **{"isolation.level": isolation})
        self.c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self.records = defaultdict(list)
        self.eof = {}

    def poll(self, timeout=0.2):
        m = self.c.poll(timeout)
        if m is None:
            return
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                self.eof[m.partition()] = m.offset()
                return
            raise KafkaException(m.error())
        assert m.topic() == self.topic
        self.eof.pop(m.partition(), None)
        self.records[m.partition()].append((m.offset(), m.value().decode()))

    def poll_for(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.poll(min(0.2, max(0.0, end - time.monotonic())))
        return self

    def wait(self, pred, timeout=TIMEOUT, what="records"):
        deadline = time.monotonic() + timeout
        while not pred(self):
            assert time.monotonic() < deadline, \
                f"timed out waiting for {what}: have {self.summary()}"
            self.poll()
        return self

    def to_end(self, timeout=TIMEOUT):
        """Reads until every partition has reported its end (use when nothing is being
        written)."""
        return self.wait(lambda r: len(r.eof) == r.partitions, timeout, "the end of every partition")

    def values(self, p):
        return [v for _, v in self.records[p]]

    def offsets(self, p):
        return [o for o, _ in self.records[p]]

    def all_values(self):
        return [v for p in range(self.partitions) for v in self.values(p)]

    def watermarks(self, p):
        """get_watermark_offsets: ListOffsets with this consumer's isolation level."""
        return self.c.get_watermark_offsets(TopicPartition(self.topic, p), timeout=TIMEOUT)

    def summary(self):
        return {p: (len(self.records[p]), self.eof.get(p)) for p in range(self.partitions)}

    def close(self):
        self.c.close()


def read_all(bootstrap, topic, partitions, isolation, timeout=TIMEOUT):
    r = Reader(bootstrap, topic, partitions, isolation)
    try:
        return r.to_end(timeout)
    finally:
        r.close()


def group_offsets(admin, group, topic):
    """{partition: committed offset} of `group` on `topic` (OffsetFetch via the admin)."""
    res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(timeout=TIMEOUT)
    return {tp.partition: tp.offset for tp in res.topic_partitions if tp.topic == topic and tp.offset >= 0}


def end_offsets(admin, topic, partitions, isolation=IsolationLevel.READ_UNCOMMITTED):
    specs = {TopicPartition(topic, p): OffsetSpec.latest() for p in range(partitions)}
    res = admin.list_offsets(specs, isolation_level=isolation, request_timeout=TIMEOUT)
    return {tp.partition: f.result(timeout=TIMEOUT).offset for tp, f in res.items()}


def settled(admin, topic, partitions, timeout=TIMEOUT):
    """Waits until no transaction is open on `topic` and every marker is written: the last
    stable offset equals the high watermark on every partition. (Kafka's EndTxn returns
    once the outcome is decided; the markers are written after it.) Returns the offsets."""
    def check():
        hw = end_offsets(admin, topic, partitions)
        return hw if end_offsets(admin, topic, partitions, IsolationLevel.READ_COMMITTED) == hw else None
    return wait_until(check, timeout=timeout, interval=0.1, what=f"{topic}: last stable offset = high watermark")


def check_fatal_fenced(err):
    assert err.fatal() or err.code() in FENCED, \
        f"expected a fatal fenced error, got {err} (code {err.code()}, fatal {err.fatal()})"


# ---------------------------------------------------------------------------
# idempotent producer

CUTS = 15


def test_idempotent_producer_retries_through_cut_connections_without_duplicates(tmp_path):
    """Connections are reset while produce requests are in flight: requests the broker has
    already written lose their responses and the producer sends them again. The broker
    must answer those retries with the original offsets and store nothing twice."""
    b = Broker(tmp_path / "data")
    proxy = CuttingProxy(b.port)
    b.args = ["--advertise", f"127.0.0.1:{proxy.port}"]
    b.start()
    try:
        bootstrap = f"127.0.0.1:{proxy.port}"
        admin = admin_client(bootstrap)
        topic, partitions, total = "idem-cut", 2, 4000
        create_topic(admin, topic, partitions=partitions)
        deliveries = Deliveries()
        fatal = []
        p = Producer({
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "batch.num.messages": 20,
            "max.in.flight.requests.per.connection": 5,
            "message.timeout.ms": 90000,
            "retry.backoff.ms": 20,
            "reconnect.backoff.ms": 10,
            "reconnect.backoff.max.ms": 100,
            "error_cb": lambda err: fatal.append(err) if err.fatal() else None,
        })
        stop = threading.Event()

        def cutter():
            # Each cut waits for the producer to make progress since the previous one (so
            # it always reconnects, and re-bootstraps, between cuts) and lands while it writes.
            seen = 0
            while proxy.cuts < CUTS and not stop.is_set():
                if deliveries.count() >= seen + 100:
                    proxy.cut()
                    seen = deliveries.count()
                stop.wait(0.02)

        t = threading.Thread(target=cutter, daemon=True)
        t.start()
        try:
            for seq in range(total):
                value = f"{seq:06d}".encode()
                p.produce(topic, value=value, partition=seq % partitions, on_delivery=deliveries.cb)
                p.poll(0.01 if seq % 10 == 9 else 0)
            assert p.flush(90) == 0, "messages still queued after flush"
        finally:
            stop.set()
            t.join()
        assert proxy.cuts >= 10, f"only {proxy.cuts} cuts happened while producing"
        # (With duplicate detection switched off in the broker this test fails: retried
        # batches are stored twice.)
        assert not fatal, f"fatal producer error: {fatal}"
        assert not deliveries.failed, deliveries.failed[:3]
        assert deliveries.count() == total
        rc = read_all(bootstrap, topic, partitions, "read_uncommitted")
        for part in range(partitions):
            sent = [f"{seq:06d}" for seq in range(part, total, partitions)]
            assert rc.values(part) == sent, f"partition {part}: duplicates or gaps after {proxy.cuts} cuts"
            acked = sorted(off for v, (pp, off) in deliveries.ok.items() if pp == part)
            assert acked == list(range(len(sent))), f"partition {part}: acknowledged offsets are not 0..n-1"
    finally:
        b.stop()
        proxy.close()


IDEMPOTENT_RECORDS = 5000
RESTART_AFTER_ACKS = 1500


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
def test_idempotent_producer_writes_every_record_exactly_once_across_a_broker_restart(broker, how):
    admin = admin_client(broker.bootstrap)
    topic, partitions = f"idem-restart-{how}", 3
    create_topic(admin, topic, partitions=partitions)

    deliveries = Deliveries()
    fatal = []
    errors = []
    p = Producer({
        "bootstrap.servers": broker.bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "max.in.flight.requests.per.connection": 5,
        # Long enough to retry across the restart.
        "message.timeout.ms": 90000,
        "retry.backoff.ms": 100,
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
        "socket.timeout.ms": 10000,
        "error_cb": lambda err: fatal.append(err) if err.fatal() else None,
    })

    def run():
        try:
            for seq in range(IDEMPOTENT_RECORDS):
                value = f"{seq:06d}".encode()
                while True:
                    try:
                        p.produce(topic, key=value, value=value, partition=seq % partitions,
                                  on_delivery=deliveries.cb)
                        break
                    except BufferError:
                        p.poll(0.05)
                # Pace the writes so the restart lands while they go on.
                p.poll(0.003 if seq % 5 == 0 else 0)
            assert p.flush(90) == 0, "messages still queued after flush"
        except BaseException as e:  # noqa: BLE001 - reported by the test thread
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    wait_until(lambda: deliveries.count() >= RESTART_AFTER_ACKS or errors or fatal or deliveries.failed,
               timeout=TIMEOUT, interval=0.01, what=f"{RESTART_AFTER_ACKS} acknowledgements")
    assert not errors and not fatal and not deliveries.failed, (errors, fatal, deliveries.failed[:3])
    if how == "kill9":
        broker.kill9()
    else:
        assert broker.stop() == 0, f"SIGTERM exit code is not 0: {broker.log_tail()}"
    acked_at_restart = deliveries.count()
    broker.start()
    t.join(timeout=100)
    assert not t.is_alive(), "the producer did not finish after the restart"
    assert not errors, errors
    assert not fatal, f"fatal producer error: {fatal}"
    assert not deliveries.failed, f"{len(deliveries.failed)} deliveries failed, e.g. {deliveries.failed[:3]}"
    assert acked_at_restart < IDEMPOTENT_RECORDS, \
        "every record was acknowledged before the restart: the test did not restart the broker mid-stream"
    assert deliveries.count() == IDEMPOTENT_RECORDS

    # The log holds every record exactly once, per partition in the order sent, at the
    # offsets the producer was given.
    log = read_all(broker.bootstrap, topic, partitions, "read_uncommitted", timeout=60)
    for part in range(partitions):
        want = [f"{seq:06d}" for seq in range(part, IDEMPOTENT_RECORDS, partitions)]
        got = log.values(part)
        dups = len(got) - len(set(got))
        assert got == want, (f"partition {part}: {len(got)} records ({dups} duplicates) where "
                             f"{len(want)} were sent; first difference at "
                             f"{next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))}")
        assert log.offsets(part) == list(range(len(want))), f"partition {part}: offsets not contiguous"
        for off, v in log.records[part]:
            assert deliveries.ok[v.encode()] == (part, off), f"{v}: acknowledged at {deliveries.ok[v.encode()]}, stored at {off}"
        assert log.eof[part] == len(want)
    print(f"{how} after {acked_at_restart} of {IDEMPOTENT_RECORDS} acknowledgements")


# ---------------------------------------------------------------------------
# commit, abort, isolation levels

OUTCOMES = ["commit", "abort", "commit", "abort", "abort", "commit", "abort"]
PER_TXN = 10


def test_read_committed_gets_committed_transactions_only_and_read_uncommitted_gets_all(broker):
    admin = admin_client(broker.bootstrap)
    topic, partitions = "txn-mixed", 3
    create_topic(admin, topic, partitions=partitions)

    p = txn_producer(broker.bootstrap, "txn-mixed-app")
    deliveries = Deliveries()
    committed = defaultdict(list)
    everything = defaultdict(list)
    for t, outcome in enumerate(OUTCOMES):
        values = txn_values(f"t{t}-{outcome}", partitions, PER_TXN)
        p.begin_transaction()
        produce_values(p, topic, values, deliveries)
        if outcome == "commit":
            p.commit_transaction(TIMEOUT)
            for part, vs in values.items():
                committed[part].extend(vs)
        else:
            # Flushed first, so the aborted records are in the log.
            assert p.flush(TIMEOUT) == 0
            p.abort_transaction(TIMEOUT)
        for part, vs in values.items():
            everything[part].extend(vs)
    assert not deliveries.failed, deliveries.failed[:3]
    assert deliveries.count() == len(OUTCOMES) * PER_TXN * partitions

    # Nothing is left open: the last stable offset reaches the high watermark, and every
    # transaction's marker takes one offset per partition, as in Kafka.
    high = len(OUTCOMES) * (PER_TXN + 1)
    assert settled(admin, topic, partitions) == {part: high for part in range(partitions)}

    rc = read_all(broker.bootstrap, topic, partitions, "read_committed")
    ru = read_all(broker.bootstrap, topic, partitions, "read_uncommitted")
    for part in range(partitions):
        # Exactly the committed records, each once, in order; no aborted one, no marker.
        assert rc.values(part) == committed[part], f"partition {part} read_committed"
        # Both, aborted included, and still no marker returned as a message.
        assert ru.values(part) == everything[part], f"partition {part} read_uncommitted"
        # Both consumers went past the markers (and the trailing aborted transaction).
        assert rc.eof[part] == high and ru.eof[part] == high, (rc.eof, ru.eof)
        # Each record at the offset it was acknowledged with.
        for off, v in ru.records[part]:
            assert deliveries.ok[v.encode()] == (part, off), v
        assert set(rc.records[part]) <= set(ru.records[part])
    assert not any("abort" in v for v in rc.all_values())


# ---------------------------------------------------------------------------
# last stable offset

def test_open_transaction_holds_read_committed_consumers_at_the_last_stable_offset(broker):
    admin = admin_client(broker.bootstrap)
    topic, partitions = "txn-lso", 2
    create_topic(admin, topic, partitions=partitions)

    # 10 committed records per partition (offsets 0-9, commit marker at 10).
    first = txn_values("first", partitions, 10)
    committer = txn_producer(broker.bootstrap, "lso-committer")
    committer.begin_transaction()
    produce_values(committer, topic, first)
    committer.commit_transaction(TIMEOUT)
    lso = 11
    assert settled(admin, topic, partitions) == {p: lso for p in range(partitions)}

    # An open transaction: 5 records per partition at offsets 11-15, flushed, not committed.
    opened = txn_values("open", partitions, 5)
    open_p = txn_producer(broker.bootstrap, "lso-open")
    open_p.begin_transaction()
    produce_values(open_p, topic, opened)
    assert open_p.flush(TIMEOUT) == 0
    # Then plain (non-transactional) records after it, at offsets 16-18.
    plain = {p: [f"plain-p{p}-{i}" for i in range(3)] for p in range(partitions)}
    plain_p = producer(broker.bootstrap)
    produce_values(plain_p, topic, plain)
    assert plain_p.flush(TIMEOUT) == 0
    high = 19

    rc = Reader(broker.bootstrap, topic, partitions, "read_committed")
    ru = Reader(broker.bootstrap, topic, partitions, "read_uncommitted")
    try:
        ru.to_end()
        for p in range(partitions):
            assert ru.values(p) == first[p] + opened[p] + plain[p], f"partition {p} read_uncommitted"
            assert ru.eof[p] == high

        # read_committed stops at the open transaction's first offset: the plain records
        # after it wait too. Keep polling a while: nothing more comes.
        rc.to_end()
        rc.poll_for(3)
        for p in range(partitions):
            assert rc.values(p) == first[p], f"partition {p} read_committed while the transaction is open"
            assert rc.eof[p] == lso, f"partition {p}: read_committed end {rc.eof[p]}, want the LSO {lso}"
            assert rc.watermarks(p) == (0, lso), "ListOffsets(latest, READ_COMMITTED) is not the LSO"
            assert ru.watermarks(p) == (0, high)
        assert end_offsets(admin, topic, partitions, IsolationLevel.READ_COMMITTED) == \
            {p: lso for p in range(partitions)}
        assert end_offsets(admin, topic, partitions) == {p: high for p in range(partitions)}

        open_p.commit_transaction(TIMEOUT)
        high += 1  # the commit marker
        rc.wait(lambda r: all(r.eof.get(p) == high for p in range(partitions)),
                what="read_committed to reach the end after the commit")
        for p in range(partitions):
            assert rc.values(p) == first[p] + opened[p] + plain[p], f"partition {p} read_committed after commit"
            assert rc.watermarks(p) == (0, high)
        assert end_offsets(admin, topic, partitions, IsolationLevel.READ_COMMITTED) == \
            {p: high for p in range(partitions)}
    finally:
        rc.close()
        ru.close()


# ---------------------------------------------------------------------------
# consume-transform-produce

def transform_app(bootstrap, group, src, dst, txn_id, records, commit=True, batch=40, timeout=60):
    """A transactional consume-transform-produce app: consumes `records` records of `src`
    in `group` (read_committed, no auto-commit), writes "out-<value>" to the same partition
    of `dst` and sends the consumed positions to each transaction, which it then commits
    (or, with commit=False, aborts). Returns how many transactions it ran."""
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "fetch.wait.max.ms": 50,
    })
    p = txn_producer(bootstrap, txn_id)
    txns, done = 0, 0
    try:
        c.subscribe([src])
        deadline = time.monotonic() + timeout
        while done < records:
            assert time.monotonic() < deadline, f"app processed {done} of {records} records"
            msgs = c.consume(num_messages=batch, timeout=0.5)
            for m in msgs:
                if m.error():
                    raise KafkaException(m.error())
            if not msgs:
                continue
            p.begin_transaction()
            for m in msgs:
                p.produce(dst, key=m.key(), value=b"out-" + m.value(), partition=m.partition())
            positions = c.position([TopicPartition(src, part) for part in sorted({m.partition() for m in msgs})])
            p.send_offsets_to_transaction(positions, c.consumer_group_metadata(), TIMEOUT)
            if commit:
                p.commit_transaction(TIMEOUT)
            else:
                assert p.flush(TIMEOUT) == 0
                p.abort_transaction(TIMEOUT)
            txns += 1
            done += len(msgs)
        assert done == records, f"app consumed {done} records, {records} were there"
        return txns
    finally:
        c.close()


def test_consume_transform_produce_commits_group_offsets_with_the_transaction(broker_factory):
    broker = broker_factory(*FAST_GROUPS)
    admin = admin_client(broker.bootstrap)
    src, dst, partitions, group = "ctp-in", "ctp-out", 3, "ctp-app"
    create_topic(admin, src, partitions=partitions)
    create_topic(admin, dst, partitions=partitions)

    def write_input(tag, per_partition):
        values = {p: [f"{tag}-p{p}-{i}" for i in range(per_partition)] for p in range(partitions)}
        pp = producer(broker.bootstrap)
        produce_values(pp, src, values)
        assert pp.flush(TIMEOUT) == 0
        return values

    # 1. N records, processed in committed transactions.
    first = write_input("a", 100)
    assert transform_app(broker.bootstrap, group, src, dst, "ctp-app-txn", 300) > 1
    settled(admin, dst, partitions)
    assert wait_until(lambda: group_offsets(admin, group, src) == {p: 100 for p in range(partitions)},
                      timeout=TIMEOUT, what="the group's offsets at the end of the input")
    assert group_offsets(admin, group, src) == end_offsets(admin, src, partitions)
    # A new consumer of the group sees the same committed offsets.
    c = consumer(broker.bootstrap, **{"group.id": group})
    try:
        got = c.committed([TopicPartition(src, p) for p in range(partitions)], timeout=TIMEOUT)
        assert {tp.partition: tp.offset for tp in got} == {p: 100 for p in range(partitions)}
    finally:
        c.close()
    out = read_all(broker.bootstrap, dst, partitions, "read_committed")
    for p in range(partitions):
        assert out.values(p) == [f"out-{v}" for v in first[p]], f"output partition {p}"

    # 2. M more records, processed in transactions that abort: the group's committed
    # offsets stay where they were and no output is visible.
    second = write_input("b", 20)
    transform_app(broker.bootstrap, group, src, dst, "ctp-app-txn", 60, commit=False)
    settled(admin, dst, partitions)
    assert group_offsets(admin, group, src) == {p: 100 for p in range(partitions)}, \
        "offsets sent to an aborted transaction were committed"
    out = read_all(broker.bootstrap, dst, partitions, "read_committed")
    assert sum(len(out.values(p)) for p in range(partitions)) == 300

    # 3. The app again (same group and transactional.id): it resumes at the committed
    # offsets, so the M records are processed once more, this time committed.
    transform_app(broker.bootstrap, group, src, dst, "ctp-app-txn", 60)
    settled(admin, dst, partitions)
    assert wait_until(lambda: group_offsets(admin, group, src) == {p: 120 for p in range(partitions)},
                      timeout=TIMEOUT, what="the group's offsets at the new end of the input")
    out = read_all(broker.bootstrap, dst, partitions, "read_committed")
    for p in range(partitions):
        assert out.values(p) == [f"out-{v}" for v in first[p] + second[p]], f"output partition {p}"
    # The aborted attempt's output is in the log, skipped by read_committed only.
    raw = read_all(broker.bootstrap, dst, partitions, "read_uncommitted")
    for p in range(partitions):
        assert raw.values(p) == [f"out-{v}" for v in first[p] + second[p] + second[p]], f"output partition {p}"


# ---------------------------------------------------------------------------
# fencing

def test_second_producer_with_the_same_transactional_id_fences_the_first(broker):
    admin = admin_client(broker.bootstrap)
    topic, partitions = "txn-fence", 2
    create_topic(admin, topic, partitions=partitions)

    a = txn_producer(broker.bootstrap, "fenced-app")
    a.begin_transaction()
    a_first = txn_values("a-first", partitions, 5)
    produce_values(a, topic, a_first)
    assert a.flush(TIMEOUT) == 0

    # The same transactional.id again: init_transactions aborts A's open transaction and
    # bumps the epoch.
    b = txn_producer(broker.bootstrap, "fenced-app")

    # A carries on, and finds out: its commit fails with a fatal fenced error. (No delivery
    # callbacks and no flush here: after a fatal error confluent-kafka 2.16's flush() raises
    # and then runs delivery callbacks with the error still set, a SystemError. That none
    # of A's late records reached the log is checked with read_uncommitted below.)
    produce_values(a, topic, txn_values("a-late", partitions, 5))
    with pytest.raises(KafkaException) as exc:
        a.commit_transaction(TIMEOUT)
    check_fatal_fenced(exc.value.args[0])

    # B works normally.
    b.begin_transaction()
    b_values = txn_values("b", partitions, 5)
    produce_values(b, topic, b_values)
    b.commit_transaction(TIMEOUT)

    settled(admin, topic, partitions)
    rc = read_all(broker.bootstrap, topic, partitions, "read_committed")
    ru = read_all(broker.bootstrap, topic, partitions, "read_uncommitted")
    for p in range(partitions):
        assert rc.values(p) == b_values[p], f"partition {p}: read_committed"
        # A's first records were written (and aborted by B's init).
        assert ru.values(p) == a_first[p] + b_values[p], f"partition {p}: read_uncommitted"


# ---------------------------------------------------------------------------
# crashes

# The app that dies: opens a transaction, writes `n` records to each partition, flushes
# (so they are in the log), says so, and waits to be killed.
CRASHING_APP = r"""
import sys
from confluent_kafka import Producer
bootstrap, topic, txn_id, partitions, n, txn_timeout = sys.argv[1:7]
failed = []
p = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id, "acks": "all",
              "transaction.timeout.ms": int(txn_timeout), "socket.timeout.ms": 5000,
              "linger.ms": 5})
p.init_transactions(20)
p.begin_transaction()
for part in range(int(partitions)):
    for i in range(int(n)):
        p.produce(topic, value=f"doomed-p{part}-{i}".encode(), partition=part,
                  on_delivery=lambda err, msg: failed.append(str(err)) if err else None)
left = p.flush(20)
print("failed" if left or failed else "flushed", left, failed[:3], flush=True)
sys.stdin.read()
"""


def start_crashing_app(bootstrap, topic, txn_id, partitions, n, txn_timeout_ms):
    proc = subprocess.Popen([sys.executable, "-c", CRASHING_APP, bootstrap, topic, txn_id,
                             str(partitions), str(n), str(txn_timeout_ms)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout=45):
            proc.kill()
            proc.wait()
            pytest.fail(f"the app did not flush its transaction: {proc.stderr.read().decode(errors='replace')[-2000:]}")
        line = proc.stdout.readline().decode()
    finally:
        sel.close()
    if not line.startswith("flushed"):
        proc.kill()
        proc.wait()
        pytest.fail(f"the app failed: {line!r} {proc.stderr.read().decode(errors='replace')[-2000:]}")
    return proc


@pytest.mark.parametrize("recovery", ["timeout", "same_transactional_id"])
def test_kill9_in_the_middle_of_a_transaction_aborts_it(broker_factory, recovery):
    broker = broker_factory(*FAST_TXN_CLEANUP)
    admin = admin_client(broker.bootstrap)
    topic, partitions = f"txn-crash-{recovery.replace('_', '-')}", 2
    create_topic(admin, topic, partitions=partitions)
    before = txn_values("before", partitions, 3)
    pp = txn_producer(broker.bootstrap, f"crash-before-{recovery}")
    pp.begin_transaction()
    produce_values(pp, topic, before)
    pp.commit_transaction(TIMEOUT)
    del pp

    # "timeout": the broker has to abort it by itself after 5 s. "same_transactional_id":
    # a long timeout, so only the restarted app's init_transactions can abort it at once.
    txn_timeout_ms = 5000 if recovery == "timeout" else 300000
    app = start_crashing_app(broker.bootstrap, topic, f"crash-app-{recovery}", partitions, 10, txn_timeout_ms)
    app.send_signal(signal.SIGKILL)
    app.wait()
    for pipe in (app.stdin, app.stdout, app.stderr):
        pipe.close()
    broker.kill9()
    broker.start()
    t0 = time.monotonic()

    # Committed records written after the dead transaction, on the same partitions.
    after = txn_values("after", partitions, 4)
    if recovery == "timeout":
        q = txn_producer(broker.bootstrap, "crash-other-app")
    else:
        q = txn_producer(broker.bootstrap, f"crash-app-{recovery}")
    q.begin_transaction()
    produce_values(q, topic, after)
    q.commit_transaction(TIMEOUT)

    # read_committed consumers move past the dead transaction once it is aborted.
    rc = Reader(broker.bootstrap, topic, partitions, "read_committed")
    try:
        rc.wait(lambda r: all(r.values(p)[-len(after[p]):] == after[p] for p in range(partitions)),
                timeout=60, what="the records committed after the dead transaction")
        waited = time.monotonic() - t0
        for p in range(partitions):
            assert rc.values(p) == before[p] + after[p], f"partition {p}: read_committed"
    finally:
        rc.close()
    if recovery == "same_transactional_id":
        assert waited < 20, f"took {waited:.1f}s: the new producer's init did not abort the old transaction"
    # The dead transaction's records did reach the log (acks=all before the kill).
    ru = read_all(broker.bootstrap, topic, partitions, "read_uncommitted")
    for p in range(partitions):
        doomed = [f"doomed-p{p}-{i}" for i in range(10)]
        assert ru.values(p) == before[p] + doomed + after[p], f"partition {p}: read_uncommitted"
    print(f"{recovery}: committed records visible {waited:.1f}s after the restart")


def test_kill9_right_after_commit_keeps_the_transaction_committed(broker):
    admin = admin_client(broker.bootstrap)
    topic, partitions = "txn-crash-commit", 3
    create_topic(admin, topic, partitions=partitions)

    p = txn_producer(broker.bootstrap, "crash-commit-app")
    first = txn_values("first", partitions, 10)
    p.begin_transaction()
    produce_values(p, topic, first)
    p.commit_transaction(TIMEOUT)
    broker.kill9()
    broker.start()

    # Visible to read_committed (Kafka writes the markers after EndTxn returns: wait for them).
    rc = Reader(broker.bootstrap, topic, partitions, "read_committed")
    try:
        rc.wait(lambda r: all(len(r.values(q)) >= len(first[q]) for q in range(partitions)),
                timeout=30, what="the committed transaction after the restart")
        # The same producer carries on with its next transaction.
        second = txn_values("second", partitions, 5)
        p.begin_transaction()
        produce_values(p, topic, second)
        p.commit_transaction(TIMEOUT)
        high = len(first[0]) + 1 + len(second[0]) + 1
        rc.wait(lambda r: all(r.eof.get(q) == high for q in range(partitions)), timeout=30,
                what="the second transaction")
        for q in range(partitions):
            assert rc.values(q) == first[q] + second[q], f"partition {q}: read_committed"
    finally:
        rc.close()
