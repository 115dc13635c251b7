//! `meldnet-bench`: benchmarks as commands. Each starts real processes over
//! mTLS on loopback and measures its peer in the same run; the last line of
//! output is one JSON object with the figures.

#![allow(
    clippy::indexing_slicing,
    reason = "a measuring command over data it makes itself; its figures are JSON objects it builds"
)]

mod hashcheck;
mod index;
mod ingest;
mod pdq;
mod preload;
mod stats;
mod verify_limit;
mod worker;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "meldnet-bench",
    version,
    about = "Benchmarks of the federation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A hub and node processes: N signed reports submitted, then drained to recipients.
    Ingest(ingest::IngestArgs),
    /// The PDQ index at list scale, against brute force and faiss, on the same hashes.
    Index(index::IndexArgs),
    /// PDQ on a folder of images, ours and Meta's reference (PyPI `pdqhash`) on the same files.
    Pdq(pdq::PdqArgs),
    /// Hosting providers' batched hash checks against a node holding a large list (gRPC and HTTP/JSON, exact and PDQ).
    Hashcheck(hashcheck::HashCheckArgs),
    /// One node process of `ingest` (started by it, not by hand).
    #[command(hide = true)]
    NodeWorker(worker::WorkerArgs),
}

/// mimalloc: the store and the gRPC stack allocate and free millions of small
/// buffers a minute; glibc's allocator spent a third of the hub's time on it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    meldnet_cli::init_process("warn");
    let result = match Cli::parse().command {
        Command::Ingest(a) => ingest::run(a),
        Command::Pdq(a) => pdq::run(a),
        Command::Index(a) => index::run(a),
        Command::Hashcheck(a) => hashcheck::run(a),
        Command::NodeWorker(a) => worker::run(a),
    };
    meldnet_cli::exit_code("meldnet-bench", result)
}
