//! `meldnet-bench index`: the PDQ index (`core::pdq_index`) at list scale.
//! Synthetic hashes (random 256-bit values; half the queries are copies of
//! entries with 0 to 40 bits flipped, half are unrelated), every query at
//! the federation's threshold on one core. Peers in the same run: our own
//! brute-force scan (the exactness reference) and faiss (`faiss-cpu`:
//! `IndexBinaryMultiHash` with 16 tables of 16 bits, the same method, and
//! `IndexBinaryFlat`). Last line: one JSON object with the figures.

use crate::stats::{peak_rss_mb, percentile};
use anyhow::{bail, Context};
use meldnet_core::hash::PdqHash;
use meldnet_core::pdq::MATCH_THRESHOLD;
use meldnet_core::pdq_index::PdqIndex;
use serde_json::{json, Value};
use std::process::Command;
use std::time::Instant;

/// The peer's script, carried in the binary.
const PEER: &str = include_str!("../peers/index_peer.py");

/// Arguments of `meldnet-bench index`.
#[derive(Debug, Clone, clap::Args)]
pub struct IndexArgs {
    /// Hashes in the index.
    #[arg(long, default_value_t = 10_000_000)]
    pub entries: usize,
    /// Queries, one at a time.
    #[arg(long, default_value_t = 1000)]
    pub queries: usize,
    /// Queries also answered by brute force (ours and faiss's flat index).
    #[arg(long, default_value_t = 50)]
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
}

fn ms(v: &mut [f64], p: f64) -> f64 {
    percentile(v, p) * 1e3
}

/// Runs the benchmark and prints the figures.
pub fn run(a: IndexArgs) -> anyhow::Result<()> {
    if a.entries == 0 || a.queries == 0 {
        bail!("--entries and --queries must be above 0");
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let entries: Vec<PdqHash> = (0..a.entries).map(|_| rng.hash()).collect();
    let queries: Vec<PdqHash> = (0..a.queries)
        .map(|i| {
            if i % 2 == 0 {
                let mut h = entries[(rng.next() % a.entries as u64) as usize];
                for _ in 0..rng.next() % 41 {
                    let k = (rng.next() % 256) as usize;
                    h.0[31 - k / 8] ^= 1 << (k % 8);
                }
                h
            } else {
                rng.hash()
            }
        })
        .collect();
    eprintln!(
        "index: {} entries, {} queries, threshold {MATCH_THRESHOLD}",
        a.entries, a.queries
    );

    let t = Instant::now();
    let index = PdqIndex::build(&entries);
    let build_s = t.elapsed().as_secs_f64();
    let mut lat = Vec::with_capacity(a.queries);
    let mut ours_counts = Vec::with_capacity(a.queries);
    let t_all = Instant::now();
    for q in &queries {
        let t = Instant::now();
        let m = index.search(q, MATCH_THRESHOLD);
        lat.push(t.elapsed().as_secs_f64());
        ours_counts.push(m.len());
    }
    let queries_per_s = a.queries as f64 / t_all.elapsed().as_secs_f64();
    let mut brute_lat = Vec::new();
    let mut exact = true;
    for q in queries.iter().take(a.brute_queries) {
        let t = Instant::now();
        let b = index.brute_force(q, MATCH_THRESHOLD);
        brute_lat.push(t.elapsed().as_secs_f64());
        exact &= b == index.search(q, MATCH_THRESHOLD);
    }
    let matched = ours_counts.iter().filter(|&&c| c > 0).count();
    eprintln!(
        "ours: built in {build_s:.2} s, {:.1} bytes per entry; query p50 {:.3} ms, p99 {:.3} ms, {queries_per_s:.0} queries/s on one core; \
         {matched} of {} queries matched; brute force p50 {:.1} ms; equal to brute force: {exact}",
        index.bytes_per_entry(),
        ms(&mut lat.clone(), 50.0),
        ms(&mut lat.clone(), 99.0),
        a.queries,
        ms(&mut brute_lat.clone(), 50.0),
    );
    let mut figures = json!({
        "entries": a.entries,
        "queries": a.queries,
        "threshold": MATCH_THRESHOLD,
        "build_s": build_s,
        "bytes_per_entry": index.bytes_per_entry(),
        "query_p50_ms": ms(&mut lat.clone(), 50.0),
        "query_p99_ms": ms(&mut lat.clone(), 99.0),
        "queries_per_s_per_core": queries_per_s,
        "queries_matched": matched,
        "brute_force_p50_ms": ms(&mut brute_lat.clone(), 50.0),
        "equal_to_brute_force": exact,
        "peak_rss_mb": peak_rss_mb(std::process::id()),
    });
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
        let script = dir.path().join("index_peer.py");
        std::fs::write(&script, PEER)?;
        drop(index);
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
        let peer: Value = serde_json::from_slice(&out.stdout)?;
        let lats = |k: &str| -> Vec<f64> {
            peer[k]["latencies_s"]
                .as_array()
                .map(|v| v.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default()
        };
        let (mut mh, mut flat) = (lats("multihash"), lats("flat"));
        let identical = peer["multihash"]["matches"]
            .as_array()
            .map(|m| {
                m.iter()
                    .zip(&ours_counts)
                    .filter(|(p, o)| p.as_u64() == Some(**o as u64))
                    .count()
            })
            .unwrap_or(0);
        eprintln!(
            "faiss IndexBinaryMultiHash: built in {:.2} s, query p50 {:.3} ms, p99 {:.3} ms; IndexBinaryFlat p50 {:.1} ms; \
             same number of matches on {identical} of {} queries",
            peer["multihash"]["build_s"].as_f64().unwrap_or_default(),
            ms(&mut mh.clone(), 50.0),
            ms(&mut mh.clone(), 99.0),
            ms(&mut flat.clone(), 50.0),
            a.queries
        );
        figures["faiss_multihash_build_s"] = peer["multihash"]["build_s"].clone();
        figures["faiss_multihash_p50_ms"] = ms(&mut mh, 50.0).into();
        figures["faiss_multihash_p99_ms"] = ms(&mut mh.clone(), 99.0).into();
        figures["faiss_flat_p50_ms"] = ms(&mut flat, 50.0).into();
        figures["same_matches_as_faiss"] = identical.into();
    }
    println!("{figures}");
    Ok(())
}
