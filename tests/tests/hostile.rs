//! Hostile input, method by method: bytes that are not protobuf, messages
//! over a method's size, repeated fields of millions of empty entries, an
//! acknowledgement of garbage. Each is refused with INVALID_ARGUMENT naming
//! the method, message or field, leaves the stored state as it was, and
//! costs the hub bounded memory, whoever sends it.

use meldnet_tests::*;
use std::time::Duration;
use tonic::Code;

const OPERATOR: &str = "operators/admin/operator";
const NODE: &str = "nodes/NL/node";
const AGENCY: &str = "agencies/DE-bka/agency";

/// `n` empty entries of field `field` (length-delimited, zero length).
fn empties(field: u8, n: usize) -> Vec<u8> {
    let tag = (field << 3) | 2;
    std::iter::repeat_n([tag, 0u8], n).flatten().collect()
}

/// A valid message of exactly `n` bytes that means nothing: one unknown
/// field 15 (length-delimited) of zeros.
fn padding_exact(n: usize) -> Vec<u8> {
    for payload in (0..n).rev() {
        let mut v = vec![(15 << 3) | 2];
        let mut rest = payload;
        loop {
            let b = (rest & 0x7f) as u8;
            rest >>= 7;
            if rest == 0 {
                v.push(b);
                break;
            }
            v.push(b | 0x80);
        }
        if v.len() + payload == n {
            v.extend(std::iter::repeat_n(0u8, payload));
            return v;
        }
    }
    vec![0; n]
}

struct Row {
    caller: &'static str,
    path: &'static str,
    body: Vec<u8>,
    code: Code,
    /// The refusal's message starts with or contains this.
    names: &'static str,
}

fn row(caller: &'static str, path: &'static str, body: Vec<u8>, names: &'static str) -> Row {
    Row {
        caller,
        path,
        body,
        code: Code::InvalidArgument,
        names,
    }
}

/// Every method with its largest request message, as the hub documents
/// them (`hub::auth::METHODS`), and a caller allowed to call it.
const METHODS: &[(&str, &str, usize)] = &[
    ("/meldnet.v1.Submission/Submit", NODE, 1024 * 1024),
    (
        "/meldnet.v1.Submission/SubmitStream",
        NODE,
        16 * 1024 * 1024,
    ),
    ("/meldnet.v1.Inbox/Receive", AGENCY, 256 * 1024),
    ("/meldnet.v1.Cases/RecordStep", NODE, 16 * 1024),
    ("/meldnet.v1.HashList/Sync", NODE, 1024),
    ("/meldnet.v1.HashList/Contribute", NODE, 2 * 1024 * 1024),
    ("/meldnet.v1.Series/Register", AGENCY, 1024 * 1024),
    ("/meldnet.v1.Series/AddHashes", AGENCY, 1024 * 1024),
    ("/meldnet.v1.Series/Link", AGENCY, 4 * 1024),
    ("/meldnet.v1.Series/MarkProceedings", AGENCY, 4 * 1024),
    (
        "/meldnet.v1.Series/SetPreference",
        "representatives/NL-fier/agency",
        4 * 1024,
    ),
    (
        "/meldnet.v1.Series/Linked",
        "representatives/NL-fier/agency",
        1024,
    ),
    ("/meldnet.v1.Admin/StateDigest", OPERATOR, 1024),
    ("/meldnet.v1.Admin/VerifyAudit", OPERATOR, 1024),
    ("/meldnet.v1.Admin/ListAdd", OPERATOR, 2 * 1024 * 1024),
    ("/meldnet.v1.Admin/ListWithdraw", OPERATOR, 4 * 1024),
    ("/meldnet.v1.Admin/ListStatus", OPERATOR, 1024),
    ("/meldnet.v1.Admin/AdvanceClock", OPERATOR, 1024),
    ("/meldnet.v1.Admin/GetRules", OPERATOR, 1024),
    ("/meldnet.v1.Admin/SetRules", OPERATOR, 1024 * 1024),
    ("/meldnet.v1.Admin/Explain", OPERATOR, 1024),
    ("/meldnet.v1.Admin/Stats", OPERATOR, 1024),
    ("/meldnet.v1.Admin/Register", OPERATOR, 16 * 1024),
    ("/meldnet.v1.Admin/Revoke", OPERATOR, 4 * 1024),
    ("/meldnet.v1.Admin/ListRegistry", OPERATOR, 1024),
];

#[tokio::test(flavor = "multi_thread")]
async fn hostile_input_is_refused_naming_what_and_changes_nothing() {
    let mut fed =
        Federation::init_with("NL,DE", "DE/bka", &["--representatives", "NL/fier"]).unwrap();
    fed.start_hub().unwrap();
    let before = fed.state().await.unwrap();
    let baseline = fed.hub_peak_kib().unwrap();

    let mut rows = Vec::new();
    for &(path, caller, max) in METHODS {
        // Not protobuf at all (a field with wire type 7).
        rows.push(row(caller, path, vec![0x0f], "failed to decode"));
        // One byte over the method's limit, refused from the length prefix.
        rows.push(row(
            caller,
            path,
            padding_exact(max + 1),
            "a request message of",
        ));
    }
    // Repeated fields of empty entries, each just under its method's size
    // limit: millions of entries, refused by count before decoding.
    rows.push(row(
        OPERATOR,
        "/meldnet.v1.Admin/ListAdd",
        empties(1, 1_000_000),
        "list_add_request.entries: more than 4096 entries",
    ));
    rows.push(row(
        NODE,
        "/meldnet.v1.HashList/Contribute",
        empties(1, 1_000_000),
        "list_add_request.entries: more than 4096 entries",
    ));
    rows.push(row(
        NODE,
        "/meldnet.v1.Submission/SubmitStream",
        empties(1, 8_000_000),
        "submit_batch.reports: more than 1024 entries",
    ));
    rows.push(row(
        AGENCY,
        "/meldnet.v1.Series/Register",
        empties(2, 500_000),
        "series_hashes.hashes: more than 4096 entries",
    ));
    rows.push(row(
        OPERATOR,
        "/meldnet.v1.Admin/Register",
        empties(2, 100),
        "registration.signing_keys: more than 8 entries",
    ));
    // Acknowledgements: 5,000 sequence numbers, one field each, and
    // refusals of empty entries.
    let mut seqs = Vec::new();
    for _ in 0..5000 {
        seqs.extend_from_slice(&[0x08, 0x01]);
    }
    rows.push(row(
        AGENCY,
        "/meldnet.v1.Inbox/Receive",
        seqs,
        "delivery_ack.seqs: more than 4096 entries",
    ));
    rows.push(row(
        AGENCY,
        "/meldnet.v1.Inbox/Receive",
        empties(2, 300),
        "delivery_ack.rejected: more than 256 entries",
    ));
    // A refusal without a reason.
    rows.push(row(
        AGENCY,
        "/meldnet.v1.Inbox/Receive",
        vec![0x12, 0x02, 0x08, 0x01],
        "delivery_ack.rejected[0].reason",
    ));

    let wait = Duration::from_secs(60);
    let mut channels = std::collections::HashMap::new();
    let mut wrong = Vec::new();
    for r in &rows {
        let ch = match channels.get(r.caller) {
            Some(c) => c,
            None => {
                let c = fed.channel_as(r.caller).await.unwrap();
                channels.insert(r.caller, c);
                &channels[r.caller]
            }
        };
        let got = raw_call(ch.clone(), r.path, vec![r.body.clone()], wait).await;
        match got {
            Err(s) if s.code() == r.code && s.message().contains(r.names) => {}
            other => wrong.push(format!(
                "{} {} ({} bytes): expected {:?} naming {:?}, got {other:?}",
                r.caller,
                r.path,
                r.body.len(),
                r.code,
                r.names
            )),
        }
    }
    assert!(
        wrong.is_empty(),
        "unexpected answers:\n{}",
        wrong.join("\n")
    );

    // The largest refusals four at a time, from callers of every kind: the
    // hub's memory stays bounded.
    let big: Vec<_> = [
        (OPERATOR, "/meldnet.v1.Admin/ListAdd", empties(1, 1_000_000)),
        (
            NODE,
            "/meldnet.v1.HashList/Contribute",
            empties(1, 1_000_000),
        ),
        (
            NODE,
            "/meldnet.v1.Submission/SubmitStream",
            empties(1, 8_000_000),
        ),
        (AGENCY, "/meldnet.v1.Admin/ListAdd", empties(1, 1_000_000)),
    ]
    .into_iter()
    .collect();
    for _round in 0..3 {
        let mut calls = Vec::new();
        for (caller, path, body) in &big {
            let ch = fed.channel_as(caller).await.unwrap();
            calls.push(tokio::spawn(raw_call(ch, path, vec![body.clone()], wait)));
        }
        for c in calls {
            let e = c.await.unwrap().unwrap_err();
            assert!(
                matches!(e.code(), Code::InvalidArgument | Code::PermissionDenied),
                "{e:?}"
            );
        }
    }
    let peak = fed.hub_peak_kib().unwrap();
    let grown_mib = (peak.saturating_sub(baseline)) / 1024;
    println!(
        "hub peak memory: {} MiB at start, {} MiB after",
        baseline / 1024,
        peak / 1024
    );
    assert!(
        grown_mib < 160,
        "the hub grew by {grown_mib} MiB refusing hostile input"
    );
    assert_eq!(fed.state().await.unwrap().digest, before.digest);
    assert!(fed.hub_log().contains("refused"), "refusals are logged");
}

/// A node that streams batches and never reads the answers holds no place
/// another node's batches need: their work goes on, and others are served.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_never_reads_its_answers_holds_back_no_one_else() {
    use meldnet_proto::v1 as pb;
    let mut fed = Federation::init("NL,DE", "DE/bka,NL/politie").unwrap();
    fed.add_hub_config("[calls]\nmax_stream_batches = 4\n")
        .unwrap();
    fed.start_hub().unwrap();
    let key = fed.node_key("NL");
    let mut open = Vec::new();
    // 3 streams of 8 batches, more than the hub's 4 places (in this test),
    // each answer far larger than what HTTP/2 and the hub buffer, and none
    // of them read.
    for _ in 0..3 {
        let ch = fed.channel_as(NODE).await.unwrap();
        let mut c =
            pb::submission_client::SubmissionClient::new(ch).max_encoding_message_size(usize::MAX);
        let batches: Vec<pb::SubmitBatch> = (0..8)
            .map(|_| pb::SubmitBatch {
                reports: (0..500)
                    .map(|_| {
                        // 50 items: each answer is megabytes of receipts.
                        let mut r = sample_report("NL", "DE");
                        r.items = vec![r.items[0].clone(); 50];
                        sign_proto(&r.to_proto(), &key)
                    })
                    .collect(),
            })
            .collect();
        let answers = c.submit_stream(tokio_stream::iter(batches)).await.unwrap();
        open.push((c, answers));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let de: Vec<_> = (0..10)
        .map(|_| sample_report("DE", "NL").to_proto())
        .collect();
    let done = tokio::time::timeout(Duration::from_secs(60), fed.submit_many("DE", &de))
        .await
        .expect("node DE must be served while NL's answers go unread")
        .unwrap();
    assert_eq!(done.len(), 10);
    drop(open);
}

/// One certificate may hold only so many calls open: idle streams past it
/// are refused, and other parties are served.
#[tokio::test(flavor = "multi_thread")]
async fn a_caller_holds_at_most_its_share_of_open_calls() {
    use meldnet_proto::v1 as pb;
    let mut fed = Federation::init("NL,DE", "DE/bka").unwrap();
    fed.add_hub_config("[calls]\nmax_calls_per_identity = 3\n")
        .unwrap();
    fed.start_hub().unwrap();
    let mut open = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..5 {
        let ch = fed.channel_as(NODE).await.unwrap();
        let mut c = pb::submission_client::SubmissionClient::new(ch);
        let (tx, rx) = tokio::sync::mpsc::channel::<pb::SubmitBatch>(1);
        match c
            .submit_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
        {
            Ok(s) => open.push((c, tx, s)),
            Err(e) => refused.push(e),
        }
    }
    assert_eq!(open.len(), 3, "{refused:?}");
    assert!(refused
        .iter()
        .all(|e| e.code() == Code::ResourceExhausted && e.message().contains("calls open")));
    let de = vec![sample_report("DE", "NL").to_proto()];
    fed.submit_many("DE", &de).await.unwrap();
    drop(open);
}
