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
        PdqIndex {
            words,
            offsets,
            entries,
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
    pub fn search(&self, query: &PdqHash, max_distance: u32) -> Vec<Match> {
        let q = words(query);
        let radius = max_distance / CHUNKS as u32;
        let mut out = Vec::new();
        for c in 0..CHUNKS {
            let (off, ids) = (&self.offsets[c], &self.entries[c]);
            neighbours(chunk(&q, c), radius, 0, &mut |b| {
                for &id in &ids[off[b] as usize..off[b + 1] as usize] {
                    let d = distance(&q, &self.words[id as usize]);
                    if d <= max_distance {
                        out.push(Match {
                            distance: d,
                            entry: id,
                        });
                    }
                }
            });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdq::MATCH_THRESHOLD;

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
}
