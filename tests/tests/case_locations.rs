//! Cases that follow their material, over real mTLS: a graver report
//! upgrades its case and asks the notice that was never asked; each
//! location of a case (another URL, another hosting country) has its own
//! notice, deadline, steps and escalation; a re-appearance's deadline shows
//! in later sightings; an upgrade survives a SIGKILL of the hub between
//! its receipt and its delivery.

use meldnet_tests::*;
use serde_json::Value;
use std::path::Path;

const FED: &str = "spiffe://eu.meldnet.test";

fn accepted(lines: &[Value]) -> Value {
    lines
        .iter()
        .find(|l| l["status"] == "accepted")
        .cloned()
        .unwrap_or_else(|| panic!("no accepted line: {lines:?}"))
}

/// A federation of NL, DE, FR with police in each, on an adjustable clock:
/// DE's deadline 12 h, FR's 24 h, missed deadlines escalate to police.
fn federation() -> Federation {
    let mut fed = Federation::init("NL,DE,FR", "DE/bka,NL/politie,FR/police").unwrap();
    fed.add_hub_config(
        "[clock]\nadjustable = true\n\n[takedown]\ndeadline_hours = 24\n\n[takedown.countries.DE]\ndeadline_hours = 12\n",
    )
    .unwrap();
    fed.start_hub().unwrap();
    fed
}

/// Delivers node `cc`'s inbox and returns each delivery as `received` prints it.
fn inbox(fed: &Federation, cc: &str, out: &Path) -> Vec<Value> {
    let o = fed.node(cc, &["inbox", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = fed.node(cc, &["received", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    json_lines(&o)
}

/// The purpose of the delivery for `identity`, if it is a recipient.
fn purpose_for(d: &Value, identity: &str) -> Option<String> {
    d["decision"]["recipients"]
        .as_array()?
        .iter()
        .find(|r| r["identity"] == identity)
        .map(|r| r["purpose"].as_str().unwrap_or("").to_string())
}

fn notices(deliveries: &[Value], node: &str) -> Vec<String> {
    deliveries
        .iter()
        .filter(|d| purpose_for(d, node).as_deref() == Some("PURPOSE_NOTICE_AND_TAKEDOWN"))
        .map(|d| d["report_id"].as_str().unwrap().to_string())
        .collect()
}

fn explain(fed: &Federation, report: &str) -> Value {
    let o = fed.hub_admin(&["explain", "--json", report]);
    assert!(o.status.success(), "{}", stderr(&o));
    json_lines(&o).remove(0)
}

fn step(fed: &Federation, cc: &str, case: &str, location: u32, args: &[&str]) -> Value {
    let loc = location.to_string();
    let mut a = vec!["case", "step", "--case", case, "--location", &loc];
    a.extend_from_slice(args);
    let o = fed.node(cc, &a);
    assert!(o.status.success(), "{} {}", stdout(&o), stderr(&o));
    json_lines(&o).remove(0)
}

/// Pulls police `dir` until something arrives (the deadline watcher runs
/// at once when the clock moves, and every second).
fn pull_until_some(fed: &Federation, dir: &str, out: &Path) -> Vec<String> {
    for _ in 0..50 {
        let o = fed.pull(dir, &["--out", out.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
        let got = stored_ids(&o);
        if !got.is_empty() {
            return got;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    Vec::new()
}

#[test]
fn a_graver_report_at_the_same_url_asks_the_one_notice_at_the_second_report() {
    for first_class in ["not-illegal", "national"] {
        let fed = federation();
        let files = fed.scratch("files");
        let file = synthetic_file(&files, "a.png", 3);
        // FR assesses it first: no notice, no deadline.
        let (first, lines) = fed
            .report_as(
                "FR",
                "https://upgrade.example.test/a/b",
                first_class,
                &["--hosting", "DE"],
                &[&file],
            )
            .unwrap();
        let c = accepted(&lines)["case"].clone();
        assert_eq!(c["kind"], "DECISION_KIND_REFERRAL", "{first_class}");
        assert_eq!(c["deadline_ms"], 0, "{first_class}: {c}");
        let case_id = c["case_id"].as_str().unwrap().to_string();

        // NL reports the same URL, respelled, as baseline: the case is now
        // illegal everywhere, and DE is asked for the notice it never had.
        let (second, lines) = fed
            .report(
                "NL",
                "HTTPS://upgrade.example.test:443/a/b#x",
                &["--hosting", "DE"],
                &[&synthetic_file(&files, "b.png", 4)],
            )
            .unwrap();
        let c = accepted(&lines)["case"].clone();
        assert_eq!(
            c["kind"], "DECISION_KIND_UPGRADE",
            "{first_class}: {lines:?}"
        );
        assert_eq!(c["case_id"], case_id.as_str());
        assert_eq!(c["location"], 0);
        let deadline = c["deadline_ms"].as_i64().unwrap();
        assert!(deadline > 0, "{c}");

        // Exactly one notice reaches DE, at the second report.
        let got = inbox(&fed, "DE", &fed.scratch("de"));
        assert_eq!(
            notices(&got, &format!("{FED}/node/DE")),
            vec![second.clone()],
            "{first_class}: {got:?}"
        );
        // Police DE learn of it as a referral now (it was not illegal before).
        let bka = fed.scratch("bka");
        let o = fed.pull("DE-bka", &["--out", bka.to_str().unwrap()]);
        assert_eq!(stored_ids(&o), vec![second.clone()], "{first_class}");

        // The case says why it changed.
        let e = explain(&fed, &first);
        assert_eq!(e["case"]["assessment"], "baseline");
        let loc = &e["case"]["locations"][0];
        assert_eq!(loc["noticed_by_report_id"], second.as_str());
        assert_eq!(loc["deadline_ms"], deadline);
        let history = e["history"].to_string();
        assert!(
            history.contains("assessed case") && history.contains("notice asked at location 0"),
            "{history}"
        );

        // A third report at the URL is an update: no second notice.
        let (third, lines) = fed
            .report(
                "NL",
                "https://upgrade.example.test/a/b",
                &["--hosting", "DE"],
                &[&synthetic_file(&files, "c.png", 5)],
            )
            .unwrap();
        let c = accepted(&lines)["case"].clone();
        assert_eq!(c["kind"], "DECISION_KIND_SIGHTING");
        assert_eq!(c["deadline_ms"], deadline, "the deadline in force");
        let got = inbox(&fed, "DE", &fed.scratch("de"));
        let d = got
            .iter()
            .find(|d| d["report_id"] == third.as_str())
            .unwrap();
        assert_eq!(
            purpose_for(d, &format!("{FED}/node/DE")).as_deref(),
            Some("PURPOSE_SIGHTING_UPDATE")
        );

        // Police DE get the third as an update.
        let o = fed.pull("DE-bka", &["--out", bka.to_str().unwrap()]);
        assert_eq!(stored_ids(&o), vec![third.clone()]);
        // Missed, it escalates, once, to police DE, from the upgrade's deadline.
        fed.hub_admin(&["advance-clock", "--hours", "13"]);
        let got = pull_until_some(&fed, "DE-bka", &bka);
        assert_eq!(
            got,
            vec![first.clone()],
            "{first_class}: the location's first report"
        );
        let e = explain(&fed, &first);
        assert_eq!(e["case"]["locations"][0]["state"], "escalated");
    }
}

#[test]
fn a_second_location_has_its_own_notice_deadline_and_steps() {
    let fed = federation();
    let files = fed.scratch("files");
    let file = synthetic_file(&files, "same.png", 8);
    let (first, lines) = fed
        .report(
            "NL",
            "https://one.example.test/x",
            &["--hosting", "DE"],
            &[&file],
        )
        .unwrap();
    let c0 = accepted(&lines)["case"].clone();
    let case_id = c0["case_id"].as_str().unwrap().to_string();
    let d0 = c0["deadline_ms"].as_i64().unwrap();
    // The same file at another URL, hosted in FR.
    let (second, lines) = fed
        .report(
            "NL",
            "https://two.example.test/y",
            &["--hosting", "FR"],
            &[&file],
        )
        .unwrap();
    let c1 = accepted(&lines)["case"].clone();
    assert_eq!(c1["kind"], "DECISION_KIND_NEW_LOCATION", "{lines:?}");
    assert_eq!(c1["case_id"], case_id.as_str());
    assert_eq!(c1["location"], 1);
    assert_eq!(c1["hosting_country"], "FR");
    let d1 = c1["deadline_ms"].as_i64().unwrap();
    assert!(d1 > d0, "FR's 24 h after DE's 12 h");

    // FR's hotline gets the notice for location 1; DE's notice is untouched.
    let fr = inbox(&fed, "FR", &fed.scratch("fr"));
    assert_eq!(
        notices(&fr, &format!("{FED}/node/FR")),
        vec![second.clone()]
    );
    let de = inbox(&fed, "DE", &fed.scratch("de"));
    assert_eq!(notices(&de, &format!("{FED}/node/DE")), vec![first.clone()]);
    // Police: the first is a referral, the second an update, not "first".
    let bka = fed.scratch("bka");
    fed.pull("DE-bka", &["--out", bka.to_str().unwrap()]);
    let o = fed.agency("DE-bka", "received", &["--out", bka.to_str().unwrap()]);
    for d in json_lines(&o) {
        if d["report_id"] == second.as_str() {
            for r in d["decision"]["recipients"].as_array().unwrap() {
                if r["identity"] != format!("{FED}/node/FR") {
                    assert_eq!(r["purpose"], "PURPOSE_SIGHTING_UPDATE", "{d}");
                    assert_eq!(r["first"], false, "{d}");
                }
            }
        }
    }

    // Each location's steps are its own: only FR records location 1, and
    // DE's removal leaves FR's deadline running.
    let o = fed.node(
        "DE",
        &[
            "case",
            "step",
            "--case",
            &case_id,
            "--location",
            "1",
            "--kind",
            "removed",
        ],
    );
    assert!(!o.status.success());
    assert!(stdout(&o).contains("location 1 of case"), "{}", stdout(&o));
    let r = step(&fed, "DE", &case_id, 0, &["--kind", "removed"]);
    assert_eq!(r["state"], "removed");
    assert_eq!(r["location"], 0);
    let r = step(
        &fed,
        "FR",
        &case_id,
        1,
        &[
            "--kind",
            "notice-sent",
            "--provider-name",
            "Far Hosting",
            "--asn",
            "64510",
        ],
    );
    assert_eq!(r["state"], "open");
    assert_eq!(r["deadline_ms"], d1);

    // FR misses its 24 h: location 1 escalates (its report), location 0 never.
    fed.hub_admin(&["advance-clock", "--hours", "25"]);
    let fr_police = fed.scratch("fr-police");
    let got = pull_until_some(&fed, "FR-police", &fr_police);
    assert!(got.contains(&second), "{got:?}");
    let e = explain(&fed, &first);
    let locs = e["case"]["locations"].as_array().unwrap().clone();
    assert_eq!(locs.len(), 2);
    assert_eq!(locs[0]["state"], "removed");
    assert_eq!(locs[1]["state"], "escalated");
    assert_eq!(locs[1]["escalations"].as_array().unwrap().len(), 1);
    assert_eq!(locs[1]["provider"], "Far Hosting (AS64510)");
    assert!(locs[0]["escalations"].as_array().unwrap().is_empty());
    // Statistics per location: one notice each, to its own provider.
    let o = fed.hub_admin(&["stats", "--json"]);
    let st = &json_lines(&o)[0];
    assert_eq!(st["deadlines_missed"], 1, "{st}");

    // A re-appearance at location 0 starts a new deadline, and a later
    // sighting there shows it.
    let r = step(&fed, "DE", &case_id, 0, &["--kind", "reappeared"]);
    let renewed = r["deadline_ms"].as_i64().unwrap();
    assert!(renewed > d0, "{r}");
    let (_, lines) = fed
        .report(
            "FR",
            "https://one.example.test/x?",
            &["--hosting", "DE"],
            &[&synthetic_file(&files, "z.png", 9)],
        )
        .unwrap();
    let c = accepted(&lines)["case"].clone();
    assert_eq!(c["kind"], "DECISION_KIND_SIGHTING", "{lines:?}");
    assert_eq!(c["location"], 0);
    assert_eq!(
        c["deadline_ms"], renewed,
        "the deadline in force, not the first"
    );
}

#[test]
fn an_upgrade_survives_a_kill_between_receipt_and_delivery() {
    let mut fed = federation();
    let files = fed.scratch("files");
    let (first, _) = fed
        .report_as(
            "FR",
            "https://kill.example.test/",
            "not-illegal",
            &["--hosting", "DE"],
            &[&synthetic_file(&files, "k.png", 6)],
        )
        .unwrap();
    let (second, lines) = fed
        .report(
            "NL",
            "https://kill.example.test",
            &["--hosting", "DE"],
            &[&synthetic_file(&files, "l.png", 7)],
        )
        .unwrap();
    let c = accepted(&lines)["case"].clone();
    assert_eq!(c["kind"], "DECISION_KIND_UPGRADE");
    // Receipted, not yet delivered: the hub is killed.
    fed.kill_hub();
    fed.start_hub().unwrap();
    let de = inbox(&fed, "DE", &fed.scratch("de"));
    assert_eq!(
        notices(&de, &format!("{FED}/node/DE")),
        vec![second.clone()]
    );
    // What the upgrade changed was stored with its receipt: the case index
    // rebuilt at start knows the location is noticed, so a later report is
    // an update showing the same deadline.
    let (_, lines) = fed
        .report(
            "NL",
            "https://kill.example.test/#again",
            &["--hosting", "DE"],
            &[&synthetic_file(&files, "m.png", 10)],
        )
        .unwrap();
    let again = accepted(&lines)["case"].clone();
    assert_eq!(again["kind"], "DECISION_KIND_SIGHTING");
    assert_eq!(again["deadline_ms"], c["deadline_ms"]);
    let e = explain(&fed, &first);
    assert_eq!(e["case"]["assessment"], "baseline");
    assert_eq!(
        e["case"]["locations"][0]["noticed_by_report_id"],
        second.as_str()
    );
}

/// One row: what a first report, then a second, make of a case.
struct Row {
    first: &'static str,
    second: &'static str,
    /// The second report at the first's URL (respelled), or at another
    /// URL with the first's file, hosted in this country.
    elsewhere: Option<&'static str>,
    kind: &'static str,
    /// The purpose for the hosting node of the second report's location.
    hotline: Option<&'static str>,
    /// The purpose for the police of that location's country, if they
    /// receive it.
    police: Option<&'static str>,
}

#[test]
fn the_routing_table_of_sightings() {
    let rows = [
        Row {
            first: "baseline",
            second: "baseline",
            elsewhere: None,
            kind: "SIGHTING",
            hotline: Some("SIGHTING_UPDATE"),
            police: Some("SIGHTING_UPDATE"),
        },
        Row {
            first: "not-illegal",
            second: "baseline",
            elsewhere: None,
            kind: "UPGRADE",
            hotline: Some("NOTICE_AND_TAKEDOWN"),
            police: Some("INVESTIGATION"),
        },
        Row {
            first: "national",
            second: "baseline",
            elsewhere: None,
            kind: "UPGRADE",
            hotline: Some("NOTICE_AND_TAKEDOWN"),
            police: Some("INVESTIGATION"),
        },
        Row {
            first: "unassessed",
            second: "baseline",
            elsewhere: None,
            kind: "UPGRADE",
            hotline: Some("NOTICE_AND_TAKEDOWN"),
            police: Some("INVESTIGATION"),
        },
        Row {
            first: "baseline",
            second: "national",
            elsewhere: None,
            kind: "SIGHTING",
            hotline: Some("SIGHTING_UPDATE"),
            police: None,
        },
        Row {
            first: "not-illegal",
            second: "national",
            elsewhere: None,
            kind: "SIGHTING",
            hotline: Some("ASSESSMENT"),
            police: None,
        },
        Row {
            first: "baseline",
            second: "baseline",
            elsewhere: Some("FR"),
            kind: "NEW_LOCATION",
            hotline: Some("NOTICE_AND_TAKEDOWN"),
            police: Some("SIGHTING_UPDATE"),
        },
        Row {
            first: "baseline",
            second: "national",
            elsewhere: Some("FR"),
            kind: "NEW_LOCATION",
            hotline: Some("NOTICE_AND_TAKEDOWN"),
            police: None,
        },
        Row {
            first: "unassessed",
            second: "unassessed",
            elsewhere: Some("FR"),
            kind: "NEW_LOCATION",
            hotline: Some("ASSESSMENT"),
            police: None,
        },
        Row {
            first: "baseline",
            second: "baseline",
            elsewhere: Some("DE"),
            kind: "NEW_LOCATION",
            hotline: Some("NOTICE_AND_TAKEDOWN"),
            police: Some("SIGHTING_UPDATE"),
        },
    ];
    let fed = federation();
    let files = fed.scratch("files");
    for (i, row) in rows.iter().enumerate() {
        let file = synthetic_file(&files, &format!("row{i}.png"), 40 + i as u8);
        let url = format!("https://row{i}.example.test/p");
        fed.report_as("NL", &url, row.first, &["--hosting", "DE"], &[&file])
            .unwrap();
        let (second_url, host, second_file) = match row.elsewhere {
            None => (
                format!("HTTPS://ROW{i}.example.test:443/p"),
                "DE",
                synthetic_file(&files, &format!("row{i}b.png"), 90 + i as u8),
            ),
            Some(cc) => (format!("https://other{i}.example.test/q"), cc, file.clone()),
        };
        let (second, lines) = fed
            .report_as(
                "NL",
                &second_url,
                row.second,
                &["--hosting", host],
                &[&second_file],
            )
            .unwrap();
        let c = accepted(&lines)["case"].clone();
        assert_eq!(
            c["kind"],
            format!("DECISION_KIND_{}", row.kind),
            "row {i}: {lines:?}"
        );
        let d = &explain(&fed, &second)["decision"];
        let purpose = |who: &str| {
            d["recipients"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["identity"] == format!("{FED}/{who}"))
                .map(|r| {
                    r["purpose"]
                        .as_str()
                        .unwrap()
                        .trim_start_matches("PURPOSE_")
                        .to_string()
                })
        };
        assert_eq!(
            purpose(&format!("node/{host}")).as_deref(),
            row.hotline,
            "row {i}: {d}"
        );
        let police = if host == "DE" {
            "agency/DE/bka"
        } else {
            "agency/FR/police"
        };
        assert_eq!(purpose(police).as_deref(), row.police, "row {i}: {d}");
        for r in d["recipients"].as_array().unwrap() {
            if r["purpose"] == "PURPOSE_SIGHTING_UPDATE" {
                assert_eq!(r["first"], false, "row {i}: {d}");
            }
        }
    }
}

#[test]
fn a_wrongly_merged_report_split_out_becomes_its_own_case_with_its_own_notice() {
    let fed = federation();
    let data = pdq_data();
    let files = fed.scratch("files");
    let (first, lines) = fed
        .report(
            "NL",
            "https://merge.example.test/one",
            &["--hosting", "DE"],
            &[&data.join("bridge-mods/aaa-orig.jpg")],
        )
        .unwrap();
    let c0 = accepted(&lines)["case"].clone();
    let case = c0["case_id"].as_str().unwrap().to_string();
    // A picture PDQ puts within 31 bits: merged into the case, location 1.
    let (merged, lines) = fed
        .report(
            "NL",
            "https://merge.example.test/two",
            &["--hosting", "DE"],
            &[&data.join("bridge-mods/shrink-a-lot.jpg")],
        )
        .unwrap();
    let c1 = accepted(&lines)["case"].clone();
    assert_eq!(c1["case_id"], case.as_str());
    assert_eq!(c1["location"], 1);
    assert!(
        c1["matched_by"].as_str().unwrap().starts_with("pdq"),
        "{c1}"
    );
    let (by_url, _) = fed
        .report(
            "FR",
            "https://merge.example.test/one#frag",
            &["--hosting", "DE"],
            &[&synthetic_file(&files, "u.png", 21)],
        )
        .unwrap();
    let de = fed.scratch("de");
    inbox(&fed, "DE", &de);

    // What cannot be split: the case's first report, a report at one of
    // its URLs, an unknown report; the reason is required.
    let split = |report: &str, reason: &str| {
        fed.hub_admin(&["split", "--report", report, "--reason", reason])
    };
    for (report, says) in [
        (first.as_str(), "opened case"),
        (by_url.as_str(), "by its URL"),
        ("0192f1a0-6c00-7000-8000-000000000099", "no report"),
    ] {
        let o = split(report, "wrong merge");
        assert!(!o.status.success());
        assert!(stderr(&o).contains(says), "{says}: {}", stderr(&o));
    }
    let before = explain(&fed, &first);
    let o = split(&merged, " ");
    assert!(
        !o.status.success() && stderr(&o).contains("split_request.reason"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        explain(&fed, &first)["case"],
        before["case"],
        "refusals change nothing"
    );

    // The operator splits it out.
    let o = split(&merged, "a different picture: PDQ joined unrelated images");
    assert!(o.status.success(), "{}", stderr(&o));
    let r = &json_lines(&o)[0];
    let own = r["case_id"].as_str().unwrap().to_string();
    assert_ne!(own, case);
    assert_eq!(r["from_case_id"], case.as_str());
    assert_eq!(r["decision"]["kind"], "SPLIT");

    // Its hosting hotline gets the notice of its own case, with a deadline
    // from now; the old case's location 1 is split out, its deadline gone.
    let got = inbox(&fed, "DE", &de);
    let d = got
        .iter()
        .filter(|d| d["report_id"] == merged.as_str())
        .find(|d| d["decision"]["kind"] == "DECISION_KIND_SPLIT")
        .unwrap_or_else(|| panic!("{got:?}"));
    assert_eq!(
        purpose_for(d, &format!("{FED}/node/DE")).as_deref(),
        Some("PURPOSE_NOTICE_AND_TAKEDOWN")
    );
    assert_eq!(d["decision"]["case"]["case_id"], own.as_str());
    assert_eq!(d["decision"]["case"]["location"], 0);
    let own_deadline = d["decision"]["case"]["deadline_ms"].as_i64().unwrap();
    assert!(own_deadline > c1["deadline_ms"].as_i64().unwrap());
    // Police are told with an update.
    let bka = fed.scratch("bka");
    fed.pull("DE-bka", &["--out", bka.to_str().unwrap()]);
    let o = fed.agency("DE-bka", "received", &["--out", bka.to_str().unwrap()]);
    let told = json_lines(&o)
        .into_iter()
        .find(|d| d["decision"]["kind"] == "DECISION_KIND_SPLIT")
        .expect("police told");
    assert_eq!(
        purpose_for(&told, &format!("{FED}/agency/DE/bka")).as_deref(),
        Some("PURPOSE_SIGHTING_UPDATE")
    );

    // Explained on both sides, audited.
    let e = explain(&fed, &first);
    let locs = e["case"]["locations"].as_array().unwrap();
    assert_eq!(locs[1]["state"], "split_out");
    assert_eq!(locs[1]["moved_to_case_id"], own.as_str());
    assert!(!e["case"]["sightings"].to_string().contains(&merged));
    let e = explain(&fed, &merged);
    assert!(
        e["history"].to_string().contains("split out of case"),
        "{}",
        e["history"]
    );
    let o = fed.hub_admin(&["split", "--report", &merged, "--reason", "again"]);
    assert!(
        !o.status.success() && stderr(&o).contains("not a sighting"),
        "{}",
        stderr(&o)
    );

    // Steps: the old location refuses them, naming the new case; the new
    // case takes them.
    let o = fed.node(
        "DE",
        &[
            "case",
            "step",
            "--case",
            &case,
            "--location",
            "1",
            "--kind",
            "removed",
        ],
    );
    assert!(!o.status.success());
    assert!(stdout(&o).contains(&own), "{}", stdout(&o));
    let r = step(
        &fed,
        "DE",
        &own,
        0,
        &[
            "--kind",
            "notice-sent",
            "--provider-name",
            "Own Hosting",
            "--asn",
            "64520",
        ],
    );
    assert_eq!(r["deadline_ms"], own_deadline);

    // Later reports of its picture or URL join its own case.
    let (_, lines) = fed
        .report(
            "FR",
            "https://merge.example.test/two",
            &["--hosting", "DE"],
            &[&synthetic_file(&files, "v.png", 22)],
        )
        .unwrap();
    assert_eq!(accepted(&lines)["case"]["case_id"], own.as_str());
    let (three, lines) = fed
        .report(
            "FR",
            "https://merge.example.test/three",
            &["--hosting", "DE"],
            &[&data.join("bridge-mods/shrink-a-lot.jpg")],
        )
        .unwrap();
    assert_eq!(
        accepted(&lines)["case"]["case_id"],
        own.as_str(),
        "{lines:?}"
    );
    assert_eq!(accepted(&lines)["case"]["location"], 1, "{lines:?}");
    fed.pull("DE-bka", &["--out", bka.to_str().unwrap()]);

    // DE removes location 0 of the first case in time and lets its own
    // case's deadlines pass: each of its own case's locations escalates,
    // the old case's split-out location never.
    step(&fed, "DE", &case, 0, &["--kind", "removed"]);
    fed.hub_admin(&["advance-clock", "--hours", "13"]);
    let mut got = pull_until_some(&fed, "DE-bka", &bka);
    std::thread::sleep(std::time::Duration::from_millis(500));
    got.extend(stored_ids(
        &fed.pull("DE-bka", &["--out", bka.to_str().unwrap()]),
    ));
    got.sort();
    let mut want = vec![merged.clone(), three.clone()];
    want.sort();
    assert_eq!(got, want, "the escalations of its own case's locations");
    let e = explain(&fed, &first);
    assert_eq!(e["case"]["locations"][0]["state"], "removed");
    assert_eq!(e["case"]["locations"][1]["state"], "split_out");
}

#[test]
fn a_case_made_illegal_everywhere_asks_every_location_without_a_notice() {
    let fed = federation();
    let files = fed.scratch("files");
    let file = synthetic_file(&files, "x.png", 61);
    // Not yet assessed, hosted in FR: FR is asked to assess; no notice.
    let (first, lines) = fed
        .report_as(
            "NL",
            "https://a.example.test/1",
            "unassessed",
            &["--hosting", "FR"],
            &[&file],
        )
        .unwrap();
    let c = accepted(&lines)["case"].clone();
    assert_eq!(c["deadline_ms"], 0);
    let case = c["case_id"].as_str().unwrap().to_string();
    // The same file at another URL, in DE, assessed baseline: the case is
    // illegal everywhere now.
    let (second, lines) = fed
        .report(
            "NL",
            "https://b.example.test/2",
            &["--hosting", "DE"],
            &[&file],
        )
        .unwrap();
    let c = accepted(&lines)["case"].clone();
    assert_eq!(c["kind"], "DECISION_KIND_NEW_LOCATION", "{lines:?}");
    assert_eq!(c["location"], 1);
    // DE: the notice for location 1. FR: one for location 0, on the report
    // that brought it, with its own deadline (FR's 24 h).
    let de = inbox(&fed, "DE", &fed.scratch("de"));
    assert_eq!(
        notices(&de, &format!("{FED}/node/DE")),
        vec![second.clone()]
    );
    let fr = inbox(&fed, "FR", &fed.scratch("fr"));
    let up = fr
        .iter()
        .find(|d| d["decision"]["kind"] == "DECISION_KIND_UPGRADE")
        .unwrap_or_else(|| panic!("FR got no notice: {fr:?}"));
    assert_eq!(up["report_id"], first.as_str());
    assert_eq!(
        purpose_for(up, &format!("{FED}/node/FR")).as_deref(),
        Some("PURPOSE_NOTICE_AND_TAKEDOWN")
    );
    assert_eq!(up["decision"]["case"]["location"], 0);
    let fr_deadline = up["decision"]["case"]["deadline_ms"].as_i64().unwrap();
    assert!(
        fr_deadline > c["deadline_ms"].as_i64().unwrap(),
        "FR's 24 h after DE's 12 h"
    );
    let e = explain(&fed, &first);
    for loc in e["case"]["locations"].as_array().unwrap() {
        assert_eq!(loc["noticed_by_report_id"], second.as_str(), "{loc}");
    }
    // FR records its steps at location 0; its deadline is the one asked.
    let r = step(
        &fed,
        "FR",
        &case,
        0,
        &[
            "--kind",
            "notice-sent",
            "--provider-name",
            "FR Hosting",
            "--asn",
            "64530",
        ],
    );
    assert_eq!(r["deadline_ms"], fr_deadline);
    // A later report at location 0 is an update: no second notice.
    let (_, lines) = fed
        .report(
            "NL",
            "https://a.example.test/1",
            &["--hosting", "FR"],
            &[&synthetic_file(&files, "y.png", 62)],
        )
        .unwrap();
    assert_eq!(accepted(&lines)["case"]["kind"], "DECISION_KIND_SIGHTING");
}
