//! Notice-and-takedown: the steps the hosting country's node records on a
//! case (`Cases.RecordStep`, signed over exact bytes, stored as sent), and
//! the deadline watcher that turns a deadline passed without removal into
//! exactly one escalation, delivered like a report to the configured
//! police or regulator. Deadlines are judged on the hub's clock
//! (`core::time::Clock`), which tests move forward instead of waiting.

use crate::auth::Auth;
use crate::cases::case_info;
use crate::config::TakedownConfig;
use crate::ingest::case_ref;
use crate::registry::Registry;
use crate::store::{location_state, Escalation, StepOutcome, StepWrite, Store, StoreError};
use meldnet_core::time::{rfc3339, Clock};
use meldnet_core::CountryCode;
use meldnet_core::ReportId;
use meldnet_core::{lookup_key, sign_decision, Envelope};
use meldnet_core::{CaseId, CaseStep, StepKind};
use meldnet_core::{Context, SigningKey};
use meldnet_core::{Refusal, RefusalKind};
use meldnet_core::{Role, SpiffeId};
use meldnet_proto::v1 as pb;
use meldnet_proto::v1::cases_server::Cases;
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tonic::{Request, Response, Status};

/// The `Cases` service: nodes record the steps of their cases.
#[derive(Clone)]
pub struct CasesService {
    store: Store,
    registry: Arc<Registry>,
    clock: Arc<Clock>,
    takedown: Arc<TakedownConfig>,
    auth: Auth,
    /// Deconfliction's index, told of a deadline a re-appearance starts, so
    /// that later sightings show the deadline in force.
    cases: Arc<crate::cases::CasesLock>,
}

impl CasesService {
    /// Serves nodes over `store`, checking step signatures with the
    /// registry's keys.
    pub fn new(
        store: Store,
        registry: Arc<Registry>,
        clock: Arc<Clock>,
        takedown: Arc<TakedownConfig>,
        auth: Auth,
        cases: Arc<crate::cases::CasesLock>,
    ) -> Self {
        CasesService {
            store,
            registry,
            clock,
            takedown,
            auth,
            cases,
        }
    }
}

fn receipt(rec: &pb::CaseRecord, location: u32, now_ms: i64) -> pb::CaseStepReceipt {
    let loc = rec.locations.get(location as usize);
    pb::CaseStepReceipt {
        case_id: rec.case_id.clone(),
        state: loc.map_or("", |l| location_state(l, now_ms)).into(),
        deadline_ms: loc.map_or(0, |l| l.deadline_ms),
        steps: loc.map_or(0, |l| l.steps.len() as u32),
        location,
    }
}

#[tonic::async_trait]
impl Cases for CasesService {
    async fn record_step(
        &self,
        request: Request<pb::SignedCaseStep>,
    ) -> Result<Response<pb::CaseStepReceipt>, Status> {
        let caller = self.auth.node(&request)?;
        let Role::Node(cc) = caller.id.role() else {
            return Err(Status::permission_denied("only nodes record case steps"));
        };
        let cc = *cc;
        let env = Envelope::from_signed_step(request.into_inner())?;
        let step = CaseStep::decode(&env.bytes)?;
        if step.country != cc {
            return Err(Refusal::new(
                RefusalKind::PermissionDenied,
                "step.country",
                format!(
                    "{} does not match the caller's certificate ({})",
                    step.country, caller.id
                ),
            )
            .into());
        }
        let keyring = self.registry.keyring();
        let key = lookup_key(&keyring, &caller.id, env.key_id, "signed_step")?;
        env.verify(key, Context::CaseStep, "signed_step")?;
        let rec = self
            .store
            .case(&step.case_id)
            .map_err(Status::from)?
            .ok_or_else(|| {
                Refusal::new(
                    RefusalKind::NotFound,
                    "step.case_id",
                    format!("no case {}", step.case_id),
                )
            })?;
        let location = step.location;
        let loc = rec.locations.get(location as usize).ok_or_else(|| {
            Refusal::new(
                RefusalKind::NotFound,
                "step.location",
                format!(
                    "case {} has {} locations (0 to {}): no location {location}",
                    step.case_id,
                    rec.locations.len(),
                    rec.locations.len().saturating_sub(1)
                ),
            )
        })?;
        if !loc.moved_to_case_id.is_empty() {
            return Err(Refusal::new(
                RefusalKind::FailedPrecondition,
                "step.location",
                format!(
                    "location {location} of case {} was split out into case {}: record its steps there (location 0)",
                    step.case_id, loc.moved_to_case_id
                ),
            )
            .into());
        }
        if loc.hosting_country != cc.as_str() {
            return Err(Refusal::new(
                RefusalKind::PermissionDenied,
                "step.case_id",
                format!(
                    "location {location} of case {} is hosted in {}: only the node of that country records its steps",
                    step.case_id,
                    if loc.hosting_country.is_empty() {
                        "no country that takes part"
                    } else {
                        &loc.hosting_country
                    }
                ),
            )
            .into());
        }
        let now = self.clock.now_ms();
        let reappear_deadline_ms = match CountryCode::parse(&loc.hosting_country) {
            Ok(host) if step.kind == StepKind::Reappeared && loc.deadline_ms > 0 => {
                now + self.takedown.policy(host).deadline_ms
            }
            _ => 0,
        };
        let kind = step.kind;
        let outcome = self
            .store
            .record_step(StepWrite {
                step,
                signed: env.into_signed_step(),
                received_at_ms: now,
                actor: caller.id.clone(),
                reappear_deadline_ms,
            })
            .await
            .map_err(Status::from)?;
        match outcome {
            StepOutcome::Stored(rec) => {
                metrics::counter!("meldnet_case_steps_total", "kind" => kind.name()).increment(1);
                if let Some(loc) = rec.locations.get(location as usize) {
                    // The regulator's view, per provider, as it happens.
                    let provider = provider_label(loc.provider.as_ref());
                    metrics::counter!("meldnet_provider_steps_total", "provider" => provider.clone(), "kind" => kind.name())
                        .increment(1);
                    if kind == StepKind::Removed {
                        let secs = (loc.removed_at_ms - crate::store::noticed_or_opened(loc)).max(0)
                            as f64
                            / 1000.0;
                        metrics::histogram!("meldnet_time_to_removal_seconds").record(secs);
                        metrics::histogram!("meldnet_provider_time_to_removal_seconds", "provider" => provider)
                            .record(secs);
                    }
                    if reappear_deadline_ms > 0 {
                        // Later sightings show the deadline in force.
                        let deadline = loc.deadline_ms;
                        if let Ok(case_id) = CaseId::parse(&rec.case_id) {
                            let updated = self.cases.write().update(&case_id, |c| {
                                if let Some(l) = c.locations.get_mut(location as usize) {
                                    l.deadline_ms = deadline;
                                }
                            });
                            if let Err(e) = updated {
                                tracing::warn!(case = %case_id, error = %e, "the case index could not take the new deadline: the store has it");
                            }
                        }
                    }
                }
                tracing::info!(caller = %caller.id, case = %rec.case_id, location, step = kind.name(), "case step recorded");
                Ok(Response::new(receipt(&rec, location, now)))
            }
            StepOutcome::Duplicate(rec) => Ok(Response::new(receipt(&rec, location, now))),
            StepOutcome::Conflict => Err(Refusal::new(
                RefusalKind::AlreadyExists,
                "step.step_id",
                "this step id was recorded with different content",
            )
            .into()),
            StepOutcome::NoCase => {
                Err(Refusal::new(RefusalKind::NotFound, "step.case_id", "no such case").into())
            }
        }
    }
}

/// A provider as a metrics label: its name and AS number, or `none` before
/// a notice named one.
fn provider_label(p: Option<&pb::HostingProvider>) -> String {
    p.map_or_else(|| "none".into(), |p| format!("{} (AS{})", p.name, p.asn))
}

/// Waits a second, or until woken; false once `stopping` turns true. The
/// pace of the hub's watchers (deadlines, notifications).
pub async fn next_tick(wake: &Notify, stopping: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        _ = wake.notified() => {}
        _ = stopping.changed() => return false,
    }
    !*stopping.borrow()
}

/// Watches takedown deadlines: every second, and at once when woken (the
/// clock was moved), escalates each case whose deadline passed without
/// removal. Runs until `stopping`.
pub struct DeadlineWatcher {
    /// The store.
    pub store: Store,
    /// Signs escalation decisions.
    pub signer: Arc<SigningKey>,
    /// The hub's clock.
    pub clock: Arc<Clock>,
    /// The hub's identity (actor of escalations).
    pub hub: SpiffeId,
    /// Woken when the clock moves.
    pub wake: Arc<Notify>,
}

impl DeadlineWatcher {
    /// Runs until `stopping` turns true.
    pub async fn run(self, mut stopping: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.escalate_due().await {
                tracing::error!(error = %e, "deadline check failed; retrying");
            }
            if !next_tick(&self.wake, &mut stopping).await {
                return;
            }
        }
    }

    /// Escalates every case due now; returns how many were escalated.
    pub async fn escalate_due(&self) -> Result<usize, StoreError> {
        let mut done = 0;
        let mut last_round = Vec::new();
        loop {
            let now = self.clock.now_ms();
            let due = self.store.due(now, 64)?;
            // Nothing due, or the same deadlines again (an entry that could
            // not be handled): wait for the next tick instead of spinning.
            if due.is_empty() || due == last_round {
                return Ok(done);
            }
            for (deadline_ms, case_id, location) in due.iter().copied() {
                match self.escalate(deadline_ms, case_id, location).await {
                    Ok(true) => done += 1,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(case = %case_id, error = %e, "escalation failed; tried again at the next tick")
                    }
                }
            }
            last_round = due;
        }
    }

    async fn escalate(
        &self,
        deadline_ms: i64,
        case_id: CaseId,
        location: u32,
    ) -> Result<bool, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("case {case_id}: {what}"));
        let rec = self
            .store
            .case(&case_id)?
            .ok_or_else(|| corrupt("deadline of a case not stored"))?;
        let loc = rec
            .locations
            .get(location as usize)
            .ok_or_else(|| corrupt("deadline of a location not stored"))?;
        // The report that brought the location: its URL is the location.
        let report_id =
            ReportId::parse(&loc.first_report_id).map_err(|_| corrupt("location's report"))?;
        let first = self
            .store
            .report(&report_id)?
            .ok_or_else(|| corrupt("first report not stored"))?;
        let signed_report = first
            .report
            .clone()
            .ok_or_else(|| corrupt("first report empty"))?;
        let opening = first
            .decision
            .as_ref()
            .and_then(|d| pb::Decision::decode(d.decision.as_slice()).ok())
            .ok_or_else(|| corrupt("first decision"))?;
        let now = self.clock.now_ms();
        let recipients: Vec<SpiffeId> = loc
            .escalate_to
            .iter()
            .filter_map(|s| SpiffeId::parse(s).ok())
            .collect();
        let mut reasons = vec![format!(
            "takedown deadline of location {location} of case {case_id} ({}) passed without removal: escalation",
            rfc3339(deadline_ms)
        )];
        reasons.push(match &loc.provider {
            Some(p) => format!("notice sent to {} (AS{})", p.name, p.asn),
            None => "no notice to a hosting provider was recorded".into(),
        });
        if loc.not_removed {
            reasons.push("the hotline recorded that the provider did not remove it".into());
        }
        if loc.removed_at_ms > 0 {
            reasons.push(format!("removed late, at {}", rfc3339(loc.removed_at_ms)));
        }
        if recipients.is_empty() {
            reasons.push("no escalation recipient is registered for the hosting country".into());
        }
        let mut info = case_info(&rec)?;
        if let Some(l) = info.locations.get_mut(location as usize) {
            l.deadline_ms = deadline_ms;
        }
        let hosting = loc.hosting_country.clone();
        let decision = pb::Decision {
            report_id: loc.first_report_id.clone(),
            report_digest: opening.report_digest.clone(),
            origin: opening.origin.clone(),
            decided_at_ms: now,
            eu_link: opening.eu_link,
            eu_link_facts: opening.eu_link_facts.clone(),
            recipients: recipients
                .iter()
                .map(|r| pb::Recipient {
                    identity: r.to_string(),
                    purpose: pb::Purpose::Escalation as i32,
                    reason: format!(
                        "{}: takedown deadline missed in {}",
                        r.role().title(),
                        hosting
                    ),
                    first: true,
                    rule: "takedown-deadline".into(),
                })
                .collect(),
            reasons,
            items: opening.items.clone(),
            rules_version: opening.rules_version,
            rules: Vec::new(),
            case_ref: Some(case_ref(&info, location, pb::DecisionKind::Escalation, "")),
            kind: pb::DecisionKind::Escalation as i32,
        };
        let signed = sign_decision(&self.signer, &decision);
        let escalated = self
            .store
            .escalate(Escalation {
                id: CaseId::new_v7(),
                case_id,
                location,
                deadline_ms,
                stored: pb::StoredReport {
                    report: Some(signed_report),
                    decision: Some(signed),
                    received_at_ms: now,
                },
                report_id,
                recipients,
                actor: self.hub.clone(),
            })
            .await?;
        if escalated {
            metrics::counter!("meldnet_escalations_total").increment(1);
            metrics::counter!("meldnet_provider_deadlines_missed_total", "provider" => provider_label(loc.provider.as_ref()))
                .increment(1);
            tracing::warn!(case = %case_id, deadline = %rfc3339(deadline_ms), "takedown deadline missed: escalated");
        }
        Ok(escalated)
    }
}
