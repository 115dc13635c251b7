//! The federated known-hash list over real processes and mTLS: imports at
//! the hub (CSV and VICS, good and bad rows), nodes following the hub (from
//! empty by snapshot, then changes and tombstones), a sync killed midway and
//! resumed, a head that does not follow refused, and pre-classification of
//! a report's items as known or new.

use meldnet_tests::{json_lines, stderr, stdout, synthetic_file, Federation};
use serde_json::Value;
use std::io::Write;
use std::path::Path;

fn last_json(o: &std::process::Output) -> Value {
    json_lines(o)
        .pop()
        .unwrap_or_else(|| panic!("no JSON in {} {}", stdout(o), stderr(o)))
}

fn ok(o: std::process::Output) -> Value {
    assert!(o.status.success(), "{} {}", stdout(&o), stderr(&o));
    last_json(&o)
}

fn sha256_hex(i: u64) -> String {
    meldnet_core::Sha256::of(&i.to_le_bytes()).to_hex()
}

/// A CSV list of `n` valid rows, entries `from..from+n`.
fn csv_list(dir: &Path, name: &str, from: u64, n: u64) -> std::path::PathBuf {
    let p = dir.join(name);
    let mut f = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
    writeln!(f, "sha256,category").unwrap();
    for i in from..from + n {
        writeln!(f, "{},1", sha256_hex(i)).unwrap();
    }
    f.flush().unwrap();
    p
}

#[test]
fn csv_and_vics_imports_count_added_duplicate_and_invalid_rows() {
    let fed = Federation::start_default().unwrap();
    let dir = fed.scratch("lists");
    let good = sha256_hex(1);
    let csv = dir.join("list.csv");
    std::fs::write(
        &csv,
        format!(
            "SHA256,MD5,PDQ,pdq_quality,Category,series\n\
             {good},,,,1,\n\
             ,{md5},,,2,s-17\n\
             ,,{pdq},90,baseline,\n\
             {good},,,,1,\n\
             {bad},,,,1,\n\
             {other},,,,3,\n\
             ,,,,1,\n\
             {third},,,,1,Jane Doe\n",
            md5 = "ab".repeat(16),
            pdq = "f8".repeat(32),
            bad = "zz".repeat(32),
            other = sha256_hex(2),
            third = sha256_hex(3),
        ),
    )
    .unwrap();
    let o = fed.hub_list("import", &["--source-country", "NL", csv.to_str().unwrap()]);
    let err = stderr(&o);
    let s = ok(o);
    assert_eq!(
        (&s["rows"], &s["added"], &s["duplicate"], &s["invalid"]),
        (
            &Value::from(8),
            &Value::from(3),
            &Value::from(1),
            &Value::from(4)
        ),
        "{s} {err}"
    );
    for (line, why) in [
        (6, "sha256"),
        (7, "category \"3\" is not mapped"),
        (8, "no hash"),
        (9, "series"),
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("line {line}: ")) && l.contains(why)),
            "line {line} ({why}) not reported: {err}"
        );
    }
    assert_eq!(s["list"]["version"], 3);
    assert_eq!(s["list"]["entries"], 3);

    // Project VIC VICS JSON: category 1 baseline, 2 national, 0 refused.
    let vics = dir.join("case.json");
    std::fs::write(
        &vics,
        format!(
            r#"{{"odata.metadata": "x", "value": [{{"CaseNumber": "1", "Media": [
                {{"MD5": "{m1}", "SHA1": "{s1}", "Category": 1}},
                {{"MD5": "{m2}", "Category": 2}},
                {{"MD5": "{m3}", "Category": 0}},
                {{"SHA1": "not hex", "Category": 1}},
                {{"SHA256": "{good}", "Category": 1}}
            ]}}]}}"#,
            m1 = "01".repeat(16),
            s1 = "02".repeat(20),
            m2 = "03".repeat(16),
            m3 = "04".repeat(16),
        ),
    )
    .unwrap();
    let o = fed.hub_list(
        "import",
        &[
            "--source-country",
            "DE",
            "--format",
            "vics",
            vics.to_str().unwrap(),
        ],
    );
    let err = stderr(&o);
    let s = ok(o);
    assert_eq!(
        (&s["added"], &s["duplicate"], &s["invalid"]),
        (&Value::from(2), &Value::from(1), &Value::from(2)),
        "{s} {err}"
    );
    assert!(
        err.contains("line 3: ") && err.contains("line 4: sha1"),
        "{err}"
    );
    assert_eq!(s["list"]["entries"], 5);

    // A node's national list joins the federated list, its country the source.
    let national = dir.join("national.csv");
    std::fs::write(
        &national,
        format!(
            "md5,category\n{},national\n{},2\nxyz,2\n",
            "05".repeat(16),
            "01".repeat(16)
        ),
    )
    .unwrap();
    let o = fed.node("FR", &["list", "import", national.to_str().unwrap()]);
    let err = stderr(&o);
    let s = ok(o);
    assert_eq!(
        (&s["added"], &s["duplicate"], &s["invalid"]),
        (&Value::from(1), &Value::from(1), &Value::from(1)),
        "{s} {err}"
    );
    assert!(err.contains("line 4: md5"), "{err}");

    // What the hub holds is what a node gets.
    let n = ok(fed.node("DE", &["list", "sync"]));
    assert_eq!(n["entries"], 6);
    assert_eq!(n["digest"], s["list"]["digest"]);
}

#[test]
fn a_node_syncs_from_empty_then_follows_changes_and_tombstones() {
    let fed = Federation::start_default().unwrap();
    let dir = fed.scratch("lists");
    let first = csv_list(&dir, "a.csv", 0, 10_000);
    ok(fed.hub_list(
        "import",
        &["--source-country", "NL", first.to_str().unwrap()],
    ));
    // Two withdrawals before the node ever synced: a snapshot leaves them out.
    ok(fed.hub_list("withdraw", &["--entry", "7", "--reason", "wrongly listed"]));
    ok(fed.hub_list("withdraw", &["--entry", "8", "--reason", "wrongly listed"]));
    let s = ok(fed.node("FR", &["list", "sync"]));
    assert_eq!(s["snapshot"], true);
    assert_eq!(s["records"], 9_998, "only live entries in a snapshot");
    assert_eq!(
        (&s["version"], &s["entries"]),
        (&Value::from(10_002), &Value::from(9_998))
    );

    // Up to date: nothing to apply, and the node says where it stands.
    let again = ok(fed.node("FR", &["list", "sync"]));
    assert_eq!(
        (&again["records"], &again["version"]),
        (&Value::from(0), &Value::from(10_002))
    );

    let second = csv_list(&dir, "b.csv", 9_000, 2_000);
    let imported = ok(fed.hub_list(
        "import",
        &["--source-country", "NL", second.to_str().unwrap()],
    ));
    assert_eq!(
        (&imported["added"], &imported["duplicate"]),
        (&Value::from(1_000), &Value::from(1_000))
    );
    ok(fed.hub_list(
        "withdraw",
        &["--entry", "10", "--reason", "not CSAM on review"],
    ));
    let s = ok(fed.node("FR", &["list", "sync"]));
    assert_eq!(s["snapshot"], false);
    assert_eq!(s["records"], 1_001, "1,000 entries and a tombstone");
    let hub = ok(fed.hub_list("status", &[]));
    assert_eq!(
        (&s["version"], &s["entries"], &s["digest"]),
        (&hub["version"], &hub["entries"], &hub["digest"])
    );
    assert_eq!(hub["entries"], 10_997);

    // Withdrawing what is not live is refused.
    let o = fed.hub_list("withdraw", &["--entry", "10", "--reason", "again"]);
    assert!(
        !o.status.success() && stderr(&o).contains("not a live entry"),
        "{}",
        stderr(&o)
    );

    // A node copy altered on disk is refused when opened, with the offset.
    let file = fed.root().join("nodes/FR/hashlist/hashlist.log");
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    let o = fed.node("FR", &["list", "status"]);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(stderr(&o).contains("offset"), "{}", stderr(&o));
}

#[test]
fn a_sync_killed_midway_resumes_where_it_stopped() {
    let fed = Federation::start_default().unwrap();
    let dir = fed.scratch("lists");
    let first = csv_list(&dir, "a.csv", 0, 100);
    ok(fed.hub_list(
        "import",
        &["--source-country", "NL", first.to_str().unwrap()],
    ));
    ok(fed.node("NL", &["list", "sync"]));
    let big = csv_list(&dir, "b.csv", 1_000, 200_000);
    ok(fed.hub_list("import", &["--source-country", "NL", big.to_str().unwrap()]));

    // Kill -9 right after the first batch is reported applied.
    let mut child = std::process::Command::new(meldnet_tests::bin("meldnet-node"))
        .args(["list", "sync", "--config"])
        .arg(fed.node_config("NL"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut err, &mut line).unwrap();
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
    assert!(line.starts_with("list: version"), "{line}");

    let held = ok(fed.node("NL", &["list", "status"]));
    let held = held["version"].as_u64().unwrap();
    assert!(held > 100 && held < 200_100, "killed midway: held {held}");
    let s = ok(fed.node("NL", &["list", "sync"]));
    assert_eq!(s["from_version"], held, "resumed from what was applied");
    assert_eq!(s["snapshot"], false);
    let hub = ok(fed.hub_list("status", &[]));
    assert_eq!(
        (&s["version"], &s["digest"]),
        (&hub["version"], &hub["digest"])
    );
}

#[test]
fn a_head_that_does_not_follow_is_refused_and_nothing_changes() {
    let mut fed = Federation::start_default().unwrap();
    let dir = fed.scratch("lists");
    let a = csv_list(&dir, "a.csv", 0, 50);
    ok(fed.hub_list("import", &["--source-country", "NL", a.to_str().unwrap()]));
    let before = ok(fed.node("DE", &["list", "sync"]));

    // The hub's history replaced by another one (same keys, other entries).
    fed.stop_hub();
    std::fs::remove_dir_all(fed.root().join("hub/data")).unwrap();
    fed.start_hub().unwrap();
    let b = csv_list(&dir, "b.csv", 500, 80);
    ok(fed.hub_list("import", &["--source-country", "NL", b.to_str().unwrap()]));
    let o = fed.node("DE", &["list", "sync"]);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(stderr(&o).contains("does not follow"), "{}", stderr(&o));
    let after = ok(fed.node("DE", &["list", "status"]));
    assert_eq!(
        (&after["version"], &after["digest"]),
        (&before["version"], &before["digest"])
    );

    // A hub whose list is shorter than the node's: refused by the hub, said why.
    fed.stop_hub();
    std::fs::remove_dir_all(fed.root().join("hub/data")).unwrap();
    fed.start_hub().unwrap();
    let o = fed.node("DE", &["list", "sync"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("ahead of the hub's list"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn items_are_marked_known_or_new_by_the_node_and_again_by_the_hub() {
    let fed = Federation::start_default().unwrap();
    let data = meldnet_tests::pdq_data();
    let dir = fed.scratch("files");
    let exact = data.join("misc-images/small.jpg");
    let reencoded = data.join("bridge-mods/shrink-a-lot.jpg");
    let unrelated = synthetic_file(&dir, "new.png", 41);
    // Listed: the exact file by SHA-256, the original bridge picture by PDQ.
    let hashed = meldnet_tests::run(
        std::process::Command::new(meldnet_tests::bin("meldnet-node"))
            .args(["hash", "--json"])
            .arg(&exact)
            .arg(data.join("bridge-mods/aaa-orig.jpg")),
    );
    let hashed = json_lines(&hashed);
    let list = dir.join("list.csv");
    std::fs::write(
        &list,
        format!(
            "sha256,pdq,pdq_quality,category\n{},,,1\n,{},{},1\n",
            hashed[0]["sha256"].as_str().unwrap(),
            hashed[1]["pdq"].as_str().unwrap(),
            hashed[1]["pdq_quality"],
        ),
    )
    .unwrap();
    ok(fed.hub_list(
        "import",
        &["--source-country", "DE", list.to_str().unwrap()],
    ));
    ok(fed.node("NL", &["list", "sync"]));

    let (id, lines) = fed
        .report(
            "NL",
            "https://files.example.test/x",
            &["--hosting", "DE"],
            &[&exact, &reencoded, &unrelated],
        )
        .unwrap();
    let items = lines[0]["items"].as_array().unwrap();
    assert_eq!(items[0]["known"]["known"], true);
    assert_eq!(
        (&items[0]["known"]["kind"], &items[0]["known"]["entry"]),
        (&Value::from("sha256"), &Value::from(1))
    );
    assert_eq!(items[1]["known"]["known"], true);
    assert_eq!(
        (&items[1]["known"]["kind"], &items[1]["known"]["entry"]),
        (&Value::from("pdq"), &Value::from(2))
    );
    let d = items[1]["known"]["distance"].as_u64().unwrap();
    assert!(
        d > 0 && d <= 31,
        "a re-encoded copy is near, not identical: {d}"
    );
    assert_eq!(items[2]["known"]["known"], false);
    let accepted = lines.iter().find(|l| l["status"] == "accepted").unwrap();
    let reasons = accepted["reasons"].to_string();
    assert!(reasons.contains("hash list: 2 known, 1 new"), "{reasons}");

    // The police receive the hub's own check beside the node's.
    let pulled = fed.pull("DE-bka", &[]);
    assert!(pulled.status.success(), "{}", stderr(&pulled));
    let shown = fed.agency("DE-bka", "received", &[&id]);
    let r = last_json(&shown);
    let checks = r["decision"]["items"].as_array().unwrap();
    let known: Vec<bool> = checks
        .iter()
        .map(|c| c["known"].as_bool().unwrap())
        .collect();
    assert_eq!(known, [true, true, false]);
    assert_eq!(checks[1]["kind"], "MATCH_KIND_PDQ");
    assert_eq!(checks[1]["node_said"], "known");
    assert_eq!(r["items"][2]["node_list_check"]["known"], false);

    // Withdrawn at the hub: after the next sync, the same file is new again.
    ok(fed.hub_list(
        "withdraw",
        &["--entry", "1", "--reason", "listed by mistake"],
    ));
    ok(fed.node("NL", &["list", "sync"]));
    let o = fed.node(
        "NL",
        &[
            "report",
            "new",
            "--url",
            "https://files.example.test/y",
            "--classification",
            "baseline",
            "--age-group",
            "unknown",
            exact.to_str().unwrap(),
        ],
    );
    let items = json_lines(&o)[0]["items"].clone();
    assert_eq!(items[0]["known"]["known"], false, "{items}");
}

#[test]
fn a_snapshot_of_a_list_with_every_entry_withdrawn_opens_again() {
    let fed = Federation::start_default().unwrap();
    let dir = fed.scratch("lists");
    let a = csv_list(&dir, "a.csv", 0, 2);
    ok(fed.hub_list("import", &["--source-country", "NL", a.to_str().unwrap()]));
    ok(fed.hub_list("withdraw", &["--entry", "1", "--reason", "x"]));
    ok(fed.hub_list("withdraw", &["--entry", "2", "--reason", "x"]));
    let s = ok(fed.node("NL", &["list", "sync"]));
    assert_eq!(
        (&s["snapshot"], &s["records"], &s["version"]),
        (&Value::from(true), &Value::from(0), &Value::from(4))
    );
    let held = ok(fed.node("NL", &["list", "status"]));
    assert_eq!(
        (&held["version"], &held["entries"]),
        (&Value::from(4), &Value::from(0))
    );
    let b = csv_list(&dir, "b.csv", 10, 3);
    ok(fed.hub_list("import", &["--source-country", "NL", b.to_str().unwrap()]));
    let s = ok(fed.node("NL", &["list", "sync"]));
    assert_eq!(
        (&s["records"], &s["entries"]),
        (&Value::from(3), &Value::from(3))
    );
}
