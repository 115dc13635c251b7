//! The rules of cases, locations and deadlines: a case opens with its
//! locations' deadlines; a sighting joins it (a graver assessment, a new
//! location, notices asked); a case step is stored once (the same step id
//! with other bytes is a conflict); a missed deadline escalates exactly
//! once; a report split out of a case leaves it with what it brought.

use super::pipeline::{event, Writer};
use super::seam::Group;
use super::types::{CaseKeys, Escalation, SightingWrite, SplitWrite, StepOutcome, StepWrite};
use super::StoreError;
use meldnet_core::time::rfc3339;
use meldnet_core::ReportId;
use meldnet_core::SpiffeId;
use meldnet_core::{CaseId, CaseStep, StepKind};
use meldnet_proto::v1 as pb;

/// When a location's time to removal starts: at its notice (a location
/// can join a case, or a case become illegal everywhere, before one).
pub fn noticed_or_opened(rec: &pb::LocationRecord) -> i64 {
    if rec.noticed_at_ms > 0 {
        rec.noticed_at_ms
    } else {
        rec.opened_at_ms
    }
}

/// A location's state, in the words statistics and explanations use.
pub fn location_state(rec: &pb::LocationRecord, now_ms: i64) -> &'static str {
    if !rec.moved_to_case_id.is_empty() {
        return "split_out";
    }
    let removed_in_time = rec.removed_at_ms > 0 && rec.removed_at_ms <= rec.deadline_ms;
    if rec.deadline_ms == 0 {
        if rec.removed_at_ms > 0 {
            "removed"
        } else {
            "no_notice_due"
        }
    } else if removed_in_time {
        "removed"
    } else if rec.removed_at_ms > 0 {
        "removed_late"
    } else if rec.escalated_deadline_ms == rec.deadline_ms {
        "escalated"
    } else if rec.not_removed {
        "not_removed"
    } else if now_ms > rec.deadline_ms {
        "overdue"
    } else {
        "open"
    }
}

fn first_report(rec: &pb::CaseRecord) -> Result<ReportId, StoreError> {
    ReportId::parse(&rec.first_report_id)
        .map_err(|e| StoreError::Corrupt(format!("case first report: {e}")))
}

impl Writer {
    /// Opens a case with the deadlines of its locations.
    pub(super) fn stage_open(
        &mut self,
        g: &mut dyn Group,
        case_id: &CaseId,
        report: &ReportId,
        record: &pb::CaseRecord,
        keys: &CaseKeys,
    ) {
        for (i, l) in record.locations.iter().enumerate() {
            if l.deadline_ms > 0 {
                g.add_deadline(l.deadline_ms, case_id, i as u32);
            }
        }
        self.stage_case_keys(g, case_id, report, keys);
        self.bump("cases");
        g.put_case(case_id, record);
    }

    /// `report` (from `origin`) joins a case as a sighting.
    pub(super) fn stage_sighting(
        &mut self,
        g: &mut dyn Group,
        s: SightingWrite,
        report: &ReportId,
        origin: &SpiffeId,
        now: i64,
    ) -> Result<(), StoreError> {
        let case_id = &s.case_id;
        let Some(mut rec) = g.case(case_id)? else {
            tracing::error!(%case_id, %report, "sighting of a case that is not stored; stored without it");
            return Ok(());
        };
        rec.sightings += 1;
        let first = s.first_report;
        if let Some(a) = s.assessment {
            rec.assessment = a as i32;
            let line = format!(
                "report {} assessed case {case_id} graver: {}",
                report,
                a.as_str_name()
            );
            self.stage_history(g, &first, now, "assessment", origin, line);
        }
        for (at, n) in s.notices {
            let Some(l) = rec.locations.get_mut(at as usize) else {
                continue;
            };
            if l.deadline_ms > 0 {
                g.remove_deadline(l.deadline_ms, case_id, at);
            }
            n.apply(l, report, now);
            g.add_deadline(l.deadline_ms, case_id, at);
            let line = format!(
                "report {} made case {case_id} illegal everywhere: notice asked at location {at}, deadline {}",
                report,
                rfc3339(n.deadline_ms)
            );
            self.stage_history(g, &first, now, "notice", origin, line);
        }
        if let Some(l) = s.new_location {
            let at = rec.locations.len() as u32;
            if l.deadline_ms > 0 {
                g.add_deadline(l.deadline_ms, case_id, at);
            }
            let line = format!(
                "report {} brought location {at} (hosted in {}) to case {case_id}{}",
                report,
                if l.hosting_country.is_empty() {
                    "no country that takes part"
                } else {
                    &l.hosting_country
                },
                if l.deadline_ms > 0 {
                    format!("; notice asked, deadline {}", rfc3339(l.deadline_ms))
                } else {
                    String::new()
                }
            );
            self.stage_history(g, &first, now, "location", origin, line);
            rec.locations.push(*l);
        }
        g.add_sighting(case_id, report);
        self.stage_case_keys(g, case_id, report, &s.keys);
        let line = format!(
            "report {} joined case {case_id} (matched by {})",
            report, s.matched_by
        );
        self.stage_history(g, &first, now, "sighting", origin, line);
        self.bump("sightings");
        g.put_case(case_id, &rec);
        Ok(())
    }

    pub(super) fn stage_step(
        &mut self,
        g: &mut dyn Group,
        w: StepWrite,
    ) -> Result<StepOutcome, StoreError> {
        let case_id = w.step.case_id;
        let Some(mut rec) = g.case(&case_id)? else {
            return Ok(StepOutcome::NoCase);
        };
        let step_id = w.step.step_id.to_string();
        for old in rec.locations.iter().flat_map(|l| &l.steps) {
            let Some(signed) = &old.signed else { continue };
            if let Ok(s) = CaseStep::decode(&signed.step) {
                if s.step_id.to_string() == step_id {
                    return Ok(if signed.step == w.signed.step {
                        StepOutcome::Duplicate(Box::new(rec))
                    } else {
                        StepOutcome::Conflict
                    });
                }
            }
        }
        let at = w.received_at_ms;
        let location = w.step.location;
        let Some(loc) = rec.locations.get_mut(location as usize) else {
            return Ok(StepOutcome::NoCase);
        };
        match w.step.kind {
            StepKind::NoticeSent => loc.provider = w.step.provider.as_ref().map(|p| p.to_proto()),
            StepKind::Removed => {
                if loc.removed_at_ms == 0 {
                    loc.removed_at_ms = at;
                }
                // In time: the deadline is met. Late: left for the watcher,
                // which escalates a missed deadline exactly once.
                if loc.deadline_ms > 0 && at <= loc.deadline_ms {
                    g.remove_deadline(loc.deadline_ms, &case_id, location);
                }
            }
            // A refusal is a reasoned "not removed": the deadline still
            // escalates when it passes.
            StepKind::NotRemoved | StepKind::Refused => loc.not_removed = true,
            // Recorded for the regulator's view; the deadline stands.
            StepKind::Received | StepKind::NotFound => {}
            StepKind::Reappeared => {
                loc.removed_at_ms = 0;
                loc.not_removed = false;
                if loc.deadline_ms > 0 {
                    g.remove_deadline(loc.deadline_ms, &case_id, location);
                }
                if w.reappear_deadline_ms > 0 {
                    loc.deadline_ms = w.reappear_deadline_ms;
                    g.add_deadline(loc.deadline_ms, &case_id, location);
                }
            }
        }
        loc.steps.push(pb::StoredStep {
            signed: Some(w.signed),
            received_at_ms: at,
        });
        let line = w.step.describe();
        let first = first_report(&rec)?;
        self.stage_history(g, &first, at, "step", &w.actor, line.clone());
        let ev = event(at, "case-step", &w.actor, case_id.to_string(), line);
        self.stage_audit(g, ev);
        self.bump(&format!("steps/{}", w.step.kind.name()));
        g.put_case(&case_id, &rec);
        Ok(StepOutcome::Stored(Box::new(rec)))
    }

    /// Escalates a missed deadline, once: not when the location was removed
    /// in time, its deadline moved, or this deadline was escalated already.
    pub(super) fn stage_escalation(
        &mut self,
        g: &mut dyn Group,
        e: Escalation,
    ) -> Result<bool, StoreError> {
        // The watcher must not meet this deadline again, whatever follows.
        g.remove_deadline(e.deadline_ms, &e.case_id, e.location);
        let Some(mut rec) = g.case(&e.case_id)? else {
            tracing::error!(case = %e.case_id, "deadline of a case that is not stored: dropped");
            return Ok(false);
        };
        let Some(loc) = rec.locations.get_mut(e.location as usize) else {
            tracing::error!(case = %e.case_id, location = e.location, "deadline of a location that is not stored: dropped");
            return Ok(false);
        };
        let in_time = loc.removed_at_ms > 0 && loc.removed_at_ms <= e.deadline_ms;
        if loc.deadline_ms != e.deadline_ms || loc.escalated_deadline_ms == e.deadline_ms || in_time
        {
            return Ok(false);
        }
        loc.escalated_deadline_ms = e.deadline_ms;
        loc.escalations.push(e.id.to_string());
        let queued = self.stage_redecision(g, &e.id, &e.report_id, &e.stored, &e.recipients);
        let to: Vec<String> = e.recipients.iter().map(|r| r.to_string()).collect();
        let line = format!(
            "escalation {}: deadline {} of location {} passed without removal; to {}",
            e.id,
            rfc3339(e.deadline_ms),
            e.location,
            if to.is_empty() {
                "nobody registered".into()
            } else {
                to.join(" ")
            }
        );
        let now = self.clock.now_ms();
        self.stage_history_queued(
            g,
            &e.report_id,
            now,
            "escalated",
            &e.actor,
            line.clone(),
            queued,
        );
        let ev = event(now, "escalated", &e.actor, e.case_id.to_string(), line);
        self.stage_audit(g, ev);
        self.bump("deadlines_missed");
        g.put_case(&e.case_id, &rec);
        Ok(true)
    }

    /// Splits a report out of a case into its own; false when it is no
    /// longer a sighting of that case.
    pub(super) fn stage_split(
        &mut self,
        g: &mut dyn Group,
        w: SplitWrite,
    ) -> Result<bool, StoreError> {
        let Some(mut from) = g.case(&w.from)? else {
            return Ok(false);
        };
        if !g.is_sighting(&w.from, &w.report_id)? {
            return Ok(false);
        }
        let new_id = CaseId::parse(&w.record.case_id)
            .map_err(|e| StoreError::Corrupt(format!("case id: {e}")))?;
        g.remove_sighting(&w.from, &w.report_id);
        from.sightings = from.sightings.saturating_sub(1);
        if let Some(l) = from.locations.get_mut(w.from_location as usize) {
            if l.deadline_ms > 0 {
                g.remove_deadline(l.deadline_ms, &w.from, w.from_location);
            }
            l.moved_to_case_id = new_id.to_string();
        }
        for (i, l) in w.record.locations.iter().enumerate() {
            if l.deadline_ms > 0 {
                g.add_deadline(l.deadline_ms, &new_id, i as u32);
            }
        }
        self.stage_case_keys(g, &new_id, &w.report_id, &w.keys);
        let queued =
            self.stage_redecision(g, &w.decision_id, &w.report_id, &w.stored, &w.recipients);
        let now = self.clock.now_ms();
        let line = format!(
            "report {} split out of case {} (location {}) into case {new_id} by {}: {}",
            w.report_id, w.from, w.from_location, w.actor, w.reason
        );
        let first = first_report(&from)?;
        self.stage_history_queued(
            g,
            &w.report_id,
            now,
            "split",
            &w.actor,
            line.clone(),
            queued,
        );
        self.stage_history(g, &first, now, "split", &w.actor, line.clone());
        let ev = event(now, "case-split", &w.actor, w.from.to_string(), line);
        self.stage_audit(g, ev);
        self.bump("cases");
        g.put_case(&w.from, &from);
        g.put_case(&new_id, &w.record);
        Ok(true)
    }
}
