//! Victim notification at the hub: the `Series` service (police agencies
//! register series and link representatives, and mark cases in legal
//! proceedings; representatives set the victim's preference), the index
//! that matches every report placed in a case against the series, and the
//! notifier that turns what the store recorded into signed notifications.
//!
//! Never: a field that could name or describe a person; a notification
//! without the victim's choice; more digests in a period than the cap (the
//! calendar gives at most `cap` boundaries a period, and the store's writer
//! refuses a digest over the cap); a URL or a hash in a notification.

use crate::auth::Auth;
use crate::cases::usable_pdqs;
use crate::store::{sent_in, Outgoing, Refused, SeriesHashKey, Store, StoreError, Why};
use crate::takedown::next_tick;
use meldnet_core::time::Clock;
use meldnet_core::CaseId;
use meldnet_core::Refusal;
use meldnet_core::Sha256;
use meldnet_core::SigningKey;
use meldnet_core::SpiffeId;
use meldnet_core::{
    representative, sign_notification, DigestCalendar, NotificationId, Preference, SeriesHashes,
    SeriesId,
};
use meldnet_core::{Classification, Report};
use meldnet_pdq::{NearSet, PdqTable};
use meldnet_proto::v1 as pb;
use meldnet_proto::v1::series_server::Series;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tokio::sync::{watch, Notify};
use tonic::{Request, Response, Status};

/// The series' hashes in memory: what every report placed in a case is
/// matched against (exact SHA-256, or PDQ within 31 at quality >= 50).
#[derive(Default)]
pub struct SeriesIndex {
    ids: Vec<SeriesId>,
    numbers: HashMap<SeriesId, u64>,
    files: HashMap<Sha256, Vec<u64>>,
    pdq: PdqTable,
}

impl SeriesIndex {
    /// Rebuilds the index from the store.
    pub fn load(store: &Store) -> Result<SeriesIndex, StoreError> {
        let mut index = SeriesIndex::default();
        for k in store.series_hashes()? {
            match k {
                SeriesHashKey::Sha256(id, h) => {
                    let n = index.number(id);
                    index.files.entry(h).or_default().push(n);
                }
                SeriesHashKey::Pdq(id, h, q) => {
                    let n = index.number(id);
                    index.pdq.add(h, n, q);
                }
            }
        }
        Ok(index)
    }

    fn number(&mut self, id: SeriesId) -> u64 {
        *self.numbers.entry(id).or_insert_with(|| {
            self.ids.push(id);
            self.ids.len() as u64 - 1
        })
    }

    /// Adds hashes of a series (after they are stored).
    pub fn add(&mut self, id: SeriesId, hashes: &SeriesHashes) {
        let n = self.number(id);
        for h in &hashes.sha256 {
            let v = self.files.entry(*h).or_default();
            if !v.contains(&n) {
                v.push(n);
            }
        }
        for (h, q) in &hashes.pdq {
            self.pdq.add(*h, n, *q);
        }
    }

    /// Whether no series is held (then matching costs nothing).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The series whose material the report holds, in id order. Items a
    /// hotline assessed as not illegal never count.
    pub fn matching(&self, report: &Report) -> Vec<SeriesId> {
        if self.is_empty() {
            return Vec::new();
        }
        let mut found: Vec<u64> = Vec::new();
        for item in &report.items {
            if item.classification == Classification::NotIllegal {
                continue;
            }
            if let Some(v) = self.files.get(&item.sha256) {
                found.extend(v);
            }
        }
        if !self.pdq.is_empty() {
            for (_, h) in usable_pdqs(report) {
                found.extend(self.pdq.matches(&h).into_iter().map(|(n, _)| n));
            }
        }
        let mut ids: Vec<SeriesId> = found
            .into_iter()
            .filter_map(|n| self.ids.get(n as usize).copied())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

/// The `Series` service.
#[derive(Clone)]
pub struct SeriesService {
    store: Store,
    auth: Auth,
    index: Arc<RwLock<SeriesIndex>>,
    wake: Arc<Notify>,
}

impl SeriesService {
    /// Serves series over `store`; `index` is what ingest matches against;
    /// `wake` wakes the notifier.
    pub fn new(
        store: Store,
        auth: Auth,
        index: Arc<RwLock<SeriesIndex>>,
        wake: Arc<Notify>,
    ) -> Self {
        SeriesService {
            store,
            auth,
            index,
            wake,
        }
    }

    /// A refusal as the caller's answer (logged: nothing changed).
    fn refused<T>(out: Refused<T>) -> Result<T, Status> {
        out.map_err(|r| {
            tracing::warn!("refused: {r}");
            r.into()
        })
    }

    fn add_to_index(&self, id: SeriesId, hashes: &SeriesHashes) {
        self.index
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .add(id, hashes);
    }
}

#[tonic::async_trait]
impl Series for SeriesService {
    async fn register(
        &self,
        request: Request<pb::SeriesHashes>,
    ) -> Result<Response<pb::SeriesView>, Status> {
        let caller = self.auth.agency(&request)?;
        let req = request.into_inner();
        if !req.series_id.is_empty() {
            return Err(
                Refusal::invalid("series_id", "leave it empty: the hub picks a random id").into(),
            );
        }
        let hashes = SeriesHashes::from_proto(&req.hashes)?;
        let id = SeriesId::random();
        let view = self
            .store
            .register_series(id, &caller.id, hashes.clone())
            .await?;
        self.add_to_index(id, &hashes);
        Ok(Response::new(view))
    }

    async fn add_hashes(
        &self,
        request: Request<pb::SeriesHashes>,
    ) -> Result<Response<pb::SeriesView>, Status> {
        let caller = self.auth.agency(&request)?;
        let req = request.into_inner();
        let id = SeriesId::parse_field(&req.series_id, "series_id")?;
        let hashes = SeriesHashes::from_proto(&req.hashes)?;
        let view = Self::refused(
            self.store
                .add_series_hashes(id, &caller.id, hashes.clone())
                .await?,
        )?;
        self.add_to_index(id, &hashes);
        Ok(Response::new(view))
    }

    async fn link(
        &self,
        request: Request<pb::SeriesLink>,
    ) -> Result<Response<pb::SeriesView>, Status> {
        let caller = self.auth.agency(&request)?;
        let req = request.into_inner();
        let id = SeriesId::parse_field(&req.series_id, "series_id")?;
        let rep = representative(&req.representative, "representative")?;
        if rep.trust_domain() != caller.id.trust_domain() {
            return Err(Refusal::invalid("representative", "not of this federation").into());
        }
        let view = Self::refused(self.store.link_series(id, &caller.id, &rep).await?)?;
        Ok(Response::new(view))
    }

    async fn mark_proceedings(
        &self,
        request: Request<pb::ProceedingsMark>,
    ) -> Result<Response<pb::ProceedingsMarked>, Status> {
        let caller = self.auth.agency(&request)?;
        let req = request.into_inner();
        let case = CaseId::parse(&req.case_id).map_err(|e| Refusal::invalid("case_id", e))?;
        let newly_marked = Self::refused(self.store.mark_proceedings(case, &caller.id).await?)?;
        self.wake.notify_one();
        Ok(Response::new(pb::ProceedingsMarked {
            case_id: case.to_string(),
            newly_marked,
        }))
    }

    async fn set_preference(
        &self,
        request: Request<pb::Preference>,
    ) -> Result<Response<pb::Preference>, Status> {
        let caller = self.auth.representative(&request)?;
        let (id, preference) = Preference::from_proto(request.get_ref())?;
        let p = Self::refused(
            self.store
                .set_preference(id, &caller.id, preference)
                .await?,
        )?;
        self.wake.notify_one();
        Ok(Response::new(p))
    }

    async fn linked(
        &self,
        request: Request<pb::LinkedRequest>,
    ) -> Result<Response<pb::LinkedSeries>, Status> {
        let caller = self.auth.representative(&request)?;
        let me = caller.id.to_string();
        let mut series = Vec::new();
        for rec in self.store.series_records()? {
            if rec.representative != me {
                continue;
            }
            let id = SeriesId::parse(&rec.series_id).map_err(Status::internal)?;
            let p = self
                .store
                .preference(&id)?
                .map_or(Preference::Never, |(p, _)| p);
            series.push(p.to_proto(&id));
        }
        Ok(Response::new(pb::LinkedSeries { series }))
    }
}

/// Makes notifications from what the store recorded: every second, and at
/// once when woken (a preference, a proceedings mark, the clock moved).
/// Each is signed here and queued by the store's writer only if the
/// victim's choice in force still wants it.
pub struct Notifier {
    /// The store.
    pub store: Store,
    /// Signs notifications (the hub's key).
    pub signer: Arc<SigningKey>,
    /// The hub's clock: digests are cut on it.
    pub clock: Arc<Clock>,
    /// The hub's identity (actor of audit records).
    pub hub: SpiffeId,
    /// Woken on changes.
    pub wake: Arc<Notify>,
}

impl Notifier {
    /// Runs until `stopping` turns true.
    pub async fn run(self, mut stopping: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.round().await {
                tracing::error!(error = %e, "notifications: round failed; retrying");
            }
            if !next_tick(&self.wake, &mut stopping).await {
                return;
            }
        }
    }

    /// One round: proceedings drafts, then digests due. Returns how many
    /// notifications were queued.
    pub async fn round(&self) -> Result<usize, StoreError> {
        let mut queued = 0;
        for (case, draft) in self.store.proceedings_drafts()? {
            let Ok(series) = SeriesId::parse(&draft.series_id) else {
                continue;
            };
            let body = pb::notification::Body::Proceedings(draft.proceedings.unwrap_or_default());
            queued += usize::from(self.send(series, body, Why::Proceedings { case }).await?);
        }
        let now = self.clock.now_ms();
        for (series, pref, set_at_ms) in self.store.preferences()? {
            let Preference::Digest { period, cap } = pref else {
                continue;
            };
            let Some(state) = self.store.digest_state(&series)? else {
                continue;
            };
            let cal = DigestCalendar { period, cap };
            let to = cal.last_boundary(now);
            if to <= state.from_ms {
                continue;
            }
            let (new_cases, sightings) = self.store.series_counts(&series, state.from_ms, to)?;
            if new_cases + sightings == 0 {
                self.store.advance_digest(series, state.from_ms, to).await?;
                continue;
            }
            let period_start = cal.period_of(to);
            let sent = sent_in(&state, period_start);
            if sent >= cap {
                // Cannot happen on the calendar; kept counting for the next period.
                continue;
            }
            let body = pb::notification::Body::Digest(pb::Digest {
                period: period.to_proto() as i32,
                from_ms: state.from_ms,
                to_ms: to,
                new_cases,
                sightings,
                number: sent + 1,
                cap,
            });
            let why = Why::Digest {
                from: state.from_ms,
                to,
                period_start,
                number: sent + 1,
                set_at_ms,
            };
            queued += usize::from(self.send(series, body, why).await?);
        }
        Ok(queued)
    }

    async fn send(
        &self,
        series: SeriesId,
        body: pb::notification::Body,
        why: Why,
    ) -> Result<bool, StoreError> {
        let Some(rep) = self
            .store
            .series_record(&series)?
            .and_then(|r| SpiffeId::parse(&r.representative).ok())
        else {
            return Ok(false);
        };
        let id = NotificationId::new_v7();
        let n = pb::Notification {
            notification_id: id.to_string(),
            series_id: series.to_string(),
            representative: rep.to_string(),
            made_at_ms: self.clock.now_ms(),
            body: Some(body),
        };
        let out = Outgoing {
            id,
            series,
            representative: rep,
            signed: sign_notification(&self.signer, &n),
            why,
            actor: self.hub.clone(),
        };
        self.store.notify(out).await
    }
}
