//! A hub killed with SIGKILL loses no acknowledged report and redelivers
//! only what was not acknowledged; a node keeps its outbox until the hub's
//! receipt comes back.

use meldnet_tests::*;

fn ids(o: &std::process::Output) -> Vec<String> {
    json_lines(o)
        .iter()
        .filter_map(|l| l["report_id"].as_str().map(String::from))
        .collect()
}

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
    let submitted = ids(&o);
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
    let first = ids(&o);
    assert_eq!(first.len(), 5);
    fed.kill_hub();
    fed.start_hub().unwrap();

    // The other seven come, and only they.
    let o = fed.pull("DE-bka", &["--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rest = ids(&o);
    assert_eq!(rest.len(), 7, "{}", stderr(&o));
    assert!(
        rest.iter().all(|id| !first.contains(id)),
        "an acknowledged delivery came again"
    );
    let mut all: Vec<String> = first.into_iter().chain(rest).collect();
    all.sort();
    let mut expected = submitted.clone();
    expected.sort();
    assert_eq!(all, expected);
    let o = fed.pull("DE-bka", &["--out", out.to_str().unwrap()]);
    assert!(ids(&o).is_empty());
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
    assert_eq!(ids(&o).len(), 1);
    let list = stdout(&fed.node("NL", &["report", "list"]));
    assert!(list.starts_with("receipt "), "{list}");
    assert!(!list.contains("outbox"), "{list}");
}
