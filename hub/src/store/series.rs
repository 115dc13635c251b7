//! What the store keeps for victim notification, and the writer's side of
//! it: every check that decides whether a notification may go (the series'
//! representative, the preference in force, the digest's hard cap) is made
//! here, in the one writer thread, in the same batch that queues it, so a
//! withdrawal can never race a notification out.
//!
//! Keys (values protobuf unless said):
//! - `v` + series id (16)                      -> `SeriesRecord` (id, owner, representative)
//! - `k` + series id + 1 + SHA-256 (32)        -> (): an exact hash of the series
//! - `k` + series id + 2 + PDQ (32)            -> quality (1)
//! - `w` + series id                           -> `StoredPreference` (absent: never)
//! - `y` + series id                           -> `DigestState`
//! - `i` + series id + at (8 BE) + report (16) -> `SeriesMatch`: a report of the series
//! - `n` + case id + series id                 -> 0 or 1 (1: a proceedings notification made)
//! - `t` + case id + series id                 -> `ProceedingsDraft`, until the notifier signs it
//! - `o` + notification id (16)                -> pointer to the `SignedNotification` (blob file)
//!
//! A representative's queue entry for a notification is the notification
//! id followed by `n` (17 bytes).

use super::{event, id16, key_with, queue_key, queue_prefix, StoreError, Writer};
use crate::blobs::BlobFile;
use meldnet_core::case::CaseId;
use meldnet_core::error::{Refusal, RefusalKind};
use meldnet_core::identity::SpiffeId;
use meldnet_core::report::ReportId;
use meldnet_core::series::{NotificationId, Preference, SeriesHashes, SeriesId};
use meldnet_proto::v1 as pb;
use prost::Message;

pub(super) const SERIES: u8 = b'v';
pub(super) const SERIES_HASH: u8 = b'k';
pub(super) const PREFERENCE: u8 = b'w';
pub(super) const DIGEST: u8 = b'y';
pub(super) const MATCH: u8 = b'i';
pub(super) const CASE_SERIES: u8 = b'n';
pub(super) const DRAFT: u8 = b't';
pub(super) const NOTIFICATION: u8 = b'o';
/// Marks a queue entry as a notification (after its 16-byte id).
pub(super) const QUEUED_NOTIFICATION: u8 = b'n';

const HASH_SHA256: u8 = 1;
const HASH_PDQ: u8 = 2;

/// A change to series, preferences or notifications, decided in the writer.
#[derive(Debug, Clone)]
pub enum SeriesOp {
    /// A new series registered by `owner` (a police agency).
    Register {
        /// Its new random id.
        id: SeriesId,
        /// The agency.
        owner: SpiffeId,
        /// Its hashes.
        hashes: SeriesHashes,
    },
    /// More hashes, by the agency that registered the series.
    AddHashes {
        /// The series.
        id: SeriesId,
        /// Who asks.
        actor: SpiffeId,
        /// The hashes.
        hashes: SeriesHashes,
    },
    /// Links the series to a representative, by the agency that registered it.
    Link {
        /// The series.
        id: SeriesId,
        /// Who asks.
        actor: SpiffeId,
        /// The representative.
        representative: SpiffeId,
    },
    /// The victim's choice, by the series' representative.
    SetPreference {
        /// The series.
        id: SeriesId,
        /// Who asks.
        actor: SpiffeId,
        /// The choice.
        preference: Preference,
    },
    /// A police agency marks a case as in legal proceedings.
    Proceedings {
        /// The case.
        case: CaseId,
        /// The agency.
        agency: SpiffeId,
    },
    /// A signed notification to queue, if it is still wanted.
    Notify(Box<Outgoing>),
    /// A digest part with nothing to say: counting starts again at `to`.
    DigestAdvance {
        /// The series.
        id: SeriesId,
        /// Where counting stood when the notifier looked.
        from: i64,
        /// Where it stands now.
        to: i64,
    },
}

/// A signed notification and what must still hold for it to go.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Its id.
    pub id: NotificationId,
    /// The series.
    pub series: SeriesId,
    /// Whom it is for.
    pub representative: SpiffeId,
    /// As signed.
    pub signed: pb::SignedNotification,
    /// Why it is made.
    pub why: Why,
    /// The hub (actor of the audit record).
    pub actor: SpiffeId,
}

/// What made a notification.
#[derive(Debug, Clone)]
pub enum Why {
    /// A case in proceedings: the draft it was made from.
    Proceedings {
        /// The case.
        case: CaseId,
    },
    /// A digest for `[from, to)`, the `number`th of its period.
    Digest {
        /// Counting started here (must still).
        from: i64,
        /// The boundary it was made at.
        to: i64,
        /// The period it counts against.
        period_start: i64,
        /// Its number in the period.
        number: u32,
        /// The preference it was made under (set at).
        set_at_ms: i64,
    },
}

/// What a series operation did.
#[derive(Debug, Clone)]
pub enum SeriesOutcome {
    /// The series after the change.
    View(pb::SeriesView),
    /// The preference in force after the change.
    Preference(pb::Preference),
    /// Whether the case was newly marked.
    Marked(bool),
    /// Whether the notification was queued (false: no longer wanted).
    Queued(bool),
    /// Refused; nothing changed.
    Refused(Refusal),
}

pub(super) fn series_key(id: &SeriesId) -> Vec<u8> {
    key_with(SERIES, &[id.as_bytes()])
}

pub(super) fn preference_key(id: &SeriesId) -> Vec<u8> {
    key_with(PREFERENCE, &[id.as_bytes()])
}

pub(super) fn digest_key(id: &SeriesId) -> Vec<u8> {
    key_with(DIGEST, &[id.as_bytes()])
}

fn draft_key(case: &CaseId, series: &SeriesId) -> Vec<u8> {
    key_with(DRAFT, &[case.as_bytes(), series.as_bytes()])
}

pub(super) fn corrupt(what: &str) -> impl Fn(prost::DecodeError) -> StoreError + '_ {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

/// A stored preference, decoded into the domain type.
pub(super) fn decode_preference(v: &[u8]) -> Result<(Preference, i64), StoreError> {
    let sp = pb::StoredPreference::decode(v).map_err(corrupt("preference"))?;
    let p = sp.preference.unwrap_or_default();
    let (_, pref) =
        Preference::from_proto(&p).map_err(|e| StoreError::Corrupt(format!("preference: {e}")))?;
    Ok((pref, sp.set_at_ms))
}

/// A series as stored.
pub(super) fn read_series(
    tree: &sled::Tree,
    id: &SeriesId,
) -> Result<Option<pb::SeriesRecord>, StoreError> {
    tree.get(series_key(id))?
        .map(|v| pb::SeriesRecord::decode(v.as_ref()).map_err(corrupt("series")))
        .transpose()
}

/// The preference in force and when it was set (none: never).
pub(super) fn read_preference(
    tree: &sled::Tree,
    id: &SeriesId,
) -> Result<Option<(Preference, i64)>, StoreError> {
    tree.get(preference_key(id))?
        .map(|v| decode_preference(&v))
        .transpose()
}

/// Where a series' digest stands.
pub(super) fn read_digest(
    tree: &sled::Tree,
    id: &SeriesId,
) -> Result<Option<pb::DigestState>, StoreError> {
    tree.get(digest_key(id))?
        .map(|v| pb::DigestState::decode(v.as_ref()).map_err(corrupt("digest state")))
        .transpose()
}

/// A notification as stored: the body's bytes, the signed message and the
/// notification inside it.
pub(super) fn load_notification(
    blobs: &BlobFile,
    pointer: &[u8],
) -> Result<(Vec<u8>, pb::SignedNotification, pb::Notification), StoreError> {
    let body = super::load_body(blobs, pointer)?;
    let sn = pb::SignedNotification::decode(body.as_slice()).map_err(corrupt("notification"))?;
    let n =
        pb::Notification::decode(sn.notification.as_slice()).map_err(corrupt("notification"))?;
    Ok((body, sn, n))
}

/// The key of the notification a queue entry's value points to, if it is
/// a notification's entry (its id and `n`).
pub(super) fn queued_notification(value: &[u8]) -> Option<Vec<u8>> {
    match value {
        [id @ .., QUEUED_NOTIFICATION] if id.len() == 16 => Some(key_with(NOTIFICATION, &[id])),
        _ => None,
    }
}

/// Digests already made in the period starting at `period_start`.
pub fn sent_in(state: &pb::DigestState, period_start: i64) -> u32 {
    if state.period_start_ms == period_start {
        state.sent
    } else {
        0
    }
}

fn denied(field: &str, why: &str) -> SeriesOutcome {
    SeriesOutcome::Refused(Refusal::new(RefusalKind::PermissionDenied, field, why))
}

fn view(rec: &pb::SeriesRecord, tree: &sled::Tree) -> Result<pb::SeriesView, StoreError> {
    let id = SeriesId::parse(&rec.series_id).map_err(StoreError::Corrupt)?;
    let (mut sha, mut pdq) = (0, 0);
    for kv in tree.scan_prefix(key_with(SERIES_HASH, &[id.as_bytes()])) {
        let (k, _) = kv?;
        match k.get(17) {
            Some(&HASH_SHA256) => sha += 1,
            _ => pdq += 1,
        }
    }
    Ok(pb::SeriesView {
        series_id: rec.series_id.clone(),
        sha256_count: sha,
        pdq_count: pdq,
        representative: rec.representative.clone(),
    })
}

impl Writer {
    /// Stages the hashes of a series; returns how many of each kind the
    /// series did not hold yet (SHA-256, PDQ).
    fn stage_hashes(
        &self,
        batch: &mut sled::Batch,
        id: &SeriesId,
        h: &SeriesHashes,
    ) -> Result<(u64, u64), StoreError> {
        let mut seen = std::collections::HashSet::new();
        let mut new = |key: &Vec<u8>| -> Result<bool, StoreError> {
            Ok(seen.insert(key.clone()) && !self.tree.contains_key(key)?)
        };
        let (mut sha, mut pdq) = (0, 0);
        for s in &h.sha256 {
            let key = key_with(SERIES_HASH, &[id.as_bytes(), &[HASH_SHA256], &s.0]);
            sha += u64::from(new(&key)?);
            batch.insert(key, &[][..]);
        }
        for (p, q) in &h.pdq {
            let key = key_with(SERIES_HASH, &[id.as_bytes(), &[HASH_PDQ], &p.0]);
            pdq += u64::from(new(&key)?);
            batch.insert(key, &[*q][..]);
        }
        Ok((sha, pdq))
    }

    /// Applies a series operation: checks who may, stages it with its audit
    /// record, or refuses and changes nothing.
    pub(super) fn stage_series(
        &mut self,
        batch: &mut sled::Batch,
        op: SeriesOp,
        queued_any: &mut bool,
    ) -> Result<SeriesOutcome, StoreError> {
        let now = self.clock.now_ms();
        let mine = |rec: &pb::SeriesRecord, actor: &SpiffeId| rec.owner == actor.to_string();
        match op {
            SeriesOp::Register { id, owner, hashes } => {
                let rec = pb::SeriesRecord {
                    series_id: id.to_string(),
                    owner: owner.to_string(),
                    representative: String::new(),
                };
                batch.insert(series_key(&id), rec.encode_to_vec());
                let (sha, pdq) = self.stage_hashes(batch, &id, &hashes)?;
                let detail = format!("{sha} sha256, {pdq} pdq");
                self.stage_audit(
                    batch,
                    event(now, "series-registered", &owner, id.to_string(), detail),
                );
                Ok(SeriesOutcome::View(pb::SeriesView {
                    series_id: rec.series_id,
                    sha256_count: sha,
                    pdq_count: pdq,
                    representative: String::new(),
                }))
            }
            SeriesOp::AddHashes { id, actor, hashes } => {
                let Some(rec) = read_series(&self.tree, &id)?.filter(|r| mine(r, &actor)) else {
                    return Ok(denied("series_id", "not a series this agency registered"));
                };
                let (sha, pdq) = self.stage_hashes(batch, &id, &hashes)?;
                let detail = format!("+{sha} sha256, +{pdq} pdq");
                self.stage_audit(
                    batch,
                    event(now, "series-hashes", &actor, id.to_string(), detail),
                );
                let mut v = view(&rec, &self.tree)?;
                // Counted before this batch applies, so the new ones are added.
                v.sha256_count += sha;
                v.pdq_count += pdq;
                Ok(SeriesOutcome::View(v))
            }
            SeriesOp::Link {
                id,
                actor,
                representative,
            } => {
                let Some(mut rec) = read_series(&self.tree, &id)?.filter(|r| mine(r, &actor))
                else {
                    return Ok(denied("series_id", "not a series this agency registered"));
                };
                let to = representative.to_string();
                if rec.representative != to {
                    // Consent was given to the earlier representative, if any:
                    // it does not pass to the new one.
                    self.stage_withdrawal(batch, &id, &rec)?;
                    rec.representative = to.clone();
                    batch.insert(series_key(&id), rec.encode_to_vec());
                    self.stage_audit(
                        batch,
                        event(now, "series-linked", &actor, id.to_string(), to),
                    );
                }
                Ok(SeriesOutcome::View(view(&rec, &self.tree)?))
            }
            SeriesOp::SetPreference {
                id,
                actor,
                preference,
            } => {
                let Some(rec) =
                    read_series(&self.tree, &id)?.filter(|r| r.representative == actor.to_string())
                else {
                    return Ok(denied(
                        "preference.series_id",
                        "not a series linked to this representative",
                    ));
                };
                self.stage_withdrawal(batch, &id, &rec)?;
                if preference != Preference::Never {
                    let stored = pb::StoredPreference {
                        preference: Some(preference.to_proto(&id)),
                        set_at_ms: now,
                    };
                    batch.insert(preference_key(&id), stored.encode_to_vec());
                    if let Preference::Digest { .. } = preference {
                        let state = pb::DigestState {
                            from_ms: now,
                            period_start_ms: 0,
                            sent: 0,
                        };
                        batch.insert(digest_key(&id), state.encode_to_vec());
                    }
                }
                self.stage_audit(
                    batch,
                    event(
                        now,
                        "preference",
                        &actor,
                        id.to_string(),
                        preference.describe(),
                    ),
                );
                Ok(SeriesOutcome::Preference(preference.to_proto(&id)))
            }
            SeriesOp::Proceedings { case, agency } => {
                let Some(mut rec) = self.load_case(&case)? else {
                    return Ok(SeriesOutcome::Refused(Refusal::new(
                        RefusalKind::NotFound,
                        "case_id",
                        format!("no case {case}"),
                    )));
                };
                if !rec.proceedings_by.is_empty() {
                    return Ok(SeriesOutcome::Marked(false));
                }
                rec.proceedings_by = agency.to_string();
                rec.proceedings_at_ms = now;
                let mut drafts = 0;
                for kv in self
                    .tree
                    .scan_prefix(key_with(CASE_SERIES, &[case.as_bytes()]))
                {
                    let (k, v) = kv?;
                    let series = SeriesId::from_bytes(id16(&k[17..], "case series")?);
                    if v.first() == Some(&1) {
                        continue;
                    }
                    if self.stage_draft(batch, &case, &series, &rec)? {
                        batch.insert(k, &[1u8][..]);
                        drafts += 1;
                    }
                }
                let first = ReportId::parse(&rec.first_report_id)
                    .map_err(|e| StoreError::Corrupt(format!("case first report: {e}")))?;
                let line = format!("case {case} marked as in legal proceedings by {agency}");
                self.stage_history(batch, &first, now, "proceedings", &agency, line.clone());
                self.stage_audit(
                    batch,
                    event(
                        now,
                        "proceedings",
                        &agency,
                        case.to_string(),
                        format!("{line}; {drafts} notification(s) to make"),
                    ),
                );
                self.group_cases.insert(case, rec);
                Ok(SeriesOutcome::Marked(true))
            }
            SeriesOp::Notify(out) => self.stage_notification(batch, *out, queued_any),
            SeriesOp::DigestAdvance { id, from, to } => {
                if let Some(mut state) = read_digest(&self.tree, &id)? {
                    if state.from_ms == from {
                        state.from_ms = to;
                        batch.insert(digest_key(&id), state.encode_to_vec());
                    }
                }
                Ok(SeriesOutcome::Queued(false))
            }
        }
    }

    /// A proceedings notification to make for `series` in `case`, if the
    /// victim chose legal proceedings only. True if one was drafted.
    fn stage_draft(
        &self,
        batch: &mut sled::Batch,
        case: &CaseId,
        series: &SeriesId,
        rec: &pb::CaseRecord,
    ) -> Result<bool, StoreError> {
        if !matches!(
            read_preference(&self.tree, series)?,
            Some((Preference::LegalOnly, _))
        ) {
            return Ok(false);
        }
        let draft = pb::ProceedingsDraft {
            series_id: series.to_string(),
            proceedings: Some(pb::Proceedings {
                case_id: case.to_string(),
                agency: rec.proceedings_by.clone(),
                marked_at_ms: rec.proceedings_at_ms,
            }),
        };
        batch.insert(draft_key(case, series), draft.encode_to_vec());
        Ok(true)
    }

    /// Drops the preference, the digest being prepared, the drafts and
    /// every notification of the series still in its representative's queue.
    fn stage_withdrawal(
        &self,
        batch: &mut sled::Batch,
        id: &SeriesId,
        rec: &pb::SeriesRecord,
    ) -> Result<(), StoreError> {
        batch.remove(preference_key(id));
        batch.remove(digest_key(id));
        for kv in self.tree.scan_prefix([DRAFT]) {
            let (k, _) = kv?;
            if k.get(17..33) == Some(id.as_bytes()) {
                batch.remove(k);
            }
        }
        let Ok(rep) = SpiffeId::parse(&rec.representative) else {
            return Ok(());
        };
        for kv in self.tree.scan_prefix(queue_prefix(&rep)) {
            let (k, v) = kv?;
            let Some(key) = queued_notification(&v) else {
                continue;
            };
            let Some(pointer) = self.tree.get(key)? else {
                continue;
            };
            let (_, _, n) = load_notification(&self.blobs, &pointer)?;
            if n.series_id == id.to_string() {
                batch.remove(k);
            }
        }
        Ok(())
    }

    /// Records that report `report` of `case` holds material of each of
    /// `series` (opened: it opened the case), and drafts a proceedings
    /// notification where the case is in proceedings already.
    pub(super) fn stage_series_matches(
        &mut self,
        batch: &mut sled::Batch,
        report: &ReportId,
        case: &CaseId,
        opened: bool,
        series: &[SeriesId],
    ) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let rec = if series.is_empty() {
            None
        } else {
            self.load_case(case)?
        };
        for s in series {
            let m = pb::SeriesMatch {
                case_id: case.to_string(),
                opened,
            };
            batch.insert(
                key_with(
                    MATCH,
                    &[s.as_bytes(), &now.to_be_bytes(), report.as_bytes()],
                ),
                m.encode_to_vec(),
            );
            let link = key_with(CASE_SERIES, &[case.as_bytes(), s.as_bytes()]);
            let notified = self.tree.get(&link)?.is_some_and(|v| v.first() == Some(&1));
            let mut value = u8::from(notified);
            if let Some(rec) = rec
                .as_ref()
                .filter(|r| !r.proceedings_by.is_empty() && !notified)
            {
                if self.stage_draft(batch, case, s, rec)? {
                    value = 1;
                }
            }
            batch.insert(link, &[value][..]);
        }
        Ok(())
    }

    fn stage_notification(
        &mut self,
        batch: &mut sled::Batch,
        out: Outgoing,
        queued_any: &mut bool,
    ) -> Result<SeriesOutcome, StoreError> {
        let linked = read_series(&self.tree, &out.series)?
            .is_some_and(|r| r.representative == out.representative.to_string());
        let pref = read_preference(&self.tree, &out.series)?;
        let wanted = linked
            && match (&out.why, pref) {
                (Why::Proceedings { case }, Some((Preference::LegalOnly, _))) => {
                    self.tree.get(draft_key(case, &out.series))?.is_some()
                }
                (
                    Why::Digest {
                        from,
                        to,
                        period_start,
                        number,
                        set_at_ms,
                    },
                    Some((Preference::Digest { cap, .. }, set)),
                ) if set == *set_at_ms => match read_digest(&self.tree, &out.series)? {
                    Some(mut state) => {
                        let sent = sent_in(&state, *period_start);
                        // The hard cap, checked where the notification is queued.
                        let ok = state.from_ms == *from && sent < cap && *number == sent + 1;
                        if ok {
                            state.from_ms = *to;
                            state.period_start_ms = *period_start;
                            state.sent = sent + 1;
                            batch.insert(digest_key(&out.series), state.encode_to_vec());
                        }
                        ok
                    }
                    None => false,
                },
                _ => false,
            };
        if let Why::Proceedings { case } = &out.why {
            batch.remove(draft_key(case, &out.series));
        }
        if !wanted {
            return Ok(SeriesOutcome::Queued(false));
        }
        let body = BlobFile::stage_message(&mut self.blob_buf, self.blob_end, &out.signed);
        batch.insert(
            key_with(NOTIFICATION, &[out.id.as_bytes()]),
            &body.to_bytes()[..],
        );
        let seq = self.next_queue_seq;
        self.next_queue_seq += 1;
        let mut value = out.id.as_bytes().to_vec();
        value.push(QUEUED_NOTIFICATION);
        batch.insert(queue_key(&queue_prefix(&out.representative), seq), value);
        *queued_any = true;
        let what = match &out.why {
            Why::Proceedings { case } => format!("legal proceedings in case {case}"),
            Why::Digest {
                from, to, number, ..
            } => format!(
                "digest {number} for {}..{}",
                meldnet_core::time::rfc3339(*from),
                meldnet_core::time::rfc3339(*to)
            ),
        };
        let now = self.clock.now_ms();
        self.stage_audit(
            batch,
            event(
                now,
                "notified",
                &out.actor,
                out.series.to_string(),
                format!("notification {} to {}: {what}", out.id, out.representative),
            ),
        );
        self.bump("notifications");
        Ok(SeriesOutcome::Queued(true))
    }
}
