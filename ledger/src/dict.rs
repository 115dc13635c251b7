//! Compressed bodies: an index that asks for it has its bodies compressed
//! one by one (zstd) with a dictionary trained on its own first bodies, so
//! that the words and shapes every body repeats (a decision's reasons, a
//! recipient's identity, the hex of hashes) are stored once, in the
//! dictionary, and a damaged byte still costs one body, never its
//! neighbours.
//!
//! A dictionary is itself a body of the ledger's own index `DICTS` (key:
//! the index, the dictionary's id), written in a batch before any body
//! compressed with it, so that opening finds it like everything else. A
//! record says in its header which dictionary its payload needs (0: none).

use crate::record::MAX_PAYLOAD;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

/// The ledger's own index of dictionaries.
pub const DICTS: u8 = 0;
/// Bodies of an index gathered before its dictionary is trained.
const SAMPLES: usize = 2_000;
/// At most this many bytes of them.
const SAMPLE_BYTES: usize = 8 << 20;
/// The largest dictionary trained.
const DICT_BYTES: usize = 64 << 10;
/// zstd's level for bodies: the fastest that still finds the repeats.
const LEVEL: i32 = 1;

/// A trained dictionary, ready both ways.
pub struct Dict {
    enc: zstd::dict::EncoderDictionary<'static>,
    dec: zstd::dict::DecoderDictionary<'static>,
}

impl Dict {
    /// A dictionary from its bytes.
    pub fn new(bytes: &[u8]) -> Dict {
        Dict {
            enc: zstd::dict::EncoderDictionary::copy(bytes, LEVEL),
            dec: zstd::dict::DecoderDictionary::copy(bytes),
        }
    }

    /// `raw` compressed, with `cctx` (a context made once and reused: making
    /// one costs more than compressing a body).
    pub fn compress(
        &self,
        cctx: &mut zstd::zstd_safe::CCtx<'static>,
        raw: &[u8],
    ) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(raw.len()));
        cctx.compress_using_cdict(&mut out, raw, self.enc.as_cdict())
            .map_err(|code| zstd::zstd_safe::get_error_name(code).to_string())?;
        Ok(out)
    }

    /// `stored` decompressed; a frame that says (or would be) larger than
    /// any payload is refused before anything is allocated for it.
    pub fn decompress(&self, stored: &[u8]) -> Result<Vec<u8>, String> {
        let size = match zstd::zstd_safe::get_frame_content_size(stored) {
            Ok(Some(n)) if n <= u64::from(MAX_PAYLOAD) => n as usize,
            Ok(Some(n)) => return Err(format!("a compressed body that says {n} bytes")),
            _ => return Err("a compressed body without its size".into()),
        };
        let mut out = Vec::with_capacity(size);
        DCTX.with(|d| {
            d.borrow_mut()
                .decompress_using_ddict(&mut out, stored, self.dec.as_ddict())
                .map_err(|code| zstd::zstd_safe::get_error_name(code).to_string())
        })?;
        if out.len() != size {
            return Err("a compressed body shorter than it says".into());
        }
        Ok(out)
    }
}

thread_local! {
    /// Each reading thread's decompression context, made once.
    static DCTX: std::cell::RefCell<zstd::zstd_safe::DCtx<'static>> =
        std::cell::RefCell::new(zstd::zstd_safe::DCtx::create());
}

#[derive(Default)]
struct Samples {
    bodies: Vec<Vec<u8>>,
    bytes: usize,
    /// Handed to training (no more are gathered).
    done: bool,
}

/// Every index's dictionaries.
#[derive(Default)]
pub struct Dicts {
    /// (index, id): for reading.
    by_id: RwLock<HashMap<(u8, u8), Arc<Dict>>>,
    /// Per index: the one new bodies are compressed with.
    current: RwLock<HashMap<u8, (u8, Arc<Dict>)>>,
    samples: Mutex<HashMap<u8, Samples>>,
    /// Trained and waiting to be written with the next batch: (index, id,
    /// bytes).
    ready: Mutex<Vec<(u8, u8, Vec<u8>)>>,
    /// The writer's compression context, made once.
    cctx: Mutex<Option<zstd::zstd_safe::CCtx<'static>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Dicts {
    /// The dictionary new bodies of `index` are compressed with.
    pub fn current(&self, index: u8) -> Option<(u8, Arc<Dict>)> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&index)
            .cloned()
    }

    /// Dictionary `id` of `index`.
    pub fn get(&self, index: u8, id: u8) -> Option<Arc<Dict>> {
        self.by_id
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(index, id))
            .cloned()
    }

    /// Puts a dictionary in place (read at open, or written in a batch
    /// that committed); the newest of an index compresses from now on.
    pub fn install(&self, index: u8, id: u8, bytes: &[u8]) {
        let d = Arc::new(Dict::new(bytes));
        self.by_id
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((index, id), d.clone());
        let mut cur = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if cur.get(&index).is_none_or(|(c, _)| *c < id) {
            cur.insert(index, (id, d));
        }
        lock(&self.samples).entry(index).or_default().done = true;
    }

    /// Gathers a body of `index` written without a dictionary; the samples
    /// to train on, once there are enough.
    pub fn sample(&self, index: u8, raw: &[u8]) -> Option<Vec<Vec<u8>>> {
        let mut all = lock(&self.samples);
        let s = all.entry(index).or_default();
        if s.done {
            return None;
        }
        s.bodies.push(raw.to_vec());
        s.bytes += raw.len();
        if s.bodies.len() < SAMPLES && s.bytes < SAMPLE_BYTES {
            return None;
        }
        s.done = true;
        Some(std::mem::take(&mut s.bodies))
    }

    /// Trains `index`'s first dictionary on `samples` (the checkpoint
    /// thread does it, off the writer's path); it waits for the next batch.
    pub fn train(&self, index: u8, samples: &[Vec<u8>]) {
        match zstd::dict::from_samples(samples, DICT_BYTES) {
            Ok(bytes) => lock(&self.ready).push((index, 1, bytes)),
            Err(e) => {
                tracing::warn!(index, error = %e, "no dictionary could be trained: bodies stay as they are")
            }
        }
    }

    /// `raw` compressed with dictionary `d` (through the one context the
    /// writer reuses).
    pub fn compress(&self, d: &Dict, raw: &[u8]) -> Result<Vec<u8>, String> {
        let mut guard = lock(&self.cctx);
        let cctx = guard.get_or_insert_with(zstd::zstd_safe::CCtx::create);
        d.compress(cctx, raw)
    }

    /// Dictionaries trained and not yet written.
    pub fn take_ready(&self) -> Vec<(u8, u8, Vec<u8>)> {
        std::mem::take(&mut *lock(&self.ready))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_comes_back_and_a_lying_size_is_refused() {
        let samples: Vec<Vec<u8>> = (0..300)
            .map(|i| format!("decision {i}: routed to spiffe://eu.meldnet.test/agency/DE/bka because the hosting country is a member state; case {i:08x}").into_bytes())
            .collect();
        let bytes = zstd::dict::from_samples(&samples, 16 << 10).unwrap();
        let d = Dict::new(&bytes);
        let raw = b"decision 77: routed to spiffe://eu.meldnet.test/agency/DE/bka because".to_vec();
        let packed = Dicts::default().compress(&d, &raw).unwrap();
        assert!(
            packed.len() < raw.len() / 2,
            "{} of {}",
            packed.len(),
            raw.len()
        );
        assert_eq!(d.decompress(&packed).unwrap(), raw);
        assert!(d.decompress(b"not zstd").is_err());
        let mut cut = packed.clone();
        cut.truncate(packed.len() - 3);
        assert!(d.decompress(&cut).is_err());
    }
}
