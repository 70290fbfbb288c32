#!/usr/bin/env bash
# kiln's main job, end to end: install what is missing, build, train the default model
# (a CNN on Fashion-MNIST, configs/fashion-cnn.toml) and write its package.
# Safe to run again: a finished run is reported, an interrupted one is resumed.
# Extra arguments go to `kiln-train train`, e.g. `scripts/run.sh --epochs 2`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
cargo build --release -p kiln-trainer
CONFIG="${KILN_CONFIG:-configs/fashion-cnn.toml}"
OUT="${KILN_OUT:-runs/fashion-cnn}"
BIN=./target/release/kiln-train
if [ -f "$OUT/metrics.jsonl" ] && grep -q '"kind":"test"' "$OUT/metrics.jsonl"; then
  echo "[run] $OUT holds a finished run (delete the folder to train again)" >&2
  echo "package: $OUT/package"
  "$BIN" eval --package "$OUT/package" \
    | python3 -c 'import json, sys; print("test accuracy: %.4f" % json.load(sys.stdin)["accuracy"])'
elif [ -d "$OUT/checkpoints" ] && [ -n "$(ls -A "$OUT/checkpoints" 2>/dev/null)" ]; then
  echo "[run] resuming the interrupted run in $OUT" >&2
  "$BIN" resume "$OUT"
else
  echo "[run] training $CONFIG into $OUT (metrics in $OUT/metrics.jsonl, curves in $OUT/curves.svg)" >&2
  "$BIN" train --config "$CONFIG" --out "$OUT" "$@"
fi
