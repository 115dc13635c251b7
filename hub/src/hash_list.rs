//! The federated known-hash list at the hub: changes made by operators (and
//! later by confirmed reports) get the next version, are stored with their
//! running digest and an audit record (`Store::commit_list`, flushed before
//! any answer), and then join the in-memory `KnownSet` that ingest matches
//! reports against. Nodes follow the list through `HashList.Sync`: a signed
//! snapshot first when they start empty, then batches of changes, each with
//! the signed head it leads to.
//!
//! Never deletes a change: a wrongly listed entry is withdrawn by a tombstone.

use crate::auth::Auth;
use crate::store::{ListWrite, Store, StoreError, StoredChange};
use meldnet_core::time::Clock;
use meldnet_core::CountryCode;
use meldnet_core::Known;
use meldnet_core::SigningKey;
use meldnet_core::{Refusal, RefusalKind};
use meldnet_core::{Role, SpiffeId};
use meldnet_list::MAX_ADD_BATCH;
use meldnet_list::{
    chain, Change, ChangeKind, Head, KnownSet, ListEntry, Query, SnapshotDigest, Tip,
};
use meldnet_proto::v1 as pb;
use std::sync::{Arc, RwLock};
use tonic::{Request, Response, Status};

pub use meldnet_proto::limits::SYNC_BATCH;

/// Why a list operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The entry to withdraw is not live.
    #[error("entry_version: {0} is not a live entry of the list")]
    NotLive(u64),
    /// A stored change does not decode or does not chain.
    #[error("list: stored change {version} is damaged: {why}")]
    Damaged {
        /// Its version.
        version: u64,
        /// What is wrong.
        why: String,
    },
}

impl From<ListError> for Status {
    fn from(e: ListError) -> Status {
        match e {
            ListError::Store(e) => Status::from(e),
            ListError::NotLive(_) => Status::not_found(e.to_string()),
            ListError::Damaged { .. } => Status::data_loss(e.to_string()),
        }
    }
}

/// What adding a batch did.
#[derive(Debug, Clone)]
pub struct Added {
    /// Per entry: the version that added it, or the live entry it duplicates.
    pub versions: Vec<u64>,
    /// Per entry: whether it was already listed.
    pub duplicate: Vec<bool>,
    /// The list after the batch.
    pub tip: Tip,
}

/// The list: store, matcher, signer.
pub struct HashList {
    store: Store,
    known: RwLock<KnownSet>,
    writing: tokio::sync::Mutex<()>,
    signer: Arc<SigningKey>,
    clock: Arc<Clock>,
}

fn summary(e: &ListEntry) -> String {
    let mut parts = Vec::new();
    if let Some(h) = e.sha256 {
        parts.push(format!("sha256 {h}"));
    }
    if let Some(h) = e.md5 {
        parts.push(format!("md5 {h}"));
    }
    if let Some(h) = e.sha1 {
        parts.push(format!("sha1 {h}"));
    }
    if let Some((h, q)) = e.pdq {
        parts.push(format!("pdq {h} q{q}"));
    }
    format!(
        "{} {} from {}",
        parts.join(" "),
        e.classification.name(),
        e.source
    )
}

impl HashList {
    /// Loads the list from the store, checking the running digest of every
    /// stored change on the way.
    pub fn load(
        store: Store,
        signer: Arc<SigningKey>,
        clock: Arc<Clock>,
    ) -> Result<HashList, ListError> {
        let mut set = KnownSet::default();
        let mut digest = meldnet_list::EMPTY_DIGEST;
        let mut from = 1;
        loop {
            let stored = store.list_changes(from, 65_536)?;
            let Some(last) = stored.last().map(|c| c.tip) else {
                break;
            };
            let mut changes = Vec::with_capacity(stored.len());
            for s in &stored {
                let damaged = |why: String| ListError::Damaged {
                    version: s.tip.version,
                    why,
                };
                let c = Change::decode(&s.bytes).map_err(|r| damaged(r.to_string()))?;
                if c.version != s.tip.version || c.version != from {
                    return Err(damaged(format!("found where version {from} belongs")));
                }
                digest = chain(&digest, &s.bytes);
                if digest != s.tip.digest {
                    return Err(damaged("running digest does not chain".into()));
                }
                changes.push(c);
                from += 1;
            }
            set.apply(&changes, last);
        }
        Ok(HashList {
            store,
            known: RwLock::new(set),
            writing: tokio::sync::Mutex::new(()),
            signer,
            clock,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, KnownSet> {
        self.known.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Version, count and digest now.
    pub fn tip(&self) -> Tip {
        self.read().tip()
    }

    /// The current head, signed.
    pub fn signed_head(&self) -> pb::SignedListHead {
        self.sign(self.tip(), None)
    }

    fn sign(&self, tip: Tip, snapshot: Option<[u8; 32]>) -> pb::SignedListHead {
        Head {
            tip,
            signed_at_ms: self.clock.now_ms(),
            snapshot,
        }
        .sign(&self.signer)
    }

    /// Checks hashes against the list: the version checked and the match.
    pub fn check(&self, q: &Query) -> (u64, Option<Known>) {
        let set = self.read();
        (set.tip().version, set.check(q))
    }

    /// Stores changes made from the tip `from` on and applies them.
    async fn commit(
        &self,
        actor: &SpiffeId,
        changes: Vec<Change>,
        lines: Vec<String>,
        from: Tip,
    ) -> Result<Tip, ListError> {
        let mut tip = from;
        let mut stored = Vec::with_capacity(changes.len());
        for c in &changes {
            let bytes = c.encode();
            tip = tip.after(c, &bytes).ok_or(ListError::Damaged {
                version: c.version,
                why: "the live count would leave its range".into(),
            })?;
            stored.push(StoredChange { tip, bytes });
        }
        if stored.is_empty() {
            return Ok(tip);
        }
        self.store
            .commit_list(ListWrite {
                changes: stored,
                actor: actor.clone(),
                lines,
            })
            .await?;
        self.known
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .apply(&changes, tip);
        Ok(tip)
    }

    /// Adds entries; one already listed (an exact hash or the identical PDQ
    /// of a live entry, or of an earlier entry of the batch) is counted, not
    /// added. Durable before it returns.
    pub async fn add(&self, actor: &SpiffeId, entries: Vec<ListEntry>) -> Result<Added, ListError> {
        let _one_writer = self.writing.lock().await;
        let from = self.tip();
        let mut versions = Vec::with_capacity(entries.len());
        let mut duplicate = Vec::with_capacity(entries.len());
        let mut changes = Vec::new();
        let mut lines = Vec::new();
        // This batch's new entries, to find repeats inside it.
        let mut batch = KnownSet::default();
        {
            let set = self.read();
            for e in entries {
                if let Some(v) = set.duplicate_of(&e).or_else(|| batch.duplicate_of(&e)) {
                    versions.push(v);
                    duplicate.push(true);
                    continue;
                }
                let version = from.version + changes.len() as u64 + 1;
                lines.push(format!("{version} add {}", summary(&e)));
                let c = Change {
                    version,
                    kind: ChangeKind::Add(e),
                };
                batch.apply(std::slice::from_ref(&c), Tip::default());
                changes.push(c);
                versions.push(version);
                duplicate.push(false);
            }
        }
        let tip = self.commit(actor, changes, lines, from).await?;
        Ok(Added {
            versions,
            duplicate,
            tip,
        })
    }

    /// `add`, answered as `ListAdd` and `Contribute` answer: per entry its
    /// version and whether it was listed already, and the head signed at
    /// the tip this batch left.
    pub async fn add_answer(
        &self,
        actor: &SpiffeId,
        entries: Vec<ListEntry>,
    ) -> Result<pb::ListAddResponse, ListError> {
        let added = self.add(actor, entries).await?;
        Ok(pb::ListAddResponse {
            versions: added.versions,
            duplicate: added.duplicate,
            head: Some(self.sign(added.tip, None)),
        })
    }

    /// Withdraws a live entry with a tombstone. Durable before it returns.
    pub async fn withdraw(
        &self,
        actor: &SpiffeId,
        entry: u64,
        reason: String,
    ) -> Result<Tip, ListError> {
        let _one_writer = self.writing.lock().await;
        let from = self.tip();
        if !self.read().is_live(entry) {
            return Err(ListError::NotLive(entry));
        }
        let version = from.version + 1;
        let line = format!("{version} withdraw {entry}: {reason}");
        let c = Change {
            version,
            kind: ChangeKind::Withdraw { entry, reason },
        };
        self.commit(actor, vec![c], vec![line], from).await
    }

    /// Produces what a node that holds `since` needs, batch by batch, into
    /// `send` (which returns false when the receiver is gone). Runs on a
    /// blocking thread: it reads the store.
    fn produce(
        &self,
        since: u64,
        send: impl Fn(Result<pb::SyncBatch, Status>) -> bool,
    ) -> Result<(), ListError> {
        let (tip, live) = self.read().live_view();
        let mut from = since + 1;
        let mut sent_any = false;
        if since == 0 && tip.version > 0 {
            // A new node: the live entries at `tip`, not years of changes.
            let mut digest = SnapshotDigest::default();
            let mut part = Vec::new();
            while from <= tip.version {
                let chunk = self.store.list_changes(from, SYNC_BATCH)?;
                let Some(last) = chunk.last() else { break };
                from = last.tip.version + 1;
                for c in chunk {
                    if c.tip.version > tip.version {
                        break;
                    }
                    if !live.contains(c.tip.version) {
                        continue;
                    }
                    digest.add(&c.bytes);
                    part.push(c.bytes);
                    if part.len() == SYNC_BATCH {
                        let changes = std::mem::take(&mut part);
                        if !send(Ok(pb::SyncBatch {
                            changes,
                            head: None,
                            snapshot: true,
                        })) {
                            return Ok(());
                        }
                    }
                }
            }
            let head = self.sign(tip, Some(digest.finish()));
            if !send(Ok(pb::SyncBatch {
                changes: part,
                head: Some(head),
                snapshot: true,
            })) {
                return Ok(());
            }
            sent_any = true;
            from = tip.version + 1;
        }
        // Up to the tip read at the start: that tip is durable (it moves only
        // after the flush), while changes stored after it may still be
        // unflushed and must never be signed and sent.
        while from <= tip.version {
            let mut chunk = self.store.list_changes(from, SYNC_BATCH)?;
            chunk.retain(|c| c.tip.version <= tip.version);
            let Some(last) = chunk.last().map(|c| c.tip) else {
                break;
            };
            from = last.version + 1;
            let head = self.sign(last, None);
            if !send(Ok(pb::SyncBatch {
                changes: chunk.into_iter().map(|c| c.bytes).collect(),
                head: Some(head),
                snapshot: false,
            })) {
                return Ok(());
            }
            sent_any = true;
        }
        if !sent_any {
            // Up to date: the current head, so the node can check it holds it.
            send(Ok(pb::SyncBatch {
                changes: Vec::new(),
                head: Some(self.sign(tip, None)),
                snapshot: false,
            }));
        }
        Ok(())
    }
}

/// Validates a batch of wire entries, all or nothing, naming the first bad
/// one; with `source`, every entry must come from that country.
pub fn parse_entries(
    raw: &[pb::ListEntry],
    source: Option<CountryCode>,
) -> Result<Vec<ListEntry>, Refusal> {
    if raw.len() > MAX_ADD_BATCH {
        return Err(Refusal::invalid(
            "entries",
            format!("{} entries, at most {MAX_ADD_BATCH} per call", raw.len()),
        ));
    }
    raw.iter()
        .enumerate()
        .map(|(i, e)| {
            let entry = ListEntry::from_proto(e).map_err(|r| r.under(&format!("entries[{i}]")))?;
            match source {
                Some(cc) if entry.source != cc => Err(Refusal::new(
                    RefusalKind::PermissionDenied,
                    format!("entries[{i}].source_country"),
                    format!("{} is not the caller's country ({cc})", entry.source),
                )),
                _ => Ok(entry),
            }
        })
        .collect()
}

/// The `HashList` gRPC service: nodes only.
#[derive(Clone)]
pub struct HashListService {
    list: Arc<HashList>,
    auth: Auth,
}

impl HashListService {
    /// Serves `list` to nodes.
    pub fn new(list: Arc<HashList>, auth: Auth) -> Self {
        HashListService { list, auth }
    }
}

type SyncStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::SyncBatch, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::hash_list_server::HashList for HashListService {
    type SyncStream = SyncStream;

    async fn sync(
        &self,
        request: Request<pb::SyncRequest>,
    ) -> Result<Response<SyncStream>, Status> {
        let caller = self.auth.node(&request)?;
        let since = request.into_inner().since_version;
        let tip = self.list.tip();
        if since > tip.version {
            return Err(Status::failed_precondition(format!(
                "since_version: {since} is ahead of the hub's list (version {}): the list held there is not this hub's",
                tip.version
            )));
        }
        tracing::info!(caller = %caller.id, since, to = tip.version, "list sync");
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let list = self.list.clone();
        let auth = self.auth.clone();
        tokio::task::spawn_blocking(move || {
            // Checked again before every batch: a revoked or expired node's
            // open stream gets nothing more.
            let send = |b| match auth.still_valid(&caller.peer) {
                Ok(()) => tx.blocking_send(b).is_ok(),
                Err(status) => {
                    let _ = tx.blocking_send(Err(status));
                    false
                }
            };
            if let Err(e) = list.produce(since, send) {
                let _ = tx.blocking_send(Err(e.into()));
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn contribute(
        &self,
        request: Request<pb::ListAddRequest>,
    ) -> Result<Response<pb::ListAddResponse>, Status> {
        let caller = self.auth.node(&request)?;
        let Role::Node(cc) = caller.id.role() else {
            return Err(Status::permission_denied("caller: not a node"));
        };
        let entries = parse_entries(&request.get_ref().entries, Some(*cc))?;
        Ok(Response::new(
            self.list.add_answer(&caller.id, entries).await?,
        ))
    }
}
