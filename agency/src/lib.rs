//! The agency client. See ARCHITECTURE.md.
pub mod config;
pub mod series;
