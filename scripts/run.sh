#!/usr/bin/env bash
# kiln's main job, end to end: install what is missing, build, train the default model
# (a CNN on Fashion-MNIST, configs/fashion-cnn.toml) unless its package exists, put the
# package in a model repository and serve it, printing curl commands that work as printed.
# Safe to run again: a finished run is reused, an interrupted one is resumed.
# Extra arguments go to `kiln-train train`, e.g. `scripts/run.sh --epochs 2`.
# KILN_NO_SERVE=1 stops after training; KILN_BIND sets the address (default 127.0.0.1:8080).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
cargo build --release -p kiln-trainer -p kiln-server
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
[ -n "${KILN_NO_SERVE:-}" ] && exit 0

# A model repository: models/<name>/<version>/ holding the package.
NAME="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["name"])' "$OUT/package/manifest.json")"
REPO="${KILN_MODEL_REPOSITORY:-models}"
rm -rf "$REPO/$NAME/1"
mkdir -p "$REPO/$NAME/1"
cp "$OUT/package/manifest.json" "$OUT/package/weights.safetensors" "$REPO/$NAME/1/"
BIND="${KILN_BIND:-127.0.0.1:8080}"
cat >&2 <<MSG
[run] serving $REPO on http://$BIND (Ctrl-C stops it). Try, from this folder:
  curl -s -X POST http://$BIND/predict -H 'Content-Type: image/png' --data-binary @docs/images/ankle-boot.png
  curl -s http://$BIND/v2/models/$NAME
  curl -s http://$BIND/metrics
MSG
exec ./target/release/kiln-serve --model-repository "$REPO" --bind "$BIND"
