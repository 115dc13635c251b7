//! Batch search of a `PdqTable`: thousands of queries at once, the table
//! read in memory order instead of at random.
//!
//! Why: one query probes 272 buckets spread over 16 arenas of megabytes,
//! so a search is some hundreds of cache and TLB misses, overlapped only
//! as far as one query's phases allow. A batch makes its probes chunk by
//! chunk, sorts them by bucket (a counting sort on the bucket's top byte:
//! a window of 256 buckets, a few tens of kilobytes of heads and arena,
//! stays in cache while its probes are scanned), and walks each chunk's
//! heads and arena from start to end, asking for the buckets a few probes
//! ahead. A bucket that several queries probe is read once. The steps are
//! `PdqTable::search`'s (see the module doc of `table`), only batched:
//! per pair of chunks, the even chunk's probes give slots whose entry
//! numbers are read; the odd chunk's give (bucket, value) pairs of the even
//! chunk, sorted, each scanned once for all the queries that want it; the
//! pair's candidates are then confirmed on all 256 bits.
//!
//! Memory: one chunk's probes at a time, 8 bytes each (17 a query at the
//! federation's threshold: 1.4 MB for 10,000 queries), and the pair's
//! candidates; the bucket scans go to `Scan::run_all` 64 at a time.

use super::super::scan::{Probe, Scan};
use super::super::{
    chunk, distance, neighbours, pair_bounds, partner, prefetch, words, Match, CHUNKS,
};
use super::{prefetch_run, ChunkTable, PdqTable};
use crate::hash::PdqHash;
use crate::hasher::MATCH_THRESHOLD;

/// Queries searched together at most: a probe keeps its query's place in
/// the pass in 16 bits. Lower under test, so that tests cross passes.
const PASS: usize = if cfg!(test) { 37 } else { 1 << 16 };

/// Probes prefetched ahead of the one being scanned: its bucket's head is
/// asked for `2 * AHEAD` probes ahead, its partner run `AHEAD` ahead (once
/// the head is there to say where the run lies).
const AHEAD: usize = 16;

/// Bucket scans handed to `Scan::run_all` at a time.
const BLOCK: usize = 64;

/// Batches smaller than this are searched one query at a time: too few
/// probes in a chunk for the walk's prefetches to run ahead of it.
const SMALL: usize = 4;

/// A probe: `bucket << 48 | value << 32 | room << 16 | query`: the bucket,
/// the query's partner chunk and the bits a slot's may differ from it by
/// (`pair_bounds`), the query's place in the pass.
type Key = u64;

fn bucket_of(p: Key) -> usize {
    (p >> 48) as usize
}

/// Calls `f` with every probe of chunk `c` for the pass `qs` (its queries'
/// words).
#[inline(always)]
fn each_probe(qs: &[[u64; 4]], c: usize, radius: u32, pair: u32, f: &mut impl FnMut(Key)) {
    for (i, q) in qs.iter().enumerate() {
        let own = chunk(q, c);
        let key = (chunk(q, partner(c)) as u64) << 32 | i as u64;
        if radius == 1 {
            // The federation's threshold: the own bucket and one bit off.
            f((own as u64) << 48 | u64::from(pair) << 16 | key);
            let near = u64::from(pair - 1) << 16 | key;
            for bit in 0..16 {
                f(((own ^ 1 << bit) as u64) << 48 | near);
            }
        } else {
            neighbours(own, radius, 0, &mut |b| {
                let room = u64::from(pair - (own ^ b).count_ones());
                f((b as u64) << 48 | room << 16 | key);
            });
        }
    }
}

/// Chunk `c`'s probes of the pass `qs` into `out`, by the top byte of
/// their bucket (in query order within it): a counting sort, the probes
/// made twice (to count, then to place) instead of stored unsorted.
fn sorted_probes(qs: &[[u64; 4]], c: usize, radius: u32, pair: u32, out: &mut Vec<Key>) {
    let mut at = [0usize; 256];
    let mut n = 0;
    each_probe(qs, c, radius, pair, &mut |p| {
        if let Some(x) = at.get_mut((p >> 56) as usize) {
            *x += 1;
        }
        n += 1;
    });
    let mut sum = 0;
    for x in at.iter_mut() {
        let here = *x;
        *x = sum;
        sum += here;
    }
    out.clear();
    out.resize(n, 0);
    each_probe(qs, c, radius, pair, &mut |p| {
        if let Some(x) = at.get_mut((p >> 56) as usize) {
            if let Some(slot) = out.get_mut(*x) {
                *slot = p;
            }
            *x += 1;
        }
    });
}

/// Sorts `v` by the bytes of each value at `shifts` (least significant
/// first), stably: a radix sort, linear in the values. `tmp` is scratch.
fn radix_sort(v: &mut Vec<u64>, tmp: &mut Vec<u64>, shifts: &[u32]) {
    for &s in shifts {
        let byte = |x: u64| usize::from((x >> s) as u8);
        let mut at = [0usize; 256];
        for &x in v.iter() {
            if let Some(n) = at.get_mut(byte(x)) {
                *n += 1;
            }
        }
        if at.contains(&v.len()) {
            // One value of this byte throughout: already in order.
            continue;
        }
        let mut sum = 0;
        for n in at.iter_mut() {
            let here = *n;
            *n = sum;
            sum += here;
        }
        tmp.clear();
        tmp.resize(v.len(), 0);
        for &x in v.iter() {
            if let Some(n) = at.get_mut(byte(x)) {
                if let Some(slot) = tmp.get_mut(*n) {
                    *slot = x;
                }
                *n += 1;
            }
        }
        std::mem::swap(v, tmp);
    }
}

/// The lists of a batch search, kept from chunk to chunk so that a batch
/// allocates them once.
#[derive(Default)]
struct Lists {
    /// One chunk's probes, by bucket.
    probes: Vec<Key>,
    /// One block of the walk's bucket scans.
    block: Vec<Probe>,
    /// Slots that passed in an odd chunk, as what to scan in its even
    /// partner: `bucket << 32 | value << 16 | query`.
    far: Vec<u64>,
    /// Scratch of `far`'s sort.
    spare: Vec<u64>,
    /// Positions found by one scan of `far`'s.
    slots: Vec<u32>,
    /// Slots of the even chunk that passed: (arena position, query).
    hits: Vec<(u32, u32)>,
    /// Entries to confirm: (entry, query).
    candidates: Vec<(u32, u32)>,
}

impl ChunkTable {
    /// Scans every probe of chunk `c` for the pass `qs`, in bucket order:
    /// `hit(query, bucket, position)` for every slot that passes the pair
    /// filter.
    #[allow(clippy::too_many_arguments, reason = "one walk's whole description")]
    fn walk(
        &self,
        c: usize,
        qs: &[[u64; 4]],
        radius: u32,
        pair: u32,
        how: Scan,
        lists: &mut Lists,
        hit: &mut impl FnMut(u32, usize, usize),
    ) {
        let probes = &mut lists.probes;
        sorted_probes(qs, c, radius, pair, probes);
        let head = |p: Key| self.heads.get(bucket_of(p)).copied();
        for &p in probes.iter().take(2 * AHEAD) {
            prefetch(self.heads.get(bucket_of(p)));
        }
        let mut last_run = None;
        let block = &mut lists.block;
        for (n, keys) in probes.chunks(BLOCK).enumerate() {
            block.clear();
            for (k, &p) in (n * BLOCK..).zip(keys) {
                if let Some(&far) = probes.get(k + 2 * AHEAD) {
                    prefetch(self.heads.get(bucket_of(far)));
                }
                if let Some(&near) = probes.get(k + AHEAD) {
                    if last_run != Some(bucket_of(near)) {
                        last_run = Some(bucket_of(near));
                        if let Some(h) = head(near) {
                            prefetch_run(&self.partners, h);
                        }
                    }
                }
                match head(p) {
                    Some(h) if h.len > 0 => block.push(Probe {
                        start: h.start,
                        len: h.len,
                        query: (p >> 32) as u16,
                        room: (p >> 16) as u16,
                        // The query and the bucket.
                        tag: ((p >> 32) & 0xffff_0000 | p & 0xffff) as u32,
                    }),
                    _ => {}
                }
            }
            how.run_all(&self.partners, block, &mut |t, at| {
                hit(t & 0xffff, (t >> 16) as usize, at)
            });
        }
    }
}

impl PdqTable {
    /// For each query, the nearest live match of acceptable quality within
    /// `max_distance` (`MATCH_THRESHOLD` for the federation's), ties to the
    /// lowest id: what `NearSet::best` answers for each (`live` is asked
    /// about fewer ids), but for the whole batch at once, which reads the
    /// table in memory order instead of at random (the module doc of
    /// `batch`): at 1M-3M hashes, 0.6-0.7 of the time a query with a
    /// thousand queries a batch, about half with ten thousand. Batches of
    /// fewer than 4 queries are searched one query at a time.
    pub fn best_many(
        &self,
        queries: &[PdqHash],
        max_distance: u32,
        live: impl Fn(u64) -> bool,
    ) -> Vec<Option<(u64, u32)>> {
        self.best_many_with(queries, max_distance, live, Scan::detect())
    }

    fn best_many_with(
        &self,
        queries: &[PdqHash],
        max_distance: u32,
        live: impl Fn(u64) -> bool,
        how: Scan,
    ) -> Vec<Option<(u64, u32)>> {
        let mut best: Vec<Option<(u32, u64)>> = vec![None; queries.len()];
        self.each_batch_match(queries, max_distance, how, &mut |i, m| {
            let e = m.entry as usize;
            if !self.good(e) {
                return;
            }
            if let (Some(b), Some(v)) = (best.get_mut(i), self.ids.get(e)) {
                if b.is_none_or(|b| (m.distance, v) < b) && live(v) {
                    *b = Some((m.distance, v));
                }
            }
        });
        best.into_iter().map(|b| b.map(|(d, v)| (v, d))).collect()
    }

    /// For each query, every match of acceptable quality as (id,
    /// distance): what `NearSet::matches` answers for each, nearest first,
    /// for the batch at once (see `best_many`).
    pub fn matches_many(&self, queries: &[PdqHash]) -> Vec<Vec<(u64, u32)>> {
        self.search_many(queries, MATCH_THRESHOLD)
            .into_iter()
            .map(|found| {
                found
                    .into_iter()
                    .filter(|m| self.good(m.entry as usize))
                    .filter_map(|m| Some((self.ids.get(m.entry as usize)?, m.distance)))
                    .collect()
            })
            .collect()
    }

    /// For each query, what `search` answers (every entry within
    /// `max_distance`, nearest first, ties by entry number), for the batch
    /// at once (see `best_many`).
    pub fn search_many(&self, queries: &[PdqHash], max_distance: u32) -> Vec<Vec<Match>> {
        self.search_many_with(queries, max_distance, Scan::detect())
    }

    fn search_many_with(
        &self,
        queries: &[PdqHash],
        max_distance: u32,
        how: Scan,
    ) -> Vec<Vec<Match>> {
        let mut out: Vec<Vec<Match>> = vec![Vec::new(); queries.len()];
        self.each_batch_match(queries, max_distance, how, &mut |i, m| {
            if let Some(o) = out.get_mut(i) {
                o.push(m);
            }
        });
        for o in &mut out {
            o.sort_unstable();
            o.dedup();
        }
        out
    }

    /// Calls `found(query, match)` for every entry within `max_distance` of
    /// each query (its place in `queries`), in no order; a match may come
    /// more than once. Returns the bytes the probe list held at its
    /// largest.
    fn each_batch_match(
        &self,
        queries: &[PdqHash],
        max_distance: u32,
        how: Scan,
        found: &mut impl FnMut(usize, Match),
    ) -> usize {
        if self.is_empty() || self.chunks.len() != CHUNKS {
            return 0;
        }
        if queries.len() < SMALL {
            for (i, q) in queries.iter().enumerate() {
                for m in self.search_with(q, max_distance, how) {
                    found(i, m);
                }
            }
            return 0;
        }
        let (radius, pair) = pair_bounds(max_distance);
        let mut lists = Lists::default();
        for (n, pass) in queries.chunks(PASS).enumerate() {
            let first = n * PASS;
            let qs: Vec<[u64; 4]> = pass.iter().map(words).collect();
            for c in (0..CHUNKS).step_by(2) {
                self.pair_candidates(c, &qs, radius, pair, how, &mut lists);
                // Confirmed on all 256 bits, the hashes asked for ahead.
                let candidates = &lists.candidates;
                for (k, &(e, i)) in candidates.iter().enumerate() {
                    if let Some(&(ahead, _)) = candidates.get(k + 4 * AHEAD) {
                        prefetch(self.words.get(ahead as usize));
                    }
                    let (Some(w), Some(q)) = (self.words.get(e as usize), qs.get(i as usize))
                    else {
                        continue;
                    };
                    let d = distance(q, w);
                    if d <= max_distance {
                        let m = Match {
                            distance: d,
                            entry: e,
                        };
                        found(first + i as usize, m);
                    }
                }
            }
        }
        lists.probes.capacity() * std::mem::size_of::<Key>()
    }

    /// The candidates of chunks `c` and `c + 1` for the pass `qs`, into
    /// `lists.candidates`.
    fn pair_candidates(
        &self,
        c: usize,
        qs: &[[u64; 4]],
        radius: u32,
        pair: u32,
        how: Scan,
        lists: &mut Lists,
    ) {
        lists.candidates.clear();
        let (Some(even), Some(odd)) = (self.chunks.get(c), self.chunks.get(c + 1)) else {
            return;
        };
        let mut hits = std::mem::take(&mut lists.hits);
        let mut far = std::mem::take(&mut lists.far);
        hits.clear();
        far.clear();
        even.walk(c, qs, radius, pair, how, lists, &mut |i, _, at| {
            hits.push((at as u32, i));
        });
        odd.walk(c + 1, qs, radius, pair, how, lists, &mut |i, b, at| {
            if let Some(&p) = odd.partners.get(at) {
                far.push(u64::from(p) << 32 | (b as u64) << 16 | u64::from(i));
            }
        });
        // The odd chunk's slots found again in the even one: each (bucket,
        // value) scanned once for all the queries that want it.
        radix_sort(&mut far, &mut lists.spare, &[16, 24, 32, 40]);
        for &k in far.iter().take(2 * AHEAD) {
            prefetch(even.heads.get((k >> 32) as usize));
        }
        let slots = &mut lists.slots;
        let mut last: Option<u64> = None;
        let mut last_run = None;
        for (k, &key) in far.iter().enumerate() {
            if let Some(&ahead) = far.get(k + 2 * AHEAD) {
                prefetch(even.heads.get((ahead >> 32) as usize));
            }
            if let Some(&near) = far.get(k + AHEAD) {
                let b = (near >> 32) as usize;
                if last_run != Some(b) {
                    last_run = Some(b);
                    if let Some(&h) = even.heads.get(b) {
                        prefetch_run(&even.partners, h);
                    }
                }
            }
            if last == Some(key) {
                // The same query again (found through two slots).
                continue;
            }
            if last.is_none_or(|l| l >> 16 != key >> 16) {
                slots.clear();
                if let Some(&h) = even.heads.get((key >> 32) as usize) {
                    how.run(
                        &even.partners,
                        h.start as usize,
                        h.len as usize,
                        (key >> 16) as u16,
                        0,
                        &mut |at| slots.push(at as u32),
                    );
                }
            }
            last = Some(key);
            let i = (key & 0xffff) as u32;
            hits.extend(slots.iter().map(|&at| (at, i)));
        }
        // The entry numbers, asked for ahead.
        let wide = self.wide();
        for (k, &(at, i)) in hits.iter().enumerate() {
            if let Some(&(ahead, _)) = hits.get(k + 4 * AHEAD) {
                prefetch(even.low.get(ahead as usize));
                if wide {
                    prefetch(even.high.get(ahead as usize));
                }
            }
            if let Some(e) = even.entry(at as usize, wide) {
                lists.candidates.push((e, i));
            }
        }
        lists.hits = hits;
        lists.far = far;
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::tests::{flip, random_hashes, scans};
    use super::super::super::{NearSet, PdqIndex};
    use super::*;

    /// Random hashes and, for a few of them, exact copies and two families
    /// of near copies at every distance 0..=40 (ties at every distance),
    /// the flipped bits spread over the chunks. Queries: the originals,
    /// near copies of them, planted and random entries, unrelated hashes;
    /// each twice, once right after itself.
    fn data(n: usize, seed: u64) -> (Vec<PdqHash>, Vec<PdqHash>) {
        let mut hashes = random_hashes(n, seed);
        let bases = [hashes[3], hashes[n / 2], hashes[n - 1]];
        for (k, base) in bases.iter().enumerate() {
            hashes.push(*base);
            for family in 0..2 {
                for d in 0..=40usize {
                    let step = 37 + 2 * k + 6 * family;
                    let bits: Vec<usize> = (0..d).map(|i| (i * step + k + family) % 256).collect();
                    hashes.push(flip(base, &bits));
                }
            }
        }
        // Copies at 31 bits found through one pair only, at the edge of
        // the pair filter: seven pairs differ in 4 bits, the eighth in 3,
        // split 3+0, 2+1, 1+2, 0+3 between its chunks (bit `k` of chunk `c`
        // is hash bit `16 c + k`; a lone bit falls on each of the 16).
        for (tight, turn) in (0..8).flat_map(|t| [(t, 0), (t, 8)]) {
            for split in 0..=3 {
                let mut bits: Vec<usize> = Vec::new();
                for pair in 0..8 {
                    let (a, b) = (16 * 2 * pair, 16 * (2 * pair + 1));
                    let (x, y) = if pair == tight {
                        (split, 3 - split)
                    } else {
                        (2, 2)
                    };
                    bits.extend((0..x).map(|k| a + (15 + pair + turn + k) % 16));
                    bits.extend((0..y).map(|k| b + (5 + pair + turn + k) % 16));
                }
                hashes.push(flip(&bases[1], &bits));
            }
        }
        let mut queries: Vec<PdqHash> = bases.to_vec();
        for base in &bases {
            queries.push(flip(base, &[3, 100, 200]));
            queries.push(flip(
                base,
                &(0..16).map(|i| i * 16 + i % 3).collect::<Vec<_>>(),
            ));
            queries.push(flip(base, &(0..30).map(|i| i * 8 + 1).collect::<Vec<_>>()));
        }
        queries.extend(hashes.iter().skip(n).step_by(5));
        queries.extend(hashes.iter().step_by(701));
        queries.extend(random_hashes(20, seed ^ 1));
        let again = queries.clone();
        queries.extend(again.iter().rev());
        queries.insert(1, queries[0]);
        (hashes, queries)
    }

    /// Ids that are not in entry order (so ties by id are not ties by
    /// entry), some beyond 32 bits.
    fn id_of(n: usize, e: usize) -> u64 {
        if e % 1000 == 5 {
            u64::MAX - e as u64
        } else {
            2 * (n - e) as u64 + 1
        }
    }

    fn quality_of(e: usize) -> u8 {
        if e.is_multiple_of(7) {
            40
        } else {
            90
        }
    }

    /// What `best` must answer, from brute force.
    fn brute_best(
        reference: &PdqIndex,
        q: &PdqHash,
        max: u32,
        live: impl Fn(u64) -> bool,
    ) -> Option<(u64, u32)> {
        let n = reference.len();
        reference
            .brute_force(q, max)
            .into_iter()
            .filter(|m| quality_of(m.entry as usize) >= 50)
            .map(|m| (m.distance, id_of(n, m.entry as usize)))
            .filter(|&(_, v)| live(v))
            .min()
            .map(|(d, v)| (v, d))
    }

    #[test]
    fn a_batch_answers_as_one_query_at_a_time_and_as_brute_force() {
        // More entries than `LOW_BITS` numbers (under test): the top bits
        // of entry numbers are read too.
        let (hashes, queries) = data(9000, 11);
        let n = hashes.len();
        let reference = PdqIndex::build(&hashes);
        let tagged: Vec<(PdqHash, u64, u8)> = hashes
            .iter()
            .enumerate()
            .map(|(e, h)| (*h, id_of(n, e), quality_of(e)))
            .collect();
        let mut at_once = PdqTable::default();
        at_once.extend(&tagged);
        // Grown one hash at a time: buckets moved, arenas compacted.
        let mut grown = PdqTable::default();
        grown.extend(&tagged[..2000]);
        for &(h, v, q) in &tagged[2000..] {
            grown.add(h, v, q);
        }
        let lives: [&dyn Fn(u64) -> bool; 2] = [&|_| true, &|v| v % 3 != 0];
        for table in [&at_once, &grown] {
            for max in [0, 7, 8, 16, MATCH_THRESHOLD, 40, 47] {
                let want: Vec<Vec<Match>> = queries
                    .iter()
                    .map(|q| reference.brute_force(q, max))
                    .collect();
                assert!(want.iter().filter(|w| w.len() > 1).count() > 10 || max < 8);
                for how in scans() {
                    assert_eq!(
                        table.search_many_with(&queries, max, how),
                        want,
                        "{how:?} {max}"
                    );
                    for live in lives {
                        let best: Vec<Option<(u64, u32)>> = queries
                            .iter()
                            .map(|q| brute_best(&reference, q, max, live))
                            .collect();
                        assert_eq!(
                            table.best_many_with(&queries, max, live, how),
                            best,
                            "{how:?} {max}"
                        );
                    }
                }
                let one_at_a_time: Vec<Vec<Match>> =
                    queries.iter().map(|q| table.search(q, max)).collect();
                assert_eq!(table.search_many(&queries, max), one_at_a_time);
            }
            for live in lives {
                let one_at_a_time: Vec<Option<(u64, u32)>> =
                    queries.iter().map(|q| table.best(q, live)).collect();
                assert!(one_at_a_time.iter().filter(|b| b.is_some()).count() > 10);
                assert_eq!(
                    table.best_many(&queries, MATCH_THRESHOLD, live),
                    one_at_a_time
                );
                // Every batch size: the small ones searched one query at
                // a time, the larger ones across passes.
                for size in [
                    0,
                    1,
                    2,
                    SMALL - 1,
                    SMALL,
                    SMALL + 1,
                    PASS - 1,
                    PASS,
                    PASS + 1,
                    2 * PASS + 3,
                ] {
                    assert_eq!(
                        table.best_many(&queries[..size], MATCH_THRESHOLD, live),
                        one_at_a_time[..size],
                        "{size} queries"
                    );
                }
            }
            // One chunk's probes of one pass at a time: 8 bytes each, 17 a
            // query.
            let bytes =
                table.each_batch_match(&queries, MATCH_THRESHOLD, Scan::detect(), &mut |_, _| {});
            assert!(queries.len() > 3 * PASS);
            assert!((17 * 8 * PASS..=2 * 17 * 8 * PASS).contains(&bytes));
            let matches: Vec<Vec<(u64, u32)>> = queries.iter().map(|q| table.matches(q)).collect();
            assert!(matches.iter().any(|m| m.len() > 20));
            assert_eq!(table.matches_many(&queries), matches);
        }
    }

    #[test]
    fn an_empty_batch_and_an_empty_table() {
        let (hashes, queries) = data(500, 12);
        let empty = PdqTable::default();
        assert_eq!(
            empty.best_many(&queries, MATCH_THRESHOLD, |_| true),
            vec![None; queries.len()]
        );
        assert_eq!(
            empty.search_many(&queries, 47),
            vec![Vec::new(); queries.len()]
        );
        assert_eq!(
            empty.matches_many(&queries),
            vec![Vec::new(); queries.len()]
        );
        let mut table = PdqTable::default();
        for (e, h) in hashes.iter().enumerate() {
            table.add(*h, e as u64, 90);
        }
        assert!(table.best_many(&[], MATCH_THRESHOLD, |_| true).is_empty());
        assert!(table.search_many(&[], MATCH_THRESHOLD).is_empty());
        assert!(table.matches_many(&[]).is_empty());
        assert!(empty.best_many(&[], MATCH_THRESHOLD, |_| true).is_empty());
    }

    #[test]
    fn the_radix_sort_is_a_stable_sort_by_the_bytes_given() {
        let mut s = 99u64;
        let mut v: Vec<u64> = (0..5000)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s % 100_000
            })
            .collect();
        let mut want = v.clone();
        want.sort_by_key(|x| x >> 8);
        let mut tmp = Vec::new();
        radix_sort(&mut v, &mut tmp, &[8, 16]);
        assert_eq!(v, want);
    }
}
