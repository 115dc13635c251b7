//! Identity comes from certificates only: a node cannot speak for another
//! country, an agency cannot submit, a recipient reads only its own queue,
//! and foreign-CA, revoked and expired certificates get nothing.

use meldnet_proto::v1 as pb;
use meldnet_proto::v1::inbox_client::InboxClient;
use meldnet_proto::v1::submission_client::SubmissionClient;
use meldnet_tests::*;
use std::process::Command;
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn node_cannot_submit_a_report_of_another_country() {
    let fed = Federation::start_default().unwrap();
    let before = fed.state().await.unwrap();
    let mut nl = SubmissionClient::new(fed.channel_as("nodes/NL/node").await.unwrap());
    // Even signed with DE's own key, NL's certificate cannot submit DE's report.
    let sr = sign_proto(&sample_report("DE", "FR").to_proto(), &fed.node_key("DE"));
    let e = nl.submit(sr).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().starts_with("report.origin_country:"),
        "{}",
        e.message()
    );
    assert_eq!(fed.state().await.unwrap().digest, before.digest);
}

#[tokio::test(flavor = "multi_thread")]
async fn agencies_and_operators_cannot_submit() {
    let fed = Federation::start_default().unwrap();
    let before = fed.state().await.unwrap();
    let sr = sign_proto(&sample_report("DE", "FR").to_proto(), &fed.node_key("DE"));
    for stem in ["agencies/DE-bka/agency", "operators/admin/operator"] {
        let mut c = SubmissionClient::new(fed.channel_as(stem).await.unwrap());
        let e = c.submit(sr.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{stem}: {e:?}");
        let batch = tokio_stream::iter(vec![pb::SubmitBatch {
            reports: vec![sr.clone()],
        }]);
        let e = c.submit_stream(batch).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{stem} stream: {e:?}");
    }
    assert_eq!(fed.state().await.unwrap().digest, before.digest);
}

#[tokio::test(flavor = "multi_thread")]
async fn police_read_only_their_own_queue() {
    let fed = Federation::start_default().unwrap();
    let files = fed.scratch("f");
    let a = synthetic_file(&files, "a.png", 5);
    let (de_id, _) = fed
        .report("NL", "https://h.example.de/1", &["--hosting", "DE"], &[&a])
        .unwrap();
    let (fr_id, _) = fed
        .report("NL", "https://h.example.fr/2", &["--hosting", "FR"], &[&a])
        .unwrap();

    // Police DE receives its queue, then acknowledges every sequence number
    // there could be: acknowledgements only ever touch the caller's own queue.
    let mut de = InboxClient::new(fed.channel_as("agencies/DE-bka/agency").await.unwrap());
    let (ack_tx, ack_rx) = tokio::sync::mpsc::channel::<pb::DeliveryAck>(4);
    let mut stream = de
        .receive(tokio_stream::wrappers::ReceiverStream::new(ack_rx))
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    let mut acked_sent = false;
    while let Ok(Some(batch)) = stream.message().await {
        for d in &batch.deliveries {
            let Some(pb::delivery::Content::Routed(routed)) = &d.content else {
                panic!("an agency got a delivery that is not a routed report: {d:?}");
            };
            let r = meldnet_core::Report::decode(&routed.report.as_ref().unwrap().report).unwrap();
            seen.push(r.id.to_string());
        }
        if batch.caught_up && !acked_sent {
            ack_tx
                .send(pb::DeliveryAck {
                    seqs: (0..64).collect(),
                    rejected: vec![],
                })
                .await
                .unwrap();
            acked_sent = true;
        } else if !batch.acked.is_empty() {
            break;
        }
    }
    assert_eq!(seen, [de_id], "police DE sees only the report hosted in DE");

    // Police FR still gets its report: DE's acknowledgements did not touch it.
    let o = fed.pull("FR-police", &["--out", fed.scratch("fr").to_str().unwrap()]);
    let got: Vec<String> = json_lines(&o)
        .iter()
        .filter_map(|l| l["report_id"].as_str().map(String::from))
        .collect();
    assert_eq!(got, [fr_id]);
}

async fn refused_at_handshake(
    fed: &Federation,
    ca: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
) {
    let ch = fed.channel_with(ca, cert, key).await.unwrap();
    let sr = sign_proto(&sample_report("NL", "DE").to_proto(), &fed.node_key("NL"));
    let e = SubmissionClient::new(ch.clone())
        .submit(sr)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e.code(),
            Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
        ),
        "expected a transport failure, got {e:?}"
    );
    let e = InboxClient::new(ch)
        .receive(tokio_stream::iter(Vec::<pb::DeliveryAck>::new()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e.code(),
            Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
        ),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn foreign_revoked_and_expired_certificates_get_nothing() {
    let fed = Federation::start_default().unwrap();
    let files = fed.scratch("f");
    let a = synthetic_file(&files, "a.png", 9);
    fed.report("NL", "https://h.example.de/q", &["--hosting", "DE"], &[&a])
        .unwrap();
    let before = fed.state().await.unwrap();
    let root = fed.root();

    // A certificate of another CA, with an identity that looks right.
    let foreign = fed.scratch("foreign");
    let o = run(Command::new(bin("meldnet-certs"))
        .args(["init", "--dir"])
        .arg(foreign.join("fed"))
        .args([
            "--federation",
            FEDERATION,
            "--nodes",
            "NL",
            "--agencies",
            "DE/bka",
        ]));
    assert!(o.status.success(), "{}", stderr(&o));
    refused_at_handshake(
        &fed,
        &root.join("ca.pem"),
        &foreign.join("fed/agencies/DE-bka/agency.pem"),
        &foreign.join("fed/agencies/DE-bka/agency.key"),
    )
    .await;

    // An expired certificate from the right CA.
    let exp = fed.scratch("expired").join("bka");
    let o = run(Command::new(bin("meldnet-certs"))
        .args(["issue", "--dir"])
        .arg(&root)
        .args([
            "--identity",
            "spiffe://eu.meldnet.test/agency/DE/bka",
            "--expired",
            "--out",
        ])
        .arg(&exp));
    assert!(o.status.success(), "{}", stderr(&o));
    refused_at_handshake(
        &fed,
        &root.join("ca.pem"),
        &exp.with_extension("pem"),
        &exp.with_extension("key"),
    )
    .await;

    // A revoked certificate: the hub picks up the new CRL without a restart.
    let o = run(Command::new(bin("meldnet-certs"))
        .args(["revoke", "--dir"])
        .arg(&root)
        .args(["--identity", "spiffe://eu.meldnet.test/agency/DE/bka"]));
    assert!(o.status.success(), "{}", stderr(&o));
    refused_at_handshake(
        &fed,
        &root.join("ca.pem"),
        &root.join("agencies/DE-bka/agency.pem"),
        &root.join("agencies/DE-bka/agency.key"),
    )
    .await;
    let o = fed.pull("DE-bka", &["--out", fed.scratch("bka").to_str().unwrap()]);
    assert!(!o.status.success(), "a revoked agency must not pull");
    assert!(json_lines(&o).is_empty());

    // Nothing was delivered or changed, and the hub says why it refused.
    assert_eq!(fed.state().await.unwrap().digest, before.digest);
    assert!(
        fed.hub_log().contains("TLS handshake refused"),
        "{}",
        fed.hub_log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_delivery_stream_ends_when_its_certificate_is_revoked() {
    let fed = Federation::start_default().unwrap();
    let mut de = InboxClient::new(fed.channel_as("agencies/DE-bka/agency").await.unwrap());
    let (_ack_tx, ack_rx) = tokio::sync::mpsc::channel::<pb::DeliveryAck>(1);
    let mut stream = de
        .receive(tokio_stream::wrappers::ReceiverStream::new(ack_rx))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(first.caught_up && first.deliveries.is_empty());

    let o = run(Command::new(bin("meldnet-certs"))
        .args(["revoke", "--dir"])
        .arg(fed.root())
        .args(["--identity", "spiffe://eu.meldnet.test/agency/DE/bka"]));
    assert!(o.status.success(), "{}", stderr(&o));
    // A report for police DE arrives: the open stream must not carry it.
    let files = fed.scratch("f");
    let a = synthetic_file(&files, "a.png", 31);
    fed.report("NL", "https://h.example.de/r", &["--hosting", "DE"], &[&a])
        .unwrap();
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
        .await
        .expect("the stream should end, not hang");
    let e = next.expect_err("a revoked recipient must get nothing");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_stream_of_the_same_recipient_replaces_the_first() {
    let fed = Federation::start_default().unwrap();
    let ch = fed.channel_as("agencies/DE-bka/agency").await.unwrap();
    let (_a, rx1) = tokio::sync::mpsc::channel::<pb::DeliveryAck>(1);
    let mut s1 = InboxClient::new(ch.clone())
        .receive(tokio_stream::wrappers::ReceiverStream::new(rx1))
        .await
        .unwrap()
        .into_inner();
    assert!(s1.message().await.unwrap().unwrap().caught_up);
    let (_b, rx2) = tokio::sync::mpsc::channel::<pb::DeliveryAck>(1);
    let mut s2 = InboxClient::new(ch)
        .receive(tokio_stream::wrappers::ReceiverStream::new(rx2))
        .await
        .unwrap()
        .into_inner();
    assert!(s2.message().await.unwrap().unwrap().caught_up);
    let e = tokio::time::timeout(std::time::Duration::from_secs(10), s1.message())
        .await
        .expect("the first stream should end")
        .expect_err("superseded");
    assert_eq!(e.code(), Code::Aborted, "{e:?}");
}

/// Who may call what: every role the federation knows, and parties the CA
/// certified but the hub does not know, against every method the hub
/// serves. Each call sends bytes that are not protobuf: a refused caller
/// gets PERMISSION_DENIED (the role is checked before anything is decoded);
/// an allowed one gets past the check to the decoder (INVALID_ARGUMENT).
#[tokio::test(flavor = "multi_thread")]
async fn every_role_against_every_method() {
    use tonic::Code::*;
    let mut fed = Federation::init_with(
        "NL,DE",
        "DE/bka",
        &["--regulators", "DE/bnetza", "--representatives", "NL/fier"],
    )
    .unwrap();
    fed.start_hub().unwrap();
    let before = fed.state().await.unwrap();
    // Certified by the federation CA, unknown to the hub.
    let ghost_agency = fed
        .issue(
            &format!("spiffe://{FEDERATION}/agency/DE/ghost"),
            "ghost",
            &[],
        )
        .unwrap();
    let ghost_node = fed
        .issue(&format!("spiffe://{FEDERATION}/node/IT"), "node-it", &[])
        .unwrap();
    let root = fed.root();
    let parties: Vec<(&str, std::path::PathBuf)> = vec![
        ("node", root.join("nodes/NL/node")),
        ("agency", root.join("agencies/DE-bka/agency")),
        ("regulator", root.join("regulators/DE-bnetza/agency")),
        (
            "representative",
            root.join("representatives/NL-fier/agency"),
        ),
        ("operator", root.join("operators/admin/operator")),
        ("unregistered agency", ghost_agency),
        ("unregistered node", ghost_node),
    ];
    let recipients = ["node", "agency", "regulator", "representative"];
    let known = ["node", "agency", "regulator", "representative", "operator"];
    // The matrix as the protocol documents it.
    let methods: &[(&'static str, &[&str])] = &[
        ("/meldnet.v1.Submission/Submit", &["node"]),
        ("/meldnet.v1.Submission/SubmitStream", &["node"]),
        ("/meldnet.v1.Inbox/Receive", &recipients),
        ("/meldnet.v1.Cases/RecordStep", &["node"]),
        ("/meldnet.v1.HashList/Sync", &["node"]),
        ("/meldnet.v1.HashList/Contribute", &["node"]),
        ("/meldnet.v1.Series/Register", &["agency"]),
        ("/meldnet.v1.Series/AddHashes", &["agency"]),
        ("/meldnet.v1.Series/Link", &["agency"]),
        ("/meldnet.v1.Series/MarkProceedings", &["agency"]),
        ("/meldnet.v1.Series/SetPreference", &["representative"]),
        ("/meldnet.v1.Series/Linked", &["representative"]),
        ("/meldnet.v1.Admin/StateDigest", &["operator"]),
        ("/meldnet.v1.Admin/VerifyAudit", &["operator"]),
        ("/meldnet.v1.Admin/ListAdd", &["operator"]),
        ("/meldnet.v1.Admin/ListWithdraw", &["operator"]),
        ("/meldnet.v1.Admin/ListStatus", &["operator"]),
        ("/meldnet.v1.Admin/AdvanceClock", &["operator"]),
        ("/meldnet.v1.Admin/GetRules", &["operator"]),
        ("/meldnet.v1.Admin/SetRules", &["operator"]),
        ("/meldnet.v1.Admin/Explain", &["operator"]),
        ("/meldnet.v1.Admin/Stats", &["operator"]),
        ("/meldnet.v1.Admin/ExportStats", &["operator"]),
        ("/meldnet.v1.Admin/Register", &["operator"]),
        ("/meldnet.v1.Admin/Revoke", &["operator"]),
        ("/meldnet.v1.Admin/ListRegistry", &["operator"]),
        ("/grpc.health.v1.Health/Check", &known),
        (
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            &known,
        ),
        (
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            &known,
        ),
    ];
    let wait = std::time::Duration::from_secs(10);
    let mut wrong = Vec::new();
    for (who, stem) in &parties {
        let ch = fed.channel_stem(stem).await.unwrap();
        for (path, allowed) in methods {
            let got = raw_call(ch.clone(), path, vec![vec![0x0f]], wait).await;
            let code = got.as_ref().err().map_or(Ok, |s| s.code());
            let ours = path.starts_with("/meldnet.v1.");
            let fine = if !allowed.contains(who) {
                code == PermissionDenied
            } else if ours {
                code == InvalidArgument
            } else {
                !matches!(code, PermissionDenied | Unauthenticated)
            };
            if !fine {
                wrong.push(format!("{who} {path}: {got:?}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "unexpected answers:\n{}",
        wrong.join("\n")
    );
    // An unknown method is refused, not passed on.
    let ch = fed.channel_as("operators/admin/operator").await.unwrap();
    let e = raw_call(ch, "/meldnet.v1.Admin/Shutdown", vec![vec![]], wait)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Unimplemented, "{e:?}");
    assert_eq!(fed.state().await.unwrap().digest, before.digest);
}

/// A node whose certificate is revoked while its submission stream is open
/// gets nothing more through it: the next batch is refused and not stored.
#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_node_cannot_go_on_submitting_on_an_open_stream() {
    let fed = Federation::start_default().unwrap();
    let mut fr = SubmissionClient::new(fed.channel_as("nodes/FR/node").await.unwrap());
    let key = fed.node_key("FR");
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::SubmitBatch>(4);
    let mut answers = fr
        .submit_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let first = sample_report("FR", "DE");
    tx.send(pb::SubmitBatch {
        reports: vec![sign_proto(&first.to_proto(), &key)],
    })
    .await
    .unwrap();
    let r = answers.message().await.unwrap().unwrap();
    assert!(
        matches!(
            r.results[0].outcome,
            Some(pb::submit_result::Outcome::Receipt(_))
        ),
        "{r:?}"
    );
    let before = fed.state().await.unwrap();

    let o = run(Command::new(bin("meldnet-certs"))
        .args(["revoke", "--dir"])
        .arg(fed.root())
        .args(["--identity", "spiffe://eu.meldnet.test/node/FR"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let second = sample_report("FR", "DE");
    tx.send(pb::SubmitBatch {
        reports: vec![sign_proto(&second.to_proto(), &key)],
    })
    .await
    .unwrap();
    let next = tokio::time::timeout(std::time::Duration::from_secs(15), answers.message())
        .await
        .expect("the stream should answer or end");
    match next {
        Ok(Some(r)) => panic!("a revoked node got an answer: {r:?}"),
        Ok(None) => {}
        Err(e) => assert!(
            matches!(
                e.code(),
                Code::Unauthenticated | Code::Unavailable | Code::Unknown
            ),
            "{e:?}"
        ),
    }
    // Nothing of the second report was stored or routed.
    assert_eq!(fed.state().await.unwrap().digest, before.digest);
    let mut admin = pb::admin_client::AdminClient::new(
        fed.channel_as("operators/admin/operator").await.unwrap(),
    );
    let e = admin
        .explain(pb::ExplainRequest {
            report_id: second.id.to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
}

/// A certificate made here with the federation's CA: `usage` as its key
/// usage and valid until `not_after`.
fn custom_certificate(
    fed: &Federation,
    identity: &str,
    usage: Vec<rcgen::KeyUsagePurpose>,
    not_after: time::OffsetDateTime,
    name: &str,
) -> std::path::PathBuf {
    let root = fed.root();
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(root.join("ca.key")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(
        &std::fs::read_to_string(root.join("ca.pem")).unwrap(),
        ca_key,
    )
    .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, identity);
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    params.not_after = not_after;
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = usage;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.subject_alt_names = vec![rcgen::SanType::URI(identity.try_into().unwrap())];
    let cert = params.signed_by(&key, &issuer).unwrap();
    let stem = fed.scratch("custom").join(name);
    std::fs::write(stem.with_extension("pem"), cert.pem()).unwrap();
    std::fs::write(stem.with_extension("key"), key.serialize_pem()).unwrap();
    stem
}

/// A delivery stream with the certificate at `stem`, past its first
/// (caught up) batch; the sender keeps the stream open.
async fn caught_up_stream(
    fed: &Federation,
    stem: &std::path::Path,
) -> (
    tonic::Streaming<pb::DeliveryBatch>,
    tokio::sync::mpsc::Sender<pb::DeliveryAck>,
) {
    let mut inbox = InboxClient::new(fed.channel_stem(stem).await.unwrap());
    let (keep, rx) = tokio::sync::mpsc::channel::<pb::DeliveryAck>(1);
    let mut s = inbox
        .receive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    assert!(s.message().await.unwrap().unwrap().caught_up);
    (s, keep)
}

/// A key its certificate does not allow to sign speaks for nobody; a
/// certificate that expires while its stream is open loses the stream.
#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_without_signing_usage_or_expiring_mid_stream_gets_nothing() {
    let mut fed = Federation::init("NL,DE", "DE/bka").unwrap();
    fed.add_hub_config("[connections]\nrecheck_s = 1\n")
        .unwrap();
    fed.start_hub().unwrap();
    let bka = format!("spiffe://{FEDERATION}/agency/DE/bka");
    let wait = std::time::Duration::from_secs(10);
    let far = time::OffsetDateTime::now_utc() + time::Duration::days(1);

    let no_sign = custom_certificate(
        &fed,
        &bka,
        vec![rcgen::KeyUsagePurpose::KeyEncipherment],
        far,
        "no-sign",
    );
    let ch = fed.channel_stem(&no_sign).await.unwrap();
    let e = raw_call(ch, "/meldnet.v1.Inbox/Receive", vec![], wait)
        .await
        .unwrap_err();
    // The TLS library accepts it; the hub does not take it as an identity.
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("digitalSignature"), "{e:?}");
    // The same identity with a signing key usage is served.
    let fine = custom_certificate(
        &fed,
        &bka,
        vec![rcgen::KeyUsagePurpose::DigitalSignature],
        far,
        "fine",
    );
    drop(caught_up_stream(&fed, &fine).await);

    // Valid for three more seconds: the open stream ends when it expires.
    let soon = custom_certificate(
        &fed,
        &bka,
        vec![rcgen::KeyUsagePurpose::DigitalSignature],
        time::OffsetDateTime::now_utc() + time::Duration::seconds(3),
        "soon",
    );
    let (mut s, _keep) = caught_up_stream(&fed, &soon).await;
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), s.message())
        .await
        .expect("the stream of an expired certificate must end");
    assert!(!matches!(ended, Ok(Some(_))), "{ended:?}");
    assert!(
        fed.hub_log().contains("no longer valid"),
        "{}",
        fed.hub_log()
    );
}
