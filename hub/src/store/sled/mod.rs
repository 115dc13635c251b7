//! The embedded backend: sled for the small state (settings, series,
//! statistics, the pipeline's counters), and the ledger (`meldnet-ledger`)
//! for everything that grows with every report: report bodies and
//! decisions, history, audit records, queue entries, cases, sightings,
//! deadlines and the known-hash list, each in an index over one append-only
//! log.
//!
//! Durability of a group (`Group::apply`): its ledger records are written
//! to the log and synced first, then everything else is applied as one
//! atomic sled batch that also records the log's new end; the pipeline then
//! calls `make_durable` (sled's fsync) before it answers anyone, and only
//! then may the ledger write a checkpoint that covers the group. Opening
//! cuts the log back to the end sled recorded (a group that never
//! committed) and replays the log after the ledger's last checkpoint.
//!
//! Memory: sled holds a few keys per series, registration and statistic,
//! never one per report; the ledger holds its newest changes in memory
//! until a checkpoint writes them as runs (memory-mapped), so what the
//! store takes stays bounded however many reports it holds.

mod footprint;
mod group;
mod keys;

use crate::store::seam::{
    Backend, Counters, Delivered, Group, Part, QueueItem, QueuedBody, Reads, Record,
};
use crate::store::series::decode_preference;
use crate::store::types::{Damage, ExactKey, SeriesHashKey, StoreCheck, StoredChange};
use crate::store::{StoreError, StoreOptions};
use keys::*;
use meldnet_core::CaseId;
use meldnet_core::ChainHead;
use meldnet_core::ReportId;
use meldnet_core::SpiffeId;
use meldnet_core::{Preference, SeriesId};
use meldnet_ledger::{Ledger, LedgerError, LogError, Ptr};
use meldnet_list::Tip;
use meldnet_proto::v1 as pb;
use prost::Message;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

/// What a walk over an index says each entry to: its key and value;
/// answers whether to go on.
type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<bool, StoreError> + 'a;

/// The same for decoded bodies.
type VisitBody<'a, M> = dyn FnMut(&[u8], M) -> Result<bool, StoreError> + 'a;

/// The ledger's folder inside the store's.
pub const LEDGER_DIR: &str = "ledger";

/// The ledger's indexes as this backend lays them out (for tools and the
/// fuzz target that open its files the way the store does).
pub fn ledger_indexes() -> Vec<std::sync::Arc<dyn meldnet_ledger::Table>> {
    tables()
}

/// Whether an I/O error says the disk (or the quota) is full.
fn is_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

impl From<LedgerError> for StoreError {
    fn from(e: LedgerError) -> Self {
        match &e {
            LedgerError::Log(LogError::Io { source, .. }) if is_full(source) => {
                StoreError::Full(e.to_string())
            }
            LedgerError::Log(LogError::Damaged { .. }) => StoreError::Corrupt(e.to_string()),
            LedgerError::Run(meldnet_ledger::RunError::Damaged { .. }) => {
                StoreError::Corrupt(e.to_string())
            }
            _ => StoreError::Io(e.to_string()),
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

/// The recipients' numbers in queue keys, both ways.
#[derive(Default)]
struct Recipients {
    numbers: HashMap<String, u32>,
    names: HashMap<u32, String>,
    next: u32,
}

/// The embedded backend. Cheap to share (`Arc`).
pub struct SledBackend {
    db: sled::Db,
    tree: sled::Tree,
    ledger: Ledger,
    /// The ledger's end as of the last applied group (what the next
    /// `make_durable` makes durable).
    applied_end: AtomicU64,
    recipients: RwLock<Recipients>,
    /// Damage met in the ledger's log when it was opened.
    opened_with_damage: Vec<meldnet_ledger::Damage>,
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
            version: be64(Some(k), "list change")?,
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
    /// the hub), acknowledgements, operators' changes; sled's page cache
    /// takes at most `options.cache_bytes`.
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
        let format = read_u64(&tree, META_FORMAT, "store format")?;
        if format.is_none() && tree.contains_key(META_BLOB_END_OF_FORMAT_1)? {
            return Err(StoreError::Corrupt(format!(
                "{}: a store of the first layout (reports in sled beside reports.blobs); this hub keeps them in its ledger (layout {FORMAT}) and does not read the first: keep that folder with the hub that wrote it, or start this hub on a new folder",
                dir.display()
            )));
        }
        if format.is_some_and(|f| f != FORMAT) {
            return Err(StoreError::Corrupt(format!(
                "{}: store layout {} (this hub reads layout {FORMAT})",
                dir.display(),
                format.unwrap_or(0)
            )));
        }
        if format.is_none() {
            tree.insert(META_FORMAT, &FORMAT.to_be_bytes()[..])?;
            db.flush()?;
        }
        let end = read_u64(&tree, META_LEDGER_END, "ledger end")?.unwrap_or(0);
        let mut ledger_options = meldnet_ledger::Options::default();
        if options.checkpoint_entries > 0 {
            ledger_options.checkpoint_entries = options.checkpoint_entries;
        }
        let (ledger, damage) = Ledger::open(&dir.join(LEDGER_DIR), tables(), end, ledger_options)?;
        let mut recipients = Recipients {
            next: read_u64(&tree, META_NEXT_RECIPIENT, "next recipient")?.unwrap_or(1) as u32,
            ..Default::default()
        };
        for kv in tree.scan_prefix([RECIPIENT]) {
            let (k, v) = kv?;
            let name = String::from_utf8_lossy(k.get(1..).unwrap_or_default()).into_owned();
            let n = v
                .as_ref()
                .try_into()
                .map(u32::from_be_bytes)
                .map_err(|_| StoreError::Corrupt(format!("recipient number of {name}")))?;
            recipients.names.insert(n, name.clone());
            recipients.numbers.insert(name, n);
        }
        Ok(SledBackend {
            db,
            tree,
            ledger,
            applied_end: AtomicU64::new(end),
            recipients: RwLock::new(recipients),
            opened_with_damage: damage,
            room: Room {
                dir: dir.to_path_buf(),
                min_free: options.min_free,
            },
        })
    }

    /// The ledger's runs per index (name, runs, entries), for operators.
    pub fn ledger_runs(&self) -> Vec<(&'static str, usize, u64)> {
        self.ledger.runs()
    }

    fn recipient_number(&self, recipient: &str) -> Option<u32> {
        self.recipients
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .numbers
            .get(recipient)
            .copied()
    }

    fn recipient_name(&self, n: u32) -> Option<String> {
        self.recipients
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .names
            .get(&n)
            .cloned()
    }

    /// The place of the body of `key` in `index`, if set.
    fn place(&self, index: u8, key: &[u8]) -> Result<Option<Ptr>, StoreError> {
        self.ledger
            .get(index, key)
            .map(|v| {
                Ptr::from_bytes(&v).ok_or_else(|| StoreError::Corrupt("a body's place".into()))
            })
            .transpose()
    }

    /// The body of `key` in `index`, decoded.
    fn message<M: Message + Default>(
        &self,
        index: u8,
        key: &[u8],
        what: &str,
    ) -> Result<Option<M>, StoreError> {
        let Some(p) = self.place(index, key)? else {
            return Ok(None);
        };
        decode(&self.ledger.body(index, p)?, what).map(Some)
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

    /// Says each key of `index` in `[from, to)` with its value to `f`, in
    /// order; `f` answers whether to go on.
    fn each(
        &self,
        index: u8,
        from: &[u8],
        to: Option<&[u8]>,
        f: &mut Visit<'_>,
    ) -> Result<(), StoreError> {
        let mut failed = None;
        self.ledger
            .scan(index, from, to, &mut |k, v| match f(k, v) {
                Ok(go) => go,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            });
        failed.map_or(Ok(()), Err)
    }

    /// Every body of `index` in `[from, to)`, decoded, in key order.
    fn bodies<M: Message + Default>(
        &self,
        index: u8,
        from: &[u8],
        to: Option<&[u8]>,
        what: &str,
        f: &mut VisitBody<'_, M>,
    ) -> Result<(), StoreError> {
        self.each(index, from, to, &mut |k, v| {
            let p =
                Ptr::from_bytes(v).ok_or_else(|| StoreError::Corrupt(format!("{what}: place")))?;
            f(k, decode(&self.ledger.body(index, p)?, what)?)
        })
    }

    /// A stored notification: its body's bytes and the signed message.
    fn notification_body(&self, p: Ptr) -> Result<(Vec<u8>, pb::SignedNotification), StoreError> {
        let body = self.ledger.body(NOTIFICATIONS, p)?;
        let sn = decode(&body, "notification")?;
        Ok((body, sn))
    }
}

fn read_u64(tree: &sled::Tree, key: &[u8], what: &str) -> Result<Option<u64>, StoreError> {
    tree.get(key)?.map(|v| be64(Some(&v), what)).transpose()
}

/// The first key after every key that starts with `prefix` (none: no end).
fn after_prefix(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl Reads for SledBackend {
    fn report(&self, id: &ReportId) -> Result<Option<pb::StoredReport>, StoreError> {
        self.message(REPORTS, id.as_bytes(), "report")
    }

    fn escalation(&self, id: &CaseId) -> Result<Option<pb::StoredReport>, StoreError> {
        self.message(REDECISIONS, id.as_bytes(), "report")
    }

    fn stored_history(&self, id: &ReportId) -> Result<Vec<pb::StoredHistory>, StoreError> {
        let mut out = Vec::new();
        let end = after_prefix(id.as_bytes());
        self.bodies(
            HISTORY,
            &history_key(id, 0),
            end.as_deref(),
            "history",
            &mut |k, ev: pb::StoredHistory| {
                if k.get(..16) != Some(&id.as_bytes()[..]) {
                    return Ok(false);
                }
                out.push(ev);
                Ok(true)
            },
        )?;
        Ok(out)
    }

    fn audit_marks(
        &self,
        recipient: &SpiffeId,
        seq: u64,
        limit: usize,
    ) -> Result<Vec<u64>, StoreError> {
        let Some(n) = self.recipient_number(&recipient.to_string()) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let from = cat(&[&n.to_be_bytes(), &seq.to_be_bytes(), &[0; 8]]);
        let to = cat(&[&n.saturating_add(1).to_be_bytes(), &[0; 16]]);
        self.each(AUDIT_MARKS, &from, Some(&to), &mut |k, _| {
            out.push(be64(k.get(12..), "audit mark")?);
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    fn audit_record(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        match self.place(AUDIT, &seq.to_be_bytes())? {
            Some(p) => Ok(Some(self.ledger.body(AUDIT, p)?)),
            None => Ok(None),
        }
    }

    fn queue_page(
        &self,
        recipient: &SpiffeId,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<QueuedBody>, bool), StoreError> {
        let Some(n) = self.recipient_number(&recipient.to_string()) else {
            return Ok((Vec::new(), false));
        };
        let from = queue_key(n, after.saturating_add(1));
        let to = queue_key(n.saturating_add(1), 0);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut more = false;
        self.each(QUEUE, &from, Some(&to), &mut |k, v| {
            if out.len() == limit {
                more = true;
                return Ok(false);
            }
            let (_, seq) = decode_queue_key(k)?;
            let (item, place) = decode_queue_value(v)?;
            let report_id = item.report_id();
            let (index, id) = body_of(&item);
            let place = match place {
                Some(p) => p,
                None => self.place(index, &id)?.ok_or_else(|| {
                    StoreError::Corrupt(format!("queue entry for missing report {report_id}"))
                })?,
            };
            if !out.is_empty() && bytes + place.len as usize > max_bytes {
                more = true;
                return Ok(false);
            }
            bytes += place.len as usize;
            let loaded = match item {
                crate::store::seam::QueueItem::Notification(_) => self
                    .notification_body(place)
                    .map(|(_, sn)| Delivered::Notification(sn)),
                _ => self
                    .ledger
                    .body(index, place)
                    .map_err(StoreError::from)
                    .and_then(|b| decode(&b, "report"))
                    .map(Delivered::Report),
            };
            let loaded = match loaded {
                Ok(l) => Ok(l),
                Err(StoreError::Corrupt(why)) => Err(why),
                Err(e) => return Err(e),
            };
            out.push((seq, report_id, loaded));
            Ok(true)
        })?;
        Ok((out, more))
    }

    fn queue_items_after(
        &self,
        recipient: &SpiffeId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, crate::store::seam::QueueItem)>, StoreError> {
        let Some(n) = self.recipient_number(&recipient.to_string()) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let from = queue_key(n, after.saturating_add(1));
        let to = queue_key(n.saturating_add(1), 0);
        self.each(QUEUE, &from, Some(&to), &mut |k, v| {
            out.push((decode_queue_key(k)?.1, decode_queue_value(v)?.0));
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    fn each_queue_entry(
        &self,
        from: u64,
        f: &mut dyn FnMut(u64, QueueItem) -> bool,
    ) -> Result<(), StoreError> {
        let mut numbers: Vec<u32> = self
            .recipients
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .names
            .keys()
            .copied()
            .collect();
        numbers.sort_unstable();
        for n in numbers {
            let mut go = true;
            self.each(
                QUEUE,
                &queue_key(n, from),
                Some(&queue_key(n.saturating_add(1), 0)),
                &mut |k, v| {
                    go = f(decode_queue_key(k)?.1, decode_queue_value(v)?.0);
                    Ok(go)
                },
            )?;
            if !go {
                break;
            }
        }
        Ok(())
    }

    fn report_ids_after(
        &self,
        after: Option<&ReportId>,
        limit: usize,
    ) -> Result<Vec<ReportId>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let from = after.map_or([0u8; 16], |a| *a.as_bytes());
        self.each(REPORTS, &from, None, &mut |k, _| {
            let id: [u8; 16] = k
                .try_into()
                .map_err(|_| StoreError::Corrupt("a report key".into()))?;
            if after.is_none_or(|a| a.as_bytes() != &id) {
                out.push(ReportId::from_bytes(id));
            }
            Ok(out.len() < limit)
        })?;
        Ok(out)
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
            next_keys_seq: read_u64(&self.tree, META_KEYS_SEQ, "keys seq")?
                .unwrap_or(d.next_keys_seq),
        })
    }

    fn audit_records(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = Vec::new();
        self.each(AUDIT, &[0; 8], None, &mut |_, v| {
            let p = Ptr::from_bytes(v).ok_or_else(|| StoreError::Corrupt("audit place".into()))?;
            out.push(self.ledger.body(AUDIT, p)?);
            Ok(true)
        })?;
        Ok(out)
    }

    fn audit_head(&self) -> Result<Option<ChainHead>, StoreError> {
        self.tree
            .get(META_AUDIT_HEAD)?
            .map(|v| decode_head(&v))
            .transpose()
    }

    fn list_changes(&self, from: u64, limit: usize) -> Result<Vec<StoredChange>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        self.each(LIST, &from.max(1).to_be_bytes(), None, &mut |k, v| {
            let p = Ptr::from_bytes(v).ok_or_else(|| StoreError::Corrupt("list place".into()))?;
            out.push(decode_change(k, &self.ledger.body(LIST, p)?)?);
            Ok(out.len() < limit)
        })?;
        Ok(out)
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
        self.message(CASES, id.as_bytes(), "case")
    }

    fn cases(&self) -> Result<Vec<pb::CaseRecord>, StoreError> {
        let mut out = Vec::new();
        self.each_case(&mut |c| {
            out.push(c);
            Ok(())
        })?;
        Ok(out)
    }

    fn case_keys_of(&self, report: &ReportId) -> Result<Option<pb::CaseKeysRecord>, StoreError> {
        self.message(CASE_KEYS, report.as_bytes(), "case keys")
    }

    fn each_case(
        &self,
        f: &mut dyn FnMut(pb::CaseRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.bodies(CASES, &[0; 16], None, "case", &mut |_, c| {
            f(c)?;
            Ok(true)
        })
    }

    fn each_case_keys(
        &self,
        f: &mut dyn FnMut(pb::CaseKeysRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.bodies(CASE_KEYS, &[0; 16], None, "case keys", &mut |_, c| {
            f(c)?;
            Ok(true)
        })
    }

    fn case_keys_since(
        &self,
        after: u64,
        f: &mut dyn FnMut(pb::CaseKeysRecord) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let from = after.saturating_add(1).to_be_bytes();
        self.each(KEYS_BY_SEQ, &from, None, &mut |k, v| {
            let seq = be64(Some(k), "keys seq")?;
            let report = ReportId::from_bytes(id16(v, "keys seq's report")?);
            match self.case_keys_of(&report)? {
                // A record rewritten later (a split) is met at its new place.
                Some(rec) if rec.seq == seq => f(rec),
                _ => Ok(true),
            }
        })
    }

    fn case_of_key(&self, key: &ExactKey) -> Result<Option<CaseId>, StoreError> {
        self.ledger
            .get(CASE_BY_KEY, &key.to_bytes())
            .map(|v| Ok(CaseId::from_bytes(id16(&v, "case of a key")?)))
            .transpose()
    }

    fn is_sighting(&self, case: &CaseId, report: &ReportId) -> Result<bool, StoreError> {
        Ok(self
            .ledger
            .get(SIGHTINGS, &sighting_key(case, report))
            .is_some())
    }

    fn sightings(&self, case: &CaseId, limit: usize) -> Result<Vec<ReportId>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let end = after_prefix(case.as_bytes());
        self.each(
            SIGHTINGS,
            &sighting_key(case, &ReportId::from_bytes([0; 16])),
            end.as_deref(),
            &mut |k, _| {
                out.push(ReportId::from_bytes(id16(
                    k.get(16..).unwrap_or_default(),
                    "sighting key",
                )?));
                Ok(out.len() < limit)
            },
        )?;
        Ok(out)
    }

    fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<(i64, CaseId, u32)>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let end = now_ms.saturating_add(1).to_be_bytes();
        self.each(DEADLINES, &[0; 28], None, &mut |k, _| {
            if k.get(..8) >= Some(&end[..]) {
                return Ok(false);
            }
            out.push(decode_deadline_key(k)?);
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    fn next_deadline(&self) -> Result<Option<i64>, StoreError> {
        let mut first = None;
        self.each(DEADLINES, &[0; 28], None, &mut |k, _| {
            first = Some(decode_deadline_key(k)?.0);
            Ok(false)
        })?;
        Ok(first)
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
        for index in [
            REPORTS,
            REDECISIONS,
            NOTIFICATIONS,
            HISTORY,
            AUDIT,
            CASE_KEYS,
            CASES,
            LIST,
        ] {
            let kind = body_kind(index).unwrap_or("body");
            let key_len = match index {
                HISTORY => 24,
                AUDIT | LIST => 8,
                _ => 16,
            };
            self.each(index, &vec![0u8; key_len], None, &mut |k, v| {
                out.bodies += 1;
                let Some(p) = Ptr::from_bytes(v) else {
                    out.damaged.push(Damage {
                        kind,
                        key: hex::encode(k),
                        offset: 0,
                        len: 0,
                        reason: "the place itself is damaged".into(),
                    });
                    return Ok(true);
                };
                if let Err(e) = self.ledger.body(index, p) {
                    let key = match (index, k.get(..16)) {
                        (REPORTS | HISTORY | CASE_KEYS, Some(id)) => {
                            ReportId::from_bytes(id16(id, "key")?).to_string()
                        }
                        _ => hex::encode(k),
                    };
                    out.damaged.push(Damage {
                        kind,
                        key,
                        offset: p.offset,
                        len: p.len,
                        reason: e.to_string(),
                    });
                }
                Ok(true)
            })?;
        }
        // Damage the log holds where no index points (a record whose header
        // is gone), as it was met when the store was opened.
        for d in &self.opened_with_damage {
            if !out.damaged.iter().any(|x| x.offset == d.offset) {
                out.damaged.push(Damage {
                    kind: "log range",
                    key: String::new(),
                    offset: d.offset,
                    len: d.len.min(u64::from(u32::MAX)) as u32,
                    reason: d.reason.clone(),
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
        c.extend_from_slice(&counters.next_keys_seq.to_be_bytes());
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
            let split = |at: &[usize]| -> Vec<&[u8]> { split_at(rest, at) };
            let (part, key): (Part, Vec<&[u8]>) = match prefix {
                HELD_BACK => (Part::HeldBack, split(&[])),
                STAT => (Part::Stat, split(&[])),
                REGISTRATION => (Part::Registration, split(&[])),
                SERIES => (Part::Series, split(&[])),
                SERIES_HASH => (Part::SeriesHash, split(&[16, 17])),
                PREFERENCE => (Part::Preference, split(&[])),
                DIGEST => (Part::DigestState, split(&[])),
                MATCH => (Part::SeriesMatch, split(&[16, 24])),
                CASE_SERIES => (Part::CaseSeries, split(&[16])),
                DRAFT => (Part::Draft, split(&[16])),
                _ => match k.as_ref() {
                    META_LIST_TIP => (Part::ListTip, Vec::new()),
                    META_RULES => (Part::Rules, Vec::new()),
                    // The counters, said above in the hub's terms; the
                    // ledger's end, the recipients' numbers and the format
                    // are where records lie, not what is stored.
                    _ => continue,
                },
            };
            f(Record {
                part,
                key: &key,
                value: &v,
                damaged: false,
            })?;
        }
        for (index, part, at) in [
            (REPORTS, Part::Report, &[][..]),
            (REDECISIONS, Part::Redecision, &[][..]),
            (NOTIFICATIONS, Part::Notification, &[][..]),
            (HISTORY, Part::History, &[16][..]),
            (AUDIT, Part::Audit, &[][..]),
            (CASE_KEYS, Part::CaseKeys, &[][..]),
            (CASES, Part::Case, &[][..]),
            (LIST, Part::ListChange, &[][..]),
        ] {
            let key_len = match index {
                HISTORY => 24,
                AUDIT | LIST => 8,
                _ => 16,
            };
            self.each(index, &vec![0u8; key_len], None, &mut |k, v| {
                let p = Ptr::from_bytes(v)
                    .ok_or_else(|| StoreError::Corrupt("a body's place".into()))?;
                let (value, damaged) = match self.ledger.body(index, p) {
                    Ok(body) => (body, false),
                    // A damaged body counts as what is there, and is
                    // counted: the digest still compares states, and says
                    // the damage.
                    Err(LedgerError::Log(LogError::Damaged { .. })) => {
                        (self.ledger.body_raw(index, p)?, true)
                    }
                    Err(e) => return Err(e.into()),
                };
                let key = split_at(k, at);
                f(Record {
                    part,
                    key: &key,
                    value: &value,
                    damaged,
                })?;
                Ok(true)
            })?;
        }
        let mut names: HashMap<u32, String> = HashMap::new();
        self.each(QUEUE, &[0; 12], None, &mut |k, v| {
            let (n, seq) = decode_queue_key(k)?;
            let recipient = match names.get(&n) {
                Some(r) => r.clone(),
                None => {
                    let r = self.recipient_name(n).ok_or_else(|| {
                        StoreError::Corrupt(format!("queue of an unknown recipient number {n}"))
                    })?;
                    names.insert(n, r.clone());
                    r
                }
            };
            let (item, _) = decode_queue_value(v)?;
            let value = crate::store::digest::queue_item(&item);
            f(Record {
                part: Part::Queue,
                key: &[recipient.as_bytes(), &seq.to_be_bytes()],
                value: &value,
                damaged: false,
            })?;
            Ok(true)
        })?;
        self.each(CASE_BY_KEY, &[0; 33], None, &mut |k, v| {
            f(Record {
                part: Part::CaseKey,
                key: &split_at(k, &[1]),
                value: v,
                damaged: false,
            })?;
            Ok(true)
        })?;
        self.each(AUDIT_MARKS, &[0; 20], None, &mut |k, _| {
            let (n, _) = decode_queue_key(k)?;
            let recipient = self.recipient_name(n).ok_or_else(|| {
                StoreError::Corrupt(format!("audit mark of an unknown recipient number {n}"))
            })?;
            let parts = split_at(k, &[4, 12]);
            f(Record {
                part: Part::AuditMark,
                key: &[
                    recipient.as_bytes(),
                    parts.get(1).copied().unwrap_or_default(),
                    parts.get(2).copied().unwrap_or_default(),
                ],
                value: &[],
                damaged: false,
            })?;
            Ok(true)
        })?;
        self.each(SIGHTINGS, &[0; 32], None, &mut |k, _| {
            f(Record {
                part: Part::Sighting,
                key: &split_at(k, &[16]),
                value: &[],
                damaged: false,
            })?;
            Ok(true)
        })?;
        self.each(DEADLINES, &[0; 28], None, &mut |k, _| {
            f(Record {
                part: Part::Deadline,
                key: &split_at(k, &[8, 24]),
                value: &[],
                damaged: false,
            })?;
            Ok(true)
        })?;
        Ok(())
    }
}

/// `b` cut at each of `at`.
fn split_at<'a>(b: &'a [u8], at: &[usize]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    let mut from = 0;
    for &to in at {
        parts.push(b.get(from..to).unwrap_or_default());
        from = to;
    }
    parts.push(b.get(from..).unwrap_or_default());
    parts
}

impl Backend for SledBackend {
    fn reads(&self) -> &(dyn Reads + 'static) {
        self
    }

    fn begin(&self) -> Box<dyn Group + '_> {
        Box::new(group::SledGroup::new(self))
    }

    fn make_durable(&self) -> Result<(), StoreError> {
        let end = self.applied_end.load(Ordering::Acquire);
        self.db.flush()?;
        self.ledger.made_durable(end);
        Ok(())
    }

    fn admit_reports(&self) -> Result<(), StoreError> {
        self.room.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

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
