//! `PdqIndex` as bytes, and searched in place from them (`PdqIndexView`).
//!
//! Why: a known-hash list of tens of millions takes seconds to build and
//! about 100 bytes per entry; written once, its index can be mapped from a
//! file by the caller and searched at once, shared by processes through the
//! page cache, with nothing copied. This crate does no I/O: the caller
//! reads or maps the file and hands over the bytes.
//!
//! Format 1, every number little-endian, offsets in bytes (`n` entries,
//! `B` = 65,537 bucket offsets a chunk):
//!
//! | at | size | what |
//! |---|---|---|
//! | 0 | 8 | magic `b"meldPDQi"` |
//! | 8 | 4 | format version, `u32` (1) |
//! | 12 | 4 | zero (reserved) |
//! | 16 | 8 | entries `n`, `u64` (below 2^32) |
//! | 24 | 8 | zero (reserved) |
//! | 32 | 32 n | per entry its hash as four `u64`, the first holding bits 0..64 |
//! | 32 + 32 n | 16 × B × 4 | per chunk, per bucket, a `u32`: where the bucket starts among that chunk's slots; a last one holds `n` |
//! | 4,194,400 + 32 n | 16 × n × 2 | per chunk, slot by slot (buckets in order), a `u16`: the slot's entry's partner chunk |
//! | 4,194,400 + 64 n | 8 × n × 4 | per even chunk (0, 2, ..., 14), slot by slot, a `u32`: the slot's entry number |
//! | 4,194,400 + 96 n | 8 | checksum, `u64`, of every byte before it |
//!
//! Nothing is read as a `u32` or `u64` in place: each number is decoded
//! from its bytes, so the slice may start at any address (a mapped file is
//! page-aligned anyway; a slice of a `Vec<u8>` need not be) and the
//! processor's byte order does not matter.
//!
//! The checksum (`Checksum`) finds damage, not forgery: it is no signature.
//! A view refuses bytes whose length, header, checksum, bucket offsets or
//! entry numbers are wrong, naming what, and never panics or allocates at
//! all. Bytes forged to pass every check still cannot make a search return
//! an entry farther than asked (each answer is checked on all 256 bits of
//! the stored hash), only miss some.

use super::scan::Scan;
use super::{
    brute_force_columns, bucket_offsets, fill_chunk, prefetch, prefetch_lines, search_columns,
    words, Columns, Match, PdqIndex, BUCKETS, CHUNKS,
};
use crate::hash::PdqHash;
use std::io::Write;

const MAGIC: [u8; 8] = *b"meldPDQi";
/// The format version this build writes and reads.
const FORMAT_VERSION: u32 = 1;
const HEADER: usize = 32;
const TRAILER: usize = 8;
const OFFSETS: usize = CHUNKS * (BUCKETS + 1);

/// Why bytes are not a PDQ index this build can search.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexBytesError {
    /// Fewer bytes than a header and a checksum.
    #[error("{got} bytes: too short for a PDQ index (at least {need})")]
    TooShort {
        /// Bytes given.
        got: usize,
        /// The fewest an index has.
        need: usize,
    },
    /// The first eight bytes are not the magic.
    #[error("not a PDQ index: starts with {found:02x?}")]
    Magic {
        /// The first eight bytes.
        found: [u8; 8],
    },
    /// Written by another format version.
    #[error("PDQ index format version {found}; this build reads {FORMAT_VERSION}")]
    Version {
        /// The version in the header.
        found: u32,
    },
    /// A reserved header field is not zero.
    #[error("PDQ index header: reserved field at byte {at} is {found:#x}, not zero")]
    Reserved {
        /// Where the field starts.
        at: usize,
        /// What it holds.
        found: u64,
    },
    /// More entries than 32-bit entry numbers can name.
    #[error("PDQ index of {entries} entries: more than 2^32 - 1")]
    TooManyEntries {
        /// Entries in the header.
        entries: u64,
    },
    /// The length does not match the number of entries in the header.
    #[error("PDQ index of {entries} entries: {got} bytes, it takes {need}")]
    Length {
        /// Entries in the header.
        entries: u64,
        /// Bytes given.
        got: usize,
        /// Bytes that many entries take.
        need: u128,
    },
    /// The checksum does not match the bytes: they are damaged.
    #[error("PDQ index damaged: checksum {stored:016x} stored, the bytes give {computed:016x}")]
    Checksum {
        /// The checksum in the trailer.
        stored: u64,
        /// The checksum of the bytes before it.
        computed: u64,
    },
    /// A chunk's bucket offsets do not run from 0 up to `n`.
    #[error("PDQ index: chunk {chunk}'s offset for bucket {bucket} is {offset}, out of order")]
    Offsets {
        /// The chunk (0..16).
        chunk: usize,
        /// The bucket (0..=65,536).
        bucket: usize,
        /// The offset found.
        offset: u32,
    },
    /// An entry number names an entry past the end.
    #[error("PDQ index: chunk {chunk}, slot {position} names entry {entry} of {entries}")]
    Entry {
        /// The chunk (0, 2, ..., 14).
        chunk: usize,
        /// The slot in the chunk.
        position: usize,
        /// The entry number it names.
        entry: u64,
        /// Entries in the index.
        entries: u64,
    },
}

/// A 64-bit checksum of a byte stream, of this crate's own making: four
/// lanes each take every fourth 8-byte word (`lane = rotl((lane ^ word) *
/// odd, 31)`: a bijection of the word for any lane, and of the lane for any
/// word, so one changed word always changes the result), then the lanes
/// and the length are folded together and mixed. Fast (independent lanes,
/// one multiply per word), and sure to see a change in one word; not proof
/// against someone who wants a collision.
#[derive(Debug, Clone)]
pub(crate) struct Checksum {
    lanes: [u64; 4],
    pending: [u8; 32],
    fill: usize,
    total: u64,
}

const MUL: u64 = 0x9e37_79b9_7f4a_7c15;
const FOLD: u64 = 0xc2b2_ae3d_27d4_eb4f;

impl Checksum {
    pub(crate) fn new() -> Checksum {
        Checksum {
            lanes: [
                0x243f_6a88_85a3_08d3,
                0x1319_8a2e_0370_7344,
                0xa409_3822_299f_31d0,
                0x082e_fa98_ec4e_6c89,
            ],
            pending: [0; 32],
            fill: 0,
            total: 0,
        }
    }

    #[inline]
    fn block(lanes: &mut [u64; 4], b: &[u8]) {
        for (lane, w) in lanes.iter_mut().zip(b.chunks_exact(8)) {
            let mut x = [0u8; 8];
            x.copy_from_slice(w);
            *lane = (*lane ^ u64::from_le_bytes(x))
                .wrapping_mul(MUL)
                .rotate_left(31);
        }
    }

    pub(crate) fn update(&mut self, mut bytes: &[u8]) {
        self.total = self.total.wrapping_add(bytes.len() as u64);
        if self.fill > 0 {
            let take = (32 - self.fill).min(bytes.len());
            let (head, rest) = bytes.split_at(take);
            if let Some(dst) = self.pending.get_mut(self.fill..self.fill + take) {
                dst.copy_from_slice(head);
            }
            self.fill += take;
            bytes = rest;
            if self.fill < 32 {
                return;
            }
            Self::block(&mut self.lanes, &self.pending);
            self.fill = 0;
        }
        let blocks = bytes.chunks_exact(32);
        let tail = blocks.remainder();
        for b in blocks {
            Self::block(&mut self.lanes, b);
        }
        if let Some(dst) = self.pending.get_mut(..tail.len()) {
            dst.copy_from_slice(tail);
        }
        self.fill = tail.len();
    }

    pub(crate) fn finish(mut self) -> u64 {
        if self.fill > 0 {
            if let Some(rest) = self.pending.get_mut(self.fill..) {
                rest.fill(0);
            }
            Self::block(&mut self.lanes, &self.pending);
        }
        let mut h = self.total;
        for lane in self.lanes {
            h = (h ^ lane).wrapping_mul(FOLD).rotate_left(27);
        }
        h ^= h >> 33;
        h = h.wrapping_mul(MUL);
        h ^= h >> 29;
        h
    }
}

/// Bytes an index of `n` entries takes.
fn size_for(n: u64) -> u128 {
    HEADER as u128 + 4 * OFFSETS as u128 + 96 * u128::from(n) + TRAILER as u128
}

impl PdqIndex {
    /// The index as bytes (the module doc gives the format), for a caller
    /// to store and later map: `PdqIndexView::new` searches them in place.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(usize::try_from(size_for(self.len() as u64)).unwrap_or(0));
        // Writing to a `Vec` cannot fail.
        let _ = self.write_bytes(&mut out);
        out
    }

    /// `to_bytes` into any writer, a buffer at a time: an index of tens of
    /// millions need not be held twice. The writer's errors are passed on.
    pub fn write_bytes(&self, out: &mut impl Write) -> std::io::Result<()> {
        let mut w = Out::new(self.len(), out)?;
        w.put(self.words.iter(), words_le)?;
        w.put(self.offsets.iter(), |v| v.to_le_bytes())?;
        w.put(self.partners.iter(), |v| v.to_le_bytes())?;
        w.put(self.numbers.iter(), |v| v.to_le_bytes())?;
        w.finish()
    }

    /// The bytes `PdqIndex::build(hashes).write_bytes(out)` writes, made
    /// one column at a time, for hashes that need not be in memory at all:
    /// `each` gives the same `n` hashes, in the same order, every time it is
    /// called (the index is laid out in 18 passes over them), e.g. read
    /// from the memory-mapped runs being merged. Besides them it holds the
    /// offsets and one column (about 4 bytes an entry), not the whole index
    /// (96 bytes an entry). Why: the hub writes its cases' runs of millions
    /// of hashes while ingest goes on, and the built index was the largest
    /// thing in its memory.
    pub fn write_each<I: Iterator<Item = PdqHash>>(
        n: usize,
        each: impl Fn() -> I,
        out: &mut impl Write,
    ) -> std::io::Result<()> {
        if each().count() != n {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the hashes to index changed between passes",
            ));
        }
        let each = || each().take(n).map(|h| words(&h));
        let mut w = Out::new(n, out)?;
        w.put(each(), |x| words_le(&x))?;
        let offsets = bucket_offsets(each);
        w.put(offsets.iter(), |v| v.to_le_bytes())?;
        let mut values = vec![0u16; n];
        for c in 0..CHUNKS {
            fill_chunk(each(), c, &offsets, Some(&mut values), None);
            w.put(values.iter(), |v| v.to_le_bytes())?;
        }
        drop(values);
        let mut ids = vec![0u32; n];
        for c in (0..CHUNKS).step_by(2) {
            fill_chunk(each(), c, &offsets, None, Some(&mut ids));
            w.put(ids.iter(), |v| v.to_le_bytes())?;
        }
        w.finish()
    }
}

/// An index being written: the writer, the checksum so far, and a buffer.
struct Out<'a, W: Write> {
    out: &'a mut W,
    sum: Checksum,
    buf: Vec<u8>,
}

impl<'a, W: Write> Out<'a, W> {
    /// Writes the header of an index of `n` entries.
    fn new(n: usize, out: &'a mut W) -> std::io::Result<Self> {
        let mut header = Vec::with_capacity(HEADER);
        header.extend_from_slice(&MAGIC);
        header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&(n as u64).to_le_bytes());
        header.extend_from_slice(&0u64.to_le_bytes());
        let mut sum = Checksum::new();
        sum.update(&header);
        out.write_all(&header)?;
        Ok(Out {
            out,
            sum,
            buf: Vec::new(),
        })
    }

    /// Writes `items` encoded by `enc`, 64 KiB or so at a time, into the
    /// checksum and the writer.
    fn put<T, const N: usize>(
        &mut self,
        items: impl Iterator<Item = T>,
        enc: impl Fn(T) -> [u8; N],
    ) -> std::io::Result<()> {
        let group = (1 << 16) / N * N;
        self.buf.clear();
        for v in items {
            self.buf.extend_from_slice(&enc(v));
            if self.buf.len() >= group {
                self.flush()?;
            }
        }
        self.flush()
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.sum.update(&self.buf);
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Writes the trailer: the checksum of everything before it.
    fn finish(self) -> std::io::Result<()> {
        self.out.write_all(&self.sum.finish().to_le_bytes())
    }
}

fn words_le(w: &[u64; 4]) -> [u8; 32] {
    let mut b = [0u8; 32];
    for (dst, x) in b.chunks_exact_mut(8).zip(w) {
        dst.copy_from_slice(&x.to_le_bytes());
    }
    b
}

/// A `PdqIndex` searched in place in its bytes (`PdqIndex::to_bytes`),
/// typically a file the caller mapped: nothing is copied or built, and the
/// answers are the owned index's.
#[derive(Debug, Clone, Copy)]
pub struct PdqIndexView<'a> {
    n: usize,
    words: &'a [u8],
    offsets: &'a [u8],
    partners: &'a [u8],
    numbers: &'a [u8],
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(&[a, b]) => u16::from_le_bytes([a, b]),
        _ => 0,
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]),
        _ => 0,
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        x.copy_from_slice(s);
    }
    u64::from_le_bytes(x)
}

impl<'a> PdqIndexView<'a> {
    /// Checks `bytes` (length, header, checksum, every bucket offset and
    /// entry number; linear in their length, nothing allocated) and gives
    /// the view, or says what is wrong.
    pub fn new(bytes: &'a [u8]) -> Result<PdqIndexView<'a>, IndexBytesError> {
        let need = HEADER + 4 * OFFSETS + TRAILER;
        if bytes.len() < need {
            return Err(IndexBytesError::TooShort {
                got: bytes.len(),
                need,
            });
        }
        let mut magic = [0u8; 8];
        magic.copy_from_slice(bytes.get(..8).unwrap_or(&[0; 8]));
        if magic != MAGIC {
            return Err(IndexBytesError::Magic { found: magic });
        }
        let version = u32_at(bytes, 8);
        if version != FORMAT_VERSION {
            return Err(IndexBytesError::Version { found: version });
        }
        for at in [12, 24] {
            let found = if at == 12 {
                u64::from(u32_at(bytes, at))
            } else {
                u64_at(bytes, at)
            };
            if found != 0 {
                return Err(IndexBytesError::Reserved { at, found });
            }
        }
        let entries = u64_at(bytes, 16);
        if entries > u64::from(u32::MAX) {
            return Err(IndexBytesError::TooManyEntries { entries });
        }
        let size = size_for(entries);
        if size != bytes.len() as u128 {
            return Err(IndexBytesError::Length {
                entries,
                got: bytes.len(),
                need: size,
            });
        }
        // Fits: the length is a `usize` and larger.
        let n = entries as usize;
        // The length matches `size_for(entries)`: none of these splits can
        // fail; if one did, it would be reported as a wrong length.
        let wrong_length = IndexBytesError::Length {
            entries,
            got: bytes.len(),
            need: size,
        };
        let Some((body, trailer)) = bytes.split_at_checked(bytes.len() - TRAILER) else {
            return Err(wrong_length);
        };
        let stored = u64_at(trailer, 0);
        let mut sum = Checksum::new();
        sum.update(body);
        let computed = sum.finish();
        if stored != computed {
            return Err(IndexBytesError::Checksum { stored, computed });
        }
        let Some((words, rest)) = body.split_at_checked(HEADER + 32 * n) else {
            return Err(wrong_length);
        };
        let words = words.get(HEADER..).unwrap_or_default();
        let Some((offsets, rest)) = rest.split_at_checked(4 * OFFSETS) else {
            return Err(wrong_length);
        };
        let Some((partners, numbers)) = rest.split_at_checked(2 * CHUNKS * n) else {
            return Err(wrong_length);
        };
        for c in 0..CHUNKS {
            let mut last = 0u32;
            for b in 0..=BUCKETS {
                let offset = u32_at(offsets, 4 * (c * (BUCKETS + 1) + b));
                let wrong = offset < last
                    || (b == 0 && offset != 0)
                    || (b == BUCKETS && offset as usize != n)
                    || offset as usize > n;
                if wrong {
                    return Err(IndexBytesError::Offsets {
                        chunk: c,
                        bucket: b,
                        offset,
                    });
                }
                last = offset;
            }
        }
        for (i, v) in numbers.chunks_exact(4).enumerate() {
            let entry = u64::from(u32_at(v, 0));
            if entry >= entries {
                return Err(IndexBytesError::Entry {
                    chunk: 2 * (i / n.max(1)),
                    position: i % n.max(1),
                    entry,
                    entries,
                });
            }
        }
        Ok(PdqIndexView {
            n,
            words,
            offsets,
            partners,
            numbers,
        })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether the index holds nothing.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// `PdqIndex::search`, in place.
    pub fn search(&self, query: &PdqHash, max_distance: u32) -> Vec<Match> {
        search_columns(self, query, max_distance, Scan::detect())
    }

    /// Entry `entry`'s hash, read in place.
    pub fn hash(&self, entry: u32) -> Option<PdqHash> {
        self.word(entry).map(|w| super::hash_of(&w))
    }

    /// `PdqIndex::brute_force`, in place.
    pub fn brute_force(&self, query: &PdqHash, max_distance: u32) -> Vec<Match> {
        brute_force_columns(self, query, max_distance)
    }

    /// The index in memory, copied from the bytes (what `PdqIndex::build`
    /// would give on the same hashes, without its sorting).
    pub fn to_index(&self) -> PdqIndex {
        let words = (0..self.n as u32)
            .map(|i| self.word(i).unwrap_or_default())
            .collect();
        let offsets = self.offsets.chunks_exact(4).map(|v| u32_at(v, 0)).collect();
        let partners = self
            .partners
            .chunks_exact(2)
            .map(|v| u16_at(v, 0))
            .collect();
        let numbers = self.numbers.chunks_exact(4).map(|v| u32_at(v, 0)).collect();
        PdqIndex {
            words,
            offsets,
            partners,
            numbers,
        }
    }
}

impl Columns for PdqIndexView<'_> {
    fn count(&self) -> usize {
        self.n
    }

    #[inline]
    fn bucket(&self, c: usize, b: usize) -> (usize, usize) {
        let at = 4 * (c * (BUCKETS + 1) + b);
        (
            u32_at(self.offsets, at) as usize,
            u32_at(self.offsets, at + 4) as usize,
        )
    }

    #[inline]
    fn prefetch_bucket(&self, c: usize, b: usize) {
        prefetch(self.offsets.get(4 * (c * (BUCKETS + 1) + b)));
    }

    #[inline]
    fn prefetch_partners(&self, c: usize, start: usize, end: usize) {
        let base = c * self.n;
        prefetch_lines(self.partners.get(2 * (base + start)..2 * (base + end)), 1);
    }

    #[inline]
    fn scan(
        &self,
        how: Scan,
        c: usize,
        start: usize,
        end: usize,
        query: u16,
        room: u32,
        hit: &mut impl FnMut(usize),
    ) {
        let base = c * self.n;
        if let Some(run) = self.partners.get(2 * base..2 * (base + end)) {
            how.run_le(run, start, end.saturating_sub(start), query, room, hit);
        }
    }

    #[inline]
    fn partner_at(&self, c: usize, at: usize) -> u16 {
        u16_at(self.partners, 2 * (c * self.n + at))
    }

    #[inline]
    fn number(&self, c: usize, at: usize) -> Option<u32> {
        let at = 4 * (c / 2 * self.n + at);
        self.numbers.get(at..at + 4).map(|v| u32_at(v, 0))
    }

    #[inline]
    fn prefetch_number(&self, c: usize, at: usize) {
        prefetch(self.numbers.get(4 * (c / 2 * self.n + at)));
    }

    #[inline]
    fn word(&self, id: u32) -> Option<[u64; 4]> {
        let at = 32 * id as usize;
        let b = self.words.get(at..at + 32)?;
        Some([u64_at(b, 0), u64_at(b, 8), u64_at(b, 16), u64_at(b, 24)])
    }

    #[inline]
    fn prefetch_word(&self, id: u32) {
        prefetch(self.words.get(32 * id as usize));
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{flip, random_hashes};
    use super::*;
    use crate::hasher::MATCH_THRESHOLD;

    fn planted(n: usize, seed: u64) -> (Vec<PdqHash>, Vec<PdqHash>) {
        let mut hashes = random_hashes(n, seed);
        let base = hashes[n / 3];
        for d in 0..=40usize {
            let bits: Vec<usize> = (0..d).map(|i| (i * 41 + 7) % 256).collect();
            hashes.push(flip(&base, &bits));
        }
        let queries = vec![
            base,
            flip(&base, &[1, 77, 150, 201]),
            hashes[n / 2],
            random_hashes(1, seed ^ 9)[0],
        ];
        (hashes, queries)
    }

    #[test]
    fn a_view_gives_the_owned_answers_at_any_alignment() {
        for n in [0usize, 1, 70_000] {
            let (hashes, queries) = if n == 0 {
                (Vec::new(), random_hashes(2, 4))
            } else {
                planted(n.max(50), 21)
            };
            let index = PdqIndex::build(&hashes);
            let bytes = index.to_bytes();
            assert_eq!(bytes.len() as u128, size_for(hashes.len() as u64));
            let mut streamed = Vec::new();
            index.write_bytes(&mut streamed).unwrap();
            assert_eq!(streamed, bytes);
            // Made one column at a time, without the built index: the same.
            let mut columns = Vec::new();
            PdqIndex::write_each(hashes.len(), || hashes.iter().copied(), &mut columns).unwrap();
            assert_eq!(columns, bytes);
            // Misaligned on purpose: one byte into a buffer.
            let mut shifted = vec![0u8; bytes.len() + 1];
            shifted[1..].copy_from_slice(&bytes);
            for b in [&bytes[..], &shifted[1..]] {
                let view = PdqIndexView::new(b).unwrap();
                assert_eq!(view.len(), hashes.len());
                for q in &queries {
                    for max in [0, 8, 16, MATCH_THRESHOLD, 40] {
                        let want = index.brute_force(q, max);
                        assert_eq!(view.search(q, max), want, "n {n} max {max}");
                        assert_eq!(view.brute_force(q, max), want);
                        assert_eq!(index.search(q, max), want);
                        // The scalar scan too, where the vector one is the default.
                        assert_eq!(search_columns(&view, q, max, Scan::Scalar), want);
                        assert_eq!(search_columns(&index, q, max, Scan::Scalar), want);
                    }
                }
                let copy = view.to_index();
                assert_eq!(copy.to_bytes(), bytes);
            }
        }
    }

    #[test]
    fn damaged_bytes_are_refused_with_what_is_wrong() {
        let (hashes, _) = planted(3000, 8);
        let index = PdqIndex::build(&hashes);
        let bytes = index.to_bytes();
        // Every length short of the whole.
        for len in [0, 7, 31, 32, 1000, bytes.len() / 2, bytes.len() - 1] {
            assert!(PdqIndexView::new(&bytes[..len]).is_err(), "{len} bytes");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            PdqIndexView::new(&longer),
            Err(IndexBytesError::Length { .. })
        ));
        // One bit flipped anywhere: header, hashes, offsets, entries, checksum.
        let mut s = 12345u64;
        let mut spots: Vec<usize> = (0..64).collect();
        spots.extend((0..400).map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % bytes.len() as u64) as usize
        }));
        spots.extend(bytes.len() - 8..bytes.len());
        for at in spots {
            for bit in [0, 3, 7] {
                let mut bad = bytes.clone();
                bad[at] ^= 1 << bit;
                assert!(PdqIndexView::new(&bad).is_err(), "byte {at} bit {bit}");
            }
        }
        // What the error names.
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(matches!(
            PdqIndexView::new(&bad),
            Err(IndexBytesError::Magic { .. })
        ));
        let mut bad = bytes.clone();
        bad[8] = 2;
        assert_eq!(
            PdqIndexView::new(&bad).err(),
            Some(IndexBytesError::Version { found: 2 })
        );
        let mut bad = bytes.clone();
        bad[40] ^= 1;
        assert!(matches!(
            PdqIndexView::new(&bad),
            Err(IndexBytesError::Checksum { .. })
        ));
        let e = PdqIndexView::new(&bad).unwrap_err().to_string();
        assert!(e.contains("damaged"), "{e}");
        // A claimed size far beyond the bytes: refused, nothing allocated.
        let mut huge = bytes.clone();
        huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            PdqIndexView::new(&huge),
            Err(IndexBytesError::TooManyEntries { .. })
        ));
        huge[16..24].copy_from_slice(&(u32::MAX as u64).to_le_bytes());
        assert!(matches!(
            PdqIndexView::new(&huge),
            Err(IndexBytesError::Length { .. })
        ));
    }

    /// Bytes with a valid checksum but a wrong structure (as someone could
    /// forge): refused by the structural checks, never a panic.
    #[test]
    fn forged_bytes_with_a_good_checksum_are_refused() {
        let (hashes, _) = planted(500, 2);
        let index = PdqIndex::build(&hashes);
        let bytes = index.to_bytes();
        let reseal = |mut b: Vec<u8>| {
            let end = b.len() - 8;
            let mut sum = Checksum::new();
            sum.update(&b[..end]);
            let c = sum.finish();
            b[end..].copy_from_slice(&c.to_le_bytes());
            b
        };
        let n = hashes.len();
        let offsets_at = HEADER + 32 * n;
        let numbers_at = offsets_at + 4 * OFFSETS + 2 * CHUNKS * n;
        // An offset out of order.
        let mut bad = bytes.clone();
        bad[offsets_at + 4 * 100..offsets_at + 4 * 101].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            PdqIndexView::new(&reseal(bad)),
            Err(IndexBytesError::Offsets { chunk: 0, .. })
        ));
        // An entry number past the end (in chunk 6, the fourth that keeps
        // numbers).
        let mut bad = bytes.clone();
        let at = numbers_at + 4 * (3 * n + 5);
        bad[at..at + 4].copy_from_slice(&(n as u32).to_le_bytes());
        assert_eq!(
            PdqIndexView::new(&reseal(bad)).err(),
            Some(IndexBytesError::Entry {
                chunk: 6,
                position: 5,
                entry: n as u64,
                entries: n as u64,
            })
        );
        // The reserved fields.
        for at in [12, 15, 24, 30] {
            let mut bad = bytes.clone();
            bad[at] = 1;
            assert!(matches!(
                PdqIndexView::new(&reseal(bad)),
                Err(IndexBytesError::Reserved { .. })
            ));
        }
        // Entry numbers swapped for others (a wrong index that passes every
        // check): answers may miss, but never name a far entry.
        let mut bad = bytes.clone();
        for i in 0..CHUNKS / 2 * n {
            let at = numbers_at + 4 * i;
            let v = u32::from_le_bytes(bad[at..at + 4].try_into().unwrap());
            let moved = (v ^ 1).min(n as u32 - 1);
            bad[at..at + 4].copy_from_slice(&moved.to_le_bytes());
        }
        let forged = reseal(bad);
        let view = PdqIndexView::new(&forged).unwrap();
        for q in &hashes[..50] {
            for m in view.search(q, MATCH_THRESHOLD) {
                assert!(m.distance <= MATCH_THRESHOLD);
                assert_eq!(PdqHash::distance(q, &hashes[m.entry as usize]), m.distance);
            }
        }
    }

    /// Any bytes at all: an error or a view whose searches end, never a
    /// panic; mutations made to pass the checksum included.
    #[test]
    fn no_bytes_make_it_panic() {
        let (hashes, queries) = planted(200, 6);
        let bytes = PdqIndex::build(&hashes).to_bytes();
        let mut s = 99u64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let reseal = |b: &mut Vec<u8>| {
            if b.len() >= 8 {
                let end = b.len() - 8;
                let mut sum = Checksum::new();
                sum.update(&b[..end]);
                let c = sum.finish();
                b[end..].copy_from_slice(&c.to_le_bytes());
            }
        };
        let mut passed = 0;
        for round in 0..300 {
            let mut b = bytes.clone();
            match round % 3 {
                // A few bytes anywhere (mostly the offsets: the largest part).
                0 => {
                    for _ in 0..1 + next() % 4 {
                        let at = (next() % b.len() as u64) as usize;
                        b[at] = next() as u8;
                    }
                }
                // Within the hashes or the entries, where a change may keep
                // the structure.
                1 => {
                    let n = hashes.len();
                    let at = if next() % 2 == 0 {
                        HEADER + (next() % (32 * n as u64)) as usize
                    } else {
                        HEADER + 32 * n + 4 * OFFSETS + (next() % (64 * n as u64)) as usize
                        // partners, numbers
                    };
                    b[at] = next() as u8;
                }
                // Cut or grown.
                _ => b.resize((next() % (b.len() as u64 + 100)) as usize, next() as u8),
            }
            reseal(&mut b);
            if let Ok(view) = PdqIndexView::new(&b) {
                passed += 1;
                for q in &queries {
                    for m in view.search(q, MATCH_THRESHOLD) {
                        assert!(m.distance <= MATCH_THRESHOLD);
                    }
                }
            }
        }
        // Some mutations keep the structure (a changed hash or filter bit).
        assert!(passed > 0);
    }

    #[test]
    fn the_checksum_streams_and_sees_every_word() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let whole = {
            let mut s = Checksum::new();
            s.update(&data);
            s.finish()
        };
        for split in [1, 5, 31, 32, 33, 64, 999] {
            let mut s = Checksum::new();
            for part in data.chunks(split) {
                s.update(part);
            }
            assert_eq!(s.finish(), whole, "in parts of {split}");
        }
        let mut padded = data.clone();
        padded.push(0);
        let mut s = Checksum::new();
        s.update(&padded);
        assert_ne!(s.finish(), whole, "a trailing zero counts");
    }
}
