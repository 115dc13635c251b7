//! The hub's storage, behind this one type so that a replicated store can
//! replace the embedded one later. sled is the embedded default.
//!
//! Layout: one sled tree, so that one `apply_batch` is atomic across
//! everything a commit touches:
//! - `r` + report id (16 bytes)                  -> pointer (`BlobRef`) to the `StoredReport`
//!   (signed bytes as received) in the blob file (`blobs`)
//! - `q` + recipient SPIFFE id + 0x00 + seq (8 BE) -> report id: a queue entry
//! - `a` + seq (8 BE)                             -> pointer to the `AuditRecord` of the hash chain
//! - `l` + version (8 BE)                         -> a change of the known-hash list: running
//!   digest after it (32) | live count after it (8 BE) | the encoded `ListChange`
//! - `c` + case id (16)                          -> `CaseRecord` (inline)
//! - `u` + SHA-256 of the normalised URL (32)     -> case id: deconfliction by location
//! - `f` + SHA-256 of an item (32)                -> case id: deconfliction by file
//! - `p` + case id + PDQ (32)                     -> quality (1): the case's PDQ hashes, loaded at start
//! - `x` + case id + report id                    -> (): a sighting
//! - `d` + deadline (8 BE) + case id              -> (): open takedown deadlines, in time order
//! - `e` + escalation id (16)                     -> pointer to the escalation's `StoredReport` (the
//!   case's first report with the escalation decision)
//! - `h` + report id + seq (8 BE)                 -> `HistoryEvent`: what happened to the report
//! - `s` + name                                   -> a statistics counter (8 BE)
//! - `b` + queue seq (8 BE)                       -> (): a queue entry held back for a damaged
//!   body, recorded once
//! - `g` + SPIFFE id                              -> `Registration` an operator stored
//! - `m` + name                                   -> counters (audit head, next queue seq, blob end,
//!   list tip, history seq) and the routing rules in force
//!
//! - `v`, `k`, `w`, `y`, `i`, `n`, `t`, `o`: series, their hashes,
//!   preferences, digests, matches and notifications (see `store::series`)
//!
//! A queue entry's value is the report id, or the report id and an
//! escalation id (32 bytes): the delivery is then the escalation; or a
//! notification id and `n` (17 bytes): the delivery is that notification.
//!
//! Durability: all writes go through one writer thread. It takes every
//! pending operation (group commit), writes the group's report bodies to the
//! blob file and syncs it, and applies everything else as one atomic sled
//! batch (with the blob file's new end). The flusher thread then calls
//! `flush()` (fsync) and only then answers the callers, which only then
//! answer their clients; meanwhile the writer goes on with the next group.
//! Nothing is acknowledged before it is on disk, and nothing in sled points
//! to a body that is not.

use crate::blobs::{BlobError, BlobFile, BlobRef};
use meldnet_core::audit::{self, ChainHead};
use meldnet_core::case::{CaseId, CaseStep, StepKind};
use meldnet_core::hash::{PdqHash, Sha256};
use meldnet_core::hash_list::Tip;
use meldnet_core::identity::SpiffeId;
use meldnet_core::report::ReportId;
use meldnet_core::time::Clock;
use meldnet_proto::v1 as pb;
use prost::Message;
use sha2::Digest;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use tokio::sync::{oneshot, watch};

mod series;
use series::{
    decode_preference, CASE_SERIES, DIGEST, DRAFT, MATCH, NOTIFICATION, PREFERENCE, SERIES,
    SERIES_HASH,
};
pub use series::{sent_in, Outgoing, SeriesOp, SeriesOutcome, Why};

const REPORT: u8 = b'r';
const QUEUE: u8 = b'q';
const AUDIT: u8 = b'a';
const LIST: u8 = b'l';
const META_LIST_TIP: &[u8] = b"mlist_tip";
const META_AUDIT_HEAD: &[u8] = b"maudit_head";
const META_QUEUE_SEQ: &[u8] = b"mqueue_seq";
const META_BLOB_END: &[u8] = b"mblob_end";
const META_HIST_SEQ: &[u8] = b"mhist_seq";
/// The routing rules in force: version (8 BE) then the TOML text.
pub const META_RULES: &[u8] = b"mrules";
const CASE: u8 = b'c';
/// A report's deconfliction keys (`CaseKeysRecord`), by report id.
const CASE_KEYS: u8 = b'j';
const SIGHTING: u8 = b'x';
const DEADLINE: u8 = b'd';
const ESCALATION: u8 = b'e';
const HISTORY: u8 = b'h';
const STAT: u8 = b's';
/// A queue entry whose body was found damaged and recorded (seq, 8 BE).
const HELD_BACK: u8 = b'b';
/// Most operations folded into one commit.
const MAX_GROUP: usize = 64;

/// Storage failures. A failing disk or a stopping writer is `UNAVAILABLE`
/// (the client may retry, and retrying is safe because every write is
/// idempotent); damaged stored bytes are `DATA_LOSS`, which no retry mends.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// sled failed.
    #[error("store: {0}")]
    Sled(String),
    /// Stored bytes do not decode: the store is damaged.
    #[error("store: corrupt record {0}")]
    Corrupt(String),
    /// The writer thread is gone (shutting down).
    #[error("store: writer stopped")]
    WriterGone,
    /// The file system refused a write or a sync: nothing of it counts,
    /// and trying again may succeed.
    #[error("store: {0}")]
    Io(String),
    /// The hub's disk is full, or has less free than `[store] min_free_mib`
    /// keeps back: new reports are refused until there is room again;
    /// acknowledgements and operators' changes still go through.
    #[error("store: {0}")]
    Full(String),
}

/// Whether an I/O error says the disk (or the quota) is full.
fn is_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// The one mapping of a storage failure to gRPC.
impl From<StoreError> for tonic::Status {
    fn from(e: StoreError) -> tonic::Status {
        match e {
            StoreError::Corrupt(_) => tonic::Status::data_loss(format!(
                "{e}; nothing was changed; the hub's operators must look (meldnet-hub store check)"
            )),
            StoreError::Sled(_) | StoreError::WriterGone | StoreError::Io(_) => {
                tonic::Status::unavailable(format!(
                    "{e}; nothing was acknowledged, retrying is safe"
                ))
            }
            StoreError::Full(_) => tonic::Status::resource_exhausted(format!(
                "{e}; nothing was acknowledged, retry when the hub has room again"
            )),
        }
    }
}

impl From<BlobError> for StoreError {
    fn from(e: BlobError) -> Self {
        match &e {
            BlobError::Io { source, .. } if is_full(source) => StoreError::Full(e.to_string()),
            BlobError::Io { .. } => StoreError::Io(e.to_string()),
            BlobError::Damaged { .. } => StoreError::Corrupt(e.to_string()),
        }
    }
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        match &e {
            sled::Error::Io(io) if is_full(io) => StoreError::Full(e.to_string()),
            _ => StoreError::Sled(e.to_string()),
        }
    }
}

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
    /// One line for the audit record.
    pub summary: String,
    /// The case it opens or joins (none without an EU link).
    pub case: Option<CaseWrite>,
    /// Statistics counters it adds one to.
    pub counts: Vec<String>,
    /// Series whose material it holds (recorded with its case).
    pub series: Vec<meldnet_core::series::SeriesId>,
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
    /// Joins this case as a sighting (first report, for its history).
    Sighting {
        /// The case.
        case_id: CaseId,
        /// The report that opened it.
        first_report: ReportId,
        /// What matched, in words.
        matched_by: String,
        /// Keys of the report the case did not hold yet.
        keys: CaseKeys,
        /// The case's new assessment, when this report made it graver.
        assessment: Option<pb::Assessment>,
        /// The location the report brought, when its URL was new to the
        /// case (with its notice, if one is due).
        new_location: Option<Box<pb::LocationRecord>>,
        /// Notices asked now at locations the case held already: the
        /// report's own, and the others when it made the case illegal
        /// everywhere (their decisions in `NewReport::extra`).
        notices: Vec<(u32, crate::ingest::Notice)>,
    },
}

/// Deconfliction keys that lead to a case.
#[derive(Debug, Clone, Default)]
pub struct CaseKeys {
    /// SHA-256 of normalised URLs.
    pub urls: Vec<[u8; 32]>,
    /// SHA-256 of items.
    pub files: Vec<Sha256>,
    /// PDQ hashes with their quality.
    pub pdqs: Vec<(PdqHash, u8)>,
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

/// When a location's time to removal starts: at its notice (a location
/// can join a case, or a case become illegal everywhere, before one).
pub fn noticed_or_opened(rec: &pb::LocationRecord) -> i64 {
    if rec.noticed_at_ms > 0 {
        rec.noticed_at_ms
    } else {
        rec.opened_at_ms
    }
}

/// A location's state, in the words statistics and explanations use.
pub fn location_state(rec: &pb::LocationRecord, now_ms: i64) -> &'static str {
    if !rec.moved_to_case_id.is_empty() {
        return "split_out";
    }
    let removed_in_time = rec.removed_at_ms > 0 && rec.removed_at_ms <= rec.deadline_ms;
    if rec.deadline_ms == 0 {
        if rec.removed_at_ms > 0 {
            "removed"
        } else {
            "no_notice_due"
        }
    } else if removed_in_time {
        "removed"
    } else if rec.removed_at_ms > 0 {
        "removed_late"
    } else if rec.escalated_deadline_ms == rec.deadline_ms {
        "escalated"
    } else if rec.not_removed {
        "not_removed"
    } else if now_ms > rec.deadline_ms {
        "overdue"
    } else {
        "open"
    }
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

enum WriteOp {
    Reports(
        Vec<NewReport>,
        oneshot::Sender<Result<Vec<Committed>, StoreError>>,
    ),
    Ack(
        SpiffeId,
        Vec<u64>,
        Vec<(u64, String)>,
        oneshot::Sender<Result<Vec<u64>, StoreError>>,
    ),
    /// A queue entry whose stored body is damaged: recorded once, held back.
    HeldBack(SpiffeId, u64, ReportId, String),
    Delivered(SpiffeId, Vec<(u64, ReportId)>),
    List(ListWrite, oneshot::Sender<Result<(), StoreError>>),
    Audit(pb::AuditEvent, oneshot::Sender<Result<(), StoreError>>),
    /// A setting stored with its audit record.
    Meta(
        Vec<u8>,
        Vec<u8>,
        pb::AuditEvent,
        oneshot::Sender<Result<(), StoreError>>,
    ),
    Step(StepWrite, oneshot::Sender<Result<StepOutcome, StoreError>>),
    Escalate(Escalation, oneshot::Sender<Result<bool, StoreError>>),
    Split(Box<SplitWrite>, oneshot::Sender<Result<bool, StoreError>>),
    Series(SeriesOp, oneshot::Sender<Result<SeriesOutcome, StoreError>>),
    /// Tests only: the writer waits here until the sender is dropped or
    /// sends, so that the operations queued meanwhile meet in one group.
    #[cfg(test)]
    Gate(std_mpsc::Receiver<()>),
}

impl WriteOp {
    /// Whether the operation commits in a group of its own. A series
    /// operation reads what earlier groups stored (the preference in
    /// force, the queue, the drafts) and decides on it; staged beside
    /// another operation of the same group it would read the state before
    /// that one (a withdrawal and a notification in one group both went
    /// through). Series operations are rare, so a group each costs nothing
    /// measurable.
    fn commits_alone(&self) -> bool {
        matches!(self, WriteOp::Series(..) | WriteOp::Split(..))
    }
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

impl StoredChange {
    fn to_value(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(40 + self.bytes.len());
        v.extend_from_slice(&self.tip.digest);
        v.extend_from_slice(&self.tip.count.to_be_bytes());
        v.extend_from_slice(&self.bytes);
        v
    }

    fn from_kv(k: &[u8], v: &[u8]) -> Result<StoredChange, StoreError> {
        let corrupt = || StoreError::Corrupt("list change".into());
        let version = k
            .get(1..9)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .ok_or_else(corrupt)?;
        let digest: [u8; 32] = v
            .get(..32)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(corrupt)?;
        let count = v
            .get(32..40)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .ok_or_else(corrupt)?;
        Ok(StoredChange {
            tip: Tip {
                version,
                count,
                digest,
            },
            bytes: v[40..].to_vec(),
        })
    }
}

fn list_key(version: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = LIST;
    k[1..].copy_from_slice(&version.to_be_bytes());
    k
}

/// A stored record: its kind (a word), its key and its value.
pub type StoredRecord = (&'static str, Vec<u8>, Vec<u8>);

/// A hash of a series as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeriesHashKey {
    /// An exact hash.
    Sha256(meldnet_core::series::SeriesId, Sha256),
    /// A PDQ hash and its quality.
    Pdq(meldnet_core::series::SeriesId, PdqHash, u8),
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
    /// SHA-256 over every key and value in key order.
    pub digest: [u8; 32],
    /// All entries.
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
/// store's writer and flusher (a `nice` difference).
const REQUEST_THREAD_NICE: libc::c_int = 5;

/// Lowers the calling thread's scheduling priority below the store's writer.
/// Why: every receipt waits for the one writer thread, and with the default
/// fair share the dozen verification threads left it a third of a core
/// while it had work: the whole hub then waited on it. Run at the start of
/// every request and verification thread (tokio's `on_thread_start`).
/// Lowering one's own priority needs no privilege; if it fails, nothing
/// else changes. Threads inherit the priority of the thread that starts
/// them, so the store must be opened outside the runtime's threads (the hub
/// opens it in `main`'s `block_on`, on the main thread).
pub fn yield_to_the_writer() {
    // SAFETY: setpriority with PRIO_PROCESS and the calling thread's id only
    // changes this thread's nice value.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid, REQUEST_THREAD_NICE);
    }
}

/// The hub's store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    tree: sled::Tree,
    blobs: Arc<BlobFile>,
    writer: std_mpsc::Sender<WriteOp>,
    generation: watch::Receiver<u64>,
    /// Queue entries held back for a damaged body, recorded once each.
    held_back: Arc<std::sync::Mutex<std::collections::HashSet<u64>>>,
}

fn queue_prefix(recipient: &SpiffeId) -> Vec<u8> {
    let mut k = vec![QUEUE];
    k.extend_from_slice(recipient.to_string().as_bytes());
    k.push(0);
    k
}

fn queue_key(recipient_prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut k = recipient_prefix.to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn report_key(id: &ReportId) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = REPORT;
    k[1..].copy_from_slice(id.as_bytes());
    k
}

fn audit_key(seq: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = AUDIT;
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn key_with(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = vec![prefix];
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

fn case_key(id: &CaseId) -> Vec<u8> {
    key_with(CASE, &[id.as_bytes()])
}

fn deadline_key(deadline_ms: i64, id: &CaseId, location: u32) -> Vec<u8> {
    key_with(
        DEADLINE,
        &[
            &deadline_ms.to_be_bytes(),
            id.as_bytes(),
            &location.to_be_bytes(),
        ],
    )
}

fn id16(b: &[u8], what: &str) -> Result<[u8; 16], StoreError> {
    b.get(..16)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt(what.into()))
}

fn decode_case(v: &[u8]) -> Result<pb::CaseRecord, StoreError> {
    pb::CaseRecord::decode(v).map_err(|e| StoreError::Corrupt(format!("case: {e}")))
}

/// Everything deconfliction needs to rebuild its index at start.
#[derive(Debug, Default)]
pub struct CaseIndexData {
    /// Every case record.
    pub cases: Vec<pb::CaseRecord>,
    /// URL keys.
    pub urls: Vec<([u8; 32], CaseId)>,
    /// File keys.
    pub files: Vec<(Sha256, CaseId)>,
    /// PDQ hashes.
    pub pdqs: Vec<(CaseId, PdqHash, u8)>,
}

/// The body a sled pointer leads to.
/// What a key's value points to in the blob file, if it is a pointer.
fn body_kind(key: &[u8]) -> Option<&'static str> {
    match *key.first()? {
        REPORT => Some("report"),
        AUDIT => Some("audit record"),
        ESCALATION => Some("escalation"),
        NOTIFICATION => Some("notification"),
        HISTORY => Some("history event"),
        CASE_KEYS => Some("case keys"),
        _ => None,
    }
}

/// The bytes a pointer covers, header included, unchecked (for the digest
/// of a damaged store).
fn raw_body(blobs: &BlobFile, pointer: &[u8]) -> Result<Vec<u8>, StoreError> {
    let r = BlobRef::from_bytes(pointer).ok_or_else(|| StoreError::Corrupt("pointer".into()))?;
    Ok(blobs.read_raw(r)?)
}

fn load_body(blobs: &BlobFile, pointer: &[u8]) -> Result<Vec<u8>, StoreError> {
    let r = BlobRef::from_bytes(pointer).ok_or_else(|| StoreError::Corrupt("pointer".into()))?;
    Ok(blobs.read(r)?)
}

/// The stored report a sled pointer leads to.
fn load_report(blobs: &BlobFile, pointer: &[u8]) -> Result<pb::StoredReport, StoreError> {
    let body = load_body(blobs, pointer)?;
    pb::StoredReport::decode(body.as_slice())
        .map_err(|e| StoreError::Corrupt(format!("report: {e}")))
}

fn read_u64(tree: &sled::Tree, key: &[u8], what: &str) -> Result<Option<u64>, StoreError> {
    tree.get(key)?
        .map(|v| {
            v.as_ref()
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt(what.into()))
        })
        .transpose()
}

fn event(
    at_ms: i64,
    kind: &str,
    actor: &SpiffeId,
    subject: String,
    detail: String,
) -> pb::AuditEvent {
    pb::AuditEvent {
        at_ms,
        kind: kind.to_string(),
        actor: actor.to_string(),
        subject,
        detail,
    }
}

impl Store {
    /// Opens (or creates) the store in `dir` on the system clock.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Self::open_with_clock(dir, Arc::new(Clock::system()))
    }

    /// Opens (or creates) the store in `dir` and starts its writer thread;
    /// audit records are stamped by `clock`.
    pub fn open_with_clock(dir: &Path, clock: Arc<Clock>) -> Result<Store, StoreError> {
        Self::open_with(dir, clock, 0)
    }

    /// As [`open_with_clock`](Self::open_with_clock), refusing new reports
    /// while the file system holding `dir` has less than `min_free` bytes
    /// free. That room is kept for what must not fail: sled's own log
    /// (a failed flush stops the hub), acknowledgements, operators' changes.
    pub fn open_with(dir: &Path, clock: Arc<Clock>, min_free: u64) -> Result<Store, StoreError> {
        // No periodic flush of sled's own: the flusher flushes after every
        // group it answers, and a background write could meet a failing
        // disk when nobody answers for it, leaving sled unusable while the
        // hub still ran (a write that fails now fails a group, which is
        // refused or stops the hub).
        let db = sled::Config::new().path(dir).flush_every_ms(None).open()?;
        let tree = db.open_tree("hub")?;
        let head = match tree.get(META_AUDIT_HEAD)? {
            Some(v) if v.len() == 40 => {
                let mut hash = [0u8; 32];
                hash.copy_from_slice(&v[8..]);
                let mut seq = [0u8; 8];
                seq.copy_from_slice(&v[..8]);
                ChainHead {
                    next_seq: u64::from_be_bytes(seq),
                    hash,
                }
            }
            Some(_) => return Err(StoreError::Corrupt("audit head".into())),
            None => ChainHead::default(),
        };
        let next_queue_seq = read_u64(&tree, META_QUEUE_SEQ, "queue seq")?.unwrap_or(1);
        let blob_end = read_u64(&tree, META_BLOB_END, "blob end")?.unwrap_or(0);
        let next_hist = read_u64(&tree, META_HIST_SEQ, "history seq")?.unwrap_or(1);
        let mut counts = HashMap::new();
        for kv in tree.scan_prefix([STAT]) {
            let (k, v) = kv?;
            let n: [u8; 8] = v
                .as_ref()
                .try_into()
                .map_err(|_| StoreError::Corrupt("counter".into()))?;
            counts.insert(
                String::from_utf8_lossy(&k[1..]).into_owned(),
                u64::from_be_bytes(n),
            );
        }
        let blobs = Arc::new(BlobFile::open(dir, blob_end)?);
        let (tx, rx) = std_mpsc::channel();
        let (flush_tx, flush_rx) = std_mpsc::channel();
        let (gen_tx, gen_rx) = watch::channel(0u64);
        let writer = Writer {
            tree: tree.clone(),
            clock,
            head,
            next_queue_seq,
            blobs: blobs.clone(),
            blob_end,
            blob_buf: Vec::new(),
            flusher: flush_tx,
            next_hist,
            counts,
            group_counts: HashMap::new(),
            group_cases: HashMap::new(),
            room: Room {
                dir: dir.to_path_buf(),
                min_free,
            },
        };
        let flusher = Flusher {
            db: db.clone(),
            generation: gen_tx,
        };
        std::thread::Builder::new()
            .name("hub-store-flush".into())
            .spawn(move || flusher.run(flush_rx))
            .map_err(|e| StoreError::Sled(e.to_string()))?;
        std::thread::Builder::new()
            .name("hub-store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Sled(e.to_string()))?;
        Ok(Store {
            db,
            tree,
            blobs,
            writer: tx,
            generation: gen_rx,
            held_back: Arc::default(),
        })
    }

    /// Hands an operation to the writer and waits for its answer, which
    /// comes only after the group it joined is flushed.
    async fn ask<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> WriteOp,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(op(tx))
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Stores reports, their decisions and queue entries, and answers only
    /// after the flush. Same id and bytes as stored: the stored record.
    pub async fn commit_reports(
        &self,
        reports: Vec<NewReport>,
    ) -> Result<Vec<Committed>, StoreError> {
        self.send_reports(reports)?.await
    }

    /// Hands reports to the writer now (commits happen in the order they
    /// are handed over) and returns the wait for their flush.
    pub fn send_reports(
        &self,
        reports: Vec<NewReport>,
    ) -> Result<impl std::future::Future<Output = Result<Vec<Committed>, StoreError>>, StoreError>
    {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(WriteOp::Reports(reports, tx))
            .map_err(|_| StoreError::WriterGone)?;
        Ok(async move { rx.await.map_err(|_| StoreError::WriterGone)? })
    }

    /// Stores a case step (after the caller checked who may record it) and
    /// answers after the flush.
    pub async fn record_step(&self, write: StepWrite) -> Result<StepOutcome, StoreError> {
        self.ask(|tx| WriteOp::Step(write, tx)).await
    }

    /// Stores an escalation and queues it, unless the case was removed in
    /// time or this deadline was escalated already (then false).
    pub async fn escalate(&self, e: Escalation) -> Result<bool, StoreError> {
        self.ask(|tx| WriteOp::Escalate(e, tx)).await
    }

    /// Hands a split to the writer now (after the reports handed before,
    /// before those handed after) and returns the wait for its flush:
    /// false when the report is no longer a sighting of the case.
    pub fn send_split(
        &self,
        w: SplitWrite,
    ) -> Result<impl std::future::Future<Output = Result<bool, StoreError>>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(WriteOp::Split(Box::new(w), tx))
            .map_err(|_| StoreError::WriterGone)?;
        Ok(async move { rx.await.map_err(|_| StoreError::WriterGone)? })
    }

    /// Whether `report` joined `case` as a sighting (and was not split out).
    pub fn is_sighting(&self, case: &CaseId, report: &ReportId) -> Result<bool, StoreError> {
        Ok(self
            .tree
            .contains_key(key_with(SIGHTING, &[case.as_bytes(), report.as_bytes()]))?)
    }

    /// The deconfliction keys `report` brought to its case.
    pub fn case_keys(&self, report: &ReportId) -> Result<CaseKeys, StoreError> {
        let Some(v) = self.tree.get(key_with(CASE_KEYS, &[report.as_bytes()]))? else {
            return Ok(CaseKeys::default());
        };
        let r = pb::CaseKeysRecord::decode(&load_body(&self.blobs, &v)?[..])
            .map_err(|e| StoreError::Corrupt(format!("case keys: {e}")))?;
        let hash = |b: &[u8], what: &str| -> Result<[u8; 32], StoreError> {
            b.try_into()
                .map_err(|_| StoreError::Corrupt(format!("case keys: {what}")))
        };
        let mut keys = CaseKeys::default();
        for u in &r.urls {
            keys.urls.push(hash(u, "urls")?);
        }
        for f in &r.files {
            keys.files.push(Sha256(hash(f, "files")?));
        }
        for (h, q) in r.pdqs.iter().zip(&r.pdq_qualities) {
            keys.pdqs.push((PdqHash(hash(h, "pdqs")?), *q));
        }
        Ok(keys)
    }

    /// Stores a setting (`key`, `value`) with an audit record, flushed
    /// before the answer.
    pub async fn set_meta(
        &self,
        key: &[u8],
        value: Vec<u8>,
        actor: &SpiffeId,
        subject: String,
        detail: String,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let ev = event(at_ms, "setting", actor, subject, detail);
        self.ask(|tx| WriteOp::Meta(key.to_vec(), value, ev, tx))
            .await
    }

    /// Applies a series operation in the writer (who may, the preference
    /// in force, the hard cap: all checked there) and answers after the flush.
    pub async fn series(&self, op: SeriesOp) -> Result<SeriesOutcome, StoreError> {
        self.ask(|tx| WriteOp::Series(op, tx)).await
    }

    /// A series as stored.
    pub fn series_record(
        &self,
        id: &meldnet_core::series::SeriesId,
    ) -> Result<Option<pb::SeriesRecord>, StoreError> {
        series::read_series(&self.tree, id)
    }

    /// Every series with its representative (for the representative's list).
    pub fn series_records(&self) -> Result<Vec<pb::SeriesRecord>, StoreError> {
        self.tree
            .scan_prefix([SERIES])
            .map(|kv| {
                let (_, v) = kv?;
                pb::SeriesRecord::decode(v.as_ref()).map_err(series::corrupt("series"))
            })
            .collect()
    }

    /// Every hash of every series, for the matching index: (series, SHA-256
    /// or PDQ with quality).
    pub fn series_hashes(&self) -> Result<Vec<SeriesHashKey>, StoreError> {
        self.tree
            .scan_prefix([SERIES_HASH])
            .map(|kv| {
                let (k, v) = kv?;
                let id = meldnet_core::series::SeriesId::from_bytes(id16(&k[1..], "series hash")?);
                let hash: [u8; 32] = k
                    .get(18..50)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| StoreError::Corrupt("series hash".into()))?;
                Ok(match k.get(17) {
                    Some(1) => SeriesHashKey::Sha256(id, Sha256(hash)),
                    _ => SeriesHashKey::Pdq(id, PdqHash(hash), v.first().copied().unwrap_or(0)),
                })
            })
            .collect()
    }

    /// The preference in force for a series and when it was set (none: never).
    pub fn preference(
        &self,
        id: &meldnet_core::series::SeriesId,
    ) -> Result<Option<(meldnet_core::series::Preference, i64)>, StoreError> {
        series::read_preference(&self.tree, id)
    }

    /// Every series with a preference, with it and when it was set.
    pub fn preferences(
        &self,
    ) -> Result<
        Vec<(
            meldnet_core::series::SeriesId,
            meldnet_core::series::Preference,
            i64,
        )>,
        StoreError,
    > {
        self.tree
            .scan_prefix([PREFERENCE])
            .map(|kv| {
                let (k, v) = kv?;
                let id = meldnet_core::series::SeriesId::from_bytes(id16(&k[1..], "preference")?);
                let (p, at) = decode_preference(&v)?;
                Ok((id, p, at))
            })
            .collect()
    }

    /// Where a series' digest stands.
    pub fn digest_state(
        &self,
        id: &meldnet_core::series::SeriesId,
    ) -> Result<Option<pb::DigestState>, StoreError> {
        series::read_digest(&self.tree, id)
    }

    /// New cases and sightings of a series recorded in `[from, to)`.
    pub fn series_counts(
        &self,
        id: &meldnet_core::series::SeriesId,
        from: i64,
        to: i64,
    ) -> Result<(u64, u64), StoreError> {
        let start = key_with(MATCH, &[id.as_bytes(), &from.max(0).to_be_bytes()]);
        let end = key_with(MATCH, &[id.as_bytes(), &to.max(0).to_be_bytes()]);
        let (mut opened, mut sightings) = (0, 0);
        for kv in self.tree.range(start..end) {
            let (_, v) = kv?;
            let m = pb::SeriesMatch::decode(v.as_ref()).map_err(series::corrupt("series match"))?;
            if m.opened {
                opened += 1;
            } else {
                sightings += 1;
            }
        }
        Ok((opened, sightings))
    }

    /// Proceedings notifications waiting to be signed: (case, draft).
    pub fn proceedings_drafts(&self) -> Result<Vec<(CaseId, pb::ProceedingsDraft)>, StoreError> {
        self.tree
            .scan_prefix([DRAFT])
            .map(|kv| {
                let (k, v) = kv?;
                let case = CaseId::from_bytes(id16(&k[1..], "draft")?);
                let d =
                    pb::ProceedingsDraft::decode(v.as_ref()).map_err(series::corrupt("draft"))?;
                Ok((case, d))
            })
            .collect()
    }

    /// Everything the store keeps that belongs to one series: each key's
    /// kind, the key and the value as stored (bodies read from the blob
    /// file). What `meldnet-hub store series` lists, so anyone can see
    /// that nothing but hashes and a choice is kept.
    pub fn series_footprint(
        &self,
        id: &meldnet_core::series::SeriesId,
    ) -> Result<Vec<StoredRecord>, StoreError> {
        let mut out = Vec::new();
        let sid = id.as_bytes();
        for (prefix, kind) in [
            (SERIES, "series"),
            (SERIES_HASH, "hash"),
            (PREFERENCE, "preference"),
            (DIGEST, "digest_state"),
            (MATCH, "match"),
        ] {
            for kv in self.tree.scan_prefix(key_with(prefix, &[sid])) {
                let (k, v) = kv?;
                out.push((kind, k.to_vec(), v.to_vec()));
            }
        }
        // Keyed by case first: the series id is the key's tail.
        for (prefix, kind) in [(CASE_SERIES, "case_link"), (DRAFT, "draft")] {
            for kv in self.tree.scan_prefix([prefix]) {
                let (k, v) = kv?;
                if k.get(17..33) == Some(&sid[..]) {
                    out.push((kind, k.to_vec(), v.to_vec()));
                }
            }
        }
        for kv in self.tree.scan_prefix([NOTIFICATION]) {
            let (k, v) = kv?;
            let (body, _, n) = series::load_notification(&self.blobs, &v)?;
            if n.series_id == id.to_string() {
                out.push(("notification", k.to_vec(), body));
            }
        }
        Ok(out)
    }

    /// A stored setting.
    pub fn meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    /// Registrations operators stored (`g` + identity).
    pub fn registrations(&self) -> Result<Vec<pb::Registration>, StoreError> {
        self.tree
            .scan_prefix([b'g'])
            .map(|kv| {
                let (_, v) = kv?;
                pb::Registration::decode(v.as_ref())
                    .map_err(|e| StoreError::Corrupt(format!("registration: {e}")))
            })
            .collect()
    }

    /// A case.
    pub fn case(&self, id: &CaseId) -> Result<Option<pb::CaseRecord>, StoreError> {
        self.tree
            .get(case_key(id))?
            .map(|v| decode_case(&v))
            .transpose()
    }

    /// Every case, in the order they were opened.
    pub fn cases(&self) -> impl Iterator<Item = Result<pb::CaseRecord, StoreError>> + '_ {
        self.tree.scan_prefix([CASE]).map(|kv| {
            let (_, v) = kv?;
            decode_case(&v)
        })
    }

    /// What deconfliction's index is rebuilt from.
    pub fn case_index_data(&self) -> Result<CaseIndexData, StoreError> {
        let mut d = CaseIndexData::default();
        for c in self.cases() {
            d.cases.push(c?);
        }
        let hash = |b: &[u8], what: &str| -> Result<[u8; 32], StoreError> {
            b.try_into()
                .map_err(|_| StoreError::Corrupt(format!("case keys: {what}")))
        };
        for kv in self.tree.scan_prefix([CASE_KEYS]) {
            let (_, v) = kv?;
            let r = pb::CaseKeysRecord::decode(&load_body(&self.blobs, &v)?[..])
                .map_err(|e| StoreError::Corrupt(format!("case keys: {e}")))?;
            let id = CaseId::from_bytes(id16(&r.case_id, "case keys: case_id")?);
            for u in &r.urls {
                d.urls.push((hash(u, "urls")?, id));
            }
            for f in &r.files {
                d.files.push((Sha256(hash(f, "files")?), id));
            }
            if r.pdq_qualities.len() != r.pdqs.len() {
                return Err(StoreError::Corrupt("case keys: pdq_qualities".into()));
            }
            for (h, q) in r.pdqs.iter().zip(&r.pdq_qualities) {
                d.pdqs.push((id, PdqHash(hash(h, "pdqs")?), *q));
            }
        }
        Ok(d)
    }

    /// Reports that joined a case as sightings, oldest first, at most `limit`.
    pub fn sightings(&self, case: &CaseId, limit: usize) -> Result<Vec<ReportId>, StoreError> {
        self.tree
            .scan_prefix(key_with(SIGHTING, &[case.as_bytes()]))
            .take(limit)
            .map(|kv| {
                let (k, _) = kv?;
                Ok(ReportId::from_bytes(id16(&k[17..], "sighting key")?))
            })
            .collect()
    }

    /// Open deadlines that passed at `now_ms`, oldest first, at most
    /// `limit`: (deadline, case, location).
    pub fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<(i64, CaseId, u32)>, StoreError> {
        let end = key_with(DEADLINE, &[&now_ms.saturating_add(1).to_be_bytes()]);
        self.tree
            .range(vec![DEADLINE]..end)
            .take(limit)
            .map(|kv| {
                let (k, _) = kv?;
                let at: [u8; 8] = k
                    .get(1..9)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| StoreError::Corrupt("deadline key".into()))?;
                let location: [u8; 4] = k
                    .get(25..29)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| StoreError::Corrupt("deadline key".into()))?;
                Ok((
                    i64::from_be_bytes(at),
                    CaseId::from_bytes(id16(&k[9..], "deadline key")?),
                    u32::from_be_bytes(location),
                ))
            })
            .collect()
    }

    /// The next open deadline, if any.
    pub fn next_deadline(&self) -> Result<Option<i64>, StoreError> {
        match self.tree.scan_prefix([DEADLINE]).next() {
            None => Ok(None),
            Some(kv) => {
                let (k, _) = kv?;
                let at: [u8; 8] = k
                    .get(1..9)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| StoreError::Corrupt("deadline key".into()))?;
                Ok(Some(i64::from_be_bytes(at)))
            }
        }
    }

    /// A stored escalation (the case's first report and the escalation decision).
    pub fn escalation(&self, id: &CaseId) -> Result<Option<pb::StoredReport>, StoreError> {
        self.tree
            .get(key_with(ESCALATION, &[id.as_bytes()]))?
            .map(|v| load_report(&self.blobs, &v))
            .transpose()
    }

    /// What happened to a report, in order.
    pub fn history(&self, id: &ReportId) -> Result<Vec<pb::HistoryEvent>, StoreError> {
        self.tree
            .scan_prefix(key_with(HISTORY, &[id.as_bytes()]))
            .map(|kv| {
                let (_, v) = kv?;
                pb::HistoryEvent::decode(&load_body(&self.blobs, &v)?[..])
                    .map_err(|e| StoreError::Corrupt(format!("history: {e}")))
            })
            .collect()
    }

    /// The statistics counters.
    pub fn counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.tree
            .scan_prefix([STAT])
            .map(|kv| {
                let (k, v) = kv?;
                let n: [u8; 8] = v
                    .as_ref()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("counter".into()))?;
                Ok((
                    String::from_utf8_lossy(&k[1..]).into_owned(),
                    u64::from_be_bytes(n),
                ))
            })
            .collect()
    }

    /// Removes acknowledged entries from `recipient`'s queue (only its own:
    /// the key is built from its identity) and flushes. Returns the seqs
    /// that are now acknowledged, including ones acknowledged before.
    pub async fn ack(&self, recipient: &SpiffeId, seqs: Vec<u64>) -> Result<Vec<u64>, StoreError> {
        self.settle(recipient, seqs, Vec::new()).await
    }

    /// Takes entries out of `recipient`'s queue: those it acknowledged
    /// (`seqs`) and those it refused, each with its reason (`rejected`:
    /// recorded in the report's history and the audit log, counted). Answers
    /// the sequence numbers settled, after the flush.
    pub async fn settle(
        &self,
        recipient: &SpiffeId,
        seqs: Vec<u64>,
        rejected: Vec<(u64, String)>,
    ) -> Result<Vec<u64>, StoreError> {
        self.ask(|tx| WriteOp::Ack(recipient.clone(), seqs, rejected, tx))
            .await
    }

    /// Stores changes of the known-hash list and their audit record, and
    /// answers only after the flush.
    pub async fn commit_list(&self, write: ListWrite) -> Result<(), StoreError> {
        self.ask(|tx| WriteOp::List(write, tx)).await
    }

    /// Appends an audit record (an operator's action) and answers after the flush.
    pub async fn audit(
        &self,
        kind: &str,
        actor: &SpiffeId,
        subject: String,
        detail: String,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let ev = event(at_ms, kind, actor, subject, detail);
        self.ask(|tx| WriteOp::Audit(ev, tx)).await
    }

    /// The list's changes from version `from` on (inclusive), in order, at
    /// most `limit`.
    pub fn list_changes(&self, from: u64, limit: usize) -> Result<Vec<StoredChange>, StoreError> {
        self.tree
            .range(list_key(from.max(1))..list_key(u64::MAX))
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                StoredChange::from_kv(&k, &v)
            })
            .collect()
    }

    /// Records in the audit log that these entries were sent to `recipient`.
    pub fn record_delivered(&self, recipient: &SpiffeId, entries: Vec<(u64, ReportId)>) {
        let _ = self
            .writer
            .send(WriteOp::Delivered(recipient.clone(), entries));
    }

    /// Changes whenever a commit adds queue entries; delivery streams wait on it.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.clone()
    }

    /// Queue entries of `recipient` after `after` (exclusive), in queue
    /// order: at most `limit` entries and, past the first, at most
    /// `max_bytes` of stored records. Also says whether more entries follow.
    pub fn queue_after(
        &self,
        recipient: &SpiffeId,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<QueueEntry>, bool), StoreError> {
        let prefix = queue_prefix(recipient);
        let start = queue_key(&prefix, after.saturating_add(1));
        let mut end = prefix.clone();
        if let Some(last) = end.last_mut() {
            *last = 1;
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for kv in self.tree.range(start..end) {
            let (k, v) = kv?;
            if out.len() == limit {
                return Ok((out, true));
            }
            let seq_bytes: [u8; 8] = k[prefix.len()..]
                .try_into()
                .map_err(|_| StoreError::Corrupt("queue key".into()))?;
            let report_id = ReportId::from_bytes(id16(&v, "queue entry")?);
            let notification = series::queued_notification(&v);
            let pointer = match (v.get(16..), &notification) {
                (Some(esc), None) if esc.len() == 16 => {
                    self.tree.get(key_with(ESCALATION, &[esc]))?
                }
                (_, Some(key)) => self.tree.get(key)?,
                _ => self.tree.get(report_key(&report_id))?,
            }
            .ok_or_else(|| {
                StoreError::Corrupt(format!("queue entry for missing report {report_id}"))
            })?;
            let size = BlobRef::from_bytes(&pointer).map_or(0, |r| r.len as usize);
            if !out.is_empty() && bytes + size > max_bytes {
                return Ok((out, true));
            }
            bytes += size;
            let loaded = if notification.is_some() {
                series::load_notification(&self.blobs, &pointer)
                    .map(|(_, sn, _)| (pb::StoredReport::default(), Some(sn)))
            } else {
                load_report(&self.blobs, &pointer).map(|r| (r, None))
            };
            let seq = u64::from_be_bytes(seq_bytes);
            let (stored, notification) = match loaded {
                Ok(l) => l,
                Err(StoreError::Corrupt(why)) => {
                    // One damaged body must not stop the queue: this entry
                    // is held back (and stays queued), the rest flows.
                    self.hold_back(recipient, seq, report_id, why);
                    continue;
                }
                Err(e) => return Err(e),
            };
            out.push(QueueEntry {
                seq,
                report_id,
                stored,
                notification,
            });
        }
        Ok((out, false))
    }

    /// Records, once per hub process, that a queue entry cannot be sent
    /// because its stored body is damaged (operators see it in the
    /// report's history, the audit log, `Stats` and the metrics).
    fn hold_back(&self, recipient: &SpiffeId, seq: u64, report: ReportId, why: String) {
        let first = self
            .held_back
            .lock()
            .map(|mut h| h.insert(seq))
            .unwrap_or(false);
        if first {
            tracing::error!(%recipient, seq, %report, "delivery held back: {why}");
            metrics::counter!("meldnet_deliveries_held_back_total").increment(1);
            let _ = self
                .writer
                .send(WriteOp::HeldBack(recipient.clone(), seq, report, why));
        }
    }

    /// A stored report by id.
    pub fn report(&self, id: &ReportId) -> Result<Option<pb::StoredReport>, StoreError> {
        self.tree
            .get(report_key(id))?
            .map(|v| load_report(&self.blobs, &v))
            .transpose()
    }

    /// Digest and counts of everything stored: equal digests, equal state.
    /// A report counts with its body, not with where the body lies.
    pub fn state_digest(&self) -> Result<StateDigest, StoreError> {
        let mut h = sha2::Sha256::new();
        let mut d = StateDigest::default();
        for kv in self.tree.iter() {
            let (k, v) = kv?;
            if k.as_ref() == META_BLOB_END {
                continue;
            }
            let v = match body_kind(&k) {
                Some(_) => match load_body(&self.blobs, &v) {
                    Ok(body) => body,
                    // A damaged body counts as what is there, and is counted:
                    // the digest still compares states, and says the damage.
                    Err(StoreError::Corrupt(_)) => {
                        d.damaged += 1;
                        raw_body(&self.blobs, &v)?
                    }
                    Err(e) => return Err(e),
                },
                None => v.to_vec(),
            };
            h.update((k.len() as u64).to_be_bytes());
            h.update(&k);
            h.update((v.len() as u64).to_be_bytes());
            h.update(&v);
            d.entries += 1;
            match k.first() {
                Some(&REPORT) => d.reports += 1,
                Some(&QUEUE) => d.queued += 1,
                Some(&AUDIT) => d.audit_records += 1,
                _ => {}
            }
        }
        d.digest = h.finalize().into();
        Ok(d)
    }

    /// Reads every stored body back and checks it (length and checksum),
    /// for `meldnet-hub store check`: each damaged one with what points to
    /// it and where it lies. Nothing is changed: a damaged body stays where
    /// it is, and its queue entries stay held back.
    pub fn check(&self) -> Result<StoreCheck, StoreError> {
        let mut out = StoreCheck::default();
        for kv in self.tree.iter() {
            let (k, v) = kv?;
            let Some(kind) = body_kind(&k) else {
                continue;
            };
            out.bodies += 1;
            let Some(r) = BlobRef::from_bytes(&v) else {
                out.damaged.push(Damage {
                    kind,
                    key: hex::encode(&k[1..]),
                    offset: 0,
                    len: 0,
                    reason: "the pointer itself is damaged".into(),
                });
                continue;
            };
            if let Err(e) = self.blobs.read(r) {
                let key = match (k.first(), k.get(1..17)) {
                    (Some(&REPORT) | Some(&HISTORY) | Some(&CASE_KEYS), Some(id)) => {
                        id16(id, "key").map(|b| ReportId::from_bytes(b).to_string())?
                    }
                    _ => hex::encode(&k[1..]),
                };
                out.damaged.push(Damage {
                    kind,
                    key,
                    offset: r.offset,
                    len: r.len,
                    reason: e.to_string(),
                });
            }
        }
        Ok(out)
    }

    /// Every audit event with its sequence number, in order (for reading
    /// the log; `verify_audit` checks the chain).
    pub fn audit_events(&self) -> Result<Vec<(u64, pb::AuditEvent)>, StoreError> {
        self.tree
            .scan_prefix([AUDIT])
            .map(|kv| {
                let (_, v) = kv?;
                let rec = pb::AuditRecord::decode(load_body(&self.blobs, &v)?.as_slice())
                    .map_err(|e| StoreError::Corrupt(format!("audit record: {e}")))?;
                let ev = pb::AuditEvent::decode(rec.event.as_slice())
                    .map_err(|e| StoreError::Corrupt(format!("audit event: {e}")))?;
                Ok((rec.seq, ev))
            })
            .collect()
    }

    /// Walks the audit chain from the genesis and checks every link, and
    /// that the stored head is the chain's end.
    pub fn verify_audit(&self) -> Result<ChainHead, String> {
        let records = self
            .tree
            .scan_prefix([AUDIT])
            .map(|kv| {
                let (_, v) = kv.map_err(|e| e.to_string())?;
                load_body(&self.blobs, &v).map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let head = audit::verify_chain(records).map_err(|e| e.to_string())?;
        let stored = self.tree.get(META_AUDIT_HEAD).map_err(|e| e.to_string())?;
        let expect = stored.map(|v| v.to_vec()).unwrap_or_else(|| {
            let mut v = 0u64.to_be_bytes().to_vec();
            v.extend_from_slice(&audit::GENESIS);
            v
        });
        let mut got = head.next_seq.to_be_bytes().to_vec();
        got.extend_from_slice(&head.hash);
        if got != expect {
            return Err("the stored audit head does not match the end of the chain (records removed at the end?)".into());
        }
        Ok(head)
    }

    /// Flushes everything to disk (used at shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

struct Writer {
    tree: sled::Tree,
    clock: Arc<Clock>,
    head: ChainHead,
    next_queue_seq: u64,
    blobs: Arc<BlobFile>,
    /// Where the next body goes: the end of the durable part of the blob file.
    blob_end: u64,
    /// The bodies of the group being committed.
    blob_buf: Vec<u8>,
    /// Applied groups waiting for their flush.
    flusher: std_mpsc::Sender<Applied>,
    next_hist: u64,
    /// Statistics counters as stored.
    counts: HashMap<String, u64>,
    /// Counters changed by the group being committed.
    group_counts: HashMap<String, u64>,
    /// Case records changed by the group being committed.
    group_cases: HashMap<CaseId, pb::CaseRecord>,
    /// The free space new reports leave.
    room: Room,
}

/// The room new reports must leave on the store's file system.
struct Room {
    dir: PathBuf,
    min_free: u64,
}

impl Room {
    /// `Full` while less than `min_free` bytes are free (checked per group:
    /// one `statvfs`, far cheaper than the group's fsync).
    fn check(&self) -> Result<(), StoreError> {
        if self.min_free == 0 {
            return Ok(());
        }
        let free = free_bytes(&self.dir)
            .map_err(|e| StoreError::Io(format!("free space of {}: {e}", self.dir.display())))?;
        if free < self.min_free {
            metrics::counter!("meldnet_store_full_refusals_total").increment(1);
            return Err(StoreError::Full(format!(
                "{} has {} MiB free, less than the {} MiB kept back ([store] min_free_mib)",
                self.dir.display(),
                free >> 20,
                self.min_free >> 20
            )));
        }
        Ok(())
    }
}

/// Bytes an unprivileged writer may still use on the file system of `dir`.
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("a NUL byte in the path"))?;
    // SAFETY: `c` is a valid C string; `st` is written by statvfs only.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// A group that is applied and waits to be made durable and answered.
struct Applied {
    replies: Vec<Reply>,
    queued_any: bool,
}

/// The second stage of the commit pipeline: flushes sled (fsync), then
/// answers every group applied before that flush began, in order. While it
/// waits on the disk, the writer stages and applies the next group.
struct Flusher {
    db: sled::Db,
    generation: watch::Sender<u64>,
}

impl Flusher {
    fn run(self, rx: std_mpsc::Receiver<Applied>) {
        while let Ok(first) = rx.recv() {
            let mut groups = vec![first];
            while let Ok(g) = rx.try_recv() {
                groups.push(g);
            }
            // The durability point. Once a group is applied its sequence
            // numbers are taken; if it cannot be made durable the hub must not
            // go on (it could reuse them) nor answer: it stops, and on restart
            // sled recovers a consistent prefix, which clients re-send into.
            if let Err(e) = self.db.flush() {
                tracing::error!(error = %e, "flush failed after apply: stopping the hub to keep the store consistent");
                std::process::abort();
            }
            let mut queued_any = false;
            for g in groups {
                queued_any |= g.queued_any;
                for r in g.replies {
                    r.answer(Ok(()));
                }
            }
            if queued_any {
                self.generation.send_modify(|g| *g += 1);
            }
        }
    }
}

impl Reply {
    /// Answers the caller: its result, or the group's failure.
    fn answer(self, result: Result<(), StoreError>) {
        match (self, result) {
            (Reply::Reports(tx, out), Ok(())) => {
                let _ = tx.send(Ok(out));
            }
            (Reply::Ack(tx, seqs), Ok(())) => {
                let _ = tx.send(Ok(seqs));
            }
            (Reply::Reports(tx, _), Err(e)) => {
                let _ = tx.send(Err(e));
            }
            (Reply::Ack(tx, _), Err(e)) => {
                let _ = tx.send(Err(e));
            }
            (Reply::Done(tx), result) => {
                let _ = tx.send(result);
            }
            (Reply::Step(tx, out), result) => {
                let _ = tx.send(result.map(|()| out));
            }
            (Reply::Escalated(tx, done), result) => {
                let _ = tx.send(result.map(|()| done));
            }
            (Reply::Series(tx, out), result) => {
                let _ = tx.send(result.map(|()| out));
            }
        }
    }
}

enum Reply {
    Reports(
        oneshot::Sender<Result<Vec<Committed>, StoreError>>,
        Vec<Committed>,
    ),
    Ack(oneshot::Sender<Result<Vec<u64>, StoreError>>, Vec<u64>),
    /// A write with nothing to return but its durability (list, audit).
    Done(oneshot::Sender<Result<(), StoreError>>),
    Step(
        oneshot::Sender<Result<StepOutcome, StoreError>>,
        StepOutcome,
    ),
    Escalated(oneshot::Sender<Result<bool, StoreError>>, bool),
    Series(
        oneshot::Sender<Result<SeriesOutcome, StoreError>>,
        SeriesOutcome,
    ),
}

impl Writer {
    fn run(mut self, rx: std_mpsc::Receiver<WriteOp>) {
        // An operation that must commit alone, taken while gathering a group.
        let mut next: Option<WriteOp> = None;
        loop {
            let first = match next.take() {
                Some(op) => op,
                None => match rx.recv() {
                    Ok(op) => op,
                    Err(_) => return,
                },
            };
            #[cfg(test)]
            if let WriteOp::Gate(gate) = first {
                let _ = gate.recv();
                continue;
            }
            let alone = first.commits_alone();
            let mut ops = vec![first];
            while !alone && ops.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(op) if op.commits_alone() => {
                        next = Some(op);
                        break;
                    }
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            self.commit_group(ops);
        }
    }

    fn commit_group(&mut self, ops: Vec<WriteOp>) {
        let saved = (
            self.head,
            self.next_queue_seq,
            self.blob_end,
            self.next_hist,
        );
        self.blob_buf.clear();
        self.group_counts.clear();
        self.group_cases.clear();
        let mut batch = sled::Batch::default();
        let mut replies = Vec::with_capacity(ops.len());
        let mut queued_any = false;
        // Reports first stored in this group (kept, not copied), so that a
        // second copy in the same group is recognised as a duplicate.
        let mut in_group: HashMap<ReportId, pb::StoredReport> = HashMap::new();
        let mut failure: Option<StoreError> = None;
        for op in ops {
            match op {
                WriteOp::Reports(reports, reply) => {
                    // Refused alone, before anything is staged: the rest of
                    // the group commits.
                    if let Err(e) = self.room.check() {
                        let _ = reply.send(Err(e));
                        continue;
                    }
                    match self.stage_reports(&mut batch, reports, &mut in_group, &mut queued_any) {
                        Ok(out) => replies.push(Reply::Reports(reply, out)),
                        Err(e) => {
                            failure = Some(e.clone());
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                WriteOp::Ack(recipient, seqs, rejected, reply) => {
                    match self.stage_ack(&mut batch, &recipient, &seqs, &rejected) {
                        Ok(settled) => replies.push(Reply::Ack(reply, settled)),
                        Err(e) => {
                            failure = Some(e.clone());
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                WriteOp::List(write, reply) => {
                    self.stage_list(&mut batch, write);
                    replies.push(Reply::Done(reply));
                }
                WriteOp::Audit(ev, reply) => {
                    self.stage_audit(&mut batch, ev);
                    replies.push(Reply::Done(reply));
                }
                WriteOp::Meta(key, value, ev, reply) => {
                    batch.insert(key, value);
                    self.stage_audit(&mut batch, ev);
                    replies.push(Reply::Done(reply));
                }
                WriteOp::Step(write, reply) => match self.stage_step(&mut batch, write) {
                    Ok(out) => replies.push(Reply::Step(reply, out)),
                    Err(e) => {
                        failure = Some(e.clone());
                        let _ = reply.send(Err(e));
                    }
                },
                WriteOp::Split(w, reply) => match self.stage_split(&mut batch, *w, &mut queued_any)
                {
                    Ok(done) => replies.push(Reply::Escalated(reply, done)),
                    Err(e) => {
                        failure = Some(e.clone());
                        let _ = reply.send(Err(e));
                    }
                },
                WriteOp::Escalate(e, reply) => {
                    match self.stage_escalation(&mut batch, e, &mut queued_any) {
                        Ok(done) => replies.push(Reply::Escalated(reply, done)),
                        Err(e) => {
                            failure = Some(e.clone());
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                WriteOp::Series(op, reply) => {
                    match self.stage_series(&mut batch, op, &mut queued_any) {
                        Ok(out) => replies.push(Reply::Series(reply, out)),
                        Err(e) => {
                            failure = Some(e.clone());
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                #[cfg(test)]
                WriteOp::Gate(_) => {}
                WriteOp::HeldBack(recipient, seq, report, why) => {
                    // Recorded once, across restarts too.
                    let marker = key_with(HELD_BACK, &[&seq.to_be_bytes()]);
                    match self.tree.get(&marker) {
                        Ok(None) => batch.insert(marker, &[][..]),
                        _ => continue,
                    }
                    let now = self.clock.now_ms();
                    let line = format!("queue entry {seq} held back: {why}");
                    self.stage_history(
                        &mut batch,
                        &report,
                        now,
                        "held-back",
                        &recipient,
                        line.clone(),
                    );
                    self.bump("deliveries_held_back");
                    self.stage_audit(
                        &mut batch,
                        event(now, "held-back", &recipient, report.to_string(), line),
                    );
                }
                WriteOp::Delivered(recipient, entries) => {
                    let now = self.clock.now_ms();
                    for (seq, id) in &entries {
                        self.stage_history(
                            &mut batch,
                            id,
                            now,
                            "delivered",
                            &recipient,
                            format!("queue entry {seq}"),
                        );
                    }
                    let detail = entries
                        .iter()
                        .map(|(seq, id)| format!("{seq}:{id}"))
                        .collect::<Vec<_>>()
                        .join(",");
                    self.stage_audit(
                        &mut batch,
                        event(
                            self.clock.now_ms(),
                            "delivered",
                            &recipient,
                            recipient.to_string(),
                            detail,
                        ),
                    );
                }
            }
        }
        let result = match failure {
            Some(e) => Err(e),
            None => self.write_bodies().map(|()| {
                self.stage_meta(&mut batch);
                // sled fails an apply once its log could not be written
                // (its own flusher may meet a failed write first): it
                // cannot be trusted with a later group, and nothing after
                // would be durable. Stop, as after a failed flush; on
                // restart sled recovers a consistent prefix.
                if let Err(e) = self.tree.apply_batch(batch) {
                    tracing::error!(error = %e, "the store could not apply a group: stopping the hub to keep the store consistent");
                    std::process::abort();
                }
            }),
        };
        match result {
            Ok(()) => {
                self.counts.extend(self.group_counts.drain());
                if replies.is_empty() && !queued_any {
                    return;
                }
                // Answered by the flusher once this group is on disk.
                let _ = self.flusher.send(Applied {
                    replies,
                    queued_any,
                });
            }
            Err(e) => {
                // Nothing of this group was applied or acknowledged; the counters go back.
                tracing::error!(error = %e, "commit failed");
                (
                    self.head,
                    self.next_queue_seq,
                    self.blob_end,
                    self.next_hist,
                ) = saved;
                for r in replies {
                    r.answer(Err(e.clone()));
                }
            }
        }
    }

    /// Writes the group's bodies and syncs them, before sled may point to them.
    fn write_bodies(&mut self) -> Result<(), StoreError> {
        if self.blob_buf.is_empty() {
            return Ok(());
        }
        self.blobs.write_durable(self.blob_end, &self.blob_buf)?;
        self.blob_end += self.blob_buf.len() as u64;
        Ok(())
    }

    fn stage_reports(
        &mut self,
        batch: &mut sled::Batch,
        reports: Vec<NewReport>,
        in_group: &mut HashMap<ReportId, pb::StoredReport>,
        queued_any: &mut bool,
    ) -> Result<Vec<Committed>, StoreError> {
        let mut out = Vec::with_capacity(reports.len());
        // One audit record per submitted batch: a line per new report.
        let mut audit_lines = Vec::new();
        let mut origin = None;
        let mut prefixes: HashMap<SpiffeId, Vec<u8>> = HashMap::new();
        for r in reports {
            let existing = match in_group.get(&r.id) {
                Some(s) => Some(s.clone()),
                None => self
                    .tree
                    .get(report_key(&r.id))?
                    .map(|v| load_report(&self.blobs, &v))
                    .transpose()?,
            };
            if let Some(existing) = existing {
                let same = existing.report.as_ref().map(|s| &s.report)
                    == r.stored.report.as_ref().map(|s| &s.report);
                out.push(if same {
                    Committed::Duplicate(existing)
                } else {
                    Committed::Conflict
                });
                continue;
            }
            let body = BlobFile::stage_message(&mut self.blob_buf, self.blob_end, &r.stored);
            batch.insert(&report_key(&r.id)[..], &body.to_bytes()[..]);
            for recipient in &r.recipients {
                let seq = self.next_queue_seq;
                self.next_queue_seq += 1;
                let prefix = prefixes
                    .entry(recipient.clone())
                    .or_insert_with(|| queue_prefix(recipient));
                batch.insert(queue_key(prefix, seq), &r.id.as_bytes()[..]);
                *queued_any = true;
            }
            let now = self.clock.now_ms();
            for e in &r.extra {
                self.stage_redecision(
                    batch,
                    &e.id,
                    &e.report_id,
                    &e.stored,
                    &e.recipients,
                    queued_any,
                );
                self.stage_history(
                    batch,
                    &e.report_id,
                    now,
                    "decided",
                    &r.origin.clone(),
                    e.line.clone(),
                );
            }
            self.stage_history(
                batch,
                &r.id,
                now,
                "decided",
                &r.origin.clone(),
                r.summary.clone(),
            );
            for c in &r.counts {
                self.bump(c);
            }
            let placed = match &r.case {
                Some(CaseWrite::Open(record, _)) => Some((
                    CaseId::parse(&record.case_id)
                        .map_err(|e| StoreError::Corrupt(format!("case id: {e}")))?,
                    true,
                )),
                Some(CaseWrite::Sighting { case_id, .. }) => Some((*case_id, false)),
                None => None,
            };
            match r.case {
                Some(CaseWrite::Open(record, keys)) => {
                    let case_id = CaseId::parse(&record.case_id)
                        .map_err(|e| StoreError::Corrupt(format!("case id: {e}")))?;
                    for (i, l) in record.locations.iter().enumerate() {
                        if l.deadline_ms > 0 {
                            batch.insert(deadline_key(l.deadline_ms, &case_id, i as u32), &[][..]);
                        }
                    }
                    self.stage_case_keys(batch, &case_id, &r.id, &keys);
                    self.bump("cases");
                    self.group_cases.insert(case_id, *record);
                }
                Some(CaseWrite::Sighting {
                    case_id,
                    first_report,
                    matched_by,
                    keys,
                    assessment,
                    new_location,
                    notices,
                }) => match self.load_case(&case_id)? {
                    Some(mut rec) => {
                        rec.sightings += 1;
                        let origin = r.origin.clone();
                        if let Some(a) = assessment {
                            rec.assessment = a as i32;
                            self.stage_history(
                                batch,
                                &first_report,
                                now,
                                "assessment",
                                &origin,
                                format!(
                                    "report {} assessed case {case_id} graver: {}",
                                    r.id,
                                    a.as_str_name()
                                ),
                            );
                        }
                        for (at, n) in notices {
                            let Some(l) = rec.locations.get_mut(at as usize) else {
                                continue;
                            };
                            if l.deadline_ms > 0 {
                                batch.remove(deadline_key(l.deadline_ms, &case_id, at));
                            }
                            n.apply(l, &r.id, now);
                            batch.insert(deadline_key(l.deadline_ms, &case_id, at), &[][..]);
                            self.stage_history(
                                batch,
                                &first_report,
                                now,
                                "notice",
                                &origin,
                                format!(
                                    "report {} made case {case_id} illegal everywhere: notice asked at location {at}, deadline {}",
                                    r.id,
                                    meldnet_core::time::rfc3339(n.deadline_ms)
                                ),
                            );
                        }
                        if let Some(l) = new_location {
                            let at = rec.locations.len() as u32;
                            if l.deadline_ms > 0 {
                                batch.insert(deadline_key(l.deadline_ms, &case_id, at), &[][..]);
                            }
                            self.stage_history(
                                batch,
                                &first_report,
                                now,
                                "location",
                                &origin,
                                format!(
                                    "report {} brought location {at} (hosted in {}) to case {case_id}{}",
                                    r.id,
                                    if l.hosting_country.is_empty() { "no country that takes part" } else { &l.hosting_country },
                                    if l.deadline_ms > 0 { format!("; notice asked, deadline {}", meldnet_core::time::rfc3339(l.deadline_ms)) } else { String::new() }
                                ),
                            );
                            rec.locations.push(*l);
                        }
                        batch.insert(
                            key_with(SIGHTING, &[case_id.as_bytes(), r.id.as_bytes()]),
                            &[][..],
                        );
                        self.stage_case_keys(batch, &case_id, &r.id, &keys);
                        self.stage_history(
                            batch,
                            &first_report,
                            now,
                            "sighting",
                            &r.origin.clone(),
                            format!(
                                "report {} joined case {case_id} (matched by {matched_by})",
                                r.id
                            ),
                        );
                        self.bump("sightings");
                        self.group_cases.insert(case_id, rec);
                    }
                    None => {
                        tracing::error!(%case_id, report = %r.id, "sighting of a case that is not stored; stored without it")
                    }
                },
                None => {}
            }
            if let Some((case_id, opened)) = placed {
                self.stage_series_matches(batch, &r.id, &case_id, opened, &r.series)?;
            }
            audit_lines.push(format!("{} {}", r.id, r.summary));
            origin.get_or_insert(r.origin);
            in_group.insert(r.id, r.stored);
            out.push(Committed::New);
        }
        if let Some(origin) = origin {
            let subject = format!("{} reports", audit_lines.len());
            self.stage_audit(
                batch,
                event(
                    self.clock.now_ms(),
                    "submitted",
                    &origin,
                    subject,
                    audit_lines.join("\n"),
                ),
            );
        }
        Ok(out)
    }

    /// Removes acknowledged and refused entries from `recipient`'s queue;
    /// returns the sequence numbers asked for (an entry already gone was
    /// settled before).
    fn stage_ack(
        &mut self,
        batch: &mut sled::Batch,
        recipient: &SpiffeId,
        seqs: &[u64],
        rejected: &[(u64, String)],
    ) -> Result<Vec<u64>, StoreError> {
        let prefix = queue_prefix(recipient);
        let mut removed = Vec::new();
        let mut refused = Vec::new();
        let asked = seqs
            .iter()
            .map(|s| (*s, None))
            .chain(rejected.iter().map(|(s, why)| (*s, Some(why.as_str()))));
        let mut settled = Vec::with_capacity(seqs.len() + rejected.len());
        let mut seen = std::collections::HashSet::new();
        for (seq, why) in asked {
            // Each entry once: named twice (acknowledged and refused, or
            // twice over) it is settled by its first mention.
            if !seen.insert(seq) {
                continue;
            }
            settled.push(seq);
            let k = queue_key(&prefix, seq);
            let Some(id) = self.tree.get(&k)? else {
                continue;
            };
            batch.remove(k);
            let report = ReportId::from_bytes(id16(&id, "queue entry")?);
            let now = self.clock.now_ms();
            match why {
                None => {
                    self.stage_history(
                        batch,
                        &report,
                        now,
                        "acknowledged",
                        recipient,
                        format!("queue entry {seq}"),
                    );
                    removed.push(format!("{seq}:{report}"));
                }
                Some(why) => {
                    self.stage_history(
                        batch,
                        &report,
                        now,
                        "refused",
                        recipient,
                        format!("queue entry {seq}: {why}"),
                    );
                    self.bump("deliveries_refused");
                    metrics::counter!("meldnet_deliveries_refused_total").increment(1);
                    refused.push(format!("{seq}:{report}: {why}"));
                }
            }
        }
        for (kind, lines) in [("acknowledged", removed), ("refused", refused)] {
            if !lines.is_empty() {
                self.stage_audit(
                    batch,
                    event(
                        self.clock.now_ms(),
                        kind,
                        recipient,
                        recipient.to_string(),
                        lines.join(","),
                    ),
                );
            }
        }
        Ok(settled)
    }

    fn stage_list(&mut self, batch: &mut sled::Batch, write: ListWrite) {
        let (Some(first), Some(last)) = (write.changes.first(), write.changes.last()) else {
            return;
        };
        let subject = format!("list versions {}..={}", first.tip.version, last.tip.version);
        for c in &write.changes {
            batch.insert(&list_key(c.tip.version)[..], c.to_value());
        }
        let mut tip = last.tip.version.to_be_bytes().to_vec();
        tip.extend_from_slice(&last.tip.count.to_be_bytes());
        tip.extend_from_slice(&last.tip.digest);
        batch.insert(META_LIST_TIP, tip);
        self.stage_audit(
            batch,
            event(
                self.clock.now_ms(),
                "list",
                &write.actor,
                subject,
                write.lines.join("\n"),
            ),
        );
    }

    fn stage_audit(&mut self, batch: &mut sled::Batch, ev: pb::AuditEvent) {
        let seq = self.head.next_seq;
        let rec = self.head.append(&ev);
        let body = BlobFile::stage_message(&mut self.blob_buf, self.blob_end, &rec);
        batch.insert(&audit_key(seq)[..], &body.to_bytes()[..]);
    }

    fn stage_meta(&self, batch: &mut sled::Batch) {
        let mut head = self.head.next_seq.to_be_bytes().to_vec();
        head.extend_from_slice(&self.head.hash);
        batch.insert(META_AUDIT_HEAD, head);
        batch.insert(META_QUEUE_SEQ, &self.next_queue_seq.to_be_bytes()[..]);
        batch.insert(META_BLOB_END, &self.blob_end.to_be_bytes()[..]);
        batch.insert(META_HIST_SEQ, &self.next_hist.to_be_bytes()[..]);
        for (name, n) in &self.group_counts {
            batch.insert(key_with(STAT, &[name.as_bytes()]), &n.to_be_bytes()[..]);
        }
        for (id, rec) in &self.group_cases {
            batch.insert(case_key(id), rec.encode_to_vec());
        }
    }

    /// Adds one to a statistics counter (stored with the group).
    fn bump(&mut self, name: &str) {
        let n = self
            .group_counts
            .get(name)
            .or_else(|| self.counts.get(name))
            .copied()
            .unwrap_or(0);
        self.group_counts.insert(name.to_string(), n + 1);
    }

    /// A case as this group sees it.
    fn load_case(&self, id: &CaseId) -> Result<Option<pb::CaseRecord>, StoreError> {
        if let Some(c) = self.group_cases.get(id) {
            return Ok(Some(c.clone()));
        }
        self.tree
            .get(case_key(id))?
            .map(|v| decode_case(&v))
            .transpose()
    }

    /// One record of the keys a report brought to its case (none if it
    /// brought none), in the blob file like every larger value: sled's
    /// cost grows with the bytes it keeps in its nodes.
    fn stage_case_keys(
        &mut self,
        batch: &mut sled::Batch,
        case_id: &CaseId,
        report: &ReportId,
        keys: &CaseKeys,
    ) {
        if keys.urls.is_empty() && keys.files.is_empty() && keys.pdqs.is_empty() {
            return;
        }
        let record = pb::CaseKeysRecord {
            case_id: case_id.as_bytes().to_vec(),
            urls: keys.urls.iter().map(|u| u.to_vec()).collect(),
            files: keys.files.iter().map(|f| f.0.to_vec()).collect(),
            pdqs: keys.pdqs.iter().map(|(h, _)| h.0.to_vec()).collect(),
            pdq_qualities: keys.pdqs.iter().map(|(_, q)| *q).collect(),
        };
        let body = BlobFile::stage_message(&mut self.blob_buf, self.blob_end, &record);
        batch.insert(
            key_with(CASE_KEYS, &[report.as_bytes()]),
            &body.to_bytes()[..],
        );
    }

    fn stage_history(
        &mut self,
        batch: &mut sled::Batch,
        report: &ReportId,
        at_ms: i64,
        kind: &str,
        actor: &SpiffeId,
        detail: String,
    ) {
        let seq = self.next_hist;
        self.next_hist += 1;
        let ev = pb::HistoryEvent {
            at_ms,
            kind: kind.into(),
            actor: actor.to_string(),
            detail,
        };
        let body = BlobFile::stage_message(&mut self.blob_buf, self.blob_end, &ev);
        batch.insert(
            key_with(HISTORY, &[report.as_bytes(), &seq.to_be_bytes()]),
            &body.to_bytes()[..],
        );
    }

    fn stage_step(
        &mut self,
        batch: &mut sled::Batch,
        w: StepWrite,
    ) -> Result<StepOutcome, StoreError> {
        let case_id = w.step.case_id;
        let Some(mut rec) = self.load_case(&case_id)? else {
            return Ok(StepOutcome::NoCase);
        };
        let step_id = w.step.step_id.to_string();
        for old in rec.locations.iter().flat_map(|l| &l.steps) {
            let Some(signed) = &old.signed else { continue };
            if let Ok(s) = CaseStep::decode(&signed.step) {
                if s.step_id.to_string() == step_id {
                    return Ok(if signed.step == w.signed.step {
                        StepOutcome::Duplicate(Box::new(rec))
                    } else {
                        StepOutcome::Conflict
                    });
                }
            }
        }
        let at = w.received_at_ms;
        let location = w.step.location;
        let Some(loc) = rec.locations.get_mut(location as usize) else {
            return Ok(StepOutcome::NoCase);
        };
        match w.step.kind {
            StepKind::NoticeSent => loc.provider = w.step.provider.as_ref().map(|p| p.to_proto()),
            StepKind::Removed => {
                if loc.removed_at_ms == 0 {
                    loc.removed_at_ms = at;
                }
                // In time: the deadline is met. Late: left for the watcher,
                // which escalates a missed deadline exactly once.
                if loc.deadline_ms > 0 && at <= loc.deadline_ms {
                    batch.remove(deadline_key(loc.deadline_ms, &case_id, location));
                }
            }
            StepKind::NotRemoved => loc.not_removed = true,
            StepKind::Reappeared => {
                loc.removed_at_ms = 0;
                loc.not_removed = false;
                if loc.deadline_ms > 0 {
                    batch.remove(deadline_key(loc.deadline_ms, &case_id, location));
                }
                if w.reappear_deadline_ms > 0 {
                    loc.deadline_ms = w.reappear_deadline_ms;
                    batch.insert(deadline_key(loc.deadline_ms, &case_id, location), &[][..]);
                }
            }
        }
        loc.steps.push(pb::StoredStep {
            signed: Some(w.signed),
            received_at_ms: at,
        });
        let line = w.step.describe();
        let first = ReportId::parse(&rec.first_report_id)
            .map_err(|e| StoreError::Corrupt(format!("case first report: {e}")))?;
        self.stage_history(batch, &first, at, "step", &w.actor, line.clone());
        self.stage_audit(
            batch,
            event(at, "case-step", &w.actor, case_id.to_string(), line),
        );
        self.bump(&format!("steps/{}", w.step.kind.name()));
        self.group_cases.insert(case_id, rec.clone());
        Ok(StepOutcome::Stored(Box::new(rec)))
    }

    fn stage_escalation(
        &mut self,
        batch: &mut sled::Batch,
        e: Escalation,
        queued_any: &mut bool,
    ) -> Result<bool, StoreError> {
        let key = deadline_key(e.deadline_ms, &e.case_id, e.location);
        let Some(mut rec) = self.load_case(&e.case_id)? else {
            // A deadline without its case: nothing to escalate, and the
            // watcher must not meet it again.
            tracing::error!(case = %e.case_id, "deadline of a case that is not stored: dropped");
            batch.remove(key);
            return Ok(false);
        };
        let Some(loc) = rec.locations.get_mut(e.location as usize) else {
            tracing::error!(case = %e.case_id, location = e.location, "deadline of a location that is not stored: dropped");
            batch.remove(key);
            return Ok(false);
        };
        let in_time = loc.removed_at_ms > 0 && loc.removed_at_ms <= e.deadline_ms;
        if loc.deadline_ms != e.deadline_ms || loc.escalated_deadline_ms == e.deadline_ms || in_time
        {
            batch.remove(key);
            return Ok(false);
        }
        self.stage_redecision(
            batch,
            &e.id,
            &e.report_id,
            &e.stored,
            &e.recipients,
            queued_any,
        );
        batch.remove(key);
        loc.escalated_deadline_ms = e.deadline_ms;
        loc.escalations.push(e.id.to_string());
        let to: Vec<String> = e.recipients.iter().map(|r| r.to_string()).collect();
        let line = format!(
            "escalation {}: deadline {} of location {} passed without removal; to {}",
            e.id,
            meldnet_core::time::rfc3339(e.deadline_ms),
            e.location,
            if to.is_empty() {
                "nobody registered".into()
            } else {
                to.join(" ")
            }
        );
        let now = self.clock.now_ms();
        self.stage_history(
            batch,
            &e.report_id,
            now,
            "escalated",
            &e.actor,
            line.clone(),
        );
        self.stage_audit(
            batch,
            event(now, "escalated", &e.actor, e.case_id.to_string(), line),
        );
        self.bump("deadlines_missed");
        self.group_cases.insert(e.case_id, rec);
        Ok(true)
    }
}

impl Writer {
    /// A further decision on a stored report (an escalation, a notice at
    /// another location, a split): its body under its id, and a queue
    /// entry per recipient naming the report and that id.
    fn stage_redecision(
        &mut self,
        batch: &mut sled::Batch,
        id: &CaseId,
        report_id: &ReportId,
        stored: &pb::StoredReport,
        recipients: &[SpiffeId],
        queued_any: &mut bool,
    ) {
        let body = BlobFile::stage_message(&mut self.blob_buf, self.blob_end, stored);
        batch.insert(key_with(ESCALATION, &[id.as_bytes()]), &body.to_bytes()[..]);
        let mut value = report_id.as_bytes().to_vec();
        value.extend_from_slice(id.as_bytes());
        for recipient in recipients {
            let seq = self.next_queue_seq;
            self.next_queue_seq += 1;
            batch.insert(queue_key(&queue_prefix(recipient), seq), value.clone());
            *queued_any = true;
        }
    }

    fn stage_split(
        &mut self,
        batch: &mut sled::Batch,
        w: SplitWrite,
        queued_any: &mut bool,
    ) -> Result<bool, StoreError> {
        let sighting = key_with(SIGHTING, &[w.from.as_bytes(), w.report_id.as_bytes()]);
        let Some(mut from) = self.load_case(&w.from)? else {
            return Ok(false);
        };
        if !self.tree.contains_key(&sighting)? {
            return Ok(false);
        }
        let new_id = CaseId::parse(&w.record.case_id)
            .map_err(|e| StoreError::Corrupt(format!("case id: {e}")))?;
        batch.remove(sighting);
        from.sightings = from.sightings.saturating_sub(1);
        if let Some(l) = from.locations.get_mut(w.from_location as usize) {
            if l.deadline_ms > 0 {
                batch.remove(deadline_key(l.deadline_ms, &w.from, w.from_location));
            }
            l.moved_to_case_id = new_id.to_string();
        }
        for (i, l) in w.record.locations.iter().enumerate() {
            if l.deadline_ms > 0 {
                batch.insert(deadline_key(l.deadline_ms, &new_id, i as u32), &[][..]);
            }
        }
        self.stage_case_keys(batch, &new_id, &w.report_id, &w.keys);
        self.stage_redecision(
            batch,
            &w.decision_id,
            &w.report_id,
            &w.stored,
            &w.recipients,
            queued_any,
        );
        let now = self.clock.now_ms();
        let line = format!(
            "report {} split out of case {} (location {}) into case {new_id} by {}: {}",
            w.report_id, w.from, w.from_location, w.actor, w.reason
        );
        let first = ReportId::parse(&from.first_report_id)
            .map_err(|e| StoreError::Corrupt(format!("case first report: {e}")))?;
        self.stage_history(batch, &w.report_id, now, "split", &w.actor, line.clone());
        self.stage_history(batch, &first, now, "split", &w.actor, line.clone());
        self.stage_audit(
            batch,
            event(now, "case-split", &w.actor, w.from.to_string(), line),
        );
        self.bump("cases");
        self.group_cases.insert(w.from, from);
        self.group_cases.insert(new_id, w.record);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    fn new_report(bytes: &[u8], recipients: &[&str]) -> NewReport {
        NewReport {
            id: ReportId::new_v7(),
            stored: pb::StoredReport {
                report: Some(pb::SignedReport {
                    report: bytes.to_vec(),
                    signature: vec![1; 64],
                    key_id: "00".repeat(8),
                }),
                decision: None,
                received_at_ms: 1,
            },
            recipients: recipients.iter().map(|r| id(r)).collect(),
            origin: id("spiffe://t.test/node/NL"),
            summary: "test".into(),
            case: None,
            counts: vec![],
            extra: vec![],
            series: vec![],
        }
    }

    /// Sets up a series linked to a representative with a weekly digest
    /// and returns the notification the notifier would queue next.
    async fn series_with_a_digest_due(store: &Store) -> (SeriesOp, SeriesOp, SpiffeId) {
        use meldnet_core::series::{NotificationId, Period, Preference, SeriesHashes, SeriesId};
        let police = id("spiffe://t.test/agency/DE/bka");
        let rep = id("spiffe://t.test/representative/DE/weisser");
        let s = SeriesId::random();
        let ops = [
            SeriesOp::Register {
                id: s,
                owner: police.clone(),
                hashes: SeriesHashes::default(),
            },
            SeriesOp::Link {
                id: s,
                actor: police.clone(),
                representative: rep.clone(),
            },
            SeriesOp::SetPreference {
                id: s,
                actor: rep.clone(),
                preference: Preference::Digest {
                    period: Period::Week,
                    cap: 2,
                },
            },
        ];
        for op in ops {
            store.series(op).await.unwrap();
        }
        let state = store.digest_state(&s).unwrap().unwrap();
        let (_, set_at_ms) = store.preference(&s).unwrap().unwrap();
        let nid = NotificationId::new_v7();
        let n = pb::Notification {
            notification_id: nid.to_string(),
            series_id: s.to_string(),
            representative: rep.to_string(),
            ..Default::default()
        };
        let key = meldnet_core::signing::SigningKey::generate();
        let notify = SeriesOp::Notify(Box::new(Outgoing {
            id: nid,
            series: s,
            representative: rep.clone(),
            signed: meldnet_core::series::sign_notification(&key, &n),
            why: Why::Digest {
                from: state.from_ms,
                to: state.from_ms + 1,
                period_start: state.from_ms,
                number: 1,
                set_at_ms,
            },
            actor: id("spiffe://t.test/hub"),
        }));
        let withdraw = SeriesOp::SetPreference {
            id: s,
            actor: rep.clone(),
            preference: Preference::Never,
        };
        (notify, withdraw, rep)
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_withdrawal_and_a_notification_never_meet_in_one_group() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let queued = |rep: &SpiffeId| store.queue_after(rep, 0, 100, 1 << 20).unwrap().0.len();
        // Alone, the notification goes: the set-up is one that notifies.
        let (notify, withdraw, rep) = series_with_a_digest_due(&store).await;
        assert!(matches!(
            store.series(notify).await.unwrap(),
            SeriesOutcome::Queued(true)
        ));
        assert_eq!(queued(&rep), 1);
        store.series(withdraw).await.unwrap();
        assert_eq!(queued(&rep), 0, "withdrawing dropped the queued digest");
        // Handed to the writer together, in either order, while it waits:
        // they would have been staged in one group.
        for withdrawal_first in [true, false] {
            let (notify, withdraw, rep) = series_with_a_digest_due(&store).await;
            let (gate, wait) = std_mpsc::channel();
            store.writer.send(WriteOp::Gate(wait)).unwrap();
            let (a, b) = if withdrawal_first {
                (withdraw, notify)
            } else {
                (notify, withdraw)
            };
            let first = tokio::spawn({
                let store = store.clone();
                async move { store.series(a).await }
            });
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let second = tokio::spawn({
                let store = store.clone();
                async move { store.series(b).await }
            });
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            drop(gate);
            first.await.unwrap().unwrap();
            second.await.unwrap().unwrap();
            assert_eq!(
                queued(&rep),
                0,
                "withdrawal first: {withdrawal_first}: a notification outlived the withdrawal"
            );
        }
    }

    #[tokio::test]
    async fn commit_is_idempotent_and_refuses_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let r = new_report(b"one", &["spiffe://t.test/agency/DE/bka"]);
        let out = store.commit_reports(vec![r.clone()]).await.unwrap();
        assert!(matches!(out[0], Committed::New));
        let before = store.state_digest().unwrap();
        let out = store.commit_reports(vec![r.clone()]).await.unwrap();
        assert!(matches!(out[0], Committed::Duplicate(_)));
        let mut other = r.clone();
        other.stored.report.as_mut().unwrap().report = b"two".to_vec();
        let out = store.commit_reports(vec![other]).await.unwrap();
        assert!(matches!(out[0], Committed::Conflict));
        assert_eq!(store.state_digest().unwrap(), before);
        // The same id twice in one batch: the second is a duplicate, stored once.
        let r2 = new_report(b"three", &[]);
        let out = store.commit_reports(vec![r2.clone(), r2]).await.unwrap();
        assert!(matches!(out[0], Committed::New));
        assert!(matches!(out[1], Committed::Duplicate(_)));
        assert_eq!(store.state_digest().unwrap().reports, 2);
    }

    #[tokio::test]
    async fn queues_are_per_recipient_and_acks_only_touch_the_own_queue() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let de = id("spiffe://t.test/agency/DE/bka");
        let fr = id("spiffe://t.test/agency/FR/police");
        let a = new_report(b"a", &["spiffe://t.test/agency/DE/bka"]);
        let b = new_report(
            b"b",
            &[
                "spiffe://t.test/agency/FR/police",
                "spiffe://t.test/agency/DE/bka",
            ],
        );
        store.commit_reports(vec![a, b]).await.unwrap();
        let (de_q, more) = store.queue_after(&de, 0, 10, usize::MAX).unwrap();
        assert_eq!(de_q.len(), 2);
        assert!(!more);
        // A byte budget smaller than one record still lets one entry through.
        let (page, more) = store.queue_after(&de, 0, 10, 1).unwrap();
        assert_eq!(page.len(), 1);
        assert!(more);
        let (fr_q, _) = store.queue_after(&fr, 0, 10, usize::MAX).unwrap();
        assert_eq!(fr_q.len(), 1);
        let fr_seq = fr_q[0].seq;
        // DE acknowledging FR's sequence number changes nothing of FR's queue.
        store.ack(&de, vec![fr_seq]).await.unwrap();
        assert_eq!(
            store.queue_after(&fr, 0, 10, usize::MAX).unwrap().0.len(),
            1
        );
        let de_seqs: Vec<u64> = de_q.iter().map(|e| e.seq).collect();
        store.ack(&de, de_seqs).await.unwrap();
        assert!(store
            .queue_after(&de, 0, 10, usize::MAX)
            .unwrap()
            .0
            .is_empty());
        // Paging: limit and "more".
        let (page, more) = store.queue_after(&fr, 0, 0, usize::MAX).unwrap();
        assert!(page.is_empty() && more);
    }

    #[tokio::test]
    async fn audit_chain_survives_reopen_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .commit_reports(vec![new_report(b"x", &["spiffe://t.test/node/DE"])])
                .await
                .unwrap();
            store
                .ack(&id("spiffe://t.test/node/DE"), vec![1])
                .await
                .unwrap();
            assert_eq!(store.verify_audit().unwrap().next_seq, 2);
        }
        // sled releases its lock when the last handle (the writer thread's) drops.
        let mut reopened = Store::open(dir.path());
        for _ in 0..100 {
            if reopened.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            reopened = Store::open(dir.path());
        }
        let store = reopened.unwrap();
        store
            .commit_reports(vec![new_report(b"y", &[])])
            .await
            .unwrap();
        assert_eq!(store.verify_audit().unwrap().next_seq, 3);
    }
}
