//! The broker as a process: starting one (or a cluster of several) on free loopback ports
//! with fresh data directories (and stopping exactly those pids afterwards), and reading
//! their CPU time and memory from /proc. Also the machine facts recorded beside every
//! figure.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

/// A broker this benchmark started; stopped (SIGTERM, then SIGKILL) and its data
/// directory removed when dropped.
pub struct SpawnedBroker {
    child: Option<Child>,
    pub addr: String,
    pub data_dir: PathBuf,
}

fn free_loopback_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a probe socket")?;
    Ok(listener.local_addr()?.port())
}

impl SpawnedBroker {
    /// Starts `binary serve` on 127.0.0.1 with a new data directory under `parent`, and
    /// waits until it accepts connections.
    pub fn start(binary: &Path, parent: &Path, extra_args: &[String]) -> Result<SpawnedBroker> {
        Self::spawn(binary, parent, &format!("127.0.0.1:{}", free_loopback_port()?), extra_args)
    }

    /// Starts a cluster of `nodes` brokers on 127.0.0.1 (node ids 1..=nodes, every one a
    /// controller voter), each with its own data directory under `parent`, and waits until
    /// each accepts connections. The caller waits for them to register.
    pub fn start_cluster(binary: &Path, parent: &Path, extra_args: &[String], nodes: usize) -> Result<Vec<SpawnedBroker>> {
        let raft_ports = (0..nodes).map(|_| free_loopback_port()).collect::<Result<Vec<u16>>>()?;
        let voters = raft_ports.iter().enumerate().map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1)).collect::<Vec<_>>().join(",");
        let mut started = Vec::with_capacity(nodes);
        for (i, raft_port) in raft_ports.iter().enumerate() {
            let mut args = vec![
                "--node-id".to_string(),
                (i + 1).to_string(),
                "--raft-listen".to_string(),
                format!("127.0.0.1:{raft_port}"),
                "--voters".to_string(),
                voters.clone(),
            ];
            args.extend_from_slice(extra_args);
            // Nodes wait for a majority of voters only after they listen: start them all.
            started.push(Self::spawn(binary, parent, &format!("127.0.0.1:{}", free_loopback_port()?), &args)?);
        }
        Ok(started)
    }

    fn spawn(binary: &Path, parent: &Path, addr: &str, extra_args: &[String]) -> Result<SpawnedBroker> {
        let addr = addr.to_string();
        let data_dir = parent.join(format!("runnel-bench-{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
        let child = Command::new(binary)
            .arg("serve")
            .arg("--listen")
            .arg(&addr)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--log-level")
            .arg("warn")
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut broker = SpawnedBroker { child: Some(child), addr, data_dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(&broker.addr).is_ok() {
                return Ok(broker);
            }
            if let Some(child) = broker.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("the broker exited at start-up with {status}");
                }
            }
            if Instant::now() > deadline {
                bail!("the broker did not listen on {} within 30 s", broker.addr);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGTERM to our child's pid, wait up to 30 s, then SIGKILL; removes the data dir.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                    _ => {
                        eprintln!("runnel-bench: broker pid {pid} ignored SIGTERM for 30 s; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        if self.data_dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.data_dir) {
                eprintln!("runnel-bench: could not remove {}: {e}", self.data_dir.display());
            }
        }
    }
}

impl Drop for SpawnedBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One reading of several processes (the nodes of a cluster) added together: CPU time,
/// RSS, peak RSS and threads are sums.
pub fn sample_all(pids: &[u32]) -> Result<ProcSample> {
    let mut total = ProcSample { cpu_ticks: 0, rss_kb: 0, hwm_kb: 0, threads: 0, at: Instant::now() };
    for pid in pids {
        let s = sample(*pid)?;
        total.cpu_ticks += s.cpu_ticks;
        total.rss_kb += s.rss_kb;
        total.hwm_kb += s.hwm_kb;
        total.threads += s.threads;
    }
    total.at = Instant::now();
    Ok(total)
}

/// Clock ticks per second of /proc/PID/stat times: `getconf CLK_TCK`, or 100 (the value
/// on every Linux architecture in practice) when getconf is unavailable.
pub fn clock_ticks_per_second() -> (f64, &'static str) {
    let out = Command::new("getconf").arg("CLK_TCK").output();
    if let Ok(out) = out {
        if let Ok(s) = String::from_utf8(out.stdout) {
            if let Ok(v) = s.trim().parse::<f64>() {
                if v > 0.0 {
                    return (v, "getconf CLK_TCK");
                }
            }
        }
    }
    (100.0, "assumed 100 (getconf CLK_TCK unavailable)")
}

/// One reading of a process's counters.
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    pub rss_kb: u64,
    /// VmHWM: the peak resident set since start (or since the last reset).
    pub hwm_kb: u64,
    pub threads: u64,
    pub at: Instant,
}

pub fn sample(pid: u32) -> Result<ProcSample> {
    let at = Instant::now();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may contain spaces: split after it.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14 and stime field 15.
    let utime: u64 = fields.get(11).ok_or_else(|| anyhow!("short /proc/{pid}/stat"))?.parse()?;
    let stime: u64 = fields.get(12).ok_or_else(|| anyhow!("short /proc/{pid}/stat"))?.parse()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(ProcSample { cpu_ticks: utime + stime, rss_kb: field("VmRSS:"), hwm_kb: field("VmHWM:"), threads: field("Threads:"), at })
}

/// CPU ticks the whole machine spent busy (everything but idle and iowait), from /proc/stat.
pub fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: u64 = v.iter().take(8).sum();
    Some(total - v.get(3)? - v.get(4)?)
}

/// Resets VmHWM to the current RSS (`echo 5 > /proc/PID/clear_refs`, Linux 4.0+), so the
/// peak of one run is not the peak of an earlier one. Only used on brokers this process
/// started or when asked to with `--reset-peak-rss`.
pub fn reset_peak_rss(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").with_context(|| format!("writing /proc/{pid}/clear_refs"))
}

/// The number of open file descriptors of `pid`, when readable.
pub fn open_fds(pid: u32) -> Option<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd")).ok().map(|d| d.count() as u64)
}

/// The soft limit on open files of `pid` (/proc/PID/limits), when readable.
pub fn max_open_files(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The cost of a measured interval, from two samples.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ProcCost {
    pub cpu_s: f64,
    pub wall_s: f64,
    /// cpu_s / wall_s: cores kept busy on average.
    pub cores: f64,
    pub rss_mb_end: f64,
    pub peak_rss_mb: f64,
    pub threads: u64,
}

pub fn cost(start: &ProcSample, end: &ProcSample, ticks_per_s: f64) -> ProcCost {
    let cpu_s = end.cpu_ticks.saturating_sub(start.cpu_ticks) as f64 / ticks_per_s;
    let wall_s = end.at.duration_since(start.at).as_secs_f64();
    ProcCost {
        cpu_s,
        wall_s,
        cores: if wall_s > 0.0 { cpu_s / wall_s } else { 0.0 },
        rss_mb_end: end.rss_kb as f64 / 1024.0,
        peak_rss_mb: end.hwm_kb.max(start.hwm_kb) as f64 / 1024.0,
        threads: end.threads,
    }
}

/// What the figures were taken on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cores: usize,
    pub mem_total_mb: u64,
    pub cpu_model: String,
    pub kernel: String,
    pub load_avg_at_start: String,
    /// Mean time to append 16 KiB and fdatasync it, measured just before the run in the
    /// directory that holds the broker's data (the temp dir when not spawning).
    #[serde(default)]
    pub fdatasync_16k_ms: Option<f64>,
}

/// Appends 16 KiB and fdatasyncs it 50 times in `dir`; the mean in milliseconds. The disk
/// of a shared machine changes speed with other work, so every run records this.
pub fn fdatasync_probe_ms(dir: &Path) -> Option<f64> {
    use std::io::Write;
    let path = dir.join(format!(".runnel-bench-fsync-probe-{}", std::process::id()));
    let result = (|| -> std::io::Result<f64> {
        let mut f = std::fs::File::create(&path)?;
        let buf = vec![0u8; 16384];
        let start = Instant::now();
        for _ in 0..50 {
            f.write_all(&buf)?;
            f.sync_data()?;
        }
        Ok(start.elapsed().as_secs_f64() * 1000.0 / 50.0)
    })();
    let _ = std::fs::remove_file(&path);
    result.ok()
}

pub fn machine() -> Machine {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_total_mb = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024;
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_string()))
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let load_avg_at_start = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    Machine { cores, mem_total_mb, cpu_model, kernel, load_avg_at_start, fdatasync_16k_ms: None }
}
