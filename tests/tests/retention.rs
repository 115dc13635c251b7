//! Retention over real processes: a report is erased once its period has
//! passed on the hub's clock, every delivery of it is acknowledged and its
//! case is settled; never while a recipient still has it queued, never
//! while its case is open, and never the report its case's location stands
//! on. The audit chain names what went and still verifies.

use meldnet_proto::v1 as pb;
use meldnet_tests::*;
use std::time::{Duration, Instant};

const DAY_MS: i64 = 86_400_000;

/// Every recipient of the default federation takes what is queued for it,
/// except `but`.
fn drain(fed: &Federation, but: &str) {
    for agency in ["DE-bka", "NL-politie", "FR-police", "EU-europol"] {
        if agency != but {
            let o = fed.pull(agency, &["--out", fed.scratch(agency).to_str().unwrap()]);
            assert!(o.status.success(), "{agency}: {}", stderr(&o));
        }
    }
    for cc in ["NL", "DE", "FR"] {
        let o = fed.node(cc, &["inbox"]);
        assert!(o.status.success(), "node {cc}: {}", stderr(&o));
    }
}

/// Whether the hub still explains the report (false: erased, and the
/// refusal says where to look).
fn stored(fed: &Federation, id: &str) -> bool {
    let o = fed.hub_admin(&["explain", "--json", id]);
    if o.status.success() {
        return true;
    }
    assert!(stderr(&o).contains("retention"), "{}", stderr(&o));
    false
}

fn wait_erased(fed: &Federation, id: &str) {
    let until = Instant::now() + Duration::from_secs(20);
    while stored(fed, id) {
        assert!(Instant::now() < until, "{id} not erased: {}", fed.hub_log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_report_expires_only_once_nothing_needs_it() {
    let mut fed = Federation::init("NL,DE,FR", "DE/bka,NL/politie,FR/police,EU/europol").unwrap();
    fed.add_hub_config("[clock]\nadjustable = true\n\n[retention]\nreports_days = 30\n")
        .unwrap();
    fed.start_hub().unwrap();
    let files = fed.scratch("files");
    let url = "https://files.example.test/kept/a";
    let report = |cc: &str, seed: u8| {
        let f = synthetic_file(&files, &format!("{cc}-{seed}.png"), seed);
        fed.report(cc, url, &["--hosting", "DE"], &[&f]).unwrap()
    };
    // The report that opens the case (its location stands on it), a
    // sighting every recipient takes, and one police DE does not take yet.
    let (first, lines) = report("NL", 31);
    let case = lines
        .iter()
        .find(|l| l["status"] == "accepted")
        .map(|l| l["case"]["case_id"].as_str().unwrap().to_string())
        .unwrap();
    let (taken, _) = report("FR", 32);
    drain(&fed, "");
    let (held, _) = report("NL", 33);
    drain(&fed, "DE-bka");

    let mut admin = pb::admin_client::AdminClient::new(
        fed.channel_as("operators/admin/operator").await.unwrap(),
    );
    let advance = |by_ms: i64| {
        let mut admin = admin.clone();
        async move {
            admin
                .advance_clock(pb::AdvanceClockRequest { by_ms })
                .await
                .unwrap();
        }
    };
    // Past the period, but the case is open: everything stays.
    advance(31 * DAY_MS).await;
    std::thread::sleep(Duration::from_secs(2));
    for id in [&first, &taken, &held] {
        assert!(stored(&fed, id), "{id} erased while its case is open");
    }

    // The hosting hotline records the removal: the case is settled. The
    // sighting every recipient took goes; the one police DE has not taken
    // stays queued and intact; the case's first report stays with it.
    for kind in [
        &[
            "--kind",
            "notice-sent",
            "--provider-name",
            "Host",
            "--asn",
            "64500",
        ][..],
        &["--kind", "removed"][..],
    ] {
        let mut a = vec!["case", "step", "--case", case.as_str()];
        a.extend_from_slice(kind);
        let o = fed.node("DE", &a);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    drain(&fed, "DE-bka");
    advance(1).await;
    wait_erased(&fed, &taken);
    assert!(stored(&fed, &held), "erased while police DE had it queued");
    assert!(stored(&fed, &first), "the location's report erased");

    // Police DE takes it: then it goes too.
    let out = fed.scratch("bka-late");
    let o = fed.pull("DE-bka", &["--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    advance(1).await;
    wait_erased(&fed, &held);
    assert!(stored(&fed, &first));

    // The audit chain still verifies, live and offline, and names both.
    let v = admin
        .verify_audit(pb::VerifyAuditRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(v.records > 0, "{v:?}");
    fed.stop_hub();
    let o = run(std::process::Command::new(bin("meldnet-hub"))
        .args(["audit", "verify", "--config"])
        .arg(fed.hub_config()));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(std::process::Command::new(bin("meldnet-hub"))
        .args(["audit", "show", "--kind", "expired", "--config"])
        .arg(fed.hub_config()));
    assert!(o.status.success(), "{}", stderr(&o));
    let said = stdout(&o);
    assert!(said.contains(&taken) && said.contains(&held), "{said}");
    assert!(!said.contains(&first), "{said}");
}
