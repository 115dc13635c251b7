//! Damage at the hub and refusals by recipients never block a queue: a
//! report whose stored body fails its checksum is held back (operators see
//! it) while every other delivery flows; a delivery a recipient refuses is
//! recorded with its reason and taken out of the queue.

use meldnet_proto::v1 as pb;
use meldnet_proto::v1::admin_client::AdminClient;
use meldnet_tests::*;
use tonic::Code;

fn reports(n: usize) -> Vec<pb::Report> {
    (0..n)
        .map(|i| {
            let mut r = sample_report("NL", "DE");
            r.url = meldnet_core::ReportUrl::parse(&format!("https://h.example.de/{i}")).unwrap();
            r.items[0].sha256 = meldnet_core::Sha256::of(format!("item {i}").as_bytes());
            r.to_proto()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_body_is_held_back_and_the_rest_of_the_queue_flows() {
    let mut fed = Federation::start_default().unwrap();
    let sent = reports(20);
    fed.submit_many("NL", &sent).await.unwrap();
    fed.stop_hub();
    // One flipped byte inside the 5th report's stored body.
    let blobs = fed.root().join("hub/data/ledger/records.log");
    let mut bytes = std::fs::read(&blobs).unwrap();
    let id = sent[4].id.as_bytes();
    let at = bytes
        .windows(id.len())
        .position(|w| w == id)
        .expect("the report's id is in its stored body");
    bytes[at + 3] ^= 0x20;
    std::fs::write(&blobs, &bytes).unwrap();
    fed.start_hub().unwrap();

    // Police DE receive the 19 intact reports; the damaged one is held back.
    let out = fed.scratch("bka");
    let o = fed.pull("DE-bka", &["--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = stored_ids(&o);
    assert_eq!(got.len(), 19, "{}", stdout(&o));
    assert!(!got.contains(&sent[4].id));
    // New reports still flow into the same queue.
    let more = reports(1);
    fed.submit_many("NL", &more).await.unwrap();
    let o = fed.pull("DE-bka", &["--out", out.to_str().unwrap()]);
    assert_eq!(stored_ids(&o).len(), 1, "{}", stdout(&o));

    // Operators see it: statistics, the report's history, the digest.
    let mut admin = AdminClient::new(fed.channel_as("operators/admin/operator").await.unwrap());
    let stats = admin.stats(pb::StatsRequest {}).await.unwrap().into_inner();
    assert!(stats.deliveries_held_back >= 1, "{stats:?}");
    let d = fed.state().await.unwrap();
    assert_eq!(d.damaged, 1, "{d:?}");
    let e = admin
        .explain(pb::ExplainRequest {
            report_id: sent[4].id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DataLoss, "{e:?}");
    assert!(e.message().contains("offset"), "{}", e.message());
    assert!(
        fed.hub_log().contains("delivery held back"),
        "{}",
        fed.hub_log()
    );

    // Recorded once, across a restart too.
    fed.stop_hub();
    fed.start_hub().unwrap();
    let o = fed.pull("DE-bka", &["--out", out.to_str().unwrap()]);
    assert!(stored_ids(&o).is_empty(), "{}", stdout(&o));
    let mut admin = AdminClient::new(fed.channel_as("operators/admin/operator").await.unwrap());
    let again = admin.stats(pb::StatsRequest {}).await.unwrap().into_inner();
    assert_eq!(again.deliveries_held_back, stats.deliveries_held_back);

    // With the hub stopped, the check names the damaged body and where it
    // lies; the audit chain is intact.
    fed.stop_hub();
    let config = fed.hub_config();
    let o = run(std::process::Command::new(bin("meldnet-hub"))
        .args(["store", "check", "--config"])
        .arg(&config));
    assert!(!o.status.success(), "{}", stdout(&o));
    let lines = json_lines(&o);
    assert_eq!(lines.len(), 1, "{}", stdout(&o));
    assert_eq!(lines[0]["kind"], "report");
    assert_eq!(lines[0]["of"], sent[4].id.as_str());
    assert!(lines[0]["offset"].as_u64().unwrap() <= at as u64);
    assert!(stdout(&o).contains("1 damaged"), "{}", stdout(&o));
    let o = run(std::process::Command::new(bin("meldnet-hub"))
        .args(["audit", "verify", "--config"])
        .arg(&config));
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Rewrites one byte of the report `id` inside its stored body and fixes
/// the record's checksums: the hub reads the body as sound and delivers
/// bytes the node never signed (a store altered behind the hub's back).
/// The record's layout is the ledger's (`meldnet-ledger`, `record`): a
/// header of 16 bytes and the key, then the payload; the header's CRC-32
/// over its bytes 4.., the payload's at bytes 8..12.
fn tamper_keeping_the_checksum(log: &std::path::Path, id: &str) {
    let mut bytes = std::fs::read(log).unwrap();
    let mut at = 0usize;
    while at + 16 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        let header = 16 + bytes[at + 15] as usize;
        let body = at + header..at + header + len;
        if let Some(i) = bytes[body.clone()]
            .windows(id.len())
            .position(|w| w == id.as_bytes())
        {
            let p = body.start + i + id.len() - 1;
            bytes[p] = if bytes[p] == b'0' { b'1' } else { b'0' };
            let crc = crc32fast::hash(&bytes[body.clone()]);
            bytes[at + 8..at + 12].copy_from_slice(&crc.to_le_bytes());
            let crc = crc32fast::hash(&bytes[at + 4..at + header]);
            bytes[at..at + 4].copy_from_slice(&crc.to_le_bytes());
            std::fs::write(log, &bytes).unwrap();
            return;
        }
        at = body.end;
    }
    panic!("report {id} not found in {}", log.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_the_recipient_refuses_is_recorded_and_leaves_the_queue() {
    let mut fed = Federation::start_default().unwrap();
    let sent = reports(3);
    fed.submit_many("NL", &sent).await.unwrap();
    fed.stop_hub();
    tamper_keeping_the_checksum(&fed.root().join("hub/data/ledger/records.log"), &sent[1].id);
    fed.start_hub().unwrap();

    let out = fed.scratch("bka");
    let o = fed.pull("DE-bka", &["--out", out.to_str().unwrap()]);
    let said = format!("{}{}", stdout(&o), stderr(&o));
    assert!(said.contains("1 rejected"), "{said}");
    assert_eq!(stored_ids(&o).len(), 2, "{said}");
    assert!(out.join("rejected").read_dir().unwrap().count() == 1);
    // The refused delivery does not come back and does not block what follows.
    let later = sample_report("FR", "DE").to_proto();
    fed.submit_many("FR", std::slice::from_ref(&later))
        .await
        .unwrap();
    let o = fed.pull("DE-bka", &["--out", out.to_str().unwrap()]);
    assert_eq!(
        stored_ids(&o),
        std::slice::from_ref(&later.id),
        "{}",
        stdout(&o)
    );
    let said = format!("{}{}", stdout(&o), stderr(&o));
    assert!(said.contains("0 rejected"), "{said}");

    // The hub recorded the refusal with its reason.
    let mut admin = AdminClient::new(fed.channel_as("operators/admin/operator").await.unwrap());
    let stats = admin.stats(pb::StatsRequest {}).await.unwrap().into_inner();
    assert_eq!(stats.deliveries_refused, 1, "{stats:?}");
    let x = admin
        .explain(pb::ExplainRequest {
            report_id: sent[1].id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let refused: Vec<_> = x.history.iter().filter(|h| h.kind == "refused").collect();
    assert_eq!(refused.len(), 1, "{:?}", x.history);
    assert!(
        refused[0].actor.ends_with("/agency/DE/bka"),
        "{:?}",
        refused[0]
    );
    assert!(
        refused[0].detail.contains("failed verification"),
        "{:?}",
        refused[0]
    );
    let v = admin
        .verify_audit(pb::VerifyAuditRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(v.records > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_signed_with_a_key_the_recipient_lacks_waits_for_its_keyring() {
    let fed = Federation::start_default().unwrap();
    // Police DE's keyring lacks node NL's key (a node registered since).
    let root = fed.root();
    let full = std::fs::read_to_string(root.join("keyring.toml")).unwrap();
    let lacking: Vec<&str> = full
        .split("[[keys]]")
        .filter(|block| !block.contains("/node/NL\""))
        .collect();
    let own = root.join("agencies/DE-bka/keyring.toml");
    std::fs::write(&own, lacking.join("[[keys]]")).unwrap();
    let cfg = root.join("agencies/DE-bka/agency.toml");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "keyring = \"../../keyring.toml\"",
        "keyring = \"keyring.toml\"",
    );
    std::fs::write(&cfg, text).unwrap();

    let sent = reports(3);
    fed.submit_many("NL", &sent).await.unwrap();
    let out = fed.scratch("bka");
    let o = fed.pull("DE-bka", &["--out", out.to_str().unwrap()]);
    assert!(stored_ids(&o).is_empty(), "{}", stdout(&o));
    // Not refused: nothing recorded at the hub, the deliveries stay queued.
    let mut admin = AdminClient::new(fed.channel_as("operators/admin/operator").await.unwrap());
    let stats = admin.stats(pb::StatsRequest {}).await.unwrap().into_inner();
    assert_eq!(stats.deliveries_refused, 0, "{stats:?}");
    // With the keyring brought up to date, they arrive.
    std::fs::write(&own, full).unwrap();
    let o = fed.pull("DE-bka", &["--out", out.to_str().unwrap()]);
    assert_eq!(stored_ids(&o).len(), 3, "{}", stdout(&o));
}
