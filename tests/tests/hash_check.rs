//! Hash checks for hosting providers at a node, over real mTLS: a provider
//! of the node's country gets known/unknown with the kind of match and its
//! distance (gRPC and HTTP/JSON), nothing more; a provider certified by
//! another country's node and a police agency of the same country get
//! nothing; every check is counted per provider.

use meldnet_proto::v1 as pb;
use meldnet_tests::{bin, json_lines, run, stderr, stdout, Federation};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const SERVER: &str = "hashcheck.de.eu.meldnet.test";

fn provider(fed: &Federation, cc: &str, name: &str) -> PathBuf {
    let out = fed.scratch(&format!("providers-{cc}"));
    let o = run(Command::new(bin("meldnet-certs"))
        .args(["provider", "--node-dir"])
        .arg(fed.root().join(format!("nodes/{cc}")))
        .args(["--name", name, "--out"])
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    out
}

fn channel(addr: std::net::SocketAddr, ca: &Path, cert: &Path, key: &Path) -> Channel {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()))
        .identity(Identity::from_pem(
            std::fs::read(cert).unwrap(),
            std::fs::read(key).unwrap(),
        ))
        .domain_name(SERVER);
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy()
}

fn q(sha256: &str, pdq: &str, quality: u32) -> pb::HashQuery {
    pb::HashQuery {
        sha256: sha256.into(),
        pdq: pdq.into(),
        pdq_quality: quality,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn providers_of_the_country_check_hashes_and_no_one_else_can() {
    let mut fed = Federation::init("NL,DE", "DE/bka").unwrap();
    // Prometheus metrics of node DE's hash checks.
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics_addr = metrics.local_addr().unwrap();
    drop(metrics);
    let cfg = fed.node_config("DE");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "[hash_check]\n",
        &format!("[hash_check]\nmetrics_listen = \"{metrics_addr}\"\n"),
    );
    std::fs::write(&cfg, text).unwrap();
    fed.start_hub().unwrap();

    // The list: a file by SHA-256, a picture by PDQ.
    let data = meldnet_tests::pdq_data();
    let hashed = json_lines(&run(Command::new(bin("meldnet-node"))
        .args(["hash", "--json"])
        .arg(data.join("misc-images/small.jpg"))
        .arg(data.join("bridge-mods/aaa-orig.jpg"))
        .arg(data.join("bridge-mods/shrink-a-lot.jpg"))));
    let h = |i: usize, k: &str| hashed[i][k].as_str().unwrap().to_string();
    let list = fed.scratch("lists").join("list.csv");
    std::fs::write(
        &list,
        format!(
            "sha256,pdq,pdq_quality,category,series\n{},,,1,series-7\n,{},100,1,\n",
            h(0, "sha256"),
            h(1, "pdq")
        ),
    )
    .unwrap();
    let o = fed.hub_list(
        "import",
        &["--source-country", "NL", list.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let served = fed.serve_node("DE").unwrap();

    let p = provider(&fed, "DE", "hoster1");
    let ch = channel(
        served.addr,
        &p.join("ca.pem"),
        &p.join("hoster1.pem"),
        &p.join("hoster1.key"),
    );
    let mut client = pb::hash_check_client::HashCheckClient::new(ch);
    let queries = vec![
        q(&h(0, "sha256"), "", 0),
        q("", &h(2, "pdq"), 100),
        q(&"0".repeat(64), "", 0),
        q("", &h(2, "pdq"), 20),
    ];
    // The node syncs the list at start: wait until it holds it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let answers = loop {
        let a = client
            .check(pb::CheckRequest {
                queries: queries.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .answers;
        if a[0].known || Instant::now() > deadline {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        answers[0].known
            && answers[0].kind == pb::MatchKind::Sha256 as i32
            && answers[0].distance == 0
    );
    assert!(answers[1].known && answers[1].kind == pb::MatchKind::Pdq as i32);
    assert!(
        answers[1].distance > 0 && answers[1].distance <= 31,
        "{}",
        answers[1].distance
    );
    assert!(!answers[2].known);
    assert!(
        !answers[3].known,
        "a query of quality below 50 never matches"
    );

    // A malformed hash refuses the call, naming it.
    let e = client
        .check(pb::CheckRequest {
            queries: vec![q(&h(0, "sha256"), "", 0), q("xyz", "", 0)],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("queries[1].sha256"), "{}", e.message());

    // HTTP/JSON, same port, same certificate: known or not, kind, distance; nothing else.
    let body = format!(
        r#"{{"queries": [{{"sha256": "{}"}}, {{"pdq": "{}", "pdq_quality": 100}}, {{"md5": "{}"}}]}}"#,
        h(0, "sha256"),
        h(2, "pdq"),
        "ab".repeat(16)
    );
    let curl = |cert: &Path, key: &Path, body: &str| {
        run(Command::new("curl")
            .args(["-sS", "--http1.1", "--cacert"])
            .arg(p.join("ca.pem"))
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .args([
                "--resolve",
                &format!("{SERVER}:{}:127.0.0.1", served.addr.port()),
            ])
            .args(["-H", "content-type: application/json", "-d", body])
            .arg(format!("https://{SERVER}:{}/v1/check", served.addr.port())))
    };
    let o = curl(&p.join("hoster1.pem"), &p.join("hoster1.key"), &body);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o))
        .unwrap_or_else(|e| panic!("{e}: {} {}", stdout(&o), stderr(&o)));
    assert_eq!(
        v["answers"][0],
        serde_json::json!({"known": true, "kind": "sha256", "distance": 0})
    );
    assert_eq!(v["answers"][1]["kind"], "pdq");
    assert_eq!(v["answers"][2], serde_json::json!({"known": false}));
    let text = stdout(&o);
    for secret in ["series-7", "baseline", "NL", "classification", "source"] {
        assert!(
            !text.contains(secret),
            "the answer reveals {secret}: {text}"
        );
    }

    // A provider certified by node NL: refused at the handshake.
    let nl = provider(&fed, "NL", "hosternl");
    let mut other = pb::hash_check_client::HashCheckClient::new(channel(
        served.addr,
        &p.join("ca.pem"),
        &nl.join("hosternl.pem"),
        &nl.join("hosternl.key"),
    ));
    assert!(other
        .check(pb::CheckRequest {
            queries: queries.clone()
        })
        .await
        .is_err());
    // The police of the same country: a member, refused by role, told why.
    let bka = fed.root().join("agencies/DE-bka");
    let mut police = pb::hash_check_client::HashCheckClient::new(channel(
        served.addr,
        &p.join("ca.pem"),
        &bka.join("agency.pem"),
        &bka.join("agency.key"),
    ));
    let e = police
        .check(pb::CheckRequest {
            queries: queries.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    assert!(
        e.message().contains("not a hosting provider of DE"),
        "{}",
        e.message()
    );
    let o = curl(&bka.join("agency.pem"), &bka.join("agency.key"), &body);
    assert!(
        stdout(&o).contains("not a hosting provider of DE"),
        "{}",
        stdout(&o)
    );

    // Counted per provider: the gRPC answers that came back (at least the
    // first round of 4) and the 3 over HTTP.
    let m = run(Command::new("curl").args(["-sS", &format!("http://{metrics_addr}/metrics")]));
    let metrics = stdout(&m);
    let count = metrics
        .lines()
        .find(|l| l.starts_with("meldnet_hash_checks_total{provider=\"hoster1\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no count for hoster1: {metrics}"));
    assert!(count >= 7 && (count - 3) % 4 == 0, "{count}");
    assert!(
        metrics.contains("meldnet_hash_check_refused_total"),
        "{metrics}"
    );
    drop(served);
}

/// `meldnet-node serve` says where providers call it, on its first line of
/// standard output (the config's `listen` may leave the port to the system).
#[test]
fn the_node_prints_where_providers_call_it() {
    use std::io::BufRead;
    let fed = Federation::init("NL,DE", "DE/bka").unwrap();
    let ready = fed.scratch("r").join("ready");
    let mut child = std::process::Command::new(bin("meldnet-node"))
        .args(["serve", "--config"])
        .arg(fed.node_config("DE"))
        .arg("--ready-file")
        .arg(&ready)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let addr = v["listening"].as_str().unwrap();
    assert_eq!(std::fs::read_to_string(&ready).unwrap().trim(), addr);
    assert!(!addr.ends_with(":0"), "{line}");
    assert_eq!(v["http"], format!("https://{addr}/v1/check"));
    // The name its certificate holds, which providers check it for.
    assert_eq!(v["server_name"], SERVER, "{line}");
}
