"""Shared fixtures for the end-to-end tests: start the real `runnel` binary on a free
loopback port with a temporary data directory, and stop it (by its own pid) afterwards."""

import os
import resource
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def runnel_binary() -> Path:
    explicit = os.environ.get("RUNNEL_BIN")
    if explicit:
        return Path(explicit)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return target / "release" / "runnel"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """One runnel process. `bootstrap` is what clients are given."""

    def __init__(self, data_dir: Path, args=(), nofile=None):
        self.data_dir = data_dir
        self.port = free_port()
        self.args = list(args)
        # An open-file limit (soft and hard) for the process, as `ulimit -n` would set.
        self.nofile = nofile
        self.proc = None
        self.log_path = data_dir.parent / f"runnel-{self.port}.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout=30.0):
        cmd = [str(runnel_binary()), "serve", "--listen", self.bootstrap,
               "--data-dir", str(self.data_dir), *self.args]
        # RUNNEL_TEST_LOG_LEVEL (a tracing filter such as "info,runnel=debug") for chasing a failure.
        if os.environ.get("RUNNEL_TEST_LOG_LEVEL"):
            cmd += ["--log-level", os.environ["RUNNEL_TEST_LOG_LEVEL"]]
        log = open(self.log_path, "ab")
        limit = None
        if self.nofile is not None:
            n = self.nofile
            limit = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))  # noqa: E731
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, preexec_fn=limit)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"runnel exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    # A connect to a free loopback port can pick that same port as its
                    # source and connect to itself: that is not the broker listening.
                    if s.getsockname() != s.getpeername():
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"runnel did not listen within {timeout}s: {self.log_tail()}")

    def stop(self, timeout=30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def restart(self):
        self.stop()
        return self.start()

    def log_tail(self, n=4000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""


@pytest.fixture
def broker_factory(tmp_path):
    started = []

    def make(*args, data_dir=None, nofile=None):
        b = Broker(data_dir or tmp_path / f"data{len(started)}", args, nofile=nofile)
        started.append(b)
        return b.start()

    yield make
    for b in started:
        try:
            b.stop(timeout=15)
        except Exception:
            b.kill9()


@pytest.fixture
def broker(broker_factory):
    return broker_factory()


class Cluster:
    """Several runnel processes on loopback, all controller voters (`--voters`), each with
    its own client and raft port and data directory. Nodes keep their ports and data across
    kill -9 and restart, as machines would."""

    def __init__(self, base: Path, n: int, args=(), proxied=False):
        base.mkdir(parents=True, exist_ok=True)
        raft_ports = {i: free_port() for i in range(1, n + 1)}
        # With `proxied`, node i reaches node j through its own proxy (i, j), so a test can
        # cut single links; a node's voters list then names the proxies it dials.
        self.links = {}
        if proxied:
            from cutting_proxy import CuttingProxy
            self.links = {(i, j): CuttingProxy(raft_ports[j]) for i in raft_ports for j in raft_ports if i != j}
        self.nodes = {}
        self.base, self.args = base, list(args)
        self.voters = ",".join(f"{j}@127.0.0.1:{p}" for j, p in raft_ports.items())
        for i in raft_ports:
            voters = ",".join(
                f"{j}@127.0.0.1:{raft_ports[j] if j == i or not proxied else self.links[(i, j)].port}" for j in raft_ports)
            node_args = ["--node-id", str(i), "--raft-listen", f"127.0.0.1:{raft_ports[i]}", "--voters", voters, *args]
            self.nodes[i] = Broker(base / f"node{i}", node_args)

    def add_node(self):
        """Starts one more node, not a controller voter, pointed at the same voters."""
        node_id = max(self.nodes) + 1
        node_args = ["--node-id", str(node_id), "--raft-listen", f"127.0.0.1:{free_port()}", "--voters", self.voters, *self.args]
        self.nodes[node_id] = Broker(self.base / f"node{node_id}", node_args)
        self.nodes[node_id].start()
        return node_id

    def isolate(self, node_id):
        """Blocks every link to and from `node_id` (needs `proxied`)."""
        for (i, j), proxy in self.links.items():
            if node_id in (i, j):
                proxy.block()

    def heal(self):
        for proxy in self.links.values():
            proxy.heal()

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.nodes.values())

    def start(self):
        for b in self.nodes.values():
            b.start()
        return self

    def stop(self):
        for b in self.nodes.values():
            try:
                b.stop(timeout=15)
            except Exception:
                b.kill9()
        for proxy in self.links.values():
            proxy.close()

    def logs(self, n=3000) -> str:
        return "\n".join(f"--- node {i} ---\n{b.log_tail(n)}" for i, b in self.nodes.items())


@pytest.fixture
def cluster_factory(tmp_path):
    started = []

    def make(n=3, *args, proxied=False):
        c = Cluster(tmp_path / f"cluster{len(started)}", n, args, proxied=proxied)
        started.append(c)
        return c.start()

    yield make
    for c in started:
        c.stop()


def wait_until(pred, timeout=20.0, interval=0.1, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


# ---------------------------------------------------------------------------
# Shared helpers for the client tests (plain functions: `from conftest import ...`).

import dataclasses
import random

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")


def pytest_configure(config):
    # kafka-python 3 loads its protocol schemas with importlib.resources' legacy API.
    config.addinivalue_line("filterwarnings", r"ignore:.*is deprecated\. Use files\(\) instead:DeprecationWarning")


@dataclasses.dataclass(frozen=True)
class Rec:
    """One record as produced: what a consumer must get back."""
    index: int
    partition: int
    key: object            # bytes or None
    value: object          # bytes or None
    headers: tuple         # ((name: str, value: bytes), ...), order and duplicates kept
    timestamp: int         # CreateTime, ms


def make_records(n, tag, partitions=3, base_ts=None, text_only=False, with_nulls=True):
    """`n` distinct keyed records with headers, spread round-robin over `partitions`.

    Timestamps are explicit, strictly increasing by 10 ms per record (so by-timestamp
    lookups have one right answer), starting ten minutes in the past. Values mix
    compressible text (so codecs have something to do), binary bytes, empty values and,
    unless `with_nulls` is false, null keys and null values (never both in one record).
    Headers include duplicate names, an empty value and binary bytes; every fifth record
    has none.
    `text_only` keeps keys and values printable without tabs or newlines (for kcat).
    """
    if base_ts is None:
        base_ts = (int(time.time() * 1000) - 600_000) // 1000 * 1000
    rng = random.Random(f"{tag}/{n}")
    out = []
    for i in range(n):
        key = f"{tag}-key-{i:05d}".encode()
        if text_only:
            value = (f"{tag} value {i} " + "lorem ipsum dolor " * (i % 9)).encode()
            headers = ()
        else:
            if i % 4 == 0:
                key += b"\x00\xff"
            if i % 7 == 0:
                value = (f"{tag}-{i}-compressible;" * 80).encode()
            elif i % 7 == 1:
                value = rng.randbytes(64 + i % 50)
            elif i % 7 == 2:
                value = b""
            else:
                value = f"{tag} value {i} {'x' * (i % 33)}".encode()
            if with_nulls and i % 13 == 6:
                key = None
            if with_nulls and i % 17 == 9 and key is not None:
                value = None
            if i % 5 == 0:
                headers = ()
            else:
                h = [("idx", str(i).encode()), ("tag", tag.encode()), ("dup", b"first"), ("dup", b"second")]
                if i % 5 == 2:
                    h.append(("empty", b""))
                if i % 5 == 3:
                    h.append(("bin", bytes(range(0, 256, 17))))
                headers = tuple(h)
        out.append(Rec(i, i % partitions, key, value, headers, base_ts + 10 * i))
    return out


@dataclasses.dataclass(frozen=True)
class Got:
    """One record as a client consumed it."""
    partition: int
    offset: int
    key: object
    value: object
    headers: tuple
    timestamp: int


def check_consumed(expected, delivered, consumed, start_offsets=None):
    """Asserts that `consumed` is exactly `expected`, record for record.

    expected:  list of Rec in produce order (one producer at a time per partition).
    delivered: {Rec.index: (partition, offset)} from the producer's acknowledgements.
    consumed:  list of Got in the order the consumer returned them.
    start_offsets: {partition: first offset expected} (default 0: a fresh topic).
    Checks: every record acknowledged at the partition it was sent to, offsets per
    partition contiguous from the start and in produce order, and the consumer returned
    each partition in offset order with every key, value, header and timestamp intact.
    """
    start_offsets = start_offsets or {}
    assert len(delivered) == len(expected), f"{len(expected) - len(delivered)} records were not acknowledged"
    by_partition = {}
    for rec in expected:
        part, off = delivered[rec.index]
        assert part == rec.partition, f"record {rec.index} sent to partition {rec.partition}, acknowledged on {part}"
        by_partition.setdefault(part, []).append((off, rec))
    for part, recs in by_partition.items():
        offsets = [o for o, _ in recs]
        first = start_offsets.get(part, 0)
        assert offsets == list(range(first, first + len(recs))), \
            f"partition {part}: acknowledged offsets are not contiguous in produce order: {offsets[:20]}..."

    got_by_partition = {}
    for g in consumed:
        got_by_partition.setdefault(g.partition, []).append(g)
    assert sorted(got_by_partition) == sorted(by_partition), \
        f"consumed partitions {sorted(got_by_partition)} != produced {sorted(by_partition)}"
    for part, recs in by_partition.items():
        got = got_by_partition[part]
        got_offsets = [g.offset for g in got]
        assert got_offsets == [o for o, _ in recs], \
            f"partition {part}: consumed offsets {got_offsets[:20]}... != acknowledged {[o for o, _ in recs][:20]}..."
        for (off, rec), g in zip(recs, got):
            where = f"partition {part} offset {off} (record {rec.index})"
            assert g.key == rec.key, f"{where}: key {g.key!r} != {rec.key!r}"
            assert g.value == rec.value, f"{where}: value {g.value!r:.80} != {rec.value!r:.80}"
            assert tuple(g.headers) == tuple(rec.headers), f"{where}: headers {g.headers!r} != {rec.headers!r}"
            assert g.timestamp == rec.timestamp, f"{where}: timestamp {g.timestamp} != {rec.timestamp}"



def metadata_from(port, topic, timeout=5.0):
    """What one node itself answers to Metadata v1 for `topic` (stock clients may ask any
    broker they know, so they cannot show a single node's view): {partition: (error code,
    leader, replicas, isr)}."""
    import struct

    def string(s):
        b = s.encode()
        return struct.pack(">h", len(b)) + b

    body = struct.pack(">hhi", 3, 1, 1) + string("runnel-compat") + struct.pack(">i", 1) + string(topic)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", _read_exact(s, 4))[0]
        buf = memoryview(_read_exact(s, size))
    pos = 4  # correlation id

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from(fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return v[0] if len(v) == 1 else v

    def take_str():
        nonlocal pos
        n = take(">h")
        v = bytes(buf[pos:pos + max(n, 0)]).decode()
        pos += max(n, 0)
        return v

    for _ in range(take(">i")):  # brokers: id, host, port, rack
        take(">i"), take_str(), take(">i"), take_str()
    take(">i")  # controller id
    out = {}
    for _ in range(take(">i")):
        take(">h"), take_str(), take(">b")
        for _ in range(take(">i")):
            err, index, leader = take(">hii")
            replicas = [take(">i") for _ in range(take(">i"))]
            isr = [take(">i") for _ in range(take(">i"))]
            out[index] = (err, leader, replicas, isr)
    return out


def _read_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data
