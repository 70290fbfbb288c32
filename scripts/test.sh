#!/usr/bin/env bash
# Runs kiln's whole test suite, installing what is missing first (safe to run again).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
# Benchmarks are run by hand (they print figures); here they are only compiled.
cargo test --workspace --benches --no-run
# Unit, integration, end-to-end and doc tests of every crate and binary.
cargo test --workspace --no-fail-fast
# The Kubernetes manifests against the Kubernetes API schemas.
bash docker/k8s/validate.sh
