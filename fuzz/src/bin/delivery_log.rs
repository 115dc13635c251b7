//! The delivery-log reader: the input is written as a recipient's
//! `deliveries.log` and read as `meldnet-agency log check` reads it
//! (`log_repair::check`: every damaged range, every good record, a torn
//! tail), and as `show`/`verify` read it (`inbox::check_log`: each record
//! decoded as a `pb::Delivery` and verified again).

use afl::fuzz;
use meldnet_recipient::{LogReader, DELIVERY_LOG, LOG_FILE};
use meldnet_recipient::{check_log, LogEntry};
use meldnet_recipient as log_repair;
use meldnet_fuzz::{federation, scratch_dir, write_file, MAX_INPUT};
use std::collections::HashSet;

fn main() {
    let fed = federation();
    let dir = scratch_dir();
    fuzz!(|data: &[u8]| {
        if data.len() > MAX_INPUT {
            return;
        }
        let path = write_file(&dir, LOG_FILE, data);
        let len = data.len() as u64;
        if let Ok(scan) = log_repair::check_file(&path, &DELIVERY_LOG) {
            assert_eq!(scan.len, len);
            let mut at = 0;
            for d in &scan.damage {
                assert!(
                    d.start >= at && d.start < d.end && d.end <= len,
                    "damage {d:?}"
                );
                at = d.end;
            }
            if let Some((start, n)) = scan.torn_tail {
                assert!(
                    start >= at && start + n == len,
                    "torn tail {start}+{n} of {len}"
                );
            }
            let _ = scan.to_json().to_string();
        }
        if let Ok(reader) = LogReader::open(&path) {
            let mut end = 0;
            for r in reader {
                if let Ok(record) = r {
                    assert!(record.offset >= end && record.end() <= len);
                    end = record.end();
                    let _ = record.report_id();
                }
            }
        }
        let _ = check_log::<meldnet_recipient::LogError>(
            &path,
            &fed.keyring,
            &HashSet::new(),
            |entry| {
                if let LogEntry::Record(r) = entry {
                    let _ = r.describe();
                }
                Ok(())
            },
        );
    });
}
