#!/usr/bin/env bash
# Language-model training, kiln against PyTorch eager, side by side on the same cores: the
# model, data, batch order, optimizer, schedule and seed of a config (default
# configs/kjv-lm.toml), one epoch each (evaluations in the middle of the epoch off, so that
# both measure training alone), then the loss curves and throughput.
#
# Usage: benches/lm_train.sh [CONFIG] [EPOCHS]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CONFIG="${1:-configs/kjv-lm.toml}"
EPOCHS="${2:-1}"
OUT="runs/bench-lm"
rm -rf "$OUT" && mkdir -p "$OUT"
cargo build -q --release -p kiln-trainer
./target/release/kiln-train train --quiet --config "$CONFIG" --epochs "$EPOCHS" --set eval_every_steps=0 \
  --out "$OUT/kiln" 2>&1 | grep -E "epoch|package" || true
.venv/bin/python benches/lm_pytorch.py "$CONFIG" "$OUT/kiln" "$OUT/pytorch.jsonl" --epochs "$EPOCHS"
# PyTorch again with the allocator settings kiln applies to itself (kiln_tensor::keep_freed_memory),
# to show how much of the difference they make.
MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=2147483647 MALLOC_TOP_PAD_=536870912 \
  .venv/bin/python benches/lm_pytorch.py "$CONFIG" "$OUT/kiln" "$OUT/pytorch-malloc.jsonl" --epochs "$EPOCHS"
.venv/bin/python - "$OUT/kiln/metrics.jsonl" "$OUT/pytorch.jsonl" "$OUT/pytorch-malloc.jsonl" <<'PY'
import json, sys
kiln = [json.loads(l) for l in open(sys.argv[1])]
torch = [json.loads(l) for l in open(sys.argv[2])]
tuned = [json.loads(l) for l in open(sys.argv[3])]
ks = {r["step"]: r for r in kiln if r["kind"] == "step"}
ts = {r["step"]: r for r in torch if r["kind"] == "step"}
print("\n| step | kiln loss | PyTorch loss |")
print("|---|---|---|")
steps = sorted(set(ks) & set(ts))
for s in steps[:: max(1, len(steps) // 12)] + ([steps[-1]] if steps else []):
    print(f"| {s} | {ks[s]['loss']:.3f} | {ts[s]['loss']:.3f} |")
ke = [r for r in kiln if r["kind"] == "epoch"]
te = [r for r in torch if r["kind"] == "epoch"]
print("\n| engine | epoch | tokens/s | val loss | val bits/byte |")
print("|---|---|---|---|---|")
for k, t in zip(ke, te):
    print(f"| kiln | {k['epoch']} | {k['samples_per_sec']:.0f} | {k['val']['loss']:.4f} | {k['val']['bits_per_byte']:.4f} |")
    print(f"| PyTorch eager | {t['epoch']} | {t['tokens_per_sec']:.0f} | {t['val_loss']:.4f} | {t['val_bits_per_byte']:.4f} |")
tt = [r for r in tuned if r["kind"] == "epoch"]
for t in tt:
    print(f"| PyTorch eager, kiln's malloc settings | {t['epoch']} | {t['tokens_per_sec']:.0f} | {t['val_loss']:.4f} | {t['val_bits_per_byte']:.4f} |")
if ke and te:
    print(f"\nkiln / PyTorch training tokens/s: {ke[-1]['samples_per_sec'] / te[-1]['tokens_per_sec']:.2f}x")
if ke and tt:
    print(f"kiln / PyTorch with kiln's malloc settings: {ke[-1]['samples_per_sec'] / tt[-1]['tokens_per_sec']:.2f}x")
PY
