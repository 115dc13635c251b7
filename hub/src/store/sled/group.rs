//! One group commit on sled: the group's writes in key order (what the
//! sled batch is made of when it applies), read through before the
//! committed tree, and the group's bodies in one buffer for the blob file.

use super::blobs::{BlobFile, BlobRef};
use super::keys::*;
use super::SledBackend;
use super::{decode, encode_change, encode_head, encode_rules, encode_tip};
use crate::store::seam::{Counters, Group, QueueItem};
use crate::store::types::{SeriesHashKey, StoredChange};
use crate::store::StoreError;
use meldnet_core::CaseId;
use meldnet_core::ReportId;
use meldnet_core::SpiffeId;
use meldnet_core::{NotificationId, SeriesId};
use meldnet_list::Tip;
use meldnet_proto::v1 as pb;
use prost::Message;
use std::collections::{BTreeMap, HashMap};

/// A key and its value.
type KeyValue = (Vec<u8>, Vec<u8>);

pub(super) struct SledGroup<'a> {
    backend: &'a SledBackend,
    /// The group's writes: a value, or `None` for a removal.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Where the group's bodies will be written.
    blob_start: u64,
    /// The group's bodies, as they will lie in the blob file.
    blob_buf: Vec<u8>,
    /// Queue prefixes made in this group.
    prefixes: HashMap<SpiffeId, Vec<u8>>,
}

impl<'a> SledGroup<'a> {
    pub(super) fn new(backend: &'a SledBackend) -> Self {
        SledGroup {
            backend,
            writes: BTreeMap::new(),
            blob_start: backend.blob_end(),
            blob_buf: Vec::new(),
            prefixes: HashMap::new(),
        }
    }

    /// A recipient's queue prefix, made once per group (its identity
    /// spelled out is the costly part of a queue key).
    fn queue_key(&mut self, recipient: &SpiffeId, seq: u64) -> Vec<u8> {
        if let Some(prefix) = self.prefixes.get(recipient) {
            return queue_key(prefix, seq);
        }
        let prefix = queue_prefix(recipient);
        let k = queue_key(&prefix, seq);
        self.prefixes.insert(recipient.clone(), prefix);
        k
    }

    fn insert(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.writes.insert(k, Some(v));
    }

    fn remove(&mut self, k: Vec<u8>) {
        self.writes.insert(k, None);
    }

    /// A value as the group sees it.
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

    /// Every entry under `prefix` as the group sees it, in key order.
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

    /// Stages a body in the group's buffer and points `k` to it.
    fn put_body(&mut self, k: Vec<u8>, msg: &impl Message) {
        let r = BlobFile::stage_message(&mut self.blob_buf, self.blob_start, msg);
        self.insert(k, r.to_bytes().to_vec());
    }

    /// The body `k` points to: in this group's buffer, or in the file.
    fn body<M: Message + Default>(&self, k: &[u8], what: &str) -> Result<Option<M>, StoreError> {
        let Some(pointer) = self.get(k)? else {
            return Ok(None);
        };
        let r =
            BlobRef::from_bytes(&pointer).ok_or_else(|| StoreError::Corrupt("pointer".into()))?;
        if r.offset >= self.blob_start {
            let body = BlobFile::staged_body(&self.blob_buf, self.blob_start, r)
                .ok_or_else(|| StoreError::Corrupt(format!("{what}: staged body")))?;
            return decode(body, what).map(Some);
        }
        decode(&self.backend.body(&pointer)?, what).map(Some)
    }

    fn inline<M: Message + Default>(&self, k: &[u8], what: &str) -> Result<Option<M>, StoreError> {
        self.get(k)?.map(|v| decode(&v, what)).transpose()
    }
}

impl Group for SledGroup<'_> {
    fn report(&self, id: &ReportId) -> Result<Option<pb::StoredReport>, StoreError> {
        self.body(&report_key(id), "report")
    }

    fn put_report(&mut self, id: &ReportId, stored: &pb::StoredReport) {
        self.put_body(report_key(id), stored);
    }

    fn put_escalation(&mut self, id: &CaseId, stored: &pb::StoredReport) {
        self.put_body(escalation_key(id), stored);
    }

    fn put_history(&mut self, report: &ReportId, seq: u64, ev: &pb::HistoryEvent) {
        self.put_body(history_key(report, seq), ev);
    }

    fn push_queue(&mut self, recipient: &SpiffeId, seq: u64, item: &QueueItem) {
        let k = self.queue_key(recipient, seq);
        self.insert(k, queue_value(item));
    }

    fn take_queue(
        &mut self,
        recipient: &SpiffeId,
        seq: u64,
    ) -> Result<Option<QueueItem>, StoreError> {
        let k = self.queue_key(recipient, seq);
        let Some(v) = self.get(&k)? else {
            return Ok(None);
        };
        self.remove(k);
        decode_queue_value(&v).map(Some)
    }

    fn queue_items(&self, recipient: &SpiffeId) -> Result<Vec<(u64, QueueItem)>, StoreError> {
        let prefix = queue_prefix(recipient);
        self.scan(&prefix)?
            .into_iter()
            .map(|(k, v)| Ok((queue_seq(&k, prefix.len())?, decode_queue_value(&v)?)))
            .collect()
    }

    fn is_held_back(&self, seq: u64) -> Result<bool, StoreError> {
        self.contains(&held_back_key(seq))
    }

    fn mark_held_back(&mut self, seq: u64) {
        self.insert(held_back_key(seq), Vec::new());
    }

    fn put_audit(&mut self, seq: u64, rec: &pb::AuditRecord) {
        self.put_body(audit_key(seq), rec);
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
        self.insert(list_key(c.tip.version), encode_change(c));
    }

    fn put_list_tip(&mut self, tip: &Tip) {
        self.insert(META_LIST_TIP.to_vec(), encode_tip(tip));
    }

    fn case(&self, id: &CaseId) -> Result<Option<pb::CaseRecord>, StoreError> {
        self.inline(&case_key(id), "case")
    }

    fn put_case(&mut self, id: &CaseId, rec: &pb::CaseRecord) {
        self.insert(case_key(id), rec.encode_to_vec());
    }

    fn add_deadline(&mut self, at_ms: i64, case: &CaseId, location: u32) {
        self.insert(deadline_key(at_ms, case, location), Vec::new());
    }

    fn remove_deadline(&mut self, at_ms: i64, case: &CaseId, location: u32) {
        self.remove(deadline_key(at_ms, case, location));
    }

    fn is_sighting(&self, case: &CaseId, report: &ReportId) -> Result<bool, StoreError> {
        self.contains(&sighting_key(case, report))
    }

    fn add_sighting(&mut self, case: &CaseId, report: &ReportId) {
        self.insert(sighting_key(case, report), Vec::new());
    }

    fn remove_sighting(&mut self, case: &CaseId, report: &ReportId) {
        self.remove(sighting_key(case, report));
    }

    fn put_case_keys(&mut self, report: &ReportId, rec: &pb::CaseKeysRecord) {
        self.put_body(case_keys_key(report), rec);
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
        self.body(&notification_key(id), "notification")
    }

    fn put_notification(&mut self, id: &NotificationId, n: &pb::SignedNotification) {
        self.put_body(notification_key(id), n);
    }

    fn apply(self: Box<Self>) -> Result<(), StoreError> {
        let SledGroup {
            backend,
            writes,
            blob_start,
            blob_buf,
            ..
        } = *self;
        // The bodies first, synced, before anything may point to them.
        let blob_end = blob_start + blob_buf.len() as u64;
        if !blob_buf.is_empty() {
            backend.blobs.write_durable(blob_start, &blob_buf)?;
        }
        let mut batch = sled::Batch::default();
        for (k, v) in writes {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        batch.insert(META_BLOB_END, &blob_end.to_be_bytes()[..]);
        // sled fails an apply once its log could not be written: it cannot
        // be trusted with a later group, and nothing after would be
        // durable. Stop, as after a failed flush; on restart sled recovers
        // a consistent prefix.
        if let Err(e) = backend.tree.apply_batch(batch) {
            tracing::error!(error = %e, "the store could not apply a group: stopping the hub to keep the store consistent");
            std::process::abort();
        }
        backend
            .blob_end
            .store(blob_end, std::sync::atomic::Ordering::Release);
        Ok(())
    }
}
