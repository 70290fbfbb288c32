#!/usr/bin/env bash
# Fuzzes every decoder of untrusted bytes (tests/fuzz: v2, TF Serving and /predict bodies,
# images, IDX, CSV, the manifest, safetensors, checkpoints) with cargo-fuzz (libFuzzer),
# and reports executions and findings per target.
#   benches/fuzz.sh [SECONDS] [TARGET...]   each target for SECONDS (default 600)
#   benches/fuzz.sh --smoke                 every target for 5 s (CI: the corpus replayed, then a little more),
#                                           built unoptimized (--dev) so that CI spends its time
#                                           running the targets rather than optimizing them
# Needs a nightly toolchain (detected; without one this says so and exits 0 with --smoke,
# 1 otherwise); installs cargo-fuzz when missing. Corpora live in tests/fuzz/corpus/<target>
# (kept in the repository; new inputs found are added there); a crash is saved under
# tests/fuzz/artifacts/<target>/ and makes the script exit 1. Inputs that once crashed a
# target are kept in tests/fuzz/regressions/<target>/ (which `cargo fuzz cmin` never
# prunes) and replayed by every run, smoke included.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SMOKE=""
if [ "${1:-}" = "--smoke" ]; then SMOKE=1; shift; fi
SECONDS_EACH="${1:-600}"
[ -n "$SMOKE" ] && SECONDS_EACH=5
[ $# -gt 0 ] && shift
log() { echo "[fuzz] $*" >&2; }

NIGHTLY="$(rustup toolchain list 2>/dev/null | awk '/^nightly/ {print $1; exit}')"
if [ -z "$NIGHTLY" ]; then
  log "no nightly toolchain installed (rustup toolchain list): fuzzing needs one; skipped"
  [ -n "$SMOKE" ] && exit 0
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz"
  cargo install cargo-fuzz --locked >&2 || exit 1
fi
[ -e .libtorch/lib/libtorch_cpu.so ] || bash scripts/setup.sh >/dev/null || exit 1
export LIBTORCH="$ROOT/.libtorch"
export LD_LIBRARY_PATH="$ROOT/.libtorch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  mapfile -t TARGETS < <(cargo "+$NIGHTLY" fuzz list --fuzz-dir tests/fuzz)
fi
# Long runs want fast targets (release, one codegen unit: cargo-fuzz's default); the smoke
# wants a fast build.
BUILD=(-O)
[ -n "$SMOKE" ] && BUILD=(--dev)
log "building ${#TARGETS[@]} targets with $NIGHTLY (${BUILD[*]})"
cargo "+$NIGHTLY" fuzz build --fuzz-dir tests/fuzz "${BUILD[@]}" >&2 || exit 1

FAILED=0
printf '%-18s %12s %10s %8s %s\n' target executions exec/s corpus findings
for t in "${TARGETS[@]}"; do
  mkdir -p "tests/fuzz/corpus/$t" "tests/fuzz/artifacts/$t"
  before=$(find "tests/fuzz/artifacts/$t" -type f | wc -l)
  out="$(mktemp)"
  corpus="tests/fuzz/corpus/$t"
  if [ -n "$SMOKE" ]; then
    # A smoke run leaves the repository's corpus as it is.
    corpus="$(mktemp -d)"; cp -r "tests/fuzz/corpus/$t/." "$corpus/"
  fi
  regressions=()
  [ -d "tests/fuzz/regressions/$t" ] && regressions=("tests/fuzz/regressions/$t")
  cargo "+$NIGHTLY" fuzz run --fuzz-dir tests/fuzz "${BUILD[@]}" "$t" "$corpus" "${regressions[@]}" -- \
    -max_total_time="$SECONDS_EACH" -rss_limit_mb=4096 -timeout=20 -print_final_stats=1 \
    -artifact_prefix="tests/fuzz/artifacts/$t/" >"$out" 2>&1
  rc=$?
  execs=$(awk -F: '/stat::number_of_executed_units/ {gsub(/ /,"",$NF); print $NF}' "$out")
  rate=$(awk -F: '/stat::average_exec_per_sec/ {gsub(/ /,"",$NF); print $NF}' "$out")
  size=$(find "$corpus" -type f | wc -l)
  after=$(find "tests/fuzz/artifacts/$t" -type f | wc -l)
  findings=$((after - before))
  printf '%-18s %12s %10s %8s %s\n' "$t" "${execs:-?}" "${rate:-?}" "$size" "$findings"
  if [ "$rc" -ne 0 ] || [ "$findings" -gt 0 ]; then
    FAILED=1
    log "$t: exit $rc; see below and tests/fuzz/artifacts/$t/"
    grep -E "ERROR|panicked|SUMMARY|Test unit written" "$out" | head -20 >&2
  fi
  rm -f "$out"
done
exit "$FAILED"
