//! A report from NL about new material hosted in DE reaches node DE, police
//! DE and Europol exactly once, with both signatures verifiable offline; a
//! report without an EU link is stored with a decision saying so and
//! delivered to nobody.

use meldnet_tests::*;
use std::process::Command;

#[test]
fn hosted_in_de_reaches_node_de_and_police_de_exactly_once() {
    let fed = Federation::start_default().unwrap();
    let files = fed.scratch("files");
    let a = synthetic_file(&files, "a.png", 1);
    let b = synthetic_file(&files, "b.mp4", 2);
    let (id, lines) = fed
        .report(
            "NL",
            "https://host.example.de/x",
            &["--hosting", "DE"],
            &[&a, &b],
        )
        .unwrap();
    let accepted = lines
        .iter()
        .find(|l| l["status"] == "accepted")
        .expect("accepted line");
    assert_eq!(accepted["report_id"], id.as_str());
    assert_eq!(accepted["eu_link"], true);
    let to: Vec<&str> = accepted["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    // New material (the hub's list is empty): Europol too, with police first.
    assert_eq!(
        to,
        [
            "spiffe://eu.meldnet.test/node/DE",
            "spiffe://eu.meldnet.test/agency/DE/bka",
            "spiffe://eu.meldnet.test/agency/EU/europol"
        ]
    );

    // Police DE.
    let out_bka = fed.scratch("bka");
    let o = fed.pull("DE-bka", &["--out", out_bka.to_str().unwrap()]);
    assert_received(&o, std::slice::from_ref(&id));
    // What was stored, shown from the delivery log and exported as files.
    let exported = fed.scratch("bka-export");
    let o = fed.agency(
        "DE-bka",
        "received",
        &[
            "--out",
            out_bka.to_str().unwrap(),
            "--export",
            exported.to_str().unwrap(),
            &id,
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let shown = json_lines(&o);
    assert_eq!(shown.len(), 1, "{}", stdout(&o));
    let json_file = exported.join(format!("{id}.json"));
    let pb_file = exported.join(format!("{id}.pb"));
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json_file).unwrap()).unwrap();
    assert_eq!(stored, shown[0]);
    assert_eq!(stored["origin"], "spiffe://eu.meldnet.test/node/NL");
    assert_eq!(stored["items"].as_array().unwrap().len(), 2);
    assert_eq!(stored["items"][1]["media_type"], "video");
    // The picture carries the PDQ hash `meldnet-node hash` gives for it; the video none.
    let h = run(Command::new(bin("meldnet-node"))
        .args(["hash", "--json"])
        .arg(&a));
    let hashed = &json_lines(&h)[0];
    assert_eq!(stored["items"][0]["pdq"], hashed["pdq"]);
    assert_eq!(stored["items"][0]["pdq_quality"], hashed["pdq_quality"]);
    assert_eq!(stored["items"][0]["sha256"], hashed["sha256"]);
    assert!(stored["items"][1]["pdq"].is_null());

    // Offline verification with public keys only: the log and both exported forms.
    let keyring = fed.root().join("keyring.toml");
    let v = run(Command::new(bin("meldnet-agency"))
        .args(["verify", "--keyring"])
        .arg(&keyring)
        .arg(out_bka.join("deliveries.log"))
        .arg(&json_file)
        .arg(&pb_file));
    assert!(v.status.success(), "{}", stdout(&v));
    assert_eq!(stdout(&v).matches(": OK report").count(), 3);

    // A damaged record fails, named by its offset on stderr; the good copy
    // of it after the damage still verifies.
    let damaged = fed.scratch("damaged").join("deliveries.log");
    let mut bytes = std::fs::read(out_bka.join("deliveries.log")).unwrap();
    bytes[40] ^= 1;
    let records = std::fs::read(out_bka.join("deliveries.log")).unwrap()[8..].to_vec();
    bytes.extend_from_slice(&records);
    std::fs::write(&damaged, bytes).unwrap();
    let v = run(Command::new(bin("meldnet-agency"))
        .args(["verify", "--keyring"])
        .arg(&keyring)
        .arg(&damaged));
    assert!(!v.status.success(), "{}", stdout(&v));
    assert!(
        stderr(&v).contains("offset 8: checksum mismatch"),
        "{}",
        stderr(&v)
    );
    assert_eq!(
        stdout(&v).matches(": OK report").count(),
        1,
        "{}",
        stdout(&v)
    );

    // A tampered copy does not verify.
    let mut doc = stored.clone();
    let tampered_report = {
        use base64::Engine;
        let mut raw = base64::engine::general_purpose::STANDARD
            .decode(doc["signed"]["report"].as_str().unwrap())
            .unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        base64::engine::general_purpose::STANDARD.encode(raw)
    };
    doc["signed"]["report"] = tampered_report.into();
    let bad = fed.scratch("tampered").join("t.json");
    std::fs::write(&bad, serde_json::to_vec(&doc).unwrap()).unwrap();
    let v = run(Command::new(bin("meldnet-agency"))
        .args(["verify", "--keyring"])
        .arg(&keyring)
        .arg(&bad));
    assert!(
        !v.status.success(),
        "a tampered report must not verify: {}",
        stdout(&v)
    );

    // A copy whose readable URL was edited does not verify either.
    let mut doc = stored.clone();
    doc["url"] = "https://innocent.example.test/".into();
    let edited = fed.scratch("tampered").join("edited.json");
    std::fs::write(&edited, serde_json::to_vec(&doc).unwrap()).unwrap();
    let v = run(Command::new(bin("meldnet-agency"))
        .args(["verify", "--keyring"])
        .arg(&keyring)
        .arg(&edited));
    assert!(
        !v.status.success(),
        "an edited readable field must not verify"
    );
    assert!(stdout(&v).contains("url:"), "{}", stdout(&v));

    // Node DE (hosting country's hotline).
    let out_de = fed.scratch("de-inbox");
    let o = fed.node("DE", &["inbox", "--out", out_de.to_str().unwrap()]);
    assert_received(&o, std::slice::from_ref(&id));

    // Exactly once: acknowledged deliveries never come again.
    for (o, what) in [
        (
            fed.pull("DE-bka", &["--out", out_bka.to_str().unwrap()]),
            "police DE",
        ),
        (
            fed.node("DE", &["inbox", "--out", out_de.to_str().unwrap()]),
            "node DE",
        ),
    ] {
        assert!(o.status.success(), "{what}: {}", stderr(&o));
        assert_received(&o, &[]);
        assert!(
            stderr(&o).contains(": 0 stored, 0 already stored"),
            "{what}: {}",
            stderr(&o)
        );
    }
    let o = fed.pull(
        "EU-europol",
        &["--out", fed.scratch("europol").to_str().unwrap()],
    );
    assert_received(&o, std::slice::from_ref(&id));
    // Nobody else received it.
    for agency in ["NL-politie", "FR-police"] {
        let o = fed.pull(agency, &["--out", fed.scratch(agency).to_str().unwrap()]);
        assert!(o.status.success());
        assert!(
            json_lines(&o).is_empty(),
            "{agency} received {}",
            stdout(&o)
        );
    }
    let o = fed.node(
        "FR",
        &["inbox", "--out", fed.scratch("fr").to_str().unwrap()],
    );
    assert!(json_lines(&o).is_empty());
}

#[test]
fn no_eu_link_is_stored_with_its_reason_and_delivered_to_nobody() {
    let fed = Federation::start_default().unwrap();
    let files = fed.scratch("files");
    let a = synthetic_file(&files, "a.png", 3);
    let before = tokio_rt().block_on(fed.state()).unwrap();
    let (_id, lines) = fed
        .report(
            "NL",
            "https://host.example.com/y",
            &["--hosting", "US", "--suspect", "CA"],
            &[&a],
        )
        .unwrap();
    let accepted = lines
        .iter()
        .find(|l| l["status"] == "accepted")
        .expect("accepted");
    assert_eq!(accepted["eu_link"], false);
    assert!(accepted["recipients"].as_array().unwrap().is_empty());
    let reasons = accepted["reasons"].to_string();
    assert!(reasons.contains("no EU link"), "{reasons}");
    let after = tokio_rt().block_on(fed.state()).unwrap();
    assert_eq!(after.reports, before.reports + 1, "the report is stored");
    assert_eq!(after.queued, before.queued, "and queued for nobody");
    for agency in ["DE-bka", "NL-politie", "FR-police", "EU-europol"] {
        let o = fed.pull(agency, &["--out", fed.scratch(agency).to_str().unwrap()]);
        assert!(
            json_lines(&o).is_empty(),
            "{agency} received {}",
            stdout(&o)
        );
    }
}

#[test]
fn no_image_byte_reaches_the_hub_storage() {
    let mut fed = Federation::start_default().unwrap();
    let files = fed.scratch("files");
    let a = synthetic_file(&files, "distinct.png", 77);
    let image = std::fs::read(&a).unwrap();
    fed.report(
        "NL",
        "https://host.example.de/z",
        &["--hosting", "DE"],
        &[&a],
    )
    .unwrap();
    fed.stop_hub();
    // Every 32-byte window of the file, searched in every file the hub wrote.
    let windows: std::collections::HashSet<&[u8]> = image.windows(32).step_by(16).collect();
    let mut scanned = 0;
    for entry in walk(&fed.root().join("hub")) {
        let bytes = std::fs::read(&entry).unwrap();
        scanned += bytes.len();
        for w in bytes.windows(32) {
            assert!(
                !windows.contains(w),
                "image bytes found in {}",
                entry.display()
            );
        }
    }
    assert!(scanned > 0, "the hub wrote nothing?");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}
