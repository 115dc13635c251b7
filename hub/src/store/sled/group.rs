//! One group commit on the embedded backend: the group's sled writes in key
//! order (what the sled batch is made of when it applies) and its ledger
//! batch, each read through before what is committed.

use super::keys::*;
use super::SledBackend;
use super::{decode, encode_change, encode_head, encode_rules, encode_tip};
use crate::store::seam::{Counters, Group, QueueItem};
use crate::store::types::{ExactKey, SeriesHashKey, StoredChange};
use crate::store::StoreError;
use meldnet_core::CaseId;
use meldnet_core::ReportId;
use meldnet_core::SpiffeId;
use meldnet_core::{NotificationId, SeriesId};
use meldnet_ledger::{Batch, Ptr};
use meldnet_list::Tip;
use meldnet_proto::v1 as pb;
use prost::Message;
use std::collections::{BTreeMap, HashMap};
use std::sync::PoisonError;

/// A key and its value.
type KeyValue = (Vec<u8>, Vec<u8>);

pub(super) struct SledGroup<'a> {
    backend: &'a SledBackend,
    /// The group's sled writes: a value, or `None` for a removal.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// The group's ledger records.
    batch: Batch,
    /// Recipients numbered in this group, and the next number.
    numbered: HashMap<String, u32>,
    next_recipient: Option<u32>,
}

impl<'a> SledGroup<'a> {
    pub(super) fn new(backend: &'a SledBackend) -> Self {
        SledGroup {
            backend,
            writes: BTreeMap::new(),
            batch: backend.ledger.batch(),
            numbered: HashMap::new(),
            next_recipient: None,
        }
    }

    fn insert(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.writes.insert(k, Some(v));
    }

    fn remove(&mut self, k: Vec<u8>) {
        self.writes.insert(k, None);
    }

    /// A sled value as the group sees it.
    fn get(&self, k: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.writes.get(k) {
            Some(v) => Ok(v.clone()),
            None => Ok(self.backend.tree.get(k)?.map(|v| v.to_vec())),
        }
    }

    fn contains(&self, k: &[u8]) -> Result<bool, StoreError> {
        match self.writes.get(k) {
            Some(v) => Ok(v.is_some()),
            None => Ok(self.backend.tree.contains_key(k)?),
        }
    }

    /// Every sled entry under `prefix` as the group sees it, in key order.
    fn scan(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, StoreError> {
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for kv in self.backend.tree.scan_prefix(prefix) {
            let (k, v) = kv?;
            merged.insert(k.to_vec(), v.to_vec());
        }
        for (k, v) in self
            .writes
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
        {
            match v {
                Some(v) => merged.insert(k.clone(), v.clone()),
                None => merged.remove(k),
            };
        }
        Ok(merged.into_iter().collect())
    }

    fn inline<M: Message + Default>(&self, k: &[u8], what: &str) -> Result<Option<M>, StoreError> {
        self.get(k)?.map(|v| decode(&v, what)).transpose()
    }

    /// A ledger value as the group sees it.
    fn ledger_get(&self, index: u8, key: &[u8]) -> Option<Vec<u8>> {
        self.backend.ledger.get_in(&self.batch, index, key)
    }

    /// The place of a body as the group sees it.
    fn place(&self, index: u8, key: &[u8]) -> Result<Option<Ptr>, StoreError> {
        self.ledger_get(index, key)
            .map(|v| {
                Ptr::from_bytes(&v).ok_or_else(|| StoreError::Corrupt("a body's place".into()))
            })
            .transpose()
    }

    /// A body as the group sees it, decoded.
    fn body<M: Message + Default>(
        &self,
        index: u8,
        key: &[u8],
        what: &str,
    ) -> Result<Option<M>, StoreError> {
        let Some(p) = self.place(index, key)? else {
            return Ok(None);
        };
        let bytes = self.backend.ledger.body_in(&self.batch, index, p)?;
        decode(&bytes, what).map(Some)
    }

    fn put_body(&mut self, index: u8, key: &[u8], msg: &impl Message) {
        self.batch.put_body(index, key, |b| {
            b.reserve(msg.encoded_len());
            // Encoding into a Vec cannot run out of room.
            let _ = msg.encode(b);
        });
    }

    /// A recipient's number in queue keys; made (in this group) when
    /// `make` and it has none yet.
    fn recipient(&mut self, recipient: &SpiffeId, make: bool) -> Result<Option<u32>, StoreError> {
        let name = recipient.to_string();
        if let Some(n) = self
            .numbered
            .get(&name)
            .copied()
            .or_else(|| self.backend.recipient_number(&name))
        {
            return Ok(Some(n));
        }
        if !make {
            return Ok(None);
        }
        let n = match self.next_recipient {
            Some(n) => n,
            None => {
                self.backend
                    .recipients
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .next
            }
        };
        self.next_recipient = Some(n + 1);
        self.insert(recipient_key(&name), n.to_be_bytes().to_vec());
        self.insert(
            META_NEXT_RECIPIENT.to_vec(),
            u64::from(n + 1).to_be_bytes().to_vec(),
        );
        self.numbered.insert(name, n);
        Ok(Some(n))
    }

    /// The recipient numbers known to the group, without making one.
    fn known_recipient(&self, recipient: &SpiffeId) -> Option<u32> {
        let name = recipient.to_string();
        self.numbered
            .get(&name)
            .copied()
            .or_else(|| self.backend.recipient_number(&name))
    }
}

impl Group for SledGroup<'_> {
    fn report(&self, id: &ReportId) -> Result<Option<pb::StoredReport>, StoreError> {
        self.body(REPORTS, id.as_bytes(), "report")
    }

    fn put_report(&mut self, id: &ReportId, stored: &pb::StoredReport) {
        self.put_body(REPORTS, id.as_bytes(), stored);
    }

    fn put_escalation(&mut self, id: &CaseId, stored: &pb::StoredReport) {
        self.put_body(REDECISIONS, id.as_bytes(), stored);
    }

    fn put_history(&mut self, report: &ReportId, seq: u64, ev: &pb::StoredHistory) {
        self.put_body(HISTORY, &history_key(report, seq), ev);
    }

    fn put_audit_mark(&mut self, recipient: &SpiffeId, last: u64, audit_seq: u64) {
        let Ok(Some(n)) = self.recipient(recipient, true) else {
            return;
        };
        let key = cat(&[
            &n.to_be_bytes(),
            &last.to_be_bytes(),
            &audit_seq.to_be_bytes(),
        ]);
        self.batch.put(AUDIT_MARKS, &key, &[]);
    }

    fn push_queue(&mut self, recipient: &SpiffeId, seq: u64, item: &QueueItem) {
        let n = match self.recipient(recipient, true) {
            Ok(Some(n)) => n,
            // Reading the recipients' numbers cannot fail in memory.
            _ => return,
        };
        let (index, id) = body_of(item);
        let place = self.place(index, &id).ok().flatten();
        self.batch
            .put(QUEUE, &queue_key(n, seq), &queue_value(item, place));
    }

    fn take_queue(
        &mut self,
        recipient: &SpiffeId,
        seq: u64,
    ) -> Result<Option<QueueItem>, StoreError> {
        let Some(n) = self.known_recipient(recipient) else {
            return Ok(None);
        };
        let k = queue_key(n, seq);
        let Some(v) = self.ledger_get(QUEUE, &k) else {
            return Ok(None);
        };
        self.batch.delete(QUEUE, &k);
        decode_queue_value(&v).map(|(item, _)| Some(item))
    }

    fn queue_items(&self, recipient: &SpiffeId) -> Result<Vec<(u64, QueueItem)>, StoreError> {
        let Some(n) = self.known_recipient(recipient) else {
            return Ok(Vec::new());
        };
        self.backend
            .ledger
            .scan_in(
                &self.batch,
                QUEUE,
                &queue_key(n, 0),
                &queue_key(n.saturating_add(1), 0),
            )
            .into_iter()
            .map(|(k, v)| Ok((decode_queue_key(&k)?.1, decode_queue_value(&v)?.0)))
            .collect()
    }

    fn is_held_back(&self, seq: u64) -> Result<bool, StoreError> {
        self.contains(&held_back_key(seq))
    }

    fn mark_held_back(&mut self, seq: u64) {
        self.insert(held_back_key(seq), Vec::new());
    }

    fn put_audit(&mut self, seq: u64, rec: &pb::AuditRecord) {
        self.put_body(AUDIT, &seq.to_be_bytes(), rec);
    }

    fn put_counters(&mut self, c: &Counters) {
        self.insert(META_AUDIT_HEAD.to_vec(), encode_head(&c.audit_head));
        self.insert(
            META_QUEUE_SEQ.to_vec(),
            c.next_queue_seq.to_be_bytes().to_vec(),
        );
        self.insert(
            META_HIST_SEQ.to_vec(),
            c.next_history_seq.to_be_bytes().to_vec(),
        );
        self.insert(
            META_KEYS_SEQ.to_vec(),
            c.next_keys_seq.to_be_bytes().to_vec(),
        );
    }

    fn put_stat(&mut self, name: &str, n: u64) {
        self.insert(stat_key(name), n.to_be_bytes().to_vec());
    }

    fn put_rules(&mut self, version: u64, text: &str) {
        self.insert(META_RULES.to_vec(), encode_rules(version, text));
    }

    fn put_registration(&mut self, r: &pb::Registration) {
        self.insert(registration_key(&r.identity), r.encode_to_vec());
    }

    fn put_list_change(&mut self, c: &StoredChange) {
        let bytes = encode_change(c);
        self.batch
            .put_body(LIST, &c.tip.version.to_be_bytes(), |b| {
                b.extend_from_slice(&bytes)
            });
    }

    fn put_list_tip(&mut self, tip: &Tip) {
        self.insert(META_LIST_TIP.to_vec(), encode_tip(tip));
    }

    fn case(&self, id: &CaseId) -> Result<Option<pb::CaseRecord>, StoreError> {
        self.body(CASES, id.as_bytes(), "case")
    }

    fn put_case(&mut self, id: &CaseId, rec: &pb::CaseRecord) {
        self.put_body(CASES, id.as_bytes(), rec);
    }

    fn add_deadline(&mut self, at_ms: i64, case: &CaseId, location: u32) {
        self.batch
            .put(DEADLINES, &deadline_key(at_ms, case, location), &[]);
    }

    fn remove_deadline(&mut self, at_ms: i64, case: &CaseId, location: u32) {
        self.batch
            .delete(DEADLINES, &deadline_key(at_ms, case, location));
    }

    fn is_sighting(&self, case: &CaseId, report: &ReportId) -> Result<bool, StoreError> {
        Ok(self
            .ledger_get(SIGHTINGS, &sighting_key(case, report))
            .is_some())
    }

    fn add_sighting(&mut self, case: &CaseId, report: &ReportId) {
        self.batch.put(SIGHTINGS, &sighting_key(case, report), &[]);
    }

    fn remove_sighting(&mut self, case: &CaseId, report: &ReportId) {
        self.batch.delete(SIGHTINGS, &sighting_key(case, report));
    }

    fn put_case_keys(&mut self, report: &ReportId, rec: &pb::CaseKeysRecord) {
        self.put_body(CASE_KEYS, report.as_bytes(), rec);
        self.batch
            .put(KEYS_BY_SEQ, &rec.seq.to_be_bytes(), report.as_bytes());
    }

    fn put_case_key(&mut self, key: &ExactKey, case: &CaseId) {
        self.batch
            .put(CASE_BY_KEY, &key.to_bytes(), case.as_bytes());
    }

    fn series(&self, id: &SeriesId) -> Result<Option<pb::SeriesRecord>, StoreError> {
        self.inline(&series_key(id), "series")
    }

    fn put_series(&mut self, id: &SeriesId, rec: &pb::SeriesRecord) {
        self.insert(series_key(id), rec.encode_to_vec());
    }

    fn has_series_hash(&self, h: &SeriesHashKey) -> Result<bool, StoreError> {
        self.contains(&series_hash_key(h).0)
    }

    fn put_series_hash(&mut self, h: &SeriesHashKey) {
        let (k, v) = series_hash_key(h);
        self.insert(k, v);
    }

    fn series_hash_counts(&self, id: &SeriesId) -> Result<(u64, u64), StoreError> {
        let (mut sha, mut pdq) = (0, 0);
        for (k, _) in self.scan(&key(SERIES_HASH, &[id.as_bytes()]))? {
            match k.get(17) {
                Some(&HASH_SHA256) => sha += 1,
                _ => pdq += 1,
            }
        }
        Ok((sha, pdq))
    }

    fn preference(&self, id: &SeriesId) -> Result<Option<pb::StoredPreference>, StoreError> {
        self.inline(&preference_key(id), "preference")
    }

    fn put_preference(&mut self, id: &SeriesId, p: &pb::StoredPreference) {
        self.insert(preference_key(id), p.encode_to_vec());
    }

    fn remove_preference(&mut self, id: &SeriesId) {
        self.remove(preference_key(id));
    }

    fn digest_state(&self, id: &SeriesId) -> Result<Option<pb::DigestState>, StoreError> {
        self.inline(&digest_key(id), "digest state")
    }

    fn put_digest_state(&mut self, id: &SeriesId, s: &pb::DigestState) {
        self.insert(digest_key(id), s.encode_to_vec());
    }

    fn remove_digest_state(&mut self, id: &SeriesId) {
        self.remove(digest_key(id));
    }

    fn put_series_match(
        &mut self,
        id: &SeriesId,
        at_ms: i64,
        report: &ReportId,
        m: &pb::SeriesMatch,
    ) {
        self.insert(match_key(id, at_ms, report), m.encode_to_vec());
    }

    fn erase_report(&mut self, id: &ReportId) -> Result<(), StoreError> {
        let end = history_key(id, u64::MAX);
        let history = self
            .backend
            .ledger
            .scan_in(&self.batch, HISTORY, &history_key(id, 0), &end);
        // (History's sequence counts up from 1: u64::MAX is never a key.)
        for (k, _) in history {
            self.batch.delete(HISTORY, &k);
        }
        self.batch.delete(REPORTS, id.as_bytes());
        Ok(())
    }

    fn erase_series_matches(&mut self, id: &SeriesId, before_ms: i64) -> Result<u64, StoreError> {
        let from = key(MATCH, &[id.as_bytes(), &0i64.to_be_bytes()]);
        let to = key(MATCH, &[id.as_bytes(), &before_ms.max(0).to_be_bytes()]);
        let mut gone = Vec::new();
        for kv in self.backend.tree.range(from..to) {
            gone.push(kv?.0.to_vec());
        }
        let n = gone.len() as u64;
        for k in gone {
            self.remove(k);
        }
        Ok(n)
    }

    fn case_series(&self, case: &CaseId, series: &SeriesId) -> Result<Option<bool>, StoreError> {
        Ok(self
            .get(&case_series_key(case, series))?
            .map(|v| v.first() == Some(&1)))
    }

    fn series_of_case(&self, case: &CaseId) -> Result<Vec<(SeriesId, bool)>, StoreError> {
        self.scan(&key(CASE_SERIES, &[case.as_bytes()]))?
            .into_iter()
            .map(|(k, v)| Ok((case_and_series(&k)?.1, v.first() == Some(&1))))
            .collect()
    }

    fn put_case_series(&mut self, case: &CaseId, series: &SeriesId, notified: bool) {
        self.insert(case_series_key(case, series), vec![u8::from(notified)]);
    }

    fn has_draft(&self, case: &CaseId, series: &SeriesId) -> Result<bool, StoreError> {
        self.contains(&draft_key(case, series))
    }

    fn put_draft(&mut self, case: &CaseId, series: &SeriesId, d: &pb::ProceedingsDraft) {
        self.insert(draft_key(case, series), d.encode_to_vec());
    }

    fn remove_draft(&mut self, case: &CaseId, series: &SeriesId) {
        self.remove(draft_key(case, series));
    }

    fn drafts_of(&self, series: &SeriesId) -> Result<Vec<CaseId>, StoreError> {
        let mut out = Vec::new();
        for (k, _) in self.scan(&[DRAFT])? {
            let (case, s) = case_and_series(&k)?;
            if s == *series {
                out.push(case);
            }
        }
        Ok(out)
    }

    fn notification(
        &self,
        id: &NotificationId,
    ) -> Result<Option<pb::SignedNotification>, StoreError> {
        self.body(NOTIFICATIONS, id.as_bytes(), "notification")
    }

    fn put_notification(&mut self, id: &NotificationId, n: &pb::SignedNotification) {
        self.put_body(NOTIFICATIONS, id.as_bytes(), n);
    }

    fn apply(self: Box<Self>) -> Result<(), StoreError> {
        let SledGroup {
            backend,
            writes,
            batch,
            numbered,
            next_recipient,
        } = *self;
        // The records first, synced, before anything may count on them; a
        // failure here fails the group with nothing applied.
        let end = backend.ledger.commit(batch)?;
        let mut sled_batch = sled::Batch::default();
        for (k, v) in writes {
            match v {
                Some(v) => sled_batch.insert(k, v),
                None => sled_batch.remove(k),
            }
        }
        sled_batch.insert(META_LEDGER_END, &end.to_be_bytes()[..]);
        // sled fails an apply once its log could not be written: it cannot
        // be trusted with a later group, and nothing after would be
        // durable. Stop, as after a failed flush; on restart sled recovers
        // a consistent prefix, and the ledger is cut back to it.
        if let Err(e) = backend.tree.apply_batch(sled_batch) {
            tracing::error!(error = %e, "the store could not apply a group: stopping the hub to keep the store consistent");
            std::process::abort();
        }
        backend
            .applied_end
            .store(end, std::sync::atomic::Ordering::Release);
        if !numbered.is_empty() {
            let mut r = backend
                .recipients
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            for (name, n) in numbered {
                r.names.insert(n, name.clone());
                r.numbers.insert(name, n);
            }
            if let Some(next) = next_recipient {
                r.next = r.next.max(next);
            }
        }
        Ok(())
    }
}
