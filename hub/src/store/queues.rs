//! The rules of queues: a recipient settles only entries of its own queue
//! (acknowledged or refused with a reason), each once, and settling an
//! entry settled before answers it again without changing anything; what
//! was sent is recorded; an entry whose body is damaged is held back and
//! recorded once.

use super::pipeline::{event, Writer};
use super::seam::Group;
use super::StoreError;
use meldnet_core::ReportId;
use meldnet_core::SpiffeId;

/// The highest queue position among "seq:id" lines.
fn settled_max(lines: &[String]) -> u64 {
    lines
        .iter()
        .filter_map(|l| l.split(':').next()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
}

impl Writer {
    /// Removes acknowledged and refused entries from `recipient`'s queue;
    /// returns the sequence numbers asked for (an entry already gone was
    /// settled before).
    pub(super) fn stage_ack(
        &mut self,
        g: &mut dyn Group,
        recipient: &SpiffeId,
        seqs: &[u64],
        rejected: &[(u64, String)],
    ) -> Result<Vec<u64>, StoreError> {
        let mut removed = Vec::new();
        let mut refused = Vec::new();
        let asked = seqs
            .iter()
            .map(|s| (*s, None))
            .chain(rejected.iter().map(|(s, why)| (*s, Some(why.as_str()))));
        let mut settled = Vec::with_capacity(seqs.len() + rejected.len());
        let mut seen = std::collections::HashSet::new();
        for (seq, why) in asked {
            // Each entry once: named twice (acknowledged and refused, or
            // twice over) it is settled by its first mention.
            if !seen.insert(seq) {
                continue;
            }
            settled.push(seq);
            let Some(item) = g.take_queue(recipient, seq)? else {
                continue;
            };
            let report = item.report_id();
            let now = self.clock.now_ms();
            match why {
                // Told in the report's history from this audit record.
                None => removed.push(format!("{seq}:{report}")),
                Some(why) => {
                    let line = format!("queue entry {seq}: {why}");
                    self.stage_history(g, &report, now, "refused", recipient, line);
                    self.bump("deliveries_refused");
                    metrics::counter!("meldnet_deliveries_refused_total").increment(1);
                    refused.push(format!("{seq}:{report}: {why}"));
                }
            }
        }
        let acknowledged = settled_max(&removed);
        for (kind, lines) in [("acknowledged", removed), ("refused", refused)] {
            if !lines.is_empty() {
                let ev = event(
                    self.clock.now_ms(),
                    kind,
                    recipient,
                    recipient.to_string(),
                    lines.join(","),
                );
                let at = self.stage_audit(g, ev);
                if kind == "acknowledged" {
                    g.put_audit_mark(recipient, acknowledged, at);
                }
            }
        }
        Ok(settled)
    }

    /// Records, once across restarts too, that a queue entry is held back
    /// for a damaged body.
    pub(super) fn stage_held_back(
        &mut self,
        g: &mut dyn Group,
        recipient: &SpiffeId,
        seq: u64,
        report: &ReportId,
        why: &str,
    ) -> Result<(), StoreError> {
        if g.is_held_back(seq)? {
            return Ok(());
        }
        g.mark_held_back(seq);
        let now = self.clock.now_ms();
        let line = format!("queue entry {seq} held back: {why}");
        self.stage_history(g, report, now, "held-back", recipient, line.clone());
        self.bump("deliveries_held_back");
        let ev = event(now, "held-back", recipient, report.to_string(), line);
        self.stage_audit(g, ev);
        Ok(())
    }

    /// Records that entries were sent to `recipient`.
    pub(super) fn stage_delivered(
        &mut self,
        g: &mut dyn Group,
        recipient: &SpiffeId,
        entries: &[(u64, ReportId)],
    ) {
        let now = self.clock.now_ms();
        let detail = entries
            .iter()
            .map(|(seq, id)| format!("{seq}:{id}"))
            .collect::<Vec<_>>()
            .join(",");
        let ev = event(now, "delivered", recipient, recipient.to_string(), detail);
        // Told in each report's history from this record (its mark leads
        // there), not in a history event of each.
        let at = self.stage_audit(g, ev);
        let last = entries.iter().map(|(seq, _)| *seq).max().unwrap_or(0);
        g.put_audit_mark(recipient, last, at);
    }
}
