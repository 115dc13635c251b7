//! The federation's shared model: the validated domain types every role
//! agrees on (parse at the edge, never re-validate inside: reports, cases,
//! series, countries, hashes), identities from certificates, Ed25519
//! signing over exact bytes and the provenance of decisions, the keyring,
//! the audit chain.
//!
//! Its neighbours by concept: `meldnet-pdq` (PDQ and its index),
//! `meldnet-list` (the known-hash list), `meldnet-net` (TLS and
//! connections), `meldnet-recipient` (the inbox and delivery log),
//! `meldnet-cli` (the binaries' front end).
//!
//! This crate never stores reports, never routes, never does I/O but
//! reading configuration and the append-only files' shared helpers.

pub mod append_file;
pub mod audit;
pub mod case;
pub mod config;
pub mod country;
pub mod error;
pub mod hash;
pub mod identity;
pub mod keyring;
pub mod limits;
pub mod merkle;
pub mod provenance;
pub mod report;
pub mod series;
pub mod signing;
pub mod time;
pub mod url_norm;

pub use error::{Refusal, RefusalKind};
