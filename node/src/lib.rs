//! A national hotline's node: hashes the files the hotline holds (the files
//! never leave), builds and signs reports, keeps them in a durable outbox
//! until the hub's receipt comes back, and receives the reports routed to
//! its country. See ARCHITECTURE.md for the map.

pub mod config;
pub mod hash_check;
pub mod hashing;
pub mod list;
pub mod notices;
pub mod outbox;
pub mod picture;
pub mod report;
pub mod serve;
pub mod submit;
