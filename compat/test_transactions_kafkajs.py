"""kafkajs (npm, unchanged) idempotent and transactional producers against the real broker;
compat/js/txn.js runs each scenario and prints what the client saw:

- an idempotent producer (idempotent: true) writes 600 records in 20 sends; a consumer
  group reads each exactly once, in order per partition, at the acknowledged offsets;
- a committed, an aborted and a committed transaction (two sends each): a consumer with
  kafkajs' default isolation (read_committed) gets the committed records only, one with
  readUncommitted: true gets all of them; neither gets a control record;
- consume-transform-produce with transaction.sendOffsets: offsets sent to an aborted
  transaction are not committed; with committed transactions the group's offsets are the
  end of the input and the output holds every record once.

kafkajs speaks InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit and
EndTxn v0-v1 only, and asks the controller (from Metadata) for an idempotent producer's id."""

from collections import Counter, defaultdict

import pytest

from stock_clients import kafkajs_ready, run_kafkajs_txn, step_ok

pytestmark = pytest.mark.timeout(150)

FAST_GROUPS = ("--group-initial-rebalance-delay-ms", "300")


@pytest.fixture
def js_broker(broker_factory):
    kafkajs_ready()
    return broker_factory(*FAST_GROUPS)


def per_partition(records, key="p"):
    out = defaultdict(list)
    for r in records:
        out[r[key]].append(r)
    return out


def test_kafkajs_idempotent_producer_writes_every_record_exactly_once(js_broker):
    out = run_kafkajs_txn(js_broker.bootstrap, "idempotent", "js-idem", broker=js_broker)
    assert step_ok(out, "create", js_broker) == {"created": True}
    acked = step_ok(out, "produce", js_broker)["acked"]
    consumed = step_ok(out, "consume", js_broker)
    expected = {int(p): vs for p, vs in out["expected"].items()}
    assert len(acked) == sum(len(v) for v in expected.values()) == 600

    acked_by_p = per_partition(acked, "partition")
    got_by_p = per_partition(consumed)
    assert sorted(got_by_p) == [0, 1, 2]
    for p, want in expected.items():
        # Acknowledged in the order sent, at contiguous offsets from 0.
        assert [a["value"] for a in acked_by_p[p]] == want
        assert [a["offset"] for a in acked_by_p[p]] == list(range(len(want))), f"partition {p}: acked offsets"
        # Consumed once each, in order, where they were acknowledged.
        got = got_by_p[p]
        dups = [v for v, n in Counter(r["v"] for r in got).items() if n > 1]
        assert not dups, f"partition {p}: duplicates {dups[:5]}"
        assert [r["v"] for r in got] == want, f"partition {p}: consumed values"
        assert [r["o"] for r in got] == list(range(len(want))), f"partition {p}: consumed offsets"


def test_kafkajs_read_committed_gets_committed_transactions_only(js_broker):
    out = run_kafkajs_txn(js_broker.bootstrap, "transactions", "js-txn", broker=js_broker)
    assert step_ok(out, "create", js_broker) == {"created": True}
    acked = step_ok(out, "produce", js_broker)["acked"]
    committed = defaultdict(list)
    everything = defaultdict(list)
    for txn in out["txns"]:
        for p, vs in txn["values"].items():
            everything[int(p)].extend(vs)
            if txn["outcome"] == "commit":
                committed[int(p)].extend(vs)
    # Every send acknowledged, aborted ones too, each transaction's records after the
    # previous transaction's marker.
    acked_by_p = per_partition(acked, "partition")
    for p, want in everything.items():
        assert [a["value"] for a in acked_by_p[p]] == want
        offsets = [a["offset"] for a in acked_by_p[p]]
        assert offsets == [i + i // 6 for i in range(len(want))], f"partition {p}: offsets {offsets}"

    rc = per_partition(step_ok(out, "read_committed", js_broker))
    ru = per_partition(step_ok(out, "read_uncommitted", js_broker))
    for p in committed:
        assert [r["v"] for r in rc[p]] == committed[p], f"partition {p}: read_committed"
        assert [r["v"] for r in ru[p]] == everything[p], f"partition {p}: read_uncommitted"
        by_value = {a["value"]: a["offset"] for a in acked_by_p[p]}
        assert all(r["o"] == by_value[r["v"]] for r in ru[p])


def test_kafkajs_send_offsets_commits_group_offsets_with_the_transaction(js_broker):
    out = run_kafkajs_txn(js_broker.bootstrap, "send_offsets", "js-ctp", broker=js_broker, timeout=120)
    assert step_ok(out, "create", js_broker) == {"created": True}
    step_ok(out, "write_input", js_broker)
    step_ok(out, "connect", js_broker)
    assert step_ok(out, "aborted_send_offsets", js_broker) == {"ok": True}
    # Nothing committed by the aborted transaction (kafkajs reports "no offset" as -1).
    after_abort = {o["partition"]: o["offset"] for o in step_ok(out, "offsets_after_abort", js_broker)}
    assert after_abort == {0: -1, 1: -1}, after_abort

    transform = step_ok(out, "transform", js_broker)
    assert transform["processed"] == 80 and transform["transactions"] >= 2, transform
    after_commit = {o["partition"]: o["offset"] for o in step_ok(out, "offsets_after_commit", js_broker)}
    assert after_commit == {0: 40, 1: 40}, after_commit

    output = per_partition(step_ok(out, "output", js_broker))
    for p, vs in out["inputs"].items():
        assert [r["v"] for r in output[int(p)]] == [f"out-{v}" for v in vs], f"output partition {p}"
