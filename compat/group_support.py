"""Helpers shared by the consumer-group tests (test_groups_*.py): a topic of numbered
records written with kafka-python (in bulk or steadily from a thread), the group
members that run as separate processes (kafkajs' compat/js/group.js and sarama's
`saramacompat ... group-member`), and the exactly-once check over what every member
consumed.

Every record's value is "<tag>-p<partition>-<n>", n counting up per partition, so a
consumed value tells which record it was; the producer's acknowledgements give the
offset each one was stored at."""

import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict

from kafka import KafkaAdminClient, KafkaProducer, TopicPartition

from conftest import wait_until

TIMEOUT_MS = 20000
PARTITIONS = 6


def admin_client(bootstrap):
    return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=TIMEOUT_MS,
                            client_id="compat-group-admin")


def create_topic(bootstrap, name, partitions=PARTITIONS):
    admin = admin_client(bootstrap)
    try:
        result = admin.create_topics({name: {"num_partitions": partitions, "replication_factor": 1}},
                                     timeout_ms=TIMEOUT_MS, wait_for_metadata=True)
        [topic] = result["topics"]
        assert (topic["name"], topic["error_code"]) == (name, 0), topic
    finally:
        admin.close()


def new_producer(bootstrap):
    return KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False,
                         linger_ms=5, request_timeout_ms=TIMEOUT_MS, max_block_ms=TIMEOUT_MS,
                         retries=5, max_in_flight_requests_per_connection=1)


class Written:
    """What the producers had acknowledged: {(partition, offset): value}."""

    def __init__(self):
        self.records = {}
        self.next_n = defaultdict(int)
        self.lock = threading.Lock()

    def add(self, partition, offset, value):
        with self.lock:
            assert (partition, offset) not in self.records, f"offset {partition}/{offset} acknowledged twice"
            self.records[(partition, offset)] = value

    def snapshot(self):
        with self.lock:
            return dict(self.records)

    def end_offsets(self, partitions=PARTITIONS):
        snap = self.snapshot()
        return {p: 1 + max((o for (q, o) in snap if q == p), default=-1) for p in range(partitions)}


def produce(bootstrap, topic, written, tag, per_partition, partitions=PARTITIONS):
    """`per_partition` more records on every partition, acknowledged before returning."""
    p = new_producer(bootstrap)
    try:
        futures = []
        for _ in range(per_partition):
            for part in range(partitions):
                n = written.next_n[part]
                written.next_n[part] = n + 1
                value = f"{tag}-p{part}-{n}"
                futures.append((value, p.send(topic, key=f"k{n}".encode(), value=value.encode(), partition=part)))
        p.flush(timeout=TIMEOUT_MS / 1000)
        for value, f in futures:
            md = f.get(timeout=TIMEOUT_MS / 1000)
            written.add(md.partition, md.offset, value)
    finally:
        p.close(timeout=10)


class SteadyProducer:
    """Writes one record to every partition each `interval` seconds from a thread, until
    stop(); every send is acknowledged (acks=all) before the next round."""

    def __init__(self, bootstrap, topic, written, tag, interval=0.05, partitions=PARTITIONS):
        self.bootstrap, self.topic, self.written, self.tag = bootstrap, topic, written, tag
        self.interval, self.partitions = interval, partitions
        self.stopping = threading.Event()
        self.error = None
        self.rounds = 0
        self.thread = threading.Thread(target=self._run, name=f"producer-{tag}", daemon=True)

    def start(self):
        self.thread.start()
        return self

    def _run(self):
        try:
            p = new_producer(self.bootstrap)
            try:
                while not self.stopping.is_set():
                    futures = []
                    for part in range(self.partitions):
                        n = self.written.next_n[part]
                        self.written.next_n[part] = n + 1
                        value = f"{self.tag}-p{part}-{n}"
                        futures.append((value, p.send(self.topic, value=value.encode(), partition=part)))
                    for value, f in futures:
                        md = f.get(timeout=60)
                        self.written.add(md.partition, md.offset, value)
                    self.rounds += 1
                    self.stopping.wait(self.interval)
            finally:
                p.close(timeout=10)
        except Exception as e:  # reported by stop()
            self.error = e

    def stop(self):
        self.stopping.set()
        self.thread.join(timeout=90)
        assert not self.thread.is_alive(), "the producer thread did not stop"
        assert self.error is None, f"the steady producer failed: {self.error!r}"
        return self.rounds


# ----------------------------------------------------------------- consumed records

def check_exactly_once(written, consumed, allowed_duplicates=()):
    """`consumed`: [(member, partition, offset, value)] from every member of the group.

    Every acknowledged record was consumed, with its value, and (except the (partition,
    offset) pairs in `allowed_duplicates`) exactly once across the whole group."""
    expected = written.snapshot() if isinstance(written, Written) else written
    counts = Counter((p, o) for _, p, o, _ in consumed)
    by_key = defaultdict(list)
    for member, p, o, v in consumed:
        by_key[(p, o)].append(member)
        assert (p, o) in expected, f"consumed {p}/{o} ({v!r}, by {member}), which was never acknowledged"
        assert v == expected[(p, o)], f"{p}/{o}: consumed value {v!r} (by {member}) != produced {expected[(p, o)]!r}"
    missing = sorted(k for k in expected if k not in counts)
    allowed = set(allowed_duplicates)
    dups = sorted(k for k, n in counts.items() if n > 1 and k not in allowed)
    assert not missing, (f"{len(missing)} of {len(expected)} acknowledged records were never consumed, "
                         f"e.g. {missing[:10]}")
    assert not dups, (f"{len(dups)} records consumed more than once, e.g. "
                      + ", ".join(f"{p}/{o} by {by_key[(p, o)]}" for p, o in dups[:10]))


def committed_offsets(bootstrap, group, topic, partitions=PARTITIONS):
    """{partition: committed offset} of `group` (OffsetFetch through kafka-python's admin);
    partitions without a commit are left out."""
    admin = admin_client(bootstrap)
    try:
        got = admin.list_group_offsets({group: [TopicPartition(topic, p) for p in range(partitions)]})[group]
    finally:
        admin.close()
    return {tp.partition: om.offset for tp, om in got.items() if om.offset is not None and om.offset >= 0}


# ----------------------------------------------------------------- member processes

class MemberProcess:
    """A group member running in its own process that prints one JSON object per line:

      {"ev": "assigned", "partitions": [...], "generation": G, "member": ID}
      {"ev": "revoked", ...}
      {"ev": "record", "p": P, "o": O, "v": VALUE}
      {"ev": "error", "error": ...}
      {"ev": "closed"}                  after a clean stop (stdin closed)

    Closing its stdin asks it to leave the group and exit; kill9() crashes it."""

    def __init__(self, name, cmd, cwd, log_dir, env=None):
        self.name = name
        self.cmd = cmd
        self.events = []  # (monotonic time, event dict)
        self.cond = threading.Condition()
        self.stderr_path = log_dir / f"member-{name}.stderr"
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=err, env=env)
        self.reader = threading.Thread(target=self._read, name=f"reader-{name}", daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                ev = {"ev": "garbage", "line": line.decode(errors="replace")}
            with self.cond:
                self.events.append((time.monotonic(), ev))
                self.cond.notify_all()
        with self.cond:
            self.events.append((time.monotonic(), {"ev": "eof"}))
            self.cond.notify_all()

    def snapshot(self):
        with self.cond:
            return list(self.events)

    def of(self, kind):
        return [(t, e) for t, e in self.snapshot() if e.get("ev") == kind]

    def records(self):
        return [(self.name, e["p"], e["o"], e["v"]) for _, e in self.of("record")]

    def errors(self):
        return [e for _, e in self.of("error")]

    def assignment(self):
        """The partitions of the latest assignment, or [] when revoked since (or never assigned)."""
        current = []
        for _, e in self.snapshot():
            if e.get("ev") == "assigned":
                current = sorted(e["partitions"])
            elif e.get("ev") in ("revoked", "closed", "eof"):
                current = []
        return current

    def alive(self):
        return self.proc.poll() is None

    def stderr_tail(self, n=3000):
        try:
            return self.stderr_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout=30):
        """Clean stop: stdin closed; the member leaves the group and exits 0."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise AssertionError(f"member {self.name} did not stop within {timeout}s\n{self.stderr_tail()}")
        self.reader.join(timeout=10)
        assert rc == 0, f"member {self.name} exited with {rc}\n{self.stderr_tail()}"
        assert self.of("closed"), f"member {self.name} did not report a clean close\n{self.stderr_tail()}"
        return rc

    def kill9(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.reader.join(timeout=10)

    def describe(self):
        return (f"member {self.name} (pid {self.proc.pid}, rc {self.proc.poll()}): "
                f"assignment {self.assignment()}, {len(self.records())} records, errors {self.errors()[-3:]}\n"
                f"stderr: {self.stderr_tail(1500)}")


def wait_assignment(members, sizes, partitions=PARTITIONS, timeout=45, broker=None):
    """Waits until the members' current assignments have the given sizes (sorted list of
    sizes, in the members' order) and together cover every partition exactly once."""
    def settled():
        got = [m.assignment() for m in members]
        flat = sorted(p for a in got for p in a)
        return [len(a) for a in got] == sizes and flat == list(range(partitions)) and got
    try:
        return wait_until(settled, timeout=timeout, interval=0.1, what=f"assignment sizes {sizes}")
    except AssertionError:
        from stock_clients import broker_log
        raise AssertionError(f"members did not settle on {sizes} partitions each within {timeout}s:\n"
                             + "\n".join(m.describe() for m in members) + broker_log(broker)) from None


def wait_consumed(members, written, timeout=45, broker=None):
    """Waits until every acknowledged record has been consumed by some member."""
    expected = set(written.snapshot())

    def done():
        have = {(p, o) for m in members for _, p, o, _ in m.records()}
        return expected <= have
    try:
        wait_until(done, timeout=timeout, interval=0.2, what="every record consumed")
    except AssertionError:
        from stock_clients import broker_log
        have = {(p, o) for m in members for _, p, o, _ in m.records()}
        missing = sorted(expected - have)
        raise AssertionError(f"{len(missing)} of {len(expected)} records not consumed within {timeout}s, "
                             f"e.g. {missing[:10]}\n" + "\n".join(m.describe() for m in members)
                             + broker_log(broker)) from None


def wait_progress(members, written, timeout=30, broker=None):
    """Waits until each member has consumed, on every partition it now owns, a record
    written after this call began: the current assignment is live, not just announced."""
    mark = written.end_offsets()
    owned = {m.name: m.assignment() for m in members}

    def done():
        for m in members:
            got = {p for _, p, o, _ in m.records() if o >= mark[p]}
            if not set(owned[m.name]) <= got:
                return False
        return True
    try:
        wait_until(done, timeout=timeout, interval=0.1, what="every member consuming new records")
    except AssertionError:
        from stock_clients import broker_log
        raise AssertionError(f"not every member consumed records written after offsets {mark} "
                             f"on the partitions it owns ({owned}) within {timeout}s:\n"
                             + "\n".join(m.describe() for m in members) + broker_log(broker)) from None
