//! The federation's known-hash list, its shared rules on every side:
//! entries (validated; baseline or national only), changes (add or
//! tombstone, encoded once) with a running digest, the signed head, the
//! checks a batch or a snapshot must pass before it is applied, the set
//! ingest and nodes check items against, and the imports of the lists
//! hotlines and police hold (CSV and Project VIC VICS).
//!
//! Never stores anything: the hub's store and the node's list file do.

mod file;
mod import;
mod list;

pub use file::{
    import_file, import_via, to_list_entry, ImportFailed, ImportSummary, ListFormat, Progress,
};
pub use import::{
    csv_rows, vics_default_categories, vics_rows, CsvMapping, ImportError, ImportedEntry, RowError,
};
pub use list::{
    chain, check_batch, check_snapshot, describe_head, Change, ChangeKind, EntrySeries, Head,
    KnownSet, ListEntry, LiveView, Query, SnapshotDigest, SyncError, Tip, EMPTY_DIGEST,
    MAX_ADD_BATCH, MAX_CHECK_BATCH,
};
