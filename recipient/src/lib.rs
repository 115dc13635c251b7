//! The recipient's side of delivery, shared by nodes and agencies: the
//! inbox loop (verify a batch, append what is new to the delivery log and
//! sync, then acknowledge; refuse what fails, with reasons), the
//! append-only delivery log (damage reported with its offset, never cut
//! away), reading back, export, and salvage of a damaged log.
//!
//! Never: acknowledge before the log is synced; interpret stored bytes
//! other than by verifying them.

mod delivery_log;
mod inbox;
mod log_repair;

pub use delivery_log::{
    is_delivery_log, log_path, Damage, DamagedTag, DeliveryLog, Format, LogError, LogReader,
    LogRecord, RecordFile, DELIVERY_LOG, LOG_FILE, MAGIC,
};
pub use inbox::{
    check_log, describe, export, load_stored, receive, verify_any, verify_stored, Checked,
    CheckedRecord, InboxError, InboxOptions, InboxSummary, LogEntry, Stored, StoredFileError,
    Verification,
};
pub use log_repair::{check as check_file, lost_tags, salvage, Keep, Salvaged, Scan};
