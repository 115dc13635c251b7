//! The ingest benchmark, small: a real hub and node processes push 20,000
//! signed reports over mTLS, then police DE and node DE drain their queues.
//! Not a timing assertion: it checks that every report arrived exactly once
//! at each recipient (ids compared, no redelivery) and that the figures are
//! all there. The full run is `meldnet-bench ingest` (see README).

use meldnet_tests::*;
use std::process::Command;

#[test]
fn twenty_thousand_reports_each_arrive_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let o = run(Command::new(bin("meldnet-bench")).args([
        "ingest",
        "--reports",
        "20000",
        "--nodes",
        "2",
        "--verify-secs",
        "0.5",
        "--check",
        "--dir",
        dir.path().to_str().unwrap(),
    ]));
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    let last = stdout(&o).lines().last().unwrap_or_default().to_string();
    let v: serde_json::Value = serde_json::from_str(&last).expect("last line is one JSON object");
    assert_eq!(v["reports"], 20000);
    assert_eq!(v["receipted"], 20000);
    assert_eq!(v["refused"], 0);
    assert_eq!(v["deliveries"], 40000, "both recipients got every report");
    assert_eq!(v["exactly_once"], true);
    for key in [
        "ingest_reports_per_s",
        "verify_limit_per_s",
        "ratio",
        "receipt_p50_ms",
        "receipt_p99_ms",
        "hub_peak_rss_mb",
        "deliveries_per_s",
        "signing_per_s",
    ] {
        assert!(
            v[key].as_f64().is_some_and(|x| x > 0.0),
            "{key} missing or zero in {last}"
        );
    }
}
