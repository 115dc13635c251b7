//! Command-line pieces that the node and agency binaries share: receiving a
//! queue is the same job for a hotline and for the police, so it is one
//! command shape, one loop and one printout.

use crate::client::{connect, ConnectError, HubEndpoint};
use crate::delivery_log::LogError;
use crate::inbox::{check_log, export, receive, InboxError, InboxOptions};
use crate::keyring::{Keyring, KeyringError};
use crate::report::ReportId;
use crate::tls::{ClientTlsFiles, TlsError};
use serde_json::json;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Arguments of `meldnet-node inbox` and `meldnet-agency pull`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReceiveArgs {
    /// The party's TOML configuration.
    #[arg(long)]
    pub config: PathBuf,
    /// Where to store deliveries (default: from the config).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Stop after this many deliveries.
    #[arg(long)]
    pub max: Option<usize>,
    /// Keep receiving as new reports are routed.
    #[arg(long)]
    pub follow: bool,
}

/// Arguments of `meldnet-node received` and `meldnet-agency received`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReceivedArgs {
    /// The party's TOML configuration.
    #[arg(long)]
    pub config: PathBuf,
    /// The folder deliveries were stored in (default: from the config).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write each shown delivery as `<id>.json` and `<id>.pb` into this folder.
    #[arg(long)]
    pub export: Option<PathBuf>,
    /// Only these reports (default: all).
    pub report_ids: Vec<String>,
}

/// Why receiving failed before or during the stream.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// The keyring is unusable.
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    /// The party's own certificate is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The hub could not be reached.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The stream or the local store failed.
    #[error(transparent)]
    Inbox(#[from] InboxError),
    /// The delivery log is unreadable.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A command-line argument is wrong.
    #[error("{0}")]
    Argument(String),
}

/// Logs to stderr, `RUST_LOG` or `default` as the filter.
pub fn init_logging(default: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Receives this party's queue into `args.out` (or `default_out`), prints a
/// JSON line per stored report and a summary on stderr. Returns whether
/// every delivery verified.
pub async fn receive_and_print(
    hub: &HubEndpoint,
    tls: &ClientTlsFiles,
    keyring: &Path,
    default_out: &Path,
    args: &ReceiveArgs,
    label: &str,
) -> Result<bool, ReceiveError> {
    let keyring = Keyring::load(keyring)?;
    let me = tls.identity()?;
    let channel = connect(hub, tls).await?;
    let opts = InboxOptions {
        out_dir: args
            .out
            .clone()
            .unwrap_or_else(|| default_out.to_path_buf()),
        max: args.max,
        follow: args.follow,
    };
    let s = receive(channel, &keyring, &me, &opts).await?;
    let dir = opts.out_dir.display().to_string();
    for id in &s.report_ids {
        println!(
            "{}",
            json!({"report_id": id, "status": "stored", "dir": dir})
        );
    }
    eprintln!(
        "{label}: {} stored, {} already stored, {} rejected, {} acknowledged",
        s.stored, s.already_stored, s.rejected, s.acked
    );
    Ok(s.rejected == 0)
}

/// Prints the stored deliveries (all, or those asked for) as JSON lines,
/// each verified again from its stored bytes, and exports them on request.
/// Returns whether every shown delivery verified.
pub fn show_received(
    keyring: &Path,
    default_out: &Path,
    args: &ReceivedArgs,
) -> Result<bool, ReceiveError> {
    let keyring = Keyring::load(keyring)?;
    let dir = args.out.as_deref().unwrap_or(default_out);
    if !dir.join(crate::delivery_log::LOG_FILE).exists() && args.report_ids.is_empty() {
        eprintln!("{}: nothing received yet", dir.display());
        return Ok(true);
    }
    let only = args
        .report_ids
        .iter()
        .map(|s| {
            ReportId::parse(s).map_err(|e| ReceiveError::Argument(format!("REPORT_ID {s}: {e}")))
        })
        .collect::<Result<HashSet<_>, _>>()?;
    let (mut shown, mut failed) = (HashSet::new(), 0usize);
    check_log::<ReceiveError>(dir, &keyring, &only, |record| {
        match record.describe() {
            Some(json) => {
                println!("{json}");
                shown.insert(record.report_id);
                if let Some(to) = &args.export {
                    export(&record, to)?;
                }
            }
            None => {
                failed += 1;
                let why = record.verdict.err().unwrap_or_default();
                eprintln!(
                    "{}@{}: report {} FAILED verification: {why}",
                    dir.display(),
                    record.offset,
                    record.report_id
                );
            }
        }
        Ok(())
    })?;
    let missing: Vec<String> = only.difference(&shown).map(ToString::to_string).collect();
    if !missing.is_empty() {
        return Err(ReceiveError::Argument(format!(
            "not received: {}",
            missing.join(", ")
        )));
    }
    Ok(failed == 0)
}

/// The end of every binary's `main`: an error is printed once, with its
/// causes, prefixed by the program's name, and gives exit status 1.
pub fn exit_code<E>(program: &str, result: Result<(), E>) -> std::process::ExitCode
where
    E: std::ops::Deref<Target = dyn std::error::Error + Send + Sync + 'static>,
{
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: {}", with_causes(&*e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error and its causes, joined by ": ", leaving out a cause whose text
/// the message already carries (our error messages name their cause).
pub fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(cause) = cur {
        let t = cause.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        cur = cause.source();
    }
    text
}

/// The start of every binary's `main`: one TLS crypto provider (ring) for
/// the process, and logs to stderr.
pub fn init_process(default_log: &str) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    init_logging(default_log);
}

/// Completes on SIGINT or SIGTERM: when a serving process should stop.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
