//! The hash chain of the audit log. Storage is the hub's; the rules of the
//! chain live here so that anyone can verify an exported log with this code.
//!
//! Each record links to the previous one: `hash = SHA-256(prev_hash ||
//! seq as 8 bytes big-endian || event bytes)`, starting from 32 zero bytes.
//! Changing, removing or reordering any record breaks every later link.

use meldnet_proto::v1 as pb;
use prost::Message;
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first record.
pub const GENESIS: [u8; 32] = [0; 32];

/// Hash of one link.
pub fn link_hash(prev: &[u8; 32], seq: u64, event: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(seq.to_be_bytes());
    h.update(event);
    h.finalize().into()
}

/// The end of a chain: where the next record attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainHead {
    /// Sequence number the next record gets.
    pub next_seq: u64,
    /// Hash of the last record (GENESIS when empty).
    pub hash: [u8; 32],
}

impl Default for ChainHead {
    fn default() -> Self {
        ChainHead {
            next_seq: 0,
            hash: GENESIS,
        }
    }
}

impl ChainHead {
    /// Appends `event`, returning the record to store and moving the head.
    pub fn append(&mut self, event: &pb::AuditEvent) -> pb::AuditRecord {
        let bytes = event.encode_to_vec();
        let hash = link_hash(&self.hash, self.next_seq, &bytes);
        let rec = pb::AuditRecord {
            seq: self.next_seq,
            prev_hash: self.hash.to_vec(),
            event: bytes,
            hash: hash.to_vec(),
        };
        self.next_seq += 1;
        self.hash = hash;
        rec
    }
}

/// Where and why a chain does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// A record could not be decoded.
    #[error("audit record {index}: malformed: {message}")]
    Malformed {
        /// Position in the log.
        index: u64,
        /// The decoder's message.
        message: String,
    },
    /// A record's seq, previous hash or own hash is wrong.
    #[error("audit record {index}: {what} does not follow from the chain")]
    Broken {
        /// Position in the log.
        index: u64,
        /// Which part.
        what: &'static str,
    },
}

/// Verifies records in order, from the genesis; returns the head.
pub fn verify_chain<I, B>(records: I) -> Result<ChainHead, AuditError>
where
    I: IntoIterator<Item = B>,
    B: AsRef<[u8]>,
{
    let mut head = ChainHead::default();
    for (index, raw) in records.into_iter().enumerate() {
        let index = index as u64;
        let rec = pb::AuditRecord::decode(raw.as_ref()).map_err(|e| AuditError::Malformed {
            index,
            message: e.to_string(),
        })?;
        if rec.seq != head.next_seq {
            return Err(AuditError::Broken { index, what: "seq" });
        }
        if rec.prev_hash != head.hash {
            return Err(AuditError::Broken {
                index,
                what: "prev_hash",
            });
        }
        let hash = link_hash(&head.hash, rec.seq, &rec.event);
        if rec.hash != hash {
            return Err(AuditError::Broken {
                index,
                what: "hash",
            });
        }
        head = ChainHead {
            next_seq: rec.seq + 1,
            hash,
        };
    }
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: usize) -> Vec<Vec<u8>> {
        let mut head = ChainHead::default();
        (0..n)
            .map(|i| {
                head.append(&pb::AuditEvent {
                    at_ms: i as i64,
                    kind: "submitted".into(),
                    actor: "spiffe://t/node/NL".into(),
                    subject: format!("r{i}"),
                    detail: String::new(),
                })
                .encode_to_vec()
            })
            .collect()
    }

    #[test]
    fn intact_chain_verifies() {
        let head = verify_chain(chain(5)).unwrap();
        assert_eq!(head.next_seq, 5);
    }

    #[test]
    fn tampering_is_found() {
        let mut c = chain(5);
        let mut rec = pb::AuditRecord::decode(c[2].as_slice()).unwrap();
        rec.event[0] ^= 1;
        c[2] = rec.encode_to_vec();
        assert_eq!(
            verify_chain(c).unwrap_err(),
            AuditError::Broken {
                index: 2,
                what: "hash"
            }
        );
        let mut c = chain(5);
        c.remove(1);
        assert!(verify_chain(c).is_err());
    }
}
