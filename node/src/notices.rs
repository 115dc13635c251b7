//! Standard notices to the hosting providers of the node's country, and the
//! loop back to the hub's deadline (`meldnet-node serve` with `[notices]`).
//!
//! - **Making** (`Notices::make_from_log`): the node follows its delivery
//!   log; a verified delivery whose decision asks this node for a notice
//!   (purpose notice-and-takedown, a deadline, hosted here) becomes one
//!   notice per case location, addressed to the provider whose host names
//!   cover the URL in the register. Made once per location: a second report
//!   of the same location finds it.
//! - **Sending** (`ProviderNotices.Receive`, `GET /v1/notices`): a provider
//!   sees only its own notices; each is pushed until acknowledged. The
//!   first acknowledgement is the notice sent: a `notice-sent` step naming
//!   the provider and its AS number goes to the hub.
//! - **Answers** (`ProviderNotices.Answer`, `POST /v1/notices/answer`):
//!   validated, signed by the node and stored before the call returns; each
//!   becomes a case step (received, removed, not found, refused,
//!   reappeared).
//! - **Steps to the hub** wait in the store until the hub's receipt; one
//!   the hub refuses is kept with its reason, never retried.
//! - **Re-notices**: acknowledged, unanswered, older than
//!   `renotice_after_s`: the next attempt, same id, signed again.
//!
//! Durability: everything is written in one sled batch and flushed before
//! anything is acknowledged to anyone (a provider's call returns, the log
//! cursor moves on).

use crate::config::{NoticesConfig, ProviderEntry};
use crate::hash_check::{authorize_provider, body_json, json_error, Denied};
use meldnet_core::{
    AnswerKind, AnswerRecord, CaseId, CaseStep, Classification, CountryCode, HostingProvider,
    Keyring, LegalGround, Notice, NoticeAction, NoticeAnswer, NoticeId, NoticeItem, NoticeProvider,
    Refusal, ReportUrl, Role, SigningKey, SpiffeId, StepId, StepKind,
};
use meldnet_net::{PeerInfo, ReloadingVerifier};
use meldnet_proto::v1 as pb;
use meldnet_recipient::{Checked, LogReader, Stored};
use prost::Message;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Notify;

/// Why notices could not be kept or made.
#[derive(Debug, thiserror::Error)]
pub enum NoticeError {
    /// The store.
    #[error("notice store: {0}")]
    Sled(#[from] sled::Error),
    /// A stored record does not decode.
    #[error("notice store: damaged record {key}: {why}")]
    Corrupt {
        /// Its key, in hex.
        key: String,
        /// The decoder's reason.
        why: String,
    },
    /// The delivery log.
    #[error(transparent)]
    Log(#[from] meldnet_recipient::LogError),
    /// A document could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl From<NoticeError> for Denied {
    fn from(e: NoticeError) -> Self {
        tracing::error!(error = %e, "notice store");
        Denied::new(tonic::Code::Internal, e.to_string())
    }
}

/// A provider of the register, with what notices and steps name.
#[derive(Debug, Clone)]
pub struct Registered {
    /// Its register entry.
    pub entry: ProviderEntry,
    /// Name and ASN, as a step names them.
    pub provider: HostingProvider,
    /// `spiffe://<fed>/provider/<CC>/<name>`.
    pub identity: SpiffeId,
}

/// The provider register: who hosts which host names.
#[derive(Debug, Clone)]
pub struct Register {
    providers: Vec<Registered>,
}

impl Register {
    /// From `[notices.providers]` (validated when the config loaded).
    pub fn new(
        entries: &[ProviderEntry],
        me: &SpiffeId,
        cc: CountryCode,
    ) -> Result<Register, Refusal> {
        let providers = entries
            .iter()
            .map(|e| {
                let identity = SpiffeId::parse(&format!(
                    "spiffe://{}/provider/{cc}/{}",
                    me.trust_domain(),
                    e.name
                ))
                .map_err(|err| Refusal::invalid("notices.providers.name", err.to_string()))?;
                Ok(Registered {
                    entry: e.clone(),
                    provider: HostingProvider::new(&e.name, e.asn)?,
                    identity,
                })
            })
            .collect::<Result<Vec<_>, Refusal>>()?;
        Ok(Register { providers })
    }

    /// The provider serving `url`'s host: an exact host name, else the
    /// longest one the host lies under.
    pub fn for_url(&self, url: &str) -> Option<&Registered> {
        let host = host_of(url)?;
        self.providers
            .iter()
            .filter_map(|p| {
                p.entry
                    .hostnames
                    .iter()
                    .filter(|h| host == **h || host.ends_with(&format!(".{h}")))
                    .map(|h| h.len())
                    .max()
                    .map(|len| (len, p))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, p)| p)
    }

    /// The register entry of a name.
    pub fn by_name(&self, name: &str) -> Option<&Registered> {
        self.providers.iter().find(|p| p.entry.name == name)
    }

    /// The register entry of a certificate identity.
    pub fn by_identity(&self, id: &SpiffeId) -> Option<&Registered> {
        self.providers.iter().find(|p| &p.identity == id)
    }
}

/// The host of an absolute URL, lower-cased, without user info or port.
pub fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        host.split(':').next()?
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

const NOTICE: &[u8] = b"n/";
const LOCATION: &[u8] = b"k/";
const QUEUE: &[u8] = b"q/";
const STEP: &[u8] = b"s/";
const REFUSED_STEP: &[u8] = b"x/";
const ANSWER: &[u8] = b"a/";
const UNASSIGNED: &[u8] = b"u/";
const CURSOR: &[u8] = b"cursor";
/// Where analysts' choices of provider wait (`notice assign`).
const ASSIGN_DIR: &str = "assign";

/// An analyst's choice of provider for a location (`notice assign`).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assignment {
    /// The case.
    pub case_id: String,
    /// Its location.
    pub location: u32,
    /// The provider's name in the register.
    pub provider: String,
}

/// Where the choice for a location is kept: `<notices.dir>/assign/`.
pub fn assignment_path(dir: &Path, case: &CaseId, location: u32) -> PathBuf {
    dir.join(ASSIGN_DIR).join(format!("{case}-{location}.toml"))
}

/// Renames a handled choice to `.applied` or `.refused`, so it is kept but
/// not read again.
fn set_aside(path: &Path, outcome: &str) {
    if let Err(e) = std::fs::rename(path, path.with_extension(outcome)) {
        tracing::error!(file = %path.display(), error = %e, "could not set an assignment aside");
    }
}

fn key(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut k = prefix.to_vec();
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

fn queue_key(provider: &str, id: &NoticeId) -> Vec<u8> {
    key(QUEUE, &[provider.as_bytes(), b"\0", id.as_bytes()])
}

fn location_key(case: &CaseId, location: u32) -> Vec<u8> {
    key(LOCATION, &[case.as_bytes(), &location.to_be_bytes()])
}

/// The 16-byte id that ends a key after its `prefix_len` bytes.
fn id_after(k: &[u8], prefix_len: usize) -> Result<[u8; 16], NoticeError> {
    k.get(prefix_len..)
        .and_then(|id| id.try_into().ok())
        .ok_or_else(|| NoticeError::Corrupt {
            key: hex::encode(k),
            why: "the key does not end in a 16-byte id".into(),
        })
}

/// The node's notices on disk: one sled tree, keys by prefix.
pub struct NoticeStore {
    db: sled::Db,
    tree: sled::Tree,
}

/// What the store holds, counted (for `notice list` and metrics).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NoticeCounts {
    /// Notices made.
    pub notices: usize,
    /// Waiting for their provider's acknowledgement.
    pub queued: usize,
    /// Steps not yet receipted by the hub.
    pub steps_waiting: usize,
    /// Steps the hub refused (kept with the reason).
    pub steps_refused: usize,
    /// Locations with no provider in the register.
    pub unassigned: usize,
}

impl NoticeStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<NoticeStore, NoticeError> {
        let db = sled::Config::new().path(dir).open()?;
        let tree = db.open_tree("notices")?;
        Ok(NoticeStore { db, tree })
    }

    async fn commit(&self, batch: sled::Batch) -> Result<(), NoticeError> {
        self.tree.apply_batch(batch)?;
        self.db.flush_async().await?;
        Ok(())
    }

    fn decode<M: Message + Default>(k: &[u8], v: &[u8]) -> Result<M, NoticeError> {
        M::decode(v).map_err(|e| NoticeError::Corrupt {
            key: hex::encode(k),
            why: e.to_string(),
        })
    }

    /// Where making resumes in the delivery log.
    pub fn cursor(&self) -> Result<u64, NoticeError> {
        Ok(self
            .tree
            .get(CURSOR)?
            .and_then(|v| v.as_ref().try_into().ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// A notice by id.
    pub fn get(&self, id: &NoticeId) -> Result<Option<pb::NodeNotice>, NoticeError> {
        let k = key(NOTICE, &[id.as_bytes()]);
        self.tree.get(&k)?.map(|v| Self::decode(&k, &v)).transpose()
    }

    /// Every notice, oldest first.
    pub fn all(&self) -> Result<Vec<pb::NodeNotice>, NoticeError> {
        self.tree
            .scan_prefix(NOTICE)
            .map(|r| {
                let (k, v) = r?;
                Self::decode(&k, &v)
            })
            .collect()
    }

    /// The notices waiting for `provider`'s acknowledgement, oldest first.
    pub fn queued_for(
        &self,
        provider: &str,
        max: usize,
    ) -> Result<Vec<pb::SignedNotice>, NoticeError> {
        let prefix = key(QUEUE, &[provider.as_bytes(), b"\0"]);
        let mut out = Vec::new();
        for r in self.tree.scan_prefix(&prefix).take(max) {
            let (k, _) = r?;
            let id = id_after(&k, prefix.len())?;
            if let Some(n) = self.get(&NoticeId::from_bytes(id))? {
                out.extend(n.signed);
            }
        }
        Ok(out)
    }

    /// Steps waiting for the hub, oldest first.
    pub fn steps(&self) -> Result<Vec<(StepId, pb::SignedCaseStep)>, NoticeError> {
        self.tree
            .scan_prefix(STEP)
            .map(|r| {
                let (k, v) = r?;
                let id = id_after(&k, STEP.len())?;
                Ok((StepId::from_bytes(id), Self::decode(&k, &v)?))
            })
            .collect()
    }

    /// Whether a step waits for the hub: one key read, not a count.
    pub fn steps_waiting(&self) -> Result<bool, NoticeError> {
        Ok(self.tree.scan_prefix(STEP).next().transpose()?.is_some())
    }

    /// Counts of what is held.
    pub fn counts(&self) -> Result<NoticeCounts, NoticeError> {
        let n = |p: &[u8]| self.tree.scan_prefix(p).count();
        Ok(NoticeCounts {
            notices: n(NOTICE),
            queued: n(QUEUE),
            steps_waiting: n(STEP),
            steps_refused: n(REFUSED_STEP),
            unassigned: n(UNASSIGNED),
        })
    }
}

/// Everything `serve` needs for notices.
#[derive(Clone)]
pub struct Notices {
    store: Arc<NoticeStore>,
    register: Arc<Register>,
    key: Arc<SigningKey>,
    keyring: Arc<Keyring>,
    me: SpiffeId,
    country: CountryCode,
    cfg: NoticesConfig,
    verifier: Arc<ReloadingVerifier>,
    /// Woken when a notice is queued (streams push it at once) or a step
    /// waits (the sender sends it at once).
    pub queued: Arc<Notify>,
    /// Woken when a step is stored.
    pub stepped: Arc<Notify>,
    by_hand_dir: PathBuf,
    /// Held while a notice record is read, changed and written back
    /// (acknowledgements, answers and re-notices run at once on different
    /// tasks: without it one could write back a record without another's
    /// change, or an answer sent twice at once be recorded twice).
    changing: Arc<tokio::sync::Mutex<()>>,
}

/// Notices in one pushed batch.
const BATCH: usize = meldnet_proto::limits::MAX_NOTICE_BATCH;

fn now_ms() -> i64 {
    meldnet_core::time::now_ms()
}

impl Notices {
    /// Opens the store and the register.
    pub fn open(
        cfg: &NoticesConfig,
        key: SigningKey,
        keyring: Keyring,
        me: SpiffeId,
        verifier: Arc<ReloadingVerifier>,
    ) -> Result<Notices, String> {
        let Role::Node(country) = me.role().clone() else {
            return Err(format!("{me} is not a node"));
        };
        let register = Register::new(&cfg.providers, &me, country).map_err(|e| e.to_string())?;
        let store = NoticeStore::open(&cfg.dir).map_err(|e| format!("notices.dir: {e}"))?;
        Ok(Notices {
            store: Arc::new(store),
            register: Arc::new(register),
            key: Arc::new(key),
            keyring: Arc::new(keyring),
            me,
            country,
            by_hand_dir: cfg.dir.join("by-hand"),
            cfg: cfg.clone(),
            verifier,
            queued: Arc::new(Notify::new()),
            stepped: Arc::new(Notify::new()),
            changing: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// The store (for listings).
    pub fn store(&self) -> &NoticeStore {
        &self.store
    }

    /// A step of this node about `case`/`location`, signed.
    fn step(
        &self,
        (case_id, location): (CaseId, u32),
        kind: StepKind,
        at_ms: i64,
        provider: Option<HostingProvider>,
        reason: String,
    ) -> (StepId, pb::SignedCaseStep) {
        let s = CaseStep {
            step_id: StepId::new_v7(),
            case_id,
            country: self.country,
            kind,
            at_ms,
            provider,
            location,
            reason,
        };
        (s.step_id, s.sign(&self.key))
    }

    /// Reads the delivery log from where it stopped and makes the notices
    /// the new deliveries ask for. Returns how many it made.
    pub async fn make_from_log(&self, inbox: &Path) -> Result<usize, NoticeError> {
        if !meldnet_recipient::log_path(inbox).exists() {
            return Ok(0);
        }
        let from = self.store.cursor()?;
        let mut reader = if from == 0 {
            LogReader::open(inbox)?
        } else {
            LogReader::open_from(inbox, from)?
        };
        let mut made = 0;
        let mut batch = sled::Batch::default();
        let mut seen: Vec<Vec<u8>> = Vec::new();
        for record in reader.by_ref() {
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    // Damage is for `inbox check` to report; making waits.
                    tracing::error!(error = %e, "delivery log: notices wait until it is repaired");
                    break;
                }
            };
            let Some(notice) = self.notice_for(&record.bytes) else {
                continue;
            };
            let (case, location) = (notice.case_id, notice.location);
            let lk = location_key(&case, location);
            if seen.contains(&lk) || self.store.tree.contains_key(&lk)? {
                continue;
            }
            seen.push(lk.clone());
            // The analyst's choice, when recorded, over the register's.
            let mut notice = notice;
            if let Some(chosen) = self.assigned(&case, location) {
                notice.provider = Some(chosen);
            }
            match notice.provider.clone() {
                Some(p) => {
                    made += 1;
                    self.stage_new(&mut batch, notice, p, &lk)?;
                }
                None => {
                    tracing::warn!(%case, location, url = %notice.url.as_str(), "no provider in the register serves this host: the notice waits for one");
                    // Where the delivery is, to make the notice once an
                    // analyst names the provider (`notice assign`).
                    batch.insert(key(UNASSIGNED, &[&lk]), &record.offset.to_be_bytes()[..]);
                    batch.insert(lk, &[][..]);
                }
            }
        }
        batch.insert(CURSOR, &reader.offset().to_be_bytes()[..]);
        self.store.commit(batch).await?;
        if made > 0 {
            self.queued.notify_waiters();
        }
        Ok(made)
    }

    /// The provider an analyst chose for a location (`notice assign`), if
    /// the register names it.
    fn assigned(&self, case: &CaseId, location: u32) -> Option<Registered> {
        let text = std::fs::read_to_string(assignment_path(&self.cfg.dir, case, location)).ok()?;
        let a: Assignment = toml::from_str(&text).ok()?;
        self.register.by_name(&a.provider).cloned()
    }

    /// Applies the analysts' choices (`notice assign`) to locations that
    /// wait for a provider: the notice is made and sent to the one chosen.
    /// A choice for a location already noticed to another provider is set
    /// aside (`.refused`) with the reason logged; one for a location not
    /// delivered yet waits for it.
    pub async fn apply_assignments(&self, inbox: &Path) -> Result<usize, NoticeError> {
        let dir = self.cfg.dir.join(ASSIGN_DIR);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(0);
        };
        let mut made = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let Some((case, location, chosen)) = self.read_assignment(&path) else {
                set_aside(&path, "refused");
                continue;
            };
            let lk = location_key(&case, location);
            let held = self.store.tree.get(&lk)?;
            let outcome = match held {
                // Not delivered yet: the choice waits for the delivery.
                None => continue,
                Some(id) if id.is_empty() => {
                    let _changing = self.changing.lock().await;
                    let uk = key(UNASSIGNED, &[&lk]);
                    let draft = self
                        .store
                        .tree
                        .get(&uk)?
                        .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
                        .and_then(|offset| {
                            let mut r = LogReader::open_from(inbox, offset).ok()?;
                            self.notice_for(&r.next()?.ok()?.bytes)
                        });
                    match draft {
                        Some(d) => {
                            let mut batch = sled::Batch::default();
                            self.stage_new(&mut batch, d, chosen, &lk)?;
                            batch.remove(uk);
                            self.store.commit(batch).await?;
                            self.queued.notify_waiters();
                            made += 1;
                            "applied"
                        }
                        None => {
                            tracing::error!(%case, location, "the delivery of a location waiting for a provider cannot be read back: choice kept for a later try");
                            continue;
                        }
                    }
                }
                Some(id) => {
                    let same = id
                        .as_ref()
                        .try_into()
                        .ok()
                        .map(NoticeId::from_bytes)
                        .and_then(|id| self.store.get(&id).ok().flatten())
                        .and_then(|rec| self.own_notice(&rec, &chosen))
                        .is_some();
                    if same {
                        "applied"
                    } else {
                        tracing::warn!(%case, location, provider = %chosen.identity, "this location was noticed to another provider already: the analyst's choice is set aside");
                        "refused"
                    }
                }
            };
            set_aside(&path, outcome);
        }
        Ok(made)
    }

    fn read_assignment(&self, path: &Path) -> Option<(CaseId, u32, Registered)> {
        let text = std::fs::read_to_string(path).ok()?;
        let a: Assignment = toml::from_str(&text)
            .inspect_err(
                |e| tracing::error!(file = %path.display(), error = %e, "assignment refused"),
            )
            .ok()?;
        let case = CaseId::parse(&a.case_id).ok()?;
        let chosen = self.register.by_name(&a.provider).cloned();
        if chosen.is_none() {
            tracing::error!(file = %path.display(), provider = %a.provider, "assignment refused: not in the register");
        }
        Some((case, a.location, chosen?))
    }

    /// A notice the delivery asks for, not yet addressed.
    fn notice_for(&self, bytes: &[u8]) -> Option<Draft> {
        let delivery = pb::Delivery::decode(bytes).ok()?;
        let Ok(Stored::Routed(sr, sd)) = Stored::of(delivery) else {
            return None;
        };
        let Ok(Checked::Routed(v)) = Checked::verify(&Stored::Routed(sr, sd), &self.keyring) else {
            tracing::error!("a stored delivery does not verify: no notice made from it");
            return None;
        };
        let me = self.me.to_string();
        let asked = v
            .decision
            .recipients
            .iter()
            .any(|r| r.identity == me && r.purpose == pb::Purpose::NoticeAndTakedown as i32);
        let c = v.decision.case_ref.as_ref()?;
        if !asked || c.deadline_ms <= 0 || c.hosting_country != self.country.as_str() {
            return None;
        }
        let case_id = CaseId::parse(&c.case_id).ok()?;
        let legal_ground = if v
            .report
            .items
            .iter()
            .any(|i| i.classification == Classification::Baseline)
        {
            LegalGround::Baseline
        } else {
            LegalGround::National
        };
        let items = v
            .report
            .items
            .iter()
            .map(|i| NoticeItem {
                sha256: i.sha256,
                md5: i.md5,
                pdq: i.pdq.map(|(p, _)| p),
            })
            .collect();
        let url = v.report.url.clone();
        Some(Draft {
            provider: self.register.for_url(url.as_str()).cloned(),
            case_id,
            location: c.location,
            url,
            legal_ground,
            deadline_ms: c.deadline_ms,
            items,
            report_id: v.report.id,
        })
    }

    fn stage_new(
        &self,
        batch: &mut sled::Batch,
        d: Draft,
        p: Registered,
        lk: &[u8],
    ) -> Result<(), NoticeError> {
        let mut actions = vec![NoticeAction::Remove];
        if self.cfg.ask_preserve {
            actions.push(NoticeAction::Preserve);
        }
        let notice = Notice {
            notice_id: NoticeId::new_v7(),
            case_id: d.case_id,
            location: d.location,
            url: d.url,
            hotline: self.me.clone(),
            country: self.country,
            provider: NoticeProvider {
                provider: p.provider.clone(),
                identity: p.identity.clone(),
            },
            legal_ground: d.legal_ground,
            actions,
            sent_at_ms: now_ms(),
            deadline_ms: d.deadline_ms,
            items: d.items,
            attempt: 1,
            report_id: d.report_id,
        };
        let signed = notice.sign(&self.key);
        let id = notice.notice_id;
        if p.entry.api {
            batch.insert(queue_key(&p.entry.name, &id), &[][..]);
        } else {
            self.write_by_hand(&notice, &signed)?;
        }
        let rec = pb::NodeNotice {
            signed: Some(signed),
            by_hand: !p.entry.api,
            ..Default::default()
        };
        batch.insert(key(NOTICE, &[id.as_bytes()]), rec.encode_to_vec());
        batch.insert(lk, id.as_bytes().as_slice());
        tracing::info!(notice = %id, case = %notice.case_id, location = notice.location, provider = %p.identity, by_hand = !p.entry.api, "notice made");
        metrics::counter!("meldnet_notices_made_total", "provider" => p.entry.name.clone())
            .increment(1);
        Ok(())
    }

    /// For a provider without the API: the notice as text and JSON, for a
    /// person to e-mail; the analyst records it sent (`case step`).
    fn write_by_hand(&self, n: &Notice, signed: &pb::SignedNotice) -> Result<(), NoticeError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| NoticeError::Io { path, source }
        };
        std::fs::create_dir_all(&self.by_hand_dir).map_err(io(&self.by_hand_dir))?;
        let stem = self
            .by_hand_dir
            .join(format!("{}-{}", n.notice_id, n.attempt));
        let txt = stem.with_extension("txt");
        std::fs::write(&txt, n.render_text(signed)).map_err(io(&txt))?;
        let json = stem.with_extension("json");
        let body = serde_json::to_vec_pretty(&n.describe(signed)).unwrap_or_default();
        std::fs::write(&json, body).map_err(io(&json))?;
        Ok(())
    }

    /// The calling provider, from its certificate (re-checked against the
    /// CRLs now), and its register entry.
    fn caller(&self, peer: Option<&PeerInfo>) -> Result<Registered, Denied> {
        let id = authorize_provider(&self.verifier, self.country, peer, "notices")?;
        self.register.by_identity(&id).cloned().ok_or_else(|| {
            Denied::new(
                tonic::Code::PermissionDenied,
                format!("caller: {id} is not in this node's provider register"),
            )
        })
    }

    /// Notices waiting for the caller.
    pub fn pending(
        &self,
        peer: Option<&PeerInfo>,
    ) -> Result<(Registered, Vec<pb::SignedNotice>), Denied> {
        let p = self.caller(peer)?;
        let q = self.store.queued_for(&p.entry.name, BATCH)?;
        Ok((p, q))
    }

    /// The caller stored these attempts: off its queue; a first
    /// acknowledgement is the notice sent, a step for the hub.
    pub async fn acknowledge(
        &self,
        p: &Registered,
        stored: &[pb::NoticeAttempt],
    ) -> Result<usize, Denied> {
        if stored.len() > meldnet_proto::limits::MAX_NOTICE_ACKS {
            return Err(Refusal::invalid(
                "stored",
                format!(
                    "{} acknowledgements, at most {}",
                    stored.len(),
                    meldnet_proto::limits::MAX_NOTICE_ACKS
                ),
            )
            .into());
        }
        let _changing = self.changing.lock().await;
        let mut batch = sled::Batch::default();
        let mut done = 0;
        let mut steps = 0;
        let now = now_ms();
        for (i, a) in stored.iter().enumerate() {
            let id = NoticeId::parse(&a.notice_id)
                .map_err(|e| Refusal::invalid(format!("stored[{i}].notice_id"), e))?;
            let Some(mut rec) = self.store.get(&id)? else {
                continue;
            };
            let Some(notice) = self.own_notice(&rec, p) else {
                continue;
            };
            if a.attempt != notice.attempt || rec.acked_attempt >= a.attempt {
                continue;
            }
            if rec.acked_attempt == 0 {
                rec.first_acked_at_ms = now;
                let (sid, s) = self.step(
                    (notice.case_id, notice.location),
                    StepKind::NoticeSent,
                    now,
                    Some(p.provider.clone()),
                    String::new(),
                );
                batch.insert(key(STEP, &[sid.as_bytes()]), s.encode_to_vec());
                steps += 1;
            }
            rec.acked_attempt = a.attempt;
            batch.remove(queue_key(&p.entry.name, &id));
            batch.insert(key(NOTICE, &[id.as_bytes()]), rec.encode_to_vec());
            done += 1;
        }
        if done > 0 {
            self.store.commit(batch).await?;
            if steps > 0 {
                self.stepped.notify_one();
            }
            tracing::info!(provider = %p.identity, acknowledged = done, "notices acknowledged");
        }
        Ok(done)
    }

    /// The notice of `rec` if it is addressed to `p`.
    fn own_notice(&self, rec: &pb::NodeNotice, p: &Registered) -> Option<Notice> {
        let n = Notice::decode(&rec.signed.as_ref()?.notice).ok()?;
        (n.provider.identity == p.identity).then_some(n)
    }

    /// Records a provider's answer: signed by the node, stored with a step
    /// for the hub, flushed; then returned. The same answer again gets the
    /// same record; an answer id reused for other content is refused.
    pub async fn answer(
        &self,
        peer: Option<&PeerInfo>,
        raw: &pb::NoticeAnswer,
    ) -> Result<pb::SignedAnswerRecord, Denied> {
        let p = self.caller(peer)?;
        let answer = NoticeAnswer::from_proto(raw)?;
        let _changing = self.changing.lock().await;
        let not_found = || {
            Denied::from(Refusal::new(
                meldnet_core::RefusalKind::NotFound,
                "answer.notice_id",
                format!("no notice {} for {}", answer.notice_id, p.identity),
            ))
        };
        let mut rec = self.store.get(&answer.notice_id)?.ok_or_else(not_found)?;
        let notice = self.own_notice(&rec, &p).ok_or_else(not_found)?;
        let ak = key(ANSWER, &[answer.answer_id.as_bytes()]);
        if self
            .store
            .tree
            .contains_key(&ak)
            .map_err(NoticeError::from)?
        {
            for signed in &rec.answers {
                if let Ok(r) = AnswerRecord::decode(&signed.answer_record) {
                    if r.answer.answer_id == answer.answer_id && r.answer == answer {
                        return Ok(signed.clone());
                    }
                }
            }
            return Err(Refusal::new(
                meldnet_core::RefusalKind::AlreadyExists,
                "answer.answer_id",
                "this answer id was recorded with different content",
            )
            .into());
        }
        let now = now_ms();
        let at = if answer.at_ms == 0 { now } else { answer.at_ms };
        if at > now + meldnet_core::MAX_CLOCK_AHEAD_MS {
            return Err(Refusal::invalid("answer.at_ms", "lies in the future").into());
        }
        let record = AnswerRecord {
            answer: answer.clone(),
            provider: p.identity.clone(),
            received_at_ms: now,
            recorded_by: self.me.clone(),
        };
        let signed = record.sign(&self.key);
        let mut batch = sled::Batch::default();
        let target = (notice.case_id, notice.location);
        if rec.acked_attempt == 0 {
            // Answered before acknowledged: the provider has it all the same.
            rec.acked_attempt = notice.attempt;
            rec.first_acked_at_ms = now;
            batch.remove(queue_key(&p.entry.name, &notice.notice_id));
            let (sid, s) = self.step(
                target,
                StepKind::NoticeSent,
                now,
                Some(p.provider.clone()),
                String::new(),
            );
            batch.insert(key(STEP, &[sid.as_bytes()]), s.encode_to_vec());
        }
        let (kind, reason) = match answer.kind {
            AnswerKind::Received => (StepKind::Received, String::new()),
            AnswerKind::Removed => (StepKind::Removed, String::new()),
            AnswerKind::NotFound => (StepKind::NotFound, String::new()),
            AnswerKind::Reappeared => (StepKind::Reappeared, String::new()),
            AnswerKind::Refused => {
                let code = answer.reason.map_or("other", |r| r.name());
                let reason = if answer.detail.is_empty() {
                    code.to_string()
                } else {
                    let mut r = format!("{code}: {}", answer.detail.replace('\n', " "));
                    truncate(&mut r, meldnet_core::MAX_STEP_REASON);
                    r
                };
                (StepKind::Refused, reason)
            }
        };
        let (sid, s) = self.step(target, kind, at, None, reason);
        batch.insert(key(STEP, &[sid.as_bytes()]), s.encode_to_vec());
        rec.answers.push(signed.clone());
        batch.insert(
            key(NOTICE, &[notice.notice_id.as_bytes()]),
            rec.encode_to_vec(),
        );
        batch.insert(ak, notice.notice_id.as_bytes().as_slice());
        self.store.commit(batch).await?;
        self.stepped.notify_one();
        metrics::counter!("meldnet_notice_answers_total", "provider" => p.entry.name.clone(), "kind" => answer.kind.name())
            .increment(1);
        tracing::info!(notice = %notice.notice_id, provider = %p.identity, answer = answer.kind.name(), "notice answered");
        Ok(signed)
    }

    /// Sends the waiting steps to the hub, oldest first. A refused step is
    /// kept apart with the hub's reason; an unreachable hub stops the round.
    pub async fn send_steps(
        &self,
        channel: tonic::transport::Channel,
    ) -> Result<usize, NoticeError> {
        let mut client = pb::cases_client::CasesClient::new(channel);
        let mut sent = 0;
        for (id, step) in self.store.steps()? {
            let k = key(STEP, &[id.as_bytes()]);
            let mut batch = sled::Batch::default();
            match client.record_step(step.clone()).await {
                Ok(r) => {
                    let r = r.into_inner();
                    tracing::info!(case = %r.case_id, location = r.location, state = %r.state, "case step recorded by the hub");
                    sent += 1;
                }
                Err(status) if refused_for_good(status.code()) => {
                    tracing::error!(step = %id, code = ?status.code(), message = status.message(), "the hub refused a case step: kept, not sent again");
                    batch.insert(
                        key(REFUSED_STEP, &[id.as_bytes()]),
                        status.message().as_bytes(),
                    );
                }
                Err(status) => {
                    tracing::warn!(code = ?status.code(), message = status.message(), "case steps wait: hub unreachable");
                    break;
                }
            }
            batch.remove(k);
            self.store.commit(batch).await?;
        }
        Ok(sent)
    }

    /// Queues the next attempt of each notice the provider acknowledged
    /// and has not answered for `renotice_after_s`.
    pub async fn renotice_due(&self) -> Result<usize, NoticeError> {
        let _changing = self.changing.lock().await;
        let now = now_ms();
        let after = (self.cfg.renotice_after_s as i64).saturating_mul(1000);
        let mut batch = sled::Batch::default();
        let mut due = 0;
        for mut rec in self.store.all()? {
            let Some(n) = next_attempt(&rec, now, after, self.cfg.max_attempts) else {
                continue;
            };
            rec.signed = Some(n.sign(&self.key));
            let name = match n.provider.identity.role() {
                Role::Provider { name, .. } => name.clone(),
                _ => continue,
            };
            batch.insert(queue_key(&name, &n.notice_id), &[][..]);
            batch.insert(key(NOTICE, &[n.notice_id.as_bytes()]), rec.encode_to_vec());
            tracing::info!(notice = %n.notice_id, attempt = n.attempt, provider = %n.provider.identity, "re-notice: not answered");
            metrics::counter!("meldnet_renotices_total", "provider" => name).increment(1);
            due += 1;
        }
        if due > 0 {
            self.store.commit(batch).await?;
            self.queued.notify_waiters();
        }
        Ok(due)
    }
}

/// The next attempt of a notice when one is due: the provider acknowledged
/// the attempt in force and has not answered, the notice is pushed (not
/// sent by hand), fewer than `max` attempts went out, and the last went out
/// `after_ms` or more before `now_ms`. Same id, the next number, sent now.
pub fn next_attempt(rec: &pb::NodeNotice, now_ms: i64, after_ms: i64, max: u32) -> Option<Notice> {
    let n = Notice::decode(&rec.signed.as_ref()?.notice).ok()?;
    let waiting = rec.acked_attempt == n.attempt && rec.answers.is_empty() && !rec.by_hand;
    let due = n.sent_at_ms.saturating_add(after_ms) <= now_ms;
    (waiting && due && n.attempt < max).then(|| Notice {
        attempt: n.attempt + 1,
        sent_at_ms: now_ms,
        ..n
    })
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
}

/// A refusal that will not change by sending again.
fn refused_for_good(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        InvalidArgument | NotFound | AlreadyExists | PermissionDenied | FailedPrecondition
    )
}

/// A notice the deliveries ask for, before it is addressed.
struct Draft {
    provider: Option<Registered>,
    case_id: CaseId,
    location: u32,
    url: ReportUrl,
    legal_ground: LegalGround,
    deadline_ms: i64,
    items: Vec<NoticeItem>,
    report_id: meldnet_core::ReportId,
}

/// `ProviderNotices` over gRPC.
#[tonic::async_trait]
impl pb::provider_notices_server::ProviderNotices for Notices {
    type ReceiveStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<pb::NoticeBatch, tonic::Status>> + Send>,
    >;

    async fn receive(
        &self,
        request: tonic::Request<tonic::Streaming<pb::NoticeAck>>,
    ) -> Result<tonic::Response<Self::ReceiveStream>, tonic::Status> {
        let peer = request.extensions().get::<PeerInfo>().cloned();
        let p = self.caller(peer.as_ref())?;
        let mut acks = request.into_inner();
        let this = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::NoticeBatch, tonic::Status>>(4);
        tokio::spawn(async move {
            // Sent on this stream and not yet acknowledged: not pushed twice.
            let mut sent: std::collections::HashSet<(String, u32)> = Default::default();
            loop {
                let woken = this.queued.notified();
                let fresh: Vec<pb::SignedNotice> =
                    match this.store.queued_for(&p.entry.name, usize::MAX) {
                        Ok(q) => q
                            .into_iter()
                            .filter(|s| {
                                Notice::decode(&s.notice)
                                    .map(|n| sent.insert((n.notice_id.to_string(), n.attempt)))
                                    .unwrap_or(false)
                            })
                            .take(BATCH)
                            .collect(),
                        Err(e) => {
                            let _ = tx.send(Err(tonic::Status::internal(e.to_string()))).await;
                            return;
                        }
                    };
                if !fresh.is_empty() {
                    if tx
                        .send(Ok(pb::NoticeBatch { notices: fresh }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    continue;
                }
                tokio::select! {
                    _ = woken => {}
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    ack = acks.message() => match ack {
                        Ok(Some(a)) => {
                            if let Err(d) = this.acknowledge(&p, &a.stored).await {
                                let _ = tx.send(Err(d.into())).await;
                                return;
                            }
                        }
                        Ok(None) | Err(_) => return,
                    },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn answer(
        &self,
        request: tonic::Request<pb::NoticeAnswer>,
    ) -> Result<tonic::Response<pb::SignedAnswerRecord>, tonic::Status> {
        let peer = request.extensions().get::<PeerInfo>().cloned();
        let signed = Notices::answer(self, peer.as_ref(), request.get_ref()).await?;
        Ok(tonic::Response::new(signed))
    }
}

/// Largest HTTP/JSON body of an acknowledgement or an answer.
const NOTICE_BODY_MAX: usize = 1 << 20;

fn b64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// `GET /v1/notices`: the caller's notices waiting for acknowledgement
/// (at most 64), each described, with its signed bytes.
async fn http_pending(
    axum::extract::State(n): axum::extract::State<Notices>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let peer = request.extensions().get::<PeerInfo>().cloned();
    match n.pending(peer.as_ref()) {
        Ok((_, signed)) => {
            let notices: Vec<serde_json::Value> = signed
                .iter()
                .filter_map(|s| Notice::decode(&s.notice).ok().map(|d| d.describe(s)))
                .collect();
            axum::Json(serde_json::json!({ "notices": notices })).into_response()
        }
        Err(d) => json_error(d.code, d.message),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonAck {
    stored: Vec<JsonAttempt>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonAttempt {
    notice_id: String,
    attempt: u32,
}

/// `POST /v1/notices/ack`: `{"stored": [{"notice_id", "attempt"}]}`.
async fn http_ack(
    axum::extract::State(n): axum::extract::State<Notices>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (peer, ack) = match body_json::<JsonAck>(request, NOTICE_BODY_MAX).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let stored: Vec<pb::NoticeAttempt> = ack
        .stored
        .into_iter()
        .map(|a| pb::NoticeAttempt {
            notice_id: a.notice_id,
            attempt: a.attempt,
        })
        .collect();
    let result = match n.caller(peer.as_ref()) {
        Ok(p) => n.acknowledge(&p, &stored).await,
        Err(d) => Err(d),
    };
    match result {
        Ok(done) => axum::Json(serde_json::json!({ "acknowledged": done })).into_response(),
        Err(d) => json_error(d.code, d.message),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonAnswer {
    notice_id: String,
    answer_id: String,
    kind: String,
    #[serde(default)]
    at_ms: i64,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    detail: String,
}

/// `POST /v1/notices/answer`: the answer in JSON (kinds and reasons by
/// name); the node's signed record back.
async fn http_answer(
    axum::extract::State(n): axum::extract::State<Notices>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (peer, a) = match body_json::<JsonAnswer>(request, NOTICE_BODY_MAX).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let kind = match a.kind.parse::<AnswerKind>() {
        Ok(k) => k.to_proto() as i32,
        Err(e) => return json_error(tonic::Code::InvalidArgument, format!("answer.kind: {e}")),
    };
    let reason = match a
        .reason
        .as_deref()
        .map(str::parse::<meldnet_core::RefusalReason>)
    {
        None => 0,
        Some(Ok(r)) => r.to_proto() as i32,
        Some(Err(e)) => {
            return json_error(tonic::Code::InvalidArgument, format!("answer.reason: {e}"))
        }
    };
    let raw = pb::NoticeAnswer {
        notice_id: a.notice_id,
        kind,
        at_ms: a.at_ms,
        reason,
        detail: a.detail,
        answer_id: a.answer_id,
    };
    match n.answer(peer.as_ref(), &raw).await {
        Ok(s) => axum::Json(serde_json::json!({
            "record": b64(&s.answer_record),
            "signature": b64(&s.signature),
            "key_id": s.key_id,
        }))
        .into_response(),
        Err(d) => json_error(d.code, d.message),
    }
}

/// The HTTP/JSON routes of notices.
pub fn http_routes(notices: Notices) -> axum::Router {
    axum::Router::new()
        .route("/v1/notices", axum::routing::get(http_pending))
        .route("/v1/notices/ack", axum::routing::post(http_ack))
        .route("/v1/notices/answer", axum::routing::post(http_answer))
        .with_state(notices)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_is_sent_again_only_when_acknowledged_unanswered_and_due() {
        let key = SigningKey::generate();
        let fed = meldnet_core::TrustDomain::parse("eu.meldnet.test").unwrap();
        let de = CountryCode::parse("DE").unwrap();
        let n = Notice {
            notice_id: NoticeId::new_v7(),
            case_id: CaseId::new_v7(),
            location: 0,
            url: ReportUrl::parse("https://files.example.de/1").unwrap(),
            hotline: SpiffeId::node(&fed, de),
            country: de,
            provider: NoticeProvider {
                provider: HostingProvider::new("hoster1", 64500).unwrap(),
                identity: SpiffeId::parse("spiffe://eu.meldnet.test/provider/DE/hoster1").unwrap(),
            },
            legal_ground: LegalGround::Baseline,
            actions: vec![NoticeAction::Remove],
            sent_at_ms: 1_800_000_000_000,
            deadline_ms: 1_800_086_400_000,
            items: vec![NoticeItem {
                sha256: meldnet_core::Sha256::of(b"x"),
                md5: meldnet_core::Md5([1; 16]),
                pdq: None,
            }],
            attempt: 1,
            report_id: meldnet_core::ReportId::new_v7(),
        };
        let rec = |acked: u32, answered: bool, by_hand: bool| pb::NodeNotice {
            signed: Some(n.sign(&key)),
            acked_attempt: acked,
            answers: if answered {
                vec![pb::SignedAnswerRecord::default()]
            } else {
                vec![]
            },
            by_hand,
            ..Default::default()
        };
        let hour = 3_600_000;
        let at = n.sent_at_ms + 12 * hour;
        let next = next_attempt(&rec(1, false, false), at, 12 * hour, 3).unwrap();
        assert_eq!((next.attempt, next.sent_at_ms), (2, at));
        assert_eq!(next.notice_id, n.notice_id);
        // Not yet due; not acknowledged; answered; sent by hand; the last attempt.
        assert!(next_attempt(&rec(1, false, false), at - 1, 12 * hour, 3).is_none());
        assert!(next_attempt(&rec(0, false, false), at, 12 * hour, 3).is_none());
        assert!(next_attempt(&rec(1, true, false), at, 12 * hour, 3).is_none());
        assert!(next_attempt(&rec(1, false, true), at, 12 * hour, 3).is_none());
        assert!(next_attempt(&rec(1, false, false), at, 12 * hour, 1).is_none());
    }

    #[test]
    fn a_url_goes_to_the_provider_with_the_longest_host_name_that_covers_it() {
        let me = SpiffeId::parse("spiffe://eu.meldnet.test/node/DE").unwrap();
        let e = |name: &str, hosts: &[&str]| ProviderEntry {
            name: name.into(),
            asn: 64500,
            hostnames: hosts.iter().map(|h| h.to_string()).collect(),
            api: true,
        };
        let r = Register::new(
            &[e("big", &["example.de"]), e("cdn", &["cdn.example.de"])],
            &me,
            CountryCode::parse("DE").unwrap(),
        )
        .unwrap();
        let name = |u: &str| r.for_url(u).map(|p| p.entry.name.clone());
        assert_eq!(name("https://example.de/x").as_deref(), Some("big"));
        assert_eq!(
            name("https://a.b.example.de:8443/x").as_deref(),
            Some("big")
        );
        assert_eq!(
            name("http://user@img.cdn.example.de/x?y").as_deref(),
            Some("cdn")
        );
        assert_eq!(name("https://CDN.Example.DE./x").as_deref(), Some("cdn"));
        assert_eq!(name("https://badexample.de/x"), None);
        assert_eq!(name("https://example.nl/x"), None);
        assert_eq!(
            r.by_identity(&SpiffeId::parse("spiffe://eu.meldnet.test/provider/DE/cdn").unwrap())
                .map(|p| p.provider.asn()),
            Some(64500)
        );
    }
}
