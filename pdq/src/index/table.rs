//! `PdqTable`: the multi-index table that takes additions in place.
//!
//! Layout, per chunk (16 of them): 65,536 bucket heads (where the bucket
//! starts in the chunk's arena, how many slots it holds, how many more fit
//! before it must move), and the arena: arrays side by side, one position
//! per slot. `partners` holds the slot's entry's partner chunk
//! (`pair_bounds`), the only array a bucket scan reads. A bucket's slots are
//! contiguous, so a scan reads its partners as one run of `u16`s (sixteen a
//! vector step) and touches entry numbers only for the few slots that pass.
//!
//! Only the even chunks keep entry numbers (`low`: the low 24 bits; `high`:
//! the top 8, kept once the table holds more than 2^24 entries). Why that
//! is enough: a slot that passes in odd chunk `c`'s bucket `b` with partner
//! value `p` stands for the entries whose chunks `c` and `c - 1` are `b` and
//! `p`, and those are exactly the slots of chunk `c - 1`'s bucket `p` whose
//! partner value is `b`: one more bucket scan, for the few slots that pass
//! (about 16 a query), instead of 3 bytes on every odd slot. So a hash
//! takes 8 slots of 5 bytes and 8 of 2: 56 bytes, against 96 plus a 24-byte
//! list header per bucket when every bucket was a `Vec` of 6-byte slots.
//!
//! Growth: a full bucket moves to the arena's end with room for a quarter
//! more; what it leaves is garbage until the arena, itself full, is laid
//! out again (compacted), every bucket with an eighth to spare. Each chunk
//! compacts on its own, so one addition copies at most one chunk's arena
//! (1/16 of the table, about 10 MB at 3 million hashes): no growth ever
//! copies the whole table at once.

#![allow(
    clippy::indexing_slicing,
    reason = "bucket heads indexed by 16-bit chunks; arena positions from heads that the arena was laid out by"
)]

mod batch;

use super::scan::Scan;
use super::{
    chunk, confirm, neighbours, pair_bounds, partner, prefetch, words, Match, NearSet, BUCKETS,
    CHUNKS,
};
use crate::hash::PdqHash;
use crate::hasher::{MATCH_THRESHOLD, MIN_MATCH_QUALITY};

/// Bits of an entry number kept in `low`; the rest (8 bits) go to `high`.
/// Lower under test so that small tables take the wide path too (tables
/// under test then stay below 2^20 entries).
const LOW_BITS: u32 = if cfg!(test) { 12 } else { 24 };
const LOW_MASK: u32 = (1 << LOW_BITS) - 1;

/// Which entry numbers a chunk keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Numbers {
    /// None: an odd chunk (see the module doc).
    None,
    /// The low `LOW_BITS`.
    Low,
    /// All 32 bits, `low` and `high`.
    Wide,
}

/// The entry numbers chunk `c` keeps (see the module doc) in a table that
/// is `wide` or not.
fn numbers_for(c: usize, wide: bool) -> Numbers {
    if c % 2 == 1 {
        Numbers::None
    } else if wide {
        Numbers::Wide
    } else {
        Numbers::Low
    }
}

/// Where a bucket lies in its chunk's arena.
#[derive(Debug, Clone, Copy, Default)]
struct Head {
    start: u32,
    len: u32,
}

/// One chunk's buckets and arena (see the module doc).
#[derive(Default)]
struct ChunkTable {
    /// Per bucket; empty until the first hash.
    heads: Vec<Head>,
    /// Per bucket: slots free after its last, at most `u16::MAX`.
    spare: Vec<u16>,
    partners: Vec<u16>,
    /// Empty in odd chunks.
    low: Vec<[u8; 3]>,
    /// Empty in odd chunks and while every entry number fits `LOW_BITS`.
    high: Vec<u8>,
}

/// Room a moving bucket of `len` slots takes: a quarter more, at least 4.
fn moved_capacity(len: usize) -> usize {
    len + (len / 4).max(4)
}

/// Room a bucket of `len` slots keeps when the arena is laid out again: an
/// eighth more (none for an empty one), so that a compaction is followed by
/// many additions that move nothing.
fn compacted_capacity(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        len + len / 8 + 1
    }
}

fn low_of(entry: u32) -> [u8; 3] {
    let b = (entry & LOW_MASK).to_le_bytes();
    [b[0], b[1], b[2]]
}

impl ChunkTable {
    fn ensure_heads(&mut self) {
        if self.heads.is_empty() {
            self.heads = vec![Head::default(); BUCKETS];
            self.spare = vec![0; BUCKETS];
        }
    }

    /// The entry number at arena position `at`.
    #[inline]
    fn entry(&self, at: usize, wide: bool) -> Option<u32> {
        // `wide` is the table's: `Numbers::Wide` for every even chunk.
        let l = self.low.get(at)?;
        let low = u32::from_le_bytes([l[0], l[1], l[2], 0]);
        if wide {
            Some(low | (u32::from(*self.high.get(at)?) << LOW_BITS))
        } else {
            Some(low)
        }
    }

    /// Starts keeping entry numbers' top bits (zero for every slot so far).
    fn widen(&mut self) {
        let mut high = Vec::with_capacity(self.partners.capacity());
        high.resize(self.partners.len(), 0);
        self.high = high;
    }

    /// Appends a slot to bucket `b`, moving the bucket first if it is full.
    fn push(&mut self, b: usize, partner: u16, entry: u32, n: Numbers) {
        self.ensure_heads();
        if self.spare[b] == 0 {
            self.make_room(b, n);
        }
        let h = &mut self.heads[b];
        let at = (h.start + h.len) as usize;
        h.len += 1;
        self.spare[b] -= 1;
        self.partners[at] = partner;
        if n != Numbers::None {
            self.low[at] = low_of(entry);
        }
        if n == Numbers::Wide {
            self.high[at] = (entry >> LOW_BITS) as u8;
        }
    }

    /// Moves full bucket `b` to the arena's end with room to grow, or lays
    /// the whole arena out again if its end has no room left.
    fn make_room(&mut self, b: usize, n: Numbers) {
        let h = self.heads[b];
        let len = h.len as usize;
        let cap = moved_capacity(len);
        let end = self.partners.len();
        if end + cap > self.partners.capacity() || end + cap > u32::MAX as usize {
            self.compact(b, cap, n);
            return;
        }
        let old = h.start as usize..h.start as usize + len;
        self.partners.extend_from_within(old.clone());
        self.partners.resize(end + cap, 0);
        if n != Numbers::None {
            self.low.extend_from_within(old.clone());
            self.low.resize(end + cap, [0; 3]);
        }
        if n == Numbers::Wide {
            self.high.extend_from_within(old);
            self.high.resize(end + cap, 0);
        }
        self.heads[b].start = end as u32;
        self.spare[b] = (cap - len).min(usize::from(u16::MAX)) as u16;
    }

    /// Lays every bucket out again in bucket order, garbage dropped, bucket
    /// `grow` with room for `cap` slots, an eighth of the total to spare at
    /// the end for buckets that move next.
    fn compact(&mut self, grow: usize, cap: usize, n: Numbers) {
        let room = |bk: usize, h: &Head, spare: u16| {
            if bk == grow {
                cap
            } else {
                (h.len as usize + usize::from(spare)).max(compacted_capacity(h.len as usize))
            }
        };
        let total: usize = self
            .heads
            .iter()
            .zip(&self.spare)
            .enumerate()
            .map(|(bk, (h, &s))| room(bk, h, s))
            .sum();
        let capacity = total + total / 8;
        let mut partners = Vec::with_capacity(capacity);
        let mut low = Vec::with_capacity(if n == Numbers::None { 0 } else { capacity });
        let mut high = Vec::with_capacity(if n == Numbers::Wide { capacity } else { 0 });
        for bk in 0..BUCKETS {
            let h = self.heads[bk];
            let r = room(bk, &h, self.spare[bk]);
            let start = partners.len();
            let old = h.start as usize..h.start as usize + h.len as usize;
            partners.extend_from_slice(&self.partners[old.clone()]);
            partners.resize(start + r, 0);
            if n != Numbers::None {
                low.extend_from_slice(&self.low[old.clone()]);
                low.resize(start + r, [0; 3]);
            }
            if n == Numbers::Wide {
                high.extend_from_slice(&self.high[old]);
                high.resize(start + r, 0);
            }
            self.heads[bk].start = start as u32;
            self.spare[bk] = (r - h.len as usize).min(usize::from(u16::MAX)) as u16;
        }
        self.partners = partners;
        self.low = low;
        self.high = high;
    }

    /// Adds entries `first..` (their words `new`) to this chunk `c`: every
    /// bucket laid out again at its new size, no room to spare in it (a
    /// start adds everything at once; additions after it move only the
    /// buckets they fill).
    fn extend(&mut self, c: usize, new: &[[u64; 4]], first: u32, n: Numbers) {
        self.ensure_heads();
        let mut counts = vec![0u32; BUCKETS];
        for w in new {
            counts[chunk(w, c)] += 1;
        }
        let total: usize = self
            .heads
            .iter()
            .zip(&counts)
            .map(|(h, &n)| h.len as usize + n as usize)
            .sum();
        // A little room at the end (1/64), so that the first additions
        // after a start move their buckets there instead of each chunk
        // laying out its whole arena again on the very first one.
        let capacity = total + total / 64;
        let mut partners: Vec<u16> = zeros(true, total, capacity);
        let mut low: Vec<[u8; 3]> = zeros(n != Numbers::None, total, capacity);
        let mut high: Vec<u8> = zeros(n == Numbers::Wide, total, capacity);
        let mut at = 0usize;
        for (bk, added) in counts.iter().enumerate() {
            let h = self.heads[bk];
            let old = h.start as usize..h.start as usize + h.len as usize;
            let len = h.len as usize;
            partners[at..at + len].copy_from_slice(&self.partners[old.clone()]);
            if n != Numbers::None {
                low[at..at + len].copy_from_slice(&self.low[old.clone()]);
            }
            if n == Numbers::Wide && !self.high.is_empty() {
                high[at..at + len].copy_from_slice(&self.high[old]);
            }
            self.heads[bk].start = at as u32;
            self.spare[bk] = 0;
            at += len + *added as usize;
        }
        for (i, w) in new.iter().enumerate() {
            let entry = first + i as u32;
            let h = &mut self.heads[chunk(w, c)];
            let pos = (h.start + h.len) as usize;
            h.len += 1;
            partners[pos] = chunk(w, partner(c)) as u16;
            if n != Numbers::None {
                low[pos] = low_of(entry);
            }
            if n == Numbers::Wide {
                high[pos] = (entry >> LOW_BITS) as u8;
            }
        }
        self.partners = partners;
        self.low = low;
        self.high = high;
    }

    fn bytes(&self) -> usize {
        self.heads.capacity() * std::mem::size_of::<Head>()
            + self.spare.capacity() * 2
            + self.partners.capacity() * 2
            + self.low.capacity() * 3
            + self.high.capacity()
    }
}

/// `len` zeros with room for `capacity`, or nothing if not `kept`.
fn zeros<T: Clone + Default>(kept: bool, len: usize, capacity: usize) -> Vec<T> {
    if !kept {
        return Vec::new();
    }
    let mut v = Vec::with_capacity(capacity);
    v.resize(len, T::default());
    v
}

/// Asks for every cache line of a bucket's partner run: 32 partners a line.
#[inline]
fn prefetch_run(partners: &[u16], h: Head) {
    let (s, e) = (h.start as usize, (h.start + h.len) as usize);
    let mut at = s;
    while at < e {
        prefetch(partners.get(at));
        at += 32;
    }
    prefetch(partners.get(e.saturating_sub(1)));
}

/// The caller's ids: 4 bytes each while every one fits, 8 after.
enum Ids {
    Narrow(Vec<u32>),
    Wide(Vec<u64>),
}

impl Default for Ids {
    fn default() -> Self {
        Ids::Narrow(Vec::new())
    }
}

impl Ids {
    fn push(&mut self, id: u64) {
        match self {
            Ids::Narrow(v) => match u32::try_from(id) {
                Ok(x) => v.push(x),
                Err(_) => {
                    let mut w: Vec<u64> = v.iter().map(|&x| u64::from(x)).collect();
                    w.push(id);
                    *self = Ids::Wide(w);
                }
            },
            Ids::Wide(v) => v.push(id),
        }
    }

    fn get(&self, e: usize) -> Option<u64> {
        match self {
            Ids::Narrow(v) => v.get(e).map(|&x| u64::from(x)),
            Ids::Wide(v) => v.get(e).copied(),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Ids::Narrow(v) => v.capacity() * 4,
            Ids::Wide(v) => v.capacity() * 8,
        }
    }
}

/// A PDQ index that takes additions in place: multi-index hashing over 16
/// chunks of 16 bits like `PdqIndex`, but each bucket can grow where it
/// lies, so a hash is searchable the moment it is added and the table is
/// never rebuilt.
///
/// Why: cases are searched before every addition, at ingest. A set of built
/// runs (`PdqSet`) must search each of its log2(n / 1024) runs and now and
/// then rebuild half of itself while ingest waits; one table probes its 272
/// buckets whatever its size. Each slot carries the entry's partner chunk
/// (see `pair_bounds`), scanned sixteen slots a step where the processor
/// has AVX2: only about one candidate in 400 that is no match is left to be
/// checked on all 256 bits.
///
/// Memory per hash (see the module doc): 8 slots of 5 bytes and 8 of 2,
/// the hash (32), its id (4 while ids fit 32 bits, else 8) and a quality
/// bit: about 92 bytes, plus room buckets keep to grow (none after
/// `extend`), plus 10 MiB of bucket heads once the first hash is added. At
/// most 2^32 - 1 hashes.
#[derive(Default)]
pub struct PdqTable {
    words: Vec<[u64; 4]>,
    /// Per entry: the caller's id.
    ids: Ids,
    /// Per entry, a bit: quality at least `MIN_MATCH_QUALITY` (the only
    /// question ever asked of it).
    good: Vec<u64>,
    /// `CHUNKS` of them; none while the table is empty.
    chunks: Vec<ChunkTable>,
}

impl PdqTable {
    fn chunks_mut(&mut self) -> &mut Vec<ChunkTable> {
        if self.chunks.is_empty() {
            self.chunks = (0..CHUNKS).map(|_| ChunkTable::default()).collect();
        }
        &mut self.chunks
    }

    /// Whether entry numbers need their top bits kept.
    fn wide(&self) -> bool {
        self.words.len() > (1usize << LOW_BITS)
    }

    /// Records an entry's id and quality and widens the arenas when its
    /// number first needs more than `LOW_BITS`.
    fn push_entry(&mut self, w: [u64; 4], id: u64, quality: u8) {
        let e = self.words.len();
        self.words.push(w);
        self.ids.push(id);
        if e.is_multiple_of(64) {
            self.good.push(0);
        }
        if quality >= MIN_MATCH_QUALITY {
            if let Some(g) = self.good.last_mut() {
                *g |= 1 << (e % 64);
            }
        }
        if self.wide() {
            for t in self.chunks_mut().iter_mut().step_by(2) {
                if t.high.len() != t.partners.len() {
                    t.widen();
                }
            }
        }
    }

    /// Adds a hash under `id`; searchable at once.
    pub fn add(&mut self, h: PdqHash, id: u64, quality: u8) {
        let entry = self.words.len() as u32;
        let w = words(&h);
        self.push_entry(w, id, quality);
        let wide = self.wide();
        for (c, t) in self.chunks_mut().iter_mut().enumerate() {
            let n = numbers_for(c, wide);
            t.push(chunk(&w, c), chunk(&w, partner(c)) as u16, entry, n);
        }
    }

    /// Adds many hashes at once (a rebuild at start): every bucket is laid
    /// out at its final size, chunk by chunk, with no room to spare; about
    /// twice as fast as adding them one by one.
    pub fn extend(&mut self, hashes: &[(PdqHash, u64, u8)]) {
        if hashes.is_empty() {
            return;
        }
        let first = self.words.len();
        self.words.reserve_exact(hashes.len());
        for (h, id, q) in hashes {
            self.push_entry(words(h), *id, *q);
        }
        let wide = self.wide();
        let words = std::mem::take(&mut self.words);
        for (c, t) in self.chunks_mut().iter_mut().enumerate() {
            t.extend(c, &words[first..], first as u32, numbers_for(c, wide));
        }
        self.words = words;
    }

    /// Hashes held.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Bytes held per hash: heads, arenas with their garbage and spare
    /// room, hashes, ids, quality bits.
    pub fn bytes_per_entry(&self) -> f64 {
        let bytes = self.chunks.iter().map(ChunkTable::bytes).sum::<usize>()
            + self.words.capacity() * 32
            + self.ids.bytes()
            + self.good.capacity() * 8;
        bytes as f64 / self.len().max(1) as f64
    }

    /// Every entry within `max_distance` bits of `query` (at most 255),
    /// nearest first, ties by entry number; in phases, for the reason
    /// `PdqIndex::search` gives.
    pub fn search(&self, query: &PdqHash, max_distance: u32) -> Vec<Match> {
        self.search_with(query, max_distance, Scan::detect())
    }

    /// `search` with the bucket scan given (the tests run every form).
    fn search_with(&self, query: &PdqHash, max_distance: u32, scan: Scan) -> Vec<Match> {
        if self.is_empty() || self.chunks.len() != CHUNKS {
            return Vec::new();
        }
        let q = words(query);
        let (radius, pair) = pair_bounds(max_distance);
        let wide = self.wide();
        // Phase 1: the heads, (chunk, bucket, room).
        let mut probes: Vec<(usize, usize, u32)> = Vec::with_capacity(CHUNKS * 17);
        for (c, t) in self.chunks.iter().enumerate() {
            let own = chunk(&q, c);
            neighbours(own, radius, 0, &mut |b| {
                prefetch(t.heads.get(b));
                probes.push((c, b, pair - (own ^ b).count_ones()));
            });
        }
        // Phase 2: the buckets' partner runs, (chunk, bucket, head, room).
        let mut runs: Vec<(usize, usize, Head, u32)> = Vec::with_capacity(probes.len());
        for (c, b, room) in probes {
            let t = &self.chunks[c];
            let h = t.heads[b];
            if h.len > 0 {
                prefetch_run(&t.partners, h);
                runs.push((c, b, h, room));
            }
        }
        // Phase 3: the scan. Slots that pass in an even chunk, (chunk,
        // position); in an odd one, where their entry numbers are: (even
        // chunk, its bucket, the partner value wanted there).
        let mut hits: Vec<(usize, usize)> = Vec::new();
        let mut elsewhere: Vec<(usize, u16, u16)> = Vec::new();
        for (c, b, h, room) in runs {
            let t = &self.chunks[c];
            let qp = chunk(&q, partner(c)) as u16;
            if c.is_multiple_of(2) {
                scan.run(
                    &t.partners,
                    h.start as usize,
                    h.len as usize,
                    qp,
                    room,
                    &mut |i| {
                        prefetch(t.low.get(i));
                        if wide {
                            prefetch(t.high.get(i));
                        }
                        hits.push((c, i));
                    },
                );
            } else {
                let even = &self.chunks[partner(c)];
                scan.run(
                    &t.partners,
                    h.start as usize,
                    h.len as usize,
                    qp,
                    room,
                    &mut |i| {
                        let p = t.partners[i];
                        prefetch(even.heads.get(usize::from(p)));
                        elsewhere.push((partner(c), p, b as u16));
                    },
                );
            }
        }
        // Phase 3b: odd chunks' slots, found again in their even partner:
        // each (bucket, value) once, however many entries share them.
        elsewhere.sort_unstable();
        elsewhere.dedup();
        let mut runs: Vec<(usize, Head, u16)> = Vec::with_capacity(elsewhere.len());
        for (c, p, b) in elsewhere {
            let t = &self.chunks[c];
            let h = t.heads[usize::from(p)];
            if h.len > 0 {
                prefetch_run(&t.partners, h);
                runs.push((c, h, b));
            }
        }
        for (c, h, b) in runs {
            let t = &self.chunks[c];
            scan.run(
                &t.partners,
                h.start as usize,
                h.len as usize,
                b,
                0,
                &mut |i| {
                    prefetch(t.low.get(i));
                    if wide {
                        prefetch(t.high.get(i));
                    }
                    hits.push((c, i));
                },
            );
        }
        // Phase 4: the entry numbers, then their hashes.
        let mut candidates: Vec<u32> = Vec::with_capacity(hits.len());
        for (c, at) in hits {
            if let Some(e) = self.chunks[c].entry(at, wide) {
                prefetch(self.words.get(e as usize));
                candidates.push(e);
            }
        }
        confirm(
            &q,
            |e| self.words.get(e as usize).copied(),
            candidates,
            max_distance,
        )
    }

    fn good(&self, e: usize) -> bool {
        self.good
            .get(e / 64)
            .is_some_and(|g| g >> (e % 64) & 1 == 1)
    }
}

impl NearSet for PdqTable {
    fn each_match(&self, query: &PdqHash, mut f: impl FnMut(u32, u64)) {
        for m in self.search(query, MATCH_THRESHOLD) {
            let e = m.entry as usize;
            if let (true, Some(v)) = (self.good(e), self.ids.get(e)) {
                f(m.distance, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{flip, random_hashes, scans};
    use super::super::PdqIndex;
    use super::*;

    /// Random hashes with near copies of a few of them at every distance
    /// 0..=40, the flipped bits spread over the chunks.
    fn planted(n: usize, seed: u64) -> (Vec<PdqHash>, Vec<PdqHash>) {
        let mut hashes = random_hashes(n, seed);
        let bases = [hashes[3], hashes[n / 2], hashes[n - 1]];
        for (k, base) in bases.iter().enumerate() {
            for d in 0..=40usize {
                let bits: Vec<usize> = (0..d).map(|i| (i * (37 + 2 * k) + k) % 256).collect();
                hashes.push(flip(base, &bits));
            }
        }
        let mut queries: Vec<PdqHash> = bases.to_vec();
        queries.push(flip(&bases[0], &[3, 100, 200]));
        queries.push(flip(
            &bases[1],
            &(0..16).map(|i| i * 16).collect::<Vec<_>>(),
        ));
        queries.push(random_hashes(1, seed ^ 1)[0]);
        (hashes, queries)
    }

    #[test]
    fn every_scan_and_every_way_of_filling_equals_brute_force() {
        // More entries than `LOW_BITS` numbers (under test), so the top bits
        // of entry numbers are kept and read.
        let (hashes, queries) = planted(9000, 5);
        let reference = PdqIndex::build(&hashes);
        let mut grown = PdqTable::default();
        let (first, rest) = hashes.split_at(2000);
        let tag = |s: &[PdqHash], from: usize| -> Vec<(PdqHash, u64, u8)> {
            s.iter()
                .enumerate()
                .map(|(i, h)| (*h, (from + i) as u64, 90))
                .collect()
        };
        grown.extend(&tag(first, 0));
        for (i, h) in rest.iter().enumerate() {
            grown.add(*h, (2000 + i) as u64, 90);
        }
        let mut at_once = PdqTable::default();
        at_once.extend(&tag(&hashes, 0));
        // An extend on a table that already holds hashes.
        let mut twice = PdqTable::default();
        twice.extend(&tag(&hashes[..5000], 0));
        twice.add(hashes[5000], 5000, 90);
        twice.extend(&tag(&hashes[5001..], 5001));
        for table in [&grown, &at_once, &twice] {
            assert_eq!(table.len(), hashes.len());
            for max in [0, 7, 8, 16, MATCH_THRESHOLD, 40, 47] {
                let want: Vec<Vec<Match>> = queries
                    .iter()
                    .map(|q| reference.brute_force(q, max))
                    .collect();
                assert!(want.iter().any(|w| w.len() > 1) || max < 8);
                for (q, w) in queries.iter().zip(&want) {
                    for scan in scans() {
                        assert_eq!(&table.search_with(q, max, scan), w, "{scan:?} {max}");
                    }
                    assert_eq!(&table.search(q, max), w);
                }
            }
            // The nearest live one, ties to the lowest id (ids are the
            // entry numbers here).
            for q in &queries {
                let want = reference
                    .brute_force(q, MATCH_THRESHOLD)
                    .into_iter()
                    .filter(|m| m.entry % 3 != 0)
                    .map(|m| (m.distance, u64::from(m.entry)))
                    .min()
                    .map(|(d, v)| (v, d));
                assert_eq!(table.best(q, |v| v % 3 != 0), want);
            }
        }
        for (c, t) in grown.chunks.iter().enumerate() {
            let kept = if c.is_multiple_of(2) {
                t.partners.len()
            } else {
                0
            };
            assert_eq!((t.low.len(), t.high.len()), (kept, kept), "chunk {c}");
        }
    }

    #[test]
    fn buckets_that_grow_move_and_the_arena_is_compacted() {
        // All copies of one hash (and its near copies): the same buckets
        // grow by one per addition, move again and again, and the arenas
        // fill with garbage and are laid out anew.
        let base = random_hashes(1, 77)[0];
        let mut table = PdqTable::default();
        let mut all = Vec::new();
        for i in 0..6000usize {
            let h = if i % 3 == 0 {
                base
            } else {
                flip(&base, &[i % 256, (i * 7) % 256])
            };
            all.push(h);
            table.add(h, i as u64, 90);
        }
        let reference = PdqIndex::build(&all);
        for max in [0, 2, MATCH_THRESHOLD] {
            for scan in scans() {
                assert_eq!(
                    table.search_with(&base, max, scan),
                    reference.brute_force(&base, max)
                );
            }
        }
        // Garbage never outgrows what is held several times over.
        let arena: usize = table.chunks.iter().map(|t| t.partners.len()).sum();
        assert!(
            arena < 4 * 16 * all.len(),
            "{arena} slots for {}",
            all.len()
        );
    }

    #[test]
    fn ids_beyond_32_bits_and_low_quality() {
        let hashes = random_hashes(100, 3);
        let mut table = PdqTable::default();
        for (i, h) in hashes.iter().enumerate() {
            let id = if i == 50 { u64::MAX - 1 } else { i as u64 };
            table.add(*h, id, if i == 10 { 49 } else { 50 });
        }
        assert_eq!(table.best(&hashes[50], |_| true), Some((u64::MAX - 1, 0)));
        assert_eq!(table.best(&hashes[51], |_| true), Some((51, 0)));
        assert_eq!(table.best(&hashes[10], |_| true), None);
        assert_eq!(table.search(&hashes[10], 0).len(), 1);
    }
}
