//! Cases over real mTLS: deconfliction (a re-spelled URL and a re-encoded
//! image join the first case and cause no second notice), the
//! notice-and-takedown steps the hosting country's node signs, a missed
//! deadline escalated exactly once to the configured regulator, a removal in
//! time escalated never, and `explain` and `stats` showing all of it.

use meldnet_proto::v1 as pb;
use meldnet_tests::*;
use serde_json::Value;

const FED: &str = "spiffe://eu.meldnet.test";

fn accepted(lines: &[Value]) -> &Value {
    lines
        .iter()
        .find(|l| l["status"] == "accepted")
        .expect("accepted line")
}

/// The deliveries a recipient holds, as `received` prints them.
fn received(o: &std::process::Output) -> Vec<Value> {
    assert!(o.status.success(), "{}", stderr(o));
    json_lines(o)
}

fn purposes(deliveries: &[Value]) -> Vec<(String, String)> {
    deliveries
        .iter()
        .map(|d| {
            let kind = d["decision"]["kind"].as_str().unwrap_or("").to_string();
            let me = d["decision"]["recipients"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["purpose"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
                .join(",");
            (kind, me)
        })
        .collect()
}

#[test]
fn a_respelled_url_and_a_reencoded_image_join_the_first_case() {
    let mut fed = Federation::start_default().unwrap();
    let data = pdq_data();
    let files = fed.scratch("files");
    let other = synthetic_file(&files, "other.png", 7);
    let (first, lines) = fed
        .report(
            "NL",
            "https://Files.Example.test/a/b/?x=1#top",
            &["--hosting", "DE"],
            &[&data.join("bridge-mods/aaa-orig.jpg")],
        )
        .unwrap();
    let case = accepted(&lines)["case"].clone();
    assert_eq!(case["kind"], "DECISION_KIND_REFERRAL", "{lines:?}");
    let case_id = case["case_id"].as_str().unwrap().to_string();
    assert!(case["deadline_ms"].as_i64().unwrap() > 0);

    // The same location spelled otherwise, from another hotline, with another file.
    let (second, lines) = fed
        .report(
            "FR",
            "HTTPS://files.example.test:443/a/b?x=1",
            &["--hosting", "DE"],
            &[&other],
        )
        .unwrap();
    let s = &accepted(&lines)["case"];
    assert_eq!(s["kind"], "DECISION_KIND_SIGHTING", "{lines:?}");
    assert_eq!(s["case_id"], case_id.as_str());
    assert_eq!(s["matched_by"], "url");
    assert_eq!(s["first_report_id"], first.as_str());

    assert_eq!(s["location"], 0);

    // A re-encoded copy of the image, elsewhere: the same case, a location
    // of its own, with its own notice.
    let (third, lines) = fed
        .report(
            "NL",
            "https://elsewhere.example.test/copy.jpg",
            &["--hosting", "DE"],
            &[&data.join("bridge-mods/shrink-a-lot.jpg")],
        )
        .unwrap();
    let s = &accepted(&lines)["case"];
    assert_eq!(s["kind"], "DECISION_KIND_NEW_LOCATION", "{lines:?}");
    assert_eq!(s["case_id"], case_id.as_str());
    assert_eq!(s["location"], 1);
    assert!(s["deadline_ms"].as_i64().unwrap() > 0);
    assert!(
        s["matched_by"]
            .as_str()
            .unwrap()
            .starts_with("pdq of item 0 at distance "),
        "{s}"
    );
    // Something else opens its own case.
    let (fourth, lines) = fed
        .report(
            "NL",
            "https://unrelated.example.test/",
            &["--hosting", "DE"],
            &[&synthetic_file(&files, "unrelated.png", 9)],
        )
        .unwrap();
    let s = &accepted(&lines)["case"];
    assert_eq!(s["kind"], "DECISION_KIND_REFERRAL");
    assert_ne!(s["case_id"], case_id.as_str());

    // The hosting hotline: one notice per case; the sightings as updates.
    let out = fed.scratch("de-inbox");
    let o = fed.node("DE", &["inbox", "--out", out.to_str().unwrap()]);
    assert_received(
        &o,
        &[first.clone(), second.clone(), third.clone(), fourth.clone()],
    );
    let got = received(&fed.node("DE", &["received", "--out", out.to_str().unwrap()]));
    let by_id = |id: &str| got.iter().find(|d| d["report_id"] == id).unwrap();
    let notice = |d: &Value| {
        d["decision"]["recipients"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["identity"] == format!("{FED}/node/DE"))
            .unwrap()["purpose"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(notice(by_id(&first)), "PURPOSE_NOTICE_AND_TAKEDOWN");
    assert_eq!(notice(by_id(&second)), "PURPOSE_SIGHTING_UPDATE");
    assert_eq!(notice(by_id(&third)), "PURPOSE_NOTICE_AND_TAKEDOWN");
    assert_eq!(notice(by_id(&fourth)), "PURPOSE_NOTICE_AND_TAKEDOWN");
    let notices = got
        .iter()
        .filter(|d| notice(d) == "PURPOSE_NOTICE_AND_TAKEDOWN")
        .count();
    assert_eq!(notices, 3, "one notice per location");
    // Police DE: the case as a referral, the sightings as updates.
    let out = fed.scratch("bka");
    assert_received(
        &fed.pull("DE-bka", &["--out", out.to_str().unwrap()]),
        &[first.clone(), second.clone(), third.clone(), fourth.clone()],
    );
    let got = received(&fed.agency("DE-bka", "received", &["--out", out.to_str().unwrap()]));
    let kinds: Vec<(String, String)> = purposes(&got);
    let count = |kind: &str| kinds.iter().filter(|(k, _)| k == kind).count();
    assert_eq!(count("DECISION_KIND_SIGHTING"), 1, "{kinds:?}");
    assert_eq!(count("DECISION_KIND_NEW_LOCATION"), 1, "{kinds:?}");
    // For police the material is not new: an update, and not to act on first.
    for d in got
        .iter()
        .filter(|d| d["decision"]["kind"] != "DECISION_KIND_REFERRAL")
    {
        for r in d["decision"]["recipients"].as_array().unwrap() {
            if r["identity"] != format!("{FED}/node/DE") {
                assert_eq!(r["purpose"], "PURPOSE_SIGHTING_UPDATE", "{d}");
                assert_eq!(r["first"], false, "{d}");
            }
        }
    }

    // The first report's explanation lists the sightings.
    let o = fed.hub_admin(&["explain", "--json", &first]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = &json_lines(&o)[0];
    assert_eq!(e["case"]["case_id"], case_id.as_str());
    assert_eq!(e["case"]["sightings"], serde_json::json!([second, third]));

    // Killed (SIGKILL) and started again, the hub still knows the case: the
    // index is rebuilt from what was acknowledged.
    fed.kill_hub();
    fed.start_hub().unwrap();
    let (_, lines) = fed
        .report(
            "FR",
            "https://elsewhere.example.test/copy.jpg#again",
            &["--hosting", "DE"],
            &[&synthetic_file(&files, "third.png", 11)],
        )
        .unwrap();
    let s = &accepted(&lines)["case"];
    assert_eq!(s["kind"], "DECISION_KIND_SIGHTING", "{lines:?}");
    assert_eq!(s["case_id"], case_id.as_str());
    assert_eq!(s["location"], 1, "the location held since the restart");
}

#[tokio::test]
async fn a_missed_deadline_escalates_once_and_a_removal_in_time_never() {
    let mut fed = Federation::init_with(
        "NL,DE,FR",
        "DE/bka,FR/police,EU/europol",
        &["--regulators", "DE/bnetza"],
    )
    .unwrap();
    fed.add_hub_config(&format!(
        "[clock]\nadjustable = true\n\n[takedown]\ndeadline_hours = 24\n\n[takedown.countries.DE]\ndeadline_hours = 12\nescalate_to = [\"{FED}/regulator/DE/bnetza\"]\n"
    ))
    .unwrap();
    fed.start_hub().unwrap();
    let files = fed.scratch("files");
    let (in_de, lines) = fed
        .report(
            "NL",
            "https://slow.example.test/x",
            &["--hosting", "DE"],
            &[&synthetic_file(&files, "a.png", 1)],
        )
        .unwrap();
    let de_case = accepted(&lines)["case"].clone();
    let (in_fr, lines) = fed
        .report(
            "NL",
            "https://quick.example.test/y",
            &["--hosting", "FR"],
            &[&synthetic_file(&files, "b.png", 2)],
        )
        .unwrap();
    let fr_case = accepted(&lines)["case"].clone();
    let de_id = de_case["case_id"].as_str().unwrap();
    let fr_id = fr_case["case_id"].as_str().unwrap();
    // 12 hours for DE, 24 for FR (the default).
    let span = |c: &Value| c["deadline_ms"].as_i64().unwrap();
    assert!(span(&fr_case) - span(&de_case) > 11 * 3_600_000);

    // The hosting hotlines record their steps, signed.
    let step = |cc: &str, case: &str, args: &[&str]| {
        let mut a = vec!["case", "step", "--case", case];
        a.extend_from_slice(args);
        fed.node(cc, &a)
    };
    let o = step(
        "DE",
        de_id,
        &[
            "--kind",
            "notice-sent",
            "--provider-name",
            "Slow Hosting",
            "--asn",
            "64500",
        ],
    );
    assert!(o.status.success(), "{} {}", stdout(&o), stderr(&o));
    assert_eq!(json_lines(&o)[0]["state"], "open");
    let o = step(
        "FR",
        fr_id,
        &[
            "--kind",
            "notice-sent",
            "--provider-name",
            "Quick Hosting",
            "--asn",
            "64501",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // Only the hosting country's node records a case's steps.
    let o = step("FR", de_id, &["--kind", "removed"]);
    assert!(!o.status.success());
    assert!(
        stdout(&o).contains("only the node of that country records its steps"),
        "{}",
        stdout(&o)
    );
    // A notice names its provider.
    let o = step("DE", de_id, &["--kind", "notice-sent"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--provider-name and --asn"),
        "{}",
        stderr(&o)
    );

    // FR removes within its deadline: no escalation, ever.
    fed.hub_admin(&["advance-clock", "--hours", "2"]);
    let o = step("FR", fr_id, &["--kind", "removed"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json_lines(&o)[0]["state"], "removed");

    // DE misses its 12 hours.
    let o = fed.hub_admin(&["advance-clock", "--hours", "11"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = fed.scratch("bnetza");
    let pull = || fed.regulator("DE-bnetza", "pull", &["--out", out.to_str().unwrap()]);
    // The watcher runs at once when the clock moves, and every second.
    let mut got = Vec::new();
    for _ in 0..50 {
        let o = pull();
        assert!(o.status.success(), "{}", stderr(&o));
        got.extend(stored_ids(&o));
        if !got.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(
        got,
        std::slice::from_ref(&in_de),
        "the escalation carries the case's first report"
    );
    let shown =
        received(&fed.regulator("DE-bnetza", "received", &["--out", out.to_str().unwrap()]));
    assert_eq!(shown.len(), 1);
    let d = &shown[0]["decision"];
    assert_eq!(d["kind"], "DECISION_KIND_ESCALATION");
    assert_eq!(d["case"]["case_id"], de_id);
    assert_eq!(d["recipients"][0]["purpose"], "PURPOSE_ESCALATION");
    assert!(
        d["reasons"].to_string().contains("Slow Hosting (AS64500)"),
        "{d}"
    );

    // More time passes: still exactly one escalation, and none for FR.
    fed.hub_admin(&["advance-clock", "--hours", "48"]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_received(&pull(), &[]);
    let fr_out = fed.scratch("fr-police");
    let o = fed.pull("FR-police", &["--out", fr_out.to_str().unwrap()]);
    assert_received(&o, std::slice::from_ref(&in_fr));
    // Police DE got the report once, no escalation (DE escalates to its regulator).
    let bka = fed.scratch("bka");
    assert_received(
        &fed.pull("DE-bka", &["--out", bka.to_str().unwrap()]),
        std::slice::from_ref(&in_de),
    );

    // A late removal is recorded, the escalation stands.
    let o = step("DE", de_id, &["--kind", "removed"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json_lines(&o)[0]["state"], "removed_late");

    // SIGKILL: every step and the escalation were acknowledged, so all survive.
    fed.kill_hub();
    fed.start_hub().unwrap();

    // `explain` shows the whole history of the DE report.
    let o = fed.hub_admin(&["explain", "--json", &in_de]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = &json_lines(&o)[0];
    let kinds: Vec<&str> = e["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["kind"].as_str().unwrap())
        .collect();
    for k in ["decided", "delivered", "acknowledged", "step", "escalated"] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    let first = &e["case"]["locations"][0];
    assert_eq!(first["state"], "removed_late");
    assert_eq!(first["steps"].as_array().unwrap().len(), 2);
    assert_eq!(first["escalations"].as_array().unwrap().len(), 1);
    assert_eq!(first["provider"], "Slow Hosting (AS64500)");
    let text = fed.hub_admin(&["explain", &in_de]);
    assert!(stdout(&text).contains("escalation:"), "{}", stdout(&text));

    // Statistics: the provider that doesn't clean up comes first.
    let o = fed.hub_admin(&["stats", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let st = &json_lines(&o)[0];
    assert_eq!(st["by_origin"]["NL"], 2);
    assert_eq!(st["by_hosting"]["DE"], 1);
    assert_eq!(st["cases"], 2);
    assert_eq!(st["deadlines_missed"], 1);
    assert_eq!(st["providers"][0]["name"], "Slow Hosting");
    assert_eq!(st["providers"][0]["deadlines_missed"], 1);
    assert_eq!(st["providers"][1]["name"], "Quick Hosting");
    assert_eq!(st["providers"][1]["removed"], 1);
    assert_eq!(
        st["providers"][1]["median_removal_ms"].as_i64().unwrap() / 3_600_000,
        2
    );

    // Bad steps change nothing: an unknown case, a forged signature.
    let mut cases =
        pb::cases_client::CasesClient::new(fed.channel_as("nodes/DE/node").await.unwrap());
    let step = meldnet_core::CaseStep {
        step_id: meldnet_core::StepId::new_v7(),
        case_id: meldnet_core::CaseId::new_v7(),
        country: meldnet_core::CountryCode::parse("DE").unwrap(),
        kind: meldnet_core::StepKind::Removed,
        at_ms: 1,
        provider: None,
        location: 0,
        reason: String::new(),
    };
    let before = fed.state().await.unwrap();
    let e = cases
        .record_step(step.sign(&fed.node_key("DE")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(e.message().contains("step.case_id"), "{e}");
    let mut forged = step.sign(&fed.node_key("NL"));
    forged.key_id = fed.node_key("DE").public().id().to_string();
    let e = cases.record_step(forged).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("signed_step.signature"), "{e}");
    assert_eq!(fed.state().await.unwrap().digest, before.digest);
    // Agencies record no steps.
    let mut as_police =
        pb::cases_client::CasesClient::new(fed.channel_as("agencies/DE-bka/agency").await.unwrap());
    let e = as_police
        .record_step(step.sign(&fed.node_key("DE")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
}
