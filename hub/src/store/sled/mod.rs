//! The embedded backend: sled for keys and small values, and one
//! append-only blob file for bodies (reports, audit records, history,
//! further decisions, notifications), which sled only points to.
//!
//! Durability of a group: its bodies are written to the blob file and
//! synced first (`Group::apply`), then everything else is applied as one
//! atomic sled batch that also records the blob file's new end; the
//! pipeline then calls `make_durable` (sled's fsync) before it answers
//! anyone. Nothing in sled points to a body that is not on disk, and a
//! group that never committed leaves only bodies past the recorded end,
//! which opening cuts away.

pub mod blobs;
mod footprint;
mod group;
mod keys;

use crate::store::seam::{Backend, Counters, Delivered, Group, Part, QueuedBody, Reads, Record};
use crate::store::series::decode_preference;
use crate::store::types::{Damage, SeriesHashKey, StoreCheck, StoredChange};
use crate::store::{StoreError, StoreOptions};
use blobs::{BlobError, BlobFile, BlobRef};
use keys::*;
use meldnet_core::CaseId;
use meldnet_core::ChainHead;
use meldnet_core::ReportId;
use meldnet_core::SpiffeId;
use meldnet_core::{Preference, SeriesId};
use meldnet_list::Tip;
use meldnet_proto::v1 as pb;
use prost::Message;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Whether an I/O error says the disk (or the quota) is full.
fn is_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

impl From<BlobError> for StoreError {
    fn from(e: BlobError) -> Self {
        match &e {
            BlobError::Io { source, .. } if is_full(source) => StoreError::Full(e.to_string()),
            BlobError::Io { .. } => StoreError::Io(e.to_string()),
            BlobError::Damaged { .. } => StoreError::Corrupt(e.to_string()),
        }
    }
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        match &e {
            sled::Error::Io(io) if is_full(io) => StoreError::Full(e.to_string()),
            sled::Error::Corruption { .. } => StoreError::Corrupt(e.to_string()),
            _ => StoreError::Sled(e.to_string()),
        }
    }
}

/// The embedded backend. Cheap to share (`Arc`).
pub struct SledBackend {
    db: sled::Db,
    tree: sled::Tree,
    blobs: Arc<BlobFile>,
    /// Where the next group's bodies go: the end of the durable part of
    /// the blob file (only the pipeline's writer moves it).
    blob_end: AtomicU64,
    room: Room,
}

/// The room new reports must leave on the store's file system.
struct Room {
    dir: PathBuf,
    min_free: u64,
}

impl Room {
    /// `Full` while less than `min_free` bytes are free (checked per group:
    /// one `statvfs`, far cheaper than the group's fsync).
    fn check(&self) -> Result<(), StoreError> {
        if self.min_free == 0 {
            return Ok(());
        }
        let free = free_bytes(&self.dir)
            .map_err(|e| StoreError::Io(format!("free space of {}: {e}", self.dir.display())))?;
        if free < self.min_free {
            metrics::counter!("meldnet_store_full_refusals_total").increment(1);
            return Err(StoreError::Full(format!(
                "{} has {} MiB free, less than the {} MiB kept back ([store] min_free_mib)",
                self.dir.display(),
                free >> 20,
                self.min_free >> 20
            )));
        }
        Ok(())
    }
}

/// Bytes an unprivileged writer may still use on the file system of `dir`.
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("a NUL byte in the path"))?;
    // SAFETY: `c` is a valid C string; `st` is written by statvfs only.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

fn corrupt(what: &str) -> impl Fn(prost::DecodeError) -> StoreError + '_ {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

fn decode<M: Message + Default>(v: &[u8], what: &str) -> Result<M, StoreError> {
    M::decode(v).map_err(corrupt(what))
}

fn decode_counter(v: &[u8]) -> Result<u64, StoreError> {
    v.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt("counter".into()))
}

fn decode_head(v: &[u8]) -> Result<ChainHead, StoreError> {
    if v.len() != 40 {
        return Err(StoreError::Corrupt("audit head".into()));
    }
    let hash: [u8; 32] = v
        .get(8..)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt("audit head".into()))?;
    Ok(ChainHead {
        next_seq: be64(Some(v), "audit head")?,
        hash,
    })
}

pub(super) fn encode_head(head: &ChainHead) -> Vec<u8> {
    let mut v = head.next_seq.to_be_bytes().to_vec();
    v.extend_from_slice(&head.hash);
    v
}

fn encode_tip(tip: &Tip) -> Vec<u8> {
    let mut v = tip.version.to_be_bytes().to_vec();
    v.extend_from_slice(&tip.count.to_be_bytes());
    v.extend_from_slice(&tip.digest);
    v
}

fn decode_tip(v: &[u8]) -> Result<Tip, StoreError> {
    let digest: [u8; 32] = v
        .get(16..48)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt("list tip".into()))?;
    Ok(Tip {
        version: be64(v.get(..8), "list tip")?,
        count: be64(v.get(8..16), "list tip")?,
        digest,
    })
}

fn encode_change(c: &StoredChange) -> Vec<u8> {
    let mut v = Vec::with_capacity(40 + c.bytes.len());
    v.extend_from_slice(&c.tip.digest);
    v.extend_from_slice(&c.tip.count.to_be_bytes());
    v.extend_from_slice(&c.bytes);
    v
}

fn decode_change(k: &[u8], v: &[u8]) -> Result<StoredChange, StoreError> {
    let digest: [u8; 32] = v
        .get(..32)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StoreError::Corrupt("list change".into()))?;
    Ok(StoredChange {
        tip: Tip {
            version: be64(k.get(1..), "list change")?,
            count: be64(v.get(32..40), "list change")?,
            digest,
        },
        bytes: v.get(40..).unwrap_or_default().to_vec(),
    })
}

fn encode_rules(version: u64, text: &str) -> Vec<u8> {
    let mut v = version.to_be_bytes().to_vec();
    v.extend_from_slice(text.as_bytes());
    v
}

fn decode_rules(v: &[u8]) -> Result<(u64, String), StoreError> {
    let version = be64(v.get(..8), "stored routing rules")?;
    let text = String::from_utf8(v.get(8..).unwrap_or_default().to_vec())
        .map_err(|_| StoreError::Corrupt("stored routing rules: not UTF-8".into()))?;
    Ok((version, text))
}

impl SledBackend {
    /// Opens (or creates) the store in `dir`, refusing new reports while
    /// its file system has less than `options.min_free` bytes free. That room is
    /// kept for what must not fail: sled's own log (a failed flush stops
    /// the hub), acknowledgements, operators' changes; its page cache takes at most
    /// `options.cache_bytes`.
    pub fn open(dir: &Path, options: StoreOptions) -> Result<SledBackend, StoreError> {
        // No periodic flush of sled's own: the pipeline flushes after every
        // group it answers, and a background write could meet a failing
        // disk when nobody answers for it, leaving sled unusable while the
        // hub still ran (a write that fails now fails a group, which is
        // refused or stops the hub).
        let mut config = sled::Config::new().path(dir).flush_every_ms(None);
        if options.cache_bytes > 0 {
            config = config.cache_capacity(options.cache_bytes);
        }
        let db = config.open()?;
        let tree = db.open_tree("hub")?;
        let blob_end = read_u64(&tree, META_BLOB_END, "blob end")?.unwrap_or(0);
        let blobs = Arc::new(BlobFile::open(dir, blob_end)?);
        Ok(SledBackend {
            db,
            tree,
            blobs,
            blob_end: AtomicU64::new(blob_end),
            room: Room {
                dir: dir.to_path_buf(),
                min_free: options.min_free,
            },
        })
    }

    fn body(&self, pointer: &[u8]) -> Result<Vec<u8>, StoreError> {
        let r =
            BlobRef::from_bytes(pointer).ok_or_else(|| StoreError::Corrupt("pointer".into()))?;
        Ok(self.blobs.read(r)?)
    }

    /// The bytes a pointer covers, header included, unchecked (for the
    /// digest of a damaged store).
    fn raw_body(&self, pointer: &[u8]) -> Result<Vec<u8>, StoreError> {
        let r =
            BlobRef::from_bytes(pointer).ok_or_else(|| StoreError::Corrupt("pointer".into()))?;
        Ok(self.blobs.read_raw(r)?)
    }

    fn message<M: Message + Default>(
        &self,
        key: &[u8],
        what: &str,
    ) -> Result<Option<M>, StoreError> {
        self.tree
            .get(key)?
            .map(|v| decode(&self.body(&v)?, what))
            .transpose()
    }

    fn inline<M: Message + Default>(
        &self,
        key: &[u8],
        what: &str,
    ) -> Result<Option<M>, StoreError> {
        self.tree.get(key)?.map(|v| decode(&v, what)).transpose()
    }

    fn scan_inline<M: Message + Default>(
        &self,
        prefix: &[u8],
        what: &str,
    ) -> Result<Vec<M>, StoreError> {
        self.tree
            .scan_prefix(prefix)
            .map(|kv| decode(&kv?.1, what))
            .collect()
    }

    fn scan_bodies<M: Message + Default>(
        &self,
        prefix: &[u8],
        what: &str,
    ) -> Result<Vec<M>, StoreError> {
        self.tree
            .scan_prefix(prefix)
            .map(|kv| decode(&self.body(&kv?.1)?, what))
            .collect()
    }

    /// A stored notification: its body's bytes and the signed message.
    fn notification_body(
        &self,
        pointer: &[u8],
    ) -> Result<(Vec<u8>, pb::SignedNotification), StoreError> {
        let body = self.body(pointer)?;
        let sn = decode(&body, "notification")?;
        Ok((body, sn))
    }

    /// What a queue entry points to, with the size of its body.
    fn queued_body(
        &self,
        item: &crate::store::seam::QueueItem,
    ) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        use crate::store::seam::QueueItem;
        let key = match item {
            QueueItem::Report(r) => report_key(r),
            QueueItem::Redecision { decision, .. } => escalation_key(decision),
            QueueItem::Notification(n) => notification_key(n),
        };
        Ok(self.tree.get(key)?.map(|p| {
            let len = BlobRef::from_bytes(&p).map_or(0, |r| r.len);
            (p.to_vec(), len)
        }))
    }
}

fn read_u64(tree: &sled::Tree, key: &[u8], what: &str) -> Result<Option<u64>, StoreError> {
    tree.get(key)?.map(|v| be64(Some(&v), what)).transpose()
}

impl Reads for SledBackend {
    fn report(&self, id: &ReportId) -> Result<Option<pb::StoredReport>, StoreError> {
        self.message(&report_key(id), "report")
    }

    fn escalation(&self, id: &CaseId) -> Result<Option<pb::StoredReport>, StoreError> {
        self.message(&escalation_key(id), "report")
    }

    fn history(&self, id: &ReportId) -> Result<Vec<pb::HistoryEvent>, StoreError> {
        self.scan_bodies(&key(HISTORY, &[id.as_bytes()]), "history")
    }

    fn queue_page(
        &self,
        recipient: &SpiffeId,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<QueuedBody>, bool), StoreError> {
        let prefix = queue_prefix(recipient);
        let start = queue_key(&prefix, after.saturating_add(1));
        let mut end = prefix.clone();
        if let Some(last) = end.last_mut() {
            *last = 1;
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for kv in self.tree.range(start..end) {
            let (k, v) = kv?;
            if out.len() == limit {
                return Ok((out, true));
            }
            let seq = queue_seq(&k, prefix.len())?;
            let item = decode_queue_value(&v)?;
            let report_id = item.report_id();
            let (pointer, size) = self.queued_body(&item)?.ok_or_else(|| {
                StoreError::Corrupt(format!("queue entry for missing report {report_id}"))
            })?;
            if !out.is_empty() && bytes + size as usize > max_bytes {
                return Ok((out, true));
            }
            bytes += size as usize;
            let loaded = match item {
                crate::store::seam::QueueItem::Notification(_) => self
                    .notification_body(&pointer)
                    .map(|(_, sn)| Delivered::Notification(sn)),
                _ => self
                    .body(&pointer)
                    .and_then(|b| decode(&b, "report"))
                    .map(Delivered::Report),
            };
            let loaded = match loaded {
                Ok(l) => Ok(l),
                Err(StoreError::Corrupt(why)) => Err(why),
                Err(e) => return Err(e),
            };
            out.push((seq, report_id, loaded));
        }
        Ok((out, false))
    }

    fn counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.tree
            .scan_prefix([STAT])
            .map(|kv| {
                let (k, v) = kv?;
                Ok((
                    String::from_utf8_lossy(k.get(1..).unwrap_or_default()).into_owned(),
                    decode_counter(&v)?,
                ))
            })
            .collect()
    }

    fn counters(&self) -> Result<Counters, StoreError> {
        let d = Counters::default();
        Ok(Counters {
            audit_head: self.audit_head()?.unwrap_or(d.audit_head),
            next_queue_seq: read_u64(&self.tree, META_QUEUE_SEQ, "queue seq")?
                .unwrap_or(d.next_queue_seq),
            next_history_seq: read_u64(&self.tree, META_HIST_SEQ, "history seq")?
                .unwrap_or(d.next_history_seq),
        })
    }

    fn audit_records(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.tree
            .scan_prefix([AUDIT])
            .map(|kv| self.body(&kv?.1))
            .collect()
    }

    fn audit_head(&self) -> Result<Option<ChainHead>, StoreError> {
        self.tree
            .get(META_AUDIT_HEAD)?
            .map(|v| decode_head(&v))
            .transpose()
    }

    fn list_changes(&self, from: u64, limit: usize) -> Result<Vec<StoredChange>, StoreError> {
        self.tree
            .range(list_key(from.max(1))..list_key(u64::MAX))
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                decode_change(&k, &v)
            })
            .collect()
    }

    fn list_tip(&self) -> Result<Option<Tip>, StoreError> {
        self.tree
            .get(META_LIST_TIP)?
            .map(|v| decode_tip(&v))
            .transpose()
    }

    fn rules(&self) -> Result<Option<(u64, String)>, StoreError> {
        self.tree
            .get(META_RULES)?
            .map(|v| decode_rules(&v))
            .transpose()
    }

    fn registrations(&self) -> Result<Vec<pb::Registration>, StoreError> {
        self.scan_inline(&[REGISTRATION], "registration")
    }

    fn case(&self, id: &CaseId) -> Result<Option<pb::CaseRecord>, StoreError> {
        self.inline(&case_key(id), "case")
    }

    fn cases(&self) -> Result<Vec<pb::CaseRecord>, StoreError> {
        self.scan_inline(&[CASE], "case")
    }

    fn case_keys_of(&self, report: &ReportId) -> Result<Option<pb::CaseKeysRecord>, StoreError> {
        self.message(&case_keys_key(report), "case keys")
    }

    fn each_case(
        &self,
        f: &mut dyn FnMut(pb::CaseRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for kv in self.tree.scan_prefix([CASE]) {
            f(decode(&kv?.1, "case")?)?;
        }
        Ok(())
    }

    fn each_case_keys(
        &self,
        f: &mut dyn FnMut(pb::CaseKeysRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for kv in self.tree.scan_prefix([CASE_KEYS]) {
            f(decode(&self.body(&kv?.1)?, "case keys")?)?;
        }
        Ok(())
    }

    fn is_sighting(&self, case: &CaseId, report: &ReportId) -> Result<bool, StoreError> {
        Ok(self.tree.contains_key(sighting_key(case, report))?)
    }

    fn sightings(&self, case: &CaseId, limit: usize) -> Result<Vec<ReportId>, StoreError> {
        self.tree
            .scan_prefix(key(SIGHTING, &[case.as_bytes()]))
            .take(limit)
            .map(|kv| {
                let (k, _) = kv?;
                Ok(ReportId::from_bytes(id16(
                    k.get(17..).unwrap_or_default(),
                    "sighting key",
                )?))
            })
            .collect()
    }

    fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<(i64, CaseId, u32)>, StoreError> {
        let end = key(DEADLINE, &[&now_ms.saturating_add(1).to_be_bytes()]);
        self.tree
            .range(vec![DEADLINE]..end)
            .take(limit)
            .map(|kv| decode_deadline_key(&kv?.0))
            .collect()
    }

    fn next_deadline(&self) -> Result<Option<i64>, StoreError> {
        match self.tree.scan_prefix([DEADLINE]).next() {
            None => Ok(None),
            Some(kv) => Ok(Some(decode_deadline_key(&kv?.0)?.0)),
        }
    }

    fn series_record(&self, id: &SeriesId) -> Result<Option<pb::SeriesRecord>, StoreError> {
        self.inline(&series_key(id), "series")
    }

    fn series_records(&self) -> Result<Vec<pb::SeriesRecord>, StoreError> {
        self.scan_inline(&[SERIES], "series")
    }

    fn series_hashes(&self) -> Result<Vec<SeriesHashKey>, StoreError> {
        self.tree
            .scan_prefix([SERIES_HASH])
            .map(|kv| {
                let (k, v) = kv?;
                decode_series_hash(&k, &v)
            })
            .collect()
    }

    fn preference(&self, id: &SeriesId) -> Result<Option<(Preference, i64)>, StoreError> {
        self.inline::<pb::StoredPreference>(&preference_key(id), "preference")?
            .map(|p| decode_preference(&p))
            .transpose()
    }

    fn preferences(&self) -> Result<Vec<(SeriesId, Preference, i64)>, StoreError> {
        self.tree
            .scan_prefix([PREFERENCE])
            .map(|kv| {
                let (k, v) = kv?;
                let id = SeriesId::from_bytes(id16(k.get(1..).unwrap_or_default(), "preference")?);
                let (p, at) = decode_preference(&decode(&v, "preference")?)?;
                Ok((id, p, at))
            })
            .collect()
    }

    fn digest_state(&self, id: &SeriesId) -> Result<Option<pb::DigestState>, StoreError> {
        self.inline(&digest_key(id), "digest state")
    }

    fn series_matches(
        &self,
        id: &SeriesId,
        from: i64,
        to: i64,
    ) -> Result<Vec<pb::SeriesMatch>, StoreError> {
        let start = key(MATCH, &[id.as_bytes(), &from.max(0).to_be_bytes()]);
        let end = key(MATCH, &[id.as_bytes(), &to.max(0).to_be_bytes()]);
        self.tree
            .range(start..end)
            .map(|kv| decode(&kv?.1, "series match"))
            .collect()
    }

    fn proceedings_drafts(&self) -> Result<Vec<(CaseId, pb::ProceedingsDraft)>, StoreError> {
        self.tree
            .scan_prefix([DRAFT])
            .map(|kv| {
                let (k, v) = kv?;
                let (case, _) = case_and_series(&k)?;
                Ok((case, decode(&v, "draft")?))
            })
            .collect()
    }

    fn series_footprint(&self, id: &SeriesId) -> Result<Vec<serde_json::Value>, StoreError> {
        footprint::of(self, id)
    }

    fn check(&self) -> Result<StoreCheck, StoreError> {
        let mut out = StoreCheck::default();
        for kv in self.tree.iter() {
            let (k, v) = kv?;
            let Some(kind) = body_kind(&k) else {
                continue;
            };
            out.bodies += 1;
            let Some(r) = BlobRef::from_bytes(&v) else {
                out.damaged.push(Damage {
                    kind,
                    key: hex::encode(k.get(1..).unwrap_or_default()),
                    offset: 0,
                    len: 0,
                    reason: "the pointer itself is damaged".into(),
                });
                continue;
            };
            if let Err(e) = self.blobs.read(r) {
                let key = match (k.first(), k.get(1..17)) {
                    (Some(&REPORT) | Some(&HISTORY) | Some(&CASE_KEYS), Some(id)) => {
                        ReportId::from_bytes(id16(id, "key")?).to_string()
                    }
                    _ => hex::encode(k.get(1..).unwrap_or_default()),
                };
                out.damaged.push(Damage {
                    kind,
                    key,
                    offset: r.offset,
                    len: r.len,
                    reason: e.to_string(),
                });
            }
        }
        Ok(out)
    }

    fn visit(
        &self,
        f: &mut dyn FnMut(Record<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let counters = self.counters()?;
        let mut c = encode_head(&counters.audit_head);
        c.extend_from_slice(&counters.next_queue_seq.to_be_bytes());
        c.extend_from_slice(&counters.next_history_seq.to_be_bytes());
        f(Record {
            part: Part::Counters,
            key: &[],
            value: &c,
            damaged: false,
        })?;
        for kv in self.tree.iter() {
            let (k, v) = kv?;
            let Some(&prefix) = k.first() else { continue };
            let rest = k.get(1..).unwrap_or_default();
            let (value, damaged) = match body_kind(&k) {
                Some(_) => match self.body(&v) {
                    Ok(body) => (body, false),
                    // A damaged body counts as what is there, and is
                    // counted: the digest still compares states, and says
                    // the damage.
                    Err(StoreError::Corrupt(_)) => (self.raw_body(&v)?, true),
                    Err(e) => return Err(e),
                },
                None => (v.to_vec(), false),
            };
            let split = |at: &[usize]| -> Vec<&[u8]> {
                let mut parts = Vec::new();
                let mut from = 0;
                for &to in at {
                    parts.push(rest.get(from..to).unwrap_or_default());
                    from = to;
                }
                parts.push(rest.get(from..).unwrap_or_default());
                parts
            };
            let (part, key): (Part, Vec<&[u8]>) = match prefix {
                REPORT => (Part::Report, split(&[])),
                ESCALATION => (Part::Redecision, split(&[])),
                HISTORY => (Part::History, split(&[16])),
                QUEUE => {
                    let nul = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
                    let recipient = rest.get(..nul).unwrap_or_default();
                    let seq = rest.get(nul + 1..).unwrap_or_default();
                    let item = decode_queue_value(&v)?;
                    let value = crate::store::digest::queue_item(&item);
                    f(Record {
                        part: Part::Queue,
                        key: &[recipient, seq],
                        value: &value,
                        damaged: false,
                    })?;
                    continue;
                }
                HELD_BACK => (Part::HeldBack, split(&[])),
                AUDIT => (Part::Audit, split(&[])),
                STAT => (Part::Stat, split(&[])),
                LIST => (Part::ListChange, split(&[])),
                REGISTRATION => (Part::Registration, split(&[])),
                CASE => (Part::Case, split(&[])),
                CASE_KEYS => (Part::CaseKeys, split(&[])),
                SIGHTING => (Part::Sighting, split(&[16])),
                DEADLINE => (Part::Deadline, split(&[8, 24])),
                SERIES => (Part::Series, split(&[])),
                SERIES_HASH => (Part::SeriesHash, split(&[16, 17])),
                PREFERENCE => (Part::Preference, split(&[])),
                DIGEST => (Part::DigestState, split(&[])),
                MATCH => (Part::SeriesMatch, split(&[16, 24])),
                CASE_SERIES => (Part::CaseSeries, split(&[16])),
                DRAFT => (Part::Draft, split(&[16])),
                NOTIFICATION => (Part::Notification, split(&[])),
                _ => match k.as_ref() {
                    META_LIST_TIP => (Part::ListTip, Vec::new()),
                    META_RULES => (Part::Rules, Vec::new()),
                    // The counters, said above in the hub's terms; the blob
                    // file's end is where bodies lie, not what is stored.
                    _ => continue,
                },
            };
            f(Record {
                part,
                key: &key,
                value: &value,
                damaged,
            })?;
        }
        Ok(())
    }
}

impl Backend for SledBackend {
    fn reads(&self) -> &(dyn Reads + 'static) {
        self
    }

    fn begin(&self) -> Box<dyn Group + '_> {
        Box::new(group::SledGroup::new(self))
    }

    fn make_durable(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    fn admit_reports(&self) -> Result<(), StoreError> {
        self.room.check()
    }
}

impl SledBackend {
    fn blob_end(&self) -> u64 {
        self.blob_end.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> SledBackend {
        // sled releases its lock when the last handle (the writer
        // thread's) drops: a reopen right after a store closes may wait.
        let mut last = None;
        for _ in 0..100 {
            match SledBackend::open(dir, StoreOptions::default()) {
                Ok(b) => return b,
                Err(e) => last = Some(e),
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("reopening the store: {last:?}");
    }

    crate::store_test_suite!(|dir: &Path| -> Arc<dyn Backend> { Arc::new(open(dir)) });

    #[test]
    fn sleds_own_corruption_is_damage_not_a_retry() {
        let e = StoreError::from(sled::Error::Corruption { at: None, bt: () });
        assert!(matches!(e, StoreError::Corrupt(_)), "{e:?}");
    }
}
