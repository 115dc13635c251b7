//! `meldnet-bench ingest`: a real hub and several node processes over mTLS on
//! loopback. Phase 1: the nodes (having signed before the clock starts) push
//! N reports as fast as the protocol allows; the clock stops at the last
//! receipt, and a receipt is only sent after its report, decision and queue
//! entries are flushed. Phase 2: police DE and node DE drain their queues.
//! Peer, in the same run, measured before the clock starts with every process
//! idle: Ed25519 `verify_strict` in a plain loop on the same cores. Last line:
//! one JSON object with the figures.

use crate::stats::{cpu_secs, peak_rss_mb, percentile, unix_us};
use crate::verify_limit;
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// Arguments of `meldnet-bench ingest`.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestArgs {
    /// Reports to submit.
    #[arg(long, default_value_t = 1_000_000)]
    pub reports: usize,
    /// Node processes submitting at once.
    #[arg(long, default_value_t = 4)]
    pub nodes: usize,
    /// Items (files) per report.
    #[arg(long, default_value_t = 4)]
    pub items: usize,
    /// Keep the federation here instead of a temporary folder.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Seconds of the plain-verify peer measurement.
    #[arg(long, default_value_t = 3.0)]
    pub verify_secs: f64,
    /// Check that every report reached both recipients exactly once (reads every delivery log).
    #[arg(long)]
    pub check: bool,
    /// After the run, say what the stopped hub's store holds kind by kind
    /// (`meldnet-hub store usage`: reads every record).
    #[arg(long)]
    pub usage: bool,
    /// Offer this many reports a second in all (spread over the nodes, in
    /// small batches) instead of a burst: receipt latency at a load.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Reports stored before the measured run, generated straight into the
    /// stopped hub's store through its own ingest and acknowledged by their
    /// recipients (not timed): how the rate, the start and the memory
    /// change with what the hub already holds.
    #[arg(long, default_value_t = 0)]
    pub preload: usize,
}

const ORIGINS: [&str; 8] = ["NL", "FR", "BE", "AT", "IT", "ES", "PL", "SE"];

pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe.parent().map(|d| d.join(name)).unwrap_or_default();
    if !p.exists() {
        bail!(
            "{} not found next to meldnet-bench: build the workspace's binaries first",
            p.display()
        );
    }
    Ok(p)
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    ids: PathBuf,
}

impl Worker {
    fn event(&mut self, want: &str) -> anyhow::Result<Value> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line)? == 0 {
                let status = self.child.wait()?;
                bail!("node worker ended ({status}) before '{want}'");
            }
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if v["event"] == want {
                    return Ok(v);
                }
            }
        }
    }
}

/// Runs a receive command to the end; returns (stored, already stored, seconds).
fn drain(mut cmd: Command) -> anyhow::Result<Child> {
    Ok(cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?)
}

fn summary_counts(stderr: &str) -> (usize, usize) {
    let num = |suffix: &str| -> usize {
        stderr
            .split([',', ':'])
            .find_map(|p| p.trim().strip_suffix(suffix))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    (num(" stored"), num(" already stored"))
}

/// The report ids in a recipient's delivery log, and how many records it
/// holds. Every damaged range is named on stderr (reading goes on after
/// it), and then the run fails: its counts would not be the truth.
fn delivered_ids(dir: &Path) -> anyhow::Result<(HashSet<String>, usize)> {
    use meldnet_recipient::{LogError, LogReader};
    let (mut out, mut records, mut damaged) = (HashSet::new(), 0, 0);
    for record in LogReader::open(dir)? {
        match record {
            Ok(r) => {
                out.insert(r.report_id().to_string());
                records += 1;
            }
            Err(LogError::Damage(d)) => {
                damaged += 1;
                eprintln!("DAMAGED {d}");
            }
            Err(e) => return Err(e.into()),
        }
    }
    if damaged > 0 {
        bail!(
            "{}: {damaged} damaged ranges in the delivery log ({records} good records)",
            dir.display()
        );
    }
    Ok((out, records))
}

/// Makes the benchmarks' federation in `fed` (`meldnet-certs init`): the
/// given nodes, police DE, the hub at `hub_addr`.
pub fn make_federation(fed: &Path, nodes: &str, hub_addr: &str) -> anyhow::Result<()> {
    let st = Command::new(sibling("meldnet-certs")?)
        .args(["init", "--dir"])
        .arg(fed)
        .args([
            "--federation",
            "bench.meldnet.test",
            "--nodes",
            nodes,
            "--agencies",
            "DE/bka",
            "--hub-addr",
            hub_addr,
        ])
        .stdout(Stdio::null())
        .status()?;
    if !st.success() {
        bail!("meldnet-certs init failed");
    }
    Ok(())
}

/// Starts `meldnet-hub serve` on the federation's hub configuration, its
/// log in `root/<name>.log`; returns it once it is ready, and how long that took.
pub fn start_hub(root: &Path, fed: &Path, name: &str) -> anyhow::Result<(Child, Duration)> {
    let ready = root.join(format!("{name}.ready"));
    let _ = std::fs::remove_file(&ready);
    let log = root.join(format!("{name}.log"));
    let t = Instant::now();
    let mut hub = Command::new(sibling("meldnet-hub")?)
        .args(["serve", "--config"])
        .arg(fed.join("hub/hub.toml"))
        .arg("--ready-file")
        .arg(&ready)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(600);
    while !ready.exists() {
        if Instant::now() > deadline || hub.try_wait()?.is_some() {
            bail!("hub did not start; see {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok((hub, t.elapsed()))
}

/// Stops a hub we started (SIGTERM) and waits for it.
pub fn stop_hub(hub: &mut Child) {
    // SAFETY: kill only sends a signal to the process we started.
    unsafe {
        libc::kill(hub.id() as i32, libc::SIGTERM);
    }
    let _ = hub.wait();
}

/// Starts one node worker per origin, `reports` in all, each writing its
/// receipted ids to `root/<tag>-<CC>.txt`; each signs before it says ready.
fn spawn_workers(
    root: &Path,
    fed: &Path,
    origins: &[&str],
    reports: usize,
    a: &IngestArgs,
    rate: Option<f64>,
    tag: &str,
) -> anyhow::Result<Vec<Worker>> {
    let bench = std::env::current_exe()?;
    let mut workers = Vec::new();
    let n = origins.len();
    for (i, cc) in origins.iter().enumerate() {
        let share = reports / n + usize::from(i < reports % n);
        let ids = root.join(format!("{tag}-{cc}.txt"));
        let mut child = Command::new(&bench)
            .args(["node-worker", "--config"])
            .arg(fed.join(format!("nodes/{cc}/node.toml")))
            .args([
                "--reports",
                &share.to_string(),
                "--items",
                &a.items.to_string(),
                "--ids-out",
            ])
            .arg(&ids)
            .args(
                rate.map(|r| vec!["--rate".to_string(), (r / n as f64).to_string()])
                    .unwrap_or_default(),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().context("worker stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("worker stdout")?);
        workers.push(Worker {
            child,
            stdin,
            stdout,
            ids,
        });
    }
    Ok(workers)
}

/// Runs the benchmark and prints the figures.
pub fn run(a: IngestArgs) -> anyhow::Result<()> {
    if a.nodes == 0 || a.nodes > ORIGINS.len() {
        bail!("--nodes must be 1..={}", ORIGINS.len());
    }
    let tmp = tempfile::tempdir()?;
    let root = a.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let fed = root.join("fed");
    let hub_addr = format!("127.0.0.1:{}", free_port()?);
    let origins = &ORIGINS[..a.nodes];
    let mut nodes: Vec<&str> = origins.to_vec();
    nodes.push("DE");
    make_federation(&fed, &nodes.join(","), &hub_addr)?;

    // Reports stored before the measured run: generated straight into the
    // stopped hub's store through its own ingest (not timed), then
    // acknowledged by their recipients, as after months of work.
    if a.preload > 0 {
        eprintln!("preload: {} reports into the store, not timed", a.preload);
        let stored = crate::preload::run(&fed, origins, a.preload, a.items)?;
        if stored != a.preload {
            bail!("preload: {stored} of {} stored", a.preload);
        }
    }

    // The hub.
    let (mut hub, preloaded_start) = start_hub(&root, &fed, "hub")?;
    let hub_pid = hub.id();
    let memory = crate::stats::MemoryWatch::start(hub_pid);
    if a.preload > 0 {
        eprintln!(
            "hub ready on {} stored reports after {:.2} s",
            a.preload,
            preloaded_start.as_secs_f64()
        );
    }

    // The node workers sign their share before the clock starts.
    eprintln!(
        "ingest: {} reports of {} items from {} node processes",
        a.reports, a.items, a.nodes
    );
    let mut workers = spawn_workers(&root, &fed, origins, a.reports, &a, a.rate, "ids")?;
    let mut sign_start = u64::MAX;
    let mut sign_end = 0u64;
    let mut report_bytes = 0u64;
    for w in &mut workers {
        let v = w.event("ready")?;
        sign_start = sign_start.min(v["sign_start_us"].as_u64().unwrap_or(0));
        sign_end = sign_end.max(v["sign_end_us"].as_u64().unwrap_or(0));
        report_bytes = report_bytes.max(v["avg_report_bytes"].as_u64().unwrap_or(0));
    }
    let signing_per_s = a.reports as f64 / ((sign_end.saturating_sub(sign_start)) as f64 / 1e6);
    eprintln!(
        "signed {} reports at {signing_per_s:.0}/s (before the clock), {report_bytes} bytes each",
        a.reports
    );

    // The peer, before the clock, with every process idle and the disk
    // written back: plain single verification on the same cores.
    // SAFETY: sync takes no arguments and only flushes file system buffers.
    unsafe { libc::sync() };
    let verify_limit = verify_limit::measure(report_bytes as usize, a.verify_secs);
    eprintln!("peer: verify_strict in a plain loop on all cores: {verify_limit:.0}/s");

    // Phase 1: go.
    let hub_cpu_start = cpu_secs(hub_pid).unwrap_or(0.0);
    let start = unix_us();
    for w in &mut workers {
        writeln!(w.stdin, "go")?;
        w.stdin.flush()?;
    }
    let mut receipted = 0usize;
    let mut refused = 0usize;
    let mut last = start;
    let mut lat_ms: Vec<f64> = Vec::with_capacity(a.reports);
    let mut nodes_cpu = 0.0;
    for w in &mut workers {
        let v = w.event("done")?;
        nodes_cpu += v["cpu_secs"].as_f64().unwrap_or(0.0);
        receipted += v["receipted"].as_u64().unwrap_or(0) as usize;
        refused += v["refused"].as_u64().unwrap_or(0) as usize;
        if let Some(msg) = v["first_refusal"].as_str() {
            eprintln!("a refusal: {msg}");
        }
        last = last.max(v["last_receipt_us"].as_u64().unwrap_or(0));
        for pair in v["batch_latencies_us"].as_array().into_iter().flatten() {
            let us = pair[0].as_f64().unwrap_or(0.0);
            let n = pair[1].as_u64().unwrap_or(0) as usize;
            lat_ms.extend(std::iter::repeat_n(us / 1000.0, n));
        }
        w.child.wait()?;
    }
    let ingest_secs = (last.saturating_sub(start)) as f64 / 1e6;
    let ingest_per_s = receipted as f64 / ingest_secs;
    let p50 = percentile(&mut lat_ms, 50.0);
    let p99 = percentile(&mut lat_ms, 99.0);
    let rss_after_ingest = peak_rss_mb(hub_pid).unwrap_or(0.0);
    let (anon_peak_ingest, file_peak_ingest) = memory.peaks();
    let hub_cpu = cpu_secs(hub_pid).unwrap_or(0.0) - hub_cpu_start;
    // CPU time per receipted report, in microseconds: where the cores went.
    let per_report_us = |secs: f64| secs * 1e6 / receipted.max(1) as f64;
    eprintln!(
        "phase 1 CPU: hub {hub_cpu:.1} s ({:.0} us a report), node workers {nodes_cpu:.1} s ({:.0} us a report)",
        per_report_us(hub_cpu),
        per_report_us(nodes_cpu)
    );
    eprintln!("phase 1: {receipted} receipted, {refused} refused in {ingest_secs:.2} s: {ingest_per_s:.0} reports/s; receipt p50 {p50:.1} ms, p99 {p99:.1} ms; hub peak RSS {rss_after_ingest:.0} MiB (peak anonymous {anon_peak_ingest:.0} MiB, peak mapped files {file_peak_ingest:.0} MiB)");

    let ratio = ingest_per_s / verify_limit;
    eprintln!("ingest/limit = {ratio:.3}");

    // Phase 2: drain both queues at once.
    let out_bka = root.join("deliveries-bka");
    let out_de = root.join("deliveries-node-de");
    let t = Instant::now();
    let agency = drain({
        let mut c = Command::new(sibling("meldnet-agency")?);
        c.args(["pull", "--config"])
            .arg(fed.join("agencies/DE-bka/agency.toml"))
            .arg("--out")
            .arg(&out_bka);
        c
    })?;
    let node = drain({
        let mut c = Command::new(sibling("meldnet-node")?);
        c.args(["inbox", "--config"])
            .arg(fed.join("nodes/DE/node.toml"))
            .arg("--out")
            .arg(&out_de);
        c
    })?;
    let mut stored_total = 0;
    let mut again_total = 0;
    let mut counts = Vec::new();
    for (what, child) in [("police DE", agency), ("node DE", node)] {
        let out = child.wait_with_output()?;
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            bail!("{what} failed: {err}");
        }
        let (stored, again) = summary_counts(&err);
        counts.push((what, stored, again));
        stored_total += stored;
        again_total += again;
    }
    let drain_secs = t.elapsed().as_secs_f64();
    let deliveries_per_s = stored_total as f64 / drain_secs;
    let hub_peak_rss_mb = peak_rss_mb(hub_pid).unwrap_or(rss_after_ingest);
    eprintln!("phase 2: {stored_total} deliveries stored and acknowledged in {drain_secs:.2} s: {deliveries_per_s:.0}/s ({counts:?})");

    let mut exactly_once = counts
        .iter()
        .all(|(_, stored, again)| *stored == receipted && *again == 0)
        && again_total == 0
        && receipted == a.reports;
    if a.check {
        let mut submitted = HashSet::new();
        for path in workers.iter().map(|w| w.ids.clone()) {
            if !path.exists() {
                continue;
            }
            for line in std::fs::read_to_string(&path)?.lines() {
                submitted.insert(line.to_string());
            }
        }
        for dir in [&out_bka, &out_de] {
            let (got, records) = delivered_ids(dir)?;
            if got != submitted || records != got.len() {
                eprintln!(
                    "{}: {} delivered in {records} records, {} submitted, sets differ",
                    dir.display(),
                    got.len(),
                    submitted.len()
                );
                exactly_once = false;
            }
        }
    }
    // Stop the hub (SIGTERM); then what its store holds, and a restart on
    // everything stored: how long until it serves, and what it holds in
    // memory then (no report in flight).
    stop_hub(&mut hub);
    let usage = if a.usage {
        let out = Command::new(sibling("meldnet-hub")?)
            .args(["store", "usage", "--config"])
            .arg(fed.join("hub/hub.toml"))
            .output()?;
        if !out.status.success() {
            bail!(
                "meldnet-hub store usage: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_slice::<Value>(&out.stdout)?
    } else {
        Value::Null
    };
    let (mut again, ready_after) = start_hub(&root, &fed, "hub-restart")?;
    std::thread::sleep(Duration::from_millis(500));
    let restart_rss_mb = crate::stats::rss_mb(again.id()).unwrap_or(0.0);
    stop_hub(&mut again);
    let restart_secs = ready_after.as_secs_f64();
    eprintln!(
        "restart on {} stored reports: ready after {restart_secs:.2} s, RSS {restart_rss_mb:.0} MiB",
        receipted + a.preload
    );
    if let Some(d) = usage["disk_bytes_per_report"].as_f64() {
        eprintln!("store on disk: {d:.0} bytes per report");
    }
    let figures = json!({
        "reports": a.reports,
        "nodes": a.nodes,
        "items_per_report": a.items,
        "report_bytes": report_bytes,
        "receipted": receipted,
        "refused": refused,
        "ingest_seconds": ingest_secs,
        "ingest_reports_per_s": ingest_per_s,
        "verify_limit_per_s": verify_limit,
        "ratio": ratio,
        "receipt_p50_ms": p50,
        "receipt_p99_ms": p99,
        "hub_peak_rss_mb": hub_peak_rss_mb,
        "hub_peak_anon_mb_ingest": anon_peak_ingest,
        "hub_peak_file_mb_ingest": file_peak_ingest,
        "hub_peak_rss_mb_ingest": rss_after_ingest,
        "hub_cpu_us_per_report": per_report_us(hub_cpu),
        "nodes_cpu_us_per_report": per_report_us(nodes_cpu),
        "deliveries": stored_total,
        "drain_seconds": drain_secs,
        "deliveries_per_s": deliveries_per_s,
        "signing_per_s": signing_per_s,
        "exactly_once": exactly_once,
        "restart_ready_seconds": restart_secs,
        "restart_rss_mb": restart_rss_mb,
        "disk_bytes_per_report": usage["disk_bytes_per_report"],
        "store_usage": usage,
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "offered_reports_per_s": a.rate,
        "preloaded": a.preload,
    });
    println!("{figures}");
    if !exactly_once {
        bail!("not every report arrived exactly once");
    }
    Ok(())
}
