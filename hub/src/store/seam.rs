//! The seam between the hub's storage rules and the place its state lies.
//!
//! Everything above it (the commit pipeline and the rules of `store`:
//! idempotent receipts, escalate once, the digest's cap, withdrawal) is
//! written once; a backend only keeps and finds what it is given, in the
//! hub's own words: reports, queue entries, audit records, cases,
//! deadlines, series. Keys, prefixes and encodings are the backend's own
//! and never leave it. sled is the embedded backend (`store::sled`); the
//! behavioural suite in `store::suite` is what every backend must pass.

use super::types::{ExactKey, SeriesHashKey, StoreCheck, StoredChange};
use super::StoreError;
use meldnet_core::CaseId;
use meldnet_core::ChainHead;
use meldnet_core::ReportId;
use meldnet_core::SpiffeId;
use meldnet_core::{NotificationId, SeriesId};
use meldnet_list::Tip;
use meldnet_proto::v1 as pb;

/// What one queue entry delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueItem {
    /// A stored report with the decision it was stored with.
    Report(ReportId),
    /// A further decision on a stored report (an escalation, a notice at
    /// another location, a split), stored under its own id.
    Redecision {
        /// The report it is about.
        report: ReportId,
        /// The decision's id.
        decision: CaseId,
    },
    /// A notification for a victim's representative.
    Notification(NotificationId),
}

impl QueueItem {
    /// The id a recipient sees for the entry: the report's, or the
    /// notification's.
    pub fn report_id(&self) -> ReportId {
        match self {
            QueueItem::Report(r) | QueueItem::Redecision { report: r, .. } => *r,
            QueueItem::Notification(n) => ReportId::from_bytes(*n.as_bytes()),
        }
    }
}

/// What a queue entry delivers, read back: a stored report (with its
/// decision) or a signed notification.
#[derive(Debug, Clone)]
pub enum Delivered {
    /// The signed report and decision, as stored.
    Report(pb::StoredReport),
    /// A notification, as signed.
    Notification(pb::SignedNotification),
}

/// One entry of a page of a queue: its position, the id it names, and
/// what it delivers, or why its stored body cannot be read (damage: the
/// entry is held back, the rest flows).
pub type QueuedBody = (u64, ReportId, Result<Delivered, String>);

/// The commit pipeline's counters, stored with every group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// The audit chain's head after the group.
    pub audit_head: ChainHead,
    /// The next queue entry's position (every queue shares one sequence).
    pub next_queue_seq: u64,
    /// The next history event's sequence number.
    pub next_history_seq: u64,
    /// The next deconfliction-keys record's place in the order they were
    /// stored.
    pub next_keys_seq: u64,
}

impl Default for Counters {
    /// A new store's: an empty chain, and the first entry and event are 1.
    fn default() -> Self {
        Counters {
            audit_head: ChainHead::default(),
            next_queue_seq: 1,
            next_history_seq: 1,
            next_keys_seq: 1,
        }
    }
}

/// The parts of the hub's state, for the state digest. Each backend says
/// every record it holds as the part, the key's components in the hub's
/// terms (ids as their 16 bytes, sequence numbers and times as 8 bytes
/// big-endian, identities as UTF-8) and the value (a protobuf encoding or
/// a body's bytes as stored), so that two backends holding the same state
/// give the same digest. The components of each part's key follow its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    /// Report id: the `StoredReport`.
    Report,
    /// Decision id: the `StoredReport` with the further decision.
    Redecision,
    /// Report id, seq: the `HistoryEvent`.
    History,
    /// Recipient, seq: the `QueueItem` (kind 1 report, 2 re-decision, 3
    /// notification, then its ids).
    Queue,
    /// Seq: () — a queue entry held back for a damaged body.
    HeldBack,
    /// Seq: the `AuditRecord`.
    Audit,
    /// Recipient, last queue position, audit seq: () — an audit record
    /// that delivers or acknowledges entries of that queue.
    AuditMark,
    /// (): the counters (audit seq, head hash, queue seq, history seq).
    Counters,
    /// Name: the count (8 bytes).
    Stat,
    /// Version: digest (32) | live count (8) | the `ListChange`.
    ListChange,
    /// (): version | count | digest of the list's tip.
    ListTip,
    /// (): version (8) | the rules' TOML.
    Rules,
    /// Identity: the `Registration`.
    Registration,
    /// Case id: the `CaseRecord`.
    Case,
    /// Report id: the `CaseKeysRecord`.
    CaseKeys,
    /// Kind (1 URL, 2 file), the key (32): the case id (16).
    CaseKey,
    /// Case id, report id: () — a sighting.
    Sighting,
    /// Deadline, case id, location (4): () — an open deadline.
    Deadline,
    /// Series id: the `SeriesRecord`.
    Series,
    /// Series id, kind (1 SHA-256, 2 PDQ), hash: the quality (PDQ).
    SeriesHash,
    /// Series id: the `StoredPreference`.
    Preference,
    /// Series id: the `DigestState`.
    DigestState,
    /// Series id, time, report id: the `SeriesMatch`.
    SeriesMatch,
    /// Case id, series id: 1 if a proceedings notification was made, else 0.
    CaseSeries,
    /// Case id, series id: the `ProceedingsDraft`.
    Draft,
    /// Notification id: the `SignedNotification`.
    Notification,
}

impl Part {
    /// The part's name in the digest.
    pub fn name(self) -> &'static str {
        match self {
            Part::Report => "report",
            Part::Redecision => "redecision",
            Part::History => "history",
            Part::Queue => "queue",
            Part::HeldBack => "held_back",
            Part::Audit => "audit",
            Part::AuditMark => "audit_mark",
            Part::Counters => "counters",
            Part::Stat => "stat",
            Part::ListChange => "list_change",
            Part::ListTip => "list_tip",
            Part::Rules => "rules",
            Part::Registration => "registration",
            Part::Case => "case",
            Part::CaseKeys => "case_keys",
            Part::CaseKey => "case_key",
            Part::Sighting => "sighting",
            Part::Deadline => "deadline",
            Part::Series => "series",
            Part::SeriesHash => "series_hash",
            Part::Preference => "preference",
            Part::DigestState => "digest_state",
            Part::SeriesMatch => "series_match",
            Part::CaseSeries => "case_series",
            Part::Draft => "draft",
            Part::Notification => "notification",
        }
    }
}

/// One record said to the state digest: its part, its key's components,
/// its value, and whether the value is a damaged body (said as it lies).
pub struct Record<'a> {
    /// The part.
    pub part: Part,
    /// The key's components.
    pub key: &'a [&'a [u8]],
    /// The value.
    pub value: &'a [u8],
    /// A damaged body, said as the bytes that are there.
    pub damaged: bool,
}

/// Reads of what is committed. Every method answers from the state as the
/// last applied group left it.
pub trait Reads: Send + Sync {
    /// A stored report.
    fn report(&self, id: &ReportId) -> Result<Option<pb::StoredReport>, StoreError>;
    /// A further decision (escalation, notice, split) by its id.
    fn escalation(&self, id: &CaseId) -> Result<Option<pb::StoredReport>, StoreError>;
    /// What happened to a report, as stored, in order (its deliveries and
    /// acknowledgements are in the audit log: `Store::history` adds them).
    fn stored_history(&self, id: &ReportId) -> Result<Vec<pb::StoredHistory>, StoreError>;
    /// The audit records that deliver or acknowledge entries of
    /// `recipient`'s queue up to a position at or after `seq`: their
    /// sequence numbers, at most `limit`, in order of that position.
    fn audit_marks(
        &self,
        recipient: &SpiffeId,
        seq: u64,
        limit: usize,
    ) -> Result<Vec<u64>, StoreError>;
    /// One audit record's exact bytes.
    fn audit_record(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError>;
    /// Entries of `recipient`'s queue after `after`, in order: at most
    /// `limit` and, past the first, at most `max_bytes` of bodies; and
    /// whether more follow.
    fn queue_page(
        &self,
        recipient: &SpiffeId,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<QueuedBody>, bool), StoreError>;
    /// Entries of `recipient`'s queue after `after`, in order, at most
    /// `limit`: their positions and what they deliver, without reading
    /// their bodies.
    fn queue_items_after(
        &self,
        recipient: &SpiffeId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, QueueItem)>, StoreError>;
    /// Every entry of every queue from position `from` on (inclusive):
    /// its position and what it delivers, queue by queue, until `f`
    /// answers false. What a retention pass keeps (nothing still queued is
    /// erased).
    fn each_queue_entry(
        &self,
        from: u64,
        f: &mut dyn FnMut(u64, QueueItem) -> bool,
    ) -> Result<(), StoreError>;
    /// Stored report ids after `after` (exclusive; none: from the first),
    /// in their order (UUIDv7: when their nodes made them), at most
    /// `limit`: where a retention pass walks.
    fn report_ids_after(
        &self,
        after: Option<&ReportId>,
        limit: usize,
    ) -> Result<Vec<ReportId>, StoreError>;
    /// The statistics counters.
    fn counts(&self) -> Result<Vec<(String, u64)>, StoreError>;
    /// The pipeline's counters as last applied (defaults for a new store).
    fn counters(&self) -> Result<Counters, StoreError>;
    /// The audit records' exact bytes, in order.
    fn audit_records(&self) -> Result<Vec<Vec<u8>>, StoreError>;
    /// The audit chain's head as stored, if any record was ever stored.
    fn audit_head(&self) -> Result<Option<ChainHead>, StoreError>;
    /// The list's changes from `from` (inclusive), at most `limit`.
    fn list_changes(&self, from: u64, limit: usize) -> Result<Vec<StoredChange>, StoreError>;
    /// The list's tip as stored.
    fn list_tip(&self) -> Result<Option<Tip>, StoreError>;
    /// The routing rules operators set (version, TOML), if any.
    fn rules(&self) -> Result<Option<(u64, String)>, StoreError>;
    /// The registrations operators stored.
    fn registrations(&self) -> Result<Vec<pb::Registration>, StoreError>;
    /// A case.
    fn case(&self, id: &CaseId) -> Result<Option<pb::CaseRecord>, StoreError>;
    /// Every case, in the order they were opened.
    fn cases(&self) -> Result<Vec<pb::CaseRecord>, StoreError>;
    /// The deconfliction keys a report brought to its case.
    fn case_keys_of(&self, report: &ReportId) -> Result<Option<pb::CaseKeysRecord>, StoreError>;
    /// Says every case to `f`, in the order they were opened, one at a
    /// time (what the index is rebuilt from: never all of them at once).
    fn each_case(
        &self,
        f: &mut dyn FnMut(pb::CaseRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
    /// Says every report's deconfliction-keys record to `f`, one at a time.
    fn each_case_keys(
        &self,
        f: &mut dyn FnMut(pb::CaseKeysRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
    /// Says the deconfliction-keys records stored after `after` (their
    /// `seq`), in the order they were stored, to `f` until it answers false.
    fn case_keys_since(
        &self,
        after: u64,
        f: &mut dyn FnMut(pb::CaseKeysRecord) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError>;
    /// The case an exact deconfliction key (a URL's, a file's) leads to.
    fn case_of_key(&self, key: &ExactKey) -> Result<Option<CaseId>, StoreError>;
    /// Whether `report` is a sighting of `case`.
    fn is_sighting(&self, case: &CaseId, report: &ReportId) -> Result<bool, StoreError>;
    /// Sightings of a case, oldest first, at most `limit`.
    fn sightings(&self, case: &CaseId, limit: usize) -> Result<Vec<ReportId>, StoreError>;
    /// Open deadlines passed at `now_ms`, oldest first, at most `limit`.
    fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<(i64, CaseId, u32)>, StoreError>;
    /// The next open deadline.
    fn next_deadline(&self) -> Result<Option<i64>, StoreError>;
    /// A series.
    fn series_record(&self, id: &SeriesId) -> Result<Option<pb::SeriesRecord>, StoreError>;
    /// Every series.
    fn series_records(&self) -> Result<Vec<pb::SeriesRecord>, StoreError>;
    /// Every hash of every series.
    fn series_hashes(&self) -> Result<Vec<SeriesHashKey>, StoreError>;
    /// The preference in force for a series and when it was set.
    fn preference(
        &self,
        id: &SeriesId,
    ) -> Result<Option<(meldnet_core::Preference, i64)>, StoreError>;
    /// Every series with a preference.
    #[allow(clippy::type_complexity)]
    fn preferences(&self) -> Result<Vec<(SeriesId, meldnet_core::Preference, i64)>, StoreError>;
    /// Where a series' digest stands.
    fn digest_state(&self, id: &SeriesId) -> Result<Option<pb::DigestState>, StoreError>;
    /// The reports of a series recorded in `[from, to)`.
    fn series_matches(
        &self,
        id: &SeriesId,
        from: i64,
        to: i64,
    ) -> Result<Vec<pb::SeriesMatch>, StoreError>;
    /// Proceedings notifications waiting to be signed.
    fn proceedings_drafts(&self) -> Result<Vec<(CaseId, pb::ProceedingsDraft)>, StoreError>;
    /// Everything kept that belongs to one series, each record as the
    /// backend keeps it, with every field decoded (`meldnet-hub store series`).
    fn series_footprint(&self, id: &SeriesId) -> Result<Vec<serde_json::Value>, StoreError>;
    /// Reads every stored body back and checks it.
    fn check(&self) -> Result<StoreCheck, StoreError>;
    /// Says every record to `f`, for the state digest (any order).
    fn visit(
        &self,
        f: &mut dyn FnMut(Record<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
}

/// A backend: its reads, and groups of writes applied atomically.
pub trait Backend: Reads {
    /// Its reads, as a trait object.
    fn reads(&self) -> &(dyn Reads + 'static);
    /// Starts a group of writes. Reads through the group see its writes.
    fn begin(&self) -> Box<dyn Group + '_>;
    /// Makes every applied group durable. A failure leaves the backend
    /// untrustworthy: the pipeline stops the hub.
    fn make_durable(&self) -> Result<(), StoreError>;
    /// Whether new reports may be stored now (room on the disk).
    fn admit_reports(&self) -> Result<(), StoreError>;
}

/// One group of writes: what a group commit stages, in the hub's terms.
/// Reads see the committed state with the group's own writes over it;
/// nothing is visible to [`Reads`] before [`Group::apply`].
pub trait Group {
    /// A report, as stored or staged.
    fn report(&self, id: &ReportId) -> Result<Option<pb::StoredReport>, StoreError>;
    /// Stores a report.
    fn put_report(&mut self, id: &ReportId, stored: &pb::StoredReport);
    /// Stores a further decision under its id.
    fn put_escalation(&mut self, id: &CaseId, stored: &pb::StoredReport);
    /// Stores a history event of a report.
    fn put_history(&mut self, report: &ReportId, seq: u64, ev: &pb::StoredHistory);
    /// Marks audit record `audit_seq` as delivering or acknowledging
    /// entries of `recipient`'s queue up to position `last`.
    fn put_audit_mark(&mut self, recipient: &SpiffeId, last: u64, audit_seq: u64);
    /// Adds a queue entry.
    fn push_queue(&mut self, recipient: &SpiffeId, seq: u64, item: &QueueItem);
    /// Takes a queue entry out and says what it was (none: not queued).
    fn take_queue(
        &mut self,
        recipient: &SpiffeId,
        seq: u64,
    ) -> Result<Option<QueueItem>, StoreError>;
    /// Every entry of a queue, in order.
    fn queue_items(&self, recipient: &SpiffeId) -> Result<Vec<(u64, QueueItem)>, StoreError>;
    /// Whether a queue entry was recorded as held back.
    fn is_held_back(&self, seq: u64) -> Result<bool, StoreError>;
    /// Records that a queue entry is held back.
    fn mark_held_back(&mut self, seq: u64);
    /// Stores an audit record (its exact bytes are its encoding).
    fn put_audit(&mut self, seq: u64, rec: &pb::AuditRecord);
    /// Stores the pipeline's counters.
    fn put_counters(&mut self, c: &Counters);
    /// Stores a statistics counter.
    fn put_stat(&mut self, name: &str, n: u64);
    /// Stores the routing rules in force.
    fn put_rules(&mut self, version: u64, text: &str);
    /// Stores a registration.
    fn put_registration(&mut self, r: &pb::Registration);
    /// Stores a change of the list.
    fn put_list_change(&mut self, c: &StoredChange);
    /// Stores the list's tip.
    fn put_list_tip(&mut self, tip: &Tip);
    /// A case, as stored or staged.
    fn case(&self, id: &CaseId) -> Result<Option<pb::CaseRecord>, StoreError>;
    /// Stores a case.
    fn put_case(&mut self, id: &CaseId, rec: &pb::CaseRecord);
    /// Opens a deadline.
    fn add_deadline(&mut self, at_ms: i64, case: &CaseId, location: u32);
    /// Closes a deadline.
    fn remove_deadline(&mut self, at_ms: i64, case: &CaseId, location: u32);
    /// Whether a report is a sighting of a case.
    fn is_sighting(&self, case: &CaseId, report: &ReportId) -> Result<bool, StoreError>;
    /// Records a sighting.
    fn add_sighting(&mut self, case: &CaseId, report: &ReportId);
    /// Takes a sighting out (a split).
    fn remove_sighting(&mut self, case: &CaseId, report: &ReportId);
    /// Stores the deconfliction keys a report brought (`rec.seq` its place
    /// in the order such records are stored).
    fn put_case_keys(&mut self, report: &ReportId, rec: &pb::CaseKeysRecord);
    /// Lets an exact deconfliction key lead to a case.
    fn put_case_key(&mut self, key: &ExactKey, case: &CaseId);
    /// A series.
    fn series(&self, id: &SeriesId) -> Result<Option<pb::SeriesRecord>, StoreError>;
    /// Stores a series.
    fn put_series(&mut self, id: &SeriesId, rec: &pb::SeriesRecord);
    /// Whether a series holds a hash.
    fn has_series_hash(&self, h: &SeriesHashKey) -> Result<bool, StoreError>;
    /// Adds a hash to a series.
    fn put_series_hash(&mut self, h: &SeriesHashKey);
    /// How many hashes a series holds (SHA-256, PDQ).
    fn series_hash_counts(&self, id: &SeriesId) -> Result<(u64, u64), StoreError>;
    /// The preference in force and when it was set.
    fn preference(&self, id: &SeriesId) -> Result<Option<pb::StoredPreference>, StoreError>;
    /// Stores a preference.
    fn put_preference(&mut self, id: &SeriesId, p: &pb::StoredPreference);
    /// Drops a preference.
    fn remove_preference(&mut self, id: &SeriesId);
    /// Where a series' digest stands.
    fn digest_state(&self, id: &SeriesId) -> Result<Option<pb::DigestState>, StoreError>;
    /// Stores where a series' digest stands.
    fn put_digest_state(&mut self, id: &SeriesId, s: &pb::DigestState);
    /// Drops a series' digest state.
    fn remove_digest_state(&mut self, id: &SeriesId);
    /// Records a report of a series.
    fn put_series_match(
        &mut self,
        id: &SeriesId,
        at_ms: i64,
        report: &ReportId,
        m: &pb::SeriesMatch,
    );
    /// Whether a case holds a series' material, and whether a proceedings
    /// notification was made for it (none: no link).
    fn case_series(&self, case: &CaseId, series: &SeriesId) -> Result<Option<bool>, StoreError>;
    /// The series a case holds material of, each with that flag.
    fn series_of_case(&self, case: &CaseId) -> Result<Vec<(SeriesId, bool)>, StoreError>;
    /// Links a case to a series.
    fn put_case_series(&mut self, case: &CaseId, series: &SeriesId, notified: bool);
    /// Whether a proceedings notification waits to be signed.
    fn has_draft(&self, case: &CaseId, series: &SeriesId) -> Result<bool, StoreError>;
    /// Stores a proceedings draft.
    fn put_draft(&mut self, case: &CaseId, series: &SeriesId, d: &pb::ProceedingsDraft);
    /// Drops a proceedings draft.
    fn remove_draft(&mut self, case: &CaseId, series: &SeriesId);
    /// The cases with a draft for a series.
    fn drafts_of(&self, series: &SeriesId) -> Result<Vec<CaseId>, StoreError>;
    /// A stored notification.
    fn notification(
        &self,
        id: &NotificationId,
    ) -> Result<Option<pb::SignedNotification>, StoreError>;
    /// Stores a notification.
    fn put_notification(&mut self, id: &NotificationId, n: &pb::SignedNotification);
    /// Erases a report's signed bytes, its decision and its history
    /// (retention: `store::retention` decided that nothing needs them).
    /// Its case's keys and its place among the case's sightings stay.
    fn erase_report(&mut self, id: &ReportId) -> Result<(), StoreError>;
    /// Erases a series' matches recorded before `before_ms`; returns how
    /// many.
    fn erase_series_matches(&mut self, id: &SeriesId, before_ms: i64) -> Result<u64, StoreError>;
    /// Applies the group atomically: all of it, or (with an error) none.
    fn apply(self: Box<Self>) -> Result<(), StoreError>;
}
