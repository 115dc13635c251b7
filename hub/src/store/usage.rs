//! What the store holds, by kind of record: how many, and how many bytes of
//! key and value each kind takes in the hub's terms (before any backend's
//! own overhead). `meldnet-hub store usage` prints it beside the bytes the
//! data folder takes on disk, so that the cost of a report is known record
//! by record and the backend's amplification is the difference.

use super::seam::{Part, Reads};
use super::StoreError;
use std::collections::BTreeMap;

/// One kind of record: how many, and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindUsage {
    /// Records of this kind.
    pub records: u64,
    /// Bytes of their keys' components.
    pub key_bytes: u64,
    /// Bytes of their values (a body counts as its stored bytes).
    pub value_bytes: u64,
}

/// Every kind the store holds, by the part's name.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// By kind.
    pub kinds: BTreeMap<&'static str, KindUsage>,
}

impl Usage {
    /// Reports stored.
    pub fn reports(&self) -> u64 {
        self.kinds.get(Part::Report.name()).map_or(0, |k| k.records)
    }

    /// Bytes of every record's key and value.
    pub fn logical_bytes(&self) -> u64 {
        self.kinds
            .values()
            .map(|k| k.key_bytes + k.value_bytes)
            .sum()
    }
}

/// Counts what `reads` holds (reads every body: a command for a stopped hub).
pub fn usage(reads: &dyn Reads) -> Result<Usage, StoreError> {
    let mut u = Usage::default();
    reads.visit(&mut |r| {
        let k = u.kinds.entry(r.part.name()).or_default();
        k.records += 1;
        k.key_bytes += r.key.iter().map(|c| c.len() as u64).sum::<u64>();
        k.value_bytes += r.value.len() as u64;
        Ok(())
    })?;
    Ok(u)
}
