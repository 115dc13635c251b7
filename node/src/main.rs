//! `meldnet-node`: a hotline's node. Build reports from files the hotline
//! holds, sign and submit them, and receive the reports routed to its country.

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use meldnet_cli::{
    log_command, receive_and_print, show_received, LogArgs, LogCommand, ReceiveArgs, ReceivedArgs,
};
use meldnet_core::CountryCode;
use meldnet_core::Keyring;
use meldnet_core::Role;
use meldnet_core::SigningKey;
use meldnet_core::{AgeGroup, Classification, EuLinkFacts, MediaType};
use meldnet_core::{CaseId, CaseStep, HostingProvider, StepId, StepKind};
use meldnet_list::describe_head;
use meldnet_list::{import_via, ListFormat};
use meldnet_node::config::NodeConfig;
use meldnet_node::list::{NodeList, LIST_FILE, LIST_FORMAT};
use meldnet_node::outbox::Outbox;
use meldnet_node::picture::hash_many;
use meldnet_node::report::{build, sign, ReportInput};
use meldnet_node::submit::submit_outbox;
use meldnet_recipient::Keep;
use meldnet_recipient::{DELIVERY_LOG, LOG_FILE};
use serde_json::json;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "meldnet-node",
    version,
    about = "A national hotline's node of the federation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Reports: build and list.
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// Sign the drafts, send the outbox to the hub, keep the receipts.
    Submit {
        #[arg(long)]
        config: PathBuf,
    },
    /// Receive the reports routed to this node, verify, store, acknowledge.
    Inbox(ReceiveArgs),
    /// Hash files locally: SHA-256, MD5 and, for images, PDQ with its quality.
    Hash(HashArgs),
    /// Show the reports received (verified again from the stored bytes); export them as files.
    Received(ReceivedArgs),
    /// The inbox's delivery log: check it for damage, salvage its good records.
    Log {
        #[command(subcommand)]
        command: LogCommand,
    },
    /// Serve hash checks to this country's hosting providers (gRPC and
    /// HTTP/JSON over mTLS) and follow the hub's known-hash list, until
    /// SIGINT/SIGTERM.
    Serve {
        #[arg(long)]
        config: PathBuf,
        /// Write the bound address to this file once listening.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// The node's copy of the federated known-hash list.
    List {
        #[command(subcommand)]
        command: ListCommand,
    },
    /// Notice-and-takedown of the cases hosted in this node's country.
    Case {
        #[command(subcommand)]
        command: CaseCommand,
    },
    /// Standard notices to this country's hosting providers (`serve` with
    /// `[notices]` sends them).
    Notice {
        #[command(subcommand)]
        command: NoticeCommand,
    },
}

#[derive(Subcommand)]
enum NoticeCommand {
    /// Name the provider that hosts a case's location: the analyst's
    /// choice goes before the register's. A location waiting for a
    /// provider gets its notice within a second of `serve` reading it.
    Assign {
        #[arg(long)]
        config: PathBuf,
        /// The case id (from the delivery's decision).
        #[arg(long = "case")]
        case_id: String,
        /// Which location of the case (0 by default).
        #[arg(long, default_value_t = 0)]
        location: u32,
        /// The provider's name in `[[notices.providers]]`.
        #[arg(long)]
        provider: String,
    },
}

/// `notice assign`: checks the choice against the register and leaves it
/// for `serve` (which holds the notice store), written durably.
fn notice_assign(
    config: &std::path::Path,
    case_id: &str,
    location: u32,
    provider: &str,
) -> anyhow::Result<()> {
    let cfg = meldnet_node::config::NodeConfig::load(config)?;
    let Some(n) = cfg.notices else {
        bail!(
            "{}: no [notices]: this node sends no notices",
            config.display()
        );
    };
    let case = CaseId::parse(case_id).map_err(|e| anyhow::anyhow!("--case: {e}"))?;
    if !n.providers.iter().any(|p| p.name == provider) {
        bail!(
            "--provider: {provider:?} is not in [[notices.providers]] ({})",
            n.providers
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let a = meldnet_node::notices::Assignment {
        case_id: case.to_string(),
        location,
        provider: provider.to_string(),
    };
    let path = meldnet_node::notices::assignment_path(&n.dir, &case, location);
    let text = toml::to_string(&a)?;
    meldnet_core::append_file::write_durably(&path, text.as_bytes())
        .with_context(|| path.display().to_string())?;
    println!(
        "{}",
        json!({"case_id": a.case_id, "location": location, "provider": provider, "file": path})
    );
    Ok(())
}

#[derive(Subcommand)]
enum CaseCommand {
    /// Record a step of a case, signed by this node: the hub stores it and
    /// judges the takedown deadline on it.
    Step {
        #[arg(long)]
        config: PathBuf,
        /// The case id (from the delivery's decision).
        #[arg(long = "case")]
        case_id: String,
        /// Which location of the case (`case.location` of the decision
        /// that asked for the notice; 0, the first, by default).
        #[arg(long, default_value_t = 0)]
        location: u32,
        /// What happened.
        #[arg(long, value_enum)]
        kind: StepArg,
        /// The hosting provider noticed (required with notice-sent).
        #[arg(long)]
        provider_name: Option<String>,
        /// Its autonomous system number.
        #[arg(long)]
        asn: Option<u32>,
        /// Why the provider refused (required with refused): its reason
        /// code and words.
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum StepArg {
    NoticeSent,
    Removed,
    NotRemoved,
    Reappeared,
    Received,
    NotFound,
    Refused,
}

impl StepArg {
    fn kind(self) -> StepKind {
        match self {
            StepArg::NoticeSent => StepKind::NoticeSent,
            StepArg::Removed => StepKind::Removed,
            StepArg::NotRemoved => StepKind::NotRemoved,
            StepArg::Reappeared => StepKind::Reappeared,
            StepArg::Received => StepKind::Received,
            StepArg::NotFound => StepKind::NotFound,
            StepArg::Refused => StepKind::Refused,
        }
    }
}

/// `case step`: builds the step from the flags, signs its exact bytes, sends it.
async fn case_step(
    config: &std::path::Path,
    (case_id, location): (&str, u32),
    kind: StepArg,
    (provider_name, asn): (Option<&str>, Option<u32>),
    reason: Option<&str>,
) -> anyhow::Result<bool> {
    let node = Node::load(config)?;
    let case_id = CaseId::parse(case_id).map_err(|e| anyhow::anyhow!("--case: {e}"))?;
    let provider = match (provider_name, asn) {
        (Some(n), Some(a)) => Some(HostingProvider::new(n, a).map_err(|e| {
            let flag = if e.field == "provider.asn" {
                "--asn"
            } else {
                "--provider-name"
            };
            anyhow::anyhow!("{flag}: {}", e.reason)
        })?),
        (None, None) => None,
        _ => bail!("--provider-name and --asn go together"),
    };
    if matches!(kind, StepArg::NoticeSent) && provider.is_none() {
        bail!("a notice names the hosting provider: --provider-name and --asn");
    }
    let step = CaseStep {
        step_id: StepId::new_v7(),
        case_id,
        country: node.country,
        kind: kind.kind(),
        at_ms: meldnet_core::time::now_ms(),
        provider,
        location,
        reason: reason.unwrap_or_default().to_string(),
    };
    let key = SigningKey::load(&node.cfg.signing_key)?;
    let channel = meldnet_net::connect(&node.cfg.hub, &node.cfg.tls).await?;
    let mut client = meldnet_proto::v1::cases_client::CasesClient::new(channel);
    match client.record_step(step.sign(&key)).await {
        Ok(r) => {
            let r = r.into_inner();
            println!(
                "{}",
                json!({"case_id": r.case_id, "location": r.location, "step": step.kind.name(), "step_id": step.step_id.to_string(), "state": r.state, "deadline_ms": r.deadline_ms, "steps": r.steps})
            );
            Ok(true)
        }
        Err(status) => {
            println!(
                "{}",
                json!({"case_id": case_id.to_string(), "status": "refused", "code": status.code().description(), "message": status.message()})
            );
            Ok(false)
        }
    }
}

#[derive(Subcommand)]
enum ListCommand {
    /// Follow the hub's list: a snapshot when empty, then the changes,
    /// each batch checked against the hub's signed head before it is applied.
    Sync {
        #[arg(long)]
        config: PathBuf,
    },
    /// What this node holds: version, entries, digest.
    Status {
        #[arg(long)]
        config: PathBuf,
    },
    /// Check the stored list for damage: every damaged range with its
    /// offset; with --config also every batch against the hub's signed
    /// heads. Exit status 1 when anything is wrong. Changes nothing.
    Check(LogArgs),
    /// Replace a damaged list by the part before the first damage (kept
    /// original beside it); `list sync` then fetches the rest again from the
    /// hub, which signs it.
    Salvage(LogArgs),
    /// Import this country's national list into the federated list (each
    /// entry's source is this node's country): a summary (added, duplicate,
    /// invalid) last, each invalid row with its line and reason.
    Import {
        #[arg(long)]
        config: PathBuf,
        /// `csv` or `vics`.
        #[arg(long, default_value = "csv")]
        format: ListFormat,
        /// TOML file naming the CSV columns and what each category means.
        #[arg(long)]
        mapping: Option<PathBuf>,
        /// The list file.
        file: PathBuf,
    },
}

/// `list check` and `list salvage`: the records' checksums (the shared
/// `log_repair`), then, for a check with the node's config, every batch
/// against the hub's signed heads as `list sync` checks it.
fn list_check(command: LogCommand) -> anyhow::Result<bool> {
    let a = command.args();
    let config = a.config.as_deref().map(NodeConfig::load).transpose()?;
    let path = match (&a.log, &config) {
        (Some(p), _) => p.clone(),
        (None, Some(c)) => c.list_dir.join(LIST_FILE),
        (None, None) => bail!("give --config or --log"),
    };
    let keep = Keep::UpToFirstDamage {
        refetch: "meldnet-node list sync",
    };
    let ok = log_command(&command, &path, &LIST_FORMAT, keep, "meldnet-node list")?;
    if let (true, LogCommand::Check(_), Some(c)) = (ok, &command, &config) {
        return match NodeList::open_read(&c.list_dir, Keyring::load(&c.keyring)?) {
            Ok(list) => {
                let tip = list.map(|l| l.tip()).unwrap_or_default();
                eprintln!(
                    "{}: every batch leads to the hub's signed head (version {}, {} entries)",
                    path.display(),
                    tip.version,
                    tip.count
                );
                Ok(true)
            }
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                Ok(false)
            }
        };
    }
    Ok(ok)
}

#[derive(Args)]
struct HashArgs {
    /// One JSON object per line: file, sha256, md5, pdq, pdq_quality, media_type (or error).
    #[arg(long)]
    json: bool,
    /// Also the PDQ hashes of the eight rotations and mirrors.
    #[arg(long)]
    dihedral: bool,
    /// Files hashed at once (default: one per core).
    #[arg(long)]
    jobs: Option<usize>,
    /// The files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

/// `meldnet-node hash`: one line per file, in the order given; false when any failed.
#[allow(
    clippy::indexing_slicing,
    reason = "serde_json indexing: a read of a missing key is Null, a write goes to an object made here"
)]
fn hash_command(a: &HashArgs) -> bool {
    let jobs = a
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut ok = true;
    hash_many(&a.files, jobs, a.dihedral, |path, result| {
        let file = path.display().to_string();
        match result {
            Ok(r) => {
                let mut line = json!({
                    "file": file,
                    "sha256": r.exact.sha256.to_hex(),
                    "md5": r.exact.md5.to_hex(),
                    "media_type": r.media_type.name(),
                });
                if let Some((h, q)) = r.pdq {
                    line["pdq"] = h.to_hex().into();
                    line["pdq_quality"] = q.into();
                }
                if let Some(d) = &r.dihedral {
                    line["dihedral"] = d
                        .named()
                        .iter()
                        .map(|(n, h)| ((*n).to_string(), serde_json::Value::from(h.to_hex())))
                        .collect::<serde_json::Map<_, _>>()
                        .into();
                }
                if a.json {
                    println!("{line}");
                } else {
                    let pdq = r
                        .pdq
                        .map_or("-\t-".to_string(), |(h, q)| format!("{h}\t{q}"));
                    println!(
                        "{file}\t{}\t{}\t{pdq}\t{}",
                        r.exact.sha256,
                        r.exact.md5,
                        r.media_type.name()
                    );
                }
            }
            Err(e) => {
                ok = false;
                if a.json {
                    println!("{}", json!({"file": file, "error": e.to_string()}));
                } else {
                    println!("{file}\terror: {e}");
                }
            }
        }
    });
    ok
}

#[derive(Subcommand)]
enum ReportCommand {
    /// Hash FILES locally and save a draft report (the files never leave this machine).
    New(NewArgs),
    /// List drafts, the outbox, receipts and refused reports.
    List {
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Args)]
struct NewArgs {
    #[arg(long)]
    config: PathBuf,
    /// Where the material was seen.
    #[arg(long)]
    url: String,
    /// Country where the material is hosted (ISO 3166-1 alpha-2).
    #[arg(long)]
    hosting: Option<String>,
    /// Country where a suspect is located.
    #[arg(long)]
    suspect: Option<String>,
    /// Country where a victim is located.
    #[arg(long)]
    victim: Option<String>,
    /// Country of the service provider's main establishment.
    #[arg(long)]
    provider: Option<String>,
    /// baseline, national, not-illegal or unassessed.
    #[arg(long)]
    classification: Classification,
    /// infant-toddler, prepubescent, pubescent or unknown.
    #[arg(long)]
    age_group: AgeGroup,
    /// image, video or other (default: from each file's name).
    #[arg(long)]
    media_type: Option<MediaType>,
    /// Sign and submit right away.
    #[arg(long)]
    submit: bool,
    /// The files the hotline holds.
    files: Vec<PathBuf>,
}

fn country(flag: &str, v: &Option<String>) -> anyhow::Result<Option<CountryCode>> {
    v.as_deref()
        .map(|s| CountryCode::parse(s).with_context(|| format!("--{flag}")))
        .transpose()
}

struct Node {
    cfg: NodeConfig,
    country: CountryCode,
}

impl Node {
    fn load(path: &std::path::Path) -> anyhow::Result<Node> {
        let cfg = NodeConfig::load(path)?;
        let id = cfg.tls.identity()?;
        let Role::Node(country) = id.role() else {
            bail!("tls.cert: {id} is not a node identity");
        };
        Ok(Node {
            country: *country,
            cfg,
        })
    }

    fn outbox(&self) -> anyhow::Result<Outbox> {
        Outbox::open(&self.cfg.data_dir).with_context(|| {
            format!(
                "data_dir {} (is another meldnet-node command running?)",
                self.cfg.data_dir.display()
            )
        })
    }
}

/// `list import`: the national list, streamed to the hub in batches.
#[allow(
    clippy::indexing_slicing,
    reason = "serde_json indexing: a read of a missing key is Null, a write goes to an object made here"
)]
fn import_command(
    rt: &tokio::runtime::Runtime,
    config: &std::path::Path,
    format: ListFormat,
    mapping: Option<&std::path::Path>,
    file: &std::path::Path,
) -> anyhow::Result<()> {
    let node = Node::load(config)?;
    let mapping = match mapping {
        Some(p) => meldnet_core::config::load(p)?,
        None => Default::default(),
    };
    let keyring = Keyring::load(&node.cfg.keyring)?;
    let channel = rt.block_on(meldnet_net::connect(&node.cfg.hub, &node.cfg.tls))?;
    let client = meldnet_proto::v1::hash_list_client::HashListClient::new(channel);
    let progress = meldnet_cli::TerminalProgress::new();
    let (summary, head) = import_via(rt, file, format, &mapping, node.country, &progress, |req| {
        let mut client = client.clone();
        async move { client.contribute(req).await.map(|r| r.into_inner()) }
    })?;
    let mut out = serde_json::to_value(summary)?;
    if let Some(h) = head {
        out["list"] = describe_head(&keyring, &h)?;
    }
    println!("{out}");
    Ok(())
}

/// Signs the drafts and sends the outbox. Takes the open outbox: sled
/// releases its lock only when its background thread lets go, so opening it
/// again right after closing it can fail.
async fn submit(node: &Node, outbox: &Outbox) -> anyhow::Result<bool> {
    let key = SigningKey::load(&node.cfg.signing_key)?;
    let drafts = outbox.drafts()?;
    let signed: Vec<_> = drafts.iter().map(|(id, r)| (*id, sign(r, &key))).collect();
    outbox.sign_drafts(signed)?;
    let keyring = Keyring::load(&node.cfg.keyring)?;
    let channel = meldnet_net::connect(&node.cfg.hub, &node.cfg.tls).await?;
    let s = submit_outbox(outbox, channel, &keyring).await?;
    for (id, d) in &s.accepted {
        let to: Vec<&str> = d.recipients.iter().map(|r| r.identity.as_str()).collect();
        println!(
            "{}",
            json!({"report_id": id.to_string(), "status": "accepted", "eu_link": d.eu_link, "recipients": to, "reasons": d.reasons,
                "case": d.case_ref.as_ref().map(|c| json!({"case_id": c.case_id, "kind": meldnet_proto::v1::DecisionKind::try_from(c.kind).map(|k| k.as_str_name()).unwrap_or("UNKNOWN"), "first_report_id": c.first_report_id, "matched_by": c.matched_by, "deadline_ms": c.deadline_ms, "location": c.location, "hosting_country": c.hosting_country}))})
        );
    }
    for (id, r) in &s.refused {
        println!(
            "{}",
            json!({"report_id": id.to_string(), "status": "refused", "code": tonic::Code::from_i32(r.code).description(), "message": r.message})
        );
    }
    eprintln!(
        "submitted: {} accepted, {} refused, {} left in the outbox to retry",
        s.accepted.len(),
        s.refused.len(),
        s.retry
    );
    Ok(s.refused.is_empty() && s.retry == 0)
}

/// mimalloc: the store and the gRPC stack allocate and free millions of small
/// buffers a minute; glibc's allocator spent a third of the hub's time on it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    meldnet_cli::exit_code("meldnet-node", run())
}

fn run() -> anyhow::Result<()> {
    meldnet_cli::init_process("warn");
    let cli = Cli::parse();
    if let Command::Hash(a) = &cli.command {
        if !hash_command(a) {
            std::process::exit(1);
        }
        return Ok(());
    }
    let rt = tokio::runtime::Runtime::new()?;
    if let Command::List {
        command:
            ListCommand::Import {
                config,
                format,
                mapping,
                file,
            },
    } = &cli.command
    {
        return import_command(&rt, config, *format, mapping.as_deref(), file);
    }
    let ok = rt.block_on(async move {
        match cli.command {
            Command::Report {
                command: ReportCommand::New(a),
            } => {
                let node = Node::load(&a.config)?;
                let input = ReportInput {
                    url: a.url.clone(),
                    eu_link: EuLinkFacts {
                        hosting: country("hosting", &a.hosting)?,
                        suspect: country("suspect", &a.suspect)?,
                        victim: country("victim", &a.victim)?,
                        provider: country("provider", &a.provider)?,
                    },
                    classification: a.classification,
                    age_group: a.age_group,
                    media_type: a.media_type,
                    files: a.files.clone(),
                };
                let list = NodeList::open_read(&node.cfg.list_dir, Keyring::load(&node.cfg.keyring)?)?;
                if list.is_none() {
                    eprintln!("warning: no known-hash list here yet (run `meldnet-node list sync`): items go out unchecked");
                }
                let report = build(node.country, &input, list.as_ref())?;
                let outbox = node.outbox()?;
                outbox.add_draft(&report.to_proto(), &report.id)?;
                println!(
                    "{}",
                    json!({
                        "report_id": report.id.to_string(),
                        "status": "draft",
                        "items": report.items.iter().map(|i| json!({"sha256": i.sha256.to_hex(), "md5": i.md5.to_hex(), "media_type": i.media_type.name(), "known": i.known.map_or("unchecked".into(), |k| k.describe())})).collect::<Vec<_>>(),
                    })
                );
                if a.submit {
                    return submit(&node, &outbox).await;
                }
                Ok(true)
            }
            Command::Report {
                command: ReportCommand::List { config },
            } => {
                let node = Node::load(&config)?;
                let outbox = node.outbox()?;
                for (id, _) in outbox.drafts()? {
                    println!("draft    {id}");
                }
                for (id, _) in outbox.outbox()? {
                    println!("outbox   {id}");
                }
                for (id, _) in outbox.receipts()? {
                    println!("receipt  {id}");
                }
                for (id, r) in outbox.refused()? {
                    println!("refused  {id}  {}", r.message);
                }
                Ok(true)
            }
            Command::Submit { config } => {
                let node = Node::load(&config)?;
                let outbox = node.outbox()?;
                submit(&node, &outbox).await
            }
            Command::Inbox(args) => {
                let node = Node::load(&args.config)?;
                let c = &node.cfg;
                Ok(receive_and_print(&c.hub, &c.tls, &c.keyring, &c.inbox_dir, &args, "inbox").await?)
            }
            Command::Hash(_)
            | Command::List {
                command: ListCommand::Import { .. },
            } => Ok(true),
            Command::Serve { config, ready_file } => {
                let node = Node::load(&config)?;
                // The name providers check the node's certificate for.
                let server_name = match &node.cfg.hash_check {
                    Some(hc) => hc.tls.dns_names()?.into_iter().next(),
                    None => None,
                };
                let shutdown = meldnet_cli::shutdown_signal();
                meldnet_node::serve::serve(node.cfg, node.country, shutdown, |addr| {
                    if let Some(f) = &ready_file {
                        if let Err(e) = std::fs::write(f, addr.to_string()) {
                            eprintln!("could not write the ready file: {e}");
                        }
                    }
                    // Where providers call, on stdout for whoever started it
                    // (`listen` may say port 0: the system picks one).
                    println!(
                        "{}",
                        json!({"listening": addr.to_string(), "server_name": server_name, "grpc": format!("https://{addr}/meldnet.v1.HashCheck/Check"), "http": format!("https://{addr}/v1/check")})
                    );
                })
                .await?;
                Ok(true)
            }
            Command::List {
                command: ListCommand::Sync { config },
            } => {
                let node = Node::load(&config)?;
                let c = &node.cfg;
                let list = NodeList::open_for_sync(&c.list_dir, Keyring::load(&c.keyring)?)
                    .with_context(|| format!("list_dir {} (is another sync running?)", c.list_dir.display()))?;
                let list = tokio::sync::RwLock::new(list);
                let channel = meldnet_net::connect(&c.hub, &c.tls).await?;
                let s = meldnet_node::list::sync(&list, channel, |tip| eprintln!("list: {tip}")).await?;
                println!(
                    "{}",
                    json!({"from_version": s.from.version, "version": s.to.version, "entries": s.to.count, "digest": hex::encode(s.to.digest), "snapshot": s.snapshot, "records": s.records})
                );
                Ok(true)
            }
            Command::List {
                command: ListCommand::Status { config },
            } => {
                let node = Node::load(&config)?;
                let c = &node.cfg;
                let tip = NodeList::open_read(&c.list_dir, Keyring::load(&c.keyring)?)?
                    .map(|l| l.tip())
                    .unwrap_or_default();
                println!(
                    "{}",
                    json!({"version": tip.version, "entries": tip.count, "digest": hex::encode(tip.digest)})
                );
                Ok(true)
            }
            Command::Received(args) => {
                let c = NodeConfig::load(&args.config)?;
                Ok(show_received(&c.keyring, &c.inbox_dir, &args)?)
            }
            Command::Log { command } => {
                let a = command.args();
                let path = match (&a.log, &a.config) {
                    (Some(p), _) => p.clone(),
                    (None, Some(c)) => NodeConfig::load(c)?.inbox_dir.join(LOG_FILE),
                    (None, None) => bail!("give --config or --log"),
                };
                Ok(log_command(&command, &path, &DELIVERY_LOG, Keep::EveryGoodRecord, "meldnet-node log")?)
            }
            Command::List {
                command: ListCommand::Check(a),
            } => list_check(LogCommand::Check(a)),
            Command::List {
                command: ListCommand::Salvage(a),
            } => list_check(LogCommand::Salvage(a)),
            Command::Case {
                command:
                    CaseCommand::Step {
                        config,
                        case_id,
                        location,
                        kind,
                        provider_name,
                        asn,
                        reason,
                    },
            } => {
                let target = (case_id.as_str(), location);
                let provider = (provider_name.as_deref(), asn);
                case_step(&config, target, kind, provider, reason.as_deref()).await
            }
            Command::Notice {
                command:
                    NoticeCommand::Assign {
                        config,
                        case_id,
                        location,
                        provider,
                    },
            } => notice_assign(&config, &case_id, location, &provider).map(|()| true),
        }
    })?;
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
