#!/usr/bin/env bash
# kiln's main job, end to end: install what is missing, build, train the default model
# (a CNN on Fashion-MNIST, configs/fashion-cnn.toml) and write its package.
# Extra arguments go to `kiln-train train`, e.g. `scripts/run.sh --epochs 2`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
cargo build --release -p kiln-trainer
CONFIG="${KILN_CONFIG:-configs/fashion-cnn.toml}"
OUT="${KILN_OUT:-runs/fashion-cnn}"
echo "[run] training $CONFIG into $OUT (progress below; metrics in $OUT/metrics.jsonl)" >&2
./target/release/kiln-train train --config "$CONFIG" --out "$OUT" "$@"
