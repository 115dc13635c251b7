//! `meldnet-bench index`: the PDQ index (`pdq::index`) at list scale.
//! For each size: synthetic hashes like a real list (random ones, plus
//! clusters of near-duplicates: one picture listed in several re-encodings),
//! queries that are near copies of entries (0 to 40 bits off), of cluster
//! centres (many matches) or unrelated, every query at the federation's
//! threshold, one at a time, on one core. Peers in the same run on the same
//! data and queries: faiss (`faiss-cpu`) `IndexBinaryMultiHash` (16 tables
//! of 16 bits, the same method) and `IndexBinaryFlat` (brute force), and our
//! own brute-force scan. Every answer is compared, entry by entry.
//! Last line: one JSON object, a key per size.

use crate::stats::{peak_rss_mb, percentile};
use anyhow::{bail, Context};
use meldnet_core::PdqHash;
use meldnet_pdq::MATCH_THRESHOLD;
use meldnet_pdq::{PdqIndex, PdqTable};
use serde_json::{json, Value};
use std::process::Command;
use std::time::Instant;

/// The peer's script, carried in the binary.
const PEER: &str = include_str!("../peers/index_peer.py");

/// Arguments of `meldnet-bench index`.
#[derive(Debug, Clone, clap::Args)]
pub struct IndexArgs {
    /// Index sizes, e.g. `1M,10M,50M` (K and M suffixes).
    #[arg(long, value_delimiter = ',', default_value = "1M,10M")]
    pub sizes: Vec<String>,
    /// Queries per size, one at a time.
    #[arg(long, default_value_t = 1000)]
    pub queries: usize,
    /// Queries also answered by brute force (ours and faiss's flat index).
    #[arg(long, default_value_t = 100)]
    pub brute_queries: usize,
    /// The Python with `faiss-cpu` and `numpy`; `none` skips the peer.
    #[arg(long, default_value = "python3")]
    pub python: String,
}

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

    /// `h` with up to `max` random bits flipped.
    fn near(&mut self, mut h: PdqHash, max: u64) -> PdqHash {
        for _ in 0..self.next() % (max + 1) {
            let k = (self.next() % 256) as usize;
            h.0[31 - k / 8] ^= 1 << (k % 8);
        }
        h
    }
}

fn ms(v: &[f64], p: f64) -> f64 {
    percentile(&mut v.to_vec(), p) * 1e3
}

/// `1M` → 1,000,000.
fn parse_size(s: &str) -> anyhow::Result<usize> {
    let s = s.trim();
    let (n, mult) = match s.char_indices().last() {
        Some((i, 'M' | 'm')) => (&s[..i], 1_000_000),
        Some((i, 'K' | 'k')) => (&s[..i], 1_000),
        _ => (s, 1),
    };
    let n: f64 = n
        .parse()
        .with_context(|| format!("--sizes: {s:?} is not a size such as 10M"))?;
    let size = (n * mult as f64) as usize;
    if size == 0 {
        bail!("--sizes: {s:?} is empty");
    }
    Ok(size)
}

/// A list of `n` hashes: 80% random, 20% in clusters of 10 near-duplicates
/// (each within 12 bits of its centre); and the queries.
fn data(n: usize, queries: usize, rng: &mut Rng) -> (Vec<PdqHash>, Vec<PdqHash>) {
    let mut entries = Vec::with_capacity(n);
    let mut centres = Vec::new();
    while entries.len() < n {
        if rng.next().is_multiple_of(50) {
            let c = rng.hash();
            centres.push(c);
            for _ in 0..10 {
                if entries.len() < n {
                    entries.push(rng.near(c, 12));
                }
            }
        } else {
            entries.push(rng.hash());
        }
    }
    let qs = (0..queries)
        .map(|i| match i % 4 {
            0 | 1 => {
                let e = entries[(rng.next() % n as u64) as usize];
                rng.near(e, 40)
            }
            2 if !centres.is_empty() => {
                let c = centres[(rng.next() % centres.len() as u64) as usize];
                rng.near(c, 16)
            }
            _ => rng.hash(),
        })
        .collect();
    (entries, qs)
}

/// One size: ours, brute force, and the peer.
fn run_size(n: usize, a: &IndexArgs, rng: &mut Rng) -> anyhow::Result<Value> {
    let (entries, queries) = data(n, a.queries, rng);
    eprintln!(
        "index: {n} entries, {} queries, threshold {MATCH_THRESHOLD}",
        queries.len()
    );
    let t = Instant::now();
    let index = PdqIndex::build(&entries);
    let build_s = t.elapsed().as_secs_f64();
    let mut lat = Vec::with_capacity(queries.len());
    let mut ours: Vec<Vec<u32>> = Vec::with_capacity(queries.len());
    for q in &queries {
        let t = Instant::now();
        let m = index.search(q, MATCH_THRESHOLD);
        lat.push(t.elapsed().as_secs_f64());
        let mut ids: Vec<u32> = m.iter().map(|m| m.entry).collect();
        ids.sort_unstable();
        ours.push(ids);
    }
    let mut brute_lat = Vec::new();
    let mut exact = true;
    for (q, mine) in queries.iter().zip(&ours).take(a.brute_queries) {
        let t = Instant::now();
        let b = index.brute_force(q, MATCH_THRESHOLD);
        brute_lat.push(t.elapsed().as_secs_f64());
        let mut ids: Vec<u32> = b.iter().map(|m| m.entry).collect();
        ids.sort_unstable();
        exact &= &ids == mine;
    }
    let matched = ours.iter().filter(|m| !m.is_empty()).count();
    let matches: usize = ours.iter().map(Vec::len).sum();
    eprintln!(
        "  meldnet: built in {build_s:.2} s, {:.1} bytes per entry; p50 {:.3} ms, p99 {:.3} ms; \
         {matched} queries matched ({matches} matches); brute force p50 {:.1} ms; equal to brute force: {exact}",
        index.bytes_per_entry(),
        ms(&lat, 50.0),
        ms(&lat, 99.0),
        ms(&brute_lat, 50.0),
    );
    let mut figures = json!({
        "entries": n,
        "build_s": build_s,
        "bytes_per_entry": index.bytes_per_entry(),
        "p50_ms": ms(&lat, 50.0),
        "p99_ms": ms(&lat, 99.0),
        "queries_matched": matched,
        "matches": matches,
        "brute_force_p50_ms": ms(&brute_lat, 50.0),
        "equal_to_brute_force": exact,
    });
    drop(index);
    // The case index's table (additions in place), on the same data and
    // queries: the structure every report's pictures are searched in.
    let t = Instant::now();
    let mut table = PdqTable::default();
    let tagged: Vec<(PdqHash, u64, u8)> = entries
        .iter()
        .enumerate()
        .map(|(i, h)| (*h, i as u64, 100))
        .collect();
    table.extend(&tagged);
    drop(tagged);
    let table_build_s = t.elapsed().as_secs_f64();
    let mut table_lat = Vec::with_capacity(queries.len());
    let mut table_equal = true;
    for (q, mine) in queries.iter().zip(&ours) {
        let t = Instant::now();
        let m = table.search(q, MATCH_THRESHOLD);
        table_lat.push(t.elapsed().as_secs_f64());
        let mut ids: Vec<u32> = m.iter().map(|m| m.entry).collect();
        ids.sort_unstable();
        table_equal &= &ids == mine;
    }
    eprintln!(
        "  meldnet table (cases): built in {table_build_s:.2} s, {:.1} bytes per entry; p50 {:.3} ms, p99 {:.3} ms; equal to the index: {table_equal}",
        table.bytes_per_entry(),
        ms(&table_lat, 50.0),
        ms(&table_lat, 99.0),
    );
    figures["table"] = json!({
        "build_s": table_build_s,
        "bytes_per_entry": table.bytes_per_entry(),
        "p50_ms": ms(&table_lat, 50.0),
        "p99_ms": ms(&table_lat, 99.0),
        "equal_to_index": table_equal,
    });
    drop(table);
    let mut identical = exact && table_equal;
    if a.python != "none" {
        let dir = tempfile::tempdir()?;
        let write = |name: &str, hashes: &[PdqHash]| -> anyhow::Result<std::path::PathBuf> {
            let p = dir.path().join(name);
            let bytes: Vec<u8> = hashes.iter().flat_map(|h| h.0).collect();
            std::fs::write(&p, bytes)?;
            Ok(p)
        };
        let (e, q) = (
            write("entries.bin", &entries)?,
            write("queries.bin", &queries)?,
        );
        drop(entries);
        let script = dir.path().join("index_peer.py");
        std::fs::write(&script, PEER)?;
        let out = Command::new(&a.python)
            .arg(&script)
            .arg(&e)
            .arg(&q)
            .arg((MATCH_THRESHOLD + 1).to_string())
            .arg(a.brute_queries.to_string())
            .output()
            .with_context(|| format!("starting the peer with {}", a.python))?;
        if !out.status.success() {
            bail!(
                "the peer failed: {} (is `pip install faiss-cpu numpy` done?)",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let peer: Value = serde_json::from_str(line)?;
            let name = peer["index"].as_str().unwrap_or("?").to_string();
            let lat: Vec<f64> = peer["latencies_s"]
                .as_array()
                .map(|v| v.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default();
            let theirs: Vec<Vec<u32>> = serde_json::from_value(peer["matches"].clone())?;
            let same = theirs.iter().zip(&ours).filter(|(t, o)| t == o).count();
            identical &= same == theirs.len();
            eprintln!(
                "  faiss {name}: built in {:.2} s, {:.1} bytes per entry (resident); p50 {:.3} ms, p99 {:.3} ms; \
                 the same entries on {same} of {} queries",
                peer["build_s"].as_f64().unwrap_or_default(),
                peer["bytes_per_entry"].as_f64().unwrap_or_default(),
                ms(&lat, 50.0),
                ms(&lat, 99.0),
                theirs.len()
            );
            figures[format!("faiss_{name}_build_s")] = peer["build_s"].clone();
            figures[format!("faiss_{name}_bytes_per_entry")] = peer["bytes_per_entry"].clone();
            figures[format!("faiss_{name}_p50_ms")] = ms(&lat, 50.0).into();
            figures[format!("faiss_{name}_p99_ms")] = ms(&lat, 99.0).into();
            figures[format!("faiss_{name}_same_queries")] = same.into();
        }
    }
    figures["identical"] = identical.into();
    Ok(figures)
}

/// Runs the benchmark and prints the figures.
pub fn run(a: IndexArgs) -> anyhow::Result<()> {
    if a.queries == 0 {
        bail!("--queries must be above 0");
    }
    let sizes = a
        .sizes
        .iter()
        .map(|s| parse_size(s).map(|n| (s.trim().to_string(), n)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut figures = json!({
        "threshold": MATCH_THRESHOLD,
        "queries": a.queries,
        "brute_queries": a.brute_queries,
        "cores": 1,
    });
    for (label, n) in sizes {
        figures[label] = run_size(n, &a, &mut rng)?;
    }
    figures["peak_rss_mb"] = peak_rss_mb(std::process::id()).into();
    println!("{figures}");
    Ok(())
}
