//! A run: one index's entries at a checkpoint (or a merge of runs), sorted
//! by key, written once, synced, checked and then only read, through a
//! memory map, so that the operating system's page cache is what holds it
//! in memory: a cache, not a requirement.
//!
//! Layout (integers little-endian):
//!
//! ```text
//! 0..16       "MLDRUN01", index id, key length K, value length V, 5 zero bytes
//! 16..        n entries of K + 1 + V bytes: key, tag (0 set, 1 removed), value
//! fence_at    every 64th entry's key (a search reads one or two pages)
//! bloom_at    a blocked Bloom filter of every key, 512-bit lines (most
//!             lookups of an absent key touch one line and no entry)
//! last 56     n, fence_at, bloom_at, bloom bits (u64 each), hash count
//!             (u32), index, K, V, 0, CRC-32 of everything before the
//!             footer, CRC-32 of the footer before it, "MLDRUNv1"
//! ```

#![allow(
    clippy::indexing_slicing,
    reason = "offsets into the map are checked against its length when the run is opened"
)]

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"MLDRUN01";
const END_MAGIC: &[u8; 8] = b"MLDRUNv1";
const HEADER: usize = 16;
const FOOTER: usize = 56;
/// Entries per fence.
pub const FENCE: u64 = 64;
/// Bits of Bloom filter a key: about one absent key in 3,000 gets by (at
/// 10 bits, one in 100 did, and the searches those cost, over a million
/// ingested reports, had made nearly every page of the hub's largest run
/// resident). Runs say their own size: older runs open as they are.
const BLOOM_BITS_PER_KEY: u64 = 20;
const BLOOM_HASHES: u32 = 7;

/// Why a run cannot be written or used.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// The run's file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a sound run.
    #[error("{path}: damaged run at offset {offset}: {reason}")]
    Damaged {
        /// The run's file.
        path: String,
        /// Where.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
}

/// A stable 64-bit hash of a key (kept on disk in Bloom filters: it must
/// never change between versions, so it is written out here).
pub fn hash64(key: &[u8]) -> u64 {
    let mut h: u64 = 0x9E37_79B9_7F4A_7C15 ^ key.len() as u64;
    for c in key.chunks(8) {
        let mut w = [0u8; 8];
        if let Some(d) = w.get_mut(..c.len()) {
            d.copy_from_slice(c);
        }
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h ^= h >> 31;
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

/// The bits a key sets in a blocked Bloom filter of `bits` bits: all `k`
/// of them in one 512-bit line (one cache line: a lookup of an absent key
/// costs one memory access a run, not `k`), the line chosen by the hash's
/// top half (a multiply, no division), the bits by 9-bit slices of the rest.
fn bloom_positions(key: &[u8], bits: u64, k: u32) -> impl Iterator<Item = u64> {
    let h = hash64(key);
    let lines = (bits / 512).max(1);
    let line = (((h >> 32).wrapping_mul(lines)) >> 32).min(lines - 1);
    let mix = h.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(31) ^ h;
    (0..u64::from(k.min(7))).map(move |i| line * 512 + ((mix >> (9 * i)) & 511))
}

/// Writes a run: entries in strictly increasing key order, then `finish`.
pub struct RunWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: BufWriter<File>,
    crc: crc32fast::Hasher,
    index: u8,
    key_len: usize,
    val_len: usize,
    n: u64,
    fences: Vec<u8>,
    bloom: Vec<u64>,
    bloom_bits: u64,
    last: Option<Vec<u8>>,
    written: u64,
    /// One entry's bytes, reused.
    scratch: Vec<u8>,
    /// Bytes gathered for the file.
    pending: Vec<u8>,
}

/// Bytes gathered before they are checksummed and written.
const PENDING: usize = 256 << 10;

impl RunWriter {
    /// Starts `path` (written as `path.tmp`, renamed when finished) for at
    /// most `max_entries` entries.
    pub fn create(
        path: &Path,
        index: u8,
        key_len: usize,
        val_len: usize,
        max_entries: u64,
    ) -> Result<RunWriter, RunError> {
        let tmp = path.with_extension("tmp");
        let file = File::create(&tmp).map_err(|source| RunError::Io {
            path: tmp.display().to_string(),
            source,
        })?;
        // Whole 512-bit lines.
        let bloom_bits = (max_entries * BLOOM_BITS_PER_KEY).div_ceil(512).max(1) * 512;
        let mut w = RunWriter {
            path: path.to_path_buf(),
            tmp,
            out: BufWriter::with_capacity(1 << 20, file),
            crc: crc32fast::Hasher::new(),
            index,
            key_len,
            val_len,
            n: 0,
            fences: Vec::new(),
            bloom: vec![0u64; bloom_bits.div_ceil(64) as usize],
            bloom_bits,
            last: None,
            written: 0,
            scratch: Vec::new(),
            pending: Vec::with_capacity(PENDING + 256),
        };
        let mut header = [0u8; HEADER];
        header[..8].copy_from_slice(MAGIC);
        header[8] = index;
        header[9] = key_len as u8;
        header[10] = val_len as u8;
        w.put(&header)?;
        Ok(w)
    }

    fn io(&self, source: std::io::Error) -> RunError {
        RunError::Io {
            path: self.tmp.display().to_string(),
            source,
        }
    }

    fn put(&mut self, b: &[u8]) -> Result<(), RunError> {
        self.written += b.len() as u64;
        self.pending.extend_from_slice(b);
        if self.pending.len() >= PENDING {
            self.drain()?;
        }
        Ok(())
    }

    /// Checksums and writes what `put` gathered (in large pieces: one
    /// entry at a time cost more in calls than in bytes).
    fn drain(&mut self) -> Result<(), RunError> {
        self.crc.update(&self.pending);
        let r = self.out.write_all(&self.pending).map_err(|e| RunError::Io {
            path: self.tmp.display().to_string(),
            source: e,
        });
        self.pending.clear();
        r
    }

    /// Adds an entry (keys strictly increasing; `removed` keeps a removal
    /// that older runs must not show through).
    pub fn push(&mut self, key: &[u8], removed: bool, value: &[u8]) -> Result<(), RunError> {
        debug_assert_eq!(key.len(), self.key_len);
        debug_assert!(self.last.as_deref().is_none_or(|l| l < key));
        if self.n.is_multiple_of(FENCE) {
            self.fences.extend_from_slice(key);
        }
        for p in bloom_positions(key, self.bloom_bits, BLOOM_HASHES) {
            if let Some(w) = self.bloom.get_mut((p / 64) as usize) {
                *w |= 1 << (p % 64);
            }
        }
        let mut entry = std::mem::take(&mut self.scratch);
        entry.clear();
        entry.extend_from_slice(key);
        entry.push(u8::from(removed));
        if removed {
            entry.resize(self.key_len + 1 + self.val_len, 0);
        } else {
            entry.extend_from_slice(value);
            // A short value is padded (never the case for the ledger's own,
            // which are fixed-width).
            entry.resize(self.key_len + 1 + self.val_len, 0);
        }
        let written = self.put(&entry);
        self.scratch = entry;
        written?;
        if cfg!(debug_assertions) {
            self.last = Some(key.to_vec());
        }
        self.n += 1;
        Ok(())
    }

    /// Writes the fences, the filter and the footer, syncs the file and
    /// gives it its name (the caller syncs the folder).
    pub fn finish(mut self) -> Result<PathBuf, RunError> {
        let fence_at = self.written;
        let fences = std::mem::take(&mut self.fences);
        self.put(&fences)?;
        let bloom_at = self.written;
        let bloom = std::mem::take(&mut self.bloom);
        let mut bytes = Vec::with_capacity(bloom.len() * 8);
        for w in &bloom {
            bytes.extend_from_slice(&w.to_le_bytes());
        }
        self.put(&bytes)?;
        self.drain()?;
        let body_crc = self.crc.clone().finalize();
        let mut footer = Vec::with_capacity(FOOTER);
        footer.extend_from_slice(&self.n.to_le_bytes());
        footer.extend_from_slice(&fence_at.to_le_bytes());
        footer.extend_from_slice(&bloom_at.to_le_bytes());
        footer.extend_from_slice(&self.bloom_bits.to_le_bytes());
        footer.extend_from_slice(&BLOOM_HASHES.to_le_bytes());
        footer.extend_from_slice(&[self.index, self.key_len as u8, self.val_len as u8, 0]);
        footer.extend_from_slice(&body_crc.to_le_bytes());
        let footer_crc = crc32fast::hash(&footer);
        footer.extend_from_slice(&footer_crc.to_le_bytes());
        footer.extend_from_slice(END_MAGIC);
        debug_assert_eq!(footer.len(), FOOTER);
        self.out.write_all(&footer).map_err(|e| self.io(e))?;
        self.out.flush().map_err(|e| self.io(e))?;
        self.out.get_ref().sync_all().map_err(|e| self.io(e))?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| self.io(e))?;
        Ok(self.path)
    }
}

/// An open run, read through a memory map.
pub struct Run {
    path: PathBuf,
    map: memmap2::Mmap,
    /// Read by `get` (see there).
    file: File,
    /// The index it belongs to.
    pub index: u8,
    key_len: usize,
    val_len: usize,
    n: u64,
    fence_at: usize,
    bloom_at: usize,
    bloom_bits: u64,
    bloom_k: u32,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Run({}, {} entries)", self.path.display(), self.n)
    }
}

/// CRC-32 of the first `len` bytes of `file`, read in pieces.
fn crc_of_file(file: &File, len: u64) -> std::io::Result<u32> {
    use std::os::unix::fs::FileExt;
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        let n = ((len - at) as usize).min(buf.len());
        let piece = &mut buf[..n];
        file.read_exact_at(piece, at)?;
        crc.update(piece);
        at += n as u64;
    }
    Ok(crc.finalize())
}

fn le64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|w| w.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|w| w.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

impl Run {
    /// Opens the run at `path` and checks all of it (its checksums and
    /// that every part lies where the footer says).
    pub fn open(path: &Path) -> Result<Run, RunError> {
        let file = File::open(path).map_err(|source| RunError::Io {
            path: path.display().to_string(),
            source,
        })?;
        // SAFETY: run files are written once by this process family,
        // renamed into place only when complete and never changed after;
        // the mapping is read-only.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| RunError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let damaged = |offset: usize, reason| RunError::Damaged {
            path: path.display().to_string(),
            offset: offset as u64,
            reason,
        };
        let len = map.len();
        if len < HEADER + FOOTER || &map[..8] != MAGIC {
            return Err(damaged(0, "not a run (no header)"));
        }
        let f = len - FOOTER;
        let footer = &map[f..];
        if &footer[48..56] != END_MAGIC {
            return Err(damaged(f, "no footer"));
        }
        if crc32fast::hash(&footer[..44]) != le32(footer, 44) {
            return Err(damaged(f, "the footer's checksum fails"));
        }
        let n = le64(footer, 0);
        let fence_at = le64(footer, 8);
        let bloom_at = le64(footer, 16);
        let bloom_bits = le64(footer, 24);
        let bloom_k = le32(footer, 32);
        let (index, key_len, val_len) = (footer[36], footer[37] as usize, footer[38] as usize);
        let width = (key_len + 1 + val_len) as u64;
        let fences = n.div_ceil(FENCE);
        let sane = map[8] == index
            && map[9] as usize == key_len
            && map[10] as usize == val_len
            && key_len > 0
            && n.checked_mul(width)
                .and_then(|b| b.checked_add(HEADER as u64))
                == Some(fence_at)
            && fences
                .checked_mul(key_len as u64)
                .and_then(|b| b.checked_add(fence_at))
                == Some(bloom_at)
            && bloom_bits
                .div_ceil(64)
                .checked_mul(8)
                .and_then(|b| b.checked_add(bloom_at))
                == Some(f as u64)
            && bloom_k > 0
            && bloom_k <= 7
            && bloom_bits.is_multiple_of(512)
            && bloom_bits > 0;
        if !sane {
            return Err(damaged(f, "the footer's sizes do not fit the file"));
        }
        // Checked through reads, not the map: a start must not make every
        // page of every run resident (the map's pages are read when asked).
        if crc_of_file(&file, f as u64).map_err(|source| RunError::Io {
            path: path.display().to_string(),
            source,
        })? != le32(footer, 40)
        {
            return Err(damaged(HEADER, "the entries' checksum fails"));
        }
        Ok(Run {
            path: path.to_path_buf(),
            map,
            file,
            index,
            key_len,
            val_len,
            n,
            fence_at: fence_at as usize,
            bloom_at: bloom_at as usize,
            bloom_bits,
            bloom_k,
        })
    }

    /// Its file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Entries held.
    pub fn len(&self) -> u64 {
        self.n
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Bytes of its file.
    pub fn bytes(&self) -> u64 {
        self.map.len() as u64
    }

    fn width(&self) -> usize {
        self.key_len + 1 + self.val_len
    }

    /// Entry `i`: key, removed, value.
    pub fn entry(&self, i: u64) -> (&[u8], bool, &[u8]) {
        let at = HEADER + i as usize * self.width();
        self.split(&self.map[at..at + self.width()])
    }

    /// An entry's bytes as key, removed, value.
    fn split<'a>(&self, e: &'a [u8]) -> (&'a [u8], bool, &'a [u8]) {
        let (k, rest) = e.split_at(self.key_len);
        (k, rest[0] == 1, &rest[1..])
    }

    fn fence(&self, i: u64) -> &[u8] {
        let at = self.fence_at + i as usize * self.key_len;
        &self.map[at..at + self.key_len]
    }

    fn may_hold(&self, key: &[u8]) -> bool {
        let bloom = &self.map[self.bloom_at..self.map.len() - FOOTER];
        bloom_positions(key, self.bloom_bits, self.bloom_k).all(|p| {
            let w = le64(bloom, (p / 64) as usize * 8);
            w & (1 << (p % 64)) != 0
        })
    }

    /// The fence block that would hold `key`: the last fence not above it.
    fn block_of(&self, key: &[u8]) -> u64 {
        let fences = self.n.div_ceil(FENCE);
        partition_point(0, fences, |i| self.fence(i) <= key).saturating_sub(1)
    }

    /// The first entry whose key is at least `key`.
    pub fn lower_bound(&self, key: &[u8]) -> u64 {
        let block = self.block_of(key);
        let end = ((block + 1) * FENCE).min(self.n);
        partition_point(block * FENCE, end, |i| self.entry(i).0 < key)
    }

    /// The entry for `key`: whether it says removed, and the value.
    ///
    /// The key's block of entries is read with `pread`, not through the
    /// map: the kernel maps a file's cached pages a whole folio at a time,
    /// so a few thousand lookups through the map (those the filter lets by,
    /// and keys that are there) had made every page of a 100 MB run
    /// resident in the hub. Read so, a lookup costs the hub no resident
    /// memory; should the read fail, the map answers, as before.
    pub fn get(&self, key: &[u8]) -> Option<(bool, Vec<u8>)> {
        use std::os::unix::fs::FileExt;
        if key.len() != self.key_len || self.n == 0 || !self.may_hold(key) {
            return None;
        }
        let first = self.block_of(key) * FENCE;
        let count = (self.n - first).min(FENCE);
        let w = self.width();
        let at = HEADER + first as usize * w;
        let mut read = vec![0u8; count as usize * w];
        let block: &[u8] = match self.file.read_exact_at(&mut read, at as u64) {
            Ok(()) => &read,
            Err(_) => self.map.get(at..at + read.len())?,
        };
        let entry = |i: u64| block.get(i as usize * w..(i as usize + 1) * w);
        let i = partition_point(0, count, |i| {
            entry(i).is_some_and(|e| &e[..self.key_len] < key)
        });
        let (k, removed, v) = self.split(entry(i)?);
        (k == key).then(|| (removed, v.to_vec()))
    }
}

/// The first of `lo..hi` for which `below` is false (`below` is true for a
/// prefix of the range, then false).
fn partition_point(mut lo: u64, mut hi: u64, below: impl Fn(u64) -> bool) -> u64 {
    while lo < hi {
        let mid = (lo + hi) / 2;
        if below(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> [u8; 12] {
        let mut k = [0u8; 12];
        k[..8].copy_from_slice(&(i * 3).to_be_bytes());
        k
    }

    fn write(dir: &Path, n: u64) -> PathBuf {
        let mut w = RunWriter::create(&dir.join("r.run"), 7, 12, 4, n).unwrap();
        for i in 0..n {
            w.push(&key(i), i.is_multiple_of(10), &(i as u32).to_le_bytes())
                .unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn every_key_is_found_and_absent_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        for n in [0u64, 1, 63, 64, 65, 1000, 10_007] {
            let path = write(dir.path(), n);
            let run = Run::open(&path).unwrap();
            assert_eq!(run.len(), n);
            for i in 0..n {
                let (removed, v) = run.get(&key(i)).unwrap();
                assert_eq!(removed, i.is_multiple_of(10));
                if !removed {
                    assert_eq!(v, (i as u32).to_le_bytes());
                }
                let mut between = key(i);
                between[11] = 1;
                assert_eq!(run.get(&between), None);
                assert_eq!(run.lower_bound(&between), i + 1);
                assert_eq!(run.lower_bound(&key(i)), i);
            }
            assert_eq!(run.lower_bound(&[0xff; 12]), n);
        }
    }

    #[test]
    fn a_flipped_byte_anywhere_is_refused_with_where() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), 300);
        let good = std::fs::read(&path).unwrap();
        for at in (0..good.len()).step_by(7).chain([good.len() - 1]) {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            std::fs::write(&path, &bad).unwrap();
            let e = Run::open(&path).unwrap_err();
            assert!(matches!(e, RunError::Damaged { .. }), "byte {at}: {e}");
        }
        std::fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert!(Run::open(&path).is_err());
    }

    #[test]
    fn the_filter_never_misses_a_key_and_rarely_lets_an_absent_one_by() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), 20_000);
        let run = Run::open(&path).unwrap();
        for i in 0..20_000u64 {
            assert!(run.may_hold(&key(i)), "key {i}");
        }
        // Each absent key let by costs a search among the run's entries,
        // and over millions of lookups those searches make every page of
        // the run resident: at most one in 2,000 may pass.
        let mut passed = 0;
        for i in 0..200_000u64 {
            let mut absent = key(i);
            absent[10] = 0xAA;
            absent[11] = (i >> 8) as u8;
            passed += usize::from(run.may_hold(&absent));
        }
        assert!(passed < 100, "{passed} of 200000 absent keys passed");
    }
}
