//! `meldnet-agency`: the police client. Receives the reports routed to this
//! agency over mTLS, verifies both signatures, stores and acknowledges them;
//! re-verifies a stored delivery offline with public keys only. Also the
//! client of regulators and of victims' representatives (notifications), and
//! of victim identification units (series).

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use meldnet_agency::config::AgencyConfig;
use meldnet_cli::{
    log_command, receive_and_print, show_received, LogCommand, ReceiveArgs, ReceivedArgs,
};
use meldnet_core::Keyring;
use meldnet_recipient::verify_any;
use meldnet_recipient::Keep;
use meldnet_recipient::{DELIVERY_LOG, LOG_FILE};
use prost::Message as _;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "meldnet-agency",
    version,
    about = "A police agency's client of the federation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Receive this agency's queue: verify, store in the delivery log, acknowledge.
    Pull(ReceiveArgs),
    /// Show the reports received (verified again from the stored bytes); export them as files.
    Received(ReceivedArgs),
    /// Victim notification: series (police), proceedings (police), the
    /// victim's choice (representatives).
    Series {
        #[command(subcommand)]
        command: meldnet_agency::series::SeriesCommand,
    },
    /// The delivery log: check it for damage, salvage its good records.
    Log {
        #[command(subcommand)]
        command: LogCommand,
    },
    /// Re-verify stored deliveries offline, with public keys only: a delivery
    /// log (every record) or exported `.json`/`.pb` files.
    Verify {
        /// The keyring with the hub's and the nodes' public keys.
        #[arg(long, conflicts_with = "config")]
        keyring: Option<PathBuf>,
        /// Take the keyring from this agency config.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Delivery logs (or their folders) and exported delivery files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Verify the hub's signed statistics (`meldnet-hub admin stats
    /// --signed`) offline with the hub's public key, and print them with
    /// the hub's date: what a regulator cites.
    VerifyStats {
        /// The keyring with the hub's public keys.
        #[arg(long)]
        keyring: PathBuf,
        /// The signed export.
        file: PathBuf,
    },
}

/// mimalloc: the store and the gRPC stack allocate and free millions of small
/// buffers a minute; glibc's allocator spent a third of the hub's time on it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    meldnet_cli::exit_code("meldnet-agency", run())
}

fn run() -> anyhow::Result<()> {
    meldnet_cli::init_process("warn");
    match Cli::parse().command {
        Command::Pull(args) => {
            let cfg = AgencyConfig::load(&args.config)?;
            let me = cfg.tls.identity()?;
            if !me.role().only_receives() {
                bail!("tls.cert: {me} is not an agency, regulator or representative identity");
            }
            let rt = tokio::runtime::Runtime::new()?;
            let ok = rt.block_on(receive_and_print(
                &cfg.hub,
                &cfg.tls,
                &cfg.keyring,
                &cfg.out_dir,
                &args,
                "pull",
            ))?;
            if !ok {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Series { command } => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(meldnet_agency::series::run(command))
        }
        Command::Received(args) => {
            let cfg = AgencyConfig::load(&args.config)?;
            if !show_received(&cfg.keyring, &cfg.out_dir, &args)? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Log { command } => {
            let a = command.args();
            let path = match (&a.log, &a.config) {
                (Some(p), _) => p.clone(),
                (None, Some(c)) => AgencyConfig::load(c)?.out_dir.join(LOG_FILE),
                (None, None) => bail!("give --config or --log"),
            };
            let ok = log_command(
                &command,
                &path,
                &DELIVERY_LOG,
                Keep::EveryGoodRecord,
                "meldnet-agency log",
            )?;
            if !ok {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::VerifyStats { keyring, file } => {
            let keyring = Keyring::load(&keyring)?;
            let bytes = std::fs::read(&file).with_context(|| file.display().to_string())?;
            let signed = meldnet_proto::v1::SignedStatsExport::decode(bytes.as_slice())
                .with_context(|| format!("{}: not a signed statistics export", file.display()))?;
            match meldnet_core::verify_stats_export(&signed, &keyring) {
                Ok(export) => {
                    println!(
                        "{}",
                        serde_json::json!({"file": file, "ok": true, "hub": export.hub, "key_id": signed.key_id, "made_at": meldnet_core::time::rfc3339(export.made_at_ms), "made_at_ms": export.made_at_ms, "stats": meldnet_cli::stats_json(&export.stats.unwrap_or_default())})
                    );
                    Ok(())
                }
                Err(e) => {
                    println!(
                        "{}",
                        serde_json::json!({"file": file, "ok": false, "error": e.to_string()})
                    );
                    std::process::exit(1);
                }
            }
        }
        Command::Verify {
            keyring,
            config,
            files,
        } => {
            let keyring_path = match (keyring, config) {
                (Some(k), _) => k,
                (None, Some(c)) => AgencyConfig::load(&c)?.keyring,
                (None, None) => bail!("give --keyring or --config"),
            };
            let keyring = Keyring::load(&keyring_path)?;
            let mut failed = 0;
            for file in &files {
                let found = verify_any(file, &keyring);
                for (name, result) in found.deliveries {
                    match result {
                        Ok(v) => println!("{name}: {}", v.line()),
                        Err(e) => {
                            failed += 1;
                            println!("{name}: FAILED {e:#}");
                        }
                    }
                }
                // Damage goes to stderr; every good record above is still verified.
                for d in &found.damage {
                    failed += 1;
                    eprintln!("DAMAGED {d}");
                }
                if !found.damage.is_empty() {
                    eprintln!("{}", DELIVERY_LOG.repair_hint);
                }
            }
            if failed > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
