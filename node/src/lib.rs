//! The node. See ARCHITECTURE.md.
pub mod config;
