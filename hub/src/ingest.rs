//! Ingest: from signed report bytes to a stored, routed, signed decision.
//! Works on batches: the CPU part (decode, validate, verify, route, sign) is
//! spread over the cores, the storage part is one group commit per batch.
//! A refused report leaves no trace in storage; it is logged with the field.

use crate::cases::{
    assessment_to_proto, gravity, BatchSearch, CaseIndex, CaseInfo, LocationInfo, Notice, Placement,
};
use crate::config::{EscalateTo, TakedownConfig};
use crate::hash_list::HashList;
use crate::registry::Registry;
use crate::routing::{Material, Route, Router};
use crate::rules::ReportClass;
use crate::store::{CaseWrite, Committed, NewReport, SightingWrite, SplitWrite, Store, StoreError};
use crate::victims::SeriesIndex;
use meldnet_core::time::Clock;
use meldnet_core::CaseId;
use meldnet_core::CountryCode;
use meldnet_core::Keyring;
use meldnet_core::ListCheck;
use meldnet_core::Sha256;
use meldnet_core::{lookup_key, verify_report_signatures, Envelope};
use meldnet_core::{sign_decision, sign_tree};
use meldnet_core::{PublicKey, SigningKey};
use meldnet_core::{Refusal, RefusalKind};
use meldnet_core::{Report, ReportId};
use meldnet_core::{Role, SpiffeId};
use meldnet_list::Query;
use meldnet_proto::v1 as pb;
use prost::Message;
use std::sync::{Arc, PoisonError, RwLock};
use tonic::Status;

/// The routing in force: replaced whole when operators change the rules;
/// each batch routes with the one it read.
pub type Routes = Arc<RwLock<Arc<Router>>>;

/// The router in force now.
pub fn current(routes: &Routes) -> Arc<Router> {
    routes
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// A report checked up to its signature.
struct Checked {
    env: Envelope,
    report: Report,
    origin: SpiffeId,
    key: PublicKey,
}

/// Everything ingest needs; shared by the submission service's handlers.
#[derive(Clone)]
/// Made by naming every part (a struct literal, no nine-argument
/// constructor); the services that share ingest's parts read them here.
pub struct Ingest {
    /// The parties taking part and the keys nodes sign with.
    pub registry: Arc<Registry>,
    /// The router in force (rules and parties), swapped by operators.
    pub routes: Routes,
    /// The hub's signing key: decisions are signed with it.
    pub signer: Arc<SigningKey>,
    /// Where reports, decisions and queue entries are stored.
    pub store: Store,
    /// The known-hash list every item is checked against.
    pub list: Arc<HashList>,
    /// The hub's clock: receipts and deadlines are judged on it.
    pub clock: Arc<Clock>,
    /// Deconfliction's index; its lock also orders the commits.
    pub cases: Arc<crate::cases::CasesLock>,
    /// Takedown deadlines and escalation recipients per country.
    pub takedown: Arc<TakedownConfig>,
    /// Victims' series: every report placed in a case is matched against them.
    pub series: Arc<RwLock<SeriesIndex>>,
}

/// A routed report whose decision is not yet final: deconfliction (in
/// order, under the cases lock) still places it.
struct Routed {
    new: NewReport,
    decision: pb::Decision,
    report: Report,
    route: Arc<Route>,
    /// The deconfliction key of its location (made once, with the decision,
    /// on all cores: normalising a URL is not free).
    url: [u8; 32],
}

/// A batch's answers, each report not processed refused as unavailable
/// (retrying it is safe: nothing of it was stored).
fn finish(results: Vec<Option<Result<pb::Receipt, Refusal>>>) -> Vec<Result<pb::Receipt, Refusal>> {
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(Refusal::new(
                    RefusalKind::Unavailable,
                    "report",
                    "not processed",
                ))
            })
        })
        .collect()
}

/// The case part of a decision.
pub fn case_ref(
    case: &CaseInfo,
    location: u32,
    kind: pb::DecisionKind,
    matched_by: &str,
) -> pb::CaseRef {
    let at = case.locations.get(location as usize);
    pb::CaseRef {
        case_id: case.id.to_string(),
        kind: kind as i32,
        first_report_id: case.first_report.to_string(),
        matched_by: matched_by.to_string(),
        deadline_ms: at.map_or(0, |l| l.deadline_ms),
        hosting_country: at
            .and_then(|l| l.hosting)
            .map(|h| h.to_string())
            .unwrap_or_default(),
        location,
    }
}

/// A new location's record, before any notice.
fn location_record(
    url_key: [u8; 32],
    hosting: Option<CountryCode>,
    report: &ReportId,
    now: i64,
) -> pb::LocationRecord {
    pb::LocationRecord {
        url_key: url_key.to_vec(),
        hosting_country: hosting.map(|h| h.to_string()).unwrap_or_default(),
        first_report_id: report.to_string(),
        opened_at_ms: now,
        ..Default::default()
    }
}

/// The receipt for a stored report: the same bytes every time it is asked for.
pub fn receipt(id: &ReportId, stored: &pb::StoredReport) -> pb::Receipt {
    let bytes = stored
        .report
        .as_ref()
        .map(|r| r.report.as_slice())
        .unwrap_or_default();
    pb::Receipt {
        report_id: id.to_string(),
        report_digest: Sha256::of(bytes).0.to_vec(),
        decision: stored.decision.clone(),
    }
}

impl Ingest {
    /// Checks one report up to (not including) its signature: envelope,
    /// canonical bytes, every field, origin against the certificate, key.
    fn check(
        &self,
        keyring: &Keyring,
        caller: &SpiffeId,
        sr: pb::SignedReport,
    ) -> Result<Checked, Refusal> {
        let env = Envelope::from_signed_report(sr)?;
        let report = Report::decode(&env.bytes)?;
        report.check_times(self.clock.now_ms())?;
        let caller_cc = match caller.role() {
            Role::Node(cc) => *cc,
            _ => {
                return Err(Refusal::new(
                    RefusalKind::PermissionDenied,
                    "caller",
                    "only nodes submit reports",
                ));
            }
        };
        if report.origin != caller_cc {
            return Err(Refusal::new(
                RefusalKind::PermissionDenied,
                "report.origin_country",
                format!(
                    "{} does not match the caller's certificate ({caller})",
                    report.origin
                ),
            ));
        }
        let origin = SpiffeId::node(keyring.federation(), report.origin);
        let key = *lookup_key(keyring, &origin, env.key_id, "signed_report")?;
        Ok(Checked {
            env,
            report,
            origin,
            key,
        })
    }

    /// Routes a verified report and drafts its decision (placed in a case
    /// and signed later, with the rest of the batch).
    fn decide(&self, router: &Router, c: Checked) -> Routed {
        let Checked {
            env,
            report,
            origin,
            ..
        } = c;
        let mut reasons = Vec::new();
        let items = self.check_items(&report, &mut reasons);
        let material = if items.iter().all(|i| i.known) {
            Material::Known
        } else {
            Material::New
        };
        let route = router.decide(&report, material);
        let digest = env.digest();
        let now = self.clock.now_ms();
        let decision = pb::Decision {
            report_id: report.id.to_string(),
            report_digest: digest.0.to_vec(),
            origin: origin.to_string(),
            decided_at_ms: now,
            eu_link: route.eu_link,
            eu_link_facts: route.facts.clone(),
            recipients: route
                .recipients
                .iter()
                .map(|r| pb::Recipient {
                    identity: r.identity_text.clone(),
                    purpose: r.purpose as i32,
                    reason: r.reason.clone(),
                    first: r.first,
                    rule: r.rule.clone(),
                })
                .collect(),
            reasons: route.reasons.iter().cloned().chain(reasons).collect(),
            items,
            rules_version: route.rules_version,
            rules: route
                .matched
                .iter()
                .map(|m| pb::RuleMatch {
                    rule: m.rule.clone(),
                    recipients: m.recipient_texts.clone(),
                    why: m.why.clone(),
                })
                .collect(),
            case_ref: None,
            kind: pb::DecisionKind::Referral as i32,
        };
        let mut counts = vec![format!("origin/{}", report.origin)];
        counts.push(match report.eu_link.hosting {
            Some(h) => format!("hosting/{h}"),
            None => "hosting/none".into(),
        });
        counts.push(match material {
            Material::Known => "material/known".into(),
            Material::New => "material/new".into(),
        });
        let new = NewReport {
            id: report.id,
            stored: pb::StoredReport {
                report: Some(env.into_signed_report()),
                decision: None,
                received_at_ms: now,
            },
            recipients: Vec::new(),
            origin,
            summary: String::new(),
            digest,
            placement: 0,
            case: None,
            counts,
            series: Vec::new(),
            extra: Vec::new(),
        };
        let url = if route.eu_link {
            crate::cases::url_key(&report)
        } else {
            [0; 32]
        };
        Routed {
            new,
            decision,
            report,
            route,
            url,
        }
    }

    /// Places a routed report, the `at`-th of a batch searched in
    /// `search`, in a case (in decision order, under the cases lock) and
    /// writes its final decision.
    fn place(
        &self,
        cases: &mut CaseIndex,
        r: Routed,
        search: &mut BatchSearch,
        at: usize,
    ) -> Result<NewReport, StoreError> {
        let Routed {
            mut new,
            mut decision,
            report,
            route,
            url,
        } = r;
        let mut extra: Vec<SpiffeId> = Vec::new();
        if route.eu_link {
            let now = decision.decided_at_ms;
            let (placement, keys, stamp) = cases.place(&report, &url, search, at, || CaseInfo {
                id: CaseId::new_v7(),
                first_report: report.id,
                assessment: route.class,
                locations: vec![LocationInfo::new(url, route.hosting, report.id)],
            })?;
            new.placement = stamp;
            let router = current(&self.routes);
            match placement {
                Placement::Open(info) => {
                    let notice = self.notice(&router, route.hosting, route.class, now);
                    let mut loc = location_record(url, route.hosting, &report.id, now);
                    if let Some(n) = &notice {
                        n.apply(&mut loc, &report.id, now);
                        cases.update(&info.id, |c| {
                            if let Some(first) = c.locations.first_mut() {
                                first.deadline_ms = n.deadline_ms;
                                first.noticed = true;
                            }
                        })?;
                    }
                    decision.reasons.push(match &notice {
                        Some(n) => format!("opens case {}; {}", info.id, n.line()),
                        None => format!(
                            "opens case {}; no notice due, so no takedown deadline",
                            info.id
                        ),
                    });
                    let info = cases.info(&info.id)?.unwrap_or(info);
                    decision.case_ref = Some(case_ref(&info, 0, pb::DecisionKind::Referral, ""));
                    new.summary = format!("opens case {}", info.id);
                    new.case = Some(CaseWrite::Open(
                        Box::new(pb::CaseRecord {
                            case_id: info.id.to_string(),
                            first_report_id: report.id.to_string(),
                            opened_at_ms: now,
                            assessment: assessment_to_proto(route.class) as i32,
                            locations: vec![loc],
                            ..Default::default()
                        }),
                        keys,
                    ));
                }
                Placement::Sighting {
                    case: info,
                    matched_by: how,
                    location,
                } => {
                    let before = info.assessment;
                    let assessment = if gravity(route.class) > gravity(before) {
                        route.class
                    } else {
                        before
                    };
                    let graver = gravity(assessment) > gravity(before);
                    let upgraded = assessment == ReportClass::Baseline && graver;
                    let held =
                        location.and_then(|l| Some((l, info.locations.get(l as usize)?.clone())));
                    let (at, here) = match held {
                        Some(held) => held,
                        None => (
                            info.locations.len() as u32,
                            LocationInfo::new(url, route.hosting, report.id),
                        ),
                    };
                    let notice = match here.noticed {
                        true => None,
                        false => self.notice(&router, here.hosting, assessment, now),
                    };
                    // Made illegal everywhere: every other location of the
                    // case without a notice gets one now, by a decision on
                    // the report that brought it.
                    let mut others: Vec<(u32, Notice)> = Vec::new();
                    if upgraded {
                        for (j, l) in info.locations.iter().enumerate() {
                            if j as u32 == at || l.noticed || l.moved {
                                continue;
                            }
                            if let Some(n) = self.notice(&router, l.hosting, assessment, now) {
                                others.push((j as u32, n));
                            }
                        }
                    }
                    cases.update(&info.id, |c| {
                        c.assessment = assessment;
                        if location.is_none() {
                            c.locations.push(here.clone());
                        }
                        if let (Some(n), Some(l)) = (&notice, c.locations.get_mut(at as usize)) {
                            l.deadline_ms = n.deadline_ms;
                            l.noticed = true;
                        }
                        for (j, n) in &others {
                            if let Some(l) = c.locations.get_mut(*j as usize) {
                                l.deadline_ms = n.deadline_ms;
                                l.noticed = true;
                            }
                        }
                    })?;
                    let now_info = cases.info(&info.id)?.unwrap_or(info.clone());
                    let kind = match (&notice, location) {
                        (_, None) => pb::DecisionKind::NewLocation,
                        (Some(_), Some(_)) => pb::DecisionKind::Upgrade,
                        (None, Some(_)) => pb::DecisionKind::Sighting,
                    };
                    // The hosting hotline of a location new to the case has
                    // not had it: what the rules ask of it stands.
                    let new_here = location
                        .is_none()
                        .then_some(here.hosting)
                        .flatten()
                        .and_then(|h| router.node_of(h));
                    // The hotline that sends the notice for this location:
                    // the hosting country's node (the origin acts itself).
                    let noticer = notice
                        .as_ref()
                        .and(here.hosting)
                        .filter(|h| *h != report.origin)
                        .and_then(|h| router.node_of(h));
                    for r in &mut decision.recipients {
                        if noticer
                            .as_ref()
                            .is_some_and(|n| r.identity == n.to_string())
                        {
                            r.purpose = pb::Purpose::NoticeAndTakedown as i32;
                            r.reason = format!(
                                "notice-and-takedown for location {at} of case {}: the case is assessed illegal everywhere and no notice was asked there yet",
                                info.id
                            );
                        } else if graver {
                            r.reason = format!(
                                "case {} is now assessed {} ({})",
                                info.id,
                                crate::routing::class_name(assessment),
                                r.reason
                            );
                        } else if new_here
                            .as_ref()
                            .is_some_and(|n| r.identity == n.to_string())
                        {
                            r.reason = format!(
                                "location {at}, new to case {}, is hosted here ({})",
                                info.id, r.reason
                            );
                        } else {
                            r.purpose = pb::Purpose::SightingUpdate as i32;
                            r.first = false;
                            r.reason = format!(
                                "sighting of case {}: an update, not a new referral ({})",
                                info.id, r.reason
                            );
                        }
                    }
                    if let Some(n) = &noticer {
                        if !decision
                            .recipients
                            .iter()
                            .any(|r| r.identity == n.to_string())
                        {
                            decision.recipients.push(pb::Recipient {
                                identity: n.to_string(),
                                purpose: pb::Purpose::NoticeAndTakedown as i32,
                                reason: format!(
                                    "notice-and-takedown for location {at} of case {}: the case is assessed illegal everywhere and no notice was asked there yet",
                                    info.id
                                ),
                                first: false,
                                rule: "case-location-notice".into(),
                            });
                            extra.push(n.clone());
                        }
                    }
                    decision.reasons.push(format!(
                        "sighting of case {} (opened by report {}, matched by {how})",
                        info.id, info.first_report
                    ));
                    if graver {
                        decision.reasons.push(format!(
                            "the case was assessed {} and this report assesses it {}{}",
                            crate::routing::class_name(before),
                            crate::routing::class_name(assessment),
                            if upgraded {
                                ": illegal everywhere from now on"
                            } else {
                                ""
                            }
                        ));
                    }
                    decision.reasons.push(match (&notice, location) {
                        (Some(n), None) => format!("a location the case did not hold (location {at}): its hosting hotline is asked for a notice; {}", n.line()),
                        (Some(n), Some(_)) => format!("location {at} had no notice: its hosting hotline is asked for one now; {}", n.line()),
                        (None, None) => format!("a location the case did not hold (location {at}); no notice due there"),
                        (None, Some(_)) if here.deadline_ms > 0 => format!(
                            "at location {at}: recipients get an update, not a new referral; its deadline {} stands",
                            meldnet_core::time::rfc3339(here.deadline_ms)
                        ),
                        (None, Some(_)) => format!("at location {at}: recipients get an update; no notice due there"),
                    });
                    let mut other_notices = Vec::new();
                    for (j, n) in others {
                        let Some(loc) = now_info.locations.get(j as usize) else {
                            continue;
                        };
                        match self.notice_elsewhere(&router, &now_info, j, &n, &report.id, now) {
                            Ok(extra) => {
                                decision.reasons.push(format!(
                                    "location {j} (report {}) had no notice: its hosting hotline is asked for one now; {}",
                                    loc.first_report,
                                    n.line()
                                ));
                                new.extra.push(extra);
                                other_notices.push((j, n));
                            }
                            Err(e) => {
                                tracing::error!(case = %info.id, location = j, error = %e, "notice at another location not made");
                                cases.update(&info.id, |c| {
                                    if let Some(l) = c.locations.get_mut(j as usize) {
                                        l.deadline_ms = 0;
                                        l.noticed = false;
                                    }
                                })?;
                                decision.reasons.push(format!(
                                    "location {j} (report {}) had no notice and its report could not be read ({e}): it is asked at the location's next report",
                                    loc.first_report
                                ));
                            }
                        }
                    }
                    let now_info = cases.info(&info.id)?.unwrap_or(now_info);
                    decision.kind = kind as i32;
                    decision.case_ref = Some(case_ref(&now_info, at, kind, &how));
                    new.summary = format!("sighting of case {} by {how}", info.id);
                    let new_location = location.is_none().then(|| {
                        let mut rec = location_record(url, route.hosting, &report.id, now);
                        if let Some(n) = &notice {
                            n.apply(&mut rec, &report.id, now);
                        }
                        Box::new(rec)
                    });
                    new.case = Some(CaseWrite::Sighting(Box::new(SightingWrite {
                        case_id: info.id,
                        first_report: info.first_report,
                        matched_by: how,
                        keys,
                        assessment: (assessment != before).then(|| assessment_to_proto(assessment)),
                        new_location,
                        notices: location
                            .and(notice)
                            .map(|n| (at, n))
                            .into_iter()
                            .chain(other_notices)
                            .collect(),
                    })));
                }
            }
            // Recorded against each series it holds; never in the decision:
            // recipients are not told that a report shows an identified victim.
            new.series = self
                .series
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .matching(&report);
            if !new.series.is_empty() {
                new.summary
                    .push_str(&format!("; material of {} series", new.series.len()));
            }
        } else {
            new.summary = "no EU link".into();
        }
        new.recipients = route
            .recipients
            .iter()
            .map(|r| r.identity.clone())
            .chain(extra)
            .collect();
        new.stored.decision = Some(pb::SignedDecision {
            decision: decision.encode_to_vec(),
            ..Default::default()
        });
        Ok(new)
    }

    /// Splits `report_id` out of the case it was wrongly merged into (an
    /// operator's decision): a case of its own with the location it
    /// brought, its own notice and deadline where due (from now), and a
    /// decision of kind SPLIT queued to its recipients. Stored, audited and
    /// flushed under the cases lock, then the index is rebuilt from the
    /// store, so that later reports of its material join its own case (a
    /// pause of ingest as long as a rebuild at start: a rare, manual act).
    pub async fn split(
        &self,
        report_id: ReportId,
        reason: String,
        actor: SpiffeId,
    ) -> Result<pb::SplitResponse, Status> {
        let fail = |field: &str, why: String| -> Status {
            Refusal::new(RefusalKind::FailedPrecondition, field, why).into()
        };
        let stored = self
            .store
            .report(&report_id)
            .map_err(Status::from)?
            .ok_or_else(|| {
                Status::from(Refusal::new(
                    RefusalKind::NotFound,
                    "split_request.report_id",
                    format!("no report {report_id}"),
                ))
            })?;
        let (Some(sr), Some(sd)) = (stored.report.clone(), stored.decision.clone()) else {
            return Err(Status::data_loss(format!(
                "report {report_id}: stored without its decision"
            )));
        };
        let original = pb::Decision::decode(sd.decision.as_slice())
            .map_err(|e| Status::data_loss(format!("report {report_id}: decision: {e}")))?;
        let Some(cref) = original.case_ref.clone() else {
            return Err(fail(
                "split_request.report_id",
                format!("report {report_id} has no case (no EU link)"),
            ));
        };
        let from = CaseId::parse(&cref.case_id)
            .map_err(|e| Status::data_loss(format!("report {report_id}: case id: {e}")))?;
        if cref.kind == pb::DecisionKind::Referral as i32 {
            return Err(fail(
                "split_request.report_id",
                format!("report {report_id} opened case {from}: split the other reports out of it"),
            ));
        }
        if cref.matched_by == "url" {
            return Err(fail(
                "split_request.report_id",
                format!("report {report_id} joined case {from} by its URL: it is at a location of the case, not a wrong merge"),
            ));
        }
        if !self
            .store
            .is_sighting(&from, &report_id)
            .map_err(Status::from)?
        {
            return Err(fail(
                "split_request.report_id",
                format!("report {report_id} is not a sighting of case {from} (split out before?)"),
            ));
        }
        let report = Report::decode(&sr.report)
            .map_err(|e| Status::data_loss(format!("report {report_id}: {e}")))?;
        let keys = self.store.case_keys(&report_id).map_err(Status::from)?;
        let router = current(&self.routes);
        let material = if original.items.iter().all(|i| i.known) {
            Material::Known
        } else {
            Material::New
        };
        let route = router.decide(&report, material);
        let now = self.clock.now_ms();
        let notice = self.notice(&router, route.hosting, route.class, now);
        let case_id = CaseId::new_v7();
        let url = crate::cases::url_key(&report);
        let mut loc = location_record(url, route.hosting, &report_id, now);
        if let Some(n) = &notice {
            n.apply(&mut loc, &report_id, now);
        }
        let info = CaseInfo {
            id: case_id,
            first_report: report_id,
            assessment: route.class,
            locations: vec![LocationInfo {
                deadline_ms: loc.deadline_ms,
                noticed: notice.is_some(),
                ..LocationInfo::new(url, route.hosting, report_id)
            }],
        };
        let noticer = notice
            .as_ref()
            .and(route.hosting)
            .filter(|h| *h != report.origin)
            .and_then(|h| router.node_of(h));
        let told = format!(
            "report {report_id} was split out of case {from} into case {case_id} by an operator ({reason})"
        );
        let mut recipients: Vec<SpiffeId> = Vec::new();
        let mut to: Vec<pb::Recipient> = Vec::new();
        for r in &original.recipients {
            let Ok(id) = SpiffeId::parse(&r.identity) else {
                continue;
            };
            let notice_here = noticer.as_ref() == Some(&id);
            to.push(pb::Recipient {
                identity: r.identity.clone(),
                purpose: if notice_here {
                    pb::Purpose::NoticeAndTakedown
                } else {
                    pb::Purpose::SightingUpdate
                } as i32,
                reason: if notice_here {
                    format!("notice-and-takedown for case {case_id}, of its own now: {told}")
                } else {
                    format!("an update: {told}")
                },
                first: false,
                rule: "operator-split".into(),
            });
            recipients.push(id);
        }
        if let Some(n) = noticer.filter(|n| !recipients.contains(n)) {
            to.push(pb::Recipient {
                identity: n.to_string(),
                purpose: pb::Purpose::NoticeAndTakedown as i32,
                reason: format!("notice-and-takedown for case {case_id}, of its own now: {told}"),
                first: false,
                rule: "operator-split".into(),
            });
            recipients.push(n);
        }
        let mut reasons = vec![told.clone()];
        reasons.push(match &notice {
            Some(n) => format!(
                "case {case_id} is assessed {}: {}",
                crate::routing::class_name(route.class),
                n.line()
            ),
            None => format!(
                "case {case_id} is assessed {}: no notice due",
                crate::routing::class_name(route.class)
            ),
        });
        let decision = pb::Decision {
            report_id: original.report_id.clone(),
            report_digest: original.report_digest.clone(),
            origin: original.origin.clone(),
            decided_at_ms: now,
            eu_link: original.eu_link,
            eu_link_facts: original.eu_link_facts.clone(),
            recipients: to,
            reasons,
            items: original.items.clone(),
            rules_version: route.rules_version,
            rules: Vec::new(),
            case_ref: Some(case_ref(&info, 0, pb::DecisionKind::Split, "")),
            kind: pb::DecisionKind::Split as i32,
        };
        let signed = sign_decision(&self.signer, &decision);
        let write = SplitWrite {
            report_id,
            from,
            from_location: cref.location,
            record: pb::CaseRecord {
                case_id: case_id.to_string(),
                first_report_id: report_id.to_string(),
                opened_at_ms: now,
                assessment: assessment_to_proto(route.class) as i32,
                locations: vec![loc],
                ..Default::default()
            },
            keys,
            decision_id: CaseId::new_v7(),
            stored: pb::StoredReport {
                report: Some(sr),
                decision: Some(signed.clone()),
                received_at_ms: now,
            },
            recipients,
            actor,
            reason,
        };
        let (store, cases) = (self.store.clone(), self.cases.clone());
        let done = tokio::task::spawn_blocking(move || -> Result<bool, StoreError> {
            // Ordered with ingest's commits, and no report placed meanwhile.
            let mut index = cases.write();
            let wait = store.send_split(write)?;
            let done = tokio::runtime::Handle::current().block_on(wait)?;
            if done {
                index.reload()?;
            }
            Ok(done)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(Status::from)?;
        if !done {
            return Err(fail(
                "split_request.report_id",
                format!(
                    "report {report_id} is not a sighting of case {from} (split out meanwhile?)"
                ),
            ));
        }
        tracing::info!(report = %report_id, %from, to = %case_id, "report split out of its case");
        Ok(pb::SplitResponse {
            case_id: case_id.to_string(),
            from_case_id: from.to_string(),
            decision: Some(signed),
        })
    }

    /// The decision that asks the hosting hotline of location `j` of `case`
    /// for a notice, on the report that brought the location (stored
    /// earlier), because report `by` made the case illegal everywhere.
    fn notice_elsewhere(
        &self,
        router: &Router,
        case: &CaseInfo,
        j: u32,
        n: &Notice,
        by: &ReportId,
        now: i64,
    ) -> Result<crate::store::ExtraDecision, String> {
        let loc = case
            .locations
            .get(j as usize)
            .ok_or_else(|| format!("case {} has no location {j}", case.id))?;
        let stored = self
            .store
            .report(&loc.first_report)
            .map_err(|e| e.to_string())?
            .ok_or("not stored yet")?;
        let original = stored
            .decision
            .as_ref()
            .and_then(|d| pb::Decision::decode(d.decision.as_slice()).ok())
            .ok_or("its decision does not decode")?;
        let origin = SpiffeId::parse(&original.origin).map_err(|e| e.to_string())?;
        let noticer = loc
            .hosting
            .filter(|h| !matches!(origin.role(), Role::Node(o) if o == h))
            .and_then(|h| router.node_of(h));
        let why = format!(
            "notice-and-takedown for location {j} of case {}: report {by} made the case illegal everywhere",
            case.id
        );
        let recipients: Vec<pb::Recipient> = noticer
            .iter()
            .map(|id| pb::Recipient {
                identity: id.to_string(),
                purpose: pb::Purpose::NoticeAndTakedown as i32,
                reason: why.clone(),
                first: false,
                rule: "case-upgrade".into(),
            })
            .collect();
        let decision = pb::Decision {
            decided_at_ms: now,
            recipients,
            reasons: vec![why.clone(), n.line()],
            rules: Vec::new(),
            case_ref: Some(case_ref(case, j, pb::DecisionKind::Upgrade, "")),
            kind: pb::DecisionKind::Upgrade as i32,
            ..original
        };
        Ok(crate::store::ExtraDecision {
            id: CaseId::new_v7(),
            report_id: loc.first_report,
            stored: pb::StoredReport {
                report: stored.report,
                decision: Some(pb::SignedDecision {
                    decision: decision.encode_to_vec(),
                    ..Default::default()
                }),
                received_at_ms: now,
            },
            recipients: noticer.into_iter().collect(),
            line: why,
        })
    }

    /// The notice due at a location hosted in `hosting` for a case assessed
    /// `assessment`: one when the country takes part and the case is
    /// illegal everywhere (baseline), with the country's deadline from `now`.
    fn notice(
        &self,
        router: &Router,
        hosting: Option<CountryCode>,
        assessment: ReportClass,
        now: i64,
    ) -> Option<Notice> {
        let host = hosting.filter(|_| assessment == ReportClass::Baseline)?;
        let policy = self.takedown.policy(host);
        let escalate_to = policy
            .escalate_to
            .iter()
            .flat_map(|t| match t {
                EscalateTo::Police => router.police_of(host),
                EscalateTo::Party(id) => vec![id.clone()],
            })
            .map(|id| id.to_string())
            .collect();
        Some(Notice {
            deadline_ms: now + policy.deadline_ms,
            hours: policy.deadline_ms / 3_600_000,
            escalate_to,
        })
    }

    /// Known or new, item by item, from the hub's own list, beside what the
    /// node said; a line of the decision's reasons says what it found.
    fn check_items(&self, report: &Report, reasons: &mut Vec<String>) -> Vec<pb::ItemCheck> {
        let mut known = Vec::new();
        let mut disagree = Vec::new();
        let checks: Vec<pb::ItemCheck> = report
            .items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let (list_version, found) = self.list.check(&Query::of_item(item));
                let node_said = match item.known {
                    None => pb::NodeSaid::Unchecked,
                    Some(ListCheck { found: Some(_), .. }) => pb::NodeSaid::Known,
                    Some(ListCheck { found: None, .. }) => pb::NodeSaid::New,
                };
                if let Some(k) = found {
                    known.push(format!(
                        "item {i}: {} match of entry {}",
                        k.kind.name(),
                        k.entry
                    ));
                }
                if node_said != pb::NodeSaid::Unchecked
                    && (node_said == pb::NodeSaid::Known) != found.is_some()
                {
                    disagree.push(format!(
                        "item {i}: the node said {}",
                        meldnet_core::node_said_word(node_said as i32)
                    ));
                }
                ListCheck {
                    list_version,
                    found,
                }
                .to_item_check(i as u32, node_said)
            })
            .collect();
        let new = checks.len() - known.len();
        let mut line = format!("hash list: {} known, {new} new", known.len());
        if !known.is_empty() {
            line.push_str(&format!(" ({})", known.join("; ")));
        }
        if new > 0 {
            line.push_str("; new material may show a child not yet safeguarded");
        }
        if !disagree.is_empty() {
            line.push_str(&format!(
                "; the hub's list decides ({})",
                disagree.join("; ")
            ));
        }
        reasons.push(line);
        checks
    }

    /// Signs the decisions of a batch with one signature over the head of
    /// their Merkle tree; each decision gets its inclusion path.
    fn sign_decisions(&self, reports: &mut [NewReport]) {
        let mut decisions: Vec<&mut pb::SignedDecision> = reports
            .iter_mut()
            .flat_map(|r| {
                let NewReport { stored, extra, .. } = r;
                stored
                    .decision
                    .as_mut()
                    .into_iter()
                    .chain(extra.iter_mut().filter_map(|e| e.stored.decision.as_mut()))
            })
            .collect();
        sign_tree(&self.signer, &mut decisions);
    }

    /// Places a batch in cases, signs it and hands it to the store, in one
    /// order: the cases lock makes deconfliction and commit order the same.
    /// Returns the receipts of new reports (made now: the store keeps the
    /// records) and the wait for the flush.
    #[allow(clippy::type_complexity)]
    fn sequence(
        &self,
        batch: Vec<Routed>,
    ) -> Result<
        (
            Vec<(ReportId, pb::Receipt)>,
            impl std::future::Future<Output = Result<Vec<Committed>, StoreError>>,
        ),
        StoreError,
    > {
        let mut cases = self.cases.write();
        let eu_linked: Vec<Option<&Report>> = batch
            .iter()
            .map(|r| r.route.eu_link.then_some(&r.report))
            .collect();
        let mut search = cases.search_batch(&eu_linked);
        let mut placed: Vec<NewReport> = batch
            .into_iter()
            .enumerate()
            .map(|(at, r)| self.place(&mut cases, r, &mut search, at))
            .collect::<Result<_, _>>()?;
        self.sign_decisions(&mut placed);
        let fresh = placed
            .iter()
            .map(|r| (r.id, receipt(&r.id, &r.stored)))
            .collect();
        Ok((fresh, self.store.send_reports(placed)?))
    }

    /// Ingests a batch from `caller`: one result per report, in order. A
    /// receipt is returned only after its report is flushed to disk.
    pub async fn submit(
        &self,
        caller: &SpiffeId,
        reports: Vec<pb::SignedReport>,
    ) -> Result<Vec<Result<pb::Receipt, Refusal>>, StoreError> {
        let n = reports.len();
        let prepared = self.prepare_parallel(caller, reports).await;
        let mut results: Vec<Option<Result<pb::Receipt, Refusal>>> = vec![None; n];
        let mut to_store = Vec::new();
        let mut positions = Vec::new();
        for (i, p) in prepared.into_iter().enumerate() {
            match p {
                Ok(r) => {
                    positions.push(i);
                    to_store.push(r);
                }
                Err(refusal) => {
                    tracing::warn!(caller = %caller, field = %refusal.field, code = ?refusal.kind.code(), "refused: {refusal}");
                    metrics::counter!("meldnet_reports_refused_total", "code" => format!("{:?}", refusal.kind.code())).increment(1);
                    if let Some(slot) = results.get_mut(i) {
                        *slot = Some(Err(refusal));
                    }
                }
            }
        }
        if !to_store.is_empty() {
            // On a blocking thread: the batch waits for the cases lock and
            // searches on every core, which must never stall the runtime's
            // workers (they carry every other stream meanwhile).
            let this = self.clone();
            let (fresh, wait) =
                match tokio::task::spawn_blocking(move || this.sequence(to_store)).await {
                    Ok(sequenced) => sequenced?,
                    Err(e) => {
                        // Nothing was handed to the store: every report of the
                        // batch is answered "not processed" below.
                        tracing::error!(error = %e, "ingest sequencing failed");
                        return Ok(finish(results));
                    }
                };
            let committed = wait.await?;
            for ((i, c), (id, fresh)) in positions.into_iter().zip(committed).zip(fresh) {
                let answer = match c {
                    Committed::New => {
                        metrics::counter!("meldnet_reports_accepted_total").increment(1);
                        Ok(fresh)
                    }
                    Committed::Duplicate(s) => {
                        metrics::counter!("meldnet_reports_duplicate_total").increment(1);
                        Ok(receipt(&id, &s))
                    }
                    Committed::Conflict => {
                        let r = Refusal::new(
                            RefusalKind::AlreadyExists,
                            "report.id",
                            format!("{id} was already submitted with different content"),
                        );
                        tracing::warn!(caller = %caller, field = %r.field, "refused: {r}");
                        metrics::counter!("meldnet_reports_refused_total", "code" => "AlreadyExists").increment(1);
                        Err(r)
                    }
                };
                if let Some(slot) = results.get_mut(i) {
                    *slot = Some(answer);
                }
            }
        }
        Ok(finish(results))
    }

    async fn prepare_parallel(
        &self,
        caller: &SpiffeId,
        reports: Vec<pb::SignedReport>,
    ) -> Vec<Result<Routed, Refusal>> {
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let chunk = reports.len().div_ceil(workers).max(16);
        // One batch, one rule set and one keyring: a change applies to
        // batches routed after it.
        let router = current(&self.routes);
        let keyring = self.registry.keyring();
        let mut handles = Vec::new();
        let mut iter = reports.into_iter().peekable();
        while iter.peek().is_some() {
            let part: Vec<_> = iter.by_ref().take(chunk).collect();
            let len = part.len();
            let this = self.clone();
            let caller = caller.clone();
            let router = router.clone();
            let keyring = keyring.clone();
            let handle = tokio::task::spawn_blocking(move || {
                let checked = part
                    .into_iter()
                    .map(|sr| this.check(&keyring, &caller, sr))
                    .collect();
                verify_report_signatures(checked, |c| (&c.env, &c.key))
                    .into_iter()
                    .map(|c| c.map(|c| this.decide(&router, c)))
                    .collect::<Vec<_>>()
            });
            handles.push((len, handle));
        }
        let mut out = Vec::new();
        for (len, h) in handles {
            match h.await {
                Ok(v) => out.extend(v),
                Err(e) => {
                    tracing::error!(error = %e, "ingest worker failed");
                    out.extend((0..len).map(|_| {
                        Err(Refusal::new(
                            RefusalKind::Unavailable,
                            "report",
                            "ingest worker failed",
                        ))
                    }));
                }
            }
        }
        out
    }
}
