#!/usr/bin/env bash
# Runs Runnel's standard benchmark matrix with runnel-bench and writes docs/benchmarks.md.
#
# One node, each run on its own freshly started broker (--spawn): produce at acks=1 and
# acks=-1 x 1 and 16 partitions x 100-byte and 1 KiB records; produce and end-to-end
# latency at 5 and 50 MB/s; for reference the same with --log-fsync=never; consume of
# 1 GB; partition scale at 1,000 and 10,000 partitions. Three nodes (a cluster spawned
# with --nodes 3, replication factor 3): produce at acks=-1 x 1 and 16 partitions x
# 100-byte and 1 KiB records, and partition scale at 1,000 and 10,000 partitions.
#
# Environment:
#   RUNNEL_BENCH_SKIP_BUILD=1     use the binaries already in $CARGO_TARGET_DIR/release
#   RUNNEL_BENCH_DURATION_S=8     seconds per produce and latency run
#   RUNNEL_BENCH_DATA_DIR=DIR     where spawned brokers keep their data (default: $TMPDIR or /tmp)
#   RUNNEL_BENCH_OUT=FILE         the Markdown written (default: docs/benchmarks.md)
#   RUNNEL_BENCH_NOTE='text'      a sentence added to the machine section (e.g. what else ran)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${RUNNEL_BENCH_OUT:-$ROOT/docs/benchmarks.md}
DURATION=${RUNNEL_BENCH_DURATION_S:-8}
DATA_PARENT=${RUNNEL_BENCH_DATA_DIR:-${TMPDIR:-/tmp}}
NOTE=${RUNNEL_BENCH_NOTE:-}

if [ "${RUNNEL_BENCH_SKIP_BUILD:-0}" != 1 ]; then
  (cd "$ROOT" && cargo build --release -p runnel -p runnel-bench)
fi

# Work in a scratch directory holding copies of both binaries, so that a rebuild while the
# matrix runs cannot swap the broker under it, and so the recorded command lines are short.
WORK=$(mktemp -d "${TMPDIR:-/tmp}/runnel-matrix.XXXXXX")
cp "$TARGET_DIR/release/runnel" "$TARGET_DIR/release/runnel-bench" "$WORK/"
cd "$WORK"
echo "runnel-bench matrix: results in $WORK"

SPAWN=(--spawn ./runnel)
if [ -n "${RUNNEL_BENCH_DATA_DIR:-}" ]; then
  SPAWN+=(--spawn-dir "$DATA_PARENT")
fi

# Machine facts, taken before the runs.
started=$(date -u +"%Y-%m-%d %H:%M UTC")
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$ROOT" status --porcelain -- broker 2>/dev/null)" ]; then commit="$commit (broker/ modified)"; fi
cores=$(nproc)
mem=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
kernel=$(uname -r)
disk=$(df -hT "$DATA_PARENT" | awk 'NR == 2 { printf "%s (%s), %s total, %s free", $1, $2, $3, $5 }')
fd_soft=$(ulimit -Sn)
fd_hard=$(ulimit -Hn)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
# What one durable 16 KiB append costs on this disk: 200 writes with O_DSYNC.
probe="$DATA_PARENT/runnel-fsync-probe.$$"
fsync_ms=$(dd if=/dev/zero of="$probe" bs=16k count=200 oflag=dsync 2>&1 |
  awk '/copied/ { for (i = 1; i <= NF; i++) if ($i ~ /^s,?$/) { printf "%.2f", $(i - 1) * 1000 / 200; exit } }')
rm -f "$probe"

run() {
  local name=$1
  shift
  echo "+ runnel-bench $*" >>bench.log
  ./runnel-bench "$@" --json "$name.json" 2>>bench.log | tee -a rows.txt
}

# Runs with the default log_fsync: always go first: runs with --log-fsync=never leave
# gigabytes of dirty pages whose writeback would slow the fsyncs of later runs.
sync
echo "== produce throughput (one node)"
for acks in 1 -1; do
  for p in 1 16; do
    for size in 100 1024; do
      run "$(printf '1-produce-acks%s-p%02d-s%04d' "$acks" "$p" "$size")" produce "${SPAWN[@]}" --acks "$acks" --partitions "$p" --record-size "$size" --duration-s "$DURATION"
    done
  done
done

echo "== latency at a fixed rate (one node, 1 KiB records)"
for rate in 5 50; do
  for p in 1 16; do
    run "$(printf '2-latency-acks-1-r%02d-p%02d' "$rate" "$p")" latency "${SPAWN[@]}" --acks -1 --partitions "$p" --record-size 1024 --rate-mbps "$rate" --duration-s "$DURATION"
  done
done
run "2-latency-acks1-r50-p16" latency "${SPAWN[@]}" --acks 1 --partitions 16 --record-size 1024 --rate-mbps 50 --duration-s "$DURATION"

echo "== for reference: --log-fsync=never (Kafka's default; no fsync on the write path)"
for p in 1 16; do
  for size in 100 1024; do
    run "$(printf '3-produce-nofsync-p%02d-s%04d' "$p" "$size")" produce "${SPAWN[@]}" --broker-arg=--log-fsync=never --acks -1 --partitions "$p" --record-size "$size" --duration-s "$DURATION"
  done
done
run "4-latency-nofsync-r50-p16" latency "${SPAWN[@]}" --broker-arg=--log-fsync=never --acks -1 --partitions 16 --record-size 1024 --rate-mbps 50 --duration-s "$DURATION"

echo "== consume throughput (one node, 1 GB of record values; filled with --log-fsync=never to save time)"
for p in 1 16; do
  for size in 100 1024; do
    run "$(printf '5-consume-p%02d-s%04d' "$p" "$size")" consume "${SPAWN[@]}" --broker-arg=--log-fsync=never --acks 1 --partitions "$p" --record-size "$size" --records $((1000000000 / size))
  done
done

echo "== partition scale (one node)"
run "6-partitions-01000" partitions "${SPAWN[@]}" --partitions 1000
run "6-partitions-10000" partitions "${SPAWN[@]}" --partitions 10000

echo "== three nodes, acks=-1 (replication factor 3)"
THREE=("${SPAWN[@]}" --nodes 3 --broker-arg=--default-replication-factor=3)
for p in 1 16; do
  for size in 100 1024; do
    run "$(printf '7-produce-3nodes-acks-1-p%02d-s%04d' "$p" "$size")" produce "${THREE[@]}" --acks -1 --partitions "$p" --record-size "$size" --duration-s "$DURATION"
  done
done

echo "== partition scale (three nodes, replication factor 3)"
# Idle partition groups go quiet after 2 s without writes, a few hundred at a time:
# settle longer than on one node before idle CPU is measured.
run "8-partitions-3nodes-01000" partitions "${THREE[@]}" --partitions 1000 --settle-s 15
run "8-partitions-3nodes-10000" partitions "${THREE[@]}" --partitions 10000 --settle-s 15
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

{
  cat <<EOF
# Benchmarks

Generated by \`bench/run-matrix.sh\` on $started from commit $commit; edit the script or
\`bench/src/report.rs\`, not this file. Every figure comes from \`runnel-bench\`
(\`bench/\`), a native Kafka client built on \`kafka-protocol\`; each run starts its own
broker with a fresh data directory on a free 127.0.0.1 port, measures it and stops it.

## Machine

| | |
|---|---|
| cores | $cores |
| memory | $mem |
| CPU | $cpu |
| kernel | $kernel |
| data directory disk | $disk |
| one 16 KiB write with O_DSYNC (\`dd oflag=dsync\`, mean of 200) | $fsync_ms ms |
| open files, soft / hard limit | $fd_soft / $fd_hard |
| load average at start / end | $load_start / $load_end |

The broker and the benchmark client run on the same machine and share its $cores cores.
The machine is shared: other processes may have run during the matrix, so figures can
move between runs of the same configuration.${NOTE:+ $NOTE}

## Method

- **Produce**: one connection per producer, 5 Produce requests in flight, each request one
  16 KiB batch (Kafka's default \`batch.size\`) per partition for as many partitions as fit
  in 1 MiB; batches are v2, uncompressed, records with no key and a value of the record
  size, pre-encoded once (throughput runs send the same bytes over and over). Records/s
  and MB/s count acknowledged records from the first send to the last acknowledgement;
  "req p50/p99" is per Produce request, send to response.
- **Consume**: one connection per leader, one Fetch in flight (max_bytes 50 MiB,
  partition_max_bytes 8 MiB), from offset 0 to the end offset at the start, counting
  records from batch headers. The topic is filled first (not measured), so the data is in
  the page cache.
- **Latency**: records are created at a fixed rate, each value starting with its intended
  creation time, batched like Kafka's producer (a batch goes when full or after
  \`linger.ms\` = 5); a consumer long-polls Fetch (min_bytes 1, max_wait 100 ms) and
  decodes every record. Produce latency is creation to acknowledgement, end-to-end is
  creation to receipt. A producer that falls behind keeps the intended times, so falling
  behind shows as latency, not as a lower rate.
- **Broker cost**: utime + stime of the broker's pid from \`/proc/PID/stat\`
  (CLK_TCK from \`getconf CLK_TCK\`) over the measured interval; "cores" is CPU seconds
  per wall second. Peak RSS is VmHWM from \`/proc/PID/status\`, reset before the interval
  (\`/proc/PID/clear_refs\`). "client cores" is the benchmark process itself.
- **Disk**: "disk fdatasync ms" is the mean of 50 appends of 16 KiB, each followed by
  fdatasync, in the data directory's filesystem just before the run. The disk of a shared
  machine changes speed with other work, and with \`log_fsync: always\` acks=-1 figures
  follow it.
- **Units**: MB and GB are 10^6 and 10^9 bytes of record values (payload); batch and
  protocol overhead is not counted. Per GB figures divide broker CPU seconds by GB moved.
- **acks**: on one node Runnel answers acks=1 and acks=-1 at the same point (after the
  raft commit, fsynced with the default \`log_fsync: always\`), so their rows differ only
  by noise. With followers acks=1 answers after the leader's own append and fsync.
- **Partition scale**: topics of 100 partitions created 10 topics per CreateTopics
  request; then idle broker CPU over 10 s (after 5 s of settling), RSS, threads, open
  files, and 50 sequential Metadata requests for all topics. The first CreateTopics
  request goes alone and measures open files per partition while all are open; beyond
  its budget (half its open-file limit) the broker closes log files not in use.

## Three nodes

Rows with 3 nodes come from a cluster of three broker processes on this same machine
(\`--nodes 3\`: node ids 1 to 3, all controller voters, every topic with replication
factor 3), spawned fresh for each run. Broker CPU, cores, RSS, threads and open files are
the sums over the three processes. Producers send each partition's batches to its leader;
acks=-1 is answered once two of the three replicas have the batch fsynced. Three brokers
that each write and fsync every byte share the two cores and the disk with the client, so
this measures the cost of replication on one machine, not a cluster of three machines.

EOF
  ./runnel-bench report ./*.json
  cat <<EOF

## Reproduce

\`\`\`sh
bench/run-matrix.sh                       # builds release, runs everything, rewrites this page
RUNNEL_BENCH_SKIP_BUILD=1 bench/run-matrix.sh
target/release/runnel-bench produce --spawn target/release/runnel --acks -1 --partitions 16 --record-size 100 --duration-s 8
target/release/runnel-bench produce --bootstrap 127.0.0.1:9092 --broker-pid \$(pgrep -x runnel) --json run.json
target/release/runnel-bench --help
\`\`\`
EOF
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "wrote $OUT (results and logs in $WORK)"
