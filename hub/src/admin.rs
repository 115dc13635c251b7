//! The `Admin` gRPC service, for operators only: state digests, audit
//! verification, the known-hash list, the routing rules, explanations of
//! single reports and statistics, while the hub runs.

use crate::auth::Auth;
use crate::hash_list::parse_entries;
use crate::hash_list::HashList;
use crate::ingest::{current, Ingest, Routes};
use crate::registry::Registry;
use crate::rules::RuleSet;
use crate::store::{location_state, noticed_or_opened, Setting, Store};
use meldnet_core::time::{Clock, ClockError};
use meldnet_core::PublicKey;
use meldnet_core::ReportId;
use meldnet_core::SpiffeId;
use meldnet_core::{CaseId, CaseStep, StepKind};
use meldnet_core::{Refusal, RefusalKind};
use meldnet_proto::v1 as pb;
use meldnet_proto::v1::admin_server::Admin;
use prost::Message;
use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

/// Most sightings an explanation lists.
const MAX_EXPLAINED_SIGHTINGS: usize = 1000;

/// The service; cheap to clone.
#[derive(Clone)]
pub struct AdminService {
    store: Store,
    list: Arc<HashList>,
    clock: Arc<Clock>,
    auth: Auth,
    routes: Routes,
    /// One change of rules or registry at a time: versions follow each
    /// other and each router swap starts from the last.
    changes: Arc<tokio::sync::Mutex<()>>,
    /// Woken when the clock moves: deadlines may have passed, digests be due.
    clock_moved: Vec<Arc<Notify>>,
    registry: Arc<Registry>,
    /// Splits a report out of its case (deconfliction is ingest's).
    ingest: Ingest,
}

impl AdminService {
    /// Serves operators over what `ingest` works on (the store, the list,
    /// the routing in force, the registry and the hub's clock); each of
    /// `clock_moved` is woken when the clock moves.
    pub fn new(ingest: Ingest, auth: Auth, clock_moved: Vec<Arc<Notify>>) -> Self {
        let (store, list, clock, routes, registry) = (
            ingest.store.clone(),
            ingest.list.clone(),
            ingest.clock.clone(),
            ingest.routes.clone(),
            ingest.registry.clone(),
        );
        AdminService {
            store,
            list,
            clock,
            auth,
            routes,
            changes: Arc::new(tokio::sync::Mutex::new(())),
            clock_moved,
            registry,
            ingest,
        }
    }

    /// Routes to the registry's parties from now on.
    fn reroute(&self) {
        let router = current(&self.routes);
        *self.routes.write().unwrap_or_else(PoisonError::into_inner) =
            Arc::new(router.with_parties(self.registry.nodes(), self.registry.agencies()));
    }

    /// Stores a registration with its audit record, then applies it.
    async fn store_registration(
        &self,
        caller: &SpiffeId,
        r: pb::Registration,
        keys: &[PublicKey],
        detail: String,
    ) -> Result<pb::Registration, Status> {
        let id = SpiffeId::parse(&r.identity)
            .map_err(|e| Refusal::invalid("identity", e.to_string()))?;
        self.store
            .set(
                Setting::Registration(r.clone()),
                caller,
                format!("registry {id}"),
                detail,
                r.updated_at_ms,
            )
            .await
            .map_err(Status::from)?;
        self.registry.apply(r.clone(), keys)?;
        self.reroute();
        tracing::warn!(caller = %caller, party = %id, revoked = r.revoked, "registry changed");
        Ok(r)
    }
}

/// Runs a store read off the request threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
}

fn explain(store: &Store, id: ReportId, now_ms: i64) -> Result<pb::Explanation, Status> {
    let stored = store.report(&id).map_err(Status::from)?.ok_or_else(|| {
        Status::from(Refusal::new(
            RefusalKind::NotFound,
            "report_id",
            format!(
                "no report {id} is stored (never received, or erased under the retention rules: an \"expired\" audit record names it)"
            ),
        ))
    })?;
    let history = store.history(&id).map_err(Status::from)?;
    let case_id = stored
        .decision
        .as_ref()
        .and_then(|d| pb::Decision::decode(d.decision.as_slice()).ok())
        .and_then(|d| d.case_ref)
        .and_then(|c| CaseId::parse(&c.case_id).ok());
    let case = match case_id {
        None => None,
        Some(cid) => match store.case(&cid).map_err(Status::from)? {
            None => None,
            Some(rec) => {
                let sightings = store
                    .sightings(&cid, MAX_EXPLAINED_SIGHTINGS)
                    .map_err(Status::from)?;
                let mut locations = Vec::new();
                for (i, l) in rec.locations.iter().enumerate() {
                    let mut escalations = Vec::new();
                    for e in &l.escalations {
                        let Ok(eid) = CaseId::parse(e) else { continue };
                        if let Some(s) = store.escalation(&eid).map_err(Status::from)? {
                            escalations.extend(s.decision);
                        }
                    }
                    locations.push(pb::LocationView {
                        location: i as u32,
                        hosting_country: l.hosting_country.clone(),
                        first_report_id: l.first_report_id.clone(),
                        opened_at_ms: l.opened_at_ms,
                        deadline_ms: l.deadline_ms,
                        state: location_state(l, now_ms).into(),
                        steps: l.steps.iter().filter_map(|s| s.signed.clone()).collect(),
                        step_received_at_ms: l
                            .steps
                            .iter()
                            .filter(|s| s.signed.is_some())
                            .map(|s| s.received_at_ms)
                            .collect(),
                        escalations,
                        provider: l.provider.clone(),
                        removed_at_ms: l.removed_at_ms,
                        noticed_at_ms: l.noticed_at_ms,
                        noticed_by_report_id: l.noticed_by_report_id.clone(),
                        moved_to_case_id: l.moved_to_case_id.clone(),
                    });
                }
                Some(pb::CaseView {
                    case_id: rec.case_id.clone(),
                    first_report_id: rec.first_report_id.clone(),
                    opened_at_ms: rec.opened_at_ms,
                    sighting_report_ids: sightings.iter().map(|r| r.to_string()).collect(),
                    assessment: crate::cases::assessment_from_proto(rec.assessment)
                        .map_or("unspecified", crate::routing::class_name)
                        .into(),
                    locations,
                })
            }
        },
    };
    Ok(pb::Explanation {
        report: Some(pb::StoredReportView {
            report: stored.report,
            decision: stored.decision,
            received_at_ms: stored.received_at_ms,
        }),
        history,
        case_view: case,
    })
}

/// The value at fraction `q` of sorted `v` (nearest rank).
fn quantile(v: &[i64], q: f64) -> i64 {
    if v.is_empty() {
        return 0;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v.get(rank - 1).copied().unwrap_or(0)
}

fn stats(store: &Store) -> Result<pb::StatsResponse, Status> {
    let mut out = pb::StatsResponse::default();
    for (name, n) in store.counts().map_err(Status::from)? {
        let country = |c: &str| pb::CountryCount {
            country: c.to_string(),
            reports: n,
        };
        match name.split_once('/') {
            Some(("origin", c)) => out.by_origin.push(country(c)),
            Some(("hosting", c)) => out.by_hosting.push(country(c)),
            Some(("material", "known")) => out.known_reports = n,
            Some(("material", "new")) => out.new_reports = n,
            _ => match name.as_str() {
                "cases" => out.cases = n,
                "sightings" => out.sightings = n,
                "deadlines_missed" => out.deadlines_missed = n,
                "deliveries_refused" => out.deliveries_refused = n,
                "deliveries_held_back" => out.deliveries_held_back = n,
                _ => {}
            },
        }
    }
    let mut providers: BTreeMap<(String, u32), (pb::ProviderStats, Vec<i64>)> = BTreeMap::new();
    // Per location: each has its own notice, provider and time to removal.
    // One case at a time: a million cases are never all in memory at once.
    store
        .each_case(&mut |rec| {
            for loc in &rec.locations {
                let Some(p) = &loc.provider else { continue };
                let (s, times) = providers.entry((p.name.clone(), p.asn)).or_insert_with(|| {
                    (
                        pb::ProviderStats {
                            name: p.name.clone(),
                            asn: p.asn,
                            ..Default::default()
                        },
                        Vec::new(),
                    )
                });
                s.notices += 1;
                if loc.removed_at_ms > 0 {
                    s.removed += 1;
                    times.push(loc.removed_at_ms - noticed_or_opened(loc));
                    if loc.deadline_ms > 0 && loc.removed_at_ms <= loc.deadline_ms {
                        s.removed_in_time += 1;
                    }
                } else if loc.not_removed {
                    s.not_removed += 1;
                }
                s.deadlines_missed += loc.escalations.len() as u64;
                let mut answered_at = None;
                for stored in &loc.steps {
                    let Some(step) = stored
                        .signed
                        .as_ref()
                        .and_then(|signed| CaseStep::decode(&signed.step).ok())
                    else {
                        continue;
                    };
                    match step.kind {
                        StepKind::Reappeared => s.reappearances += 1,
                        StepKind::Refused => s.refused += 1,
                        _ => {}
                    }
                    let answer = matches!(
                        step.kind,
                        StepKind::Received
                            | StepKind::Removed
                            | StepKind::NotFound
                            | StepKind::Refused
                    );
                    if answer && answered_at.is_none() {
                        answered_at = Some(stored.received_at_ms);
                    }
                }
                if answered_at.is_some_and(|at| loc.deadline_ms > 0 && at <= loc.deadline_ms) {
                    s.answered_in_time += 1;
                }
            }
            Ok(())
        })
        .map_err(Status::from)?;
    let mut list: Vec<pb::ProviderStats> = providers
        .into_values()
        .map(|(mut s, mut times)| {
            times.sort_unstable();
            s.median_removal_ms = quantile(&times, 0.5);
            s.p90_removal_ms = quantile(&times, 0.9);
            s
        })
        .collect();
    // Those that don't clean up first: missed deadlines, then refusals, then the slowest.
    list.sort_by(|a, b| {
        (b.deadlines_missed, b.not_removed, b.p90_removal_ms).cmp(&(
            a.deadlines_missed,
            a.not_removed,
            a.p90_removal_ms,
        ))
    });
    out.providers = list;
    Ok(out)
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn state_digest(
        &self,
        request: Request<pb::StateDigestRequest>,
    ) -> Result<Response<pb::StateDigestResponse>, Status> {
        self.auth.operator(&request)?;
        let store = self.store.clone();
        let d = tokio::task::spawn_blocking(move || store.state_digest())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(Status::from)?;
        Ok(Response::new(pb::StateDigestResponse {
            digest: d.digest.to_vec(),
            entries: d.entries,
            reports: d.reports,
            queued: d.queued,
            audit_records: d.audit_records,
            damaged: d.damaged,
        }))
    }

    async fn verify_audit(
        &self,
        request: Request<pb::VerifyAuditRequest>,
    ) -> Result<Response<pb::VerifyAuditResponse>, Status> {
        self.auth.operator(&request)?;
        let store = self.store.clone();
        let head = tokio::task::spawn_blocking(move || store.verify_audit())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::data_loss(format!("audit chain: {e}")))?;
        Ok(Response::new(pb::VerifyAuditResponse {
            records: head.next_seq,
            head: head.hash.to_vec(),
        }))
    }

    async fn list_add(
        &self,
        request: Request<pb::ListAddRequest>,
    ) -> Result<Response<pb::ListAddResponse>, Status> {
        let caller = self.auth.operator(&request)?;
        let entries = parse_entries(&request.get_ref().entries, None)?;
        Ok(Response::new(
            self.list.add_answer(&caller.id, entries).await?,
        ))
    }

    async fn list_withdraw(
        &self,
        request: Request<pb::ListWithdrawRequest>,
    ) -> Result<Response<pb::ListWithdrawResponse>, Status> {
        let caller = self.auth.operator(&request)?;
        let r = request.into_inner();
        if r.reason.trim().is_empty() || r.reason.len() > 512 {
            return Err(Refusal::invalid("reason", "say why, in at most 512 bytes").into());
        }
        self.list
            .withdraw(&caller.id, r.entry_version, r.reason)
            .await?;
        Ok(Response::new(pb::ListWithdrawResponse {
            head: Some(self.list.signed_head()),
        }))
    }

    async fn list_status(
        &self,
        request: Request<pb::ListStatusRequest>,
    ) -> Result<Response<pb::SignedListHead>, Status> {
        self.auth.operator(&request)?;
        Ok(Response::new(self.list.signed_head()))
    }

    async fn advance_clock(
        &self,
        request: Request<pb::AdvanceClockRequest>,
    ) -> Result<Response<pb::AdvanceClockResponse>, Status> {
        let caller = self.auth.operator(&request)?;
        let by_ms = request.get_ref().by_ms;
        let now_ms = self.clock.advance(by_ms).map_err(|e| match e {
            ClockError::NotAdjustable => Status::failed_precondition(e.to_string()),
            ClockError::NotForward(_) => Status::invalid_argument(e.to_string()),
        })?;
        tracing::warn!(caller = %caller.id, by_ms, now_ms, "clock moved forward");
        for w in &self.clock_moved {
            w.notify_one();
        }
        self.store
            .audit(
                "clock",
                &caller.id,
                "clock".into(),
                format!("moved forward by {by_ms} ms to {now_ms}"),
                now_ms,
            )
            .await
            .map_err(Status::from)?;
        Ok(Response::new(pb::AdvanceClockResponse { now_ms }))
    }

    async fn get_rules(
        &self,
        request: Request<pb::GetRulesRequest>,
    ) -> Result<Response<pb::RoutingRules>, Status> {
        self.auth.operator(&request)?;
        let rules = current(&self.routes).rules().clone();
        Ok(Response::new(pb::RoutingRules {
            version: rules.version,
            toml: rules.text.clone(),
        }))
    }

    async fn set_rules(
        &self,
        request: Request<pb::RoutingRules>,
    ) -> Result<Response<pb::RoutingRules>, Status> {
        let caller = self.auth.operator(&request)?;
        let _one_at_a_time = self.changes.lock().await;
        let router = current(&self.routes);
        let old = router.rules().version;
        let set = RuleSet::parse(&request.get_ref().toml, router.federation(), old + 1)
            .map_err(|e| Refusal::invalid(e.key, e.message))?;
        // Durable (with its audit record) before it applies.
        self.store
            .set(
                Setting::Rules(set.version, set.text.clone()),
                &caller.id,
                format!("routing rules v{}", set.version),
                format!("replaces v{old}; the new rules:\n{}", set.text),
                self.clock.now_ms(),
            )
            .await
            .map_err(Status::from)?;
        let answer = pb::RoutingRules {
            version: set.version,
            toml: set.text.clone(),
        };
        *self.routes.write().unwrap_or_else(PoisonError::into_inner) =
            Arc::new(router.with_rules(Arc::new(set)));
        tracing::warn!(caller = %caller.id, version = answer.version, "routing rules changed");
        Ok(Response::new(answer))
    }

    async fn explain(
        &self,
        request: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::Explanation>, Status> {
        self.auth.operator(&request)?;
        let id = ReportId::parse(&request.get_ref().report_id)
            .map_err(|e| Refusal::invalid("report_id", e))?;
        let store = self.store.clone();
        let now = self.clock.now_ms();
        Ok(Response::new(
            blocking(move || explain(&store, id, now)).await?,
        ))
    }

    async fn stats(
        &self,
        request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        self.auth.operator(&request)?;
        let store = self.store.clone();
        Ok(Response::new(blocking(move || stats(&store)).await?))
    }

    async fn export_stats(
        &self,
        request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::SignedStatsExport>, Status> {
        let caller = self.auth.operator(&request)?;
        let store = self.store.clone();
        let st = blocking(move || stats(&store)).await?;
        let hub = SpiffeId::hub(caller.id.trust_domain());
        let signed =
            meldnet_core::sign_stats_export(&self.ingest.signer, &hub, st, self.clock.now_ms());
        tracing::info!(operator = %caller.id, "statistics exported, signed");
        Ok(Response::new(signed))
    }

    async fn register(
        &self,
        request: Request<pb::Registration>,
    ) -> Result<Response<pb::Registration>, Status> {
        let caller = self.auth.operator(&request)?;
        let _one_at_a_time = self.changes.lock().await;
        let c = self.registry.check(request.get_ref())?;
        let before = self.registry.get(&c.id);
        let r = pb::Registration {
            identity: c.id.to_string(),
            signing_keys: c.keys.iter().map(|k| k.to_hex()).collect(),
            revoked: false,
            reason: String::new(),
            updated_at_ms: self.clock.now_ms(),
            source: "operator".into(),
        };
        let ids: Vec<String> = c.keys.iter().map(|k| k.id().to_string()).collect();
        let detail = format!(
            "{} {}{}",
            match &before {
                None => "registered",
                Some(b) if b.revoked => "registered again after revocation",
                Some(_) => "updated",
            },
            c.id,
            if ids.is_empty() {
                String::new()
            } else {
                format!(" with signing keys {}", ids.join(", "))
            }
        );
        Ok(Response::new(
            self.store_registration(&caller.id, r, &c.keys, detail)
                .await?,
        ))
    }

    async fn revoke(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::Registration>, Status> {
        let caller = self.auth.operator(&request)?;
        let _one_at_a_time = self.changes.lock().await;
        let req = request.into_inner();
        if req.reason.trim().is_empty() || req.reason.len() > 512 {
            return Err(Refusal::invalid("reason", "say why, in at most 512 bytes").into());
        }
        let id = SpiffeId::parse(&req.identity)
            .map_err(|e| Refusal::invalid("identity", e.to_string()))?;
        let before = self.registry.get(&id).ok_or_else(|| {
            Status::from(Refusal::new(
                RefusalKind::NotFound,
                "identity",
                format!("{id} is not registered"),
            ))
        })?;
        let r = pb::Registration {
            revoked: true,
            reason: req.reason.clone(),
            updated_at_ms: self.clock.now_ms(),
            source: "operator".into(),
            ..before
        };
        let detail = format!("revoked {id}: {}", req.reason);
        Ok(Response::new(
            self.store_registration(&caller.id, r, &[], detail).await?,
        ))
    }

    async fn list_registry(
        &self,
        request: Request<pb::ListRegistryRequest>,
    ) -> Result<Response<pb::RegistryList>, Status> {
        self.auth.operator(&request)?;
        Ok(Response::new(pb::RegistryList {
            parties: self.registry.list(),
        }))
    }

    async fn split_report(
        &self,
        request: Request<pb::SplitRequest>,
    ) -> Result<Response<pb::SplitResponse>, Status> {
        let caller = self.auth.operator(&request)?;
        let req = request.into_inner();
        let reason = req.reason.trim();
        if reason.is_empty() || reason.len() > 512 || reason.chars().any(char::is_control) {
            return Err(Refusal::invalid(
                "split_request.reason",
                "say why, in 1 to 512 bytes without control characters",
            )
            .into());
        }
        let id = ReportId::parse(&req.report_id)
            .map_err(|e| Refusal::invalid("split_request.report_id", e))?;
        Ok(Response::new(
            self.ingest
                .split(id, reason.to_string(), caller.id.clone())
                .await?,
        ))
    }
}
