#!/usr/bin/env python3
"""transformers' side of the generation benchmark (benches/lm_generate.sh).

Usage: lm_generate_hf.py MODEL PROMPT_TOKENS.json [--threads N] [--skip-uncached-batch8]
                         [--dtype float32|bfloat16] [--cache-only]

MODEL is a kiln language-model package folder (its weights.safetensors already has the
Hugging Face Llama tensor names; the LlamaConfig is written from its manifest) or a .gguf
file (loaded and dequantised by transformers). PROMPT_TOKENS.json holds the prompts as
token ids ([[...], ...], 8 prompts of 128 tokens). For batch 1 and 8, with and without the
KV cache, generates 128 tokens greedily (min_new_tokens = max_new_tokens, so EOS does not
end it early) and prints one JSON line per case. --dtype bfloat16 casts the weights to bf16
(half the bytes to read per token); --cache-only leaves out the cases without the cache.
"""
import argparse
import json
import os
import time

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM


def load(model):
    if model.endswith(".gguf"):
        folder, name = os.path.split(os.path.abspath(model))
        return AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    manifest = json.load(open(os.path.join(model, "manifest.json")))
    m = manifest["model"]
    config = LlamaConfig(
        vocab_size=m["vocab"], hidden_size=m["width"], intermediate_size=m["ffn_width"],
        num_hidden_layers=m["layers"], num_attention_heads=m["heads"], num_key_value_heads=m["kv_heads"],
        max_position_embeddings=m["context"], rms_norm_eps=m["norm_eps"], rope_theta=m["rope_theta"],
        tie_word_embeddings=m["tie_embeddings"], hidden_act="silu", attention_bias=False, mlp_bias=False,
    )
    net = LlamaForCausalLM(config)
    missing, unexpected = net.load_state_dict(load_file(os.path.join(model, "weights.safetensors")), strict=False)
    assert not unexpected and all(k == "lm_head.weight" for k in missing), (missing, unexpected)
    net.tie_weights()
    return net


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("prompts")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--skip-uncached-batch8", action="store_true")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--cache-only", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    net = load(a.model).eval().to(getattr(torch, a.dtype))
    prompts = json.load(open(a.prompts))
    new = 128
    with torch.no_grad():
        for batch in (1, 8):
            x = torch.tensor(prompts[:batch])
            for cache in (True, False):
                if (a.skip_uncached_batch8 and batch == 8 or a.cache_only) and not cache:
                    continue
                kw = dict(do_sample=False, max_new_tokens=new, min_new_tokens=new, use_cache=cache,
                          pad_token_id=0, attention_mask=torch.ones_like(x))
                net.generate(x, **{**kw, "max_new_tokens": 4, "min_new_tokens": 4})
                started = time.perf_counter()
                out = net.generate(x, **kw)
                seconds = time.perf_counter() - started
                made = (out.shape[1] - x.shape[1]) * batch
                print(json.dumps({"engine": "transformers", "model": a.model, "dtype": a.dtype, "batch": batch, "cache": cache,
                                  "prompt_tokens": x.shape[1], "new_tokens": new, "seconds": seconds,
                                  "tokens_per_sec": made / seconds, "threads": a.threads}), flush=True)


if __name__ == "__main__":
    main()
