//! Retention: what the hub keeps, for how long, and what never expires.
//!
//! A retention pass erases a report (its signed bytes, its decision and
//! its history) once all of these hold:
//!
//! - the hub received it longer ago than the period of its hotline's
//!   country (`[retention.countries.CC]`, else `[retention] reports_days`;
//!   0 keeps it for ever);
//! - no queue entry names it: every delivery of it, and of every further
//!   decision on it, was acknowledged or refused;
//! - its case, if it has one, is settled: every location removed, split
//!   out or without a notice due, and no legal proceedings marked;
//! - no location of its case stands on it: the case's first report and
//!   each location's first report stay as long as the case, because
//!   escalations and further notices are made from them.
//!
//! The pass chooses outside the writer, from what is committed; the writer
//! checks again, in the group that erases, what may have changed since (an
//! entry queued after the pass looked, a case reopened by a re-appearance,
//! a report split into a case of its own), so nothing queued or open is
//! ever erased under its recipient. Each group of erasures appends an
//! audit record naming the reports it erased.
//!
//! Series' matches (what the victims' digests count) older than their
//! period are erased the same way. What stays for as long as the store:
//! the audit chain (it names reports and hashes, never their content),
//! cases with their keys and locations, and the known-hash list.

use super::cases::location_state;
use super::pipeline::{event, Writer};
use super::seam::{Group, QueueItem, Reads};
use super::{Store, StoreError};
use meldnet_core::CaseId;
use meldnet_core::CountryCode;
use meldnet_core::ReportId;
use meldnet_core::SeriesId;
use meldnet_core::SpiffeId;
use meldnet_proto::v1 as pb;
use prost::Message;
use std::collections::{BTreeMap, HashSet};

/// Reports chosen and erased in one group (and named in one audit record).
const PAGE: usize = 512;

/// How far ahead of the hub's clock a node's clock may have made a report
/// id: the walk over ids (in the order their nodes made them) stops this
/// far past the newest cutoff, and a report is judged by when the hub
/// received it, never by its id.
const CLOCK_SLACK_MS: i64 = 86_400_000;

/// The periods a pass applies, from `[retention]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// How long a report is kept after it was received (none: for ever).
    pub reports_ms: Option<i64>,
    /// Per reporting hotline's country, in place of `reports_ms`.
    pub countries: BTreeMap<CountryCode, Option<i64>>,
    /// How long a series' match is kept (none: for ever).
    pub series_matches_ms: Option<i64>,
}

impl RetentionPolicy {
    /// Reports of `origin` received before this may be erased.
    fn report_cutoff(&self, origin: &str, now_ms: i64) -> Option<i64> {
        let period = CountryCode::parse(origin)
            .ok()
            .and_then(|c| self.countries.get(&c).copied())
            .unwrap_or(self.reports_ms);
        period.map(|p| now_ms.saturating_sub(p))
    }

    /// The newest cutoff of any country: no report received after it
    /// expires in this pass.
    fn newest_cutoff(&self, now_ms: i64) -> Option<i64> {
        self.countries
            .values()
            .copied()
            .chain(std::iter::once(self.reports_ms))
            .flatten()
            .min()
            .map(|p| now_ms.saturating_sub(p))
    }
}

/// What a pass did, and why it kept what it kept.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    /// Reports erased.
    pub reports: u64,
    /// Old enough, kept: a queue entry still names them.
    pub kept_queued: u64,
    /// Old enough, kept: their case is not settled.
    pub kept_open_case: u64,
    /// Old enough, kept: a location of their case stands on them.
    pub kept_location: u64,
    /// Kept: their report, keys or case do not read (damage; `store
    /// check` names it).
    pub kept_damaged: u64,
    /// Series' matches erased.
    pub series_matches: u64,
}

/// Erasures the pass hands to the writer, to be checked again there.
#[derive(Debug)]
pub(super) struct ExpireWrite {
    /// Reports chosen, each with the case it belonged to when chosen.
    pub chosen: Vec<(ReportId, Option<CaseId>)>,
    /// The first queue position the pass did not see.
    pub queued_from: u64,
    /// When, and who (the hub) erases.
    pub at_ms: i64,
    pub actor: SpiffeId,
}

/// One page of a pass, chosen on a blocking thread.
#[derive(Default)]
struct Page {
    chosen: Vec<(ReportId, Option<CaseId>)>,
    kept: Expired,
    /// The last id read (none: the walk is at its end).
    last: Option<ReportId>,
    /// The walk passed the newest cutoff.
    done: bool,
}

/// The reports a queue entry names, as far as a pass has read the queues:
/// read whole once, then, before each page, only the entries queued since
/// (the writer then checks only what came after `from`).
#[derive(Default)]
struct Queued {
    ids: HashSet<ReportId>,
    /// The first queue position not read yet.
    from: u64,
}

impl Queued {
    fn catch_up(&mut self, reads: &dyn Reads) -> Result<(), StoreError> {
        // The position first: an entry queued after it is read again (by
        // the next catch-up, or by the writer's check).
        let next = reads.counters()?.next_queue_seq;
        add_queued(reads, self.from, &mut self.ids)?;
        self.from = next;
        Ok(())
    }
}

/// Adds the report of every queue entry from position `from` on (a
/// notification names no report).
fn add_queued(reads: &dyn Reads, from: u64, ids: &mut HashSet<ReportId>) -> Result<(), StoreError> {
    reads.each_queue_entry(from, &mut |_, item| {
        if !matches!(item, QueueItem::Notification(_)) {
            ids.insert(item.report_id());
        }
        true
    })
}

/// Runs a pass's reads on a blocking thread: a pass over years of reports
/// must not hold a request thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Io(format!("retention pass: {e}")))?
}

/// Why a report stays (or that it may go).
enum Verdict {
    Erase(Option<CaseId>),
    Young,
    Queued,
    OpenCase,
    Location,
}

/// Whether nothing is left to do at a case: every location removed,
/// split out or without a notice due, and no legal proceedings.
pub fn settled(rec: &pb::CaseRecord) -> bool {
    rec.proceedings_by.is_empty()
        && rec.locations.iter().all(|l| {
            matches!(
                location_state(l, 0),
                "split_out" | "removed" | "removed_late" | "no_notice_due"
            )
        })
}

/// Whether the case, or one of its locations, stands on `report`.
fn stands_on(rec: &pb::CaseRecord, report: &ReportId) -> bool {
    let r = report.to_string();
    rec.first_report_id == r || rec.locations.iter().any(|l| l.first_report_id == r)
}

/// "1 report", "2 reports".
fn plural(n: u64, what: &str) -> String {
    match (n, what.ends_with("ch")) {
        (1, _) => format!("1 {what}"),
        (_, true) => format!("{n} {what}es"),
        _ => format!("{n} {what}s"),
    }
}

fn case_of(keys: &pb::CaseKeysRecord) -> Result<CaseId, StoreError> {
    let b: [u8; 16] = keys
        .case_id
        .as_slice()
        .try_into()
        .map_err(|_| StoreError::Corrupt("case keys: case id".into()))?;
    Ok(CaseId::from_bytes(b))
}

impl Store {
    /// Runs a retention pass at `now_ms`: erases what `policy` lets go and
    /// nothing else needs, each group with its audit record (by `actor`,
    /// the hub).
    pub async fn expire(
        &self,
        policy: &RetentionPolicy,
        now_ms: i64,
        actor: &SpiffeId,
    ) -> Result<Expired, StoreError> {
        let mut out = Expired::default();
        if let Some(newest) = policy.newest_cutoff(now_ms) {
            self.expire_reports(policy, now_ms, newest, actor, &mut out)
                .await?;
        }
        if let Some(period) = policy.series_matches_ms {
            let series: Vec<SeriesId> = self
                .series_records()?
                .iter()
                .filter_map(|r| SeriesId::parse(&r.series_id).ok())
                .collect();
            if !series.is_empty() {
                let before = now_ms.saturating_sub(period);
                let actor = actor.clone();
                out.series_matches = self
                    .send(|tx| {
                        super::pipeline::WriteOp::ExpireMatches(series, before, now_ms, actor, tx)
                    })?
                    .await?;
            }
        }
        Ok(out)
    }

    async fn expire_reports(
        &self,
        policy: &RetentionPolicy,
        now_ms: i64,
        newest: i64,
        actor: &SpiffeId,
        out: &mut Expired,
    ) -> Result<(), StoreError> {
        let mut queued = Queued::default();
        let mut after = None;
        loop {
            let (store, policy) = (self.clone(), policy.clone());
            let (page, caught_up) = blocking(move || {
                queued.catch_up(&*store)?;
                let page = store.choose(after, &policy, now_ms, newest, &queued.ids)?;
                Ok((page, queued))
            })
            .await?;
            queued = caught_up;
            out.kept_queued += page.kept.kept_queued;
            out.kept_open_case += page.kept.kept_open_case;
            out.kept_location += page.kept.kept_location;
            out.kept_damaged += page.kept.kept_damaged;
            if !page.chosen.is_empty() {
                let w = ExpireWrite {
                    chosen: page.chosen,
                    queued_from: queued.from,
                    at_ms: now_ms,
                    actor: actor.clone(),
                };
                out.reports += self
                    .send(|tx| super::pipeline::WriteOp::Expire(w, tx))?
                    .await?;
            }
            match page.last {
                Some(last) if !page.done => after = Some(last),
                _ => return Ok(()),
            }
        }
    }

    /// One page of the walk after `after`: what may go, and why the rest
    /// stays.
    fn choose(
        &self,
        after: Option<ReportId>,
        policy: &RetentionPolicy,
        now_ms: i64,
        newest: i64,
        queued: &HashSet<ReportId>,
    ) -> Result<Page, StoreError> {
        let ids = self.report_ids_after(after.as_ref(), PAGE)?;
        let mut page = Page {
            last: ids.last().copied(),
            ..Page::default()
        };
        for id in ids {
            if id.made_at_ms() > newest.saturating_add(CLOCK_SLACK_MS) {
                page.done = true;
                break;
            }
            match self.verdict(&id, policy, now_ms, queued) {
                Ok(Verdict::Erase(case)) => page.chosen.push((id, case)),
                Ok(Verdict::Young) => {}
                Ok(Verdict::Queued) => page.kept.kept_queued += 1,
                Ok(Verdict::OpenCase) => page.kept.kept_open_case += 1,
                Ok(Verdict::Location) => page.kept.kept_location += 1,
                // What does not read is kept (and named), never guessed
                // at; the rest of the pass goes on.
                Err(StoreError::Corrupt(why)) => {
                    tracing::warn!(report = %id, "retention: kept, its records do not read: {why}");
                    page.kept.kept_damaged += 1;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(page)
    }

    /// What a pass does with one report, from what is committed.
    fn verdict(
        &self,
        id: &ReportId,
        policy: &RetentionPolicy,
        now_ms: i64,
        queued: &HashSet<ReportId>,
    ) -> Result<Verdict, StoreError> {
        let Some(stored) = self.report(id)? else {
            return Ok(Verdict::Young);
        };
        let report = stored
            .report
            .as_ref()
            .map(|r| pb::Report::decode(r.report.as_slice()))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("report {id}: {e}")))?
            .unwrap_or_default();
        match policy.report_cutoff(&report.origin_country, now_ms) {
            Some(cutoff) if stored.received_at_ms < cutoff => {}
            _ => return Ok(Verdict::Young),
        }
        if queued.contains(id) {
            return Ok(Verdict::Queued);
        }
        let Some(keys) = self.case_keys_of(id)? else {
            return Ok(Verdict::Erase(None));
        };
        let case = case_of(&keys)?;
        let Some(rec) = self.case(&case)? else {
            return Err(StoreError::Corrupt(format!(
                "report {id}: its case {case} is not stored"
            )));
        };
        Ok(if !settled(&rec) {
            Verdict::OpenCase
        } else if stands_on(&rec, id) {
            Verdict::Location
        } else {
            Verdict::Erase(Some(case))
        })
    }
}

impl Writer {
    /// Erases what a pass chose, unless something changed since it looked:
    /// a queue entry that names the report, its case reopened or no longer
    /// its case. One audit record names what was erased. Staged before
    /// anything else of its group, so what is committed is what the group
    /// sees.
    pub(super) fn stage_expire(
        &mut self,
        g: &mut dyn Group,
        w: ExpireWrite,
    ) -> Result<u64, StoreError> {
        let mut queued_since = HashSet::new();
        add_queued(self.backend.reads(), w.queued_from, &mut queued_since)?;
        let mut erased = Vec::new();
        for (id, case) in w.chosen {
            if queued_since.contains(&id) || g.report(&id)?.is_none() {
                continue;
            }
            let now_case = self
                .backend
                .case_keys_of(&id)?
                .map(|k| case_of(&k))
                .transpose()?;
            if now_case != case {
                continue;
            }
            if let Some(c) = case {
                match g.case(&c)? {
                    Some(rec) if settled(&rec) && !stands_on(&rec, &id) => {}
                    _ => continue,
                }
            }
            g.erase_report(&id)?;
            erased.push(id);
        }
        if !erased.is_empty() {
            let names: Vec<String> = erased.iter().map(ReportId::to_string).collect();
            let ev = event(
                w.at_ms,
                "expired",
                &w.actor,
                plural(erased.len() as u64, "report"),
                format!(
                    "erased under the retention rules (signed report, decision, history): {}",
                    names.join(" ")
                ),
            );
            self.stage_audit(g, ev);
            self.bump_by("reports_expired", erased.len() as u64);
            metrics::counter!("meldnet_reports_expired_total").increment(erased.len() as u64);
        }
        Ok(erased.len() as u64)
    }

    /// Erases series' matches recorded before `before_ms`, with an audit
    /// record when any went.
    pub(super) fn stage_expire_matches(
        &mut self,
        g: &mut dyn Group,
        series: &[SeriesId],
        before_ms: i64,
        at_ms: i64,
        actor: &SpiffeId,
    ) -> Result<u64, StoreError> {
        let mut n = 0;
        for s in series {
            n += g.erase_series_matches(s, before_ms)?;
        }
        if n > 0 {
            let ev = event(
                at_ms,
                "expired",
                actor,
                plural(n, "series match"),
                format!(
                    "erased under the retention rules: matches recorded before {}",
                    meldnet_core::time::rfc3339(before_ms)
                ),
            );
            self.stage_audit(g, ev);
            self.bump_by("series_matches_expired", n);
        }
        Ok(n)
    }
}
