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
//! `u64` words each, and per chunk a bucketed list of `u32`s (a counting
//! sort: 65,537 offsets and one `u32` per entry): the entry number, and in
//! the bits it leaves free the top of its partner chunk. About 96 bytes
//! per entry. `PdqSet` grows by runs of those; `PdqTable` grows in place.

#![allow(
    clippy::indexing_slicing,
    reason = "bucket tables of 2^16 entries indexed by 16-bit chunks, offsets and ids from the arrays they were built over"
)]

use crate::hash::PdqHash;
use crate::hasher::{MATCH_THRESHOLD, MIN_MATCH_QUALITY};

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
    offsets: Vec<Vec<u32>>,
    /// Per chunk, bucket by bucket: the entry number, shifted left by
    /// `filter_bits`, below it the top `filter_bits` of the entry's partner
    /// chunk (see `pair_bounds`): the bits an entry number leaves free in
    /// its 32 serve as a filter, so that most candidates that are no match
    /// are dropped without fetching their hash, at no extra memory.
    entries: Vec<Vec<u32>>,
    filter_bits: u32,
}

/// How many of an entry's 32 bits the partner filter may take when `n`
/// entries need numbering (at most the partner chunk's 16).
fn filter_bits_for(n: usize) -> u32 {
    let id_bits = usize::BITS - n.saturating_sub(1).leading_zeros();
    32u32.saturating_sub(id_bits).min(16)
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

fn chunk(w: &[u64; 4], c: usize) -> usize {
    ((w[c / 4] >> ((c % 4) * 16)) & 0xffff) as usize
}

fn distance(a: &[u64; 4], b: &[u64; 4]) -> u32 {
    (a[0] ^ b[0]).count_ones()
        + (a[1] ^ b[1]).count_ones()
        + (a[2] ^ b[2]).count_ones()
        + (a[3] ^ b[3]).count_ones()
}

/// The candidates within `max_distance` on all 256 bits, nearest first,
/// ties by entry number, each once (a match may be found in several chunks).
fn confirm(
    q: &[u64; 4],
    words: &[[u64; 4]],
    candidates: Vec<u32>,
    max_distance: u32,
) -> Vec<Match> {
    let mut out: Vec<Match> = candidates
        .into_iter()
        .filter_map(|id| {
            let d = distance(q, words.get(id as usize)?);
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

impl PdqIndex {
    /// Builds the index (a counting sort per chunk: linear in the entries).
    pub fn build(hashes: &[PdqHash]) -> PdqIndex {
        let words: Vec<[u64; 4]> = hashes.iter().map(words).collect();
        let mut offsets = Vec::with_capacity(CHUNKS);
        let mut entries = Vec::with_capacity(CHUNKS);
        let filter_bits = filter_bits_for(words.len());
        for c in 0..CHUNKS {
            let mut off = vec![0u32; BUCKETS + 1];
            for w in &words {
                off[chunk(w, c) + 1] += 1;
            }
            for b in 0..BUCKETS {
                off[b + 1] += off[b];
            }
            let mut next = off.clone();
            let mut ids = vec![0u32; words.len()];
            for (i, w) in words.iter().enumerate() {
                let b = chunk(w, c);
                let filter = (chunk(w, partner(c)) >> (16 - filter_bits)) as u32;
                ids[next[b] as usize] = ((i as u64) << filter_bits) as u32 | filter;
                next[b] += 1;
            }
            offsets.push(off);
            entries.push(ids);
        }
        PdqIndex {
            words,
            offsets,
            entries,
            filter_bits,
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
        let per = (32 + CHUNKS * 4) as f64;
        per + fixed / self.len().max(1) as f64
    }

    /// Every entry within `max_distance` bits of `query` (at most 255),
    /// nearest first, ties by entry number.
    ///
    /// Why in phases: a search is bound by memory latency (hundreds of
    /// buckets, thousands of candidates, each a cache miss), not by
    /// arithmetic. Gathering every address of a phase first, and asking
    /// for it early, lets those misses overlap instead of following one
    /// another: buckets, then their entry lists, then the candidates' hashes.
    pub fn search(&self, query: &PdqHash, max_distance: u32) -> Vec<Match> {
        let q = words(query);
        let (radius, pair) = pair_bounds(max_distance);
        let f = self.filter_bits;
        let mask = (1u32 << f) - 1;
        // (chunk, bucket, the chunk's own distance)
        let mut probes: Vec<(usize, usize, u32)> = Vec::with_capacity(CHUNKS * 17);
        for c in 0..CHUNKS {
            let off = &self.offsets[c];
            let own = chunk(&q, c);
            neighbours(own, radius, 0, &mut |b| {
                prefetch(off.get(b));
                probes.push((c, b, (own ^ b).count_ones()));
            });
        }
        let mut ranges: Vec<(usize, usize, usize, u32)> = Vec::with_capacity(probes.len());
        for (c, b, d) in probes {
            let off = &self.offsets[c];
            let (start, end) = (off[b] as usize, off[b + 1] as usize);
            if start < end {
                prefetch(self.entries[c].get(start));
                ranges.push((c, start, end, d));
            }
        }
        let mut candidates: Vec<u32> = Vec::new();
        for (c, start, end, d) in ranges {
            let qf = (chunk(&q, partner(c)) >> (16 - f)) as u32;
            let room = pair - d;
            for &v in &self.entries[c][start..end] {
                if ((v & mask) ^ qf).count_ones() <= room {
                    let id = ((u64::from(v)) >> f) as u32;
                    prefetch(self.words.get(id as usize));
                    candidates.push(id);
                }
            }
        }
        confirm(&q, &self.words, candidates, max_distance)
    }

    /// The same answer by comparing with every entry: the reference that
    /// `search` must equal, and the baseline of the benchmark.
    pub fn brute_force(&self, query: &PdqHash, max_distance: u32) -> Vec<Match> {
        let q = words(query);
        let mut out: Vec<Match> = self
            .words
            .iter()
            .enumerate()
            .filter_map(|(i, w)| {
                let d = distance(&q, w);
                (d <= max_distance).then_some(Match {
                    distance: d,
                    entry: i as u32,
                })
            })
            .collect();
        out.sort_unstable();
        out
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
/// searched before every addition (cases) use `PdqTable` instead: faster
/// to search at three times the memory.
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

/// One bucket slot of a `PdqTable`: the entry's value in the partner
/// chunk (the other chunk of its pair), then the entry number as two
/// 16-bit halves, low first. Six bytes, so a bucket scan reads little.
type Slot = [u16; 3];

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

/// A PDQ index that takes additions in place: multi-index hashing over 16
/// chunks of 16 bits like `PdqIndex`, but each bucket is its own growable
/// list, so a hash is searchable the moment it is added and is never
/// rebuilt.
///
/// Why: cases are searched before every addition, at ingest. A set of built
/// runs (`PdqSet`) must search each of its log2(n / 1024) runs and now and
/// then rebuild half of itself while ingest waits; one table probes its 272
/// buckets whatever its size. Each slot carries the entry's partner chunk
/// (see `pair_bounds`): a bucket scan is one 16-bit comparison per slot over
/// six bytes, and only about one candidate in 400 that is no match is left
/// to be checked on all 256 bits.
///
/// Memory per hash: 16 slots of 6 bytes, the hash (32), its id (8) and
/// quality (1): 137 bytes, plus what the bucket lists hold in reserve as
/// they grow, plus 24 MiB of bucket headers once the first hash is added.
#[derive(Default)]
pub struct PdqTable {
    words: Vec<[u64; 4]>,
    /// Per entry: the caller's id.
    ids: Vec<u64>,
    /// Per entry: the hash's quality.
    qualities: Vec<u8>,
    /// `CHUNKS * BUCKETS` lists, chunk-major; none while the table is empty.
    buckets: Vec<Vec<Slot>>,
}

/// Where entry `entry` with words `w` goes in chunk `c`: its bucket and slot.
fn slot(w: &[u64; 4], c: usize, entry: u32) -> (usize, Slot) {
    (
        c * BUCKETS + chunk(w, c),
        [
            chunk(w, partner(c)) as u16,
            entry as u16,
            (entry >> 16) as u16,
        ],
    )
}

impl PdqTable {
    /// The bucket lists, made on first use.
    fn buckets_mut(&mut self) -> &mut Vec<Vec<Slot>> {
        if self.buckets.is_empty() {
            self.buckets = vec![Vec::new(); CHUNKS * BUCKETS];
        }
        &mut self.buckets
    }

    /// Adds a hash under `id`; searchable at once.
    pub fn add(&mut self, h: PdqHash, id: u64, quality: u8) {
        let entry = self.words.len() as u32;
        let w = words(&h);
        let buckets = self.buckets_mut();
        for c in 0..CHUNKS {
            let (at, s) = slot(&w, c, entry);
            buckets[at].push(s);
        }
        self.words.push(w);
        self.ids.push(id);
        self.qualities.push(quality);
    }

    /// Adds many hashes at once (a rebuild at start): every bucket is
    /// sized first, so none grows by copying or holds room in reserve, and
    /// filled chunk by chunk; about twice as fast as adding them one by one.
    pub fn extend(&mut self, hashes: &[(PdqHash, u64, u8)]) {
        self.buckets_mut();
        let first = self.words.len();
        self.words.extend(hashes.iter().map(|(h, _, _)| words(h)));
        self.ids.extend(hashes.iter().map(|(_, id, _)| *id));
        self.qualities.extend(hashes.iter().map(|(_, _, q)| *q));
        let mut counts = vec![0u32; CHUNKS * BUCKETS];
        for w in &self.words[first..] {
            for c in 0..CHUNKS {
                counts[c * BUCKETS + chunk(w, c)] += 1;
            }
        }
        for (bucket, n) in self.buckets.iter_mut().zip(counts) {
            bucket.reserve_exact(n as usize);
        }
        // Chunk by chunk: one chunk's bucket headers stay in cache.
        for c in 0..CHUNKS {
            for (i, w) in self.words[first..].iter().enumerate() {
                let (at, s) = slot(w, c, (first + i) as u32);
                self.buckets[at].push(s);
            }
        }
    }

    /// Hashes held.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Bytes held per hash, the bucket lists' reserve and headers included.
    pub fn bytes_per_entry(&self) -> f64 {
        let slots: usize = self.buckets.iter().map(|b| b.capacity()).sum();
        let bytes = slots * std::mem::size_of::<Slot>()
            + self.buckets.len() * std::mem::size_of::<Vec<Slot>>()
            + self.words.capacity() * 32
            + self.ids.capacity() * 8
            + self.qualities.capacity();
        bytes as f64 / self.len().max(1) as f64
    }

    /// Every entry within `max_distance` bits of `query` (at most 255),
    /// nearest first, ties by entry number; in phases, for the reason
    /// `PdqIndex::search` gives.
    pub fn search(&self, query: &PdqHash, max_distance: u32) -> Vec<Match> {
        if self.is_empty() {
            return Vec::new();
        }
        let q = words(query);
        let (radius, pair) = pair_bounds(max_distance);
        // (chunk, bucket, the chunk's own distance)
        let mut probes: Vec<(usize, usize, u32)> = Vec::with_capacity(CHUNKS * 17);
        for c in 0..CHUNKS {
            let own = chunk(&q, c);
            neighbours(own, radius, 0, &mut |b| {
                let at = c * BUCKETS + b;
                prefetch(self.buckets.get(at));
                probes.push((c, at, (own ^ b).count_ones()));
            });
        }
        let mut lists: Vec<(u16, u32, &[Slot])> = Vec::with_capacity(probes.len());
        for (c, at, d) in probes {
            let list = self.buckets[at].as_slice();
            if !list.is_empty() {
                // Every cache line of the list (ten slots a line).
                for line in list.iter().step_by(10) {
                    prefetch(Some(line));
                }
                lists.push((chunk(&q, partner(c)) as u16, pair - d, list));
            }
        }
        let mut candidates: Vec<u32> = Vec::new();
        for (qp, room, list) in lists {
            for s in list {
                if (s[0] ^ qp).count_ones() <= room {
                    let entry = u32::from(s[1]) | (u32::from(s[2]) << 16);
                    prefetch(self.words.get(entry as usize));
                    candidates.push(entry);
                }
            }
        }
        confirm(&q, &self.words, candidates, max_distance)
    }
}

impl NearSet for PdqTable {
    fn each_match(&self, query: &PdqHash, mut f: impl FnMut(u32, u64)) {
        for m in self.search(query, MATCH_THRESHOLD) {
            let e = m.entry as usize;
            match (self.ids.get(e), self.qualities.get(e)) {
                (Some(&v), Some(&q)) if q >= MIN_MATCH_QUALITY => f(m.distance, v),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_hashes(n: usize, seed: u64) -> Vec<PdqHash> {
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

    fn flip(h: &PdqHash, bits: &[usize]) -> PdqHash {
        let mut out = *h;
        for &k in bits {
            out.0[31 - k / 8] ^= 1 << (k % 8);
        }
        out
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
        // An index large enough that entry numbers leave only 14 bits of
        // the partner chunk as its filter: the same answers.
        let mut big = hashes.clone();
        big.extend(random_hashes(140_000, 17));
        let index = PdqIndex::build(&big);
        assert_eq!(index.filter_bits, 14);
        for max in [MATCH_THRESHOLD, 23, 40] {
            assert_eq!(
                index.search(&base, max),
                index.brute_force(&base, max),
                "max {max}"
            );
        }
    }

    #[test]
    fn entry_numbers_leave_the_filter_its_bits() {
        assert_eq!(filter_bits_for(0), 16);
        assert_eq!(filter_bits_for(1), 16);
        assert_eq!(filter_bits_for(1 << 16), 16);
        assert_eq!(filter_bits_for((1 << 16) + 1), 15);
        assert_eq!(filter_bits_for(10_000_000), 8);
        assert_eq!(filter_bits_for(100_000_000), 5);
        assert_eq!(filter_bits_for(1 << 32), 0);
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
