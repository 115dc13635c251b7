//! A hub killed with SIGKILL loses no acknowledged report and redelivers
//! only what was not acknowledged; a node keeps its outbox until the hub's
//! receipt comes back.

use meldnet_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_loses_nothing_acknowledged_and_redelivers_only_the_unacknowledged() {
    let mut fed = Federation::start_default().unwrap();
    let files = fed.scratch("f");
    let a = synthetic_file(&files, "a.png", 11);
    // Twelve drafts at node NL, submitted in one stream.
    for i in 0..12 {
        let url = format!("https://h.example.de/{i}");
        let o = fed.node(
            "NL",
            &[
                "report",
                "new",
                "--url",
                &url,
                "--hosting",
                "DE",
                "--classification",
                "baseline",
                "--age-group",
                "unknown",
                a.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let o = fed.node("NL", &["submit"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let submitted = stored_ids(&o);
    assert_eq!(submitted.len(), 12);

    // Receipts are out: kill -9 the hub at once, then start it again.
    fed.kill_hub();
    fed.start_hub().unwrap();
    let s = fed.state().await.unwrap();
    assert_eq!(s.reports, 12, "every receipted report survives SIGKILL");

    // Police DE takes five and acknowledges them; then the hub is killed again.
    let out = fed.scratch("bka");
    let o = fed.pull("DE-bka", &["--out", out.to_str().unwrap(), "--max", "5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let first = stored_ids(&o);
    assert_eq!(first.len(), 5);
    fed.kill_hub();
    fed.start_hub().unwrap();

    // The other seven come, and only they.
    let o = fed.pull("DE-bka", &["--out", out.to_str().unwrap()]);
    let rest = stored_ids(&o);
    assert_eq!(rest.len(), 7, "{}", stderr(&o));
    assert_eq!(already_stored(&o), 0, "an acknowledged delivery came again");
    assert!(rest.iter().all(|id| !first.contains(id)));
    let mut all: Vec<String> = first.into_iter().chain(rest).collect();
    all.sort();
    let mut expected = submitted.clone();
    expected.sort();
    assert_eq!(all, expected);
    let o = fed.pull("DE-bka", &["--out", out.to_str().unwrap()]);
    assert!(stored_ids(&o).is_empty());
    assert!(stderr(&o).contains("0 already stored"), "{}", stderr(&o));
}

#[test]
fn the_outbox_keeps_reports_until_the_hub_receipts_them() {
    let mut fed = Federation::init("NL,DE", "DE/bka").unwrap();
    let files = fed.scratch("f");
    let a = synthetic_file(&files, "a.png", 12);
    // The hub is down: the report stays in the outbox.
    let o = fed.node(
        "NL",
        &[
            "report",
            "new",
            "--url",
            "https://h.example.de/o",
            "--hosting",
            "DE",
            "--classification",
            "national",
            "--age-group",
            "pubescent",
            "--submit",
            a.to_str().unwrap(),
        ],
    );
    assert!(!o.status.success());
    let list = stdout(&fed.node("NL", &["report", "list"]));
    assert!(list.starts_with("outbox "), "{list}");
    // The hub is up: the same report goes, and leaves the outbox for a receipt.
    fed.start_hub().unwrap();
    let o = fed.node("NL", &["submit"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stored_ids(&o).len(), 1);
    let list = stdout(&fed.node("NL", &["report", "list"]));
    assert!(list.starts_with("receipt "), "{list}");
    assert!(!list.contains("outbox"), "{list}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_in_the_middle_of_a_burst_loses_no_receipted_report() {
    use meldnet_proto::v1 as pb;
    use meldnet_proto::v1::submission_client::SubmissionClient;
    use std::collections::HashSet;

    let mut fed = Federation::start_default().unwrap();
    let key = fed.node_key("NL");
    let reports: Vec<pb::SignedReport> = (0..3000)
        .map(|_| sign_proto(&sample_report("NL", "DE").to_proto(), &key))
        .collect();
    let id_of = |sr: &pb::SignedReport| {
        meldnet_core::Report::decode(&sr.report)
            .unwrap()
            .id
            .to_string()
    };
    let batches: Vec<pb::SubmitBatch> = reports
        .chunks(100)
        .map(|c| pb::SubmitBatch {
            reports: c.to_vec(),
        })
        .collect();

    // Stream all batches; kill -9 the hub after the third answer.
    let mut client = SubmissionClient::new(fed.channel_as("nodes/NL/node").await.unwrap());
    let mut results = client
        .submit_stream(tokio_stream::iter(batches.clone()))
        .await
        .unwrap()
        .into_inner();
    let mut receipted = HashSet::new();
    let mut answers = 0;
    while let Ok(Some(res)) = results.message().await {
        for r in res.results {
            if let Some(pb::submit_result::Outcome::Receipt(receipt)) = r.outcome {
                receipted.insert(receipt.report_id);
            }
        }
        answers += 1;
        if answers == 3 {
            fed.kill_hub();
        }
    }
    assert!(
        receipted.len() >= 300 && receipted.len() < 3000,
        "{}",
        receipted.len()
    );

    // Every receipted report is there after the restart.
    fed.start_hub().unwrap();
    let out = fed.scratch("bka");
    let o = fed.pull("DE-bka", &["--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(already_stored(&o), 0);
    let first: Vec<String> = stored_ids(&o);
    let first_set: HashSet<String> = first.iter().cloned().collect();
    assert_eq!(first.len(), first_set.len(), "no report delivered twice");
    assert!(
        receipted.is_subset(&first_set),
        "a receipted report was lost"
    );

    // The node re-sends everything (safe: idempotent by id); the rest arrives, nothing twice.
    let mut client = SubmissionClient::new(fed.channel_as("nodes/NL/node").await.unwrap());
    let mut results = client
        .submit_stream(tokio_stream::iter(batches))
        .await
        .unwrap()
        .into_inner();
    let mut ok = 0;
    while let Some(res) = results.message().await.unwrap() {
        ok += res
            .results
            .iter()
            .filter(|r| matches!(r.outcome, Some(pb::submit_result::Outcome::Receipt(_))))
            .count();
    }
    assert_eq!(ok, 3000);
    let o = fed.pull("DE-bka", &["--out", out.to_str().unwrap()]);
    assert_eq!(already_stored(&o), 0, "an acknowledged report came again");
    let second: HashSet<String> = stored_ids(&o).into_iter().collect();
    assert!(
        second.is_disjoint(&first_set),
        "an acknowledged report came again"
    );
    let all: HashSet<String> = first_set.union(&second).cloned().collect();
    let expected: HashSet<String> = reports.iter().map(id_of).collect();
    assert_eq!(all, expected);
}

/// The crash harness, short: kills of the hub, nodes and recipients from a
/// seeded schedule while every node submits and every recipient receives.
/// `scripts/crash.sh --kills 500` is the long run.
#[test]
fn seeded_kills_lose_nothing_receipted_and_repeat_nothing_acknowledged() {
    use meldnet_tests::crash::{run_plan, Plan};
    let seed = std::env::var("MELDNET_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261201);
    println!("crash harness seed {seed} (replay: MELDNET_CRASH_SEED={seed})");
    let plan = Plan {
        seed,
        kills: 12,
        per_wave: 15,
        gap_ms: (100, 900),
        cut_bytes: None,
    };
    let out = run_plan(&plan, &mut |l| println!("{l}")).unwrap();
    println!("{}", serde_json::to_string(&out).unwrap());
    assert!(
        out.kills_hub > 0 && out.kills_node + out.kills_recipient > 0,
        "{out:?}"
    );
    assert!(
        out.receipted > 0 && out.deliveries >= out.receipted,
        "{out:?}"
    );
}

/// The crash harness through a network that cuts every connection after a
/// few kilobytes to a few hundred (inside TLS records, mid-batch), with a
/// few kills too: still nothing receipted lost, nothing acknowledged sent
/// again.
#[test]
fn connections_cut_mid_stream_lose_nothing_and_repeat_nothing_acknowledged() {
    use meldnet_tests::crash::{run_plan, Plan};
    let plan = Plan {
        seed: 20261202,
        kills: 6,
        per_wave: 15,
        gap_ms: (300, 1500),
        cut_bytes: Some((8 << 10, 256 << 10)),
    };
    let out = run_plan(&plan, &mut |l| println!("{l}")).unwrap();
    println!("{}", serde_json::to_string(&out).unwrap());
    assert!(out.cuts >= 10, "the network hardly cut: {out:?}");
    assert!(
        out.receipted > 0 && out.deliveries >= out.receipted,
        "{out:?}"
    );
}
