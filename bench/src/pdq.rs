//! `meldnet-bench pdq DIR`: hashes every image in a folder with our PDQ and,
//! in the same run and on the same files, with Meta's C++ reference through
//! the PyPI `pdqhash` bindings (`bench/peers/pdq_peer.py`, pixels decoded by
//! Pillow). Both on one core, each file `--rounds` times, the best time
//! counted; decode and hash times apart. Compares the outputs file by file.
//! Last line: one JSON object with the figures.

use anyhow::{bail, Context};
use meldnet_core::PdqHash;
use meldnet_node::picture::{decode_rgb, pdq_of};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The peer's script, carried in the binary so that the command runs anywhere.
const PEER: &str = include_str!("../peers/pdq_peer.py");
const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "gif", "bmp", "webp", "tif", "tiff"];

/// Arguments of `meldnet-bench pdq`.
#[derive(Debug, Clone, clap::Args)]
pub struct PdqArgs {
    /// Folder of images (searched recursively).
    pub dir: PathBuf,
    /// Times each file is hashed by each side; the best time counts.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// The Python that has `pdqhash`, `numpy` and `pillow` installed.
    #[arg(long, default_value = "python3")]
    pub python: String,
}

fn images_in(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            images_in(&p, out)?;
        } else if p
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| IMAGE_EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()))
        {
            out.push(p);
        }
    }
    Ok(())
}

struct Ours {
    hash: PdqHash,
    quality: u8,
    decode: Duration,
    pdq: Duration,
}

fn ours(path: &Path, rounds: usize) -> anyhow::Result<Ours> {
    let mut best: Option<Ours> = None;
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        let rgb = decode_rgb(path).with_context(|| path.display().to_string())?;
        let decode = t.elapsed();
        let t = Instant::now();
        let (hash, quality, _) = pdq_of(&rgb, false);
        let pdq = t.elapsed();
        best = Some(match best {
            None => Ours {
                hash,
                quality,
                decode,
                pdq,
            },
            Some(b) => Ours {
                hash,
                quality,
                decode: b.decode.min(decode),
                pdq: b.pdq.min(pdq),
            },
        });
    }
    best.context("no round")
}

fn peer(python: &str, files: &[PathBuf], rounds: usize) -> anyhow::Result<HashMap<String, Value>> {
    let script = tempfile::Builder::new().suffix(".py").tempfile()?;
    std::fs::write(script.path(), PEER)?;
    let mut child = Command::new(python)
        .arg(script.path())
        .arg(rounds.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting the peer with {python}"))?;
    let mut stdin = child.stdin.take().context("peer stdin")?;
    let list: String = files.iter().map(|f| format!("{}\n", f.display())).collect();
    let writer = std::thread::spawn(move || stdin.write_all(list.as_bytes()));
    let mut out = HashMap::new();
    for line in BufReader::new(child.stdout.take().context("peer stdout")?).lines() {
        let v: Value = serde_json::from_str(&line?)?;
        if let Some(f) = v["file"].as_str() {
            out.insert(f.to_string(), v.clone());
        }
    }
    let _ = writer.join();
    let status = child.wait()?;
    if !status.success() {
        bail!(
            "the peer failed ({status}): is `pip install pdqhash numpy pillow` done for {python}?"
        );
    }
    Ok(out)
}

/// Runs the benchmark and prints the figures.
pub fn run(a: PdqArgs) -> anyhow::Result<()> {
    let mut files = Vec::new();
    images_in(&a.dir, &mut files).with_context(|| a.dir.display().to_string())?;
    if files.is_empty() {
        bail!("{}: no images", a.dir.display());
    }
    eprintln!(
        "pdq: {} images in {}, {} rounds each, one core",
        files.len(),
        a.dir.display(),
        a.rounds
    );
    let peer_out = peer(&a.python, &files, a.rounds)?;
    let (mut o_decode, mut o_pdq, mut p_decode, mut p_pdq) = (0f64, 0f64, 0f64, 0f64);
    let (mut identical, mut compared, mut max_distance, mut errors) =
        (0usize, 0usize, 0u32, 0usize);
    let mut differing = Vec::new();
    for f in &files {
        let name = f.display().to_string();
        let o = match ours(f, a.rounds) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("ours: {e:#}");
                errors += 1;
                continue;
            }
        };
        let Some(p) = peer_out.get(&name) else {
            errors += 1;
            continue;
        };
        if let Some(e) = p["error"].as_str() {
            eprintln!("peer: {name}: {e}");
            errors += 1;
            continue;
        }
        let Some(ph) = p["pdq"].as_str().and_then(|h| PdqHash::parse_hex(h).ok()) else {
            errors += 1;
            continue;
        };
        compared += 1;
        o_decode += o.decode.as_secs_f64();
        o_pdq += o.pdq.as_secs_f64();
        p_decode += p["decode_s"].as_f64().unwrap_or_default();
        p_pdq += p["hash_s"].as_f64().unwrap_or_default();
        let d = o.hash.distance(&ph);
        let same_quality = p["quality"].as_u64() == Some(u64::from(o.quality));
        if d == 0 && same_quality {
            identical += 1;
        } else {
            differing.push(format!("{name}: distance {d}"));
        }
        max_distance = max_distance.max(d);
    }
    for d in &differing {
        eprintln!("differs: {d}");
    }
    let n = compared.max(1) as f64;
    let per_s = |secs: f64| {
        if secs > 0.0 {
            compared as f64 / secs
        } else {
            0.0
        }
    };
    let ours_per_s = per_s(o_decode + o_pdq);
    let peer_per_s = per_s(p_decode + p_pdq);
    eprintln!(
        "ours: {ours_per_s:.1} images/s per core (decode {:.2} ms, PDQ {:.2} ms per image); \
         Meta's reference via pdqhash: {peer_per_s:.1} images/s per core (Pillow decode {:.2} ms, PDQ {:.2} ms); \
         {identical} of {compared} identical, largest distance {max_distance}",
        o_decode / n * 1e3,
        o_pdq / n * 1e3,
        p_decode / n * 1e3,
        p_pdq / n * 1e3,
    );
    println!(
        "{}",
        json!({
            "images": compared,
            "errors": errors,
            "rounds": a.rounds,
            "hash_per_s_per_core": per_s(o_pdq),
            "reference_hash_per_s_per_core": per_s(p_pdq),
            "hash_ratio": if o_pdq > 0.0 { p_pdq / o_pdq } else { 0.0 },
            "total_per_s_per_core": ours_per_s,
            "reference_total_per_s_per_core": peer_per_s,
            "total_ratio": if peer_per_s > 0.0 { ours_per_s / peer_per_s } else { 0.0 },
            "decode_ms": o_decode / n * 1e3,
            "hash_ms": o_pdq / n * 1e3,
            "reference_decode_ms": p_decode / n * 1e3,
            "reference_hash_ms": p_pdq / n * 1e3,
            "identical": identical,
            "max_distance": max_distance,
        })
    );
    Ok(())
}
