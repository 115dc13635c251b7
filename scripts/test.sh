#!/usr/bin/env bash
# Runs every test: unit tests next to the code, and the whole-federation tests
# in tests/ (real processes, real mTLS on loopback). The federation tests run
# the meldnet-* binaries, so they are built first.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins
cargo test --workspace "$@"
