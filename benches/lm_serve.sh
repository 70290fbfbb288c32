#!/usr/bin/env bash
# Serving a language model: kiln-serve (f32, --quantize int4 and int4-bf16) against the llama-cpp-python
# server on the same GGUF file and a plain transformers generate loop behind a minimal HTTP
# server, one after the other on the same cores, through the same OpenAI-compatible
# streaming client (benches/lm_serve_load.py): time to first token, inter-token latency,
# single-stream and aggregate tokens/s with 1, 4 and 16 concurrent streams, 128 new tokens
# each after the same 128-token prompt.
#
# Usage: benches/lm_serve.sh [MODEL]
#   MODEL: a GGUF file (default: the SmolLM2-135M-Instruct file of the set-up), or a kiln
#   language-model package folder (e.g. runs/kjv-lm/package; llama.cpp cannot read one, so
#   its rows are left out).
#   KILN_MODES (default "f32 int4 int4-bf16 int4-bf16+prefix-cache"): the kiln-serve modes
#   to run, a --quantize value (f32: none), "+prefix-cache" adding --prefix-cache (every
#   client sends the same prompt, so with the prefix cache only the first prefills it whole,
#   as with llama-cpp-python's prompt cache);
#   ANCHORS=0 leaves the llama-cpp-python and transformers servers out (a quick look).
# llama-cpp-python is used when .venv has it; install it with (about 13 minutes):
#   CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF \
#     -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF" .venv/bin/pip install "llama-cpp-python[server]"
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export LIBTORCH="$ROOT/.libtorch" LD_LIBRARY_PATH="$ROOT/.libtorch/lib"
PY=.venv/bin/python
MODEL="$(realpath "${1:-data/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}")"
OUT="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$OUT"; }
trap cleanup EXIT
cargo build -q --release -p kiln-server -p kiln-trainer
mkdir -p "$OUT/repo/lm"
case "$MODEL" in
  *.gguf) ./target/release/kiln-train import-gguf "$MODEL" --out "$OUT/repo/lm/1" >/dev/null;;
  *) cp -r "$MODEL" "$OUT/repo/lm/1";;
esac
# A prompt of 128 tokens of the served model's tokenizer (fewer when the context cannot
# hold them, a BOS and 128 new tokens): the opening of Genesis.
"$PY" - "$OUT/repo/lm/1" data/kjv/01-Ge.txt "$OUT/prompt.txt" <<'PY'
import json, os, sys
from tokenizers import Tokenizer
tok = Tokenizer.from_file(os.path.join(sys.argv[1], "tokenizer.json"))
context = json.load(open(os.path.join(sys.argv[1], "manifest.json")))["model"]["context"]
n = min(128, context - 128 - 1)
ids = tok.encode(open(sys.argv[2]).read()[:4000], add_special_tokens=False).ids[:n]
text = tok.decode(ids)
open(sys.argv[3], "w").write(text)
print(f"prompt: {len(tok.encode(text, add_special_tokens=False).ids)} tokens", file=sys.stderr)
PY
port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 600); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.5; done; echo "$1 did not come up" >&2; return 1; }
load() { "$PY" benches/lm_serve_load.py "$1" "$2" "$OUT/prompt.txt" --label "$3" | tee -a "$OUT/all.jsonl"; }

for mode in ${KILN_MODES:-f32 int4 int4-bf16 int4-bf16+prefix-cache}; do
  p=$(port)
  flags=(); q="${mode%%+*}"
  [ "$q" != f32 ] && flags+=(--quantize "$q")
  [[ "$mode" == *+prefix-cache ]] && flags+=(--prefix-cache)
  ./target/release/kiln-serve --model-repository "$OUT/repo" --bind "127.0.0.1:$p" --threads-per-instance 2 \
    --poll-interval off "${flags[@]}" 2>"$OUT/kiln-$mode.log" & PIDS+=($!)
  wait_up "http://127.0.0.1:$p/v2/health/ready"
  load "http://127.0.0.1:$p/v1" lm "kiln-serve $mode"
  kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
done

if [ "${ANCHORS:-1}" = 0 ]; then
  echo "(ANCHORS=0: the llama-cpp-python and transformers rows are left out)" >&2
elif [[ "$MODEL" != *.gguf ]]; then
  echo "(a kiln package: llama.cpp cannot read it, its rows are left out)" >&2
elif "$PY" -c "import llama_cpp.server" 2>/dev/null; then
  p=$(port)
  "$PY" -m llama_cpp.server --model "$MODEL" --port "$p" --n_threads 2 --n_ctx 2048 --interrupt_requests False \
    >"$OUT/llama.log" 2>&1 & PIDS+=($!)
  wait_up "http://127.0.0.1:$p/v1/models"
  load "http://127.0.0.1:$p/v1" "$MODEL" "llama-cpp-python"
  kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
else
  echo "(llama-cpp-python is not installed in .venv: its rows are left out; see the usage above)" >&2
fi

[ "${ANCHORS:-1}" = 0 ] || {
p=$(port)
"$PY" benches/lm_serve_hf.py "$MODEL" "$p" --threads 2 >"$OUT/hf.log" 2>&1 & PIDS+=($!)
for _ in $(seq 600); do curl -s -o /dev/null "http://127.0.0.1:$p/" 2>/dev/null && break; sleep 0.5; done
load "http://127.0.0.1:$p/v1" lm "transformers"
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
}

"$PY" - "$OUT/all.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("\n| server | streams | aggregate tokens/s | single-stream tokens/s | TTFT median s | TTFT p90 s | ITL median ms | ITL p99 ms |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    f = lambda v, d=1: "-" if v is None else f"{v:.{d}f}"
    print(f"| {r['server']} | {r['streams']} | {f(r['aggregate_tokens_per_s'])} | {f(r['single_stream_tokens_per_s'])} | "
          f"{f(r['ttft_median_s'], 2)} | {f(r['ttft_p90_s'], 2)} | {f(r['itl_median_ms'])} | {f(r['itl_p99_ms'])} |")
PY
