//! A report's history: the events kept with it, and its deliveries and
//! acknowledgements read from the audit log. Each delivery batch and each
//! acknowledgement is one audit record naming the queue entries it covers
//! ("seq:report"), marked per recipient by the highest position it names
//! (`Group::put_audit_mark`); the event that queued a report keeps the
//! positions (`QueuedAt`). So the fact is kept once, in the chain, and the
//! history still tells it.

use super::{Store, StoreError};
use meldnet_core::ReportId;
use meldnet_core::SpiffeId;
use meldnet_proto::v1 as pb;
use prost::Message;

/// Audit records read for one queue entry at most (a delivery batch holds
/// up to 2,048 entries, so this looks well past a redelivery).
const MARKS_READ: usize = 256;

impl Store {
    /// What happened to a report, in order of time: the events kept with
    /// it, and each delivery and acknowledgement of its queue entries.
    pub fn history(&self, id: &ReportId) -> Result<Vec<pb::HistoryEvent>, StoreError> {
        let mut out = Vec::new();
        for h in self.backend.stored_history(id)? {
            if let Some(ev) = h.event {
                out.push(ev);
            }
            for q in &h.queued {
                out.extend(self.deliveries_of(q)?);
            }
        }
        // Stable: events of the same millisecond keep their order.
        out.sort_by_key(|e| e.at_ms);
        Ok(out)
    }

    /// The deliveries and the acknowledgement of one queue entry, from the
    /// audit records marked for its queue at or after its position.
    fn deliveries_of(&self, q: &pb::QueuedAt) -> Result<Vec<pb::HistoryEvent>, StoreError> {
        let recipient = SpiffeId::parse(&q.recipient).map_err(|e| {
            StoreError::Corrupt(format!("history: queued for {}: {e}", q.recipient))
        })?;
        let seq = q.seq.to_string();
        let mut out = Vec::new();
        for audit_seq in self.backend.audit_marks(&recipient, q.seq, MARKS_READ)? {
            let Some(bytes) = self.backend.audit_record(audit_seq)? else {
                continue;
            };
            let rec = pb::AuditRecord::decode(bytes.as_slice())
                .map_err(|e| StoreError::Corrupt(format!("audit record {audit_seq}: {e}")))?;
            let ev = pb::AuditEvent::decode(rec.event.as_slice())
                .map_err(|e| StoreError::Corrupt(format!("audit event {audit_seq}: {e}")))?;
            if ev.kind != "delivered" && ev.kind != "acknowledged" {
                continue;
            }
            let names = ev
                .detail
                .split(',')
                .any(|entry| entry.split(':').next() == Some(seq.as_str()));
            if !names {
                continue;
            }
            let acknowledged = ev.kind == "acknowledged";
            out.push(pb::HistoryEvent {
                at_ms: ev.at_ms,
                kind: ev.kind,
                actor: ev.actor,
                detail: format!("queue entry {}", q.seq),
            });
            if acknowledged {
                break;
            }
        }
        Ok(out)
    }
}
