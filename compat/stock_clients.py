"""Runners for the stock-client programs (kafkajs in compat/js, sarama in compat/go) and the
checks shared by their tests. Each program prints one JSON object; see compat/js/roundtrip.js
and compat/go/src/saramacompat/main.go for the modes and the records they produce."""

import fcntl
import json
import os
import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

COMPAT = Path(__file__).resolve().parent
JS_DIR = COMPAT / "js"
GO_DIR = COMPAT / "go"
GO_MAIN = GO_DIR / "src" / "saramacompat" / "main.go"
# Debian's golang-github-shopify-sarama-dev and its dependencies live here.
DEBIAN_GOPATH = "/usr/share/gocode"

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
PARTITIONS = 3
RECORDS_PER_CODEC = 12


class ClientRunError(AssertionError):
    pass


def broker_log(broker, n=3000):
    """The end of the broker's log for a failure message, without colour codes and without
    openraft's routine lines."""
    if broker is None:
        return ""
    text = re.sub(r"\x1b\[[0-9;]*m", "", broker.log_tail(400_000))
    lines = [ln for ln in text.splitlines() if "openraft" not in ln]
    return "\nbroker log:\n" + "\n".join(lines)[-n:]


def _run(cmd, cwd, timeout, broker=None, env=None):
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        raise ClientRunError(
            f"{cmd} did not finish within {timeout}s\nstderr:\n{(e.stderr or b'').decode(errors='replace')[-3000:]}"
            + broker_log(broker)) from None
    stderr = proc.stderr.decode(errors="replace")
    if proc.returncode != 0:
        raise ClientRunError(
            f"{cmd} exited with {proc.returncode}\nstderr:\n{stderr[-3000:]}" + broker_log(broker))
    try:
        out = json.loads(proc.stdout)
    except ValueError:
        raise ClientRunError(f"{cmd} printed no JSON: {proc.stdout[-2000:]!r}\nstderr:\n{stderr[-3000:]}") from None
    out["_stderr"] = stderr[-5000:]
    return out


# ---------------------------------------------------------------- kafkajs

def kafkajs_ready():
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (test.sh installs Debian's nodejs and npm)")
    for pkg in ("kafkajs", "snappyjs", "lz4js", "@bokuweb/zstd-wasm"):
        if not (JS_DIR / "node_modules" / pkg / "package.json").exists():
            pytest.fail(f"compat/js/node_modules/{pkg} is missing: run `npm ci` in compat/js (test.sh does)")
    return node


def run_kafkajs(bootstrap, mode, topic, broker=None, timeout=60):
    node = kafkajs_ready()
    return _run([node, "roundtrip.js", bootstrap, mode, topic], JS_DIR, timeout, broker,
                env={**os.environ, "KAFKAJS_NO_PARTITIONER_WARNING": "1"})


def run_kafkajs_txn(bootstrap, mode, topic, broker=None, timeout=90):
    """compat/js/txn.js: idempotent and transactional producers (see its header)."""
    node = kafkajs_ready()
    return _run([node, "txn.js", bootstrap, mode, topic], JS_DIR, timeout, broker,
                env={**os.environ, "KAFKAJS_NO_PARTITIONER_WARNING": "1"})


# ---------------------------------------------------------------- sarama

def _go_env(out_dir):
    env = dict(os.environ)
    env.update({
        "GO111MODULE": "off",
        "GOPATH": f"{DEBIAN_GOPATH}:{GO_DIR}",
        "GOFLAGS": "",
        "CGO_ENABLED": "1",  # sarama's zstd is the cgo binding to libzstd
        "GOCACHE": env.get("GOCACHE") or str(out_dir / "go-build"),
    })
    return env


def sarama_binary():
    """Builds compat/go/src/saramacompat into a cache directory once (again when one of its
    .go files is newer than the binary) and returns its path."""
    go = shutil.which("go")
    if go is None:
        pytest.fail("go is not installed (test.sh installs Debian's golang-go)")
    if not (Path(DEBIAN_GOPATH) / "src/github.com/Shopify/sarama").is_dir():
        pytest.fail("sarama is missing: apt-get install golang-github-shopify-sarama-dev")
    out_dir = Path(os.environ.get("RUNNEL_COMPAT_CACHE", Path.home() / ".cache" / "runnel" / "compat"))
    out_dir.mkdir(parents=True, exist_ok=True)
    binary = out_dir / "saramacompat"
    with open(out_dir / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        newest_source = max(f.stat().st_mtime for f in GO_MAIN.parent.glob("*.go"))
        if binary.exists() and binary.stat().st_mtime >= newest_source:
            return binary
        tmp = out_dir / "saramacompat.tmp"
        proc = subprocess.run([go, "build", "-o", str(tmp), "."], cwd=GO_MAIN.parent,
                              env=_go_env(out_dir), capture_output=True, timeout=600)
        if proc.returncode != 0:
            pytest.fail(f"go build of saramacompat failed:\n{proc.stderr.decode(errors='replace')[-4000:]}")
        tmp.replace(binary)
    return binary


def run_sarama(binary, bootstrap, mode, topic, broker=None, timeout=60):
    return _run([str(binary), bootstrap, mode, topic], COMPAT, timeout, broker)


# ---------------------------------------------------------------- checks

def step_ok(out, name, broker=None):
    """The step's result, failing the test with the client's error if it had one."""
    assert name in out, f"the client program did not run step {name!r}"
    value = out[name]
    if isinstance(value, dict) and "error" in value:
        raise AssertionError(
            f"step {name!r} failed in the client: {value['error']}\n{value.get('stack', '')}\n"
            f"client stderr:\n{out.get('_stderr', '')[-2000:]}" + broker_log(broker))
    return value


def by_partition(produced):
    parts = defaultdict(list)
    for r in produced:
        parts[r["partition"]].append(r)
    return parts


def check_produced(produced):
    """Every record was acknowledged with an offset; per partition the offsets follow the
    order of production, from 0 on a new topic."""
    assert len(produced) == len(CODECS) * RECORDS_PER_CODEC
    parts = by_partition(produced)
    assert sorted(parts) == list(range(PARTITIONS))
    for p, recs in parts.items():
        offsets = [r["offset"] for r in recs]
        assert offsets == list(range(len(recs))), f"partition {p}: offsets in production order {offsets}"


def check_roundtrip(produced, consumed):
    """What was read back is exactly what was produced: per partition the same records in
    the same order at the acknowledged offsets, with key, value, headers and timestamp."""
    parts = by_partition(produced)
    assert sorted(int(p) for p in consumed) == list(range(PARTITIONS))
    for p in range(PARTITIONS):
        want = parts[p]
        got = consumed[str(p)]
        assert got["highWatermark"] == len(want), f"partition {p}: high watermark"
        records = got["records"]
        assert [r["offset"] for r in records] == [w["offset"] for w in want], f"partition {p}: offsets read"
        for w, g in zip(want, records):
            where = f"partition {p} offset {w['offset']} ({w['codec']} record #{w['i']})"
            assert g["key"] == w["key"], f"{where}: key"
            assert g["value"] == w["value"], f"{where}: value"
            assert [list(h) for h in g["headers"]] == [list(h) for h in w["headers"]], f"{where}: headers"
            assert g["timestamp"] == w["timestamp"], f"{where}: timestamp"


def expected_offset_for_timestamp(produced, partition, ts):
    """Kafka's answer: the first offset whose record timestamp is >= ts, else -1."""
    offsets = [r["offset"] for r in produced if r["partition"] == partition and r["timestamp"] >= ts]
    return min(offsets) if offsets else -1


# ---------------------------------------------------------------- consumer groups

def kafkajs_group_member(log_dir, bootstrap, topic, group, name, session_ms=6000):
    """A kafkajs group member process (compat/js/group.js member): see
    group_support.MemberProcess for what it reports."""
    from group_support import MemberProcess
    node = kafkajs_ready()
    return MemberProcess(name, [node, "group.js", bootstrap, "member", topic, group, name, str(session_ms)],
                         JS_DIR, log_dir, env={**os.environ, "KAFKAJS_NO_PARTITIONER_WARNING": "1"})


def run_kafkajs_group_admin(bootstrap, topic, group, steps, broker=None, timeout=60):
    node = kafkajs_ready()
    return _run([node, "group.js", bootstrap, "admin", topic, group, ",".join(steps)], JS_DIR, timeout, broker)


def sarama_group_member(binary, log_dir, bootstrap, topic, group, name, session_ms=6000):
    """A sarama ConsumerGroup member process (saramacompat group-member)."""
    from group_support import MemberProcess
    return MemberProcess(name, [str(binary), bootstrap, "group-member", topic, group, name, str(session_ms)],
                         COMPAT, log_dir)


def run_sarama_group_admin(binary, bootstrap, topic, group, steps, broker=None, timeout=60):
    return _run([str(binary), bootstrap, "group-admin", topic, group, ",".join(steps)], COMPAT, timeout, broker)
