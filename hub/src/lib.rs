//! The EU hub: receives signed reports from nodes, verifies and routes them,
//! stores the signed report, the signed decision and the recipients' queue
//! entries before it acknowledges, and delivers each queue to its recipient.
//! It never holds imagery: no message it accepts can carry media bytes.
//! See ARCHITECTURE.md for the map.

pub mod admin;
pub mod auth;
pub mod cases;
pub mod config;
pub mod delivery;
pub mod hash_list;
pub mod ingest;
pub mod registry;
pub mod retention;
pub mod routing;
pub mod rules;
pub mod server;
pub mod store;
pub mod submission;
pub mod takedown;
pub mod victims;
