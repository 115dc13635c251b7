//! `meldnet-hub`: serve the hub, or check its audit log offline.

use anyhow::Context;
use clap::{Parser, Subcommand};
use meldnet_core::Keyring;
use meldnet_hub::config::{HubConfig, OperatorConfig};
use meldnet_list::describe_head;
use meldnet_list::{import_via, ListFormat};
use meldnet_proto::v1 as pb;
use prost::Message as _;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "meldnet-hub", version, about = "The EU hub of the federation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC over mTLS until SIGINT/SIGTERM.
    Serve {
        /// The hub's TOML configuration.
        #[arg(long)]
        config: PathBuf,
        /// Write the bound address to this file once listening.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Check the configuration and exit.
    CheckConfig {
        /// The hub's TOML configuration.
        #[arg(long)]
        config: PathBuf,
    },
    /// Audit log commands (the hub must be stopped: the store is locked while it runs).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// What the hub stores (the hub must be stopped).
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// The known-hash list of the running hub, as an operator.
    List {
        #[command(subcommand)]
        command: ListCommand,
    },
    /// Operate the running hub: routing rules, explanations, statistics.
    Admin {
        /// The operator's `operator.toml`.
        #[arg(long)]
        operator: PathBuf,
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// The routing rules in force (version, then the TOML).
    Rules,
    /// Replace the routing rules with FILE (`[[rules]]` tables); reports
    /// decided after the answer follow them. Audited.
    SetRules {
        /// The rules file.
        file: PathBuf,
    },
    /// The whole history of one report: decision and reasons, deliveries
    /// and acknowledgements, its case with sightings, steps and escalation.
    Explain {
        /// The report id.
        report_id: String,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Reports by origin and hosting country, known and new, cases,
    /// takedown times per hosting provider, the providers that don't clean up.
    Stats {
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Also write them dated and signed by the hub to FILE (a
        /// `SignedStatsExport`), for a regulator to cite and verify with
        /// `meldnet-agency verify-stats`.
        #[arg(long)]
        signed: Option<std::path::PathBuf>,
    },
    /// Register a node (with its signing public keys), an agency or a
    /// regulator, or replace a node's keys (rotation). Audited; applies at once.
    Register {
        /// The SPIFFE id, e.g. spiffe://eu.meldnet.test/node/NL.
        #[arg(long)]
        identity: String,
        /// A node's Ed25519 public key, 64 hex digits (repeat for several).
        #[arg(long = "public-key")]
        public_keys: Vec<String>,
    },
    /// Revoke a registered party: refused at every call, routed to no more.
    Revoke {
        #[arg(long)]
        identity: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Every registered party: identity, keys, revoked, where it comes from.
    Registry,
    /// Split a report out of the case it was wrongly merged into (a PDQ
    /// match of unrelated pictures): its own case, its own notice where
    /// due, its recipients told. Audited.
    Split {
        /// The report id.
        #[arg(long)]
        report: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Move the hub's clock forward (only a hub with [clock] adjustable =
    /// true: tests and demonstrations of deadlines).
    AdvanceClock {
        /// Hours to move forward.
        #[arg(long)]
        hours: u32,
    },
}

#[derive(Subcommand)]
enum ListCommand {
    /// Import a CSV or Project VIC VICS JSON list: a summary (added,
    /// duplicate, invalid) last, each invalid row with its line and reason.
    Import {
        /// The operator's `operator.toml`.
        #[arg(long)]
        operator: PathBuf,
        /// The country whose hotline or police holds this list (ISO 3166-1 alpha-2).
        #[arg(long)]
        source_country: String,
        /// `csv` or `vics`.
        #[arg(long, default_value = "csv")]
        format: ListFormat,
        /// TOML file naming the CSV columns and what each category means.
        #[arg(long)]
        mapping: Option<PathBuf>,
        /// The list file.
        file: PathBuf,
    },
    /// Withdraw a wrongly listed entry (a tombstone; nothing is deleted).
    Withdraw {
        #[arg(long)]
        operator: PathBuf,
        /// The version that added the entry.
        #[arg(long)]
        entry: u64,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// The list's signed head: version, entries, digest.
    Status {
        #[arg(long)]
        operator: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the hash chain of the audit log from the first record to the last.
    Verify {
        /// The hub's TOML configuration.
        #[arg(long)]
        config: PathBuf,
    },
    /// Print the audit events, one JSON object per line.
    Show {
        /// The hub's TOML configuration.
        #[arg(long)]
        config: PathBuf,
        /// Only events of this kind (e.g. setting, case-step, escalated, submitted).
        #[arg(long)]
        kind: Option<String>,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Everything stored for one victim series, one JSON object per
    /// record: kind, key, value, the decoded fields, and whether they are
    /// the whole value.
    Series {
        /// The hub's TOML configuration.
        #[arg(long)]
        config: PathBuf,
        /// The series id.
        #[arg(long)]
        series: String,
    },
    /// What the store holds, kind by kind (records, key and value bytes,
    /// per report), and the bytes its folder takes on disk: one JSON
    /// object. Changes nothing.
    Usage {
        /// The hub's TOML configuration.
        #[arg(long)]
        config: PathBuf,
    },
    /// Reads every stored body back (reports, audit records, history,
    /// escalations, notifications) and lists each damaged one as a JSON
    /// line with its kind, whose it is and its offset in the blob file;
    /// exits 1 if any is damaged. Changes nothing.
    Check {
        /// The hub's TOML configuration.
        #[arg(long)]
        config: PathBuf,
    },
}

fn open_stopped_store(config: &std::path::Path) -> anyhow::Result<meldnet_hub::store::Store> {
    let cfg = HubConfig::load(config)?;
    meldnet_hub::store::Store::open(&cfg.data_dir).with_context(|| {
        format!(
            "opening {} (is the hub still running?)",
            cfg.data_dir.display()
        )
    })
}

// The system's allocator, not mimalloc: measured on 400,000-report ingests
// on the 2-core machine, three runs each, glibc's malloc cost no more CPU
// (hub median 141 against 148 µs a report) and held 270 MiB less (peak
// anonymous memory 642 against 913 MiB): mimalloc kept freed pages for its
// purge delay while every batch allocates and frees on other threads. It
// also lets a heap profiler that hooks `malloc` see every allocation.
fn main() -> std::process::ExitCode {
    meldnet_cli::exit_code("meldnet-hub", run())
}

/// How often the hub hands memory freed inside glibc's arenas back to the
/// system (`malloc_trim`).
const TRIM_EVERY_MS: u64 = 1_000;

/// glibc keeps pages freed in the middle of its per-thread arenas until the
/// top of an arena is free; a batch allocates on one thread and frees on
/// another, so after a burst several hundred MiB stay resident for nothing.
/// Trimming once a second returns them (it walks the arenas' free lists,
/// a few milliseconds); fewer arenas (`MALLOC_ARENA_MAX=2`) did as well for
/// memory but cost a fifth more CPU per report in lock contention.
fn give_back_freed_memory(every: std::time::Duration) {
    let spawned = std::thread::Builder::new()
        .name("malloc-trim".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            // SAFETY: malloc_trim only takes glibc's own arena locks and
            // releases free pages; it touches no memory the program holds.
            unsafe {
                libc::malloc_trim(0);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no malloc-trim thread: freed memory stays with the allocator");
    }
}

fn run() -> anyhow::Result<()> {
    meldnet_cli::init_process("info");
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, ready_file } => {
            let cfg = HubConfig::load(&config)?;
            give_back_freed_memory(std::time::Duration::from_millis(TRIM_EVERY_MS));
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .on_thread_start(meldnet_hub::store::yield_to_the_writer)
                .build()?;
            rt.block_on(async move {
                if let Some(addr) = cfg.metrics_listen {
                    metrics_exporter_prometheus::PrometheusBuilder::new()
                        .with_http_listener(addr)
                        .install()
                        .with_context(|| format!("metrics_listen {addr}"))?;
                    tracing::info!(%addr, "Prometheus metrics at /metrics");
                }
                let shutdown = async {
                    meldnet_cli::shutdown_signal().await;
                    tracing::info!("shutting down");
                };
                meldnet_hub::server::run(cfg, shutdown, |addr| {
                    if let Some(f) = &ready_file {
                        if let Err(e) = std::fs::write(f, addr.to_string()) {
                            tracing::error!(error = %e, "could not write ready file");
                        }
                    }
                })
                .await
                .context("hub")
            })
        }
        Command::CheckConfig { config } => {
            HubConfig::load(&config)?;
            println!("{}: ok", config.display());
            Ok(())
        }
        Command::List { command } => list_command(command),
        Command::Admin { operator, command } => admin_command(&operator, command),
        Command::Audit {
            command: AuditCommand::Show { config, kind },
        } => {
            let store = open_stopped_store(&config)?;
            for (seq, ev) in store.audit_events()? {
                if kind.as_ref().is_some_and(|k| *k != ev.kind) {
                    continue;
                }
                println!(
                    "{}",
                    serde_json::json!({"seq": seq, "at_ms": ev.at_ms, "kind": ev.kind, "actor": ev.actor, "subject": ev.subject, "detail": ev.detail})
                );
            }
            Ok(())
        }
        Command::Store {
            command: StoreCommand::Series { config, series },
        } => {
            let id = meldnet_core::SeriesId::parse(&series)
                .map_err(|e| anyhow::anyhow!("--series: {e}"))?;
            let store = open_stopped_store(&config)?;
            for record in store.series_footprint(&id)? {
                println!("{record}");
            }
            Ok(())
        }
        Command::Store {
            command: StoreCommand::Usage { config },
        } => {
            let cfg = HubConfig::load(&config)?;
            let store = open_stopped_store(&config)?;
            let u = store.usage()?;
            let reports = u.reports().max(1) as f64;
            let kinds: serde_json::Map<String, serde_json::Value> = u
                .kinds
                .iter()
                .map(|(name, k)| {
                    let bytes = (k.key_bytes + k.value_bytes) as f64;
                    (
                        name.to_string(),
                        serde_json::json!({
                            "records": k.records,
                            "key_bytes": k.key_bytes,
                            "value_bytes": k.value_bytes,
                            "bytes_per_report": bytes / reports,
                        }),
                    )
                })
                .collect();
            let mut files = serde_json::Map::new();
            let mut disk = 0u64;
            for (name, bytes) in meldnet_cli::files_under(&cfg.data_dir)? {
                disk += bytes;
                files.insert(name, bytes.into());
            }
            println!(
                "{}",
                serde_json::json!({
                    "reports": u.reports(),
                    "kinds": kinds,
                    "logical_bytes": u.logical_bytes(),
                    "logical_bytes_per_report": u.logical_bytes() as f64 / reports,
                    "disk_bytes": disk,
                    "disk_bytes_per_report": disk as f64 / reports,
                    "files": files,
                })
            );
            Ok(())
        }
        Command::Store {
            command: StoreCommand::Check { config },
        } => {
            let store = open_stopped_store(&config)?;
            let found = store.check()?;
            for d in &found.damaged {
                println!(
                    "{}",
                    serde_json::json!({"kind": d.kind, "of": d.key, "offset": d.offset, "length": d.len, "reason": d.reason})
                );
            }
            println!(
                "{} bodies read back, {} damaged",
                found.bodies,
                found.damaged.len()
            );
            if !found.damaged.is_empty() {
                anyhow::bail!(
                    "{} damaged bodies; their deliveries are held back (see Stats and each report's history)",
                    found.damaged.len()
                );
            }
            Ok(())
        }
        Command::Audit {
            command: AuditCommand::Verify { config },
        } => {
            let store = open_stopped_store(&config)?;
            let head = store
                .verify_audit()
                .map_err(|e| anyhow::anyhow!("audit chain broken: {e}"))?;
            println!(
                "audit chain intact: {} records, head {}",
                head.next_seq,
                hex::encode(head.hash)
            );
            Ok(())
        }
    }
}

/// An operator's connection to the hub's admin API, and the hub's keys to
/// check the list heads it signs.
struct Operator {
    rt: tokio::runtime::Runtime,
    admin: pb::admin_client::AdminClient<tonic::transport::Channel>,
    keyring: Keyring,
}

impl Operator {
    fn connect(path: &std::path::Path) -> anyhow::Result<Operator> {
        let cfg = OperatorConfig::load(path)?;
        let keyring = Keyring::load(&cfg.keyring)?;
        let rt = tokio::runtime::Runtime::new()?;
        let channel = rt.block_on(meldnet_net::connect(&cfg.hub, &cfg.tls))?;
        Ok(Operator {
            rt,
            admin: pb::admin_client::AdminClient::new(channel),
            keyring,
        })
    }

    /// Checks the hub's signature on a head; as JSON.
    fn show(&self, head: Option<pb::SignedListHead>) -> anyhow::Result<serde_json::Value> {
        let head = head.context("the hub sent no list head")?;
        Ok(describe_head(&self.keyring, &head)?)
    }
}

#[allow(
    clippy::indexing_slicing,
    reason = "serde_json indexing: a read of a missing key is Null, a write goes to an object made here"
)]
fn list_command(command: ListCommand) -> anyhow::Result<()> {
    match command {
        ListCommand::Import {
            operator,
            source_country,
            format,
            mapping,
            file,
        } => {
            let source =
                meldnet_core::CountryCode::parse(&source_country).context("--source-country")?;
            let mapping = match mapping {
                Some(p) => meldnet_core::config::load(&p)?,
                None => Default::default(),
            };
            let op = Operator::connect(&operator)?;
            let admin = op.admin.clone();
            let (summary, last_head) = import_via(
                &op.rt,
                &file,
                format,
                &mapping,
                source,
                &meldnet_cli::TerminalProgress::new(),
                |req| {
                    let mut admin = admin.clone();
                    async move { admin.list_add(req).await.map(|r| r.into_inner()) }
                },
            )?;
            let mut out = serde_json::to_value(summary)?;
            let head = match last_head {
                Some(h) => Some(h),
                None => Some(
                    op.rt
                        .block_on(op.admin.clone().list_status(pb::ListStatusRequest {}))?
                        .into_inner(),
                ),
            };
            out["list"] = op.show(head)?;
            println!("{out}");
            Ok(())
        }
        ListCommand::Withdraw {
            operator,
            entry,
            reason,
        } => {
            let mut op = Operator::connect(&operator)?;
            let r = op
                .rt
                .block_on(op.admin.list_withdraw(pb::ListWithdrawRequest {
                    entry_version: entry,
                    reason,
                }))?
                .into_inner();
            println!(
                "{}",
                serde_json::json!({"withdrawn": entry, "list": op.show(r.head)?})
            );
            Ok(())
        }
        ListCommand::Status { operator } => {
            let mut op = Operator::connect(&operator)?;
            let head = op
                .rt
                .block_on(op.admin.list_status(pb::ListStatusRequest {}))?
                .into_inner();
            println!("{}", op.show(Some(head))?);
            Ok(())
        }
    }
}

fn registration_json(r: &pb::Registration) -> serde_json::Value {
    serde_json::json!({
        "identity": r.identity, "signing_keys": r.signing_keys, "revoked": r.revoked,
        "reason": r.reason, "updated_at_ms": r.updated_at_ms, "source": r.source,
    })
}

fn when(ms: i64) -> String {
    if ms == 0 {
        "-".into()
    } else {
        meldnet_core::time::rfc3339(ms)
    }
}

fn purpose(p: i32) -> &'static str {
    pb::Purpose::try_from(p)
        .map(|p| p.as_str_name().trim_start_matches("PURPOSE_"))
        .unwrap_or("UNKNOWN")
}

fn kind_name(k: i32) -> &'static str {
    pb::DecisionKind::try_from(k)
        .map(|k| k.as_str_name().trim_start_matches("DECISION_KIND_"))
        .unwrap_or("UNKNOWN")
}

fn decision_json(d: &pb::Decision) -> serde_json::Value {
    serde_json::json!({
        "kind": kind_name(d.kind),
        "decided_at_ms": d.decided_at_ms,
        "eu_link": d.eu_link,
        "eu_link_facts": d.eu_link_facts,
        "rules_version": d.rules_version,
        "rules": d.rules.iter().map(|m| serde_json::json!({"rule": m.rule, "recipients": m.recipients, "why": m.why})).collect::<Vec<_>>(),
        "recipients": d.recipients.iter().map(|r| serde_json::json!({"identity": r.identity, "purpose": purpose(r.purpose), "first": r.first, "rule": r.rule, "reason": r.reason})).collect::<Vec<_>>(),
        "reasons": d.reasons,
        "case": d.case_ref.as_ref().map(|c| serde_json::json!({"case_id": c.case_id, "kind": kind_name(c.kind), "first_report_id": c.first_report_id, "matched_by": c.matched_by, "deadline_ms": c.deadline_ms, "hosting_country": c.hosting_country, "location": c.location})),
    })
}

fn explanation_json(e: &pb::Explanation) -> anyhow::Result<serde_json::Value> {
    use prost::Message;
    let view = e.report.as_ref().context("the hub sent no report")?;
    let report = view
        .report
        .as_ref()
        .map(|r| pb::Report::decode(r.report.as_slice()))
        .transpose()?
        .unwrap_or_default();
    let decision = view
        .decision
        .as_ref()
        .map(|d| pb::Decision::decode(d.decision.as_slice()))
        .transpose()?
        .unwrap_or_default();
    let case = match &e.case_view {
        None => serde_json::Value::Null,
        Some(c) => {
            let locations = c
                .locations
                .iter()
                .map(|l| {
                    let received = l
                        .step_received_at_ms
                        .iter()
                        .copied()
                        .chain(std::iter::repeat(0));
                    let steps = l
                        .steps
                        .iter()
                        .zip(received)
                        .filter_map(|(s, got)| Some((meldnet_core::CaseStep::decode(&s.step).ok()?, got)))
                        .map(|(s, got)| serde_json::json!({"step_id": s.step_id.to_string(), "kind": s.kind.name(), "at_ms": s.at_ms, "received_at_ms": got, "provider": s.provider.as_ref().map(|p| p.to_string()), "reason": (!s.reason.is_empty()).then_some(&s.reason)}))
                        .collect::<Vec<_>>();
                    let escalations = l
                        .escalations
                        .iter()
                        .filter_map(|d| pb::Decision::decode(d.decision.as_slice()).ok())
                        .map(|d| decision_json(&d))
                        .collect::<Vec<_>>();
                    serde_json::json!({
                        "location": l.location, "hosting_country": l.hosting_country,
                        "first_report_id": l.first_report_id, "opened_at_ms": l.opened_at_ms,
                        "noticed_at_ms": l.noticed_at_ms, "noticed_by_report_id": l.noticed_by_report_id,
                        "deadline_ms": l.deadline_ms, "state": l.state, "steps": steps,
                        "escalations": escalations,
                        "provider": l.provider.as_ref().map(|p| format!("{} (AS{})", p.name, p.asn)),
                        "removed_at_ms": l.removed_at_ms,
                        "moved_to_case_id": l.moved_to_case_id,
                    })
                })
                .collect::<Vec<_>>();
            serde_json::json!({
                "case_id": c.case_id, "first_report_id": c.first_report_id,
                "opened_at_ms": c.opened_at_ms, "assessment": c.assessment,
                "sightings": c.sighting_report_ids, "locations": locations,
            })
        }
    };
    Ok(serde_json::json!({
        "report_id": report.id,
        "origin": decision.origin,
        "received_at_ms": view.received_at_ms,
        "url": report.url,
        "hosting_country": report.eu_link.as_ref().map(|l| l.hosting_country.clone()),
        "decision": decision_json(&decision),
        "case": case,
        "history": e.history.iter().map(|h| serde_json::json!({"at_ms": h.at_ms, "kind": h.kind, "actor": h.actor, "detail": h.detail})).collect::<Vec<_>>(),
    }))
}

/// The explanation as text for an operator.
fn print_explanation(j: &serde_json::Value) {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    let t = |v: &serde_json::Value| when(v.as_i64().unwrap_or(0));
    let d = &j["decision"];
    println!(
        "report {}  from {}  received {}",
        s(&j["report_id"]),
        s(&j["origin"]),
        t(&j["received_at_ms"])
    );
    println!(
        "  url {}  hosting {}",
        s(&j["url"]),
        s(&j["hosting_country"])
    );
    println!(
        "decision {} under routing rules v{}",
        s(&d["kind"]),
        d["rules_version"]
    );
    for f in d["eu_link_facts"].as_array().into_iter().flatten() {
        println!("  fact: {}", s(f));
    }
    for r in d["recipients"].as_array().into_iter().flatten() {
        println!(
            "  to {}  {}{}  [rule {}]",
            s(&r["identity"]),
            s(&r["purpose"]),
            if r["first"] == true { " (first)" } else { "" },
            s(&r["rule"])
        );
    }
    for r in d["reasons"].as_array().into_iter().flatten() {
        println!("  reason: {}", s(r));
    }
    let c = &j["case"];
    if !c.is_null() {
        println!(
            "case {}  assessed {}  opened {}",
            s(&c["case_id"]),
            s(&c["assessment"]),
            t(&c["opened_at_ms"]),
        );
        println!("  opened by report {}", s(&c["first_report_id"]));
        for r in c["sightings"].as_array().into_iter().flatten() {
            println!("  sighting: report {}", s(r));
        }
        for l in c["locations"].as_array().into_iter().flatten() {
            println!(
                "  location {}  state {}  hosting {}  from report {}  deadline {}",
                l["location"],
                s(&l["state"]),
                s(&l["hosting_country"]),
                s(&l["first_report_id"]),
                t(&l["deadline_ms"])
            );
            for st in l["steps"].as_array().into_iter().flatten() {
                println!(
                    "    step: {} {} {}",
                    t(&st["at_ms"]),
                    s(&st["kind"]),
                    st["provider"].as_str().unwrap_or("")
                );
            }
            for e in l["escalations"].as_array().into_iter().flatten() {
                let to: Vec<String> = e["recipients"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| s(&r["identity"]))
                    .collect();
                println!(
                    "    escalation: {} to {}",
                    t(&e["decided_at_ms"]),
                    to.join(", ")
                );
            }
        }
    }
    println!("history:");
    for h in j["history"].as_array().into_iter().flatten() {
        println!(
            "  {}  {:<12}  {}  {}",
            t(&h["at_ms"]),
            s(&h["kind"]),
            s(&h["actor"]),
            s(&h["detail"])
        );
    }
}

fn print_stats(st: &pb::StatsResponse) {
    let line = |v: &[pb::CountryCount]| {
        v.iter()
            .map(|c| format!("{} {}", c.country, c.reports))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("reports by origin:  {}", line(&st.by_origin));
    println!("reports by hosting: {}", line(&st.by_hosting));
    println!(
        "reports of known material {}, of new material {}",
        st.known_reports, st.new_reports
    );
    println!(
        "cases {}  sightings {}  deadlines missed {}",
        st.cases, st.sightings, st.deadlines_missed
    );
    println!(
        "deliveries refused by recipients {}  held back for a damaged body {}",
        st.deliveries_refused, st.deliveries_held_back
    );
    println!("hosting providers, those that don't clean up first:");
    println!(
        "  {:<24} {:>10} {:>7} {:>7} {:>11} {:>7} {:>12} {:>12} {:>9} {:>9} {:>7} {:>11}",
        "provider",
        "asn",
        "notices",
        "removed",
        "not removed",
        "missed",
        "median h",
        "p90 h",
        "answered",
        "in time",
        "refused",
        "reappeared"
    );
    for p in &st.providers {
        // No removal yet: no time to removal to show.
        let h = |ms: i64| {
            if p.removed == 0 {
                "-".to_string()
            } else {
                format!("{:.1}", ms as f64 / 3_600_000.0)
            }
        };
        println!(
            "  {:<24} {:>10} {:>7} {:>7} {:>11} {:>7} {:>12} {:>12} {:>9} {:>9} {:>7} {:>11}",
            p.name,
            p.asn,
            p.notices,
            p.removed,
            p.not_removed,
            p.deadlines_missed,
            h(p.median_removal_ms),
            h(p.p90_removal_ms),
            p.answered_in_time,
            p.removed_in_time,
            p.refused,
            p.reappearances
        );
    }
}

fn admin_command(operator: &std::path::Path, command: AdminCommand) -> anyhow::Result<()> {
    let mut op = Operator::connect(operator)?;
    let rt = &op.rt;
    match command {
        AdminCommand::Rules => {
            let r = rt
                .block_on(op.admin.get_rules(pb::GetRulesRequest {}))?
                .into_inner();
            println!("# routing rules v{}\n{}", r.version, r.toml.trim_end());
        }
        AdminCommand::SetRules { file } => {
            let toml =
                std::fs::read_to_string(&file).with_context(|| file.display().to_string())?;
            let r = rt
                .block_on(op.admin.set_rules(pb::RoutingRules { version: 0, toml }))?
                .into_inner();
            println!("{}", serde_json::json!({"rules_version": r.version}));
        }
        AdminCommand::Explain { report_id, json } => {
            let e = rt
                .block_on(op.admin.explain(pb::ExplainRequest { report_id }))?
                .into_inner();
            let j = explanation_json(&e)?;
            if json {
                println!("{j}");
            } else {
                print_explanation(&j);
            }
        }
        AdminCommand::Stats {
            json,
            signed: Some(file),
        } => {
            let signed = rt
                .block_on(op.admin.export_stats(pb::StatsRequest {}))?
                .into_inner();
            meldnet_core::append_file::write_durably(&file, &signed.encode_to_vec())
                .with_context(|| file.display().to_string())?;
            let export = pb::StatsExport::decode(signed.stats_export.as_slice())
                .context("the hub's export does not decode")?;
            let st = export.stats.unwrap_or_default();
            if json {
                println!(
                    "{}",
                    serde_json::json!({"signed": file, "made_at": meldnet_core::time::rfc3339(export.made_at_ms), "key_id": signed.key_id, "stats": meldnet_cli::stats_json(&st)})
                );
            } else {
                print_stats(&st);
                println!(
                    "signed by the hub (key {}) in {}",
                    signed.key_id,
                    file.display()
                );
            }
        }
        AdminCommand::Stats { json, signed: None } => {
            let st = rt
                .block_on(op.admin.stats(pb::StatsRequest {}))?
                .into_inner();
            if json {
                println!("{}", meldnet_cli::stats_json(&st));
            } else {
                print_stats(&st);
            }
        }
        AdminCommand::Register {
            identity,
            public_keys,
        } => {
            let r = rt
                .block_on(op.admin.register(pb::Registration {
                    identity,
                    signing_keys: public_keys,
                    ..Default::default()
                }))?
                .into_inner();
            println!("{}", registration_json(&r));
        }
        AdminCommand::Revoke { identity, reason } => {
            let r = rt
                .block_on(op.admin.revoke(pb::RevokeRequest { identity, reason }))?
                .into_inner();
            println!("{}", registration_json(&r));
        }
        AdminCommand::Split { report, reason } => {
            let r = rt
                .block_on(op.admin.split_report(pb::SplitRequest {
                    report_id: report,
                    reason,
                }))?
                .into_inner();
            let decision = r
                .decision
                .as_ref()
                .and_then(|d| {
                    use prost::Message;
                    pb::Decision::decode(d.decision.as_slice()).ok()
                })
                .unwrap_or_default();
            println!(
                "{}",
                serde_json::json!({"case_id": r.case_id, "from_case_id": r.from_case_id, "decision": decision_json(&decision)})
            );
        }
        AdminCommand::Registry => {
            let l = rt
                .block_on(op.admin.list_registry(pb::ListRegistryRequest {}))?
                .into_inner();
            for r in &l.parties {
                println!("{}", registration_json(r));
            }
        }
        AdminCommand::AdvanceClock { hours } => {
            let r = rt
                .block_on(op.admin.advance_clock(pb::AdvanceClockRequest {
                    by_ms: i64::from(hours) * 3_600_000,
                }))?
                .into_inner();
            println!(
                "{}",
                serde_json::json!({"now_ms": r.now_ms, "now": when(r.now_ms)})
            );
        }
    }
    Ok(())
}
