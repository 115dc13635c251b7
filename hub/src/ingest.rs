//! Ingest: from signed report bytes to a stored, routed, signed decision.
//! Works on batches: the CPU part (decode, validate, verify, route, sign) is
//! spread over the cores, the storage part is one group commit per batch.
//! A refused report leaves no trace in storage; it is logged with the field.

use crate::hash_list::HashList;
use crate::routing::Router;
use crate::store::{Committed, NewReport, Store, StoreError};
use meldnet_core::error::{Refusal, RefusalKind};
use meldnet_core::hash::Sha256;
use meldnet_core::hash_list::Query;
use meldnet_core::identity::{Role, SpiffeId};
use meldnet_core::keyring::Keyring;
use meldnet_core::merkle::{leaf_hash, Tree};
use meldnet_core::provenance::tree_head;
use meldnet_core::provenance::{lookup_key, verify_report_signatures, Envelope};
use meldnet_core::report::ListCheck;
use meldnet_core::report::{Report, ReportId};
use meldnet_core::signing::{Context, PublicKey, SigningKey};
use meldnet_core::time::Clock;
use meldnet_proto::v1 as pb;
use prost::Message;
use std::sync::Arc;

/// A report checked up to its signature.
struct Checked {
    env: Envelope,
    report: Report,
    origin: SpiffeId,
    key: PublicKey,
}

/// Everything ingest needs; shared by the submission service's handlers.
#[derive(Clone)]
pub struct Ingest {
    keyring: Arc<Keyring>,
    router: Arc<Router>,
    signer: Arc<SigningKey>,
    store: Store,
    list: Arc<HashList>,
    clock: Arc<Clock>,
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
    /// Ingest over these keys, routes, signing key and store.
    pub fn new(
        keyring: Arc<Keyring>,
        router: Arc<Router>,
        signer: Arc<SigningKey>,
        store: Store,
        list: Arc<HashList>,
        clock: Arc<Clock>,
    ) -> Self {
        Ingest {
            keyring,
            router,
            signer,
            store,
            list,
            clock,
        }
    }

    /// Checks one report up to (not including) its signature: envelope,
    /// canonical bytes, every field, origin against the certificate, key.
    fn check(&self, caller: &SpiffeId, sr: pb::SignedReport) -> Result<Checked, Refusal> {
        let env = Envelope::from_signed_report(sr)?;
        let report = Report::decode(&env.bytes)?;
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
        let origin = SpiffeId::node(self.keyring.federation(), report.origin);
        let key = *lookup_key(&self.keyring, &origin, env.key_id, "signed_report")?;
        Ok(Checked {
            env,
            report,
            origin,
            key,
        })
    }

    /// Routes a verified report and writes its decision (signed later,
    /// with the rest of the batch).
    fn decide(&self, c: Checked) -> NewReport {
        let Checked {
            env,
            report,
            origin,
            ..
        } = c;
        let mut route = self.router.decide(&report);
        let items = self.check_items(&report, &mut route.reasons);
        let digest = env.digest();
        let decision = pb::Decision {
            report_id: report.id.to_string(),
            report_digest: digest.0.to_vec(),
            origin: origin.to_string(),
            decided_at_ms: self.clock.now_ms(),
            eu_link: route.eu_link,
            eu_link_facts: route.facts,
            recipients: route
                .recipients
                .iter()
                .map(|r| pb::Recipient {
                    identity: r.identity.to_string(),
                    purpose: r.purpose as i32,
                    reason: r.reason.clone(),
                })
                .collect(),
            reasons: route.reasons,
            items,
        };
        // The audit record: short, the decision itself is stored and signed.
        let summary = if route.recipients.is_empty() {
            format!("sha256 {digest}; routed to nobody")
        } else {
            let to: Vec<String> = route
                .recipients
                .iter()
                .map(|r| r.identity.to_string())
                .collect();
            format!("sha256 {digest}; routed to {}", to.join(" "))
        };
        NewReport {
            id: report.id,
            stored: pb::StoredReport {
                report: Some(env.into_signed_report()),
                decision: Some(pb::SignedDecision {
                    decision: decision.encode_to_vec(),
                    ..Default::default()
                }),
                received_at_ms: self.clock.now_ms(),
            },
            recipients: route.recipients.into_iter().map(|r| r.identity).collect(),
            origin,
            summary,
        }
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
                    None => "unchecked",
                    Some(ListCheck { found: Some(_), .. }) => "known",
                    Some(ListCheck { found: None, .. }) => "new",
                };
                if let Some(k) = found {
                    known.push(format!(
                        "item {i}: {} match of entry {}",
                        k.kind.name(),
                        k.entry
                    ));
                }
                if node_said != "unchecked" && (node_said == "known") != found.is_some() {
                    disagree.push(format!("item {i}: the node said {node_said}"));
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
        if reports.is_empty() {
            return;
        }
        let leaves: Vec<[u8; 32]> = reports
            .iter()
            .map(|r| {
                leaf_hash(
                    r.stored
                        .decision
                        .as_ref()
                        .map(|d| d.decision.as_slice())
                        .unwrap_or_default(),
                )
            })
            .collect();
        let tree = Tree::new(leaves);
        let size = tree.size() as u64;
        let signature = self
            .signer
            .sign(Context::DecisionTree, &tree_head(size, &tree.root()));
        let key_id = self.signer.public().id().to_string();
        for (i, r) in reports.iter_mut().enumerate() {
            if let Some(d) = r.stored.decision.as_mut() {
                d.signature = signature.to_vec();
                d.key_id.clone_from(&key_id);
                d.tree_size = size;
                d.leaf_index = i as u64;
                d.audit_path = tree.path(i).into_iter().map(|h| h.to_vec()).collect();
            }
        }
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
                    results[i] = Some(Err(refusal));
                }
            }
        }
        if !to_store.is_empty() {
            self.sign_decisions(&mut to_store);
            // The receipts of new reports, made now: the store keeps the records.
            let fresh: Vec<(ReportId, pb::Receipt)> = to_store
                .iter()
                .map(|r| (r.id, receipt(&r.id, &r.stored)))
                .collect();
            let committed = self.store.commit_reports(to_store).await?;
            for ((i, c), (id, fresh)) in positions.into_iter().zip(committed).zip(fresh) {
                results[i] = Some(match c {
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
                });
            }
        }
        Ok(results
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
            .collect())
    }

    async fn prepare_parallel(
        &self,
        caller: &SpiffeId,
        reports: Vec<pb::SignedReport>,
    ) -> Vec<Result<NewReport, Refusal>> {
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let chunk = reports.len().div_ceil(workers).max(16);
        let mut handles = Vec::new();
        let mut iter = reports.into_iter().peekable();
        while iter.peek().is_some() {
            let part: Vec<_> = iter.by_ref().take(chunk).collect();
            let len = part.len();
            let this = self.clone();
            let caller = caller.clone();
            let handle = tokio::task::spawn_blocking(move || {
                let checked = part.into_iter().map(|sr| this.check(&caller, sr)).collect();
                verify_report_signatures(checked, |c| (&c.env, &c.key))
                    .into_iter()
                    .map(|c| c.map(|c| this.decide(c)))
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
