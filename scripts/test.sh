#!/usr/bin/env bash
# Runs kiln's whole test suite, installing what is missing first (safe to run again).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
# Unit, integration, end-to-end and doc tests of every crate and binary.
cargo test --workspace --all-targets --no-fail-fast
cargo test --workspace --doc
