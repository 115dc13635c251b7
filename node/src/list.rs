//! The node's copy of the federated known-hash list, and how it follows the
//! hub's.
//!
//! Stored as `hashlist.log` in the data folder: the same checksummed record
//! format as the delivery log, holding the hub's bytes as received: change
//! records (or, when the node started empty, snapshot records), each batch
//! closed by the signed head it leads to. A batch is written with its head
//! in one append and one `fdatasync`, after the head's signature, the
//! versions, the running digest and the count were checked against what
//! the node holds (`meldnet_list::check_batch`). Records after
//! the last head were never applied: readers ignore them and the writer
//! cuts them off, so a crash mid-sync resumes from the last applied batch.
//! A damaged record (checksums, see `delivery_log`) is refused with its
//! offset and never cut away; `list check` and `list salvage` mend it.
//! Opening the file re-checks every head and digest, so the copy on disk is
//! as trustworthy as the hub's signature.
//!
//! Readers (`report new` pre-classifying items) open it without the lock;
//! only `list sync` and `serve` write.

use meldnet_core::Keyring;
use meldnet_core::ListCheck;
use meldnet_core::SpiffeId;
use meldnet_list::{check_batch, check_snapshot, Head, KnownSet, Query, SyncError, Tip};
use meldnet_proto::v1 as pb;
use meldnet_recipient::{Format, LogError, LogReader, RecordFile};
use prost::Message;
use std::path::{Path, PathBuf};

/// The most a snapshot may hold in memory before its signed head arrives
/// and it can be checked (about 28 million entries, a few GB): a hub that
/// sends more cannot make the node allocate without end. A list larger than
/// that needs the snapshot kept on disk until its head (not done yet).
pub const MAX_SNAPSHOT_BYTES: usize = 4 << 30;

/// The list's file name in the node's data folder.
pub const LIST_FILE: &str = "hashlist.log";
/// The first bytes of the file: the format and its version.
pub const LIST_MAGIC: &[u8; 8] = b"MELDLST2";
const CHANGE: u8 = 1;
const SNAPSHOT: u8 = 2;
const HEAD: u8 = 3;

/// The list file's format: the delivery log's records, tagged by kind.
/// Damage is refused with its offset, never cut away: `list salvage` keeps
/// the list up to it, and the rest is fetched again from the hub.
pub const LIST_FORMAT: Format = Format {
    magic: LIST_MAGIC,
    what: "a known-hash list",
    tag_name: "record",
    describe_tag: kind_name,
    repair_hint: "`meldnet-node list check` lists the damage and `meldnet-node list salvage` \
                  keeps the list up to it (`meldnet-node list sync` then fetches the rest again \
                  from the hub, which signs it)",
};

fn kind_name(tag: &[u8; 16]) -> String {
    match tag[0] {
        CHANGE => "change".into(),
        SNAPSHOT => "snapshot".into(),
        HEAD => "head".into(),
        k => format!("kind {k}"),
    }
}

fn tag(kind: u8) -> [u8; 16] {
    let mut t = [0u8; 16];
    t[0] = kind;
    t
}

/// Why the list could not be read, written or synced.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The file.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The hub's batch or head was refused; nothing of it was applied.
    #[error("refused the hub's list update: {0}")]
    Refused(#[from] SyncError),
    /// The stored copy does not check out.
    #[error("{path}: {why}")]
    Damaged {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// The hub refused or the stream broke; what was applied stays.
    #[error("hub: {0}")]
    Hub(String),
}

/// The node's list.
pub struct NodeList {
    set: KnownSet,
    path: PathBuf,
    writer: Option<RecordFile>,
    hub_keys: Keyring,
}

/// What one sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Synced {
    /// What the node held before.
    pub from: Tip,
    /// What it holds now.
    pub to: Tip,
    /// Whether it started from a snapshot.
    pub snapshot: bool,
    /// Change records applied (snapshot records included).
    pub records: u64,
}

impl NodeList {
    /// Opens the list for following the hub: takes the lock, loads and
    /// checks what is stored, drops a batch that never got its head.
    pub fn open_for_sync(list_dir: &Path, hub_keys: Keyring) -> Result<NodeList, ListError> {
        let path = list_dir.join(LIST_FILE);
        let mut writer = RecordFile::open(&path, &LIST_FORMAT)?;
        let (set, end) = load(&path, &hub_keys)?;
        writer.keep(end, "list records without their head (a sync cut short)")?;
        Ok(NodeList {
            set,
            path,
            writer: Some(writer),
            hub_keys,
        })
    }

    /// Opens the list to match against, without the lock: what the last
    /// complete batch left. None when the node never synced.
    pub fn open_read(list_dir: &Path, hub_keys: Keyring) -> Result<Option<NodeList>, ListError> {
        let path = list_dir.join(LIST_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let (set, _) = load(&path, &hub_keys)?;
        Ok(Some(NodeList {
            set,
            path,
            writer: None,
            hub_keys,
        }))
    }

    /// What the node holds.
    pub fn tip(&self) -> Tip {
        self.set.tip()
    }

    /// The item's check against this copy: known (how) or new.
    pub fn check(&self, q: &Query) -> ListCheck {
        ListCheck {
            list_version: self.set.tip().version,
            found: self.set.check(q),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn verify(&self, head: Option<&pb::SignedListHead>) -> Result<Head, ListError> {
        let head = head.ok_or_else(|| ListError::Hub("a batch without its signed head".into()))?;
        Ok(verify_head(&self.hub_keys, head)?)
    }

    /// Stores records and their head in one durable append, then applies them.
    fn commit(
        &mut self,
        kind: u8,
        records: &[Vec<u8>],
        head: &pb::SignedListHead,
        changes: &[meldnet_list::Change],
        tip: Tip,
    ) -> Result<(), ListError> {
        let writer = self.writer.as_mut().ok_or_else(|| ListError::Damaged {
            path: self.path.display().to_string(),
            why: "opened for reading only".into(),
        })?;
        let head_bytes = head.encode_to_vec();
        let mut out: Vec<([u8; 16], &[u8])> =
            records.iter().map(|r| (tag(kind), r.as_slice())).collect();
        out.push((tag(HEAD), head_bytes.as_slice()));
        writer.append(&out)?;
        self.set.apply(changes, tip);
        Ok(())
    }
}

/// How long the hub may stay silent in the middle of a sync.
const SYNC_IDLE: std::time::Duration = std::time::Duration::from_secs(120);

/// Follows the hub: asks for what comes after the node's version and
/// applies it batch by batch (each checked, stored durably, then applied).
/// Batches are received without holding the list, which is locked only to
/// check and apply one, so hash checks go on meanwhile; a hub silent for
/// [`SYNC_IDLE`] ends the sync (what was applied stays). `progress` is told
/// after each batch.
pub async fn sync(
    list: &tokio::sync::RwLock<NodeList>,
    channel: tonic::transport::Channel,
    progress: impl FnMut(Tip),
) -> Result<Synced, ListError> {
    sync_within(list, channel, progress, MAX_SNAPSHOT_BYTES).await
}

/// `sync`, holding at most `max_snapshot_bytes` of a snapshot before its head.
async fn sync_within(
    list: &tokio::sync::RwLock<NodeList>,
    channel: tonic::transport::Channel,
    mut progress: impl FnMut(Tip),
    max_snapshot_bytes: usize,
) -> Result<Synced, ListError> {
    let from = list.read().await.tip();
    let mut client = pb::hash_list_client::HashListClient::new(channel)
        .max_decoding_message_size(meldnet_net::CLIENT_MAX_DECODE * 4);
    let hub = |s: tonic::Status| ListError::Hub(s.message().to_string());
    let mut stream = tokio::time::timeout(
        SYNC_IDLE,
        client.sync(pb::SyncRequest {
            since_version: from.version,
        }),
    )
    .await
    .map_err(|_| ListError::Hub("no answer".into()))?
    .map_err(hub)?
    .into_inner();
    let mut snapshot: Vec<Vec<u8>> = Vec::new();
    let mut snapshot_bytes = 0usize;
    let mut done = Synced {
        from,
        to: from,
        snapshot: false,
        records: 0,
    };
    loop {
        let batch = match tokio::time::timeout(SYNC_IDLE, stream.message()).await {
            Ok(Ok(Some(b))) => b,
            Ok(Ok(None)) => break,
            Ok(Err(s)) => return Err(hub(s)),
            Err(_) => {
                return Err(ListError::Hub(format!(
                    "silent for {} s mid-sync",
                    SYNC_IDLE.as_secs()
                )))
            }
        };
        let mut l = list.write().await;
        if batch.snapshot {
            if l.tip().version != 0 {
                return Err(SyncError::DoesNotFollow {
                    held: l.tip(),
                    head: Tip::default(),
                    why: "the hub sent a snapshot to a node that already holds a list".into(),
                }
                .into());
            }
            snapshot_bytes = batch
                .changes
                .iter()
                .fold(snapshot_bytes, |n, c| n.saturating_add(c.len() + 32));
            if snapshot_bytes > max_snapshot_bytes {
                return Err(ListError::Hub(format!(
                    "the snapshot holds more than {max_snapshot_bytes} bytes before its signed head; nothing of it was applied"
                )));
            }
            snapshot.extend(batch.changes);
            if let Some(signed) = batch.head {
                let head = l.verify(Some(&signed))?;
                let changes = check_snapshot(&snapshot, &head)?;
                l.commit(SNAPSHOT, &snapshot, &signed, &changes, head.tip)?;
                done.snapshot = true;
                done.records += snapshot.len() as u64;
                snapshot = Vec::new();
                progress(l.tip());
            }
            continue;
        }
        let head = l.verify(batch.head.as_ref())?;
        let changes = check_batch(&l.tip(), &l.set, &batch.changes, &head)?;
        if !changes.is_empty() {
            let signed = batch.head.unwrap_or_default();
            l.commit(CHANGE, &batch.changes, &signed, &changes, head.tip)?;
            done.records += changes.len() as u64;
            progress(l.tip());
        }
    }
    if !snapshot.is_empty() {
        return Err(ListError::Hub(
            "the snapshot ended without its signed head".into(),
        ));
    }
    done.to = list.read().await.tip();
    Ok(done)
}

fn verify_head(hub_keys: &Keyring, signed: &pb::SignedListHead) -> Result<Head, SyncError> {
    let hub = SpiffeId::hub(hub_keys.federation());
    Head::verify(signed, |id| hub_keys.get(&hub, id))
}

/// Reads the stored list, checking every batch as it was checked when it
/// arrived; returns the set and where its last complete batch ends.
fn load(path: &Path, hub_keys: &Keyring) -> Result<(KnownSet, u64), ListError> {
    let damaged = |why: String| ListError::Damaged {
        path: path.display().to_string(),
        why,
    };
    let mut reader = LogReader::open_format(path, &LIST_FORMAT)?;
    let mut set = KnownSet::default();
    let mut pending: Vec<Vec<u8>> = Vec::new();
    let mut pending_kind = None;
    let mut end = reader.offset();
    while let Some(record) = reader.next() {
        let r = match record {
            Ok(r) => r,
            Err(LogError::Damage(d)) => {
                // Refused with every damaged range; nothing is cut.
                let mut damage = vec![*d];
                for rest in reader.by_ref() {
                    match rest {
                        Err(LogError::Damage(d)) => damage.push(*d),
                        Err(e) => return Err(e.into()),
                        Ok(_) => {}
                    }
                }
                return Err(LogError::Refused {
                    path: path.display().to_string(),
                    damage,
                    hint: LIST_FORMAT.repair_hint,
                }
                .into());
            }
            Err(e) => return Err(e.into()),
        };
        match r.tag[0] {
            HEAD => {
                let signed = pb::SignedListHead::decode(r.bytes.as_slice())
                    .map_err(|e| damaged(format!("head at offset {}: {e}", r.offset)))?;
                let head = verify_head(hub_keys, &signed)
                    .map_err(|e| damaged(format!("head at offset {}: {e}", r.offset)))?;
                // The head says what it closes: a snapshot's head carries its
                // digest (a snapshot of an empty list has no records at all).
                let changes = match (head.snapshot.is_some(), pending_kind) {
                    (true, None | Some(SNAPSHOT)) => {
                        if set.tip().version != 0 {
                            return Err(damaged(format!(
                                "a snapshot after changes, at offset {}",
                                r.offset
                            )));
                        }
                        check_snapshot(&pending, &head)
                    }
                    (false, None | Some(CHANGE)) => check_batch(&set.tip(), &set, &pending, &head),
                    _ => {
                        return Err(damaged(format!(
                            "records of the wrong kind before the head at offset {}",
                            r.offset
                        )))
                    }
                }
                .map_err(|e| damaged(format!("batch ending at offset {}: {e}", r.offset)))?;
                set.apply(&changes, head.tip);
                pending.clear();
                pending_kind = None;
                end = reader.offset();
            }
            kind @ (CHANGE | SNAPSHOT) => {
                if pending_kind.is_some_and(|k| k != kind) {
                    return Err(damaged(format!(
                        "mixed records in one batch, at offset {}",
                        r.offset
                    )));
                }
                pending_kind = Some(kind);
                pending.push(r.bytes);
            }
            other => {
                return Err(damaged(format!(
                    "unknown record kind {other} at offset {}",
                    r.offset
                )))
            }
        }
    }
    Ok((set, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use tokio_stream::Stream;

    /// A hub that answers every sync with snapshot parts and never a head.
    struct Endless;

    #[tonic::async_trait]
    impl pb::hash_list_server::HashList for Endless {
        type SyncStream = Pin<Box<dyn Stream<Item = Result<pb::SyncBatch, tonic::Status>> + Send>>;

        async fn sync(
            &self,
            _: tonic::Request<pb::SyncRequest>,
        ) -> Result<tonic::Response<Self::SyncStream>, tonic::Status> {
            let part = pb::SyncBatch {
                changes: vec![vec![0x5a; 100]; 1000],
                head: None,
                snapshot: true,
            };
            let parts = tokio_stream::iter(std::iter::repeat_n(Ok(part), 1000));
            Ok(tonic::Response::new(Box::pin(parts)))
        }

        async fn contribute(
            &self,
            _: tonic::Request<pb::ListAddRequest>,
        ) -> Result<tonic::Response<pb::ListAddResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("test"))
        }
    }

    #[tokio::test]
    async fn a_snapshot_without_end_is_refused_at_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let key = meldnet_core::SigningKey::generate();
        let ring = dir.path().join("keyring.toml");
        std::fs::write(
            &ring,
            format!(
                "federation = \"t.test\"\n[[keys]]\nowner = \"spiffe://t.test/hub\"\npublic_key = \"{}\"\n",
                key.public().to_hex()
            ),
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(pb::hash_list_server::HashListServer::new(Endless))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let list = NodeList::open_for_sync(dir.path(), Keyring::load(&ring).unwrap()).unwrap();
        let list = tokio::sync::RwLock::new(list);
        // A bound of 1 MB: the hub's thousand parts (100 MB) never get held.
        let e = sync_within(&list, channel, |_| {}, 1 << 20)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("before its signed head"), "{e}");
        assert_eq!(list.read().await.tip().version, 0, "nothing applied");
    }
}
