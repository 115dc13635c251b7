//! `meldnet-bench hashcheck`: hosting providers' batched checks against a
//! node's copy of the known-hash list, over mTLS, as providers make them.
//! A real hub imports `--entries` generated entries (SHA-256 and PDQ each)
//! from a CSV file, a real node syncs them and serves `meldnet-node serve`;
//! then `--clients` provider connections ask, each one batch after the
//! other for `--seconds`, for every mix of transport (gRPC `HashCheck.Check`,
//! HTTP/JSON `POST /v1/check`) and kind (exact SHA-256, PDQ within 31):
//! half the hashes of each batch are listed entries (PDQ ones a few bits
//! off), half unrelated. Figures: hashes per second, per second per core
//! of the node (its CPU time over the phase, from /proc), and p50 / p99 per
//! batch. Every answer is checked: a listed hash must come back known, an
//! unrelated one unknown. Last line: one JSON object.

use crate::ingest::{free_port, make_federation, sibling, start_hub, stop_hub};
use crate::stats::{cpu_secs, percentile};
use anyhow::{bail, Context};
use meldnet_net::{load_certs, load_key, HubEndpoint};
use meldnet_proto::v1 as pb;
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Arguments of `meldnet-bench hashcheck`.
#[derive(Debug, Clone, clap::Args)]
pub struct HashCheckArgs {
    /// Entries in the list (K and M suffixes).
    #[arg(long, default_value = "10M")]
    pub entries: String,
    /// Hashes per call.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Provider connections asking at once.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Seconds each mix of transport and kind runs.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Keep the federation here instead of a temporary folder.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// The hashes of the generated list's entries: entry `i`'s from a seed, so
/// that queries can be made again without holding the list.
fn entry_hashes(i: u64) -> ([u8; 32], [u8; 32]) {
    let mut s = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut sha = [0u8; 32];
    let mut pdq = [0u8; 32];
    for c in sha.chunks_mut(8).chain(pdq.chunks_mut(8)) {
        c.copy_from_slice(&next().to_le_bytes());
    }
    (sha, pdq)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One batch: queries and, for each, whether it must come back known.
fn batch(kind: &str, n: usize, entries: u64, rng: &mut u64) -> (Vec<pb::HashQuery>, Vec<bool>) {
    let mut next = || {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng
    };
    let mut queries = Vec::with_capacity(n);
    let mut want = Vec::with_capacity(n);
    for k in 0..n {
        let listed = k % 2 == 0;
        let (sha, mut pdq) = if listed {
            entry_hashes(next() % entries)
        } else {
            // Not from the list's seed: unrelated.
            let mut a = [0u8; 32];
            let mut b = [0u8; 32];
            for c in a.chunks_mut(8).chain(b.chunks_mut(8)) {
                c.copy_from_slice(&next().to_le_bytes());
            }
            (a, b)
        };
        if listed {
            // A re-encoding: a few bits of the PDQ off.
            for _ in 0..(next() % 12) {
                let bit = (next() % 256) as usize;
                pdq[bit / 8] ^= 1 << (bit % 8);
            }
        }
        let q = match kind {
            "exact" => pb::HashQuery {
                sha256: hex(&sha),
                ..Default::default()
            },
            _ => pb::HashQuery {
                pdq: hex(&pdq),
                pdq_quality: 90,
                ..Default::default()
            },
        };
        queries.push(q);
        want.push(listed);
    }
    (queries, want)
}

/// The size with K/M suffix.
fn parse_count(s: &str) -> anyhow::Result<u64> {
    let (num, mul) = match s.strip_suffix(['M', 'm']) {
        Some(n) => (n, 1_000_000),
        None => match s.strip_suffix(['K', 'k']) {
            Some(n) => (n, 1_000),
            None => (s, 1),
        },
    };
    Ok(num
        .parse::<u64>()
        .with_context(|| format!("--entries {s}"))?
        * mul)
}

/// A minimal HTTP/1.1 client over one kept-alive mTLS connection: a
/// provider's plain HTTP/JSON path, with nothing of ours in between.
struct Http {
    stream: BufReader<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    host: String,
}

impl Http {
    async fn connect(
        addr: &str,
        name: &str,
        tls: Arc<rustls::ClientConfig>,
    ) -> anyhow::Result<Http> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let server = rustls::pki_types::ServerName::try_from(name.to_string())?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(server, tcp)
            .await?;
        Ok(Http {
            stream: BufReader::new(stream),
            host: name.to_string(),
        })
    }

    async fn post(&mut self, body: &[u8]) -> anyhow::Result<Vec<u8>> {
        let head = format!(
            "POST /v1/check HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        let s = self.stream.get_mut();
        s.write_all(head.as_bytes()).await?;
        s.write_all(body).await?;
        s.flush().await?;
        let mut status = String::new();
        self.stream.read_line(&mut status).await?;
        if !status.starts_with("HTTP/1.1 200") {
            bail!("HTTP answer: {}", status.trim());
        }
        let mut len = None;
        loop {
            let mut line = String::new();
            if self.stream.read_line(&mut line).await? == 0 {
                bail!("HTTP answer cut short");
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = Some(v.trim().parse::<usize>()?);
                }
            }
        }
        let mut out = vec![0u8; len.context("HTTP answer without content-length")?];
        self.stream.read_exact(&mut out).await?;
        Ok(out)
    }
}

/// What one client measured in one phase.
#[derive(Default)]
struct Tally {
    hashes: u64,
    wrong: u64,
    latencies_ms: Vec<f64>,
}

/// Where and how a client asks.
#[derive(Clone)]
struct Asker {
    args: Arc<HashCheckArgs>,
    entries: u64,
    hub: HubEndpoint,
    tls_files: meldnet_net::ClientTlsFiles,
    rustls_config: Arc<rustls::ClientConfig>,
}

async fn client(
    transport: &'static str,
    kind: &'static str,
    seed: u64,
    asker: Asker,
) -> anyhow::Result<Tally> {
    let Asker {
        args: a,
        entries,
        hub,
        tls_files,
        rustls_config,
    } = asker;
    let mut rng = seed | 1;
    let mut t = Tally::default();
    let until = Instant::now() + Duration::from_secs_f64(a.seconds);
    let mut grpc = match transport {
        "grpc" => Some(
            pb::hash_check_client::HashCheckClient::new(
                meldnet_net::connect(&hub, &tls_files).await?,
            )
            .max_decoding_message_size(meldnet_net::CLIENT_MAX_DECODE),
        ),
        _ => None,
    };
    let mut http = match transport {
        "http" => Some(Http::connect(&hub.address, &hub.server_name, rustls_config).await?),
        _ => None,
    };
    while Instant::now() < until {
        let (queries, want) = batch(kind, a.batch, entries, &mut rng);
        let start = Instant::now();
        let known: Vec<bool> = if let Some(c) = grpc.as_mut() {
            let answers = c
                .check(pb::CheckRequest { queries })
                .await?
                .into_inner()
                .answers;
            answers.iter().map(|x| x.known).collect()
        } else if let Some(h) = http.as_mut() {
            let body = json!({"queries": queries.iter().map(|q| if q.sha256.is_empty() {
                json!({"pdq": q.pdq, "pdq_quality": q.pdq_quality})
            } else {
                json!({"sha256": q.sha256})
            }).collect::<Vec<_>>()});
            let out: Value = serde_json::from_slice(&h.post(&serde_json::to_vec(&body)?).await?)?;
            out["answers"]
                .as_array()
                .map(|v| v.iter().map(|x| x["known"] == true).collect())
                .unwrap_or_default()
        } else {
            bail!("transport {transport}");
        };
        t.latencies_ms.push(start.elapsed().as_secs_f64() * 1e3);
        if known.len() != want.len() {
            bail!("{} answers to {} queries", known.len(), want.len());
        }
        t.hashes += want.len() as u64;
        t.wrong += known.iter().zip(&want).filter(|(k, w)| k != w).count() as u64;
    }
    Ok(t)
}

/// The last lines of a command's error output (a progress bar's redraws
/// make the whole of it long).
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

/// Runs the benchmark and prints the figures.
pub fn run(a: HashCheckArgs) -> anyhow::Result<()> {
    let entries = parse_count(&a.entries)?;
    if entries == 0 || a.batch == 0 || a.clients == 0 {
        bail!("--entries, --batch and --clients must be above 0");
    }
    let tmp = tempfile::tempdir()?;
    let root = a.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let fed = root.join("fed");
    let hub_addr = format!("127.0.0.1:{}", free_port()?);
    make_federation(&fed, "DE", &hub_addr)?;
    let provider = root.join("provider");
    let st = Command::new(sibling("meldnet-certs")?)
        .args(["provider", "--node-dir"])
        .arg(fed.join("nodes/DE"))
        .args(["--name", "bench-hoster", "--out"])
        .arg(&provider)
        .stdout(Stdio::null())
        .status()?;
    if !st.success() {
        bail!("meldnet-certs provider failed");
    }

    // The list: generated, imported into a real hub, synced by the node.
    let csv = root.join("list.csv");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&csv)?);
        writeln!(f, "sha256,pdq,pdq_quality,category")?;
        for i in 0..entries {
            let (sha, pdq) = entry_hashes(i);
            writeln!(f, "{},{},90,baseline", hex(&sha), hex(&pdq))?;
        }
    }
    let (mut hub, _) = start_hub(&root, &fed, "hub")?;
    eprintln!("hashcheck: importing {entries} entries into the hub");
    let t = Instant::now();
    let out = Command::new(sibling("meldnet-hub")?)
        .args(["list", "import", "--operator"])
        .arg(fed.join("operators/admin/operator.toml"))
        .args(["--source-country", "NL"])
        .arg(&csv)
        .output()?;
    let import_s = t.elapsed().as_secs_f64();
    if !out.status.success() {
        stop_hub(&mut hub);
        bail!(
            "meldnet-hub list import failed: {}",
            tail(&String::from_utf8_lossy(&out.stderr))
        );
    }
    let t = Instant::now();
    let out = Command::new(sibling("meldnet-node")?)
        .args(["list", "sync", "--config"])
        .arg(fed.join("nodes/DE/node.toml"))
        .output()?;
    let sync_s = t.elapsed().as_secs_f64();
    if !out.status.success() {
        stop_hub(&mut hub);
        bail!(
            "meldnet-node list sync failed: {}",
            tail(&String::from_utf8_lossy(&out.stderr))
        );
    }
    eprintln!("  imported in {import_s:.1} s, synced by the node in {sync_s:.1} s");

    let ready = root.join("node.ready");
    let t = Instant::now();
    let mut node = Command::new(sibling("meldnet-node")?)
        .args(["serve", "--config"])
        .arg(fed.join("nodes/DE/node.toml"))
        .arg("--ready-file")
        .arg(&ready)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(root.join("node.log"))?)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let addr = loop {
        if let Ok(s) = std::fs::read_to_string(&ready) {
            if !s.is_empty() {
                break s;
            }
        }
        if Instant::now() > deadline || node.try_wait()?.is_some() {
            stop_hub(&mut hub);
            bail!(
                "node did not start; see {}",
                root.join("node.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let node_ready_s = t.elapsed().as_secs_f64();
    let node_rss_mb = crate::stats::rss_mb(node.id()).unwrap_or(0.0);
    eprintln!("  node serving at {addr} after {node_ready_s:.1} s, {node_rss_mb:.0} MiB");

    let tls_files = meldnet_net::ClientTlsFiles {
        ca: provider.join("ca.pem"),
        cert: provider.join("bench-hoster.pem"),
        key: provider.join("bench-hoster.key"),
    };
    let endpoint = HubEndpoint {
        address: addr.trim().to_string(),
        server_name: "hashcheck.de.bench.meldnet.test".into(),
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(&tls_files.ca, "ca")? {
        roots.add(c)?;
    }
    let rustls_config = Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                load_certs(&tls_files.cert, "cert")?,
                load_key(&tls_files.key)?,
            )?,
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let asker = Asker {
        args: Arc::new(a.clone()),
        entries,
        hub: endpoint,
        tls_files,
        rustls_config,
    };
    let mut figures = json!({
        "entries": entries,
        "batch": a.batch,
        "clients": a.clients,
        "import_seconds": import_s,
        "sync_seconds": sync_s,
        "node_ready_seconds": node_ready_s,
        "node_rss_mb": node_rss_mb,
        "cores": std::thread::available_parallelism().map_or(1, |n| n.get()),
    });
    let mut all_right = true;
    for transport in ["grpc", "http"] {
        for kind in ["exact", "pdq"] {
            let cpu0 = cpu_secs(node.id()).unwrap_or(0.0);
            let t = Instant::now();
            let tallies: Vec<anyhow::Result<Tally>> = rt.block_on(async {
                let mut tasks = Vec::new();
                for c in 0..a.clients {
                    tasks.push(tokio::spawn(client(
                        transport,
                        kind,
                        0x5EED + c as u64 * 7919,
                        asker.clone(),
                    )));
                }
                let mut out = Vec::new();
                for task in tasks {
                    out.push(task.await.unwrap_or_else(|e| Err(e.into())));
                }
                out
            });
            let secs = t.elapsed().as_secs_f64();
            let cpu = cpu_secs(node.id()).unwrap_or(0.0) - cpu0;
            let mut total = Tally::default();
            for tally in tallies {
                let tally = tally.with_context(|| format!("{transport} {kind}"))?;
                total.hashes += tally.hashes;
                total.wrong += tally.wrong;
                total.latencies_ms.extend(tally.latencies_ms);
            }
            all_right &= total.wrong == 0;
            let per_s = total.hashes as f64 / secs;
            let per_core = total.hashes as f64 / cpu.max(1e-9);
            let p50 = percentile(&mut total.latencies_ms, 50.0);
            let p99 = percentile(&mut total.latencies_ms, 99.0);
            eprintln!(
                "  {transport} {kind}: {per_s:.0} hashes/s, {per_core:.0} per node core-second (node CPU {cpu:.1} s in {secs:.1} s); batch p50 {p50:.2} ms, p99 {p99:.2} ms; wrong answers {}",
                total.wrong
            );
            figures[format!("{transport}_{kind}")] = json!({
                "hashes_per_s": per_s,
                "hashes_per_node_core_s": per_core,
                "node_cpu_s": cpu,
                "seconds": secs,
                "batch_p50_ms": p50,
                "batch_p99_ms": p99,
                "wrong_answers": total.wrong,
            });
        }
    }
    let _ = node.kill();
    let _ = node.wait();
    stop_hub(&mut hub);
    figures["all_answers_right"] = json!(all_right);
    println!("{figures}");
    if !all_right {
        bail!("some answers were wrong");
    }
    Ok(())
}
