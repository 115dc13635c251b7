//! Timing of the PDQ index shapes on synthetic data, one core:
//! `cargo run --release -p meldnet-pdq --example index_timing -- 1M,3M [queries] [table,grown,index,batch]`.
//!
//! Entries: random hashes, and one in ten a near copy (0 to 40 bits off) of
//! an earlier one. Queries: half near copies of entries (0 to 40 bits off),
//! a quarter near copies of the near copies' originals, a quarter unrelated;
//! every one at the federation's threshold. Shapes: `table` (a `PdqTable`
//! filled by `extend`, as at a start), `grown` (half by `extend`, half by
//! `add`, timing each addition), `index` (`PdqIndex`, then its bytes and a
//! `PdqIndexView` over them). Per shape: build time, bytes per entry,
//! p50/p99 per query; a sample of answers is checked against brute force.
//! `batch` (a `PdqTable` filled by `extend`): `best_many` and `search_many`
//! over batches of 1 to 10,000 queries from a pool of 30,000, against
//! `best` and `search` one query at a time over the same queries, every
//! answer compared; per query, the p50 over the batches and the mean.
//! Numbers on a shared machine move by 10-20% or more: compare runs made
//! back to back.

#![allow(clippy::indexing_slicing, clippy::unwrap_used, missing_docs)]

use meldnet_pdq::{NearSet, PdqHash, PdqIndex, PdqIndexView, PdqTable, MATCH_THRESHOLD};
use std::time::Instant;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn hash(&mut self) -> PdqHash {
        let mut h = [0u8; 32];
        for c in h.chunks_mut(8) {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        PdqHash(h)
    }

    /// `h` with exactly `d` distinct bits flipped.
    fn near(&mut self, h: PdqHash, d: usize) -> PdqHash {
        let mut out = h;
        let mut flipped = [false; 256];
        let mut n = 0;
        while n < d {
            let k = (self.next() % 256) as usize;
            if !flipped[k] {
                flipped[k] = true;
                out.0[31 - k / 8] ^= 1 << (k % 8);
                n += 1;
            }
        }
        out
    }
}

fn size(s: &str) -> usize {
    let s = s.trim();
    let (n, m) = match s.chars().last() {
        Some('M' | 'm') => (&s[..s.len() - 1], 1_000_000.0),
        Some('K' | 'k') => (&s[..s.len() - 1], 1_000.0),
        _ => (s, 1.0),
    };
    (n.parse::<f64>().unwrap() * m) as usize
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * p / 100.0).round() as usize;
    v[i] * 1e6
}

fn entries(n: usize, rng: &mut Rng) -> (Vec<PdqHash>, Vec<PdqHash>) {
    let mut entries: Vec<PdqHash> = Vec::with_capacity(n);
    let mut originals = Vec::new();
    while entries.len() < n {
        if entries.len() > 10 && rng.next().is_multiple_of(10) {
            let j = (rng.next() % entries.len() as u64) as usize;
            let d = (rng.next() % 41) as usize;
            originals.push(entries[j]);
            let h = rng.near(entries[j], d);
            entries.push(h);
        } else {
            entries.push(rng.hash());
        }
    }
    (entries, originals)
}

fn query_pool(
    entries: &[PdqHash],
    originals: &[PdqHash],
    queries: usize,
    rng: &mut Rng,
) -> Vec<PdqHash> {
    let n = entries.len();
    (0..queries)
        .map(|i| match i % 4 {
            0 | 1 => {
                let e = entries[(rng.next() % n as u64) as usize];
                let d = (rng.next() % 41) as usize;
                rng.near(e, d)
            }
            2 => {
                let e = originals[(rng.next() % originals.len() as u64) as usize];
                let d = (rng.next() % 41) as usize;
                rng.near(e, d)
            }
            _ => rng.hash(),
        })
        .collect()
}

/// One-at-a-time and batched searches over the same queries, batch by
/// batch, after a warm-up over other queries (`warm`).
fn batches(table: &PdqTable, pool: &[PdqHash], warm: &[PdqHash]) {
    let mut found = 0;
    for q in warm {
        found += table.search(q, MATCH_THRESHOLD).len();
    }
    found += table.search_many(warm, MATCH_THRESHOLD).len();
    assert!(found > 0);
    for size in [1usize, 100, 1000, 3000, 10_000] {
        let count = (pool.len() / size).min(3000);
        let qs = &pool[..count * size];
        let mut one = Vec::with_capacity(qs.len());
        let mut many = Vec::with_capacity(count);
        let mut want = Vec::with_capacity(qs.len());
        let mut got = Vec::with_capacity(qs.len());
        let t0 = Instant::now();
        for batch in qs.chunks(size) {
            let t = Instant::now();
            got.extend(table.best_many(batch, MATCH_THRESHOLD, |_| true));
            many.push(t.elapsed().as_secs_f64() / size as f64);
        }
        let batched = t0.elapsed().as_secs_f64() / qs.len() as f64 * 1e6;
        let t0 = Instant::now();
        for q in qs {
            let t = Instant::now();
            want.push(table.best(q, |_| true));
            one.push(t.elapsed().as_secs_f64());
        }
        let single = t0.elapsed().as_secs_f64() / qs.len() as f64 * 1e6;
        assert_eq!(got, want, "best_many against best");
        let found = want.iter().filter(|b| b.is_some()).count();
        let p50 = pct(&mut many, 50.0);
        println!(
            "  best   batch {size:>6} x {count:<5} batched p50 {p50:6.2} us  mean {batched:6.2} us | one at a time p50 {:6.2} us  mean {single:6.2} us  (a batch {:.2} ms, {found} found)",
            pct(&mut one, 50.0),
            p50 * size as f64 / 1e3,
        );
        let (mut one, mut many) = (Vec::new(), Vec::new());
        let t0 = Instant::now();
        let mut got = Vec::with_capacity(qs.len());
        for batch in qs.chunks(size) {
            let t = Instant::now();
            got.extend(table.search_many(batch, MATCH_THRESHOLD));
            many.push(t.elapsed().as_secs_f64() / size as f64);
        }
        let batched = t0.elapsed().as_secs_f64() / qs.len() as f64 * 1e6;
        let t0 = Instant::now();
        let mut want = Vec::with_capacity(qs.len());
        for q in qs {
            let t = Instant::now();
            want.push(table.search(q, MATCH_THRESHOLD));
            one.push(t.elapsed().as_secs_f64());
        }
        let single = t0.elapsed().as_secs_f64() / qs.len() as f64 * 1e6;
        assert_eq!(got, want, "search_many against search");
        println!(
            "  search batch {size:>6} x {count:<5} batched p50 {:6.2} us  mean {batched:6.2} us | one at a time p50 {:6.2} us  mean {single:6.2} us",
            pct(&mut many, 50.0),
            pct(&mut one, 50.0),
        );
    }
}

fn report(name: &str, build_s: f64, bytes: f64, lat: &mut [f64], matches: usize) {
    let mean = lat.iter().sum::<f64>() / lat.len() as f64 * 1e6;
    println!(
        "  {name:<22} build {build_s:6.2} s  {bytes:6.1} B/entry  p50 {:6.1} us  p99 {:6.1} us  mean {mean:6.1} us  ({matches} matches)",
        pct(lat, 50.0),
        pct(lat, 99.0),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sizes: Vec<usize> = args
        .get(1)
        .map(|s| s.split(',').map(size).collect())
        .unwrap_or_else(|| vec![1_000_000, 3_000_000]);
    let queries: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(4000);
    let only: String = args
        .get(3)
        .cloned()
        .unwrap_or_else(|| "table,grown,index".into());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for n in sizes {
        let (entries, originals) = entries(n, &mut rng);
        let qs = query_pool(&entries, &originals, queries, &mut rng);
        if only.contains("batch") {
            let mut pool = query_pool(&entries, &originals, 32_000, &mut rng);
            let warm = pool.split_off(30_000);
            let tagged: Vec<(PdqHash, u64, u8)> = entries
                .iter()
                .enumerate()
                .map(|(i, h)| (*h, i as u64, 90))
                .collect();
            let mut table = PdqTable::default();
            table.extend(&tagged);
            drop(tagged);
            println!(
                "{n} entries, batches from {} queries, max distance {MATCH_THRESHOLD}",
                pool.len()
            );
            batches(&table, &pool, &warm);
        }
        if ["table", "grown", "index"].iter().any(|s| only.contains(s)) {
            println!(
                "{n} entries, {} queries, max distance {MATCH_THRESHOLD}",
                qs.len()
            );
        }
        let brute_n = 20;
        if only.contains("table") {
            let tagged: Vec<(PdqHash, u64, u8)> = entries
                .iter()
                .enumerate()
                .map(|(i, h)| (*h, i as u64, 90))
                .collect();
            let t = Instant::now();
            let mut table = PdqTable::default();
            table.extend(&tagged);
            let build = t.elapsed().as_secs_f64();
            drop(tagged);
            let mut lat = Vec::with_capacity(qs.len());
            let mut found = 0;
            let mut answers = Vec::new();
            for q in &qs {
                let t = Instant::now();
                let m = table.search(q, MATCH_THRESHOLD);
                lat.push(t.elapsed().as_secs_f64());
                found += m.len();
                if answers.len() < brute_n {
                    answers.push(m);
                }
            }
            report(
                "table (extend)",
                build,
                table.bytes_per_entry(),
                &mut lat,
                found,
            );
            let reference = PdqIndex::build(&entries);
            for (q, a) in qs.iter().zip(&answers) {
                assert_eq!(a, &reference.brute_force(q, MATCH_THRESHOLD));
            }
        }
        if only.contains("grown") {
            // Half at once (a start), half one at a time (ingest).
            let half = n / 2;
            let tagged: Vec<(PdqHash, u64, u8)> = entries[..half]
                .iter()
                .enumerate()
                .map(|(i, h)| (*h, i as u64, 90))
                .collect();
            let mut table = PdqTable::default();
            table.extend(&tagged);
            drop(tagged);
            let mut add = Vec::with_capacity(n - half);
            let t0 = Instant::now();
            for (i, h) in entries.iter().enumerate().skip(half) {
                let t = Instant::now();
                table.add(*h, i as u64, 90);
                add.push(t.elapsed().as_secs_f64());
            }
            let grow = t0.elapsed().as_secs_f64();
            let max = add.iter().cloned().fold(0.0, f64::max) * 1e6;
            println!(
                "  grown by add: {:.2} s for {} adds, add p50 {:.2} us p99 {:.2} us max {:.0} us",
                grow,
                n - half,
                pct(&mut add, 50.0),
                pct(&mut add, 99.0),
                max
            );
            let mut lat = Vec::with_capacity(qs.len());
            let mut found = 0;
            for q in &qs {
                let t = Instant::now();
                let m = table.search(q, MATCH_THRESHOLD);
                lat.push(t.elapsed().as_secs_f64());
                found += m.len();
            }
            report(
                "table (grown)",
                grow,
                table.bytes_per_entry(),
                &mut lat,
                found,
            );
        }
        if only.contains("index") {
            let t = Instant::now();
            let index = PdqIndex::build(&entries);
            let build = t.elapsed().as_secs_f64();
            let mut lat = Vec::with_capacity(qs.len());
            let mut found = 0;
            for (i, q) in qs.iter().enumerate() {
                let t = Instant::now();
                let m = index.search(q, MATCH_THRESHOLD);
                lat.push(t.elapsed().as_secs_f64());
                found += m.len();
                if i < brute_n {
                    assert_eq!(m, index.brute_force(q, MATCH_THRESHOLD));
                }
            }
            report("index", build, index.bytes_per_entry(), &mut lat, found);
            let t = Instant::now();
            let bytes = index.to_bytes();
            let write = t.elapsed().as_secs_f64();
            drop(index);
            let t = Instant::now();
            let view = PdqIndexView::new(&bytes).unwrap();
            let check = t.elapsed().as_secs_f64();
            println!(
                "  index bytes: {:.1} B/entry, written in {write:.2} s, checked in {check:.2} s",
                bytes.len() as f64 / n as f64
            );
            let mut lat = Vec::with_capacity(qs.len());
            let mut found = 0;
            for (i, q) in qs.iter().enumerate() {
                let t = Instant::now();
                let m = view.search(q, MATCH_THRESHOLD);
                lat.push(t.elapsed().as_secs_f64());
                found += m.len();
                if i < brute_n {
                    assert_eq!(m, view.brute_force(q, MATCH_THRESHOLD));
                }
            }
            report(
                "index view (bytes)",
                check,
                bytes.len() as f64 / n as f64,
                &mut lat,
                found,
            );
        }
    }
}
