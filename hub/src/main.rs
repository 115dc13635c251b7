//! `meldnet-hub`: serve the hub, or check its audit log offline.

use anyhow::Context;
use clap::{Parser, Subcommand};
use meldnet_hub::config::HubConfig;
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
                    let mut term = match tokio::signal::unix::signal(
                        tokio::signal::unix::SignalKind::terminate(),
                    ) {
                        Ok(s) => s,
                        Err(_) => return std::future::pending().await,
                    };
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
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
