//! Exact near-neighbour search over PDQ hashes, for known-hash lists of tens
//! of millions and for cases that grow with every report: multi-index
//! hashing over 16 chunks of 16 bits.
//!
//! Why it is exact: if two 256-bit hashes differ in at most `d` bits, then by
//! pigeonhole at least one of the 16 chunks differs in at most `d / 16` bits
//! (1 for the federation's threshold of 31). So probing, in each chunk's
//! table, every 16-bit value within that radius of the query's chunk finds
//! every hash within `d`; each candidate is then checked on all 256 bits.
//! The results are the same as a brute-force scan's, only faster. A finer
//! pigeonhole drops most candidates before that check: the chunks pair up,
//! one pair differs in at most `d / 8` bits, and within it one chunk in at
//! most `d / 16`; so a bucket's entry whose chunk and partner chunk
//! together differ in more than `d / 8` is no match through that bucket
//! (`pair_bounds`).
//!
//! `PdqIndex` layout (built once, read-only after): the hashes as four
//! `u64` words each, and per chunk a counting sort of the entries by that
//! chunk (65,537 offsets), slot by slot the entry's partner chunk as a
//! `u16` (what a bucket scan reads, sixteen at a time where the processor
//! has AVX2) and, in even chunks only, its entry number as a `u32`. Why odd
//! chunks need no numbers: a slot that passes in odd chunk `c`'s bucket `b`
//! with partner value `p` stands for the entries whose chunks `c` and
//! `c - 1` are `b` and `p`, exactly the slots of chunk `c - 1`'s bucket `p`
//! whose partner value is `b`, found by one more bucket scan. About 96
//! bytes per entry, and the full 16 bits of the partner chunk filter every
//! slot (where entry numbers carrying a few filter bits let thousands of
//! candidates through at ten million entries). `PdqIndex::to_bytes` writes
//! it as bytes that `PdqIndexView` searches in place (`bytes` has the
//! format). `PdqSet` grows by runs of those; `PdqTable` grows in place.

#![allow(
    clippy::indexing_slicing,
    reason = "bucket tables of 2^16 entries indexed by 16-bit chunks, offsets and slots from the arrays they were built over"
)]

use crate::hash::PdqHash;
use crate::hasher::{MATCH_THRESHOLD, MIN_MATCH_QUALITY};

mod bytes;
mod scan;
mod table;

pub use bytes::{IndexBytesError, PdqIndexView};
pub use table::PdqTable;

use scan::Scan;

const CHUNKS: usize = 16;
const BUCKETS: usize = 1 << 16;

/// One match: the entry's number (its position when the index was built) and
/// its Hamming distance from the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Match {
    /// Distance in bits.
    pub distance: u32,
    /// Entry number.
    pub entry: u32,
}

/// The index. Entries are numbered in the order given to `build`.
pub struct PdqIndex {
    words: Vec<[u64; 4]>,
    /// Per chunk, `BUCKETS + 1` offsets into that chunk's slots, chunk
    /// after chunk.
    offsets: Vec<u32>,
    /// Per chunk, bucket by bucket (chunk after chunk, `len()` each): the
    /// slot's entry's partner chunk (see `pair_bounds`), what a bucket scan
    /// reads.
    partners: Vec<u16>,
    /// Per even chunk, slot by slot as in `partners` (chunk 0, 2, ...,
    /// `len()` each): the entry number. Odd chunks keep none (the module
    /// doc says why).
    numbers: Vec<u32>,
}

/// The 256 bits as four words, word 0 holding bits 0..64.
fn words(h: &PdqHash) -> [u64; 4] {
    let w = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&h.0[32 - 8 * (i + 1)..32 - 8 * i]);
        u64::from_be_bytes(b)
    };
    [w(0), w(1), w(2), w(3)]
}

/// The hash whose words are `w` (the inverse of `words`).
fn hash_of(w: &[u64; 4]) -> PdqHash {
    let mut h = [0u8; 32];
    for (i, word) in w.iter().enumerate() {
        h[32 - 8 * (i + 1)..32 - 8 * i].copy_from_slice(&word.to_be_bytes());
    }
    PdqHash(h)
}

fn chunk(w: &[u64; 4], c: usize) -> usize {
    ((w[c / 4] >> ((c % 4) * 16)) & 0xffff) as usize
}

/// Where each chunk's buckets begin: `CHUNKS` tables of `BUCKETS + 1`
/// offsets (a bucket's entries are its offset to the next one's).
fn bucket_offsets<I: Iterator<Item = [u64; 4]>>(words: impl Fn() -> I) -> Vec<u32> {
    let mut offsets = vec![0u32; CHUNKS * (BUCKETS + 1)];
    for (c, off) in offsets.chunks_exact_mut(BUCKETS + 1).enumerate() {
        for w in words() {
            off[chunk(&w, c) + 1] += 1;
        }
        for b in 0..BUCKETS {
            off[b + 1] += off[b];
        }
    }
    offsets
}

/// Lays chunk `c`'s entries out in bucket order: each one's partner chunk
/// into `values`, its number into `ids` (kept for even chunks only); either
/// may be left out, so that a writer can make one column at a time.
fn fill_chunk(
    words: impl Iterator<Item = [u64; 4]>,
    c: usize,
    offsets: &[u32],
    mut values: Option<&mut [u16]>,
    mut ids: Option<&mut [u32]>,
) {
    let Some(off) = offsets.get(c * (BUCKETS + 1)..(c + 1) * (BUCKETS + 1)) else {
        return;
    };
    let mut next = off.to_vec();
    for (i, w) in words.enumerate() {
        let b = chunk(&w, c);
        let at = next[b] as usize;
        if let Some(v) = values.as_deref_mut().and_then(|v| v.get_mut(at)) {
            *v = chunk(&w, partner(c)) as u16;
        }
        if let Some(x) = ids.as_deref_mut().and_then(|x| x.get_mut(at)) {
            *x = i as u32;
        }
        next[b] += 1;
    }
}

fn distance(a: &[u64; 4], b: &[u64; 4]) -> u32 {
    (a[0] ^ b[0]).count_ones()
        + (a[1] ^ b[1]).count_ones()
        + (a[2] ^ b[2]).count_ones()
        + (a[3] ^ b[3]).count_ones()
}

/// The candidates within `max_distance` on all 256 bits, nearest first,
/// ties by entry number, each once (a match may be found in several chunks).
/// `word` gives an entry's hash (`None` for a number out of range).
fn confirm(
    q: &[u64; 4],
    word: impl Fn(u32) -> Option<[u64; 4]>,
    candidates: Vec<u32>,
    max_distance: u32,
) -> Vec<Match> {
    let mut out: Vec<Match> = candidates
        .into_iter()
        .filter_map(|id| {
            let d = distance(q, &word(id)?);
            (d <= max_distance).then_some(Match {
                distance: d,
                entry: id,
            })
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Asks the processor to start loading `v`'s cache line: a hint that never
/// faults and changes no result.
#[inline(always)]
fn prefetch<T>(v: Option<&T>) {
    #[cfg(target_arch = "x86_64")]
    if let Some(r) = v {
        // SAFETY: a prefetch is only a hint; it reads nothing the program
        // sees and cannot fault, and `r` is a valid reference anyway.
        unsafe {
            std::arch::x86_64::_mm_prefetch(
                (r as *const T).cast::<i8>(),
                std::arch::x86_64::_MM_HINT_T0,
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// Calls `f` with every 16-bit value within `radius` bits of `v`.
fn neighbours(v: usize, radius: u32, from_bit: usize, f: &mut impl FnMut(usize)) {
    f(v);
    if radius == 0 {
        return;
    }
    for bit in from_bit..16 {
        neighbours(v ^ (1 << bit), radius - 1, bit + 1, f);
    }
}

/// What a search needs of an index's storage, whether built in memory
/// (`PdqIndex`) or read in place from its bytes (`PdqIndexView`): the same
/// search runs over both.
trait Columns {
    /// Entries held.
    fn count(&self) -> usize;
    /// Bucket `b` of chunk `c`: its first and past-the-last slots.
    fn bucket(&self, c: usize, b: usize) -> (usize, usize);
    fn prefetch_bucket(&self, c: usize, b: usize);
    /// Asks for every cache line of chunk `c`'s partners `start..end`.
    fn prefetch_partners(&self, c: usize, start: usize, end: usize);
    /// `Scan::run` over chunk `c`'s partners `start..end`.
    #[allow(clippy::too_many_arguments, reason = "one scan's whole description")]
    fn scan(
        &self,
        how: Scan,
        c: usize,
        start: usize,
        end: usize,
        query: u16,
        room: u32,
        hit: &mut impl FnMut(usize),
    );
    /// Chunk `c`'s partner value at slot `at`.
    fn partner_at(&self, c: usize, at: usize) -> u16;
    /// Even chunk `c`'s entry number at slot `at`.
    fn number(&self, c: usize, at: usize) -> Option<u32>;
    fn prefetch_number(&self, c: usize, at: usize);
    /// Entry `id`'s hash.
    fn word(&self, id: u32) -> Option<[u64; 4]>;
    fn prefetch_word(&self, id: u32);
}

/// Asks for every cache line of `run`, `size` bytes an element.
#[inline]
fn prefetch_lines<T>(run: Option<&[T]>, size: usize) {
    if let Some(run) = run {
        let step = (64 / size.max(1)).max(1);
        for v in run.iter().step_by(step) {
            prefetch(Some(v));
        }
        prefetch(run.last());
    }
}

impl Columns for PdqIndex {
    fn count(&self) -> usize {
        self.words.len()
    }

    #[inline]
    fn bucket(&self, c: usize, b: usize) -> (usize, usize) {
        let at = c * (BUCKETS + 1) + b;
        match (self.offsets.get(at), self.offsets.get(at + 1)) {
            (Some(&s), Some(&e)) => (s as usize, e as usize),
            _ => (0, 0),
        }
    }

    #[inline]
    fn prefetch_bucket(&self, c: usize, b: usize) {
        prefetch(self.offsets.get(c * (BUCKETS + 1) + b));
    }

    #[inline]
    fn prefetch_partners(&self, c: usize, start: usize, end: usize) {
        let base = c * self.words.len();
        prefetch_lines(self.partners.get(base + start..base + end), 2);
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
        let base = c * self.words.len();
        if let Some(run) = self.partners.get(base..base + end) {
            how.run(run, start, end.saturating_sub(start), query, room, hit);
        }
    }

    #[inline]
    fn partner_at(&self, c: usize, at: usize) -> u16 {
        self.partners
            .get(c * self.words.len() + at)
            .copied()
            .unwrap_or(0)
    }

    #[inline]
    fn number(&self, c: usize, at: usize) -> Option<u32> {
        self.numbers.get(c / 2 * self.words.len() + at).copied()
    }

    #[inline]
    fn prefetch_number(&self, c: usize, at: usize) {
        prefetch(self.numbers.get(c / 2 * self.words.len() + at));
    }

    #[inline]
    fn word(&self, id: u32) -> Option<[u64; 4]> {
        self.words.get(id as usize).copied()
    }

    #[inline]
    fn prefetch_word(&self, id: u32) {
        prefetch(self.words.get(id as usize));
    }
}

/// `PdqIndex::search` over any storage: the steps of `PdqTable::search`
/// (the module doc of `table` gives them), over buckets built by counting
/// sort instead of grown in place.
///
/// Why in phases: a search is bound by memory latency (hundreds of
/// buckets, each a cache miss or more), not by arithmetic. Gathering every
/// address of a phase first, and asking for it early, lets those misses
/// overlap instead of following one another: buckets, then their partner
/// runs, then entry numbers, then the candidates' hashes.
fn search_columns(
    index: &impl Columns,
    query: &PdqHash,
    max_distance: u32,
    how: Scan,
) -> Vec<Match> {
    if index.count() == 0 {
        return Vec::new();
    }
    let q = words(query);
    let (radius, pair) = pair_bounds(max_distance);
    // (chunk, bucket, room)
    let mut probes: Vec<(usize, usize, u32)> = Vec::with_capacity(CHUNKS * 17);
    for c in 0..CHUNKS {
        let own = chunk(&q, c);
        neighbours(own, radius, 0, &mut |b| {
            index.prefetch_bucket(c, b);
            probes.push((c, b, pair - (own ^ b).count_ones()));
        });
    }
    // (chunk, bucket, start, end, room)
    let mut runs: Vec<(usize, usize, usize, usize, u32)> = Vec::with_capacity(probes.len());
    for (c, b, room) in probes {
        let (start, end) = index.bucket(c, b);
        if start < end {
            index.prefetch_partners(c, start, end);
            runs.push((c, b, start, end, room));
        }
    }
    // Slots that pass: in an even chunk, (chunk, slot); in an odd one,
    // where their entry numbers are (even chunk, bucket, value wanted).
    let mut hits: Vec<(usize, usize)> = Vec::new();
    let mut elsewhere: Vec<(usize, u16, u16)> = Vec::new();
    for (c, b, start, end, room) in runs {
        let qp = chunk(&q, partner(c)) as u16;
        if c.is_multiple_of(2) {
            index.scan(how, c, start, end, qp, room, &mut |at| {
                index.prefetch_number(c, at);
                hits.push((c, at));
            });
        } else {
            index.scan(how, c, start, end, qp, room, &mut |at| {
                let p = index.partner_at(c, at);
                index.prefetch_bucket(c - 1, usize::from(p));
                elsewhere.push((c - 1, p, b as u16));
            });
        }
    }
    // Odd chunks' slots found again in their even partner: each (bucket,
    // value) once, however many entries share them.
    elsewhere.sort_unstable();
    elsewhere.dedup();
    let mut runs: Vec<(usize, usize, usize, u16)> = Vec::with_capacity(elsewhere.len());
    for (c, p, b) in elsewhere {
        let (start, end) = index.bucket(c, usize::from(p));
        if start < end {
            index.prefetch_partners(c, start, end);
            runs.push((c, start, end, b));
        }
    }
    for (c, start, end, b) in runs {
        index.scan(how, c, start, end, b, 0, &mut |at| {
            index.prefetch_number(c, at);
            hits.push((c, at));
        });
    }
    let mut candidates: Vec<u32> = Vec::with_capacity(hits.len());
    for (c, at) in hits {
        if let Some(id) = index.number(c, at) {
            index.prefetch_word(id);
            candidates.push(id);
        }
    }
    confirm(&q, |id| index.word(id), candidates, max_distance)
}

/// `PdqIndex::brute_force` over any storage.
fn brute_force_columns(index: &impl Columns, query: &PdqHash, max_distance: u32) -> Vec<Match> {
    let q = words(query);
    let mut out: Vec<Match> = (0..index.count() as u32)
        .filter_map(|i| {
            let d = distance(&q, &index.word(i)?);
            (d <= max_distance).then_some(Match {
                distance: d,
                entry: i,
            })
        })
        .collect();
    out.sort_unstable();
    out
}

impl PdqIndex {
    /// Entry `entry`'s hash (so that indexes can be merged by building
    /// one from the hashes of several).
    pub fn hash(&self, entry: u32) -> Option<PdqHash> {
        self.words.get(entry as usize).map(hash_of)
    }

    /// Builds the index (a counting sort per chunk: linear in the entries).
    pub fn build(hashes: &[PdqHash]) -> PdqIndex {
        let words: Vec<[u64; 4]> = hashes.iter().map(words).collect();
        let n = words.len();
        let offsets = bucket_offsets(|| words.iter().copied());
        let mut partners = vec![0u16; CHUNKS * n];
        let mut numbers = vec![0u32; CHUNKS / 2 * n];
        for c in 0..CHUNKS {
            let values = partners.get_mut(c * n..(c + 1) * n);
            let ids = match c.is_multiple_of(2) {
                true => numbers.get_mut(c / 2 * n..(c / 2 + 1) * n),
                false => None,
            };
            fill_chunk(words.iter().copied(), c, &offsets, values, ids);
        }
        PdqIndex {
            words,
            offsets,
            partners,
            numbers,
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Whether the index holds nothing.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Memory held, per entry (the fixed offset tables spread over the entries).
    pub fn bytes_per_entry(&self) -> f64 {
        let fixed = (CHUNKS * (BUCKETS + 1) * 4) as f64;
        let per = (32 + CHUNKS * 2 + CHUNKS / 2 * 4) as f64;
        per + fixed / self.len().max(1) as f64
    }

    /// Every entry within `max_distance` bits of `query` (at most 255),
    /// nearest first, ties by entry number; in phases (see `search_columns`).
    pub fn search(&self, query: &PdqHash, max_distance: u32) -> Vec<Match> {
        search_columns(self, query, max_distance, Scan::detect())
    }

    /// The same answer by comparing with every entry: the reference that
    /// `search` must equal, and the baseline of the benchmark.
    pub fn brute_force(&self, query: &PdqHash, max_distance: u32) -> Vec<Match> {
        brute_force_columns(self, query, max_distance)
    }
}

/// Hashes scanned directly before they are built into a run.
const RECENT_MAX: usize = 1024;

/// A built run of the set: its index and, per entry, (id, quality).
struct Run {
    index: PdqIndex,
    hashes: Vec<PdqHash>,
    meta: Vec<(u64, u8)>,
}

/// A growing set of PDQ hashes for near matching, for the known-hash list:
/// tens of millions of entries, about 100 bytes each, withdrawn entries
/// dropped when their run is rebuilt. Why runs: the list grows by
/// contributions, so neither one index rebuilt per addition nor a long list
/// scanned per search will do. New hashes are scanned directly until there
/// are 1024; then they become a run, and runs of similar size are merged
/// (the logarithmic method): a search looks in at most log2(n / 1024) runs,
/// and each hash is rebuilt into an index O(log n) times overall. Sets
/// searched before every addition (cases) use `PdqTable` instead: one
/// table to search however large, never rebuilt, for about the same memory
/// per hash (its buckets keep some room to grow).
#[derive(Default)]
pub struct PdqSet {
    /// Largest first; each at least twice the size of the next.
    runs: Vec<Run>,
    recent: Vec<(PdqHash, u64, u8)>,
}

impl PdqSet {
    /// Adds a hash under `id`; searchable at once.
    pub fn add(&mut self, h: PdqHash, id: u64, quality: u8) {
        self.recent.push((h, id, quality));
    }

    /// Builds the recent hashes into a run once they are many, merging runs
    /// of similar size; ids for which `live` is false leave what is rebuilt.
    pub fn settle(&mut self, live: impl Fn(u64) -> bool) {
        if self.recent.len() < RECENT_MAX {
            return;
        }
        let mut hashes = Vec::with_capacity(self.recent.len());
        let mut meta = Vec::with_capacity(self.recent.len());
        for (h, v, q) in self.recent.drain(..) {
            hashes.push(h);
            meta.push((v, q));
        }
        while let Some(last) = self.runs.last() {
            if last.meta.len() > 2 * meta.len() {
                break;
            }
            let Some(run) = self.runs.pop() else { break };
            let mut merged_h = run.hashes;
            let mut merged_m = run.meta;
            merged_h.append(&mut hashes);
            merged_m.append(&mut meta);
            hashes = merged_h;
            meta = merged_m;
        }
        let mut keep = 0;
        for i in 0..meta.len() {
            if live(meta[i].0) {
                hashes[keep] = hashes[i];
                meta[keep] = meta[i];
                keep += 1;
            }
        }
        hashes.truncate(keep);
        meta.truncate(keep);
        if !hashes.is_empty() {
            self.runs.push(Run {
                index: PdqIndex::build(&hashes),
                hashes,
                meta,
            });
        }
    }

    /// Hashes held (withdrawn ones until their run is rebuilt).
    pub fn len(&self) -> usize {
        self.runs.iter().map(|r| r.meta.len()).sum::<usize>() + self.recent.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Index bytes per indexed hash, over all runs (0 before the first run).
    pub fn index_bytes_per_entry(&self) -> f64 {
        let n: usize = self.runs.iter().map(|r| r.meta.len()).sum();
        if n == 0 {
            return 0.0;
        }
        let bytes: f64 = self
            .runs
            .iter()
            .map(|r| r.index.bytes_per_entry() * r.meta.len() as f64)
            .sum();
        bytes / n as f64
    }
}

/// A near-neighbour set that can be searched for a match of acceptable
/// quality: what deconfliction and series matching ask of a PDQ store.
pub trait NearSet {
    /// Calls `f(distance, id)` for every held hash within the federation's
    /// threshold (31) whose quality is at least 50, in no order; an id may
    /// come more than once.
    fn each_match(&self, query: &PdqHash, f: impl FnMut(u32, u64));

    /// The nearest live match of acceptable quality (distance <= 31, both
    /// qualities >= 50: the caller checks the query's), ties to the lowest id.
    fn best(&self, query: &PdqHash, live: impl Fn(u64) -> bool) -> Option<(u64, u32)> {
        let mut best: Option<(u32, u64)> = None;
        self.each_match(query, |d, v| {
            if live(v) && best.is_none_or(|b| (d, v) < b) {
                best = Some((d, v));
            }
        });
        best.map(|(d, v)| (v, d))
    }

    /// Every match of acceptable quality (distance <= 31, quality >= 50:
    /// the caller checks the query's) as (id, distance), in no order.
    fn matches(&self, query: &PdqHash) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        self.each_match(query, |d, v| out.push((v, d)));
        out
    }
}

impl NearSet for PdqSet {
    fn each_match(&self, query: &PdqHash, mut f: impl FnMut(u32, u64)) {
        for run in &self.runs {
            for m in run.index.search(query, MATCH_THRESHOLD) {
                match run.meta.get(m.entry as usize) {
                    Some(&(v, q)) if q >= MIN_MATCH_QUALITY => f(m.distance, v),
                    _ => {}
                }
            }
        }
        for (h, v, q) in &self.recent {
            let d = h.distance(query);
            if d <= MATCH_THRESHOLD && *q >= MIN_MATCH_QUALITY {
                f(d, *v);
            }
        }
    }
}

/// The other chunk of chunk `c`'s pair: chunks (0, 1), (2, 3), ... pair up.
fn partner(c: usize) -> usize {
    c ^ 1
}

/// For a search within `max_distance`: the radius each chunk is probed
/// with, and the most a pair may differ by.
///
/// Why this is exact: if two hashes differ in at most `D` bits, one of the
/// eight pairs of chunks differs in at most `P = D / 8` of its 32 bits (else
/// all eight would add up to more than `D`), and within that pair one chunk
/// differs in at most `P / 2`. So probing each chunk within `P / 2` finds
/// every match in at least one chunk, and a candidate whose chunk and
/// partner chunk together differ in more than `P` bits is no match through
/// that pair. For the federation's threshold of 31: radius 1, pairs within 3.
fn pair_bounds(max_distance: u32) -> (u32, u32) {
    let pair = max_distance / 8;
    (pair / 2, pair)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scans to test: the scalar one, and the CPU's own where it
    /// has a faster one.
    pub(super) fn scans() -> Vec<super::scan::Scan> {
        use super::scan::Scan;
        if Scan::detect() == Scan::Scalar {
            vec![Scan::Scalar]
        } else {
            vec![Scan::Scalar, Scan::detect()]
        }
    }

    pub(super) fn random_hashes(n: usize, seed: u64) -> Vec<PdqHash> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                let mut h = [0u8; 32];
                for b in h.iter_mut() {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    *b = s as u8;
                }
                PdqHash(h)
            })
            .collect()
    }

    pub(super) fn flip(h: &PdqHash, bits: &[usize]) -> PdqHash {
        let mut out = *h;
        for &k in bits {
            out.0[31 - k / 8] ^= 1 << (k % 8);
        }
        out
    }

    #[test]
    fn an_entrys_hash_reads_back_owned_and_in_place() {
        let hashes = random_hashes(300, 11);
        let idx = PdqIndex::build(&hashes);
        let bytes = idx.to_bytes();
        let view = PdqIndexView::new(&bytes).unwrap();
        for (i, h) in hashes.iter().enumerate() {
            assert_eq!(idx.hash(i as u32), Some(*h));
            assert_eq!(view.hash(i as u32), Some(*h));
        }
        assert_eq!(idx.hash(300), None);
        assert_eq!(view.hash(300), None);
    }

    #[test]
    fn words_and_distance_agree_with_the_hash() {
        let h = random_hashes(2, 9);
        assert_eq!(distance(&words(&h[0]), &words(&h[1])), h[0].distance(&h[1]));
        let one = flip(&h[0], &[0]);
        assert_eq!(
            words(&one)[0] ^ words(&h[0])[0],
            1,
            "bit 0 is word 0's lowest"
        );
    }

    #[test]
    fn equals_brute_force_at_the_threshold_and_beyond() {
        let mut hashes = random_hashes(5000, 42);
        // Near copies at every distance up to 40, spread over the chunks.
        let base = hashes[7];
        for d in 0..=40usize {
            let bits: Vec<usize> = (0..d).map(|i| (i * 37) % 256).collect();
            hashes.push(flip(&base, &bits));
        }
        let index = PdqIndex::build(&hashes);
        for q in [base, hashes[100], flip(&base, &[3, 100, 200])] {
            for max in [0, 15, 16, MATCH_THRESHOLD, 47] {
                assert_eq!(
                    index.search(&q, max),
                    index.brute_force(&q, max),
                    "max {max}"
                );
            }
        }
        let found = index.search(&base, MATCH_THRESHOLD);
        assert_eq!(
            found.len(),
            1 + 32,
            "the original, itself again at 0, and 1..=31"
        );
    }

    #[test]
    fn a_table_equals_brute_force_as_it_grows() {
        let mut hashes = random_hashes(5000, 44);
        let base = hashes[13];
        for d in 0..=40usize {
            let bits: Vec<usize> = (0..d).map(|i| (i * 61) % 256).collect();
            hashes.push(flip(&base, &bits));
        }
        let mut table = PdqTable::default();
        for (i, h) in hashes.iter().enumerate() {
            table.add(*h, i as u64, if i % 5 == 0 { 40 } else { 90 });
            if i % 1000 == 0 || i == hashes.len() - 1 {
                let reference = PdqIndex::build(&hashes[..=i]);
                for q in [base, hashes[i / 2], flip(&base, &[5, 80, 160, 240])] {
                    for max in [0, 16, MATCH_THRESHOLD, 47] {
                        assert_eq!(
                            table.search(&q, max),
                            reference.brute_force(&q, max),
                            "after {i}, max {max}"
                        );
                    }
                }
            }
        }
        assert_eq!(table.len(), hashes.len());
        // The same hashes added at once give the same answers.
        let mut at_once = PdqTable::default();
        let all: Vec<(PdqHash, u64, u8)> = hashes
            .iter()
            .enumerate()
            .map(|(i, h)| (*h, i as u64, if i % 5 == 0 { 40 } else { 90 }))
            .collect();
        at_once.extend(&all);
        for q in [base, hashes[77], flip(&base, &[9, 90])] {
            assert_eq!(
                at_once.search(&q, MATCH_THRESHOLD),
                table.search(&q, MATCH_THRESHOLD)
            );
            assert_eq!(at_once.best(&q, |_| true), table.best(&q, |_| true));
        }
        // Quality below 50 never matches; the nearest wins, ties to the lowest id.
        let near = flip(&base, &[1]);
        assert_eq!(table.best(&near, |_| true), Some((13, 1)));
        assert_eq!(table.best(&near, |v| v != 13), Some((5001, 2)));
        let all = table.matches(&base);
        assert!(all.iter().all(|&(v, d)| d <= MATCH_THRESHOLD && v % 5 != 0));
        assert_eq!(
            all.len(),
            1 + 32 - (5000..5032).filter(|v| v % 5 == 0).count()
        );
    }

    /// Near copies at 31 and 32 bits laid out against the pair filter: seven
    /// pairs differ in 4 bits, the eighth in 3 (split 3+0, 2+1, 1+2, 0+3
    /// between its chunks), and the 32-bit ones by one more anywhere. Every
    /// 31 is found, no 32 is, and the answers equal brute force's.
    #[test]
    fn the_pair_filter_misses_no_match_however_its_bits_lie() {
        let mut hashes = random_hashes(3000, 91);
        let base = hashes[0];
        let mut want = Vec::new();
        // Bit `k` of chunk `c` is hash bit 16 * c + k.
        let bits_in =
            |c: usize, n: usize, from: usize| (0..n).map(move |k| 16 * c + (from + k) % 16);
        for tight in 0..8 {
            for split in 0..=3 {
                let mut bits: Vec<usize> = Vec::new();
                for pair in 0..8 {
                    let (a, b) = (2 * pair, 2 * pair + 1);
                    if pair == tight {
                        bits.extend(bits_in(a, split, pair));
                        bits.extend(bits_in(b, 3 - split, pair + 5));
                    } else {
                        bits.extend(bits_in(a, 2, pair));
                        bits.extend(bits_in(b, 2, pair + 7));
                    }
                }
                assert_eq!(bits.len(), 31);
                want.push(hashes.len() as u32);
                hashes.push(flip(&base, &bits));
                let extra = 16 * (2 * tight) + (tight + 9) % 16;
                let mut more = bits.clone();
                more.push(extra);
                hashes.push(flip(&base, &more));
            }
        }
        let mut table = PdqTable::default();
        for (i, h) in hashes.iter().enumerate() {
            table.add(*h, i as u64, 90);
        }
        let reference = PdqIndex::build(&hashes);
        let found = table.search(&base, MATCH_THRESHOLD);
        assert_eq!(found, reference.brute_force(&base, MATCH_THRESHOLD));
        assert_eq!(found, reference.search(&base, MATCH_THRESHOLD));
        let at_31: Vec<u32> = found
            .iter()
            .filter(|m| m.distance == 31)
            .map(|m| m.entry)
            .collect();
        assert_eq!(at_31, want, "every 31-bit copy, however its bits lie");
        assert!(found.iter().all(|m| m.distance <= 31));
        for max in [0, 7, 8, 23, 24, 32, 40, 47] {
            let brute = reference.brute_force(&base, max);
            assert_eq!(table.search(&base, max), brute, "max {max}");
            assert_eq!(reference.search(&base, max), brute, "max {max}");
        }
        // A larger index (entry numbers past 2^17, several entries a
        // bucket, the partner runs scanned sixteen at a time): the same
        // answers.
        let mut big = hashes.clone();
        big.extend(random_hashes(140_000, 17));
        let index = PdqIndex::build(&big);
        for max in [MATCH_THRESHOLD, 23, 40] {
            assert_eq!(
                index.search(&base, max),
                index.brute_force(&base, max),
                "max {max}"
            );
        }
    }

    #[test]
    fn a_growing_set_finds_what_brute_force_finds() {
        let hashes = random_hashes(6000, 7);
        {
            let mut set = PdqSet::default();
            for (i, h) in hashes.iter().enumerate() {
                set.add(*h, i as u64, 90);
                set.settle(|v| v % 7 != 3);
                if i % 500 == 0 || i == hashes.len() - 1 {
                    // A near copy of an earlier hash is found, unless withdrawn.
                    let j = i / 2;
                    let q = flip(&hashes[j], &[1, 50, 99]);
                    let want = if j % 7 == 3 {
                        None
                    } else {
                        Some((j as u64, 3))
                    };
                    assert_eq!(set.best(&q, |v| v % 7 != 3), want, "after {i}");
                }
            }
            // Runs stay few: logarithmic in the number of hashes.
            assert!(set.runs.len() <= 4, "{} runs", set.runs.len());
            assert!(set
                .runs
                .windows(2)
                .all(|w| w[0].meta.len() > w[1].meta.len()));
        }
    }
}
