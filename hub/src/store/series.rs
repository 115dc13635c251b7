//! The rules of victim notification: every check that decides whether a
//! notification may go (the series' representative, the preference in
//! force, the digest's hard cap) is made here, in the one writer thread, in
//! the same group that queues it, reading what earlier operations of the
//! group staged, so a withdrawal can never race a notification out.

use super::pipeline::{event, Writer};
use super::seam::{Group, QueueItem};
use super::types::SeriesHashKey;
use super::StoreError;
use meldnet_core::time::rfc3339;
use meldnet_core::CaseId;
use meldnet_core::ReportId;
use meldnet_core::SpiffeId;
use meldnet_core::{Preference, SeriesHashes, SeriesId};
use meldnet_core::{Refusal, RefusalKind};
use meldnet_proto::v1 as pb;
use prost::Message;

use super::types::Refused;
pub use super::types::{Outgoing, Why};

/// Digests already made in the period starting at `period_start`.
pub fn sent_in(state: &pb::DigestState, period_start: i64) -> u32 {
    if state.period_start_ms == period_start {
        state.sent
    } else {
        0
    }
}

/// Whether `actor` registered the series.
fn mine(rec: &pb::SeriesRecord, actor: &SpiffeId) -> bool {
    rec.owner == actor.to_string()
}

fn not_registered() -> Refusal {
    Refusal::new(
        RefusalKind::PermissionDenied,
        "series_id",
        "not a series this agency registered",
    )
}

/// A stored preference, decoded into the domain type.
pub(super) fn decode_preference(
    sp: &pb::StoredPreference,
) -> Result<(Preference, i64), StoreError> {
    let p = sp.preference.clone().unwrap_or_default();
    let (_, pref) =
        Preference::from_proto(&p).map_err(|e| StoreError::Corrupt(format!("preference: {e}")))?;
    Ok((pref, sp.set_at_ms))
}

/// The preference in force, in the domain's terms.
fn preference(g: &dyn Group, id: &SeriesId) -> Result<Option<(Preference, i64)>, StoreError> {
    g.preference(id)?
        .map(|sp| decode_preference(&sp))
        .transpose()
}

fn view(g: &dyn Group, rec: &pb::SeriesRecord) -> Result<pb::SeriesView, StoreError> {
    let id = SeriesId::parse(&rec.series_id).map_err(StoreError::Corrupt)?;
    let (sha256_count, pdq_count) = g.series_hash_counts(&id)?;
    Ok(pb::SeriesView {
        series_id: rec.series_id.clone(),
        sha256_count,
        pdq_count,
        representative: rec.representative.clone(),
    })
}

impl Writer {
    /// Stages the hashes of a series; returns how many of each kind the
    /// series did not hold yet (SHA-256, PDQ).
    fn stage_hashes(
        &self,
        g: &mut dyn Group,
        id: &SeriesId,
        h: &SeriesHashes,
    ) -> Result<(u64, u64), StoreError> {
        let (mut sha, mut pdq) = (0, 0);
        let keys = h
            .sha256
            .iter()
            .map(|s| SeriesHashKey::Sha256(*id, *s))
            .chain(h.pdq.iter().map(|(p, q)| SeriesHashKey::Pdq(*id, *p, *q)));
        for key in keys {
            let new = !g.has_series_hash(&key)?;
            match key {
                SeriesHashKey::Sha256(..) => sha += u64::from(new),
                SeriesHashKey::Pdq(..) => pdq += u64::from(new),
            }
            g.put_series_hash(&key);
        }
        Ok((sha, pdq))
    }

    /// A new series, registered by `owner` (a police agency).
    pub(super) fn stage_register(
        &mut self,
        g: &mut dyn Group,
        id: SeriesId,
        owner: &SpiffeId,
        hashes: &SeriesHashes,
    ) -> Result<pb::SeriesView, StoreError> {
        let rec = pb::SeriesRecord {
            series_id: id.to_string(),
            owner: owner.to_string(),
            representative: String::new(),
        };
        g.put_series(&id, &rec);
        let (sha, pdq) = self.stage_hashes(g, &id, hashes)?;
        let detail = format!("{sha} sha256, {pdq} pdq");
        let ev = event(
            self.clock.now_ms(),
            "series-registered",
            owner,
            id.to_string(),
            detail,
        );
        self.stage_audit(g, ev);
        view(g, &rec)
    }

    /// More hashes, by the agency that registered the series.
    pub(super) fn stage_add_hashes(
        &mut self,
        g: &mut dyn Group,
        id: SeriesId,
        actor: &SpiffeId,
        hashes: &SeriesHashes,
    ) -> Result<Refused<pb::SeriesView>, StoreError> {
        let Some(rec) = g.series(&id)?.filter(|r| mine(r, actor)) else {
            return Ok(Err(not_registered()));
        };
        let (sha, pdq) = self.stage_hashes(g, &id, hashes)?;
        let detail = format!("+{sha} sha256, +{pdq} pdq");
        let ev = event(
            self.clock.now_ms(),
            "series-hashes",
            actor,
            id.to_string(),
            detail,
        );
        self.stage_audit(g, ev);
        Ok(Ok(view(g, &rec)?))
    }

    /// Links the series to a representative, by the agency that
    /// registered it. Consent given to an earlier representative does not
    /// pass to the new one: it is withdrawn.
    pub(super) fn stage_link(
        &mut self,
        g: &mut dyn Group,
        id: SeriesId,
        actor: &SpiffeId,
        representative: &SpiffeId,
    ) -> Result<Refused<pb::SeriesView>, StoreError> {
        let Some(mut rec) = g.series(&id)?.filter(|r| mine(r, actor)) else {
            return Ok(Err(not_registered()));
        };
        let to = representative.to_string();
        if rec.representative != to {
            self.stage_withdrawal(g, &id, &rec)?;
            rec.representative = to.clone();
            g.put_series(&id, &rec);
            let ev = event(
                self.clock.now_ms(),
                "series-linked",
                actor,
                id.to_string(),
                to,
            );
            self.stage_audit(g, ev);
        }
        Ok(Ok(view(g, &rec)?))
    }

    /// The victim's choice, by the series' representative: what was chosen
    /// before is withdrawn first (queued notifications included).
    pub(super) fn stage_preference(
        &mut self,
        g: &mut dyn Group,
        id: SeriesId,
        actor: &SpiffeId,
        preference: Preference,
    ) -> Result<Refused<pb::Preference>, StoreError> {
        let now = self.clock.now_ms();
        let Some(rec) = g
            .series(&id)?
            .filter(|r| r.representative == actor.to_string())
        else {
            return Ok(Err(Refusal::new(
                RefusalKind::PermissionDenied,
                "preference.series_id",
                "not a series linked to this representative",
            )));
        };
        self.stage_withdrawal(g, &id, &rec)?;
        if preference != Preference::Never {
            let stored = pb::StoredPreference {
                preference: Some(preference.to_proto(&id)),
                set_at_ms: now,
            };
            g.put_preference(&id, &stored);
            if let Preference::Digest { .. } = preference {
                let state = pb::DigestState {
                    from_ms: now,
                    period_start_ms: 0,
                    sent: 0,
                };
                g.put_digest_state(&id, &state);
            }
        }
        let ev = event(
            now,
            "preference",
            actor,
            id.to_string(),
            preference.describe(),
        );
        self.stage_audit(g, ev);
        Ok(Ok(preference.to_proto(&id)))
    }

    /// A police agency marks a case as in legal proceedings: once (false
    /// when it was marked before), with a draft for every series of the
    /// case whose victim chose legal proceedings only.
    pub(super) fn stage_proceedings(
        &mut self,
        g: &mut dyn Group,
        case: CaseId,
        agency: &SpiffeId,
    ) -> Result<Refused<bool>, StoreError> {
        let now = self.clock.now_ms();
        let Some(mut rec) = g.case(&case)? else {
            return Ok(Err(Refusal::new(
                RefusalKind::NotFound,
                "case_id",
                format!("no case {case}"),
            )));
        };
        if !rec.proceedings_by.is_empty() {
            return Ok(Ok(false));
        }
        rec.proceedings_by = agency.to_string();
        rec.proceedings_at_ms = now;
        let mut drafts = 0;
        for (series, notified) in g.series_of_case(&case)? {
            if !notified && self.stage_draft(g, &case, &series, &rec)? {
                g.put_case_series(&case, &series, true);
                drafts += 1;
            }
        }
        let first = ReportId::parse(&rec.first_report_id)
            .map_err(|e| StoreError::Corrupt(format!("case first report: {e}")))?;
        let line = format!("case {case} marked as in legal proceedings by {agency}");
        self.stage_history(g, &first, now, "proceedings", agency, line.clone());
        let detail = format!("{line}; {drafts} notification(s) to make");
        let ev = event(now, "proceedings", agency, case.to_string(), detail);
        self.stage_audit(g, ev);
        g.put_case(&case, &rec);
        Ok(Ok(true))
    }

    /// A digest part with nothing to say: counting starts again at `to`,
    /// if it still stands at `from`.
    pub(super) fn stage_digest_advance(
        &mut self,
        g: &mut dyn Group,
        id: SeriesId,
        from: i64,
        to: i64,
    ) -> Result<(), StoreError> {
        if let Some(mut state) = g.digest_state(&id)? {
            if state.from_ms == from {
                state.from_ms = to;
                g.put_digest_state(&id, &state);
            }
        }
        Ok(())
    }

    /// A proceedings notification to make for `series` in `case`, if the
    /// victim chose legal proceedings only. True if one was drafted.
    fn stage_draft(
        &self,
        g: &mut dyn Group,
        case: &CaseId,
        series: &SeriesId,
        rec: &pb::CaseRecord,
    ) -> Result<bool, StoreError> {
        if !matches!(preference(g, series)?, Some((Preference::LegalOnly, _))) {
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
        g.put_draft(case, series, &draft);
        Ok(true)
    }

    /// Drops the preference, the digest being prepared, the drafts and
    /// every notification of the series still in its representative's queue.
    fn stage_withdrawal(
        &self,
        g: &mut dyn Group,
        id: &SeriesId,
        rec: &pb::SeriesRecord,
    ) -> Result<(), StoreError> {
        g.remove_preference(id);
        g.remove_digest_state(id);
        for case in g.drafts_of(id)? {
            g.remove_draft(&case, id);
        }
        let Ok(rep) = SpiffeId::parse(&rec.representative) else {
            return Ok(());
        };
        for (seq, item) in g.queue_items(&rep)? {
            let QueueItem::Notification(nid) = item else {
                continue;
            };
            let Some(sn) = g.notification(&nid)? else {
                continue;
            };
            let n = pb::Notification::decode(sn.notification.as_slice())
                .map_err(|e| StoreError::Corrupt(format!("notification: {e}")))?;
            if n.series_id == id.to_string() {
                g.take_queue(&rep, seq)?;
            }
        }
        Ok(())
    }

    /// Records that report `report` of `case` holds material of each of
    /// `series` (opened: it opened the case), and drafts a proceedings
    /// notification where the case is in proceedings already.
    pub(super) fn stage_series_matches(
        &mut self,
        g: &mut dyn Group,
        report: &ReportId,
        case: &CaseId,
        opened: bool,
        series: &[SeriesId],
    ) -> Result<(), StoreError> {
        if series.is_empty() {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let rec = g.case(case)?;
        for s in series {
            let m = pb::SeriesMatch {
                case_id: case.to_string(),
                opened,
            };
            g.put_series_match(s, now, report, &m);
            let notified = g.case_series(case, s)? == Some(true);
            let mut value = notified;
            if let Some(rec) = rec
                .as_ref()
                .filter(|r| !r.proceedings_by.is_empty() && !notified)
            {
                if self.stage_draft(g, case, s, rec)? {
                    value = true;
                }
            }
            g.put_case_series(case, s, value);
        }
        Ok(())
    }

    /// Queues a signed notification if it is still wanted: the series is
    /// still linked to its representative, and the choice in force (set
    /// when it was made) still asks for it: for a digest, counting still
    /// stands where it was made from and the period's cap is not reached.
    pub(super) fn stage_notification(
        &mut self,
        g: &mut dyn Group,
        out: Outgoing,
    ) -> Result<bool, StoreError> {
        let linked = g
            .series(&out.series)?
            .is_some_and(|r| r.representative == out.representative.to_string());
        let pref = preference(g, &out.series)?;
        let wanted = linked
            && match (&out.why, pref) {
                (Why::Proceedings { case }, Some((Preference::LegalOnly, _))) => {
                    g.has_draft(case, &out.series)?
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
                ) if set == *set_at_ms => match g.digest_state(&out.series)? {
                    Some(mut state) => {
                        let sent = sent_in(&state, *period_start);
                        // The hard cap, checked where the notification is queued.
                        let ok = state.from_ms == *from && sent < cap && *number == sent + 1;
                        if ok {
                            state.from_ms = *to;
                            state.period_start_ms = *period_start;
                            state.sent = sent + 1;
                            g.put_digest_state(&out.series, &state);
                        }
                        ok
                    }
                    None => false,
                },
                _ => false,
            };
        if let Why::Proceedings { case } = &out.why {
            g.remove_draft(case, &out.series);
        }
        if !wanted {
            return Ok(false);
        }
        g.put_notification(&out.id, &out.signed);
        self.enqueue(g, &out.representative, &QueueItem::Notification(out.id));
        let what = match &out.why {
            Why::Proceedings { case } => format!("legal proceedings in case {case}"),
            Why::Digest {
                from, to, number, ..
            } => format!("digest {number} for {}..{}", rfc3339(*from), rfc3339(*to)),
        };
        let ev = event(
            self.clock.now_ms(),
            "notified",
            &out.actor,
            out.series.to_string(),
            format!("notification {} to {}: {what}", out.id, out.representative),
        );
        self.stage_audit(g, ev);
        self.bump("notifications");
        Ok(true)
    }
}
