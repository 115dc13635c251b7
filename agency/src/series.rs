//! Victim notification from the agency client: victim identification units
//! register series (hashes only) and link them to representatives, police
//! mark cases in legal proceedings, and representatives (who run this same
//! client) set the victim's choice and list their series.

use crate::config::AgencyConfig;
use anyhow::{bail, Context};
use meldnet_core::Preference;
use meldnet_net::connect;
use meldnet_proto::v1 as pb;
use meldnet_proto::v1::series_client::SeriesClient;
use std::path::{Path, PathBuf};
use tonic::transport::Channel;

/// `meldnet-agency series ...`.
#[derive(Debug, clap::Subcommand)]
pub enum SeriesCommand {
    /// Register a new series from a CSV of its hashes (police; the hub
    /// picks a random id and prints it).
    Register {
        /// The agency's configuration.
        #[arg(long)]
        config: PathBuf,
        /// CSV with a header naming `sha256`, `pdq` and `pdq_quality` columns.
        #[arg(long)]
        hashes: PathBuf,
    },
    /// Add hashes to a series this agency registered.
    Add {
        /// The agency's configuration.
        #[arg(long)]
        config: PathBuf,
        /// The series id.
        #[arg(long)]
        series: String,
        /// CSV as for `register`.
        #[arg(long)]
        hashes: PathBuf,
    },
    /// Link a series this agency registered to the victim's representative.
    Link {
        /// The agency's configuration.
        #[arg(long)]
        config: PathBuf,
        /// The series id.
        #[arg(long)]
        series: String,
        /// The representative's SPIFFE id.
        #[arg(long)]
        representative: String,
    },
    /// Mark a case as in legal proceedings (police).
    Proceedings {
        /// The agency's configuration.
        #[arg(long)]
        config: PathBuf,
        /// The case id.
        #[arg(long)]
        case: String,
    },
    /// Set the victim's choice for a series (representatives only).
    Preference {
        /// The representative's configuration.
        #[arg(long)]
        config: PathBuf,
        /// The series id.
        #[arg(long)]
        series: String,
        /// never (also: withdraw consent), legal-only or digest.
        #[arg(long)]
        choice: String,
        /// Digest: week or month.
        #[arg(long)]
        period: Option<String>,
        /// Digest: at most this many messages a period.
        #[arg(long)]
        cap: Option<u32>,
    },
    /// The series linked to this representative, with the choices in force.
    Linked {
        /// The representative's configuration.
        #[arg(long)]
        config: PathBuf,
    },
}

async fn client(config: &Path) -> anyhow::Result<SeriesClient<Channel>> {
    let cfg = AgencyConfig::load(config)?;
    Ok(SeriesClient::new(connect(&cfg.hub, &cfg.tls).await?))
}

/// Reads a CSV of hashes: a header naming the columns (`sha256`, `pdq`,
/// `pdq_quality`; others refused), then one picture a line.
pub fn read_hashes(path: &Path) -> anyhow::Result<Vec<pb::SeriesHash>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        bail!("{}: empty; expected a header line", path.display());
    };
    let cols: Vec<String> = header.split(',').map(|c| c.trim().to_lowercase()).collect();
    for c in &cols {
        if !matches!(c.as_str(), "sha256" | "pdq" | "pdq_quality") {
            bail!(
                "{}:1: column {c:?}: only sha256, pdq and pdq_quality (a series holds hashes, nothing else)",
                path.display()
            );
        }
    }
    let mut out = Vec::new();
    for (i, line) in lines {
        let mut h = pb::SeriesHash::default();
        for (col, value) in cols.iter().zip(line.split(',')) {
            let value = value.trim();
            match col.as_str() {
                "sha256" => h.sha256 = value.to_lowercase(),
                "pdq" => h.pdq = value.to_lowercase(),
                _ if value.is_empty() => {}
                _ => {
                    h.pdq_quality = value.parse().with_context(|| {
                        format!("{}:{}: pdq_quality {value:?}", path.display(), i + 1)
                    })?
                }
            }
        }
        out.push(h);
    }
    Ok(out)
}

fn print_view(v: &pb::SeriesView) {
    println!(
        "{}",
        serde_json::json!({
            "series_id": v.series_id,
            "sha256": v.sha256_count,
            "pdq": v.pdq_count,
            "representative": v.representative,
        })
    );
}

/// The choice in words, as the hub's audit records say it.
fn choice_word(p: &pb::Preference) -> String {
    Preference::from_proto(p).map_or_else(|e| format!("unreadable: {e}"), |(_, p)| p.describe())
}

/// Runs a series command.
pub async fn run(cmd: SeriesCommand) -> anyhow::Result<()> {
    match cmd {
        SeriesCommand::Register { config, hashes } => {
            let hashes = read_hashes(&hashes)?;
            let v = client(&config)
                .await?
                .register(pb::SeriesHashes {
                    series_id: String::new(),
                    hashes,
                })
                .await?
                .into_inner();
            print_view(&v);
        }
        SeriesCommand::Add {
            config,
            series,
            hashes,
        } => {
            let hashes = read_hashes(&hashes)?;
            let v = client(&config)
                .await?
                .add_hashes(pb::SeriesHashes {
                    series_id: series,
                    hashes,
                })
                .await?
                .into_inner();
            print_view(&v);
        }
        SeriesCommand::Link {
            config,
            series,
            representative,
        } => {
            let v = client(&config)
                .await?
                .link(pb::SeriesLink {
                    series_id: series,
                    representative,
                })
                .await?
                .into_inner();
            print_view(&v);
        }
        SeriesCommand::Proceedings { config, case } => {
            let m = client(&config)
                .await?
                .mark_proceedings(pb::ProceedingsMark { case_id: case })
                .await?
                .into_inner();
            println!(
                "{}",
                serde_json::json!({"case_id": m.case_id, "newly_marked": m.newly_marked})
            );
        }
        SeriesCommand::Preference {
            config,
            series,
            choice,
            period,
            cap,
        } => {
            let choice = match choice.as_str() {
                "never" | "withdraw" => pb::Choice::Never,
                "legal-only" => pb::Choice::LegalOnly,
                "digest" => pb::Choice::Digest,
                other => bail!("--choice {other}: never, legal-only or digest"),
            };
            let period = match period.as_deref() {
                None => pb::Period::Unspecified,
                Some("week") => pb::Period::Week,
                Some("month") => pb::Period::Month,
                Some(other) => bail!("--period {other}: week or month"),
            };
            let p = client(&config)
                .await?
                .set_preference(pb::Preference {
                    series_id: series,
                    choice: choice as i32,
                    period: period as i32,
                    cap: cap.unwrap_or(0),
                })
                .await?
                .into_inner();
            println!(
                "{}",
                serde_json::json!({"series_id": p.series_id, "choice": choice_word(&p)})
            );
        }
        SeriesCommand::Linked { config } => {
            let l = client(&config)
                .await?
                .linked(pb::LinkedRequest {})
                .await?
                .into_inner();
            for p in &l.series {
                println!(
                    "{}",
                    serde_json::json!({"series_id": p.series_id, "choice": choice_word(p)})
                );
            }
        }
    }
    Ok(())
}
