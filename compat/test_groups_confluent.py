"""Consumer groups (classic protocol) driven with confluent-kafka (librdkafka), end to end.

- Three members over six partitions, with the eager `range` and the `cooperative-sticky`
  assignors: two partitions each once stable; every record processed exactly once while a
  member leaves cleanly (LeaveGroup) and another joins.
- A member in its own process is killed with SIGKILL: the survivors get its partitions
  within the session timeout plus a few seconds and re-read exactly what it never committed.
- Consumers commit and close; the next consumer of the group resumes at the committed
  offsets, after a consumer restart, a clean broker restart and a kill -9 of the broker.
- Two members keep consuming while the broker restarts under them (SIGTERM, SIGKILL);
  a SIGTERM while the group rebalances is prompt and expels no member.
- Static members (group.instance.id) restarted within the session timeout get their
  partitions back and the other members see no rebalance; one that stays away is removed
  after its session timeout.
- Admin: list (with a state filter), describe and delete groups, delete committed offsets,
  consumer lag from committed and end offsets.
- With the default group.initial.rebalance.delay.ms (3000) a lone member is assigned after
  the delay, not after a session timeout.

How members process: each member polls one record at a time, "processes" it (appends it to
a shared log with the member's name), and commits what it processed synchronously every 20
records and whenever a poll comes back empty. Its rebalance callbacks commit what it
processed on the partitions being revoked before giving them up (for cooperative-sticky the
callbacks use incremental_assign/incremental_unassign). So with members that join and leave
cleanly, every record must be processed exactly once across the group."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import OffsetSpec

from conftest import wait_until
from test_confluent_kafka import TIMEOUT, admin_client, create_topic, producer

pytestmark = pytest.mark.timeout(120)  # pytest-timeout: a hard limit per test

PARTITIONS = 6
# RUNNEL_GROUP_TEST_LOG_LEVEL (e.g. "info,runnel::handlers=debug") sets the brokers' --log-level.
LOG_ARGS = ("--log-level", os.environ["RUNNEL_GROUP_TEST_LOG_LEVEL"]) if os.environ.get("RUNNEL_GROUP_TEST_LOG_LEVEL") else ()
FAST_DELAY = ("--group-initial-rebalance-delay-ms", "500", *LOG_ARGS)
STRATEGIES = ("range", "cooperative-sticky")
HEARTBEAT_MS = 500
COMMIT_EVERY = 20
HERE = Path(__file__).resolve().parent


# ---------------------------------------------------------------------------
# members

class Recorder:
    """What the group processed: (member, partition, offset, value) in processing order."""

    def __init__(self):
        self.lock = threading.Lock()
        self.records = []
        self.commits = []  # (monotonic time, member, {partition: offset})

    def record(self, member, partition, offset, value):
        with self.lock:
            self.records.append((member, partition, offset, value))

    def committed(self, member, offsets):
        with self.lock:
            self.commits.append((time.monotonic(), member, dict(offsets)))

    def assignment(self, member, partitions):
        pass

    def ack(self, member):
        pass

    def committed_before(self, t):
        """{partition: highest offset committed (acknowledged) before monotonic time t}"""
        out = {}
        with self.lock:
            for when, _, offs in self.commits:
                if when < t:
                    for p, o in offs.items():
                        out[p] = max(out.get(p, 0), o)
        return out

    def snapshot(self):
        with self.lock:
            return list(self.records)

    def keys(self):
        with self.lock:
            return {(p, o) for _, p, o, _ in self.records}

    def by_member(self, member):
        return [(p, o) for m, p, o, _ in self.snapshot() if m == member]


class Member:
    """One group member: a confluent-kafka Consumer subscribed to `topic`, run by `run()`
    (in a thread after `start()`, or in the calling thread)."""

    def __init__(self, name, bootstrap, group, topic, strategy, events, *, session_ms=6000,
                 instance_id=None, limit=None):
        self.name = name
        self.topic = topic
        self.events = events
        self.limit = limit  # stop by itself after processing this many records
        self.cooperative = strategy == "cooperative-sticky"
        self.conf = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "client.id": name,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": strategy,
            "session.timeout.ms": session_ms,
            "heartbeat.interval.ms": HEARTBEAT_MS,
            "fetch.wait.max.ms": 50,
            "socket.timeout.ms": 10000,
        }
        if instance_id:
            self.conf["group.instance.id"] = instance_id
        self.lock = threading.Lock()
        self.assigned = set()
        self.history = []           # (monotonic time, "assign"|"revoke"|"lost", [partitions])
        self.pending = {}           # partition -> next offset processed but not yet committed
        self.processed = 0
        self.commit_failures = []   # (where, error text)
        self.errors = []
        self.commit_enabled = True
        self._nocommit_requested = False
        self._stop = threading.Event()
        self._hold = threading.Event()
        self.thread = None
        self.consumer = None
        self.t_subscribed = None
        self.closed = threading.Event()

    # -- control (from the test thread)

    def start(self):
        self.thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self.thread.start()
        return self

    def stop(self, timeout=30):
        """Commits what it processed and closes the consumer (LeaveGroup for a dynamic
        member; a static member closes without leaving)."""
        self._stop.set()
        if self.thread is not None:
            self.thread.join(timeout)
            assert not self.thread.is_alive(), f"{self.name}: close did not return within {timeout}s"

    def hold(self, on=True):
        """Stop (or resume) polling; heartbeats go on in librdkafka's background thread."""
        (self._hold.set if on else self._hold.clear)()

    def request_nocommit(self):
        self._nocommit_requested = True

    def assignment(self):
        with self.lock:
            return set(self.assigned)

    def counts(self):
        with self.lock:
            return Counter(kind for _, kind, _ in self.history)

    # -- the member's own thread

    def run(self):
        c = None
        try:
            c = self.consumer = Consumer(self.conf)
            self.t_subscribed = time.monotonic()
            c.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                        on_lost=self._on_lost)
            since_commit = 0
            while not self._stop.is_set():
                if self._nocommit_requested and self.commit_enabled:
                    self.commit_enabled = False
                    self.events.ack(self.name)
                if self._hold.is_set():
                    time.sleep(0.05)
                    continue
                m = c.poll(0.1)
                if m is None:
                    self._commit(c, "idle")
                    since_commit = 0
                    continue
                if m.error():
                    self.errors.append(str(m.error()))
                    continue
                self.events.record(self.name, m.partition(), m.offset(), m.value())
                with self.lock:
                    self.pending[m.partition()] = m.offset() + 1
                self.processed += 1
                since_commit += 1
                if since_commit >= COMMIT_EVERY:
                    self._commit(c, "batch")
                    since_commit = 0
                if self.limit is not None and self.processed >= self.limit:
                    break
            self._commit(c, "close")
        except Exception as e:  # surfaced by the test through .errors
            self.errors.append(f"{type(e).__name__}: {e}")
        finally:
            if c is not None:
                try:
                    c.close()
                except Exception as e:
                    self.errors.append(f"close: {e}")
            self.closed.set()

    def _commit(self, c, where, parts=None, attempts=1):
        if not self.commit_enabled:
            return
        with self.lock:
            offs = {p: o for p, o in self.pending.items() if parts is None or p in parts}
        if not offs:
            return
        for attempt in range(attempts):
            try:
                res = c.commit(offsets=[TopicPartition(self.topic, p, o) for p, o in sorted(offs.items())],
                               asynchronous=False)
                bad = [(tp.partition, str(tp.error)) for tp in res or () if tp.error is not None]
                if bad:
                    raise KafkaException(f"partition errors {bad}")
                break
            except KafkaException as e:
                self.commit_failures.append((where, str(e)))
                if attempt + 1 == attempts:
                    return
                time.sleep(0.2)
        with self.lock:
            for p, o in offs.items():
                if self.pending.get(p) == o:
                    del self.pending[p]
        self.events.committed(self.name, offs)

    def _note(self, kind, partitions):
        parts = sorted(tp.partition for tp in partitions)
        with self.lock:
            self.history.append((time.monotonic(), kind, parts))
            if kind == "assign":
                self.assigned = (self.assigned | set(parts)) if self.cooperative else set(parts)
            else:
                self.assigned -= set(parts)
            current = set(self.assigned)
        self.events.assignment(self.name, current)

    def _on_assign(self, c, partitions):
        if self.cooperative:
            c.incremental_assign(partitions)
        else:
            c.assign(partitions)
        self._note("assign", partitions)

    def _on_revoke(self, c, partitions):
        # Commit what was processed on the partitions given up, before giving them up.
        self._commit(c, "revoke", parts={tp.partition for tp in partitions}, attempts=5)
        with self.lock:
            for tp in partitions:
                self.pending.pop(tp.partition, None)
        if self.cooperative:
            c.incremental_unassign(partitions)
        else:
            c.unassign()
        self._note("revoke", partitions)

    def _on_lost(self, c, partitions):
        # The group moved on without us: what is not committed cannot be committed now.
        with self.lock:
            for tp in partitions:
                self.pending.pop(tp.partition, None)
        if self.cooperative:
            c.incremental_unassign(partitions)
        else:
            c.unassign()
        self._note("lost", partitions)


# -- a member in a child process (killed with SIGKILL by the crash test)

class _JsonEvents:
    """The child's event sink: one JSON object per line on stdout."""

    def __init__(self):
        self.lock = threading.Lock()

    def _emit(self, **obj):
        with self.lock:
            sys.stdout.write(json.dumps(obj) + "\n")
            sys.stdout.flush()

    def record(self, member, partition, offset, value):
        self._emit(ev="rec", p=partition, o=offset, v=value.decode() if value is not None else None)

    def committed(self, member, offsets):
        self._emit(ev="commit", offs={str(p): o for p, o in offsets.items()})

    def assignment(self, member, partitions):
        self._emit(ev="assign", parts=sorted(partitions))

    def ack(self, member):
        self._emit(ev="nocommit")


def _child_main(cfg_json):
    cfg = json.loads(cfg_json)
    m = Member(cfg["name"], cfg["bootstrap"], cfg["group"], cfg["topic"], cfg["strategy"], _JsonEvents(),
               session_ms=cfg["session_ms"])

    def commands():
        for line in sys.stdin:
            if line.strip() == "nocommit":
                m.request_nocommit()
            elif line.strip() == "stop":
                m._stop.set()

    threading.Thread(target=commands, daemon=True).start()
    m.run()
    for e in m.errors + [f"commit {w}: {t}" for w, t in m.commit_failures]:
        sys.stderr.write(e + "\n")


class ChildMember:
    """A Member running in a separate Python process; its events come back on a pipe."""

    def __init__(self, name, bootstrap, group, topic, strategy, events, log_path, session_ms=6000):
        cfg = dict(name=name, bootstrap=bootstrap, group=group, topic=topic, strategy=strategy,
                   session_ms=session_ms)
        boot = (f"import sys; sys.path.insert(0, {str(HERE)!r}); "
                "import test_groups_confluent as t; t._child_main(sys.argv[1])")
        self.name = name
        self.events = events
        self.stderr = open(log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-c", boot, json.dumps(cfg)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, cwd=str(HERE))
        self.lock = threading.Lock()
        self.assigned = set()
        self.committed = {}      # partition -> last committed offset (acknowledged by the broker)
        self.nocommit = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev["ev"] == "rec":
                v = ev["v"].encode() if ev["v"] is not None else None
                self.events.record(self.name, ev["p"], ev["o"], v)
            elif ev["ev"] == "commit":
                with self.lock:
                    self.committed.update({int(p): o for p, o in ev["offs"].items()})
            elif ev["ev"] == "assign":
                with self.lock:
                    self.assigned = set(ev["parts"])
            elif ev["ev"] == "nocommit":
                self.nocommit.set()

    def assignment(self):
        with self.lock:
            return set(self.assigned)

    def send(self, line):
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def kill9(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.reader.join(10)

    def cleanup(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.stderr.close()


# ---------------------------------------------------------------------------
# producing, checking

def produce(bootstrap, topic, tag, per_partition, partitions=PARTITIONS):
    """`per_partition` records (an int, or {partition: count}) with unique values to each
    partition; returns {(partition, offset): value} from the delivery reports."""
    counts = per_partition if isinstance(per_partition, dict) else {p: per_partition for p in range(partitions)}
    delivered, errors = {}, []

    def report(err, msg):
        if err is not None:
            errors.append(err)
        else:
            delivered[(msg.partition(), msg.offset())] = msg.value()

    p = producer(bootstrap)
    for part, n in counts.items():
        for i in range(n):
            p.produce(topic, value=f"{tag}-{part}-{i}".encode(), partition=part, on_delivery=report)
        p.poll(0)
    assert p.flush(TIMEOUT) == 0, "records still queued after flush"
    assert not errors, errors[:5]
    assert len(delivered) == sum(counts.values())
    return delivered


class BackgroundProducer:
    """Produces round-robin over the partitions at about `rate` records/s until stopped."""

    def __init__(self, bootstrap, topic, tag, rate=150, partitions=PARTITIONS):
        self.delivered, self.errors = {}, []
        self._stop = threading.Event()
        self.p = producer(bootstrap)
        self.args = (topic, tag, rate, partitions)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _report(self, err, msg):
        if err is not None:
            self.errors.append(err)
        else:
            self.delivered[(msg.partition(), msg.offset())] = msg.value()

    def _run(self):
        topic, tag, rate, partitions = self.args
        i = 0
        while not self._stop.is_set():
            for _ in range(max(1, rate // 20)):
                self.p.produce(topic, value=f"{tag}-{i}".encode(), partition=i % partitions, on_delivery=self._report)
                i += 1
            self.p.poll(0)
            time.sleep(0.05)
        self.sent = i

    def start(self):
        self.thread.start()
        return self

    def abort(self):
        """Stops producing without checking anything (test clean-up)."""
        if not self._stop.is_set():
            self._stop.set()
            self.thread.join(10)
            self.p.purge()

    def stop(self):
        self._stop.set()
        self.thread.join(10)
        assert self.p.flush(TIMEOUT) == 0
        assert not self.errors, self.errors[:5]
        assert len(self.delivered) == self.sent
        return self.delivered


def describe_members(members):
    out = []
    for m in members:
        failures = getattr(m, "commit_failures", [])
        errors = getattr(m, "errors", [])
        out.append(f"{m.name}: assigned {sorted(m.assignment())} commit failures {failures[:5]} errors {errors[:5]}")
    return "; ".join(out)


def wait_all_consumed(produced, rec, members, timeout=30):
    want = set(produced)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if want <= rec.keys():
            return
        time.sleep(0.1)
    missing = sorted(want - rec.keys())
    raise AssertionError(f"{len(missing)} of {len(want)} records never processed, e.g. {missing[:10]}; "
                         f"{describe_members(members)}")


def assert_exactly_once(produced, rec, members):
    """Every produced record was processed by exactly one member, with its value."""
    seen = defaultdict(list)
    for name, p, o, v in rec.snapshot():
        seen[(p, o)].append((name, v))
    missing = sorted(set(produced) - set(seen))
    dups = {k: [n for n, _ in v] for k, v in sorted(seen.items()) if len(v) > 1}
    unexpected = sorted(set(seen) - set(produced))
    wrong = [k for k, v in seen.items() if k in produced and any(val != produced[k] for _, val in v)]
    assert not (missing or dups or unexpected or wrong), (
        f"not exactly once: {len(missing)} missing {missing[:10]}, {len(dups)} duplicated "
        f"{list(dups.items())[:10]}, unexpected {unexpected[:10]}, wrong values {wrong[:10]}; "
        f"{describe_members(members)}")


def balanced(members, partitions=PARTITIONS):
    """The members' own views: disjoint, covering every partition, evenly spread."""
    views = [m.assignment() for m in members]
    union = set().union(*views)
    return (sum(len(v) for v in views) == partitions and union == set(range(partitions))
            and max(len(v) for v in views) - min(len(v) for v in views) <= 1)


def wait_balanced(members, timeout=30, partitions=PARTITIONS):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if balanced(members, partitions):
            return {m.name: m.assignment() for m in members}
        for m in members:
            assert not getattr(m, "errors", None), f"{m.name}: {m.errors}"
        time.sleep(0.05)
    raise AssertionError(f"members not balanced over {partitions} partitions within {timeout}s: "
                         f"{describe_members(members)}")


def committed_offsets(admin, group):
    res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(timeout=TIMEOUT)
    return {(tp.topic, tp.partition): tp.offset for tp in res.topic_partitions if tp.offset >= 0}


def end_offsets(admin, topic, partitions=PARTITIONS):
    futs = admin.list_offsets({TopicPartition(topic, p): OffsetSpec.latest() for p in range(partitions)},
                              request_timeout=TIMEOUT)
    return {tp.partition: f.result(timeout=TIMEOUT).offset for tp, f in futs.items()}


def wait_committed_at_end(admin, group, topic, members, partitions=PARTITIONS, timeout=15):
    end = end_offsets(admin, topic, partitions)
    want = {(topic, p): o for p, o in end.items()}
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = {k: v for k, v in committed_offsets(admin, group).items() if k[0] == topic}
        if got == want:
            return
        time.sleep(0.2)
    raise AssertionError(f"committed {sorted(got.items())} != end offsets {sorted(want.items())}; "
                         f"{describe_members(members)}")


def describe_group(admin, group):
    return admin.describe_consumer_groups([group], request_timeout=TIMEOUT)[group].result(timeout=TIMEOUT)


def assert_described_matches(admin, group, topic, members, strategy):
    """DescribeGroups as a user reads it: Stable, the protocol, one entry per member with
    the partitions that member itself was given."""
    d = describe_group(admin, group)
    assert d.state == ConsumerGroupState.STABLE, d.state
    assert d.partition_assignor == strategy
    assert not d.is_simple_consumer_group
    by_client = {md.client_id: md for md in d.members}
    assert sorted(by_client) == sorted(m.name for m in members), [md.client_id for md in d.members]
    for m in members:
        md = by_client[m.name]
        assert {(tp.topic, tp.partition) for tp in md.assignment.topic_partitions} == \
            {(topic, p) for p in m.assignment()}, f"{m.name}: described {md.assignment.topic_partitions}"
        assert md.member_id and md.host
    return d


def stop_all(members, feed=None):
    if feed is not None:
        feed.abort()
    for m in members:
        try:
            m.stop()
        except AssertionError:
            pass


# ---------------------------------------------------------------------------
# tests

@pytest.mark.parametrize("strategy", STRATEGIES)
def test_three_members_exactly_once_while_members_leave_and_join(broker_factory, strategy):
    b = broker_factory(*FAST_DELAY)
    admin = admin_client(b.bootstrap)
    topic, group = f"eo-{strategy}", f"g-eo-{strategy}"
    create_topic(admin, topic, partitions=PARTITIONS)
    rec = Recorder()
    members = [Member(f"m{i}", b.bootstrap, group, topic, strategy, rec).start() for i in range(3)]
    everyone = list(members)
    feed = None
    try:
        first = wait_balanced(members)
        assert sorted(len(v) for v in first.values()) == [2, 2, 2], first
        assert_described_matches(admin, group, topic, members, strategy)

        produced = produce(b.bootstrap, topic, "a", 40)
        wait_all_consumed(produced, rec, members)
        assert_exactly_once(produced, rec, members)

        # From here on records keep arriving while the membership changes.
        feed = BackgroundProducer(b.bootstrap, topic, "b").start()
        time.sleep(1)
        survivors = members[:2]
        before = {m.name: m.assignment() for m in survivors}
        revokes_before = {m.name: m.counts()["revoke"] for m in survivors}
        t0 = time.monotonic()
        members[2].stop()  # close: LeaveGroup
        after = wait_balanced(survivors, timeout=20)
        took = time.monotonic() - t0
        # LeaveGroup, not the 6 s session timeout, moves the partitions.
        print(f"{strategy}: partitions of the member that left moved in {took:.2f}s")
        assert took < 5, f"partitions of the member that left moved after {took:.1f}s"
        assert sorted(len(v) for v in after.values()) == [3, 3], after
        assert len(describe_group(admin, group).members) == 2
        if strategy == "cooperative-sticky":
            for m in survivors:
                assert before[m.name] <= after[m.name], f"{m.name}: {before[m.name]} -> {after[m.name]}"
                assert m.counts()["revoke"] == revokes_before[m.name], m.history

        time.sleep(1)
        newcomer = Member("m3", b.bootstrap, group, topic, strategy, rec).start()
        everyone.append(newcomer)
        members = survivors + [newcomer]
        t0 = time.monotonic()
        final = wait_balanced(members, timeout=20)
        print(f"{strategy}: the newcomer's partitions in {time.monotonic() - t0:.2f}s")
        assert sorted(len(v) for v in final.values()) == [2, 2, 2], final
        if strategy == "cooperative-sticky":
            for m in survivors:
                assert final[m.name] <= after[m.name], f"{m.name}: {after[m.name]} -> {final[m.name]}"
        time.sleep(1)

        produced.update(feed.stop())
        wait_all_consumed(produced, rec, everyone)
        time.sleep(1)  # a late duplicate would show up here
        assert_exactly_once(produced, rec, everyone)
        wait_committed_at_end(admin, group, topic, everyone)
        assert_described_matches(admin, group, topic, members, strategy)
        assert all(not m.errors for m in everyone), describe_members(everyone)
    finally:
        stop_all(everyone, feed)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_crashed_member_partitions_move_and_uncommitted_records_are_reread(broker_factory, tmp_path, strategy):
    """What is asserted, with X the killed member, C[p] the last offset X committed on its
    partition p (acknowledged by the broker) and L[p] one past the last offset X processed:
    - X's partitions are all held by the two survivors within session.timeout.ms + 4 s;
    - the survivors start X's partitions at exactly C[p] (nothing committed is re-read,
      nothing skipped) and read them contiguously to the end;
    - records on X's partitions in [C[p], L[p]) were processed twice (by X, then by a
      survivor: at-least-once for what X never committed), and this range is not empty;
    - every other record was processed exactly once, and none was lost;
    - at the end the group's committed offsets are the end offsets."""
    b = broker_factory(*FAST_DELAY)
    admin = admin_client(b.bootstrap)
    topic, group = f"crash-{strategy}", f"g-crash-{strategy}"
    create_topic(admin, topic, partitions=PARTITIONS)
    rec = Recorder()
    survivors = [Member(f"s{i}", b.bootstrap, group, topic, strategy, rec).start() for i in range(2)]
    x = ChildMember("x", b.bootstrap, group, topic, strategy, rec, tmp_path / "child.stderr")
    everyone = survivors + [x]
    try:
        wait_balanced(everyone, timeout=30)
        xparts = x.assignment()
        assert len(xparts) == 2

        produced = produce(b.bootstrap, topic, "c1", 30)
        wait_all_consumed(produced, rec, everyone)
        end1 = end_offsets(admin, topic)
        wait_until(lambda: all(x.committed.get(p) == end1[p] for p in xparts), timeout=15,
                   what="the child to commit everything it processed")
        x.send("nocommit")
        assert x.nocommit.wait(10), "child did not acknowledge nocommit"

        produced.update(produce(b.bootstrap, topic, "c2", 20))
        wait_all_consumed(produced, rec, everyone)
        C = {p: x.committed[p] for p in xparts}
        assert C == {p: end1[p] for p in xparts}
        by_x = rec.by_member("x")
        L = {p: max(o for q, o in by_x if q == p) + 1 for p in xparts}
        assert all(L[p] > C[p] for p in xparts), (C, L)
        assert {p: committed_offsets(admin, group)[(topic, p)] for p in xparts} == C

        t0 = time.monotonic()
        x.kill9()
        after = wait_balanced(survivors, timeout=25)
        took = time.monotonic() - t0
        print(f"{strategy}: crashed member's partitions moved in {took:.2f}s; C={C} L={L}")
        assert took < 6 + 4, f"the crashed member's partitions moved after {took:.1f}s"
        assert set().union(*after.values()) >= xparts
        assert len(describe_group(admin, group).members) == 2

        produced.update(produce(b.bootstrap, topic, "c3", 10))
        wait_all_consumed(produced, rec, everyone)
        time.sleep(1)

        seen = defaultdict(list)
        for name, p, o, v in rec.snapshot():
            assert v == produced[(p, o)], (p, o, v)
            seen[(p, o)].append(name)
        assert set(seen) == set(produced)
        by_survivors = defaultdict(list)
        for name, p, o, _ in rec.snapshot():
            if name != "x":
                by_survivors[p].append(o)
        problems = []
        for (p, o), names in sorted(seen.items()):
            if p in xparts and C[p] <= o < L[p]:
                if len(names) != 2 or names[0] != "x" or names[1] not in ("s0", "s1"):
                    problems.append(((p, o), names, "want x, then one survivor"))
            elif len(names) != 1:
                problems.append(((p, o), names, "want exactly once"))
        assert not problems, f"{len(problems)} records processed wrongly: {problems[:10]}; {describe_members(survivors)}"
        end = end_offsets(admin, topic)
        for p in xparts:
            assert sorted(by_survivors[p]) == list(range(C[p], end[p])), \
                f"partition {p}: survivors read {sorted(by_survivors[p])[:10]}... want {C[p]}..{end[p]}"
        wait_committed_at_end(admin, group, topic, survivors)
        assert all(not m.errors for m in survivors), describe_members(survivors)
    finally:
        x.cleanup()
        stop_all(survivors)


def test_consumers_resume_from_committed_offsets_across_consumer_and_broker_restarts(broker_factory):
    b = broker_factory(*FAST_DELAY)
    admin = admin_client(b.bootstrap)
    topic, group = "resume", "g-resume"
    create_topic(admin, topic, partitions=PARTITIONS)
    produced = produce(b.bootstrap, topic, "r", 40)  # 240 records
    rec = Recorder()
    committed = {}
    stages = [("first consumer", 70), ("consumer restart", 60), ("clean broker restart", 60),
              ("broker kill -9", 50)]
    for n, (stage, limit) in enumerate(stages):
        if stage == "clean broker restart":
            assert b.stop() == 0, b.log_tail()
            b.start()
            admin = admin_client(b.bootstrap)
        elif stage == "broker kill -9":
            b.kill9()
            b.start()
            admin = admin_client(b.bootstrap)
        if n:
            got = wait_until(lambda: committed_offsets(admin, group), timeout=TIMEOUT, what="committed offsets")
            assert got == committed, f"{stage}: committed offsets {got} != {committed} before"
        m = Member(f"c{n}", b.bootstrap, group, topic, "range", rec, limit=limit).start()
        assert m.closed.wait(40), f"{stage}: consumer did not process {limit} records: {describe_members([m])}"
        m.stop()
        assert not m.errors and not m.commit_failures, f"{stage}: {describe_members([m])}"
        mine = defaultdict(list)
        for p, o in rec.by_member(m.name):
            mine[p].append(o)
        assert sum(len(v) for v in mine.values()) == limit
        for p, offs in mine.items():
            start = committed.get((topic, p), 0)
            assert offs == list(range(start, start + len(offs))), \
                f"{stage}: partition {p} read {offs[:5]}... but the committed offset was {start}"
            committed[(topic, p)] = start + len(offs)
        # What it processed is what it committed.
        got = committed_offsets(admin, group)
        assert got == committed, f"{stage}: committed {got} != processed {committed}"

    assert_exactly_once(produced, rec, [])
    assert committed == {(topic, p): 40 for p in range(PARTITIONS)}


@pytest.mark.parametrize("how", ["clean", "kill9"])
def test_active_group_keeps_consuming_across_a_broker_restart(broker_factory, how):
    """Two members keep running while the broker restarts under them (SIGTERM, or SIGKILL).
    Asserted: consumption resumes by itself and no record is lost; a record may be processed
    twice only if no commit covering it had been acknowledged before the broker went down
    (at-least-once for what was in flight); at the end the committed offsets are the end
    offsets and the group is Stable with both members."""
    b = broker_factory(*FAST_DELAY)
    admin = admin_client(b.bootstrap)
    topic, group = f"live-{how}", f"g-live-{how}"
    create_topic(admin, topic, partitions=PARTITIONS)
    rec = Recorder()
    members = [Member(f"l{i}", b.bootstrap, group, topic, "range", rec).start() for i in range(2)]
    feed = None
    try:
        wait_balanced(members)
        feed = BackgroundProducer(b.bootstrap, topic, "lv").start()
        time.sleep(1.5)
        t_down = time.monotonic()
        if how == "clean":
            assert b.stop() == 0, b.log_tail()
        else:
            b.kill9()
        time.sleep(1)
        b.start()
        admin = admin_client(b.bootstrap)
        time.sleep(1.5)
        produced = feed.stop()
        wait_all_consumed(produced, rec, members, timeout=40)
        time.sleep(1)
        K = rec.committed_before(t_down)
        seen = defaultdict(list)
        for name, p, o, v in rec.snapshot():
            assert v == produced[(p, o)], (p, o, v)
            seen[(p, o)].append(name)
        assert set(seen) == set(produced)
        reread_committed = sorted(k for k, names in seen.items() if len(names) > 1 and k[1] < K.get(k[0], 0))
        dups = sum(1 for names in seen.values() if len(names) > 1)
        print(f"{how}: {len(produced)} records, {dups} processed twice; rebalances seen: "
              f"{[dict(m.counts()) for m in members]}")
        assert not reread_committed, \
            f"records re-read although committed before the restart: {reread_committed[:10]} (committed {K})"
        wait_committed_at_end(admin, group, topic, members, timeout=20)
        wait_balanced(members, timeout=20)
        d = describe_group(admin, group)
        assert d.state == ConsumerGroupState.STABLE and len(d.members) == 2
        assert all(not m.errors for m in members), describe_members(members)
    finally:
        stop_all(members, feed)


def test_broker_stop_during_a_rebalance_is_prompt_and_keeps_the_members(broker_factory):
    """SIGTERM while the group is rebalancing (a third member's JoinGroup is parked until the
    others rejoin). As with Kafka, whose coordinator drops parked joins when it shuts down:
    the broker exits 0 promptly (not after the members' 30 s session timeout), the members
    are not expelled while it shuts down (no partitions lost), after the restart the three
    members share the partitions, and nothing committed before the stop is re-read."""
    b = broker_factory(*FAST_DELAY)
    admin = admin_client(b.bootstrap)
    topic, group = "stop-rebalance", "g-stop-rebalance"
    create_topic(admin, topic, partitions=PARTITIONS)
    produced = produce(b.bootstrap, topic, "sr", 20)
    rec = Recorder()
    members = [Member(f"r{i}", b.bootstrap, group, topic, "range", rec, session_ms=30000).start() for i in range(2)]
    try:
        wait_balanced(members)
        wait_all_consumed(produced, rec, members)
        members.append(Member("r2", b.bootstrap, group, topic, "range", rec, session_ms=30000).start())
        wait_until(lambda: describe_group(admin, group).state == ConsumerGroupState.PREPARING_REBALANCING,
                   timeout=10, interval=0.02, what="the group to start rebalancing")
        t_down = time.monotonic()
        try:
            rc = b.stop(timeout=12)
        except subprocess.TimeoutExpired:
            rc = None  # stop() killed it
        took = time.monotonic() - t_down
        b.start()
        admin = admin_client(b.bootstrap)
        t0 = time.monotonic()
        try:
            wait_balanced(members, timeout=20)
            rebalanced = time.monotonic() - t0
        except AssertionError:
            rebalanced = None
        print(f"SIGTERM during a rebalance: exit {rc} after {took:.1f}s; balanced after restart in "
              f"{rebalanced}s; {[(m.name, dict(m.counts())) for m in members]}")
        assert rc == 0 and took < 5, f"SIGTERM during a rebalance: exit code {rc} after {took:.1f}s"
        assert rebalanced is not None, f"not rebalanced 20 s after the restart: {describe_members(members)}"
        lost = {m.name: m.counts()["lost"] for m in members if m.counts()["lost"]}
        assert not lost, f"members lost their partitions over the broker restart: {lost}"
        produced.update(produce(b.bootstrap, topic, "sr2", 10))
        wait_all_consumed(produced, rec, members)
        K = rec.committed_before(t_down)
        reread = sorted({(p, o) for _, p, o, _ in rec.snapshot() if o < K.get(p, 0)} &
                        {k for k, n in Counter((p, o) for _, p, o, _ in rec.snapshot()).items() if n > 1})
        assert not reread, f"committed records re-read: {reread[:10]}"
    finally:
        stop_all(members)


def test_static_member_restart_keeps_its_partitions_without_a_rebalance(broker_factory):
    b = broker_factory(*FAST_DELAY)
    admin = admin_client(b.bootstrap)
    topic, group = "static", "g-static"
    create_topic(admin, topic, partitions=PARTITIONS)
    rec = Recorder()

    def static(i, gen):
        return Member(f"st{i}-{gen}", b.bootstrap, group, topic, "range", rec, session_ms=10000,
                      instance_id=f"instance-{i}").start()

    members = [static(i, 0) for i in range(3)]
    everyone = list(members)
    feed = None
    try:
        first = wait_balanced(members)
        described = describe_group(admin, group)
        assert sorted(md.group_instance_id for md in described.members) == ["instance-0", "instance-1", "instance-2"]
        feed = BackgroundProducer(b.bootstrap, topic, "st").start()
        time.sleep(1)
        # Restart each static member in turn (one of them is the group leader).
        for i in range(3):
            others = [m for j, m in enumerate(members) if j != i]
            counts_before = {m.name: m.counts() for m in others}
            old = members[i]
            old_parts = old.assignment()
            old_id = next(md.member_id for md in describe_group(admin, group).members
                          if md.group_instance_id == f"instance-{i}")
            old.stop()
            # A static member closes without LeaveGroup: it is still a member.
            d = describe_group(admin, group)
            assert len(d.members) == 3 and d.state == ConsumerGroupState.STABLE, \
                f"after closing static member {i}: {len(d.members)} members, {d.state}"
            new = static(i, 1)
            everyone.append(new)
            members[i] = new
            wait_until(lambda: new.assignment(), timeout=15, what=f"restarted static member {i} assigned")
            assert new.assignment() == old_parts
            time.sleep(2 * HEARTBEAT_MS / 1000 + 1)  # a rebalance would reach the others by now
            for m in others:
                assert m.counts() == counts_before[m.name], \
                    f"restarting instance-{i} made {m.name} rebalance: {m.history}"
            d = describe_group(admin, group)
            ids = {md.group_instance_id: md.member_id for md in d.members}
            assert len(ids) == 3 and ids[f"instance-{i}"] != old_id
            assert {(tp.partition) for md in d.members if md.group_instance_id == f"instance-{i}"
                    for tp in md.assignment.topic_partitions} == old_parts
        assert {m.name[:3]: m.assignment() for m in members} == {f"st{i}": first[f"st{i}-0"] for i in range(3)}

        # A static member that does not come back is removed after its session timeout
        # (10 s), not when it closes; the others then take over its partitions.
        gone = members.pop()
        gone.stop()
        t0 = time.monotonic()
        wait_balanced(members, timeout=25)
        took = time.monotonic() - t0
        print(f"static member that stayed away removed after {took:.2f}s")
        assert 7 <= took < 10 + 4, f"a static member that closed was removed after {took:.1f}s"
        d = describe_group(admin, group)
        assert sorted(md.group_instance_id for md in d.members) == ["instance-0", "instance-1"]
        time.sleep(1)

        produced = feed.stop()
        wait_all_consumed(produced, rec, everyone)
        time.sleep(1)
        assert_exactly_once(produced, rec, everyone)
        wait_committed_at_end(admin, group, topic, everyone)
    finally:
        stop_all(everyone, feed)


def test_admin_list_describe_delete_groups_offsets_and_lag(broker_factory):
    from kafka import KafkaAdminClient
    from kafka import TopicPartition as KpTopicPartition

    b = broker_factory("--group-initial-rebalance-delay-ms", "300", *LOG_ARGS)
    admin = admin_client(b.bootstrap)
    topic, other, group, simple = "adm", "adm-other", "g-adm", "g-simple"
    create_topic(admin, topic, partitions=PARTITIONS)
    create_topic(admin, other, partitions=2)

    # Offsets committed without membership (generation -1, group still empty): one group
    # with nothing else, and the group the members will join (for a topic they don't read).
    for g in (simple, group):
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": g, "enable.auto.commit": False})
        c.commit(offsets=[TopicPartition(other, 0, 0), TopicPartition(other, 1, 0)], asynchronous=False)
        c.close()

    rec = Recorder()
    members = [Member(f"adm{i}", b.bootstrap, group, topic, "range", rec).start() for i in range(2)]
    try:
        wait_balanced(members)
        produced = produce(b.bootstrap, topic, "l1", {p: 5 + 3 * p for p in range(PARTITIONS)})
        wait_all_consumed(produced, rec, members)
        wait_committed_at_end(admin, group, topic, members)
        for m in members:
            m.hold()
        time.sleep(0.5)
        produced.update(produce(b.bootstrap, topic, "l2", {p: 2 * p + 1 for p in range(PARTITIONS)}))

        # ListGroups, with and without a state filter.
        listed = admin.list_consumer_groups(request_timeout=TIMEOUT).result(timeout=TIMEOUT)
        assert not listed.errors, listed.errors
        by_id = {g.group_id: g for g in listed.valid}
        assert by_id[group].state == ConsumerGroupState.STABLE and not by_id[group].is_simple_consumer_group
        assert by_id[simple].state == ConsumerGroupState.EMPTY and by_id[simple].is_simple_consumer_group
        stable = admin.list_consumer_groups(states={ConsumerGroupState.STABLE}, request_timeout=TIMEOUT).result(TIMEOUT)
        assert [g.group_id for g in stable.valid] == [group]
        empty = admin.list_consumer_groups(states={ConsumerGroupState.EMPTY}, request_timeout=TIMEOUT).result(TIMEOUT)
        assert [g.group_id for g in empty.valid] == [simple]

        # DescribeGroups.
        d = assert_described_matches(admin, group, topic, members, "range")
        assert d.coordinator.port == b.port and d.coordinator.host == "127.0.0.1"
        ds = describe_group(admin, simple)
        assert ds.state == ConsumerGroupState.EMPTY and ds.members == [] and ds.is_simple_consumer_group

        # Lag from committed and end offsets = produced - consumed, per partition.
        def lag():
            committed = committed_offsets(admin, group)
            end = end_offsets(admin, topic)
            return {p: end[p] - committed[(topic, p)] for p in range(PARTITIONS)}

        def produced_minus_consumed():
            consumed = Counter(p for _, p, _, _ in rec.snapshot())
            made = Counter(p for p, _ in produced)
            return {p: made[p] - consumed[p] for p in range(PARTITIONS)}

        assert lag() == produced_minus_consumed() == {p: 2 * p + 1 for p in range(PARTITIONS)}

        # Deleting an active group is refused.
        with pytest.raises(KafkaException) as e:
            admin.delete_consumer_groups([group], request_timeout=TIMEOUT)[group].result(timeout=TIMEOUT)
        assert e.value.args[0].code() == KafkaError.NON_EMPTY_GROUP, e.value

        # OffsetDelete (kafka-python; confluent-kafka's admin has none): refused for the
        # topic the members are subscribed to, done for the other one.
        ka = KafkaAdminClient(bootstrap_servers=b.bootstrap)
        try:
            res = ka.delete_group_offsets(group, [KpTopicPartition(topic, 0), KpTopicPartition(other, 0)])
            assert {(tp.topic, tp.partition): err.__name__ for tp, err in res.items()} == {
                (topic, 0): "GroupSubscribedToTopicError", (other, 0): "NoError"}, res
        finally:
            ka.close()
        offs = committed_offsets(admin, group)
        assert (other, 0) not in offs and offs[(other, 1)] == 0 and offs[(topic, 0)] == 5

        # The members catch up: lag 0.
        for m in members:
            m.hold(False)
        wait_all_consumed(produced, rec, members)
        wait_committed_at_end(admin, group, topic, members)
        assert lag() == produced_minus_consumed() == {p: 0 for p in range(PARTITIONS)}
        assert_exactly_once(produced, rec, members)
    finally:
        stop_all(members)

    # Both left: the group is Empty, then deleted with its offsets.
    wait_until(lambda: describe_group(admin, group).state == ConsumerGroupState.EMPTY, timeout=10,
               what="group empty after the members left")
    empty = admin.list_consumer_groups(states={ConsumerGroupState.EMPTY}, request_timeout=TIMEOUT).result(TIMEOUT)
    assert sorted(g.group_id for g in empty.valid) == [group, simple]
    admin.delete_consumer_groups([group], request_timeout=TIMEOUT)[group].result(timeout=TIMEOUT)
    listed = admin.list_consumer_groups(request_timeout=TIMEOUT).result(timeout=TIMEOUT)
    assert [g.group_id for g in listed.valid] == [simple]
    assert committed_offsets(admin, group) == {}
    assert committed_offsets(admin, simple) == {(other, 0): 0, (other, 1): 0}
    with pytest.raises(KafkaException) as e:
        admin.delete_consumer_groups([group], request_timeout=TIMEOUT)[group].result(timeout=TIMEOUT)
    assert e.value.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND, e.value

    # A new member of the deleted group starts over at auto.offset.reset=earliest.
    rec2 = Recorder()
    m = Member("adm-again", b.bootstrap, group, topic, "range", rec2, limit=len(produced)).start()
    assert m.closed.wait(30), describe_members([m])
    m.stop()
    firsts = {}
    for _, p, o, _ in rec2.snapshot():
        firsts.setdefault(p, o)
    assert firsts == {p: 0 for p in range(PARTITIONS)}


def test_lone_member_is_assigned_after_the_default_initial_delay(broker_factory):
    b = broker_factory(*LOG_ARGS)  # group.initial.rebalance.delay.ms 3000, like Kafka
    admin = admin_client(b.bootstrap)
    create_topic(admin, "lone", partitions=2)
    rec = Recorder()
    m = Member("lone", b.bootstrap, "g-lone", "lone", "range", rec).start()
    try:
        wait_until(lambda: m.assignment(), timeout=15, what="an assignment")
        took = m.history[0][0] - m.t_subscribed
        assert m.assignment() == {0, 1}
        # The initial delay (3 s) applies, and nothing else: not a session timeout (6 s).
        print(f"lone member assigned {took:.2f}s after subscribe()")
        assert 2.5 <= took < 6.0, f"assigned {took:.2f}s after subscribe()"
        time.sleep(2)
        assert m.counts() == Counter({"assign": 1}), m.history
    finally:
        m.stop()
