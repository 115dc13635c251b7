//! Deconfliction: reports of one location or one file make one case. The
//! index here (normalised URL, exact SHA-256 of items, PDQ of items within
//! the match threshold) answers, for each EU-linked report in the order
//! they are decided, whether it opens a case or is a sighting of one. It is
//! changed only under ingest's lock, so that two reports of the same thing
//! in one batch, or in two batches at once, still make one case.
//!
//! Which items count: those assessed illegal or not yet assessed. An item
//! assessed as not illegal (a logo, a screenshot beside the material) never
//! joins two unrelated cases.
//!
//! Where it lies, so that memory and start-up stay bounded however many
//! cases are held: the exact keys and the cases are the store's
//! ([`CaseSource`]: an exact key leads to its case, a case is read back);
//! what placements changed and the store has not applied yet is kept here
//! until it has (`pending`). PDQ hashes are searched in memory for the
//! newest and in runs on disk for the rest (`pdq`): a run is made from the
//! store's keys records, in the order they were stored, once they are
//! durable, and a start reads only the records after the last run.
//!
//! Why a batch search: a PDQ search of a large index is the costly part
//! (tens of microseconds per item at a million cases, bound by memory
//! latency). Ingest, holding the lock, searches the index for every item
//! of a batch at once, on all cores ([`CaseIndex::search_batch`]), and
//! matches the batch's items against each other; `place` then, report by
//! report in decision order, checks the exact keys and takes the nearest
//! of the index's match and the matches of the batch's earlier reports,
//! which gives the same answer as a full search of the index at that
//! moment.

mod pdq;

pub use pdq::{PdqRuns, RunsError, FREEZE_AT};

/// The lock over the cases index: task-fair (waiters are served in turn),
/// so the thread that writes the PDQ runs gets its turn even while ingest
/// takes the lock batch after batch. With the standard lock, whose
/// readers wait while any writer waits, that thread never got in under a
/// sustained load, and the frozen tables it should have written stayed in
/// memory.
pub type CasesLock = parking_lot::RwLock<CaseIndex>;

use crate::rules::ReportClass;
use meldnet_core::CaseId;
use meldnet_core::CountryCode;
use meldnet_core::{Classification, Report, ReportId};
use meldnet_core::{PdqHash, Sha256};

use meldnet_pdq::PdqIndex;
use meldnet_pdq::{MATCH_THRESHOLD, MIN_MATCH_QUALITY};
use meldnet_proto::v1 as pb;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Stored case data that does not make sense: the store is damaged.
#[derive(Debug, Clone, thiserror::Error)]
#[error("store: corrupt record {0}")]
pub struct DamagedCase(pub String);

/// Why the index could not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CaseError {
    /// What is stored does not make sense.
    #[error(transparent)]
    Damaged(#[from] DamagedCase),
    /// The store could not be read (a retry may mend it).
    #[error("{0}")]
    Unavailable(String),
}

/// A deconfliction key that leads to a case by equality: a location's
/// (the SHA-256 of its normalised URL) or an item's (its SHA-256).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExactKey {
    /// A location.
    Url([u8; 32]),
    /// A file.
    File(Sha256),
}

impl ExactKey {
    /// Its kind (1: URL, 2: file) and hash: what the store keys it by.
    pub fn to_bytes(&self) -> [u8; 33] {
        let (kind, h) = match self {
            ExactKey::Url(u) => (1u8, u),
            ExactKey::File(f) => (2u8, &f.0),
        };
        let mut b = [0u8; 33];
        let (k, rest) = b.split_at_mut(1);
        k.copy_from_slice(&[kind]);
        rest.copy_from_slice(h);
        b
    }
}

/// What the index reads from the store: committed cases, the case an exact
/// key leads to, the keys records in the order they were stored, and how
/// far the store has applied ingest's placements and made keys durable.
pub trait CaseSource: Send + Sync {
    /// A stored case.
    fn case_record(&self, id: &CaseId) -> Result<Option<pb::CaseRecord>, CaseError>;
    /// The case an exact key leads to.
    fn case_of_key(&self, key: &ExactKey) -> Result<Option<CaseId>, CaseError>;
    /// Says the keys records stored after `after` to `f`, in order, until
    /// it answers false.
    fn case_keys_since(
        &self,
        after: u64,
        f: &mut dyn FnMut(pb::CaseKeysRecord) -> Result<bool, CaseError>,
    ) -> Result<(), CaseError>;
    /// The newest placement (its stamp) whose group the store has applied:
    /// its keys and cases are read back from the store from then on.
    fn applied_placement(&self) -> u64;
    /// The newest placement whose group the store has made durable.
    fn durable_placement(&self) -> u64;
    /// The newest keys record (its `seq`) the store has made durable: a
    /// run on disk may hold the records up to it, never further.
    fn durable_keys_seq(&self) -> u64;
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

/// A notice-and-takedown the hub asks for at one location: its deadline
/// and where a missed deadline escalates.
#[derive(Debug, Clone)]
pub struct Notice {
    /// When the deadline passes.
    pub deadline_ms: i64,
    /// The policy's deadline in hours, for the reasons.
    pub hours: i64,
    /// Who receives the escalation (SPIFFE ids).
    pub escalate_to: Vec<String>,
}

impl Notice {
    /// The location's stored record of this notice, asked by `report` at `now`.
    pub fn apply(&self, loc: &mut pb::LocationRecord, report: &ReportId, now: i64) {
        loc.deadline_ms = self.deadline_ms;
        loc.escalate_to = self.escalate_to.clone();
        loc.noticed_at_ms = now;
        loc.noticed_by_report_id = report.to_string();
    }

    /// The reason line for the decision.
    pub fn line(&self) -> String {
        format!(
            "takedown deadline {} ({} h); a missed deadline escalates to {}",
            meldnet_core::time::rfc3339(self.deadline_ms),
            self.hours,
            if self.escalate_to.is_empty() {
                "nobody registered".into()
            } else {
                self.escalate_to.join(", ")
            }
        )
    }
}

/// One location of a case, as placing a later report needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocationInfo {
    /// SHA-256 of its normalised URL.
    pub url_key: [u8; 32],
    /// Its hosting country, if it takes part.
    pub hosting: Option<CountryCode>,
    /// The report that brought it to the case.
    pub first_report: ReportId,
    /// Its takedown deadline in force (0: none due).
    pub deadline_ms: i64,
    /// Whether its hosting hotline was asked for a notice.
    pub noticed: bool,
    /// Split out by an operator into a case of its own: no report is
    /// placed here again.
    pub moved: bool,
}

/// What a sighting needs to know of its case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseInfo {
    /// The case.
    pub id: CaseId,
    /// The report that opened it.
    pub first_report: ReportId,
    /// The gravest assessment of its reports so far.
    pub assessment: ReportClass,
    /// Where its material was seen; the first is the opening report's.
    pub locations: Vec<LocationInfo>,
}

impl LocationInfo {
    /// A location as a report brings it, before any notice.
    pub fn new(url_key: [u8; 32], hosting: Option<CountryCode>, first_report: ReportId) -> Self {
        LocationInfo {
            url_key,
            hosting,
            first_report,
            deadline_ms: 0,
            noticed: false,
            moved: false,
        }
    }
}

impl CaseInfo {
    /// The location with this URL key, if the case holds it.
    pub fn location_of(&self, url_key: &[u8; 32]) -> Option<u32> {
        self.locations
            .iter()
            .position(|l| &l.url_key == url_key && !l.moved)
            .map(|i| i as u32)
    }
}

/// How grave an assessment is: a case's is the gravest of its reports'.
pub fn gravity(c: ReportClass) -> u8 {
    match c {
        ReportClass::NotIllegal => 0,
        ReportClass::Unassessed => 1,
        ReportClass::National => 2,
        ReportClass::Baseline => 3,
    }
}

/// The stored form of an assessment.
pub fn assessment_to_proto(c: ReportClass) -> pb::Assessment {
    match c {
        ReportClass::NotIllegal => pb::Assessment::NotIllegal,
        ReportClass::Unassessed => pb::Assessment::Unassessed,
        ReportClass::National => pb::Assessment::National,
        ReportClass::Baseline => pb::Assessment::Baseline,
    }
}

/// An assessment read back from the store.
pub fn assessment_from_proto(a: i32) -> Option<ReportClass> {
    match pb::Assessment::try_from(a).ok()? {
        pb::Assessment::NotIllegal => Some(ReportClass::NotIllegal),
        pb::Assessment::Unassessed => Some(ReportClass::Unassessed),
        pb::Assessment::National => Some(ReportClass::National),
        pb::Assessment::Baseline => Some(ReportClass::Baseline),
        pb::Assessment::Unspecified => None,
    }
}

/// Where a report goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// It opens this case.
    Open(CaseInfo),
    /// It is a sighting of this case (as it stood before the report);
    /// `matched_by` says how, in words; `location` is the case's location
    /// at the report's URL, or none when the URL is new to the case.
    Sighting {
        /// The case.
        case: CaseInfo,
        /// How it matched, in words.
        matched_by: String,
        /// The location at the report's URL, if the case holds it.
        location: Option<u32>,
    },
}

/// Up to this many hashes a batch's own are compared pair by pair (about a
/// microsecond a report at a batch's usual 768); more build an index.
const PAIRWISE_MAX: usize = 4096;

/// For each hash of a batch, the hashes of the batch's earlier reports
/// within the match threshold (position, distance). `pairwise`: every pair
/// compared (cheap for a batch's usual few thousand hashes); else through
/// a small index of the batch's hashes (a batch of reports with many
/// items each). Both give the same answers (a test says so).
fn earlier_matches(
    hashes: &[PdqHash],
    report_of: &[usize],
    pairwise: bool,
) -> Vec<Vec<(u32, u32)>> {
    let mut earlier: Vec<Vec<(u32, u32)>> = vec![Vec::new(); hashes.len()];
    let before = |e: usize, q: usize| report_of.get(e) < report_of.get(q);
    if pairwise {
        for (q, h) in hashes.iter().enumerate() {
            for (e, other) in hashes.iter().enumerate().take(q) {
                let d = h.distance(other);
                if d <= MATCH_THRESHOLD && before(e, q) {
                    if let Some(list) = earlier.get_mut(q) {
                        list.push((e as u32, d));
                    }
                }
            }
        }
    } else if hashes.len() > 1 {
        let own = PdqIndex::build(hashes);
        for (q, h) in hashes.iter().enumerate() {
            let mut found: Vec<(u32, u32)> = own
                .search(h, MATCH_THRESHOLD)
                .into_iter()
                .filter(|m| before(m.entry as usize, q))
                .map(|m| (m.entry, m.distance))
                .collect();
            found.sort_unstable();
            if let Some(list) = earlier.get_mut(q) {
                *list = found;
            }
        }
    }
    earlier
}

/// The PDQ part of deconfliction for one batch of reports, searched at
/// once under ingest's lock ([`CaseIndex::search_batch`]); `place` reads
/// it report by report and records where each report went.
#[derive(Debug, Default)]
pub struct BatchSearch {
    /// Per report: the nearest match in the index as it stood before the
    /// batch.
    best: Vec<Option<Near>>,
    /// The batch's usable PDQ hashes: (report position, item).
    items: Vec<(usize, usize)>,
    /// Per hash of `items`: the earlier hashes of the batch within the
    /// match threshold (their position in `items`, distance).
    earlier: Vec<Vec<(u32, u32)>>,
    /// Where each report's hashes start in `items`.
    first_item: Vec<usize>,
    /// The case each report of the batch was placed in, once placed.
    placed: Vec<Option<CaseId>>,
}

/// A PDQ match: distance, then the case (the older first: ids are UUIDv7),
/// then the item: the order in which the nearer, then the older case wins.
type Near = (u32, CaseId, usize);

/// The nearer of two matches.
fn better(a: Option<Near>, b: Near) -> Option<Near> {
    match a {
        Some(a) if a <= b => Some(a),
        _ => Some(b),
    }
}

/// Something a placement changed that the store has not applied yet.
#[derive(Debug, Clone, Copy)]
enum Pending {
    Key(ExactKey),
    Case(CaseId),
}

/// The deconfliction index.
pub struct CaseIndex {
    source: Arc<dyn CaseSource>,
    /// Exact keys placements added that the store has not applied yet, with
    /// the placement's stamp.
    pending_keys: HashMap<ExactKey, (CaseId, u64)>,
    /// Cases placements opened or changed that the store has not applied
    /// yet, as placing knows them, with the placement's stamp.
    pending_cases: HashMap<CaseId, (CaseInfo, u64)>,
    /// Both, in stamp order: what to forget once the store applied it.
    pending: VecDeque<(u64, Pending)>,
    /// The last placement's stamp.
    stamp: u64,
    /// The PDQ hashes of every case.
    pdq: PdqRuns,
}

/// Makes the runs of the index's frozen PDQ tables, in a thread of its
/// own, one at a time: each waits until the store has made the table's
/// placements durable, is written from the store's records outside the
/// index's lock (ingest goes on), then put in place under it. Ends when
/// the index is dropped.
pub fn make_runs(index: &Arc<CasesLock>) -> std::io::Result<std::thread::JoinHandle<()>> {
    let weak = Arc::downgrade(index);
    std::thread::Builder::new()
        .name("case-pdq-runs".into())
        .spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_millis(200));
            let Some(index) = weak.upgrade() else {
                return;
            };
            let plan = {
                let idx = index.read();
                let expected = idx.pdq.waiting_len();
                idx.pdq.waiting().and_then(|stamp| {
                    Some((stamp, idx.pdq.plan()?, idx.source.clone(), expected))
                })
            };
            let Some((stamp, (path, after, name), source, expected)) = plan else {
                continue;
            };
            if source.durable_placement() < stamp {
                continue;
            }
            let upto = source.durable_keys_seq();
            if let Err(e) = pdq::make_frozen_run(&*source, &path, (after, upto), expected) {
                tracing::error!(error = %e, "a PDQ run of the cases could not be made (tried again)");
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let mut idx = index.write();
            if let Err(e) = idx.pdq.install(&path, name, after, upto) {
                tracing::error!(error = %e, "a PDQ run of the cases could not be put in place (made again)");
                let _ = std::fs::remove_file(&path);
            }
            drop(idx);
            // Then the runs merged while there are too many of a size.
            loop {
                let plan = index.read().pdq.plan_merge();
                let Some((pair, path, name)) = plan else {
                    break;
                };
                if let Err(e) = pdq::merge_pair(&pair, &path) {
                    tracing::error!(error = %e, "PDQ runs of the cases could not be merged (tried again)");
                    let _ = std::fs::remove_file(&path);
                    break;
                }
                let mut idx = index.write();
                if let Err(e) = idx.pdq.install_merge(&pair, &path, name) {
                    tracing::error!(error = %e, "merged PDQ runs could not be put in place");
                    let _ = std::fs::remove_file(&path);
                    break;
                }
            }
        })
}

/// The deconfliction key of a report's location: SHA-256 of its
/// normalised URL (or of the URL as given, if it does not parse as one).
pub fn url_key(report: &Report) -> [u8; 32] {
    let text = match meldnet_core::normalize(&report.url) {
        Ok(n) => n.as_str().to_string(),
        Err(_) => report.url.as_str().to_string(),
    };
    Sha256::of(text.as_bytes()).0
}

fn counts(c: Classification) -> bool {
    c != Classification::NotIllegal
}

/// The PDQ hashes of a report that deconfliction compares: of items that
/// count, of matchable quality; with the item's position.
pub fn usable_pdqs(report: &Report) -> impl Iterator<Item = (usize, PdqHash)> + '_ {
    report
        .items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| match item.pdq {
            Some((h, q)) if counts(item.classification) && q >= MIN_MATCH_QUALITY => Some((i, h)),
            _ => None,
        })
}

impl CaseIndex {
    /// The index over what `source` holds, with its PDQ runs in `runs`
    /// (read, and the keys records after them added).
    pub fn open(source: Arc<dyn CaseSource>, runs: PdqRuns) -> Result<CaseIndex, CaseError> {
        let mut idx = CaseIndex {
            source,
            pending_keys: HashMap::new(),
            pending_cases: HashMap::new(),
            pending: VecDeque::new(),
            stamp: 0,
            pdq: runs,
        };
        idx.pdq.catch_up(&*idx.source)?;
        Ok(idx)
    }

    /// PDQ hashes held (in memory and in runs).
    pub fn pdq_len(&self) -> usize {
        self.pdq.len()
    }

    /// The PDQ part, for the thread that makes runs.
    pub fn pdq_mut(&mut self) -> &mut PdqRuns {
        &mut self.pdq
    }

    /// The store the index reads.
    pub fn source(&self) -> &Arc<dyn CaseSource> {
        &self.source
    }

    /// The newest placement's stamp: what the store is handed with the
    /// batch, and says back once it applied it.
    pub fn stamp(&self) -> u64 {
        self.stamp
    }

    /// Forgets what the store has applied: from then on it is read back.
    fn forget_applied(&mut self) {
        let applied = self.source.applied_placement();
        while let Some(&(s, what)) = self.pending.front() {
            if s > applied {
                break;
            }
            self.pending.pop_front();
            match what {
                Pending::Key(k) => {
                    if self.pending_keys.get(&k).is_some_and(|(_, at)| *at == s) {
                        self.pending_keys.remove(&k);
                    }
                }
                Pending::Case(c) => {
                    if self.pending_cases.get(&c).is_some_and(|(_, at)| *at == s) {
                        self.pending_cases.remove(&c);
                    }
                }
            }
        }
    }

    /// The case an exact key leads to, as placing knows it now.
    fn case_of(&self, key: &ExactKey) -> Result<Option<CaseId>, CaseError> {
        match self.pending_keys.get(key) {
            Some((c, _)) => Ok(Some(*c)),
            None => self.source.case_of_key(key),
        }
    }

    /// The case as placing knows it now.
    pub fn info(&self, id: &CaseId) -> Result<Option<CaseInfo>, CaseError> {
        if let Some((c, _)) = self.pending_cases.get(id) {
            return Ok(Some(c.clone()));
        }
        self.source
            .case_record(id)?
            .map(|r| case_info(&r).map_err(CaseError::from))
            .transpose()
    }

    fn remember(&mut self, what: Pending) {
        self.pending.push_back((self.stamp, what));
    }

    /// Changes a case as a placed report (or a step) changed it, so that
    /// the next report is placed on what is in force (kept until the store
    /// has applied the change: the newest placement's group carries it).
    pub fn update(
        &mut self,
        id: &CaseId,
        change: impl FnOnce(&mut CaseInfo),
    ) -> Result<(), CaseError> {
        let Some(mut c) = self.info(id)? else {
            return Ok(());
        };
        change(&mut c);
        self.pending_cases.insert(*id, (c, self.stamp));
        self.remember(Pending::Case(*id));
        Ok(())
    }

    /// Starts again from what the store holds (after an operator split a
    /// report out: its keys lead to its own case now; its PDQ hashes are
    /// read again). Only under ingest's lock, so no batch spans it.
    pub fn reload(&mut self) -> Result<(), CaseError> {
        self.pending_keys.clear();
        self.pending_cases.clear();
        self.pending.clear();
        self.pdq.rebuild(&*self.source)
    }

    /// Searches the index for every usable PDQ hash of the EU-linked
    /// reports of a batch (`reports`, in decision order; `None` for a report
    /// deconfliction does not place), on all cores, and matches the batch's
    /// hashes against each other. Hold ingest's lock from here until every
    /// report of the batch is placed.
    pub fn search_batch(&self, reports: &[Option<&Report>]) -> BatchSearch {
        let mut items = Vec::new();
        let mut hashes = Vec::new();
        let mut first_item = Vec::with_capacity(reports.len());
        for (at, r) in reports.iter().enumerate() {
            first_item.push(items.len());
            for (i, h) in r.iter().flat_map(|r| usable_pdqs(r)) {
                items.push((at, i));
                hashes.push(h);
            }
        }
        // Every hash of the batch at once, in a part per core.
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let chunk = hashes.len().div_ceil(workers).max(256);
        let mut found: Vec<Option<(u32, CaseId)>> = Vec::with_capacity(hashes.len());
        let pdq = &self.pdq;
        std::thread::scope(|s| {
            let parts: Vec<_> = hashes
                .chunks(chunk)
                .map(|part| (part.len(), s.spawn(move || pdq.best_many(part))))
                .collect();
            for (len, p) in parts {
                // A part that failed finds nothing (never a shifted answer).
                let mut got = p.join().unwrap_or_default();
                got.resize(len, None);
                found.extend(got);
            }
        });
        let mut best: Vec<Option<Near>> = vec![None; reports.len()];
        for ((at, i), f) in items.iter().zip(&found) {
            if let (Some((d, case)), Some(b)) = (f, best.get_mut(*at)) {
                *b = better(*b, (*d, *case, *i));
            }
        }
        let reports_of: Vec<usize> = items.iter().map(|(r, _)| *r).collect();
        let earlier = earlier_matches(&hashes, &reports_of, hashes.len() <= PAIRWISE_MAX);
        BatchSearch {
            best,
            items,
            earlier,
            first_item,
            placed: vec![None; reports.len()],
        }
    }

    /// The case that already holds this report's location or one of its
    /// files, and how it matched: URL first, then exact hash (`exact`: the
    /// report's exact keys, each with the case it leads to, URL first),
    /// then PDQ (the index's match for the report, or an earlier report's
    /// of the batch, the nearer).
    fn find(
        exact: &[(ExactKey, Option<usize>, Option<CaseId>)],
        batch: &BatchSearch,
        at: usize,
    ) -> Option<(CaseId, String)> {
        for (key, item, case) in exact {
            if let Some(c) = case {
                return Some(match (key, item) {
                    (ExactKey::Url(_), _) => (*c, "url".into()),
                    (_, Some(i)) => (*c, format!("sha256 of item {i}")),
                    (_, None) => (*c, "sha256".into()),
                });
            }
        }
        let mut best = batch.best.get(at).copied().flatten();
        let from = batch.first_item.get(at).copied().unwrap_or(0);
        for (q, (r, i)) in batch.items.iter().enumerate().skip(from) {
            if *r != at {
                break;
            }
            for (e, d) in batch.earlier.get(q).into_iter().flatten() {
                let case = batch
                    .items
                    .get(*e as usize)
                    .and_then(|(r, _)| batch.placed.get(*r).copied().flatten());
                if let Some(c) = case {
                    best = better(best, (*d, c, *i));
                }
            }
        }
        best.map(|(d, c, i)| (c, format!("pdq of item {i} at distance {d}")))
    }

    /// Places a report (the `at`-th of the batch searched in `batch`, with
    /// its URL's key `url`): a sighting of the case that holds its location
    /// or a file, or a new case made by `open`. The report's keys the case
    /// did not hold yet join it; they are returned for the store, with the
    /// placement's stamp (handed to the store with the report).
    pub fn place(
        &mut self,
        report: &Report,
        url: &[u8; 32],
        batch: &mut BatchSearch,
        at: usize,
        open: impl FnOnce() -> CaseInfo,
    ) -> Result<(Placement, CaseKeys, u64), CaseError> {
        self.forget_applied();
        self.stamp += 1;
        // Each exact key looked up once: what it leads to decides the
        // placement, and whether the case gains it.
        let mut exact: Vec<(ExactKey, Option<usize>, Option<CaseId>)> = Vec::with_capacity(5);
        let url_key = ExactKey::Url(*url);
        exact.push((url_key, None, self.case_of(&url_key)?));
        for (i, item) in report.items.iter().enumerate() {
            if counts(item.classification) {
                let k = ExactKey::File(item.sha256);
                if !exact.iter().any(|(x, _, _)| *x == k) {
                    exact.push((k, Some(i), self.case_of(&k)?));
                }
            }
        }
        let found = match Self::find(&exact, batch, at) {
            // A case the store does not hold (a placement it refused) is no
            // match: the report opens its own.
            Some((c, how)) => self.info(&c)?.map(|info| (info, how)),
            None => None,
        };
        let (case_id, placement) = match found {
            Some((case, how)) => {
                let location = case.location_of(url);
                (
                    case.id,
                    Placement::Sighting {
                        case,
                        matched_by: how,
                        location,
                    },
                )
            }
            None => {
                let info = open();
                self.pending_cases
                    .insert(info.id, (info.clone(), self.stamp));
                self.remember(Pending::Case(info.id));
                (info.id, Placement::Open(info))
            }
        };
        if let Some(p) = batch.placed.get_mut(at) {
            *p = Some(case_id);
        }
        let mut keys = CaseKeys::default();
        for (key, _, case) in &exact {
            if case.is_none() {
                self.pending_keys.insert(*key, (case_id, self.stamp));
                self.remember(Pending::Key(*key));
                match key {
                    ExactKey::Url(u) => keys.urls.push(*u),
                    ExactKey::File(f) => keys.files.push(*f),
                }
            }
        }
        for item in report.items.iter().filter(|i| counts(i.classification)) {
            // Every usable PDQ joins (an identical one only costs memory:
            // checking first would cost a second search per item).
            if let Some((h, q)) = item.pdq.filter(|(_, q)| *q >= MIN_MATCH_QUALITY) {
                self.pdq.add(h, case_id, q, self.stamp);
                keys.pdqs.push((h, q));
            }
        }
        Ok((placement, keys, self.stamp))
    }
}

/// The in-memory form of a stored case.
pub fn case_info(rec: &pb::CaseRecord) -> Result<CaseInfo, DamagedCase> {
    let corrupt = |what: &str, e: String| DamagedCase(format!("case {} {what}: {e}", rec.case_id));
    let locations = rec
        .locations
        .iter()
        .map(|l| {
            Ok(LocationInfo {
                url_key: l
                    .url_key
                    .as_slice()
                    .try_into()
                    .map_err(|_| corrupt("location url key", "not 32 bytes".into()))?,
                hosting: CountryCode::parse(&l.hosting_country).ok(),
                first_report: ReportId::parse(&l.first_report_id)
                    .map_err(|e| corrupt("location first report", e))?,
                deadline_ms: l.deadline_ms,
                noticed: l.noticed_at_ms > 0,
                moved: !l.moved_to_case_id.is_empty(),
            })
        })
        .collect::<Result<Vec<_>, DamagedCase>>()?;
    if locations.is_empty() {
        return Err(corrupt("locations", "none".into()));
    }
    Ok(CaseInfo {
        id: CaseId::parse(&rec.case_id).map_err(|e| corrupt("id", e))?,
        first_report: ReportId::parse(&rec.first_report_id)
            .map_err(|e| corrupt("first report", e))?,
        assessment: assessment_from_proto(rec.assessment)
            .ok_or_else(|| corrupt("assessment", "unspecified".into()))?,
        locations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use meldnet_core::Md5;
    use meldnet_core::{AgeGroup, EuLinkFacts, Item, MediaType, ReportUrl};

    /// The runs thread reads the index between ingest's writes: with
    /// writers that never pause (a writer always waiting), a reader must
    /// still get in, soon.
    #[test]
    fn a_reader_gets_its_turn_while_writers_never_pause() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::time::{Duration, Instant};
        let lock = Arc::new(parking_lot::RwLock::new(0u64));
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let (lock, stop) = (lock.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let mut n = lock.write();
                        *n += 1;
                        std::thread::sleep(Duration::from_micros(200));
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        for _ in 0..20 {
            let _seen = *lock.read();
        }
        let waited = t.elapsed();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        // The standard lock took about 600 ms here (a reader waits while
        // any writer waits), the task-fair one under 1 ms.
        assert!(
            waited < Duration::from_millis(250),
            "20 reads took {waited:?}"
        );
    }

    fn report(url: &str, sha: u8, pdq: Option<PdqHash>, class: Classification) -> Report {
        Report {
            id: ReportId::new_v7(),
            origin: CountryCode::parse("NL").unwrap(),
            created_at_ms: 1,
            url: ReportUrl::parse(url).unwrap(),
            eu_link: EuLinkFacts::default(),
            items: vec![Item {
                sha256: Sha256([sha; 32]),
                md5: Md5([0; 16]),
                pdq: pdq.map(|h| (h, 90)),
                classification: class,
                age_group: AgeGroup::Unknown,
                media_type: MediaType::Image,
                known: None,
            }],
        }
    }

    fn open(r: &Report) -> impl FnOnce() -> CaseInfo + '_ {
        move || CaseInfo {
            id: CaseId::new_v7(),
            first_report: r.id,
            assessment: ReportClass::Baseline,
            locations: vec![LocationInfo::new(url_key(r), None, r.id)],
        }
    }

    /// A store that holds nothing and never applies a placement: every
    /// placement stays with the index, as between a batch and its commit.
    struct Nothing;

    impl CaseSource for Nothing {
        fn case_record(&self, _: &CaseId) -> Result<Option<pb::CaseRecord>, CaseError> {
            Ok(None)
        }
        fn case_of_key(&self, _: &ExactKey) -> Result<Option<CaseId>, CaseError> {
            Ok(None)
        }
        fn case_keys_since(
            &self,
            _: u64,
            _: &mut dyn FnMut(pb::CaseKeysRecord) -> Result<bool, CaseError>,
        ) -> Result<(), CaseError> {
            Ok(())
        }
        fn applied_placement(&self) -> u64 {
            0
        }
        fn durable_placement(&self) -> u64 {
            0
        }
        fn durable_keys_seq(&self) -> u64 {
            0
        }
    }

    fn empty() -> CaseIndex {
        CaseIndex::open(Arc::new(Nothing), PdqRuns::in_memory()).unwrap()
    }

    /// Places `r` as a batch of its own.
    fn alone(idx: &mut CaseIndex, r: &Report) -> (Placement, CaseKeys) {
        let mut b = idx.search_batch(&[Some(r)]);
        let (p, k, _) = idx.place(r, &url_key(r), &mut b, 0, open(r)).unwrap();
        (p, k)
    }

    fn sighting(case: &CaseInfo, how: &str, location: Option<u32>) -> Placement {
        Placement::Sighting {
            case: case.clone(),
            matched_by: how.into(),
            location,
        }
    }

    #[test]
    fn same_url_spelled_otherwise_same_file_and_near_pdq_join_the_first_case() {
        let mut idx = empty();
        let pdq = PdqHash([0x5a; 32]);
        let a = report(
            "https://Host.example/a/b/?#frag",
            1,
            Some(pdq),
            Classification::Baseline,
        );
        let (first, keys) = alone(&mut idx, &a);
        let Placement::Open(case) = first else {
            panic!("opens")
        };
        assert_eq!(
            (keys.urls.len(), keys.files.len(), keys.pdqs.len()),
            (1, 1, 1)
        );
        let b = report(
            "HTTPS://host.example:443/a/b",
            2,
            None,
            Classification::Baseline,
        );
        assert_eq!(alone(&mut idx, &b).0, sighting(&case, "url", Some(0)));
        let c = report("https://other.example/", 1, None, Classification::Baseline);
        assert_eq!(
            alone(&mut idx, &c).0,
            sighting(&case, "sha256 of item 0", None)
        );
        let mut near = pdq;
        near.0[0] ^= 0b111;
        let d = report(
            "https://third.example/",
            3,
            Some(near),
            Classification::Baseline,
        );
        assert_eq!(
            alone(&mut idx, &d).0,
            sighting(&case, "pdq of item 0 at distance 3", None)
        );
        // The locations of sightings lead to the case too.
        let e = report("https://third.example", 4, None, Classification::Baseline);
        assert!(matches!(alone(&mut idx, &e).0, Placement::Sighting { case: c, .. } if c == case));
        // An item assessed as not illegal joins nothing.
        let f = report(
            "https://fourth.example/",
            1,
            None,
            Classification::NotIllegal,
        );
        assert!(matches!(alone(&mut idx, &f).0, Placement::Open(_)));
        assert_eq!(idx.pending_cases.len(), 2);
    }

    #[test]
    fn a_batch_finds_its_own_earlier_reports_and_not_later_ones() {
        let mut idx = empty();
        let pdq = PdqHash([0x33; 32]);
        let z = report(
            "https://z.example/",
            9,
            Some(PdqHash([0xc4; 32])),
            Classification::Baseline,
        );
        alone(&mut idx, &z);
        // a and b in one batch, b near a: b joins a's case, found among
        // the batch's own reports (the index did not hold a when searched).
        let a = report("https://a.example/", 1, Some(pdq), Classification::Baseline);
        let mut near = pdq;
        near.0[5] ^= 1;
        let b = report(
            "https://b.example/",
            2,
            Some(near),
            Classification::Baseline,
        );
        let mut batch = idx.search_batch(&[Some(&b), Some(&a), Some(&b)]);
        // Placed first, b finds nothing yet: a comes later in the batch.
        let (first, _, _) = idx
            .place(&b, &url_key(&b), &mut batch, 0, open(&b))
            .unwrap();
        let Placement::Open(b_case) = first else {
            panic!("b opens")
        };
        let (second, _, _) = idx
            .place(&a, &url_key(&a), &mut batch, 1, open(&a))
            .unwrap();
        assert_eq!(
            second,
            sighting(&b_case, "pdq of item 0 at distance 1", None)
        );
        // Its second copy finds its own case by URL.
        let (third, _, _) = idx
            .place(&b, &url_key(&b), &mut batch, 2, open(&b))
            .unwrap();
        assert!(matches!(third, Placement::Sighting { ref case, .. } if case.id == b_case.id));
        assert_eq!(idx.pending_cases.len(), 2);
    }

    #[test]
    fn a_batchs_own_matches_are_the_same_pair_by_pair_and_through_an_index() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut hashes = Vec::new();
        let mut report_of = Vec::new();
        for r in 0..600usize {
            for _ in 0..3 {
                let h = if r > 10 && next() % 4 == 0 {
                    // A near copy of an earlier hash, 0 to 40 bits away.
                    let mut h: PdqHash = hashes[(next() as usize) % hashes.len()];
                    for _ in 0..(next() % 41) {
                        let bit = (next() % 256) as usize;
                        h.0[bit / 8] ^= 1 << (bit % 8);
                    }
                    h
                } else {
                    let mut b = [0u8; 32];
                    for c in b.chunks_mut(8) {
                        c.copy_from_slice(&next().to_le_bytes());
                    }
                    PdqHash(b)
                };
                hashes.push(h);
                report_of.push(r);
            }
        }
        let pairwise = earlier_matches(&hashes, &report_of, true);
        let indexed = earlier_matches(&hashes, &report_of, false);
        assert_eq!(pairwise, indexed);
        assert!(pairwise.iter().filter(|l| !l.is_empty()).count() > 100);
    }
}
