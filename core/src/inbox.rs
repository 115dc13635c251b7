//! The recipient side of delivery, shared by hotline nodes (`meldnet-node
//! inbox`) and police (`meldnet-agency pull`): receive the queue as a stream,
//! verify both signatures, store each delivery durably (JSON for people and
//! the raw signed bytes), and only then acknowledge it.
//!
//! Storage is idempotent by report id, so a delivery that comes again (the
//! hub crashed before it recorded our acknowledgement) is not stored twice.

use crate::identity::SpiffeId;
use crate::keyring::Keyring;
use crate::provenance::{verify_routed, verify_routed_many, Verified};
use base64::Engine as _;
use meldnet_proto::v1 as pb;
use meldnet_proto::v1::inbox_client::InboxClient;
use prost::Message;
use serde_json::json;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use tonic::transport::Channel;

/// What to do while receiving.
#[derive(Debug, Clone)]
pub struct InboxOptions {
    /// Where deliveries are stored.
    pub out_dir: PathBuf,
    /// Stop after storing and acknowledging this many.
    pub max: Option<usize>,
    /// Keep receiving after the queue is drained.
    pub follow: bool,
}

/// What a receive run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboxSummary {
    /// Deliveries stored for the first time.
    pub stored: usize,
    /// Deliveries that were already stored (redelivered), acknowledged again.
    pub already_stored: usize,
    /// Deliveries that failed verification: kept apart, not acknowledged.
    pub rejected: usize,
    /// Acknowledgements the hub confirmed.
    pub acked: usize,
    /// Report ids stored in this run, in order.
    pub report_ids: Vec<String>,
}

/// Why receiving stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    /// The hub refused or the stream broke.
    #[error("delivery stream: {0}")]
    Stream(#[from] tonic::Status),
    /// A file could not be written.
    #[error("storing {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> InboxError + '_ {
    move |source| InboxError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The human-readable record of a verified delivery, with the raw signed
/// bytes (base64) so that the JSON file alone can be re-verified.
pub fn describe(
    v: &Verified,
    sr: &pb::SignedReport,
    sd: &pb::SignedDecision,
    seq: u64,
) -> serde_json::Value {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let cc = |c: Option<crate::country::CountryCode>| c.map(|c| c.to_string());
    let r = &v.report;
    let d = &v.decision;
    json!({
        "report_id": r.id.to_string(),
        "origin": d.origin,
        "created_at_ms": r.created_at_ms,
        "url": r.url.as_str(),
        "eu_link": {
            "hosting_country": cc(r.eu_link.hosting),
            "suspect_country": cc(r.eu_link.suspect),
            "victim_country": cc(r.eu_link.victim),
            "provider_country": cc(r.eu_link.provider),
        },
        "items": r.items.iter().map(|i| json!({
            "sha256": i.sha256.to_hex(),
            "md5": i.md5.to_hex(),
            "pdq": i.pdq.map(|(h, _)| h.to_hex()),
            "pdq_quality": i.pdq.map(|(_, q)| q),
            "classification": i.classification.name(),
            "age_group": i.age_group.name(),
            "media_type": i.media_type.name(),
        })).collect::<Vec<_>>(),
        "decision": {
            "decided_at_ms": d.decided_at_ms,
            "eu_link": d.eu_link,
            "eu_link_facts": d.eu_link_facts,
            "recipients": d.recipients.iter().map(|rc| json!({
                "identity": rc.identity,
                "purpose": pb::Purpose::try_from(rc.purpose).map(|p| p.as_str_name()).unwrap_or("UNKNOWN"),
                "reason": rc.reason,
            })).collect::<Vec<_>>(),
            "reasons": d.reasons,
        },
        "verification": {
            "report_sha256": v.report_digest.to_hex(),
            "report_signed_by": format!("{} key {}", d.origin, v.report_key),
            "decision_signed_by": format!("hub key {}", v.decision_key),
        },
        "delivery_seq": seq,
        "signed": {
            "report": b64(&sr.report),
            "report_signature": b64(&sr.signature),
            "report_key_id": sr.key_id,
            "decision": b64(&sd.decision),
            "decision_signature": b64(&sd.signature),
            "decision_key_id": sd.key_id,
            "decision_tree_size": sd.tree_size,
            "decision_leaf_index": sd.leaf_index,
            "decision_audit_path": sd.audit_path.iter().map(|p| b64(p)).collect::<Vec<_>>(),
        },
    })
}

/// Why a stored delivery file could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum StoredFileError {
    /// Unreadable.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Neither a delivery protobuf nor our JSON.
    #[error("{0}")]
    Format(String),
}

/// Reads a stored delivery (`.pb` raw bytes or `.json`) back into the signed
/// messages, taking the signed bytes as stored: nothing is re-encoded.
pub fn load_stored(path: &Path) -> Result<(pb::SignedReport, pb::SignedDecision), StoredFileError> {
    let bytes = std::fs::read(path)?;
    if path.extension().and_then(|e| e.to_str()) == Some("json") {
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| StoredFileError::Format(format!("JSON: {e}")))?;
        let s = &v["signed"];
        let field = |k: &str| -> Result<Vec<u8>, StoredFileError> {
            let t = s[k]
                .as_str()
                .ok_or_else(|| StoredFileError::Format(format!("signed.{k}: missing")))?;
            base64::engine::general_purpose::STANDARD
                .decode(t)
                .map_err(|e| StoredFileError::Format(format!("signed.{k}: {e}")))
        };
        let text = |k: &str| s[k].as_str().unwrap_or_default().to_string();
        Ok((
            pb::SignedReport {
                report: field("report")?,
                signature: field("report_signature")?,
                key_id: text("report_key_id"),
            },
            pb::SignedDecision {
                decision: field("decision")?,
                signature: field("decision_signature")?,
                key_id: text("decision_key_id"),
                tree_size: s["decision_tree_size"].as_u64().unwrap_or_default(),
                leaf_index: s["decision_leaf_index"].as_u64().unwrap_or_default(),
                audit_path: s["decision_audit_path"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(|p| {
                        base64::engine::general_purpose::STANDARD
                            .decode(p.as_str().unwrap_or_default())
                            .map_err(|e| {
                                StoredFileError::Format(format!("signed.decision_audit_path: {e}"))
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            },
        ))
    } else {
        let d = pb::Delivery::decode(bytes.as_slice())
            .map_err(|e| StoredFileError::Format(format!("protobuf: {e}")))?;
        match (d.report, d.decision) {
            (Some(r), Some(dec)) => Ok((r, dec)),
            _ => Err(StoredFileError::Format(
                "delivery lacks report or decision".into(),
            )),
        }
    }
}

/// Verifies a stored delivery offline: both signatures and the binding from
/// the signed bytes; for a JSON file also that every readable field says what
/// the signed bytes say (an edited URL or item would otherwise pass).
pub fn verify_stored(path: &Path, keyring: &Keyring) -> Result<Verified, String> {
    let (sr, sd) = load_stored(path).map_err(|e| e.to_string())?;
    let verified = verify_routed(sr.clone(), sd.clone(), keyring).map_err(|e| e.to_string())?;
    if path.extension().and_then(|e| e.to_str()) == Some("json") {
        let text = std::fs::read(path).map_err(|e| e.to_string())?;
        let on_disk: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| e.to_string())?;
        let seq = on_disk["delivery_seq"].as_u64().unwrap_or_default();
        let expected = describe(&verified, &sr, &sd, seq);
        if let (Some(got), Some(want)) = (on_disk.as_object(), expected.as_object()) {
            let mut keys: Vec<&String> = got.keys().chain(want.keys()).collect();
            keys.sort();
            keys.dedup();
            if let Some(k) = keys.into_iter().find(|k| got.get(*k) != want.get(*k)) {
                return Err(format!(
                    "{k}: the readable field differs from what the signed bytes say"
                ));
            }
        }
    }
    Ok(verified)
}

enum Outcome {
    Stored(String),
    AlreadyStored,
    Rejected,
}

/// Writes `bytes` to `path` in place, without fsync: `store_batch` makes a
/// whole batch durable with one `syncfs` before anything of it is
/// acknowledged. A file cut short by a crash belongs to an unacknowledged
/// delivery, which comes again and is rewritten (its bytes differ), so no
/// temporary file and rename are needed.
fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

/// Flushes every written file and folder of the file system holding `dir`.
fn sync_filesystem(dir: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(dir)?;
    // SAFETY: syncfs only reads the descriptor, which `f` keeps open.
    let rc = unsafe { libc::syncfs(f.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Verifies a chunk of deliveries together and writes their files (not yet synced).
fn store_chunk(
    part: Vec<pb::Delivery>,
    keyring: &Keyring,
    me: &str,
    out: &Path,
) -> Result<Vec<(u64, Outcome)>, InboxError> {
    let mut results = Vec::with_capacity(part.len());
    let mut complete = Vec::with_capacity(part.len());
    for d in part {
        let raw = d.encode_to_vec();
        match (d.report, d.decision) {
            (Some(r), Some(dec)) => complete.push((d.seq, raw, r, dec)),
            _ => {
                tracing::error!(
                    seq = d.seq,
                    "delivery lacks report or decision; not acknowledged"
                );
                results.push((d.seq, Outcome::Rejected));
            }
        }
    }
    let pairs = complete
        .iter()
        .map(|(_, _, r, d)| (r.clone(), d.clone()))
        .collect();
    let verified = verify_routed_many(pairs, keyring);
    for ((seq, raw, sr, sd), v) in complete.into_iter().zip(verified) {
        let outcome = match v {
            Ok(v) => write_verified(seq, &raw, &sr, &sd, &v, me, out)?,
            Err(e) => {
                tracing::error!(seq, error = %e, "delivery failed verification; kept apart, not acknowledged");
                let dir = out.join("rejected");
                std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
                let p = dir.join(format!("{seq}.pb"));
                write_file(&p, &raw).map_err(io_err(&p))?;
                Outcome::Rejected
            }
        };
        results.push((seq, outcome));
    }
    Ok(results)
}

/// Writes the files of one verified delivery (not yet synced).
fn write_verified(
    seq: u64,
    raw: &[u8],
    sr: &pb::SignedReport,
    sd: &pb::SignedDecision,
    verified: &Verified,
    me: &str,
    out: &Path,
) -> Result<Outcome, InboxError> {
    if !verified
        .decision
        .recipients
        .iter()
        .any(|r| r.identity == me)
    {
        tracing::error!(seq, "delivery is not addressed to {me}; not acknowledged");
        return Ok(Outcome::Rejected);
    }
    let id = verified.report.id.to_string();
    let pb_path = out.join(format!("{id}.pb"));
    let json_path = out.join(format!("{id}.json"));
    // Stored before (the hub did not record our acknowledgement)? Only if the
    // raw bytes on disk are exactly these. The JSON is written again either
    // way: after a crash before the sync it may be cut short.
    let before = std::fs::read(&pb_path).is_ok_and(|b| b == raw);
    let json = describe(verified, sr, sd, seq);
    let text = serde_json::to_vec_pretty(&json).unwrap_or_default();
    write_file(&json_path, &text).map_err(io_err(&json_path))?;
    if before {
        return Ok(Outcome::AlreadyStored);
    }
    // The .pb goes last: its presence marks the delivery as completely stored.
    write_file(&pb_path, raw).map_err(io_err(&pb_path))?;
    Ok(Outcome::Stored(id))
}

/// Verifies and stores a batch on all cores, then makes it durable with one
/// sync of the file system. Nothing of the batch is acknowledged before that.
fn store_batch(
    deliveries: Vec<pb::Delivery>,
    keyring: &Keyring,
    me: &SpiffeId,
    out: &Path,
) -> Result<Vec<(u64, Outcome)>, InboxError> {
    let me = me.to_string();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = deliveries.len().div_ceil(workers).max(1);
    let mut parts: Vec<Vec<pb::Delivery>> = Vec::new();
    let mut it = deliveries.into_iter().peekable();
    while it.peek().is_some() {
        parts.push(it.by_ref().take(chunk).collect());
    }
    let results: Vec<Result<Vec<(u64, Outcome)>, InboxError>> = std::thread::scope(|s| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| {
                let me = &me;
                s.spawn(move || store_chunk(part, keyring, me, out))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(InboxError::Io {
                        path: out.display().to_string(),
                        source: std::io::Error::other("storage worker panicked"),
                    })
                })
            })
            .collect()
    });
    let mut out_v = Vec::new();
    for r in results {
        out_v.extend(r?);
    }
    sync_filesystem(out).map_err(io_err(out))?;
    Ok(out_v)
}

/// Receives this party's queue until it is drained (or `max` deliveries are
/// stored), acknowledging each delivery only after it is on disk.
pub async fn receive(
    channel: Channel,
    keyring: &Keyring,
    me: &SpiffeId,
    opts: &InboxOptions,
) -> Result<InboxSummary, InboxError> {
    std::fs::create_dir_all(&opts.out_dir).map_err(io_err(&opts.out_dir))?;
    let mut client =
        InboxClient::new(channel).max_decoding_message_size(crate::limits::MAX_MESSAGE_BYTES);
    let (ack_tx, ack_rx) = tokio::sync::mpsc::channel::<pb::DeliveryAck>(64);
    let mut inbound = client
        .receive(tokio_stream::wrappers::ReceiverStream::new(ack_rx))
        .await?
        .into_inner();
    let mut summary = InboxSummary::default();
    let mut pending: HashSet<u64> = HashSet::new();
    let mut taken = 0usize;
    loop {
        let Some(batch) = inbound.message().await? else {
            break;
        };
        for seq in &batch.acked {
            if pending.remove(seq) {
                summary.acked += 1;
            }
        }
        let room = opts.max.map_or(usize::MAX, |m| m.saturating_sub(taken));
        let deliveries: Vec<pb::Delivery> = batch.deliveries.into_iter().take(room).collect();
        let mut acks = Vec::new();
        if !deliveries.is_empty() {
            let out = opts.out_dir.clone();
            let (keyring, me) = (keyring.clone(), me.clone());
            let outcomes =
                tokio::task::spawn_blocking(move || store_batch(deliveries, &keyring, &me, &out))
                    .await
                    .map_err(|e| InboxError::Io {
                        path: opts.out_dir.display().to_string(),
                        source: std::io::Error::other(e.to_string()),
                    })??;
            for (seq, outcome) in outcomes {
                match outcome {
                    Outcome::Stored(id) => {
                        summary.stored += 1;
                        summary.report_ids.push(id);
                    }
                    Outcome::AlreadyStored => summary.already_stored += 1,
                    Outcome::Rejected => {
                        summary.rejected += 1;
                        continue;
                    }
                }
                taken += 1;
                acks.push(seq);
            }
        }
        if !acks.is_empty() {
            pending.extend(acks.iter().copied());
            if ack_tx.send(pb::DeliveryAck { seqs: acks }).await.is_err() {
                break;
            }
        }
        let limit_reached = opts.max.is_some_and(|m| taken >= m);
        if pending.is_empty() && (limit_reached || (batch.caught_up && !opts.follow)) {
            break;
        }
    }
    Ok(summary)
}
