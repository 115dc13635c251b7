//! The registry over real mTLS: an operator rotates a node's signing key
//! and revokes a police agency; both apply at once, are audited and outlive
//! a restart; nobody but an operator may change the registry.

use meldnet_core::SigningKey;
use meldnet_proto::v1 as pb;
use meldnet_tests::*;
use std::process::Command;

const FED: &str = "spiffe://eu.meldnet.test";

async fn submit_signed(
    fed: &Federation,
    signed: pb::SignedReport,
) -> Result<pb::Receipt, tonic::Status> {
    let ch = fed.channel_as("nodes/NL/node").await.unwrap();
    pb::submission_client::SubmissionClient::new(ch)
        .submit(signed)
        .await
        .map(|r| r.into_inner())
}

fn report(n: u8) -> pb::Report {
    let mut r = sample_report("NL", "DE").to_proto();
    r.url = format!("https://registry.example.test/{n}");
    r.items[0].sha256 = meldnet_core::Sha256::of(&[b'g', n]).to_hex();
    r
}

#[tokio::test]
async fn operators_rotate_a_nodes_key_and_revoke_an_agency() {
    let mut fed = Federation::start_default().unwrap();
    let new_key = SigningKey::generate();

    // A key the hub does not know is refused, naming the field.
    let e = submit_signed(&fed, sign_proto(&report(1), &new_key))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("signed_report.key_id"), "{e}");

    // Rotation: the old and the new key, registered by the operator.
    let old = fed.node_key("NL").public().to_hex();
    let o = fed.hub_admin(&[
        "register",
        "--identity",
        &format!("{FED}/node/NL"),
        "--public-key",
        &old,
        "--public-key",
        &new_key.public().to_hex(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        json_lines(&o)[0]["signing_keys"].as_array().unwrap().len(),
        2
    );
    // Recipients verify reports with their own keyring, never with a key the
    // hub vouches for (a hub that is broken into cannot forge a node's
    // report): the new key reaches their keyring.toml too.
    let keyring = fed.root().join("keyring.toml");
    let text = std::fs::read_to_string(&keyring).unwrap();
    std::fs::write(
        &keyring,
        format!(
            "{text}\n[[keys]]\nowner = \"{FED}/node/NL\"\npublic_key = \"{}\"\n",
            new_key.public().to_hex()
        ),
    )
    .unwrap();
    let r = submit_signed(&fed, sign_proto(&report(1), &new_key))
        .await
        .unwrap();
    assert!(r.decision.is_some());
    submit_signed(&fed, sign_proto(&report(2), &fed.node_key("NL")))
        .await
        .unwrap();

    // A malformed key is refused with the field named; nothing changes.
    let o = fed.hub_admin(&[
        "register",
        "--identity",
        &format!("{FED}/node/NL"),
        "--public-key",
        "abc",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("signing_keys[0]"), "{}", stderr(&o));

    // Revocation: police DE get nothing more, and nothing more is routed to them.
    let out = fed.scratch("bka");
    let o = fed.pull("DE-bka", &["--out", out.to_str().unwrap()]);
    assert_eq!(stored_ids(&o).len(), 2, "{}", stderr(&o));
    let o = fed.hub_admin(&[
        "revoke",
        "--identity",
        &format!("{FED}/agency/DE/bka"),
        "--reason",
        "moved to a new certificate",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json_lines(&o)[0]["revoked"], true);
    let o = fed.pull("DE-bka", &["--out", out.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("revoked by an operator"),
        "{}",
        stderr(&o)
    );
    let d = fed.submit_as("NL", &report(3)).await.unwrap();
    let to: Vec<&str> = d.recipients.iter().map(|r| r.identity.as_str()).collect();
    assert!(
        !to.contains(&format!("{FED}/agency/DE/bka").as_str()),
        "{to:?}"
    );
    assert!(
        d.reasons
            .iter()
            .any(|r| r.contains("no police agency of DE is registered")),
        "{:?}",
        d.reasons
    );

    // Only operators change the registry.
    let mut as_node =
        pb::admin_client::AdminClient::new(fed.channel_as("nodes/NL/node").await.unwrap());
    let e = as_node
        .register(pb::Registration {
            identity: format!("{FED}/node/NL"),
            signing_keys: vec![new_key.public().to_hex()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let e = as_node
        .revoke(pb::RevokeRequest {
            identity: format!("{FED}/node/DE"),
            reason: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);

    // Both changes are audited, and outlive a restart.
    fed.stop_hub();
    let o = run(Command::new(bin("meldnet-hub"))
        .args(["audit", "show", "--kind", "setting", "--config"])
        .arg(fed.hub_config()));
    let events = json_lines(&o);
    let subjects: Vec<&str> = events
        .iter()
        .map(|e| e["subject"].as_str().unwrap())
        .collect();
    assert_eq!(
        subjects,
        [
            format!("registry {FED}/node/NL"),
            format!("registry {FED}/agency/DE/bka")
        ]
    );
    assert!(events[1]["detail"]
        .as_str()
        .unwrap()
        .contains("moved to a new certificate"));
    fed.start_hub().unwrap();
    submit_signed(&fed, sign_proto(&report(4), &new_key))
        .await
        .unwrap();
    let o = fed.pull("DE-bka", &["--out", out.to_str().unwrap()]);
    assert!(!o.status.success());
    let o = fed.hub_admin(&["registry"]);
    let bka = json_lines(&o)
        .into_iter()
        .find(|r| r["identity"] == format!("{FED}/agency/DE/bka"))
        .unwrap();
    assert_eq!(bka["revoked"], true);
    assert_eq!(bka["source"], "operator");
}
