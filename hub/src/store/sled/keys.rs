//! The sled backend's layout: every key prefix and encoding, and nothing
//! else. One sled tree holds everything, so that one `apply_batch` is
//! atomic across everything a group touches.
//!
//! - `r` + report id (16)                         -> pointer (`BlobRef`) to the `StoredReport`
//!   (signed bytes as received) in the blob file
//! - `q` + recipient SPIFFE id + 0x00 + seq (8 BE) -> queue entry: report id (16); or report id
//!   and decision id (32): the delivery is that further decision; or notification id and `n`
//!   (17): the delivery is that notification
//! - `a` + seq (8 BE)                             -> pointer to the `AuditRecord` of the hash chain
//! - `l` + version (8 BE)                         -> a change of the known-hash list: running
//!   digest after it (32) | live count after it (8 BE) | the encoded `ListChange`
//! - `c` + case id (16)                           -> `CaseRecord` (inline)
//! - `j` + report id (16)                         -> pointer to the `CaseKeysRecord` the report
//!   brought to its case
//! - `x` + case id + report id                    -> (): a sighting
//! - `d` + deadline (8 BE) + case id + location (4 BE) -> (): open takedown deadlines, in time order
//! - `e` + decision id (16)                       -> pointer to the `StoredReport` with a further
//!   decision (escalation, notice, split)
//! - `h` + report id + seq (8 BE)                 -> pointer to a `HistoryEvent`
//! - `s` + name                                   -> a statistics counter (8 BE)
//! - `b` + queue seq (8 BE)                       -> (): a queue entry held back, recorded once
//! - `g` + SPIFFE id                              -> `Registration` an operator stored
//! - `m` + name                                   -> the pipeline's counters (audit head, next
//!   queue seq, blob end, list tip, history seq) and the routing rules in force
//! - `v` + series id (16)                         -> `SeriesRecord`
//! - `k` + series id + 1 + SHA-256 (32)           -> (): an exact hash of the series
//! - `k` + series id + 2 + PDQ (32)               -> quality (1)
//! - `w` + series id                              -> `StoredPreference` (absent: never)
//! - `y` + series id                              -> `DigestState`
//! - `i` + series id + at (8 BE) + report (16)    -> `SeriesMatch`
//! - `n` + case id + series id                    -> 0 or 1 (1: a proceedings notification made)
//! - `t` + case id + series id                    -> `ProceedingsDraft`, until the notifier signs it
//! - `o` + notification id (16)                   -> pointer to the `SignedNotification`

use crate::store::seam::QueueItem;
use crate::store::types::SeriesHashKey;
use crate::store::StoreError;
use meldnet_core::CaseId;
use meldnet_core::ReportId;
use meldnet_core::SpiffeId;
use meldnet_core::{NotificationId, SeriesId};
use meldnet_core::{PdqHash, Sha256};

pub const REPORT: u8 = b'r';
pub const QUEUE: u8 = b'q';
pub const AUDIT: u8 = b'a';
pub const LIST: u8 = b'l';
pub const CASE: u8 = b'c';
pub const CASE_KEYS: u8 = b'j';
pub const SIGHTING: u8 = b'x';
pub const DEADLINE: u8 = b'd';
pub const ESCALATION: u8 = b'e';
pub const HISTORY: u8 = b'h';
pub const STAT: u8 = b's';
pub const HELD_BACK: u8 = b'b';
pub const REGISTRATION: u8 = b'g';
pub const SERIES: u8 = b'v';
pub const SERIES_HASH: u8 = b'k';
pub const PREFERENCE: u8 = b'w';
pub const DIGEST: u8 = b'y';
pub const MATCH: u8 = b'i';
pub const CASE_SERIES: u8 = b'n';
pub const DRAFT: u8 = b't';
pub const NOTIFICATION: u8 = b'o';

pub const META_LIST_TIP: &[u8] = b"mlist_tip";
pub const META_AUDIT_HEAD: &[u8] = b"maudit_head";
pub const META_QUEUE_SEQ: &[u8] = b"mqueue_seq";
pub const META_BLOB_END: &[u8] = b"mblob_end";
pub const META_HIST_SEQ: &[u8] = b"mhist_seq";
/// The routing rules in force: version (8 BE) then the TOML text.
pub const META_RULES: &[u8] = b"mrules";

/// Marks a queue entry as a notification (after its 16-byte id).
const QUEUED_NOTIFICATION: u8 = b'n';
pub const HASH_SHA256: u8 = 1;
pub const HASH_PDQ: u8 = 2;

/// A key: its prefix, then the parts.
pub fn key(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + parts.iter().map(|p| p.len()).sum::<usize>());
    k.push(prefix);
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

/// The prefix of every entry of a recipient's queue.
pub fn queue_prefix(recipient: &SpiffeId) -> Vec<u8> {
    let mut k = vec![QUEUE];
    k.extend_from_slice(recipient.to_string().as_bytes());
    k.push(0);
    k
}

/// A queue entry's key, after its queue's prefix.
pub fn queue_key(prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 8);
    k.extend_from_slice(prefix);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// A queue entry's value.
pub fn queue_value(item: &QueueItem) -> Vec<u8> {
    match item {
        QueueItem::Report(r) => r.as_bytes().to_vec(),
        QueueItem::Redecision { report, decision } => {
            [&report.as_bytes()[..], &decision.as_bytes()[..]].concat()
        }
        QueueItem::Notification(n) => [&n.as_bytes()[..], &[QUEUED_NOTIFICATION]].concat(),
    }
}

/// A queue entry's value, read back.
pub fn decode_queue_value(v: &[u8]) -> Result<QueueItem, StoreError> {
    match v.len() {
        16 => Ok(QueueItem::Report(ReportId::from_bytes(id16(
            v,
            "queue entry",
        )?))),
        17 if v.last() == Some(&QUEUED_NOTIFICATION) => Ok(QueueItem::Notification(
            NotificationId::from_bytes(id16(v, "queue entry")?),
        )),
        32 => Ok(QueueItem::Redecision {
            report: ReportId::from_bytes(id16(v, "queue entry")?),
            decision: CaseId::from_bytes(id16(v.get(16..).unwrap_or_default(), "queue entry")?),
        }),
        _ => Err(StoreError::Corrupt("queue entry".into())),
    }
}

/// The position a queue key ends in.
pub fn queue_seq(k: &[u8], prefix_len: usize) -> Result<u64, StoreError> {
    be64(k.get(prefix_len..), "queue key")
}

pub fn report_key(id: &ReportId) -> Vec<u8> {
    key(REPORT, &[id.as_bytes()])
}

pub fn audit_key(seq: u64) -> Vec<u8> {
    key(AUDIT, &[&seq.to_be_bytes()])
}

pub fn list_key(version: u64) -> Vec<u8> {
    key(LIST, &[&version.to_be_bytes()])
}

pub fn case_key(id: &CaseId) -> Vec<u8> {
    key(CASE, &[id.as_bytes()])
}

pub fn case_keys_key(report: &ReportId) -> Vec<u8> {
    key(CASE_KEYS, &[report.as_bytes()])
}

pub fn sighting_key(case: &CaseId, report: &ReportId) -> Vec<u8> {
    key(SIGHTING, &[case.as_bytes(), report.as_bytes()])
}

pub fn deadline_key(at_ms: i64, case: &CaseId, location: u32) -> Vec<u8> {
    key(
        DEADLINE,
        &[
            &at_ms.to_be_bytes(),
            case.as_bytes(),
            &location.to_be_bytes(),
        ],
    )
}

/// (deadline, case, location) of a deadline key.
pub fn decode_deadline_key(k: &[u8]) -> Result<(i64, CaseId, u32), StoreError> {
    let at = be64(k.get(1..9), "deadline key")? as i64;
    let case = CaseId::from_bytes(id16(k.get(9..25).unwrap_or_default(), "deadline key")?);
    let location = k
        .get(25..29)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt("deadline key".into()))?;
    Ok((at, case, location))
}

pub fn escalation_key(id: &CaseId) -> Vec<u8> {
    key(ESCALATION, &[id.as_bytes()])
}

pub fn history_key(report: &ReportId, seq: u64) -> Vec<u8> {
    key(HISTORY, &[report.as_bytes(), &seq.to_be_bytes()])
}

pub fn stat_key(name: &str) -> Vec<u8> {
    key(STAT, &[name.as_bytes()])
}

pub fn held_back_key(seq: u64) -> Vec<u8> {
    key(HELD_BACK, &[&seq.to_be_bytes()])
}

pub fn registration_key(id: &str) -> Vec<u8> {
    key(REGISTRATION, &[id.as_bytes()])
}

pub fn series_key(id: &SeriesId) -> Vec<u8> {
    key(SERIES, &[id.as_bytes()])
}

pub fn series_hash_key(h: &SeriesHashKey) -> (Vec<u8>, Vec<u8>) {
    match h {
        SeriesHashKey::Sha256(id, s) => (
            key(SERIES_HASH, &[id.as_bytes(), &[HASH_SHA256], &s.0]),
            Vec::new(),
        ),
        SeriesHashKey::Pdq(id, p, q) => (
            key(SERIES_HASH, &[id.as_bytes(), &[HASH_PDQ], &p.0]),
            vec![*q],
        ),
    }
}

/// A series hash, read back from its key and value.
pub fn decode_series_hash(k: &[u8], v: &[u8]) -> Result<SeriesHashKey, StoreError> {
    let id = SeriesId::from_bytes(id16(k.get(1..).unwrap_or_default(), "series hash")?);
    let hash: [u8; 32] = k
        .get(18..50)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt("series hash".into()))?;
    Ok(match k.get(17) {
        Some(&HASH_SHA256) => SeriesHashKey::Sha256(id, Sha256(hash)),
        _ => SeriesHashKey::Pdq(id, PdqHash(hash), v.first().copied().unwrap_or(0)),
    })
}

pub fn preference_key(id: &SeriesId) -> Vec<u8> {
    key(PREFERENCE, &[id.as_bytes()])
}

pub fn digest_key(id: &SeriesId) -> Vec<u8> {
    key(DIGEST, &[id.as_bytes()])
}

pub fn match_key(id: &SeriesId, at_ms: i64, report: &ReportId) -> Vec<u8> {
    key(
        MATCH,
        &[id.as_bytes(), &at_ms.to_be_bytes(), report.as_bytes()],
    )
}

pub fn case_series_key(case: &CaseId, series: &SeriesId) -> Vec<u8> {
    key(CASE_SERIES, &[case.as_bytes(), series.as_bytes()])
}

pub fn draft_key(case: &CaseId, series: &SeriesId) -> Vec<u8> {
    key(DRAFT, &[case.as_bytes(), series.as_bytes()])
}

pub fn notification_key(id: &NotificationId) -> Vec<u8> {
    key(NOTIFICATION, &[id.as_bytes()])
}

/// The case id of a key made of a prefix, a case id and a series id
/// (`n`, `t`), and the series id.
pub fn case_and_series(k: &[u8]) -> Result<(CaseId, SeriesId), StoreError> {
    Ok((
        CaseId::from_bytes(id16(k.get(1..).unwrap_or_default(), "case and series")?),
        SeriesId::from_bytes(id16(k.get(17..).unwrap_or_default(), "case and series")?),
    ))
}

/// The first 16 bytes as an id.
pub fn id16(b: &[u8], what: &str) -> Result<[u8; 16], StoreError> {
    b.get(..16)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt(what.into()))
}

/// Eight bytes, big-endian.
pub fn be64(b: Option<&[u8]>, what: &str) -> Result<u64, StoreError> {
    b.and_then(|b| b.get(..8))
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt(what.into()))
}

/// What a key's value points to in the blob file, if it is a pointer.
pub fn body_kind(key: &[u8]) -> Option<&'static str> {
    match *key.first()? {
        REPORT => Some("report"),
        AUDIT => Some("audit record"),
        ESCALATION => Some("escalation"),
        NOTIFICATION => Some("notification"),
        HISTORY => Some("history event"),
        CASE_KEYS => Some("case keys"),
        _ => None,
    }
}
