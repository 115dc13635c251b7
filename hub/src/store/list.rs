//! The known-hash list's changes, stored with their running digest and
//! live count, the tip they lead to, and one audit record.

use super::pipeline::{event, Writer};
use super::seam::Group;
use super::types::ListWrite;

impl Writer {
    pub(super) fn stage_list(&mut self, g: &mut dyn Group, write: ListWrite) {
        let (Some(first), Some(last)) = (write.changes.first(), write.changes.last()) else {
            return;
        };
        let subject = format!("list versions {}..={}", first.tip.version, last.tip.version);
        g.put_list_tip(&last.tip);
        for c in &write.changes {
            g.put_list_change(c);
        }
        let ev = event(
            self.clock.now_ms(),
            "list",
            &write.actor,
            subject,
            write.lines.join("\n"),
        );
        self.stage_audit(g, ev);
    }
}
