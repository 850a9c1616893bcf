"""sarama 1.22 (Debian's golang-github-shopify-sarama-dev, unchanged) consumer groups against
the real broker: every member is its own `saramacompat group-member` process
(compat/go/src/saramacompat/group.go: sarama.NewConsumerGroup with config.Version
V2_1_0_0, Consume in a loop, MarkMessage after each record, offsets committed every 200 ms
and when a session ends) that reports its assignments and every record it handled; a
kafka-python producer keeps writing numbered records to a six-partition topic.

- Three members get two partitions each; every record is consumed exactly once across
  the group while one member closes (LeaveGroup) and a new one joins.
- A member killed with SIGKILL keeps its partitions until its session times out (6 s);
  then the others take them over from its last committed offsets: only what it had
  consumed after that commit is read again.
- A group keeps consuming across a clean broker restart; after a kill -9 of the broker,
  fresh members resume from the committed offsets.
- ClusterAdmin.ListConsumerGroups / DescribeConsumerGroups / ListConsumerGroupOffsets and
  DeleteGroups.

sarama 1.22 does not negotiate versions; for a group it sends (seen on the wire)
FindCoordinator v0, JoinGroup v1, SyncGroup v0, Heartbeat v0, LeaveGroup v0, OffsetFetch v1,
OffsetCommit v2, ListGroups v0, DescribeGroups v0 and DeleteGroups v0. OffsetCommit is v1
unless Consumer.Offsets.Retention is set: v1 is one of the versions Kafka 4.0 removed
(KIP-896), which the broker, like Kafka 4.0, answers by closing the connection, so
group.go sets a retention."""

import time

import pytest

from group_support import (PARTITIONS, SteadyProducer, Written, check_exactly_once, committed_offsets,
                           create_topic, produce, wait_assignment, wait_consumed, wait_progress)
from stock_clients import run_sarama_group_admin, sarama_binary, sarama_group_member, step_ok

pytestmark = pytest.mark.timeout(150)

REBALANCE_DELAY = ("--group-initial-rebalance-delay-ms", "300")
SESSION_MS = 6000  # the broker's group.min.session.timeout.ms
HEARTBEAT_S = 0.5  # group.go's Consumer.Group.Heartbeat.Interval
NON_EMPTY_GROUP, GROUP_ID_NOT_FOUND = 68, 69


@pytest.fixture(scope="module")
def sarama():
    return sarama_binary()


@pytest.fixture
def members(sarama, tmp_path):
    """Starts sarama members; any still running at the end are killed (by pid)."""
    started = []

    def start(bootstrap, topic, group, name):
        m = sarama_group_member(sarama, tmp_path, bootstrap, topic, group, name, SESSION_MS)
        started.append(m)
        return m

    yield start
    for m in started:
        if m.alive():
            m.kill9()


def admin(sarama, broker, topic, group, *steps):
    out = run_sarama_group_admin(sarama, broker.bootstrap, topic, group, steps, broker=broker)
    return {s: step_ok(out, s, broker) for s in steps}


def offsets_of(fetched):
    assert fetched["err"] == 0, fetched
    assert all(b["err"] == 0 for b in fetched["partitions"].values()), fetched
    return {int(p): b["offset"] for p, b in fetched["partitions"].items() if b["offset"] >= 0}


def stop_all(ms, transient=()):
    """Clean stops; no member reported an error other than the `transient` ones."""
    for m in ms:
        if m.alive():
            m.stop()
    for m in ms:
        unexpected = [e for e in m.errors() if not any(t in e["error"] for t in transient)]
        assert not unexpected, m.describe()


def generations(m):
    return [e["generation"] for _, e in m.of("assigned")]


def test_three_members_exactly_once_while_members_leave_and_join(sarama, broker_factory, members):
    broker = broker_factory(*REBALANCE_DELAY)
    bs, topic, group = broker.bootstrap, "sarama-group", "sarama-exactly-once"
    create_topic(bs, topic)
    written = Written()
    produce(bs, topic, written, "pre", 10)
    producer = SteadyProducer(bs, topic, written, "live", interval=0.05).start()
    try:
        s0, s1, s2 = (members(bs, topic, group, f"s{i}") for i in range(3))
        wait_assignment([s0, s1, s2], [2, 2, 2], broker=broker)
        wait_progress([s0, s1, s2], written, broker=broker)
        gen = max(generations(s0))
        assert all(max(generations(m)) == gen for m in (s1, s2)), [generations(m) for m in (s0, s1, s2)]

        seen = admin(sarama, broker, topic, group, "list", "describe", "delete")
        assert seen["list"].get(group) == "consumer", seen["list"]
        (d,) = seen["describe"]
        assert (d["groupId"], d["err"], d["state"], d["protocolType"], d["protocol"]) == \
            (group, 0, "Stable", "consumer", "range"), d
        assert sorted(m["clientId"] for m in d["members"].values()) == ["sarama-s0", "sarama-s1", "sarama-s2"]
        for m in (s0, s1, s2):
            (member_id,) = [i for i, x in d["members"].items() if x["clientId"] == f"sarama-{m.name}"]
            desc = d["members"][member_id]
            assert member_id == m.of("assigned")[-1][1]["member"]
            assert desc["topics"] == [topic] and desc["clientHost"].endswith("127.0.0.1"), desc
            assert sorted(desc["assignment"][topic]) == m.assignment(), (desc, m.describe())
        assert seen["delete"] == {group: NON_EMPTY_GROUP}

        # s0 closes: s1 and s2 take over its partitions in the next generation.
        left_with = s0.assignment()
        s0.stop()
        end_at_leave = written.end_offsets()
        wait_assignment([s1, s2], [3, 3], broker=broker)
        wait_progress([s1, s2], written, broker=broker)
        assert {p for m in (s1, s2) for _, p, o, _ in m.records() if o >= end_at_leave[p]} >= set(left_with)
        assert max(generations(s1)) == max(generations(s2)) > gen

        s3 = members(bs, topic, group, "s3")
        wait_assignment([s1, s2, s3], [2, 2, 2], broker=broker)
        wait_progress([s1, s2, s3], written, broker=broker)
        assert producer.stop() > 20

        everyone = [s0, s1, s2, s3]
        wait_consumed(everyone, written, broker=broker)
        time.sleep(1)  # a few commit intervals
        check_exactly_once(written, [r for m in everyone for r in m.records()])
    finally:
        producer.stopping.set()
    stop_all([s1, s2, s3])
    end = written.end_offsets()
    after = admin(sarama, broker, topic, group, "offsets", "describe", "delete", "list")
    assert offsets_of(after["offsets"]) == end
    (d,) = after["describe"]
    assert (d["state"], d["members"]) == ("Empty", {}), d
    assert after["delete"] == {group: 0}
    assert group not in after["list"]
    assert admin(sarama, broker, topic, group, "delete")["delete"] == {group: GROUP_ID_NOT_FOUND}
    assert "panicked" not in broker.log_tail(400_000)


def test_killed_member_partitions_move_after_its_session_timeout(sarama, broker_factory, members):
    broker = broker_factory(*REBALANCE_DELAY)
    bs, topic, group = broker.bootstrap, "sarama-crash", "sarama-crash"
    create_topic(bs, topic)
    written = Written()
    produce(bs, topic, written, "pre", 10)
    producer = SteadyProducer(bs, topic, written, "live", interval=0.05).start()
    try:
        victim, a, b = (members(bs, topic, group, name) for name in ("victim", "a", "b"))
        wait_assignment([victim, a, b], [2, 2, 2], broker=broker)
        wait_progress([victim, a, b], written, broker=broker)
        time.sleep(0.5)
        lost = victim.assignment()
        victim.kill9()
        killed_at = time.monotonic()
        time.sleep(0.5)  # anything it had sent is handled by now
        committed_at_kill = committed_offsets(bs, group, topic)
        consumed_by_victim = {p: 1 + max(o for _, q, o, _ in victim.records() if q == p) for p in lost}
        assert all(committed_at_kill.get(p, -1) >= 0 for p in lost), committed_at_kill

        # The survivors keep their own partitions meanwhile, then share the victim's.
        wait_progress([a, b], written, broker=broker)
        wait_assignment([a, b], [3, 3], timeout=SESSION_MS / 1000 + 20, broker=broker)
        moved_at = min(t for m in (a, b) for t, e in m.of("assigned")
                       if t > killed_at and set(e["partitions"]) & set(lost))
        waited = moved_at - killed_at
        # Not before the session can have expired (the last heartbeat was at most one
        # interval before the kill), and not long after.
        assert SESSION_MS / 1000 - HEARTBEAT_S - 0.5 <= waited <= SESSION_MS / 1000 + 8, \
            f"{lost} moved {waited:.2f}s after the kill (session timeout {SESSION_MS} ms)"
        # The dead member is out of the group.
        (d,) = admin(sarama, broker, topic, group, "describe")["describe"]
        assert d["state"] == "Stable" and sorted(m["clientId"] for m in d["members"].values()) == \
            ["sarama-a", "sarama-b"], d
        wait_progress([a, b], written, broker=broker)
        assert producer.stop() > 20
        wait_consumed([victim, a, b], written, broker=broker)
        time.sleep(1)
    finally:
        producer.stopping.set()
    stop_all([a, b])

    # The new owners started at the victim's last commit; only the records it consumed
    # after that commit are read twice.
    for p in lost:
        later = [e["o"] for m in (a, b) for t, e in m.of("record") if t > killed_at and e["p"] == p]
        assert later and min(later) == committed_at_kill[p], \
            f"partition {p}: taken over at offset {min(later) if later else None}, committed {committed_at_kill[p]}"
    redelivered = [(p, o) for p in lost for o in range(committed_at_kill[p], consumed_by_victim[p])]
    check_exactly_once(written, [r for m in (victim, a, b) for r in m.records()], allowed_duplicates=redelivered)
    assert committed_offsets(bs, group, topic) == written.end_offsets()
    assert "panicked" not in broker.log_tail(400_000)


def test_group_resumes_across_broker_restarts(broker_factory, members):
    broker = broker_factory(*REBALANCE_DELAY)
    bs, topic, group = broker.bootstrap, "sarama-restart", "sarama-restart"
    create_topic(bs, topic)
    written = Written()
    produce(bs, topic, written, "pre", 10)

    # A clean restart under a consuming group: the members reconnect and carry on in the
    # same generation, nothing lost or read twice.
    first = [members(bs, topic, group, f"r{i}") for i in range(3)]
    wait_assignment(first, [2, 2, 2], broker=broker)
    wait_consumed(first, written, broker=broker)
    assert broker.stop() == 0
    during = SteadyProducer(bs, topic, written, "after-restart", interval=0.05)
    broker.start()
    during.start()
    try:
        wait_progress(first, written, timeout=45, broker=broker)
    finally:
        during.stop()
    wait_consumed(first, written, broker=broker)
    time.sleep(1)
    # Fetches cut by the restart are reported (EOF) and retried.
    stop_all(first, transient=("EOF", "connection refused", "broken pipe", "connection reset", "not connected"))
    check_exactly_once(written, [r for m in first for r in m.records()])
    committed = committed_offsets(bs, group, topic)
    assert committed == written.end_offsets()

    # More records while the group is empty, a kill -9 of the broker, and fresh members:
    # they start at the committed offsets.
    already = written.snapshot()
    produce(bs, topic, written, "later", 15)
    broker.kill9()
    broker.start()
    assert committed_offsets(bs, group, topic) == committed
    fresh = [members(bs, topic, group, f"f{i}") for i in range(2)]
    wait_assignment(fresh, [3, 3], broker=broker)
    wait_consumed(first + fresh, written, broker=broker)
    time.sleep(1)
    stop_all(fresh)
    new = {k: v for k, v in written.snapshot().items() if k not in already}
    check_exactly_once(new, [r for m in fresh for r in m.records()])
    firsts = {}
    for m in fresh:
        for _, p, o, _ in m.records():
            firsts.setdefault(p, o)
    assert firsts == {p: committed[p] for p in range(PARTITIONS)}
    assert committed_offsets(bs, group, topic) == written.end_offsets()
    assert "panicked" not in broker.log_tail(400_000)
