//! `meldnet-hub`: serve the hub, or check its audit log offline.

use anyhow::Context;
use clap::{Parser, Subcommand};
use meldnet_core::hash_list::describe_head;
use meldnet_core::keyring::Keyring;
use meldnet_core::list_import::{import_via, ListFormat};
use meldnet_hub::config::{HubConfig, OperatorConfig};
use meldnet_proto::v1 as pb;
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
    /// The known-hash list of the running hub, as an operator.
    List {
        #[command(subcommand)]
        command: ListCommand,
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
        #[arg(long, value_enum, default_value = "csv")]
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
}

/// mimalloc: the store and the gRPC stack allocate and free millions of small
/// buffers a minute; glibc's allocator spent a third of the hub's time on it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    meldnet_core::cli::exit_code("meldnet-hub", run())
}

fn run() -> anyhow::Result<()> {
    meldnet_core::cli::init_process("info");
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, ready_file } => {
            let cfg = HubConfig::load(&config)?;
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
                    meldnet_core::cli::shutdown_signal().await;
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
        Command::Audit {
            command: AuditCommand::Verify { config },
        } => {
            let cfg = HubConfig::load(&config)?;
            let store = meldnet_hub::store::Store::open(&cfg.data_dir).with_context(|| {
                format!(
                    "opening {} (is the hub still running?)",
                    cfg.data_dir.display()
                )
            })?;
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
        let channel = rt.block_on(meldnet_core::client::connect(&cfg.hub, &cfg.tls))?;
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

fn list_command(command: ListCommand) -> anyhow::Result<()> {
    match command {
        ListCommand::Import {
            operator,
            source_country,
            format,
            mapping,
            file,
        } => {
            let source = meldnet_core::country::CountryCode::parse(&source_country)
                .context("--source-country")?;
            let mapping = match mapping {
                Some(p) => meldnet_core::config::load(&p)?,
                None => Default::default(),
            };
            let op = Operator::connect(&operator)?;
            let admin = op.admin.clone();
            let (summary, last_head) =
                import_via(&op.rt, &file, format, &mapping, source, |req| {
                    let mut admin = admin.clone();
                    async move { admin.list_add(req).await.map(|r| r.into_inner()) }
                })?;
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
