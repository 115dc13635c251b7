//! One node process of the ingest benchmark. It signs its share of reports
//! before the clock starts (as an analyst's reports are signed when made),
//! says so, waits for "go" on stdin, then streams them to the hub with the
//! node's own streaming submitter and reports what came back.
//!
//! Workers do not verify receipts: in the field nodes run on their own
//! machines, and here that work would take the hub's cores.

use crate::stats::{own_cpu_secs, unix_us};
use anyhow::{bail, Context};
use meldnet_core::CountryCode;
use meldnet_core::Role;
use meldnet_core::SigningKey;
use meldnet_core::{
    AgeGroup, Classification, EuLinkFacts, Item, MediaType, Report, ReportId, ReportUrl,
};
use meldnet_core::{Md5, PdqHash, Sha256};
use meldnet_node::config::NodeConfig;
use meldnet_node::report::sign;
use meldnet_node::submit::{cut_batches, stream_batches_every};
use meldnet_proto::v1 as pb;
use rand::RngCore;
use serde_json::json;
use std::io::{BufRead, Write};
use std::path::PathBuf;

/// Arguments of a worker.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// The node's configuration.
    #[arg(long)]
    pub config: PathBuf,
    /// How many reports this worker sends.
    #[arg(long)]
    pub reports: usize,
    /// Items (files) per report.
    #[arg(long, default_value_t = 4)]
    pub items: usize,
    /// Hosting country of every report.
    #[arg(long, default_value = "DE")]
    pub hosting: String,
    /// Write the ids of receipted reports here, one per line.
    #[arg(long)]
    pub ids_out: Option<PathBuf>,
    /// Offer this many reports a second (in batches of `--batch`), instead
    /// of as many as the hub takes.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Reports per batch at an offered rate.
    #[arg(long, default_value_t = 50)]
    pub batch: usize,
}

pub fn make_report(
    origin: CountryCode,
    hosting: CountryCode,
    items: usize,
    rng: &mut impl RngCore,
) -> anyhow::Result<Report> {
    let mut b32 = || {
        let mut b = [0u8; 32];
        rng.fill_bytes(&mut b);
        b
    };
    let path = hex_of(&b32()[..8]);
    let items = (0..items)
        .map(|i| {
            let sha = b32();
            let pdq = b32();
            let mut md5 = [0u8; 16];
            md5.copy_from_slice(&b32()[..16]);
            Item {
                sha256: Sha256(sha),
                md5: Md5(md5),
                pdq: (i % 4 != 3).then_some((PdqHash(pdq), 60 + (pdq[0] % 40))),
                classification: Classification::Baseline,
                age_group: [
                    AgeGroup::Prepubescent,
                    AgeGroup::Pubescent,
                    AgeGroup::InfantToddler,
                ][i % 3],
                media_type: if i % 4 == 3 {
                    MediaType::Video
                } else {
                    MediaType::Image
                },
                known: None,
            }
        })
        .collect();
    Ok(Report {
        id: ReportId::new_v7(),
        origin,
        created_at_ms: meldnet_core::time::now_ms(),
        url: ReportUrl::parse(&format!(
            "https://img-host.example.de/gallery/{path}/index.html"
        ))
        .map_err(anyhow::Error::msg)?,
        eu_link: EuLinkFacts {
            hosting: Some(hosting),
            ..Default::default()
        },
        items,
    })
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn say(v: serde_json::Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{v}")?;
    out.flush()?;
    Ok(())
}

/// Signs, waits for "go", submits, reports.
pub fn run(a: WorkerArgs) -> anyhow::Result<()> {
    let cfg = NodeConfig::load(&a.config)?;
    let key = SigningKey::load(&cfg.signing_key)?;
    let me = cfg.tls.identity()?;
    let Role::Node(origin) = me.role() else {
        bail!("tls.cert: {me} is not a node");
    };
    let hosting = CountryCode::parse(&a.hosting).context("--hosting")?;
    let mut rng = rand::thread_rng();

    let sign_start = unix_us();
    let mut ids = Vec::with_capacity(a.reports);
    let mut signed = Vec::with_capacity(a.reports);
    let mut bytes = 0usize;
    for _ in 0..a.reports {
        let r = make_report(*origin, hosting, a.items, &mut rng)?;
        ids.push(r.id);
        let sr = sign(&r.to_proto(), &key);
        bytes += sr.report.len();
        signed.push(sr);
    }
    let mut batches: Vec<pb::SubmitBatch> = cut_batches(signed, |sr| sr.report.len())
        .into_iter()
        .map(|reports| pb::SubmitBatch { reports })
        .collect();
    let every = match a.rate {
        Some(rate) if rate > 0.0 && a.batch > 0 => {
            batches = batches
                .into_iter()
                .flat_map(|b| {
                    let mut reports = b.reports.into_iter().peekable();
                    std::iter::from_fn(move || {
                        reports.peek()?;
                        Some(pb::SubmitBatch {
                            reports: reports.by_ref().take(a.batch).collect(),
                        })
                    })
                    .collect::<Vec<_>>()
                })
                .collect();
            Some(std::time::Duration::from_secs_f64(a.batch as f64 / rate))
        }
        Some(_) => bail!("--rate and --batch must be above 0"),
        None => None,
    };
    let sign_end = unix_us();
    let avg_report_bytes = bytes.checked_div(a.reports).unwrap_or(0);
    say(
        json!({"event": "ready", "signed": a.reports, "sign_start_us": sign_start, "sign_end_us": sign_end, "avg_report_bytes": avg_report_bytes}),
    )?;

    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if line.trim() != "go" {
        bail!("expected 'go' on stdin, got {line:?}");
    }

    let sizes: Vec<usize> = batches.iter().map(|b| b.reports.len()).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let start = unix_us();
    let cpu_start = own_cpu_secs();
    let mut receipted = 0usize;
    let mut refused = 0usize;
    let mut first_refusal = None;
    let mut latencies_us: Vec<(u64, usize)> = Vec::with_capacity(sizes.len());
    let mut last_receipt = start;
    rt.block_on(async {
        let channel = meldnet_net::connect(&cfg.hub, &cfg.tls).await?;
        stream_batches_every(channel, batches, every, |i, res, sent_at| {
            let now = unix_us();
            latencies_us.push((
                sent_at.elapsed().as_micros() as u64,
                sizes.get(i).copied().unwrap_or(0),
            ));
            last_receipt = now;
            for r in res.results {
                match r.outcome {
                    Some(pb::submit_result::Outcome::Receipt(_)) => receipted += 1,
                    Some(pb::submit_result::Outcome::Refusal(f)) => {
                        refused += 1;
                        first_refusal.get_or_insert(f.message);
                    }
                    None => refused += 1,
                }
            }
        })
        .await?;
        anyhow::Ok(())
    })?;
    if let Some(path) = &a.ids_out {
        let text: String = ids.iter().map(|id| format!("{id}\n")).collect();
        std::fs::write(path, text).with_context(|| path.display().to_string())?;
    }
    say(json!({
        "event": "done",
        "receipted": receipted,
        "refused": refused,
        "first_refusal": first_refusal,
        "start_us": start,
        "last_receipt_us": last_receipt,
        "batch_latencies_us": latencies_us,
        "cpu_secs": own_cpu_secs() - cpu_start,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_reports_are_valid() {
        let mut rng = rand::thread_rng();
        let nl = CountryCode::parse("NL").unwrap();
        let r = make_report(nl, CountryCode::parse("DE").unwrap(), 4, &mut rng).unwrap();
        let back = Report::from_proto(&r.to_proto()).unwrap();
        assert_eq!(back, r);
        assert_eq!(r.items.len(), 4);
        assert!(r.items.iter().any(|i| i.pdq.is_some()));
    }
}
