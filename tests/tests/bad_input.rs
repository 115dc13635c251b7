//! Bad input gets the right gRPC code, a message naming the field, and
//! leaves the hub's stored state exactly as it was (digest before = after).

use meldnet_core::SigningKey;
use meldnet_proto::v1 as pb;
use meldnet_proto::v1::submission_client::SubmissionClient;
use meldnet_tests::*;
use tonic::transport::Channel;
use tonic::Code;

async fn refused(c: &mut SubmissionClient<Channel>, sr: pb::SignedReport, code: Code, field: &str) {
    let e = c.submit(sr).await.unwrap_err();
    assert_eq!(e.code(), code, "{e:?}");
    assert!(
        e.message().starts_with(&format!("{field}:")),
        "message {:?} should name {field}",
        e.message()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_bad_input_is_refused_naming_the_field_and_changes_nothing() {
    let fed = Federation::start_default().unwrap();
    let mut nl = SubmissionClient::new(fed.channel_as("nodes/NL/node").await.unwrap())
        .max_encoding_message_size(64 * 1024 * 1024);
    let key = fed.node_key("NL");
    // One good report first, so that the state is not empty.
    let good = sample_report("NL", "DE").to_proto();
    let receipt = nl
        .submit(sign_proto(&good, &key))
        .await
        .unwrap()
        .into_inner();
    let before = fed.state().await.unwrap();
    assert_eq!(before.reports, 1);

    // Wrong signature.
    let mut sr = sign_proto(&sample_report("NL", "DE").to_proto(), &key);
    sr.signature[0] ^= 0x40;
    refused(
        &mut nl,
        sr,
        Code::InvalidArgument,
        "signed_report.signature",
    )
    .await;
    // Unknown key.
    let sr = sign_proto(
        &sample_report("NL", "DE").to_proto(),
        &SigningKey::generate(),
    );
    refused(
        &mut nl,
        sr,
        Code::FailedPrecondition,
        "signed_report.key_id",
    )
    .await;
    // Invalid country code.
    let mut r = sample_report("NL", "DE").to_proto();
    r.eu_link.as_mut().unwrap().hosting_country = "XX".into();
    refused(
        &mut nl,
        sign_proto(&r, &key),
        Code::InvalidArgument,
        "report.eu_link.hosting_country",
    )
    .await;
    let mut r = sample_report("NL", "DE").to_proto();
    r.eu_link.as_mut().unwrap().suspect_country = "de".into();
    refused(
        &mut nl,
        sign_proto(&r, &key),
        Code::InvalidArgument,
        "report.eu_link.suspect_country",
    )
    .await;
    // Bad hash hex.
    let mut r = sample_report("NL", "DE").to_proto();
    r.items[0].sha256 = "z".repeat(64);
    refused(
        &mut nl,
        sign_proto(&r, &key),
        Code::InvalidArgument,
        "report.items[0].sha256",
    )
    .await;
    let mut r = sample_report("NL", "DE").to_proto();
    r.items[0].md5 = "abc".into();
    refused(
        &mut nl,
        sign_proto(&r, &key),
        Code::InvalidArgument,
        "report.items[0].md5",
    )
    .await;
    // Malformed bytes.
    let sr = pb::SignedReport {
        report: vec![0xff, 0xff, 0xff],
        ..sign_proto(&good, &key)
    };
    refused(&mut nl, sr, Code::InvalidArgument, "report").await;
    // Oversized: a report larger than the bound, and a URL too long.
    let sr = pb::SignedReport {
        report: vec![0x0a; 300 * 1024],
        signature: vec![0; 64],
        key_id: key.public().id().to_string(),
    };
    refused(&mut nl, sr, Code::InvalidArgument, "signed_report.report").await;
    let mut r = sample_report("NL", "DE").to_proto();
    r.url = format!("https://x.test/{}", "a".repeat(5000));
    refused(
        &mut nl,
        sign_proto(&r, &key),
        Code::InvalidArgument,
        "report.url",
    )
    .await;
    // Too many items.
    let mut r = sample_report("NL", "DE").to_proto();
    r.items = vec![r.items[0].clone(); 1001];
    refused(
        &mut nl,
        sign_proto(&r, &key),
        Code::InvalidArgument,
        "report.items",
    )
    .await;
    // No item at all: nothing assessed, nothing to route on.
    let mut cases: Vec<(pb::Report, &str)> = Vec::new();
    let mut r = sample_report("NL", "DE").to_proto();
    r.items.clear();
    cases.push((r, "report.items"));
    // A URL that shows one address and leads to another.
    for bad in ["\u{202E}", "\u{200B}", "\u{FEFF}", "\u{2066}", "\u{00AD}"] {
        let mut r = sample_report("NL", "DE").to_proto();
        r.url = format!("https://files.example.test/{bad}exe.pdf");
        cases.push((r, "report.url"));
    }
    // Made in the far future, by its time or by its id's.
    let mut r = sample_report("NL", "DE").to_proto();
    r.created_at_ms = i64::MAX;
    cases.push((r, "report.created_at_ms"));
    let mut r = sample_report("NL", "DE").to_proto();
    let mut id = *uuid::Uuid::now_v7().as_bytes();
    // 2^48 - 1 ms: the year 10889.
    id[..6].copy_from_slice(&[0xff; 6]);
    r.id = uuid::Uuid::from_bytes(id).to_string();
    cases.push((r, "report.id"));
    for (r, field) in cases {
        refused(&mut nl, sign_proto(&r, &key), Code::InvalidArgument, field).await;
    }
    // A message larger than the method takes: refused from its length
    // prefix, before it is buffered, naming the method and the limit.
    let sr = pb::SignedReport {
        report: vec![0; 17 * 1024 * 1024],
        signature: vec![0; 64],
        key_id: String::new(),
    };
    let e = nl.submit(sr).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message()
            .starts_with("/meldnet.v1.Submission/Submit: a request message of"),
        "{e:?}"
    );
    // Bytes outside the schema: an unknown field could carry anything.
    let mut bytes = prost::Message::encode_to_vec(&sample_report("NL", "DE").to_proto());
    bytes.extend_from_slice(&[0x9a, 0x06, 0x04, 0xff, 0xd8, 0xff, 0xe0]);
    let sr = pb::SignedReport {
        signature: key.sign(meldnet_core::Context::Report, &bytes).to_vec(),
        key_id: key.public().id().to_string(),
        report: bytes,
    };
    refused(&mut nl, sr, Code::InvalidArgument, "report").await;
    // A URL scheme that carries content instead of a place.
    let mut r = sample_report("NL", "DE").to_proto();
    r.url = "data://image/jpeg;base64,AAAA".into();
    refused(
        &mut nl,
        sign_proto(&r, &key),
        Code::InvalidArgument,
        "report.url",
    )
    .await;
    // Replayed id with different content.
    let mut replay = good.clone();
    replay.url = "https://other.example.test/".into();
    refused(
        &mut nl,
        sign_proto(&replay, &key),
        Code::AlreadyExists,
        "report.id",
    )
    .await;

    assert_eq!(
        fed.state().await.unwrap(),
        before,
        "refusals must leave no trace"
    );

    // Re-sending the same report is safe: the same receipt, nothing stored.
    let again = nl
        .submit(sign_proto(&good, &key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, receipt);
    assert_eq!(fed.state().await.unwrap(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_report_in_a_streamed_batch_is_refused_alone() {
    let fed = Federation::start_default().unwrap();
    let mut nl = SubmissionClient::new(fed.channel_as("nodes/NL/node").await.unwrap());
    let key = fed.node_key("NL");
    let mut bad = sample_report("NL", "DE").to_proto();
    bad.items[0].sha256 = "00".into();
    let reports = vec![
        sign_proto(&sample_report("NL", "DE").to_proto(), &key),
        sign_proto(&bad, &key),
        sign_proto(&sample_report("NL", "FR").to_proto(), &key),
    ];
    let batch = tokio_stream::iter(vec![pb::SubmitBatch { reports }]);
    let mut results = nl.submit_stream(batch).await.unwrap().into_inner();
    let res = results.message().await.unwrap().unwrap();
    assert_eq!(res.results.len(), 3);
    let outcome = |i: usize| res.results[i].outcome.clone().unwrap();
    assert!(matches!(outcome(0), pb::submit_result::Outcome::Receipt(_)));
    match outcome(1) {
        pb::submit_result::Outcome::Refusal(r) => {
            assert_eq!(r.code, Code::InvalidArgument as i32);
            assert!(
                r.message.starts_with("report.items[0].sha256:"),
                "{}",
                r.message
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(matches!(outcome(2), pb::submit_result::Outcome::Receipt(_)));
    assert_eq!(fed.state().await.unwrap().reports, 2);
}
