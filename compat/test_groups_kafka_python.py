"""kafka-python (3.0.x) consumer groups against the real broker: KafkaConsumer with a
group_id and subscribe(), three members (threads, one consumer each) over a six-partition
topic that a producer keeps writing to.

- Each member gets two partitions; every record is consumed exactly once across the
  group while one member closes (LeaveGroup: the other two take over its partitions) and
  a new member joins (back to two each). Members commit synchronously after each poll
  and, from an AsyncConsumerRebalanceListener, when partitions are revoked (kafka-python
  3 runs listeners on its IO thread, where only the async commit may be awaited).
- Committed offsets survive a clean broker restart and a kill -9: new members of the group
  (restarted consumers) resume exactly where the old ones committed. A consuming group
  rides over a kill -9 of the broker in the same generation.
- KafkaAdminClient: list_groups, describe_groups (members, client ids, assignments),
  list_group_offsets, delete_groups (refused while the group has members).
- A member process killed with SIGKILL: after its session timeout the others take its
  partitions from its last commit; only what it consumed after that commit is read twice.
- Static members (group_instance_id) restart without a rebalance and resume from their
  commits; a session timeout below the broker's minimum (6 s) is refused.

kafka-python 3.0 negotiates the newest versions both sides know (seen on the wire):
FindCoordinator v6, JoinGroup v7, SyncGroup v5, Heartbeat v4, LeaveGroup v5, OffsetCommit
v8, OffsetFetch v8, ListGroups v5, DescribeGroups v5, DeleteGroups v2."""

import sys
import threading
import time
from pathlib import Path

import kafka.errors as Errors
import pytest
from kafka import AsyncConsumerRebalanceListener, KafkaConsumer

from conftest import wait_until
from group_support import (PARTITIONS, MemberProcess, SteadyProducer, Written, admin_client, check_exactly_once,
                           committed_offsets, create_topic, produce, wait_assignment, wait_consumed,
                           wait_progress)
from stock_clients import broker_log

pytestmark = pytest.mark.timeout(150)

REBALANCE_DELAY = ("--group-initial-rebalance-delay-ms", "300")
SESSION_MS = 6000  # the broker's group.min.session.timeout.ms


class CommitOnRevoke(AsyncConsumerRebalanceListener):
    """Commits what the member has consumed before its partitions go to another member."""

    def __init__(self, member):
        self.member = member

    async def on_partitions_revoked(self, revoked):
        self.member.event("revoked", sorted(tp.partition for tp in revoked))
        if revoked:
            try:
                await self.member.consumer.commit_async()
                self.member.revoke_commits += 1
            except Exception as e:
                self.member.failures.append(f"commit on revoke: {e!r}")

    async def on_partitions_assigned(self, assigned):
        self.member.generations.append(self.member.consumer.group_metadata().generation_id)
        self.member.event("assigned", sorted(tp.partition for tp in assigned))


class Member:
    """One KafkaConsumer in the group, polling on its own thread until stop() (a clean
    close: revoke listener, then LeaveGroup). Same interface as group_support.MemberProcess
    for the waiting helpers."""

    def __init__(self, name, bootstrap, topic, group, stop_when=None, **config):
        self.name, self.bootstrap, self.topic, self.group = name, bootstrap, topic, group
        self.config = config
        self.stop_when = stop_when  # optional callable: stop polling once it answers true
        self.events = []  # (monotonic time, kind, payload)
        self.lock = threading.Lock()
        self.failures = []
        self.generations = []  # at each assignment
        self.revoke_commits = 0
        self.commits = 0
        self.consumer = None
        self.closed = False
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"member-{name}", daemon=True)

    def start(self):
        self.thread.start()
        return self

    def event(self, kind, payload):
        with self.lock:
            self.events.append((time.monotonic(), kind, payload))

    def _run(self):
        try:
            self.consumer = KafkaConsumer(
                bootstrap_servers=self.bootstrap, group_id=self.group, client_id=f"kp-{self.name}",
                enable_auto_commit=False, auto_offset_reset="earliest", heartbeat_interval_ms=500,
                max_poll_interval_ms=30000, fetch_max_wait_ms=100, request_timeout_ms=20000, retry_backoff_ms=100,
                **{"max_poll_records": 20, "session_timeout_ms": SESSION_MS, **self.config})
            self.consumer.subscribe([self.topic], listener=CommitOnRevoke(self))
            while not self.stopping.is_set():
                batch = self.consumer.poll(timeout_ms=200)
                for msgs in batch.values():
                    for m in msgs:
                        self.event("record", (m.partition, m.offset, m.value.decode()))
                if batch:
                    try:
                        self.consumer.commit()
                        self.commits += 1
                    except Exception as e:
                        self.failures.append(f"commit after poll: {e!r}")
                if self.stop_when is not None and self.stop_when():
                    break
        except Exception as e:
            self.failures.append(f"consumer loop: {e!r}")
        finally:
            if self.consumer is not None:
                try:
                    self.consumer.close()
                except Exception as e:
                    self.failures.append(f"close: {e!r}")
            self.closed = True
            self.event("closed", None)

    def stop(self, timeout=30):
        self.stopping.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"member {self.name} did not close within {timeout}s"

    def records(self):
        with self.lock:
            return [(self.name, *payload) for _, kind, payload in self.events if kind == "record"]

    def assignment(self):
        current = []
        with self.lock:
            for _, kind, payload in self.events:
                if kind == "assigned":
                    current = payload
                elif kind in ("revoked", "closed"):
                    current = []
        return current

    def describe(self):
        return (f"member {self.name}: assignment {self.assignment()}, {len(self.records())} records, "
                f"{self.commits} commits, failures {self.failures[-3:]}")


def owners(members):
    return {m.name: m.assignment() for m in members}


def check_member_order(members):
    """Within one member, each partition's records come in increasing offset order."""
    for m in members:
        last = {}
        for _, p, o, _ in m.records():
            assert o > last.get(p, -1), f"member {m.name} went back on partition {p}: {last[p]} then {o}"
            last[p] = o


def test_three_members_exactly_once_while_members_leave_and_join(broker_factory):
    broker = broker_factory(*REBALANCE_DELAY)
    bs, topic, group = broker.bootstrap, "kp-group", "kp-exactly-once"
    create_topic(bs, topic)
    written = Written()
    produce(bs, topic, written, "pre", 10)
    producer = SteadyProducer(bs, topic, written, "live", interval=0.05).start()
    members = []
    try:
        m0, m1, m2 = (Member(f"m{i}", bs, topic, group).start() for i in range(3))
        members = [m0, m1, m2]
        wait_assignment(members, [2, 2, 2], broker=broker)
        # Every member reads both of its partitions, as they are written.
        wait_progress(members, written, broker=broker)

        # A member leaves cleanly: the two others share its partitions.
        left_with = m0.assignment()
        m0.stop()
        assert m0.revoke_commits >= 1, "closing did not call on_partitions_revoked"
        end_at_leave = written.end_offsets()
        wait_assignment([m1, m2], [3, 3], broker=broker)
        # ... and carry on from where it stopped, with what is written since.
        wait_progress([m1, m2], written, broker=broker)
        assert {p for m in (m1, m2) for _, p, o, _ in m.records() if o >= end_at_leave[p]} >= set(left_with)

        # A new member joins: two partitions each again.
        m3 = Member("m3", bs, topic, group).start()
        members.append(m3)
        wait_assignment([m1, m2, m3], [2, 2, 2], broker=broker)
        wait_progress([m1, m2, m3], written, broker=broker)
        rounds = producer.stop()
        assert rounds > 20, f"the producer wrote only {rounds} rounds"

        wait_consumed(members, written, broker=broker)
        time.sleep(0.5)  # anything consumed twice would show up by now
        check_exactly_once(written, [r for m in members for r in m.records()])
        check_member_order(members)
        for m in members:
            assert not m.failures, m.describe()
            assert m.revoke_commits >= 1 or m is m3, f"{m.name} was never asked to commit on revoke"

        # The committed offsets are the ends of the partitions.
        end = written.end_offsets()
        wait_until(lambda: committed_offsets(bs, group, topic) == end, timeout=10,
                   what=f"committed offsets {end}")

        # Described by the broker as the members see it.
        admin = admin_client(bs)
        try:
            d = admin.describe_groups([group])[group]
            assert (d["error"], d["group_state"], d["protocol_type"]) == (None, "Stable", "consumer"), d
            described = {mm["client_id"]: sorted(p for a in mm["member_assignment"]["assigned_partitions"]
                                                 for p in a["partitions"]) for mm in d["members"]}
            assert described == {f"kp-{m.name}": m.assignment() for m in (m1, m2, m3)}, (described, owners(members))
        finally:
            admin.close()
    finally:
        producer.stopping.set()
        for m in members:
            m.stop()
    assert not [m.failures for m in members if m.failures]
    admin = admin_client(bs)
    try:
        d = admin.describe_groups([group])[group]
        assert (d["group_state"], d["members"]) == ("Empty", []), d
    finally:
        admin.close()
    assert "panicked" not in broker.log_tail(400_000)


def test_broker_restart_and_consumer_restart_resume_from_committed_offsets(broker_factory):
    broker = broker_factory(*REBALANCE_DELAY)
    bs, topic, group = broker.bootstrap, "kp-resume", "kp-resume"
    create_topic(bs, topic)
    written = Written()
    produce(bs, topic, written, "a", 40)
    total = len(written.snapshot())

    # First run: three members read about half of the topic, then close (committing).
    first = []
    consumed_so_far = lambda: sum(len(m.records()) for m in first)  # noqa: E731
    first += [Member(f"a{i}", bs, topic, group, stop_when=lambda: consumed_so_far() >= total // 2,
                     max_poll_records=5).start() for i in range(3)]
    wait_until(lambda: all(m.closed for m in first), timeout=60, what="the first members to stop")
    for m in first:
        m.stop()
        assert not m.failures, m.describe()
    first_records = [r for m in first for r in m.records()]
    consumed_end = {p: 1 + max((o for _, q, o, _ in first_records if q == p), default=-1) for p in range(PARTITIONS)}
    committed = committed_offsets(bs, group, topic)
    assert {p: committed.get(p, 0) for p in range(PARTITIONS)} == consumed_end, \
        "what the closed members committed is not what they consumed"
    assert 0 < sum(consumed_end.values()) < total, f"the first run should stop part-way: {consumed_end}"

    # A clean broker restart keeps the group (now empty) and its offsets.
    assert broker.stop() == 0
    broker.start()
    assert committed_offsets(bs, group, topic) == committed
    admin = admin_client(bs)
    try:
        listed = {g["group_id"]: g for g in admin.list_groups()}
        assert listed.get(group, {}).get("protocol_type") == "consumer", listed
        d = admin.describe_groups([group])[group]
        assert (d["error"], d["group_state"], d["members"]) == (None, "Empty", []), d
    finally:
        admin.close()

    # Restarted consumers (two new members) pick up exactly where the group stopped.
    produce(bs, topic, written, "b", 10)
    second = [Member(f"b{i}", bs, topic, group).start() for i in range(2)]
    try:
        wait_assignment(second, [3, 3], broker=broker)
        wait_consumed(first + second, written, broker=broker)
        time.sleep(0.5)
    finally:
        for m in second:
            m.stop()
    for m in second:
        assert not m.failures, m.describe()
        firsts = {}
        for _, p, o, _ in m.records():
            firsts.setdefault(p, o)
        for p, o in firsts.items():
            assert o == consumed_end[p], f"{m.name} started partition {p} at {o}, committed was {consumed_end[p]}"
    check_exactly_once(written, first_records + [r for m in second for r in m.records()])
    end = written.end_offsets()
    assert committed_offsets(bs, group, topic) == end

    # kill -9: every acknowledged commit is still there, and one more consumer reads only
    # what was written after.
    broker.kill9()
    broker.start()
    assert committed_offsets(bs, group, topic) == end
    before = written.snapshot()
    produce(bs, topic, written, "c", 5)
    third = Member("c0", bs, topic, group).start()
    try:
        wait_assignment([third], [6], broker=broker)
        new = {k: v for k, v in written.snapshot().items() if k not in before}
        wait_until(lambda: {(p, o) for _, p, o, _ in third.records()} >= set(new), timeout=30,
                   what="the records written after the kill -9")
        time.sleep(0.5)
    finally:
        third.stop()
    assert not third.failures, third.describe()
    check_exactly_once(new, third.records())
    assert "panicked" not in broker.log_tail(400_000)


def test_live_group_rides_over_a_broker_kill9(broker_factory):
    """kill -9 of the broker under a consuming group: the broker restores the group's
    membership, so the members carry on in the same generation (no rebalance), and with
    synchronous commits nothing is lost or read twice."""
    broker = broker_factory(*REBALANCE_DELAY)
    bs, topic, group = broker.bootstrap, "kp-live-kill", "kp-live-kill"
    create_topic(bs, topic)
    written = Written()
    produce(bs, topic, written, "pre", 10)
    producer = SteadyProducer(bs, topic, written, "before", interval=0.05).start()
    members = [Member(f"k{i}", bs, topic, group).start() for i in range(3)]
    try:
        wait_assignment(members, [2, 2, 2], broker=broker)
        wait_progress(members, written, broker=broker)
        producer.stop()
        generation = {m.name: m.generations[-1] for m in members}
        broker.kill9()
        producer = SteadyProducer(bs, topic, written, "after", interval=0.05)
        broker.start()
        producer.start()
        wait_progress(members, written, timeout=45, broker=broker)
        producer.stop()
        wait_consumed(members, written, broker=broker)
        time.sleep(0.5)
        for m in members:
            assert m.generations[-1] == generation[m.name], f"{m.name} rejoined after the restart: {m.describe()}"
    finally:
        producer.stopping.set()
        for m in members:
            m.stop()
    for m in members:
        assert not m.failures, m.describe()
    check_exactly_once(written, [r for m in members for r in m.records()])
    assert committed_offsets(bs, group, topic) == written.end_offsets()


def test_admin_lists_describes_and_deletes_groups(broker_factory):
    broker = broker_factory(*REBALANCE_DELAY)
    bs, topic, group = broker.bootstrap, "kp-admin", "kp-admin"
    create_topic(bs, topic)
    written = Written()
    produce(bs, topic, written, "x", 5)
    members = [Member(name, bs, topic, group).start() for name in ("x", "y")]
    admin = admin_client(bs)
    try:
        wait_assignment(members, [3, 3], broker=broker)
        wait_consumed(members, written, broker=broker)

        listed = {g["group_id"]: g for g in admin.list_groups()}
        assert group in listed, listed
        assert (listed[group]["protocol_type"], listed[group]["group_state"]) == ("consumer", "Stable"), listed[group]
        assert [g["group_id"] for g in admin.list_groups(states_filter=["Empty"])] == []
        assert group in [g["group_id"] for g in admin.list_groups(states_filter=["Stable"])]

        d = admin.describe_groups([group, "kp-no-such-group"])
        g = d[group]
        assert (g["error"], g["group_state"], g["protocol_type"], g["protocol_data"]) == \
            (None, "Stable", "consumer", "range"), g
        assert sorted(m["client_id"] for m in g["members"]) == ["kp-x", "kp-y"]
        for m in g["members"]:
            own = next(x for x in members if f"kp-{x.name}" == m["client_id"])
            assert m["member_id"].startswith(m["client_id"]), m
            assert m["client_host"].endswith("127.0.0.1"), m
            assert m["member_metadata"]["topics"] == [topic], m
            assigned = sorted(p for a in m["member_assignment"]["assigned_partitions"] for p in a["partitions"])
            assert assigned == own.assignment(), (m, own.describe())
        # An unknown group: Dead, without members (DescribeGroups below v6 has no error for it).
        unknown = d["kp-no-such-group"]
        assert (unknown["group_state"], unknown["members"]) == ("Dead", []), unknown

        offsets = admin.list_group_offsets(group)[group]
        assert {tp.partition: om.offset for tp, om in offsets.items()} == written.end_offsets()

        # A group with members cannot be deleted.
        assert admin.delete_groups([group]) == {group: "NonEmptyGroupError"}
    finally:
        for m in members:
            m.stop()
    try:
        assert not [m.failures for m in members if m.failures]
        assert [g["group_id"] for g in admin.list_groups(states_filter=["Empty"])] == [group]
        assert admin.delete_groups([group, "kp-no-such-group"]) == {group: "OK", "kp-no-such-group": "GroupIdNotFoundError"}
        assert group not in [g["group_id"] for g in admin.list_groups()]
        assert admin.list_group_offsets(group)[group] == {}
        d = admin.describe_groups([group])[group]
        assert (d["group_state"], d["members"]) == ("Dead", []), d
        # The group can be used again from scratch: a new member starts from the beginning.
        again = Member("z", bs, topic, group).start()
        try:
            wait_consumed([again], written, broker=broker)
        finally:
            again.stop()
        check_exactly_once(written, again.records())
    finally:
        admin.close()
    assert "panicked" not in broker.log_tail(400_000), broker_log(broker)


def test_static_members_restart_without_a_rebalance(broker_factory):
    """Static membership (group_instance_id, KIP-345): a member that closes does not leave
    the group; restarted with the same instance id within its session timeout it gets its
    partitions back in the same generation, the other member is not disturbed, and it
    resumes from its committed offsets."""
    broker = broker_factory(*REBALANCE_DELAY)
    bs, topic, group = broker.bootstrap, "kp-static", "kp-static"
    create_topic(bs, topic)
    written = Written()
    produce(bs, topic, written, "a", 10)
    static = dict(session_timeout_ms=15000)
    a = Member("a", bs, topic, group, group_instance_id="inst-a", **static).start()
    b = Member("b", bs, topic, group, group_instance_id="inst-b", **static).start()
    restarted = None
    try:
        wait_assignment([a, b], [3, 3], broker=broker)
        wait_consumed([a, b], written, broker=broker)
        generation = a.generations[-1]
        assert b.generations[-1] == generation
        a_partitions, b_events = a.assignment(), len(b.generations)
        a.stop()
        assert not a.failures, a.describe()
        committed = committed_offsets(bs, group, topic)
        assert committed == written.end_offsets()

        # Still two members: a static member's close is not a LeaveGroup.
        admin = admin_client(bs)
        try:
            d = admin.describe_groups([group])[group]
        finally:
            admin.close()
        assert d["group_state"] == "Stable", d
        assert sorted(m["group_instance_id"] for m in d["members"]) == ["inst-a", "inst-b"], d

        produce(bs, topic, written, "b", 10)
        restarted = Member("a2", bs, topic, group, group_instance_id="inst-a", **static).start()
        wait_until(lambda: restarted.assignment(), timeout=20, what="the restarted static member's assignment")
        assert restarted.assignment() == a_partitions
        assert restarted.generations == [generation], "the restart caused a rebalance"
        wait_consumed([a, b, restarted], written, broker=broker)
        time.sleep(0.5)
        assert len(b.generations) == b_events, f"b was reassigned: {b.describe()}"
        firsts = {}
        for _, p, o, _ in restarted.records():
            firsts.setdefault(p, o)
        assert firsts == {p: committed[p] for p in a_partitions}
    finally:
        for m in (a, b, restarted):
            if m is not None:
                m.stop()
    check_exactly_once(written, [r for m in (a, b, restarted) for r in m.records()])
    for m in (b, restarted):
        assert not m.failures, m.describe()


def test_session_timeout_below_the_broker_minimum_is_refused(broker):
    create_topic(broker.bootstrap, "kp-short-session")
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id="kp-short-session",
                      session_timeout_ms=SESSION_MS - 1, heartbeat_interval_ms=1000, request_timeout_ms=10000)
    try:
        c.subscribe(["kp-short-session"])
        with pytest.raises(Errors.InvalidSessionTimeoutError):
            for _ in range(20):
                c.poll(timeout_ms=500)
    finally:
        c.close()


def test_killed_member_partitions_move_after_its_session_timeout(broker_factory, tmp_path):
    broker = broker_factory(*REBALANCE_DELAY)
    bs, topic, group = broker.bootstrap, "kp-crash", "kp-crash"
    create_topic(bs, topic)
    written = Written()
    produce(bs, topic, written, "pre", 10)
    script = Path(__file__).with_name("kp_member.py")
    started = []

    def member(name):
        m = MemberProcess(name, [sys.executable, str(script), bs, topic, group, name, str(SESSION_MS)],
                          cwd=script.parent, log_dir=tmp_path)
        started.append(m)
        return m

    producer = SteadyProducer(bs, topic, written, "live", interval=0.05).start()
    try:
        victim, a, b = member("victim"), member("a"), member("b")
        wait_assignment([victim, a, b], [2, 2, 2], broker=broker)
        wait_progress([victim, a, b], written, broker=broker)
        lost = victim.assignment()
        victim.kill9()
        killed_at = time.monotonic()
        time.sleep(0.5)  # anything the victim had sent is handled by now
        committed_at_kill = committed_offsets(bs, group, topic)
        consumed_by_victim = {p: 1 + max(o for _, q, o, _ in victim.records() if q == p) for p in lost}
        survivors = [a, b]
        wait_assignment(survivors, [3, 3], timeout=30, broker=broker)
        settled_at = max(t for m in survivors for t, _ in m.of("assigned")[-1:])
        waited = settled_at - killed_at
        assert SESSION_MS / 1000 - 1.5 <= waited <= SESSION_MS / 1000 + 10, \
            f"partitions moved {waited:.2f}s after the kill (session timeout {SESSION_MS} ms)"
        wait_progress(survivors, written, broker=broker)
        assert producer.stop() > 20
        wait_consumed([victim] + survivors, written, broker=broker)
        time.sleep(0.5)
    finally:
        producer.stopping.set()
        for m in started:
            if m.alive() and m is not started[0]:
                m.stop()
            elif m.alive():
                m.kill9()
    for p in lost:
        later = [e["o"] for m in survivors for t, e in m.of("record") if t > killed_at and e["p"] == p]
        assert later and min(later) == committed_at_kill[p], \
            f"partition {p}: taken over at offset {min(later) if later else None}, committed {committed_at_kill[p]}"
    redelivered = [(p, o) for p in lost for o in range(committed_at_kill[p], consumed_by_victim[p])]
    check_exactly_once(written, [r for m in [victim] + survivors for r in m.records()], allowed_duplicates=redelivered)
    assert committed_offsets(bs, group, topic) == written.end_offsets()
