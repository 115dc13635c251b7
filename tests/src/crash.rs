//! The crash harness: the whole federation as real processes (the hub, every
//! node submitting a burst, every recipient receiving with `--follow`), and
//! SIGKILL of the hub, a node or a recipient at moments drawn from a seeded
//! schedule. After the last kill everything is let run to the end, and the
//! promises are checked from what each party stored:
//!
//! - every report a node made is receipted: nothing lost from an outbox;
//! - the hub holds every receipted report, and nothing in its store is damaged;
//! - each recipient of a report's decision holds it exactly once, and no
//!   recipient holds a report not routed to it;
//! - the audit chain verifies, and no delivery was sent again after the hub
//!   had recorded its acknowledgement (the audit log records each batch
//!   before it is sent, and each acknowledgement before it is confirmed, in
//!   one writer's order).
//!
//! The same seed gives the same schedule (which kill, after how long), so a
//! failure replays; the processes' timing still varies from run to run.

use crate::{bin, run, sample_report, stderr, stdout, Federation};
use anyhow::{bail, ensure, Context, Result};
use meldnet_core::ReportId;
use meldnet_node::outbox::Outbox;
use meldnet_proto::v1 as pb;
use meldnet_recipient::LogReader;
use prost::Message;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Seeds the schedule; printed, so a failure replays.
    pub seed: u64,
    /// How many processes to kill.
    pub kills: usize,
    /// Drafts a node adds each time it starts a `submit`.
    pub per_wave: usize,
    /// Time between two kills, drawn evenly from this range (ms).
    pub gap_ms: (u64, u64),
    /// When set, nodes and recipients reach the hub through a proxy that
    /// cuts every connection after a number of bytes drawn from this range.
    pub cut_bytes: Option<(u64, u64)>,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            seed: 1,
            kills: 10,
            per_wave: 20,
            gap_ms: (50, 1200),
            cut_bytes: None,
        }
    }
}

/// What a run did and found. `lost`, `missing`, `duplicated`, `stray` and
/// `repeated_after_ack` are the promises: all zero, or the run failed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Outcome {
    /// The schedule's seed.
    pub seed: u64,
    /// Kills of the hub, of nodes' `submit`, of recipients' receivers.
    pub kills_hub: usize,
    /// Kills of a node's `submit`.
    pub kills_node: usize,
    /// Kills of a recipient's `pull --follow` / `inbox --follow`.
    pub kills_recipient: usize,
    /// Reports the nodes made.
    pub reports: usize,
    /// Reports the nodes hold receipts for.
    pub receipted: usize,
    /// Deliveries the recipients hold (report and recipient pairs).
    pub deliveries: usize,
    /// Batches sent again before their acknowledgement was recorded (allowed:
    /// the recipient stores idempotently and acknowledges again).
    pub redelivered: usize,
    /// Made but never receipted.
    pub lost: usize,
    /// Routed to a recipient that does not hold it.
    pub missing: usize,
    /// Held twice by one recipient.
    pub duplicated: usize,
    /// Held by a recipient it was not routed to.
    pub stray: usize,
    /// Sent again after the hub recorded its acknowledgement.
    pub repeated_after_ack: usize,
    /// Connections the proxy cut mid-stream.
    pub cuts: u64,
    /// Records in the audit chain, verified from the first to the last.
    pub audit_records: u64,
    /// Wall time of the whole run (s).
    pub seconds: f64,
}

/// A small, seeded generator (SplitMix64): the schedule must replay from the
/// seed alone, whatever crate versions the tests build with.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Evenly in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// The running phase, shared with the drivers.
const KILLING: u8 = 0;
const DRAINING: u8 = 1;
const STOPPING: u8 = 2;

/// A process a driver runs again and again, which the schedule may kill.
#[derive(Default)]
struct Slot {
    child: Mutex<Option<Child>>,
}

impl Slot {
    /// SIGKILL to the running process; false if none runs.
    fn kill(&self) -> bool {
        let mut guard = self.child.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)) && c.kill().is_ok(),
            None => false,
        }
    }

    /// Runs `cmd` here until it exits (or is killed); its output is appended
    /// to `log`. Returns whether it exited successfully.
    fn run(&self, cmd: &mut Command, log: &std::path::Path) -> Result<bool> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .env("RUST_LOG", "warn")
            .spawn()
            .with_context(|| format!("spawning {cmd:?}"))?;
        *self.child.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
        loop {
            {
                let mut guard = self.child.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(c) = guard.as_mut() {
                    if let Some(status) = c.try_wait()? {
                        *guard = None;
                        return Ok(status.success());
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// One node: adds drafts, runs `meldnet-node submit`, again and again.
struct NodeDriver {
    cc: String,
    config: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    slot: Slot,
    made: Mutex<Vec<ReportId>>,
}

/// A fresh report of `origin`, with its own URL and item hash, so that no
/// two are folded into one case and each delivery is one record.
fn fresh_report(origin: &str, hosting: &str) -> Result<(ReportId, pb::Report)> {
    let mut r = sample_report(origin, hosting);
    let id = r.id.to_string();
    r.url = meldnet_core::ReportUrl::parse(&format!("https://files.example.test/{id}"))
        .map_err(|e| anyhow::anyhow!("url: {e}"))?;
    r.items[0].sha256 = meldnet_core::Sha256::of(id.as_bytes());
    Ok((r.id, r.to_proto()))
}

impl NodeDriver {
    fn drive(&self, phase: &AtomicU8, hostings: &[String], per_wave: usize) -> Result<()> {
        let mut n = 0usize;
        loop {
            let p = phase.load(Ordering::SeqCst);
            if p == STOPPING {
                return Ok(());
            }
            {
                // The store is this driver's alone between two `submit`s.
                let outbox = open_outbox(&self.data_dir)?;
                let waiting = outbox.drafts()?.len() + outbox.outbox()?.len();
                if p == KILLING && waiting < 2 * per_wave {
                    let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
                    for _ in 0..per_wave {
                        let hosting = &hostings[n % hostings.len()];
                        n += 1;
                        let (id, r) = fresh_report(&self.cc, hosting)?;
                        outbox.add_draft(&r, &id)?;
                        made.push(id);
                    }
                } else if p == DRAINING && waiting == 0 {
                    return Ok(());
                }
            }
            let _ = self.slot.run(
                Command::new(bin("meldnet-node"))
                    .arg("submit")
                    .arg("--config")
                    .arg(&self.config),
                &self.log,
            )?;
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Opens a node's store, waiting out the lock of a process just killed.
fn open_outbox(dir: &std::path::Path) -> Result<Outbox> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match Outbox::open(dir) {
            Ok(o) => return Ok(o),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e).context("opening the node's store"),
        }
    }
}

/// One recipient: `pull --follow` (police) or `inbox --follow` (a node),
/// started again whenever it ends.
struct RecipientDriver {
    identity: String,
    program: &'static str,
    command: &'static str,
    config: PathBuf,
    log_dir: PathBuf,
    log: PathBuf,
    slot: Slot,
}

impl RecipientDriver {
    fn drive(&self, phase: &AtomicU8) -> Result<()> {
        while phase.load(Ordering::SeqCst) != STOPPING {
            let _ = self.slot.run(
                Command::new(bin(self.program))
                    .args([self.command, "--follow", "--config"])
                    .arg(&self.config),
                &self.log,
            )?;
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Report id -> records held, read back from the delivery log.
    fn held(&self) -> Result<HashMap<ReportId, usize>> {
        let mut held = HashMap::new();
        if !meldnet_recipient::log_path(&self.log_dir).exists() {
            return Ok(held);
        }
        for r in LogReader::open(&self.log_dir)? {
            let r = r.with_context(|| format!("{}'s delivery log", self.identity))?;
            *held.entry(r.report_id()).or_insert(0) += 1;
        }
        Ok(held)
    }
}

/// A driver whose process can be killed.
trait Killable: Send + Sync {
    fn slot(&self) -> &Slot;
}

impl Killable for NodeDriver {
    fn slot(&self) -> &Slot {
        &self.slot
    }
}

impl Killable for RecipientDriver {
    fn slot(&self) -> &Slot {
        &self.slot
    }
}

/// However the run ends, the drivers stop and their processes die with it.
struct StopOnDrop {
    phase: Arc<AtomicU8>,
    slots: Vec<Arc<dyn Killable>>,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.phase.store(STOPPING, Ordering::SeqCst);
        for s in &self.slots {
            s.slot().kill();
        }
    }
}

/// Runs the plan against a fresh default federation (nodes NL, DE, FR;
/// police DE, NL, FR; Europol). Fails if a promise did not hold, with the
/// outcome in the error; `progress` gets a line now and then.
pub fn run_plan(plan: &Plan, progress: &mut dyn FnMut(&str)) -> Result<Outcome> {
    let started = Instant::now();
    let nodes = ["NL", "DE", "FR"];
    let agencies = ["DE/bka", "NL/politie", "FR/police", "EU/europol"];
    let mut fed = Federation::init(&nodes.join(","), &agencies.join(","))?;
    fed.start_hub()?;
    let root = fed.root();
    let logs = fed.scratch("crash-logs");
    let proxy = match plan.cut_bytes {
        Some((lo, hi)) => {
            let proxy = crate::faults::CutProxy::start(fed.hub_addr, plan.seed, lo, hi)?;
            let (from, to) = (
                format!("address = \"{}\"", fed.hub_addr),
                format!("address = \"{}\"", proxy.addr),
            );
            for config in nodes.iter().map(|cc| fed.node_config(cc)).chain(
                agencies
                    .iter()
                    .map(|a| fed.agency_config(&a.replace('/', "-"))),
            ) {
                let text = std::fs::read_to_string(&config)?;
                ensure!(text.contains(&from), "{} has no {from}", config.display());
                std::fs::write(&config, text.replace(&from, &to))?;
            }
            Some(proxy)
        }
        None => None,
    };
    let fed_id = crate::FEDERATION;
    let node_drivers: Vec<Arc<NodeDriver>> = nodes
        .iter()
        .map(|cc| {
            Arc::new(NodeDriver {
                cc: cc.to_string(),
                config: fed.node_config(cc),
                data_dir: root.join(format!("nodes/{cc}/data")),
                log: logs.join(format!("submit-{cc}.log")),
                slot: Slot::default(),
                made: Mutex::new(Vec::new()),
            })
        })
        .collect();
    let mut recipients: Vec<Arc<RecipientDriver>> = agencies
        .iter()
        .map(|a| {
            let dir = a.replace('/', "-");
            Arc::new(RecipientDriver {
                identity: format!("spiffe://{fed_id}/agency/{a}"),
                program: "meldnet-agency",
                command: "pull",
                config: fed.agency_config(&dir),
                log_dir: root.join(format!("agencies/{dir}/deliveries")),
                log: logs.join(format!("pull-{dir}.log")),
                slot: Slot::default(),
            })
        })
        .collect();
    recipients.extend(nodes.iter().map(|cc| {
        Arc::new(RecipientDriver {
            identity: format!("spiffe://{fed_id}/node/{cc}"),
            program: "meldnet-node",
            command: "inbox",
            config: fed.node_config(cc),
            log_dir: root.join(format!("nodes/{cc}/inbox")),
            log: logs.join(format!("inbox-{cc}.log")),
            slot: Slot::default(),
        })
    }));

    let phase = Arc::new(AtomicU8::new(KILLING));
    let _stop = StopOnDrop {
        phase: phase.clone(),
        slots: node_drivers
            .iter()
            .map(|d| Arc::clone(d) as Arc<dyn Killable>)
            .chain(
                recipients
                    .iter()
                    .map(|d| Arc::clone(d) as Arc<dyn Killable>),
            )
            .collect(),
    };
    let hostings: Vec<String> = nodes.iter().map(|s| s.to_string()).collect();
    let failures = Arc::new(AtomicUsize::new(0));
    let mut node_threads = Vec::new();
    for d in &node_drivers {
        let (d, phase, hostings, failures) =
            (d.clone(), phase.clone(), hostings.clone(), failures.clone());
        let per_wave = plan.per_wave;
        node_threads.push(std::thread::spawn(move || {
            let r = d.drive(&phase, &hostings, per_wave);
            if r.is_err() {
                failures.fetch_add(1, Ordering::SeqCst);
            }
            r
        }));
    }
    let mut recipient_threads = Vec::new();
    for d in &recipients {
        let (d, phase) = (d.clone(), phase.clone());
        recipient_threads.push(std::thread::spawn(move || d.drive(&phase)));
    }

    // The schedule: after a drawn gap, SIGKILL of a drawn target; the hub is
    // started again at once, the others by their drivers.
    let mut rng = Rng::new(plan.seed);
    let mut out = Outcome {
        seed: plan.seed,
        ..Outcome::default()
    };
    let targets = 1 + node_drivers.len() + recipients.len();
    let mut done = 0;
    while done < plan.kills {
        ensure!(
            failures.load(Ordering::SeqCst) == 0,
            "a node driver failed (seed {})",
            plan.seed
        );
        std::thread::sleep(Duration::from_millis(
            rng.range(plan.gap_ms.0, plan.gap_ms.1),
        ));
        // The hub is drawn as often as all nodes together: it is the one
        // whose crash can lose most.
        let pick = rng.range(0, (targets + node_drivers.len()) as u64 - 1) as usize;
        let killed = if pick <= node_drivers.len() {
            fed.kill_hub();
            std::thread::sleep(Duration::from_millis(rng.range(0, 200)));
            fed.start_hub()?;
            out.kills_hub += 1;
            true
        } else if pick <= 2 * node_drivers.len() {
            let hit = node_drivers[pick - node_drivers.len() - 1].slot.kill();
            out.kills_node += usize::from(hit);
            hit
        } else {
            let hit = recipients[pick - 2 * node_drivers.len() - 1].slot.kill();
            out.kills_recipient += usize::from(hit);
            hit
        };
        if killed {
            done += 1;
            if done % 25 == 0 {
                progress(&format!(
                    "{done} kills ({} hub, {} node, {} recipient), {:.0} s",
                    out.kills_hub,
                    out.kills_node,
                    out.kills_recipient,
                    started.elapsed().as_secs_f64()
                ));
            }
        }
    }

    // No more kills: the nodes empty their outboxes, the recipients catch up.
    progress("kills done; draining");
    phase.store(DRAINING, Ordering::SeqCst);
    for t in node_threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("a node driver panicked"))??;
    }
    let mut made = Vec::new();
    let mut routed: BTreeMap<String, HashSet<ReportId>> = BTreeMap::new();
    let mut receipted = HashSet::new();
    for d in &node_drivers {
        made.extend(
            d.made
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .copied(),
        );
        let outbox = open_outbox(&d.data_dir)?;
        ensure!(
            outbox.refused()?.is_empty(),
            "node {} has refused reports",
            d.cc
        );
        for (id, receipt) in outbox.receipts()? {
            let signed = receipt.decision.context("receipt without decision")?;
            let decision = pb::Decision::decode(signed.decision.as_slice())?;
            for r in decision.recipients {
                routed.entry(r.identity).or_default().insert(id);
            }
            receipted.insert(id);
        }
    }
    out.reports = made.len();
    out.receipted = receipted.len();
    out.lost = made.iter().filter(|id| !receipted.contains(id)).count();
    let state = fed_state(&fed)?;
    ensure!(
        state.reports as usize == receipted.len(),
        "the hub holds {} reports, the nodes hold {} receipts (seed {})",
        state.reports,
        receipted.len(),
        plan.seed
    );
    ensure!(state.damaged == 0, "{} damaged bodies", state.damaged);
    for identity in routed.keys() {
        ensure!(
            recipients.iter().any(|r| r.identity == *identity),
            "routed to {identity}, which the harness does not receive for"
        );
    }

    // Every recipient catches up: its log holds every report routed to it.
    let deadline = Instant::now() + Duration::from_secs(120 + (out.reports / 50) as u64);
    loop {
        let mut behind = Vec::new();
        for r in &recipients {
            let want = routed.get(&r.identity).map_or(0, HashSet::len);
            let held = r.held().unwrap_or_default().len();
            if held < want {
                behind.push(format!("{} {held}/{want}", r.identity));
            }
        }
        if behind.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!("recipients did not catch up: {}", behind.join(", "));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    phase.store(STOPPING, Ordering::SeqCst);
    for r in &recipients {
        r.slot.kill();
    }
    for t in recipient_threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("a recipient driver panicked"))??;
    }
    for r in &recipients {
        let want = routed.remove(&r.identity).unwrap_or_default();
        let held = r.held()?;
        out.missing += want.iter().filter(|id| !held.contains_key(id)).count();
        out.duplicated += held.values().filter(|n| **n > 1).count();
        out.stray += held.keys().filter(|id| !want.contains(id)).count();
        out.deliveries += held.len();
    }

    // The audit chain, read with the hub stopped.
    fed.stop_hub();
    let config = fed.hub_config();
    let o = run(Command::new(bin("meldnet-hub"))
        .args(["audit", "verify", "--config"])
        .arg(&config));
    ensure!(o.status.success(), "audit verify: {}", stderr(&o));
    out.audit_records = stdout(&o)
        .split_whitespace()
        .nth(3)
        .and_then(|n| n.parse().ok())
        .context("audit verify's record count")?;
    let o = run(Command::new(bin("meldnet-hub"))
        .args(["audit", "show", "--config"])
        .arg(&config));
    ensure!(o.status.success(), "audit show: {}", stderr(&o));
    let (redelivered, repeated) = deliveries_after_ack(&stdout(&o))?;
    out.redelivered = redelivered;
    out.repeated_after_ack = repeated;
    let o = run(Command::new(bin("meldnet-hub"))
        .args(["store", "check", "--config"])
        .arg(&config));
    ensure!(o.status.success(), "store check: {}", stdout(&o));
    out.seconds = started.elapsed().as_secs_f64();
    out.cuts = proxy.as_ref().map_or(0, crate::faults::CutProxy::cuts);

    let broken = out.lost + out.missing + out.duplicated + out.stray + out.repeated_after_ack;
    if broken > 0 || out.reports == 0 {
        bail!(
            "a promise broke (seed {}): {}",
            plan.seed,
            serde_json::to_string(&out)?
        );
    }
    Ok(out)
}

fn fed_state(fed: &Federation) -> Result<pb::StateDigestResponse> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(fed.state())
}

/// From `meldnet-hub audit show`: how many queue entries were sent again
/// before their acknowledgement (allowed), and how many after it (a broken
/// promise). Both kinds of event name their entries `seq:report,...`.
fn deliveries_after_ack(audit: &str) -> Result<(usize, usize)> {
    let mut sent: HashSet<(String, String)> = HashSet::new();
    let mut acked: HashSet<(String, String)> = HashSet::new();
    let (mut again, mut after_ack) = (0, 0);
    for line in audit.lines() {
        let ev: serde_json::Value = serde_json::from_str(line)?;
        let kind = ev["kind"].as_str().unwrap_or_default();
        if kind != "delivered" && kind != "acknowledged" {
            continue;
        }
        let who = ev["actor"].as_str().unwrap_or_default().to_string();
        for entry in ev["detail"].as_str().unwrap_or_default().split(',') {
            let seq = entry.split(':').next().unwrap_or_default().to_string();
            let key = (who.clone(), seq);
            if kind == "acknowledged" {
                acked.insert(key);
            } else if acked.contains(&key) {
                after_ack += 1;
            } else if !sent.insert(key) {
                again += 1;
            }
        }
    }
    Ok((again, after_ack))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_replays_from_its_seed() {
        let draw = |seed| {
            let mut r = Rng::new(seed);
            (0..8).map(|_| r.range(0, 99)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn a_delivery_after_its_acknowledgement_is_counted() {
        let audit = [
            r#"{"kind":"delivered","actor":"a","detail":"1:x,2:y"}"#,
            r#"{"kind":"delivered","actor":"a","detail":"2:y"}"#,
            r#"{"kind":"acknowledged","actor":"a","detail":"1:x,2:y"}"#,
            r#"{"kind":"delivered","actor":"b","detail":"1:x"}"#,
            r#"{"kind":"delivered","actor":"a","detail":"1:x"}"#,
        ]
        .join("\n");
        assert_eq!(deliveries_after_ack(&audit).unwrap(), (1, 1));
    }
}
