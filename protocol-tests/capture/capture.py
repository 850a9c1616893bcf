#!/usr/bin/env python3
"""Records the exact request and response frames that a stock Kafka client exchanges with
Runnel in one short scenario, and writes them as a fixture (protocol-tests/fixtures/).

    capture.py CLIENT [CLIENT...]   capture these clients (kcat, confluent-kafka,
                                    kafka-python, aiokafka, kafkajs, sarama)
    capture.py all                  capture all six
    capture.py --check [CLIENT...]  only check the existing fixtures and summarise them

For each client: start `runnel serve` on a free loopback port with a fresh data directory,
advertising a recording proxy's address (so every connection the client opens, bootstrap
or not, goes through the proxy); run the client's scenario program (clients/) with the
proxy as bootstrap; stop the client, the proxy and the broker (each by its own pid); write
the fixture; check that every request has its response. The tool itself uses only the
standard library; the Python clients' scenario runs in compat/.venv (see README.md).
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
FIXTURES = REPO / "protocol-tests" / "fixtures"
TOOL = "protocol-tests/capture/capture.py"
COMPAT = REPO / "compat"
VENV_PYTHON = COMPAT / ".venv" / "bin" / "python"
DEBIAN_GOPATH = "/usr/share/gocode"

CLIENTS = ("kcat", "confluent-kafka", "kafka-python", "aiokafka", "kafkajs", "sarama")
SCENARIO_TIMEOUT = 60.0  # seconds; a scenario normally takes well under 20

# The scenario, the same for every client as far as the client can (see README.md).
SCENARIO = {
    "kcat": "kcat -L; kcat -P auto-creates capture-kcat (broker num.partitions=2) and sends "
            "keys key-0..4 (default partitioner), then -z gzip keys key-5..9; kcat -L -t; "
            "kcat -G capture-kcat-group reads all 10 from the beginning, commits on close "
            "(auto-commit), leaves the group",
    "confluent-kafka": "AdminClient create_topics capture-confluent-kafka (2 partitions), "
                       "list_topics, describe_configs; Producer (defaults) sends key-0..4, "
                       "Producer compression.type=gzip sends key-5..9 (partition i%2); "
                       "Consumer group capture-confluent-kafka-group reads all 10 from the "
                       "beginning, commit(), close()",
    "kafka-python": "KafkaAdminClient create_topics capture-kafka-python (2 partitions), "
                    "list_topics, describe_configs; KafkaProducer (defaults) sends key-0..4, "
                    "KafkaProducer compression_type=gzip sends key-5..9 (partition i%2); "
                    "KafkaConsumer group capture-kafka-python-group reads all 10 from the "
                    "beginning, commit(), close()",
    "aiokafka": "AIOKafkaAdminClient create_topics capture-aiokafka (2 partitions), "
                "list_topics, describe_configs; AIOKafkaProducer (defaults) sends key-0..4, "
                "AIOKafkaProducer compression_type=gzip sends key-5..9 (partition i%2); "
                "AIOKafkaConsumer group capture-aiokafka-group reads all 10 from the "
                "beginning, commit(), stop()",
    "kafkajs": "admin createTopics capture-kafkajs (2 partitions), listTopics, "
               "describeConfigs; one producer (defaults) sends key-0..4, then key-5..9 "
               "with compression CompressionTypes.GZIP (partition i%2); consumer group "
               "capture-kafkajs-group reads all 10 from the beginning (autoCommit off), "
               "commitOffsets, disconnect",
    "sarama": "ClusterAdmin CreateTopic capture-sarama (2 partitions), ListTopics, "
              "DescribeConfig; SyncProducer (defaults, Version V2_1_0_0) sends key-0..4, "
              "SyncProducer Compression=GZIP sends key-5..9 (partition i%2); ConsumerGroup "
              "capture-sarama-group reads all 10 from the oldest offset, MarkMessage, "
              "commit on Close (LeaveGroup)",
}

# Names of Kafka API keys, for the summary only.
API_NAMES = {
    0: "Produce", 1: "Fetch", 2: "ListOffsets", 3: "Metadata", 4: "LeaderAndIsr",
    5: "StopReplica", 6: "UpdateMetadata", 7: "ControlledShutdown", 8: "OffsetCommit",
    9: "OffsetFetch", 10: "FindCoordinator", 11: "JoinGroup", 12: "Heartbeat",
    13: "LeaveGroup", 14: "SyncGroup", 15: "DescribeGroups", 16: "ListGroups",
    17: "SaslHandshake", 18: "ApiVersions", 19: "CreateTopics", 20: "DeleteTopics",
    21: "DeleteRecords", 22: "InitProducerId", 23: "OffsetForLeaderEpoch",
    24: "AddPartitionsToTxn", 25: "AddOffsetsToTxn", 26: "EndTxn", 27: "WriteTxnMarkers",
    28: "TxnOffsetCommit", 29: "DescribeAcls", 30: "CreateAcls", 31: "DeleteAcls",
    32: "DescribeConfigs", 33: "AlterConfigs", 34: "AlterReplicaLogDirs",
    35: "DescribeLogDirs", 36: "SaslAuthenticate", 37: "CreatePartitions",
    38: "CreateDelegationToken", 39: "RenewDelegationToken", 40: "ExpireDelegationToken",
    41: "DescribeDelegationToken", 42: "DeleteGroups", 43: "ElectLeaders",
    44: "IncrementalAlterConfigs", 45: "AlterPartitionReassignments",
    46: "ListPartitionReassignments", 47: "OffsetDelete", 48: "DescribeClientQuotas",
    49: "AlterClientQuotas", 50: "DescribeUserScramCredentials",
    51: "AlterUserScramCredentials", 60: "DescribeCluster", 61: "DescribeProducers",
    65: "DescribeTransactions", 66: "ListTransactions", 68: "ConsumerGroupHeartbeat",
    69: "ConsumerGroupDescribe", 71: "GetTelemetrySubscriptions", 72: "PushTelemetry",
    75: "DescribeTopicPartitions",
}


def log(msg):
    print(f"[capture] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def runnel_binary() -> Path:
    explicit = os.environ.get("RUNNEL_BIN")
    if explicit:
        return Path(explicit)
    for target in (os.environ.get("CARGO_TARGET_DIR"), Path.home() / ".cache/runnel/target", REPO / "target"):
        if target and (Path(target) / "release" / "runnel").exists():
            return Path(target) / "release" / "runnel"
    raise SystemExit("no runnel binary: build it (cargo build --release) or set RUNNEL_BIN")


# ---------------------------------------------------------------- recording proxy

class RecordingProxy:
    """A loopback TCP proxy that splits both directions of every connection into Kafka
    frames (4-byte big-endian length, then that many bytes) and records each whole frame
    before forwarding it, so a response is never recorded before its request. A frame cut
    short by a close is not recorded. Connections are numbered from 0 in accept order."""

    MAX_FRAME = 256 << 20  # larger than any frame of these scenarios; bigger ends the connection

    def __init__(self):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.target = None
        self.lock = threading.Lock()
        self.frames = []          # (t, conn, dir, bytes)
        self.sockets = []
        self.conns = 0
        self.closed = False
        self.start = None
        self.errors = []

    def begin(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.start = time.monotonic()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError as e:
                self.errors.append(f"connect to broker: {e}")
                client.close()
                continue
            with self.lock:
                conn = self.conns
                self.conns += 1
                self.sockets += [client, upstream]
            for src, dst, d in ((client, upstream, "req"), (upstream, client, "resp")):
                threading.Thread(target=self._pump, args=(conn, src, dst, d), daemon=True).start()

    @staticmethod
    def _read_exact(sock, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = sock.recv(min(n - len(buf), 1 << 20))
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    def _pump(self, conn, src, dst, direction):
        try:
            while True:
                head = self._read_exact(src, 4)
                if head is None:
                    break
                size = int.from_bytes(head, "big", signed=True)
                if size < 0 or size > self.MAX_FRAME:
                    self.errors.append(f"conn {conn} {direction}: frame size {size}")
                    break
                body = self._read_exact(src, size)
                if body is None:
                    break
                with self.lock:
                    self.frames.append((time.monotonic() - self.start, conn, direction, body))
                dst.sendall(head + body)
        except OSError:
            pass
        # Pass the end of this direction on; the other direction ends by itself.
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self):
        self.closed = True
        self.listener.close()
        with self.lock:
            socks = list(self.sockets)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def snapshot(self):
        with self.lock:
            return list(self.frames)


# ---------------------------------------------------------------- broker

class Broker:
    def __init__(self, data_dir: Path, advertise_port: int, log_path: Path):
        self.port = free_port()
        cmd = [str(runnel_binary()), "serve", "--listen", f"127.0.0.1:{self.port}",
               "--data-dir", str(data_dir), "--advertise", f"127.0.0.1:{advertise_port}",
               # kcat has no admin: its topic is auto-created by Metadata with 2 partitions.
               "--num-partitions", "2",
               # A single member: no reason to wait for others before the first rebalance.
               "--group-initial-rebalance-delay-ms", "0"]
        self.log_path = log_path
        with open(log_path, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"runnel exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    if s.getsockname() != s.getpeername():
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"runnel did not listen within 30 s: {self.log_tail()}")
            time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self, n=3000):
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""


# ---------------------------------------------------------------- client scenarios
#
# Each runner gets the bootstrap address (the proxy), the topic, the group and a scratch
# directory; it runs the client to the end and returns the client's name and version.

def run(cmd, timeout=SCENARIO_TIMEOUT, **kw):
    """Runs one client process; on a timeout it is killed (by its pid) and that is an error."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise RuntimeError(f"{cmd[:3]} did not finish within {timeout}s: {err.decode(errors='replace')[-2000:]}")
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} exited with {proc.returncode}: {err.decode(errors='replace')[-3000:]}")
    return out.decode(errors="replace"), err.decode(errors="replace")


def last_json_line(out: str) -> dict:
    for line in reversed(out.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"the scenario printed no JSON result: {out[-2000:]!r}")


def value(i):
    """Record i's value, the same for every client (clients/): text that gzip shrinks, since
    librdkafka sends a batch uncompressed when compressing would not make it smaller."""
    return f"value {i}: " + "the quick brown fox jumps over the lazy dog; " * 4


def scenario_kcat(bootstrap, topic, group, scratch):
    kcat = shutil.which("kcat")
    if kcat is None:
        raise RuntimeError("kcat is not installed (apt-get install kcat)")
    version_text, _ = run([kcat, "-V"])
    # "Version 1.7.1 (JSON, ..., librdkafka 2.0.2 builtin.features=...)"
    kv = version_text.split("Version ", 1)[1].split()[0]
    lv = version_text.split("librdkafka ", 1)[1].split()[0]
    base = [kcat, "-b", bootstrap, "-m", "10", "-X", "client.id=capture-kcat"]
    run(base + ["-L"])
    for codec, first in ((None, 0), ("gzip", 5)):
        lines = "".join(f"key-{i}\t{value(i)}\n" for i in range(first, first + 5)).encode()
        cmd = base + ["-P", "-t", topic, "-K", "\t"] + (["-z", codec] if codec else [])
        proc = subprocess.run(cmd, input=lines, capture_output=True, timeout=SCENARIO_TIMEOUT)
        if proc.returncode != 0:
            raise RuntimeError(f"kcat -P exited with {proc.returncode}: {proc.stderr.decode(errors='replace')}")
    run(base + ["-L", "-t", topic])
    out, _ = run(base + ["-G", group, "-X", "auto.offset.reset=earliest", "-c", "10",
                         "-f", "%p %o %k\n", topic])
    got = [ln for ln in out.splitlines() if ln.strip()]
    if len(got) != 10:
        raise RuntimeError(f"kcat -G read {len(got)} records, not 10: {out!r}")
    parts = Counter(ln.split()[0] for ln in got)
    return {"client": f"kcat {kv} / librdkafka {lv}", "consumed": len(got), "partitions": dict(parts)}


def scenario_python(client):
    def runner(bootstrap, topic, group, scratch):
        if not VENV_PYTHON.exists():
            raise RuntimeError(f"{VENV_PYTHON} is missing (test.sh creates compat/.venv)")
        out, _ = run([str(VENV_PYTHON), str(HERE / "clients" / "py_clients.py"), client, bootstrap, topic, group])
        return last_json_line(out)
    return runner


def scenario_kafkajs(bootstrap, topic, group, scratch):
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed")
    modules = COMPAT / "js" / "node_modules"
    if not (modules / "kafkajs" / "package.json").exists():
        raise RuntimeError("compat/js/node_modules/kafkajs is missing: npm ci in compat/js")
    env = {**os.environ, "NODE_PATH": str(modules), "KAFKAJS_NO_PARTITIONER_WARNING": "1"}
    out, _ = run([node, str(HERE / "clients" / "kafkajs.js"), bootstrap, topic, group], env=env)
    return last_json_line(out)


def scenario_sarama(bootstrap, topic, group, scratch):
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("go is not installed (apt-get install golang-go)")
    if not (Path(DEBIAN_GOPATH) / "src/github.com/Shopify/sarama").is_dir():
        raise RuntimeError("sarama is missing: apt-get install golang-github-shopify-sarama-dev")
    binary = scratch / "sarama-capture"
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": DEBIAN_GOPATH, "GOFLAGS": "",
           "CGO_ENABLED": "1",
           "GOCACHE": os.environ.get("GOCACHE") or str(Path.home() / ".cache" / "runnel" / "capture-go-build")}
    run([go, "build", "-o", str(binary), "."], timeout=600, cwd=HERE / "clients" / "sarama", env=env)
    deb = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "golang-github-shopify-sarama-dev"],
                         capture_output=True, text=True).stdout.strip()
    gover = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True).stdout.strip()
    out, _ = run([str(binary), bootstrap, topic, group])
    result = last_json_line(out)
    result["client"] = f"sarama {deb.split('-')[0]} (Debian golang-github-shopify-sarama-dev {deb}, {gover})"
    return result


RUNNERS = {
    "kcat": scenario_kcat,
    "confluent-kafka": scenario_python("confluent-kafka"),
    "kafka-python": scenario_python("kafka-python"),
    "aiokafka": scenario_python("aiokafka"),
    "kafkajs": scenario_kafkajs,
    "sarama": scenario_sarama,
}


# ---------------------------------------------------------------- capture

def capture(client: str) -> Path:
    topic, group = f"capture-{client}", f"capture-{client}-group"
    with tempfile.TemporaryDirectory(prefix=f"runnel-capture-{client}-") as tmp:
        scratch = Path(tmp)
        proxy = RecordingProxy()
        broker = None
        try:
            broker = Broker(scratch / "data", proxy.port, scratch / "runnel.log")
            proxy.begin(broker.port)
            log(f"{client}: broker pid {broker.proc.pid} on :{broker.port}, proxy on :{proxy.port}")
            try:
                result = RUNNERS[client](f"127.0.0.1:{proxy.port}", topic, group, scratch)
            except Exception as e:
                raise RuntimeError(f"{client}: {e}\nbroker log tail:\n{broker.log_tail()}") from None
            time.sleep(0.3)  # let the last responses through the proxy
        finally:
            proxy.close()
            if broker is not None:
                broker.stop()
        if proxy.errors:
            raise RuntimeError(f"{client}: proxy errors: {proxy.errors}")
        frames = proxy.snapshot()
    log(f"{client}: {result}")
    FIXTURES.mkdir(parents=True, exist_ok=True)
    path = FIXTURES / f"{client}.jsonl"
    with open(path, "w") as f:
        f.write(json.dumps({"client": result["client"], "scenario": SCENARIO[client], "tool": TOOL}) + "\n")
        for t, conn, d, body in frames:
            # Written by hand so that every time has exactly 6 decimals; still plain JSON.
            f.write(f'{{"t": {t:.6f}, "conn": {conn}, "dir": "{d}", "frame": "{body.hex()}"}}\n')
    return path


# ---------------------------------------------------------------- check

def _uvarint(b, i):
    shift = value = 0
    while True:
        byte = b[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7


def produce_acks(frame: bytes):
    """The acks of a Produce request frame (None when it cannot be read)."""
    try:
        version = int.from_bytes(frame[2:4], "big")
        i = 8
        n = int.from_bytes(frame[i:i + 2], "big", signed=True)  # client_id: nullable string
        i += 2 + max(n, 0)
        flexible = version >= 9
        if flexible:  # request header v2: tagged fields
            count, i = _uvarint(frame, i)
            for _ in range(count):
                _, i = _uvarint(frame, i)
                size, i = _uvarint(frame, i)
                i += size
        if version >= 3:  # transactional_id
            if flexible:
                n, i = _uvarint(frame, i)
                i += max(n - 1, 0)
            else:
                n = int.from_bytes(frame[i:i + 2], "big", signed=True)
                i += 2 + max(n, 0)
        return int.from_bytes(frame[i:i + 2], "big", signed=True)
    except IndexError:
        return None


def check(path: Path):
    """Checks one fixture; returns (header, problems, Counter of (api, version), stats)."""
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    problems = []
    if set(header) != {"client", "scenario", "tool"}:
        problems.append(f"header keys {sorted(header)}")
    records = [json.loads(ln) for ln in lines[1:]]
    pending = {}      # conn -> list of (correlation id, api, version, frame) in order
    seen = Counter()
    stats = Counter()
    last_t = 0.0
    for n, r in enumerate(records, start=2):
        if r["t"] < last_t:
            problems.append(f"line {n}: time goes back")
        last_t = r["t"]
        frame = bytes.fromhex(r["frame"])
        queue = pending.setdefault(r["conn"], [])
        if r["dir"] == "req":
            api, version = int.from_bytes(frame[0:2], "big"), int.from_bytes(frame[2:4], "big")
            seen[(api, version)] += 1
            stats["req"] += 1
            queue.append((frame[4:8], api, version, frame, n))
        elif r["dir"] == "resp":
            stats["resp"] += 1
            corr = frame[0:4]
            # Responses come in request order on a connection; Produce acks=0 has none.
            while queue and queue[0][0] != corr and queue[0][1] == 0 and produce_acks(queue[0][3]) == 0:
                stats["acks0"] += 1
                queue.pop(0)
            at = next((k for k, q in enumerate(queue) if q[0] == corr), None)
            if at is None:
                problems.append(f"line {n}: conn {r['conn']} response with correlation id "
                                f"{corr.hex()} answers no open request")
                continue
            for _, api, version, _, m in queue[:at]:
                problems.append(f"line {m}: conn {r['conn']} {API_NAMES.get(api, api)} v{version} "
                                f"got no response, but a later request did (line {n})")
            del queue[:at + 1]
        else:
            problems.append(f"line {n}: dir {r['dir']!r}")
    for conn, queue in pending.items():
        for corr, api, version, frame, n in queue:
            if api == 0 and produce_acks(frame) == 0:
                stats["acks0"] += 1
            else:
                # Every later request on this conn is unanswered too (responses are in
                # order): the connection was closed before the answer.
                stats["cut"] += 1
                stats[f"cut:{API_NAMES.get(api, api)} v{version}"] += 1
    stats["conns"] = len(pending)
    return header, problems, seen, stats


def summarise(path: Path) -> bool:
    header, problems, seen, stats = check(path)
    size = path.stat().st_size
    print(f"\n== {path.name}: {header['client']}")
    print(f"   {size / 1024:.1f} KiB, {stats['conns']} connections, {stats['req']} requests, "
          f"{stats['resp']} responses, {stats['acks0']} Produce acks=0, {stats['cut']} cut by a close"
          + "".join(f"; {k[4:]}" for k in stats if k.startswith("cut:")))
    print("   " + ", ".join(f"{API_NAMES.get(a, '?')}({a}) v{v} x{c}" for (a, v), c in sorted(seen.items())))
    for p in problems:
        print(f"   PROBLEM: {p}")
    return not problems


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clients", nargs="*", help="client names, or `all`")
    ap.add_argument("--check", action="store_true", help="only check and summarise existing fixtures")
    args = ap.parse_args()
    clients = list(CLIENTS) if args.clients == ["all"] or (args.check and not args.clients) else args.clients
    if not clients:
        ap.error("name a client or `all`")
    unknown = [c for c in clients if c not in CLIENTS]
    if unknown:
        ap.error(f"unknown client(s) {unknown}; choose from {', '.join(CLIENTS)} or all")
    failed = []
    for client in clients:
        if not args.check:
            try:
                capture(client)
            except Exception as e:
                log(f"{client}: FAILED: {e}")
                failed.append(client)
                continue
        path = FIXTURES / f"{client}.jsonl"
        if not path.exists():
            log(f"{client}: no fixture at {path}")
            failed.append(client)
        elif not summarise(path):
            failed.append(client)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
