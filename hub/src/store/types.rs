//! What the hub hands its store and what the store answers, in the hub's
//! own words; no backend's layout shows here.

pub use crate::cases::{CaseKeys, ExactKey};
use meldnet_core::Refusal;
use meldnet_core::ReportId;
use meldnet_core::SpiffeId;
use meldnet_core::{CaseId, CaseStep};
use meldnet_core::{NotificationId, SeriesId};
use meldnet_core::{PdqHash, Sha256};
use meldnet_list::Tip;
use meldnet_proto::v1 as pb;

/// A verified, routed report ready to be stored.
#[derive(Debug, Clone)]
pub struct NewReport {
    /// Its id.
    pub id: ReportId,
    /// What is stored: the signed report and the signed decision, as bytes.
    pub stored: pb::StoredReport,
    /// One queue entry each.
    pub recipients: Vec<SpiffeId>,
    /// Who submitted it.
    pub origin: SpiffeId,
    /// What it did to the cases, in words: its history's "decided" line.
    pub summary: String,
    /// SHA-256 of its signed bytes: its audit line binds them.
    pub digest: Sha256,
    /// The case index's stamp of its placement (0: not placed): the store
    /// says back how far it applied them.
    pub placement: u64,
    /// The case it opens or joins (none without an EU link).
    pub case: Option<CaseWrite>,
    /// Statistics counters it adds one to.
    pub counts: Vec<String>,
    /// Series whose material it holds (recorded with its case).
    pub series: Vec<SeriesId>,
    /// Decisions its placing made on other stored reports (a notice at
    /// another location of the case it made illegal everywhere).
    pub extra: Vec<ExtraDecision>,
}

/// A further decision on a stored report, stored and queued like an
/// escalation: the report with the new signed decision.
#[derive(Debug, Clone)]
pub struct ExtraDecision {
    /// Its id.
    pub id: CaseId,
    /// The report it is about.
    pub report_id: ReportId,
    /// The report with the new decision.
    pub stored: pb::StoredReport,
    /// Queue entries.
    pub recipients: Vec<SpiffeId>,
    /// One line for the report's history.
    pub line: String,
}

/// What a report does to the cases.
#[derive(Debug, Clone)]
pub enum CaseWrite {
    /// Opens this case.
    Open(Box<pb::CaseRecord>, CaseKeys),
    /// Joins a case as a sighting.
    Sighting(Box<SightingWrite>),
}

/// A report joining a case it matched.
#[derive(Debug, Clone)]
pub struct SightingWrite {
    /// The case.
    pub case_id: CaseId,
    /// The report that opened it (its history tells of the sighting).
    pub first_report: ReportId,
    /// What matched, in words.
    pub matched_by: String,
    /// Keys of the report the case did not hold yet.
    pub keys: CaseKeys,
    /// The case's new assessment, when this report made it graver.
    pub assessment: Option<pb::Assessment>,
    /// The location the report brought, when its URL was new to the case
    /// (with its notice, if one is due).
    pub new_location: Option<Box<pb::LocationRecord>>,
    /// Notices asked now at locations the case held already: the report's
    /// own, and the others when it made the case illegal everywhere (their
    /// decisions in `NewReport::extra`).
    pub notices: Vec<(u32, crate::cases::Notice)>,
}

/// A case step to store, checked by the caller against the case.
#[derive(Debug, Clone)]
pub struct StepWrite {
    /// The validated step.
    pub step: CaseStep,
    /// As signed and sent.
    pub signed: pb::SignedCaseStep,
    /// The hub's time of receipt: deadlines are judged on it.
    pub received_at_ms: i64,
    /// The node that sent it.
    pub actor: SpiffeId,
    /// A new deadline if the step is a re-appearance.
    pub reappear_deadline_ms: i64,
}

/// What storing a step did.
#[derive(Debug, Clone)]
pub enum StepOutcome {
    /// Stored; the case after it.
    Stored(Box<pb::CaseRecord>),
    /// The same step (id and bytes) was stored before.
    Duplicate(Box<pb::CaseRecord>),
    /// The same step id with other bytes was stored before.
    Conflict,
    /// No such case.
    NoCase,
}

/// An escalation to store: the decision made and where it goes.
#[derive(Debug, Clone)]
pub struct Escalation {
    /// Its id.
    pub id: CaseId,
    /// The case.
    pub case_id: CaseId,
    /// The location whose deadline passed.
    pub location: u32,
    /// The deadline that passed.
    pub deadline_ms: i64,
    /// The report that brought the location, with the signed escalation
    /// decision.
    pub stored: pb::StoredReport,
    /// That report's id.
    pub report_id: ReportId,
    /// Queue entries.
    pub recipients: Vec<SpiffeId>,
    /// The hub (actor of the audit record).
    pub actor: SpiffeId,
}

/// A report an operator splits out of the case it was wrongly merged
/// into, with the decision its recipients receive.
#[derive(Debug, Clone)]
pub struct SplitWrite {
    /// The report.
    pub report_id: ReportId,
    /// The case it leaves.
    pub from: CaseId,
    /// The location of `from` it brought (moved out with it).
    pub from_location: u32,
    /// Its own case, opened now.
    pub record: pb::CaseRecord,
    /// The deconfliction keys it brought, which lead to its own case now.
    pub keys: CaseKeys,
    /// Id of the new decision (stored like an escalation, queued as one).
    pub decision_id: CaseId,
    /// The report with the new signed decision.
    pub stored: pb::StoredReport,
    /// Queue entries.
    pub recipients: Vec<SpiffeId>,
    /// The operator.
    pub actor: SpiffeId,
    /// The operator's words.
    pub reason: String,
}

/// What happened to a submitted report.
#[derive(Debug, Clone)]
pub enum Committed {
    /// Stored now (and flushed), as given.
    New,
    /// The same id with the same bytes was stored before: the stored record.
    Duplicate(pb::StoredReport),
    /// The same id with other bytes was stored before: nothing changed.
    Conflict,
}

/// Changes of the known-hash list to store at once, with their audit record.
#[derive(Debug, Clone)]
pub struct ListWrite {
    /// Each change with the running digest and live count after it.
    pub changes: Vec<StoredChange>,
    /// Who made them.
    pub actor: SpiffeId,
    /// One line per change, for the audit record.
    pub lines: Vec<String>,
}

/// A change of the list as stored: its exact bytes and the tip it leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChange {
    /// Version, live count and running digest after this change.
    pub tip: Tip,
    /// The encoded `ListChange`.
    pub bytes: Vec<u8>,
}

/// A hash of a series as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeriesHashKey {
    /// An exact hash.
    Sha256(SeriesId, Sha256),
    /// A PDQ hash and its quality.
    Pdq(SeriesId, PdqHash, u8),
}

/// One entry of a recipient's queue, with the stored report it points to.
#[derive(Debug, Clone)]
pub struct QueueEntry {
    /// Position in the queue; what the recipient acknowledges.
    pub seq: u64,
    /// The report.
    pub report_id: ReportId,
    /// The signed report and signed decision, as stored (empty for a
    /// notification).
    pub stored: pb::StoredReport,
    /// A notification for a representative, as signed.
    pub notification: Option<pb::SignedNotification>,
}

/// Counts and a digest over everything stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateDigest {
    /// SHA-256 over the sorted hashes of every record, each record in the
    /// hub's terms (see `seam::Part`), not in any backend's layout.
    pub digest: [u8; 32],
    /// All records.
    pub entries: u64,
    /// Stored reports.
    pub reports: u64,
    /// Queue entries not yet acknowledged.
    pub queued: u64,
    /// Audit records.
    pub audit_records: u64,
    /// Stored bodies that fail their checksum (digested as they are).
    pub damaged: u64,
}

/// What `Store::check` found.
#[derive(Debug, Clone, Default)]
pub struct StoreCheck {
    /// Bodies read back.
    pub bodies: u64,
    /// Those that are damaged.
    pub damaged: Vec<Damage>,
}

/// One damaged body.
#[derive(Debug, Clone)]
pub struct Damage {
    /// What it is: a report, an audit record, ...
    pub kind: &'static str,
    /// Whose: a report id, or the key in hex.
    pub key: String,
    /// Where its record starts in the blob file.
    pub offset: u64,
    /// The body's length the pointer gives.
    pub len: u32,
    /// What is wrong.
    pub reason: String,
}

/// How much lower the request threads' scheduling priority is than the
/// The body a sled pointer leads to.
/// What an operation answers when it may be refused: the answer, or the
/// refusal (and then nothing changed).
pub type Refused<T> = Result<T, Refusal>;

/// A signed notification and what must still hold for it to go.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Its id.
    pub id: NotificationId,
    /// The series.
    pub series: SeriesId,
    /// Whom it is for.
    pub representative: SpiffeId,
    /// As signed.
    pub signed: pb::SignedNotification,
    /// Why it is made.
    pub why: Why,
    /// The hub (actor of the audit record).
    pub actor: SpiffeId,
}

/// What made a notification.
#[derive(Debug, Clone)]
pub enum Why {
    /// A case in proceedings: the draft it was made from.
    Proceedings {
        /// The case.
        case: CaseId,
    },
    /// A digest for `[from, to)`, the `number`th of its period.
    Digest {
        /// Counting started here (must still).
        from: i64,
        /// The boundary it was made at.
        to: i64,
        /// The period it counts against.
        period_start: i64,
        /// Its number in the period.
        number: u32,
        /// The preference it was made under (set at).
        set_at_ms: i64,
    },
}
