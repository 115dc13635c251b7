//! The test vectors of PROTOCOL.md (`proto/vectors/`): made from fixed
//! seeds with the crate's own encoders and signers, so the committed files
//! must come out again byte for byte, and each must verify with the crate's
//! own verifiers (and fail with any one byte changed).
//!
//! `MELDNET_WRITE_VECTORS=1 cargo test -p meldnet-core --test protocol_vectors`
//! writes the files again after a deliberate change of the protocol.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "test code: a failed expectation should panic"
)]

use meldnet_core::CaseStep;
use meldnet_core::Report;
use meldnet_core::{leaf_hash, root_from_path, Tree};
use meldnet_core::{sign_notification, verify_notification};
use meldnet_core::{tree_head, verify_decision, verify_routed};
use meldnet_core::{verify_answer_record, verify_notice, AnswerRecord, Notice};
use meldnet_core::{Context, PublicKey, SigningKey};
use meldnet_core::{KeyEntry, Keyring, KeyringFile};
use meldnet_core::{SpiffeId, TrustDomain};
use meldnet_list::{chain, Change, Head, Tip};
use meldnet_proto::v1 as pb;
use prost::Message;
use serde_json::{json, Value};
use std::path::PathBuf;

const FEDERATION: &str = "vectors.meldnet.test";
/// Test seeds only: never a key of a real federation.
const HUB_SEED: [u8; 32] = [0x11; 32];
const NODE_SEED: [u8; 32] = [0x22; 32];
const REPORT_ID: &str = "0192f1a0-6c00-7000-8000-000000000001";
const CASE_ID: &str = "0192f1a0-6c00-7000-8000-0000000000c1";

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto/vectors")
}

fn key(seed: [u8; 32]) -> SigningKey {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("k");
    std::fs::write(&p, format!("{}\n", hex::encode(seed))).unwrap();
    SigningKey::load(&p).unwrap()
}

fn fed() -> TrustDomain {
    TrustDomain::parse(FEDERATION).unwrap()
}

fn hub_id() -> SpiffeId {
    SpiffeId::hub(&fed())
}

fn node_id() -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://{FEDERATION}/node/NL")).unwrap()
}

fn keyring() -> Keyring {
    Keyring::from_file(
        KeyringFile {
            federation: fed(),
            keys: vec![
                KeyEntry {
                    owner: hub_id(),
                    public_key: key(HUB_SEED).public().to_hex(),
                },
                KeyEntry {
                    owner: node_id(),
                    public_key: key(NODE_SEED).public().to_hex(),
                },
            ],
        },
        "vectors",
    )
    .unwrap()
}

fn signer(id: &SpiffeId, seed: [u8; 32]) -> Value {
    let k = key(seed);
    json!({
        "identity": id.to_string(),
        "seed_hex": hex::encode(seed),
        "public_key_hex": k.public().to_hex(),
        "key_id": k.public().id().to_string(),
    })
}

fn report() -> pb::Report {
    pb::Report {
        id: REPORT_ID.into(),
        origin_country: "NL".into(),
        created_at_ms: 1_730_000_000_000,
        url: "https://files.example.test/a/b".into(),
        eu_link: Some(pb::EuLink {
            hosting_country: "DE".into(),
            ..Default::default()
        }),
        items: vec![pb::Item {
            // SHA-256 and MD5 of the ASCII text "meldnet test vector"; no picture.
            sha256: hex::encode(sha256(b"meldnet test vector")),
            md5: "0123456789abcdef0123456789abcdef".into(),
            pdq: String::new(),
            pdq_quality: 0,
            classification: pb::Classification::Baseline as i32,
            age_group: pb::AgeGroup::Prepubescent as i32,
            media_type: pb::MediaType::Image as i32,
            known: Some(pb::KnownMark {
                known: false,
                list_version: 2,
                ..Default::default()
            }),
        }],
    }
}

fn sha256(b: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(b).to_vec()
}

fn signed_report() -> pb::SignedReport {
    let bytes = report().encode_to_vec();
    let node = key(NODE_SEED);
    pb::SignedReport {
        signature: node.sign(Context::Report, &bytes).to_vec(),
        key_id: node.public().id().to_string(),
        report: bytes,
    }
}

fn report_vector() -> Value {
    let sr = signed_report();
    json!({
        "description": "A node's SignedReport: Ed25519 over \"meldnet.v1.report\\0\" || report.",
        "signer": signer(&node_id(), NODE_SEED),
        "context_prefix_hex": hex::encode(Context::Report.prefix()),
        "report_hex": hex::encode(&sr.report),
        "report_sha256_hex": hex::encode(sha256(&sr.report)),
        "signed_bytes_hex": hex::encode(Context::Report.signed_bytes(&sr.report)),
        "signature_hex": hex::encode(&sr.signature),
        "key_id": sr.key_id,
        "signed_report_hex": hex::encode(sr.encode_to_vec()),
    })
}

/// Five decisions signed as one tree; the vector is the one at leaf 2, the
/// decision on the vector report.
const TREE_SIZE: usize = 5;
const LEAF: usize = 2;

fn decisions() -> Vec<pb::Decision> {
    let sr = signed_report();
    (0..TREE_SIZE)
        .map(|i| {
            if i != LEAF {
                return pb::Decision {
                    report_id: format!("0192f1a0-6c00-7000-8000-00000000000{i}"),
                    origin: node_id().to_string(),
                    decided_at_ms: 1_730_000_001_000,
                    ..Default::default()
                };
            }
            pb::Decision {
                report_id: REPORT_ID.into(),
                report_digest: sha256(&sr.report),
                origin: node_id().to_string(),
                decided_at_ms: 1_730_000_001_000,
                eu_link: true,
                eu_link_facts: vec!["hosting_country DE: member state".into()],
                recipients: vec![
                    pb::Recipient {
                        identity: format!("spiffe://{FEDERATION}/node/DE"),
                        purpose: pb::Purpose::NoticeAndTakedown as i32,
                        reason: "hosted in DE".into(),
                        first: true,
                        rule: "hosting-country".into(),
                    },
                    pb::Recipient {
                        identity: format!("spiffe://{FEDERATION}/agency/DE/bka"),
                        purpose: pb::Purpose::Investigation as i32,
                        reason: "new material hosted in DE".into(),
                        first: true,
                        rule: "police-of-hosting-country".into(),
                    },
                ],
                reasons: vec!["EU link: hosting_country DE".into()],
                items: vec![pb::ItemCheck {
                    index: 0,
                    known: false,
                    list_version: 2,
                    node_said: pb::NodeSaid::New as i32,
                    ..Default::default()
                }],
                rules_version: 1,
                rules: vec![],
                case_ref: Some(pb::CaseRef {
                    case_id: CASE_ID.into(),
                    kind: pb::DecisionKind::Referral as i32,
                    first_report_id: REPORT_ID.into(),
                    matched_by: String::new(),
                    deadline_ms: 1_730_259_201_000,
                    hosting_country: "DE".into(),
                    location: 0,
                }),
                kind: pb::DecisionKind::Referral as i32,
            }
        })
        .collect()
}

fn signed_decision() -> (pb::SignedDecision, Vec<[u8; 32]>, [u8; 32]) {
    let hub = key(HUB_SEED);
    let bytes: Vec<Vec<u8>> = decisions().iter().map(|d| d.encode_to_vec()).collect();
    let leaves: Vec<[u8; 32]> = bytes.iter().map(|b| leaf_hash(b)).collect();
    let tree = Tree::new(leaves.clone());
    let root = tree.root();
    let size = tree.size() as u64;
    let sd = pb::SignedDecision {
        decision: bytes[LEAF].clone(),
        signature: hub
            .sign(Context::DecisionTree, &tree_head(size, &root))
            .to_vec(),
        key_id: hub.public().id().to_string(),
        tree_size: size,
        leaf_index: LEAF as u64,
        audit_path: tree.path(LEAF).iter().map(|h| h.to_vec()).collect(),
    };
    (sd, leaves, root)
}

fn decision_vector() -> Value {
    let (sd, leaves, root) = signed_decision();
    let head = tree_head(sd.tree_size, &root);
    json!({
        "description": "A SignedDecision at leaf 2 of a tree of 5, for the report of report.json. Ed25519 over \"meldnet.v1.decision-tree\\0\" || tree_size (8 bytes, big endian) || root.",
        "signer": signer(&hub_id(), HUB_SEED),
        "context_prefix_hex": hex::encode(Context::DecisionTree.prefix()),
        "decision_hex": hex::encode(&sd.decision),
        "leaf_hash_hex": hex::encode(leaf_hash(&sd.decision)),
        "all_leaf_hashes_hex": leaves.iter().map(hex::encode).collect::<Vec<_>>(),
        "tree_size": sd.tree_size,
        "leaf_index": sd.leaf_index,
        "audit_path_hex": sd.audit_path.iter().map(hex::encode).collect::<Vec<_>>(),
        "root_hex": hex::encode(root),
        "tree_head_hex": hex::encode(&head),
        "signed_bytes_hex": hex::encode(Context::DecisionTree.signed_bytes(&head)),
        "signature_hex": hex::encode(&sd.signature),
        "key_id": sd.key_id,
        "signed_decision_hex": hex::encode(sd.encode_to_vec()),
    })
}

fn list_changes() -> Vec<Vec<u8>> {
    let add = |version: u64, sha256: Vec<u8>, md5: &str| {
        pb::ListChange {
            version,
            change: Some(pb::list_change::Change::Add(pb::ListEntry {
                sha256: hex::encode(sha256),
                md5: md5.into(),
                classification: pb::Classification::Baseline as i32,
                age_group: pb::AgeGroup::Prepubescent as i32,
                media_type: pb::MediaType::Image as i32,
                source_country: "NL".into(),
                ..Default::default()
            })),
        }
        .encode_to_vec()
    };
    vec![
        add(
            1,
            sha256(b"meldnet list entry 1"),
            "00112233445566778899aabbccddeeff",
        ),
        add(2, sha256(b"meldnet list entry 2"), ""),
        pb::ListChange {
            version: 3,
            change: Some(pb::list_change::Change::Withdraw(pb::ListTombstone {
                entry_version: 2,
                reason: "listed in error".into(),
            })),
        }
        .encode_to_vec(),
    ]
}

fn list_head() -> (pb::SignedListHead, Vec<[u8; 32]>) {
    let mut tip = Tip::default();
    let mut digests = Vec::new();
    for bytes in list_changes() {
        let c = Change::decode(&bytes).unwrap();
        assert_eq!(c.encode(), bytes, "the change's one encoding");
        tip = tip.after(&c, &bytes).unwrap();
        digests.push(tip.digest);
    }
    let head = Head {
        tip,
        signed_at_ms: 1_730_000_002_000,
        snapshot: None,
    };
    (head.sign(&key(HUB_SEED)), digests)
}

fn list_head_vector() -> Value {
    let (sh, digests) = list_head();
    json!({
        "description": "Three list changes (two adds, one withdrawal), the running digest after each, and the SignedListHead at version 3. Digest d(0) = 32 zero bytes, d(v) = SHA-256(\"meldnet.v1.list-change\\0\" || d(v-1) || change v). Ed25519 over \"meldnet.v1.list-head\\0\" || head.",
        "signer": signer(&hub_id(), HUB_SEED),
        "change_prefix_hex": hex::encode(b"meldnet.v1.list-change\0"),
        "context_prefix_hex": hex::encode(Context::ListHead.prefix()),
        "changes_hex": list_changes().iter().map(hex::encode).collect::<Vec<_>>(),
        "digests_hex": digests.iter().map(hex::encode).collect::<Vec<_>>(),
        "head_hex": hex::encode(&sh.head),
        "signed_bytes_hex": hex::encode(Context::ListHead.signed_bytes(&sh.head)),
        "signature_hex": hex::encode(&sh.signature),
        "key_id": sh.key_id,
        "signed_list_head_hex": hex::encode(sh.encode_to_vec()),
    })
}

fn notification() -> pb::SignedNotification {
    let n = pb::Notification {
        notification_id: "0192f1a0-6c00-7000-8000-0000000000a1".into(),
        series_id: "6f1c2e3a-4b5d-4e6f-8a7b-9c0d1e2f3a4b".into(),
        representative: format!("spiffe://{FEDERATION}/representative/DE/victim-support"),
        made_at_ms: 1_730_000_003_000,
        body: Some(pb::notification::Body::Proceedings(pb::Proceedings {
            case_id: CASE_ID.into(),
            agency: format!("spiffe://{FEDERATION}/agency/DE/bka"),
            marked_at_ms: 1_730_000_002_500,
        })),
    };
    sign_notification(&key(HUB_SEED), &n)
}

fn notification_vector() -> Value {
    let sn = notification();
    json!({
        "description": "A SignedNotification (legal proceedings) for a victims' representative. Ed25519 over \"meldnet.v1.notification\\0\" || notification.",
        "signer": signer(&hub_id(), HUB_SEED),
        "context_prefix_hex": hex::encode(Context::Notification.prefix()),
        "notification_hex": hex::encode(&sn.notification),
        "signed_bytes_hex": hex::encode(Context::Notification.signed_bytes(&sn.notification)),
        "signature_hex": hex::encode(&sn.signature),
        "key_id": sn.key_id,
        "signed_notification_hex": hex::encode(sn.encode_to_vec()),
    })
}

fn case_step() -> pb::SignedCaseStep {
    let raw = pb::CaseStep {
        step_id: "0192f1a0-6c00-7000-8000-0000000000d1".into(),
        case_id: CASE_ID.into(),
        country: "NL".into(),
        kind: pb::StepKind::NoticeSent as i32,
        at_ms: 1_730_000_004_000,
        provider: Some(pb::HostingProvider {
            name: "Example Hosting".into(),
            asn: 64_500,
        }),
        location: 1,
        reason: String::new(),
    };
    CaseStep::decode(&raw.encode_to_vec())
        .unwrap()
        .sign(&key(NODE_SEED))
}

fn case_step_vector() -> Value {
    let ss = case_step();
    json!({
        "description": "A node's SignedCaseStep (notice sent, at location 1 of the case). Ed25519 over \"meldnet.v1.case-step\\0\" || step.",
        "signer": signer(&node_id(), NODE_SEED),
        "context_prefix_hex": hex::encode(Context::CaseStep.prefix()),
        "step_hex": hex::encode(&ss.step),
        "signed_bytes_hex": hex::encode(Context::CaseStep.signed_bytes(&ss.step)),
        "signature_hex": hex::encode(&ss.signature),
        "key_id": ss.key_id,
        "signed_case_step_hex": hex::encode(ss.encode_to_vec()),
    })
}

const NOTICE_ID: &str = "0192f1a0-6c00-7000-8000-0000000000e1";

fn notice() -> pb::SignedNotice {
    let raw = pb::Notice {
        notice_id: NOTICE_ID.into(),
        case_id: CASE_ID.into(),
        location: 1,
        url: "https://files.example.nl/a/1.jpg".into(),
        hotline: node_id().to_string(),
        country: "NL".into(),
        provider: Some(pb::NoticeProvider {
            name: "example-hosting".into(),
            asn: 64_500,
            identity: format!("spiffe://{FEDERATION}/provider/NL/example-hosting"),
        }),
        legal_ground: pb::LegalGround::Baseline as i32,
        actions: vec![
            pb::NoticeAction::Remove as i32,
            pb::NoticeAction::Preserve as i32,
        ],
        sent_at_ms: 1_730_000_005_000,
        deadline_ms: 1_730_086_405_000,
        items: vec![pb::NoticeItem {
            sha256: hex::encode(sha256(b"item 0")),
            md5: "0123456789abcdef0123456789abcdef".into(),
            pdq: String::new(),
        }],
        attempt: 1,
        report_id: REPORT_ID.into(),
    };
    Notice::decode(&raw.encode_to_vec())
        .unwrap()
        .sign(&key(NODE_SEED))
}

fn notice_vector() -> Value {
    let sn = notice();
    json!({
        "description": "A node's SignedNotice to a hosting provider of its country (first attempt, location 1 of the case). Ed25519 over \"meldnet.v1.notice\\0\" || notice.",
        "signer": signer(&node_id(), NODE_SEED),
        "context_prefix_hex": hex::encode(Context::Notice.prefix()),
        "notice_hex": hex::encode(&sn.notice),
        "signed_bytes_hex": hex::encode(Context::Notice.signed_bytes(&sn.notice)),
        "signature_hex": hex::encode(&sn.signature),
        "key_id": sn.key_id,
        "signed_notice_hex": hex::encode(sn.encode_to_vec()),
    })
}

fn answer_record() -> pb::SignedAnswerRecord {
    let raw = pb::AnswerRecord {
        answer: Some(pb::NoticeAnswer {
            notice_id: NOTICE_ID.into(),
            kind: pb::AnswerKind::Refused as i32,
            at_ms: 0,
            reason: pb::RefusalReason::LegalDispute as i32,
            detail: "the customer went to court".into(),
            answer_id: "0192f1a0-6c00-7000-8000-0000000000f1".into(),
        }),
        provider: format!("spiffe://{FEDERATION}/provider/NL/example-hosting"),
        received_at_ms: 1_730_000_006_000,
        recorded_by: node_id().to_string(),
    };
    AnswerRecord::decode(&raw.encode_to_vec())
        .unwrap()
        .sign(&key(NODE_SEED))
}

fn answer_vector() -> Value {
    let sr = answer_record();
    json!({
        "description": "A provider's answer (refused, legal dispute) as its node recorded and signed it on receipt: SignedAnswerRecord. Ed25519 over \"meldnet.v1.notice-answer\\0\" || answer_record.",
        "signer": signer(&node_id(), NODE_SEED),
        "context_prefix_hex": hex::encode(Context::NoticeAnswer.prefix()),
        "answer_record_hex": hex::encode(&sr.answer_record),
        "signed_bytes_hex": hex::encode(Context::NoticeAnswer.signed_bytes(&sr.answer_record)),
        "signature_hex": hex::encode(&sr.signature),
        "key_id": sr.key_id,
        "signed_answer_record_hex": hex::encode(sr.encode_to_vec()),
    })
}

fn stats_export() -> pb::SignedStatsExport {
    let stats = pb::StatsResponse {
        by_origin: vec![pb::CountryCount {
            country: "NL".into(),
            reports: 3,
        }],
        by_hosting: vec![pb::CountryCount {
            country: "DE".into(),
            reports: 3,
        }],
        cases: 3,
        deadlines_missed: 1,
        providers: vec![pb::ProviderStats {
            name: "example-hosting".into(),
            asn: 64_500,
            notices: 3,
            removed: 2,
            not_removed: 1,
            deadlines_missed: 1,
            median_removal_ms: 3_600_000,
            p90_removal_ms: 7_200_000,
            answered_in_time: 3,
            removed_in_time: 2,
            reappearances: 0,
            refused: 1,
        }],
        ..Default::default()
    };
    meldnet_core::sign_stats_export(&key(HUB_SEED), &hub_id(), stats, 1_730_000_007_000)
}

fn stats_export_vector() -> Value {
    let se = stats_export();
    json!({
        "description": "The hub's statistics at one moment, signed: SignedStatsExport, what a regulator cites. Ed25519 over \"meldnet.v1.stats-export\\0\" || stats_export.",
        "signer": signer(&hub_id(), HUB_SEED),
        "context_prefix_hex": hex::encode(Context::StatsExport.prefix()),
        "stats_export_hex": hex::encode(&se.stats_export),
        "signed_bytes_hex": hex::encode(Context::StatsExport.signed_bytes(&se.stats_export)),
        "signature_hex": hex::encode(&se.signature),
        "key_id": se.key_id,
        "signed_stats_export_hex": hex::encode(se.encode_to_vec()),
    })
}

/// The little-endian bytes of the group order L.
const ORDER_L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
const EDGE_MESSAGE: &[u8] = b"meldnet edge case";

/// A signature by the node's key whose R has a component of order 8: the
/// cofactored rule accepts it, a cofactorless verifier does not.
fn torsion_signature() -> [u8; 64] {
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
    use curve25519_dalek::scalar::Scalar;
    use sha2::Digest;
    let dalek = ed25519_dalek::SigningKey::from_bytes(&NODE_SEED);
    let a = dalek.to_scalar();
    let r =
        Scalar::from_bytes_mod_order_wide(&sha2::Sha512::digest(b"meldnet torsion vector").into());
    let big_r = (r * ED25519_BASEPOINT_POINT + EIGHT_TORSION[1]).compress();
    let mut h = sha2::Sha512::new();
    h.update(big_r.as_bytes());
    h.update(dalek.verifying_key().as_bytes());
    h.update(Context::Report.prefix());
    h.update(EDGE_MESSAGE);
    let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
    let s = r + k * a;
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(big_r.as_bytes());
    sig[32..].copy_from_slice(s.as_bytes());
    sig
}

/// An honest signature with s + L in place of s (same value mod L).
fn unreduced_signature() -> [u8; 64] {
    let mut sig = key(NODE_SEED).sign(Context::Report, EDGE_MESSAGE);
    let mut carry = 0u16;
    for (b, l) in sig[32..].iter_mut().zip(ORDER_L) {
        let t = u16::from(*b) + u16::from(l) + carry;
        *b = t as u8;
        carry = t >> 8;
    }
    sig
}

fn edge_vector() -> Value {
    let node = key(NODE_SEED);
    let honest = node.sign(Context::Report, EDGE_MESSAGE);
    let signed = |sig: &[u8]| {
        json!({
            "signature_hex": hex::encode(sig),
        })
    };
    let mut torsion = signed(&torsion_signature());
    torsion["meldnet"] = "accept".into();
    torsion["cofactorless"] = "reject".into();
    torsion["why"] =
        "R = r*B + T with T of order 8: [8][s]B = [8]R + [8][k]A holds, [s]B = R + [k]A does not"
            .into();
    let mut unreduced = signed(&unreduced_signature());
    unreduced["meldnet"] = "reject".into();
    unreduced["cofactorless"] = "reject".into();
    unreduced["why"] = "s is not below the group order L (it is the honest s + L)".into();
    let mut plain = signed(&honest);
    plain["meldnet"] = "accept".into();
    plain["cofactorless"] = "accept".into();
    plain["why"] = "an honest RFC 8032 signature".into();
    json!({
        "description": "Edge cases of the verification rule (PROTOCOL.md 5.2), all over \"meldnet.v1.report\\0\" || message with the node's key, and public keys meldnet refuses.",
        "signer": signer(&node_id(), NODE_SEED),
        "context_prefix_hex": hex::encode(Context::Report.prefix()),
        "key_id": node.public().id().to_string(),
        "message_hex": hex::encode(EDGE_MESSAGE),
        "signed_bytes_hex": hex::encode(Context::Report.signed_bytes(EDGE_MESSAGE)),
        "signatures": {
            "honest": plain,
            "torsion_in_r": torsion,
            "s_not_reduced": unreduced,
        },
        "refused_public_keys_hex": {
            "identity (order 1)": "0100000000000000000000000000000000000000000000000000000000000000",
            "order 2": "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "order 4": "0000000000000000000000000000000000000000000000000000000000000000",
            "order 8": hex::encode(curve25519_dalek::constants::EIGHT_TORSION[1].compress().as_bytes()),
        },
    })
}

fn keyring_text() -> String {
    format!(
        "# The keyring of the test vectors (seeds in the JSON files; test only).\n\n\
         federation = \"{FEDERATION}\"\n\n\
         [[keys]]\nowner = \"{}\"\npublic_key = \"{}\"\n\n\
         [[keys]]\nowner = \"{}\"\npublic_key = \"{}\"\n",
        hub_id(),
        key(HUB_SEED).public().to_hex(),
        node_id(),
        key(NODE_SEED).public().to_hex(),
    )
}

/// The value with every object's keys in sorted order, whichever map
/// serde_json is built with (a workspace could turn on `preserve_order`).
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

fn files() -> Vec<(&'static str, String)> {
    let text = |v: Value| serde_json::to_string_pretty(&sorted(v)).unwrap() + "\n";
    vec![
        ("report.json", text(report_vector())),
        ("decision.json", text(decision_vector())),
        ("list_head.json", text(list_head_vector())),
        ("notification.json", text(notification_vector())),
        ("case_step.json", text(case_step_vector())),
        ("notice.json", text(notice_vector())),
        ("notice_answer.json", text(answer_vector())),
        ("stats_export.json", text(stats_export_vector())),
        ("edge_cases.json", text(edge_vector())),
        ("keyring.toml", keyring_text()),
    ]
}

#[test]
fn the_committed_vectors_are_made_again_byte_for_byte() {
    let write = writing();
    if write {
        std::fs::create_dir_all(dir()).unwrap();
    }
    for (name, text) in files() {
        let path = dir().join(name);
        if write {
            std::fs::write(&path, &text).unwrap();
        }
        let committed =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            committed == text,
            "{name} differs from what the code makes; run with MELDNET_WRITE_VECTORS=1 only after a deliberate protocol change"
        );
    }
}

fn writing() -> bool {
    std::env::var_os("MELDNET_WRITE_VECTORS").is_some_and(|v| v == "1")
}

/// A committed vector; while the files are being written, the one being
/// written (the tests run at once).
fn load(name: &str) -> Value {
    let text = if writing() {
        files().into_iter().find(|(n, _)| *n == name).unwrap().1
    } else {
        std::fs::read_to_string(dir().join(name)).unwrap()
    };
    serde_json::from_str(&text).unwrap()
}

fn bytes(v: &Value, field: &str) -> Vec<u8> {
    hex::decode(v[field].as_str().unwrap_or_else(|| panic!("{field}"))).unwrap()
}

fn flipped(b: &[u8], i: usize) -> Vec<u8> {
    let mut b = b.to_vec();
    let at = i % b.len();
    b[at] ^= 0x01;
    b
}

fn public(v: &Value) -> PublicKey {
    let k = PublicKey::from_hex(v["signer"]["public_key_hex"].as_str().unwrap(), "key").unwrap();
    assert_eq!(v["signer"]["key_id"], v["key_id"]);
    assert_eq!(k.id().to_string(), v["key_id"].as_str().unwrap());
    k
}

/// Checks `signed_bytes_hex` = prefix || message and the signature over it,
/// and that one changed byte anywhere (message or signature) fails.
fn check_signature(v: &Value, context: Context, message_field: &str) {
    let key = public(v);
    let message = bytes(v, message_field);
    let sig = bytes(v, "signature_hex");
    assert_eq!(bytes(v, "context_prefix_hex"), context.prefix());
    assert_eq!(bytes(v, "signed_bytes_hex"), context.signed_bytes(&message));
    key.verify(context, &message, &sig).unwrap();
    for i in [0, 7, message.len() / 2, message.len() - 1] {
        assert!(key.verify(context, &flipped(&message, i), &sig).is_err());
    }
    for i in [0, 31, 32, 63] {
        assert!(key.verify(context, &message, &flipped(&sig, i)).is_err());
    }
}

#[test]
fn the_report_vector_verifies() {
    let v = load("report.json");
    check_signature(&v, Context::Report, "report_hex");
    let report = bytes(&v, "report_hex");
    Report::decode(&report).unwrap();
    let sr = pb::SignedReport::decode(bytes(&v, "signed_report_hex").as_slice()).unwrap();
    assert_eq!(sr.report, report);
    assert_eq!(bytes(&v, "report_sha256_hex"), sha256(&report));
}

#[test]
fn the_decision_vector_verifies_with_its_report() {
    let v = load("decision.json");
    check_signature(&v, Context::DecisionTree, "tree_head_hex");
    let keyring = keyring();
    let sd = pb::SignedDecision::decode(bytes(&v, "signed_decision_hex").as_slice()).unwrap();
    assert_eq!(sd.decision, bytes(&v, "decision_hex"));
    // The root from the leaf and its path, as a verifier rebuilds it.
    let path: Vec<[u8; 32]> = sd
        .audit_path
        .iter()
        .map(|p| p.as_slice().try_into().unwrap())
        .collect();
    let leaf = leaf_hash(&sd.decision);
    assert_eq!(leaf.to_vec(), bytes(&v, "leaf_hash_hex"));
    let root = root_from_path(leaf, sd.leaf_index, sd.tree_size, &path).unwrap();
    assert_eq!(root.to_vec(), bytes(&v, "root_hex"));
    assert_eq!(
        tree_head(sd.tree_size, &root),
        bytes(&v, "tree_head_hex").as_slice()
    );
    verify_decision(&sd, &keyring).unwrap();
    let r = load("report.json");
    let sr = pb::SignedReport::decode(bytes(&r, "signed_report_hex").as_slice()).unwrap();
    let verified = verify_routed(sr.clone(), sd.clone(), &keyring).unwrap();
    assert_eq!(verified.report.id.to_string(), REPORT_ID);
    // Any changed byte of the decision, a path hash or the signature fails,
    // as do another position and another size.
    for i in [0, sd.decision.len() / 2, sd.decision.len() - 1] {
        let mut bad = sd.clone();
        bad.decision = flipped(&sd.decision, i);
        assert!(verify_decision(&bad, &keyring).is_err());
    }
    for j in 0..sd.audit_path.len() {
        let mut bad = sd.clone();
        bad.audit_path[j] = flipped(&sd.audit_path[j], j * 5);
        assert!(verify_decision(&bad, &keyring).is_err());
    }
    for i in [0, 40, 63] {
        let mut bad = sd.clone();
        bad.signature = flipped(&sd.signature, i);
        assert!(verify_decision(&bad, &keyring).is_err());
    }
    let mut bad = sd.clone();
    bad.leaf_index += 1;
    assert!(verify_decision(&bad, &keyring).is_err());
    let mut bad = sd.clone();
    bad.tree_size += 1;
    assert!(verify_decision(&bad, &keyring).is_err());
    // The decision binds the exact report bytes.
    let mut other = sr;
    other.report = flipped(&other.report, 3);
    assert!(verify_routed(other, sd, &keyring).is_err());
}

#[test]
fn the_list_head_vector_verifies_and_its_digests_chain() {
    let v = load("list_head.json");
    check_signature(&v, Context::ListHead, "head_hex");
    let changes: Vec<Vec<u8>> = v["changes_hex"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| hex::decode(c.as_str().unwrap()).unwrap())
        .collect();
    let mut d = [0u8; 32];
    for (i, c) in changes.iter().enumerate() {
        d = chain(&d, c);
        assert_eq!(
            hex::encode(d),
            v["digests_hex"][i].as_str().unwrap(),
            "d({})",
            i + 1
        );
    }
    let keyring = keyring();
    let sh = pb::SignedListHead::decode(bytes(&v, "signed_list_head_hex").as_slice()).unwrap();
    let head = Head::verify(&sh, |id| keyring.get(&hub_id(), id)).unwrap();
    assert_eq!(head.tip.digest, d);
    assert_eq!(head.tip.version, 3);
    assert_eq!(head.tip.count, 1);
    let mut bad = sh.clone();
    bad.head = flipped(&sh.head, 2);
    assert!(Head::verify(&bad, |id| keyring.get(&hub_id(), id)).is_err());
    // A changed change gives another digest than the head's.
    let changed = chain(&[0; 32], &flipped(&changes[0], 5));
    assert_ne!(changed, chain(&[0; 32], &changes[0]));
}

#[test]
fn the_notification_vector_verifies() {
    let v = load("notification.json");
    check_signature(&v, Context::Notification, "notification_hex");
    let keyring = keyring();
    let sn =
        pb::SignedNotification::decode(bytes(&v, "signed_notification_hex").as_slice()).unwrap();
    verify_notification(&sn, &keyring).unwrap();
    let mut bad = sn.clone();
    bad.notification = flipped(&sn.notification, 9);
    assert!(verify_notification(&bad, &keyring).is_err());
}

#[test]
fn the_case_step_vector_verifies() {
    let v = load("case_step.json");
    check_signature(&v, Context::CaseStep, "step_hex");
    CaseStep::decode(&bytes(&v, "step_hex")).unwrap();
}

#[test]
fn the_notice_vectors_verify_offline_and_a_changed_byte_does_not() {
    let keyring = keyring();
    let v = load("notice.json");
    check_signature(&v, Context::Notice, "notice_hex");
    let sn = pb::SignedNotice::decode(bytes(&v, "signed_notice_hex").as_slice()).unwrap();
    let n = verify_notice(&sn, &keyring).unwrap();
    assert_eq!(n.notice_id.to_string(), NOTICE_ID);
    let mut bad = sn.clone();
    bad.notice = flipped(&sn.notice, 11);
    assert!(verify_notice(&bad, &keyring).is_err());
    let v = load("notice_answer.json");
    check_signature(&v, Context::NoticeAnswer, "answer_record_hex");
    let sr =
        pb::SignedAnswerRecord::decode(bytes(&v, "signed_answer_record_hex").as_slice()).unwrap();
    let r = verify_answer_record(&sr, &keyring).unwrap();
    assert_eq!(r.answer.notice_id.to_string(), NOTICE_ID);
    let mut bad = sr.clone();
    bad.answer_record = flipped(&sr.answer_record, 5);
    assert!(verify_answer_record(&bad, &keyring).is_err());
}

#[test]
fn the_stats_export_vector_verifies_with_the_hubs_key() {
    let keyring = keyring();
    let v = load("stats_export.json");
    check_signature(&v, Context::StatsExport, "stats_export_hex");
    let se =
        pb::SignedStatsExport::decode(bytes(&v, "signed_stats_export_hex").as_slice()).unwrap();
    let e = meldnet_core::verify_stats_export(&se, &keyring).unwrap();
    assert_eq!(e.made_at_ms, 1_730_000_007_000);
    assert_eq!(e.stats.unwrap().providers[0].answered_in_time, 3);
    let mut bad = se.clone();
    bad.stats_export = flipped(&se.stats_export, 3);
    assert!(meldnet_core::verify_stats_export(&bad, &keyring).is_err());
}

#[test]
fn a_signature_of_one_kind_is_not_one_of_another() {
    let v = load("report.json");
    let key = public(&v);
    let sig = bytes(&v, "signature_hex");
    let report = bytes(&v, "report_hex");
    for c in [
        Context::DecisionTree,
        Context::ListHead,
        Context::CaseStep,
        Context::Notification,
        Context::Notice,
        Context::NoticeAnswer,
        Context::StatsExport,
    ] {
        assert!(key.verify(c, &report, &sig).is_err());
    }
}

#[test]
fn the_keyring_vector_loads() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("keyring.toml");
    let text = files()
        .into_iter()
        .find(|(n, _)| *n == "keyring.toml")
        .unwrap()
        .1;
    if !writing() {
        assert_eq!(
            std::fs::read_to_string(dir().join("keyring.toml")).unwrap(),
            text
        );
    }
    std::fs::write(&p, text).unwrap();
    let k = Keyring::load(&p).unwrap();
    assert_eq!(k.keys_of(&hub_id()), vec![key(HUB_SEED).public()]);
}

#[test]
fn the_edge_cases_fall_as_the_vector_says() {
    let v = load("edge_cases.json");
    let key = public(&v);
    let message = bytes(&v, "message_hex");
    assert_eq!(message, EDGE_MESSAGE);
    assert_eq!(
        bytes(&v, "signed_bytes_hex"),
        Context::Report.signed_bytes(&message)
    );
    use ed25519_dalek::Verifier as _;
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&key.verifying_key().to_bytes()).unwrap();
    for (name, case) in v["signatures"].as_object().unwrap() {
        let sig = bytes(case, "signature_hex");
        let ours = key.verify(Context::Report, &message, &sig).is_ok();
        assert_eq!(ours, case["meldnet"] == "accept", "{name}");
        // In a batch with an honest one, the same verdict.
        let honest: [u8; 64] = bytes(&v["signatures"]["honest"], "signature_hex")
            .try_into()
            .unwrap();
        let sig64: [u8; 64] = sig.as_slice().try_into().unwrap();
        let items = [
            meldnet_core::BatchItem {
                key: &key,
                context: Context::Report,
                message: &message,
                signature: &honest,
            },
            meldnet_core::BatchItem {
                key: &key,
                context: Context::Report,
                message: &message,
                signature: &sig64,
            },
        ];
        assert_eq!(meldnet_core::verify_batch(&items), ours, "{name}");
        // dalek's cofactorless check stands for the usual libraries.
        let cofactorless = vk
            .verify(
                &Context::Report.signed_bytes(&message),
                &ed25519_dalek::Signature::from_bytes(&sig64),
            )
            .is_ok();
        assert_eq!(cofactorless, case["cofactorless"] == "accept", "{name}");
    }
    for (name, k) in v["refused_public_keys_hex"].as_object().unwrap() {
        assert!(
            PublicKey::from_hex(k.as_str().unwrap(), "key").is_err(),
            "{name}"
        );
    }
}
