//! Deconfliction: reports of one location or one file make one case. The
//! index here (normalised URL, exact SHA-256 of items, PDQ of items within
//! the match threshold) answers, for each EU-linked report in the order
//! they are decided, whether it opens a case or is a sighting of one. It
//! lives in memory, is rebuilt from the store at start, and is changed only
//! under ingest's lock, so that two reports of the same thing in one batch,
//! or in two batches at once, still make one case.
//!
//! Which items count: those assessed illegal or not yet assessed. An item
//! assessed as not illegal (a logo, a screenshot beside the material) never
//! joins two unrelated cases.
//!
//! Why a presearch: a PDQ search of a large index is the costly part (a
//! tenth of a millisecond per item at a million cases, bound by memory
//! latency). Ingest, holding the lock, searches for a whole batch on all
//! cores (`presearch`); `place` then, report by report, checks the exact
//! keys and the PDQ hashes the batch added since (`delta`), which gives the
//! same answer as a full search at that moment.

use crate::rules::ReportClass;
use meldnet_core::CaseId;
use meldnet_core::CountryCode;
use meldnet_core::{Classification, Report, ReportId};
use meldnet_core::{PdqHash, Sha256};

use meldnet_pdq::{NearSet, PdqTable};
use meldnet_pdq::{MATCH_THRESHOLD, MIN_MATCH_QUALITY};
use meldnet_proto::v1 as pb;
use std::collections::HashMap;

/// Stored case data that does not make sense: the store is damaged.
#[derive(Debug, Clone, thiserror::Error)]
#[error("store: corrupt record {0}")]
pub struct DamagedCase(pub String);

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

/// PDQ hashes added lately, kept so that a presearch can be completed.
const DELTA_MAX: usize = 1 << 16;

/// The PDQ part of deconfliction, done ahead under a read lock.
#[derive(Debug, Clone, Default)]
pub struct Presearch {
    /// The index's generation when searched.
    generation: u64,
    /// Best match then: (distance, case number, item).
    best: Option<(u32, u32, usize)>,
}

/// The deconfliction index.
#[derive(Default)]
pub struct CaseIndex {
    cases: Vec<CaseInfo>,
    by_id: HashMap<CaseId, u32>,
    urls: HashMap<[u8; 32], u32>,
    files: HashMap<Sha256, u32>,
    pdq: PdqTable,
    /// Reports placed so far (since start).
    generation: u64,
    /// Presearches older than this were made on an index since rebuilt
    /// (its case numbers differ): they are searched again in full.
    floor: u64,
    /// PDQ hashes added at each generation (the last `DELTA_MAX`).
    delta: std::collections::VecDeque<(u64, PdqHash, u32)>,
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
    /// Rebuilds the index from records held together (tests, small
    /// stores); a store streams them through [`CaseIndexBuilder`].
    pub fn load(data: CaseIndexData) -> Result<CaseIndex, DamagedCase> {
        let mut b = CaseIndexBuilder::default();
        for rec in &data.cases {
            b.case(rec)?;
        }
        for (u, id) in data.urls {
            b.url(u, &id)?;
        }
        for (f, id) in data.files {
            b.file(f, &id)?;
        }
        for (id, h, q) in data.pdqs {
            b.pdq(h, q, &id)?;
        }
        Ok(b.finish())
    }

    /// The case as placing knows it now.
    pub fn info(&self, id: &CaseId) -> Option<&CaseInfo> {
        self.by_id.get(id).and_then(|n| self.cases.get(*n as usize))
    }

    /// Changes a case as a placed report (or a step) changed it, so that
    /// the next report is placed on what is in force.
    pub fn update(&mut self, id: &CaseId, change: impl FnOnce(&mut CaseInfo)) {
        if let Some(c) = self
            .by_id
            .get(id)
            .and_then(|n| self.cases.get_mut(*n as usize))
        {
            change(c);
        }
    }

    /// Replaces the index with `fresh`, rebuilt from the store (after an
    /// operator split a report out: its keys lead to its own case now).
    /// Presearches made before are searched again.
    pub fn reload(&mut self, mut fresh: CaseIndex) {
        fresh.generation = self.generation + 1;
        fresh.floor = fresh.generation;
        *self = fresh;
    }

    /// An empty index.
    pub fn new() -> CaseIndex {
        CaseIndex::default()
    }

    fn insert(&mut self, info: CaseInfo) -> u32 {
        let n = self.cases.len() as u32;
        self.by_id.insert(info.id, n);
        self.cases.push(info);
        n
    }

    /// Cases held.
    pub fn len(&self) -> usize {
        self.cases.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.cases.is_empty()
    }

    /// The PDQ search of a report's items, to be completed by `place`.
    pub fn presearch(&self, report: &Report) -> Presearch {
        let mut best: Option<(u32, u32, usize)> = None;
        for (i, h) in usable_pdqs(report) {
            if let Some((n, d)) = self.pdq.best(&h, |_| true) {
                best = better(best, (d, n as u32, i));
            }
        }
        Presearch {
            generation: self.generation,
            best,
        }
    }

    /// The case that already holds this report's location or one of its
    /// files, and how it matched: URL first, then exact hash, then PDQ
    /// (`pre` completed with what was added since it was made).
    fn find(&self, report: &Report, pre: &Presearch) -> Option<(u32, String)> {
        if let Some(n) = self.urls.get(&url_key(report)) {
            return Some((*n, "url".into()));
        }
        for (i, item) in report.items.iter().enumerate() {
            if !counts(item.classification) {
                continue;
            }
            if let Some(n) = self.files.get(&item.sha256) {
                return Some((*n, format!("sha256 of item {i}")));
            }
        }
        // The delta is complete from its first generation on (the one
        // before may have been cut in part).
        let stale = pre.generation < self.floor
            || self
                .delta
                .front()
                .is_some_and(|(g, _, _)| pre.generation < *g);
        let best = if stale {
            // Too old to complete from the delta: search again, in full.
            self.presearch(report).best
        } else {
            let mut best = pre.best;
            for (g, h, n) in self.delta.iter().rev() {
                if *g <= pre.generation {
                    break;
                }
                for (i, qh) in usable_pdqs(report) {
                    let d = h.distance(&qh);
                    if d <= MATCH_THRESHOLD {
                        best = better(best, (d, *n, i));
                    }
                }
            }
            best
        };
        best.map(|(d, n, i)| (n, format!("pdq of item {i} at distance {d}")))
    }

    /// Places a report: a sighting of the case that holds its location or
    /// a file, or a new case made by `open`. The report's keys the case
    /// did not hold yet join it; they are returned for the store.
    pub fn place(
        &mut self,
        report: &Report,
        pre: &Presearch,
        open: impl FnOnce() -> CaseInfo,
    ) -> (Placement, CaseKeys) {
        let found = self
            .find(report, pre)
            .and_then(|(n, how)| Some((n, how, self.cases.get(n as usize)?.clone())));
        let (n, placement) = match found {
            Some((n, how, case)) => {
                let location = case.location_of(&url_key(report));
                (
                    n,
                    Placement::Sighting {
                        case,
                        matched_by: how,
                        location,
                    },
                )
            }
            None => {
                let info = open();
                (self.insert(info.clone()), Placement::Open(info))
            }
        };
        self.generation += 1;
        let mut keys = CaseKeys::default();
        let u = url_key(report);
        if let std::collections::hash_map::Entry::Vacant(v) = self.urls.entry(u) {
            v.insert(n);
            keys.urls.push(u);
        }
        for item in report.items.iter().filter(|i| counts(i.classification)) {
            if let std::collections::hash_map::Entry::Vacant(v) = self.files.entry(item.sha256) {
                v.insert(n);
                keys.files.push(item.sha256);
            }
            // Every usable PDQ joins (an identical one only costs memory:
            // checking first would cost a second search per item).
            if let Some((h, q)) = item.pdq.filter(|(_, q)| *q >= MIN_MATCH_QUALITY) {
                self.pdq.add(h, u64::from(n), q);
                self.delta.push_back((self.generation, h, n));
                keys.pdqs.push((h, q));
            }
        }
        while self.delta.len() > DELTA_MAX {
            self.delta.pop_front();
        }
        (placement, keys)
    }
}

/// Builds the index record by record, in the order a store walks: every
/// case first, then the keys that lead to them. The PDQ hashes are added at
/// the end, all at once, so that the table's lists are sized exactly.
#[derive(Default)]
pub struct CaseIndexBuilder {
    index: CaseIndex,
    pdqs: Vec<(PdqHash, u64, u8)>,
}

impl CaseIndexBuilder {
    /// A stored case.
    pub fn case(&mut self, rec: &pb::CaseRecord) -> Result<(), DamagedCase> {
        self.index.insert(case_info(rec)?);
        Ok(())
    }

    fn number(&self, id: &CaseId) -> Result<u32, DamagedCase> {
        self.index
            .by_id
            .get(id)
            .copied()
            .ok_or_else(|| DamagedCase(format!("key of a case not stored: {id}")))
    }

    /// A URL key of case `id`.
    pub fn url(&mut self, u: [u8; 32], id: &CaseId) -> Result<(), DamagedCase> {
        let n = self.number(id)?;
        self.index.urls.insert(u, n);
        Ok(())
    }

    /// A file key of case `id`.
    pub fn file(&mut self, f: Sha256, id: &CaseId) -> Result<(), DamagedCase> {
        let n = self.number(id)?;
        self.index.files.insert(f, n);
        Ok(())
    }

    /// A PDQ hash of case `id`.
    pub fn pdq(&mut self, h: PdqHash, quality: u8, id: &CaseId) -> Result<(), DamagedCase> {
        let n = self.number(id)?;
        self.pdqs.push((h, u64::from(n), quality));
        Ok(())
    }

    /// Every key one report brought to case `id`.
    pub fn keys(&mut self, id: &CaseId, keys: CaseKeys) -> Result<(), DamagedCase> {
        for u in keys.urls {
            self.url(u, id)?;
        }
        for f in keys.files {
            self.file(f, id)?;
        }
        for (h, q) in keys.pdqs {
            self.pdq(h, q, id)?;
        }
        Ok(())
    }

    /// The index.
    pub fn finish(mut self) -> CaseIndex {
        self.index.pdq.extend(&self.pdqs);
        self.index
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

/// The nearer of two matches (distance, then the older case, then the item).
fn better(a: Option<(u32, u32, usize)>, b: (u32, u32, usize)) -> Option<(u32, u32, usize)> {
    match a {
        Some(a) if a <= b => Some(a),
        _ => Some(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meldnet_core::Md5;
    use meldnet_core::{AgeGroup, EuLinkFacts, Item, MediaType, ReportUrl};

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

    fn sighting(case: &CaseInfo, how: &str, location: Option<u32>) -> Placement {
        Placement::Sighting {
            case: case.clone(),
            matched_by: how.into(),
            location,
        }
    }

    #[test]
    fn same_url_spelled_otherwise_same_file_and_near_pdq_join_the_first_case() {
        let mut idx = CaseIndex::new();
        let pdq = PdqHash([0x5a; 32]);
        let a = report(
            "https://Host.example/a/b/?#frag",
            1,
            Some(pdq),
            Classification::Baseline,
        );
        let (first, keys) = {
            let p = idx.presearch(&a);
            idx.place(&a, &p, open(&a))
        };
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
        assert_eq!(
            {
                let p = idx.presearch(&b);
                idx.place(&b, &p, open(&b))
            }
            .0,
            sighting(&case, "url", Some(0))
        );
        let c = report("https://other.example/", 1, None, Classification::Baseline);
        assert_eq!(
            {
                let p = idx.presearch(&c);
                idx.place(&c, &p, open(&c))
            }
            .0,
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
            {
                let p = idx.presearch(&d);
                idx.place(&d, &p, open(&d))
            }
            .0,
            sighting(&case, "pdq of item 0 at distance 3", None)
        );
        // The locations of sightings lead to the case too.
        let e = report("https://third.example", 4, None, Classification::Baseline);
        assert!(
            matches!({ let p = idx.presearch(&e); idx.place(&e, &p, open(&e)) }.0, Placement::Sighting { case: c, .. } if c == case)
        );
        // An item assessed as not illegal joins nothing.
        let f = report(
            "https://fourth.example/",
            1,
            None,
            Classification::NotIllegal,
        );
        assert!(matches!(
            {
                let p = idx.presearch(&f);
                idx.place(&f, &p, open(&f))
            }
            .0,
            Placement::Open(_)
        ));
        assert_eq!(idx.len(), 2);
    }

    #[test]
    fn a_presearch_made_before_other_placements_is_completed_by_them() {
        let mut idx = CaseIndex::new();
        let pdq = PdqHash([0x33; 32]);
        let a = report("https://a.example/", 1, Some(pdq), Classification::Baseline);
        let mut near = pdq;
        near.0[5] ^= 1;
        let b = report(
            "https://b.example/",
            2,
            Some(near),
            Classification::Baseline,
        );
        let z = report(
            "https://z.example/",
            9,
            Some(PdqHash([0xc4; 32])),
            Classification::Baseline,
        );
        let pre_z = idx.presearch(&z);
        idx.place(&z, &pre_z, open(&z));
        // b is searched before a is placed (two batches in flight): the
        // delta since then completes its search.
        let pre_b = idx.presearch(&b);
        assert!(pre_b.best.is_none());
        let pre_a = idx.presearch(&a);
        let (Placement::Open(case), _) = idx.place(&a, &pre_a, open(&a)) else {
            panic!("a opens")
        };
        assert_eq!(
            idx.place(&b, &pre_b, open(&b)).0,
            sighting(&case, "pdq of item 0 at distance 1", None)
        );
    }
}
