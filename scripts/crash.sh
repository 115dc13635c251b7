#!/usr/bin/env bash
# The crash harness as a long run: `scripts/crash.sh --kills 500 [--seed N]`.
# Builds the release binaries, then SIGKILLs the hub, nodes and recipients on a
# seeded schedule while they work, and checks that nothing receipted was lost
# and nothing acknowledged was delivered again. The last line is one JSON object.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --bins >&2
exec target/release/crash "$@"
