#!/usr/bin/env bash
# Coverage-guided fuzzing of the decoders and parsers that read what another
# party sent (fuzz/, afl.rs on the stable toolchain). Installs what it needs
# when missing (afl++ from apt for the C compiler wrapper, cargo-afl from
# crates.io), builds every target with `cargo afl build`, then runs afl-fuzz
# on each target in turn, one at a time, from its committed seeds.
#
#   bash scripts/fuzz.sh --seconds 20                    # every target, 20 s each (CI)
#   bash scripts/fuzz.sh --target report --seconds 1800  # one target, long
#   bash scripts/fuzz.sh --make-corpus                   # write fuzz/corpus again
#   bash scripts/fuzz.sh --list                          # the targets
#
# Options: --target may be given more than once; --resume goes on from the
# findings of an earlier run of the same target instead of its seeds;
# --no-install never installs anything. FUZZ_OUT (default fuzz/out) is where
# afl-fuzz keeps its findings, FUZZ_MEMORY_MB (default 2048) the memory limit
# of a target process.
#
# Prints one line per target (execs, corpus entries, crashes, hangs,
# seconds) and, last, one JSON object with every figure. Exits non-zero when
# any crash or hang was found (each input's path is printed) or a target
# could not run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
fuzz_dir="$root/fuzz"

TARGETS=(report case_step notice preference list_change delivery csv_import vics_import url delivery_log ledger picture)
CARGO_AFL_VERSION=0.18.2

seconds=20
targets=()
install=1
resume=0
make_corpus=0
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --target) targets+=("$2"); shift 2 ;;
    --no-install) install=0; shift ;;
    --resume) resume=1; shift ;;
    --make-corpus) make_corpus=1; shift ;;
    --list) printf '%s\n' "${TARGETS[@]}"; exit 0 ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "fuzz.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$seconds" in ''|*[!0-9]*) echo "fuzz.sh: --seconds takes a whole number" >&2; exit 2 ;; esac
[ ${#targets[@]} -gt 0 ] || targets=("${TARGETS[@]}")
for t in "${targets[@]}"; do
  [ -f "$fuzz_dir/src/bin/$t.rs" ] && [ "$t" != make_corpus ] ||
    { echo "fuzz.sh: no target $t (targets: ${TARGETS[*]})" >&2; exit 2; }
done

log() { echo "fuzz: $*" >&2; }
now() { date +%s; }

# --- what it needs ----------------------------------------------------------
t_install=$(now)
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
if ! command -v afl-clang-fast >/dev/null; then
  if [ "$install" = 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing afl++ (apt)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq afl++ >/dev/null
  fi
fi
if ! cargo afl --version 2>/dev/null | grep -q "cargo-afl $CARGO_AFL_VERSION"; then
  [ "$install" = 1 ] || { log "cargo-afl $CARGO_AFL_VERSION is not installed (and --no-install)"; exit 1; }
  log "installing cargo-afl $CARGO_AFL_VERSION"
  cargo install cargo-afl --locked --version "$CARGO_AFL_VERSION" --quiet
fi
# AFL++'s runtime for this rustc: `cargo install` builds it; a newer rustc
# needs it built again. "already built" is fine.
if ! out=$(cargo afl config --build 2>&1); then
  grep -q "already built" <<<"$out" || { echo "$out" >&2; log "cargo afl config --build failed"; exit 1; }
fi
install_seconds=$(( $(now) - t_install ))

# --- build ------------------------------------------------------------------
# The C code (libjpeg-turbo inside mozjpeg-sys, and any other C the targets
# link) is instrumented when afl++'s compiler wrapper is there.
t_build=$(now)
if command -v afl-clang-fast >/dev/null; then
  export CC=afl-clang-fast CXX=afl-clang-fast++
  c_instrumented=true
else
  log "afl-clang-fast not found: the C code (mozjpeg) is built without coverage"
  c_instrumented=false
fi
# Built for the host named as an explicit --target: RUSTFLAGS (the
# coverage instrumentation cargo-afl adds) then reach only the code that
# runs, not build scripts and proc macros, which build fast and plain.
host=$(rustc -vV | sed -n 's/^host: //p')
# cargo-afl's optimisation level: 1 builds about twice as fast as 3 (CI's
# short runs); long runs may set AFL_OPT_LEVEL=3. Each level has its own
# target folder, so switching does not rebuild the other.
export AFL_OPT_LEVEL="${AFL_OPT_LEVEL:-1}"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$fuzz_dir/target/opt$AFL_OPT_LEVEL}"
# Not --locked: fuzz/Cargo.lock holds the main lock's versions plus afl's,
# and a dependency a crate gains since is resolved here rather than fail.
export AFL_QUIET=1
(cd "$fuzz_dir" && cargo afl build --release --quiet --target "$host")
opt_level=$AFL_OPT_LEVEL
unset AFL_QUIET AFL_OPT_LEVEL # afl-fuzz warns of AFL_ variables it does not know
build_seconds=$(( $(now) - t_build ))
bin="$CARGO_TARGET_DIR/$host/release"

scratch=$(mktemp -d "$( [ -d /dev/shm ] && echo /dev/shm || echo "${TMPDIR:-/tmp}")/meldnet-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
export MELDNET_FUZZ_SCRATCH="$scratch"

if [ "$make_corpus" = 1 ]; then
  "$bin/make_corpus" "$fuzz_dir/corpus"
  exit 0
fi

# --- run --------------------------------------------------------------------
export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1 AFL_FAST_CAL=1
# A crash must leave its input, not a core dump handed to a helper program:
# afl-fuzz refuses to start when core dumps go to a pipe. Point them at a
# file when allowed (root, not in a read-only /proc), else tell afl-fuzz.
if [ "$(head -c1 /proc/sys/kernel/core_pattern 2>/dev/null)" = "|" ]; then
  echo core 2>/dev/null >/proc/sys/kernel/core_pattern || true
  [ "$(head -c1 /proc/sys/kernel/core_pattern)" = "|" ] && export AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
fi
out_root="${FUZZ_OUT:-$fuzz_dir/out}"
mkdir -p "$out_root"
memory="${FUZZ_MEMORY_MB:-2048}"

stat() { awk -F' *: *' -v k="$1" '$1 == k { print $2 }' "$2" 2>/dev/null | head -1; }
count() { find "$1" -maxdepth 1 -type f -name 'id:*' 2>/dev/null | wc -l; }

status=0
json_targets=""
total_execs=0 total_crashes=0 total_hangs=0
for t in "${targets[@]}"; do
  out="$out_root/$t"
  # The picture decoders take longer per input than the protobuf decoders.
  case "$t" in picture) timeout=2000 ;; *) timeout=1000 ;; esac
  if [ "$resume" = 1 ] && [ -d "$out/default" ]; then
    input=-
  else
    rm -rf "$out"
    input="$fuzz_dir/corpus/$t"
  fi
  t0=$(now)
  rc=0
  cargo afl fuzz -i "$input" -o "$out" -V "$seconds" -t "$timeout" -m "$memory" \
    -- "$bin/$t" >"$out_root/$t.log" 2>&1 || rc=$?
  took=$(( $(now) - t0 ))
  stats="$out/default/fuzzer_stats"
  execs=$(stat execs_done "$stats"); execs=${execs:-0}
  corpus=$(stat corpus_count "$stats"); corpus=${corpus:-0}
  crashes=$(count "$out/default/crashes")
  hangs=$(count "$out/default/hangs")
  echo "fuzz $t: execs $execs, corpus $corpus, crashes $crashes, hangs $hangs, seconds $took"
  if [ "$rc" != 0 ] || [ ! -f "$stats" ]; then
    log "$t: afl-fuzz failed (exit $rc); its output, $out_root/$t.log, ends:"
    tail -25 "$out_root/$t.log" >&2
    status=1
  fi
  shown=0
  for f in "$out/default/crashes"/id:* "$out/default/hangs"/id:*; do
    [ -f "$f" ] || continue
    status=1
    shown=$(( shown + 1 ))
    [ "$shown" -le 5 ] || continue
    case "$f" in */crashes/*) kind=crash ;; *) kind=hang ;; esac
    echo "fuzz $t: $kind input: $f"
  done
  if [ "$shown" -gt 0 ]; then
    [ "$shown" -le 5 ] || echo "fuzz $t: $(( shown - 5 )) more under $out/default/crashes and hangs"
    echo "fuzz $t: replay one with: $bin/$t < INPUT"
  fi
  total_execs=$(( total_execs + execs ))
  total_crashes=$(( total_crashes + crashes ))
  total_hangs=$(( total_hangs + hangs ))
  json_targets+="${json_targets:+,}\"$t\":{\"execs\":$execs,\"corpus\":$corpus,\"crashes\":$crashes,\"hangs\":$hangs,\"seconds\":$took,\"afl_exit\":$rc}"
done
printf '{"fuzz":{%s},"execs":%d,"crashes":%d,"hangs":%d,"seconds_per_target":%d,"install_seconds":%d,"build_seconds":%d,"opt_level":%d,"c_instrumented":%s,"ok":%s}\n' \
  "$json_targets" "$total_execs" "$total_crashes" "$total_hangs" "$seconds" \
  "$install_seconds" "$build_seconds" "$opt_level" "$c_instrumented" "$([ "$status" = 0 ] && echo true || echo false)"
exit "$status"
