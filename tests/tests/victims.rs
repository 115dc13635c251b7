//! Victim notification over real mTLS: series registered by police, linked
//! to representatives, the victim's choice (never by default, legal
//! proceedings only, a capped digest), withdrawal, and what the hub stores.

use meldnet_core::Period;
use meldnet_core::Sha256;
use meldnet_proto::v1 as pb;
use meldnet_tests::{bin, json_lines, run, sample_report, stderr, stdout, Federation};
use serde_json::Value;
use std::collections::BTreeSet;
use std::process::{Command, Output};

const HOUR: i64 = 3_600_000;
const FED: &str = "spiffe://eu.meldnet.test";

/// `meldnet-agency series SUB` as police agency `dir` (e.g. `DE-bka`).
fn police(fed: &Federation, dir: &str, sub: &str, args: &[&str]) -> Output {
    fed.series(&fed.agency_config(dir), sub, args)
}

/// `meldnet-agency series SUB` as representative `dir` (e.g. `NL-fier`).
fn rep(fed: &Federation, dir: &str, sub: &str, args: &[&str]) -> Output {
    fed.series(&fed.representative_config(dir), sub, args)
}

/// The command failed, saying `why`.
fn refused(o: &Output, why: &str) {
    assert!(!o.status.success(), "{}", stdout(o));
    assert!(stderr(o).contains(why), "{}", stderr(o));
}

fn ok(o: &Output) -> Value {
    assert!(o.status.success(), "{}\n{}", stdout(o), stderr(o));
    json_lines(o).into_iter().next().unwrap_or(Value::Null)
}

/// A CSV of series hashes: one exact hash per seed.
fn hashes_csv(fed: &Federation, name: &str, seeds: &[&str]) -> String {
    let mut text = "sha256,pdq,pdq_quality\n".to_string();
    for s in seeds {
        text.push_str(&format!("{},,\n", Sha256::of(s.as_bytes()).to_hex()));
    }
    let p = fed.scratch("series").join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// A report hosted in DE at `url` holding the item `seed`.
fn report(url: &str, seed: &str) -> pb::Report {
    let mut r = sample_report("NL", "DE");
    r.url = meldnet_core::ReportUrl::parse(url).unwrap();
    r.items[0].sha256 = Sha256::of(seed.as_bytes());
    r.to_proto()
}

fn case_of(d: &pb::Decision) -> String {
    d.case_ref.as_ref().unwrap().case_id.clone()
}

/// Notifications received by representative `dir`, as JSON.
fn pull(fed: &Federation, dir: &str) -> Vec<Value> {
    let o = fed.representative(dir, "pull", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = fed.representative(dir, "received", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    json_lines(&o)
}

fn hub_now_ms() -> i64 {
    meldnet_core::time::now_ms()
}

#[tokio::test]
async fn notifications_follow_the_victims_choice_and_never_flood() {
    let mut fed = Federation::init_with(
        "NL,DE",
        "DE/bka,NL/politie",
        &["--representatives", "NL/fier,DE/weisser"],
    )
    .unwrap();
    fed.add_hub_config("[clock]\nadjustable = true\n").unwrap();
    fed.start_hub().unwrap();
    let fier = format!("{FED}/representative/NL/fier");
    let weisser = format!("{FED}/representative/DE/weisser");

    // The hub's clock to next Monday, 01:00-02:00 UTC: a week starts.
    let now = hub_now_ms();
    let monday = Period::Week.next_start(Period::Week.start_of(now));
    let hours = ((monday + HOUR - now) + HOUR - 1) / HOUR;
    let o = fed.hub_admin(&["advance-clock", "--hours", &hours.to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut offset = hours * HOUR;

    // Police DE register four series and link them; only hashes go.
    let mut series = Vec::new();
    for (i, (seed, rep)) in [
        ("s0", &fier),
        ("s1", &fier),
        ("s2", &weisser),
        ("s3", &fier),
    ]
    .into_iter()
    .enumerate()
    {
        let csv = hashes_csv(&fed, &format!("{seed}.csv"), &[seed]);
        let v = ok(&police(&fed, "DE-bka", "register", &["--hashes", &csv]));
        let id = v["series_id"].as_str().unwrap().to_string();
        assert_eq!(v["sha256"], 1, "series {i}");
        let v = ok(&police(
            &fed,
            "DE-bka",
            "link",
            &["--series", &id, "--representative", rep],
        ));
        assert_eq!(v["representative"].as_str(), Some(rep.as_str()));
        series.push(id);
    }
    let (s0, s1, s2, s3) = (&series[0], &series[1], &series[2], &series[3]);

    // Who may do what.
    let o = police(
        &fed,
        "NL-politie",
        "add",
        &[
            "--series",
            s1,
            "--hashes",
            &hashes_csv(&fed, "x.csv", &["x"]),
        ],
    );
    refused(&o, "series_id: not a series this agency registered");
    let o = rep(
        &fed,
        "NL-fier",
        "link",
        &["--series", s1, "--representative", &fier],
    );
    refused(&o, "is not a police agency");
    let o = rep(
        &fed,
        "DE-weisser",
        "preference",
        &[
            "--series", s1, "--choice", "digest", "--period", "week", "--cap", "7",
        ],
    );
    refused(
        &o,
        "preference.series_id: not a series linked to this representative",
    );
    let o = police(
        &fed,
        "DE-bka",
        "preference",
        &["--series", s1, "--choice", "legal-only"],
    );
    refused(&o, "is not a representative");
    let o = rep(
        &fed,
        "NL-fier",
        "preference",
        &[
            "--series", s1, "--choice", "digest", "--period", "week", "--cap", "8",
        ],
    );
    refused(&o, "preference.cap");

    // The victims' choices: s0 none (never), s1 legal proceedings only,
    // s2 and s3 a weekly digest of at most two messages.
    let set = |dir: &str, id: &str, args: &[&str]| {
        let mut a = vec!["--series", id];
        a.extend_from_slice(args);
        ok(&rep(&fed, dir, "preference", &a))
    };
    set("NL-fier", s1, &["--choice", "legal-only"]);
    set(
        "DE-weisser",
        s2,
        &["--choice", "digest", "--period", "week", "--cap", "2"],
    );
    set(
        "NL-fier",
        s3,
        &["--choice", "digest", "--period", "week", "--cap", "2"],
    );
    let linked = json_lines(&rep(&fed, "NL-fier", "linked", &[]));
    assert_eq!(linked.len(), 3);

    // Cases: s0's; A and B with s1; C with no series; s2 and s3 open cases.
    let opened = fed
        .submit_many(
            "NL",
            &[
                report("https://a.example.test/s0", "s0"),
                report("https://a.example.test/A", "s1"),
                report("https://b.example.test/B", "s1-other"),
                report("https://c.example.test/C", "nothing"),
                report("https://s2.example.test/x", "s2"),
                report("https://s3.example.test/x", "s3"),
            ],
        )
        .await
        .unwrap();
    // B holds s1's picture under another file name? No: a second picture of
    // s1, added to the series later.
    let more = hashes_csv(&fed, "s1b.csv", &["s1-other"]);
    let o = police(&fed, "DE-bka", "add", &["--series", s1, "--hashes", &more]);
    assert_eq!(ok(&o)["sha256"], 2);
    // The same hashes again, twice in one file: nothing new.
    let again = hashes_csv(&fed, "s1c.csv", &["s1-other", "s1-other", "s1"]);
    let o = police(&fed, "DE-bka", "add", &["--series", s1, "--hashes", &again]);
    assert_eq!(ok(&o)["sha256"], 2);
    let (case_a, case_c) = (case_of(&opened[1]), case_of(&opened[3]));
    // A report of s1's second picture: a sighting of B, recorded against s1.
    fed.submit_many("NL", &[report("https://b.example.test/B", "s1-other")])
        .await
        .unwrap();

    // s2: 10,000 sightings in the week, in three bursts around the
    // mid-week boundary (Thursday 12:00).
    let sightings = |n: usize, seed: &str, url: &str| -> Vec<pb::Report> {
        (0..n).map(|_| report(url, seed)).collect()
    };
    let burst = |n| sightings(n, "s2", "https://s2.example.test/x");
    let d = fed.submit_many("NL", &burst(5_000)).await.unwrap();
    assert!(d
        .iter()
        .all(|d| d.kind == pb::DecisionKind::Sighting as i32));
    fed.submit_many("NL", &sightings(10, "s3", "https://s3.example.test/x"))
        .await
        .unwrap();
    fed.hub_admin(&["advance-clock", "--hours", "24"]);
    offset += 24 * HOUR;
    fed.submit_many("NL", &burst(3_000)).await.unwrap();
    // Past Thursday 12:00: the first digests are made (s2's and s3's).
    let thursday_13 = monday + 3 * 24 * HOUR + 13 * HOUR;
    let hours = (thursday_13 - (hub_now_ms() + offset)) / HOUR + 1;
    fed.hub_admin(&["advance-clock", "--hours", &hours.to_string()]);
    std::thread::sleep(std::time::Duration::from_secs(3));
    fed.submit_many("NL", &burst(2_000)).await.unwrap();
    fed.submit_many("NL", &sightings(5, "s3", "https://s3.example.test/x"))
        .await
        .unwrap();
    // s3's victim withdraws: the digest queued and not yet received, and
    // the one in preparation, are gone.
    set("NL-fier", s3, &["--choice", "never"]);

    // Police mark cases in legal proceedings: A (s1), A again, C (no series).
    let o = police(&fed, "DE-bka", "proceedings", &["--case", &case_a]);
    assert_eq!(ok(&o)["newly_marked"], true);
    let o = police(&fed, "NL-politie", "proceedings", &["--case", &case_a]);
    assert_eq!(ok(&o)["newly_marked"], false);
    ok(&police(&fed, "DE-bka", "proceedings", &["--case", &case_c]));
    // A later sighting in A does not notify twice.
    fed.submit_many("NL", &[report("https://a.example.test/A", "s1")])
        .await
        .unwrap();

    // To the next week: s2's second digest.
    fed.hub_admin(&["advance-clock", "--hours", "96"]);
    std::thread::sleep(std::time::Duration::from_secs(3));

    // weisser: exactly the cap, with the right counts, nothing for others.
    let got = pull(&fed, "DE-weisser");
    let digests: Vec<&Value> = got.iter().map(|n| &n["notification"]).collect();
    assert_eq!(digests.len(), 2, "{got:#?}");
    assert!(got.iter().all(|n| n["series_id"] == s2.as_str()));
    assert!(digests.iter().all(|d| d["kind"] == "digest"));
    let sum = |k: &str| digests.iter().map(|d| d[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(sum("new_cases"), 1);
    assert_eq!(sum("sightings"), 10_000);
    assert_eq!(digests[0]["sightings"], 8_000, "{got:#?}");
    assert_eq!(digests[0]["message"], "1 of at most 2 this period");
    assert_eq!(digests[1]["message"], "2 of at most 2 this period");
    // No URL, no hash in what a representative receives.
    let text = serde_json::to_string(&digests).unwrap();
    assert!(!text.contains("example.test") && !text.contains(&Sha256::of(b"s2").to_hex()));

    // fier: one notification, for case A in proceedings; nothing for s0
    // (no choice), s3 (withdrawn), B (not in proceedings) or C (no series).
    let got = pull(&fed, "NL-fier");
    assert_eq!(got.len(), 1, "{got:#?}");
    let n = &got[0];
    assert_eq!(n["series_id"], s1.as_str());
    assert_eq!(n["notification"]["kind"], "legal_proceedings");
    assert_eq!(n["notification"]["case_id"], case_a.as_str());
    assert_eq!(
        n["notification"]["marked_by"],
        format!("{FED}/agency/DE/bka")
    );
    assert!(!serde_json::to_string(n).unwrap().contains(s0.as_str()));
    // Received once: a second pull brings nothing new.
    let o = fed.representative("NL-fier", "pull", &[]);
    assert!(
        o.status.success() && stderr(&o).contains("0 stored"),
        "{}",
        stderr(&o)
    );
    // What was received verifies offline with the hub's public key.
    let log = fed.root().join("representatives/NL-fier/deliveries");
    let o = fed.representative("NL-fier", "verify", &[&log.display().to_string()]);
    assert!(
        stdout(&o).contains(": OK notification"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );

    // What the hub stores for a series: its id, owner and representative,
    // its hashes, the choice, counts, matches: nothing else.
    fed.stop_hub();
    let audit = run(Command::new(bin("meldnet-hub"))
        .args(["audit", "show", "--config"])
        .arg(fed.hub_config()));
    let kinds: BTreeSet<String> = json_lines(&audit)
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or_default().to_string())
        .collect();
    for k in [
        "series-registered",
        "series-linked",
        "preference",
        "proceedings",
        "notified",
    ] {
        assert!(kinds.contains(k), "audit lacks {k}: {kinds:?}");
    }
    // s3's first digest was made and queued, then withdrawn unreceived.
    let s3_notified = json_lines(&audit)
        .iter()
        .filter(|e| e["kind"] == "notified" && e["subject"] == s3.as_str())
        .count();
    assert_eq!(s3_notified, 1);
    for id in [s1, s2, s3] {
        let o = run(Command::new(bin("meldnet-hub"))
            .args(["store", "series", "--series", id, "--config"])
            .arg(fed.hub_config()));
        let records = json_lines(&o);
        assert!(!records.is_empty(), "{}", stderr(&o));
        for r in &records {
            assert_eq!(r["complete"], true, "more stored than shown: {r}");
            let allowed: &[&str] = match r["kind"].as_str().unwrap() {
                "series" => &["series_id", "owner", "representative"],
                "hash" => &["sha256", "pdq", "pdq_quality"],
                "preference" => &["series_id", "choice", "period", "cap", "set_at_ms"],
                "digest_state" => &["from_ms", "period_start_ms", "sent"],
                "match" => &["at_ms", "report_id", "case_id", "opened"],
                "case_link" => &["case_id", "proceedings_notified"],
                "notification" => &[
                    "notification_id",
                    "series_id",
                    "representative",
                    "made_at_ms",
                    "body",
                    "signature",
                    "key_id",
                ],
                other => panic!("unexpected record kind {other}: {r}"),
            };
            for k in r["fields"].as_object().unwrap().keys() {
                assert!(allowed.contains(&k.as_str()), "{k} in {r}");
            }
            // Every string is an id, a hash, a SPIFFE id or an enum name.
            for v in r["fields"].as_object().unwrap().values() {
                if let Some(s) = v.as_str() {
                    let id_like =
                        s.len() == 36 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
                    let hex = s.chars().all(|c| c.is_ascii_hexdigit());
                    let spiffe = s.starts_with("spiffe://");
                    let word = s.chars().all(|c| c.is_ascii_uppercase() || c == '_');
                    assert!(id_like || hex || spiffe || word, "free text {s:?} in {r}");
                }
            }
        }
        let kinds: BTreeSet<&str> = records
            .iter()
            .map(|r| r["kind"].as_str().unwrap())
            .collect();
        assert!(
            kinds.contains("series") && kinds.contains("hash"),
            "{kinds:?}"
        );
        if id == s3 {
            assert!(
                !kinds.contains("preference") && !kinds.contains("digest_state"),
                "withdrawn: {kinds:?}"
            );
        }
    }
}

#[test]
fn the_protocol_has_no_field_for_a_person() {
    use prost::Message;
    let fds = prost_types::FileDescriptorSet::decode(meldnet_proto::FILE_DESCRIPTOR_SET).unwrap();
    let file = fds
        .file
        .iter()
        .find(|f| f.name() == "meldnet/v1/series.proto")
        .unwrap();
    let mut fields = BTreeSet::new();
    for m in &file.message_type {
        for f in &m.field {
            fields.insert(format!("{}.{}", m.name(), f.name()));
        }
    }
    let allowed: BTreeSet<String> = [
        "SeriesHash.sha256",
        "SeriesHash.pdq",
        "SeriesHash.pdq_quality",
        "SeriesHashes.series_id",
        "SeriesHashes.hashes",
        "SeriesView.series_id",
        "SeriesView.sha256_count",
        "SeriesView.pdq_count",
        "SeriesView.representative",
        "SeriesLink.series_id",
        "SeriesLink.representative",
        "ProceedingsMark.case_id",
        "ProceedingsMarked.case_id",
        "ProceedingsMarked.newly_marked",
        "Preference.series_id",
        "Preference.choice",
        "Preference.period",
        "Preference.cap",
        "LinkedSeries.series",
        "Notification.notification_id",
        "Notification.series_id",
        "Notification.representative",
        "Notification.made_at_ms",
        "Notification.proceedings",
        "Notification.digest",
        "Proceedings.case_id",
        "Proceedings.agency",
        "Proceedings.marked_at_ms",
        "Digest.period",
        "Digest.from_ms",
        "Digest.to_ms",
        "Digest.new_cases",
        "Digest.sightings",
        "Digest.number",
        "Digest.cap",
        "SignedNotification.notification",
        "SignedNotification.signature",
        "SignedNotification.key_id",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(
        fields, allowed,
        "a field was added to series.proto: does it name or describe a person?"
    );
}
