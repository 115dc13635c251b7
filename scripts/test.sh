#!/usr/bin/env bash
# Runs every test: unit tests next to the code, and the whole-federation tests
# in tests/ (real processes, real mTLS on loopback). The federation tests run
# the meldnet-* binaries, so they are built first. The last line sums up.
set -euo pipefail
cd "$(dirname "$0")/.."
# What the tests need beyond cargo, installed when missing (never a skipped
# test): curl (the hash-check test calls the node's HTTP/JSON endpoint as a
# provider would), a C compiler (the fault tests compile their preload shim)
# and mount (they mount a small tmpfs: run as root, as CI does).
need=()
command -v curl >/dev/null || need+=(curl)
command -v cc >/dev/null || need+=(gcc)
command -v mount >/dev/null || need+=(mount)
# PostgreSQL (the replicated store's tests start real clusters with initdb
# and pg_ctl; Debian puts them in /usr/lib/postgresql/<version>/bin) and
# runuser (a cluster runs as an unprivileged user when the tests run as root).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || need+=(postgresql)
command -v runuser >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${need[@]}" ||
    { echo "the tests need: ${need[*]} (apt-get install ${need[*]})" >&2; exit 1; }
fi
# The Python client's tests (clients/python) need grpcio, Google's protoc
# (grpcio-tools), cryptography and pytest.
python3 -c 'import grpc, grpc_tools, cryptography, pytest' 2>/dev/null ||
  python3 -m pip install --quiet -r clients/python/requirements.txt ||
  { echo "the Python client's tests need: pip install -r clients/python/requirements.txt" >&2; exit 1; }
cargo build --workspace --bins
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
# The Python client against real hub and node processes (the binaries just
# built), and the protocol's test vectors checked by the client's own code.
(cd clients/python && python3 -m pytest -q) 2>&1 | tee -a "$log" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
     /^[0-9]+ (passed|failed)|^[0-9]+ failed, / { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed,?$/) p += $i; if ($(i+1) ~ /^failed,?$/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
