//! Exact near-neighbour search over PDQ hashes, for known-hash lists of tens
//! of millions: multi-index hashing over 16 chunks of 16 bits.
//!
//! Why it is exact: if two 256-bit hashes differ in at most `d` bits, then by
//! pigeonhole at least one of the 16 chunks differs in at most `d / 16` bits
//! (1 for the federation's threshold of 31). So probing, in each chunk's
//! table, every 16-bit value within that radius of the query's chunk finds
//! every hash within `d`; each candidate is then checked on all 256 bits.
//! The results are the same as a brute-force scan's, only faster.
//!
//! Layout (built once, read-only after): the hashes as four `u64` words
//! each, and per chunk a bucketed list of entry numbers (a counting sort:
//! 65,537 offsets and one `u32` per entry). About 96 bytes per entry.

use crate::hash::PdqHash;
use crate::pdq::{MATCH_THRESHOLD, MIN_MATCH_QUALITY};

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
    entries: Vec<Vec<u32>>,
    /// Optionally, beside each bucket entry, 128 other bits of its hash:
    /// their distance from the query is at most the whole distance, so a
    /// candidate whose 128 bits already differ by more is dropped without
    /// fetching its hash (a cache miss). Random hashes differ there by about
    /// 64 bits, true matches by at most the threshold: nearly every
    /// candidate that is no match is dropped. Costs 256 bytes per entry.
    filters: Option<Vec<Vec<[u64; 2]>>>,
}

/// The two words a chunk's filter holds: those other than the chunk's own.
fn filter_words(c: usize) -> (usize, usize) {
    let own = c / 4;
    ((own + 1) % 4, (own + 2) % 4)
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
        Self::build_with(hashes, false)
    }

    /// Builds the index, with candidate filters beside the buckets when
    /// `filters` (faster searches at about 3.5 times the memory).
    pub fn build_with(hashes: &[PdqHash], filters: bool) -> PdqIndex {
        let words: Vec<[u64; 4]> = hashes.iter().map(words).collect();
        let mut offsets = Vec::with_capacity(CHUNKS);
        let mut entries = Vec::with_capacity(CHUNKS);
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
                ids[next[b] as usize] = i as u32;
                next[b] += 1;
            }
            offsets.push(off);
            entries.push(ids);
        }
        let filters = filters.then(|| {
            entries
                .iter()
                .enumerate()
                .map(|(c, ids)| {
                    let (a, b) = filter_words(c);
                    ids.iter()
                        .map(|&id| {
                            let w = &words[id as usize];
                            [w[a], w[b]]
                        })
                        .collect()
                })
                .collect()
        });
        PdqIndex {
            words,
            offsets,
            entries,
            filters,
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
        let filters = if self.filters.is_some() {
            CHUNKS * 16
        } else {
            0
        };
        let per = (32 + CHUNKS * 4 + filters) as f64;
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
        let radius = max_distance / CHUNKS as u32;
        let mut probes: Vec<(usize, usize)> = Vec::with_capacity(CHUNKS * 17);
        for c in 0..CHUNKS {
            let off = &self.offsets[c];
            neighbours(chunk(&q, c), radius, 0, &mut |b| {
                prefetch(off.get(b));
                probes.push((c, b));
            });
        }
        let mut ranges: Vec<(usize, usize, usize)> = Vec::with_capacity(probes.len());
        for (c, b) in probes {
            let off = &self.offsets[c];
            let (start, end) = (off[b] as usize, off[b + 1] as usize);
            if start < end {
                prefetch(self.entries[c].get(start));
                if let Some(f) = &self.filters {
                    prefetch(f[c].get(start));
                }
                ranges.push((c, start, end));
            }
        }
        let mut candidates: Vec<u32> = Vec::new();
        for (c, start, end) in ranges {
            let ids = &self.entries[c][start..end];
            match &self.filters {
                Some(f) => {
                    let (a, b) = filter_words(c);
                    for (&id, w) in ids.iter().zip(&f[c][start..end]) {
                        let partial = (w[0] ^ q[a]).count_ones() + (w[1] ^ q[b]).count_ones();
                        if partial <= max_distance {
                            prefetch(self.words.get(id as usize));
                            candidates.push(id);
                        }
                    }
                }
                None => {
                    for &id in ids {
                        prefetch(self.words.get(id as usize));
                        candidates.push(id);
                    }
                }
            }
        }
        let mut out = Vec::new();
        for id in candidates {
            let d = distance(&q, &self.words[id as usize]);
            if d <= max_distance {
                out.push(Match {
                    distance: d,
                    entry: id,
                });
            }
        }
        out.sort_unstable();
        out.dedup();
        out
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

/// A growing set of PDQ hashes for near matching (list entries, cases).
/// Why runs: cases grow with every report and are searched before each
/// addition, so neither one index rebuilt per addition nor a long list
/// scanned per search will do. New hashes are scanned directly until there
/// are 1024; then they become a run, and runs of similar size are merged
/// (the logarithmic method): a search looks in at most log2(n / 1024) runs,
/// and each hash is rebuilt into an index O(log n) times overall.
#[derive(Default)]
pub struct PdqSet {
    /// Largest first; each at least twice the size of the next.
    runs: Vec<Run>,
    recent: Vec<(PdqHash, u64, u8)>,
    /// Runs built with candidate filters.
    filters: bool,
}

impl PdqSet {
    /// A set whose runs carry candidate filters: searches several times
    /// faster, about 350 bytes per hash instead of 100. For sets searched
    /// for every addition (cases), not for the largest lists.
    pub fn with_filters() -> PdqSet {
        PdqSet {
            filters: true,
            ..PdqSet::default()
        }
    }

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
                index: PdqIndex::build_with(&hashes, self.filters),
                hashes,
                meta,
            });
        }
    }

    /// The nearest live match of acceptable quality (distance <= 31, both
    /// qualities >= 50: the caller checks the query's), ties to the lowest id.
    pub fn best(&self, query: &PdqHash, live: impl Fn(u64) -> bool) -> Option<(u64, u32)> {
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
    pub fn matches(&self, query: &PdqHash) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        self.each_match(query, |d, v| out.push((v, d)));
        out
    }

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
    fn filtered_search_equals_brute_force() {
        let mut hashes = random_hashes(5000, 43);
        let base = hashes[11];
        for d in 0..=40usize {
            let bits: Vec<usize> = (0..d).map(|i| (i * 53) % 256).collect();
            hashes.push(flip(&base, &bits));
        }
        let index = PdqIndex::build_with(&hashes, true);
        for q in [base, hashes[200], flip(&base, &[7, 70, 170, 250])] {
            for max in [0, 16, MATCH_THRESHOLD, 47] {
                assert_eq!(
                    index.search(&q, max),
                    index.brute_force(&q, max),
                    "max {max}"
                );
            }
        }
    }

    #[test]
    fn a_growing_set_finds_what_brute_force_finds() {
        let hashes = random_hashes(6000, 7);
        for mut set in [PdqSet::default(), PdqSet::with_filters()] {
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
