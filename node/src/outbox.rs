//! The node's durable store: drafts (built, not signed), the outbox (signed,
//! not yet receipted by the hub), receipts, and refused reports.
//!
//! One sled tree with prefixes, so that moving a report from one state to the
//! next is one atomic batch; every change is flushed before the command
//! reports it done. A report leaves the outbox only when the hub's receipt,
//! whose decision signature has been verified, is stored in its place.

use meldnet_core::ReportId;
use meldnet_proto::v1 as pb;
use prost::Message;
use std::path::Path;

const DRAFT: u8 = b'd';
const OUTBOX: u8 = b'o';
const RECEIPT: u8 = b'r';
const REFUSED: u8 = b'x';

/// Storage failures of the node.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// sled failed.
    #[error("node store: {0}")]
    Sled(#[from] sled::Error),
    /// A stored record does not decode.
    #[error("node store: corrupt record: {0}")]
    Corrupt(String),
}

/// The node's store. Only one process opens it at a time (sled locks it).
pub struct Outbox {
    db: sled::Db,
    tree: sled::Tree,
}

fn key(prefix: u8, id: &ReportId) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = prefix;
    k[1..].copy_from_slice(id.as_bytes());
    k
}

fn id_of(k: &[u8]) -> Result<ReportId, OutboxError> {
    let b: [u8; 16] = k
        .get(1..17)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| OutboxError::Corrupt("key".into()))?;
    Ok(ReportId::from_bytes(b))
}

impl Outbox {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, OutboxError> {
        let db = sled::Config::new().path(dir).open()?;
        let tree = db.open_tree("node")?;
        Ok(Outbox { db, tree })
    }

    fn list<M: Message + Default>(&self, prefix: u8) -> Result<Vec<(ReportId, M)>, OutboxError> {
        self.tree
            .scan_prefix([prefix])
            .map(|kv| {
                let (k, v) = kv?;
                let m = M::decode(v.as_ref()).map_err(|e| OutboxError::Corrupt(e.to_string()))?;
                Ok((id_of(&k)?, m))
            })
            .collect()
    }

    /// Saves a draft report (unsigned), flushed.
    pub fn add_draft(&self, report: &pb::Report, id: &ReportId) -> Result<(), OutboxError> {
        self.tree.insert(key(DRAFT, id), report.encode_to_vec())?;
        self.db.flush()?;
        Ok(())
    }

    /// Drafts waiting to be signed.
    pub fn drafts(&self) -> Result<Vec<(ReportId, pb::Report)>, OutboxError> {
        self.list(DRAFT)
    }

    /// Moves signed drafts into the outbox atomically, flushed.
    pub fn sign_drafts(
        &self,
        signed: Vec<(ReportId, pb::SignedReport)>,
    ) -> Result<(), OutboxError> {
        let mut b = sled::Batch::default();
        for (id, sr) in signed {
            b.remove(&key(DRAFT, &id)[..]);
            b.insert(&key(OUTBOX, &id)[..], sr.encode_to_vec());
        }
        self.tree.apply_batch(b)?;
        self.db.flush()?;
        Ok(())
    }

    /// Signed reports not yet receipted by the hub.
    pub fn outbox(&self) -> Result<Vec<(ReportId, pb::SignedReport)>, OutboxError> {
        self.list(OUTBOX)
    }

    /// Receipts stored so far.
    pub fn receipts(&self) -> Result<Vec<(ReportId, pb::Receipt)>, OutboxError> {
        self.list(RECEIPT)
    }

    /// Reports the hub refused for good, with the refusal.
    pub fn refused(&self) -> Result<Vec<(ReportId, pb::Refusal)>, OutboxError> {
        self.list(REFUSED)
    }

    /// Records the hub's answers: receipts replace outbox entries; final
    /// refusals move them aside (the report stays, with the reason). One
    /// atomic batch, flushed.
    pub fn settle(
        &self,
        receipts: Vec<(ReportId, pb::Receipt)>,
        refused: Vec<(ReportId, pb::Refusal)>,
    ) -> Result<(), OutboxError> {
        let mut b = sled::Batch::default();
        for (id, r) in receipts {
            b.remove(&key(OUTBOX, &id)[..]);
            b.insert(&key(RECEIPT, &id)[..], r.encode_to_vec());
        }
        for (id, r) in refused {
            b.remove(&key(OUTBOX, &id)[..]);
            b.insert(&key(REFUSED, &id)[..], r.encode_to_vec());
        }
        self.tree.apply_batch(b)?;
        self.db.flush()?;
        Ok(())
    }
}
