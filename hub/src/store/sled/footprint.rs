//! What `meldnet-hub store series` lists: every record the sled backend
//! keeps that belongs to one series, as it lies, with every field decoded,
//! so that anyone can see that nothing but hashes and a choice is kept.

use super::keys::*;
use super::SledBackend;
use crate::store::StoreError;
use meldnet_core::CaseId;
use meldnet_core::SeriesId;
use meldnet_proto::v1 as pb;

/// Each record of the series: kind, key and value in hex, and the fields.
pub(super) fn of(b: &SledBackend, id: &SeriesId) -> Result<Vec<serde_json::Value>, StoreError> {
    let mut out = Vec::new();
    let sid = id.as_bytes();
    for (prefix, kind) in [
        (SERIES, "series"),
        (SERIES_HASH, "hash"),
        (PREFERENCE, "preference"),
        (DIGEST, "digest_state"),
        (MATCH, "match"),
    ] {
        for kv in b.tree.scan_prefix(key(prefix, &[sid])) {
            let (k, v) = kv?;
            out.push(record(kind, &k, &v));
        }
    }
    // Keyed by case first: the series id is the key's tail.
    for (prefix, kind) in [(CASE_SERIES, "case_link"), (DRAFT, "draft")] {
        for kv in b.tree.scan_prefix([prefix]) {
            let (k, v) = kv?;
            if k.get(17..33) == Some(&sid[..]) {
                out.push(record(kind, &k, &v));
            }
        }
    }
    let mut found = Vec::new();
    b.each(NOTIFICATIONS, &[0; 16], None, &mut |k, v| {
        let p = meldnet_ledger::Ptr::from_bytes(v)
            .ok_or_else(|| StoreError::Corrupt("notification place".into()))?;
        let (body, sn) = b.notification_body(p)?;
        let n = super::decode::<pb::Notification>(&sn.notification, "notification")?;
        if n.series_id == id.to_string() {
            found.push(record("notification", &key(NOTIFICATION, &[k]), &body));
        }
        Ok(true)
    })?;
    out.extend(found);
    Ok(out)
}

/// One stored record of a series, as `meldnet-hub store series` prints it:
/// its kind, key and value in hex, and every field the value holds decoded.
/// `complete` says that the decoded fields re-encode to exactly the stored
/// bytes: nothing is stored beyond what is shown.
fn record(kind: &str, key: &[u8], value: &[u8]) -> serde_json::Value {
    use prost::Message;
    use serde_json::json;
    fn check<M: Message + Default>(v: &[u8]) -> Option<M> {
        M::decode(v).ok().filter(|m| m.encode_to_vec() == v)
    }
    let hex = |b: &[u8]| hex::encode(b);
    let (fields, complete) = match kind {
        "series" => match check::<pb::SeriesRecord>(value) {
            Some(m) => (
                json!({"series_id": m.series_id, "owner": m.owner, "representative": m.representative}),
                true,
            ),
            None => (json!({}), false),
        },
        "hash" => match (key.get(17), key.get(18..50)) {
            (Some(1), Some(h)) if value.is_empty() => (json!({"sha256": hex(h)}), true),
            (Some(2), Some(h)) if value.len() == 1 => {
                (json!({"pdq": hex(h), "pdq_quality": value.first()}), true)
            }
            _ => (json!({}), false),
        },
        "preference" => match check::<pb::StoredPreference>(value) {
            Some(m) => {
                let p = m.preference.unwrap_or_default();
                (
                    json!({
                        "series_id": p.series_id,
                        "choice": pb::Choice::try_from(p.choice).map_or("UNKNOWN", |c| c.as_str_name()),
                        "period": pb::Period::try_from(p.period).map_or("UNKNOWN", |c| c.as_str_name()),
                        "cap": p.cap,
                        "set_at_ms": m.set_at_ms,
                    }),
                    true,
                )
            }
            None => (json!({}), false),
        },
        "digest_state" => match check::<pb::DigestState>(value) {
            Some(m) => (
                json!({"from_ms": m.from_ms, "period_start_ms": m.period_start_ms, "sent": m.sent}),
                true,
            ),
            None => (json!({}), false),
        },
        "match" => match (
            check::<pb::SeriesMatch>(value),
            key.get(17..25),
            key.get(25..41),
        ) {
            (Some(m), Some(at), Some(r)) => {
                let at = i64::from_be_bytes(at.try_into().unwrap_or_default());
                let report = meldnet_core::ReportId::from_bytes(r.try_into().unwrap_or_default());
                (
                    json!({"at_ms": at, "report_id": report.to_string(), "case_id": m.case_id, "opened": m.opened}),
                    true,
                )
            }
            _ => (json!({}), false),
        },
        "case_link" => match key.get(1..17) {
            Some(c) if value.len() == 1 => {
                let case = CaseId::from_bytes(c.try_into().unwrap_or_default());
                (
                    json!({"case_id": case.to_string(), "proceedings_notified": value.first() == Some(&1)}),
                    true,
                )
            }
            _ => (json!({}), false),
        },
        "draft" => match check::<pb::ProceedingsDraft>(value) {
            Some(m) => {
                let p = m.proceedings.unwrap_or_default();
                (
                    json!({"series_id": m.series_id, "case_id": p.case_id, "agency": p.agency, "marked_at_ms": p.marked_at_ms}),
                    true,
                )
            }
            None => (json!({}), false),
        },
        "notification" => match check::<pb::SignedNotification>(value)
            .and_then(|sn| check::<pb::Notification>(&sn.notification).map(|n| (sn, n)))
        {
            Some((sn, n)) => {
                let body = match &n.body {
                    Some(pb::notification::Body::Proceedings(p)) => json!({
                        "proceedings": {"case_id": p.case_id, "agency": p.agency, "marked_at_ms": p.marked_at_ms}
                    }),
                    Some(pb::notification::Body::Digest(d)) => json!({
                        "digest": {"period": d.period, "from_ms": d.from_ms, "to_ms": d.to_ms, "new_cases": d.new_cases, "sightings": d.sightings, "number": d.number, "cap": d.cap}
                    }),
                    None => json!({}),
                };
                (
                    json!({
                        "notification_id": n.notification_id,
                        "series_id": n.series_id,
                        "representative": n.representative,
                        "made_at_ms": n.made_at_ms,
                        "body": body,
                        "signature": hex(&sn.signature),
                        "key_id": sn.key_id,
                    }),
                    true,
                )
            }
            None => (json!({}), false),
        },
        _ => (json!({}), false),
    };
    json!({
        "kind": kind,
        "key": hex(key),
        "value": hex(value),
        "fields": fields,
        "complete": complete,
    })
}
