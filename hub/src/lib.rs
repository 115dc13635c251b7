//! The hub. See ARCHITECTURE.md.
pub mod config;
