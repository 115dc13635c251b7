//! The federation's shared model. Everything that more than one role needs to
//! agree on lives here: the validated domain types (parse at the edge, never
//! re-validate inside), identities from certificates, Ed25519 signing over
//! exact bytes, the audit chain, TLS set-up, and the recipient side of delivery.
//!
//! This crate never stores reports and never routes: that is the hub's job.

pub mod accept;
pub mod admission;
pub mod append_file;
pub mod audit;
pub mod case;
pub mod cli;
pub mod client;
pub mod config;
pub mod country;
pub mod delivery_log;
pub mod error;
pub mod hash;
pub mod hash_import;
pub mod hash_list;
pub mod identity;
pub mod inbox;
pub mod keyring;
pub mod limits;
pub mod list_import;
pub mod log_repair;
pub mod merkle;
pub mod pdq;
pub mod pdq_index;
pub mod provenance;
pub mod report;
pub mod series;
pub mod signing;
pub mod time;
pub mod tls;
pub mod url_norm;

pub use error::{Refusal, RefusalKind};
