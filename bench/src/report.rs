//! Markdown from JSON results: one table per kind of run, the issue's targets with
//! met/missed and by how much, and the exact command line of every run. The prose around
//! it (machine, method, caveats) is written by `bench/run-matrix.sh`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::results::RunRecord;

/// Broker CPU seconds per GB produced with 100-byte records (the issue's target).
const CPU_S_PER_GB_TARGET: f64 = 1.0;
/// p99 produce latency at acks=-1, 50 MB/s, one node.
const P99_TARGET_MS: f64 = 5.0;
const P99_TARGET_RATE_MB_S: f64 = 50.0;
/// Share of the machine's cores the two processes must keep busy to count as CPU-bound.
const SATURATED: f64 = 0.9;
/// Three nodes at acks=-1 against one node at acks=1, same partitions and record size.
const THREE_NODE_SHARE_TARGET: f64 = 0.6;
/// Idle CPU of 10,000 partitions on three nodes, percent of one core (all nodes together).
const IDLE_CPU_TARGET_PERCENT: f64 = 5.0;

fn f(v: f64, digits: usize) -> String {
    if v.is_finite() {
        format!("{v:.digits$}")
    } else {
        "-".into()
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| f(v, digits))
}

pub fn print(files: &[PathBuf]) -> Result<()> {
    let mut runs = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let rec: RunRecord = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        runs.push(rec);
    }
    print!("{}", render(&runs));
    Ok(())
}

fn render(runs: &[RunRecord]) -> String {
    let mut out = String::new();
    let produce: Vec<&RunRecord> = runs.iter().filter(|r| r.produce.is_some()).collect();
    let consume: Vec<&RunRecord> = runs.iter().filter(|r| r.consume.is_some()).collect();
    let latency: Vec<&RunRecord> = runs.iter().filter(|r| r.latency.is_some()).collect();
    let scale: Vec<&RunRecord> = runs.iter().filter(|r| r.partition_scale.is_some()).collect();

    if !produce.is_empty() {
        out.push_str("## Produce throughput\n\n");
        out.push_str("Broker CPU, cores and peak RSS are the sum over the nodes of a cluster.\n\n");
        out.push_str("| nodes | broker settings | acks | partitions | record B | batch B | producers | in flight | records | records/s | MB/s | req p50 ms | req p99 ms | broker CPU s | broker cores | broker CPU s/GB | client cores | machine busy cores | broker peak RSS MB | errors | disk fdatasync ms |\n");
        out.push_str("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in &produce {
            let Some(p) = &r.produce else { continue };
            let i = &r.inputs;
            let b = r.broker.as_ref();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                i.nodes,
                settings(r),
                i.acks,
                i.partitions,
                i.record_size,
                i.batch_size,
                i.producers,
                i.inflight,
                p.records,
                f(p.records_per_s, 0),
                f(p.mb_per_s, 1),
                lat(p.request_latency.samples, p.request_latency.p50_ms),
                lat(p.request_latency.samples, p.request_latency.p99_ms),
                opt(b.map(|b| b.cpu_s), 2),
                opt(b.map(|b| b.cores), 2),
                opt(p.broker_cpu_s_per_gb, 2),
                f(r.client.cores, 2),
                opt(r.machine_busy_cores, 2),
                opt(b.map(|b| b.peak_rss_mb), 0),
                p.errors,
                opt(r.machine.fdatasync_16k_ms, 2),
            );
        }
        out.push('\n');
    }

    if !consume.is_empty() {
        out.push_str("## Consume throughput (one node, offset 0 to the end)\n\n");
        out.push_str("| broker settings | partitions | record B | records | records/s | MB/s | fetches | fetch p50 ms | fetch p99 ms | broker CPU s | broker cores | broker CPU s/GB | client cores | broker peak RSS MB |\n");
        out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in &consume {
            let Some(c) = &r.consume else { continue };
            let i = &r.inputs;
            let b = r.broker.as_ref();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                settings(r),
                i.partitions,
                i.record_size,
                c.records,
                f(c.records_per_s, 0),
                f(c.mb_per_s, 1),
                c.requests,
                lat(c.request_latency.samples, c.request_latency.p50_ms),
                lat(c.request_latency.samples, c.request_latency.p99_ms),
                opt(b.map(|b| b.cpu_s), 2),
                opt(b.map(|b| b.cores), 2),
                opt(c.broker_cpu_s_per_gb, 2),
                f(r.client.cores, 2),
                opt(b.map(|b| b.peak_rss_mb), 0),
            );
        }
        out.push('\n');
    }

    if !latency.is_empty() {
        out.push_str("## Latency at a fixed produce rate (one node)\n\n");
        out.push_str("Produce latency: record creation to acknowledgement (includes linger and waiting for an in-flight slot). End-to-end: record creation to receipt by a consumer long-polling Fetch (min_bytes 1).\n\n");
        out.push_str("| broker settings | acks | partitions | record B | batch B | linger ms | target MB/s | achieved MB/s | produce p50 ms | p99 | p99.9 | max | e2e p50 ms | p99 | p99.9 | max | broker cores | broker CPU s/GB | disk fdatasync ms |\n");
        out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in &latency {
            let Some(l) = &r.latency else { continue };
            let i = &r.inputs;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {}{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                settings(r),
                i.acks,
                i.partitions,
                i.record_size,
                i.batch_size,
                i.linger_ms,
                f(l.target_mb_per_s, 0),
                f(l.achieved_mb_per_s, 1),
                if l.rate_met { "" } else { " (not reached)" },
                f(l.produce.p50_ms, 2),
                f(l.produce.p99_ms, 2),
                f(l.produce.p999_ms, 2),
                f(l.produce.max_ms, 2),
                f(l.end_to_end.p50_ms, 2),
                f(l.end_to_end.p99_ms, 2),
                f(l.end_to_end.p999_ms, 2),
                f(l.end_to_end.max_ms, 2),
                opt(r.broker.as_ref().map(|b| b.cores), 2),
                opt(l.broker_cpu_s_per_gb, 2),
                opt(r.machine.fdatasync_16k_ms, 2),
            );
        }
        out.push('\n');
    }

    if !scale.is_empty() {
        out.push_str("## Partition scale\n\n");
        out.push_str("Idle CPU is in percent of one core, summed over the nodes of a cluster (RSS, threads, open files and the data directory too).\n\n");
        out.push_str("| nodes | partitions | topics | CreateTopics s | all leaders s | idle CPU % | RSS MB | peak RSS MB | threads | open fds (limit) | data dir MB | data dir files | Metadata p50 ms | Metadata p99 ms | Metadata response B |\n");
        out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        let mut not_run = Vec::new();
        for r in &scale {
            let Some(s) = &r.partition_scale else { continue };
            if let Some(reason) = &s.not_run_reason {
                let _ = writeln!(out, "| {} | {} | not run (below) |{}", r.inputs.nodes, s.partitions, " - |".repeat(12));
                not_run.push(format!(
                    "- {} partitions on {} node(s) were not run: {reason}; about {} would fit.\n",
                    s.partitions,
                    r.inputs.nodes,
                    s.max_feasible_partitions.unwrap_or(0)
                ));
                continue;
            }
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.inputs.nodes,
                s.partitions,
                s.topics,
                f(s.create_s, 1),
                f(s.all_leaders_s, 1),
                opt(s.idle_cpu_percent, 1),
                opt(s.rss_mb, 0),
                opt(s.peak_rss_mb, 0),
                s.threads.map_or("-".into(), |t| t.to_string()),
                match (s.open_fds, s.max_open_files) {
                    (Some(n), Some(l)) => format!("{n} ({l})"),
                    (Some(n), None) => n.to_string(),
                    _ => "-".into(),
                },
                opt(s.data_dir_mb, 1),
                s.data_dir_files.map_or("-".into(), |t| t.to_string()),
                f(s.metadata.p50_ms, 2),
                f(s.metadata.p99_ms, 2),
                s.metadata_response_bytes,
            );
        }
        out.push('\n');
        if !not_run.is_empty() {
            out.push_str(&not_run.concat());
            out.push('\n');
        }
    }

    out.push_str(&targets(&produce, &latency, &scale));
    // Profile findings are written by hand; the generated page carries them along.
    let notes = Path::new(env!("CARGO_MANIFEST_DIR")).join("profile-notes.md");
    if let Ok(text) = std::fs::read_to_string(&notes) {
        out.push_str(&text);
        out.push('\n');
    }

    out.push_str("## Exact command lines\n\n```sh\n");
    for r in runs {
        let fsync = r.machine.fdatasync_16k_ms.map_or(String::new(), |ms| format!(", 16 KiB fdatasync {ms:.2} ms"));
        let _ = writeln!(out, "# {} (load average {}{fsync})\n{}", r.kind, r.machine.load_avg_at_start, r.command_line);
    }
    out.push_str("```\n");
    out
}

/// The broker's non-default settings of a run, or "defaults".
fn settings(r: &RunRecord) -> String {
    if r.inputs.broker_args.is_empty() {
        "defaults".into()
    } else {
        format!("`{}`", r.inputs.broker_args.join(" "))
    }
}

/// Targets are judged on runs with the broker's default settings.
fn default_settings(r: &&&RunRecord) -> bool {
    r.inputs.broker_args.is_empty()
}

fn lat(samples: u64, v: f64) -> String {
    if samples == 0 {
        "-".into()
    } else {
        f(v, 2)
    }
}

fn where_(r: &RunRecord) -> String {
    format!("acks={} p={} size={}", r.inputs.acks, r.inputs.partitions, r.inputs.record_size)
}

fn targets(all_produce: &[&RunRecord], all_latency: &[&RunRecord], scale: &[&RunRecord]) -> String {
    let mut out = String::from("## Targets\n\nJudged on the runs with the broker's default settings (`log_fsync: always`); runs with other settings are listed for reference.\n\n");
    let produce: Vec<&RunRecord> = all_produce.iter().copied().filter(|r| r.inputs.nodes <= 1).collect();
    let latency: Vec<&RunRecord> = all_latency.iter().copied().filter(|r| r.inputs.nodes <= 1).collect();
    let (produce_default, produce_other): (Vec<&&RunRecord>, Vec<&&RunRecord>) = produce.iter().partition(default_settings);
    let (latency_default, latency_other): (Vec<&&RunRecord>, Vec<&&RunRecord>) = latency.iter().partition(default_settings);

    // 1. Broker CPU per GB produced, 100-byte records (and 1 KiB for reference).
    let cpu_per_gb = |runs: &[&&RunRecord], size: usize| -> Vec<(String, f64)> {
        runs.iter()
            .filter(|r| r.inputs.record_size == size && r.inputs.acks != 0)
            .filter_map(|r| r.produce.as_ref()?.broker_cpu_s_per_gb.map(|v| (where_(r), v)))
            .collect()
    };
    let list = |figures: &[(String, f64)]| figures.iter().map(|(w, v)| format!("{w}: {v:.2}")).collect::<Vec<_>>().join("; ");
    let label = format!("Broker at most {CPU_S_PER_GB_TARGET} CPU-second per GB produced, 100-byte records (one node)");
    let figures = cpu_per_gb(&produce_default, 100);
    if figures.is_empty() {
        let _ = writeln!(out, "- **{label}**: not measured (no produce run with a broker pid).");
    } else {
        let worst = figures.iter().cloned().fold((String::new(), f64::MIN), |a, b| if b.1 > a.1 { b } else { a });
        let best = figures.iter().cloned().fold((String::new(), f64::MAX), |a, b| if b.1 < a.1 { b } else { a });
        let met = figures.iter().filter(|(_, v)| *v <= CPU_S_PER_GB_TARGET).count();
        let verdict = if met == figures.len() {
            format!("**met** in all {} runs (worst {:.2} s/GB, {:.0} % of the budget)", figures.len(), worst.1, worst.1 / CPU_S_PER_GB_TARGET * 100.0)
        } else {
            format!(
                "**missed** in {} of {} runs: worst {:.2} s/GB at {} ({:.1}× the target), best {:.2} s/GB at {} ({:.1}×)",
                figures.len() - met,
                figures.len(),
                worst.1,
                worst.0,
                worst.1 / CPU_S_PER_GB_TARGET,
                best.1,
                best.0,
                best.1 / CPU_S_PER_GB_TARGET,
            )
        };
        let _ = writeln!(out, "- **{label}**: {verdict}. Per run (s/GB): {}.", list(&figures));
    }
    let kib = cpu_per_gb(&produce_default, 1024);
    if !kib.is_empty() {
        let _ = writeln!(out, "  - 1 KiB records (reported, no target): {}.", list(&kib));
    }
    for size in [100usize, 1024] {
        let mut by_settings: Vec<(String, Vec<(String, f64)>)> = Vec::new();
        for r in &produce_other {
            let f = cpu_per_gb(&[*r], size);
            if f.is_empty() {
                continue;
            }
            match by_settings.iter_mut().find(|(s, _)| *s == settings(r)) {
                Some((_, v)) => v.extend(f),
                None => by_settings.push((settings(r), f)),
            }
        }
        for (s, f) in by_settings {
            let _ = writeln!(out, "  - For reference, {s}, {size}-byte records: {}.", list(&f));
        }
    }

    // 2. Client, not broker, is the bottleneck at acks=1 and acks=-1 on one node.
    let bottleneck = |r: &RunRecord| -> Option<(bool, String)> {
        let (b, p) = (r.broker.as_ref()?, r.produce.as_ref()?);
        let cores = r.machine.cores.max(1) as f64;
        let busy = r.machine_busy_cores.unwrap_or(b.cores + r.client.cores);
        let (client_bound, verdict) = if r.client.cpu_s > b.cpu_s && busy >= SATURATED * cores {
            (true, "client")
        } else if busy >= SATURATED * cores {
            (false, "broker (CPU: the machine's cores were busy)")
        } else {
            (false, "broker (cores not saturated: the producer waits for acknowledgements)")
        };
        Some((
            client_bound,
            format!(
                "p={} size={}: {:.1} MB/s, broker {:.2} cores, client {:.2} cores, machine {:.2} of {} cores busy → {verdict}",
                r.inputs.partitions, r.inputs.record_size, p.mb_per_s, b.cores, r.client.cores, busy, r.machine.cores
            ),
        ))
    };
    for acks in [1i16, -1] {
        let label = format!("Client, not broker, is the bottleneck at acks={acks} (one node)");
        let judged: Vec<(bool, String)> = produce_default.iter().filter(|r| r.inputs.acks == acks).filter_map(|r| bottleneck(r)).collect();
        if judged.is_empty() {
            let _ = writeln!(out, "- **{label}**: not measured.");
            continue;
        }
        let client_bound = judged.iter().filter(|(c, _)| *c).count();
        let verdict = if client_bound == judged.len() {
            "**met**".to_string()
        } else {
            format!("**missed** in {} of {} runs", judged.len() - client_bound, judged.len())
        };
        let detail = judged.iter().map(|(_, d)| d.as_str()).collect::<Vec<_>>().join("; ");
        let _ = writeln!(out, "- **{label}**: {verdict}. {detail}.");
        for r in produce_other.iter().filter(|r| r.inputs.acks == acks) {
            if let Some((_, d)) = bottleneck(r) {
                let _ = writeln!(out, "  - For reference, {}: {d}.", settings(r));
            }
        }
    }

    // 3. p99 produce latency at acks=-1 below 5 ms at 50 MB/s.
    let label = format!("p99 produce latency at acks=-1 below {P99_TARGET_MS} ms at {P99_TARGET_RATE_MB_S} MB/s (one node)");
    let at_rate = |r: &RunRecord| r.inputs.acks == -1 && r.latency.as_ref().is_some_and(|l| l.target_mb_per_s == P99_TARGET_RATE_MB_S);
    let latency_verdict = |r: &RunRecord| -> String {
        let Some(l) = &r.latency else { return String::new() };
        let verdict = if !l.rate_met {
            format!("**missed**: the rate was not reached ({:.1} of {P99_TARGET_RATE_MB_S} MB/s; p99 {:.2} ms)", l.achieved_mb_per_s, l.produce.p99_ms)
        } else if l.produce.p99_ms < P99_TARGET_MS {
            format!("**met**: p99 {:.2} ms ({:.0} % of the budget)", l.produce.p99_ms, l.produce.p99_ms / P99_TARGET_MS * 100.0)
        } else {
            format!("**missed**: p99 {:.2} ms, {:.1}× the target", l.produce.p99_ms, l.produce.p99_ms / P99_TARGET_MS)
        };
        format!("{}: {verdict}; end-to-end p99 {:.2} ms", where_(r), l.end_to_end.p99_ms)
    };
    let judged: Vec<String> = latency_default.iter().filter(|r| at_rate(r)).map(|r| latency_verdict(r)).collect();
    if judged.is_empty() {
        let _ = writeln!(out, "- **{label}**: not measured.");
    } else {
        let _ = writeln!(out, "- **{label}**: {}.", judged.join("; "));
    }
    for r in latency_other.iter().filter(|r| at_rate(r)) {
        let _ = writeln!(out, "  - For reference, {}: {}.", settings(r), latency_verdict(r).replace("**", ""));
    }
    out.push_str(&three_node_targets(all_produce, scale));
    out.push('\n');
    let _ = writeln!(
        out,
        "How the bottleneck is judged: a run is client-bound when the benchmark process used more CPU than the broker while the machine's cores were at least {:.0} % busy (all processes, from /proc/stat). Otherwise the broker limits it: by CPU when the cores were busy, else by the time it takes to acknowledge (the producer has all its requests in flight and waits).\n",
        SATURATED * 100.0
    );
    out
}


/// The three-node targets: acks=-1 throughput against one node's acks=1 with the same
/// partitions and record size, and the idle CPU of 10,000 partitions.
fn three_node_targets(produce: &[&RunRecord], scale: &[&RunRecord]) -> String {
    let mut out = String::new();
    // Default settings, apart from the replication factor a cluster run sets.
    let default = |r: &RunRecord| r.inputs.broker_args.iter().all(|a| a.starts_with("--default-replication-factor"));
    let label = format!("Three nodes at acks=-1 reach at least {:.0} % of one node's acks=1 throughput", THREE_NODE_SHARE_TARGET * 100.0);
    let mut pairs = Vec::new();
    for r in produce.iter().filter(|r| r.inputs.nodes == 3 && r.inputs.acks == -1 && default(r)) {
        let one = produce.iter().find(|o| {
            default(o) &&
            o.inputs.nodes <= 1 && o.inputs.acks == 1 && o.inputs.partitions == r.inputs.partitions && o.inputs.record_size == r.inputs.record_size
        });
        if let (Some(three), Some(one)) = (r.produce.as_ref(), one.and_then(|o| o.produce.as_ref())) {
            if one.mb_per_s > 0.0 {
                pairs.push((format!("p={} size={}", r.inputs.partitions, r.inputs.record_size), three.mb_per_s, one.mb_per_s));
            }
        }
    }
    if pairs.is_empty() {
        let _ = writeln!(out, "- **{label}**: not measured (no three-node acks=-1 run with a matching one-node acks=1 run).");
    } else {
        let met = pairs.iter().filter(|(_, t, o)| t / o >= THREE_NODE_SHARE_TARGET).count();
        let verdict = if met == pairs.len() { "**met**".to_string() } else { format!("**missed** in {} of {} runs", pairs.len() - met, pairs.len()) };
        let detail = pairs
            .iter()
            .map(|(w, t, o)| format!("{w}: {t:.1} of {o:.1} MB/s ({:.0} %)", t / o * 100.0))
            .collect::<Vec<_>>()
            .join("; ");
        let _ = writeln!(out, "- **{label}**: {verdict}. {detail}. The three brokers and the client share the machine's cores and disk, and each broker writes and fsyncs every byte.");
    }
    let label = format!("10,000 partitions on three nodes idle below {IDLE_CPU_TARGET_PERCENT} % CPU (of one core, all nodes together)");
    let runs: Vec<&RunRecord> = scale.iter().copied().filter(|r| r.inputs.nodes == 3).collect();
    let ran: Vec<(usize, f64)> = runs
        .iter()
        .filter_map(|r| r.partition_scale.as_ref())
        .filter_map(|s| s.idle_cpu_percent.map(|c| (s.partitions, c)))
        .collect();
    let skipped: Vec<String> = runs
        .iter()
        .filter_map(|r| r.partition_scale.as_ref())
        .filter(|s| s.not_run_reason.is_some())
        .map(|s| format!("{} partitions not run ({})", s.partitions, s.not_run_reason.clone().unwrap_or_default()))
        .collect();
    let figures = ran.iter().map(|(p, c)| format!("{p} partitions: {c:.1} %")).collect::<Vec<_>>().join("; ");
    match ran.iter().find(|(p, _)| *p >= 10_000) {
        Some((_, c)) if *c < IDLE_CPU_TARGET_PERCENT => {
            let _ = writeln!(out, "- **{label}**: **met** ({figures}).");
        }
        Some((_, c)) => {
            let _ = writeln!(out, "- **{label}**: **missed**: {c:.1} %, {:.1}× the target ({figures}).", c / IDLE_CPU_TARGET_PERCENT);
        }
        None if ran.is_empty() => {
            let _ = writeln!(out, "- **{label}**: not measured{}.", if skipped.is_empty() { String::new() } else { format!(": {}", skipped.join("; ")) });
        }
        None => {
            let _ = writeln!(
                out,
                "- **{label}**: not measured at 10,000{}; measured: {figures}.",
                if skipped.is_empty() { String::new() } else { format!(" ({})", skipped.join("; ")) }
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{Inputs, PartitionScaleFigures, ThroughputFigures};

    fn run(nodes: usize, acks: i16, partitions: i32, mb_per_s: f64, broker_args: &[&str]) -> RunRecord {
        RunRecord {
            kind: "produce".into(),
            command_line: String::new(),
            started_unix_s: 0,
            machine: crate::broker_proc::machine(),
            inputs: Inputs {
                nodes,
                acks,
                partitions,
                record_size: 1024,
                broker_args: broker_args.iter().map(|a| a.to_string()).collect(),
                ..Inputs::default()
            },
            broker_source: "spawned".into(),
            broker: None,
            client: Default::default(),
            machine_busy_cores: None,
            clk_tck: 100.0,
            clk_tck_source: String::new(),
            produce: Some(ThroughputFigures { mb_per_s, ..ThroughputFigures::default() }),
            consume: None,
            latency: None,
            partition_scale: None,
            notes: Vec::new(),
        }
    }

    #[test]
    fn three_nodes_are_judged_against_one_node_at_acks_1_with_the_same_shape() {
        let rf = ["--default-replication-factor=3"];
        let one_fast = run(1, 1, 16, 100.0, &[]);
        let one_other_acks = run(1, -1, 16, 10.0, &[]);
        let three = run(3, -1, 16, 65.0, &rf);
        let text = three_node_targets(&[&one_other_acks, &one_fast, &three], &[]);
        assert!(text.contains("**met**") && text.contains("65.0 of 100.0 MB/s (65 %)"), "{text}");
        let slow = run(3, -1, 16, 50.0, &rf);
        let text = three_node_targets(&[&one_fast, &slow], &[]);
        assert!(text.contains("**missed** in 1 of 1 runs") && text.contains("(50 %)"), "{text}");
        // A three-node run without its one-node counterpart is not judged.
        let text = three_node_targets(&[&run(3, -1, 1, 50.0, &rf)], &[]);
        assert!(text.contains("not measured (no three-node"), "{text}");
    }

    #[test]
    fn idle_cpu_of_three_nodes_is_judged_at_ten_thousand_partitions_only() {
        let scale = |partitions: usize, cpu: Option<f64>, reason: Option<&str>| {
            let mut r = run(3, -1, 0, 0.0, &[]);
            r.produce = None;
            r.partition_scale = Some(PartitionScaleFigures {
                partitions,
                idle_cpu_percent: cpu,
                not_run_reason: reason.map(String::from),
                ..PartitionScaleFigures::default()
            });
            r
        };
        let (small, big) = (scale(1000, Some(4.0), None), scale(10_000, None, Some("open files")));
        let text = three_node_targets(&[], &[&small, &big]);
        assert!(text.contains("not measured at 10,000 (10000 partitions not run (open files)); measured: 1000 partitions: 4.0 %"), "{text}");
        let ran = scale(10_000, Some(12.0), None);
        let text = three_node_targets(&[], &[&small, &ran]);
        assert!(text.contains("**missed**: 12.0 %, 2.4× the target"), "{text}");
    }
}
