//! Command-line pieces that the node and agency binaries share: receiving a
//! queue is the same job for a hotline and for the police, so it is one
//! command shape, one loop and one printout; so are checking and salvaging a
//! damaged delivery log (`log check`, `log salvage`).

use meldnet_core::ReportId;
use meldnet_core::{Keyring, KeyringError};
use meldnet_net::{connect, ClientTlsFiles, ConnectError, HubEndpoint, TlsError};
use meldnet_recipient::{self as log_repair, Keep};
use meldnet_recipient::{check_log, export, receive, InboxError, InboxOptions, LogEntry};
use meldnet_recipient::{log_path, Damage, Format, LogError};
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
    if !dir.join(meldnet_recipient::LOG_FILE).exists() && args.report_ids.is_empty() {
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
    let (mut shown, mut failed, mut damaged) = (HashSet::new(), 0usize, 0usize);
    check_log::<ReceiveError>(dir, &keyring, &only, |entry| {
        let record = match entry {
            LogEntry::Record(record) => record,
            LogEntry::Damaged(d) => {
                damaged += 1;
                eprintln!("DAMAGED {d}");
                return Ok(());
            }
        };
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
    if damaged > 0 {
        eprintln!(
            "{}: {damaged} damaged ranges (every good delivery is shown above); {}",
            dir.join(meldnet_recipient::LOG_FILE).display(),
            meldnet_recipient::DELIVERY_LOG.repair_hint
        );
    }
    let missing: Vec<String> = only.difference(&shown).map(ToString::to_string).collect();
    if !missing.is_empty() {
        let why = if damaged > 0 {
            "not among the good records (perhaps in a damaged range)"
        } else {
            "not received"
        };
        return Err(ReceiveError::Argument(format!(
            "{why}: {}",
            missing.join(", ")
        )));
    }
    Ok(failed == 0 && damaged == 0)
}

/// `log check` and `log salvage` of a delivery log (`meldnet-agency log`,
/// `meldnet-node log`) or of a node's known-hash list (`meldnet-node list`).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum LogCommand {
    /// List every damaged range (offset, length, the record's id where its
    /// header can be read) and count the good records; exit status 1 when
    /// anything is damaged. Changes nothing.
    Check(LogArgs),
    /// Replace a damaged file by one holding its good records, in order;
    /// keep the original beside it untouched (`<name>.damaged-<unix
    /// seconds>`) and say what was lost. Refused while the file is in use.
    Salvage(LogArgs),
}

impl LogCommand {
    /// Which file the command works on.
    pub fn args(&self) -> &LogArgs {
        match self {
            LogCommand::Check(a) | LogCommand::Salvage(a) => a,
        }
    }
}

/// Which file `log check` and `log salvage` work on.
#[derive(Debug, Clone, clap::Args)]
#[group(required = true, multiple = false)]
pub struct LogArgs {
    /// The party's TOML configuration: the file it names.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The file itself (or, for a delivery log, its folder).
    #[arg(long)]
    pub log: Option<PathBuf>,
}

/// Runs `check` or `salvage` on the file at `path`: JSON on stdout (one
/// line per damaged range, then a summary), the same for people on stderr.
/// `tool` is the command as people type it (`meldnet-agency log`). Returns
/// whether the file was (check) or now is (salvage) undamaged.
#[allow(
    clippy::indexing_slicing,
    reason = "serde_json indexing: a read of a missing key is Null, a write goes to an object made here"
)]
pub fn log_command(
    command: &LogCommand,
    path: &Path,
    format: &Format,
    keep: Keep,
    tool: &str,
) -> Result<bool, LogError> {
    let path = log_path(path);
    match command {
        LogCommand::Check(_) => {
            let scan = log_repair::check_file(&path, format)?;
            for d in &scan.damage {
                println!(
                    "{}",
                    json!({"log": path.display().to_string(), "damaged": d.to_json()})
                );
                eprintln!("DAMAGED {d}");
            }
            println!("{}", scan.to_json());
            if let Some((at, n)) = scan.torn_tail {
                eprintln!(
                    "{}: a torn tail of {n} bytes at offset {at} (what a crash leaves, never acknowledged): the writer drops it",
                    path.display()
                );
            }
            if scan.is_clean() {
                eprintln!("{}: {} good records, no damage", path.display(), scan.good);
            } else {
                eprintln!(
                    "{}: {} good records, {} damaged ranges ({} bytes); `{tool} salvage` keeps {}",
                    path.display(),
                    scan.good,
                    scan.damage.len(),
                    scan.damaged_bytes(),
                    match keep {
                        Keep::EveryGoodRecord => "every good record",
                        Keep::UpToFirstDamage { .. } => "the records before the first damage",
                    }
                );
            }
            Ok(scan.is_clean())
        }
        LogCommand::Salvage(_) => {
            let s = log_repair::salvage(&path, format, keep)?;
            let lost = log_repair::lost_tags(&s.scan.damage);
            let mut out = json!({
                "log": path.display().to_string(),
                "status": if s.original.is_some() { "salvaged" } else { "undamaged" },
                "kept_records": s.kept,
                "left_out_records": s.left_out,
                "lost": s.scan.damage.iter().map(Damage::to_json).collect::<Vec<_>>(),
                "lost_tags": lost,
                "torn_tail_bytes": s.scan.torn_tail.map_or(0, |(_, n)| n),
            });
            let Some(original) = &s.original else {
                println!("{out}");
                eprintln!("{}: not damaged, nothing changed", path.display());
                return Ok(true);
            };
            out["original"] = original.display().to_string().into();
            println!("{out}");
            for d in &s.scan.damage {
                eprintln!("LOST {d}");
            }
            eprintln!(
                "{}: kept {} good records; the original is kept, untouched, as {}",
                path.display(),
                s.kept,
                original.display()
            );
            match keep {
                Keep::EveryGoodRecord => {
                    if lost.is_empty() {
                        eprintln!("the damaged records' ids could not be read: ask the hub's operators which deliveries the ranges above held");
                    } else {
                        eprintln!(
                            "ask the hub's operators to deliver again: {} {}",
                            format.tag_name,
                            lost.join(", ")
                        );
                    }
                }
                Keep::UpToFirstDamage { refetch } => eprintln!(
                    "{} good records after the first damage were left out: they cannot be applied without what was lost; `{refetch}` fetches them again from the hub, which signs them",
                    s.left_out
                ),
            }
            Ok(true)
        }
    }
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

pub use meldnet_core::with_causes;

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

/// A list import's progress as a bar on stderr (drawn only on a terminal).
pub struct TerminalProgress(indicatif::ProgressBar);

impl TerminalProgress {
    /// A bar, four redraws a second at most.
    pub fn new() -> Self {
        let bar = indicatif::ProgressBar::with_draw_target(
            None,
            indicatif::ProgressDrawTarget::stderr_with_hz(4),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {msg} ({eta} left)",
        ) {
            bar.set_style(style);
        }
        TerminalProgress(bar)
    }
}

impl Default for TerminalProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl meldnet_list::Progress for TerminalProgress {
    fn start(&self, total: u64) {
        self.0.set_length(total);
    }

    fn advance(&self, n: u64) {
        self.0.inc(n);
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// Bytes on disk (allocated blocks, as `du` counts them) under each entry of
/// `dir`, a folder's entries summed: what a data folder costs, part by part.
pub fn files_under(dir: &std::path::Path) -> std::io::Result<Vec<(String, u64)>> {
    fn allocated(p: &std::path::Path) -> std::io::Result<u64> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(p)?;
        if !m.is_dir() {
            return Ok(m.blocks() * 512);
        }
        let mut sum = 0;
        for e in std::fs::read_dir(p)? {
            sum += allocated(&e?.path())?;
        }
        Ok(sum)
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        out.push((
            e.file_name().to_string_lossy().into_owned(),
            allocated(&e.path())?,
        ));
    }
    out.sort();
    Ok(out)
}

/// The hub's statistics as one JSON object (`meldnet-hub admin stats
/// --json`, `meldnet-agency verify-stats`).
pub fn stats_json(st: &meldnet_proto::v1::StatsResponse) -> serde_json::Value {
    let counts = |v: &[meldnet_proto::v1::CountryCount]| -> serde_json::Value {
        v.iter()
            .map(|c| (c.country.clone(), serde_json::Value::from(c.reports)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    serde_json::json!({
        "by_origin": counts(&st.by_origin),
        "by_hosting": counts(&st.by_hosting),
        "known": st.known_reports, "new": st.new_reports, "cases": st.cases, "sightings": st.sightings,
        "deadlines_missed": st.deadlines_missed,
        "deliveries_refused": st.deliveries_refused,
        "deliveries_held_back": st.deliveries_held_back,
        "providers": st.providers.iter().map(|p| serde_json::json!({
            "name": p.name, "asn": p.asn, "notices": p.notices, "removed": p.removed,
            "not_removed": p.not_removed, "deadlines_missed": p.deadlines_missed,
            "median_removal_ms": p.median_removal_ms, "p90_removal_ms": p.p90_removal_ms,
            "answered_in_time": p.answered_in_time, "removed_in_time": p.removed_in_time,
            "refused": p.refused, "reappearances": p.reappearances,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folders_files_are_summed_under_its_name() {
        let dir = std::env::temp_dir().join(format!("meldnet-cli-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("db/inner")).unwrap();
        std::fs::write(dir.join("blobs"), vec![1u8; 100_000]).unwrap();
        std::fs::write(dir.join("db/a"), vec![2u8; 50_000]).unwrap();
        std::fs::write(dir.join("db/inner/b"), vec![3u8; 50_000]).unwrap();
        let got: std::collections::BTreeMap<String, u64> =
            files_under(&dir).unwrap().into_iter().collect();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(got.keys().collect::<Vec<_>>(), ["blobs", "db"]);
        // Allocated blocks: at least the bytes written, rounded up to blocks.
        assert!(got["blobs"] >= 100_000, "{got:?}");
        assert!(got["db"] >= 100_000, "{got:?}");
        assert!(got["db"] < 100_000 + 64 * 1024, "{got:?}");
    }
}
