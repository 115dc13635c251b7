//! What an operator relies on: gRPC health and reflection over mTLS, the
//! audit chain verifiable while the hub runs and offline, and configuration
//! errors that name the key.

use meldnet_proto::v1 as pb;
use meldnet_tests::*;
use std::process::Command;
use tokio_stream::StreamExt;

#[tokio::test(flavor = "multi_thread")]
async fn health_and_reflection_are_served_over_mtls() {
    let fed = Federation::start_default().unwrap();
    let ch = fed.channel_as("nodes/NL/node").await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    for service in ["", "meldnet.v1.Submission", "meldnet.v1.Inbox"] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service}"
        );
    }
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let mut refl = ServerReflectionClient::new(ch);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let first = resp.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = first.message_response else {
        panic!("unexpected reflection answer {first:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for s in [
        "meldnet.v1.Submission",
        "meldnet.v1.Inbox",
        "meldnet.v1.Admin",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == s), "{s} not in {names:?}");
    }
    // Stock clients that still ask the v1alpha service get the same answer.
    use tonic_reflection::pb::v1alpha as alpha;
    let mut refl = alpha::server_reflection_client::ServerReflectionClient::new(
        fed.channel_as("agencies/DE-bka/agency").await.unwrap(),
    );
    let req = alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut resp = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let first = resp.next().await.unwrap().unwrap();
    let Some(alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        first.message_response
    else {
        panic!("unexpected v1alpha reflection answer {first:?}");
    };
    // Each version names itself among the services.
    let without_reflection = |names: &[String]| -> Vec<String> {
        names
            .iter()
            .filter(|n| !n.starts_with("grpc.reflection."))
            .cloned()
            .collect()
    };
    let alpha_names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(alpha_names
        .iter()
        .any(|n| n == "grpc.reflection.v1alpha.ServerReflection"));
    assert_eq!(without_reflection(&alpha_names), without_reflection(&names));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_chain_records_the_flow_and_verifies_live_and_offline() {
    let mut fed = Federation::start_default().unwrap();
    let files = fed.scratch("f");
    let a = synthetic_file(&files, "a.png", 21);
    fed.report("NL", "https://h.example.de/a", &["--hosting", "DE"], &[&a])
        .unwrap();
    let o = fed.pull("DE-bka", &["--out", fed.scratch("bka").to_str().unwrap()]);
    assert!(o.status.success());
    let ch = fed.channel_as("operators/admin/operator").await.unwrap();
    let mut admin = pb::admin_client::AdminClient::new(ch);
    let v = admin
        .verify_audit(pb::VerifyAuditRequest {})
        .await
        .unwrap()
        .into_inner();
    // submitted, delivered (to police DE), acknowledged.
    assert!(v.records >= 3, "{v:?}");
    // Only operators may use the admin API.
    let mut as_node =
        pb::admin_client::AdminClient::new(fed.channel_as("nodes/NL/node").await.unwrap());
    let e = as_node
        .verify_audit(pb::VerifyAuditRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let e = as_node
        .state_digest(pb::StateDigestRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);

    fed.stop_hub();
    let o = run(Command::new(bin("meldnet-hub"))
        .args(["audit", "verify", "--config"])
        .arg(fed.hub_config()));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("audit chain intact: {} records", v.records)),
        "{}",
        stdout(&o)
    );
}

#[test]
fn config_errors_name_the_key() {
    let fed = Federation::init("NL,DE", "DE/bka").unwrap();
    let original = std::fs::read_to_string(fed.hub_config()).unwrap();
    let cases = [
        (
            original.replace("listen = ", "listen = \"nowhere\"\nx_listen = "),
            "listen",
        ),
        (
            original.replace("agency/DE/bka", "node/DE"),
            "agencies[0].identity",
        ),
        (format!("{original}\nunknown_key = 1\n"), "unknown_key"),
        (
            original.replace(
                "federation = \"eu.meldnet.test\"",
                "federation = \"EU TEST\"",
            ),
            "federation",
        ),
    ];
    for (text, key) in cases {
        std::fs::write(fed.hub_config(), &text).unwrap();
        let o = run(Command::new(bin("meldnet-hub"))
            .args(["check-config", "--config"])
            .arg(fed.hub_config()));
        assert!(!o.status.success(), "accepted a bad config for {key}");
        assert!(
            stderr(&o).contains(key),
            "error should name {key}: {}",
            stderr(&o)
        );
    }
    std::fs::write(fed.hub_config(), &original).unwrap();
    let o = run(Command::new(bin("meldnet-hub"))
        .args(["check-config", "--config"])
        .arg(fed.hub_config()));
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Deadlines are tested by moving the hub's clock: only an operator, only
/// forward, only on a hub configured for it; the move is audited and what
/// the hub decides afterwards carries the new time.
#[tokio::test(flavor = "multi_thread")]
async fn only_an_operator_moves_an_adjustable_clock_forward() {
    let fed = Federation::start_default().unwrap();
    let day = 24 * 3600 * 1000;
    let mut admin = pb::admin_client::AdminClient::new(
        fed.channel_as("operators/admin/operator").await.unwrap(),
    );
    let e = admin
        .advance_clock(pb::AdvanceClockRequest { by_ms: day })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");

    let mut fed = fed;
    fed.stop_hub();
    let cfg = fed.hub_config();
    let text = std::fs::read_to_string(&cfg).unwrap() + "\n[clock]\nadjustable = true\n";
    std::fs::write(&cfg, text).unwrap();
    fed.start_hub().unwrap();
    let mut admin = pb::admin_client::AdminClient::new(
        fed.channel_as("operators/admin/operator").await.unwrap(),
    );
    let mut as_node =
        pb::admin_client::AdminClient::new(fed.channel_as("nodes/NL/node").await.unwrap());
    let e = as_node
        .advance_clock(pb::AdvanceClockRequest { by_ms: day })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    let e = admin
        .advance_clock(pb::AdvanceClockRequest { by_ms: -5 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    let records = |v: pb::VerifyAuditResponse| v.records;
    let audited_before = records(
        admin
            .verify_audit(pb::VerifyAuditRequest {})
            .await
            .unwrap()
            .into_inner(),
    );
    let before = meldnet_core::time::now_ms();
    let now = admin
        .advance_clock(pb::AdvanceClockRequest { by_ms: day })
        .await
        .unwrap()
        .into_inner()
        .now_ms;
    assert!(now >= before + day, "{now} {before}");
    let audited_after = records(
        admin
            .verify_audit(pb::VerifyAuditRequest {})
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!(
        audited_after,
        audited_before + 1,
        "the move is one audit record"
    );

    // A report decided now carries the moved time.
    let dir = fed.scratch("files");
    let f = synthetic_file(&dir, "a.bin", 3);
    let (_, lines) = fed
        .report("NL", "https://e.test/x", &["--hosting", "DE"], &[&f])
        .unwrap();
    assert!(lines.iter().any(|l| l["status"] == "accepted"));
    let pulled = fed.pull("DE-bka", &[]);
    assert!(pulled.status.success(), "{}", stderr(&pulled));
    let shown = json_lines(&fed.agency("DE-bka", "received", &[]));
    let decided = shown[0]["decision"]["decided_at_ms"].as_i64().unwrap();
    assert!(decided >= before + day, "decided at {decided}");

    // The chain holds, offline too.
    fed.stop_hub();
    let o = run(Command::new(bin("meldnet-hub"))
        .args(["audit", "verify", "--config"])
        .arg(fed.hub_config()));
    assert!(o.status.success(), "{}", stderr(&o));
}
