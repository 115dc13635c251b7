//! Damage in a recipient's stored files is reported with its offset and
//! never "repaired" by cutting away acknowledged data: a flipped bit in a
//! police delivery log, a damaged last record, a node's inbox and a node's
//! known-hash list. Readers still show every good record; writers refuse
//! and leave the file byte-identical; `log check` lists the damage and
//! `log salvage` keeps every good record, after which receiving goes on and
//! nothing acknowledged comes again.

use meldnet_node::list::LIST_FORMAT;
use meldnet_recipient::{LogReader, LogRecord};
use meldnet_tests::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;

/// Submits `n` reports from NL hosted in DE (police DE and node DE get each).
async fn submit(fed: &Federation, n: usize) -> Vec<String> {
    let reports: Vec<_> = (0..n)
        .map(|_| sample_report("NL", "DE").to_proto())
        .collect();
    fed.submit_many("NL", &reports).await.unwrap();
    reports.iter().map(|r| r.id.clone()).collect()
}

fn records(path: &Path) -> Vec<LogRecord> {
    LogReader::open(path)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

/// Flips `bit` of the byte at `at`; returns the file's bytes after it.
fn flip(path: &Path, at: u64, bit: u8) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at as usize] ^= bit;
    std::fs::write(path, &bytes).unwrap();
    bytes
}

/// The report ids `received` showed.
fn shown(o: &Output) -> BTreeSet<String> {
    json_lines(o)
        .iter()
        .filter_map(|l| l["report_id"].as_str().map(String::from))
        .collect()
}

/// Runs `meldnet-agency log SUB --config <police DE's config>`.
fn police_log(fed: &Federation, sub: &str) -> Output {
    run(std::process::Command::new(bin("meldnet-agency"))
        .args(["log", sub, "--config"])
        .arg(fed.agency_config("DE-bka")))
}

fn summary(o: &Output) -> Value {
    json_lines(o)
        .pop()
        .unwrap_or_else(|| panic!("no JSON: {} {}", stdout(o), stderr(o)))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flipped_length_bit_is_reported_never_cut_and_salvage_keeps_every_good_delivery() {
    let fed = Federation::start_default().unwrap();
    let ids = submit(&fed, 320).await;
    let o = fed.pull("DE-bka", &[]);
    assert_received(&o, &ids);
    let log = fed.root().join("agencies/DE-bka/deliveries/deliveries.log");
    let stored = records(&log);
    assert_eq!(stored.len(), 320);

    // One bit of the third record's length: it now seems to run past the end
    // of the file (format 1 took that for a torn tail and lost the rest).
    let hit = &stored[2];
    let (at, next) = (hit.offset, stored[3].offset);
    let lost = hit.report_id().to_string();
    let damaged = flip(&log, at + 3, 0x01);
    let good: BTreeSet<String> = ids.iter().filter(|i| **i != lost).cloned().collect();
    let at_offset = format!("offset {at}");

    // `received` names the offset, exits non-zero, and still shows the 319.
    let o = fed.agency("DE-bka", "received", &[]);
    assert!(!o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(&at_offset), "{}", stderr(&o));
    assert_eq!(shown(&o), good, "{}", stderr(&o));

    // `verify` likewise.
    let o = fed.agency("DE-bka", "verify", &[log.to_str().unwrap()]);
    assert!(!o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(&at_offset), "{}", stderr(&o));
    assert_eq!(stdout(&o).matches(": OK report").count(), 319);
    assert!(!stdout(&o).contains("FAILED"), "{}", stdout(&o));

    // `pull` refuses, names the offset and what to run, changes nothing.
    let o = fed.pull("DE-bka", &[]);
    assert!(!o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(&at_offset), "{}", stderr(&o));
    assert!(stderr(&o).contains("log salvage"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(&log).unwrap(),
        damaged,
        "pull changed the log"
    );

    // `log check` lists the range and counts the good records.
    let o = police_log(&fed, "check");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let lines = json_lines(&o);
    let d = &lines[0]["damaged"];
    assert_eq!(
        (&d["start"], &d["end"]),
        (&Value::from(at), &Value::from(next))
    );
    assert_eq!(d["report_id"], lost.as_str());
    assert_eq!(d["tag_verified"], false);
    let s = summary(&o);
    assert_eq!(
        (&s["good_records"], &s["damaged_ranges"]),
        (&Value::from(319), &Value::from(1))
    );
    assert_eq!(
        std::fs::read(&log).unwrap(),
        damaged,
        "check changed the log"
    );

    // `log salvage` keeps every good record and the original, and says what was lost.
    let o = police_log(&fed, "salvage");
    assert!(o.status.success(), "{}", stderr(&o));
    let s = summary(&o);
    assert_eq!(s["status"], "salvaged");
    assert_eq!(s["kept_records"], 319);
    assert_eq!(s["lost"][0]["start"], at);
    assert!(s["lost_tags"][0].as_str().unwrap().contains(&lost), "{s}");
    assert!(stderr(&o).contains(&lost), "{}", stderr(&o));
    let original = PathBuf::from(s["original"].as_str().unwrap());
    assert_eq!(std::fs::read(&original).unwrap(), damaged);
    let after: Vec<String> = records(&log)
        .iter()
        .map(|r| r.report_id().to_string())
        .collect();
    let want: Vec<String> = stored
        .iter()
        .map(|r| r.report_id().to_string())
        .filter(|i| *i != lost)
        .collect();
    assert_eq!(after, want, "every good record, in order");

    // Receiving works again and nothing acknowledged comes again.
    let o = fed.pull("DE-bka", &[]);
    assert_received(&o, &[]);
    let o = police_log(&fed, "check");
    assert!(o.status.success(), "{}", stderr(&o));
    let o = fed.agency("DE-bka", "received", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(shown(&o), good);
    // New reports are stored after the salvaged ones.
    let more = submit(&fed, 3).await;
    assert_received(&fed.pull("DE-bka", &[]), &more);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_last_record_is_damage_not_a_torn_tail_for_police_and_node() {
    let fed = Federation::start_default().unwrap();
    let ids = submit(&fed, 5).await;
    assert_received(&fed.pull("DE-bka", &[]), &ids);
    let log = fed.root().join("agencies/DE-bka/deliveries/deliveries.log");
    let stored = records(&log);
    let last = stored.last().unwrap();
    let lost = last.report_id().to_string();
    let at_offset = format!("offset {}", last.offset);
    // Its body checksum (bytes 20..24 of the header), then its last byte.
    let len = std::fs::metadata(&log).unwrap().len();
    for at in [last.offset + 20, len - 1] {
        let damaged = flip(&log, at, 0x10);
        let o = fed.agency("DE-bka", "received", &[]);
        assert!(!o.status.success(), "{}", stderr(&o));
        assert!(stderr(&o).contains(&at_offset), "{}", stderr(&o));
        assert_eq!(shown(&o).len(), 4);
        let o = fed.pull("DE-bka", &[]);
        assert!(!o.status.success(), "{}", stderr(&o));
        assert!(stderr(&o).contains(&at_offset), "{}", stderr(&o));
        assert_eq!(
            std::fs::read(&log).unwrap(),
            damaged,
            "the last record was cut"
        );
        flip(&log, at, 0x10);
    }
    // Damaged for good: salvage keeps the first four, names the fifth.
    flip(&log, len - 1, 0x10);
    let o = run(std::process::Command::new(bin("meldnet-agency"))
        .args(["log", "check", "--log"])
        .arg(&log));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let d = &json_lines(&o)[0]["damaged"];
    assert_eq!(
        (&d["report_id"], &d["tag_verified"]),
        (&Value::from(lost.as_str()), &Value::from(true))
    );
    let o = police_log(&fed, "salvage");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(summary(&o)["kept_records"], 4);
    assert!(stderr(&o).contains(&lost), "{}", stderr(&o));
    assert_received(&fed.pull("DE-bka", &[]), &[]);

    // The node's inbox is the same log with the same commands.
    assert_received(&fed.node("DE", &["inbox"]), &ids);
    let inbox = fed.root().join("nodes/DE/inbox/deliveries.log");
    let stored = records(&inbox);
    let hit = &stored[1];
    let damaged = flip(&inbox, hit.offset + 2, 0x40);
    let o = fed.node("DE", &["inbox"]);
    assert!(!o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("offset {}", hit.offset)),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&inbox).unwrap(), damaged);
    let o = fed.node("DE", &["log", "check"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(json_lines(&o)[0]["damaged"]["start"], hit.offset);
    let o = fed.node("DE", &["log", "salvage"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(summary(&o)["kept_records"], 4);
    assert_received(&fed.node("DE", &["inbox"]), &[]);
    let o = fed.node("DE", &["received"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(shown(&o).len(), 4);
}

fn ok(o: Output) -> Value {
    assert!(o.status.success(), "{} {}", stdout(&o), stderr(&o));
    summary(&o)
}

/// A CSV list of `n` valid rows, entries `from..from+n`.
fn csv_list(dir: &Path, name: &str, from: u64, n: u64) -> PathBuf {
    let p = dir.join(name);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
    writeln!(f, "sha256,category").unwrap();
    for i in from..from + n {
        let h = meldnet_core::Sha256::of(&i.to_le_bytes()).to_hex();
        writeln!(f, "{h},1").unwrap();
    }
    f.flush().unwrap();
    p
}

#[test]
fn a_damaged_node_list_is_reported_with_its_offset_not_cut_and_fetched_again() {
    let fed = Federation::start_default().unwrap();
    let dir = fed.scratch("lists");
    // Three batches: a snapshot, then two of changes.
    for (i, from) in [0u64, 100, 200].iter().enumerate() {
        let csv = csv_list(&dir, &format!("{i}.csv"), *from, 100);
        ok(fed.hub_list("import", &["--source-country", "NL", csv.to_str().unwrap()]));
        ok(fed.node("FR", &["list", "sync"]));
    }
    let file = fed.root().join("nodes/FR/hashlist/hashlist.log");
    let stored: Vec<LogRecord> = LogReader::open_format(&file, &LIST_FORMAT)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    // A change record of the third batch: one flipped byte of its body.
    let hit = &stored[stored.len() - 20];
    assert_eq!(hit.tag[0], 1, "a change record");
    let damaged = flip(&file, hit.offset + 28 + 5, 0x01);
    let at_offset = format!("offset {}", hit.offset);

    for args in [&["list", "status"][..], &["list", "sync"]] {
        let o = fed.node("FR", args);
        assert!(!o.status.success(), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(&at_offset), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("list salvage"), "{}", stderr(&o));
        assert_eq!(
            std::fs::read(&file).unwrap(),
            damaged,
            "{args:?} changed the list"
        );
    }
    let o = fed.node("FR", &["list", "check"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let d = &json_lines(&o)[0]["damaged"];
    assert_eq!(
        (&d["start"], &d["record"]),
        (&Value::from(hit.offset), &Value::from("change"))
    );
    assert_eq!(std::fs::read(&file).unwrap(), damaged);

    // Salvage keeps the list up to the damage, says so, and the sync
    // fetches the rest again from the hub.
    let o = fed.node("FR", &["list", "salvage"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let s = summary(&o);
    assert_eq!(s["left_out_records"], 19, "{s}");
    assert!(stderr(&o).contains("list sync"), "{}", stderr(&o));
    let original = PathBuf::from(s["original"].as_str().unwrap());
    assert_eq!(std::fs::read(&original).unwrap(), damaged);
    ok(fed.node("FR", &["list", "sync"]));
    let node = ok(fed.node("FR", &["list", "status"]));
    let hub = ok(fed.hub_list("status", &[]));
    assert_eq!(
        (&node["version"], &node["entries"], &node["digest"]),
        (&hub["version"], &hub["entries"], &hub["digest"])
    );
    assert_eq!(hub["entries"], 300);
    let o = fed.node("FR", &["list", "check"]);
    assert!(o.status.success(), "{}", stderr(&o));
}
