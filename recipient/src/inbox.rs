//! The recipient side of delivery, shared by hotline nodes (`meldnet-node
//! inbox`) and police (`meldnet-agency pull`): receive the queue as a stream,
//! verify both signatures, append each batch to the delivery log
//! (`delivery_log`) and sync it, and only then acknowledge it. Reading the
//! store back (`check_log`, `export`, `verify_any`) verifies each record again
//! from the stored bytes, and renders it for people (`describe`); a damaged
//! range of the log is reported with its offset and reading goes on with the
//! next good record. A damaged log is never written to (`DeliveryLog::open`
//! refuses it): `log_repair` salvages it.
//!
//! Storage is idempotent by report id, so a delivery that comes again (the
//! hub crashed before it recorded our acknowledgement) is not stored twice.

use crate::delivery_log::{is_delivery_log, Damage, DeliveryLog, LogError, LogReader, LogRecord};
use base64::Engine as _;
use meldnet_core::Keyring;
use meldnet_core::ReportId;
use meldnet_core::SpiffeId;
use meldnet_core::{describe_notification, verify_notification, VerifiedNotification};
use meldnet_core::{verify_routed, verify_routed_many, Verified};
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
    /// The delivery log refused.
    #[error("delivery log: {0}")]
    Log(#[from] LogError),
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

/// A decision kind's name as the JSON shows it.
fn kind_name(k: i32) -> &'static str {
    pb::DecisionKind::try_from(k).map_or("UNKNOWN", |k| k.as_str_name())
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
    let cc = |c: Option<meldnet_core::CountryCode>| c.map(|c| c.to_string());
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
            "node_list_check": i.known.map(|k| k.describe()),
        })).collect::<Vec<_>>(),
        "decision": {
            "kind": kind_name(d.kind),
            "case": d.case_ref.as_ref().map(|c| json!({
                "case_id": c.case_id,
                "kind": kind_name(c.kind),
                "first_report_id": c.first_report_id,
                "matched_by": c.matched_by,
                "deadline_ms": c.deadline_ms,
                "location": c.location,
                "hosting_country": c.hosting_country,
            })),
            "decided_at_ms": d.decided_at_ms,
            "eu_link": d.eu_link,
            "eu_link_facts": d.eu_link_facts,
            "recipients": d.recipients.iter().map(|rc| json!({
                "identity": rc.identity,
                "purpose": pb::Purpose::try_from(rc.purpose).map(|p| p.as_str_name()).unwrap_or("UNKNOWN"),
                "reason": rc.reason,
                "first": rc.first,
                "rule": rc.rule,
            })).collect::<Vec<_>>(),
            "reasons": d.reasons,
            "rules_version": d.rules_version,
            "rules": d.rules.iter().map(|m| json!({
                "rule": m.rule,
                "recipients": m.recipients,
                "why": m.why,
            })).collect::<Vec<_>>(),
            // Known or new by the hub's own list: what routing relies on.
            "items": d.items.iter().map(|c| json!({
                "index": c.index,
                "known": c.known,
                "entry": c.entry_version,
                "kind": pb::MatchKind::try_from(c.kind).map(|k| k.as_str_name()).unwrap_or("UNKNOWN"),
                "distance": c.distance,
                "list_version": c.list_version,
                "node_said": meldnet_core::node_said_word(c.node_said),
            })).collect::<Vec<_>>(),
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

/// What a delivery carries: a routed report, or a notification for a
/// victim's representative.
#[derive(Debug, Clone)]
pub enum Stored {
    /// The signed report and the hub's signed decision on it.
    Routed(pb::SignedReport, pb::SignedDecision),
    /// A notification signed by the hub.
    Notification(pb::SignedNotification),
}

impl Stored {
    /// What `d` carries, or why it is incomplete.
    pub fn of(d: pb::Delivery) -> Result<Stored, String> {
        use pb::delivery::Content;
        match d.content {
            Some(Content::Routed(pb::RoutedReport {
                report: Some(r),
                decision: Some(dec),
            })) => Ok(Stored::Routed(r, dec)),
            Some(Content::Notification(n)) => Ok(Stored::Notification(n)),
            Some(Content::Routed(_)) => {
                Err("delivery.routed: a routed report carries the report and its decision".into())
            }
            None => {
                Err("delivery.content: a delivery carries a routed report or a notification".into())
            }
        }
    }
}

/// A delivery whose signatures verified.
#[derive(Debug, Clone)]
pub enum Checked {
    /// A routed report: both signatures and the binding.
    Routed(Box<Verified>),
    /// A notification: the hub's signature.
    Notification(VerifiedNotification),
}

impl Checked {
    /// Verifies what `stored` carries, offline, with public keys only.
    pub fn verify(stored: &Stored, keyring: &Keyring) -> Result<Checked, String> {
        match stored {
            Stored::Routed(sr, sd) => verify_routed(sr.clone(), sd.clone(), keyring)
                .map(|v| Checked::Routed(Box::new(v)))
                .map_err(|e| e.to_string()),
            Stored::Notification(sn) => verify_notification(sn, keyring)
                .map(Checked::Notification)
                .map_err(|e| e.to_string()),
        }
    }

    /// One line saying what verified, for `verify` printouts.
    pub fn line(&self) -> String {
        match self {
            Checked::Routed(v) => format!(
                "OK report {} from {} (key {}), decision by the hub (key {}), sha256 {}",
                v.report.id, v.decision.origin, v.report_key, v.decision_key, v.report_digest
            ),
            Checked::Notification(n) => format!(
                "OK notification {} for series {}, signed by the hub (key {})",
                n.notification.notification_id, n.notification.series_id, n.key_id
            ),
        }
    }

    /// The human-readable record of `stored` (see [`describe`]).
    fn describe(&self, stored: &Stored, seq: u64) -> Option<serde_json::Value> {
        match (self, stored) {
            (Checked::Routed(v), Stored::Routed(sr, sd)) => Some(describe(v, sr, sd, seq)),
            (Checked::Notification(v), Stored::Notification(sn)) => {
                Some(describe_notification(v, sn, seq))
            }
            _ => None,
        }
    }
}

/// Reads a stored delivery (`.pb` raw bytes or `.json`) back into the signed
/// messages, taking the signed bytes as stored: nothing is re-encoded.
#[allow(
    clippy::indexing_slicing,
    reason = "serde_json indexing: a read of a missing key is Null, a write goes to an object made here"
)]
pub fn load_stored(path: &Path) -> Result<Stored, StoredFileError> {
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
        if s.get("notification").is_some() {
            return Ok(Stored::Notification(pb::SignedNotification {
                notification: field("notification")?,
                signature: field("signature")?,
                key_id: text("key_id"),
            }));
        }
        Ok(Stored::Routed(
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
        Stored::of(d).map_err(StoredFileError::Format)
    }
}

/// Verifies a stored delivery offline: both signatures and the binding from
/// the signed bytes; for a JSON file also that every readable field says what
/// the signed bytes say (an edited URL or item would otherwise pass).
#[allow(
    clippy::indexing_slicing,
    reason = "serde_json indexing: a read of a missing key is Null, a write goes to an object made here"
)]
pub fn verify_stored(path: &Path, keyring: &Keyring) -> Result<Checked, String> {
    let stored = load_stored(path).map_err(|e| e.to_string())?;
    let verified = Checked::verify(&stored, keyring)?;
    if path.extension().and_then(|e| e.to_str()) == Some("json") {
        let text = std::fs::read(path).map_err(|e| e.to_string())?;
        let on_disk: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| e.to_string())?;
        let seq = on_disk["delivery_seq"]
            .as_u64()
            .or_else(|| on_disk["seq"].as_u64())
            .unwrap_or_default();
        let expected = verified.describe(&stored, seq).unwrap_or_default();
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

/// One record of a delivery log, checked again from its stored bytes.
pub struct CheckedRecord {
    /// Where the record starts in the log.
    pub offset: u64,
    /// The id the record is filed under: the report's, or a
    /// notification's (same 16-byte form).
    pub report_id: ReportId,
    /// What the delivery carries, as stored.
    pub stored: Option<Stored>,
    /// Its queue position at the hub.
    pub seq: u64,
    /// The stored `Delivery` bytes.
    pub raw: Vec<u8>,
    /// The signatures (and the binding of a routed report), or why not.
    pub verdict: Result<Checked, String>,
}

impl CheckedRecord {
    /// The human-readable record (see [`describe`]), when it verified.
    pub fn describe(&self) -> Option<serde_json::Value> {
        let v = self.verdict.as_ref().ok()?;
        v.describe(self.stored.as_ref()?, self.seq)
    }
}

/// The id a verified delivery is filed under.
fn filed_id(c: &Checked) -> Result<ReportId, String> {
    match c {
        Checked::Routed(v) => Ok(v.report.id),
        Checked::Notification(n) => n
            .id()
            .map(|id| ReportId::from_bytes(*id.as_bytes()))
            .map_err(|e| e.to_string()),
    }
}

/// What reading a delivery log back gives, in log order.
// Handed to a callback once each and never stored: boxing the record would
// only add an allocation per delivery read.
#[allow(clippy::large_enum_variant)]
pub enum LogEntry {
    /// A record, checked again from its stored bytes.
    Record(CheckedRecord),
    /// A damaged range: reading goes on with the next good record after it.
    Damaged(Damage),
}

/// Reads the delivery log at `path` (file or folder) and checks every record
/// (or those of `only`, when not empty) again from its stored bytes, a batch
/// of signatures at a time; calls `each` in log order, also for each damaged
/// range (every one, whatever `only` says: a record asked for may be in it),
/// after which it goes on with the next good record. So a damaged log still
/// shows every good delivery.
pub fn check_log<E: From<LogError>>(
    path: &Path,
    keyring: &Keyring,
    only: &HashSet<ReportId>,
    mut each: impl FnMut(LogEntry) -> Result<(), E>,
) -> Result<(), E> {
    let mut reader = LogReader::open(path)?;
    loop {
        let mut chunk = Vec::new();
        let mut damage = None;
        let mut ended = true;
        for record in reader.by_ref() {
            match record {
                Ok(r) => {
                    if only.is_empty() || only.contains(&r.report_id()) {
                        chunk.push(r);
                    }
                }
                Err(LogError::Damage(d)) => damage = Some(*d),
                Err(e) => return Err(e.into()),
            }
            if damage.is_some() || chunk.len() == meldnet_core::limits::MAX_DELIVERY_BATCH {
                ended = false;
                break;
            }
        }
        check_chunk(chunk, keyring, &mut each)?;
        if let Some(d) = damage {
            each(LogEntry::Damaged(d))?;
        }
        if ended {
            return Ok(());
        }
    }
}

/// Checks a chunk of records (routed reports' signatures as one batch) and
/// passes each to `each`, in order.
fn check_chunk<E>(
    chunk: Vec<LogRecord>,
    keyring: &Keyring,
    each: &mut impl FnMut(LogEntry) -> Result<(), E>,
) -> Result<(), E> {
    let decoded: Vec<Result<(u64, Stored), String>> = chunk
        .iter()
        .map(|r| {
            let d =
                pb::Delivery::decode(r.bytes.as_slice()).map_err(|e| format!("protobuf: {e}"))?;
            Ok((d.seq, Stored::of(d)?))
        })
        .collect();
    // Routed reports are checked as one batch; notifications one by one.
    let pairs = decoded
        .iter()
        .filter_map(|d| match d {
            Ok((_, Stored::Routed(r, dec))) => Some((r.clone(), dec.clone())),
            _ => None,
        })
        .collect();
    let mut verified = verify_routed_many(pairs, keyring).into_iter();
    for (record, delivery) in chunk.into_iter().zip(decoded) {
        let (seq, stored, verdict) = match delivery {
            Ok((seq, stored)) => {
                let checked = match &stored {
                    Stored::Routed(..) => match verified.next() {
                        Some(Ok(v)) => Ok(Checked::Routed(Box::new(v))),
                        Some(Err(e)) => Err(e.to_string()),
                        None => Err("not verified".to_string()),
                    },
                    Stored::Notification(_) => Checked::verify(&stored, keyring),
                };
                let verdict = checked.and_then(|c| match filed_id(&c)? {
                    id if id == record.report_id() => Ok(c),
                    id => Err(format!(
                        "filed under {} but the signed delivery is {id}",
                        record.report_id()
                    )),
                });
                (seq, Some(stored), verdict)
            }
            Err(e) => (0, None, Err(e)),
        };
        each(LogEntry::Record(CheckedRecord {
            offset: record.offset,
            report_id: record.report_id(),
            stored,
            seq,
            raw: record.bytes,
            verdict,
        }))?;
    }
    Ok(())
}

/// What `verify_any` found in one file.
#[derive(Default)]
pub struct Verification {
    /// One entry per delivery, named `path` or `path@offset`.
    pub deliveries: Vec<(String, Result<Checked, String>)>,
    /// The damaged ranges of a delivery log.
    pub damage: Vec<Damage>,
}

/// Verifies what `path` holds, offline: a delivery log (every good record,
/// and every damaged range), or one exported delivery (`.json` or `.pb`).
pub fn verify_any(path: &Path, keyring: &Keyring) -> Verification {
    let name = path.display().to_string();
    let mut out = Verification::default();
    if !is_delivery_log(path) {
        out.deliveries.push((name, verify_stored(path, keyring)));
        return out;
    }
    let result = check_log::<LogError>(path, keyring, &HashSet::new(), |entry| {
        match entry {
            LogEntry::Record(r) => out
                .deliveries
                .push((format!("{name}@{}", r.offset), r.verdict)),
            LogEntry::Damaged(d) => out.damage.push(d),
        }
        Ok(())
    });
    if let Err(e) = result {
        out.deliveries.push((name, Err(e.to_string())));
    }
    out
}

/// Writes one checked delivery as `<id>.json` (readable, re-verifiable on
/// its own) and `<id>.pb` (the raw delivery) into `to`, for a case file or
/// another tool.
#[allow(
    clippy::indexing_slicing,
    reason = "serde_json indexing: a read of a missing key is Null, a write goes to an object made here"
)]
pub fn export(record: &CheckedRecord, to: &Path) -> Result<(), InboxError> {
    let Some(json) = record.describe() else {
        return Ok(());
    };
    std::fs::create_dir_all(to).map_err(io_err(to))?;
    // An escalation concerns a report delivered before: it gets its own name.
    let id = if json["decision"]["kind"] == "DECISION_KIND_ESCALATION" {
        format!("{}-escalation", record.report_id)
    } else {
        record.report_id.to_string()
    };
    let json_path = to.join(format!("{id}.json"));
    let text = serde_json::to_vec_pretty(&json).unwrap_or_default();
    std::fs::write(&json_path, text).map_err(io_err(&json_path))?;
    let pb_path = to.join(format!("{id}.pb"));
    std::fs::write(&pb_path, &record.raw).map_err(io_err(&pb_path))?;
    Ok(())
}

enum Outcome {
    Stored(String),
    AlreadyStored,
    /// Refused, with the reason the hub is told.
    Rejected(String),
    /// Not verifiable with this keyring yet: neither stored nor settled.
    Later,
}

/// A delivery that verified and is addressed to us: its id and the bytes to store.
type Accepted = (ReportId, Vec<u8>);
/// What verifying a chunk gives: per sequence number, the accepted delivery,
/// or why it is refused (`Some`), or nothing yet (`None`: a key this
/// recipient does not hold yet; the delivery stays queued and comes again
/// once the keyring is updated).
type Verdicts = Result<Vec<(u64, Result<Accepted, Option<String>>)>, InboxError>;

/// Whether a verification failure may pass by itself: the recipient's
/// keyring lacks the key (a node registered or rotated since), so the
/// delivery must not be refused for good.
fn may_pass(e: &meldnet_core::Refusal) -> bool {
    e.kind == meldnet_core::RefusalKind::FailedPrecondition
}

use meldnet_core::limits::MAX_REJECTION_REASON as MAX_REASON;

/// `why` cut to what the hub takes: at most [`MAX_REASON`] bytes, no
/// control characters.
fn reason(why: &str) -> String {
    let mut out = String::new();
    for c in why.chars().map(|c| if c.is_control() { ' ' } else { c }) {
        if out.len() + c.len_utf8() > MAX_REASON {
            break;
        }
        out.push(c);
    }
    out
}

/// Verifies a chunk of deliveries together. Those that fail are kept apart
/// in `rejected/` for a person to look at, not stored in the log, and
/// refused back to the hub with their reason (which records it for its
/// operators and takes them out of the queue, so they never block it).
fn verify_chunk(part: Vec<pb::Delivery>, keyring: &Keyring, me: &str, out: &Path) -> Verdicts {
    let mut results = Vec::with_capacity(part.len());
    let mut complete = Vec::with_capacity(part.len());
    let mut pairs = Vec::with_capacity(part.len());
    let mut notes = Vec::new();
    for d in part {
        let (seq, raw) = (d.seq, d.encode_to_vec());
        match Stored::of(d) {
            Ok(Stored::Routed(r, dec)) => {
                complete.push((seq, raw));
                pairs.push((r, dec));
            }
            Ok(Stored::Notification(n)) => notes.push((seq, raw, n)),
            Err(e) => {
                tracing::error!(seq, "{e}; refused");
                results.push((seq, Err(Some(reason(&e)))));
            }
        }
    }
    let routed = verify_routed_many(pairs, keyring)
        .into_iter()
        .map(|v| v.map(|v| Checked::Routed(Box::new(v))));
    let notes: Vec<_> = notes
        .into_iter()
        .map(|(seq, raw, n)| {
            let v = verify_notification(&n, keyring).map(Checked::Notification);
            ((seq, raw), v)
        })
        .collect();
    let all = complete.into_iter().zip(routed).chain(notes);
    for ((seq, raw), v) in all {
        let accepted = match v {
            // A verified notification always has a well-formed id.
            Ok(c) if addressed_to(&c, me) => filed_id(&c)
                .map(|id| (id, raw))
                .map_err(|e| Some(reason(&e))),
            Ok(_) => {
                tracing::error!(seq, "delivery is not addressed to {me}; refused");
                Err(Some(format!("not addressed to {me}")))
            }
            Err(e) if may_pass(&e) => {
                tracing::warn!(seq, error = %e, "delivery not verifiable with this keyring; left for later, not acknowledged");
                Err(None)
            }
            Err(e) => {
                tracing::error!(seq, error = %e, "delivery failed verification; kept apart and refused");
                let dir = out.join("rejected");
                std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
                let p = dir.join(format!("{seq}.pb"));
                std::fs::write(&p, &raw).map_err(io_err(&p))?;
                Err(Some(reason(&format!("failed verification: {e}"))))
            }
        };
        results.push((seq, accepted));
    }
    Ok(results)
}

/// Whether a verified delivery is for `me`: a recipient of the decision, or
/// the representative the notification names.
fn addressed_to(c: &Checked, me: &str) -> bool {
    match c {
        Checked::Routed(v) => v.decision.recipients.iter().any(|r| r.identity == me),
        Checked::Notification(n) => n.notification.representative == me,
    }
}

/// Verifies a batch on all cores, then appends what is new to the log and
/// syncs it. Nothing of the batch is acknowledged before that.
fn store_batch(
    deliveries: Vec<pb::Delivery>,
    keyring: &Keyring,
    me: &SpiffeId,
    log: &mut DeliveryLog,
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
    let results: Vec<Verdicts> = std::thread::scope(|s| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| {
                let me = &me;
                s.spawn(move || verify_chunk(part, keyring, me, out))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(InboxError::Io {
                        path: out.display().to_string(),
                        source: std::io::Error::other("verification worker panicked"),
                    })
                })
            })
            .collect()
    });
    let mut outcomes = Vec::new();
    let mut new: Vec<Accepted> = Vec::new();
    for r in results {
        for (seq, accepted) in r? {
            let outcome = match accepted {
                Err(Some(why)) => Outcome::Rejected(why),
                Err(None) => Outcome::Later,
                Ok((id, raw)) => {
                    // Stored before (the hub did not record our acknowledgement),
                    // or twice in this batch? Only if the bytes are exactly these.
                    if log.holds(&id, &raw)? || new.iter().any(|(i, b)| *i == id && *b == raw) {
                        Outcome::AlreadyStored
                    } else {
                        new.push((id, raw));
                        Outcome::Stored(id.to_string())
                    }
                }
            };
            outcomes.push((seq, outcome));
        }
    }
    let records: Vec<(ReportId, &[u8])> = new.iter().map(|(id, b)| (*id, b.as_slice())).collect();
    log.append(&records)?;
    Ok(outcomes)
}

/// Receives this party's queue until it is drained (or `max` deliveries are
/// stored), acknowledging each delivery only after it is on disk.
pub async fn receive(
    channel: Channel,
    keyring: &Keyring,
    me: &SpiffeId,
    opts: &InboxOptions,
) -> Result<InboxSummary, InboxError> {
    let mut log = DeliveryLog::open(&opts.out_dir)?;
    let mut client = InboxClient::new(channel)
        .max_decoding_message_size(meldnet_core::limits::MAX_MESSAGE_BYTES);
    let (ack_tx, ack_rx) = tokio::sync::mpsc::channel::<pb::DeliveryAck>(64);
    let mut inbound = client
        .receive(tokio_stream::wrappers::ReceiverStream::new(ack_rx))
        .await?
        .into_inner();
    let mut summary = InboxSummary::default();
    // Sent and not yet confirmed by the hub: acknowledged ones, and refused
    // ones (`refusing`), which the hub confirms the same way.
    let mut pending: HashSet<u64> = HashSet::new();
    let mut refusing: HashSet<u64> = HashSet::new();
    let mut taken = 0usize;
    loop {
        let Some(batch) = inbound.message().await? else {
            break;
        };
        for seq in &batch.acked {
            if pending.remove(seq) && !refusing.remove(seq) {
                summary.acked += 1;
            }
        }
        let room = opts.max.map_or(usize::MAX, |m| m.saturating_sub(taken));
        let deliveries: Vec<pb::Delivery> = batch.deliveries.into_iter().take(room).collect();
        let mut acks = Vec::new();
        let mut rejected = Vec::new();
        if !deliveries.is_empty() {
            let out = opts.out_dir.clone();
            let (keyring, me) = (keyring.clone(), me.clone());
            // The log moves to the blocking thread and comes back with the outcomes.
            let (back, outcomes) = tokio::task::spawn_blocking(move || {
                let r = store_batch(deliveries, &keyring, &me, &mut log, &out);
                (log, r)
            })
            .await
            .map_err(|e| InboxError::Io {
                path: opts.out_dir.display().to_string(),
                source: std::io::Error::other(e.to_string()),
            })?;
            log = back;
            let outcomes = outcomes?;
            for (seq, outcome) in outcomes {
                match outcome {
                    Outcome::Stored(id) => {
                        summary.stored += 1;
                        summary.report_ids.push(id);
                    }
                    Outcome::AlreadyStored => summary.already_stored += 1,
                    Outcome::Later => {
                        summary.rejected += 1;
                        continue;
                    }
                    Outcome::Rejected(reason) => {
                        summary.rejected += 1;
                        pending.insert(seq);
                        refusing.insert(seq);
                        rejected.push(pb::Rejection { seq, reason });
                        continue;
                    }
                }
                taken += 1;
                acks.push(seq);
            }
        }
        if !acks.is_empty() || !rejected.is_empty() {
            pending.extend(acks.iter().copied());
            let ack = pb::DeliveryAck {
                seqs: acks,
                rejected,
            };
            if ack_tx.send(ack).await.is_err() {
                // The call is over on the hub's side: its status says why.
                while inbound.message().await?.is_some() {}
                break;
            }
        }
        let limit_reached = opts.max.is_some_and(|m| taken >= m);
        if pending.is_empty() && (limit_reached || (batch.caught_up && !opts.follow)) {
            break;
        }
    }
    if !pending.is_empty() {
        // Stored, but the hub never confirmed the acknowledgements: it will
        // send them again (and they are recognised as stored), yet this run
        // did not finish its work.
        return Err(InboxError::Stream(tonic::Status::unavailable(format!(
            "the delivery stream ended before the hub confirmed {} acknowledgements",
            pending.len()
        ))));
    }
    Ok(summary)
}
