//! The rules of storing reports: a receipt is idempotent (the same id with
//! the same bytes answers the stored record, other bytes a conflict, and
//! neither changes anything); a new report is stored with its decision,
//! one queue entry per recipient, its history, its case and its series.

use super::pipeline::{event, Writer};
use super::seam::{Group, QueueItem};
use super::types::{CaseKeys, CaseWrite, Committed, ExactKey, NewReport};
use super::StoreError;
use meldnet_core::CaseId;
use meldnet_core::ReportId;
use meldnet_core::SpiffeId;
use meldnet_core::{PdqHash, Sha256};
use meldnet_proto::v1 as pb;

/// The case and the deconfliction keys of a stored keys record: the one
/// reading of it, for a report's keys and for the index alike.
pub(super) fn keys_of_record(r: &pb::CaseKeysRecord) -> Result<(CaseId, CaseKeys), StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("case keys: {what}"));
    let hash = |b: &[u8], what: &str| -> Result<[u8; 32], StoreError> {
        b.try_into().map_err(|_| corrupt(what))
    };
    let id = r
        .case_id
        .as_slice()
        .try_into()
        .map(CaseId::from_bytes)
        .map_err(|_| corrupt("case_id"))?;
    if r.pdq_qualities.len() != r.pdqs.len() {
        return Err(corrupt("pdq_qualities"));
    }
    let mut keys = CaseKeys::default();
    for u in &r.urls {
        keys.urls.push(hash(u, "urls")?);
    }
    for f in &r.files {
        keys.files.push(Sha256(hash(f, "files")?));
    }
    for (h, q) in r.pdqs.iter().zip(&r.pdq_qualities) {
        keys.pdqs.push((PdqHash(hash(h, "pdqs")?), *q));
    }
    Ok((id, keys))
}

/// "decisions <tree size> <root>" of the decision tree a stored report's
/// signed decision is a leaf of (none: not a sound path).
fn decision_tree(stored: &pb::StoredReport) -> Option<String> {
    let d = stored.decision.as_ref()?;
    let path: Vec<[u8; 32]> = d
        .audit_path
        .iter()
        .map(|p| p.as_slice().try_into().ok())
        .collect::<Option<_>>()?;
    let leaf = meldnet_core::leaf_hash(&d.decision);
    let root = meldnet_core::root_from_path(leaf, d.leaf_index, d.tree_size, &path)?;
    Some(format!("decisions {} {}", d.tree_size, hex::encode(root)))
}

impl Writer {
    pub(super) fn stage_reports(
        &mut self,
        g: &mut dyn Group,
        reports: Vec<NewReport>,
    ) -> Result<Vec<Committed>, StoreError> {
        let mut out = Vec::with_capacity(reports.len());
        // One audit record per submitted batch: a line per new report.
        let mut audit_lines = Vec::new();
        let mut origin = None;
        // The signed tree the batch's decisions are leaves of: one line of
        // the record binds every decision of the batch.
        let mut tree: Option<String> = None;
        for r in reports {
            self.group_placement = self.group_placement.max(r.placement);
            // Stored before, or earlier in this group.
            if let Some(existing) = g.report(&r.id)? {
                let same = existing.report.as_ref().map(|s| &s.report)
                    == r.stored.report.as_ref().map(|s| &s.report);
                out.push(if same {
                    Committed::Duplicate(existing)
                } else {
                    Committed::Conflict
                });
                continue;
            }
            g.put_report(&r.id, &r.stored);
            let queued: Vec<pb::QueuedAt> = r
                .recipients
                .iter()
                .map(|recipient| self.enqueue(g, recipient, &QueueItem::Report(r.id)))
                .collect();
            let now = self.clock.now_ms();
            for e in &r.extra {
                let q = self.stage_redecision(g, &e.id, &e.report_id, &e.stored, &e.recipients);
                let line = e.line.clone();
                self.stage_history_queued(g, &e.report_id, now, "decided", &r.origin, line, q);
            }
            let summary = r.summary.clone();
            self.stage_history_queued(g, &r.id, now, "decided", &r.origin, summary, queued);
            for c in &r.counts {
                self.bump(c);
            }
            let placed = match r.case {
                Some(CaseWrite::Open(record, keys)) => {
                    let case_id = CaseId::parse(&record.case_id)
                        .map_err(|e| StoreError::Corrupt(format!("case id: {e}")))?;
                    self.stage_open(g, &case_id, &r.id, &record, &keys);
                    Some((case_id, true))
                }
                Some(CaseWrite::Sighting(s)) => {
                    let case_id = s.case_id;
                    self.stage_sighting(g, *s, &r.id, &r.origin, now)?;
                    Some((case_id, false))
                }
                None => None,
            };
            if let Some((case_id, opened)) = placed {
                self.stage_series_matches(g, &r.id, &case_id, opened, &r.series)?;
            }
            audit_lines.push(format!("{} {}", r.id, r.digest));
            if tree.is_none() {
                tree = decision_tree(&r.stored);
            }
            origin.get_or_insert(r.origin);
            out.push(Committed::New);
        }
        if let Some(origin) = origin {
            let subject = format!("{} reports", audit_lines.len());
            if let Some(t) = tree {
                audit_lines.insert(0, t);
            }
            let ev = event(
                self.clock.now_ms(),
                "submitted",
                &origin,
                subject,
                audit_lines.join("\n"),
            );
            self.stage_audit(g, ev);
        }
        Ok(out)
    }

    /// A further decision on a stored report (an escalation, a notice at
    /// another location, a split): stored under its id, and a queue entry
    /// per recipient naming the report and that id (returned, for the
    /// history event that tells of it).
    pub(super) fn stage_redecision(
        &mut self,
        g: &mut dyn Group,
        id: &CaseId,
        report_id: &ReportId,
        stored: &pb::StoredReport,
        recipients: &[SpiffeId],
    ) -> Vec<pb::QueuedAt> {
        g.put_escalation(id, stored);
        let item = QueueItem::Redecision {
            report: *report_id,
            decision: *id,
        };
        recipients
            .iter()
            .map(|recipient| self.enqueue(g, recipient, &item))
            .collect()
    }

    /// The keys a report brought to its case (none if it brought none),
    /// as one record: the form [`keys_of_record`] reads back.
    /// Each exact key then leads to the case too (the index asks the
    /// store for them), and the record takes the next place in the order
    /// (the index's PDQ runs are made from the records in that order).
    pub(super) fn stage_case_keys(
        &mut self,
        g: &mut dyn Group,
        case_id: &CaseId,
        report: &ReportId,
        keys: &CaseKeys,
    ) {
        if keys.urls.is_empty() && keys.files.is_empty() && keys.pdqs.is_empty() {
            return;
        }
        let seq = self.counters.next_keys_seq;
        self.counters.next_keys_seq += 1;
        let record = pb::CaseKeysRecord {
            case_id: case_id.as_bytes().to_vec(),
            urls: keys.urls.iter().map(|u| u.to_vec()).collect(),
            files: keys.files.iter().map(|f| f.0.to_vec()).collect(),
            pdqs: keys.pdqs.iter().map(|(h, _)| h.0.to_vec()).collect(),
            pdq_qualities: keys.pdqs.iter().map(|(_, q)| *q).collect(),
            seq,
        };
        for u in &keys.urls {
            g.put_case_key(&ExactKey::Url(*u), case_id);
        }
        for f in &keys.files {
            g.put_case_key(&ExactKey::File(*f), case_id);
        }
        g.put_case_keys(report, &record);
    }
}
