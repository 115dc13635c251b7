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
mod audit;
mod case;
pub mod config;
mod country;
mod error;
mod hash;
mod identity;
mod keyring;
pub mod limits;
mod merkle;
mod notice;
mod provenance;
mod report;
mod series;
mod signing;
pub mod time;
mod url_norm;

pub use audit::{link_hash, verify_chain, AuditError, ChainHead, GENESIS};
pub use case::{
    CaseId, CaseStep, HostingProvider, StepId, StepKind, MAX_PROVIDER_NAME, MAX_STEP_REASON,
};
pub use country::{CountryCode, CountryError, EU_MEMBER_STATES};
pub use error::{with_causes, Refusal, RefusalKind};
pub use hash::{parse_hex, HashError, Md5, PdqHash, Sha1, Sha256};
pub use identity::{dns_names, IdentityError, Jurisdiction, Role, SpiffeId, TrustDomain};
pub use keyring::{KeyEntry, Keyring, KeyringError, KeyringFile};
pub use merkle::{leaf_hash, root_from_path, Tree, MAX_PATH};
pub use notice::{
    verify_answer_record, verify_notice, AnswerId, AnswerKind, AnswerRecord, LegalGround, Notice,
    NoticeAction, NoticeAnswer, NoticeId, NoticeItem, NoticeProvider, RefusalReason,
    MAX_ANSWER_DETAIL, MAX_NOTICE_ITEMS,
};
pub use provenance::{
    lookup_key, sign_decision, sign_decisions, sign_stats_export, sign_tree, tree_head,
    verify_decision, verify_decision_cached, verify_receipt, verify_report_signatures,
    verify_routed, verify_routed_many, verify_stats_export, Envelope, HeadCache, Verified,
    VerifiedDecision,
};
pub use report::{
    country, is_invisible, node_said_word, parse_pdq, AgeGroup, Classification, EuLinkFacts, Item,
    Known, ListCheck, MatchKind, MediaType, Report, ReportId, ReportUrl, EARLIEST_MS,
    MAX_CLOCK_AHEAD_MS, URL_SCHEMES,
};
pub use series::{
    describe_notification, representative, sign_notification, verify_notification, DigestCalendar,
    NotificationId, Period, Preference, SeriesHashes, SeriesId, VerifiedNotification,
    MAX_SERIES_HASHES,
};
pub use signing::{verify_batch, BatchItem, Context, KeyId, PublicKey, SigningError, SigningKey};
pub use url_norm::{normalize, NormalUrl};
