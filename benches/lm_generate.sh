#!/usr/bin/env bash
# Generation speed, kiln against Hugging Face transformers on the same weights and the same
# prompts: 128-token prompts continued by 128 greedy tokens, batch 1 and 8, with and without
# the KV cache, one engine after the other on the same cores.
#
# Usage: benches/lm_generate.sh KILN_PACKAGE HF_MODEL [KILN_PACKAGE HF_MODEL ...]
#   HF_MODEL is the same package folder (transformers reads its Llama-named safetensors) or
#   the .gguf file a package was imported from, e.g.
#   benches/lm_generate.sh runs/kjv-lm/package runs/kjv-lm/package \
#       runs/smollm2 data/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export LIBTORCH="$ROOT/.libtorch" LD_LIBRARY_PATH="$ROOT/.libtorch/lib"
PY=.venv/bin/python
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
cargo bench -q -p kiln-train --bench generate --no-run >/dev/null 2>&1 || cargo bench -p kiln-train --bench generate --no-run
while [ $# -ge 2 ]; do
  # cargo bench runs the benchmark in its crate's folder: absolute paths.
  pkg="$(realpath "$1")" hf="$(realpath "$2")"; shift 2
  # 8 prompts of 128 tokens: windows of Genesis, tokenized by the package's own tokenizer.
  "$PY" - "$pkg/tokenizer.json" data/kjv/01-Ge.txt "$OUT/prompts.json" <<'PY'
import json, sys
from tokenizers import Tokenizer
ids = Tokenizer.from_file(sys.argv[1]).encode(open(sys.argv[2]).read(), add_special_tokens=False).ids
json.dump([ids[i * 97:i * 97 + 128] for i in range(8)], open(sys.argv[3], "w"))
PY
  # Recomputing 8 sequences at every step takes many minutes for a GGUF-sized model.
  skip=(); case "$hf" in *.gguf) skip=(--skip-uncached-batch8);; esac
  cargo bench -q -p kiln-train --bench generate -- "$pkg" "$OUT/prompts.json" "${skip[@]}" | tee -a "$OUT/all.jsonl"
  "$PY" benches/lm_generate_hf.py "$hf" "$OUT/prompts.json" "${skip[@]}" 2>/dev/null | tee -a "$OUT/all.jsonl"
  # transformers with its weights cast to bf16 (half the bytes to read): the lightest way it
  # runs these models on a CPU, for kiln's 4-bit weights to be compared with too.
  "$PY" benches/lm_generate_hf.py "$hf" "$OUT/prompts.json" --dtype bfloat16 --cache-only 2>/dev/null | tee -a "$OUT/all.jsonl"
done
"$PY" - "$OUT/all.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
for m in [r for r in rows if r["engine"] == "memory"]:
    print(f"\n{m['package']}: {m['weights']} weights read per step {m['weight_bytes'] / 1e6:.0f} MB, memory reads {m['bytes_per_sec'] / 1e9:.1f} GB/s "
          f"-> at most {m['ceiling_tokens_per_sec']:.1f} tokens/s at batch 1 (every weight read once per token)")
rows = [r for r in rows if r["engine"] != "memory"]
print("\n| model | kiln weights | batch | KV cache | kiln tokens/s | transformers f32 tokens/s | kiln / transformers f32 | transformers bf16 tokens/s | kiln / transformers bf16 |")
print("|---|---|---|---|---|---|---|---|---|")
kiln = [r for r in rows if r["engine"] == "kiln"]
hf = [r for r in rows if r["engine"] == "transformers"]
for k in kiln:
    # The transformers runs after this kiln run (the same package), same batch and cache.
    def theirs(dtype):
        return next((h for h in hf if (h["batch"], h["cache"], h.get("dtype", "float32")) == (k["batch"], k["cache"], dtype)
                     and rows.index(h) > rows.index(k)), None)
    cells = []
    for h in (theirs("float32"), theirs("bfloat16")):
        cells += [f"{h['tokens_per_sec']:.1f}", f"{k['tokens_per_sec'] / h['tokens_per_sec']:.2f}x"] if h else ["-", "-"]
    print(f"| {k['package']} | {k['weights']} | {k['batch']} | {'on' if k['cache'] else 'off'} | {k['tokens_per_sec']:.1f} | " + " | ".join(cells) + " |")
PY
