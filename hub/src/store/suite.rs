//! The behavioural test suite of the storage seam: every store operation
//! and every rule the hub relies on, written once and run against every
//! backend (`store_test_suite!` in each backend's tests). A backend is
//! given as a function that opens it in a folder; opening the same folder
//! again is a restart.

use super::seam::Backend;
use super::*;
use meldnet_core::CountryCode;
use meldnet_core::SigningKey;
use meldnet_core::{CaseId, CaseStep, HostingProvider, StepId, StepKind};
use meldnet_core::{NotificationId, Period, Preference, SeriesHashes, SeriesId};
use meldnet_core::{PdqHash, Sha256};
use meldnet_list::Tip;
use std::path::Path;
use std::sync::Arc;

/// Opens a backend in a folder.
pub type Open<'a> = &'a dyn Fn(&Path) -> Arc<dyn Backend>;

/// Runs every test of the suite against one backend.
#[macro_export]
macro_rules! store_test_suite {
    ($open:expr) => {
        $crate::store_test_suite!(@tests $open;
            receipts_are_idempotent_and_a_conflict_changes_nothing,
            queues_keep_order_per_recipient_and_settle_only_the_own,
            a_byte_budget_pages_a_queue,
            further_decisions_are_queued_and_read_back,
            the_audit_chain_links_every_write,
            what_was_acknowledged_is_there_after_a_reopen,
            a_case_opens_with_its_deadlines_and_keys,
            a_sighting_joins_with_its_location_and_notices,
            a_step_is_stored_once_and_moves_deadlines,
            a_missed_deadline_escalates_exactly_once,
            a_split_moves_a_sighting_into_its_own_case,
            series_answer_only_their_owner_and_representative,
            the_digest_cap_holds_and_a_withdrawal_drops_what_is_queued,
            a_withdrawal_and_a_notification_in_one_group_let_nothing_out,
            proceedings_draft_a_notification_once,
            list_changes_and_settings_are_stored_with_their_audit,
            delivery_records_and_counts,
            a_commit_that_queues_wakes_the_delivery_streams,
            the_state_digest_says_every_change_and_no_refusal,
            expiry_erases_only_what_nothing_needs,
            expiry_checks_again_what_changed_since_the_pass_looked,
            a_series_match_expires_after_its_period,
        );
    };
    (@tests $open:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::store::suite::$name(&$open).await;
            }
        )*
    };
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

const DE: &str = "spiffe://t.test/agency/DE/bka";
const FR: &str = "spiffe://t.test/agency/FR/police";
const NODE: &str = "spiffe://t.test/node/NL";
const HUB: &str = "spiffe://t.test/hub";
const REP: &str = "spiffe://t.test/representative/DE/weisser";

struct Fixture {
    dir: tempfile::TempDir,
    store: Store,
}

fn start(open: Open<'_>, dir: &Path) -> Store {
    Store::start(open(dir), Arc::new(Clock::system())).unwrap()
}

fn fixture(open: Open<'_>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = start(open, dir.path());
    Fixture { dir, store }
}

/// Closes a store (waiting for its writer to let go) and opens it again.
async fn reopen(open: Open<'_>, f: Fixture) -> Fixture {
    let Fixture { dir, store } = f;
    drop(store);
    // The writer and flusher let go of the backend once their inboxes close.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let store = start(open, dir.path());
    Fixture { dir, store }
}

fn new_report(bytes: &[u8], recipients: &[&str]) -> NewReport {
    NewReport {
        id: ReportId::new_v7(),
        stored: pb::StoredReport {
            report: Some(pb::SignedReport {
                report: bytes.to_vec(),
                signature: vec![1; 64],
                key_id: "00".repeat(8),
            }),
            decision: None,
            received_at_ms: 1,
        },
        recipients: recipients.iter().map(|r| id(r)).collect(),
        origin: id(NODE),
        summary: "test".into(),
        digest: meldnet_core::Sha256::of(bytes),
        placement: 0,
        case: None,
        counts: vec![],
        extra: vec![],
        series: vec![],
    }
}

fn location(url: u8, deadline_ms: i64) -> pb::LocationRecord {
    pb::LocationRecord {
        url_key: vec![url; 32],
        hosting_country: "NL".into(),
        opened_at_ms: 1,
        deadline_ms,
        escalate_to: vec![DE.into()],
        ..Default::default()
    }
}

/// A report that opens a case with one location (and its deadline).
fn opening(deadline_ms: i64) -> (NewReport, CaseId) {
    let case = CaseId::new_v7();
    let mut r = new_report(b"opens", &[DE]);
    let record = pb::CaseRecord {
        case_id: case.to_string(),
        first_report_id: r.id.to_string(),
        opened_at_ms: 1,
        locations: vec![pb::LocationRecord {
            first_report_id: r.id.to_string(),
            ..location(1, deadline_ms)
        }],
        assessment: pb::Assessment::Baseline as i32,
        ..Default::default()
    };
    let keys = CaseKeys {
        urls: vec![[1; 32]],
        files: vec![Sha256([2; 32])],
        pdqs: vec![(PdqHash([3; 32]), 90)],
    };
    r.case = Some(CaseWrite::Open(Box::new(record), keys));
    (r, case)
}

/// A report that joins `case` (opened by `first`) at a new location.
fn sighting(case: CaseId, first: ReportId, deadline_ms: i64) -> NewReport {
    let mut r = new_report(b"joins", &[FR]);
    r.case = Some(CaseWrite::Sighting(Box::new(SightingWrite {
        case_id: case,
        first_report: first,
        matched_by: "file".into(),
        keys: CaseKeys {
            urls: vec![[9; 32]],
            ..Default::default()
        },
        assessment: Some(pb::Assessment::Baseline),
        new_location: Some(Box::new(location(9, deadline_ms))),
        notices: vec![],
    })));
    r
}

fn step(case: CaseId, kind: StepKind, location: u32) -> StepWrite {
    let s = CaseStep {
        step_id: StepId::new_v7(),
        case_id: case,
        country: CountryCode::parse("NL").unwrap(),
        kind,
        at_ms: 5,
        provider: (kind == StepKind::NoticeSent)
            .then(|| HostingProvider::new("host", 64500).unwrap()),
        location,
        reason: if kind == StepKind::Refused {
            "legal_dispute".into()
        } else {
            String::new()
        },
    };
    let signed = s.sign(&SigningKey::generate());
    StepWrite {
        step: s,
        signed,
        received_at_ms: 10,
        actor: id(NODE),
        reappear_deadline_ms: 0,
    }
}

fn decision(report: &NewReport) -> pb::StoredReport {
    let mut s = report.stored.clone();
    s.received_at_ms = 99;
    s
}

fn queued(store: &Store, who: &str) -> Vec<QueueEntry> {
    store.queue_after(&id(who), 0, 1000, usize::MAX).unwrap().0
}

pub async fn receipts_are_idempotent_and_a_conflict_changes_nothing(open: Open<'_>) {
    let f = fixture(open);
    let store = &f.store;
    let r = new_report(b"one", &[DE]);
    let out = store.commit_reports(vec![r.clone()]).await.unwrap();
    assert!(matches!(out[0], Committed::New));
    assert_eq!(store.report(&r.id).unwrap().unwrap(), r.stored);
    let before = store.state_digest().unwrap();
    let out = store.commit_reports(vec![r.clone()]).await.unwrap();
    assert!(matches!(&out[0], Committed::Duplicate(s) if *s == r.stored));
    let mut other = r.clone();
    other.stored.report.as_mut().unwrap().report = b"two".to_vec();
    let out = store.commit_reports(vec![other]).await.unwrap();
    assert!(matches!(out[0], Committed::Conflict));
    assert_eq!(
        store.state_digest().unwrap(),
        before,
        "a re-send or a conflict changed the state"
    );
    // The same id twice in one batch, and in two batches of one group.
    let r2 = new_report(b"three", &[]);
    let out = store
        .commit_reports(vec![r2.clone(), r2.clone()])
        .await
        .unwrap();
    assert!(matches!(out[0], Committed::New));
    assert!(matches!(out[1], Committed::Duplicate(_)));
    let r3 = new_report(b"four", &[DE]);
    let (gate, wait) = std::sync::mpsc::channel::<()>();
    store.hold_writer(wait);
    let a = store.send_reports(vec![r3.clone()]).unwrap();
    let mut conflicting = r3.clone();
    conflicting.stored.report.as_mut().unwrap().report = b"five".to_vec();
    let b = store.send_reports(vec![conflicting]).unwrap();
    drop(gate);
    assert!(matches!(a.await.unwrap()[0], Committed::New));
    assert!(matches!(b.await.unwrap()[0], Committed::Conflict));
    let d = store.state_digest().unwrap();
    assert_eq!(d.reports, 3);
    assert_eq!(
        queued(store, DE).len(),
        2,
        "one entry per new report, none for re-sends"
    );
    assert!(store.report(&ReportId::new_v7()).unwrap().is_none());
}

pub async fn queues_keep_order_per_recipient_and_settle_only_the_own(open: Open<'_>) {
    let f = fixture(open);
    let store = &f.store;
    let a = new_report(b"a", &[DE]);
    let b = new_report(b"b", &[FR, DE]);
    let c = new_report(b"c", &[DE]);
    store
        .commit_reports(vec![a.clone(), b.clone()])
        .await
        .unwrap();
    store.commit_reports(vec![c.clone()]).await.unwrap();
    let de = queued(store, DE);
    let ids: Vec<ReportId> = de.iter().map(|e| e.report_id).collect();
    assert_eq!(ids, vec![a.id, b.id, c.id], "queue order is commit order");
    assert!(de.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(de[1].stored, b.stored);
    let fr = queued(store, FR);
    assert_eq!(fr.len(), 1);
    // After a position: only what follows.
    let after = store
        .queue_after(&id(DE), de[0].seq, 10, usize::MAX)
        .unwrap()
        .0;
    assert_eq!(after.len(), 2);
    // The same positions and items without their bodies, a page at a time.
    let items = store.queue_items_after(&id(DE), 0, 2).unwrap();
    assert_eq!(
        items
            .iter()
            .map(|(s, i)| (*s, i.report_id()))
            .collect::<Vec<_>>(),
        de.iter()
            .take(2)
            .map(|e| (e.seq, e.report_id))
            .collect::<Vec<_>>()
    );
    let rest = store.queue_items_after(&id(DE), items[1].0, 10).unwrap();
    assert_eq!(rest.len(), 1);
    assert!(store
        .queue_items_after(&id("spiffe://eu.meldnet.test/agency/IT/polizia"), 0, 10)
        .unwrap()
        .is_empty());
    // DE settling FR's entry changes nothing of FR's queue.
    let before = store.state_digest().unwrap();
    let settled = store.ack(&id(DE), vec![fr[0].seq]).await.unwrap();
    assert_eq!(
        settled,
        vec![fr[0].seq],
        "a seq not in the own queue is answered as settled"
    );
    assert_eq!(queued(store, FR).len(), 1);
    let _ = before;
    // Acknowledged and refused, each once; named twice, settled by the first.
    let settled = store
        .settle(
            &id(DE),
            vec![de[0].seq, de[0].seq],
            vec![(de[1].seq, "unreadable".into()), (de[0].seq, "late".into())],
        )
        .await
        .unwrap();
    assert_eq!(settled, vec![de[0].seq, de[1].seq]);
    assert_eq!(queued(store, DE).len(), 1);
    let counts: std::collections::HashMap<_, _> = store.counts().unwrap().into_iter().collect();
    assert_eq!(counts.get("deliveries_refused"), Some(&1));
    let kinds: Vec<String> = store
        .history(&b.id)
        .unwrap()
        .into_iter()
        .map(|h| h.kind)
        .collect();
    assert!(kinds.contains(&"refused".to_string()), "{kinds:?}");
    let kinds: Vec<String> = store
        .history(&a.id)
        .unwrap()
        .into_iter()
        .map(|h| h.kind)
        .collect();
    assert!(kinds.contains(&"acknowledged".to_string()), "{kinds:?}");
    // Settling again: the same answer, nothing changes.
    let before = store.state_digest().unwrap();
    let again = store.ack(&id(DE), vec![de[0].seq]).await.unwrap();
    assert_eq!(again, vec![de[0].seq]);
    let after = store.state_digest().unwrap();
    assert_eq!(after.queued, before.queued);
    assert_eq!(after.reports, before.reports);
}

pub async fn a_byte_budget_pages_a_queue(open: Open<'_>) {
    let f = fixture(open);
    let store = &f.store;
    let rs: Vec<NewReport> = (0..5).map(|i| new_report(&[i; 100], &[DE])).collect();
    store.commit_reports(rs).await.unwrap();
    let (page, more) = store.queue_after(&id(DE), 0, 10, usize::MAX).unwrap();
    assert_eq!((page.len(), more), (5, false));
    // A budget smaller than one body still lets one entry through.
    let (page, more) = store.queue_after(&id(DE), 0, 10, 1).unwrap();
    assert_eq!((page.len(), more), (1, true));
    let (page, more) = store.queue_after(&id(DE), 0, 2, usize::MAX).unwrap();
    assert_eq!((page.len(), more), (2, true));
    let (page, more) = store.queue_after(&id(DE), 0, 0, usize::MAX).unwrap();
    assert!(page.is_empty() && more);
    assert!(store
        .queue_after(&id(FR), 0, 10, usize::MAX)
        .unwrap()
        .0
        .is_empty());
}

pub async fn further_decisions_are_queued_and_read_back(open: Open<'_>) {
    let f = fixture(open);
    let store = &f.store;
    let first = new_report(b"first", &[DE]);
    store.commit_reports(vec![first.clone()]).await.unwrap();
    let mut second = new_report(b"second", &[DE]);
    let decision_id = CaseId::new_v7();
    second.extra = vec![ExtraDecision {
        id: decision_id,
        report_id: first.id,
        stored: decision(&first),
        recipients: vec![id(FR)],
        line: "a further decision".into(),
    }];
    store.commit_reports(vec![second]).await.unwrap();
    let fr = queued(store, FR);
    assert_eq!(fr.len(), 1);
    assert_eq!(fr[0].report_id, first.id);
    assert_eq!(
        fr[0].stored,
        decision(&first),
        "the entry delivers the further decision"
    );
    assert_eq!(
        store.escalation(&decision_id).unwrap().unwrap(),
        decision(&first)
    );
    let lines: Vec<String> = store
        .history(&first.id)
        .unwrap()
        .into_iter()
        .map(|h| h.detail)
        .collect();
    assert!(
        lines.contains(&"a further decision".to_string()),
        "{lines:?}"
    );
}

pub async fn the_audit_chain_links_every_write(open: Open<'_>) {
    let f = fixture(open);
    let store = &f.store;
    assert_eq!(store.verify_audit().unwrap().next_seq, 0);
    store
        .commit_reports(vec![new_report(b"x", &[NODE])])
        .await
        .unwrap();
    store.ack(&id(NODE), vec![1]).await.unwrap();
    store
        .audit("operator", &id(HUB), "subject".into(), "detail".into(), 7)
        .await
        .unwrap();
    assert_eq!(store.verify_audit().unwrap().next_seq, 3);
    let events = store.audit_events().unwrap();
    let kinds: Vec<&str> = events.iter().map(|(_, e)| e.kind.as_str()).collect();
    assert_eq!(kinds, ["submitted", "acknowledged", "operator"]);
    assert_eq!(
        events.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert_eq!(events[2].1.at_ms, 7);
}

pub async fn what_was_acknowledged_is_there_after_a_reopen(open: Open<'_>) {
    let f = fixture(open);
    let (r, case) = opening(1_000);
    f.store
        .commit_reports(vec![r.clone(), new_report(b"y", &[DE])])
        .await
        .unwrap();
    let s = SeriesId::random();
    f.store
        .register_series(s, &id(DE), SeriesHashes::default())
        .await
        .unwrap();
    let before = f.store.state_digest().unwrap();
    let seqs: Vec<u64> = queued(&f.store, DE).iter().map(|e| e.seq).collect();
    let f = reopen(open, f).await;
    assert_eq!(
        f.store.state_digest().unwrap(),
        before,
        "a reopen changed the state"
    );
    assert!(f.store.case(&case).unwrap().is_some());
    assert_eq!(f.store.verify_audit().unwrap().next_seq, 2);
    // The pipeline goes on where it stood: new positions follow the old.
    f.store
        .commit_reports(vec![new_report(b"z", &[DE])])
        .await
        .unwrap();
    let after: Vec<u64> = queued(&f.store, DE).iter().map(|e| e.seq).collect();
    assert_eq!(after.len(), 3);
    assert!(after[2] > *seqs.iter().max().unwrap());
    assert_eq!(f.store.verify_audit().unwrap().next_seq, 3);
}

pub async fn a_case_opens_with_its_deadlines_and_keys(open: Open<'_>) {
    let f = fixture(open);
    let store = &f.store;
    let (r, case) = opening(1_000);
    store.commit_reports(vec![r.clone()]).await.unwrap();
    let rec = store.case(&case).unwrap().unwrap();
    assert_eq!(rec.first_report_id, r.id.to_string());
    assert_eq!(store.cases().unwrap().len(), 1);
    assert_eq!(store.next_deadline().unwrap(), Some(1_000));
    assert!(store.due(999, 10).unwrap().is_empty());
    assert_eq!(store.due(1_000, 10).unwrap(), vec![(1_000, case, 0)]);
    let keys = store.case_keys(&r.id).unwrap();
    assert_eq!(keys.urls, vec![[1; 32]]);
    assert_eq!(keys.files, vec![Sha256([2; 32])]);
    assert_eq!(keys.pdqs, vec![(PdqHash([3; 32]), 90)]);
    // The exact keys lead to the case; the keys record is met in order.
    use crate::cases::{CaseSource, ExactKey};
    assert_eq!(
        store.case_of_key(&ExactKey::Url([1; 32])).unwrap(),
        Some(case)
    );
    assert_eq!(
        store.case_of_key(&ExactKey::File(Sha256([2; 32]))).unwrap(),
        Some(case)
    );
    assert_eq!(store.case_of_key(&ExactKey::Url([9; 32])).unwrap(), None);
    let mut records = Vec::new();
    CaseSource::case_keys_since(store, 0, &mut |rec| {
        records.push(rec);
        Ok(true)
    })
    .unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].seq, 1);
    assert_eq!(records[0].case_id, case.as_bytes().to_vec());
    assert!(store.durable_keys_seq() >= 1);
    // The index over the store holds what it holds.
    let index = store
        .case_index(crate::cases::PdqRuns::in_memory())
        .unwrap();
    assert_eq!(index.pdq_len(), 1);
    assert_eq!(
        index.info(&case).unwrap().map(|c| c.first_report),
        Some(r.id)
    );
    // What the store holds, kind by kind.
    let u = store.usage().unwrap();
    assert_eq!(u.reports(), 1);
    for kind in ["report", "case", "case_keys", "deadline", "queue", "audit"] {
        assert!(
            u.kinds
                .get(kind)
                .is_some_and(|k| k.records == 1 && k.value_bytes + k.key_bytes > 0),
            "{kind}: {:?}",
            u.kinds.get(kind)
        );
    }
    assert_eq!(
        u.logical_bytes(),
        u.kinds
            .values()
            .map(|k| k.key_bytes + k.value_bytes)
            .sum::<u64>()
    );
    let counts: std::collections::HashMap<_, _> = store.counts().unwrap().into_iter().collect();
    assert_eq!(counts.get("cases"), Some(&1));
    // A case without deadlines has none.
    let (r2, _) = opening(0);
    store.commit_reports(vec![r2]).await.unwrap();
    assert_eq!(store.due(i64::MAX - 1, 10).unwrap().len(), 1);
}

pub async fn a_sighting_joins_with_its_location_and_notices(open: Open<'_>) {
    let f = fixture(open);
    let store = &f.store;
    let (r, case) = opening(0);
    // Opened and joined in one group: the sighting sees the case.
    let (gate, wait) = std::sync::mpsc::channel::<()>();
    store.hold_writer(wait);
    let a = store.send_reports(vec![r.clone()]).unwrap();
    let s = sighting(case, r.id, 2_000);
    let b = store.send_reports(vec![s.clone()]).unwrap();
    drop(gate);
    a.await.unwrap();
    b.await.unwrap();
    let rec = store.case(&case).unwrap().unwrap();
    assert_eq!(rec.sightings, 1);
    assert_eq!(rec.locations.len(), 2);
    assert_eq!(rec.assessment, pb::Assessment::Baseline as i32);
    assert!(store.is_sighting(&case, &s.id).unwrap());
    assert!(!store.is_sighting(&case, &r.id).unwrap());
    assert_eq!(store.sightings(&case, 10).unwrap(), vec![s.id]);
    assert_eq!(store.due(2_000, 10).unwrap(), vec![(2_000, case, 1)]);
    // A notice asked at the first location now.
    let mut n = sighting(case, r.id, 0);
    if let Some(CaseWrite::Sighting(w)) = &mut n.case {
        w.new_location = None;
        w.notices.push((
            0,
            crate::cases::Notice {
                deadline_ms: 3_000,
                hours: 24,
                escalate_to: vec![DE.into()],
            },
        ));
    }
    store.commit_reports(vec![n.clone()]).await.unwrap();
    let rec = store.case(&case).unwrap().unwrap();
    assert_eq!(rec.locations[0].deadline_ms, 3_000);
    assert_eq!(rec.locations[0].noticed_by_report_id, n.id.to_string());
    assert_eq!(store.due(3_000, 10).unwrap().len(), 2);
    let kinds: Vec<String> = store
        .history(&r.id)
        .unwrap()
        .into_iter()
        .map(|h| h.kind)
        .collect();
    for k in ["sighting", "location", "assessment", "notice"] {
        assert!(kinds.contains(&k.to_string()), "{k} missing from {kinds:?}");
    }
}

pub async fn a_step_is_stored_once_and_moves_deadlines(open: Open<'_>) {
    let f = fixture(open);
    let store = &f.store;
    let (r, case) = opening(1_000);
    store.commit_reports(vec![r]).await.unwrap();
    let notice = step(case, StepKind::NoticeSent, 0);
    let out = store.record_step(notice.clone()).await.unwrap();
    let StepOutcome::Stored(rec) = out else {
        panic!("{out:?}")
    };
    assert_eq!(rec.locations[0].provider.as_ref().unwrap().asn, 64500);
    let before = store.state_digest().unwrap();
    assert!(matches!(
        store.record_step(notice.clone()).await.unwrap(),
        StepOutcome::Duplicate(_)
    ));
    let mut other = step(case, StepKind::Removed, 0);
    other.step.step_id = notice.step.step_id;
    other.signed = other.step.sign(&SigningKey::generate());
    assert!(matches!(
        store.record_step(other).await.unwrap(),
        StepOutcome::Conflict
    ));
    assert_eq!(store.state_digest().unwrap().digest, before.digest);
    assert!(matches!(
        store
            .record_step(step(CaseId::new_v7(), StepKind::Removed, 0))
            .await
            .unwrap(),
        StepOutcome::NoCase
    ));
    assert!(matches!(
        store
            .record_step(step(case, StepKind::Removed, 7))
            .await
            .unwrap(),
        StepOutcome::NoCase
    ));
    // Removed in time: the deadline is met and closed.
    store
        .record_step(step(case, StepKind::Removed, 0))
        .await
        .unwrap();
    assert_eq!(store.next_deadline().unwrap(), None);
    // Re-appeared: a new deadline.
    let mut back = step(case, StepKind::Reappeared, 0);
    back.reappear_deadline_ms = 5_000;
    store.record_step(back).await.unwrap();
    assert_eq!(store.due(5_000, 10).unwrap(), vec![(5_000, case, 0)]);
    let rec = store.case(&case).unwrap().unwrap();
    assert_eq!(rec.locations[0].removed_at_ms, 0);
    assert_eq!(rec.locations[0].steps.len(), 3);
}

fn escalation(case: CaseId, report: &NewReport, deadline_ms: i64) -> Escalation {
    Escalation {
        id: CaseId::new_v7(),
        case_id: case,
        location: 0,
        deadline_ms,
        stored: decision(report),
        report_id: report.id,
        recipients: vec![id(FR)],
        actor: id(HUB),
    }
}

pub async fn a_missed_deadline_escalates_exactly_once(open: Open<'_>) {
    let f = fixture(open);
    let store = &f.store;
    let (r, case) = opening(1_000);
    store.commit_reports(vec![r.clone()]).await.unwrap();
    // Two watchers meeting the same deadline in one group: one escalation.
    let (gate, wait) = std::sync::mpsc::channel::<()>();
    store.hold_writer(wait);
    let a = tokio::spawn({
        let store = store.clone();
        let e = escalation(case, &r, 1_000);
        async move { store.escalate(e).await }
    });
    let b = tokio::spawn({
        let store = store.clone();
        let e = escalation(case, &r, 1_000);
        async move { store.escalate(e).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    drop(gate);
    let done = [a.await.unwrap().unwrap(), b.await.unwrap().unwrap()];
    assert_eq!(done.iter().filter(|d| **d).count(), 1, "{done:?}");
    assert_eq!(queued(store, FR).len(), 1);
    assert!(store.due(i64::MAX - 1, 10).unwrap().is_empty());
    let rec = store.case(&case).unwrap().unwrap();
    assert_eq!(rec.locations[0].escalated_deadline_ms, 1_000);
    assert_eq!(rec.locations[0].escalations.len(), 1);
    // Again later: nothing.
    assert!(!store.escalate(escalation(case, &r, 1_000)).await.unwrap());
    // Removed in time: no escalation even if the watcher comes late.
    let (r2, case2) = opening(2_000);
    store.commit_reports(vec![r2.clone()]).await.unwrap();
    let mut removed = step(case2, StepKind::Removed, 0);
    removed.received_at_ms = 1_500;
    store.record_step(removed).await.unwrap();
    assert!(!store.escalate(escalation(case2, &r2, 2_000)).await.unwrap());
    // No such case: dropped.
    assert!(!store
        .escalate(escalation(CaseId::new_v7(), &r2, 2_000))
        .await
        .unwrap());
    assert_eq!(queued(store, FR).len(), 1);
    let counts: std::collections::HashMap<_, _> = store.counts().unwrap().into_iter().collect();
    assert_eq!(counts.get("deadlines_missed"), Some(&1));
}

pub async fn a_split_moves_a_sighting_into_its_own_case(open: Open<'_>) {
    let f = fixture(open);
    let store = &f.store;
    let (r, case) = opening(0);
    store.commit_reports(vec![r.clone()]).await.unwrap();
    let s = sighting(case, r.id, 2_000);
    store.commit_reports(vec![s.clone()]).await.unwrap();
    let new_case = CaseId::new_v7();
    let split = |decision_id| SplitWrite {
        report_id: s.id,
        from: case,
        from_location: 1,
        record: pb::CaseRecord {
            case_id: new_case.to_string(),
            first_report_id: s.id.to_string(),
            locations: vec![location(9, 2_000)],
            ..Default::default()
        },
        keys: CaseKeys {
            urls: vec![[9; 32]],
            ..Default::default()
        },
        decision_id,
        stored: decision(&s),
        recipients: vec![id(DE)],
        actor: id(HUB),
        reason: "wrongly merged".into(),
    };
    assert!(store
        .send_split(split(CaseId::new_v7()))
        .unwrap()
        .await
        .unwrap());
    assert!(!store.is_sighting(&case, &s.id).unwrap());
    let old = store.case(&case).unwrap().unwrap();
    assert_eq!(old.sightings, 0);
    assert_eq!(old.locations[1].moved_to_case_id, new_case.to_string());
    assert_eq!(store.due(2_000, 10).unwrap(), vec![(2_000, new_case, 0)]);
    assert!(store.case(&new_case).unwrap().is_some());
    assert_eq!(
        queued(store, DE).len(),
        2,
        "the opening report and the split's decision"
    );
    // Split again: no longer a sighting, nothing changes.
    let before = store.state_digest().unwrap();
    assert!(!store
        .send_split(split(CaseId::new_v7()))
        .unwrap()
        .await
        .unwrap());
    assert_eq!(store.state_digest().unwrap(), before);
}

async fn register(store: &Store, owner: &str, hashes: SeriesHashes) -> SeriesId {
    let s = SeriesId::random();
    let v = store.register_series(s, &id(owner), hashes).await.unwrap();
    assert_eq!(v.series_id, s.to_string());
    s
}

async fn link(store: &Store, s: SeriesId, preference: Preference) {
    store
        .link_series(s, &id(DE), &id(REP))
        .await
        .unwrap()
        .unwrap();
    store
        .set_preference(s, &id(REP), preference)
        .await
        .unwrap()
        .unwrap();
}

pub async fn series_answer_only_their_owner_and_representative(open: Open<'_>) {
    let f = fixture(open);
    let store = &f.store;
    let hashes = SeriesHashes {
        sha256: vec![Sha256([1; 32]), Sha256([1; 32])],
        pdq: vec![(PdqHash([2; 32]), 80)],
    };
    let s = register(store, DE, hashes.clone()).await;
    let more = SeriesHashes {
        sha256: vec![Sha256([1; 32]), Sha256([3; 32])],
        pdq: vec![],
    };
    let v = store
        .add_series_hashes(s, &id(DE), more)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (v.sha256_count, v.pdq_count),
        (2, 1),
        "a hash held twice counts once"
    );
    assert_eq!(store.series_hashes().unwrap().len(), 3);
    let before = store.state_digest().unwrap();
    let refusal = store
        .add_series_hashes(s, &id(FR), hashes)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(refusal.field, "series_id");
    assert!(store
        .link_series(s, &id(FR), &id(REP))
        .await
        .unwrap()
        .is_err());
    let p = Preference::LegalOnly;
    assert!(store.set_preference(s, &id(REP), p).await.unwrap().is_err());
    assert_eq!(
        store.state_digest().unwrap(),
        before,
        "a refusal changed the state"
    );
    store
        .link_series(s, &id(DE), &id(REP))
        .await
        .unwrap()
        .unwrap();
    let out = store.set_preference(s, &id(REP), p).await.unwrap().unwrap();
    assert_eq!(out.series_id, s.to_string());
    assert_eq!(
        store.preference(&s).unwrap().unwrap().0,
        Preference::LegalOnly
    );
    assert_eq!(store.preferences().unwrap().len(), 1);
    assert_eq!(store.series_records().unwrap().len(), 1);
    assert_eq!(
        store.series_record(&s).unwrap().unwrap().representative,
        REP
    );
    assert!(!store.series_footprint(&s).unwrap().is_empty());
    // Linking another representative withdraws the consent given.
    let other = id("spiffe://t.test/representative/DE/other");
    store
        .link_series(s, &id(DE), &other)
        .await
        .unwrap()
        .unwrap();
    assert!(store.preference(&s).unwrap().is_none());
}

/// A series linked to a representative with a weekly digest, capped at 2.
async fn digest_series(store: &Store) -> SeriesId {
    let s = register(store, DE, SeriesHashes::default()).await;
    let weekly = Preference::Digest {
        period: Period::Week,
        cap: 2,
    };
    link(store, s, weekly).await;
    s
}

/// The digest the notifier would make next for `s`, numbered `number`.
fn digest_notification(store: &Store, s: SeriesId, number: u32) -> Outgoing {
    let state = store.digest_state(&s).unwrap().unwrap();
    let (_, set_at_ms) = store.preference(&s).unwrap().unwrap();
    let nid = NotificationId::new_v7();
    let n = pb::Notification {
        notification_id: nid.to_string(),
        series_id: s.to_string(),
        representative: REP.into(),
        ..Default::default()
    };
    let period_start = if state.period_start_ms > 0 {
        state.period_start_ms
    } else {
        state.from_ms
    };
    Outgoing {
        id: nid,
        series: s,
        representative: id(REP),
        signed: meldnet_core::sign_notification(&SigningKey::generate(), &n),
        why: Why::Digest {
            from: state.from_ms,
            to: state.from_ms + 1,
            period_start,
            number,
            set_at_ms,
        },
        actor: id(HUB),
    }
}

/// The representative withdraws every choice.
async fn withdraw(store: &Store, s: SeriesId) {
    let never = Preference::Never;
    store
        .set_preference(s, &id(REP), never)
        .await
        .unwrap()
        .unwrap();
}

pub async fn the_digest_cap_holds_and_a_withdrawal_drops_what_is_queued(open: Open<'_>) {
    let f = fixture(open);
    let store = &f.store;
    let s = digest_series(store).await;
    for number in [1, 2] {
        let queued = store
            .notify(digest_notification(store, s, number))
            .await
            .unwrap();
        assert!(queued, "digest {number}");
    }
    let state = store.digest_state(&s).unwrap().unwrap();
    assert_eq!(state.sent, 2);
    // The cap: a third in the same period is not queued.
    assert!(!store
        .notify(digest_notification(store, s, 3))
        .await
        .unwrap());
    // A stale one (counting moved on since) neither.
    let mut stale = digest_notification(store, s, 3);
    if let Why::Digest { from, number, .. } = &mut stale.why {
        *from -= 1;
        *number = 2;
    }
    assert!(!store.notify(stale).await.unwrap());
    let q = queued(store, REP);
    assert_eq!(q.len(), 2);
    assert!(q.iter().all(|e| e.notification.is_some()));
    // Advancing a digest with nothing to say moves counting on.
    let from = store.digest_state(&s).unwrap().unwrap().from_ms;
    store.advance_digest(s, from - 1, from + 5).await.unwrap();
    assert_eq!(
        store.digest_state(&s).unwrap().unwrap().from_ms,
        from,
        "a stale advance"
    );
    store.advance_digest(s, from, from + 10).await.unwrap();
    assert_eq!(store.digest_state(&s).unwrap().unwrap().from_ms, from + 10);
    withdraw(store, s).await;
    assert!(
        queued(store, REP).is_empty(),
        "withdrawing dropped the queued digests"
    );
    assert!(store.digest_state(&s).unwrap().is_none());
    assert!(store.preference(&s).unwrap().is_none());
}

pub async fn a_withdrawal_and_a_notification_in_one_group_let_nothing_out(open: Open<'_>) {
    let f = fixture(open);
    let store = &f.store;
    for withdrawal_first in [true, false] {
        let s = digest_series(store).await;
        let notify = digest_notification(store, s, 1);
        let (gate, wait) = std::sync::mpsc::channel::<()>();
        store.hold_writer(wait);
        let notifying = {
            let store = store.clone();
            async move { store.notify(notify).await.unwrap() }
        };
        let withdrawing = {
            let store = store.clone();
            async move { withdraw(&store, s).await }
        };
        let (first, second) = if withdrawal_first {
            let w = tokio::spawn(withdrawing);
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            (
                w,
                tokio::spawn(async move {
                    let _ = notifying.await;
                }),
            )
        } else {
            let n = tokio::spawn(async move {
                let _ = notifying.await;
            });
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            (n, tokio::spawn(withdrawing))
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        drop(gate);
        first.await.unwrap();
        second.await.unwrap();
        assert!(
            queued(store, REP).is_empty(),
            "withdrawal first: {withdrawal_first}: a notification outlived the withdrawal"
        );
    }
}

pub async fn proceedings_draft_a_notification_once(open: Open<'_>) {
    let f = fixture(open);
    let store = &f.store;
    let s = register(store, DE, SeriesHashes::default()).await;
    link(store, s, Preference::LegalOnly).await;
    let (mut r, case) = opening(0);
    r.series = vec![s];
    store.commit_reports(vec![r]).await.unwrap();
    assert_eq!(store.series_counts(&s, 0, i64::MAX).unwrap(), (1, 0));
    assert!(store
        .mark_proceedings(case, &id(DE))
        .await
        .unwrap()
        .unwrap());
    assert!(!store
        .mark_proceedings(case, &id(DE))
        .await
        .unwrap()
        .unwrap());
    let missing = store
        .mark_proceedings(CaseId::new_v7(), &id(DE))
        .await
        .unwrap();
    assert_eq!(missing.unwrap_err().field, "case_id");
    let drafts = store.proceedings_drafts().unwrap();
    assert_eq!(drafts.len(), 1);
    assert_eq!(drafts[0].0, case);
    // A sighting of the series after the marking drafts nothing new.
    let first = ReportId::parse(&store.case(&case).unwrap().unwrap().first_report_id).unwrap();
    let mut later = sighting(case, first, 0);
    later.series = vec![s];
    store.commit_reports(vec![later]).await.unwrap();
    assert_eq!(store.proceedings_drafts().unwrap().len(), 1);
    assert_eq!(store.series_counts(&s, 0, i64::MAX).unwrap(), (1, 1));
    let nid = NotificationId::new_v7();
    let n = pb::Notification {
        notification_id: nid.to_string(),
        series_id: s.to_string(),
        representative: REP.into(),
        ..Default::default()
    };
    let notify = |nid| Outgoing {
        id: nid,
        series: s,
        representative: id(REP),
        signed: meldnet_core::sign_notification(&SigningKey::generate(), &n),
        why: Why::Proceedings { case },
        actor: id(HUB),
    };
    assert!(store.notify(notify(nid)).await.unwrap());
    assert!(store.proceedings_drafts().unwrap().is_empty());
    assert!(!store
        .notify(notify(NotificationId::new_v7()))
        .await
        .unwrap());
    assert_eq!(queued(store, REP).len(), 1);
}

pub async fn list_changes_and_settings_are_stored_with_their_audit(open: Open<'_>) {
    let f = fixture(open);
    let store = &f.store;
    let change = |version: u64| StoredChange {
        tip: Tip {
            version,
            count: version * 10,
            digest: [version as u8; 32],
        },
        bytes: vec![version as u8; 5],
    };
    store
        .commit_list(ListWrite {
            changes: vec![change(1), change(2), change(3)],
            actor: id(HUB),
            lines: vec!["a".into(), "b".into(), "c".into()],
        })
        .await
        .unwrap();
    assert_eq!(
        store.list_changes(0, 10).unwrap(),
        vec![change(1), change(2), change(3)]
    );
    assert_eq!(store.list_changes(2, 1).unwrap(), vec![change(2)]);
    assert_eq!(store.list_tip().unwrap(), Some(change(3).tip));
    assert!(store.rules().unwrap().is_none());
    store
        .set(
            Setting::Rules(4, "[[rules]]".into()),
            &id(HUB),
            "rules".into(),
            "v4".into(),
            1,
        )
        .await
        .unwrap();
    assert_eq!(store.rules().unwrap(), Some((4, "[[rules]]".to_string())));
    let reg = pb::Registration {
        identity: DE.into(),
        revoked: true,
        ..Default::default()
    };
    store
        .set(
            Setting::Registration(reg.clone()),
            &id(HUB),
            DE.into(),
            "revoked".into(),
            2,
        )
        .await
        .unwrap();
    assert_eq!(store.registrations().unwrap(), vec![reg]);
    let kinds: Vec<String> = store
        .audit_events()
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.kind)
        .collect();
    assert_eq!(kinds, ["list", "setting", "setting"]);
}

pub async fn delivery_records_and_counts(open: Open<'_>) {
    let f = fixture(open);
    let store = &f.store;
    let mut r = new_report(b"r", &[DE]);
    r.counts = vec!["reports".into(), "reports/NL".into()];
    store.commit_reports(vec![r.clone()]).await.unwrap();
    let q = queued(store, DE);
    store.record_delivered(&id(DE), vec![(q[0].seq, r.id)]);
    // Sent again (a new session), then acknowledged.
    store.record_delivered(&id(DE), vec![(q[0].seq, r.id)]);
    // Recorded in the next group; an acknowledgement after it comes later.
    store.ack(&id(DE), vec![q[0].seq]).await.unwrap();
    let kinds: Vec<String> = store
        .history(&r.id)
        .unwrap()
        .into_iter()
        .map(|h| h.kind)
        .collect();
    assert_eq!(kinds, ["decided", "delivered", "delivered", "acknowledged"]);
    // Deliveries and acknowledgements are the audit log's: kept once.
    let kept = store.stored_history(&r.id).unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].queued.len(), 1);
    assert_eq!(kept[0].queued[0].seq, q[0].seq);
    let counts: std::collections::HashMap<_, _> = store.counts().unwrap().into_iter().collect();
    assert_eq!(counts.get("reports"), Some(&1));
    assert_eq!(counts.get("reports/NL"), Some(&1));
    assert_eq!(store.check().unwrap().damaged.len(), 0);
    assert!(store.check().unwrap().bodies > 0);
}

pub async fn the_state_digest_says_every_change_and_no_refusal(open: Open<'_>) {
    let f = fixture(open);
    let store = &f.store;
    let empty = store.state_digest().unwrap();
    let r = new_report(b"a", &[DE]);
    store.commit_reports(vec![r.clone()]).await.unwrap();
    let one = store.state_digest().unwrap();
    assert_ne!(one.digest, empty.digest);
    assert_eq!(
        (one.reports, one.queued, one.audit_records, one.damaged),
        (1, 1, 1, 0)
    );
    // Refusals and re-sends leave it as it is.
    store.commit_reports(vec![r.clone()]).await.unwrap();
    assert!(matches!(
        store
            .record_step(step(CaseId::new_v7(), StepKind::Removed, 0))
            .await
            .unwrap(),
        StepOutcome::NoCase
    ));
    assert_eq!(store.state_digest().unwrap(), one);
    // An acknowledgement changes it.
    store
        .ack(&id(DE), vec![queued(store, DE)[0].seq])
        .await
        .unwrap();
    let acked = store.state_digest().unwrap();
    assert_ne!(acked.digest, one.digest);
    assert_eq!(acked.queued, 0);
}

pub async fn a_commit_that_queues_wakes_the_delivery_streams(open: Open<'_>) {
    let f = fixture(open);
    let store = &f.store;
    let mut woken = store.subscribe();
    let at_start = *woken.borrow_and_update();
    // Nothing queued: no wake-up.
    store
        .commit_reports(vec![new_report(b"none", &[])])
        .await
        .unwrap();
    assert!(
        !woken.has_changed().unwrap(),
        "a commit without queue entries woke the streams"
    );
    // The wake-up follows the answer (both after the flush).
    let wake = |w: &mut tokio::sync::watch::Receiver<u64>| {
        let mut w = w.clone();
        async move {
            tokio::time::timeout(std::time::Duration::from_secs(10), w.changed())
                .await
                .is_ok()
        }
    };
    let woke = wake(&mut woken);
    store
        .commit_reports(vec![new_report(b"one", &[DE])])
        .await
        .unwrap();
    assert!(woke.await, "a queued report did not wake the streams");
    assert!(*woken.borrow_and_update() > at_start);
    // A further decision queues too.
    let (r, case) = opening(1_000);
    let woke = wake(&mut woken);
    store.commit_reports(vec![r.clone()]).await.unwrap();
    assert!(woke.await);
    woken.borrow_and_update();
    let woke = wake(&mut woken);
    assert!(store.escalate(escalation(case, &r, 1_000)).await.unwrap());
    assert!(woke.await, "an escalation did not wake the streams");
}

const DAY: i64 = 86_400_000;

/// A report whose bytes are a `Report` of hotline `country`, received now.
fn report_of(country: &str, recipients: &[&str]) -> NewReport {
    let mut r = new_report(b"", recipients);
    r.stored.received_at_ms = meldnet_core::time::now_ms();
    let bytes = pb::Report {
        id: r.id.to_string(),
        origin_country: country.into(),
        ..Default::default()
    }
    .encode_to_vec();
    if let Some(sr) = r.stored.report.as_mut() {
        sr.report = bytes.clone();
    }
    r.digest = meldnet_core::Sha256::of(&bytes);
    r
}

/// Kept for a day; DE's hotline's reports for ever.
fn a_day_but_de_for_ever() -> RetentionPolicy {
    RetentionPolicy {
        reports_ms: Some(DAY),
        countries: [(CountryCode::parse("DE").unwrap(), None)].into(),
        series_matches_ms: None,
    }
}

/// A report that joins `case` at its first location (no location of its
/// own stands on it).
fn plain_sighting(case: CaseId, first: ReportId) -> Option<CaseWrite> {
    let mut s = sighting(case, first, 0);
    if let Some(CaseWrite::Sighting(w)) = &mut s.case {
        w.new_location = None;
    }
    s.case
}

/// Hands the writer what a pass chose, as a pass would.
async fn erase_chosen(
    store: &Store,
    chosen: Vec<(ReportId, Option<CaseId>)>,
    queued_from: u64,
) -> u64 {
    let w = retention::ExpireWrite {
        chosen,
        queued_from,
        at_ms: 2 * DAY,
        actor: id(HUB),
    };
    store
        .send(|tx| pipeline::WriteOp::Expire(w, tx))
        .unwrap()
        .await
        .unwrap()
}

async fn ack_all(store: &Store, who: &str) {
    let seqs = queued(store, who).iter().map(|e| e.seq).collect();
    store.ack(&id(who), seqs).await.unwrap();
}

pub async fn expiry_erases_only_what_nothing_needs(open: Open<'_>) {
    let f = fixture(open);
    let store = &f.store;
    let policy = a_day_but_de_for_ever();
    let hub = id(HUB);
    let t0 = meldnet_core::time::now_ms();
    // A case opened by `first` (its location stands on it) and joined by a
    // plain sighting; a report without a case; one of DE's hotline.
    let (mut first, case) = opening(1_000);
    let opened = report_of("NL", &[DE]);
    first.id = opened.id;
    first.stored = opened.stored.clone();
    first.digest = opened.digest;
    if let Some(CaseWrite::Open(rec, _)) = &mut first.case {
        rec.first_report_id = first.id.to_string();
        rec.locations[0].first_report_id = first.id.to_string();
    }
    let mut seen = report_of("NL", &[FR]);
    seen.case = plain_sighting(case, first.id);
    let lone = report_of("NL", &[DE]);
    let german = report_of("DE", &[DE]);
    store
        .commit_reports(vec![
            first.clone(),
            seen.clone(),
            lone.clone(),
            german.clone(),
        ])
        .await
        .unwrap();

    // Young: nothing goes.
    let out = store.expire(&policy, t0 + DAY / 2, &hub).await.unwrap();
    assert_eq!(out, Expired::default());

    // Old, but every one still queued: nothing goes.
    let out = store.expire(&policy, t0 + 2 * DAY, &hub).await.unwrap();
    assert_eq!((out.reports, out.kept_queued), (0, 3), "{out:?}");
    assert_eq!(queued(store, DE).len(), 3);
    assert_eq!(queued(store, FR).len(), 1);

    // Acknowledged: the lone report goes; the sighting's case is open.
    ack_all(store, DE).await;
    ack_all(store, FR).await;
    let before = store.state_digest().unwrap();
    let out = store.expire(&policy, t0 + 2 * DAY, &hub).await.unwrap();
    assert_eq!(out.reports, 1, "{out:?}");
    assert_eq!((out.kept_open_case, out.kept_location), (2, 0), "{out:?}");
    assert!(store.report(&lone.id).unwrap().is_none());
    assert!(store.history(&lone.id).unwrap().is_empty());
    assert!(store.report(&german.id).unwrap().is_some(), "DE: for ever");
    assert_ne!(store.state_digest().unwrap().digest, before.digest);

    // The location removed: the case is settled, the sighting goes; the
    // report its location stands on stays with the case.
    store
        .record_step(step(case, StepKind::Removed, 0))
        .await
        .unwrap();
    let out = store.expire(&policy, t0 + 2 * DAY, &hub).await.unwrap();
    assert_eq!((out.reports, out.kept_location), (1, 1), "{out:?}");
    assert!(store.report(&seen.id).unwrap().is_none());
    assert!(store.report(&first.id).unwrap().is_some());
    assert_eq!(store.sightings(&case, 10).unwrap(), vec![seen.id]);
    assert!(store.case_keys(&seen.id).is_ok(), "the case keeps its keys");

    // Said in the audit log, which still verifies; a second pass finds
    // nothing more; what was erased stays erased after a restart.
    let named: Vec<String> = store
        .audit_events()
        .unwrap()
        .into_iter()
        .filter(|(_, e)| e.kind == "expired")
        .map(|(_, e)| e.detail)
        .collect();
    assert_eq!(named.len(), 2, "{named:?}");
    assert!(named[0].contains(&lone.id.to_string()));
    assert!(named[1].contains(&seen.id.to_string()));
    store.verify_audit().unwrap();
    let again = store.expire(&policy, t0 + 2 * DAY, &hub).await.unwrap();
    assert_eq!(again.reports, 0);
    let counts: std::collections::HashMap<_, _> = store.counts().unwrap().into_iter().collect();
    assert_eq!(counts.get("reports_expired"), Some(&2));
    let f = reopen(open, f).await;
    assert!(f.store.report(&seen.id).unwrap().is_none());
    assert!(f.store.report(&lone.id).unwrap().is_none());
    assert!(f.store.report(&first.id).unwrap().is_some());
    f.store.verify_audit().unwrap();
}

pub async fn expiry_checks_again_what_changed_since_the_pass_looked(open: Open<'_>) {
    let f = fixture(open);
    let store = &f.store;
    let a = report_of("NL", &[DE]);
    let b = report_of("NL", &[DE]);
    store
        .commit_reports(vec![a.clone(), b.clone()])
        .await
        .unwrap();
    ack_all(store, DE).await;
    // The pass looked here and chose both ...
    let queued_from = store.counters().unwrap().next_queue_seq;
    // ... then a further decision on `a` was queued.
    let mut later = new_report(b"later", &[DE]);
    later.extra = vec![ExtraDecision {
        id: CaseId::new_v7(),
        report_id: a.id,
        stored: decision(&a),
        recipients: vec![id(FR)],
        line: "a further decision".into(),
    }];
    store.commit_reports(vec![later]).await.unwrap();
    let erased = erase_chosen(store, vec![(a.id, None), (b.id, None)], queued_from).await;
    assert_eq!(erased, 1);
    assert!(store.report(&a.id).unwrap().is_some(), "queued again: kept");
    assert!(store.report(&b.id).unwrap().is_none());
    assert_eq!(queued(store, FR).len(), 1, "the entry still delivers");
    // A report whose case is open is kept even when a pass chose it.
    let (r, case) = opening(1_000);
    let mut s = new_report(b"joins", &[FR]);
    s.case = plain_sighting(case, r.id);
    store.commit_reports(vec![r, s.clone()]).await.unwrap();
    let from = store.counters().unwrap().next_queue_seq;
    assert_eq!(erase_chosen(store, vec![(s.id, Some(case))], from).await, 0);
    assert!(store.report(&s.id).unwrap().is_some());
}

pub async fn a_series_match_expires_after_its_period(open: Open<'_>) {
    let f = fixture(open);
    let store = &f.store;
    let s = register(store, DE, SeriesHashes::default()).await;
    let (mut r, _) = opening(0);
    r.series = vec![s];
    let t0 = meldnet_core::time::now_ms();
    store.commit_reports(vec![r.clone()]).await.unwrap();
    assert_eq!(store.series_counts(&s, 0, i64::MAX).unwrap(), (1, 0));
    let policy = RetentionPolicy {
        series_matches_ms: Some(DAY),
        ..Default::default()
    };
    let hub = id(HUB);
    let out = store.expire(&policy, t0 + DAY / 2, &hub).await.unwrap();
    assert_eq!(out, Expired::default(), "young: kept");
    let out = store.expire(&policy, t0 + 2 * DAY, &hub).await.unwrap();
    assert_eq!(out.series_matches, 1);
    assert_eq!(out.reports, 0, "reports are kept for ever here");
    assert_eq!(store.series_counts(&s, 0, i64::MAX).unwrap(), (0, 0));
    assert!(store.report(&r.id).unwrap().is_some());
    let said: Vec<String> = store
        .audit_events()
        .unwrap()
        .into_iter()
        .filter(|(_, e)| e.kind == "expired")
        .map(|(_, e)| e.subject)
        .collect();
    assert_eq!(said, ["1 series match"]);
    store.verify_audit().unwrap();
}
