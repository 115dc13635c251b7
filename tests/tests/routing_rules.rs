//! Routing rules over real mTLS: the routing table of the default rules
//! (each case with its recipients, purposes, rules and reasons), a live
//! rule change that is audited and applies only to reports decided after
//! it, and the admin API refused to everyone but operators.

use meldnet_core::Sha256;
use meldnet_proto::v1 as pb;
use meldnet_tests::*;
use std::process::Command;

const FED: &str = "spiffe://eu.meldnet.test";

/// One row of the table: a report's facts and what the hub must decide.
struct Row {
    name: &'static str,
    origin: &'static str,
    hosting: &'static str,
    suspect: &'static str,
    victim: &'static str,
    provider: &'static str,
    class: pb::Classification,
    known: bool,
    /// (recipient path, purpose, first)
    expect: &'static [(&'static str, pb::Purpose, bool)],
    rules: &'static [&'static str],
    /// A reason or fact the decision must hold.
    says: &'static str,
}

use pb::Classification::{Baseline, National, NotIllegal, Unassessed};
use pb::Purpose::{Assessment, Investigation, NoticeAndTakedown};

const TABLE: &[Row] = &[
    Row {
        name: "new material hosted in a member state",
        origin: "NL",
        hosting: "DE",
        suspect: "",
        victim: "",
        provider: "",
        class: Baseline,
        known: false,
        expect: &[
            ("node/DE", NoticeAndTakedown, false),
            ("agency/DE/bka", Investigation, true),
            ("agency/EU/europol", Investigation, true),
        ],
        rules: &["takedown", "new-material-first"],
        says: "new material may show a child not yet safeguarded",
    },
    Row {
        name: "known material hosted in a member state",
        origin: "NL",
        hosting: "DE",
        suspect: "",
        victim: "",
        provider: "",
        class: Baseline,
        known: true,
        expect: &[
            ("node/DE", NoticeAndTakedown, false),
            ("agency/DE/bka", Investigation, false),
        ],
        rules: &["takedown", "hosting-police"],
        says: "known material hosted in a linked country",
    },
    Row {
        name: "national classification: the hosting hotline assesses under its own law",
        origin: "NL",
        hosting: "DE",
        suspect: "",
        victim: "",
        provider: "",
        class: National,
        known: false,
        expect: &[("node/DE", Assessment, false)],
        rules: &["national-assessment"],
        says: "assesses it under its own law and sends a notice only if it is illegal there too",
    },
    Row {
        name: "not yet assessed",
        origin: "NL",
        hosting: "FR",
        suspect: "",
        victim: "",
        provider: "",
        class: Unassessed,
        known: false,
        expect: &[("node/FR", Assessment, false)],
        rules: &["unassessed-assessment"],
        says: "not yet assessed",
    },
    Row {
        name: "assessed not illegal: linked, routed to nobody",
        origin: "NL",
        hosting: "DE",
        suspect: "",
        victim: "",
        provider: "",
        class: NotIllegal,
        known: false,
        expect: &[],
        rules: &[],
        says: "no rule named a registered recipient",
    },
    Row {
        name: "no EU link",
        origin: "NL",
        hosting: "US",
        suspect: "",
        victim: "",
        provider: "",
        class: Baseline,
        known: false,
        expect: &[],
        rules: &[],
        says: "hosting_country US: not a member state or participating country",
    },
    Row {
        name: "hosted outside, suspect in a member state",
        origin: "FR",
        hosting: "US",
        suspect: "NL",
        victim: "",
        provider: "",
        class: Baseline,
        known: false,
        expect: &[
            ("agency/EU/europol", Investigation, true),
            ("agency/NL/politie", Investigation, false),
        ],
        rules: &["new-material-first", "linked-police"],
        says: "suspect_country NL: member state",
    },
    Row {
        name: "cross-border: hosted in DE, victim in FR",
        origin: "NL",
        hosting: "DE",
        suspect: "",
        victim: "FR",
        provider: "",
        class: Baseline,
        known: true,
        expect: &[
            ("node/DE", NoticeAndTakedown, false),
            ("agency/DE/bka", Investigation, false),
            ("agency/FR/police", Investigation, false),
            ("agency/EU/europol", Investigation, false),
        ],
        rules: &[
            "takedown",
            "hosting-police",
            "linked-police",
            "cross-border",
        ],
        says: "cross-border (DE, FR)",
    },
    Row {
        name: "hosted in the origin's own country",
        origin: "DE",
        hosting: "DE",
        suspect: "",
        victim: "",
        provider: "",
        class: Baseline,
        known: false,
        expect: &[
            ("agency/DE/bka", Investigation, true),
            ("agency/EU/europol", Investigation, true),
        ],
        rules: &["takedown", "new-material-first"],
        says: "hosted in DE, the origin node's own country: its hotline acts itself",
    },
    Row {
        name: "hosted in a participating country without police",
        origin: "NL",
        hosting: "NO",
        suspect: "",
        victim: "",
        provider: "",
        class: Baseline,
        known: false,
        expect: &[
            ("node/NO", NoticeAndTakedown, false),
            ("agency/EU/europol", Investigation, true),
        ],
        rules: &["takedown", "new-material-first"],
        says: "no police agency of NO is registered",
    },
    Row {
        name: "hosted outside, provider established in a member state",
        origin: "NL",
        hosting: "CH",
        suspect: "",
        victim: "",
        provider: "DE",
        class: Baseline,
        known: true,
        expect: &[("agency/DE/bka", Investigation, false)],
        rules: &["linked-police"],
        says: "provider_country DE: member state",
    },
    Row {
        name: "hosting and suspect in one country: one recipient, not cross-border",
        origin: "NL",
        hosting: "FR",
        suspect: "FR",
        victim: "",
        provider: "",
        class: Baseline,
        known: true,
        expect: &[
            ("node/FR", NoticeAndTakedown, false),
            ("agency/FR/police", Investigation, false),
        ],
        rules: &["takedown", "hosting-police", "linked-police"],
        says: "one linked country",
    },
    Row {
        name: "national classification, hosted outside: nobody",
        origin: "NL",
        hosting: "US",
        suspect: "DE",
        victim: "",
        provider: "",
        class: National,
        known: false,
        expect: &[],
        rules: &[],
        says: "no rule named a registered recipient",
    },
];

fn report_for(row: &Row, n: u8) -> pb::Report {
    let mut r = sample_report(row.origin, "DE").to_proto();
    r.url = format!("https://table.example.test/row/{n}");
    let link = r.eu_link.get_or_insert_with(Default::default);
    link.hosting_country = row.hosting.into();
    link.suspect_country = row.suspect.into();
    link.victim_country = row.victim.into();
    link.provider_country = row.provider.into();
    r.items[0].sha256 = Sha256::of(&[b'r', n]).to_hex();
    r.items[0].classification = row.class as i32;
    r
}

fn ids(d: &pb::Decision) -> Vec<(String, i32, bool)> {
    d.recipients
        .iter()
        .map(|r| (r.identity.clone(), r.purpose, r.first))
        .collect()
}

fn says(d: &pb::Decision, what: &str) -> bool {
    d.reasons
        .iter()
        .chain(d.eu_link_facts.iter())
        .any(|r| r.contains(what))
}

async fn operator_admin(
    fed: &Federation,
) -> pb::admin_client::AdminClient<tonic::transport::Channel> {
    pb::admin_client::AdminClient::new(fed.channel_as("operators/admin/operator").await.unwrap())
}

#[tokio::test]
async fn the_routing_table_and_a_live_rule_change() {
    let mut fed = Federation::init_with(
        "NL,DE,FR,NO",
        "DE/bka,NL/politie,FR/police,EU/europol",
        &["--regulators", "DE/bnetza"],
    )
    .unwrap();
    let cfg = fed.hub_config();
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("participating = []"), "{text}");
    std::fs::write(
        &cfg,
        text.replace("participating = []", "participating = [\"NO\"]"),
    )
    .unwrap();
    fed.start_hub().unwrap();
    let mut admin = operator_admin(&fed).await;

    // The items of the "known" rows are on the hub's list.
    let reports: Vec<pb::Report> = TABLE
        .iter()
        .enumerate()
        .map(|(i, r)| report_for(r, i as u8))
        .collect();
    let entries: Vec<pb::ListEntry> = TABLE
        .iter()
        .zip(&reports)
        .filter(|(row, _)| row.known)
        .map(|(_, r)| pb::ListEntry {
            sha256: r.items[0].sha256.clone(),
            classification: pb::Classification::Baseline as i32,
            age_group: pb::AgeGroup::Unknown as i32,
            media_type: pb::MediaType::Image as i32,
            source_country: "NL".into(),
            ..Default::default()
        })
        .collect();
    admin
        .list_add(pb::ListAddRequest { entries })
        .await
        .unwrap();

    assert!(TABLE.len() >= 12);
    for (row, report) in TABLE.iter().zip(&reports) {
        let d = fed.submit_as(row.origin, report).await.unwrap();
        let want: Vec<(String, i32, bool)> = row
            .expect
            .iter()
            .map(|(who, p, first)| (format!("{FED}/{who}"), *p as i32, *first))
            .collect();
        assert_eq!(ids(&d), want, "{}: {:#?}", row.name, d.reasons);
        let matched: Vec<&str> = d.rules.iter().map(|m| m.rule.as_str()).collect();
        assert_eq!(matched, row.rules, "{}", row.name);
        assert!(
            says(&d, row.says),
            "{}: {:#?} {:#?}",
            row.name,
            d.eu_link_facts,
            d.reasons
        );
        assert_eq!(d.rules_version, 1, "{}", row.name);
        assert_eq!(
            d.eu_link,
            row.hosting != "US" || !row.suspect.is_empty(),
            "{}",
            row.name
        );
        // Each recipient names the rule that chose it, and says why in words.
        for r in &d.recipients {
            assert!(row.rules.contains(&r.rule.as_str()), "{}: {r:?}", row.name);
            assert!(!r.reason.is_empty());
        }
        // Machine-readable: what each rule named.
        if let Some(m) = d.rules.iter().find(|m| m.rule == "cross-border") {
            assert_eq!(m.recipients, [format!("{FED}/agency/EU/europol")]);
        }
    }

    // Only operators use the admin API.
    for stem in [
        "nodes/NL/node",
        "agencies/DE-bka/agency",
        "regulators/DE-bnetza/agency",
    ] {
        let mut a = pb::admin_client::AdminClient::new(fed.channel_as(stem).await.unwrap());
        let denied =
            |s: tonic::Status| assert_eq!(s.code(), tonic::Code::PermissionDenied, "{stem}: {s}");
        denied(a.get_rules(pb::GetRulesRequest {}).await.unwrap_err());
        denied(
            a.set_rules(pb::RoutingRules {
                version: 0,
                toml: String::new(),
            })
            .await
            .unwrap_err(),
        );
        denied(
            a.explain(pb::ExplainRequest {
                report_id: reports[0].id.clone(),
            })
            .await
            .unwrap_err(),
        );
        denied(a.stats(pb::StatsRequest {}).await.unwrap_err());
        denied(a.state_digest(pb::StateDigestRequest {}).await.unwrap_err());
    }

    // A rule set that does not validate is refused, naming the key; nothing changes.
    let before = admin
        .get_rules(pb::GetRulesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before.version, 1);
    let bad = "[[rules]]\nname = \"x\"\nsend = [\"the-press\"]\npurpose = \"investigation\"\n";
    let e = admin
        .set_rules(pb::RoutingRules {
            version: 0,
            toml: bad.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("rules[0].send[0]"), "{e}");
    assert_eq!(
        admin
            .get_rules(pb::GetRulesRequest {})
            .await
            .unwrap()
            .into_inner(),
        before
    );

    // A report decided before the change keeps its decision.
    let mut early = report_for(&TABLE[0], 100);
    early.url = "https://table.example.test/before".into();
    let d_early = fed.submit_as("NL", &early).await.unwrap();
    assert_eq!(d_early.rules_version, 1);

    // The operator adds a rule with `meldnet-hub admin set-rules`.
    let file = fed.scratch("rules").join("rules.toml");
    let new_rules = format!(
        "{}\n[[rules]]\nname = \"de-regulator\"\nhosting = [\"DE\"]\nclassification = \"baseline\"\nsend = [\"{FED}/regulator/DE/bnetza\"]\npurpose = \"investigation\"\nwhy = \"hosted in DE: the regulator follows every case\"\n",
        before.toml
    );
    std::fs::write(&file, &new_rules).unwrap();
    let o = fed.hub_admin(&["set-rules", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json_lines(&o)[0]["rules_version"], 2);
    let o = fed.hub_admin(&["rules"]);
    assert!(
        stdout(&o).starts_with("# routing rules v2\n"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("de-regulator"));

    let mut late = report_for(&TABLE[0], 101);
    late.url = "https://table.example.test/after".into();
    let d_late = fed.submit_as("NL", &late).await.unwrap();
    assert_eq!(d_late.rules_version, 2);
    assert!(ids(&d_late).contains(&(
        format!("{FED}/regulator/DE/bnetza"),
        Investigation as i32,
        false
    )));
    assert!(d_late.rules.iter().any(|m| m.rule == "de-regulator"));
    // The earlier report, explained after the change, still shows version 1 and no regulator.
    let o = fed.hub_admin(&["explain", "--json", &early.id]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = &json_lines(&o)[0];
    assert_eq!(e["decision"]["rules_version"], 1);
    assert!(!e["decision"]["recipients"]
        .to_string()
        .contains("regulator"));
    // The regulator receives the later report only.
    let out = fed.scratch("bnetza");
    let o = fed.regulator("DE-bnetza", "pull", &["--out", out.to_str().unwrap()]);
    assert_received(&o, std::slice::from_ref(&late.id));

    // The change is in the audit log: who, which version, the whole text.
    fed.stop_hub();
    let o = run(Command::new(bin("meldnet-hub"))
        .args(["audit", "show", "--kind", "setting", "--config"])
        .arg(fed.hub_config()));
    assert!(o.status.success(), "{}", stderr(&o));
    let events = json_lines(&o);
    assert_eq!(events.len(), 1, "{}", stdout(&o));
    assert_eq!(events[0]["actor"], format!("{FED}/operator/admin"));
    assert_eq!(events[0]["subject"], "routing rules v2");
    assert!(events[0]["detail"]
        .as_str()
        .unwrap()
        .contains("name = \"de-regulator\""));

    // The changed rules outlive a restart.
    fed.start_hub().unwrap();
    let mut admin = operator_admin(&fed).await;
    assert_eq!(
        admin
            .get_rules(pb::GetRulesRequest {})
            .await
            .unwrap()
            .into_inner()
            .version,
        2
    );
}
