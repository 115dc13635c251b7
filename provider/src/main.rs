//! `meldnet-provider`: a hosting provider's reference client for standard
//! notices (receive, verify, answer). See the crate's library for the rules.

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use meldnet_core::{AnswerId, AnswerKind, Keyring, NoticeId, RefusalReason};
use meldnet_proto::v1 as pb;
use meldnet_provider::{check_record, store_notice, verify_file, write_durably, ProviderConfig};
use prost::Message;
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "meldnet-provider",
    version,
    about = "A hosting provider's client for standard notices from its country's hotline"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Receive the notices waiting for this provider: each verified with
    /// the node's key, stored, then acknowledged. One JSON line each.
    Receive {
        #[arg(long)]
        config: PathBuf,
        /// Keep receiving (otherwise stop once nothing came for `--idle-ms`).
        #[arg(long)]
        follow: bool,
        /// Stop after storing this many.
        #[arg(long)]
        max: Option<usize>,
        /// Without --follow: how long to wait for more.
        #[arg(long, default_value_t = 1500)]
        idle_ms: u64,
    },
    /// Answer a notice; prints the node's signed record (verified).
    Answer {
        #[arg(long)]
        config: PathBuf,
        /// The notice id.
        #[arg(long)]
        notice: String,
        /// received, removed, not_found, refused or reappeared.
        #[arg(long)]
        kind: AnswerKind,
        /// Why (refused only): not_our_customer, legal_dispute, not_illegal, other.
        #[arg(long)]
        reason: Option<RefusalReason>,
        /// Words, at most 512 bytes.
        #[arg(long, default_value = "")]
        detail: String,
        /// When it was removed or came back, Unix ms (default: now).
        #[arg(long, default_value_t = 0)]
        at_ms: i64,
        /// The answer's id, to send the same answer again (default: new).
        #[arg(long)]
        answer_id: Option<String>,
    },
    /// Verify stored notice files offline, with the keyring alone.
    Verify {
        #[arg(long)]
        keyring: PathBuf,
        files: Vec<PathBuf>,
    },
}

fn main() -> std::process::ExitCode {
    meldnet_cli::exit_code("meldnet-provider", run())
}

fn run() -> anyhow::Result<()> {
    meldnet_cli::init_process("warn");
    let cli = Cli::parse();
    if let Command::Verify { keyring, files } = &cli.command {
        let keyring = Keyring::load(keyring)?;
        let mut ok = true;
        for f in files {
            match verify_file(f, &keyring) {
                Ok(n) => println!(
                    "{}",
                    json!({"file": f, "ok": true, "notice_id": n.notice_id.to_string(), "attempt": n.attempt, "hotline": n.hotline.to_string()})
                ),
                Err(e) => {
                    ok = false;
                    println!("{}", json!({"file": f, "ok": false, "error": e}))
                }
            }
        }
        if !ok {
            bail!("a notice did not verify");
        }
        return Ok(());
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        match cli.command {
            Command::Receive {
                config,
                follow,
                max,
                idle_ms,
            } => receive(&ProviderConfig::load(&config)?, follow, max, idle_ms).await,
            Command::Answer {
                config,
                notice,
                kind,
                reason,
                detail,
                at_ms,
                answer_id,
            } => {
                let cfg = ProviderConfig::load(&config)?;
                let notice_id =
                    NoticeId::parse(&notice).map_err(|e| anyhow::anyhow!("--notice: {e}"))?;
                let answer_id = match answer_id {
                    Some(a) => {
                        AnswerId::parse(&a).map_err(|e| anyhow::anyhow!("--answer-id: {e}"))?
                    }
                    None => AnswerId::new_v7(),
                };
                let raw = pb::NoticeAnswer {
                    notice_id: notice_id.to_string(),
                    kind: kind.to_proto() as i32,
                    at_ms,
                    reason: reason.map_or(0, |r| r.to_proto() as i32),
                    detail,
                    answer_id: answer_id.to_string(),
                };
                answer(&cfg, raw).await
            }
            Command::Verify { .. } => Ok(()),
        }
    })
}

async fn receive(
    cfg: &ProviderConfig,
    follow: bool,
    max: Option<usize>,
    idle_ms: u64,
) -> anyhow::Result<()> {
    let keyring = Keyring::load(&cfg.keyring)?;
    let me = cfg.tls.identity()?;
    let channel = meldnet_net::connect(&cfg.node, &cfg.tls).await?;
    let mut client = pb::provider_notices_client::ProviderNoticesClient::new(channel);
    let (ack_tx, ack_rx) = tokio::sync::mpsc::channel::<pb::NoticeAck>(16);
    let mut inbound = client
        .receive(tokio_stream::wrappers::ReceiverStream::new(ack_rx))
        .await
        .context("notices stream")?
        .into_inner();
    let mut stored = 0usize;
    let mut refused = 0usize;
    loop {
        let next = if follow {
            inbound.message().await
        } else {
            match tokio::time::timeout(Duration::from_millis(idle_ms), inbound.message()).await {
                Ok(m) => m,
                Err(_) => break,
            }
        };
        let Some(batch) = next.context("notices stream")? else {
            break;
        };
        let mut ack = pb::NoticeAck::default();
        for signed in &batch.notices {
            match store_notice(signed, &keyring, &me, &cfg.notices_dir) {
                Ok((n, path)) => {
                    stored += 1;
                    println!(
                        "{}",
                        json!({"notice_id": n.notice_id.to_string(), "attempt": n.attempt, "case_id": n.case_id.to_string(), "location": n.location, "url": n.url.as_str(), "legal_ground": n.legal_ground.name(), "deadline_ms": n.deadline_ms, "stored": path})
                    );
                    ack.stored.push(pb::NoticeAttempt {
                        notice_id: n.notice_id.to_string(),
                        attempt: n.attempt,
                    });
                }
                Err(e) => {
                    refused += 1;
                    eprintln!("{e}");
                }
            }
        }
        if !ack.stored.is_empty() && ack_tx.send(ack).await.is_err() {
            bail!("the node closed the stream before the acknowledgement");
        }
        if max.is_some_and(|m| stored >= m) {
            break;
        }
    }
    // Let the last acknowledgement reach the node before the stream closes.
    drop(ack_tx);
    let _ = tokio::time::timeout(Duration::from_millis(500), inbound.message()).await;
    eprintln!("stored {stored}, refused {refused}");
    if refused > 0 {
        bail!("{refused} notices did not verify; not acknowledged");
    }
    Ok(())
}

async fn answer(cfg: &ProviderConfig, raw: pb::NoticeAnswer) -> anyhow::Result<()> {
    let keyring = Keyring::load(&cfg.keyring)?;
    let me = cfg.tls.identity()?;
    let channel = meldnet_net::connect(&cfg.node, &cfg.tls).await?;
    let mut client = pb::provider_notices_client::ProviderNoticesClient::new(channel);
    let signed = match client.answer(raw.clone()).await {
        Ok(r) => r.into_inner(),
        Err(s) => {
            println!(
                "{}",
                json!({"notice_id": raw.notice_id, "status": "refused", "code": s.code().description(), "message": s.message()})
            );
            bail!("the node refused the answer: {}", s.message());
        }
    };
    let record = check_record(&signed, &raw, &keyring, &me).map_err(|e| anyhow::anyhow!(e))?;
    let path = cfg
        .notices_dir
        .join(format!("{}-answer-{}.pb", raw.notice_id, raw.answer_id));
    write_durably(&path, &signed.encode_to_vec())?;
    println!(
        "{}",
        json!({"notice_id": raw.notice_id, "answer_id": raw.answer_id, "kind": record.answer.kind.name(), "recorded_by": record.recorded_by.to_string(), "received_at_ms": record.received_at_ms, "record": path})
    );
    Ok(())
}
