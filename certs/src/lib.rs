//! The federation's certificate authority as a command-line tool: makes the
//! CA, certificates whose only identity is a SPIFFE URI SAN, Ed25519 signing
//! keys, the keyring, a working configuration for every party, and CRLs.
//!
//! A ledger (`issued.toml`) records every certificate issued, so serials are
//! never reused and revocation is by identity or by file. Names are checked
//! with `meldnet_core`'s own types, so the tool cannot make an identity the
//! hub would refuse to parse.

#![warn(missing_docs)]

pub mod ca;
pub mod error;
pub mod fsutil;
pub mod init;
pub mod issue;
pub mod layout;
pub mod ledger;
pub mod provider;
pub mod revoke;
pub mod spec;
pub mod x509;

pub use error::{CertsError, Result};
pub use init::{init, InitOptions, InitSummary, DEFAULT_DAYS};
pub use issue::{issue, IssueOptions, IssueSummary};
pub use revoke::{refresh_crl, revoke, show, RevokeSummary, RevokeTarget, ShowSummary};

#[cfg(test)]
mod tests;
