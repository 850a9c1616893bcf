"""kafkajs (npm, unchanged) consumer groups against the real broker: every member is its
own `node group.js member` process (compat/js/group.js: kafkajs' Consumer with a groupId,
autoCommit, eachMessage) that reports its assignments and every record it handled; a
kafka-python producer keeps writing numbered records to a six-partition topic.

- Three members get two partitions each; every record is consumed exactly once across
  the group while one member disconnects (LeaveGroup: the other two take over its
  partitions) and a new one joins (two each again).
- A group keeps consuming across a clean broker restart, still exactly once.
- After a broker restart a fresh member of the group resumes from the committed offsets.
- A member killed with SIGKILL and restarted at once: the group settles once the dead
  member's session has timed out, and its partitions resume from its last commit.
- kafkajs' admin: listGroups, describeGroups (members, client ids, assignments),
  fetchOffsets, deleteGroups (NON_EMPTY_GROUP while members remain).

kafkajs (seen on the wire) sends FindCoordinator v2, JoinGroup v5 (MEMBER_ID_REQUIRED round trip), SyncGroup
v3, Heartbeat v3, LeaveGroup v3, OffsetCommit v5, OffsetFetch v4, ListGroups v2,
DescribeGroups v2 and DeleteGroups v1."""

import time

import pytest

from group_support import (SteadyProducer, Written, check_exactly_once, committed_offsets, create_topic,
                           produce, wait_assignment, wait_consumed, wait_progress)
from stock_clients import kafkajs_group_member, kafkajs_ready, run_kafkajs_group_admin, step_ok

pytestmark = pytest.mark.timeout(150)

REBALANCE_DELAY = ("--group-initial-rebalance-delay-ms", "300")
NON_EMPTY_GROUP = 68


@pytest.fixture
def members(tmp_path):
    """Starts kafkajs members; any still running at the end are stopped (by pid)."""
    kafkajs_ready()
    started = []

    def start(bootstrap, topic, group, name):
        m = kafkajs_group_member(tmp_path, bootstrap, topic, group, name)
        started.append(m)
        return m

    yield start
    for m in started:
        if m.alive():
            m.kill9()


def admin(broker, topic, group, *steps):
    out = run_kafkajs_group_admin(broker.bootstrap, topic, group, steps, broker=broker)
    return {s: (out[s] if s == "delete" else step_ok(out, s, broker)) for s in steps}


def offsets_of(fetched, topic):
    (t,) = fetched
    assert t["topic"] == topic, t
    return {p["partition"]: int(p["offset"]) for p in t["partitions"]}


def stop_all(ms):
    for m in ms:
        if m.alive():
            m.stop()
    for m in ms:
        assert not m.errors(), m.describe()


def test_three_members_exactly_once_while_members_leave_and_join(broker_factory, members):
    broker = broker_factory(*REBALANCE_DELAY)
    bs, topic, group = broker.bootstrap, "js-group", "js-exactly-once"
    create_topic(bs, topic)
    written = Written()
    produce(bs, topic, written, "pre", 10)
    producer = SteadyProducer(bs, topic, written, "live", interval=0.05).start()
    try:
        j0, j1, j2 = (members(bs, topic, group, f"j{i}") for i in range(3))
        wait_assignment([j0, j1, j2], [2, 2, 2], broker=broker)
        wait_progress([j0, j1, j2], written, broker=broker)

        # The admin's view of the stable group.
        seen = admin(broker, topic, group, "list", "describe", "delete")
        assert {"groupId": group, "protocolType": "consumer"} in seen["list"], seen["list"]
        (d,) = seen["describe"]
        assert (d["groupId"], d["errorCode"], d["state"], d["protocolType"], d["protocol"]) == \
            (group, 0, "Stable", "consumer", "RoundRobinAssigner"), d
        by_client = {m["clientId"]: m for m in d["members"]}
        assert sorted(by_client) == ["kafkajs-j0", "kafkajs-j1", "kafkajs-j2"]
        for m in (j0, j1, j2):
            desc = by_client[f"kafkajs-{m.name}"]
            assert desc["topics"] == [topic] and desc["clientHost"].endswith("127.0.0.1"), desc
            assert sorted(desc["assignment"][topic]) == m.assignment(), (desc, m.describe())
            assert desc["memberId"] == m.of("assigned")[-1][1]["member"]
        # Not while it has members.
        refused = seen["delete"]
        assert [(e["groupId"], e["errorCode"]) for e in refused.get("errors", [])] == [(group, NON_EMPTY_GROUP)], refused

        # j0 disconnects: j1 and j2 take over its partitions from where it left them.
        left_with = j0.assignment()
        j0.stop()
        end_at_leave = written.end_offsets()
        wait_assignment([j1, j2], [3, 3], broker=broker)
        wait_progress([j1, j2], written, broker=broker)
        assert {p for m in (j1, j2) for _, p, o, _ in m.records() if o >= end_at_leave[p]} >= set(left_with)

        # j3 joins.
        j3 = members(bs, topic, group, "j3")
        wait_assignment([j1, j2, j3], [2, 2, 2], broker=broker)
        wait_progress([j1, j2, j3], written, broker=broker)
        assert producer.stop() > 20

        everyone = [j0, j1, j2, j3]
        wait_consumed(everyone, written, broker=broker)
        time.sleep(0.5)
        check_exactly_once(written, [r for m in everyone for r in m.records()])
        end = written.end_offsets()
        # autoCommit commits after each batch.
        deadline = time.monotonic() + 15
        while offsets_of(admin(broker, topic, group, "offsets")["offsets"], topic) != end:
            assert time.monotonic() < deadline, f"committed offsets never reached {end}"
            time.sleep(0.5)
        assert committed_offsets(bs, group, topic) == end
    finally:
        producer.stopping.set()
    stop_all([j1, j2, j3])

    after = admin(broker, topic, group, "describe", "delete", "list")
    (d,) = after["describe"]
    assert (d["state"], d["members"]) == ("Empty", []), d
    assert after["delete"] == [{"groupId": group, "errorCode": 0}], after["delete"]
    assert group not in [g["groupId"] for g in after["list"]]
    assert committed_offsets(bs, group, topic) == {}
    assert "panicked" not in broker.log_tail(400_000)


def test_group_keeps_consuming_across_a_broker_restart(broker_factory, members):
    """A clean broker restart under a consuming group: the members reconnect, carry on
    with their partitions, and nothing is lost or read twice."""
    broker = broker_factory(*REBALANCE_DELAY)
    bs, topic, group = broker.bootstrap, "js-live-restart", "js-live-restart"
    create_topic(bs, topic)
    written = Written()
    produce(bs, topic, written, "pre", 10)
    ms = [members(bs, topic, group, f"r{i}") for i in range(3)]
    wait_assignment(ms, [2, 2, 2], broker=broker)
    wait_consumed(ms, written, broker=broker)

    assert broker.stop() == 0
    produce_during = SteadyProducer(bs, topic, written, "after", interval=0.05)
    broker.start()
    produce_during.start()
    try:
        wait_progress(ms, written, timeout=45, broker=broker)
        wait_assignment(ms, [2, 2, 2], broker=broker)
    finally:
        produce_during.stop()
    wait_consumed(ms, written, broker=broker)
    time.sleep(0.5)
    stop_all(ms)
    check_exactly_once(written, [r for m in ms for r in m.records()])
    assert committed_offsets(bs, group, topic) == written.end_offsets()


def test_fresh_member_resumes_from_committed_offsets_after_broker_restart(broker_factory, members):
    broker = broker_factory(*REBALANCE_DELAY)
    bs, topic, group = broker.bootstrap, "js-resume", "js-resume"
    create_topic(bs, topic)
    written = Written()
    produce(bs, topic, written, "a", 20)
    first = [members(bs, topic, group, f"a{i}") for i in range(2)]
    wait_consumed(first, written, broker=broker)
    stop_all(first)
    committed = written.end_offsets()
    assert offsets_of(admin(broker, topic, group, "offsets")["offsets"], topic) == committed

    # More records while no one consumes; then the broker restarts.
    already = written.snapshot()
    produce(bs, topic, written, "b", 15)
    assert broker.stop() == 0
    broker.start()
    seen = admin(broker, topic, group, "offsets", "describe")
    assert offsets_of(seen["offsets"], topic) == committed
    (d,) = seen["describe"]
    assert (d["state"], d["members"]) == ("Empty", []), d

    fresh = members(bs, topic, group, "b0")
    wait_assignment([fresh], [6], broker=broker)
    wait_consumed(first + [fresh], written, broker=broker)
    time.sleep(0.5)
    stop_all([fresh])
    new = {k: v for k, v in written.snapshot().items() if k not in already}
    # Exactly the records written after the commit, from the committed offsets on.
    check_exactly_once(new, fresh.records())
    firsts = {}
    for _, p, o, _ in fresh.records():
        firsts.setdefault(p, o)
    assert firsts == committed, f"the fresh member started at {firsts}, the group had committed {committed}"
    check_exactly_once(written, [r for m in first + [fresh] for r in m.records()])
    assert committed_offsets(bs, group, topic) == written.end_offsets()


def test_crashed_member_replaced_by_a_restarted_one(broker_factory, members):
    """A member is killed (SIGKILL) and a replacement starts at once: the group cannot
    settle until the dead member's session (6 s) has expired; then the replacement and
    the survivors share the partitions, and the dead member's partitions resume from its
    last committed offsets."""
    broker = broker_factory(*REBALANCE_DELAY)
    bs, topic, group = broker.bootstrap, "js-crash", "js-crash"
    create_topic(bs, topic)
    written = Written()
    produce(bs, topic, written, "pre", 10)
    producer = SteadyProducer(bs, topic, written, "live", interval=0.05).start()
    try:
        victim, a, b = (members(bs, topic, group, name) for name in ("victim", "a", "b"))
        wait_assignment([victim, a, b], [2, 2, 2], broker=broker)
        wait_progress([victim, a, b], written, broker=broker)
        lost = victim.assignment()
        victim.kill9()
        killed_at = time.monotonic()
        replacement = members(bs, topic, group, "replacement")
        time.sleep(0.5)  # anything the victim had sent is handled by now
        committed_at_kill = committed_offsets(bs, group, topic)
        consumed_by_victim = {p: 1 + max(o for _, q, o, _ in victim.records() if q == p) for p in lost}

        survivors = [a, b, replacement]
        wait_assignment(survivors, [2, 2, 2], timeout=30, broker=broker)
        settled_at = max(t for m in survivors for t, _ in m.of("assigned")[-1:])
        waited = settled_at - killed_at
        assert 6000 / 1000 - 0.5 - 1 <= waited <= 6000 / 1000 + 10, \
            f"the group settled {waited:.2f}s after the kill (session timeout 6000 ms)"
        (d,) = admin(broker, topic, group, "describe")["describe"]
        assert sorted(m["clientId"] for m in d["members"]) == ["kafkajs-a", "kafkajs-b", "kafkajs-replacement"], d
        wait_progress(survivors, written, broker=broker)
        assert producer.stop() > 20
        wait_consumed([victim] + survivors, written, broker=broker)
        time.sleep(0.5)
    finally:
        producer.stopping.set()
    stop_all(survivors)
    for p in lost:
        later = [e["o"] for m in survivors for t, e in m.of("record") if t > killed_at and e["p"] == p]
        assert later and min(later) == committed_at_kill[p], \
            f"partition {p}: taken over at offset {min(later) if later else None}, committed {committed_at_kill[p]}"
    redelivered = [(p, o) for p in lost for o in range(committed_at_kill[p], consumed_by_victim[p])]
    check_exactly_once(written, [r for m in [victim] + survivors for r in m.records()], allowed_duplicates=redelivered)
    assert committed_offsets(bs, group, topic) == written.end_offsets()
