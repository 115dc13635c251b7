//! The hub's storage: one handle ([`Store`]) in the hub's own words, over
//! one seam ([`seam::Backend`]) so that a replicated store can stand where
//! the embedded one stands.
//!
//! - `seam`: the traits a backend implements (committed reads, groups of
//!   writes) and the words they speak (queue items, counters, the parts
//!   of the state digest).
//! - `pipeline`: group commit, the same on every backend: one writer
//!   stages every pending operation into one group and applies it; the
//!   flusher makes it durable and only then answers. Nothing is
//!   acknowledged before it is durable.
//! - `reports`, `queues`, `cases`, `series`, `list`: the rules, written
//!   once above the seam (idempotent receipts, settling only one's own
//!   queue, escalate once, a step stored once, the digest's cap,
//!   withdrawal).
//! - `retention`: what a retention pass may erase, and what it never
//!   touches (anything still queued, an open case, the report a location
//!   stands on).
//! - `history`: a report's history: what is kept with it, and its
//!   deliveries and acknowledgements, read from the audit log.
//! - `digest`: the state digest in the hub's terms.
//! - `sled`: the embedded backend; its layout stays inside it.
//! - `suite`: the behavioural tests every backend passes.

mod cases;
mod digest;
mod history;
mod list;
mod pipeline;
mod queues;
mod reports;
mod retention;
pub mod seam;
mod series;
pub mod sled;
#[cfg(test)]
pub(crate) mod suite;
mod types;
mod usage;

pub use cases::{location_state, noticed_or_opened};
pub use pipeline::{yield_to_the_writer, Setting};
pub use retention::{settled, Expired, RetentionPolicy};
pub use seam::{Backend, Delivered, QueueItem};
pub use series::{sent_in, Outgoing, Why};
pub use types::*;
pub use usage::{KindUsage, Usage};

use crate::cases::{CaseError, CaseIndex, CaseSource, PdqRuns};
use meldnet_core::time::Clock;
use meldnet_core::CaseId;
use meldnet_core::ReportId;
use meldnet_core::SpiffeId;
use meldnet_core::{verify_chain, ChainHead};
use meldnet_core::{Preference, SeriesHashes, SeriesId};
use meldnet_proto::v1 as pb;
use pipeline::{event, WriteOp};
use prost::Message;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use tokio::sync::{oneshot, watch};

/// Storage failures. A failing disk or a stopping writer is `UNAVAILABLE`
/// (the client may retry, and retrying is safe because every write is
/// idempotent); damaged stored bytes are `DATA_LOSS`, which no retry mends.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend failed in a way a retry may mend.
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

impl From<crate::cases::DamagedCase> for StoreError {
    fn from(e: crate::cases::DamagedCase) -> Self {
        StoreError::Corrupt(e.0)
    }
}

impl From<CaseError> for StoreError {
    fn from(e: CaseError) -> Self {
        match e {
            CaseError::Damaged(d) => StoreError::Corrupt(d.0),
            CaseError::Unavailable(m) => StoreError::Io(m),
        }
    }
}

impl From<StoreError> for CaseError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Corrupt(m) => CaseError::Damaged(crate::cases::DamagedCase(m)),
            e => CaseError::Unavailable(e.to_string()),
        }
    }
}

/// What the case index reads: the store's committed cases and keys, and
/// how far the pipeline has applied placements and made keys durable.
impl CaseSource for Store {
    fn case_record(&self, id: &CaseId) -> Result<Option<pb::CaseRecord>, CaseError> {
        Ok(self.backend.case(id)?)
    }

    fn case_of_key(&self, key: &ExactKey) -> Result<Option<CaseId>, CaseError> {
        Ok(self.backend.case_of_key(key)?)
    }

    fn case_keys_since(
        &self,
        after: u64,
        f: &mut dyn FnMut(pb::CaseKeysRecord) -> Result<bool, CaseError>,
    ) -> Result<(), CaseError> {
        let mut failed = None;
        self.backend
            .case_keys_since(after, &mut |rec| match f(rec) {
                Ok(go) => Ok(go),
                Err(e) => {
                    failed = Some(e);
                    Ok(false)
                }
            })?;
        failed.map_or(Ok(()), Err)
    }

    fn applied_placement(&self) -> u64 {
        self.progress.applied_placement.load(Ordering::Acquire)
    }

    fn durable_placement(&self) -> u64 {
        self.progress.durable_placement.load(Ordering::Acquire)
    }

    fn durable_keys_seq(&self) -> u64 {
        self.progress.durable_keys_seq.load(Ordering::Acquire)
    }
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

/// How an embedded store is opened: what it must leave free on its disk
/// (new reports are refused below it; 0: no check), how much memory its
/// page cache may take, and how many changes it holds in memory before a
/// checkpoint writes them to disk (0: the backend's own defaults).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreOptions {
    /// Bytes that must stay free on the store's file system.
    pub min_free: u64,
    /// Bytes of page cache.
    pub cache_bytes: u64,
    /// Changes held in memory between checkpoints.
    pub checkpoint_entries: usize,
}

/// The hub's store: the commit pipeline over one backend. Cheap to clone.
/// Committed reads are the backend's ([`seam::Reads`], through `Deref`);
/// the reads here add the rules that hold on every backend.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    /// How far the pipeline has got: what the case index asks.
    progress: Arc<pipeline::Progress>,
    writer: std_mpsc::Sender<WriteOp>,
    generation: watch::Receiver<u64>,
    /// Queue entries held back for a damaged body, recorded once each.
    held_back: Arc<std::sync::Mutex<std::collections::HashSet<u64>>>,
}

impl std::ops::Deref for Store {
    type Target = dyn seam::Reads;

    fn deref(&self) -> &Self::Target {
        self.backend.reads()
    }
}

impl Store {
    /// Opens (or creates) the embedded store in `dir` on the system clock.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Self::open_with_clock(dir, Arc::new(Clock::system()))
    }

    /// Opens (or creates) the embedded store in `dir`; audit records are
    /// stamped by `clock`.
    pub fn open_with_clock(dir: &Path, clock: Arc<Clock>) -> Result<Store, StoreError> {
        Self::open_with(dir, clock, StoreOptions::default())
    }

    /// As [`open_with_clock`](Self::open_with_clock), with the room it
    /// must leave on disk and the memory it may cache in.
    pub fn open_with(
        dir: &Path,
        clock: Arc<Clock>,
        options: StoreOptions,
    ) -> Result<Store, StoreError> {
        Self::start(Arc::new(sled::SledBackend::open(dir, options)?), clock)
    }

    /// Starts the commit pipeline over `backend`.
    pub fn start(backend: Arc<dyn Backend>, clock: Arc<Clock>) -> Result<Store, StoreError> {
        let (writer, generation, progress) = pipeline::start(backend.clone(), clock)?;
        Ok(Store {
            backend,
            progress,
            writer,
            generation,
            held_back: Arc::default(),
        })
    }

    /// Hands an operation to the writer now (commits happen in the order
    /// they are handed over) and returns the wait for its answer, which
    /// comes only after the group it joined is durable.
    fn send<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> WriteOp,
    ) -> Result<impl std::future::Future<Output = Result<T, StoreError>>, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(op(tx))
            .map_err(|_| StoreError::WriterGone)?;
        Ok(async move { rx.await.map_err(|_| StoreError::WriterGone)? })
    }

    /// Stores reports, their decisions and queue entries, and answers only
    /// after the flush. Same id and bytes as stored: the stored record.
    pub async fn commit_reports(
        &self,
        reports: Vec<NewReport>,
    ) -> Result<Vec<Committed>, StoreError> {
        self.send_reports(reports)?.await
    }

    /// Hands reports to the writer now and returns the wait for their flush.
    pub fn send_reports(
        &self,
        reports: Vec<NewReport>,
    ) -> Result<impl std::future::Future<Output = Result<Vec<Committed>, StoreError>>, StoreError>
    {
        self.send(|tx| WriteOp::Reports(reports, tx))
    }

    /// Stores a case step (after the caller checked who may record it) and
    /// answers after the flush.
    pub async fn record_step(&self, write: StepWrite) -> Result<StepOutcome, StoreError> {
        self.send(|tx| WriteOp::Step(write, tx))?.await
    }

    /// Stores an escalation and queues it, unless the case was removed in
    /// time or this deadline was escalated already (then false).
    pub async fn escalate(&self, e: Escalation) -> Result<bool, StoreError> {
        self.send(|tx| WriteOp::Escalate(e, tx))?.await
    }

    /// Hands a split to the writer now (after the reports handed before,
    /// before those handed after) and returns the wait for its flush:
    /// false when the report is no longer a sighting of the case.
    pub fn send_split(
        &self,
        w: SplitWrite,
    ) -> Result<impl std::future::Future<Output = Result<bool, StoreError>>, StoreError> {
        self.send(|tx| WriteOp::Split(Box::new(w), tx))
    }

    /// The deconfliction keys `report` brought to its case.
    pub fn case_keys(&self, report: &ReportId) -> Result<CaseKeys, StoreError> {
        match self.backend.case_keys_of(report)? {
            Some(r) => reports::keys_of_record(&r).map(|(_, keys)| keys),
            None => Ok(CaseKeys::default()),
        }
    }

    /// Deconfliction's index over what is stored, its PDQ runs in `runs`.
    pub fn case_index(&self, runs: PdqRuns) -> Result<CaseIndex, StoreError> {
        Ok(CaseIndex::open(Arc::new(self.clone()), runs)?)
    }

    /// Stores a setting with an audit record, flushed before the answer.
    pub async fn set(
        &self,
        setting: Setting,
        actor: &SpiffeId,
        subject: String,
        detail: String,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let ev = event(at_ms, "setting", actor, subject, detail);
        self.send(|tx| WriteOp::Setting(setting, ev, tx))?.await
    }

    /// Registers a new series of `owner` (a police agency) with its
    /// hashes; answers the series after the flush.
    pub async fn register_series(
        &self,
        id: SeriesId,
        owner: &SpiffeId,
        hashes: SeriesHashes,
    ) -> Result<pb::SeriesView, StoreError> {
        let owner = owner.clone();
        self.send(|tx| WriteOp::RegisterSeries(id, owner, hashes, tx))?
            .await
    }

    /// Adds hashes to a series, if `actor` registered it.
    pub async fn add_series_hashes(
        &self,
        id: SeriesId,
        actor: &SpiffeId,
        hashes: SeriesHashes,
    ) -> Result<Refused<pb::SeriesView>, StoreError> {
        let actor = actor.clone();
        self.send(|tx| WriteOp::AddHashes(id, actor, hashes, tx))?
            .await
    }

    /// Links a series to a victim's representative, if `actor` registered it.
    pub async fn link_series(
        &self,
        id: SeriesId,
        actor: &SpiffeId,
        representative: &SpiffeId,
    ) -> Result<Refused<pb::SeriesView>, StoreError> {
        let (actor, rep) = (actor.clone(), representative.clone());
        self.send(|tx| WriteOp::Link(id, actor, rep, tx))?.await
    }

    /// Sets the victim's choice, if `actor` is the series' representative.
    pub async fn set_preference(
        &self,
        id: SeriesId,
        actor: &SpiffeId,
        preference: Preference,
    ) -> Result<Refused<pb::Preference>, StoreError> {
        let actor = actor.clone();
        self.send(|tx| WriteOp::SetPreference(id, actor, preference, tx))?
            .await
    }

    /// Marks a case as in legal proceedings; false when it was marked before.
    pub async fn mark_proceedings(
        &self,
        case: CaseId,
        agency: &SpiffeId,
    ) -> Result<Refused<bool>, StoreError> {
        let agency = agency.clone();
        self.send(|tx| WriteOp::Proceedings(case, agency, tx))?
            .await
    }

    /// Queues a signed notification if the choice in force still wants it
    /// (the representative, the choice, the digest's cap: checked in the
    /// writer, in the group that queues it); false when it is not wanted.
    pub async fn notify(&self, out: Outgoing) -> Result<bool, StoreError> {
        self.send(|tx| WriteOp::Notify(Box::new(out), tx))?.await
    }

    /// A digest with nothing to say: counting starts again at `to`, if it
    /// still stands at `from`.
    pub async fn advance_digest(&self, id: SeriesId, from: i64, to: i64) -> Result<(), StoreError> {
        self.send(|tx| WriteOp::DigestAdvance(id, from, to, tx))?
            .await
    }

    /// New cases and sightings of a series recorded in `[from, to)`.
    pub fn series_counts(
        &self,
        id: &SeriesId,
        from: i64,
        to: i64,
    ) -> Result<(u64, u64), StoreError> {
        let matches = self.backend.series_matches(id, from, to)?;
        let opened = matches.iter().filter(|m| m.opened).count() as u64;
        Ok((opened, matches.len() as u64 - opened))
    }

    /// Removes acknowledged entries from `recipient`'s queue (only its own)
    /// and answers after the flush: the seqs now acknowledged, including
    /// ones acknowledged before.
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
        self.send(|tx| WriteOp::Ack(recipient.clone(), seqs, rejected, tx))?
            .await
    }

    /// Stores changes of the known-hash list and their audit record, and
    /// answers only after the flush.
    pub async fn commit_list(&self, write: ListWrite) -> Result<(), StoreError> {
        self.send(|tx| WriteOp::List(write, tx))?.await
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
        self.send(|tx| WriteOp::Audit(ev, tx))?.await
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
    /// `max_bytes` of stored records. Also says whether more entries
    /// follow. An entry whose body is damaged is held back (and stays
    /// queued); the rest flows.
    pub fn queue_after(
        &self,
        recipient: &SpiffeId,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<QueueEntry>, bool), StoreError> {
        let (page, more) = self
            .backend
            .queue_page(recipient, after, limit, max_bytes)?;
        let mut out = Vec::with_capacity(page.len());
        for (seq, report_id, body) in page {
            match body {
                Ok(Delivered::Report(stored)) => out.push(QueueEntry {
                    seq,
                    report_id,
                    stored,
                    notification: None,
                }),
                Ok(Delivered::Notification(n)) => out.push(QueueEntry {
                    seq,
                    report_id,
                    stored: pb::StoredReport::default(),
                    notification: Some(n),
                }),
                Err(why) => self.hold_back(recipient, seq, report_id, why),
            }
        }
        Ok((out, more))
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

    /// Digest and counts of everything stored, in the hub's terms: equal
    /// digests, equal state, whatever the backend.
    pub fn state_digest(&self) -> Result<StateDigest, StoreError> {
        digest::state_digest(self.backend.reads())
    }

    /// What the store holds, kind by kind (reads everything: for a
    /// stopped hub, `meldnet-hub store usage`).
    pub fn usage(&self) -> Result<Usage, StoreError> {
        usage::usage(self.backend.reads())
    }

    /// Every audit event with its sequence number, in order (for reading
    /// the log; `verify_audit` checks the chain).
    pub fn audit_events(&self) -> Result<Vec<(u64, pb::AuditEvent)>, StoreError> {
        self.backend
            .audit_records()?
            .iter()
            .map(|body| {
                let rec = pb::AuditRecord::decode(body.as_slice())
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
        let records = self.backend.audit_records().map_err(|e| e.to_string())?;
        let head = verify_chain(records).map_err(|e| e.to_string())?;
        let stored = self
            .backend
            .audit_head()
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        if head != stored {
            return Err("the stored audit head does not match the end of the chain (records removed at the end?)".into());
        }
        Ok(head)
    }

    /// Makes everything durable (used at shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.backend.make_durable()
    }

    /// Tests only: the writer waits until `gate` is dropped or sends, so
    /// that operations handed over meanwhile meet in one group.
    #[cfg(test)]
    pub(crate) fn hold_writer(&self, gate: std_mpsc::Receiver<()>) {
        let _ = self.writer.send(WriteOp::Gate(gate));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn each_failure_has_one_code_and_damage_never_says_retry() {
        let cases = [
            (StoreError::Corrupt("report".into()), Code::DataLoss),
            (StoreError::Sled("busy".into()), Code::Unavailable),
            (StoreError::WriterGone, Code::Unavailable),
            (StoreError::Io("sync".into()), Code::Unavailable),
            (StoreError::Full("disk".into()), Code::ResourceExhausted),
            (
                StoreError::from(crate::cases::DamagedCase("case".into())),
                Code::DataLoss,
            ),
        ];
        for (e, code) in cases {
            let s = tonic::Status::from(e.clone());
            assert_eq!(s.code(), code, "{e}");
            if code == Code::DataLoss {
                assert!(!s.message().contains("retry"), "{}", s.message());
                assert!(s.message().contains("store check"), "{}", s.message());
            }
        }
    }
}
