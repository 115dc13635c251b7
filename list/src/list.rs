//! The federated known-hash list: the rules the hub and every node share.
//!
//! The list is a history of changes (an entry added, an entry withdrawn by a
//! tombstone), each with the next version number. The hub signs a *head*
//! (version, live count, running digest over every change's exact bytes); a
//! node applies a batch only when the head's signature holds, the versions
//! follow its own, the digest it computes from what it holds and the batch's
//! bytes equals the head's, and so does the count. A node that starts empty
//! takes a snapshot of the live entries, bound by a digest in its signed head.
//!
//! `KnownSet` is the in-memory list both sides match against: exact SHA-256,
//! MD5 and SHA-1 lookups, and PDQ near matches through `pdq_index`.
//! Nothing here stores anything: the hub keeps the list in its store, a node
//! in `node::list`.

use meldnet_core::CountryCode;
use meldnet_core::Refusal;
use meldnet_core::{AgeGroup, Classification, Known, MatchKind, MediaType};
use meldnet_core::{Context, KeyId, PublicKey, SigningKey};
use meldnet_core::{Md5, PdqHash, Sha1, Sha256};
use meldnet_pdq::MIN_MATCH_QUALITY;
use meldnet_pdq::{NearSet, PdqSet};
use meldnet_proto::v1 as pb;
use prost::Message;
use sha2::Digest;
use std::collections::HashMap;

/// The running digest before the first change.
pub const EMPTY_DIGEST: [u8; 32] = [0; 32];
pub use meldnet_proto::limits::{MAX_ADD_BATCH, MAX_CHECK_BATCH};
const CHANGE_PREFIX: &[u8] = b"meldnet.v1.list-change\0";
const SNAPSHOT_PREFIX: &[u8] = b"meldnet.v1.list-snapshot\0";
const MAX_REASON: usize = 512;

/// An opaque series id: letters, digits and `._:-`, at most 64. Never a name.
#[derive(Clone, PartialEq, Eq, Debug, Hash)]
pub struct EntrySeries(String);

impl EntrySeries {
    /// Parses a series id.
    pub fn parse(s: &str) -> Result<EntrySeries, String> {
        if s.is_empty() || s.len() > 64 {
            return Err(format!("{} characters; 1 to 64 allowed", s.len()));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "._:-".contains(*c)))
        {
            return Err(format!(
                "the character {c:?}; only letters, digits and ._:- are allowed"
            ));
        }
        Ok(EntrySeries(s.to_string()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One known file of the list. At least one hash is set.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ListEntry {
    /// Exact hash.
    pub sha256: Option<Sha256>,
    /// Exact hash, as older lists hold.
    pub md5: Option<Md5>,
    /// Exact hash, as Project VIC lists hold.
    pub sha1: Option<Sha1>,
    /// Perceptual hash and its quality.
    pub pdq: Option<(PdqHash, u8)>,
    /// Baseline, or national (illegal in `source` only).
    pub classification: Classification,
    /// Age group shown.
    pub age_group: AgeGroup,
    /// Image, video or other.
    pub media_type: MediaType,
    /// The country whose hotline or police listed it.
    pub source: CountryCode,
    /// Its series, when known.
    pub series: Option<EntrySeries>,
}

fn optional<T>(
    s: &str,
    field: &str,
    parse: impl Fn(&str) -> Result<T, meldnet_core::HashError>,
) -> Result<Option<T>, Refusal> {
    if s.is_empty() {
        return Ok(None);
    }
    parse(s)
        .map(Some)
        .map_err(|e| Refusal::invalid(field, e.to_string()))
}

impl ListEntry {
    /// Validates a wire entry; errors name the field.
    pub fn from_proto(e: &pb::ListEntry) -> Result<ListEntry, Refusal> {
        let entry = ListEntry {
            sha256: optional(&e.sha256, "sha256", Sha256::parse_hex)?,
            md5: optional(&e.md5, "md5", Md5::parse_hex)?,
            sha1: optional(&e.sha1, "sha1", Sha1::parse_hex)?,
            pdq: meldnet_core::parse_pdq(&e.pdq, e.pdq_quality)?,
            classification: Classification::from_proto(e.classification, "classification")?,
            age_group: AgeGroup::from_proto(e.age_group, "age_group")?,
            media_type: MediaType::from_proto(e.media_type, "media_type")?,
            source: meldnet_core::country(&e.source_country, "source_country")?,
            series: if e.series_id.is_empty() {
                None
            } else {
                Some(
                    EntrySeries::parse(&e.series_id)
                        .map_err(|r| Refusal::invalid("series_id", r))?,
                )
            },
        };
        if !matches!(
            entry.classification,
            Classification::Baseline | Classification::National
        ) {
            return Err(Refusal::invalid(
                "classification",
                format!(
                    "{}: only illegal material (baseline or national) is listed",
                    entry.classification.name()
                ),
            ));
        }
        if entry.sha256.is_none()
            && entry.md5.is_none()
            && entry.sha1.is_none()
            && entry.pdq.is_none()
        {
            return Err(Refusal::invalid(
                "sha256",
                "no hash: give sha256, md5, sha1 or pdq",
            ));
        }
        Ok(entry)
    }

    /// The wire form.
    pub fn to_proto(&self) -> pb::ListEntry {
        let hex = |h: Option<String>| h.unwrap_or_default();
        pb::ListEntry {
            sha256: hex(self.sha256.map(|h| h.to_hex())),
            md5: hex(self.md5.map(|h| h.to_hex())),
            sha1: hex(self.sha1.map(|h| h.to_hex())),
            pdq: hex(self.pdq.map(|(h, _)| h.to_hex())),
            pdq_quality: self.pdq.map_or(0, |(_, q)| u32::from(q)),
            classification: self.classification.to_proto() as i32,
            age_group: self.age_group.to_proto() as i32,
            media_type: self.media_type.to_proto() as i32,
            source_country: self.source.to_string(),
            series_id: self
                .series
                .as_ref()
                .map(|s| s.0.clone())
                .unwrap_or_default(),
        }
    }
}

/// What a change does.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum ChangeKind {
    /// An entry joins the list.
    Add(ListEntry),
    /// The entry added at `entry` is withdrawn.
    Withdraw {
        /// The version that added it.
        entry: u64,
        /// Why, in words.
        reason: String,
    },
}

/// One change of the list.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Change {
    /// Its place in the list's history (from 1).
    pub version: u64,
    /// What it does.
    pub kind: ChangeKind,
}

impl Change {
    /// The encoding that is stored, hashed into the digest and sent, once.
    pub fn encode(&self) -> Vec<u8> {
        let change = match &self.kind {
            ChangeKind::Add(e) => pb::list_change::Change::Add(e.to_proto()),
            ChangeKind::Withdraw { entry, reason } => {
                pb::list_change::Change::Withdraw(pb::ListTombstone {
                    entry_version: *entry,
                    reason: reason.clone(),
                })
            }
        };
        pb::ListChange {
            version: self.version,
            change: Some(change),
        }
        .encode_to_vec()
    }

    /// Decodes and validates a change as received; errors name the field.
    pub fn decode(bytes: &[u8]) -> Result<Change, Refusal> {
        let raw = pb::ListChange::decode(bytes)
            .map_err(|e| Refusal::invalid("change", format!("malformed protobuf: {e}")))?;
        if raw.version == 0 {
            return Err(Refusal::invalid("change.version", "must be at least 1"));
        }
        let kind = match raw.change {
            Some(pb::list_change::Change::Add(e)) => {
                ChangeKind::Add(ListEntry::from_proto(&e).map_err(|r| r.under("change.add"))?)
            }
            Some(pb::list_change::Change::Withdraw(t)) => {
                if t.entry_version == 0 || t.entry_version >= raw.version {
                    return Err(Refusal::invalid(
                        "change.withdraw.entry_version",
                        format!("{} is not an earlier version", t.entry_version),
                    ));
                }
                if t.reason.len() > MAX_REASON {
                    return Err(Refusal::invalid(
                        "change.withdraw.reason",
                        format!("{} bytes, at most {MAX_REASON}", t.reason.len()),
                    ));
                }
                ChangeKind::Withdraw {
                    entry: t.entry_version,
                    reason: t.reason,
                }
            }
            None => return Err(Refusal::invalid("change", "neither add nor withdraw")),
        };
        Ok(Change {
            version: raw.version,
            kind,
        })
    }
}

/// The running digest after a change: SHA-256 of the prefix, the digest
/// before and the change's exact bytes.
pub fn chain(previous: &[u8; 32], change: &[u8]) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    h.update(CHANGE_PREFIX);
    h.update(previous);
    h.update(change);
    h.finalize().into()
}

/// The digest of a snapshot, record by record.
pub struct SnapshotDigest(sha2::Sha256);

impl Default for SnapshotDigest {
    fn default() -> Self {
        let mut h = sha2::Sha256::new();
        h.update(SNAPSHOT_PREFIX);
        SnapshotDigest(h)
    }
}

impl SnapshotDigest {
    /// Adds the next record.
    pub fn add(&mut self, record: &[u8]) {
        self.0.update((record.len() as u32).to_be_bytes());
        self.0.update(record);
    }

    /// The digest.
    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// Where a list stands: what a node holds, what a head claims.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Tip {
    /// The last change applied (0: none).
    pub version: u64,
    /// Live entries.
    pub count: u64,
    /// Running digest after `version`.
    pub digest: [u8; 32],
}

impl Tip {
    /// Where `change` (whose exact bytes are `bytes`) leads from here: its
    /// version, the live count one up or down, the digest chained. None
    /// when the count would leave its range (a withdrawal from nothing).
    pub fn after(&self, change: &Change, bytes: &[u8]) -> Option<Tip> {
        let count = match change.kind {
            ChangeKind::Add(_) => self.count.checked_add(1),
            ChangeKind::Withdraw { .. } => self.count.checked_sub(1),
        }?;
        Some(Tip {
            version: change.version,
            count,
            digest: chain(&self.digest, bytes),
        })
    }
}

impl std::fmt::Display for Tip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "version {}, {} entries, digest {}",
            self.version,
            self.count,
            hex::encode(&self.digest[..8])
        )
    }
}

/// The hub's statement of the list at a version.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Head {
    /// Version, count and digest.
    pub tip: Tip,
    /// When the hub signed it.
    pub signed_at_ms: i64,
    /// On a snapshot's head: the snapshot's digest.
    pub snapshot: Option<[u8; 32]>,
}

/// Why a batch or head was refused.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The head's signature or key is wrong.
    #[error("list head: {0}")]
    Signature(String),
    /// A change or the head does not decode or is invalid.
    #[error("{0}")]
    Malformed(Refusal),
    /// The head does not follow from what this side holds.
    #[error(
        "the hub's list head ({head}) does not follow from the list held here ({held}): {why}"
    )]
    DoesNotFollow {
        /// What is held.
        held: Tip,
        /// What the head claims.
        head: Tip,
        /// What differs.
        why: String,
    },
}

impl Head {
    /// Signs the head's encoding with the hub's key.
    pub fn sign(&self, key: &SigningKey) -> pb::SignedListHead {
        let head = pb::ListHead {
            version: self.tip.version,
            count: self.tip.count,
            digest: self.tip.digest.to_vec(),
            signed_at_ms: self.signed_at_ms,
            snapshot_digest: self.snapshot.map(|d| d.to_vec()).unwrap_or_default(),
        }
        .encode_to_vec();
        pb::SignedListHead {
            signature: key.sign(Context::ListHead, &head).to_vec(),
            key_id: key.public().id().to_string(),
            head,
        }
    }

    /// Verifies a signed head against the hub's keys and decodes it from
    /// the bytes that were signed.
    pub fn verify<'k>(
        signed: &pb::SignedListHead,
        hub_key: impl Fn(KeyId) -> Option<&'k PublicKey>,
    ) -> Result<Head, SyncError> {
        let key_id = KeyId::parse(&signed.key_id).ok_or_else(|| {
            SyncError::Signature(format!("key_id {:?} is malformed", signed.key_id))
        })?;
        let key = hub_key(key_id)
            .ok_or_else(|| SyncError::Signature(format!("key {key_id} is not a key of the hub")))?;
        key.verify(Context::ListHead, &signed.head, &signed.signature)
            .map_err(|e| SyncError::Signature(e.to_string()))?;
        let raw = pb::ListHead::decode(signed.head.as_slice()).map_err(|e| {
            SyncError::Malformed(Refusal::invalid("head", format!("malformed protobuf: {e}")))
        })?;
        let digest = |b: &[u8], field: &str| -> Result<[u8; 32], SyncError> {
            b.try_into().map_err(|_| {
                SyncError::Malformed(Refusal::invalid(
                    field,
                    format!("{} bytes, not 32", b.len()),
                ))
            })
        };
        Ok(Head {
            tip: Tip {
                version: raw.version,
                count: raw.count,
                digest: digest(&raw.digest, "head.digest")?,
            },
            signed_at_ms: raw.signed_at_ms,
            snapshot: if raw.snapshot_digest.is_empty() {
                None
            } else {
                Some(digest(&raw.snapshot_digest, "head.snapshot_digest")?)
            },
        })
    }
}

/// Verifies a head signed by the hub of `keyring`'s federation and describes
/// it for people (JSON: version, entries, digest).
pub fn describe_head(
    keyring: &meldnet_core::Keyring,
    signed: &pb::SignedListHead,
) -> Result<serde_json::Value, SyncError> {
    let hub = meldnet_core::SpiffeId::hub(keyring.federation());
    let h = Head::verify(signed, |id| keyring.get(&hub, id))?;
    Ok(serde_json::json!({
        "version": h.tip.version,
        "entries": h.tip.count,
        "digest": hex::encode(h.tip.digest),
    }))
}

/// Checks that a batch of changes leads from `held` (with `set` for which
/// entries are live) to `head`, and returns the decoded changes to apply.
/// Nothing is applied here.
pub fn check_batch(
    held: &Tip,
    set: &KnownSet,
    changes: &[Vec<u8>],
    head: &Head,
) -> Result<Vec<Change>, SyncError> {
    let refuse = |why: String| SyncError::DoesNotFollow {
        held: *held,
        head: head.tip,
        why,
    };
    if head.snapshot.is_some() {
        return Err(refuse("a snapshot head where changes were expected".into()));
    }
    let mut tip = *held;
    let mut withdrawn = std::collections::HashSet::new();
    let mut added = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(changes.len());
    for (i, bytes) in changes.iter().enumerate() {
        let c = Change::decode(bytes)
            .map_err(|r| SyncError::Malformed(r.under(&format!("changes[{i}]"))))?;
        let want = held.version + 1 + i as u64;
        if c.version != want {
            return Err(refuse(format!(
                "change {i} has version {}, expected {want}",
                c.version
            )));
        }
        match &c.kind {
            ChangeKind::Add(_) => {
                added.insert(c.version);
            }
            ChangeKind::Withdraw { entry, .. } => {
                let live =
                    (set.is_live(*entry) || added.contains(entry)) && !withdrawn.contains(entry);
                if !live {
                    return Err(refuse(format!(
                        "version {} withdraws entry {entry}, which is not a live entry here",
                        c.version
                    )));
                }
                withdrawn.insert(*entry);
            }
        }
        tip = tip
            .after(&c, bytes)
            .ok_or_else(|| refuse("the count would leave its range".into()))?;
        out.push(c);
    }
    let version = held.version + changes.len() as u64;
    if head.tip.version != version {
        return Err(refuse(format!(
            "{} changes after version {} end at {version}, the head says {}",
            changes.len(),
            held.version,
            head.tip.version
        )));
    }
    if head.tip.digest != tip.digest {
        return Err(refuse(format!(
            "the digest of the changes is {}, the head says {}",
            hex::encode(&tip.digest[..8]),
            hex::encode(&head.tip.digest[..8])
        )));
    }
    if head.tip.count != tip.count {
        return Err(refuse(format!(
            "the changes leave {} entries, the head says {}",
            tip.count, head.tip.count
        )));
    }
    Ok(out)
}

/// Checks a whole snapshot (every record, in order) against its signed
/// head and returns the entries to start from.
pub fn check_snapshot(records: &[Vec<u8>], head: &Head) -> Result<Vec<Change>, SyncError> {
    let refuse = |why: String| SyncError::DoesNotFollow {
        held: Tip::default(),
        head: head.tip,
        why,
    };
    let Some(want) = head.snapshot else {
        return Err(refuse(
            "the snapshot's head carries no snapshot digest".into(),
        ));
    };
    let mut d = SnapshotDigest::default();
    let mut out = Vec::with_capacity(records.len());
    let mut last = 0;
    for (i, bytes) in records.iter().enumerate() {
        let c = Change::decode(bytes)
            .map_err(|r| SyncError::Malformed(r.under(&format!("snapshot[{i}]"))))?;
        if !matches!(c.kind, ChangeKind::Add(_))
            || c.version <= last
            || c.version > head.tip.version
        {
            return Err(refuse(format!(
                "snapshot record {i} (version {}) is not an entry in order up to the head",
                c.version
            )));
        }
        last = c.version;
        d.add(bytes);
        out.push(c);
    }
    if d.finish() != want {
        return Err(refuse(
            "the snapshot's records do not give the head's snapshot digest".into(),
        ));
    }
    if records.len() as u64 != head.tip.count {
        return Err(refuse(format!(
            "the snapshot holds {} entries, the head says {}",
            records.len(),
            head.tip.count
        )));
    }
    Ok(out)
}

/// The list in memory, for matching and for checking that changes follow.
#[derive(Default)]
pub struct KnownSet {
    tip: Tip,
    live: Vec<u64>,
    sha256: HashMap<Sha256, u64>,
    md5: HashMap<Md5, u64>,
    sha1: HashMap<Sha1, u64>,
    pdq_exact: HashMap<PdqHash, u64>,
    pdq: PdqSet,
}

fn bit(live: &[u64], v: u64) -> bool {
    live.get((v / 64) as usize)
        .is_some_and(|w| w & (1 << (v % 64)) != 0)
}

impl KnownSet {
    /// What the set holds: version, count, digest.
    pub fn tip(&self) -> Tip {
        self.tip
    }

    /// Whether the entry added at `version` is listed and not withdrawn.
    pub fn is_live(&self, version: u64) -> bool {
        bit(&self.live, version)
    }

    /// Which entries are live now, and the tip they belong to: what a
    /// snapshot at this tip contains, fixed while the set goes on changing.
    pub fn live_view(&self) -> (Tip, LiveView) {
        (self.tip, LiveView(self.live.clone()))
    }

    fn set_live(&mut self, v: u64, on: bool) {
        let w = (v / 64) as usize;
        if self.live.len() <= w {
            self.live.resize(w + 1, 0);
        }
        if let Some(word) = self.live.get_mut(w) {
            if on {
                *word |= 1 << (v % 64);
            } else {
                *word &= !(1 << (v % 64));
            }
        }
    }

    /// Applies changes already checked (`check_batch`, `check_snapshot`, or
    /// made by the hub itself), then moves the tip to `tip`.
    pub fn apply(&mut self, changes: &[Change], tip: Tip) {
        for c in changes {
            match &c.kind {
                ChangeKind::Add(e) => {
                    let v = c.version;
                    self.set_live(v, true);
                    if let Some(h) = e.sha256 {
                        self.sha256.insert(h, v);
                    }
                    if let Some(h) = e.md5 {
                        self.md5.insert(h, v);
                    }
                    if let Some(h) = e.sha1 {
                        self.sha1.insert(h, v);
                    }
                    if let Some((h, q)) = e.pdq {
                        self.pdq_exact.insert(h, v);
                        self.pdq.add(h, v, q);
                    }
                }
                ChangeKind::Withdraw { entry, .. } => self.set_live(*entry, false),
            }
        }
        let live = std::mem::take(&mut self.live);
        self.pdq.settle(|v| bit(&live, v));
        self.live = live;
        self.tip = tip;
    }

    /// The live entry that already holds one of `e`'s hashes (exact hashes,
    /// or the identical PDQ hash), if any: adding `e` would list it twice.
    pub fn duplicate_of(&self, e: &ListEntry) -> Option<u64> {
        let live = |v: Option<&u64>| v.copied().filter(|v| self.is_live(*v));
        e.sha256
            .and_then(|h| live(self.sha256.get(&h)))
            .or_else(|| e.md5.and_then(|h| live(self.md5.get(&h))))
            .or_else(|| e.sha1.and_then(|h| live(self.sha1.get(&h))))
            .or_else(|| e.pdq.and_then(|(h, _)| live(self.pdq_exact.get(&h))))
    }

    /// Known or not: an exact match on any hash given, else the nearest PDQ
    /// match (distance <= 31, both qualities >= 50).
    pub fn check(&self, q: &Query) -> Option<Known> {
        let live = |v: Option<&u64>| v.copied().filter(|v| self.is_live(*v));
        let exact = |entry: u64, kind| Known {
            entry,
            kind,
            distance: 0,
        };
        if let Some(v) = q.sha256.and_then(|h| live(self.sha256.get(&h))) {
            return Some(exact(v, MatchKind::Sha256));
        }
        if let Some(v) = q.md5.and_then(|h| live(self.md5.get(&h))) {
            return Some(exact(v, MatchKind::Md5));
        }
        if let Some(v) = q.sha1.and_then(|h| live(self.sha1.get(&h))) {
            return Some(exact(v, MatchKind::Sha1));
        }
        let (h, quality) = q.pdq?;
        if quality < MIN_MATCH_QUALITY {
            return None;
        }
        self.pdq
            .best(&h, |v| self.is_live(v))
            .map(|(entry, distance)| Known {
                entry,
                kind: MatchKind::Pdq,
                distance,
            })
    }

    /// Memory the PDQ index holds per indexed entry.
    pub fn pdq_bytes_per_entry(&self) -> f64 {
        self.pdq.index_bytes_per_entry()
    }
}

/// The live entries at one tip (one bit per version).
pub struct LiveView(Vec<u64>);

impl LiveView {
    /// Whether the entry added at `version` was live.
    pub fn contains(&self, version: u64) -> bool {
        bit(&self.0, version)
    }
}

/// The hashes of one file to check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Query {
    /// SHA-256, if known.
    pub sha256: Option<Sha256>,
    /// MD5, if known.
    pub md5: Option<Md5>,
    /// SHA-1, if known.
    pub sha1: Option<Sha1>,
    /// PDQ and its quality, if an image.
    pub pdq: Option<(PdqHash, u8)>,
}

impl Query {
    /// Parses a provider's query; errors name the field.
    pub fn from_proto(q: &pb::HashQuery) -> Result<Query, Refusal> {
        let query = Query {
            sha256: optional(&q.sha256, "sha256", Sha256::parse_hex)?,
            md5: optional(&q.md5, "md5", Md5::parse_hex)?,
            sha1: optional(&q.sha1, "sha1", Sha1::parse_hex)?,
            pdq: meldnet_core::parse_pdq(&q.pdq, q.pdq_quality)?,
        };
        if query == Query::default() {
            return Err(Refusal::invalid(
                "sha256",
                "no hash: give sha256, md5, sha1 or pdq",
            ));
        }
        Ok(query)
    }

    /// The query for a report's item.
    pub fn of_item(item: &meldnet_core::Item) -> Query {
        Query {
            sha256: Some(item.sha256),
            md5: Some(item.md5),
            sha1: None,
            pdq: item.pdq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seed: u8) -> ListEntry {
        ListEntry {
            sha256: Some(Sha256::of(&[seed])),
            md5: Some(Md5([seed; 16])),
            sha1: None,
            pdq: Some((PdqHash([seed; 32]), 90)),
            classification: Classification::Baseline,
            age_group: AgeGroup::Unknown,
            media_type: MediaType::Image,
            source: CountryCode::parse("NL").unwrap(),
            series: None,
        }
    }

    /// A hub in miniature: makes changes, signs heads.
    struct Maker {
        key: std::rc::Rc<SigningKey>,
        tip: Tip,
        bytes: Vec<Vec<u8>>,
    }

    impl Maker {
        fn new() -> Maker {
            Maker {
                key: std::rc::Rc::new(SigningKey::generate()),
                tip: Tip::default(),
                bytes: Vec::new(),
            }
        }
        fn push(&mut self, kind: ChangeKind) -> Vec<u8> {
            let c = Change {
                version: self.tip.version + 1,
                kind,
            };
            let b = c.encode();
            self.tip = self.tip.after(&c, &b).unwrap();
            self.bytes.push(b.clone());
            b
        }
        fn head(&self) -> pb::SignedListHead {
            Head {
                tip: self.tip,
                signed_at_ms: 1,
                snapshot: None,
            }
            .sign(&self.key)
        }
    }

    fn verify(m: &Maker, h: &pb::SignedListHead) -> Result<Head, SyncError> {
        let public = m.key.public();
        Head::verify(h, |id| (id == public.id()).then_some(&public))
    }

    fn follow(set: &mut KnownSet, m: &Maker, batch: &[Vec<u8>]) -> Result<(), SyncError> {
        let head = verify(m, &m.head())?;
        let changes = check_batch(&set.tip(), set, batch, &head)?;
        set.apply(&changes, head.tip);
        Ok(())
    }

    #[test]
    fn a_follower_reaches_the_hubs_head_and_tombstones_withdraw() {
        let mut m = Maker::new();
        let mut set = KnownSet::default();
        let batch: Vec<_> = (1..=3).map(|i| m.push(ChangeKind::Add(entry(i)))).collect();
        follow(&mut set, &m, &batch).unwrap();
        assert_eq!(set.tip(), m.tip);
        let q = Query::of_item(&meldnet_core::Item {
            sha256: Sha256::of(&[2]),
            md5: Md5([0; 16]),
            pdq: None,
            classification: Classification::Baseline,
            age_group: AgeGroup::Unknown,
            media_type: MediaType::Image,
            known: None,
        });
        assert_eq!(set.check(&q).unwrap().entry, 2);
        let w = m.push(ChangeKind::Withdraw {
            entry: 2,
            reason: "wrongly listed".into(),
        });
        follow(&mut set, &m, &[w]).unwrap();
        assert_eq!(set.check(&q), None);
        assert_eq!(set.tip().count, 2);
        // An empty batch at the same head is fine.
        follow(&mut set, &m, &[]).unwrap();
    }

    #[test]
    fn a_tampered_change_a_forged_head_and_a_gap_are_refused() {
        let mut m = Maker::new();
        let set = KnownSet::default();
        let mut batch: Vec<_> = (1..=3).map(|i| m.push(ChangeKind::Add(entry(i)))).collect();
        let head = verify(&m, &m.head()).unwrap();
        // One change replaced by another valid one: the digest no longer matches.
        let mut tampered = batch.clone();
        tampered[1] = Change {
            version: 2,
            kind: ChangeKind::Add(entry(9)),
        }
        .encode();
        let e = check_batch(&set.tip(), &set, &tampered, &head).unwrap_err();
        assert!(e.to_string().contains("digest"), "{e}");
        // A byte flipped: refused, whether it breaks the decoding or the digest.
        let mut flipped = batch.clone();
        let n = flipped[1].len();
        flipped[1][n - 1] ^= 1;
        assert!(check_batch(&set.tip(), &set, &flipped, &head).is_err());
        // A head signed by another key.
        let mut forger = Maker::new();
        for i in 1..=3 {
            forger.push(ChangeKind::Add(entry(i)));
        }
        assert!(matches!(
            verify(&m, &forger.head()),
            Err(SyncError::Signature(_))
        ));
        // A signed head whose bytes were altered after signing.
        let mut h = m.head();
        let last = h.head.len() - 1;
        h.head[last] ^= 1;
        assert!(matches!(verify(&m, &h), Err(SyncError::Signature(_))));
        // A change left out.
        batch.remove(1);
        let e = check_batch(&set.tip(), &set, &batch, &head).unwrap_err();
        assert!(e.to_string().contains("expected 2"), "{e}");
    }

    #[test]
    fn a_head_from_another_history_does_not_follow() {
        let mut a = Maker::new();
        let mut set = KnownSet::default();
        let batch: Vec<_> = (1..=2).map(|i| a.push(ChangeKind::Add(entry(i)))).collect();
        follow(&mut set, &a, &batch).unwrap();
        // The same key, another history of the same length plus one.
        let mut b = Maker {
            key: a.key.clone(),
            tip: Tip::default(),
            bytes: Vec::new(),
        };
        for i in [7, 8, 9] {
            b.push(ChangeKind::Add(entry(i)));
        }
        let e = follow(&mut set, &b, &b.bytes[2..]).unwrap_err();
        assert!(matches!(e, SyncError::DoesNotFollow { .. }), "{e}");
        assert_eq!(set.tip(), a.tip, "nothing applied");
    }

    #[test]
    fn a_snapshot_is_checked_against_its_digest_and_count() {
        let mut m = Maker::new();
        for i in 1..=4 {
            m.push(ChangeKind::Add(entry(i)));
        }
        m.push(ChangeKind::Withdraw {
            entry: 3,
            reason: "x".into(),
        });
        let live: Vec<Vec<u8>> = [0, 1, 3].iter().map(|i| m.bytes[*i].clone()).collect();
        let mut d = SnapshotDigest::default();
        live.iter().for_each(|r| d.add(r));
        let head = Head {
            tip: m.tip,
            signed_at_ms: 1,
            snapshot: Some(d.finish()),
        };
        let changes = check_snapshot(&live, &head).unwrap();
        let mut set = KnownSet::default();
        set.apply(&changes, head.tip);
        assert_eq!(set.tip().count, 3);
        assert!(!set.is_live(3) && set.is_live(4));
        assert!(check_snapshot(&live[..2], &head).is_err());
        let mut with_withdrawn = live.clone();
        with_withdrawn.insert(2, m.bytes[2].clone());
        assert!(check_snapshot(&with_withdrawn, &head).is_err());
    }

    #[test]
    fn pdq_matches_take_the_nearest_live_entry_of_good_quality() {
        let mut set = KnownSet::default();
        let base = PdqHash([0x5a; 32]);
        let flip = |h: PdqHash, bits: usize| {
            let mut h = h;
            for b in 0..bits {
                h.0[b / 8] ^= 1 << (b % 8);
            }
            h
        };
        let mut changes = Vec::new();
        for (v, (bits, quality)) in [(20, 90), (5, 90), (1, 40), (40, 90)].iter().enumerate() {
            let mut e = entry(v as u8);
            e.sha256 = None;
            e.md5 = None;
            e.pdq = Some((flip(base, *bits), *quality));
            changes.push(Change {
                version: v as u64 + 1,
                kind: ChangeKind::Add(e),
            });
        }
        // Enough entries to have the index built, not only the recent list.
        for v in 5..6000u64 {
            let mut e = entry(0);
            e.sha256 = None;
            e.md5 = None;
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&v.to_le_bytes());
            h[8..16].copy_from_slice(&(v * 7919).to_le_bytes());
            e.pdq = Some((PdqHash(h), 90));
            changes.push(Change {
                version: v,
                kind: ChangeKind::Add(e),
            });
        }
        set.apply(&changes, Tip::default());
        let q = |quality| Query {
            pdq: Some((base, quality)),
            ..Query::default()
        };
        // Entry 3 is nearer (1 bit) but of quality 40: entry 2 (5 bits) wins.
        let k = set.check(&q(100)).unwrap();
        assert_eq!((k.entry, k.distance, k.kind), (2, 5, MatchKind::Pdq));
        assert_eq!(
            set.check(&q(49)),
            None,
            "a query of low quality never matches"
        );
        set.apply(
            &[Change {
                version: 7000,
                kind: ChangeKind::Withdraw {
                    entry: 2,
                    reason: String::new(),
                },
            }],
            Tip::default(),
        );
        assert_eq!(set.check(&q(100)).unwrap().entry, 1);
    }

    #[test]
    fn entries_refuse_what_is_not_listable() {
        let mut e = entry(1).to_proto();
        e.classification = pb::Classification::NotIllegal as i32;
        assert!(ListEntry::from_proto(&e)
            .unwrap_err()
            .to_string()
            .contains("classification"));
        let mut e = entry(1).to_proto();
        e.sha256.clear();
        e.md5.clear();
        e.pdq.clear();
        e.pdq_quality = 0;
        assert!(ListEntry::from_proto(&e)
            .unwrap_err()
            .to_string()
            .contains("no hash"));
        let mut e = entry(1).to_proto();
        e.series_id = "Jane Doe".into();
        assert!(ListEntry::from_proto(&e)
            .unwrap_err()
            .to_string()
            .contains("series_id"));
        let e = entry(1);
        assert_eq!(ListEntry::from_proto(&e.to_proto()).unwrap(), e);
    }
}
