//! The state digest, in the hub's terms: equal digests, equal state, on any
//! backend. Each record a backend says (`seam::Record`) is hashed on its
//! own: the part's name, each key component and the value, each with its
//! length; the digest is SHA-256 over those hashes in sorted order, so it
//! depends neither on a backend's key layout nor on the order it walks in.

use super::seam::{Part, QueueItem, Reads};
use super::types::StateDigest;
use super::StoreError;
use sha2::{Digest, Sha256};

/// A queue entry's value in the digest: its kind, then its ids.
pub fn queue_item(item: &QueueItem) -> Vec<u8> {
    match item {
        QueueItem::Report(r) => [&[1u8][..], r.as_bytes()].concat(),
        QueueItem::Redecision { report, decision } => {
            [&[2u8][..], report.as_bytes(), decision.as_bytes()].concat()
        }
        QueueItem::Notification(n) => [&[3u8][..], n.as_bytes()].concat(),
    }
}

/// Digest and counts of everything `reads` holds.
pub fn state_digest(reads: &dyn Reads) -> Result<StateDigest, StoreError> {
    let mut d = StateDigest::default();
    let mut hashes: Vec<[u8; 32]> = Vec::new();
    reads.visit(&mut |r| {
        let mut h = Sha256::new();
        let name = r.part.name().as_bytes();
        for piece in std::iter::once(name)
            .chain(r.key.iter().copied())
            .chain(std::iter::once(r.value))
        {
            h.update((piece.len() as u64).to_be_bytes());
            h.update(piece);
        }
        // A key of no components differs from one of one empty component.
        h.update((r.key.len() as u64).to_be_bytes());
        hashes.push(h.finalize().into());
        d.entries += 1;
        d.damaged += u64::from(r.damaged);
        match r.part {
            Part::Report => d.reports += 1,
            Part::Queue => d.queued += 1,
            Part::Audit => d.audit_records += 1,
            _ => {}
        }
        Ok(())
    })?;
    hashes.sort_unstable();
    let mut h = Sha256::new();
    for x in &hashes {
        h.update(x);
    }
    d.digest = h.finalize().into();
    Ok(d)
}
