//! The embedded backend's layout: every key, prefix and encoding, and
//! nothing else. What grows with every report lies in the ledger
//! (`meldnet-ledger`: one append-only log with sorted indexes over it);
//! sled keeps the small state and the ledger's committed end, in one tree,
//! so that one `apply_batch` commits a group atomically.
//!
//! The ledger's indexes (key -> value; "body": the value is the place of
//! the record's payload in the log):
//!
//! - `REPORTS` report id (16)                        -> body: the `StoredReport` (signed bytes as received)
//! - `REDECISIONS` decision id (16)                  -> body: the `StoredReport` with a further decision
//!   (escalation, notice, split)
//! - `NOTIFICATIONS` notification id (16)            -> body: the `SignedNotification`
//! - `HISTORY` report id (16) + seq (8 BE)           -> body: a `StoredHistory`
//! - `AUDIT` seq (8 BE)                              -> body: the `AuditRecord` of the hash chain
//! - `CASE_KEYS` report id (16)                      -> body: the `CaseKeysRecord` the report brought
//! - `CASES` case id (16)                            -> body: the `CaseRecord` (the newest replaces it)
//! - `SIGHTINGS` case id (16) + report id (16)       -> (): a sighting
//! - `DEADLINES` deadline (8 BE) + case id (16) + location (4 BE) -> (): open deadlines, in time order
//! - `QUEUE` recipient number (4 BE) + seq (8 BE)    -> the queue entry (`queue_value`: kind, ids, and
//!   the place of its body)
//! - `LIST` version (8 BE)                           -> body: running digest after it (32) | live
//!   count after it (8 BE) | the encoded `ListChange`
//! - `CASE_BY_KEY` kind (1: URL, 2: file) + SHA-256 (32) -> the case id (16) the key leads to
//! - `KEYS_BY_SEQ` seq (8 BE)                        -> the report id (16) whose `CASE_KEYS`
//!   record has that `seq` (the order the case index's PDQ runs follow)
//! - `AUDIT_MARKS` recipient number (4 BE) + last queue position (8 BE) + audit seq (8 BE) -> ():
//!   an audit record that delivers or acknowledges that queue's entries up to that position
//!   (where a report's history finds its deliveries)
//!
//! sled:
//!
//! - `s` + name                                   -> a statistics counter (8 BE)
//! - `b` + queue seq (8 BE)                       -> (): a queue entry held back, recorded once
//! - `g` + SPIFFE id                              -> `Registration` an operator stored
//! - `p` + SPIFFE id                              -> the recipient's number in `QUEUE` keys (4 BE)
//! - `m` + name                                   -> the pipeline's counters (audit head, next
//!   queue seq, history seq, keys seq, the ledger's committed end, the next recipient number, list tip),
//!   the routing rules in force, and the store's format
//! - `v` + series id (16)                         -> `SeriesRecord`
//! - `k` + series id + 1 + SHA-256 (32)           -> (): an exact hash of the series
//! - `k` + series id + 2 + PDQ (32)               -> quality (1)
//! - `w` + series id                              -> `StoredPreference` (absent: never)
//! - `y` + series id                              -> `DigestState`
//! - `i` + series id + at (8 BE) + report (16)    -> `SeriesMatch`
//! - `n` + case id + series id                    -> 0 or 1 (1: a proceedings notification made)
//! - `t` + case id + series id                    -> `ProceedingsDraft`, until the notifier signs it

use crate::store::seam::QueueItem;
use crate::store::types::SeriesHashKey;
use crate::store::StoreError;
use meldnet_core::CaseId;
use meldnet_core::ReportId;
use meldnet_core::{NotificationId, SeriesId};
use meldnet_core::{PdqHash, Sha256};
use meldnet_ledger::{Index, Ptr, Table};
use std::sync::Arc;

// The ledger's indexes: ids as stored in its records and runs (never reused).
pub const REPORTS: u8 = 1;
pub const REDECISIONS: u8 = 2;
pub const NOTIFICATIONS: u8 = 3;
pub const HISTORY: u8 = 4;
pub const AUDIT: u8 = 5;
pub const CASE_KEYS: u8 = 6;
pub const CASES: u8 = 7;
pub const SIGHTINGS: u8 = 8;
pub const DEADLINES: u8 = 9;
pub const QUEUE: u8 = 10;
pub const LIST: u8 = 11;
pub const CASE_BY_KEY: u8 = 12;
pub const KEYS_BY_SEQ: u8 = 13;
pub const AUDIT_MARKS: u8 = 14;

/// Bytes of a queue entry's value: kind, two ids, the body's place.
pub const QUEUE_VALUE: usize = 1 + 16 + 16 + 12;

/// The ledger's indexes, with their widths.
pub fn tables() -> Vec<Arc<dyn Table>> {
    vec![
        // Compressed: each body alone, with a dictionary trained on the
        // index's first bodies (the hashes of keys records would not gain).
        Arc::new(Index::<16, 12>::new(REPORTS, "reports", true).compressed()),
        Arc::new(Index::<16, 12>::new(REDECISIONS, "redecisions", true).compressed()),
        Arc::new(Index::<16, 12>::new(NOTIFICATIONS, "notifications", true)),
        Arc::new(Index::<24, 12>::new(HISTORY, "history", true).compressed()),
        Arc::new(Index::<8, 12>::new(AUDIT, "audit", true).compressed()),
        Arc::new(Index::<16, 12>::new(CASE_KEYS, "case_keys", true)),
        Arc::new(Index::<16, 12>::new(CASES, "cases", true).compressed()),
        Arc::new(Index::<32, 0>::new(SIGHTINGS, "sightings", false)),
        Arc::new(Index::<28, 0>::new(DEADLINES, "deadlines", false)),
        Arc::new(Index::<12, QUEUE_VALUE>::new(QUEUE, "queue", false)),
        Arc::new(Index::<8, 12>::new(LIST, "list", true).compressed()),
        Arc::new(Index::<33, 16>::new(CASE_BY_KEY, "case_by_key", false)),
        Arc::new(Index::<8, 16>::new(KEYS_BY_SEQ, "keys_by_seq", false)),
        Arc::new(Index::<20, 0>::new(AUDIT_MARKS, "audit_marks", false)),
    ]
}

// sled prefixes.
pub const STAT: u8 = b's';
pub const HELD_BACK: u8 = b'b';
pub const REGISTRATION: u8 = b'g';
pub const RECIPIENT: u8 = b'p';
pub const SERIES: u8 = b'v';
pub const SERIES_HASH: u8 = b'k';
pub const PREFERENCE: u8 = b'w';
pub const DIGEST: u8 = b'y';
pub const MATCH: u8 = b'i';
pub const CASE_SERIES: u8 = b'n';
pub const DRAFT: u8 = b't';
/// Only in what `store series` prints: a notification's key as it was.
pub const NOTIFICATION: u8 = b'o';

pub const META_LIST_TIP: &[u8] = b"mlist_tip";
pub const META_AUDIT_HEAD: &[u8] = b"maudit_head";
pub const META_QUEUE_SEQ: &[u8] = b"mqueue_seq";
pub const META_HIST_SEQ: &[u8] = b"mhist_seq";
pub const META_KEYS_SEQ: &[u8] = b"mkeys_seq";
/// The ledger's end as of the last committed group.
pub const META_LEDGER_END: &[u8] = b"mledger_end";
/// The next recipient number.
pub const META_NEXT_RECIPIENT: &[u8] = b"mnext_recipient";
/// The routing rules in force: version (8 BE) then the TOML text.
pub const META_RULES: &[u8] = b"mrules";
/// The layout's version (8 BE): 2, records in the ledger.
pub const META_FORMAT: &[u8] = b"mformat";
/// What the first layout kept: its blob file's end. Its presence says a
/// store of that layout.
pub const META_BLOB_END_OF_FORMAT_1: &[u8] = b"mblob_end";
/// This layout's version.
pub const FORMAT: u64 = 2;

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

/// Parts laid end to end (a ledger key).
pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A queue entry's ledger key.
pub fn queue_key(recipient: u32, seq: u64) -> [u8; 12] {
    let mut k = [0u8; 12];
    let (r, s) = k.split_at_mut(4);
    r.copy_from_slice(&recipient.to_be_bytes());
    s.copy_from_slice(&seq.to_be_bytes());
    k
}

/// (recipient number, seq) of a queue key.
pub fn decode_queue_key(k: &[u8]) -> Result<(u32, u64), StoreError> {
    let r = k
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt("queue key".into()))?;
    Ok((r, be64(k.get(4..), "queue key")?))
}

/// A queue entry's value: the kind (1 report, 2 further decision, 3
/// notification), its ids, and where its body lies (none known: zeros).
pub fn queue_value(item: &QueueItem, body: Option<Ptr>) -> [u8; QUEUE_VALUE] {
    let mut v = [0u8; QUEUE_VALUE];
    let (kind, a, b): (u8, &[u8; 16], &[u8; 16]) = match item {
        QueueItem::Report(r) => (1, r.as_bytes(), &[0; 16]),
        QueueItem::Redecision { report, decision } => (2, report.as_bytes(), decision.as_bytes()),
        QueueItem::Notification(n) => (3, n.as_bytes(), &[0; 16]),
    };
    let (k, rest) = v.split_at_mut(1);
    k.copy_from_slice(&[kind]);
    let (x, rest) = rest.split_at_mut(16);
    x.copy_from_slice(a);
    let (y, p) = rest.split_at_mut(16);
    y.copy_from_slice(b);
    if let Some(body) = body {
        p.copy_from_slice(&body.to_bytes());
    }
    v
}

/// A queue entry's value, read back: the item and its body's place.
pub fn decode_queue_value(v: &[u8]) -> Result<(QueueItem, Option<Ptr>), StoreError> {
    let bad = || StoreError::Corrupt("queue entry".into());
    if v.len() != QUEUE_VALUE {
        return Err(bad());
    }
    let a = id16(v.get(1..).unwrap_or_default(), "queue entry")?;
    let b = id16(v.get(17..).unwrap_or_default(), "queue entry")?;
    let item = match v.first() {
        Some(1) => QueueItem::Report(ReportId::from_bytes(a)),
        Some(2) => QueueItem::Redecision {
            report: ReportId::from_bytes(a),
            decision: CaseId::from_bytes(b),
        },
        Some(3) => QueueItem::Notification(NotificationId::from_bytes(a)),
        _ => return Err(bad()),
    };
    let ptr = v
        .get(33..)
        .and_then(Ptr::from_bytes)
        .filter(|p| p.offset != 0 || p.len != 0);
    Ok((item, ptr))
}

/// The id of an index's body a queue item delivers.
pub fn body_of(item: &QueueItem) -> (u8, [u8; 16]) {
    match item {
        QueueItem::Report(r) => (REPORTS, *r.as_bytes()),
        QueueItem::Redecision { decision, .. } => (REDECISIONS, *decision.as_bytes()),
        QueueItem::Notification(n) => (NOTIFICATIONS, *n.as_bytes()),
    }
}

pub fn history_key(report: &ReportId, seq: u64) -> Vec<u8> {
    cat(&[report.as_bytes(), &seq.to_be_bytes()])
}

pub fn sighting_key(case: &CaseId, report: &ReportId) -> Vec<u8> {
    cat(&[case.as_bytes(), report.as_bytes()])
}

pub fn deadline_key(at_ms: i64, case: &CaseId, location: u32) -> Vec<u8> {
    cat(&[
        &at_ms.to_be_bytes(),
        case.as_bytes(),
        &location.to_be_bytes(),
    ])
}

/// (deadline, case, location) of a deadline key.
pub fn decode_deadline_key(k: &[u8]) -> Result<(i64, CaseId, u32), StoreError> {
    let at = be64(k.get(..8), "deadline key")? as i64;
    let case = CaseId::from_bytes(id16(k.get(8..24).unwrap_or_default(), "deadline key")?);
    let location = k
        .get(24..28)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt("deadline key".into()))?;
    Ok((at, case, location))
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

pub fn recipient_key(id: &str) -> Vec<u8> {
    key(RECIPIENT, &[id.as_bytes()])
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

/// What a body of a ledger index is, for damage reports.
pub fn body_kind(index: u8) -> Option<&'static str> {
    match index {
        REPORTS => Some("report"),
        REDECISIONS => Some("escalation"),
        NOTIFICATIONS => Some("notification"),
        HISTORY => Some("history event"),
        AUDIT => Some("audit record"),
        CASE_KEYS => Some("case keys"),
        CASES => Some("case"),
        LIST => Some("list change"),
        _ => None,
    }
}
