//! The hub's embedded record store: what grows with every report (report
//! bodies, decisions, history, queue entries, cases, deadlines, the known-hash
//! list) kept in one append-only, checksummed log, with sorted indexes over
//! it whose newest changes live in memory and the rest in runs on disk,
//! memory-mapped. Memory and start-up stay bounded however much is held:
//! a checkpoint writes the in-memory changes as runs every so often, and a
//! start replays only the log after the last checkpoint.
//!
//! It knows nothing of reports: an index is an id, a key width and a value
//! width; a value is either given or the place of a body in the log. The
//! hub's store (`meldnet-hub`, `store::sled`) lays its records out here and
//! keeps its small state, and the log's committed end, in sled.
//!
//! - `record`: one record's bytes, with a checked header and payload.
//! - `dict`: bodies compressed one by one with a dictionary trained on the
//!   index's own first bodies.
//! - `log`: the append-only file; reads by place; walks with damage named.
//! - `run`: sorted, checked, memory-mapped runs with a Bloom filter.
//! - `index`: an index over memory tables and runs.
//! - `manifest`: which runs make each index, up to where in the log.
//! - `ledger`: all of it together, with checkpoints and merges.

mod dict;
mod index;
mod ledger;
mod log;
mod manifest;
mod record;
mod run;

pub use index::{Index, Spec, Table};
pub use ledger::{set_aside, Batch, Damage, Ledger, LedgerError, Options};
pub use log::{LogError, Ptr, Walked, LOG_FILE};
pub use manifest::{Manifest, ManifestError, RunName, MANIFEST};
pub use record::{Header, Op};
pub use run::{hash64, RunError};
