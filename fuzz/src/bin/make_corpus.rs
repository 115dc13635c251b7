//! Writes the seed corpus of every fuzz target: small valid inputs made
//! with the project's own types, signed with the fuzz federation's fixed
//! keys (`meldnet_fuzz::federation`) and written by the project's own
//! writers. Pictures are made-up noise, a few KB each. The output is the
//! same on every run, so the committed corpus can be made again:
//! `scripts/fuzz.sh --make-corpus` (or `make_corpus <folder>`).
//!
//! Not a fuzz target: it has no `fuzz!` and scripts/fuzz.sh never runs it
//! under afl-fuzz.

use image::{DynamicImage, ImageFormat, RgbImage};
use meldnet_core::sign_decisions;
use meldnet_core::sign_notification;
use meldnet_core::Context;
use meldnet_core::Sha256;
use meldnet_core::{Report, ReportId};
use meldnet_fuzz::{federation, Federation};
use meldnet_list::Change;
use meldnet_proto::v1 as pb;
use meldnet_recipient::{Checked, Stored};
use meldnet_recipient::{DeliveryLog, LOG_FILE};
use prost::Message;
use std::io::Cursor;
use std::path::{Path, PathBuf};

const REPORT_ID: &str = "01890a5d-ac96-7bb1-9c4e-6f2a3b4c5d6e";
const REPORT_ID_2: &str = "01890a5d-b000-7000-8000-000000000002";
const CASE_ID: &str = "01890a5e-0000-7abc-8def-0123456789ab";
const STEP_ID: &str = "01890a5f-1111-7222-8333-444455556666";
const SERIES_ID: &str = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";
const NOTIFICATION_ID: &str = "01890a60-aaaa-7bbb-8ccc-ddddeeeeffff";
const AT_MS: i64 = 1_688_000_000_000;
const NOTICE_ID: &str = "01890a61-cccc-7ddd-8eee-ffff00001111";

struct Out {
    root: PathBuf,
    files: usize,
    bytes: usize,
}

impl Out {
    fn put(&mut self, target: &str, name: &str, bytes: &[u8]) {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).expect("corpus folder");
        std::fs::write(dir.join(name), bytes).expect("corpus file");
        self.files += 1;
        self.bytes += bytes.len();
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn item(seed: u8, pdq: bool, known: bool) -> pb::Item {
    pb::Item {
        sha256: hex(&Sha256::of(&[seed]).0),
        md5: hex(&[seed; 16]),
        pdq: if pdq {
            hex(&[seed ^ 0x5a; 32])
        } else {
            String::new()
        },
        pdq_quality: if pdq { 90 } else { 0 },
        classification: pb::Classification::Baseline as i32,
        age_group: pb::AgeGroup::Prepubescent as i32,
        media_type: if pdq {
            pb::MediaType::Image as i32
        } else {
            pb::MediaType::Video as i32
        },
        known: known.then(|| pb::KnownMark {
            known: true,
            entry_version: 7,
            kind: pb::MatchKind::Sha256 as i32,
            distance: 0,
            list_version: 9,
        }),
    }
}

fn reports() -> Vec<pb::Report> {
    vec![
        pb::Report {
            id: REPORT_ID.into(),
            origin_country: "NL".into(),
            created_at_ms: AT_MS,
            url: "https://files.example.test/a/b?x=1".into(),
            eu_link: Some(pb::EuLink {
                hosting_country: "DE".into(),
                ..Default::default()
            }),
            items: vec![item(1, true, false)],
        },
        pb::Report {
            id: REPORT_ID_2.into(),
            origin_country: "NL".into(),
            created_at_ms: AT_MS + 1,
            url: "ftp://Host.Example.TEST:21/%61/./b/../c/".into(),
            eu_link: Some(pb::EuLink {
                hosting_country: "FR".into(),
                suspect_country: "BE".into(),
                victim_country: "NL".into(),
                provider_country: "US".into(),
            }),
            items: vec![item(2, false, true), item(3, true, true)],
        },
    ]
}

fn signed_report(fed: &Federation, bytes: Vec<u8>) -> pb::SignedReport {
    pb::SignedReport {
        signature: fed.node_nl.sign(Context::Report, &bytes).to_vec(),
        key_id: fed.node_nl.public().id().to_string(),
        report: bytes,
    }
}

fn decision(fed: &Federation, report: &[u8], id: &str) -> pb::Decision {
    pb::Decision {
        report_id: id.into(),
        report_digest: Sha256::of(report).0.to_vec(),
        origin: fed.nl().to_string(),
        decided_at_ms: AT_MS + 1000,
        eu_link: true,
        eu_link_facts: vec!["hosting_country DE: member state".into()],
        recipients: vec![pb::Recipient {
            identity: format!("spiffe://{}/node/DE", fed.domain.as_str()),
            purpose: pb::Purpose::NoticeAndTakedown as i32,
            reason: "hosted in DE".into(),
            first: true,
            rule: "hosting".into(),
        }],
        reasons: vec!["new material hosted in a member state".into()],
        items: vec![pb::ItemCheck {
            index: 0,
            known: false,
            entry_version: 0,
            kind: pb::MatchKind::Unspecified as i32,
            distance: 0,
            list_version: 9,
            node_said: pb::NodeSaid::New as i32,
        }],
        rules_version: 3,
        rules: vec![pb::RuleMatch {
            rule: "hosting".into(),
            recipients: vec!["node/DE".into()],
            why: "hosting country".into(),
        }],
        case_ref: Some(pb::CaseRef {
            case_id: CASE_ID.into(),
            kind: pb::DecisionKind::Referral as i32,
            first_report_id: id.into(),
            matched_by: "url".into(),
            deadline_ms: AT_MS + 86_400_000,
            hosting_country: "DE".into(),
            location: 0,
        }),
        kind: pb::DecisionKind::Referral as i32,
    }
}

fn notifications(fed: &Federation) -> Vec<pb::SignedNotification> {
    let representative = format!("spiffe://{}/representative/NL/fier", fed.domain.as_str());
    let proceedings = pb::Notification {
        notification_id: NOTIFICATION_ID.into(),
        series_id: SERIES_ID.into(),
        representative: representative.clone(),
        made_at_ms: AT_MS,
        body: Some(pb::notification::Body::Proceedings(pb::Proceedings {
            case_id: CASE_ID.into(),
            agency: format!("spiffe://{}/agency/NL/politie", fed.domain.as_str()),
            marked_at_ms: AT_MS - 5000,
        })),
    };
    let digest = pb::Notification {
        notification_id: NOTIFICATION_ID.replace("ffff", "fff0"),
        series_id: SERIES_ID.into(),
        representative,
        made_at_ms: AT_MS,
        body: Some(pb::notification::Body::Digest(pb::Digest {
            period: pb::Period::Week as i32,
            from_ms: AT_MS - 7 * 86_400_000,
            to_ms: AT_MS,
            new_cases: 2,
            sightings: 5,
            number: 1,
            cap: 3,
        })),
    };
    [proceedings, digest]
        .iter()
        .map(|n| sign_notification(&fed.hub, n))
        .collect()
}

/// Every delivery a recipient may be sent, each verified here first.
fn deliveries(fed: &Federation) -> Vec<(ReportId, pb::Delivery)> {
    let report_bytes: Vec<Vec<u8>> = reports().iter().map(|r| r.encode_to_vec()).collect();
    let ids = [REPORT_ID, REPORT_ID_2];
    let decisions: Vec<pb::Decision> = report_bytes
        .iter()
        .zip(ids)
        .map(|(b, id)| decision(fed, b, id))
        .collect();
    let signed = sign_decisions(&fed.hub, &decisions);
    let mut out: Vec<(ReportId, pb::Delivery)> = report_bytes
        .into_iter()
        .zip(signed)
        .zip(ids)
        .enumerate()
        .map(|(i, ((b, sd), id))| {
            let d = pb::Delivery {
                seq: i as u64 + 1,
                content: Some(pb::delivery::Content::Routed(pb::RoutedReport {
                    report: Some(signed_report(fed, b)),
                    decision: Some(sd),
                })),
            };
            (ReportId::parse(id).expect("id"), d)
        })
        .collect();
    for (i, sn) in notifications(fed).into_iter().enumerate() {
        let id = pb::Notification::decode(sn.notification.as_slice())
            .expect("notification")
            .notification_id;
        let id = ReportId::parse(&id).expect("a notification id");
        let d = pb::Delivery {
            seq: 10 + i as u64,
            content: Some(pb::delivery::Content::Notification(sn)),
        };
        out.push((id, d));
    }
    for (_, d) in &out {
        let stored = Stored::of(d.clone()).expect("a complete delivery");
        Checked::verify(&stored, &fed.keyring).expect("a seed delivery verifies");
    }
    out
}

fn case_steps(fed: &Federation, out: &mut Out) {
    let notice = pb::CaseStep {
        step_id: STEP_ID.into(),
        case_id: CASE_ID.into(),
        country: "NL".into(),
        kind: pb::StepKind::NoticeSent as i32,
        at_ms: AT_MS,
        provider: Some(pb::HostingProvider {
            name: "Example Hosting B.V.".into(),
            asn: 64_512,
        }),
        location: 1,
        reason: String::new(),
    };
    let removed = pb::CaseStep {
        kind: pb::StepKind::Removed as i32,
        provider: None,
        at_ms: AT_MS + 3_600_000,
        ..notice.clone()
    };
    for (name, step) in [("notice", &notice), ("removed", &removed)] {
        let bytes = step.encode_to_vec();
        meldnet_core::CaseStep::decode(&bytes).expect("a valid step");
        out.put("case_step", &format!("{name}.pb"), &bytes);
        let signed = pb::SignedCaseStep {
            signature: fed.node_nl.sign(Context::CaseStep, &bytes).to_vec(),
            key_id: fed.node_nl.public().id().to_string(),
            step: bytes,
        };
        out.put(
            "case_step",
            &format!("{name}-signed.pb"),
            &signed.encode_to_vec(),
        );
    }
}

fn notices(fed: &Federation, out: &mut Out) {
    use meldnet_core::{AnswerRecord, Notice, NoticeAnswer};
    let provider = format!("spiffe://{}/provider/NL/example-hosting", fed.domain);
    let raw = pb::Notice {
        notice_id: NOTICE_ID.into(),
        case_id: CASE_ID.into(),
        location: 1,
        url: "https://files.example.nl/a/1.jpg".into(),
        hotline: fed.nl().to_string(),
        country: "NL".into(),
        provider: Some(pb::NoticeProvider {
            name: "example-hosting".into(),
            asn: 64_512,
            identity: provider.clone(),
        }),
        legal_ground: pb::LegalGround::Baseline as i32,
        actions: vec![
            pb::NoticeAction::Remove as i32,
            pb::NoticeAction::Preserve as i32,
        ],
        sent_at_ms: AT_MS,
        deadline_ms: AT_MS + 86_400_000,
        items: vec![pb::NoticeItem {
            sha256: Sha256::of(b"item").to_hex(),
            md5: "0123456789abcdef0123456789abcdef".into(),
            pdq: "f".repeat(64),
        }],
        attempt: 1,
        report_id: REPORT_ID.into(),
    };
    let notice = Notice::decode(&raw.encode_to_vec()).expect("a valid notice");
    let signed = notice.sign(&fed.node_nl);
    meldnet_core::verify_notice(&signed, &fed.keyring).expect("the seed notice verifies");
    out.put("notice", "notice.pb", &signed.notice);
    out.put("notice", "notice-signed.pb", &signed.encode_to_vec());
    for (name, kind, reason) in [
        (
            "removed",
            pb::AnswerKind::Removed,
            pb::RefusalReason::Unspecified,
        ),
        (
            "refused",
            pb::AnswerKind::Refused,
            pb::RefusalReason::LegalDispute,
        ),
    ] {
        let answer = pb::NoticeAnswer {
            notice_id: NOTICE_ID.into(),
            kind: kind as i32,
            at_ms: AT_MS + 3_600_000,
            reason: reason as i32,
            detail: "words".into(),
            answer_id: STEP_ID.into(),
        };
        let valid = NoticeAnswer::from_proto(&answer).expect("a valid answer");
        out.put(
            "notice",
            &format!("answer-{name}.pb"),
            &answer.encode_to_vec(),
        );
        let record = AnswerRecord {
            answer: valid,
            provider: meldnet_core::SpiffeId::parse(&provider).expect("provider id"),
            received_at_ms: AT_MS + 3_600_500,
            recorded_by: fed.nl(),
        }
        .sign(&fed.node_nl);
        meldnet_core::verify_answer_record(&record, &fed.keyring)
            .expect("the seed record verifies");
        out.put(
            "notice",
            &format!("record-{name}-signed.pb"),
            &record.encode_to_vec(),
        );
    }
}

fn preferences(out: &mut Out) {
    use meldnet_core::Preference;
    let prefs = [
        ("never", pb::Choice::Never, pb::Period::Unspecified, 0),
        (
            "legal-only",
            pb::Choice::LegalOnly,
            pb::Period::Unspecified,
            0,
        ),
        ("digest-week", pb::Choice::Digest, pb::Period::Week, 3),
        ("digest-month", pb::Choice::Digest, pb::Period::Month, 31),
    ];
    for (name, choice, period, cap) in prefs {
        let p = pb::Preference {
            series_id: SERIES_ID.into(),
            choice: choice as i32,
            period: period as i32,
            cap,
        };
        Preference::from_proto(&p).expect("a valid preference");
        out.put("preference", &format!("{name}.pb"), &p.encode_to_vec());
    }
    let hashes = pb::SeriesHashes {
        series_id: SERIES_ID.into(),
        hashes: vec![
            pb::SeriesHash {
                sha256: hex(&Sha256::of(b"series picture 1").0),
                pdq: hex(&[0xa5; 32]),
                pdq_quality: 80,
            },
            pb::SeriesHash {
                sha256: String::new(),
                pdq: hex(&[0x3c; 32]),
                pdq_quality: 100,
            },
        ],
    };
    meldnet_core::SeriesHashes::from_proto(&hashes.hashes).expect("valid hashes");
    out.put("preference", "series-hashes.pb", &hashes.encode_to_vec());
}

fn list_changes(out: &mut Out) {
    let add = pb::ListChange {
        version: 1,
        change: Some(pb::list_change::Change::Add(pb::ListEntry {
            sha256: hex(&Sha256::of(b"listed").0),
            md5: hex(&[0x42; 16]),
            sha1: hex(&[0x17; 20]),
            pdq: hex(&[0x99; 32]),
            pdq_quality: 70,
            classification: pb::Classification::Baseline as i32,
            age_group: pb::AgeGroup::Pubescent as i32,
            media_type: pb::MediaType::Image as i32,
            source_country: "DE".into(),
            series_id: "vic:series-12".into(),
        })),
    };
    let md5_only = pb::ListChange {
        version: 2,
        change: Some(pb::list_change::Change::Add(pb::ListEntry {
            md5: hex(&[0x24; 16]),
            classification: pb::Classification::National as i32,
            age_group: pb::AgeGroup::Unknown as i32,
            media_type: pb::MediaType::Other as i32,
            source_country: "FR".into(),
            ..Default::default()
        })),
    };
    let withdraw = pb::ListChange {
        version: 3,
        change: Some(pb::list_change::Change::Withdraw(pb::ListTombstone {
            entry_version: 1,
            reason: "listed by mistake".into(),
        })),
    };
    for (name, c) in [("add", add), ("add-md5", md5_only), ("withdraw", withdraw)] {
        let bytes = c.encode_to_vec();
        Change::decode(&bytes).expect("a valid change");
        out.put("list_change", &format!("{name}.pb"), &bytes);
    }
}

fn imports(out: &mut Out) {
    let sha = hex(&Sha256::of(b"row").0);
    let pdq = hex(&[0x5e; 32]);
    let csv = [
        (
            "plain.csv",
            format!(
                "md5,sha1,sha256,pdq,pdq_quality,category,series\n\
                 {},,,,,1,\n\
                 ,{},,,,2,vic:7\n\
                 ,,{sha},{pdq},88,baseline,\n",
                hex(&[0x11; 16]),
                hex(&[0x22; 20]),
            ),
        ),
        (
            "quoted.csv",
            format!(
                "\"SHA256\" , Category ,extra\n\"{}\",\"National\",\"a, b\"\n {sha} ,1,\n",
                sha.to_uppercase()
            ),
        ),
        (
            "bad-rows.csv",
            format!(
                "md5,category\nnot-hex,1\n{},3\n,1\n{},\n",
                hex(&[1; 16]),
                hex(&[2; 16])
            ),
        ),
    ];
    for (name, text) in csv {
        out.put("csv_import", name, text.as_bytes());
    }
    let v3 = format!(
        r#"{{"odata.metadata":"http://example.test/$metadata","value":[{{"CaseNumber":"1","Media":[{{"MD5":"{}","SHA1":"{}","Category":1}},{{"SHA256":"{sha}","Category":"2","Series":"vic:9"}}]}}]}}"#,
        hex(&[0x31; 16]),
        hex(&[0x32; 20]),
    );
    let v4 = format!(
        r#"{{"@odata.context":"http://example.test/$metadata#Cases","value":[{{"Media":[{{"md5":"{}","category":0}},{{"MD5":"zz","Category":1}},7]}},{{"Media":[]}}]}}"#,
        hex(&[0x41; 16]),
    );
    out.put("vics_import", "odata-v3.json", v3.as_bytes());
    out.put("vics_import", "odata-v4.json", v4.as_bytes());
}

fn urls(out: &mut Out) {
    let urls = [
        "https://files.example.test/a/b?x=1",
        "HTTPS://user:secret@Files.Example.TEST.:443/a/./c/../b//?x=%31#frag",
        "http://[2001:db8::1]:8080/%7euser/%2fx",
        "ftp://192.0.2.7/pub/file.bin",
        "sftp://host.example.test:22/~/in",
        "ftps://h\u{00e9}llo.example.test:990/a%2Fb?",
        "ipfs://bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi/x",
        "https://xn--mnchen-3ya.example.test/%E2%80%AE?q=a&b=%zz",
    ];
    for (i, u) in urls.iter().enumerate() {
        out.put("url", &format!("url-{i}.txt"), u.as_bytes());
    }
}

fn delivery_logs(fed: &Federation, out: &mut Out, scratch: &Path) {
    let all = deliveries(fed);
    for (i, (_, d)) in all.iter().enumerate() {
        out.put("delivery", &format!("delivery-{i}.pb"), &d.encode_to_vec());
    }
    let dir = scratch.join("log");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("log folder");
    {
        let mut log = DeliveryLog::open(&dir).expect("a new delivery log");
        let bytes: Vec<(ReportId, Vec<u8>)> =
            all.iter().map(|(id, d)| (*id, d.encode_to_vec())).collect();
        let records: Vec<(ReportId, &[u8])> =
            bytes.iter().map(|(id, b)| (*id, b.as_slice())).collect();
        log.append(&records[..2]).expect("append");
        log.append(&records[2..3]).expect("append");
    }
    let good = std::fs::read(dir.join(LOG_FILE)).expect("the log");
    out.put("delivery_log", "good.log", &good);
    let mut damaged = good.clone();
    let mid = good.len() / 3;
    damaged[mid] ^= 0x40;
    out.put("delivery_log", "damaged.log", &damaged);
    out.put("delivery_log", "torn.log", &good[..good.len() - 7]);
    out.put("delivery_log", "empty.log", meldnet_recipient::MAGIC);
}

/// Ledger seeds: the files of a ledger holding two routed reports and
/// their history, once as the log alone and once checkpointed (a manifest
/// naming a run), each as the target reads them: manifest, run, log.
fn ledger_files(fed: &Federation, out: &mut Out, scratch: &Path) {
    use meldnet_hub::store::sled::ledger_indexes;
    use meldnet_ledger::{Ledger, Options};
    let dir = scratch.join("ledger");
    let _ = std::fs::remove_dir_all(&dir);
    let (ledger, _) =
        Ledger::open(&dir, ledger_indexes(), 0, Options::default()).expect("a new ledger");
    let mut batch = ledger.batch();
    for (i, (_, d)) in deliveries(fed).into_iter().take(2).enumerate() {
        let Some(pb::delivery::Content::Routed(routed)) = d.content else {
            panic!("the first deliveries are routed reports");
        };
        let stored = pb::StoredReport {
            report: routed.report,
            decision: routed.decision,
            received_at_ms: AT_MS + 500,
        };
        let id = [i as u8 + 1; 16];
        batch.put_body(1, &id, |b| b.extend_from_slice(&stored.encode_to_vec()));
        let ev = pb::HistoryEvent {
            at_ms: AT_MS + 500,
            kind: "decided".into(),
            actor: fed.nl().to_string(),
            detail: "routed".into(),
        };
        let mut key = id.to_vec();
        key.extend_from_slice(&(i as u64 + 1).to_be_bytes());
        batch.put_body(4, &key, |b| b.extend_from_slice(&ev.encode_to_vec()));
        batch.put(9, &[i as u8; 28], &[]);
    }
    let end = ledger.commit(batch).expect("commit");
    ledger.made_durable(end);
    let input = |manifest: &[u8], run: &[u8], log: &[u8]| {
        let mut v = Vec::new();
        for part in [manifest, run] {
            v.extend_from_slice(&(part.len() as u32).to_le_bytes());
            v.extend_from_slice(part);
        }
        v.extend_from_slice(log);
        v
    };
    let log = std::fs::read(dir.join(meldnet_ledger::LOG_FILE)).expect("the log");
    out.put("ledger", "log.bin", &input(&[], &[], &log));
    ledger.checkpoint_now().expect("checkpoint");
    drop(ledger);
    let manifest = std::fs::read_to_string(dir.join("MANIFEST")).expect("the manifest");
    // The target writes one run, as run 1 of index 1: the reports' run.
    let reports_run = manifest
        .lines()
        .find_map(|l| l.strip_prefix("run 1 "))
        .expect("a run of the reports");
    let run = std::fs::read(dir.join(format!(
        "run-001-{:010}.run",
        reports_run.parse::<u64>().expect("number")
    )))
    .expect("the run");
    let body = format!(
        "meldnet-ledger manifest 1\ncheckpoint {}\nnext 2\nrun 1 1\n",
        log.len()
    );
    let named = format!("{body}crc {:08x}\n", crc32fast::hash(body.as_bytes()));
    out.put(
        "ledger",
        "checkpointed.bin",
        &input(named.as_bytes(), &run, &log),
    );
}

/// Noise, the same on every run.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn encoded(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut buf = Cursor::new(Vec::new());
    img.write_to(&mut buf, format).expect("encode");
    buf.into_inner()
}

/// A JPEG with an EXIF orientation (6: turned 90 degrees) in an APP1 segment.
fn with_orientation(jpeg: &[u8]) -> Vec<u8> {
    let mut exif = b"Exif\0\0II*\0".to_vec();
    exif.extend_from_slice(&8u32.to_le_bytes());
    exif.extend_from_slice(&1u16.to_le_bytes());
    exif.extend_from_slice(&0x0112u16.to_le_bytes());
    exif.extend_from_slice(&3u16.to_le_bytes());
    exif.extend_from_slice(&1u32.to_le_bytes());
    exif.extend_from_slice(&6u16.to_le_bytes());
    exif.extend_from_slice(&0u16.to_le_bytes());
    exif.extend_from_slice(&0u32.to_le_bytes());
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((exif.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&exif);
    out.extend_from_slice(&jpeg[2..]);
    out
}

fn mozjpeg(color: mozjpeg::ColorSpace, pixels: &[u8], w: usize, h: usize) -> Vec<u8> {
    let mut c = mozjpeg::Compress::new(color);
    c.set_size(w, h);
    c.set_quality(80.0);
    let mut started = c.start_compress(Vec::new()).expect("start");
    started.write_scanlines(pixels).expect("scanlines");
    started.finish().expect("finish")
}

fn pictures(out: &mut Out) {
    let (w, h) = (32u32, 24u32);
    let rgb = RgbImage::from_raw(w, h, noise((w * h * 3) as usize, 7)).expect("pixels");
    let img = DynamicImage::ImageRgb8(rgb.clone());
    let rgba = DynamicImage::ImageRgba8(
        image::RgbaImage::from_raw(w, h, noise((w * h * 4) as usize, 9)).expect("pixels"),
    );
    let gray = DynamicImage::ImageLuma8(
        image::GrayImage::from_raw(w, h, noise((w * h) as usize, 11)).expect("pixels"),
    );
    let jpeg = encoded(&img, ImageFormat::Jpeg);
    let files = [
        ("noise.png", encoded(&img, ImageFormat::Png)),
        ("noise-rgba.png", encoded(&rgba, ImageFormat::Png)),
        ("noise-gray.jpg", encoded(&gray, ImageFormat::Jpeg)),
        ("noise-oriented.jpg", with_orientation(&jpeg)),
        ("noise.jpg", jpeg),
        (
            "noise-progressive.jpg",
            mozjpeg(mozjpeg::ColorSpace::JCS_RGB, rgb.as_raw(), 32, 24),
        ),
        (
            "noise-cmyk.jpg",
            mozjpeg(
                mozjpeg::ColorSpace::JCS_CMYK,
                &noise(32 * 24 * 4, 13),
                32,
                24,
            ),
        ),
        ("noise.gif", encoded(&rgba, ImageFormat::Gif)),
        ("noise.bmp", encoded(&img, ImageFormat::Bmp)),
        ("noise.webp", encoded(&rgba, ImageFormat::WebP)),
        ("noise.tiff", encoded(&img, ImageFormat::Tiff)),
    ];
    for (name, bytes) in files {
        out.put("picture", name, &bytes);
    }
}

fn main() {
    let root = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("corpus"));
    let fed = federation();
    let scratch = meldnet_fuzz::scratch_dir().join("make-corpus");
    let mut out = Out {
        root,
        files: 0,
        bytes: 0,
    };
    for (i, r) in reports().iter().enumerate() {
        let bytes = r.encode_to_vec();
        Report::decode(&bytes).expect("a valid report");
        out.put("report", &format!("report-{i}.pb"), &bytes);
        let signed = signed_report(&fed, bytes).encode_to_vec();
        out.put("report", &format!("report-{i}-signed.pb"), &signed);
    }
    case_steps(&fed, &mut out);
    notices(&fed, &mut out);
    preferences(&mut out);
    list_changes(&mut out);
    imports(&mut out);
    urls(&mut out);
    delivery_logs(&fed, &mut out, &scratch);
    ledger_files(&fed, &mut out, &scratch);
    pictures(&mut out);
    let _ = std::fs::remove_dir_all(&scratch);
    if std::env::var_os("MELDNET_FUZZ_SCRATCH").is_none() {
        let _ = std::fs::remove_dir_all(meldnet_fuzz::scratch_dir());
    }
    println!(
        "wrote {} seed files ({} bytes) under {}",
        out.files,
        out.bytes,
        out.root.display()
    );
}
