#!/usr/bin/env bash
# Runs kiln's whole test suite, installing what is missing first (safe to run again).
# Every step runs even when an earlier one fails; the summary at the end lists each
# step's outcome and the script exits non-zero when any failed.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

FAILED=()
SUMMARY=()
# step NAME COMMAND...: runs COMMAND, recording whether it passed and how long it took.
step() {
  local name="$1" start=$SECONDS rc
  shift
  printf '\n[test] === %s: %s\n' "$name" "$*" >&2
  "$@"
  rc=$?
  if [ "$rc" -eq 0 ]; then
    SUMMARY+=("ok      $name ($((SECONDS - start)) s)")
  else
    SUMMARY+=("FAILED  $name (exit $rc, $((SECONDS - start)) s)")
    FAILED+=("$name")
  fi
  return 0
}

# Without the set-up nothing else can run.
bash scripts/setup.sh || { echo "[test] set-up failed; nothing was tested" >&2; exit 1; }

# The Docker bases of the container tests (debootstrap: mostly downloads and disk) are
# made in the background while the compilers use the cores; the tests step waits for them.
# The build base carries the cargo registry, so every crate is fetched first.
BASES_PID=""
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  BASES_LOG="$(mktemp)"
  if cargo fetch --locked >"$BASES_LOG" 2>&1; then
    bash docker/build.sh --bases-only >>"$BASES_LOG" 2>&1 &
    BASES_PID=$!
  fi
fi

step "format" cargo fmt --all -- --check
step "clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
# The CUDA build of both binaries compiles and links against the CUDA libtorch of
# set-up (no GPU needed to compile).
step "cuda build" cargo build --locked -p kiln-trainer -p kiln-server --features cuda
# Benchmarks are run by hand (they print figures); here they are only compiled.
step "benches compile" cargo test --workspace --benches --no-run --locked
if [ -n "$BASES_PID" ]; then
  wait "$BASES_PID" || { echo "[test] making the Docker bases failed (the container tests will say more):" >&2; tail -20 "$BASES_LOG" >&2; }
fi
# Unit, integration, end-to-end and doc tests of every crate and binary.
step "tests" cargo test --workspace --no-fail-fast --locked
# The Kubernetes manifests against the Kubernetes API schemas.
step "k8s manifests" bash docker/k8s/validate.sh
# A short run of every fuzz target, where a nightly toolchain is installed.
if [ -x benches/fuzz.sh ]; then
  step "fuzz smoke" bash benches/fuzz.sh --smoke
fi

printf '\n[test] summary\n' >&2
printf '  %s\n' "${SUMMARY[@]}" >&2
if [ ${#FAILED[@]} -gt 0 ]; then
  printf '[test] %d step(s) failed: %s\n' "${#FAILED[@]}" "${FAILED[*]}" >&2
  exit 1
fi
echo "[test] all steps passed" >&2
