//! The one harness that starts a federation for whole-system tests: real
//! `meldnet-*` processes, certificates made by `meldnet-certs`, real mTLS on
//! loopback. Tests drive the node and agency command lines as a hotline or a
//! police engineer would, and talk gRPC directly where they need to forge
//! what no honest client would send.

pub mod crash;
pub mod faults;
pub mod postgres;

use anyhow::{bail, Context, Result};
use meldnet_core::{
    AgeGroup, Classification, EuLinkFacts, Item, MediaType, Report, ReportId, ReportUrl,
};
use meldnet_core::{Context as SignContext, SigningKey};
use meldnet_proto::v1 as pb;
use prost::Message;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The federation every test uses unless it needs another.
pub const FEDERATION: &str = "eu.meldnet.test";

/// Path of a workspace binary, built by `cargo test --workspace` (or `cargo build`).
/// `MELDNET_BIN_DIR` points the tests at other builds of the binaries (to
/// show that a test fails against an older release).
pub fn bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("MELDNET_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> -> target/<profile>/<name>; a harness
    // binary (target/<profile>/<harness>) finds them beside itself.
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo build --workspace --bins` first",
        p.display()
    );
    p
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Runs a command, returning its output; never panics on a non-zero exit.
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"))
}

/// stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Each stdout line that is a JSON object.
pub fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    stdout(o)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Report ids a `pull`/`inbox` run stored, from its JSON lines.
pub fn stored_ids(o: &Output) -> Vec<String> {
    json_lines(o)
        .iter()
        .filter_map(|l| l["report_id"].as_str().map(String::from))
        .collect()
}

/// How many deliveries a `pull`/`inbox` run received that it had already
/// stored: anything but 0 means the hub delivered an acknowledged report again.
pub fn already_stored(o: &Output) -> usize {
    let err = stderr(o);
    err.split(", ")
        .find_map(|part| part.strip_suffix(" already stored"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no summary in: {err}"))
}

/// Asserts that a receive run got exactly `expected` (in any order) and
/// nothing it had before.
pub fn assert_received(o: &Output, expected: &[String]) {
    assert!(o.status.success(), "receive failed: {}", stderr(o));
    let mut got = stored_ids(o);
    got.sort();
    let mut want = expected.to_vec();
    want.sort();
    assert_eq!(got, want, "{}", stderr(o));
    assert_eq!(
        already_stored(o),
        0,
        "an acknowledged delivery came again: {}",
        stderr(o)
    );
}

/// Runs `meldnet-agency COMMAND... --config CONFIG ARGS`.
fn agency_command(config: &Path, command: &[&str], args: &[&str]) -> Output {
    run(Command::new(bin("meldnet-agency"))
        .args(command)
        .arg("--config")
        .arg(config)
        .args(args))
}

/// A federation in a temporary folder, with the hub as a child process.
pub struct Federation {
    dir: tempfile::TempDir,
    /// Where the hub listens.
    pub hub_addr: SocketAddr,
    hub: Option<Child>,
    /// Environment of every hub process started from now on (a fault shim).
    pub hub_env: Vec<(String, String)>,
}

impl Federation {
    /// Certificates, keys and configs for these nodes and agencies
    /// (`meldnet-certs init`); the hub is not started yet.
    pub fn init(nodes: &str, agencies: &str) -> Result<Federation> {
        Self::init_with(nodes, agencies, &[])
    }

    /// As `init`, with more `meldnet-certs init` arguments (e.g.
    /// `--regulators DE/bnetza`).
    pub fn init_with(nodes: &str, agencies: &str, extra: &[&str]) -> Result<Federation> {
        let dir = tempfile::tempdir()?;
        let hub_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let out = run(Command::new(bin("meldnet-certs"))
            .args([
                "init",
                "--dir",
                &dir.path().join("fed").display().to_string(),
                "--federation",
                FEDERATION,
                "--nodes",
                nodes,
                "--agencies",
                agencies,
                "--hub-addr",
                &hub_addr.to_string(),
            ])
            .args(extra));
        if !out.status.success() {
            bail!("meldnet-certs init failed: {}", stderr(&out));
        }
        Ok(Federation {
            dir,
            hub_addr,
            hub: None,
            hub_env: Vec::new(),
        })
    }

    /// The usual test federation: nodes NL, DE, FR; police DE, NL, FR; Europol; hub started.
    pub fn start_default() -> Result<Federation> {
        let mut f = Federation::init("NL,DE,FR", "DE/bka,NL/politie,FR/police,EU/europol")?;
        f.start_hub()?;
        Ok(f)
    }

    /// The folder `meldnet-certs init` wrote.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("fed")
    }

    /// A scratch folder for the test.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        let _ = std::fs::create_dir_all(&p);
        p
    }

    /// `hub/hub.toml`.
    pub fn hub_config(&self) -> PathBuf {
        self.root().join("hub/hub.toml")
    }

    /// `nodes/CC/node.toml`.
    pub fn node_config(&self, cc: &str) -> PathBuf {
        self.root().join(format!("nodes/{cc}/node.toml"))
    }

    /// `agencies/J-name/agency.toml`, e.g. `DE-bka`.
    pub fn agency_config(&self, dir: &str) -> PathBuf {
        self.root().join(format!("agencies/{dir}/agency.toml"))
    }

    /// `operators/admin/operator.toml`.
    pub fn operator_config(&self) -> PathBuf {
        self.root().join("operators/admin/operator.toml")
    }

    /// Runs `meldnet-hub list COMMAND --operator <admin's config> ARGS`.
    pub fn hub_list(&self, command: &str, args: &[&str]) -> Output {
        run(Command::new(bin("meldnet-hub"))
            .args(["list", command, "--operator"])
            .arg(self.operator_config())
            .args(args))
    }

    /// Runs `meldnet-hub admin --operator <admin's config> ARGS`.
    pub fn hub_admin(&self, args: &[&str]) -> Output {
        run(Command::new(bin("meldnet-hub"))
            .args(["admin", "--operator"])
            .arg(self.operator_config())
            .args(args))
    }

    /// Appends TOML to `hub.toml` (before the hub starts).
    pub fn add_hub_config(&self, text: &str) -> Result<()> {
        let path = self.hub_config();
        let old = std::fs::read_to_string(&path)?;
        std::fs::write(&path, format!("{old}\n{text}\n"))?;
        Ok(())
    }

    /// Runs `meldnet-agency COMMAND` as regulator `dir` (e.g. `DE-bnetza`).
    pub fn regulator(&self, dir: &str, command: &str, args: &[&str]) -> Output {
        let config = self.root().join(format!("regulators/{dir}/agency.toml"));
        agency_command(&config, &[command], args)
    }

    /// `representatives/CC-name/agency.toml`, e.g. `NL-fier`.
    pub fn representative_config(&self, dir: &str) -> PathBuf {
        self.root()
            .join(format!("representatives/{dir}/agency.toml"))
    }

    /// Runs `meldnet-agency COMMAND` as representative `dir` (e.g. `NL-fier`).
    pub fn representative(&self, dir: &str, command: &str, args: &[&str]) -> Output {
        agency_command(&self.representative_config(dir), &[command], args)
    }

    /// Runs `meldnet-agency series SUB --config CONFIG ARGS` (police or
    /// representative, by the config).
    pub fn series(&self, config: &Path, sub: &str, args: &[&str]) -> Output {
        agency_command(config, &["series", sub], args)
    }

    /// Signs `report` as node `cc` and submits it over gRPC: the decision
    /// from the receipt, or the refusal.
    pub async fn submit_as(&self, cc: &str, report: &pb::Report) -> Result<pb::Decision> {
        let ch = self.channel_as(&format!("nodes/{cc}/node")).await?;
        let mut client = pb::submission_client::SubmissionClient::new(ch);
        let receipt = client
            .submit(sign_proto(report, &self.node_key(cc)))
            .await?
            .into_inner();
        let d = receipt.decision.context("receipt without decision")?;
        Ok(pb::Decision::decode(d.decision.as_slice())?)
    }

    /// Signs `reports` as node `cc` and submits them in batches of 1000 on
    /// one stream: the decisions, in order; a refusal fails.
    pub async fn submit_many(&self, cc: &str, reports: &[pb::Report]) -> Result<Vec<pb::Decision>> {
        let ch = self.channel_as(&format!("nodes/{cc}/node")).await?;
        let mut client = pb::submission_client::SubmissionClient::new(ch)
            .max_decoding_message_size(meldnet_core::limits::MAX_MESSAGE_BYTES);
        let key = self.node_key(cc);
        let batches: Vec<pb::SubmitBatch> = reports
            .chunks(1000)
            .map(|c| pb::SubmitBatch {
                reports: c.iter().map(|r| sign_proto(r, &key)).collect(),
            })
            .collect();
        let mut results = client
            .submit_stream(tokio_stream::iter(batches))
            .await?
            .into_inner();
        let mut out = Vec::with_capacity(reports.len());
        while let Some(batch) = results.message().await? {
            for r in batch.results {
                match r.outcome {
                    Some(pb::submit_result::Outcome::Receipt(rc)) => {
                        let d = rc.decision.context("receipt without decision")?;
                        out.push(pb::Decision::decode(d.decision.as_slice())?);
                    }
                    other => bail!("report {} refused: {other:?}", r.index),
                }
            }
        }
        Ok(out)
    }

    /// The hub's log file (stderr of every hub process started).
    pub fn hub_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("hub.log")).unwrap_or_default()
    }

    /// Starts `meldnet-hub serve` and waits until it listens.
    pub fn start_hub(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("hub.log"))?;
        let (child, _) = start_serving(
            Command::new(bin("meldnet-hub"))
                .args(["serve", "--config"])
                .arg(self.hub_config())
                .envs(self.hub_env.iter().map(|(k, v)| (k, v))),
            &self.dir.path().join("hub.ready"),
            log,
            || self.hub_log(),
        )?;
        self.hub = Some(child);
        Ok(())
    }

    /// The hub's process id, while it runs.
    pub fn hub_pid(&self) -> Option<u32> {
        self.hub.as_ref().map(Child::id)
    }

    /// The hub's peak resident memory so far, in KiB (`VmHWM`).
    pub fn hub_peak_kib(&self) -> Result<u64> {
        let pid = self.hub_pid().context("the hub is not running")?;
        peak_kib(pid)
    }

    /// Issues one more certificate from the federation CA for `identity`
    /// (`meldnet-certs issue`), to `scratch/certs/<name>.pem|.key`; returns
    /// the path stem.
    pub fn issue(&self, identity: &str, name: &str, extra: &[&str]) -> Result<PathBuf> {
        let out = self.scratch("certs").join(name);
        let o = run(Command::new(bin("meldnet-certs"))
            .args(["issue", "--dir"])
            .arg(self.root())
            .args(["--identity", identity, "--out"])
            .arg(&out)
            .args(extra));
        if !o.status.success() {
            bail!("meldnet-certs issue failed: {}", stderr(&o));
        }
        Ok(out)
    }

    /// A channel with the certificate at `stem` (`.pem`, `.key`).
    pub async fn channel_stem(&self, stem: &Path) -> Result<Channel> {
        self.channel_with(
            &self.root().join("ca.pem"),
            &stem.with_extension("pem"),
            &stem.with_extension("key"),
        )
        .await
    }

    /// How the hub ended, if it did (it stops itself when its store cannot
    /// be made durable); the process is forgotten then.
    pub fn hub_exit(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.hub.as_mut().and_then(|h| h.try_wait().ok().flatten());
        if status.is_some() {
            self.hub = None;
        }
        status
    }

    /// Kills the hub with SIGKILL: no chance to flush anything.
    pub fn kill_hub(&mut self) {
        if let Some(mut h) = self.hub.take() {
            unsafe {
                libc::kill(h.id() as i32, libc::SIGKILL);
            }
            let _ = h.wait();
        }
    }

    /// Stops the hub with SIGTERM and waits for it.
    pub fn stop_hub(&mut self) {
        if let Some(mut h) = self.hub.take() {
            unsafe {
                libc::kill(h.id() as i32, libc::SIGTERM);
            }
            let _ = h.wait();
        }
    }

    /// Runs `meldnet-node ARGS --config <CC's config>`.
    pub fn node(&self, cc: &str, args: &[&str]) -> Output {
        run(Command::new(bin("meldnet-node"))
            .args(args)
            .arg("--config")
            .arg(self.node_config(cc)))
    }

    /// Builds a report at node `cc` over the given files and submits it;
    /// returns the report id from the JSON output.
    pub fn report(
        &self,
        cc: &str,
        url: &str,
        link: &[&str],
        files: &[&Path],
    ) -> Result<(String, Vec<serde_json::Value>)> {
        self.report_as(cc, url, "baseline", link, files)
    }

    /// As `report`, with the analyst's classification (`baseline`,
    /// `national`, `not-illegal`, `unassessed`).
    pub fn report_as(
        &self,
        cc: &str,
        url: &str,
        classification: &str,
        link: &[&str],
        files: &[&Path],
    ) -> Result<(String, Vec<serde_json::Value>)> {
        let mut cmd = Command::new(bin("meldnet-node"));
        cmd.args(["report", "new", "--config"])
            .arg(self.node_config(cc))
            .args([
                "--url",
                url,
                "--classification",
                classification,
                "--age-group",
                "prepubescent",
                "--submit",
            ])
            .args(link)
            .args(files);
        let out = run(&mut cmd);
        let lines = json_lines(&out);
        let id = lines
            .first()
            .and_then(|l| l["report_id"].as_str())
            .map(str::to_string)
            .with_context(|| format!("no report id: {} {}", stdout(&out), stderr(&out)))?;
        if !out.status.success() {
            bail!(
                "report new --submit failed: {} {}",
                stdout(&out),
                stderr(&out)
            );
        }
        Ok((id, lines))
    }

    /// Runs `meldnet-agency pull --config <dir's config> ARGS`.
    pub fn pull(&self, agency_dir: &str, args: &[&str]) -> Output {
        self.agency(agency_dir, "pull", args)
    }

    /// Runs `meldnet-agency COMMAND --config <dir's config> ARGS`.
    pub fn agency(&self, agency_dir: &str, command: &str, args: &[&str]) -> Output {
        agency_command(&self.agency_config(agency_dir), &[command], args)
    }

    /// A gRPC channel to the hub presenting the given certificate and key.
    pub async fn channel_with(&self, ca: &Path, cert: &Path, key: &Path) -> Result<Channel> {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(std::fs::read(ca)?))
            .identity(Identity::from_pem(
                std::fs::read(cert)?,
                std::fs::read(key)?,
            ))
            .domain_name(format!("hub.{FEDERATION}"));
        Ok(Endpoint::from_shared(format!("https://{}", self.hub_addr))?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy())
    }

    /// A channel as a party of this federation: `nodes/NL/node`,
    /// `agencies/DE-bka/agency`, `operators/admin/operator` (path stem).
    pub async fn channel_as(&self, stem: &str) -> Result<Channel> {
        let root = self.root();
        self.channel_with(
            &root.join("ca.pem"),
            &root.join(format!("{stem}.pem")),
            &root.join(format!("{stem}.key")),
        )
        .await
    }

    /// The signing key of node `cc`.
    pub fn node_key(&self, cc: &str) -> SigningKey {
        SigningKey::load(&self.root().join(format!("nodes/{cc}/signing.key")))
            .expect("node signing key")
    }

    /// The hub's stored state, via the operator's Admin API.
    pub async fn state(&self) -> Result<pb::StateDigestResponse> {
        let ch = self.channel_as("operators/admin/operator").await?;
        let mut admin = pb::admin_client::AdminClient::new(ch);
        Ok(admin
            .state_digest(pb::StateDigestRequest {})
            .await?
            .into_inner())
    }
}

/// Starts a serving process with `--ready-file ready` (stderr to `log`) and
/// waits until it has written its bound address there.
fn start_serving(
    cmd: &mut Command,
    ready: &Path,
    log: std::fs::File,
    read_log: impl Fn() -> String,
) -> Result<(Child, SocketAddr)> {
    let _ = std::fs::remove_file(ready);
    let mut child = cmd
        .arg("--ready-file")
        .arg(ready)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("spawning {cmd:?}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(addr) = std::fs::read_to_string(ready)
            .ok()
            .and_then(|a| a.trim().parse().ok())
        {
            return Ok((child, addr));
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!("{cmd:?} exited with {status}: {}", read_log());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("{cmd:?} did not start within 30 s: {}", read_log());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `meldnet-node serve` process, killed when dropped.
pub struct Served {
    child: Child,
    /// Where it answers hash checks.
    pub addr: SocketAddr,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Federation {
    /// Starts `meldnet-node serve` for node `cc` and waits until it listens.
    pub fn serve_node(&self, cc: &str) -> Result<Served> {
        let log = std::fs::File::create(self.dir.path().join(format!("node-{cc}.log")))?;
        let (child, addr) = start_serving(
            Command::new(bin("meldnet-node"))
                .args(["serve", "--config"])
                .arg(self.node_config(cc)),
            &self.dir.path().join(format!("node-{cc}.ready")),
            log,
            || self.node_log(cc),
        )?;
        Ok(Served { child, addr })
    }

    /// The log of `meldnet-node serve` for node `cc`.
    pub fn node_log(&self, cc: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node-{cc}.log"))).unwrap_or_default()
    }
}

impl Drop for Federation {
    fn drop(&mut self) {
        self.kill_hub();
    }
}

/// A valid report of `origin` hosted in `hosting`, with one item.
pub fn sample_report(origin: &str, hosting: &str) -> Report {
    let cc = |s: &str| meldnet_core::CountryCode::parse(s).ok();
    Report {
        id: ReportId::new_v7(),
        origin: cc(origin).expect("origin"),
        created_at_ms: meldnet_core::time::now_ms(),
        url: ReportUrl::parse("https://files.example.test/abc").expect("url"),
        eu_link: EuLinkFacts {
            hosting: cc(hosting),
            ..Default::default()
        },
        items: vec![Item {
            sha256: meldnet_core::Sha256::of(b"test item"),
            md5: meldnet_core::Md5([0x11; 16]),
            pdq: None,
            classification: Classification::Baseline,
            age_group: AgeGroup::Pubescent,
            media_type: MediaType::Image,
            known: None,
        }],
    }
}

/// Signs the exact encoding of a wire report.
pub fn sign_proto(report: &pb::Report, key: &SigningKey) -> pb::SignedReport {
    let bytes = report.encode_to_vec();
    pb::SignedReport {
        signature: key.sign(SignContext::Report, &bytes).to_vec(),
        key_id: key.public().id().to_string(),
        report: bytes,
    }
}

/// Writes a small generated test file: a real picture (in the format its name
/// says) for picture names, synthetic bytes otherwise; never real imagery.
pub fn synthetic_file(dir: &Path, name: &str, seed: u8) -> PathBuf {
    let p = dir.join(name);
    let is_picture = [
        ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff",
    ]
    .iter()
    .any(|e| name.ends_with(e));
    if is_picture {
        synthetic_picture(seed)
            .save(&p)
            .expect("write test picture");
    } else {
        let bytes: Vec<u8> = (0..4096u32)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect();
        std::fs::write(&p, bytes).expect("write test file");
    }
    p
}

/// A made-up 96x64 picture, different for every seed: shapes and gradients,
/// never real imagery.
pub fn synthetic_picture(seed: u8) -> image::RgbImage {
    let s = u32::from(seed);
    image::RgbImage::from_fn(96, 64, |x, y| {
        let band = ((x * (s % 7 + 1) + y * (s % 5 + 2)) / 9) % 2;
        let v = (x * 255 / 96) as u8;
        let w = (y * 255 / 64) as u8;
        if band == 0 {
            image::Rgb([v, w, seed])
        } else {
            image::Rgb([255 - w, seed.wrapping_mul(3), v])
        }
    })
}

/// The PDQ test images and their reference outputs (`expected.tsv`, made by
/// Meta's PDQ through `tests/data/pdq/reference.py`): the repository's own
/// set, or Meta's whole data folder where `MELDNET_PDQ_DATA` points (with an
/// `expected.tsv` that script wrote for it).
pub fn pdq_data() -> PathBuf {
    match std::env::var_os("MELDNET_PDQ_DATA") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("data/pdq"),
    }
}

/// The rows of `expected.tsv`: file (relative to `pdq_data()`), hash, quality.
pub fn expected_pdq() -> Vec<(String, meldnet_core::PdqHash, u8)> {
    let text = std::fs::read_to_string(pdq_data().join("expected.tsv")).expect("expected.tsv");
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[0].to_string(),
                meldnet_core::PdqHash::parse_hex(f[1]).expect("hash in expected.tsv"),
                f[2].parse().expect("quality in expected.tsv"),
            )
        })
        .collect()
}

/// The peak resident memory of process `pid`, in KiB (`VmHWM`).
pub fn peak_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmHWM:")
}

/// A process's resident memory now, in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmRSS:")
}

fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// A codec that sends and receives raw protobuf bytes: what a hostile
/// client sends is exactly what the test wrote.
#[derive(Debug, Clone, Default)]
pub struct RawCodec;

/// Encodes raw bytes as they are.
#[derive(Debug, Clone, Default)]
pub struct RawEncoder;

/// Decodes a message as its raw bytes.
#[derive(Debug, Clone, Default)]
pub struct RawDecoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use prost::bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use prost::bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// Calls `path` (`/meldnet.v1.Admin/Explain`) with `messages` as the raw
/// request (a stream of them), waiting at most `wait` for the first answer
/// or the status. `Ok` holds the raw answers received before the end.
pub async fn raw_call(
    channel: Channel,
    path: &'static str,
    messages: Vec<Vec<u8>>,
    wait: Duration,
) -> std::result::Result<Vec<Vec<u8>>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    let call = async {
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
        let req = tonic::Request::new(tokio_stream::iter(messages));
        let mut answers = grpc.streaming(req, path, RawCodec).await?.into_inner();
        let mut out = Vec::new();
        while let Some(m) = answers.message().await? {
            out.push(m);
        }
        Ok(out)
    };
    match tokio::time::timeout(wait, call).await {
        Ok(r) => r,
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "{path}: no end within {wait:?}"
        ))),
    }
}
