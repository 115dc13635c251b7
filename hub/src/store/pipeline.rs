//! The commit pipeline, the same on every backend: one writer thread takes
//! every pending operation (group commit), stages each by the store's
//! rules into one backend group, and applies the group atomically; the
//! flusher thread then makes it durable and only then answers the
//! callers, which only then answer their clients. Meanwhile the writer
//! goes on with the next group. Nothing is acknowledged before it is
//! durable.

use super::seam::{Backend, Counters, Group, QueueItem};
use super::types::*;
use super::StoreError;
use meldnet_core::time::Clock;
use meldnet_core::CaseId;
use meldnet_core::ReportId;
use meldnet_core::SpiffeId;
use meldnet_core::{Preference, SeriesHashes, SeriesId};
use meldnet_proto::v1 as pb;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use tokio::sync::{oneshot, watch};

/// Most operations folded into one commit.
const MAX_GROUP: usize = 64;

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

/// A setting operators change, stored with its audit record.
#[derive(Debug, Clone)]
pub enum Setting {
    /// The routing rules in force (version, TOML).
    Rules(u64, String),
    /// A party's registration.
    Registration(pb::Registration),
}

type Answer<T> = oneshot::Sender<Result<T, StoreError>>;

pub(super) enum WriteOp {
    Reports(Vec<NewReport>, Answer<Vec<Committed>>),
    Ack(SpiffeId, Vec<u64>, Vec<(u64, String)>, Answer<Vec<u64>>),
    /// A queue entry whose stored body is damaged: recorded once, held back.
    HeldBack(SpiffeId, u64, ReportId, String),
    Delivered(SpiffeId, Vec<(u64, ReportId)>),
    List(ListWrite, Answer<()>),
    Audit(pb::AuditEvent, Answer<()>),
    Setting(Setting, pb::AuditEvent, Answer<()>),
    Step(StepWrite, Answer<StepOutcome>),
    Escalate(Escalation, Answer<bool>),
    Split(Box<SplitWrite>, Answer<bool>),
    RegisterSeries(SeriesId, SpiffeId, SeriesHashes, Answer<pb::SeriesView>),
    AddHashes(
        SeriesId,
        SpiffeId,
        SeriesHashes,
        Answer<Refused<pb::SeriesView>>,
    ),
    Link(
        SeriesId,
        SpiffeId,
        SpiffeId,
        Answer<Refused<pb::SeriesView>>,
    ),
    SetPreference(
        SeriesId,
        SpiffeId,
        Preference,
        Answer<Refused<pb::Preference>>,
    ),
    Proceedings(CaseId, SpiffeId, Answer<Refused<bool>>),
    Notify(Box<Outgoing>, Answer<bool>),
    DigestAdvance(SeriesId, i64, i64, Answer<()>),
    /// A retention pass's erasures, checked again here.
    Expire(super::retention::ExpireWrite, Answer<u64>),
    /// Series' matches recorded before a time (series, before, at, actor).
    ExpireMatches(Vec<SeriesId>, i64, i64, SpiffeId, Answer<u64>),
    /// Tests only: the writer waits here until the sender is dropped or
    /// sends, so that the operations queued meanwhile meet in one group.
    #[cfg(test)]
    Gate(std_mpsc::Receiver<()>),
}

/// A staged operation's answer, sent once its group is durable (or failed).
struct Reply(Box<dyn FnOnce(Result<(), StoreError>) + Send>);

impl Reply {
    /// Answers the caller: its result, or the group's failure.
    fn answer(self, result: Result<(), StoreError>) {
        (self.0)(result)
    }
}

/// A group that is applied and waits to be made durable and answered.
struct Applied {
    replies: Vec<Reply>,
    queued_any: bool,
    /// The newest placement it holds, and the newest keys record (0: none).
    placement: u64,
    keys_seq: u64,
}

/// How far the pipeline has got, for the case index: the newest placement
/// applied (its keys are read back from the store from then on), and the
/// newest placement and keys record made durable (what a run on disk may
/// hold).
#[derive(Debug, Default)]
pub struct Progress {
    /// Newest placement applied.
    pub applied_placement: AtomicU64,
    /// Newest placement made durable.
    pub durable_placement: AtomicU64,
    /// Newest keys record made durable.
    pub durable_keys_seq: AtomicU64,
}

/// Starts the writer and the flusher over `backend`; returns the writer's
/// inbox and the generation that moves whenever queue entries are added.
#[allow(clippy::type_complexity)]
pub(super) fn start(
    backend: Arc<dyn Backend>,
    clock: Arc<Clock>,
) -> Result<
    (
        std_mpsc::Sender<WriteOp>,
        watch::Receiver<u64>,
        Arc<Progress>,
    ),
    StoreError,
> {
    let counters = backend.counters()?;
    let progress = Arc::new(Progress::default());
    // What is stored at start is durable.
    progress
        .durable_keys_seq
        .store(counters.next_keys_seq.saturating_sub(1), Ordering::Release);
    let counts = backend.counts()?.into_iter().collect();
    let (tx, rx) = std_mpsc::channel();
    let (flush_tx, flush_rx) = std_mpsc::channel();
    let (gen_tx, gen_rx) = watch::channel(0u64);
    let writer = Writer {
        backend: backend.clone(),
        clock,
        counters,
        counts,
        group_counts: HashMap::new(),
        queued_any: false,
        group_placement: 0,
        progress: progress.clone(),
        flusher: flush_tx,
    };
    let flush_progress = progress.clone();
    std::thread::Builder::new()
        .name("hub-store-flush".into())
        .spawn(move || flush(backend, gen_tx, flush_rx, flush_progress))
        .map_err(|e| StoreError::Io(e.to_string()))?;
    std::thread::Builder::new()
        .name("hub-store-writer".into())
        .spawn(move || writer.run(rx))
        .map_err(|e| StoreError::Io(e.to_string()))?;
    Ok((tx, gen_rx, progress))
}

/// The second stage: makes the backend durable, then answers every group
/// applied before that began, in order. While it waits on the disk, the
/// writer stages and applies the next group.
fn flush(
    backend: Arc<dyn Backend>,
    generation: watch::Sender<u64>,
    rx: std_mpsc::Receiver<Applied>,
    progress: Arc<Progress>,
) {
    while let Ok(first) = rx.recv() {
        let mut groups = vec![first];
        while let Ok(g) = rx.try_recv() {
            groups.push(g);
        }
        // The durability point. Once a group is applied its sequence
        // numbers are taken; if it cannot be made durable the hub must not
        // go on (it could reuse them) nor answer: it stops, and on restart
        // the backend recovers a consistent prefix, which clients re-send into.
        if let Err(e) = backend.make_durable() {
            tracing::error!(error = %e, "flush failed after apply: stopping the hub to keep the store consistent");
            std::process::abort();
        }
        let mut queued_any = false;
        for g in groups {
            queued_any |= g.queued_any;
            progress
                .durable_placement
                .fetch_max(g.placement, Ordering::AcqRel);
            progress
                .durable_keys_seq
                .fetch_max(g.keys_seq, Ordering::AcqRel);
            for r in g.replies {
                r.answer(Ok(()));
            }
        }
        if queued_any {
            generation.send_modify(|g| *g += 1);
        }
    }
}

/// The writer: the store's rules, staged into one group at a time.
pub(super) struct Writer {
    pub(super) backend: Arc<dyn Backend>,
    pub(super) clock: Arc<Clock>,
    pub(super) counters: Counters,
    /// Statistics counters as stored.
    counts: HashMap<String, u64>,
    /// Counters changed by the group being staged.
    group_counts: HashMap<String, u64>,
    /// Whether the group being staged adds queue entries.
    queued_any: bool,
    /// The newest placement the group being staged holds.
    pub(super) group_placement: u64,
    progress: Arc<Progress>,
    flusher: std_mpsc::Sender<Applied>,
}

impl Writer {
    fn run(mut self, rx: std_mpsc::Receiver<WriteOp>) {
        while let Ok(first) = rx.recv() {
            #[cfg(test)]
            if let WriteOp::Gate(gate) = first {
                let _ = gate.recv();
                continue;
            }
            let mut ops = vec![first];
            while ops.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            self.commit_group(ops);
        }
    }

    fn commit_group(&mut self, mut ops: Vec<WriteOp>) {
        // Erasures first (the sort is stable): what they check again is
        // then what is committed, and nothing staged in the group yet.
        ops.sort_by_key(|op| !matches!(op, WriteOp::Expire(..) | WriteOp::ExpireMatches(..)));
        let saved = self.counters;
        self.group_counts.clear();
        self.queued_any = false;
        self.group_placement = 0;
        let backend = self.backend.clone();
        let mut group = backend.begin();
        let g = &mut *group;
        let mut replies = Vec::with_capacity(ops.len());
        let mut failure: Option<StoreError> = None;
        for op in ops {
            let staged = match op {
                WriteOp::Reports(reports, tx) => {
                    // Refused alone, before anything is staged: the rest of
                    // the group commits.
                    if let Err(e) = backend.admit_reports() {
                        let _ = tx.send(Err(e));
                        continue;
                    }
                    reply(tx, self.stage_reports(g, reports))
                }
                WriteOp::Ack(recipient, seqs, rejected, tx) => {
                    reply(tx, self.stage_ack(g, &recipient, &seqs, &rejected))
                }
                WriteOp::List(write, tx) => {
                    self.stage_list(g, write);
                    reply(tx, Ok(()))
                }
                WriteOp::Audit(ev, tx) => {
                    self.stage_audit(g, ev);
                    reply(tx, Ok(()))
                }
                WriteOp::Setting(setting, ev, tx) => {
                    match setting {
                        Setting::Rules(version, text) => g.put_rules(version, &text),
                        Setting::Registration(r) => g.put_registration(&r),
                    }
                    self.stage_audit(g, ev);
                    reply(tx, Ok(()))
                }
                WriteOp::Step(w, tx) => reply(tx, self.stage_step(g, w)),
                WriteOp::Escalate(e, tx) => reply(tx, self.stage_escalation(g, e)),
                WriteOp::Split(w, tx) => reply(tx, self.stage_split(g, *w)),
                WriteOp::RegisterSeries(id, owner, hashes, tx) => {
                    reply(tx, self.stage_register(g, id, &owner, &hashes))
                }
                WriteOp::AddHashes(id, actor, hashes, tx) => {
                    reply(tx, self.stage_add_hashes(g, id, &actor, &hashes))
                }
                WriteOp::Link(id, actor, rep, tx) => {
                    reply(tx, self.stage_link(g, id, &actor, &rep))
                }
                WriteOp::SetPreference(id, actor, p, tx) => {
                    reply(tx, self.stage_preference(g, id, &actor, p))
                }
                WriteOp::Proceedings(case, agency, tx) => {
                    reply(tx, self.stage_proceedings(g, case, &agency))
                }
                WriteOp::Notify(out, tx) => reply(tx, self.stage_notification(g, *out)),
                WriteOp::DigestAdvance(id, from, to, tx) => {
                    reply(tx, self.stage_digest_advance(g, id, from, to))
                }
                WriteOp::Expire(w, tx) => reply(tx, self.stage_expire(g, w)),
                WriteOp::ExpireMatches(series, before, at, actor, tx) => reply(
                    tx,
                    self.stage_expire_matches(g, &series, before, at, &actor),
                ),
                WriteOp::HeldBack(recipient, seq, report, why) => {
                    // Nobody waits for this record: a failed read skips it
                    // (it is tried again when the entry is met again).
                    if let Err(e) = self.stage_held_back(g, &recipient, seq, &report, &why) {
                        tracing::error!(error = %e, seq, "could not record a held-back entry");
                    }
                    Ok(None)
                }
                WriteOp::Delivered(recipient, entries) => {
                    self.stage_delivered(g, &recipient, &entries);
                    Ok(None)
                }
                #[cfg(test)]
                WriteOp::Gate(_) => Ok(None),
            };
            match staged {
                Ok(Some(r)) => replies.push(r),
                Ok(None) => {}
                Err(e) => failure = Some(e),
            }
        }
        let result = match failure {
            Some(e) => Err(e),
            None => {
                self.stage_counters(g);
                group.apply()
            }
        };
        match result {
            Ok(()) => {
                self.counts.extend(self.group_counts.drain());
                self.progress
                    .applied_placement
                    .fetch_max(self.group_placement, Ordering::AcqRel);
                if replies.is_empty() && !self.queued_any && self.group_placement == 0 {
                    return;
                }
                // Answered by the flusher once this group is durable.
                let _ = self.flusher.send(Applied {
                    replies,
                    queued_any: self.queued_any,
                    placement: self.group_placement,
                    keys_seq: self.counters.next_keys_seq.saturating_sub(1),
                });
            }
            Err(e) => {
                // Nothing of this group was applied or acknowledged; the
                // counters go back.
                tracing::error!(error = %e, "commit failed");
                self.counters = saved;
                for r in replies {
                    r.answer(Err(e.clone()));
                }
            }
        }
    }

    /// Stores the pipeline's counters and the statistics the group changed.
    fn stage_counters(&self, g: &mut dyn Group) {
        g.put_counters(&self.counters);
        for (name, n) in &self.group_counts {
            g.put_stat(name, *n);
        }
    }

    /// Adds one to a statistics counter (stored with the group).
    pub(super) fn bump(&mut self, name: &str) {
        self.bump_by(name, 1);
    }

    /// Adds `by` to a statistics counter (stored with the group).
    pub(super) fn bump_by(&mut self, name: &str, by: u64) {
        // Counted in place when the group has it already: no new key.
        if let Some(n) = self.group_counts.get_mut(name) {
            *n += by;
            return;
        }
        let n = self.counts.get(name).copied().unwrap_or(0);
        self.group_counts.insert(name.to_string(), n + by);
    }

    /// Adds an entry at the end of `recipient`'s queue.
    pub(super) fn enqueue(
        &mut self,
        g: &mut dyn Group,
        recipient: &SpiffeId,
        item: &QueueItem,
    ) -> pb::QueuedAt {
        let seq = self.counters.next_queue_seq;
        self.counters.next_queue_seq += 1;
        g.push_queue(recipient, seq, item);
        self.queued_any = true;
        pb::QueuedAt {
            recipient: recipient.to_string(),
            seq,
        }
    }

    /// Appends a record to the audit chain; returns its sequence number.
    pub(super) fn stage_audit(&mut self, g: &mut dyn Group, ev: pb::AuditEvent) -> u64 {
        let seq = self.counters.audit_head.next_seq;
        let rec = self.counters.audit_head.append(&ev);
        g.put_audit(seq, &rec);
        seq
    }

    /// Adds an event to a report's history.
    pub(super) fn stage_history(
        &mut self,
        g: &mut dyn Group,
        report: &ReportId,
        at_ms: i64,
        kind: &str,
        actor: &SpiffeId,
        detail: String,
    ) {
        self.stage_history_queued(g, report, at_ms, kind, actor, detail, Vec::new());
    }

    /// Adds an event that made queue entries to a report's history: their
    /// deliveries and acknowledgements are read from the audit log when the
    /// history is (`Store::history`), not kept a second time.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn stage_history_queued(
        &mut self,
        g: &mut dyn Group,
        report: &ReportId,
        at_ms: i64,
        kind: &str,
        actor: &SpiffeId,
        detail: String,
        queued: Vec<pb::QueuedAt>,
    ) {
        let seq = self.counters.next_history_seq;
        self.counters.next_history_seq += 1;
        let ev = pb::StoredHistory {
            event: Some(pb::HistoryEvent {
                at_ms,
                kind: kind.into(),
                actor: actor.to_string(),
                detail,
            }),
            queued,
        };
        g.put_history(report, seq, &ev);
    }
}

/// The staged answer of an operation, or its failure (answered now: the
/// group fails with it).
fn reply<T: Send + 'static>(
    tx: Answer<T>,
    staged: Result<T, StoreError>,
) -> Result<Option<Reply>, StoreError> {
    match staged {
        Ok(out) => Ok(Some(Reply(Box::new(move |result| {
            let _ = tx.send(result.map(|()| out));
        })))),
        Err(e) => {
            let _ = tx.send(Err(e.clone()));
            Err(e)
        }
    }
}

/// An audit event.
pub(super) fn event(
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
