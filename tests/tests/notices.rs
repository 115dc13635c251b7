//! Standard notices, end to end over real mTLS with real processes: hotline
//! NL reports URLs hosted in DE; node DE (`serve` with `[notices]`) receives
//! the deliveries, makes one notice per location for the provider its
//! register names, and pushes it; the provider's client verifies and stores
//! it, answers; the node signs the answer and turns it into the case steps
//! the hub judges the deadline on, with no analyst typing them. A provider
//! sees only its own notices; answers over HTTP/JSON work the same; a
//! provider without the API gets a document to e-mail; a stored notice
//! verifies offline and a changed byte does not.

use meldnet_tests::{bin, json_lines, run, stderr, stdout, synthetic_file, Federation};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const SERVER: &str = "hashcheck.de.eu.meldnet.test";

struct Provider {
    dir: PathBuf,
    config: PathBuf,
    name: String,
}

impl Provider {
    fn new(fed: &Federation, keyring: &Path, addr: std::net::SocketAddr, name: &str) -> Provider {
        let dir = fed.scratch(&format!("provider-{name}"));
        let o = run(Command::new(bin("meldnet-certs"))
            .args(["provider", "--node-dir"])
            .arg(fed.root().join("nodes/DE"))
            .args(["--name", name, "--out"])
            .arg(&dir));
        assert!(o.status.success(), "{}", stderr(&o));
        let config = dir.join("provider.toml");
        std::fs::write(
            &config,
            format!(
                "keyring = {keyring:?}\nnotices_dir = \"notices\"\n\n[node]\naddress = \"{addr}\"\nserver_name = \"{SERVER}\"\n\n[tls]\nca = \"ca.pem\"\ncert = \"{name}.pem\"\nkey = \"{name}.key\"\n"
            ),
        )
        .unwrap();
        Provider {
            dir,
            config,
            name: name.into(),
        }
    }

    /// Points the client at the node's address after a restart.
    fn point_to(&self, addr: std::net::SocketAddr) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let text = text
            .lines()
            .map(|l| {
                if l.starts_with("address = ") {
                    format!("address = \"{addr}\"")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&self.config, text).unwrap();
    }

    fn run(&self, command: &str, args: &[&str]) -> Output {
        run(Command::new(bin("meldnet-provider"))
            .args([command, "--config"])
            .arg(&self.config)
            .args(args))
    }

    /// Receives until `n` notices are stored (or 30 s pass).
    fn receive(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut got = Vec::new();
        while got.len() < n && Instant::now() < deadline {
            let o = self.run("receive", &[]);
            assert!(o.status.success(), "{} {}", stdout(&o), stderr(&o));
            got.extend(json_lines(&o));
        }
        got
    }

    fn curl(&self, addr: std::net::SocketAddr, path: &str, body: Option<&str>) -> Value {
        let mut c = Command::new("curl");
        c.args(["-sS", "--http1.1", "--cacert"])
            .arg(self.dir.join("ca.pem"))
            .arg("--cert")
            .arg(self.dir.join(format!("{}.pem", self.name)))
            .arg("--key")
            .arg(self.dir.join(format!("{}.key", self.name)))
            .args(["--resolve", &format!("{SERVER}:{}:127.0.0.1", addr.port())]);
        if let Some(b) = body {
            c.args(["-H", "content-type: application/json", "-d", b]);
        }
        let o = run(c.arg(format!("https://{SERVER}:{}{path}", addr.port())));
        serde_json::from_str(&stdout(&o))
            .unwrap_or_else(|e| panic!("{e}: {} {}", stdout(&o), stderr(&o)))
    }
}

/// The location's state and steps as the hub's `explain` shows them, once
/// `done` holds (or 30 s pass).
fn location(fed: &Federation, report: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = fed.hub_admin(&["explain", "--json", report]);
        assert!(o.status.success(), "{}", stderr(&o));
        let loc = json_lines(&o)[0]["case"]["locations"][0].clone();
        if done(&loc) || Instant::now() > deadline {
            return loc;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn steps(loc: &Value) -> Vec<String> {
    loc["steps"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s["kind"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_notice_goes_from_the_hosting_node_to_its_provider_and_the_answer_closes_the_case() {
    let mut fed = Federation::init("NL,DE", "DE/bka").unwrap();
    let cfg = fed.node_config("DE");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let keyring_rel = text
        .lines()
        .find_map(|l| l.strip_prefix("keyring = "))
        .unwrap()
        .trim_matches('"')
        .to_string();
    let keyring = cfg.parent().unwrap().join(keyring_rel);
    std::fs::write(
        &cfg,
        format!(
            "{text}\n[notices]\nrenotice_after_s = 60\n\n\
             [[notices.providers]]\nname = \"hoster1\"\nasn = 64500\nhostnames = [\"files.example.de\"]\n\n\
             [[notices.providers]]\nname = \"hoster2\"\nasn = 64501\nhostnames = [\"other.example.de\"]\n\n\
             [[notices.providers]]\nname = \"paper\"\nasn = 64502\nhostnames = [\"paper.example.de\"]\napi = false\n"
        ),
    )
    .unwrap();
    fed.start_hub().unwrap();
    let served = fed.serve_node("DE").unwrap();
    let p1 = Provider::new(&fed, &keyring, served.addr, "hoster1");
    let p2 = Provider::new(&fed, &keyring, served.addr, "hoster2");

    let files = fed.scratch("files");
    let (r1, _) = fed
        .report(
            "NL",
            "https://files.example.de/a/1.jpg",
            &["--hosting", "DE"],
            &[&synthetic_file(&files, "a.png", 1)],
        )
        .unwrap();

    // Provider 1 receives the notice, verified and stored; provider 2 nothing.
    let got = p1.receive(1);
    assert_eq!(got.len(), 1, "{}", fed.node_log("DE"));
    let n = &got[0];
    assert_eq!(n["url"], "https://files.example.de/a/1.jpg");
    assert_eq!(n["attempt"], 1);
    assert_eq!(n["legal_ground"], "baseline");
    let notice_id = n["notice_id"].as_str().unwrap().to_string();
    let stored = PathBuf::from(n["stored"].as_str().unwrap());
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&stored).unwrap()).unwrap();
    assert_eq!(doc["provider"]["asn"], 64500);
    assert_eq!(doc["hotline"], "spiffe://eu.meldnet.test/node/DE");
    assert!(doc["items"][0]["sha256"].as_str().unwrap().len() == 64);
    let o = p2.run("receive", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(json_lines(&o).is_empty(), "{}", stdout(&o));
    // Acknowledged: not pushed again.
    let o = p1.run("receive", &[]);
    assert!(json_lines(&o).is_empty(), "{}", stdout(&o));

    // The acknowledgement is the notice sent: a step at the hub, by itself.
    let loc = location(&fed, &r1, |l| steps(l).contains(&"notice_sent".into()));
    assert_eq!(loc["provider"], "hoster1 (AS64500)", "{loc}");

    // Offline: the stored notice verifies with the keyring alone; a changed
    // byte in its signed bytes does not.
    let v = run(Command::new(bin("meldnet-provider"))
        .args(["verify", "--keyring"])
        .arg(&keyring)
        .arg(&stored));
    assert!(v.status.success(), "{} {}", stdout(&v), stderr(&v));
    let mut forged = doc.clone();
    let b64 = forged["signed"]["notice"].as_str().unwrap().to_string();
    let flip = if b64.starts_with('A') { "B" } else { "A" };
    forged["signed"]["notice"] = Value::String(format!("{flip}{}", &b64[1..]));
    let forged_path = p1.dir.join("forged.json");
    std::fs::write(&forged_path, forged.to_string()).unwrap();
    let v = run(Command::new(bin("meldnet-provider"))
        .args(["verify", "--keyring"])
        .arg(&keyring)
        .arg(&forged_path));
    assert!(!v.status.success(), "{}", stdout(&v));

    // Provider 2 may not answer provider 1's notice.
    let o = p2.run("answer", &["--notice", &notice_id, "--kind", "removed"]);
    assert!(!o.status.success());
    assert!(
        stdout(&o).contains("NotFound") || stdout(&o).contains("not found"),
        "{}",
        stdout(&o)
    );

    // Provider 1 answers removed: signed by the node, the location removed.
    let o = p1.run("answer", &["--notice", &notice_id, "--kind", "removed"]);
    assert!(o.status.success(), "{} {}", stdout(&o), stderr(&o));
    let rec = &json_lines(&o)[0];
    assert_eq!(rec["recorded_by"], "spiffe://eu.meldnet.test/node/DE");
    let loc = location(&fed, &r1, |l| l["state"] == "removed");
    assert_eq!(loc["state"], "removed", "{loc} {}", fed.node_log("DE"));
    assert_eq!(steps(&loc), ["notice_sent", "removed"]);
    // With the hub's times of receipt, in order, after the notice was asked.
    let got: Vec<i64> = loc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["received_at_ms"].as_i64().unwrap())
        .collect();
    assert!(got[0] > 0 && got[0] <= got[1], "{loc}");
    assert!(got[0] >= loc["opened_at_ms"].as_i64().unwrap_or(0), "{loc}");

    // HTTP/JSON: a second location, pending, acknowledged, refused with a reason.
    let (r2, _) = fed
        .report(
            "NL",
            "https://files.example.de/b/2.jpg",
            &["--hosting", "DE"],
            &[&synthetic_file(&files, "b.png", 2)],
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let pending = loop {
        let v = p1.curl(served.addr, "/v1/notices", None);
        if !v["notices"].as_array().unwrap().is_empty() || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let n2 = &pending["notices"][0];
    assert_eq!(n2["url"], "https://files.example.de/b/2.jpg", "{pending}");
    let id2 = n2["notice_id"].as_str().unwrap();
    // Another provider's view over HTTP holds none of it.
    assert_eq!(
        p2.curl(served.addr, "/v1/notices", None)["notices"],
        serde_json::json!([])
    );
    let ack = p1.curl(
        served.addr,
        "/v1/notices/ack",
        Some(&format!(
            r#"{{"stored": [{{"notice_id": "{id2}", "attempt": 1}}]}}"#
        )),
    );
    assert_eq!(ack["acknowledged"], 1);
    let answer_id = meldnet_core::AnswerId::new_v7().to_string();
    let body = format!(
        r#"{{"notice_id": "{id2}", "answer_id": "{answer_id}", "kind": "refused", "reason": "legal_dispute", "detail": "the customer went to court"}}"#
    );
    let first = p1.curl(served.addr, "/v1/notices/answer", Some(&body));
    assert!(first["record"].is_string(), "{first}");
    // The same answer again: the same record, recorded once.
    assert_eq!(
        p1.curl(served.addr, "/v1/notices/answer", Some(&body)),
        first
    );
    // A refusal without its reason is refused, naming the field.
    let bad = p1.curl(
        served.addr,
        "/v1/notices/answer",
        Some(&format!(
            r#"{{"notice_id": "{id2}", "answer_id": "{}", "kind": "refused"}}"#,
            meldnet_core::AnswerId::new_v7()
        )),
    );
    assert!(
        bad["error"].as_str().unwrap().contains("answer.reason"),
        "{bad}"
    );
    let loc = location(&fed, &r2, |l| l["state"] == "not_removed");
    assert_eq!(loc["state"], "not_removed", "{loc}");
    assert_eq!(steps(&loc), ["notice_sent", "refused"]);

    // A host no provider in the register serves: the notice waits until an
    // analyst names the provider, then goes to the one named.
    let (r4, lines) = fed
        .report(
            "NL",
            "https://unlisted.example.de/d/4.jpg",
            &["--hosting", "DE"],
            &[&synthetic_file(&files, "d.png", 4)],
        )
        .unwrap();
    let case4 = lines
        .iter()
        .find(|l| l["status"] == "accepted")
        .map(|l| l["case"]["case_id"].as_str().unwrap().to_string())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fed
        .node_log("DE")
        .contains("no provider in the register serves this host")
    {
        assert!(Instant::now() < deadline, "{}", fed.node_log("DE"));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(json_lines(&p2.run("receive", &[])).is_empty());
    let o = fed.node(
        "DE",
        &["notice", "assign", "--case", &case4, "--provider", "nobody"],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--provider"), "{}", stderr(&o));
    let o = fed.node(
        "DE",
        &[
            "notice",
            "assign",
            "--case",
            &case4,
            "--provider",
            "hoster2",
        ],
    );
    assert!(o.status.success(), "{} {}", stdout(&o), stderr(&o));
    let got = p2.receive(1);
    assert_eq!(got.len(), 1, "{}", fed.node_log("DE"));
    assert_eq!(got[0]["url"], "https://unlisted.example.de/d/4.jpg");
    let loc = location(&fed, &r4, |l| steps(l).contains(&"notice_sent".into()));
    assert_eq!(loc["provider"], "hoster2 (AS64501)", "{loc}");

    // A provider without the API: a document to e-mail, nothing pushed.
    fed.report(
        "NL",
        "https://paper.example.de/c/3.jpg",
        &["--hosting", "DE"],
        &[&synthetic_file(&files, "c.png", 3)],
    )
    .unwrap();
    let by_hand = fed.root().join("nodes/DE/notices/by-hand");
    let deadline = Instant::now() + Duration::from_secs(30);
    let txt = loop {
        let found = std::fs::read_dir(&by_hand).ok().and_then(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|e| e == "txt"))
        });
        if let Some(f) = found {
            break std::fs::read_to_string(f).unwrap();
        }
        assert!(Instant::now() < deadline, "{}", fed.node_log("DE"));
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(txt.contains("https://paper.example.de/c/3.jpg"), "{txt}");
    assert!(txt.contains("INTERPOL baseline"), "{txt}");
    assert!(txt.contains("No imagery"), "{txt}");
}

fn node_with_register(fed: &Federation, extra: &str) -> PathBuf {
    let cfg = fed.node_config("DE");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let keyring_rel = text
        .lines()
        .find_map(|l| l.strip_prefix("keyring = "))
        .unwrap()
        .trim_matches('"')
        .to_string();
    std::fs::write(
        &cfg,
        format!(
            "{text}\n[notices]\n{extra}\n\
             [[notices.providers]]\nname = \"hoster1\"\nasn = 64500\nhostnames = [\"files.example.de\"]\n\n\
             [[notices.providers]]\nname = \"hoster2\"\nasn = 64501\nhostnames = [\"other.example.de\"]\n"
        ),
    )
    .unwrap();
    cfg.parent().unwrap().join(keyring_rel)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn an_ignored_notice_is_sent_again_then_escalated_once_and_kills_repeat_nothing() {
    let mut fed = Federation::init_with("NL,DE", "DE/bka", &["--regulators", "DE/bnetza"]).unwrap();
    fed.add_hub_config(
        "[clock]\nadjustable = true\n\n[takedown]\ndeadline_hours = 24\n\n[takedown.countries.DE]\ndeadline_hours = 12\nescalate_to = [\"spiffe://eu.meldnet.test/regulator/DE/bnetza\"]\n",
    )
    .unwrap();
    let keyring = node_with_register(&fed, "renotice_after_s = 6\nmax_attempts = 2\n");
    fed.start_hub().unwrap();
    let served = fed.serve_node("DE").unwrap();
    let p1 = Provider::new(&fed, &keyring, served.addr, "hoster1");
    let p2 = Provider::new(&fed, &keyring, served.addr, "hoster2");
    let files = fed.scratch("files");
    let picture = synthetic_file(&files, "x.png", 7);
    let (r1, _) = fed
        .report(
            "NL",
            "https://files.example.de/x.png",
            &["--hosting", "DE"],
            &[&picture],
        )
        .unwrap();
    let (r2, _) = fed
        .report(
            "NL",
            "https://other.example.de/y.png",
            &["--hosting", "DE"],
            &[&synthetic_file(&files, "y.png", 8)],
        )
        .unwrap();

    // X removes at once; Y acknowledges and then says nothing.
    let got1 = p1.receive(1);
    let got2 = p2.receive(1);
    assert_eq!((got1.len(), got2.len()), (1, 1), "{}", fed.node_log("DE"));
    let id1 = got1[0]["notice_id"].as_str().unwrap().to_string();
    let o = p1.run("answer", &["--notice", &id1, "--kind", "removed"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let loc = location(&fed, &r1, |l| l["state"] == "removed");
    assert_eq!(steps(&loc), ["notice_sent", "removed"], "{loc}");

    // The hub's statistics: X with its time to removal.
    let o = fed.hub_admin(&["stats", "--json"]);
    let st = &json_lines(&o)[0];
    let x = st["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "hoster1")
        .unwrap_or_else(|| panic!("{st}"));
    assert_eq!(x["removed"], 1, "{x}");
    assert!(x["median_removal_ms"].as_i64().unwrap() >= 0, "{x}");

    // Y's notice is sent again at the configured time: attempt 2, same id.
    let again = p2.receive(1);
    assert_eq!(again.len(), 1, "{}", fed.node_log("DE"));
    assert_eq!(again[0]["notice_id"], got2[0]["notice_id"]);
    assert_eq!(again[0]["attempt"], 2);
    // Not a third time: max_attempts = 2.
    std::thread::sleep(Duration::from_secs(7));
    let o = p2.run("receive", &[]);
    assert!(json_lines(&o).is_empty(), "{}", stdout(&o));

    // The node killed (SIGKILL) and started again: nothing made, pushed or
    // recorded twice.
    let state_before = location(&fed, &r2, |_| true);
    drop(served);
    let served = fed.serve_node("DE").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    for p in [&p1, &p2] {
        p.point_to(served.addr);
        let o = p.run("receive", &[]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(json_lines(&o).is_empty(), "{}", stdout(&o));
    }
    assert_eq!(
        steps(&location(&fed, &r1, |_| true)),
        ["notice_sent", "removed"]
    );
    assert_eq!(steps(&location(&fed, &r2, |_| true)), steps(&state_before));

    // Y's client killed after it stored a new notice: the notice comes
    // again until acknowledged, stored under the same name, once.
    let (r3, _) = fed
        .report(
            "NL",
            "https://other.example.de/z.png",
            &["--hosting", "DE"],
            &[&synthetic_file(&files, "z.png", 9)],
        )
        .unwrap();
    let mut child = Command::new(bin("meldnet-provider"))
        .args(["receive", "--follow", "--config"])
        .arg(&p2.config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let notices_dir = p2.dir.join("notices");
    let count = || {
        std::fs::read_dir(&notices_dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .count()
            })
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while count() < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        count(),
        3,
        "attempts 1 and 2 of the first notice, and the new one"
    );
    let o = p2.run("receive", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(json_lines(&o).len() <= 1, "{}", stdout(&o));
    assert_eq!(count(), 3);
    let loc3 = location(&fed, &r3, |l| steps(l).contains(&"notice_sent".into()));
    assert_eq!(steps(&loc3), ["notice_sent"]);

    // Y's deadline passes (moved clock): exactly one escalation, to the regulator.
    let o = fed.hub_admin(&["advance-clock", "--hours", "13"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = fed.scratch("bnetza");
    let pull = || fed.regulator("DE-bnetza", "pull", &["--out", out.to_str().unwrap()]);
    let mut got = Vec::new();
    for _ in 0..50 {
        let o = pull();
        assert!(o.status.success(), "{}", stderr(&o));
        got.extend(meldnet_tests::stored_ids(&o));
        if got.len() >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    got.sort();
    let mut want = vec![r2.clone(), r3.clone()];
    want.sort();
    assert_eq!(got, want, "Y's two locations escalate; X removed in time");
    fed.hub_admin(&["advance-clock", "--hours", "48"]);
    std::thread::sleep(Duration::from_millis(1500));
    meldnet_tests::assert_received(&pull(), &[]);

    // The regulator's view: per provider, dated and signed by the hub,
    // verified offline with the hub's public key; a changed byte fails.
    let export = fed.scratch("export").join("stats.pb");
    let o = fed.hub_admin(&["stats", "--json", "--signed", export.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let verify = |f: &Path| {
        run(Command::new(bin("meldnet-agency"))
            .args(["verify-stats", "--keyring"])
            .arg(&keyring)
            .arg(f))
    };
    let v = verify(&export);
    assert!(v.status.success(), "{} {}", stdout(&v), stderr(&v));
    let cited = &json_lines(&v)[0];
    assert_eq!(cited["hub"], "spiffe://eu.meldnet.test/hub");
    let provider = |name: &str| {
        cited["stats"]["providers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{cited}"))
    };
    let (x, y) = (provider("hoster1"), provider("hoster2"));
    assert_eq!(
        (
            x["notices"].as_u64(),
            x["answered_in_time"].as_u64(),
            x["removed_in_time"].as_u64(),
            x["deadlines_missed"].as_u64()
        ),
        (Some(1), Some(1), Some(1), Some(0)),
        "{x}"
    );
    assert_eq!(
        (
            y["notices"].as_u64(),
            y["answered_in_time"].as_u64(),
            y["removed"].as_u64(),
            y["deadlines_missed"].as_u64()
        ),
        (Some(2), Some(0), Some(0), Some(2)),
        "{y}"
    );
    assert_eq!(
        cited["stats"]["providers"][0]["name"], "hoster2",
        "the worst first"
    );
    let mut bytes = std::fs::read(&export).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    let forged = fed.scratch("export").join("forged.pb");
    std::fs::write(&forged, bytes).unwrap();
    assert!(!verify(&forged).status.success());

    // Refused: a provider of another country (at the handshake), police and
    // a node (by role); Y may not answer X's notice.
    let nl = fed.scratch("provider-nl");
    let o = run(Command::new(bin("meldnet-certs"))
        .args(["provider", "--node-dir"])
        .arg(fed.root().join("nodes/NL"))
        .args(["--name", "hosternl", "--out"])
        .arg(&nl));
    assert!(o.status.success(), "{}", stderr(&o));
    let other = |cert: &Path, key: &Path, name: &str| {
        let config = fed.scratch(name).join("provider.toml");
        std::fs::write(
            &config,
            format!(
                "keyring = {keyring:?}\nnotices_dir = \"notices\"\n\n[node]\naddress = \"{}\"\nserver_name = \"{SERVER}\"\n\n[tls]\nca = {:?}\ncert = {cert:?}\nkey = {key:?}\n",
                served.addr,
                p1.dir.join("ca.pem")
            ),
        )
        .unwrap();
        run(Command::new(bin("meldnet-provider"))
            .args(["receive", "--config"])
            .arg(&config))
    };
    let o = other(&nl.join("hosternl.pem"), &nl.join("hosternl.key"), "as-nl");
    assert!(!o.status.success(), "{}", stdout(&o));
    let bka = fed.root().join("agencies/DE-bka");
    let o = other(
        &bka.join("agency.pem"),
        &bka.join("agency.key"),
        "as-police",
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not a hosting provider"),
        "{}",
        stderr(&o)
    );
    let node = fed.root().join("nodes/NL");
    let o = other(&node.join("node.pem"), &node.join("node.key"), "as-node");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not a hosting provider"),
        "{}",
        stderr(&o)
    );
    let o = p2.run("answer", &["--notice", &id1, "--kind", "not_found"]);
    assert!(!o.status.success(), "{}", stdout(&o));

    // No notice carries imagery: no 32-byte window of the picture in
    // anything the node's notices or the providers wrote.
    drop(served);
    let image = std::fs::read(&picture).unwrap();
    let windows: std::collections::HashSet<&[u8]> = image.windows(32).step_by(16).collect();
    let mut scanned = 0;
    for f in walk(&fed.root().join("nodes/DE/notices"))
        .into_iter()
        .chain(walk(&p1.dir.join("notices")))
        .chain(walk(&p2.dir.join("notices")))
    {
        let bytes = std::fs::read(&f).unwrap();
        scanned += bytes.len();
        assert!(
            bytes.windows(32).all(|w| !windows.contains(w)),
            "image bytes in {}",
            f.display()
        );
    }
    assert!(scanned > 0);
}
